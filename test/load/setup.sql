-- tokex load test: eight people, each with an agent, a session and a token
-- minted from it; the clients pick their pair by client id.  Run by
-- test/load/run.sh in a fresh database.
\set ON_ERROR_STOP 1
SET client_min_messages = warning;
CREATE EXTENSION tokex;
SELECT pg_catalog.format('ALTER DATABASE %I SET tokex.issuer = %L', current_database(),
                         'https://tokex.load.test') \gexec
SET tokex.issuer = 'https://tokex.load.test';
SELECT tokex.create_key() IS NOT NULL AS key_created \gset
INSERT INTO tokex.identity (id, kind)
SELECT 'p' || i, 'human' FROM generate_series(0, 7) i
UNION ALL SELECT 'a' || i, 'agent' FROM generate_series(0, 7) i;
INSERT INTO tokex.resource (audience, scopes, token_ttl) VALUES ('cal', '{cal.read,cal.write}', '30 minutes');
INSERT INTO tokex.delegation (principal, delegate, scopes) SELECT 'p' || i, 'a' || i, '{cal.read}' FROM generate_series(0, 7) i;
INSERT INTO tokex.policy (effect, subject_kind, actor_kind) VALUES ('allow', 'human', 'agent');

CREATE TABLE load_pair (pair int PRIMARY KEY, st text, sid uuid, at text, minted text);
INSERT INTO load_pair (pair, st, sid, at)
SELECT i, s->>'session_token', (s->>'session_id')::uuid, tokex.identity_token('a' || i, '1 hour')
  FROM generate_series(0, 7) i, LATERAL tokex.start_session('p' || i, 'a' || i, '{cal.read}', '1 hour') s;
-- separate statement: an exchange sees only sessions started before it
UPDATE load_pair SET minted = tokex.exchange(st, 'urn:ietf:params:oauth:token-type:jwt', at,
                                             'urn:ietf:params:oauth:token-type:jwt', audience => 'cal')->>'access_token';

-- what the clients saw, one row per call, committed with the call
CREATE UNLOGGED TABLE load_result (
  kind  text NOT NULL,          -- exchange / introspect / use / revoke
  pair  int NOT NULL,
  t0    timestamptz NOT NULL,   -- clock_timestamp() before the call
  error text,                   -- the exchange's error, NULL when granted
  jti   uuid,                   -- the token received
  active boolean                -- introspection's answer
);
