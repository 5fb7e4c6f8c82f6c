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
     -- the audit row looked for first where the token's iat says it was written
     AND (NOT own OR EXISTS (
           SELECT 1 FROM tokex._audit_by_jti(jti_uuid, iat OPERATOR(pg_catalog.-) '1 hour'::pg_catalog.interval,
                                             iat OPERATOR(pg_catalog.+) '1 hour'::pg_catalog.interval) a
            WHERE a.decision OPERATOR(pg_catalog.=) 'granted'
              AND a.operation OPERATOR(pg_catalog.=) ANY (ARRAY['exchange', 'client_credentials', 'jwt_sign'])
              -- not obtained with an API key revoked since
              AND NOT EXISTS (SELECT 1 FROM tokex.api_key k
                               WHERE k.key_sha256 OPERATOR(pg_catalog.=) ANY (ARRAY[a.actor_token_sha256,
                                                                                   a.subject_token_sha256])
                                 AND k.revoked_at IS NOT NULL)
              -- every delegation that minted it still stands (a deleted one does not)
              AND NOT EXISTS (
                    SELECT 1 FROM pg_catalog.unnest(a.delegation_ids) did
                      LEFT JOIN tokex.delegation d ON d.id OPERATOR(pg_catalog.=) did
                     WHERE d.id IS NULL OR d.revoked_at IS NOT NULL
                        OR d.valid_until OPERATOR(pg_catalog.<=) _token_active.at)))
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
$$;

-- Its fast path (src/fastdecide.c), which tokex.introspect runs first: true
-- when it finds the token live, false when it leaves the answer to the
-- query.  Only for tests to compare the two; granted to no one.
CREATE FUNCTION tokex._token_active_fast(chain_iss text[], chain_sub text[], iat timestamptz,
                                         own_issuer text, own boolean, revoked_key bytea, jti_uuid uuid,
                                         sid uuid, at timestamptz DEFAULT pg_catalog.clock_timestamp())
RETURNS boolean
LANGUAGE C STABLE AS 'MODULE_PATHNAME', 'tokex_token_active_fast_sql';
