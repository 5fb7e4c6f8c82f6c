#!/usr/bin/env bash
# Benchmark (not a test: nothing asserts timing) of the stage 2 prototype
# (docs/scale-out.md): exchanges per shard, called on the shard directly and
# through the PL/Proxy router, one shard at a time and all shards at once
# through the router.  On one machine the shards share its cores, so this
# shows the router's cost per exchange, not how shards scale (that needs a
# machine per shard).  Uses the server the PG* environment names (tokex
# preloaded, PL/Proxy installed); creates and drops the prototype's
# databases (test/shard/setup.sh).  BENCH_SECONDS (default 10) per run,
# BENCH_CLIENTS (default 2); a smoke run: BENCH_SECONDS=1.
set -uo pipefail
cd "$(dirname "$0")/../.."
. test/shard/setup.sh
secs=${BENCH_SECONDS:-10}
clients=${BENCH_CLIENTS:-2}
shard_setup || exit 1
work=$(mktemp -d)
trap 'rm -rf "$work"; cleanup' EXIT
q "$router" -c "SELECT count(*) FROM router.add_agent('agent-1')" >/dev/null
# one person per shard: the first name that hashes there
declare -A st at
for i in $(seq 0 $((N - 1))); do
  p=$(q "$router" -c "SELECT 'person-' || g FROM generate_series(1, 1000) g
                       WHERE hashtext('person-' || g) & $((N - 1)) = $i LIMIT 1")
  q "$router" -c "SELECT router.add_person('$p')" -c "SELECT router.delegate('$p', 'agent-1', '{calendar.read}')" >/dev/null
  st[$i]=$(q "$router" -c "SELECT router.session_token('$p', 'agent-1')")
  at[$i]=$(q "$router" -c "SELECT router.actor_token('agent-1', '$p')")
done
tt=urn:ietf:params:oauth:token-type:jwt
# the token type as a variable: pgbench would take its ':params' for one
echo "SELECT tokex.exchange(:st, :tt, :at, :tt, 'calendar', NULL, 'calendar.read');" >"$work/direct.pgbench"
echo "SELECT router.exchange(:st, :at, 'calendar', 'calendar.read');" >"$work/router.pgbench"
run() {  # run <db> <script> <shard>: exchanges/s
  pgbench -n -M prepared -c "$clients" -j "$clients" -T "$secs" -D st="${st[$3]}" -D at="${at[$3]}" -D tt="$tt" \
    -f "$work/$2.pgbench" "$1" 2>/dev/null | sed -n "s/^tps = \([0-9]*\).*/\1/p"
}
load0=$(cut -d' ' -f1 /proc/loadavg)
echo "| shard | direct exchanges/s | through the router/s | router / direct |"
echo "|---|--:|--:|--:|"
for i in $(seq 0 $((N - 1))); do
  d=$(run "${shards[$i]}" direct "$i"); r=$(run "$router" router "$i")
  echo "| $i | $d | $r | $(awk -v a="$r" -v b="$d" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }') |"
done
for i in $(seq 0 $((N - 1))); do run "$router" router "$i" >"$work/all$i" & done
wait
echo "| all $N at once, through the router | | $(cat "$work"/all* | awk '{ s += $1 } END { print s }') | |"
echo
echo "$secs s per run, $clients clients per run, $(nproc) cores, load average before: $load0"
