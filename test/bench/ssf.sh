#!/usr/bin/env bash
# Benchmark (not a test: nothing asserts timing) of the Shared Signals
# transmitter:
#   - what each kind of revocation costs its transaction when it kills
#     SSF_BENCH_TOKENS live tokens (default 10 000) held by 4 receivers, and
#     the same revocation with no stream (no events): identity, delegation,
#     session, a deny policy; each in a transaction rolled back after it, so
#     every kind meets the same tokens;
#   - delivery: one poll signing the SET of the largest event;
#   - the audit writer's side: inserting audit rows in batches of 64 (as the
#     writer does) with a stream for their audience (each row also tracked
#     in tokex.ssf_token) and without.
# The live tokens are granted audit rows written directly (as the audit
# writer would), so that setting up 10 000 needs no 10 000 exchanges.
#
# Uses the server named by the PG* environment; creates and drops its own
# database (SSF_BENCH_DB, default tokex_bench_ssf).  Smoke run:
#   SSF_BENCH_TOKENS=200 bash test/bench/ssf.sh
set -euo pipefail
n=${SSF_BENCH_TOKENS:-10000}
db=${SSF_BENCH_DB:-tokex_bench_ssf}
q() { psql -X -q -At -v ON_ERROR_STOP=1 -d "$db" "$@"; }

dropdb --if-exists "$db"
createdb "$db"
trap 'dropdb --if-exists "$db" >/dev/null 2>&1 || true' EXIT

q >/dev/null <<SQL
CREATE EXTENSION tokex;
ALTER DATABASE "$db" SET tokex.issuer = 'https://tokex.bench';
SET tokex.issuer = 'https://tokex.bench';
SELECT tokex.create_key();
INSERT INTO tokex.identity (id, kind) VALUES ('p', 'human'), ('a', 'agent'), ('q', 'human');
INSERT INTO tokex.resource (audience, scopes) SELECT 'r' || i, '{s}' FROM generate_series(1, 5) i;
INSERT INTO tokex.delegation (principal, delegate, scopes) VALUES ('p', 'a', '{s}'), ('q', 'a', '{s}');
INSERT INTO tokex.policy (effect, description) VALUES ('allow', 'all');
INSERT INTO tokex.ssf_stream (audience) SELECT 'r' || i FROM generate_series(1, 4) i;
INSERT INTO tokex.session (id, principal, agent, delegation_id, scopes, expires_at)
SELECT ('00000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid, 'p', 'a', 1, '{s}', now() + interval '1 hour'
  FROM generate_series(1, 2) i;
SQL
# $n live tokens of p by agent a, a quarter per receiver, half from session
# 1, and as many of q's (by the same agent) that only the agent's revocation kills
q >/dev/null <<SQL
INSERT INTO tokex.audit_event (exchange_id, decision, subject, actor, actor_chain, audience, scope, jti,
                               expires_at, delegation_ids, policy_ids, subject_sid, operation)
SELECT e, 'granted', who, 'a', '{a}', 'r' || (1 + (i % 4)), '{s}', e, now() + interval '1 hour',
       ARRAY[CASE who WHEN 'p' THEN 1 ELSE 2 END]::bigint[], '{1}',
       CASE WHEN who = 'p' AND i % 2 = 0 THEN '00000000-0000-0000-0000-000000000001' END, 'exchange'
  FROM (SELECT who, i, gen_random_uuid() AS e FROM unnest('{p,q}'::text[]) who, generate_series(1, $n) i) x;
SQL
echo "live tokens tracked: $(q -c 'SELECT count(*) FROM tokex.ssf_token') ($n of p, $n of q; 4 receivers)"

# ms of one statement inside a transaction that is rolled back; prep runs
# first, and the statement once before (rolled back to a savepoint), so plans
# and function bodies are cached as in a long-lived session
timed() {  # timed <prep sql> <statement>
  q <<SQL | tail -1
BEGIN;
SET LOCAL tokex.issuer = 'https://tokex.bench';
$1
SAVEPOINT warm;
$2;
ROLLBACK TO SAVEPOINT warm;
SELECT clock_timestamp() AS t0 \gset
$2;
SELECT round(extract(epoch FROM clock_timestamp() - :'t0'::timestamptz) * 1000, 1);
ROLLBACK;
SQL
}
nostreams='DELETE FROM tokex.ssf_stream;'
printf '\n%-34s %10s %12s %14s %10s\n' "revocation" "tokens" "events" "with SSF ms" "none ms"
row() {  # row <label> <statement> <tokens it kills>
  local with without ev
  with=$(timed '' "$2")
  without=$(timed "$nostreams" "$2")
  ev=$(q <<SQL | tail -1
BEGIN; SET LOCAL tokex.issuer = 'https://tokex.bench'; $2;
SELECT count(*) FROM tokex.ssf_event; ROLLBACK;
SQL
)
  printf '%-34s %10s %12s %14s %10s\n' "$1" "$3" "$ev" "$with" "$without"
}
row "revoke_identity (person)" "SELECT tokex.revoke_identity('p', 'bench')" "$n"
row "revoke_delegation" "SELECT tokex.revoke_delegation('p', 'a', 'bench')" "$n"
row "revoke_session" "SELECT tokex.revoke_session('00000000-0000-0000-0000-000000000001', 'bench')" "$((n / 2))"
row "deny policy (agent a on r1)" "INSERT INTO tokex.policy (effect, actor, audience) VALUES ('deny', 'a', 'r1')" "$((n / 2))"
row "revoke_identity (agent: p and q)" "SELECT tokex.revoke_identity('a', 'bench')" "$((2 * n))"

echo
echo "poll, one SET naming $((n / 4)) tokens (signed at delivery): $(timed \
  "SELECT tokex.revoke_identity('p', 'bench'); SELECT stream_id AS s FROM tokex.ssf_stream WHERE audience = 'r1' \\gset" \
  "SELECT tokex.ssf_poll(:'s', 1)") ms"

# the audit writer's side: $n rows in INSERTs of 64, with a stream for their
# audience and without
writer() {  # writer <audience>
  timed '' "DO \$\$ BEGIN FOR b IN 1..ceil($n / 64.0) LOOP
    INSERT INTO tokex.audit_event (exchange_id, decision, subject, actor, actor_chain, audience, scope, jti,
                                   expires_at, delegation_ids, policy_ids, operation)
    SELECT e, 'granted', 'q', 'a', '{a}', '$1', '{s}', e, now() + interval '1 hour', '{2}', '{1}', 'exchange'
      FROM (SELECT gen_random_uuid() AS e FROM generate_series(1, 64)) x;
  END LOOP; END \$\$"
}
w1=$(writer r1)
w0=$(writer r5)
echo "audit rows x $n, batches of 64: with a stream ${w1} ms, without ${w0} ms" \
     "(+$(awk -v a="$w1" -v b="$w0" -v n="$n" 'BEGIN { printf "%.1f", (a - b) * 1000 / n }') us per token)"
