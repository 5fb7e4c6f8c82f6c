-- Agent sessions and agent credentials: tokex.start_session, the session token
-- as an exchange's subject_token, revoke_session, expiry, identity_token.
\ir preamble.psql
SELECT plan(77);

SELECT tokex.create_key() AS kid \gset
INSERT INTO tokex.identity (id, kind, status) VALUES
  ('alice', 'human', 'active'), ('bob', 'human', 'active'), ('dave', 'human', 'active'),
  ('sus', 'human', 'suspended'),
  ('asst', 'agent', 'active'), ('booker', 'agent', 'active'),
  ('old', 'agent', 'decommissioned'), ('svc', 'service', 'active');
INSERT INTO tokex.resource (audience, scopes) VALUES
  ('cal', '{cal.read,cal.write}'), ('mail', '{mail.read}');
INSERT INTO tokex.delegation (principal, delegate, scopes) VALUES
  ('alice', 'asst', '{cal.read,cal.write,mail.read}');
SELECT currval('tokex.delegation_id_seq') AS d_alice_asst \gset
INSERT INTO tokex.delegation (principal, delegate, scopes, revoked_at) VALUES
  ('bob', 'asst', '{cal.read}', now());                              -- revoked
INSERT INTO tokex.delegation (principal, delegate, scopes, valid_from, valid_until) VALUES
  ('dave', 'asst', '{cal.read}', now() - interval '2 days', now() - interval '1 day');  -- lapsed
INSERT INTO tokex.delegation (principal, delegate, scopes) VALUES
  ('sus', 'asst', '{cal.read}'), ('alice', 'old', '{cal.read}'), ('alice', 'booker', '{cal.read}');
INSERT INTO tokex.policy (effect) VALUES ('allow');

CREATE FUNCTION pg_temp.x(subject_token text, actor_token text, aud text, scope text DEFAULT NULL)
RETURNS jsonb LANGUAGE sql AS $$
  SELECT tokex.exchange(subject_token, 'urn:ietf:params:oauth:token-type:jwt',
                        actor_token, CASE WHEN actor_token IS NOT NULL THEN 'urn:ietf:params:oauth:token-type:jwt' END,
                        audience => aud, scope => scope)
$$;
CREATE FUNCTION pg_temp.claims(tok text) RETURNS jsonb LANGUAGE sql AS $$
  SELECT (tokex.jwt_decode(tok))->'payload'
$$;

------------------------------------------------------------------------
-- start_session: the response and the session token's claims
------------------------------------------------------------------------
SELECT tokex.start_session('alice', 'asst', '{cal.write,cal.read,cal.read}', '30 minutes') AS s \gset
SELECT (:'s'::jsonb)->>'session_token' AS st, (:'s'::jsonb)->>'session_id' AS sid \gset
SELECT tokex.identity_token('asst') AS asst_tok, tokex.identity_token('booker') AS booker_tok \gset

SELECT is((SELECT array_agg(k ORDER BY k) FROM jsonb_object_keys(:'s'::jsonb) k),
          '{expires_at,session_id,session_token}'::text[],
          'start_session returns exactly session_token, session_id, expires_at');
SELECT ok(:'sid' ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$', 'session_id is a uuid');
SELECT ok(((:'s'::jsonb)->>'expires_at')::timestamptz BETWEEN clock_timestamp() + interval '29 minutes 55 seconds'
                                                          AND clock_timestamp() + interval '30 minutes',
          'expires_at is the time of the call + ttl');
SELECT lives_ok(format('SELECT tokex.jwt_verify(%L)', :'st'), 'the session token verifies');
SELECT is(pg_temp.claims(:'st')->>'iss', 'https://tokex.test', 'session token iss is tokex.issuer');
SELECT is(pg_temp.claims(:'st')->>'sub', 'alice', 'session token sub = principal');
SELECT is(pg_temp.claims(:'st')->'may_act', '{"sub": "asst", "iss": "https://tokex.test"}'::jsonb,
          'session token may_act = {sub: agent, iss: tokex.issuer}');
SELECT is(pg_temp.claims(:'st')->>'sid', :'sid', 'session token sid = session_id');
SELECT is(pg_temp.claims(:'st')->>'scope', 'cal.read cal.write',
          'session token scope = requested scopes (deduplicated)');
SELECT is((pg_temp.claims(:'st')->>'exp')::bigint,
          floor(extract(epoch FROM ((:'s'::jsonb)->>'expires_at')::timestamptz))::bigint,
          'session token exp = expires_at');
SELECT ok(pg_temp.claims(:'st') ? 'jti', 'session token has a jti');
SELECT results_eq(
  format($q$SELECT principal, agent, delegation_id, scopes, expires_at FROM tokex.session WHERE id = %L$q$, :'sid'),
  format($q$VALUES ('alice'::text, 'asst'::text, %s::bigint, '{cal.read,cal.write}'::text[], %L::timestamptz)$q$,
         :d_alice_asst, (:'s'::jsonb)->>'expires_at'),
  'the session row names principal, agent, its delegation, scopes, expiry');

-- NULL scopes: the session gets the delegation's scopes
SELECT tokex.start_session('alice', 'asst') AS s_all \gset
SELECT is(pg_temp.claims((:'s_all'::jsonb)->>'session_token')->>'scope', 'cal.read cal.write mail.read',
          'scopes NULL: session token scope = the delegation''s scopes');
SELECT is((SELECT scopes FROM tokex.session WHERE id = ((:'s_all'::jsonb)->>'session_id')::uuid),
          '{cal.read,cal.write,mail.read}'::text[], 'scopes NULL: session row scopes = the delegation''s');
SELECT is(pg_temp.x((:'s_all'::jsonb)->>'session_token', :'asst_tok', 'mail')->>'scope', 'mail.read',
          'scopes NULL: an exchange within the delegation is granted');
SELECT ok(((:'s_all'::jsonb)->>'expires_at')::timestamptz BETWEEN clock_timestamp() + interval '59 minutes 55 seconds'
                                                              AND clock_timestamp() + interval '1 hour',
          'default ttl is 1 hour');

-- a delegation ending before the ttl caps the session
INSERT INTO tokex.delegation (principal, delegate, scopes, valid_until) VALUES
  ('bob', 'booker', '{cal.read}', now() + interval '10 minutes');
SELECT is((tokex.start_session('bob', 'booker', NULL, '1 hour')->>'expires_at')::timestamptz,
          now() + interval '10 minutes', 'a session never outlives its delegation');

------------------------------------------------------------------------
-- start_session: refusals
------------------------------------------------------------------------
SELECT throws_ok($$SELECT tokex.start_session('alice', 'asst', '{cal.read,payments.send}')$$,
                 '28000', NULL, 'a scope outside the delegation is refused (28000)');
SELECT throws_ok($$SELECT tokex.start_session('alice', 'booker', '{cal.write}')$$,
                 '28000', NULL, 'a scope outside that agent''s delegation is refused');
SELECT throws_ok($$SELECT tokex.start_session('alice', 'svc')$$,
                 '28000', 'no live delegation from "alice" to "svc"', 'no delegation at all: refused');
SELECT throws_ok($$SELECT tokex.start_session('bob', 'asst')$$,
                 '28000', 'no live delegation from "bob" to "asst"', 'a revoked delegation: refused');
SELECT throws_ok($$SELECT tokex.start_session('dave', 'asst')$$,
                 '28000', 'no live delegation from "dave" to "asst"', 'a lapsed delegation: refused');
SELECT throws_ok($$SELECT tokex.start_session('sus', 'asst')$$,
                 '28000', NULL, 'a suspended principal: refused');
SELECT throws_ok($$SELECT tokex.start_session('alice', 'old')$$,
                 '28000', NULL, 'a decommissioned agent: refused');
SELECT throws_ok($$SELECT tokex.start_session('alice', 'nobody')$$,
                 '28000', NULL, 'an unknown agent: refused');
SELECT throws_ok($$SELECT tokex.start_session('alice', 'asst', NULL, '0 seconds')$$,
                 '22023', NULL, 'ttl 0: 22023');
SELECT throws_ok($$SELECT tokex.start_session('alice', 'asst', NULL, '-5 minutes')$$,
                 '22023', NULL, 'negative ttl: 22023');
SELECT throws_ok($$SELECT tokex.start_session('alice', 'asst', NULL, '1 day 1 second')$$,
                 '22023', NULL, 'ttl over 1 day: 22023');
SELECT lives_ok($$SELECT tokex.start_session('alice', 'asst', '{cal.read}', '1 day')$$, 'ttl of exactly 1 day is allowed');
SELECT throws_ok($$SELECT tokex.start_session(NULL, 'asst')$$, '22004', NULL, 'NULL principal: 22004');
SELECT is((SELECT count(*)::int FROM tokex.session WHERE principal IN ('bob', 'dave', 'sus') AND agent = 'asst'),
          0, 'refused sessions leave no session row');

------------------------------------------------------------------------
-- The session token as subject_token
------------------------------------------------------------------------
SELECT pg_temp.x(:'st', :'asst_tok', 'cal', 'cal.read') AS r1 \gset
SELECT (:'r1'::jsonb)->>'access_token' AS t1 \gset
SELECT is((:'r1'::jsonb) - 'access_token',
          '{"scope": "cal.read", "expires_in": 300, "token_type": "Bearer",
            "issued_token_type": "urn:ietf:params:oauth:token-type:access_token"}'::jsonb,
          'session token + agent token: granted');
SELECT is(pg_temp.claims(:'t1')->>'sid', :'sid', 'the minted token carries the session''s sid');
SELECT is(pg_temp.claims(:'t1')->>'sub', 'alice', 'the minted token names the person in sub');
SELECT is(pg_temp.claims(:'t1')->'act', '{"sub": "asst"}'::jsonb, 'the minted token names the agent in act');
SELECT ok(NOT pg_temp.claims(:'t1') ? 'may_act', 'the minted token does not carry may_act');
SELECT is((SELECT subject_sid FROM tokex.audit WHERE jti::text = pg_temp.claims(:'t1')->>'jti'), :'sid',
          'the audit row records the session');
SELECT is(pg_temp.x(:'st', :'asst_tok', 'cal')->>'scope', 'cal.read cal.write',
          'no scope requested: the session''s scopes are granted');
SELECT is(pg_temp.x(:'st', :'asst_tok', 'mail', 'mail.read')->>'error', 'invalid_scope',
          'a scope in the delegation but outside the session is refused');

SELECT pg_temp.x(:'st', :'booker_tok', 'cal', 'cal.read') AS r_booker \gset
SELECT is((:'r_booker'::jsonb)->>'error', 'invalid_grant', 'another agent (even one alice delegated to) is refused');
SELECT matches((:'r_booker'::jsonb)->>'error_description', 'may_act', '... because of may_act');
SELECT is(pg_temp.x(:'st', NULL, 'cal')->>'error', 'invalid_request',
          'a session token without an actor_token is refused');

-- revoke_session: the next exchange and every token minted from it stop
SELECT pg_temp.x(:'st', :'asst_tok', 'cal', 'cal.write') AS r2 \gset
SELECT (:'r2'::jsonb)->>'access_token' AS t2 \gset
SELECT is(tokex.introspect(:'t2')->>'active', 'true', 'a token minted from the session is active before revocation');
SELECT lives_ok(format('SELECT tokex.revoke_session(%L, %L)', :'sid', 'user signed out'), 'revoke_session');
SELECT is(pg_temp.x(:'st', :'asst_tok', 'cal', 'cal.read'),
          '{"error": "invalid_grant", "error_description": "the session has been revoked"}'::jsonb,
          'after revoke_session the exchange is invalid_grant: the session has been revoked');
SELECT is(tokex.introspect(:'t2'), '{"active": false}'::jsonb, 'a token minted from the revoked session is inactive');
SELECT is(tokex.introspect(:'t1'), '{"active": false}'::jsonb, '... every one of them');
SELECT is(tokex.introspect(:'st'), '{"active": false}'::jsonb, 'the revoked session token itself is inactive');
SELECT results_eq(format($q$SELECT kind, target, reason FROM tokex.revocation WHERE target = %L$q$, :'sid'),
                  format($q$VALUES ('session'::text, %L::text, 'user signed out'::text)$q$, :'sid'),
                  'revoke_session writes one revocation row');
SELECT ok((SELECT revoked_at IS NOT NULL AND revoke_reason = 'user signed out' FROM tokex.session WHERE id = :'sid'),
          'the session row is marked revoked');
SELECT lives_ok(format('SELECT tokex.revoke_session(%L, %L)', :'sid', 'again'), 'revoking a revoked session is a no-op');
SELECT is((SELECT count(*)::int FROM tokex.revocation WHERE target = :'sid'), 1, '... and writes no second row');
SELECT throws_ok($$SELECT tokex.revoke_session('00000000-0000-4000-8000-000000000000', 'x')$$,
                 'P0002', NULL, 'revoking an unknown session: P0002');

-- an expired session
SELECT tokex.start_session('alice', 'asst', '{cal.read}', '10 minutes') AS s3 \gset
SELECT (:'s3'::jsonb)->>'session_token' AS st3, (:'s3'::jsonb)->>'session_id' AS sid3 \gset
SELECT (pg_temp.x(:'st3', :'asst_tok', 'cal'))->>'access_token' AS t3 \gset
SELECT is(tokex.introspect(:'t3')->>'active', 'true', 'a token from a live session is active');
UPDATE tokex.session SET created_at = now() - interval '2 hours', expires_at = now() - interval '1 hour'
 WHERE id = :'sid3';
SELECT is(pg_temp.x(:'st3', :'asst_tok', 'cal'),
          '{"error": "invalid_grant", "error_description": "the session has expired"}'::jsonb,
          'an expired session: invalid_grant, the session has expired (its JWT has not)');
SELECT is(tokex.introspect(:'t3'), '{"active": false}'::jsonb, 'tokens minted from an expired session are inactive');
SELECT is(tokex.introspect(:'st3'), '{"active": false}'::jsonb, 'the expired session''s token is inactive');
SELECT is((SELECT count(*)::int FROM tokex.revocation WHERE target = :'sid3'), 0, 'expiry is not a revocation');

-- a session is bound to the delegation it was started under
INSERT INTO tokex.identity (id, kind) VALUES ('erin', 'human'), ('frank', 'human'), ('ax', 'agent');
INSERT INTO tokex.delegation (principal, delegate, scopes) VALUES ('erin', 'ax', '{cal.read}');
INSERT INTO tokex.delegation (principal, delegate, scopes, valid_from) VALUES
  ('frank', 'ax', '{cal.read}', now() - interval '2 days');
SELECT tokex.start_session('erin', 'ax', '{cal.read}')->>'session_token' AS st_e,
       tokex.start_session('frank', 'ax', '{cal.read}')->>'session_token' AS st_f,
       tokex.identity_token('ax') AS ax_tok \gset
-- erin re-grants, then the session's own delegation is revoked by plain DML
INSERT INTO tokex.delegation (principal, delegate, scopes) VALUES ('erin', 'ax', '{cal.read}');
UPDATE tokex.delegation SET revoked_at = now()
 WHERE id = (SELECT delegation_id FROM tokex.session WHERE principal = 'erin');
SELECT is(tokex.introspect(:'st_e'), '{"active": false}'::jsonb,
          'a session whose delegation is revoked is inactive, even with another live delegation for the pair');
SELECT is(pg_temp.x(:'st_e', :'ax_tok', 'cal')->>'error', 'invalid_grant',
          '... and cannot be exchanged (the minted token would introspect inactive at once)');
-- frank's delegation lapses (valid_until passes) during the session
UPDATE tokex.delegation SET valid_until = now() - interval '1 minute' WHERE principal = 'frank';
SELECT is(pg_temp.x(:'st_f', :'ax_tok', 'cal')->>'error', 'invalid_grant',
          'a session whose delegation has lapsed cannot be exchanged');
SELECT is(tokex.introspect(:'st_f'), '{"active": false}'::jsonb, '... and its session token is inactive');

------------------------------------------------------------------------
-- identity_token: actor credentials for agents and services only
------------------------------------------------------------------------
SELECT tokex.identity_token('asst', '10 minutes') AS it \gset
SELECT lives_ok(format('SELECT tokex.jwt_verify(%L)', :'it'), 'identity_token verifies');
SELECT is(pg_temp.claims(:'it')->>'sub', 'asst', 'identity_token sub = the agent');
SELECT is(pg_temp.claims(:'it')->>'iss', 'https://tokex.test', 'identity_token iss = tokex.issuer');
SELECT ok(pg_temp.claims(:'it')->>'jti' ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$',
          'identity_token has a uuid jti');
SELECT isnt(pg_temp.claims(:'it')->>'jti', pg_temp.claims(tokex.identity_token('asst', '10 minutes'))->>'jti',
            'every identity_token has its own jti');
SELECT is((pg_temp.claims(:'it')->>'exp')::bigint - (pg_temp.claims(:'it')->>'iat')::bigint, 600::bigint,
          'identity_token exp = iat + ttl');
SELECT ok((pg_temp.claims(:'it')->>'iat')::bigint BETWEEN floor(extract(epoch FROM now()))::bigint
                                                       AND ceil(extract(epoch FROM clock_timestamp()))::bigint,
          'identity_token iat = the time of the call');
SELECT is((pg_temp.claims(tokex.identity_token('asst'))->>'exp')::bigint
            - (pg_temp.claims(tokex.identity_token('asst'))->>'iat')::bigint, 900::bigint,
          'identity_token default ttl is 15 minutes');
SELECT ok(NOT pg_temp.claims(:'it') ?| '{may_act,sid,act,scope}', 'identity_token carries no delegation claims');
SELECT lives_ok($$SELECT tokex.identity_token('svc')$$, 'a service gets an identity token');
SELECT throws_ok($$SELECT tokex.identity_token('alice')$$, '28000', NULL, 'a human gets no identity token');
SELECT throws_ok($$SELECT tokex.identity_token('old')$$, '28000', NULL, 'a decommissioned agent gets none');
SELECT throws_ok($$SELECT tokex.identity_token('nobody')$$, '28000', NULL, 'an unknown identity gets none');
SELECT throws_ok($$SELECT tokex.identity_token('asst', '0 seconds')$$, '22023', NULL, 'identity_token ttl 0: 22023');
SELECT throws_ok($$SELECT tokex.identity_token('asst', '25 hours')$$, '22023', NULL, 'identity_token ttl > 1 day: 22023');

SELECT * FROM finish();
ROLLBACK;
