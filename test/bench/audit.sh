#!/usr/bin/env bash
# Benchmark (nothing asserts timing) of what the audit proof costs an
# exchange: pgbench runs tokex.exchange (distinct ES256 subject and actor
# tokens, durable settings) three times, the same way:
#   - without the proof: the row trigger disabled (no seq, no row_hash) and
#     the background sealer off, what 0.2 did;
#   - with the per-row hash (the C trigger), the sealer off;
#   - with the hash and the background sealer sealing every
#     BENCH_SEAL_INTERVAL seconds (default 1);
# and reports each one's throughput, the blocks sealed, and the time
# tokex.audit_verify() takes over the rows written.  Changes
# tokex.audit_seal_interval with ALTER SYSTEM (reset at the end).
#
# Uses the server named by the PG* environment (tokex preloaded); creates
# and drops its own database.  BENCH_SECONDS (default 15) per run,
# BENCH_CLIENTS (default 8).  Smoke test: BENCH_SECONDS=2 bash test/bench/audit.sh
set -euo pipefail
cd "$(dirname "$0")"

secs=${BENCH_SECONDS:-15}
db=${BENCH_DB:-tokex_bench_audit}
clients=${BENCH_CLIENTS:-8}
interval=${BENCH_SEAL_INTERVAL:-1}
pairs=500
work=$(mktemp -d)
q() { psql -X -q -At -v ON_ERROR_STOP=1 -d "$db" "$@"; }
sealer() {  # sealer <seconds>: the background sealer's interval, cluster-wide
  psql -X -q -At -d postgres -c "ALTER SYSTEM SET tokex.audit_seal_interval = $1" -c "SELECT pg_reload_conf()" >/dev/null
  sleep 0.5
}

dropdb --if-exists "$db"
createdb "$db"
trap 'psql -X -q -d postgres -c "ALTER SYSTEM RESET tokex.audit_seal_interval" -c "SELECT pg_reload_conf()" >/dev/null 2>&1;
      dropdb --force --if-exists "$db" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

q <<SQL
SET client_min_messages = warning;
CREATE EXTENSION tokex;
ALTER DATABASE "$db" SET tokex.issuer = 'https://tokex.bench';
SET tokex.issuer = 'https://tokex.bench';
SELECT tokex.create_key('ES256');
INSERT INTO tokex.identity (id, kind) SELECT 'person-' || g, 'human' FROM generate_series(1, $pairs) g;
INSERT INTO tokex.identity (id, kind) SELECT 'agent-' || g, 'agent' FROM generate_series(1, $pairs) g;
INSERT INTO tokex.resource (audience, scopes) VALUES ('calendar', '{calendar.read,calendar.write}');
INSERT INTO tokex.delegation (principal, delegate, scopes)
  SELECT 'person-' || g, 'agent-' || g, '{calendar.read,calendar.write}' FROM generate_series(1, $pairs) g;
INSERT INTO tokex.policy (effect, subject_kind, actor_kind) VALUES ('allow', 'human', 'agent');
CREATE TABLE bench_tokens (id int PRIMARY KEY, st text, at text);
INSERT INTO bench_tokens (id, st, at)
  SELECT g, tokex.jwt_sign(jsonb_build_object('sub', 'person-' || g, 'exp', 9999999999)),
            tokex.jwt_sign(jsonb_build_object('sub', 'agent-' || g, 'exp', 9999999999))
    FROM generate_series(1, $pairs) g;
SQL
cat > "$work/exchange.pgbench" <<'P'
\set i random(1, :pairs)
SELECT tokex.exchange(st, :jwt, at, :jwt, audience => 'calendar', scope => 'calendar.read')->>'error'
  FROM bench_tokens WHERE id = :i;
P
run() {  # run <label>
  local tps
  tps=$(pgbench -n -M prepared -c "$clients" -j 2 -T "$secs" -d "$db" -f "$work/exchange.pgbench" \
          -D pairs=$pairs -D jwt=urn:ietf:params:oauth:token-type:jwt 2>&1 |
        sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p')
  printf '%-44s %10s exchanges/s\n' "$1" "${tps:-?}"
}

echo "# $clients clients, $secs s per run, $(nproc) cores"
sealer 0
q -c "ALTER TABLE tokex.audit_event DISABLE TRIGGER audit_event_row,
        ALTER COLUMN seq DROP NOT NULL, ALTER COLUMN row_hash DROP NOT NULL"
run "without the proof (no row hash, no sealer)"
q -c "ALTER TABLE tokex.audit_event ENABLE ALWAYS TRIGGER audit_event_row"
run "row hash, background sealer off"
sealer "$interval"
before=$(q -c "SELECT count(*) FROM tokex.audit_block")
run "row hash + background sealer every ${interval}s"
sleep $((interval + 2))
echo "# blocks sealed during the last run: $(( $(q -c "SELECT count(*) FROM tokex.audit_block") - before ))"
# the rows written without the proof have no hash: verify what was sealed
rows=$(q -c "SELECT COALESCE(sum(row_count), 0) FROM tokex.audit_block")
start=$(date +%s.%N)
problems=$(q -c "SELECT count(*) FROM tokex.audit_verify() WHERE block IS NOT NULL")
echo "# audit_verify over $rows sealed rows: $(echo "$(date +%s.%N) - $start" | bc) s, $problems problems"
