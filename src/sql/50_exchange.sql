------------------------------------------------------------------------
-- Exchange (RFC 8693; src/exchange.c)
------------------------------------------------------------------------

CREATE FUNCTION tokex.exchange(
  subject_token text, subject_token_type text,
  actor_token text DEFAULT NULL, actor_token_type text DEFAULT NULL,
  audience text DEFAULT NULL, resource text DEFAULT NULL, scope text DEFAULT NULL,
  requested_token_type text DEFAULT NULL, client_id text DEFAULT NULL,
  -- a transaction token's tctx and rctx (draft-ietf-oauth-transaction-tokens)
  request_details jsonb DEFAULT NULL, request_context jsonb DEFAULT NULL)
RETURNS jsonb
LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp
AS 'MODULE_PATHNAME', 'tokex_exchange';

-- The same exchange for the HTTP face, which authenticated client_id itself
-- (tokex_api.token); granted to no one, so SQL callers cannot name a client
-- their role does not map to.
CREATE FUNCTION tokex._exchange_for_client(
  subject_token text, subject_token_type text, actor_token text, actor_token_type text,
  audience text, resource text, scope text, requested_token_type text, client_id text,
  request_details jsonb, request_context jsonb)
RETURNS jsonb
LANGUAGE C VOLATILE AS 'MODULE_PATHNAME', 'tokex_exchange_for_client';
