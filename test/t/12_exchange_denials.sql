-- Every way tokex.exchange says no (RFC 8693 §2.2.2): invalid_request,
-- invalid_grant, invalid_target, invalid_scope.  Each call returns the error
-- object (never raises) and writes exactly one 'denied' audit row whose
-- reason is the error_description.
\ir preamble.psql
SELECT plan(189);

SELECT tokex.create_key() AS kid \gset
INSERT INTO tokex.identity (id, kind, status) VALUES
  ('alice', 'human', 'active'), ('bob', 'human', 'offboarded'), ('carol', 'human', 'active'),
  ('dave', 'human', 'active'), ('frank', 'human', 'active'), ('hal', 'human', 'active'),
  ('ivy', 'human', 'active'),
  ('agent-a', 'agent', 'active'), ('agent-b', 'agent', 'active'), ('agent-c', 'agent', 'active'),
  ('agent-s', 'agent', 'suspended'),
  ('svc', 'service', 'active'), ('svc2', 'service', 'active');
INSERT INTO tokex.identity (id, kind, issuer, subject) VALUES ('erin', 'human', 'https://idp.test', 'u-erin');
INSERT INTO tokex.resource (audience, resource_uri, scopes) VALUES
  ('calendar', 'https://calendar.test/', '{calendar.read,calendar.write}'),
  ('mail',     'https://mail.test/',     '{mail.read}'),
  ('docs',     'https://docs.test/',     '{docs.read}');
INSERT INTO tokex.delegation (principal, delegate, scopes, audiences) VALUES
  ('alice', 'agent-a', '{calendar.read,mail.read,docs.read}', '{calendar,mail}'),
  ('alice', 'agent-b', '{calendar.read,calendar.write}', NULL),
  ('alice', 'agent-c', '{calendar.read,calendar.write,mail.read}', NULL),
  ('alice', 'agent-s', '{calendar.read}', NULL),
  ('bob', 'agent-a', '{calendar.read}', NULL),
  ('erin', 'agent-a', '{calendar.read}', NULL),
  ('frank', 'agent-a', '{calendar.read}', NULL),
  ('hal', 'agent-a', '{calendar.read}', NULL),
  ('ivy', 'agent-a', '{calendar.read}', NULL),
  ('svc', 'agent-a', '{calendar.read}', NULL),
  ('svc2', 'agent-a', '{calendar.read,mail.read}', NULL);
INSERT INTO tokex.delegation (principal, delegate, scopes, valid_from, valid_until) VALUES
  ('dave', 'agent-a', '{calendar.read}', now() - interval '2 days', now() - interval '1 day'),
  ('ivy', 'agent-b', '{calendar.read}', now() + interval '1 day', NULL);
INSERT INTO tokex.policy (effect, subject_kind, actor_kind, description) VALUES
  ('allow', 'human', 'agent', 'people may delegate to agents');
INSERT INTO tokex.policy (effect, subject, description) VALUES ('deny', 'frank', 'frank is on legal hold');
SELECT currval('tokex.policy_id_seq') AS p_deny_frank \gset
INSERT INTO tokex.policy (effect, actor, scopes, description) VALUES
  ('deny', 'agent-b', '{calendar.write}', 'agent-b never writes calendars');
INSERT INTO tokex.policy (effect, subject, audience, description) VALUES
  ('allow', 'svc2', 'calendar', 'svc2 may delegate, for the calendar only');
INSERT INTO tokex.client (client_id, audiences) VALUES ('app-cal', '{calendar}');
UPDATE tokex.identity SET tokens_valid_after = now() WHERE id = 'hal';

CREATE FUNCTION pg_temp.tok(sub text, extra jsonb DEFAULT '{}', ttl int DEFAULT 7200) RETURNS text
LANGUAGE sql AS $$
  SELECT tokex.jwt_sign(jsonb_build_object('sub', sub, 'iat', floor(extract(epoch FROM now()))::bigint,
                                           'exp', floor(extract(epoch FROM now()))::bigint + ttl) || extra)
$$;
CREATE FUNCTION pg_temp.x(st text, at text, aud text DEFAULT NULL, res text DEFAULT NULL,
                          scope text DEFAULT NULL, cid text DEFAULT NULL) RETURNS jsonb
LANGUAGE sql AS $$
  SELECT tokex.exchange(st, 'urn:ietf:params:oauth:token-type:jwt',
                        at, CASE WHEN at IS NOT NULL THEN 'urn:ietf:params:oauth:token-type:jwt' END,
                        audience => aud, resource => res, scope => scope, client_id => cid)
$$;
CREATE FUNCTION pg_temp.b64u(b bytea) RETURNS text LANGUAGE sql AS $$
  SELECT translate(replace(encode(b, 'base64'), E'\n', ''), '+/=', '-_')
$$;
CREATE FUNCTION pg_temp.hs256(claims jsonb, secret text) RETURNS text LANGUAGE sql AS $$
  SELECT si || '.' || pg_temp.b64u(hmac(convert_to(si, 'UTF8'), convert_to(secret, 'UTF8'), 'sha256'))
    FROM (SELECT pg_temp.b64u(convert_to('{"alg":"HS256","typ":"JWT"}', 'UTF8')) || '.'
                 || pg_temp.b64u(convert_to(claims::text, 'UTF8')) AS si) s
$$;
CREATE FUNCTION pg_temp.idp(iss text, sub text, secret text DEFAULT 'an-idp-shared-secret-of-32-bytes-or-more!')
RETURNS text LANGUAGE sql AS $$
  SELECT pg_temp.hs256(jsonb_build_object('iss', iss, 'sub', sub,
                                          'exp', floor(extract(epoch FROM now()))::bigint + 600), secret)
$$;
SELECT tokex.trust_issuer('https://idp.test',
         jsonb_build_object('keys', jsonb_build_array(jsonb_build_object(
           'kty', 'oct', 'alg', 'HS256',
           'k', pg_temp.b64u(convert_to('an-idp-shared-secret-of-32-bytes-or-more!', 'UTF8'))))));

-- Run one exchange (q returns its jsonb) and check: the error code with a
-- well-formed §2.2.2 body, exactly one new audit row (denied, that error,
-- reason = error_description), and the description.
CREATE TEMP TABLE seen (exchange_id uuid PRIMARY KEY);
CREATE FUNCTION pg_temp.denies(q text, err text, descr text, reason_re text) RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
  r jsonb;
  got text[];
BEGIN
  INSERT INTO seen SELECT a.exchange_id FROM tokex.audit_event a ON CONFLICT DO NOTHING;
  EXECUTE q INTO r;
  RETURN NEXT is(CASE WHEN (SELECT array_agg(k ORDER BY k) FROM jsonb_object_keys(r) k) = '{error,error_description}'
                           AND r->>'error_description' <> ''
                      THEN r->>'error' ELSE 'malformed response: ' || coalesce(r::text, 'NULL') END,
                 err, descr);
  SELECT array_agg(concat_ws(' | ', a.decision, a.error,
                             CASE WHEN a.reason = r->>'error_description' THEN 'reason = error_description'
                                  ELSE 'reason: ' || coalesce(a.reason, 'NULL') END,
                             CASE WHEN a.jti IS NULL AND a.scope IS NULL AND a.expires_at IS NULL
                                  THEN 'no token' ELSE 'token fields set' END) ORDER BY a.at)
    INTO got
    FROM tokex.audit_event a WHERE a.exchange_id NOT IN (SELECT s.exchange_id FROM seen s)
      AND a.operation = 'exchange';
  RETURN NEXT is(got, ARRAY[concat_ws(' | ', 'denied', err, 'reason = error_description', 'no token')],
                 descr || ' [one denied audit row]');
  RETURN NEXT matches(r->>'error_description', reason_re, descr || ' [error_description]');
END
$$;

SELECT pg_temp.tok('alice') AS st, pg_temp.tok('agent-a') AS ta \gset

-- positive controls: the fixtures do grant when nothing is wrong
SELECT ok(pg_temp.x(:'st', :'ta', 'calendar') ? 'access_token', 'control: alice / agent-a / calendar is granted');
SELECT ok(pg_temp.x(pg_temp.idp('https://idp.test', 'u-erin'), :'ta', 'calendar') ? 'access_token',
          'control: an external IdP token for a mapped identity is granted');
SELECT is(pg_temp.x(:'st', pg_temp.tok('agent-c'), 'calendar', scope => 'calendar.write')->>'scope', 'calendar.write',
          'control: agent-c may have calendar.write');
SELECT is(pg_temp.x(pg_temp.tok('svc2'), :'ta', 'calendar')->>'scope', 'calendar.read',
          'control: svc2 / agent-a is allowed for calendar');

------------------------------------------------------------------------
-- invalid_request
------------------------------------------------------------------------
SELECT * FROM pg_temp.denies($$SELECT tokex.exchange(NULL, 'urn:ietf:params:oauth:token-type:jwt', audience => 'calendar')$$,
  'invalid_request', 'subject_token NULL', 'subject_token');
SELECT * FROM pg_temp.denies($$SELECT tokex.exchange('', 'urn:ietf:params:oauth:token-type:jwt', audience => 'calendar')$$,
  'invalid_request', 'subject_token empty', 'subject_token');
SELECT * FROM pg_temp.denies(format($$SELECT tokex.exchange(%L, NULL, audience => 'calendar')$$, :'st'),
  'invalid_request', 'subject_token_type NULL', 'subject_token_type');
SELECT * FROM pg_temp.denies(format($$SELECT tokex.exchange(%L, 'urn:ietf:params:oauth:token-type:saml2', audience => 'calendar')$$, :'st'),
  'invalid_request', 'subject_token_type saml2 (unsupported)', 'subject_token_type');
SELECT * FROM pg_temp.denies(format($$SELECT tokex.exchange(%L, 'jwt', audience => 'calendar')$$, :'st'),
  'invalid_request', 'subject_token_type not a URN', 'subject_token_type');
SELECT * FROM pg_temp.denies(format($$SELECT tokex.exchange(%L, 'urn:ietf:params:oauth:token-type:jwt', %L, NULL, audience => 'calendar')$$, :'st', :'ta'),
  'invalid_request', 'actor_token without actor_token_type', 'actor_token');
SELECT * FROM pg_temp.denies(format($$SELECT tokex.exchange(%L, 'urn:ietf:params:oauth:token-type:jwt', NULL, 'urn:ietf:params:oauth:token-type:jwt', audience => 'calendar')$$, :'st'),
  'invalid_request', 'actor_token_type without actor_token', 'actor_token');
SELECT * FROM pg_temp.denies(format($$SELECT tokex.exchange(%L, 'urn:ietf:params:oauth:token-type:jwt', %L, 'urn:ietf:params:oauth:token-type:saml1', audience => 'calendar')$$, :'st', :'ta'),
  'invalid_request', 'actor_token_type saml1 (unsupported)', 'actor_token_type');
SELECT * FROM pg_temp.denies(format($$SELECT tokex.exchange(%L, 'urn:ietf:params:oauth:token-type:jwt', %L, 'urn:ietf:params:oauth:token-type:jwt', audience => 'calendar', requested_token_type => 'urn:ietf:params:oauth:token-type:saml2')$$, :'st', :'ta'),
  'invalid_request', 'requested_token_type saml2', 'requested_token_type');
SELECT * FROM pg_temp.denies(format($$SELECT tokex.exchange(%L, 'urn:ietf:params:oauth:token-type:jwt', %L, 'urn:ietf:params:oauth:token-type:jwt', audience => 'calendar', requested_token_type => 'urn:ietf:params:oauth:token-type:id_token')$$, :'st', :'ta'),
  'invalid_request', 'requested_token_type id_token (tokex issues access tokens only)', 'requested_token_type');
SELECT * FROM pg_temp.denies(format($$SELECT pg_temp.x(%L, %L)$$, :'st', :'ta'),
  'invalid_request', 'neither audience nor resource', 'audience or resource');
SELECT * FROM pg_temp.denies(format($$SELECT pg_temp.x(%L, %L, res => 'calendar')$$, :'st', :'ta'),
  'invalid_request', 'resource that is not an absolute URI', 'resource');
SELECT * FROM pg_temp.denies(format($$SELECT pg_temp.x(%L, %L, 'calendar', scope => '')$$, :'st', :'ta'),
  'invalid_request', 'scope empty', 'scope');
SELECT * FROM pg_temp.denies(format($$SELECT pg_temp.x(%L, %L, 'calendar', scope => '   ')$$, :'st', :'ta'),
  'invalid_request', 'scope only spaces', 'scope');
SELECT * FROM pg_temp.denies(format($$SELECT pg_temp.x(%L, %L, 'calendar', scope => 'calendar"read')$$, :'st', :'ta'),
  'invalid_request', 'scope with a double quote', 'scope');
SELECT * FROM pg_temp.denies(format($$SELECT pg_temp.x(%L, %L, 'calendar', scope => E'calendar.read\\calendar.write')$$, :'st', :'ta'),
  'invalid_request', 'scope with a backslash', 'scope');
SELECT * FROM pg_temp.denies(format($$SELECT pg_temp.x(%L, %L, 'calendar', scope => E'calendar.read\tcalendar.write')$$, :'st', :'ta'),
  'invalid_request', 'scope separated by a tab', 'scope');
SELECT * FROM pg_temp.denies(format($$SELECT pg_temp.x(%L, %L, 'calendar', scope => 'calendar.réad')$$, :'st', :'ta'),
  'invalid_request', 'scope with a non-ASCII character', 'scope');

------------------------------------------------------------------------
-- invalid_grant: the tokens
------------------------------------------------------------------------
SELECT * FROM pg_temp.denies(format($$SELECT pg_temp.x('garbage', %L, 'calendar')$$, :'ta'),
  'invalid_grant', 'subject_token garbage', 'subject_token');
SELECT * FROM pg_temp.denies(format($$SELECT pg_temp.x('eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSJ9.', %L, 'calendar')$$, :'ta'),
  'invalid_grant', 'subject_token with alg none', 'subject_token');
SELECT * FROM pg_temp.denies(format($$SELECT pg_temp.x(%L, %L, 'calendar')$$,
                                    split_part(:'st', '.', 1) || '.' || split_part(:'st', '.', 2) || '.' || split_part(:'ta', '.', 3), :'ta'),
  'invalid_grant', 'subject_token carrying another token''s signature', 'subject_token');
SELECT * FROM pg_temp.denies(format($$SELECT pg_temp.x(%L, 'garbage', 'calendar')$$, :'st'),
  'invalid_grant', 'actor_token garbage', 'actor_token');
SELECT * FROM pg_temp.denies(format($$SELECT pg_temp.x(pg_temp.tok('alice', '{}', -120), %L, 'calendar')$$, :'ta'),
  'invalid_grant', 'subject token expired 120 s ago (beyond the 60 s skew)', 'subject_token: token expired');
SELECT * FROM pg_temp.denies(format($$SELECT pg_temp.x(pg_temp.tok('alice', '{}', -3600), %L, 'calendar')$$, :'ta'),
  'invalid_grant', 'subject token expired an hour ago', 'subject_token: token expired');
SELECT * FROM pg_temp.denies(format($$SELECT pg_temp.x(%L, pg_temp.tok('agent-a', '{}', -120), 'calendar')$$, :'st'),
  'invalid_grant', 'actor token expired 120 s ago', 'actor_token: token expired');
SELECT * FROM pg_temp.denies(format($$SELECT pg_temp.x(pg_temp.tok('alice', '{}', -30), %L, 'calendar')$$, :'ta'),
  'invalid_grant', 'subject token expired 30 s ago (within skew): nothing left to mint', 'expire');
SELECT * FROM pg_temp.denies(format($$SELECT pg_temp.x(pg_temp.tok('alice', jsonb_build_object('nbf', floor(extract(epoch FROM now()))::bigint + 600)), %L, 'calendar')$$, :'ta'),
  'invalid_grant', 'subject token not valid before 10 minutes from now', 'not yet valid');
SELECT * FROM pg_temp.denies(format($$SELECT pg_temp.x(tokex.jwt_sign('{"sub": "alice"}'), %L, 'calendar')$$, :'ta'),
  'invalid_grant', 'subject token without exp', 'exp');
SELECT * FROM pg_temp.denies(format($$SELECT pg_temp.x(pg_temp.idp('https://evil.test', 'u-erin'), %L, 'calendar')$$, :'ta'),
  'invalid_grant', 'subject token from an untrusted issuer', 'not trusted');
SELECT * FROM pg_temp.denies(format($$SELECT pg_temp.x(pg_temp.idp('https://idp.test', 'u-erin', 'a-different-secret-also-32-bytes-long!!'), %L, 'calendar')$$, :'ta'),
  'invalid_grant', 'subject token from the trusted IdP with a bad signature', 'subject_token');
SELECT * FROM pg_temp.denies(format($$SELECT pg_temp.x(pg_temp.idp('https://tokex.test', 'alice', 'anything-at-all-but-tokex-key-is-EC!!'), %L, 'calendar')$$, :'ta'),
  'invalid_grant', 'an HS256 token claiming tokex as issuer', 'subject_token');

------------------------------------------------------------------------
-- invalid_grant: identities
------------------------------------------------------------------------
SELECT * FROM pg_temp.denies(format($$SELECT pg_temp.x(pg_temp.tok('nobody'), %L, 'calendar')$$, :'ta'),
  'invalid_grant', 'subject is not a known identity', 'subject "nobody" is not a known identity');
SELECT * FROM pg_temp.denies(format($$SELECT pg_temp.x(pg_temp.idp('https://idp.test', 'u-unmapped'), %L, 'calendar')$$, :'ta'),
  'invalid_grant', 'external subject with no identity mapping', 'not a known identity');
SELECT * FROM pg_temp.denies(format($$SELECT pg_temp.x(pg_temp.idp('https://idp.test', 'erin'), %L, 'calendar')$$, :'ta'),
  'invalid_grant', 'external token whose sub is an identity id but not its mapped subject', 'not a known identity');
SELECT * FROM pg_temp.denies(format($$SELECT pg_temp.x(pg_temp.tok('u-erin'), %L, 'calendar')$$, :'ta'),
  'invalid_grant', 'a tokex token naming an external subject', 'not a known identity');
SELECT * FROM pg_temp.denies(format($$SELECT pg_temp.x(%L, pg_temp.tok('nobot'), 'calendar')$$, :'st'),
  'invalid_grant', 'actor is not a known identity', 'actor "nobot" is not a known identity');
SELECT * FROM pg_temp.denies(format($$SELECT pg_temp.x(pg_temp.tok('bob'), %L, 'calendar')$$, :'ta'),
  'invalid_grant', 'subject identity offboarded', 'identity "bob" is offboarded');
SELECT * FROM pg_temp.denies(format($$SELECT pg_temp.x(%L, pg_temp.tok('agent-s'), 'calendar')$$, :'st'),
  'invalid_grant', 'actor identity suspended', 'identity "agent-s" is suspended');
SELECT * FROM pg_temp.denies(format($$SELECT pg_temp.x(pg_temp.tok('hal', jsonb_build_object('iat', floor(extract(epoch FROM now()))::bigint - 60)), %L, 'calendar')$$, :'ta'),
  'invalid_grant', 'subject token issued before the identity''s tokens_valid_after', 'revocation');

------------------------------------------------------------------------
-- invalid_grant: delegation and policy
------------------------------------------------------------------------
SELECT * FROM pg_temp.denies(format($$SELECT pg_temp.x(pg_temp.tok('carol'), %L, 'calendar')$$, :'ta'),
  'invalid_grant', 'no delegation from carol to agent-a', 'no live delegation from "carol" to "agent-a"');
SELECT * FROM pg_temp.denies(format($$SELECT pg_temp.x(pg_temp.tok('dave'), %L, 'calendar')$$, :'ta'),
  'invalid_grant', 'delegation expired (valid_until in the past)', 'no live delegation from "dave" to "agent-a"');
SELECT * FROM pg_temp.denies($$SELECT pg_temp.x(pg_temp.tok('ivy'), pg_temp.tok('agent-b'), 'calendar')$$,
  'invalid_grant', 'delegation not yet valid (valid_from in the future)', 'no live delegation from "ivy" to "agent-b"');
SELECT * FROM pg_temp.denies($$SELECT pg_temp.x(pg_temp.tok('agent-a'), pg_temp.tok('alice'), 'calendar')$$,
  'invalid_grant', 'delegation in the wrong direction (agent for person)', 'no live delegation from "agent-a" to "alice"');
SELECT * FROM pg_temp.denies(format($$SELECT pg_temp.x(pg_temp.tok('frank'), %L, 'calendar')$$, :'ta'),
  'invalid_grant', 'a deny policy beats the allow policy', format('denied by policy %s', :p_deny_frank));
SELECT * FROM pg_temp.denies(format($$SELECT pg_temp.x(pg_temp.tok('svc'), %L, 'calendar')$$, :'ta'),
  'invalid_grant', 'no policy allows a service subject with this actor', 'no policy allows this exchange');

------------------------------------------------------------------------
-- invalid_target
------------------------------------------------------------------------
SELECT * FROM pg_temp.denies(format($$SELECT pg_temp.x(%L, %L, 'nowhere')$$, :'st', :'ta'),
  'invalid_target', 'unknown audience', 'audience "nowhere" is not a registered resource');
SELECT * FROM pg_temp.denies(format($$SELECT pg_temp.x(%L, %L, res => 'https://nowhere.test/')$$, :'st', :'ta'),
  'invalid_target', 'unknown resource', 'not a registered resource');
SELECT * FROM pg_temp.denies(format($$SELECT pg_temp.x(%L, %L, 'calendar mail')$$, :'st', :'ta'),
  'invalid_target', 'two audiences ''calendar mail''', 'one audience');
SELECT * FROM pg_temp.denies(format($$SELECT pg_temp.x(%L, %L, 'calendar', 'https://mail.test/')$$, :'st', :'ta'),
  'invalid_target', 'audience calendar and resource of mail disagree', 'different targets');
SELECT * FROM pg_temp.denies(format($$SELECT pg_temp.x(%L, %L, 'docs')$$, :'st', :'ta'),
  'invalid_target', 'audience outside the delegation''s audiences', 'does not cover audience "docs"');
SELECT * FROM pg_temp.denies(format($$SELECT pg_temp.x(%L, %L, res => 'https://docs.test/')$$, :'st', :'ta'),
  'invalid_target', 'resource outside the delegation''s audiences', 'does not cover audience "docs"');
SELECT * FROM pg_temp.denies(format($$SELECT pg_temp.x(%L, %L, 'mail', cid => 'app-cal')$$, :'st', :'ta'),
  'invalid_target', 'audience outside the client''s audiences', 'may not obtain tokens for "mail"');
SELECT * FROM pg_temp.denies(format($$SELECT pg_temp.x(pg_temp.tok('svc2'), %L, 'mail')$$, :'ta'),
  'invalid_target', 'the only allow policy for svc2 is restricted to calendar: mail', 'mail');

------------------------------------------------------------------------
-- invalid_scope
------------------------------------------------------------------------
SELECT * FROM pg_temp.denies(format($$SELECT pg_temp.x(%L, %L, 'calendar', scope => 'calendar.write')$$, :'st', :'ta'),
  'invalid_scope', 'up-scope beyond the delegation (agent-a has calendar.read only)', 'calendar.write');
SELECT * FROM pg_temp.denies(format($$SELECT pg_temp.x(%L, %L, 'calendar', scope => 'calendar.read calendar.write')$$, :'st', :'ta'),
  'invalid_scope', 'one allowed and one beyond the delegation: the whole request is refused', 'calendar.write');
SELECT * FROM pg_temp.denies($$SELECT pg_temp.x(pg_temp.tok('alice', '{"scope": "calendar.read"}'), pg_temp.tok('agent-c'), 'calendar', scope => 'calendar.write')$$,
  'invalid_scope', 'up-scope beyond the subject token''s scope claim', 'calendar.write');
SELECT * FROM pg_temp.denies($$SELECT pg_temp.x(pg_temp.tok('alice', '{"scope": "mail.read"}'), pg_temp.tok('agent-c'), 'calendar')$$,
  'invalid_scope', 'no scope requested, and nothing in the subject token''s scope fits calendar', 'no scope');
SELECT * FROM pg_temp.denies($$SELECT pg_temp.x(pg_temp.tok('alice'), pg_temp.tok('agent-c'), 'calendar', scope => 'mail.read')$$,
  'invalid_scope', 'a delegated scope the resource does not have (mail.read at calendar)', 'mail.read');
SELECT * FROM pg_temp.denies($$SELECT pg_temp.x(pg_temp.tok('alice'), pg_temp.tok('agent-c'), 'calendar', scope => 'calendar.admin')$$,
  'invalid_scope', 'a scope nobody has', 'calendar.admin');
SELECT * FROM pg_temp.denies($$SELECT pg_temp.x(pg_temp.tok('alice'), pg_temp.tok('agent-b'), 'calendar', scope => 'calendar.write')$$,
  'invalid_scope', 'a deny policy with scopes removes calendar.write for agent-b', 'calendar.write');
SELECT is(pg_temp.x(pg_temp.tok('alice'), pg_temp.tok('agent-b'), 'calendar')->>'scope', 'calendar.read',
          'deny policy with scopes: without a requested scope, agent-b gets the rest (calendar.read)');
SELECT is(pg_temp.x(pg_temp.tok('alice', '{"scope": "calendar.read calendar.write"}'), pg_temp.tok('agent-c'), 'calendar')->>'scope',
          'calendar.read calendar.write', 'control: a subject scope claim that covers both grants both');

------------------------------------------------------------------------
-- Totals
------------------------------------------------------------------------
SELECT is((SELECT count(*) FROM tokex.audit WHERE decision = 'denied' AND (error IS NULL OR reason IS NULL)), 0::bigint,
          'every denied row has an error and a reason');
SELECT is((SELECT count(*) FROM tokex.audit WHERE decision = 'denied' AND error NOT IN
             ('invalid_request', 'invalid_grant', 'invalid_target', 'invalid_scope', 'unauthorized_client')), 0::bigint,
          'every denied row carries an RFC 8693 / RFC 6749 error code');
SELECT is((SELECT count(*) FROM tokex.audit WHERE decision = 'denied' AND (jti IS NOT NULL OR scope IS NOT NULL OR expires_at IS NOT NULL)),
          0::bigint, 'no denied row names a token');

SELECT * FROM finish();
ROLLBACK;
