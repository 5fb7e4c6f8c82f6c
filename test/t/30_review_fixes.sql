-- The outside review's findings (issue 8), each as it was reproduced: a
-- token whose caller rolled back, revocation judged by an old snapshot or
-- the transaction's start, jti revocation gaps, may_act compared by raw
-- (iss, sub), type confusion at introspection, lookups that scan, and the
-- client of a SQL call chosen by the caller.
--
-- Unlike the other files this one commits its fixtures (run-all.sh gives it
-- a database of its own): the rollback and snapshot cases need committed
-- state and a second session (dblink); so it has no preamble.psql (which
-- opens the transaction every other file rolls back).
\set ON_ERROR_STOP 1
\set QUIET 1
\pset format unaligned
\pset tuples_only true
\pset pager off
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS pgcrypto;
CREATE EXTENSION IF NOT EXISTS dblink;
CREATE EXTENSION IF NOT EXISTS tokex;
SET client_min_messages = warning;
SELECT set_config('tokex.issuer', 'https://tokex.test', false);
SELECT format('ALTER DATABASE %I SET tokex.issuer = %L', current_database(), 'https://tokex.test') \gexec
SELECT plan(46);

SELECT tokex.create_key() AS kid \gset
INSERT INTO tokex.identity (id, kind) VALUES ('alice', 'human'), ('agent-2', 'agent');
INSERT INTO tokex.identity (id, kind, issuer, subject) VALUES
  ('agent-1', 'agent', 'https://platform.test', 'bot-1'),
  ('carol', 'human', 'https://idp-a.test', 'carol');
INSERT INTO tokex.resource (audience, scopes, token_ttl) VALUES ('calendar', '{calendar.read}', '5 minutes');
INSERT INTO tokex.delegation (principal, delegate, scopes) VALUES
  ('alice', 'agent-1', '{calendar.read}'), ('alice', 'agent-2', '{calendar.read}');
INSERT INTO tokex.policy (effect, subject_kind, actor_kind) VALUES ('allow', 'human', 'agent');

CREATE FUNCTION pg_temp.tok(sub text, extra jsonb DEFAULT '{}') RETURNS text LANGUAGE sql AS $$
  SELECT tokex.jwt_sign(jsonb_build_object('sub', sub, 'exp', floor(extract(epoch FROM now()))::bigint + 3600) || extra)
$$;
CREATE FUNCTION pg_temp.claims(tok text) RETURNS jsonb LANGUAGE sql AS $$
  SELECT tokex.jwt_decode(tok)->'payload'
$$;
CREATE FUNCTION pg_temp.x(st text, at text, client text DEFAULT NULL) RETURNS jsonb LANGUAGE sql AS $$
  SELECT tokex.exchange(st, 'urn:ietf:params:oauth:token-type:jwt',
                        at, CASE WHEN at IS NOT NULL THEN 'urn:ietf:params:oauth:token-type:jwt' END,
                        audience => 'calendar', client_id => client)
$$;
CREATE FUNCTION pg_temp.b64u(b bytea) RETURNS text LANGUAGE sql AS $$
  SELECT translate(replace(encode(b, 'base64'), E'\n', ''), '+/=', '-_')
$$;
-- an HS256 token of a trusted issuer (secret: the issuer's name, padded)
CREATE FUNCTION pg_temp.secret(iss text) RETURNS bytea LANGUAGE sql AS $$
  SELECT convert_to(rpad(iss, 40, '#'), 'UTF8')
$$;
CREATE FUNCTION pg_temp.ext(claims jsonb) RETURNS text LANGUAGE sql AS $$
  SELECT si || '.' || pg_temp.b64u(hmac(convert_to(si, 'UTF8'), pg_temp.secret(claims->>'iss'), 'sha256'))
    FROM (SELECT pg_temp.b64u(convert_to('{"alg":"HS256","typ":"JWT"}', 'UTF8')) || '.'
                 || pg_temp.b64u(convert_to((claims || jsonb_build_object(
                      'exp', floor(extract(epoch FROM now()))::bigint + 600))::text, 'UTF8')) AS si) s
$$;
SELECT tokex.trust_issuer(iss, jsonb_build_object('keys', jsonb_build_array(jsonb_build_object(
         'kty', 'oct', 'alg', 'HS256', 'k', pg_temp.b64u(pg_temp.secret(iss))))))
  FROM unnest(ARRAY['https://platform.test', 'https://idp-a.test', 'https://idp-b.test']) iss;
-- a second session, for commits the test's own transaction does not see
SELECT format('host=%s port=%s dbname=%s user=%s',
              split_part(current_setting('unix_socket_directories'), ',', 1),
              current_setting('port'), current_database(), current_user) AS other \gset

SELECT pg_temp.tok('alice', '{"may_act": {"sub": "agent-2"}}') AS st,
       pg_temp.tok('agent-2') AS at \gset

------------------------------------------------------------------------
-- 1. No token without its committed audit row
------------------------------------------------------------------------
BEGIN;
SELECT pg_temp.x(:'st', :'at')->>'access_token' AS t_rolled_back \gset
ROLLBACK;
SELECT is((SELECT count(*) FROM tokex.audit
            WHERE jti = (pg_temp.claims(:'t_rolled_back')->>'jti')::uuid AND decision = 'granted'),
          1::bigint, 'ROLLBACK after exchange: the audit row of the token the caller holds is committed');
BEGIN;
SAVEPOINT s;
SELECT pg_temp.x(:'st', :'at')->>'access_token' AS t_savepoint \gset
ROLLBACK TO SAVEPOINT s;
COMMIT;
SELECT is((SELECT count(*) FROM tokex.audit WHERE jti = (pg_temp.claims(:'t_savepoint')->>'jti')::uuid),
          1::bigint, 'ROLLBACK TO SAVEPOINT: the audit row stays');
SELECT count(*) AS n_before FROM tokex.audit WHERE operation = 'exchange' \gset
SELECT set_config('x.st', :'st', false), set_config('x.at', :'at', false) \gset
DO $$
BEGIN
  PERFORM tokex.exchange(current_setting('x.st'), 'urn:ietf:params:oauth:token-type:jwt',
                         current_setting('x.at'), 'urn:ietf:params:oauth:token-type:jwt', 'calendar');
  RAISE EXCEPTION 'the caller changes its mind';
EXCEPTION WHEN raise_exception THEN NULL;
END
$$;
SELECT cmp_ok((SELECT count(*) FROM tokex.audit WHERE operation = 'exchange' AND decision = 'granted'),
              '>=', (:n_before + 1)::bigint, 'an exchange inside a caught EXCEPTION block keeps its audit row');
BEGIN;
SELECT tokex.start_session('alice', 'agent-2') AS sess_rb \gset
SELECT tokex.identity_token('agent-2') AS idt_rb \gset
ROLLBACK;
SELECT is((SELECT count(*) FROM tokex.audit WHERE operation = 'session' AND decision = 'granted'
             AND jti = (pg_temp.claims((:'sess_rb'::jsonb)->>'session_token')->>'jti')::uuid),
          1::bigint, 'a rolled-back start_session keeps the session credential''s audit row');
SELECT is((SELECT count(*) FROM tokex.audit WHERE operation = 'identity_token'
             AND jti = (pg_temp.claims(:'idt_rb')->>'jti')::uuid),
          1::bigint, 'a rolled-back identity_token keeps its audit row');
SELECT is(tokex.introspect(:'t_rolled_back')->'active', 'true'::jsonb,
          'the rolled-back exchange''s token is active ...');
UPDATE tokex.delegation SET revoked_at = now() WHERE principal = 'alice' AND delegate = 'agent-2';
SELECT is(tokex.introspect(:'t_rolled_back'), '{"active": false}'::jsonb,
          '... and goes inactive when its delegation is revoked, like its committed twin');
UPDATE tokex.delegation SET revoked_at = NULL WHERE principal = 'alice' AND delegate = 'agent-2';
-- a token of ours that has no audit row was never issued
SELECT tokex._sign(jsonb_build_object('iss', 'https://tokex.test', 'sub', 'alice', 'jti', gen_random_uuid(),
                                      'may_act', jsonb_build_object('sub', 'agent-2'),
                                      'exp', floor(extract(epoch FROM now()))::bigint + 600), 'JWT') AS unaudited \gset
SELECT is(tokex.introspect(:'unaudited'), '{"active": false}'::jsonb, 'a tokex token without an audit row is inactive');
SELECT is(pg_temp.x(:'unaudited', :'at')->>'error_description', 'a presented token has no audit row',
          '... and is refused as a subject token');
SELECT is(pg_temp.x(:'st', tokex._sign(jsonb_build_object('iss', 'https://tokex.test', 'sub', 'agent-2',
            'exp', floor(extract(epoch FROM now()))::bigint + 600), 'JWT'))->>'error_description',
          'actor_token: a token of tokex''s without its audit row was never issued',
          '... and as an actor token (no jti at all)');

------------------------------------------------------------------------
-- 2. Judged as of the call: the latest commit and the clock
------------------------------------------------------------------------
SELECT tokex.start_session('alice', 'agent-2') AS sess \gset
SELECT pg_temp.x((:'sess'::jsonb)->>'session_token', :'at')->>'access_token' AS t_sess \gset
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT count(*) FROM tokex.session;   -- the snapshot is taken here
SELECT * FROM dblink(:'other', format('SELECT tokex.revoke_session(%L, %L)::text',
                                      (:'sess'::jsonb)->>'session_id', 'test')) AS t(r text);
SELECT is(pg_temp.x((:'sess'::jsonb)->>'session_token', :'at')->>'error_description', 'the session has been revoked',
          'REPEATABLE READ: a revocation committed after the snapshot refuses the exchange');
SELECT is(tokex.introspect(:'t_sess'), '{"active": false}'::jsonb,
          'REPEATABLE READ: ... and introspection says inactive');
COMMIT;
BEGIN;
UPDATE tokex.delegation SET valid_until = clock_timestamp() + interval '1 second'
 WHERE principal = 'alice' AND delegate = 'agent-2';
SELECT is(pg_temp.x(:'st', :'at') ? 'access_token', true, 'a delegation valid for one more second grants ...');
SELECT pg_sleep(1.2);
SELECT is(pg_temp.x(:'st', :'at')->>'error_description', 'no live delegation from "alice" to "agent-2"',
          '... and refuses once valid_until has passed, though now() is still before it');
ROLLBACK;

------------------------------------------------------------------------
-- 3. Revocation by (issuer, jti)
------------------------------------------------------------------------
SELECT pg_temp.ext('{"iss": "https://idp-a.test", "sub": "carol", "jti": 12345}') AS t_num,
       pg_temp.ext('{"iss": "https://idp-a.test", "sub": "carol", "jti": "shared"}') AS t_a,
       pg_temp.ext('{"iss": "https://idp-b.test", "sub": "dave", "jti": "shared"}') AS t_b,
       pg_temp.ext(jsonb_build_object('iss', 'https://idp-a.test', 'sub', 'carol', 'jti', repeat('j', 5000))) AS t_long \gset
SELECT is(tokex.introspect(:'t_num')->'active', 'true'::jsonb, 'a token with a numeric jti is active ...');
SELECT lives_ok(format('SELECT tokex.revoke_token(%L, %L)', :'t_num', 'numeric'), '... revoke_token takes it ...');
SELECT is(tokex.introspect(:'t_num'), '{"active": false}'::jsonb, '... and it is inactive');
SELECT lives_ok(format('SELECT tokex.revoke_token(%L, %L)', :'t_b', 'b'), 'revoke issuer B''s jti "shared"');
SELECT is(tokex.introspect(:'t_b'), '{"active": false}'::jsonb, '... B''s token is inactive');
SELECT is(tokex.introspect(:'t_a')->'active', 'true'::jsonb, '... issuer A''s token with the same jti is not');
SELECT lives_ok(format('SELECT tokex.revoke_token(%L, %L)', :'t_long', 'long'), 'a 5000-byte jti can be revoked');
SELECT is(tokex.introspect(:'t_long'), '{"active": false}'::jsonb, '... and its token is inactive');
SELECT lives_ok($$SELECT tokex.revoke_token('shared', 'bare', issuer => 'https://idp-a.test')$$,
                'a bare jti names its issuer');
SELECT is(tokex.introspect(:'t_a'), '{"active": false}'::jsonb, '... and revokes that issuer''s token');
-- a numeric jti in exponent form: revoke_token reads the token's own JSON, as the exchange does
SELECT si || '.' || pg_temp.b64u(hmac(convert_to(si, 'UTF8'), pg_temp.secret('https://idp-a.test'), 'sha256')) AS t_exp
  FROM (SELECT pg_temp.b64u(convert_to('{"alg":"HS256","typ":"JWT"}', 'UTF8')) || '.' ||
               pg_temp.b64u(convert_to(format('{"iss":"https://idp-a.test","sub":"carol","jti":1.5e16,"exp":%s}',
                                              floor(extract(epoch FROM now()))::bigint + 600), 'UTF8')) AS si) s \gset
SELECT tokex.revoke_token(:'t_exp', 'exponent');
SELECT is(tokex.introspect(:'t_exp'), '{"active": false}'::jsonb, 'a token whose jti is 1.5e16 is revoked by revoke_token(token)');
SELECT throws_ok($$SELECT tokex.jwt_sign('{"sub": "alice", "jti": "ABCDEF01-2345-4678-9ABC-DEF012345678"}')$$,
                 '22023', 'invalid claims', 'jwt_sign refuses a jti in upper case (the audit row names it in lower case)');

------------------------------------------------------------------------
-- 4. may_act is compared as identities
------------------------------------------------------------------------
SELECT tokex.start_session('alice', 'agent-1') AS sess1 \gset
SELECT is(pg_temp.claims((:'sess1'::jsonb)->>'session_token')->'may_act',
          '{"iss": "https://tokex.test", "sub": "agent-1"}'::jsonb, 'the session names agent-1 in tokex''s namespace');
SELECT ok(pg_temp.x((:'sess1'::jsonb)->>'session_token',
                    pg_temp.ext('{"iss": "https://platform.test", "sub": "bot-1"}')) ? 'access_token',
          'agent-1 presenting its platform credential (bot-1) is admitted');
SELECT is(pg_temp.x((:'sess1'::jsonb)->>'session_token',
                    pg_temp.ext('{"iss": "https://platform.test", "sub": "agent-1"}'))->>'error',
          'invalid_grant', 'a platform subject that merely spells "agent-1" is not');

------------------------------------------------------------------------
-- 8. Type confusion
------------------------------------------------------------------------
SELECT is(pg_temp.x(pg_temp.tok('alice', '{"cnf": {"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}}'),
                    :'at')->>'error', 'invalid_grant', 'a cnf-bound subject token is not exchanged into a bearer token');
SELECT is(tokex.introspect(pg_temp.ext('{"iss": "https://idp-a.test", "sub": "carol",
                                          "act": {"sub": "x", "act": {"sub": "x"}}}')),
          '{"active": false}'::jsonb, 'an external token whose act holds a cycle is inactive');
SELECT tokex.introspect(pg_temp.ext('{"iss": "https://idp-a.test", "sub": "carol",
                                      "cnf": {"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}}')) AS i_cnf \gset
SELECT is(jsonb_build_array(:'i_cnf'::jsonb->'token_type', :'i_cnf'::jsonb->'cnf'->'jkt'),
          '["DPoP", "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"]'::jsonb,
          'introspection of a key-bound token says DPoP and returns cnf, so it is not taken for a bearer token');

-- a client's oversized request is refused and audited, not raised

SELECT tokex.exchange(:'st', 'urn:ietf:params:oauth:token-type:jwt', :'at', 'urn:ietf:params:oauth:token-type:jwt',
                      audience => 'calendar',
                      scope => (SELECT string_agg(repeat('s', 250) || g, ' ') FROM generate_series(1, 64) g))
       ->>'error' AS big_err \gset
SELECT is(:'big_err'::text, 'invalid_scope', 'an exchange whose audit row would overflow the writer''s slot is answered ...');
SELECT ok((SELECT requested_scope IS NOT NULL AND cardinality(requested_scope) <= 64
             FROM tokex.audit WHERE error = 'invalid_scope' ORDER BY at DESC LIMIT 1),
          '... and audited, its requested scopes cut to fit');

------------------------------------------------------------------------
-- 7. jti lookups are index probes, not scans of the audit table
------------------------------------------------------------------------
INSERT INTO tokex.audit_event (exchange_id, operation, decision, error, at, db_user)
SELECT gen_random_uuid(), 'exchange', 'denied', 'invalid_request', now(), 'filler' FROM generate_series(1, 20000);
ANALYZE tokex.audit_event;
SELECT pg_temp.x(:'st', :'at')->>'access_token' AS t_use \gset
BEGIN;
SELECT seq_scan AS scans0 FROM pg_stat_xact_user_tables WHERE relid = 'tokex.audit_event'::regclass \gset
SELECT tokex.record_use(:'t_use', 'read', 'ok') IS NOT NULL;
SELECT tokex.revoke_token(pg_temp.claims(:'t_use')->>'jti', 'scan test');
SELECT is((SELECT seq_scan FROM pg_stat_xact_user_tables WHERE relid = 'tokex.audit_event'::regclass) - :scans0,
          0::bigint, 'record_use and revoke_token(jti) do not scan tokex.audit_event');
ROLLBACK;

------------------------------------------------------------------------
-- 10. The client of a SQL call is its role's, not its word
------------------------------------------------------------------------
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tokex_t30_app') THEN CREATE ROLE tokex_t30_app NOLOGIN; END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tokex_t30_two') THEN CREATE ROLE tokex_t30_two NOLOGIN; END IF;
END $$;
GRANT tokex_app TO tokex_t30_app, tokex_t30_two;
INSERT INTO tokex.client (client_id, db_roles) VALUES
  ('app-c', '{tokex_t30_app,tokex_t30_two}'), ('app-d', '{tokex_t30_two}'), ('app-e', NULL);
INSERT INTO tokex.policy (effect, client_id) VALUES ('deny', 'app-c');
SELECT currval('tokex.policy_id_seq') AS deny_c \gset
SET ROLE tokex_t30_app;
SELECT pg_temp.x(:'st', :'at') AS r_implicit \gset
SELECT pg_temp.x(:'st', :'at', 'app-e') AS r_other \gset
RESET ROLE;
SELECT is(:'r_implicit'::jsonb->>'error_description', format('denied by policy %s', :deny_c),
          'a role mapped to one client is that client without naming it: its deny rule applies');
SELECT is(:'r_other'::jsonb->>'error', 'unauthorized_client', 'naming a client the role is not mapped to is refused');
SET ROLE tokex_t30_two;
SELECT pg_temp.x(:'st', :'at') AS r_two \gset
SELECT pg_temp.x(:'st', :'at', 'app-d') AS r_d \gset
RESET ROLE;
SELECT is(:'r_two'::jsonb->>'error_description', 'role "tokex_t30_two" acts for several clients: client_id is required',
          'a role mapped to several clients must name one');
SELECT ok(:'r_d'::jsonb ? 'access_token', '... and may name any of them');
SELECT is(pg_temp.claims(:'r_d'::jsonb->>'access_token')->>'client_id', 'app-d', '... which the token carries');
-- once any client maps roles, a role mapped to none is refused: SET ROLE
-- to such a role (tokex_app itself) escapes no client-scoped rule
SET ROLE tokex_app;
SELECT pg_temp.x(:'st', :'at') AS r_unmapped \gset
RESET ROLE;
SELECT is(:'r_unmapped'::jsonb->>'error_description', 'role "tokex_app" acts for no client (tokex.client.db_roles)',
          'a role mapped to no client is refused once clients map roles (fail closed)');
REVOKE tokex_app FROM tokex_t30_app, tokex_t30_two;
DROP ROLE tokex_t30_app;
DROP ROLE tokex_t30_two;

------------------------------------------------------------------------
-- tokex.decide for administrators: allowed, and not hijacked by their search_path
------------------------------------------------------------------------
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tokex_t30_admin') THEN CREATE ROLE tokex_t30_admin NOLOGIN; END IF;
END $$;
GRANT tokex_admin TO tokex_t30_admin;
CREATE SCHEMA t30_evil;
GRANT USAGE ON SCHEMA t30_evil TO PUBLIC;
CREATE FUNCTION t30_evil.eq(a text, b text) RETURNS boolean LANGUAGE plpgsql AS
  $f$ BEGIN RAISE EXCEPTION 'hijacked: evil = ran as %', current_user; END $f$;
CREATE OPERATOR t30_evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = t30_evil.eq);
CREATE OPERATOR t30_evil.<> (LEFTARG = text, RIGHTARG = text, FUNCTION = t30_evil.eq);
CREATE FUNCTION t30_evil.chk(t pg_catalog.text) RETURNS boolean LANGUAGE plpgsql AS
  $f$ BEGIN RAISE EXCEPTION 'hijacked: evil text domain'; END $f$;
CREATE DOMAIN t30_evil.text AS pg_catalog.text CHECK (t30_evil.chk(VALUE));
-- the hostile search_path only while decide runs (pgTAP itself would take its =)
CREATE FUNCTION pg_temp.decide_with_evil_path() RETURNS bigint
LANGUAGE sql SET search_path = t30_evil, pg_catalog, public AS $f$
  SELECT count(*) FROM tokex.decide('{https://tokex.test}', '{alice}', ARRAY[now()], 'calendar', 'calendar',
                                    '{calendar.read,zz}', NULL, NULL, 'https://tokex.test')
$f$;
SET ROLE tokex_t30_admin;
SELECT lives_ok($$SELECT * FROM tokex.decide('{https://tokex.test}', '{alice}', ARRAY[now()], 'calendar', NULL,
                                             NULL, NULL, NULL, 'https://tokex.test')$$,
                'an administrator (no superuser) can run tokex.decide');
SELECT lives_ok($$SELECT pg_temp.decide_with_evil_path()$$,
                '... and a search_path with its own =, <> and text does not reach into it');
RESET ROLE;
REVOKE tokex_admin FROM tokex_t30_admin;
DROP ROLE tokex_t30_admin;

------------------------------------------------------------------------
-- 2 again: a signing key revoked while a transaction is open
------------------------------------------------------------------------
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT ok(pg_temp.x(:'st', :'at') ? 'access_token', 'an exchange in an open transaction is granted ...');
SELECT * FROM dblink(:'other', format('SELECT tokex.revoke_key(%L)::text', :'kid')) AS t(r text);
SELECT is(pg_temp.x(:'st', :'at')->>'error_description', 'subject_token: tokex has no published keys',
          '... and refused, in the same transaction, once another session has revoked its key');
SELECT is(tokex.introspect(:'t_rolled_back'), '{"active": false}'::jsonb,
          '... and tokens that key signed introspect inactive');
COMMIT;

SELECT * FROM finish();
