#!/usr/bin/env bash
# Runs every tokex test suite against the PostgreSQL server that the PG*
# environment names (pg_virtualenv sets it up): JOSE unit tests, the same under
# ASan/UBSan, pg_regress, pgTAP, interop with npm jose, the HTTP face replayed
# as PostgREST calls it, a real OAuth client library through the nginx recipe,
# revocation racing concurrent exchanges, and a cluster without tokex
# preloaded (its own pg_virtualenv).  Exits
# non-zero if any suite fails.
set -uo pipefail
cd "$(dirname "$0")/.."
export PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}

pass=0 fail=0 failed=()
suite() {
  local name=$1; shift
  echo "=== $name"
  if "$@"; then
    pass=$((pass + 1)); echo "--- $name: ok"
  else
    fail=$((fail + 1)); failed+=("$name"); echo "--- $name: FAILED"
  fi
}

regress() {
  if make -s installcheck; then return 0; fi
  [ -f regression.diffs ] && cat regression.diffs
  return 1
}

# Each file runs in a fresh database where tokex is installed and committed:
# the audit writer commits audit rows in its own transaction, so the table
# must exist outside the file's BEGIN ... ROLLBACK.
pgtap() {
  local db=tokex_tap f rc=0
  for f in test/t/*.sql; do
    dropdb --force --if-exists "$db" && createdb "$db" &&
      psql -X -q -v ON_ERROR_STOP=1 -d "$db" \
        -c 'CREATE EXTENSION pgtap; CREATE EXTENSION pgcrypto; CREATE EXTENSION tokex' || return 1
    pg_prove -d "$db" "$f" || rc=1
  done
  dropdb --force --if-exists "$db"
  return $rc
}

suite "JOSE unit tests" make -s -C test/unit check
suite "JOSE unit tests under ASan/UBSan" make -s -C test/unit asan
suite "pg_regress" regress
suite "pgTAP" pgtap
suite "interop with npm jose" bash test/interop/run.sh
suite "HTTP face (PostgREST request replay)" bash test/http/run.sh
suite "OAuth client library through the nginx recipe" bash test/nginx/run.sh
suite "revocation under concurrent load" bash test/concurrency/run.sh
suite "without shared_preload_libraries (own cluster)" bash test/nopreload/run.sh

echo
[ $fail -eq 0 ] || echo "failed suites: ${failed[*]}"
echo "suites: $pass passed, $fail failed"
[ $fail -eq 0 ]
