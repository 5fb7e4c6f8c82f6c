-- Translation (outbound): a vaulted downstream credential released through
-- the exchange, after the whole decision, with a transaction token beside it
-- naming sub and act; the audit row names the credential's id, never its
-- value.  Needs tokex.vault_key_file (test/pgtap.sh sets one up).
\ir preamble.psql
SELECT plan(21);

SELECT tokex.create_key() AS kid \gset
INSERT INTO tokex.identity (id, kind) VALUES ('alice', 'human'), ('bob', 'human'), ('agent-a', 'agent');
INSERT INTO tokex.resource (audience, scopes, token_format) VALUES
  ('billing', '{billing.read}', 'credential'), ('legacy', '{legacy.read}', 'credential');
INSERT INTO tokex.delegation (principal, delegate, scopes) VALUES
  ('alice', 'agent-a', '{billing.read,legacy.read}'), ('bob', 'agent-a', '{billing.read,legacy.read}');
INSERT INTO tokex.policy (effect) VALUES ('allow');

SELECT tokex.store_credential('billing', 'sk_shared_1234567890', kind => 'bearer') AS c_shared,
       tokex.store_credential('billing', 'alice:correct horse', principal => 'alice', kind => 'basic') AS c_alice,
       tokex.store_credential('legacy', 'lk_0987654321', kind => 'api_key', header => 'X-Legacy-Key') AS c_legacy \gset

CREATE FUNCTION pg_temp.tok(sub text) RETURNS text LANGUAGE sql AS $$
  SELECT tokex.jwt_sign(jsonb_build_object('sub', sub, 'iat', floor(extract(epoch FROM now()))::bigint,
                                           'exp', floor(extract(epoch FROM now()))::bigint + 3600))
$$;
CREATE FUNCTION pg_temp.x(person text, aud text) RETURNS jsonb LANGUAGE sql AS $$
  SELECT tokex.exchange(pg_temp.tok(person), 'urn:ietf:params:oauth:token-type:jwt',
                        pg_temp.tok('agent-a'), 'urn:ietf:params:oauth:token-type:jwt', audience => aud)
$$;
CREATE FUNCTION pg_temp.audit_of(r jsonb) RETURNS tokex.audit_event LANGUAGE sql AS $$
  SELECT * FROM tokex.audit_event WHERE jti = ((tokex.jwt_decode(r->>'txn_token'))->'payload'->>'jti')::uuid
$$;

SELECT pg_temp.x('alice', 'billing') AS r \gset
SELECT is((:'r'::jsonb)->>'access_token', 'alice:correct horse', 'alice''s own credential is released to her agent');
SELECT is(format('%s|%s', (:'r'::jsonb)->>'issued_token_type', (:'r'::jsonb)->>'token_type'),
          'urn:tokex:token-type:credential|N_A', '... issued_token_type credential, token_type N_A');
SELECT is((:'r'::jsonb)->'credential', jsonb_build_object('kind', 'basic', 'header', 'Authorization',
                                                          'value', 'Basic ' || encode(convert_to('alice:correct horse', 'UTF8'), 'base64')),
          '... and how the downstream takes it: Authorization: Basic base64(user:password)');
SELECT tokex.jwt_verify((:'r'::jsonb)->>'txn_token', 'billing') AS t \gset
SELECT is((tokex.jwt_decode((:'r'::jsonb)->>'txn_token'))->'header'->>'typ', 'txntoken+jwt',
          'beside it, a transaction token');
SELECT is(format('%s|%s|%s', (:'t'::jsonb)->>'sub', (:'t'::jsonb)->'act'->>'sub', (:'t'::jsonb)->>'aud'),
          'alice|agent-a|billing', '... naming sub (the person), act (the agent) and the audience');
SELECT is((pg_temp.audit_of(:'r')).credential_id, :'c_alice'::bigint, 'the audit row names the credential''s id');
SELECT is((pg_temp.audit_of(:'r')).issued_token_type, 'urn:tokex:token-type:credential', '... and what was issued');
SELECT is((SELECT count(*) FROM tokex.audit_event a WHERE row_to_json(a)::text LIKE '%correct horse%'
                                                     OR row_to_json(a)::text LIKE '%sk_shared%'), 0::bigint,
          '... and no audit row holds a secret');
SELECT is((SELECT count(*) FROM tokex.revocation r WHERE row_to_json(r)::text LIKE '%correct horse%'), 0::bigint,
          '... nor any revocation row');

SELECT pg_temp.x('bob', 'billing') AS r \gset
SELECT is((:'r'::jsonb)->>'access_token', 'sk_shared_1234567890', 'bob has none of his own: the shared one');
SELECT is((:'r'::jsonb)->'credential'->>'value', 'Bearer sk_shared_1234567890', '... as a bearer credential');

SELECT pg_temp.x('alice', 'legacy') AS r \gset
SELECT is((:'r'::jsonb)->'credential', '{"kind": "api_key", "header": "X-Legacy-Key", "value": "lk_0987654321"}'::jsonb,
          'an API key credential goes in the header stored with it');

-- refused: nothing released, refusal audited
SELECT count(*) AS denied0 FROM tokex.audit_event WHERE decision = 'denied' \gset
INSERT INTO tokex.policy (effect, subject, audience, description) VALUES ('deny', 'bob', 'billing', 'bob is off billing');
SELECT pg_temp.x('bob', 'billing') AS r \gset
SELECT is((:'r'::jsonb)->>'error', 'invalid_grant', 'a deny policy: refused');
SELECT ok(NOT (:'r'::jsonb ? 'access_token') AND NOT (:'r'::jsonb ? 'credential') AND NOT (:'r'::jsonb ? 'txn_token'),
          '... nothing released, no transaction token');
SELECT is((SELECT count(*) FROM tokex.audit_event WHERE decision = 'denied') - :denied0, 1::bigint,
          '... and the refusal is audited');
SELECT is((SELECT credential_id FROM tokex.audit_event WHERE decision = 'denied' ORDER BY at DESC LIMIT 1), NULL::bigint,
          '... naming no credential');

SELECT tokex.revoke_credential(:c_alice, 'rotated at the downstream');
SELECT is((pg_temp.x('alice', 'billing'))->>'access_token', 'sk_shared_1234567890',
          'alice''s revoked credential is never released: the shared one is');
SELECT tokex.revoke_credential(:c_shared, 'decommissioned');
SELECT pg_temp.x('alice', 'billing') AS r \gset
SELECT is((:'r'::jsonb)->>'error_description', 'no live credential is stored for "billing", for "alice" or shared',
          'none left: refused, invalid_target');
SELECT is((:'r'::jsonb)->>'error', 'invalid_target', '... as an unservable target');
SELECT is((SELECT count(*) FROM tokex.revocation WHERE kind = 'credential'), 2::bigint,
          'each credential revocation is in tokex.revocation');

SELECT is(tokex.exchange(pg_temp.tok('alice'), 'urn:ietf:params:oauth:token-type:jwt', pg_temp.tok('agent-a'),
                         'urn:ietf:params:oauth:token-type:jwt', audience => 'legacy',
                         requested_token_type => 'urn:ietf:params:oauth:token-type:jwt')->>'error',
          'invalid_request', 'a JWT cannot be asked for a credential resource');

SELECT * FROM finish();
ROLLBACK;
