#!/usr/bin/env bash
# pg_dump / pg_restore keep tokex's rows (README: "pg_dump keeps the rows"):
# a revoked token stays revoked after a restore, and the revocation log is
# neither lost nor written twice (the trigger that logs revocations fires
# during the restore's COPY).  Uses the server the PG* environment names;
# creates and drops its own databases.  TAP output.
set -euo pipefail
cd "$(dirname "$0")/../.."
src=tokex_dump_src dst=tokex_dump_dst dump=$(mktemp)
trap 'dropdb --if-exists $src >/dev/null 2>&1; dropdb --if-exists $dst >/dev/null 2>&1; rm -f "$dump"' EXIT
. test/tap.sh
q() { local d=$1; shift; psql -X -q -At -v ON_ERROR_STOP=1 -d "$d" "$@"; }

echo "1..8"
for d in $src $dst; do dropdb --if-exists "$d" 2>/dev/null; done
createdb $src
q $src -c 'CREATE EXTENSION tokex' -c "ALTER DATABASE $src SET tokex.issuer = 'https://tokex.test'"
# the audit's partitions made at run time (no members of the extension),
# before the first row, so this month's rows are in one of them
q $src -c 'SELECT tokex.audit_partition_ahead(current => true)' >/dev/null
tok=$(q $src -c "SELECT tokex.create_key()" -c "SELECT tokex.jwt_sign('{\"sub\": \"alice\", \"exp\": 4102444800}')" | tail -1)
q $src -v t="$tok" <<<"SELECT tokex.revoke_token(:'t', 'leaked');" >/dev/null
# Shared Signals: a stream, alice's revoked tokens named in its event, bob's live
q $src >/dev/null <<'SQL'
INSERT INTO tokex.identity (id, kind) VALUES ('alice', 'human'), ('bob', 'human'), ('agent-1', 'agent');
INSERT INTO tokex.resource (audience, scopes) VALUES ('cal', '{r}');
INSERT INTO tokex.delegation (principal, delegate, scopes) VALUES ('alice', 'agent-1', '{r}'), ('bob', 'agent-1', '{r}');
INSERT INTO tokex.policy (effect) VALUES ('allow');
INSERT INTO tokex.ssf_stream (audience) VALUES ('cal');
SELECT tokex.exchange(tokex.start_session(p, 'agent-1')->>'session_token', 'urn:ietf:params:oauth:token-type:jwt',
                      tokex.identity_token('agent-1'), 'urn:ietf:params:oauth:token-type:jwt', audience => 'cal')
  FROM unnest('{alice,bob}'::text[]) p;
SELECT tokex.revoke_identity('alice', 'left');
SQL
# a row of a time no partition takes: the DEFAULT partition (a member of
# the extension: its rows are dumped as the extension's data); then all sealed
q $src >/dev/null <<'SQL'
INSERT INTO tokex.audit_event (exchange_id, at, decision, operation, subject)
VALUES (gen_random_uuid(), '2020-01-01', 'granted', 'client_credentials', 'alice');
SELECT tokex.seal_audit();
SQL
parts="SELECT string_agg(format('%s=%s', p, n), ' ' ORDER BY p) FROM (
         SELECT tableoid::regclass::text p, count(*) n FROM tokex.audit_event GROUP BY 1
         UNION ALL SELECT tableoid::regclass::text, count(*) FROM tokex.token_use GROUP BY 1) x"
parts_before=$(q $src -c "$parts")
blocks_before=$(q $src -c "SELECT count(*) FROM tokex.audit_block")
before=$(q $src -c "SELECT (SELECT count(*) FROM tokex.revoked_token) || '/' || (SELECT count(*) FROM tokex.revocation)")
ssf="SELECT (SELECT string_agg(jti || claims::text || jtis::text, ',') FROM tokex.ssf_event) || '/' ||
               (SELECT string_agg(jti::text, ',') FROM tokex.ssf_token)"
ssf_before=$(q $src -c "$ssf")

pg_dump -Fc -f "$dump" $src
createdb $dst
q $dst -c "ALTER DATABASE $dst SET tokex.issuer = 'https://tokex.test'"
restore=$(pg_restore -d $dst "$dump" 2>&1 || true)
is "$(grep -c 'error' <<<"$restore" || true)" "0" "pg_restore reports no error"
is "$(q $dst -c "SELECT (SELECT count(*) FROM tokex.revoked_token) || '/' || (SELECT count(*) FROM tokex.revocation)")" \
   "$before" "revoked tokens and the revocation log are restored as they were, no row lost or doubled"
is "$(q $dst -v t="$tok" <<<"SELECT tokex.introspect(:'t');")" '{"active": false}' \
   "the revoked token is still revoked in the restored database"
is "$(q $dst -c "SELECT count(*) FROM tokex.audit WHERE operation = 'jwt_sign'")" "1" "its audit row is restored"
is "$(q $dst -c "$ssf")" "$ssf_before" \
   "SSF: events restored as they were, live tokens rebuilt from the audit, those already named left out"
is "$(q $dst -c "$parts")" "$parts_before" \
   "the audit rows are restored into the same partitions (those made at run time, and DEFAULT): $parts_before"
is "$(q $dst -c "SELECT count(*) FROM tokex.audit_block") $(q $dst -c "SELECT count(*) FROM tokex.audit_verify()")" \
   "$blocks_before 0" "... with their $blocks_before sealed blocks, and the chain verifies in the restored database"
q $dst -c "SELECT tokex.jwt_sign('{\"sub\": \"bob\", \"exp\": 4102444800}')" >/dev/null
# (the background sealer may seal it first)
for _ in $(seq 1 50); do
  [ "$(q $dst -c "SELECT tokex.seal_audit()" -c "SELECT max(to_seq) >= (SELECT last_value FROM tokex.audit_seq) FROM tokex.audit_block")" = t ] && break
  sleep 0.2
done
is "$(q $dst -c "SELECT count(*) FROM tokex.audit_block") $(q $dst -c "SELECT count(*) FROM tokex.audit_verify()")" \
   "$((blocks_before + 1)) 0" "... and a new row is sealed onto the restored chain, which verifies"
echo "# $((n - failed)) passed, $failed failed"
[ $failed -eq 0 ]
