------------------------------------------------------------------------
-- Audit: one row per token issued or refused, committed before the token
-- is returned (src/audit.c); downstream uses; the auditors' views
------------------------------------------------------------------------

-- Partitioned by time (range on at): the retention drops whole partitions
-- (tokex.apply_audit_retention), and a lookup that knows roughly when its
-- row was written reads one or two partitions (tokex._audit_by_jti).  No
-- index or key is declared on the parent: each partition has its own
-- (tokex._audit_partition_dress), so that pg_dump can restore a partition
-- made at run time (not a member of the extension) onto the parent CREATE
-- EXTENSION makes.  exchange_id, jti and issued_token_sha256 are unique in
-- each partition by index and across partitions by construction (random
-- UUIDs, the SHA-256 of a random token).  See the README's "Proving the
-- audit trail".
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
-- Partitioned like audit_event.  exchange_id names the exchange that
-- minted the token: tokex.record_use, the only writer, finds that exchange
-- before it inserts (a foreign key to a partitioned audit_event would have
-- to name its time too).
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

-- The audit row of the token with this jti, read first in the partitions of
-- [near_lo, near_hi) (where the token's iat says it was written), then, only
-- if it is not there (a token jwt_sign was given an iat of another time),
-- in all of them.  Two statements, not one: a plan that held the second
-- would plan, lock and open every partition for every call.  The first,
-- planned with its bounds as constants, reads one or two partitions.
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

-- The same for a reference token, by its SHA-256: in the rows of the last
-- eight days only (a reference token lives tokex.max_ttl, at most seven:
-- an older one is expired).  anywhere: in all of them (for a revocation).
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
CREATE FUNCTION tokex.record_use(token text, action text, outcome text) RETURNS bigint
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
