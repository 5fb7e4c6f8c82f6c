#!/usr/bin/env bash
# The upgrade check: for every earlier version tokex ships an install script
# for (sql/upgrade/tokex--X.sql), a database where tokex X was created and
# then updated (ALTER EXTENSION tokex UPDATE) must have exactly the schema of
# a fresh CREATE EXTENSION tokex, and keep its rows:
#
#   db "old":   CREATE EXTENSION tokex VERSION 'X', the rows of data-X.sql,
#               ALTER EXTENSION tokex UPDATE, then checks that every row is
#               still there and that the new version works on them
#   db "empty": the same without rows (and without tokex.issuer)
#   db "fresh": CREATE EXTENSION tokex
#
# Schemas are compared with pg_dump --schema-only --binary-upgrade, the mode
# pg_upgrade uses: a plain dump shows an extension as one CREATE EXTENSION
# line, while this one lists every member object with its definition, its
# ALTER EXTENSION ... ADD, owner, grants and initial privileges
# (pg_init_privs), the extension's version and its config tables
# (pg_extension_config_dump), and the physical column order (a column added
# with ALTER TABLE lands last, or leaves a dropped column behind: both show).
# Normalised only where two databases must differ: the OIDs and relfilenodes
# binary upgrade pins, the relfrozenxid/relminmxid it restores, sequence
# positions and the "missing values" of columns added with a default (data:
# the value rows older than the column read, which binary upgrade dumps even
# with --schema-only; data-X.sql and the checks below cover those rows), the
# random \restrict key, and the config-table list, which pg_dump prints as
# an OID array in registration order (a set: printed sorted by name).
#
# Needs tokex installed (make install) in the server the PG* environment
# names, as a superuser.  TAP output; a failed comparison prints the diff.
set -euo pipefail
cd "$(dirname "$0")/../.."
PG_CONFIG=${PG_CONFIG:-pg_config}
bindir=$("$PG_CONFIG" --bindir)
extdir=$("$PG_CONFIG" --sharedir)/extension
to=$(sed -n "s/^default_version[[:space:]]*=[[:space:]]*'\([^']*\)'.*/\1/p" tokex.control)
issuer=https://tokex.upgrade.test
old=tokex_upgrade_old empty=tokex_upgrade_empty fresh=tokex_upgrade_fresh
tmp=$(mktemp -d)
cleanup() {
  for d in $old $empty $fresh; do dropdb --force --if-exists "$d" 2>/dev/null || true; done
  psql -X -q -c 'DROP ROLE IF EXISTS tokex_upgrade_bi' 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

. test/tap.sh
q() { local db=$1; shift; psql -X -q -At -v ON_ERROR_STOP=1 -d "$db" "$@"; }

# The binary-upgrade schema dump of db, normalised (see above).
dump() {
  local cfg
  cfg=$(q "$1" -c "SELECT pg_catalog.string_agg(pg_catalog.format('%s=%L', c::regclass, cond), ', '
                                               ORDER BY c::regclass::text)
                     FROM pg_catalog.pg_extension e, unnest(e.extconfig, e.extcondition) AS u(c, cond)
                    WHERE e.extname = 'tokex'")
  # (the partitions of audit_event and token_use made at run time, or from
  # the earlier version's tables, are no part of the extension's schema:
  # which exist depends on the day and the rows; data-X.sql's checks and
  # the row checks below cover them)
  "$bindir/pg_dump" --schema-only --binary-upgrade --exclude-table='tokex.audit_event_p*' \
      --exclude-table='tokex.token_use_p*' -d "$1" | CFG="$cfg" perl -0777 -pe '
    s/^SELECT pg_catalog\.binary_upgrade_set_next_.*\n//mg;
    s/^\n-- set missing value\.\nSELECT pg_catalog\.binary_upgrade_set_missing_value\(.*\);\n\n//mg;
    s/^\\(un)?restrict \S+$/\\$1restrict KEY/mg;
    s/^(SET relfrozenxid = )\x27\d+\x27, relminmxid = \x27\d+\x27/$1N, relminmxid = N/mg;
    s/^(WHERE oid = )\x27\d+\x27;/$1N;/mg;
    s/^(SELECT pg_catalog\.setval\(\x27[^\x27]+\x27), \d+, (true|false)\);/$1, N);/mg;
    s/(binary_upgrade_create_empty_extension\(.*?), \x27\{[^}]*\}\x27, \x27\{[^}]*\}\x27/$1, CONFIG[$ENV{CFG}]/mg;'
}

compare() {  # compare <db> <description>
  dump "$1" > "$tmp/$1.sql"
  if diff -u "$tmp/$fresh.sql" "$tmp/$1.sql" > "$tmp/$1.diff"; then
    ok 0 "$2"
  else
    ok 1 "$2"
    echo "# pg_dump differs (--- fresh install, +++ updated):"
    sed 's/^/#   /' "$tmp/$1.diff"
  fi
}

versions=()
for f in sql/upgrade/tokex--*.sql; do
  v=${f#sql/upgrade/tokex--}; v=${v%.sql}
  [[ $v == *--* ]] || versions+=("$v")
done
[ ${#versions[@]} -gt 0 ] || { echo "Bail out! no earlier version to update from"; exit 1; }

# the server runs the scripts of this tree, not stale ones
same=0
for f in sql/upgrade/tokex--*.sql; do cmp -s "$f" "$extdir/${f##*/}" || same=1; done
ok $same "the installed upgrade scripts are this tree's (else: make install)"

for d in $old $empty $fresh; do dropdb --force --if-exists "$d" 2>/dev/null; createdb "$d"; done
q $fresh -c "ALTER DATABASE $fresh SET tokex.issuer = '$issuer'"
q $fresh -c 'CREATE EXTENSION tokex'
is "$(q $fresh -c "SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'tokex'")" "$to" \
  "a fresh install is version $to"
dump $fresh > "$tmp/$fresh.sql"

for from in "${versions[@]}"; do
  for d in $old $empty; do dropdb --force --if-exists "$d"; createdb "$d"; done

  # Without rows, the update needs nothing, not even tokex.issuer.
  q $empty -c "CREATE EXTENSION tokex VERSION '$from'"
  # between the new library and the update, a call says what to do
  err=$(q $empty -c "SET tokex.issuer = 'https://upgrade.test'" -c "SELECT tokex.jwt_verify('a.b.c')" 2>&1 || true)
  ok "$(grep -q "tokex in this database is at version $from, its library at $to" <<<"$err" &&
        grep -q 'HINT:  Run ALTER EXTENSION tokex UPDATE' <<<"$err"; echo $?)" \
    "$from before the update: the $to library refuses with a hint to update"
  PGOPTIONS='-c tokex.issuer=' q $empty -c 'ALTER EXTENSION tokex UPDATE'
  is "$(q $empty -c "SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'tokex'")" "$to" \
    "$from (no rows) updates to $to"
  compare $empty "$from (no rows) updated to $to: the same schema as a fresh $to install"

  q $old -c "CREATE EXTENSION tokex VERSION '$from'"
  if [ -f "test/upgrade/data-$from.sql" ]; then
    q $old -f "test/upgrade/data-$from.sql" >/dev/null
  fi
  # a privilege an administrator gave after installing, on a view the
  # update creates again
  q $old -c 'SET client_min_messages = warning; DROP ROLE IF EXISTS tokex_upgrade_bi;
             CREATE ROLE tokex_upgrade_bi;
             GRANT SELECT ON tokex.audit TO tokex_upgrade_bi'
  # A copy of every row before the update, to find each after it.
  q $old >/dev/null <<'SQL'
CREATE SCHEMA upgrade_snap;
DO $$
DECLARE t text;
BEGIN
  FOR t IN SELECT c.relname FROM pg_catalog.pg_class c
            WHERE c.relnamespace = 'tokex'::regnamespace AND c.relkind = 'r' LOOP
    EXECUTE pg_catalog.format('CREATE TABLE upgrade_snap.%I AS SELECT * FROM tokex.%I', t, t);
  END LOOP;
END
$$;
CREATE TABLE upgrade_snap._seq AS
  SELECT s.relname, (pg_catalog.pg_sequence_last_value(s.oid)) AS last_value
    FROM pg_catalog.pg_class s WHERE s.relnamespace = 'tokex'::regnamespace AND s.relkind = 'S';
SQL

  # Refused without tokex.issuer when there are revocations to re-key, and
  # the failed update leaves the old version whole.
  err=$(PGOPTIONS='-c tokex.issuer=' q $old -c 'ALTER EXTENSION tokex UPDATE' 2>&1 || true)
  if [ "$from" = 0.1 ]; then
    is "$(echo "$err" | grep -c 'tokex.issuer is not set')" 1 \
      "$from -> $to without tokex.issuer, with 0.1 revocations to re-key: refused"
    is "$(q $old -c "SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'tokex'")" "$from" \
      "... and the database is still at $from"
  fi

  q $old -c "ALTER DATABASE $old SET tokex.issuer = '$issuer'"
  out=$(q $old -c 'ALTER EXTENSION tokex UPDATE' 2>&1)
  is "$(q $old -c "SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'tokex'")" "$to" \
    "$from (with rows) updates to $to"
  # a local privilege is kept, or, where the update had to create the view
  # again, named in its output to be given again
  kept=$(q $old -c "SELECT pg_catalog.has_table_privilege('tokex_upgrade_bi', 'tokex.audit', 'SELECT')")
  named=$(echo "$out" | grep -c '^GRANT SELECT ON tokex.audit TO tokex_upgrade_bi;$' || true)
  ok "$( { [ "$kept" = t ] && [ "$named" = 0 ]; } || { [ "$kept" = f ] && [ "$named" = 1 ]; }; echo $?)" \
    "... and keeps a local privilege (kept=$kept), or names it to be given again (named=$named)"

  # Every row of every table, with the columns it had: present after the
  # update (EXCEPT ALL: as many times as before), and no new rows but the
  # re-keyed revocations.  Tables renamed since: their copy is renamed too.
  if [ "$from" = 0.1 ]; then q $old -c 'ALTER TABLE upgrade_snap.issuer RENAME TO trusted_issuer'; fi
  is "$(q $old <<'SQL'
CREATE FUNCTION pg_temp.diff(t text, lost boolean) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE cols text; k bigint;
BEGIN
  SELECT pg_catalog.string_agg(pg_catalog.quote_ident(a.attname), ', ' ORDER BY a.attnum) INTO cols
    FROM pg_catalog.pg_attribute a
   WHERE a.attrelid = pg_catalog.format('upgrade_snap.%I', t)::regclass AND a.attnum > 0 AND NOT a.attisdropped;
  EXECUTE pg_catalog.format(CASE WHEN lost
      THEN 'SELECT count(*) FROM (SELECT %1$s FROM upgrade_snap.%2$I EXCEPT ALL SELECT %1$s FROM tokex.%2$I) d'
      ELSE 'SELECT count(*) FROM (SELECT %1$s FROM tokex.%2$I EXCEPT ALL SELECT %1$s FROM upgrade_snap.%2$I) d' END,
    cols, t) INTO k;
  RETURN k;
END
$$;
SELECT COALESCE(pg_catalog.string_agg(pg_catalog.format('%s: %s lost, %s new', c.relname,
                                      pg_temp.diff(c.relname, true), pg_temp.diff(c.relname, false)), '; '),
                'all rows kept')
  FROM pg_catalog.pg_class c
 WHERE c.relnamespace = 'upgrade_snap'::regnamespace AND c.relkind = 'r' AND c.relname <> '_seq'
   AND (pg_temp.diff(c.relname, true) > 0
        OR (pg_temp.diff(c.relname, false) > 0 AND c.relname <> 'revoked_token'));
SQL
)" "all rows kept" "$from -> $to: every row of every table is kept, nothing added"
  is "$(q $old -c "SELECT pg_catalog.count(*) FROM upgrade_snap._seq s
                   WHERE s.last_value IS DISTINCT FROM
                         pg_catalog.pg_sequence_last_value(pg_catalog.format('tokex.%I', s.relname)::regclass)")" \
    0 "... and every sequence where it was"
  # the rows of the earlier version, given their place and hash by the update, seal and verify
  is "$(q $old -c "SELECT tokex.seal_audit() IS NOT NULL" -c "SELECT count(*) FROM tokex.audit_verify()" | tr '\n' ' ')" \
    "t 0 " "... and its audit rows seal into a block that verifies clean"
  # the earlier tables are now one partition each, outside the extension
  # (pg_dump dumps them with their rows); later months get their own
  is "$(q $old -c "SELECT string_agg(DISTINCT tableoid::regclass::text, ',') FROM tokex.audit_event" \
               -c "SELECT count(*) FROM pg_catalog.pg_depend d WHERE d.refclassid = 'pg_catalog.pg_extension'::regclass
                     AND d.objid IN ('tokex.audit_event_p_0_2'::regclass, 'tokex.token_use_p_0_2'::regclass)" \
               -c "SELECT tokex.audit_partition_ahead() > 0" | tr '\n' ' ')" \
     "tokex.audit_event_p_0_2 0 t " "... its audit rows are the partition audit_event_p_0_2, no member of tokex; partitions ahead follow it"

  if [ "$from" = 0.1 ]; then
    is "$(q $old -c "SELECT pg_catalog.string_agg(pg_catalog.right(exchange_id::text, 1) || '=' || operation, ' '
                                                  ORDER BY exchange_id) FROM tokex.audit_event")" \
       "1=exchange 2=client_credentials 3=exchange" \
       "0.1 audit rows: operation is client_credentials for a grant without subject token, else exchange"
    is "$(q $old -c "SELECT pg_catalog.string_agg(jti || ' ' || issuer, ', ' ORDER BY jti, issuer)
                       FROM tokex.revoked_token")" \
       "aaaaaaaa-0000-4000-8000-000000000001 $issuer, bbbbbbbb-0000-4000-8000-000000000001 https://idp.example, bbbbbbbb-0000-4000-8000-000000000001 $issuer, idp-jti-42 https://idp.example, idp-jti-42 $issuer" \
       "0.1 revocations: tokex's own granted jti under tokex.issuer; any other jti under every issuer"
    is "$(q $old -c "SELECT pg_catalog.bool_and(key = tokex._jti_key(issuer, jti)) FROM tokex.revoked_token")" t \
       "... each keyed by the SHA-256 of (issuer, jti)"
    # The 0.2 decision sees the re-keyed revocation of the IdP's token, and
    # the migrated graph (identity by (iss, sub), delegation, policy, client).
    is "$(q $old -c "SELECT format('%s|%s|%s', identity_error, error, scope)
                       FROM tokex.decide(ARRAY['https://idp.example', '$issuer'], ARRAY['alice@example', 'assistant'],
                                         ARRAY[now(), now()], 'calendar', NULL, '{calendar.read}', NULL,
                                         'calendar-app', '$issuer',
                                         ARRAY[tokex._jti_key('https://idp.example', 'idp-jti-42')])")" \
       "a presented token has been revoked||{calendar.read}" \
       "decide() after the update: the IdP token revoked by bare jti in 0.1 is still revoked"
    is "$(q $old -c "SELECT format('%s|%s|%s', identity_error, error, scope)
                       FROM tokex.decide(ARRAY['https://idp.example', '$issuer'], ARRAY['alice@example', 'assistant'],
                                         ARRAY[now(), now()], 'calendar', NULL, '{calendar.read}', NULL,
                                         'calendar-app', '$issuer',
                                         ARRAY[tokex._jti_key('https://idp.example', 'idp-jti-43')])")" \
       "||{calendar.read}" \
       "... and another token of the IdP is granted over the migrated delegation, policy and client"
    is "$(q $old -c "SELECT on_behalf_of || ' ' || action FROM tokex.audit_trail")" "alice GET /events" \
       "token_use still joins its exchange (audit_trail)"
    err=$(q $old -c "DELETE FROM tokex.audit_event" 2>&1 || true)
    is "$(echo "$err" | grep -c 'append-only')" 1 \
       "audit_event is append-only again (its trigger was off for the operation backfill)"
    # A token minted after the update with the key made in 0.1: audited,
    # active, and revocable through the re-keyed table and its trigger.
    tok=$(q $old -c "SELECT tokex.jwt_sign(jsonb_build_object('sub', 'alice', 'aud', 'calendar',
                                                              'exp', extract(epoch FROM now())::bigint + 300))")
    before=$(q $old -c "SELECT count(*) FROM tokex.revocation WHERE kind = 'token'")
    is "$(q $old -v tok="$tok" <<'SQL'
SELECT (tokex.introspect(:'tok'))->>'active';
SELECT tokex.revoke_token(:'tok', 'upgrade test');
SELECT (tokex.introspect(:'tok'))->>'active';
SQL
)" "$(printf 'true\n\nfalse')" "a token signed after the update with the 0.1 key is active, then revoked"
    is "$(q $old -c "SELECT count(*) - $before FROM tokex.revocation WHERE kind = 'token'")" 1 \
       "... and its revocation is logged in tokex.revocation (the trigger is on the new table)"
  fi

  q $old -c 'SET client_min_messages = warning; DROP SCHEMA upgrade_snap CASCADE;
             REVOKE ALL ON tokex.audit FROM tokex_upgrade_bi'
  compare $old "$from (with rows) updated to $to: the same schema as a fresh $to install"
done

echo "1..$n"
echo "# $n tests, $failed failed"
[ $failed -eq 0 ]
