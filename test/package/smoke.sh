#!/usr/bin/env bash
# Run by test/package/run.sh inside a throwaway cluster (pg_virtualenv) that
# preloads tokex from the package: prints what it found, one key=value a line.
set -euo pipefail
q() { psql -X -q -At -v ON_ERROR_STOP=1 "$@"; }
createdb smoke
createdb smoke_old
q -d smoke -c "ALTER DATABASE smoke SET tokex.issuer = 'https://tokex.package.test'"
q -d smoke -c 'CREATE EXTENSION tokex'
echo "version=$(q -d smoke -c "SELECT extversion FROM pg_extension WHERE extname = 'tokex'")"
q -d smoke >/dev/null <<'SQL'
SELECT tokex.create_key();
INSERT INTO tokex.identity (id, kind) VALUES ('alice', 'human');
SQL
tok=$(q -d smoke -c "SELECT tokex.jwt_sign(jsonb_build_object('sub', 'alice', 'aud', 'api',
                                           'exp', extract(epoch FROM now())::bigint + 60))")
echo "active=$(q -d smoke -v tok="$tok" <<< "SELECT (tokex.introspect(:'tok'))->>'active'")"
q -d smoke_old -c "CREATE EXTENSION tokex VERSION '0.1'"
q -d smoke_old -c 'ALTER EXTENSION tokex UPDATE'
echo "updated=$(q -d smoke_old -c "SELECT extversion FROM pg_extension WHERE extname = 'tokex'")"
pm=$(head -1 "$(q -c 'SHOW data_directory')/postmaster.pid")
echo "library=$(grep -o '/[^ ]*/tokex\.so' "/proc/$pm/maps" | sort -u | tr '\n' ' ')"
