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
