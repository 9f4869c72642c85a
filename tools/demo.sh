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

printf '\ndemo: done; outputs in %s\n' "$out"
