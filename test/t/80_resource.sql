-- The resource side in SQL: tokex.authenticate keeps a token's verified
-- claims for the transaction, and row-level security reads them through
-- on_behalf_of / current_actor / actor_chain / has_scope / token_claims.
-- An agent acting for alice reads alice's rows only, and only with the
-- scope; for bob, bob's; revoked, nothing; a forged request.jwt.claims
-- grants nothing.  (Per-transaction scope and DPoP proofs with ath:
-- test/interop/dpop.test.mjs.)
\ir preamble.psql
SELECT plan(27);

SELECT tokex.create_key() AS kid \gset
INSERT INTO tokex.identity (id, kind) VALUES ('alice', 'human'), ('bob', 'human'), ('agent-a', 'agent'),
  ('agent-b', 'agent');
INSERT INTO tokex.resource (audience, scopes) VALUES ('notes-api', '{notes.read,notes.write}'), ('other-api', '{x}');
INSERT INTO tokex.delegation (principal, delegate, scopes, max_depth) VALUES
  ('alice', 'agent-a', '{notes.read,notes.write,x}', 2), ('bob', 'agent-a', '{notes.write}', 1),
  ('agent-a', 'agent-b', '{notes.read}', 1);
INSERT INTO tokex.policy (effect) VALUES ('allow');
SET LOCAL tokex.resource_audience = 'notes-api';

-- the API's own table, with row-level security on behalf of the person
CREATE SCHEMA app;
CREATE TABLE app.notes (owner text NOT NULL, body text NOT NULL);
INSERT INTO app.notes VALUES ('alice', 'alice 1'), ('alice', 'alice 2'), ('bob', 'bob 1');
ALTER TABLE app.notes ENABLE ROW LEVEL SECURITY;
CREATE POLICY read_own ON app.notes FOR SELECT
  USING (owner = tokex.on_behalf_of() AND tokex.has_scope('notes.read'));
CREATE ROLE app_api NOLOGIN IN ROLE tokex_resource;
GRANT USAGE ON SCHEMA app TO app_api;
GRANT SELECT ON app.notes TO app_api;

CREATE FUNCTION pg_temp.tok(sub text) RETURNS text LANGUAGE sql AS $$
  SELECT tokex.jwt_sign(jsonb_build_object('sub', sub, 'iat', floor(extract(epoch FROM now()))::bigint,
                                           'exp', floor(extract(epoch FROM now()))::bigint + 3600))
$$;
CREATE FUNCTION pg_temp.at(person text, scope text, aud text DEFAULT 'notes-api') RETURNS text LANGUAGE sql AS $$
  SELECT tokex.exchange(pg_temp.tok(person), 'urn:ietf:params:oauth:token-type:jwt',
                        pg_temp.tok('agent-a'), 'urn:ietf:params:oauth:token-type:jwt',
                        audience => aud, scope => scope)->>'access_token'
$$;
CREATE FUNCTION pg_temp.seen() RETURNS text LANGUAGE sql AS $$
  SELECT COALESCE(string_agg(body, ',' ORDER BY body), '') FROM app.notes
$$;

SELECT pg_temp.at('alice', 'notes.read') AS t_alice, pg_temp.at('bob', 'notes.write') AS t_bob_w,
       pg_temp.at('alice', 'x', 'other-api') AS t_other \gset

SET LOCAL ROLE app_api;
SELECT is(pg_temp.seen(), '', 'nothing authenticated: no rows');
SELECT is(tokex.on_behalf_of(), NULL, '... on_behalf_of() is NULL');
SELECT is(tokex.has_scope('notes.read'), false, '... has_scope() is false');
SELECT is(tokex.token_claims(), NULL, '... token_claims() is NULL');

SELECT is((tokex.authenticate(:'t_alice'))->>'sub', 'alice', 'authenticate returns the claims');
SELECT is(pg_temp.seen(), 'alice 1,alice 2', 'the agent acting for alice reads alice''s rows only');
SELECT is(format('%s|%s|%s', tokex.on_behalf_of(), tokex.current_actor(), tokex.actor_chain()),
          'alice|agent-a|{agent-a}', 'on_behalf_of, current_actor, actor_chain');
SELECT is(tokex.token_claims()->>'aud', 'notes-api', 'token_claims');

SELECT lives_ok(format('SELECT tokex.authenticate(%L)', :'t_bob_w'), 'the same agent acting for bob');
SELECT is(pg_temp.seen(), '', '... without notes.read: no rows (the scope is checked)');
RESET ROLE;
UPDATE tokex.delegation SET scopes = '{notes.read,notes.write}' WHERE principal = 'bob';
SELECT pg_temp.at('bob', 'notes.read') AS t_bob \gset
SET LOCAL ROLE app_api;
SELECT lives_ok(format('SELECT tokex.authenticate(%L)', :'t_bob'), 'acting for bob with notes.read');
SELECT is(pg_temp.seen(), 'bob 1', '... reads bob''s rows only');

-- a refused token keeps nothing
SELECT throws_ok(format('SELECT tokex.authenticate(%L)', :'t_other'), '28000', 'invalid token',
                 'a token for another audience is refused');
SELECT is(tokex.on_behalf_of(), NULL, '... and what was authenticated before is dropped');
SELECT throws_ok($$SELECT tokex.authenticate('garbage')$$, '28000', 'invalid token', 'garbage is refused');

-- forging the claims through a GUC grants nothing
SELECT set_config('request.jwt.claims', '{"sub": "alice", "scope": "notes.read"}', true);
SELECT set_config('app.authenticated_as', 'alice', true);
SELECT is(pg_temp.seen(), '', 'a forged request.jwt.claims (or any setting) grants nothing');

-- revoked: refused at the next authenticate
RESET ROLE;
SELECT tokex.revoke_delegation('alice', 'agent-a', 'alice left the pilot');
SET LOCAL ROLE app_api;
SELECT throws_ok(format('SELECT tokex.authenticate(%L)', :'t_alice'), '28000', 'invalid token',
                 'after the delegation is revoked the token is refused');
SELECT is(pg_temp.seen(), '', '... and nothing is visible');
RESET ROLE;
UPDATE tokex.delegation SET revoked_at = NULL WHERE principal = 'alice';

-- two hops: agent-b for agent-a for alice
SELECT tokex.exchange(:'t_alice', 'urn:ietf:params:oauth:token-type:access_token', pg_temp.tok('agent-b'),
                      'urn:ietf:params:oauth:token-type:jwt', audience => 'notes-api', scope => 'notes.read')
       ->>'access_token' AS t_two \gset
SET LOCAL ROLE app_api;
SELECT lives_ok(format('SELECT tokex.authenticate(%L)', :'t_two'), 'a two-hop token');
SELECT is(format('%s|%s|%s', tokex.on_behalf_of(), tokex.current_actor(), tokex.actor_chain()),
          'alice|agent-b|{agent-a,agent-b}', '... the chain from the first actor to the current one');
RESET ROLE;

-- a savepoint rolled back takes what was authenticated in it
SET LOCAL ROLE app_api;
SAVEPOINT s1;
SELECT lives_ok(format('SELECT tokex.authenticate(%L)', :'t_bob'), 'authenticated inside a savepoint');
ROLLBACK TO SAVEPOINT s1;
SELECT is(tokex.on_behalf_of(), NULL, '... and forgotten when the savepoint is rolled back');
SAVEPOINT s2;
SELECT tokex.authenticate(:'t_bob') IS NOT NULL AS ok \gset
RELEASE SAVEPOINT s2;
SELECT is(tokex.on_behalf_of(), 'bob', '... kept when it is released into the transaction');
RESET ROLE;

-- only tokens tokex minted: an IdP's token, whose sub and act tokex never checked, is exchanged first
SELECT tokex.trust_issuer('https://idp.test', jsonb_build_object('keys', jsonb_build_array(jsonb_build_object(
         'kty', 'oct', 'alg', 'HS256', 'kid', 'h1',
         'k', translate(encode(convert_to('idp-secret-0123456789abcdef0123456789', 'UTF8'), 'base64'), E'+/=\n', '-_')))));
SELECT (SELECT si || '.' || translate(encode(hmac(convert_to(si, 'UTF8'), convert_to('idp-secret-0123456789abcdef0123456789', 'UTF8'),
                                                'sha256'), 'base64'), E'+/=\n', '-_')
          FROM (SELECT translate(encode(convert_to('{"alg":"HS256","kid":"h1","typ":"at+jwt"}', 'UTF8'), 'base64'), E'+/=\n', '-_')
                       || '.' ||
                       translate(encode(convert_to(jsonb_build_object('iss', 'https://idp.test', 'sub', 'alice',
                                   'aud', 'notes-api', 'scope', 'notes.read', 'act', jsonb_build_object('sub', 'agent-a'),
                                   'exp', floor(extract(epoch FROM now()))::bigint + 600)::text, 'UTF8'), 'base64'),
                                 E'+/=\n', '-_') AS si) q) AS t_idp \gset
SET LOCAL ROLE app_api;
SELECT throws_ok(format('SELECT tokex.authenticate(%L)', :'t_idp'), '28000', 'invalid token',
                 'an IdP''s token naming "alice" is not taken as tokex''s alice');
SELECT is(pg_temp.seen(), '', '... and reads nothing');
RESET ROLE;

-- a resource that takes only DPoP-bound tokens refuses a bearer one here too
UPDATE tokex.resource SET require_dpop = true WHERE audience = 'notes-api';
SET LOCAL ROLE app_api;
SELECT throws_ok(format('SELECT tokex.authenticate(%L)', :'t_bob'), '28000', 'invalid token',
                 'require_dpop: a bearer token is refused by authenticate');
RESET ROLE;

SELECT ok(NOT has_function_privilege('tokex_auditor', 'tokex.authenticate(text, text, text, text)', 'EXECUTE')
          AND NOT has_function_privilege('tokex_web', 'tokex.on_behalf_of()', 'EXECUTE'),
          'auditors do not authenticate, the HTTP face reads no claims');
SELECT * FROM finish();
ROLLBACK;
