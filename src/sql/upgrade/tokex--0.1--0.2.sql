-- tokex 0.1 -> 0.2, run by ALTER EXTENSION tokex UPDATE.
--
-- It turns a 0.1 installation into exactly what CREATE EXTENSION tokex
-- creates at 0.2 (test/upgrade/run.sh compares the two with pg_dump), and
-- keeps every row.  Function bodies are copies of src/sql/*.sql at 0.2.
--
-- Three tables gain columns in the middle (client.db_roles,
-- audit_event.operation) or a new key (revoked_token), so they are rebuilt:
-- renamed away, created afresh, refilled, dropped.  A rebuilt table must be
-- registered again with pg_extension_config_dump and granted again; the
-- functions whose parameters are its row type (_authenticate,
-- _client_with_token) and the views over it are dropped and created again.
-- Functions whose signature changed are dropped and created (their grants
-- are given again below); functions whose body changed are replaced in
-- place, which keeps their grants.
--
-- Before running it, set tokex.issuer for the database (as for 0.1): the
-- 0.1 revocations are re-keyed by issuer (see revoked_token below).  The
-- audit table is copied, under an exclusive lock, in the update's one
-- transaction: on a large one, update at a quiet time.
--
-- Until 0.2 is released, every change to src/sql/ lands here as well (the
-- upgrade check in CI fails until it does; see CONTRIBUTING in README.md).
\echo Use "ALTER EXTENSION tokex UPDATE TO '0.2'" to load this file. \quit

------------------------------------------------------------------------
-- Privileges given or taken locally
------------------------------------------------------------------------
-- The objects below are dropped and created again, with the privileges
-- tokex gives them.  Privileges an administrator granted or revoked on them
-- since tokex was installed (their difference from pg_init_privs) cannot be
-- carried over from an extension script (given here, pg_dump would count
-- them as tokex's own and leave them out): name them, to be given again
-- after the update.
DO $$
DECLARE
  rels regclass[] := ARRAY['tokex.client', 'tokex.audit_event', 'tokex.revoked_token',
                           'tokex.audit', 'tokex.audit_trail'];
  procs regprocedure[] := ARRAY[
    'tokex.decide(text[], text[], timestamptz[], text, text, text[], text[], text, text, text[], uuid)',
    'tokex._token_active(text[], text[], timestamptz, text, boolean, text, uuid, uuid)',
    'tokex.revoke_token(text, text)', 'tokex._audit_refusal(text, text, text, text)',
    'tokex._authenticate(text, text, text, text, text)',
    'tokex._client_with_token(text, text, text, text, text, text)'];
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
    RAISE WARNING 'privileges set on tokex objects since tokex 0.1 was installed are not carried over'
      USING DETAIL = E'These objects are created again by the update; run after it:\n' || local,
            HINT = 'tokex.revoke_token now takes (token_or_jti text, reason text, issuer text).';
  END IF;
END
$$;

------------------------------------------------------------------------
-- New C entry points
------------------------------------------------------------------------
CREATE FUNCTION tokex._setting(name text) RETURNS text
  LANGUAGE C STABLE STRICT AS 'MODULE_PATHNAME', 'tokex_setting';

CREATE FUNCTION tokex._sign(claims jsonb, typ text) RETURNS text
  LANGUAGE C STRICT VOLATILE AS 'MODULE_PATHNAME', 'tokex_sign_internal';

CREATE FUNCTION tokex._jti_key(issuer text, jti text) RETURNS bytea
  LANGUAGE C IMMUTABLE STRICT AS 'MODULE_PATHNAME', 'tokex_jti_key_sql';

CREATE FUNCTION tokex._jti_text(jti jsonb) RETURNS text
  LANGUAGE C IMMUTABLE STRICT AS 'MODULE_PATHNAME', 'tokex_jti_text_sql';

CREATE FUNCTION tokex._audit_write(fields jsonb, granted boolean DEFAULT true) RETURNS void
  LANGUAGE C VOLATILE AS 'MODULE_PATHNAME', 'tokex_audit_write_sql';

CREATE FUNCTION tokex._exchange_for_client(
  subject_token text, subject_token_type text, actor_token text, actor_token_type text,
  audience text, resource text, scope text, requested_token_type text, client_id text)
RETURNS jsonb
LANGUAGE C VOLATILE AS 'MODULE_PATHNAME', 'tokex_exchange_for_client';

-- settings are read through the library, never current_setting()
CREATE OR REPLACE FUNCTION tokex._issuer() RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, tokex, pg_temp AS $$
DECLARE iss text := tokex._setting('issuer');
BEGIN
  IF iss IS NULL THEN
    RAISE EXCEPTION 'tokex.issuer is not set' USING ERRCODE = 'object_not_in_prerequisite_state',
      HINT = 'Set it with ALTER DATABASE ... SET tokex.issuer = ''https://...''.';
  END IF;
  RETURN iss;
END
$$;

CREATE OR REPLACE FUNCTION tokex.trust_issuer(issuer text, jwks jsonb, audience text DEFAULT NULL) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
BEGIN
  IF trust_issuer.issuer IS NULL OR trust_issuer.issuer OPERATOR(pg_catalog.=) '' OR trust_issuer.jwks IS NULL THEN
    RAISE EXCEPTION 'issuer and jwks are required' USING ERRCODE = 'null_value_not_allowed';
  END IF;
  IF trust_issuer.issuer OPERATOR(pg_catalog.=) tokex._setting('issuer') THEN
    RAISE EXCEPTION 'cannot trust "%" as an external issuer', trust_issuer.issuer
      USING ERRCODE = 'invalid_parameter_value',
            DETAIL = 'It is tokex''s own issuer (tokex.issuer); its keys are tokex.key.';
  END IF;
  PERFORM tokex._jwks_check(trust_issuer.jwks);
  INSERT INTO tokex.issuer AS i (issuer, jwks, audience)
  VALUES (trust_issuer.issuer, trust_issuer.jwks, trust_issuer.audience)
  ON CONFLICT ON CONSTRAINT issuer_pkey DO UPDATE
    SET jwks = EXCLUDED.jwks, audience = EXCLUDED.audience, updated_at = pg_catalog.now();
END
$$;

------------------------------------------------------------------------
-- tokex.revoked_token: keyed by (issuer, jti) instead of jti alone
------------------------------------------------------------------------
-- A 0.1 row is a bare jti, and 0.1 refused every presented token with that
-- jti, whatever its issuer.  0.2 keys a revocation by (issuer, jti), so each
-- 0.1 row becomes:
--   * (tokex.issuer, jti) when jti is a token tokex granted (it has its
--     granted audit row): the token was tokex's own;
--   * otherwise one row for tokex.issuer and one for every issuer trusted at
--     the update, so that no token 0.1 refused is accepted after it (a
--     revocation lost in an upgrade would fail open).  An issuer trusted
--     later is not covered.
-- Rows keep revoked_at, expires_at and reason, and are not announced again:
-- the trigger that logs to tokex.revocation and NOTIFYs is created after the
-- copy (each was logged when it was made).  A numeric jti stays the text 0.1
-- stored (its JSON form), which is the shortest decimal form 0.2 uses for
-- any number tokex or a usual issuer writes.
ALTER TABLE tokex.revoked_token RENAME TO revoked_token_0_1;
ALTER INDEX tokex.revoked_token_pkey RENAME TO revoked_token_0_1_pkey;
-- (its only constraint is the key; see client below for why names matter)

CREATE TABLE tokex.revoked_token (
  key        bytea PRIMARY KEY,
  issuer     text NOT NULL,  -- NULL on INSERT: tokex itself
  jti        text NOT NULL,
  revoked_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
  expires_at timestamptz,
  reason     text
);
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

DO $$
BEGIN
  IF tokex._setting('issuer') IS NULL AND EXISTS (SELECT 1 FROM tokex.revoked_token_0_1) THEN
    RAISE EXCEPTION 'tokex.issuer is not set' USING ERRCODE = 'object_not_in_prerequisite_state',
      DETAIL = 'The update keys the 0.1 token revocations by issuer, and needs tokex''s own.',
      HINT = 'Set it (ALTER DATABASE ... SET tokex.issuer = ''https://...'', or SET in this session) and update again.';
  END IF;
END
$$;

INSERT INTO tokex.revoked_token (issuer, jti, revoked_at, expires_at, reason)
SELECT i.issuer, r.jti, r.revoked_at, r.expires_at, r.reason
  FROM tokex.revoked_token_0_1 r
  CROSS JOIN LATERAL (
    SELECT tokex._setting('issuer') AS issuer
    UNION
    SELECT t.issuer FROM tokex.issuer t
     WHERE NOT CASE WHEN r.jti ~ '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$'
                    THEN EXISTS (SELECT 1 FROM tokex.audit_event a
                                  WHERE a.jti OPERATOR(pg_catalog.=) r.jti::uuid
                                    AND a.decision OPERATOR(pg_catalog.=) 'granted')
                    ELSE false END) i
ON CONFLICT (key) DO NOTHING;

CREATE TRIGGER token_revocation AFTER INSERT ON tokex.revoked_token
  FOR EACH ROW EXECUTE FUNCTION tokex._on_revocation();
SELECT pg_catalog.pg_extension_config_dump('tokex.revoked_token', '');
-- out of the extension first: that also takes it out of its config tables
ALTER EXTENSION tokex DROP TABLE tokex.revoked_token_0_1;
DROP TABLE tokex.revoked_token_0_1;

------------------------------------------------------------------------
-- tokex.client: db_roles (the database roles that act as the client)
------------------------------------------------------------------------
-- Existing clients get no db_roles: a role mapped to no client acts as no
-- client in 0.2, so map each application role after the update (README).
-- The two functions with an OUT parameter of the table's row type go first.
DROP FUNCTION tokex._client_with_token(text, text, text, text, text, text);
DROP FUNCTION tokex._authenticate(text, text, text, text, text);
ALTER TABLE tokex.client RENAME TO client_0_1;
ALTER INDEX tokex.client_pkey RENAME TO client_0_1_pkey;
-- constraint names are chosen unique in the schema: while the 0.1 table
-- keeps its own, the new table's would get a suffix
ALTER TABLE tokex.client_0_1 DROP CONSTRAINT client_client_id_check, DROP CONSTRAINT client_identity_fkey,
  DROP CONSTRAINT client_audiences_check, DROP CONSTRAINT client_status_check, DROP CONSTRAINT client_jwks_check;

CREATE TABLE tokex.client (
  client_id   text PRIMARY KEY CHECK (client_id ~ '^[[:graph:]]+$' AND pg_catalog.length(client_id) <= 256),
  identity    text REFERENCES tokex.identity (id) ON UPDATE CASCADE,
  grant_types text[] NOT NULL DEFAULT '{urn:ietf:params:oauth:grant-type:token-exchange}',
  audiences   text[] CHECK (pg_catalog.array_position(audiences, NULL) IS NULL),
  status      text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
  secret_hash text,            -- pbkdf2-sha256$iterations$salt$hash, never the secret
  -- database roles that call tokex.exchange as this client (SQL face): a
  -- member of one of them is this client; see tokex._sql_client
  db_roles    text[] CHECK (pg_catalog.array_position(db_roles, NULL) IS NULL),
  jwks        jsonb            -- public keys for private_key_jwt (RFC 7523); never secrets
              CHECK (NOT pg_catalog.jsonb_path_exists(jwks, '$.keys[*] ? (@.kty == "oct")')),
  description text,
  created_at  timestamptz NOT NULL DEFAULT pg_catalog.now()
);

INSERT INTO tokex.client (client_id, identity, grant_types, audiences, status, secret_hash, jwks,
                          description, created_at)
SELECT client_id, identity, grant_types, audiences, status, secret_hash, jwks, description, created_at
  FROM tokex.client_0_1;
SELECT pg_catalog.pg_extension_config_dump('tokex.client', '');
ALTER EXTENSION tokex DROP TABLE tokex.client_0_1;
DROP TABLE tokex.client_0_1;

------------------------------------------------------------------------
-- tokex.audit_event: operation (what issued or refused the token)
------------------------------------------------------------------------
-- 0.1 wrote audit rows in two places: the C exchange (every granted one
-- has the subject token's hash) and the client_credentials grant (granted,
-- no subject token); the token endpoint's refusals are exchanges, as in
-- 0.2.  Session credentials, identity tokens and jwt_sign had no audit row
-- in 0.1, so 0.2 refuses those tokens (a token of tokex's own without its
-- audit row was never issued): start new sessions after the update.
-- Every row is copied, and the copy is counted before the 0.1 table goes.
DROP VIEW tokex.audit_trail;
DROP VIEW tokex.audit;
ALTER TABLE tokex.token_use DROP CONSTRAINT token_use_exchange_id_fkey;
ALTER TABLE tokex.audit_event RENAME TO audit_event_0_1;
ALTER INDEX tokex.audit_event_pkey RENAME TO audit_event_0_1_pkey;
ALTER INDEX tokex.audit_event_at RENAME TO audit_event_0_1_at;
ALTER INDEX tokex.audit_event_jti RENAME TO audit_event_0_1_jti;
ALTER INDEX tokex.audit_event_subject RENAME TO audit_event_0_1_subject;
ALTER TABLE tokex.audit_event_0_1 DROP CONSTRAINT audit_event_decision_check, DROP CONSTRAINT audit_event_check;

CREATE TABLE tokex.audit_event (
  exchange_id          uuid PRIMARY KEY,
  at                   timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
  -- what issued (or refused) a token: an exchange, client_credentials, a
  -- session credential, an identity token, an admin's jwt_sign, or a refused
  -- call at the introspection / revocation endpoint
  operation            text NOT NULL DEFAULT 'exchange'
                       CHECK (operation IN ('exchange', 'client_credentials', 'session', 'identity_token',
                                            'jwt_sign', 'introspect', 'revoke')),
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
  CHECK ((decision = 'granted') = (error IS NULL))
);
CREATE INDEX audit_event_at ON tokex.audit_event (at);
CREATE UNIQUE INDEX audit_event_jti ON tokex.audit_event (jti) WHERE jti IS NOT NULL;
CREATE INDEX audit_event_subject ON tokex.audit_event (subject, at);

INSERT INTO tokex.audit_event (exchange_id, at, operation, decision, error, reason, subject, actor,
                               actor_chain, client_id, audience, requested_scope, scope, jti, expires_at,
                               delegation_ids, policy_ids, subject_issuer, actor_issuer,
                               subject_token_sha256, actor_token_sha256, subject_sid, issued_token_type,
                               db_user)
SELECT exchange_id, at,
       CASE WHEN decision OPERATOR(pg_catalog.=) 'granted' AND subject_token_sha256 IS NULL
            THEN 'client_credentials' ELSE 'exchange' END,
       decision, error, reason, subject, actor,
       actor_chain, client_id, audience, requested_scope, scope, jti, expires_at,
       delegation_ids, policy_ids, subject_issuer, actor_issuer,
       subject_token_sha256, actor_token_sha256, subject_sid, issued_token_type,
       db_user
  FROM tokex.audit_event_0_1;
DO $$
BEGIN
  IF (SELECT pg_catalog.count(*) FROM tokex.audit_event)
     OPERATOR(pg_catalog.<>) (SELECT pg_catalog.count(*) FROM tokex.audit_event_0_1) THEN
    RAISE EXCEPTION 'audit rows were not all copied';
  END IF;
END
$$;
SELECT pg_catalog.pg_extension_config_dump('tokex.audit_event', '');
CREATE TRIGGER audit_event_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON tokex.audit_event
  FOR EACH STATEMENT EXECUTE FUNCTION tokex._append_only();
-- ALWAYS: also under session_replication_role = replica
ALTER TABLE tokex.audit_event ENABLE ALWAYS TRIGGER audit_event_append_only;
ALTER TABLE tokex.token_use ADD CONSTRAINT token_use_exchange_id_fkey
  FOREIGN KEY (exchange_id) REFERENCES tokex.audit_event (exchange_id);
ALTER EXTENSION tokex DROP TABLE tokex.audit_event_0_1;
DROP TABLE tokex.audit_event_0_1;

CREATE VIEW tokex.audit AS
SELECT at, exchange_id, operation, decision, error, reason, subject, actor, actor_chain, client_id,
       audience, requested_scope, scope, jti, expires_at, delegation_ids, policy_ids,
       subject_issuer, actor_issuer, subject_sid, issued_token_type, db_user
  FROM tokex.audit_event;

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

------------------------------------------------------------------------
-- The decision (new arguments and result column: dropped and created)
------------------------------------------------------------------------
DROP FUNCTION tokex.decide(text[], text[], timestamptz[], text, text, text[], text[], text, text, text[], uuid);
DROP FUNCTION tokex._token_active(text[], text[], timestamptz, text, boolean, text, uuid, uuid);

CREATE FUNCTION tokex.decide(
  chain_iss text[], chain_sub text[], chain_iat timestamptz[],
  audience text, resource text, requested_scope text[], token_scope text[],
  client_id text, own_issuer text, revoked_keys bytea[] DEFAULT NULL, sid uuid DEFAULT NULL,
  own_jtis uuid[] DEFAULT NULL, may_act_iss text[] DEFAULT NULL, may_act_sub text[] DEFAULT NULL,
  at timestamptz DEFAULT pg_catalog.clock_timestamp())
RETURNS TABLE (
  identity_error text,     -- revoked tokens or session, unknown / inactive identities
  error text, reason text, -- steps 4-7, or NULL when granted
  chain text[], kinds text[],
  delegation_ids bigint[], policy_ids bigint[],
  target text, scope text[], ttl interval, may_act_ids text[])
LANGUAGE sql STABLE AS $$
WITH
c AS (  -- each chain position resolved to an identity
  SELECT r.n, r.sub, chain_iat[r.n] AS iat, r.id, r.kind, r.status, r.tokens_valid_after
    FROM tokex._resolve(chain_iss, chain_sub, own_issuer) r
),
idp AS (  -- the first identity problem, in chain order
  SELECT CASE WHEN c.id IS NULL THEN
                pg_catalog.format('%s "%s" is not a known identity',
                                  CASE WHEN c.n = 1 THEN 'subject' ELSE 'actor' END, c.sub)
              WHEN c.status <> 'active' THEN
                pg_catalog.format('identity "%s" is %s', c.id, c.status)
              WHEN c.tokens_valid_after IS NOT NULL AND c.iat IS NOT NULL
                   AND c.iat < c.tokens_valid_after THEN
                pg_catalog.format('token for "%s" was issued before its revocation', c.id)
              WHEN (SELECT pg_catalog.count(*) FROM c c2 WHERE c2.id = c.id) > 1 THEN
                pg_catalog.format('identity "%s" appears twice in the chain', c.id)
         END AS problem
    FROM c ORDER BY c.n
),
tok AS (  -- revoked tokens and sessions
  SELECT CASE
           -- LIMIT keeps the lookup a per-jti index probe in the generic plan
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
           WHEN decide.sid IS NOT NULL THEN
             (SELECT CASE WHEN s.id IS NULL THEN 'the session is unknown'
                          WHEN s.revoked_at IS NOT NULL THEN 'the session has been revoked'
                          WHEN s.expires_at <= decide.at THEN 'the session has expired'
                          WHEN d.revoked_at IS NOT NULL OR d.valid_from > decide.at
                               OR d.valid_until <= decide.at THEN
                            pg_catalog.format('the delegation the session was started under (%s) is no longer live', d.id)
                     END
                FROM (SELECT 1) one
                LEFT JOIN tokex.session s ON s.id OPERATOR(pg_catalog.=) decide.sid
                LEFT JOIN tokex.delegation d ON d.id OPERATOR(pg_catalog.=) s.delegation_id)
         END AS problem
),
ids AS (
  SELECT pg_catalog.array_agg(c.id ORDER BY c.n) AS chain,
         pg_catalog.array_agg(c.kind ORDER BY c.n) AS kinds
    FROM c
),
ra AS (SELECT r.* FROM tokex.resource r WHERE r.audience OPERATOR(pg_catalog.=) decide.audience),
rr AS (SELECT r.* FROM tokex.resource r
        WHERE r.resource_uri OPERATOR(pg_catalog.=) decide.resource
           OR r.audience OPERATOR(pg_catalog.=) decide.resource
        ORDER BY r.resource_uri OPERATOR(pg_catalog.=) decide.resource DESC LIMIT 1),
tgt AS (
  SELECT CASE
           WHEN decide.audience IS NOT NULL AND NOT EXISTS (SELECT 1 FROM ra) THEN
             pg_catalog.format('audience "%s" is not a registered resource', decide.audience)
           WHEN decide.resource IS NOT NULL AND NOT EXISTS (SELECT 1 FROM rr) THEN
             pg_catalog.format('resource "%s" is not a registered resource', decide.resource)
           WHEN decide.audience IS NOT NULL AND decide.resource IS NOT NULL
                AND (SELECT audience FROM ra) IS DISTINCT FROM (SELECT audience FROM rr) THEN
             'audience and resource name different targets; a token has exactly one'
         END AS problem,
         COALESCE((SELECT ROW(ra.*)::tokex.resource FROM ra), (SELECT ROW(rr.*)::tokex.resource FROM rr)) AS r
),
hop AS (  -- for each hop (principal at n, delegate at n+1), the best live delegation
  SELECT p.n, p.id AS principal, q.id AS delegate, d.id AS delegation_id, d.scopes, d.audiences,
         d.max_depth, (pg_catalog.cardinality(chain_sub) - p.n) AS needed
    FROM c p JOIN c q ON q.n = p.n + 1
    LEFT JOIN LATERAL (
      SELECT d.* FROM tokex.delegation d
       WHERE d.principal OPERATOR(pg_catalog.=) p.id AND d.delegate OPERATOR(pg_catalog.=) q.id
         AND d.revoked_at IS NULL
         AND d.valid_from <= decide.at
         AND (d.valid_until IS NULL OR d.valid_until > decide.at)
       ORDER BY d.max_depth >= (pg_catalog.cardinality(chain_sub) - p.n) DESC,
                (d.audiences IS NULL OR (SELECT (r).audience FROM tgt) OPERATOR(pg_catalog.=) ANY (d.audiences)) DESC,
                d.id
       LIMIT 1) d ON true
),
hopp AS (
  SELECT CASE
           WHEN h.delegation_id IS NULL THEN
             pg_catalog.format('no live delegation from "%s" to "%s"', h.principal, h.delegate)
           WHEN h.max_depth < h.needed THEN
             pg_catalog.format('delegation %s from "%s" to "%s" allows %s hop(s), the chain needs %s',
                               h.delegation_id, h.principal, h.delegate, h.max_depth, h.needed)
         END AS grant_problem,
         CASE WHEN h.audiences IS NOT NULL
                   AND NOT ((SELECT (r).audience FROM tgt) OPERATOR(pg_catalog.=) ANY (h.audiences)) THEN
             pg_catalog.format('delegation %s does not cover audience "%s"', h.delegation_id,
                               (SELECT (r).audience FROM tgt))
         END AS target_problem
    FROM hop h ORDER BY h.n
),
subj AS (SELECT c.id, c.kind FROM c WHERE c.n = 1),
act AS (SELECT c.id, c.kind FROM c WHERE c.n = pg_catalog.cardinality(chain_sub) AND c.n > 1),
pol AS (
  SELECT p.* FROM tokex.policy p
   WHERE (p.subject IS NULL OR p.subject OPERATOR(pg_catalog.=) (SELECT id FROM subj))
     AND (p.subject_kind IS NULL OR p.subject_kind OPERATOR(pg_catalog.=) (SELECT kind FROM subj))
     AND (p.actor IS NULL OR p.actor OPERATOR(pg_catalog.=) (SELECT id FROM act))
     AND (p.actor_kind IS NULL OR p.actor_kind OPERATOR(pg_catalog.=) (SELECT kind FROM act))
     AND (p.audience IS NULL OR p.audience OPERATOR(pg_catalog.=) (SELECT (r).audience FROM tgt))
     AND (p.client_id IS NULL OR p.client_id OPERATOR(pg_catalog.=) decide.client_id)
     AND (p.max_depth IS NULL OR pg_catalog.cardinality(chain_sub) - 1 <= p.max_depth)
     AND (p.valid IS NULL OR p.valid OPERATOR(pg_catalog.@>) decide.at)
),
-- allow rows that would match but for the audience: the target is what is refused
allow_elsewhere AS (
  SELECT 1 FROM tokex.policy p
   WHERE p.effect = 'allow' AND p.audience IS NOT NULL
     AND (p.subject IS NULL OR p.subject OPERATOR(pg_catalog.=) (SELECT id FROM subj))
     AND (p.subject_kind IS NULL OR p.subject_kind OPERATOR(pg_catalog.=) (SELECT kind FROM subj))
     AND (p.actor IS NULL OR p.actor OPERATOR(pg_catalog.=) (SELECT id FROM act))
     AND (p.actor_kind IS NULL OR p.actor_kind OPERATOR(pg_catalog.=) (SELECT kind FROM act))
     AND (p.client_id IS NULL OR p.client_id OPERATOR(pg_catalog.=) decide.client_id)
     AND (p.max_depth IS NULL OR pg_catalog.cardinality(chain_sub) - 1 <= p.max_depth)
     AND (p.valid IS NULL OR p.valid OPERATOR(pg_catalog.@>) decide.at)
   LIMIT 1
),
deny_all AS (SELECT p.id FROM pol p WHERE p.effect = 'deny' AND p.scopes IS NULL ORDER BY p.priority DESC, p.id LIMIT 1),
allow AS (SELECT p.* FROM pol p WHERE p.effect = 'allow'),
-- the scopes that survive every bound: resource, each hop's delegation,
-- the subject token, the allow policies (NULL scopes = no bound), minus denies
bound AS (
  SELECT ARRAY(
    SELECT s FROM pg_catalog.unnest((SELECT (r).scopes FROM tgt)) AS s
     WHERE NOT EXISTS (SELECT 1 FROM hop h WHERE NOT (s OPERATOR(pg_catalog.=) ANY (h.scopes)))
       AND (token_scope IS NULL OR s OPERATOR(pg_catalog.=) ANY (token_scope))
       AND (EXISTS (SELECT 1 FROM allow a WHERE a.scopes IS NULL)
            OR EXISTS (SELECT 1 FROM allow a WHERE s OPERATOR(pg_catalog.=) ANY (a.scopes)))
       AND NOT EXISTS (SELECT 1 FROM pol p WHERE p.effect = 'deny' AND s OPERATOR(pg_catalog.=) ANY (p.scopes))
     ORDER BY s) AS scopes
),
granted AS (
  SELECT CASE WHEN requested_scope IS NULL THEN (SELECT scopes FROM bound)
              ELSE ARRAY(SELECT DISTINCT s FROM pg_catalog.unnest(requested_scope) s ORDER BY s) END AS scopes,
         ARRAY(SELECT DISTINCT s FROM pg_catalog.unnest(requested_scope) s
                WHERE NOT (s OPERATOR(pg_catalog.=) ANY ((SELECT scopes FROM bound)::text[])) ORDER BY s) AS refused
),
cl AS (
  SELECT cl.* FROM tokex.client cl WHERE cl.client_id OPERATOR(pg_catalog.=) decide.client_id
),
verdict AS (
  SELECT
    CASE
      WHEN decide.client_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM cl WHERE cl.status = 'active') THEN
        ARRAY['unauthorized_client', pg_catalog.format('client "%s" is not registered or not active', decide.client_id)]
      WHEN EXISTS (SELECT 1 FROM cl WHERE NOT ('urn:ietf:params:oauth:grant-type:token-exchange'
                                              OPERATOR(pg_catalog.=) ANY (cl.grant_types))) THEN
        ARRAY['unauthorized_client', pg_catalog.format('client "%s" may not use token exchange', decide.client_id)]
      WHEN EXISTS (SELECT 1 FROM hopp WHERE grant_problem IS NOT NULL) THEN
        ARRAY['invalid_grant', (SELECT grant_problem FROM hopp WHERE grant_problem IS NOT NULL LIMIT 1)]
      WHEN (SELECT problem FROM tgt) IS NOT NULL THEN
        ARRAY['invalid_target', (SELECT problem FROM tgt)]
      WHEN EXISTS (SELECT 1 FROM hopp WHERE target_problem IS NOT NULL) THEN
        ARRAY['invalid_target', (SELECT target_problem FROM hopp WHERE target_problem IS NOT NULL LIMIT 1)]
      WHEN EXISTS (SELECT 1 FROM cl WHERE cl.audiences IS NOT NULL
                     AND NOT ((SELECT (r).audience FROM tgt) OPERATOR(pg_catalog.=) ANY (cl.audiences))) THEN
        ARRAY['invalid_target', pg_catalog.format('client "%s" may not obtain tokens for "%s"',
                                                  decide.client_id, (SELECT (r).audience FROM tgt))]
      WHEN EXISTS (SELECT 1 FROM deny_all) THEN
        ARRAY['invalid_grant', pg_catalog.format('denied by policy %s', (SELECT id FROM deny_all))]
      WHEN NOT EXISTS (SELECT 1 FROM allow) AND EXISTS (SELECT 1 FROM allow_elsewhere) THEN
        ARRAY['invalid_target', pg_catalog.format('no policy allows audience "%s" here',
                                                  (SELECT (r).audience FROM tgt))]
      WHEN NOT EXISTS (SELECT 1 FROM allow) THEN
        ARRAY['invalid_grant', 'no policy allows this exchange']
      WHEN pg_catalog.cardinality((SELECT refused FROM granted)) > 0 THEN
        ARRAY['invalid_scope', pg_catalog.format('scope not grantable: %s',
                                                 pg_catalog.array_to_string((SELECT refused FROM granted), ' '))]
      WHEN pg_catalog.cardinality((SELECT scopes FROM granted)) = 0 THEN
        ARRAY['invalid_scope', 'no scope can be granted for this audience']
    END AS v
)
SELECT COALESCE((SELECT problem FROM tok), (SELECT problem FROM idp WHERE problem IS NOT NULL LIMIT 1)),
       (SELECT v[1] FROM verdict), (SELECT v[2] FROM verdict),
       ids.chain, ids.kinds,
       ARRAY(SELECT h.delegation_id FROM hop h WHERE h.delegation_id IS NOT NULL ORDER BY h.n),
       ARRAY(SELECT p.id FROM pol p ORDER BY p.id),
       (SELECT (r).audience FROM tgt),
       (SELECT scopes FROM granted),
       (SELECT (r).token_ttl FROM tgt),
       (SELECT pg_catalog.array_agg(m.id ORDER BY m.n)
          FROM tokex._resolve(may_act_iss, may_act_sub, own_issuer) m)
  FROM ids
$$;

CREATE FUNCTION tokex._token_active(chain_iss text[], chain_sub text[], iat timestamptz,
                                    own_issuer text, own boolean, revoked_key bytea, jti_uuid uuid,
                                    sid uuid, at timestamptz DEFAULT pg_catalog.clock_timestamp())
RETURNS TABLE (active boolean)   -- a table function, so the planner inlines it
LANGUAGE sql STABLE AS $$
  SELECT NOT EXISTS (SELECT 1 FROM tokex.revoked_token r WHERE r.key OPERATOR(pg_catalog.=) revoked_key)
     AND (NOT own OR EXISTS (
           SELECT 1 FROM tokex.audit_event a
            WHERE a.jti OPERATOR(pg_catalog.=) jti_uuid AND a.decision OPERATOR(pg_catalog.=) 'granted'
              AND a.operation IN ('exchange', 'client_credentials', 'jwt_sign')))
     AND NOT EXISTS (SELECT 1 FROM tokex._resolve(chain_iss, chain_sub, own_issuer) c
                      WHERE (c.id IS NULL AND own)
                         OR c.status OPERATOR(pg_catalog.<>) 'active'
                         OR (c.tokens_valid_after IS NOT NULL AND iat < c.tokens_valid_after))
     AND NOT EXISTS (SELECT 1 FROM tokex._resolve(chain_iss, chain_sub, own_issuer) c
                      GROUP BY COALESCE(c.id, c.sub) HAVING pg_catalog.count(*) > 1)
     AND (sid IS NULL OR EXISTS (
           SELECT 1 FROM tokex.session s
             JOIN tokex.delegation d ON d.id OPERATOR(pg_catalog.=) s.delegation_id
             JOIN tokex.identity ag ON ag.id OPERATOR(pg_catalog.=) s.agent
            WHERE s.id OPERATOR(pg_catalog.=) sid AND s.revoked_at IS NULL
              AND s.expires_at > _token_active.at
              AND d.revoked_at IS NULL AND d.valid_from <= _token_active.at
              AND (d.valid_until IS NULL OR d.valid_until > _token_active.at)
              AND ag.status OPERATOR(pg_catalog.=) 'active'))
     AND NOT EXISTS (
           SELECT 1 FROM tokex.audit_event a
             JOIN tokex.delegation d ON d.id OPERATOR(pg_catalog.=) ANY (a.delegation_ids)
            WHERE a.jti OPERATOR(pg_catalog.=) jti_uuid
              AND (d.revoked_at IS NOT NULL OR d.valid_until <= _token_active.at))
$$;

------------------------------------------------------------------------
-- Sessions, identity tokens, revocation: each token leaves with its audit row
------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION tokex.start_session(principal text, agent text, scopes text[] DEFAULT NULL,
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

CREATE OR REPLACE FUNCTION tokex.identity_token(identity text, ttl interval DEFAULT '15 minutes')
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

CREATE OR REPLACE FUNCTION tokex.revoke_identity(id text, reason text) RETURNS void
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

DROP FUNCTION tokex.revoke_token(text, text);

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

------------------------------------------------------------------------
-- The HTTP face
------------------------------------------------------------------------
DROP FUNCTION tokex._audit_refusal(text, text, text, text);

CREATE FUNCTION tokex._audit_refusal(error text, reason text, client_id text, audience text DEFAULT NULL,
                                     operation text DEFAULT 'exchange')
RETURNS void
LANGUAGE sql VOLATILE SET search_path = pg_catalog, tokex, pg_temp AS $$
  SELECT tokex._audit_write(pg_catalog.jsonb_build_object(
    'exchange_id', pg_catalog.gen_random_uuid(), 'operation', operation, 'decision', 'denied',
    'error', error, 'reason', pg_catalog.left(reason, 1024),
    'client_id', pg_catalog.left(client_id, 256), 'audience', pg_catalog.left(audience, 1024)), false)
$$;

CREATE OR REPLACE FUNCTION tokex._endpoint(path text) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, tokex, pg_temp AS $$
  SELECT pg_catalog.rtrim(COALESCE(tokex._setting('base_url'), tokex._setting('issuer')), '/')
         OPERATOR(pg_catalog.||) path
$$;

CREATE FUNCTION tokex._authenticate(client_id text, client_secret text, client_assertion text,
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
  -- check a hash even for unknown clients, so timing does not tell them apart
  IF NOT tokex._verify_secret(COALESCE(secret, ''),
                              COALESCE(client.secret_hash,
                                       'pbkdf2-sha256$600000$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA'))
     OR client.client_id IS NULL OR client.secret_hash IS NULL
     OR client.status OPERATOR(pg_catalog.<>) 'active' THEN
    client := NULL; why := 'client authentication failed';
  END IF;
END
$$;

CREATE OR REPLACE FUNCTION tokex_api.token(
  grant_type text DEFAULT NULL,
  subject_token text DEFAULT NULL, subject_token_type text DEFAULT NULL,
  actor_token text DEFAULT NULL, actor_token_type text DEFAULT NULL,
  audience text DEFAULT NULL, resource text DEFAULT NULL, scope text DEFAULT NULL,
  requested_token_type text DEFAULT NULL,
  client_id text DEFAULT NULL, client_secret text DEFAULT NULL,
  client_assertion text DEFAULT NULL, client_assertion_type text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
DECLARE
  a record;
  r jsonb;
  now_s bigint;
  ttl int;
  tok text;
  xid uuid;
BEGIN
  SELECT * INTO a FROM tokex._authenticate(token.client_id, client_secret, client_assertion,
                                           client_assertion_type, tokex._endpoint('/rpc/token'));
  IF a.client IS NULL OR (a.client).client_id IS NULL THEN
    PERFORM tokex._audit_refusal('invalid_client', a.why, a.claimed_id, token.audience);
    RETURN tokex._respond(pg_catalog.jsonb_build_object('error', 'invalid_client', 'error_description', a.why),
                          401, 'Basic realm="tokex", charset="UTF-8"');
  END IF;
  IF grant_type IS NULL THEN
    PERFORM tokex._audit_refusal('invalid_request', 'grant_type is required', (a.client).client_id, token.audience);
    RETURN tokex._respond(pg_catalog.jsonb_build_object('error', 'invalid_request',
                                                        'error_description', 'grant_type is required'), 400);
  END IF;
  IF grant_type NOT IN ('urn:ietf:params:oauth:grant-type:token-exchange', 'client_credentials') THEN
    PERFORM tokex._audit_refusal('unsupported_grant_type', 'unsupported grant_type', (a.client).client_id, token.audience);
    RETURN tokex._respond(pg_catalog.jsonb_build_object('error', 'unsupported_grant_type',
                                                        'error_description', 'unsupported grant_type'), 400);
  END IF;
  IF NOT (grant_type OPERATOR(pg_catalog.=) ANY ((a.client).grant_types)) THEN
    PERFORM tokex._audit_refusal('unauthorized_client', 'the client may not use this grant_type',
                                 (a.client).client_id, token.audience);
    RETURN tokex._respond(pg_catalog.jsonb_build_object('error', 'unauthorized_client',
                          'error_description', 'the client may not use this grant_type'), 400);
  END IF;

  IF grant_type OPERATOR(pg_catalog.=) 'client_credentials' THEN
    -- an actor token for the identity the client acts for (RFC 6749 §4.4)
    IF (a.client).identity IS NULL OR NOT EXISTS (
         SELECT 1 FROM tokex.identity i WHERE i.id OPERATOR(pg_catalog.=) (a.client).identity
            AND i.status OPERATOR(pg_catalog.=) 'active') THEN
      PERFORM tokex._audit_refusal('unauthorized_client', 'the client has no active identity', (a.client).client_id);
      RETURN tokex._respond(pg_catalog.jsonb_build_object('error', 'unauthorized_client',
                            'error_description', 'the client has no active identity'), 400);
    END IF;
    IF token.scope IS NOT NULL OR token.audience IS NOT NULL OR token.resource IS NOT NULL THEN
      PERFORM tokex._audit_refusal('invalid_scope', 'client_credentials tokens carry no scope or audience; exchange them',
                                   (a.client).client_id, token.audience);
      RETURN tokex._respond(pg_catalog.jsonb_build_object('error', 'invalid_scope',
        'error_description', 'client_credentials tokens carry no scope or audience; exchange them'), 400);
    END IF;
    xid := pg_catalog.gen_random_uuid();
    now_s := pg_catalog.floor(extract(epoch FROM pg_catalog.clock_timestamp()))::bigint;
    ttl := extract(epoch FROM LEAST(tokex._setting('default_ttl')::interval,
                                    tokex._setting('max_ttl')::interval))::int;
    tok := tokex._sign(pg_catalog.jsonb_build_object(
             'iss', tokex._issuer(),
             'sub', (a.client).identity, 'client_id', (a.client).client_id,
             'aud', tokex._issuer(),
             'jti', xid::text, 'iat', now_s, 'nbf', now_s, 'exp', now_s + ttl), 'JWT');
    -- committed before the token is returned
    PERFORM tokex._audit_write(pg_catalog.jsonb_build_object(
      'exchange_id', xid, 'operation', 'client_credentials', 'decision', 'granted',
      'subject', (a.client).identity, 'client_id', (a.client).client_id, 'audience', tokex._issuer(),
      'jti', xid, 'expires_at', pg_catalog.to_timestamp(now_s + ttl), 'subject_issuer', tokex._issuer(),
      'issued_token_type', 'urn:ietf:params:oauth:token-type:access_token'));
    RETURN tokex._respond(pg_catalog.jsonb_build_object('access_token', tok, 'token_type', 'Bearer',
                                                        'expires_in', ttl));
  END IF;

  r := tokex._exchange_for_client(subject_token, subject_token_type, actor_token, actor_token_type,
                      token.audience, token.resource, token.scope, requested_token_type,
                      (a.client).client_id);
  RETURN tokex._respond(r, CASE WHEN r ? 'error' THEN 400 ELSE 200 END);
END
$$;

CREATE FUNCTION tokex._client_with_token(path text, token text, client_id text, client_secret text,
                                         client_assertion text, client_assertion_type text,
                                         OUT client tokex.client, OUT refusal jsonb)
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, tokex, pg_temp AS $$
DECLARE
  a record;
BEGIN
  SELECT * INTO a FROM tokex._authenticate(client_id, client_secret, client_assertion,
                                           client_assertion_type, tokex._endpoint(path));
  IF a.client IS NULL OR (a.client).client_id IS NULL THEN
    refusal := tokex._respond(pg_catalog.jsonb_build_object('error', 'invalid_client', 'error_description', a.why),
                              401, 'Basic realm="tokex", charset="UTF-8"');
  ELSIF token IS NULL THEN
    refusal := tokex._respond(pg_catalog.jsonb_build_object('error', 'invalid_request',
                                                            'error_description', 'token is required'), 400);
  ELSE
    client := a.client;
  END IF;
END
$$;

CREATE OR REPLACE FUNCTION tokex_api.revoke(token text DEFAULT NULL, token_type_hint text DEFAULT NULL,
  client_id text DEFAULT NULL, client_secret text DEFAULT NULL,
  client_assertion text DEFAULT NULL, client_assertion_type text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
DECLARE
  c record;
  claims jsonb;
BEGIN
  SELECT * INTO c FROM tokex._client_with_token('/rpc/revoke', revoke.token, revoke.client_id,
                                                client_secret, client_assertion, client_assertion_type);
  IF c.refusal IS NOT NULL THEN
    RETURN c.refusal;
  END IF;
  BEGIN
    claims := tokex.jwt_verify(revoke.token);
  EXCEPTION WHEN invalid_authorization_specification THEN
    claims := NULL;           -- invalid or unknown: nothing to revoke (RFC 7009 §2.2)
  END;
  IF claims IS NOT NULL AND claims->>'jti' IS NOT NULL THEN
    IF claims->>'client_id' IS DISTINCT FROM (c.client).client_id THEN
      RETURN tokex._respond(pg_catalog.jsonb_build_object('error', 'unauthorized_client',
                            'error_description', 'the token was not issued to this client'), 400);
    END IF;
    PERFORM tokex.revoke_token(revoke.token, 'revoked by client ' || (c.client).client_id);
  END IF;
  RETURN tokex._respond('{}'::jsonb);
END
$$;

------------------------------------------------------------------------
-- Privileges: as src/sql/90_privileges.sql gives them, for what was
-- created or rebuilt above
------------------------------------------------------------------------
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA tokex FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA tokex_api FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tokex.decide(text[], text[], timestamptz[], text, text, text[], text[], text, text, bytea[], uuid,
                                        uuid[], text[], text[], timestamptz)
  TO tokex_admin;
-- admins manage clients but never read their secret hashes
GRANT SELECT (client_id, identity, grant_types, audiences, status, jwks, description, created_at),
  INSERT, UPDATE, DELETE ON tokex.client TO tokex_admin;
GRANT SELECT ON tokex.audit TO tokex_auditor, tokex_admin;
GRANT EXECUTE ON FUNCTION tokex.revoke_token(text, text, text) TO tokex_admin;
GRANT SELECT ON tokex.audit_trail TO tokex_auditor, tokex_admin;
GRANT SELECT, INSERT ON tokex.revoked_token TO tokex_admin;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA tokex_api TO tokex_web;
