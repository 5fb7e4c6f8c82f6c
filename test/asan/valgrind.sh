#!/usr/bin/env bash
# The JOSE core under valgrind's memcheck: the unit test programs (plain
# build, test/unit) run with full leak checking; any memcheck error or a
# definite or indirect leak fails the program.  A second opinion beside the
# ASan build, for what ASan does not see (uninitialised reads in particular,
# including inside OpenSSL and jansson).  Not in CI (minutes under
# valgrind); the server itself under memcheck is valgrind-server.sh.
# TAP output.
#
#   bash test/asan/valgrind.sh                  # all four programs
#   bash test/asan/valgrind.sh test_negative    # some
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
source "$root/test/tap.sh"
command -v valgrind >/dev/null || { echo "1..0 # SKIP valgrind is not installed"; exit 0; }
make -s -C "$root/test/unit" all >/dev/null || { echo "Bail out! test/unit does not build"; exit 1; }
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for t in ${*:-test_jose test_vectors test_negative test_credentials}; do
  start=$SECONDS
  valgrind -q --leak-check=full --errors-for-leak-kinds=definite,indirect --error-exitcode=99 \
    "$root/test/unit/build/plain/$t" >"$log" 2>&1
  rc=$?
  [ $rc -eq 0 ] || grep -E '^==[0-9]+==|not ok' "$log" | head -30 | sed 's/^/# /'
  ok $rc "$t under memcheck: $(grep -c '^ok' "$log") tests pass, no memcheck error or leak ($((SECONDS - start)) s)"
done
finish
