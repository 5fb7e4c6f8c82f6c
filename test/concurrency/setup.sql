-- tokex concurrency test: the graph the three revocation scenarios run on.
-- Each scenario has its own person and agent, so revoking one leaves the
-- others untouched.  Run by test/concurrency/run.sh in a fresh database.
\set ON_ERROR_STOP 1
SET client_min_messages = warning;
CREATE EXTENSION tokex;
SELECT pg_catalog.format('ALTER DATABASE %I SET tokex.issuer = %L', current_database(),
                         'https://tokex.concurrency.test') \gexec
SET tokex.issuer = 'https://tokex.concurrency.test';
SELECT tokex.create_key() IS NOT NULL AS key_created \gset

INSERT INTO tokex.identity (id, kind) VALUES
  ('alice1', 'human'), ('alice2', 'human'), ('alice3', 'human'), ('nora', 'human'),
  ('agent1', 'agent'), ('agent2', 'agent'), ('agent3', 'agent');
INSERT INTO tokex.resource (audience, scopes, token_ttl) VALUES
  ('calendar-api', '{calendar.read,calendar.write}', '30 minutes');
INSERT INTO tokex.delegation (principal, delegate, scopes) VALUES
  ('alice1', 'agent1', '{calendar.read}'),
  ('alice2', 'agent2', '{calendar.read}'),
  ('alice3', 'agent3', '{calendar.read}');
INSERT INTO tokex.policy (effect, subject_kind, actor_kind, description)
VALUES ('allow', 'human', 'agent', 'people let agents act for them within their delegations');

-- one row per pgbench transaction: when it started, and what tokex answered
CREATE UNLOGGED TABLE conc_result (
  scenario text NOT NULL,
  t0       timestamptz NOT NULL,   -- clock_timestamp() before the exchange statement started
  granted  boolean NOT NULL,       -- the exchange minted a token
  active   boolean NOT NULL        -- the pre-minted token introspected active
);
