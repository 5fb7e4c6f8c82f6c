-- Shared Signals (SSF/CAEP): after each kind of revocation, each receiving
-- stream gets exactly one event naming exactly its live tokens that the
-- revocation kills, and other streams get nothing; poll (RFC 8936) returns
-- pending events in order, acknowledged ones never again, unacknowledged
-- ones again; another receiver's client is refused.
-- The streams are committed first (the audit writer, which records live
-- tokens, sees only committed streams); the database is dropped after the file.
\ir preamble.psql
SELECT plan(79);

SET LOCAL tokex.secret_hash_iterations = 100000;
SELECT tokex.create_key() AS k1 \gset
INSERT INTO tokex.identity (id, kind)
SELECT p, 'human' FROM unnest('{alice,bob,carol,dave,erin,frank,gina,hal}'::text[]) p
UNION ALL
SELECT a, 'agent' FROM unnest('{agent-a,agent-b,agent-c,agent-d,agent-e,agent-f,agent-g,agent-h}'::text[]) a;
INSERT INTO tokex.resource (audience, scopes, token_ttl) VALUES
  ('cal', '{cal.read,cal.write}', NULL), ('mail', '{mail.read}', NULL), ('docs', '{docs.read}', NULL),
  ('blip', '{blip.read}', '1 second'), ('late', '{late.read}', NULL);
INSERT INTO tokex.delegation (principal, delegate, scopes)
SELECT p, a, '{cal.read,cal.write,mail.read,docs.read,blip.read,late.read}'
  FROM (VALUES ('alice', 'agent-a'), ('bob', 'agent-a'), ('alice', 'agent-b'), ('carol', 'agent-c'),
               ('dave', 'agent-d'), ('erin', 'agent-e'), ('frank', 'agent-f'), ('gina', 'agent-g'),
               ('hal', 'agent-h')) v(p, a);
INSERT INTO tokex.policy (effect, audience, description)
SELECT 'allow', aud, 'agents may use ' || aud FROM unnest('{cal,mail,blip,late}'::text[]) aud;
INSERT INTO tokex.policy (effect, audience, description) VALUES ('allow', 'docs', 'docs for all')
RETURNING id AS docs_allow \gset
SELECT tokex.register_client('cal-rs') AS cal_secret, tokex.register_client('mail-rs') AS mail_secret,
       tokex.register_client('docs-rs') AS docs_secret \gset
INSERT INTO tokex.ssf_stream (audience, clients, description) VALUES
  ('cal', '{cal-rs}', 'calendar'), ('mail', '{mail-rs}', NULL), ('docs', '{docs-rs}', NULL),
  ('blip', '{cal-rs}', NULL);
SELECT stream_id AS cal FROM tokex.ssf_stream WHERE audience = 'cal' \gset
SELECT stream_id AS mail FROM tokex.ssf_stream WHERE audience = 'mail' \gset
SELECT stream_id AS docs FROM tokex.ssf_stream WHERE audience = 'docs' \gset
COMMIT;
BEGIN;
SET LOCAL tokex.issuer = 'https://tokex.test';
SET LOCAL tokex.secret_hash_iterations = 100000;

CREATE FUNCTION pg_temp.mint(principal text, agent text, aud text, sess text DEFAULT NULL) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE r jsonb;
BEGIN
  r := tokex.exchange(COALESCE(sess, tokex.start_session(principal, agent)->>'session_token'),
                      'urn:ietf:params:oauth:token-type:jwt', tokex.identity_token(agent),
                      'urn:ietf:params:oauth:token-type:jwt', audience => aud);
  IF r->>'access_token' IS NULL THEN RAISE EXCEPTION 'setup exchange denied: %', r; END IF;
  RETURN r->>'access_token';
END $$;
CREATE FUNCTION pg_temp.jti(tok text) RETURNS text LANGUAGE sql AS $$
  SELECT (tokex.jwt_decode(tok))->'payload'->>'jti'
$$;
-- a SET's session-revoked event
CREATE FUNCTION pg_temp.ev(claims jsonb) RETURNS jsonb LANGUAGE sql AS $$
  SELECT claims->'events'->'https://schemas.openid.net/secevent/caep/event-type/session-revoked'
$$;
-- the events made after event id since, per audience: (audience, jtis named, sub_id)
CREATE FUNCTION pg_temp.events(since bigint)
RETURNS TABLE (audience text, jtis text[], sub_id jsonb) LANGUAGE sql AS $$
  SELECT s.audience,
         ARRAY(SELECT t::text FROM unnest(e.jtis) t ORDER BY 1),
         e.claims->'sub_id'
    FROM tokex.ssf_event e JOIN tokex.ssf_stream s USING (stream_id)
   WHERE e.id > since ORDER BY s.audience
$$;
CREATE FUNCTION pg_temp.last() RETURNS bigint LANGUAGE sql AS $$
  SELECT COALESCE(max(id), 0) FROM tokex.ssf_event
$$;
CREATE FUNCTION pg_temp.sorted(VARIADIC t text[]) RETURNS text[] LANGUAGE sql AS $$
  SELECT ARRAY(SELECT x FROM unnest(t) x ORDER BY 1)
$$;
CREATE FUNCTION pg_temp.poll(client text, secret text, max_events int DEFAULT NULL, ack jsonb DEFAULT NULL,
                             stream text DEFAULT NULL, set_errs jsonb DEFAULT NULL) RETURNS json
LANGUAGE sql AS $$
  SELECT tokex_api.ssf_poll("maxEvents" => max_events, ack => ack, "setErrs" => set_errs, stream_id => stream,
                            client_id => client, client_secret => secret)
$$;
-- the jtis of the SETs a poll returned, in order
CREATE FUNCTION pg_temp.set_jtis(r json) RETURNS text[] LANGUAGE sql AS $$
  SELECT ARRAY(SELECT k FROM json_object_keys(r->'sets') k)
$$;

------------------------------------------------------------------------
-- Tracking: granted tokens of stream audiences are live tokens of receivers
------------------------------------------------------------------------
SELECT pg_temp.mint('alice', 'agent-a', 'cal') AS a_cal, pg_temp.mint('alice', 'agent-a', 'mail') AS a_mail,
       pg_temp.mint('bob', 'agent-a', 'cal') AS b_cal, pg_temp.mint('alice', 'agent-b', 'cal') AS ab_cal,
       pg_temp.mint('alice', 'agent-a', 'late') AS a_late \gset
SELECT is((SELECT count(*)::int FROM tokex.ssf_token WHERE jti::text IN (pg_temp.jti(:'a_cal'), pg_temp.jti(:'a_mail'),
                                                                          pg_temp.jti(:'b_cal'), pg_temp.jti(:'ab_cal'))),
          4, 'the audit writer records each token of a stream audience');
SELECT is((SELECT count(*)::int FROM tokex.ssf_token WHERE jti::text = pg_temp.jti(:'a_late')), 0,
          'a token of an audience without a stream is not recorded');

------------------------------------------------------------------------
-- A person revoked: each receiver gets one event naming its tokens
------------------------------------------------------------------------
SELECT pg_temp.last() AS since \gset
SELECT tokex.revoke_identity('alice', 'left the company');
SELECT results_eq(format('SELECT audience, jtis FROM pg_temp.events(%s)', :since),
  format($q$VALUES ('cal'::text, pg_temp.sorted(%L, %L)), ('mail', ARRAY[%L])$q$,
         pg_temp.jti(:'a_cal'), pg_temp.jti(:'ab_cal'), pg_temp.jti(:'a_mail')),
  'revoke_identity(person): cal gets one event naming its two tokens, mail one naming its token, docs none');
SELECT is((SELECT DISTINCT sub_id FROM pg_temp.events(:since)),
          '{"format": "iss_sub", "iss": "https://tokex.test", "sub": "alice"}'::jsonb,
          'the subject is the person, iss_sub');
SELECT is((SELECT count(*)::int FROM tokex.ssf_token WHERE jti::text = pg_temp.jti(:'b_cal')), 1,
          'bob''s token with the same agent is untouched');
SELECT is((SELECT pg_temp.ev(claims) - 'event_timestamp'::text
             FROM tokex.ssf_event WHERE id > :since LIMIT 1),
          '{"initiating_entity": "admin", "reason_admin": {"en": "left the company"},
            "tokex_revocation": {"kind": "identity", "target": "alice"}}'::jsonb,
          'the session-revoked event: initiating entity, reason, what was revoked');
SELECT ok((SELECT bool_and(claims->>'txn' = r.id::text AND e.revocation_id = r.id)
             FROM tokex.ssf_event e, tokex.revocation r WHERE e.id > :since AND r.kind = 'identity' AND r.target = 'alice'),
          'txn and revocation_id name the revocation');
SELECT is((SELECT array_agg(claims->>'aud' ORDER BY claims->>'aud') FROM tokex.ssf_event WHERE id > :since),
          '{cal,mail}', 'aud: the receiver''s audience');
SELECT is((SELECT max(expires_at) FROM tokex.ssf_event WHERE id > :since),
          (SELECT max(expires_at) FROM tokex.audit WHERE jti::text IN (pg_temp.jti(:'a_cal'), pg_temp.jti(:'ab_cal'),
                                                                        pg_temp.jti(:'a_mail'))),
          'an event expires with the latest exp of the tokens it names');
SELECT pg_temp.last() AS since \gset
SELECT tokex.revoke_identity('alice', 'again');
SELECT is((SELECT count(*)::int FROM pg_temp.events(:since)), 0, 'tokens already named are not named again');

------------------------------------------------------------------------
-- An agent revoked: its tokens in any position of the chain
------------------------------------------------------------------------
SELECT pg_temp.mint('gina', 'agent-g', 'cal') AS g_cal, pg_temp.mint('gina', 'agent-g', 'docs') AS g_docs,
       pg_temp.mint('hal', 'agent-h', 'cal') AS h_cal \gset
SELECT pg_temp.last() AS since \gset
UPDATE tokex.identity SET status = 'suspended' WHERE id = 'agent-g';
SELECT results_eq(format('SELECT audience, jtis, sub_id FROM pg_temp.events(%s)', :since),
  format($q$VALUES ('cal'::text, ARRAY[%L], '{"format": "iss_sub", "iss": "https://tokex.test", "sub": "agent-g"}'::jsonb),
                   ('docs', ARRAY[%L], '{"format": "iss_sub", "iss": "https://tokex.test", "sub": "agent-g"}')$q$,
         pg_temp.jti(:'g_cal'), pg_temp.jti(:'g_docs')),
  'an agent suspended by plain UPDATE: its receivers get events naming its tokens');

-- tokens_valid_after moved later on an active identity: only the tokens issued before it
SELECT pg_temp.mint('frank', 'agent-f', 'cal') AS fv1 \gset
SELECT pg_sleep(1.1);
SELECT pg_temp.mint('frank', 'agent-f', 'cal') AS fv2 \gset
SELECT pg_temp.last() AS since \gset
UPDATE tokex.identity
   SET tokens_valid_after = (SELECT issued_at FROM tokex.ssf_token WHERE jti::text = pg_temp.jti(:'fv2'))
                            - interval '0.5 seconds'
 WHERE id = 'frank';
SELECT results_eq(format('SELECT audience, jtis FROM pg_temp.events(%s)', :since),
  format($q$VALUES ('cal'::text, ARRAY[%L])$q$, pg_temp.jti(:'fv1')),
  'tokens_valid_after set on an active person: the tokens issued before it, not after');
SELECT pg_sleep(1.1);         -- frank's next credentials are issued after tokens_valid_after

------------------------------------------------------------------------
-- A delegation revoked: the pair, as a complex subject
------------------------------------------------------------------------
SELECT pg_temp.mint('carol', 'agent-c', 'mail') AS c_mail, pg_temp.mint('carol', 'agent-c', 'docs') AS c_docs \gset
SELECT pg_temp.last() AS since \gset
SELECT tokex.revoke_delegation('carol', 'agent-c', 'no longer needed');
SELECT results_eq(format('SELECT audience, jtis FROM pg_temp.events(%s)', :since),
  format($q$VALUES ('docs'::text, ARRAY[%L]), ('mail', ARRAY[%L])$q$, pg_temp.jti(:'c_docs'), pg_temp.jti(:'c_mail')),
  'revoke_delegation: docs and mail get their tokens, cal nothing');
SELECT is((SELECT DISTINCT sub_id FROM pg_temp.events(:since)),
          '{"format": "complex", "user": {"format": "iss_sub", "iss": "https://tokex.test", "sub": "carol"},
            "application": {"format": "iss_sub", "iss": "https://tokex.test", "sub": "agent-c"}}'::jsonb,
          'the subject is the pair: user = the principal, application = the agent');

------------------------------------------------------------------------
-- A session revoked: only the tokens from that session
------------------------------------------------------------------------
SELECT tokex.start_session('dave', 'agent-d') AS sess1, tokex.start_session('dave', 'agent-d') AS sess2 \gset
SELECT pg_temp.mint('dave', 'agent-d', 'cal', :'sess1'::jsonb->>'session_token') AS d1_cal,
       pg_temp.mint('dave', 'agent-d', 'cal', :'sess1'::jsonb->>'session_token') AS d1_cal2,
       pg_temp.mint('dave', 'agent-d', 'cal', :'sess2'::jsonb->>'session_token') AS d2_cal \gset
SELECT pg_temp.last() AS since \gset
SELECT tokex.revoke_session((:'sess1'::jsonb->>'session_id')::uuid, 'device lost');
SELECT results_eq(format('SELECT audience, jtis FROM pg_temp.events(%s)', :since),
  format($q$VALUES ('cal'::text, pg_temp.sorted(%L, %L))$q$, pg_temp.jti(:'d1_cal'), pg_temp.jti(:'d1_cal2')),
  'revoke_session: one event naming that session''s two tokens, not the other session''s');
SELECT is((SELECT sub_id FROM pg_temp.events(:since)),
          jsonb_build_object('format', 'complex',
            'user', '{"format": "iss_sub", "iss": "https://tokex.test", "sub": "dave"}'::jsonb,
            'application', '{"format": "iss_sub", "iss": "https://tokex.test", "sub": "agent-d"}'::jsonb,
            'session', jsonb_build_object('format', 'opaque', 'id', :'sess1'::jsonb->>'session_id')),
          'the subject: the pair and the session (its sid)');

------------------------------------------------------------------------
-- A token revoked
------------------------------------------------------------------------
SELECT pg_temp.last() AS since \gset
SELECT tokex.revoke_token(:'d2_cal', 'leaked');
SELECT results_eq(format('SELECT audience, jtis FROM pg_temp.events(%s)', :since),
  format($q$VALUES ('cal'::text, ARRAY[%L])$q$, pg_temp.jti(:'d2_cal')), 'revoke_token: one event naming it');
SELECT is((SELECT sub_id FROM pg_temp.events(:since)),
          jsonb_build_object('format', 'jwt_id', 'iss', 'https://tokex.test', 'jti', pg_temp.jti(:'d2_cal')),
          'the subject: jwt_id');
SELECT pg_temp.last() AS since \gset
SELECT tokex.revoke_token(gen_random_uuid()::text, 'unknown');
SELECT is((SELECT count(*)::int FROM pg_temp.events(:since)), 0, 'a jti no receiver holds: no event');

------------------------------------------------------------------------
-- Policy changes that remove access
------------------------------------------------------------------------
SELECT pg_temp.mint('erin', 'agent-e', 'mail') AS e_mail, pg_temp.mint('erin', 'agent-e', 'cal') AS e_cal,
       pg_temp.mint('frank', 'agent-f', 'mail') AS f_mail, pg_temp.mint('frank', 'agent-f', 'docs') AS f_docs \gset
SELECT pg_temp.last() AS since \gset
INSERT INTO tokex.policy (effect, actor, audience, description)
VALUES ('deny', 'agent-e', 'mail', 'agent-e out of mail') RETURNING id AS deny_id \gset
SELECT results_eq(format('SELECT audience, jtis FROM pg_temp.events(%s)', :since),
  format($q$VALUES ('mail'::text, ARRAY[%L])$q$, pg_temp.jti(:'e_mail')),
  'a deny row inserted: the tokens it now refuses (mail for agent-e), not cal, not frank''s');
SELECT is((SELECT sub_id FROM pg_temp.events(:since)),
          '{"format": "complex", "application": {"format": "iss_sub", "iss": "https://tokex.test", "sub": "agent-e"}}'::jsonb,
          'the subject: what the row names');
SELECT is((SELECT pg_temp.ev(claims)->>'initiating_entity'
             FROM tokex.ssf_event WHERE id > :since), 'policy', 'initiating_entity policy');
SELECT is((SELECT count(*)::int FROM tokex.revocation WHERE target = :'deny_id'), 0,
          'a policy change is no row of tokex.revocation');
SELECT pg_temp.last() AS since \gset
INSERT INTO tokex.policy (effect, audience, scopes, description) VALUES ('deny', 'cal', '{cal.admin}', 'no admin');
SELECT is((SELECT count(*)::int FROM pg_temp.events(:since)), 0, 'a deny of scopes no token carries: no event');
INSERT INTO tokex.policy (effect, subject, scopes, description) VALUES ('deny', 'erin', '{cal.write}', 'read only');
SELECT results_eq(format('SELECT audience, jtis FROM pg_temp.events(%s)', :since),
  format($q$VALUES ('cal'::text, ARRAY[%L])$q$, pg_temp.jti(:'e_cal')),
  'a deny of a scope the token carries: it is named');
SELECT pg_temp.last() AS since \gset
INSERT INTO tokex.policy (effect, audience, description) VALUES ('allow', 'docs', 'docs again') RETURNING id AS docs_allow2 \gset
DELETE FROM tokex.policy WHERE id = :docs_allow;
SELECT is((SELECT count(*)::int FROM pg_temp.events(:since)), 0,
          'an allow row deleted while another allows the same: no event');
DELETE FROM tokex.policy WHERE id = :docs_allow2;
SELECT results_eq(format('SELECT audience, jtis FROM pg_temp.events(%s)', :since),
  format($q$VALUES ('docs'::text, ARRAY[%L])$q$, pg_temp.jti(:'f_docs')),
  'the last allow row of docs deleted: docs tokens named');
SELECT pg_temp.last() AS since \gset
UPDATE tokex.policy SET valid = tstzrange(now() - interval '2 days', now() - interval '1 day') WHERE id = :deny_id;
SELECT is((SELECT count(*)::int FROM pg_temp.events(:since)), 0, 'a deny row that lapses: no event');
INSERT INTO tokex.policy (effect, audience, description) VALUES ('allow', 'docs', 'docs back');
SELECT is((SELECT count(*)::int FROM pg_temp.events(:since)), 0, 'an allow row inserted: no event');

------------------------------------------------------------------------
-- Paused, disabled, expired, events not requested
------------------------------------------------------------------------
SELECT pg_temp.mint('bob', 'agent-a', 'mail') AS b_mail, pg_temp.mint('bob', 'agent-a', 'docs') AS b_docs,
       pg_temp.mint('bob', 'agent-a', 'blip') AS b_blip \gset
UPDATE tokex.ssf_stream SET status = 'paused' WHERE audience = 'mail';
UPDATE tokex.ssf_stream SET status = 'disabled' WHERE audience = 'docs';
SELECT pg_sleep(2.1);        -- the blip token (1 second) expires
SELECT pg_temp.last() AS since \gset
SELECT tokex.revoke_identity('bob', 'left');
SELECT results_eq(format('SELECT audience, jtis FROM pg_temp.events(%s)', :since),
  format($q$VALUES ('cal'::text, ARRAY[%L]), ('mail', ARRAY[%L])$q$, pg_temp.jti(:'b_cal'), pg_temp.jti(:'b_mail')),
  'paused streams get events (held), disabled ones none, expired tokens are named nowhere');
SELECT is((SELECT count(*)::int FROM tokex.ssf_token WHERE jti::text IN (pg_temp.jti(:'b_docs'), pg_temp.jti(:'b_blip'))),
          0, 'the disabled stream''s and the expired tokens are no longer tracked');

------------------------------------------------------------------------
-- Poll (RFC 8936): order, maxEvents, ack, setErrs, refusals
------------------------------------------------------------------------
SELECT pg_temp.poll('cal-rs', :'cal_secret', stream => :'cal') AS p1 \gset
SELECT is(pg_temp.set_jtis(:'p1'),
          ARRAY(SELECT jti::text FROM tokex.ssf_event WHERE stream_id = :'cal' ORDER BY id),
          'poll returns every pending event of the stream, in order');
SELECT is((:'p1'::json->>'moreAvailable')::boolean, false, 'moreAvailable false');
SELECT is(current_setting('response.status'), '200', '200');
SELECT is((tokex.jwt_decode(:'p1'::json->'sets'->>(pg_temp.set_jtis(:'p1'))[1]))->'header',
          jsonb_build_object('alg', 'ES256', 'kid', :'k1', 'typ', 'secevent+jwt'),
          'a SET: typ secevent+jwt, signed by the active key');
SELECT is((tokex.jwt_decode(:'p1'::json->'sets'->>(pg_temp.set_jtis(:'p1'))[1]))->'payload',
          (SELECT claims || jsonb_build_object('iss', 'https://tokex.test', 'jti', jti)
                  || jsonb_build_object('events', jsonb_build_object(
                       'https://schemas.openid.net/secevent/caep/event-type/session-revoked',
                       pg_temp.ev(claims) || jsonb_build_object('tokens',
                         (SELECT jsonb_agg(jsonb_build_object('format', 'jwt_id', 'iss', 'https://tokex.test',
                                                              'jti', j) ORDER BY o)
                            FROM unnest(jtis) WITH ORDINALITY x(j, o)))))
             FROM tokex.ssf_event WHERE jti::text = (pg_temp.set_jtis(:'p1'))[1]),
          'its claims: the event''s, with iss, jti and the tokens as jwt_id subjects');
SELECT ok((SELECT bool_and(delivered_at IS NOT NULL) FROM tokex.ssf_event WHERE stream_id = :'cal'), 'delivered_at set');
SELECT (pg_temp.set_jtis(:'p1'))[1] AS e1, (pg_temp.set_jtis(:'p1'))[2] AS e2, (pg_temp.set_jtis(:'p1'))[3] AS e3 \gset
SELECT pg_temp.poll('cal-rs', :'cal_secret', 1, jsonb_build_array(:'e1'), :'cal') AS p2 \gset
SELECT is(pg_temp.set_jtis(:'p2'), ARRAY[:'e2'], 'after acknowledging the first, maxEvents 1: the second');
SELECT is((:'p2'::json->>'moreAvailable')::boolean, true, 'moreAvailable true');
SELECT is(pg_temp.set_jtis(pg_temp.poll('cal-rs', :'cal_secret', 1, NULL, :'cal')), ARRAY[:'e2'],
          'an unacknowledged event comes back');
SELECT pg_temp.poll('cal-rs', :'cal_secret', 0, jsonb_build_array(:'e2'),
                    :'cal', jsonb_build_object(:'e3', '{"err": "invalid_key", "description": "unknown kid"}'::jsonb)) AS p3 \gset
SELECT is(:'p3'::json->>'sets', '{}', 'maxEvents 0: acknowledgements only');
SELECT is((SELECT set_error FROM tokex.ssf_event WHERE jti::text = :'e3'),
          '{"err": "invalid_key", "description": "unknown kid"}'::jsonb, 'setErrs recorded');
SELECT is(pg_temp.set_jtis(pg_temp.poll('cal-rs', :'cal_secret', NULL, NULL, :'cal')),
          ARRAY(SELECT jti::text FROM tokex.ssf_event WHERE stream_id = :'cal' AND jti::text NOT IN (:'e1', :'e2', :'e3')
                 ORDER BY id),
          'acknowledged and rejected events are not returned again');
SELECT is(pg_temp.set_jtis(pg_temp.poll('cal-rs', :'cal_secret', NULL,
                                        (SELECT jsonb_agg(jti) FROM tokex.ssf_event WHERE stream_id = :'cal'), :'cal')),
          '{}', 'everything acknowledged: poll again, nothing new');
SELECT is(pg_temp.poll('mail-rs', :'mail_secret')::jsonb, '{"sets": {}, "moreAvailable": false}',
          'a paused stream delivers nothing');
UPDATE tokex.ssf_stream SET status = 'enabled' WHERE audience = 'mail';
SELECT is(cardinality(pg_temp.set_jtis(pg_temp.poll('mail-rs', :'mail_secret'))),
          (SELECT count(*)::int FROM tokex.ssf_event WHERE stream_id = :'mail'),
          'enabled again: its held events are delivered (the client''s only stream, no stream_id)');
SELECT is(pg_temp.poll('mail-rs', :'mail_secret', stream => :'cal')::jsonb,
          '{"err": "access_denied", "description": "the client may not use this stream"}', 'another receiver''s stream: refused');
SELECT is(current_setting('response.status'), '403', '... 403');
SELECT is(pg_temp.poll('mail-rs', 'wrong')::jsonb,
          '{"err": "authentication_failed", "description": "client authentication failed"}', 'a wrong secret: refused');
SELECT is(current_setting('response.status'), '401', '... 401');
SELECT is(pg_temp.poll('cal-rs', :'cal_secret')::jsonb->>'err', 'invalid_request',
          'a client of two streams must name one');
SELECT is(pg_temp.poll('cal-rs', :'cal_secret', -1, stream => :'cal')::jsonb->>'err', 'invalid_request',
          'maxEvents -1: invalid_request');
SELECT is(pg_temp.poll('cal-rs', :'cal_secret', ack => '{"a": 1}', stream => :'cal')::jsonb->>'err', 'invalid_request',
          'ack not an array: invalid_request');
SELECT is(current_setting('response.status'), '400', '... 400');
SELECT set_config('request.method', 'GET', true);
SELECT is(pg_temp.poll('cal-rs', :'cal_secret', stream => :'cal')::jsonb->>'err', 'invalid_request', 'GET: refused');
SELECT set_config('request.method', '', true);

------------------------------------------------------------------------
-- Stream management and metadata
------------------------------------------------------------------------
SELECT is(tokex_api.ssf_stream(stream_id => :'cal', client_id => 'cal-rs', client_secret => :'cal_secret') - 'stream_id',
          '{"iss": "https://tokex.test", "aud": "cal", "description": "calendar",
            "delivery": {"method": "urn:ietf:rfc:8936", "endpoint_url": "https://tokex.test/rpc/ssf_poll"},
            "events_supported": ["https://schemas.openid.net/secevent/caep/event-type/session-revoked"],
            "events_requested": ["https://schemas.openid.net/secevent/caep/event-type/session-revoked"],
            "events_delivered": ["https://schemas.openid.net/secevent/caep/event-type/session-revoked"]}',
          'ssf_stream: the stream configuration');
SELECT is(tokex_api.ssf_stream(stream_id => :'mail', events_requested => '["urn:example:other"]',
                               client_id => 'mail-rs', client_secret => :'mail_secret')->'events_delivered',
          '[]', 'a receiver changes events_requested; session-revoked no longer delivered');
SELECT pg_temp.mint('hal', 'agent-h', 'mail') AS h_mail \gset
SELECT pg_temp.last() AS since \gset
SELECT tokex.revoke_identity('hal', 'left');
SELECT results_eq(format('SELECT audience, jtis FROM pg_temp.events(%s)', :since),
  format($q$VALUES ('cal'::text, ARRAY[%L])$q$, pg_temp.jti(:'h_cal')),
  'a stream that does not request session-revoked gets no event');
SELECT is(tokex_api.ssf_status(stream_id => :'cal', status => 'paused', reason => 'maintenance',
                               client_id => 'cal-rs', client_secret => :'cal_secret'),
          jsonb_build_object('stream_id', :'cal', 'status', 'paused', 'reason', 'maintenance'), 'ssf_status updates');
SELECT is(tokex_api.ssf_status(stream_id => :'cal', status => 'off', client_id => 'cal-rs',
                               client_secret => :'cal_secret')->>'err', 'invalid_request', 'an unknown status: refused');
SELECT is(tokex_api.ssf_status(stream_id => :'cal', client_id => 'mail-rs', client_secret => :'mail_secret')->>'err',
          'access_denied', 'another receiver''s stream status: refused');
SELECT is(tokex_api.ssf_configuration(),
          '{"spec_version": "1_0", "issuer": "https://tokex.test", "jwks_uri": "https://tokex.test/rpc/jwks",
            "delivery_methods_supported": ["urn:ietf:rfc:8936"],
            "configuration_endpoint": "https://tokex.test/rpc/ssf_stream",
            "status_endpoint": "https://tokex.test/rpc/ssf_status",
            "authorization_schemes": [{"spec_urn": "urn:ietf:rfc:6749"}], "default_subjects": "ALL"}',
          'transmitter metadata');

------------------------------------------------------------------------
-- A signing key revoked: the live tokens issued while it was active
------------------------------------------------------------------------
-- the rotation is committed, as in production: the audit writer sees it
SELECT pg_temp.mint('dave', 'agent-d', 'cal') AS kold \gset
COMMIT;
SELECT tokex.create_key() AS k2 \gset
SELECT tokex.activate_key(:'k2');
BEGIN;
SET LOCAL tokex.issuer = 'https://tokex.test';
SELECT pg_sleep(1.1);
SELECT pg_temp.mint('dave', 'agent-d', 'cal') AS knew \gset
SELECT is((tokex.jwt_decode(:'knew'))->'header'->>'kid', :'k2', '(the new token is signed by the new key)');
SELECT pg_temp.last() AS since \gset
SELECT tokex.revoke_key(:'k1');
SELECT ok((SELECT pg_temp.jti(:'kold') = ANY (jtis) AND NOT pg_temp.jti(:'knew') = ANY (jtis)
             FROM pg_temp.events(:since) WHERE audience = 'cal'),
          'revoke_key: the receiver''s tokens signed by the old key are named, the new key''s are not');
SELECT is((SELECT DISTINCT sub_id FROM pg_temp.events(:since)), jsonb_build_object('format', 'opaque', 'id', :'k1'),
          'the subject: the kid');

------------------------------------------------------------------------
-- A stream created later starts with the live tokens; in-database poll; retention
------------------------------------------------------------------------
SELECT pg_temp.mint('erin', 'agent-e', 'late') AS x_late \gset
INSERT INTO tokex.ssf_stream (audience) VALUES ('late') RETURNING stream_id AS late \gset
SELECT is((SELECT array_agg(jti::text ORDER BY issued_at) FROM tokex.ssf_token WHERE stream_id = :'late'),
          ARRAY[pg_temp.jti(:'a_late'), pg_temp.jti(:'x_late')],
          'a new stream picks up the unexpired tokens already issued for its audience');
SELECT is((SELECT count(*)::int FROM pg_temp.events(0) WHERE audience = 'late'), 0, '(none named before)');
SELECT pg_temp.last() AS since \gset
SELECT tokex.revoke_identity('agent-e', 'retired');
SELECT is((SELECT cardinality(jtis) FROM pg_temp.events(:since) WHERE audience = 'late'), 1,
          'revoking it names that token to the new stream');
SELECT is(cardinality(pg_temp.set_jtis(tokex.ssf_poll(:'late'))), 1, 'tokex.ssf_poll: an administrator polls in SQL');
CREATE ROLE ssf_stranger;
SET LOCAL ROLE ssf_stranger;
SELECT throws_ok(format('SELECT tokex.ssf_poll(%L)', :'late'), '42501', NULL, 'a stranger may not call it');
RESET ROLE;
SET LOCAL tokex.ssf_retention = 0;
SELECT is(tokex.ssf_prune() >= 3, true, 'ssf_prune: acknowledged events past tokex.ssf_retention are deleted');
SELECT is((SELECT count(*)::int FROM tokex.ssf_event WHERE acked_at IS NOT NULL), 0, '... all of them');
SELECT ok((SELECT count(*) FROM tokex.ssf_event WHERE acked_at IS NULL) > 0, 'pending events stay');

-- an API key revoked: the tokens obtained with it die, and their receivers hear of it
INSERT INTO tokex.identity (id, kind) VALUES ('ivy', 'human'), ('agent-i', 'agent');
INSERT INTO tokex.delegation (principal, delegate, scopes) VALUES ('ivy', 'agent-i', '{cal.read,cal.write}');
SELECT tokex.create_api_key('agent-i') AS hkey \gset
SELECT (tokex.exchange(tokex.start_session('ivy', 'agent-i')->>'session_token', 'urn:ietf:params:oauth:token-type:jwt',
                       :'hkey', 'urn:tokex:token-type:api_key', audience => 'cal'))->>'access_token' AS t_key,
       pg_temp.mint('ivy', 'agent-i', 'cal') AS t_nokey \gset
SELECT pg_temp.last() AS since \gset
SELECT tokex.revoke_api_key(:'hkey', 'leaked');
SELECT is((SELECT jtis FROM pg_temp.events(:since) WHERE audience = 'cal'), ARRAY[pg_temp.jti(:'t_key')],
          'revoke_api_key: one event to the cal stream naming the token obtained with the key, not the other');
SELECT is((SELECT sub_id FROM pg_temp.events(:since)),
          jsonb_build_object('format', 'iss_sub', 'iss', 'https://tokex.test', 'sub', 'agent-i'),
          '... its subject is the agent whose key it was');
SELECT is(format('%s|%s', tokex.introspect(:'t_key')->>'active', tokex.introspect(:'t_nokey')->>'active'), 'false|true',
          '... and that token is dead, the one obtained with a JWT is not');

-- a live delegation deleted is a revoked one: its tokens die, their receivers hear of it
SELECT pg_temp.mint('ivy', 'agent-i', 'cal',
                    tokex.jwt_sign(jsonb_build_object('sub', 'ivy', 'exp', floor(extract(epoch FROM now()))::bigint + 600)))
       AS t_del \gset
DELETE FROM tokex.session WHERE principal = 'ivy';
SELECT pg_temp.last() AS since \gset
DELETE FROM tokex.delegation WHERE principal = 'ivy';
SELECT is((SELECT jtis FROM pg_temp.events(:since) WHERE audience = 'cal'),
          pg_temp.sorted(pg_temp.jti(:'t_del'), pg_temp.jti(:'t_nokey')),
          'DELETE of a delegation: one event naming its live tokens (the one from its deleted session too)');
SELECT is(tokex.introspect(:'t_del')->>'active', 'false', '... which is inactive (a deleted delegation does not stand)');
SELECT is((SELECT format('%s|%s', kind, reason) FROM tokex.revocation ORDER BY id DESC LIMIT 1), 'delegation|deleted',
          '... and the deletion is in tokex.revocation');

SELECT * FROM finish();
ROLLBACK;
