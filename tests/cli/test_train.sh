# test_train.sh: `dsa train` and `dsa eval` end to end: help and usage errors, a kill -9
# in the middle of a checkpoint save (the previous checkpoint stays loadable, the run
# resumes and ends bit-identical to an uninterrupted one), eval of a checkpoint, errors
# naming the damaged file, and parity of the loss and gradients with the PyTorch
# reference (tools/torch_ref.py) when its environment is present.
. "$(dirname "$0")/lib.sh"

expect_output "dsa train --help prints usage" "usage: dsa train" "$DSA" train --help
expect_output "dsa eval --help prints usage" "usage: dsa eval" "$DSA" eval --help
expect_rc 2 "dsa train without --config is a usage error" "$DSA" train
expect_rc 2 "dsa train --resume --init is a usage error" "$DSA" train --config configs/tiny-dense.json --resume --init x
expect_output "an unknown config key is named" "train.stpes" "$DSA" train --config configs/tiny-dense.json --set train.stpes=3

"$DSA" pack --format synthetic --tokens 64Ki --doc-tokens 1Ki --distances 16,48 --vocab-size 512 --seed 2 \
  --out "$work/data/syn" --quiet > "$last_out" 2>&1 || not_ok "pack synthetic data"
expect_rc 0 "the MoE config (configs/tiny.json) trains" "$DSA" train --config configs/tiny.json --set 'stages=null' \
  --set "data.train=[\"$work/data\"]" --set data.seq_len=64 --set train.global_batch=2 --set train.micro_batch=1 \
  --set train.steps=2 --set train.checkpoint_every=0 --set train.threads=2 --quiet --set "train.out_dir=$work/moe"
common=(--config configs/tiny-dense.json --set "data.train=[\"$work/data\"]" --set data.seq_len=64
  --set train.global_batch=2 --set train.micro_batch=1 --set train.steps=4 --set train.checkpoint_every=2
  --set optimizer.lr_warmup_steps=1
  --set train.threads=2 --quiet)

# ---- an uninterrupted run ---------------------------------------------------------------
expect_rc 0 "train 4 steps" "$DSA" train "${common[@]}" --set "train.out_dir=$work/straight"
lines=$(wc -l < "$work/straight/metrics.jsonl" 2> /dev/null || echo 0)
if [ "$lines" -eq 4 ]; then ok "metrics.jsonl has one line per step"; else not_ok "metrics.jsonl has one line per step ($lines)"; fi
expect_output "metrics lines carry loss, lr, grad norm, tokens/s and peak memory" \
  '"step":4,"stage":"lm","lr":[^,]+,"loss":[^,]+,"grad_norm":.*"tokens_per_s":.*"peak_rss_bytes"' \
  cat "$work/straight/metrics.jsonl"
expect_output "latest names the last checkpoint" "^step-00000004$" cat "$work/straight/latest"

# ---- kill -9 during the save of step 4 ------------------------------------------------
run=$work/killed
"$DSA" train "${common[@]}" --set "train.out_dir=$run" --pause-in-save 20000 > "$work/killed.log" 2>&1 &
pid=$!
for _ in $(seq 1 600); do
  grep -q "paused before commit of step-00000004" "$work/killed.log" 2> /dev/null && break
  sleep 0.1
done
if grep -q "paused before commit of step-00000004" "$work/killed.log"; then
  kill -9 "$pid"; wait "$pid" 2> /dev/null
  ok "the run paused inside the save of step 4 and was killed"
else
  kill -9 "$pid" 2> /dev/null; cp "$work/killed.log" "$last_out"; not_ok "the run paused inside the save of step 4"
fi
expect_output "after the kill, latest still names step 2" "^step-00000002$" cat "$run/latest"
expect_output "the step-2 checkpoint loads and evaluates" "loss" \
  "$DSA" eval "$run" --data "$work/data" --seq-len 64 --windows 2
expect_rc 0 "the killed run resumes" "$DSA" train "${common[@]}" --set "train.out_dir=$run" --resume
if cmp -s "$run/step-00000004/model.safetensors" "$work/straight/step-00000004/model.safetensors" &&
   cmp -s "$run/step-00000004/optimizer.safetensors" "$work/straight/step-00000004/optimizer.safetensors"; then
  ok "killed + resumed run is bit-identical to the uninterrupted one"
else
  not_ok "killed + resumed run is bit-identical to the uninterrupted one"
fi
leftover=$(find "$run" -maxdepth 1 -name '.tmp-*' | wc -l)
if [ "$leftover" -eq 0 ]; then ok "the resumed run removed the torn temporary directory"; else not_ok "torn temporary directory left behind"; fi
expect_output "fresh start over a used run directory is refused" "--resume" \
  "$DSA" train "${common[@]}" --set "train.out_dir=$run"

# ---- --init: weights from a checkpoint, fresh optimizer ------------------------------
expect_rc 0 "train --init starts from a checkpoint's weights" \
  "$DSA" train "${common[@]}" --set "train.out_dir=$work/init" --set train.steps=1 --init "$work/straight"
expect_output "train --init refuses a different model, naming the key" "model.hidden_size differs" \
  "$DSA" train "${common[@]}" --set "train.out_dir=$work/init2" --set model.hidden_size=128 --init "$work/straight"

# ---- eval and damaged files ------------------------------------------------------------
expect_output "eval --json reports the loss" '"loss":[0-9.]+' \
  "$DSA" eval "$work/straight" --data "$work/data" --seq-len 64 --windows 4 --batch 2 --json
cp -r "$work/straight/step-00000002" "$work/damaged"
printf 'garbage' | dd of="$work/damaged/model.safetensors" bs=1 seek=200 conv=notrunc 2> /dev/null
expect_output "a damaged checkpoint is refused naming the file" "model.safetensors.*(crc|CRC|checksum)" \
  "$DSA" eval "$work/damaged" --data "$work/data" --seq-len 64
expect_rc 1 "a damaged checkpoint exits 1" "$DSA" eval "$work/damaged" --data "$work/data" --seq-len 64

# ---- parity with the PyTorch reference --------------------------------------------------
torch_py=${TORCH_PY:-.venv-torch/bin/python}
if [ -x "$torch_py" ] && "$torch_py" -c 'import torch' 2> /dev/null; then
  u32_file "$work/tok.u32" $(python3 -c 'import random; r = random.Random(4); print(" ".join(str(r.randrange(512)) for _ in range(2 * 48 + 1)))')
  for ql in 96 null; do
    ref=$work/ref-$ql
    "$torch_py" tools/torch_ref.py init --config configs/tiny-dense.json --out "$ref" --seed 3 \
      ${ql:+--set model.q_lora_rank=$ql} > "$last_out" 2>&1 || not_ok "torch_ref init (q_lora_rank $ql)"
    "$torch_py" tools/torch_ref.py grads --model "$ref" --tokens "$work/tok.u32" --seq-len 48 --batch 2 \
      --out "$work/torch-$ql.safetensors" --json > "$work/torch-$ql.json" 2>&1
    "$DSA" eval "$ref" --tokens "$work/tok.u32" --seq-len 48 --windows 2 --batch 2 \
      --grads "$work/dsa-$ql.safetensors" --json > "$work/dsa-$ql.json" 2>&1
    if python3 - "$work/torch-$ql.json" "$work/dsa-$ql.json" > "$last_out" 2>&1 <<'PY'
import json, sys
t = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
d = json.loads(open(sys.argv[2]).read().strip().splitlines()[-1])
print("torch", t["loss"], "dsa", d["loss"])
sys.exit(0 if abs(t["loss"] - d["loss"]) <= 1e-5 * abs(t["loss"]) else 1)
PY
    then ok "loss equals PyTorch's (q_lora_rank $ql)"; else not_ok "loss equals PyTorch's (q_lora_rank $ql)"; fi
    expect_rc 0 "gradients equal PyTorch's (q_lora_rank $ql)" \
      "$torch_py" tools/compare_tensors.py "$work/dsa-$ql.safetensors" "$work/torch-$ql.safetensors" --rtol 1e-4
  done
else
  skip "parity with PyTorch" "no torch environment at $torch_py (tools/torch_env.sh makes one)"
fi
