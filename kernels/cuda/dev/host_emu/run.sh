#!/usr/bin/env bash
# run.sh: tests/test_cuda_kl.c against the CUDA KL sources (kernels/cuda/indexer_kl.cu,
# indexer_kl_sparse.cu) compiled for the host and run under the emulation in include/
# (README.md here). A check of the kernels' logic on a machine without a GPU, not of the
# device: minutes on two cores (one OS thread per CUDA thread).
#   kernels/cuda/dev/host_emu/run.sh [BUILD_DIR]      after `make` (BUILD_DIR: build)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../../.." && pwd)
build=${1:-build}
case $build in /*) ;; *) build=$root/$build ;; esac
[ -f "$build/libdsa.a" ] || { echo "run.sh: $build/libdsa.a is missing: run make first" >&2; exit 1; }
work=$(mktemp -d "${TMPDIR:-/tmp}/dsa-host-emu-XXXXXX")
trap 'rm -rf "$work"' EXIT
arch="-march=native" # dsa_fma_rule fuses where the CPU build does (kernels/rules/hd.h)
for f in indexer_kl indexer_kl_sparse; do
  # launches kernel<<<grid, block, shm, stream>>>(args) -> emu_launch(...); dynamic shared memory
  sed -E -e 's/^(\s*)(\w+)<<<([^,]+), ([^,]+), ([^,]+), ([^>]+)>>>\((\w+)\);/\1emu_launch(\2, \3, \4, \5, \6, \7);/' \
         -e 's/extern __shared__ double (\w+)\[\];/double *\1 = emu_shm;/' "$root/kernels/cuda/$f.cu" > "$work/$f.cpp"
  if grep -q '<<<' "$work/$f.cpp"; then echo "run.sh: a launch of $f.cu is not in the form it rewrites" >&2; exit 1; fi
done
cxx="g++ -std=c++20 -O1 -g $arch -ffp-contract=off -Wall -Wextra -Werror -pthread -I$here/include -I$root"
for f in indexer_kl indexer_kl_sparse; do $cxx -c "$work/$f.cpp" -o "$work/$f.o"; done
$cxx -c "$here/emu_ops.cpp" -o "$work/emu_ops.o"
pkgs="hdf5 libzstd libcjson zlib"
openblas=/usr/lib/x86_64-linux-gnu/openblas-openmp
cc -std=c11 -D_GNU_SOURCE -O1 -g $arch -fopenmp -I"$root" $(pkg-config --cflags $pkgs) -I/usr/include/x86_64-linux-gnu/openblas-openmp \
  -DTEST_CUDA_KL_HOST_EMU=1 "$root/tests/test_cuda_kl.c" "$work"/*.o "$build/libdsa.a" -o "$work/test_cuda_kl_emu" \
  $(pkg-config --libs $pkgs) -L$openblas -lopenblas -Wl,-rpath,$openblas -lpthread -lm -fopenmp -lstdc++ -lcmocka
cd "$root" && "$work/test_cuda_kl_emu"
