# TAP helpers for the shell suites (source it): ok, is, finish.
n=0 failed=0
ok() {  # ok <exit-status> <description>
  n=$((n + 1))
  if [ "$1" -eq 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; failed=$((failed + 1)); fi
}
is() {  # is <have> <want> <description>
  n=$((n + 1))
  if [ "$1" == "$2" ]; then echo "ok $n - $3"
  else echo "not ok $n - $3"; echo "#   have: $1" | sed '2,$s/^/#         /'; echo "#   want: $2"; failed=$((failed + 1)); fi
}
# the plan at the end, a summary line, and the exit status
finish() { echo "1..$n"; echo "# $n tests, $failed failed"; [ $failed -eq 0 ]; }
