#!/usr/bin/env bash
# Benchmark (not a test: nothing asserts timing) of the authorizer paths:
#   - tokex.exchange with distinct ES256 subject and actor tokens (person +
#     agent credential), durable settings (fsync, synchronous_commit on),
#     8 clients on 2 cores; p50/p99 latency from pgbench's per-transaction log;
#   - tokex.exchange with a session credential as the subject token;
#   - tokex.introspect of active and of revoked tokens;
#   - tokex_api.token as PostgREST calls it (BEGIN; set_config x4; call;
#     read response.*; COMMIT), against plain tokex.exchange;
#   - a DPoP-bound exchange (a fresh proof per call, made beforehand by
#     dpop-proofs.mjs: the floor adds one verify for the proof);
#   - the translation formats: an exchange for a reference-token resource,
#     one for a credential resource (a vaulted API key released, with a
#     transaction token beside it: 2 verifies + 1 sign + the insert, plus
#     the vault's decryption; a throwaway vault key when the server has none),
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
# database.  BENCH_LARGE=1 then grows the graph and the history (100k
# identities, 420k delegations, 10k policies naming a subject, an actor and
# an audience, 100k sessions, 100k revoked tokens, 2M audit rows) and runs
# the distinct-token exchange again.  BENCH_SECONDS (default 15) per pgbench run; BENCH_ONLY=exchange
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
INSERT INTO tokex.resource (audience, scopes, token_ttl, token_format) VALUES ('vaulted', '{calendar.read}', '5 minutes', 'credential');
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
# the credential vault needs a key: a throwaway one when the server has none
. ../vault/keys.sh
if [ -z "$(vault_sql -c 'SHOW tokex.vault_key_file')" ]; then
  vault_saved=$(vault_saved_settings); vault_dir=$(vault_mkdir)
  trap 'vault_restore "$vault_saved" "$vault_dir"; dropdb --if-exists "$db" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
  vault_write_key "$vault_dir/key" && vault_set tokex.vault_key_file "$vault_dir/key"
fi
q -c "SELECT tokex.store_credential('vaulted', 'bench-api-key-0123456789', kind => 'api_key')" >/dev/null
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
cat > "$work/dpop.pgbench" <<'P'
\set i random(1, :pairs)
SELECT tokex.exchange(t.st, :jwt, t.at, :jwt, audience => 'calendar', scope => 'calendar.read',
                      dpop_proof => (SELECT proof FROM bench_proofs WHERE id = (SELECT nextval('bench_proof_seq'))))->>'error'
  FROM bench_tokens t WHERE t.id = :i;
P
cat > "$work/credential.pgbench" <<'P'
\set i random(1, :pairs)
SELECT tokex.exchange(st, :jwt, at, :jwt,
                      audience => 'vaulted', scope => 'calendar.read')->>'error' FROM bench_tokens WHERE id = :i;
P
cat > "$work/reused.pgbench" <<'P'
\set i :client_id + 1
SELECT tokex.exchange(st, :jwt, at, :jwt,
                      audience => 'calendar', scope => 'calendar.read')->>'error' FROM bench_tokens WHERE id = :i;
P
cat > "$work/verify1.pgbench" <<'P'
\set i random(1, :pairs)
SELECT tokex.jwt_verify(at) IS NOT NULL FROM bench_tokens WHERE id = :i;
P
cat > "$work/decide1.pgbench" <<'P'
\set i random(1, :pairs)
SELECT error FROM tokex._decide_fast(ARRAY[:iss, :iss], ARRAY['person-' || :i, 'agent-' || :i],
                               ARRAY[now(), now()], 'calendar', NULL, '{calendar.read}', NULL, NULL, :iss,
                               NULL::bytea[], NULL::uuid, NULL::uuid[], NULL::text[], NULL::text[], now());
P
cat > "$work/decide1q.pgbench" <<'P'
\set i random(1, :pairs)
SELECT error FROM tokex._decide(ARRAY[:iss, :iss], ARRAY['person-' || :i, 'agent-' || :i],
                               ARRAY[now(), now()], 'calendar', NULL, '{calendar.read}', NULL, NULL, :iss,
                               NULL::bytea[], NULL::uuid, NULL::uuid[], NULL::text[], NULL::text[], now());
P
cat > "$work/sign1.pgbench" <<'P'
\set i random(1, :pairs)
SELECT length(tokex._sign(jsonb_build_object('sub', 'person-' || :i, 'exp', 9999999999), 'at+jwt'));
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

# run NAME SCRIPT [PGOPTIONS] [CLIENTS] -> "tps p50_ms p99_ms"
run() {
  local name=$1 script=$2 opts=${3:-} n=${4:-$clients} out
  rm -f "$work"/pgbench_log.*
  out=$(cd "$work" && PGOPTIONS="$opts" PGDATABASE=$db pgbench -n -M prepared -c "$n" -j "$(( n < 2 ? 1 : 2 ))" -T "$secs" -l \
          -D pairs=$pairs -D secret="$secret" \
          -D iss=https://tokex.bench -D jwt=urn:ietf:params:oauth:token-type:jwt -D grant=urn:ietf:params:oauth:grant-type:token-exchange -f "$script" 2>&1) || { echo "$out" >&2; return 1; }
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
# the fixtures settled as the large graph is below (their hint bits, their WAL checkpointed):
# both graphs measured in the same state
q -c "VACUUM ANALYZE" -c "CHECKPOINT" >/dev/null
read -r f_tps f_p50 f_p99 < <(run insert insert.pgbench)
# distinct tokens: 2000 pairs would all be cached after a few seconds, so
# this run turns the verified-token cache off; the reused case keeps it on
read -r x_tps x_p50 x_p99 < <(run exchange exchange.pgbench "-c tokex.verified_token_cache=0"); check
read -r xr_tps xr_p50 xr_p99 < <(run reused reused.pgbench); check
if [ "${BENCH_ONLY:-}" != exchange ]; then
  read -r s_tps s_p50 s_p99 < <(run session session.pgbench); check
  read -r h_tps h_p50 h_p99 < <(run http http.pgbench); check
  # cache off: each introspection verifies its token, as the floor counts it
  read -r ia_tps ia_p50 ia_p99 < <(run introspect_active introspect_active.pgbench "-c tokex.verified_token_cache=0")
  read -r ir_tps ir_p50 ir_p99 < <(run introspect_revoked introspect_revoked.pgbench "-c tokex.verified_token_cache=0")
  read -r r_tps r_p50 r_p99 < <(run reference reference.pgbench "-c tokex.verified_token_cache=0"); check
  read -r c_tps c_p50 c_p99 < <(run credential credential.pgbench "-c tokex.verified_token_cache=0"); check
  # one proof per call, all made now (iat within tokex.dpop_max_age, set long for the run)
  nproofs=$(( secs * 4000 + 10000 ))
  q -c "ALTER DATABASE \"$db\" SET tokex.dpop_max_age = 3600" \
    -c "CREATE TABLE IF NOT EXISTS bench_proofs (id int PRIMARY KEY, proof text); TRUNCATE bench_proofs" \
    -c "DROP SEQUENCE IF EXISTS bench_proof_seq; CREATE SEQUENCE bench_proof_seq" >/dev/null
  node dpop-proofs.mjs "$nproofs" https://tokex.bench/rpc/token | q -c "COPY bench_proofs FROM STDIN"
  read -r dp_tps dp_p50 dp_p99 < <(run dpop dpop.pgbench "-c tokex.verified_token_cache=0"); check
  read -r ri_tps ri_p50 ri_p99 < <(run introspect_reference introspect_reference.pgbench)
  read -r sel_tps sel_p50 sel_p99 < <(run select select.pgbench)
  # one client, step by step (cache off: each verify is a signature check)
  nocache="-c tokex.verified_token_cache=0"
  read -r one_tps one_p50 one_p99 < <(run exchange1 exchange.pgbench "$nocache" 1); check
  read -r v1_tps v1_p50 v1_p99 < <(run verify1 verify1.pgbench "$nocache" 1)
  # as the exchange runs it: _decide inlined into one generic plan, kept (every
  # argument given: the default of "at" is volatile, which would stop the inlining)
  read -r d1_tps d1_p50 d1_p99 < <(run decide1 decide1.pgbench "$nocache" 1)
  read -r dq_tps dq_p50 dq_p99 < <(run decide1q decide1q.pgbench "$nocache -c plan_cache_mode=force_generic_plan" 1)
  read -r g1_tps g1_p50 g1_p99 < <(run sign1 sign1.pgbench "$nocache" 1)
  read -r i1_tps i1_p50 i1_p99 < <(run insert1 insert.pgbench "" 1)
fi

echo "running openssl speed -multi 2 ecdsap256 (${secs}s)"
ossl=$(openssl speed -seconds "$secs" -multi 2 ecdsap256 2>/dev/null)
# "256 bits ecdsa (nistp256)   0.0000s   0.0001s  <sign/s>  <verify/s>"
read -r sign verify < <(grep -E 'ecdsa \(nistp256\)' <<<"$ossl" | tail -1 |
                        awk '{print $(NF-1), $NF}')
xbound=$(awk -v s="$sign" -v v="$verify" 'BEGIN {printf "%.0f", 1 / (2 / v + 1 / s)}')
# an introspection: 1 verify + a one-row read-only transaction (select.pgbench)
ibound=$(awk -v v="$verify" -v r="${sel_tps:-0}" 'BEGIN {printf "%.0f", (r > 0 ? 1 / (1 / v + 1 / r) : v)}')
floor=$(awk -v x="$xbound" -v f="$f_tps" 'BEGIN {printf "%.0f", 1 / (1 / x + 1 / f)}')
# tokens already verified by this backend: 1 sign + the insert
rfloor_reused=$(awk -v s="$sign" -v f="$f_tps" 'BEGIN {printf "%.0f", 1 / (1 / s + 1 / f)}')
# a DPoP-bound exchange verifies the proof too: 3 verifies + 1 sign + the insert
dfloor=$(awk -v s="$sign" -v v="$verify" -v f="$f_tps" 'BEGIN {printf "%.0f", 1 / (3 / v + 1 / s + 1 / f)}')
# a reference token is not signed: 2 verifies + the insert
rfloor=$(awk -v v="$verify" -v f="$f_tps" 'BEGIN {printf "%.0f", 1 / (2 / v + 1 / f)}')
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }

cat <<TABLE

OpenSSL ES256 on 2 cores: sign $sign/s, verify $verify/s; exchange crypto bound (2 verify + 1 sign) $xbound/s
durable one-row-insert transaction: $f_tps/s (p50 $f_p50 ms, p99 $f_p99 ms); exchange floor (crypto + that insert) $floor/s

| path | tokex/s | p50 ms | p99 ms | floor/s | ratio |
|---|---:|---:|---:|---:|---:|
| exchange (person token + agent token), distinct tokens, cache off | $x_tps | $x_p50 | $x_p99 | $floor | $(ratio "$x_tps" "$floor") |
| exchange, each client reusing its tokens (floor: 1 sign + insert) | $xr_tps | $xr_p50 | $xr_p99 | $rfloor_reused | $(ratio "$xr_tps" "$rfloor_reused") |
TABLE
[ "${BENCH_ONLY:-}" = exchange ] && exit 0
cat <<TABLE
| exchange (session credential + agent token) | $s_tps | $s_p50 | $s_p99 | $floor | $(ratio "$s_tps" "$floor") |
| tokex_api.token via the PostgREST statement sequence | $h_tps | $h_p50 | $h_p99 | $floor | $(ratio "$h_tps" "$floor") |
| introspect, active token (floor: 1 verify + a read-only transaction; cache off) | $ia_tps | $ia_p50 | $ia_p99 | $ibound | $(ratio "$ia_tps" "$ibound") |
| introspect, revoked token (same floor; cache off) | $ir_tps | $ir_p50 | $ir_p99 | $ibound | $(ratio "$ir_tps" "$ibound") |
| exchange, DPoP-bound (a fresh proof each; floor: 3 verify + sign + insert; cache off) | $dp_tps | $dp_p50 | $dp_p99 | $dfloor | $(ratio "$dp_tps" "$dfloor") |
| exchange for a credential resource (vault release + txn token; floor: 2 verify + sign + insert) | $c_tps | $c_p50 | $c_p99 | $floor | $(ratio "$c_tps" "$floor") |
| exchange for a reference-token resource (floor: 2 verify + insert) | $r_tps | $r_p50 | $r_p99 | $rfloor | $(ratio "$r_tps" "$rfloor") |
| introspect, reference token (bound: a one-row read transaction) | $ri_tps | $ri_p50 | $ri_p99 | $sel_tps | $(ratio "$ri_tps" "$sel_tps") |

One client, mean ms per call (1000 / tps) of each step run alone, and of the whole exchange:
| step | ms |
|---|---:|
| verify one ES256 token (jwt_verify, cache off) | $(awk -v t="$v1_tps" 'BEGIN {printf "%.3f", 1000 / t}') |
| the decision for a grant (its fast path, tokex._decide_fast, as the exchange runs it) | $(awk -v t="$d1_tps" 'BEGIN {printf "%.3f", 1000 / t}') |
| (the decision query, tokex._decide, one kept generic plan: what a refusal costs) | $(awk -v t="$dq_tps" 'BEGIN {printf "%.3f", 1000 / t}') |
| sign one token (unaudited _sign) | $(awk -v t="$g1_tps" 'BEGIN {printf "%.3f", 1000 / t}') |
| a durable one-row insert transaction | $(awk -v t="$i1_tps" 'BEGIN {printf "%.3f", 1000 / t}') |
| the whole exchange | $(awk -v t="$one_tps" 'BEGIN {printf "%.3f", 1000 / t}') |
| rest (the exchange - 2 verify - decide - sign - insert: audit hand-over, JSON, SPI, calls) | $(awk -v a="$one_tps" -v v="$v1_tps" -v d="$d1_tps" -v g="$g1_tps" -v i="$i1_tps" 'BEGIN {printf "%.3f", 1000/a - 2000/v - 1000/d - 1000/g - 1000/i}') |

HTTP face overhead vs plain exchange: $(awk -v a="$x_tps" -v b="$h_tps" 'BEGIN {printf "%.1f%%", (a - b) / a * 100}') fewer exchanges/s
TABLE
[ -n "${BENCH_LARGE:-}" ] || exit 0

echo "growing the graph and the history (BENCH_LARGE)"
q >/dev/null <<SQL
SET tokex.issuer = 'https://tokex.bench';
INSERT INTO tokex.identity (id, kind) SELECT 'lp-' || g, 'human' FROM generate_series(1, 50000) g;
INSERT INTO tokex.identity (id, kind) SELECT 'la-' || g, 'agent' FROM generate_series(1, 50000) g;
INSERT INTO tokex.resource (audience, scopes) SELECT 'res-' || g, '{r}' FROM generate_series(1, 100) g;
INSERT INTO tokex.delegation (principal, delegate, scopes)
  SELECT 'lp-' || (g % 50000 + 1), 'la-' || ((g * 7) % 50000 + 1), '{r}' FROM generate_series(1, 420000) g;
INSERT INTO tokex.policy (effect, subject, actor, audience)
  SELECT 'allow', 'lp-' || g, 'la-' || g, 'res-' || (g % 100 + 1) FROM generate_series(1, 10000) g;
INSERT INTO tokex.session (id, principal, agent, delegation_id, scopes, expires_at)
  SELECT gen_random_uuid(), d.principal, d.delegate, d.id, '{r}', now() + interval '1 day'
    FROM tokex.delegation d WHERE d.principal LIKE 'lp-%' LIMIT 100000;
INSERT INTO tokex.revoked_token (issuer, jti, reason) SELECT 'https://idp.bench', 'jti-' || g, 'bench' FROM generate_series(1, 100000) g;
INSERT INTO tokex.audit_event (exchange_id, at, decision, subject, actor, actor_chain, audience, scope, jti, expires_at,
                               issued_token_type, operation)
  SELECT u, now() - (g || ' seconds')::interval, 'granted', 'lp-' || (g % 50000 + 1), 'la-' || (g % 50000 + 1),
         ARRAY['la-' || (g % 50000 + 1)], 'res-' || (g % 100 + 1), '{r}', u, now() - (g || ' seconds')::interval,
         'urn:ietf:params:oauth:token-type:access_token', 'exchange'
    -- ids as tokex makes them (UUID v7: the time in ms first, so ordered by time)
    FROM (SELECT g, encode(set_byte(overlay(uuid_send(gen_random_uuid())
                                            placing substring(int8send((extract(epoch FROM now() - (g || ' seconds')::interval)
                                                                        * 1000)::bigint) FROM 3 FOR 6) FROM 1 FOR 6),
                                    6, 112 + get_byte(uuid_send(gen_random_uuid()), 6) % 16), 'hex')::uuid AS u
            FROM generate_series(2000000, 1, -1) g) x;
-- the bulk load's aftermath (hint bits to set, a gigabyte of WAL to checkpoint) is not
-- the large graph's cost: settle it first, as autovacuum and the checkpointer would
VACUUM ANALYZE;
CHECKPOINT;
SQL
read -r l_tps l_p50 l_p99 < <(run exchange_large exchange.pgbench "-c tokex.verified_token_cache=0"); check
cat <<TABLE

| graph | exchanges/s (distinct tokens, cache off) | p50 ms | p99 ms |
|---|---:|---:|---:|
| small ($pairs pairs) | $x_tps | $x_p50 | $x_p99 |
| large (+100k identities, 420k delegations, 10k policies, 100k sessions, 100k revoked, 2M audit rows) | $l_tps | $l_p50 | $l_p99 |

large / small: $(ratio "$l_tps" "$x_tps")
TABLE
