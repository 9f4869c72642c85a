#!/usr/bin/env bash
# seeds.sh: (re)write the seed corpora of the fuzz harnesses (tests/fuzz/corpus/) from
# files our own tools write: a micro model trained one step (its model.safetensors,
# optimizer.safetensors, config.json), its export in bf16 and fp8 shards (their
# model.safetensors.index.json), the configs of configs/ and tests/data/hf-configs/, shards
# `dsa pack` writes, and Megatron .idx files of each token dtype (written here by the
# format's definition, data/import_megatron.c). Kept small: a few KB per file.
#   tests/fuzz/seeds.sh BUILD_DIR
set -euo pipefail
build=${1:?usage: tests/fuzz/seeds.sh BUILD_DIR}
root=$(cd "$(dirname "$0")/../.." && pwd)
dsa=$(cd "$build" && pwd)/dsa
corpus=$root/tests/fuzz/corpus
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rm -rf "$corpus"
mkdir -p "$corpus"/{safetensors,hf_index,config,megatron_idx,shard}

"$dsa" pack --format synthetic --tokens 4Ki --doc-tokens 1Ki --vocab-size 512 --seed 1 --shard-tokens 2Ki \
  --chunk-tokens 512 --out "$work/data/syn" --quiet > /dev/null
cp "$work/data/syn-00000.h5" "$corpus/shard/synthetic-set-00000.h5"
printf 'a first document\n' > "$work/a.txt"
"$dsa" pack --format text --out "$work/text/part" --quiet "$work/a.txt" > /dev/null
cp "$work/text/part-00000.h5" "$corpus/shard/text-bytes-v1.h5"

"$dsa" train --config "$root/configs/tiny-dense.json" --set "data.train=[\"$work/text\"]" --set data.seq_len=16 \
  --set model.vocab_size=257 --set model.hidden_size=8 --set model.intermediate_size=8 --set model.num_hidden_layers=1 \
  --set model.num_attention_heads=2 --set model.num_key_value_heads=2 --set model.q_lora_rank=4 --set model.kv_lora_rank=4 --set model.qk_nope_head_dim=4 \
  --set model.qk_rope_head_dim=4 --set model.v_head_dim=4 --set train.global_batch=1 --set train.micro_batch=1 \
  --set train.steps=1 --set train.checkpoint_every=0 --set optimizer.lr_warmup_steps=0 --set train.threads=1 \
  --set "train.out_dir=$work/run" --quiet > /dev/null
ck=$work/run/step-00000001
cp "$ck/model.safetensors" "$corpus/safetensors/micro-model.safetensors"
cp "$ck/config.json" "$corpus/config/micro-checkpoint.config.json"
cp "$ck/run_config.json" "$corpus/config/micro-run_config.json"
for dt in bf16 fp8; do
  "$dsa" export "$work/run" --out "$work/exp-$dt" --dtype "$dt" --shard-size 2000 --quiet > /dev/null
  cp "$work/exp-$dt/model.safetensors.index.json" "$corpus/hf_index/export-$dt.index.json"
done
cp "$work/exp-fp8/model-00001-of-"*.safetensors "$corpus/safetensors/export-fp8-shard1.safetensors"
for f in "$root"/configs/*.json "$root"/tests/data/hf-configs/*.json; do cp "$f" "$corpus/config/"; done

python3 - "$corpus/megatron_idx" <<'PY'
import struct, sys
out = sys.argv[1]
# MMIDIDX version 1: magic, version, dtype code, S, D, lengths (int32), pointers (int64),
# document indices (int64); the harness's .bin holds 64 bytes.
for code, size in ((1, 1), (2, 1), (3, 2), (4, 4), (5, 8), (8, 2)):
    lengths = [3, 2, 1]
    pointers, at = [], 0
    for n in lengths:
        pointers.append(at); at += n * size
    docs = [0, 2, 3]
    idx = b"MMIDIDX\0\0" + struct.pack("<QB", 1, code) + struct.pack("<QQ", len(lengths), len(docs))
    idx += struct.pack(f"<{len(lengths)}i", *lengths) + struct.pack(f"<{len(pointers)}q", *pointers)
    idx += struct.pack(f"<{len(docs)}q", *docs)
    open(f"{out}/dtype{code}.idx", "wb").write(idx)
PY
du -sh "$corpus"/*
