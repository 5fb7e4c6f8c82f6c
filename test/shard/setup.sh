# The prototype's databases (test/shard/run.sh, test/bench/shard.sh; source
# it from the top of the tree): $N shard databases tokex_shard0.. with tokex
# and contrib/shard/shard.sql, one key each, a resource and an allow policy
# on every shard, and the router database tokex_router with PL/Proxy, the
# SQL/MED server tokex_shards (conninfo from the PG* environment) and
# contrib/shard/router.sql.  shard_setup creates them (dropping leftovers);
# they are dropped on EXIT.  q <db> [psql args] runs psql there.
N=4
shards=(); for i in $(seq 0 $((N - 1))); do shards+=("tokex_shard$i"); done
router=tokex_router
q() { local db=$1; shift; psql -X -At -q -v ON_ERROR_STOP=1 -d "$db" "$@"; }
cleanup() {
  for db in "$router" "${shards[@]}"; do
    psql -X -q -d postgres -c "ALTER DATABASE $db WITH ALLOW_CONNECTIONS true" >/dev/null 2>&1
    dropdb --if-exists --force "$db" >/dev/null 2>&1
  done
}
trap cleanup EXIT

shard_setup() {
  cleanup
  for i in $(seq 0 $((N - 1))); do
    db=${shards[$i]}
    createdb "$db" || return 1
    q "$db" >/dev/null <<SQL || return 1
CREATE EXTENSION tokex;
ALTER DATABASE $db SET tokex.issuer = 'https://tokex.shard.test';
ALTER DATABASE $db SET tokex_shard.id = '$i';
SQL
    q "$db" -f contrib/shard/shard.sql >/dev/null || return 1
    # global rows (resources, policy) the way the router would write them: on every shard
    q "$db" >/dev/null <<'SQL' || return 1
SELECT tokex.create_key('ES256');
INSERT INTO tokex.resource (audience, scopes) VALUES ('calendar', '{calendar.read}');
INSERT INTO tokex.policy (effect, subject_kind, actor_kind) VALUES ('allow', 'human', 'agent');
SQL
  done
  createdb "$router" || return 1
  conn() {  # libpq conninfo of a shard, from the PG* environment
    printf "dbname=%s%s%s%s%s" "$1" "${PGHOST:+ host=$PGHOST}" "${PGPORT:+ port=$PGPORT}" \
           "${PGUSER:+ user=$PGUSER}" "${PGPASSWORD:+ password=$PGPASSWORD}"
  }
  {
    echo "CREATE EXTENSION plproxy;"
    printf "CREATE SERVER tokex_shards FOREIGN DATA WRAPPER plproxy OPTIONS ("
    for i in $(seq 0 $((N - 1))); do printf "%sp%d '%s'" "$([ "$i" -gt 0 ] && echo ', ')" "$i" "$(conn "${shards[$i]}")"; done
    echo ");"
    echo "CREATE USER MAPPING FOR PUBLIC SERVER tokex_shards;"
  } | q "$router" >/dev/null || return 1
  q "$router" -f contrib/shard/router.sql >/dev/null || return 1
}
