/* indexer_kl.cu: the stage-1 indexer loss on the device (DSA-SPEC §6.1, §6.2, §7, §8.1):
 * dsa_cuda_indexer_kl_dense, the DsaIndexerOps.kl_dense entry of the CUDA backend, with the
 * contract of the CPU's dsa_indexer_kl_dense (indexer/indexer.h) on device memory.
 *
 * Per query row t over its causal keys s ≤ t (no L × L buffer; every pass recomputes its
 * tiles from q̂, k̂, w, the target's q, k and its saved lse, DESIGN.md "Memory rule"):
 *   P1  kld_dense_lse   one block per row: I_t,s tile by tile (kernels/rules/index_score.h),
 *                       lseI_t by the CPU's online update per key tile of 128, in key order;
 *                       the row's top-k threshold (last selected key) and |S_t|.
 *   P2  kld_dense_rows  one block per row, key tiles of 128: the MLA logits of every head and
 *                       the indexer's head dots; log p (rules/kl.h), p and π (rules/exp.h),
 *                       G = grad_scale (π − p); the row's KL and captured mass per tile;
 *                       ∂w = c Σ G ReLU(u), E = c w G [u > 0], ∂q̂ += E · k̂ per tile.
 *   P3  kld_dense_keys  one block per key, query tiles of 16 from the key's own: the same
 *                       G and E recomputed, ∂k̂ += Σ_(t,j) E q̂ per tile (key-major: every
 *                       output has one writer, no atomics, the same bits on every run).
 * The row sums (KL, mass, |S_t|) are downloaded and added on the host in row order in
 * double, as the CPU adds them.
 *
 * Bits against the CPU: scores, MLA dots (fused multiply-adds in index order, as
 * dsa_idx_dots), p, π, G, E and the per-tile sums of ∂q̂, ∂k̂, KL and mass are formed in the
 * CPU's order with the rules' operations, and ln H comes from the host's logf. They differ
 * where libraries do:
 *   - expf and logf of P1 (lseI) and logf(se) of log p (dsa_kl_log_target) are CUDA's
 *     (expf ≤ 2 ulp, logf ≤ 1 ulp, CUDA C Programming Guide) where the CPU's are glibc's
 *     (< 1 ulp): lseI and log p agree to a few ulp of their magnitude, so p, π and G agree to
 *     about 1e-6 relative, the loss sums to about 1e-6 relative and ∂q̂, ∂k̂, ∂w to about 1e-5
 *     of their largest entry (tests/test_cuda_kl.c states the tolerance per output);
 *   - ∂w's sum over a tile is sequential here and in SIMD lanes on the CPU (a few ulp).
 * The captured mass uses the CPU's threshold test (rules/topk_order.h) on identical scores,
 * so the same keys count, ties included.
 */
#include <cmath>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/indexer_kl.cuh"
#include "kernels/rules/exp.h"
#include "kernels/rules/hd.h"
#include "kernels/rules/index_score.h"
#include "kernels/rules/kl.h"
#include "kernels/rules/topk_order.h"

extern "C" {
#include "core/mem.h"
#include "kernels/cuda/cuda_ops.h"
}

/* Everything the three passes read and write (device pointers; shapes of one call). */
struct DenseArgs {
    const float *q, *k, *w;     /* indexer q̂ [N, H_I, d_I], k̂ [N, d_I], w [N, H_I] */
    const float *tq, *tk, *tlse; /* target q, k [N, H, dqk], lse [batch, H, L] */
    const int32_t *idx;         /* [N, K] or NULL (no captured mass) */
    const float *idx_scores;    /* [N, K] */
    int64_t L, HI, dI, H, dqk, K;
    float scale, tau, grad_scale, log_h;
    bool grads;
    float *lse_i, *thr_score;   /* [N] */
    int32_t *thr_index;         /* [N] */
    double *row_kl, *row_mass, *row_sel; /* [N] each */
    float *dq, *dk, *dw;
};

/* I from the head dots u[j · stride] of one pair: Σ_j w_j ReLU(u_j) in head order, times c
 * (rules/index_score.h, split so the dots can be computed by many threads). */
static __device__ float kld_score_of(const float *u, int64_t stride, const float *w, const DenseArgs &a) {
    float acc = 0.0f;
    for (int64_t j = 0; j < a.HI; j++) acc = dsa_index_head_add(acc, w[j], u[j * stride]);
    return dsa_rn_mul(a.scale, acc);
}

/* P1: lseI_t by the CPU's online log-sum-exp over key tiles of KLD_BK (indexer/kl.c P1),
 * the row's top-k threshold and |S_t|. One block of KLD_BK threads per row. */
static __global__ void kld_dense_lse(DenseArgs a) {
    __shared__ float sc[KLD_BK];
    const int64_t n = blockIdx.x, b = n / a.L, t = n % a.L;
    const float *q = a.q + n * a.HI * a.dI, *w = a.w + n * a.HI;
    float m = -INFINITY, l = 0.0f; /* thread 0's running max and sum */
    for (int64_t s0 = 0; s0 <= t; s0 += KLD_BK) {
        const int64_t nv = t - s0 + 1 < KLD_BK ? t - s0 + 1 : KLD_BK;
        const int64_t c = threadIdx.x;
        if (c < nv) sc[c] = dsa_index_score(q, w, a.k + (b * a.L + s0 + c) * a.dI, a.HI, a.dI, a.scale, t, s0 + c);
        __syncthreads();
        if (c == 0) { /* keys after t (the CPU's −∞ tile entries) change neither max nor sum */
            float mx = m;
            for (int64_t i = 0; i < nv; i++) mx = fmaxf(mx, sc[i]);
            float sum = dsa_rn_mul(l, expf(dsa_rn_sub(m, mx))); /* NOTE: CUDA expf, ≤ 2 ulp from glibc */
            if (m == -INFINITY) sum = 0.0f;
            for (int64_t i = 0; i < nv; i++) sum = dsa_rn_add(sum, expf(dsa_rn_sub(sc[i], mx)));
            m = mx, l = sum;
        }
        __syncthreads();
    }
    if (threadIdx.x != 0) return;
    a.lse_i[n] = dsa_rn_add(m, logf(l)); /* NOTE: CUDA logf, ≤ 1 ulp from glibc */
    if (!a.idx) return;
    const int32_t *row = a.idx + n * a.K;
    int64_t last = a.K - 1, sel = 0;
    while (last > 0 && row[last] < 0) last--;
    a.thr_score[n] = a.idx_scores[n * a.K + last];
    a.thr_index[n] = row[last];
    for (int64_t i = 0; i < a.K; i++) sel += row[i] >= 0;
    a.row_sel[n] = (double)sel;
}

/* P2: one block per row, key tiles of KLD_BK. Dynamic shared memory (kld_rows_shared):
 * term [BK] double, att [H][BK], u [H_I][BK] (head dots, then E), g [BK], p [BK], within [BK]. */
static size_t kld_rows_shared(int64_t H, int64_t HI) {
    return KLD_BK * sizeof(double) + (size_t)(H + HI + 2) * KLD_BK * sizeof(float) + KLD_BK * sizeof(int);
}

static __global__ void kld_dense_rows(DenseArgs a) {
    extern __shared__ double kld_shm[];
    double *term = kld_shm;
    float *att = (float *)(term + KLD_BK), *u = att + a.H * KLD_BK, *g = u + a.HI * KLD_BK, *p = g + KLD_BK;
    int *within = (int *)(p + KLD_BK);
    const int64_t n = blockIdx.x, b = n / a.L, t = n % a.L, tid = threadIdx.x, nt = blockDim.x;
    const float *q = a.q + n * a.HI * a.dI, *tq = a.tq + n * a.H * a.dqk, *wt = a.w + n * a.HI;
    const float *lse = a.tlse + b * a.H * a.L + t, lse_i = a.lse_i[n];
    const float thr_s = a.idx ? a.thr_score[n] : 0.0f;
    const int32_t thr_i = a.idx ? a.thr_index[n] : 0;
    double row_kl = 0, row_mass = 0; /* thread 0's */
    for (int64_t s0 = 0; s0 <= t; s0 += KLD_BK) {
        const int64_t nv = t - s0 + 1 < KLD_BK ? t - s0 + 1 : KLD_BK, key0 = b * a.L + s0;
        for (int64_t it = tid; it < a.H * nv; it += nt) {
            const int64_t h = it / nv, c = it % nv;
            att[h * KLD_BK + c] = dsa_index_head_dot(tq + h * a.dqk, a.tk + ((key0 + c) * a.H + h) * a.dqk, a.dqk);
        }
        for (int64_t it = tid; it < a.HI * nv; it += nt) {
            const int64_t j = it / nv, c = it % nv;
            u[j * KLD_BK + c] = dsa_index_head_dot(q + j * a.dI, a.k + (key0 + c) * a.dI, a.dI);
        }
        __syncthreads();
        for (int64_t c = tid; c < nv; c += nt) {
            const float score = kld_score_of(u + c, KLD_BK, wt, a);
            const float logp = kld_log_target(att + c, KLD_BK, lse, a.L, a.H, a.tau, a.log_h);
            const float pc = dsa_vexpf(logp), logpi = dsa_kl_log_pi(score, lse_i);
            g[c] = dsa_kl_grad(a.grad_scale, dsa_vexpf(logpi), pc);
            term[c] = dsa_kl_term(pc, logp, logpi); /* 0 where p = 0 */
            p[c] = pc;
            within[c] = a.idx && dsa_topk_within(score, s0 + c, thr_s, thr_i);
        }
        __syncthreads();
        if (tid == 0) { /* the tile's sums in key order, then into the row (indexer/kl.c) */
            double kl = 0, mass = 0;
            for (int64_t c = 0; c < nv; c++) {
                kl = dsa_rn_dadd(kl, term[c]);
                if (within[c]) mass = dsa_rn_dadd(mass, (double)p[c]);
            }
            row_kl = dsa_rn_dadd(row_kl, kl), row_mass = dsa_rn_dadd(row_mass, mass);
        }
        if (a.grads) {
            /* ∂w_t,j += c Σ_s G ReLU(u) (NOTE: sequential here, SIMD lanes on the CPU) */
            for (int64_t j = tid; j < a.HI; j += nt) {
                float acc = 0.0f;
                for (int64_t c = 0; c < nv; c++) {
                    const float uj = u[j * KLD_BK + c];
                    acc = dsa_rn_add(acc, dsa_rn_mul(g[c], uj > 0.0f ? uj : 0.0f));
                }
                a.dw[n * a.HI + j] = dsa_rn_add(a.dw[n * a.HI + j], dsa_rn_mul(a.scale, acc));
            }
            __syncthreads();
            /* E_t,j,s = (c w_t,j) G [u > 0], in place of u */
            for (int64_t it = tid; it < a.HI * nv; it += nt) {
                const int64_t j = it / nv, c = it % nv;
                const float cw = dsa_rn_mul(a.scale, wt[j]);
                u[j * KLD_BK + c] = dsa_rn_mul(dsa_rn_mul(cw, g[c]), (float)(u[j * KLD_BK + c] > 0.0f));
            }
            __syncthreads();
            /* ∂q̂_t,j += Σ_s E k̂_s over the tile: fused multiply-adds in key order, from 0 */
            for (int64_t it = tid; it < a.HI * a.dI; it += nt) {
                const int64_t j = it / a.dI, e = it % a.dI;
                float acc = 0.0f;
                for (int64_t c = 0; c < nv; c++) acc = dsa_fma_rule(u[j * KLD_BK + c], a.k[(key0 + c) * a.dI + e], acc);
                float *dq = a.dq + (n * a.HI + j) * a.dI + e;
                *dq = dsa_rn_add(*dq, acc);
            }
        }
        __syncthreads();
    }
    if (tid == 0) a.row_kl[n] = row_kl, a.row_mass[n] = row_mass;
}

/* P3: one block per key s; query tiles of KLD_BQ from the one holding s (earlier tiles add
 * exact zeros on the CPU). Dynamic shared memory (kld_keys_shared): att [BQ][H],
 * u [BQ][H_I] (head dots, then E), g [BQ]. */
static size_t kld_keys_shared(int64_t H, int64_t HI) { return (size_t)KLD_BQ * (H + HI + 1) * sizeof(float); }

static __global__ void kld_dense_keys(DenseArgs a) {
    extern __shared__ double kld_shm[];
    float *att = (float *)kld_shm, *u = att + KLD_BQ * a.H, *g = u + KLD_BQ * a.HI;
    const int64_t ns = blockIdx.x, b = ns / a.L, s = ns % a.L, tid = threadIdx.x, nt = blockDim.x;
    const float *ks = a.k + ns * a.dI;
    for (int64_t t0 = s / KLD_BQ * KLD_BQ; t0 < a.L; t0 += KLD_BQ) {
        const int64_t nq = a.L - t0 < KLD_BQ ? a.L - t0 : KLD_BQ, row0 = b * a.L + t0;
        for (int64_t it = tid; it < nq * a.H; it += nt) {
            const int64_t i = it / a.H, h = it % a.H;
            if (t0 + i >= s)
                att[it] = dsa_index_head_dot(a.tq + ((row0 + i) * a.H + h) * a.dqk, a.tk + (ns * a.H + h) * a.dqk, a.dqk);
        }
        for (int64_t it = tid; it < nq * a.HI; it += nt) {
            const int64_t i = it / a.HI, j = it % a.HI;
            if (t0 + i >= s) u[it] = dsa_index_head_dot(a.q + ((row0 + i) * a.HI + j) * a.dI, ks, a.dI);
        }
        __syncthreads();
        for (int64_t i = tid; i < nq; i += nt) {
            const int64_t t = t0 + i;
            if (t < s) {
                g[i] = 0.0f; /* key after the query: masked */
                continue;
            }
            const float score = kld_score_of(u + i * a.HI, 1, a.w + (row0 + i) * a.HI, a);
            const float logp = kld_log_target(att + i * a.H, 1, a.tlse + b * a.H * a.L + t, a.L, a.H, a.tau, a.log_h);
            g[i] = dsa_kl_grad(a.grad_scale, dsa_vexpf(dsa_kl_log_pi(score, a.lse_i[row0 + i])), dsa_vexpf(logp));
        }
        __syncthreads();
        for (int64_t it = tid; it < nq * a.HI; it += nt) {
            const int64_t i = it / a.HI, j = it % a.HI;
            const float cw = dsa_rn_mul(a.scale, a.w[(row0 + i) * a.HI + j]);
            u[it] = t0 + i < s ? 0.0f : dsa_rn_mul(dsa_rn_mul(cw, g[i]), (float)(u[it] > 0.0f));
        }
        __syncthreads();
        /* ∂k̂_s += Σ_(i,j) E q̂_t,j over the tile, (i, j) in row-major order, from 0 */
        for (int64_t e = tid; e < a.dI; e += nt) {
            float acc = 0.0f;
            for (int64_t r = 0; r < nq * a.HI; r++) acc = dsa_fma_rule(u[r], a.q[(row0 * a.HI + r) * a.dI + e], acc);
            a.dk[ns * a.dI + e] = dsa_rn_add(a.dk[ns * a.dI + e], acc);
        }
        __syncthreads();
    }
}

extern "C" DsaStatus dsa_cuda_indexer_kl_dense(DsaIndexerLoss *out, float *dq, float *dk, float *dw,
                                               const DsaIndexerActs *act, const DsaIndexerShape *s,
                                               const DsaDenseTarget *target, const int32_t *idx,
                                               const float *idx_scores, float grad_scale) {
    DSA_TRY(kld_check_shape(s, target->heads, target->qk_dim, "CUDA dense indexer KL"));
    const int64_t L = s->seq_len, N = s->batch * L, HI = s->heads, H = target->heads;
    if (N > 2147483647) DSA_FAIL(DSA_ERR_ARG, "CUDA dense indexer KL: %lld tokens, at most 2^31 - 1", (long long)N);
    if (idx && !idx_scores) DSA_FAIL(DSA_ERR_ARG, "CUDA dense indexer KL: idx given without its scores");
    const bool grads = grad_scale != 0.0f;
    if (grads && (!dq || !dk || !dw)) DSA_FAIL(DSA_ERR_ARG, "CUDA dense indexer KL: grad_scale %g without dq, dk, dw", (double)grad_scale);
    const size_t rows_shm = kld_rows_shared(H, HI), keys_shm = kld_keys_shared(H, HI);
    DSA_TRY(kld_shared_opt_in(kld_dense_rows, rows_shm, "CUDA dense indexer KL row pass"));
    DSA_TRY(kld_shared_opt_in(kld_dense_keys, keys_shm, "CUDA dense indexer KL key pass"));

    const size_t stat_bytes = (size_t)N * 3 * sizeof(double);
    const size_t ws_bytes = kld_align(stat_bytes) + 3 * kld_align((size_t)N * sizeof(float));
    KldCarve cv = {(char *)dsa_cuda_workspace(ws_bytes), 0};
    DenseArgs a;
    a.q = act->q, a.k = act->k, a.w = act->w;
    a.tq = target->q, a.tk = target->k, a.tlse = target->lse;
    a.idx = idx, a.idx_scores = idx_scores;
    a.L = L, a.HI = HI, a.dI = s->head_dim, a.H = H, a.dqk = target->qk_dim, a.K = s->topk;
    a.scale = s->scale, a.tau = target->scale, a.grad_scale = grad_scale;
    a.log_h = logf((float)H); /* the host's (glibc's) logf, as the CPU's ln H */
    a.grads = grads;
    a.row_kl = (double *)kld_take(&cv, stat_bytes);
    a.row_mass = a.row_kl + N, a.row_sel = a.row_mass + N;
    a.lse_i = (float *)kld_take(&cv, (size_t)N * sizeof(float));
    a.thr_score = (float *)kld_take(&cv, (size_t)N * sizeof(float));
    a.thr_index = (int32_t *)kld_take(&cv, (size_t)N * sizeof(int32_t));
    a.dq = dq, a.dk = dk, a.dw = dw;

    cudaStream_t st = dsa_cuda_stream();
    DSA_CUDA_CHECK(cudaMemsetAsync(a.row_kl, 0, stat_bytes, st));
    if (grads) {
        DSA_CUDA_CHECK(cudaMemsetAsync(dq, 0, (size_t)(N * HI * s->head_dim) * sizeof(float), st));
        DSA_CUDA_CHECK(cudaMemsetAsync(dk, 0, (size_t)(N * s->head_dim) * sizeof(float), st));
        DSA_CUDA_CHECK(cudaMemsetAsync(dw, 0, (size_t)(N * HI) * sizeof(float), st));
    }
    kld_dense_lse<<<(unsigned)N, KLD_BK, 0, st>>>(a);
    DSA_CUDA_LAUNCHED(kld_dense_lse);
    kld_dense_rows<<<(unsigned)N, KLD_THREADS, rows_shm, st>>>(a);
    DSA_CUDA_LAUNCHED(kld_dense_rows);
    if (grads) {
        kld_dense_keys<<<(unsigned)N, KLD_THREADS, keys_shm, st>>>(a);
        DSA_CUDA_LAUNCHED(kld_dense_keys);
    }
    double *rows = (double *)dsa_malloc(stat_bytes);
    if (!rows) DSA_FAIL(DSA_ERR_NOMEM, "CUDA dense indexer KL: %zu bytes of row statistics on the host", stat_bytes);
    kld_download(rows, a.row_kl, stat_bytes);
    double kl_sum = 0, mass_sum = 0; /* in row order, as indexer/kl.c */
    for (int64_t n = 0; n < N; n++) kl_sum += rows[n], mass_sum += rows[N + n];
    out->kl_sum += kl_sum;
    out->rows += N;
    if (idx) out->mass_sum += mass_sum, out->mass_rows += N;
    for (int64_t n = 0; idx && n < N; n++) out->selected_sum += rows[2 * N + n];
    dsa_free(rows, stat_bytes);
    return DSA_OK;
}
