-- Signing keys: create_key for every signing algorithm, the next → active →
-- retired → revoked lifecycle, kid = RFC 7638 thumbprint, jwks() publishing
-- only public members, cache invalidation on revoke, and the tokex.* GUCs.
\ir preamble.psql
SELECT plan(94);

CREATE FUNCTION pg_temp.b64url(b bytea) RETURNS text LANGUAGE sql IMMUTABLE AS $$
  SELECT translate(encode(b, 'base64'), E'+/=\n', '-_')
$$;
-- RFC 7638 §3.2: required members only, lexicographic order, no whitespace
CREATE FUNCTION pg_temp.thumbprint(j jsonb) RETURNS text LANGUAGE sql IMMUTABLE AS $$
  SELECT pg_temp.b64url(sha256(convert_to(CASE j->>'kty'
    WHEN 'EC'  THEN format('{"crv":"%s","kty":"EC","x":"%s","y":"%s"}', j->>'crv', j->>'x', j->>'y')
    WHEN 'OKP' THEN format('{"crv":"%s","kty":"OKP","x":"%s"}', j->>'crv', j->>'x')
    WHEN 'RSA' THEN format('{"e":"%s","kty":"RSA","n":"%s"}', j->>'e', j->>'n')
  END, 'UTF8')))
$$;
-- "SQLSTATE message: detail" of a statement, or 'ok'
CREATE FUNCTION pg_temp.err(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE st text; msg text; det text;
BEGIN
  EXECUTE q;
  RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL;
  RETURN st || ' ' || msg || coalesce(': ' || nullif(det, ''), '');
END
$$;
CREATE FUNCTION pg_temp.verr(tok text) RETURNS text LANGUAGE sql AS $$
  SELECT pg_temp.err(format('SELECT tokex.jwt_verify(%L)', tok))
$$;
CREATE FUNCTION pg_temp.claims() RETURNS jsonb LANGUAGE sql AS $$
  SELECT jsonb_build_object('sub', 'alice', 'exp', floor(extract(epoch FROM now()))::bigint + 600)
$$;
CREATE FUNCTION pg_temp.status(k text) RETURNS text LANGUAGE sql AS $$
  SELECT status FROM tokex.key WHERE kid = k
$$;
CREATE FUNCTION pg_temp.published(k text) RETURNS boolean LANGUAGE sql AS $$
  SELECT EXISTS (SELECT 1 FROM jsonb_array_elements(tokex.jwks()->'keys') j WHERE j->>'kid' = k)
$$;

------------------------------------------------------------------------
-- create_key
------------------------------------------------------------------------
SELECT is(tokex.jwks(), '{"keys":[]}'::jsonb, 'jwks() is empty before any key exists');
SELECT tokex.create_key() AS k_es256 \gset
SELECT tokex.create_key('ES384') AS k_es384 \gset
SELECT tokex.create_key('ES512') AS k_es512 \gset
SELECT tokex.create_key('EdDSA') AS k_eddsa \gset
SELECT tokex.create_key('RS256') AS k_rs256 \gset
SELECT tokex.create_key('PS256') AS k_ps256 \gset
SELECT tokex.create_key('RS384') AS k_rs384 \gset
CREATE TEMP TABLE want (kid text, alg text, kty text, crv text, bits int);
INSERT INTO want VALUES
  (:'k_es256', 'ES256', 'EC',  'P-256',   NULL),
  (:'k_es384', 'ES384', 'EC',  'P-384',   NULL),
  (:'k_es512', 'ES512', 'EC',  'P-521',   NULL),
  (:'k_eddsa', 'EdDSA', 'OKP', 'Ed25519', NULL),
  (:'k_rs256', 'RS256', 'RSA', NULL,      2048),
  (:'k_ps256', 'PS256', 'RSA', NULL,      2048),
  (:'k_rs384', 'RS384', 'RSA', NULL,      3072);

SELECT is((SELECT count(*) FROM tokex.key), 7::bigint, 'seven keys created');
SELECT is((SELECT count(DISTINCT kid) FROM want), 7::bigint, 'seven distinct kids');
SELECT is(pg_temp.status(:'k_es256'), 'active', 'the first key (default alg) is active');
SELECT is((SELECT alg FROM tokex.key WHERE kid = :'k_es256'), 'ES256', 'create_key() defaults to ES256');
SELECT isnt((SELECT activated_at FROM tokex.key WHERE kid = :'k_es256'), NULL, 'the first key has activated_at');
SELECT is((SELECT array_agg(DISTINCT status) FROM tokex.key WHERE kid <> :'k_es256'), '{next}'::text[],
          'later keys are next');
SELECT is((SELECT count(*) FROM tokex.key WHERE status = 'active'), 1::bigint, 'exactly one active key');

SELECT is((SELECT k.alg FROM tokex.key k WHERE k.kid = w.kid), w.alg, w.alg || ': stored alg')
  FROM want w ORDER BY w.alg;
SELECT is((SELECT count(*) FROM want w WHERE w.kid ~ '^[A-Za-z0-9_-]{43}$'), 7::bigint,
          'every kid is 43 base64url characters (a SHA-256 digest)');
SELECT is(
  (SELECT string_agg(w.alg, ',' ORDER BY w.alg) FROM want w JOIN tokex.key k USING (kid)
    WHERE k.public_jwk->>'kid' = w.kid AND pg_temp.thumbprint(k.public_jwk) = w.kid),
  'ES256,ES384,ES512,EdDSA,PS256,RS256,RS384',
  'kid = public_jwk.kid = RFC 7638 thumbprint of public_jwk, for every alg');
SELECT is(
  (SELECT string_agg(w.alg, ',' ORDER BY w.alg) FROM want w JOIN tokex.key k USING (kid)
    WHERE k.public_jwk->>'alg' = w.alg AND k.public_jwk->>'kty' = w.kty
      AND k.public_jwk->>'use' = 'sig'
      AND (k.public_jwk->>'crv') IS NOT DISTINCT FROM w.crv),
  'ES256,ES384,ES512,EdDSA,PS256,RS256,RS384',
  'public_jwk has the right kty, crv, alg and use=sig');
SELECT is(
  (SELECT string_agg(w.alg || ':' || length(decode(translate(k.public_jwk->>'n', '-_', '+/')
                       || repeat('=', (4 - length(k.public_jwk->>'n') % 4) % 4), 'base64')) * 8, ','
                     ORDER BY w.alg)
     FROM want w JOIN tokex.key k USING (kid) WHERE w.kty = 'RSA'),
  'PS256:2048,RS256:2048,RS384:3072',
  'RSA moduli: 2048 bits for *256, 3072 for *384');
SELECT is((SELECT count(*) FROM tokex.key WHERE public_jwk->>'kty' = 'RSA' AND public_jwk->>'e' <> 'AQAB'),
          0::bigint, 'RSA public exponent is 65537');

-- unsupported algorithms
SELECT throws_ok($$SELECT tokex.create_key('HS256')$$, '22023',
                 'unsupported signing algorithm "HS256"', 'HS256 keys cannot be generated (verify-only)');
SELECT throws_ok($$SELECT tokex.create_key('none')$$, '22023',
                 'unsupported signing algorithm "none"', 'alg none is refused');
SELECT throws_ok($$SELECT tokex.create_key('foo')$$, '22023',
                 'unsupported signing algorithm "foo"', 'unknown alg is refused');
SELECT throws_ok($$SELECT tokex.create_key('es256')$$, '22023',
                 'unsupported signing algorithm "es256"', 'alg names are case-sensitive');
SELECT throws_ok($$SELECT tokex.create_key('')$$, '22023', NULL, 'empty alg is refused');
SELECT throws_ok($$SELECT tokex.create_key(NULL)$$, '22004', NULL, 'NULL alg is refused');
SELECT is((SELECT count(*) FROM tokex.key), 7::bigint, 'failed create_key calls add no rows');

------------------------------------------------------------------------
-- jwks(): every published key, public members only
------------------------------------------------------------------------
SELECT is(jsonb_array_length(tokex.jwks()->'keys'), 7, 'jwks() publishes next and active keys');
SELECT is(
  (SELECT array_agg(j->>'kid' ORDER BY j->>'kid') FROM jsonb_array_elements(tokex.jwks()->'keys') j),
  (SELECT array_agg(kid ORDER BY kid) FROM want), 'jwks() kids are the created kids');
SELECT is(
  (SELECT count(*) FROM jsonb_array_elements(tokex.jwks()->'keys') j
    WHERE j ?| ARRAY['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k', 'priv', 'private_key']),
  0::bigint, 'no JWK in jwks() has a private member');
SELECT is(
  (SELECT count(*) FROM jsonb_array_elements(tokex.jwks()->'keys') j, jsonb_object_keys(j) m
    WHERE m NOT IN ('kty', 'kid', 'alg', 'use', 'crv', 'x', 'y', 'n', 'e')),
  0::bigint, 'JWKs carry only kty, kid, alg, use and the public parameters');
SELECT is((SELECT count(*) FROM tokex.key WHERE public_jwk ?| ARRAY['d', 'p', 'q', 'dp', 'dq', 'qi']),
          0::bigint, 'public_jwk column holds no private member');
SELECT is(tokex._jwks_check(tokex.jwks()), 7, 'jwks() parses back as a JWKS with 7 usable keys');

------------------------------------------------------------------------
-- Every key signs (by kid) and verifies, with its own alg in the header
------------------------------------------------------------------------
CREATE TEMP TABLE tok AS
  SELECT w.kid, w.alg, tokex.jwt_sign(pg_temp.claims(), w.kid) AS token FROM want w;
SELECT is(
  (SELECT string_agg(t.alg, ',' ORDER BY t.alg) FROM tok t
    WHERE tokex.jwt_decode(t.token)->'header' = jsonb_build_object('alg', t.alg, 'kid', t.kid, 'typ', 'JWT')),
  'ES256,ES384,ES512,EdDSA,PS256,RS256,RS384',
  'jwt_sign(claims, kid) uses that key: header alg/kid/typ');
SELECT is(
  (SELECT string_agg(t.alg, ',' ORDER BY t.alg) FROM tok t
    WHERE tokex.jwt_verify(t.token)->>'sub' = 'alice'),
  'ES256,ES384,ES512,EdDSA,PS256,RS256,RS384',
  'tokens of every alg verify');
SELECT is((tokex.jwt_decode(tokex.jwt_sign(pg_temp.claims()))->'header'->>'kid'), :'k_es256',
          'jwt_sign without kid uses the active key');
SELECT is(
  (SELECT string_agg(length(split_part(t.token, '.', 3))::text, ',' ORDER BY t.alg) FROM tok t
    WHERE t.alg LIKE 'ES%'),
  '86,128,176', 'ES signatures are fixed-length r||s (64, 96, 132 bytes)');
SELECT is(
  pg_temp.err(format('SELECT tokex.jwt_sign(%L, %L)', pg_temp.claims(), 'no-such-kid')),
  '55000 no signing key: no active or next signing key with this kid',
  'jwt_sign with an unknown kid fails');

-- a token from each key before any status change, for the checks below
SELECT token AS t_es256 FROM tok WHERE alg = 'ES256' \gset
SELECT token AS t_es384 FROM tok WHERE alg = 'ES384' \gset
SELECT token AS t_eddsa FROM tok WHERE alg = 'EdDSA' \gset
SELECT token AS t_rs256 FROM tok WHERE alg = 'RS256' \gset

------------------------------------------------------------------------
-- activate_key: rotation
------------------------------------------------------------------------
SELECT lives_ok(format('SELECT tokex.activate_key(%L)', :'k_es384'), 'activate_key(next key)');
SELECT is(pg_temp.status(:'k_es384'), 'active', 'activated key is active');
SELECT is(pg_temp.status(:'k_es256'), 'retired', 'previous active key is retired');
SELECT isnt((SELECT retired_at FROM tokex.key WHERE kid = :'k_es256'), NULL, 'retired key has retired_at');
SELECT is((SELECT count(*) FROM tokex.key WHERE status = 'active'), 1::bigint, 'still exactly one active key');
SELECT ok(pg_temp.published(:'k_es256'), 'the retired key is still published');
SELECT is(pg_temp.verr(:'t_es256'), 'ok', 'a token of the retired key still verifies');
SELECT is((tokex.jwt_decode(tokex.jwt_sign(pg_temp.claims()))->'header'->>'kid'), :'k_es384',
          'jwt_sign now signs with the new active key');
SELECT is(
  pg_temp.err(format('SELECT tokex.jwt_sign(%L, %L)', pg_temp.claims(), :'k_es256')),
  '55000 no signing key: no active or next signing key with this kid',
  'a retired key cannot sign, even by kid');
SELECT lives_ok(format('SELECT tokex.activate_key(%L)', :'k_es384'), 'activating the active key is a no-op');
SELECT is(pg_temp.status(:'k_es384'), 'active', 'it stays active');
SELECT throws_ok($$SELECT tokex.activate_key('nope')$$, 'P0002', 'key "nope" does not exist',
                 'activate_key of an unknown kid fails');
SELECT throws_ok($$SELECT tokex.activate_key(NULL)$$, 'P0002', NULL, 'activate_key(NULL) fails');
-- a retired key may come back (roll back a rotation)
SELECT lives_ok(format('SELECT tokex.activate_key(%L)', :'k_es256'), 'a retired key can be re-activated');
SELECT is(pg_temp.status(:'k_es256'), 'active', 'the re-activated key is active');
SELECT is(pg_temp.status(:'k_es384'), 'retired', 'and the other one retired');
SELECT is((SELECT retired_at FROM tokex.key WHERE kid = :'k_es256'), NULL, 're-activation clears retired_at');

------------------------------------------------------------------------
-- retire_key
------------------------------------------------------------------------
SELECT lives_ok(format('SELECT tokex.retire_key(%L)', :'k_eddsa'), 'retire_key(next key)');
SELECT is(pg_temp.status(:'k_eddsa'), 'retired', 'retired');
SELECT ok(pg_temp.published(:'k_eddsa'), 'a retired key is published');
SELECT is(pg_temp.verr(:'t_eddsa'), 'ok', 'and its tokens still verify');
SELECT lives_ok(format('SELECT tokex.retire_key(%L)', :'k_eddsa'), 'retiring twice is a no-op');
SELECT throws_ok($$SELECT tokex.retire_key('nope')$$, 'P0002', 'key "nope" does not exist',
                 'retire_key of an unknown kid fails');

------------------------------------------------------------------------
-- revoke_key: unpublished, and its tokens fail at once in this session
------------------------------------------------------------------------
SELECT is(pg_temp.verr(:'t_rs256'), 'ok', 'before revocation the RS256 token verifies (keys cached)');
SELECT lives_ok(format('SELECT tokex.revoke_key(%L)', :'k_rs256'), 'revoke_key(next key)');
SELECT is(pg_temp.status(:'k_rs256'), 'revoked', 'revoked');
SELECT isnt((SELECT revoked_at FROM tokex.key WHERE kid = :'k_rs256'), NULL, 'revoked key has revoked_at');
SELECT ok(NOT pg_temp.published(:'k_rs256'), 'a revoked key is not in jwks()');
SELECT is(pg_temp.verr(:'t_rs256'), '28000 invalid token: no key with this kid',
          'a token of the revoked key fails right after revoke (cache invalidated)');
SELECT is(pg_temp.verr(:'t_es256'), 'ok', 'tokens of other keys still verify');

-- revoking the active key: nothing signs until another key is activated
SELECT is(pg_temp.verr(:'t_es256'), 'ok', 'the active key''s token verifies');
SELECT lives_ok(format('SELECT tokex.revoke_key(%L)', :'k_es256'), 'revoke_key(active key)');
SELECT is(pg_temp.verr(:'t_es256'), '28000 invalid token: no key with this kid',
          'the revoked active key''s token fails at once');
SELECT is(pg_temp.err(format('SELECT tokex.jwt_sign(%L)', pg_temp.claims())),
          '55000 no signing key: there is no active signing key',
          'with the active key revoked nothing signs');
SELECT throws_ok(format('SELECT tokex.activate_key(%L)', :'k_es256'), '55000',
                 format('key "%s" is revoked, it cannot be activated', :'k_es256'),
                 'a revoked key cannot be activated');
SELECT throws_ok(format('SELECT tokex.retire_key(%L)', :'k_es256'), '55000',
                 format('key "%s" is revoked', :'k_es256'), 'a revoked key cannot be retired');
SELECT lives_ok(format('SELECT tokex.revoke_key(%L)', :'k_es256'), 'revoking twice is a no-op');
SELECT throws_ok($$SELECT tokex.revoke_key('nope')$$, 'P0002', 'key "nope" does not exist',
                 'revoke_key of an unknown kid fails');
SELECT tokex.create_key('ES256') AS k_new \gset
SELECT is(pg_temp.status(:'k_new'), 'active', 'with no active key, a new key becomes active');
SELECT is((tokex.jwt_decode(tokex.jwt_sign(pg_temp.claims()))->'header'->>'kid'), :'k_new',
          'and signs');

-- a revocation rolled back to a savepoint is forgotten by the cache too
SELECT is(pg_temp.verr(:'t_es384'), 'ok', 'the retired ES384 key''s token verifies');
SAVEPOINT before_revoke;
SELECT tokex.revoke_key(:'k_es384');
SELECT is(pg_temp.verr(:'t_es384'), '28000 invalid token: no key with this kid', 'fails inside the savepoint');
ROLLBACK TO SAVEPOINT before_revoke;
SELECT is(pg_temp.verr(:'t_es384'), 'ok', 'verifies again after ROLLBACK TO SAVEPOINT');
SELECT is(jsonb_array_length(tokex.jwks()->'keys'), 6, 'jwks(): 8 keys, 2 revoked');

------------------------------------------------------------------------
-- GUCs
------------------------------------------------------------------------
SELECT is(
  (SELECT array_agg(name ORDER BY name) FROM pg_settings
    WHERE name IN ('tokex.issuer', 'tokex.clock_skew', 'tokex.default_ttl', 'tokex.max_ttl',
                   'tokex.max_chain_depth')),
  '{tokex.clock_skew,tokex.default_ttl,tokex.issuer,tokex.max_chain_depth,tokex.max_ttl}'::text[],
  'the contract GUCs exist');
SELECT is((SELECT boot_val || unit FROM pg_settings WHERE name = 'tokex.clock_skew'), '60s',
          'tokex.clock_skew defaults to 60 s');
SELECT is((SELECT boot_val || unit FROM pg_settings WHERE name = 'tokex.default_ttl'), '300s',
          'tokex.default_ttl defaults to 5 min');
SELECT is((SELECT boot_val FROM pg_settings WHERE name = 'tokex.max_chain_depth'), '4',
          'tokex.max_chain_depth defaults to 4');
SELECT is((SELECT boot_val FROM pg_settings WHERE name = 'tokex.issuer'), '',
          'tokex.issuer has no default');
SELECT is(
  (SELECT count(*) FROM pg_settings
    WHERE name IN ('tokex.issuer', 'tokex.clock_skew', 'tokex.default_ttl', 'tokex.max_ttl',
                   'tokex.max_chain_depth') AND context <> 'superuser'),
  0::bigint, 'the contract GUCs are superuser-only (PGC_SUSET)');
SELECT is(current_setting('tokex.clock_skew')::interval, '60 seconds'::interval,
          'current tokex.clock_skew is 60 s');
SELECT throws_ok('SET tokex.nonexistent = 1', '42602', NULL,
                 'an unknown tokex.* GUC is refused (reserved prefix)');
SELECT throws_ok($$SELECT set_config('tokex.nonexistent', '1', true)$$, '42602', NULL,
                 'also through set_config');
SELECT throws_ok($$SET LOCAL tokex.clock_skew = '11min'$$, '22023', NULL, 'clock_skew above 600 s is refused');
SELECT throws_ok($$SET LOCAL tokex.max_chain_depth = 0$$, '22023', NULL, 'max_chain_depth below 1 is refused');
SELECT throws_ok($$SET LOCAL tokex.issuer = 'https://has space'$$, '22023', NULL,
                 'an issuer with a space is refused');

SELECT * FROM finish();
ROLLBACK;
