#!/usr/bin/env bash
# Memory of one backend over many exchanges with distinct tokens (issue:
# "the memory of a backend stays flat over 1M exchanges with distinct
# tokens (the cache is bounded)").  Not a test of speed: nothing is timed.
#
# One session exchanges, batch after batch, a subject token it has never
# presented before (an outside issuer's HS256 token with a fresh jti and a
# person of 1000; signed in SQL with pgcrypto's hmac) and the person's
# agent's actor token (also fresh), so every call misses the verified-token
# cache and adds to it; after each batch the script reads the backend's
# private resident memory (RssAnon from /proc/PID/status: VmRSS also counts
# the shared buffers it touched).  The cache keeps tokex.verified_token_cache
# entries (default 4096), so RssAnon must level off once it is full.
#
#   MEMORY_EXCHANGES (default 100000; 1000000 for the documented run)
#   MEMORY_BATCH     (default 10000) exchanges per statement
# Uses the server named by the PG* environment (tokex preloaded: the audit
# writer); creates and drops its own database.  Exits non-zero if an
# exchange is refused, or if RssAnon grew by more than MEMORY_SLACK_KB
# (default 2048) between the end of the second batch and the end of the run.
set -euo pipefail
total=${MEMORY_EXCHANGES:-100000}
batch=${MEMORY_BATCH:-10000}
slack=${MEMORY_SLACK_KB:-2048}
db=${BENCH_DB:-tokex_bench_mem}
q() { psql -X -q -At -v ON_ERROR_STOP=1 -d "$db" "$@"; }

dropdb --if-exists "$db"
createdb "$db"
trap 'dropdb --if-exists "$db" >/dev/null 2>&1 || true' EXIT

q >/dev/null <<'SQL'
CREATE EXTENSION pgcrypto;
CREATE EXTENSION tokex;
SET tokex.issuer = 'https://tokex.bench';
SELECT tokex.create_key('ES256');
SELECT tokex.trust_issuer('https://idp.bench',
  '{"keys":[{"kty":"oct","alg":"HS256","kid":"h1","k":"bWVtb3J5LWJlbmNoLXNlY3JldC0wMTIzNDU2Nzg5YWJjZGVm"}]}');
INSERT INTO tokex.identity (id, kind, issuer, subject)
  SELECT 'person-' || g, 'human', 'https://idp.bench', 'p' || g FROM generate_series(1, 1000) g;
INSERT INTO tokex.identity (id, kind, issuer, subject)
  SELECT 'agent-' || g, 'agent', 'https://idp.bench', 'a' || g FROM generate_series(1, 1000) g;
INSERT INTO tokex.resource (audience, scopes, token_ttl) VALUES ('calendar', '{calendar.read}', '5 minutes');
INSERT INTO tokex.delegation (principal, delegate, scopes)
  SELECT 'person-' || g, 'agent-' || g, '{calendar.read}' FROM generate_series(1, 1000) g;
INSERT INTO tokex.policy (effect, subject_kind, actor_kind) VALUES ('allow', 'human', 'agent');
SQL

# the session that exchanges: its pid, then batches, RssAnon after each
coproc PSQL { psql -X -q -At -v ON_ERROR_STOP=1 -d "$db" 2>&1; }
say() { echo "$1" >&"${PSQL[1]}"; }
ask() { say "$1"; read -r line <&"${PSQL[0]}"; echo "$line"; }
say "SET tokex.issuer = 'https://tokex.bench';"
say "CREATE FUNCTION pg_temp.b64(b bytea) RETURNS text LANGUAGE sql IMMUTABLE AS
  \$\$ SELECT translate(rtrim(encode(b, 'base64'), '='), E'+/\\n', '-_') \$\$;"
say "CREATE FUNCTION pg_temp.hs(claims jsonb) RETURNS text LANGUAGE sql AS \$\$
  SELECT s || '.' || pg_temp.b64(hmac(convert_to(s, 'UTF8'), decode('bWVtb3J5LWJlbmNoLXNlY3JldC0wMTIzNDU2Nzg5YWJjZGVm', 'base64'), 'sha256'))
    FROM (SELECT pg_temp.b64('{\"alg\":\"HS256\",\"typ\":\"JWT\",\"kid\":\"h1\"}') || '.' ||
                 pg_temp.b64(convert_to(claims::text, 'UTF8')) AS s) x \$\$;"
pid=$(ask "SELECT pg_backend_pid();")
rss() { awk '/^RssAnon/ {print $2}' "/proc/$pid/status"; }
echo "# backend $pid: $total exchanges in batches of $batch, tokex.verified_token_cache = $(q -c 'SHOW tokex.verified_token_cache')"
echo "# exchanges  RssAnon_kB  granted_in_batch"
echo "0 $(rss) -"
done_n=0 second=
while [ "$done_n" -lt "$total" ]; do
  ok=$(ask "SELECT count(*) FILTER (WHERE r ? 'access_token') FROM (
    SELECT tokex.exchange(
             pg_temp.hs(jsonb_build_object('iss', 'https://idp.bench', 'sub', 'p' || (1 + g % 1000),
                        'jti', gen_random_uuid(), 'iat', extract(epoch FROM now())::bigint, 'exp', 9999999999,
                        'may_act', jsonb_build_object('iss', 'https://idp.bench', 'sub', 'a' || (1 + g % 1000)))),
             'urn:ietf:params:oauth:token-type:jwt',
             pg_temp.hs(jsonb_build_object('iss', 'https://idp.bench', 'sub', 'a' || (1 + g % 1000),
                        'jti', gen_random_uuid(), 'iat', extract(epoch FROM now())::bigint, 'exp', 9999999999)),
             'urn:ietf:params:oauth:token-type:jwt', audience => 'calendar') AS r
      FROM generate_series($done_n + 1, $done_n + $batch) g) x;")
  done_n=$((done_n + batch))
  now=$(rss)
  echo "$done_n $now $ok"
  [ "$ok" = "$batch" ] || { echo "not every exchange was granted: $ok of $batch" >&2; exit 1; }
  [ "$done_n" -eq $((2 * batch)) ] && second=$now
done
say '\q'
if [ -n "$second" ]; then
  growth=$((now - second))
  echo "# RssAnon after batch 2: $second kB, at the end: $now kB, growth: $growth kB (limit $slack)"
  [ "$growth" -le "$slack" ] || { echo "backend memory grew by $growth kB" >&2; exit 1; }
fi
