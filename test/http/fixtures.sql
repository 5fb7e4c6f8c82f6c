-- Fixtures for the HTTP tests (run by run.sh as superuser in a fresh database
-- with tokex installed): the PostgREST anonymous role, the GUCs the HTTP face
-- needs, a signing key, alice / agent-a / agent-b, a resource, a delegation
-- and an allow policy.  Clients are registered by setup.mjs.
\set ON_ERROR_STOP 1
SET client_min_messages = warning;
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN
    CREATE ROLE anon NOLOGIN;
  END IF;
END
$$;
GRANT tokex_web TO anon;
SELECT format('ALTER DATABASE %I SET tokex.issuer = %L', current_database(), 'https://auth.test') \gexec
SELECT format('ALTER DATABASE %I SET tokex.base_url = %L', current_database(), 'https://auth.test/api') \gexec
SET tokex.issuer = 'https://auth.test';
SELECT tokex.create_key('ES256') IS NOT NULL AS key_created;
INSERT INTO tokex.identity (id, kind) VALUES
  ('alice', 'human'), ('agent-a', 'agent'), ('agent-b', 'agent');
INSERT INTO tokex.resource (audience, scopes, token_ttl, resource_uri) VALUES
  ('calendar-api', '{calendar.read,calendar.write}', '5 minutes', 'https://calendar.test/');
INSERT INTO tokex.delegation (principal, delegate, scopes, audiences, max_depth) VALUES
  ('alice', 'agent-a', '{calendar.read}', NULL, 1);
INSERT INTO tokex.policy (effect, subject_kind, actor_kind, description) VALUES
  ('allow', 'human', 'agent', 'people may let agents act for them within their delegations');
