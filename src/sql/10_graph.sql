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
  -- database roles that call tokex.exchange as this client (SQL face): a
  -- member of one of them is this client; see tokex._sql_client
  db_roles    text[] CHECK (pg_catalog.array_position(db_roles, NULL) IS NULL),
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
