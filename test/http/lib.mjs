// Helpers for the HTTP tests.  Every request is its own psql session (a new
// backend, no shared transaction) that runs the SQL PostgREST v12 runs for it
// (postgrest.mjs: the form parsed as PostgREST parses it, the routine found
// by its keys, json_to_record arguments, VARIADIC, the response GUCs read in
// the same statement).  Values travel as psql variables (-v) and are
// interpolated with :'name', so psql does the quoting.  Connection: the
// standard PG* environment.
import { spawnSync } from 'node:child_process';
import { createSign, generateKeyPairSync, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { ROUTINES_SQL, findProc, parseForm, psqlArgs, requestScript, toResponse } from './postgrest.mjs';

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

// PostgREST's schema cache of the exposed schemas (read once; reload after DDL).
const caches = new Map();
export function routines(schemas = 'tokex_api', { reload = false } = {}) {
  if (reload || !caches.has(schemas)) caches.set(schemas, JSON.parse(sql(ROUTINES_SQL, { pgrst_schemas: schemas })));
  return caches.get(schemas);
}

// The request's keys and values in order: an object (an array value repeats
// its key), an array of [key, value] pairs, or a raw form body (string).
export function formPairs(params) {
  if (typeof params === 'string') return parseForm(params);
  if (Array.isArray(params)) return params;
  const pairs = [];
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined) continue;
    for (const x of Array.isArray(v) ? v : [v]) pairs.push([k, x]);
  }
  return pairs;
}

// Replay one PostgREST request to /rpc/<fn>: params as formPairs takes them
// (the form of a POST, the query of a GET), headers lower-case.  Returns
// { status (HTTP), body, headers and rawHeaders (what the function put in
// response.headers), gucStatus (response.status, null when unset) }.  env:
// extra environment for psql (e.g. PGOPTIONS, for server settings).
export function request(fn, params = {}, { method = 'POST', headers = {}, schema = 'tokex_api', env = {} } = {}) {
  const hdrs = {
    host: 'auth.test',
    'user-agent': 'tokex-http-test',
    accept: 'application/json',
    ...(method === 'POST' ? { 'content-type': 'application/x-www-form-urlencoded' } : {}),
    ...headers,
  };
  const pairs = formPairs(params);
  const found = findProc(routines(schema), schema, fn, new Set(pairs.map(([k]) => k)));
  if (found.error) return { ...found.error, headers: null, rawHeaders: '', gucStatus: null };
  const { script, vars } = requestScript(found.routine, { method, path: `/rpc/${fn}`, pairs, headers: hdrs });
  const r = spawnSync('psql', psqlArgs(vars), { input: script, encoding: 'utf8', maxBuffer: 16 << 20,
                                                env: { ...process.env, ...env } });
  if (r.error) throw r.error;
  return toResponse(r);
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

// reason as written, apart from the quote of a client id that did not authenticate
export function auditReason(error, reason) {
  return Number(sql(`SELECT count(*) FROM tokex.audit WHERE error = :'e'
                       AND regexp_replace(reason, ' \\(claimed client_id ".*"\\)$', '') = :'r'`,
                    { e: error, r: reason }));
}

// refusals of a client id that did not authenticate: no client_id, the claim quoted in the reason
export function auditClaimed(error, claimedId) {
  return Number(sql(`SELECT count(*) FROM tokex.audit WHERE error = :'e' AND client_id IS NULL
                       AND reason LIKE '% (claimed client_id "' || :'c' || '")'`,
                    { e: error, c: claimedId }));
}
