#!/usr/bin/env bash
# Benchmark (not a test: nothing asserts timing).  Measures tokex.jwt_verify and
# tokex.jwt_sign for ES256, EdDSA and RS256 with pgbench (2 clients, prepared
# statements, 1 and 16 calls per statement), measures the raw OpenSSL bound with
# `openssl speed -multi 2`, and prints a Markdown table comparing them.
#
# Uses the PostgreSQL server named by the standard PG* environment (e.g. under
# pg_virtualenv); creates and finally drops its own database ($BENCH_DB,
# default tokex_bench).  Needs tokex installed (make install), pgbench, openssl.
#   BENCH_SECONDS  seconds per pgbench run and per openssl op (default 10;
#                  12 pgbench runs + 6 openssl ops => about 3 minutes)
set -euo pipefail
cd "$(dirname "$0")"

secs=${BENCH_SECONDS:-10}
db=${BENCH_DB:-tokex_bench}
clients=2
issuer=https://tokex.bench
algs=(ES256 EdDSA RS256)
declare -A ossl_arg=([ES256]=ecdsap256 [EdDSA]=ed25519 [RS256]=rsa2048)
declare -A ossl_name=([ES256]='ecdsa (nistp256)' [EdDSA]='EdDSA (Ed25519)' [RS256]='rsa 2048 bits')

q() { psql -X -q -At -v ON_ERROR_STOP=1 -d "$db" "$@"; }

load0=$(cut -d' ' -f1 /proc/loadavg)   # reported with the table: other load skews results

# -- (a) database, keys, pre-signed tokens -----------------------------------
PGOPTIONS="-c client_min_messages=warning" dropdb --if-exists "$db"
createdb "$db"
trap 'PGOPTIONS="-c client_min_messages=warning" dropdb --if-exists "$db" || true' EXIT
q -c 'CREATE EXTENSION tokex'
q -c "ALTER DATABASE \"$db\" SET tokex.issuer = '$issuer'"

declare -A kid tok
for alg in "${algs[@]}"; do
  # the first key is 'active', the others 'next': jwt_sign(claims, kid) signs with either
  kid[$alg]=$(q -c "SELECT tokex.create_key('$alg')")
  tok[$alg]=$(q -v kid="${kid[$alg]}" <<'SQL'
SELECT tokex.jwt_sign(jsonb_build_object('sub', 'bench-user', 'aud', 'https://api.bench',
                      'scope', 'read write', 'exp', 9999999999), :'kid');
SQL
)
  # the token must verify, or pgbench would only measure errors
  [ "$(q -v tok="${tok[$alg]}" <<<"SELECT tokex.jwt_verify(:'tok')->>'sub'")" = bench-user ] ||
    { echo "the pre-signed $alg token does not verify" >&2; exit 1; }
done

# -- (b) pgbench --------------------------------------------------------------
# bench SCRIPT [pgbench options]: prints tps (without initial connection time)
bench() {
  local script=$1; shift
  local out
  if ! out=$(PGDATABASE=$db pgbench -M prepared -n -c $clients -j $clients -T "$secs" "$@" -f "$script" 2>&1); then
    echo "$out" >&2
    echo "pgbench failed: $script" >&2
    return 1
  fi
  if grep -Eq '^number of failed transactions: [1-9]' <<<"$out"; then
    echo "$out" >&2; echo "pgbench: failed transactions in $script" >&2; return 1
  fi
  sed -nE 's/^tps = ([0-9.]+) \(without initial connection time\)$/\1/p' <<<"$out"
}

# -- (c) the OpenSSL bound --------------------------------------------------------
# openssl speed <name> -multi 2: sign/s and verify/s of the bare primitive on 2 cores
ossl_speed() {
  local alg=$1 out line s v
  out=$(openssl speed -seconds "$secs" -multi $clients "${ossl_arg[$alg]}" 2>/dev/null)
  # the summary line ends in "... sign/s verify/s"
  line=$(grep -F "${ossl_name[$alg]}" <<<"$out" | grep -v '^Got:' | tail -1)
  read -r s v < <(awk '{print $(NF-1), $NF}' <<<"$line")
  if ! [[ $s =~ ^[0-9.]+$ && $v =~ ^[0-9.]+$ ]]; then
    echo "cannot parse openssl speed output for $alg:" >&2; echo "$out" >&2; return 1
  fi
  bound[$alg,sign]=$s
  bound[$alg,verify]=$v
}

# (b) and (c) alternate per alg, so that drift in machine speed (shared hosts)
# skews the tokex/OpenSSL ratio as little as possible.
declare -A r1 r16 bound
echo "per alg: openssl speed -seconds $secs -multi $clients, then pgbench -M prepared -n -c $clients -j $clients -T $secs (x4)" >&2
for alg in "${algs[@]}"; do
  ossl_speed "$alg"
  r1[$alg,verify]=$(bench verify.pgbench -D tok="${tok[$alg]}")
  r16[$alg,verify]=$(bench verify16.pgbench -D tok="${tok[$alg]}")
  r1[$alg,sign]=$(bench sign.pgbench -D kid="${kid[$alg]}")
  r16[$alg,sign]=$(bench sign16.pgbench -D kid="${kid[$alg]}")
  echo "  $alg: openssl sign ${bound[$alg,sign]}/s verify ${bound[$alg,verify]}/s;" \
       "tokex tps (1 / 16 per stmt): verify ${r1[$alg,verify]} / ${r16[$alg,verify]}, sign ${r1[$alg,sign]} / ${r16[$alg,sign]}" >&2
done

# -- (d) table ------------------------------------------------------------------
cpu=$(sed -nE 's/^model name\s*: //p' /proc/cpuinfo | head -1)
pgver=$(q -c 'SHOW server_version')
echo
echo "tokex $(q -c "SELECT extversion FROM pg_extension WHERE extname = 'tokex'"), PostgreSQL $pgver, $(openssl version | cut -d' ' -f1-2);" \
     "$(nproc) CPUs (${cpu:-unknown}); ${secs}s per measurement;" \
     "pgbench: $clients clients, prepared, on the same machine; 1-min load average at start: $load0"
echo
echo "| alg | op | tokex calls/s (1 per stmt) | tokex calls/s (16 per stmt) | OpenSSL bound/s ($clients cores) | ratio 1/stmt | ratio 16/stmt |"
echo "|---|---|--:|--:|--:|--:|--:|"
for alg in "${algs[@]}"; do
  for op in verify sign; do
    awk -v alg="$alg" -v op="$op" -v t1="${r1[$alg,$op]}" -v t16="${r16[$alg,$op]}" -v b="${bound[$alg,$op]}" \
      'BEGIN { c16 = t16 * 16;
               printf "| %s | %s | %.0f | %.0f | %.0f | %.0f%% | %.0f%% |\n",
                      alg, op, t1, c16, b, 100 * t1 / b, 100 * c16 / b }'
  done
done
