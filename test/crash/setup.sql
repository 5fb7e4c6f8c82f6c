-- tokex crash test: one person, one agent, a session and the agent's
-- identity token, and one resource.  Run by test/crash/run.sh.
\set ON_ERROR_STOP 1
SET client_min_messages = warning;
CREATE EXTENSION tokex;
CREATE EXTENSION amcheck;
SELECT pg_catalog.format('ALTER DATABASE %I SET tokex.issuer = %L', current_database(),
                         'https://tokex.crash.test') \gexec
SET tokex.issuer = 'https://tokex.crash.test';
SELECT tokex.create_key() IS NOT NULL AS key_created \gset
INSERT INTO tokex.identity (id, kind) VALUES ('alice', 'human'), ('agent', 'agent');
INSERT INTO tokex.resource (audience, scopes, token_ttl) VALUES
  ('calendar-api', '{calendar.read,calendar.write}', '30 minutes');
INSERT INTO tokex.delegation (principal, delegate, scopes) VALUES ('alice', 'agent', '{calendar.read}');
INSERT INTO tokex.policy (effect, subject_kind, actor_kind) VALUES ('allow', 'human', 'agent');
-- where the clients' logs are loaded after the crashes
CREATE TABLE received (kind text NOT NULL, k text NOT NULL, v text);
