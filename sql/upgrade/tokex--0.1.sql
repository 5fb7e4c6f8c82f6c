-- tokex 0.1 install script.
--
-- Hardened against search_path: every reference is schema-qualified and
-- every SECURITY DEFINER function pins search_path to pg_catalog, tokex.
\echo Use "CREATE EXTENSION tokex" to load this file. \quit

-- Roles.  NOLOGIN groups that deployments grant to their login roles:
--   tokex_admin    keys, trusted issuers, identity graph, policy
--   tokex_app      the application tier: exchange, verify, introspect
--   tokex_auditor  SELECT on the audit views, nothing else
--   tokex_web      the HTTP face: EXECUTE on tokex_api.* (grant it to PostgREST's anon role)
DO $$
DECLARE r text;
BEGIN
  FOREACH r IN ARRAY ARRAY['tokex_admin', 'tokex_app', 'tokex_auditor', 'tokex_web'] LOOP
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) r) THEN
      EXECUTE pg_catalog.format('CREATE ROLE %I NOLOGIN', r);
    END IF;
  END LOOP;
END
$$;

GRANT USAGE ON SCHEMA tokex TO tokex_admin, tokex_app, tokex_auditor;

-- tokex.issuer, or a clear error when it is not set.
CREATE FUNCTION tokex._issuer() RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, tokex, pg_temp AS $$
DECLARE iss text := NULLIF(pg_catalog.current_setting('tokex.issuer', true), '');
BEGIN
  IF iss IS NULL THEN
    RAISE EXCEPTION 'tokex.issuer is not set' USING ERRCODE = 'object_not_in_prerequisite_state',
      HINT = 'Set it with ALTER DATABASE ... SET tokex.issuer = ''https://...''.';
  END IF;
  RETURN iss;
END
$$;

------------------------------------------------------------------------
-- Keys
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

-- Trusted external issuers (IdPs, agent platforms) and their JWKS.  jwks may
-- hold shared secrets (oct keys for HS*), so it is owner-only as well.
CREATE TABLE tokex.issuer (
  issuer     text PRIMARY KEY CHECK (issuer <> '' AND pg_catalog.length(issuer) <= 1024),
  jwks       jsonb NOT NULL,
  audience   text,
  created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
  updated_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);

SELECT pg_catalog.pg_extension_config_dump('tokex.key', '');
SELECT pg_catalog.pg_extension_config_dump('tokex.issuer', '');

REVOKE ALL ON tokex.key, tokex.issuer FROM PUBLIC;
GRANT SELECT (kid, alg, status, public_jwk, created_at, activated_at, retired_at, revoked_at)
  ON tokex.key TO tokex_admin;
GRANT SELECT (issuer, audience, created_at, updated_at) ON tokex.issuer TO tokex_admin;

-- Any committed change to keys or issuers drops every backend's key cache.
CREATE FUNCTION tokex._keystore_invalidate() RETURNS trigger
  LANGUAGE C AS 'MODULE_PATHNAME', 'tokex_keystore_invalidate';
CREATE TRIGGER key_invalidate AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tokex.key
  FOR EACH STATEMENT EXECUTE FUNCTION tokex._keystore_invalidate();
CREATE TRIGGER issuer_invalidate AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tokex.issuer
  FOR EACH STATEMENT EXECUTE FUNCTION tokex._keystore_invalidate();

CREATE FUNCTION tokex._generate_key(alg text, OUT kid text, OUT public_jwk jsonb, OUT private_key bytea)
  LANGUAGE C STRICT VOLATILE AS 'MODULE_PATHNAME', 'tokex_generate_key';

CREATE FUNCTION tokex._jwks_check(jwks jsonb) RETURNS integer
  LANGUAGE C STRICT IMMUTABLE AS 'MODULE_PATHNAME', 'tokex_jwks_check';

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

CREATE FUNCTION tokex._key_status(p_kid text) RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
DECLARE st text;
BEGIN
  SELECT status INTO st FROM tokex.key WHERE kid OPERATOR(pg_catalog.=) p_kid FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'key "%" does not exist', p_kid USING ERRCODE = 'no_data_found';
  END IF;
  RETURN st;
END
$$;

-- Make kid the signing key; the previous active key is retired (still published).
CREATE FUNCTION tokex.activate_key(kid text) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
DECLARE st text;
BEGIN
  LOCK TABLE tokex.key IN SHARE ROW EXCLUSIVE MODE;
  st := tokex._key_status(activate_key.kid);
  IF st OPERATOR(pg_catalog.=) 'active' THEN RETURN; END IF;
  IF st NOT IN ('next', 'retired') THEN
    RAISE EXCEPTION 'key "%" is %, it cannot be activated', activate_key.kid, st
      USING ERRCODE = 'object_not_in_prerequisite_state';
  END IF;
  UPDATE tokex.key SET status = 'retired', retired_at = pg_catalog.now()
   WHERE status OPERATOR(pg_catalog.=) 'active';
  UPDATE tokex.key SET status = 'active', activated_at = pg_catalog.now(), retired_at = NULL
   WHERE key.kid OPERATOR(pg_catalog.=) activate_key.kid;
END
$$;

-- Stop signing with kid but keep publishing it until its tokens have expired.
CREATE FUNCTION tokex.retire_key(kid text) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
DECLARE st text;
BEGIN
  st := tokex._key_status(retire_key.kid);
  IF st OPERATOR(pg_catalog.=) 'retired' THEN RETURN; END IF;
  IF st OPERATOR(pg_catalog.=) 'revoked' THEN
    RAISE EXCEPTION 'key "%" is revoked', retire_key.kid USING ERRCODE = 'object_not_in_prerequisite_state';
  END IF;
  UPDATE tokex.key SET status = 'retired', retired_at = pg_catalog.now()
   WHERE key.kid OPERATOR(pg_catalog.=) retire_key.kid;
END
$$;

-- Stop publishing kid: every token it signed fails verification from the next
-- transaction on, in every backend.
CREATE FUNCTION tokex.revoke_key(kid text) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
BEGIN
  PERFORM tokex._key_status(revoke_key.kid);
  UPDATE tokex.key SET status = 'revoked', revoked_at = pg_catalog.now()
   WHERE key.kid OPERATOR(pg_catalog.=) revoke_key.kid
     AND status OPERATOR(pg_catalog.<>) 'revoked';
END
$$;

CREATE FUNCTION tokex.jwks() RETURNS jsonb
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
  SELECT pg_catalog.jsonb_build_object('keys',
           COALESCE(pg_catalog.jsonb_agg(public_jwk ORDER BY created_at), '[]'::jsonb))
    FROM tokex.key
   WHERE status IN ('next', 'active', 'retired')
$$;

-- Register (or replace) an external issuer and its JWKS.
CREATE FUNCTION tokex.trust_issuer(issuer text, jwks jsonb, audience text DEFAULT NULL) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
BEGIN
  IF trust_issuer.issuer IS NULL OR trust_issuer.issuer OPERATOR(pg_catalog.=) '' OR trust_issuer.jwks IS NULL THEN
    RAISE EXCEPTION 'issuer and jwks are required' USING ERRCODE = 'null_value_not_allowed';
  END IF;
  IF trust_issuer.issuer OPERATOR(pg_catalog.=) pg_catalog.current_setting('tokex.issuer', true) THEN
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
-- JWT primitives
------------------------------------------------------------------------

CREATE FUNCTION tokex.jwt_sign(claims jsonb, kid text DEFAULT NULL) RETURNS text
  LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp
  AS 'MODULE_PATHNAME', 'tokex_jwt_sign';

CREATE FUNCTION tokex.jwt_verify(token text, audience text DEFAULT NULL) RETURNS jsonb
  LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp
  AS 'MODULE_PATHNAME', 'tokex_jwt_verify';

CREATE FUNCTION tokex.jwt_decode(token text) RETURNS jsonb
  LANGUAGE C IMMUTABLE STRICT AS 'MODULE_PATHNAME', 'tokex_jwt_decode';

------------------------------------------------------------------------
-- Identity graph, resources, policy, clients (the tables are the admin API)
------------------------------------------------------------------------

-- A node: a person, an agent or a service.  (issuer, subject) maps an
-- external token's iss/sub to it; tokex's own tokens carry the id as sub.
CREATE TABLE tokex.identity (
  id                 text PRIMARY KEY
                     CHECK (id ~ '^[[:graph:]]+$' AND pg_catalog.length(id) <= 256),
  kind               text NOT NULL CHECK (kind IN ('human', 'agent', 'service')),
  issuer             text,
  subject            text,
  status             text NOT NULL DEFAULT 'active'
                     CHECK (status IN ('active', 'suspended', 'offboarded', 'decommissioned')),
  status_reason      text,
  tokens_valid_after timestamptz,
  attributes         jsonb NOT NULL DEFAULT '{}' CHECK (pg_catalog.jsonb_typeof(attributes) = 'object'),
  created_at         timestamptz NOT NULL DEFAULT pg_catalog.now(),
  UNIQUE (issuer, subject),
  CHECK ((issuer IS NULL) = (subject IS NULL))
);

-- An edge: principal lets delegate act for them, within scopes and audiences
-- (NULL audiences = any registered resource).  max_depth counts the hops this
-- edge may start: 1 = the delegate acts but cannot pass it on.
CREATE TABLE tokex.delegation (
  id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  principal     text NOT NULL REFERENCES tokex.identity (id) ON UPDATE CASCADE,
  delegate      text NOT NULL REFERENCES tokex.identity (id) ON UPDATE CASCADE,
  scopes        text[] NOT NULL CHECK (pg_catalog.array_position(scopes, NULL) IS NULL),
  audiences     text[] CHECK (pg_catalog.array_position(audiences, NULL) IS NULL),
  max_depth     integer NOT NULL DEFAULT 1 CHECK (max_depth BETWEEN 1 AND 16),
  valid_from    timestamptz NOT NULL DEFAULT pg_catalog.now(),
  valid_until   timestamptz,
  revoked_at    timestamptz,
  revoke_reason text,
  created_at    timestamptz NOT NULL DEFAULT pg_catalog.now(),
  CHECK (principal <> delegate),
  CHECK (valid_until IS NULL OR valid_until > valid_from)
);
CREATE INDEX delegation_edge ON tokex.delegation (principal, delegate) WHERE revoked_at IS NULL;
CREATE INDEX delegation_delegate ON tokex.delegation (delegate);

-- Every audience a token may be minted for.
CREATE TABLE tokex.resource (
  audience     text PRIMARY KEY CHECK (audience ~ '^[[:graph:]]+$' AND pg_catalog.length(audience) <= 1024),
  resource_uri text UNIQUE CHECK (resource_uri ~ '^[a-zA-Z][a-zA-Z0-9+.-]*:[^[:space:]#]+$'),
  scopes       text[] NOT NULL CHECK (pg_catalog.array_position(scopes, NULL) IS NULL),
  token_ttl    interval CHECK (token_ttl >= '1 second'::interval),  -- tokens count whole seconds
  token_format text NOT NULL DEFAULT 'jwt' CHECK (token_format IN ('jwt')),
  description  text
);

-- Org rules on top of the person's delegations.  NULL means "any".
-- actor is the current (outermost) actor; an exchange without an actor only
-- matches rows whose actor and actor_kind are NULL.
CREATE TABLE tokex.policy (
  id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  effect       text NOT NULL CHECK (effect IN ('allow', 'deny')),
  subject      text REFERENCES tokex.identity (id) ON UPDATE CASCADE ON DELETE CASCADE,
  subject_kind text CHECK (subject_kind IN ('human', 'agent', 'service')),
  actor        text REFERENCES tokex.identity (id) ON UPDATE CASCADE ON DELETE CASCADE,
  actor_kind   text CHECK (actor_kind IN ('human', 'agent', 'service')),
  audience     text REFERENCES tokex.resource (audience) ON UPDATE CASCADE ON DELETE CASCADE,
  client_id    text,
  scopes       text[] CHECK (pg_catalog.array_position(scopes, NULL) IS NULL),
  max_depth    integer CHECK (max_depth BETWEEN 0 AND 16),
  valid        tstzrange,
  priority     integer NOT NULL DEFAULT 0,
  description  text
);

-- The application tier / agent platform calling the exchange.
CREATE TABLE tokex.client (
  client_id   text PRIMARY KEY CHECK (client_id ~ '^[[:graph:]]+$' AND pg_catalog.length(client_id) <= 256),
  identity    text REFERENCES tokex.identity (id) ON UPDATE CASCADE,
  grant_types text[] NOT NULL DEFAULT '{urn:ietf:params:oauth:grant-type:token-exchange}',
  audiences   text[] CHECK (pg_catalog.array_position(audiences, NULL) IS NULL),
  status      text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
  secret_hash text,            -- pbkdf2-sha256$iterations$salt$hash, never the secret
  jwks        jsonb            -- public keys for private_key_jwt (RFC 7523); never secrets
              CHECK (NOT pg_catalog.jsonb_path_exists(jwks, '$.keys[*] ? (@.kty == "oct")')),
  description text,
  created_at  timestamptz NOT NULL DEFAULT pg_catalog.now()
);

SELECT pg_catalog.pg_extension_config_dump('tokex.identity', '');
SELECT pg_catalog.pg_extension_config_dump('tokex.delegation', '');
SELECT pg_catalog.pg_extension_config_dump('tokex.resource', '');
SELECT pg_catalog.pg_extension_config_dump('tokex.policy', '');
SELECT pg_catalog.pg_extension_config_dump('tokex.client', '');
SELECT pg_catalog.pg_extension_config_dump('tokex.delegation_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('tokex.policy_id_seq', '');

------------------------------------------------------------------------
-- Sessions and revocation
------------------------------------------------------------------------

-- An agent session: the credential an agent holds instead of a permission.
CREATE TABLE tokex.session (
  id            uuid PRIMARY KEY,
  principal     text NOT NULL REFERENCES tokex.identity (id) ON UPDATE CASCADE,
  agent         text NOT NULL REFERENCES tokex.identity (id) ON UPDATE CASCADE,
  delegation_id bigint NOT NULL REFERENCES tokex.delegation (id),
  scopes        text[] NOT NULL,
  created_at    timestamptz NOT NULL DEFAULT pg_catalog.now(),
  expires_at    timestamptz NOT NULL,
  revoked_at    timestamptz,
  revoke_reason text,
  CHECK (expires_at > created_at)
);
CREATE INDEX session_principal ON tokex.session (principal);

-- Individually revoked tokens, by jti.
CREATE TABLE tokex.revoked_token (
  jti        text PRIMARY KEY,
  revoked_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
  expires_at timestamptz,
  reason     text
);

-- Every revocation, whichever way it was made (function or plain DML).
CREATE TABLE tokex.revocation (
  id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  at      timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
  kind    text NOT NULL CHECK (kind IN ('identity', 'delegation', 'session', 'token', 'key')),
  target  text NOT NULL,
  reason  text,
  by_user text NOT NULL DEFAULT SESSION_USER
);

SELECT pg_catalog.pg_extension_config_dump('tokex.session', '');
SELECT pg_catalog.pg_extension_config_dump('tokex.revoked_token', '');
SELECT pg_catalog.pg_extension_config_dump('tokex.revocation', '');

------------------------------------------------------------------------
-- Audit: one row per exchange, granted or denied.  Append-only.
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
  CHECK ((decision = 'granted') = (error IS NULL))
);
CREATE INDEX audit_event_at ON tokex.audit_event (at);
CREATE UNIQUE INDEX audit_event_jti ON tokex.audit_event (jti) WHERE jti IS NOT NULL;
CREATE INDEX audit_event_subject ON tokex.audit_event (subject, at);
SELECT pg_catalog.pg_extension_config_dump('tokex.audit_event', '');

CREATE FUNCTION tokex._append_only() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, tokex, pg_temp AS $$
BEGIN
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
  db_user     text NOT NULL DEFAULT SESSION_USER
);
CREATE INDEX token_use_exchange ON tokex.token_use (exchange_id);
SELECT pg_catalog.pg_extension_config_dump('tokex.token_use', '');
CREATE TRIGGER token_use_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON tokex.token_use
  FOR EACH STATEMENT EXECUTE FUNCTION tokex._append_only();
ALTER TABLE tokex.token_use ENABLE ALWAYS TRIGGER token_use_append_only;
------------------------------------------------------------------------
-- The decision: one query over the graph, prepared once per backend by
-- tokex.exchange.  Administrators can run it themselves to see why.
--
-- chain_iss/chain_sub/chain_iat: position 1 is the subject, 2.. the actors
-- from the first (closest to the subject) to the current one.  jtis: the
-- presented tokens' jti claims; sid: the session of the subject token.
------------------------------------------------------------------------
-- (iss, sub) pairs to identities: tokex's own tokens carry the identity id as
-- sub; external ones map through identity.(issuer, subject).
CREATE FUNCTION tokex._resolve(iss text[], sub text[], own_issuer text)
RETURNS TABLE (n bigint, sub text, id text, kind text, status text, tokens_valid_after timestamptz)
LANGUAGE sql STABLE AS $$
  SELECT t.n, t.sub, i.id, i.kind, i.status, i.tokens_valid_after
    FROM unnest(iss, sub) WITH ORDINALITY AS t(iss, sub, n)
    LEFT JOIN LATERAL (
      SELECT i.id, i.kind, i.status, i.tokens_valid_after FROM tokex.identity i
       WHERE t.iss OPERATOR(pg_catalog.=) own_issuer AND i.id OPERATOR(pg_catalog.=) t.sub
      UNION ALL
      SELECT i.id, i.kind, i.status, i.tokens_valid_after FROM tokex.identity i
       WHERE t.iss OPERATOR(pg_catalog.<>) own_issuer
         AND i.issuer OPERATOR(pg_catalog.=) t.iss AND i.subject OPERATOR(pg_catalog.=) t.sub
      LIMIT 1) i ON true
$$;

CREATE FUNCTION tokex.decide(
  chain_iss text[], chain_sub text[], chain_iat timestamptz[],
  audience text, resource text, requested_scope text[], token_scope text[],
  client_id text, own_issuer text, jtis text[] DEFAULT NULL, sid uuid DEFAULT NULL)
RETURNS TABLE (
  identity_error text,     -- revoked tokens or session, unknown / inactive identities
  error text, reason text, -- steps 4-7, or NULL when granted
  chain text[], kinds text[],
  delegation_ids bigint[], policy_ids bigint[],
  target text, scope text[], ttl interval)
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
           WHEN EXISTS (SELECT 1 FROM pg_catalog.unnest(jtis) j,
                          LATERAL (SELECT 1 FROM tokex.revoked_token r
                                    WHERE r.jti OPERATOR(pg_catalog.=) j LIMIT 1) r) THEN
             'a presented token has been revoked'
           WHEN decide.sid IS NOT NULL THEN
             (SELECT CASE WHEN s.id IS NULL THEN 'the session is unknown'
                          WHEN s.revoked_at IS NOT NULL THEN 'the session has been revoked'
                          WHEN s.expires_at <= pg_catalog.now() THEN 'the session has expired'
                          WHEN d.revoked_at IS NOT NULL OR d.valid_from > pg_catalog.now()
                               OR d.valid_until <= pg_catalog.now() THEN
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
         AND d.valid_from <= pg_catalog.now()
         AND (d.valid_until IS NULL OR d.valid_until > pg_catalog.now())
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
     AND (p.valid IS NULL OR p.valid OPERATOR(pg_catalog.@>) pg_catalog.now())
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
     AND (p.valid IS NULL OR p.valid OPERATOR(pg_catalog.@>) pg_catalog.now())
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
       (SELECT (r).token_ttl FROM tgt)
  FROM ids
$$;

-- Is a token that verified still live?  tokex's own tokens must name known,
-- active identities issued after any tokens_valid_after, must not be revoked
-- by jti, their session must be live, and every delegation that minted them
-- (recorded in the audit row of their exchange) must still stand.  For
-- external tokens tokex knows only what its tables say about them.
CREATE FUNCTION tokex._token_active(chain_iss text[], chain_sub text[], iat timestamptz,
                                    own_issuer text, own boolean, jti text, jti_uuid uuid, sid uuid)
RETURNS TABLE (active boolean)   -- a table function, so the planner inlines it
LANGUAGE sql STABLE AS $$
  SELECT NOT EXISTS (SELECT 1 FROM tokex.revoked_token r WHERE r.jti OPERATOR(pg_catalog.=) _token_active.jti)
     AND NOT EXISTS (SELECT 1 FROM tokex._resolve(chain_iss, chain_sub, own_issuer) c
                      WHERE (c.id IS NULL AND own)
                         OR c.status OPERATOR(pg_catalog.<>) 'active'
                         OR (c.tokens_valid_after IS NOT NULL AND iat < c.tokens_valid_after))
     AND (sid IS NULL OR EXISTS (
           SELECT 1 FROM tokex.session s
             JOIN tokex.delegation d ON d.id OPERATOR(pg_catalog.=) s.delegation_id
             JOIN tokex.identity ag ON ag.id OPERATOR(pg_catalog.=) s.agent
            WHERE s.id OPERATOR(pg_catalog.=) sid AND s.revoked_at IS NULL
              AND s.expires_at > pg_catalog.now()
              AND d.revoked_at IS NULL AND d.valid_from <= pg_catalog.now()
              AND (d.valid_until IS NULL OR d.valid_until > pg_catalog.now())
              AND ag.status OPERATOR(pg_catalog.=) 'active'))
     AND NOT EXISTS (
           SELECT 1 FROM tokex.audit_event a
             JOIN tokex.delegation d ON d.id OPERATOR(pg_catalog.=) ANY (a.delegation_ids)
            WHERE a.jti OPERATOR(pg_catalog.=) jti_uuid
              AND (d.revoked_at IS NOT NULL OR d.valid_until <= pg_catalog.now()))
$$;
------------------------------------------------------------------------
-- Exchange (RFC 8693)
------------------------------------------------------------------------
CREATE FUNCTION tokex.exchange(
  subject_token text, subject_token_type text,
  actor_token text DEFAULT NULL, actor_token_type text DEFAULT NULL,
  audience text DEFAULT NULL, resource text DEFAULT NULL, scope text DEFAULT NULL,
  requested_token_type text DEFAULT NULL, client_id text DEFAULT NULL)
RETURNS jsonb
LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp
AS 'MODULE_PATHNAME', 'tokex_exchange';

CREATE FUNCTION tokex.introspect(token text) RETURNS jsonb
LANGUAGE C STABLE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp
AS 'MODULE_PATHNAME', 'tokex_introspect';
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
  granted text[];
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
     AND x.revoked_at IS NULL AND x.valid_from <= pg_catalog.now()
     AND (x.valid_until IS NULL OR x.valid_until > pg_catalog.now())
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
  exp := pg_catalog.now() OPERATOR(pg_catalog.+) ttl;
  IF d.valid_until IS NOT NULL AND d.valid_until < exp THEN
    exp := d.valid_until;
  END IF;
  INSERT INTO tokex.session (id, principal, agent, delegation_id, scopes, expires_at)
  VALUES (sid, principal, agent, d.id, granted, exp);
  tok := tokex.jwt_sign(pg_catalog.jsonb_build_object(
           'sub', principal,
           'may_act', pg_catalog.jsonb_build_object('sub', agent, 'iss', tokex._issuer()),
           'sid', sid::text,
           'jti', pg_catalog.gen_random_uuid()::text,
           'scope', pg_catalog.array_to_string(granted, ' '),
           'iat', pg_catalog.floor(extract(epoch FROM pg_catalog.now()))::bigint,
           'nbf', pg_catalog.floor(extract(epoch FROM pg_catalog.now()))::bigint,
           'exp', pg_catalog.floor(extract(epoch FROM exp))::bigint));
  RETURN pg_catalog.jsonb_build_object('session_token', tok, 'session_id', sid, 'expires_at', exp);
END
$$;

-- An actor token for an agent or service registered in tokex, for
-- deployments without an external workload identity issuer.
CREATE FUNCTION tokex.identity_token(identity text, ttl interval DEFAULT '15 minutes')
RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
DECLARE
  now_s bigint := pg_catalog.floor(extract(epoch FROM pg_catalog.now()))::bigint;
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
  RETURN tokex.jwt_sign(pg_catalog.jsonb_build_object(
           'sub', identity, 'jti', pg_catalog.gen_random_uuid()::text,
           'iat', now_s, 'nbf', now_s,
           'exp', now_s OPERATOR(pg_catalog.+) pg_catalog.floor(extract(epoch FROM ttl))::bigint));
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
         tokens_valid_after = pg_catalog.now()
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

-- Revoke one token, given as the token itself or its jti.
CREATE FUNCTION tokex.revoke_token(token_or_jti text, reason text) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
DECLARE
  claims jsonb;
  j text := token_or_jti;
BEGIN
  IF token_or_jti IS NULL OR token_or_jti OPERATOR(pg_catalog.=) '' THEN
    RAISE EXCEPTION 'token_or_jti is required' USING ERRCODE = 'null_value_not_allowed';
  END IF;
  IF pg_catalog.strpos(token_or_jti, '.') > 0 THEN
    claims := (tokex.jwt_decode(token_or_jti))->'payload';
    j := claims->>'jti';
    IF j IS NULL THEN
      RAISE EXCEPTION 'the token has no jti' USING ERRCODE = 'invalid_parameter_value',
        HINT = 'Revoke the identity, delegation or session it belongs to instead.';
    END IF;
  END IF;
  INSERT INTO tokex.revoked_token (jti, reason, expires_at)
  VALUES (j, reason,
          CASE WHEN pg_catalog.jsonb_typeof(claims->'exp') OPERATOR(pg_catalog.=) 'number'
               THEN pg_catalog.to_timestamp((claims->>'exp')::double precision)
               ELSE (SELECT a.expires_at FROM tokex.audit_event a
                      WHERE a.jti::text OPERATOR(pg_catalog.=) j) END)
  ON CONFLICT (jti) DO NOTHING;
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
  SELECT a.exchange_id INTO xid FROM tokex.audit_event a
   WHERE a.jti::text OPERATOR(pg_catalog.=) (claims->>'jti') AND a.decision OPERATOR(pg_catalog.=) 'granted';
  IF NOT FOUND THEN
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
      k := 'token'; t := NEW.jti; r := NEW.reason;
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
------------------------------------------------------------------------
-- Views for auditors: plain SELECT answers who, on whose behalf, with what
-- privilege, and with what result.
------------------------------------------------------------------------

-- What an auditor reads: who, on whose behalf, with what privilege, result.
CREATE VIEW tokex.audit AS
SELECT at, exchange_id, decision, error, reason, subject, actor, actor_chain, client_id,
       audience, requested_scope, scope, jti, expires_at, delegation_ids, policy_ids,
       subject_issuer, actor_issuer, subject_sid, issued_token_type, db_user
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
------------------------------------------------------------------------
-- The HTTP face: schema tokex_api, exposed by PostgREST (db-schemas =
-- tokex_api).  Functions answer RFC JSON and set response.status and
-- response.headers instead of raising, because PostgREST rolls back on an
-- exception and a denial's audit row must stay.
------------------------------------------------------------------------
CREATE SCHEMA tokex_api;

-- client_assertion jti values seen, so an assertion cannot be replayed
-- within its lifetime (RFC 7523 §3).
CREATE TABLE tokex.client_assertion_jti (
  client_id  text NOT NULL,
  jti        text NOT NULL,
  expires_at timestamptz NOT NULL,
  PRIMARY KEY (client_id, jti)
);
CREATE INDEX client_assertion_jti_expiry ON tokex.client_assertion_jti (expires_at);

CREATE FUNCTION tokex._hash_secret(secret text) RETURNS text
  LANGUAGE C STRICT VOLATILE AS 'MODULE_PATHNAME', 'tokex_hash_secret';
CREATE FUNCTION tokex._verify_secret(secret text, stored text) RETURNS boolean
  LANGUAGE C STRICT STABLE AS 'MODULE_PATHNAME', 'tokex_verify_secret';
CREATE FUNCTION tokex._random_secret() RETURNS text
  LANGUAGE C VOLATILE AS 'MODULE_PATHNAME', 'tokex_random_secret';
CREATE FUNCTION tokex._verify_assertion(token text, jwks jsonb) RETURNS jsonb
  LANGUAGE C STRICT STABLE AS 'MODULE_PATHNAME', 'tokex_verify_assertion';

-- Register a client.  With no jwks it authenticates with a generated secret,
-- returned here once and stored only as a salted PBKDF2 hash.
CREATE FUNCTION tokex.register_client(client_id text, identity text DEFAULT NULL,
    grant_types text[] DEFAULT '{urn:ietf:params:oauth:grant-type:token-exchange}',
    audiences text[] DEFAULT NULL, jwks jsonb DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
DECLARE
  secret text;
BEGIN
  IF register_client.jwks IS NOT NULL THEN
    PERFORM tokex._jwks_check(register_client.jwks);
  ELSE
    secret := tokex._random_secret();
  END IF;
  INSERT INTO tokex.client (client_id, identity, grant_types, audiences, secret_hash, jwks)
  VALUES (register_client.client_id, register_client.identity, register_client.grant_types,
          register_client.audiences,
          CASE WHEN secret IS NOT NULL THEN tokex._hash_secret(secret) END, register_client.jwks);
  RETURN secret;
END
$$;

-- application/x-www-form-urlencoded value -> text (RFC 6749 §2.3.1 encodes
-- client_id and secret this way inside HTTP Basic).  NULL when malformed.
CREATE FUNCTION tokex._form_decode(s text) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT SET search_path = pg_catalog, tokex, pg_temp AS $$
DECLARE
  out bytea := '';
  i int := 1;
  n int := pg_catalog.length(s);
  c text;
BEGIN
  WHILE i <= n LOOP
    c := pg_catalog.substr(s, i, 1);
    IF c OPERATOR(pg_catalog.=) '%' THEN
      IF pg_catalog.substr(s, i + 1, 2) !~ '^[0-9A-Fa-f]{2}$' THEN RETURN NULL; END IF;
      out := out OPERATOR(pg_catalog.||) pg_catalog.decode(pg_catalog.substr(s, i + 1, 2), 'hex');
      i := i + 3;
    ELSE
      out := out OPERATOR(pg_catalog.||)
             pg_catalog.convert_to(CASE WHEN c OPERATOR(pg_catalog.=) '+' THEN ' ' ELSE c END, 'UTF8');
      i := i + 1;
    END IF;
  END LOOP;
  RETURN pg_catalog.convert_from(out, 'UTF8');
EXCEPTION WHEN character_not_in_repertoire OR untranslatable_character THEN
  RETURN NULL;
END
$$;

-- RFC 6749 §5.2 / RFC 7009 / RFC 7662 answers: body plus status and
-- no-store headers, always.
CREATE FUNCTION tokex._respond(body jsonb, status int DEFAULT 200, www_authenticate text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, tokex, pg_temp AS $$
BEGIN
  PERFORM pg_catalog.set_config('response.status', status::text, true);
  PERFORM pg_catalog.set_config('response.headers',
    (pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object('Cache-Control', 'no-store'),
                                  pg_catalog.jsonb_build_object('Pragma', 'no-cache'))
     OPERATOR(pg_catalog.||)
     CASE WHEN www_authenticate IS NOT NULL
          THEN pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object('WWW-Authenticate', www_authenticate))
          ELSE '[]'::jsonb END)::text, true);
  RETURN body;
END
$$;

-- An HTTP-level refusal still leaves its audit row.
CREATE FUNCTION tokex._audit_refusal(error text, reason text, client_id text, audience text DEFAULT NULL)
RETURNS void
LANGUAGE sql VOLATILE SET search_path = pg_catalog, tokex, pg_temp AS $$
  INSERT INTO tokex.audit_event (exchange_id, decision, error, reason, client_id, audience)
  VALUES (pg_catalog.gen_random_uuid(), 'denied', error, reason, client_id, audience)
$$;

CREATE FUNCTION tokex._endpoint(path text) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, tokex, pg_temp AS $$
  SELECT pg_catalog.rtrim(COALESCE(NULLIF(pg_catalog.current_setting('tokex.base_url', true), ''),
                                   pg_catalog.current_setting('tokex.issuer', true)), '/')
         OPERATOR(pg_catalog.||) path
$$;

-- Authenticate the calling client: client_secret_basic (the Authorization
-- header PostgREST passes in request.headers), client_secret_post, or
-- private_key_jwt.  Returns the client, or NULL with *why* filled in.
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
              OPERATOR(pg_catalog.+) pg_catalog.current_setting('tokex.clock_skew')::interval)
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

-- POST /rpc/token
CREATE FUNCTION tokex_api.token(
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
    now_s := pg_catalog.floor(extract(epoch FROM pg_catalog.now()))::bigint;
    ttl := extract(epoch FROM LEAST(pg_catalog.current_setting('tokex.default_ttl')::interval,
                                    pg_catalog.current_setting('tokex.max_ttl')::interval))::int;
    tok := tokex.jwt_sign(pg_catalog.jsonb_build_object(
             'sub', (a.client).identity, 'client_id', (a.client).client_id,
             'aud', tokex._issuer(),
             'jti', xid::text, 'iat', now_s, 'nbf', now_s, 'exp', now_s + ttl));
    INSERT INTO tokex.audit_event (exchange_id, decision, subject, client_id, audience, jti, expires_at,
                                   subject_issuer, issued_token_type)
    VALUES (xid, 'granted', (a.client).identity, (a.client).client_id,
            tokex._issuer(), xid, pg_catalog.to_timestamp(now_s + ttl),
            tokex._issuer(), 'urn:ietf:params:oauth:token-type:access_token');
    RETURN tokex._respond(pg_catalog.jsonb_build_object('access_token', tok, 'token_type', 'Bearer',
                                                        'expires_in', ttl));
  END IF;

  r := tokex.exchange(subject_token, subject_token_type, actor_token, actor_token_type,
                      token.audience, token.resource, token.scope, requested_token_type,
                      (a.client).client_id);
  RETURN tokex._respond(r, CASE WHEN r ? 'error' THEN 400 ELSE 200 END);
END
$$;

-- The common start of introspect and revoke (RFC 7662 §2.1, RFC 7009 §2.1):
-- an authenticated client and a token, or the refusal to return.
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

-- POST /rpc/introspect (RFC 7662): authenticated clients only.
CREATE FUNCTION tokex_api.introspect(token text DEFAULT NULL, token_type_hint text DEFAULT NULL,
  client_id text DEFAULT NULL, client_secret text DEFAULT NULL,
  client_assertion text DEFAULT NULL, client_assertion_type text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
DECLARE
  c record;
BEGIN
  SELECT * INTO c FROM tokex._client_with_token('/rpc/introspect', introspect.token, introspect.client_id,
                                                client_secret, client_assertion, client_assertion_type);
  IF c.refusal IS NOT NULL THEN
    RETURN c.refusal;
  END IF;
  RETURN tokex._respond(tokex.introspect(introspect.token));
END
$$;

-- POST /rpc/revoke (RFC 7009): 200 for any well-formed request, known token
-- or not; a client revokes only tokens issued to it.
CREATE FUNCTION tokex_api.revoke(token text DEFAULT NULL, token_type_hint text DEFAULT NULL,
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
    PERFORM tokex.revoke_token(claims->>'jti', 'revoked by client ' || (c.client).client_id);
  END IF;
  RETURN tokex._respond('{}'::jsonb);
END
$$;

-- GET /rpc/jwks: public keys, cacheable.
CREATE FUNCTION tokex_api.jwks() RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
BEGIN
  PERFORM pg_catalog.set_config('response.headers',
    '[{"Cache-Control": "public, max-age=300"}]', true);
  RETURN tokex.jwks();
END
$$;

-- GET /rpc/oauth_authorization_server: RFC 8414 metadata.
CREATE FUNCTION tokex_api.oauth_authorization_server() RETURNS jsonb
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
    'introspection_endpoint_auth_methods_supported', auth_methods,
    'revocation_endpoint_auth_methods_supported', auth_methods,
    'scopes_supported', (SELECT COALESCE(pg_catalog.jsonb_agg(DISTINCT s ORDER BY s), '[]'::jsonb)
                           FROM tokex.resource r, pg_catalog.unnest(r.scopes) s),
    'token_exchange_token_types_supported', '["urn:ietf:params:oauth:token-type:jwt",
       "urn:ietf:params:oauth:token-type:access_token", "urn:ietf:params:oauth:token-type:id_token"]'::jsonb,
    'token_exchange_issued_token_types_supported', '["urn:ietf:params:oauth:token-type:access_token",
       "urn:ietf:params:oauth:token-type:jwt"]'::jsonb);
END
$$;
------------------------------------------------------------------------
-- Privileges: nothing is executable by PUBLIC unless granted here.
------------------------------------------------------------------------
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA tokex FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA tokex_api FROM PUBLIC;
-- the JWKS is public, but over HTTP it is served by tokex_api.jwks()
GRANT EXECUTE ON FUNCTION tokex.jwks() TO tokex_admin, tokex_app, tokex_auditor;
GRANT EXECUTE ON FUNCTION tokex.jwt_decode(text) TO tokex_admin, tokex_app, tokex_auditor;
GRANT EXECUTE ON FUNCTION tokex.jwt_verify(text, text) TO tokex_admin, tokex_app;
GRANT EXECUTE ON FUNCTION tokex.jwt_sign(jsonb, text), tokex.create_key(text),
  tokex.activate_key(text), tokex.retire_key(text), tokex.revoke_key(text),
  tokex.trust_issuer(text, jsonb, text) TO tokex_admin;

GRANT EXECUTE ON FUNCTION tokex.exchange(text, text, text, text, text, text, text, text, text)
  TO tokex_app, tokex_admin;
GRANT EXECUTE ON FUNCTION tokex.decide(text[], text[], timestamptz[], text, text, text[], text[], text, text, text[], uuid)
  TO tokex_admin;
GRANT SELECT, INSERT, UPDATE, DELETE ON tokex.identity, tokex.delegation, tokex.resource,
  tokex.policy TO tokex_admin;
-- admins manage clients but never read their secret hashes
GRANT SELECT (client_id, identity, grant_types, audiences, status, jwks, description, created_at),
  INSERT, UPDATE, DELETE ON tokex.client TO tokex_admin;
GRANT USAGE ON SEQUENCE tokex.delegation_id_seq, tokex.policy_id_seq TO tokex_admin;
GRANT SELECT ON tokex.audit TO tokex_auditor, tokex_admin;
GRANT EXECUTE ON FUNCTION tokex.introspect(text), tokex.record_use(text, text, text),
  tokex.start_session(text, text, text[], interval) TO tokex_app, tokex_admin;
GRANT EXECUTE ON FUNCTION tokex.identity_token(text, interval), tokex.revoke_session(uuid, text),
  tokex.revoke_identity(text, text), tokex.revoke_delegation(text, text, text),
  tokex.revoke_token(text, text) TO tokex_admin;
GRANT SELECT ON tokex.audit_trail, tokex.revocation TO tokex_auditor, tokex_admin;
GRANT SELECT, UPDATE ON tokex.session TO tokex_admin;
GRANT SELECT, INSERT ON tokex.revoked_token TO tokex_admin;
GRANT EXECUTE ON FUNCTION tokex.register_client(text, text, text[], text[], jsonb) TO tokex_admin;

-- The HTTP face: grant tokex_web to PostgREST's anonymous role.  It reaches
-- exactly the tokex_api functions and nothing else in tokex.
GRANT USAGE ON SCHEMA tokex_api TO tokex_web;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA tokex_api TO tokex_web;
