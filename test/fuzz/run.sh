#!/usr/bin/env bash
# A bounded libFuzzer campaign over every JOSE harness (test/fuzz/fuzz_*.c),
# TAP output: for each harness, its committed corpus (seeds and regression
# inputs) replays clean, then it fuzzes for FUZZ_SECONDS (default 20) or
# FUZZ_RUNS executions with ASan, UBSan and leak detection, and must end
# with no crash, leak, timeout or out-of-memory.  New inputs go to a
# temporary directory; a failing input is kept under test/fuzz/artifacts/.
#
#   bash test/fuzz/run.sh                         # CI: 20 s per harness
#   FUZZ_SECONDS=60 bash test/fuzz/run.sh jws jwt # some harnesses, longer
#   FUZZ_RUNS=10000000 FUZZ_SECONDS=0 bash test/fuzz/run.sh   # the long run
#
# FUZZ_JOBS=N runs N harnesses at once (default 1: the CI machine has 2
# cores and the rest of the suite is waiting).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/../tap.sh"
secs=${FUZZ_SECONDS:-20}
runs=${FUZZ_RUNS:-0}
vectors=${VECTORS_DIR:-$(cd "$here/../../.." && pwd)/shared/vectors}

if ! make -s -C "$here" >/dev/null; then
  echo "Bail out! the harnesses do not build (clang-16, libfuzzer-16-dev, libclang-rt-16-dev)"
  exit 1
fi
harnesses=${*:-$(make -s -C "$here" list)}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$here/artifacts"

# the longest input worth trying: past JOSE_MAX_TOKEN_LEN for tokens, past
# the JWKS key limit for key sets
max_len() {
  case $1 in
    jws) echo 70000 ;;
    jwks|jwk) echo 16384 ;;
    opaque) echo 256 ;;
    *) echo 4096 ;;
  esac
}

export ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1:${ASAN_OPTIONS:-}
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

for h in $harnesses; do
  h=${h#fuzz_}
  bin=$here/build/fuzz_$h
  corpus=$here/corpus/$h
  log=$work/$h.log

  # 1. the committed inputs, each run once (regression seeds included)
  "$bin" -runs=1 $(ls -d "$corpus"/* 2>/dev/null) >"$log" 2>&1
  rc=$?
  [ $rc -eq 0 ] || tail -30 "$log" | sed 's/^/# /'
  ok $rc "fuzz_$h: its $(ls "$corpus" | wc -l) corpus inputs run clean"

  # 2. the campaign
  extra=()
  [ "$h" = jwk ] && [ -d "$vectors/jose-cookbook/jwk" ] && extra+=("$vectors/jose-cookbook/jwk")
  mkdir -p "$work/new-$h"
  limit=(-max_total_time="$secs")
  [ "$runs" -gt 0 ] && limit=(-runs="$runs")
  [ "$secs" -gt 0 ] && [ "$runs" -gt 0 ] && limit+=(-max_total_time="$secs")
  start=$(date +%s)
  "$bin" "${limit[@]}" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=2048 \
    -max_len="$(max_len "$h")" -print_final_stats=1 \
    -artifact_prefix="$here/artifacts/$h-" \
    "$work/new-$h" "$corpus" "${extra[@]}" >"$log" 2>&1
  rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
  if [ $rc -ne 0 ]; then
    grep -A25 -m1 'ERROR\|==ERROR\|runtime error\|fuzz assertion\|deadly signal\|timeout' "$log" | sed 's/^/# /'
  fi
  ok $rc "fuzz_$h: ${execs:-?} executions in $(( $(date +%s) - start )) s, ${cov:-cov: ?}, no crash, leak or timeout"
done
finish
