-- Rows of a 0.2 installation, written through 0.2's admin API and plain DML
-- (the graph, a client, an issuer, a session, revocations) and as 0.2's C
-- code writes audit rows.  run.sh loads this after CREATE EXTENSION tokex
-- VERSION '0.2' and before ALTER EXTENSION tokex UPDATE.
SELECT tokex.create_key();

INSERT INTO tokex.trusted_issuer (issuer, jwks, audience)
SELECT 'https://idp.example', pg_catalog.jsonb_build_object('keys', pg_catalog.jsonb_build_array(k.public_jwk)), 'tokex'
  FROM tokex._generate_key('ES256') k;

INSERT INTO tokex.identity (id, kind, issuer, subject, attributes) VALUES
  ('alice', 'human', 'https://idp.example', 'alice@example', '{"dept": "ops"}'),
  ('assistant', 'agent', NULL, NULL, '{}'),
  ('bob', 'human', NULL, NULL, '{}');
UPDATE tokex.identity SET status = 'offboarded', status_reason = 'left', tokens_valid_after = '2026-01-01'
 WHERE id = 'bob';

INSERT INTO tokex.resource (audience, resource_uri, scopes, token_ttl) VALUES
  ('calendar', 'https://calendar.example/', '{calendar.read,calendar.write}', '10 minutes');
INSERT INTO tokex.delegation (principal, delegate, scopes, audiences, max_depth) VALUES
  ('alice', 'assistant', '{calendar.read,calendar.write}', '{calendar}', 2);
INSERT INTO tokex.policy (effect, audience, scopes, description) VALUES
  ('allow', 'calendar', '{calendar.read}', 'read only');
INSERT INTO tokex.client (client_id, identity, audiences, secret_hash, description) VALUES
  ('calendar-app', 'assistant', '{calendar}',
   'pbkdf2-sha256$600000$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA', 'the calendar tier');
INSERT INTO tokex.session (id, principal, agent, delegation_id, scopes, expires_at) VALUES
  ('5e551011-0000-4000-8000-000000000001', 'alice', 'assistant',
   (SELECT id FROM tokex.delegation), '{calendar.read}', pg_catalog.now() + interval '1 hour');

INSERT INTO tokex.audit_event (exchange_id, decision, subject, actor, actor_chain, client_id, audience,
                               requested_scope, scope, jti, expires_at, delegation_ids, policy_ids,
                               subject_issuer, actor_issuer, subject_token_sha256, actor_token_sha256,
                               issued_token_type, operation)
VALUES ('aaaaaaaa-0000-4000-8000-000000000001', 'granted', 'alice', 'assistant', '{assistant}',
        'calendar-app', 'calendar', '{calendar.read}', '{calendar.read}',
        'aaaaaaaa-0000-4000-8000-000000000001', pg_catalog.now() + interval '5 minutes',
        ARRAY[(SELECT id FROM tokex.delegation)], ARRAY[(SELECT id FROM tokex.policy)],
        'https://idp.example', 'https://tokex.upgrade.test',
        pg_catalog.sha256('subject'), pg_catalog.sha256('actor'),
        'urn:ietf:params:oauth:token-type:access_token', 'exchange');
INSERT INTO tokex.audit_event (exchange_id, decision, error, reason, client_id, audience, operation)
VALUES ('aaaaaaaa-0000-4000-8000-000000000003', 'denied', 'invalid_client', 'client authentication failed',
        'nobody', 'calendar', 'exchange');
INSERT INTO tokex.token_use (exchange_id, action, outcome)
VALUES ('aaaaaaaa-0000-4000-8000-000000000001', 'GET /events', '200');

INSERT INTO tokex.revoked_token (issuer, jti, reason, expires_at) VALUES
  ('https://idp.example', 'idp-jti-42', 'reported by the IdP', NULL);
