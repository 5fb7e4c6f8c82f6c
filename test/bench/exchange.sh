#!/usr/bin/env bash
# Benchmark (not a test: nothing asserts timing) of the authorizer paths:
#   - tokex.exchange with distinct ES256 subject and actor tokens (person +
#     agent credential), durable settings (fsync, synchronous_commit on),
#     8 clients on 2 cores; p50/p99 latency from pgbench's per-transaction log;
#   - tokex.exchange with a session credential as the subject token;
#   - tokex.introspect of active and of revoked tokens;
#   - tokex_api.token as PostgREST calls it (BEGIN; set_config x4; call;
#     read response.*; COMMIT), against plain tokex.exchange;
#   - the translation formats: an exchange for a reference-token resource
#     (nothing signed: its floor is 2 verifies + the insert) and the
#     introspection of those reference tokens (no crypto: bound by a
#     one-row primary-key read transaction);
# and, in the same run, `openssl speed -multi 2` for ES256, giving the crypto
# bound: an exchange costs 2 verifies + 1 sign, an introspection 1 verify;
# and PostgreSQL's own durable one-row-insert transaction (pgbench, same
# clients).  The floor of an exchange is its crypto plus that transaction:
# 1 / (1/crypto_bound + 1/insert_rate).
#
# Uses the server named by the PG* environment; creates and drops its own
# database.  BENCH_SECONDS (default 15) per pgbench run; BENCH_ONLY=exchange
# runs only the plain exchange and the floor (test/bench/writer.sh uses it to
# compare the audit writer with a cluster that does not preload tokex).
set -euo pipefail
cd "$(dirname "$0")"

secs=${BENCH_SECONDS:-15}
db=${BENCH_DB:-tokex_bench_x}
clients=${BENCH_CLIENTS:-8}
pairs=2000
work=$(mktemp -d)
q() { psql -X -q -At -v ON_ERROR_STOP=1 -d "$db" "$@"; }

dropdb --if-exists "$db"
createdb "$db"
trap 'dropdb --if-exists "$db" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

[ "$(q -c 'SHOW fsync')" = on ] && [ "$(q -c 'SHOW synchronous_commit')" = on ] ||
  { echo "benchmark needs fsync and synchronous_commit on" >&2; exit 1; }

# -- fixtures: $pairs people each delegating to one agent; distinct tokens ----
q <<SQL
CREATE EXTENSION tokex;
ALTER DATABASE "$db" SET tokex.issuer = 'https://tokex.bench';
SET tokex.issuer = 'https://tokex.bench';
SELECT tokex.create_key('ES256');
INSERT INTO tokex.identity (id, kind) SELECT 'person-' || g, 'human' FROM generate_series(1, $pairs) g;
INSERT INTO tokex.identity (id, kind) SELECT 'agent-' || g, 'agent' FROM generate_series(1, $pairs) g;
INSERT INTO tokex.resource (audience, scopes, token_ttl) VALUES ('calendar', '{calendar.read,calendar.write}', '5 minutes');
INSERT INTO tokex.resource (audience, scopes, token_ttl, token_format) VALUES ('mcp', '{calendar.read}', '5 minutes', 'reference');
INSERT INTO tokex.delegation (principal, delegate, scopes)
  SELECT 'person-' || g, 'agent-' || g, '{calendar.read,calendar.write}' FROM generate_series(1, $pairs) g;
INSERT INTO tokex.policy (effect, subject_kind, actor_kind) VALUES ('allow', 'human', 'agent');
CREATE TABLE bench_floor (id bigserial PRIMARY KEY, v text NOT NULL);
CREATE TABLE bench_tokens (id int PRIMARY KEY, st text, at text, session text, access text, revoked text, ref text);
INSERT INTO bench_tokens (id, st, at, session)
  SELECT g,
         tokex.jwt_sign(jsonb_build_object('sub', 'person-' || g, 'exp', 9999999999,
                                           'may_act', jsonb_build_object('sub', 'agent-' || g))),
         tokex.jwt_sign(jsonb_build_object('sub', 'agent-' || g, 'exp', 9999999999)),
         (tokex.start_session('person-' || g, 'agent-' || g, NULL, '1 day'))->>'session_token'
    FROM generate_series(1, $pairs) g;
UPDATE bench_tokens SET access = (tokex.exchange(st, 'urn:ietf:params:oauth:token-type:jwt', at,
                                  'urn:ietf:params:oauth:token-type:jwt', audience => 'calendar'))->>'access_token';
UPDATE bench_tokens SET ref = (tokex.exchange(st, 'urn:ietf:params:oauth:token-type:jwt', at,
                               'urn:ietf:params:oauth:token-type:jwt', audience => 'mcp'))->>'access_token';
UPDATE bench_tokens SET revoked = access WHERE id % 2 = 0;
SELECT tokex.revoke_token(revoked, 'bench') FROM bench_tokens WHERE revoked IS NOT NULL;
DO \$\$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tokex_bench_anon') THEN
  CREATE ROLE tokex_bench_anon NOLOGIN; END IF; END \$\$;
GRANT tokex_web TO tokex_bench_anon;
GRANT SELECT ON bench_tokens TO tokex_bench_anon;
SQL
secret=$(q -c "SET tokex.issuer = 'https://tokex.bench'; SELECT tokex.register_client('bench-app')" | tail -1)
[ "$(q -c "SELECT count(*) FROM bench_tokens WHERE access IS NULL")" = 0 ] || { echo "fixture exchange failed" >&2; exit 1; }

# URNs travel as variables: pgbench would read ':ietf' inside a literal as one
cat > "$work/insert.pgbench" <<'P'
INSERT INTO bench_floor (v) VALUES ('one durable row');
P
cat > "$work/exchange.pgbench" <<'P'
\set i random(1, :pairs)
SELECT tokex.exchange(st, :jwt, at, :jwt,
                      audience => 'calendar', scope => 'calendar.read')->>'error' FROM bench_tokens WHERE id = :i;
P
cat > "$work/reference.pgbench" <<'P'
\set i random(1, :pairs)
SELECT tokex.exchange(st, :jwt, at, :jwt,
                      audience => 'mcp', scope => 'calendar.read')->>'error' FROM bench_tokens WHERE id = :i;
P
cat > "$work/introspect_reference.pgbench" <<'P'
\set i random(1, :pairs)
SELECT tokex.introspect(ref)->'active' FROM bench_tokens WHERE id = :i;
P
cat > "$work/select.pgbench" <<'P'
\set i random(1, :pairs)
SELECT v FROM bench_floor WHERE id = :i;
P
cat > "$work/session.pgbench" <<'P'
\set i random(1, :pairs)
SELECT tokex.exchange(session, :jwt, at, :jwt,
                      audience => 'calendar', scope => 'calendar.read')->>'error' FROM bench_tokens WHERE id = :i;
P
cat > "$work/introspect_active.pgbench" <<'P'
\set i random(1, :pairs / 2) * 2 - 1
SELECT tokex.introspect(access)->'active' FROM bench_tokens WHERE id = :i;
P
cat > "$work/introspect_revoked.pgbench" <<'P'
\set i random(1, :pairs / 2) * 2
SELECT tokex.introspect(revoked)->'active' FROM bench_tokens WHERE id = :i;
P
cat > "$work/http.pgbench" <<'P'
\set i random(1, :pairs)
BEGIN;
SELECT set_config('role', 'tokex_bench_anon', true),
       set_config('request.headers', '{"content-type":"application/x-www-form-urlencoded"}', true),
       set_config('request.method', 'POST', true), set_config('request.path', '/rpc/token', true);
SELECT tokex_api.token(grant_type := :grant,
                       subject_token := st, subject_token_type := :jwt,
                       actor_token := at, actor_token_type := :jwt,
                       audience := 'calendar', scope := 'calendar.read',
                       client_id := 'bench-app', client_secret := :secret)->>'error'
  FROM bench_tokens WHERE id = :i;
SELECT current_setting('response.status', true), current_setting('response.headers', true);
COMMIT;
P

# run NAME SCRIPT -> "tps p50_ms p99_ms"
run() {
  local name=$1 script=$2 out
  rm -f "$work"/pgbench_log.*
  out=$(cd "$work" && PGDATABASE=$db pgbench -n -M prepared -c "$clients" -j 2 -T "$secs" -l \
          -D pairs=$pairs -D secret="$secret" \
          -D jwt=urn:ietf:params:oauth:token-type:jwt -D grant=urn:ietf:params:oauth:grant-type:token-exchange -f "$script" 2>&1) || { echo "$out" >&2; return 1; }
  if grep -Eq '^number of failed transactions: [1-9]' <<<"$out"; then echo "$out" >&2; return 1; fi
  local tps=$(sed -nE 's/^tps = ([0-9.]+) \(without initial connection time\)$/\1/p' <<<"$out")
  # per-transaction log: client tx_no time_us script_no epoch epoch_us
  local pct=$(cat "$work"/pgbench_log.* | awk '{print $3}' | sort -n |
              awk '{a[NR]=$1} END {printf "%.2f %.2f", a[int(NR*0.50)]/1000, a[int(NR*0.99)]/1000}')
  echo "$tps $pct"
}

# errors would only measure refusals: every measured call must succeed
check() {
  [ "$(q -c "SELECT count(*) FROM tokex.audit WHERE decision = 'denied'")" = 0 ] ||
    { q -c "SELECT error, reason, count(*) FROM tokex.audit WHERE decision='denied' GROUP BY 1,2" >&2; exit 1; }
}

preloaded=$(q -c 'SHOW shared_preload_libraries' | grep -c tokex || true)
echo "running pgbench: $clients clients, 2 threads, ${secs}s each, fsync=on synchronous_commit=on," \
     "tokex $([ "$preloaded" = 1 ] && echo 'preloaded (audit writer)' || echo "not preloaded (audit row in the caller's transaction)")"
read -r f_tps f_p50 f_p99 < <(run insert insert.pgbench)
read -r x_tps x_p50 x_p99 < <(run exchange exchange.pgbench); check
if [ "${BENCH_ONLY:-}" != exchange ]; then
  read -r s_tps s_p50 s_p99 < <(run session session.pgbench); check
  read -r h_tps h_p50 h_p99 < <(run http http.pgbench); check
  read -r ia_tps ia_p50 ia_p99 < <(run introspect_active introspect_active.pgbench)
  read -r ir_tps ir_p50 ir_p99 < <(run introspect_revoked introspect_revoked.pgbench)
  read -r r_tps r_p50 r_p99 < <(run reference reference.pgbench); check
  read -r ri_tps ri_p50 ri_p99 < <(run introspect_reference introspect_reference.pgbench)
  read -r sel_tps sel_p50 sel_p99 < <(run select select.pgbench)
fi

echo "running openssl speed -multi 2 ecdsap256 (${secs}s)"
ossl=$(openssl speed -seconds "$secs" -multi 2 ecdsap256 2>/dev/null)
# "256 bits ecdsa (nistp256)   0.0000s   0.0001s  <sign/s>  <verify/s>"
read -r sign verify < <(grep -E 'ecdsa \(nistp256\)' <<<"$ossl" | tail -1 |
                        awk '{print $(NF-1), $NF}')
xbound=$(awk -v s="$sign" -v v="$verify" 'BEGIN {printf "%.0f", 1 / (2 / v + 1 / s)}')
ibound=$(awk -v v="$verify" 'BEGIN {printf "%.0f", v}')
floor=$(awk -v x="$xbound" -v f="$f_tps" 'BEGIN {printf "%.0f", 1 / (1 / x + 1 / f)}')
# a reference token is not signed: 2 verifies + the insert
rfloor=$(awk -v v="$verify" -v f="$f_tps" 'BEGIN {printf "%.0f", 1 / (2 / v + 1 / f)}')
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }

cat <<TABLE

OpenSSL ES256 on 2 cores: sign $sign/s, verify $verify/s; exchange crypto bound (2 verify + 1 sign) $xbound/s
durable one-row-insert transaction: $f_tps/s (p50 $f_p50 ms, p99 $f_p99 ms); exchange floor (crypto + that insert) $floor/s

| path | tokex/s | p50 ms | p99 ms | floor/s | ratio |
|---|---:|---:|---:|---:|---:|
| exchange (person token + agent token) | $x_tps | $x_p50 | $x_p99 | $floor | $(ratio "$x_tps" "$floor") |
TABLE
[ "${BENCH_ONLY:-}" = exchange ] && exit 0
cat <<TABLE
| exchange (session credential + agent token) | $s_tps | $s_p50 | $s_p99 | $floor | $(ratio "$s_tps" "$floor") |
| tokex_api.token via the PostgREST statement sequence | $h_tps | $h_p50 | $h_p99 | $floor | $(ratio "$h_tps" "$floor") |
| introspect, active token (bound: 1 verify) | $ia_tps | $ia_p50 | $ia_p99 | $ibound | $(ratio "$ia_tps" "$ibound") |
| introspect, revoked token (bound: 1 verify) | $ir_tps | $ir_p50 | $ir_p99 | $ibound | $(ratio "$ir_tps" "$ibound") |
| exchange for a reference-token resource (floor: 2 verify + insert) | $r_tps | $r_p50 | $r_p99 | $rfloor | $(ratio "$r_tps" "$rfloor") |
| introspect, reference token (bound: a one-row read transaction) | $ri_tps | $ri_p50 | $ri_p99 | $sel_tps | $(ratio "$ri_tps" "$sel_tps") |

HTTP face overhead vs plain exchange: $(awk -v a="$x_tps" -v b="$h_tps" 'BEGIN {printf "%.1f%%", (a - b) / a * 100}') fewer exchanges/s
TABLE
