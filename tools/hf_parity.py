#!/usr/bin/env python3
"""tools/hf_parity.py: parity of `dsa` with Hugging Face transformers' DeepSeek models.

Builds tiny random (seeded) transformers models, saves them in fp32 with
save_pretrained, runs `dsa eval --logits-out` on them and compares the logits and the
loss with what transformers computes on the same token windows. Run by `make parity`
(tools/parity.sh); needs torch, numpy, safetensors and transformers==5.18.0
(tools/requirements-torch.txt). Prints one TAP line per case ("ok - NAME",
"not ok - NAME", "ok - NAME # SKIP why") and ends with
"tests: N passed, N failed, N skipped".

Cases (plus negative-control: one norm gain changed by 1% in the saved file must fail):
  a. v3-dense       DeepseekV3, first_k_dense_replace = num layers, q LoRA, YaRN RoPE
  b. v3-moe         DeepseekV3 MoE: sigmoid scores, noaux_tc with e_score_correction_bias,
                    n_group/topk_group, shared experts, norm_topk_prob, scaling factor
  c. v2-dense, v2-greedy, v2-group-limited
                    DeepseekV2 (V2-Lite style): q_lora_rank null, softmax routing,
                    greedy and group_limited_greedy top-k, YaRN with mscale 0.707
  d. v3-fp8-sharded the v3-moe model (v3-dense before MoE lands) written as a sharded
                    checkpoint (model.safetensors.index.json, 3 shards) with F8_E4M3
                    linear weights and 128x128-block weight_scale_inv, BF16 norms and
                    embeddings; transformers runs on the dequantized weights
  e. v32-export     `dsa convert --add-indexer` + `dsa export --dtype f32`, loaded by
                    transformers' DeepseekV32ForCausalLM (eager attention) and compared
                    with the sparse logits of `dsa eval --no-fp8` (index_topk < L)
  f. v32-export-fp8 the same with `dsa export --dtype fp8` (the release layout: e4m3 weights
                    with power-of-two 128x128 weight_scale_inv, routed experts included),
                    loaded by transformers' FineGrainedFP8 loader (it dequantizes on a
                    machine without a GPU; needs accelerate): every loaded weight must equal
                    the export decoded independently here, then the logits are compared
  g. v3-dense-export, v32-dense-export
                    a model without routed experts (our dense spelling, n_routed_experts
                    null) imported with `dsa convert` (and `--add-indexer` for v32), exported
                    with `dsa export --dtype f32`: its config.json must give integers for
                    n_routed_experts and num_experts_per_tok (0 and 0; transformers refuses
                    null), AutoModelForCausalLM.from_pretrained must load it, its logits must
                    match `dsa eval` of the export, and greedy generate() must give the tokens
                    the original transformers model generates (v32: the sparse logits of
                    `dsa eval --no-fp8`, and generate() must run)

Tolerance (fp32 on both sides): max |logit difference| <= 1e-4 * max |reference logit|
and |loss difference| <= 1e-5 * max(1, loss). Both sides compute in fp32 with different
summation orders (BLAS blocking, our fixed-order kernels, softmax in one pass vs online);
at these sizes (dot products of <= 320 terms, 2-3 layers) that gives relative errors
of about 1e-6, measured 2e-7..2e-6 here. Any semantic difference (a wrong scale,
a RoPE layout, a routing rule, a missed norm weight) moves logits by 1e-2 or more
relative, since every weight, norm gain and router bias is randomized with O(1)
effect (initializer_range 0.1, norm gains 1 + 0.2 N(0,1)). 1e-4 leaves two orders of
magnitude of margin above rounding and two below any real mistake. The FP8 case uses
the same tolerance: transformers gets the exactly dequantized weights, so the FP8
decoding itself must be exact. Routing and top-k selections are discrete: a near-tie
decided differently by rounding would show as a large error; the fixed seeds here
have none (the v32 case also counts rows whose selected key sets differ).

Differences between our semantics and transformers 5.18 (and which side follows the
DeepSeek reference inference code, DeepSeek-V3 / V3.2-Exp inference/model.py):

  1. Indexer Hadamard rotation: transformers skips it (DeepseekV32Indexer); we apply
     H/sqrt(128) to q and k as the reference does. Orthogonal, so the scores are equal
     up to fp32 rounding; in this comparison it costs ~1e-7 relative.
  2. Indexer FP8: the reference quantizes q and k to e4m3 with per-128 ue8m0 scales
     (fp8_index); transformers computes the scores in fp32 (bf16 for bf16 models). Ours
     follows the reference and is ON by default in `dsa eval`/training; `--no-fp8`
     turns it off, which this script uses for the comparison (with FP8 on, near ties of
     the top-k would be decided differently and logits would differ at the 1e-2 level).
  3. Rows with fewer than index_topk keys (t < k): transformers takes
     topk(min(k, T)) over the whole row with -inf on future keys, so it "selects"
     masked keys and they stay masked (its attention mask keeps -inf there); the
     reference does the same (re-masks them). We select only valid keys and pad with -1
     (DSA-SPEC §5.4). The attention result is the same.
  4. Ties of indexer scores: transformers uses torch.topk (order of equal scores
     unspecified); we rank equal scores by the lower key index (DSA-SPEC §5.4). With
     ReLU and few indexer heads exact ties (all heads' ReLU = 0 -> score 0) are common,
     so the v32 case uses 32 indexer heads and random weights where ties do not occur;
     it reports the number of rows whose selected sets differ.
  5. Indexer k_norm: both use LayerNorm with bias, eps 1e-6; both use the half-split
     (NeoX) RoPE on dims [0, d_r) of the indexer (the current reference too; the
     pre-November-2025 reference used the interleaved layout, DSA-SPEC §10).
  6. The indexer's RoPE in transformers uses the MLA cos/sin including the YaRN
     attention_factor get_mscale(F, mscale)/get_mscale(F, mscale_all_dim); with
     mscale == mscale_all_dim (all published configs) that factor is 1, as in the
     reference. A config with mscale != mscale_all_dim would scale the indexer's rotary
     dims in transformers but not in the reference or here.
  7. The v32 model in transformers has no scoring_func/topk_method keys: it always
     routes like V3 (sigmoid, noaux_tc). Ours reads them (defaults sigmoid/noaux_tc).
  8. Softmax (V2) routing weights: transformers' V2 router never renormalizes the
     top-k softmax weights, whatever norm_topk_prob says; the DeepSeek-V3 reference
     code (whose configs/config_16B.json is V2-Lite-shaped) never renormalizes softmax
     weights either, and ours follows both (pretrain/moe.c). The V2 repos' own
     modeling_deepseek.py renormalizes when norm_topk_prob is true and top_k > 1; V2 and
     V2-Lite have norm_topk_prob false, so all agree on the published models.
  9. V2 group_limited_greedy: group score = max of the group's softmax scores, the
     same in transformers, the V2 reference and here. V3 noaux_tc: group score = sum of
     the top-2 biased scores of the group; selection uses the biased scores, weights
     the unbiased ones, normalized when norm_topk_prob (transformers and ours; the V3
     reference always normalizes sigmoid weights, V3's norm_topk_prob is true) with
     +1e-20 in the denominator (transformers and ours; none in the reference, a 1e-20
     relative difference), then times routed_scaling_factor.
 10. transformers 5 writes RoPE as "rope_parameters" and adds "qk_head_dim"; our
     config reader maps both (core/config_hf.c, prepare_hf_v5). A saved V2 config has no
     scoring_func/topk_method when they are the class defaults; a raw deepseek_v2
     config.json without scoring_func means softmax (the V2 rule), which our reader
     applies too.
 11. The MTP layer (num_nextn_predict_layers): transformers and our eval ignore it.

Usage: tools/hf_parity.py --dsa BUILD/dsa [--work DIR] [--keep] [--threads N]
                          [--only NAME,...]
"""
import argparse
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

RTOL_LOGITS = 1e-4  # max |diff| / max |ref logit|, see the docstring
RTOL_LOSS = 1e-5  # |diff| / max(1, loss)
SEQ_LEN = 24
WINDOWS = 2


def log(msg):
    print("# " + msg.replace("\n", "\n# "), flush=True)


class Skip(Exception):
    """A case whose prerequisite has not landed (reason in the message)."""


class Fail(Exception):
    """A failed comparison or a failed dsa command (details in the message)."""


# ---- tiny models ------------------------------------------------------------------


def v3_kwargs(**over):
    """A tiny DeepSeek-V3-shaped config (dense by default), YaRN as in V3 (mscale ==
    mscale_all_dim = 1, max_position_embeddings = factor * original)."""
    kw = dict(
        vocab_size=96, hidden_size=64, intermediate_size=96, moe_intermediate_size=24,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4, q_lora_rank=40,
        kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=12,
        first_k_dense_replace=2, n_routed_experts=8, n_shared_experts=1, num_experts_per_tok=3,
        n_group=4, topk_group=2, routed_scaling_factor=2.5, norm_topk_prob=True,
        max_position_embeddings=256, rms_norm_eps=1e-6, initializer_range=0.1,
        tie_word_embeddings=False, num_nextn_predict_layers=0,
        rope_parameters=dict(rope_type="yarn", rope_theta=10000.0, factor=4.0,
                             original_max_position_embeddings=64, beta_fast=32.0, beta_slow=1.0,
                             mscale=1.0, mscale_all_dim=1.0),
    )
    kw.update(over)
    return kw


def v2_kwargs(**over):
    """A tiny DeepSeek-V2-Lite-shaped config: no q LoRA, softmax routing, two shared
    experts, routed_scaling_factor 1, norm_topk_prob false, YaRN with mscale 0.707."""
    kw = dict(
        vocab_size=96, hidden_size=64, intermediate_size=96, moe_intermediate_size=24,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4, q_lora_rank=None,
        kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16,
        first_k_dense_replace=1, n_routed_experts=8, n_shared_experts=2, num_experts_per_tok=3,
        n_group=4, topk_group=2, routed_scaling_factor=1.0, norm_topk_prob=False,
        topk_method="greedy", max_position_embeddings=640, rms_norm_eps=1e-6,
        initializer_range=0.1, tie_word_embeddings=False,
        rope_parameters=dict(rope_type="yarn", rope_theta=10000.0, factor=40.0,
                             original_max_position_embeddings=16, beta_fast=32.0, beta_slow=1.0,
                             mscale=0.707, mscale_all_dim=0.707),
    )
    kw.update(over)
    return kw


def randomize(model, seed):
    """Give every 1-D parameter/buffer an O(1) random effect: norm gains 1 + 0.2 N(0,1),
    LayerNorm biases and the router's e_score_correction_bias 0.1 N(0,1) (zeros or ones
    would hide a missing or misplaced norm or bias)."""
    g = torch.Generator().manual_seed(seed + 1000)
    with torch.no_grad():
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            if t.ndim != 1 or not t.dtype.is_floating_point or "rotary" in name:
                continue
            r = torch.randn(t.shape, generator=g)
            if name.endswith("e_score_correction_bias") or name.endswith(".bias"):
                t.copy_(0.1 * r)
            else:
                t.copy_(1.0 + 0.2 * r)


def build(kind, kwargs, seed):
    import transformers

    torch.manual_seed(seed)
    cls_cfg, cls_model = {
        "v2": (transformers.DeepseekV2Config, transformers.DeepseekV2ForCausalLM),
        "v3": (transformers.DeepseekV3Config, transformers.DeepseekV3ForCausalLM),
    }[kind]
    cfg = cls_cfg(**kwargs)
    cfg._attn_implementation = "eager"
    model = cls_model(cfg).float().eval()
    randomize(model, seed)
    return model


# ---- running both sides ------------------------------------------------------------


def write_tokens(path, vocab, seed, n=WINDOWS * SEQ_LEN + 1):
    rng = np.random.default_rng(seed)
    toks = rng.integers(0, vocab, size=n, dtype=np.uint32)
    toks.astype("<u4").tofile(path)
    return toks


def windows(toks, L=SEQ_LEN, n=WINDOWS):
    inp = np.stack([toks[b * L:b * L + L] for b in range(n)]).astype(np.int64)
    tgt = np.stack([toks[b * L + 1:b * L + L + 1] for b in range(n)]).astype(np.int64)
    return torch.from_numpy(inp), torch.from_numpy(tgt)


def hf_logits(model, inp):
    with torch.no_grad():
        return model(input_ids=inp, use_cache=False).logits.float()


def ce_loss(logits, tgt):
    lp = torch.log_softmax(logits.double(), dim=-1)
    return float(-lp.gather(-1, tgt.unsqueeze(-1)).mean())


def run(cmd, what):
    t0 = time.time()
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log("$ %s  (%.1f s)" % (" ".join(cmd), time.time() - t0))
    if p.returncode != 0:
        raise Fail("%s failed (exit %d):\n%s%s" % (what, p.returncode, p.stdout, p.stderr))
    return p.stdout


def dsa_eval(args, model_dir, tok_path, out, extra=()):
    cmd = [args.dsa, "eval", model_dir, "--tokens", tok_path, "--seq-len", str(SEQ_LEN),
           "--windows", str(WINDOWS), "--threads", str(args.threads), "--json", "--logits-out", out]
    text = run(cmd + list(extra), "dsa eval")
    from safetensors.numpy import load_file

    return json.loads(text.strip().splitlines()[-1]), {k: torch.from_numpy(v) for k, v in load_file(out).items()}


def compare(what, ours, ref, rtol=RTOL_LOGITS):
    """Max abs and relative error of ours vs ref (relative to max |ref|); Fail naming
    the worst position and both values beyond tolerance."""
    if tuple(ours.shape) != tuple(ref.shape):
        raise Fail("%s: shape %s from dsa, %s from transformers" % (what, tuple(ours.shape), tuple(ref.shape)))
    if not torch.isfinite(ours).all():
        raise Fail("%s: dsa logits have %d non-finite values" % (what, int((~torch.isfinite(ours)).sum())))
    err = (ours.double() - ref.double()).abs()
    scale = float(ref.abs().max())
    worst = int(err.argmax())
    idx = np.unravel_index(worst, tuple(err.shape))
    rel = float(err.max()) / scale
    within = float((err <= rtol * scale).double().mean())
    log("%s: max abs err %.3g, max rel err %.3g (of max |logit| %.3g), %.4f%% within %.0e; worst at %s: "
        "dsa %.7g, transformers %.7g" % (what, float(err.max()), rel, scale, 100 * within, rtol,
                                         tuple(int(i) for i in idx), float(ours.flatten()[worst]),
                                         float(ref.flatten()[worst])))
    if rel > rtol:
        raise Fail("%s: max relative error %.3g exceeds %.0e" % (what, rel, rtol))
    return rel


def compare_loss(what, ours, ref):
    diff = abs(ours - ref)
    log("%s: loss dsa %.9g, transformers %.9g, diff %.3g" % (what, ours, ref, diff))
    if diff > RTOL_LOSS * max(1.0, abs(ref)):
        raise Fail("%s: loss differs by %.3g (tolerance %.0e relative)" % (what, diff, RTOL_LOSS))


def check_model(args, work, name, model, seed, model_dir=None):
    """Save `model` (unless model_dir is given), evaluate it with dsa and transformers
    on the same windows, compare logits and loss."""
    if model_dir is None:
        model_dir = os.path.join(work, name)
        model.save_pretrained(model_dir)
    tok = os.path.join(work, name + ".u32")
    toks = write_tokens(tok, model.config.vocab_size, seed)
    inp, tgt = windows(toks)
    res, ours = dsa_eval(args, model_dir, tok, os.path.join(work, name + ".logits.safetensors"))
    ref = hf_logits(model, inp)
    compare(name + " logits", ours["logits"], ref)
    compare_loss(name, res["loss"], ce_loss(ref, tgt))


def moe_landed(args, work):
    """True when dsa loads a MoE config (the MoE layers have landed in pretrain/)."""
    d = os.path.join(work, "moe-probe")
    m = build("v3", v3_kwargs(first_k_dense_replace=1), 1)
    m.save_pretrained(d)
    toks = os.path.join(d, "t.u32")
    write_tokens(toks, m.config.vocab_size, 1, n=9)
    p = subprocess.run([args.dsa, "eval", d, "--tokens", toks, "--seq-len", "8", "--windows", "1", "--json"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if p.returncode != 0:
        log("MoE probe: " + (" | ".join(p.stdout.strip().splitlines()[:2]) or "failed"))
    return p.returncode == 0


# ---- the cases ---------------------------------------------------------------------


def case_v3_dense(args, work):
    m = build("v3", v3_kwargs(first_k_dense_replace=2), 11)
    check_model(args, work, "v3-dense", m, 11)


def case_v3_moe(args, work):
    if not args.moe:
        raise Skip("dsa does not load MoE models yet (pretrain/ MoE layers not landed)")
    m = build("v3", v3_kwargs(first_k_dense_replace=1), 12)
    check_model(args, work, "v3-moe", m, 12)


def case_v2_dense(args, work):
    m = build("v2", v2_kwargs(first_k_dense_replace=2), 21)
    check_model(args, work, "v2-dense", m, 21)


def case_v2_greedy(args, work):
    if not args.moe:
        raise Skip("dsa does not load MoE models yet (pretrain/ MoE layers not landed)")
    m = build("v2", v2_kwargs(topk_method="greedy"), 22)
    check_model(args, work, "v2-greedy", m, 22)


def case_v2_group_limited(args, work):
    if not args.moe:
        raise Skip("dsa does not load MoE models yet (pretrain/ MoE layers not landed)")
    m = build("v2", v2_kwargs(topk_method="group_limited_greedy"), 23)
    check_model(args, work, "v2-group-limited", m, 23)


def fp8_quantize(w):
    """128x128 block e4m3 of a 2-D fp32 weight: (codes float8_e4m3fn, scale_inv f32
    [ceil(out/128), ceil(in/128)]) with the reference's scale amax/448 (not a power of
    two, to exercise any-f32 scales), and the dequantized weight codes * scale."""
    out_f, in_f = w.shape
    bo, bi = -(-out_f // 128), -(-in_f // 128)
    s = torch.empty(bo, bi)
    codes = torch.empty(out_f, in_f, dtype=torch.float8_e4m3fn)
    deq = torch.empty(out_f, in_f)
    for i in range(bo):
        for j in range(bi):
            blk = w[i * 128:(i + 1) * 128, j * 128:(j + 1) * 128]
            amax = float(blk.abs().max())
            sc = amax / 448.0 if amax > 0 else 1.0
            c = (blk / sc).to(torch.float8_e4m3fn)
            codes[i * 128:(i + 1) * 128, j * 128:(j + 1) * 128] = c
            s[i, j] = sc
            deq[i * 128:(i + 1) * 128, j * 128:(j + 1) * 128] = c.float() * torch.tensor(sc, dtype=torch.float32)
    return codes, s, deq


def is_fp8_weight(name, t):
    """The tensors DeepSeek-V3's FP8 checkpoint stores as e4m3: every 2-D linear weight
    except embeddings, lm_head, the router gate and the indexer's weights_proj."""
    return (t.ndim == 2 and name.endswith("proj.weight") and "weights_proj" not in name)


def case_fp8_sharded(args, work):
    if not args.sharded:
        raise Skip("dsa does not read sharded/FP8 checkpoints yet (checkpoints/hf.c not landed)")
    moe = args.moe
    # dims above 128 so weights span several blocks, with partial edge blocks
    kw = v3_kwargs(hidden_size=192, intermediate_size=288, moe_intermediate_size=136, q_lora_rank=136,
                   kv_lora_rank=144, qk_nope_head_dim=32, qk_rope_head_dim=16, v_head_dim=40,
                   first_k_dense_replace=1 if moe else 2)
    m = build("v3", kw, 31)
    # the checkpoint layout (per-expert tensors; transformers fuses them in memory)
    from safetensors.torch import load_file, save_file

    src = os.path.join(work, "v3-fp8-src")
    m.save_pretrained(src)
    sd = load_file(os.path.join(src, "model.safetensors"))

    stored, deq = {}, {}
    n_fp8 = 0
    for k, v in sd.items():
        if is_fp8_weight(k, v):
            codes, s, d = fp8_quantize(v)
            stored[k], stored[k[:-len("weight")] + "weight_scale_inv"] = codes, s
            deq[k] = d
            n_fp8 += 1
        elif v.ndim == 1 and not k.endswith("e_score_correction_bias"):
            stored[k] = v.to(torch.bfloat16)  # norms in bf16, as published
            deq[k] = stored[k].float()
        elif "embed_tokens" in k:
            stored[k] = v.to(torch.bfloat16)
            deq[k] = stored[k].float()
        else:
            stored[k], deq[k] = v, v
    # transformers runs on the dequantized weights, loaded the way it loads checkpoints
    deq_dir = os.path.join(work, "v3-fp8-dequantized")
    os.makedirs(deq_dir)
    save_file({k: v.contiguous() for k, v in deq.items()}, os.path.join(deq_dir, "model.safetensors"),
              metadata={"format": "pt"})
    m.config.save_pretrained(deq_dir)
    import transformers

    m = transformers.DeepseekV3ForCausalLM.from_pretrained(deq_dir, dtype=torch.float32,
                                                          attn_implementation="eager").eval()
    d = os.path.join(work, "v3-fp8-sharded")
    os.makedirs(d)
    names = sorted(stored)
    shards = [names[i::3] for i in range(3)]
    weight_map, total = {}, 0
    for i, part in enumerate(shards):
        fn = "model-%05d-of-%05d.safetensors" % (i + 1, len(shards))
        save_file({k: stored[k] for k in part}, os.path.join(d, fn), metadata={"format": "pt"})
        for k in part:
            weight_map[k] = fn
            total += stored[k].numel() * stored[k].element_size()
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    m.config.save_pretrained(d)
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    cfg["quantization_config"] = {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                                  "weight_block_size": [128, 128]}
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    log("v3-fp8-sharded: %d FP8 weights in %d shards (%s)" % (n_fp8, len(shards), "MoE" if moe else "dense"))
    check_model(args, work, "v3-fp8-sharded", m, 31, model_dir=d)


def export_help(args):
    p = subprocess.run([args.dsa, "export", "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return p.stdout if p.returncode == 0 else None


def case_v32_export(args, work, dtype="f32"):
    if not args.export_help:
        raise Skip("dsa export does not exist yet")
    import transformers

    moe = args.moe
    kw = v3_kwargs(first_k_dense_replace=1 if moe else 2, rope_parameters=dict(rope_type="default", rope_theta=10000.0))
    src_model = build("v3", kw, 41)
    src = os.path.join(work, "v32-src")
    src_model.save_pretrained(src)
    conv = os.path.join(work, "v32-dsa")
    topk = 8
    if not os.path.exists(conv):
        run([args.dsa, "convert", "--add-indexer", src, "--out", conv, "--index-n-heads", "32", "--index-head-dim",
             "16", "--index-topk", str(topk), "--seed", "5"], "dsa convert")
    exp = os.path.join(work, "v32-export-" + dtype)
    run([args.dsa, "export", conv, "--out", exp, "--dtype", dtype], "dsa export")
    model = transformers.DeepseekV32ForCausalLM.from_pretrained(exp, dtype=torch.float32,
                                                              attn_implementation="eager").eval()
    if dtype == "fp8":
        check_fp8_load(model, exp)
    tok = os.path.join(work, "v32.u32")
    toks = write_tokens(tok, model.config.vocab_size, 41)
    inp, tgt = windows(toks)
    res, ours = dsa_eval(args, exp, tok, os.path.join(work, "v32-%s.logits.safetensors" % dtype), extra=["--no-fp8"])
    if "logits_sparse" not in ours:
        raise Fail("dsa eval of the export wrote no logits_sparse (not a DSA model?)")
    ref = hf_logits(model, inp)
    log("v32-export: index_topk %d < seq_len %d, %d indexer heads" % (topk, SEQ_LEN, 32))
    rows, differ, ties, near = indexer_selection_check(model, inp, topk)
    log("v32-export: %d indexer rows (layers x windows x queries): %d whose selected sets differ between "
        "transformers' torch.topk and our tie rule, %d with an exact tie at the k-th place, %d within 1e-5 "
        "relative of one" % (rows, differ, ties, near))
    if differ or ties:
        raise Fail("v32-export: %d rows select different keys, %d exact ties: the comparison needs a model "
                   "without ties (more indexer heads, other seeds)" % (differ, ties))
    effect = float((ours["logits"] - ours["logits_sparse"]).abs().max()) / float(ref.abs().max())
    log("v32-export: dsa's dense vs sparse logits differ by %.3g relative: the selection matters" % effect)
    if effect < 100 * RTOL_LOGITS:
        raise Fail("v32-export: sparse and dense logits differ by only %.3g: the top-k selection is not "
                   "tested (index_topk too large?)" % effect)
    compare("v32-export sparse logits", ours["logits_sparse"], ref)
    compare_loss("v32-export sparse", res["sparse_loss"], ce_loss(ref, tgt))


def check_fp8_load(model, exp):
    """The FP8 export as transformers loads it: on a machine without a GPU its
    FineGrainedFP8 quantizer dequantizes every e4m3 weight with its weight_scale_inv.
    Each loaded weight must equal our export decoded independently here (torch's
    float8_e4m3fn cast times the block scale, expanded over 128x128 blocks), so the
    logits below compare the same numbers on both sides."""
    from safetensors.torch import load_file

    stored = {}
    for fn in sorted(os.listdir(exp)):
        if fn.endswith(".safetensors"):
            stored.update(load_file(os.path.join(exp, fn)))
    params = dict(model.named_parameters())
    n_fp8 = 0
    for name, t in stored.items():
        if t.dtype != torch.float8_e4m3fn:
            continue
        s = stored[name[:-len("weight")] + "weight_scale_inv"].float()
        rows, cols = t.shape
        scale = s.repeat_interleave(128, 0)[:rows].repeat_interleave(128, 1)[:, :cols]
        want = t.float() * scale
        got = loaded_weight(params, name).detach().float()
        if not torch.equal(got, want):
            raise Fail("%s: transformers loaded other values than the FP8 export holds (max diff %.3g)" %
                       (name, float((got - want).abs().max())))
        n_fp8 += 1
    if n_fp8 == 0:
        raise Fail("the fp8 export holds no F8_E4M3 tensor")
    log("v32-export-fp8: transformers loaded %d e4m3 weights, each equal to its block-scaled decoding" % n_fp8)


def loaded_weight(params, name):
    """The weight transformers loaded for checkpoint tensor `name`. Routed experts are
    fused on load: mlp.experts.gate_up_proj [E, 2I, D] holds expert J's gate_proj rows
    then its up_proj rows, mlp.experts.down_proj [E, D, I] its down_proj."""
    m = re.match(r"(.*\.mlp\.experts)\.(\d+)\.(gate|up|down)_proj\.weight$", name)
    if not m:
        return params[name]
    prefix, j, which = m.group(1), int(m.group(2)), m.group(3)
    if which == "down":
        return params[prefix + ".down_proj"][j]
    fused = params[prefix + ".gate_up_proj"][j]
    half = fused.shape[0] // 2
    return fused[:half] if which == "gate" else fused[half:]


def dense_source(args, work, name, seed):
    """A tiny DeepseekV3 model without MoE layers, saved by transformers, then given our
    own spelling of a dense model (n_routed_experts null) and imported with `dsa convert`:
    the shape of every dense model dsa trains (configs/tiny-dense.json). Returns the
    transformers model and the converted directory."""
    m = build("v3", v3_kwargs(first_k_dense_replace=2, rope_parameters=dict(rope_type="default", rope_theta=10000.0)),
              seed)
    src = os.path.join(work, name + "-src")
    m.save_pretrained(src)
    with open(os.path.join(src, "config.json")) as f:
        cfg = json.load(f)
    cfg["n_routed_experts"] = None
    with open(os.path.join(src, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    conv = os.path.join(work, name + "-conv")
    run([args.dsa, "convert", src, "--out", conv, "--quiet"], "dsa convert")
    return m, conv


def check_dense_config(exp):
    """The export's config.json spells "no routed experts" with integers transformers accepts."""
    with open(os.path.join(exp, "config.json")) as f:
        cfg = json.load(f)
    got = {k: cfg.get(k) for k in ("n_routed_experts", "num_experts_per_tok", "first_k_dense_replace")}
    want = {"n_routed_experts": 0, "num_experts_per_tok": 0, "first_k_dense_replace": cfg["num_hidden_layers"]}
    log("%s config.json: %s" % (os.path.basename(exp), got))
    if got != want or any(isinstance(v, bool) or not isinstance(v, int) for v in got.values()):
        raise Fail("%s/config.json: %s, expected %s" % (exp, got, want))


def export_dense(args, work, src, name, arch):
    """`dsa export --dtype f32` of the dense model in `src` to WORK/name, its config.json
    checked, loaded with AutoModelForCausalLM.from_pretrained, which must give `arch`."""
    import transformers

    exp = os.path.join(work, name)
    run([args.dsa, "export", src, "--out", exp, "--dtype", "f32", "--quiet"], "dsa export")
    check_dense_config(exp)
    model = transformers.AutoModelForCausalLM.from_pretrained(exp, dtype=torch.float32,
                                                              attn_implementation="eager").eval()
    if type(model).__name__ != arch:
        raise Fail("%s: the dense export loaded as %s, expected %s" % (name, type(model).__name__, arch))
    return exp, model


def greedy(model, prompt, n=8):
    with torch.no_grad():
        out = model.generate(input_ids=prompt, max_new_tokens=n, do_sample=False, use_cache=True,
                             pad_token_id=0)
    return out[0, prompt.shape[1]:].tolist()


def case_v3_dense_export(args, work):
    if not args.export_help:
        raise Skip("dsa export does not exist yet")
    orig, conv = dense_source(args, work, "v3-dense-export", 51)
    exp, model = export_dense(args, work, conv, "v3-dense-export", "DeepseekV3ForCausalLM")
    check_model(args, work, "v3-dense-export", model, 51, model_dir=exp)
    prompt = windows(write_tokens(os.path.join(work, "v3-dense-prompt.u32"), model.config.vocab_size, 52))[0][:1, :8]
    ours, theirs = greedy(model, prompt), greedy(orig, prompt)
    log("v3-dense-export: generate() of the export %s, of the original model %s" % (ours, theirs))
    if ours != theirs:
        raise Fail("v3-dense-export: the export generates %s, the original model %s" % (ours, theirs))


def case_v32_dense_export(args, work):
    if not args.export_help:
        raise Skip("dsa export does not exist yet")
    _, conv = dense_source(args, work, "v32-dense-export", 53)
    dsa_dir = os.path.join(work, "v32-dense-dsa")
    run([args.dsa, "convert", "--add-indexer", conv, "--out", dsa_dir, "--index-n-heads", "32", "--index-head-dim",
         "16", "--index-topk", "8", "--seed", "5", "--quiet"], "dsa convert --add-indexer")
    exp, model = export_dense(args, work, dsa_dir, "v32-dense-export", "DeepseekV32ForCausalLM")
    tok = os.path.join(work, "v32-dense.u32")
    toks = write_tokens(tok, model.config.vocab_size, 53)
    inp, tgt = windows(toks)
    res, ours = dsa_eval(args, exp, tok, os.path.join(work, "v32-dense.logits.safetensors"), extra=["--no-fp8"])
    ref = hf_logits(model, inp)
    rows, differ, ties, _ = indexer_selection_check(model, inp, 8)
    if differ or ties:
        raise Fail("v32-dense-export: %d of %d rows select different keys, %d exact ties" % (differ, rows, ties))
    compare("v32-dense-export sparse logits", ours["logits_sparse"], ref)
    compare_loss("v32-dense-export sparse", res["sparse_loss"], ce_loss(ref, tgt))
    gen = greedy(model, inp[:1, :8])
    log("v32-dense-export: generate() of the export: %s" % gen)
    if len(gen) != 8 or not all(0 <= t < model.config.vocab_size for t in gen):
        raise Fail("v32-dense-export: generate() gave %s" % gen)


def case_v32_export_fp8(args, work):
    try:
        import accelerate  # noqa: F401  (transformers' FP8 loader needs it)
    except ImportError:
        raise Skip("accelerate is not installed (tools/requirements-torch.txt)")
    case_v32_export(args, work, "fp8")


def indexer_selection_check(model, inp, topk):
    """Compare, per layer and query row, transformers' top-k set (torch.topk over the
    whole row, masked keys included when the row has fewer than k valid keys) with our
    rule (DSA-SPEC §5.4: valid keys only, score descending, lower index first on ties),
    both on the same fp32 indexer scores recomputed from the indexer's inputs. Returns
    (rows, rows whose valid selected sets differ, rows with an exact tie at the k-th
    place, rows whose k-th and (k+1)-th scores are within 1e-5 relative: the rows where
    fp32 rounding differences between two implementations could swap a key)."""
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import apply_rotary_pos_emb

    captured = []

    def hook(mod, a, kw, out):
        captured.append((mod, a, kw, out.detach().clone()))

    hs = [l.self_attn.indexer.register_forward_hook(hook, with_kwargs=True) for l in model.model.layers]
    try:
        with torch.no_grad():
            model(input_ids=inp, use_cache=False)
    finally:
        for h in hs:
            h.remove()
    rows = differ = ties = near = 0
    with torch.no_grad():
        for mod, a, kw, sel in captured:
            x, q_resid, (cos, sin) = a[0], a[1], a[2]
            B, S, _ = x.shape
            q = mod.wq_b(q_resid).view(B, S, mod.n_heads, mod.head_dim)
            q_rot, q_pass = torch.split(q, [mod.qk_rope_head_dim, mod.head_dim - mod.qk_rope_head_dim], dim=-1)
            k = mod.k_norm(mod.wk(x)).unsqueeze(2)
            k_rot, k_pass = torch.split(k, [mod.qk_rope_head_dim, mod.head_dim - mod.qk_rope_head_dim], dim=-1)
            q_rot, k_rot = apply_rotary_pos_emb(q_rot, k_rot, cos, sin, unsqueeze_dim=2)
            q = torch.cat([q_rot, q_pass], -1).float()
            k = torch.cat([k_rot, k_pass], -1).squeeze(2).float()
            sc = torch.relu(torch.einsum("bshd,btd->bsht", q, k) * mod.softmax_scale)
            w = mod.weights_proj(x).float() * mod.n_heads ** -0.5
            score = torch.einsum("bsh,bsht->bst", w, sc)
            for b in range(B):
                for t in range(S):
                    rows += 1
                    v = score[b, t, :t + 1].double()
                    order = sorted(range(t + 1), key=lambda s_: (-float(v[s_]), s_))
                    ours = set(order[:topk])
                    theirs = set(int(i) for i in sel[b, t].tolist() if int(i) <= t)
                    differ += ours != theirs
                    if t + 1 > topk:
                        kth, nxt = float(v[order[topk - 1]]), float(v[order[topk]])
                        ties += kth == nxt
                        near += abs(kth - nxt) <= 1e-5 * max(abs(kth), 1e-30)
    return rows, differ, ties, near


def case_negative_control(args, work):
    """The comparison can fail: the v3-dense model with one RMSNorm gain changed by 1%
    in the saved file must be reported as a mismatch."""
    from safetensors.torch import load_file, save_file

    m = build("v3", v3_kwargs(first_k_dense_replace=2), 11)
    d = os.path.join(work, "negative-control")
    m.save_pretrained(d)
    f = os.path.join(d, "model.safetensors")
    sd = load_file(f)
    sd["model.layers.1.input_layernorm.weight"][5] *= 1.01
    save_file(sd, f, metadata={"format": "pt"})
    try:
        check_model(args, work, "negative-control", m, 11, model_dir=d)
    except Fail as e:
        log("negative-control: detected as expected: " + str(e).splitlines()[0])
        return
    raise Fail("negative-control: a 1% change of one norm gain went unnoticed")


CASES = [
    ("negative-control", case_negative_control),
    ("v3-dense", case_v3_dense),
    ("v3-moe", case_v3_moe),
    ("v2-dense", case_v2_dense),
    ("v2-greedy", case_v2_greedy),
    ("v2-group-limited", case_v2_group_limited),
    ("v3-fp8-sharded", case_fp8_sharded),
    ("v32-export", case_v32_export),
    ("v32-export-fp8", case_v32_export_fp8),
    ("v3-dense-export", case_v3_dense_export),
    ("v32-dense-export", case_v32_dense_export),
]


def sharded_landed(args, work):
    """True when dsa eval reads a directory holding model.safetensors.index.json."""
    d = os.path.join(work, "shard-probe")
    m = build("v3", v3_kwargs(num_hidden_layers=1, first_k_dense_replace=1), 2)
    m.save_pretrained(d, max_shard_size="20KB")
    if not os.path.exists(os.path.join(d, "model.safetensors.index.json")):
        return False
    toks = os.path.join(d, "t.u32")
    write_tokens(toks, m.config.vocab_size, 1, n=9)
    p = subprocess.run([args.dsa, "eval", d, "--tokens", toks, "--seq-len", "8", "--windows", "1", "--json"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if p.returncode != 0 and p.stdout.strip():
        log("sharded probe: " + p.stdout.strip().splitlines()[0])
    return p.returncode == 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dsa", required=True, help="the dsa binary")
    ap.add_argument("--work", help="scratch directory (default: a temporary one, removed)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", help="comma-separated case names")
    args = ap.parse_args()
    args.dsa = os.path.abspath(args.dsa)
    torch.set_num_threads(max(1, args.threads))
    work = args.work or tempfile.mkdtemp(prefix="dsa-parity-")
    os.makedirs(work, exist_ok=True)
    import transformers

    log("transformers %s, torch %s, dsa %s" % (transformers.__version__, torch.__version__, args.dsa))
    t0 = time.time()
    args.moe = moe_landed(args, work)
    args.sharded = sharded_landed(args, work)
    args.export_help = export_help(args)
    log("prerequisites: MoE %s, sharded/FP8 reader %s, export %s" %
        (args.moe, args.sharded, bool(args.export_help)))
    only = set(args.only.split(",")) if args.only else None
    passed = failed = skipped = 0
    for name, fn in CASES:
        if only and name not in only:
            continue
        t1 = time.time()
        try:
            fn(args, work)
            print("ok - %s" % name, flush=True)
            passed += 1
        except Skip as e:
            print("ok - %s # SKIP %s" % (name, e), flush=True)
            skipped += 1
        except Exception as e:  # a Fail, or a crash of the case: both count as failures
            log(("%s: " % name) + (str(e) if isinstance(e, Fail) else "%s: %s" % (type(e).__name__, e)))
            print("not ok - %s" % name, flush=True)
            failed += 1
        log("%s: %.1f s" % (name, time.time() - t1))
    if not args.keep and not args.work:
        shutil.rmtree(work, ignore_errors=True)
    log("total %.1f s" % (time.time() - t0))
    print("tests: %d passed, %d failed, %d skipped" % (passed, failed, skipped))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
