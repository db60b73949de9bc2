#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Runs test binaries from BUILD_DIR and prints the total as its last line:
# "N passed, N failed". Exits non-zero on any failure. Each binary also gets an
# outer time limit, so a wedged harness cannot stall CI.
#
# Binaries run in parallel, VB_TEST_JOBS at a time (default: twice nproc, what
# measured fastest on a 2-core machine, where most cases wait on real-time
# audio; nproc for the sanitized builds; 1 runs them one after another). Each
# binary's output is collected and printed as one block when it finishes, so
# blocks never interleave. Binaries are independent: each case has its own
# scratch directory, and servers get ports from proc_free_port, which reserves
# them across processes (tests/proc.h).
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
# Sanitized binaries are CPU-bound rather than waiting on audio: one per
# core, so their timing-sensitive cases keep the headroom they assume.
per_core=2
case "$build" in */tsan|*/asan) per_core=1 ;; esac
jobs=${VB_TEST_JOBS:-$((per_core * $(nproc 2>/dev/null || echo 1)))}
[[ "$jobs" =~ ^[1-9][0-9]*$ ]] || { echo "run.sh: VB_TEST_JOBS must be a positive integer, not '$jobs'"; exit 2; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/vb-run.XXXXXX") || exit 2
children=()
cleanup() {
  for p in "${children[@]}"; do kill -- "$p" 2>/dev/null; done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The longest binaries start first, so the slowest one does not start last.
order=()
for t in "$@"; do case "$t" in test_e2e*|test_nginx|test_sim) order+=("$t") ;; esac; done
for t in "$@"; do case "$t" in test_e2e*|test_nginx|test_sim) ;; *) order+=("$t") ;; esac; done

# Finished binaries announce their name on this FIFO (one short line: atomic).
mkfifo "$tmp/done" && exec 3<>"$tmp/done" || exit 2

start() {
  local t=$1 bin=$build/tests/$1
  (
    s=$SECONDS
    if [ -x "$bin" ]; then
      timeout -k 5 "$outer" "$bin" >"$tmp/$t.out" 2>&1 </dev/null
      echo $? >"$tmp/$t.rc"
    else
      echo 127 >"$tmp/$t.rc"
    fi
    echo $((SECONDS - s)) >"$tmp/$t.s"
    echo "$t" >&3
  ) &
  children+=($!)
}

passed=0; failed=0; failed_bins=()
report() {
  local t=$1 rc out summary p f
  rc=$(cat "$tmp/$t.rc")
  echo "== $t ($(cat "$tmp/$t.s") s)"
  if [ "$rc" -eq 127 ] && [ ! -x "$build/tests/$t" ]; then
    echo "FAIL $t: $build/tests/$t not built"; failed=$((failed + 1)); failed_bins+=("$t"); return
  fi
  out=$(cat "$tmp/$t.out")
  printf '%s\n' "$out" | sed '$!b; /^# /d'
  summary=$(printf '%s\n' "$out" | grep -E '^# .*: [0-9]+ passed, [0-9]+ failed$' | tail -n 1)
  if [ -z "$summary" ]; then
    echo "FAIL $t: no summary (exit $rc)"; failed=$((failed + 1)); failed_bins+=("$t"); return
  fi
  p=$(sed -E 's/.*: ([0-9]+) passed, ([0-9]+) failed/\1/' <<<"$summary")
  f=$(sed -E 's/.*: ([0-9]+) passed, ([0-9]+) failed/\2/' <<<"$summary")
  passed=$((passed + p)); failed=$((failed + f))
  if [ "$f" -ne 0 ] || [ "$rc" -ne 0 ]; then
    failed_bins+=("$t")
    [ "$f" -eq 0 ] && failed=$((failed + 1))
  fi
}

next=0; running=0
while [ "$next" -lt "${#order[@]}" ] || [ "$running" -gt 0 ]; do
  while [ "$running" -lt "$jobs" ] && [ "$next" -lt "${#order[@]}" ]; do
    start "${order[$next]}"; next=$((next + 1)); running=$((running + 1))
  done
  read -r -u 3 t || break
  running=$((running - 1))
  report "$t"
done
wait
[ ${#failed_bins[@]} -eq 0 ] || echo "failing: ${failed_bins[*]}"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
