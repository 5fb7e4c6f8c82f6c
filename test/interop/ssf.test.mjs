// Shared Signals: a receiver polls POST /rpc/ssf_poll (RFC 8936, JSON body,
// client_secret_basic) as PostgREST runs it (test/http/postgrest.mjs replays
// the request's SQL), and npm jose verifies each Security Event Token
// against the JWKS that GET /rpc/jwks serves: typ secevent+jwt, iss, aud =
// the receiver, iat, jti, and a CAEP session-revoked event naming exactly
// the receiver's tokens that the revocation killed.  The SETs are signed at
// delivery: after a key rotation an unacknowledged event comes back signed
// by the new key, still verifiable from the JWKS.
import { test, describe, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createLocalJWKSet, jwtVerify, decodeProtectedHeader } from 'jose';
import { findProc, psqlArgs, requestScript, toResponse, ROUTINES_SQL } from '../http/postgrest.mjs';
import { sql, sqlJson, ISSUER } from './pg.mjs';

const JWT = 'urn:ietf:params:oauth:token-type:jwt';
const SESSION_REVOKED = 'https://schemas.openid.net/secevent/caep/event-type/session-revoked';

let routines;
// One PostgREST request to /rpc/<fn>: a JSON body (or GET without one).
function request(fn, body = {}, { method = 'POST', headers = {} } = {}) {
  routines ??= JSON.parse(sql(ROUTINES_SQL, { pgrst_schemas: 'tokex_api' }));
  const pairs = Object.entries(body);
  const found = findProc(routines, 'tokex_api', fn, new Set(pairs.map(([k]) => k)));
  if (found.error) return found.error;
  const { script, vars } = requestScript(found.routine, {
    method, path: `/rpc/${fn}`, pairs,
    headers: { host: 'tokex.test', accept: 'application/json',
               ...(method === 'POST' ? { 'content-type': 'application/json' } : {}), ...headers },
  });
  const r = spawnSync('psql', psqlArgs(vars), { input: script, encoding: 'utf8', maxBuffer: 64 << 20, env: process.env });
  if (r.error) throw r.error;
  return toResponse(r);
}

const basic = (id, secret) =>
  ({ authorization: 'Basic ' + Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64') });

function mint(principal, agent, audience) {
  const r = sqlJson(`SELECT tokex.exchange(tokex.start_session(:'p', :'a')->>'session_token', :'jt',
                                            tokex.identity_token(:'a'), :'jt', audience => :'aud')`,
                    { p: principal, a: agent, aud: audience, jt: JWT });
  assert.ok(r.access_token, JSON.stringify(r));
  return JSON.parse(Buffer.from(r.access_token.split('.')[1], 'base64url')).jti;
}

describe('SSF: SETs polled through PostgREST verify in jose', () => {
  let secrets, calToken, calToken2, mailToken, bobToken;
  const poll = (client, body = {}) => request('ssf_poll', body, { headers: basic(client, secrets[client]) });
  const jwks = () => {
    const r = request('jwks', {}, { method: 'GET' });
    assert.equal(r.status, 200);
    return createLocalJWKSet(r.body);
  };

  before(() => {
    sql(`DO $$ BEGIN CREATE ROLE anon NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
         GRANT tokex_web TO anon;
         SELECT format('ALTER DATABASE %I SET tokex.issuer = %L', current_database(), :'tokex_issuer') \\gexec
         SELECT tokex.create_key('ES256') WHERE NOT EXISTS (SELECT 1 FROM tokex.key WHERE status = 'active');
         INSERT INTO tokex.identity (id, kind) VALUES ('s-alice', 'human'), ('s-bob', 'human'), ('s-agent', 'agent');
         INSERT INTO tokex.resource (audience, scopes) VALUES ('ssf-cal', '{c}'), ('ssf-mail', '{m}');
         INSERT INTO tokex.delegation (principal, delegate, scopes)
           VALUES ('s-alice', 's-agent', '{c,m}'), ('s-bob', 's-agent', '{c,m}');
         INSERT INTO tokex.policy (effect, subject_kind) VALUES ('allow', 'human');`);
    secrets = sqlJson(`SET tokex.secret_hash_iterations = 100000;
                       SELECT json_build_object('cal-rs', tokex.register_client('cal-rs'),
                                                'mail-rs', tokex.register_client('mail-rs'))`);
    sql(`INSERT INTO tokex.ssf_stream (audience, clients) VALUES ('ssf-cal', '{cal-rs}'), ('ssf-mail', '{mail-rs}')`);
    calToken = mint('s-alice', 's-agent', 'ssf-cal');
    calToken2 = mint('s-alice', 's-agent', 'ssf-cal');
    mailToken = mint('s-alice', 's-agent', 'ssf-mail');
    bobToken = mint('s-bob', 's-agent', 'ssf-cal');
    sql(`SELECT tokex.revoke_identity('s-alice', 'offboarded')`);
  });

  test('cal-rs: one SET, verified against the JWKS, naming exactly its two tokens', async () => {
    const r = poll('cal-rs', { maxEvents: 10, returnImmediately: true });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.moreAvailable, false);
    const entries = Object.entries(r.body.sets);
    assert.equal(entries.length, 1);
    const [jti, set] = entries[0];
    const { payload, protectedHeader } = await jwtVerify(set, jwks(), { issuer: ISSUER, audience: 'ssf-cal',
                                                                       typ: 'secevent+jwt' });
    assert.equal(protectedHeader.typ, 'secevent+jwt');
    assert.equal(payload.jti, jti);
    assert.ok(Number.isInteger(payload.iat) && Math.abs(payload.iat - Date.now() / 1000) < 120);
    assert.equal(payload.aud, 'ssf-cal');
    assert.deepEqual(payload.sub_id, { format: 'iss_sub', iss: ISSUER, sub: 's-alice' });
    assert.deepEqual(Object.keys(payload.events), [SESSION_REVOKED]);
    const ev = payload.events[SESSION_REVOKED];
    assert.deepEqual(ev.tokens.map((t) => t.jti).sort(), [calToken, calToken2].sort());
    for (const t of ev.tokens) assert.deepEqual(Object.keys(t).sort(), ['format', 'iss', 'jti']);
    assert.ok(!ev.tokens.some((t) => t.jti === bobToken || t.jti === mailToken));
    assert.equal(ev.reason_admin.en, 'offboarded');
    assert.ok(Number.isInteger(ev.event_timestamp));
    assert.equal(payload.exp, undefined, 'a SET carries no exp (RFC 8417 §2.2)');
  });

  test('mail-rs: its own SET, aud ssf-mail, naming its token', async () => {
    const r = poll('mail-rs', {});
    const sets = Object.values(r.body.sets);
    assert.equal(sets.length, 1);
    const { payload } = await jwtVerify(sets[0], jwks(), { issuer: ISSUER, audience: 'ssf-mail', typ: 'secevent+jwt' });
    assert.deepEqual(payload.events[SESSION_REVOKED].tokens.map((t) => t.jti), [mailToken]);
    await assert.rejects(jwtVerify(sets[0], jwks(), { issuer: ISSUER, audience: 'ssf-cal' }),
                         'a SET for mail does not verify as one for cal');
  });

  test('unacknowledged: comes back, signed by the key active now; acknowledged: gone', async () => {
    const before = Object.entries(poll('cal-rs').body.sets);
    const oldKid = decodeProtectedHeader(before[0][1]).kid;
    const newKid = sql(`SELECT tokex.create_key('ES256')`);
    sql(`SELECT tokex.activate_key(:'k')`, { k: newKid });
    const again = Object.entries(poll('cal-rs').body.sets);
    assert.deepEqual(again.map(([j]) => j), before.map(([j]) => j), 'the same event (jti) again');
    assert.equal(decodeProtectedHeader(again[0][1]).kid, newKid);
    assert.notEqual(newKid, oldKid);
    const { payload } = await jwtVerify(again[0][1], jwks(), { issuer: ISSUER, audience: 'ssf-cal', typ: 'secevent+jwt' });
    assert.equal(payload.jti, before[0][0]);
    const acked = poll('cal-rs', { ack: [before[0][0]], maxEvents: 5 });
    assert.equal(acked.status, 200);
    assert.deepEqual(acked.body, { sets: {}, moreAvailable: false });
    assert.deepEqual(poll('cal-rs').body, { sets: {}, moreAvailable: false }, 'poll again: nothing new');
  });

  test('setErrs (RFC 8936 §2.4): the event is answered, not sent again', () => {
    const [[jti]] = Object.entries(poll('mail-rs').body.sets);
    const r = poll('mail-rs', { setErrs: { [jti]: { err: 'invalid_key', description: 'kid unknown' } } });
    assert.deepEqual(r.body, { sets: {}, moreAvailable: false });
    assert.deepEqual(sqlJson(`SELECT set_error FROM tokex.ssf_event WHERE jti = :'j'`, { j: jti }),
                     { err: 'invalid_key', description: 'kid unknown' });
  });

  test('another receiver\'s stream, a wrong secret, GET: refused with RFC 8935 error JSON', () => {
    const cal = sql(`SELECT stream_id FROM tokex.ssf_stream WHERE audience = 'ssf-cal'`);
    const other = poll('mail-rs', { stream_id: cal });
    assert.equal(other.status, 403);
    assert.equal(other.body.err, 'access_denied');
    const bad = request('ssf_poll', {}, { headers: basic('cal-rs', 'wrong') });
    assert.equal(bad.status, 401);
    assert.equal(bad.body.err, 'authentication_failed');
    assert.ok(bad.headers.some((h) => h['WWW-Authenticate']));
    const get = request('ssf_poll', {}, { method: 'GET', headers: basic('cal-rs', secrets['cal-rs']) });
    assert.equal(get.status, 405);
  });

  test('stream configuration and transmitter metadata over PostgREST', () => {
    const cfg = request('ssf_stream', {}, { headers: basic('cal-rs', secrets['cal-rs']) });
    assert.equal(cfg.status, 200);
    assert.equal(cfg.body.aud, 'ssf-cal');
    assert.equal(cfg.body.delivery.method, 'urn:ietf:rfc:8936');
    const meta = request('ssf_configuration', {}, { method: 'GET' });
    assert.equal(meta.status, 200);
    assert.equal(meta.body.issuer, ISSUER);
    assert.deepEqual(meta.body.delivery_methods_supported, ['urn:ietf:rfc:8936']);
  });
});
