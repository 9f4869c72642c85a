#!/bin/sh
# bench/run.sh BUILD_DIR: run the benchmarks with the binaries already built in BUILD_DIR
# (`make bench` builds them first) and append the results to bench/RESULTS.md.
#
# Builds nothing. The loader benchmark with its defaults generates 3 data sets of 128Mi
# tokens (text-like, synthetic, uniform; about 1.3 GB of temporary files at a time under
# $TMPDIR or /tmp, removed afterwards) and takes about 45 s on 2 cores (5 timed runs of each measurement, median reported).
set -eu

if [ $# -ne 1 ]; then
    echo "usage: bench/run.sh BUILD_DIR" >&2
    exit 2
fi
build=$1
root=$(cd "$(dirname "$0")/.." && pwd)
dsa="$build/dsa"
if [ ! -x "$dsa" ]; then
    echo "bench/run.sh: $dsa not found; build it first (make bench)" >&2
    exit 1
fi

cd "$root"
"$dsa" bench loader --repeat 5 --record bench/RESULTS.md
