------------------------------------------------------------------------
-- Keys: tokex's own signing keys, generated in the database (src/keys.c)
------------------------------------------------------------------------

-- Signing keys, generated in the database.  private_key (PKCS#8 DER) is
-- readable only by the extension owner: other roles get column grants.
CREATE TABLE tokex.key (
  kid          text PRIMARY KEY,
  alg          text NOT NULL CHECK (alg IN ('ES256','ES384','ES512','EdDSA',
                                            'RS256','RS384','RS512','PS256','PS384','PS512')),
  status       text NOT NULL CHECK (status IN ('next','active','retired','revoked')),
  public_jwk   jsonb NOT NULL,
  private_key  bytea NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT pg_catalog.now(),
  activated_at timestamptz,
  retired_at   timestamptz,
  revoked_at   timestamptz
);

-- at most one key signs at a time
CREATE UNIQUE INDEX key_one_active ON tokex.key ((true)) WHERE status = 'active';

SELECT pg_catalog.pg_extension_config_dump('tokex.key', '');

REVOKE ALL ON tokex.key FROM PUBLIC;

GRANT SELECT (kid, alg, status, public_jwk, created_at, activated_at, retired_at, revoked_at)
  ON tokex.key TO tokex_admin;

-- Any committed change to keys or issuers drops every backend's key cache.
CREATE FUNCTION tokex._keystore_invalidate() RETURNS trigger
  LANGUAGE C AS 'MODULE_PATHNAME', 'tokex_keystore_invalidate';

CREATE TRIGGER key_invalidate AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tokex.key
  FOR EACH STATEMENT EXECUTE FUNCTION tokex._keystore_invalidate();

CREATE FUNCTION tokex._generate_key(alg text, OUT kid text, OUT public_jwk jsonb, OUT private_key bytea)
  LANGUAGE C STRICT VOLATILE AS 'MODULE_PATHNAME', 'tokex_generate_key';

-- Generate a key pair inside the database; the first key becomes active,
-- later ones wait as 'next' (published, so relying parties can pre-fetch it).
CREATE FUNCTION tokex.create_key(alg text DEFAULT 'ES256') RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
DECLARE
  k record;
  st text;
BEGIN
  IF alg IS NULL THEN
    RAISE EXCEPTION 'alg must not be NULL' USING ERRCODE = 'null_value_not_allowed';
  END IF;
  LOCK TABLE tokex.key IN SHARE ROW EXCLUSIVE MODE;
  SELECT * INTO k FROM tokex._generate_key(alg);
  st := CASE WHEN EXISTS (SELECT 1 FROM tokex.key WHERE status OPERATOR(pg_catalog.=) 'active')
             THEN 'next' ELSE 'active' END;
  INSERT INTO tokex.key (kid, alg, status, public_jwk, private_key, activated_at)
  VALUES (k.kid, alg, st, k.public_jwk, k.private_key,
          CASE WHEN st OPERATOR(pg_catalog.=) 'active' THEN pg_catalog.now() END);
  RETURN k.kid;
END
$$;

CREATE FUNCTION tokex._key_status(p_kid text) RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
DECLARE st text;
BEGIN
  SELECT status INTO st FROM tokex.key WHERE kid OPERATOR(pg_catalog.=) p_kid FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'key "%" does not exist', p_kid USING ERRCODE = 'no_data_found';
  END IF;
  RETURN st;
END
$$;

-- Make kid the signing key; the previous active key is retired (still published).
CREATE FUNCTION tokex.activate_key(kid text) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
DECLARE st text;
BEGIN
  LOCK TABLE tokex.key IN SHARE ROW EXCLUSIVE MODE;
  st := tokex._key_status(activate_key.kid);
  IF st OPERATOR(pg_catalog.=) 'active' THEN RETURN; END IF;
  IF st NOT IN ('next', 'retired') THEN
    RAISE EXCEPTION 'key "%" is %, it cannot be activated', activate_key.kid, st
      USING ERRCODE = 'object_not_in_prerequisite_state';
  END IF;
  UPDATE tokex.key SET status = 'retired', retired_at = pg_catalog.now()
   WHERE status OPERATOR(pg_catalog.=) 'active';
  UPDATE tokex.key SET status = 'active', activated_at = pg_catalog.now(), retired_at = NULL
   WHERE key.kid OPERATOR(pg_catalog.=) activate_key.kid;
END
$$;

-- Stop signing with kid but keep publishing it until its tokens have expired.
CREATE FUNCTION tokex.retire_key(kid text) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
DECLARE st text;
BEGIN
  st := tokex._key_status(retire_key.kid);
  IF st OPERATOR(pg_catalog.=) 'retired' THEN RETURN; END IF;
  IF st OPERATOR(pg_catalog.=) 'revoked' THEN
    RAISE EXCEPTION 'key "%" is revoked', retire_key.kid USING ERRCODE = 'object_not_in_prerequisite_state';
  END IF;
  UPDATE tokex.key SET status = 'retired', retired_at = pg_catalog.now()
   WHERE key.kid OPERATOR(pg_catalog.=) retire_key.kid;
END
$$;

-- Stop publishing kid: every token it signed fails verification from the next
-- transaction on, in every backend.
CREATE FUNCTION tokex.revoke_key(kid text) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
BEGIN
  PERFORM tokex._key_status(revoke_key.kid);
  UPDATE tokex.key SET status = 'revoked', revoked_at = pg_catalog.now()
   WHERE key.kid OPERATOR(pg_catalog.=) revoke_key.kid
     AND status OPERATOR(pg_catalog.<>) 'revoked';
END
$$;

CREATE FUNCTION tokex.jwks() RETURNS jsonb
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
  SELECT pg_catalog.jsonb_build_object('keys',
           COALESCE(pg_catalog.jsonb_agg(public_jwk ORDER BY created_at), '[]'::jsonb))
    FROM tokex.key
   WHERE status IN ('next', 'active', 'retired')
$$;
