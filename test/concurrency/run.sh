#!/usr/bin/env bash
# tokex concurrency test: a revocation committed in one session is effective
# for every exchange and introspection that starts after the commit, in every
# other backend, while those backends are busy exchanging.
#
# For each of revoke_session, revoke_identity (offboard the person) and
# revoke_delegation: pgbench runs 4 clients that exchange a session token and
# introspect a token minted before; ~2 s in, another session revokes and
# commits, and takes clock_timestamp() right after COMMIT returns as the
# revocation time.  Then: no exchange granted and no introspection active
# among calls that started after that time, some successes before it (so the
# test can fail) and some attempts after it.  Finally a LISTEN on
# tokex_revocation receives the JSON payload of a committed revocation (and
# nothing of a rolled-back one).
#
# Connection from the standard PG* environment (pg_virtualenv sets it).  As
# root with PGUSER=postgres over a peer-authenticated socket, it re-runs
# itself as the postgres OS user.  Output is TAP; exits non-zero on failure.
# Creates and drops the database tokex_conc (TOKEX_CONC_DB overrides).
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DB=${TOKEX_CONC_DB:-tokex_conc}
DURATION=${TOKEX_CONC_SECONDS:-6}     # pgbench -T per scenario
REVOKE_AFTER=${TOKEX_CONC_REVOKE_AFTER:-2}

if ! psql -X -d postgres -Atqc 'SELECT 1' >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && [ "${PGUSER:-}" = postgres ] && [ -z "${TOKEX_CONC_REEXEC:-}" ] \
     && id postgres >/dev/null 2>&1; then
    cd /
    exec runuser -u postgres -- env TOKEX_CONC_REEXEC=1 bash "$here/run.sh" "$@"
  fi
  echo "1..0 # SKIP cannot connect to PostgreSQL with the PG* environment"
  psql -X -d postgres -Atqc 'SELECT 1' 2>&1 | sed 's/^/# /'
  exit 1
fi

tmp=$(mktemp -d)
bg_pids=()
cleanup() {
  for p in "${bg_pids[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  dropdb --if-exists --force "$DB" >/dev/null 2>&1 || dropdb --if-exists "$DB" >/dev/null 2>&1
  rm -rf "$tmp"
}
trap cleanup EXIT

q() { psql -X -q -v ON_ERROR_STOP=1 -d "$DB" "$@"; }

n=0 failed=0
tap() {   # tap <0|1> description
  n=$((n + 1))
  if [ "$1" = 1 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; failed=$((failed + 1)); fi
}
diag() { sed 's/^/# /'; }

# 3 scenarios x 6 checks, and 5 for NOTIFY
echo "1..23"

dropdb --if-exists --force "$DB" >/dev/null 2>&1
if ! createdb "$DB" 2>"$tmp/err" || ! q -f "$here/setup.sql" >"$tmp/setup.out" 2>&1; then
  echo "Bail out! cannot set up database $DB"
  diag <"$tmp/err"; diag <"$tmp/setup.out" 2>/dev/null
  exit 1
fi

scenario() {   # scenario <name> <person> <agent> <revocation SQL, :'sid' available>
  local name=$1 person=$2 agent=$3 revoke_sql=$4
  local st sid at tok rc counts rev_begin rev_at bad before after window total

  read -r st sid at tok < <(q -At -F ' ' -v person="$person" -v agent="$agent" -f "$here/session.sql" 2>"$tmp/err")
  if [ -z "${tok:-}" ]; then
    echo "Bail out! $name: cannot start a session and mint a token"
    diag <"$tmp/err"
    exit 1
  fi

  pgbench -n -M prepared -c 4 -j 2 -T "$DURATION" -f "$here/exchange.pgbench" \
    -D jwt_type=urn:ietf:params:oauth:token-type:jwt \
    -D scenario="$name" -D session_token="$st" -D actor_token="$at" -D minted_token="$tok" \
    "$DB" >"$tmp/pgbench.$name" 2>&1 &
  local pg=$!
  bg_pids+=("$pg")

  sleep "$REVOKE_AFTER"
  # rev_begin: before BEGIN; rev_at: right after COMMIT returned
  q -At -v sid="$sid" >"$tmp/revoke.$name" 2>&1 <<SQL
SELECT clock_timestamp() AS rev_begin \gset
BEGIN;
\o /dev/null
$revoke_sql;
\o
COMMIT;
SELECT clock_timestamp() AS rev_at \gset
\echo REV :rev_begin|:rev_at
SQL
  IFS='|' read -r rev_begin rev_at < <(sed -n 's/^REV //p' "$tmp/revoke.$name")

  wait "$pg"; rc=$?
  tap "$([ $rc = 0 ] && echo 1 || echo 0)" "$name: pgbench ran without errors"
  [ $rc = 0 ] || diag <"$tmp/pgbench.$name"

  if [ -z "${rev_at:-}" ]; then
    tap 0 "$name: the revocation committed"; diag <"$tmp/revoke.$name"
    for _ in 1 2 3 4; do tap 0 "$name: (no revocation time)"; done
    return
  fi
  tap 1 "$name: the revocation committed"

  counts=$(q -At -F ' ' -v scen="$name" -v rev_begin="$rev_begin" -v rev_at="$rev_at" <<'SQL'
SELECT count(*) FILTER (WHERE t0 > :'rev_at' AND (granted OR active)),
       count(*) FILTER (WHERE t0 < :'rev_begin' AND granted AND active),
       count(*) FILTER (WHERE t0 > :'rev_at'),
       count(*) FILTER (WHERE t0 BETWEEN :'rev_begin' AND :'rev_at'),
       count(*)
  FROM conc_result WHERE scenario = :'scen';
SQL
  )
  read -r bad before after window total <<<"$counts"
  echo "# $name: $total calls; $before granted+active before the revocation began, $window during it,"
  echo "#   $after after its commit (revocation at $rev_at), $bad of them granted or active"
  tap "$([ "${before:-0}" -gt 0 ] && echo 1 || echo 0)" "$name: exchanges were granted and the token active before the revocation"
  tap "$([ "${after:-0}" -gt 0 ] && echo 1 || echo 0)" "$name: calls were made after the revocation committed"
  tap "$([ "${bad:-1}" = 0 ] && echo 1 || echo 0)" "$name: no exchange granted and no token active after the commit"
  if [ "${bad:-1}" != 0 ]; then
    q -At -v scen="$name" -v rev_at="$rev_at" <<'SQL' | diag
SELECT t0, granted, active FROM conc_result
 WHERE scenario = :'scen' AND t0 > :'rev_at' AND (granted OR active) ORDER BY t0 LIMIT 10;
SQL
  fi
  tap "$([ "$(q -At -v scen="$name" -c "SELECT count(*) FROM tokex.revocation WHERE reason = 'concurrency: $name'")" = 1 ] \
        && echo 1 || echo 0)" "$name: exactly one revocation row"
}

scenario revoke_session alice1 agent1 "SELECT tokex.revoke_session(:'sid', 'concurrency: revoke_session')"
scenario revoke_identity alice2 agent2 "SELECT tokex.revoke_identity('alice2', 'concurrency: revoke_identity')"
scenario revoke_delegation alice3 agent3 "SELECT tokex.revoke_delegation('alice3', 'agent3', 'concurrency: revoke_delegation')"

# --- NOTIFY tokex_revocation reaches a listener in another session ----------
# psql prints notifications (in English with LC_ALL=C) after the statement
# during which they arrived.
LC_ALL=C LANGUAGE=C PGAPPNAME=tokex_conc_listener psql -X -q -d "$DB" >"$tmp/listen.out" 2>&1 <<'SQL' &
LISTEN tokex_revocation;
SELECT pg_sleep(3);
SQL
listener=$!
bg_pids+=("$listener")
ready=0
for _ in $(seq 50); do
  if [ "$(q -At -c "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'tokex_conc_listener'
                     AND state = 'active' AND query LIKE '%pg_sleep%'")" = 1 ]; then ready=1; break; fi
  sleep 0.1
done
q >"$tmp/notify.out" 2>&1 <<'SQL'
\o /dev/null
BEGIN;
SELECT tokex.revoke_identity('nora', 'rolled back: never announced');
ROLLBACK;
BEGIN;
SELECT tokex.revoke_identity('nora', 'notify test: offboarded');
COMMIT;
SQL
wait "$listener"
prefix='Asynchronous notification "tokex_revocation" with payload "'
payloads=$(grep -F "$prefix" "$tmp/listen.out" | sed 's/^Asynchronous notification "tokex_revocation" with payload "\(.*\)" received from server process with PID [0-9]*\.$/\1/')
count=$(printf '%s' "$payloads" | grep -c . || true)
tap "$([ $ready = 1 ] && [ "$count" = 1 ] && echo 1 || echo 0)" \
  "NOTIFY: the listener received exactly one tokex_revocation notification (the committed one)"
if [ "$count" != 1 ]; then diag <"$tmp/listen.out"; diag <"$tmp/notify.out"; fi
payload=$(printf '%s\n' "$payloads" | head -n 1)
checks=$(q -At -F ' ' -v p="$payload" 2>&1 <<'SQL'
SELECT (:'p'::jsonb)->>'kind' = 'identity',
       (:'p'::jsonb)->>'target' = 'nora',
       (:'p'::jsonb)->>'reason' = 'notify test: offboarded',
       ((:'p'::jsonb)->>'at')::timestamptz = (SELECT at FROM tokex.revocation WHERE target = 'nora')
SQL
)
read -r c_kind c_target c_reason c_at <<<"$checks"
tap "$([ "$c_kind" = t ] && echo 1 || echo 0)" "NOTIFY: payload kind = identity"
tap "$([ "$c_target" = t ] && echo 1 || echo 0)" "NOTIFY: payload target = the identity id"
tap "$([ "$c_reason" = t ] && echo 1 || echo 0)" "NOTIFY: payload reason = the revocation's reason"
tap "$([ "$c_at" = t ] && echo 1 || echo 0)" "NOTIFY: payload at = the tokex.revocation row's at"
[ "$c_kind$c_target$c_reason$c_at" = tttt ] || { echo "# payload: $payload"; echo "$checks" | diag; }

[ $failed = 0 ]
