# test_gpu_bundle.sh: the GPU bundle (make gpu-bundle) is self-contained and its gpu-check
# runs on a bare machine: this one, under env -i, with nothing of the build machine's
# HDF5/OpenBLAS/cJSON/cmocka/zstd/OpenMP on the library path, and (as root, where chroot is
# allowed) inside a fake root that holds only the bundle, glibc and the C++ runtime, the
# CUDA libraries a GPU machine has and the bundle does not carry (cuBLAS/cuBLASLt, NCCL: the
# toolkit's or PyTorch's wheels there), and the shell tools gpu-check uses. Without a GPU its GPU parts must be skipped, never passed.
#   GPU_BUNDLE=build-gpu DSA=build-gpu/bin/dsa bash tests/cli/test_gpu_bundle.sh
# (make gpu-bundle-check builds the bundle and runs this; .ci/run calls it. In make test,
# where GPU_BUNDLE is unset, it skips: building the bundle takes minutes.)
if [ -z "${GPU_BUNDLE:-}" ]; then
  echo "ok - the GPU bundle # SKIP GPU_BUNDLE is not set: make gpu-bundle-check builds the bundle and runs this test"
  exit 0
fi
. "$(dirname "$0")/lib.sh"
b=$(cd "$GPU_BUNDLE" && pwd)
root=$(cd "$(dirname "$0")/../.." && pwd)
# What the bare GPU machine lacks: none of it may come from outside the bundle.
forbidden='lib(hdf5|openblas|cjson|cmocka|zstd|gomp|gfortran|quadmath|sz|aec|curl|cudart)'

# ---- layout ------------------------------------------------------------------------------
missing=""
for f in bin/dsa gpu-check BUNDLE.txt configs/tiny-dsa.json configs/deepseek-v3.2.json lib/hdf5-plugin/libdsa_h5zstd.so \
         tools/bench_gpu_torch.py tests/data; do
  [ -e "$b/$f" ] || missing="$missing $f"
done
if [ -z "$missing" ]; then ok "the bundle holds dsa, gpu-check, the configs, the test data and the plugin"; else not_ok "the bundle lacks:$missing"; fi
want=0 have=0 absent=""
for src in "$root"/tests/test_*.c; do
  want=$((want + 1)); n=$(basename "$src" .c)
  if [ -x "$b/tests/$n" ]; then have=$((have + 1)); else absent="$absent $n"; fi
done
if [ "$want" -eq "$have" ]; then ok "every tests/test_*.c has its binary in the bundle ($have)"; else not_ok "test binaries missing from the bundle:$absent"; fi
expect_output "BUNDLE.txt names the commit and the targets" "^commit: [0-9a-f]{40}" cat "$b/BUNDLE.txt"
archive_bytes=$(stat -c %s "$b.tar.xz" 2> /dev/null || echo 0)
if [ "$archive_bytes" -gt 0 ] && [ "$archive_bytes" -le $((48 * 1048576)) ]; then
  ok "the archive that travels is $((archive_bytes / 1048576)) MiB, within 48 MiB"
else
  not_ok "the archive $b.tar.xz is $archive_bytes bytes (limit 48 MiB)"
fi
if tar -tJf "$b.tar.xz" > "$last_out" 2>&1 && grep -q "^$(basename "$b")/gpu-check$" "$last_out"; then
  ok "the archive unpacks to $(basename "$b")/ with gpu-check"
else
  not_ok "the archive lists $(basename "$b")/gpu-check"
fi

# ---- targets: sm_90 machine code + PTX; host code without AVX-512 ------------------------
if command -v cuobjdump > /dev/null; then
  cuobjdump --list-elf "$b/bin/dsa" > "$last_out" 2>&1
  cuobjdump --list-ptx "$b/bin/dsa" >> "$last_out" 2>&1
  if grep -q "sm_90" "$last_out" && grep -qE "ptx.*(compute_)?90|sm_90.*ptx" "$last_out"; then ok "dsa carries sm_90 machine code and its PTX"
  else not_ok "dsa carries sm_90 machine code and its PTX"; fi
else
  skip "dsa carries sm_90 machine code and its PTX" "cuobjdump is not on PATH"
fi
zmm=$(objdump -d --no-show-raw-insn "$b/bin/dsa" 2> /dev/null | grep -c '%zmm')
if [ "$zmm" -eq 0 ]; then ok "the host code uses no AVX-512 registers (x86-64-v3)"; else not_ok "bin/dsa uses %zmm in $zmm instructions: not an x86-64-v3 build"; fi

# ---- libraries: only the bundle's own on the path -------------------------------------------
bad=""
for f in "$b"/bin/* "$b"/tests/test_* "$b"/lib/*.so* "$b"/lib/hdf5-plugin/*.so; do
  env -i LD_LIBRARY_PATH="$b/lib" ldd "$f" > "$work/ldd.txt" 2>&1
  if grep -q "not found" "$work/ldd.txt"; then bad="$bad $(basename "$f"):$(awk '/not found/ {print $1}' "$work/ldd.txt" | tr '\n' ',')"; fi
  if grep -E "$forbidden" "$work/ldd.txt" | grep -v "=> $b/" | grep -q "=>"; then
    bad="$bad $(basename "$f")<-$(grep -E "$forbidden" "$work/ldd.txt" | grep -v "=> $b/" | awk '{print $3}' | tr '\n' ',')"
  fi
done
if [ -z "$bad" ]; then ok "ldd: every binary and library resolves, HDF5/OpenBLAS/cJSON/cmocka/zstd/OpenMP only from the bundle"
else echo "$bad" > "$last_out"; not_ok "ldd with LD_LIBRARY_PATH=$b/lib"; fi
# At run time: every library the loader opens is the bundle's or the system set's.
env -i LD_DEBUG=libs LD_LIBRARY_PATH="$b/lib" "$b/bin/dsa" info > "$work/ld_debug.txt" 2>&1
loaded=$(sed -n 's/.*calling init: //p' "$work/ld_debug.txt" | sort -u)
stray=$(grep -v "^$b/" <<< "$loaded" | grep -vE '/(ld-linux-x86-64|libc|libm|libdl|librt|libpthread|libstdc\+\+|libgcc_s|libcuda|libnvidia[^/]*|libcublas|libcublasLt|libnccl)\.so' || true)
if [ -n "$loaded" ] && [ -z "$stray" ]; then ok "dsa info loads only the bundle's libraries and glibc/libstdc++/libgcc ($(wc -l <<< "$loaded") objects)"
else echo "loaded: $loaded" > "$last_out"; echo "stray: $stray" >> "$last_out"; not_ok "dsa info loads libraries from outside the bundle"; fi
expect_output "dsa bench gpu refuses by name without a CUDA device" "needs (a CUDA device|the CUDA backend)" \
  env -i LD_LIBRARY_PATH="$b/lib" "$b/bin/dsa" bench gpu

# ---- gpu-check on a bare machine --------------------------------------------------------------
# The fake root: the bundle, the shell tools gpu-check calls with their libraries, nothing else.
copy_lib() { # root path: a library at its own path inside the root (/lib is /usr/lib there)
  local d=$1${2#/usr}
  d=$1/usr${d#$1}
  mkdir -p "$(dirname "$d")" && cp -Ln "$2" "$d" 2> /dev/null
}
make_root() { # dir
  local r=$1 t p l
  mkdir -p "$r/usr/bin" "$r/usr/lib" "$r/usr/lib64" "$r/tmp" "$r/dev" "$r/proc" "$r/out" && chmod 1777 "$r/tmp"
  ln -s usr/bin "$r/bin"; ln -s usr/lib "$r/lib"; ln -s usr/lib64 "$r/lib64"
  for t in bash sh env timeout date mkdir dirname basename cat rm mv cp ls grep sed awk tr wc head tail cut paste cmp nproc \
           sort stat du uname sleep mktemp ldd tar gzip; do
    p=$(command -v "$t") || continue
    cp -L "$p" "$r/usr/bin/$t"
    for l in $(ldd "$p" 2> /dev/null | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'); do copy_lib "$r" "$l"; done
  done
  # the C and C++ runtimes the bundle's binaries may take from the system
  for l in $(env -i LD_LIBRARY_PATH="$b/lib" ldd "$b/bin/dsa" "$b"/tests/test_* 2> /dev/null |
             awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | grep -v "^$b/" | sort -u); do
    copy_lib "$r" "$l"
  done
  cp -a "$b" "$r/bundle"
}
fake=$work/root
in_root=0
if [ "$(id -u)" -eq 0 ] && command -v chroot > /dev/null; then
  make_root "$fake"
  if chroot "$fake" /usr/bin/env -i /usr/bin/bash -c 'echo ok' > /dev/null 2>&1; then in_root=1; fi
fi
if [ "$in_root" -eq 1 ]; then
  leaked=$(cd "$fake" && find . -path ./bundle -prune -o -name '*.so*' -print | grep -E "$forbidden" || true)
  if [ -z "$leaked" ]; then ok "the fake root holds none of the build machine's HDF5/OpenBLAS/cJSON/cmocka/zstd/OpenMP"
  else echo "$leaked" > "$last_out"; not_ok "the fake root holds libraries the GPU machine lacks"; fi
  run=(chroot "$fake" /usr/bin/env -i PATH=/usr/bin LD_LIBRARY_PATH=/bundle/lib /bundle/gpu-check /out --time-scale 8 --steps 2)
  outdir=$fake/out
  where="in a fake root (chroot: only the bundle, glibc, libstdc++, cuBLAS/NCCL and shell tools)"
else
  run=(env -i PATH=/usr/bin:/bin LD_LIBRARY_PATH="$b/lib" "$b/gpu-check" "$work/out" --time-scale 8 --steps 2)
  outdir=$work/out
  where="under env -i (no chroot here: not root, or chroot refused)"
fi
"${run[@]}" > "$work/gpu-check.log" 2>&1
rc=$?
cp "$work/gpu-check.log" "$last_out"
sed -n 's/^gpu-check: /# gpu-check: /p' "$work/gpu-check.log"
summary=$(grep -E '^gpu-check: [0-9]+ passed, [0-9]+ failed, [0-9]+ skipped$' "$work/gpu-check.log" | tail -1)
if [ "$rc" -eq 0 ] && [ -n "$summary" ]; then ok "gpu-check runs $where and exits 0: ${summary#gpu-check: }"
else not_ok "gpu-check runs $where (exit $rc, summary: ${summary:-none})"; fi
passed=$(awk '{print $2}' <<< "$summary"); failed=$(awk '{print $4}' <<< "$summary"); skipped=$(awk '{print $6}' <<< "$summary")
if [ "${failed:-1}" -eq 0 ] && [ "${skipped:-0}" -gt 0 ] && [ "${passed:-0}" -gt 0 ]; then
  ok "without a GPU the CPU parts pass and the GPU parts are skipped ($passed passed, $skipped skipped)"
else not_ok "the CPU parts pass and the GPU parts skip ($summary)"; fi
for part in parity-fp32 resume bench-gpu; do
  if grep -qE "^gpu-check: $part +skipped .*no CUDA device" "$work/gpu-check.log"; then ok "$part is reported skipped (no CUDA device), not passed"
  else not_ok "$part is reported skipped for want of a GPU"; fi
done
expect_output "the CPU reference run of tiny-dsa (both stages) passed" '^gpu-check: train-cpu-fp32 +passed +[0-9.]+s +4 steps' \
  cat "$work/gpu-check.log"
expect_output "every CPU unit test binary ran and passed" '^gpu-check: test/test_model +passed' cat "$work/gpu-check.log"
if [ -s "$outdir/gpu-check.json" ] && python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
assert d["passed"] + d["failed"] + d["skipped"] == len(d["parts"]) > 0, "counts"
assert all(p["result"] in ("passed", "failed", "skipped") and "wall_s" in p for p in d["parts"]), "parts"
assert d["commit"] and d["device"] == "none", d["device"]
' "$outdir/gpu-check.json" > "$work/json.txt" 2>&1; then
  ok "gpu-check.json: per-part results and wall times, the commit, device none"
else cp "$work/json.txt" "$last_out"; not_ok "gpu-check.json is complete"; fi
expect_output "gpu-check.md has the table of parts" '^\| test/test_core \| passed \|' cat "$outdir/gpu-check.md"
if tar -tzf "$outdir/gpu-check-logs.tar.gz" 2> /dev/null | grep -q '^logs/test_core.log$'; then ok "every part's log is in gpu-check-logs.tar.gz"
else not_ok "gpu-check-logs.tar.gz holds the parts' logs"; fi
n_out=$(find "$outdir" -type f | wc -l)
if [ "$n_out" -le 8 ]; then ok "OUTDIR holds $n_out files (the device tool brings back 8)"; else find "$outdir" > "$last_out"; not_ok "OUTDIR holds $n_out files"; fi

# ---- the PyTorch side of the benchmark, on the CPU (the GPU machine runs it on the GPU) ----------
torch_py=${TORCH_PY:-$root/.venv-torch/bin/python}
if [ -x "$torch_py" ] && "$torch_py" -c 'import torch' > /dev/null 2>&1; then
  "$torch_py" "$b/tools/bench_gpu_torch.py" --device cpu --config "$b/configs/tiny-dsa.json" --seq-len 48,96 --reps 1 \
    --json "$work/torch.jsonl" > "$last_out" 2>&1
  n=$(grep -c '"status": "ok"' "$work/torch.jsonl" 2> /dev/null || echo 0)
  if [ "$n" -eq 14 ]; then ok "tools/bench_gpu_torch.py times its 7 ops at 2 lengths (CPU smoke run)"; else not_ok "bench_gpu_torch.py: $n of 14 timings"; fi
  sed 's/"impl": "torch"/"impl": "dsa", "flops": 1e9/' "$work/torch.jsonl" > "$work/as_dsa.jsonl"
  expect_output "its --ratio table lines up both runs, the stage steps included" '^\| 96 \| sparse_step \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \|' \
    "$torch_py" "$b/tools/bench_gpu_torch.py" --ratio "$work/as_dsa.jsonl" "$work/torch.jsonl"
else
  skip "tools/bench_gpu_torch.py on the CPU" "no PyTorch environment (make torch-env; TORCH_PY=python)"
fi
