#!/usr/bin/env bash
# Runs every test of the project and ends with one countable line: "N passed, N failed".
#   tests/run_tests.sh BUILD_DIR [PYTHON_VENV]
# C unit tests: every BUILD_DIR/tests/test_* binary (cmocka, TAP output).
# CLI tests: every tests/cli/test_*.sh (TAP-style "ok - name" / "not ok - name" lines),
# run with DSA=BUILD_DIR/dsa; PYTHON_VENV (may be empty) is where h5py lives.
set -u
build=${1:?usage: tests/run_tests.sh BUILD_DIR [PYTHON_VENV]}
pyenv=${2:-}
root=$(cd "$(dirname "$0")/.." && pwd)
logdir=$(mktemp -d "${TMPDIR:-/tmp}/dsa-tests-XXXXXX")
passed=0 failed=0 skipped=0
failures=()

# Count TAP lines of one suite's output; a non-zero exit with no failing line counts as
# one failure (a crash or a sanitizer report).
count() { # name logfile exit_code
  local name=$1 log=$2 rc=$3 p f s
  # cmocka's TAP output marks a skipped test "not ok N # SKIP"; the CLI tests "ok - x # SKIP".
  p=$(grep -cE '^ok [0-9]*' "$log" | head -1)
  s=$(grep -cE '^(not )?ok [0-9]* ?-? ?.*# ?SKIP' "$log" | head -1)
  f=$(grep -E '^not ok' "$log" | grep -cvE '# ?SKIP' | head -1)
  p=$((p - $(grep -cE '^ok [0-9]* ?-? ?.*# ?SKIP' "$log" | head -1)))
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
  passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
  printf '%-28s %4d passed %3d failed %3d skipped\n' "$name" "$p" "$f" "$s"
  if [ "$f" -gt 0 ]; then
    failures+=("$name")
    echo "----- $name output (last 60 lines) -----"
    tail -n 60 "$log"
    echo "-----"
  fi
}

for t in "$build"/tests/test_*; do
  [ -x "$t" ] || continue
  name=$(basename "$t")
  log="$logdir/$name.log"
  (cd "$root" && CMOCKA_MESSAGE_OUTPUT=TAP timeout 900 "$t") > "$log" 2>&1
  count "$name" "$log" $?
done

for t in "$root"/tests/cli/test_*.sh; do
  name=cli/$(basename "$t" .sh)
  log="$logdir/$(basename "$t").log"
  (cd "$root" && DSA="$build/dsa" BUILD="$build" PYENV="$pyenv" timeout 900 bash "$t") > "$log" 2>&1
  count "$name" "$log" $?
done

rm -rf "$logdir"
if [ ${#failures[@]} -gt 0 ]; then echo "failing suites: ${failures[*]}"; fi
echo "tests: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
