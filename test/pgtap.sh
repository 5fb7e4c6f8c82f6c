#!/usr/bin/env bash
# pgTAP suites (make tapcheck): each file in a fresh database where pgtap,
# pgcrypto and tokex are installed and committed, since the audit writer
# commits audit rows in its own transaction, so the tables must exist outside
# the file's BEGIN ... ROLLBACK.  Runs test/t/*.sql, or the files given,
# against the server the PG* environment names (tokex installed).
set -uo pipefail
cd "$(dirname "$0")/.."
db=${TAP_DB:-tokex_tap}
[ $# -gt 0 ] || set -- test/t/*.sql

# The credential vault (test/t/50_vault.sql) needs a key-encryption key: a
# server that has none gets a throwaway one for this run (test/vault/keys.sh).
. test/vault/keys.sh
if [ -z "$(vault_sql -c 'SHOW tokex.vault_key_file')" ]; then
  vault_saved=$(vault_saved_settings) || exit 1
  vault_dir=$(vault_mkdir) || exit 1
  trap 'vault_restore "$vault_saved" "$vault_dir"' EXIT
  vault_write_key "$vault_dir/key" && vault_set tokex.vault_key_file "$vault_dir/key" || exit 1
fi
rc=0
for f in "$@"; do
  dropdb --force --if-exists "$db" && createdb "$db" &&
    psql -X -q -v ON_ERROR_STOP=1 -d "$db" \
      -c 'CREATE EXTENSION pgtap; CREATE EXTENSION pgcrypto; CREATE EXTENSION tokex' || exit 1
  pg_prove -d "$db" "$f" || rc=1
done
dropdb --force --if-exists "$db"
exit $rc
