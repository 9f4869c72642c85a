#!/usr/bin/env python3
"""bench_gpu_torch.py: the ops of `dsa bench gpu` as plain PyTorch, for the ratio.

The unfused path a Megatron user has without DSA kernels: gather + matmul + softmax,
chunked over query blocks so that no L x L buffer is needed, autograd for the backward.
Same shapes (one DeepSeek-V3.2 attention layer, from --config), same lengths, one
sequence, fp32 storage with TF32 off (the backend table's fp32; --dtype bf16 for the
bf16 path), seeded random inputs:

  indexer_topk  scores c·Σ_j w_j ReLU(q_j·k) over the causal keys, torch.topk per row
  dense_fwd     softmax(q kᵀ τ + causal mask) v per query block, MHA form
  dense_bwd     per query block: the forward recomputed under autograd, then backward
  kl_dense      KL(p ‖ softmax(I)) with p the head-mean of the dense attention, and the
                gradients of q̂, k̂, w (autograd), per query block
  sparse_fwd    kv[idx] gathered per query block, softmax(q Kᵀ τ) V over the top-k
  sparse_bwd    per query block: recomputed under autograd, backward (index_add_ for ∂kv)
  kl_sparse     the same KL over S_t only, with gradients
Time: median of --reps after a warm-up run, torch.cuda.synchronize around each, the
monotonic clock. An op whose time, predicted from the previous length, would not fit the
remaining --budget is skipped and says so. Prints one JSON object per op and length
(--json FILE writes them there too), the schema of `dsa bench gpu --json`, without FLOPs:
the ratio takes dsa's counts (DSA-SPEC §8.4) for both.

  tools/bench_gpu_torch.py [--seq-len 8192,32768,131072] [--reps 3] [--budget 120] [--json FILE]
  tools/bench_gpu_torch.py --ratio DSA.jsonl TORCH.jsonl   (markdown table: ms, TFLOPS, speed-up)
"""
import argparse
import json
import math
import os
import sys
import time

OPS = ["indexer_topk", "dense_fwd", "dense_bwd", "kl_dense", "sparse_fwd", "sparse_bwd", "kl_sparse"]
# A stage's attention-block step as the sum of its parts (as `dsa bench gpu` prints it).
STEPS = {"warmup_step": ["indexer_topk", "dense_fwd", "kl_dense"],
         "sparse_step": ["indexer_topk", "sparse_fwd", "sparse_bwd", "kl_sparse"]}


def read_jsonl(path):
    rows = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                r = json.loads(line)
                rows[(r["seq_len"], r["op"])] = r
    return rows


def ratio(dsa_path, torch_path):
    d, t = read_jsonl(dsa_path), read_jsonl(torch_path)
    for rows in (d, t):  # dsa prints its step rows; the torch run's are summed here alike
        for L in sorted({k[0] for k in rows}):
            for step, parts in STEPS.items():
                if (L, step) in rows:
                    continue
                got = [rows.get((L, p)) for p in parts]
                ok = all(r is not None and r["status"] == "ok" for r in got)
                rows[(L, step)] = {"status": "ok" if ok else "skipped", "ms": sum(r["ms"] for r in got) if ok else 0.0,
                                   "flops": sum(r.get("flops", 0.0) for r in got) if ok else 0.0}
    print("| seq_len | op | dsa ms | dsa TFLOPS | torch ms | torch TFLOPS | dsa speed-up |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    order = OPS + list(STEPS)
    for key in sorted(d, key=lambda k: (k[0], order.index(k[1]) if k[1] in order else 99)):
        a, b = d[key], t.get(key)
        if key[1] not in order:
            continue
        ok_a, ok_b = a["status"] == "ok", b is not None and b["status"] == "ok"
        fl = a.get("flops", 0.0)
        cells = [str(key[0]), key[1],
                 "%.3f" % a["ms"] if ok_a else "skipped",
                 "%.1f" % (fl / (a["ms"] / 1e3) / 1e12) if ok_a and a["ms"] > 0 else "-",
                 "%.3f" % b["ms"] if ok_b else "skipped",
                 "%.1f" % (fl / (b["ms"] / 1e3) / 1e12) if ok_b and b["ms"] > 0 else "-",
                 "%.2fx" % (b["ms"] / a["ms"]) if ok_a and ok_b and a["ms"] > 0 else "-"]
        print("| " + " | ".join(cells) + " |")


def shapes(path):
    with open(path) as f:
        m = json.load(f)["model"]
    return dict(H=m["num_attention_heads"], dqk=m["qk_nope_head_dim"] + m["qk_rope_head_dim"], dv=m["v_head_dim"],
                dc=m["kv_lora_rank"], dr=m["qk_rope_head_dim"], HI=m["index_n_heads"], dI=m["index_head_dim"],
                topk=m["index_topk"])


class Bench:
    def __init__(self, torch, args, s):
        self.torch, self.args, self.s = torch, args, s
        self.dev = torch.device(args.device)
        self.sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
        self.dtype = torch.float32 if args.dtype == "fp32" else torch.bfloat16
        self.rate = {}  # op -> seconds per FLOP-free unit: seconds / L^2 (all ops here scale at most so)
        self.t0 = time.monotonic()
        self.gen = torch.Generator(device=self.dev)
        self.gen.manual_seed(args.seed)

    def rand(self, *shape, scale=1.0):
        t = self.torch.rand(*shape, device=self.dev, generator=self.gen, dtype=self.torch.float32) * 2 - 1
        return (t * scale).to(self.dtype)

    def rows(self, bytes_per_row):
        """Query rows per block so that a block's largest temporary stays near --chunk-gib."""
        return max(1, min(4096, int(self.args.chunk_gib * 2**30 // bytes_per_row)))

    def timed(self, name, L, fn):
        torch, a = self.torch, self.args
        left = a.budget - (time.monotonic() - self.t0)
        if name in self.rate:  # per-length cost grows at most as L^2 (causal pairs)
            pred = self.rate[name][0] * (L / self.rate[name][1]) ** 2
            if pred * (1 + a.reps) > left:
                return {"status": "skipped", "ms": 0.0,
                        "note": "predicted %.0f s per run from the last length; %.0f s of --budget left" % (pred, left)}
        times = []
        for i in range(a.reps + 1):
            self.sync()
            t = time.monotonic()
            fn()
            self.sync()
            dt = time.monotonic() - t
            if i > 0:
                times.append(dt)
            if i == 0 and a.budget - (time.monotonic() - self.t0) < dt * a.reps:
                times.append(dt)
                break
        times.sort()
        med = times[len(times) // 2]
        self.rate[name] = (med, L)
        return {"status": "ok", "ms": med * 1e3, "note": "%d run(s)" % len(times)}

    # ---- the ops --------------------------------------------------------------------------
    def scores_block(self, qI, kI, w, t0, t1, need_grad=False):
        """I[t, s] for t in [t0, t1), s <= t1 - 1; -inf above the diagonal."""
        torch, s = self.torch, self.s
        c = 1.0 / math.sqrt(s["HI"] * s["dI"])
        dots = torch.einsum("bhd,sd->bhs", qI[t0:t1], kI[:t1])          # [B, H_I, t1]
        I = c * torch.einsum("bh,bhs->bs", w[t0:t1], torch.relu(dots))  # [B, t1]
        rows = torch.arange(t0, t1, device=self.dev)[:, None]
        cols = torch.arange(t1, device=self.dev)[None, :]
        return I.float().masked_fill(cols > rows, float("-inf"))

    def run_length(self, L):
        torch, s, a = self.torch, self.s, self.args
        H, dqk, dv, dc, dr, HI, dI = s["H"], s["dqk"], s["dv"], s["dc"], s["dr"], s["HI"], s["dI"]
        k = min(s["topk"], L)
        B = self.rows(4 * L * max(H, HI) * 3)          # scores / probabilities [B, heads, L], fp32, x3 live
        Bkl = self.rows(4 * L * (H + 3 * HI) * 3)      # dense KL: MLA probabilities + indexer dots under autograd
        Bs = self.rows(4 * k * (dc + dr + 3 * H) * 3)  # sparse: gathered [B, k, d_c + d_r] and [B, H, k]
        out = {}
        qI, kI, w = self.rand(L, HI, dI, scale=0.5), self.rand(L, dI, scale=0.5), self.rand(L, HI)
        idx = torch.empty(L, k, dtype=torch.int64, device=self.dev)
        isc = torch.empty(L, k, dtype=torch.float32, device=self.dev)

        def topk():
            for t0 in range(0, L, B):
                t1 = min(L, t0 + B)
                sc = self.scores_block(qI, kI, w, t0, t1)
                kk = min(k, t1)
                v, i = torch.topk(sc, kk, dim=1)
                i = i.masked_fill(torch.isinf(v), -1)
                idx[t0:t1, :kk], isc[t0:t1, :kk] = i, v
                if kk < k:
                    idx[t0:t1, kk:], isc[t0:t1, kk:] = -1, float("-inf")
        out["indexer_topk"] = self.timed("indexer_topk", L, topk)
        if out["indexer_topk"]["status"] != "ok":
            topk()

        tau = 1.0 / math.sqrt(dqk)
        q, kk_, v = self.rand(L, H, dqk), self.rand(L, H, dqk), self.rand(L, H, dv)
        dout = self.rand(L, H, dv)

        def dense_block(qb, t0, t1, kf, vf):
            sc = torch.einsum("bhd,shd->hbs", qb, kf[:t1]).float() * tau
            rows = torch.arange(t0, t1, device=self.dev)[:, None]
            sc = sc.masked_fill(torch.arange(t1, device=self.dev)[None, :] > rows, float("-inf"))
            return torch.einsum("hbs,shd->bhd", torch.softmax(sc, -1).to(self.dtype), vf[:t1])

        def dense_fwd():
            with torch.no_grad():
                for t0 in range(0, L, B):
                    dense_block(q[t0:t0 + B], t0, min(L, t0 + B), kk_, v)

        def dense_bwd():
            kg, vg = kk_.detach().requires_grad_(), v.detach().requires_grad_()
            for t0 in range(0, L, B):
                qb = q[t0:t0 + B].detach().requires_grad_()
                o = dense_block(qb, t0, min(L, t0 + B), kg, vg)
                o.backward(dout[t0:t0 + B])

        def kl_dense():
            c = 1.0 / math.sqrt(HI * dI)
            qg, kg, wg = qI.detach().requires_grad_(), kI.detach().requires_grad_(), w.detach().requires_grad_()
            for t0 in range(0, L, Bkl):
                t1 = min(L, t0 + Bkl)
                with torch.no_grad():
                    sc = torch.einsum("bhd,shd->hbs", q[t0:t1], kk_[:t1]).float() * tau
                    rows = torch.arange(t0, t1, device=self.dev)[:, None]
                    sc = sc.masked_fill(torch.arange(t1, device=self.dev)[None, :] > rows, float("-inf"))
                    p = torch.softmax(sc, -1).mean(0)                          # [B, t1]
                dots = torch.einsum("bhd,sd->bhs", qg[t0:t1], kg[:t1])
                I = c * torch.einsum("bh,bhs->bs", wg[t0:t1], torch.relu(dots)).float()
                I = I.masked_fill(torch.arange(t1, device=self.dev)[None, :] > rows, float("-inf"))
                logpi = torch.log_softmax(I, -1)
                kl = torch.where(p > 0, p * (torch.log(p.clamp_min(1e-30)) - logpi), torch.zeros_like(p)).sum()
                kl.backward()

        for name, fn in (("dense_fwd", dense_fwd), ("dense_bwd", dense_bwd), ("kl_dense", kl_dense)):
            out[name] = self.timed(name, L, fn)
        del q, kk_, v, dout
        if a.device == "cuda":
            torch.cuda.empty_cache()

        dm = dc + dr
        qs, kv, douts = self.rand(L, H, dm), self.rand(L, dm), self.rand(L, H, dc)

        def sparse_block(qb, ib, kvf):
            valid = ib >= 0
            g = kvf[ib.clamp_min(0)]                                            # [B, k, dm] gathered
            sc = torch.einsum("bhd,bkd->bhk", qb, g).float() * tau
            sc = sc.masked_fill(~valid[:, None, :], float("-inf"))
            return torch.einsum("bhk,bkd->bhd", torch.softmax(sc, -1).to(self.dtype), g[:, :, :dc])

        def sparse_fwd():
            with torch.no_grad():
                for t0 in range(0, L, Bs):
                    sparse_block(qs[t0:t0 + Bs], idx[t0:t0 + Bs], kv)

        def sparse_bwd():
            kvg = kv.detach().requires_grad_()
            for t0 in range(0, L, Bs):
                qb = qs[t0:t0 + Bs].detach().requires_grad_()
                sparse_block(qb, idx[t0:t0 + Bs], kvg).backward(douts[t0:t0 + Bs])

        def kl_sparse():
            c = 1.0 / math.sqrt(HI * dI)
            qg, kg, wg = qI.detach().requires_grad_(), kI.detach().requires_grad_(), w.detach().requires_grad_()
            for t0 in range(0, L, Bs):
                t1 = min(L, t0 + Bs)
                ib = idx[t0:t1]
                valid = ib >= 0
                with torch.no_grad():
                    g = kv[ib.clamp_min(0)]
                    sc = torch.einsum("bhd,bkd->bhk", qs[t0:t1], g).float() * tau
                    p = torch.softmax(sc.masked_fill(~valid[:, None, :], float("-inf")), -1).mean(1)
                dots = torch.einsum("bhd,bkd->bhk", qg[t0:t1], kg[ib.clamp_min(0)])
                I = c * torch.einsum("bh,bhk->bk", wg[t0:t1], torch.relu(dots)).float()
                logpi = torch.log_softmax(I.masked_fill(~valid, float("-inf")), -1)
                kl = torch.where(p > 0, p * (torch.log(p.clamp_min(1e-30)) - logpi), torch.zeros_like(p)).sum()
                kl.backward()

        for name, fn in (("sparse_fwd", sparse_fwd), ("sparse_bwd", sparse_bwd), ("kl_sparse", kl_sparse)):
            try:
                out[name] = self.timed(name, L, fn)
            except torch.cuda.OutOfMemoryError as e:
                out[name] = {"status": "skipped", "ms": 0.0, "note": "out of device memory: %s" % str(e).split(".")[0]}
                torch.cuda.empty_cache()
        return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ratio", nargs=2, metavar=("DSA_JSONL", "TORCH_JSONL"), help="print the comparison table and exit")
    ap.add_argument("--seq-len", default="8192,32768,131072", help="comma-separated lengths (default 8K, 32K, 128K)")
    ap.add_argument("--reps", type=int, default=3, help="timed runs per op and length (default 3)")
    ap.add_argument("--budget", type=float, default=120, help="seconds for the whole run (default 120)")
    ap.add_argument("--config", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs",
                                                     "deepseek-v3.2.json"), help="the shapes (default the V3.2 config)")
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="storage (default fp32, TF32 off)")
    ap.add_argument("--chunk-gib", type=float, default=2.0,
                    help="query blocks sized so that one block's temporaries take about this many GiB (default 2)")
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                    help="cuda (default); cpu runs the same code for a smoke test of the script")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", metavar="FILE", help="also write the JSON lines to FILE")
    a = ap.parse_args()
    if a.ratio:
        ratio(*a.ratio)
        return 0
    import torch
    if a.device == "cuda" and not torch.cuda.is_available():
        print("bench_gpu_torch.py: no CUDA device visible to PyTorch (--device cpu runs the same code on the CPU)",
              file=sys.stderr)
        return 1
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    s = shapes(a.config)
    b = Bench(torch, a, s)
    name = torch.cuda.get_device_name(0) if a.device == "cuda" else "CPU"
    print("bench_gpu_torch.py: %s, torch %s, %s storage" % (name, torch.__version__, a.dtype), file=sys.stderr)
    lines = []
    for L in (int(x) for x in a.seq_len.split(",")):
        res = b.run_length(L)
        for op in OPS:
            r = res.get(op, {"status": "skipped", "ms": 0.0, "note": "not run"})
            lines.append(json.dumps({"bench": "gpu", "impl": "torch", "seq_len": L, "op": op, "status": r["status"],
                                     "ms": round(r["ms"], 4), "dtype": a.dtype, "note": r["note"]}))
            print(lines[-1], flush=True)
    if a.json:
        tmp = a.json + ".tmp"
        with open(tmp, "w") as f:
            f.write("\n".join(lines) + "\n")
        os.replace(tmp, a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
