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
