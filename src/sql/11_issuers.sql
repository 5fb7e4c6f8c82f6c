------------------------------------------------------------------------
-- Trusted issuers: IdPs and agent platforms whose tokens tokex accepts
------------------------------------------------------------------------

-- Trusted external issuers (IdPs, agent platforms) and their JWKS.  jwks may
-- hold shared secrets (oct keys for HS*), so it is owner-only as well.
CREATE TABLE tokex.trusted_issuer (
  issuer     text PRIMARY KEY CHECK (issuer <> '' AND pg_catalog.length(issuer) <= 1024),
  jwks       jsonb NOT NULL,
  audience   text,
  created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
  updated_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);

SELECT pg_catalog.pg_extension_config_dump('tokex.trusted_issuer', '');

REVOKE ALL ON tokex.trusted_issuer FROM PUBLIC;

GRANT SELECT (issuer, audience, created_at, updated_at) ON tokex.trusted_issuer TO tokex_admin;

CREATE TRIGGER issuer_invalidate AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tokex.trusted_issuer
  FOR EACH STATEMENT EXECUTE FUNCTION tokex._keystore_invalidate();

CREATE FUNCTION tokex._jwks_check(jwks jsonb) RETURNS integer
  LANGUAGE C STRICT IMMUTABLE AS 'MODULE_PATHNAME', 'tokex_jwks_check';

-- Register (or replace) an external issuer and its JWKS.
CREATE FUNCTION tokex.trust_issuer(issuer text, jwks jsonb, audience text DEFAULT NULL) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
BEGIN
  IF trust_issuer.issuer IS NULL OR trust_issuer.issuer OPERATOR(pg_catalog.=) '' OR trust_issuer.jwks IS NULL THEN
    RAISE EXCEPTION 'issuer and jwks are required' USING ERRCODE = 'null_value_not_allowed';
  END IF;
  IF trust_issuer.issuer OPERATOR(pg_catalog.=) tokex._setting('issuer') THEN
    RAISE EXCEPTION 'cannot trust "%" as an external issuer', trust_issuer.issuer
      USING ERRCODE = 'invalid_parameter_value',
            DETAIL = 'It is tokex''s own issuer (tokex.issuer); its keys are tokex.key.';
  END IF;
  PERFORM tokex._jwks_check(trust_issuer.jwks);
  INSERT INTO tokex.trusted_issuer AS i (issuer, jwks, audience)
  VALUES (trust_issuer.issuer, trust_issuer.jwks, trust_issuer.audience)
  ON CONFLICT ON CONSTRAINT trusted_issuer_pkey DO UPDATE
    SET jwks = EXCLUDED.jwks, audience = EXCLUDED.audience, updated_at = pg_catalog.now();
END
$$;

------------------------------------------------------------------------
-- JWT primitives
------------------------------------------------------------------------
