#!/usr/bin/env bash
# The server itself under valgrind's memcheck: a cluster of its own whose
# postmaster (tokex in shared_preload_libraries) runs under memcheck, so every
# process it forks -- backends, the audit writer and sealer, the
# checkpointer -- runs under memcheck too, each logging to vg.<pid>.log.
# Against it: pg_regress (make installcheck) and every pgTAP file, which
# between them reach tokex's C code (JOSE sign and verify, exchange, decide,
# introspection, sessions, revocation, DPoP binding, translation, the vault,
# the token cache, resources, limits, the SSF feed, the audit writer and
# sealer).  Then the server is stopped and every log read: an
# error report with a frame in tokex.so (an invalid read or write, a use of
# an uninitialised value, a definite leak, ...) fails the run and is printed.
# Reports with no tokex frame are PostgreSQL's, OpenSSL's or libc's, and are
# counted, not judged (valgrind-pg.supp holds the known ones).
#
#   bash test/asan/valgrind-server.sh                 # regress + every pgTAP file
#   bash test/asan/valgrind-server.sh regress         # only pg_regress
#   bash test/asan/valgrind-server.sh test/t/03_jwt.sql test/t/50_vault.sql
#
# Uses the tokex installed in $PG_CONFIG's directories (make install first;
# built with -g, as PGXS does, so reports name tokex's source lines) and that
# PostgreSQL's binaries.  TOKEX_VG_PORT (5462) is the port, TOKEX_VG_KEEP=DIR
# keeps the logs in DIR.  Not in CI: valgrind makes the server 30-50 times
# slower; the default set takes about 20 minutes on two cores.
# Debian's PostgreSQL is built without USE_VALGRIND, so memcheck sees
# malloc'd blocks, not palloc chunks inside them: a read past a palloc'd
# chunk that stays inside its context's block is not seen; one past a
# malloc'd object (OpenSSL's, jansson's, tokex's own buffers) is.  TAP output.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
source "$root/test/tap.sh"
command -v valgrind >/dev/null || { echo "1..0 # SKIP valgrind is not installed"; exit 0; }
PG_CONFIG=${PG_CONFIG:-pg_config}
bindir=$("$PG_CONFIG" --bindir)
lib=$("$PG_CONFIG" --pkglibdir)/tokex.so
[ -f "$lib" ] || { echo "Bail out! tokex is not installed ($lib)"; exit 1; }
port=${TOKEX_VG_PORT:-5462}
# what runs: "regress", pgTAP files, or both: by default pg_regress and
# every pgTAP file (test/t/*.sql, about 20 minutes under memcheck here)
[ $# -gt 0 ] || set -- regress "$root"/test/t/*.sql

tmp=$(mktemp -d)
data=$tmp/data logs=$tmp/vg
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
vgpid=
cleanup() {
  if [ -n "$vgpid" ] && kill -0 "$vgpid" 2>/dev/null; then
    kill -QUIT "$vgpid" 2>/dev/null; sleep 5; kill -KILL "$vgpid" 2>/dev/null
  fi
  if [ -n "${TOKEX_VG_KEEP:-}" ]; then
    mkdir -p "$TOKEX_VG_KEEP" && cp -r "$logs" "$tmp"/*.log "$TOKEX_VG_KEEP"/ 2>/dev/null
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
chmod a+rx "$tmp"

# 1. the cluster
mkdir -p "$data" "$logs" && chmod 700 "$data" && chmod a+rwx "$logs"
[ "$(id -u)" = 0 ] && chown postgres "$data" "$tmp"
as_pg "$bindir/initdb" -D "$data" -U postgres -A trust --no-sync >"$tmp/initdb.log" 2>&1 ||
  { echo "Bail out! initdb"; sed 's/^/# /' "$tmp/initdb.log"; exit 1; }
# the vault's key-encryption key, owned by the server's user, mode 0600
as_pg sh -c "umask 077 && openssl rand -hex 32 > '$tmp/vault.key'"
# Timeouts: nothing here sets statement_timeout or lock_timeout; the audit
# writer sets its own lock_timeout (5 s), which valgrind's pace has not hit.
cat >>"$data/postgresql.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$tmp'
port = $port
shared_preload_libraries = 'tokex'
tokex.vault_key_file = '$tmp/vault.key'
max_connections = 20
fsync = off
synchronous_commit = off
full_page_writes = off
huge_pages = off
jit = off
autovacuum = off
checkpoint_timeout = 30min
log_line_prefix = '%m [%p] %b '
CONF
export PGHOST=$tmp PGPORT=$port PGUSER=postgres
unset PGDATABASE PGSERVICE PGOPTIONS

# 2. the postmaster under memcheck; every process it forks stays under it
# (--trace-children for anything it execs; shells of COPY ... PROGRAM and
# the like are skipped).  Leaks: only definite ones are reported and count
# as errors -- PostgreSQL exits with its memory contexts still reachable.
# --fullpath-after= prints the source paths whole, so a tokex frame is known
# by its build directory (or by "tokex.so" in a build without debug info);
# -v lists the suppressions used, counted below.
vgopts=(--tool=memcheck --trace-children=yes --trace-children-skip='/bin/*,/usr/bin/*'
  --track-origins=yes --num-callers=30 --log-file="$logs/vg.%p.log"
  --suppressions="$here/valgrind-pg.supp" --error-markers=VGERR-BEGIN,VGERR-END
  --leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=definite
  --fullpath-after= -v)
start=$SECONDS
as_pg nice -n 5 valgrind "${vgopts[@]}" "$bindir/postgres" -D "$data" >"$tmp/server.log" 2>&1 &
vgpid=$!
for _ in $(seq 600); do
  "$bindir/pg_isready" -q -d postgres && break
  kill -0 "$vgpid" 2>/dev/null || break
  sleep 1
done
"$bindir/pg_isready" -q -d postgres ||
  { echo "Bail out! the server did not start under valgrind"; tail -20 "$tmp/server.log" | sed 's/^/# /'; exit 1; }
ok 0 "the postmaster runs under memcheck, tokex preloaded ($((SECONDS - start)) s to accept connections)"

# 3. the suites
q() { psql -X -q -At -v ON_ERROR_STOP=1 "$@"; }
# the audit writer and sealer of a probe database, seen running right
# after a token is issued (the writer leaves after a second idle)
createdb vg_probe
workers=$(q -d vg_probe <<'SQL' | tail -1
CREATE EXTENSION tokex;
SET tokex.issuer = 'https://vg.test';
SELECT FROM tokex.create_key('ES256');
INSERT INTO tokex.identity (id, kind) VALUES ('vg-probe', 'agent');
SELECT FROM tokex.identity_token('vg-probe');
SELECT string_agg(backend_type || ' ' || pid, ', ') FROM pg_stat_activity WHERE backend_type LIKE 'tokex%';
SQL
)
writer=$(sed -n 's/.*tokex audit writer \([0-9]*\).*/\1/p' <<<"$workers")
echo "# tokex workers running: ${workers:-none}"
cd "$root"
ran=()
for s in "$@"; do
  t0=$SECONDS
  case $s in
    regress) make -s installcheck PG_CONFIG="$PG_CONFIG" >"$tmp/regress.log" 2>&1; rc=$?
             [ $rc -eq 0 ] || { cat regression.diffs 2>/dev/null | head -40 | sed 's/^/# /'; } ;;
    *.sql)   bash test/pgtap.sh "$s" >"$tmp/$(basename "$s").log" 2>&1; rc=$?
             [ $rc -eq 0 ] || grep -E 'not ok|Failed|Dubious|ERROR|Bail|#' "$tmp/$(basename "$s").log" | head -20 | sed 's/^/# /' ;;
    *)       echo "# unknown suite $s"; rc=1 ;;
  esac
  ran+=("$(basename "$s" .sql)")
  ok $rc "$(basename "$s") passes against the server under memcheck ($((SECONDS - t0)) s)"
done
dropdb vg_probe

# 4. stop (a fast shutdown: every process exits and writes its leak summary)
as_pg "$bindir/pg_ctl" -D "$data" -m fast -w -t 900 stop >/dev/null 2>&1
wait "$vgpid"; vgpid=
echo "# valgrind time: $((SECONDS - start)) s for ${ran[*]}"

# 5. the verdict.  Each report is between VGERR-BEGIN and VGERR-END; a
# report is tokex's when one of its frames (the error's stack, the stack
# that allocated or freed the block, or the one that created the
# uninitialised value) is in tokex.so.
compdir=$(readelf --debug-dump=info "$lib" 2>/dev/null | awk -F': ' '/DW_AT_comp_dir/ { print $NF; exit }')
tokexframe='\((in [^)]*tokex\.so'
[ -z "$compdir" ] || tokexframe+="|$compdir/src/[^)]*"
tokexframe+=')\)'
reports() {  # every report, blank-line separated, with its file name first
  awk '/^==[0-9]+== VGERR-BEGIN/ { inb = 1; printf "%s\n", FILENAME; next }
       /^==[0-9]+== VGERR-END/ { inb = 0; print ""; next } inb' "$logs"/vg.*.log
}
tokexreports() { reports | awk -v RS= -v re="$tokexframe" '$0 ~ re { print $0 "\n" }'; }
nlogs=$(ls "$logs" | wc -l)
# each process's last error summary (-v prints it twice)
summaries=$(for f in "$logs"/vg.*.log; do grep 'ERROR SUMMARY:' "$f" | tail -1; done)
nsummary=$(grep -c 'ERROR SUMMARY:' <<<"$summaries")
nerrors=$(sed -n 's/.*ERROR SUMMARY: \([0-9]*\) errors from \([0-9]*\) contexts.*/\1 \2/p' <<<"$summaries" |
  awk '{ e += $1; c += $2 } END { print e + 0, c + 0 }')
nsupp=$(sed -n 's/.*(suppressed: \([0-9]*\) from.*/\1/p' <<<"$summaries" | awk '{ s += $1 } END { print s + 0 }')
ntokex=$(tokexreports | awk -v RS= 'END { print NR }')
kinds=$(reports | awk -v RS= '{ sub(/^[^\n]*\n/, ""); sub(/\n.*/, ""); sub(/^==[0-9]+== /, "");
    gsub(/[0-9,]+ (\([0-9,]+ direct, [0-9,]+ indirect\) )?bytes in [0-9,]+ blocks/, "N bytes in N blocks");
    gsub(/ in loss record [0-9,]+ of [0-9,]+/, ""); print }' | sort | uniq -c | sort -rn)
echo "# $nlogs processes logged by memcheck ($nsummary wrote an error summary)"
echo "# errors: ${nerrors% *} (${nerrors#* } contexts) after suppressions; $nsupp suppressed"
[ -z "$kinds" ] || sed 's/^/#   /' <<<"$kinds"
# what was suppressed, by suppression (valgrind's own default ones included)
cat "$logs"/vg.*.log | sed -n 's/.*used_suppression: *\([0-9]*\) \([^ ]*\) .*/\2 \1/p' |
  awk '{ n[$1] += $2 } END { for (k in n) printf "#   suppressed %6d  %s\n", n[k], k }' | sort -k3
if [ "$ntokex" != 0 ]; then
  echo "# reports with a frame in tokex.so:"
  tokexreports | sed 's/^/# /'
fi
# the audit writer ran under memcheck: it wrote its own log, summary included
[ -n "$writer" ] && grep -q 'ERROR SUMMARY' "$logs/vg.$writer.log" 2>/dev/null; ok $? "the audit writer (pid ${writer:-none}) ran under memcheck and logged its summary"
is "$(tokexreports | grep -cE 'Invalid (read|write)|uninitialised|definitely lost')" 0 "no invalid access, uninitialised use or definite leak with a frame in tokex.so"
is "$ntokex" 0 "no memcheck report with a frame in tokex.so"
died='was terminated by signal'
sed '/received fast shutdown request/q' "$tmp/server.log" | grep -E "$died" | head -5 | sed 's/^/# /'
is "$(sed '/received fast shutdown request/q' "$tmp/server.log" | grep -cE "$died")" 0 "no server process died while the suites ran"
finish
