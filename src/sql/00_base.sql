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
--   tokex_resource a resource's API roles: tokex.authenticate and the accessors its
--                  row-level security reads (on_behalf_of, current_actor, ...)
DO $$
DECLARE r text;
BEGIN
  FOREACH r IN ARRAY ARRAY['tokex_admin', 'tokex_app', 'tokex_auditor', 'tokex_web', 'tokex_resource'] LOOP
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) r) THEN
      EXECUTE pg_catalog.format('CREATE ROLE %I NOLOGIN', r);
    END IF;
  END LOOP;
END
$$;

GRANT USAGE ON SCHEMA tokex TO tokex_admin, tokex_app, tokex_auditor, tokex_resource;

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
