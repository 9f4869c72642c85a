# test_sim.sh: the simulated device (`--device sim`, kernels/sim/sim.h): the CPU ops on
# memory the host cannot dereference, so a run that completes proves the host loop reached
# backend memory only through the memory entries. The tiny configs (dense LM, the DSA
# warm-up and sparse stages, the MoE model) train on sim with losses, weights and AdamW
# moments bit-identical to cpu, and a sim run stopped and resumed ends bit-identical too;
# `dsa eval --device sim` gives cpu's figures, gradients and logits.
# train.precision bf16 (every GEMM on bf16-rounded operands): sim equals cpu bit for bit,
# resumes bit-exact, and stays within bf16 rounding of the fp32 losses; eval --precision too.
# Also: unknown devices and precisions are refused by name.
. "$(dirname "$0")/lib.sh"

"$DSA" pack --format synthetic --tokens 64Ki --doc-tokens 1Ki --distances 16,48 --vocab-size 512 --seed 2 \
  --out "$work/data/syn" --quiet > "$last_out" 2>&1 || not_ok "pack synthetic data"

# metrics.jsonl without the fields that measure time or memory (sim stages host copies)
steady() { sed -E 's/,"tokens_per_s":[^,]*,"step_time_s":[^,]*,"peak_mem_bytes":[^,]*,"peak_rss_bytes":[^,}]*//' "$1"; }

# same_run NAME DIR_A DIR_B STEP: metrics (minus timings) and the step-STEP checkpoint agree
same_run() {
  local name=$1 a=$2 b=$3 ck
  ck=$(printf 'step-%08d' "$4")
  if [ -s "$a/metrics.jsonl" ] && cmp -s <(steady "$a/metrics.jsonl") <(steady "$b/metrics.jsonl") &&
     cmp -s "$a/$ck/model.safetensors" "$b/$ck/model.safetensors" &&
     cmp -s "$a/$ck/optimizer.safetensors" "$b/$ck/optimizer.safetensors"; then
    ok "$name"
  else
    { diff <(steady "$a/metrics.jsonl") <(steady "$b/metrics.jsonl"); ls "$a" "$b"; } > "$last_out" 2>&1
    not_ok "$name"
  fi
}

# check CONFIG LABEL STEPS ARGS...: cpu vs sim, and sim stopped after step 2 and resumed
check() {
  local config=$1 label=$2 steps=$3; shift 3
  local args=(--config "$config" --set "data.train=[\"$work/data\"]" --set data.seq_len=64
    --set train.global_batch=2 --set train.micro_batch=1 --set train.checkpoint_every=0 --set train.threads=2
    --quiet "$@")
  expect_rc 0 "$label trains on cpu" "$DSA" train "${args[@]}" --device cpu --set "train.out_dir=$work/$label-cpu"
  expect_rc 0 "$label trains on sim" "$DSA" train "${args[@]}" --device sim --set "train.out_dir=$work/$label-sim"
  same_run "$label: sim losses, weights and moments are cpu's bit for bit" "$work/$label-cpu" "$work/$label-sim" "$steps"
  expect_rc 0 "$label on sim stops after step 2" "$DSA" train "${args[@]}" --device sim --stop-at 2 \
    --set "train.out_dir=$work/$label-resume"
  expect_rc 0 "$label on sim resumes" "$DSA" train "${args[@]}" --device sim --resume \
    --set "train.out_dir=$work/$label-resume"
  same_run "$label: a sim run resumed at step 2 ends as the cpu run" "$work/$label-cpu" "$work/$label-resume" "$steps"
}

check configs/tiny-dense.json dense 4 --set train.steps=4 --set optimizer.lr_warmup_steps=1
# DSA: the indexer warm-up (dense, main model frozen), then sparse top-16 of 64 keys
dsa_stages=(--set stages.0.steps=2 --set stages.1.steps=2 --set stages.1.lr_warmup_steps=1 --set stages.1.index_topk=16)
check configs/tiny-dsa.json dsa 4 "${dsa_stages[@]}"
check configs/tiny.json moe 4 "${dsa_stages[@]}"

# eval reads logits and gradients back through host views: the same figures and files on sim
for dev in cpu sim; do
  "$DSA" eval "$work/dsa-cpu/step-00000004" --data "$work/data" --seq-len 64 --windows 2 --batch 2 --topk 16 \
    --threads 2 --json --device "$dev" --grads "$work/eval-grads-$dev.safetensors" \
    --logits-out "$work/eval-logits-$dev.safetensors" 2> "$last_out" | sed -E 's/"seconds":[^,]*,//; s/"(grads|logits)":"[^"]*",//g' > "$work/eval-$dev.json"
done
if [ -s "$work/eval-cpu.json" ] && cmp -s "$work/eval-cpu.json" "$work/eval-sim.json" &&
   cmp -s "$work/eval-grads-cpu.safetensors" "$work/eval-grads-sim.safetensors" &&
   cmp -s "$work/eval-logits-cpu.safetensors" "$work/eval-logits-sim.safetensors"; then
  ok "dsa eval --device sim: the same losses, recall, gradients and logits as cpu"
else
  { cat "$work/eval-cpu.json" "$work/eval-sim.json"; } >> "$last_out"; not_ok "dsa eval --device sim equals cpu"
fi

# bf16: the same checks (cpu vs sim, resume), then the losses against the fp32 runs above
check configs/tiny-dsa.json dsa-bf16 4 "${dsa_stages[@]}" --precision bf16
check configs/tiny.json moe-bf16 4 "${dsa_stages[@]}" --precision bf16
# near LABEL: every step's loss within 2% of the fp32 run's, and not all of them equal
near() {
  local label=$1 report
  report=$(python3 - "$work/$label-cpu/metrics.jsonl" "$work/$label-bf16-cpu/metrics.jsonl" <<'PY'
import json, sys
def losses(p):
    return [r["loss"] for r in map(json.loads, open(p)) if "loss" in r]
a, b = losses(sys.argv[1]), losses(sys.argv[2])
worst = max(abs(x - y) / abs(x) for x, y in zip(a, b)) if a and len(a) == len(b) else 1.0
print("ok" if worst < 0.02 and a != b else "bad", len(a), len(b), worst)
PY
)
  case $report in
    ok*) ok "$label: bf16 losses within 2% of fp32 and not equal to them ($report)" ;;
    *) echo "$report" > "$last_out"; not_ok "$label: bf16 losses within 2% of fp32" ;;
  esac
}
near dsa
near moe
for p in fp32 bf16; do
  for dev in cpu sim; do
    "$DSA" eval "$work/dsa-cpu/step-00000004" --data "$work/data" --seq-len 64 --windows 2 --batch 2 --topk 16 \
      --threads 2 --json --device "$dev" --precision "$p" 2> "$last_out" | sed -E 's/"seconds":[^,]*,//' > "$work/evalp-$p-$dev.json"
  done
done
if [ -s "$work/evalp-bf16-cpu.json" ] && cmp -s "$work/evalp-bf16-cpu.json" "$work/evalp-bf16-sim.json" &&
   ! cmp -s "$work/evalp-bf16-cpu.json" "$work/evalp-fp32-cpu.json"; then
  ok "dsa eval --precision bf16: sim equals cpu, and differs from fp32"
else
  cat "$work"/evalp-*.json >> "$last_out"; not_ok "dsa eval --precision bf16"
fi
expect_output "dsa eval: an unknown --precision names the choices" '"fp32" and "bf16"' \
  "$DSA" eval "$work/dsa-cpu/step-00000004" --data "$work/data" --seq-len 64 --windows 1 --precision fp8
expect_output "an unknown train.precision names the choices" 'fp32.*bf16' \
  "$DSA" train --config configs/tiny-dense.json --precision fp16 --set "train.out_dir=$work/fp16"
expect_output "an unknown device names the choices" '"cpu", "cuda", "sim"' \
  "$DSA" train --config configs/tiny-dense.json --device tpu --set "train.out_dir=$work/tpu"
expect_output "train.precision is recorded in the run config" '"precision":[[:space:]]*"fp32"' \
  cat "$work/dense-cpu/step-00000004/run_config.json"
