#!/usr/bin/env bash
# Runs every tokex test suite against the PostgreSQL server that the PG*
# environment names (pg_virtualenv sets it up): JOSE unit tests, the same under
# ASan/UBSan, a bounded libFuzzer campaign over the JOSE parsers, pg_regress,
# the upgrade check (every earlier version updated to this one has its schema
# and keeps its rows), pgTAP, the credential vault against its key file,
# interop with npm jose, the HTTP face replayed as PostgREST calls it, a real
# OAuth client library through the nginx recipe, revocation racing concurrent
# exchanges, hostile tokens flooding one backend, a cluster without tokex
# preloaded (its own pg_virtualenv), kill -9 under load (its own cluster), a
# primary with two hot standbys (its own clusters), the PL/Proxy sharding
# prototype, and the Debian
# package built, inspected and smoke-tested.  Exits non-zero if any suite
# fails.
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

suite "JOSE unit tests" make -s -C test/unit check
suite "JOSE unit tests under ASan/UBSan" make -s -C test/unit asan
suite "JOSE fuzzing (libFuzzer, bounded campaign)" bash test/fuzz/run.sh
suite "pg_regress" regress
suite "upgrade: ALTER EXTENSION UPDATE equals a fresh install" make -s upgradecheck
suite "pgTAP" make -s tapcheck
suite "credential vault: key file, rotation, no secret in pg_dump or the log" bash test/vault/run.sh
suite "interop with npm jose" bash test/interop/run.sh
suite "HTTP face (PostgREST request replay)" bash test/http/run.sh
suite "OAuth client library through the nginx recipe" bash test/nginx/run.sh
suite "revocation under concurrent load" bash test/concurrency/run.sh
suite "audit proof: sealed, verified, every tampering found" bash test/audit/run.sh
suite "load without loss: 32 clients mixing calls and revocations" bash test/load/run.sh
suite "pg_dump / pg_restore keep the rows" bash test/dump/run.sh
suite "resource limits: a flood of hostile tokens, memory flat" bash test/limits/flood.sh
suite "without shared_preload_libraries (own cluster)" bash test/nopreload/run.sh
suite "hot standbys (own primary and two standbys)" bash test/standby/run.sh
suite "sharding prototype (PL/Proxy router, four shards)" bash test/shard/run.sh
suite "SSF events survive kill -9 (own cluster)" bash test/ssf/run.sh
suite "crash durability: kill -9 under exchange load (own cluster)" bash test/crash/run.sh
# last: with CI=true it installs the .deb into the system PostgreSQL, then
# purges it and puts the tree's build back
suite "Debian package (postgresql-15-tokex)" bash test/package/run.sh

echo
[ $fail -eq 0 ] || echo "failed suites: ${failed[*]}"
echo "suites: $pass passed, $fail failed"
[ $fail -eq 0 ]
