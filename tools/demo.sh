#!/usr/bin/env bash
# The demo: the whole pipeline that exists so far, on generated data, in a few minutes on CPU.
#   tools/demo.sh BUILD_DIR
# 1. pack synthetic long-range tasks (key-value recall, needle retrieval) into shards
# 2. pack this repository's own text files with the byte-level tokenizer
# 3. inspect the shards (and verify them against HDF5's own filter path)
# 4. stream 128K-token windows, save the cursor, resume from it
# 5. resolve the tiny model's configuration with an override
# 6. train the tiny dense MLA model (configs/tiny-dense.json) on short-range synthetic
#    tasks for 300 steps, stop at 150 and resume, show the loss falling, evaluate it
# 7. convert it to DSA: add a freshly initialized lightning indexer to every layer
# 8. the two DSA stages (configs/tiny-dsa.json): indexer warm-up (dense attention, model
#    frozen, KL against the attention distribution), then sparse top-32 training
# 9. evaluate dense vs sparse (loss, per-layer KL and recall, task accuracy), plot the
#    curves (tools/plot_metrics.py) and write a summary
# 10. export the DSA model as a DeepSeek-V3.2-layout checkpoint (FP8 e4m3 weights with
#    block scales, sharded) and evaluate the export as loaded back
set -euo pipefail
build=${1:-build}
dsa=$build/dsa
out=runs/demo
rm -rf "$out"
mkdir -p "$out"
step() { printf '\n== %s\n' "$*"; }

step "1. synthetic long-range tasks: 8Mi tokens, documents of 128Ki, answers 256 to 64Ki tokens back"
"$dsa" pack --format synthetic --tokens 8Mi --doc-tokens 128Ki --distances 256,4Ki,32Ki,64Ki --seed 1 \
  --shard-tokens 4Mi --out "$out/data/synthetic"

step "2. text: this repository's sources through the byte-level tokenizer"
"$dsa" pack --format text --out "$out/text/repo" README.md core/*.c data/*.c

step "3. inspect"
"$dsa" inspect --verify "$out/data/synthetic-00000.h5"
"$dsa" inspect "$out/text/repo-00000.h5"

step "4. stream 128Ki-token windows (seq_len 131072), stop after 3, resume for 3 more"
"$dsa" stream --seq-len 128Ki --windows 3 --seed 1 --segment-ids --save-cursor "$out/cursor.json" "$out/data"
"$dsa" stream --seq-len 128Ki --windows 3 --seed 1 --segment-ids --resume "$out/cursor.json" "$out/data"
step "   the same 6 windows without stopping (the lines above must match these)"
"$dsa" stream --seq-len 128Ki --windows 6 --seed 1 --segment-ids "$out/data"

step "5. the tiny model's configuration, with an override"
"$dsa" config --config configs/tiny.json --set model.index_topk=32 --check

step "6. train the tiny dense MLA model: synthetic recall tasks, 300 steps of 8 x 256 tokens"
"$dsa" pack --format synthetic --tokens 4Mi --doc-tokens 1Ki --distances 16,64,200 --seed 2 --out "$out/lm/syn" --quiet
"$dsa" pack --format synthetic --tokens 64Ki --doc-tokens 1Ki --distances 16,64,200 --seed 99 --out "$out/heldout/syn" --quiet
"$dsa" train --config configs/tiny-dense.json --stop-at 150
step "   resume the run from its step-150 checkpoint and finish"
"$dsa" train --config configs/tiny-dense.json --resume
step "   loss every 25 steps (metrics.jsonl)"
awk -F'"loss":' 'NR == 1 || NR % 25 == 0 { split($2, a, ","); split($0, s, "\"step\":"); split(s[2], b, ","); printf "  step %4d  loss %.4f\n", b[1], a[1] }' \
  "$out/tiny-dense/metrics.jsonl"
step "   held-out loss of the final checkpoint"
"$dsa" eval "$out/tiny-dense" --data "$out/heldout" --seq-len 256 --windows 32 --batch 8

step "7. convert: add a lightning indexer (4 heads x 32 dims, top-32) to the dense checkpoint"
"$dsa" convert --add-indexer "$out/tiny-dense" --out "$out/tiny-dsa-init" --index-n-heads 4 --index-head-dim 32 \
  --index-topk 32 --seed 7

step "8. DSA training: 100 warm-up steps (indexer only, dense attention), 100 sparse steps (top-32 of 256)"
"$dsa" train --config configs/tiny-dsa.json --init "$out/tiny-dsa-init"
step "   indexer KL (sum over layers) and mean recall every 20 steps"
python3 - "$out/tiny-dsa/metrics.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    m = json.loads(line)
    if m["step"] == 1 or m["step"] % 20 == 0:
        rec = sum(m["recall"]) / len(m["recall"])
        print(f"  step {m['step']:4d}  {m['stage']:7s} loss {m['loss']:.4f}  KL {m['indexer_loss']:.4f}  recall {rec:.3f}  keys {m['selected']:.1f}")
PY

step "9. held-out evaluation of the DSA model: dense vs sparse attention"
"$dsa" eval "$out/tiny-dsa" --data "$out/heldout" --seq-len 256 --windows 32 --batch 8
"$dsa" eval "$out/tiny-dsa" --data "$out/heldout" --seq-len 256 --windows 32 --batch 8 --json > "$out/eval-dsa.json"
if [ -x "${PYENV:-.venv}/bin/python" ] && "${PYENV:-.venv}/bin/python" -c 'import matplotlib' 2>/dev/null; then
  step "   plots and summary (tools/plot_metrics.py)"
  "${PYENV:-.venv}/bin/python" tools/plot_metrics.py "$out/tiny-dense" "$out/tiny-dsa" --eval "$out/eval-dsa.json" \
    --out "$out/plots" --title "tiny: dense LM, indexer warm-up, sparse training"
  cat "$out/plots/summary.txt"
  ls "$out/plots"
else
  echo "   (no .venv with matplotlib: run 'make pyenv' for the PNG plots)"
fi

step "10. export: DeepSeek-V3.2 layout, FP8 weights with 128x128 block scales, 1 MB shards"
"$dsa" export "$out/tiny-dsa" --out "$out/tiny-dsa-v32" --dtype fp8 --shard-size 1MB --quiet
ls "$out/tiny-dsa-v32"
grep -E '"(model_type|index_topk|quant_method)"' "$out/tiny-dsa-v32/config.json"
step "   held-out loss of the export as loaded back (FP8 weights dequantized): dense vs sparse"
"$dsa" eval "$out/tiny-dsa-v32" --data "$out/heldout" --seq-len 256 --windows 32 --batch 8

printf '\ndemo: done; outputs in %s\n' "$out"
