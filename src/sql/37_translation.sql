------------------------------------------------------------------------
-- Translation: credentials that are not JWTs, on the way in (agent API
-- keys, token types with a registered verifier); the formats of the way
-- out are tokex.resource.token_format (src/translate.c, src/mint.c)
------------------------------------------------------------------------

-- Agent and service API keys.  The key itself is shown once, by
-- create_api_key; only its SHA-256 is kept, and a presented key is found
-- by that hash (an index probe, never a scan or a comparison of secrets).
-- Presented with token type urn:tokex:token-type:api_key, a live key
-- authenticates its identity for an exchange as a verified JWT would: as
-- the actor, or as the subject for an agent or service acting for itself.
CREATE TABLE tokex.api_key (
  id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  identity      text NOT NULL REFERENCES tokex.identity (id) ON UPDATE CASCADE ON DELETE CASCADE,
  key_sha256    bytea NOT NULL UNIQUE CHECK (pg_catalog.length(key_sha256) = 32),
  -- the key's first characters, to tell keys apart in a listing or a leak report
  hint          text NOT NULL,
  label         text,
  created_at    timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
  expires_at    timestamptz,
  revoked_at    timestamptz,
  revoke_reason text,
  created_by    text NOT NULL DEFAULT SESSION_USER
);

CREATE INDEX api_key_identity ON tokex.api_key (identity);

SELECT pg_catalog.pg_extension_config_dump('tokex.api_key', '');

-- a new opaque credential: tkx_<kind>_ + 43 base62 characters (256 random
-- bits) + 6 base62 characters of CRC-32, so scanners can tell a real key
-- from a typo without asking tokex
CREATE FUNCTION tokex._opaque_new(kind text) RETURNS text
  LANGUAGE C VOLATILE STRICT AS 'MODULE_PATHNAME', 'tokex_opaque_new_sql';

CREATE FUNCTION tokex.create_api_key(identity text, expires_at timestamptz DEFAULT NULL,
                                     label text DEFAULT NULL) RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
DECLARE
  k text;
  who tokex.identity;
BEGIN
  SELECT * INTO who FROM tokex.identity i WHERE i.id OPERATOR(pg_catalog.=) create_api_key.identity;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'identity "%" does not exist', create_api_key.identity USING ERRCODE = 'no_data_found';
  ELSIF who.kind OPERATOR(pg_catalog.=) 'human' THEN
    RAISE EXCEPTION 'API keys are for agents and services, not for "%"', who.id
      USING ERRCODE = 'invalid_parameter_value',
            DETAIL = 'A person authenticates at an identity provider tokex trusts, or through a session.';
  ELSIF who.status OPERATOR(pg_catalog.<>) 'active' THEN
    RAISE EXCEPTION 'identity "%" is %', who.id, who.status USING ERRCODE = 'invalid_parameter_value';
  ELSIF create_api_key.expires_at IS NOT NULL AND create_api_key.expires_at OPERATOR(pg_catalog.<=) pg_catalog.now() THEN
    RAISE EXCEPTION 'expires_at is in the past' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  k := tokex._opaque_new('ak');
  INSERT INTO tokex.api_key (identity, key_sha256, hint, label, expires_at)
  VALUES (who.id, pg_catalog.sha256(pg_catalog.convert_to(k, 'UTF8')), pg_catalog.left(k, 11),
          create_api_key.label, create_api_key.expires_at);
  RETURN k;
END
$$;

-- Revoke an API key, given as the key itself or its id.
CREATE FUNCTION tokex.revoke_api_key(key_or_id text, reason text) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
BEGIN
  IF key_or_id LIKE 'tkx\_ak\_%' THEN
    UPDATE tokex.api_key k SET revoked_at = pg_catalog.now(), revoke_reason = reason
     WHERE k.key_sha256 OPERATOR(pg_catalog.=) pg_catalog.sha256(pg_catalog.convert_to(key_or_id, 'UTF8'))
       AND k.revoked_at IS NULL;
  ELSIF key_or_id ~ '^[0-9]{1,18}$' THEN
    UPDATE tokex.api_key k SET revoked_at = pg_catalog.now(), revoke_reason = reason
     WHERE k.id OPERATOR(pg_catalog.=) key_or_id::bigint AND k.revoked_at IS NULL;
  ELSE
    RAISE EXCEPTION 'not an API key or an API key id' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'no live API key matches' USING ERRCODE = 'no_data_found';
  END IF;
END
$$;

CREATE TRIGGER api_key_revocation AFTER UPDATE ON tokex.api_key
  FOR EACH ROW EXECUTE FUNCTION tokex._on_revocation();

-- Token types with a verifier of the administrator's: a function
-- (token text) RETURNS jsonb that maps a valid credential to its claims
-- (iss, sub, exp; optionally iat, jti, scope, may_act) and returns NULL or
-- raises for an invalid one.  It runs as the role that registered it, under
-- SECURITY_RESTRICTED_OPERATION, never as the extension owner; the claims
-- then go through the whole decision like a JWT's.
CREATE TABLE tokex.token_type (
  token_type    text PRIMARY KEY CHECK (token_type ~ '^[a-zA-Z][a-zA-Z0-9+.-]*:[[:graph:]]+$'
                                        AND pg_catalog.length(token_type) <= 512),
  verifier      regprocedure NOT NULL,
  registered_by regrole NOT NULL,
  registered_at timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
  description   text
);

SELECT pg_catalog.pg_extension_config_dump('tokex.token_type', '');

-- Whoever writes the row is whom the verifier runs as: set here, from the
-- role that runs the INSERT or UPDATE, whatever the statement says.  Not
-- SECURITY DEFINER, so current_user is that role.
CREATE FUNCTION tokex._token_type_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, tokex, pg_temp AS $$
DECLARE
  p pg_catalog.pg_proc;
BEGIN
  IF NEW.token_type IN ('urn:ietf:params:oauth:token-type:jwt', 'urn:ietf:params:oauth:token-type:access_token',
                        'urn:ietf:params:oauth:token-type:id_token', 'urn:ietf:params:oauth:token-type:txn_token',
                        'urn:tokex:token-type:api_key', 'urn:tokex:token-type:credential') THEN
    RAISE EXCEPTION 'token type % is tokex''s own', NEW.token_type USING ERRCODE = 'invalid_parameter_value';
  END IF;
  SELECT * INTO p FROM pg_catalog.pg_proc WHERE oid OPERATOR(pg_catalog.=) NEW.verifier::oid;
  IF p.prorettype OPERATOR(pg_catalog.<>) 'pg_catalog.jsonb'::pg_catalog.regtype
     OR p.pronargs OPERATOR(pg_catalog.<>) 1
     OR p.proargtypes[0] OPERATOR(pg_catalog.<>) 'pg_catalog.text'::pg_catalog.regtype
     OR p.prokind OPERATOR(pg_catalog.<>) 'f' OR p.proretset THEN
    RAISE EXCEPTION 'a verifier is a function (token text) RETURNS jsonb, not %', NEW.verifier
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  NEW.registered_by := CURRENT_USER::regrole;
  IF NOT pg_catalog.has_function_privilege(NEW.registered_by::oid, NEW.verifier::oid, 'EXECUTE') THEN
    RAISE EXCEPTION 'role % may not execute %', NEW.registered_by, NEW.verifier
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END
$$;

CREATE TRIGGER token_type_check BEFORE INSERT OR UPDATE ON tokex.token_type
  FOR EACH ROW EXECUTE FUNCTION tokex._token_type_check();

-- Not SECURITY DEFINER: the registering role is the caller.
CREATE FUNCTION tokex.register_token_type(token_type text, verifier regprocedure,
                                          description text DEFAULT NULL) RETURNS void
LANGUAGE sql VOLATILE SET search_path = pg_catalog, tokex, pg_temp AS $$
  INSERT INTO tokex.token_type (token_type, verifier, registered_by, description)
  VALUES (register_token_type.token_type, register_token_type.verifier, CURRENT_USER::regrole,
          register_token_type.description)
  ON CONFLICT ON CONSTRAINT token_type_pkey DO UPDATE
     SET verifier = EXCLUDED.verifier, description = EXCLUDED.description
$$;
