------------------------------------------------------------------------
-- The credential vault: downstream credentials released through the
-- exchange, envelope-encrypted under a key-encryption key read from a file
-- (src/vault.c; README "Credential vault")
------------------------------------------------------------------------

-- One downstream credential.  principal NULL: the shared service
-- credential of the audience; else that person's own.  The secret is in
-- ciphertext, sealed under a data key of its own that is wrapped (sealed)
-- under the key-encryption key whose fingerprint is kek_id.  Both seals are
-- bound to id, audience, principal, kind and header, so those cannot change
-- (renaming the resource or the identity is refused while it has
-- credentials) and a ciphertext moved to another row does not decrypt.
-- Only the owner reads wrapped_key and ciphertext; nobody needs to: the
-- exchange decrypts in C.
CREATE TABLE tokex.credential (
  id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  audience      text NOT NULL REFERENCES tokex.resource (audience) ON DELETE CASCADE,
  principal     text REFERENCES tokex.identity (id) ON DELETE CASCADE,
  kind          text NOT NULL DEFAULT 'api_key' CHECK (kind IN ('api_key', 'basic', 'bearer')),
  header        text CHECK (header ~ '^[-!#$%&''*+.^_`|~0-9A-Za-z]+$' AND pg_catalog.length(header) <= 256),
  expires_at    timestamptz,
  created_at    timestamptz NOT NULL DEFAULT pg_catalog.now(),
  created_by    text NOT NULL DEFAULT SESSION_USER,
  revoked_at    timestamptz,
  revoke_reason text,
  kek_id        bytea NOT NULL CHECK (pg_catalog.octet_length(kek_id) = 16),
  wrapped_key   bytea NOT NULL,
  ciphertext    bytea NOT NULL
);

-- the release: by audience, the person's own before the shared one
CREATE INDEX credential_live ON tokex.credential (audience, principal) WHERE revoked_at IS NULL;

CREATE INDEX credential_principal ON tokex.credential (principal);

SELECT pg_catalog.pg_extension_config_dump('tokex.credential', '');

SELECT pg_catalog.pg_extension_config_dump('tokex.credential_id_seq', '');

CREATE TRIGGER credential_revocation AFTER UPDATE ON tokex.credential
  FOR EACH ROW EXECUTE FUNCTION tokex._on_revocation();

CREATE TRIGGER credential_revocation_stands BEFORE UPDATE ON tokex.credential
  FOR EACH ROW EXECUTE FUNCTION tokex._revocation_stands();

-- Store a credential; returns its id.  kind: 'api_key' (sent in the header
-- named, default X-API-Key), 'basic' (secret = user:password, sent as
-- Authorization: Basic base64(secret)), 'bearer' (Authorization: Bearer
-- secret); header replaces the default header name.  Needs
-- tokex.vault_key_file.  The secret travels in this call's SQL text (or
-- bind parameter): see the README for keeping it out of the server log.
CREATE FUNCTION tokex.store_credential(audience text, secret text, principal text DEFAULT NULL,
                                       kind text DEFAULT 'api_key', header text DEFAULT NULL,
                                       expires_at timestamptz DEFAULT NULL) RETURNS bigint
  LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp
  AS 'MODULE_PATHNAME', 'tokex_store_credential';

-- A revoked credential is never released again.  Plain UPDATE of
-- revoked_at acts the same; both are recorded in tokex.revocation.
CREATE FUNCTION tokex.revoke_credential(id bigint, reason text) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
BEGIN
  UPDATE tokex.credential c SET revoked_at = pg_catalog.now(), revoke_reason = reason
   WHERE c.id OPERATOR(pg_catalog.=) revoke_credential.id AND c.revoked_at IS NULL;
  IF NOT FOUND AND NOT EXISTS (SELECT 1 FROM tokex.credential c WHERE c.id OPERATOR(pg_catalog.=) revoke_credential.id) THEN
    RAISE EXCEPTION 'credential % does not exist', revoke_credential.id USING ERRCODE = 'no_data_found';
  END IF;
END
$$;

-- Key rotation: wrap every data key still under the key of
-- tokex.vault_previous_key_file under the key of tokex.vault_key_file.
-- Returns how many were re-wrapped.
CREATE FUNCTION tokex.vault_rewrap() RETURNS bigint
  LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp
  AS 'MODULE_PATHNAME', 'tokex_vault_rewrap';

-- The fingerprints of the configured keys (NULL: setting empty).
CREATE FUNCTION tokex._vault_key_ids(OUT current_key bytea, OUT previous_key bytea)
  LANGUAGE C VOLATILE AS 'MODULE_PATHNAME', 'tokex_vault_key_ids';

-- Which key-encryption keys the credentials are under: 'current' (the key
-- of tokex.vault_key_file), 'previous' (tokex.vault_previous_key_file) and
-- 'unknown' (neither: such credentials cannot be released).  A rotation is
-- complete when no credential is under 'previous'.
CREATE FUNCTION tokex.vault_status() RETURNS TABLE (key text, key_id text, credentials bigint)
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
  WITH ids AS (SELECT * FROM tokex._vault_key_ids()),
  keys AS (
    SELECT 1 AS o, 'current' AS key, current_key AS id FROM ids WHERE current_key IS NOT NULL
    UNION ALL
    SELECT 2, 'previous', previous_key FROM ids WHERE previous_key IS NOT NULL
    UNION ALL
    SELECT DISTINCT 3, 'unknown', c.kek_id FROM tokex.credential c, ids
     WHERE c.kek_id IS DISTINCT FROM ids.current_key AND c.kek_id IS DISTINCT FROM ids.previous_key)
  SELECT k.key, pg_catalog.encode(k.id, 'hex'),
         (SELECT pg_catalog.count(*) FROM tokex.credential c WHERE c.kek_id OPERATOR(pg_catalog.=) k.id)
    FROM keys k ORDER BY k.o, 2
$$;

-- What the exchange would release for (audience, principal), with the HTTP
-- header the downstream receives (header_name: header_value).  Owner only:
-- for tests and for the owner's own checks.
CREATE FUNCTION tokex._vault_release(audience text, principal text DEFAULT NULL)
  RETURNS TABLE (id bigint, kind text, header text, secret text, header_name text, header_value text)
  LANGUAGE C VOLATILE AS 'MODULE_PATHNAME', 'tokex_vault_release';

-- Administrators store, rotate and revoke, and read what is not secret;
-- auditors read what is not secret; the application tier reads nothing
-- (the exchange releases as the owner).  wrapped_key and ciphertext: owner only.
REVOKE ALL ON tokex.credential FROM PUBLIC;

GRANT SELECT (id, audience, principal, kind, header, expires_at, created_at, created_by, revoked_at,
              revoke_reason, kek_id),
  UPDATE (expires_at, revoked_at, revoke_reason), DELETE ON tokex.credential TO tokex_admin;

GRANT SELECT (id, audience, principal, kind, header, expires_at, created_at, created_by, revoked_at,
              revoke_reason) ON tokex.credential TO tokex_auditor;

REVOKE ALL ON FUNCTION tokex.store_credential(text, text, text, text, text, timestamptz),
  tokex.revoke_credential(bigint, text), tokex.vault_rewrap(), tokex._vault_key_ids(),
  tokex.vault_status(), tokex._vault_release(text, text) FROM PUBLIC;

GRANT EXECUTE ON FUNCTION tokex.store_credential(text, text, text, text, text, timestamptz),
  tokex.revoke_credential(bigint, text), tokex.vault_rewrap(), tokex.vault_status() TO tokex_admin;
