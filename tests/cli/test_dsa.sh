# test_dsa.sh: the DSA conversion end to end on synthetic long-range data: a small dense
# model trained briefly, `dsa convert --add-indexer`, the indexer warm-up and the sparse
# stage (configs/tiny-dsa.json, shortened), then `dsa eval` dense vs sparse. Checks the
# issue's acceptance criteria: the warm-up at least halves the mean indexer KL and raises
# top-k recall; after the sparse stage the held-out loss with sparse attention is within
# 2% of the dense model's. Plus the errors a user meets on the way.
. "$(dirname "$0")/lib.sh"

expect_output "dsa convert --help prints usage" "usage: dsa convert --add-indexer" "$DSA" convert --help
expect_rc 2 "dsa convert without --out is a usage error" "$DSA" convert --add-indexer x
expect_rc 2 "a non-numeric --index-topk is a usage error" "$DSA" convert --add-indexer x --out y --index-topk many

"$DSA" pack --format synthetic --tokens 1Mi --doc-tokens 512 --distances 8,32,100 --seed 4 \
  --out "$work/lm/syn" --quiet > "$last_out" 2>&1 || not_ok "pack training data"
"$DSA" pack --format synthetic --tokens 64Ki --doc-tokens 512 --distances 8,32,100 --seed 44 \
  --out "$work/heldout/syn" --quiet > "$last_out" 2>&1 || not_ok "pack held-out data"
data=(--set "data.train=[\"$work/lm\"]" --set data.seq_len=128 --set train.global_batch=8 --set train.micro_batch=8
  --set train.threads=2 --set train.log_every=10 --quiet)

# ---- a dense model --------------------------------------------------------------------
expect_rc 0 "train the dense model (120 steps)" "$DSA" train --config configs/tiny-dense.json "${data[@]}" \
  --set train.steps=120 --set train.checkpoint_every=0 --set "train.out_dir=$work/dense"

# ---- convert ------------------------------------------------------------------------------
idx=(--index-n-heads 4 --index-head-dim 32 --index-topk 16)
expect_output "a DSA run cannot start from the dense checkpoint directly (names dsa convert)" \
  "dsa convert --add-indexer" "$DSA" train --config configs/tiny-dsa.json "${data[@]}" --init "$work/dense" \
  --set "train.out_dir=$work/wrong"
expect_output "an index head dim that is not a power of two is refused by key" "index_head_dim" \
  "$DSA" convert --add-indexer "$work/dense" --out "$work/bad" --index-head-dim 24
expect_rc 0 "convert --add-indexer" "$DSA" convert --add-indexer "$work/dense" --out "$work/init" "${idx[@]}" --seed 3
expect_output "the converted config is a deepseek_v32 with the index keys" '"index_topk":[[:space:]]*16' \
  cat "$work/init/converted/config.json"
expect_output "converting twice into the same directory is refused" "converted" \
  "$DSA" convert --add-indexer "$work/dense" --out "$work/init" "${idx[@]}"
expect_output "a model that already has an indexer is refused" "already has a lightning indexer" \
  "$DSA" convert --add-indexer "$work/init" --out "$work/again" "${idx[@]}"

# ---- warm-up then sparse -----------------------------------------------------------------
expect_rc 0 "warm-up (60 steps) and sparse stage (30 steps)" "$DSA" train --config configs/tiny-dsa.json \
  "${data[@]}" --init "$work/init" --set model.index_topk=16 --set stages.0.steps=60 --set stages.1.steps=30 \
  --set train.checkpoint_every=0 --set "train.out_dir=$work/dsa"
expect_output "metrics carry per-layer KL, recall and the keys attended" \
  '"stage":"sparse".*"attention":"sparse".*"selected":[0-9.]+,"indexer_kl":\[[^]]+\],"recall":\[' \
  cat "$work/dsa/metrics.jsonl"
verdict=$(python3 - "$work/dsa/metrics.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
warm = [r for r in rows if r["stage"] == "warmup"]
mean = lambda xs: sum(xs) / len(xs)
kl0, kl1 = mean([r["indexer_loss"] for r in warm[:5]]), mean([r["indexer_loss"] for r in warm[-5:]])
rc0, rc1 = mean([mean(r["recall"]) for r in warm[:5]]), mean([mean(r["recall"]) for r in warm[-5:]])
print(f"KL {kl0:.4f} -> {kl1:.4f}, recall {rc0:.4f} -> {rc1:.4f}:", "pass" if kl1 <= kl0 / 2 and rc1 > rc0 else "fail")
PY
)
case "$verdict" in *pass) ok "warm-up halves the indexer KL and raises recall ($verdict)" ;;
  *) echo "    $verdict" > "$last_out"; not_ok "warm-up halves the indexer KL and raises recall" ;; esac

# ---- eval --------------------------------------------------------------------------------
ev=(--data "$work/heldout" --seq-len 128 --windows 32 --batch 8 --threads 2)
"$DSA" eval "$work/dense" "${ev[@]}" --json > "$work/dense.json" 2> "$last_out" || not_ok "eval the dense model"
"$DSA" eval "$work/dsa" "${ev[@]}" --json > "$work/dsa.json" 2> "$last_out" || not_ok "eval the DSA model"
expect_output "eval of a DSA model prints dense vs sparse, per-layer KL and recall" "indexer KL.*recall" \
  "$DSA" eval "$work/dsa" "${ev[@]}"
expect_output "eval JSON: per-layer KL and recall, dense and sparse task accuracy" \
  '"layers":\[\{"kl":[0-9.e-]+,"recall":[0-9.e-]+\},.*"tasks":\{"kv":[0-9.e-]+,"kv_sparse":[0-9.e-]+\}' cat "$work/dsa.json"
verdict=$(python3 - "$work/dense.json" "$work/dsa.json" <<'PY'
import json, sys
dense, dsa = (json.load(open(p)) for p in sys.argv[1:])
rel = (dsa["sparse_loss"] - dense["loss"]) / dense["loss"]
print(f"dense model {dense['loss']:.4f}, DSA sparse {dsa['sparse_loss']:.4f} ({100 * rel:+.2f}%), "
      f"DSA dense {dsa['dense_loss']:.4f}, top-k {dsa['topk']}:", "pass" if abs(rel) <= 0.02 else "fail")
PY
)
case "$verdict" in *pass) ok "sparse held-out loss within 2% of the dense model ($verdict)" ;;
  *) echo "    $verdict" > "$last_out"; not_ok "sparse held-out loss within 2% of the dense model" ;; esac
expect_output "--topk on a dense model is refused" "no lightning indexer" "$DSA" eval "$work/dense" "${ev[@]}" --topk 4

# --logits-out: "logits" and "logits_sparse" [N, L, V] F32, whose cross-entropy against the
# token file's next tokens is the printed dense and sparse loss.
u32_file "$work/lo.u32" $(python3 -c 'import random; r = random.Random(7); print(" ".join(str(r.randrange(512)) for _ in range(2 * 40 + 1)))')
"$DSA" eval "$work/dsa" --tokens "$work/lo.u32" --seq-len 40 --windows 2 --batch 2 --threads 2 --json \
  --logits-out "$work/lo.safetensors" > "$work/lo.json" 2> "$last_out" || not_ok "eval --logits-out"
verdict=$(python3 - "$work/lo.safetensors" "$work/lo.json" "$work/lo.u32" <<'PY' 2>&1
import json, math, struct, sys
from array import array
raw = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
head = json.loads(raw[8:8 + n])
res = json.load(open(sys.argv[2]))
tok = array("I"); tok.frombytes(open(sys.argv[3], "rb").read())
N, L, V = 2, 40, 512
msgs = []
for name, key in (("logits", "loss"), ("logits_sparse", "sparse_loss")):
    h = head.get(name)
    if not h or h["dtype"] != "F32" or h["shape"] != [N, L, V]:
        msgs.append(f"{name}: {h} (want F32 {[N, L, V]})"); continue
    a, b = h["data_offsets"]
    x = array("f"); x.frombytes(raw[8 + n + a:8 + n + b])
    total = 0.0
    for w in range(N):
        for t in range(L):
            row = x[(w * L + t) * V:(w * L + t + 1) * V]
            m = max(row)
            total += m + math.log(sum(math.exp(v - m) for v in row)) - row[tok[w * L + t + 1]]
    loss = total / (N * L)
    if abs(loss - res[key]) > 1e-5 * max(1, res[key]): msgs.append(f"{name}: CE {loss} vs printed {key} {res[key]}")
print("; ".join(msgs) if msgs else "pass")
PY
)
case "$verdict" in pass) ok "eval --logits-out writes logits and logits_sparse [N, L, V] whose CE is the printed loss" ;;
  *) echo "    $verdict" > "$last_out"; not_ok "eval --logits-out writes logits and logits_sparse [N, L, V] whose CE is the printed loss" ;; esac
