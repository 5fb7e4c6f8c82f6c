#!/usr/bin/env bash
# Without tokex in shared_preload_libraries there is no audit writer, so no
# token's audit row could be committed before the token leaves the call:
# tokex then issues no token at all (a single statement is no safer: a DO
# block can ROLLBACK after the call, an error message can carry the token).
# A denial hands out nothing and is still answered and audited.  Also: a
# tokex.* setting that a role SETs before the library is loaded in its
# backend (a placeholder) never reaches tokex's SQL.
#
# Runs in a throwaway cluster of its own, started without preloading tokex
# (pg_virtualenv; needs tokex installed).  TAP output.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ -z "${TOKEX_NOPRELOAD_INNER:-}" ]; then
  exec env -u PGHOST -u PGPORT -u PGDATABASE -u PGUSER -u PGPASSWORD TOKEX_NOPRELOAD_INNER=1 \
    pg_virtualenv -t -v 15 bash "$0"
fi

. test/tap.sh
q() { psql -X -q -At -v ON_ERROR_STOP=1 -d tokex_np "$@"; }

echo "1..8"
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
refused() {  # refused <sql> <description>
  local err
  err=$(q -v VERBOSITY=verbose 2>&1 <<<"$1" || true)
  ok "$(grep -q '55000: tokex issues tokens only when it is in shared_preload_libraries' <<<"$err"; echo $?)" "$2"
}
refused "SELECT tokex.jwt_sign('{\"sub\": \"alice\"}');" "jwt_sign is refused, even as a single statement (55000)"
refused "SELECT tokex.identity_token('agent-1');" "identity_token is refused"
refused "SELECT tokex.start_session('alice', 'agent-1');" "start_session is refused"
refused "DO \$\$ BEGIN PERFORM tokex.jwt_sign('{\"sub\": \"alice\"}'); ROLLBACK; END \$\$;" \
        "a DO block that would roll back after the call gets no token either"
is "$(q -c "SELECT count(*) FROM tokex.audit WHERE decision = 'granted'")" "0" "no token was issued, so no granted row"

r=$(q <<'SQL'
BEGIN;
SELECT tokex.exchange('not.a.token', 'urn:ietf:params:oauth:token-type:jwt', audience => 'calendar')->>'error';
SELECT count(*) FROM tokex.audit WHERE operation = 'exchange' AND decision = 'denied';
COMMIT;
SQL
)
is "$r" $'invalid_grant\n1' "a denial, even inside a transaction block, is answered, not raised, and audited in it"

# A placeholder: the role SETs tokex.issuer before anything loaded tokex in
# its backend.  The metadata (plpgsql, SECURITY DEFINER) must still name the
# configured issuer.
q <<'SQL'
CREATE ROLE np_web NOLOGIN;
GRANT tokex_web TO np_web;
SQL
iss=$(q -c "SET ROLE np_web" -c "SET tokex.issuer = 'https://evil.test'" \
        -c "SELECT tokex_api.oauth_authorization_server()->>'issuer'" 2>/dev/null | tail -1)
is "$iss" "https://tokex.test" \
   "a tokex.issuer placeholder a role SET before tokex loaded does not reach tokex's SQL"

dropdb tokex_np
echo "# $((n - failed)) passed, $failed failed"
[ $failed -eq 0 ]
