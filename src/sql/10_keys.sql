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

-- Move kid to status target (active, retired or revoked), if it is in one
-- of allowed; already there: nothing to do.  Activating retires the active
-- key first (one signs at a time), under a table lock so two activations
-- cannot interleave.
CREATE FUNCTION tokex._key_move(p_kid text, target text, allowed text[]) RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, tokex, pg_temp AS $$
DECLARE st text;
BEGIN
  IF target OPERATOR(pg_catalog.=) 'active' THEN
    LOCK TABLE tokex.key IN SHARE ROW EXCLUSIVE MODE;
  END IF;
  SELECT status INTO st FROM tokex.key WHERE kid OPERATOR(pg_catalog.=) p_kid FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'key "%" does not exist', p_kid USING ERRCODE = 'no_data_found';
  END IF;
  IF st OPERATOR(pg_catalog.=) target THEN
    RETURN;
  END IF;
  IF NOT (st OPERATOR(pg_catalog.=) ANY (allowed)) THEN
    RAISE EXCEPTION '%', CASE target WHEN 'active' THEN pg_catalog.format('key "%s" is %s, it cannot be activated', p_kid, st)
                                     ELSE pg_catalog.format('key "%s" is %s', p_kid, st) END
      USING ERRCODE = 'object_not_in_prerequisite_state';
  END IF;
  IF target OPERATOR(pg_catalog.=) 'active' THEN
    UPDATE tokex.key SET status = 'retired', retired_at = pg_catalog.now()
     WHERE status OPERATOR(pg_catalog.=) 'active';
  END IF;
  UPDATE tokex.key
     SET status = target,
         activated_at = CASE WHEN target OPERATOR(pg_catalog.=) 'active' THEN pg_catalog.now() ELSE activated_at END,
         retired_at = CASE target WHEN 'retired' THEN pg_catalog.now() WHEN 'active' THEN NULL ELSE retired_at END,
         revoked_at = CASE WHEN target OPERATOR(pg_catalog.=) 'revoked' THEN pg_catalog.now() ELSE revoked_at END
   WHERE kid OPERATOR(pg_catalog.=) p_kid;
END
$$;

-- Make kid the signing key; the previous active key is retired (still published).
CREATE FUNCTION tokex.activate_key(kid text) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp
AS $$ SELECT tokex._key_move(kid, 'active', '{next,retired}') $$;

-- Stop signing with kid but keep publishing it until its tokens have expired.
CREATE FUNCTION tokex.retire_key(kid text) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp
AS $$ SELECT tokex._key_move(kid, 'retired', '{next,active}') $$;

-- Stop publishing kid: every token it signed fails verification from the next
-- transaction on, in every backend.
CREATE FUNCTION tokex.revoke_key(kid text) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp
AS $$ SELECT tokex._key_move(kid, 'revoked', '{next,active,retired}') $$;

CREATE FUNCTION tokex.jwks() RETURNS jsonb
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
  SELECT pg_catalog.jsonb_build_object('keys',
           COALESCE(pg_catalog.jsonb_agg(public_jwk ORDER BY created_at), '[]'::jsonb))
    FROM tokex.key
   WHERE status IN ('next', 'active', 'retired')
$$;
