------------------------------------------------------------------------
-- Sessions, agent credentials, revocation, downstream use
------------------------------------------------------------------------

-- The credential an agent holds for a person: a tokex JWT with sub = the
-- person, may_act = the agent and sid = the session.  It only works as the
-- subject_token of an exchange (with the agent's actor_token) while the
-- session, the delegation and both identities are live.
CREATE FUNCTION tokex.start_session(principal text, agent text, scopes text[] DEFAULT NULL,
                                    ttl interval DEFAULT '1 hour')
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
DECLARE
  d tokex.delegation;
  sid uuid := pg_catalog.gen_random_uuid();
  jti uuid := pg_catalog.gen_random_uuid();
  granted text[];
  at timestamptz := pg_catalog.clock_timestamp();   -- the call, not the transaction's start
  exp timestamptz;
  tok text;
BEGIN
  IF principal IS NULL OR agent IS NULL OR ttl IS NULL THEN
    RAISE EXCEPTION 'principal, agent and ttl are required' USING ERRCODE = 'null_value_not_allowed';
  END IF;
  IF ttl <= '0'::interval OR ttl > '1 day'::interval THEN
    RAISE EXCEPTION 'session ttl must be positive and at most 1 day' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF pg_catalog.cardinality(scopes) = 0 OR pg_catalog.array_position(scopes, NULL) IS NOT NULL THEN
    RAISE EXCEPTION 'scopes must be NULL (the delegation''s) or a list of scopes'
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF EXISTS (SELECT 1 FROM tokex.identity i
              WHERE i.id OPERATOR(pg_catalog.=) ANY (ARRAY[principal, agent])
                AND i.status OPERATOR(pg_catalog.<>) 'active')
     OR (SELECT pg_catalog.count(*) FROM tokex.identity i
          WHERE i.id OPERATOR(pg_catalog.=) ANY (ARRAY[principal, agent])) <> 2 THEN
    RAISE EXCEPTION 'cannot start a session for "%" and "%"', principal, agent
      USING ERRCODE = 'invalid_authorization_specification',
            DETAIL = 'Both must be known, active identities.';
  END IF;
  SELECT * INTO d FROM tokex.delegation x
   WHERE x.principal OPERATOR(pg_catalog.=) start_session.principal
     AND x.delegate OPERATOR(pg_catalog.=) start_session.agent
     AND x.revoked_at IS NULL AND x.valid_from <= at
     AND (x.valid_until IS NULL OR x.valid_until > at)
     AND (start_session.scopes IS NULL OR x.scopes OPERATOR(pg_catalog.@>) start_session.scopes)
   ORDER BY x.id LIMIT 1;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'no live delegation from "%" to "%"%', principal, agent,
      CASE WHEN scopes IS NULL THEN '' ELSE ' covering the requested scopes' END
      USING ERRCODE = 'invalid_authorization_specification';
  END IF;
  -- ARRAY(...) over no rows is '{}', not NULL: test the argument itself
  granted := CASE WHEN start_session.scopes IS NULL THEN d.scopes
                  ELSE ARRAY(SELECT DISTINCT s FROM pg_catalog.unnest(start_session.scopes) s ORDER BY s) END;
  exp := at OPERATOR(pg_catalog.+) ttl;
  IF d.valid_until IS NOT NULL AND d.valid_until < exp THEN
    exp := d.valid_until;
  END IF;
  INSERT INTO tokex.session (id, principal, agent, delegation_id, scopes, created_at, expires_at)
  VALUES (sid, principal, agent, d.id, granted, at, exp);
  tok := tokex._sign(pg_catalog.jsonb_build_object(
           'iss', tokex._issuer(),
           'sub', principal,
           'may_act', pg_catalog.jsonb_build_object('sub', agent, 'iss', tokex._issuer()),
           'sid', sid::text,
           'jti', jti::text,
           'scope', pg_catalog.array_to_string(granted, ' '),
           'iat', pg_catalog.floor(extract(epoch FROM at))::bigint,
           'nbf', pg_catalog.floor(extract(epoch FROM at))::bigint,
           'exp', pg_catalog.floor(extract(epoch FROM exp))::bigint), 'JWT');
  -- committed before the credential is returned, whatever this transaction does
  PERFORM tokex._audit_write(pg_catalog.jsonb_build_object(
    'exchange_id', jti, 'at', at, 'operation', 'session', 'decision', 'granted',
    'subject', principal, 'actor', agent, 'actor_chain', ARRAY[agent], 'scope', granted,
    'jti', jti, 'expires_at', exp, 'delegation_ids', ARRAY[d.id], 'subject_issuer', tokex._issuer(),
    'subject_sid', sid, 'issued_token_type', 'urn:ietf:params:oauth:token-type:jwt'));
  RETURN pg_catalog.jsonb_build_object('session_token', tok, 'session_id', sid, 'expires_at', exp);
END
$$;

-- An actor token for an agent or service registered in tokex, for
-- deployments without an external workload identity issuer.
CREATE FUNCTION tokex.identity_token(identity text, ttl interval DEFAULT '15 minutes')
RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
DECLARE
  now_s bigint := pg_catalog.floor(extract(epoch FROM pg_catalog.clock_timestamp()))::bigint;
  exp_s bigint;
  jti uuid := pg_catalog.gen_random_uuid();
  tok text;
BEGIN
  IF ttl IS NULL OR ttl <= '0'::interval OR ttl > '1 day'::interval THEN
    RAISE EXCEPTION 'ttl must be positive and at most 1 day' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF NOT EXISTS (SELECT 1 FROM tokex.identity i
                  WHERE i.id OPERATOR(pg_catalog.=) identity_token.identity
                    AND i.kind IN ('agent', 'service') AND i.status OPERATOR(pg_catalog.=) 'active') THEN
    RAISE EXCEPTION 'cannot mint a credential for "%"', identity
      USING ERRCODE = 'invalid_authorization_specification',
            DETAIL = 'Only active agents and services get identity tokens.';
  END IF;
  exp_s := now_s OPERATOR(pg_catalog.+) pg_catalog.floor(extract(epoch FROM ttl))::bigint;
  tok := tokex._sign(pg_catalog.jsonb_build_object(
           'iss', tokex._issuer(), 'sub', identity, 'jti', jti::text,
           'iat', now_s, 'nbf', now_s, 'exp', exp_s), 'JWT');
  PERFORM tokex._audit_write(pg_catalog.jsonb_build_object(
    'exchange_id', jti, 'operation', 'identity_token', 'decision', 'granted',
    'subject', identity, 'jti', jti, 'expires_at', pg_catalog.to_timestamp(exp_s),
    'subject_issuer', tokex._issuer(), 'issued_token_type', 'urn:ietf:params:oauth:token-type:jwt'));
  RETURN tok;
END
$$;

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
  IF pg_catalog.strpos(token_or_jti, '.') > 0 THEN
    claims := (tokex.jwt_decode(token_or_jti))->'payload';
    IF claims->'jti' IS NULL THEN
      RAISE EXCEPTION 'the token has no jti' USING ERRCODE = 'invalid_parameter_value',
        HINT = 'Revoke the identity, delegation or session it belongs to instead.';
    END IF;
    t_jti := tokex._jti_text(claims->'jti');
    IF t_jti IS NULL THEN
      RAISE EXCEPTION 'the token''s jti is neither a string nor a number' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    t_iss := claims->>'iss';
    IF t_iss IS NULL OR pg_catalog.jsonb_typeof(claims->'iss') OPERATOR(pg_catalog.<>) 'string' THEN
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
CREATE FUNCTION tokex._jti_text(jti jsonb) RETURNS text
  LANGUAGE C IMMUTABLE STRICT AS 'MODULE_PATHNAME', 'tokex_jti_text_sql';

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

-- A resource server or gateway records a downstream call made with a token
-- tokex minted; the row links to the exchange that minted it.
CREATE FUNCTION tokex.record_use(token text, action text, outcome text) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
DECLARE
  claims jsonb;
  xid uuid;
  use_id bigint;
BEGIN
  IF action IS NULL OR outcome IS NULL THEN
    RAISE EXCEPTION 'action and outcome are required' USING ERRCODE = 'null_value_not_allowed';
  END IF;
  claims := tokex.jwt_verify(token);
  IF claims->>'iss' IS DISTINCT FROM tokex._issuer() THEN
    RAISE EXCEPTION 'token was not minted by tokex' USING ERRCODE = 'invalid_authorization_specification';
  END IF;
  -- jti is compared as a uuid, so the lookup is an index probe
  IF (claims->>'jti') ~ '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$' THEN
    SELECT a.exchange_id INTO xid FROM tokex.audit_event a
     WHERE a.jti OPERATOR(pg_catalog.=) (claims->>'jti')::uuid
       AND a.decision OPERATOR(pg_catalog.=) 'granted' AND a.operation OPERATOR(pg_catalog.=) 'exchange';
  END IF;
  IF xid IS NULL THEN
    RAISE EXCEPTION 'token was not minted by a tokex exchange' USING ERRCODE = 'invalid_authorization_specification',
      DETAIL = 'Only access tokens from tokex.exchange have an exchange to link a use to.';
  END IF;
  INSERT INTO tokex.token_use (exchange_id, action, outcome) VALUES (xid, action, outcome)
  RETURNING id INTO use_id;
  RETURN use_id;
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
      IF NEW.revoked_at IS NULL OR OLD.revoked_at IS NOT NULL THEN RETURN NULL; END IF;
      k := 'delegation'; t := NEW.id::text; r := NEW.revoke_reason;
    WHEN 'session' THEN
      IF NEW.revoked_at IS NULL OR OLD.revoked_at IS NOT NULL THEN RETURN NULL; END IF;
      k := 'session'; t := NEW.id::text; r := NEW.revoke_reason;
    WHEN 'revoked_token' THEN
      k := 'token'; t := pg_catalog.left(NEW.jti, 256); r := NEW.reason;
    WHEN 'key' THEN
      IF NEW.status OPERATOR(pg_catalog.<>) 'revoked' OR OLD.status OPERATOR(pg_catalog.=) 'revoked' THEN
        RETURN NULL;
      END IF;
      k := 'key'; t := NEW.kid; r := NULL;
  END CASE;
  INSERT INTO tokex.revocation (kind, target, reason) VALUES (k, t, r) RETURNING * INTO rev;
  PERFORM pg_catalog.pg_notify('tokex_revocation', pg_catalog.jsonb_build_object(
    'kind', k, 'target', t, 'reason', r, 'at', rev.at)::text);
  RETURN NULL;
END
$$;
CREATE TRIGGER identity_revocation AFTER UPDATE ON tokex.identity
  FOR EACH ROW EXECUTE FUNCTION tokex._on_revocation();
CREATE TRIGGER delegation_revocation AFTER UPDATE ON tokex.delegation
  FOR EACH ROW EXECUTE FUNCTION tokex._on_revocation();
CREATE TRIGGER session_revocation AFTER UPDATE ON tokex.session
  FOR EACH ROW EXECUTE FUNCTION tokex._on_revocation();
CREATE TRIGGER token_revocation AFTER INSERT ON tokex.revoked_token
  FOR EACH ROW EXECUTE FUNCTION tokex._on_revocation();
CREATE TRIGGER key_revocation AFTER UPDATE ON tokex.key
  FOR EACH ROW EXECUTE FUNCTION tokex._on_revocation();
