#!/usr/bin/env bash
# Stage 2 prototype (docs/scale-out.md): four shard databases and a router
# database on the server the PG* environment names, PL/Proxy routing
# (contrib/shard/router.sql) over tokex in each shard (contrib/shard/shard.sql).
# Tests routing by the person (each exchange's audit row is on the person's
# shard and nowhere else), introspection routed by kid, the JWKS as the union
# of the shards' keys, a shard that is down (its people fail closed, the
# others go on), and a global agent revocation RUN ON ALL that waits,
# pending, for a shard that is down and is idempotent when retried.
# Needs tokex (preloaded) and PL/Proxy (postgresql-15-plproxy).  TAP output.
set -uo pipefail
cd "$(dirname "$0")/../.."
. test/tap.sh
. test/shard/setup.sh
shard_setup || exit 1

# -- people on their shards, agents everywhere ---------------------------------
people=(); for i in $(seq -w 1 16); do people+=("p$i"); done
is "$(q "$router" -c "SELECT count(*) FROM router.add_agent('agent-1') WHERE true" \
                  -c "SELECT count(*) FROM router.add_agent('agent-2') WHERE true" | tr '\n' ' ')" "4 4 " \
   "an agent is created on every shard (RUN ON ALL)"
for p in "${people[@]}"; do
  q "$router" -c "SELECT router.add_person('$p')" \
              -c "SELECT router.delegate('$p', 'agent-1', '{calendar.read}')" \
              -c "SELECT router.delegate('$p', 'agent-2', '{calendar.read}')" >/dev/null || exit 1
done
spread=$(q "$router" -c "SELECT count(DISTINCT hashtext(p) & $((N - 1))) FROM unnest(string_to_array('${people[*]}', ' ')) p")
ok "$([ "$spread" -ge 3 ]; echo $?)" "the 16 people hash to $spread of the $N shards"

# -- JWKS union and the kid map ------------------------------------------------
is "$(q "$router" -c "SELECT jsonb_array_length(router.jwks()->'keys'),
                             (SELECT count(DISTINCT k->>'kid') FROM jsonb_array_elements(router.jwks()->'keys') k)")" \
   "4|4" "the router's JWKS is the union of the shards' keys (one each, distinct kids)"
union_ok=0
for db in "${shards[@]}"; do
  kid=$(q "$db" -c "SELECT tokex.jwks()->'keys'->0->>'kid'")
  [ "$(q "$router" -c "SELECT router.jwks()->'keys' @> jsonb_build_array(jsonb_build_object('kid', '$kid'))")" = t ] \
    || union_ok=1
done
ok $union_ok "... it contains every shard's published key"
is "$(q "$router" -c "SELECT router.refresh_keys()")" 4 "router.refresh_keys maps each kid to its shard"

# -- exchanges routed by the person ---------------------------------------------
creds() {  # creds <person> <agent>: a session token and an actor token, from the person's shard
  q "$router" -c "SELECT router.session_token('$1', '$2') || ' ' || router.actor_token('$2', '$1')"
}
exch() {  # exch <session token> <actor token>: the exchange's response through the router
  q "$router" -c "SELECT router.exchange('$1', '$2', 'calendar', 'calendar.read')"
}
xchg() { local c; c=$(creds "$1" "$2") && exch $c; }
access_token() { sed -n 's/.*"access_token": "\([^"]*\)".*/\1/p'; }
declare -A tok cred
granted=0
for p in "${people[@]}"; do
  cred[$p]=$(creds "$p" agent-1)
  tok[$p]=$(exch ${cred[$p]} | access_token)
  [ -n "${tok[$p]}" ] && granted=$((granted + 1))
done
is "$granted" 16 "an exchange through the router is granted for each of the 16 people"
misrouted=0
for p in "${people[@]}"; do
  want=$(q "$router" -c "SELECT hashtext('$p') & $((N - 1))")
  have=$(q "$router" -c "SELECT string_agg(shard::text, ',') FROM router.counts('$p') WHERE audit_rows > 0")
  [ "$have" = "$want" ] || { misrouted=$((misrouted + 1)); echo "# $p: audit rows on shard(s) '$have', expected $want"; }
done
is "$misrouted" 0 "each person's audit rows (session, actor token, exchange) are on their shard and no other"
active=0
for p in "${people[@]}"; do
  [ "$(q "$router" -c "SELECT router.introspect('${tok[$p]}')->>'active'")" = true ] && active=$((active + 1))
done
is "$active" 16 "introspection through the router (routed by kid) finds every token active"
fake=eyJhbGciOiJFUzI1NiIsImtpZCI6Im5vLXN1Y2gta2V5In0.e30.c2ln   # kid "no-such-key"
is "$(q "$router" -c "SELECT router.introspect('$fake')")" '{"active": false}' \
   "a token whose kid no shard published is inactive, without asking a shard"

# -- a shard is down: its people fail closed, the others go on -------------------
down=$(q "$router" -c "SELECT hashtext('p01') & $((N - 1))")
other=""
for p in "${people[@]}"; do
  [ "$(q "$router" -c "SELECT hashtext('$p') & $((N - 1))")" != "$down" ] && { other=$p; break; }
done
q postgres -c "ALTER DATABASE ${shards[$down]} WITH ALLOW_CONNECTIONS false"
q postgres -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '${shards[$down]}'" >/dev/null
out=$(xchg p01 agent-2 2>&1)
ok "$(grep -q 'access_token' <<<"$out"; [ $? -ne 0 ]; echo $?)" \
   "shard $down down: an exchange for p01 (on it) fails closed"
is "$(xchg "$other" agent-2 | grep -c access_token)" 1 "... an exchange for $other (on another shard) is granted"
is "$(q "$router" -c "SELECT router.revoke_identity('agent-1', 'compromised')")" f \
   "a global revocation of agent-1 with a shard down is recorded and stays pending"
ok "$(q "$router" -c "SELECT last_error FROM router.revocation WHERE target = 'agent-1'" | grep -q .; echo $?)" \
   "... with the error that kept it pending"
q postgres -c "ALTER DATABASE ${shards[$down]} WITH ALLOW_CONNECTIONS true"
is "$(q "$router" -c "SELECT router.apply_revocations()")" 0 "the shard is back: the retry applies it everywhere"
is "$(q "$router" -c "SELECT count(*) FROM router._revoke_identity_at('agent-1', 'compromised', (SELECT at FROM router.revocation WHERE target = 'agent-1')) t WHERE t")" 4 \
   "applying it again is harmless (idempotent on each shard)"
is "$(q "$router" -c "SELECT string_agg(revocations::text, ',' ORDER BY shard) FROM router.counts('agent-1')")" "1,1,1,1" \
   "... every shard logged the revocation exactly once"
still=0
for p in "${people[@]}"; do
  [ "$(q "$router" -c "SELECT router.introspect('${tok[$p]}')->>'active'")" = false ] || still=$((still + 1))
done
is "$still" 0 "every token minted for agent-1, on every shard, introspects inactive"
refused=0
for p in "${people[@]}"; do
  exch ${cred[$p]} | grep -q '"error": "invalid_grant"' && refused=$((refused + 1))
done
is "$refused" 16 "agent-1's session and actor tokens no longer exchange, for any of the 16 people"
is "$(xchg p01 agent-2 | grep -c access_token)" 1 "agent-2 still acts for p01"

finish
