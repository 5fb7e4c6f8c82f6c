// The access token tokex.exchange mints (RFC 9068) verifies in npm jose
// against tokex.jwks(), with typ at+jwt, and its claims are what the exchange
// decided: sub = the person, act = the chain (current actor outermost), one
// aud, the granted scope, and jti = the audit row's exchange_id.
import { test, describe, before } from 'node:test';
import assert from 'node:assert/strict';
import { createLocalJWKSet, jwtVerify, decodeProtectedHeader } from 'jose';
import { sql, sqlJson, ISSUER } from './pg.mjs';

const JWT = 'urn:ietf:params:oauth:token-type:jwt';
const AT = 'urn:ietf:params:oauth:token-type:access_token';

function exchange(subject, subjectType, actor, audience, scope) {
  return sqlJson(`SELECT tokex.exchange(:'st', :'stt', :'at', :'att', audience => :'aud', scope => :'scope')`,
                 { st: subject, stt: subjectType, at: actor, att: JWT, aud: audience, scope });
}

describe('tokens minted by tokex.exchange verify in jose', () => {
  let oneHop, twoHop;

  before(() => {
    sql(`SELECT tokex.create_key('ES256') WHERE NOT EXISTS (SELECT 1 FROM tokex.key WHERE status = 'active');
         INSERT INTO tokex.identity (id, kind) VALUES ('x-alice', 'human'), ('x-asst', 'agent'), ('x-booker', 'agent');
         INSERT INTO tokex.resource (audience, scopes, token_ttl) VALUES ('x-calendar', '{cal.read,cal.write}', '2 minutes');
         INSERT INTO tokex.delegation (principal, delegate, scopes, max_depth)
           VALUES ('x-alice', 'x-asst', '{cal.read,cal.write}', 2), ('x-asst', 'x-booker', '{cal.write}', 1);
         INSERT INTO tokex.policy (effect, subject, actor_kind) VALUES ('allow', 'x-alice', 'agent');`);
    const session = sqlJson(`SELECT tokex.start_session('x-alice', 'x-asst')`).session_token;
    const asst = sql(`SELECT tokex.identity_token('x-asst')`);
    const booker = sql(`SELECT tokex.identity_token('x-booker')`);
    oneHop = exchange(session, JWT, asst, 'x-calendar', 'cal.read cal.write');
    assert.ok(oneHop.access_token, JSON.stringify(oneHop));
    twoHop = exchange(oneHop.access_token, AT, booker, 'x-calendar', 'cal.write');
    assert.ok(twoHop.access_token, JSON.stringify(twoHop));
  });

  async function verify(token) {
    const jwks = createLocalJWKSet(sqlJson('SELECT tokex.jwks()'));
    return jwtVerify(token, jwks, { issuer: ISSUER, audience: 'x-calendar', typ: 'at+jwt' });
  }

  test('one hop: sub is the person, act the agent, scope as granted', async () => {
    const { payload, protectedHeader } = await verify(oneHop.access_token);
    assert.equal(protectedHeader.typ, 'at+jwt');
    assert.equal(payload.sub, 'x-alice');
    assert.deepEqual(payload.act, { sub: 'x-asst' });
    assert.equal(payload.aud, 'x-calendar');
    assert.equal(payload.scope, 'cal.read cal.write');
    assert.equal(payload.scope, oneHop.scope);
    assert.equal(payload.exp - payload.iat, oneHop.expires_in);
    assert.equal(payload.exp - payload.iat, 120);
    assert.ok(payload.sid, 'minted from a session, the token names it');
  });

  test('two hops: the current actor is outermost, the chain nested', async () => {
    const { payload } = await verify(twoHop.access_token);
    assert.equal(payload.sub, 'x-alice');
    assert.deepEqual(payload.act, { sub: 'x-booker', act: { sub: 'x-asst' } });
    assert.equal(payload.scope, 'cal.write');
  });

  test('jti is the audit row of the exchange that minted it', async () => {
    const { payload } = await verify(twoHop.access_token);
    const row = sqlJson(`SELECT row_to_json(a) FROM (SELECT exchange_id, decision, subject, actor, actor_chain, scope
                           FROM tokex.audit WHERE jti::text = :'jti') a`, { jti: payload.jti });
    assert.deepEqual(row, { exchange_id: payload.jti, decision: 'granted', subject: 'x-alice',
                            actor: 'x-booker', actor_chain: ['x-asst', 'x-booker'], scope: ['cal.write'] });
  });

  test('a token whose payload was altered does not verify in jose', async () => {
    const [h, , s] = twoHop.access_token.split('.');
    const forged = Buffer.from(JSON.stringify({ sub: 'x-mallory', aud: 'x-calendar', iss: ISSUER,
                                                exp: Math.floor(Date.now() / 1000) + 60 })).toString('base64url');
    assert.equal(decodeProtectedHeader(twoHop.access_token).typ, 'at+jwt');
    await assert.rejects(verify(`${h}.${forged}.${s}`));
  });
});
