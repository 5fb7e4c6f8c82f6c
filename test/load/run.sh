#!/usr/bin/env bash
# Load without loss: 32 pgbench clients mix exchanges (50%), introspections
# (30%), record_use (10%) and exchange-revoke-introspect (10%) over eight
# person/agent pairs; halfway, one session, one delegation and one person are
# revoked.  Then: no client error (pgbench aborts a client on any error),
# no deadlock, every token a committed call received has its granted audit
# row, only documented refusals, a token revoked is never active again, and
# for the revoked pairs nothing started after the revocation's commit was
# granted or active (the invariant of test/concurrency).
#
#   bash test/load/run.sh                     # CI: 10 s
#   LOAD_SECONDS=300 bash test/load/run.sh    # several minutes
#
# Uses the server the PG* environment names; creates and drops database
# tokex_load.  TAP output.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/../tap.sh"
db=${LOAD_DB:-tokex_load}
secs=${LOAD_SECONDS:-10}
clients=${LOAD_CLIENTS:-32}
tmp=$(mktemp -d)
trap 'dropdb --if-exists --force "$db" >/dev/null 2>&1; rm -rf "$tmp"' EXIT
q() { psql -X -q -At -v ON_ERROR_STOP=1 -d "$db" "$@"; }

dropdb --if-exists --force "$db" >/dev/null 2>&1
if ! createdb "$db" || ! q -f "$here/setup.sql" >"$tmp/setup.log" 2>&1; then
  echo "Bail out! cannot set up database $db"; sed 's/^/# /' "$tmp/setup.log"; exit 1
fi
deadlocks0=$(q -c "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")

pgbench -n -M prepared -c "$clients" -j 2 -T "$secs" -D jt=urn:ietf:params:oauth:token-type:jwt \
  -f "$here/exchange.pgbench@5" -f "$here/introspect.pgbench@3" -f "$here/use.pgbench@1" \
  -f "$here/revoke.pgbench@1" "$db" >"$tmp/pgbench.log" 2>&1 &
bench=$!
sleep "$(( secs / 2 ))"
rev_at=$(q <<'SQL'
BEGIN;
SELECT tokex.revoke_session((SELECT sid FROM load_pair WHERE pair = 5), 'load: session') IS NULL;
SELECT tokex.revoke_delegation('p6', 'a6', 'load: delegation') IS NULL;
SELECT tokex.revoke_identity('p7', 'load: offboarded') IS NULL;
COMMIT;
SELECT clock_timestamp();
SQL
)
rev_at=$(tail -1 <<<"$rev_at")
wait "$bench"; rc=$?
[ $rc -eq 0 ] || grep -iE 'error|abort' "$tmp/pgbench.log" | head -10 | sed 's/^/# /'
ok $rc "$clients clients for $secs s: no client error"
echo "# $(grep -E '^number of transactions actually processed|^tps' "$tmp/pgbench.log" | tr '\n' ' ')"

is "$(q -c "SELECT deadlocks - $deadlocks0 FROM pg_stat_database WHERE datname = current_database()")" 0 "no deadlock"
read -r ex granted intro uses revoked < <(q -F ' ' -c "SELECT count(*) FILTER (WHERE kind = 'exchange'),
  count(*) FILTER (WHERE kind = 'exchange' AND error IS NULL), count(*) FILTER (WHERE kind = 'introspect'),
  (SELECT count(*) FROM tokex.token_use), count(*) FILTER (WHERE kind = 'revoke') FROM load_result")
echo "# $ex exchanges ($granted granted), $intro introspections, $uses uses recorded, $revoked tokens revoked and introspected"
ok "$([ "${granted:-0}" -gt 0 ] && [ "${intro:-0}" -gt 0 ] && [ "${uses:-0}" -gt 0 ] && [ "${revoked:-0}" -gt 0 ]; echo $?)" \
   "every kind of call ran"
is "$(q -c "SELECT count(*) FROM load_result r WHERE r.jti IS NOT NULL AND NOT EXISTS
             (SELECT FROM tokex.audit_event a WHERE a.jti = r.jti AND a.decision = 'granted')")" 0 \
   "every token a committed call received has its granted audit row"
is "$(q -c "SELECT coalesce(string_agg(DISTINCT error, ','), '') FROM load_result
             WHERE error IS NOT NULL AND error <> 'invalid_grant'")" "" \
   "the only refusal is invalid_grant (for the revoked pairs)"
is "$(q -c "SELECT count(*) FROM load_result WHERE error IS NOT NULL AND pair < 5")" 0 \
   "pairs nobody revoked were never refused"
is "$(q -c "SELECT count(*) FROM load_result WHERE kind = 'revoke' AND active")" 0 \
   "a token revoked is never active again"
is "$(q -v rev_at="$rev_at" <<<"SELECT count(*) FROM load_result WHERE pair >= 5 AND t0 > :'rev_at'
             AND (kind = 'exchange' AND error IS NULL OR kind = 'introspect' AND active)")" 0 \
   "revoked session, delegation and person: nothing started after the commit was granted or active"
ok "$([ "$(q -v rev_at="$rev_at" <<<"SELECT count(*) FROM load_result WHERE pair >= 5 AND t0 > :'rev_at'")" -gt 0 ]; echo $?)" \
   "... and calls for them were made after it"
finish
