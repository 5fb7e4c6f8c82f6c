// Direction A: tokex signs (keys generated in the database), npm jose verifies
// with tokex.jwks() as a local JWK Set.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { createLocalJWKSet, jwtVerify, calculateJwkThumbprint } from 'jose';
import { sql, sqlJson, ISSUER } from './pg.mjs';

const ALGS = ['ES256', 'ES384', 'ES512', 'EdDSA',
  'RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512'];
const AUD = 'https://api.test';
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'];

const signed = []; // { alg, kid, token, claims }

function claimsFor(alg) {
  const now = Math.floor(Date.now() / 1000);
  return {
    sub: `user-${alg}`,
    aud: AUD,
    exp: now + 300,
    nbf: now - 5,
    jti: randomUUID(),  // jwt_sign requires a UUID jti: it keys the audit row
    scope: 'read write',
    act: { sub: 'agent-1', act: { sub: 'agent-0' } },
    n: 42,
    f: 1.5,
    neg: -7,
    flag: false,
    nothing: null,
    list: [1, 'two', true, null, { three: 3 }],
    text: 'héllo "quoted" \\ ✓ 😀 \u0001',
  };
}

describe('tokex signs, jose verifies', () => {
  for (const alg of ALGS) {
    test(alg, async () => {
      const kid = sql(`SELECT tokex.create_key(:'alg')`, { alg });
      sql(`SELECT tokex.activate_key(:'kid')`, { kid });
      const claims = claimsFor(alg);
      const token = sql(`SELECT tokex.jwt_sign(:'claims'::jsonb, :'kid')`, { claims, kid });
      signed.push({ alg, kid, token, claims });

      const jwks = sqlJson(`SELECT tokex.jwks()`);
      const jwk = jwks.keys.find((k) => k.kid === kid);
      assert.ok(jwk, `kid ${kid} is in tokex.jwks()`);
      assert.equal(jwk.alg, alg);

      const { payload, protectedHeader } = await jwtVerify(token, createLocalJWKSet(jwks), {
        issuer: ISSUER,
        audience: AUD,
        algorithms: [alg],
        typ: 'JWT',
      });
      assert.deepEqual(protectedHeader, { alg, kid, typ: 'JWT' });
      assert.equal(typeof payload.iat, 'number');
      assert.ok(Math.abs(payload.iat - Date.now() / 1000) < 120, 'iat is now');
      assert.deepEqual(payload, { ...claims, iss: ISSUER, iat: payload.iat });
    });
  }

  test('tokens signed before each rotation still verify with the final JWKS', async () => {
    assert.equal(signed.length, ALGS.length);
    const jwks = sqlJson(`SELECT tokex.jwks()`);
    const set = createLocalJWKSet(jwks);
    for (const { alg, kid, token } of signed) {
      const { protectedHeader } = await jwtVerify(token, set, { issuer: ISSUER, algorithms: [alg] });
      assert.equal(protectedHeader.kid, kid);
    }
  });

  test('every JWK is public-only and its kid is its RFC 7638 thumbprint', async () => {
    const { keys } = sqlJson(`SELECT tokex.jwks()`);
    assert.ok(keys.length >= ALGS.length);
    for (const jwk of keys) {
      for (const m of PRIVATE_MEMBERS) assert.ok(!(m in jwk), `${jwk.kid} has no "${m}"`);
      assert.equal(await calculateJwkThumbprint(jwk, 'sha256'), jwk.kid, `thumbprint of ${jwk.alg} key`);
    }
  });
});
