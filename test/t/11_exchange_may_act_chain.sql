-- may_act (RFC 8693 §4.4) and delegation chains (§4.1 nested act): who may
-- act, how deep a chain may grow, and that a chain stays bound to the live
-- delegations it was built on.
\ir preamble.psql
SELECT plan(59);

SELECT tokex.create_key() AS kid \gset
INSERT INTO tokex.identity (id, kind) VALUES
  ('alice', 'human'), ('agent-a', 'agent'), ('agent-b', 'agent'), ('agent-c', 'agent'),
  ('agent-d', 'agent'), ('agent-x', 'agent');
INSERT INTO tokex.identity (id, kind, issuer, subject) VALUES ('ext-bot', 'agent', 'https://idp.test', 'bot-123');
INSERT INTO tokex.resource (audience, scopes, token_ttl) VALUES ('calendar', '{calendar.read}', '5 minutes');
INSERT INTO tokex.delegation (principal, delegate, scopes, max_depth) VALUES ('alice', 'agent-a', '{calendar.read}', 4);
SELECT currval('tokex.delegation_id_seq') AS d_alice_a \gset
INSERT INTO tokex.delegation (principal, delegate, scopes, max_depth) VALUES ('agent-a', 'agent-b', '{calendar.read}', 3);
SELECT currval('tokex.delegation_id_seq') AS d_a_b \gset
INSERT INTO tokex.delegation (principal, delegate, scopes, max_depth) VALUES ('agent-b', 'agent-c', '{calendar.read}', 1);
SELECT currval('tokex.delegation_id_seq') AS d_b_c \gset
INSERT INTO tokex.delegation (principal, delegate, scopes, max_depth) VALUES
  ('agent-c', 'agent-d', '{calendar.read}', 1),   -- exists, but b->c may not be re-delegated
  ('agent-b', 'agent-a', '{calendar.read}', 1),   -- a loop back to agent-a
  ('alice', 'agent-x', '{calendar.read}', 1),     -- x may act for alice, but not pass it on
  ('agent-x', 'agent-b', '{calendar.read}', 1),
  ('alice', 'ext-bot', '{calendar.read}', 1);
INSERT INTO tokex.policy (effect, subject_kind, actor_kind) VALUES ('allow', 'human', 'agent');

CREATE FUNCTION pg_temp.tok(sub text, extra jsonb DEFAULT '{}', ttl int DEFAULT 7200) RETURNS text
LANGUAGE sql AS $$
  SELECT tokex.jwt_sign(jsonb_build_object('sub', sub, 'iat', floor(extract(epoch FROM now()))::bigint,
                                           'exp', floor(extract(epoch FROM now()))::bigint + ttl) || extra)
$$;
CREATE FUNCTION pg_temp.claims(tok text) RETURNS jsonb LANGUAGE sql AS $$
  SELECT tokex.jwt_decode(tok)->'payload'
$$;
-- subject token type: jwt for a person's token, access_token for one tokex minted
CREATE FUNCTION pg_temp.x(st text, at text, stt text DEFAULT 'jwt') RETURNS jsonb LANGUAGE sql AS $$
  SELECT tokex.exchange(st, 'urn:ietf:params:oauth:token-type:' || stt,
                        at, CASE WHEN at IS NOT NULL THEN 'urn:ietf:params:oauth:token-type:jwt' END,
                        audience => 'calendar')
$$;
-- an external IdP's HS256 token
CREATE FUNCTION pg_temp.b64u(b bytea) RETURNS text LANGUAGE sql AS $$
  SELECT translate(replace(encode(b, 'base64'), E'\n', ''), '+/=', '-_')
$$;
CREATE FUNCTION pg_temp.hs256(claims jsonb, secret bytea) RETURNS text LANGUAGE sql AS $$
  SELECT si || '.' || pg_temp.b64u(hmac(convert_to(si, 'UTF8'), secret, 'sha256'))
    FROM (SELECT pg_temp.b64u(convert_to('{"alg":"HS256","typ":"JWT"}', 'UTF8')) || '.'
                 || pg_temp.b64u(convert_to(claims::text, 'UTF8')) AS si) s
$$;
SELECT convert_to('an-idp-shared-secret-of-32-bytes-or-more!', 'UTF8') AS idp_secret \gset
SELECT tokex.trust_issuer('https://idp.test',
         jsonb_build_object('keys', jsonb_build_array(jsonb_build_object(
           'kty', 'oct', 'alg', 'HS256', 'k', pg_temp.b64u(:'idp_secret'::bytea)))));
SELECT pg_temp.hs256(jsonb_build_object('iss', 'https://idp.test', 'sub', 'bot-123',
                                        'exp', floor(extract(epoch FROM now()))::bigint + 600),
                     :'idp_secret'::bytea) AS bot_tok \gset

SELECT pg_temp.tok('agent-a') AS ta, pg_temp.tok('agent-b') AS tb, pg_temp.tok('agent-c') AS tc,
       pg_temp.tok('agent-d') AS td, pg_temp.tok('agent-x') AS tx, pg_temp.tok('alice') AS t_alice \gset

------------------------------------------------------------------------
-- may_act
------------------------------------------------------------------------
SELECT pg_temp.x(pg_temp.tok('alice', '{"may_act": {"sub": "agent-a"}}'), :'ta') AS r \gset
SELECT ok((:'r'::jsonb) ? 'access_token', 'may_act object naming the actor: granted');
SELECT is(pg_temp.claims((:'r'::jsonb)->>'access_token')->'act', '{"sub": "agent-a"}'::jsonb, '... act names it');

SELECT pg_temp.x(pg_temp.tok('alice', '{"may_act": {"sub": "agent-a"}}'), :'tx') AS r \gset
SELECT is((:'r'::jsonb)->>'error', 'invalid_grant',
          'may_act object naming another agent: invalid_grant, even with a live delegation to this one');
SELECT matches((:'r'::jsonb)->>'error_description', 'may_act', '... and the description says may_act');
SELECT ok(pg_temp.x(pg_temp.tok('alice'), :'tx') ? 'access_token', 'without may_act, that same actor is granted');

SELECT ok(pg_temp.x(pg_temp.tok('alice', '{"may_act": [{"sub": "agent-x"}, {"sub": "agent-a"}]}'), :'ta') ? 'access_token',
          'may_act array: the second entry admits agent-a');
SELECT ok(pg_temp.x(pg_temp.tok('alice', '{"may_act": [{"sub": "agent-x"}, {"sub": "agent-a"}]}'), :'tx') ? 'access_token',
          'may_act array: the first entry admits agent-x');
SELECT is(pg_temp.x(pg_temp.tok('alice', '{"may_act": [{"sub": "agent-b"}, {"sub": "agent-a"}]}'), :'tx')->>'error',
          'invalid_grant', 'may_act array without the actor: invalid_grant');

SELECT ok(pg_temp.x(pg_temp.tok('alice', '{"may_act": {"sub": "agent-a", "iss": "https://tokex.test"}}'), :'ta') ? 'access_token',
          'may_act with iss = the actor token''s issuer: granted');
SELECT is(pg_temp.x(pg_temp.tok('alice', '{"may_act": {"sub": "agent-a", "iss": "https://idp.test"}}'), :'ta')->>'error',
          'invalid_grant', 'may_act with the right sub but another iss: invalid_grant');

SELECT pg_temp.x(pg_temp.tok('alice', '{"may_act": {"sub": "bot-123", "iss": "https://idp.test"}}'), :'bot_tok') AS r \gset
SELECT ok((:'r'::jsonb) ? 'access_token', 'may_act {sub, iss} naming an external IdP''s agent: granted');
SELECT is(pg_temp.claims((:'r'::jsonb)->>'access_token')->'act', '{"sub": "ext-bot"}'::jsonb,
          '... act.sub is the identity id, not the IdP''s subject');
SELECT is((SELECT actor_issuer FROM tokex.audit WHERE jti::text = pg_temp.claims((:'r'::jsonb)->>'access_token')->>'jti'),
          'https://idp.test', '... and the audit row records the actor''s issuer');
SELECT is(pg_temp.x(pg_temp.tok('alice', '{"may_act": {"sub": "bot-123", "iss": "https://tokex.test"}}'), :'bot_tok')->>'error',
          'invalid_grant', 'the same sub from another issuer is not admitted');

SELECT pg_temp.x(pg_temp.tok('alice', '{"may_act": {"sub": "agent-a"}}'), NULL) AS r \gset
SELECT is((:'r'::jsonb)->>'error', 'invalid_request', 'may_act in the subject token but no actor_token: invalid_request');
SELECT is((SELECT error FROM tokex.audit ORDER BY at DESC LIMIT 1), 'invalid_request', '... and it is audited');

SELECT is(pg_temp.x(pg_temp.tok('alice', '{"may_act": "agent-a"}'), :'ta')->>'error', 'invalid_grant',
          'may_act that is a string: invalid_grant');
SELECT is(pg_temp.x(pg_temp.tok('alice', '{"may_act": []}'), :'ta')->>'error', 'invalid_grant',
          'may_act that is an empty array: invalid_grant');

------------------------------------------------------------------------
-- Chains: 2 and 3 hops, the current actor outermost
------------------------------------------------------------------------
SELECT pg_temp.x(pg_temp.tok('alice', '{"may_act": {"sub": "agent-a"}}'), :'ta') AS h1 \gset
SELECT (:'h1'::jsonb)->>'access_token' AS t1 \gset
SELECT pg_temp.x(:'t1', :'tb', 'access_token') AS h2 \gset
SELECT (:'h2'::jsonb)->>'access_token' AS t2 \gset
SELECT ok((:'h2'::jsonb) ? 'access_token', '2 hops: alice -> agent-a -> agent-b is granted');
SELECT is(pg_temp.claims(:'t2')->>'sub', 'alice', '2 hops: sub is still the person');
SELECT is(pg_temp.claims(:'t2')->'act', '{"sub": "agent-b", "act": {"sub": "agent-a"}}'::jsonb,
          '2 hops: act = agent-b outermost, agent-a nested');
SELECT results_eq(
  format($q$SELECT subject, actor, actor_chain, delegation_ids FROM tokex.audit WHERE jti::text = %L$q$,
         pg_temp.claims(:'t2')->>'jti'),
  format($q$VALUES ('alice'::text, 'agent-b'::text, '{agent-a,agent-b}'::text[], '{%s,%s}'::bigint[])$q$,
         :d_alice_a, :d_a_b),
  '2 hops: audit actor = current, actor_chain first to current, one delegation per hop in order');

SELECT pg_temp.x(:'t2', :'tc', 'access_token') AS h3 \gset
SELECT (:'h3'::jsonb)->>'access_token' AS t3 \gset
SELECT ok((:'h3'::jsonb) ? 'access_token', '3 hops: ... -> agent-c is granted');
SELECT is(pg_temp.claims(:'t3')->'act', '{"sub": "agent-c", "act": {"sub": "agent-b", "act": {"sub": "agent-a"}}}'::jsonb,
          '3 hops: act nests agent-c > agent-b > agent-a');
SELECT is(pg_temp.claims(:'t3')->>'sub', 'alice', '3 hops: sub is still the person');
SELECT results_eq(
  format($q$SELECT actor, actor_chain, delegation_ids FROM tokex.audit WHERE jti::text = %L$q$,
         pg_temp.claims(:'t3')->>'jti'),
  format($q$VALUES ('agent-c'::text, '{agent-a,agent-b,agent-c}'::text[], '{%s,%s,%s}'::bigint[])$q$,
         :d_alice_a, :d_a_b, :d_b_c),
  '3 hops: audit chain and delegations');

------------------------------------------------------------------------
-- Depth: the delegation's max_depth and tokex.max_chain_depth
------------------------------------------------------------------------
SELECT pg_temp.x(:'t3', :'td', 'access_token') AS r \gset
SELECT is((:'r'::jsonb)->>'error', 'invalid_grant', 'b -> c has max_depth 1: c cannot re-delegate to d (c -> d exists)');
SELECT is((:'r'::jsonb)->>'error_description',
          format('delegation %s from "agent-b" to "agent-c" allows 1 hop(s), the chain needs 2', :d_b_c),
          '... the description names that delegation and the depth');
UPDATE tokex.delegation SET max_depth = 2 WHERE id = :d_b_c;
SELECT is(pg_temp.claims(pg_temp.x(:'t3', :'td', 'access_token')->>'access_token')->'act',
          '{"sub": "agent-d", "act": {"sub": "agent-c", "act": {"sub": "agent-b", "act": {"sub": "agent-a"}}}}'::jsonb,
          'with b -> c max_depth 2: the 4th hop is granted, 4 actors nested');
UPDATE tokex.delegation SET max_depth = 1 WHERE id = :d_b_c;

SELECT pg_temp.x(pg_temp.tok('alice'), :'tx') AS rx \gset
SELECT ok((:'rx'::jsonb) ? 'access_token', 'alice -> agent-x (max_depth 1) is granted');
SELECT pg_temp.x((:'rx'::jsonb)->>'access_token', :'tb', 'access_token') AS r \gset
SELECT is((:'r'::jsonb)->>'error', 'invalid_grant',
          'alice -> agent-x has max_depth 1: agent-x cannot pass it to agent-b (x -> b exists)');
SELECT results_eq(
  $$SELECT decision, error, actor_chain FROM tokex.audit ORDER BY at DESC LIMIT 1$$,
  $$VALUES ('denied'::text, 'invalid_grant'::text, '{agent-x,agent-b}'::text[])$$,
  '... audited as denied with the chain it tried');

SET LOCAL tokex.max_chain_depth = 1;
SELECT ok(pg_temp.x(pg_temp.tok('alice'), :'ta') ? 'access_token', 'tokex.max_chain_depth = 1: one actor is fine');
SELECT pg_temp.x(:'t1', :'tb', 'access_token') AS r \gset
SELECT is((:'r'::jsonb)->>'error', 'invalid_grant', 'tokex.max_chain_depth = 1: a second actor is refused');
SELECT matches((:'r'::jsonb)->>'error_description', 'max_chain_depth', '... the description names tokex.max_chain_depth');
SELECT results_eq(
  $$SELECT actor, actor_chain FROM tokex.audit ORDER BY at DESC LIMIT 1$$,
  $$VALUES ('agent-b'::text, '{agent-a,agent-b}'::text[])$$,
  '... and the audit row names the refused actor agent-b and the chain it tried');
SELECT is(pg_temp.x(:'t2', NULL, 'access_token')->>'error', 'invalid_grant',
          'tokex.max_chain_depth = 1: a 2-actor token re-exchanged without actor is refused too');
SET LOCAL tokex.max_chain_depth = 2;
SELECT ok(pg_temp.x(:'t1', :'tb', 'access_token') ? 'access_token', 'tokex.max_chain_depth = 2: two actors are fine');
SELECT is(pg_temp.x(:'t2', :'tc', 'access_token')->>'error', 'invalid_grant',
          'tokex.max_chain_depth = 2: a third is refused although every delegation allows it');
RESET tokex.max_chain_depth;
SELECT ok(pg_temp.x(:'t2', :'tc', 'access_token') ? 'access_token', 'default max_chain_depth (4): the third is granted again');

------------------------------------------------------------------------
-- The same identity twice in a chain
------------------------------------------------------------------------
SELECT pg_temp.x(:'t2', :'ta', 'access_token') AS r \gset
SELECT is((:'r'::jsonb)->>'error', 'invalid_grant',
          'alice -> a -> b -> a (b -> a delegation exists): invalid_grant');
SELECT matches((:'r'::jsonb)->>'error_description', 'twice', '... because agent-a appears twice');
SELECT is(pg_temp.x(:'t_alice', :'t_alice')->>'error', 'invalid_grant', 'the subject as its own actor: invalid_grant');
SELECT is(pg_temp.x(:'t1', :'ta', 'access_token')->>'error', 'invalid_grant',
          'the current actor re-presenting itself as a new actor: invalid_grant');

------------------------------------------------------------------------
-- Re-exchange without an actor_token keeps the chain
------------------------------------------------------------------------
SELECT pg_temp.x(:'t1', NULL, 'access_token') AS r \gset
SELECT ok((:'r'::jsonb) ? 'access_token', '1-hop token re-exchanged without actor_token: granted');
SELECT is(pg_temp.claims((:'r'::jsonb)->>'access_token')->'act', '{"sub": "agent-a"}'::jsonb,
          '... its act is kept');
SELECT is(pg_temp.claims((:'r'::jsonb)->>'access_token')->>'sub', 'alice', '... sub is kept');
SELECT results_eq(
  format($q$SELECT actor, actor_chain, delegation_ids, actor_issuer FROM tokex.audit WHERE jti::text = %L$q$,
         pg_temp.claims((:'r'::jsonb)->>'access_token')->>'jti'),
  format($q$VALUES ('agent-a'::text, '{agent-a}'::text[], '{%s}'::bigint[], NULL::text)$q$, :d_alice_a),
  '... audit names the kept actor and its delegation');
SELECT pg_temp.x(:'t3', NULL, 'access_token') AS r \gset
SELECT is(pg_temp.claims((:'r'::jsonb)->>'access_token')->'act',
          '{"sub": "agent-c", "act": {"sub": "agent-b", "act": {"sub": "agent-a"}}}'::jsonb,
          '3-hop token re-exchanged without actor_token: the nested act is kept in order');
SELECT is(pg_temp.claims(pg_temp.x(:'t2', NULL, 'access_token')->>'access_token')->'act',
          '{"sub": "agent-b", "act": {"sub": "agent-a"}}'::jsonb,
          '2-hop token re-exchanged without actor_token: act kept');

-- live delegations are re-checked at every exchange
UPDATE tokex.delegation SET revoked_at = now() WHERE id = :d_a_b;
SELECT pg_temp.x(:'t2', NULL, 'access_token') AS r \gset
SELECT is((:'r'::jsonb)->>'error', 'invalid_grant',
          'a -> b revoked: the 2-hop token re-exchanged without actor is refused');
SELECT is((:'r'::jsonb)->>'error_description', 'no live delegation from "agent-a" to "agent-b"',
          '... because that delegation is no longer live');
SELECT is(pg_temp.x(:'t3', NULL, 'access_token')->>'error', 'invalid_grant', '... and so is the 3-hop one');
SELECT is(pg_temp.x(:'t1', :'tb', 'access_token')->>'error', 'invalid_grant', '... and a new hop a -> b');
SELECT ok(pg_temp.x(:'t1', NULL, 'access_token') ? 'access_token', '... while alice -> a alone still stands');
UPDATE tokex.delegation SET revoked_at = now() WHERE id = :d_alice_a;
SELECT pg_temp.x(:'t1', NULL, 'access_token') AS r \gset
SELECT is((:'r'::jsonb)->>'error', 'invalid_grant', 'alice -> a revoked: the 1-hop token re-exchanged without actor is refused');
SELECT matches((:'r'::jsonb)->>'error_description', 'no live delegation', '... no live delegation');
SELECT results_eq(
  $$SELECT decision, error, subject, actor FROM tokex.audit ORDER BY at DESC LIMIT 1$$,
  $$VALUES ('denied'::text, 'invalid_grant'::text, 'alice'::text, 'agent-a'::text)$$,
  '... audited as denied for alice / agent-a');
SELECT is(pg_temp.x(pg_temp.tok('alice', '{"may_act": {"sub": "agent-a"}}'), :'ta')->>'error', 'invalid_grant',
          '... and a fresh first hop to agent-a is refused');

SELECT * FROM finish();
ROLLBACK;
