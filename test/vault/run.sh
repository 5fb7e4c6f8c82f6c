#!/usr/bin/env bash
# The credential vault and its key file, as an operator meets them: no key
# file, a missing, loose or malformed one, a replaced one (a clear error,
# nothing lost, the right file makes it work again), rotation without
# downtime (previous + current key, vault_rewrap, previous removed), a key
# command run at server start (a server of its own), and
# that no secret reaches pg_dump's output or the server log, even through a
# failed store (whose statement holds the secret).  The log check reads the
# server's log file (pg_current_logfile(), else the server's stderr); where
# it cannot be found, or log settings would write statements, those tests
# are skipped with the reason.
#
# Uses the server the PG* environment names, as a superuser on this
# machine; key files are made by the server's own user (test/vault/keys.sh).
# Changes the vault's settings with ALTER SYSTEM and puts them back at the
# end.  TAP output.
set -euo pipefail
cd "$(dirname "$0")/../.."
. test/tap.sh
. test/vault/keys.sh
db=tokex_vault restored=tokex_vault_restored
dump=$(mktemp)
saved=$(vault_saved_settings)
dir=$(vault_mkdir)
cleanup() {
  [ -z "${cstarted:-}" ] || cstop || true
  dropdb --force --if-exists $db >/dev/null 2>&1 || true
  dropdb --force --if-exists $restored >/dev/null 2>&1 || true
  vault_restore "$saved" "$dir" || true
  rm -f "$dump"
}
trap cleanup EXIT

q() { psql -X -q -At -v ON_ERROR_STOP=1 -d "${QDB:-$db}" "$@"; }
# The first line of the error q reports for sql ("SQLSTATE: message"), or "no error".
err() {
  local out
  if out=$(q -v VERBOSITY=verbose -c "$1" 2>&1 >/dev/null); then echo "no error"
  else sed -n 's/^.*ERROR:  //p' <<<"$out" | head -1; fi
}
# Everything q prints for sql, output and errors.
all() { q -v VERBOSITY=verbose -c "$1" 2>&1 || true; }
released() { q -c "SELECT COALESCE((SELECT secret FROM tokex._vault_release('$1', ${2:-NULL})), 'nothing')"; }
rnd() { openssl rand -hex 8; }

# the secrets of this run: none may reach a dump or the log...
S_SHARED="shared-$(rnd)" S_ALICE="alice:pw-$(rnd)" S_ROT="rotated-$(rnd)"
S_ERR1="failed-$(rnd)" S_ERR2="failed-$(rnd)" S_ERR3="failed-$(rnd)" S_CMD="command-$(rnd)"
# ...but this one, stored with log_statement = all, is in the log (the check's own control)
S_LOGGED="logged-$(rnd)"
marker="tokex-vault-suite-$(rnd)"

# where the server logs, and how far it has written: read from there on
logfile=$(vault_sql -c "SELECT pg_current_logfile()")
if [ -z "$logfile" ]; then
  logfile=$(vault_sql <<<"CREATE TEMP TABLE l (p text); COPY l FROM PROGRAM 'readlink /proc/\$PPID/fd/2 || true'; SELECT p FROM l;")
  [[ $logfile == /* ]] || logfile=
fi
logstart=0
[ -z "$logfile" ] || logstart=$(vault_sql -v f="$logfile" <<<"SELECT (pg_stat_file(:'f', true)).size;")
[ -n "$logstart" ] || logfile=

dropdb --force --if-exists $db 2>/dev/null
createdb $db
q >/dev/null <<'SQL'
CREATE EXTENSION tokex;
INSERT INTO tokex.identity (id, kind) VALUES ('alice', 'human'), ('bob', 'human');
INSERT INTO tokex.resource (audience, scopes, token_format) VALUES ('crm', '{crm.read}', 'credential');
SQL
q -c "DO \$\$ BEGIN RAISE LOG '$marker'; END \$\$"

# ---------------------------------------------------------------- no key
vault_set tokex.vault_key_file ''
vault_set tokex.vault_previous_key_file ''
is "$(err "SELECT tokex.store_credential('crm', '$S_ERR1')")" \
   "55000: the credential vault has no key: tokex.vault_key_file is not set" \
   "no key file set: storing is refused, naming the setting (55000)"
ok "$(all "SELECT tokex.store_credential('crm', '$S_ERR1')" | grep -q '^HINT:  Create the file with "openssl rand -hex 32 > FILE"'; echo $?)" \
   "... with a hint that says how to make one"
is "$(err "SELECT * FROM tokex._vault_release('crm')")" \
   "55000: the credential vault has no key: tokex.vault_key_file is not set" \
   "no key file set: releasing is refused the same way"

vault_set tokex.vault_key_file "$dir/missing"
e=$(all "SELECT tokex.store_credential('crm', '$S_ERR1')")
is "$(sed -n 's/^ERROR:  //p' <<<"$e")" \
   "58P01: could not open the key file named by tokex.vault_key_file: No such file or directory" \
   "the key file missing: 58P01, naming the setting"
ok "$(grep -qF "$dir" <<<"$e" && echo 1 || echo 0)" "... and not the path, which only the server log gets (the client may not be a superuser)"

vault_write_key "$dir/loose"
vault_server_sh "chmod 644 '$dir/loose'"
vault_set tokex.vault_key_file "$dir/loose"
is "$(err "SELECT tokex.store_credential('crm', '$S_ERR1')")" \
   "F0000: the key file named by tokex.vault_key_file has group or world access" \
   "a key file readable by others is refused, as PostgreSQL refuses such an ssl_key_file (F0000)"
vault_server_sh "chmod 640 '$dir/loose'"
is "$(err "SELECT * FROM tokex._vault_release('crm')")" \
   "F0000: the key file named by tokex.vault_key_file has group or world access" \
   "... readable by the group too"

vault_server_sh "umask 077 && printf 'not a key\n' > '$dir/bad' && openssl rand -hex 31 > '$dir/short' &&
                 printf '%sz\n' \$(openssl rand -hex 32 | cut -c2-) > '$dir/nonhex'"
vault_set tokex.vault_key_file "$dir/bad"
is "$(err "SELECT tokex.store_credential('crm', '$S_ERR1')")" \
   "F0000: the key file named by tokex.vault_key_file does not hold a key" \
   "a key file without 64 hex characters is refused (F0000)"
vault_set tokex.vault_key_file "$dir/short"
is "$(err "SELECT tokex.store_credential('crm', '$S_ERR1')")" \
   "F0000: the key file named by tokex.vault_key_file does not hold a key" "... a key of 31 bytes too"
vault_set tokex.vault_key_file "$dir/nonhex"
is "$(err "SELECT tokex.store_credential('crm', '$S_ERR1')")" \
   "F0000: the key file named by tokex.vault_key_file does not hold a key" "... 64 characters, one of them not hexadecimal too"
is "$(q -c "SELECT count(*) FROM tokex.credential")" "0" "nothing was stored by the refused calls"

# ---------------------------------------------------------------- a key
k1=$(openssl rand -hex 32)
vault_write_key "$dir/k1" "$k1"
vault_set tokex.vault_key_file "$dir/k1"
shared=$(q -c "SELECT tokex.store_credential('crm', '$S_SHARED')")
alice=$(q -c "SELECT tokex.store_credential('crm', '$S_ALICE', 'alice', 'basic')")
is "$(released crm "'bob'")" "$S_SHARED" "with a key file: stored, and released (shared)"
is "$(released crm "'alice'")" "$S_ALICE" "... and a person's own"

# failed stores: the client gets the error, the server log never the statement
is "$(err "SELECT tokex.store_credential('nowhere', '$S_ERR1')")" "23503: the audience is not a registered resource" \
   "a store that fails (unknown audience)"
is "$(err "DO \$\$ BEGIN PERFORM tokex.store_credential('crm', '$S_ERR2', kind => 'basic'); END \$\$")" \
   "22023: a basic credential must be user:password" "a store that fails inside a DO block (its context quotes the call)"
is "$(err "SELECT tokex.store_credential('crm', '$S_ERR3', 'mallory')")" "23503: the principal is not an identity" \
   "a store that fails (unknown principal)"

# log_statement = all writes the call, secret and all, to the log before tokex runs: it says so
w=$(q -c "SET log_statement = 'all'" -c "SELECT tokex.store_credential('crm', '$S_LOGGED', 'bob')" 2>&1 >/dev/null)
ok "$(grep -q 'WARNING:  the statement that stores this credential is written to the server log' <<<"$w"; echo $?)" \
   "storing with log_statement = all warns that the secret is now in the server log"

# ---------------------------------------------------------------- the wrong key
k_other=$(openssl rand -hex 32)
vault_write_key "$dir/k1" "$k_other"
e=$(all "SELECT * FROM tokex._vault_release('crm', 'alice')")
is "$(sed -n 's/^ERROR:  //p' <<<"$e")" \
   "55000: credential $alice is encrypted under a key-encryption key the server does not have" \
   "the key file replaced by another key: a clear error at the next release (55000)"
ok "$(grep -qF -e "${S_ALICE#alice:}" -e "$k1" -e "$k_other" <<<"$e" && echo 1 || echo 0)" \
   "... that shows neither the secret nor a key"
is "$(q -c "SELECT count(*) FROM tokex.credential")" "3" "... and loses nothing"
vault_write_key "$dir/k1" "$k1"
is "$(released crm "'alice'")" "$S_ALICE" "the right key file back: released again"
vault_server_sh "rm '$dir/k1'"
is "$(err "SELECT * FROM tokex._vault_release('crm')")" \
   "58P01: could not open the key file named by tokex.vault_key_file: No such file or directory" \
   "the key file deleted: 58P01"
vault_write_key "$dir/k1" "$k1"
is "$(released crm)" "$S_SHARED" "... and restored: released again"

# ---------------------------------------------------------------- rotation
k1id=$(q -c "SELECT key_id FROM tokex.vault_status() WHERE key = 'current'")
vault_write_key "$dir/k2"
vault_set tokex.vault_previous_key_file "$dir/k1"
vault_set tokex.vault_key_file "$dir/k2"
is "$(q -c "SELECT string_agg(key || '=' || credentials, ' ' ORDER BY key) FROM tokex.vault_status()")" \
   "current=0 previous=3" "rotation begins: the new key is current, every credential is under the previous one"
is "$(released crm "'alice'")" "$S_ALICE" "... and still released, under the previous key"
rot=$(q -c "SELECT tokex.store_credential('crm', '$S_ROT', 'alice', 'bearer')")
is "$(released crm "'alice'")" "$S_ROT" "a credential stored meanwhile is under the new key, and released"
is "$(q -c "SELECT tokex.vault_rewrap()")" "3" "vault_rewrap re-wraps the three under the new key"
is "$(q -c "SELECT string_agg(key || '=' || credentials, ' ' ORDER BY key) FROM tokex.vault_status()")" \
   "current=4 previous=0" "... after which none is under the previous key"
is "$(q -c "SELECT tokex.vault_rewrap()")" "0" "a second vault_rewrap has nothing to do"
vault_set tokex.vault_previous_key_file ''
vault_server_sh "rm '$dir/k1'"
is "$(released crm "'bob'")" "$S_LOGGED" "the previous key removed: everything is still released"
is "$(released crm)" "$S_SHARED" "... the shared one"
q -c "SELECT tokex.revoke_credential($rot, 'test')" >/dev/null
is "$(released crm "'alice'")" "$S_ALICE" "... alice's older one (her newer one revoked)"
is "$(q -c "SELECT count(DISTINCT kek_id) FROM tokex.credential WHERE encode(kek_id, 'hex') <> '$k1id'")" "1" \
   "every row names the new key"
# a row left under a key the server no longer has: rewrap says so and leaves it
q -c "UPDATE tokex.credential SET kek_id = '\\x00112233445566778899aabbccddeeff' WHERE id = $shared"
w=$(q -c "SELECT tokex.vault_rewrap()" 2>&1)
ok "$(grep -q 'WARNING:  1 credentials were not re-wrapped' <<<"$w"; echo $?)" \
   "vault_rewrap warns about a credential under a key it does not have"
is "$(q -c "SELECT key || '=' || credentials FROM tokex.vault_status() WHERE key = 'unknown'")" "unknown=1" \
   "... and vault_status lists it"
q -c "UPDATE tokex.credential SET kek_id = (SELECT kek_id FROM tokex.credential WHERE id = $alice) WHERE id = $shared"

# ---------------------------------------------------------------- pg_dump
pg_dump -d $db > "$dump"
ok "$(grep -q '^COPY tokex.credential ' "$dump"; echo $?)" "pg_dump dumps tokex.credential (the ciphertexts)"
for s in "$S_SHARED" "$S_ALICE" "$S_ROT" "$S_LOGGED"; do
  is "$(grep -cF "$s" "$dump" || true)" "0" "pg_dump's output holds no secret ($s)"
done
createdb $restored
QDB=$restored q -f "$dump" >/dev/null 2>&1
is "$(QDB=$restored released crm "'alice'")" "$S_ALICE" "restored into another database, the credentials are released as before"

# ---------------------------------------------------------------- the server log
logging=$(vault_sql -c "SELECT current_setting('log_statement') = 'all' OR current_setting('log_min_duration_statement') = '0'")
if [ -z "$logfile" ]; then
  why="the server's log file cannot be found (no pg_current_logfile(), and stderr is not a file)"
elif [ "$logging" == "t" ]; then
  why="this server logs every statement (log_statement or log_min_duration_statement), secrets included"
else
  log=$(vault_sql -v f="$logfile" -v o="$logstart" <<<"SELECT pg_read_file(:'f', :o, 1000000000);") || log=
  grep -qF "$marker" <<<"$log" || why="the log file found ($logfile) does not show this suite's marker"
  grep -qF "$S_LOGGED" <<<"$log" || why="the log file found ($logfile) does not show the statement logged with log_statement = all"
fi
if [ -n "${why:-}" ]; then
  for i in 1 2 3 4 5 6 7 8 9; do n=$((n + 1)); echo "ok $n # skip $why"; done
else
  ok 0 "the server log was found ($logfile) and shows this suite's marker and the secret stored with log_statement = all"
  ok "$(grep -q 'ERROR:  the audience is not a registered resource' <<<"$log"; echo $?)" \
     "... and the failed stores' errors"
  for s in "$S_SHARED" "$S_ALICE" "$S_ROT" "$S_ERR1" "$S_ERR2" "$S_ERR3" "$k1"; do
    is "$(grep -cF "$s" <<<"$log" || true)" "0" "the server log holds no secret or key ($s)"
  done
fi
# ---------------------------------------------------------------- a key command
# tokex.vault_key_command runs once, at server start, so it needs a server
# of its own: started here from the same installation ($PG_CONFIG) as the
# server's user, listening only on a socket in the suite's directory.
bindir=$("${PG_CONFIG:-pg_config}" --bindir)
cdata=$dir/cluster clog=$dir/cluster.log cport=5499
server_user=$(vault_sql <<<"CREATE TEMP TABLE u (n text); COPY u FROM PROGRAM 'id -un'; SELECT n FROM u;")
as_server() {
  if [ "$(id -un)" == "$server_user" ]; then "$@"; else runuser -u "$server_user" -- "$@"; fi
}
cstart() {  # cstart <key command>
  as_server "$bindir/pg_ctl" -D "$cdata" -l "$clog" -w -o "-p $cport -k $dir -c listen_addresses='' \
    -c shared_preload_libraries=tokex -c tokex.vault_key_command=$1" start >/dev/null && cstarted=1
}
cstop() { as_server "$bindir/pg_ctl" -D "$cdata" -m fast -w stop >/dev/null && cstarted=; }
qc() { PGHOST=$dir PGPORT=$cport PGUSER=postgres "$@"; }   # run a command against that server
if [ "$(id -un)" != "$server_user" ] && [ "$(id -u)" != 0 ]; then
  for i in 1 2 3 4 5 6 7 8; do
    n=$((n + 1)); echo "ok $n # skip a server of its own needs root or the server's user ($server_user)"
  done
else
  kc=$(openssl rand -hex 32)
  vault_server_sh "umask 077 && printf '#!/bin/sh\necho $kc\n' > '$dir/getkey' &&
                   printf '#!/bin/sh\necho no key here >&2\nexit 3\n' > '$dir/nokey' &&
                   chmod 700 '$dir/getkey' '$dir/nokey' && printf '%s\n' $kc > '$dir/kc'"
  as_server "$bindir/initdb" -D "$cdata" -U postgres -A trust --no-sync >/dev/null
  cstart "$dir/getkey"
  qc q -d postgres >/dev/null <<'SQL'
CREATE EXTENSION tokex;
INSERT INTO tokex.resource (audience, scopes, token_format) VALUES ('crm', '{}', 'credential');
SQL
  qc q -d postgres -c "SELECT tokex.store_credential('crm', '$S_CMD')" >/dev/null
  is "$(QDB=postgres qc released crm)" "$S_CMD" \
     "with tokex.vault_key_command (run at server start): stored and released under the key it printed"
  qc vault_set tokex.vault_key_file "$dir/kc"
  is "$(QDB=postgres qc err "SELECT * FROM tokex._vault_release('crm')")" \
     "55000: both tokex.vault_key_file and tokex.vault_key_command are set" \
     "a key file set as well: refused, naming both settings"
  cstop
  cstart "''"
  is "$(QDB=postgres qc released crm)" "$S_CMD" \
     "restarted with that key in tokex.vault_key_file instead: the same key, the same credential"
  qc vault_set tokex.vault_key_file ''
  cstop
  cstart "$dir/nokey"
  ok $? "a key command that fails does not keep the server from starting"
  is "$(QDB=postgres qc err "SELECT * FROM tokex._vault_release('crm')")" \
     "55000: the credential vault has no key: tokex.vault_key_command gave none at server start" \
     "... but the vault has no key, and says so"
  ok "$(grep -q 'WARNING:  the credential vault has no key: tokex.vault_key_command gave none' "$clog"; echo $?)" \
     "... as the server log did at start"
  cstop
  cstart "$dir/getkey"
  is "$(QDB=postgres qc released crm)" "$S_CMD" "restarted with the right command: released again"
  is "$(grep -cF -e "$kc" -e "$S_CMD" "$clog" || true)" "0" "that server's log holds neither the key nor the secret"
  cstop
fi
finish
