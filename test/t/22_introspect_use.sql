-- Introspection (RFC 7662) of tokex's and trusted issuers' tokens, and
-- downstream uses (record_use, token_use, audit_trail) with their privileges.
\ir preamble.psql
SELECT plan(67);

SELECT tokex.create_key() AS kid \gset
INSERT INTO tokex.identity (id, kind) VALUES
  ('alice', 'human'), ('asst', 'agent'), ('booker', 'agent');
INSERT INTO tokex.resource (audience, scopes) VALUES ('cal', '{cal.read,cal.write}');
INSERT INTO tokex.delegation (principal, delegate, scopes, max_depth) VALUES
  ('alice', 'asst', '{cal.read,cal.write}', 2), ('asst', 'booker', '{cal.read,cal.write}', 1);
INSERT INTO tokex.policy (effect) VALUES ('allow');

CREATE FUNCTION pg_temp.x(subject_token text, actor_token text, scope text DEFAULT NULL)
RETURNS jsonb LANGUAGE sql AS $$
  SELECT tokex.exchange(subject_token, 'urn:ietf:params:oauth:token-type:jwt',
                        actor_token, CASE WHEN actor_token IS NOT NULL THEN 'urn:ietf:params:oauth:token-type:jwt' END,
                        audience => 'cal', scope => scope)
$$;
CREATE FUNCTION pg_temp.claims(tok text) RETURNS jsonb LANGUAGE sql AS $$
  SELECT (tokex.jwt_decode(tok))->'payload'
$$;
CREATE FUNCTION pg_temp.keys(j jsonb) RETURNS text[] LANGUAGE sql AS $$
  SELECT array_agg(k ORDER BY k) FROM jsonb_object_keys(j) k
$$;
CREATE FUNCTION pg_temp.b64u(b bytea) RETURNS text LANGUAGE sql IMMUTABLE AS $$
  SELECT rtrim(translate(replace(encode(b, 'base64'), E'\n', ''), '+/', '-_'), '=')
$$;
-- a compact JWS as an external IdP with a shared HS256 secret would issue it
CREATE FUNCTION pg_temp.hs256(claims jsonb, secret bytea, header jsonb DEFAULT '{"alg": "HS256", "typ": "JWT"}')
RETURNS text LANGUAGE sql AS $$
  SELECT si || '.' || pg_temp.b64u(hmac(convert_to(si, 'UTF8'), secret, 'sha256'))
    FROM (SELECT pg_temp.b64u(convert_to(header::text, 'UTF8')) || '.'
                 || pg_temp.b64u(convert_to(claims::text, 'UTF8')) AS si) x
$$;
-- flip one character in the middle of the signature (all 6 bits significant there)
CREATE FUNCTION pg_temp.tamper(tok text) RETURNS text LANGUAGE sql AS $$
  SELECT overlay(tok PLACING CASE WHEN substr(tok, length(tok) - 20, 1) = 'A' THEN 'B' ELSE 'A' END
                 FROM length(tok) - 20 FOR 1)
$$;
CREATE FUNCTION pg_temp.epoch(delta interval DEFAULT '0') RETURNS bigint LANGUAGE sql AS $$
  SELECT floor(extract(epoch FROM clock_timestamp() + delta))::bigint
$$;
-- run a statement as another role (pgTAP itself keeps running as the caller)
CREATE FUNCTION pg_temp.as_role(r text, q text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  PERFORM set_config('role', r, true);
  EXECUTE q;
  PERFORM set_config('role', 'none', true);
END $$;

-- a session, a first hop and a two-hop chain
SELECT tokex.start_session('alice', 'asst', '{cal.read,cal.write}') AS s \gset
SELECT (:'s'::jsonb)->>'session_token' AS st, (:'s'::jsonb)->>'session_id' AS sid \gset
SELECT tokex.identity_token('asst') AS asst_tok, tokex.identity_token('booker') AS booker_tok \gset
SELECT pg_temp.x(:'st', :'asst_tok')->>'access_token' AS t1 \gset
SELECT pg_temp.x(:'t1', :'booker_tok', 'cal.write')->>'access_token' AS t2 \gset
SELECT tokex.introspect(:'t2') AS i2 \gset

------------------------------------------------------------------------
-- Active responses carry exactly the documented members
------------------------------------------------------------------------
SELECT is(pg_temp.keys(:'i2'),
          '{act,active,aud,client_id,exp,iat,iss,jti,nbf,scope,sid,sub,token_type}'::text[],
          'a chain token introspects with exactly the documented members');
SELECT is((:'i2'::jsonb)->'active', 'true'::jsonb, 'active is the JSON boolean true');
SELECT is((:'i2'::jsonb)->>'token_type', 'Bearer', 'token_type Bearer');
SELECT is((:'i2'::jsonb)->>'iss', 'https://tokex.test', 'iss');
SELECT is((:'i2'::jsonb)->>'sub', 'alice', 'sub is the person');
SELECT is((:'i2'::jsonb)->'act', '{"sub": "booker", "act": {"sub": "asst"}}'::jsonb,
          'act is the whole chain, current actor outermost');
SELECT is((:'i2'::jsonb)->>'aud', 'cal', 'aud');
SELECT is((:'i2'::jsonb)->>'scope', 'cal.write', 'scope');
SELECT is((:'i2'::jsonb)->>'client_id', 'booker', 'client_id (the current actor when none was given)');
SELECT is((:'i2'::jsonb)->>'sid', :'sid', 'sid of the session the chain started from');
SELECT is((:'i2'::jsonb) - 'active' - 'token_type', pg_temp.claims(:'t2'),
          'every other member is the token''s claim, unchanged (exp, iat, nbf, jti included)');
SELECT is(jsonb_typeof((:'i2'::jsonb)->'exp') || jsonb_typeof((:'i2'::jsonb)->'iat') || jsonb_typeof((:'i2'::jsonb)->'nbf'),
          'numbernumbernumber', 'exp, iat, nbf are NumericDates');
SELECT is((SELECT jti::text FROM tokex.audit WHERE exchange_id::text = (:'i2'::jsonb)->>'jti'), (:'i2'::jsonb)->>'jti',
          'jti is the exchange id of its audit row');
SELECT is(tokex.introspect(:'st'), '{"active": false}'::jsonb,
          'a session token is no access token: it introspects inactive');
SELECT is(tokex.jwt_verify(:'st')->'may_act', '{"sub": "asst", "iss": "https://tokex.test"}'::jsonb,
          '... though it verifies, and its may_act names the agent');
SELECT tokex.jwt_sign(jsonb_build_object('sub', 'alice', 'jti', gen_random_uuid(), 'exp', pg_temp.epoch('1 hour'))) AS person \gset
SELECT pg_temp.x(:'person', :'asst_tok')->>'access_token' AS t_nosid \gset
SELECT is(pg_temp.keys(tokex.introspect(:'t_nosid')),
          '{act,active,aud,client_id,exp,iat,iss,jti,nbf,scope,sub,token_type}'::text[],
          'a token minted without a session has no sid');

------------------------------------------------------------------------
-- Anything invalid is exactly {"active": false}
------------------------------------------------------------------------
SELECT gen_random_bytes(32) AS secret \gset
SELECT tokex.trust_issuer('https://idp.test', jsonb_build_object('keys', jsonb_build_array(
         jsonb_build_object('kty', 'oct', 'alg', 'HS256', 'k', pg_temp.b64u(:'secret'::bytea)))));
INSERT INTO tokex.identity (id, kind, issuer, subject) VALUES ('carol', 'human', 'https://idp.test', 'carol@idp');

SELECT is(tokex.introspect(NULL), '{"active": false}'::jsonb, 'NULL');
SELECT is(tokex.introspect(''), '{"active": false}'::jsonb, 'empty string');
SELECT is(tokex.introspect('garbage'), '{"active": false}'::jsonb, 'garbage');
SELECT is(tokex.introspect('a.b.c'), '{"active": false}'::jsonb, 'three garbage segments');
SELECT is(tokex.introspect(pg_temp.tamper(:'t2')),
          '{"active": false}'::jsonb, 'a tampered signature');
SELECT is(tokex.introspect(split_part(:'t2', '.', 1) || '.' || pg_temp.b64u(convert_to(
            jsonb_set(pg_temp.claims(:'t2'), '{scope}', '"cal.read cal.write admin"')::text, 'UTF8'))
            || '.' || split_part(:'t2', '.', 3)),
          '{"active": false}'::jsonb, 'a tampered payload');
SELECT is(tokex.introspect(tokex.jwt_sign(jsonb_build_object('sub', 'alice', 'iat', pg_temp.epoch('-2 hours'),
                                                             'exp', pg_temp.epoch('-1 hour')))),
          '{"active": false}'::jsonb, 'an expired tokex token');
SELECT is(tokex.introspect(tokex.jwt_sign(jsonb_build_object('sub', 'alice', 'nbf', pg_temp.epoch('1 hour'),
                                                             'exp', pg_temp.epoch('2 hours')))),
          '{"active": false}'::jsonb, 'a tokex token not yet valid');
SELECT is(tokex.introspect(pg_temp.hs256(jsonb_build_object('iss', 'https://evil.test', 'sub', 'carol@idp',
                                          'exp', pg_temp.epoch('1 hour')), :'secret'::bytea)),
          '{"active": false}'::jsonb, 'an untrusted issuer');
SELECT is(tokex.introspect(pg_temp.hs256(jsonb_build_object('iss', 'https://idp.test', 'sub', 'carol@idp',
                                          'exp', pg_temp.epoch('1 hour')), gen_random_bytes(32))),
          '{"active": false}'::jsonb, 'a trusted issuer, wrong key');
SELECT is(tokex.introspect(pg_temp.hs256(jsonb_build_object('iss', 'https://idp.test', 'sub', 'carol@idp',
                                          'exp', pg_temp.epoch('-1 hour')), :'secret'::bytea)),
          '{"active": false}'::jsonb, 'a trusted issuer''s expired token');
SELECT is(tokex.introspect(pg_temp.b64u('{"alg":"none"}') || '.' || pg_temp.b64u(convert_to(
            jsonb_build_object('iss', 'https://tokex.test', 'sub', 'alice', 'exp', pg_temp.epoch('1 hour'))::text, 'UTF8')) || '.'),
          '{"active": false}'::jsonb, 'alg none');
SELECT is(tokex.introspect(pg_temp.hs256(jsonb_build_object('iss', 'https://tokex.test', 'sub', 'alice',
                                          'exp', pg_temp.epoch('1 hour')), :'secret'::bytea)),
          '{"active": false}'::jsonb, 'an HS256 token claiming tokex''s own issuer');
SELECT is(tokex.introspect(tokex.jwt_sign(jsonb_build_object('sub', 'nobody', 'exp', pg_temp.epoch('1 hour')))),
          '{"active": false}'::jsonb, 'a tokex token naming an unknown identity');

------------------------------------------------------------------------
-- A trusted external issuer's token
------------------------------------------------------------------------
SELECT pg_temp.hs256(jsonb_build_object('iss', 'https://idp.test', 'sub', 'carol@idp', 'jti', 'idp-1',
                                        'iat', pg_temp.epoch('-1 minute'), 'exp', pg_temp.epoch('1 hour')),
                     :'secret'::bytea) AS ext \gset
SELECT pg_temp.hs256(jsonb_build_object('iss', 'https://idp.test', 'sub', 'carol@idp', 'jti', 'idp-2',
                                        'iat', pg_temp.epoch('-1 minute'), 'exp', pg_temp.epoch('1 hour')),
                     :'secret'::bytea) AS ext2 \gset
SELECT is(tokex.introspect(:'ext')->'active', 'true'::jsonb, 'a trusted issuer''s HS256 token is active');
SELECT is(tokex.introspect(:'ext') - 'active' - 'token_type', pg_temp.claims(:'ext'), '... with its own claims');
SELECT lives_ok($$SELECT tokex.revoke_token('idp-2', 'reported', issuer => 'https://idp.test')$$,
                'revoke a trusted issuer''s token by issuer and jti');
SELECT is(tokex.introspect(:'ext2'), '{"active": false}'::jsonb, '... it is inactive');
SELECT lives_ok($$SELECT tokex.revoke_identity('carol', 'offboarded at the IdP')$$, 'offboard the identity it maps to');
SELECT is(tokex.introspect(:'ext'), '{"active": false}'::jsonb, 'the external token is inactive once its identity is offboarded');

------------------------------------------------------------------------
-- introspect is STABLE
------------------------------------------------------------------------
SELECT is((SELECT provolatile::text FROM pg_proc WHERE oid = 'tokex.introspect(text)'::regprocedure), 's',
          'tokex.introspect is STABLE');

------------------------------------------------------------------------
-- record_use and the audit trail
------------------------------------------------------------------------
SELECT tokex.record_use(:'t2', 'PATCH /calendars/alice/events/7', '204 No Content') AS use_id \gset
SELECT ok(:use_id > 0, 'record_use returns the use id');
SELECT results_eq(format($q$SELECT u.exchange_id, u.action, u.outcome FROM tokex.token_use u WHERE u.id = %s$q$, :use_id),
                  format($q$SELECT a.exchange_id, 'PATCH /calendars/alice/events/7'::text, '204 No Content'::text
                              FROM tokex.audit a WHERE a.jti::text = %L AND a.decision = 'granted'$q$,
                         pg_temp.claims(:'t2')->>'jti'),
                  'the token_use row links to the exchange that minted the token');
SELECT results_eq($$SELECT on_behalf_of, actor, actor_chain, audience, scope, action, outcome
                      FROM tokex.audit_trail$$,
                  $$VALUES ('alice'::text, 'booker'::text, '{asst,booker}'::text[], 'cal'::text, '{cal.write}'::text[],
                            'PATCH /calendars/alice/events/7'::text, '204 No Content'::text)$$,
                  'audit_trail: on whose behalf, who (the whole chain), where, with what privilege, what was done');
SELECT is((SELECT decision FROM tokex.audit a JOIN tokex.audit_trail t USING (exchange_id)), 'granted',
          'the use joins its granted exchange in tokex.audit');
SELECT lives_ok(format($q$SELECT tokex.record_use(%L, 'GET /x', '200')$q$, :'t1'), 'a second use of another token');
SELECT is((SELECT count(*)::int FROM tokex.audit_trail), 2, 'one audit_trail row per use');

SELECT throws_ok(format($q$SELECT tokex.record_use(%L, 'GET /x', '200')$q$,
                        pg_temp.hs256(jsonb_build_object('iss', 'https://idp.test', 'sub', 'someone',
                                      'exp', pg_temp.epoch('1 hour')), :'secret'::bytea)),
                 '28000', 'token was not minted by tokex', 'record_use refuses a trusted issuer''s token (28000)');
SELECT throws_ok(format($q$SELECT tokex.record_use(%L, 'GET /x', '200')$q$, :'asst_tok'),
                 '28000', 'token was not minted by a tokex exchange', 'record_use refuses an identity_token');
SELECT throws_ok(format($q$SELECT tokex.record_use(%L, 'GET /x', '200')$q$, :'st'),
                 '28000', 'token was not minted by a tokex exchange', 'record_use refuses a session token');
SELECT throws_ok($$SELECT tokex.record_use('garbage', 'GET /x', '200')$$, '28000', 'invalid token',
                 'record_use refuses garbage (28000, invalid token)');
SELECT throws_ok(format($q$SELECT tokex.record_use(%L, 'GET /x', '200')$q$, pg_temp.tamper(:'t2')),
                 '28000', 'invalid token', 'record_use refuses a tampered token');
SELECT throws_ok(format($q$SELECT tokex.record_use(%L, NULL, '200')$q$, :'t2'), '22004', NULL, 'record_use: NULL action');
SELECT throws_ok(format($q$SELECT tokex.record_use(%L, 'GET /x', NULL)$q$, :'t2'), '22004', NULL, 'record_use: NULL outcome');
SELECT is((SELECT count(*)::int FROM tokex.token_use), 2, 'refused uses leave no row');

-- append-only
SELECT throws_ok($$UPDATE tokex.token_use SET outcome = 'forged'$$, '42501', NULL, 'token_use: UPDATE refused (42501)');
SELECT throws_ok($$DELETE FROM tokex.token_use$$, '42501', NULL, 'token_use: DELETE refused (42501)');
SELECT throws_ok($$TRUNCATE tokex.token_use$$, '42501', NULL, 'token_use: TRUNCATE refused (42501)');
SELECT throws_ok($$UPDATE tokex.audit_event SET decision = 'denied'$$, '42501', NULL, 'audit_event: UPDATE refused');

------------------------------------------------------------------------
-- Roles
------------------------------------------------------------------------
SELECT lives_ok($$SELECT pg_temp.as_role('tokex_auditor', 'SELECT count(*) FROM tokex.audit_trail')$$,
                'tokex_auditor reads audit_trail');
SELECT lives_ok($$SELECT pg_temp.as_role('tokex_auditor', 'SELECT count(*) FROM tokex.revocation')$$,
                'tokex_auditor reads revocation');
SELECT lives_ok($$SELECT pg_temp.as_role('tokex_auditor', 'SELECT count(*) FROM tokex.audit')$$,
                'tokex_auditor reads audit');
SELECT throws_ok($$SELECT pg_temp.as_role('tokex_auditor', 'SELECT count(*) FROM tokex.token_use')$$,
                 '42501', NULL, 'tokex_auditor cannot read token_use');
SELECT throws_ok($$SELECT pg_temp.as_role('tokex_auditor', 'SELECT count(*) FROM tokex.session')$$,
                 '42501', NULL, 'tokex_auditor cannot read session');
SELECT throws_ok($$SELECT pg_temp.as_role('tokex_auditor', 'SELECT count(*) FROM tokex.audit_event')$$,
                 '42501', NULL, 'tokex_auditor cannot read audit_event (token hashes) directly');
SELECT throws_ok(format('SELECT pg_temp.as_role(%L, %L)', 'tokex_auditor', format('SELECT tokex.introspect(%L)', :'t2')),
                 '42501', NULL, 'tokex_auditor cannot introspect');
SELECT lives_ok(format('SELECT pg_temp.as_role(%L, %L)', 'tokex_app',
                       format($q$SELECT tokex.record_use(%L, 'GET /y', '200')$q$, :'t2')),
                'tokex_app records uses');
SELECT throws_ok($$SELECT pg_temp.as_role('tokex_app', 'INSERT INTO tokex.token_use (exchange_id, action, outcome)
                    VALUES (gen_random_uuid(), ''forged'', ''200'')')$$,
                 '42501', NULL, 'tokex_app cannot write token_use directly');

------------------------------------------------------------------------
-- Read-only: introspect serves a READ ONLY transaction (last: it stays read-only)
------------------------------------------------------------------------
SET TRANSACTION READ ONLY;
SELECT throws_ok($$INSERT INTO tokex.revoked_token (jti) VALUES ('x')$$, '25006', NULL,
                 'the transaction is read-only now');
SELECT is(tokex.introspect(:'t1')->'active', 'true'::jsonb, 'introspect of an active token works READ ONLY');
SELECT is(tokex.introspect('garbage'), '{"active": false}'::jsonb, 'introspect of garbage works READ ONLY');

SELECT * FROM finish();
ROLLBACK;
