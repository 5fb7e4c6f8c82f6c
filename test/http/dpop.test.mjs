// DPoP over HTTP: the proof in the DPoP header of POST /rpc/token binds the
// token (token_type DPoP); with tokex.dpop_nonce on, a proof without the
// server's nonce is 400 use_dpop_nonce with a DPoP-Nonce header, and the
// retry with that nonce succeeds.  Proofs are made here with node's crypto,
// as a client library would.
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createSign, generateKeyPairSync, randomUUID } from 'node:crypto';
import { BASE, TE, decode, fx, request, sql } from './lib.mjs';

const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const jwk = (({ kty, crv, x, y }) => ({ kty, crv, x, y }))(publicKey.export({ format: 'jwk' }));
const b64u = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
function proof(extra = {}) {
  const input = `${b64u({ alg: 'ES256', typ: 'dpop+jwt', jwk })}.${b64u({
    htm: 'POST', htu: `${BASE}/rpc/token`, jti: randomUUID(), iat: Math.floor(Date.now() / 1000), ...extra })}`;
  const sig = createSign('SHA256').update(input).sign({ key: privateKey, dsaEncoding: 'ieee-p1363' });
  return `${input}.${sig.toString('base64url')}`;
}

let subject;
let actor;
before(() => {
  subject = sql(`SELECT tokex.start_session('alice', 'agent-a', '{calendar.read}')->>'session_token'`);
  actor = sql(`SELECT tokex.identity_token('agent-a')`);
});
const exchange = (headers, env) => request('token', {
  grant_type: TE, subject_token: subject, subject_token_type: 'urn:ietf:params:oauth:token-type:jwt',
  actor_token: actor, actor_token_type: 'urn:ietf:params:oauth:token-type:jwt', audience: 'calendar-api',
  client_id: fx().secretClient.id, client_secret: fx().secretClient.secret,
}, { headers, env });
const header = (r, name) => (r.headers ?? []).map((h) => h[name]).find((v) => v !== undefined);

describe('POST /rpc/token with a DPoP header', () => {
  test('the proof binds the token: token_type DPoP, cnf.jkt', () => {
    const r = exchange({ dpop: proof() });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.token_type, 'DPoP');
    assert.ok(decode(r.body.access_token).payload.cnf.jkt);
  });

  test('a bad proof: 400 invalid_dpop_proof', () => {
    const r = exchange({ dpop: proof({ htu: 'https://elsewhere.test/rpc/token' }) });
    assert.equal(r.status, 400);
    assert.equal(r.body.error, 'invalid_dpop_proof');
  });

  test('tokex.dpop_nonce: 400 use_dpop_nonce with DPoP-Nonce, then the retry with the nonce succeeds', () => {
    const env = { PGOPTIONS: '-c tokex.dpop_nonce=on' };
    const first = exchange({ dpop: proof() }, env);
    assert.equal(first.status, 400, JSON.stringify(first.body));
    assert.equal(first.body.error, 'use_dpop_nonce');
    const nonce = header(first, 'DPoP-Nonce');
    assert.match(nonce, /^[A-Za-z0-9_-]{32}$/, JSON.stringify(first.headers));
    assert.equal(first.body.dpop_nonce, undefined, 'the nonce travels in the header, not the body');
    const second = exchange({ dpop: proof({ nonce }) }, env);
    assert.equal(second.status, 200, JSON.stringify(second.body));
    assert.equal(second.body.token_type, 'DPoP');
    assert.match(header(second, 'DPoP-Nonce'), /^[A-Za-z0-9_-]{32}$/);
  });
});
