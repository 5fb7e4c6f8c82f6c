// Translation formats checked by npm jose as a downstream would: a
// transaction token (draft-ietf-oauth-transaction-tokens, typ txntoken+jwt)
// verifies against tokex.jwks() with its claims as the exchange decided; an
// exchange whose actor is an API key mints the same token as one whose actor
// is a JWT.
import { test, describe, before } from 'node:test';
import assert from 'node:assert/strict';
import { createLocalJWKSet, jwtVerify } from 'jose';
import { sql, sqlJson, ISSUER } from './pg.mjs';

const JWT = 'urn:ietf:params:oauth:token-type:jwt';
const TXN = 'urn:ietf:params:oauth:token-type:txn_token';
const AK = 'urn:tokex:token-type:api_key';

describe('translation formats in jose', () => {
  let session, key;

  before(() => {
    sql(`SELECT tokex.create_key('ES256') WHERE NOT EXISTS (SELECT 1 FROM tokex.key WHERE status = 'active');
         INSERT INTO tokex.identity (id, kind) VALUES ('t-alice', 'human'), ('t-agent', 'agent');
         INSERT INTO tokex.resource (audience, scopes, token_format) VALUES
           ('t-orders', '{orders.read}', 'txn_token'), ('t-cal', '{cal.read}', 'jwt');
         INSERT INTO tokex.delegation (principal, delegate, scopes) VALUES ('t-alice', 't-agent', '{orders.read,cal.read}');
         INSERT INTO tokex.policy (effect, subject, actor_kind) VALUES ('allow', 't-alice', 'agent');`);
    session = sqlJson(`SELECT tokex.start_session('t-alice', 't-agent')`).session_token;
    key = sql(`SELECT tokex.create_api_key('t-agent')`);
  });

  const jwks = () => createLocalJWKSet(sqlJson('SELECT tokex.jwks()'));

  test('a transaction token verifies with typ txntoken+jwt; sub, act, aud, txn, scope, req_wl, tctx, rctx', async () => {
    const r = sqlJson(`SELECT tokex.exchange(:'st', :'jwt', :'ak', :'akt', audience => 't-orders',
                                             request_details => '{"op": "list"}', request_context => '{"req_ip": "198.51.100.9"}')`,
                      { st: session, jwt: JWT, ak: key, akt: AK });
    assert.equal(r.issued_token_type, TXN, JSON.stringify(r));
    assert.equal(r.token_type, 'N_A');
    const { payload, protectedHeader } = await jwtVerify(r.access_token, jwks(),
      { issuer: ISSUER, audience: 't-orders', typ: 'txntoken+jwt' });
    assert.equal(protectedHeader.typ, 'txntoken+jwt');
    assert.equal(payload.sub, 't-alice');
    assert.deepEqual(payload.act, { sub: 't-agent' });
    assert.equal(payload.txn, payload.jti);
    assert.equal(payload.scope, 'orders.read');
    assert.equal(payload.req_wl, 't-agent');
    assert.deepEqual(payload.tctx, { op: 'list' });
    assert.deepEqual(payload.rctx, { req_ip: '198.51.100.9' });
    assert.ok(payload.exp > payload.iat);
    await assert.rejects(jwtVerify(r.access_token, jwks(), { issuer: ISSUER, audience: 't-orders', typ: 'at+jwt' }),
                         'it is no access token');
  });

  test('an API key actor mints the same RFC 9068 token a JWT actor would', async () => {
    const viaKey = sqlJson(`SELECT tokex.exchange(:'st', :'jwt', :'ak', :'akt', audience => 't-cal')`,
                           { st: session, jwt: JWT, ak: key, akt: AK });
    const viaJwt = sqlJson(`SELECT tokex.exchange(:'st', :'jwt', tokex.identity_token('t-agent'), :'jwt', audience => 't-cal')`,
                           { st: session, jwt: JWT });
    const a = (await jwtVerify(viaKey.access_token, jwks(), { issuer: ISSUER, audience: 't-cal', typ: 'at+jwt' })).payload;
    const b = (await jwtVerify(viaJwt.access_token, jwks(), { issuer: ISSUER, audience: 't-cal', typ: 'at+jwt' })).payload;
    for (const k of ['sub', 'act', 'aud', 'scope', 'client_id', 'sid']) assert.deepEqual(a[k], b[k], k);
  });
});
