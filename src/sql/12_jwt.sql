------------------------------------------------------------------------
-- JWT primitives: sign, verify, decode (src/jwt.c)
------------------------------------------------------------------------

-- Sign claims as they are, with no audit row: for the extension owner's
-- tests of tokens tokex never issued (src/keys.c); granted to no one.
CREATE FUNCTION tokex._sign(claims jsonb, typ text) RETURNS text
  LANGUAGE C STRICT VOLATILE AS 'MODULE_PATHNAME', 'tokex_sign_internal';

CREATE FUNCTION tokex.jwt_sign(claims jsonb, kid text DEFAULT NULL) RETURNS text
  LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp
  AS 'MODULE_PATHNAME', 'tokex_jwt_sign';

CREATE FUNCTION tokex.jwt_verify(token text, audience text DEFAULT NULL) RETURNS jsonb
  LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp
  AS 'MODULE_PATHNAME', 'tokex_jwt_verify';

CREATE FUNCTION tokex.jwt_decode(token text) RETURNS jsonb
  LANGUAGE C IMMUTABLE STRICT AS 'MODULE_PATHNAME', 'tokex_jwt_decode';

-- This backend's verified-token cache (tokex.verified_token_cache): entries
-- held, and hits and misses since the backend started.  Owner only.
CREATE FUNCTION tokex._verified_token_cache(OUT entries bigint, OUT hits bigint, OUT misses bigint)
  LANGUAGE C VOLATILE AS 'MODULE_PATHNAME', 'tokex_verified_token_cache';
