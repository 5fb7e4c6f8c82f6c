// DPoP (RFC 9449) as a real client does it, with npm dpop: a proof per
// request to the token endpoint; the exchanged token is bound (cnf.jkt, the
// proof key's thumbprint, token_type DPoP); replays, a wrong htu or htm, a
// proof signed by another key than its jwk, and a bound token exchanged
// without its key are refused; a resource that requires DPoP refuses a
// request without a proof.  At the resource, tokex.authenticate checks the
// proof and ath.
import { test, describe, before } from 'node:test';
import assert from 'node:assert/strict';
import * as DPoP from 'dpop';
import { SignJWT, calculateJwkThumbprint, exportJWK, generateKeyPair, decodeJwt } from 'jose';
import { psql, sql, sqlJson, ISSUER } from './pg.mjs';

const JWT = 'urn:ietf:params:oauth:token-type:jwt';
const AT = 'urn:ietf:params:oauth:token-type:access_token';
const TOKEN_URL = `${ISSUER}/rpc/token`;

function exchange({ subject, subjectType = JWT, actor, audience = 'd-cal', proof }) {
  return sqlJson(`SELECT tokex.exchange(:'st', :'stt', NULLIF(:'at', ''), CASE WHEN :'at' <> '' THEN :'jwt' END,
                                        audience => :'aud', dpop_proof => NULLIF(:'proof', ''))`,
                 { st: subject, stt: subjectType, at: actor ?? '', jwt: JWT, aud: audience, proof: proof ?? '' });
}

describe('DPoP-bound token exchange', () => {
  let session, agent, keys, other, jkt;

  before(async () => {
    sql(`SELECT tokex.create_key('ES256') WHERE NOT EXISTS (SELECT 1 FROM tokex.key WHERE status = 'active');
         INSERT INTO tokex.identity (id, kind) VALUES ('d-alice', 'human'), ('d-agent', 'agent'), ('d-bob', 'human');
         INSERT INTO tokex.resource (audience, scopes) VALUES ('d-cal', '{cal.read}');
         INSERT INTO tokex.resource (audience, scopes, require_dpop) VALUES ('d-bank', '{bank.read}', true);
         INSERT INTO tokex.resource (audience, scopes, token_format) VALUES ('d-mcp', '{cal.read}', 'reference');
         INSERT INTO tokex.delegation (principal, delegate, scopes) VALUES ('d-alice', 'd-agent', '{cal.read,bank.read}'),
                                                                           ('d-bob', 'd-agent', '{cal.read}');
         INSERT INTO tokex.policy (effect, actor_kind) VALUES ('allow', 'agent');`);
    session = sqlJson(`SELECT tokex.start_session('d-alice', 'd-agent')`).session_token;
    agent = sql(`SELECT tokex.identity_token('d-agent')`);
    keys = await DPoP.generateKeyPair('ES256');
    other = await DPoP.generateKeyPair('ES256');
    jkt = await calculateJwkThumbprint(await exportJWK(keys.publicKey));
  });

  test('a proof binds the token: token_type DPoP, cnf.jkt = the proof key\'s thumbprint', async () => {
    const r = exchange({ subject: session, actor: agent, proof: await DPoP.generateProof(keys, TOKEN_URL, 'POST') });
    assert.equal(r.token_type, 'DPoP', JSON.stringify(r));
    assert.deepEqual(decodeJwt(r.access_token).cnf, { jkt });
    const i = sqlJson(`SELECT tokex.introspect(:'t')`, { t: r.access_token });
    assert.equal(i.active, true);
    assert.equal(i.token_type, 'DPoP');
    assert.deepEqual(i.cnf, { jkt });
    assert.equal(sql(`SELECT dpop_jkt FROM tokex.audit WHERE jti = (:'j')::uuid`, { j: decodeJwt(r.access_token).jti }), jkt);
  });

  test('a reference token is bound too: introspection says cnf', async () => {
    const r = exchange({ subject: session, actor: agent, audience: 'd-mcp',
                         proof: await DPoP.generateProof(keys, TOKEN_URL, 'POST') });
    assert.equal(r.token_type, 'DPoP', JSON.stringify(r));
    assert.deepEqual(sqlJson(`SELECT tokex.introspect(:'t')`, { t: r.access_token }).cnf, { jkt });
  });

  test('a replayed proof is refused', async () => {
    const proof = await DPoP.generateProof(keys, TOKEN_URL, 'POST');
    assert.equal(exchange({ subject: session, actor: agent, proof }).token_type, 'DPoP');
    const r = exchange({ subject: session, actor: agent, proof });
    assert.equal(r.error, 'invalid_dpop_proof');
    assert.equal(r.error_description, "the proof's jti was already used");
  });

  test('a wrong htu or htm is refused', async () => {
    let r = exchange({ subject: session, actor: agent, proof: await DPoP.generateProof(keys, 'https://evil.test/rpc/token', 'POST') });
    assert.equal(r.error, 'invalid_dpop_proof');
    assert.match(r.error_description, /htu/);
    r = exchange({ subject: session, actor: agent, proof: await DPoP.generateProof(keys, TOKEN_URL, 'GET') });
    assert.equal(r.error, 'invalid_dpop_proof');
    assert.match(r.error_description, /htm/);
  });

  test('a proof signed by another key than its jwk header is refused', async () => {
    const a = await generateKeyPair('ES256', { extractable: true });
    const b = await generateKeyPair('ES256', { extractable: true });
    const proof = await new SignJWT({ htm: 'POST', htu: TOKEN_URL, jti: crypto.randomUUID() })
      .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk: await exportJWK(a.publicKey) })
      .setIssuedAt().sign(b.privateKey);
    const r = exchange({ subject: session, actor: agent, proof });
    assert.equal(r.error, 'invalid_dpop_proof');
    assert.match(r.error_description, /signature/);
  });

  test('a stale proof, an HS256 proof, a proof with a private key in jwk: refused', async () => {
    const old = await new SignJWT({ htm: 'POST', htu: TOKEN_URL, jti: crypto.randomUUID() })
      .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk: await exportJWK(keys.publicKey) })
      .setIssuedAt(Math.floor(Date.now() / 1000) - 3600).sign(keys.privateKey);
    assert.match(exchange({ subject: session, actor: agent, proof: old }).error_description, /too old/);
    const secret = new TextEncoder().encode('0123456789abcdef0123456789abcdef');
    const hs = await new SignJWT({ htm: 'POST', htu: TOKEN_URL, jti: crypto.randomUUID() })
      .setProtectedHeader({ alg: 'HS256', typ: 'dpop+jwt', jwk: { kty: 'oct', k: 'AAAA' } }).setIssuedAt().sign(secret);
    assert.equal(exchange({ subject: session, actor: agent, proof: hs }).error, 'invalid_dpop_proof');
    const k = await generateKeyPair('ES256', { extractable: true });
    const leaky = await new SignJWT({ htm: 'POST', htu: TOKEN_URL, jti: crypto.randomUUID() })
      .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk: await exportJWK(k.privateKey) }).setIssuedAt().sign(k.privateKey);
    assert.match(exchange({ subject: session, actor: agent, proof: leaky }).error_description, /private key/);
  });

  test('a bound token is re-exchanged only with its key, and stays bound', async () => {
    const bound = exchange({ subject: session, actor: agent, proof: await DPoP.generateProof(keys, TOKEN_URL, 'POST') });
    const again = exchange({ subject: bound.access_token, subjectType: AT,
                             proof: await DPoP.generateProof(keys, TOKEN_URL, 'POST') });
    assert.equal(again.token_type, 'DPoP', JSON.stringify(again));
    assert.deepEqual(decodeJwt(again.access_token).cnf, { jkt }, 'still bound to the same key');
    const stolen = exchange({ subject: bound.access_token, subjectType: AT,
                              proof: await DPoP.generateProof(other, TOKEN_URL, 'POST') });
    assert.equal(stolen.error, 'invalid_grant');
    assert.match(stolen.error_description, /another DPoP key/);
    const bare = exchange({ subject: bound.access_token, subjectType: AT });
    assert.equal(bare.error, 'invalid_grant');
    assert.match(bare.error_description, /bound to a DPoP key/);
  });

  test('a resource that requires DPoP refuses an exchange without a proof', async () => {
    const r = exchange({ subject: session, actor: agent, audience: 'd-bank' });
    assert.equal(r.error, 'invalid_request');
    assert.match(r.error_description, /DPoP proof is required/);
    const ok = exchange({ subject: session, actor: agent, audience: 'd-bank',
                          proof: await DPoP.generateProof(keys, TOKEN_URL, 'POST') });
    assert.equal(ok.token_type, 'DPoP', JSON.stringify(ok));
  });

  test('tokex.dpop_nonce: a proof without the server\'s nonce gets use_dpop_nonce and one; with it, the token', async () => {
    const withNonce = (proof) => sqlJson(`SET tokex.dpop_nonce = on;
      SELECT tokex.exchange(:'st', :'jwt', :'at', :'jwt', audience => 'd-cal', dpop_proof => :'p')`,
      { st: session, at: agent, jwt: JWT, p: proof });
    const first = withNonce(await DPoP.generateProof(keys, TOKEN_URL, 'POST'));
    assert.equal(first.error, 'use_dpop_nonce', JSON.stringify(first));
    assert.match(first.dpop_nonce, /^[A-Za-z0-9_-]{32}$/);
    const forged = withNonce(await DPoP.generateProof(keys, TOKEN_URL, 'POST', 'A'.repeat(32)));
    assert.equal(forged.error, 'use_dpop_nonce');
    const ok = withNonce(await DPoP.generateProof(keys, TOKEN_URL, 'POST', first.dpop_nonce));
    assert.equal(ok.token_type, 'DPoP', JSON.stringify(ok));
    assert.match(ok.dpop_nonce, /^[A-Za-z0-9_-]{32}$/, 'and a fresh nonce for the next request');
  });

  describe('at the resource: tokex.authenticate', () => {
    const API = 'https://api.test/notes';
    // one psql session: authenticate in a transaction, read the accessors
    // inside it and after it
    function authenticate(token, proof, method = 'GET', url = API) {
      return psql(`BEGIN;
        SET LOCAL tokex.resource_audience = 'd-cal';
        SELECT tokex.authenticate(:'t', NULLIF(:'p', ''), :'m', :'u')->>'sub';
        SELECT COALESCE(tokex.on_behalf_of(), '-') || ' ' || COALESCE(tokex.current_actor(), '-');
        COMMIT;
        SELECT COALESCE(tokex.on_behalf_of(), 'nothing after the transaction');`,
        { t: token, p: proof ?? '', m: method, u: url });
    }

    test('a bound token with a proof for this request (htm, htu, ath): the claims, for this transaction only', async () => {
      const bound = exchange({ subject: session, actor: agent, proof: await DPoP.generateProof(keys, TOKEN_URL, 'POST') });
      const r = authenticate(bound.access_token, await DPoP.generateProof(keys, API, 'GET', undefined, bound.access_token));
      assert.ok(r.ok, r.stderr);
      assert.deepEqual(r.stdout.split('\n'), ['d-alice', 'd-alice d-agent', 'nothing after the transaction']);
    });

    test('a bound token without a proof, with a proof for another token (ath), by another key, or replayed: refused', async () => {
      const bound = exchange({ subject: session, actor: agent, proof: await DPoP.generateProof(keys, TOKEN_URL, 'POST') });
      const other1 = exchange({ subject: session, actor: agent, proof: await DPoP.generateProof(keys, TOKEN_URL, 'POST') });
      let r = authenticate(bound.access_token, null);
      assert.equal(r.sqlstate, '28000');
      assert.match(r.detail, /needs its proof/);
      r = authenticate(bound.access_token, await DPoP.generateProof(keys, API, 'GET', undefined, other1.access_token));
      assert.equal(r.sqlstate, '28000');
      assert.match(r.detail, /ath/);
      r = authenticate(bound.access_token, await DPoP.generateProof(other, API, 'GET', undefined, bound.access_token));
      assert.equal(r.sqlstate, '28000');
      assert.match(r.detail, /another key/);
      r = authenticate(bound.access_token, await DPoP.generateProof(keys, API, 'POST', undefined, bound.access_token));
      assert.match(r.detail, /htm/);
      const proof = await DPoP.generateProof(keys, API, 'GET', undefined, bound.access_token);
      assert.ok(authenticate(bound.access_token, proof).ok);
      r = authenticate(bound.access_token, proof);
      assert.match(r.detail, /already used/);
    });

    test('a proof spent in a rolled-back transaction stays spent; a READ ONLY transaction (PostgREST GET) works', async () => {
      const bound = exchange({ subject: session, actor: agent, proof: await DPoP.generateProof(keys, TOKEN_URL, 'POST') });
      const proof = await DPoP.generateProof(keys, API, 'GET', undefined, bound.access_token);
      const ro = psql(`BEGIN READ ONLY; SET LOCAL tokex.resource_audience = 'd-cal';
        SELECT tokex.authenticate(:'t', :'p', 'GET', :'u')->>'sub'; ROLLBACK;`, { t: bound.access_token, p: proof, u: API });
      assert.ok(ro.ok, ro.stderr);
      assert.equal(ro.stdout, 'd-alice');
      const again = authenticate(bound.access_token, proof);
      assert.equal(again.sqlstate, '28000');
      assert.match(again.detail, /already used/);
      const tproof = await DPoP.generateProof(keys, TOKEN_URL, 'POST');
      const rolled = psql(`BEGIN; SELECT tokex.exchange(:'st', :'jwt', :'at', :'jwt', audience => 'd-cal', dpop_proof => :'p')->>'token_type'; ROLLBACK;`,
                          { st: session, at: agent, jwt: JWT, p: tproof });
      assert.equal(rolled.stdout, 'DPoP', rolled.stderr);
      assert.equal(exchange({ subject: session, actor: agent, proof: tproof }).error_description,
                   "the proof's jti was already used", 'a rolled-back exchange spent its proof');
    });

    test('a bearer token needs no proof; a token for another audience is refused', async () => {
      const bearer = exchange({ subject: session, actor: agent });
      assert.equal(bearer.token_type, 'Bearer');
      assert.equal(authenticate(bearer.access_token, null).stdout.split('\n')[0], 'd-alice');
      const bank = exchange({ subject: session, actor: agent, audience: 'd-bank',
                              proof: await DPoP.generateProof(keys, TOKEN_URL, 'POST') });
      const r = authenticate(bank.access_token, await DPoP.generateProof(keys, API, 'GET', undefined, bank.access_token));
      assert.equal(r.sqlstate, '28000');
      assert.match(r.detail, /not for this resource/);
    });
  });
});
