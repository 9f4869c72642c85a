#!/usr/bin/env python3
"""torch_ref.py: an independent PyTorch implementation of the dense DeepSeek-V3 model that
`dsa` trains (DSA-SPEC §4: MLA with YaRN RoPE in the interleaved layout, SwiGLU FFN), for
parity tests and for the speed baseline of `make bench`.

Subcommands:
  init   --config CFG --out DIR [--seed S] [--set key=value ...]
         random weights (normal(0, initializer_range), norms 1) written as DIR/config.json
         (a flat Hugging Face config) and DIR/model.safetensors (F32, HF names)
  grads  --model DIR --tokens FILE --seq-len L [--batch B] --out GRADS.safetensors [--json]
         mean next-token cross-entropy over B windows of a uint32 token file (window b is
         tokens[b*L : b*L+L+1], the rule of `dsa eval --tokens`), its gradient written
         with the parameter names; prints {"loss", "grad_norm", "tokens"}
  bench  --config CFG --seq-len L [--batch B] [--threads T] [--steps N] [--warmup W]
         times training steps (forward, backward, AdamW) on random tokens
  selftest
         RoPE vs complex multiplication, explicit vs SDPA attention, float64 gradcheck

Only torch, numpy and safetensors are needed. The config may be our sectioned format (its
"model" object is used) or a flat HF config.json.
"""
import argparse
import json
import math
import os
import resource
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F


# ---- config ------------------------------------------------------------------------------

def load_model_config(path, sets=()):
    with open(path) as f:
        cfg = json.load(f)
    model = cfg["model"] if "model" in cfg and isinstance(cfg["model"], dict) else cfg
    model = dict(model)
    for s in sets:
        key, _, value = s.partition("=")
        key = key[len("model."):] if key.startswith("model.") else key
        model[key] = json.loads(value)
    if model.get("n_routed_experts"):
        sys.exit("torch_ref: MoE configs are not supported (set n_routed_experts to null)")
    return model


def rope_frequencies(m):
    """YaRN-scaled inverse frequencies in fp32 (DSA-SPEC §4.3)."""
    d = m["qk_rope_head_dim"]
    theta = float(m.get("rope_theta", 10000.0))
    freq = 1.0 / (theta ** (torch.arange(0, d, 2, dtype=torch.float32) / d))
    rs = m.get("rope_scaling") or {}
    factor = float(rs.get("factor", 1.0))
    if rs.get("type") != "yarn" or factor <= 1.0:
        return freq
    lorig = rs["original_max_position_embeddings"]

    def corr(n):
        return d * math.log(lorig / (n * 2 * math.pi)) / (2 * math.log(theta))

    low = max(math.floor(corr(rs.get("beta_fast", 32))), 0)
    high = min(math.ceil(corr(rs.get("beta_slow", 1))), d - 1)
    if low == high:
        high += 0.001
    ramp = ((torch.arange(d // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    return freq * (1 - ramp) + (freq / factor) * ramp


def softmax_scale(m):
    s = (m["qk_nope_head_dim"] + m["qk_rope_head_dim"]) ** -0.5
    rs = m.get("rope_scaling") or {}
    factor = float(rs.get("factor", 1.0))
    if rs.get("type") == "yarn" and factor > 1:
        ms = 0.1 * float(rs.get("mscale_all_dim", 1.0)) * math.log(factor) + 1.0
        s *= ms * ms
    return s


def param_shapes(m):
    """(name, shape) in HF naming for the dense model."""
    D, H = m["hidden_size"], m["num_attention_heads"]
    dn, dr, dv, dc = m["qk_nope_head_dim"], m["qk_rope_head_dim"], m["v_head_dim"], m["kv_lora_rank"]
    dq, inter, V = m.get("q_lora_rank"), m["intermediate_size"], m["vocab_size"]
    out = [("model.embed_tokens.weight", (V, D))]
    for l in range(m["num_hidden_layers"]):
        p = f"model.layers.{l}."
        out.append((p + "input_layernorm.weight", (D,)))
        if dq:
            out += [(p + "self_attn.q_a_proj.weight", (dq, D)), (p + "self_attn.q_a_layernorm.weight", (dq,)),
                    (p + "self_attn.q_b_proj.weight", (H * (dn + dr), dq))]
        else:
            out.append((p + "self_attn.q_proj.weight", (H * (dn + dr), D)))
        out += [(p + "self_attn.kv_a_proj_with_mqa.weight", (dc + dr, D)),
                (p + "self_attn.kv_a_layernorm.weight", (dc,)),
                (p + "self_attn.kv_b_proj.weight", (H * (dn + dv), dc)),
                (p + "self_attn.o_proj.weight", (D, H * dv)),
                (p + "post_attention_layernorm.weight", (D,)),
                (p + "mlp.gate_proj.weight", (inter, D)), (p + "mlp.up_proj.weight", (inter, D)),
                (p + "mlp.down_proj.weight", (D, inter))]
    out += [("model.norm.weight", (D,)), ("lm_head.weight", (V, D))]
    return out


# ---- model -------------------------------------------------------------------------------

def rms_norm(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def rope_interleaved(x, cos, sin):
    """Rotate pairs (2i, 2i+1) of the last dim; cos/sin are [L, d/2] (DSA-SPEC §4.4)."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    y1 = x1 * cos - x2 * sin
    y2 = x1 * sin + x2 * cos
    return torch.stack((y1, y2), dim=-1).flatten(-2)


def attention(q, k, v, scale, explicit):
    """Causal attention; q, k [B, H, L, dqk], v [B, H, L, dv]."""
    if not explicit:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
    L = q.shape[-2]
    s = (q @ k.transpose(-1, -2)) * scale
    mask = torch.ones(L, L, dtype=torch.bool, device=q.device).triu(1)
    return torch.softmax(s.masked_fill(mask, float("-inf")), dim=-1) @ v


def forward(m, params, tokens, explicit=False):
    """Mean cross-entropy of tokens[:, 1:] given tokens[:, :-1]; tokens [B, L+1]."""
    inp, tgt = tokens[:, :-1], tokens[:, 1:]
    B, L = inp.shape
    D, H = m["hidden_size"], m["num_attention_heads"]
    dn, dr, dv, dc = m["qk_nope_head_dim"], m["qk_rope_head_dim"], m["v_head_dim"], m["kv_lora_rank"]
    eps = float(m.get("rms_norm_eps", 1e-6))
    dtype = params["model.embed_tokens.weight"].dtype
    freq = rope_frequencies(m)
    ang = (torch.arange(L, dtype=torch.float32)[:, None] * freq[None, :])
    cos, sin = torch.cos(ang.double()).to(dtype), torch.sin(ang.double()).to(dtype)
    scale = softmax_scale(m)
    h = params["model.embed_tokens.weight"][inp]
    for l in range(m["num_hidden_layers"]):
        p = lambda n: params[f"model.layers.{l}.{n}"]
        x = rms_norm(h, p("input_layernorm.weight"), eps)
        if m.get("q_lora_rank"):
            cq = rms_norm(x @ p("self_attn.q_a_proj.weight").T, p("self_attn.q_a_layernorm.weight"), eps)
            q = cq @ p("self_attn.q_b_proj.weight").T
        else:
            q = x @ p("self_attn.q_proj.weight").T
        q = q.view(B, L, H, dn + dr)
        q = torch.cat((q[..., :dn], rope_interleaved(q[..., dn:], cos[:, None, :], sin[:, None, :])), dim=-1)
        kva = x @ p("self_attn.kv_a_proj_with_mqa.weight").T
        c = rms_norm(kva[..., :dc], p("self_attn.kv_a_layernorm.weight"), eps)
        kr = rope_interleaved(kva[..., dc:], cos, sin)
        kv = (c @ p("self_attn.kv_b_proj.weight").T).view(B, L, H, dn + dv)
        k = torch.cat((kv[..., :dn], kr[:, :, None, :].expand(B, L, H, dr)), dim=-1)
        v = kv[..., dn:]
        o = attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), scale, explicit)
        h = h + o.transpose(1, 2).reshape(B, L, H * dv) @ p("self_attn.o_proj.weight").T
        x2 = rms_norm(h, p("post_attention_layernorm.weight"), eps)
        act = F.silu(x2 @ p("mlp.gate_proj.weight").T) * (x2 @ p("mlp.up_proj.weight").T)
        h = h + act @ p("mlp.down_proj.weight").T
    h = rms_norm(h, params["model.norm.weight"], eps)
    logits = h @ params["lm_head.weight"].T
    return F.cross_entropy(logits.reshape(B * L, -1), tgt.reshape(-1))


def init_params(m, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    std = float(m.get("initializer_range", 0.02))
    out = {}
    for name, shape in param_shapes(m):
        if name.endswith("norm.weight"):
            out[name] = torch.ones(shape, dtype=dtype)
        else:
            out[name] = (torch.randn(shape, generator=g, dtype=torch.float32) * std).to(dtype)
    return out


def train_flops_per_token(m, L):
    """6 x (matmul weights per token) + 6 x causal attention (QK and PV) per token; the
    formula of dsa_model_train_flops_per_token."""
    D, H = m["hidden_size"], m["num_attention_heads"]
    dqk, dv = m["qk_nope_head_dim"] + m["qk_rope_head_dim"], m["v_head_dim"]
    dc, dr = m["kv_lora_rank"], m["qk_rope_head_dim"]
    q = m["q_lora_rank"] * (D + H * dqk) if m.get("q_lora_rank") else D * H * dqk
    per_layer = q + D * (dc + dr) + dc * H * (m["qk_nope_head_dim"] + dv) + H * dv * D + 3 * D * m["intermediate_size"]
    matmul = m["num_hidden_layers"] * per_layer + D * m["vocab_size"]
    attn = m["num_hidden_layers"] * H * (dqk + dv) * (L + 1) / 2
    return 6.0 * (matmul + attn)


# ---- subcommands ---------------------------------------------------------------------------

def cmd_init(a):
    from safetensors.torch import save_file
    m = load_model_config(a.config, a.set)
    os.makedirs(a.out, exist_ok=True)
    params = init_params(m, a.seed)
    save_file({k: v.contiguous() for k, v in params.items()}, os.path.join(a.out, "model.safetensors"),
              metadata={"format": "pt"})
    hf = dict(m)
    hf.update({"architectures": ["DeepseekV3ForCausalLM"], "torch_dtype": "float32"})
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(hf, f, indent=2)


def cmd_grads(a):
    from safetensors.torch import load_file, save_file
    with open(os.path.join(a.model, "config.json")) as f:
        m = load_model_config(os.path.join(a.model, "config.json"))
    params = {k: v.float().requires_grad_(True) for k, v in load_file(os.path.join(a.model, "model.safetensors")).items()}
    raw = np.fromfile(a.tokens, dtype="<u4")
    L, B = a.seq_len, a.batch
    if len(raw) < B * L + 1:
        sys.exit(f"torch_ref: {a.tokens} holds {len(raw)} tokens, {B * L + 1} needed")
    tokens = torch.tensor(np.stack([raw[b * L: b * L + L + 1] for b in range(B)]).astype(np.int64))
    loss = forward(m, params, tokens, explicit=a.explicit)
    loss.backward()
    grads = {k: v.grad.contiguous() for k, v in params.items()}
    save_file(grads, a.out)
    norm = math.sqrt(sum(float(g.double().pow(2).sum()) for g in grads.values()))
    print(json.dumps({"loss": float(loss.detach()), "grad_norm": norm, "tokens": B * L}))


def cmd_bench(a):
    m = load_model_config(a.config, a.set)
    torch.set_num_threads(a.threads or os.cpu_count())
    params = {k: v.requires_grad_(True) for k, v in init_params(m, 1).items()}
    opt = torch.optim.AdamW(params.values(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
    g = torch.Generator().manual_seed(2)
    tokens = torch.randint(0, m["vocab_size"], (a.batch, a.seq_len + 1), generator=g)
    times = []
    for step in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = forward(m, params, tokens)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params.values(), 1.0)
        opt.step()
        if step >= a.warmup:
            times.append(time.perf_counter() - t0)
    dt = sum(times) / len(times)
    tps = a.batch * a.seq_len / dt
    out = {"bench": "torch", "config": a.config, "seq_len": a.seq_len, "batch": a.batch,
           "threads": torch.get_num_threads(), "torch": torch.__version__, "ms_per_step": dt * 1e3,
           "tokens_per_s": tps, "gflops": tps * train_flops_per_token(m, a.seq_len) / 1e9,
           "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    print(json.dumps(out) if a.json else
          f"torch {out['torch']}: {out['ms_per_step']:.1f} ms/step, {tps:.0f} tokens/s, {out['gflops']:.2f} GFLOP/s")


def cmd_selftest(a):
    torch.manual_seed(0)
    # interleaved RoPE equals complex multiplication of (x_2i + i x_2i+1) by e^{i phi}
    x = torch.randn(5, 8, dtype=torch.float64)
    phi = torch.rand(5, 4, dtype=torch.float64)
    y = rope_interleaved(x, torch.cos(phi), torch.sin(phi))
    z = torch.view_as_complex(x.view(5, 4, 2).contiguous()) * torch.polar(torch.ones_like(phi), phi)
    assert torch.allclose(y, torch.view_as_real(z).flatten(-2)), "rope"
    # explicit softmax attention equals SDPA
    q, k, v = torch.randn(2, 3, 17, 12), torch.randn(2, 3, 17, 12), torch.randn(2, 3, 17, 5)
    assert torch.allclose(attention(q, k, v, 0.3, True), attention(q, k, v, 0.3, False), atol=1e-5), "sdpa"
    # float64 gradcheck of the whole model on a tiny shape
    m = {"vocab_size": 11, "hidden_size": 8, "intermediate_size": 12, "num_hidden_layers": 1,
         "num_attention_heads": 2, "q_lora_rank": 4, "kv_lora_rank": 4, "qk_nope_head_dim": 2,
         "qk_rope_head_dim": 2, "v_head_dim": 3, "rope_scaling": None}
    params = {k: v.double() * 5 for k, v in init_params(m, 3).items()}
    tokens = torch.randint(0, 11, (2, 6))
    names = list(params)

    def f(*ts):
        return forward(m, dict(zip(names, ts)), tokens, explicit=True)
    assert torch.autograd.gradcheck(f, tuple(p.requires_grad_(True) for p in params.values())), "gradcheck"
    print("selftest: ok")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("init")
    p.add_argument("--config", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[])
    p = sub.add_parser("grads")
    p.add_argument("--model", required=True)
    p.add_argument("--tokens", required=True)
    p.add_argument("--seq-len", type=int, required=True)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--out", required=True)
    p.add_argument("--explicit", action="store_true", help="materialized softmax instead of SDPA")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("bench")
    p.add_argument("--config", required=True)
    p.add_argument("--seq-len", type=int, required=True)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--json", action="store_true")
    sub.add_parser("selftest")
    a = ap.parse_args()
    {"init": cmd_init, "grads": cmd_grads, "bench": cmd_bench, "selftest": cmd_selftest}[a.cmd](a)


if __name__ == "__main__":
    main()
