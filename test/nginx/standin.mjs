// A stand-in for PostgREST v12 (which cannot be installed here), for the
// nginx end-to-end suite: an HTTP server on 127.0.0.1 that answers
// GET|POST /rpc/<function> of schema tokex_api by running, for each request
// and in its own psql session, exactly the SQL test/http/postgrest.mjs says
// PostgREST runs (the same replay the HTTP suite uses), and answers with the
// function's JSON, response.status and response.headers.
//
//   node standin.mjs PORT_FILE LIFETIME_SECONDS
// listens on a free port, writes it to PORT_FILE, and exits by itself after
// LIFETIME_SECONDS.  Connection: the standard PG* environment.
import http from 'node:http';
import { spawn, spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { ROUTINES_SQL, findProc, parseForm, psqlArgs, requestScript, toResponse } from '../http/postgrest.mjs';

const [portFile, lifetime = '300'] = process.argv.slice(2);
const SCHEMA = 'tokex_api';
const MAX_BODY = 1 << 20;

// the schema cache, read once at start as PostgREST does
const sc = spawnSync('psql', psqlArgs({ pgrst_schemas: SCHEMA }), { input: `${ROUTINES_SQL};\n`, encoding: 'utf8' });
if (sc.status !== 0) throw new Error(`schema cache: ${sc.stderr}`);
const routines = JSON.parse(sc.stdout);

function pgrstError(res, status, code, message) {
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8' });
  res.end(JSON.stringify({ code, details: null, hint: null, message }));
}

function runPsql(script, vars) {
  return new Promise((resolve, reject) => {
    const p = spawn('psql', psqlArgs(vars), { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.setEncoding('utf8').on('data', (d) => { stdout += d; });
    p.stderr.setEncoding('utf8').on('data', (d) => { stderr += d; });
    p.on('error', reject);
    p.on('close', (status) => resolve({ status, stdout, stderr }));
    p.stdin.end(script);
  });
}

async function handle(req, res, body) {
  const url = new URL(req.url, 'http://standin');
  const m = /^\/rpc\/([A-Za-z_][A-Za-z0-9_]*)$/.exec(url.pathname);
  if (!m) return pgrstError(res, 404, 'PGRST125', `Invalid path specified in request URL`);
  const method = req.method === 'HEAD' ? 'GET' : req.method;
  if (method !== 'GET' && method !== 'POST') return pgrstError(res, 405, 'PGRST117', `Unsupported HTTP method: ${req.method}`);
  let pairs;
  if (method === 'GET') {
    pairs = parseForm(url.search);
  } else {
    // on a POST PostgREST reads the query string as filters on the result;
    // nothing in tokex's face sends one, so a stray one is an error here
    if (url.search) return pgrstError(res, 400, 'PGRST100', `failed to parse filter (${url.search.slice(1)})`);
    const ct = (req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
    if (body.length > 0 && ct !== 'application/x-www-form-urlencoded' && ct !== 'application/json') {
      return pgrstError(res, 415, 'PGRST107', `The stand-in replays form and JSON bodies only, not ${ct}`);
    }
    try {
      // a JSON object's members are the arguments, as PostgREST takes them
      pairs = ct === 'application/json' ? Object.entries(JSON.parse(body.toString('utf8'))) : parseForm(body);
    } catch {
      return pgrstError(res, 400, 'PGRST102', 'Invalid form body');
    }
  }
  const found = findProc(routines, SCHEMA, m[1], new Set(pairs.map(([k]) => k)));
  if (found.error) {
    res.writeHead(found.error.status, { 'content-type': 'application/json; charset=utf-8' });
    return res.end(JSON.stringify(found.error.body));
  }
  const { script, vars } = requestScript(found.routine, { method, path: url.pathname, pairs, headers: req.headers });
  const r = toResponse(await runPsql(script, vars));
  const headers = { 'content-type': 'application/json; charset=utf-8' };
  for (const h of r.headers ?? []) for (const [k, v] of Object.entries(h)) headers[k] = v;
  res.writeHead(r.status, headers);
  res.end(req.method === 'HEAD' ? undefined : JSON.stringify(r.body));
}

const server = http.createServer((req, res) => {
  const chunks = [];
  let size = 0;
  req.on('data', (c) => {
    size += c.length;
    if (size > MAX_BODY) { pgrstError(res, 413, 'PGRST000', 'body too large'); req.destroy(); } else chunks.push(c);
  });
  req.on('end', () => {
    handle(req, res, Buffer.concat(chunks)).catch((e) => {
      process.stderr.write(`stand-in: ${e.stack}\n`);
      if (!res.headersSent) pgrstError(res, 500, 'PGRST000', String(e.message));
      else res.end();
    });
  });
});

server.listen(0, '127.0.0.1', () => writeFileSync(portFile, String(server.address().port)));
setTimeout(() => { server.close(); process.exit(0); }, Number(lifetime) * 1000).unref();
