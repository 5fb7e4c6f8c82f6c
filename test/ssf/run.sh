#!/usr/bin/env bash
# Security Event Tokens survive a crash: the events a committed revocation
# made are rows, so after kill -9 of the postmaster and every backend, and
# crash recovery, each is still there, unchanged and pending, an
# acknowledgement committed before the crash still holds, and a revocation
# that had not committed left no event (and no revocation).
#
# Runs a throwaway cluster of its own (initdb of $PG_CONFIG's PostgreSQL,
# tokex preloaded, on a socket in a temporary directory; port
# $TOKEX_SSF_PORT, default 5467), and stops it by process id.  TAP output.
set -euo pipefail
cd "$(dirname "$0")/../.."
. test/tap.sh
bindir=$("${PG_CONFIG:-pg_config}" --bindir)
port=${TOKEX_SSF_PORT:-5467}
tmp=$(mktemp -d)
as_owner() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres "$tmp"
stop() { as_owner "$bindir/pg_ctl" -D "$tmp/data" -m immediate stop >/dev/null 2>&1 || true; }
trap 'stop; rm -rf "$tmp"' EXIT
start() { as_owner "$bindir/pg_ctl" -D "$tmp/data" -l "$tmp/log" -w -t 60 \
            -o "-p $port -k $tmp -c shared_preload_libraries=tokex -c fsync=on -c listen_addresses=''" start >/dev/null; }
as_owner "$bindir/initdb" -D "$tmp/data" -U postgres -A trust >/dev/null
start
export PGHOST=$tmp PGPORT=$port PGUSER=postgres PGDATABASE=tokex_ssf
unset PGPASSWORD
q() { psql -X -q -At -v ON_ERROR_STOP=1 "$@"; }
createdb tokex_ssf

q >/dev/null <<'SQL'
CREATE EXTENSION tokex;
ALTER DATABASE tokex_ssf SET tokex.issuer = 'https://tokex.test';
SET tokex.issuer = 'https://tokex.test';
SELECT tokex.create_key();
INSERT INTO tokex.identity (id, kind) VALUES ('alice', 'human'), ('bob', 'human'), ('agent-1', 'agent');
INSERT INTO tokex.resource (audience, scopes) VALUES ('cal', '{r}'), ('mail', '{r}');
INSERT INTO tokex.delegation (principal, delegate, scopes) VALUES ('alice', 'agent-1', '{r}'), ('bob', 'agent-1', '{r}');
INSERT INTO tokex.policy (effect) VALUES ('allow');
INSERT INTO tokex.ssf_stream (audience) VALUES ('cal'), ('mail');
SQL
q >/dev/null <<'SQL'
CREATE TEMP TABLE s AS SELECT p, tokex.start_session(p, 'agent-1')->>'session_token' AS tok
  FROM unnest('{alice,bob}'::text[]) p;
SELECT tokex.exchange(s.tok, 'urn:ietf:params:oauth:token-type:jwt', tokex.identity_token('agent-1'),
                      'urn:ietf:params:oauth:token-type:jwt', audience => aud)
  FROM s, unnest('{cal,mail,cal}'::text[]) aud;
SELECT tokex.revoke_identity('alice', 'left');
SQL
before=$(q -c "SELECT count(*) || ' ' || md5(string_agg(jti || claims::text || jtis::text, ',' ORDER BY id)) FROM tokex.ssf_event")
is "${before%% *}" "2" "before the crash: one event per stream for alice's revocation"
acked=$(q -c "SELECT jti FROM tokex.ssf_event e JOIN tokex.ssf_stream USING (stream_id) WHERE audience = 'mail'")
q -c "SELECT tokex.ssf_poll(stream_id, 10, ARRAY['$acked'::uuid]) FROM tokex.ssf_stream WHERE audience = 'mail'" >/dev/null

# bob's revocation, uncommitted when the server dies
mkfifo "$tmp/in"
psql -X -q -At <"$tmp/in" >"$tmp/bob.out" 2>&1 &
exec 3>"$tmp/in"
echo "BEGIN; SELECT tokex.revoke_identity('bob', 'left'); SELECT 'revoked', count(*) FROM tokex.ssf_event;" >&3
for _ in $(seq 100); do grep -q revoked "$tmp/bob.out" && break; sleep 0.1; done
is "$(grep -c '^revoked|4$' "$tmp/bob.out")" "1" "bob's open transaction has made its two events"

pm=$(head -1 "$tmp/data/postmaster.pid")
children=$(ps -o pid= --ppid "$pm" | tr '\n' ' ')
kill -9 "$pm" $children
for _ in $(seq 100); do kill -0 "$pm" 2>/dev/null || break; sleep 0.1; done
exec 3>&-
wait || true
if kill -0 "$pm" 2>/dev/null; then alive=1; else alive=0; fi
ok "$alive" "postmaster and backends killed with SIGKILL"
for _ in $(seq 50); do ps -o pid= --ppid "$pm" | grep -q . || break; sleep 0.1; done
start
ok "$(grep -q 'database system was interrupted\|was not properly shut down' "$tmp/log"; echo $?)" \
   "the restart ran crash recovery"

is "$(q -c "SELECT count(*) || ' ' || md5(string_agg(jti || claims::text || jtis::text, ',' ORDER BY id)) FROM tokex.ssf_event")" \
   "$before" "after recovery: the same events, unchanged"
is "$(q -c "SELECT count(*) FROM tokex.revocation WHERE target = 'bob'") $(q -c "SELECT status FROM tokex.identity WHERE id = 'bob'")" \
   "0 active" "the uncommitted revocation left nothing, no event"
is "$(q -c "SELECT count(*) FROM tokex.ssf_token t JOIN tokex.audit a USING (jti) WHERE a.subject = 'bob'")" "3" \
   "bob's live tokens are still tracked"
cal=$(q -c "SELECT tokex.ssf_poll(stream_id) FROM tokex.ssf_stream WHERE audience = 'cal'")
is "$(q -v r="$cal" <<<"SELECT json_typeof(:'r'::json->'sets'), (SELECT count(*) FROM json_object_keys(:'r'::json->'sets'))")" \
   "object|1" "the pending event is delivered after the crash"
is "$(q -v r="$cal" <<<"SELECT tokex.jwt_decode(value)->'payload'->>'aud' FROM json_each_text(:'r'::json->'sets')")" \
   "cal" "... as a SET for its receiver"
is "$(q -c "SELECT tokex.ssf_poll(stream_id)->>'sets' FROM tokex.ssf_stream WHERE audience = 'mail'")" "{}" \
   "the acknowledgement committed before the crash holds"
q -c "SELECT tokex.revoke_identity('bob', 'left again')" >/dev/null
is "$(q -c "SELECT count(*) FROM tokex.ssf_event WHERE claims->'sub_id'->>'sub' = 'bob'")" "2" \
   "revoking bob now makes its events"
finish
