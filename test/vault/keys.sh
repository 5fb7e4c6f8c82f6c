# Key files of the credential vault for the test suites (source it).  The
# server's own operating system user writes, chmods and removes them (COPY
# ... TO PROGRAM, as a superuser), so this works whoever runs the tests, as
# long as the server runs on this machine, as every suite here assumes.
vault_sql() { psql -X -q -At -v ON_ERROR_STOP=1 -d postgres "$@"; }

# Run a shell command as the server's user (no rows: the command reads no
# input, and must not find a write to a pipe it has closed).
vault_server_sh() { vault_sql -v cmd="$1" <<<"COPY (SELECT 1 WHERE false) TO PROGRAM :'cmd';"; }

# A new directory that only the server's user can enter; prints its path.
vault_mkdir() {
  vault_sql <<<"CREATE TEMP TABLE d (p text); COPY d FROM PROGRAM 'mktemp -d /tmp/tokex-vault.XXXXXX'; SELECT p FROM d;"
}

# vault_write_key <path> [<64 hex>]: a key file (a fresh key by default), mode 0600.
vault_write_key() {
  local hex=${2:-$(openssl rand -hex 32)}
  vault_server_sh "umask 077 && printf '%s\n' $hex > '$1' && chmod 600 '$1'"
}

# vault_set <setting> <value>: ALTER SYSTEM, reload, and wait until new
# sessions have the value (pg_reload_conf only signals the postmaster).
vault_set() {
  local i
  vault_sql -v v="$2" <<<"ALTER SYSTEM SET $1 = :'v';"
  vault_sql -c "SELECT pg_reload_conf()" >/dev/null
  for i in $(seq 100); do
    [ "$(vault_sql -c "SHOW $1")" == "$2" ] && return 0
    sleep 0.1
  done
  echo "# $1 is not '$2' after a reload" >&2
  return 1
}

# The statements that put the vault's settings back as they are now.
vault_saved_settings() {
  vault_sql <<'SQL'
SELECT CASE WHEN sourcefile LIKE '%postgresql.auto.conf'
            THEN format('ALTER SYSTEM SET %s = %L;', name, setting)
            ELSE format('ALTER SYSTEM RESET %s;', name) END
  FROM pg_settings WHERE name IN ('tokex.vault_key_file', 'tokex.vault_previous_key_file');
SQL
}

# vault_restore <saved statements> <dir>: settings back, reload, files gone.
vault_restore() {
  vault_sql <<<"$1"
  vault_sql -c "SELECT pg_reload_conf()" >/dev/null
  [ -z "$2" ] || vault_server_sh "rm -rf '$2'"
}
