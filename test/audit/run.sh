#!/usr/bin/env bash
# The audit trail proves itself (README: "Proving the audit trail"): after
# many exchanges the background sealer has sealed every row and the trail
# verifies clean, inside the database and outside it (node, npm jose); then
# every way a superuser can tamper with it is tried, each in a transaction
# rolled back afterwards, and tokex.audit_verify() or the witness check
# reports each; exchanges racing the sealer lose no row and land none in a
# sealed range; the retention drops whole sealed blocks and the chain still
# verifies; a chain re-signed with a new key passes its own check but not
# the witness's.  Also the SIEM export and the README's auditor cookbook.
#
# TOKEX_AUDIT_ROWS exchanges (default 300; the documented run: 100000),
# TOKEX_AUDIT_SECONDS of concurrent exchanges (default 4).  Uses the server
# the PG* environment names, tokex preloaded; creates and drops its database.
set -uo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
DB=${TOKEX_AUDIT_DB:-tokex_audit_proof}
ROWS=${TOKEX_AUDIT_ROWS:-300}
SECONDS_CONC=${TOKEX_AUDIT_SECONDS:-4}
tmp=$(mktemp -d)
bg=()
cleanup() {
  for p in "${bg[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  dropdb --force --if-exists "$DB" >/dev/null 2>&1
  dropdb --force --if-exists "${DB}_drop" >/dev/null 2>&1
  rm -rf "$tmp"
}
trap cleanup EXIT
. test/tap.sh
q() { psql -X -q -At -v ON_ERROR_STOP=1 -d "$DB" "$@"; }
# the problems audit_verify reports after the SQL given tampers, rolled back
problems() {
  q -c "BEGIN" -c "$1" -c "SELECT COALESCE(string_agg(DISTINCT problem, ',' ORDER BY problem), 'none') FROM tokex.audit_verify()" \
    -c "ROLLBACK" 2>&1 | tail -1
}
# poll N SQL: run SQL every half second until it gives t, N times at most; print the last answer
poll() {
  local v=f
  for _ in $(seq 1 "$1"); do
    v=$(q -c "$2")
    [ "$v" = t ] && break
    sleep 0.5
  done
  echo "$v"
}
# seal until every row is in a block (the sealer may be at it too)
seal_all() {
  for _ in $(seq 1 50); do
    [ "$(q -c "SELECT tokex.seal_audit()" -c "SELECT COALESCE(max(to_seq), 0) >= (SELECT last_value FROM tokex.audit_seq)
                                              FROM tokex.audit_block")" = t ] && return 0
    sleep 0.2
  done
  return 1
}
JWT=urn:ietf:params:oauth:token-type:jwt
# the problems audit_verify_head reports for the head in file $1 (after the SQL $2, rolled back)
vh() {
  q -v head="$(cat "$1")" <<SQL | tail -1
BEGIN;
${2:-}
SELECT COALESCE(string_agg(problem, ',' ORDER BY problem), 'none') FROM tokex.audit_verify_head(:'head');
ROLLBACK;
SQL
}

dropdb --force --if-exists "$DB" >/dev/null 2>&1
createdb "$DB"
q >/dev/null <<SQL
SET client_min_messages = warning;
CREATE EXTENSION tokex;
-- this month's partition and those ahead, before the first row (else the
-- rows of this month stay in the DEFAULT partition)
SELECT tokex.audit_partition_ahead(current => true);
ALTER DATABASE $DB SET tokex.issuer = 'https://tokex.audit.test';
SET tokex.issuer = 'https://tokex.audit.test';
SELECT tokex.create_key();
INSERT INTO tokex.identity (id, kind) VALUES ('alice', 'human'), ('bob', 'human'), ('asst', 'agent'), ('helper', 'agent');
INSERT INTO tokex.resource (audience, scopes) VALUES ('cal', '{cal.read,cal.write}');
INSERT INTO tokex.delegation (principal, delegate, scopes, max_depth) VALUES
  ('alice', 'asst', '{cal.read,cal.write}', 2), ('asst', 'helper', '{cal.read}', 1), ('bob', 'asst', '{cal.read}', 1);
INSERT INTO tokex.policy (effect) VALUES ('allow');
SQL
read -r st at hat bst < <(q -F ' ' -c "SELECT (tokex.start_session('alice', 'asst'))->>'session_token',
                                              tokex.identity_token('asst'), tokex.identity_token('helper'),
                                              (tokex.start_session('bob', 'asst'))->>'session_token'")
x() {  # x <subject> <actor> <scope> [<audience>]: the exchange's SQL
  echo "tokex.exchange('$1', '$JWT', '$2', '$JWT', audience => '${4:-cal}', scope => '$3')"
}

# ROWS exchanges, a tenth of them denied, from 4 sessions at once; and a use of every tenth token
start=$(date +%s.%N)
for part in 0 1 2 3; do
  q -c "SELECT count(*) FILTER (WHERE r ? 'access_token') FROM (
          SELECT CASE WHEN i % 10 = 0 THEN $(x "$st" "$at" cal.read nowhere)
                      WHEN i % 3 = 0 THEN $(x "$bst" "$at" cal.read)
                      ELSE $(x "$st" "$at" cal.read) END AS r
            FROM generate_series(1, $ROWS) i WHERE i % 4 = $part) s" >/dev/null &
  bg+=($!)
done
wait "${bg[@]}"; bg=()
q -c "SELECT count(tokex.record_use(r->>'access_token', 'GET /events', 'ok'))
        FROM (SELECT $(x "$st" "$at" cal.read) AS r FROM generate_series(1, $((ROWS / 10 + 1)))) s" >/dev/null
# a chain: asst hands on to helper
t1=$(q -c "SELECT ($(x "$st" "$at" cal.read))->>'access_token'")
q -c "SELECT $(x "$t1" "$hat" cal.read)" >/dev/null
echo "# $ROWS exchanges in $(echo "$(date +%s.%N) - $start" | bc) s"

total=$(q -c "SELECT (SELECT count(*) FROM tokex.audit_event) + (SELECT count(*) FROM tokex.token_use)")
ok "$([ "$total" -ge $((ROWS + ROWS / 10)) ]; echo $?)" "$total audit rows written"
is "$(q -c "SELECT count(*) FROM (SELECT row_hash = tokex._audit_row_hash(e) AS same FROM tokex.audit_event e
                                   UNION ALL SELECT row_hash = tokex._audit_row_hash(u) FROM tokex.token_use u) x
             WHERE same")" "$total" "every row carries the hash of its own columns"
is "$(q -c "SELECT count(DISTINCT seq) FROM (SELECT seq FROM tokex.audit_event UNION ALL SELECT seq FROM tokex.token_use) x")" \
   "$total" "every row has its own place (seq)"

# the background sealer (tokex.audit_seal_interval, default 5 s) seals every row
sealed=$(poll 60 "SELECT COALESCE(sum(row_count), 0) = $total FROM tokex.audit_block")
is "$sealed" t "the background sealer has sealed every row, unasked"
[ "$sealed" = t ] || q -c "SELECT (SELECT max(to_seq) FROM tokex.audit_block), (SELECT last_value FROM tokex.audit_seq),
                                  (SELECT count(*) FROM tokex.audit_event) + (SELECT count(*) FROM tokex.token_use),
                                  (SELECT string_agg(backend_type || ':' || state || ':' || coalesce(backend_xid::text, '-'), ', ')
                                     FROM pg_stat_activity WHERE datname = current_database())" | sed 's/^/# /'
is "$(q -c "SELECT tokex.seal_audit() IS NULL")" t "seal_audit() with nothing new to seal makes no block"
is "$(q -c "SELECT count(*) FROM tokex.audit_verify()")" 0 "the untouched trail verifies clean"
before=$(date +%s.%N)
q -c "SELECT count(*) FROM tokex.audit_verify()" >/dev/null
echo "# audit_verify over $total rows in $(q -c "SELECT count(*) FROM tokex.audit_block") blocks: $(echo "$(date +%s.%N) - $before" | bc) s"
err=$(q -c "BEGIN" -c "INSERT INTO tokex.audit_block SELECT -1, 0, 0, 0, '', NULL, NULL, '', NULL, now(), 'k', '', 'j'" -c "SELECT tokex.seal_audit()" 2>&1)
ok "$(grep -q 'must run in a transaction that has written nothing' <<<"$err"; echo $?)" \
   "seal_audit() refuses a transaction that has written (its rows would be sealed before they commit)"
for r in tokex_app tokex_auditor; do
  err=$(q -c "SET ROLE $r" -c "SELECT private_key FROM tokex.audit_key" 2>&1)
  ok "$(grep -q 'permission denied' <<<"$err"; echo $?)" "$r cannot read the audit key"
done
is "$(q -c "SET ROLE tokex_auditor" -c "SELECT count(*) FROM tokex.audit_verify()" -c "SELECT tokex.audit_head() LIKE 'ey%.%.%'")" \
   "$(printf '0\nt')" "tokex_auditor verifies the trail and reads the head"
is "$(q -c "SELECT jsonb_array_length(k->'keys') || ' ' || (k->'keys'->0->>'kty') || ' ' || (k->'keys'->0 ? 'd')
              FROM tokex.audit_keys() k")" "1 EC false" "audit_keys(): the audit key's public half only"
ok "$(q -c "SELECT count(*) FROM tokex.jwks() j, jsonb_array_elements(j->'keys') k, tokex.audit_keys() a,
                   jsonb_array_elements(a->'keys') ak WHERE k->>'kid' = ak->>'kid'" | grep -qx 0; echo $?)" \
   "the audit key is not a token key"

# a witness keeps the head, and the keys, now
q -c "SELECT tokex.audit_head()" > "$tmp/head1.jws"
q -c "SELECT tokex.audit_keys()" > "$tmp/jwks1.json"
head1_block=$(q -c "SELECT max(block) FROM tokex.audit_block")
is "$(vh "$tmp/head1.jws")" none "the witness's head is a prefix of the chain"

# outside the database: node and npm jose
( cd test/interop && { [ -d node_modules/jose ] || npm ci --no-audit --no-fund --loglevel=error >/dev/null; } )
export_trail() {  # export_trail <dir>
  mkdir -p "$1"
  q -c "SELECT tokex.audit_keys()" > "$1/jwks.json"
  q -c "SELECT jws FROM tokex.audit_block ORDER BY block" > "$1/blocks.txt"
  q -c "SELECT canonical FROM tokex.audit_rows()" > "$1/rows.txt"
}
export_trail "$tmp/out"
out=$(node test/interop/audit-verify.mjs "$tmp/out/jwks.json" "$tmp/out/blocks.txt" "$tmp/out/rows.txt" "$tmp/head1.jws" 2>&1)
ok $? "the exported blocks and rows verify outside the database (node, npm jose): $out"
sed '5s/"db_user":"postgres"/"db_user":"mallory"/' "$tmp/out/rows.txt" > "$tmp/out/rows-x.txt"
cmp -s "$tmp/out/rows.txt" "$tmp/out/rows-x.txt"; ok $((1 - $?)) "(a row of the export, altered)"
out=$(node test/interop/audit-verify.mjs "$tmp/out/jwks.json" "$tmp/out/blocks.txt" "$tmp/out/rows-x.txt" 2>&1)
ok "$([ $? -eq 1 ] && grep -q "Merkle root" <<<"$out"; echo $?)" "... the outside verifier finds an altered exported row: $out"
sed '$d' "$tmp/out/rows.txt" > "$tmp/out/rows-short.txt"
out=$(node test/interop/audit-verify.mjs "$tmp/out/jwks.json" "$tmp/out/blocks.txt" "$tmp/out/rows-short.txt" 2>&1)
ok "$([ $? -eq 1 ] && grep -q "rows, the block sealed" <<<"$out"; echo $?)" "... and a missing one: $out"

# Rotating the audit key: new blocks are signed with the new key, the old one still verifies its blocks
new_kid=$(q -c "SELECT tokex.rotate_audit_key()")
q -c "SELECT count(*) FROM (SELECT $(x "$st" "$at" cal.read) FROM generate_series(1, 5)) s" >/dev/null
seal_all
is "$(q -c "SELECT kid = '$new_kid' FROM tokex.audit_block ORDER BY block DESC LIMIT 1")" t \
   "rotate_audit_key(): the next block is signed with the new audit key"
is "$(q -c "SELECT jsonb_array_length(tokex.audit_keys()->'keys')") $(q -c "SELECT count(*) FROM tokex.audit_verify()") $(vh "$tmp/head1.jws")" \
   "2 0 none" "... both keys are published, the chain verifies, the witness's head still holds"

# Tampering, the ways a superuser can; each rolled back
q -c "CREATE TABLE public.token_use_shape (LIKE tokex.token_use INCLUDING DEFAULTS)"
victim=$(q -c "SELECT exchange_id FROM tokex.audit_event WHERE decision = 'granted' ORDER BY seq LIMIT 1 OFFSET 3")
is "$(problems "ALTER TABLE tokex.audit_event DISABLE TRIGGER audit_event_append_only;
                UPDATE tokex.audit_event SET scope = '{cal.read,cal.write}' WHERE exchange_id = '$victim'")" \
   "altered row" "UPDATE of a row, its trigger disabled: altered row"
is "$(problems "ALTER TABLE tokex.audit_event DISABLE TRIGGER audit_event_append_only;
                UPDATE tokex.audit_event SET subject = 'mallory' WHERE exchange_id = '$victim';
                UPDATE tokex.audit_event e SET row_hash = tokex._audit_row_hash(e) WHERE exchange_id = '$victim'")" \
   "altered row" "... and with its row_hash recomputed too: altered row (the block's Merkle root)"
is "$(problems "ALTER TABLE tokex.audit_event DISABLE TRIGGER audit_event_append_only;
                DELETE FROM tokex.audit_event WHERE exchange_id = '$victim'")" \
   "missing row" "DELETE of a row: missing row"
is "$(problems "ALTER TABLE tokex.token_use DISABLE TRIGGER token_use_append_only;
                DELETE FROM tokex.token_use WHERE id = (SELECT min(id) FROM tokex.token_use)")" \
   "missing row" "DELETE of a use (token_use): missing row"
is "$(problems "INSERT INTO tokex.audit_event SELECT (jsonb_populate_record(e, jsonb_build_object(
                  'exchange_id', gen_random_uuid(), 'jti', gen_random_uuid(), 'seq', e.seq + 1))).*
                  FROM tokex.audit_event e WHERE exchange_id = '$victim'")" \
   "inserted row" "INSERT of a forged row into a sealed range (with its own valid hash): inserted row"
is "$(problems "ALTER TABLE tokex.audit_event DISABLE TRIGGER audit_event_row;
                INSERT INTO tokex.audit_event SELECT (jsonb_populate_record(e, jsonb_build_object(
                  'exchange_id', gen_random_uuid(), 'jti', gen_random_uuid(), 'seq', 0))).*
                  FROM tokex.audit_event e WHERE exchange_id = '$victim'")" \
   "inserted row" "... or below every block, its trigger disabled: inserted row"
# every append-only trigger off: the parents' and each partition's
offall="DO \$\$ DECLARE t record; BEGIN
  FOR t IN SELECT c.oid::regclass AS rel, g.tgname FROM pg_class c JOIN pg_trigger g ON g.tgrelid = c.oid
            WHERE c.relnamespace = 'tokex'::regnamespace AND g.tgname LIKE '%append_only'
              AND (c.relname IN ('audit_event', 'token_use') OR c.relispartition) LOOP
    EXECUTE format('ALTER TABLE %s DISABLE TRIGGER %I', t.rel, t.tgname);
  END LOOP; END \$\$;"
is "$(problems "$offall
                TRUNCATE tokex.token_use, tokex.audit_event")" \
   "missing row" "TRUNCATE: missing row"
# the partitions: this month's holds the rows (made before the first one)
part=$(q -c "SELECT tableoid::regclass FROM tokex.audit_event WHERE exchange_id = '$victim'")
is "$part" "tokex.audit_event_p$(date -u +%Y%m)01" "the rows are in this month's partition, made ahead by tokex.audit_partition_ahead()"
is "$(q -c "TRUNCATE $part" 2>&1 | grep -c 'is append-only')" 1 "TRUNCATE of one partition is refused (its own append-only trigger)"
is "$(q -c "UPDATE $part SET reason = reason WHERE false" 2>&1 | grep -c 'is append-only')" 1 "... so is an UPDATE of the partition"
is "$(problems "ALTER TABLE $part DISABLE TRIGGER USER; TRUNCATE $part")" \
   "missing row" "TRUNCATE of one partition, its trigger disabled: missing row"
is "$(problems "ALTER TABLE tokex.audit_event DETACH PARTITION $part; DROP TABLE $part;
                SELECT tokex.audit_partition_ahead(current => true)")" \
   "missing row" "a partition dropped and made again, empty: missing row"
is "$(problems "ALTER TABLE tokex.audit_event DETACH PARTITION $part")" \
   "missing row" "a partition detached (its rows kept aside): missing row"
# (a config table cannot be dropped without dropping tokex: it is moved aside instead)
is "$(problems "ALTER TABLE tokex.token_use RENAME TO token_use_gone;
                CREATE TABLE tokex.token_use (LIKE public.token_use_shape INCLUDING ALL)")" \
   "missing row" "token_use replaced by a new, empty table: missing row"
is "$(problems "ALTER TABLE tokex.audit_block DISABLE TRIGGER audit_block_append_only;
                UPDATE tokex.audit_block SET row_count = row_count - 1 WHERE block = 1")" \
   "altered block,inserted row" "a block's row count lowered: altered block (and its rows are now more than it says)"
is "$(problems "ALTER TABLE tokex.audit_block DISABLE TRIGGER audit_block_append_only;
                UPDATE tokex.audit_block SET root = tokex._merkle_root('{}') WHERE block = 1;
                UPDATE tokex.audit_block b SET hash = sha256(convert_to(tokex._audit_header(b), 'UTF8')) WHERE block = 1")" \
   "altered block,altered row,broken link" \
   "a block rewritten with its hash recomputed: the JWS still signs the old header, the next block's link breaks"
if [ "$head1_block" -ge 3 ]; then
  is "$(problems "ALTER TABLE tokex.audit_block DISABLE TRIGGER audit_block_append_only;
                  DELETE FROM tokex.audit_block WHERE block = 2")" \
     "broken link,missing block" "a block deleted from the middle: missing block, broken link"
else
  is "$(problems "ALTER TABLE tokex.audit_block DISABLE TRIGGER audit_block_append_only;
                  DELETE FROM tokex.audit_block WHERE block = 1")" \
     "missing block" "the first block deleted: missing block"
fi
is "$(problems "UPDATE tokex.audit_key SET public_jwk = (SELECT public_jwk FROM tokex._generate_key('ES256'))")" \
   "bad signature" "the audit key's public half replaced: bad signature"
is "$(problems "DELETE FROM tokex.audit_key; SELECT tokex._audit_active_kid()")" \
   "bad signature" "the audit key replaced by a new one: bad signature (unknown key)"

# an older copy of the tables, restored after more rows were sealed
q -c "CREATE TABLE public.old_event AS SELECT * FROM tokex.audit_event" \
  -c "CREATE TABLE public.old_use AS SELECT * FROM tokex.token_use" \
  -c "CREATE TABLE public.old_block AS SELECT * FROM tokex.audit_block"
q -c "SELECT count(*) FROM (SELECT $(x "$st" "$at" cal.read) FROM generate_series(1, 20)) s" >/dev/null
seal_all
q -c "SELECT tokex.audit_head()" > "$tmp/head2.jws"
restore="$offall
         ALTER TABLE tokex.audit_event DISABLE TRIGGER USER; ALTER TABLE tokex.token_use DISABLE TRIGGER USER;
         TRUNCATE tokex.token_use, tokex.audit_event;
         INSERT INTO tokex.audit_event SELECT * FROM public.old_event;
         INSERT INTO tokex.token_use OVERRIDING SYSTEM VALUE SELECT * FROM public.old_use;"
is "$(problems "$restore")" "missing row" "an older copy of the tables restored: missing row"
is "$(q -v head="$(cat "$tmp/head2.jws")" <<SQL | tail -2 | tr '\n' ' '
BEGIN;
$restore
ALTER TABLE tokex.audit_block DISABLE TRIGGER USER; TRUNCATE tokex.audit_block;
INSERT INTO tokex.audit_block SELECT * FROM public.old_block;
SELECT count(*) FROM tokex.audit_verify();
SELECT string_agg(problem, ',') FROM tokex.audit_verify_head(:'head');
ROLLBACK;
SQL
)" "0 missing block " \
   "an older copy of tables and blocks restored: consistent in itself, but the witness's later head is gone"
is "$(q -c "SELECT count(*) FROM tokex.audit_verify()") $(vh "$tmp/head1.jws") $(vh "$tmp/head2.jws")" "0 none none" \
   "after all that rolled back: clean, and both witnessed heads are prefixes"

# A transaction that took its place (seq) and has not committed holds the seal back
# below it, while exchanges go on; once it commits, its row is sealed in order
late_tok=$(q -c "SELECT ($(x "$st" "$at" cal.read))->>'access_token'")
seal_all
q -v t="$late_tok" >/dev/null <<'SQL' &
BEGIN;
SELECT tokex.record_use(:'t', 'late', 'ok');
SELECT pg_sleep(6);
COMMIT;
SQL
bg+=($!)
sleep 1
t0=$(date +%s.%N)
q -c "SELECT $(x "$st" "$at" cal.read)" >/dev/null
t1=$(date +%s.%N)
early=$(q -c "SELECT tokex.seal_audit()")
t2=$(date +%s.%N)
ok "$(echo "$t1 - $t0 < 1" | bc | grep -qx 1; echo $?)" \
   "an exchange while a writing transaction is open takes $(echo "$t1 - $t0" | bc) s"
is "${early:-NULL} $(echo "$t2 - $t1 >= 1.9" | bc)" "NULL 1" \
   "seal_audit() waits for it (2 s), then seals nothing: the exchange after it stays unsealed too"
wait "${bg[@]}"; bg=()
seal_all
is "$(q -c "SELECT count(*) FROM tokex.token_use u JOIN tokex.audit_block b ON u.seq > b.from_seq AND u.seq <= b.to_seq
             WHERE u.action = 'late'") $(q -c "SELECT count(*) FROM tokex.audit_verify()")" "1 0" \
   "... once it commits, its row is sealed in its place and the trail verifies"

# Exchanges racing the sealer: no row lost, none lands in a sealed range
cat > "$tmp/x.pgbench" <<EOF
SELECT $(x "$st" "$at" cal.read);
EOF
before_rows=$(q -c "SELECT count(*) FROM tokex.audit_event")
( end=$((SECONDS + SECONDS_CONC)); while [ $SECONDS -lt $end ]; do q -c "SELECT tokex.seal_audit()" >/dev/null; sleep 0.1; done ) &
bg+=($!)
pgbench -n -c 4 -j 2 -T "$SECONDS_CONC" -d "$DB" -f "$tmp/x.pgbench" > "$tmp/bench.out" 2>&1
wait "${bg[@]}" 2>/dev/null; bg=()
done_tx=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$tmp/bench.out")
seal_all
is "$(q -c "SELECT count(*) - $before_rows FROM tokex.audit_event")" "$done_tx" \
   "$done_tx exchanges while blocks were sealed every 0.1 s: every one has its row"
is "$(q -c "SELECT COALESCE(sum(row_count), 0) FROM tokex.audit_block")" \
   "$(q -c "SELECT (SELECT count(*) FROM tokex.audit_event) + (SELECT count(*) FROM tokex.token_use)")" \
   "... every row is in exactly one block"
is "$(q -c "SELECT count(*) FROM tokex.audit_verify()")" 0 "... and no row landed in a sealed range (verifies clean)"
echo "# $(q -c "SELECT count(*) FROM tokex.audit_block") blocks"

# pg_dump / pg_restore: the restored trail verifies, and goes on from where it was
dropdb --force --if-exists "${DB}_restored" >/dev/null 2>&1
createdb "${DB}_restored"
pg_dump -Fc -d "$DB" -f "$tmp/dump"
restore_err=$(pg_restore -d "${DB}_restored" "$tmp/dump" 2>&1)
is "$(psql -X -q -At -d "${DB}_restored" -c "SELECT count(*) FROM tokex.audit_verify()" \
        -c "SELECT (SELECT sum(row_count) FROM tokex.audit_block) = (SELECT count(*) FROM tokex.audit_event) + (SELECT count(*) FROM tokex.token_use)" \
        -c "SELECT last_value FROM tokex.audit_seq" | tr '\n' ' ')" "0 t $(q -c "SELECT last_value FROM tokex.audit_seq") " \
   "pg_dump / pg_restore: the restored trail verifies clean, every row sealed, the sequence where it was $restore_err"
dropdb --force --if-exists "${DB}_restored" >/dev/null 2>&1

# The SIEM export: OCSF JSON lines
q -c "SELECT line FROM tokex.audit_export(now() - interval '1 hour')" > "$tmp/ocsf.jsonl"
is "$(wc -l < "$tmp/ocsf.jsonl")" "$(q -c "SELECT (SELECT count(*) FROM tokex.audit_event) + (SELECT count(*) FROM tokex.token_use)")" \
   "audit_export(): one line per row"
is "$(q -c "SELECT string_agg(DISTINCT (l::jsonb->>'class_uid') || '/' || (l::jsonb->>'status_id'), ' ')
              FROM tokex.audit_export(now() - interval '1 hour') l")" "3003/1 3003/2 6003/1" \
   "... Authorize Session (3003) for exchanges, granted or denied, API Activity (6003) for uses"
psql -X -q -d "$DB" -c "COPY (SELECT line FROM tokex.audit_export(now() - interval '1 hour')) TO STDOUT
                         WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02')" > "$tmp/copy.jsonl"
ok "$(cmp -s "$tmp/ocsf.jsonl" "$tmp/copy.jsonl"; echo $?)" "... COPY TO STDOUT gives the same JSON lines"
ok "$(node -e 'const fs=require("fs"); for (const l of fs.readFileSync(process.argv[1],"utf8").trim().split("\n")) {
                 const e=JSON.parse(l); if (!e.time || !e.metadata.uid || !e.type_uid) process.exit(1) }' "$tmp/copy.jsonl"; echo $?)" \
   "... each line is JSON with time, metadata.uid and type_uid"

# The README's auditor cookbook: every query in it runs here (bob offboarded first)
q -c "SELECT tokex.revoke_identity('bob', 'left the company')" >/dev/null
q -c "SELECT $(x "$bst" "$at" cal.read)" >/dev/null
awk '/^<!-- cookbook -->/{on=1} /^<!-- \/cookbook -->/{on=0} on && /^```sql/{q=1; next} on && /^```/{if(q){print ";"; q=0}; next} q' README.md \
  > "$tmp/cookbook.sql"
nq=$(grep -c '^;$' "$tmp/cookbook.sql")
ok "$([ "$nq" -ge 6 ]; echo $?)" "the README's cookbook has $nq queries"
out=$(psql -X -q -v ON_ERROR_STOP=1 -d "$DB" -v from="$(date -u -d '-1 hour' +%FT%TZ)" -v to="$(date -u -d '+1 hour' +%FT%TZ)" \
      -v person=alice -v agent=asst -v depth=1 -v offboarded=bob -f "$tmp/cookbook.sql" 2>&1)
ok $? "... and every one runs"
ok "$(grep -q 'helper' <<<"$out" && grep -q 'audience .nowhere. is not' <<<"$out"; echo $?)" \
   "... finding the chain through helper and the denials by reason"

# Retention: whole sealed blocks older than the setting are dropped; the chain still verifies
blocks_before=$(q -c "SELECT count(*) FROM tokex.audit_block")
sleep 1
cut=$(q -c "SELECT clock_timestamp()")
q -c "SELECT count(*) FROM (SELECT $(x "$st" "$at" cal.read) FROM generate_series(1, 5)) s" >/dev/null
seal_all
dropped=$(q -c "SELECT tokex.apply_audit_retention(now() - '$cut')")
ok "$([ "$dropped" -gt 0 ]; echo $?)" "apply_audit_retention() dropped $dropped rows of old blocks"
is "$(q -c "SELECT count(*) - $blocks_before - 1 >= 0, max(pruned_through) IS NOT NULL FROM tokex.audit_block" -F ' ')" "t t" \
   "... every block header is kept, and a new signed block records the cut"
is "$(q -c "SELECT count(*) FROM tokex.audit_verify()")" 0 "... and the chain still verifies"
is "$(problems "ALTER TABLE tokex.audit_event DISABLE TRIGGER audit_event_append_only;
                DELETE FROM tokex.audit_event WHERE seq = (SELECT max(seq) FROM tokex.audit_event)")" \
   "missing row" "... while a deletion nobody signed still shows"
is "$(vh "$tmp/head1.jws")" pruned "... the witness's old head is still a prefix, and the retention since is shown to it (pruned)"
is "$(problems "INSERT INTO tokex.audit_event (exchange_id, decision, operation, subject, seq)
                VALUES (gen_random_uuid(), 'granted', 'exchange', 'bob', 9000000000000000)")" \
   "inserted row" "a forged row with a seq beyond the sequence (never to be sealed): inserted row"
export_trail "$tmp/out2"
out=$(node test/interop/audit-verify.mjs "$tmp/out2/jwks.json" "$tmp/out2/blocks.txt" "$tmp/out2/rows.txt" "$tmp/head1.jws" 2>&1)
ok $? "... outside the database too: $out"
# a cut signed without dropping the rows does not switch the row checks off
is "$(problems "SELECT tokex._seal_audit((SELECT max(block) FROM tokex.audit_block))")" "inserted row" \
   "a retention cut signed over rows still there (nothing dropped): those rows show"
is "$(problems "ALTER TABLE tokex.audit_event DISABLE TRIGGER USER;
                UPDATE tokex.audit_event SET seq = 1 WHERE seq = (SELECT max(seq) FROM tokex.audit_event)")" \
   "inserted row,missing row" "a row moved into the emptied range: found there, and missed where it was"

# The whole chain re-signed with a new key: clean in itself, refuted by the witness
q -c "ALTER TABLE tokex.audit_block DISABLE TRIGGER USER; TRUNCATE tokex.audit_block;
       ALTER TABLE tokex.audit_block ENABLE ALWAYS TRIGGER audit_block_append_only; DELETE FROM tokex.audit_key"
q -c "SELECT tokex.seal_audit()" >/dev/null
is "$(q -c "SELECT count(*) FROM tokex.audit_verify()")" 0 "a chain re-signed with a new audit key verifies in itself"
ok "$(vh "$tmp/head1.jws" | grep -Eq '^(fork|missing block),unknown key$'; echo $?)" \
   "... but the witness's head names a key the chain no longer has, and its block differs or is gone: $(vh "$tmp/head1.jws")"
export_trail "$tmp/out3"
out=$(node test/interop/audit-verify.mjs "$tmp/jwks1.json" "$tmp/out3/blocks.txt" "$tmp/out3/rows.txt" "$tmp/head1.jws" 2>&1)
ok "$([ $? -eq 1 ] && grep -q 'unknown key' <<<"$out"; echo $?)" \
   "... and outside, with the keys the witness kept, nothing verifies: $(head -1 <<<"$out")"


# DROP EXTENSION while an audit worker is in a round: the worker holds the
# extension (a share lock on the pg_extension object) before any table, and
# the DROP takes that lock first, so the DROP waits for the round to end.
# (Without it the DROP could hold tokex.audit_seq and wait for a table the
# round held, while the round waited for the sequence: a deadlock, the DROP
# cancelled -- seen with the server under valgrind, test/asan/valgrind-server.sh.)
D2=${DB}_drop
createdb "$D2"
q2() { psql -X -q -At -v ON_ERROR_STOP=1 -d "$D2" "$@"; }
q2 >/dev/null <<'SQL'
CREATE EXTENSION tokex;
SELECT FROM tokex.create_key('ES256');
INSERT INTO tokex.identity (id, kind) VALUES ('drop-agent', 'agent');
SQL
waitfor() {  # waitfor <sql returning a boolean>: up to 10 s
  for _ in $(seq 200); do [ "$(q2 -c "$1")" = t ] && return 0; sleep 0.05; done; return 1
}
# a session holds the table the writer inserts into, so the writer's round waits
q2 -c "BEGIN" -c "LOCK TABLE tokex.audit_event IN ACCESS EXCLUSIVE MODE" -c "SELECT pg_sleep(3)" -c "ROLLBACK" >/dev/null 2>&1 &
bg+=($!)
waitfor "SELECT EXISTS (SELECT FROM pg_locks WHERE relation = 'tokex.audit_event'::regclass AND mode = 'AccessExclusiveLock' AND granted)"
q2 -c "SET tokex.issuer = 'https://drop.test'" -c "SELECT tokex.identity_token('drop-agent') IS NOT NULL" >"$tmp/drop-token" 2>&1 &
bg+=($!)
waitfor "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE backend_type = 'tokex audit writer' AND wait_event_type = 'Lock')"
extlock="locktype = 'object' AND classid = 'pg_extension'::regclass AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
is "$(q2 -c "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid)
              WHERE a.backend_type = 'tokex audit writer' AND $extlock AND l.mode = 'AccessShareLock' AND l.granted")" 1 \
   "an audit writer waiting in its round holds the extension (a share lock)"
psql -X -q -d "$D2" -c "DROP EXTENSION tokex CASCADE" >"$tmp/drop-out" 2>&1 &
dropper=$!
bg+=($dropper)
waitfor "SELECT EXISTS (SELECT FROM pg_locks l JOIN pg_stat_activity a USING (pid)
                        WHERE a.query LIKE 'DROP EXTENSION%' AND $extlock AND NOT l.granted)"
ok $? "... so DROP EXTENSION queues behind the round, on that lock"
wait "$dropper"
ok $? "... and succeeds once the round is over, no deadlock: $(head -1 "$tmp/drop-out")"
wait
is "$(cat "$tmp/drop-token")" t "... the token the round was writing for is issued"
dropdb --force "$D2"

# Retention by partition: the rows of two past months (their partitions made
# by hand, the rows back-dated) sealed, then one more row in the earlier
# month.  The cut is the block of the later month's rows: that month's
# partition holds nothing newer and is detached and dropped whole; the
# earlier one keeps its newer row (only its rows at or below the cut are
# deleted), as do this month's and the DEFAULT partition.
seal_all
q >/dev/null <<'SQL'
CREATE TEMP TABLE m AS SELECT (date_trunc('month', now() AT TIME ZONE 'UTC') - interval '3 months') AT TIME ZONE 'UTC' AS m3,
                              (date_trunc('month', now() AT TIME ZONE 'UTC') - interval '2 months') AT TIME ZONE 'UTC' AS m2,
                              (date_trunc('month', now() AT TIME ZONE 'UTC') - interval '1 month') AT TIME ZONE 'UTC' AS m1;
SELECT tokex._audit_partition_create(t, lo, hi)
  FROM m, LATERAL (VALUES ('audit_event', m3, m2), ('audit_event', m2, m1), ('token_use', m3, m2), ('token_use', m2, m1)) v(t, lo, hi);
INSERT INTO tokex.audit_event (exchange_id, at, decision, operation, subject)
SELECT gen_random_uuid(), t + interval '9 days', 'granted', 'jwt_sign', 'alice'
  FROM m, LATERAL (VALUES (m3), (m3), (m3), (m2), (m2), (m2)) v(t);
SQL
seal_all
q -c "INSERT INTO tokex.audit_event (exchange_id, at, decision, operation, subject)
      SELECT gen_random_uuid(), (date_trunc('month', now() AT TIME ZONE 'UTC') - interval '3 months') AT TIME ZONE 'UTC' + interval '10 days',
             'granted', 'jwt_sign', 'bob'" >/dev/null
seal_all
p3="tokex.audit_event_p$(date -u -d "$(date -u +%Y-%m-01) -3 months" +%Y%m%d)"
p2="tokex.audit_event_p$(date -u -d "$(date -u +%Y-%m-01) -2 months" +%Y%m%d)"
rows_before=$(q -c "SELECT count(*) FROM tokex.audit_event")
dropped=$(q -c "SELECT tokex.apply_audit_retention('20 days')")
is "$(q -c "SELECT to_regclass('$p2') IS NULL, to_regclass('tokex.token_use_p${p2#tokex.audit_event_p}') IS NULL,
                   (SELECT count(*) FROM $p3), (SELECT string_agg(subject, ',') FROM $p3)" -F ' ')" "t t 1 bob" \
   "retention: a past partition whose rows are all at or below the cut is dropped (both tables); one with a newer row keeps that row"
is "$(q -c "SELECT $rows_before - count(*) FROM tokex.audit_event")" "$dropped" \
   "... and apply_audit_retention() counts the rows of the dropped partition with those deleted ($dropped)"
is "$(q -c "SELECT count(*) FROM tokex.audit_verify()")" 0 "... and the chain still verifies across the gap"
is "$(problems "ALTER TABLE $p3 DISABLE TRIGGER USER; DELETE FROM $p3")" \
   "missing row" "... while the newer row, deleted from its partition behind the retention's back, still shows"

# A sealer that fails (here: seal_audit renamed away) rests SEAL_RETRY_MS
# before the next starts: not one new process per audit row.  Each start
# rolls back one transaction in this database, which its statistics count.
q -c "ALTER FUNCTION tokex.seal_audit() RENAME TO seal_audit_away" >/dev/null
sleep 1.5
rb0=$(q -c "SELECT pg_stat_force_next_flush()" -c "SELECT xact_rollback FROM pg_stat_database WHERE datname = current_database()" | tail -1)
for _ in $(seq 1 8); do
  q -c "SELECT count(tokex.jwt_sign(jsonb_build_object('sub', 'rest-' || g))) FROM generate_series(1, 10) g" >/dev/null
  sleep 0.1
done
sleep 1.5
rb1=$(q -c "SELECT pg_stat_force_next_flush()" -c "SELECT xact_rollback FROM pg_stat_database WHERE datname = current_database()" | tail -1)
q -c "ALTER FUNCTION tokex.seal_audit_away() RENAME TO seal_audit" >/dev/null
ok "$([ $((rb1 - rb0)) -le 3 ]; echo $?)" \
   "a failing sealer is not restarted for every audit row: $((rb1 - rb0)) failed rounds over 80 rows in ~3 s"
# one row now, during the rest, and none after: the sealer it starts seals them all
q -c "SELECT tokex.jwt_sign(jsonb_build_object('sub', 'rest-last'))" >/dev/null
sealed=$(poll 40 "SELECT COALESCE(max(to_seq), 0) >= (SELECT last_value FROM tokex.audit_seq) FROM tokex.audit_block")
is "$sealed" t "... and once it works again, a row during its rest starts the next sealer, which seals every row with none after"
is "$(q -c "SELECT count(*) FROM tokex.audit_verify()")" 0 "... which verify"

# The writer's direct insert (tokex.audit_direct_insert, on by default)
# writes the rows its INSERT of JSON wrote: the same exchanges, granted and
# denied, and rows of odd JSON through tokex._audit_write (numbers and
# booleans for text, arrays with NULLs, empty arrays, escapes, a real,
# which only the INSERT reads), with each path's use shown by the calls of
# the INSERT's statement trigger (tokex._ssf_track).
setw() {
  q -c "ALTER SYSTEM SET tokex.audit_direct_insert = $1" -c "ALTER SYSTEM SET track_functions = 'all'" \
    -c "SELECT pg_reload_conf()" >/dev/null
  sleep 1.5   # the writer leaves after a second idle; the next reads the setting
}
ssf_calls() {
  sleep 1.5   # ... and reports its function calls as it leaves
  q -c "SELECT pg_stat_clear_snapshot()" -c "SELECT COALESCE(sum(calls), 0) FROM pg_stat_user_functions WHERE funcname = '_ssf_track'" | tail -1
}
cat > "$tmp/odd.json" <<'J'
{"operation": "jwt_sign", "decision": "granted", "subject": 42, "reason": true,
 "actor_chain": ["a", null, "\u00e9\"x\u0001"], "requested_scope": [], "scope": ["s"],
 "delegation_ids": [1, -2, 9007199254740993], "credential_id": 7, "subject_token_sha256": "\\x00ff",
 "expires_at": "2030-01-01T00:00:00+00:00", "client_id": "c1"}
J
path_rows() {  # path_rows on|off: write the rows, print them (what does not vary between two runs)
  setw "$1"
  local c0 s0
  c0=$(ssf_calls); s0=$(q -c "SELECT last_value FROM tokex.audit_seq")
  q -v odd="$(cat "$tmp/odd.json")" >/dev/null <<SQL
SELECT $(x "$st" "$at" cal.read);
SELECT $(x "$st" "$at" cal.read nowhere);
SELECT tokex._audit_write(:'odd'::jsonb || jsonb_build_object('exchange_id', gen_random_uuid()));
SELECT tokex._audit_write(:'odd'::jsonb || jsonb_build_object('exchange_id', gen_random_uuid(), 'audience', 1.5));
SELECT tokex._audit_write(:'odd'::jsonb || jsonb_build_object('exchange_id', gen_random_uuid(), 'nonsense', 1,
                                                            'reason', jsonb_build_array('a', 1, true, NULL)));
SELECT tokex._audit_write(:'odd'::jsonb || jsonb_build_object('exchange_id', gen_random_uuid(), 'zz', 1.5));
SQL
  err=$(q -c "SELECT tokex._audit_write('{\"exchange_id\": \"nope\", \"decision\": \"granted\"}')" 2>&1 | grep -E 'ERROR|DETAIL' | paste -sd' ')
  err2=$(q -c "SELECT tokex._audit_write('{\"operation\": \"revoke\", \"decision\": \"denied\", \"scope\": \"s\"}'::jsonb
                                         || jsonb_build_object('exchange_id', gen_random_uuid()))" 2>&1 | grep -E 'ERROR|DETAIL' | paste -sd' ')
  echo "trigger calls: $(( $(ssf_calls) - c0 ))"
  echo "refused: $err"
  echo "refused: $err2"
  # two bad values: refused for the first in the table's column order, however the row is carried
  q -c "SELECT tokex._audit_write('{\"operation\": \"revoke\", \"decision\": \"denied\", \"error\": \"e\",
                                    \"exchange_id\": \"nope\", \"expires_at\": \"notatime\"}', false)" 2>&1 |
    grep -E 'DETAIL' | sed 's/^/refused: /'
  q -c "SELECT tokex._audit_write('{\"operation\": \"revoke\", \"decision\": \"denied\", \"error\": \"e\",
                                    \"exchange_id\": \"nope\", \"expires_at\": \"notatime\", \"zz\": 1.5}', false)" 2>&1 |
    grep -E 'DETAIL' | sed 's/^/refused: /'
  q -c "SELECT concat_ws(' | ', operation, decision, error, reason, subject, actor, actor_chain, client_id, audience,
                         requested_scope, scope, delegation_ids, policy_ids, subject_issuer, actor_issuer,
                         encode(subject_token_sha256, 'hex'), encode(actor_token_sha256, 'hex'), subject_sid,
                         issued_token_type, db_user, subject_token_type, actor_token_type, credential_id, dpop_jkt,
                         CASE WHEN operation = 'jwt_sign' THEN expires_at END, jti IS NULL, length(row_hash))
          FROM tokex.audit_event WHERE seq > $s0 ORDER BY seq"
}
read -r st at < <(q -F ' ' -c "SELECT (tokex.start_session('alice', 'asst'))->>'session_token', tokex.identity_token('asst')")
direct=$(path_rows on)
viains=$(path_rows off)
q -c "ALTER SYSTEM RESET tokex.audit_direct_insert" -c "ALTER SYSTEM RESET track_functions" -c "SELECT pg_reload_conf()" >/dev/null
is "$(grep -c '' <<<"$direct") $(head -1 <<<"$direct") / $(head -1 <<<"$viains")" \
   "11 trigger calls: 2 / trigger calls: 6" \
   "the writer's direct insert wrote 6 rows, 4 without the INSERT (a real, an array for a text column sent their batches through it; a real under a key that is no column did not); the INSERT, all 6"
is "$(tail -n +2 <<<"$direct")" "$(tail -n +2 <<<"$viains")" "... the same rows, and the same refusals of four bad ones"
is "$(sed -n 4,5p <<<"$direct" | grep -c 'type uuid: "nope"')" 2 \
   "... a row with two bad values refused for its first column (exchange_id), packed or as JSON"
is "$(sed -n 6p <<<"$direct" | awk -F' [|] ' '{print $1, $2}')" "exchange granted" "... the first of them a granted exchange"
ok "$(grep -q 'invalid input syntax for type uuid' <<<"$direct"; echo $?)" "... which says why: $(sed -n 2p <<<"$direct")"
ok "$(sed -n 3p <<<"$direct" | grep -q 'ERROR'; echo $?)" "... and why a string for an array column is refused: $(sed -n 3p <<<"$direct")"
is "$(tail -2 <<<"$direct" | head -1 | awk -F' [|] ' '{print $3}')" '["a", 1, true, null]' \
   "... an array for a text column is its JSON text, from the rows the backend packs as from JSON"
is "$(q -c "SELECT count(*) FROM tokex.audit_verify()")" 0 "... and the trail verifies"

# ... and what the INSERT would do more, the direct insert leaves to it: an
# administrator's ON INSERT rule, a foreign-table partition (a clean
# refusal, not a crash), a generated column; a stream created while the
# writer waited for the table is tracked.
q >/dev/null <<'SQL'
CREATE TABLE public.mirror (exchange_id uuid, decision text);
CREATE RULE mirror_rule AS ON INSERT TO tokex.audit_event DO ALSO INSERT INTO public.mirror VALUES (NEW.exchange_id, NEW.decision);
SQL
q -c "SELECT $(x "$st" "$at" cal.read)" >/dev/null
is "$(q -c "SELECT count(*) FROM public.mirror")" 1 "an ON INSERT rule on tokex.audit_event applies to the writer's rows"
q -c "DROP RULE mirror_rule ON tokex.audit_event" -c "DROP TABLE public.mirror" >/dev/null
q >/dev/null <<'SQL'
CREATE EXTENSION IF NOT EXISTS file_fdw;
CREATE SERVER audit_files FOREIGN DATA WRAPPER file_fdw;
CREATE FOREIGN TABLE tokex.audit_far PARTITION OF tokex.audit_event FOR VALUES FROM ('2040-01-01') TO ('2040-02-01')
  SERVER audit_files OPTIONS (filename '/dev/null');
SQL
out=$(q -c "SELECT tokex._audit_write(jsonb_build_object('exchange_id', gen_random_uuid(), 'at', '2040-01-15T00:00:00+00:00',
                                      'operation', 'revoke', 'decision', 'denied', 'error', 'x'), false)" 2>&1)
ok "$(grep -q 'could not commit the audit row' <<<"$out" && [ "$(q -c 'SELECT 1')" = 1 ]; echo $?)" \
   "a row routed to a foreign-table partition is refused, the server up: $(grep -m1 DETAIL <<<"$out")"
q -c "DROP FOREIGN TABLE tokex.audit_far" -c "DROP SERVER audit_files" >/dev/null
q -c "ALTER TABLE tokex.audit_event ADD COLUMN g text GENERATED ALWAYS AS (upper(subject)) STORED" >/dev/null
out=$(q -c "SELECT tokex._audit_write(jsonb_build_object('exchange_id', gen_random_uuid(), 'operation', 'revoke',
                                      'decision', 'denied', 'error', 'x', 'g', 'boom'), false)" 2>&1)
ok "$(grep -q 'could not commit the audit row' <<<"$out" && [ "$(q -c 'SELECT 1')" = 1 ]; echo $?)" \
   "a row naming a generated column is refused as the INSERT refuses it, the server up: $(grep -m1 DETAIL <<<"$out")"
q -c "ALTER TABLE tokex.audit_event DROP COLUMN g" >/dev/null
q -c "BEGIN" -c "LOCK tokex.audit_event IN EXCLUSIVE MODE" -c "SELECT pg_sleep(1.5)" \
  -c "INSERT INTO tokex.ssf_stream (audience, description) VALUES ('cal', 'race')" -c "COMMIT" >/dev/null &
locker=$!
sleep 0.5
r=$(q -c "SELECT $(x "$st" "$at" cal.read)")
wait $locker
is "$(q -c "SELECT count(*) FROM tokex.ssf_token
             WHERE jti = (tokex.jwt_decode(('$r'::jsonb)->>'access_token')->'payload'->>'jti')::uuid" 2>&1)" 1 \
   "a token whose row waited for the table while a stream was created is tracked for it ($(cut -c1-60 <<<"$r"))"
q -c "DELETE FROM tokex.ssf_stream WHERE description = 'race'" >/dev/null

# Partitions made ahead skip what is in the way: a table by hand with the
# name of one, a partition up to MAXVALUE (which once raised in every
# sealer round, so nothing was sealed again).
m4=$(date -u -d "$(date -u +%Y-%m-01) +4 months" +%Y-%m-01)
m5=$(date -u -d "$(date -u +%Y-%m-01) +5 months" +%Y-%m-01)
q >/dev/null <<SQL
CREATE TABLE tokex.audit_event_p${m4//-/} (x int);
CREATE TABLE tokex.audit_far (LIKE tokex.audit_event INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
ALTER TABLE tokex.audit_event ATTACH PARTITION tokex.audit_far FOR VALUES FROM ('$m5') TO (MAXVALUE);
SQL
out=$(q -c "SET tokex.audit_partition_ahead = 8" -c "SELECT tokex.audit_partition_ahead()" 2>&1)
is "$out" 5 "audit_partition_ahead() skips a table in its way and a partition up to MAXVALUE, makes the rest (token_use's 5)"
q -c "DROP TABLE tokex.audit_event_p${m4//-/}" -c "ALTER TABLE tokex.audit_event DETACH PARTITION tokex.audit_far" \
  -c "DROP TABLE tokex.audit_far" >/dev/null

# Array columns with a typmod (an administrator's): the direct insert applies
# it to the elements, as the INSERT does (varchar(3)[] holds varchar(3)s).
q -c "ALTER TABLE tokex.audit_event ADD COLUMN note varchar(3)[], ADD COLUMN n numeric(4,1)[]" >/dev/null
typmod_rows() {
  setw "$1"
  local s0=$(q -c "SELECT last_value FROM tokex.audit_seq")
  q -c "SELECT tokex._audit_write(jsonb_build_object('exchange_id', gen_random_uuid(), 'operation', 'revoke',
          'decision', 'denied', 'error', 'e', 'note', jsonb_build_array('ab', NULL), 'n', jsonb_build_array('1.25', 2)), false)" >/dev/null
  q -c "SELECT tokex._audit_write(jsonb_build_object('exchange_id', gen_random_uuid(), 'operation', 'revoke',
          'decision', 'denied', 'error', 'e', 'note', jsonb_build_array('abcdef')), false)" 2>&1 | grep DETAIL
  q -c "SELECT note, n FROM tokex.audit_event WHERE seq > $s0 ORDER BY seq"
}
direct=$(typmod_rows on)
viains=$(typmod_rows off)
q -c "ALTER SYSTEM RESET tokex.audit_direct_insert" -c "ALTER SYSTEM RESET track_functions" -c "SELECT pg_reload_conf()" >/dev/null
q -c "ALTER TABLE tokex.audit_event DROP COLUMN note, DROP COLUMN n" >/dev/null
is "$direct" "$viains" "an array column's typmod holds for its elements on both paths: $(paste -sd' ' <<<"$direct")"
is "$(tail -1 <<<"$direct")" '{ab,NULL}|{1.3,2.0}' "... the elements cast to varchar(3) and numeric(4,1)"

finish
