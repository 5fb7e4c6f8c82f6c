#!/usr/bin/env bash
# Benchmark (nothing asserts timing): does an exchange, and the lookups of
# an audit row it and introspection make, cost the same with an empty audit
# as with millions of rows over many partitions?  (README: "Proving the
# audit trail", Partitions.)
#
#   - two copies of one database: an empty audit (this month's partition
#     and those ahead), and one with BENCH_ROWS audit_event rows (default
#     3000000) spread over BENCH_MONTHS monthly partitions made in the past
#     (default 30), written through the row trigger (seq, row_hash);
#   - pgbench runs tokex.exchange, then tokex.introspect of a token minted
#     now (its audit row found by jti in the partition of its iat), on each
#     database in turn, three rounds (on a shared machine, alternating keeps
#     the noise from favouring one);
#   - the cost of one lookup of an audit row by jti (tokex._audit_by_jti):
#     a hit in the token's month, and a miss (a jti no row has: every
#     partition's index is probed once).
#
# Uses the server named by the PG* environment (tokex preloaded); creates
# and drops its own database.  BENCH_SECONDS (default 10) per run,
# BENCH_CLIENTS (default 2).  Smoke test:
#   BENCH_SECONDS=2 BENCH_ROWS=100000 bash test/bench/partitions.sh
set -euo pipefail
cd "$(dirname "$0")"

secs=${BENCH_SECONDS:-10}
rows=${BENCH_ROWS:-3000000}
months=${BENCH_MONTHS:-30}
clients=${BENCH_CLIENTS:-2}
db=${BENCH_DB:-tokex_bench_partitions}
pairs=200
work=$(mktemp -d)
q() { psql -X -q -At -v ON_ERROR_STOP=1 -d "$db" "$@"; }

dropdb --if-exists "$db"
createdb "$db"
trap 'dropdb --force --if-exists "$db" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

q >/dev/null <<SQL
SET client_min_messages = warning;
CREATE EXTENSION tokex;
SELECT tokex.audit_partition_ahead(current => true);
ALTER DATABASE "$db" SET tokex.issuer = 'https://tokex.bench';
SET tokex.issuer = 'https://tokex.bench';
SELECT tokex.create_key('ES256');
INSERT INTO tokex.identity (id, kind) SELECT 'person-' || g, 'human' FROM generate_series(1, $pairs) g;
INSERT INTO tokex.identity (id, kind) SELECT 'agent-' || g, 'agent' FROM generate_series(1, $pairs) g;
INSERT INTO tokex.resource (audience, scopes) VALUES ('calendar', '{calendar.read,calendar.write}');
INSERT INTO tokex.delegation (principal, delegate, scopes)
  SELECT 'person-' || g, 'agent-' || g, '{calendar.read,calendar.write}' FROM generate_series(1, $pairs) g;
INSERT INTO tokex.policy (effect, subject_kind, actor_kind) VALUES ('allow', 'human', 'agent');
CREATE TABLE bench_tokens (id int PRIMARY KEY, st text, at text);
INSERT INTO bench_tokens (id, st, at)
  SELECT g, tokex.jwt_sign(jsonb_build_object('sub', 'person-' || g, 'exp', 9999999999)),
            tokex.jwt_sign(jsonb_build_object('sub', 'agent-' || g, 'exp', 9999999999))
    FROM generate_series(1, $pairs) g;
CREATE TABLE bench_minted (id int PRIMARY KEY, tok text);
SQL
cat > "$work/exchange.pgbench" <<'P'
\set i random(1, :pairs)
SELECT tokex.exchange(st, :jwt, at, :jwt, audience => 'calendar', scope => 'calendar.read')->>'error'
  FROM bench_tokens WHERE id = :i;
P
cat > "$work/introspect.pgbench" <<'P'
\set i random(1, :pairs)
SELECT tokex.introspect(tok)->>'active' FROM bench_minted WHERE id = :i;
P
mint() {  # access tokens minted now, for introspection
  q -c "TRUNCATE bench_minted" -c "INSERT INTO bench_minted
          SELECT id, tokex.exchange(st, 'urn:ietf:params:oauth:token-type:jwt', at,
                                    'urn:ietf:params:oauth:token-type:jwt', audience => 'calendar')->>'access_token'
            FROM bench_tokens"
}
run() {  # run <label> <script>
  local tps
  tps=$(pgbench -n -M prepared -c "$clients" -j 2 -T "$secs" -d "$db" -f "$work/$2.pgbench" \
          -D pairs=$pairs -D jwt=urn:ietf:params:oauth:token-type:jwt 2>&1 |
        sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p')
  printf '%-58s %10s /s\n' "$1" "${tps:-?}"
}
lookup() {  # the time of 2000 lookups by jti, one statement each: <label> <hit|miss>
  q <<SQL
CREATE TEMP TABLE j AS SELECT a.jti, a.at FROM tokex.audit_event a
 WHERE a.jti IS NOT NULL AND a.at >= now() - interval '1 day' ORDER BY a.at DESC LIMIT 2000;
DO \$\$
DECLARE r record; t0 timestamptz := clock_timestamp(); n int := 0; k int := 0; f boolean;
BEGIN
  FOR r IN SELECT * FROM j LOOP
    IF '$2' = 'hit' THEN
      SELECT true INTO f FROM tokex._audit_by_jti(r.jti, r.at - interval '1 hour', r.at + interval '1 hour');
    ELSE
      SELECT true INTO f FROM tokex._audit_by_jti(gen_random_uuid(), r.at - interval '1 hour', r.at + interval '1 hour');
    END IF;
    n := n + 1; k := k + COALESCE(f::int, 0);
  END LOOP;
  RAISE NOTICE '%', format('%-58s %7s us (%s of %s found)', '$1',
    round(extract(epoch FROM clock_timestamp() - t0) * 1e6 / greatest(n, 1), 1), k, n);
END
\$\$;
SQL
}
partitions() { q -c "SELECT count(*) FROM pg_inherits WHERE inhparent = 'tokex.audit_event'::regclass"; }
rowcount() { q -c "SELECT reltuples::bigint FROM pg_class WHERE oid = 'tokex.audit_event'::regclass"; }

# the same database twice: one left empty, one filled
dropdb --if-exists "$db"_full >/dev/null 2>&1
createdb -T "$db" "$db"_full
psql -X -q -d "$db"_full -c "ALTER DATABASE \"${db}_full\" SET tokex.issuer = 'https://tokex.bench'"
trap 'dropdb --force --if-exists "$db" >/dev/null 2>&1 || true; dropdb --force --if-exists "$db"_full >/dev/null 2>&1 || true
      rm -rf "$work"' EXIT
start=$(date +%s)
psql -X -q -At -v ON_ERROR_STOP=1 -d "$db"_full >/dev/null <<SQL
SET client_min_messages = warning;
SELECT tokex._audit_partition_create('audit_event', lo, lo + interval '1 month')
  FROM (SELECT (date_trunc('month', now() AT TIME ZONE 'UTC') - make_interval(months => m)) AT TIME ZONE 'UTC' AS lo
          FROM generate_series(1, $months) m) x;
INSERT INTO tokex.audit_event (exchange_id, at, decision, operation, subject, actor, audience, scope, jti,
                               expires_at, client_id, issued_token_type)
SELECT gen_random_uuid(), t, 'granted', 'exchange', 'person-' || (g % $pairs), 'agent-' || (g % $pairs),
       'calendar', '{calendar.read}', gen_random_uuid(), t + interval '5 minutes', 'bench',
       'urn:ietf:params:oauth:token-type:access_token'
  FROM generate_series(1, $rows) g,
       LATERAL (SELECT now() - make_interval(months => $months) + (now() - (now() - make_interval(months => $months))) * (g::float8 / $rows) - interval '1 day' AS t) x;
VACUUM (ANALYZE) tokex.audit_event;
CHECKPOINT;
SQL
full=$(psql -X -At -d "$db"_full -c "SELECT count(*) FROM tokex.audit_event")
echo "# filled in $(( $(date +%s) - start )) s"
echo "# $clients clients, $secs s per run, $(nproc) cores; runs alternate between the two databases"
for d in "$db" "$db"_full; do db=$d mint; done
base=$db
for round in 1 2 3; do
  for d in "$base" "$base"_full; do
    db=$d
    label="$(q -c "SELECT count(*) FROM tokex.audit_event") rows, $(partitions) partitions"
    run "round $round, $label: exchange" exchange
    run "round $round, $label: introspect" introspect
  done
done
for d in "$base" "$base"_full; do
  db=$d
  echo "# $(q -c "SELECT count(*) FROM tokex.audit_event") rows, $(partitions) partitions:"
  lookup "lookup by jti, hit (in the month of its iat)" hit 2>&1 | sed -n 's/^NOTICE:  //p'
  lookup "lookup by jti, miss (every partition probed)" miss 2>&1 | sed -n 's/^NOTICE:  //p'
done
