-- tokex 0.2 -> 0.3, run by ALTER EXTENSION tokex UPDATE.
--
-- It turns a 0.2 installation into exactly what CREATE EXTENSION tokex
-- creates at 0.3 (test/upgrade/run.sh compares the two with pg_dump), and
-- keeps every row.  Function bodies are copies of src/sql/*.sql at 0.3
-- (test/upgrade/sync.py copies them): a changed body is replaced in place
-- (CREATE OR REPLACE keeps its grants); a function whose signature changed
-- is dropped and created, and granted below as 90_privileges.sql grants it;
-- a new function is created and its privileges set as 90_privileges.sql
-- sets them.  New columns go last, as in src/sql/, so tables keep their rows.
--
-- Until 0.3 is released, every change to src/sql/ lands here as well (the
-- upgrade check in CI fails until it does; see CONTRIBUTING in README.md).
\echo Use "ALTER EXTENSION tokex UPDATE TO '0.3'" to load this file. \quit

------------------------------------------------------------------------
-- Resources: the downstream token formats of the translation layer
------------------------------------------------------------------------
ALTER TABLE tokex.resource DROP CONSTRAINT resource_token_format_check,
  ADD CONSTRAINT resource_token_format_check
      CHECK (token_format IN ('jwt', 'reference', 'txn_token', 'credential'));

------------------------------------------------------------------------
-- Hot standbys (issue 15): heartbeat, revocation_sync, no private_key_jwt
-- on a standby
------------------------------------------------------------------------
CREATE TABLE tokex.heartbeat (
  id boolean PRIMARY KEY DEFAULT true CHECK (id),
  at timestamptz NOT NULL
);

CREATE FUNCTION tokex.heartbeat() RETURNS timestamptz
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
  INSERT INTO tokex.heartbeat (id, at) VALUES (true, pg_catalog.clock_timestamp())
  ON CONFLICT (id) DO UPDATE SET at = EXCLUDED.at
  RETURNING at
$$;

CREATE FUNCTION tokex._revocation_sync() RETURNS boolean
LANGUAGE C VOLATILE AS 'MODULE_PATHNAME', 'tokex_revocation_sync';

CREATE OR REPLACE FUNCTION tokex._on_revocation() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
DECLARE
  k text;
  t text;
  r text;
  rev tokex.revocation;
BEGIN
  CASE TG_TABLE_NAME
    WHEN 'identity' THEN
      -- a revocation: leaving 'active', or tokens_valid_after moving later
      IF NOT ((OLD.status OPERATOR(pg_catalog.=) 'active' AND NEW.status OPERATOR(pg_catalog.<>) 'active')
              OR (NEW.tokens_valid_after IS NOT NULL
                  AND (OLD.tokens_valid_after IS NULL OR NEW.tokens_valid_after > OLD.tokens_valid_after))) THEN
        RETURN NULL;
      END IF;
      k := 'identity'; t := NEW.id; r := NEW.status_reason;
    WHEN 'delegation' THEN
      IF NEW.revoked_at IS NULL OR OLD.revoked_at IS NOT NULL THEN RETURN NULL; END IF;
      k := 'delegation'; t := NEW.id::text; r := NEW.revoke_reason;
    WHEN 'session' THEN
      IF NEW.revoked_at IS NULL OR OLD.revoked_at IS NOT NULL THEN RETURN NULL; END IF;
      k := 'session'; t := NEW.id::text; r := NEW.revoke_reason;
    WHEN 'revoked_token' THEN
      -- a row revoked before this transaction began is not a new revocation
      -- but a restored one (pg_restore copies revoked_token with triggers
      -- on, and tokex.revocation already holds its log row)
      IF NEW.revoked_at OPERATOR(pg_catalog.<) pg_catalog.now() THEN RETURN NULL; END IF;
      k := 'token'; t := pg_catalog.left(NEW.jti, 256); r := NEW.reason;
    WHEN 'key' THEN
      IF NEW.status OPERATOR(pg_catalog.<>) 'revoked' OR OLD.status OPERATOR(pg_catalog.=) 'revoked' THEN
        RETURN NULL;
      END IF;
      k := 'key'; t := NEW.kid; r := NULL;
  END CASE;
  INSERT INTO tokex.revocation (kind, target, reason) VALUES (k, t, r) RETURNING * INTO rev;
  -- tokex.revocation_sync: the commit waits until the synchronous standbys applied it
  PERFORM tokex._revocation_sync();
  PERFORM pg_catalog.pg_notify('tokex_revocation', pg_catalog.jsonb_build_object(
    'kind', k, 'target', t, 'reason', r, 'at', rev.at)::text);
  RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION tokex._authenticate(client_id text, client_secret text, client_assertion text,
                                    client_assertion_type text, endpoint text,
                                    OUT client tokex.client, OUT why text, OUT used_basic boolean,
                                    OUT claimed_id text)
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, tokex, pg_temp AS $$
DECLARE
  hdrs jsonb;
  auth text;
  creds text;
  id text;
  secret text;
  claims jsonb;
  methods int := 0;
BEGIN
  used_basic := false;
  BEGIN
    hdrs := NULLIF(pg_catalog.current_setting('request.headers', true), '')::jsonb;
  EXCEPTION WHEN invalid_text_representation THEN
    hdrs := NULL;
  END;
  auth := hdrs->>'authorization';
  IF auth IS NOT NULL AND auth ~* '^basic ' THEN
    used_basic := true;
    methods := methods + 1;
    BEGIN
      creds := pg_catalog.convert_from(pg_catalog.decode(pg_catalog.btrim(pg_catalog.substr(auth, 7)), 'base64'), 'UTF8');
    EXCEPTION WHEN OTHERS THEN
      creds := NULL;
    END;
    IF creds IS NULL OR pg_catalog.strpos(creds, ':') = 0 THEN
      why := 'malformed Basic credentials'; RETURN;
    END IF;
    id := tokex._form_decode(pg_catalog.split_part(creds, ':', 1));
    secret := tokex._form_decode(pg_catalog.substr(creds, pg_catalog.strpos(creds, ':') + 1));
    claimed_id := id;
    IF _authenticate.client_id IS NOT NULL AND _authenticate.client_id IS DISTINCT FROM id THEN
      why := 'client_id does not match the Basic credentials'; RETURN;
    END IF;
  END IF;
  IF _authenticate.client_secret IS NOT NULL THEN
    methods := methods + 1;
    id := _authenticate.client_id;
    secret := _authenticate.client_secret;
  END IF;
  claimed_id := COALESCE(claimed_id, _authenticate.client_id);
  IF client_assertion IS NOT NULL OR client_assertion_type IS NOT NULL THEN
    methods := methods + 1;
  END IF;
  IF methods = 0 THEN
    why := 'client authentication is required'; RETURN;
  END IF;
  IF methods > 1 THEN
    why := 'use exactly one client authentication method'; RETURN;
  END IF;

  IF client_assertion IS NOT NULL OR client_assertion_type IS NOT NULL THEN
    IF client_assertion_type IS DISTINCT FROM 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer'
       OR client_assertion IS NULL THEN
      why := 'unsupported client_assertion_type'; RETURN;
    END IF;
    -- the claimed client names the keys; the assertion must then prove it
    BEGIN
      claims := (tokex.jwt_decode(client_assertion))->'payload';
    EXCEPTION WHEN OTHERS THEN
      why := 'malformed client_assertion'; RETURN;
    END;
    id := COALESCE(_authenticate.client_id, claims->>'sub');
    claimed_id := id;
    SELECT * INTO client FROM tokex.client c WHERE c.client_id OPERATOR(pg_catalog.=) id;
    IF NOT FOUND OR client.jwks IS NULL OR client.status OPERATOR(pg_catalog.<>) 'active' THEN
      client := NULL; why := 'unknown client or no registered keys'; RETURN;
    END IF;
    BEGIN
      claims := tokex._verify_assertion(client_assertion, client.jwks);
    EXCEPTION WHEN invalid_authorization_specification THEN
      client := NULL; why := 'client_assertion does not verify'; RETURN;
    END;
    IF claims->>'iss' IS DISTINCT FROM id OR claims->>'sub' IS DISTINCT FROM id OR claims->>'jti' IS NULL THEN
      client := NULL; why := 'client_assertion must have iss = sub = client_id and a jti'; RETURN;
    END IF;
    -- RFC 7523 §3: aud identifies this server: the endpoint, the token endpoint or the issuer
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.jsonb_array_elements_text(
                     CASE pg_catalog.jsonb_typeof(claims->'aud') WHEN 'array' THEN claims->'aud'
                          ELSE pg_catalog.jsonb_build_array(claims->'aud') END) a
                    WHERE a IN (endpoint, tokex._endpoint('/rpc/token'), tokex._issuer())) THEN
      client := NULL; why := 'client_assertion aud does not name this server'; RETURN;
    END IF;
    -- short-lived only, and remember the jti for as long as the assertion verifies
    IF (claims->>'exp')::numeric > extract(epoch FROM pg_catalog.now()) + 3600 THEN
      client := NULL; why := 'client_assertion expires more than an hour from now'; RETURN;
    END IF;
    -- replay protection writes the jti: a standby cannot, so it accepts no assertion
    IF pg_catalog.pg_is_in_recovery() THEN
      client := NULL; why := 'private_key_jwt is accepted only by the primary'; RETURN;
    END IF;
    DELETE FROM tokex.client_assertion_jti WHERE expires_at < pg_catalog.now();
    INSERT INTO tokex.client_assertion_jti (client_id, jti, expires_at)
    VALUES (id, claims->>'jti',
            pg_catalog.to_timestamp((claims->>'exp')::double precision)
              OPERATOR(pg_catalog.+) tokex._setting('clock_skew')::interval)
    ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
      client := NULL; why := 'client_assertion jti was already used'; RETURN;
    END IF;
    RETURN;
  END IF;

  SELECT * INTO client FROM tokex.client c WHERE c.client_id OPERATOR(pg_catalog.=) id;
  -- an unknown client costs what a known one costs (_verify_secret pads
  -- every failure to tokex.secret_hash_iterations), so timing does not
  -- tell them apart
  IF NOT tokex._verify_secret(COALESCE(secret, ''), COALESCE(client.secret_hash, ''))
     OR client.client_id IS NULL OR client.secret_hash IS NULL
     OR client.status OPERATOR(pg_catalog.<>) 'active' THEN
    client := NULL; why := 'client authentication failed';
  ELSIF pg_catalog.split_part(client.secret_hash, '$', 2)
          OPERATOR(pg_catalog.<>) tokex._setting('secret_hash_iterations')
        AND pg_catalog.current_setting('transaction_read_only') OPERATOR(pg_catalog.=) 'off'
        AND NOT pg_catalog.pg_is_in_recovery() THEN
    -- rehash at the configured count, so stored hashes converge on it and a
    -- failure for a known client costs what one for an unknown client costs
    UPDATE tokex.client c SET secret_hash = tokex._hash_secret(secret)
     WHERE c.client_id OPERATOR(pg_catalog.=) client.client_id
       AND c.secret_hash OPERATOR(pg_catalog.=) client.secret_hash;
  END IF;
END
$$;

REVOKE ALL ON FUNCTION tokex.heartbeat(), tokex._revocation_sync() FROM PUBLIC;

GRANT EXECUTE ON FUNCTION tokex.heartbeat() TO tokex_admin;

GRANT SELECT ON tokex.heartbeat TO tokex_admin, tokex_auditor;
