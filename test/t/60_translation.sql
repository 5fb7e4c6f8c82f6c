-- Translation (inbound): agent API keys and token types with a registered
-- verifier, each deciding through the same graph, may_act, policy and audit
-- row as a JWT; the verifier runs as the role that registered it.
\ir preamble.psql
SELECT plan(75);

SELECT tokex.create_key() AS kid \gset
INSERT INTO tokex.identity (id, kind, issuer, subject) VALUES
  ('alice', 'human', NULL, NULL), ('bob', 'human', NULL, NULL),
  ('agent-a', 'agent', NULL, NULL), ('agent-b', 'agent', NULL, NULL), ('svc', 'service', NULL, NULL),
  ('mcp-bot', 'agent', 'https://mcp.test', 'bot'),
  ('v-admin-id', 'agent', 'https://mcp.test', 'v_admin');
INSERT INTO tokex.resource (audience, scopes) VALUES ('calendar', '{calendar.read,calendar.write}');
INSERT INTO tokex.delegation (principal, delegate, scopes) VALUES
  ('alice', 'agent-a', '{calendar.read}'), ('alice', 'agent-b', '{calendar.read}'),
  ('alice', 'mcp-bot', '{calendar.read}'), ('alice', 'v-admin-id', '{calendar.read}');
INSERT INTO tokex.policy (effect, description) VALUES ('allow', 'everything, for these tests');

CREATE FUNCTION pg_temp.tok(sub text, extra jsonb DEFAULT '{}') RETURNS text LANGUAGE sql AS $$
  SELECT tokex.jwt_sign(jsonb_build_object('sub', sub, 'iat', floor(extract(epoch FROM now()))::bigint,
                                           'exp', floor(extract(epoch FROM now()))::bigint + 3600) || extra)
$$;
CREATE FUNCTION pg_temp.x(st text, stt text, at text, att text, aud text DEFAULT 'calendar') RETURNS jsonb
LANGUAGE sql AS $$
  SELECT tokex.exchange(st, stt, at, att, audience => aud, scope => 'calendar.read')
$$;
CREATE FUNCTION pg_temp.claims(r jsonb) RETURNS jsonb LANGUAGE sql AS $$
  SELECT tokex.jwt_verify(r->>'access_token', 'calendar')
$$;
CREATE FUNCTION pg_temp.last_audit() RETURNS tokex.audit_event LANGUAGE sql AS $$
  SELECT * FROM tokex.audit_event ORDER BY at DESC, exchange_id LIMIT 1
$$;

\set JWT 'urn:ietf:params:oauth:token-type:jwt'
\set AK 'urn:tokex:token-type:api_key'
SELECT pg_temp.tok('alice', '{"may_act": {"sub": "agent-a"}}') AS st_a,
       pg_temp.tok('alice') AS st_any \gset

------------------------------------------------------------------------
-- API keys: made once, kept as a hash
------------------------------------------------------------------------
SELECT tokex.create_api_key('agent-a', label => 'agent a, prod') AS key_a,
       tokex.create_api_key('agent-b') AS key_b,
       tokex.create_api_key('svc') AS key_svc \gset

SELECT ok(:'key_a' ~ '^tkx_ak_[0-9A-Za-z]{49}$', 'an API key is tkx_ak_ + 43 base62 characters + a 6-character checksum');
SELECT isnt(:'key_a'::text, :'key_b'::text, 'each key is new');
SELECT is((SELECT key_sha256 FROM tokex.api_key WHERE label = 'agent a, prod'),
          sha256(convert_to(:'key_a', 'UTF8')), 'only the key''s SHA-256 is stored');
SELECT is((SELECT count(*) FROM tokex.api_key k WHERE row_to_json(k)::text LIKE '%' || substr(:'key_a', 12) || '%'),
          0::bigint, '... and no column holds the key or its secret part');
SELECT throws_ok($$SELECT tokex.create_api_key('alice')$$, '22023', 'API keys are for agents and services, not for "alice"',
                 'a person gets no API key');
SELECT throws_ok($$SELECT tokex.create_api_key('nobody')$$, 'P0002', 'identity "nobody" does not exist',
                 'an unknown identity gets no API key');

------------------------------------------------------------------------
-- API key as the actor: the same decision as a JWT
------------------------------------------------------------------------
SELECT pg_temp.x(:'st_a', :'JWT', :'key_a', :'AK') AS r \gset
SELECT is((:'r'::jsonb)->>'error', NULL, 'alice''s token + agent-a''s API key: granted');
SELECT is(pg_temp.claims(:'r')->'act', '{"sub": "agent-a"}'::jsonb, '... act names agent-a, exactly as for a JWT actor');
SELECT is(pg_temp.claims(:'r')->>'sub', 'alice', '... on behalf of alice');
SELECT is(format('%s|%s|%s', (pg_temp.last_audit()).actor, (pg_temp.last_audit()).actor_token_type,
                 (pg_temp.last_audit()).actor_token_sha256 = sha256(convert_to(:'key_a', 'UTF8'))),
          'agent-a|urn:tokex:token-type:api_key|t',
          '... and the audit row names the actor, the API key type and the key''s hash');

SELECT pg_temp.x(:'st_a', :'JWT', :'key_b', :'AK') AS r \gset
SELECT is((:'r'::jsonb)->>'error_description', 'actor "agent-b" is not admitted by the subject token''s may_act',
          'agent-b''s key where may_act names agent-a: refused, as a JWT of agent-b would be');

SELECT pg_temp.x(:'st_any', :'JWT', 'tkx_ak_' || repeat('A', 43) || 'AAAAAA', :'AK') AS r \gset
SELECT is((:'r'::jsonb)->>'error_description', 'actor_token: not a well-formed tokex API key',
          'a key with a wrong checksum is refused without a lookup');
SELECT pg_temp.x(:'st_any', :'JWT', tokex._opaque_new('ak'), :'AK') AS r \gset
SELECT is((:'r'::jsonb)->>'error_description', 'actor_token: unknown API key', 'a well-formed key tokex never made: refused');
SELECT is((pg_temp.last_audit()).decision, 'denied', '... and the refusal is audited');

-- service acting for itself
SELECT tokex.exchange(:'key_svc', :'AK', audience => 'calendar') AS r \gset
SELECT is(format('%s|%s', pg_temp.claims(:'r')->>'sub', pg_temp.claims(:'r') ? 'act'), 'svc|f',
          'a service''s API key as the subject token: a token for the service itself, no act');

-- expiry, revocation (function and plain DML), identity revocation
UPDATE tokex.api_key SET expires_at = now() - interval '1 second' WHERE identity = 'agent-b';
SELECT pg_temp.x(:'st_any', :'JWT', :'key_b', :'AK') AS r \gset
SELECT is((:'r'::jsonb)->>'error_description', 'actor_token: the API key has expired', 'an expired key is refused');

SELECT tokex.create_api_key('agent-b') AS key_b2 \gset
SELECT pg_temp.x(:'st_any', :'JWT', :'key_b2', :'AK') AS r_b2 \gset
SELECT is((:'r_b2'::jsonb)->>'error', NULL, 'agent-b''s new key works');
SELECT is(tokex.introspect((:'r_b2'::jsonb)->>'access_token')->>'active', 'true', '... its token is active');
SELECT lives_ok(format('SELECT tokex.revoke_api_key(%L, %L)', :'key_b2', 'leaked in a prompt'), 'revoke_api_key(key)');
SELECT is((pg_temp.x(:'st_any', :'JWT', :'key_b2', :'AK'))->>'error_description',
          'actor_token: the API key has been revoked', '... and the key is refused at the next exchange');
SELECT is((SELECT format('%s|%s', kind, reason) FROM tokex.revocation ORDER BY id DESC LIMIT 1),
          'api_key|leaked in a prompt', '... recorded in tokex.revocation');
SELECT is(tokex.introspect((:'r_b2'::jsonb)->>'access_token')->>'active', 'false',
          '... and the token obtained with it dies with it');
SELECT is(tokex.exchange((:'r_b2'::jsonb)->>'access_token', 'urn:ietf:params:oauth:token-type:access_token',
                         audience => 'calendar')->>'error_description',
          'a presented token was obtained with an API key that has been revoked', '... and is not exchanged again');
SELECT throws_ok(format('SELECT tokex.revoke_api_key(%L, %L)', :'key_b2', 'again'), 'P0002', 'no live API key matches',
                 'revoking it again: no live key');
SELECT tokex.create_api_key('agent-b') AS key_b3 \gset
UPDATE tokex.api_key SET revoked_at = now(), revoke_reason = 'by hand'
 WHERE key_sha256 = sha256(convert_to(:'key_b3', 'UTF8'));
SELECT is((SELECT format('%s|%s', kind, reason) FROM tokex.revocation ORDER BY id DESC LIMIT 1),
          'api_key|by hand', 'a plain UPDATE revokes too, and is recorded');
SELECT is((pg_temp.x(:'st_any', :'JWT', :'key_b3', :'AK'))->>'error_description',
          'actor_token: the API key has been revoked', '... and refused');

SELECT throws_ok(format('UPDATE tokex.api_key SET revoked_at = NULL WHERE key_sha256 = %L',
                        sha256(convert_to(:'key_b3', 'UTF8'))), '42501', 'a revoked api_key stays revoked',
                 'a revoked key cannot be revived by UPDATE');
SELECT throws_ok(format('SELECT tokex.revoke_token(%L, %L)', :'key_svc', 'wrong function'), '22023',
                 'not a token: an API key is revoked with tokex.revoke_api_key',
                 'revoke_token refuses an API key (it would keep the key in clear as a jti)');
SELECT is((SELECT count(*) FROM tokex.revocation WHERE target LIKE 'tkx%'), 0::bigint, '... and no revocation row holds a key');
UPDATE tokex.identity SET kind = 'human' WHERE id = 'svc';
SELECT is((tokex.exchange(:'key_svc', :'AK', audience => 'calendar'))->>'error_description',
          'subject_token: API keys are for agents and services, and this one''s identity is a person',
          'an identity that became a person is refused with its old key');
UPDATE tokex.identity SET kind = 'service' WHERE id = 'svc';

SELECT tokex.revoke_identity('agent-a', 'decommissioned');
SELECT is((pg_temp.x(:'st_a', :'JWT', :'key_a', :'AK'))->>'error_description', 'identity "agent-a" is decommissioned',
          'decommissioning the agent refuses its API key too');
UPDATE tokex.identity SET status = 'active' WHERE id = 'agent-a';
SELECT is((pg_temp.x(:'st_a', :'JWT', :'key_a', :'AK'))->>'error_description',
          'token for "agent-a" was issued before its revocation',
          '... and reactivating it does not revive keys made before the revocation');

------------------------------------------------------------------------
-- Registered token types: the verifier runs as its registrant
------------------------------------------------------------------------
CREATE ROLE v_admin NOSUPERUSER IN ROLE tokex_admin;
CREATE SCHEMA vtest AUTHORIZATION v_admin;
SET ROLE v_admin;
-- "mcp:<sub>:<ttl seconds>[|<extra json>]": an MCP server's own token format
CREATE FUNCTION vtest.mcp(token text) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE p text[] := string_to_array(split_part(token, '|', 1), ':');
BEGIN
  IF p[1] = 'raise' THEN RAISE EXCEPTION 'bad token %', token; END IF;
  IF p[1] = 'garbage' THEN RETURN '[1, 2]'; END IF;
  IF p[1] <> 'mcp' THEN RETURN NULL; END IF;
  RETURN jsonb_build_object('iss', 'https://mcp.test', 'sub', CASE p[2] WHEN 'me' THEN current_user ELSE p[2] END,
                            'exp', floor(extract(epoch FROM now()))::bigint + p[3]::int,
                            'jti', 'mcp-' || p[2]) || COALESCE(NULLIF(split_part(token, '|', 2), '')::jsonb, '{}');
END $$;
-- a verifier that tries to make its registrant a superuser
CREATE FUNCTION vtest.escalate(token text) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
  ALTER ROLE v_admin SUPERUSER;
  RETURN jsonb_build_object('iss', 'https://mcp.test', 'sub', 'bot', 'exp', 9999999999);
END $$;
CREATE FUNCTION vtest.wrong(token text) RETURNS text LANGUAGE sql AS $$ SELECT token $$;
-- a verifier that tries to leave traces in the caller's session and database
CREATE TABLE vtest.trace (note text);
CREATE FUNCTION vtest.sticky(token text) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
  PERFORM set_config('search_path', 'vtest, pg_catalog', false);
  PERFORM set_config('statement_timeout', '1234', false);
  PERFORM set_config('tokex_test.left', 'behind', false);
  INSERT INTO vtest.trace VALUES ('written by a verifier');
  RETURN jsonb_build_object('iss', 'https://mcp.test', 'sub', 'bot', 'exp', floor(extract(epoch FROM now()))::bigint + 60);
END $$;
-- one that raises 57014 (query_canceled) itself, and one with an iat in the future
CREATE FUNCTION vtest.cancel(token text) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN RAISE SQLSTATE '57014' USING MESSAGE = 'pretend ' || token; END $$;
-- one that is slow: the caller's statement_timeout fires while it runs
CREATE FUNCTION vtest.slow(token text) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_sleep(2); RETURN jsonb_build_object('iss', 'https://mcp.test', 'sub', 'bot', 'exp', 2000000000); END $$;
CREATE FUNCTION vtest.future(token text) RETURNS jsonb LANGUAGE sql AS $$
  SELECT jsonb_build_object('iss', 'https://mcp.test', 'sub', 'bot', 'iat', 1999999999, 'exp', 2000000000)
$$;
CREATE FUNCTION vtest.definer(token text) RETURNS jsonb LANGUAGE sql SECURITY DEFINER AS $$
  SELECT jsonb_build_object('iss', 'https://mcp.test', 'sub', 'bot', 'exp', 2000000000)
$$;
SELECT lives_ok($$SELECT tokex.register_token_type('urn:example:sticky', 'vtest.sticky(text)')$$, 'a verifier that leaves traces');
SELECT tokex.register_token_type('urn:example:cancel', 'vtest.cancel(text)');
SELECT tokex.register_token_type('urn:example:future', 'vtest.future(text)');
SELECT tokex.register_token_type('urn:example:slow', 'vtest.slow(text)');
SELECT throws_ok($$SELECT tokex.register_token_type('urn:example:definer', 'vtest.definer(text)')$$, '42501', NULL,
                 'a SECURITY DEFINER function is no verifier (it would run as its owner)');
SELECT lives_ok($$SELECT tokex.register_token_type('urn:example:mcp', 'vtest.mcp(text)', 'the MCP server''s tokens')$$,
                'an administrator registers a token type with its own verifier');
SELECT lives_ok($$SELECT tokex.register_token_type('urn:example:escalate', 'vtest.escalate(text)')$$,
                '... and one that tries to escalate');
SELECT throws_ok($$SELECT tokex.register_token_type('urn:example:wrong', 'vtest.wrong(text)')$$, '22023', NULL,
                 'a function that does not return jsonb is no verifier');
SELECT throws_ok($$SELECT tokex.register_token_type('urn:tokex:token-type:api_key', 'vtest.mcp(text)')$$, '22023', NULL,
                 'tokex''s own token types cannot be taken over');
INSERT INTO tokex.token_type (token_type, verifier, registered_by)
VALUES ('urn:example:owner', 'vtest.mcp(text)', 'postgres');
RESET ROLE;
SELECT is((SELECT registered_by::text FROM tokex.token_type WHERE token_type = 'urn:example:owner'), 'v_admin',
          'a plain INSERT naming another registrant (postgres) registers the writer (v_admin) instead');
SELECT is((SELECT registered_by::text FROM tokex.token_type WHERE token_type = 'urn:example:mcp'), 'v_admin',
          'the registrant is the role that wrote the row');
CREATE FUNCTION public.su_owned(token text) RETURNS jsonb LANGUAGE sql AS $$ SELECT NULL::jsonb $$;
GRANT EXECUTE ON FUNCTION public.su_owned(text) TO v_admin;
SET ROLE v_admin;
SELECT throws_ok($$SELECT tokex.register_token_type('urn:example:theirs', 'public.su_owned(text)')$$, '42501', NULL,
                 'a function of another role''s (here a superuser''s) is no verifier of v_admin''s');
RESET ROLE;
SELECT throws_ok($$SELECT tokex.register_token_type('urn:example:admins', 'vtest.mcp(text)')$$, '42501', NULL,
                 '... nor is v_admin''s function a verifier of a superuser''s (v_admin could change what it does)');

SELECT pg_temp.x(:'st_any', :'JWT', 'mcp:bot:300', 'urn:example:mcp') AS r \gset
SELECT is((:'r'::jsonb)->>'error', NULL, 'an MCP token as the actor: granted');
SELECT is(pg_temp.claims(:'r')->'act', '{"sub": "mcp-bot"}'::jsonb,
          '... act is the identity its (iss, sub) maps to');
SELECT is((pg_temp.last_audit()).actor_token_type, 'urn:example:mcp', '... and the audit row names the token type');

SELECT pg_temp.x(:'st_any', :'JWT', 'mcp:me:300', 'urn:example:mcp') AS r \gset
SELECT is(pg_temp.claims(:'r')->'act', '{"sub": "v-admin-id"}'::jsonb,
          'the verifier ran as v_admin (its current_user), not as the extension owner');

SELECT pg_temp.x(:'st_any', :'JWT', 'mcp:bot:300|{"act": {"sub": "agent-b"}, "cnf": {"jkt": "x"}, "sid": "s"}',
                 'urn:example:mcp') AS r \gset
SELECT is(pg_temp.claims(:'r')->'act', '{"sub": "mcp-bot"}'::jsonb,
          'claims beyond iss/sub/exp/iat/jti/scope/may_act (act, cnf, sid) are dropped: the chain is tokex''s');

SELECT pg_temp.x(:'st_any', :'JWT', 'other', 'urn:example:mcp') AS r \gset
SELECT is((:'r'::jsonb)->>'error_description', 'actor_token: the verifier returned NULL', 'a verifier''s NULL refuses');
SELECT pg_temp.x(:'st_any', :'JWT', 'raise:s3cret', 'urn:example:mcp') AS r \gset
SELECT is((:'r'::jsonb)->>'error_description', 'actor_token: the verifier raised an error (SQLSTATE P0001)',
          'a verifier that raises refuses, without repeating its message (it may quote the credential)');
SELECT is((SELECT count(*) FROM tokex.audit_event WHERE reason LIKE '%s3cret%'), 0::bigint,
          '... and the credential is in no audit row');
SELECT pg_temp.x(:'st_any', :'JWT', 'garbage', 'urn:example:mcp') AS r \gset
SELECT is((:'r'::jsonb)->>'error_description', 'actor_token: the verifier''s answer is not a JSON object of claims',
          'a verifier''s garbage refuses');
SELECT pg_temp.x(:'st_any', :'JWT', 'mcp:stranger:300', 'urn:example:mcp') AS r \gset
SELECT is((:'r'::jsonb)->>'error_description', 'actor "stranger" is not a known identity',
          'claims naming an unknown identity: refused by the decision');
SELECT pg_temp.x(:'st_any', :'JWT', 'mcp:bot:-60', 'urn:example:mcp') AS r \gset
SELECT is((:'r'::jsonb)->>'error_description', 'actor_token: the credential has expired', 'an expired credential: refused');
SELECT pg_temp.x(:'st_any', :'JWT', 'mcp:bot:300|{"iss": "https://tokex.test"}', 'urn:example:mcp') AS r \gset
SELECT is((:'r'::jsonb)->>'error_description', 'actor_token: a verifier may not vouch for tokex''s own issuer',
          'a verifier cannot speak for tokex itself');

SELECT pg_temp.x(:'st_any', :'JWT', 'x', 'urn:example:escalate') AS r \gset
SELECT is((:'r'::jsonb)->>'error_description', 'actor_token: the verifier raised an error (SQLSTATE 42501)',
          'a verifier that tries ALTER ROLE ... SUPERUSER fails: it runs as its registrant');
SELECT is((SELECT rolsuper FROM pg_roles WHERE rolname = 'v_admin'), false, '... and v_admin is no superuser');

SELECT current_setting('search_path') AS sp0, current_setting('statement_timeout') AS st0 \gset
SELECT pg_temp.x(:'st_any', :'JWT', 'x', 'urn:example:sticky') AS r \gset
SELECT is((:'r'::jsonb)->>'error', NULL, 'the tracing verifier''s claims are accepted');
SELECT is(format('%s|%s|%s', current_setting('search_path'), current_setting('statement_timeout'),
                 current_setting('tokex_test.left', true)),
          format('%s|%s|', :'sp0', :'st0'),
          '... and the settings it changed for the session are undone (search_path, statement_timeout, a custom one)');
SELECT is((SELECT count(*) FROM vtest.trace), 0::bigint, '... and so is the row it wrote');
SELECT pg_temp.x(:'st_any', :'JWT', 's3cr3t', 'urn:example:cancel') AS r \gset
SELECT is((:'r'::jsonb)->>'error_description', 'actor_token: the verifier raised an error (SQLSTATE 57014)',
          'a verifier''s own query_canceled is a refusal like any error, answered and audited');
SELECT is((pg_temp.last_audit()).reason, 'actor_token: the verifier raised an error (SQLSTATE 57014)', '... audited');
-- the caller's statement_timeout firing in a verifier cancels the statement (it is no
-- answer about the credential); a batch of such calls stops there, not after each one
CREATE FUNCTION pg_temp.until_canceled(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE t0 timestamptz := clock_timestamp();
BEGIN
  EXECUTE q;
  RETURN 'finished';
EXCEPTION WHEN query_canceled THEN
  RETURN CASE WHEN clock_timestamp() - t0 < interval '1.5 seconds' THEN 'canceled at once' ELSE 'canceled late' END;
END $$;
SET statement_timeout = '300ms';
SELECT is(pg_temp.until_canceled(format($$SELECT count(pg_temp.x(%L, %L, 'x' || g, 'urn:example:slow'))
                                          FROM generate_series(1, 3) g$$, :'st_any', :'JWT')),
          'canceled at once',
          'statement_timeout firing in a slow verifier cancels the statement at once, not after each call of a batch');
RESET statement_timeout;
UPDATE tokex.identity SET tokens_valid_after = now() WHERE id = 'mcp-bot';
SELECT pg_temp.x(:'st_any', :'JWT', 'x', 'urn:example:future') AS r \gset
SELECT is((:'r'::jsonb)->>'error', 'invalid_grant', 'claims with an iat in the future are refused (they would outrun tokens_valid_after)');
UPDATE tokex.identity SET tokens_valid_after = NULL WHERE id = 'mcp-bot';
SET ROLE v_admin;
ALTER FUNCTION vtest.mcp(text) SECURITY DEFINER;
RESET ROLE;
SELECT is((pg_temp.x(:'st_any', :'JWT', 'mcp:bot:300', 'urn:example:mcp'))->>'error', 'invalid_grant',
          'a verifier made SECURITY DEFINER after its registration is not run');
SET ROLE v_admin;
ALTER FUNCTION vtest.mcp(text) SECURITY INVOKER;
RESET ROLE;

SELECT pg_temp.x(:'st_any', :'JWT', 'x', 'urn:example:unknown') AS r \gset
SELECT is((:'r'::jsonb)->>'error_description', 'unsupported actor_token_type', 'an unregistered token type: invalid_request');
SELECT is((:'r'::jsonb)->>'error', 'invalid_request', '... as RFC 8693 says');

REVOKE EXECUTE ON FUNCTION vtest.mcp(text) FROM PUBLIC, v_admin;
SELECT pg_temp.x(:'st_any', :'JWT', 'mcp:bot:300', 'urn:example:mcp') AS r \gset
SELECT is((:'r'::jsonb)->>'error_description',
          'actor_token: the verifier of urn:example:mcp is no longer a function its registrant owns and may run (not SECURITY DEFINER)',
          'a registrant that lost EXECUTE on its verifier: refused (checked at every call)');
GRANT EXECUTE ON FUNCTION vtest.mcp(text) TO v_admin;

-- a registered type as the subject: the decision still needs a delegation
SELECT tokex.exchange('mcp:bot:300', 'urn:example:mcp', audience => 'calendar') AS r \gset
SELECT is((:'r'::jsonb)->>'error', NULL, 'a registered type as the subject token, acting for itself: granted by the allow policy');
DELETE FROM tokex.policy;
INSERT INTO tokex.policy (effect, subject_kind) VALUES ('allow', 'human');
SELECT tokex.exchange('mcp:bot:300', 'urn:example:mcp', audience => 'calendar') AS r \gset
SELECT is((:'r'::jsonb)->>'error_description', 'no policy allows this exchange',
          '... and refused once policy allows only people as subjects: the verifier maps, policy decides');

------------------------------------------------------------------------
-- Privileges
------------------------------------------------------------------------
SELECT ok(NOT has_table_privilege('tokex_app', 'tokex.api_key', 'SELECT'), 'tokex_app cannot read API keys');
SELECT ok(NOT has_function_privilege('tokex_app', 'tokex.create_api_key(text, timestamptz, text)', 'EXECUTE'),
          'tokex_app cannot make API keys');
SELECT ok(NOT has_table_privilege('tokex_admin', 'tokex.api_key', 'INSERT'),
          'tokex_admin makes keys only through create_api_key (no INSERT of a chosen hash)');
SELECT ok(has_table_privilege('tokex_auditor', 'tokex.api_key', 'SELECT'), 'tokex_auditor lists API keys');
SELECT ok(NOT has_function_privilege('tokex_app', 'tokex.register_token_type(text, regprocedure, text)', 'EXECUTE'),
          'tokex_app cannot register token types');
SELECT ok(NOT has_function_privilege('tokex_app', 'tokex._opaque_new(text)', 'EXECUTE')
          AND NOT has_function_privilege('tokex_admin', 'tokex._opaque_new(text)', 'EXECUTE'),
          '_opaque_new is tokex''s own');

SELECT * FROM finish();
ROLLBACK;
