#!/usr/bin/env bash
# tokex on hot standbys: one primary and two streaming standbys on loopback
# (test/standby/cluster.sh), all with tokex preloaded.  Proves that
#  - introspection, jwt_verify, the JWKS and the HTTP introspection endpoint
#    answer on a standby, read-only: nothing they do writes, notifies or
#    uses a sequence (a standby raises on any of those, and so does a READ
#    ONLY transaction on the primary), and no tokex worker starts there;
#  - what would need an audit row on a standby is refused clearly (25006),
#    except a refusal at the introspection endpoint: answered, logged;
#  - revocations and key revocations reach both standbys; the delay from
#    revocation commit to the first refusal on each standby is measured
#    (p50/p99 over $SB_TRIALS trials) with asynchronous replication and with
#    synchronous_commit = remote_apply to both; tokex.revocation_sync makes a
#    revocation wait for the standbys to apply it;
#  - with tokex.max_replica_lag, a standby whose replayed heartbeat is too
#    old (pg_wal_replay_pause) answers inactive and jwt_verify raises.
# TAP output.  Needs tokex installed for $PG_CONFIG's server (make install).
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/cluster.sh"
sb_reexec "$here/run.sh" "$@"
. "$here/../tap.sh"
TRIALS=${SB_TRIALS:-200}

sb_start || { echo "not ok 1 - the primary and two standbys start"; exit 1; }
ok 0 "a primary and two hot standbys start, both streaming"

# -- fixtures on the primary --------------------------------------------------
pq 0 -q >/dev/null <<'SQL'
SET tokex.issuer = 'https://tokex.standby.test';
SET tokex.secret_hash_iterations = 100000;
SELECT tokex.create_key('ES256');
INSERT INTO tokex.identity (id, kind) VALUES ('alice', 'human'), ('agent-1', 'agent');
INSERT INTO tokex.resource (audience, scopes) VALUES ('calendar', '{calendar.read}');
INSERT INTO tokex.delegation (principal, delegate, scopes) VALUES ('alice', 'agent-1', '{calendar.read}');
INSERT INTO tokex.policy (effect, subject_kind, actor_kind) VALUES ('allow', 'human', 'agent');
CREATE ROLE anon NOLOGIN;
GRANT tokex_web TO anon;
CREATE TABLE public.secret AS SELECT tokex.register_client('gateway', audiences => '{calendar}') AS s;
UPDATE tokex.client SET introspect_any = true WHERE client_id = 'gateway';
-- tokens for the latency trials: 1..TRIALS asynchronous, the rest synchronous
CREATE TABLE public.lat_token (i int PRIMARY KEY, token text);
SQL
sign() {  # an access token for alice (jwt_sign: admin-issued, audited, introspects active)
  pq 0 -c "SET tokex.issuer = 'https://tokex.standby.test'" \
       -c "SELECT tokex.jwt_sign(jsonb_build_object('sub', 'alice', 'aud', 'calendar', 'scope', 'calendar.read',
                                 'exp', extract(epoch FROM now() + interval '1 hour')::bigint) ${1:+, '$1'})" | tail -1
}
tok=$(sign)
tok_revoked=$(sign)
kid2=$(pq 0 -c "SET tokex.issuer = 'https://tokex.standby.test'" -c "SELECT tokex.create_key('ES256')" | tail -1)
tok_kid2=$(sign "$kid2")
pq 0 -q -c "SELECT tokex.revoke_token('$tok_revoked', 'test')"
pq 0 -q -v n="$TRIALS" >/dev/null <<'SQL'
SET tokex.issuer = 'https://tokex.standby.test';
INSERT INTO public.lat_token
SELECT i, tokex.jwt_sign(jsonb_build_object('sub', 'alice', 'aud', 'calendar',
                         'exp', extract(epoch FROM now() + interval '1 hour')::bigint))
  FROM generate_series(1, 2 * :n) i;
SQL
secret=$(pq 0 -c "SELECT s FROM public.secret")
basic=$(printf 'gateway:%s' "$secret" | base64 -w0)
sb_sync

http_introspect() {  # http_introspect <server> <token> <Authorization>: body|status, as PostgREST calls it
  pq "$1" -q -v tok="$2" -v auth="$3" <<'SQL'
BEGIN;
SELECT set_config('role', 'anon', true), set_config('request.method', 'POST', true),
       set_config('request.headers', json_build_object('authorization', :'auth')::text, true) \g /dev/null
SELECT tokex_api.introspect(token := :'tok') AS body \gset
SELECT coalesce(:'body'::jsonb->>'error', :'body'::jsonb->>'active') || '|'
       || coalesce(nullif(current_setting('response.status', true), ''), '200');
COMMIT;
SQL
}

# -- read paths on each standby ----------------------------------------------
jwks0=$(pq 0 -c "SELECT tokex.jwks()")
for s in 1 2; do
  is "$(pq $s -c "SELECT pg_is_in_recovery()")" t "s$s is a hot standby (in recovery)"
  is "$(pq $s -c "SELECT tokex.introspect('$tok')->>'active', tokex.introspect('$tok')->>'sub'")" "true|alice" \
     "s$s: tokex.introspect answers active for a live token"
  is "$(pq $s -c "SELECT tokex.introspect('$tok_revoked')")" '{"active": false}' \
     "s$s: ... and inactive for a revoked one"
  is "$(pq $s -c "SELECT tokex.jwt_verify('$tok', 'calendar')->>'sub'")" alice "s$s: tokex.jwt_verify verifies"
  is "$(pq $s -c "SELECT tokex.jwks()")" "$jwks0" "s$s: tokex.jwks() is the primary's"
  is "$(pq $s -q -c "SET role anon" -c "SELECT tokex_api.jwks()")" "$jwks0" "s$s: ... and so is GET /rpc/jwks (tokex_api.jwks)"
  is "$(http_introspect $s "$tok" "Basic $basic")" "true|200" \
     "s$s: POST /rpc/introspect (PostgREST replay, client_secret_basic) answers active"
  is "$(http_introspect $s "$tok" "Basic $(printf 'gateway:wrong' | base64 -w0)")" \
     "invalid_client|401" "s$s: a refused client is answered 401 invalid_client, not raised"
  ok "$(grep -q 'refusal at the introspection endpoint logged, not audited' "$SB_DIR/s$s.log"; echo $?)" \
     "s$s: ... and the refusal is in the standby's server log (it cannot write tokex.audit)"
  err=$(pq $s -v VERBOSITY=verbose -c "SET statement_timeout = '10s'" \
          -c "SELECT tokex.exchange('$tok', 'urn:ietf:params:oauth:token-type:jwt', audience => 'calendar')" 2>&1)
  ok "$(grep -q '25006: tokex decides and issues tokens only on the primary' <<<"$err"; echo $?)" \
     "s$s: tokex.exchange raises 25006 at once (no audit writer to wait for)"
  err=$(pq $s -v VERBOSITY=verbose -c "SET statement_timeout = '10s'" \
          -c "SELECT tokex.jwt_sign('{\"sub\": \"alice\"}')" 2>&1)
  ok "$(grep -q '25006: tokex decides and issues tokens only on the primary' <<<"$err"; echo $?)" \
     "s$s: tokex.jwt_sign raises 25006"
  is "$(pq $s -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'tokex%'")" 0 \
     "s$s: no tokex background worker runs on the standby (no audit writer, no heartbeat)"
done
is "$(pq 0 -c "BEGIN READ ONLY" -c "SELECT tokex.introspect('$tok')->>'active', tokex.jwt_verify('$tok')->>'sub',
                                          tokex.jwks() = '$jwks0'::jsonb" -c "COMMIT" | sed -n 2p)" "true|alice|t" \
   "on the primary the same calls succeed in a READ ONLY transaction (no write, NOTIFY or nextval)"
is "$(pq 0 -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'tokex heartbeat'")" 1 \
   "the primary runs the heartbeat worker (tokex.heartbeat_database)"
is "$(pq 0 -c "SELECT now() - at < interval '2 s' FROM tokex.heartbeat")" t "... and its heartbeat is fresh"

# -- revocation reaches the standbys -------------------------------------------
wait_inactive() {  # wait_inactive <server> <token>: 0 once introspection says inactive (5 s at most)
  for _ in $(seq 100); do
    [ "$(pq "$1" -c "SELECT tokex.introspect('$2')->>'active'")" = false ] && return 0
    sleep 0.05
  done
  return 1
}
pq 0 -q -c "SELECT tokex.revoke_token('$tok', 'standby test')"
for s in 1 2; do ok "$(wait_inactive $s "$tok"; echo $?)" "s$s: a revocation on the primary reaches the standby"; done

# a standby backend that cached the keys drops a key revoked on the primary
verify_until_refused() {  # in one backend: verifies, then waits for the refusal; prints what happened
  pq "$1" -v tok="$tok_kid2" <<'SQL' 2>&1
SELECT set_config('sb.tok', :'tok', false) \g /dev/null
DO $$
DECLARE deadline timestamptz := clock_timestamp() + interval '5 s';
BEGIN
  PERFORM tokex.jwt_verify(current_setting('sb.tok'));
  RAISE NOTICE 'verified';
  LOOP
    BEGIN
      PERFORM tokex.jwt_verify(current_setting('sb.tok'));
    EXCEPTION WHEN invalid_authorization_specification THEN
      RAISE NOTICE 'refused: %', SQLERRM; RETURN;
    END;
    EXIT WHEN clock_timestamp() > deadline;
    PERFORM pg_sleep(0.02);
  END LOOP;
  RAISE NOTICE 'still verifies';
END $$;
SQL
}
verify_until_refused 1 >"$SB_DIR/kv1" & v1=$!
verify_until_refused 2 >"$SB_DIR/kv2" & v2=$!
sleep 0.5
pq 0 -q -c "SELECT tokex.revoke_key('$kid2')"
wait $v1 $v2
for s in 1 2; do
  is "$(grep -o 'NOTICE:  [a-z]*' "$SB_DIR/kv$s" | tr '\n' ' ')" "NOTICE:  verified NOTICE:  refused " \
     "s$s: a backend that verified with a key refuses it once its revocation is replayed (key cache dropped)"
done

# -- revocation commit -> first refusal on each standby -------------------------
# Pollers on each standby introspect token i until it is inactive and print when;
# the revoker on the primary revokes tokens lo..hi one by one, 30 ms apart,
# printing the time just before COMMIT and the time COMMIT returned.
poll() {  # poll <server> <lo> <hi>
  pq "$1" -v lo="$2" -v hi="$3" <<'SQL' 2>&1
SELECT set_config('sb.lo', :'lo', false), set_config('sb.hi', :'hi', false) \g /dev/null
DO $$
DECLARE t text; deadline timestamptz;
BEGIN
  FOR n IN current_setting('sb.lo')::int..current_setting('sb.hi')::int LOOP
    SELECT token INTO t FROM public.lat_token WHERE lat_token.i = n;
    deadline := clock_timestamp() + interval '20 s';
    WHILE (tokex.introspect(t)->>'active')::boolean LOOP
      IF clock_timestamp() > deadline THEN RAISE NOTICE 'timeout %', n; RETURN; END IF;
      PERFORM pg_sleep(0.0005);
    END LOOP;
    RAISE NOTICE 'seen % %', n, extract(epoch FROM clock_timestamp());
  END LOOP;
END $$;
SQL
}
revoke_all() {  # revoke_all <lo> <hi> [sync]
  pq 0 -v lo="$1" -v hi="$2" -v sync="${3:-off}" <<'SQL' 2>&1
SELECT set_config('sb.lo', :'lo', false), set_config('sb.hi', :'hi', false),
       set_config('tokex.revocation_sync', :'sync', false) \g /dev/null
DO $$
DECLARE t text; t0 float8;
BEGIN
  FOR n IN current_setting('sb.lo')::int..current_setting('sb.hi')::int LOOP
    SELECT token INTO t FROM public.lat_token WHERE lat_token.i = n;
    PERFORM pg_sleep(0.03);
    PERFORM tokex.revoke_token(t, 'latency trial');
    t0 := extract(epoch FROM clock_timestamp());
    COMMIT;
    RAISE NOTICE 'rev % % %', n, t0, extract(epoch FROM clock_timestamp());
  END LOOP;
END $$;
SQL
}
percentiles() {  # stdin: one latency (ms) a line -> "p50 X ms, p99 Y ms, max Z ms (n N)"
  sort -n | awk '{ v[NR] = $1 } END {
    if (NR == 0) { print "no data"; exit }
    p50 = v[int((NR * 50 + 99) / 100)]; p99 = v[int((NR * 99 + 99) / 100)];
    printf "p50 %.2f ms, p99 %.2f ms, max %.2f ms (n %d)\n", p50, p99, v[NR], NR }'
}
measure() {  # measure <label> <lo> <hi> [sync]
  local label=$1 lo=$2 hi=$3 mode=${4:-off}
  poll 1 "$lo" "$hi" >"$SB_DIR/poll1" & local p1=$!
  poll 2 "$lo" "$hi" >"$SB_DIR/poll2" & local p2=$!
  sleep 0.5
  revoke_all "$lo" "$hi" "$mode" >"$SB_DIR/rev"
  wait $p1 $p2
  for s in 1 2; do
    local lat
    lat=$(awk 'FNR == NR && /NOTICE:  rev/ { t0[$3] = $4; tr[$3] = $5; next }
               /NOTICE:  seen/ && ($3 in t0) { printf "%.3f %.3f\n", ($4 - t0[$3]) * 1000, ($4 - tr[$3]) * 1000 }' \
            "$SB_DIR/rev" "$SB_DIR/poll$s")
    is "$(grep -c . <<<"$lat")" $((hi - lo + 1)) "$label: s$s refused every one of $((hi - lo + 1)) revoked tokens" \
      || { head -3 "$SB_DIR/rev" "$SB_DIR/poll$s" | sed 's/^/# /'; }
    echo "# $label: s$s commit -> first refusal: $(cut -d' ' -f1 <<<"$lat" | percentiles)"
    echo "# $label: s$s commit returned -> first refusal: $(cut -d' ' -f2 <<<"$lat" | percentiles)"
  done
}
measure "async" 1 "$TRIALS"

pq 0 -q -c "ALTER SYSTEM SET synchronous_standby_names = 'FIRST 2 (s1, s2)'" -c "SELECT pg_reload_conf()" >/dev/null
for _ in $(seq 50); do
  [ "$(pq 0 -c "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'")" = 2 ] && break
  sleep 0.1
done
is "$(pq 0 -c "SELECT string_agg(application_name || ':' || sync_state, ',' ORDER BY application_name) FROM pg_stat_replication")" \
   "s1:sync,s2:sync" "synchronous_standby_names = 'FIRST 2 (s1, s2)': both standbys are synchronous"
measure "remote_apply (tokex.revocation_sync)" $((TRIALS + 1)) $((2 * TRIALS)) on

# the property itself: once a revocation with tokex.revocation_sync returns, each standby refuses
fails=0
for i in $(seq 20); do
  t=$(sign)
  sb_sync
  pq 0 -q -c "SET tokex.revocation_sync = on" -c "SELECT tokex.revoke_token('$t', 'sync check')"
  for s in 1 2; do
    [ "$(pq $s -c "SELECT tokex.introspect('$t')->>'active'")" = false ] || fails=$((fails + 1))
  done
done
is "$fails" 0 "tokex.revocation_sync: right after each of 20 revocations returns, both standbys refuse the token"

# tokex.revocation_sync waits for apply, not only for the WAL to be flushed
t=$(sign); sb_sync
pq 1 -q -c "SELECT pg_wal_replay_pause()" >/dev/null
timeout 10 psql -X -q -h "$SB_DIR" -p "${SB_PORTS[0]}" -U postgres -d "$SB_DB" \
  -c "SELECT tokex.revoke_token('$t', 'paused, no sync')" >/dev/null 2>&1
ok $? "with s1's replay paused, a revocation without tokex.revocation_sync returns (synchronous_commit = on: flush only)"
t=$(sign)
PGAPPNAME=tokex_sync_probe pq 0 -c "SET tokex.revocation_sync = on" \
  -c "SELECT tokex.revoke_token('$t', 'paused, sync')" >"$SB_DIR/syncprobe" 2>&1 & probe=$!
sleep 1
is "$(pq 0 -c "SELECT wait_event FROM pg_stat_activity WHERE application_name = 'tokex_sync_probe'")" SyncRep \
   "... with tokex.revocation_sync it waits (SyncRep) until s1 has applied it"
pq 0 -q -c "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE application_name = 'tokex_sync_probe'" >/dev/null
wait $probe
ok "$(grep -q 'canceling wait for synchronous replication' "$SB_DIR/syncprobe"; echo $?)" \
   "... until cancelled (the revocation is then committed locally, with a WARNING)"
pq 1 -q -c "SELECT pg_wal_replay_resume()" >/dev/null
pq 0 -q -c "ALTER SYSTEM RESET synchronous_standby_names" -c "SELECT pg_reload_conf()" >/dev/null

# -- fail closed when a standby falls behind ------------------------------------
tok=$(sign)
sb_sync
lag() { PGOPTIONS="-c tokex.max_replica_lag=2s" pq "$1" -c "$2" 2>&1; }
is "$(lag 1 "SELECT tokex.introspect('$tok')->>'active'")" true \
   "tokex.max_replica_lag = 2s: a standby that keeps up answers active"
pq 1 -q -c "SELECT pg_wal_replay_pause()" >/dev/null
sleep 2.6
is "$(lag 1 "SELECT tokex.introspect('$tok')")" '{"active": false}' \
   "s1 paused (pg_wal_replay_pause) past the bound: introspection answers inactive"
err=$(PGOPTIONS="-c tokex.max_replica_lag=2s" pq 1 -v VERBOSITY=verbose -c "SELECT tokex.jwt_verify('$tok')" 2>&1)
ok "$(grep -q '55000: this standby is too far behind the primary to judge tokens' <<<"$err" \
      && grep -q 'DETAIL:  Its last replayed tokex heartbeat is from' <<<"$err"; echo $?)" \
   "... and jwt_verify raises 55000 with the heartbeat's age in DETAIL"
is "$(PGOPTIONS="-c tokex.max_replica_lag=2s" http_introspect 1 "$tok" "Basic $basic")" 'false|200' \
   "... and so does the HTTP introspection endpoint"
is "$(pq 1 -c "SELECT tokex.introspect('$tok')->>'active'")" true \
   "... without tokex.max_replica_lag the paused standby still answers active (the bound is what refuses)"
is "$(lag 2 "SELECT tokex.introspect('$tok')->>'active'")" true "s2, not paused, still answers active"
pq 1 -q -c "SELECT pg_wal_replay_resume()" >/dev/null
back=1
for _ in $(seq 50); do
  [ "$(lag 1 "SELECT tokex.introspect('$tok')->>'active'")" = true ] && { back=0; break; }
  sleep 0.1
done
ok $back "s1 resumed: it answers active again"

sb_stop
finish
