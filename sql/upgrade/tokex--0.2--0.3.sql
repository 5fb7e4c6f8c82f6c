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
-- Translation (issue 10): API keys, registered token types, reference and
-- transaction tokens; the exchange takes request_details/request_context,
-- the decision says which format the resource takes
------------------------------------------------------------------------
DO $$
DECLARE
  rels regclass[] := ARRAY[]::regclass[];
  procs regprocedure[] := ARRAY[
    'tokex.decide(text[], text[], timestamptz[], text, text, text[], text[], text, text, bytea[], uuid, uuid[], text[], text[], timestamptz)',
    'tokex.exchange(text, text, text, text, text, text, text, text, text)',
    'tokex_api.token(text, text, text, text, text, text, text, text, text, text, text, text, text)'];
  local text;
BEGIN
  -- (catalog, object, column, its name, the column's, current ACL, default
  -- ACL; a column's is none, and aclexplode(NULL) yields no rows)
  WITH obj AS (
    SELECT 'pg_class'::regclass AS cat, c.oid AS id, 0 AS sub,
           pg_catalog.format('%I.%I', n.nspname, c.relname) AS name, NULL::text AS col,
           COALESCE(c.relacl, pg_catalog.acldefault('r', c.relowner)) AS acl,
           pg_catalog.acldefault('r', c.relowner) AS dflt
      FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
     WHERE c.oid OPERATOR(pg_catalog.=) ANY (rels)
    UNION ALL
    SELECT 'pg_class'::regclass, a.attrelid, a.attnum, pg_catalog.format('%I.%I', n.nspname, c.relname),
           pg_catalog.quote_ident(a.attname), a.attacl, NULL
      FROM pg_catalog.pg_attribute a
      JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) a.attrelid
      JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
     WHERE a.attrelid OPERATOR(pg_catalog.=) ANY (rels) AND a.attnum > 0 AND NOT a.attisdropped
    UNION ALL
    SELECT 'pg_proc'::regclass, p.oid, 0,
           pg_catalog.format('FUNCTION %I.%I(%s)', n.nspname, p.proname,
                             pg_catalog.pg_get_function_identity_arguments(p.oid)), NULL,
           COALESCE(p.proacl, pg_catalog.acldefault('f', p.proowner)), pg_catalog.acldefault('f', p.proowner)
      FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) p.pronamespace
     WHERE p.oid OPERATOR(pg_catalog.=) ANY (procs)
  ),
  cur AS (SELECT o.name, o.col, e.grantee, e.privilege_type FROM obj o, pg_catalog.aclexplode(o.acl) e),
  ini AS (SELECT o.name, o.col, e.grantee, e.privilege_type
            FROM obj o
            LEFT JOIN pg_catalog.pg_init_privs i
              ON i.classoid OPERATOR(pg_catalog.=) o.cat AND i.objoid OPERATOR(pg_catalog.=) o.id
             AND i.objsubid OPERATOR(pg_catalog.=) o.sub,
                 pg_catalog.aclexplode(COALESCE(i.initprivs, o.dflt)) e),
  diff AS (SELECT 'GRANT' AS verb, * FROM (SELECT * FROM cur EXCEPT SELECT * FROM ini) g
           UNION ALL
           SELECT 'REVOKE', * FROM (SELECT * FROM ini EXCEPT SELECT * FROM cur) r)
  SELECT pg_catalog.string_agg(
           pg_catalog.format('%s %s%s ON %s %s %s;', d.verb, d.privilege_type, ' (' || d.col || ')', d.name,
                             CASE d.verb WHEN 'GRANT' THEN 'TO' ELSE 'FROM' END,
                             CASE d.grantee WHEN 0 THEN 'PUBLIC'
                                  ELSE pg_catalog.quote_ident(d.grantee::regrole::text) END),
           E'\n' ORDER BY d.name, d.col NULLS FIRST, d.verb, d.grantee::regrole::text, d.privilege_type)
    INTO local FROM diff d;
  IF local IS NOT NULL THEN
    RAISE WARNING 'privileges set on tokex objects since tokex 0.2 was installed are not carried over'
      USING DETAIL = E'These objects are created again by the update; run after it:\n' || local,
            HINT = 'tokex.exchange and tokex_api.token take new parameters (request_details, '
                   'request_context, dpop_proof); tokex.decide returns token_format and require_dpop.';
  END IF;
END
$$;

DROP FUNCTION tokex.decide(text[], text[], timestamptz[], text, text, text[], text[], text, text, bytea[], uuid,
                           uuid[], text[], text[], timestamptz);
DROP FUNCTION tokex._decide(text[], text[], timestamptz[], text, text, text[], text[], text, text, bytea[], uuid,
                            uuid[], text[], text[], timestamptz);
DROP FUNCTION tokex.exchange(text, text, text, text, text, text, text, text, text);
DROP FUNCTION tokex._exchange_for_client(text, text, text, text, text, text, text, text, text);
DROP FUNCTION tokex_api.token(text, text, text, text, text, text, text, text, text, text, text, text, text);

ALTER TABLE tokex.audit_event
  ADD COLUMN subject_token_type text,
  ADD COLUMN actor_token_type text,
  ADD COLUMN issued_token_sha256 bytea,
  ADD COLUMN credential_id bigint,
  ADD COLUMN dpop_jkt text;

ALTER TABLE tokex.resource ADD COLUMN require_dpop boolean NOT NULL DEFAULT false;

CREATE UNIQUE INDEX audit_event_issued_token ON tokex.audit_event (issued_token_sha256)
  WHERE issued_token_sha256 IS NOT NULL;

CREATE OR REPLACE VIEW tokex.audit AS
SELECT at, exchange_id, operation, decision, error, reason, subject, actor, actor_chain, client_id,
       audience, requested_scope, scope, jti, expires_at, delegation_ids, policy_ids,
       subject_issuer, actor_issuer, subject_sid, issued_token_type, db_user,
       subject_token_type, actor_token_type, credential_id, dpop_jkt
  FROM tokex.audit_event;

CREATE OR REPLACE FUNCTION tokex.record_use(token text, action text, outcome text) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
DECLARE
  claims jsonb;
  xid uuid;
  use_id bigint;
BEGIN
  IF action IS NULL OR outcome IS NULL THEN
    RAISE EXCEPTION 'action and outcome are required' USING ERRCODE = 'null_value_not_allowed';
  END IF;
  IF token LIKE 'tkx\_at\_%' THEN
    -- a reference token: its claims while it is live, as introspection gives them
    claims := tokex.introspect(token);
    IF NOT COALESCE((claims->>'active')::boolean, false) THEN
      RAISE EXCEPTION 'invalid token' USING ERRCODE = 'invalid_authorization_specification',
        DETAIL = 'The reference token is unknown, expired or revoked.';
    END IF;
  ELSE
    claims := tokex.jwt_verify(token);
  END IF;
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

ALTER TABLE tokex.revocation DROP CONSTRAINT revocation_kind_check,
  ADD CONSTRAINT revocation_kind_check
      CHECK (kind IN ('identity', 'delegation', 'session', 'token', 'key', 'api_key',
                          'credential'));

CREATE OR REPLACE FUNCTION tokex._revocation_target(token_or_jti text, issuer text,
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
    SELECT a.jti::text, a.expires_at INTO t_jti, t_exp FROM tokex.audit_event a
     WHERE a.issued_token_sha256 OPERATOR(pg_catalog.=) pg_catalog.sha256(pg_catalog.convert_to(token_or_jti, 'UTF8'))
       AND a.decision OPERATOR(pg_catalog.=) 'granted';
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
    WHEN 'api_key' THEN
      IF NEW.revoked_at IS NULL OR OLD.revoked_at IS NOT NULL THEN RETURN NULL; END IF;
      k := 'api_key'; t := NEW.id::text; r := NEW.revoke_reason;
    WHEN 'credential' THEN
      IF NEW.revoked_at IS NULL OR OLD.revoked_at IS NOT NULL THEN RETURN NULL; END IF;
      k := 'credential'; t := NEW.id::text; r := NEW.revoke_reason;
  END CASE;
  INSERT INTO tokex.revocation (kind, target, reason) VALUES (k, t, r) RETURNING * INTO rev;
  PERFORM pg_catalog.pg_notify('tokex_revocation', pg_catalog.jsonb_build_object(
    'kind', k, 'target', t, 'reason', r, 'at', rev.at)::text);
  RETURN NULL;
END
$$;

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

-- A revocation stands: revoked_at is never cleared or moved (a new key is made instead).
CREATE FUNCTION tokex._revocation_stands() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, tokex, pg_temp AS $$
BEGIN
  IF OLD.revoked_at IS NOT NULL AND NEW.revoked_at IS DISTINCT FROM OLD.revoked_at THEN
    RAISE EXCEPTION 'a revoked % stays revoked', TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege',
      DETAIL = 'Make a new one instead.';
  END IF;
  RETURN NEW;
END
$$;

CREATE TRIGGER api_key_revocation_stands BEFORE UPDATE ON tokex.api_key
  FOR EACH ROW EXECUTE FUNCTION tokex._revocation_stands();

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
  -- it runs as its registrant, so it is the registrant's own: nobody else
  -- can change what it does, and SECURITY DEFINER would run it as another
  IF p.proowner OPERATOR(pg_catalog.<>) NEW.registered_by::oid OR p.prosecdef THEN
    RAISE EXCEPTION 'a verifier is a function of the registering role''s own, not SECURITY DEFINER'
      USING ERRCODE = 'insufficient_privilege',
            DETAIL = pg_catalog.format('%s is owned by %s%s.', NEW.verifier, p.proowner::regrole,
                                       CASE WHEN p.prosecdef THEN ' and SECURITY DEFINER' ELSE '' END);
  END IF;
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

REVOKE ALL ON FUNCTION tokex._opaque_new(text), tokex.create_api_key(text, timestamptz, text), tokex._revocation_stands(),
  tokex.revoke_api_key(text, text), tokex._token_type_check(), tokex.register_token_type(text, regprocedure, text)
  FROM PUBLIC;

CREATE FUNCTION tokex._decide(
  chain_iss text[], chain_sub text[], chain_iat timestamptz[],
  audience text, resource text, requested_scope text[], token_scope text[],
  client_id text, own_issuer text, revoked_keys bytea[] DEFAULT NULL, sid uuid DEFAULT NULL,
  own_jtis uuid[] DEFAULT NULL, may_act_iss text[] DEFAULT NULL, may_act_sub text[] DEFAULT NULL,
  at timestamptz DEFAULT pg_catalog.clock_timestamp())
RETURNS TABLE (
  identity_error text,     -- revoked tokens or session, unknown / inactive identities
  error text, reason text, -- steps 5-8, or NULL when granted
  chain text[], kinds text[],
  delegation_ids bigint[], policy_ids bigint[],
  target text, scope text[], ttl_seconds bigint, may_act_ids text[],
  token_format text,       -- what the target resource takes (tokex.resource.token_format)
  require_dpop boolean)    -- ... and whether only DPoP-bound tokens
LANGUAGE sql STABLE AS $$
WITH
chain AS (  -- each chain position resolved to an identity
  SELECT r.n, r.sub, chain_iat[r.n] AS iat, r.id, r.kind, r.status, r.tokens_valid_after
    FROM tokex._resolve(chain_iss, chain_sub, own_issuer) r
),
identity_problem AS (  -- the first identity problem, in chain order
  SELECT CASE WHEN c.id IS NULL THEN
                pg_catalog.format('%s "%s" is not a known identity',
                                  CASE WHEN c.n OPERATOR(pg_catalog.=) 1 THEN 'subject' ELSE 'actor' END, c.sub)
              WHEN c.status OPERATOR(pg_catalog.<>) 'active' THEN
                pg_catalog.format('identity "%s" is %s', c.id, c.status)
              WHEN c.tokens_valid_after IS NOT NULL AND c.iat IS NOT NULL
                   AND c.iat OPERATOR(pg_catalog.<) c.tokens_valid_after THEN
                pg_catalog.format('token for "%s" was issued before its revocation', c.id)
              WHEN (SELECT pg_catalog.count(*) FROM chain c2
                     WHERE c2.id OPERATOR(pg_catalog.=) c.id) OPERATOR(pg_catalog.>) 1 THEN
                pg_catalog.format('identity "%s" appears twice in the chain', c.id)
         END AS problem
    FROM chain c ORDER BY c.n
),
token_problem AS (  -- revoked or unaudited tokens, a dead session
  SELECT CASE
           -- LIMIT keeps the lookup a per-key index probe in the generic plan
           WHEN EXISTS (SELECT 1 FROM pg_catalog.unnest(revoked_keys) k,
                          LATERAL (SELECT 1 FROM tokex.revoked_token r
                                    WHERE r.key OPERATOR(pg_catalog.=) k LIMIT 1) r) THEN
             'a presented token has been revoked'
           -- a token of ours without its committed audit row was never issued
           WHEN EXISTS (SELECT 1 FROM pg_catalog.unnest(own_jtis) j
                         WHERE NOT EXISTS (SELECT 1 FROM tokex.audit_event a
                                            WHERE a.jti OPERATOR(pg_catalog.=) j
                                              AND a.decision OPERATOR(pg_catalog.=) 'granted')) THEN
             'a presented token has no audit row'
           -- a token obtained with an API key revoked since dies with the key
           WHEN EXISTS (SELECT 1 FROM pg_catalog.unnest(own_jtis) j
                          JOIN tokex.audit_event a ON a.jti OPERATOR(pg_catalog.=) j
                          JOIN tokex.api_key k
                            ON k.key_sha256 OPERATOR(pg_catalog.=) ANY (ARRAY[a.actor_token_sha256,
                                                                               a.subject_token_sha256])
                         WHERE k.revoked_at IS NOT NULL) THEN
             'a presented token was obtained with an API key that has been revoked'
           WHEN _decide.sid IS NOT NULL THEN
             (SELECT CASE WHEN s.id IS NULL THEN 'the session is unknown'
                          WHEN s.revoked_at IS NOT NULL THEN 'the session has been revoked'
                          WHEN s.expires_at OPERATOR(pg_catalog.<=) _decide.at THEN 'the session has expired'
                          WHEN d.revoked_at IS NOT NULL OR d.valid_from OPERATOR(pg_catalog.>) _decide.at
                               OR d.valid_until OPERATOR(pg_catalog.<=) _decide.at THEN
                            pg_catalog.format('the delegation the session was started under (%s) is no longer live', d.id)
                     END
                FROM (SELECT 1) one
                LEFT JOIN tokex.session s ON s.id OPERATOR(pg_catalog.=) _decide.sid
                LEFT JOIN tokex.delegation d ON d.id OPERATOR(pg_catalog.=) s.delegation_id)
         END AS problem
),
ids AS (
  SELECT pg_catalog.array_agg(c.id ORDER BY c.n) AS chain,
         pg_catalog.array_agg(c.kind ORDER BY c.n) AS kinds
    FROM chain c
),
by_audience AS (SELECT r.* FROM tokex.resource r WHERE r.audience OPERATOR(pg_catalog.=) _decide.audience),
by_resource AS (
  SELECT r.* FROM tokex.resource r
   WHERE r.resource_uri OPERATOR(pg_catalog.=) _decide.resource
      OR r.audience OPERATOR(pg_catalog.=) _decide.resource
   ORDER BY r.resource_uri OPERATOR(pg_catalog.=) _decide.resource DESC LIMIT 1),
target AS (  -- the one resource the token is for, or why there is none
  SELECT CASE
           WHEN _decide.audience IS NOT NULL AND NOT EXISTS (SELECT 1 FROM by_audience) THEN
             pg_catalog.format('audience "%s" is not a registered resource', _decide.audience)
           WHEN _decide.resource IS NOT NULL AND NOT EXISTS (SELECT 1 FROM by_resource) THEN
             pg_catalog.format('resource "%s" is not a registered resource', _decide.resource)
           WHEN _decide.audience IS NOT NULL AND _decide.resource IS NOT NULL
                AND (SELECT audience FROM by_audience) OPERATOR(pg_catalog.<>) (SELECT audience FROM by_resource) THEN
             'audience and resource name different targets; a token has exactly one'
         END AS problem,
         COALESCE((SELECT ROW(a.*)::tokex.resource FROM by_audience a),
                  (SELECT ROW(r.*)::tokex.resource FROM by_resource r)) AS r
),
hop AS (  -- for each hop (principal at n, delegate at n+1), the best live delegation
  SELECT p.n, p.id AS principal, q.id AS delegate, d.id AS delegation_id, d.scopes, d.audiences,
         d.max_depth, (pg_catalog.cardinality(chain_sub) OPERATOR(pg_catalog.-) p.n) AS needed
    FROM chain p JOIN chain q ON q.n OPERATOR(pg_catalog.=) (p.n OPERATOR(pg_catalog.+) 1)
    LEFT JOIN LATERAL (
      SELECT d.* FROM tokex.delegation d
       WHERE d.principal OPERATOR(pg_catalog.=) p.id AND d.delegate OPERATOR(pg_catalog.=) q.id
         AND d.revoked_at IS NULL
         AND d.valid_from OPERATOR(pg_catalog.<=) _decide.at
         AND (d.valid_until IS NULL OR d.valid_until OPERATOR(pg_catalog.>) _decide.at)
       ORDER BY d.max_depth OPERATOR(pg_catalog.>=) (pg_catalog.cardinality(chain_sub) OPERATOR(pg_catalog.-) p.n) DESC,
                (d.audiences IS NULL
                 OR (SELECT (r).audience FROM target) OPERATOR(pg_catalog.=) ANY (d.audiences)) DESC,
                d.id
       LIMIT 1) d ON true
),
hop_problem AS (
  SELECT CASE
           WHEN h.delegation_id IS NULL THEN
             pg_catalog.format('no live delegation from "%s" to "%s"', h.principal, h.delegate)
           WHEN h.max_depth OPERATOR(pg_catalog.<) h.needed THEN
             pg_catalog.format('delegation %s from "%s" to "%s" allows %s hop(s), the chain needs %s',
                               h.delegation_id, h.principal, h.delegate, h.max_depth, h.needed)
         END AS grant_problem,
         CASE WHEN h.audiences IS NOT NULL
                   AND NOT ((SELECT (r).audience FROM target) OPERATOR(pg_catalog.=) ANY (h.audiences)) THEN
             pg_catalog.format('delegation %s does not cover audience "%s"', h.delegation_id,
                               (SELECT (r).audience FROM target))
         END AS target_problem
    FROM hop h ORDER BY h.n
),
subject AS (SELECT c.id, c.kind FROM chain c WHERE c.n OPERATOR(pg_catalog.=) 1),
actor AS (  -- the current (outermost) actor, if any
  SELECT c.id, c.kind FROM chain c
   WHERE c.n OPERATOR(pg_catalog.=) pg_catalog.cardinality(chain_sub) AND c.n OPERATOR(pg_catalog.>) 1
),
policy_here AS NOT MATERIALIZED (  -- policy rows matching this exchange in everything but the audience
  SELECT p.* FROM tokex.policy p
   WHERE (p.subject IS NULL OR p.subject OPERATOR(pg_catalog.=) (SELECT id FROM subject))
     AND (p.subject_kind IS NULL OR p.subject_kind OPERATOR(pg_catalog.=) (SELECT kind FROM subject))
     AND (p.actor IS NULL OR p.actor OPERATOR(pg_catalog.=) (SELECT id FROM actor))
     AND (p.actor_kind IS NULL OR p.actor_kind OPERATOR(pg_catalog.=) (SELECT kind FROM actor))
     AND (p.client_id IS NULL OR p.client_id OPERATOR(pg_catalog.=) _decide.client_id)
     AND (p.max_depth IS NULL
          OR pg_catalog.cardinality(chain_sub) OPERATOR(pg_catalog.-) 1 OPERATOR(pg_catalog.<=) p.max_depth)
     AND (p.valid IS NULL OR p.valid OPERATOR(pg_catalog.@>) _decide.at)
),
policy AS (  -- ... and the audience too: the rows that decide
  SELECT p.* FROM policy_here p
   WHERE (p.audience IS NULL OR p.audience OPERATOR(pg_catalog.=) (SELECT (r).audience FROM target))
     -- found by index, not by reading every policy: the rows naming this
     -- subject, else this actor, else this audience, else none of the three
     -- (disjoint, and together every row that can match)
     AND p.id OPERATOR(pg_catalog.=) ANY (ARRAY(
           SELECT q.id FROM tokex.policy q WHERE q.subject OPERATOR(pg_catalog.=) (SELECT id FROM subject)
           UNION ALL
           SELECT q.id FROM tokex.policy q
            WHERE q.subject IS NULL AND q.actor OPERATOR(pg_catalog.=) (SELECT id FROM actor)
           UNION ALL
           SELECT q.id FROM tokex.policy q
            WHERE q.subject IS NULL AND q.actor IS NULL
              AND q.audience OPERATOR(pg_catalog.=) (SELECT (r).audience FROM target)
           UNION ALL
           SELECT q.id FROM tokex.policy q WHERE q.subject IS NULL AND q.actor IS NULL AND q.audience IS NULL))
),
-- allow rows that would match but for the audience: the target is what is refused
allow_elsewhere AS (
  SELECT 1 FROM policy_here p
   WHERE p.effect OPERATOR(pg_catalog.=) 'allow' AND p.audience IS NOT NULL
   LIMIT 1
),
deny_all AS (
  SELECT p.id FROM policy p
   WHERE p.effect OPERATOR(pg_catalog.=) 'deny' AND p.scopes IS NULL
   ORDER BY p.priority DESC, p.id LIMIT 1
),
allow AS (SELECT p.* FROM policy p WHERE p.effect OPERATOR(pg_catalog.=) 'allow'),
-- the scopes that survive every bound: resource, each hop's delegation,
-- the subject token, the allow policies (NULL scopes = no bound), minus denies
bound AS (
  SELECT ARRAY(
    SELECT s FROM pg_catalog.unnest((SELECT (r).scopes FROM target)) AS s
     WHERE NOT EXISTS (SELECT 1 FROM hop h WHERE NOT (s OPERATOR(pg_catalog.=) ANY (h.scopes)))
       AND (token_scope IS NULL OR s OPERATOR(pg_catalog.=) ANY (token_scope))
       AND (EXISTS (SELECT 1 FROM allow a WHERE a.scopes IS NULL)
            OR EXISTS (SELECT 1 FROM allow a WHERE s OPERATOR(pg_catalog.=) ANY (a.scopes)))
       AND NOT EXISTS (SELECT 1 FROM policy p
                        WHERE p.effect OPERATOR(pg_catalog.=) 'deny' AND s OPERATOR(pg_catalog.=) ANY (p.scopes))
     ORDER BY s) AS scopes
),
granted AS (
  SELECT CASE WHEN requested_scope IS NULL THEN (SELECT scopes FROM bound)
              ELSE ARRAY(SELECT DISTINCT s FROM pg_catalog.unnest(requested_scope) s ORDER BY s) END AS scopes,
         ARRAY(SELECT DISTINCT s FROM pg_catalog.unnest(requested_scope) s
                WHERE NOT (s OPERATOR(pg_catalog.=) ANY ((SELECT scopes FROM bound)::pg_catalog.text[])) ORDER BY s) AS refused
),
client AS (
  SELECT cl.* FROM tokex.client cl WHERE cl.client_id OPERATOR(pg_catalog.=) _decide.client_id
),
verdict AS (
  SELECT
    CASE
      WHEN _decide.client_id IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM client WHERE client.status OPERATOR(pg_catalog.=) 'active') THEN
        ARRAY['unauthorized_client', pg_catalog.format('client "%s" is not registered or not active', _decide.client_id)]
      -- (COALESCE: grant_types holding a NULL and not the grant is no permission)
      WHEN EXISTS (SELECT 1 FROM client WHERE NOT COALESCE('urn:ietf:params:oauth:grant-type:token-exchange'
                                                  OPERATOR(pg_catalog.=) ANY (client.grant_types), false)) THEN
        ARRAY['unauthorized_client', pg_catalog.format('client "%s" may not use token exchange', _decide.client_id)]
      WHEN EXISTS (SELECT 1 FROM hop_problem WHERE grant_problem IS NOT NULL) THEN
        ARRAY['invalid_grant', (SELECT grant_problem FROM hop_problem WHERE grant_problem IS NOT NULL LIMIT 1)]
      WHEN (SELECT problem FROM target) IS NOT NULL THEN
        ARRAY['invalid_target', (SELECT problem FROM target)]
      WHEN EXISTS (SELECT 1 FROM hop_problem WHERE target_problem IS NOT NULL) THEN
        ARRAY['invalid_target', (SELECT target_problem FROM hop_problem WHERE target_problem IS NOT NULL LIMIT 1)]
      WHEN EXISTS (SELECT 1 FROM client WHERE client.audiences IS NOT NULL
                     AND NOT ((SELECT (r).audience FROM target) OPERATOR(pg_catalog.=) ANY (client.audiences))) THEN
        ARRAY['invalid_target', pg_catalog.format('client "%s" may not obtain tokens for "%s"',
                                                  _decide.client_id, (SELECT (r).audience FROM target))]
      WHEN EXISTS (SELECT 1 FROM deny_all) THEN
        ARRAY['invalid_grant', pg_catalog.format('denied by policy %s', (SELECT id FROM deny_all))]
      WHEN NOT EXISTS (SELECT 1 FROM allow) AND EXISTS (SELECT 1 FROM allow_elsewhere) THEN
        ARRAY['invalid_target', pg_catalog.format('no policy allows audience "%s" here',
                                                  (SELECT (r).audience FROM target))]
      WHEN NOT EXISTS (SELECT 1 FROM allow) THEN
        ARRAY['invalid_grant', 'no policy allows this exchange']
      WHEN pg_catalog.cardinality((SELECT refused FROM granted)) OPERATOR(pg_catalog.>) 0 THEN
        ARRAY['invalid_scope', pg_catalog.format('scope not grantable: %s',
                                                 pg_catalog.array_to_string((SELECT refused FROM granted), ' '))]
      WHEN pg_catalog.cardinality((SELECT scopes FROM granted)) OPERATOR(pg_catalog.=) 0 THEN
        ARRAY['invalid_scope', 'no scope can be granted for this audience']
    END AS v
)
SELECT COALESCE((SELECT problem FROM token_problem),
                (SELECT problem FROM identity_problem WHERE problem IS NOT NULL LIMIT 1)),
       (SELECT v[1] FROM verdict), (SELECT v[2] FROM verdict),
       ids.chain, ids.kinds,
       ARRAY(SELECT h.delegation_id FROM hop h WHERE h.delegation_id IS NOT NULL ORDER BY h.n),
       ARRAY(SELECT p.id FROM policy p ORDER BY p.id),
       (SELECT (r).audience FROM target),
       (SELECT scopes FROM granted),
       (SELECT pg_catalog.floor(EXTRACT(epoch FROM (r).token_ttl))::pg_catalog.int8 FROM target),
       (SELECT pg_catalog.array_agg(m.id ORDER BY m.n)
          FROM tokex._resolve(may_act_iss, may_act_sub, own_issuer) m),
       (SELECT (r).token_format FROM target),
       (SELECT (r).require_dpop FROM target)
  FROM ids
$$;

-- The decision for an administrator to run by hand and see why: the same
-- query, as the extension owner (an administrator may not read every table
-- it reads, such as the clients' secret hashes) and with a pinned
-- search_path (a caller's objects cannot stand in for pg_catalog's).  Its
-- arguments and result are _decide's, read from the catalog so that they
-- are written once.
DO $do$
BEGIN
  EXECUTE (
    SELECT pg_catalog.format(
             'CREATE FUNCTION tokex.decide(%s) RETURNS %s '
             'LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp '
             'AS $w$ SELECT * FROM tokex._decide(%s) $w$',
             pg_catalog.pg_get_function_arguments(p.oid), pg_catalog.pg_get_function_result(p.oid),
             pg_catalog.array_to_string(p.proargnames[1:p.pronargs], ', '))
      FROM pg_catalog.pg_proc p
     WHERE p.oid OPERATOR(pg_catalog.=) 'tokex._decide'::pg_catalog.regproc);
END
$do$;

REVOKE ALL ON FUNCTION tokex._decide(text[], text[], timestamptz[], text, text, text[], text[], text, text, bytea[], uuid,
                                     uuid[], text[], text[], timestamptz),
  tokex.decide(text[], text[], timestamptz[], text, text, text[], text[], text, text, bytea[], uuid,
               uuid[], text[], text[], timestamptz) FROM PUBLIC;

GRANT EXECUTE ON FUNCTION tokex.decide(text[], text[], timestamptz[], text, text, text[], text[], text, text, bytea[], uuid,
                                        uuid[], text[], text[], timestamptz)
  TO tokex_admin;

CREATE FUNCTION tokex.exchange(
  subject_token text, subject_token_type text,
  actor_token text DEFAULT NULL, actor_token_type text DEFAULT NULL,
  audience text DEFAULT NULL, resource text DEFAULT NULL, scope text DEFAULT NULL,
  requested_token_type text DEFAULT NULL, client_id text DEFAULT NULL,
  -- a transaction token's tctx and rctx (draft-ietf-oauth-transaction-tokens)
  request_details jsonb DEFAULT NULL, request_context jsonb DEFAULT NULL,
  -- a DPoP proof (RFC 9449) for POST to the token endpoint: the token is bound to its key
  dpop_proof text DEFAULT NULL)
RETURNS jsonb
LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp
AS 'MODULE_PATHNAME', 'tokex_exchange';

CREATE FUNCTION tokex._exchange_for_client(
  subject_token text, subject_token_type text, actor_token text, actor_token_type text,
  audience text, resource text, scope text, requested_token_type text, client_id text,
  request_details jsonb, request_context jsonb, dpop_proof text)
RETURNS jsonb
LANGUAGE C VOLATILE AS 'MODULE_PATHNAME', 'tokex_exchange_for_client';

REVOKE ALL ON FUNCTION tokex.exchange(text, text, text, text, text, text, text, text, text, jsonb, jsonb, text),
  tokex._exchange_for_client(text, text, text, text, text, text, text, text, text, jsonb, jsonb, text) FROM PUBLIC;

GRANT EXECUTE ON FUNCTION tokex.exchange(text, text, text, text, text, text, text, text, text, jsonb, jsonb, text)
  TO tokex_app, tokex_admin;

CREATE FUNCTION tokex_api.token(
  grant_type text DEFAULT NULL,
  subject_token text DEFAULT NULL, subject_token_type text DEFAULT NULL,
  actor_token text DEFAULT NULL, actor_token_type text DEFAULT NULL,
  audience text DEFAULT NULL, resource text DEFAULT NULL, scope text DEFAULT NULL,
  requested_token_type text DEFAULT NULL,
  client_id text DEFAULT NULL, client_secret text DEFAULT NULL,
  client_assertion text DEFAULT NULL, client_assertion_type text DEFAULT NULL,
  request_details text DEFAULT NULL, request_context text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
DECLARE
  a record;
  r jsonb;
  details jsonb;
  context jsonb;
  nonce text;
  -- the audit rows of a client_credentials request say so, refused or not
  op text := CASE WHEN grant_type OPERATOR(pg_catalog.=) 'client_credentials'
                  THEN 'client_credentials' ELSE 'exchange' END;
BEGIN
  IF tokex._not_post() THEN
    RETURN tokex._refuse('invalid_request', 'the token endpoint takes POST', 405, NULL, token.audience, op);
  END IF;
  SELECT * INTO a FROM tokex._authenticate(token.client_id, client_secret, client_assertion,
                                           client_assertion_type, tokex._endpoint('/rpc/token'));
  IF a.client IS NULL OR (a.client).client_id IS NULL THEN
    RETURN tokex._refuse('invalid_client', a.why, 401, NULL, token.audience, op, claimed => a.claimed_id);
  ELSIF grant_type IS NULL THEN
    RETURN tokex._refuse('invalid_request', 'grant_type is required', 400, (a.client).client_id, token.audience);
  ELSIF grant_type NOT IN ('urn:ietf:params:oauth:grant-type:token-exchange', 'client_credentials') THEN
    RETURN tokex._refuse('unsupported_grant_type', 'unsupported grant_type', 400, (a.client).client_id,
                         token.audience);
  ELSIF NOT (grant_type OPERATOR(pg_catalog.=) ANY ((a.client).grant_types)) THEN
    RETURN tokex._refuse('unauthorized_client', 'the client may not use this grant_type', 400,
                         (a.client).client_id, token.audience, op);
  ELSIF tokex._repeated_target() IS NOT NULL THEN
    RETURN tokex._refuse('invalid_target', 'exactly one audience or resource may be requested', 400,
                         (a.client).client_id, token.audience, op,
                         reason => tokex._repeated_target() OPERATOR(pg_catalog.||) ' given more than once');
  END IF;

  IF grant_type OPERATOR(pg_catalog.=) 'client_credentials' THEN
    -- an actor token for the identity the client acts for (RFC 6749 §4.4)
    r := tokex._client_credentials((a.client).client_id, token.scope, token.audience, token.resource);
    RETURN tokex._respond(r, CASE WHEN r ? 'error' THEN 400 ELSE 200 END);
  END IF;

  -- a transaction token's request_details and request_context: JSON objects
  BEGIN
    details := request_details::jsonb;
    context := request_context::jsonb;
  EXCEPTION WHEN invalid_text_representation THEN
    details := '[]'; context := '[]';
  END;
  IF pg_catalog.jsonb_typeof(details) OPERATOR(pg_catalog.<>) 'object'
     OR pg_catalog.jsonb_typeof(context) OPERATOR(pg_catalog.<>) 'object' THEN
    RETURN tokex._refuse('invalid_request', 'request_details and request_context are JSON objects', 400,
                         (a.client).client_id, token.audience, op);
  END IF;

  -- RFC 9449 §4.1: the proof travels in the DPoP header
  r := tokex._exchange_for_client(subject_token, subject_token_type, actor_token, actor_token_type,
                      token.audience, token.resource, token.scope, requested_token_type,
                      (a.client).client_id, details, context,
                      NULLIF(pg_catalog.current_setting('request.headers', true), '')::jsonb->>'dpop');
  nonce := r->>'dpop_nonce';
  r := tokex._respond(r - 'dpop_nonce', CASE WHEN r ? 'error' THEN 400 ELSE 200 END);
  IF nonce IS NOT NULL THEN
    -- RFC 9449 §8: the server's nonce travels in the DPoP-Nonce header
    PERFORM pg_catalog.set_config('response.headers',
      (pg_catalog.current_setting('response.headers')::jsonb
       OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object('DPoP-Nonce', nonce)))::text,
      true);
  END IF;
  RETURN r;
END
$$;

REVOKE ALL ON FUNCTION tokex_api.token(text, text, text, text, text, text, text, text, text, text, text, text, text,
                                       text, text) FROM PUBLIC;

GRANT EXECUTE ON FUNCTION tokex_api.token(text, text, text, text, text, text, text, text, text, text, text, text, text,
                                          text, text) TO tokex_web;

CREATE OR REPLACE FUNCTION tokex._token_endpoint(operation text, token text, client_id text, client_secret text,
                                      client_assertion text, client_assertion_type text)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, tokex, pg_temp AS $$
DECLARE
  c record;
  r jsonb;
  claims jsonb;
BEGIN
  SELECT * INTO c FROM tokex._client_with_token('/rpc/' OPERATOR(pg_catalog.||) operation, token, client_id,
                                                client_secret, client_assertion, client_assertion_type);
  IF c.refusal IS NOT NULL THEN
    RETURN c.refusal;
  END IF;
  IF operation OPERATOR(pg_catalog.=) 'introspect' THEN
    r := tokex.introspect(token);
    IF (r->>'active')::boolean AND NOT tokex._may_introspect(c.client, r) THEN
      r := '{"active": false}';
    END IF;
    RETURN tokex._respond(r);
  END IF;
  IF token LIKE 'tkx\_at\_%' THEN
    -- a reference token: its claims, while it is live
    claims := tokex.introspect(token);
    IF NOT COALESCE((claims->>'active')::boolean, false) THEN
      claims := NULL;
    END IF;
  ELSE
    BEGIN
      claims := tokex.jwt_verify(token);
    EXCEPTION WHEN invalid_authorization_specification THEN
      claims := NULL;           -- invalid or unknown: nothing to revoke (RFC 7009 §2.2)
    END;
  END IF;
  IF claims IS NOT NULL AND claims->>'jti' IS NOT NULL THEN
    IF NOT tokex._issued_to((c.client).client_id, claims) THEN
      RETURN tokex._refuse('unauthorized_client', 'the token was not issued to this client', 400,
                           (c.client).client_id,
                           CASE pg_catalog.jsonb_typeof(claims->'aud') WHEN 'string' THEN claims->>'aud' END,
                           'revoke');
    END IF;
    PERFORM tokex.revoke_token(token, 'revoked by client ' OPERATOR(pg_catalog.||) (c.client).client_id);
  END IF;
  RETURN tokex._respond('{}'::jsonb);
END
$$;

GRANT EXECUTE ON FUNCTION tokex.create_api_key(text, timestamptz, text), tokex.revoke_api_key(text, text)
  TO tokex_admin;

GRANT SELECT, UPDATE (label, expires_at, revoked_at, revoke_reason) ON tokex.api_key TO tokex_admin;

GRANT SELECT ON tokex.api_key TO tokex_auditor;

GRANT EXECUTE ON FUNCTION tokex.register_token_type(text, regprocedure, text) TO tokex_admin;

GRANT SELECT, INSERT, UPDATE, DELETE ON tokex.token_type TO tokex_admin;

GRANT SELECT ON tokex.token_type TO tokex_auditor;

------------------------------------------------------------------------
-- The credential vault (src/sql/60_vault.sql): its table, functions and
-- privileges, new in 0.3 (revocations of kind 'credential' above)
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

------------------------------------------------------------------------
-- Performance (issue 12): the verified-token cache's figures
------------------------------------------------------------------------
CREATE FUNCTION tokex._verified_token_cache(OUT entries bigint, OUT hits bigint, OUT misses bigint)
  LANGUAGE C VOLATILE AS 'MODULE_PATHNAME', 'tokex_verified_token_cache';

REVOKE ALL ON FUNCTION tokex._verified_token_cache() FROM PUBLIC;

-- the decision finds an exchange's policy rows by index (tokex._decide above)
CREATE INDEX policy_by_subject ON tokex.policy (subject);

CREATE INDEX policy_by_actor ON tokex.policy (actor) WHERE subject IS NULL;

CREATE INDEX policy_by_audience ON tokex.policy (audience) WHERE subject IS NULL AND actor IS NULL;

CREATE INDEX policy_unbound ON tokex.policy (id) WHERE subject IS NULL AND actor IS NULL AND audience IS NULL;

------------------------------------------------------------------------
-- DPoP (issue 14; src/dpop.c): sender-constrained tokens (the exchange,
-- resource and audit columns are above)
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

CREATE OR REPLACE FUNCTION tokex_api.oauth_authorization_server() RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
DECLARE
  auth_methods jsonb := '["client_secret_basic", "client_secret_post", "private_key_jwt"]';
  signing jsonb := '["ES256", "ES384", "ES512", "EdDSA", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512"]';
BEGIN
  PERFORM pg_catalog.set_config('response.headers', '[{"Cache-Control": "public, max-age=300"}]', true);
  RETURN pg_catalog.jsonb_build_object(
    'issuer', tokex._issuer(),
    'token_endpoint', tokex._endpoint('/rpc/token'),
    'introspection_endpoint', tokex._endpoint('/rpc/introspect'),
    'revocation_endpoint', tokex._endpoint('/rpc/revoke'),
    'jwks_uri', tokex._endpoint('/rpc/jwks'),
    'grant_types_supported', '["urn:ietf:params:oauth:grant-type:token-exchange", "client_credentials"]'::jsonb,
    'response_types_supported', '[]'::jsonb,
    'token_endpoint_auth_methods_supported', auth_methods,
    'token_endpoint_auth_signing_alg_values_supported', signing,
    'introspection_endpoint_auth_signing_alg_values_supported', signing,
    'revocation_endpoint_auth_signing_alg_values_supported', signing,
    'introspection_endpoint_auth_methods_supported', auth_methods,
    'revocation_endpoint_auth_methods_supported', auth_methods,
    'scopes_supported', (SELECT COALESCE(pg_catalog.jsonb_agg(DISTINCT s ORDER BY s), '[]'::jsonb)
                           FROM tokex.resource r, pg_catalog.unnest(r.scopes) s),
    'token_exchange_token_types_supported', '["urn:ietf:params:oauth:token-type:jwt",
       "urn:ietf:params:oauth:token-type:access_token", "urn:ietf:params:oauth:token-type:id_token",
       "urn:tokex:token-type:api_key"]'::jsonb
       OPERATOR(pg_catalog.||) (SELECT COALESCE(pg_catalog.jsonb_agg(t.token_type ORDER BY t.token_type), '[]')
                                  FROM tokex.token_type t),
    'token_exchange_issued_token_types_supported', '["urn:ietf:params:oauth:token-type:access_token",
       "urn:ietf:params:oauth:token-type:jwt", "urn:ietf:params:oauth:token-type:txn_token",
       "urn:tokex:token-type:credential"]'::jsonb,
    -- RFC 9449 §5.1: the algorithms of DPoP proofs (asymmetric only)
    'dpop_signing_alg_values_supported', signing);
END
$$;

------------------------------------------------------------------------
-- The resource side in SQL (src/resource.c): a PostgreSQL-backed API checks
-- the token it received, and its row-level security asks on whose behalf,
-- by which agent and with what scope the transaction runs.
------------------------------------------------------------------------

-- Check a token for this database's audience (tokex.resource_audience),
-- live as introspection finds it, and for a DPoP-bound one its proof for
-- this request (method, url; ath); keep its claims for this transaction.
-- Returns the claims; else 28000 invalid token, and nothing is kept.
CREATE FUNCTION tokex.authenticate(token text, dpop_proof text DEFAULT NULL, method text DEFAULT NULL,
                                   url text DEFAULT NULL) RETURNS jsonb
LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp
AS 'MODULE_PATHNAME', 'tokex_authenticate';

-- What tokex.authenticate kept for this transaction; NULL (false) when nothing.
CREATE FUNCTION tokex.on_behalf_of() RETURNS text
  LANGUAGE C STABLE PARALLEL RESTRICTED AS 'MODULE_PATHNAME', 'tokex_on_behalf_of';

CREATE FUNCTION tokex.current_actor() RETURNS text
  LANGUAGE C STABLE PARALLEL RESTRICTED AS 'MODULE_PATHNAME', 'tokex_current_actor';

-- the actors from the first (acting for the person) to the current one
CREATE FUNCTION tokex.actor_chain() RETURNS text[]
  LANGUAGE C STABLE PARALLEL RESTRICTED AS 'MODULE_PATHNAME', 'tokex_actor_chain';

CREATE FUNCTION tokex.has_scope(scope text) RETURNS boolean
  LANGUAGE C STABLE PARALLEL RESTRICTED AS 'MODULE_PATHNAME', 'tokex_has_scope';

CREATE FUNCTION tokex.token_claims() RETURNS jsonb
  LANGUAGE C STABLE PARALLEL RESTRICTED AS 'MODULE_PATHNAME', 'tokex_token_claims';

REVOKE ALL ON FUNCTION tokex.authenticate(text, text, text, text), tokex.on_behalf_of(), tokex.current_actor(),
  tokex.actor_chain(), tokex.has_scope(text), tokex.token_claims() FROM PUBLIC;

DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) 'tokex_resource') THEN
    CREATE ROLE tokex_resource NOLOGIN;
  END IF;
END
$$;

GRANT USAGE ON SCHEMA tokex TO tokex_resource;

GRANT EXECUTE ON FUNCTION tokex.authenticate(text, text, text, text), tokex.on_behalf_of(), tokex.current_actor(),
  tokex.actor_chain(), tokex.has_scope(text), tokex.token_claims() TO tokex_resource, tokex_admin;

-- DPoP nonces (tokex.dpop_nonce): their key, made at the update
CREATE TABLE tokex.dpop_secret (
  id     integer PRIMARY KEY CHECK (id = 1),
  secret bytea NOT NULL CHECK (pg_catalog.length(secret) >= 32)
);

CREATE FUNCTION tokex._random_bytes(n integer) RETURNS bytea
  LANGUAGE C VOLATILE STRICT AS 'MODULE_PATHNAME', 'tokex_random_bytes';

REVOKE ALL ON FUNCTION tokex._random_bytes(integer) FROM PUBLIC;

INSERT INTO tokex.dpop_secret VALUES (1, tokex._random_bytes(32));



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


------------------------------------------------------------------------
-- Shared Signals (SSF/CAEP): streams, live tokens of receivers, events,
-- poll delivery (src/sql/75_ssf.sql)
------------------------------------------------------------------------
-- A receiver: the resource (audience) whose tokens it validates.
CREATE TABLE tokex.ssf_stream (
  stream_id        uuid PRIMARY KEY DEFAULT pg_catalog.gen_random_uuid(),
  audience         text NOT NULL UNIQUE
                   REFERENCES tokex.resource (audience) ON UPDATE CASCADE ON DELETE CASCADE,
  -- the SETs' aud; NULL: the audience (what the receiver's tokens carry)
  aud              text[] CHECK (pg_catalog.cardinality(aud) > 0 AND pg_catalog.array_position(aud, NULL) IS NULL),
  delivery_method  text NOT NULL DEFAULT 'urn:ietf:rfc:8936' CHECK (delivery_method IN ('urn:ietf:rfc:8936')),
  events_requested text[] NOT NULL
                   DEFAULT '{https://schemas.openid.net/secevent/caep/event-type/session-revoked}'
                   CHECK (pg_catalog.array_position(events_requested, NULL) IS NULL),
  -- enabled: events made and delivered; paused: made and held; disabled: none made
  status           text NOT NULL DEFAULT 'enabled' CHECK (status IN ('enabled', 'paused', 'disabled')),
  status_reason    text,
  -- the clients (tokex.client) that may poll and manage this stream
  clients          text[] NOT NULL DEFAULT '{}' CHECK (pg_catalog.array_position(clients, NULL) IS NULL),
  description      text,
  created_at       timestamptz NOT NULL DEFAULT pg_catalog.now(),
  updated_at       timestamptz NOT NULL DEFAULT pg_catalog.now()
);

-- Live tokens that receivers hold: the granted audit rows of stream
-- audiences, copied as the audit writer commits them (tokex._ssf_track), so
-- that a revocation finds the tokens it kills by index, not by scanning
-- the audit.  A row leaves when its token expires or is named in an event.
CREATE TABLE tokex.ssf_token (
  jti            uuid PRIMARY KEY,
  stream_id      uuid NOT NULL REFERENCES tokex.ssf_stream (stream_id) ON DELETE CASCADE,
  issued_at      timestamptz NOT NULL,
  expires_at     timestamptz NOT NULL,
  subject        text,
  actor          text,
  actor_chain    text[],
  client_id      text,
  scope          text[],
  sid            text,
  delegation_ids bigint[],
  policy_ids     bigint[],
  kid            text          -- the key active when the audit writer committed it
);

CREATE INDEX ssf_token_stream ON tokex.ssf_token (stream_id);

CREATE INDEX ssf_token_subject ON tokex.ssf_token (subject);

CREATE INDEX ssf_token_actors ON tokex.ssf_token USING gin (actor_chain);

CREATE INDEX ssf_token_sid ON tokex.ssf_token (sid) WHERE sid IS NOT NULL;

CREATE INDEX ssf_token_delegations ON tokex.ssf_token USING gin (delegation_ids);

CREATE INDEX ssf_token_expiry ON tokex.ssf_token (expires_at);

-- One SET per (receiver, revocation), in the order made (id).  claims are
-- the SET's claims but iss, jti and the event's list of tokens (jtis), which
-- are added when it is signed at delivery (tokex._ssf_set_claims): a
-- revocation of 10 000 tokens stores an array, not 10 000 JSON objects.
CREATE TABLE tokex.ssf_event (
  id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  jti           uuid NOT NULL UNIQUE DEFAULT pg_catalog.gen_random_uuid(),
  stream_id     uuid NOT NULL REFERENCES tokex.ssf_stream (stream_id) ON DELETE CASCADE,
  revocation_id bigint,         -- NULL: a policy change
  created_at    timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
  claims        jsonb NOT NULL,
  jtis          uuid[] NOT NULL,  -- the tokens it names, in the order issued
  -- the latest exp of the tokens it names: after it, there is nothing to drop
  expires_at    timestamptz NOT NULL,
  delivered_at  timestamptz,
  acked_at      timestamptz,
  -- RFC 8936 setErrs: the receiver's {"err": ..., "description": ...}
  set_error     jsonb
);

CREATE INDEX ssf_event_pending ON tokex.ssf_event (stream_id, id) WHERE acked_at IS NULL;

CREATE INDEX ssf_event_acked ON tokex.ssf_event (acked_at) WHERE acked_at IS NOT NULL;

-- ssf_token is not dumped: it is derived from the audit, and a restored
-- stream rebuilds it (tokex._ssf_stream_backfill)
SELECT pg_catalog.pg_extension_config_dump('tokex.ssf_stream', '');

SELECT pg_catalog.pg_extension_config_dump('tokex.ssf_event', '');

SELECT pg_catalog.pg_extension_config_dump('tokex.ssf_event_id_seq', '');

CREATE FUNCTION tokex._ssf_stream_touch() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, tokex, pg_temp AS $$
BEGIN
  NEW.updated_at := pg_catalog.now();
  RETURN NEW;
END
$$;

CREATE TRIGGER ssf_stream_touch BEFORE UPDATE ON tokex.ssf_stream
  FOR EACH ROW EXECUTE FUNCTION tokex._ssf_stream_touch();

-- A stream starts with the live tokens already issued for its audience (a
-- one-time read of the audit).
CREATE FUNCTION tokex._ssf_stream_backfill() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
BEGIN
  INSERT INTO tokex.ssf_token (jti, stream_id, issued_at, expires_at, subject, actor, actor_chain, client_id,
                               scope, sid, delegation_ids, policy_ids)
  SELECT a.jti, NEW.stream_id, a.at, a.expires_at, a.subject, a.actor, a.actor_chain, a.client_id,
         a.scope, a.subject_sid, a.delegation_ids, a.policy_ids
    FROM tokex.audit_event a
   WHERE a.audience OPERATOR(pg_catalog.=) NEW.audience AND a.decision OPERATOR(pg_catalog.=) 'granted'
     AND a.jti IS NOT NULL AND a.expires_at OPERATOR(pg_catalog.>) pg_catalog.clock_timestamp()
  ON CONFLICT (jti) DO NOTHING;
  RETURN NULL;
END
$$;

CREATE TRIGGER ssf_stream_backfill AFTER INSERT ON tokex.ssf_stream
  FOR EACH ROW EXECUTE FUNCTION tokex._ssf_stream_backfill();

-- An event inserted from outside a revocation (pg_restore, which loads a
-- stream, and so its backfill, before its events): the tokens it names
-- are no longer live for it.
CREATE FUNCTION tokex._ssf_event_named() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
BEGIN
  DELETE FROM tokex.ssf_token t WHERE t.jti OPERATOR(pg_catalog.=) ANY (NEW.jtis);
  RETURN NULL;
END
$$;

CREATE TRIGGER ssf_event_named AFTER INSERT ON tokex.ssf_event
  FOR EACH ROW WHEN (pg_catalog.pg_trigger_depth() = 0) EXECUTE FUNCTION tokex._ssf_event_named();

-- Runs in the audit writer's transaction, once per batch of rows: what it
-- adds to issuing a token is one join against ssf_stream per batch, and an
-- insert only for tokens of a stream's audience.  It must not fail (a
-- failure would refuse the batch's tokens): ON CONFLICT, no casts, and a
-- stream deleted while the batch was being written is just not tracked
-- (the second attempt no longer sees it).
CREATE FUNCTION tokex._ssf_track() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
BEGIN
  -- no stream at all (the common case): no subtransaction, no join
  IF NOT EXISTS (SELECT 1 FROM tokex.ssf_stream) THEN
    RETURN NULL;
  END IF;
  FOR attempt IN 1..2 LOOP
    BEGIN
      INSERT INTO tokex.ssf_token (jti, stream_id, issued_at, expires_at, subject, actor, actor_chain, client_id,
                                   scope, sid, delegation_ids, policy_ids, kid)
      SELECT n.jti, s.stream_id, n.at, n.expires_at, n.subject, n.actor, n.actor_chain, n.client_id,
             n.scope, n.subject_sid, n.delegation_ids, n.policy_ids,
             (SELECT k.kid FROM tokex.key k WHERE k.status OPERATOR(pg_catalog.=) 'active')
        FROM ssf_new_rows n JOIN tokex.ssf_stream s ON s.audience OPERATOR(pg_catalog.=) n.audience
       WHERE n.decision OPERATOR(pg_catalog.=) 'granted' AND n.jti IS NOT NULL
         AND n.expires_at OPERATOR(pg_catalog.>) pg_catalog.clock_timestamp()
      ON CONFLICT (jti) DO NOTHING;
      RETURN NULL;
    EXCEPTION WHEN foreign_key_violation THEN
      IF attempt OPERATOR(pg_catalog.=) 2 THEN
        RAISE WARNING 'tokex: tokens of a stream deleted meanwhile are not tracked';
      END IF;
    END;
  END LOOP;
  RETURN NULL;
END
$$;

CREATE TRIGGER audit_event_ssf AFTER INSERT ON tokex.audit_event
  REFERENCING NEW TABLE AS ssf_new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION tokex._ssf_track();

-- Does policy row p match the exchange that minted token t (for audience,
-- its subject and actor being of these kinds), at time at?  The matching of
-- tokex._decide's policy_here/policy, on what the audit row recorded.  No
-- SET search_path, no subquery, nothing volatile (every name is qualified),
-- so that the planner inlines it into the scan of the live tokens that a
-- policy change makes.
CREATE FUNCTION tokex._ssf_policy_matches(p tokex.policy, t tokex.ssf_token, audience text,
                                          subject_kind text, actor_kind text, at timestamptz) RETURNS boolean
LANGUAGE sql STABLE AS $$
  SELECT (p.subject IS NULL OR p.subject OPERATOR(pg_catalog.=) t.subject)
     AND (p.subject_kind IS NULL OR p.subject_kind OPERATOR(pg_catalog.=) subject_kind)
     AND (p.actor IS NULL OR p.actor OPERATOR(pg_catalog.=) t.actor)
     AND (p.actor_kind IS NULL OR p.actor_kind OPERATOR(pg_catalog.=) actor_kind)
     AND (p.audience IS NULL OR p.audience OPERATOR(pg_catalog.=) audience)
     AND (p.client_id IS NULL OR p.client_id OPERATOR(pg_catalog.=) t.client_id)
     AND (p.max_depth IS NULL
          OR COALESCE(pg_catalog.cardinality(t.actor_chain), 0) OPERATOR(pg_catalog.<=) p.max_depth)
     AND (p.valid IS NULL OR p.valid OPERATOR(pg_catalog.@>) at)
$$;

-- The live tokens of every stream that revocation rev kills.  One branch
-- per kind of tokex.revocation; a kind without a branch names no token.
-- A new kind (an API key, say) is one more WHEN here, one in
-- tokex._ssf_subject, and a trigger that logs it in tokex.revocation.
CREATE FUNCTION tokex._ssf_affected(rev tokex.revocation) RETURNS SETOF tokex.ssf_token
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, tokex, pg_temp AS $$
DECLARE
  t0 timestamptz := pg_catalog.clock_timestamp();
BEGIN
  CASE rev.kind
    WHEN 'identity' THEN
      -- the identity in any position of the chain; what it stopped: all its
      -- tokens when it is no longer active, else those issued before
      -- tokens_valid_after
      RETURN QUERY
        SELECT t.* FROM tokex.ssf_token t, tokex.identity i
         WHERE i.id OPERATOR(pg_catalog.=) rev.target
           AND (t.subject OPERATOR(pg_catalog.=) rev.target
                OR t.actor_chain OPERATOR(pg_catalog.@>) ARRAY[rev.target])
           AND (i.status OPERATOR(pg_catalog.<>) 'active'
                OR t.issued_at OPERATOR(pg_catalog.<) i.tokens_valid_after);
    WHEN 'delegation' THEN
      RETURN QUERY
        SELECT t.* FROM tokex.ssf_token t
         WHERE t.delegation_ids OPERATOR(pg_catalog.@>) ARRAY[rev.target::bigint];
    WHEN 'session' THEN
      RETURN QUERY
        SELECT t.* FROM tokex.ssf_token t WHERE t.sid OPERATOR(pg_catalog.=) rev.target;
    WHEN 'token' THEN
      -- a jti of tokex's own (another issuer's tokens are no receiver's here)
      RETURN QUERY
        SELECT t.* FROM tokex.ssf_token t
         WHERE rev.target ~ '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$'
           AND t.jti OPERATOR(pg_catalog.=) rev.target::uuid
           AND EXISTS (SELECT 1 FROM tokex.revoked_token r
                        WHERE r.key OPERATOR(pg_catalog.=) tokex._jti_key(tokex._setting('issuer'), rev.target));
    WHEN 'key' THEN
      -- the audit does not record which key signed a token: the key active
      -- when the audit writer committed it, or a token issued while the key
      -- was active (one second either side, for a backend that had not yet
      -- seen a rotation)
      RETURN QUERY
        SELECT t.* FROM tokex.ssf_token t, tokex.key k
         WHERE k.kid OPERATOR(pg_catalog.=) rev.target
           AND (t.kid OPERATOR(pg_catalog.=) rev.target
                OR (t.issued_at OPERATOR(pg_catalog.>=) (k.activated_at OPERATOR(pg_catalog.-) interval '1 second')
                    AND t.issued_at OPERATOR(pg_catalog.<=)
                        (COALESCE(k.retired_at, k.revoked_at, t0) OPERATOR(pg_catalog.+) interval '1 second')));
    WHEN 'api_key' THEN
      -- the tokens obtained with the key, as the actor's or the subject's
      -- credential (the audit row keeps its SHA-256): a revoked key kills them
      RETURN QUERY
        SELECT t.* FROM tokex.ssf_token t
          JOIN tokex.audit_event a ON a.jti OPERATOR(pg_catalog.=) t.jti
          JOIN tokex.api_key k ON k.id OPERATOR(pg_catalog.=) rev.target::bigint
         WHERE k.key_sha256 OPERATOR(pg_catalog.=) a.actor_token_sha256
            OR k.key_sha256 OPERATOR(pg_catalog.=) a.subject_token_sha256;
    WHEN 'policy' THEN
      -- what tokex.exchange would now refuse, of the tokens policy decided
      -- (an exchange's: its audit row names the policy rows that matched):
      -- this row is a deny that matches the token's exchange (a deny with
      -- scopes: and the token carries one of them), or no allow row matches
      -- it any more (an allow deleted, narrowed or turned to deny)
      RETURN QUERY
        SELECT t.* FROM tokex.ssf_token t
          JOIN tokex.ssf_stream s ON s.stream_id OPERATOR(pg_catalog.=) t.stream_id
          LEFT JOIN tokex.identity si ON si.id OPERATOR(pg_catalog.=) t.subject
          LEFT JOIN tokex.identity ai ON ai.id OPERATOR(pg_catalog.=) t.actor
         WHERE pg_catalog.cardinality(t.policy_ids) OPERATOR(pg_catalog.>) 0
           AND (EXISTS (SELECT 1 FROM tokex.policy p
                         WHERE p.id OPERATOR(pg_catalog.=) rev.target::bigint
                           AND p.effect OPERATOR(pg_catalog.=) 'deny'
                           AND (p.scopes IS NULL OR t.scope OPERATOR(pg_catalog.&&) p.scopes)
                           AND tokex._ssf_policy_matches(p, t, s.audience, si.kind, ai.kind, t0))
                OR NOT EXISTS (SELECT 1 FROM tokex.policy a
                                WHERE a.effect OPERATOR(pg_catalog.=) 'allow'
                                  AND tokex._ssf_policy_matches(a, t, s.audience, si.kind, ai.kind, t0)));
    ELSE
      RETURN;
  END CASE;
END
$$;

-- RFC 9493 / SSF subject identifiers of tokex's identities.
CREATE FUNCTION tokex._ssf_iss_sub(iss text, id text) RETURNS jsonb
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, tokex, pg_temp AS $$
  SELECT CASE WHEN id IS NOT NULL
              THEN pg_catalog.jsonb_build_object('format', 'iss_sub', 'iss', iss, 'sub', id) END
$$;

-- The SET's sub_id: what the revocation is about.  A person or agent:
-- iss_sub; a delegation: the pair as a complex subject (user = the
-- principal, application = the delegate); a session: the pair and the
-- session (opaque id = the sid its tokens carry); a token: jwt_id; a key:
-- opaque kid; a policy row: the pair it names, else the policy (opaque).
CREATE FUNCTION tokex._ssf_subject(rev tokex.revocation, iss text) RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, tokex, pg_temp AS $$
DECLARE
  u text;
  a text;
  s jsonb;
BEGIN
  CASE rev.kind
    WHEN 'identity' THEN
      RETURN tokex._ssf_iss_sub(iss, rev.target);
    WHEN 'delegation' THEN
      SELECT d.principal, d.delegate INTO u, a FROM tokex.delegation d
       WHERE d.id OPERATOR(pg_catalog.=) rev.target::bigint;
    WHEN 'session' THEN
      SELECT x.principal, x.agent INTO u, a FROM tokex.session x WHERE x.id OPERATOR(pg_catalog.=) rev.target::uuid;
      s := pg_catalog.jsonb_build_object('format', 'opaque', 'id', rev.target);
    WHEN 'token' THEN
      RETURN pg_catalog.jsonb_build_object('format', 'jwt_id', 'iss', iss, 'jti', rev.target);
    WHEN 'api_key' THEN
      -- the agent or service whose key it was
      SELECT k.identity INTO a FROM tokex.api_key k WHERE k.id OPERATOR(pg_catalog.=) rev.target::bigint;
      RETURN tokex._ssf_iss_sub(iss, a);
    WHEN 'policy' THEN
      SELECT p.subject, p.actor INTO u, a FROM tokex.policy p WHERE p.id OPERATOR(pg_catalog.=) rev.target::bigint;
      IF u IS NULL AND a IS NULL THEN
        RETURN pg_catalog.jsonb_build_object('format', 'opaque', 'id', 'policy ' OPERATOR(pg_catalog.||) rev.target);
      END IF;
    ELSE
      RETURN pg_catalog.jsonb_build_object('format', 'opaque', 'id', rev.target);
  END CASE;
  RETURN pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
    'format', 'complex', 'user', tokex._ssf_iss_sub(iss, u), 'application', tokex._ssf_iss_sub(iss, a),
    'session', s));
END
$$;

-- A stream's SET audience: one string, or an array of several.
CREATE FUNCTION tokex._ssf_aud(s tokex.ssf_stream) RETURNS jsonb
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, tokex, pg_temp AS $$
  SELECT CASE WHEN s.aud IS NULL THEN pg_catalog.to_jsonb(s.audience)
              WHEN pg_catalog.cardinality(s.aud) OPERATOR(pg_catalog.=) 1 THEN pg_catalog.to_jsonb(s.aud[1])
              ELSE pg_catalog.to_jsonb(s.aud) END
$$;

-- A revocation, in its transaction: the tokens it kills leave ssf_token,
-- and each stream that held some (and is not disabled, and asked for
-- session-revoked) gets one event naming them.  rev is a tokex.revocation
-- row, or for a policy change one made up (no id: policy changes are not
-- logged in tokex.revocation).
CREATE FUNCTION tokex._ssf_emit(rev tokex.revocation) RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, tokex, pg_temp AS $$
DECLARE
  iss text := tokex._setting('issuer');
  session_revoked constant text := 'https://schemas.openid.net/secevent/caep/event-type/session-revoked';
  n bigint;
  t0 timestamptz := pg_catalog.clock_timestamp();   -- as of the call, like the exchange
BEGIN
  DELETE FROM tokex.ssf_token WHERE expires_at OPERATOR(pg_catalog.<=) t0;
  WITH hit AS (
    DELETE FROM tokex.ssf_token t WHERE t.jti IN (SELECT a.jti FROM tokex._ssf_affected(rev) a)
    RETURNING t.*
  )
  INSERT INTO tokex.ssf_event (stream_id, revocation_id, claims, jtis, expires_at)
  SELECT s.stream_id, rev.id,
         pg_catalog.jsonb_build_object(
           'iat', pg_catalog.floor(extract(epoch FROM pg_catalog.clock_timestamp()))::bigint,
           'aud', tokex._ssf_aud(s),
           'txn', COALESCE(rev.id::text, pg_catalog.format('policy %s, transaction %s', rev.target,
                                                              pg_catalog.txid_current())),
           'sub_id', tokex._ssf_subject(rev, iss),
           'events', pg_catalog.jsonb_build_object(session_revoked, pg_catalog.jsonb_strip_nulls(
             pg_catalog.jsonb_build_object(
               'event_timestamp', pg_catalog.floor(extract(epoch FROM rev.at))::bigint,
               'initiating_entity', CASE rev.kind WHEN 'policy' THEN 'policy' ELSE 'admin' END,
               'reason_admin', CASE WHEN rev.reason IS NOT NULL
                                    THEN pg_catalog.jsonb_build_object('en', rev.reason) END,
               'tokex_revocation', pg_catalog.jsonb_build_object('kind', rev.kind, 'target', rev.target))))),
         pg_catalog.array_agg(h.jti ORDER BY h.issued_at, h.jti),
         pg_catalog.max(h.expires_at)
    FROM hit h JOIN tokex.ssf_stream s ON s.stream_id OPERATOR(pg_catalog.=) h.stream_id
   WHERE s.status OPERATOR(pg_catalog.<>) 'disabled'
     AND session_revoked OPERATOR(pg_catalog.=) ANY (s.events_requested)
   GROUP BY s.stream_id;
  GET DIAGNOSTICS n = ROW_COUNT;
  IF n > 0 AND iss IS NULL THEN
    -- the events must name tokex's tokens as their receivers know them
    RAISE EXCEPTION 'tokex.issuer is not set' USING ERRCODE = 'object_not_in_prerequisite_state',
      DETAIL = 'This revocation produces Security Event Tokens, which carry the issuer.',
      HINT = 'Set it with ALTER DATABASE ... SET tokex.issuer = ''https://...''.';
  END IF;
END
$$;

CREATE FUNCTION tokex._ssf_on_revocation() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
BEGIN
  PERFORM tokex._ssf_emit(NEW);
  RETURN NULL;
END
$$;

CREATE TRIGGER revocation_ssf AFTER INSERT ON tokex.revocation
  FOR EACH ROW EXECUTE FUNCTION tokex._ssf_on_revocation();

-- A policy change that can remove access: a deny row inserted, or changed
-- and in force after the change; an allow row deleted or changed.  Which
-- tokens it kills is tokex._ssf_affected's rule.  It is no row of
-- tokex.revocation (policy is not revoked, it is changed).
CREATE FUNCTION tokex._ssf_on_policy() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
DECLARE
  p tokex.policy := CASE WHEN TG_OP OPERATOR(pg_catalog.=) 'DELETE' THEN OLD ELSE NEW END;
  rev tokex.revocation;
BEGIN
  IF TG_OP OPERATOR(pg_catalog.=) 'INSERT' AND NEW.effect OPERATOR(pg_catalog.<>) 'deny' THEN
    RETURN NULL;
  ELSIF TG_OP OPERATOR(pg_catalog.=) 'DELETE' AND OLD.effect OPERATOR(pg_catalog.<>) 'allow' THEN
    RETURN NULL;
  ELSIF TG_OP OPERATOR(pg_catalog.=) 'UPDATE'
        AND (OLD.effect, OLD.subject, OLD.subject_kind, OLD.actor, OLD.actor_kind, OLD.audience, OLD.client_id,
             OLD.scopes, OLD.max_depth, OLD.valid)
            IS NOT DISTINCT FROM
            (NEW.effect, NEW.subject, NEW.subject_kind, NEW.actor, NEW.actor_kind, NEW.audience, NEW.client_id,
             NEW.scopes, NEW.max_depth, NEW.valid) THEN
    RETURN NULL;
  ELSIF TG_OP OPERATOR(pg_catalog.=) 'UPDATE' AND OLD.effect OPERATOR(pg_catalog.=) 'deny'
        AND NOT (NEW.effect OPERATOR(pg_catalog.=) 'deny'
                 AND (NEW.valid IS NULL OR NEW.valid OPERATOR(pg_catalog.@>) pg_catalog.clock_timestamp())) THEN
    RETURN NULL;
  END IF;
  rev.at := pg_catalog.clock_timestamp();
  rev.kind := 'policy';
  rev.target := p.id::text;
  rev.reason := p.description;
  rev.by_user := SESSION_USER;
  PERFORM tokex._ssf_emit(rev);
  RETURN NULL;
END
$$;

CREATE TRIGGER policy_ssf AFTER INSERT OR UPDATE OR DELETE ON tokex.policy
  FOR EACH ROW EXECUTE FUNCTION tokex._ssf_on_policy();

-- Acknowledged events older than tokex.ssf_retention, pending ones whose
-- tokens have all expired, and tokens no longer live.  Poll runs it for
-- its stream; call it (pg_cron) for streams nobody polls.
CREATE FUNCTION tokex.ssf_prune(stream_id uuid DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
DECLARE
  n bigint;
  t0 timestamptz := pg_catalog.clock_timestamp();
BEGIN
  DELETE FROM tokex.ssf_event e
   WHERE (ssf_prune.stream_id IS NULL OR e.stream_id OPERATOR(pg_catalog.=) ssf_prune.stream_id)
     AND ((e.acked_at IS NOT NULL AND e.acked_at OPERATOR(pg_catalog.<)
             (t0 OPERATOR(pg_catalog.-) tokex._setting('ssf_retention')::interval))
          OR (e.acked_at IS NULL AND e.expires_at OPERATOR(pg_catalog.<=) t0));
  GET DIAGNOSTICS n = ROW_COUNT;
  DELETE FROM tokex.ssf_token WHERE expires_at OPERATOR(pg_catalog.<=) t0;
  RETURN n;
END
$$;

-- A stream's SSF configuration (SSF 1.0 §8.1.1).
CREATE FUNCTION tokex._ssf_config(s tokex.ssf_stream) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = pg_catalog, tokex, pg_temp AS $$
  SELECT pg_catalog.jsonb_build_object(
    'stream_id', s.stream_id,
    'iss', tokex._issuer(),
    'aud', tokex._ssf_aud(s),
    'delivery', pg_catalog.jsonb_build_object('method', s.delivery_method,
                                              'endpoint_url', tokex._endpoint('/rpc/ssf_poll')),
    'events_supported', '["https://schemas.openid.net/secevent/caep/event-type/session-revoked"]'::jsonb,
    'events_requested', pg_catalog.to_jsonb(s.events_requested),
    'events_delivered', pg_catalog.to_jsonb(ARRAY(
       SELECT e FROM pg_catalog.unnest(s.events_requested) e
        WHERE e OPERATOR(pg_catalog.=) 'https://schemas.openid.net/secevent/caep/event-type/session-revoked')),
    'description', s.description)
$$;

-- The stream an authenticated client asks about: stream_id, or its only
-- stream.  Over HTTP: the client authenticated as at the token endpoint.
-- Returns the stream, or the RFC 8935 §2.4 error to answer.
CREATE FUNCTION tokex._ssf_client_stream(path text, stream_id text, client_id text, client_secret text,
                                         client_assertion text, client_assertion_type text,
                                         OUT stream tokex.ssf_stream, OUT refusal jsonb)
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, tokex, pg_temp AS $$
DECLARE
  a record;
  n int;
BEGIN
  SELECT * INTO a FROM tokex._authenticate(client_id, client_secret, client_assertion, client_assertion_type,
                                           tokex._endpoint(path));
  IF a.client IS NULL OR (a.client).client_id IS NULL THEN
    refusal := tokex._respond(pg_catalog.jsonb_build_object('err', 'authentication_failed',
                 'description', tokex._public_description('invalid_client', a.why)),
                 401, 'Basic realm="tokex", charset="UTF-8"');
    RETURN;
  END IF;
  SELECT pg_catalog.count(*) INTO n FROM tokex.ssf_stream s
   WHERE (a.client).client_id OPERATOR(pg_catalog.=) ANY (s.clients);
  IF _ssf_client_stream.stream_id IS NULL AND n OPERATOR(pg_catalog.>) 1 THEN
    refusal := tokex._respond('{"err": "invalid_request", "description": "stream_id is required: the client may poll more than one stream"}', 400);
    RETURN;
  END IF;
  SELECT * INTO stream FROM tokex.ssf_stream s
   WHERE (a.client).client_id OPERATOR(pg_catalog.=) ANY (s.clients)
     AND (_ssf_client_stream.stream_id IS NULL OR s.stream_id::text OPERATOR(pg_catalog.=) _ssf_client_stream.stream_id);
  IF NOT FOUND THEN
    -- another receiver's stream looks like no stream
    stream := NULL;
    refusal := tokex._respond('{"err": "access_denied", "description": "the client may not use this stream"}', 403);
  END IF;
END
$$;

-- The claims of event e's SET as it is signed: iss, jti, and the tokens it
-- names as RFC 9493-style jwt_id subject identifiers in its event.
CREATE FUNCTION tokex._ssf_set_claims(e tokex.ssf_event, iss text) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = pg_catalog, tokex, pg_temp AS $$
  SELECT pg_catalog.jsonb_build_object('iss', iss, 'jti', e.jti)
         OPERATOR(pg_catalog.||) pg_catalog.jsonb_set(e.claims,
           ARRAY['events', 'https://schemas.openid.net/secevent/caep/event-type/session-revoked', 'tokens'],
           (SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object('format', 'jwt_id', 'iss', iss, 'jti', j)
                                        ORDER BY o)
              FROM pg_catalog.unnest(e.jtis) WITH ORDINALITY AS x(j, o)))
$$;

-- Poll (RFC 8936 §2.4) for one stream: acknowledge ack, record setErrs, then
-- up to max_events pending events in order, each signed now; returns
-- {"sets": {jti: SET, ...}, "moreAvailable": bool} (json: the order kept).
CREATE FUNCTION tokex._ssf_poll(s tokex.ssf_stream, max_events int, ack jsonb, set_errs jsonb)
RETURNS json
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, tokex, pg_temp AS $$
DECLARE
  lim int := LEAST(COALESCE(max_events, 100), 1000);
  iss text := tokex._issuer();
  sets json;
  more boolean;
  t0 timestamptz := pg_catalog.clock_timestamp();
BEGIN
  IF max_events OPERATOR(pg_catalog.<) 0 THEN
    RAISE EXCEPTION 'maxEvents must not be negative' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF ack IS NOT NULL AND pg_catalog.jsonb_typeof(ack) NOT IN ('array', 'string') THEN
    RAISE EXCEPTION 'ack must be an array of jti strings' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF set_errs IS NOT NULL AND pg_catalog.jsonb_typeof(set_errs) OPERATOR(pg_catalog.<>) 'object' THEN
    RAISE EXCEPTION 'setErrs must be an object' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  -- acknowledgements of this stream's events only; unknown jtis are ignored
  UPDATE tokex.ssf_event e SET acked_at = pg_catalog.now()
   WHERE e.stream_id OPERATOR(pg_catalog.=) s.stream_id AND e.acked_at IS NULL
     AND e.jti::text IN (SELECT j FROM pg_catalog.jsonb_array_elements_text(
                           CASE pg_catalog.jsonb_typeof(ack) WHEN 'string' THEN pg_catalog.jsonb_build_array(ack)
                                ELSE COALESCE(ack, '[]') END) j);
  UPDATE tokex.ssf_event e SET acked_at = pg_catalog.now(), set_error = x.value
    FROM pg_catalog.jsonb_each(COALESCE(set_errs, '{}')) x
   WHERE e.stream_id OPERATOR(pg_catalog.=) s.stream_id AND e.acked_at IS NULL
     AND e.jti::text OPERATOR(pg_catalog.=) x.key;
  PERFORM tokex.ssf_prune(s.stream_id);
  IF s.status OPERATOR(pg_catalog.<>) 'enabled' THEN
    lim := 0;                 -- paused: held; disabled: nothing to deliver
  END IF;
  WITH next AS (
    SELECT e FROM tokex.ssf_event e
     WHERE e.stream_id OPERATOR(pg_catalog.=) s.stream_id AND e.acked_at IS NULL
       AND e.expires_at OPERATOR(pg_catalog.>) t0
     ORDER BY e.id LIMIT lim
  ), sent AS (
    UPDATE tokex.ssf_event e SET delivered_at = COALESCE(e.delivered_at, pg_catalog.now())
      FROM next WHERE e.id OPERATOR(pg_catalog.=) (next.e).id
  )
  SELECT pg_catalog.json_object_agg((n.e).jti, tokex._sign(tokex._ssf_set_claims(n.e, iss), 'secevent+jwt')
                                    ORDER BY (n.e).id)
    INTO sets FROM next n;
  SELECT EXISTS (SELECT 1 FROM tokex.ssf_event e
                  WHERE e.stream_id OPERATOR(pg_catalog.=) s.stream_id AND e.acked_at IS NULL
                    AND e.expires_at OPERATOR(pg_catalog.>) t0
                  OFFSET lim)
    INTO more;
  RETURN pg_catalog.json_build_object('sets', COALESCE(sets, '{}'::json),
                                      'moreAvailable', more AND lim OPERATOR(pg_catalog.>) 0);
END
$$;

-- For a receiver inside the database: poll a stream as a role mapped to
-- one of its clients (tokex.client.db_roles), or as an administrator.
CREATE FUNCTION tokex.ssf_poll(stream_id uuid, max_events int DEFAULT 100, ack uuid[] DEFAULT NULL,
                               set_errs jsonb DEFAULT NULL)
RETURNS json
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
DECLARE
  s tokex.ssf_stream;
BEGIN
  SELECT * INTO s FROM tokex.ssf_stream x WHERE x.stream_id OPERATOR(pg_catalog.=) ssf_poll.stream_id;
  IF NOT FOUND OR NOT (pg_catalog.pg_has_role(SESSION_USER, 'tokex_admin', 'MEMBER')
                       OR EXISTS (SELECT 1 FROM tokex.client c, pg_catalog.unnest(c.db_roles) r
                                   WHERE c.client_id OPERATOR(pg_catalog.=) ANY (s.clients)
                                     AND c.status OPERATOR(pg_catalog.=) 'active'
                                     AND pg_catalog.pg_has_role(SESSION_USER, r, 'MEMBER'))) THEN
    RAISE EXCEPTION 'no stream % for this role', ssf_poll.stream_id USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN tokex._ssf_poll(s, max_events, pg_catalog.to_jsonb(ack), set_errs);
END
$$;

-- POST /rpc/ssf_poll (RFC 8936 §2.4): JSON {"maxEvents", "returnImmediately",
-- "ack", "setErrs"} (or a form), client authentication as at /rpc/token,
-- stream_id when the client may poll more than one stream.  tokex answers
-- at once: returnImmediately false is accepted, and nothing is held open.
CREATE FUNCTION tokex_api.ssf_poll(
  "maxEvents" int DEFAULT NULL, "returnImmediately" boolean DEFAULT NULL,
  ack jsonb DEFAULT NULL, "setErrs" jsonb DEFAULT NULL, stream_id text DEFAULT NULL,
  client_id text DEFAULT NULL, client_secret text DEFAULT NULL,
  client_assertion text DEFAULT NULL, client_assertion_type text DEFAULT NULL)
RETURNS json
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
DECLARE
  c record;
  r json;
BEGIN
  IF tokex._not_post() THEN
    RETURN tokex._respond('{"err": "invalid_request", "description": "the poll endpoint takes POST"}', 405);
  END IF;
  SELECT * INTO c FROM tokex._ssf_client_stream('/rpc/ssf_poll', stream_id, client_id, client_secret,
                                                client_assertion, client_assertion_type);
  IF c.refusal IS NOT NULL THEN
    RETURN c.refusal;
  END IF;
  BEGIN
    r := tokex._ssf_poll(c.stream, "maxEvents", ack, "setErrs");
  EXCEPTION WHEN invalid_parameter_value THEN
    RETURN tokex._respond(pg_catalog.jsonb_build_object('err', 'invalid_request', 'description', SQLERRM), 400);
  END;
  PERFORM tokex._respond('{}'::jsonb);
  RETURN r;
END
$$;

-- The stream management endpoints (SSF 1.0 §8.1), for a client of the
-- stream.  what 'stream' (the configuration endpoint): the stream's
-- configuration; change may set events_requested and description, what a
-- receiver may change.  what 'status' (the status endpoint): its status;
-- change may set status (enabled, paused, disabled) and reason.  A change
-- takes POST.
CREATE FUNCTION tokex._ssf_manage(what text, stream_id text, change jsonb, client_id text, client_secret text,
                                  client_assertion text, client_assertion_type text)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, tokex, pg_temp AS $$
DECLARE
  c record;
  s tokex.ssf_stream;
  ev jsonb := change->'events_requested';
BEGIN
  SELECT * INTO c FROM tokex._ssf_client_stream('/rpc/ssf_' OPERATOR(pg_catalog.||) what, stream_id, client_id,
                                                client_secret, client_assertion, client_assertion_type);
  IF c.refusal IS NOT NULL THEN
    RETURN c.refusal;
  END IF;
  s := c.stream;
  IF change OPERATOR(pg_catalog.<>) '{}' AND tokex._not_post() THEN
    RETURN tokex._respond('{"err": "invalid_request", "description": "changes take POST"}', 405);
  END IF;
  IF what OPERATOR(pg_catalog.=) 'stream' THEN
    IF ev IS NOT NULL AND (pg_catalog.jsonb_typeof(ev) OPERATOR(pg_catalog.<>) 'array'
                           OR pg_catalog.jsonb_path_exists(ev, '$[*] ? (@.type() != "string")')) THEN
      RETURN tokex._respond('{"err": "invalid_request", "description": "events_requested must be an array of event type URIs"}', 400);
    END IF;
    UPDATE tokex.ssf_stream x
       SET events_requested = COALESCE(ARRAY(SELECT pg_catalog.jsonb_array_elements_text(ev)), x.events_requested),
           description = COALESCE(change->>'description', x.description)
     WHERE x.stream_id OPERATOR(pg_catalog.=) s.stream_id AND change OPERATOR(pg_catalog.<>) '{}'
    RETURNING * INTO s;
    IF NOT FOUND THEN
      s := c.stream;
    END IF;
    RETURN tokex._respond(tokex._ssf_config(s));
  END IF;
  IF change ? 'status' AND NOT (change->>'status' IN ('enabled', 'paused', 'disabled')) THEN
    RETURN tokex._respond('{"err": "invalid_request", "description": "status must be enabled, paused or disabled"}', 400);
  END IF;
  UPDATE tokex.ssf_stream x SET status = change->>'status', status_reason = change->>'reason'
   WHERE x.stream_id OPERATOR(pg_catalog.=) s.stream_id AND change ? 'status'
  RETURNING * INTO s;
  IF NOT FOUND THEN
    s := c.stream;
  END IF;
  RETURN tokex._respond(pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
    'stream_id', s.stream_id, 'status', s.status, 'reason', s.status_reason)));
END
$$;

-- POST /rpc/ssf_stream: the configuration endpoint (read; update)
CREATE FUNCTION tokex_api.ssf_stream(
  stream_id text DEFAULT NULL, events_requested jsonb DEFAULT NULL, description text DEFAULT NULL,
  client_id text DEFAULT NULL, client_secret text DEFAULT NULL,
  client_assertion text DEFAULT NULL, client_assertion_type text DEFAULT NULL)
RETURNS jsonb
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
  SELECT tokex._ssf_manage('stream', stream_id,
           pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object('events_requested', events_requested,
                                                                      'description', description)),
           client_id, client_secret, client_assertion, client_assertion_type)
$$;

-- POST /rpc/ssf_status: the status endpoint (read; update)
CREATE FUNCTION tokex_api.ssf_status(
  stream_id text DEFAULT NULL, status text DEFAULT NULL, reason text DEFAULT NULL,
  client_id text DEFAULT NULL, client_secret text DEFAULT NULL,
  client_assertion text DEFAULT NULL, client_assertion_type text DEFAULT NULL)
RETURNS jsonb
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
  SELECT tokex._ssf_manage('status', stream_id,
           CASE WHEN status IS NULL THEN '{}'::jsonb
                ELSE pg_catalog.jsonb_build_object('status', status, 'reason', reason) END,
           client_id, client_secret, client_assertion, client_assertion_type)
$$;

-- GET /rpc/ssf_configuration: SSF transmitter metadata, what
-- /.well-known/ssf-configuration serves (SSF 1.0 §7.1).
CREATE FUNCTION tokex_api.ssf_configuration() RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
BEGIN
  PERFORM pg_catalog.set_config('response.headers', '[{"Cache-Control": "public, max-age=300"}]', true);
  RETURN pg_catalog.jsonb_build_object(
    'spec_version', '1_0',
    'issuer', tokex._issuer(),
    'jwks_uri', tokex._endpoint('/rpc/jwks'),
    'delivery_methods_supported', '["urn:ietf:rfc:8936"]'::jsonb,
    'configuration_endpoint', tokex._endpoint('/rpc/ssf_stream'),
    'status_endpoint', tokex._endpoint('/rpc/ssf_status'),
    'authorization_schemes', '[{"spec_urn": "urn:ietf:rfc:6749"}]'::jsonb,
    'default_subjects', 'ALL');
END
$$;

DO $$
DECLARE
  f regprocedure;
BEGIN
  FOR f IN SELECT p.oid FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
            WHERE n.nspname IN ('tokex', 'tokex_api')
              AND (p.proname LIKE 'ssf\_%' OR p.proname LIKE '\_ssf\_%') LOOP
    EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
  END LOOP;
END
$$;

GRANT EXECUTE ON FUNCTION tokex_api.ssf_poll(int, boolean, jsonb, jsonb, text, text, text, text, text),
  tokex_api.ssf_stream(text, jsonb, text, text, text, text, text),
  tokex_api.ssf_status(text, text, text, text, text, text, text),
  tokex_api.ssf_configuration() TO tokex_web;

GRANT SELECT, INSERT, UPDATE, DELETE ON tokex.ssf_stream TO tokex_admin;

GRANT SELECT ON tokex.ssf_event, tokex.ssf_token TO tokex_admin;

GRANT EXECUTE ON FUNCTION tokex.ssf_poll(uuid, int, uuid[], jsonb) TO tokex_app, tokex_admin;

GRANT EXECUTE ON FUNCTION tokex.ssf_prune(uuid) TO tokex_admin;

------------------------------------------------------------------------
-- A token obtained with an API key dies with the key (introspection here,
-- re-exchange in tokex._decide above, SSF events in _ssf_affected)
------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION tokex._token_active(chain_iss text[], chain_sub text[], iat timestamptz,
                                    own_issuer text, own boolean, revoked_key bytea, jti_uuid uuid,
                                    sid uuid, at timestamptz DEFAULT pg_catalog.clock_timestamp())
RETURNS TABLE (active boolean)   -- a table function, so the planner inlines it
LANGUAGE sql STABLE AS $$
  SELECT NOT EXISTS (SELECT 1 FROM tokex.revoked_token r WHERE r.key OPERATOR(pg_catalog.=) revoked_key)
     AND (NOT own OR EXISTS (
           SELECT 1 FROM tokex.audit_event a
            WHERE a.jti OPERATOR(pg_catalog.=) jti_uuid AND a.decision OPERATOR(pg_catalog.=) 'granted'
              AND a.operation OPERATOR(pg_catalog.=) ANY (ARRAY['exchange', 'client_credentials', 'jwt_sign'])
              -- not obtained with an API key revoked since
              AND NOT EXISTS (SELECT 1 FROM tokex.api_key k
                               WHERE k.key_sha256 OPERATOR(pg_catalog.=) ANY (ARRAY[a.actor_token_sha256,
                                                                                   a.subject_token_sha256])
                                 AND k.revoked_at IS NOT NULL)))
     -- one pass over the chain: a position that is unknown (for our own
     -- tokens), inactive, revoked by tokens_valid_after, or a repeat (a cycle)
     AND NOT EXISTS (SELECT 1 FROM (
                       SELECT r.*, pg_catalog.count(*) OVER (PARTITION BY COALESCE(r.id, r.sub)) AS seen
                         FROM tokex._resolve(chain_iss, chain_sub, own_issuer) r) c
                      WHERE (c.id IS NULL AND own)
                         OR c.status OPERATOR(pg_catalog.<>) 'active'
                         OR (c.tokens_valid_after IS NOT NULL AND iat OPERATOR(pg_catalog.<) c.tokens_valid_after)
                         OR c.seen OPERATOR(pg_catalog.>) 1)
     AND (sid IS NULL OR EXISTS (
           SELECT 1 FROM tokex.session s
             JOIN tokex.delegation d ON d.id OPERATOR(pg_catalog.=) s.delegation_id
             JOIN tokex.identity ag ON ag.id OPERATOR(pg_catalog.=) s.agent
            WHERE s.id OPERATOR(pg_catalog.=) sid AND s.revoked_at IS NULL
              AND s.expires_at OPERATOR(pg_catalog.>) _token_active.at
              AND d.revoked_at IS NULL AND d.valid_from OPERATOR(pg_catalog.<=) _token_active.at
              AND (d.valid_until IS NULL OR d.valid_until OPERATOR(pg_catalog.>) _token_active.at)
              AND ag.status OPERATOR(pg_catalog.=) 'active'))
     -- every delegation that minted it still stands (a deleted one does not)
     AND NOT EXISTS (
           SELECT 1 FROM tokex.audit_event a
             CROSS JOIN LATERAL pg_catalog.unnest(a.delegation_ids) did
             LEFT JOIN tokex.delegation d ON d.id OPERATOR(pg_catalog.=) did
            WHERE a.jti OPERATOR(pg_catalog.=) jti_uuid
              AND (d.id IS NULL OR d.revoked_at IS NOT NULL OR d.valid_until OPERATOR(pg_catalog.<=) _token_active.at))
$$;

------------------------------------------------------------------------
-- A deleted delegation is a revoked one (its tokens die, its receivers hear)
------------------------------------------------------------------------
DROP TRIGGER delegation_revocation ON tokex.delegation;

CREATE TRIGGER delegation_revocation AFTER UPDATE OR DELETE ON tokex.delegation
  FOR EACH ROW EXECUTE FUNCTION tokex._on_revocation();


------------------------------------------------------------------------
-- Audit proof (issue 11): hashed rows, sealed blocks.  The
-- new columns are added empty, every existing row gets its place (seq, in
-- the order of its time) and its hash, then the columns become NOT NULL.
------------------------------------------------------------------------
ALTER TABLE tokex.audit_event ADD COLUMN seq bigint, ADD COLUMN row_hash bytea;

ALTER TABLE tokex.token_use ADD COLUMN seq bigint, ADD COLUMN row_hash bytea;


-- Every audit_event and token_use row takes its place (seq) from here, in
-- the trigger below, after its transaction's xid (see src/seal.c).
CREATE SEQUENCE tokex.audit_seq;

SELECT pg_catalog.pg_extension_config_dump('tokex.audit_seq', '');

CREATE FUNCTION tokex._audit_row() RETURNS trigger
  LANGUAGE C AS 'MODULE_PATHNAME', 'tokex_audit_row_trigger';

CREATE TRIGGER audit_event_row BEFORE INSERT ON tokex.audit_event
  FOR EACH ROW EXECUTE FUNCTION tokex._audit_row();

ALTER TABLE tokex.audit_event ENABLE ALWAYS TRIGGER audit_event_row;

CREATE TRIGGER token_use_row BEFORE INSERT ON tokex.token_use
  FOR EACH ROW EXECUTE FUNCTION tokex._audit_row();

ALTER TABLE tokex.token_use ENABLE ALWAYS TRIGGER token_use_row;

-- BRIN: rows are appended in nearly seq order, so a block's range is a few
-- page ranges, and an insert costs next to nothing (a B-tree would cost
-- every exchange an index insert)
CREATE INDEX audit_event_seq ON tokex.audit_event USING brin (seq);

CREATE INDEX token_use_seq ON tokex.token_use USING brin (seq);

-- The canonical text of a row, and its RFC 9162 leaf hash recomputed.
CREATE FUNCTION tokex._audit_canonical(r record) RETURNS text
  LANGUAGE C STABLE STRICT AS 'MODULE_PATHNAME', 'tokex_audit_canonical';

CREATE FUNCTION tokex._audit_row_hash(r record) RETURNS bytea
  LANGUAGE C STABLE STRICT AS 'MODULE_PATHNAME', 'tokex_audit_row_hash';

CREATE FUNCTION tokex._merkle_root(leaves bytea[]) RETURNS bytea
  LANGUAGE C IMMUTABLE STRICT AS 'MODULE_PATHNAME', 'tokex_merkle_root';

CREATE FUNCTION tokex._audit_safe_seq() RETURNS bigint
  LANGUAGE C VOLATILE AS 'MODULE_PATHNAME', 'tokex_audit_safe_seq';

-- The audit signing key: not a token key, so no token can pass for a block
-- and rotating token keys leaves the chain alone.  private_key is readable
-- only by the extension owner.
CREATE TABLE tokex.audit_key (
  kid         text PRIMARY KEY,
  alg         text NOT NULL,
  status      text NOT NULL CHECK (status IN ('active', 'retired')),
  public_jwk  jsonb NOT NULL,
  private_key bytea NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
  retired_at  timestamptz
);

CREATE UNIQUE INDEX audit_key_one_active ON tokex.audit_key ((true)) WHERE status = 'active';

SELECT pg_catalog.pg_extension_config_dump('tokex.audit_key', '');

REVOKE ALL ON tokex.audit_key FROM PUBLIC;

CREATE FUNCTION tokex._audit_sign(kid text, header text) RETURNS text
  LANGUAGE C VOLATILE STRICT AS 'MODULE_PATHNAME', 'tokex_audit_sign';

CREATE FUNCTION tokex._audit_jws_payload(jws text, public_jwk jsonb) RETURNS text
  LANGUAGE C IMMUTABLE STRICT AS 'MODULE_PATHNAME', 'tokex_audit_jws_payload';

CREATE FUNCTION tokex._audit_jws_parts(jws text, OUT header jsonb, OUT payload text)
  LANGUAGE C IMMUTABLE STRICT AS 'MODULE_PATHNAME', 'tokex_audit_jws_parts';

-- One sealed block: the rows with from_seq < seq <= to_seq of audit_event
-- and token_use together, in seq order, under an RFC 9162 Merkle root; hash
-- is the SHA-256 of the block's header (tokex._audit_header) and prev the
-- hash of the block before it; jws is the header signed with the audit key.
-- pruned_through: the rows of blocks up to this one were dropped by the
-- retention (tokex.apply_audit_retention): those blocks keep their headers.
CREATE TABLE tokex.audit_block (
  block         bigint PRIMARY KEY,
  from_seq      bigint NOT NULL,
  to_seq        bigint NOT NULL,
  row_count     bigint NOT NULL,
  root          bytea NOT NULL,
  first_at      timestamptz,
  last_at       timestamptz,
  prev          bytea NOT NULL,
  pruned_through bigint,
  sealed_at     timestamptz NOT NULL,
  kid           text NOT NULL,
  hash          bytea NOT NULL,
  jws           text NOT NULL
);

SELECT pg_catalog.pg_extension_config_dump('tokex.audit_block', '');

CREATE INDEX audit_block_last_at ON tokex.audit_block (last_at);

CREATE TRIGGER audit_block_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON tokex.audit_block
  FOR EACH STATEMENT EXECUTE FUNCTION tokex._append_only();

ALTER TABLE tokex.audit_block ENABLE ALWAYS TRIGGER audit_block_append_only;

CREATE FUNCTION tokex._audit_ts(t timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE STRICT SET search_path = pg_catalog, tokex, pg_temp AS $$
  SELECT pg_catalog.to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
$$;

-- A block's header: JSON with its keys sorted and every value a string
-- (RFC 8785 form), the payload its JWS signs.
CREATE FUNCTION tokex._audit_header(b tokex.audit_block) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, tokex, pg_temp AS $$
  SELECT pg_catalog.concat(
    '{"block":"', b.block, '","count":"', b.row_count, '"',
    ',"first_at":"' OPERATOR(pg_catalog.||) tokex._audit_ts(b.first_at) OPERATOR(pg_catalog.||) '"',
    ',"from_seq":"', b.from_seq, '","kid":', pg_catalog.to_json(b.kid),
    ',"last_at":"' OPERATOR(pg_catalog.||) tokex._audit_ts(b.last_at) OPERATOR(pg_catalog.||) '"',
    ',"prev":"', pg_catalog.encode(b.prev, 'hex'), '"',
    ',"pruned_through":"' OPERATOR(pg_catalog.||) b.pruned_through OPERATOR(pg_catalog.||) '"',
    ',"root":"', pg_catalog.encode(b.root, 'hex'), '","sealed_at":"', tokex._audit_ts(b.sealed_at),
    '","to_seq":"', b.to_seq, '","v":"1"}')
$$;

-- The rows of a seq range, both tables, with what a block needs of them.
CREATE FUNCTION tokex._audit_rows(lo bigint, hi bigint)
RETURNS TABLE (seq bigint, row_hash bytea, at timestamptz)
LANGUAGE sql STABLE SET search_path = pg_catalog, tokex, pg_temp AS $$
  SELECT e.seq, e.row_hash, e.at FROM tokex.audit_event e
   WHERE e.seq OPERATOR(pg_catalog.>) lo AND e.seq OPERATOR(pg_catalog.<=) hi
  UNION ALL
  SELECT u.seq, u.row_hash, u.at FROM tokex.token_use u
   WHERE u.seq OPERATOR(pg_catalog.>) lo AND u.seq OPERATOR(pg_catalog.<=) hi
$$;

-- The active audit key's kid, made (ES256) when there is none yet.
CREATE FUNCTION tokex._audit_active_kid() RETURNS text
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, tokex, pg_temp AS $$
DECLARE
  k record;
  v_kid text;
BEGIN
  SELECT a.kid INTO v_kid FROM tokex.audit_key a WHERE a.status OPERATOR(pg_catalog.=) 'active';
  IF v_kid IS NULL THEN
    SELECT * INTO k FROM tokex._generate_key('ES256');
    INSERT INTO tokex.audit_key (kid, alg, status, public_jwk, private_key)
    VALUES (k.kid, 'ES256', 'active', k.public_jwk, k.private_key);
    v_kid := k.kid;
  END IF;
  RETURN v_kid;
END
$$;

-- new_pruned_through: for the retention, which seals a block (even an empty
-- one) that records how far rows were dropped.
CREATE FUNCTION tokex._seal_audit(new_pruned_through bigint) RETURNS bigint
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, tokex, pg_temp AS $$
DECLARE
  hi bigint;
  p tokex.audit_block;
  b tokex.audit_block;
  h text;
BEGIN
  -- one sealer at a time; readers (and verifiers) go on
  LOCK TABLE tokex.audit_block IN EXCLUSIVE MODE;
  hi := tokex._audit_safe_seq();
  SELECT * INTO p FROM tokex.audit_block ORDER BY block DESC LIMIT 1;
  b.from_seq := COALESCE(p.to_seq, 0);
  b.to_seq := GREATEST(COALESCE(hi, 0), b.from_seq);
  SELECT pg_catalog.count(*), tokex._merkle_root(COALESCE(pg_catalog.array_agg(r.row_hash ORDER BY r.seq), '{}')),
         pg_catalog.min(r.at), pg_catalog.max(r.at)
    INTO b.row_count, b.root, b.first_at, b.last_at
    FROM tokex._audit_rows(b.from_seq, b.to_seq) r;
  b.pruned_through := GREATEST(p.pruned_through, new_pruned_through);
  IF b.row_count OPERATOR(pg_catalog.=) 0
     AND b.pruned_through IS NOT DISTINCT FROM p.pruned_through THEN
    RETURN NULL;
  END IF;
  b.block := COALESCE(p.block, 0) OPERATOR(pg_catalog.+) 1;
  b.prev := COALESCE(p.hash, pg_catalog.decode(pg_catalog.repeat('00', 32), 'hex'));
  b.sealed_at := pg_catalog.clock_timestamp();
  b.kid := tokex._audit_active_kid();
  h := tokex._audit_header(b);
  b.hash := pg_catalog.sha256(pg_catalog.convert_to(h, 'UTF8'));
  b.jws := tokex._audit_sign(b.kid, h);
  INSERT INTO tokex.audit_block SELECT b.*;
  RETURN b.block;
END
$$;

-- Seal, in this transaction, every row that no running transaction can
-- still add below: one new block, or NULL when there is nothing to seal
-- (or running writers did not finish within two seconds).  Run it in a
-- transaction of its own at READ COMMITTED (the background sealer, pg_cron
-- or by hand); it never blocks an exchange.
CREATE FUNCTION tokex.seal_audit() RETURNS bigint
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp
AS $$ SELECT tokex._seal_audit(NULL) $$;

-- A new audit key signs from the next block on; the old one is kept
-- (retired) to verify the blocks it signed.
CREATE FUNCTION tokex.rotate_audit_key(alg text DEFAULT 'ES256') RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
DECLARE k record;
BEGIN
  LOCK TABLE tokex.audit_block IN EXCLUSIVE MODE;
  SELECT * INTO k FROM tokex._generate_key(COALESCE(alg, 'ES256'));
  UPDATE tokex.audit_key SET status = 'retired', retired_at = pg_catalog.now()
   WHERE status OPERATOR(pg_catalog.=) 'active';
  INSERT INTO tokex.audit_key (kid, alg, status, public_jwk, private_key)
  VALUES (k.kid, COALESCE(alg, 'ES256'), 'active', k.public_jwk, k.private_key);
  RETURN k.kid;
END
$$;

-- The audit keys' public halves (JWKS), for witnesses and outside verifiers.
CREATE FUNCTION tokex.audit_keys() RETURNS jsonb
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
  SELECT pg_catalog.jsonb_build_object('keys',
           COALESCE(pg_catalog.jsonb_agg(public_jwk ORDER BY created_at), '[]'::jsonb))
    FROM tokex.audit_key
$$;

-- The latest block's header, signed: what a witness keeps.
CREATE FUNCTION tokex.audit_head() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
  SELECT b.jws FROM tokex.audit_block b ORDER BY b.block DESC LIMIT 1
$$;

-- The chain's problems in blocks from_block .. to_block: each header, its
-- signature and its link to the block before; with_rows, also each block's
-- rows (count and Merkle root) and each row's hash, except in blocks whose
-- rows the retention dropped (up to the latest pruned_through).
CREATE FUNCTION tokex._audit_verify(from_block bigint, to_block bigint, with_rows boolean)
RETURNS TABLE (block bigint, problem text, detail text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, tokex, pg_temp AS $$
DECLARE
  b tokex.audit_block;
  p tokex.audit_block;
  h text;
  payload text;
  jwk jsonb;
  cut bigint;
  n bigint;
  r bytea;
  expect bigint;
  last_seq bigint;
  hi bigint;
BEGIN
  SELECT pg_catalog.max(a.pruned_through) INTO cut FROM tokex.audit_block a;
  IF from_block IS NOT NULL AND from_block OPERATOR(pg_catalog.>) 1 THEN
    SELECT * INTO p FROM tokex.audit_block a WHERE a.block OPERATOR(pg_catalog.<) from_block
     ORDER BY a.block DESC LIMIT 1;
  END IF;
  expect := COALESCE(p.block OPERATOR(pg_catalog.+) 1, from_block, 1);
  FOR b IN SELECT * FROM tokex.audit_block a
            WHERE a.block OPERATOR(pg_catalog.>=) COALESCE(from_block, 1)
              AND (to_block IS NULL OR a.block OPERATOR(pg_catalog.<=) to_block)
            ORDER BY a.block LOOP
    IF b.block OPERATOR(pg_catalog.<>) expect THEN
      RETURN QUERY SELECT expect, 'missing block'::text,
        pg_catalog.format('blocks %s to %s are missing', expect, b.block OPERATOR(pg_catalog.-) 1);
    END IF;
    h := tokex._audit_header(b);
    IF pg_catalog.sha256(pg_catalog.convert_to(h, 'UTF8')) OPERATOR(pg_catalog.<>) b.hash THEN
      RETURN QUERY SELECT b.block, 'altered block'::text, 'the block''s columns do not hash to its recorded hash'::text;
    END IF;
    SELECT k.public_jwk INTO jwk FROM tokex.audit_key k WHERE k.kid OPERATOR(pg_catalog.=) b.kid;
    payload := tokex._audit_jws_payload(b.jws, jwk);
    IF jwk IS NULL THEN
      RETURN QUERY SELECT b.block, 'bad signature'::text,
        pg_catalog.format('the block names audit key %s, which tokex.audit_keys() does not have', b.kid);
    ELSIF payload IS NULL THEN
      RETURN QUERY SELECT b.block, 'bad signature'::text,
        pg_catalog.format('the block''s JWS is not signed by audit key %s', b.kid);
    ELSIF payload OPERATOR(pg_catalog.<>) h THEN
      RETURN QUERY SELECT b.block, 'altered block'::text, 'the block''s columns differ from the header its JWS signs'::text;
    END IF;
    IF p.block IS NULL AND b.block OPERATOR(pg_catalog.=) 1 THEN
      IF b.prev OPERATOR(pg_catalog.<>) pg_catalog.decode(pg_catalog.repeat('00', 32), 'hex')
         OR b.from_seq OPERATOR(pg_catalog.<>) 0 THEN
        RETURN QUERY SELECT b.block, 'broken link'::text, 'the first block does not start the chain'::text;
      END IF;
    ELSIF p.block IS NOT NULL THEN
      IF b.prev OPERATOR(pg_catalog.<>) p.hash THEN
        RETURN QUERY SELECT b.block, 'broken link'::text,
          pg_catalog.format('prev is not the hash of block %s', p.block);
      END IF;
      IF b.from_seq OPERATOR(pg_catalog.<>) p.to_seq THEN
        RETURN QUERY SELECT b.block, 'broken link'::text,
          pg_catalog.format('rows %s to %s are in no block', p.to_seq, b.from_seq);
      END IF;
    END IF;
    IF with_rows AND cut IS NOT NULL AND b.block OPERATOR(pg_catalog.<=) cut THEN
      -- the retention dropped every row of this block: a row here was put back or never dropped
      SELECT pg_catalog.count(*) INTO n FROM tokex._audit_rows(b.from_seq, b.to_seq) x;
      IF n OPERATOR(pg_catalog.>) 0 THEN
        RETURN QUERY SELECT b.block, 'inserted row'::text,
          pg_catalog.format('%s rows in a block whose rows the retention dropped (pruned through block %s)', n, cut);
      END IF;
    END IF;
    IF with_rows AND (cut IS NULL OR b.block OPERATOR(pg_catalog.>) cut) THEN
      SELECT pg_catalog.count(*), tokex._merkle_root(COALESCE(pg_catalog.array_agg(x.row_hash ORDER BY x.seq), '{}'))
        INTO n, r FROM tokex._audit_rows(b.from_seq, b.to_seq) x;
      IF n OPERATOR(pg_catalog.<) b.row_count THEN
        RETURN QUERY SELECT b.block, 'missing row'::text,
          pg_catalog.format('%s of the block''s %s rows are missing', b.row_count OPERATOR(pg_catalog.-) n, b.row_count);
      ELSIF n OPERATOR(pg_catalog.>) b.row_count THEN
        RETURN QUERY SELECT b.block, 'inserted row'::text,
          pg_catalog.format('%s rows more than the block''s %s', n OPERATOR(pg_catalog.-) b.row_count, b.row_count);
      ELSIF r OPERATOR(pg_catalog.<>) b.root THEN
        RETURN QUERY SELECT b.block, 'altered row'::text,
          'the rows do not hash to the block''s Merkle root: changed, or deleted and replaced'::text;
      END IF;
      RETURN QUERY SELECT b.block, 'altered row'::text, x.what FROM tokex._audit_altered(b.from_seq, b.to_seq) x;
    END IF;
    p := b;
    expect := b.block OPERATOR(pg_catalog.+) 1;
  END LOOP;
  IF with_rows AND to_block IS NULL THEN
    last_seq := COALESCE(p.to_seq, (SELECT pg_catalog.max(a.to_seq) FROM tokex.audit_block a), 0);
    -- not sealed yet: each row's own hash
    RETURN QUERY SELECT NULL::bigint, 'altered row'::text, x.what
      FROM tokex._audit_altered(last_seq, NULL) x;
    IF from_block IS NULL THEN
      -- a seq no insert was given: not above 0, or beyond what the
      -- sequence has handed out (such a row would never be sealed)
      hi := (SELECT s.last_value FROM tokex.audit_seq s);
      RETURN QUERY SELECT NULL::bigint, 'inserted row'::text,
        pg_catalog.format('%s row with seq %s, outside every block', x.tbl, x.seq)
        FROM (SELECT 'audit_event' AS tbl, e.seq FROM tokex.audit_event e
               WHERE e.seq OPERATOR(pg_catalog.<=) 0 OR e.seq OPERATOR(pg_catalog.>) hi
              UNION ALL
              SELECT 'token_use', u.seq FROM tokex.token_use u
               WHERE u.seq OPERATOR(pg_catalog.<=) 0 OR u.seq OPERATOR(pg_catalog.>) hi) x;
    END IF;
  END IF;
END
$$;

-- Rows in lo < seq <= hi (hi NULL: no bound) whose columns no longer hash
-- to their row_hash.
CREATE FUNCTION tokex._audit_altered(lo bigint, hi bigint) RETURNS TABLE (what text)
LANGUAGE sql STABLE SET search_path = pg_catalog, tokex, pg_temp AS $$
  SELECT pg_catalog.format('audit_event %s (seq %s) does not hash to its row_hash', e.exchange_id, e.seq)
    FROM tokex.audit_event e
   WHERE e.seq OPERATOR(pg_catalog.>) lo AND (hi IS NULL OR e.seq OPERATOR(pg_catalog.<=) hi)
     AND e.row_hash IS DISTINCT FROM tokex._audit_row_hash(e)
  UNION ALL
  SELECT pg_catalog.format('token_use %s (seq %s) does not hash to its row_hash', u.id, u.seq)
    FROM tokex.token_use u
   WHERE u.seq OPERATOR(pg_catalog.>) lo AND (hi IS NULL OR u.seq OPERATOR(pg_catalog.<=) hi)
     AND u.row_hash IS DISTINCT FROM tokex._audit_row_hash(u)
$$;

-- One row per problem in blocks from_block .. to_block (all by default):
-- altered row, missing row, inserted row, missing block, altered block,
-- broken link, bad signature.  Nothing when the trail holds.
CREATE FUNCTION tokex.audit_verify(from_block bigint DEFAULT NULL, to_block bigint DEFAULT NULL)
RETURNS TABLE (block bigint, problem text, detail text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
  SELECT * FROM tokex._audit_verify(from_block, to_block, true)
$$;

-- Is the head a witness kept (tokex.audit_head() then) still a prefix of
-- today's chain?  Its signature by a known audit key, the same block today,
-- and every block since linked and signed.  Nothing when it is.
CREATE FUNCTION tokex.audit_verify_head(head text)
RETURNS TABLE (block bigint, problem text, detail text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
DECLARE
  parts record;
  jwk jsonb;
  n bigint;
  today tokex.audit_block;
BEGIN
  SELECT * INTO parts FROM tokex._audit_jws_parts(head);
  IF parts.payload IS NULL OR pg_catalog.jsonb_typeof(parts.payload::jsonb->'block') IS DISTINCT FROM 'string'
     OR (parts.payload::jsonb->>'block') !~ '^[0-9]{1,18}$' THEN
    RAISE EXCEPTION 'not an audit head' USING ERRCODE = 'invalid_parameter_value',
      DETAIL = 'An audit head is the compact JWS tokex.audit_head() returns.';
  END IF;
  n := (parts.payload::jsonb->>'block')::bigint;
  SELECT k.public_jwk INTO jwk FROM tokex.audit_key k WHERE k.kid OPERATOR(pg_catalog.=) (parts.header->>'kid');
  IF jwk IS NULL THEN
    RETURN QUERY SELECT n, 'unknown key'::text,
      pg_catalog.format('the head is signed by audit key %s, which tokex.audit_keys() no longer has', parts.header->>'kid');
  ELSIF tokex._audit_jws_payload(head, jwk) IS NULL THEN
    RETURN QUERY SELECT n, 'bad signature'::text, 'the head''s signature does not verify'::text;
  END IF;
  SELECT * INTO today FROM tokex.audit_block b WHERE b.block OPERATOR(pg_catalog.=) n;
  IF today.block IS NULL THEN
    RETURN QUERY SELECT n, 'missing block'::text,
      pg_catalog.format('the chain today ends at block %s: the witnessed block %s is gone',
                        COALESCE((SELECT pg_catalog.max(b.block) FROM tokex.audit_block b), 0), n);
    RETURN;
  END IF;
  IF tokex._audit_header(today) OPERATOR(pg_catalog.<>) parts.payload THEN
    RETURN QUERY SELECT n, 'fork'::text,
      pg_catalog.format('block %s today differs from the head the witness kept', n);
  END IF;
  RETURN QUERY SELECT * FROM tokex._audit_verify(n, NULL, false);
  -- a retention since the witnessed head is signed like any block, by a key
  -- the database holds: only the witness can judge whether it was due
  RETURN QUERY SELECT b.block, 'pruned'::text,
      pg_catalog.format('block %s, sealed after the witnessed block %s, records the rows of blocks up to %s dropped (the retention); compare with the retention you expect',
                        b.block, n, b.pruned_through)
    FROM tokex.audit_block b
   WHERE b.block OPERATOR(pg_catalog.>) n AND b.pruned_through IS NOT NULL
   ORDER BY b.block;
END
$$;

-- The evidence for an outside verifier (test/interop/audit-verify.mjs):
-- each sealed row of blocks from_block .. to_block as its canonical text,
-- the bytes its row_hash is the RFC 9162 leaf hash of.  With the blocks'
-- JWS (tokex.audit_block) and tokex.audit_keys(), nothing else is needed.
CREATE FUNCTION tokex.audit_rows(from_block bigint DEFAULT NULL, to_block bigint DEFAULT NULL)
RETURNS TABLE (block bigint, seq bigint, canonical text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
  SELECT b.block, x.seq, x.canonical
    FROM tokex.audit_block b,
         LATERAL (SELECT e.seq, tokex._audit_canonical(e) AS canonical FROM tokex.audit_event e
                   WHERE e.seq OPERATOR(pg_catalog.>) b.from_seq AND e.seq OPERATOR(pg_catalog.<=) b.to_seq
                  UNION ALL
                  SELECT u.seq, tokex._audit_canonical(u) FROM tokex.token_use u
                   WHERE u.seq OPERATOR(pg_catalog.>) b.from_seq AND u.seq OPERATOR(pg_catalog.<=) b.to_seq) x
   WHERE b.block OPERATOR(pg_catalog.>=) COALESCE(from_block, 1)
     AND (to_block IS NULL OR b.block OPERATOR(pg_catalog.<=) to_block)
   ORDER BY x.seq
$$;

-- Retention: the rows of whole blocks older than keep (default: the
-- setting tokex.audit_retention; 0 keeps everything) are dropped, after a
-- block is sealed whose signed header records how far (pruned_through), so
-- the chain stays verifiable across the gap and a deletion nobody signed
-- still shows.  A block whose exchange is still referenced by a later use
-- (token_use) is kept, with every block after it.  Returns the number of
-- rows dropped.  The background sealer runs it when the setting is on.
CREATE FUNCTION tokex._audit_pruning() RETURNS boolean
  LANGUAGE C STABLE AS 'MODULE_PATHNAME', 'tokex_audit_pruning';

CREATE FUNCTION tokex._audit_retention() RETURNS integer
  LANGUAGE C STABLE AS 'MODULE_PATHNAME', 'tokex_audit_retention_setting';

CREATE FUNCTION tokex._audit_prune(through_seq bigint) RETURNS bigint
  LANGUAGE C VOLATILE STRICT AS 'MODULE_PATHNAME', 'tokex_audit_prune';

CREATE FUNCTION tokex.apply_audit_retention(keep interval DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
DECLARE
  k bigint;
  bound bigint;
  conflict bigint;
  done bigint;
BEGIN
  keep := COALESCE(keep, pg_catalog.make_interval(secs => tokex._audit_retention()));
  IF keep OPERATOR(pg_catalog.<=) '0'::interval THEN
    RETURN 0;
  END IF;
  SELECT b.block INTO k FROM tokex.audit_block b
   WHERE b.last_at OPERATOR(pg_catalog.<) (pg_catalog.now() OPERATOR(pg_catalog.-) keep)
   ORDER BY b.last_at DESC LIMIT 1;
  SELECT pg_catalog.max(b.pruned_through) INTO done FROM tokex.audit_block b;
  LOOP
    IF k IS NULL OR k OPERATOR(pg_catalog.<=) COALESCE(done, 0) THEN
      RETURN 0;
    END IF;
    SELECT b.to_seq INTO bound FROM tokex.audit_block b WHERE b.block OPERATOR(pg_catalog.=) k;
    -- a later use of an exchange in the range keeps that exchange's block
    SELECT pg_catalog.min(e.seq) INTO conflict
      FROM tokex.token_use u JOIN tokex.audit_event e ON e.exchange_id OPERATOR(pg_catalog.=) u.exchange_id
     WHERE u.seq OPERATOR(pg_catalog.>) bound AND e.seq OPERATOR(pg_catalog.<=) bound;
    EXIT WHEN conflict IS NULL;
    SELECT pg_catalog.max(b.block) INTO k FROM tokex.audit_block b WHERE b.to_seq OPERATOR(pg_catalog.<) conflict;
  END LOOP;
  PERFORM tokex._seal_audit(k);
  RETURN tokex._audit_prune(bound);
END
$$;

-- The SIEM export: one JSON line per audit row since a time, in seq order,
-- as OCSF 1.3 events.  An exchange (or any issuance, granted or refused) is
-- an Authorize Session event (class 3003, activity 1 Assign Privileges: the
-- scopes granted to an actor for a subject); a downstream use is an API
-- Activity event (class 6003).  What OCSF has no place for is under
-- "unmapped".  For COPY ... TO STDOUT, see the README.
CREATE FUNCTION tokex.audit_export(since timestamptz) RETURNS TABLE (line text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
  SELECT x.line FROM (
    SELECT e.seq, pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
      'class_uid', 3003, 'class_name', 'Authorize Session',
      'category_uid', 3, 'category_name', 'Identity & Access Management',
      'activity_id', 1, 'activity_name', 'Assign Privileges',
      'type_uid', 300301, 'type_name', 'Authorize Session: Assign Privileges',
      'time', (pg_catalog.date_part('epoch', e.at) OPERATOR(pg_catalog.*) 1000)::bigint,
      'severity_id', 1, 'severity', 'Informational',
      'status_id', CASE e.decision WHEN 'granted' THEN 1 ELSE 2 END,
      'status', CASE e.decision WHEN 'granted' THEN 'Success' ELSE 'Failure' END,
      'status_code', e.error, 'status_detail', e.reason,
      'message', pg_catalog.format('%s %s: %s for %s', e.operation, e.decision,
                                   COALESCE(e.actor, e.subject, e.client_id, '?'), COALESCE(e.subject, '?')),
      'user', pg_catalog.jsonb_build_object('uid', e.subject),
      'actor', pg_catalog.jsonb_build_object('user', pg_catalog.jsonb_build_object('uid', e.actor),
                                             'app_uid', e.client_id),
      'privileges', pg_catalog.to_jsonb(e.scope),
      'session', pg_catalog.jsonb_build_object('uid', e.subject_sid, 'issuer', e.subject_issuer),
      'dst_endpoint', pg_catalog.jsonb_build_object('svc_name', e.audience),
      'metadata', pg_catalog.jsonb_build_object(
        'version', '1.3.0', 'uid', e.exchange_id, 'sequence', e.seq, 'log_name', 'tokex.audit_event',
        'product', pg_catalog.jsonb_build_object('name', 'tokex', 'vendor_name', 'tokex',
                                                 'version', (SELECT x.extversion FROM pg_catalog.pg_extension x
                                                              WHERE x.extname OPERATOR(pg_catalog.=) 'tokex'))),
      'unmapped', pg_catalog.jsonb_build_object(
        'operation', e.operation, 'jti', e.jti, 'audience', e.audience, 'requested_scope', e.requested_scope,
        'actor_chain', e.actor_chain, 'delegation_ids', e.delegation_ids, 'policy_ids', e.policy_ids,
        'expires_at', e.expires_at, 'issued_token_type', e.issued_token_type,
        'actor_issuer', e.actor_issuer, 'db_user', e.db_user,
        'row_hash', pg_catalog.encode(e.row_hash, 'hex'))))::text
    FROM tokex.audit_event e WHERE e.at OPERATOR(pg_catalog.>=) since
    UNION ALL
    SELECT u.seq, pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
      'class_uid', 6003, 'class_name', 'API Activity',
      'category_uid', 6, 'category_name', 'Application Activity',
      'activity_id', a.id, 'activity_name', a.name,
      'type_uid', 600300 OPERATOR(pg_catalog.+) a.id, 'type_name', 'API Activity: ' OPERATOR(pg_catalog.||) a.name,
      'time', (pg_catalog.date_part('epoch', u.at) OPERATOR(pg_catalog.*) 1000)::bigint,
      'severity_id', 1, 'severity', 'Informational',
      'status_id', CASE WHEN u.outcome ~* '^(ok|success|allowed|2[0-9][0-9])' THEN 1 ELSE 99 END,
      'status', u.outcome,
      'api', pg_catalog.jsonb_build_object('operation', u.action),
      'user', pg_catalog.jsonb_build_object('uid', e.subject),
      'actor', pg_catalog.jsonb_build_object('user', pg_catalog.jsonb_build_object('uid', e.actor),
                                             'app_uid', e.client_id),
      'dst_endpoint', pg_catalog.jsonb_build_object('svc_name', e.audience),
      'metadata', pg_catalog.jsonb_build_object(
        'version', '1.3.0', 'uid', 'use-' OPERATOR(pg_catalog.||) u.id, 'sequence', u.seq,
        'log_name', 'tokex.token_use', 'correlation_uid', u.exchange_id,
        'product', pg_catalog.jsonb_build_object('name', 'tokex', 'vendor_name', 'tokex',
                                                 'version', (SELECT x.extversion FROM pg_catalog.pg_extension x
                                                              WHERE x.extname OPERATOR(pg_catalog.=) 'tokex'))),
      'unmapped', pg_catalog.jsonb_build_object(
        'exchange_id', u.exchange_id, 'actor_chain', e.actor_chain, 'scope', e.scope,
        'recorded_by', u.db_user, 'row_hash', pg_catalog.encode(u.row_hash, 'hex'))))::text
    FROM tokex.token_use u
    LEFT JOIN tokex.audit_event e ON e.exchange_id OPERATOR(pg_catalog.=) u.exchange_id,
    LATERAL (SELECT CASE pg_catalog.upper(pg_catalog.split_part(u.action, ' ', 1))
                      WHEN 'POST' THEN 1 WHEN 'GET' THEN 2 WHEN 'HEAD' THEN 2 WHEN 'PUT' THEN 3
                      WHEN 'PATCH' THEN 3 WHEN 'DELETE' THEN 4 ELSE 99 END AS id) c,
    LATERAL (SELECT c.id, CASE c.id WHEN 1 THEN 'Create' WHEN 2 THEN 'Read' WHEN 3 THEN 'Update'
                                    WHEN 4 THEN 'Delete' ELSE 'Other' END AS name) a
    WHERE u.at OPERATOR(pg_catalog.>=) since
  ) x(seq, line)
  ORDER BY x.seq
$$;

-- the append-only trigger lets the retention delete
CREATE OR REPLACE FUNCTION tokex._append_only() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, tokex, pg_temp AS $$
BEGIN
  -- the one exception: the retention drops sealed rows, their block headers
  -- recording it (tokex.apply_audit_retention, src/seal.c)
  IF TG_OP OPERATOR(pg_catalog.=) 'DELETE' AND tokex._audit_pruning() THEN
    RETURN NULL;
  END IF;
  RAISE EXCEPTION '% is append-only', TG_TABLE_NAME
    USING ERRCODE = 'insufficient_privilege',
          DETAIL = 'Audit rows are evidence: they are never updated or deleted.';
END
$$;

-- the rows of 0.2, in the order of their time, take the first places
ALTER TABLE tokex.audit_event DISABLE TRIGGER audit_event_append_only;
ALTER TABLE tokex.token_use DISABLE TRIGGER token_use_append_only;

WITH o AS (
  SELECT 'e' AS t, exchange_id::text AS k, at FROM tokex.audit_event
  UNION ALL
  SELECT 'u', id::text, at FROM tokex.token_use
), n AS (
  SELECT t, k, pg_catalog.row_number() OVER (ORDER BY at, t, k) AS seq FROM o
), e AS (
  UPDATE tokex.audit_event e SET seq = n.seq FROM n
   WHERE n.t OPERATOR(pg_catalog.=) 'e' AND n.k OPERATOR(pg_catalog.=) e.exchange_id::text
)
UPDATE tokex.token_use u SET seq = n.seq FROM n
 WHERE n.t OPERATOR(pg_catalog.=) 'u' AND n.k OPERATOR(pg_catalog.=) u.id::text;

UPDATE tokex.audit_event e SET row_hash = tokex._audit_row_hash(e);

UPDATE tokex.token_use u SET row_hash = tokex._audit_row_hash(u);

SELECT pg_catalog.setval('tokex.audit_seq', m) FROM (
  SELECT GREATEST((SELECT pg_catalog.max(seq) FROM tokex.audit_event),
                  (SELECT pg_catalog.max(seq) FROM tokex.token_use)) AS m) x
 WHERE m IS NOT NULL;

ALTER TABLE tokex.audit_event ENABLE ALWAYS TRIGGER audit_event_append_only;
ALTER TABLE tokex.token_use ENABLE ALWAYS TRIGGER token_use_append_only;

ALTER TABLE tokex.audit_event ALTER COLUMN seq SET NOT NULL, ALTER COLUMN row_hash SET NOT NULL;

ALTER TABLE tokex.token_use ALTER COLUMN seq SET NOT NULL, ALTER COLUMN row_hash SET NOT NULL;

-- privileges, as 90_privileges.sql sets them
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA tokex FROM PUBLIC;

-- the audit proof (26_audit_proof.sql): auditors seal and verify; the
-- audit keys' public halves are for anyone who checks a head; the rows'
-- canonical text carries the token hashes auditors do not read, so the
-- export for an outside verifier is the administrators'
GRANT EXECUTE ON FUNCTION tokex.seal_audit(), tokex.audit_verify(bigint, bigint),
  tokex.audit_verify_head(text), tokex.audit_head(),
  tokex.audit_export(timestamptz) TO tokex_auditor, tokex_admin;

GRANT EXECUTE ON FUNCTION tokex.audit_rows(bigint, bigint) TO tokex_admin;

GRANT EXECUTE ON FUNCTION tokex.audit_keys() TO tokex_auditor, tokex_admin, tokex_app;

GRANT EXECUTE ON FUNCTION tokex.rotate_audit_key(text) TO tokex_admin;

GRANT SELECT ON tokex.audit_block TO tokex_auditor, tokex_admin;

-- ---------------------------------------------------------------------
-- The decision's fast path (src/fastdecide.c): the SQL face for tests
-- ---------------------------------------------------------------------
CREATE FUNCTION tokex._decide_fast(
  chain_iss text[], chain_sub text[], chain_iat timestamptz[],
  audience text, resource text, requested_scope text[], token_scope text[],
  client_id text, own_issuer text, revoked_keys bytea[] DEFAULT NULL, sid uuid DEFAULT NULL,
  own_jtis uuid[] DEFAULT NULL, may_act_iss text[] DEFAULT NULL, may_act_sub text[] DEFAULT NULL,
  at timestamptz DEFAULT pg_catalog.clock_timestamp())
RETURNS TABLE (
  identity_error text, error text, reason text, chain text[], kinds text[],
  delegation_ids bigint[], policy_ids bigint[], target text, scope text[], ttl_seconds bigint,
  may_act_ids text[], token_format text, require_dpop boolean)
LANGUAGE C STABLE AS 'MODULE_PATHNAME', 'tokex_decide_fast_sql';

REVOKE ALL ON FUNCTION tokex._decide_fast(text[], text[], timestamptz[], text, text, text[], text[], text, text,
  bytea[], uuid, uuid[], text[], text[], timestamptz) FROM PUBLIC;

CREATE FUNCTION tokex._token_active_fast(chain_iss text[], chain_sub text[], iat timestamptz,
                                         own_issuer text, own boolean, revoked_key bytea, jti_uuid uuid,
                                         sid uuid, at timestamptz DEFAULT pg_catalog.clock_timestamp())
RETURNS boolean
LANGUAGE C STABLE AS 'MODULE_PATHNAME', 'tokex_token_active_fast_sql';

REVOKE ALL ON FUNCTION tokex._token_active_fast(text[], text[], timestamptz, text, boolean, bytea, uuid, uuid,
  timestamptz) FROM PUBLIC;

------------------------------------------------------------------------
-- 0.3: audit_event and token_use partitioned by time (25_audit.sql,
-- 26_audit_proof.sql; the README's "Proving the audit trail").  Each 0.2
-- table becomes one partition of its new, partitioned table, for all time
-- up to the end of the current month: nothing is copied, every row keeps
-- its seq and row_hash (their canonical text names the root table, as
-- before), so the sealed chain verifies as it did.  Like every partition
-- made at run time, it leaves the extension (pg_dump dumps it, with its
-- rows); later months get partitions of their own
-- (tokex.audit_partition_ahead).  Its keys, indexes and triggers are made
-- again, as every partition's.  token_use loses its foreign key (a key on
-- a partitioned audit_event would have to include at): tokex.record_use
-- finds the exchange before it inserts.
------------------------------------------------------------------------
ALTER TABLE tokex.token_use DROP CONSTRAINT token_use_exchange_id_fkey;

ALTER TABLE tokex.audit_event RENAME TO audit_event_p_0_2;

ALTER TABLE tokex.token_use RENAME TO token_use_p_0_2;

ALTER SEQUENCE tokex.token_use_id_seq RENAME TO token_use_p_0_2_id_seq;

DROP TRIGGER audit_event_append_only ON tokex.audit_event_p_0_2;

DROP TRIGGER audit_event_row ON tokex.audit_event_p_0_2;

DROP TRIGGER audit_event_ssf ON tokex.audit_event_p_0_2;

DROP TRIGGER token_use_append_only ON tokex.token_use_p_0_2;

DROP TRIGGER token_use_row ON tokex.token_use_p_0_2;

ALTER TABLE tokex.audit_event_p_0_2 DROP CONSTRAINT audit_event_pkey;

DROP INDEX tokex.audit_event_at, tokex.audit_event_jti, tokex.audit_event_subject,
  tokex.audit_event_issued_token, tokex.audit_event_seq;

ALTER TABLE tokex.token_use_p_0_2 DROP CONSTRAINT token_use_pkey;

DROP INDEX tokex.token_use_exchange, tokex.token_use_seq;

-- their CHECK constraints out of the way of the new tables' names (given
-- back below: a partition has its parent's CHECKs by name)
DO $$
DECLARE c record;
BEGIN
  FOR c IN SELECT k.conrelid::regclass AS rel, k.conname FROM pg_catalog.pg_constraint k
            WHERE k.conrelid OPERATOR(pg_catalog.=) ANY (ARRAY['tokex.audit_event_p_0_2'::regclass,
                                                              'tokex.token_use_p_0_2'::regclass])
              AND k.contype OPERATOR(pg_catalog.=) 'c' LOOP
    EXECUTE pg_catalog.format('ALTER TABLE %s RENAME CONSTRAINT %I TO %I', c.rel, c.conname,
                              c.conname OPERATOR(pg_catalog.||) '_0_2');
  END LOOP;
END
$$;

CREATE TABLE tokex.audit_event (
  exchange_id          uuid NOT NULL,
  at                   timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
  decision             text NOT NULL CHECK (decision IN ('granted', 'denied')),
  error                text,
  reason               text,
  subject              text,
  actor                text,
  actor_chain          text[],
  client_id            text,
  audience             text,
  requested_scope      text[],
  scope                text[],
  jti                  uuid,
  expires_at           timestamptz,
  delegation_ids       bigint[],
  policy_ids           bigint[],
  subject_issuer       text,
  actor_issuer         text,
  subject_token_sha256 bytea,
  actor_token_sha256   bytea,
  subject_sid          text,
  issued_token_type    text,
  db_user              text NOT NULL DEFAULT SESSION_USER,
  -- what issued (or refused) a token: an exchange, client_credentials, a
  -- session credential, an identity token, an admin's jwt_sign, or a refused
  -- call at the introspection / revocation endpoint
  operation            text NOT NULL DEFAULT 'exchange'
                       CHECK (operation IN ('exchange', 'client_credentials', 'session', 'identity_token',
                                            'jwt_sign', 'introspect', 'revoke')),
  -- the presented credentials' types (an API key, a verifier's token type)
  subject_token_type   text,
  actor_token_type     text,
  -- a reference token is found by its SHA-256 (the token itself is kept nowhere)
  issued_token_sha256  bytea,
  -- a vaulted credential released by the exchange: its id, never its value
  credential_id        bigint,
  -- the DPoP key (RFC 7638 thumbprint) the issued token is bound to
  dpop_jkt             text,
  CHECK ((decision = 'granted') = (error IS NULL)),
  -- the row's place in the sealed chain and its hash (26_audit_proof.sql)
  seq                  bigint NOT NULL,
  row_hash             bytea NOT NULL
) PARTITION BY RANGE (at);

SELECT pg_catalog.pg_extension_config_dump('tokex.audit_event', '');

CREATE TRIGGER audit_event_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON tokex.audit_event
  FOR EACH STATEMENT EXECUTE FUNCTION tokex._append_only();

ALTER TABLE tokex.audit_event ENABLE ALWAYS TRIGGER audit_event_append_only;

CREATE TRIGGER audit_event_row BEFORE INSERT ON tokex.audit_event
  FOR EACH ROW EXECUTE FUNCTION tokex._audit_row();

ALTER TABLE tokex.audit_event ENABLE ALWAYS TRIGGER audit_event_row;

CREATE TABLE tokex.token_use (
  id          bigint GENERATED ALWAYS AS IDENTITY,
  at          timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
  exchange_id uuid NOT NULL,
  action      text NOT NULL,
  outcome     text NOT NULL,
  db_user     text NOT NULL DEFAULT SESSION_USER,
  seq         bigint NOT NULL,
  row_hash    bytea NOT NULL
) PARTITION BY RANGE (at);

SELECT pg_catalog.pg_extension_config_dump('tokex.token_use', '');

CREATE TRIGGER token_use_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON tokex.token_use
  FOR EACH STATEMENT EXECUTE FUNCTION tokex._append_only();

ALTER TABLE tokex.token_use ENABLE ALWAYS TRIGGER token_use_append_only;

CREATE TRIGGER token_use_row BEFORE INSERT ON tokex.token_use
  FOR EACH ROW EXECUTE FUNCTION tokex._audit_row();

ALTER TABLE tokex.token_use ENABLE ALWAYS TRIGGER token_use_row;

-- the ids of uses go on where 0.2 left them
SELECT pg_catalog.setval('tokex.token_use_id_seq', s.last_value, s.is_called) FROM tokex.token_use_p_0_2_id_seq s;

ALTER TABLE tokex.token_use_p_0_2 ALTER COLUMN id DROP IDENTITY;

-- A partition's keys, indexes and append-only trigger (ALWAYS: also under
-- session_replication_role = replica); its row trigger (tokex._audit_row)
-- it has from the parent.  For the DEFAULT partitions below, those
-- tokex.audit_partition_ahead() makes, and the one an update from 0.2
-- makes of the earlier table.
CREATE FUNCTION tokex._audit_partition_dress(part regclass) RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, tokex, pg_temp AS $$
DECLARE
  n name;
  root regclass;
BEGIN
  SELECT c.relname, i.inhparent::regclass INTO n, root
    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_inherits i ON i.inhrelid OPERATOR(pg_catalog.=) c.oid
   WHERE c.oid OPERATOR(pg_catalog.=) part;
  IF root OPERATOR(pg_catalog.=) 'tokex.audit_event'::regclass THEN
    EXECUTE pg_catalog.format('CREATE UNIQUE INDEX %I ON tokex.%I (exchange_id)', n OPERATOR(pg_catalog.||) '_exchange_id', n);
    EXECUTE pg_catalog.format('CREATE INDEX %I ON tokex.%I (at)', n OPERATOR(pg_catalog.||) '_at', n);
    EXECUTE pg_catalog.format('CREATE UNIQUE INDEX %I ON tokex.%I (jti) WHERE jti IS NOT NULL', n OPERATOR(pg_catalog.||) '_jti', n);
    EXECUTE pg_catalog.format('CREATE INDEX %I ON tokex.%I (subject, at)', n OPERATOR(pg_catalog.||) '_subject', n);
    EXECUTE pg_catalog.format('CREATE UNIQUE INDEX %I ON tokex.%I (issued_token_sha256) WHERE issued_token_sha256 IS NOT NULL',
                              n OPERATOR(pg_catalog.||) '_issued_token', n);
  ELSIF root OPERATOR(pg_catalog.=) 'tokex.token_use'::regclass THEN
    EXECUTE pg_catalog.format('CREATE UNIQUE INDEX %I ON tokex.%I (id)', n OPERATOR(pg_catalog.||) '_id', n);
    EXECUTE pg_catalog.format('CREATE INDEX %I ON tokex.%I (exchange_id)', n OPERATOR(pg_catalog.||) '_exchange', n);
  ELSE
    RAISE EXCEPTION '% is no partition of tokex.audit_event or tokex.token_use', part
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  -- BRIN: rows are appended in nearly seq order, so a sealed block's rows
  -- are a few page ranges, and an insert costs next to nothing
  EXECUTE pg_catalog.format('CREATE INDEX %I ON tokex.%I USING brin (seq)', n OPERATOR(pg_catalog.||) '_seq', n);
  EXECUTE pg_catalog.format('CREATE TRIGGER %I BEFORE UPDATE OR DELETE OR TRUNCATE ON tokex.%I '
                            'FOR EACH STATEMENT EXECUTE FUNCTION tokex._append_only()',
                            n OPERATOR(pg_catalog.||) '_append_only', n);
  EXECUTE pg_catalog.format('ALTER TABLE tokex.%I ENABLE ALWAYS TRIGGER %I', n, n OPERATOR(pg_catalog.||) '_append_only');
END
$$;

-- Rows no other partition takes: those of a time before the first
-- partition made at run time (the first weeks after CREATE EXTENSION), or
-- after the last one if tokex.audit_partition_ahead() has not run for long.
-- Members of the extension, so their rows are dumped as its data.
CREATE TABLE tokex.audit_event_default PARTITION OF tokex.audit_event DEFAULT;

SELECT tokex._audit_partition_dress('tokex.audit_event_default');

SELECT pg_catalog.pg_extension_config_dump('tokex.audit_event_default', '');

CREATE TABLE tokex.token_use_default PARTITION OF tokex.token_use DEFAULT;

SELECT tokex._audit_partition_dress('tokex.token_use_default');

SELECT pg_catalog.pg_extension_config_dump('tokex.token_use_default', '');

-- the 0.2 tables, each the partition of all time up to the end of this month
DO $$
DECLARE
  c record;
BEGIN
  FOR c IN SELECT l.conrelid::regclass AS rel, l.conname AS old, k.conname AS new
             FROM pg_catalog.pg_constraint k
             JOIN pg_catalog.pg_constraint l
               ON l.conrelid OPERATOR(pg_catalog.=) (CASE k.conrelid WHEN 'tokex.audit_event'::regclass
                                                      THEN 'tokex.audit_event_p_0_2'::regclass
                                                      ELSE 'tokex.token_use_p_0_2'::regclass END)
              AND l.contype OPERATOR(pg_catalog.=) 'c'
              AND pg_catalog.pg_get_constraintdef(l.oid) OPERATOR(pg_catalog.=) pg_catalog.pg_get_constraintdef(k.oid)
            WHERE k.conrelid OPERATOR(pg_catalog.=) ANY (ARRAY['tokex.audit_event'::regclass, 'tokex.token_use'::regclass])
              AND k.contype OPERATOR(pg_catalog.=) 'c' LOOP
    EXECUTE pg_catalog.format('ALTER TABLE %s RENAME CONSTRAINT %I TO %I', c.rel, c.old, c.new);
  END LOOP;
END
$$;

DO $$
DECLARE
  hi timestamptz := (pg_catalog.date_trunc('month', GREATEST(pg_catalog.now(),
                       (SELECT pg_catalog.max(at) FROM tokex.audit_event_p_0_2),
                       (SELECT pg_catalog.max(at) FROM tokex.token_use_p_0_2)) AT TIME ZONE 'UTC')
                     OPERATOR(pg_catalog.+) '1 month'::interval) AT TIME ZONE 'UTC';
BEGIN
  EXECUTE pg_catalog.format('ALTER TABLE tokex.audit_event ATTACH PARTITION tokex.audit_event_p_0_2 '
                            'FOR VALUES FROM (MINVALUE) TO (%L)', hi);
  EXECUTE pg_catalog.format('ALTER TABLE tokex.token_use ATTACH PARTITION tokex.token_use_p_0_2 '
                            'FOR VALUES FROM (MINVALUE) TO (%L)', hi);
END
$$;

SELECT tokex._audit_partition_dress('tokex.audit_event_p_0_2');

SELECT tokex._audit_partition_dress('tokex.token_use_p_0_2');

REVOKE ALL ON tokex.audit_event_p_0_2, tokex.token_use_p_0_2 FROM PUBLIC;

ALTER EXTENSION tokex DROP TABLE tokex.audit_event_p_0_2;

ALTER EXTENSION tokex DROP TABLE tokex.token_use_p_0_2;

CREATE TRIGGER audit_event_ssf AFTER INSERT ON tokex.audit_event
  REFERENCING NEW TABLE AS ssf_new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION tokex._ssf_track();

CREATE OR REPLACE VIEW tokex.audit AS
SELECT at, exchange_id, operation, decision, error, reason, subject, actor, actor_chain, client_id,
       audience, requested_scope, scope, jti, expires_at, delegation_ids, policy_ids,
       subject_issuer, actor_issuer, subject_sid, issued_token_type, db_user,
       subject_token_type, actor_token_type, credential_id, dpop_jkt
  FROM tokex.audit_event;

CREATE OR REPLACE VIEW tokex.audit_trail AS
SELECT u.at            AS used_at,
       u.action,
       u.outcome,
       a.subject       AS on_behalf_of,
       a.actor,
       a.actor_chain,
       a.audience,
       a.scope,
       a.client_id,
       a.delegation_ids,
       a.policy_ids,
       a.exchange_id,
       a.at            AS exchanged_at,
       a.expires_at,
       u.db_user       AS recorded_by
  FROM tokex.token_use u
  JOIN tokex.audit_event a USING (exchange_id);

-- The audit row of the token with this jti, read first in the partitions of
-- [near_lo, near_hi) (where the token's iat says it was written: an index
-- probe in one or two partitions), then, only if it is not there, in every
-- other one.  Inlined into its callers (no SET, no SECURITY DEFINER), so a
-- plan prunes the partitions outside the bounds when it runs.
CREATE FUNCTION tokex._audit_by_jti(j uuid, near_lo timestamptz, near_hi timestamptz)
RETURNS SETOF tokex.audit_event
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, tokex, pg_temp AS $$
BEGIN
  IF j IS NULL THEN
    RETURN;
  END IF;
  IF near_lo IS NOT NULL AND near_hi IS NOT NULL THEN
    RETURN QUERY SELECT a.* FROM tokex.audit_event a
                  WHERE a.jti OPERATOR(pg_catalog.=) j
                    AND a.at OPERATOR(pg_catalog.>=) near_lo AND a.at OPERATOR(pg_catalog.<) near_hi
                  LIMIT 1;
    IF FOUND THEN
      RETURN;
    END IF;
  END IF;
  RETURN QUERY SELECT a.* FROM tokex.audit_event a WHERE a.jti OPERATOR(pg_catalog.=) j LIMIT 1;
END
$$;

-- The same for a reference token, by its SHA-256: first in the rows of the
-- last eight days (a reference token lives tokex.max_ttl, at most seven).
CREATE FUNCTION tokex._audit_by_token(h bytea, anywhere boolean DEFAULT false)
RETURNS SETOF tokex.audit_event
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, tokex, pg_temp AS $$
DECLARE
  lo timestamptz := pg_catalog.now() OPERATOR(pg_catalog.-) '8 days'::pg_catalog.interval;
BEGIN
  RETURN QUERY SELECT a.* FROM tokex.audit_event a
                WHERE a.issued_token_sha256 OPERATOR(pg_catalog.=) h AND a.at OPERATOR(pg_catalog.>=) lo
                LIMIT 1;
  IF NOT FOUND AND anywhere THEN
    RETURN QUERY SELECT a.* FROM tokex.audit_event a
                  WHERE a.issued_token_sha256 OPERATOR(pg_catalog.=) h LIMIT 1;
  END IF;
END
$$;

-- A resource server or gateway records a downstream call made with a token
-- tokex minted; the row links to the exchange that minted it.
CREATE OR REPLACE FUNCTION tokex.record_use(token text, action text, outcome text) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
DECLARE
  claims jsonb;
  xid uuid;
  iat timestamptz;
  use_id bigint;
BEGIN
  IF action IS NULL OR outcome IS NULL THEN
    RAISE EXCEPTION 'action and outcome are required' USING ERRCODE = 'null_value_not_allowed';
  END IF;
  IF token LIKE 'tkx\_at\_%' THEN
    -- a reference token: its claims while it is live, as introspection gives them
    claims := tokex.introspect(token);
    IF NOT COALESCE((claims->>'active')::boolean, false) THEN
      RAISE EXCEPTION 'invalid token' USING ERRCODE = 'invalid_authorization_specification',
        DETAIL = 'The reference token is unknown, expired or revoked.';
    END IF;
  ELSE
    claims := tokex.jwt_verify(token);
  END IF;
  IF claims->>'iss' IS DISTINCT FROM tokex._issuer() THEN
    RAISE EXCEPTION 'token was not minted by tokex' USING ERRCODE = 'invalid_authorization_specification';
  END IF;
  -- jti is compared as a uuid, so the lookup is an index probe
  IF (claims->>'jti') ~ '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$' THEN
    -- first where its iat says it was written
    iat := CASE WHEN pg_catalog.jsonb_typeof(claims->'iat') OPERATOR(pg_catalog.=) 'number'
                     AND (claims->>'iat')::numeric BETWEEN 0 AND 253402300799
                THEN pg_catalog.to_timestamp((claims->>'iat')::double precision) END;
    SELECT a.exchange_id INTO xid
      FROM tokex._audit_by_jti((claims->>'jti')::uuid, iat OPERATOR(pg_catalog.-) '1 hour'::interval,
                               iat OPERATOR(pg_catalog.+) '1 hour'::interval) a
     WHERE a.decision OPERATOR(pg_catalog.=) 'granted' AND a.operation OPERATOR(pg_catalog.=) 'exchange';
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

-- The query itself, inlined into the plan tokex.exchange prepares (an SQL
-- function with a pinned search_path or SECURITY DEFINER would not be
-- inlined), so its body names every table, function, operator and type by
-- schema.  Granted to no one: administrators call tokex.decide below.
CREATE OR REPLACE FUNCTION tokex._decide(
  chain_iss text[], chain_sub text[], chain_iat timestamptz[],
  audience text, resource text, requested_scope text[], token_scope text[],
  client_id text, own_issuer text, revoked_keys bytea[] DEFAULT NULL, sid uuid DEFAULT NULL,
  own_jtis uuid[] DEFAULT NULL, may_act_iss text[] DEFAULT NULL, may_act_sub text[] DEFAULT NULL,
  at timestamptz DEFAULT pg_catalog.clock_timestamp())
RETURNS TABLE (
  identity_error text,     -- revoked tokens or session, unknown / inactive identities
  error text, reason text, -- steps 5-8, or NULL when granted
  chain text[], kinds text[],
  delegation_ids bigint[], policy_ids bigint[],
  target text, scope text[], ttl_seconds bigint, may_act_ids text[],
  token_format text,       -- what the target resource takes (tokex.resource.token_format)
  require_dpop boolean)    -- ... and whether only DPoP-bound tokens
LANGUAGE sql STABLE AS $$
WITH
chain AS (  -- each chain position resolved to an identity
  SELECT r.n, r.sub, chain_iat[r.n] AS iat, r.id, r.kind, r.status, r.tokens_valid_after
    FROM tokex._resolve(chain_iss, chain_sub, own_issuer) r
),
identity_problem AS (  -- the first identity problem, in chain order
  SELECT CASE WHEN c.id IS NULL THEN
                pg_catalog.format('%s "%s" is not a known identity',
                                  CASE WHEN c.n OPERATOR(pg_catalog.=) 1 THEN 'subject' ELSE 'actor' END, c.sub)
              WHEN c.status OPERATOR(pg_catalog.<>) 'active' THEN
                pg_catalog.format('identity "%s" is %s', c.id, c.status)
              WHEN c.tokens_valid_after IS NOT NULL AND c.iat IS NOT NULL
                   AND c.iat OPERATOR(pg_catalog.<) c.tokens_valid_after THEN
                pg_catalog.format('token for "%s" was issued before its revocation', c.id)
              WHEN (SELECT pg_catalog.count(*) FROM chain c2
                     WHERE c2.id OPERATOR(pg_catalog.=) c.id) OPERATOR(pg_catalog.>) 1 THEN
                pg_catalog.format('identity "%s" appears twice in the chain', c.id)
         END AS problem
    FROM chain c ORDER BY c.n
),
own_row AS (  -- the audit row of each presented token of tokex's (NULLs: none)
  -- looked for first where the chain's iats say it was written: the
  -- presented tokens were issued between the first and the last
  SELECT j, a.decision, a.actor_token_sha256, a.subject_token_sha256
    FROM pg_catalog.unnest(own_jtis) j
    CROSS JOIN (SELECT pg_catalog.min(t) OPERATOR(pg_catalog.-) '1 hour'::pg_catalog.interval AS lo,
                       pg_catalog.max(t) OPERATOR(pg_catalog.+) '1 hour'::pg_catalog.interval AS hi
                  FROM pg_catalog.unnest(chain_iat) t) near
    LEFT JOIN LATERAL tokex._audit_by_jti(j, near.lo, near.hi) a ON true
),
token_problem AS (  -- revoked or unaudited tokens, a dead session
  SELECT CASE
           -- LIMIT keeps the lookup a per-key index probe in the generic plan
           WHEN EXISTS (SELECT 1 FROM pg_catalog.unnest(revoked_keys) k,
                          LATERAL (SELECT 1 FROM tokex.revoked_token r
                                    WHERE r.key OPERATOR(pg_catalog.=) k LIMIT 1) r) THEN
             'a presented token has been revoked'
           -- a token of ours without its committed audit row was never issued
           WHEN EXISTS (SELECT 1 FROM own_row o
                         WHERE COALESCE(o.decision OPERATOR(pg_catalog.<>) 'granted', true)) THEN
             'a presented token has no audit row'
           -- a token obtained with an API key revoked since dies with the key
           WHEN EXISTS (SELECT 1 FROM own_row a
                          JOIN tokex.api_key k
                            ON k.key_sha256 OPERATOR(pg_catalog.=) ANY (ARRAY[a.actor_token_sha256,
                                                                               a.subject_token_sha256])
                         WHERE k.revoked_at IS NOT NULL) THEN
             'a presented token was obtained with an API key that has been revoked'
           WHEN _decide.sid IS NOT NULL THEN
             (SELECT CASE WHEN s.id IS NULL THEN 'the session is unknown'
                          WHEN s.revoked_at IS NOT NULL THEN 'the session has been revoked'
                          WHEN s.expires_at OPERATOR(pg_catalog.<=) _decide.at THEN 'the session has expired'
                          WHEN d.revoked_at IS NOT NULL OR d.valid_from OPERATOR(pg_catalog.>) _decide.at
                               OR d.valid_until OPERATOR(pg_catalog.<=) _decide.at THEN
                            pg_catalog.format('the delegation the session was started under (%s) is no longer live', d.id)
                     END
                FROM (SELECT 1) one
                LEFT JOIN tokex.session s ON s.id OPERATOR(pg_catalog.=) _decide.sid
                LEFT JOIN tokex.delegation d ON d.id OPERATOR(pg_catalog.=) s.delegation_id)
         END AS problem
),
ids AS (
  SELECT pg_catalog.array_agg(c.id ORDER BY c.n) AS chain,
         pg_catalog.array_agg(c.kind ORDER BY c.n) AS kinds
    FROM chain c
),
by_audience AS (SELECT r.* FROM tokex.resource r WHERE r.audience OPERATOR(pg_catalog.=) _decide.audience),
by_resource AS (
  SELECT r.* FROM tokex.resource r
   WHERE r.resource_uri OPERATOR(pg_catalog.=) _decide.resource
      OR r.audience OPERATOR(pg_catalog.=) _decide.resource
   ORDER BY r.resource_uri OPERATOR(pg_catalog.=) _decide.resource DESC LIMIT 1),
target AS (  -- the one resource the token is for, or why there is none
  SELECT CASE
           WHEN _decide.audience IS NOT NULL AND NOT EXISTS (SELECT 1 FROM by_audience) THEN
             pg_catalog.format('audience "%s" is not a registered resource', _decide.audience)
           WHEN _decide.resource IS NOT NULL AND NOT EXISTS (SELECT 1 FROM by_resource) THEN
             pg_catalog.format('resource "%s" is not a registered resource', _decide.resource)
           WHEN _decide.audience IS NOT NULL AND _decide.resource IS NOT NULL
                AND (SELECT audience FROM by_audience) OPERATOR(pg_catalog.<>) (SELECT audience FROM by_resource) THEN
             'audience and resource name different targets; a token has exactly one'
         END AS problem,
         COALESCE((SELECT ROW(a.*)::tokex.resource FROM by_audience a),
                  (SELECT ROW(r.*)::tokex.resource FROM by_resource r)) AS r
),
hop AS (  -- for each hop (principal at n, delegate at n+1), the best live delegation
  SELECT p.n, p.id AS principal, q.id AS delegate, d.id AS delegation_id, d.scopes, d.audiences,
         d.max_depth, (pg_catalog.cardinality(chain_sub) OPERATOR(pg_catalog.-) p.n) AS needed
    FROM chain p JOIN chain q ON q.n OPERATOR(pg_catalog.=) (p.n OPERATOR(pg_catalog.+) 1)
    LEFT JOIN LATERAL (
      SELECT d.* FROM tokex.delegation d
       WHERE d.principal OPERATOR(pg_catalog.=) p.id AND d.delegate OPERATOR(pg_catalog.=) q.id
         AND d.revoked_at IS NULL
         AND d.valid_from OPERATOR(pg_catalog.<=) _decide.at
         AND (d.valid_until IS NULL OR d.valid_until OPERATOR(pg_catalog.>) _decide.at)
       ORDER BY d.max_depth OPERATOR(pg_catalog.>=) (pg_catalog.cardinality(chain_sub) OPERATOR(pg_catalog.-) p.n) DESC,
                (d.audiences IS NULL
                 OR (SELECT (r).audience FROM target) OPERATOR(pg_catalog.=) ANY (d.audiences)) DESC,
                d.id
       LIMIT 1) d ON true
),
hop_problem AS (
  SELECT CASE
           WHEN h.delegation_id IS NULL THEN
             pg_catalog.format('no live delegation from "%s" to "%s"', h.principal, h.delegate)
           WHEN h.max_depth OPERATOR(pg_catalog.<) h.needed THEN
             pg_catalog.format('delegation %s from "%s" to "%s" allows %s hop(s), the chain needs %s',
                               h.delegation_id, h.principal, h.delegate, h.max_depth, h.needed)
         END AS grant_problem,
         CASE WHEN h.audiences IS NOT NULL
                   AND NOT ((SELECT (r).audience FROM target) OPERATOR(pg_catalog.=) ANY (h.audiences)) THEN
             pg_catalog.format('delegation %s does not cover audience "%s"', h.delegation_id,
                               (SELECT (r).audience FROM target))
         END AS target_problem
    FROM hop h ORDER BY h.n
),
subject AS (SELECT c.id, c.kind FROM chain c WHERE c.n OPERATOR(pg_catalog.=) 1),
actor AS (  -- the current (outermost) actor, if any
  SELECT c.id, c.kind FROM chain c
   WHERE c.n OPERATOR(pg_catalog.=) pg_catalog.cardinality(chain_sub) AND c.n OPERATOR(pg_catalog.>) 1
),
policy_here AS NOT MATERIALIZED (  -- policy rows matching this exchange in everything but the audience
  SELECT p.* FROM tokex.policy p
   WHERE (p.subject IS NULL OR p.subject OPERATOR(pg_catalog.=) (SELECT id FROM subject))
     AND (p.subject_kind IS NULL OR p.subject_kind OPERATOR(pg_catalog.=) (SELECT kind FROM subject))
     AND (p.actor IS NULL OR p.actor OPERATOR(pg_catalog.=) (SELECT id FROM actor))
     AND (p.actor_kind IS NULL OR p.actor_kind OPERATOR(pg_catalog.=) (SELECT kind FROM actor))
     AND (p.client_id IS NULL OR p.client_id OPERATOR(pg_catalog.=) _decide.client_id)
     AND (p.max_depth IS NULL
          OR pg_catalog.cardinality(chain_sub) OPERATOR(pg_catalog.-) 1 OPERATOR(pg_catalog.<=) p.max_depth)
     AND (p.valid IS NULL OR p.valid OPERATOR(pg_catalog.@>) _decide.at)
),
policy AS (  -- ... and the audience too: the rows that decide
  SELECT p.* FROM policy_here p
   WHERE (p.audience IS NULL OR p.audience OPERATOR(pg_catalog.=) (SELECT (r).audience FROM target))
     -- found by index, not by reading every policy: the rows naming this
     -- subject, else this actor, else this audience, else none of the three
     -- (disjoint, and together every row that can match)
     AND p.id OPERATOR(pg_catalog.=) ANY (ARRAY(
           SELECT q.id FROM tokex.policy q WHERE q.subject OPERATOR(pg_catalog.=) (SELECT id FROM subject)
           UNION ALL
           SELECT q.id FROM tokex.policy q
            WHERE q.subject IS NULL AND q.actor OPERATOR(pg_catalog.=) (SELECT id FROM actor)
           UNION ALL
           SELECT q.id FROM tokex.policy q
            WHERE q.subject IS NULL AND q.actor IS NULL
              AND q.audience OPERATOR(pg_catalog.=) (SELECT (r).audience FROM target)
           UNION ALL
           SELECT q.id FROM tokex.policy q WHERE q.subject IS NULL AND q.actor IS NULL AND q.audience IS NULL))
),
-- allow rows that would match but for the audience: the target is what is refused
allow_elsewhere AS (
  SELECT 1 FROM policy_here p
   WHERE p.effect OPERATOR(pg_catalog.=) 'allow' AND p.audience IS NOT NULL
   LIMIT 1
),
deny_all AS (
  SELECT p.id FROM policy p
   WHERE p.effect OPERATOR(pg_catalog.=) 'deny' AND p.scopes IS NULL
   ORDER BY p.priority DESC, p.id LIMIT 1
),
allow AS (SELECT p.* FROM policy p WHERE p.effect OPERATOR(pg_catalog.=) 'allow'),
-- the scopes that survive every bound: resource, each hop's delegation,
-- the subject token, the allow policies (NULL scopes = no bound), minus denies
bound AS (
  SELECT ARRAY(
    SELECT s FROM pg_catalog.unnest((SELECT (r).scopes FROM target)) AS s
     WHERE NOT EXISTS (SELECT 1 FROM hop h WHERE NOT (s OPERATOR(pg_catalog.=) ANY (h.scopes)))
       AND (token_scope IS NULL OR s OPERATOR(pg_catalog.=) ANY (token_scope))
       AND (EXISTS (SELECT 1 FROM allow a WHERE a.scopes IS NULL)
            OR EXISTS (SELECT 1 FROM allow a WHERE s OPERATOR(pg_catalog.=) ANY (a.scopes)))
       AND NOT EXISTS (SELECT 1 FROM policy p
                        WHERE p.effect OPERATOR(pg_catalog.=) 'deny' AND s OPERATOR(pg_catalog.=) ANY (p.scopes))
     ORDER BY s) AS scopes
),
granted AS (
  SELECT CASE WHEN requested_scope IS NULL THEN (SELECT scopes FROM bound)
              ELSE ARRAY(SELECT DISTINCT s FROM pg_catalog.unnest(requested_scope) s ORDER BY s) END AS scopes,
         ARRAY(SELECT DISTINCT s FROM pg_catalog.unnest(requested_scope) s
                WHERE NOT (s OPERATOR(pg_catalog.=) ANY ((SELECT scopes FROM bound)::pg_catalog.text[])) ORDER BY s) AS refused
),
client AS (
  SELECT cl.* FROM tokex.client cl WHERE cl.client_id OPERATOR(pg_catalog.=) _decide.client_id
),
verdict AS (
  SELECT
    CASE
      WHEN _decide.client_id IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM client WHERE client.status OPERATOR(pg_catalog.=) 'active') THEN
        ARRAY['unauthorized_client', pg_catalog.format('client "%s" is not registered or not active', _decide.client_id)]
      -- (COALESCE: grant_types holding a NULL and not the grant is no permission)
      WHEN EXISTS (SELECT 1 FROM client WHERE NOT COALESCE('urn:ietf:params:oauth:grant-type:token-exchange'
                                                  OPERATOR(pg_catalog.=) ANY (client.grant_types), false)) THEN
        ARRAY['unauthorized_client', pg_catalog.format('client "%s" may not use token exchange', _decide.client_id)]
      WHEN EXISTS (SELECT 1 FROM hop_problem WHERE grant_problem IS NOT NULL) THEN
        ARRAY['invalid_grant', (SELECT grant_problem FROM hop_problem WHERE grant_problem IS NOT NULL LIMIT 1)]
      WHEN (SELECT problem FROM target) IS NOT NULL THEN
        ARRAY['invalid_target', (SELECT problem FROM target)]
      WHEN EXISTS (SELECT 1 FROM hop_problem WHERE target_problem IS NOT NULL) THEN
        ARRAY['invalid_target', (SELECT target_problem FROM hop_problem WHERE target_problem IS NOT NULL LIMIT 1)]
      WHEN EXISTS (SELECT 1 FROM client WHERE client.audiences IS NOT NULL
                     AND NOT ((SELECT (r).audience FROM target) OPERATOR(pg_catalog.=) ANY (client.audiences))) THEN
        ARRAY['invalid_target', pg_catalog.format('client "%s" may not obtain tokens for "%s"',
                                                  _decide.client_id, (SELECT (r).audience FROM target))]
      WHEN EXISTS (SELECT 1 FROM deny_all) THEN
        ARRAY['invalid_grant', pg_catalog.format('denied by policy %s', (SELECT id FROM deny_all))]
      WHEN NOT EXISTS (SELECT 1 FROM allow) AND EXISTS (SELECT 1 FROM allow_elsewhere) THEN
        ARRAY['invalid_target', pg_catalog.format('no policy allows audience "%s" here',
                                                  (SELECT (r).audience FROM target))]
      WHEN NOT EXISTS (SELECT 1 FROM allow) THEN
        ARRAY['invalid_grant', 'no policy allows this exchange']
      WHEN pg_catalog.cardinality((SELECT refused FROM granted)) OPERATOR(pg_catalog.>) 0 THEN
        ARRAY['invalid_scope', pg_catalog.format('scope not grantable: %s',
                                                 pg_catalog.array_to_string((SELECT refused FROM granted), ' '))]
      WHEN pg_catalog.cardinality((SELECT scopes FROM granted)) OPERATOR(pg_catalog.=) 0 THEN
        ARRAY['invalid_scope', 'no scope can be granted for this audience']
    END AS v
)
SELECT COALESCE((SELECT problem FROM token_problem),
                (SELECT problem FROM identity_problem WHERE problem IS NOT NULL LIMIT 1)),
       (SELECT v[1] FROM verdict), (SELECT v[2] FROM verdict),
       ids.chain, ids.kinds,
       ARRAY(SELECT h.delegation_id FROM hop h WHERE h.delegation_id IS NOT NULL ORDER BY h.n),
       ARRAY(SELECT p.id FROM policy p ORDER BY p.id),
       (SELECT (r).audience FROM target),
       (SELECT scopes FROM granted),
       (SELECT pg_catalog.floor(EXTRACT(epoch FROM (r).token_ttl))::pg_catalog.int8 FROM target),
       (SELECT pg_catalog.array_agg(m.id ORDER BY m.n)
          FROM tokex._resolve(may_act_iss, may_act_sub, own_issuer) m),
       (SELECT (r).token_format FROM target),
       (SELECT (r).require_dpop FROM target)
  FROM ids
$$;

-- Is a token that verified still live?  tokex's own tokens must have their
-- granted audit row (a token of ours without one was never issued) and be
-- an access token (an exchange's, client_credentials', or an admin's
-- jwt_sign: a session credential or an identity token is no access token
-- for any resource), name known, active identities issued after any
-- tokens_valid_after, not be revoked, their session must be live, and every
-- delegation that minted them (recorded in that audit row) must still
-- stand.  For external tokens tokex knows only what its tables say about
-- them.  No identity may appear twice in the chain.  at: the time of the call.
CREATE OR REPLACE FUNCTION tokex._token_active(chain_iss text[], chain_sub text[], iat timestamptz,
                                    own_issuer text, own boolean, revoked_key bytea, jti_uuid uuid,
                                    sid uuid, at timestamptz DEFAULT pg_catalog.clock_timestamp())
RETURNS TABLE (active boolean)   -- a table function, so the planner inlines it
LANGUAGE sql STABLE AS $$
  SELECT NOT EXISTS (SELECT 1 FROM tokex.revoked_token r WHERE r.key OPERATOR(pg_catalog.=) revoked_key)
     -- the audit row looked for first where the token's iat says it was written
     AND (NOT own OR EXISTS (
           SELECT 1 FROM tokex._audit_by_jti(jti_uuid, iat OPERATOR(pg_catalog.-) '1 hour'::pg_catalog.interval,
                                             iat OPERATOR(pg_catalog.+) '1 hour'::pg_catalog.interval) a
            WHERE a.decision OPERATOR(pg_catalog.=) 'granted'
              AND a.operation OPERATOR(pg_catalog.=) ANY (ARRAY['exchange', 'client_credentials', 'jwt_sign'])
              -- not obtained with an API key revoked since
              AND NOT EXISTS (SELECT 1 FROM tokex.api_key k
                               WHERE k.key_sha256 OPERATOR(pg_catalog.=) ANY (ARRAY[a.actor_token_sha256,
                                                                                   a.subject_token_sha256])
                                 AND k.revoked_at IS NOT NULL)
              -- every delegation that minted it still stands (a deleted one does not)
              AND NOT EXISTS (
                    SELECT 1 FROM pg_catalog.unnest(a.delegation_ids) did
                      LEFT JOIN tokex.delegation d ON d.id OPERATOR(pg_catalog.=) did
                     WHERE d.id IS NULL OR d.revoked_at IS NOT NULL
                        OR d.valid_until OPERATOR(pg_catalog.<=) _token_active.at)))
     -- one pass over the chain: a position that is unknown (for our own
     -- tokens), inactive, revoked by tokens_valid_after, or a repeat (a cycle)
     AND NOT EXISTS (SELECT 1 FROM (
                       SELECT r.*, pg_catalog.count(*) OVER (PARTITION BY COALESCE(r.id, r.sub)) AS seen
                         FROM tokex._resolve(chain_iss, chain_sub, own_issuer) r) c
                      WHERE (c.id IS NULL AND own)
                         OR c.status OPERATOR(pg_catalog.<>) 'active'
                         OR (c.tokens_valid_after IS NOT NULL AND iat OPERATOR(pg_catalog.<) c.tokens_valid_after)
                         OR c.seen OPERATOR(pg_catalog.>) 1)
     AND (sid IS NULL OR EXISTS (
           SELECT 1 FROM tokex.session s
             JOIN tokex.delegation d ON d.id OPERATOR(pg_catalog.=) s.delegation_id
             JOIN tokex.identity ag ON ag.id OPERATOR(pg_catalog.=) s.agent
            WHERE s.id OPERATOR(pg_catalog.=) sid AND s.revoked_at IS NULL
              AND s.expires_at OPERATOR(pg_catalog.>) _token_active.at
              AND d.revoked_at IS NULL AND d.valid_from OPERATOR(pg_catalog.<=) _token_active.at
              AND (d.valid_until IS NULL OR d.valid_until OPERATOR(pg_catalog.>) _token_active.at)
              AND ag.status OPERATOR(pg_catalog.=) 'active'))
$$;

-- Was this token issued to this client: a token of tokex's whose granted
-- audit row names the client.  Not the token's client_id claim: that names
-- the current actor when the exchange had no client, and another issuer's
-- client_id means nothing here.
CREATE OR REPLACE FUNCTION tokex._issued_to(client_id text, claims jsonb) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, tokex, pg_temp AS $$
  SELECT COALESCE(claims->>'iss' OPERATOR(pg_catalog.=) tokex._setting('issuer')
      AND EXISTS (SELECT 1
                    -- first where the token's iat says it was written
                    FROM (SELECT CASE WHEN pg_catalog.jsonb_typeof(claims->'iat') OPERATOR(pg_catalog.=) 'number'
                                       AND (claims->>'iat')::numeric BETWEEN 0 AND 253402300799
                                      THEN pg_catalog.to_timestamp((claims->>'iat')::double precision) END AS at) near,
                         LATERAL tokex._audit_by_jti(
                           CASE WHEN claims->>'jti' ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
                                THEN (claims->>'jti')::uuid END,
                           near.at OPERATOR(pg_catalog.-) '1 hour'::pg_catalog.interval,
                           near.at OPERATOR(pg_catalog.+) '1 hour'::pg_catalog.interval) a
                   WHERE a.decision OPERATOR(pg_catalog.=) 'granted'
                     AND a.client_id OPERATOR(pg_catalog.=) _issued_to.client_id), false)
$$;

-- The revocation row of a token or a bare jti, without inserting it:
-- (issuer, jti text, the token's exp).  A bare jti names a token of issuer
-- (default: tokex itself).
CREATE OR REPLACE FUNCTION tokex._revocation_target(token_or_jti text, issuer text,
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

-- The live tokens of every stream that revocation rev kills.  One branch
-- per kind of tokex.revocation; a kind without a branch names no token.
-- A new kind (an API key, say) is one more WHEN here, one in
-- tokex._ssf_subject, and a trigger that logs it in tokex.revocation.
CREATE OR REPLACE FUNCTION tokex._ssf_affected(rev tokex.revocation) RETURNS SETOF tokex.ssf_token
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, tokex, pg_temp AS $$
DECLARE
  t0 timestamptz := pg_catalog.clock_timestamp();
BEGIN
  CASE rev.kind
    WHEN 'identity' THEN
      -- the identity in any position of the chain; what it stopped: all its
      -- tokens when it is no longer active, else those issued before
      -- tokens_valid_after
      RETURN QUERY
        SELECT t.* FROM tokex.ssf_token t, tokex.identity i
         WHERE i.id OPERATOR(pg_catalog.=) rev.target
           AND (t.subject OPERATOR(pg_catalog.=) rev.target
                OR t.actor_chain OPERATOR(pg_catalog.@>) ARRAY[rev.target])
           AND (i.status OPERATOR(pg_catalog.<>) 'active'
                OR t.issued_at OPERATOR(pg_catalog.<) i.tokens_valid_after);
    WHEN 'delegation' THEN
      RETURN QUERY
        SELECT t.* FROM tokex.ssf_token t
         WHERE t.delegation_ids OPERATOR(pg_catalog.@>) ARRAY[rev.target::bigint];
    WHEN 'session' THEN
      RETURN QUERY
        SELECT t.* FROM tokex.ssf_token t WHERE t.sid OPERATOR(pg_catalog.=) rev.target;
    WHEN 'token' THEN
      -- a jti of tokex's own (another issuer's tokens are no receiver's here)
      RETURN QUERY
        SELECT t.* FROM tokex.ssf_token t
         WHERE rev.target ~ '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$'
           AND t.jti OPERATOR(pg_catalog.=) rev.target::uuid
           AND EXISTS (SELECT 1 FROM tokex.revoked_token r
                        WHERE r.key OPERATOR(pg_catalog.=) tokex._jti_key(tokex._setting('issuer'), rev.target));
    WHEN 'key' THEN
      -- the audit does not record which key signed a token: the key active
      -- when the audit writer committed it, or a token issued while the key
      -- was active (one second either side, for a backend that had not yet
      -- seen a rotation)
      RETURN QUERY
        SELECT t.* FROM tokex.ssf_token t, tokex.key k
         WHERE k.kid OPERATOR(pg_catalog.=) rev.target
           AND (t.kid OPERATOR(pg_catalog.=) rev.target
                OR (t.issued_at OPERATOR(pg_catalog.>=) (k.activated_at OPERATOR(pg_catalog.-) interval '1 second')
                    AND t.issued_at OPERATOR(pg_catalog.<=)
                        (COALESCE(k.retired_at, k.revoked_at, t0) OPERATOR(pg_catalog.+) interval '1 second')));
    WHEN 'api_key' THEN
      -- the tokens obtained with the key, as the actor's or the subject's
      -- credential (the audit row keeps its SHA-256): a revoked key kills them
      RETURN QUERY
        SELECT t.* FROM tokex.ssf_token t
          -- the token's audit row is in the partition of its issued_at (its at)
          JOIN tokex.audit_event a ON a.jti OPERATOR(pg_catalog.=) t.jti AND a.at OPERATOR(pg_catalog.=) t.issued_at
          JOIN tokex.api_key k ON k.id OPERATOR(pg_catalog.=) rev.target::bigint
         WHERE k.key_sha256 OPERATOR(pg_catalog.=) a.actor_token_sha256
            OR k.key_sha256 OPERATOR(pg_catalog.=) a.subject_token_sha256;
    WHEN 'policy' THEN
      -- what tokex.exchange would now refuse, of the tokens policy decided
      -- (an exchange's: its audit row names the policy rows that matched):
      -- this row is a deny that matches the token's exchange (a deny with
      -- scopes: and the token carries one of them), or no allow row matches
      -- it any more (an allow deleted, narrowed or turned to deny)
      RETURN QUERY
        SELECT t.* FROM tokex.ssf_token t
          JOIN tokex.ssf_stream s ON s.stream_id OPERATOR(pg_catalog.=) t.stream_id
          LEFT JOIN tokex.identity si ON si.id OPERATOR(pg_catalog.=) t.subject
          LEFT JOIN tokex.identity ai ON ai.id OPERATOR(pg_catalog.=) t.actor
         WHERE pg_catalog.cardinality(t.policy_ids) OPERATOR(pg_catalog.>) 0
           AND (EXISTS (SELECT 1 FROM tokex.policy p
                         WHERE p.id OPERATOR(pg_catalog.=) rev.target::bigint
                           AND p.effect OPERATOR(pg_catalog.=) 'deny'
                           AND (p.scopes IS NULL OR t.scope OPERATOR(pg_catalog.&&) p.scopes)
                           AND tokex._ssf_policy_matches(p, t, s.audience, si.kind, ai.kind, t0))
                OR NOT EXISTS (SELECT 1 FROM tokex.policy a
                                WHERE a.effect OPERATOR(pg_catalog.=) 'allow'
                                  AND tokex._ssf_policy_matches(a, t, s.audience, si.kind, ai.kind, t0)));
    ELSE
      RETURN;
  END CASE;
END
$$;

CREATE OR REPLACE FUNCTION tokex.apply_audit_retention(keep interval DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
DECLARE
  k bigint;
  bound bigint;
  conflict bigint;
  done bigint;
BEGIN
  keep := COALESCE(keep, pg_catalog.make_interval(secs => tokex._audit_retention()));
  IF keep OPERATOR(pg_catalog.<=) '0'::interval THEN
    RETURN 0;
  END IF;
  SELECT b.block INTO k FROM tokex.audit_block b
   WHERE b.last_at OPERATOR(pg_catalog.<) (pg_catalog.now() OPERATOR(pg_catalog.-) keep)
   ORDER BY b.last_at DESC LIMIT 1;
  SELECT pg_catalog.max(b.pruned_through) INTO done FROM tokex.audit_block b;
  LOOP
    IF k IS NULL OR k OPERATOR(pg_catalog.<=) COALESCE(done, 0) THEN
      RETURN 0;
    END IF;
    SELECT b.to_seq INTO bound FROM tokex.audit_block b WHERE b.block OPERATOR(pg_catalog.=) k;
    -- a later use of an exchange in the range keeps that exchange's block
    SELECT pg_catalog.min(e.seq) INTO conflict
      FROM tokex.token_use u JOIN tokex.audit_event e ON e.exchange_id OPERATOR(pg_catalog.=) u.exchange_id
     WHERE u.seq OPERATOR(pg_catalog.>) bound AND e.seq OPERATOR(pg_catalog.<=) bound;
    EXIT WHEN conflict IS NULL;
    SELECT pg_catalog.max(b.block) INTO k FROM tokex.audit_block b WHERE b.to_seq OPERATOR(pg_catalog.<) conflict;
  END LOOP;
  PERFORM tokex._seal_audit(k);
  RETURN tokex._audit_drop_partitions(bound) OPERATOR(pg_catalog.+) tokex._audit_prune(bound);
END
$$;

-- The partitions of audit_event and token_use (not DEFAULT) that hold only
-- rows with seq <= through_seq and whose time is over, detached and
-- dropped: the retention's cut without a DELETE (tokex._audit_prune then
-- deletes what is left at or below the cut in other partitions).  A
-- partition whose lock is not had within 200 ms (inserts queue behind the
-- wait) is left for the next round.  Returns the number of rows dropped.
CREATE FUNCTION tokex._audit_drop_partitions(through_seq bigint) RETURNS bigint
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, tokex, pg_temp SET lock_timeout = '200ms' AS $$
DECLARE
  p record;
  n bigint;
  total bigint := 0;
  newer boolean;
BEGIN
  FOR p IN
    SELECT c.oid::regclass AS part, c.relname, i.inhparent::regclass AS root
      FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) i.inhrelid
     WHERE i.inhparent OPERATOR(pg_catalog.=) ANY (ARRAY['tokex.audit_event'::regclass, 'tokex.token_use'::regclass])
       AND NOT COALESCE(pg_catalog.pg_get_expr(c.relpartbound, c.oid) OPERATOR(pg_catalog.=) 'DEFAULT', false)
       AND tokex._audit_partition_upper(c.oid) OPERATOR(pg_catalog.<=) pg_catalog.now()
     ORDER BY c.relname
  LOOP
    EXECUTE pg_catalog.format('SELECT EXISTS (SELECT 1 FROM tokex.%I WHERE seq OPERATOR(pg_catalog.>) $1)', p.relname)
      INTO newer USING through_seq;
    CONTINUE WHEN newer;
    BEGIN
      EXECUTE pg_catalog.format('SELECT pg_catalog.count(*) FROM tokex.%I', p.relname) INTO n;
      EXECUTE pg_catalog.format('ALTER TABLE %s DETACH PARTITION tokex.%I', p.root, p.relname);
      EXECUTE pg_catalog.format('DROP TABLE tokex.%I', p.relname);
      total := total OPERATOR(pg_catalog.+) n;
    EXCEPTION WHEN lock_not_available THEN
      RAISE NOTICE 'tokex: partition % is busy, left for the next retention round', p.relname;
    END;
  END LOOP;
  RETURN total;
END
$$;

-- The upper bound of a range partition (NULL for another one).
CREATE FUNCTION tokex._audit_partition_upper(part oid) RETURNS timestamptz
LANGUAGE sql STABLE SET search_path = pg_catalog, tokex, pg_temp AS $$
  SELECT CASE WHEN b ~ 'TO \(MAXVALUE\)$' THEN 'infinity'::timestamptz
              ELSE (pg_catalog.regexp_match(b, 'TO \(''([^'']+)''\)'))[1]::timestamptz END
    FROM (SELECT pg_catalog.pg_get_expr(c.relpartbound, c.oid) AS b FROM pg_catalog.pg_class c
           WHERE c.oid OPERATOR(pg_catalog.=) part) x
$$;

-- Partitions made ahead of time: for audit_event and token_use, one per
-- tokex.audit_partition_interval (day, week or month, UTC) from the next one
-- to tokex.audit_partition_ahead intervals ahead, where none is yet.  Not
-- the current one: a row being inserted meanwhile, routed to the DEFAULT
-- partition before the new one was attached, would then fail the DEFAULT
-- partition's narrowed range.  current => true makes it too, for when
-- nothing inserts (right after CREATE EXTENSION).
-- An interval whose rows are already in the DEFAULT partition (those of
-- the first weeks after CREATE EXTENSION) is left there.  Partitions are
-- made with CREATE TABLE and ATTACH PARTITION, which does not stop the
-- exchanges' inserts (but for those into the DEFAULT partition, a moment);
-- a lock not had at once (any lock: within 100 ms, before a deadlock check,
-- so that the sealer gives way) is tried again at the next call.  The
-- background sealer calls it once a minute; pg_cron or an administrator
-- can too.  Returns the number of partitions made.
CREATE FUNCTION tokex.audit_partition_ahead(current boolean DEFAULT false) RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp SET lock_timeout = '100ms' AS $$
DECLARE
  unit text := COALESCE(pg_catalog.current_setting('tokex.audit_partition_interval', true), 'month');
  ahead integer := COALESCE(pg_catalog.current_setting('tokex.audit_partition_ahead', true), '3')::integer;
  step interval;
  upto timestamptz;
  lo timestamptz;
  hi timestamptz;
  t text;
  made integer := 0;
  busy boolean;
BEGIN
  IF unit NOT IN ('day', 'week', 'month') THEN
    RAISE EXCEPTION 'tokex.audit_partition_interval is day, week or month, not "%"', unit
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  step := pg_catalog.concat('1 ', unit)::interval;
  BEGIN
    FOREACH t IN ARRAY ARRAY['audit_event', 'token_use'] LOOP
      lo := pg_catalog.date_trunc(unit, pg_catalog.now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
      upto := ((lo AT TIME ZONE 'UTC') OPERATOR(pg_catalog.+) (step OPERATOR(pg_catalog.*) (ahead OPERATOR(pg_catalog.+) 1)))
              AT TIME ZONE 'UTC';
      IF NOT COALESCE(current, false) THEN
        lo := ((lo AT TIME ZONE 'UTC') OPERATOR(pg_catalog.+) step) AT TIME ZONE 'UTC';
      END IF;
      WHILE lo OPERATOR(pg_catalog.<) upto LOOP
        hi := ((lo AT TIME ZONE 'UTC') OPERATOR(pg_catalog.+) step) AT TIME ZONE 'UTC';
        -- an interval a partition already covers, even in part, is left as it is
        SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_inherits i
                        WHERE i.inhparent OPERATOR(pg_catalog.=) pg_catalog.format('tokex.%I', t)::regclass
                          AND tokex._audit_partition_lower(i.inhrelid) OPERATOR(pg_catalog.<) hi
                          AND tokex._audit_partition_upper(i.inhrelid) OPERATOR(pg_catalog.>) lo)
          INTO busy;
        IF NOT busy THEN
          EXECUTE pg_catalog.format('SELECT EXISTS (SELECT 1 FROM tokex.%I WHERE at OPERATOR(pg_catalog.>=) $1 '
                                    'AND at OPERATOR(pg_catalog.<) $2)', t OPERATOR(pg_catalog.||) '_default')
            INTO busy USING lo, hi;
        END IF;
        IF NOT busy THEN
          BEGIN
            PERFORM tokex._audit_partition_create(t, lo, hi);
            made := made OPERATOR(pg_catalog.+) 1;
          EXCEPTION WHEN lock_not_available OR check_violation OR invalid_object_definition OR duplicate_table THEN
            -- busy, rows reached the DEFAULT partition meanwhile, or a partition or
            -- table made by hand is in the way: not this interval, and the sealer
            -- that calls this still seals
            NULL;
          END;
        END IF;
        lo := hi;
      END LOOP;
    END LOOP;
  EXCEPTION WHEN lock_not_available THEN
    -- a table or function locked by someone else (DROP EXTENSION, a DDL):
    -- what this call made is undone with the block; next time
    RETURN 0;
  END;
  RETURN made;
END
$$;

CREATE FUNCTION tokex._audit_partition_lower(part oid) RETURNS timestamptz
LANGUAGE sql STABLE SET search_path = pg_catalog, tokex, pg_temp AS $$
  SELECT CASE WHEN b ~ '^FOR VALUES FROM \(MINVALUE\)' THEN '-infinity'::timestamptz
              ELSE (pg_catalog.regexp_match(b, 'FROM \(''([^'']+)''\)'))[1]::timestamptz END
    FROM (SELECT pg_catalog.pg_get_expr(c.relpartbound, c.oid) AS b FROM pg_catalog.pg_class c
           WHERE c.oid OPERATOR(pg_catalog.=) part) x
$$;

-- One partition of table t (audit_event or token_use) for [lo, hi), named
-- t_pYYYYMMDD after lo (UTC): made on its own, dressed, then attached, so
-- the parent is locked only SHARE UPDATE EXCLUSIVE (inserts go on).
CREATE FUNCTION tokex._audit_partition_create(t text, lo timestamptz, hi timestamptz) RETURNS regclass
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, tokex, pg_temp AS $$
DECLARE
  n text := pg_catalog.format('%s_p%s', t, pg_catalog.to_char(lo AT TIME ZONE 'UTC', 'YYYYMMDD'));
BEGIN
  -- the locks ATTACH takes (the parent's, and the DEFAULT partition's, which
  -- it reads), had now or not at all: waiting for a transaction that holds
  -- the DEFAULT partition could deadlock with one that then locks the parent
  EXECUTE pg_catalog.format('LOCK TABLE ONLY tokex.%I IN SHARE UPDATE EXCLUSIVE MODE NOWAIT', t);
  EXECUTE pg_catalog.format('LOCK TABLE ONLY tokex.%I IN ACCESS EXCLUSIVE MODE NOWAIT', t OPERATOR(pg_catalog.||) '_default');
  EXECUTE pg_catalog.format('CREATE TABLE tokex.%I (LIKE tokex.%I INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', n, t);
  -- the range as a constraint first: ATTACH then skips its scan
  EXECUTE pg_catalog.format('ALTER TABLE tokex.%I ADD CONSTRAINT %I CHECK (at >= %L AND at < %L)',
                            n, n OPERATOR(pg_catalog.||) '_range', lo, hi);
  EXECUTE pg_catalog.format('ALTER TABLE tokex.%I ATTACH PARTITION tokex.%I FOR VALUES FROM (%L) TO (%L)', t, n, lo, hi);
  EXECUTE pg_catalog.format('ALTER TABLE tokex.%I DROP CONSTRAINT %I', n, n OPERATOR(pg_catalog.||) '_range');
  PERFORM tokex._audit_partition_dress(pg_catalog.format('tokex.%I', n)::regclass);
  EXECUTE pg_catalog.format('REVOKE ALL ON tokex.%I FROM PUBLIC', n);
  RETURN pg_catalog.format('tokex.%I', n)::regclass;
END
$$;

REVOKE ALL ON FUNCTION tokex._audit_partition_dress(regclass), tokex._audit_by_jti(uuid, timestamptz, timestamptz),
  tokex._audit_by_token(bytea, boolean), tokex._audit_drop_partitions(bigint), tokex._audit_partition_upper(oid),
  tokex._audit_partition_lower(oid), tokex.audit_partition_ahead(boolean),
  tokex._audit_partition_create(text, timestamptz, timestamptz) FROM PUBLIC;

-- making partitions ahead of time drops nothing
GRANT EXECUTE ON FUNCTION tokex.audit_partition_ahead(boolean) TO tokex_admin;
