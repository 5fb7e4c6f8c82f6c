-- jwt_verify / jwt_decode failures, one per malformed input: every failure is
-- SQLSTATE 28000 "invalid token" (jwt_decode: 22023 "malformed token") with
-- the reason in DETAIL.  No token, kid or timestamp is printed: tokens are
-- built at run time by the helpers below.
\set VERBOSITY default
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pgcrypto;
CREATE EXTENSION tokex;
RESET client_min_messages;
SET tokex.issuer = 'https://tokex.test';

CREATE FUNCTION pg_temp.b64url(b bytea) RETURNS text LANGUAGE sql IMMUTABLE AS $$
  SELECT translate(encode(b, 'base64'), E'+/=\n', '-_')
$$;
-- base64url of a text as is (so invalid or odd JSON can be encoded)
CREATE FUNCTION pg_temp.b64t(t text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
  SELECT pg_temp.b64url(convert_to(t, 'UTF8'))
$$;
CREATE FUNCTION pg_temp.epoch(offset_s int DEFAULT 0) RETURNS bigint LANGUAGE sql AS $$
  SELECT floor(extract(epoch FROM clock_timestamp()))::bigint + offset_s
$$;
-- header.payload.HMAC-SHA256(secret)
CREATE FUNCTION pg_temp.hs256(header text, payload text, secret text) RETURNS text
LANGUAGE sql AS $$
  SELECT si || '.' || pg_temp.b64url(hmac(convert_to(si, 'UTF8'), convert_to(secret, 'UTF8'), 'sha256'))
    FROM (SELECT pg_temp.b64t(header) || '.' || pg_temp.b64t(payload) AS si) s
$$;
-- unsigned token: header.payload.signature-segment as given
CREATE FUNCTION pg_temp.raw(header text, payload text, sig text DEFAULT 'c2ln') RETURNS text
LANGUAGE sql AS $$
  SELECT pg_temp.b64t(header) || '.' || pg_temp.b64t(payload) || '.' || sig
$$;
-- claims of an issuer, valid for 5 minutes
CREATE FUNCTION pg_temp.claims(iss text) RETURNS text LANGUAGE sql AS $$
  SELECT jsonb_build_object('iss', iss, 'sub', 'bob', 'exp', pg_temp.epoch(300))::text
$$;

SELECT tokex.create_key() IS NOT NULL AS key_created;
SELECT tokex.trust_issuer('https://idp.test',
  jsonb_build_object('keys', jsonb_build_array(jsonb_build_object('kty', 'oct', 'alg', 'HS256', 'kid', 'h1',
    'k', pg_temp.b64t('a-shared-secret-of-at-least-32-bytes')))));
-- sanity: a good token of each kind verifies
SELECT tokex.jwt_verify(tokex.jwt_sign(jsonb_build_object('sub', 'alice', 'exp', pg_temp.epoch(300))))->>'sub' AS own_ok;
SELECT tokex.jwt_verify(pg_temp.hs256('{"alg":"HS256","kid":"h1"}', pg_temp.claims('https://idp.test'),
                                      'a-shared-secret-of-at-least-32-bytes'))->>'sub' AS idp_ok;

-- 1. NULL
SELECT tokex.jwt_verify(NULL);
-- 2. empty string
SELECT tokex.jwt_verify('');
-- 3. two segments
SELECT tokex.jwt_verify('a.b');
-- 4. four segments
SELECT tokex.jwt_verify(pg_temp.raw('{"alg":"ES256"}', '{}') || '.x');
-- 5. empty header segment
SELECT tokex.jwt_verify('.e30.c2ln');
-- 6. padded base64url ('=' is not base64url)
SELECT tokex.jwt_verify(translate(encode(convert_to('{"alg":"HS256","kid":"h1"}', 'UTF8'), 'base64'), '+/', '-_')
                        || '.e30.c2ln');
-- 7. standard base64 alphabet ('+' and '/') in the payload
SELECT tokex.jwt_verify(pg_temp.b64t('{"alg":"HS256"}') || '.' || '+/+/' || '.c2ln');
-- 8. header is not JSON
SELECT tokex.jwt_verify(pg_temp.raw('alg: HS256', '{}'));
-- 9. header is a JSON array
SELECT tokex.jwt_verify(pg_temp.raw('["HS256"]', '{}'));
-- 10. header has no alg
SELECT tokex.jwt_verify(pg_temp.raw('{"typ":"JWT"}', '{}'));
-- 11. alg none, empty signature
SELECT tokex.jwt_verify(pg_temp.raw('{"alg":"none"}', pg_temp.claims('https://tokex.test'), ''));
-- 12. alg "None" is just unsupported
SELECT tokex.jwt_verify(pg_temp.raw('{"alg":"None"}', pg_temp.claims('https://tokex.test')));
-- 13. unsupported alg
SELECT tokex.jwt_verify(pg_temp.raw('{"alg":"ES256K"}', pg_temp.claims('https://tokex.test')));
-- 14. kid is not a string
SELECT tokex.jwt_verify(pg_temp.raw('{"alg":"HS256","kid":7}', pg_temp.claims('https://idp.test')));
-- 15. crit header with an extension
SELECT tokex.jwt_verify(pg_temp.hs256('{"alg":"HS256","kid":"h1","crit":["b64"],"b64":false}',
                                      pg_temp.claims('https://idp.test'), 'a-shared-secret-of-at-least-32-bytes'));
-- 16. crit header that is not an array
SELECT tokex.jwt_verify(pg_temp.raw('{"alg":"HS256","crit":"exp"}', pg_temp.claims('https://idp.test')));
-- 17. payload is a JSON array
SELECT tokex.jwt_verify(pg_temp.raw('{"alg":"HS256"}', '["iss","https://idp.test"]'));
-- 18. payload is not JSON
SELECT tokex.jwt_verify(pg_temp.raw('{"alg":"HS256"}', 'iss=https://idp.test'));
-- 19. payload with a duplicate claim
SELECT tokex.jwt_verify(pg_temp.raw('{"alg":"HS256"}', '{"iss":"https://idp.test","iss":"https://tokex.test"}'));
-- 20. deeply nested payload
SELECT tokex.jwt_verify(pg_temp.raw('{"alg":"HS256"}', repeat('{"a":', 40) || '1' || repeat('}', 40)));
-- 21. oversized token
SELECT tokex.jwt_verify(pg_temp.raw('{"alg":"HS256"}', '{}') || repeat('A', 70000));
-- 22. oversized signature
SELECT tokex.jwt_verify(pg_temp.raw('{"alg":"HS256"}', pg_temp.claims('https://idp.test'), repeat('A', 2000)));
-- 23. missing iss
SELECT tokex.jwt_verify(pg_temp.hs256('{"alg":"HS256","kid":"h1"}', '{"sub":"bob"}',
                                      'a-shared-secret-of-at-least-32-bytes'));
-- 24. untrusted issuer
SELECT tokex.jwt_verify(pg_temp.hs256('{"alg":"HS256","kid":"h1"}', pg_temp.claims('https://stranger.test'),
                                      'a-shared-secret-of-at-least-32-bytes'));
-- 25. trusted issuer, unknown kid
SELECT tokex.jwt_verify(pg_temp.hs256('{"alg":"HS256","kid":"h2"}', pg_temp.claims('https://idp.test'),
                                      'a-shared-secret-of-at-least-32-bytes'));
-- 26. wrong signature (other secret)
SELECT tokex.jwt_verify(pg_temp.hs256('{"alg":"HS256","kid":"h1"}', pg_temp.claims('https://idp.test'),
                                      'not-the-secret-not-the-secret-not'));
-- 27. HS256 signature of the wrong length
SELECT tokex.jwt_verify(pg_temp.raw('{"alg":"HS256","kid":"h1"}', pg_temp.claims('https://idp.test'), 'c2ln'));
-- 28. HS384 header for the HS256 key
SELECT tokex.jwt_verify(pg_temp.hs256('{"alg":"HS384","kid":"h1"}', pg_temp.claims('https://idp.test'),
                                      'a-shared-secret-of-at-least-32-bytes'));
-- 29. expired HS256 token (an hour ago)
SELECT tokex.jwt_verify(pg_temp.hs256('{"alg":"HS256","kid":"h1"}',
         jsonb_build_object('iss', 'https://idp.test', 'sub', 'bob', 'exp', pg_temp.epoch(-3600))::text,
         'a-shared-secret-of-at-least-32-bytes'));
-- 30. not yet valid (nbf in an hour)
SELECT tokex.jwt_verify(pg_temp.hs256('{"alg":"HS256","kid":"h1"}',
         jsonb_build_object('iss', 'https://idp.test', 'exp', pg_temp.epoch(7200), 'nbf', pg_temp.epoch(3600))::text,
         'a-shared-secret-of-at-least-32-bytes'));
-- 31. issued in the future
SELECT tokex.jwt_verify(pg_temp.hs256('{"alg":"HS256","kid":"h1"}',
         jsonb_build_object('iss', 'https://idp.test', 'exp', pg_temp.epoch(7200), 'iat', pg_temp.epoch(3600))::text,
         'a-shared-secret-of-at-least-32-bytes'));
-- 32. no exp
SELECT tokex.jwt_verify(pg_temp.hs256('{"alg":"HS256","kid":"h1"}', '{"iss":"https://idp.test","sub":"bob"}',
                                      'a-shared-secret-of-at-least-32-bytes'));
-- 33. exp is a string
SELECT tokex.jwt_verify(pg_temp.hs256('{"alg":"HS256","kid":"h1"}', '{"iss":"https://idp.test","exp":"9999999999"}',
                                      'a-shared-secret-of-at-least-32-bytes'));
-- 34. audience mismatch
SELECT tokex.jwt_verify(tokex.jwt_sign(jsonb_build_object('aud', 'mail', 'exp', pg_temp.epoch(300))), 'calendar');
-- 35. own key, HS256 header keyed with the public JWK (algorithm confusion)
SELECT tokex.jwt_verify(pg_temp.hs256(jsonb_build_object('alg', 'HS256', 'kid', tokex.jwks()->'keys'->0->>'kid')::text,
         pg_temp.claims('https://tokex.test'), (tokex.jwks()->'keys'->0)::text));
-- 36. own token with a tampered payload
SELECT tokex.jwt_verify(split_part(t, '.', 1) || '.' || pg_temp.b64t(pg_temp.claims('https://tokex.test')) || '.'
                        || split_part(t, '.', 3))
  FROM tokex.jwt_sign(jsonb_build_object('sub', 'alice', 'exp', pg_temp.epoch(300))) t;
-- 37. a trusted issuer's key cannot sign as tokex
SELECT tokex.jwt_verify(pg_temp.hs256('{"alg":"HS256","kid":"h1"}', pg_temp.claims('https://tokex.test'),
                                      'a-shared-secret-of-at-least-32-bytes'));

-- jwt_decode: unverified, but still strict about the format
SELECT tokex.jwt_decode(NULL) IS NULL AS decode_null_is_null;
SELECT tokex.jwt_decode('');
SELECT tokex.jwt_decode('a.b');
SELECT tokex.jwt_decode('x.e30.');
SELECT tokex.jwt_decode(pg_temp.raw('{"alg":"HS256"}', '{"a":1,"a":2}'));
SELECT tokex.jwt_decode(pg_temp.raw(repeat('[', 40) || repeat(']', 40), '{}'));
SELECT tokex.jwt_decode(repeat('A', 70000) || '.e30.');
SELECT tokex.jwt_decode(pg_temp.raw('{"alg":"none"}', '{"sub":"x"}', '')) AS decoded_alg_none;

DROP EXTENSION tokex CASCADE;
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS pgcrypto;
