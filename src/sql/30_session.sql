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
