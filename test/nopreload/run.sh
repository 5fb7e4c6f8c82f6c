#!/usr/bin/env bash
# Without tokex in shared_preload_libraries there is no audit writer, so a
# token's audit row can only commit with the caller's transaction: issuing a
# token inside a transaction block or subtransaction must be refused, while
# a single-statement call works and a denial is still answered and audited.
# Also: a tokex.* setting that a role SETs before the library is loaded in
# its backend (a placeholder) never reaches tokex's SQL.
#
# Runs in a throwaway cluster of its own, started without preloading tokex
# (pg_virtualenv; needs tokex installed).  TAP output.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ -z "${TOKEX_NOPRELOAD_INNER:-}" ]; then
  exec env -u PGHOST -u PGPORT -u PGDATABASE -u PGUSER -u PGPASSWORD TOKEX_NOPRELOAD_INNER=1 \
    pg_virtualenv -t -v 15 bash "$0"
fi

n=0 failed=0
ok() {  # ok <condition-exit-status> <description>
  n=$((n + 1))
  if [ "$1" -eq 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; failed=$((failed + 1)); fi
}
is() {  # is <have> <want> <description>
  n=$((n + 1))
  if [ "$1" == "$2" ]; then echo "ok $n - $3"
  else echo "not ok $n - $3"; echo "#   have: $1"; echo "#   want: $2"; failed=$((failed + 1)); fi
}
q() { psql -X -q -At -v ON_ERROR_STOP=1 -d tokex_np "$@"; }

echo "1..12"
createdb tokex_np
is "$(q -c 'SHOW shared_preload_libraries')" "" "tokex is not preloaded in this cluster"
q <<'SQL'
CREATE EXTENSION tokex;
ALTER DATABASE tokex_np SET tokex.issuer = 'https://tokex.test';
SQL
q >/dev/null <<'SQL'
SELECT tokex.create_key();
INSERT INTO tokex.identity (id, kind) VALUES ('alice', 'human'), ('agent-1', 'agent');
INSERT INTO tokex.resource (audience, scopes) VALUES ('calendar', '{calendar.read}');
INSERT INTO tokex.delegation (principal, delegate, scopes) VALUES ('alice', 'agent-1', '{calendar.read}');
INSERT INTO tokex.policy (effect, subject_kind, actor_kind) VALUES ('allow', 'human', 'agent');
SQL
st=$(q -c "SELECT tokex.jwt_sign(jsonb_build_object('sub', 'alice', 'exp', extract(epoch FROM now())::bigint + 600))")
at=$(q -c "SELECT tokex.identity_token('agent-1')")
ok $? "jwt_sign and identity_token work as single statements"
x="SELECT tokex.exchange(:'st', 'urn:ietf:params:oauth:token-type:jwt', :'at', 'urn:ietf:params:oauth:token-type:jwt', audience => 'calendar')"
granted0=$(q -c "SELECT count(*) FROM tokex.audit WHERE operation = 'exchange' AND decision = 'granted'")

r=$(q -v st="$st" -v at="$at" <<<"$x ? 'access_token';")
is "$r" "t" "an exchange as a single statement is granted"
is "$(q -c "SELECT count(*) FROM tokex.audit WHERE operation = 'exchange' AND decision = 'granted'")" \
   "$((granted0 + 1))" "... with its audit row committed"

err=$(q -v st="$st" -v at="$at" -v VERBOSITY=verbose 2>&1 <<SQL || true
BEGIN;
$x;
COMMIT;
SQL
)
ok "$(grep -q '25001: tokex cannot issue a token inside a transaction block' <<<"$err"; echo $?)" \
   "inside BEGIN ... COMMIT a grant is refused with SQLSTATE 25001"
is "$(q -c "SELECT count(*) FROM tokex.audit WHERE operation = 'exchange' AND decision = 'granted'")" \
   "$((granted0 + 1))" "... and no token was issued"

err=$(q 2>&1 <<SQL || true
SELECT set_config('x.st', '$st', false), set_config('x.at', '$at', false) \gset
DO \$\$ BEGIN
  PERFORM tokex.exchange(current_setting('x.st'), 'urn:ietf:params:oauth:token-type:jwt',
                         current_setting('x.at'), 'urn:ietf:params:oauth:token-type:jwt', 'calendar');
EXCEPTION WHEN division_by_zero THEN NULL;
END \$\$;
SQL
)
ok "$(grep -q 'tokex cannot issue a token inside a transaction block' <<<"$err"; echo $?)" \
   "inside an EXCEPTION block (a subtransaction) a grant is refused"

r=$(q -v st="$st" -v at="$at" <<SQL
BEGIN;
SELECT tokex.exchange(:'st', 'urn:ietf:params:oauth:token-type:jwt', :'at', 'urn:ietf:params:oauth:token-type:jwt',
                      audience => 'nowhere')->>'error';
SELECT count(*) FROM tokex.audit WHERE operation = 'exchange' AND decision = 'denied';
COMMIT;
SQL
)
is "$r" $'invalid_target\n1' "a denial inside a transaction block is answered, not raised, and audited in it"

for call in "tokex.jwt_sign('{\"sub\": \"alice\"}')" "tokex.start_session('alice', 'agent-1')" \
            "tokex.identity_token('agent-1')"; do
  err=$(q 2>&1 <<<"BEGIN; SELECT $call; COMMIT;" || true)
  ok "$(grep -q 'tokex cannot issue a token inside a transaction block' <<<"$err"; echo $?)" \
     "inside a transaction block $call is refused"
done

# A placeholder: the role SETs tokex.issuer before anything loaded tokex in
# its backend.  start_session (SECURITY DEFINER) must still sign as the
# configured issuer and name it in may_act.
q <<'SQL'
CREATE ROLE np_app NOLOGIN;
GRANT tokex_app TO np_app;
SQL
tok=$(q -c "SET ROLE np_app" -c "SET tokex.issuer = 'https://evil.test'" \
        -c "SELECT tokex.start_session('alice', 'agent-1')->>'session_token'" 2>/dev/null | tail -1)
is "$(q -v t="$tok" <<<"SELECT (tokex.jwt_decode(:'t')->'payload'->'may_act'->>'iss') || ' ' || (tokex.jwt_decode(:'t')->'payload'->>'iss');")" \
   "https://tokex.test https://tokex.test" \
   "a tokex.issuer placeholder a role SET before tokex loaded reaches neither may_act nor iss"

dropdb tokex_np
echo "# $((n - failed)) passed, $failed failed"
[ $failed -eq 0 ]
