// POST /rpc/introspect (RFC 7662) and POST /rpc/revoke (RFC 7009).
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  BASE, JWT_TYPE, NO_STORE, WWW_AUTH, fx, jwtAuth, newKey, request, signJwt, sql, sqlJson, tokens,
} from './lib.mjs';

const introspectAud = `${BASE}/rpc/introspect`;
const revokeAud = `${BASE}/rpc/revoke`;

// An access token for alice / agent-a minted for client_id (as an
// administrator calling tokex.exchange: no HTTP, no secret check).
function mint(clientId) {
  const t = tokens();
  const r = sqlJson(`SELECT tokex.exchange(:'s', :'jt', :'a', :'jt', audience => 'calendar-api',
                                            scope => 'calendar.read', client_id => :'c')`,
                    { s: t.subject, a: t.actor, jt: JWT_TYPE, c: clientId });
  assert.ok(r.access_token, JSON.stringify(r));
  return r.access_token;
}

const introspect = (token, auth = jwtAuth({ aud: introspectAud })) => request('introspect', { token, ...auth });
const revoke = (token, auth = jwtAuth({ aud: revokeAud })) => request('revoke', { token, ...auth });

function assert401(r) {
  assert.equal(r.status, 401, JSON.stringify(r.body));
  assert.equal(r.body.error, 'invalid_client');
  assert.deepEqual(r.headers, [...NO_STORE, { 'WWW-Authenticate': WWW_AUTH }]);
}

// a well-formed JWT that tokex did not sign
const foreign = () => {
  const k = newKey('stranger');
  const now = Math.floor(Date.now() / 1000);
  return signJwt({ iss: 'https://auth.test', sub: 'alice', aud: 'calendar-api', jti: 'x', exp: now + 60 },
                 k.privateKey, 'stranger');
};
const garbage = () => ['garbage', '', 'a.b.c', 'eyJhbGciOiJub25lIn0.e30.', foreign()];

describe('introspect', () => {
  test('authenticated (client_secret_post): 200, active true, RFC 7662 claims', () => {
    const tok = mint('web-app');
    const { id, secret } = fx().secretClient;
    const r = introspect(tok, { client_id: id, client_secret: secret });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.deepEqual(r.headers, NO_STORE);
    const b = r.body;
    assert.equal(b.active, true);
    assert.equal(b.sub, 'alice');
    assert.deepEqual(b.act, { sub: 'agent-a' });
    assert.equal(b.scope, 'calendar.read');
    assert.equal(b.aud, 'calendar-api');
    assert.equal(b.client_id, 'web-app');
    assert.equal(b.iss, 'https://auth.test');
    for (const k of ['exp', 'iat', 'nbf']) assert.ok(Number.isInteger(b[k]), k);
    assert.equal(typeof b.jti, 'string');
  });

  test('authenticated (private_key_jwt): 200', () => {
    const r = introspect(mint(fx().jwtClient.id));
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.active, true);
    assert.deepEqual(r.headers, NO_STORE);
  });

  test('unauthenticated: 401 with WWW-Authenticate', () => {
    assert401(request('introspect', { token: mint('web-app') }));
  });

  test('assertion naming the token endpoint (RFC 7523 aud may name this server): 200', () => {
    assert.equal(introspect(mint('web-app'), jwtAuth()).status, 200);
  });

  test('assertion for a foreign audience: 401', () => {
    assert401(introspect(mint('web-app'), jwtAuth({ aud: 'https://elsewhere.test/rpc/introspect' })));
  });

  test('unknown, invalid or garbage token: 200 {"active":false}', () => {
    for (const t of garbage()) {
      const r = introspect(t);
      assert.equal(r.status, 200, `${t}: ${JSON.stringify(r.body)}`);
      assert.deepEqual(r.body, { active: false });
      assert.deepEqual(r.headers, NO_STORE);
    }
  });

  test('missing token: 400 invalid_request', () => {
    const r = request('introspect', jwtAuth({ aud: introspectAud }));
    assert.equal(r.status, 400);
    assert.equal(r.body.error, 'invalid_request');
    assert.deepEqual(r.headers, NO_STORE);
  });
});

describe('revoke', () => {
  test('own token: 200, then introspect says inactive', () => {
    const tok = mint(fx().jwtClient.id);
    assert.equal(introspect(tok).body.active, true);
    const r = revoke(tok);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.deepEqual(r.body, {});
    assert.deepEqual(r.headers, NO_STORE);
    assert.deepEqual(introspect(tok).body, { active: false });
    const jti = JSON.parse(Buffer.from(tok.split('.')[1], 'base64url')).jti;
    assert.equal(sql(`SELECT count(*) FROM tokex.revocation WHERE kind = 'token' AND target = :'j'`, { j: jti }), '1');
    // revoking it again is still 200
    assert.equal(revoke(tok).status, 200);
  });

  test('garbage or unknown token: 200', () => {
    for (const t of garbage()) {
      const r = revoke(t);
      assert.equal(r.status, 200, `${t}: ${JSON.stringify(r.body)}`);
      assert.deepEqual(r.body, {});
      assert.deepEqual(r.headers, NO_STORE);
    }
  });

  test("someone else's token: 400 unauthorized_client, audited, and it stays active", () => {
    const tok = mint('web-app');
    const audited = () => Number(sql(`SELECT count(*) FROM tokex.audit WHERE error = 'unauthorized_client'
                                        AND client_id = :'c' AND operation = 'revoke'
                                        AND reason = 'the token was not issued to this client at the revocation endpoint'`,
                                     { c: fx().jwtClient.id }));
    const before = audited();
    const r = revoke(tok);
    assert.equal(audited(), before + 1);
    assert.equal(r.status, 400, JSON.stringify(r.body));
    assert.equal(r.body.error, 'unauthorized_client');
    assert.deepEqual(r.headers, NO_STORE);
    const { id, secret } = fx().secretClient;
    assert.equal(introspect(tok, { client_id: id, client_secret: secret }).body.active, true);
  });

  test('unauthenticated: 401', () => {
    const tok = mint(fx().jwtClient.id);
    assert401(request('revoke', { token: tok }));
    assert.equal(introspect(tok).body.active, true);
  });

  test('missing token: 400 invalid_request', () => {
    const r = request('revoke', jwtAuth({ aud: revokeAud }));
    assert.equal(r.status, 400);
    assert.equal(r.body.error, 'invalid_request');
    assert.deepEqual(r.headers, NO_STORE);
  });

  test('a client_credentials token revoked by its client', () => {
    const { id, secret } = fx().ccClient;
    const cc = request('token', { grant_type: 'client_credentials', client_id: id, client_secret: secret });
    assert.equal(cc.status, 200);
    const own = { client_id: id, client_secret: secret };
    assert.equal(introspect(cc.body.access_token, own).body.active, true);
    assert.equal(revoke(cc.body.access_token, own).status, 200);
    assert.deepEqual(introspect(cc.body.access_token, own).body, { active: false });
  });
});

// RFC 7662 §4: the server decides who may learn about a token.  Everyone
// else gets exactly what an invalid token gets.
describe('who may introspect a token', () => {
  const as = ({ id, secret }) => ({ client_id: id, client_secret: secret });
  const INACTIVE = (r) => {
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.deepEqual(r.body, { active: false });
    assert.deepEqual(r.headers, NO_STORE);
  };

  test('the client the token was issued to (client_id): active', () => {
    assert.equal(introspect(mint('web-app'), as(fx().secretClient)).body.active, true);
  });

  test('a resource server registered for the token\'s audience: active', () => {
    const r = introspect(mint('web-app'), as(fx().calendarGateway));
    assert.equal(r.body.active, true, JSON.stringify(r.body));
    assert.equal(r.body.aud, 'calendar-api');
  });

  test('a gateway flagged introspect_any: active', () => {
    assert.equal(introspect(mint('web-app'), as(fx().edgeGateway)).body.active, true);
  });

  test('a resource server registered for another audience: {"active":false}', () => {
    INACTIVE(introspect(mint('web-app'), as(fx().mailGateway)));
  });

  test('another client, not registered for any audience in particular: {"active":false}', () => {
    INACTIVE(introspect(mint('web-app'), jwtAuth({ aud: introspectAud })));
    const { id, secret } = fx().ccClient;
    INACTIVE(introspect(mint('web-app'), { client_id: id, client_secret: secret }));
  });

  // a session credential is no access token for any resource (issue 8, item 8)
  test('a session credential: inactive for every client, gateways included', () => {
    const session = tokens().subject;
    for (const c of [fx().calendarGateway, fx().secretClient, fx().edgeGateway]) INACTIVE(introspect(session, as(c)));
  });
});
