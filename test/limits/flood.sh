#!/usr/bin/env bash
# A flood of hostile tokens (random, truncated, altered, oversized, deeply
# nested, thousands of members, alg games, not base64url, act chains) through
# tokex.jwt_verify, and every seventh through tokex.exchange and
# tokex.introspect, in one session: the backend's private resident memory
# (RssAnon; VmRSS also counts the shared buffers it touched) stays flat and
# nothing comes back but the documented refusals (jwt_verify: SQLSTATE 28000;
# exchange: an RFC 8693 error object, never a raise; introspect:
# {"active": false}).  Then statement_timeout interrupts a long flood cleanly
# and the session goes on.
#
#   bash test/limits/flood.sh                    # CI: 20000 tokens
#   FLOOD_TOKENS=1000000 bash test/limits/flood.sh   # the README's run
#
# Uses the server the PG* environment names, as a superuser (the RSS is read
# from /proc through pg_read_file); creates and drops database tokex_flood.
# TAP output.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/../tap.sh"
db=${FLOOD_DB:-tokex_flood}
total=${FLOOD_TOKENS:-20000}
chunks=5
warm=2000
per=$(( (total + chunks - 1) / chunks ))
out=$(mktemp)
trap 'dropdb --if-exists --force "$db" >/dev/null 2>&1; rm -f "$out"' EXIT
q() { psql -X -q -At -v ON_ERROR_STOP=1 -d "$db" "$@"; }

start=$SECONDS
dropdb --if-exists --force "$db" >/dev/null 2>&1
if ! createdb "$db" || ! q >"$out" 2>&1 <<'SQL'
CREATE EXTENSION tokex;
SELECT format('ALTER DATABASE %I SET tokex.issuer = %L', current_database(), 'https://tokex.flood.test') \gexec
SET tokex.issuer = 'https://tokex.flood.test';
SELECT tokex.create_key() IS NOT NULL;
INSERT INTO tokex.identity (id, kind) VALUES ('alice', 'human'), ('asst', 'agent');
INSERT INTO tokex.resource (audience, scopes) VALUES ('cal', '{cal.read}');
INSERT INTO tokex.delegation (principal, delegate, scopes) VALUES ('alice', 'asst', '{cal.read}');
INSERT INTO tokex.policy (effect, subject_kind, actor_kind) VALUES ('allow', 'human', 'agent');
SQL
then
  echo "Bail out! cannot set up database $db"; sed 's/^/# /' "$out"; exit 1
fi
read -r valid actor < <(q -F ' ' -c "SELECT tokex.jwt_sign(jsonb_build_object('sub', 'alice', 'exp', 4102444800)),
                                            tokex.identity_token('asst', '1 hour')")

# one session: warm up (caches, plans, the allocator), then the flood in
# chunks, the resident set read after each; then a flood cut by statement_timeout
{
  echo "\\set ON_ERROR_STOP 1"
  echo "\\i $here/flood.sql"
  echo "CREATE TEMP TABLE outcome (k text, n bigint);"
  echo "SELECT setseed(0.42);"
  echo "SELECT pg_temp.flood(1000000, $warm, :'valid', :'actor') IS NOT NULL AS warm \\gset"
  echo "SELECT 'rss ' || pg_temp.rss();"
  for c in $(seq 0 $((chunks - 1))); do
    echo "INSERT INTO outcome SELECT key, value::bigint FROM jsonb_each_text(pg_temp.flood($((c * per)), $per, :'valid', :'actor'));"
    echo "SELECT 'rss ' || pg_temp.rss();"
  done
  cat <<'SQL'
SELECT 'outcomes ' || string_agg(k || ': ' || s, ', ' ORDER BY k) FROM (SELECT k, sum(n) s FROM outcome GROUP BY k) x;
SELECT 'answers ' || sum(n) FILTER (WHERE k LIKE 'jwt_verify %') FROM outcome;
SELECT 'undocumented ' || coalesce(string_agg(DISTINCT k, ', '), '') FROM outcome
 WHERE k NOT IN ('jwt_verify 28000', 'introspect active=false')
   AND k NOT IN (SELECT 'exchange ' || e FROM unnest(ARRAY['invalid_request', 'invalid_grant', 'invalid_target',
                                                          'invalid_scope', 'unauthorized_client']) e);
SQL
  echo "\\set ON_ERROR_STOP 0"
  echo "SET statement_timeout = '500ms';"
  echo "\\set VERBOSITY sqlstate"
  echo "SELECT pg_temp.flood(0, 100000000, :'valid', :'actor');"
  echo "RESET statement_timeout;"
  echo "SELECT 'rss ' || pg_temp.rss();"
  echo "SELECT 'after ' || count(*) FROM tokex.audit;"
} | q -v valid="$valid" -v actor="$actor" >"$out" 2>&1

mapfile -t rss < <(sed -n 's/^rss //p' "$out")
is "${#rss[@]}" $((chunks + 2)) "the flood ran to its end in one session ($total tokens after $warm to warm up)"
echo "# $(grep '^outcomes ' "$out")"
is "$(sed -n 's/^undocumented //p' "$out")" "" \
   "only documented refusals: jwt_verify 28000, exchange error objects, introspect inactive"
answers=$(sed -n 's/^answers //p' "$out")
ok "$([ "${answers:-0}" -ge "$total" ]; echo $?)" "every token was answered (${answers:-0})"

if [ ${#rss[@]} -ge 3 ]; then
  echo "# backend RssAnon (kB): after warm-up ${rss[0]}, after each chunk ${rss[*]:1:$chunks}, after the cut flood ${rss[-1]}"
  first=${rss[1]} last=${rss[$chunks]}
  grow=$(( last - first ))
  # flat: the last four fifths of the flood add less than 2 MB (a leak of even
  # 100 bytes per token would add 1.6 MB at 20000 tokens, 80 MB at 1M)
  ok "$([ $grow -lt 2048 ]; echo $?)" "backend memory flat over the flood: $first kB -> $last kB (${grow} kB)"
  ok "$([ $(( ${rss[-1]} - first )) -lt 4096 ]; echo $?)" "and after the flood cut by statement_timeout (${rss[-1]} kB)"
else
  ok 1 "backend memory flat (no measurements)"; ok 1 "(no measurements)"; sed 's/^/# /' "$out" | tail -20
fi
ok "$(grep -q '^ERROR:  57014' "$out"; echo $?)" "statement_timeout interrupts a long flood (57014, from a loop inside tokex or between calls)"
ok "$(grep -q '^after [0-9]' "$out"; echo $?)" "and the session goes on afterwards"
echo "# $((SECONDS - start)) s"
finish
