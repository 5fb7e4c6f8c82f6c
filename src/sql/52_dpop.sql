------------------------------------------------------------------------
-- DPoP (RFC 9449; src/dpop.c): sender-constrained tokens
------------------------------------------------------------------------

-- The jti of every DPoP proof accepted, for as long as the proof could be
-- accepted again (tokex.dpop_max_age): a proof is never accepted twice.
CREATE TABLE tokex.dpop_jti (
  jkt        text NOT NULL,
  jti        text NOT NULL,
  expires_at timestamptz NOT NULL,
  PRIMARY KEY (jkt, jti)
);

CREATE INDEX dpop_jti_expiry ON tokex.dpop_jti (expires_at);

-- The key of tokex's DPoP nonces (tokex.dpop_nonce; src/dpop.c), made at
-- install.  Owner only.  Not dumped: a restored database makes its own (a
-- nonce lives minutes; clients take the new one from use_dpop_nonce).
CREATE TABLE tokex.dpop_secret (
  id     integer PRIMARY KEY CHECK (id = 1),
  secret bytea NOT NULL CHECK (pg_catalog.length(secret) >= 32)
);

CREATE FUNCTION tokex._random_bytes(n integer) RETURNS bytea
  LANGUAGE C VOLATILE STRICT AS 'MODULE_PATHNAME', 'tokex_random_bytes';

INSERT INTO tokex.dpop_secret VALUES (1, tokex._random_bytes(32));

