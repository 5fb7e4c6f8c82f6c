-- Hot standbys, what can be checked on one server (the standbys themselves
-- are test/standby/run.sh): the heartbeat, the settings' privileges,
-- tokex.revocation_sync turning a revocation's commit into remote_apply, and
-- tokex.max_replica_lag having no effect on a primary.
\ir preamble.psql
SELECT plan(13);

SELECT tokex.create_key() AS k1 \gset
INSERT INTO tokex.identity (id, kind) VALUES ('hb-alice', 'human');
SELECT tokex.jwt_sign(jsonb_build_object('sub', 'hb-alice', 'aud', 'cal',
                      'exp', extract(epoch FROM now() + interval '1 hour')::bigint)) AS tok \gset

-- the heartbeat: one row, moved forward by each call
SELECT tokex.heartbeat() AS hb1 \gset
SELECT pg_sleep(0.01) AS slept \gset
SELECT tokex.heartbeat() AS hb2 \gset
SELECT ok(:'hb2'::timestamptz > :'hb1'::timestamptz, 'tokex.heartbeat() moves the heartbeat forward');
SELECT is((SELECT count(*) FROM tokex.heartbeat), 1::bigint, 'tokex.heartbeat holds one row');
SELECT is((SELECT at FROM tokex.heartbeat), :'hb2'::timestamptz, '... the time of the last heartbeat');
SELECT throws_ok($$INSERT INTO tokex.heartbeat VALUES (false, now())$$, '23514', NULL,
                 'tokex.heartbeat cannot hold a second row');

-- who may call what
SELECT ok(has_function_privilege('tokex_admin', 'tokex.heartbeat()', 'EXECUTE'), 'tokex_admin may write a heartbeat');
SELECT ok(NOT has_function_privilege('tokex_app', 'tokex.heartbeat()', 'EXECUTE'), '... tokex_app may not');
SELECT ok(NOT has_function_privilege('tokex_app', 'tokex._revocation_sync()', 'EXECUTE'),
          'tokex._revocation_sync() is no one''s to call');
SELECT is((SELECT context FROM pg_settings WHERE name = 'tokex.max_replica_lag'), 'superuser',
          'tokex.max_replica_lag is set by superusers (an application cannot lift the bound)');
SELECT is((SELECT context FROM pg_settings WHERE name = 'tokex.revocation_sync'), 'superuser',
          'tokex.revocation_sync is set by superusers');

-- tokex.revocation_sync: the revoking transaction commits with remote_apply
SET LOCAL synchronous_commit = on;
SET LOCAL tokex.revocation_sync = off;
INSERT INTO tokex.identity (id, kind) VALUES ('hb-carol', 'human');
SELECT tokex.revoke_identity('hb-carol', 'offboarded') AS r1 \gset
SELECT is(current_setting('synchronous_commit'), 'on', 'without tokex.revocation_sync a revocation leaves synchronous_commit');
INSERT INTO tokex.identity (id, kind) VALUES ('hb-bob', 'human');
SET LOCAL tokex.revocation_sync = on;
SELECT tokex.revoke_identity('hb-bob', 'offboarded') AS r2 \gset
SELECT is(current_setting('synchronous_commit'), 'remote_apply',
          'with it, the revoking transaction commits with synchronous_commit = remote_apply');

-- a primary is never behind: the bound does not apply
SET LOCAL tokex.max_replica_lag = 1;
SELECT is(tokex.introspect(:'tok')->>'active', 'true', 'on a primary tokex.max_replica_lag changes nothing (introspect)');
SELECT is(tokex.jwt_verify(:'tok')->>'sub', 'hb-alice', '... nor jwt_verify');

SELECT * FROM finish();
ROLLBACK;
