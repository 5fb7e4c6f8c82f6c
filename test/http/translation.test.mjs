// The translation layer over HTTP: an agent's API key as the actor token, a
// reference token for an MCP server (introspected and revoked through the
// endpoints), a transaction token with request_details / request_context
// as form parameters.
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { AT_TYPE, TE, decode, fx, request, sql } from './lib.mjs';

const AK = 'urn:tokex:token-type:api_key';
const TXN = 'urn:ietf:params:oauth:token-type:txn_token';
const web = () => ({ client_id: fx().secretClient.id, client_secret: fx().secretClient.secret });
let key;
let subject;

before(() => {
  // people, agents and resources of their own: the other test files share the database
  sql(`INSERT INTO tokex.identity (id, kind) VALUES ('carol', 'human'), ('tool-agent', 'agent')
       ON CONFLICT DO NOTHING`);
  sql(`INSERT INTO tokex.resource (audience, scopes, token_format) VALUES
         ('mcp-tools', '{tools.call}', 'reference'), ('orders', '{orders.read}', 'txn_token')
       ON CONFLICT DO NOTHING`);
  sql(`INSERT INTO tokex.delegation (principal, delegate, scopes)
       SELECT 'carol', 'tool-agent', '{tools.call,orders.read}'
        WHERE NOT EXISTS (SELECT 1 FROM tokex.delegation WHERE principal = 'carol')`);
  key = sql(`SELECT tokex.create_api_key('tool-agent', label => 'http test')`);
  subject = sql(`SELECT tokex.start_session('carol', 'tool-agent')->>'session_token'`);
});

const exchange = (extra) => request('token', {
  grant_type: TE, subject_token: subject, subject_token_type: 'urn:ietf:params:oauth:token-type:jwt',
  actor_token: key, actor_token_type: AK, ...web(), ...extra,
});

describe('an API key as the actor, a reference token for an MCP server', () => {
  test('POST /rpc/token with the agent\'s API key: 200, an opaque tkx_at_ Bearer token', () => {
    const r = exchange({ audience: 'mcp-tools', scope: 'tools.call' });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.match(r.body.access_token, /^tkx_at_[0-9A-Za-z]{49}$/);
    assert.equal(r.body.token_type, 'Bearer');
    assert.equal(r.body.issued_token_type, AT_TYPE);
  });

  test('the MCP server introspects it: sub, act, aud, scope; then the client revokes it', () => {
    const t = exchange({ audience: 'mcp-tools' }).body.access_token;
    const i = request('introspect', { token: t, ...web() });
    assert.equal(i.status, 200);
    assert.equal(i.body.active, true, JSON.stringify(i.body));
    assert.equal(i.body.sub, 'carol');
    assert.deepEqual(i.body.act, { sub: 'tool-agent' });
    assert.equal(i.body.aud, 'mcp-tools');
    assert.equal(i.body.scope, 'tools.call');
    assert.equal(request('revoke', { token: t, ...web() }).status, 200);
    assert.deepEqual(request('introspect', { token: t, ...web() }).body, { active: false });
  });

  test('a revoked API key: 400 invalid_grant, audited', () => {
    const k = sql(`SELECT tokex.create_api_key('tool-agent')`);
    sql(`SELECT tokex.revoke_api_key(:'k', 'rotated')`, { k });
    const before = Number(sql(`SELECT count(*) FROM tokex.audit WHERE reason = 'actor_token: the API key has been revoked'`));
    const r = exchange({ actor_token: k, audience: 'mcp-tools' });
    assert.equal(r.status, 400);
    assert.equal(r.body.error, 'invalid_grant');
    assert.equal(Number(sql(`SELECT count(*) FROM tokex.audit WHERE reason = 'actor_token: the API key has been revoked'`)),
                 before + 1);
  });
});

describe('a transaction token', () => {
  test('request_details and request_context as form parameters become tctx and rctx', () => {
    const r = exchange({ audience: 'orders', requested_token_type: TXN,
                         request_details: JSON.stringify({ action: 'refund', order: 7 }),
                         request_context: JSON.stringify({ req_ip: '192.0.2.1' }) });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.token_type, 'N_A');
    assert.equal(r.body.issued_token_type, TXN);
    const { header, payload } = decode(r.body.access_token);
    assert.equal(header.typ, 'txntoken+jwt');
    assert.deepEqual(payload.tctx, { action: 'refund', order: 7 });
    assert.deepEqual(payload.rctx, { req_ip: '192.0.2.1' });
    assert.equal(payload.req_wl, fx().secretClient.id);
    assert.deepEqual(payload.act, { sub: 'tool-agent' });
    assert.equal(payload.txn, payload.jti);
  });

  test('request_details that is not a JSON object: 400 invalid_request, audited', () => {
    for (const bad of ['not json', '[1, 2]']) {
      const r = exchange({ audience: 'orders', request_details: bad });
      assert.equal(r.status, 400, bad);
      assert.equal(r.body.error, 'invalid_request');
      assert.equal(r.body.error_description, 'request_details and request_context are JSON objects');
    }
  });
});
