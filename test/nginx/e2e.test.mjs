// tokex as an OAuth client meets it: behind nginx (contrib/nginx), found by
// RFC 8414 discovery, used through openid-client (oauth4webapi) and jose, over
// TLS.  run.sh starts nginx and the PostgREST stand-in and sets TOKEX_ISSUER
// (https://127.0.0.1:PORT), NODE_EXTRA_CA_CERTS and the client fixtures.
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as client from 'openid-client';
import { createRemoteJWKSet, importJWK, jwtVerify } from 'jose';
import { JWT_TYPE, TE, fx, sql, tokens } from '../http/lib.mjs';

const ISSUER = process.env.TOKEX_ISSUER;
const AT_TYPE = 'urn:ietf:params:oauth:token-type:access_token';

const discover = (id, auth) => client.discovery(new URL(ISSUER), id, undefined, auth, { algorithm: 'oauth2' });
const secretClient = (which = 'secretClient', how = client.ClientSecretBasic) =>
  discover(fx()[which].id, how(fx()[which].secret));

const exchangeParams = (t, extra = {}) => ({
  subject_token: t.subject, subject_token_type: JWT_TYPE,
  actor_token: t.actor, actor_token_type: JWT_TYPE,
  audience: 'calendar-api', scope: 'calendar.read', ...extra,
});

const audited = (error, reason) =>
  Number(sql(`SELECT count(*) FROM tokex.audit WHERE error = :'e' AND reason = :'r'`, { e: error, r: reason }));

// a request the library would not make (a hand-written form, odd headers)
async function post(path, form, headers = {}) {
  const { id, secret } = fx().secretClient;
  const r = await fetch(`${ISSUER}${path}`, {
    method: 'POST',
    headers: {
      'content-type': 'application/x-www-form-urlencoded',
      accept: 'application/json',
      authorization: `Basic ${Buffer.from(`${id}:${secret}`).toString('base64')}`,
      ...headers,
    },
    body: form,
  });
  const text = await r.text();
  let body;
  try { body = JSON.parse(text); } catch { body = text; }
  return { status: r.status, headers: r.headers, body };
}

const exchangeForm = (t, extra = '') =>
  `grant_type=${encodeURIComponent(TE)}&subject_token=${t.subject}&subject_token_type=${encodeURIComponent(JWT_TYPE)}` +
  `&actor_token=${t.actor}&actor_token_type=${encodeURIComponent(JWT_TYPE)}${extra}`;

// the OAuth error the library reports: from the body (ResponseBodyError), or
// for a 401 with a WWW-Authenticate challenge (WWWAuthenticateChallengeError)
// from the response it keeps
async function rejects(promise, error) {
  let caught;
  try { await promise; } catch (e) { caught = e; }
  assert.ok(caught, `expected ${error}`);
  let got = caught.error;
  if (got === undefined && caught instanceof client.WWWAuthenticateChallengeError) {
    assert.equal(caught.status, 401);
    assert.equal(caught.cause[0].scheme, 'basic');
    got = (await caught.response.json()).error;
  }
  assert.equal(got, error, `${caught.name}: ${caught.message}`);
}

describe('discovery (RFC 8414 §3) through the proxy', () => {
  test('metadata at /.well-known/oauth-authorization-server names the proxied endpoints', async () => {
    const config = await secretClient();
    const m = config.serverMetadata();
    assert.equal(m.issuer, ISSUER);
    assert.equal(m.token_endpoint, `${ISSUER}/token`);
    assert.equal(m.introspection_endpoint, `${ISSUER}/introspect`);
    assert.equal(m.revocation_endpoint, `${ISSUER}/revoke`);
    assert.equal(m.jwks_uri, `${ISSUER}/jwks`);
    assert.ok(m.grant_types_supported.includes(TE));
  });

  test('the metadata and the JWKS are cacheable, as the functions say', async () => {
    for (const path of ['/.well-known/oauth-authorization-server', '/jwks']) {
      const r = await fetch(`${ISSUER}${path}`);
      assert.equal(r.status, 200, path);
      assert.equal(r.headers.get('cache-control'), 'public, max-age=300', path);
      assert.match(r.headers.get('content-type'), /^application\/json/, path);
    }
  });
});

describe('token exchange, introspection, revocation with openid-client', () => {
  let config;
  let jwks;
  before(async () => {
    config = await secretClient();
    jwks = createRemoteJWKSet(new URL(config.serverMetadata().jwks_uri));
  });

  test('client_secret_basic: an RFC 8693 exchange; the token verifies against jwks_uri', async () => {
    const r = await client.genericGrantRequest(config, TE, exchangeParams(tokens()));
    assert.equal(r.issued_token_type, AT_TYPE);
    assert.equal(r.token_type, 'bearer');
    assert.equal(r.scope, 'calendar.read');
    const { payload, protectedHeader } = await jwtVerify(r.access_token, jwks,
      { issuer: ISSUER, audience: 'calendar-api', typ: 'at+jwt' });
    assert.equal(payload.sub, 'alice');
    assert.deepEqual(payload.act, { sub: 'agent-a' });
    assert.equal(payload.client_id, fx().secretClient.id);
    assert.equal(protectedHeader.alg, 'ES256');
  });

  test('client_secret_post works too', async () => {
    const post = await secretClient('secretClient', client.ClientSecretPost);
    const r = await client.genericGrantRequest(post, TE, exchangeParams(tokens()));
    assert.ok(r.access_token);
  });

  test('private_key_jwt: the library\'s assertion (aud = issuer) authenticates', async () => {
    const { id, privateJwk } = fx().jwtClient;
    const key = await importJWK(privateJwk, 'ES256');
    const pkj = await discover(id, client.PrivateKeyJwt({ key, kid: privateJwk.kid }));
    const r = await client.genericGrantRequest(pkj, TE, exchangeParams(tokens()));
    const { payload } = await jwtVerify(r.access_token, jwks, { issuer: ISSUER, audience: 'calendar-api' });
    assert.equal(payload.client_id, id);
  });

  test('introspection: the client the token was issued to and the resource server see it active', async () => {
    const r = await client.genericGrantRequest(config, TE, exchangeParams(tokens()));
    const own = await client.tokenIntrospection(config, r.access_token);
    assert.equal(own.active, true);
    assert.equal(own.sub, 'alice');
    assert.equal(own.aud, 'calendar-api');
    const gw = await client.tokenIntrospection(await secretClient('calendarGateway'), r.access_token);
    assert.equal(gw.active, true);
    const other = await client.tokenIntrospection(await secretClient('mailGateway'), r.access_token);
    assert.deepEqual(other, { active: false });
  });

  test('revocation, then introspection says inactive', async () => {
    const r = await client.genericGrantRequest(config, TE, exchangeParams(tokens()));
    assert.equal((await client.tokenIntrospection(config, r.access_token)).active, true);
    await client.tokenRevocation(config, r.access_token);
    assert.deepEqual(await client.tokenIntrospection(config, r.access_token), { active: false });
  });

  test('errors come back as OAuth errors the library understands', async () => {
    await rejects(client.genericGrantRequest(config, TE, exchangeParams(tokens(), { audience: 'unknown-api' })),
                  'invalid_target');
    const bad = await discover(fx().secretClient.id, client.ClientSecretBasic('wrong'));
    await rejects(client.genericGrantRequest(bad, TE, exchangeParams(tokens())), 'invalid_client');
  });
});

// RFC 8693 §2.1: audience and resource may repeat; tokex issues for one, so
// a repeat is invalid_target.  nginx sees the repeat PostgREST would hide.
describe('a repeated audience or resource, seen by nginx', () => {
  let config;
  before(async () => { config = await secretClient(); });

  test('the library repeating audience: 400 invalid_target, audited', async () => {
    const before = audited('invalid_target', 'audience given more than once');
    const { audience, scope, ...p } = exchangeParams(tokens());
    const params = new URLSearchParams(p);
    params.append('audience', 'mail-api');
    params.append('audience', 'calendar-api');
    await rejects(client.genericGrantRequest(config, TE, params), 'invalid_target');
    assert.equal(audited('invalid_target', 'audience given more than once'), before + 1);
  });

  test('the library repeating resource: 400 invalid_target, audited', async () => {
    const before = audited('invalid_target', 'resource given more than once');
    const { audience, scope, ...p } = exchangeParams(tokens());
    const params = new URLSearchParams(p);
    params.append('resource', 'https://mail.test/');
    params.append('resource', 'https://calendar.test/');
    await rejects(client.genericGrantRequest(config, TE, params), 'invalid_target');
    assert.equal(audited('invalid_target', 'resource given more than once'), before + 1);
  });

  test('however the key is spelt (percent-encoded, after a ";", without "=")', async () => {
    for (const extra of ['&%61udience=mail-api&audience=calendar-api', '&audience=mail-api;audience=calendar-api',
                         '&audience=calendar-api&audi%65nc%65=mail-api', '&audience&audience=calendar-api',
                         '&resource=https%3A%2F%2Fcalendar.test%2F&r%65source=x']) {
      const r = await post('/token', exchangeForm(tokens(), extra));
      assert.equal(r.status, 400, `${extra}: ${JSON.stringify(r.body)}`);
      assert.equal(r.body.error, 'invalid_target', extra);
    }
  });

  test('one audience, and the word elsewhere in the form: not a repeat', async () => {
    for (const extra of ['&audience=calendar-api', '&scope=calendar.read&audience=calendar-api',
                         '&resource=https%3A%2F%2Fcalendar.test%2F']) {
      const r = await post('/token', exchangeForm(tokens(), extra));
      assert.equal(r.status, 200, `${extra}: ${JSON.stringify(r.body)}`);
    }
    // as a value, percent-encoded or not, it is the scope that is wrong
    for (const extra of ['&audience=calendar-api&scope=audience', '&audience=calendar-api&scope=x%26audience%3Dy']) {
      const r = await post('/token', exchangeForm(tokens(), extra));
      assert.equal(r.body.error, 'invalid_scope', `${extra}: ${JSON.stringify(r.body)}`);
    }
  });

  test('a client cannot set the Tokex-Repeated-Parameters header itself', async () => {
    const r = await post('/token', exchangeForm(tokens(), '&audience=calendar-api'),
                         { 'tokex-repeated-parameters': 'audience' });
    assert.equal(r.status, 200, JSON.stringify(r.body));
  });
});

describe('what the proxy lets through', () => {
  test('only POST to the token endpoints, only GET to discovery and JWKS: 405', async () => {
    const g = await fetch(`${ISSUER}/token`);
    assert.equal(g.status, 405);
    assert.equal(g.headers.get('allow'), 'POST');
    const p = await fetch(`${ISSUER}/jwks`, { method: 'POST' });
    assert.equal(p.status, 405);
  });

  test('a body that is not a form: 400 invalid_request, not stored', async () => {
    const r = await post('/token', JSON.stringify({ grant_type: TE }), { 'content-type': 'application/json' });
    assert.equal(r.status, 400);
    assert.equal(r.body.error, 'invalid_request');
    assert.equal(r.headers.get('cache-control'), 'no-store');
  });

  test('PostgREST\'s own paths are not exposed: 404', async () => {
    for (const path of ['/rpc/token', '/rpc/jwks', '/', '/token/']) {
      const r = await fetch(`${ISSUER}${path}`);
      assert.equal(r.status, 404, path);
    }
  });

  test('a query string is not forwarded (PostgREST would read it as filters)', async () => {
    const r = await post('/token?audience=mail-api&select=x', exchangeForm(tokens(), '&audience=calendar-api'));
    assert.equal(r.status, 200, JSON.stringify(r.body));
  });

  // the deviation that remains (README): PostgREST matches a function by its
  // keys, so an unknown form parameter is its 404, not ignored (RFC 6749 §3.1)
  test('an unknown form parameter: PostgREST\'s 404 PGRST202', async () => {
    const r = await post('/token', exchangeForm(tokens(), '&audience=calendar-api&foo=bar'));
    assert.equal(r.status, 404, JSON.stringify(r.body));
    assert.equal(r.body.code, 'PGRST202');
  });
});

describe('Shared Signals through the proxy', () => {
  const SESSION_REVOKED = 'https://schemas.openid.net/secevent/caep/event-type/session-revoked';
  const poll = (body) => post('/ssf_poll', JSON.stringify(body), { 'content-type': 'application/json' });

  before(() => {
    sql(`INSERT INTO tokex.ssf_stream (audience, clients) VALUES ('calendar-api', ARRAY[:'c'])
         ON CONFLICT (audience) DO UPDATE SET clients = EXCLUDED.clients`, { c: fx().secretClient.id });
  });

  test('/.well-known/ssf-configuration names the proxied endpoints', async () => {
    const r = await fetch(`${ISSUER}/.well-known/ssf-configuration`);
    assert.equal(r.status, 200);
    const m = await r.json();
    assert.equal(m.issuer, ISSUER);
    assert.equal(m.jwks_uri, `${ISSUER}/jwks`);
    assert.equal(m.configuration_endpoint, `${ISSUER}/ssf_stream`);
    assert.equal(m.status_endpoint, `${ISSUER}/ssf_status`);
  });

  test('a revoked token reaches the receiver: POST /ssf_poll (JSON), the SET verifies against jwks_uri, ack', async () => {
    const t = tokens();
    const r = JSON.parse(sql(`SELECT tokex.exchange(:'s', :'jt', :'a', :'jt', audience => 'calendar-api')`,
                             { s: t.subject, a: t.actor, jt: JWT_TYPE }));
    const jti = JSON.parse(Buffer.from(r.access_token.split('.')[1], 'base64url')).jti;
    sql(`SELECT tokex.revoke_token(:'j', 'e2e')`, { j: jti });
    const cfg = await post('/ssf_stream', '{}', { 'content-type': 'application/json' });
    assert.equal(cfg.status, 200, JSON.stringify(cfg.body));
    assert.equal(cfg.body.delivery.endpoint_url, `${ISSUER}/ssf_poll`);
    const got = await poll({ maxEvents: 100, returnImmediately: true });
    assert.equal(got.status, 200, JSON.stringify(got.body));
    const jwks = createRemoteJWKSet(new URL(`${ISSUER}/jwks`));
    const named = [];
    for (const set of Object.values(got.body.sets)) {
      const { payload } = await jwtVerify(set, jwks, { issuer: ISSUER, audience: 'calendar-api', typ: 'secevent+jwt' });
      named.push(...payload.events[SESSION_REVOKED].tokens.map((x) => x.jti));
    }
    assert.ok(named.includes(jti), 'the revoked token is named');
    const acked = await poll({ ack: Object.keys(got.body.sets), maxEvents: 100 });
    assert.deepEqual(acked.body, { sets: {}, moreAvailable: false });
  });

  test('only POST, and JSON or a form', async () => {
    assert.equal((await fetch(`${ISSUER}/ssf_poll`)).status, 405);
    const r = await post('/ssf_poll', 'x', { 'content-type': 'text/plain' });
    assert.equal(r.status, 400);
    assert.equal(r.body.err, 'invalid_request');
  });
});
