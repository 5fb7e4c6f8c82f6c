-- Edge cases found in review: each was a bug once, each assertion fails if it returns.
\ir preamble.psql
SELECT plan(26);

SELECT tokex.create_key() IS NOT NULL AS k \gset
INSERT INTO tokex.identity (id, kind) VALUES ('alice', 'human'), ('asst', 'agent'), ('other', 'agent');
INSERT INTO tokex.resource (audience, scopes, token_ttl) VALUES ('cal', '{cal.read}', '2 minutes');
INSERT INTO tokex.delegation (principal, delegate, scopes, max_depth) VALUES
  ('alice', 'asst', '{cal.read}', 2), ('asst', 'other', '{cal.read}', 1);
INSERT INTO tokex.policy (effect, subject_kind, actor_kind) VALUES ('allow', 'human', 'agent');
SELECT tokex.identity_token('asst') AS at, tokex.identity_token('other') AS ot \gset

CREATE FUNCTION pg_temp.x(st text, at text, client text DEFAULT NULL) RETURNS jsonb LANGUAGE sql AS $$
  SELECT tokex.exchange(st, 'urn:ietf:params:oauth:token-type:jwt', at, 'urn:ietf:params:oauth:token-type:jwt',
                        audience => 'cal', client_id => client)
$$;

-- resource TTLs are whole seconds: a sub-second one is refused, not turned into the default
SELECT throws_ok($$INSERT INTO tokex.resource (audience, scopes, token_ttl) VALUES ('fast', '{x}', '500 milliseconds')$$,
                 '23514', NULL, 'a sub-second token_ttl is refused');

-- a session started earlier in the same statement is visible to the exchange
SELECT ok(pg_temp.x(tokex.start_session('alice', 'asst', '{cal.read}')->>'session_token', :'at') ? 'access_token',
          'exchange sees a session started in the same statement');

-- an empty scope list makes a session that could grant nothing: refused
SELECT throws_ok($$SELECT tokex.start_session('alice', 'asst', '{}')$$, '22023', NULL,
                 'start_session with an empty scope list is refused');

-- the audit row's client_id is the token's client_id
SELECT tokex.start_session('alice', 'asst') AS s \gset
SELECT pg_temp.x((:'s'::jsonb)->>'session_token', :'at') AS r \gset
SELECT is((SELECT client_id FROM tokex.audit WHERE jti::text = (tokex.jwt_decode((:'r'::jsonb)->>'access_token'))->'payload'->>'jti'),
          (tokex.jwt_decode((:'r'::jsonb)->>'access_token'))->'payload'->>'client_id',
          'audit client_id equals the minted token''s client_id claim');
SELECT is((tokex.jwt_decode((:'r'::jsonb)->>'access_token'))->'payload'->>'client_id', 'asst',
          '... which defaults to the current actor');

-- a tokex access token is a credential for its audience, not an actor credential
SELECT is(pg_temp.x(tokex.jwt_sign(jsonb_build_object('sub', 'alice', 'exp', extract(epoch FROM now())::int + 600)),
                    (:'r'::jsonb)->>'access_token')->>'error_description',
          'actor_token: an access token minted for a resource is not an actor credential',
          'an access token presented as actor_token is refused');

-- a client registered for other grants cannot use token exchange, even through SQL
INSERT INTO tokex.client (client_id, grant_types) VALUES ('cc-only', '{client_credentials}');
SELECT is(pg_temp.x((:'s'::jsonb)->>'session_token', :'at', 'cc-only')->>'error', 'unauthorized_client',
          'a client without the token-exchange grant type is refused by tokex.exchange');

-- a resource server holding an access token cannot move it sideways without a new actor
INSERT INTO tokex.resource (audience, scopes) VALUES ('cal2', '{cal.read}');
SELECT is(tokex.exchange((:'r'::jsonb)->>'access_token', 'urn:ietf:params:oauth:token-type:access_token',
                         audience => 'cal2')->>'error_description',
          'an access token is re-exchanged without a new actor only for its own audience',
          'an access token re-exchanged without an actor for another audience is refused');
SELECT ok(tokex.exchange((:'r'::jsonb)->>'access_token', 'urn:ietf:params:oauth:token-type:access_token',
                         audience => 'cal') ? 'access_token',
          '... for its own audience it is granted');

-- a session token (or any delegated token) is not an actor credential
SELECT is(pg_temp.x((:'s'::jsonb)->>'session_token', (:'s'::jsonb)->>'session_token')->>'error_description',
          'actor_token: a session or delegated token is not an actor credential',
          'a session token presented as actor_token is refused');

-- client JWKS hold public keys only: a shared secret there would be readable by admins
SELECT throws_ok($$INSERT INTO tokex.client (client_id, jwks)
                   VALUES ('hs', '{"keys":[{"kty":"oct","k":"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA"}]}')$$,
                 '23514', NULL, 'an oct key in a client JWKS is refused');

-- a caller's temporary types cannot shadow the types SECURITY DEFINER code names:
-- pg_temp comes last in the pinned search_path
CREATE ROLE tokex_test_mallory NOLOGIN IN ROLE tokex_app;
GRANT TEMPORARY ON DATABASE :"DBNAME" TO tokex_test_mallory;
SET LOCAL ROLE tokex_test_mallory;
CREATE TYPE pg_temp.uuid AS ENUM ('x');
CREATE FUNCTION pg_temp.evil(pg_catalog.uuid) RETURNS pg_temp.uuid LANGUAGE plpgsql AS
  $f$ BEGIN RAISE EXCEPTION 'ran as %', current_user; END $f$;
CREATE CAST (pg_catalog.uuid AS pg_temp.uuid) WITH FUNCTION pg_temp.evil(pg_catalog.uuid) AS ASSIGNMENT;
SELECT lives_ok($$SELECT tokex.start_session('alice', 'asst')$$,
                'a temporary uuid type and cast do not hijack start_session');
RESET ROLE;

-- a session credential is no access token for any resource: a resource
-- server that trusts active + scope must not take it for one
SELECT tokex.start_session('alice', 'asst') AS s2 \gset
SELECT is(tokex.introspect((:'s2'::jsonb)->>'session_token'), '{"active": false}'::jsonb,
          'a session credential introspects inactive');
SELECT is(tokex.introspect(tokex.identity_token('asst')), '{"active": false}'::jsonb,
          'an identity token (actor credential) introspects inactive');

-- tokens_valid_after moving later is a revocation; moving it back or clearing it is not
SELECT count(*) AS before FROM tokex.revocation \gset
UPDATE tokex.identity SET tokens_valid_after = now() WHERE id = 'other';
SELECT is((SELECT count(*) FROM tokex.revocation) - :before, 1::bigint, 'tokens_valid_after moving later: one revocation row');
UPDATE tokex.identity SET tokens_valid_after = now() - interval '1 day' WHERE id = 'other';
UPDATE tokex.identity SET tokens_valid_after = NULL WHERE id = 'other';
SELECT is((SELECT count(*) FROM tokex.revocation) - :before, 1::bigint, '... moving it back or clearing it: none');
UPDATE tokex.identity SET status = 'active' WHERE id = 'asst';
SELECT is((SELECT count(*) FROM tokex.revocation) - :before, 1::bigint, '... nor a no-op status update');

-- the audit log stays append-only under replication role (ENABLE ALWAYS)
SET LOCAL session_replication_role = replica;
SELECT throws_ok('DELETE FROM tokex.audit_event', '42501', NULL, 'audit_event: DELETE refused under replica role');
SELECT throws_ok('UPDATE tokex.token_use SET outcome = NULL', '42501', NULL, 'token_use: UPDATE refused under replica role');
SET LOCAL session_replication_role = origin;

-- a session whose delegation lapsed cannot start new sessions either
UPDATE tokex.delegation SET valid_from = now() - interval '1 hour', valid_until = now() - interval '1 second'
 WHERE principal = 'alice';
SELECT throws_ok($$SELECT tokex.start_session('alice', 'asst')$$, '28000', NULL,
                 'start_session needs a live delegation');
SELECT is(pg_temp.x((:'s2'::jsonb)->>'session_token', :'at')->>'error', 'invalid_grant',
          'a session whose delegation lapsed is refused');

-- claims are signed and returned as given: numbers keep their digits
SELECT is(tokex.jwt_verify(tokex.jwt_sign('{"f": 0.1, "n": 12345678901234567, "exp": 9999999999}'))->'f',
          '0.1'::jsonb, 'a decimal claim keeps its digits through sign and verify');
SELECT is((tokex.jwt_decode(tokex.jwt_sign('{"f": 0.1, "exp": 9999999999}')))->'payload'->'f',
          '0.1'::jsonb, '... in the signed payload too');
SELECT throws_ok($$SELECT tokex.jwt_sign('{"n": 123456789012345678901, "exp": 9999999999}')$$, '22023',
                 'invalid claims', 'an integer outside the 64-bit range is refused');

-- client secrets are stored as salted PBKDF2 with the configured iterations, never in clear
SET LOCAL tokex.secret_hash_iterations = 100000;
SELECT tokex.register_client('iter-app') AS secret \gset
SELECT matches((SELECT secret_hash FROM tokex.client WHERE client_id = 'iter-app'),
               '^pbkdf2-sha256\$100000\$[A-Za-z0-9_-]{22}\$[A-Za-z0-9_-]{43}$',
               'the secret hash records tokex.secret_hash_iterations, a salt and the hash');
SELECT ok(tokex._verify_secret(:'secret', (SELECT secret_hash FROM tokex.client WHERE client_id = 'iter-app'))
          AND NOT tokex._verify_secret(:'secret' || 'x', (SELECT secret_hash FROM tokex.client WHERE client_id = 'iter-app')),
          '... and verifies the secret it was made from, and nothing else');

SELECT * FROM finish();
ROLLBACK;
