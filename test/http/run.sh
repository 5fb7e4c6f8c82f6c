#!/usr/bin/env bash
# HTTP-face tests: replays, per request and in its own psql session, the SQL
# PostgREST runs for POST /rpc/token, /rpc/introspect, /rpc/revoke and GET
# /rpc/jwks, /rpc/oauth_authorization_server (DESIGN.md §5).  Uses the server
# the standard PG* environment names (e.g. under pg_virtualenv, as a
# superuser); creates and finally drops its own database ($HTTP_DB, default
# tokex_http).  Needs tokex installed (make install) and node >= 20; no npm.
set -euo pipefail
cd "$(dirname "$0")/../.."

db=${HTTP_DB:-tokex_http}
tmp=$(mktemp -d)
cleanup() { dropdb --if-exists "$db" || true; rm -rf "$tmp"; }
trap cleanup EXIT

dropdb --if-exists "$db"
createdb "$db"
export PGDATABASE=$db
psql -X -q -v ON_ERROR_STOP=1 -c 'CREATE EXTENSION tokex'
psql -X -q -At -v ON_ERROR_STOP=1 -f test/http/fixtures.sql >/dev/null
node test/http/setup.mjs "$tmp/fixtures.json"

TOKEX_HTTP_FIXTURES=$tmp/fixtures.json node --test --test-reporter=spec test/http/
