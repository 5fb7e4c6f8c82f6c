#!/usr/bin/env bash
# Crash durability: under an exchange load, kill -9 the postmaster (and,
# separately, one backend: a client's or the audit writer) several times,
# restart, and check what survived against what the clients saw.
#
# Clients (psql sessions that reconnect after every crash) log each answer
# as it arrives: the jti of every token received (some in transactions the
# caller then rolls back), the marker of every denial received (idem), and
# every token they revoked once the revocation committed.  After the last
# restart:
#   - every token a client received has its granted audit row;
#   - every denial a client received has its denied row (the audit writer
#     commits it before the answer, so the caller's ROLLBACK does not undo it);
#   - granted rows whose token no client received are at most one in-flight
#     call per client per crash (the writer committed, the answer was lost):
#     never a row without an issuance that really committed;
#   - every revocation committed before a crash holds (row kept, the token
#     introspects inactive);
#   - the B-tree indexes of every tokex table pass amcheck.
#
# Runs its own cluster (fsync on, tokex preloaded) from $PG_CONFIG's
# binaries (CI: the system PostgreSQL, with this tree's tokex installed),
# in a temporary directory, reachable only through its own socket.
# TAP output.  TOKEX_CRASH_ROUNDS (6) crashes, TOKEX_CRASH_LOAD (3) seconds
# of load between them, TOKEX_CRASH_CLIENTS (4) clients.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/../tap.sh"
PG_CONFIG=${PG_CONFIG:-pg_config}
bindir=$("$PG_CONFIG" --bindir)
rounds=${TOKEX_CRASH_ROUNDS:-6}
load=${TOKEX_CRASH_LOAD:-3}
nclients=${TOKEX_CRASH_CLIENTS:-4}

tmp=$(mktemp -d)
data=$tmp/data
port=${TOKEX_CRASH_PORT:-5499}
unset PGHOST PGPORT PGUSER PGDATABASE PGPASSWORD PGSERVICE PGOPTIONS
export PGHOST=$tmp PGPORT=$port PGUSER=postgres PGDATABASE=crash
# initdb and the server refuse to run as root
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres "$tmp"

client_pids=()
cleanup() {
  touch "$tmp/stop"
  for p in "${client_pids[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  as_pg "$bindir/pg_ctl" -D "$data" -m immediate stop >/dev/null 2>&1
  rm -rf "$tmp"
}
trap cleanup EXIT
q() { "$bindir/psql" -X -q -At -v ON_ERROR_STOP=1 "$@"; }

if ! as_pg "$bindir/initdb" -D "$data" -U postgres -A trust >"$tmp/initdb.log" 2>&1; then
  echo "Bail out! initdb failed"; sed 's/^/# /' "$tmp/initdb.log"; exit 1
fi
cat >>"$data/postgresql.conf" <<CONF
shared_preload_libraries = 'tokex'
listen_addresses = ''
unix_socket_directories = '$tmp'
port = $port
fsync = on
synchronous_commit = on
restart_after_crash = on
max_connections = 40
CONF
start() {
  as_pg "$bindir/pg_ctl" -D "$data" -l "$tmp/server.log" -w -t 60 start >/dev/null 2>&1
}
ready() {  # wait until the server answers queries (after crash recovery)
  for _ in $(seq 1 300); do
    q -d crash -c 'SELECT 1' >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  return 1
}
if ! start || ! q -d postgres -c 'CREATE DATABASE crash' || ! q -f "$here/setup.sql" >"$tmp/setup.log" 2>&1; then
  echo "Bail out! cannot start the cluster or set up the database"
  sed 's/^/# /' "$tmp/setup.log" "$tmp/server.log" 2>/dev/null | tail -20; exit 1
fi
read -r st at < <(q -F ' ' <<'SQL'
SELECT tokex.start_session('alice', 'agent', '{calendar.read}', '1 hour') AS s \gset
SELECT (:'s'::jsonb)->>'session_token', tokex.identity_token('agent', '1 hour');
SQL
)
[ -n "${at:-}" ] || { echo "Bail out! no session or identity token"; exit 1; }

# --- the clients ------------------------------------------------------------
# Statements for one connection; every answer printed as kind|key|value.
# G: a token, autocommit.  R: a token, the caller's transaction rolled back.
# D / U: a denial (an unknown scope naming the call), autocommit / rolled
# back.  V: a token exchanged and revoked in one transaction, printed after
# it committed.
statements() {  # statements <client>-<connection>
  local tag=$1 k=0 ex
  ex="tokex.exchange(:'st', :'jt', :'at', :'jt', audience => 'calendar-api'"
  while [ ! -e "$tmp/stop" ]; do
    k=$((k + 1))
    case $((k % 8)) in
      0|1|2) echo "SELECT 'G|' || (tokex.jwt_decode(r->>'access_token')->'payload'->>'jti') || '|' FROM (SELECT $ex) r) s;" ;;
      3) echo "BEGIN; SELECT 'R|' || (tokex.jwt_decode(r->>'access_token')->'payload'->>'jti') || '|' FROM (SELECT $ex) r) s; ROLLBACK;" ;;
      4) echo "SELECT 'D|x$tag-$k|' || ($ex, scope => 'calendar.read x$tag-$k')->>'error');" ;;
      5) echo "BEGIN; SELECT 'U|x$tag-$k|' || ($ex, scope => 'calendar.read x$tag-$k')->>'error'); ROLLBACK;" ;;
      6) echo "SELECT 'V|' || (tokex.jwt_decode(t)->'payload'->>'jti') || '|' || t FROM (SELECT $ex)->>'access_token' t) s, LATERAL tokex.revoke_token(t, 'crash test') v;" ;;
      7) echo "SELECT 'G|' || (tokex.jwt_decode(r->>'access_token')->'payload'->>'jti') || '|' FROM (SELECT $ex) r) s;" ;;
    esac
  done
}
client() {  # client <n>: reconnects until told to stop
  local c=0
  while [ ! -e "$tmp/stop" ]; do
    c=$((c + 1))
    statements "$1-$c" | PGAPPNAME=crash-client "$bindir/psql" -X -q -At -v ON_ERROR_STOP=1 \
      -v st="$st" -v at="$at" -v jt=urn:ietf:params:oauth:token-type:jwt \
      >>"$tmp/client.$1.log" 2>>"$tmp/client.$1.err"
    sleep 0.2
  done
}
for i in $(seq 1 "$nclients"); do client "$i" & client_pids+=($!); done

# --- the crashes ------------------------------------------------------------
kill_postmaster() {
  local pm kids
  pm=$(head -1 "$data/postmaster.pid")
  kids=$(ps -o pid= --ppid "$pm")
  kill -9 "$pm"
  # its children notice the postmaster is gone and exit; any that linger are
  # killed too, as a machine crash would
  for _ in $(seq 1 50); do
    # shellcheck disable=SC2086
    kill -0 $kids 2>/dev/null || break
    sleep 0.1
  done
  # shellcheck disable=SC2086
  kill -9 $kids 2>/dev/null
  start
}
kill_backend() {  # kill_backend <backend_type or application_name>
  local pid
  pid=$(q -d crash -c "SELECT pid FROM pg_stat_activity WHERE (application_name = '$1' OR backend_type = '$1')
                        AND pid <> pg_backend_pid() ORDER BY random() LIMIT 1")
  [ -n "$pid" ] && kill -9 "$pid"
  echo "$pid"
}

pm_kills=0 backend_kills=0 writer_kills=0 restarts=0
sleep "$load"
for r in $(seq 1 "$rounds"); do
  case $((r % 3)) in
    1) kill_postmaster && pm_kills=$((pm_kills + 1)) ;;
    2) [ -n "$(kill_backend crash-client)" ] && backend_kills=$((backend_kills + 1)) ;;
    0) [ -n "$(kill_backend 'tokex audit writer')" ] && writer_kills=$((writer_kills + 1)) ;;
  esac
  ready && restarts=$((restarts + 1))
  date +%s.%N >"$tmp/last_restart"
  sleep "$load"
done
touch "$tmp/stop"
for p in "${client_pids[@]}"; do wait "$p"; done
client_pids=()

# --- what survived ----------------------------------------------------------
is "$restarts" "$rounds" "the server came back after each of $rounds crashes"
echo "# kill -9: postmaster $pm_kills, a client backend $backend_kills, the audit writer $writer_kills"
recovered=$(grep -c 'database system was not properly shut down\|all server processes terminated; reinitializing' "$tmp/server.log")
ok "$([ "$recovered" -ge "$rounds" ]; echo $?)" "each crash was followed by crash recovery ($recovered in the server log)"

cat "$tmp"/client.*.log | grep -v '^$' >"$tmp/received.txt"
q -c "\\copy received FROM '$tmp/received.txt' WITH (DELIMITER '|')" || echo "# cannot load the clients' logs"
read -r g r d u v < <(q -F ' ' -c "SELECT count(*) FILTER (WHERE kind = 'G'), count(*) FILTER (WHERE kind = 'R'),
  count(*) FILTER (WHERE kind = 'D'), count(*) FILTER (WHERE kind = 'U'), count(*) FILTER (WHERE kind = 'V') FROM received")
echo "# received: $g tokens, $r tokens in rolled-back transactions, $d denials, $u denials in rolled-back transactions, $v revoked tokens"
ok "$([ "${g:-0}" -gt 0 ] && [ "${r:-0}" -gt 0 ] && [ "${d:-0}" -gt 0 ] && [ "${u:-0}" -gt 0 ] && [ "${v:-0}" -gt 0 ]; echo $?)" \
   "the clients received tokens, denials and revocations of every kind"
after=$(q -c "SELECT count(*) FROM tokex.audit_event WHERE operation = 'exchange' AND decision = 'granted'
                AND at > to_timestamp($(cat "$tmp/last_restart"))")
ok "$([ "${after:-0}" -gt 0 ]; echo $?)" "exchanges were granted after the last crash ($after)"

# the casts only on the rows of tokens (a denial's key is no uuid)
tok="WITH t AS MATERIALIZED (SELECT k::uuid AS jti, v FROM received WHERE kind IN ('G', 'R', 'V'))"
missing=$(q -c "$tok SELECT count(*) FROM t WHERE NOT EXISTS
  (SELECT FROM tokex.audit_event a WHERE a.jti = t.jti AND a.decision = 'granted')")
is "$missing" 0 "every token a client received has its granted audit row ($((g + r + v)) tokens)"
missing=$(q -c "WITH m AS (SELECT DISTINCT unnest(requested_scope) AS k FROM tokex.audit_event WHERE decision = 'denied')
  SELECT count(*) FROM received x WHERE kind IN ('D', 'U') AND x.k NOT IN (SELECT k FROM m)")
is "$missing" 0 "every denial a client received has its denied audit row, rolled back by the caller or not ($((d + u)))"
unseen=$(q -c "$tok SELECT count(*) FROM tokex.audit_event a WHERE a.operation = 'exchange' AND a.decision = 'granted'
  AND a.jti NOT IN (SELECT jti FROM t)")
bound=$((nclients * rounds))
ok "$([ "${unseen:-999}" -le $bound ]; echo $?)" \
   "granted rows whose token no client received: $unseen, at most one in-flight call per client per crash ($bound)"
dups=$(q -c "SELECT count(*) - count(DISTINCT jti) FROM tokex.audit_event WHERE jti IS NOT NULL")
is "$dups" 0 "no token has two audit rows"
lost=$(q -c "SELECT count(*) FROM received x WHERE kind = 'V' AND NOT EXISTS
  (SELECT FROM tokex.revoked_token t WHERE t.jti = x.k)")
is "$lost" 0 "every revocation committed before a crash is still there ($v)"
active=$(q -c "SELECT count(*) FROM received x WHERE kind = 'V' AND (tokex.introspect(x.v)->>'active')::boolean")
is "$active" 0 "and every revoked token introspects inactive"
# bt_index_check raises on a corrupt index: then no count comes back
idx="FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam
     WHERE am.amname = 'btree' AND c.relnamespace = 'tokex'::regnamespace"
want=$(q -c "SELECT count(*) $idx")
have=$(q -c "SELECT count(*) FROM (SELECT bt_index_check(c.oid, true) $idx) s" 2>&1)
is "$have" "$want" "every B-tree index of tokex ($want) passes amcheck with heapallindexed"
finish
