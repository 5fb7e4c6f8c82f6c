#!/usr/bin/env bash
# What the audit writer costs (issue 8 item 1), in one run: the same audit
# row made durable two ways, by the same clients against the same cluster
# (tokex preloaded, fsync and synchronous_commit on):
#   - in-transaction: the caller INSERTs the row in its own autocommit
#     statement, as every exchange did before the writer;
#   - writer: tokex._audit_write hands it to the audit writer and waits for
#     the writer's commit, as every exchange does now (rows of concurrent
#     callers share the writer's commits);
# and, for scale, the exchange itself.  Nothing asserts timing.
# Run as root: pg_virtualenv makes the throwaway cluster.
set -euo pipefail
if [ -z "${TOKEX_BENCH_INNER:-}" ]; then
  exec env TOKEX_BENCH_INNER=1 pg_virtualenv -t -v 15 -o fsync=on -o shared_preload_libraries=tokex \
    bash "$(realpath "$0")"
fi

secs=${BENCH_SECONDS:-15}
clients=${BENCH_CLIENTS:-8}
db=tokex_bench_w
work=$(mktemp -d)
trap 'dropdb --if-exists "$db" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
dropdb --if-exists "$db" 2>/dev/null
createdb "$db"
psql -X -q -d "$db" -c 'CREATE EXTENSION tokex'

cat > "$work/in_transaction.pgbench" <<'P'
INSERT INTO tokex.audit_event (exchange_id, operation, decision, error, reason, db_user)
VALUES (gen_random_uuid(), 'exchange', 'denied', 'invalid_request', 'bench: in the caller''s transaction', session_user);
P
cat > "$work/writer.pgbench" <<'P'
SELECT tokex._audit_write(jsonb_build_object('exchange_id', gen_random_uuid(), 'operation', 'exchange',
  'decision', 'denied', 'error', 'invalid_request', 'reason', 'bench: through the audit writer'), false);
P

run() {  # run SCRIPT -> "tps p50 p99"
  local out
  rm -f "$work"/pgbench_log.*
  out=$(cd "$work" && PGDATABASE=$db pgbench -n -M prepared -c "$clients" -j 2 -T "$secs" -l -f "$1" 2>&1) ||
    { echo "$out" >&2; return 1; }
  local tps=$(sed -nE 's/^tps = ([0-9.]+) \(without initial connection time\)$/\1/p' <<<"$out")
  local pct=$(cat "$work"/pgbench_log.* | awk '{print $3}' | sort -n |
              awk '{a[NR]=$1} END {printf "%.2f %.2f", a[int(NR*0.50)]/1000, a[int(NR*0.99)]/1000}')
  echo "$tps $pct"
}

echo "one durable audit row per call, $clients clients, ${secs}s each, fsync=on synchronous_commit=on"
read -r a_tps a_p50 a_p99 < <(run "$work/in_transaction.pgbench")
read -r w_tps w_p50 w_p99 < <(run "$work/writer.pgbench")
rows=$(psql -X -At -d "$db" -c "SELECT count(*) FROM tokex.audit_event WHERE reason LIKE 'bench: through%'")
cat <<TABLE

| how the row is made durable | rows/s | p50 ms | p99 ms |
|---|---:|---:|---:|
| INSERT in the caller's transaction (before) | $a_tps | $a_p50 | $a_p99 |
| handed to the audit writer, commit awaited (now) | $w_tps | $w_p50 | $w_p99 |

writer / in-transaction: $(awk -v a="$w_tps" -v b="$a_tps" 'BEGIN {printf "%.2f", a / b}') ($rows rows written by the writer)
TABLE
