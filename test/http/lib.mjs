// Helpers for the HTTP tests.  Every request is its own psql session (a new
// backend, no shared transaction), replaying the SQL PostgREST runs for it:
//   BEGIN [READ ONLY];
//   SELECT set_config('role', 'anon', true), set_config('request.headers', ..., true),
//          set_config('request.method', ..., true), set_config('request.path', ..., true);
//   SELECT tokex_api.<fn>(name := value, ...);
//   SELECT current_setting('response.status', true), current_setting('response.headers', true);
//   COMMIT;
// Values travel as psql variables (-v) and are interpolated with :'name', so
// psql does the quoting.  Connection: the standard PG* environment.
import { spawnSync } from 'node:child_process';
import { createSign, generateKeyPairSync, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';

export const ISSUER = 'https://auth.test';
export const BASE = 'https://auth.test/api';
export const TE = 'urn:ietf:params:oauth:grant-type:token-exchange';
export const JWT_TYPE = 'urn:ietf:params:oauth:token-type:jwt';
export const AT_TYPE = 'urn:ietf:params:oauth:token-type:access_token';
export const ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
export const NO_STORE = [{ 'Cache-Control': 'no-store' }, { Pragma: 'no-cache' }];
export const WWW_AUTH = 'Basic realm="tokex", charset="UTF-8"';

// The clients setup.mjs registered (run.sh passes the file).
let cached;
export function fx() {
  cached ??= JSON.parse(readFileSync(process.env.TOKEX_HTTP_FIXTURES, 'utf8'));
  return cached;
}

const SEP = '\x1f';

function run(input, vars) {
  const args = ['-X', '-q', '-At', '-v', 'ON_ERROR_STOP=1', '-F', SEP];
  for (const [k, v] of Object.entries(vars)) args.push('-v', `${k}=${v}`);
  const r = spawnSync('psql', args, { input, encoding: 'utf8', maxBuffer: 16 << 20, env: process.env });
  if (r.error) throw r.error;
  if (r.status !== 0) throw new Error(`psql failed (exit ${r.status}): ${r.stderr.trim()}\n-- SQL:\n${input}`);
  return r.stdout.replace(/\n$/, '');
}

// An administrator's query (superuser connection), returns stdout.
export function sql(query, vars = {}) {
  return run(`${query}\n`, vars);
}
export function sqlJson(query, vars = {}) {
  return JSON.parse(sql(query, vars));
}

// Replay one PostgREST request to /rpc/<fn>.  params: the form (POST) or
// query (GET) keys, sent as named arguments; headers: lowercase request
// headers.  Returns { body, status, headers, rawHeaders }.
export function request(fn, params = {}, { method = 'POST', headers = {} } = {}) {
  const hdrs = {
    host: 'auth.test',
    'user-agent': 'tokex-http-test',
    accept: 'application/json',
    ...(method === 'POST' ? { 'content-type': 'application/x-www-form-urlencoded' } : {}),
    ...headers,
  };
  const vars = { hdrs: JSON.stringify(hdrs), method, path: `/rpc/${fn}` };
  const named = [];
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined) continue;
    if (!/^[a-z_]+$/.test(k)) throw new Error(`bad parameter name ${k}`);
    vars[`p_${k}`] = v;
    named.push(`${k} := :'p_${k}'`);
  }
  const input = [
    method === 'GET' ? 'BEGIN READ ONLY;' : 'BEGIN;',
    `SELECT set_config('role', 'anon', true), set_config('request.headers', :'hdrs', true), ` +
      `set_config('request.method', :'method', true), set_config('request.path', :'path', true);`,
    `SELECT tokex_api.${fn}(${named.join(', ')});`,
    `SELECT current_setting('response.status', true), current_setting('response.headers', true);`,
    'COMMIT;',
    '',
  ].join('\n');
  const lines = run(input, vars).split('\n');
  if (lines.length !== 3) throw new Error(`unexpected psql output:\n${lines.join('\n')}`);
  const [status, rawHeaders] = lines[2].split(SEP);
  return {
    body: JSON.parse(lines[1]),
    status: status === '' ? null : Number(status),
    headers: rawHeaders === '' ? null : JSON.parse(rawHeaders),
    rawHeaders,
  };
}

// Authorization: Basic per RFC 6749 §2.3.1: form-urlencode id and secret first.
export function basic(id, secret) {
  const enc = (s) => encodeURIComponent(s).replace(/%20/g, '+');
  return { authorization: 'Basic ' + Buffer.from(`${enc(id)}:${enc(secret)}`, 'utf8').toString('base64') };
}

const b64u = (x) => Buffer.from(typeof x === 'string' ? x : JSON.stringify(x)).toString('base64url');

export function newKey(kid) {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const jwk = { ...publicKey.export({ format: 'jwk' }), kid, alg: 'ES256', use: 'sig' };
  return { privateKey, jwk, privateJwk: { ...privateKey.export({ format: 'jwk' }), kid, alg: 'ES256' } };
}

// ES256 JWS (ieee-p1363 signature, as JOSE wants); key: KeyObject or JWK.
export function signJwt(claims, key, kid) {
  const input = `${b64u({ alg: 'ES256', typ: 'JWT', kid })}.${b64u(claims)}`;
  const s = createSign('SHA256').update(input).sign({ key, format: key.kty ? 'jwk' : undefined, dsaEncoding: 'ieee-p1363' });
  return `${input}.${s.toString('base64url')}`;
}

// RFC 7523 client assertion for private_key_jwt.
export function clientAssertion({ clientId = fx().jwtClient.id, aud = `${BASE}/rpc/token`, key, kid,
                                  jti = randomUUID(), exp, extra = {} } = {}) {
  const now = Math.floor(Date.now() / 1000);
  return signJwt({ iss: clientId, sub: clientId, aud, jti, iat: now, exp: exp ?? now + 120, ...extra },
                 key ?? fx().jwtClient.privateJwk, kid ?? fx().jwtClient.privateJwk.kid);
}

export function jwtAuth(opts = {}) {
  return { client_assertion_type: ASSERTION_TYPE, client_assertion: clientAssertion(opts) };
}

export function decode(jwt) {
  const [h, p] = jwt.split('.');
  return { header: JSON.parse(Buffer.from(h, 'base64url')), payload: JSON.parse(Buffer.from(p, 'base64url')) };
}

// Fresh subject (alice's session for agent-a) and actor (agent-a) tokens.
export function tokens() {
  const r = sqlJson(`SELECT json_build_object(
      'subject', tokex.start_session('alice', 'agent-a', '{calendar.read}', '1 hour')->>'session_token',
      'actor', tokex.identity_token('agent-a'),
      'actor_b', tokex.identity_token('agent-b'))`);
  return r;
}

export function auditCount(error, clientId) {
  return Number(sql(`SELECT count(*) FROM tokex.audit WHERE error IS NOT DISTINCT FROM NULLIF(:'e', '')
                       AND client_id IS NOT DISTINCT FROM NULLIF(:'c', '')`,
                    { e: error ?? '', c: clientId ?? '' }));
}

export function auditReason(error, reason) {
  return Number(sql(`SELECT count(*) FROM tokex.audit WHERE error = :'e' AND reason = :'r'`, { e: error, r: reason }));
}
