#!/usr/bin/env bash
# deps.sh: what `make fuzz` needs beyond `make deps`: clang with libFuzzer and the
# sanitizer runtimes (Debian: clang, libclang-rt-dev). Installs them when missing.
set -euo pipefail
have() {
  printf '#include <stdint.h>\n#include <stddef.h>\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { return 0; }\n' |
    clang -x c -fsanitize=fuzzer,address -fopenmp=libgomp - -o /dev/null 2> /dev/null
}
if command -v clang > /dev/null && have; then
  echo "fuzz deps: clang with libFuzzer present"
  exit 0
fi
echo "fuzz deps: installing clang libclang-rt-dev"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends clang libclang-rt-dev > /dev/null
have || { echo "fuzz deps: clang still cannot build a libFuzzer binary" >&2; exit 1; }
