# test_mpi.sh: `dsa train` over several ranks (mpirun, Open MPI; DESIGN.md "Distribution"):
# data parallel with ZeRO-1 equal to one process with the same global batch (dense model,
# the DSA warm-up and sparse stages, the MoE model), the same bits run to run, resume on
# another world size (1 -> 2 -> 4 -> 1 and 2 -> 1: the data cursor rule), mismatched
# configs refused naming the rank, and failures: SIGKILL of one rank mid-step and
# mid-save, SIGSTOP of one rank (the collective watchdog) end the job naming the rank
# within 60 s, and the latest checkpoint still loads. Oversubscribed: 4 ranks on any
# number of cores, one thread each.
#
# Tolerances (fp32 summation order: the gradient of N ranks is a sum over ranks of sums
# over their windows, one rank sums all windows in one order): the loss and the gradient
# norm of every step within relative 1e-5, the indexer's KL and its gradient norm within
# 1e-4 (the KL, about 3e-3 here, is a small difference of log-probabilities of about 6, so
# their fp32 rounding is about 1e-5 of it; seen: 1.5e-5 under make asan's -O1), every
# weight after the last step within 1e-4
# absolute (AdamW moves a weight by about lr = 3e-3 per step, so a wrong window, a wrong
# loss scale or a lost shard shows as 1e-3 or more).
. "$(dirname "$0")/lib.sh"

if ! command -v mpirun > /dev/null 2>&1; then
  skip "multi-rank training" "no mpirun (Open MPI: make deps installs it)"
  exit 0
fi
# CI runs as root in a container: allow it, shared memory between the ranks, no binding
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl=self,vader OMPI_MCA_btl_vader_single_copy_mechanism=none OMPI_MCA_rmaps_base_oversubscribe=1
export OMPI_MCA_hwloc_base_binding_policy=none
mpi() { local n=$1; shift; timeout 300 mpirun -np "$n" "$@"; }
# make asan: Open MPI's own allocations outlive MPI_Finalize; they are suppressed by library
# (lsan_mpi.supp), which needs whole stacks through its uninstrumented code
if [ -n "${ASAN_OPTIONS:-}" ]; then
  export ASAN_OPTIONS="$ASAN_OPTIONS:fast_unwind_on_malloc=0" LSAN_OPTIONS="suppressions=$(pwd)/tests/cli/lsan_mpi.supp"
fi

"$DSA" pack --format synthetic --tokens 64Ki --doc-tokens 1Ki --distances 16,48 --vocab-size 512 --seed 2 \
  --out "$work/data/syn" --quiet > "$last_out" 2>&1 || not_ok "pack synthetic data"
base=(--set "data.train=[\"$work/data\"]" --set data.seq_len=64 --set train.global_batch=4 --set train.micro_batch=1
  --set train.threads=1 --quiet)
dense=(--config configs/tiny-dense.json "${base[@]}" --set train.steps=4 --set train.checkpoint_every=2
  --set optimizer.lr_warmup_steps=1)
dsa=(--config configs/tiny-dsa.json "${base[@]}" --set stages.0.steps=2 --set stages.1.steps=2
  --set stages.1.lr_warmup_steps=1 --set train.checkpoint_every=0)
moe=(--config configs/tiny.json "${base[@]}" --set 'stages=null' --set train.steps=2 --set train.checkpoint_every=0
  --set optimizer.lr_warmup_steps=1)

# same_run NAME DIR_A DIR_B STEP: per-step metrics and final weights within the tolerances above
same_run() {
  local name=$1 a=$2 b=$3 step
  step=$(printf 'step-%08d' "$4")
  if python3 - "$a/metrics.jsonl" "$b/metrics.jsonl" > "$last_out" 2>&1 <<'PY'
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])]
b = [json.loads(l) for l in open(sys.argv[2])]
assert len(a) == len(b) and a, f"{len(a)} vs {len(b)} metrics lines"
for x, y in zip(a, b):
    for k, tol in (("loss", 1e-5), ("grad_norm", 1e-5), ("indexer_loss", 1e-4), ("indexer_grad_norm", 1e-4)):
        if k in x:
            d = abs(x[k] - y[k]) / max(abs(x[k]), 1e-30)
            assert d <= tol, f"step {x['step']} {k}: {x[k]} vs {y[k]} (rel {d:.3g}, tolerance {tol})"
print("metrics agree")
PY
  then
    python3 tests/cli/st_diff.py "$a/$step/model.safetensors" "$b/$step/model.safetensors" > "$last_out" 2>&1
    if awk '{ exit !($1 == "max_abs" && $2 <= 1e-4) }' "$last_out"; then ok "$name ($(cat "$last_out"))"
    else not_ok "$name: weights differ"; fi
  else
    not_ok "$name: metrics differ"
  fi
}

# ---- equivalence with one process ----------------------------------------------------
"$DSA" train "${dense[@]}" --set "train.out_dir=$work/d1" > "$last_out" 2>&1 || not_ok "dense on one process"
for n in 2 4; do
  if mpi "$n" "$DSA" train "${dense[@]}" --set "train.out_dir=$work/d$n" > "$work/d$n.log" 2>&1; then
    same_run "dense: $n ranks x 1 sequence = 1 rank x 4 sequences" "$work/d1" "$work/d$n" 4
  else cp "$work/d$n.log" "$last_out"; not_ok "dense on $n ranks"; fi
done
expect_output "the start-up names every rank's memory and AdamW shard" \
  "rank 3 \(host [^,]+, pid [0-9]+\): weights .* AdamW shard .*elements" cat "$work/d4.log"
expect_output "each rank writes its optimizer shard into the checkpoint" \
  "optimizer-rank-00001-of-00002.safetensors" cat "$work/d2/step-00000004/manifest.json"
mpi 2 "$DSA" train "${dense[@]}" --set "train.out_dir=$work/d2b" > "$last_out" 2>&1
if cmp -s "$work/d2/step-00000004/model.safetensors" "$work/d2b/step-00000004/model.safetensors" &&
   cmp -s "$work/d2/step-00000004/optimizer-rank-00001-of-00002.safetensors" \
          "$work/d2b/step-00000004/optimizer-rank-00001-of-00002.safetensors"; then
  ok "2 ranks, run twice: the same bits"
else not_ok "2 ranks, run twice: the same bits"; fi

"$DSA" train "${dsa[@]}" --set "train.out_dir=$work/s1" > "$last_out" 2>&1 || not_ok "DSA stages on one process"
if mpi 2 "$DSA" train "${dsa[@]}" --set "train.out_dir=$work/s2" > "$last_out" 2>&1; then
  same_run "DSA warm-up and sparse stage: 2 ranks = 1 rank" "$work/s1" "$work/s2" 4
else not_ok "DSA stages on 2 ranks"; fi
"$DSA" train "${moe[@]}" --set "train.out_dir=$work/m1" > "$last_out" 2>&1 || not_ok "MoE on one process"
if mpi 4 "$DSA" train "${moe[@]}" --set "train.out_dir=$work/m4" > "$last_out" 2>&1; then
  same_run "MoE model: 4 ranks = 1 rank" "$work/m1" "$work/m4" 2
else not_ok "MoE on 4 ranks"; fi

# ---- resume on another world size: 1 -> 2 -> 4 -> 1, and 2 -> 1 ------------------------
c=$work/chain
"$DSA" train "${dense[@]}" --set "train.out_dir=$c" --stop-at 1 > "$last_out" 2>&1 &&
  mpi 2 "$DSA" train "${dense[@]}" --set "train.out_dir=$c" --resume --stop-at 2 >> "$last_out" 2>&1 &&
  mpi 4 "$DSA" train "${dense[@]}" --set "train.out_dir=$c" --resume --stop-at 3 >> "$last_out" 2>&1 &&
  "$DSA" train "${dense[@]}" --set "train.out_dir=$c" --resume >> "$last_out" 2>&1
if [ $? -eq 0 ]; then
  same_run "resumed 1 -> 2 -> 4 -> 1 ranks = one uninterrupted rank (no window twice or skipped)" "$work/d1" "$c" 4
else not_ok "resume 1 -> 2 -> 4 -> 1"; fi
c=$work/two-one # the weights as Hugging Face shards of at most 3 MB (the model has 9 MB)
mpi 2 "$DSA" train "${dense[@]}" --set "train.out_dir=$c" --stop-at 2 --weights-shard-bytes 3000000 \
  > "$last_out" 2>&1 && "$DSA" train "${dense[@]}" --set "train.out_dir=$c" --resume >> "$last_out" 2>&1
if [ $? -eq 0 ]; then same_run "saved on 2 ranks (sharded weights), resumed on 1" "$work/d1" "$c" 4
else not_ok "save on 2, resume on 1"; fi
expect_output "a multi-rank checkpoint's weights: shards with an index, all in the manifest" \
  "shards 4 of 4 indexed, 4 in the manifest" python3 - "$c/step-00000002" <<'PY'
import json, sys, os
d = sys.argv[1]
index = json.load(open(os.path.join(d, "model.safetensors.index.json")))
files = sorted(set(index["weight_map"].values()))
manifest = json.load(open(os.path.join(d, "manifest.json")))["files"]
print(f"shards {len(files)} of {len([f for f in os.listdir(d) if f.startswith('model-')])} indexed,",
      f"{sum(f in manifest for f in files)} in the manifest")
PY
expect_output "the sharded checkpoint evaluates" "loss" \
  "$DSA" eval "$c/step-00000002" --data "$work/data" --seq-len 64 --windows 2

# the rule's limit: 15 windows, 7 per rank on 2 ranks, so epoch 0 ends inside step 4 and the
# checkpoint of step 4 has consumed 2 windows of epoch 1, which 4 ranks cannot split
"$DSA" pack --format synthetic --tokens 1Ki --doc-tokens 512 --distances 16,48 --vocab-size 512 --seed 3 \
  --out "$work/small/syn" --quiet > "$last_out" 2>&1 || not_ok "pack a small data set"
small=(--config configs/tiny-dense.json "${base[@]}" --set "data.train=[\"$work/small\"]" --set train.steps=6
  --set train.checkpoint_every=0 --set optimizer.lr_warmup_steps=1 --set "train.out_dir=$work/small-run")
mpi 2 "$DSA" train "${small[@]}" --stop-at 4 > "$last_out" 2>&1 || not_ok "train 4 steps on 2 ranks (small data)"
expect_output "a cursor that 4 ranks cannot split without repeating a window is refused, with the numbers" \
  "data cursor \(epoch 1, 2 windows consumed in it by 2 ranks\) cannot be split over 4 ranks" \
  mpi 4 "$DSA" train "${small[@]}" --resume
expect_rc 0 "the same checkpoint resumes on 1 rank" "$DSA" train "${small[@]}" --resume

# ---- refused: configs that differ across ranks -----------------------------------------
expect_output "a config that differs on one rank is refused, naming it" \
  "resolved run config and dsa train options .*differs across ranks.*rank\(s\) 1 " \
  mpi 1 "$DSA" train "${dense[@]}" --set "train.out_dir=$work/bad" : \
  -np 1 "$DSA" train "${dense[@]}" --set "train.out_dir=$work/bad" --set optimizer.lr=0.001

# ---- failures ---------------------------------------------------------------------------
long=(--config configs/tiny-dense.json "${base[@]}" --set train.steps=100000 --set train.checkpoint_every=2
  --set optimizer.lr_warmup_steps=1)
# wait_for FILE PATTERN: up to 60 s
wait_for() { for _ in $(seq 1 600); do grep -qE "$2" "$1" 2> /dev/null && return 0; sleep 0.1; done; return 1; }
rank1_pid() { sed -n 's/.*rank 1 (host [^,]*, pid \([0-9]*\)).*/\1/p' "$1" | head -1; }
# kill_rank NAME SIGNAL WAIT_PATTERN EXPECT_PATTERN EXTRA...: start 2 ranks, signal rank 1 once
# WAIT_PATTERN is in the log, require the job to end within 60 s with EXPECT_PATTERN
kill_rank() {
  local name=$1 sig=$2 wait_pat=$3 want=$4 run=$work/$5; shift 5
  local log=$run.log
  mpirun -np 2 "$DSA" train "${long[@]}" --set "train.out_dir=$run" "$@" > "$log" 2>&1 &
  local job=$! pid where=$log
  case $wait_pat in '"step"'*) where=$run/metrics.jsonl ;; esac
  if ! wait_for "$where" "$wait_pat" || ! wait_for "$log" "rank 1 \(host"; then
    kill "$job"; wait "$job"; cp "$log" "$last_out"; not_ok "$name: the run did not get going"; return
  fi
  pid=$(rank1_pid "$log")
  kill "-$sig" "$pid"
  local t0=$SECONDS
  for _ in $(seq 1 600); do kill -0 "$job" 2> /dev/null || break; sleep 0.1; done
  if kill -0 "$job" 2> /dev/null; then
    kill -9 "$job"; kill -9 "$pid"; cp "$log" "$last_out"; not_ok "$name: the job still runs after 60 s"; return
  fi
  wait "$job"
  cp "$log" "$last_out"
  if grep -qE "$want" "$log"; then ok "$name: the job ended in $((SECONDS - t0)) s: $(grep -m1 -oE "$want" "$log")"
  else not_ok "$name: the job ended without the message /$want/"; fi
}
kill_rank "SIGKILL of rank 1 mid-step" KILL '"step":3,' "rank 1 .*(node|host) [^ ]+.*(signal 9|Killed)" killstep \
  --set train.checkpoint_every=2
expect_output "after the kill mid-step the latest checkpoint loads" "loss" \
  "$DSA" eval "$work/killstep" --data "$work/data" --seq-len 64 --windows 2
kill_rank "SIGKILL of rank 1 mid-save" KILL "paused before commit of step-00000004" \
  "rank 1 .*(node|host) [^ ]+.*(signal 9|Killed)" killsave --pause-in-save 30000
expect_output "after the kill mid-save latest still names step 2" "^step-00000002$" cat "$work/killsave/latest"
expect_output "and that checkpoint loads" "loss" "$DSA" eval "$work/killsave" --data "$work/data" --seq-len 64 --windows 2
expect_rc 0 "the killed run resumes on 2 ranks" \
  mpi 2 "$DSA" train "${dense[@]}" --set "train.out_dir=$work/killsave" --resume
kill_rank "a stopped rank 1 (SIGSTOP): the watchdog ends the job" STOP '"step":2,' \
  "rank 0 of 2 \(host [^)]+\) failed: MPI_[A-Za-z_]+ waited more than 3 s" stopped --comm-timeout 3
