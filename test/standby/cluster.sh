# A primary and two hot standbys on this machine, for test/standby/run.sh and
# test/bench/standby.sh (source it).  Streaming replication over loopback
# only (listen_addresses = 127.0.0.1, sockets in a private directory), every
# server with shared_preload_libraries = tokex.  The binaries come from
# $PG_CONFIG --bindir: in CI the system PostgreSQL with the just-built tokex
# installed, in a development tree the private copy it was installed into.
#
#   sb_start   initdb + start the primary, create database $SB_DB with tokex,
#              pg_basebackup -R two standbys (cluster_name s1, s2) and start them
#   sb_stop    stop all three and remove their directories (also on EXIT)
#   pq N ...   psql -X -At against server N (0 = primary, 1, 2) in $SB_DB
#
# Ports: $SB_PORT (default 5485) for the primary, +1 and +2 for the standbys.
# Run as the PostgreSQL OS user (initdb refuses root): sb_reexec does that.

SB_PORT=${SB_PORT:-5485}
SB_DB=${SB_DB:-tokex_sb}
SB_BIN=$("${PG_CONFIG:-pg_config}" --bindir)
SB_DIR=
SB_PORTS=("$SB_PORT" $((SB_PORT + 1)) $((SB_PORT + 2)))

# as root, re-run the calling script as postgres (with the same environment)
sb_reexec() {  # sb_reexec "$0" "$@"
  if [ "$(id -u)" = 0 ]; then
    cd /
    exec runuser -u postgres -- env PG_CONFIG="${PG_CONFIG:-}" SB_PORT="$SB_PORT" \
      PATH="$PATH" bash "$@"
  fi
}

pq() {  # pq <server 0|1|2> [psql args...]
  local i=$1; shift
  psql -X -At -v ON_ERROR_STOP=1 -h "$SB_DIR" -p "${SB_PORTS[$i]}" -U postgres -d "$SB_DB" "$@"
}

sb_stop() {
  [ -n "$SB_DIR" ] || return 0
  for d in s2 s1 p; do
    [ -f "$SB_DIR/$d/postmaster.pid" ] && "$SB_BIN/pg_ctl" -D "$SB_DIR/$d" -m immediate stop >/dev/null 2>&1
  done
  rm -rf "$SB_DIR"
  SB_DIR=
}

sb_start() {
  SB_DIR=$(mktemp -d /tmp/tokex-standby.XXXXXX)
  trap sb_stop EXIT
  "$SB_BIN/initdb" -D "$SB_DIR/p" -U postgres -A trust --no-sync >/dev/null || return 1
  cat >>"$SB_DIR/p/postgresql.conf" <<CONF
port = ${SB_PORTS[0]}
listen_addresses = '127.0.0.1'
unix_socket_directories = '$SB_DIR'
shared_preload_libraries = 'tokex'
wal_level = replica
max_wal_senders = 6
fsync = off
tokex.heartbeat_database = '$SB_DB'
tokex.heartbeat_interval = '200ms'
CONF
  "$SB_BIN/pg_ctl" -D "$SB_DIR/p" -l "$SB_DIR/p.log" -w start >/dev/null || return 1
  psql -X -q -h "$SB_DIR" -p "${SB_PORTS[0]}" -U postgres -d postgres -c "CREATE DATABASE $SB_DB" || return 1
  pq 0 -q <<'SQL' || return 1
CREATE EXTENSION tokex;
ALTER DATABASE tokex_sb SET tokex.issuer = 'https://tokex.standby.test';
SQL
  # the heartbeat worker connects at start: restart now that its database exists
  "$SB_BIN/pg_ctl" -D "$SB_DIR/p" -l "$SB_DIR/p.log" -w restart >/dev/null || return 1
  for s in 1 2; do
    "$SB_BIN/pg_basebackup" -h 127.0.0.1 -p "${SB_PORTS[0]}" -U postgres -D "$SB_DIR/s$s" \
      -R -X stream -c fast --no-sync || return 1
    cat >>"$SB_DIR/s$s/postgresql.conf" <<CONF
port = ${SB_PORTS[$s]}
cluster_name = 's$s'
hot_standby = on
hot_standby_feedback = on
CONF
    "$SB_BIN/pg_ctl" -D "$SB_DIR/s$s" -l "$SB_DIR/s$s.log" -w start >/dev/null || return 1
  done
  # both standbys stream before anyone relies on them
  for _ in $(seq 100); do
    [ "$(pq 0 -c "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")" = 2 ] && return 0
    sleep 0.1
  done
  echo "# the standbys did not start streaming" >&2
  return 1
}

# wait until every standby has replayed what the primary has written so far
sb_sync() {
  local lsn
  lsn=$(pq 0 -c "SELECT pg_current_wal_lsn()")
  for s in 1 2; do
    for _ in $(seq 200); do
      [ "$(pq "$s" -c "SELECT pg_last_wal_replay_lsn() >= '$lsn'")" = t ] && break
      sleep 0.05
    done
  done
}
