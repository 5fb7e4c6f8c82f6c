#!/usr/bin/env bash
# Interop tests with npm jose (both directions), run with node's test runner.
# Uses the PostgreSQL server named by the standard PG* environment (e.g. under
# pg_virtualenv); creates and finally drops its own database ($INTEROP_DB,
# default tokex_interop).  Needs tokex installed (make install), node >= 20, npm.
set -euo pipefail
cd "$(dirname "$0")"

db=${INTEROP_DB:-tokex_interop}

npm ci --no-audit --no-fund --loglevel=error >/dev/null

PGOPTIONS="-c client_min_messages=warning" dropdb --if-exists "$db"
createdb "$db"
trap 'PGOPTIONS="-c client_min_messages=warning" dropdb --if-exists "$db" || true' EXIT
psql -X -q -v ON_ERROR_STOP=1 -d "$db" -c 'CREATE EXTENSION tokex'

PGDATABASE=$db node --test --test-reporter=spec --test-concurrency=1 \
  tokex-signs.test.mjs jose-signs.test.mjs exchange.test.mjs translation.test.mjs dpop.test.mjs ssf.test.mjs
