#!/usr/bin/env bash
# What the audit writer costs (issue 8 item 1): the plain exchange benchmark
# (exchange.sh, BENCH_ONLY=exchange) in two throwaway clusters, one after
# the other in the same run — tokex preloaded, so each audit row is
# committed by the audit writer before the token is returned, and tokex not
# preloaded, so the row is inserted by the caller's own autocommit
# statement (what every exchange did before the writer).  Each run reports
# against its own floor (ES256 crypto + a durable one-row insert).
# Run as root (pg_virtualenv); nothing asserts timing.
set -euo pipefail
cd "$(dirname "$0")"
echo "=== with the audit writer (shared_preload_libraries = tokex)"
pg_virtualenv -t -v 15 -o fsync=on -o shared_preload_libraries=tokex env BENCH_ONLY=exchange bash exchange.sh
echo "=== without it (the audit row rides on the caller's single-statement transaction)"
pg_virtualenv -t -v 15 -o fsync=on env BENCH_ONLY=exchange bash exchange.sh
