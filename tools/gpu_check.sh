#!/usr/bin/env bash
# gpu_check.sh: the GPU check, prepared to run in one call on a lent GPU machine. `make
# gpu-bundle` copies it to build-gpu/gpu-check; it runs from any directory, on the bundle
# it sits in (README.md, "GPU check").
#   build-gpu/gpu-check OUTDIR [--time-scale X] [--steps N] [--only PARTS]
#
# Parts, each under its own time limit (a hang costs that part, not the run):
#   test/<name>     every bundled test binary (the CUDA ones run for real when a device is
#                   present and skip, saying so, otherwise)
#   memcheck/<name> compute-sanitizer --tool memcheck over each tests/test_cuda_* binary
#   train-cpu-fp32  the CPU reference: configs/tiny-dsa.json, both stages, 20 steps each
#                   (128-token windows, 4 per step)
#   parity-fp32     the same on the GPU (train.precision=fp32); every step's loss and
#                   indexer_loss within 1e-5 relative of the CPU's (metrics.jsonl)
#   parity-bf16     the same in bf16, within 2e-2 relative (DSA-SPEC §9's bf16 tolerance)
#                   for the loss and 1e-1 for the indexer KL, a small difference of logs
#   resume          on the GPU: 40 steps straight vs 20 + --resume 20; the weights and
#                   AdamW moments (model.safetensors, optimizer.safetensors) byte-identical
#   bench-gpu       dsa bench gpu --json > OUTDIR/bench-gpu.jsonl (one V3.2 attention layer
#                   at 8K, 32K, 128K; ops that would overrun its budget skip, saying so)
#   bench-torch     tools/bench_gpu_torch.py --json OUTDIR/bench-torch.jsonl, the same ops as
#                   plain PyTorch; gpu-check.md gets the table of both and the speed-up
# A part that cannot run here (no GPU, no compute-sanitizer, a build without a feature) is
# skipped with the reason, never passed. Writes OUTDIR/gpu-check.json, OUTDIR/gpu-check.md
# (failed parts with the tails of their logs), the benchmark's JSON lines and
# OUTDIR/gpu-check-logs.tar.gz (every part's log); ends with one line
#   gpu-check: N passed, N failed, N skipped
# and exits 1 when any part failed. The whole run is sized for 8 minutes on an H200
# (--time-scale multiplies every limit and --steps N trains N steps per stage instead of 20,
# for slower machines: the CPU-only test of the bundle).
set -u
PATH=${PATH:-/usr/local/bin:/usr/bin:/bin}
[ -n "$PATH" ] || PATH=/usr/local/bin:/usr/bin:/bin
export PATH
here=$(cd "$(dirname "$0")" && pwd)
usage() { echo "usage: $0 OUTDIR [--time-scale X] [--steps N] [--only PART[,PART...]]   (parts: test memcheck train parity-fp32 parity-bf16 resume bench)"; }
out=""; scale=1; only=""; steps=20
while [ $# -gt 0 ]; do
  case $1 in
    --time-scale) scale=${2:?--time-scale needs a number}; shift 2 ;;
    --only) only=${2:?--only needs a list}; shift 2 ;;
    --steps) steps=${2:?--steps needs a number}; shift 2
      [[ $steps =~ ^[0-9]+$ ]] && [ "$steps" -ge 2 ] && [ $((steps % 2)) -eq 0 ] || { echo "gpu-check: --steps wants an even number >= 2" >&2; exit 2; } ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "gpu-check: unknown option $1" >&2; usage >&2; exit 2 ;;
    *) [ -z "$out" ] || { usage >&2; exit 2; }; out=$1; shift ;;
  esac
done
[ -n "$out" ] || { usage >&2; exit 2; }
mkdir -p "$out" || { echo "gpu-check: cannot create $out" >&2; exit 2; }
out=$(cd "$out" && pwd)
# Logs and training runs go to a scratch directory; OUTDIR gets a handful of files (the
# device tool brings back at most 8): gpu-check.json, gpu-check.md (with the log tails of
# failed parts), bench-gpu.jsonl, bench-torch.jsonl and gpu-check-logs.tar.gz.
scratch=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check-XXXXXX") || { echo "gpu-check: no scratch directory" >&2; exit 2; }
logs=$scratch/logs
mkdir -p "$logs"
dsa=$here/bin/dsa
cd "$here" || exit 2
t_start=$(date +%s)

want() { [ -z "$only" ] || [[ ",$only," == *",$1,"* ]]; }
# A part's time limit: its own (seconds on an H200) times --time-scale, capped by what is left
# of the whole run's 470 s (8 minutes, less the summary). The parts' own limits add up to 450.
limit() {
  local own left
  own=$(awk -v s="$1" -v x="$scale" 'BEGIN { printf "%d", s * x + 0.5 }')
  left=$(( $(awk -v x="$scale" 'BEGIN { printf "%d", 470 * x }') - ($(date +%s) - t_start) ))
  [ "$left" -lt "$own" ] && own=$left
  [ "$own" -lt 1 ] && own=1
  echo "$own"
}

# ---- results ------------------------------------------------------------------------------
names=(); results=(); walls=(); details=()
n_pass=0 n_fail=0 n_skip=0
record() { # name result(passed|failed|skipped) wall_s detail
  names+=("$1"); results+=("$2"); walls+=("$3"); details+=("$4")
  case $2 in passed) n_pass=$((n_pass + 1)) ;; failed) n_fail=$((n_fail + 1)) ;; *) n_skip=$((n_skip + 1)) ;; esac
  printf 'gpu-check: %-34s %-7s %6ss  %s\n' "$1" "$2" "$3" "$4"
}
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# run_limited LIMIT_S LOG CMD...: CMD under timeout (killed 10 s after TERM); rc 124 = too slow.
run_limited() {
  local lim=$1 log=$2; shift 2
  timeout -k 10 "$lim" "$@" > "$log" 2>&1
}

# ---- the machine ----------------------------------------------------------------------------
# CUDA libraries the bundle does not carry (cuBLAS/cuBLASLt and NCCL: hundreds of MB) come
# from the machine: the toolkit's directory or PyTorch's wheels (nvidia-cublas, nvidia-nccl).
if ldd "$dsa" 2>&1 | grep -q "not found"; then
  for d in /usr/local/cuda/lib64 /usr/local/cuda/lib /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda-*/lib64 \
           /usr/local/cuda-*/lib \
           $(python3 -c 'import nvidia, os; p = list(nvidia.__path__)[0]; print(" ".join(os.path.join(p, x, "lib") for x in os.listdir(p)))' 2> /dev/null); do
    [ -d "$d" ] && LD_LIBRARY_PATH=${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$d
  done
  export LD_LIBRARY_PATH
fi
# The driver's libcuda.so.1 (the static libcudart opens it), where the loader's cache lacks it.
if ! ldconfig -p 2> /dev/null | grep -q 'libcuda\.so\.1 '; then
  for d in /usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/lib64 /usr/local/cuda/compat; do
    [ -e "$d/libcuda.so.1" ] && LD_LIBRARY_PATH=${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$d
  done
  export LD_LIBRARY_PATH
fi
# The toolkit's tools (compute-sanitizer, cuobjdump) where the machine has them off PATH.
for d in /usr/local/cuda/bin /usr/local/cuda-*/bin /usr/local/cuda/compute-sanitizer /opt/nvidia/*/compute-sanitizer; do
  [ -d "$d" ] && [[ ":$PATH:" != *":$d:"* ]] && PATH=$PATH:$d
done
missing=$(ldd "$dsa" 2>&1 | awk '/not found/ {print $1}' | tr '\n' ' ')
info=$("$dsa" info 2>&1); info_rc=$?
gpu_count=$(sed -n 's/^cuda devices: \([0-9][0-9]*\) .*/\1/p' <<< "$info")
gpu_count=${gpu_count:-0}
device=$(sed -n 's/^cuda devices: [0-9]* (device 0: \(.*\))$/\1/p' <<< "$info")
if [ -z "$device" ] && command -v nvidia-smi > /dev/null; then
  device=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2> /dev/null | head -1)
fi
no_gpu=""
if [ "$gpu_count" -eq 0 ]; then
  no_gpu=$(sed -n 's/^cuda devices: none (\(.*\))$/\1/p' <<< "$info")
  no_gpu="no CUDA device${no_gpu:+: $no_gpu}"
  device=${device:-none}
fi
commit=$(sed -n 's/^commit: //p' BUNDLE.txt 2> /dev/null)
cpu=$(grep -m1 '^model name' /proc/cpuinfo 2> /dev/null | cut -d: -f2- | sed 's/^ *//')
echo "gpu-check: bundle $here, commit ${commit:-unknown}"
echo "gpu-check: device ${device}; host $(nproc) cores, ${cpu:-unknown CPU}"
[ -z "$missing" ] || echo "gpu-check: bin/dsa cannot find $missing (LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-})"
sed 's/^/  | /' <<< "$info"
if [ "$info_rc" -ne 0 ]; then record "dsa-info" failed 0 "bin/dsa info exited $info_rc: ${missing:+missing $missing}"; fi

# ---- device code: sm_90 machine code and its PTX in dsa (cuobjdump is on the GPU machine) ------
if want test; then
  if ! command -v cuobjdump > /dev/null; then record "device-code" skipped 0 "cuobjdump is not on PATH"
  else
    t0=$(now)
    { cuobjdump --list-elf "$dsa"; cuobjdump --list-ptx "$dsa"; } > "$logs/device-code.log" 2>&1
    arch=$(sed -n 's/^host code: .*device code: \(sm_[0-9]*\).*/\1/p' BUNDLE.txt); arch=${arch:-sm_90}
    if grep -q "$arch" "$logs/device-code.log" && grep -qiE "ptx" "$logs/device-code.log"; then
      record "device-code" passed "$(since "$t0")" "bin/dsa holds $arch machine code and PTX (logs/device-code.log)"
    else record "device-code" failed "$(since "$t0")" "no $arch machine code or no PTX in bin/dsa (logs/device-code.log)"; fi
  fi
fi

# ---- unit tests -------------------------------------------------------------------------------
# One TAP log per binary: failed on a failing line or a non-zero exit; skipped when every
# test in it skipped (a CUDA test without a device); passed otherwise.
tap_result() { # log rc -> "result|detail"
  local log=$1 rc=$2 ok_lines ok_skips s f
  ok_lines=$(grep -cE '^ok ' "$log"); ok_skips=$(grep -cE '^ok .*# ?SKIP' "$log")
  s=$(grep -cE '^(not )?ok .*# ?SKIP' "$log"); f=$(grep -E '^not ok' "$log" | grep -cvE '# ?SKIP')
  local p=$((ok_lines - ok_skips)) skipped=""
  [ "$s" -gt 0 ] && skipped=", $s skipped"
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then echo "failed|over its time limit ($p passed before)"
  elif [ "$f" -gt 0 ] || [ "$rc" -ne 0 ]; then echo "failed|$f failing, exit $rc"
  elif [ "$p" -eq 0 ] && [ "$s" -gt 0 ]; then echo "skipped|all $s skipped: $(grep -m1 -oE '# ?SKIP.*' "$log" | sed 's/# *SKIP *//')"
  elif [ "$p" -eq 0 ]; then echo "failed|no test result in its output"
  else echo "passed|$p passed$skipped"; fi
}
if want test; then
  part_budget=$(limit 110); part_t0=$(date +%s)
  for t in tests/test_*; do
    [ -x "$t" ] || continue
    name=$(basename "$t"); log=$logs/$name.log
    left=$((part_budget - ($(date +%s) - part_t0)))
    if [ "$left" -le 5 ]; then record "test/$name" failed 0 "not run: the tests' $part_budget s were spent"; continue; fi
    t0=$(now)
    CMOCKA_MESSAGE_OUTPUT=TAP run_limited "$left" "$log" "$t"
    rc=$?
    r=$(tap_result "$log" "$rc"); record "test/$name" "${r%%|*}" "$(since "$t0")" "${r#*|}"
  done
fi

# ---- compute-sanitizer ---------------------------------------------------------------------------
if want memcheck; then
  cuda_tests=(tests/test_cuda_*)
  [ -e "${cuda_tests[0]}" ] || cuda_tests=()
  if [ ${#cuda_tests[@]} -eq 0 ]; then record "memcheck" skipped 0 "the bundle has no tests/test_cuda_* binaries"
  elif [ -n "$no_gpu" ]; then record "memcheck" skipped 0 "$no_gpu"
  elif ! command -v compute-sanitizer > /dev/null; then record "memcheck" skipped 0 "compute-sanitizer is not on PATH"
  else
    part_budget=$(limit 55); part_t0=$(date +%s)
    for t in "${cuda_tests[@]}"; do
      name=$(basename "$t"); log=$logs/memcheck-$name.log
      left=$((part_budget - ($(date +%s) - part_t0)))
      if [ "$left" -le 5 ]; then record "memcheck/$name" failed 0 "not run: memcheck's $part_budget s were spent"; continue; fi
      t0=$(now)
      CMOCKA_MESSAGE_OUTPUT=TAP run_limited "$left" "$log" compute-sanitizer --tool memcheck --leak-check full --error-exitcode 99 "$t"
      rc=$?
      errs=$(grep -m1 -oE 'ERROR SUMMARY: [0-9]+ error' "$log")
      if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then record "memcheck/$name" failed "$(since "$t0")" "over its time limit"
      elif [ "$rc" -ne 0 ]; then record "memcheck/$name" failed "$(since "$t0")" "exit $rc; ${errs:-no error summary}"
      else record "memcheck/$name" passed "$(since "$t0")" "${errs:-ERROR SUMMARY: 0 errors}"; fi
    done
  fi
fi

# ---- training: CPU reference, GPU parity, resume -------------------------------------------------
data=$scratch/work/data
total_steps=$((2 * steps))
# The tiny DSA model and both its stages as configured, on 128-token windows, 4 a step (2 per
# micro-batch): the CPU reference must fit its time limit on the GPU host's unknown CPU.
train_common=(--config configs/tiny-dsa.json --set "data.train=[\"$data\"]" --set data.seq_len=128
  --set train.global_batch=4 --set train.micro_batch=2 --set "stages.0.steps=$steps"
  --set "stages.1.steps=$steps" --set "stages.1.lr_warmup_steps=$((steps / 2))" --set train.checkpoint_every=0 --quiet)
make_data() {
  [ -e "$data/syn.manifest.json" ] && return 0
  mkdir -p "$data"
  "$dsa" pack --format synthetic --tokens 256Ki --doc-tokens 1Ki --distances 16,48 --vocab-size 512 --seed 2 \
    --out "$data/syn" --quiet > "$logs/pack.log" 2>&1
}
# The value of KEY on every line of a metrics.jsonl, one a line.
metric() { sed -n "s/.*\"$2\":\\([-0-9.eE+naif]*\\).*/\\1/p" "$1"; }
# compare_runs A B KEY RTOL -> "ok|max rel" or "bad|detail"
compare_runs() {
  local a=$1 b=$2 key=$3 rtol=$4
  paste -d' ' <(metric "$a" "$key") <(metric "$b" "$key") | awk -v r="$rtol" -v k="$key" -v want="$total_steps" '
    NF != 2 { bad = bad sprintf(" line %d has no %s;", NR, k); next }
    { n++; d = $1 - $2; if (d < 0) d = -d; m = $2 < 0 ? -$2 : $2; rel = m > 0 ? d / m : d
      if (!(rel <= r)) { if (!first) first = sprintf("step %d: %s vs %s (rel %.3g)", NR, $1, $2, rel); nbad++ }
      if (rel > worst) worst = rel }
    END { if (n != want) bad = bad sprintf(" %d steps, not %d;", n, want)
          if (bad != "" || nbad) printf "bad|%s%s%s", bad, nbad ? sprintf(" %d of %d steps over %g, first %s", nbad, n, r, first) : "", ""
          else printf "ok|max rel %.3g over %d steps", worst, n }'
}
# A precision the build accepts? (`dsa config` refuses an unknown key or value by name.)
precision_ok() { "$dsa" config --config configs/tiny-dsa.json --set "train.precision=$1" > "$logs/precision-$1.log" 2>&1; }
train_run() { # name limit log args...
  local dir=$scratch/work/$1 lim=$2 log=$3; shift 3
  rm -rf "$dir"
  run_limited "$lim" "$log" "$dsa" train "${train_common[@]}" --set "train.out_dir=$dir" "$@"
}
cpu_ref=""
if want train || want parity-fp32 || want parity-bf16; then
  t0=$(now)
  if ! make_data; then record "train-cpu-fp32" failed "$(since "$t0")" "dsa pack of the synthetic data failed (logs/pack.log)"
  else
    prec=(); precision_ok fp32 && prec=(--set train.precision=fp32)
    train_run cpu-fp32 "$(limit 60)" "$logs/train-cpu-fp32.log" --set train.device=cpu "${prec[@]}"
    rc=$?
    if [ "$rc" -eq 0 ] && [ "$(metric "$scratch/work/cpu-fp32/metrics.jsonl" loss | wc -l)" -eq "$total_steps" ]; then
      cpu_ref=$scratch/work/cpu-fp32/metrics.jsonl
      note="train.precision=fp32"; [ ${#prec[@]} -gt 0 ] || note="no train.precision key in this build: fp32 is the CPU's only mode"
      record "train-cpu-fp32" passed "$(since "$t0")" "$total_steps steps, last loss $(metric "$cpu_ref" loss | tail -1) ($note)"
    else
      record "train-cpu-fp32" failed "$(since "$t0")" "exit $rc (logs/train-cpu-fp32.log)"
    fi
  fi
fi
parity() { # precision limit loss_rtol kl_rtol
  local p=$1 name=parity-$1 t0
  t0=$(now)
  if [ -n "$no_gpu" ]; then record "$name" skipped 0 "$no_gpu"; return; fi
  if ! precision_ok "$p"; then record "$name" skipped 0 "not built: train.precision=$p is refused ($(tail -1 "$logs/precision-$p.log"))"; return; fi
  if [ -z "$cpu_ref" ]; then record "$name" failed 0 "no CPU reference run to compare with"; return; fi
  train_run "cuda-$p" "$2" "$logs/train-cuda-$p.log" --set train.device=cuda --set "train.precision=$p"
  local rc=$? m="$scratch/work/cuda-$p/metrics.jsonl"
  if [ "$rc" -ne 0 ]; then record "$name" failed "$(since "$t0")" "dsa train --device cuda exited $rc (logs/train-cuda-$p.log: $(tail -1 "$logs/train-cuda-$p.log"))"; return; fi
  local a b
  a=$(compare_runs "$m" "$cpu_ref" loss "$3"); b=$(compare_runs "$m" "$cpu_ref" indexer_loss "$4")
  if [ "${a%%|*}" = ok ] && [ "${b%%|*}" = ok ]; then
    record "$name" passed "$(since "$t0")" "loss ${a#*|} (limit $3); indexer_loss ${b#*|} (limit $4)"
  else
    record "$name" failed "$(since "$t0")" "loss: ${a#*|} (limit $3); indexer_loss: ${b#*|} (limit $4)"
  fi
}
want parity-fp32 && parity fp32 "$(limit 35)" 1e-5 1e-5
want parity-bf16 && parity bf16 "$(limit 30)" 2e-2 1e-1
if want resume; then
  t0=$(now)
  if [ -n "$no_gpu" ]; then record "resume" skipped 0 "$no_gpu"
  elif ! make_data; then record "resume" failed "$(since "$t0")" "dsa pack of the synthetic data failed"
  else
    lim=$(( $(limit 45) / 3 ))   # three runs share the part's 45 s
    train_run resume-straight "$lim" "$logs/resume-straight.log" --set train.device=cuda; r1=$?
    train_run resume-split "$lim" "$logs/resume-split.log" --set train.device=cuda --stop-at "$steps"; r2=$?
    run_limited "$lim" "$logs/resume-resumed.log" "$dsa" train "${train_common[@]}" --set train.device=cuda \
      --set "train.out_dir=$scratch/work/resume-split" --resume; r3=$?
    a=$scratch/work/resume-straight/$(printf 'step-%08d' "$total_steps") b=$scratch/work/resume-split/$(printf 'step-%08d' "$total_steps")
    if [ "$r1$r2$r3" != 000 ]; then record "resume" failed "$(since "$t0")" "exits: straight $r1, first half $r2, resumed $r3 (logs/resume-*.log)"
    elif cmp -s "$a/model.safetensors" "$b/model.safetensors" && cmp -s "$a/optimizer.safetensors" "$b/optimizer.safetensors"; then
      record "resume" passed "$(since "$t0")" "$total_steps steps = $steps + resume $steps: model and optimizer state byte-identical"
    else
      record "resume" failed "$(since "$t0")" "$total_steps steps straight and $steps + resume $steps differ ($(cmp "$a/model.safetensors" "$b/model.safetensors" 2>&1 | head -1))"
    fi
  fi
fi

# ---- benchmark ------------------------------------------------------------------------------------
bench_rows=""
if want bench; then
  t0=$(now)
  if ! "$dsa" bench gpu --help > /dev/null 2>&1; then record "bench-gpu" skipped 0 "this build has no dsa bench gpu"
  elif [ -n "$no_gpu" ]; then record "bench-gpu" skipped 0 "$no_gpu"
  else
    lim=$(limit 70)
    timeout -k 10 "$lim" "$dsa" bench gpu --json --budget $((lim > 30 ? lim - 15 : (lim + 1) / 2)) > "$out/bench-gpu.jsonl" 2> "$logs/bench-gpu.log"; rc=$?
    ran=$(grep -c '"status":"ok"' "$out/bench-gpu.jsonl")
    if [ "$rc" -eq 0 ] && [ "$ran" -gt 0 ]; then record "bench-gpu" passed "$(since "$t0")" "$ran op timings in bench-gpu.jsonl (the rest skipped by its budget or memory: see the file)"
    else record "bench-gpu" failed "$(since "$t0")" "exit $rc, $ran timings (logs/bench-gpu.log: $(tail -1 "$logs/bench-gpu.log"))"; fi
  fi
  t0=$(now)
  if ! python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 3)' > "$logs/bench-torch.log" 2>&1; then
    record "bench-torch" skipped 0 "no PyTorch with a CUDA device ($(tail -1 "$logs/bench-torch.log" 2> /dev/null | cut -c1-120))"
  else
    lim=$(limit 45)
    run_limited "$lim" "$logs/bench-torch.log" python3 tools/bench_gpu_torch.py --budget $((lim > 20 ? lim - 10 : (lim + 1) / 2)) --json "$out/bench-torch.jsonl"; rc=$?
    if [ "$rc" -eq 0 ] && [ -s "$out/bench-torch.jsonl" ]; then record "bench-torch" passed "$(since "$t0")" "$(grep -c '"status": "ok"' "$out/bench-torch.jsonl") op timings in bench-torch.jsonl"
    else record "bench-torch" failed "$(since "$t0")" "exit $rc (logs/bench-torch.log: $(tail -1 "$logs/bench-torch.log"))"; fi
  fi
  if [ -s "$out/bench-gpu.jsonl" ] && [ -s "$out/bench-torch.jsonl" ]; then
    bench_rows=$(python3 tools/bench_gpu_torch.py --ratio "$out/bench-gpu.jsonl" "$out/bench-torch.jsonl" 2> "$logs/bench-ratio.log")
  fi
fi

# The logs a part wrote (for the tails of failed parts in gpu-check.md).
log_of() {
  case $1 in
    test/*) echo "$logs/${1#test/}.log" ;;
    memcheck/*) echo "$logs/memcheck-${1#memcheck/}.log" ;;
    parity-*) echo "$logs/train-cuda-${1#parity-}.log" ;;
    resume) echo "$logs/resume-straight.log $logs/resume-split.log $logs/resume-resumed.log" ;;
    train-cpu-fp32) echo "$logs/pack.log $logs/train-cpu-fp32.log" ;;
    *) echo "$logs/$1.log" ;;
  esac
}

# ---- summary --------------------------------------------------------------------------------------
total=$(( $(date +%s) - t_start ))
json_str() { local s=${1//\\/\\\\}; s=${s//\"/\\\"}; s=${s//$'\t'/ }; printf '"%s"' "${s//$'\n'/ }"; }
{
  printf '{\n  "commit": %s,\n  "device": %s,\n  "host": %s,\n  "date": %s,\n  "wall_s": %d,\n' \
    "$(json_str "${commit:-unknown}")" "$(json_str "$device")" "$(json_str "$(nproc) cores, ${cpu:-unknown CPU}")" \
    "$(json_str "$(date -u '+%Y-%m-%d %H:%M:%S UTC')")" "$total"
  printf '  "passed": %d, "failed": %d, "skipped": %d,\n  "parts": [\n' "$n_pass" "$n_fail" "$n_skip"
  for i in "${!names[@]}"; do
    printf '    {"name": %s, "result": "%s", "wall_s": %s, "detail": %s}%s\n' "$(json_str "${names[$i]}")" "${results[$i]}" \
      "${walls[$i]}" "$(json_str "${details[$i]}")" "$([ "$i" -lt $((${#names[@]} - 1)) ] && echo ,)"
  done
  printf '  ]\n}\n'
} > "$out/gpu-check.json.tmp" && mv "$out/gpu-check.json.tmp" "$out/gpu-check.json"
{
  echo "# gpu-check"
  echo
  echo "- commit: ${commit:-unknown}"
  echo "- device: $device"
  echo "- host: $(nproc) cores, ${cpu:-unknown CPU}"
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); wall time ${total} s"
  echo "- result: $n_pass passed, $n_fail failed, $n_skip skipped (skipped parts did not run: they are not passes)"
  echo
  echo "| part | result | wall s | detail |"
  echo "|---|---|---:|---|"
  for i in "${!names[@]}"; do echo "| ${names[$i]} | ${results[$i]} | ${walls[$i]} | ${details[$i]//|/\\|} |"; done
  if [ -n "$bench_rows" ]; then echo; echo "## dsa bench gpu vs PyTorch"; echo; echo "$bench_rows"; fi
  for i in "${!names[@]}"; do
    [ "${results[$i]}" = failed ] || continue
    for f in $(log_of "${names[$i]}"); do
      [ -s "$f" ] || continue
      printf '\n## %s: last 40 lines of logs/%s\n\n```text\n' "${names[$i]}" "$(basename "$f")"
      tail -n 40 "$f" | cut -c1-300
      printf '```\n'
    done
  done
} > "$out/gpu-check.md.tmp" && mv "$out/gpu-check.md.tmp" "$out/gpu-check.md"
tar -czf "$out/gpu-check-logs.tar.gz" -C "$scratch" logs 2> /dev/null
[ -n "${GPU_CHECK_KEEP:-}" ] && echo "gpu-check: logs and runs kept in $scratch" || rm -rf "$scratch"
echo "gpu-check: wrote $out/gpu-check.json, gpu-check.md and gpu-check-logs.tar.gz (${total} s)"
echo "gpu-check: $n_pass passed, $n_fail failed, $n_skip skipped"
[ "$n_fail" -eq 0 ]
