------------------------------------------------------------------------
-- The resource side in SQL (src/resource.c): a PostgreSQL-backed API checks
-- the token it received, and its row-level security asks on whose behalf,
-- by which agent and with what scope the transaction runs.
------------------------------------------------------------------------

-- Check a token for this database's audience (tokex.resource_audience),
-- live as introspection finds it, and for a DPoP-bound one its proof for
-- this request (method, url; ath); keep its claims for this transaction.
-- Returns the claims; else 28000 invalid token, and nothing is kept.
CREATE FUNCTION tokex.authenticate(token text, dpop_proof text DEFAULT NULL, method text DEFAULT NULL,
                                   url text DEFAULT NULL) RETURNS jsonb
LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp
AS 'MODULE_PATHNAME', 'tokex_authenticate';

-- What tokex.authenticate kept for this transaction; NULL (false) when nothing.
CREATE FUNCTION tokex.on_behalf_of() RETURNS text
  LANGUAGE C STABLE PARALLEL RESTRICTED AS 'MODULE_PATHNAME', 'tokex_on_behalf_of';

CREATE FUNCTION tokex.current_actor() RETURNS text
  LANGUAGE C STABLE PARALLEL RESTRICTED AS 'MODULE_PATHNAME', 'tokex_current_actor';

-- the actors from the first (acting for the person) to the current one
CREATE FUNCTION tokex.actor_chain() RETURNS text[]
  LANGUAGE C STABLE PARALLEL RESTRICTED AS 'MODULE_PATHNAME', 'tokex_actor_chain';

CREATE FUNCTION tokex.has_scope(scope text) RETURNS boolean
  LANGUAGE C STABLE PARALLEL RESTRICTED AS 'MODULE_PATHNAME', 'tokex_has_scope';

CREATE FUNCTION tokex.token_claims() RETURNS jsonb
  LANGUAGE C STABLE PARALLEL RESTRICTED AS 'MODULE_PATHNAME', 'tokex_token_claims';
