-- JWT primitives: jwt_sign / jwt_verify / jwt_decode against tokex's own
-- keys, registered-claim checks with clock skew, tampering and algorithm
-- confusion, and trusted external issuers (HS256 tokens built here with
-- pgcrypto) with their audience requirement and JWKS validation.
\ir preamble.psql
SELECT plan(122);

CREATE FUNCTION pg_temp.b64url(b bytea) RETURNS text LANGUAGE sql IMMUTABLE AS $$
  SELECT translate(encode(b, 'base64'), E'+/=\n', '-_')
$$;
CREATE FUNCTION pg_temp.b64j(j jsonb) RETURNS text LANGUAGE sql IMMUTABLE AS $$
  SELECT pg_temp.b64url(convert_to(j::text, 'UTF8'))
$$;
-- an HS* token over header and payload, keyed with secret
CREATE FUNCTION pg_temp.hs(header jsonb, payload jsonb, secret text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
  SELECT si || '.' || pg_temp.b64url(hmac(convert_to(si, 'UTF8'), convert_to(secret, 'UTF8'),
           CASE header->>'alg' WHEN 'HS384' THEN 'sha384' WHEN 'HS512' THEN 'sha512' ELSE 'sha256' END))
    FROM (SELECT pg_temp.b64j(header) || '.' || pg_temp.b64j(payload) AS si) s
$$;
CREATE FUNCTION pg_temp.now() RETURNS bigint LANGUAGE sql AS $$
  SELECT floor(extract(epoch FROM clock_timestamp()))::bigint
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
CREATE FUNCTION pg_temp.verr(tok text, aud text DEFAULT NULL) RETURNS text LANGUAGE sql AS $$
  SELECT pg_temp.err(format('SELECT tokex.jwt_verify(%L, %L)', tok, aud))
$$;
-- own token with exp = now + 300 unless claims say otherwise
CREATE FUNCTION pg_temp.own(claims jsonb) RETURNS text LANGUAGE sql AS $$
  SELECT tokex.jwt_sign(jsonb_build_object('sub', 'alice', 'exp', pg_temp.now() + 300) || claims)
$$;
-- HS256 token of the external issuer https://idp.test
CREATE FUNCTION pg_temp.idp(claims jsonb, secret text, header jsonb DEFAULT '{"alg":"HS256","kid":"h1","typ":"JWT"}')
RETURNS text LANGUAGE sql AS $$
  SELECT pg_temp.hs(header, jsonb_build_object('iss', 'https://idp.test', 'sub', 'bob',
                                               'exp', pg_temp.now() + 300) || claims, secret)
$$;
CREATE FUNCTION pg_temp.jwks(secret text, kid text DEFAULT 'h1', alg text DEFAULT 'HS256') RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
  SELECT jsonb_build_object('keys', jsonb_build_array(jsonb_strip_nulls(jsonb_build_object(
           'kty', 'oct', 'alg', alg, 'kid', kid, 'k', pg_temp.b64url(convert_to(secret, 'UTF8'))))))
$$;
CREATE FUNCTION pg_temp.bad_jwks(jwks jsonb) RETURNS text LANGUAGE sql AS $$
  SELECT pg_temp.err(format('SELECT tokex.trust_issuer(%L, %L)', 'https://bad.test', jwks))
$$;

SELECT tokex.create_key() AS kid \gset
SELECT pg_temp.now() AS now \gset
\set s1 'first-shared-secret-of-32-bytes!'
\set s2 'second-shared-secret-of-32-bytes'

------------------------------------------------------------------------
-- Round trip with tokex's own key
------------------------------------------------------------------------
SELECT jsonb_build_object('sub', 'alice', 'exp', :now + 300, 'scope', 'a b',
                          'nested', '{"x":[1,2,{"y":null}],"u":"\u00e9\u2603"}'::jsonb) AS c1 \gset
SELECT tokex.jwt_sign(:'c1') AS t1 \gset
SELECT tokex.jwt_verify(:'t1') AS v1 \gset
SELECT is(:'v1'::jsonb->>'sub', 'alice', 'sign/verify round trip');
SELECT is(:'v1'::jsonb->>'iss', 'https://tokex.test', 'jwt_sign fills in iss from tokex.issuer');
SELECT ok(abs((:'v1'::jsonb->>'iat')::bigint - :now) <= 5, 'jwt_sign fills in iat = now');
SELECT is(:'v1'::jsonb - 'iss' - 'iat' - 'jti', :'c1'::jsonb, 'every claim survives the round trip (nested, unicode)');
SELECT is((SELECT count(*) FROM tokex.audit WHERE operation = 'jwt_sign' AND jti = (:'v1'::jsonb->>'jti')::uuid
              AND subject = 'alice' AND decision = 'granted'), 1::bigint,
          'jwt_sign adds a jti and commits an audit row for it');
SELECT is(tokex.jwt_decode(:'t1'),
          jsonb_build_object('header', jsonb_build_object('alg', 'ES256', 'kid', :'kid', 'typ', 'JWT'),
                             'payload', :'v1'::jsonb),
          'jwt_decode returns {header, payload}');
SELECT is(array_length(string_to_array(:'t1', '.'), 1), 3, 'compact JWS has three segments');
SELECT ok(strpos(:'t1', '=') = 0, 'no base64 padding in the token');
SELECT is((tokex.jwt_verify(pg_temp.own(jsonb_build_object('iat', :now - 10))))->>'iat', (:now - 10)::text,
          'an explicit iat is kept');
SELECT is((tokex.jwt_verify(pg_temp.own('{"iss":"https://tokex.test"}')))->>'iss', 'https://tokex.test',
          'an explicit iss equal to tokex.issuer is accepted');

-- claims jwt_sign refuses
SELECT is(pg_temp.err($$SELECT tokex.jwt_sign('{"iss":"https://evil.test","sub":"x"}')$$),
          '22023 invalid claims: tokex signs only as its own issuer (tokex.issuer).',
          'jwt_sign refuses a foreign iss');
SELECT is(pg_temp.err($$SELECT tokex.jwt_sign('{"iss":42}')$$),
          '22023 invalid claims: tokex signs only as its own issuer (tokex.issuer).',
          'jwt_sign refuses a non-string iss');
SELECT is(pg_temp.err('SELECT tokex.jwt_sign(NULL)'), '22004 claims must not be NULL', 'NULL claims');
SELECT is(pg_temp.err($$SELECT tokex.jwt_sign('[]')$$), '22023 invalid claims: The claims must be a JSON object.',
          'array claims');
SELECT matches(pg_temp.err($$SELECT tokex.jwt_sign('"x"')$$), '^22023 invalid claims: ', 'string claims');
SELECT matches(pg_temp.err($$SELECT tokex.jwt_sign('null')$$), '^22023 invalid claims: ', 'JSON null claims');
SELECT is(pg_temp.err($$SELECT tokex.jwt_sign('{}', 'no-such-kid')$$),
          '55000 no signing key: no active or next signing key with this kid', 'unknown kid');
SET LOCAL tokex.issuer = '';
SELECT is(pg_temp.err($$SELECT tokex.jwt_sign('{"sub":"x"}')$$), '55000 tokex.issuer is not set',
          'jwt_sign needs tokex.issuer');
SELECT is(pg_temp.verr(:'t1'), '28000 invalid token: issuer is not trusted',
          'with tokex.issuer unset, tokex''s old tokens are foreign');
SET LOCAL tokex.issuer = 'https://tokex.test';
SELECT is(pg_temp.verr(:'t1'), 'ok', 'and valid again once it is set back');

------------------------------------------------------------------------
-- Audience
------------------------------------------------------------------------
SELECT pg_temp.own('{"aud":"api"}') AS t_aud \gset
SELECT pg_temp.own('{"aud":["x","api"]}') AS t_auds \gset
SELECT is(pg_temp.verr(:'t_aud', 'api'), 'ok', 'string aud matches');
SELECT is(pg_temp.verr(:'t_auds', 'api'), 'ok', 'array aud matches');
SELECT is(pg_temp.verr(:'t_auds', 'x'), 'ok', 'array aud matches its first member too');
SELECT is(pg_temp.verr(:'t_aud', 'other'), '28000 invalid token: audience not accepted', 'string aud mismatch');
SELECT is(pg_temp.verr(:'t_auds', 'other'), '28000 invalid token: audience not accepted', 'array aud mismatch');
SELECT is(pg_temp.verr(:'t_aud', 'API'), '28000 invalid token: audience not accepted', 'aud is case-sensitive');
SELECT is(pg_temp.verr(:'t_aud', 'ap'), '28000 invalid token: audience not accepted', 'no prefix match');
SELECT is(pg_temp.verr(:'t1', 'api'), '28000 invalid token: token has no "aud" claim',
          'audience required, token has none');
SELECT is(pg_temp.verr(:'t_aud'), 'ok', 'no audience asked: aud not checked');
SELECT is(pg_temp.verr(pg_temp.own('{"aud":42}')),
          '28000 invalid token: claim "aud" is not a string or array of strings', 'numeric aud');
SELECT is(pg_temp.verr(pg_temp.own('{"aud":[]}')),
          '28000 invalid token: claim "aud" is not a string or array of strings', 'empty aud array');
SELECT is(pg_temp.verr(pg_temp.own('{"aud":["api",1]}'), 'api'),
          '28000 invalid token: claim "aud" is not a string or array of strings', 'aud array with a number');

------------------------------------------------------------------------
-- Time claims and clock skew (60 s)
------------------------------------------------------------------------
SELECT is(pg_temp.verr(pg_temp.own(jsonb_build_object('exp', :now - 3600))),
          '28000 invalid token: token expired', 'expired an hour ago');
SELECT is(pg_temp.verr(pg_temp.own(jsonb_build_object('exp', :now - 20))), 'ok',
          'expired 20 s ago: within the clock skew');
SELECT is(pg_temp.verr(pg_temp.own(jsonb_build_object('exp', :now - 120))),
          '28000 invalid token: token expired', 'expired 120 s ago: beyond the clock skew');
SET LOCAL tokex.clock_skew = 0;
SELECT is(pg_temp.verr(pg_temp.own(jsonb_build_object('exp', :now - 20))),
          '28000 invalid token: token expired', 'tokex.clock_skew = 0: expired 20 s ago is expired');
SELECT is(pg_temp.verr(pg_temp.own(jsonb_build_object('nbf', :now + 20))),
          '28000 invalid token: token not yet valid', 'tokex.clock_skew = 0: nbf 20 s ahead is not yet valid');
SET LOCAL tokex.clock_skew = 60;
SELECT is(pg_temp.verr(pg_temp.own(jsonb_build_object('nbf', :now + 3600))),
          '28000 invalid token: token not yet valid', 'nbf an hour ahead');
SELECT is(pg_temp.verr(pg_temp.own(jsonb_build_object('nbf', :now + 20))), 'ok', 'nbf 20 s ahead: within skew');
SELECT is(pg_temp.verr(pg_temp.own(jsonb_build_object('nbf', :now - 20))), 'ok', 'nbf in the past');
SELECT is(pg_temp.verr(pg_temp.own(jsonb_build_object('iat', :now + 3600))),
          '28000 invalid token: token issued in the future', 'iat an hour ahead');
SELECT is(pg_temp.verr(tokex.jwt_sign('{"sub":"alice"}')), '28000 invalid token: token has no "exp" claim',
          'a token without exp is refused');
SELECT is(pg_temp.verr(pg_temp.own('{"exp":"tomorrow"}')),
          '28000 invalid token: claim "exp" is not a NumericDate', 'string exp');
SELECT is(pg_temp.verr(pg_temp.own('{"exp":null}')),
          '28000 invalid token: claim "exp" is not a NumericDate', 'null exp');
SELECT is(pg_temp.verr(pg_temp.own('{"nbf":"now"}')),
          '28000 invalid token: claim "nbf" is not a NumericDate', 'string nbf');
SELECT is(pg_temp.verr(pg_temp.own('{"sub":42}')), '28000 invalid token: claim "sub" is not a string',
          'numeric sub');

------------------------------------------------------------------------
-- Tampering and algorithm confusion
------------------------------------------------------------------------
SELECT split_part(:'t1', '.', 1) AS h1, split_part(:'t1', '.', 2) AS p1, split_part(:'t1', '.', 3) AS s1sig \gset
SELECT is(pg_temp.verr(:'h1' || '.' || :'p1' || '.' ||
            CASE WHEN left(:'s1sig', 1) = 'A' THEN 'B' ELSE 'A' END || substr(:'s1sig', 2)),
          '28000 invalid token: signature does not verify', 'tampered signature');
SELECT is(pg_temp.verr(:'h1' || '.' || pg_temp.b64j(:'v1'::jsonb || '{"sub":"mallory"}') || '.' || :'s1sig'),
          '28000 invalid token: signature does not verify', 'tampered payload');
SELECT is(pg_temp.verr(:'h1' || '.' || pg_temp.b64j(:'v1'::jsonb || jsonb_build_object('exp', :now + 86400))
                       || '.' || :'s1sig'),
          '28000 invalid token: signature does not verify', 'extended exp');
SELECT is(pg_temp.verr(:'h1' || '.' || :'p1' || '.' || left(:'s1sig', 84)),
          '28000 invalid token: signature has the wrong length', 'truncated signature');
SELECT is(pg_temp.verr(:'h1' || '.' || :'p1' || '.'),
          '28000 invalid token: signature has the wrong length', 'empty signature');
SELECT is(pg_temp.verr(pg_temp.b64j(jsonb_build_object('alg', 'ES384', 'kid', :'kid', 'typ', 'JWT'))
                       || '.' || :'p1' || '.' || :'s1sig'),
          '28000 invalid token: alg ES384 does not match the key (ES256)', 'header alg swapped to ES384');
SELECT is(pg_temp.verr(pg_temp.hs(jsonb_build_object('alg', 'HS256', 'kid', :'kid', 'typ', 'JWT'), :'v1',
                                  (tokex.jwks()->'keys'->0)::text)),
          '28000 invalid token: alg HS256 does not match the key (ES256)',
          'HS256 keyed with tokex''s public key (key confusion) is refused');
SELECT is(pg_temp.verr(pg_temp.b64j('{"alg":"none"}') || '.' || :'p1' || '.'),
          '28000 invalid token: alg none is not accepted', 'alg none');
SELECT is(pg_temp.verr(pg_temp.b64j(jsonb_build_object('alg', 'ES256', 'kid', 'unknown-kid')) || '.' || :'p1'
                       || '.' || :'s1sig'),
          '28000 invalid token: no key with this kid', 'unknown kid');
SELECT is(pg_temp.verr(pg_temp.b64j(jsonb_build_object('alg', 'ES256', 'kid', :'kid', 'crit', '["exp"]'::jsonb, 'exp', 1))
                       || '.' || :'p1' || '.' || :'s1sig'),
          '28000 invalid token: crit names an extension this server does not understand', 'crit header');
SELECT is(pg_temp.verr(:'h1' || '.' || :'p1' || '.' || :'s1sig' || '.'),
          '28000 invalid token: token must have exactly three segments', 'four segments');
SELECT is(pg_temp.verr(:'t1' || ' '), '28000 invalid token: signature: invalid base64url', 'trailing space');

------------------------------------------------------------------------
-- jwt_decode
------------------------------------------------------------------------
SELECT is(tokex.jwt_decode(pg_temp.own(jsonb_build_object('exp', :now - 3600)))->'payload'->>'exp',
          (:now - 3600)::text, 'jwt_decode does not verify: it decodes an expired token');
SELECT is(tokex.jwt_decode(pg_temp.hs('{"alg":"HS256"}', '{"iss":"nobody"}', 'x'))->'payload',
          '{"iss":"nobody"}'::jsonb, 'and a token of an unknown issuer');
SELECT is(tokex.jwt_decode(NULL), NULL, 'jwt_decode(NULL) is NULL');
SELECT throws_ok($$SELECT tokex.jwt_decode('garbage')$$, '22023', 'malformed token', 'jwt_decode of garbage');
SELECT is(pg_temp.err($$SELECT tokex.jwt_decode('garbage')$$),
          '22023 malformed token: A compact JWS has exactly three segments.', 'garbage: detail');
SELECT is(pg_temp.err($$SELECT tokex.jwt_decode('a.b.c.d')$$),
          '22023 malformed token: A compact JWS has exactly three segments.', 'four segments');
SELECT is(pg_temp.err($$SELECT tokex.jwt_decode('!!!!.e30.')$$),
          '22023 malformed token: The header is not valid base64url.', 'header not base64url');
SELECT matches(pg_temp.err(format('SELECT tokex.jwt_decode(%L)', pg_temp.b64url('not json') || '.e30.')),
          '^22023 malformed token: The header is not JSON \(', 'header not JSON');
SELECT is(pg_temp.err(format('SELECT tokex.jwt_decode(%L)', :'h1' || '.' || pg_temp.b64url('{"a":1,"a":2}') || '.')),
          '22023 malformed token: The payload is not JSON (duplicate member).',
          'payload with a duplicate member');
SELECT is(pg_temp.err(format('SELECT tokex.jwt_decode(%L)', repeat('a', 70000) || '.e30.')),
          '54000 token too long: Tokens are limited to 65536 bytes.', 'oversized token');

------------------------------------------------------------------------
-- Trusted external issuer with a shared secret (HS256)
------------------------------------------------------------------------
SELECT lives_ok(format('SELECT tokex.trust_issuer(%L, %L)', 'https://idp.test', pg_temp.jwks(:'s1')),
                'trust_issuer with an oct JWKS');
SELECT is((SELECT count(*) FROM tokex.trusted_issuer WHERE issuer = 'https://idp.test' AND audience IS NULL),
          1::bigint, 'the issuer is registered');
SELECT is((tokex.jwt_verify(pg_temp.idp('{}', :'s1')))->>'sub', 'bob', 'an HS256 token of the trusted issuer verifies');
SELECT is(pg_temp.verr(pg_temp.idp('{}', :'s1', '{"alg":"HS256"}')), 'ok', 'also without kid');
SELECT is(pg_temp.verr(pg_temp.idp('{}', :'s2')), '28000 invalid token: signature does not verify',
          'wrong secret');
SELECT is(pg_temp.verr(pg_temp.idp('{}', :'s1', '{"alg":"HS256","kid":"h9"}')),
          '28000 invalid token: no key with this kid', 'unknown kid at the issuer');
SELECT is(pg_temp.verr(pg_temp.idp('{}', :'s1', '{"alg":"HS384","kid":"h1"}')),
          '28000 invalid token: alg HS384 does not match the key (HS256)', 'alg HS384 with an HS256 key');
SELECT is(pg_temp.verr(pg_temp.idp('{}', :'s1', '{"alg":"HS512"}')),
          '28000 invalid token: no key for this alg', 'no key for the header alg');
SELECT is(pg_temp.verr(pg_temp.idp(jsonb_build_object('exp', :now - 3600), :'s1')),
          '28000 invalid token: token expired', 'expired HS256 token');
SELECT is(pg_temp.verr(pg_temp.idp('{"iss":"https://stranger.test"}', :'s1')),
          '28000 invalid token: issuer is not trusted', 'an issuer that is not trusted');
SELECT is(pg_temp.verr(pg_temp.idp('{"iss":"https://idp.test/"}', :'s1')),
          '28000 invalid token: issuer is not trusted', 'issuer match is exact (trailing slash)');
SELECT is(pg_temp.verr(pg_temp.idp('{"iss":"https://tokex.test"}', :'s1')),
          '28000 invalid token: no key with this kid',
          'a trusted issuer''s key cannot sign as tokex');
SELECT is(pg_temp.verr(pg_temp.hs('{"alg":"HS256","kid":"h1"}',
                                  jsonb_build_object('sub', 'bob', 'exp', :now + 300), :'s1')),
          '28000 invalid token: token has no "iss" claim', 'token without iss');
SELECT is(pg_temp.verr(pg_temp.idp('{"iss":7}', :'s1')),
          '28000 invalid token: token has no "iss" claim', 'non-string iss');

-- audience requirement
SELECT lives_ok(format('SELECT tokex.trust_issuer(%L, %L, %L)', 'https://idp.test', pg_temp.jwks(:'s1'), 'tokex-api'),
                'trust_issuer with a required audience');
SELECT is((SELECT audience FROM tokex.trusted_issuer WHERE issuer = 'https://idp.test'), 'tokex-api', 'audience stored');
SELECT is(pg_temp.verr(pg_temp.idp('{}', :'s1')), '28000 invalid token: token has no "aud" claim',
          'issuer audience required: token without aud refused');
SELECT is(pg_temp.verr(pg_temp.idp('{"aud":"elsewhere"}', :'s1')), '28000 invalid token: audience not accepted',
          'issuer audience required: other aud refused');
SELECT is(pg_temp.verr(pg_temp.idp('{"aud":"tokex-api"}', :'s1')), 'ok', 'token with the issuer audience accepted');
SELECT is(pg_temp.verr(pg_temp.idp('{"aud":["x","tokex-api"]}', :'s1'), 'x'), 'ok',
          'caller audience and issuer audience both present');
SELECT is(pg_temp.verr(pg_temp.idp('{"aud":"tokex-api"}', :'s1'), 'x'),
          '28000 invalid token: audience not accepted', 'issuer audience does not replace the caller''s');
SELECT is(pg_temp.verr(pg_temp.idp('{"aud":"x"}', :'s1'), 'x'),
          '28000 invalid token: audience not accepted', 'nor the caller''s the issuer''s');

-- second call replaces keys and audience
SELECT lives_ok(format('SELECT tokex.trust_issuer(%L, %L)', 'https://idp.test', pg_temp.jwks(:'s2', 'h2')),
                'trust_issuer again with new keys');
SELECT is((SELECT count(*) FROM tokex.trusted_issuer WHERE issuer = 'https://idp.test'), 1::bigint, 'still one row');
SELECT is(pg_temp.verr(pg_temp.idp('{}', :'s2', '{"alg":"HS256","kid":"h2"}')), 'ok',
          'the new key verifies; the audience requirement is gone');
SELECT is(pg_temp.verr(pg_temp.idp('{}', :'s1', '{"alg":"HS256","kid":"h1"}')),
          '28000 invalid token: no key with this kid', 'the old key is gone (at once, same session)');
SELECT is(pg_temp.verr(pg_temp.idp('{}', :'s1', '{"alg":"HS256"}')),
          '28000 invalid token: signature does not verify', 'the old secret no longer verifies');

-- what trust_issuer refuses
SELECT is(pg_temp.err(format('SELECT tokex.trust_issuer(%L, %L)', 'https://tokex.test', pg_temp.jwks(:'s1'))),
          '22023 cannot trust "https://tokex.test" as an external issuer: It is tokex''s own issuer (tokex.issuer); its keys are tokex.key.',
          'trusting tokex''s own issuer name is refused');
SELECT is(pg_temp.err(format('SELECT tokex.trust_issuer(NULL, %L)', pg_temp.jwks(:'s1'))),
          '22004 issuer and jwks are required', 'NULL issuer');
SELECT is(pg_temp.err(format('SELECT tokex.trust_issuer(%L, %L)', '', pg_temp.jwks(:'s1'))),
          '22004 issuer and jwks are required', 'empty issuer');
SELECT is(pg_temp.err($$SELECT tokex.trust_issuer('https://x.test', NULL)$$),
          '22004 issuer and jwks are required', 'NULL jwks');
SELECT is(pg_temp.bad_jwks('[]'), '22023 invalid JWKS: The JWKS must be a JSON object.',
          'JWKS not an object');
SELECT is(pg_temp.bad_jwks('{"keys":{}}'), '22023 invalid JWKS: JWKS must be an object with a "keys" array',
          'keys not an array');
SELECT is(pg_temp.bad_jwks('{"keys":[]}'), '22023 invalid JWKS: JWKS has no signature keys', 'empty keys');
SELECT is(pg_temp.bad_jwks('{"keys":[1]}'), '22023 invalid JWKS: JWKS key 0 is not a JWK', 'a key that is a number');
SELECT is(pg_temp.bad_jwks(jsonb_build_object('keys', jsonb_build_array(pg_temp.jwks(:'s1')->'keys'->0 || '{"use":"enc"}'))),
          '22023 invalid JWKS: JWKS has no signature keys', 'only encryption keys');
SELECT is(pg_temp.bad_jwks(pg_temp.jwks('sixteen-byte-key')),
          '22023 invalid JWKS: JWKS key 0: HS256 needs a key of at least 32 bytes', 'oct key too short for HS256');
SELECT is(pg_temp.bad_jwks(pg_temp.jwks(:'s1', 'h1', 'HS512')),
          '22023 invalid JWKS: JWKS key 0: HS512 needs a key of at least 64 bytes', 'oct key too short for HS512');
SELECT is(pg_temp.bad_jwks('{"keys":[{"kty":"oct"}]}'), '22023 invalid JWKS: JWKS key 0: oct JWK needs "k"',
          'oct key without k');
SELECT is(pg_temp.bad_jwks(jsonb_build_object('keys', jsonb_build_array(tokex.jwks()->'keys'->0,
            jsonb_build_object('kty', 'RSA', 'alg', 'RS256', 'e', 'AQAB', 'n',
              'v3nXyT4jWzrN-cVb83grqBT4uKUIaBbSu2wr6zTHzsy-z7Z1ikpUIdDznFtWwyLSkawtHEypM0rL-ALkmcPBpfSTQfs1Ihk9NoyY3rj0AiGCmLgGjJWgB_vVx1lBBb0hKbPjGRvEMqaeeMD8rAqRRUKX4dHyaTVJQOj3g6zod8c')))),
          '22023 invalid JWKS: JWKS key 1: RSA modulus of 1024 bits is shorter than 2048',
          'RSA 1024-bit key refused (the whole JWKS, not just that key)');
SELECT is(pg_temp.bad_jwks(jsonb_build_object('keys', jsonb_build_array(pg_temp.jwks(:'s1')->'keys'->0,
            tokex.jwks()->'keys'->0))),
          '22023 invalid JWKS: JWKS mixes symmetric (oct) and asymmetric keys (key 1)',
          'a JWKS mixing a shared secret and a public key is refused');
SELECT is(pg_temp.bad_jwks(jsonb_build_object('keys', jsonb_build_array(pg_temp.jwks(:'s1')->'keys'->0
            || '{"key_ops":["encrypt"]}'))),
          '22023 invalid JWKS: JWKS has no signature keys', 'only a key whose key_ops lack "verify"');
SELECT is(pg_temp.bad_jwks(jsonb_build_object('keys', jsonb_build_array(pg_temp.jwks(:'s1')->'keys'->0
            || '{"key_ops":"verify"}'))),
          '22023 invalid JWKS: JWKS key 0: JWK "key_ops" must be an array of at most 16 strings', 'key_ops not an array');
-- key_ops is honoured: a verify key verifies, a sign-only key of the same set is not used
SELECT lives_ok(format('SELECT tokex.trust_issuer(%L, %L)', 'https://ops.test', jsonb_build_object('keys',
            jsonb_build_array(pg_temp.jwks(:'s1', 'kv')->'keys'->0 || '{"key_ops":["verify"]}',
                              pg_temp.jwks(:'s1', 'ks')->'keys'->0 || '{"key_ops":["sign"]}'))),
                'trust_issuer with a key_ops ["verify"] key and a key_ops ["sign"] key');
SELECT is(tokex.jwt_verify(pg_temp.hs('{"alg":"HS256","kid":"kv"}', jsonb_build_object('iss', 'https://ops.test',
            'sub', 'carol', 'exp', pg_temp.now() + 300), :'s1'))->>'sub', 'carol',
          'a token naming the key_ops ["verify"] key verifies');
SELECT is(pg_temp.verr(pg_temp.hs('{"alg":"HS256","kid":"ks"}', jsonb_build_object('iss', 'https://ops.test',
            'sub', 'carol', 'exp', pg_temp.now() + 300), :'s1')),
          '28000 invalid token: no key with this kid', 'a token naming the key_ops ["sign"] key is refused');
SELECT is(pg_temp.bad_jwks(jsonb_build_object('keys', jsonb_build_array(jsonb_build_object(
            'kty', 'EC', 'crv', 'P-256', 'x', repeat('A', 43), 'y', repeat('A', 43))))),
          '22023 invalid JWKS: JWKS key 0: EC JWK is not a valid P-256 point', 'EC point not on the curve');
SELECT is(pg_temp.bad_jwks('{"keys":[{"kty":"XYZ"}]}'), '22023 invalid JWKS: JWKS key 0: unsupported JWK kty',
          'unknown kty');
SELECT is(pg_temp.bad_jwks(pg_temp.jwks(:'s1', 'h1', 'none')),
          '22023 invalid JWKS: JWKS key 0: JWK "alg" is not a supported algorithm', 'JWK alg none');
SELECT is((SELECT count(*) FROM tokex.trusted_issuer WHERE issuer = 'https://bad.test'), 0::bigint,
          'no refused JWKS was stored');
SELECT is(pg_temp.verr(pg_temp.idp('{}', :'s2', '{"alg":"HS256","kid":"h2"}')), 'ok',
          'the trusted issuer is unaffected by the refused calls');

-- A payload handed back as jsonb (built from the parsed claims, not
-- written out and parsed again) is the jsonb of its text: objects, nested
-- arrays, reals, negative and large integers, booleans, null, escapes.
SELECT tokex.jwt_sign('{"sub": "j", "exp": 9999999999, "r": 2.5, "one": 1.0, "tenth": 0.1, "neg": -0.5,
                        "big": 15000000000, "min": -9007199254740993, "t": true, "f": false, "n": null,
                        "s": "é\n\"q\u2028\\", "arr": [1, [2, {"k": "v"}], []], "o": {}, "z": {"b": 1, "a": [null]}}'::jsonb)
       AS odd \gset
SELECT is(tokex._verify_assertion(:'odd', tokex.jwks()), tokex.jwt_decode(:'odd')->'payload',
          'a verified payload as jsonb equals the jsonb of its text');
SELECT is(tokex._verify_assertion(:'odd', tokex.jwks())::text, (tokex.jwt_decode(:'odd')->'payload')::text,
          '... written out the same, number by number');
SELECT tokex.jwt_sign('{"sub": "j", "exp": 9999999999.123456, "w": 0.30000000000000004, "e": 1e15}'::jsonb) AS reals \gset
SELECT tokex._verify_assertion(:'reals', tokex.jwks())::text AS reals1 \gset
SET LOCAL extra_float_digits = -15;
SELECT is(tokex._verify_assertion(:'reals', tokex.jwks())::text, :'reals1',
          '... whatever the session''s extra_float_digits (an assertion''s exp decides how long its jti is kept)');
RESET extra_float_digits;

SELECT * FROM finish();
ROLLBACK;
