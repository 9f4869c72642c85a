#!/usr/bin/env bash
# gpu_bundle.sh: assembles build-gpu/, the self-contained bundle of `make gpu-bundle`, from
# a BUNDLE=1 build (Makefile), and the archive that travels to a bare GPU machine.
#   tools/gpu_bundle.sh OBJ_DIR BUNDLE_DIR MAX_MIB HOST_ARCH SM
#
# BUNDLE_DIR/
#   bin/dsa                      the CLI (HDF5, zstd, zlib, szip and libcudart linked in)
#   tests/test_*                 every C unit test binary of OBJ_DIR (the CUDA tests too)
#   lib/                         the shared libraries a bare machine lacks (OpenBLAS, its
#                                OpenMP and Fortran runtimes, cJSON, cmocka), found through
#                                the binaries' rpath $ORIGIN/../lib
#   lib/hdf5-plugin/             the HDF5 zstd plugin (for HDF5 tools: HDF5_PLUGIN_PATH)
#   configs/, tests/data/, tests/fuzz/corpus/   what the tests read (they run from here)
#   tools/bench_gpu_torch.py     the PyTorch side of the benchmark
#   gpu-check                    the check itself (tools/gpu_check.sh)
#   BUNDLE.txt                   commit, date, targets, compiler, contents
# BUNDLE_DIR.tar.xz beside it is what travels (MAX_MIB at most; this fails when over). On
# arrival: `tar xJf build-gpu.tar.xz` (without xz: `python3 -m tarfile -e build-gpu.tar.xz .`).
set -euo pipefail
obj=${1:?usage: tools/gpu_bundle.sh OBJ_DIR BUNDLE_DIR MAX_MIB HOST_ARCH SM}
out=${2:?}; max_mib=${3:?}; host_arch=${4:?}; sm=${5:?}
root=$(cd "$(dirname "$0")/.." && pwd)
openblas_dir=${OPENBLAS_DIR:-/usr/lib/x86_64-linux-gnu/openblas-openmp}
die() { echo "gpu-bundle: $*" >&2; exit 1; }

# Libraries every machine that runs the bundle has: glibc, the C++ and GCC runtimes, and
# the NVIDIA driver and CUDA libraries (the GPU machine has CUDA 13's runtime libraries;
# cuBLAS alone is larger than the whole archive may be).
system_lib() {
  case $1 in
    linux-vdso.so*|ld-linux-x86-64.so*|libc.so*|libm.so*|libdl.so*|librt.so*|libpthread.so*|libresolv.so*) return 0 ;;
    libstdc++.so*|libgcc_s.so*) return 0 ;;
    libcuda.so*|libnvidia-*|libcudart.so*|libcublas.so*|libcublasLt.so*|libnccl.so*|libnvrtc.so*|libnvJitLink.so*) return 0 ;;
  esac
  return 1
}

[ -x "$obj/dsa" ] || die "$obj/dsa is missing: run make gpu-bundle (it builds $obj first)"
rm -rf "$out" "$out.tar.xz"
mkdir -p "$out/bin" "$out/tests" "$out/lib/hdf5-plugin" "$out/tools" "$out/tests/fuzz"

cp "$obj/dsa" "$out/bin/"
n_tests=0
for t in "$obj"/tests/test_*; do
  [ -f "$t" ] && [ -x "$t" ] || continue
  cp "$t" "$out/tests/"; n_tests=$((n_tests + 1))
done
[ "$n_tests" -gt 0 ] || die "no test binaries under $obj/tests"
cp "$obj/hdf5-plugin/libdsa_h5zstd.so" "$out/lib/hdf5-plugin/"

# Shared libraries: whatever ldd resolves outside the system set, copied under its soname,
# then the same for the copies until nothing new appears. OpenBLAS comes from the OpenMP
# build's directory, as the normal build's rpath pins it.
copy_deps() { # elf
  LD_LIBRARY_PATH="$out/lib:$openblas_dir" ldd "$1" | while read -r name arrow path _; do
    [ "$arrow" = "=>" ] || continue
    system_lib "$name" && continue
    [ "$path" = "not" ] && die "$1 needs $name, which is not installed here"
    [ -e "$out/lib/$name" ] || { cp -L "$path" "$out/lib/$name"; echo "$name"; }
  done
}
new=$(for f in "$out"/bin/* "$out"/tests/test_* "$out"/lib/hdf5-plugin/*; do copy_deps "$f" || exit 1; done)
while [ -n "$new" ]; do
  new=$(for f in "$out"/lib/*.so*; do copy_deps "$f" || exit 1; done)
done

# Debug information off (the symbols stay, for backtraces): a third of the size.
strip --strip-debug "$out"/bin/* "$out"/tests/test_* "$out"/lib/*.so* "$out"/lib/hdf5-plugin/*.so
chmod 644 "$out"/lib/*.so* "$out"/lib/hdf5-plugin/*.so

cp -r "$root/configs" "$out/"
mkdir -p "$out/tests/data"
cp -r "$root/tests/data/." "$out/tests/data/"
[ -d "$root/tests/fuzz/corpus" ] && cp -r "$root/tests/fuzz/corpus" "$out/tests/fuzz/"
cp "$root/tools/bench_gpu_torch.py" "$out/tools/"
cp "$root/tools/gpu_check.sh" "$out/gpu-check"
chmod 755 "$out/gpu-check"

commit=$(git -C "$root" rev-parse HEAD 2> /dev/null || echo unknown)
git -C "$root" diff --quiet HEAD 2> /dev/null || commit="$commit (with uncommitted changes)"
{
  echo "dsa GPU bundle (make gpu-bundle; README.md, \"GPU check\")"
  echo "commit: $commit"
  echo "built: $(date -u '+%Y-%m-%d %H:%M UTC') on $(uname -m), $(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  echo "host code: $host_arch; device code: $sm machine code + PTX (compute_${sm#sm_})"
  echo "nvcc: $(nvcc --version 2> /dev/null | grep -m1 release || echo unknown)"
  echo "cc: $(${CC:-cc} --version | head -1)"
  echo "test binaries: $n_tests"
  echo "shipped libraries: $(cd "$out/lib" && ls *.so* | tr '\n' ' ')"
} > "$out/BUNDLE.txt"

# Check what was built: nothing missing with only the bundle on the library path, and the
# device code of the requested target plus its PTX in dsa.
for f in "$out"/bin/* "$out"/tests/test_* "$out"/lib/*.so*; do
  missing=$(env -i LD_LIBRARY_PATH="$out/lib" ldd "$f" 2>&1 | awk '/not found/ {print $1}' | while read -r n; do
    system_lib "$n" || echo "$n"; done)
  [ -z "$missing" ] || die "$f: $missing not found with LD_LIBRARY_PATH=$out/lib"
done
if command -v cuobjdump > /dev/null; then
  cuobjdump --list-elf "$out/bin/dsa" | grep -q "$sm" || die "$out/bin/dsa holds no $sm device code"
  cuobjdump --list-ptx "$out/bin/dsa" | grep -q "${sm#sm_}" || die "$out/bin/dsa holds no compute_${sm#sm_} PTX"
fi

tar -C "$(dirname "$out")" -cf - "$(basename "$out")" | xz -6 -T1 > "$out.tar.xz.tmp"
mv "$out.tar.xz.tmp" "$out.tar.xz"
folder_kib=$(du -sk "$out" | cut -f1)
archive_bytes=$(stat -c %s "$out.tar.xz")
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
echo "gpu-bundle: $out: dsa, $n_tests test binaries, $(ls "$out/lib" | grep -c '\.so') libraries; folder $(mib $((folder_kib * 1024))) MiB"
echo "gpu-bundle: $out.tar.xz: $(mib "$archive_bytes") MiB (limit $max_mib MiB); on arrival: tar xJf $(basename "$out").tar.xz && $(basename "$out")/gpu-check OUTDIR"
[ "$archive_bytes" -le $((max_mib * 1048576)) ] || die "$out.tar.xz is $(mib "$archive_bytes") MiB, over the $max_mib MiB that may travel"
