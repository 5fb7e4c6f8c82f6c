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
  target text, scope text[], ttl_seconds bigint, may_act_ids text[],
  token_format text,       -- what the target resource takes (tokex.resource.token_format)
  require_dpop boolean)    -- ... and whether only DPoP-bound tokens
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
own_row AS (  -- the audit row of each presented token of tokex's (NULLs: none)
  -- looked for first where the chain's iats say it was written: the
  -- presented tokens were issued between the first and the last
  SELECT j, a.decision, a.actor_token_sha256, a.subject_token_sha256
    FROM pg_catalog.unnest(own_jtis) j
    CROSS JOIN (SELECT pg_catalog.min(t) OPERATOR(pg_catalog.-) '1 hour'::pg_catalog.interval AS lo,
                       pg_catalog.max(t) OPERATOR(pg_catalog.+) '1 hour'::pg_catalog.interval AS hi
                  FROM pg_catalog.unnest(chain_iat) t) near
    LEFT JOIN LATERAL tokex._audit_by_jti(j, near.lo, near.hi) a ON true
),
token_problem AS (  -- revoked or unaudited tokens, a dead session
  SELECT CASE
           -- LIMIT keeps the lookup a per-key index probe in the generic plan
           WHEN EXISTS (SELECT 1 FROM pg_catalog.unnest(revoked_keys) k,
                          LATERAL (SELECT 1 FROM tokex.revoked_token r
                                    WHERE r.key OPERATOR(pg_catalog.=) k LIMIT 1) r) THEN
             'a presented token has been revoked'
           -- a token of ours without its committed audit row was never issued
           WHEN EXISTS (SELECT 1 FROM own_row o
                         WHERE COALESCE(o.decision OPERATOR(pg_catalog.<>) 'granted', true)) THEN
             'a presented token has no audit row'
           -- a token obtained with an API key revoked since dies with the key
           WHEN EXISTS (SELECT 1 FROM own_row a
                          JOIN tokex.api_key k
                            ON k.key_sha256 OPERATOR(pg_catalog.=) ANY (ARRAY[a.actor_token_sha256,
                                                                               a.subject_token_sha256])
                         WHERE k.revoked_at IS NOT NULL) THEN
             'a presented token was obtained with an API key that has been revoked'
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
policy_here AS NOT MATERIALIZED (  -- policy rows matching this exchange in everything but the audience
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
   WHERE (p.audience IS NULL OR p.audience OPERATOR(pg_catalog.=) (SELECT (r).audience FROM target))
     -- found by index, not by reading every policy: the rows naming this
     -- subject, else this actor, else this audience, else none of the three
     -- (disjoint, and together every row that can match)
     AND p.id OPERATOR(pg_catalog.=) ANY (ARRAY(
           SELECT q.id FROM tokex.policy q WHERE q.subject OPERATOR(pg_catalog.=) (SELECT id FROM subject)
           UNION ALL
           SELECT q.id FROM tokex.policy q
            WHERE q.subject IS NULL AND q.actor OPERATOR(pg_catalog.=) (SELECT id FROM actor)
           UNION ALL
           SELECT q.id FROM tokex.policy q
            WHERE q.subject IS NULL AND q.actor IS NULL
              AND q.audience OPERATOR(pg_catalog.=) (SELECT (r).audience FROM target)
           UNION ALL
           SELECT q.id FROM tokex.policy q WHERE q.subject IS NULL AND q.actor IS NULL AND q.audience IS NULL))
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
      -- (COALESCE: grant_types holding a NULL and not the grant is no permission)
      WHEN EXISTS (SELECT 1 FROM client WHERE NOT COALESCE('urn:ietf:params:oauth:grant-type:token-exchange'
                                                  OPERATOR(pg_catalog.=) ANY (client.grant_types), false)) THEN
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
          FROM tokex._resolve(may_act_iss, may_act_sub, own_issuer) m),
       (SELECT (r).token_format FROM target),
       (SELECT (r).require_dpop FROM target)
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

-- The decision's fast path (src/fastdecide.c), which tokex.exchange runs
-- first: _decide's row when it grants, no row when it leaves the decision to
-- the query.  Only for tests to compare the two; granted to no one.
CREATE FUNCTION tokex._decide_fast(
  chain_iss text[], chain_sub text[], chain_iat timestamptz[],
  audience text, resource text, requested_scope text[], token_scope text[],
  client_id text, own_issuer text, revoked_keys bytea[] DEFAULT NULL, sid uuid DEFAULT NULL,
  own_jtis uuid[] DEFAULT NULL, may_act_iss text[] DEFAULT NULL, may_act_sub text[] DEFAULT NULL,
  at timestamptz DEFAULT pg_catalog.clock_timestamp())
RETURNS TABLE (
  identity_error text, error text, reason text, chain text[], kinds text[],
  delegation_ids bigint[], policy_ids bigint[], target text, scope text[], ttl_seconds bigint,
  may_act_ids text[], token_format text, require_dpop boolean)
LANGUAGE C STABLE AS 'MODULE_PATHNAME', 'tokex_decide_fast_sql';
