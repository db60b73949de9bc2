#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Runs test binaries from BUILD_DIR and prints the total as its last line:
# "N passed, N failed". Exits non-zero on any failure. Each binary also gets an
# outer time limit, so a wedged harness cannot stall CI.
set -u
build=$1; shift
case "$build" in
  */tsan) export VB_TEST_SLOW=${VB_TEST_SLOW:-4}
          export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1 second_deadlock_stack=1} ;;
  */asan) export VB_TEST_SLOW=${VB_TEST_SLOW:-3}
          export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1 abort_on_error=1}
          export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1 halt_on_error=1} ;;
esac
export VB_BUILD_DIR=$build
outer=${VB_TEST_BINARY_TIMEOUT:-1800}
passed=0; failed=0; failed_bins=()
for t in "$@"; do
  bin=$build/tests/$t
  echo "== $t"
  if [ ! -x "$bin" ]; then
    echo "FAIL $t: $bin not built"; failed=$((failed + 1)); failed_bins+=("$t"); continue
  fi
  out=$(timeout -k 5 "$outer" "$bin" 2>&1); rc=$?
  printf '%s\n' "$out" | sed '$!b; /^# /d'
  summary=$(printf '%s\n' "$out" | grep -E '^# .*: [0-9]+ passed, [0-9]+ failed$' | tail -n 1)
  if [ -z "$summary" ]; then
    echo "FAIL $t: no summary (exit $rc)"; failed=$((failed + 1)); failed_bins+=("$t"); continue
  fi
  p=$(sed -E 's/.*: ([0-9]+) passed, ([0-9]+) failed/\1/' <<<"$summary")
  f=$(sed -E 's/.*: ([0-9]+) passed, ([0-9]+) failed/\2/' <<<"$summary")
  passed=$((passed + p)); failed=$((failed + f))
  if [ "$f" -ne 0 ] || [ "$rc" -ne 0 ]; then
    failed_bins+=("$t")
    [ "$f" -eq 0 ] && failed=$((failed + 1))
  fi
done
[ ${#failed_bins[@]} -eq 0 ] || echo "failing: ${failed_bins[*]}"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
