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

-- An HTTP-level refusal still leaves its audit row, committed whatever
-- PostgREST's transaction does.  operation: 'exchange' (the token endpoint),
-- 'introspect' or 'revoke'.
CREATE FUNCTION tokex._audit_refusal(error text, reason text, client_id text, audience text DEFAULT NULL,
                                     operation text DEFAULT 'exchange')
RETURNS void
LANGUAGE sql VOLATILE SET search_path = pg_catalog, tokex, pg_temp AS $$
  SELECT tokex._audit_write(pg_catalog.jsonb_build_object(
    'exchange_id', pg_catalog.gen_random_uuid(), 'operation', operation, 'decision', 'denied',
    'error', error, 'reason', pg_catalog.left(reason, 1024),
    'client_id', pg_catalog.left(client_id, 256), 'audience', pg_catalog.left(audience, 1024)), false)
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
  IF tokex._repeated_target() IS NOT NULL THEN
    PERFORM tokex._audit_refusal('invalid_target', tokex._repeated_target() || ' given more than once',
                                 (a.client).client_id, token.audience);
    RETURN tokex._respond(pg_catalog.jsonb_build_object('error', 'invalid_target',
                          'error_description', 'exactly one audience or resource may be requested'), 400);
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

-- ' at the introspection endpoint': where an audited refusal happened
CREATE FUNCTION tokex._at_endpoint(path text) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, tokex, pg_temp AS $$
  SELECT ' at the ' OPERATOR(pg_catalog.||)
         CASE path WHEN '/rpc/introspect' THEN 'introspection' WHEN '/rpc/revoke' THEN 'revocation'
                   ELSE path END OPERATOR(pg_catalog.||) ' endpoint'
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
  SELECT * INTO a FROM tokex._authenticate(client_id, client_secret, client_assertion,
                                           client_assertion_type, tokex._endpoint(path));
  IF a.client IS NULL OR (a.client).client_id IS NULL THEN
    PERFORM tokex._audit_refusal('invalid_client', a.why || tokex._at_endpoint(path), a.claimed_id, NULL,
                                 pg_catalog.substr(path, 6));
    refusal := tokex._respond(pg_catalog.jsonb_build_object('error', 'invalid_client', 'error_description', a.why),
                              401, 'Basic realm="tokex", charset="UTF-8"');
  ELSIF token IS NULL THEN
    PERFORM tokex._audit_refusal('invalid_request', 'token is required' || tokex._at_endpoint(path),
                                 (a.client).client_id, NULL, pg_catalog.substr(path, 6));
    refusal := tokex._respond(pg_catalog.jsonb_build_object('error', 'invalid_request',
                                                            'error_description', 'token is required'), 400);
  ELSE
    client := a.client;
  END IF;
END
$$;

-- RFC 7662 §4: the server decides which protected resource may learn about
-- a token.  A client learns about the tokens issued to it (client_id), the
-- tokens for an audience it is registered for (tokex.client.audiences lists
-- one of the token's aud; NULL, "any audience" when exchanging, does not
-- count here), and, when flagged introspect_any, about every token (a
-- gateway in front of many resource servers).  The column belongs to the HTTP
-- face, so it is added here.
ALTER TABLE tokex.client ADD COLUMN introspect_any boolean NOT NULL DEFAULT false;
GRANT SELECT (introspect_any) ON tokex.client TO tokex_admin;

CREATE FUNCTION tokex._may_introspect(client tokex.client, claims jsonb) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, tokex, pg_temp AS $$
  SELECT COALESCE(client.introspect_any
      OR claims->>'client_id' OPERATOR(pg_catalog.=) client.client_id
      OR EXISTS (SELECT 1 FROM pg_catalog.jsonb_array_elements_text(
                   CASE pg_catalog.jsonb_typeof(claims->'aud')
                        WHEN 'array' THEN claims->'aud'
                        WHEN 'string' THEN pg_catalog.jsonb_build_array(claims->'aud')
                        ELSE '[]'::jsonb END) aud
                  WHERE aud OPERATOR(pg_catalog.=) ANY (client.audiences)), false)
$$;

-- POST /rpc/introspect (RFC 7662): authenticated clients, each about the
-- tokens it may learn about (_may_introspect); any other token looks like
-- an invalid one.
CREATE FUNCTION tokex_api.introspect(token text DEFAULT NULL, token_type_hint text DEFAULT NULL,
  client_id text DEFAULT NULL, client_secret text DEFAULT NULL,
  client_assertion text DEFAULT NULL, client_assertion_type text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
DECLARE
  c record;
  r jsonb;
BEGIN
  SELECT * INTO c FROM tokex._client_with_token('/rpc/introspect', introspect.token, introspect.client_id,
                                                client_secret, client_assertion, client_assertion_type);
  IF c.refusal IS NOT NULL THEN
    RETURN c.refusal;
  END IF;
  r := tokex.introspect(introspect.token);
  IF (r->>'active')::boolean AND NOT tokex._may_introspect(c.client, r) THEN
    r := '{"active": false}';
  END IF;
  RETURN tokex._respond(r);
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
      PERFORM tokex._audit_refusal('unauthorized_client',
                                   'the token was not issued to this client' || tokex._at_endpoint('/rpc/revoke'),
                                   (c.client).client_id,
                                   CASE pg_catalog.jsonb_typeof(claims->'aud') WHEN 'string' THEN claims->>'aud' END,
                                   'revoke');
      RETURN tokex._respond(pg_catalog.jsonb_build_object('error', 'unauthorized_client',
                            'error_description', 'the token was not issued to this client'), 400);
    END IF;
    PERFORM tokex.revoke_token(revoke.token, 'revoked by client ' || (c.client).client_id);
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
