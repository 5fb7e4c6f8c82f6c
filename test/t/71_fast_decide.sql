-- The decision's fast path (src/fastdecide.c) against the decision query
-- (tokex._decide), on random graphs: identities of every status, external
-- and own, delegations with scopes, audiences, depths and windows, revoked
-- ones, resources by audience and URI, allow and deny policies naming
-- subjects, actors, kinds, audiences, clients, depths and validity ranges,
-- clients, sessions, revoked tokens, tokex's own tokens with and without
-- their audit row, API keys revoked.  For every call: a grant of the fast
-- path is a grant of the query with the same row (chain, delegations,
-- policies, target, scopes, ttl, may_act ids, format, DPoP); a grant of the
-- query is a grant of the fast path (it leaves only refusals to the query).
\ir preamble.psql
SELECT plan(22);

CREATE FUNCTION pg_temp.pick(a text[]) RETURNS text LANGUAGE sql VOLATILE AS $$
  SELECT a[1 + floor(random() * cardinality(a))::int]
$$;
-- a random subset (maybe empty) of a
CREATE FUNCTION pg_temp.some(a text[], p float8 DEFAULT 0.5) RETURNS text[] LANGUAGE sql VOLATILE AS $$
  SELECT COALESCE(array_agg(x), '{}') FROM unnest(a) x WHERE random() < p
$$;

CREATE TABLE pg_temp.cases (n serial, args jsonb, slow jsonb, fast jsonb);

CREATE TABLE pg_temp.active_cases (n serial, args jsonb, slow boolean, fast boolean);

-- introspection: the liveness query and its fast path on one token
CREATE FUNCTION pg_temp.both_active(iss text[], sub text[], iat timestamptz, own boolean, rk bytea, jti uuid,
                                    sid uuid, at timestamptz) RETURNS void LANGUAGE sql AS $$
  INSERT INTO pg_temp.active_cases (args, slow, fast)
  SELECT jsonb_build_object('iss', iss, 'sub', sub, 'iat', iat, 'own', own, 'rk', rk, 'jti', jti, 'sid', sid, 'at', at),
         (SELECT active FROM tokex._token_active(iss, sub, iat, 'https://tokex.test', own, rk, jti, sid, at)),
         tokex._token_active_fast(iss, sub, iat, 'https://tokex.test', own, rk, jti, sid, at)
$$;

-- one call of each; true when the query grants
CREATE FUNCTION pg_temp.both(iss text[], sub text[], iat timestamptz[], aud text, res text, req text[],
                             tscope text[], cl text, rk bytea[], sid uuid, jtis uuid[], miss text[], msub text[],
                             at timestamptz) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
  own text := 'https://tokex.test';
  s record;
  f record;
  fast jsonb;
BEGIN
  SELECT * INTO s FROM tokex._decide(iss, sub, iat, aud, res, req, tscope, cl, own, rk, sid, jtis, miss, msub, at);
  FOR f IN SELECT * FROM tokex._decide_fast(iss, sub, iat, aud, res, req, tscope, cl, own, rk, sid, jtis, miss, msub, at) LOOP
    fast := to_jsonb(f);
  END LOOP;
  INSERT INTO pg_temp.cases (args, slow, fast) VALUES (
    jsonb_build_object('iss', iss, 'sub', sub, 'iat', iat, 'aud', aud, 'res', res, 'req', req, 'tscope', tscope,
                       'client', cl, 'rk', rk, 'sid', sid, 'jtis', jtis, 'may_iss', miss, 'may_sub', msub, 'at', at),
    to_jsonb(s), fast);
  RETURN s.identity_error IS NULL AND s.error IS NULL;
END $$;

CREATE FUNCTION pg_temp.run(seed float8, rounds int, calls int) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  own text := 'https://tokex.test';
  scopes text[] := '{a,b,c,d}';
  ids text[];
  auds text[] := '{r1,r2,r3}';
  chain_ids text[];
  iss text[]; sub text[]; iat timestamptz[];
  aud text; res text; req text[]; tscope text[]; cl text; rk bytea[]; sid uuid; jtis uuid[];
  miss text[]; msub text[];
  i int; k int; nxt text; cur text;
  t timestamptz;
  round_jtis uuid[];
  aj uuid;
BEGIN
  PERFORM setseed(seed);
  FOR round IN 1 .. rounds LOOP
    -- a fresh graph (the identities stay, drawn anew)
    DELETE FROM tokex.session; DELETE FROM tokex.policy; DELETE FROM tokex.delegation;
    DELETE FROM tokex.client; DELETE FROM tokex.resource;
    UPDATE tokex.identity
       SET kind = pg_temp.pick('{human,human,agent,agent,agent,service}'),
           status = CASE WHEN random() < 0.04 THEN pg_temp.pick('{suspended,offboarded,decommissioned}') ELSE 'active' END,
           tokens_valid_after = CASE WHEN random() < 0.05 THEN now() - (random() * 20 - 10) * interval '1 minute' END
     WHERE id LIKE 'i%';
    ids := ARRAY(SELECT id FROM tokex.identity WHERE id LIKE 'i%' ORDER BY id);
    INSERT INTO tokex.resource (audience, resource_uri, scopes, token_ttl, token_format, require_dpop)
      SELECT a, CASE WHEN random() < 0.5 THEN 'https://' || a || '.example/api' END,
             pg_temp.some(scopes, 0.7), CASE WHEN random() < 0.7 THEN (1 + floor(random() * 900)) * interval '1 second'
                                             + CASE WHEN random() < 0.2 THEN interval '1 day 3 microseconds' ELSE interval '0' END END,
             pg_temp.pick('{jwt,jwt,reference,txn_token,credential}'), random() < 0.2
        FROM unnest(auds) a;
    -- a resource named by another's URI: the query's tie-break
    IF random() < 0.3 THEN
      INSERT INTO tokex.resource (audience, scopes) VALUES ('https://r1.example/api', '{a,b}');
    END IF;
    INSERT INTO tokex.delegation (principal, delegate, scopes, audiences, max_depth, valid_from, valid_until, revoked_at)
      SELECT p, d, pg_temp.some(scopes, 0.75), CASE WHEN random() < 0.3 THEN pg_temp.some(auds, 0.6) END,
             1 + floor(random() * 3)::int,
             CASE WHEN later THEN now() + interval '1 hour' ELSE now() - interval '3 hours' END,
             CASE WHEN NOT later AND random() < 0.15 THEN now() + (random() - 0.5) * interval '2 hours' END,
             CASE WHEN random() < 0.05 THEN now() END
        FROM unnest(ids) p, unnest(ids) d, generate_series(1, 2) copy, LATERAL (SELECT random() < 0.1 AS later) l
       WHERE p <> d AND random() < CASE copy WHEN 1 THEN 0.6 ELSE 0.15 END;
    INSERT INTO tokex.policy (effect, subject, subject_kind, actor, actor_kind, audience, client_id, scopes,
                              max_depth, valid, priority)
      SELECT CASE WHEN random() < 0.75 THEN 'allow' ELSE 'deny' END,
             CASE WHEN random() < 0.25 THEN pg_temp.pick(ids) END,
             CASE WHEN random() < 0.25 THEN pg_temp.pick('{human,agent,service}') END,
             CASE WHEN random() < 0.2 THEN pg_temp.pick(ids) END,
             CASE WHEN random() < 0.25 THEN pg_temp.pick('{human,agent,service}') END,
             CASE WHEN random() < 0.3 THEN pg_temp.pick(auds) END,
             CASE WHEN random() < 0.15 THEN pg_temp.pick('{c1,c2}') END,
             CASE WHEN random() < 0.5 THEN pg_temp.some(scopes, 0.6) END,
             CASE WHEN random() < 0.2 THEN floor(random() * 3)::int END,
             CASE WHEN random() < 0.2 THEN tstzrange(now() - (random() * 2 - 1) * interval '1 hour',
                                                     CASE WHEN random() < 0.5 THEN now() + interval '1 hour' END) END,
             floor(random() * 3)::int
        FROM generate_series(1, 4 + floor(random() * 8)::int);
    INSERT INTO tokex.client (client_id, grant_types, audiences, status) VALUES
      ('c1', '{urn:ietf:params:oauth:grant-type:token-exchange}', CASE WHEN random() < 0.5 THEN pg_temp.some(auds, 0.7) END, 'active'),
      ('c2', '{urn:ietf:params:oauth:grant-type:token-exchange}', NULL, CASE WHEN random() < 0.5 THEN 'disabled' ELSE 'active' END),
      ('c3', '{client_credentials}', NULL, 'active');
    INSERT INTO tokex.session (id, principal, agent, delegation_id, scopes, created_at, expires_at, revoked_at)
      SELECT gen_random_uuid(), d.principal, d.delegate, d.id, d.scopes, now() - interval '1 hour',
             now() + CASE WHEN random() < 0.2 THEN interval '-1 minute' ELSE interval '1 hour' END,
             CASE WHEN random() < 0.2 THEN now() END
        FROM tokex.delegation d WHERE random() < 0.3;
    -- tokens of ours minted under this graph's delegations, by every operation
    round_jtis := ARRAY(SELECT gen_random_uuid() FROM generate_series(1, 6));
    INSERT INTO tokex.audit_event (exchange_id, decision, error, jti, operation, actor_token_sha256, delegation_ids)
      SELECT gen_random_uuid(), d, CASE d WHEN 'denied' THEN 'invalid_grant' END, j,
             pg_temp.pick('{exchange,exchange,exchange,client_credentials,jwt_sign,session,identity_token}'),
             CASE WHEN random() < 0.15 THEN sha256(pg_temp.pick('{key-1,key-2}')::bytea) END,
             CASE WHEN random() < 0.8 THEN ARRAY(SELECT id FROM tokex.delegation ORDER BY random()
                                                  LIMIT 1 + floor(random() * 2)::int)
                  || CASE WHEN random() < 0.05 THEN ARRAY[-1::bigint] ELSE '{}' END END
        FROM unnest(round_jtis) j, LATERAL (SELECT CASE WHEN random() < 0.9 THEN 'granted' ELSE 'denied' END AS d) v;

    FOR c IN 1 .. calls LOOP
      -- a chain, mostly along delegations
      cur := pg_temp.pick(ids);
      chain_ids := ARRAY[cur];
      k := floor(random() * 4)::int;
      FOR i IN 1 .. k LOOP
        nxt := CASE WHEN random() < 0.85
                    THEN (SELECT delegate FROM tokex.delegation WHERE principal = cur AND (delegate <> ALL (chain_ids) OR random() < 0.05)
                           ORDER BY random() LIMIT 1) END;
        nxt := COALESCE(nxt, pg_temp.pick(ids));
        chain_ids := chain_ids || nxt;
        cur := nxt;
      END LOOP;
      iss := ARRAY(SELECT CASE WHEN random() < 0.02 THEN 'https://other.example'
                               WHEN i.issuer IS NOT NULL AND random() < 0.95 THEN i.issuer ELSE own END
                     FROM unnest(chain_ids) WITH ORDINALITY c(id, n) JOIN tokex.identity i USING (id) ORDER BY n);
      sub := ARRAY(SELECT CASE WHEN x.iss = own THEN i.id ELSE COALESCE(i.subject, i.id) END
                     FROM unnest(chain_ids, iss) WITH ORDINALITY x(id, iss, n) JOIN tokex.identity i USING (id) ORDER BY n);
      iat := ARRAY(SELECT CASE WHEN random() < 0.1 THEN NULL WHEN random() < 0.1 THEN '-infinity'
                               ELSE now() - random() * interval '20 minutes' END
                     FROM unnest(chain_ids));
      aud := CASE WHEN random() < 0.85 THEN pg_temp.pick(auds || '{nowhere}'::text[]) END;
      res := CASE WHEN random() < 0.2 THEN pg_temp.pick('{https://r1.example/api,https://r2.example/api,r1,r2,https://x.example}') END;
      req := CASE WHEN random() < 0.5 THEN pg_temp.some(scopes || '{e}'::text[], 0.4) END;
      tscope := CASE WHEN random() < 0.3 THEN pg_temp.some(scopes, 0.7) END;
      cl := CASE WHEN random() < 0.25 THEN pg_temp.pick('{c1,c2,c3,c4}') END;
      rk := CASE WHEN random() < 0.1 THEN ARRAY[tokex._jti_key(own, pg_temp.pick('{revoked-1,fresh}'))] END;
      sid := CASE WHEN random() < 0.1 THEN COALESCE((SELECT id FROM tokex.session ORDER BY random() LIMIT 1),
                                                  gen_random_uuid()) END;
      jtis := CASE WHEN random() < 0.15 THEN ARRAY(SELECT jti FROM pg_temp.own_rows ORDER BY random() LIMIT 1 + floor(random() * 2)::int) END;
      miss := NULL; msub := NULL;
      IF random() < 0.3 THEN
        miss := ARRAY[own, 'https://idp.example'];
        msub := ARRAY[pg_temp.pick(ids), 'ext' || (3 * (1 + floor(random() * 3)::int))];
      END IF;
      aj := CASE WHEN random() < 0.85 THEN pg_temp.pick(round_jtis::text[])::uuid
                 WHEN random() < 0.5 THEN gen_random_uuid() END;
      PERFORM pg_temp.both_active(iss, sub, iat[1], random() < 0.7, rk[1], aj,
                                  CASE WHEN random() < 0.3 THEN (SELECT id FROM tokex.session ORDER BY random() LIMIT 1) END,
                                  now() + CASE WHEN random() < 0.2 THEN interval '2 hours' ELSE interval '0' END);
      IF pg_temp.both(iss, sub, iat, aud, res, req, tscope, cl, rk, sid, jtis, miss, msub, now()) THEN
        -- near misses of a grant: each check alone on an exchange that passes the others
        FOREACH t IN ARRAY ARRAY[now() + interval '90 minutes', now() - interval '2 hours', now() - interval '4 hours',
                                 now() + interval '1 day'] LOOP
          PERFORM pg_temp.both(iss, sub, iat, aud, res, req, tscope, cl, rk, sid, jtis, miss, msub, t);
        END LOOP;
        FOR sid IN SELECT id FROM tokex.session ORDER BY random() LIMIT 6 LOOP
          PERFORM pg_temp.both(iss, sub, iat, aud, res, req, tscope, cl, rk, sid, jtis, miss, msub, now());
        END LOOP;
        FOREACH cl IN ARRAY '{c1,c2,c3,c4}'::text[] LOOP
          PERFORM pg_temp.both(iss, sub, iat, aud, res, req, tscope, cl, rk, NULL, jtis, miss, msub, now());
        END LOOP;
        FOR jtis IN SELECT ARRAY[jti] FROM pg_temp.own_rows LOOP
          PERFORM pg_temp.both(iss, sub, iat, aud, res, req, tscope, NULL, rk, NULL, jtis, miss, msub, now());
        END LOOP;
        -- one actor fewer, one more (policies bounded by depth, delegations by max_depth)
        IF cardinality(sub) > 1 THEN
          PERFORM pg_temp.both(iss[1:cardinality(iss) - 1], sub[1:cardinality(sub) - 1], iat[1:cardinality(iat) - 1],
                               aud, res, req, tscope, NULL, NULL, NULL, NULL, miss, msub, now());
        END IF;
        FOR nxt IN SELECT delegate FROM tokex.delegation WHERE principal = chain_ids[cardinality(chain_ids)]
                                                            AND delegate <> ALL (chain_ids) LIMIT 2 LOOP
          PERFORM pg_temp.both(iss || own, sub || nxt, iat || now(), aud, res, req, tscope, NULL, NULL, NULL, NULL,
                               miss, msub, now());
        END LOOP;
        FOR aud IN SELECT a FROM unnest(auds || '{https://r1.example/api}'::text[]) a LOOP
          PERFORM pg_temp.both(iss, sub, iat, aud, res, req, tscope, NULL, NULL, NULL, NULL, miss, msub, now());
        END LOOP;
      END IF;
    END LOOP;
  END LOOP;
END $$;

-- the identities (external ones: every third), revoked tokens, API keys
INSERT INTO tokex.identity (id, kind, issuer, subject)
  SELECT 'i' || g, 'human', CASE WHEN g % 3 = 0 THEN 'https://idp.example' END, CASE WHEN g % 3 = 0 THEN 'ext' || g END
    FROM generate_series(1, 8) g;
INSERT INTO tokex.revoked_token (issuer, jti) VALUES ('https://tokex.test', 'revoked-1'), ('https://idp.example', 'revoked-2');
INSERT INTO tokex.api_key (identity, key_sha256, hint, revoked_at)
  VALUES ('i1', sha256('key-1'), 'k1', now()), ('i2', sha256('key-2'), 'k2', NULL);
-- tokex's own tokens: granted rows, a denied one, one obtained with a revoked API key
CREATE TABLE pg_temp.own_rows (jti uuid);
INSERT INTO tokex.audit_event (exchange_id, decision, error, jti, actor_token_sha256)
  VALUES (gen_random_uuid(), 'granted', NULL, gen_random_uuid(), NULL),
         (gen_random_uuid(), 'granted', NULL, gen_random_uuid(), sha256('key-2')),
         (gen_random_uuid(), 'granted', NULL, gen_random_uuid(), sha256('key-1')),
         (gen_random_uuid(), 'denied', 'invalid_grant', gen_random_uuid(), NULL);
INSERT INTO pg_temp.own_rows SELECT jti FROM tokex.audit_event;
INSERT INTO pg_temp.own_rows VALUES (gen_random_uuid());

SELECT pg_temp.run(0.42, 40, 150);

CREATE VIEW pg_temp.verdicts AS
  SELECT n, args, slow, fast,
         (slow->>'identity_error') IS NULL AND (slow->>'error') IS NULL AS slow_grants,
         fast IS NOT NULL AS fast_grants
    FROM pg_temp.cases;

SELECT cmp_ok((SELECT count(*) FROM pg_temp.cases), '>', 6000::bigint, '6000 random decisions on 40 random graphs, and near misses of each grant');
SELECT cmp_ok((SELECT count(*) FROM pg_temp.verdicts WHERE slow_grants), '>=', 150::bigint,
              'the query grants hundreds of them');
SELECT cmp_ok((SELECT count(*) FROM pg_temp.verdicts WHERE NOT slow_grants), '>=', 1000::bigint,
              '... and refuses thousands');
SELECT cmp_ok((SELECT count(DISTINCT slow->>'reason') FROM pg_temp.verdicts WHERE NOT slow_grants
                  AND slow->>'reason' IS NOT NULL), '>=', 10::bigint,
              '... for many different reasons');
SELECT cmp_ok((SELECT count(*) FROM pg_temp.verdicts WHERE slow_grants AND jsonb_array_length(slow->'chain') >= 3),
              '>=', 12::bigint, '... chains of two actors and more among the grants');

SELECT is((SELECT count(*) FROM pg_temp.verdicts WHERE fast_grants AND NOT slow_grants), 0::bigint,
          'the fast path grants nothing the query refuses');
SELECT is((SELECT count(*) FROM pg_temp.verdicts WHERE slow_grants AND NOT fast_grants), 0::bigint,
          'the fast path grants everything the query grants');
SELECT is((SELECT count(*) FROM pg_temp.verdicts WHERE fast_grants AND slow IS DISTINCT FROM fast), 0::bigint,
          'a grant carries the same chain, delegations, policies, target, scopes, ttl, may_act ids and format');

SELECT cmp_ok((SELECT count(*) FROM pg_temp.active_cases WHERE slow), '>=', 500::bigint,
              'introspection: the query finds hundreds of tokens live');
SELECT cmp_ok((SELECT count(*) FROM pg_temp.active_cases WHERE NOT slow), '>=', 500::bigint,
              '... and hundreds not');
SELECT is((SELECT count(*) FROM pg_temp.active_cases WHERE fast AND NOT slow), 0::bigint,
          'its fast path finds live no token the query finds dead');
SELECT is((SELECT count(*) FROM pg_temp.active_cases WHERE slow AND NOT fast), 0::bigint,
          'its fast path finds live every token the query finds live');
SELECT diag(n || ': ' || args::text || ' query: ' || slow || ' fast: ' || fast)
  FROM pg_temp.active_cases WHERE slow <> fast ORDER BY n LIMIT 5;

-- what differed, to reproduce it
SELECT diag(n || ': ' || args::text || E'\n  query: ' || slow::text || E'\n  fast:  ' || COALESCE(fast::text, 'none'))
  FROM pg_temp.verdicts WHERE fast_grants <> slow_grants OR (fast_grants AND slow IS DISTINCT FROM fast)
 ORDER BY n LIMIT 5;

-- Found by an outside review: the cases the random graphs do not make.
DELETE FROM tokex.session; DELETE FROM tokex.policy; DELETE FROM tokex.delegation; DELETE FROM tokex.client;
DELETE FROM tokex.resource;
UPDATE tokex.identity SET status = 'active', tokens_valid_after = NULL, kind = 'human' WHERE id = 'i1';
UPDATE tokex.identity SET status = 'active', tokens_valid_after = NULL, kind = 'agent' WHERE id = 'i2';
INSERT INTO tokex.resource (audience, scopes) VALUES ('cal', '{a,b}');
INSERT INTO tokex.delegation (principal, delegate, scopes) VALUES ('i1', 'i2', '{a,b}');
INSERT INTO tokex.policy (effect, subject_kind, actor_kind) VALUES ('allow', 'human', 'agent');
INSERT INTO tokex.policy (effect, subject) VALUES ('deny', 'i1');
SELECT tokex.create_key() IS NOT NULL AS key \gset
SET tokex.issuer = 'https://tokex.test';
CREATE FUNCTION pg_temp.ask() RETURNS TABLE (slow text, fast boolean) LANGUAGE sql AS $$
  SELECT (SELECT coalesce(error, 'granted') FROM tokex._decide('{https://tokex.test,https://tokex.test}', '{i1,i2}',
            ARRAY[now(), now()], 'cal', NULL, NULL, NULL, NULL, 'https://tokex.test', NULL, NULL, NULL, NULL, NULL, now())),
         EXISTS (SELECT 1 FROM tokex._decide_fast('{https://tokex.test,https://tokex.test}', '{i1,i2}',
            ARRAY[now(), now()], 'cal', NULL, NULL, NULL, NULL, 'https://tokex.test', NULL, NULL, NULL, NULL, NULL, now()))
$$;
SELECT is(pg_temp.ask(), ROW('invalid_grant'::text, false)::record, 'a deny policy naming the subject: refused by both');

-- an index rebuilt with another predicate would hide the deny row: the fast path must not use it
DROP INDEX tokex.policy_by_subject;
CREATE INDEX policy_by_subject ON tokex.policy (subject) WHERE effect = 'allow';
SELECT is(pg_temp.ask(), ROW('invalid_grant'::text, false)::record, '... with its index rebuilt over allow rows only');
DROP INDEX tokex.policy_by_subject;
SELECT is(pg_temp.ask(), ROW('invalid_grant'::text, false)::record, '... with its index dropped (the query decides, no error)');
CREATE INDEX policy_by_subject ON tokex.policy (subject);
SELECT is(pg_temp.ask(), ROW('invalid_grant'::text, false)::record, '... with it made again');
DELETE FROM tokex.policy WHERE effect = 'deny';
SELECT is(pg_temp.ask(), ROW('granted'::text, true)::record, '... and granted by both once the deny row is gone');

-- a change made earlier in the same statement (here: the delegation revoked in a CTE) is seen
SELECT tokex.jwt_sign('{"sub": "i1", "exp": 9999999999}') AS st, tokex.jwt_sign('{"sub": "i2", "exp": 9999999999}') AS at \gset
SELECT ok(tokex.exchange(:'st', 'urn:ietf:params:oauth:token-type:jwt', :'at', 'urn:ietf:params:oauth:token-type:jwt',
                         audience => 'cal') ? 'access_token', 'granted while the delegation stands (warm caches)');
WITH r AS (UPDATE tokex.delegation SET revoked_at = now() WHERE principal = 'i1' RETURNING id)
SELECT is(tokex.exchange(:'st', 'urn:ietf:params:oauth:token-type:jwt', :'at',
                         'urn:ietf:params:oauth:token-type:jwt', audience => 'cal')->>'error',
          'invalid_grant', 'an exchange after its delegation was revoked earlier in the same statement is refused')
  FROM r;

-- grant_types holding a NULL and not token exchange is no permission (the query, too)
INSERT INTO tokex.client (client_id, grant_types) VALUES ('cc-only', '{client_credentials,NULL}');
SELECT is((SELECT error FROM tokex._decide('{https://tokex.test,https://tokex.test}', '{i1,i2}', ARRAY[now(), now()],
             'cal', NULL, NULL, NULL, 'cc-only', 'https://tokex.test', NULL, NULL, NULL, NULL, NULL, now())),
          'unauthorized_client', 'a client whose grant_types hold a NULL may not exchange');

-- audit_event by partition: the fast path reads a token's row in the
-- partition that holds the clock, an older one, the DEFAULT partition, or
-- one made ahead (a row written with an `at` ahead of the clock), as the
-- query does; a jti with no row anywhere is the query's to refuse.
UPDATE tokex.delegation SET revoked_at = NULL WHERE principal = 'i1';
CREATE TEMP TABLE t0 AS SELECT clock_timestamp() AS t;
-- (made as the sealer makes them: NOWAIT, so a sealer or writer of this
-- database holding the DEFAULT partition that moment means another try)
DO $$
BEGIN
  FOR i IN 1..100 LOOP
    BEGIN
      PERFORM tokex._audit_partition_create('audit_event', lo, hi)
         FROM t0, LATERAL (VALUES (t, t + interval '1 day'), (t - interval '60 days', t - interval '30 days'),
                                  (t + interval '5 days', t + interval '30 days')) v(lo, hi);
      RETURN;
    EXCEPTION WHEN lock_not_available THEN
      PERFORM pg_sleep(0.1);
    END;
  END LOOP;
  RAISE EXCEPTION 'the audit partitions stayed locked for 10 s';
END
$$;
CREATE TEMP TABLE part_rows AS
  SELECT gen_random_uuid() AS jti, w FROM unnest('{current,older,default,ahead}'::text[]) w
  UNION ALL SELECT gen_random_uuid(), 'none';
INSERT INTO tokex.audit_event (exchange_id, at, decision, jti, operation)
  SELECT gen_random_uuid(), CASE w WHEN 'current' THEN clock_timestamp() WHEN 'older' THEN t - interval '45 days'
                                   WHEN 'default' THEN t - interval '10 days' ELSE t + interval '10 days' END,
         'granted', jti, 'exchange'
    FROM part_rows, t0 WHERE w <> 'none';
SELECT is((SELECT string_agg(w || ':' || coalesce(s.identity_error, s.error, 'granted') || '/' || f.n, ' ' ORDER BY w)
             FROM part_rows,
                  LATERAL (SELECT identity_error, error FROM tokex._decide('{https://tokex.test,https://tokex.test}',
                             '{i1,i2}', ARRAY[now(), now()], 'cal', NULL, NULL, NULL, NULL, 'https://tokex.test', NULL,
                             NULL, ARRAY[jti], NULL, NULL, now())) s,
                  LATERAL (SELECT count(*) AS n FROM tokex._decide_fast('{https://tokex.test,https://tokex.test}', '{i1,i2}',
                             ARRAY[now(), now()], 'cal', NULL, NULL, NULL, NULL, 'https://tokex.test', NULL, NULL,
                             ARRAY[jti], NULL, NULL, now())) f),
          'ahead:granted/1 current:granted/1 default:granted/1 none:a presented token has no audit row/0 older:granted/1',
          'a token of ours: its row found in the partition of the clock, an older one, the DEFAULT one and one ahead, by both');
SELECT is((SELECT string_agg(w || ':' || coalesce(tokex._token_active_fast('{https://tokex.test}', '{i1}', now(),
                                'https://tokex.test', true, NULL, jti, NULL, now())::text, 'null'), ' ' ORDER BY w)
             FROM part_rows),
          'ahead:true current:true default:true none:false older:true',
          '... and by the introspection''s fast path');

SELECT * FROM finish();
ROLLBACK;
