-- tokex 0.2 install script, assembled by make from src/sql/*.sql.
-- tokex install script.  Part one: roles and settings.
--
-- The install script is src/sql/*.sql concatenated in name order, one file
-- per concept (the C file of the same concept is src/<concept>.c).  It is
-- hardened against search_path: every reference is schema-qualified and
-- every SECURITY DEFINER function pins search_path = pg_catalog, tokex,
-- pg_temp (pg_temp last, so temporary objects cannot shadow tokex's).
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

-- A tokex setting as the library holds it (issuer, base_url, clock_skew,
-- default_ttl, max_ttl, endpoint_style, secret_hash_iterations).  Never current_setting('tokex.…'): before the
-- library is loaded, any role can SET a placeholder of that name.
CREATE FUNCTION tokex._setting(name text) RETURNS text
  LANGUAGE C STABLE STRICT AS 'MODULE_PATHNAME', 'tokex_setting';

-- tokex.issuer, or a clear error when it is not set.
CREATE FUNCTION tokex._issuer() RETURNS text
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

------------------------------------------------------------------------
-- Keys
------------------------------------------------------------------------
------------------------------------------------------------------------
-- Keys: tokex's own signing keys, generated in the database (src/keys.c)
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

SELECT pg_catalog.pg_extension_config_dump('tokex.key', '');

REVOKE ALL ON tokex.key FROM PUBLIC;

GRANT SELECT (kid, alg, status, public_jwk, created_at, activated_at, retired_at, revoked_at)
  ON tokex.key TO tokex_admin;

-- Any committed change to keys or issuers drops every backend's key cache.
CREATE FUNCTION tokex._keystore_invalidate() RETURNS trigger
  LANGUAGE C AS 'MODULE_PATHNAME', 'tokex_keystore_invalidate';

CREATE TRIGGER key_invalidate AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tokex.key
  FOR EACH STATEMENT EXECUTE FUNCTION tokex._keystore_invalidate();

CREATE FUNCTION tokex._generate_key(alg text, OUT kid text, OUT public_jwk jsonb, OUT private_key bytea)
  LANGUAGE C STRICT VOLATILE AS 'MODULE_PATHNAME', 'tokex_generate_key';

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

-- Move kid to status target (active, retired or revoked), if it is in one
-- of allowed; already there: nothing to do.  Activating retires the active
-- key first (one signs at a time), under a table lock so two activations
-- cannot interleave.
CREATE FUNCTION tokex._key_move(p_kid text, target text, allowed text[]) RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, tokex, pg_temp AS $$
DECLARE st text;
BEGIN
  IF target OPERATOR(pg_catalog.=) 'active' THEN
    LOCK TABLE tokex.key IN SHARE ROW EXCLUSIVE MODE;
  END IF;
  SELECT status INTO st FROM tokex.key WHERE kid OPERATOR(pg_catalog.=) p_kid FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'key "%" does not exist', p_kid USING ERRCODE = 'no_data_found';
  END IF;
  IF st OPERATOR(pg_catalog.=) target THEN
    RETURN;
  END IF;
  IF NOT (st OPERATOR(pg_catalog.=) ANY (allowed)) THEN
    RAISE EXCEPTION '%', CASE target WHEN 'active' THEN pg_catalog.format('key "%s" is %s, it cannot be activated', p_kid, st)
                                     ELSE pg_catalog.format('key "%s" is %s', p_kid, st) END
      USING ERRCODE = 'object_not_in_prerequisite_state';
  END IF;
  IF target OPERATOR(pg_catalog.=) 'active' THEN
    UPDATE tokex.key SET status = 'retired', retired_at = pg_catalog.now()
     WHERE status OPERATOR(pg_catalog.=) 'active';
  END IF;
  UPDATE tokex.key
     SET status = target,
         activated_at = CASE WHEN target OPERATOR(pg_catalog.=) 'active' THEN pg_catalog.now() ELSE activated_at END,
         retired_at = CASE target WHEN 'retired' THEN pg_catalog.now() WHEN 'active' THEN NULL ELSE retired_at END,
         revoked_at = CASE WHEN target OPERATOR(pg_catalog.=) 'revoked' THEN pg_catalog.now() ELSE revoked_at END
   WHERE kid OPERATOR(pg_catalog.=) p_kid;
END
$$;

-- Make kid the signing key; the previous active key is retired (still published).
CREATE FUNCTION tokex.activate_key(kid text) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp
AS $$ SELECT tokex._key_move(kid, 'active', '{next,retired}') $$;

-- Stop signing with kid but keep publishing it until its tokens have expired.
CREATE FUNCTION tokex.retire_key(kid text) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp
AS $$ SELECT tokex._key_move(kid, 'retired', '{next,active}') $$;

-- Stop publishing kid: every token it signed fails verification from the next
-- transaction on, in every backend.
CREATE FUNCTION tokex.revoke_key(kid text) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp
AS $$ SELECT tokex._key_move(kid, 'revoked', '{next,active,retired}') $$;

CREATE FUNCTION tokex.jwks() RETURNS jsonb
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
  SELECT pg_catalog.jsonb_build_object('keys',
           COALESCE(pg_catalog.jsonb_agg(public_jwk ORDER BY created_at), '[]'::jsonb))
    FROM tokex.key
   WHERE status IN ('next', 'active', 'retired')
$$;
------------------------------------------------------------------------
-- Trusted issuers: IdPs and agent platforms whose tokens tokex accepts
------------------------------------------------------------------------

-- Trusted external issuers (IdPs, agent platforms) and their JWKS.  jwks may
-- hold shared secrets (oct keys for HS*), so it is owner-only as well.
CREATE TABLE tokex.trusted_issuer (
  issuer     text PRIMARY KEY CHECK (issuer <> '' AND pg_catalog.length(issuer) <= 1024),
  jwks       jsonb NOT NULL,
  audience   text,
  created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
  updated_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);

SELECT pg_catalog.pg_extension_config_dump('tokex.trusted_issuer', '');

REVOKE ALL ON tokex.trusted_issuer FROM PUBLIC;

GRANT SELECT (issuer, audience, created_at, updated_at) ON tokex.trusted_issuer TO tokex_admin;

CREATE TRIGGER issuer_invalidate AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tokex.trusted_issuer
  FOR EACH STATEMENT EXECUTE FUNCTION tokex._keystore_invalidate();

CREATE FUNCTION tokex._jwks_check(jwks jsonb) RETURNS integer
  LANGUAGE C STRICT IMMUTABLE AS 'MODULE_PATHNAME', 'tokex_jwks_check';

-- Register (or replace) an external issuer and its JWKS.
CREATE FUNCTION tokex.trust_issuer(issuer text, jwks jsonb, audience text DEFAULT NULL) RETURNS void
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
  INSERT INTO tokex.trusted_issuer AS i (issuer, jwks, audience)
  VALUES (trust_issuer.issuer, trust_issuer.jwks, trust_issuer.audience)
  ON CONFLICT ON CONSTRAINT trusted_issuer_pkey DO UPDATE
    SET jwks = EXCLUDED.jwks, audience = EXCLUDED.audience, updated_at = pg_catalog.now();
END
$$;

------------------------------------------------------------------------
-- JWT primitives
------------------------------------------------------------------------
------------------------------------------------------------------------
-- JWT primitives: sign, verify, decode (src/jwt.c)
------------------------------------------------------------------------

-- Sign claims as they are, with no audit row: for the extension owner's
-- tests of tokens tokex never issued (src/keys.c); granted to no one.
CREATE FUNCTION tokex._sign(claims jsonb, typ text) RETURNS text
  LANGUAGE C STRICT VOLATILE AS 'MODULE_PATHNAME', 'tokex_sign_internal';

CREATE FUNCTION tokex.jwt_sign(claims jsonb, kid text DEFAULT NULL) RETURNS text
  LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp
  AS 'MODULE_PATHNAME', 'tokex_jwt_sign';

CREATE FUNCTION tokex.jwt_verify(token text, audience text DEFAULT NULL) RETURNS jsonb
  LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp
  AS 'MODULE_PATHNAME', 'tokex_jwt_verify';

CREATE FUNCTION tokex.jwt_decode(token text) RETURNS jsonb
  LANGUAGE C IMMUTABLE STRICT AS 'MODULE_PATHNAME', 'tokex_jwt_decode';
------------------------------------------------------------------------
-- The identity graph: identities, delegations, resources, policy (the
-- tables are the admin API; plain DML takes effect at the next call)
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

SELECT pg_catalog.pg_extension_config_dump('tokex.identity', '');

SELECT pg_catalog.pg_extension_config_dump('tokex.delegation', '');

SELECT pg_catalog.pg_extension_config_dump('tokex.resource', '');

SELECT pg_catalog.pg_extension_config_dump('tokex.policy', '');

SELECT pg_catalog.pg_extension_config_dump('tokex.delegation_id_seq', '');

SELECT pg_catalog.pg_extension_config_dump('tokex.policy_id_seq', '');

------------------------------------------------------------------------
-- Sessions and revocation
------------------------------------------------------------------------
------------------------------------------------------------------------
-- Clients: the application tier or agent platform that asks for tokens,
-- and how it authenticates (secrets, RFC 7523 assertions; src/client.c)
------------------------------------------------------------------------

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
  created_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
  -- database roles that call tokex.exchange as this client (the SQL face): a
  -- member of one of them is this client (src/exchange.c, resolve_sql_client)
  db_roles    text[] CHECK (pg_catalog.array_position(db_roles, NULL) IS NULL),
  -- a gateway that may introspect any token (RFC 7662 §4); others learn only
  -- about tokens issued to them or for their audiences
  introspect_any boolean NOT NULL DEFAULT false
);

SELECT pg_catalog.pg_extension_config_dump('tokex.client', '');

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

-- stored = '' for a client without a secret (or unknown): it costs the same
CREATE FUNCTION tokex._verify_secret(secret text, stored text) RETURNS boolean
  LANGUAGE C STRICT STABLE AS 'MODULE_PATHNAME', 'tokex_verify_secret';

-- PBKDF2 iterations this backend has run (for tests of what a check costs)
CREATE FUNCTION tokex._pbkdf2_iterations() RETURNS bigint
  LANGUAGE C STRICT VOLATILE AS 'MODULE_PATHNAME', 'tokex_pbkdf2_iterations';

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

-- What an auditor reads: who, on whose behalf, with what privilege, result.
CREATE VIEW tokex.audit AS
SELECT at, exchange_id, operation, decision, error, reason, subject, actor, actor_chain, client_id,
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
-- Sessions and agent credentials (src/session.c)
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

SELECT pg_catalog.pg_extension_config_dump('tokex.session', '');

-- The credential an agent holds for a person: a tokex JWT with sub = the
-- person, may_act = the agent and sid = the session.  It only works as the
-- subject_token of an exchange (with the agent's actor_token) while the
-- session, the delegation and both identities are live.  Issued in C
-- (src/session.c) through the same steps as every token.
CREATE FUNCTION tokex.start_session(principal text, agent text, scopes text[] DEFAULT NULL,
                                    ttl interval DEFAULT '1 hour')
RETURNS jsonb
LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp
AS 'MODULE_PATHNAME', 'tokex_start_session';

-- Its decision: both identities known and active, and the first live
-- delegation from principal to agent that covers scopes (NULL: any); the
-- session's scopes (the requested ones, or the delegation's).
CREATE FUNCTION tokex._decide_session(principal text, agent text, scopes text[], at timestamptz)
RETURNS TABLE (problem text, delegation_ids bigint[], scopes text[], valid_until timestamptz)
LANGUAGE sql STABLE AS $$
  SELECT CASE WHEN (SELECT pg_catalog.count(*) FROM tokex.identity i
                     WHERE i.id OPERATOR(pg_catalog.=) ANY (ARRAY[principal, agent])
                       AND i.status OPERATOR(pg_catalog.=) 'active') OPERATOR(pg_catalog.<>) 2
              THEN 'identities'
              WHEN d.id IS NULL THEN 'delegation' END,
         ARRAY[d.id],
         CASE WHEN _decide_session.scopes IS NULL THEN d.scopes
              ELSE ARRAY(SELECT DISTINCT s FROM pg_catalog.unnest(_decide_session.scopes) s ORDER BY s) END,
         d.valid_until
    FROM (SELECT 1) one
    LEFT JOIN LATERAL (
      SELECT x.id, x.scopes, x.valid_until FROM tokex.delegation x
       WHERE x.principal OPERATOR(pg_catalog.=) _decide_session.principal
         AND x.delegate OPERATOR(pg_catalog.=) _decide_session.agent
         AND x.revoked_at IS NULL AND x.valid_from OPERATOR(pg_catalog.<=) _decide_session.at
         AND (x.valid_until IS NULL OR x.valid_until OPERATOR(pg_catalog.>) _decide_session.at)
         AND (_decide_session.scopes IS NULL OR x.scopes OPERATOR(pg_catalog.@>) _decide_session.scopes)
       ORDER BY x.id LIMIT 1) d ON true
$$;

-- An actor token for an agent or service registered in tokex, for
-- deployments without an external workload identity issuer (src/session.c).
CREATE FUNCTION tokex.identity_token(identity text, ttl interval DEFAULT '15 minutes')
RETURNS text
LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp
AS 'MODULE_PATHNAME', 'tokex_identity_token';

-- The client_credentials grant for a client the HTTP face authenticated
-- (src/session.c); granted to no one.
CREATE FUNCTION tokex._client_credentials(client_id text, scope text, audience text, resource text)
RETURNS jsonb
LANGUAGE C VOLATILE AS 'MODULE_PATHNAME', 'tokex_client_credentials';
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
  kind    text NOT NULL CHECK (kind IN ('identity', 'delegation', 'session', 'token', 'key')),
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
  IF pg_catalog.strpos(token_or_jti, '.') > 0 THEN
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
-- The decision: one query over the graph, prepared once per backend by
-- tokex.exchange (src/decide.c).  Administrators can run it themselves to
-- see why.
--
-- chain_iss/chain_sub/chain_iat: position 1 is the subject, 2.. the actors
-- from the first (closest to the subject) to the current one.
-- revoked_keys: the presented tokens' revocation keys (tokex._jti_key of
-- their iss and jti); sid: the session of the subject token; own_jtis: the
-- jtis of presented tokens that tokex issued (each must have its granted
-- audit row); may_act_iss/may_act_sub: the subject token's may_act entries,
-- resolved to identities in may_act_ids; at: the time of the call, against
-- which every validity window is judged (not the transaction's start).
------------------------------------------------------------------------
-- (iss, sub) pairs to identities: tokex's own tokens carry the identity id as
-- sub; external ones map through identity.(issuer, subject).
CREATE FUNCTION tokex._resolve(iss text[], sub text[], own_issuer text)
RETURNS TABLE (n bigint, sub text, id text, kind text, status text, tokens_valid_after timestamptz)
LANGUAGE sql STABLE AS $$
  SELECT t.n, t.sub, i.id, i.kind, i.status, i.tokens_valid_after
    FROM ROWS FROM (pg_catalog.unnest(iss), pg_catalog.unnest(sub)) WITH ORDINALITY AS t(iss, sub, n)
    LEFT JOIN LATERAL (
      SELECT i.id, i.kind, i.status, i.tokens_valid_after FROM tokex.identity i
       WHERE t.iss OPERATOR(pg_catalog.=) own_issuer AND i.id OPERATOR(pg_catalog.=) t.sub
      UNION ALL
      SELECT i.id, i.kind, i.status, i.tokens_valid_after FROM tokex.identity i
       WHERE t.iss OPERATOR(pg_catalog.<>) own_issuer
         AND i.issuer OPERATOR(pg_catalog.=) t.iss AND i.subject OPERATOR(pg_catalog.=) t.sub
      LIMIT 1) i ON true
$$;

-- The query itself, inlined into the plan tokex.exchange prepares (an SQL
-- function with a pinned search_path or SECURITY DEFINER would not be
-- inlined), so its body names every table, function, operator and type by
-- schema.  Granted to no one: administrators call tokex.decide below.
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
  target text, scope text[], ttl_seconds bigint, may_act_ids text[])
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
policy_here AS (  -- policy rows matching this exchange in everything but the audience
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
   WHERE p.audience IS NULL OR p.audience OPERATOR(pg_catalog.=) (SELECT (r).audience FROM target)
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
      WHEN EXISTS (SELECT 1 FROM client WHERE NOT ('urn:ietf:params:oauth:grant-type:token-exchange'
                                                  OPERATOR(pg_catalog.=) ANY (client.grant_types))) THEN
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
          FROM tokex._resolve(may_act_iss, may_act_sub, own_issuer) m)
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
------------------------------------------------------------------------
-- Exchange (RFC 8693; src/exchange.c)
------------------------------------------------------------------------

CREATE FUNCTION tokex.exchange(
  subject_token text, subject_token_type text,
  actor_token text DEFAULT NULL, actor_token_type text DEFAULT NULL,
  audience text DEFAULT NULL, resource text DEFAULT NULL, scope text DEFAULT NULL,
  requested_token_type text DEFAULT NULL, client_id text DEFAULT NULL)
RETURNS jsonb
LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp
AS 'MODULE_PATHNAME', 'tokex_exchange';

-- The same exchange for the HTTP face, which authenticated client_id itself
-- (tokex_api.token); granted to no one, so SQL callers cannot name a client
-- their role does not map to.
CREATE FUNCTION tokex._exchange_for_client(
  subject_token text, subject_token_type text, actor_token text, actor_token_type text,
  audience text, resource text, scope text, requested_token_type text, client_id text)
RETURNS jsonb
LANGUAGE C VOLATILE AS 'MODULE_PATHNAME', 'tokex_exchange_for_client';
------------------------------------------------------------------------
-- Introspection (RFC 7662; src/introspect.c)
------------------------------------------------------------------------

CREATE FUNCTION tokex.introspect(token text) RETURNS jsonb
LANGUAGE C STABLE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp
AS 'MODULE_PATHNAME', 'tokex_introspect';

-- Is a token that verified still live?  tokex's own tokens must have their
-- granted audit row (a token of ours without one was never issued) and be
-- an access token (an exchange's, client_credentials', or an admin's
-- jwt_sign: a session credential or an identity token is no access token
-- for any resource), name known, active identities issued after any
-- tokens_valid_after, not be revoked, their session must be live, and every
-- delegation that minted them (recorded in that audit row) must still
-- stand.  For external tokens tokex knows only what its tables say about
-- them.  No identity may appear twice in the chain.  at: the time of the call.
CREATE FUNCTION tokex._token_active(chain_iss text[], chain_sub text[], iat timestamptz,
                                    own_issuer text, own boolean, revoked_key bytea, jti_uuid uuid,
                                    sid uuid, at timestamptz DEFAULT pg_catalog.clock_timestamp())
RETURNS TABLE (active boolean)   -- a table function, so the planner inlines it
LANGUAGE sql STABLE AS $$
  SELECT NOT EXISTS (SELECT 1 FROM tokex.revoked_token r WHERE r.key OPERATOR(pg_catalog.=) revoked_key)
     AND (NOT own OR EXISTS (
           SELECT 1 FROM tokex.audit_event a
            WHERE a.jti OPERATOR(pg_catalog.=) jti_uuid AND a.decision OPERATOR(pg_catalog.=) 'granted'
              AND a.operation OPERATOR(pg_catalog.=) ANY (ARRAY['exchange', 'client_credentials', 'jwt_sign'])))
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
     AND NOT EXISTS (
           SELECT 1 FROM tokex.audit_event a
             JOIN tokex.delegation d ON d.id OPERATOR(pg_catalog.=) ANY (a.delegation_ids)
            WHERE a.jti OPERATOR(pg_catalog.=) jti_uuid
              AND (d.revoked_at IS NOT NULL OR d.valid_until OPERATOR(pg_catalog.<=) _token_active.at))
$$;
------------------------------------------------------------------------
-- The HTTP face: schema tokex_api, exposed by PostgREST (db-schemas =
-- tokex_api).  Functions answer RFC JSON and set response.status and
-- response.headers instead of raising, because PostgREST rolls back on an
-- exception and a denial's audit row must stay.
------------------------------------------------------------------------
CREATE SCHEMA tokex_api;

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

-- What an HTTP caller is told about a refusal.  The reason names
-- identities, delegations, policies and clients ("identity \"alice\" is
-- offboarded"), which is the graph's business, not the caller's: over HTTP
-- invalid_grant, invalid_target and unauthorized_client get one text per
-- code, and invalid_client says only "client authentication failed" once
-- the answer could tell a known client id from an unknown one (before a
-- client_assertion's signature is verified).  The audit row keeps the reason.
-- invalid_request, invalid_scope and unsupported_grant_type describe the
-- request itself and are kept.
CREATE FUNCTION tokex._public_description(error text, reason text) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, tokex, pg_temp AS $$
  SELECT CASE error
    WHEN 'invalid_grant' THEN
      'the subject or actor token is invalid, expired or revoked, or does not allow this exchange'
    WHEN 'invalid_target' THEN
      'the requested audience or resource is unknown, not allowed here, or not exactly one'
    WHEN 'unauthorized_client' THEN
      'the client is not authorized to make this request'
    WHEN 'invalid_client' THEN
      CASE WHEN reason IN ('client authentication is required', 'use exactly one client authentication method',
                           'malformed Basic credentials', 'client_id does not match the Basic credentials',
                           'unsupported client_assertion_type', 'malformed client_assertion',
                           -- only a holder of the client's key gets past its signature to these
                           'client_assertion must have iss = sub = client_id and a jti',
                           'client_assertion aud does not name this server',
                           'client_assertion expires more than an hour from now',
                           'client_assertion jti was already used')
           THEN reason ELSE 'client authentication failed' END
    ELSE reason END
$$;

-- RFC 6749 §5.2 / RFC 7009 / RFC 7662 answers: body plus status and
-- no-store headers, always; an error described as _public_description says.
CREATE FUNCTION tokex._respond(body jsonb, status int DEFAULT 200, www_authenticate text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, tokex, pg_temp AS $$
BEGIN
  IF body ? 'error' THEN
    body := body OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_object('error_description',
              tokex._public_description(body->>'error', body->>'error_description'));
  END IF;
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

-- An HTTP refusal, in one place: its audit row (the full reason, committed
-- whatever PostgREST's transaction does; see src/audit.c), then the RFC 6749
-- §5.2 answer with its status and headers (401: WWW-Authenticate).
-- operation: 'exchange' (the token endpoint), 'introspect' or 'revoke'; the
-- audited reason names the endpoint.  reason defaults to the description.
-- claimed: a client id that did not authenticate; it is no client, so the
-- row's client_id stays empty and the reason quotes the claim.
CREATE FUNCTION tokex._refuse(error text, description text, status int, client_id text,
                              audience text DEFAULT NULL, operation text DEFAULT 'exchange',
                              reason text DEFAULT NULL, claimed text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, tokex, pg_temp AS $$
BEGIN
  PERFORM tokex._audit_write(pg_catalog.jsonb_build_object(
    'exchange_id', pg_catalog.gen_random_uuid(), 'operation', operation, 'decision', 'denied',
    'error', error,
    'reason', pg_catalog.left(COALESCE(reason, description) OPERATOR(pg_catalog.||)
                CASE operation WHEN 'introspect' THEN ' at the introspection endpoint'
                               WHEN 'revoke' THEN ' at the revocation endpoint' ELSE '' END
                OPERATOR(pg_catalog.||)
                CASE WHEN claimed IS NOT NULL
                     THEN pg_catalog.format(' (claimed client_id "%s")', pg_catalog.left(claimed, 256)) ELSE '' END,
                1024),
    'client_id', pg_catalog.left(client_id, 256), 'audience', pg_catalog.left(audience, 1024)), false);
  RETURN tokex._respond(pg_catalog.jsonb_build_object('error', error, 'error_description', description),
                        status, CASE WHEN status OPERATOR(pg_catalog.=) 401
                                     THEN 'Basic realm="tokex", charset="UTF-8"' END);
END
$$;

-- A PostgREST request that is not a POST.  PostgREST also serves functions
-- on GET, which would put client secrets and tokens in URLs (RFC 6749
-- §2.3.1, RFC 7662 §2.1).  Called from SQL (no request.method): not refused.
CREATE FUNCTION tokex._not_post() RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, tokex, pg_temp AS $$
  SELECT COALESCE(NULLIF(pg_catalog.current_setting('request.method', true), '')
                  OPERATOR(pg_catalog.<>) 'POST', false)
$$;

-- The public URL of an endpoint, path as PostgREST serves it ('/rpc/token'):
-- under tokex.base_url (default tokex.issuer), at that path or, with
-- tokex.endpoint_style = plain, at the path the reverse proxy serves ('/token').
CREATE FUNCTION tokex._endpoint(path text) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, tokex, pg_temp AS $$
  SELECT pg_catalog.rtrim(COALESCE(tokex._setting('base_url'), tokex._setting('issuer')), '/')
         OPERATOR(pg_catalog.||)
         CASE WHEN tokex._setting('endpoint_style') OPERATOR(pg_catalog.=) 'plain'
              THEN pg_catalog.regexp_replace(path, '^/rpc/', '/') ELSE path END
$$;

-- RFC 8693 §2.1: audience and resource may be repeated; tokex mints for
-- exactly one target, so a repeat is invalid_target.  PostgREST keeps only
-- the last value of a repeated form key and cannot pass them all to this
-- function (a VARIADIC parameter resolves only when a request sends every
-- parameter), so the reverse proxy in front of it counts them and lists the
-- repeated names in the Tokex-Repeated-Parameters request header
-- (contrib/nginx).  A client can only refuse its own request with it.
-- Returns 'audience' or 'resource', or NULL.
CREATE FUNCTION tokex._repeated_target() RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, tokex, pg_temp AS $$
DECLARE
  hdr text;
BEGIN
  BEGIN
    hdr := NULLIF(pg_catalog.current_setting('request.headers', true), '')::jsonb
           ->> 'tokex-repeated-parameters';
  EXCEPTION WHEN invalid_text_representation THEN
    RETURN NULL;
  END;
  RETURN (SELECT n FROM pg_catalog.regexp_split_to_table(pg_catalog.lower(hdr), '[[:space:],]+') n
           WHERE n IN ('audience', 'resource') ORDER BY n LIMIT 1);
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

  r := tokex._exchange_for_client(subject_token, subject_token_type, actor_token, actor_token_type,
                      token.audience, token.resource, token.scope, requested_token_type,
                      (a.client).client_id);
  RETURN tokex._respond(r, CASE WHEN r ? 'error' THEN 400 ELSE 200 END);
END
$$;

-- The common start of introspect and revoke (RFC 7662 §2.1, RFC 7009 §2.1):
-- an authenticated client and a token, or the refusal to return.
-- Refusals are audited like /rpc/token's, the reason naming the endpoint.
CREATE FUNCTION tokex._client_with_token(path text, token text, client_id text, client_secret text,
                                         client_assertion text, client_assertion_type text,
                                         OUT client tokex.client, OUT refusal jsonb)
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, tokex, pg_temp AS $$
DECLARE
  a record;
BEGIN
  IF tokex._not_post() THEN
    refusal := tokex._refuse('invalid_request', 'this endpoint takes POST', 405, NULL, NULL,
                             pg_catalog.substr(path, 6));
    RETURN;
  END IF;
  SELECT * INTO a FROM tokex._authenticate(client_id, client_secret, client_assertion,
                                           client_assertion_type, tokex._endpoint(path));
  IF a.client IS NULL OR (a.client).client_id IS NULL THEN
    refusal := tokex._refuse('invalid_client', a.why, 401, NULL, NULL, pg_catalog.substr(path, 6),
                             claimed => a.claimed_id);
  ELSIF token IS NULL THEN
    refusal := tokex._refuse('invalid_request', 'token is required', 400, (a.client).client_id, NULL,
                             pg_catalog.substr(path, 6));
  ELSE
    client := a.client;
  END IF;
END
$$;

-- Was this token issued to this client: a token of tokex's whose granted
-- audit row names the client.  Not the token's client_id claim: that names
-- the current actor when the exchange had no client, and another issuer's
-- client_id means nothing here.
CREATE FUNCTION tokex._issued_to(client_id text, claims jsonb) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, tokex, pg_temp AS $$
  SELECT COALESCE(claims->>'iss' OPERATOR(pg_catalog.=) tokex._setting('issuer')
      AND EXISTS (SELECT 1 FROM tokex.audit_event a
                   WHERE a.jti OPERATOR(pg_catalog.=)
                           CASE WHEN claims->>'jti' ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
                                THEN (claims->>'jti')::uuid END
                     AND a.decision OPERATOR(pg_catalog.=) 'granted'
                     AND a.client_id OPERATOR(pg_catalog.=) _issued_to.client_id), false)
$$;

-- Who may learn about a token at the introspection endpoint (RFC 7662 §4):
-- a gateway (introspect_any), the client it was issued to, or a client
-- whose registered audiences name the token's audience.
CREATE FUNCTION tokex._may_introspect(client tokex.client, claims jsonb) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, tokex, pg_temp AS $$
  SELECT COALESCE(client.introspect_any
      OR tokex._issued_to(client.client_id, claims)
      OR EXISTS (SELECT 1 FROM pg_catalog.jsonb_array_elements_text(
                   CASE pg_catalog.jsonb_typeof(claims->'aud')
                        WHEN 'array' THEN claims->'aud'
                        WHEN 'string' THEN pg_catalog.jsonb_build_array(claims->'aud')
                        ELSE '[]'::jsonb END) aud
                  WHERE aud OPERATOR(pg_catalog.=) ANY (client.audiences)), false)
$$;

-- POST /rpc/introspect (RFC 7662) and POST /rpc/revoke (RFC 7009), after
-- their common start (_client_with_token).  Introspection: each client
-- learns about the tokens it may (_may_introspect); any other token looks
-- like an invalid one.  Revocation: 200 for any well-formed request, known
-- token or not; a client revokes only tokens issued to it.
CREATE FUNCTION tokex._token_endpoint(operation text, token text, client_id text, client_secret text,
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
  BEGIN
    claims := tokex.jwt_verify(token);
  EXCEPTION WHEN invalid_authorization_specification THEN
    claims := NULL;           -- invalid or unknown: nothing to revoke (RFC 7009 §2.2)
  END;
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

-- The two endpoints take the same form keys (PostgREST needs every one
-- declared, DEFAULT NULL), so one definition serves both names.
DO $do$
DECLARE
  ep text;
BEGIN
  FOREACH ep IN ARRAY ARRAY['introspect', 'revoke'] LOOP
    EXECUTE pg_catalog.format($f$
      CREATE FUNCTION tokex_api.%I(token text DEFAULT NULL, token_type_hint text DEFAULT NULL,
        client_id text DEFAULT NULL, client_secret text DEFAULT NULL,
        client_assertion text DEFAULT NULL, client_assertion_type text DEFAULT NULL)
      RETURNS jsonb
      LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS
      $b$ SELECT tokex._token_endpoint(%L, token, client_id, client_secret, client_assertion,
                                       client_assertion_type) $b$ $f$, ep, ep);
  END LOOP;
END
$do$;

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
    'introspection_endpoint_auth_signing_alg_values_supported', signing,
    'revocation_endpoint_auth_signing_alg_values_supported', signing,
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

GRANT EXECUTE ON FUNCTION tokex.decide(text[], text[], timestamptz[], text, text, text[], text[], text, text, bytea[], uuid,
                                        uuid[], text[], text[], timestamptz)
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
  tokex.revoke_token(text, text, text) TO tokex_admin;

GRANT SELECT ON tokex.audit_trail, tokex.revocation TO tokex_auditor, tokex_admin;

GRANT SELECT, UPDATE ON tokex.session TO tokex_admin;

GRANT SELECT, INSERT ON tokex.revoked_token TO tokex_admin;

GRANT EXECUTE ON FUNCTION tokex.register_client(text, text, text[], text[], jsonb) TO tokex_admin;

-- The HTTP face: grant tokex_web to PostgREST's anonymous role.  It reaches
-- exactly the tokex_api functions and nothing else in tokex.
GRANT USAGE ON SCHEMA tokex_api TO tokex_web;

GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA tokex_api TO tokex_web;

GRANT SELECT (introspect_any) ON tokex.client TO tokex_admin;
