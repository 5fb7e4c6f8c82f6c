// GET /rpc/jwks and GET /rpc/oauth_authorization_server (read-only
// transactions, as PostgREST runs GETs), and what the anon role can reach.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { BASE, ISSUER, JWT_TYPE, TE, jwtAuth, request, sql, sqlJson } from './lib.mjs';

const PUBLIC_CACHE = [{ 'Cache-Control': 'public, max-age=300' }];

describe('GET endpoints', () => {
  test('jwks: the public keys, cacheable', () => {
    const r = request('jwks', {}, { method: 'GET' });
    assert.equal(r.status, 200);
    assert.equal(r.gucStatus, null);
    assert.deepEqual(r.headers, PUBLIC_CACHE);
    assert.ok(Array.isArray(r.body.keys) && r.body.keys.length >= 1);
    for (const k of r.body.keys) {
      assert.equal(k.kty, 'EC');
      assert.equal(typeof k.kid, 'string');
      assert.ok(!('d' in k), 'no private part');
    }
    assert.deepEqual(r.body, sqlJson('SELECT tokex.jwks()'));
  });

  test('oauth_authorization_server: RFC 8414 metadata under base_url', () => {
    const r = request('oauth_authorization_server', {}, { method: 'GET' });
    assert.equal(r.status, 200);
    assert.equal(r.gucStatus, null);
    assert.deepEqual(r.headers, PUBLIC_CACHE);
    const m = r.body;
    assert.equal(m.issuer, ISSUER);
    assert.equal(m.token_endpoint, `${BASE}/rpc/token`);
    assert.equal(m.introspection_endpoint, `${BASE}/rpc/introspect`);
    assert.equal(m.revocation_endpoint, `${BASE}/rpc/revoke`);
    assert.equal(m.jwks_uri, `${BASE}/rpc/jwks`);
    assert.ok(m.grant_types_supported.includes(TE));
    assert.ok(m.grant_types_supported.includes('client_credentials'));
    const methods = ['client_secret_basic', 'client_secret_post', 'private_key_jwt'];
    for (const f of ['token_endpoint_auth_methods_supported', 'introspection_endpoint_auth_methods_supported',
                     'revocation_endpoint_auth_methods_supported']) {
      assert.deepEqual([...m[f]].sort(), methods, f);
    }
    assert.ok(m.token_endpoint_auth_signing_alg_values_supported.includes('ES256'));
    assert.ok(!m.token_endpoint_auth_signing_alg_values_supported.includes('none'));
    assert.deepEqual(m.scopes_supported, ['calendar.read', 'calendar.write']);
  });
});

describe('the anon role', () => {
  test('executes exactly the tokex_api functions', () => {
    const rows = sql(`SELECT p.oid::regprocedure, has_function_privilege('anon', p.oid, 'EXECUTE')
                        FROM pg_proc p WHERE p.pronamespace = 'tokex_api'::regnamespace ORDER BY 1`);
    const fns = rows.split('\n').map((l) => l.split('\x1f'));
    assert.deepEqual(fns.map(([f]) => f.replace(/\(.*/, '')).sort(),
                     ['tokex_api.introspect', 'tokex_api.jwks', 'tokex_api.oauth_authorization_server',
                      'tokex_api.revoke', 'tokex_api.ssf_configuration', 'tokex_api.ssf_poll',
                      'tokex_api.ssf_status', 'tokex_api.ssf_stream', 'tokex_api.token']);
    for (const [f, ok] of fns) assert.equal(ok, 't', f);
    assert.equal(sql(`SELECT has_schema_privilege('anon', 'tokex_api', 'USAGE')`), 't');
  });

  // tokex.jwks() is GRANTed TO PUBLIC (src/sql/90_privileges.sql), so
  // has_function_privilege('anon', ...) is true for it; anon still cannot call
  // it, having no USAGE on schema tokex (next tests).
  const executable = () => sql(`SELECT coalesce(string_agg(p.oid::regprocedure::text, ', ' ORDER BY 1), '')
                                  FROM pg_proc p WHERE p.pronamespace = 'tokex'::regnamespace
                                   AND has_function_privilege('anon', p.oid, 'EXECUTE')`);

  test('can execute nothing in schema tokex (the JWKS is served by tokex_api.jwks)', () => {
    assert.ok(Number(sql(`SELECT count(*) FROM pg_proc WHERE pronamespace = 'tokex'::regnamespace`)) > 20);
    assert.equal(executable(), '');
  });

  test('has no USAGE on schema tokex', () => {
    assert.equal(sql(`SELECT has_schema_privilege('anon', 'tokex', 'USAGE')`), 'f');
  });

  test('has no table, column or sequence privileges in tokex or tokex_api', () => {
    const rows = sql(`SELECT c.oid::regclass FROM pg_class c
                       WHERE c.relnamespace IN ('tokex'::regnamespace, 'tokex_api'::regnamespace)
                         AND c.relkind IN ('r', 'v', 'm', 'p', 'f', 'S')
                         AND (CASE WHEN c.relkind = 'S'
                                   THEN has_sequence_privilege('anon', c.oid, 'USAGE, SELECT, UPDATE')
                                   ELSE has_table_privilege('anon', c.oid,
                                          'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')
                                        OR has_any_column_privilege('anon', c.oid, 'SELECT, INSERT, UPDATE, REFERENCES')
                              END)`);
    assert.equal(rows, '');
  });

  test('a direct call into tokex as anon is refused', () => {
    const r = sql(`BEGIN; SET LOCAL ROLE anon;
                   SELECT 1 FROM pg_proc LIMIT 0;
                   DO $$ BEGIN PERFORM tokex.jwks(); RAISE EXCEPTION 'reached tokex.jwks()';
                   EXCEPTION WHEN insufficient_privilege THEN RAISE NOTICE 'refused'; END $$;
                   ROLLBACK;`);
    assert.equal(r, '');
  });
});

// Behind the reverse proxy of contrib/nginx the endpoints live at plain
// paths; tokex.endpoint_style = plain makes the metadata (and the audiences
// a client assertion may name) say so.
describe('tokex.endpoint_style', () => {
  const plain = { env: { PGOPTIONS: '-c tokex.endpoint_style=plain' } };

  test('plain: metadata advertises <base_url>/token, /introspect, /revoke, /jwks', () => {
    const m = request('oauth_authorization_server', {}, { method: 'GET', ...plain }).body;
    assert.equal(m.issuer, ISSUER);
    assert.equal(m.token_endpoint, `${BASE}/token`);
    assert.equal(m.introspection_endpoint, `${BASE}/introspect`);
    assert.equal(m.revocation_endpoint, `${BASE}/revoke`);
    assert.equal(m.jwks_uri, `${BASE}/jwks`);
  });

  test('the default is rpc', () => {
    assert.equal(sql(`SELECT current_setting('tokex.endpoint_style')`), 'rpc');
  });

  test('plain: a client assertion names the plain token endpoint, not the /rpc/ one', () => {
    const t = sqlJson(`SELECT json_build_object(
        'subject', tokex.start_session('alice', 'agent-a', '{calendar.read}', '1 hour')->>'session_token',
        'actor', tokex.identity_token('agent-a'))`);
    const params = (aud) => ({
      grant_type: TE, subject_token: t.subject, subject_token_type: JWT_TYPE,
      actor_token: t.actor, actor_token_type: JWT_TYPE, audience: 'calendar-api', ...jwtAuth({ aud }) });
    assert.equal(request('token', params(`${BASE}/token`), plain).status, 200);
    assert.equal(request('token', params(`${BASE}/rpc/token`), plain).status, 401);
  });

  test('an unknown style is refused', () => {
    assert.throws(() => sql(`SET tokex.endpoint_style = 'nginx'`), /invalid value/);
  });
});
