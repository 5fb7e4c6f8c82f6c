-- The verified-token cache (tokex.verified_token_cache): a token presented
-- again skips its signature check, but every claim check runs at each call
-- (expiry, audience), and a key revoked, an issuer no longer trusted or a
-- tokex.issuer changed drops what was verified; it holds at most its limit.
\ir preamble.psql
SELECT plan(16);

SELECT tokex.create_key() AS kid \gset
CREATE FUNCTION pg_temp.tok(claims jsonb) RETURNS text LANGUAGE sql AS $$
  SELECT tokex._sign(jsonb_build_object('iss', 'https://tokex.test', 'iat', floor(extract(epoch FROM now()))::bigint,
                                        'exp', floor(extract(epoch FROM now()))::bigint + 600) || claims, 'JWT')
$$;
CREATE FUNCTION pg_temp.hits() RETURNS bigint LANGUAGE sql AS $$ SELECT hits FROM tokex._verified_token_cache() $$;
CREATE FUNCTION pg_temp.verifies(t text, aud text DEFAULT NULL) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
  PERFORM tokex.jwt_verify(t, aud);
  RETURN true;
EXCEPTION WHEN invalid_authorization_specification THEN
  RETURN false;
END $$;

SELECT pg_temp.tok('{"sub": "a", "aud": "cal"}') AS t \gset
SELECT pg_temp.hits() AS h0 \gset
SELECT ok(pg_temp.verifies(:'t'), 'a token verifies');
SELECT is(pg_temp.hits(), :h0::bigint, '... the first time by its signature (a miss)');
SELECT ok(pg_temp.verifies(:'t'), 'and again');
SELECT is(pg_temp.hits(), :h0::bigint + 1, '... the second time from the cache (a hit)');
SELECT is(tokex.jwt_verify(:'t'), tokex.jwt_decode(:'t')->'payload', '... with the same claims');

-- the claims are checked at every call
SELECT ok(pg_temp.verifies(:'t', 'cal'), 'a cached token verifies for its audience');
SELECT ok(NOT pg_temp.verifies(:'t', 'mail'), '... and not for another: the audience is checked at each call');
SET tokex.clock_skew = 0;
SELECT pg_temp.tok(jsonb_build_object('sub', 'short', 'exp', floor(extract(epoch FROM clock_timestamp()))::bigint + 1)) AS t_short \gset
SELECT ok(pg_temp.verifies(:'t_short'), 'a token about to expire verifies (and is cached)');
SELECT pg_sleep(2.1);
SELECT ok(NOT pg_temp.verifies(:'t_short'), '... and is refused once it expired: exp is checked at each call');
RESET tokex.clock_skew;

-- what was verified with a key goes with the key
SELECT ok(pg_temp.verifies(:'t'), 'cached');
SELECT tokex.create_key() AS kid2 \gset
SELECT tokex.activate_key(:'kid2');
SELECT tokex.revoke_key(:'kid');
SELECT ok(NOT pg_temp.verifies(:'t'), 'its key revoked: the cached token is refused');

-- an issuer no longer trusted
-- an HS256 token of https://idp.test, keyed with secret s1
SELECT (SELECT si || '.' || translate(encode(hmac(convert_to(si, 'UTF8'), convert_to('s1-secret-0123456789abcdef0123456789', 'UTF8'),
                                                'sha256'), 'base64'), E'+/=\n', '-_')
          FROM (SELECT translate(encode(convert_to('{"alg":"HS256","kid":"h1","typ":"JWT"}', 'UTF8'), 'base64'), E'+/=\n', '-_')
                       || '.' ||
                       translate(encode(convert_to(jsonb_build_object('iss', 'https://idp.test', 'sub', 'x',
                                   'exp', floor(extract(epoch FROM now()))::bigint + 600)::text, 'UTF8'), 'base64'),
                                 E'+/=\n', '-_') AS si) q) AS t_idp \gset
SELECT tokex.trust_issuer('https://idp.test', jsonb_build_object('keys', jsonb_build_array(jsonb_build_object(
         'kty', 'oct', 'alg', 'HS256', 'kid', 'h1',
         'k', translate(encode(convert_to('s1-secret-0123456789abcdef0123456789', 'UTF8'), 'base64'), E'+/=\n', '-_')))));
SELECT ok(pg_temp.verifies(:'t_idp') AND pg_temp.verifies(:'t_idp'), 'an IdP''s token verifies, then from the cache');
DELETE FROM tokex.trusted_issuer WHERE issuer = 'https://idp.test';
SELECT ok(NOT pg_temp.verifies(:'t_idp'), 'the issuer no longer trusted: refused');

-- "own" depends on tokex.issuer
SELECT pg_temp.tok('{"sub": "b"}') AS t_own \gset
SELECT ok(pg_temp.verifies(:'t_own'), 'a token of tokex''s own, cached');
SET LOCAL tokex.issuer = 'https://elsewhere.test';
SELECT ok(NOT pg_temp.verifies(:'t_own'), '... refused once tokex.issuer names another issuer');
SET LOCAL tokex.issuer = 'https://tokex.test';

-- bounded
SET tokex.verified_token_cache = 5;
SELECT count(*) FILTER (WHERE pg_temp.verifies(pg_temp.tok(jsonb_build_object('sub', 'n' || g)))) FROM generate_series(1, 40) g;
SELECT ok((SELECT entries FROM tokex._verified_token_cache()) <= 5, 'at most tokex.verified_token_cache entries');

SELECT * FROM finish();
ROLLBACK;
