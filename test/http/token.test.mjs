// POST /rpc/token: token exchange, client_credentials, client authentication
// and every OAuth error, through the SQL PostgREST runs.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  ASSERTION_TYPE, AT_TYPE, BASE, ISSUER, JWT_TYPE, NO_STORE, TE, WWW_AUTH,
  auditClaimed, auditCount, auditReason, basic, clientAssertion, decode, fx, jwtAuth, newKey, request, sql, sqlJson, tokens,
} from './lib.mjs';

const exchangeParams = (t, extra = {}) => ({
  grant_type: TE,
  subject_token: t.subject, subject_token_type: JWT_TYPE,
  actor_token: t.actor, actor_token_type: JWT_TYPE,
  audience: 'calendar-api', scope: 'calendar.read', ...extra,
});

function assertGranted(r, clientId) {
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.deepEqual(r.headers, NO_STORE);
  assert.deepEqual(Object.keys(r.body).sort(),
                   ['access_token', 'expires_in', 'issued_token_type', 'scope', 'token_type']);
  assert.equal(r.body.issued_token_type, AT_TYPE);
  assert.equal(r.body.token_type, 'Bearer');
  assert.equal(r.body.scope, 'calendar.read');
  assert.ok(Number.isInteger(r.body.expires_in) && r.body.expires_in > 0 && r.body.expires_in <= 300);
  const claims = sqlJson(`SELECT tokex.jwt_verify(:'t', 'calendar-api')`, { t: r.body.access_token });
  assert.equal(claims.iss, ISSUER);
  assert.equal(claims.sub, 'alice');
  assert.deepEqual(claims.act, { sub: 'agent-a' });
  assert.equal(claims.aud, 'calendar-api');
  assert.equal(claims.scope, 'calendar.read');
  assert.equal(claims.client_id, clientId);
  assert.equal(decode(r.body.access_token).header.typ, 'at+jwt');
  return claims;
}

function assertError(r, status, error, description) {
  assert.equal(r.status, status, JSON.stringify(r.body));
  assert.equal(r.body.error, error, JSON.stringify(r.body));
  assert.equal(typeof r.body.error_description, 'string');
  if (description) assert.match(r.body.error_description, description);
  assert.deepEqual(Object.keys(r.body).sort(), ['error', 'error_description']);
  assert.deepEqual(r.headers, status === 401 ? [...NO_STORE, { 'WWW-Authenticate': WWW_AUTH }] : NO_STORE);
}

describe('token exchange', () => {
  test('client_secret_basic: 200, RFC 8693 body, token verifies', () => {
    const { id, secret } = fx().secretClient;
    const r = request('token', exchangeParams(tokens()), { headers: basic(id, secret) });
    assertGranted(r, id);
  });

  test('client_secret_post: 200', () => {
    const { id, secret } = fx().secretClient;
    const r = request('token', exchangeParams(tokens(), { client_id: id, client_secret: secret }));
    assertGranted(r, id);
  });

  test('client_secret_basic form-urlencodes id and secret (app:x -> app%3Ax)', () => {
    const { id, secret } = fx().oddClient;
    assert.match(basic(id, secret).authorization, /^Basic /);
    assert.equal(Buffer.from(basic(id, secret).authorization.slice(6), 'base64').toString().split(':')[0], 'app%3Ax');
    const r = request('token', exchangeParams(tokens()), { headers: basic(id, secret) });
    assertGranted(r, id);
  });

  test('private_key_jwt: 200 (with and without client_id)', () => {
    const { id } = fx().jwtClient;
    assertGranted(request('token', exchangeParams(tokens(), { client_id: id, ...jwtAuth() })), id);
    assertGranted(request('token', exchangeParams(tokens(), jwtAuth())), id);
  });
});

describe('requested_token_type', () => {
  test('jwt: 200, issued_token_type jwt', () => {
    const r = request('token', { ...exchangeParams(tokens(), { requested_token_type: JWT_TYPE }), ...jwtAuth() });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.deepEqual(r.headers, NO_STORE);
    assert.equal(r.body.issued_token_type, JWT_TYPE);
    assert.equal(sqlJson(`SELECT tokex.jwt_verify(:'t', 'calendar-api')`, { t: r.body.access_token }).sub, 'alice');
  });
});

describe('OAuth errors through HTTP are 400, and their audit rows commit', () => {
  const id = () => fx().jwtClient.id;

  test('invalid_request: missing grant_type', () => {
    const before = auditCount('invalid_request', id());
    const { grant_type, ...p } = exchangeParams(tokens());
    assertError(request('token', { ...p, ...jwtAuth() }), 400, 'invalid_request', /grant_type/);
    assert.equal(auditCount('invalid_request', id()), before + 1);
  });

  test('invalid_request: token exchange without subject_token', () => {
    const { subject_token, ...p } = exchangeParams(tokens());
    assertError(request('token', { ...p, ...jwtAuth() }), 400, 'invalid_request');
  });

  test('unsupported_grant_type', () => {
    const before = auditCount('unsupported_grant_type', id());
    assertError(request('token', { ...exchangeParams(tokens(), { grant_type: 'password' }), ...jwtAuth() }),
                400, 'unsupported_grant_type');
    assert.equal(auditCount('unsupported_grant_type', id()), before + 1);
  });

  test('invalid_grant: bad subject token', () => {
    const t = tokens();
    const before = auditCount('invalid_grant', id());
    // a tampered signature, then a token that is not a JWT at all
    const tampered = t.subject.slice(0, -4) + (t.subject.endsWith('AAAA') ? 'BBBB' : 'AAAA');
    assertError(request('token', { ...exchangeParams({ ...t, subject: tampered }), ...jwtAuth() }),
                400, 'invalid_grant');
    assertError(request('token', { ...exchangeParams({ ...t, subject: 'not-a-jwt' }), ...jwtAuth() }),
                400, 'invalid_grant');
    assert.equal(auditCount('invalid_grant', id()), before + 2);
  });

  test('invalid_grant: actor not admitted by may_act (the audit row says why)', () => {
    const t = tokens();
    const reason = 'actor "agent-b" is not admitted by the subject token\'s may_act';
    const before = auditReason('invalid_grant', reason);
    assertError(request('token', { ...exchangeParams({ ...t, actor: t.actor_b }), ...jwtAuth() }),
                400, 'invalid_grant');
    assert.equal(auditReason('invalid_grant', reason), before + 1);
  });

  test('invalid_target: unknown audience', () => {
    const before = auditCount('invalid_target', id());
    assertError(request('token', { ...exchangeParams(tokens(), { audience: 'unknown-api' }), ...jwtAuth() }),
                400, 'invalid_target');
    assert.equal(auditCount('invalid_target', id()), before + 1);
  });

  test('invalid_scope: scope beyond the delegation', () => {
    const before = auditCount('invalid_scope', id());
    assertError(request('token', { ...exchangeParams(tokens(), { scope: 'calendar.write' }), ...jwtAuth() }),
                400, 'invalid_scope');
    assert.equal(auditCount('invalid_scope', id()), before + 1);
  });

  test('unauthorized_client: grant not allowed (client_credentials-only client exchanging)', () => {
    const { id: cc, secret } = fx().ccClient;
    const before = auditCount('unauthorized_client', cc);
    assertError(request('token', exchangeParams(tokens(), { client_id: cc, client_secret: secret })),
                400, 'unauthorized_client');
    assert.equal(auditCount('unauthorized_client', cc), before + 1);
  });

  test('unauthorized_client: token-exchange client asking for client_credentials', () => {
    assertError(request('token', { grant_type: 'client_credentials', ...jwtAuth() }), 400, 'unauthorized_client');
  });
});

describe('client authentication failures are 401 invalid_client with WWW-Authenticate', () => {
  test('bad client secret (client_secret_post), audit row committed', () => {
    const { id } = fx().secretClient;
    const before = auditClaimed('invalid_client', id);
    assertError(request('token', exchangeParams(tokens(), { client_id: id, client_secret: 'wrong' })),
                401, 'invalid_client', /authentication failed/);
    assert.equal(auditClaimed('invalid_client', id), before + 1);
  });

  test('bad client secret (client_secret_basic), audit row committed', () => {
    const { id } = fx().secretClient;
    const before = auditReason('invalid_client', 'client authentication failed');
    assertError(request('token', exchangeParams(tokens()), { headers: basic(id, 'wrong') }),
                401, 'invalid_client', /authentication failed/);
    assert.equal(auditReason('invalid_client', 'client authentication failed'), before + 1);
  });

  test('bad client secret (client_secret_basic), audit row names the claimed client', () => {
    const { id } = fx().secretClient;
    const before = auditClaimed('invalid_client', id);
    request('token', exchangeParams(tokens()), { headers: basic(id, 'wrong') });
    assert.equal(auditClaimed('invalid_client', id), before + 1);
  });

  test('unknown client', () => {
    assertError(request('token', exchangeParams(tokens(), { client_id: 'nobody', client_secret: 'x' })),
                401, 'invalid_client');
  });

  test('no client authentication', () => {
    const before = auditCount('invalid_client', null);
    assertError(request('token', exchangeParams(tokens())), 401, 'invalid_client', /required/);
    assert.equal(auditCount('invalid_client', null), before + 1);
  });

  test('two authentication methods at once', () => {
    const { id, secret } = fx().secretClient;
    assertError(request('token', exchangeParams(tokens(), { client_secret: secret }), { headers: basic(id, secret) }),
                401, 'invalid_client', /exactly one/);
    assertError(request('token', exchangeParams(tokens(), { client_id: id, client_secret: secret, ...jwtAuth() })),
                401, 'invalid_client', /exactly one/);
  });

  test('Basic client_id disagreeing with the client_id parameter', () => {
    const { id, secret } = fx().secretClient;
    assertError(request('token', exchangeParams(tokens(), { client_id: 'app:x' }), { headers: basic(id, secret) }),
                401, 'invalid_client');
  });

  test('malformed Basic credentials', () => {
    assertError(request('token', exchangeParams(tokens()), { headers: { authorization: 'Basic !!!' } }),
                401, 'invalid_client');
    assertError(request('token', exchangeParams(tokens()),
                        { headers: { authorization: 'Basic ' + Buffer.from('no-colon').toString('base64') } }),
                401, 'invalid_client');
    // percent-encoding that is not UTF-8, and a truncated escape
    for (const creds of ['web-app%FF:x', 'web-app%2:x']) {
      assertError(request('token', exchangeParams(tokens()),
                          { headers: { authorization: 'Basic ' + Buffer.from(creds).toString('base64') } }),
                  401, 'invalid_client');
    }
  });
});

describe('private_key_jwt', () => {
  test('the same assertion replayed: 401', () => {
    const auth = jwtAuth();
    assertGranted(request('token', exchangeParams(tokens(), auth)), fx().jwtClient.id);
    assertError(request('token', exchangeParams(tokens(), auth)), 401, 'invalid_client', /already used/);
  });

  test('signed with the wrong key: 401', () => {
    const other = newKey(fx().jwtClient.privateJwk.kid);
    const auth = { client_assertion_type: ASSERTION_TYPE,
                   client_assertion: clientAssertion({ key: other.privateKey }) };
    const before = auditReason('invalid_client', 'client_assertion does not verify');
    assertError(request('token', exchangeParams(tokens(), auth)), 401, 'invalid_client', /^client authentication failed$/);
    assert.equal(auditReason('invalid_client', 'client_assertion does not verify'), before + 1);
  });

  test('aud naming this server by its issuer: 200', () => {
    assertGranted(request('token', exchangeParams(tokens(), jwtAuth({ aud: ISSUER }))), fx().jwtClient.id);
  });

  test('wrong aud (another endpoint, another server): 401', () => {
    for (const aud of [`${BASE}/rpc/introspect`, 'https://elsewhere.test/rpc/token']) {
      assertError(request('token', exchangeParams(tokens(), jwtAuth({ aud }))), 401, 'invalid_client');
    }
  });

  test('expired assertion: 401', () => {
    const exp = Math.floor(Date.now() / 1000) - 3600;
    assertError(request('token', exchangeParams(tokens(), jwtAuth({ exp }))), 401, 'invalid_client');
  });

  test('iss or sub not the client_id: 401', () => {
    assertError(request('token', exchangeParams(tokens(), jwtAuth({ extra: { iss: 'web-app' } }))),
                401, 'invalid_client');
    assertError(request('token', exchangeParams(tokens(), { client_id: 'web-app', ...jwtAuth() })),
                401, 'invalid_client');
  });

  // an assertion verifies until exp + tokex.clock_skew, so its jti is kept that long
  test('the same assertion replayed within the clock skew after its exp: 401', () => {
    const auth = jwtAuth({ exp: Math.floor(Date.now() / 1000) - 30 });
    assertGranted(request('token', exchangeParams(tokens(), auth)), fx().jwtClient.id);
    assertError(request('token', exchangeParams(tokens(), auth)), 401, 'invalid_client', /already used/);
  });

  // a huge exp must be answered, not raised (PostgREST would roll back the audit row)
  test('an assertion living more than an hour, or beyond the timestamp range: 401', () => {
    for (const exp of [1e20, 9e15, Math.floor(Date.now() / 1000) + 7200]) {
      // past 2^63 the JSON is refused as malformed, past year 9999 the NumericDate: still 401
      assertError(request('token', exchangeParams(tokens(), jwtAuth({ exp }))), 401, 'invalid_client',
                  /more than an hour|malformed client_assertion|authentication failed/);
    }
  });

  test('a disabled client: 401', () => {
    assertError(request('token', exchangeParams(tokens(), jwtAuth({ clientId: fx().disabledClient.id }))),
                401, 'invalid_client');
  });

  test('unsupported client_assertion_type, or an assertion without its type: 401', () => {
    const a = clientAssertion();
    assertError(request('token', exchangeParams(tokens(), { client_assertion: a, client_assertion_type: 'urn:x' })),
                401, 'invalid_client');
    assertError(request('token', exchangeParams(tokens(), { client_assertion: a })), 401, 'invalid_client');
  });
});

describe('client_credentials', () => {
  test('200 with an access token for agent-a, usable as actor_token', () => {
    const { id, secret, identity } = fx().ccClient;
    const r = request('token', { grant_type: 'client_credentials' }, { headers: basic(id, secret) });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.deepEqual(r.headers, NO_STORE);
    assert.deepEqual(Object.keys(r.body).sort(), ['access_token', 'expires_in', 'token_type']);
    assert.equal(r.body.token_type, 'Bearer');
    assert.ok(r.body.expires_in > 0);
    const claims = sqlJson(`SELECT tokex.jwt_verify(:'t')`, { t: r.body.access_token });
    assert.equal(claims.sub, identity);
    assert.equal(claims.client_id, id);
    assert.equal(claims.iss, ISSUER);

    const t = tokens();
    const x = request('token', exchangeParams({ ...t, actor: r.body.access_token },
                                              { actor_token_type: AT_TYPE }));
    // without client authentication first: 401, then properly authenticated
    assert.equal(x.status, 401);
    assertGranted(request('token', { ...exchangeParams({ ...t, actor: r.body.access_token },
                                                        { actor_token_type: AT_TYPE }), ...jwtAuth() }),
                  fx().jwtClient.id);
  });

  test('scope or audience with client_credentials: 400 invalid_scope', () => {
    const { id, secret } = fx().ccClient;
    assertError(request('token', { grant_type: 'client_credentials', scope: 'calendar.read',
                                   client_id: id, client_secret: secret }), 400, 'invalid_scope');
  });
});

// RFC 8693 §2.1 lets a client repeat audience and resource; tokex mints for
// exactly one, so more than one is invalid_target.  PostgREST keeps only the
// last value of a repeated key (postgrest.test.mjs), so the function cannot
// count them; the reverse proxy in front of it (contrib/nginx) does and says
// so in the Tokex-Repeated-Parameters header.
describe('a repeated audience or resource (RFC 8693 §2.1)', () => {
  const REPEATED = 'tokex-repeated-parameters';

  for (const [key, values] of [['audience', ['mail-api', 'calendar-api']],
                               ['resource', ['https://mail.test/', 'https://calendar.test/']]]) {
    test(`two ${key} values, flagged by the proxy: 400 invalid_target, audited`, () => {
      const reason = `${key} given more than once`;
      const before = auditReason('invalid_target', reason);
      const { audience, scope, ...p } = exchangeParams(tokens());
      const r = request('token', { ...p, [key]: values, ...jwtAuth() }, { headers: { [REPEATED]: key } });
      assertError(r, 400, 'invalid_target');
      assert.equal(auditReason('invalid_target', reason), before + 1);
    });
  }

  test('the header lists several names, any order, any case', () => {
    const { audience, scope, ...p } = exchangeParams(tokens());
    const r = request('token', { ...p, audience: ['mail-api', 'calendar-api'], ...jwtAuth() },
                      { headers: { [REPEATED]: 'scope, Audience' } });
    assertError(r, 400, 'invalid_target');
  });

  test('a header naming another parameter does not refuse', () => {
    const { scope, ...p } = exchangeParams(tokens());
    const r = request('token', { ...p, ...jwtAuth() }, { headers: { [REPEATED]: 'audiences' } });
    assert.equal(r.status, 200, JSON.stringify(r.body));
  });

  // what PostgREST alone does (documented in the README): the last value is
  // the only one the function sees, and the exchange is decided on it
  test('without the proxy: PostgREST passes only the last audience or resource', () => {
    const { audience, scope, ...p } = exchangeParams(tokens());
    for (const extra of [{ audience: ['mail-api', 'calendar-api'] },
                         { resource: ['https://mail.test/', 'https://calendar.test/'] }]) {
      const r = request('token', { ...p, ...extra, ...jwtAuth() });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.equal(decode(r.body.access_token).payload.aud, 'calendar-api');
    }
  });
});

// Over HTTP an error_description says what kind of refusal it is, one text
// per error code, not which identity, delegation, policy or client decided
// it; the audit row keeps the full reason (issue 8, item 11).
describe('HTTP error descriptions say less than the audit row', () => {
  const described = (r, error) => {
    assert.equal(r.body.error, error, JSON.stringify(r.body));
    return r.body.error_description;
  };
  const noGraph = (d) => assert.doesNotMatch(d, /alice|agent-[ab]|web-app|agent-platform|calendar-api|mail-api|policy|delegation/, d);

  test('invalid_grant: one description whatever the cause, the causes audited', () => {
    const t = tokens();
    const tampered = t.subject.slice(0, -4) + (t.subject.endsWith('AAAA') ? 'BBBB' : 'AAAA');
    const reasons = ['identity "agent-b" is offboarded', 'actor "agent-b" is not admitted by the subject token\'s may_act'];
    const before = reasons.map((x) => auditReason('invalid_grant', x));
    const ds = new Set();
    ds.add(described(request('token', { ...exchangeParams({ ...t, actor: t.actor_b }), ...jwtAuth() }), 'invalid_grant'));
    ds.add(described(request('token', { ...exchangeParams({ ...t, subject: tampered }), ...jwtAuth() }), 'invalid_grant'));
    sql(`UPDATE tokex.identity SET status = 'offboarded' WHERE id = 'agent-b'`);
    try {
      const s = sqlJson(`SELECT to_json(tokex.start_session('alice', 'agent-b', NULL, '1 hour')->>'session_token')`);
      ds.add(described(request('token', { ...exchangeParams({ ...t, subject: s, actor: t.actor_b }), ...jwtAuth() }),
                       'invalid_grant'));
    } catch {
      // start_session refuses an offboarded agent: present agent-b's own token instead
      ds.add(described(request('token', { ...exchangeParams({ ...t, subject: t.actor_b, actor: t.actor }), ...jwtAuth() }),
                       'invalid_grant'));
    } finally {
      sql(`UPDATE tokex.identity SET status = 'active' WHERE id = 'agent-b'`);
    }
    assert.equal(ds.size, 1, [...ds].join(' | '));
    noGraph([...ds][0]);
    assert.equal(auditReason('invalid_grant', reasons[1]), before[1] + 1);
    assert.ok(auditReason('invalid_grant', reasons[0]) > before[0], 'the offboarded identity is named in the audit');
  });

  test('invalid_target: one description for an unknown audience and a client limit', () => {
    const ds = new Set();
    ds.add(described(request('token', { ...exchangeParams(tokens(), { audience: 'unknown-api' }), ...jwtAuth() }),
                     'invalid_target'));
    ds.add(described(request('token', { ...exchangeParams(tokens()), ...jwtAuth() },
                             { headers: { 'tokex-repeated-parameters': 'audience' } }), 'invalid_target'));
    // a client limited to other audiences
    sql(`UPDATE tokex.client SET audiences = '{mail-api}' WHERE client_id = 'web-app'`);
    try {
      const { id, secret } = fx().secretClient;
      ds.add(described(request('token', exchangeParams(tokens(), { client_id: id, client_secret: secret })), 'invalid_target'));
    } finally {
      sql(`UPDATE tokex.client SET audiences = NULL WHERE client_id = 'web-app'`);
    }
    assert.equal(ds.size, 1, [...ds].join(' | '));
    noGraph([...ds][0]);
    assert.ok(auditReason('invalid_target', 'client "web-app" may not obtain tokens for "calendar-api"') > 0);
  });

  test('unauthorized_client: one description, the cause audited', () => {
    const { id, secret } = fx().ccClient;
    const d1 = described(request('token', exchangeParams(tokens(), { client_id: id, client_secret: secret })),
                         'unauthorized_client');
    // revoking another client's token
    const t = tokens();
    const tok = sqlJson(`SELECT tokex.exchange(:'s', :'jt', :'a', :'jt', audience => 'calendar-api',
                                               client_id => 'web-app')`, { s: t.subject, a: t.actor, jt: JWT_TYPE });
    const d2 = described(request('revoke', { token: tok.access_token, ...jwtAuth({ aud: `${BASE}/rpc/revoke` }) }),
                         'unauthorized_client');
    assert.equal(d1, d2);
    noGraph(d1);
    assert.ok(auditReason('unauthorized_client', 'the client may not use this grant_type') > 0);
  });

  test('invalid_request keeps saying what is wrong with the request', () => {
    const { subject_token, ...p } = exchangeParams(tokens());
    assert.equal(described(request('token', { ...p, ...jwtAuth() }), 'invalid_request'), 'subject_token is required');
  });

  test('invalid_client: an unknown id and a known one with a wrong key are described alike', () => {
    const other = newKey(fx().jwtClient.privateJwk.kid);
    const known = request('token', exchangeParams(tokens(), {
      client_assertion_type: ASSERTION_TYPE, client_assertion: clientAssertion({ key: other.privateKey }) }));
    const unknown = request('token', exchangeParams(tokens(), {
      client_assertion_type: ASSERTION_TYPE,
      client_assertion: clientAssertion({ clientId: 'no-such-client', key: other.privateKey }) }));
    assert.equal(described(known, 'invalid_client'), described(unknown, 'invalid_client'));
  });
});
