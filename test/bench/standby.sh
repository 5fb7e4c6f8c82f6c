#!/usr/bin/env bash
# Benchmark (not a test: nothing asserts timing) of introspection on a
# primary and two hot standbys, in one run: the topology of
# test/standby/cluster.sh (loopback streaming replication, tokex preloaded
# everywhere, the heartbeat worker on the primary), 200 active access tokens,
# and pgbench calling tokex.introspect with a random one of them:
#   1. each server alone (BENCH_CLIENTS clients);
#   2. all three at once (BENCH_CLIENTS clients each): the read capacity the
#      standbys add, on this machine's shared cores;
#   3. the standbys with tokex.max_replica_lag = 5s (the heartbeat check's
#      cost: a query only when the heartbeat it saw is older than the bound).
# BENCH_SECONDS (default 10) per pgbench run; a smoke run: BENCH_SECONDS=1.
# Binaries from $PG_CONFIG --bindir (needs tokex installed there); ports
# $SB_PORT (default 5485) .. +2.  Run as root, it runs as postgres.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/../standby/cluster.sh"
sb_reexec "$here/standby.sh" "$@"
secs=${BENCH_SECONDS:-10}
clients=${BENCH_CLIENTS:-2}
ntok=200

sb_start || exit 1
pq 0 -q >/dev/null <<SQL
SET tokex.issuer = 'https://tokex.standby.test';
SELECT tokex.create_key('ES256');
INSERT INTO tokex.identity (id, kind) VALUES ('alice', 'human');
CREATE TABLE public.bench_token (i int PRIMARY KEY, token text);
INSERT INTO public.bench_token
SELECT i, tokex.jwt_sign(jsonb_build_object('sub', 'alice', 'aud', 'calendar', 'scope', 'calendar.read',
                         'exp', extract(epoch FROM now() + interval '1 day')::bigint))
  FROM generate_series(1, $ntok) i;
SQL
sb_sync
work=$(mktemp -d)
cat >"$work/introspect.pgbench" <<SQL
\set i random(1, $ntok)
SELECT tokex.introspect(token) FROM public.bench_token WHERE i = :i;
SQL
run() {  # run <server> [PGOPTIONS]: tps
  PGOPTIONS="${2:-}" "$SB_BIN/pgbench" -n -M prepared -h "$SB_DIR" -p "${SB_PORTS[$1]}" -U postgres \
    -c "$clients" -j "$clients" -T "$secs" -f "$work/introspect.pgbench" "$SB_DB" 2>/dev/null \
    | sed -n "s/^tps = \([0-9]*\).*/\1/p"
}
name=(primary s1 s2)
load0=$(cut -d' ' -f1 /proc/loadavg)
echo "| run | server | clients | introspections/s |"
echo "|---|---|---|---|"
for s in 0 1 2; do echo "| alone | ${name[$s]} | $clients | $(run $s) |"; done
for s in 0 1 2; do run $s >"$work/all$s" & done
wait
total=0
for s in 0 1 2; do
  t=$(cat "$work/all$s"); total=$(awk -v a="$total" -v b="$t" 'BEGIN { print a + b }')
  echo "| together | ${name[$s]} | $clients | $t |"
done
echo "| together | all three | $((3 * clients)) | $total |"
for s in 1 2; do echo "| max_replica_lag 5s | ${name[$s]} | $clients | $(run $s '-c tokex.max_replica_lag=5s') |"; done
echo
echo "$secs s per run, $(nproc) cores, load average before: $load0; $($SB_BIN/postgres --version)"
rm -rf "$work"
sb_stop
