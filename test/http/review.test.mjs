// The HTTP face against what an outside attack found (issue 8): requests that
// are not POST, an unauthenticated client id in the audit trail, "issued to
// this client" judged by a token's claim, client_credentials for a person,
// and the metadata of private_key_jwt at introspection and revocation.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { BASE, JWT_TYPE, TE, auditClaimed, fx, request, sql, sqlJson, tokens } from './lib.mjs';

const secretAuth = () => ({ client_id: fx().secretClient.id, client_secret: fx().secretClient.secret });

describe('POST only: a GET would put secrets and tokens in URLs', () => {
  for (const fn of ['token', 'introspect', 'revoke']) {
    test(`GET /rpc/${fn}: 405 invalid_request, audited, nothing issued or told`, () => {
      const before = Number(sql(`SELECT count(*) FROM tokex.audit WHERE error = 'invalid_request'
                                   AND reason LIKE '%takes POST%'`));
      const params = fn === 'token'
        ? { grant_type: TE, subject_token: tokens().subject, subject_token_type: JWT_TYPE, audience: 'calendar-api',
            ...secretAuth() }
        : { token: 'x', ...secretAuth() };
      const r = request(fn, params, { method: 'GET' });
      assert.equal(r.status, 405, JSON.stringify(r.body));
      assert.equal(r.body.error, 'invalid_request');
      assert.equal(r.body.access_token, undefined);
      assert.equal(Number(sql(`SELECT count(*) FROM tokex.audit WHERE error = 'invalid_request'
                                 AND reason LIKE '%takes POST%'`)), before + 1);
    });
  }
});

describe('a client id that did not authenticate is no client', () => {
  test('an unsigned assertion naming a client: the row quotes the claim, its client_id stays empty', () => {
    const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
    const forged = `${b64({ alg: 'ES256' })}.${b64({ iss: 'web-app', sub: 'web-app', exp: 9999999999 })}.AAAA`;
    const rowsFor = () => Number(sql(`SELECT count(*) FROM tokex.audit WHERE client_id = 'web-app'
                                        AND error = 'invalid_client'`));
    const claimedBefore = auditClaimed('invalid_client', 'web-app');
    const before = rowsFor();
    const r = request('token', {
      grant_type: TE, subject_token: 'x', subject_token_type: JWT_TYPE, audience: 'calendar-api',
      client_id: 'web-app',
      client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer', client_assertion: forged,
    });
    assert.equal(r.status, 401);
    assert.equal(rowsFor(), before, 'no row is attributed to web-app');
    assert.equal(auditClaimed('invalid_client', 'web-app'), claimedBefore + 1);
  });
});

describe('issued to this client: the audit row, not the client_id claim', () => {
  test('a client registered under an agent id neither sees nor revokes the tokens minted without a client', () => {
    // an exchange from SQL with no client: the token's client_id claim names the actor, agent-a
    const t = tokens();
    const r = sqlJson(`SELECT tokex.exchange(:'s', :'jt', :'a', :'jt', audience => 'calendar-api')`,
                      { s: t.subject, a: t.actor, jt: JWT_TYPE });
    const claims = JSON.parse(Buffer.from(r.access_token.split('.')[1], 'base64url'));
    assert.equal(claims.client_id, 'agent-a');
    const secret = sql(`SELECT tokex.register_client('agent-a')`);
    try {
      const auth = { client_id: 'agent-a', client_secret: secret };
      assert.deepEqual(request('introspect', { token: r.access_token, ...auth }).body, { active: false });
      const rv = request('revoke', { token: r.access_token, ...auth });
      assert.equal(rv.status, 400);
      assert.equal(rv.body.error, 'unauthorized_client');
      assert.equal(sqlJson(`SELECT tokex.introspect(:'t')`, { t: r.access_token }).active, true, 'still active');
    } finally {
      sql(`DELETE FROM tokex.client WHERE client_id = 'agent-a'`);
    }
  });
});

describe('client_credentials mints only for an agent or a service', () => {
  test('a client acting for a person gets unauthorized_client, audited', () => {
    const secret = sql(`SELECT tokex.register_client('alice-app', identity => 'alice',
                          grant_types => '{client_credentials}')`);
    try {
      const r = request('token', { grant_type: 'client_credentials', client_id: 'alice-app', client_secret: secret });
      assert.equal(r.status, 400, JSON.stringify(r.body));
      assert.equal(r.body.error, 'unauthorized_client');
      assert.equal(r.body.access_token, undefined);
      assert.equal(Number(sql(`SELECT count(*) FROM tokex.audit WHERE operation = 'client_credentials'
                                 AND client_id = 'alice-app' AND decision = 'denied'
                                 AND reason = 'the client acts for no active agent or service'`)), 1);
    } finally {
      sql(`DELETE FROM tokex.client WHERE client_id = 'alice-app'`);
    }
  });
});

test('metadata: private_key_jwt at introspection and revocation comes with its algorithms (RFC 8414 §2)', () => {
  const m = request('oauth_authorization_server', {}, { method: 'GET' }).body;
  for (const ep of ['introspection', 'revocation']) {
    assert.ok(m[`${ep}_endpoint_auth_methods_supported`].includes('private_key_jwt'));
    assert.deepEqual(m[`${ep}_endpoint_auth_signing_alg_values_supported`],
                     m.token_endpoint_auth_signing_alg_values_supported);
  }
  assert.equal(m.introspection_endpoint, `${BASE}/rpc/introspect`);
});
