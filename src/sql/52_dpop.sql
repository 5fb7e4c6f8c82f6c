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
