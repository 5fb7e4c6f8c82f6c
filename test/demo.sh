#!/usr/bin/env bash
# The main job: in the PostgreSQL that the PG* environment names (a
# throwaway pg_virtualenv cluster), install tokex in a fresh database and
# walk through exchanges, a chain, a revocation and the auditor's query.
set -euo pipefail
cd "$(dirname "$0")/.."
dropdb --if-exists tokex_demo
createdb tokex_demo
psql -X -q -d tokex_demo -f test/demo.sql
dropdb tokex_demo
