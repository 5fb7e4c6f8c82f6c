-- tokex walk-through: a person, two agents, a delegation, a resource, a
-- policy; a granted exchange, a denied one, a two-hop chain, a downstream
-- use, a revocation, and the auditor's view.  Run by test/demo.sh.
\set ON_ERROR_STOP 1
\pset footer off
SET client_min_messages = warning;
CREATE EXTENSION tokex;
ALTER DATABASE tokex_demo SET tokex.issuer = 'https://auth.example.com';
SET tokex.issuer = 'https://auth.example.com';
\echo '== 1. A signing key, generated inside the database (the private half never leaves it)'
SELECT tokex.create_key('ES256') IS NOT NULL AS key_created;
SELECT k->>'kty' AS kty, k->>'crv' AS crv, k->>'alg' AS alg, k ? 'd' AS private_part_published
  FROM jsonb_array_elements(tokex.jwks()->'keys') k;

\echo '== 2. The graph: Alice, her assistant agent, a booking sub-agent; who may act for whom'
INSERT INTO tokex.identity (id, kind) VALUES
  ('alice', 'human'), ('assistant', 'agent'), ('booker', 'agent');
INSERT INTO tokex.resource (audience, resource_uri, scopes, token_ttl) VALUES
  ('calendar-api', 'https://calendar.example.com/', '{calendar.read,calendar.write}', '5 minutes'),
  ('payments-api', NULL, '{payments.read,payments.send}', '2 minutes');
INSERT INTO tokex.delegation (principal, delegate, scopes, audiences, max_depth) VALUES
  ('alice', 'assistant', '{calendar.read,calendar.write,payments.read}', NULL, 2),
  ('assistant', 'booker', '{calendar.write}', '{calendar-api}', 1);
INSERT INTO tokex.policy (effect, subject_kind, actor_kind, description) VALUES
  ('allow', 'human', 'agent', 'people may let agents act for them within their delegations');
INSERT INTO tokex.policy (effect, audience, description) VALUES
  ('deny', 'payments-api', 'no agent moves money');
SELECT principal, delegate, scopes, audiences, max_depth FROM tokex.delegation ORDER BY id;

\echo '== 3. Alice signs in; the app starts a session for her assistant (the agent holds only this)'
SELECT tokex.start_session('alice', 'assistant', '{calendar.read,calendar.write}', '1 hour') AS s \gset
SELECT (:'s'::jsonb)->>'session_token' AS session_token, (:'s'::jsonb)->>'session_id' AS session_id \gset
SELECT tokex.identity_token('assistant') AS assistant_cred, tokex.identity_token('booker') AS booker_cred \gset
SELECT ((tokex.jwt_decode(:'session_token'))->'payload') - 'jti' - 'sid' - 'iat' - 'nbf' - 'exp' AS session_claims;

\echo '== 4. The assistant needs to read the calendar: exchange (granted)'
SELECT tokex.exchange(
         subject_token => :'session_token', subject_token_type => 'urn:ietf:params:oauth:token-type:jwt',
         actor_token => :'assistant_cred', actor_token_type => 'urn:ietf:params:oauth:token-type:jwt',
         audience => 'calendar-api', scope => 'calendar.read') AS r1 \gset
SELECT (:'r1'::jsonb) - 'access_token' AS response;
SELECT (:'r1'::jsonb)->>'access_token' AS t1 \gset
SELECT p->>'sub' AS sub, p->'act' AS act, p->>'aud' AS aud, p->>'scope' AS scope
  FROM (SELECT (tokex.jwt_decode(:'t1'))->'payload' AS p) x;

\echo '== 5. The calendar API introspects the token and records what it did with it'
SELECT i->>'active' AS active, i->>'sub' AS sub, i->'act' AS act FROM (SELECT tokex.introspect(:'t1') i) x;
SELECT tokex.record_use(:'t1', 'GET /calendars/alice/events', '200 OK') IS NOT NULL AS use_recorded;

\echo '== 6. The booker agent is not on the session''s may_act: refused'
SELECT tokex.exchange(:'session_token', 'urn:ietf:params:oauth:token-type:jwt',
                      :'booker_cred', 'urn:ietf:params:oauth:token-type:jwt', audience => 'calendar-api') AS denied;

\echo '== 7. The assistant hands the booking to the booker: a two-hop chain (act nests the chain)'
SELECT tokex.exchange(:'t1', 'urn:ietf:params:oauth:token-type:access_token',
                      :'booker_cred', 'urn:ietf:params:oauth:token-type:jwt',
                      audience => 'calendar-api', scope => 'calendar.write') AS r2 \gset
SELECT (:'r2'::jsonb)->>'error' AS error, (:'r2'::jsonb)->>'error_description' AS why;
\echo '   (denied: the first token was scoped to calendar.read, and a chain never widens scope)'
SELECT tokex.exchange(:'session_token', 'urn:ietf:params:oauth:token-type:jwt',
                      :'assistant_cred', 'urn:ietf:params:oauth:token-type:jwt',
                      audience => 'calendar-api') AS r3 \gset
SELECT tokex.exchange((:'r3'::jsonb)->>'access_token', 'urn:ietf:params:oauth:token-type:access_token',
                      :'booker_cred', 'urn:ietf:params:oauth:token-type:jwt',
                      audience => 'calendar-api', scope => 'calendar.write') AS r4 \gset
SELECT p->>'sub' AS sub, p->'act' AS act, p->>'scope' AS scope
  FROM (SELECT (tokex.jwt_decode((:'r4'::jsonb)->>'access_token'))->'payload' AS p) x;

\echo '== 8. The org policy forbids agents on the payments API: refused'
SELECT tokex.exchange(:'session_token', 'urn:ietf:params:oauth:token-type:jwt',
                      :'assistant_cred', 'urn:ietf:params:oauth:token-type:jwt',
                      audience => 'payments-api') AS denied;

\echo '== 9. Alice is offboarded: one UPDATE, and the next exchange and introspection refuse'
SELECT tokex.revoke_identity('alice', 'left the company');
SELECT tokex.exchange(:'session_token', 'urn:ietf:params:oauth:token-type:jwt',
                      :'assistant_cred', 'urn:ietf:params:oauth:token-type:jwt',
                      audience => 'calendar-api') AS after_offboarding;
SELECT tokex.introspect(:'t1') AS token_minted_before;
SELECT kind, target, reason FROM tokex.revocation;

\echo '== 10. The auditor: who acted, on whose behalf, with what privilege, with what result'
SET ROLE tokex_auditor;
-- every credential handed out or refused (operation: exchange, session,
-- identity_token, ...), each committed before the token left tokex
SELECT to_char(at, 'HH24:MI:SS') AS at, operation, decision, subject AS on_behalf_of,
       array_to_string(actor_chain, ' > ') AS actors, audience, scope, error, reason
  FROM tokex.audit ORDER BY at;
SELECT action, outcome, on_behalf_of, actor, audience, scope, delegation_ids, policy_ids
  FROM tokex.audit_trail;
RESET ROLE;
