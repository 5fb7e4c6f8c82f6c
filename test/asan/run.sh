#!/usr/bin/env bash
# The whole extension under AddressSanitizer and UndefinedBehaviorSanitizer:
# tokex built with -fsanitize=address,undefined (out of tree, staged in a
# temporary directory, never installed over anything), a cluster of its own
# started with libasan preloaded into every server process and tokex in
# shared_preload_libraries, then pg_regress, every pgTAP file and the HTTP
# face's PostgREST replay against it.  Clean = every suite passes and no
# server process printed an ASan, LeakSanitizer or UBSan report (leaks of
# PostgreSQL's own process-lifetime memory are suppressed in lsan.supp).
#
#   bash test/asan/run.sh            # all three suites (several minutes)
#   bash test/asan/run.sh regress    # some of: regress tap http
#
# Uses $PG_CONFIG's binaries and headers; the staged build is found through
# Debian's extension_destdir (control and SQL files, $libdir in
# module_pathname) and dynamic_library_path (the preload and the audit
# writer, which name the library "tokex"): one tokex.so in every process.  Not in .ci/run (too slow for it); run it before
# a release and after changes to C code.  TAP output.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
source "$root/test/tap.sh"
PG_CONFIG=${PG_CONFIG:-pg_config}
bindir=$("$PG_CONFIG" --bindir)
suites=${*:-regress tap http}
# clang's runtime: gcc's libasan preloaded into PostgreSQL deadlocks in
# bindtextdomain at start (Debian 12)
CLANG=${CLANG:-clang-16}
libasan=$("$CLANG" -print-file-name=libclang_rt.asan-x86_64.so)
# stacks name their modules either way; llvm-symbolizer (package llvm-16) adds function names
symbolizer=$(dirname "$(readlink -f "$(command -v "$CLANG")")")/llvm-symbolizer
[ -x "$symbolizer" ] || symbolizer=
tmp=$(mktemp -d)
data=$tmp/data build=$tmp/build dest=$tmp/dest
port=${TOKEX_ASAN_PORT:-5498}
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
  as_pg "$bindir/pg_ctl" -D "$data" -m immediate stop >/dev/null 2>&1
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
chmod a+rx "$tmp"

# 1. the sanitized build, in a copy of the tree (the tree's own objects
# stay as they are), staged under $dest
# built by clang, whose warnings on PostgreSQL's gcc-made flags and headers
# are not this build's business (the gcc build is the -Werror one)
san="-fsanitize=address,undefined -fno-omit-frame-pointer -w"
mkdir -p "$build"
tar -C "$root" --exclude=.git --exclude='*.o' --exclude='*.bc' --exclude='*.so' --exclude=node_modules \
    --exclude=build -cf - . | tar -C "$build" -xf -
if ! make -C "$build" PG_CONFIG="$PG_CONFIG" CC="$CLANG" COPT="$san" PG_CFLAGS= -j2 -s >"$tmp/build.log" 2>&1 ||
   ! make -C "$build" PG_CONFIG="$PG_CONFIG" CC="$CLANG" COPT="$san" PG_CFLAGS= DESTDIR="$dest" install -s >>"$tmp/build.log" 2>&1; then
  echo "Bail out! the sanitized build failed"; tail -20 "$tmp/build.log" | sed 's/^/# /'; exit 1
fi
lib=$dest$("$PG_CONFIG" --pkglibdir)/tokex.so
syms=$(nm -D "$lib")
ok "$(grep -q __asan_report <<<"$syms"; echo $?)" "tokex.so is built with ASan ($lib)"

# 2. the cluster: every server process runs with libasan preloaded
mkdir -p "$data" "$tmp/reports" && chmod a+rwx "$tmp/reports" && chmod 700 "$data"
[ "$(id -u)" = 0 ] && chown postgres "$data" "$tmp"
as_pg "$bindir/initdb" -D "$data" -U postgres -A trust >"$tmp/initdb.log" 2>&1 ||
  { echo "Bail out! initdb"; sed 's/^/# /' "$tmp/initdb.log"; exit 1; }
cat >>"$data/postgresql.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$tmp'
port = $port
extension_destdir = '$dest'
dynamic_library_path = '$(dirname "$lib"):\$libdir'
shared_preload_libraries = 'tokex'
max_connections = 40
CONF
export PGHOST=$tmp PGPORT=$port PGUSER=postgres
unset PGDATABASE PGSERVICE PGOPTIONS
# Leaks: PostgreSQL exits its processes without freeing what it keeps for
# their lifetime, so LeakSanitizer reports at every exit; it must not change
# the exit status (exitcode=0), and only a leak with a frame in tokex.so
# counts (below).  Stacks come from the fast unwinder, which may lose frames
# through libraries built without frame pointers (libcrypto, libjansson):
# TOKEX_ASAN_OPTIONS=fast_unwind_on_malloc=0 for exact (much slower) stacks.
srvenv=(env LD_PRELOAD="$libasan" ASAN_SYMBOLIZER_PATH="$symbolizer"
  ASAN_OPTIONS="detect_leaks=1:log_path=$tmp/reports/asan:abort_on_error=0:detect_odr_violation=0${TOKEX_ASAN_OPTIONS:+:$TOKEX_ASAN_OPTIONS}"
  LSAN_OPTIONS="exitcode=0:suppressions=$here/lsan.supp:print_suppressions=0"
  UBSAN_OPTIONS="print_stacktrace=1:log_path=$tmp/reports/ubsan")
if ! as_pg "${srvenv[@]}" "$bindir/pg_ctl" -D "$data" -l "$tmp/server.log" -w -t 120 start >/dev/null 2>&1; then
  echo "Bail out! the server did not start"; tail -20 "$tmp/server.log" | sed 's/^/# /'; exit 1
fi
pm=$(head -1 "$data/postmaster.pid")
ok "$(grep -q "$lib" "/proc/$pm/maps"; echo $?)" "the postmaster preloads the sanitized tokex.so"

# 3. the suites, against that server (the tree's own scripts)
cd "$root"
for s in $suites; do
  case $s in
    regress) make -s installcheck PG_CONFIG="$PG_CONFIG" >"$tmp/$s.log" 2>&1; rc=$?
             [ $rc -eq 0 ] || cat regression.diffs 2>/dev/null | head -40 | sed 's/^/# /' ;;
    tap)     PG_CONFIG="$PG_CONFIG" bash test/pgtap.sh >"$tmp/$s.log" 2>&1; rc=$? ;;
    http)    bash test/http/run.sh >"$tmp/$s.log" 2>&1; rc=$? ;;
    *)       echo "# unknown suite $s"; rc=1 ;;
  esac
  if [ $rc -ne 0 ]; then
    grep -E 'not ok|Failed|Dubious|ERROR|Bail' "$tmp/$s.log" | head -20 | sed 's/^/# /'
    mkdir -p "$here/reports" && cp "$tmp/$s.log" "$here/reports/"
  fi
  ok $rc "$s passes against the sanitized server"
done

# 4. the verdict: no sanitizer report from any server process
as_pg "$bindir/pg_ctl" -D "$data" -m fast stop >/dev/null 2>&1
# a leak counts when a frame of its allocation stack is in tokex.so
leaks() {
  awk '/^(Direct|Indirect) leak/ { if (blk ~ /tokex\.so/) n++; blk = "" } { blk = blk $0 "\n" }
       END { if (blk ~ /tokex\.so/) n++; print n + 0 }' "$@"
}
nreports=$(ls "$tmp"/reports | wc -l)
errors=$(cat "$tmp"/reports/* 2>/dev/null | grep -cE 'ERROR: AddressSanitizer|runtime error:')
tleaks=$(leaks /dev/null "$tmp"/reports/*)
if [ "$errors" != 0 ] || [ "$tleaks" != 0 ]; then
  grep -hE -B2 -A30 'ERROR: AddressSanitizer|runtime error:|tokex\.so' "$tmp"/reports/* | head -120 | sed 's/^/# /'
  mkdir -p "$here/reports" && cp "$tmp"/reports/* "$tmp/server.log" "$here/reports/"
fi
echo "# $nreports sanitizer logs written by server processes (LeakSanitizer at exit)"
is "$errors" 0 "no ASan or UBSan error in any server process"
is "$tleaks" 0 "no leak with a frame in tokex.so"
# (a process that exits with an error code is no crash: DROP DATABASE
# terminates the audit writer, and so does the shutdown)
died='was terminated by signal|redefine parameter'
sed '/received fast shutdown request/q' "$tmp/server.log" >"$tmp/running.log"
grep -E "$died" "$tmp/running.log" | head -10 | sed 's/^/# /'
is "$(grep -cE "$died" "$tmp/running.log")" 0 "no server process died while the suites ran"
finish
