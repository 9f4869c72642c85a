# test_export.sh: `dsa convert` (streamed import of Hugging Face checkpoints: single file
# or shards, F32/BF16/F16/FP8, MTP layer skipped), `dsa export` (DeepSeek-V3.2 layout,
# f32/bf16/fp8, sharded) and model loading, on checkpoints generated here by
# tools/gen_checkpoint.py (stdlib Python).
#
# Values are checked by an independent stdlib-Python reader of the files ($work/st.py):
# an import gives back exactly the values the generator stored (FP8 decoded in Python);
# an import of an export gives back the same tensors (f32 exactly, bf16 = the source
# rounded to nearest even in Python, fp8 = Python's dequantize(quantize(W)) with the
# DSA-SPEC 3.2 export rule, every scale a power of two); the eval loss of an FP8 sharded
# checkpoint equals that of its exact F32 copy. Broken checkpoints (missing, extra,
# misshaped, wrongly typed tensor, truncated shard, bad header, index naming a missing
# shard) fail naming the tensor and file. The streaming bound: a generated >= 2 GB
# checkpoint is converted and exported back with the peak RSS that dsa reports (VmHWM)
# below 600 MB, i.e. of the order of the largest tensor (4096 x 8192: 64 MB in bf16,
# 128 MB as F32), not of the model; skipped under sanitizers and with < 12 GB free disk.
. "$(dirname "$0")/lib.sh"

root=$(cd "$(dirname "$0")/../.." && pwd)
gen() { python3 "$root/tools/gen_checkpoint.py" "$@" > "$last_out" 2>&1; }

cat > "$work/st.py" <<'PY'
"""Stdlib reader of safetensors checkpoints and the checks of test_export.sh."""
import bisect, json, math, os, struct, sys

def load(path):
    """{name: (dtype, shape, bytes)} of a file or a checkpoint directory (index or single file)."""
    files = [path]
    if os.path.isdir(path):
        idx = os.path.join(path, "model.safetensors.index.json")
        if os.path.exists(idx):
            files = [os.path.join(path, f) for f in sorted(set(json.load(open(idx))["weight_map"].values()))]
        else:
            files = [os.path.join(path, "model.safetensors")]
    out = {}
    for f in files:
        raw = open(f, "rb").read()
        n = struct.unpack("<Q", raw[:8])[0]
        hdr = json.loads(raw[8:8 + n])
        for name, e in hdr.items():
            if name == "__metadata__":
                continue
            b, c = e["data_offsets"]
            out[name] = (e["dtype"], e["shape"], raw[8 + n + b:8 + n + c])
    return out

def f32(t):
    dt, shape, b = t
    if dt == "F32":
        return list(struct.unpack(f"<{len(b) // 4}f", b))
    if dt == "BF16":
        w = bytearray(2 * len(b)); w[2::4] = b[0::2]; w[3::4] = b[1::2]
        return list(struct.unpack(f"<{len(b) // 2}f", bytes(w)))
    raise SystemExit(f"f32 of {dt}")

def bf16_rne(vals):
    u = struct.unpack(f"<{len(vals)}I", struct.pack(f"<{len(vals)}f", *vals))
    return struct.pack(f"<{len(u)}H", *(((x + 0x7FFF + ((x >> 16) & 1)) >> 16) & 0xFFFF for x in u))

def e4m3(b):
    s = -1.0 if b & 0x80 else 1.0
    e, m = (b >> 3) & 15, b & 7
    return s * (m * 2.0 ** -9 if e == 0 else (1 + m / 8) * 2.0 ** (e - 7))

POS = sorted((e4m3(c), c) for c in range(0x7F))  # non-negative codes except NaN (0x7F)
POS_V = [v for v, _ in POS]

def e4m3_rne(v):
    a = abs(v)
    i = bisect.bisect_left(POS_V, a)
    if i == len(POS_V):
        c = POS[-1][1]
    elif POS_V[i] == a or i == 0:
        c = POS[i][1]
    else:
        lo, hi = POS[i - 1], POS[i]
        d0, d1 = a - lo[0], hi[0] - a
        c = lo[1] if d0 < d1 or (d0 == d1 and lo[1] % 2 == 0) else hi[1]
    return c | (0x80 if math.copysign(1, v) < 0 else 0)

def quantize(w, rows, cols, blk=128):
    """Python's DSA-SPEC 3.2 export rule: S = 2^e, e smallest with amax <= 448 * 2^e."""
    sr, sc = -(-rows // blk), -(-cols // blk)
    scales, codes = [0.0] * (sr * sc), bytearray(rows * cols)
    for bi in range(sr):
        for bj in range(sc):
            idx = [i * cols + j for i in range(bi * blk, min(rows, bi * blk + blk))
                   for j in range(bj * blk, min(cols, bj * blk + blk))]
            amax = max(abs(w[k]) for k in idx)
            if amax == 0:
                e = -22
            else:
                e = math.frexp(amax / 448)[1]
                while 448 * 2.0 ** (e - 1) >= amax: e -= 1
                while 448 * 2.0 ** e < amax: e += 1
            s = 2.0 ** e
            scales[bi * sc + bj] = s
            for k in idx:
                codes[k] = e4m3_rne(w[k] / s)
    return bytes(codes), scales

FP8 = ("q_a_proj.weight", "q_b_proj.weight", "q_proj.weight", "kv_a_proj_with_mqa.weight", "kv_b_proj.weight",
       "o_proj.weight", "indexer.wq_b.weight", "indexer.wk.weight", "gate_proj.weight", "up_proj.weight",
       "down_proj.weight")

def first_diff(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))

def fail(msg):
    print("FAIL", msg); sys.exit(1)

def main():
    cmd, a = sys.argv[1], [load(p) for p in sys.argv[2:]]
    if cmd == "same":  # same names, same F32 values
        x, y = a
        if set(x) != set(y):
            fail(f"names differ: only in first {sorted(set(x) - set(y))[:3]}, only in second {sorted(set(y) - set(x))[:3]}")
        for n in sorted(x):
            if x[n][0] != "F32" or y[n][0] != "F32" or x[n][1] != y[n][1] or x[n][2] != y[n][2]:
                i = first_diff(x[n][2], y[n][2]) // 4
                fail(f"{n}: {x[n][0]} {x[n][1]} vs {y[n][0]} {y[n][1]}, first difference at element {i}")
        print(f"{len(x)} tensors identical")
    elif cmd in ("bf16", "fp8"):  # source F32, export, re-import F32
        src, exp, back = a
        scale_names = {n for n in exp if n.endswith(".weight_scale_inv")}
        if set(exp) - scale_names != set(src):
            fail(f"export names differ from the source: {sorted(set(exp) ^ set(src))[:4]}")
        nfp8 = 0
        for n in sorted(src):
            w = f32(src[n])
            if cmd == "fp8" and n.endswith(FP8):
                dt, shape, b = exp[n]
                sn = n[: -len("weight")] + "weight_scale_inv"
                if dt != "F8_E4M3" or sn not in exp or exp[sn][0] != "F32":
                    fail(f"{n}: {dt}, scale {exp.get(sn, ('absent',))[0]}: expected F8_E4M3 with an F32 scale")
                codes, scales = quantize(w, shape[0], shape[1])
                got = f32(exp[sn])
                if any(s != 2.0 ** math.frexp(s)[1] / 2 for s in got):
                    fail(f"{sn}: a scale is not a power of two: {[s for s in got if s != 2.0 ** math.frexp(s)[1] / 2][:3]}")
                if got != scales:
                    i = first_diff(got, scales)
                    fail(f"{sn}: block {i} scale {got[i]!r}, the export rule gives {scales[i]!r}")
                if b != codes:
                    i = first_diff(b, codes)
                    fail(f"{n}: element {i} code {b[i]:#04x}, e4m3_rne(w / S) = {codes[i]:#04x} (w = {w[i]!r})")
                sc = -(-shape[1] // 128)
                want = [e4m3(codes[i * shape[1] + j]) * scales[(i // 128) * sc + j // 128]
                        for i in range(shape[0]) for j in range(shape[1])]
                want = list(struct.unpack(f"<{len(want)}f", struct.pack(f"<{len(want)}f", *want)))
                nfp8 += 1
            else:
                want_dt = "F32" if n.endswith("e_score_correction_bias") else "BF16"
                if exp[n][0] != want_dt:
                    fail(f"{n}: exported as {exp[n][0]}, expected {want_dt}")
                if want_dt == "BF16" and exp[n][2] != bf16_rne(w):
                    i = first_diff(exp[n][2], bf16_rne(w)) // 2
                    fail(f"{n}: element {i} is not the bf16 rounding of {w[i]!r}")
                if want_dt == "F32" and exp[n][2] != src[n][2]:
                    fail(f"{n}: the F32 export differs from the source")
                want = f32(exp[n])
            if f32(back[n]) != want:
                i = first_diff(f32(back[n]), want)
                fail(f"{n}: re-import element {i} = {f32(back[n])[i]!r}, expected {want[i]!r}")
        print(f"{len(src)} tensors ({nfp8} FP8) as the {cmd} export rule says, re-imported exactly")
    elif cmd == "dtypes":
        for n in sorted(a[0]):
            print(n, a[0][n][0])
    else:
        fail(f"unknown command {cmd}")

main()
PY
st() { python3 "$work/st.py" "$@"; }
jkey() { python3 -c 'import json,sys; c=json.load(open(sys.argv[1])); print(json.dumps(c.get(sys.argv[2], "absent")))' "$@"; }

# ---- usage --------------------------------------------------------------------------------
expect_output "dsa --help lists export" "export .*DeepSeek-V3.2" "$DSA" --help
expect_output "dsa export --help prints usage" "usage: dsa export SRC --out DIR" "$DSA" export --help
expect_output "dsa convert --help describes the import" "dsa convert SRC --out DIR" "$DSA" convert --help
expect_rc 2 "dsa export without --out is a usage error" "$DSA" export x
expect_output "a bad --dtype is refused by value" 'dtype "fp4": expected bf16, fp8 or f32' \
  "$DSA" export x --out y --dtype fp4
expect_rc 2 "a bad --shard-size is a usage error" "$DSA" export x --out y --shard-size lots

# ---- import: FP8 sharded with an MTP layer, bf16, f16 ----------------------------------------
g=$work/gen
gen --out "$g/fp8" --dtype fp8 --shard-size 400000 --mtp --seed 1 --f32-copy "$g/fp8-ref" || not_ok "generate FP8"
gen --out "$g/bf16" --dtype bf16 --seed 2 --f32-copy "$g/bf16-ref" || not_ok "generate bf16"
gen --out "$g/f16" --dtype f16 --seed 3 --shard-size 1000000 --f32-copy "$g/f16-ref" || not_ok "generate f16"
expect_output "the FP8 source has several shards and an index" '"weight_map"' cat "$g/fp8/model.safetensors.index.json"
expect_output "convert an FP8 sharded checkpoint; the MTP layer is skipped with one log line" \
  "skipping the MTP layer model.layers.2.\* \(16 tensors" "$DSA" convert "$g/fp8" --out "$work/c-fp8"
"$DSA" convert "$g/fp8" --out "$work/c-fp8-quiet" --quiet > "$last_out" 2>&1
if [ "$(cat "$last_out")" = "converted: $work/c-fp8-quiet/converted" ]; then ok "convert --quiet prints only the result line"
else not_ok "convert --quiet prints only the result line"; fi
expect_output "the FP8 import equals the generator's Python dequantization exactly" "identical" \
  st same "$work/c-fp8/converted" "$g/fp8-ref"
expect_output "the converted config drops MTP" '^0$' jkey "$work/c-fp8/converted/config.json" num_nextn_predict_layers
expect_output "the converted config keeps the source's quantization_config" '"quant_method": "fp8"' \
  jkey "$work/c-fp8/converted/config.json" quantization_config
for d in bf16 f16; do
  "$DSA" convert "$g/$d" --out "$work/c-$d" --quiet > "$last_out" 2>&1 || not_ok "convert $d"
  expect_output "the $d import equals its values widened exactly" "identical" st same "$work/c-$d/converted" "$g/$d-ref"
done

# ---- loading FP8/sharded for eval: same loss as the F32 copy ----------------------------------
python3 -c 'import random,struct,sys; r=random.Random(5); open(sys.argv[1],"wb").write(struct.pack("<4000I",*[r.randrange(512) for _ in range(4000)]))' \
  "$work/tokens.u32"
ev=(--tokens "$work/tokens.u32" --seq-len 64 --windows 8 --batch 4 --threads 2 --json)
for m in fp8 fp8-ref; do "$DSA" eval "$g/$m" "${ev[@]}" > "$work/eval-$m.json" 2> "$last_out" || not_ok "eval $m"; done
"$DSA" eval "$work/c-fp8" "${ev[@]}" > "$work/eval-conv.json" 2> "$last_out" || not_ok "eval the converted model"
verdict=$(python3 - "$work"/eval-fp8.json "$work"/eval-fp8-ref.json "$work"/eval-conv.json <<'PY'
import json, sys
l = [json.load(open(p))["loss"] for p in sys.argv[1:]]
ok = all(abs(x - l[1]) <= 1e-6 * abs(l[1]) for x in l)
print(f"FP8 sharded {l[0]:.7f}, F32 copy {l[1]:.7f}, converted {l[2]:.7f}:", "pass" if ok else "fail")
PY
)
case "$verdict" in *pass) ok "eval loss of the FP8 sharded checkpoint = its F32 copy = its conversion ($verdict)" ;;
  *) echo "    $verdict" > "$last_out"; not_ok "eval loss of the FP8 sharded checkpoint = its F32 copy" ;; esac

# ---- dsa train --init straight from the FP8 sharded checkpoint: same first steps as its F32 copy ----
"$DSA" pack --format u32 --vocab-size 512 --eos-id 1 --out "$work/shards/t" "$work/tokens.u32" > "$last_out" 2>&1 ||
  not_ok "pack tokens for training"
for m in fp8 fp8-ref; do
  python3 - "$g/$m/config.json" "$work/shards" "$work/run-$m" > "$work/run-$m.json" <<'PY'
import json, sys
model = json.load(open(sys.argv[1]))
print(json.dumps({"model": model,
                  "data": {"train": [sys.argv[2]], "seq_len": 32},
                  "optimizer": {"lr": 1e-3},
                  "train": {"out_dir": sys.argv[3], "steps": 2, "global_batch": 2, "micro_batch": 1,
                            "checkpoint_every": 0, "threads": 2}}))
PY
  "$DSA" train --config "$work/run-$m.json" --init "$g/$m" > "$work/train-$m.log" 2>&1 || { cp "$work/train-$m.log" "$last_out"; not_ok "train --init $m"; }
done
expect_output "train --init from the FP8 sharded checkpoint gives the F32 copy's losses" "pass" python3 -c '
import json, sys
a, b = ([json.loads(l)["loss"] for l in open(p + "/metrics.jsonl")] for p in sys.argv[1:])
print(a, b, "pass" if len(a) == 2 and all(abs(x - y) <= 1e-6 * abs(y) for x, y in zip(a, b)) else "fail")' \
  "$work/run-fp8" "$work/run-fp8-ref"

# ---- MoE: routed and shared experts, router gate and its F32 bias ---------------------------------
gen --out "$g/moe" --dtype fp8 --moe --shard-size 300000 --seed 4 --f32-copy "$g/moe-ref" || not_ok "generate MoE"
expect_rc 0 "convert an FP8 sharded MoE checkpoint" "$DSA" convert "$g/moe" --out "$work/c-moe" --quiet
expect_output "the MoE import equals the generator's values exactly" "identical" st same "$work/c-moe/converted" "$g/moe-ref"
"$DSA" eval "$g/moe" "${ev[@]}" > "$work/eval-moe.json" 2> "$last_out" || not_ok "eval MoE FP8"
"$DSA" eval "$g/moe-ref" "${ev[@]}" > "$work/eval-moe-ref.json" 2> "$last_out" || not_ok "eval MoE F32 copy"
expect_output "eval loss of the FP8 sharded MoE checkpoint = its F32 copy" "pass" python3 -c '
import json, sys
a, b = (json.load(open(p))["loss"] for p in sys.argv[1:])
print(a, b, "pass" if abs(a - b) <= 1e-6 * abs(b) else "fail")' "$work/eval-moe.json" "$work/eval-moe-ref.json"
expect_rc 0 "export the MoE model (fp8, sharded)" "$DSA" export "$work/c-moe" --out "$work/e-moe" --shard-size 300KB --quiet
expect_rc 0 "import of the MoE export" "$DSA" convert "$work/e-moe" --out "$work/back-moe" --quiet
expect_output "MoE fp8 export: experts and shared experts e4m3, router bf16, bias F32, re-import exact" \
  "re-imported exactly" st fp8 "$work/c-moe/converted" "$work/e-moe" "$work/back-moe/converted"
expect_output "MoE fp8 export: e_score_correction_bias F32" "layers.1.mlp.gate.e_score_correction_bias F32" \
  st dtypes "$work/e-moe"
expect_output "MoE fp8 export: router gate bf16" "layers.1.mlp.gate.weight BF16" st dtypes "$work/e-moe"
expect_output "MoE fp8 export: an expert's down_proj is e4m3" "layers.1.mlp.experts.3.down_proj.weight F8_E4M3" \
  st dtypes "$work/e-moe"
expect_output "MoE export keeps first_k_dense_replace" '^1$' jkey "$work/e-moe/config.json" first_k_dense_replace

# ---- add an indexer to the FP8 source, export it three ways ------------------------------------
idx=(--index-n-heads 4 --index-head-dim 32 --index-topk 16 --seed 7 --quiet)
expect_rc 0 "convert --add-indexer from the FP8 sharded source" "$DSA" convert --add-indexer "$g/fp8" --out "$work/dsa" "${idx[@]}"
expect_rc 0 "convert --add-indexer from its F32 copy" "$DSA" convert --add-indexer "$g/fp8-ref" --out "$work/dsa-ref" "${idx[@]}"
expect_output "both give the same model, fresh indexers included (per-tensor init = whole-buffer init)" "identical" \
  st same "$work/dsa/converted" "$work/dsa-ref/converted"

e=$work/exp
expect_rc 0 "export --dtype f32" "$DSA" export "$work/dsa" --out "$e/f32" --dtype f32 --quiet
expect_rc 0 "import of the f32 export" "$DSA" convert "$e/f32" --out "$work/back-f32" --quiet
expect_output "f32 export round trip is exact" "identical" st same "$work/back-f32/converted" "$work/dsa/converted"
expect_output "f32 export: torch_dtype float32" '"float32"' jkey "$e/f32/config.json" torch_dtype
expect_output "f32 export: no quantization_config" '"absent"' jkey "$e/f32/config.json" quantization_config

expect_output "export defaults to fp8 for a model from an FP8 checkpoint, sharded" "exported: .* \(fp8\)" \
  "$DSA" export "$work/dsa" --out "$e/fp8" --shard-size 200KB --quiet
n=$(ls "$e/fp8"/model-*-of-*.safetensors 2> /dev/null | wc -l)
if [ "$n" -ge 3 ] && [ -f "$e/fp8/model.safetensors.index.json" ] && [ ! -e "$e/fp8/model.safetensors" ]; then
  ok "a small --shard-size gives several shards ($n) and an index"
else ls -l "$e/fp8" > "$last_out"; not_ok "a small --shard-size gives several shards and an index"; fi
expect_rc 0 "import of the sharded fp8 export" "$DSA" convert "$e/fp8" --out "$work/back-fp8" --quiet
expect_output "fp8 export: codes and power-of-two scales as the export rule, others bf16, re-import exact" \
  "re-imported exactly" st fp8 "$work/dsa/converted" "$e/fp8" "$work/back-fp8/converted"
expect_output "fp8 export: indexer weights_proj stays bf16" "indexer.weights_proj.weight BF16" st dtypes "$e/fp8"
expect_output "fp8 export: indexer wk is e4m3 with a scale" "indexer.wk.weight_scale_inv F32" st dtypes "$e/fp8"
expect_output "fp8 export: model_type deepseek_v32" '"deepseek_v32"' jkey "$e/fp8/config.json" model_type
expect_output "fp8 export: architectures DeepseekV32ForCausalLM" '\["DeepseekV32ForCausalLM"\]' \
  jkey "$e/fp8/config.json" architectures
expect_output "fp8 export: the index keys" '^16$' jkey "$e/fp8/config.json" index_topk
expect_output "fp8 export: index_n_heads" '^4$' jkey "$e/fp8/config.json" index_n_heads
expect_output "fp8 export: index_head_dim" '^32$' jkey "$e/fp8/config.json" index_head_dim
expect_output "fp8 export: num_nextn_predict_layers 0" '^0$' jkey "$e/fp8/config.json" num_nextn_predict_layers
expect_output "fp8 export: torch_dtype bfloat16" '"bfloat16"' jkey "$e/fp8/config.json" torch_dtype
expect_output "fp8 export: quantization_config with 128x128 blocks" \
  '"quant_method": "fp8".*"weight_block_size": \[128, 128\]' jkey "$e/fp8/config.json" quantization_config
expect_output "the index lists every tensor with its shard" "total_size" cat "$e/fp8/model.safetensors.index.json"

expect_rc 0 "export --dtype bf16" "$DSA" export "$work/dsa" --out "$e/bf16" --dtype bf16 --quiet
expect_rc 0 "import of the bf16 export" "$DSA" convert "$e/bf16" --out "$work/back-bf16" --quiet
expect_output "bf16 export: every tensor the source rounded to nearest even, re-imported exactly" \
  "re-imported exactly" st bf16 "$work/dsa/converted" "$e/bf16" "$work/back-bf16/converted"
expect_output "bf16 export: no quantization_config" '"absent"' jkey "$e/bf16/config.json" quantization_config

expect_output "an export of an FP8 export (re-quantizing exact FP8 values) is the same export" "identical" \
  bash -c "'$DSA' export '$work/back-fp8' --out '$e/fp8-again' --quiet > /dev/null 2>&1 &&
           '$DSA' convert '$e/fp8-again' --out '$work/back-fp8-again' --quiet > /dev/null 2>&1 &&
           python3 '$work/st.py' same '$work/back-fp8-again/converted' '$work/back-fp8/converted'"

# a model without an indexer exports in V3 layout; from a bf16 source the default is bf16
expect_output "a dense bf16-sourced model exports bf16 by default" "exported: .* \(bf16\)" \
  "$DSA" export "$work/c-bf16" --out "$e/dense" --quiet
expect_output "dense export: model_type deepseek_v3" '"deepseek_v3"' jkey "$e/dense/config.json" model_type
expect_output "dense export: no index keys" '"absent"' jkey "$e/dense/config.json" index_topk
expect_output "dense export: dense FFN in every layer for HF (first_k_dense_replace = layers)" '^2$' \
  jkey "$e/dense/config.json" first_k_dense_replace
expect_output "an export into a non-empty directory is refused" "is not empty" \
  "$DSA" export "$work/dsa" --out "$e/fp8" --quiet
mkdir -p "$e/empty"
expect_rc 0 "an export into an existing empty directory works" "$DSA" export "$work/dsa" --out "$e/empty" --quiet
if ls -a "$e" | grep -q '\.tmp\.'; then ls -a "$e" > "$last_out"; not_ok "no temporary directory is left behind";
else ok "no temporary directory is left behind"; fi

# ---- broken checkpoints: each error names the tensor and the file -------------------------------
b=$work/bad
t=model.layers.1.self_attn.o_proj.weight
gen --out "$b/missing" --shard-size 400000 --drop $t
expect_output "a missing tensor is named, with the index and the config.json" "bad/missing/model.safetensors.index.json: tensor $t is missing \(.*bad/missing/config.json implies shape \[256, 128\]\)" \
  "$DSA" convert "$b/missing" --out "$b/o1" --quiet
gen --out "$b/extra" --shard-size 400000 --extra model.layers.1.self_attn.foo.weight
expect_output "an extra tensor is named with its file" \
  "bad/extra/model-[0-9]+-of-[0-9]+.safetensors: unexpected tensor model.layers.1.self_attn.foo.weight" \
  "$DSA" convert "$b/extra" --out "$b/o2" --quiet
gen --out "$b/shape" --dtype fp8 --shard-size 400000 --reshape model.layers.0.mlp.up_proj.weight
expect_output "a misshaped tensor is named with its file and both shapes" \
  "bad/shape/model-[0-9]+-of-[0-9]+.safetensors: tensor model.layers.0.mlp.up_proj.weight has shape \[513, 256\], .*bad/shape/config.json implies \[512, 256\]" \
  "$DSA" convert "$b/shape" --out "$b/o3" --quiet
gen --out "$b/type" --shard-size 400000 --retype model.layers.0.mlp.up_proj.weight
expect_output "a wrongly typed tensor is named with its file" \
  "bad/type/model-[0-9]+-of-[0-9]+.safetensors: tensor model.layers.0.mlp.up_proj.weight has dtype I32" \
  "$DSA" convert "$b/type" --out "$b/o4" --quiet
gen --out "$b/trunc" --shard-size 400000
shard=$(ls "$b/trunc"/model-00002-of-*.safetensors)
truncate -s -100 "$shard"
expect_output "a truncated shard is named with the tensor that lost its bytes" \
  "bad/trunc/model-00002-of-[0-9]+.safetensors: tensor .* ends at byte .*truncated" \
  "$DSA" convert "$b/trunc" --out "$b/o5" --quiet
gen --out "$b/header" --shard-size 400000
shard=$(ls "$b/header"/model-00003-of-*.safetensors)
printf '!!' | dd of="$shard" bs=1 seek=8 conv=notrunc 2> /dev/null
expect_output "a bad header is named with its file" "bad/header/model-00003-of-[0-9]+.safetensors: .*JSON" \
  "$DSA" convert "$b/header" --out "$b/o6" --quiet
gen --out "$b/noshard" --shard-size 400000
rm "$b/noshard"/model-00004-of-*.safetensors
expect_output "an index naming a missing shard is named with the tensor and the shard" \
  "model.safetensors.index.json: .*tensor model.layers.*model-00004-of-[0-9]+.safetensors" \
  "$DSA" convert "$b/noshard" --out "$b/o7" --quiet
expect_output "loading for eval names a missing tensor and the directory too" "tensor $t is missing" \
  "$DSA" eval "$b/missing" "${ev[@]}"
gen --out "$b/mtp" --mtp
python3 -c 'import json,sys; p=sys.argv[1]; c=json.load(open(p)); c["num_nextn_predict_layers"]=0; json.dump(c,open(p,"w"))' \
  "$b/mtp/config.json"
expect_output "layer-L tensors without num_nextn_predict_layers are unexpected" \
  "bad/mtp/model.safetensors: unexpected tensor model.layers.2\." "$DSA" convert "$b/mtp" --out "$b/o8" --quiet
if ls "$b" | grep -q '^o[0-9]'; then ls "$b" > "$last_out"; not_ok "failed conversions leave nothing behind";
else ok "failed conversions leave nothing behind"; fi
rm -rf "$b" "$e" "$g"

# ---- streaming bound: a >= 2 GB checkpoint ------------------------------------------------------
bound_mb=600
free_gb=$(df -Pk "$work" | awk 'NR == 2 { print int($4 / 1048576) }')
case "${BUILD:-}" in *asan* | *san*) heavy_skip="sanitizer build (ASan's shadow memory inflates the resident set)" ;;
  *) heavy_skip="" ;; esac
if [ -z "$heavy_skip" ] && [ "$free_gb" -lt 12 ]; then heavy_skip="only $free_gb GB free on $work (12 GB needed)"; fi
if [ -n "$heavy_skip" ]; then
  skip "convert a 2.2 GB checkpoint with peak RSS < $bound_mb MB" "$heavy_skip"
  skip "export it back with peak RSS < $bound_mb MB" "$heavy_skip"
else
  big=$work/big
  gen --out "$big/src" --preset big --dtype bf16 --shard-size 1000000000 || not_ok "generate the 2.2 GB checkpoint"
  rss() { sed -n 's/.*peak RSS \([0-9.]*\) MB.*/\1/p' "$1" | tail -1; }
  "$DSA" convert "$big/src" --out "$big/conv" > "$big/convert.log" 2>&1
  rc=$? r=$(rss "$big/convert.log")
  if [ $rc -eq 0 ] && [ -n "$r" ] && awk -v r="$r" -v b=$bound_mb 'BEGIN { exit !(r < b) }'; then
    ok "convert a 2.2 GB checkpoint (99 tensors, largest 64 MB) with peak RSS $r MB < $bound_mb MB"
  else cp "$big/convert.log" "$last_out"; not_ok "convert a 2.2 GB checkpoint with peak RSS < $bound_mb MB (got ${r:-?})"; fi
  rm -rf "$big/src"
  "$DSA" export "$big/conv" --out "$big/exp" --dtype fp8 --shard-size 500MB > "$big/export.log" 2>&1
  rc=$? r=$(rss "$big/export.log")
  if [ $rc -eq 0 ] && [ -n "$r" ] && awk -v r="$r" -v b=$bound_mb 'BEGIN { exit !(r < b) }'; then
    ok "export it back (4.5 GB F32 -> fp8 shards) with peak RSS $r MB < $bound_mb MB"
  else cp "$big/export.log" "$last_out"; not_ok "export it back with peak RSS < $bound_mb MB (got ${r:-?})"; fi
  rm -rf "$big"
fi
