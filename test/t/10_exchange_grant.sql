-- A granted exchange: the RFC 8693 §2.2.1 response, the RFC 9068 access token
-- it carries, TTL bounds, audience/resource resolution, client_id, and the
-- one audit row that matches the token.
\ir preamble.psql
SELECT plan(69);

SELECT tokex.create_key() AS kid \gset
INSERT INTO tokex.identity (id, kind) VALUES
  ('alice', 'human'), ('agent-a', 'agent'), ('svc', 'service');
INSERT INTO tokex.resource (audience, resource_uri, scopes, token_ttl) VALUES
  ('calendar', 'https://calendar.test/', '{calendar.read,calendar.write}', '2 minutes'),
  ('mail',     'https://mail.test/',     '{mail.read}',                    NULL),
  ('archive',  'https://archive.test/',  '{archive.read}',                 '2 hours');
INSERT INTO tokex.delegation (principal, delegate, scopes, max_depth) VALUES
  ('alice', 'agent-a', '{calendar.read,calendar.write,mail.read,archive.read}', 2);
SELECT currval('tokex.delegation_id_seq') AS d_alice_a \gset
INSERT INTO tokex.policy (effect, subject_kind, actor_kind, description) VALUES
  ('allow', 'human', 'agent', 'people may delegate to agents');
SELECT currval('tokex.policy_id_seq') AS p_allow \gset
INSERT INTO tokex.policy (effect, subject, description) VALUES
  ('allow', 'svc', 'svc exchanges its own token, no actor');
SELECT currval('tokex.policy_id_seq') AS p_svc \gset
INSERT INTO tokex.client (client_id, description) VALUES ('app-1', 'the application tier');
INSERT INTO tokex.client (client_id, status) VALUES ('app-off', 'disabled');

-- a token signed by tokex for sub, valid for ttl seconds, plus extra claims
CREATE FUNCTION pg_temp.tok(sub text, extra jsonb DEFAULT '{}', ttl int DEFAULT 7200) RETURNS text
LANGUAGE sql AS $$
  SELECT tokex.jwt_sign(jsonb_build_object('sub', sub, 'iat', floor(extract(epoch FROM now()))::bigint,
                                           'exp', floor(extract(epoch FROM now()))::bigint + ttl) || extra)
$$;
CREATE FUNCTION pg_temp.claims(tok text) RETURNS jsonb LANGUAGE sql AS $$
  SELECT tokex.jwt_decode(tok)->'payload'
$$;
CREATE FUNCTION pg_temp.header(tok text) RETURNS jsonb LANGUAGE sql AS $$
  SELECT tokex.jwt_decode(tok)->'header'
$$;
CREATE FUNCTION pg_temp.x(st text, at text, aud text DEFAULT NULL, res text DEFAULT NULL,
                          scope text DEFAULT NULL, rtt text DEFAULT NULL, cid text DEFAULT NULL)
RETURNS jsonb LANGUAGE sql AS $$
  SELECT tokex.exchange(st, 'urn:ietf:params:oauth:token-type:jwt',
                        at, CASE WHEN at IS NOT NULL THEN 'urn:ietf:params:oauth:token-type:jwt' END,
                        audience => aud, resource => res, scope => scope,
                        requested_token_type => rtt, client_id => cid)
$$;

SELECT pg_temp.tok('alice', '{"may_act": {"sub": "agent-a"}}') AS st,
       pg_temp.tok('agent-a') AS at \gset

------------------------------------------------------------------------
-- The response (RFC 8693 §2.2.1)
------------------------------------------------------------------------
SELECT count(*) AS audit0 FROM tokex.audit_event \gset
SELECT pg_temp.x(:'st', :'at', 'calendar', scope => 'calendar.read') AS r \gset
SELECT (:'r'::jsonb)->>'access_token' AS t \gset
SELECT pg_temp.claims(:'t') AS c, pg_temp.header(:'t') AS h \gset

SELECT is((SELECT array_agg(k ORDER BY k) FROM jsonb_object_keys(:'r'::jsonb) k),
          '{access_token,expires_in,issued_token_type,scope,token_type}'::text[],
          'granted: the response has exactly access_token, issued_token_type, token_type, expires_in, scope');
SELECT is((:'r'::jsonb)->>'token_type', 'Bearer', 'token_type is Bearer');
SELECT is((:'r'::jsonb)->>'issued_token_type', 'urn:ietf:params:oauth:token-type:access_token',
          'issued_token_type defaults to access_token');
SELECT is((:'r'::jsonb)->'expires_in', '120'::jsonb, 'expires_in is the resource''s token_ttl (2 minutes), a number');
SELECT is((:'r'::jsonb)->>'scope', 'calendar.read', 'scope is the granted scope');

------------------------------------------------------------------------
-- The minted token (RFC 9068)
------------------------------------------------------------------------
SELECT lives_ok(format('SELECT tokex.jwt_verify(%L, %L)', :'t', 'calendar'),
                'the access token verifies against tokex''s keys for audience calendar');
SELECT throws_ok(format('SELECT tokex.jwt_verify(%L, %L)', :'t', 'mail'), '28000', 'invalid token',
                 '... and not for another audience');
SELECT is(tokex.jwt_verify(:'t', 'calendar'), :'c'::jsonb, 'jwt_verify returns the decoded claims');
SELECT is((:'h'::jsonb)->>'typ', 'at+jwt', 'header typ is at+jwt (RFC 9068)');
-- jti: a UUID version 7 (RFC 9562), its first 48 bits the time of issue in ms (the audit
-- row's key: ordered by time, recent rows share the indexes' hot pages)
SELECT ok(((:'c'::jsonb)->>'jti') ~ '^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$'
          AND abs(('x' || lpad(replace(left((:'c'::jsonb)->>'jti', 13), '-', ''), 16, '0'))::bit(64)::bigint / 1000.0
                  - ((:'c'::jsonb)->>'iat')::numeric) < 1.5,
          'jti is a UUID v7 whose time is the token''s iat');
SELECT is((:'h'::jsonb)->>'kid', :'kid', 'header kid is the active key''s kid');
SELECT is((:'h'::jsonb)->>'alg', 'ES256', 'header alg is the key''s algorithm');
SELECT is((:'h'::jsonb)->>'kid',
          (SELECT translate(replace(encode(sha256(convert_to(format('{"crv":"%s","kty":"%s","x":"%s","y":"%s"}',
                                                                   k->>'crv', k->>'kty', k->>'x', k->>'y'), 'UTF8')),
                                           'base64'), E'\n', ''), '+/=', '-_')
             FROM jsonb_array_elements(tokex.jwks()->'keys') k WHERE k->>'kid' = :'kid'),
          'header kid is the RFC 7638 thumbprint of the published public key');
SELECT is((:'c'::jsonb)->>'iss', 'https://tokex.test', 'iss is tokex.issuer');
SELECT is((:'c'::jsonb)->>'sub', 'alice', 'sub is the person');
SELECT is((:'c'::jsonb)->'act', '{"sub": "agent-a"}'::jsonb, 'act names the agent, and only its sub');
SELECT is((:'c'::jsonb)->'aud', '"calendar"'::jsonb, 'aud is exactly the one audience, a string');
SELECT is((:'c'::jsonb)->>'scope', 'calendar.read', 'scope claim = the granted scope');
SELECT ok((:'c'::jsonb) ? 'client_id' AND jsonb_typeof((:'c'::jsonb)->'client_id') = 'string',
          'client_id claim is present (RFC 9068 requires it)');
SELECT ok((:'c'::jsonb)->>'jti' ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$',
          'jti is a uuid');
SELECT ok(((:'c'::jsonb)->>'iat')::bigint BETWEEN floor(extract(epoch FROM now()))::bigint - 1
                                              AND ceil(extract(epoch FROM clock_timestamp()))::bigint + 1,
          'iat is now');
SELECT is((:'c'::jsonb)->'nbf', (:'c'::jsonb)->'iat', 'nbf = iat');
SELECT is(((:'c'::jsonb)->>'exp')::bigint - ((:'c'::jsonb)->>'iat')::bigint, 120::bigint, 'exp = iat + 120');
SELECT ok(NOT (:'c'::jsonb) ?| '{may_act,sid}', 'no may_act or sid in an access token from a non-session subject');

------------------------------------------------------------------------
-- The audit row
------------------------------------------------------------------------
SELECT is((SELECT count(*) FROM tokex.audit_event) - :audit0, 1::bigint, 'exactly one audit row for the exchange');
SELECT is((SELECT count(*) FROM tokex.audit WHERE exchange_id::text = (:'c'::jsonb)->>'jti'), 1::bigint,
          'jti = the audit row''s exchange_id');
SELECT results_eq(
  format($q$SELECT decision, error, subject, actor, actor_chain, audience, requested_scope, scope,
                   jti::text, expires_at, delegation_ids, policy_ids, issued_token_type
              FROM tokex.audit WHERE exchange_id::text = %L$q$, (:'c'::jsonb)->>'jti'),
  format($q$VALUES ('granted'::text, NULL::text, 'alice'::text, 'agent-a'::text, '{agent-a}'::text[],
                    'calendar'::text, '{calendar.read}'::text[], '{calendar.read}'::text[], %L::text,
                    to_timestamp(%s), '{%s}'::bigint[], '{%s}'::bigint[],
                    'urn:ietf:params:oauth:token-type:access_token'::text)$q$,
         (:'c'::jsonb)->>'jti', (:'c'::jsonb)->>'exp', :d_alice_a, :p_allow),
  'the audit row: granted, who, on whose behalf, scopes, jti, expires_at = exp, delegation and policy ids');
SELECT is((SELECT reason FROM tokex.audit WHERE jti::text = (:'c'::jsonb)->>'jti'), NULL,
          'a granted row has no reason');

------------------------------------------------------------------------
-- Scope
------------------------------------------------------------------------
SELECT is(pg_temp.x(:'st', :'at', 'calendar')->>'scope', 'calendar.read calendar.write',
          'no scope requested: everything the delegation and resource allow');
SELECT is(pg_temp.x(:'st', :'at', 'calendar', scope => 'calendar.write  calendar.read calendar.write')->>'scope',
          'calendar.read calendar.write', 'a requested scope list is deduplicated and sorted');
SELECT is(pg_temp.claims(pg_temp.x(:'st', :'at', 'calendar', scope => 'calendar.write')->>'access_token')->>'scope',
          'calendar.write', 'the token carries only the requested scope');
SELECT is(pg_temp.x(:'st', :'at', 'mail')->>'scope', 'mail.read',
          'scopes are bounded by the resource: mail gets only mail.read');

------------------------------------------------------------------------
-- TTL: resource, default, tokex.max_ttl, the presented tokens' exp
------------------------------------------------------------------------
SELECT pg_temp.x(:'st', :'at', 'mail') AS rm \gset
SELECT is((:'rm'::jsonb)->'expires_in', '300'::jsonb, 'token_ttl NULL: expires_in is the default 300 s');
SELECT is((pg_temp.claims((:'rm'::jsonb)->>'access_token')->>'exp')::bigint
            - (pg_temp.claims((:'rm'::jsonb)->>'access_token')->>'iat')::bigint, 300::bigint,
          'token_ttl NULL: exp = iat + 300');
SET LOCAL tokex.default_ttl = 45;
SELECT is(pg_temp.x(:'st', :'at', 'mail')->'expires_in', '45'::jsonb, 'token_ttl NULL follows tokex.default_ttl');
RESET tokex.default_ttl;
SELECT is(pg_temp.x(:'st', :'at', 'archive')->'expires_in', '3600'::jsonb,
          'a 2-hour resource TTL is capped by tokex.max_ttl (default 3600 s)');
SET LOCAL tokex.max_ttl = 60;
SELECT pg_temp.x(:'st', :'at', 'calendar') AS rcap \gset
SELECT is((:'rcap'::jsonb)->'expires_in', '60'::jsonb, 'tokex.max_ttl = 60 caps a 120 s resource TTL');
SELECT is((pg_temp.claims((:'rcap'::jsonb)->>'access_token')->>'exp')::bigint
            - (pg_temp.claims((:'rcap'::jsonb)->>'access_token')->>'iat')::bigint, 60::bigint,
          '... and the token''s exp with it');
RESET tokex.max_ttl;

SELECT pg_temp.tok('alice', '{"may_act": {"sub": "agent-a"}}', 90) AS st_short \gset
SELECT pg_temp.x(:'st_short', :'at', 'calendar') AS rs \gset
SELECT is((pg_temp.claims((:'rs'::jsonb)->>'access_token')->>'exp')::bigint,
          (pg_temp.claims(:'st_short')->>'exp')::bigint,
          'a subject token expiring in 90 s caps the minted token''s exp at its own');
SELECT is(((:'rs'::jsonb)->>'expires_in')::bigint,
          (pg_temp.claims((:'rs'::jsonb)->>'access_token')->>'exp')::bigint
            - (pg_temp.claims((:'rs'::jsonb)->>'access_token')->>'iat')::bigint,
          '... and expires_in = exp - iat');
SELECT ok(((:'rs'::jsonb)->>'expires_in')::int BETWEEN 80 AND 90, '... which is at most 90 s');
SELECT is((pg_temp.claims(pg_temp.x(:'st', pg_temp.tok('agent-a', '{}', 50), 'calendar')->>'access_token')->>'exp')::bigint,
          floor(extract(epoch FROM now()))::bigint + 50,
          'an actor token expiring in 50 s caps the minted token too');

------------------------------------------------------------------------
-- requested_token_type
------------------------------------------------------------------------
SELECT pg_temp.x(:'st', :'at', 'calendar', rtt => 'urn:ietf:params:oauth:token-type:jwt') AS rj \gset
SELECT is((:'rj'::jsonb)->>'issued_token_type', 'urn:ietf:params:oauth:token-type:jwt',
          'requested_token_type jwt: issued_token_type jwt');
SELECT is((:'rj'::jsonb)->>'token_type', 'Bearer', '... still a Bearer token');
SELECT lives_ok(format('SELECT tokex.jwt_verify(%L, %L)', (:'rj'::jsonb)->>'access_token', 'calendar'),
                '... that verifies');
SELECT is((SELECT issued_token_type FROM tokex.audit
            WHERE jti::text = pg_temp.claims((:'rj'::jsonb)->>'access_token')->>'jti'),
          'urn:ietf:params:oauth:token-type:jwt', '... and the audit row records issued_token_type jwt');
SELECT is(pg_temp.x(:'st', :'at', 'calendar', rtt => 'urn:ietf:params:oauth:token-type:access_token')->>'issued_token_type',
          'urn:ietf:params:oauth:token-type:access_token', 'requested_token_type access_token: issued access_token');

------------------------------------------------------------------------
-- audience / resource
------------------------------------------------------------------------
SELECT pg_temp.x(:'st', :'at', res => 'https://calendar.test/') AS rr \gset
SELECT ok((:'rr'::jsonb) ? 'access_token', 'resource alone (no audience) is granted');
SELECT is(pg_temp.claims((:'rr'::jsonb)->>'access_token')->'aud', '"calendar"'::jsonb,
          'resource alone resolves to the audience whose resource_uri it is');
SELECT is((SELECT audience FROM tokex.audit
            WHERE jti::text = pg_temp.claims((:'rr'::jsonb)->>'access_token')->>'jti'),
          'calendar', '... and the audit row records that audience');
SELECT is((:'rr'::jsonb)->'expires_in', '120'::jsonb, '... with that resource''s TTL');
SELECT pg_temp.x(:'st', :'at', 'calendar', 'https://calendar.test/') AS rar \gset
SELECT ok((:'rar'::jsonb) ? 'access_token', 'audience and resource naming the same target: granted');
SELECT is(pg_temp.claims((:'rar'::jsonb)->>'access_token')->'aud', '"calendar"'::jsonb, '... aud is that one target');
SELECT is(pg_temp.claims(pg_temp.x(:'st', :'at', 'mail')->>'access_token')->'aud', '"mail"'::jsonb,
          'another audience: aud = mail');

------------------------------------------------------------------------
-- client_id
------------------------------------------------------------------------
SELECT count(*) AS audit1 FROM tokex.audit_event \gset
SELECT pg_temp.x(:'st', :'at', 'calendar', cid => 'app-1') AS rc \gset
SELECT is(pg_temp.claims((:'rc'::jsonb)->>'access_token')->>'client_id', 'app-1',
          'client_id parameter: the token''s client_id claim');
SELECT is((SELECT client_id FROM tokex.audit
            WHERE jti::text = pg_temp.claims((:'rc'::jsonb)->>'access_token')->>'jti'),
          'app-1', 'client_id parameter: recorded in the audit row');
SELECT pg_temp.x(:'st', :'at', 'calendar', cid => 'no-such-app') AS ru \gset
SELECT is((:'ru'::jsonb)->>'error', 'unauthorized_client', 'an unregistered client_id: unauthorized_client');
SELECT ok(NOT (:'ru'::jsonb) ? 'access_token', '... and no token');
SELECT is(pg_temp.x(:'st', :'at', 'calendar', cid => 'app-off')->>'error', 'unauthorized_client',
          'a disabled client: unauthorized_client');
SELECT results_eq(
  format($q$SELECT decision, error, client_id FROM tokex.audit
             WHERE exchange_id NOT IN (SELECT exchange_id FROM tokex.audit ORDER BY at LIMIT %s)
             ORDER BY at$q$, :audit1),
  $$VALUES ('granted'::text, NULL::text, 'app-1'::text),
           ('denied', 'unauthorized_client', 'no-such-app'),
           ('denied', 'unauthorized_client', 'app-off')$$,
  'one audit row per client_id call, denials with unauthorized_client and the client named');

------------------------------------------------------------------------
-- No actor: a service exchanges its own token for a downstream audience
------------------------------------------------------------------------
SELECT pg_temp.x(pg_temp.tok('svc'), NULL, 'mail') AS rsvc \gset
SELECT is((:'rsvc'::jsonb)->>'scope', 'mail.read', 'no actor_token: a service''s own exchange is granted');
SELECT is(pg_temp.claims((:'rsvc'::jsonb)->>'access_token')->>'sub', 'svc', '... sub is the service');
SELECT ok(NOT pg_temp.claims((:'rsvc'::jsonb)->>'access_token') ? 'act', '... and there is no act claim');
SELECT results_eq(
  format($q$SELECT subject, actor, actor_chain, delegation_ids, policy_ids FROM tokex.audit WHERE jti::text = %L$q$,
         pg_temp.claims((:'rsvc'::jsonb)->>'access_token')->>'jti'),
  format($q$VALUES ('svc'::text, NULL::text, NULL::text[], '{}'::bigint[], '{%s}'::bigint[])$q$, :p_svc),
  '... audit: no actor, no delegation, the policy that allowed it');

------------------------------------------------------------------------
-- Every token is distinct; every granted row matches its token
------------------------------------------------------------------------
SELECT isnt(pg_temp.claims(pg_temp.x(:'st', :'at', 'calendar')->>'access_token')->>'jti',
            pg_temp.claims(pg_temp.x(:'st', :'at', 'calendar')->>'access_token')->>'jti',
            'two exchanges of the same tokens get different jtis');
SELECT is((SELECT count(*) FROM tokex.audit WHERE operation = 'exchange' AND decision = 'granted' AND (jti IS NULL OR jti <> exchange_id
                                                                            OR expires_at IS NULL OR scope IS NULL)),
          0::bigint, 'every granted audit row has jti = exchange_id, expires_at and scope');
SELECT is((SELECT count(*) FROM tokex.audit WHERE decision = 'granted' AND delegation_ids = '{}' AND subject <> 'svc'),
          0::bigint, 'every granted delegated exchange names its delegation');
SELECT is((SELECT count(*) FROM tokex.audit WHERE decision = 'granted' AND cardinality(policy_ids) = 0),
          0::bigint, 'every granted exchange names the policies that applied');

-- the random bytes of ids are drawn for 64 ids at a time: 150 exchanges in one
-- session cross two refills, and every id (and its random part) is new
SELECT is((SELECT count(DISTINCT j) || ' ' || count(DISTINCT right(j, 17)) || ' ' ||
                  count(*) FILTER (WHERE j ~ '^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$')
             FROM (SELECT pg_temp.claims(pg_temp.x(:'st', :'at', 'calendar')->>'access_token')->>'jti' AS j
                     FROM generate_series(1, 150)) s),
          '150 150 150', '150 exchanges in one session: 150 distinct v7 jtis, their random parts distinct too');

SELECT * FROM finish();
ROLLBACK;
