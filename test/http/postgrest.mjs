// What PostgREST v12 does with one /rpc request, re-implemented so the tests
// can replay it without the binary (it is not installable here).  Each step
// follows the v12.2 source; the names in brackets are the Haskell functions:
//
//  - the form body (or query string) is split by http-types' parseSimpleQuery:
//    a leading '?' dropped, pairs separated by '&' or ';', key and value
//    percent-decoded with '+' as space, a key without '=' gets "" [getPayload]
//  - the routine is found by the set of keys: every key must be a parameter,
//    every parameter without a DEFAULT must be a key; no match is 404
//    PGRST202 (so an unknown form key is a 404), two are 300 PGRST203 [findProc]
//  - the arguments become one JSON object: a repeated key keeps its LAST
//    value, unless the parameter is VARIADIC, whose values are all kept, in
//    order, as a JSON array [jsonRpcParams]
//  - the call passes only the keys sent, by name, in the routine's parameter
//    order, reading them from json_to_record typed like the parameters; a
//    VARIADIC parameter is passed as `VARIADIC "p" := pgrst_body."p"`
//    [callPlanToQuery, fromJsonBodyF]
//  - one transaction: BEGIN (READ WRITE for POST to a VOLATILE function, else
//    READ ONLY); one SELECT of set_config(..., true) for search_path, role,
//    request.jwt.claims, request.method, request.path, request.headers
//    (lower-case names, no cookie), request.cookies [setPgLocals]; the
//    statement, which also reads response.headers and response.status
//    [prepareCall]; COMMIT.  A SQL error rolls back and maps to an HTTP status
//    [pgErrorStatus].
//
// PostgreSQL's rule that shapes item 12 of issue 8: a named-notation call
// with VARIADIC resolves only when the VARIADIC argument lands on its own
// position, i.e. when every parameter before it is passed too; without
// VARIADIC, named notation never matches a variadic function.  So PostgREST
// can call a function with a VARIADIC parameter only when a request sends
// every parameter (or none); see test/http/postgrest.test.mjs.

export const SEP = '\x1f';

// The part of PostgREST's schema-cache query [allFunctions] that a call needs.
export const ROUTINES_SQL = `
SELECT coalesce(json_agg(json_build_object(
         'schema', n.nspname, 'name', p.proname, 'volatility', p.provolatile::text,
         'hasVariadic', p.provariadic <> 0,
         'scalar', NOT p.proretset AND t.typtype <> 'c'
                   AND NOT coalesce(p.proargmodes::text[] && '{t,b,o}', false),
         'params', coalesce(a.args, '[]')) ORDER BY p.oid), '[]')
  FROM pg_proc p
  JOIN pg_namespace n ON n.oid = p.pronamespace
  JOIN pg_type t ON t.oid = p.prorettype
  LEFT JOIN LATERAL (
    SELECT json_agg(json_build_object(
             'name', coalesce(name, ''),
             'type', CASE type WHEN 'bit'::regtype THEN 'bit varying'
                               WHEN 'bit[]'::regtype THEN 'bit varying[]'
                               WHEN 'character'::regtype THEN 'character varying'
                               WHEN 'character[]'::regtype THEN 'character varying[]'
                               ELSE type::regtype::text END,
             'req', idx <= (p.pronargs - p.pronargdefaults),
             'variadic', coalesce(mode = 'v', false)) ORDER BY idx) AS args
      FROM unnest(p.proargnames, p.proargtypes, p.proargmodes) WITH ORDINALITY AS _(name, type, mode, idx)
     WHERE type IS NOT NULL) a ON true
 WHERE n.nspname = ANY (string_to_array(:'pgrst_schemas', ',')) AND p.prokind = 'f'`;

// http-types urlDecode: %XY with hex digits decodes, anything else stays.
function urlDecode(s) {
  const bytes = [];
  const b = Buffer.from(s, 'latin1');
  for (let i = 0; i < b.length; i++) {
    const c = b[i];
    const hex = (x) => (x >= 48 && x <= 57 ? x - 48 : x >= 65 && x <= 70 ? x - 55 : x >= 97 && x <= 102 ? x - 87 : -1);
    if (c === 43) bytes.push(32);
    else if (c === 37 && i + 2 < b.length && hex(b[i + 1]) >= 0 && hex(b[i + 2]) >= 0) {
      bytes.push(hex(b[i + 1]) * 16 + hex(b[i + 2]));
      i += 2;
    } else bytes.push(c);
  }
  // T.decodeUtf8 throws on invalid UTF-8; PostgREST answers such a request with an error
  return new TextDecoder('utf-8', { fatal: true }).decode(Buffer.from(bytes));
}

// parseSimpleQuery: [[key, value], ...] in order, repeats kept.
export function parseForm(body) {
  let q = Buffer.isBuffer(body) ? body.toString('latin1') : Buffer.from(body, 'utf8').toString('latin1');
  if (q.startsWith('?')) q = q.slice(1);
  const pairs = [];
  while (q.length > 0) {
    const m = /[&;]/.exec(q);
    const seg = m ? q.slice(0, m.index) : q;
    q = m ? q.slice(m.index + 1) : '';
    const eq = seg.indexOf('=');
    pairs.push(eq < 0 ? [urlDecode(seg), ''] : [urlDecode(seg.slice(0, eq)), urlDecode(seg.slice(eq + 1))]);
  }
  return pairs;
}

// findProc: the routine named `name` whose parameters fit the keys.
export function findProc(routines, schema, name, keys) {
  const candidates = routines.filter((r) => r.schema === schema && r.name === name);
  const matches = candidates.filter((r) => {
    if (r.params.length === 0) return keys.size === 0;
    const req = r.params.filter((p) => p.req).map((p) => p.name);
    const opt = new Set(r.params.filter((p) => !p.req).map((p) => p.name));
    const rest = [...keys].filter((k) => !opt.has(k));
    return rest.length === req.length && req.every((k) => rest.includes(k));
  });
  if (matches.length === 1) return { routine: matches[0] };
  const fn = `${schema}.${name}`;
  const ks = [...keys];
  if (matches.length === 0) {
    return {
      error: {
        status: 404,
        body: {
          code: 'PGRST202',
          details: `Searched for the function ${fn}${ks.length ? ` with parameter${ks.length > 1 ? 's' : ''} ${ks.join(', ')}` : ' without parameters'}, but no matches were found in the schema cache.`,
          hint: null,
          message: `Could not find the function ${fn}${ks.length ? `(${ks.join(', ')})` : ' without parameters'} in the schema cache`,
        },
      },
    };
  }
  return {
    error: {
      status: 300,
      body: { code: 'PGRST203', details: null, hint: 'Try renaming the parameters or the function itself in the database so function overloading can be resolved',
              message: `Could not choose the best candidate function between: ${matches.map((r) => `${fn}(${r.params.map((p) => `${p.name} => ${p.type}`).join(', ')})`).join(', ')}` },
    },
  };
}

// jsonRpcParams: the JSON arguments for the call.
export function rpcArgs(routine, pairs) {
  const variadic = new Set(routine.params.filter((p) => p.variadic).map((p) => p.name));
  const args = {};
  for (const [k, v] of pairs) {
    if (routine.hasVariadic && variadic.has(k)) (args[k] ??= []).push(v);
    else args[k] = v;            // the last value of a repeated key wins
  }
  return JSON.stringify(args);
}

const ident = (s) => `"${s.replace(/"/g, '""')}"`;

// callPlanToQuery + prepareCall for a function returning a scalar; the JSON
// arguments are the psql variable pgrst_args (PostgREST binds them as $1).
export function callStatement(routine, keys) {
  if (!routine.scalar) throw new Error(`${routine.name}: only scalar-returning functions are replayed`);
  const fn = `${ident(routine.schema)}.${ident(routine.name)}`;
  let from;
  const onePos = routine.params.length === 1 && routine.params[0].name === '';
  const prms = routine.params.filter((p) => keys.has(p.name));
  if (onePos) throw new Error('single unnamed parameter functions are not replayed');
  if (prms.length === 0) {
    from = `FROM (SELECT ${fn}() pgrst_scalar) pgrst_call`;
  } else {
    const cols = prms.map((p) => ident(p.name)).join(', ');
    const typed = prms.map((p) => `${ident(p.name)} ${p.type}`).join(', ');
    const named = prms.map((p) => `${p.variadic ? 'VARIADIC ' : ''}${ident(p.name)} := pgrst_body.${ident(p.name)}`).join(', ');
    from = `FROM (SELECT :'pgrst_args'::json AS json_data) pgrst_payload, ` +
           `LATERAL (SELECT ${cols} FROM json_to_record(pgrst_payload.json_data) AS _(${typed}) LIMIT 1) pgrst_body , ` +
           `LATERAL (SELECT ${fn}(${named}) pgrst_scalar) pgrst_call`;
  }
  return `WITH pgrst_source AS (SELECT pgrst_call.pgrst_scalar ${from}) ` +
         `SELECT null::bigint AS total_result_set, 1 AS page_total, ` +
         `coalesce((json_agg(_postgrest_t.pgrst_scalar)->0)::text, 'null') AS body, ` +
         `nullif(current_setting('response.headers', true), '') AS response_headers, ` +
         `nullif(current_setting('response.status', true), '') AS response_status, ` +
         `'' AS response_inserted FROM (SELECT "pgrst_source".* FROM "pgrst_source") _postgrest_t;`;
}

// The whole psql script for one request, and its variables.
//   method: 'GET' | 'POST'; pairs: [[k, v], ...]; headers: { name: value }
export function requestScript(routine, { method, path, pairs, headers, role = 'anon', schema = routine.schema }) {
  const keys = new Set(pairs.map(([k]) => k));
  const hdrs = {};
  for (const [k, v] of Object.entries(headers)) if (k.toLowerCase() !== 'cookie') hdrs[k.toLowerCase()] = v;
  const readOnly = method === 'GET' || routine.volatility !== 'v';
  const vars = {
    pgrst_args: rpcArgs(routine, pairs),
    pgrst_search_path: `${ident(schema)}, "public"`,
    pgrst_role: role,
    pgrst_claims: JSON.stringify({ role }),
    pgrst_method: method,
    pgrst_path: path,
    pgrst_headers: JSON.stringify(hdrs),
  };
  const script = [
    '\\set VERBOSITY verbose',
    `BEGIN ISOLATION LEVEL READ COMMITTED ${readOnly ? 'READ ONLY' : 'READ WRITE'};`,
    `\\o /dev/null`,
    `select set_config('search_path', :'pgrst_search_path', true), set_config('role', :'pgrst_role', true), ` +
      `set_config('request.jwt.claims', :'pgrst_claims', true), set_config('request.method', :'pgrst_method', true), ` +
      `set_config('request.path', :'pgrst_path', true), set_config('request.headers', :'pgrst_headers', true), ` +
      `set_config('request.cookies', '{}', true);`,
    `\\o`,
    callStatement(routine, keys),
    'COMMIT;',
    '',
  ].join('\n');
  return { script, vars };
}

export function psqlArgs(vars) {
  const args = ['-X', '-q', '-At', '-v', 'ON_ERROR_STOP=1', '-F', SEP];
  for (const [k, v] of Object.entries(vars)) args.push('-v', `${k}=${v}`);
  return args;
}

// [pgErrorStatus] for the SQLSTATEs a replay can meet.
export function errorStatus(code) {
  if (/^08/.test(code)) return 503;
  if (/^0[LP]/.test(code) || /^28/.test(code)) return 403;
  const exact = { 23503: 409, 23505: 409, 25006: 405, 42883: 404, '42P01': 404, '42P17': 500, 42501: 401, P0001: 400, '57P01': 503 };
  if (code in exact) return exact[code];
  if (/^(25|2D|38|39|3B|40|5[4-8]|F0|HV|XX|P0)/.test(code)) return 500;
  if (/^53/.test(code)) return 503;
  return 400;
}

// psql's output for a script -> the HTTP response PostgREST would send.
export function toResponse({ status, stdout, stderr }) {
  if (status !== 0) {
    const m = /ERROR:\s+([0-9A-Z]{5}):\s+(.*)/.exec(stderr);
    if (!m) throw new Error(`psql failed: ${stderr}`);
    const d = /DETAIL:\s+(.*)/.exec(stderr);
    const h = /HINT:\s+(.*)/.exec(stderr);
    return { status: errorStatus(m[1]), headers: null, rawHeaders: '', gucStatus: null, body: { code: m[1], details: d ? d[1] : null, hint: h ? h[1] : null, message: m[2] } };
  }
  const row = stdout.replace(/\n$/, '').split('\n').pop().split(SEP);
  const [, , body, rawHeaders, st] = row;
  return {
    status: st === '' ? 200 : Number(st),
    headers: rawHeaders === '' ? null : JSON.parse(rawHeaders),
    body: JSON.parse(body),
    // what the tests of the GUCs compare: null when the function set none
    gucStatus: st === '' ? null : Number(st),
    rawHeaders,
  };
}
