/* attention.cu: causal attention of the CUDA backend, forward and backward (DSA-SPEC §4.1
 * MHA form, §8 tiling; DESIGN.md memory rule), the twin of kernels/cpu/attention.c with the
 * contract of kernels/backend.h attention_*.
 *
 * Shapes: q, k [N, H, qk_dim], v, out [N, H, v_dim] (token n = b·L + t), lse [batch, H, L]
 * natural log. Per (b, h, t), with a_s = τ q_t·k_s for s ≤ t:
 *
 *     lse_t = log Σ_s exp(a_s),   P_s = exp(a_s − lse_t),   out_t = Σ_s P_s v_s
 *     D_t = dout_t·out_t,   dS_s = τ P_s (dout_t·v_s − D_t)                 (FlashAttention-2)
 *     dq_t = Σ_{s≤t} dS_{t,s} k_s,   dk_s = Σ_{t≥s} dS_{t,s} q_t,   dv_s = Σ_{t≥s} P_{t,s} dout_t
 *
 * Simple kernels first (issue 15: speed after the GPU check): one warp per row, no tensor
 * cores, no shared tiles beyond 32 probabilities per warp.
 *  - forward: one warp per query row walks its key tiles of TILE = 32 keys 0…t in order;
 *    each score is a warp dot product (lane-strided partial FMA chains, then a butterfly
 *    sum, whose result is the same bits in every lane), and the tile's online-softmax step
 *    is that of kernels/rules/softmax.h as the CPU applies it per tile: scores in log2 units
 *    (q pre-scaled by τ·log2 e), m' = max(m, s_j), corr = 2^(m − m'), l = l·corr + Σ P_j,
 *    out = out·corr + (Σ_j P_j v_j as one FMA chain in key order), at the end out·(1/l) and
 *    lse = dsa_softmax_lse(m, l). The output row is accumulated in place in `out`, as on
 *    the CPU: nothing of size L×L, no buffer beyond the outputs.
 *  - backward, three kernels: D_t per row into the caller's scratch ([batch, H, L], the
 *    CPU's layout); dk, dv with one warp per key row s walking the query tiles s…L−1 in
 *    order; dq with one warp per query row walking the key tiles 0…t in order. Both recompute
 *    P = 2^(a·log2 e − lse·log2 e) and dS from the saved lse. Every gradient element is
 *    written by one lane of one warp, summed in an order fixed by the shape alone: no
 *    atomics, the same bits run to run.
 * The scores' summation order (lane chains + butterfly) differs from the CPU's (one FMA
 * chain per dot), so results agree to fp32 rounding (~1e-6 relative), not bit for bit.
 */
#include <cmath>

#include "kernels/cuda/common.cuh"
extern "C" {
#include "kernels/cuda/cuda_ops.h"
}
#include "kernels/rules/softmax.h"

namespace {

constexpr int WARPS = 8;  /* warps (rows) per block */
constexpr int TILE = 32;  /* keys (forward, dq) or queries (dk, dv) per tile: one per lane */
constexpr unsigned FULL = 0xffffffffu;

/* The butterfly sum of one value per lane: every lane ends with the same bits (each step
 * adds the same two operands in both lanes of a pair, and IEEE addition commutes). */
__device__ __forceinline__ float warp_sum(float x) {
    for (int w = 16; w > 0; w >>= 1) x = dsa_rn_add(x, __shfl_xor_sync(FULL, x, w));
    return x;
}

/* The max over the warp by the rule's dsa_softmax_max, then lane 0's value everywhere (so
 * all lanes agree even where a NaN makes the rule order-dependent). */
__device__ __forceinline__ float warp_max(float x) {
    for (int w = 16; w > 0; w >>= 1) x = dsa_softmax_max(__shfl_xor_sync(FULL, x, w), x);
    return __shfl_sync(FULL, x, 0);
}

/* Σ_c (x_c·mul)·y_c over n values (mul = 1: a plain dot), all lanes get the result. */
__device__ __forceinline__ float warp_dot(const float *__restrict__ x, const float *__restrict__ y, int64_t n,
                                          float mul, int lane) {
    float s = 0.0f;
    for (int64_t c = lane; c < n; c += 32) s = __fmaf_rn(dsa_rn_mul(x[c], mul), y[c], s);
    return warp_sum(s);
}

/* Strides and base pointers of one (sequence, head): row t of q is q + t·ldq. */
struct Head {
    int64_t ldq, ldv, dq, dv;
    int64_t oq, ov; /* offsets of row 0 of this (b, h) in q/k and in v/out */
};

__device__ __forceinline__ Head head_of(int64_t bh, int64_t L, int64_t H, int64_t dq, int64_t dv) {
    const int64_t b = bh / H, h = bh % H, row0 = b * L * H + h;
    return Head{H * dq, H * dv, dq, dv, row0 * dq, row0 * dv};
}

/* The (b·H + h, row) of this warp: blocks enumerate (bh, block of WARPS rows), rows last. */
__device__ __forceinline__ bool warp_row(int64_t L, int64_t *bh, int64_t *row) {
    const int64_t blocks = (L + WARPS - 1) / WARPS;
    *bh = (int64_t)blockIdx.x / blocks;
    *row = ((int64_t)blockIdx.x % blocks) * WARPS + (threadIdx.x >> 5);
    return *row < L;
}

__global__ void __launch_bounds__(WARPS * 32)
    attention_forward_kernel(float *__restrict__ out, float *__restrict__ lse, const float *__restrict__ q,
                             const float *__restrict__ k, const float *__restrict__ v, int64_t L, int64_t H,
                             int64_t dq, int64_t dv, float qmul) {
    __shared__ float p_sh[WARPS][TILE];
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    int64_t bh, t;
    if (!warp_row(L, &bh, &t)) return; /* whole warps only: no block-wide barrier below */
    const Head hd = head_of(bh, L, H, dq, dv);
    const float *qrow = q + hd.oq + t * hd.ldq;
    float *orow = out + hd.ov + t * hd.ldv;
    float m = -INFINITY, l = 0.0f;
    for (int64_t s0 = 0; s0 <= t; s0 += TILE) {
        const int nk = (int)(t + 1 - s0 < TILE ? t + 1 - s0 : TILE);
        float mine = -INFINITY; /* lane j: the score of key s0 + j (log2 units) */
        for (int j = 0; j < nk; j++) {
            const float a = warp_dot(qrow, k + hd.oq + (s0 + j) * hd.ldq, dq, qmul, lane);
            if (lane == j) mine = a;
        }
        const float mx = warp_max(dsa_softmax_max(mine, m));
        const float corr = dsa_softmax_corr(m, mx); /* 0 on the first tile */
        const float p = lane < nk ? dsa_softmax_exp2(dsa_rn_sub(mine, mx)) : 0.0f;
        l = dsa_rn_add(dsa_rn_mul(l, corr), warp_sum(p));
        m = mx;
        p_sh[w][lane] = p;
        __syncwarp();
        for (int64_t c = lane; c < dv; c += 32) {
            float chain = 0.0f; /* Σ_j P_j v_j[c], one FMA chain in key order */
            for (int j = 0; j < nk; j++) chain = __fmaf_rn(p_sh[w][j], v[hd.ov + (s0 + j) * hd.ldv + c], chain);
            orow[c] = s0 == 0 ? chain : dsa_rn_add(dsa_rn_mul(orow[c], corr), chain);
        }
        __syncwarp();
    }
    const float inv = dsa_softmax_inv(l);
    for (int64_t c = lane; c < dv; c += 32) orow[c] = dsa_rn_mul(orow[c], inv);
    if (lane == 0) lse[bh * L + t] = dsa_softmax_lse(m, l);
}

/* D[bh·L + t] = dout_t · out_t. */
__global__ void __launch_bounds__(WARPS * 32)
    attention_rowdot_kernel(float *__restrict__ D, const float *__restrict__ dout, const float *__restrict__ out,
                            int64_t L, int64_t H, int64_t dq, int64_t dv) {
    const int lane = threadIdx.x & 31;
    int64_t bh, t;
    if (!warp_row(L, &bh, &t)) return;
    const Head hd = head_of(bh, L, H, dq, dv);
    const float d = warp_dot(dout + hd.ov + t * hd.ldv, out + hd.ov + t * hd.ldv, dv, 1.0f, lane);
    if (lane == 0) D[bh * L + t] = d;
}

/* P and dS of (query t, key s) in every lane: P = 2^(τ log2 e · q·k − lse·log2 e),
 * dS = τ P (dout_t·v_s − D_t) (the CPU's order of operations). */
struct Grad {
    float p, ds;
};

__device__ __forceinline__ Grad pair_grad(const Head &hd, const float *q, const float *k, const float *v,
                                          const float *dout, float lse2_t, float D_t, int64_t t, int64_t s,
                                          float qmul, float scale, int lane) {
    const float a = warp_dot(q + hd.oq + t * hd.ldq, k + hd.oq + s * hd.ldq, hd.dq, qmul, lane);
    const float dp = warp_dot(dout + hd.ov + t * hd.ldv, v + hd.ov + s * hd.ldv, hd.dv, 1.0f, lane);
    const float p = dsa_softmax_exp2(dsa_rn_sub(a, lse2_t));
    return Grad{p, dsa_rn_mul(dsa_rn_mul(p, dsa_rn_sub(dp, D_t)), scale)};
}

/* dk_s, dv_s of one key row per warp: query tiles s, s + 32, … ≤ L − 1 in order; per tile
 * and element one FMA chain over the tile's queries, then added to the row. */
__global__ void __launch_bounds__(WARPS * 32)
    attention_dkdv_kernel(float *__restrict__ dk, float *__restrict__ dv, const float *__restrict__ dout,
                          const float *__restrict__ lse, const float *__restrict__ D, const float *__restrict__ q,
                          const float *__restrict__ k, const float *__restrict__ v, int64_t L, int64_t H,
                          int64_t dqd, int64_t dvd, float qmul, float scale) {
    __shared__ float p_sh[WARPS][TILE], ds_sh[WARPS][TILE];
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    int64_t bh, s;
    if (!warp_row(L, &bh, &s)) return;
    const Head hd = head_of(bh, L, H, dqd, dvd);
    float *dkrow = dk + hd.oq + s * hd.ldq, *dvrow = dv + hd.ov + s * hd.ldv;
    for (int64_t t0 = s; t0 < L; t0 += TILE) {
        const int nq = (int)(L - t0 < TILE ? L - t0 : TILE);
        float mp = 0.0f, mds = 0.0f;
        for (int j = 0; j < nq; j++) {
            const int64_t t = t0 + j;
            const Grad g = pair_grad(hd, q, k, v, dout, dsa_rn_mul(lse[bh * L + t], DSA_SOFTMAX_LOG2E),
                                     D[bh * L + t], t, s, qmul, scale, lane);
            if (lane == j) mp = g.p, mds = g.ds;
        }
        p_sh[w][lane] = mp, ds_sh[w][lane] = mds;
        __syncwarp();
        for (int64_t c = lane; c < dvd; c += 32) { /* dv_s += Σ_t P_t dout_t */
            float chain = 0.0f;
            for (int j = 0; j < nq; j++) chain = __fmaf_rn(p_sh[w][j], dout[hd.ov + (t0 + j) * hd.ldv + c], chain);
            dvrow[c] = t0 == s ? chain : dsa_rn_add(dvrow[c], chain);
        }
        for (int64_t c = lane; c < dqd; c += 32) { /* dk_s += Σ_t dS_t q_t */
            float chain = 0.0f;
            for (int j = 0; j < nq; j++) chain = __fmaf_rn(ds_sh[w][j], q[hd.oq + (t0 + j) * hd.ldq + c], chain);
            dkrow[c] = t0 == s ? chain : dsa_rn_add(dkrow[c], chain);
        }
        __syncwarp();
    }
}

/* dq_t of one query row per warp: key tiles 0, 32, … ≤ t in order. */
__global__ void __launch_bounds__(WARPS * 32)
    attention_dq_kernel(float *__restrict__ dq, const float *__restrict__ dout, const float *__restrict__ lse,
                        const float *__restrict__ D, const float *__restrict__ q, const float *__restrict__ k,
                        const float *__restrict__ v, int64_t L, int64_t H, int64_t dqd, int64_t dvd, float qmul,
                        float scale) {
    __shared__ float ds_sh[WARPS][TILE];
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    int64_t bh, t;
    if (!warp_row(L, &bh, &t)) return;
    const Head hd = head_of(bh, L, H, dqd, dvd);
    const float lse2 = dsa_rn_mul(lse[bh * L + t], DSA_SOFTMAX_LOG2E), Dt = D[bh * L + t];
    float *dqrow = dq + hd.oq + t * hd.ldq;
    for (int64_t s0 = 0; s0 <= t; s0 += TILE) {
        const int nk = (int)(t + 1 - s0 < TILE ? t + 1 - s0 : TILE);
        float mds = 0.0f;
        for (int j = 0; j < nk; j++) {
            const Grad g = pair_grad(hd, q, k, v, dout, lse2, Dt, t, s0 + j, qmul, scale, lane);
            if (lane == j) mds = g.ds;
        }
        ds_sh[w][lane] = mds;
        __syncwarp();
        for (int64_t c = lane; c < dqd; c += 32) { /* dq_t += Σ_s dS_s k_s */
            float chain = 0.0f;
            for (int j = 0; j < nk; j++) chain = __fmaf_rn(ds_sh[w][j], k[hd.oq + (s0 + j) * hd.ldq + c], chain);
            dqrow[c] = s0 == 0 ? chain : dsa_rn_add(dqrow[c], chain);
        }
        __syncwarp();
    }
}

/* Blocks of WARPS rows for every (b, h); DSA_ASSERT that the grid fits. */
unsigned row_blocks(const DsaAttnShape *s) {
    const int64_t blocks = s->batch * s->heads * ((s->seq_len + WARPS - 1) / WARPS);
    DSA_ASSERT(blocks <= 2147483647);
    return (unsigned)blocks;
}

void check_shape(const DsaAttnShape *s) {
    DSA_ASSERT(s->batch >= 0 && s->seq_len >= 0 && s->heads >= 0);
    DSA_ASSERT(s->qk_dim >= 1 && s->v_dim >= 1);
}

} // namespace

extern "C" void dsa_cuda_attention_forward(float *out, float *lse, const float *q, const float *k, const float *v,
                                           const DsaAttnShape *shape) {
    check_shape(shape);
    if (shape->batch * shape->heads * shape->seq_len == 0) return;
    attention_forward_kernel<<<row_blocks(shape), WARPS * 32, 0, dsa_cuda_stream()>>>(
        out, lse, q, k, v, shape->seq_len, shape->heads, shape->qk_dim, shape->v_dim,
        dsa_softmax_log2_scale(shape->scale));
    DSA_CUDA_LAUNCHED(attention_forward_kernel);
}

extern "C" int64_t dsa_cuda_attention_scratch_floats(const DsaAttnShape *shape) {
    return shape->batch * shape->heads * shape->seq_len;
}

extern "C" void dsa_cuda_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *out,
                                            const float *lse, const float *q, const float *k, const float *v,
                                            const DsaAttnShape *shape, float *scratch) {
    check_shape(shape);
    if (shape->batch * shape->heads * shape->seq_len == 0) return;
    DSA_ASSERT(scratch != NULL);
    const int64_t L = shape->seq_len, H = shape->heads, dqd = shape->qk_dim, dvd = shape->v_dim;
    const float qmul = dsa_softmax_log2_scale(shape->scale);
    const unsigned blocks = row_blocks(shape);
    cudaStream_t st = dsa_cuda_stream();
    float *D = scratch; /* [batch, H, L] */
    attention_rowdot_kernel<<<blocks, WARPS * 32, 0, st>>>(D, dout, out, L, H, dqd, dvd);
    DSA_CUDA_LAUNCHED(attention_rowdot_kernel);
    attention_dkdv_kernel<<<blocks, WARPS * 32, 0, st>>>(dk, dv, dout, lse, D, q, k, v, L, H, dqd, dvd, qmul,
                                                         shape->scale);
    DSA_CUDA_LAUNCHED(attention_dkdv_kernel);
    attention_dq_kernel<<<blocks, WARPS * 32, 0, st>>>(dq, dout, lse, D, q, k, v, L, H, dqd, dvd, qmul,
                                                       shape->scale);
    DSA_CUDA_LAUNCHED(attention_dq_kernel);
}
