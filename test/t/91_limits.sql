-- Resource limits (README "Reliability: limits"): each documented maximum is
-- enforced, at the limit accepted and one past it refused with the documented
-- error, before anything of that size is allocated.
\ir preamble.psql
SELECT plan(23);

SELECT tokex.create_key() IS NOT NULL AS k \gset
INSERT INTO tokex.identity (id, kind) VALUES ('alice', 'human'), ('asst', 'agent');
INSERT INTO tokex.resource (audience, scopes) VALUES ('cal', '{cal.read}');
INSERT INTO tokex.delegation (principal, delegate, scopes) VALUES ('alice', 'asst', '{cal.read}');
INSERT INTO tokex.policy (effect, subject_kind, actor_kind) VALUES ('allow', 'human', 'agent');
CREATE TEMP TABLE fx AS SELECT tokex.identity_token('asst') AS at;

CREATE FUNCTION pg_temp.b64u(t text) RETURNS text LANGUAGE sql AS $$
  SELECT translate(encode(convert_to(t, 'UTF8'), 'base64'), E'+/=\n', '-_')
$$;
CREATE FUNCTION pg_temp.b64u(b bytea) RETURNS text LANGUAGE sql AS $$
  SELECT translate(encode(b, 'base64'), E'+/=\n', '-_')
$$;
-- the SQLSTATE and DETAIL jwt_verify raised, or 'ok'
CREATE FUNCTION pg_temp.verify(t text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE st text; d text;
BEGIN
  PERFORM tokex.jwt_verify(t);
  RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, d = PG_EXCEPTION_DETAIL;
  RETURN st || ' ' || d;
END $$;
-- the SQLSTATE, message and DETAIL a statement raised, or 'ok'
CREATE FUNCTION pg_temp.err(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE st text; m text; d text;
BEGIN
  EXECUTE q;
  RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, m = MESSAGE_TEXT, d = PG_EXCEPTION_DETAIL;
  RETURN st || ' ' || m || ': ' || d;
END $$;
CREATE FUNCTION pg_temp.claims(extra jsonb DEFAULT '{}') RETURNS jsonb LANGUAGE sql AS $$
  SELECT jsonb_build_object('sub', 'alice', 'exp', extract(epoch FROM now())::int + 600) || extra
$$;
CREATE FUNCTION pg_temp.x(st text, scope text DEFAULT NULL) RETURNS jsonb LANGUAGE sql AS $$
  SELECT tokex.exchange(st, 'urn:ietf:params:oauth:token-type:jwt', (SELECT at FROM fx), 'urn:ietf:params:oauth:token-type:jwt',
                        audience => 'cal', scope => scope)
$$;
-- act nested n deep, innermost first
CREATE FUNCTION pg_temp.act(n int) RETURNS jsonb LANGUAGE sql AS $$
  WITH RECURSIVE a(i, j) AS (SELECT 1, jsonb_build_object('sub', 'asst')
                             UNION ALL SELECT i + 1, jsonb_build_object('sub', 'asst', 'act', j) FROM a WHERE i < n)
  SELECT j FROM a WHERE i = n
$$;
SELECT tokex.jwt_sign(pg_temp.claims()) AS token \gset

-- token size: 64 KiB
SELECT is(left(pg_temp.verify(:'token' || repeat('A', 65536 - length(:'token'))), 5), '28000',
          'a token of 64 KiB is read (and refused only for its signature)');
SELECT alike(pg_temp.verify(repeat('A', 65537)), '28000 token longer than 65536 bytes%',
            'a token of 64 KiB + 1 byte: 28000, token too long');
SELECT throws_ok(format('SELECT tokex.jwt_decode(%L)', repeat('A', 65537)), '54000', 'token too long',
                 'jwt_decode refuses it too (54000)');

-- JSON depth: 32
SELECT ok(pg_temp.verify(pg_temp.b64u('{"alg":"ES256","x":' || repeat('[', 31) || repeat(']', 31) || '}')
                           || '.e30.AAAA') !~ 'nested',
          'a header nested 32 deep is read (and refused for what it lacks)');
SELECT alike(pg_temp.verify(pg_temp.b64u('{"alg":"ES256","x":' || repeat('[', 32) || repeat(']', 32) || '}')
                           || '.e30.AAAA'), '28000 %nested%',
            'a header nested 33 deep: 28000, nested too deeply');

-- JSON members and elements: 4096 per text
SELECT is(pg_temp.verify(tokex.jwt_sign(pg_temp.claims(jsonb_build_object('n',
            (SELECT jsonb_agg(0) FROM generate_series(1, 4000)))))), 'ok',
          'a payload of about 4000 members and elements verifies');
SELECT alike(pg_temp.verify(pg_temp.b64u('{"alg":"ES256"}') || '.' ||
              pg_temp.b64u(pg_temp.claims(jsonb_build_object('n', (SELECT jsonb_agg(0) FROM generate_series(1, 4097))))::text)
              || '.AAAA'), '28000 %too many members%',
            'a payload of more than 4096: 28000, too many members');
SELECT throws_ok($$SELECT tokex.jwt_sign(pg_temp.claims(jsonb_build_object('n',
                   (SELECT jsonb_agg(0) FROM generate_series(1, 4097)))))$$, '22023', 'invalid claims',
                 'jwt_sign refuses to sign claims it could not verify (22023)');

-- JWKS: 64 keys
CREATE FUNCTION pg_temp.jwks(n int) RETURNS jsonb LANGUAGE sql AS $$
  SELECT jsonb_build_object('keys', jsonb_agg(jsonb_build_object('kty', 'oct', 'alg', 'HS256', 'kid', 'k' || i,
           'k', pg_temp.b64u(sha256(i::text::bytea) || sha256(i::text::bytea)))))
    FROM generate_series(1, n) i
$$;
SELECT lives_ok($$SELECT tokex.trust_issuer('https://idp64.test', pg_temp.jwks(64))$$, 'a JWKS of 64 keys is trusted');
SELECT throws_like($$SELECT tokex.trust_issuer('https://idp65.test', pg_temp.jwks(65))$$, '%',
                   'a JWKS of 65 keys is refused');
SELECT throws_ok($$SELECT tokex.trust_issuer('https://idp65.test', pg_temp.jwks(65))$$, '22023', NULL,
                 '... with 22023');

-- RSA moduli: 2048 to 8192 bits
SELECT alike(pg_temp.err(format($$SELECT tokex.trust_issuer('https://rsa.test', '{"keys":[{"kty":"RSA","alg":"RS256","e":"AQAB","n":"%s"}]}')$$,
                               pg_temp.b64u(decode(repeat('ff', 1025), 'hex')))),
             '22023 invalid JWKS: %longer than 8192%',
             'an RSA modulus of 8200 bits is refused (its signatures would exceed 1024 bytes)');

-- scopes: 64 tokens, 32 KiB
SELECT tokex.start_session('alice', 'asst', '{cal.read}') ->> 'session_token' AS st \gset
SELECT is(pg_temp.x(:'st', (SELECT string_agg('cal.read', ' ') FROM generate_series(1, 64)))->>'error', NULL,
          '64 scope tokens are read');
SELECT is(pg_temp.x(:'st', (SELECT string_agg('cal.read', ' ') FROM generate_series(1, 65)))->>'error', 'invalid_request',
          '65 scope tokens: invalid_request');
SELECT is(pg_temp.x(:'st', 'cal.read ' || repeat('x', 32768 - 9))->>'error', 'invalid_scope',
          'a scope of 32 KiB is read (and refused as unknown)');
SELECT is(pg_temp.x(:'st', 'cal.read ' || repeat('x', 32768 - 8))->>'error', 'invalid_request',
          'a scope of 32 KiB + 1 byte: invalid_request');

-- chain depth (tokex.max_chain_depth, at most 16) and act nesting
SELECT unalike(pg_temp.x(tokex.jwt_sign(pg_temp.claims(jsonb_build_object('act', pg_temp.act(3)))))->>'error_description',
              'actor chain longer%', 'act nested 3 deep + the actor: within tokex.max_chain_depth (4)');
SELECT alike(pg_temp.x(tokex.jwt_sign(pg_temp.claims(jsonb_build_object('act', pg_temp.act(4)))))->>'error_description',
            'actor chain longer than tokex.max_chain_depth (4)%',
            'act nested 4 deep + the actor: longer than tokex.max_chain_depth (4), invalid_grant');
SELECT alike(pg_temp.x(tokex.jwt_sign(pg_temp.claims(jsonb_build_object('act', pg_temp.act(20)))))->>'error_description',
            'actor chain longer than tokex.max_chain_depth%',
            'act nested 20 deep: refused before the chain buffer (17) is exceeded');
SELECT alike(pg_temp.err($$SELECT tokex.jwt_sign(pg_temp.claims(jsonb_build_object('act', pg_temp.act(40))))$$),
             '22023 invalid claims: %nested too deeply%', 'act nested 40 deep: jwt_sign refuses it (JSON depth)');
SELECT is(pg_temp.x(pg_temp.b64u('{"alg":"ES256"}') || '.' ||
                    pg_temp.b64u(pg_temp.claims(jsonb_build_object('act', pg_temp.act(40)))::text) || '.AAAA')->>'error',
          'invalid_grant', '... and the exchange refuses such a token (invalid_grant)');

-- may_act: 64 entries
SELECT is(pg_temp.x(tokex.jwt_sign(pg_temp.claims(jsonb_build_object('may_act',
            (SELECT jsonb_agg(jsonb_build_object('sub', 'asst')) FROM generate_series(1, 64))))))->>'error',
          NULL, 'may_act of 64 entries is read');
SELECT is(pg_temp.x(tokex.jwt_sign(pg_temp.claims(jsonb_build_object('may_act',
            (SELECT jsonb_agg(jsonb_build_object('sub', 'asst')) FROM generate_series(1, 65))))))->>'error_description',
          'subject token may_act claim is malformed', 'may_act of 65 entries: invalid_grant');

SELECT * FROM finish();
ROLLBACK;
