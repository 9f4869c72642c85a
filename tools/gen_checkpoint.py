#!/usr/bin/env python3
"""gen_checkpoint.py: write a generated DeepSeek-V3-layout Hugging Face checkpoint (dense
MLA model: config.json, safetensors shards, model.safetensors.index.json), stdlib only.

For the import tests of `dsa convert` / `dsa eval` / `dsa export` (tests/cli/test_export.sh):
a checkpoint of any size (the streaming test writes >= 2 GB of many tensors of at most
~64 MB each) in BF16, F16, F32, or FP8 (F8_E4M3 linear weights with F32
weight_scale_inv block scales, DSA-SPEC 3.2, as the DeepSeek-V3 FP8 checkpoints), and
--moe makes layers >= 1 DeepSeek MoE layers (4 routed experts, top-2 in 2 groups, one
shared expert, sigmoid/noaux_tc routing with an F32 e_score_correction_bias), and
deliberately broken variants (a missing, extra, misshaped or wrongly typed tensor).

Values come from a seeded generator and are bounded, so a forward pass is finite:
linear weights of magnitude 2^-9 .. 2^-5 (bf16/f16/f32) or e4m3 codes in [0.25, 3.75]
times a per-block scale near 0.005 (arbitrary f32 scales, not powers of two, to test the
general dequantization rule); norm weights in [0.5, 2).

--f32-copy DIR also writes the same model with every tensor as the exact F32 value the
checkpoint stores (FP8 dequantized here in Python, independently of the C code), one
model.safetensors without quantization_config: the reference for the import tests.

    tools/gen_checkpoint.py --out DIR [--dtype bf16|f16|f32|fp8] [--preset tiny|big]
        [--layers N] [--moe] [--shard-size BYTES] [--mtp] [--seed S] [--f32-copy DIR]
        [--drop NAME] [--extra NAME] [--reshape NAME] [--retype NAME]
"""
import argparse
import json
import os
import random
import struct
import sys

PRESETS = {
    # the tests' small model (the shapes of configs/tiny-dense.json)
    "tiny": dict(vocab=512, hidden=256, inter=512, layers=2, heads=4, q_lora=96, kv_lora=64, nope=32, rope=16,
                 v=32),
    # ~2.2 GB in bf16: 8 layers of ~270 MB, the largest tensors 4096 x 8192 (64 MB in bf16)
    "big": dict(vocab=1024, hidden=4096, inter=8192, layers=8, heads=32, q_lora=1536, kv_lora=512, nope=128,
                rope=64, v=128),
}
FP8_BLOCK = 128


def config_of(p, dtype, mtp, moe):
    cfg = {
        "architectures": ["DeepseekV3ForCausalLM"],
        "model_type": "deepseek_v3",
        "vocab_size": p["vocab"],
        "hidden_size": p["hidden"],
        "intermediate_size": p["inter"],
        "moe_intermediate_size": 64,
        "num_hidden_layers": p["layers"],
        "num_attention_heads": p["heads"],
        "num_key_value_heads": p["heads"],
        "q_lora_rank": p["q_lora"],
        "kv_lora_rank": p["kv_lora"],
        "qk_nope_head_dim": p["nope"],
        "qk_rope_head_dim": p["rope"],
        "v_head_dim": p["v"],
        "n_routed_experts": 4 if moe else None,
        "n_shared_experts": 1,
        "num_experts_per_tok": 2,
        "n_group": 2,
        "topk_group": 1,
        "routed_scaling_factor": 2.5,
        "scoring_func": "sigmoid",
        "topk_method": "noaux_tc",
        "norm_topk_prob": True,
        "first_k_dense_replace": 1 if moe else p["layers"],
        "num_nextn_predict_layers": 1 if mtp else 0,
        "max_position_embeddings": 1024,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "rope_scaling": {"type": "yarn", "factor": 8.0, "original_max_position_embeddings": 128, "beta_fast": 32.0,
                         "beta_slow": 1.0, "mscale": 1.0, "mscale_all_dim": 1.0},
        "initializer_range": 0.02,
        "tie_word_embeddings": False,
        "hidden_act": "silu",
        "torch_dtype": "bfloat16" if dtype in ("bf16", "fp8") else "float16" if dtype == "f16" else "float32",
    }
    if dtype == "fp8":
        cfg["quantization_config"] = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                                      "weight_block_size": [FP8_BLOCK, FP8_BLOCK]}
    return cfg


def layer_tensors(p, i, moe=False):
    """(name, shape, kind) of decoder layer i, in HF order; kind: True a linear weight
    (FP8 in FP8 checkpoints), False another weight, "f32" always F32."""
    D, H = p["hidden"], p["heads"]
    dqk = p["nope"] + p["rope"]
    pre = f"model.layers.{i}."
    return [
        (pre + "input_layernorm.weight", [D], False),
        (pre + "self_attn.q_a_proj.weight", [p["q_lora"], D], True),
        (pre + "self_attn.q_a_layernorm.weight", [p["q_lora"]], False),
        (pre + "self_attn.q_b_proj.weight", [H * dqk, p["q_lora"]], True),
        (pre + "self_attn.kv_a_proj_with_mqa.weight", [p["kv_lora"] + p["rope"], D], True),
        (pre + "self_attn.kv_a_layernorm.weight", [p["kv_lora"]], False),
        (pre + "self_attn.kv_b_proj.weight", [H * (p["nope"] + p["v"]), p["kv_lora"]], True),
        (pre + "self_attn.o_proj.weight", [D, H * p["v"]], True),
        (pre + "post_attention_layernorm.weight", [D], False),
    ] + (moe_tensors(pre, D) if moe and i >= 1 else [
        (pre + "mlp.gate_proj.weight", [p["inter"], D], True),
        (pre + "mlp.up_proj.weight", [p["inter"], D], True),
        (pre + "mlp.down_proj.weight", [D, p["inter"]], True),
    ])


def moe_tensors(pre, D, experts=4, inter=64, shared=1):
    out = [(pre + "mlp.gate.weight", [experts, D], False), (pre + "mlp.gate.e_score_correction_bias", [experts], "f32")]
    for j in range(experts):
        out += [(pre + f"mlp.experts.{j}.gate_proj.weight", [inter, D], True),
                (pre + f"mlp.experts.{j}.up_proj.weight", [inter, D], True),
                (pre + f"mlp.experts.{j}.down_proj.weight", [D, inter], True)]
    Is = inter * shared
    return out + [(pre + "mlp.shared_experts.gate_proj.weight", [Is, D], True),
                  (pre + "mlp.shared_experts.up_proj.weight", [Is, D], True),
                  (pre + "mlp.shared_experts.down_proj.weight", [D, Is], True)]


def model_tensors(p, mtp, moe):
    V, D = p["vocab"], p["hidden"]
    out = [("model.embed_tokens.weight", [V, D], False)]
    for i in range(p["layers"]):
        out += layer_tensors(p, i, moe)
    out += [("model.norm.weight", [D], False), ("lm_head.weight", [V, D], False)]
    if mtp:  # DeepSeek-V3's MTP module: a decoder layer plus its projections, as layer L
        L = p["layers"]
        out += layer_tensors(p, L, moe)
        out += [(f"model.layers.{L}.enorm.weight", [D], False), (f"model.layers.{L}.hnorm.weight", [D], False),
                (f"model.layers.{L}.eh_proj.weight", [D, 2 * D], False),
                (f"model.layers.{L}.shared_head.norm.weight", [D], False)]
    return out


def numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


# bf16 high byte: sign | exponent bits 7..1. Linear weights: exponent 118..121
# (|w| in [2^-9, 2^-5)); norms: exponent 126..127 (|w| in [0.5, 2)), positive.
BF16_HI_LINEAR = bytes((x & 0x80) | (59 + (x & 1)) for x in range(256))
BF16_HI_NORM = bytes(63 for _ in range(256))
# e4m3 code: sign | exponent (bias 7) | 3 mantissa bits; exponent 5..8 (|v| in [0.25, 3.75]), never NaN.
E4M3_MAP = bytes((x & 0x87) | ((((x >> 3) & 3) + 5) << 3) for x in range(256))


def e4m3_value(b):
    s = -1.0 if b & 0x80 else 1.0
    e, m = (b >> 3) & 15, b & 7
    if e == 0:
        return s * m * 2.0 ** -9
    return s * (1 + m / 8) * 2.0 ** (e - 7)


E4M3_TABLE = [e4m3_value(b) for b in range(256)]


def bf16_bytes(rng, n, norm):
    b = bytearray(rng.randbytes(2 * n))
    b[1::2] = bytes(b[1::2]).translate(BF16_HI_NORM if norm else BF16_HI_LINEAR)
    return bytes(b)


class Pool:
    """Random bytes drawn once; a tensor takes a window at a random offset (fast for
    multi-GB checkpoints: no per-tensor generation, values differ between tensors)."""

    def __init__(self, rng, nbytes):
        self.rng = rng
        self.bf16 = memoryview(bf16_bytes(rng, nbytes // 2 + 1, False))
        self.e4m3 = memoryview(bytes(rng.randbytes(nbytes)).translate(E4M3_MAP))

    def take(self, view, nbytes, align):
        off = self.rng.randrange(0, (len(view) - nbytes) // align + 1) * align
        return view[off:off + nbytes]


def bf16_to_f32_bytes(b):
    b = bytes(b)
    out = bytearray(2 * len(b))
    out[2::4] = b[0::2]
    out[3::4] = b[1::2]
    return bytes(out)


def f32_to_f16_bytes(f32):
    vals = struct.unpack(f"<{len(f32) // 4}f", f32)
    return struct.pack(f"<{len(vals)}e", *vals)


def gen_tensor(rng, pool, name, shape, linear, dtype):
    """{name: (dtype, shape, bytes)} for one logical tensor (plus its scale), and what
    exact_f32 needs to compute its F32 values."""
    n = numel(shape)
    norm = name.endswith("norm.weight")
    if dtype == "fp8" and linear is True:
        w8 = pool.take(pool.e4m3, n, 1)
        rows, cols = shape
        sr, sc = -(-rows // FP8_BLOCK), -(-cols // FP8_BLOCK)
        scales = [0.005 * (1 + rng.random()) for _ in range(sr * sc)]
        sbytes = struct.pack(f"<{len(scales)}f", *scales)
        scales = struct.unpack(f"<{len(scales)}f", sbytes)  # the f32-rounded values
        out = {name: ("F8_E4M3", shape, w8),
               name[: -len("weight")] + "weight_scale_inv": ("F32", [sr, sc], sbytes)}
        return out, (w8, scales)
    bf = bf16_bytes(rng, n, True) if norm else pool.take(pool.bf16, 2 * n, 2)
    if dtype in ("bf16", "fp8"):
        return {name: ("BF16", shape, bf)}, bf
    f32 = bf16_to_f32_bytes(bf)
    if dtype == "f16":
        return {name: ("F16", shape, f32_to_f16_bytes(f32))}, bf
    return {name: ("F32", shape, f32)}, bf


def exact_f32(shape, src):
    """The F32 bytes a reader must produce from what gen_tensor stored."""
    if isinstance(src, tuple):  # FP8: decode(w8) * scale, rounded to f32 once
        w8, scales = src
        rows, cols = shape
        sc = -(-cols // FP8_BLOCK)
        vals = [E4M3_TABLE[w8[i * cols + j]] * scales[(i // FP8_BLOCK) * sc + j // FP8_BLOCK]
                for i in range(rows) for j in range(cols)]
        return struct.pack(f"<{len(vals)}f", *vals)
    return bf16_to_f32_bytes(src)


def header_bytes(entries, meta=True):
    hdr, off = {}, 0
    if meta:
        hdr["__metadata__"] = {"format": "pt"}
    for name, (dt, shape, nbytes) in entries:
        hdr[name] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + nbytes]}
        off += nbytes
    text = json.dumps(hdr, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text


DTYPE_BYTES = {"F32": 4, "BF16": 2, "F16": 2, "F8_E4M3": 1, "I32": 4}


def plan(tensors, dtype, args):
    """[(name, dtype, shape, linear)] of every stored tensor (scales included), applying
    the breakage options."""
    out = []
    for name, shape, linear in tensors:
        if name == args.drop:
            continue
        shape = list(shape)
        if name == args.reshape:
            shape[0] += 1
        st = {"bf16": "BF16", "f16": "F16", "f32": "F32", "fp8": "BF16"}[dtype]
        if dtype == "fp8" and linear is True:
            st = "F8_E4M3"
        if linear == "f32":
            st = "F32"
        if name == args.retype:
            st = "I32"
        out.append((name, st, shape, linear))
    if args.extra:
        out.append((args.extra, "BF16" if dtype != "f32" else "F32", [4], False))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "f16", "f32", "fp8"])
    ap.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    ap.add_argument("--layers", type=int, help="override the preset's layer count")
    ap.add_argument("--shard-size", type=int, default=0, help="largest shard in bytes (0: one model.safetensors)")
    ap.add_argument("--mtp", action="store_true", help="add an MTP layer (num_nextn_predict_layers 1)")
    ap.add_argument("--moe", action="store_true", help="MoE FFNs in layers >= 1 (first_k_dense_replace 1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--f32-copy", help="also write the exact F32 values here (single file, no quantization_config)")
    ap.add_argument("--drop", help="leave this tensor out")
    ap.add_argument("--extra", help="add a tensor of this name")
    ap.add_argument("--reshape", help="store this tensor with one row too many")
    ap.add_argument("--retype", help="store this tensor as I32")
    args = ap.parse_args()

    p = dict(PRESETS[args.preset])
    if args.layers:
        p["layers"] = args.layers
    tensors = model_tensors(p, args.mtp, args.moe)
    stored = plan(tensors, args.dtype, args)
    os.makedirs(args.out, exist_ok=True)
    rng = random.Random(args.seed)
    pool = Pool(rng, 2 * max(numel(s) for _, s, _ in tensors) + (1 << 20))

    # shards: greedy in order; a tensor and its scale stay together
    def nbytes(entry):
        name, st, shape, linear = entry
        b = numel(shape) * DTYPE_BYTES[st]
        if st == "F8_E4M3":
            b += -(-shape[0] // FP8_BLOCK) * -(-shape[1] // FP8_BLOCK) * 4
        return b

    shards, cur, cur_bytes = [], [], 0
    for e in stored:
        b = nbytes(e)
        if cur and args.shard_size and cur_bytes + b > args.shard_size:
            shards.append(cur)
            cur, cur_bytes = [], 0
        cur.append(e)
        cur_bytes += b
    shards.append(cur)
    names = (["model.safetensors"] if len(shards) == 1 else
             [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))])

    copy_entries = []  # (name, shape, f32 bytes) for --f32-copy
    weight_map, total = {}, 0
    for fname, shard in zip(names, shards):
        layout = []
        for name, st, shape, linear in shard:
            if st == "F8_E4M3":
                layout.append((name, (st, shape, numel(shape))))
                ss = [-(-shape[0] // FP8_BLOCK), -(-shape[1] // FP8_BLOCK)]
                layout.append((name[: -len("weight")] + "weight_scale_inv", ("F32", ss, numel(ss) * 4)))
            else:
                layout.append((name, (st, shape, numel(shape) * DTYPE_BYTES[st])))
        # stable sort by element size, largest first (the reference writer's order)
        layout.sort(key=lambda e: -DTYPE_BYTES[e[1][0]])
        order = [e[0] for e in layout]
        data = {}
        with open(os.path.join(args.out, fname), "wb") as f:
            f.write(header_bytes(layout))
            pending = {}
            for name, st, shape, linear in shard:
                if st == "I32":
                    data = {name: ("I32", shape, rng.randbytes(numel(shape) * 4))}
                    src = None
                else:
                    data, src = gen_tensor(rng, pool, name, shape, linear, "fp8" if st == "F8_E4M3" else
                                           {"BF16": "bf16", "F16": "f16", "F32": "f32"}[st])
                    if args.f32_copy:
                        copy_entries.append((name, shape, exact_f32(shape, src)))
                pending.update(data)
                # write whatever is next in storage order
                while order and order[0] in pending:
                    nm = order.pop(0)
                    f.write(pending.pop(nm)[2])
            assert not order and not pending, (order, list(pending))
        for name, (st, shape, nb) in layout:
            weight_map[name] = fname
            total += nb
    if len(shards) > 1:
        with open(os.path.join(args.out, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}, f,
                      indent=2)
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(config_of(p, args.dtype, args.mtp, args.moe), f, indent=2)

    if args.f32_copy:
        os.makedirs(args.f32_copy, exist_ok=True)
        copy_entries = [e for e in copy_entries if not e[0].startswith(f"model.layers.{p['layers']}.")]
        layout = [(n, ("F32", s, len(b))) for n, s, b in copy_entries]
        with open(os.path.join(args.f32_copy, "model.safetensors"), "wb") as f:
            f.write(header_bytes(layout))
            for _, _, b in copy_entries:
                f.write(b)
        cfg = config_of(p, "f32", False, args.moe)
        with open(os.path.join(args.f32_copy, "config.json"), "w") as f:
            json.dump(cfg, f, indent=2)
    print(f"{args.out}: {len(stored)} tensors, {total / 1e9:.3f} GB in {len(shards)} file(s), {args.dtype}")


if __name__ == "__main__":
    sys.exit(main())
