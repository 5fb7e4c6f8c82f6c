// Minimal PostgreSQL access for the interop tests: each call spawns
//   psql -X -q -At -v ON_ERROR_STOP=1
// against the server and database that the standard PG* environment names
// (run.sh sets PGDATABASE).  Values travel as psql variables (-v name=value)
// and are interpolated with :'name', so psql does the quoting.
import { spawnSync } from 'node:child_process';

export const ISSUER = process.env.TOKEX_ISSUER ?? 'https://tokex.test';

// Run SQL (each session first sets tokex.issuer); returns { ok, stdout, stderr, sqlstate, message, detail }.
export function psql(sql, vars = {}) {
  const args = ['-X', '-q', '-At', '-v', 'ON_ERROR_STOP=1'];
  for (const [k, v] of Object.entries({ tokex_issuer: ISSUER, ...vars })) {
    args.push('-v', `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`);
  }
  const r = spawnSync('psql', args, {
    input: `\\set VERBOSITY verbose\nSET tokex.issuer = :'tokex_issuer';\n${sql}\n`,
    encoding: 'utf8',
    maxBuffer: 16 << 20,
    env: process.env,
  });
  if (r.error) throw r.error;
  // VERBOSITY verbose: "ERROR:  28000: invalid token" / "DETAIL:  ..."
  const m = /^(?:psql:[^\n]*?)?ERROR:\s+([0-9A-Z]{5}):\s+(.*)$/m.exec(r.stderr);
  const d = /^DETAIL:\s+(.*)$/m.exec(r.stderr);
  return {
    ok: r.status === 0,
    status: r.status,
    stdout: r.stdout.replace(/\n$/, ''),
    stderr: r.stderr,
    sqlstate: m?.[1],
    message: m?.[2],
    detail: d?.[1],
  };
}

// Like psql(), but returns stdout and throws unless it succeeds.
export function sql(query, vars = {}) {
  const r = psql(query, vars);
  if (!r.ok) {
    throw new Error(`psql failed (exit ${r.status}): ${r.stderr.trim()}\n-- SQL:\n${query}`);
  }
  return r.stdout;
}

// Run SQL that is expected to fail; returns the error (throws if it succeeded).
export function sqlError(query, vars = {}) {
  const r = psql(query, vars);
  if (r.ok) throw new Error(`expected an error, got: ${r.stdout}\n-- SQL:\n${query}`);
  return r;
}

// SQL returning one jsonb value -> parsed JSON.
export function sqlJson(query, vars = {}) {
  return JSON.parse(sql(query, vars));
}
