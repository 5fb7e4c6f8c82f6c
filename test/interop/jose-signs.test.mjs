// Direction B: npm jose generates keys and signs; tokex trusts the issuer's
// JWKS (tokex.trust_issuer) and verifies with tokex.jwt_verify.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac, createPrivateKey, createPublicKey, randomBytes, sign as nodeSign, constants } from 'node:crypto';
import { SignJWT, generateKeyPair, exportJWK, decodeJwt, base64url } from 'jose';
import { sql, sqlJson, sqlError } from './pg.mjs';

const ALGS = ['ES256', 'ES384', 'ES512', 'EdDSA',
  'RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512',
  'HS256', 'HS384', 'HS512'];

const issuerOf = (alg) => `https://issuer-${alg.toLowerCase()}.test`;
const audOf = (alg) => `https://api-${alg.toLowerCase()}.test`;
const kidOf = (alg) => `${alg.toLowerCase()}-key-1`;

// A signing key for alg and its public (or, for HS*, secret) JWK with kid and alg set.
async function makeKey(alg) {
  if (alg.startsWith('HS')) {
    const secret = randomBytes(Number(alg.slice(2)) / 8); // key length = hash length
    return { signKey: secret, jwk: { kty: 'oct', k: base64url.encode(secret), kid: kidOf(alg), alg, use: 'sig' } };
  }
  const { publicKey, privateKey } = await generateKeyPair(alg, { extractable: true });
  const jwk = { ...(await exportJWK(publicKey)), kid: kidOf(alg), alg, use: 'sig' };
  return { signKey: privateKey, jwk, privateJwk: await exportJWK(privateKey) };
}

function signWith(alg, key, extra = {}) {
  return new SignJWT({ scope: 'read write', client_id: 'client-1', nested: { a: [1, 2, 'x'] }, ...extra })
    .setProtectedHeader({ alg, kid: kidOf(alg), typ: 'JWT' })
    .setIssuer(issuerOf(alg))
    .setSubject(`user-${alg}`)
    .setAudience(audOf(alg))
    .setIssuedAt()
    .setExpirationTime('5m')
    .sign(key);
}

const verify = (token, aud) => sqlJson(`SELECT tokex.jwt_verify(:'token', :'aud')`, { token, aud });

// Asserts jwt_verify raises 28000 'invalid token'; logs the DETAIL as a test diagnostic.
function assertRefused(t, token, aud, detailRe) {
  const e = sqlError(`SELECT tokex.jwt_verify(:'token', :'aud')`, { token, aud });
  assert.equal(e.sqlstate, '28000', `SQLSTATE 28000, got: ${e.stderr.trim()}`);
  assert.equal(e.message, 'invalid token');
  assert.ok(e.detail, 'has a DETAIL');
  if (detailRe) assert.match(e.detail, detailRe);
  t.diagnostic(`DETAIL: ${e.detail}`);
  return e;
}

const b64json = (o) => base64url.encode(JSON.stringify(o));

// A compact JWS with an arbitrary header, "signed" by sigFn(signingInput).
function forge(header, payload, sigFn) {
  const input = `${b64json(header)}.${b64json(payload)}`;
  return `${input}.${base64url.encode(sigFn(Buffer.from(input)))}`;
}

const keys = {}; // alg -> { signKey, jwk, privateJwk }

describe('jose signs, tokex verifies', () => {
  for (const alg of ALGS) {
    test(alg, async (t) => {
      const key = (keys[alg] = await makeKey(alg));
      sql(`SELECT tokex.trust_issuer(:'iss', :'jwks'::jsonb)`, { iss: issuerOf(alg), jwks: { keys: [key.jwk] } });
      const token = await signWith(alg, key.signKey);

      await t.test('valid token: jwt_verify returns the claims', () => {
        assert.deepEqual(verify(token, audOf(alg)), decodeJwt(token));
      });
      await t.test('audience mismatch: refused with 28000', (t) => {
        assertRefused(t, token, 'https://other-api.test', /aud/i);
      });
      await t.test('different key, same alg and kid: refused with 28000', async (t) => {
        const other = await makeKey(alg);
        const forged = await signWith(alg, other.signKey);
        assert.deepEqual(decodeJwt(forged).iss, issuerOf(alg));
        assertRefused(t, forged, audOf(alg), /signature/i);
      });
    });
  }

  describe('algorithm confusion and downgrade (RS256 issuer)', () => {
    const alg = 'RS256';
    const now = Math.floor(Date.now() / 1000);
    const payload = () => ({ iss: issuerOf(alg), sub: 'attacker', aud: audOf(alg), iat: now, exp: now + 300 });
    const hs256 = (secret) => (input) => createHmac('sha256', secret).update(input).digest();

    test('header alg HS256, MAC keyed with the RSA JWK n bytes: refused', (t) => {
      const n = Buffer.from(base64url.decode(keys[alg].jwk.n));
      assertRefused(t, forge({ alg: 'HS256', kid: kidOf(alg), typ: 'JWT' }, payload(), hs256(n)), audOf(alg), /alg/i);
    });
    test('header alg HS256, MAC keyed with the public key PEM or JWK JSON: refused', (t) => {
      const pem = createPublicKey({ key: keys[alg].jwk, format: 'jwk' }).export({ type: 'spki', format: 'pem' });
      for (const secret of [pem, JSON.stringify(keys[alg].jwk)]) {
        assertRefused(t, forge({ alg: 'HS256', kid: kidOf(alg), typ: 'JWT' }, payload(), hs256(secret)), audOf(alg), /alg/i);
      }
    });
    test('header alg PS256, signed with the same RSA key (JWK alg RS256): refused', (t) => {
      const priv = createPrivateKey({ key: keys[alg].privateJwk, format: 'jwk' });
      const pss = (input) => nodeSign('sha256', input,
        { key: priv, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 });
      assertRefused(t, forge({ alg: 'PS256', kid: kidOf(alg), typ: 'JWT' }, payload(), pss), audOf(alg), /alg/i);
    });
    test('header alg none, empty signature: refused', (t) => {
      assertRefused(t, forge({ alg: 'none', kid: kidOf(alg), typ: 'JWT' }, payload(), () => Buffer.alloc(0)), audOf(alg), /alg/i);
    });
    test('control: the same forge() with the real key and RS256 is accepted', () => {
      const priv = createPrivateKey({ key: keys[alg].privateJwk, format: 'jwk' });
      const rs = (input) => nodeSign('sha256', input, priv);
      const claims = payload();
      assert.deepEqual(verify(forge({ alg, kid: kidOf(alg), typ: 'JWT' }, claims, rs), audOf(alg)), claims);
    });
  });
});
