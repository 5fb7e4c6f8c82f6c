-- Revocation: every way to stop an identity, a delegation, a session, a
-- token, a key or a kind of exchange takes effect at the next exchange and
-- introspection, and each revocation is recorded exactly once.
-- Each scenario uses its own people and agents (no savepoints: pgTAP keeps its
-- results in tables that a ROLLBACK TO would erase).
\ir preamble.psql
SELECT plan(84);
SELECT session_user AS me \gset

SELECT tokex.create_key() AS k1 \gset
INSERT INTO tokex.identity (id, kind)
SELECT p, 'human' FROM unnest('{p1,p1b,p2,p3,p4,p5,p6,p7,p8}'::text[]) p
UNION ALL
SELECT a, 'agent' FROM unnest('{a1,a2,b2,a3,h3,a4,a5,a6,a7,a8}'::text[]) a;
INSERT INTO tokex.resource (audience, scopes) VALUES ('cal', '{cal.read,cal.write}'), ('mail', '{mail.read}');
INSERT INTO tokex.delegation (principal, delegate, scopes, max_depth) VALUES
  ('p1', 'a1', '{cal.read}', 1), ('p1b', 'a1', '{cal.read}', 1),
  ('p2', 'a2', '{cal.read,cal.write}', 2), ('a2', 'b2', '{cal.read,cal.write}', 1),
  ('p3', 'a3', '{cal.read}', 1), ('p3', 'h3', '{cal.read}', 1),
  ('p4', 'a4', '{cal.read}', 1), ('p5', 'a5', '{cal.read}', 1), ('p6', 'a6', '{cal.read}', 1),
  ('p7', 'a7', '{cal.read}', 1), ('p8', 'a8', '{cal.read,mail.read}', 1);
INSERT INTO tokex.policy (effect, description) VALUES ('allow', 'within delegations');

CREATE FUNCTION pg_temp.x(subject_token text, actor_token text, aud text DEFAULT 'cal', scope text DEFAULT NULL)
RETURNS jsonb LANGUAGE sql AS $$
  SELECT tokex.exchange(subject_token, 'urn:ietf:params:oauth:token-type:jwt',
                        actor_token, CASE WHEN actor_token IS NOT NULL THEN 'urn:ietf:params:oauth:token-type:jwt' END,
                        audience => aud, scope => scope)
$$;
-- the access token of a granted exchange, or an exception naming the denial
CREATE FUNCTION pg_temp.mint(subject_token text, actor_token text, aud text DEFAULT 'cal')
RETURNS text LANGUAGE plpgsql AS $$
DECLARE r jsonb := pg_temp.x(subject_token, actor_token, aud);
BEGIN
  IF r->>'access_token' IS NULL THEN RAISE EXCEPTION 'setup exchange denied: %', r; END IF;
  RETURN r->>'access_token';
END $$;
CREATE FUNCTION pg_temp.session(principal text, agent text) RETURNS text LANGUAGE sql AS $$
  SELECT tokex.start_session(principal, agent)->>'session_token'
$$;
-- a person's token as an IdP would issue it (tokex-signed, no session)
CREATE FUNCTION pg_temp.person(sub text) RETURNS text LANGUAGE sql AS $$
  SELECT tokex.jwt_sign(jsonb_build_object('sub', sub, 'jti', gen_random_uuid(),
           'iat', floor(extract(epoch FROM now())), 'exp', floor(extract(epoch FROM now())) + 3600))
$$;
CREATE FUNCTION pg_temp.active(tok text) RETURNS boolean LANGUAGE sql AS $$
  SELECT (tokex.introspect(tok)->>'active')::boolean
$$;
CREATE FUNCTION pg_temp.jti(tok text) RETURNS text LANGUAGE sql AS $$
  SELECT (tokex.jwt_decode(tok))->'payload'->>'jti'
$$;

------------------------------------------------------------------------
-- revoke_identity of the subject: exchange refused, earlier tokens inactive
------------------------------------------------------------------------
SELECT pg_temp.session('p1', 'a1') AS s1, pg_temp.session('p1b', 'a1') AS s1b,
       tokex.identity_token('a1') AS a1 \gset
SELECT pg_temp.mint(:'s1', :'a1') AS t1, pg_temp.mint(:'s1b', :'a1') AS t1b \gset
SELECT ok(pg_temp.active(:'t1'), 'before: the person''s token is active');
SELECT lives_ok($$SELECT tokex.revoke_identity('p1', 'left the company')$$, 'revoke_identity(person)');
SELECT is(pg_temp.x(:'s1', :'a1'),
          '{"error": "invalid_grant", "error_description": "identity \"p1\" is offboarded"}'::jsonb,
          'the next exchange for the offboarded person is refused');
SELECT is(tokex.introspect(:'t1'), '{"active": false}'::jsonb, 'tokens minted for them earlier are inactive');
SELECT is(tokex.introspect(:'s1'), '{"active": false}'::jsonb, '... and so is their session token');
SELECT ok(pg_temp.active(:'t1b'), 'the same agent''s token for another person stays active');
SELECT is(pg_temp.x(:'s1b', :'a1')->>'token_type', 'Bearer', '... and the agent still works for them');
SELECT results_eq($$SELECT status, status_reason, tokens_valid_after BETWEEN now() AND clock_timestamp()
                      FROM tokex.identity WHERE id = 'p1'$$,
                  $$VALUES ('offboarded'::text, 'left the company'::text, true)$$,
                  'the person is offboarded, with the reason and tokens_valid_after');
SELECT results_eq($$SELECT kind, target, reason, by_user FROM tokex.revocation WHERE target = 'p1'$$,
                  format($q$VALUES ('identity'::text, 'p1'::text, 'left the company'::text, %L::text)$q$, :'me'),
                  'one revocation row: identity, p1, reason, by_user');

------------------------------------------------------------------------
-- revoke_identity of the actor in the middle of a 2-hop chain
------------------------------------------------------------------------
SELECT pg_temp.session('p2', 'a2') AS s2, tokex.identity_token('a2') AS a2, tokex.identity_token('b2') AS b2 \gset
SELECT pg_temp.mint(:'s2', :'a2') AS t2_1 \gset
SELECT pg_temp.mint(:'t2_1', :'b2') AS t2_2 \gset
SELECT is(tokex.introspect(:'t2_2')->'act', '{"sub": "b2", "act": {"sub": "a2"}}'::jsonb,
          'before: the chain token is active and names both actors');
SELECT is(pg_temp.x(:'t2_2', NULL)->>'token_type', 'Bearer', 'before: the chain token can be re-exchanged');
SELECT lives_ok($$SELECT tokex.revoke_identity('a2', 'compromised')$$, 'revoke_identity(middle agent)');
SELECT is(tokex.introspect(:'t2_2'), '{"active": false}'::jsonb, 'the chain token through it is inactive');
SELECT is(tokex.introspect(:'t2_1'), '{"active": false}'::jsonb, 'its own first-hop token is inactive');
SELECT is(pg_temp.x(:'t2_2', NULL)->>'error', 'invalid_grant', 're-exchanging the chain token is refused');
SELECT is(pg_temp.x(:'t2_2', NULL)->>'error_description', 'identity "a2" is decommissioned',
          '... because the middle agent is decommissioned');
SELECT is((SELECT status FROM tokex.identity WHERE id = 'a2'), 'decommissioned', 'an agent is decommissioned');
SELECT is((SELECT status FROM tokex.identity WHERE id = 'b2'), 'active', 'the last agent itself stays active');

------------------------------------------------------------------------
-- revoke_delegation: that edge stops, other edges do not
------------------------------------------------------------------------
SELECT id AS d_p3_a3 FROM tokex.delegation WHERE principal = 'p3' AND delegate = 'a3' \gset
SELECT pg_temp.session('p3', 'a3') AS s3, pg_temp.session('p3', 'h3') AS s3h, pg_temp.person('p3') AS p3,
       tokex.identity_token('a3') AS a3, tokex.identity_token('h3') AS h3 \gset
SELECT pg_temp.mint(:'s3', :'a3') AS t3_sess, pg_temp.mint(:'p3', :'a3') AS t3_direct,
       pg_temp.mint(:'s3h', :'h3') AS t3_h \gset
SELECT ok(pg_temp.active(:'t3_sess') AND pg_temp.active(:'t3_direct'), 'before: tokens via p3 -> a3 are active');
SELECT lives_ok($$SELECT tokex.revoke_delegation('p3', 'a3', 'project over')$$, 'revoke_delegation');
SELECT is(pg_temp.x(:'p3', :'a3'),
          '{"error": "invalid_grant", "error_description": "no live delegation from \"p3\" to \"a3\""}'::jsonb,
          'an exchange along the revoked edge is refused');
SELECT is(pg_temp.x(:'s3', :'a3')->>'error', 'invalid_grant', '... also with the session over that edge');
SELECT is(tokex.introspect(:'t3_direct'), '{"active": false}'::jsonb, 'a token minted through it (no session) is inactive');
SELECT is(tokex.introspect(:'t3_sess'), '{"active": false}'::jsonb, 'a token minted through it (session) is inactive');
SELECT is(tokex.introspect(:'s3'), '{"active": false}'::jsonb, 'the session over that edge is inactive');
SELECT ok(pg_temp.active(:'t3_h'), 'a token minted through another delegation of the same person stays active');
SELECT is(pg_temp.x(:'p3', :'h3')->>'token_type', 'Bearer', 'exchanges along the other delegation still work');
SELECT results_eq($$SELECT kind, target, reason, by_user FROM tokex.revocation WHERE kind = 'delegation'$$,
                  format($q$VALUES ('delegation'::text, %L::text, 'project over'::text, %L::text)$q$, :'d_p3_a3', :'me'),
                  'one revocation row: delegation, its id, reason, by_user');
SELECT throws_ok($$SELECT tokex.revoke_delegation('p3', 'a3', 'again')$$, 'P0002', NULL,
                 'revoking it again: P0002 (no live delegation)');

------------------------------------------------------------------------
-- revoke_token, by token and by jti
------------------------------------------------------------------------
SELECT pg_temp.session('p4', 'a4') AS s4, tokex.identity_token('a4') AS a4 \gset
SELECT pg_temp.mint(:'s4', :'a4') AS t4a, pg_temp.mint(:'s4', :'a4') AS t4b, pg_temp.mint(:'s4', :'a4') AS t4c \gset
SELECT lives_ok(format('SELECT tokex.revoke_token(%L, %L)', :'t4a', 'leaked in a log'), 'revoke_token(token)');
SELECT is(tokex.introspect(:'t4a'), '{"active": false}'::jsonb, 'the revoked token is inactive');
SELECT ok(pg_temp.active(:'t4b'), 'another token of the same session stays active');
SELECT lives_ok(format('SELECT tokex.revoke_token(%L, %L)', pg_temp.jti(:'t4b'), 'by jti'), 'revoke_token(jti)');
SELECT is(tokex.introspect(:'t4b'), '{"active": false}'::jsonb, 'the token revoked by jti is inactive');
SELECT ok(pg_temp.active(:'t4c'), 'a third token stays active');
SELECT results_eq(format($q$SELECT jti, reason, expires_at FROM tokex.revoked_token WHERE jti IN (%L, %L) ORDER BY reason$q$,
                         pg_temp.jti(:'t4a'), pg_temp.jti(:'t4b')),
                  format($q$VALUES (%L::text, 'by jti'::text, %L::timestamptz), (%L, 'leaked in a log', %L)$q$,
                         pg_temp.jti(:'t4b'), (SELECT expires_at FROM tokex.audit WHERE jti::text = pg_temp.jti(:'t4b')),
                         pg_temp.jti(:'t4a'), (SELECT expires_at FROM tokex.audit WHERE jti::text = pg_temp.jti(:'t4a'))),
                  'revoked_token rows keep jti, reason and the token''s expiry');
SELECT lives_ok(format('SELECT tokex.revoke_token(%L, %L)', :'t4a', 'again'), 're-revoking a token is a no-op');
SELECT lives_ok(format('SELECT tokex.revoke_token(%L, %L)', pg_temp.jti(:'t4b'), 'again'), '... by jti too');
SELECT results_eq(format($q$SELECT kind, target, reason, by_user FROM tokex.revocation WHERE kind = 'token' ORDER BY id$q$),
                  format($q$VALUES ('token'::text, %L::text, 'leaked in a log'::text, %L::text),
                                   ('token', %L, 'by jti', %L)$q$, pg_temp.jti(:'t4a'), :'me', pg_temp.jti(:'t4b'), :'me'),
                  'exactly one revocation row per revoked token; re-revoking writes none');
SELECT is((SELECT reason FROM tokex.revoked_token WHERE jti = pg_temp.jti(:'t4a')), 'leaked in a log',
          're-revoking keeps the first reason');
-- revoking a presented credential stops the exchange
SELECT lives_ok(format('SELECT tokex.revoke_token(%L, %L)', :'a4', 'agent credential leaked'), 'revoke an actor token');
SELECT is(pg_temp.x(:'s4', :'a4'),
          '{"error": "invalid_grant", "error_description": "a presented token has been revoked"}'::jsonb,
          'an exchange presenting the revoked actor token is refused');
SELECT is(pg_temp.x(:'s4', tokex.identity_token('a4'))->>'token_type', 'Bearer', 'a fresh actor token works');
SELECT lives_ok(format('SELECT tokex.revoke_token(%L, %L)', :'s4', 'session token leaked'), 'revoke a session token');
SELECT is(pg_temp.x(:'s4', tokex.identity_token('a4'))->>'error_description', 'a presented token has been revoked',
          'an exchange presenting the revoked session token is refused');

------------------------------------------------------------------------
-- Plain DML acts the same
------------------------------------------------------------------------
-- suspend, then reactivate
SELECT pg_temp.session('p5', 'a5') AS s5, tokex.identity_token('a5') AS a5 \gset
SELECT pg_temp.mint(:'s5', :'a5') AS t5 \gset
UPDATE tokex.identity SET status = 'suspended', status_reason = 'on leave' WHERE id = 'p5';
SELECT is(pg_temp.x(:'s5', :'a5')->>'error_description', 'identity "p5" is suspended',
          'UPDATE identity SET status = suspended: the next exchange is refused');
SELECT is(tokex.introspect(:'t5'), '{"active": false}'::jsonb, '... and earlier tokens are inactive');
SELECT results_eq($$SELECT kind, target, reason, by_user FROM tokex.revocation WHERE target = 'p5'$$,
                  format($q$VALUES ('identity'::text, 'p5'::text, 'on leave'::text, %L::text)$q$, :'me'),
                  'the UPDATE writes one revocation row');
UPDATE tokex.identity SET status = 'active', status_reason = NULL WHERE id = 'p5';
SELECT is((SELECT count(*)::int FROM tokex.revocation WHERE target = 'p5'), 1,
          'setting status back to active writes no revocation row');
SELECT ok(pg_temp.active(:'t5'), 'reactivated: a suspension was not a revocation of tokens');
UPDATE tokex.identity SET attributes = '{"dept": "x"}' WHERE id = 'p5';
SELECT is((SELECT count(*)::int FROM tokex.revocation WHERE target = 'p5'), 1,
          'an UPDATE that changes neither status nor tokens_valid_after writes none');

-- UPDATE delegation SET revoked_at
SELECT pg_temp.session('p6', 'a6') AS s6, tokex.identity_token('a6') AS a6 \gset
SELECT pg_temp.mint(:'s6', :'a6') AS t6 \gset
UPDATE tokex.delegation SET revoked_at = now() WHERE principal = 'p6' AND delegate = 'a6';
SELECT matches(pg_temp.x(:'s6', :'a6')->>'error_description',
               '^the delegation the session was started under \(\d+\) is no longer live$',
               'UPDATE delegation SET revoked_at: the next exchange is refused');
SELECT is(tokex.introspect(:'t6'), '{"active": false}'::jsonb, '... and tokens minted through it are inactive');
SELECT results_eq($$SELECT r.kind, r.target FROM tokex.revocation r JOIN tokex.delegation d ON r.target = d.id::text
                     WHERE d.principal = 'p6'$$,
                  $$VALUES ('delegation'::text, (SELECT id::text FROM tokex.delegation WHERE principal = 'p6'))$$,
                  'the UPDATE writes one revocation row');

-- tokens_valid_after: earlier tokens die, the identity stays active.  (now()
-- is frozen in this transaction while exchanges stamp iat from the clock, so
-- the cut-off is taken from the clock.)
SELECT pg_temp.session('p7', 'a7') AS s7, tokex.identity_token('a7') AS a7 \gset
SELECT pg_temp.mint(:'s7', :'a7') AS t7 \gset
SELECT ok(pg_temp.active(:'t7'), 'before: active');
UPDATE tokex.identity SET tokens_valid_after = clock_timestamp() + interval '1 second' WHERE id = 'p7'
RETURNING tokens_valid_after AS tva7 \gset
SELECT is(tokex.introspect(:'t7'), '{"active": false}'::jsonb, 'tokens_valid_after: an earlier token is inactive');
SELECT is(tokex.introspect(:'s7'), '{"active": false}'::jsonb, '... and so is the earlier session token');
SELECT is(pg_temp.x(:'s7', :'a7')->>'error_description', 'token for "p7" was issued before its revocation',
          '... and cannot be exchanged');
SELECT is((SELECT status FROM tokex.identity WHERE id = 'p7'), 'active', 'the identity stays active');
SELECT ok(pg_temp.active(tokex.jwt_sign(jsonb_build_object('sub', 'p7',
            'iat', ceil(extract(epoch FROM :'tva7'::timestamptz)) + 1,
            'exp', ceil(extract(epoch FROM :'tva7'::timestamptz)) + 600))),
          'a token issued after tokens_valid_after is active');
SELECT results_eq($$SELECT kind, target FROM tokex.revocation WHERE target = 'p7'$$,
                  $$VALUES ('identity'::text, 'p7'::text)$$, 'setting tokens_valid_after writes one revocation row');

------------------------------------------------------------------------
-- Policy changes apply to the next exchange
------------------------------------------------------------------------
SELECT pg_temp.session('p8', 'a8') AS s8, tokex.identity_token('a8') AS a8 \gset
SELECT is(pg_temp.x(:'s8', :'a8', 'mail')->>'scope', 'mail.read', 'before the deny policy: granted');
INSERT INTO tokex.policy (effect, audience, actor_kind, description)
VALUES ('deny', 'mail', 'agent', 'agents stay out of mail') RETURNING id AS deny_id \gset
SELECT is(pg_temp.x(:'s8', :'a8', 'mail'),
          format('{"error": "invalid_grant", "error_description": "denied by policy %s"}', :deny_id)::jsonb,
          'a deny policy INSERTed applies to the next exchange');
SELECT is(pg_temp.x(:'s8', :'a8', 'cal')->>'scope', 'cal.read', 'it does not touch other audiences');
INSERT INTO tokex.policy (effect, subject, scopes) VALUES ('deny', 'p8', '{cal.write}');
UPDATE tokex.delegation SET scopes = '{cal.read,cal.write,mail.read}' WHERE principal = 'p8';
SELECT pg_temp.session('p8', 'a8') AS s8all \gset
SELECT is(pg_temp.x(:'s8all', :'a8', 'cal')->>'scope', 'cal.read',
          'a deny policy with scopes removes those scopes');
UPDATE tokex.policy SET valid = tstzrange(now() - interval '2 days', now() - interval '1 day') WHERE id = :deny_id;
SELECT is(pg_temp.x(:'s8', :'a8', 'mail')->>'scope', 'mail.read', 'an UPDATE that lapses the deny policy applies too');
SELECT is((SELECT count(*)::int FROM tokex.revocation WHERE target IN ('p8', 'a8')), 0, 'policy changes are not revocations');

------------------------------------------------------------------------
-- revoke_key: tokens it signed are inactive
------------------------------------------------------------------------
SELECT pg_temp.session('p1b', 'a1') AS sk1 \gset
SELECT pg_temp.mint(:'sk1', tokex.identity_token('a1')) AS tk1 \gset
SELECT tokex.create_key() AS k2 \gset
SELECT tokex.activate_key(:'k2');
SELECT pg_temp.mint(:'sk1', tokex.identity_token('a1')) AS tk2 \gset
SELECT is((tokex.jwt_decode(:'tk2'))->'header'->>'kid', :'k2', 'after activate_key the new key signs');
SELECT ok(pg_temp.active(:'tk1'), 'a token signed by the retired key is still active');
SELECT lives_ok(format('SELECT tokex.revoke_key(%L)', :'k1'), 'revoke_key(old key)');
SELECT is(tokex.introspect(:'tk1'), '{"active": false}'::jsonb, 'tokens signed by the revoked key are inactive');
SELECT is(pg_temp.x(:'sk1', tokex.identity_token('a1'))->>'error', 'invalid_grant',
          'a session token signed by the revoked key cannot be exchanged');
SELECT ok(pg_temp.active(:'tk2'), 'tokens signed by the new key stay active');
SELECT ok(NOT tokex.jwks()::text LIKE '%' || :'k1' || '%', 'the revoked key is no longer published');
SELECT results_eq($$SELECT kind, target, reason, by_user FROM tokex.revocation WHERE kind = 'key'$$,
                  format($q$VALUES ('key'::text, %L::text, NULL::text, %L::text)$q$, :'k1', :'me'),
                  'one revocation row: key, kid');
SELECT lives_ok(format('SELECT tokex.revoke_key(%L)', :'k1'), 're-revoking a key is a no-op');
SELECT is((SELECT count(*)::int FROM tokex.revocation WHERE kind = 'key'), 1, '... that writes no row');

------------------------------------------------------------------------
-- Every revocation above, exactly once, in order
------------------------------------------------------------------------
SELECT results_eq($$SELECT kind, CASE WHEN kind IN ('identity', 'key') THEN target ELSE '' END FROM tokex.revocation ORDER BY id$$,
                  format($q$VALUES ('identity'::text, 'p1'::text), ('identity', 'a2'), ('delegation', ''),
                     ('token', ''), ('token', ''), ('token', ''), ('token', ''),
                     ('identity', 'p5'), ('delegation', ''), ('identity', 'p7'), ('key', %L)$q$, :'k1'),
                  'tokex.revocation holds exactly one row per revocation');

------------------------------------------------------------------------
-- Errors
------------------------------------------------------------------------
SELECT throws_ok($$SELECT tokex.revoke_identity('nobody', 'x')$$, 'P0002', 'identity "nobody" does not exist',
                 'revoke_identity of an unknown identity: P0002');
SELECT throws_ok($$SELECT tokex.revoke_delegation('p4', 'a1', 'x')$$, 'P0002', 'no live delegation from "p4" to "a1"',
                 'revoke_delegation without a live delegation: P0002');
SELECT throws_ok($$SELECT tokex.revoke_token(NULL, 'x')$$, '22004', NULL, 'revoke_token(NULL): 22004');
SELECT throws_ok($$SELECT tokex.revoke_token('', 'x')$$, '22004', NULL, 'revoke_token(''''): 22004');
-- (jwt_sign always adds a jti now; tokex._sign signs claims as they are)
SELECT throws_ok(format('SELECT tokex.revoke_token(%L, %L)',
                        tokex._sign('{"iss": "https://tokex.test", "sub": "p4", "exp": 4102444800}', 'JWT'), 'x'),
                 '22023', 'the token has no jti', 'revoke_token of a token without jti: 22023');
SELECT throws_ok($$SELECT tokex.revoke_key('no-such-kid')$$, 'P0002', NULL, 'revoke_key of an unknown kid: P0002');

SELECT * FROM finish();
ROLLBACK;
