/* sparse_attention.cu: sparse MLA attention of the CUDA backend in the absorbed (MQA) form
 * over top-k key indices, forward and backward (DSA-SPEC §4.2, §8.2 passes F2 and B), the
 * twin of kernels/cpu/sparse_attention.c with the contract of kernels/backend.h
 * sparse_attention_*.
 *
 * Shapes: q [N, H, Dq], kv [N, Dq] (one key row K_s per token, shared by all heads, whose
 * first Dv entries are its value), idx [N, topk] int32 (positions within the row's own
 * sequence, −1 = no key), out [N, H, Dv], lse [batch, H, L] natural log. Per (n, h), over
 * the valid entries S_n of idx[n]:
 *
 *     a_s = τ q_{n,h}·K_s,   lse = log Σ exp(a_s),   P_s = exp(a_s − lse),   out = Σ P_s K_s[:Dv]
 *     D = dout·out,   dS_s = τ P_s (dout·K_s[:Dv] − D)
 *     dq_{n,h} = Σ_s dS_s K_s,   dkv_s = Σ_{(n,h): s∈S_n} dS q_{n,h} + [P dout_{n,h} on :Dv]
 *
 * Simple kernels first (issue 15: speed after the GPU check), one warp per row:
 *  - forward: one warp per (n, h); the blocks of WARPS warps are heads of one row, so a
 *    gathered key row is read once from memory for them. The slots of idx[n] are taken in
 *    windows of 32 (one per lane); the valid keys of a window are compacted in slot order
 *    (ballot + popcount) and form one chunk of the online softmax of kernels/rules/softmax.h,
 *    applied as the CPU applies it per chunk: s = (q·K)·τ log2 e, m' = max(m, s_j),
 *    corr = 2^(m − m'), l = l·corr + Σ P_j, out = out·corr + (Σ_j P_j K_j[:Dv] as one FMA
 *    chain in slot order), then out·(1/l), lse = dsa_softmax_lse. A window without valid
 *    keys is skipped, so a row's first chunk always holds a valid score; a row without any
 *    has out = 0, lse = −inf.
 *  - backward: D per (n, h) into the scratch; dq per (n, h) over the same chunks, P and dS
 *    recomputed from lse; dkv by a deterministic segmented reduction over a key-major
 *    transpose of idx built in the scratch: a stable radix sort (CUB, DeviceRadixSort, with
 *    the entry's flat index n·topk + slot as the value) of the entries by global key b·L + s
 *    (−1 entries get the key N and sort last), then per-key segment offsets; one warp per
 *    key walks its segment in ascending (row, slot) order, which is the CPU's order, and
 *    per row sums over the heads in groups of 32 one FMA chain Σ_h dS_h q_h then Σ_h P_h
 *    dout_h, added to the key's row, as the CPU's key pass does. No atomics anywhere: every
 *    gradient element is written by one lane in an order fixed by the data alone.
 * The dot products' order (lane chains + butterfly sum) differs from the CPU's, so results
 * agree to fp32 rounding, not bit for bit.
 * NOTE: the transpose takes 16 bytes per index entry (keys and values, double-buffered, as
 * the radix sort needs) against the CPU's 4: 4 GiB at 128K tokens × top-2048. A blocked
 * counting sort as on the CPU can replace it when memory is tight; sparse_attention_scratch
 * _bytes reports what this one needs, so the sizing pass sees it.
 */
#include <cassert>
#include <cmath>

#include <cub/device/device_radix_sort.cuh>

#include "kernels/cuda/common.cuh"
extern "C" {
#include "kernels/cuda/cuda_ops.h"
}
#include "kernels/rules/softmax.h"

namespace {

constexpr int WARPS = 8;  /* warps per block */
constexpr int TILE = 32;  /* idx slots per window, heads per group: one per lane */
constexpr unsigned FULL = 0xffffffffu;

/* Butterfly sum: the same bits in every lane (IEEE addition commutes). */
__device__ __forceinline__ float warp_sum(float x) {
    for (int w = 16; w > 0; w >>= 1) x = dsa_rn_add(x, __shfl_xor_sync(FULL, x, w));
    return x;
}

/* The rule's running max over the warp, lane 0's value in every lane. */
__device__ __forceinline__ float warp_max(float x) {
    for (int w = 16; w > 0; w >>= 1) x = dsa_softmax_max(__shfl_xor_sync(FULL, x, w), x);
    return __shfl_sync(FULL, x, 0);
}

/* x·y over n values, in every lane. */
__device__ __forceinline__ float warp_dot(const float *__restrict__ x, const float *__restrict__ y, int64_t n,
                                          int lane) {
    float s = 0.0f;
    for (int64_t c = lane; c < n; c += 32) s = __fmaf_rn(x[c], y[c], s);
    return warp_sum(s);
}

struct Dims {
    int64_t L, H, Dq, Dv, K;
    float c2, tau; /* τ·log2 e, τ */
};

/* The valid keys of slots [i0, i0 + 32) of one idx row, compacted in slot order into
 * keys[0 .. count) (a per-warp array); returns count, the same in every lane. */
__device__ __forceinline__ int window_keys(int32_t *keys, const int32_t *__restrict__ row, int64_t i0,
                                           const Dims &d, int lane) {
    const int64_t slot = i0 + lane;
    const int32_t key = slot < d.K ? row[slot] : -1;
    assert(key < d.L); /* a position within the row's own sequence (caller error otherwise) */
    const bool valid = key >= 0;
    const unsigned mask = __ballot_sync(FULL, valid);
    __syncwarp(); /* the previous window's readers are done */
    if (valid) keys[__popc(mask & ((1u << lane) - 1u))] = key;
    __syncwarp();
    return __popc(mask);
}

/* P and dS of (row n, head h) for key row Kr, in every lane (the CPU's grad_tile order:
 * P = 2^((q·K)·τ log2 e − lse·log2 e), dS = P (dout·K[:Dv] − D) τ). */
struct Grad {
    float p, ds;
};

__device__ __forceinline__ Grad pair_grad(const float *qr, const float *gr, const float *Kr, float lse2, float Dn,
                                          const Dims &d, int lane) {
    const float a = warp_dot(qr, Kr, d.Dq, lane), dp = warp_dot(gr, Kr, d.Dv, lane);
    const float p = dsa_softmax_exp2(dsa_rn_sub(dsa_rn_mul(a, d.c2), lse2));
    return Grad{p, dsa_rn_mul(dsa_rn_mul(p, dsa_rn_sub(dp, Dn)), d.tau)};
}

/* This warp's (row n, head h): blocks enumerate (n, group of WARPS heads). */
__device__ __forceinline__ bool warp_head(const Dims &d, int64_t *n, int64_t *h) {
    const int64_t groups = (d.H + WARPS - 1) / WARPS;
    *n = (int64_t)blockIdx.x / groups;
    *h = ((int64_t)blockIdx.x % groups) * WARPS + (threadIdx.x >> 5);
    return *h < d.H;
}

__global__ void __launch_bounds__(WARPS * 32)
    sparse_forward_kernel(float *__restrict__ out, float *__restrict__ lse, const float *__restrict__ q,
                          const float *__restrict__ kv, const int32_t *__restrict__ idx, Dims d) {
    __shared__ float p_sh[WARPS][TILE];
    __shared__ int32_t key_sh[WARPS][TILE];
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    int64_t n, h;
    if (!warp_head(d, &n, &h)) return; /* whole warps only: no block-wide barrier below */
    const int64_t b = n / d.L, t = n % d.L;
    const float *qrow = q + (n * d.H + h) * d.Dq, *kvb = kv + b * d.L * d.Dq;
    float *orow = out + (n * d.H + h) * d.Dv;
    float m = -INFINITY, l = 0.0f;
    bool any = false;
    for (int64_t i0 = 0; i0 < d.K; i0 += TILE) {
        const int c = window_keys(key_sh[w], idx + n * d.K, i0, d, lane);
        if (c == 0) continue;
        float mine = -INFINITY; /* lane j: the score of the chunk's key j (log2 units) */
        for (int j = 0; j < c; j++) {
            const float a = dsa_rn_mul(warp_dot(qrow, kvb + key_sh[w][j] * d.Dq, d.Dq, lane), d.c2);
            if (lane == j) mine = a;
        }
        const float mx = warp_max(dsa_softmax_max(mine, m));
        const float corr = dsa_softmax_corr(m, mx); /* 0 on the first chunk */
        const float p = lane < c ? dsa_softmax_exp2(dsa_rn_sub(mine, mx)) : 0.0f;
        l = dsa_rn_add(dsa_rn_mul(l, corr), warp_sum(p));
        m = mx;
        p_sh[w][lane] = p;
        __syncwarp();
        for (int64_t x = lane; x < d.Dv; x += 32) {
            float chain = 0.0f; /* Σ_j P_j K_j[x], one FMA chain in slot order */
            for (int j = 0; j < c; j++) chain = __fmaf_rn(p_sh[w][j], kvb[key_sh[w][j] * d.Dq + x], chain);
            orow[x] = any ? dsa_rn_add(dsa_rn_mul(orow[x], corr), chain) : chain;
        }
        any = true;
    }
    float *lrow = lse + (b * d.H + h) * d.L + t;
    if (!any) { /* no valid key */
        for (int64_t x = lane; x < d.Dv; x += 32) orow[x] = 0.0f;
        if (lane == 0) *lrow = DSA_SOFTMAX_EMPTY_LSE;
        return;
    }
    const float inv = dsa_softmax_inv(l);
    for (int64_t x = lane; x < d.Dv; x += 32) orow[x] = dsa_rn_mul(orow[x], inv);
    if (lane == 0) *lrow = dsa_softmax_lse(m, l);
}

/* D[n·H + h] = dout_{n,h} · out_{n,h}, one warp per (n, h). */
__global__ void __launch_bounds__(WARPS * 32)
    sparse_rowdot_kernel(float *__restrict__ D, const float *__restrict__ dout, const float *__restrict__ out,
                         int64_t rows, int64_t Dv) {
    const int lane = threadIdx.x & 31;
    const int64_t r = (int64_t)blockIdx.x * WARPS + (threadIdx.x >> 5);
    if (r >= rows) return;
    const float s = warp_dot(dout + r * Dv, out + r * Dv, Dv, lane);
    if (lane == 0) D[r] = s;
}

/* dq_{n,h} = Σ_s dS_s K_s over the chunks of the forward, one warp per (n, h). */
__global__ void __launch_bounds__(WARPS * 32)
    sparse_dq_kernel(float *__restrict__ dq, const float *__restrict__ dout, const float *__restrict__ lse,
                     const float *__restrict__ D, const float *__restrict__ q, const float *__restrict__ kv,
                     const int32_t *__restrict__ idx, Dims d) {
    __shared__ float ds_sh[WARPS][TILE];
    __shared__ int32_t key_sh[WARPS][TILE];
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    int64_t n, h;
    if (!warp_head(d, &n, &h)) return;
    const int64_t b = n / d.L, t = n % d.L;
    const float *qrow = q + (n * d.H + h) * d.Dq, *grow = dout + (n * d.H + h) * d.Dv;
    const float *kvb = kv + b * d.L * d.Dq;
    const float lse2 = dsa_rn_mul(lse[(b * d.H + h) * d.L + t], DSA_SOFTMAX_LOG2E), Dn = D[n * d.H + h];
    float *dqrow = dq + (n * d.H + h) * d.Dq;
    bool any = false;
    for (int64_t i0 = 0; i0 < d.K; i0 += TILE) {
        const int c = window_keys(key_sh[w], idx + n * d.K, i0, d, lane);
        if (c == 0) continue;
        float mds = 0.0f;
        for (int j = 0; j < c; j++) {
            const Grad g = pair_grad(qrow, grow, kvb + key_sh[w][j] * d.Dq, lse2, Dn, d, lane);
            if (lane == j) mds = g.ds;
        }
        __syncwarp(); /* the previous chunk's readers of ds_sh are done */
        ds_sh[w][lane] = mds;
        __syncwarp();
        for (int64_t x = lane; x < d.Dq; x += 32) {
            float chain = 0.0f;
            for (int j = 0; j < c; j++) chain = __fmaf_rn(ds_sh[w][j], kvb[key_sh[w][j] * d.Dq + x], chain);
            dqrow[x] = dsa_rn_add(any ? dqrow[x] : 0.0f, chain);
        }
        any = true;
    }
    if (!any)
        for (int64_t x = lane; x < d.Dq; x += 32) dqrow[x] = 0.0f;
}

/* The radix sort's input: entry e = n·topk + slot gets the key b·L + idx[e] (its global key
 * row), or N for −1; its value is e. */
__global__ void sparse_sort_input_kernel(uint32_t *__restrict__ keys, uint32_t *__restrict__ vals,
                                         const int32_t *__restrict__ idx, int64_t E, int64_t N, Dims d) {
    const int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= E) return;
    const int32_t s = idx[e];
    assert(s < d.L);
    keys[e] = (uint32_t)(s >= 0 ? (e / d.K) / d.L * d.L + s : N);
    vals[e] = (uint32_t)e;
}

/* off[g] = the first position of the sorted keys holding a key ≥ g, for g ≤ N (so key g's
 * segment is [off[g], off[g + 1]) and off[N] counts the valid entries): thread p writes the
 * g in (keys[p − 1], keys[p]], with keys[−1] = −1 and keys[E] = N; each g once. */
__global__ void sparse_offsets_kernel(uint32_t *__restrict__ off, const uint32_t *__restrict__ keys, int64_t E,
                                      int64_t N) {
    const int64_t p = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (p > E) return;
    const int64_t prev = p > 0 ? (int64_t)keys[p - 1] : -1, cur = p < E ? (int64_t)keys[p] : N;
    for (int64_t g = prev + 1; g <= cur; g++) off[g] = (uint32_t)p;
}

/* dkv of one key row g = b·L + s per warp, from its segment of the sorted entries in
 * ascending (row, slot) order; per row and group of 32 heads one FMA chain per element:
 * Σ_h dS_h q_{n,h}[x], then (x < Dv) Σ_h P_h dout_{n,h}[x], added to the row. */
__global__ void __launch_bounds__(WARPS * 32)
    sparse_dkv_kernel(float *__restrict__ dkv, const uint32_t *__restrict__ off, const uint32_t *__restrict__ ent,
                      const float *__restrict__ dout, const float *__restrict__ lse, const float *__restrict__ D,
                      const float *__restrict__ q, const float *__restrict__ kv, int64_t N, Dims d) {
    __shared__ float p_sh[WARPS][TILE], ds_sh[WARPS][TILE];
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    const int64_t g = (int64_t)blockIdx.x * WARPS + w;
    if (g >= N) return;
    const int64_t b = g / d.L;
    const float *Kg = kv + g * d.Dq;
    float *drow = dkv + g * d.Dq;
    for (int64_t x = lane; x < d.Dq; x += 32) drow[x] = 0.0f;
    for (int64_t e = off[g]; e < (int64_t)off[g + 1]; e++) {
        const int64_t n = (int64_t)ent[e] / d.K, t = n % d.L;
        for (int64_t h0 = 0; h0 < d.H; h0 += TILE) {
            const int hg = (int)(d.H - h0 < TILE ? d.H - h0 : TILE);
            float mp = 0.0f, mds = 0.0f;
            for (int j = 0; j < hg; j++) {
                const int64_t nh = n * d.H + h0 + j;
                const float lse2 = dsa_rn_mul(lse[(b * d.H + h0 + j) * d.L + t], DSA_SOFTMAX_LOG2E);
                const Grad gr = pair_grad(q + nh * d.Dq, dout + nh * d.Dv, Kg, lse2, D[nh], d, lane);
                if (lane == j) mp = gr.p, mds = gr.ds;
            }
            __syncwarp(); /* the previous group's readers are done */
            p_sh[w][lane] = mp, ds_sh[w][lane] = mds;
            __syncwarp();
            const float *qg = q + (n * d.H + h0) * d.Dq, *gg = dout + (n * d.H + h0) * d.Dv;
            for (int64_t x = lane; x < d.Dq; x += 32) {
                float chain = 0.0f;
                for (int j = 0; j < hg; j++) chain = __fmaf_rn(ds_sh[w][j], qg[j * d.Dq + x], chain);
                if (x < d.Dv)
                    for (int j = 0; j < hg; j++) chain = __fmaf_rn(p_sh[w][j], gg[j * d.Dv + x], chain);
                drow[x] = dsa_rn_add(drow[x], chain);
            }
        }
    }
}

Dims dims_check(const DsaSparseAttnShape *s) {
    DSA_ASSERT(s->batch >= 0 && s->seq_len >= 0 && s->heads >= 0 && s->topk >= 0);
    DSA_ASSERT(s->qk_dim >= 1 && s->v_dim >= 1 && s->v_dim <= s->qk_dim);
    DSA_ASSERT(s->scale > 0.0f);
    const int64_t N = s->batch * s->seq_len;
    DSA_ASSERT(N < 0xffffffffLL && N * s->topk < 0xffffffffLL); /* uint32 keys, entries and offsets */
    return Dims{s->seq_len, s->heads, s->qk_dim, s->v_dim, s->topk, dsa_softmax_log2_scale(s->scale), s->scale};
}

/* Scratch layout (offsets from the base, each region 256-byte aligned): D [N·H] floats,
 * off [N + 1], the sort's keys and values twice each [E = N·topk] (uint32), then CUB's
 * temporary storage. */
struct Layout {
    size_t D, off, keys0, keys1, vals0, vals1, temp, temp_bytes, total;
    int end_bit; /* the keys 0 … N need this many bits */
};

size_t align256(size_t x) { return (x + 255) / 256 * 256; }

Layout layout_of(const DsaSparseAttnShape *s) {
    const int64_t N = s->batch * s->seq_len, E = N * s->topk;
    Layout y{};
    y.end_bit = 1;
    while (y.end_bit < 32 && ((int64_t)1 << y.end_bit) <= N) y.end_bit++;
    size_t at = 0;
    y.D = at, at += align256(sizeof(float) * (size_t)(N * s->heads));
    y.off = at, at += align256(sizeof(uint32_t) * (size_t)(N + 1));
    y.keys0 = at, at += align256(sizeof(uint32_t) * (size_t)E);
    y.keys1 = at, at += align256(sizeof(uint32_t) * (size_t)E);
    y.vals0 = at, at += align256(sizeof(uint32_t) * (size_t)E);
    y.vals1 = at, at += align256(sizeof(uint32_t) * (size_t)E);
    y.temp = at;
    if (E > 0) { /* CUB's size query (no device work) */
        cub::DoubleBuffer<uint32_t> k(nullptr, nullptr), v(nullptr, nullptr);
        DSA_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, y.temp_bytes, k, v, E, 0, y.end_bit));
    }
    y.total = at + y.temp_bytes;
    return y;
}

unsigned head_blocks(const Dims &d, int64_t N) {
    const int64_t blocks = N * ((d.H + WARPS - 1) / WARPS);
    DSA_ASSERT(blocks <= 2147483647);
    return (unsigned)blocks;
}

} // namespace

extern "C" void dsa_cuda_sparse_attention_forward(float *out, float *lse, const float *q, const float *kv,
                                                  const int32_t *idx, const DsaSparseAttnShape *shape) {
    const Dims d = dims_check(shape);
    const int64_t N = shape->batch * shape->seq_len;
    if (N * d.H == 0) return;
    sparse_forward_kernel<<<head_blocks(d, N), WARPS * 32, 0, dsa_cuda_stream()>>>(out, lse, q, kv, idx, d);
    DSA_CUDA_LAUNCHED(sparse_forward_kernel);
}

extern "C" int64_t dsa_cuda_sparse_attention_scratch_bytes(const DsaSparseAttnShape *shape) {
    return (int64_t)layout_of(shape).total;
}

extern "C" void dsa_cuda_sparse_attention_backward(float *dq, float *dkv, const float *dout, const float *out,
                                                   const float *lse, const float *q, const float *kv,
                                                   const int32_t *idx, const DsaSparseAttnShape *shape,
                                                   void *scratch) {
    const Dims d = dims_check(shape);
    const int64_t N = shape->batch * shape->seq_len, E = N * d.K;
    if (N == 0) return;
    DSA_ASSERT(scratch != NULL && (uintptr_t)scratch % 16 == 0);
    const Layout y = layout_of(shape);
    char *base = static_cast<char *>(scratch);
    float *D = reinterpret_cast<float *>(base + y.D);
    uint32_t *off = reinterpret_cast<uint32_t *>(base + y.off);
    cudaStream_t st = dsa_cuda_stream();
    if (d.H > 0) {
        sparse_rowdot_kernel<<<dsa_cuda_blocks(N * d.H, WARPS), WARPS * 32, 0, st>>>(D, dout, out, N * d.H, d.Dv);
        DSA_CUDA_LAUNCHED(sparse_rowdot_kernel);
        sparse_dq_kernel<<<head_blocks(d, N), WARPS * 32, 0, st>>>(dq, dout, lse, D, q, kv, idx, d);
        DSA_CUDA_LAUNCHED(sparse_dq_kernel);
    }
    /* the key-major transpose: stable sort of the entries by key, then segment offsets */
    cub::DoubleBuffer<uint32_t> keys(reinterpret_cast<uint32_t *>(base + y.keys0),
                                     reinterpret_cast<uint32_t *>(base + y.keys1));
    cub::DoubleBuffer<uint32_t> vals(reinterpret_cast<uint32_t *>(base + y.vals0),
                                     reinterpret_cast<uint32_t *>(base + y.vals1));
    if (E > 0) {
        sparse_sort_input_kernel<<<dsa_cuda_blocks(E, 256), 256, 0, st>>>(keys.Current(), vals.Current(), idx, E, N,
                                                                          d);
        DSA_CUDA_LAUNCHED(sparse_sort_input_kernel);
        size_t temp_bytes = y.temp_bytes;
        DSA_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(base + y.temp, temp_bytes, keys, vals, E, 0, y.end_bit, st));
    }
    sparse_offsets_kernel<<<dsa_cuda_blocks(E + 1, 256), 256, 0, st>>>(off, keys.Current(), E, N);
    DSA_CUDA_LAUNCHED(sparse_offsets_kernel);
    sparse_dkv_kernel<<<dsa_cuda_blocks(N, WARPS), WARPS * 32, 0, st>>>(dkv, off, vals.Current(), dout, lse, D, q,
                                                                        kv, N, d);
    DSA_CUDA_LAUNCHED(sparse_dkv_kernel);
}
