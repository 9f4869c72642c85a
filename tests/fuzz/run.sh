#!/usr/bin/env bash
# run.sh: run the libFuzzer harnesses built in BUILD/fuzz/ for SECONDS each, from their
# seed corpora (tests/fuzz/corpus/<name>/, read only; new inputs go to
# BUILD/corpus/<name>/). A crash, leak, timeout or over-large allocation stops that
# harness and leaves its input in BUILD/crashes/; the run then fails, naming it.
#   tests/fuzz/run.sh BUILD SECONDS NAME...
set -u
build=${1:?usage: tests/fuzz/run.sh BUILD SECONDS NAME...}
seconds=${2:?}
shift 2
root=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "$build/crashes"
status=0
for name in "$@"; do
  mkdir -p "$build/corpus/$name"
  # libhdf5 1.10.8 leaks on some failed opens of damaged files (tests/fuzz/fuzz_shard.c)
  leaks=1
  [ "$name" = shard ] && leaks=0
  log=$build/fuzz-$name.log
  ASAN_OPTIONS="abort_on_error=1:detect_leaks=$leaks" "$build/fuzz/fuzz_$name" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=1024 \
    -detect_leaks=$leaks -print_final_stats=1 -artifact_prefix="$build/crashes/$name-" \
    "$build/corpus/$name" "$root/tests/fuzz/corpus/$name" > "$log" 2>&1
  rc=$?
  runs=$(grep -m1 -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$')
  if [ "$rc" -eq 0 ]; then
    echo "fuzz: $name: ${runs:-?} runs in ${seconds} s, no crash"
  else
    status=1
    echo "fuzz: $name: FAILED (exit $rc): $(grep -m1 -E 'ERROR|SUMMARY|Test unit written' "$log")"
    grep -E 'Test unit written to' "$log" | sed 's/^/  /'
    echo "  log: $log; add the input to tests/data/fuzz/$name/ as a regression case (tests/fuzz/README.md)"
  fi
done
exit $status
