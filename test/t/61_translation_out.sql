-- Translation (outbound): what a downstream receives, by the resource's
-- token_format: a reference token (tkx_at_, introspected, dead at every kind
-- of revocation) and a transaction token (txntoken+jwt).
\ir preamble.psql
SELECT plan(42);

SELECT tokex.create_key() AS kid \gset
INSERT INTO tokex.identity (id, kind) VALUES ('alice', 'human'), ('agent-a', 'agent'), ('agent-b', 'agent');
INSERT INTO tokex.resource (audience, scopes, token_format) VALUES
  ('mcp-server', '{tools.call,tools.list}', 'reference'),
  ('orders',     '{orders.read}',           'txn_token'),
  ('calendar',   '{calendar.read}',         'jwt'),
  ('other-mcp',  '{tools.call}',            'reference'),
  ('orders-eu',  '{orders.read}',           'jwt');
INSERT INTO tokex.delegation (principal, delegate, scopes) VALUES
  ('alice', 'agent-a', '{tools.call,tools.list,orders.read,calendar.read}'),
  ('agent-a', 'agent-b', '{tools.call,tools.list,orders.read,calendar.read}');
SELECT currval('tokex.delegation_id_seq') AS d_ab \gset
INSERT INTO tokex.policy (effect) VALUES ('allow');
INSERT INTO tokex.client (client_id) VALUES ('app-1');

CREATE FUNCTION pg_temp.tok(sub text, extra jsonb DEFAULT '{}') RETURNS text LANGUAGE sql AS $$
  SELECT tokex.jwt_sign(jsonb_build_object('sub', sub, 'iat', floor(extract(epoch FROM now()))::bigint,
                                           'exp', floor(extract(epoch FROM now()))::bigint + 3600) || extra)
$$;
CREATE FUNCTION pg_temp.x(st text, at text, aud text, rtt text DEFAULT NULL, stt text DEFAULT NULL,
                          details jsonb DEFAULT NULL, context jsonb DEFAULT NULL) RETURNS jsonb
LANGUAGE sql AS $$
  SELECT tokex.exchange(st, COALESCE(stt, 'urn:ietf:params:oauth:token-type:jwt'),
                        at, CASE WHEN at IS NOT NULL THEN 'urn:ietf:params:oauth:token-type:jwt' END,
                        audience => aud, requested_token_type => rtt, client_id => 'app-1',
                        request_details => details, request_context => context)
$$;
CREATE FUNCTION pg_temp.active(t text) RETURNS boolean LANGUAGE sql AS $$
  SELECT (tokex.introspect(t)->>'active')::boolean
$$;

SELECT pg_temp.tok('alice') AS st, pg_temp.tok('agent-a') AS at_a, pg_temp.tok('agent-b') AS at_b \gset

------------------------------------------------------------------------
-- Reference tokens
------------------------------------------------------------------------
SELECT pg_temp.x(:'st', :'at_a', 'mcp-server') AS r \gset
SELECT (:'r'::jsonb)->>'access_token' AS ref \gset
SELECT ok(:'ref' ~ '^tkx_at_[0-9A-Za-z]{49}$', 'a reference resource gets an opaque tkx_at_ token');
SELECT is(format('%s|%s', (:'r'::jsonb)->>'token_type', (:'r'::jsonb)->>'issued_token_type'),
          'Bearer|urn:ietf:params:oauth:token-type:access_token', '... a Bearer access token');
SELECT is((SELECT count(*) FROM tokex.audit_event WHERE issued_token_sha256 = sha256(convert_to(:'ref', 'UTF8'))),
          1::bigint, 'its audit row keeps its SHA-256');
SELECT is((SELECT count(*) FROM tokex.audit_event a WHERE row_to_json(a)::text LIKE '%' || substr(:'ref', 8) || '%'),
          0::bigint, '... and nothing keeps the token itself');
SELECT tokex.introspect(:'ref') AS i \gset
SELECT is(format('%s|%s|%s|%s|%s|%s', (:'i'::jsonb)->>'active', (:'i'::jsonb)->>'sub', (:'i'::jsonb)->>'aud',
                 (:'i'::jsonb)->>'scope', (:'i'::jsonb)->>'client_id', (:'i'::jsonb)->>'iss'),
          'true|alice|mcp-server|tools.call tools.list|app-1|https://tokex.test',
          'introspection answers for it as for a JWT: sub, aud, scope, client_id, iss');
SELECT is((:'i'::jsonb)->'act', '{"sub": "agent-a"}'::jsonb, '... including act');
SELECT is((:'i'::jsonb)->>'jti', (SELECT jti::text FROM tokex.audit_event
                                   WHERE issued_token_sha256 = sha256(convert_to(:'ref', 'UTF8'))),
          '... and jti, the audit row''s');
SELECT ok(((:'i'::jsonb)->>'exp')::bigint - ((:'i'::jsonb)->>'iat')::bigint BETWEEN 299 AND 300, '... and iat, exp');
SELECT is(tokex.introspect(overlay(:'ref' placing 'Z' from 20 for 1)), '{"active": false}'::jsonb,
          'a token with one character changed is inactive (checksum)');
SELECT is(tokex.introspect(tokex._opaque_new('at')), '{"active": false}'::jsonb, 'a well-formed unknown token is inactive');
SELECT is(pg_temp.x(:'st', :'at_a', 'mcp-server', 'urn:ietf:params:oauth:token-type:jwt')->>'error_description',
          'resource "mcp-server" takes reference tokens, not urn:ietf:params:oauth:token-type:jwt',
          'a JWT cannot be asked for a reference resource');
SELECT ok(tokex.record_use(:'ref', 'tools/call search', '200') > 0, 'record_use takes a reference token');
SELECT is((SELECT on_behalf_of || ' ' || action FROM tokex.audit_trail ORDER BY used_at DESC LIMIT 1),
          'alice tools/call search', '... and the use joins its exchange');

-- the MCP server narrows what it received: same audience, no new actor
SELECT pg_temp.x(:'ref', NULL, 'mcp-server', stt => 'urn:ietf:params:oauth:token-type:access_token') AS r2 \gset
SELECT is((:'r2'::jsonb)->>'error', NULL, 'a reference token can be re-exchanged for its own audience');
SELECT is(tokex.introspect((:'r2'::jsonb)->>'access_token')->'act', '{"sub": "agent-a"}'::jsonb,
          '... keeping the chain');
SELECT is(pg_temp.x(:'ref', NULL, 'other-mcp', stt => 'urn:ietf:params:oauth:token-type:access_token')->>'error',
          'invalid_target', '... but not moved to another audience without a new actor');
SELECT is(pg_temp.x(:'st', :'ref', 'mcp-server')->>'error', 'invalid_grant',
          'a reference token is no actor credential');

-- every kind of revocation
SELECT lives_ok(format('SELECT tokex.revoke_token(%L, %L)', :'ref', 'leaked'), 'revoke_token takes a reference token');
SELECT is(pg_temp.active(:'ref'), false, '... and it is inactive at once');
SELECT is(pg_temp.active((:'r2'::jsonb)->>'access_token'), true, '... while the one exchanged from it is its own token');

SELECT (pg_temp.x(:'st', :'at_a', 'mcp-server'))->>'access_token' AS ref2 \gset
SELECT is(pg_temp.active(:'ref2'), true, 'a new reference token is active');
SELECT tokex.revoke_delegation('alice', 'agent-a', 'done');
SELECT is(pg_temp.active(:'ref2'), false, 'revoking the delegation behind it: inactive');
UPDATE tokex.delegation SET revoked_at = NULL WHERE principal = 'alice';
SELECT is(pg_temp.active(:'ref2'), true, '... active again once the delegation stands again');

SELECT (tokex.start_session('alice', 'agent-a', '{tools.call}'))->>'session_token' AS sess \gset
SELECT (pg_temp.x(:'sess', :'at_a', 'mcp-server'))->>'access_token' AS ref3 \gset
SELECT is(tokex.introspect(:'ref3')->>'sid', (SELECT id::text FROM tokex.session), 'a session''s reference token carries sid');
SELECT tokex.revoke_session((SELECT id FROM tokex.session), 'user logged out');
SELECT is(pg_temp.active(:'ref3'), false, 'revoking the session: inactive');

SELECT (pg_temp.x(:'st', :'at_a', 'mcp-server'))->>'access_token' AS ref4 \gset
SELECT tokex.revoke_identity('agent-a', 'decommissioned');
SELECT is(pg_temp.active(:'ref4'), false, 'decommissioning the agent: inactive');
UPDATE tokex.identity SET status = 'active', tokens_valid_after = NULL WHERE id = 'agent-a';
SELECT is(pg_temp.active(:'ref4'), true, '... and active again when it is reinstated');
SELECT tokex.revoke_identity('alice', 'left');
SELECT is(pg_temp.active(:'ref4'), false, 'offboarding the person: inactive');
UPDATE tokex.identity SET status = 'active', tokens_valid_after = NULL WHERE id = 'alice';

------------------------------------------------------------------------
-- Transaction tokens
------------------------------------------------------------------------
SELECT pg_temp.tok('alice') AS st, pg_temp.tok('agent-a') AS at_a \gset
SELECT pg_temp.x(:'st', :'at_a', 'orders', details => '{"action": "refund", "order": 42}',
                 context => '{"req_ip": "10.0.0.7"}') AS r \gset
SELECT (:'r'::jsonb)->>'access_token' AS txn \gset
SELECT tokex.jwt_verify(:'txn', 'orders') AS c, (tokex.jwt_decode(:'txn'))->'header' AS h \gset
SELECT is(format('%s|%s', (:'r'::jsonb)->>'token_type', (:'r'::jsonb)->>'issued_token_type'),
          'N_A|urn:ietf:params:oauth:token-type:txn_token', 'a txn_token resource gets a transaction token, token_type N_A');
SELECT is((:'h'::jsonb)->>'typ', 'txntoken+jwt', '... typ txntoken+jwt');
SELECT is((:'c'::jsonb)->>'txn', (:'c'::jsonb)->>'jti', '... txn is the exchange''s id');
SELECT is(format('%s|%s|%s|%s', (:'c'::jsonb)->>'sub', (:'c'::jsonb)->>'aud', (:'c'::jsonb)->>'scope', (:'c'::jsonb)->>'req_wl'),
          'alice|orders|orders.read|app-1', '... sub, aud (the trust domain), scope, req_wl (the client)');
SELECT is((:'c'::jsonb)->'act', '{"sub": "agent-a"}'::jsonb, '... the agent in act');
SELECT is((:'c'::jsonb)->'tctx', '{"action": "refund", "order": 42}'::jsonb, '... request_details as tctx');
SELECT is((:'c'::jsonb)->'rctx', '{"req_ip": "10.0.0.7"}'::jsonb, '... request_context as rctx');
SELECT ok(NOT (:'c'::jsonb ? 'client_id'), '... and no client_id (not an access token)');
SELECT is((SELECT issued_token_type FROM tokex.audit_event WHERE jti = ((:'c'::jsonb)->>'jti')::uuid),
          'urn:ietf:params:oauth:token-type:txn_token', 'its audit row says what was issued');

SELECT pg_temp.x(:'st', :'at_a', 'calendar', 'urn:ietf:params:oauth:token-type:txn_token') AS r \gset
SELECT is((tokex.jwt_decode((:'r'::jsonb)->>'access_token'))->'header'->>'typ', 'txntoken+jwt',
          'a JWT resource gives a transaction token when one is asked for');
SELECT is(pg_temp.x(:'st', :'at_a', 'mcp-server', 'urn:ietf:params:oauth:token-type:txn_token')->>'error',
          'invalid_request', '... a reference resource does not');
SELECT is(pg_temp.x(:'txn', NULL, 'orders-eu')->>'error', 'invalid_target',
          'a transaction token is not moved to another audience without a new actor');
SELECT is(pg_temp.x(:'st', :'txn', 'orders')->>'error', 'invalid_grant', 'a transaction token is no actor credential');
SELECT throws_ok(format($$SELECT tokex.exchange(%L, 'urn:ietf:params:oauth:token-type:jwt', audience => 'orders',
                                                request_details => '[1]')$$, :'st'), '22023', NULL,
                 'request_details that is not a JSON object: a clear error');

SELECT * FROM finish();
ROLLBACK;
