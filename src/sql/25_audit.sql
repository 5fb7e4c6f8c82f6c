------------------------------------------------------------------------
-- Audit: one row per token issued or refused, committed before the token
-- is returned (src/audit.c); downstream uses; the auditors' views
------------------------------------------------------------------------

CREATE TABLE tokex.audit_event (
  exchange_id          uuid PRIMARY KEY,
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
);

CREATE INDEX audit_event_at ON tokex.audit_event (at);

CREATE UNIQUE INDEX audit_event_jti ON tokex.audit_event (jti) WHERE jti IS NOT NULL;

CREATE INDEX audit_event_subject ON tokex.audit_event (subject, at);

CREATE UNIQUE INDEX audit_event_issued_token ON tokex.audit_event (issued_token_sha256)
  WHERE issued_token_sha256 IS NOT NULL;

SELECT pg_catalog.pg_extension_config_dump('tokex.audit_event', '');

-- Write one audit_event row (a JSON object of its columns) so that it is
-- committed before the caller hands out the token it stands for, whatever
-- the caller's transaction does next (see src/audit.c).  granted = false: a
-- refusal, which hands out nothing.  Only tokex's own functions call it.
CREATE FUNCTION tokex._audit_write(fields jsonb, granted boolean DEFAULT true) RETURNS void
  LANGUAGE C VOLATILE AS 'MODULE_PATHNAME', 'tokex_audit_write_sql';

CREATE FUNCTION tokex._append_only() RETURNS trigger
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

CREATE TRIGGER audit_event_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON tokex.audit_event
  FOR EACH STATEMENT EXECUTE FUNCTION tokex._append_only();

-- ALWAYS: also under session_replication_role = replica
ALTER TABLE tokex.audit_event ENABLE ALWAYS TRIGGER audit_event_append_only;

-- Downstream uses of minted tokens, recorded by resource servers/gateways.
CREATE TABLE tokex.token_use (
  id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  at          timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
  exchange_id uuid NOT NULL REFERENCES tokex.audit_event (exchange_id),
  action      text NOT NULL,
  outcome     text NOT NULL,
  db_user     text NOT NULL DEFAULT SESSION_USER,
  seq         bigint NOT NULL,
  row_hash    bytea NOT NULL
);

CREATE INDEX token_use_exchange ON tokex.token_use (exchange_id);

SELECT pg_catalog.pg_extension_config_dump('tokex.token_use', '');

CREATE TRIGGER token_use_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON tokex.token_use
  FOR EACH STATEMENT EXECUTE FUNCTION tokex._append_only();

ALTER TABLE tokex.token_use ENABLE ALWAYS TRIGGER token_use_append_only;

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

-- What an auditor reads: who, on whose behalf, with what privilege, result.
CREATE VIEW tokex.audit AS
SELECT at, exchange_id, operation, decision, error, reason, subject, actor, actor_chain, client_id,
       audience, requested_scope, scope, jti, expires_at, delegation_ids, policy_ids,
       subject_issuer, actor_issuer, subject_sid, issued_token_type, db_user,
       subject_token_type, actor_token_type, credential_id, dpop_jkt
  FROM tokex.audit_event;

-- One row per downstream use, joined to the exchange that minted its token.
CREATE VIEW tokex.audit_trail AS
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
