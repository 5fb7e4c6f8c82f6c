-- The audit trail is evidence: auditors read it through tokex.audit and
-- nothing else, nobody (not even the owner) updates, deletes or truncates
-- it, the application tier exchanges but does not administer, and no row
-- holds a token, only its SHA-256.
\ir preamble.psql
SELECT plan(47);

SELECT tokex.create_key() AS kid \gset
INSERT INTO tokex.identity (id, kind) VALUES ('alice', 'human'), ('agent-a', 'agent');
INSERT INTO tokex.resource (audience, scopes) VALUES ('calendar', '{calendar.read}');
INSERT INTO tokex.delegation (principal, delegate, scopes) VALUES ('alice', 'agent-a', '{calendar.read}');
INSERT INTO tokex.policy (effect, subject_kind, actor_kind) VALUES ('allow', 'human', 'agent');

CREATE FUNCTION pg_temp.tok(sub text, extra jsonb DEFAULT '{}') RETURNS text LANGUAGE sql AS $$
  SELECT tokex.jwt_sign(jsonb_build_object('sub', sub, 'iat', floor(extract(epoch FROM now()))::bigint,
                                           'exp', floor(extract(epoch FROM now()))::bigint + 7200) || extra)
$$;

\ir as_role.psql
-- the SQLSTATE of q run as the current user, or 'ok'
CREATE FUNCTION pg_temp.sqlstate_of(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE q;
  RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
  RETURN SQLSTATE;
END
$$;

SELECT pg_temp.tok('alice', '{"may_act": {"sub": "agent-a"}}') AS st, pg_temp.tok('agent-a') AS ta \gset
SELECT format($$SELECT tokex.exchange(%L, 'urn:ietf:params:oauth:token-type:jwt', %L,
                                      'urn:ietf:params:oauth:token-type:jwt', audience => 'calendar')::text$$,
              :'st', :'ta') AS xq \gset
SELECT format($$SELECT tokex.exchange(%L, 'urn:ietf:params:oauth:token-type:jwt', %L,
                                      'urn:ietf:params:oauth:token-type:jwt', audience => 'nowhere')::text$$,
              :'st', :'ta') AS xq_denied \gset

------------------------------------------------------------------------
-- tokex_app: exchanges, does not administer
------------------------------------------------------------------------
SELECT pg_temp.as_role('tokex_app', :'xq') AS r_app \gset
SELECT ok((:'r_app'::jsonb) ? 'access_token', 'tokex_app can execute tokex.exchange (granted)');
SELECT is((SELECT count(*) FROM tokex.audit_event WHERE jti::text = (tokex.jwt_decode((:'r_app'::jsonb)->>'access_token')->'payload'->>'jti')),
          1::bigint, '... and the exchange is audited although tokex_app cannot write the audit table');
SELECT pg_temp.as_role('tokex_app', :'xq_denied') AS r_app_denied \gset
SELECT is((:'r_app_denied'::jsonb)->>'error', 'invalid_target', 'tokex_app gets a denial as a response, not an error');
SELECT is(pg_temp.as_role('tokex_app', $$INSERT INTO tokex.identity (id, kind) VALUES ('mallory', 'agent') RETURNING id$$),
          'ERROR 42501', 'tokex_app cannot insert into tokex.identity');
SELECT is(pg_temp.as_role('tokex_app', $$UPDATE tokex.identity SET status = 'active' RETURNING id$$),
          'ERROR 42501', 'tokex_app cannot update tokex.identity');
SELECT is(pg_temp.as_role('tokex_app', $$INSERT INTO tokex.delegation (principal, delegate, scopes) VALUES ('alice', 'agent-a', '{x}') RETURNING id$$),
          'ERROR 42501', 'tokex_app cannot insert a delegation');
SELECT is(pg_temp.as_role('tokex_app', $$INSERT INTO tokex.policy (effect) VALUES ('allow') RETURNING id$$),
          'ERROR 42501', 'tokex_app cannot insert a policy');
SELECT is(pg_temp.as_role('tokex_app', format($$INSERT INTO tokex.audit_event (exchange_id, decision) VALUES (%L, 'granted') RETURNING exchange_id$$,
                                              gen_random_uuid())),
          'ERROR 42501', 'tokex_app cannot forge an audit row');
SELECT is(pg_temp.as_role('tokex_app', $$SELECT count(*) FROM tokex.audit_event$$),
          'ERROR 42501', 'tokex_app cannot read tokex.audit_event');
SELECT is(pg_temp.as_role('tokex_app', $$SELECT tokex.jwt_sign('{"sub": "alice"}')$$),
          'ERROR 42501', 'tokex_app cannot mint arbitrary tokens (jwt_sign is admin only)');
SELECT is(pg_temp.as_role('tokex_app', $$SELECT count(private_key) FROM tokex.key$$),
          'ERROR 42501', 'tokex_app cannot read private keys');

------------------------------------------------------------------------
-- tokex_auditor: reads tokex.audit, nothing else
------------------------------------------------------------------------
SELECT pg_temp.as_role('tokex_auditor', :'xq') AS r_aud_x \gset
SELECT is(:'r_aud_x'::text, 'ERROR 42501', 'tokex_auditor cannot execute tokex.exchange');
SELECT is(pg_temp.as_role('tokex_auditor', $$SELECT count(*) FROM tokex.audit$$),
          (SELECT count(*)::text FROM tokex.audit_event), 'tokex_auditor can SELECT tokex.audit and sees every row');
SELECT is(pg_temp.as_role('tokex_auditor', $$SELECT string_agg(decision || '/' || coalesce(error, '-'), ',' ORDER BY at) FROM tokex.audit WHERE operation = 'exchange'$$),
          'granted/-,denied/invalid_target', 'tokex_auditor sees the granted and the denied exchange');
SELECT is(pg_temp.as_role('tokex_auditor', $$SELECT count(*) FROM tokex.audit_event$$),
          'ERROR 42501', 'tokex_auditor cannot SELECT tokex.audit_event (token hashes, raw table)');
SELECT is(pg_temp.as_role('tokex_auditor', $$SELECT count(*) FROM tokex.identity$$),
          'ERROR 42501', 'tokex_auditor cannot SELECT tokex.identity');
SELECT is(pg_temp.as_role('tokex_auditor', $$SELECT count(*) FROM tokex.delegation$$),
          'ERROR 42501', 'tokex_auditor cannot SELECT tokex.delegation');
SELECT is(pg_temp.as_role('tokex_auditor', $$SELECT count(*) FROM tokex.key$$),
          'ERROR 42501', 'tokex_auditor cannot SELECT tokex.key');
SELECT is(pg_temp.as_role('tokex_auditor', $$UPDATE tokex.audit SET reason = 'x' RETURNING 1$$),
          'ERROR 42501', 'tokex_auditor cannot UPDATE through tokex.audit');
SELECT is(pg_temp.as_role('tokex_auditor', $$DELETE FROM tokex.audit RETURNING 1$$),
          'ERROR 42501', 'tokex_auditor cannot DELETE through tokex.audit');
SELECT is(pg_temp.as_role('tokex_auditor', $$SELECT tokex.jwt_sign('{"sub": "alice"}')$$),
          'ERROR 42501', 'tokex_auditor cannot execute jwt_sign');
SELECT ok(NOT has_column_privilege('tokex_auditor', 'tokex.audit_event', 'subject_token_sha256', 'SELECT'),
          'tokex_auditor has no privilege on the token hash column');

------------------------------------------------------------------------
-- Append-only: nobody updates, deletes or truncates tokex.audit_event
------------------------------------------------------------------------
SELECT count(*) AS n_before FROM tokex.audit_event \gset
SELECT is(current_user::text, (SELECT tableowner::text FROM pg_tables WHERE schemaname = 'tokex' AND tablename = 'audit_event'),
          'the rest of this section runs as the owner of tokex.audit_event');
SELECT throws_ok($$UPDATE tokex.audit_event SET decision = 'granted', error = NULL, reason = NULL WHERE decision = 'denied'$$,
                 '42501', 'audit_event is append-only', 'the owner cannot UPDATE tokex.audit_event (42501)');
SELECT throws_ok($$UPDATE tokex.audit_event SET reason = reason WHERE false$$,
                 '42501', NULL, '... not even an UPDATE that touches no row');
SELECT throws_ok($$DELETE FROM tokex.audit_event$$,
                 '42501', 'audit_event is append-only', 'the owner cannot DELETE from tokex.audit_event (42501)');
SELECT throws_ok($$DELETE FROM tokex.audit_event WHERE decision = 'denied'$$,
                 '42501', NULL, '... not even selected rows');
SELECT throws_ok($$TRUNCATE tokex.audit_event CASCADE$$,
                 '42501', NULL, 'the owner cannot TRUNCATE tokex.audit_event (42501)');
SELECT throws_ok($$TRUNCATE tokex.audit_event, tokex.token_use$$,
                 '42501', NULL, 'the owner cannot TRUNCATE audit_event together with token_use (42501)');
SELECT isnt(pg_temp.sqlstate_of($$TRUNCATE tokex.audit_event$$), 'ok', 'a plain TRUNCATE tokex.audit_event fails too');
SELECT throws_ok($$UPDATE tokex.audit SET reason = 'edited'$$,
                 '42501', NULL, 'UPDATE through the tokex.audit view is refused (42501)');
SELECT throws_ok($$DELETE FROM tokex.audit$$,
                 '42501', NULL, 'DELETE through the tokex.audit view is refused (42501)');
SELECT throws_ok($$MERGE INTO tokex.audit_event a USING (SELECT 1) s ON true WHEN MATCHED THEN DELETE$$,
                 '42501', NULL, 'MERGE ... DELETE is refused (42501)');
SELECT is(pg_temp.as_role('tokex_admin', $$UPDATE tokex.audit_event SET reason = 'x' RETURNING 1$$),
          'ERROR 42501', 'tokex_admin cannot UPDATE tokex.audit_event');
SELECT is(pg_temp.as_role('tokex_admin', $$DELETE FROM tokex.audit_event RETURNING 1$$),
          'ERROR 42501', 'tokex_admin cannot DELETE from tokex.audit_event');
SELECT is(pg_temp.as_role('tokex_admin', $$TRUNCATE tokex.audit_event CASCADE$$),
          'ERROR 42501', 'tokex_admin cannot TRUNCATE tokex.audit_event');
SELECT is(pg_temp.as_role('tokex_app', $$DELETE FROM tokex.audit_event RETURNING 1$$),
          'ERROR 42501', 'tokex_app cannot DELETE from tokex.audit_event');
SELECT is((SELECT count(*) FROM tokex.audit_event), :n_before::bigint, 'every audit row is still there');
SELECT is((SELECT count(*) FROM tokex.audit_event WHERE reason IN ('edited', 'x')), 0::bigint, 'and none was edited');
SELECT lives_ok(:'xq', 'appending still works: a new exchange');
SELECT is((SELECT count(*) FROM tokex.audit_event), :n_before::bigint + 1, '... adds its row');

------------------------------------------------------------------------
-- No token in the audit: only its SHA-256
------------------------------------------------------------------------
SELECT tokex.exchange(:'st', 'urn:ietf:params:oauth:token-type:jwt', :'ta', 'urn:ietf:params:oauth:token-type:jwt',
                      audience => 'calendar') AS r \gset
SELECT (tokex.jwt_decode((:'r'::jsonb)->>'access_token')->'payload'->>'jti')::uuid AS jti \gset
SELECT is((SELECT subject_token_sha256 FROM tokex.audit_event WHERE jti = :'jti'), digest(:'st', 'sha256'),
          'subject_token_sha256 = SHA-256 of the subject token (pgcrypto digest)');
SELECT is((SELECT subject_token_sha256 FROM tokex.audit_event WHERE jti = :'jti'), sha256(convert_to(:'st', 'UTF8')),
          '... = the sha256() builtin of its bytes');
SELECT is((SELECT actor_token_sha256 FROM tokex.audit_event WHERE jti = :'jti'), sha256(convert_to(:'ta', 'UTF8')),
          'actor_token_sha256 = SHA-256 of the actor token');
SELECT is((SELECT count(*) FROM tokex.audit_event a
            WHERE strpos(to_jsonb(a)::text, split_part(:'st', '.', 3)) > 0
               OR strpos(to_jsonb(a)::text, split_part(:'ta', '.', 3)) > 0
               OR strpos(to_jsonb(a)::text, split_part((:'r'::jsonb)->>'access_token', '.', 3)) > 0
               OR strpos(to_jsonb(a)::text, split_part(:'st', '.', 2)) > 0),
          0::bigint, 'no audit row holds the subject, actor or minted token (nor their signatures)');
SELECT is((SELECT count(*) FROM tokex.audit_event a
            WHERE strpos(to_jsonb(a)::text, 'eyJ') > 0), 0::bigint, 'no audit row holds anything that looks like a JWS');
SELECT is((SELECT subject_token_sha256 FROM tokex.audit_event WHERE decision = 'denied' AND error = 'invalid_target' ORDER BY at LIMIT 1),
          digest(:'st', 'sha256'), 'a denied row records the subject token''s hash too');

SELECT * FROM finish();
ROLLBACK;
