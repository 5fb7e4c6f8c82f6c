// Client authentication at every endpoint (issue 8, item 6): a failure takes
// as long for a known client id as for an unknown one, a secret hashed with
// another iteration count is rehashed once it authenticates, and failures at
// /rpc/introspect and /rpc/revoke leave audit rows like /rpc/token's.
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { fx, request, sql } from './lib.mjs';

const stored = (id) => sql(`SELECT secret_hash FROM tokex.client WHERE client_id = :'c'`, { c: id });
const iterations = (id) => Number(stored(id).split('$')[1]);
const introspectAs = (id, secret, opts) =>
  request('introspect', { token: 'garbage', client_id: id, client_secret: secret }, opts);

// a client whose secret was hashed when tokex.secret_hash_iterations was 100000
function registerAt100k(id) {
  return sql(`SET client_min_messages = warning; SET tokex.secret_hash_iterations = 100000;
              SELECT tokex.register_client(:'c')`, { c: id }).split('\n').pop();
}

describe('a secret hashed with another iteration count', () => {
  let secret;
  before(() => { secret = registerAt100k('rehash-app'); });

  test('a failed authentication leaves the hash alone', () => {
    const h = stored('rehash-app');
    assert.equal(introspectAs('rehash-app', 'wrong').status, 401);
    assert.equal(stored('rehash-app'), h);
    assert.equal(iterations('rehash-app'), 100000);
  });

  test('a successful one rehashes it at tokex.secret_hash_iterations, and it still authenticates', () => {
    const h = stored('rehash-app');
    const configured = Number(sql(`SHOW tokex.secret_hash_iterations`));
    assert.notEqual(configured, 100000);
    assert.equal(introspectAs('rehash-app', secret).status, 200);
    assert.notEqual(stored('rehash-app'), h);
    assert.equal(iterations('rehash-app'), configured);
    assert.equal(introspectAs('rehash-app', secret).status, 200);
    assert.equal(introspectAs('rehash-app', 'wrong').status, 401);
  });
});

// Timed end to end through the replay, with the server's count set high
// (2 000 000 iterations, ~0.4 s) so that PBKDF2 dominates psql's start-up.
// Without padding the known client (hashed at 100 000) answers 401 several
// times faster than an unknown id; the bounds allow generous noise.
describe('a failed authentication takes as long for a known client id as for an unknown one', () => {
  before(() => { registerAt100k('timing-app'); });
  const slow = { env: { PGOPTIONS: '-c tokex.secret_hash_iterations=2000000' } };
  const time = (id) => {
    let best = Infinity;
    for (let i = 0; i < 3; i++) {
      const t = performance.now();
      const r = introspectAs(id, 'wrong', slow);
      best = Math.min(best, performance.now() - t);
      assert.equal(r.status, 401);
    }
    return best;
  };

  test('known (hashed with fewer iterations) vs unknown', () => {
    const known = time('timing-app');
    const unknown = time('no-such-client');
    const ratio = known / unknown;
    assert.ok(ratio > 0.6 && ratio < 1.6, `known ${known.toFixed(0)} ms, unknown ${unknown.toFixed(0)} ms`);
    assert.equal(iterations('timing-app'), 100000, 'a failure does not rehash');
  });
});

// /rpc/token audits every refusal; introspection and revocation must too,
// or guessing client secrets there leaves no trace.
describe('refusals at /rpc/introspect and /rpc/revoke leave audit rows', () => {
  // error|reason|client_id|operation
  const rows = (key) => Number(sql(`SELECT count(*) FROM tokex.audit WHERE decision = 'denied'
                                      AND error = split_part(:'r', '|', 1) AND reason = split_part(:'r', '|', 2)
                                      AND client_id IS NOT DISTINCT FROM NULLIF(split_part(:'r', '|', 3), '')
                                      AND operation = split_part(:'r', '|', 4)`,
                                   { r: key }));
  const secretClient = () => fx().secretClient;

  for (const [fn, where] of [['introspect', 'the introspection endpoint'], ['revoke', 'the revocation endpoint']]) {
    test(`${fn}: a wrong secret, naming the claimed client and the endpoint`, () => {
      // a client id that did not authenticate is no client: quoted in the reason, not in client_id
      const key = `invalid_client|client authentication failed at ${where} (claimed client_id "web-app")||${fn}`;
      const before = rows(key);
      assert.equal(request(fn, { token: 'x', client_id: 'web-app', client_secret: 'wrong' }).status, 401);
      assert.equal(rows(key), before + 1);
    });

    test(`${fn}: no client authentication at all`, () => {
      const key = `invalid_client|client authentication is required at ${where}||${fn}`;
      const before = rows(key);
      assert.equal(request(fn, { token: 'x' }).status, 401);
      assert.equal(rows(key), before + 1);
    });

    test(`${fn}: an authenticated client without a token (invalid_request)`, () => {
      const { id, secret } = secretClient();
      const key = `invalid_request|token is required at ${where}|${id}|${fn}`;
      const before = rows(key);
      assert.equal(request(fn, { client_id: id, client_secret: secret }).status, 400);
      assert.equal(rows(key), before + 1);
    });
  }
});
