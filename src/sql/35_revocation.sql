------------------------------------------------------------------------
-- Revocation: revoked tokens, the record of every revocation, and the
-- functions that revoke (src/revocation.c)
------------------------------------------------------------------------

-- Individually revoked tokens, by issuer and jti.  key is the SHA-256 of
-- issuer, a NUL and the jti's text (a string jti as it is, a numeric one in
-- its shortest decimal form), computed by a trigger: any jti length, and a
-- jti of one issuer never revokes another issuer's token.
CREATE TABLE tokex.revoked_token (
  key        bytea PRIMARY KEY,
  issuer     text NOT NULL,  -- NULL on INSERT: tokex itself
  jti        text NOT NULL,
  revoked_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
  expires_at timestamptz,
  reason     text
);

CREATE FUNCTION tokex._jti_key(issuer text, jti text) RETURNS bytea
  LANGUAGE C IMMUTABLE STRICT AS 'MODULE_PATHNAME', 'tokex_jti_key_sql';

CREATE FUNCTION tokex._revoked_token_key() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
BEGIN
  NEW.issuer := COALESCE(NEW.issuer, tokex._issuer());
  NEW.key := tokex._jti_key(NEW.issuer, NEW.jti);
  RETURN NEW;
END
$$;

CREATE TRIGGER revoked_token_key BEFORE INSERT OR UPDATE ON tokex.revoked_token
  FOR EACH ROW EXECUTE FUNCTION tokex._revoked_token_key();

-- Every revocation, whichever way it was made (function or plain DML).
CREATE TABLE tokex.revocation (
  id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  at      timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
  kind    text NOT NULL CHECK (kind IN ('identity', 'delegation', 'session', 'token', 'key', 'api_key',
                                    'credential')),
  target  text NOT NULL,
  reason  text,
  by_user text NOT NULL DEFAULT SESSION_USER
);

SELECT pg_catalog.pg_extension_config_dump('tokex.revoked_token', '');

SELECT pg_catalog.pg_extension_config_dump('tokex.revocation', '');

CREATE FUNCTION tokex.revoke_session(session_id uuid, reason text) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
BEGIN
  UPDATE tokex.session SET revoked_at = pg_catalog.now(), revoke_reason = reason
   WHERE id OPERATOR(pg_catalog.=) session_id AND revoked_at IS NULL;
  IF NOT FOUND AND NOT EXISTS (SELECT 1 FROM tokex.session WHERE id OPERATOR(pg_catalog.=) session_id) THEN
    RAISE EXCEPTION 'session % does not exist', session_id USING ERRCODE = 'no_data_found';
  END IF;
END
$$;

-- Offboard a person or decommission an agent: every exchange it takes part
-- in, and every token it appears in, stops at the next call.
CREATE FUNCTION tokex.revoke_identity(id text, reason text) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
BEGIN
  UPDATE tokex.identity i
     SET status = CASE WHEN i.kind OPERATOR(pg_catalog.=) 'human' THEN 'offboarded' ELSE 'decommissioned' END,
         status_reason = reason,
         tokens_valid_after = pg_catalog.clock_timestamp()
   WHERE i.id OPERATOR(pg_catalog.=) revoke_identity.id;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'identity "%" does not exist', revoke_identity.id USING ERRCODE = 'no_data_found';
  END IF;
END
$$;

CREATE FUNCTION tokex.revoke_delegation(principal text, delegate text, reason text) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
BEGIN
  UPDATE tokex.delegation d SET revoked_at = pg_catalog.now(), revoke_reason = reason
   WHERE d.principal OPERATOR(pg_catalog.=) revoke_delegation.principal
     AND d.delegate OPERATOR(pg_catalog.=) revoke_delegation.delegate
     AND d.revoked_at IS NULL;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'no live delegation from "%" to "%"', principal, delegate USING ERRCODE = 'no_data_found';
  END IF;
END
$$;

-- The revocation row of a token or a bare jti, without inserting it:
-- (issuer, jti text, the token's exp).  A bare jti names a token of issuer
-- (default: tokex itself).
CREATE FUNCTION tokex._revocation_target(token_or_jti text, issuer text,
                                         OUT t_iss text, OUT t_jti text, OUT t_exp timestamptz)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, tokex, pg_temp AS $$
DECLARE
  claims jsonb;
BEGIN
  IF token_or_jti IS NULL OR token_or_jti OPERATOR(pg_catalog.=) '' THEN
    RAISE EXCEPTION 'token_or_jti is required' USING ERRCODE = 'null_value_not_allowed';
  END IF;
  IF token_or_jti LIKE 'tkx\_%' AND token_or_jti NOT LIKE 'tkx\_at\_%' THEN
    -- a tokex API key: never kept as a jti (in tokex.revocation and its NOTIFY)
    RAISE EXCEPTION 'not a token: an API key is revoked with tokex.revoke_api_key'
      USING ERRCODE = 'invalid_parameter_value';
  ELSIF token_or_jti LIKE 'tkx\_at\_%' THEN
    -- a reference token: its jti and exp are its audit row's
    SELECT a.jti::text, a.expires_at INTO t_jti, t_exp
      FROM tokex._audit_by_token(pg_catalog.sha256(pg_catalog.convert_to(token_or_jti, 'UTF8')), true) a
     WHERE a.decision OPERATOR(pg_catalog.=) 'granted';
    IF t_jti IS NULL THEN
      RAISE EXCEPTION 'not a reference token tokex issued' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    t_iss := tokex._issuer();
  ELSIF pg_catalog.strpos(token_or_jti, '.') > 0 THEN
    claims := (tokex.jwt_decode(token_or_jti))->'payload';
    -- iss and jti as the exchange reads them, from the token's own JSON
    SELECT v[1], v[2] INTO t_iss, t_jti FROM tokex._token_jti(token_or_jti) v;
    IF t_jti IS NULL THEN
      RAISE EXCEPTION 'the token has no jti' USING ERRCODE = 'invalid_parameter_value',
        HINT = 'Revoke the identity, delegation or session it belongs to instead.';
    END IF;
    IF t_iss IS NULL THEN
      RAISE EXCEPTION 'the token has no iss' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF pg_catalog.jsonb_typeof(claims->'exp') OPERATOR(pg_catalog.=) 'number'
       AND (claims->>'exp')::numeric BETWEEN 0 AND 253402300799 THEN
      t_exp := pg_catalog.to_timestamp((claims->>'exp')::double precision);
    END IF;
  ELSE
    t_jti := token_or_jti;
    t_iss := COALESCE(issuer, tokex._issuer());
  END IF;
  IF t_exp IS NULL AND t_iss OPERATOR(pg_catalog.=) tokex._setting('issuer')
     AND t_jti ~ '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$' THEN
    SELECT a.expires_at INTO t_exp FROM tokex.audit_event a WHERE a.jti OPERATOR(pg_catalog.=) t_jti::uuid;
  END IF;
END
$$;

CREATE FUNCTION tokex._token_jti(token text) RETURNS text[]
  LANGUAGE C IMMUTABLE STRICT AS 'MODULE_PATHNAME', 'tokex_token_jti';

-- Revoke one token, given as the token itself or its jti (of issuer, by
-- default tokex itself).  Revocations are keyed by (issuer, jti).
CREATE FUNCTION tokex.revoke_token(token_or_jti text, reason text, issuer text DEFAULT NULL) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
DECLARE
  t record;
BEGIN
  SELECT * INTO t FROM tokex._revocation_target(token_or_jti, revoke_token.issuer);
  INSERT INTO tokex.revoked_token (issuer, jti, reason, expires_at)
  VALUES (t.t_iss, t.t_jti, reason, t.t_exp)
  ON CONFLICT (key) DO NOTHING;
END
$$;

-- Revocations made any way (these functions or plain DML) are recorded and
-- announced on channel tokex_revocation, so caching gateways can drop them.
-- Payload: {"kind": "...", "target": "...", "reason": "...", "at": "..."}.
CREATE FUNCTION tokex._on_revocation() RETURNS trigger
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
      IF TG_OP OPERATOR(pg_catalog.=) 'DELETE' THEN
        -- a live delegation deleted (or taken by its identity's deletion) is revoked
        IF OLD.revoked_at IS NOT NULL THEN RETURN NULL; END IF;
        k := 'delegation'; t := OLD.id::text; r := 'deleted';
      ELSE
        IF NEW.revoked_at IS NULL OR OLD.revoked_at IS NOT NULL THEN RETURN NULL; END IF;
        k := 'delegation'; t := NEW.id::text; r := NEW.revoke_reason;
      END IF;
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
    WHEN 'api_key' THEN
      IF NEW.revoked_at IS NULL OR OLD.revoked_at IS NOT NULL THEN RETURN NULL; END IF;
      k := 'api_key'; t := NEW.id::text; r := NEW.revoke_reason;
    WHEN 'credential' THEN
      IF NEW.revoked_at IS NULL OR OLD.revoked_at IS NOT NULL THEN RETURN NULL; END IF;
      k := 'credential'; t := NEW.id::text; r := NEW.revoke_reason;
  END CASE;
  INSERT INTO tokex.revocation (kind, target, reason) VALUES (k, t, r) RETURNING * INTO rev;
  -- tokex.revocation_sync: the commit waits until the synchronous standbys applied it
  PERFORM tokex._revocation_sync();
  PERFORM pg_catalog.pg_notify('tokex_revocation', pg_catalog.jsonb_build_object(
    'kind', k, 'target', t, 'reason', r, 'at', rev.at)::text);
  RETURN NULL;
END
$$;

CREATE TRIGGER identity_revocation AFTER UPDATE ON tokex.identity
  FOR EACH ROW EXECUTE FUNCTION tokex._on_revocation();

CREATE TRIGGER delegation_revocation AFTER UPDATE OR DELETE ON tokex.delegation
  FOR EACH ROW EXECUTE FUNCTION tokex._on_revocation();

CREATE TRIGGER session_revocation AFTER UPDATE ON tokex.session
  FOR EACH ROW EXECUTE FUNCTION tokex._on_revocation();

CREATE TRIGGER token_revocation AFTER INSERT ON tokex.revoked_token
  FOR EACH ROW EXECUTE FUNCTION tokex._on_revocation();

CREATE TRIGGER key_revocation AFTER UPDATE ON tokex.key
  FOR EACH ROW EXECUTE FUNCTION tokex._on_revocation();
