/* indexer_kl_sparse.cu: the stage-2 indexer loss over the selected keys and the sampled
 * dense recall on the device (DSA-SPEC §6.3, §7, §8.2 F3; the §6.2 metric):
 * dsa_cuda_indexer_kl_sparse and dsa_cuda_indexer_sparse_recall, the DsaIndexerOps
 * .kl_sparse and .sparse_recall entries of the CUDA backend, with the contracts of the CPU's
 * dsa_indexer_kl_sparse and dsa_indexer_sparse_recall (indexer/indexer.h, kl_sparse.c).
 *
 * Stage 2, for the valid entries s ∈ S_t of idx[t] (−1 slots skipped anywhere in the list):
 *   ks_rows      one block per row: lseI_t over S_t from the top-k scores (in slot order, as
 *                the CPU), then chunks of 128 slots: a_h,t,s = Q_t,h · K_s (MQA form), log p
 *                with the sparse attention's own lse, KL_t, G = grad_scale (π − p) (kept per
 *                slot for the key pass), ∂w and ∂q̂ of the row (sums over S_t only).
 *   the key-major transpose of the selection: (key, slot) pairs sorted by key with CUB's
 *                stable radix sort, so each key's queries come in ascending (row, slot)
 *                order, the CPU's counting-sort order; ks_key_starts finds each key's run.
 *   ks_keys      one block per key: ∂k̂_s = Σ_(t: s ∈ S_t) Σ_j E q̂_t,j in that order, one
 *                writer per output (deterministic, no atomics).
 * Recall, on rows_per_seq evenly spaced rows per sequence ending at the last:
 *   kr_lse       one block per (row, head): the dense lse over keys 0 … t in the MQA form,
 *                each thread online over a contiguous key range, combined in thread order;
 *   kr_mass      one block per row: M_t = Σ_(s ∈ S_t) (1/H) Σ_h e^(τ Q·K − lse_h) in double.
 * The row sums are downloaded and added on the host in row order, as the CPU adds them.
 *
 * Bits against the CPU: G, E, ∂q̂'s and ∂k̂'s sums are formed in the CPU's order; they differ
 * where the CPU's own order is a vector-lane one or a library's transcendental is used:
 *   - expf and logf (lseI over S_t, p = e^log p, π = e^log π) and logf(se) of log p are
 *     CUDA's (expf ≤ 2 ulp, logf ≤ 1 ulp) where the CPU's are glibc's: p, π, G agree to
 *     about 1e-6 relative, the KL sum to about 1e-6 relative;
 *   - the MLA and indexer head dots are fused multiply-adds in index order here, and
 *     dsa_idx_dot's two vector accumulators and lane tree on the CPU (indexer/internal.h, a
 *     per-build lane order): the dots agree to fp32 rounding, so ∂q̂, ∂k̂, ∂w agree to about
 *     1e-5 of their largest entry; a ReLU mask can differ only where a head dot is within
 *     rounding of 0 (then by one term);
 *   - the recall's dense lse is combined over thread ranges rather than one sequential
 *     online pass, and exp is CUDA's in double: the mass agrees to about 1e-6 relative.
 */
#include <cmath>

#include <cub/device/device_radix_sort.cuh>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/indexer_kl.cuh"
#include "kernels/rules/hd.h"
#include "kernels/rules/index_score.h"
#include "kernels/rules/kl.h"

extern "C" {
#include "core/mem.h"
#include "kernels/cuda/cuda_ops.h"
}

/* Everything the stage-2 passes read and write (device pointers; shapes of one call). */
struct SparseArgs {
    const float *q, *k, *w;       /* indexer q̂ [N, H_I, d_I], k̂ [N, d_I], w [N, H_I] */
    const float *tq, *tkv, *tlse; /* target Q [N, H, dqk], K [N, dqk], lse [batch, H, L] over S_t */
    const int32_t *idx;           /* [N, K] */
    const float *idx_scores;      /* [N, K] */
    int64_t N, L, HI, dI, H, dqk, K;
    float scale, tau, grad_scale, log_h;
    bool grads;
    float *gsel;                  /* [N, K] G per slot (0 at −1) */
    double *row_kl, *row_sel;     /* [N] each */
    float *dq, *dk, *dw;
    uint32_t *keys_in, *keys_out; /* [N·K] global key of a slot (N for −1), then sorted */
    int32_t *vals_in, *vals_out;  /* [N·K] flat slot n·K + i, then in key order */
    int64_t *key_start;           /* [N + 1] first sorted entry of each key */
};

/* One block per row. Dynamic shared memory (ks_rows_shared): term [BK] double,
 * att [H][BK], u [H_I][BK] (head dots, then E), g [BK], slot [BK]. */
static size_t ks_rows_shared(int64_t H, int64_t HI) {
    return KLD_BK * sizeof(double) + (size_t)(H + HI + 1) * KLD_BK * sizeof(float) + KLD_BK * sizeof(int32_t);
}

static __global__ void ks_rows(SparseArgs a) {
    extern __shared__ double ks_shm[];
    double *term = ks_shm;
    float *att = (float *)(term + KLD_BK), *u = att + a.H * KLD_BK, *g = u + a.HI * KLD_BK;
    int32_t *slot = (int32_t *)(g + KLD_BK);
    __shared__ float lse_i;
    __shared__ int64_t count, nc_sh;
    const int64_t n = blockIdx.x, b = n / a.L, t = n % a.L, tid = threadIdx.x, nt = blockDim.x;
    const int32_t *row = a.idx + n * a.K;
    const float *isc = a.idx_scores + n * a.K, *lse = a.tlse + b * a.H * a.L + t, *wt = a.w + n * a.HI;
    float *gout = a.gsel + n * a.K;
    for (int64_t i = tid; i < a.K; i += nt) gout[i] = 0.0f;
    if (tid == 0) { /* lseI over S_t in slot order (indexer/kl_sparse.c) */
        float mx = -INFINITY, sum = 0.0f;
        int64_t cnt = 0;
        for (int64_t i = 0; i < a.K; i++)
            if (row[i] >= 0) mx = fmaxf(mx, isc[i]), cnt++;
        for (int64_t i = 0; i < a.K; i++)
            if (row[i] >= 0) sum = dsa_rn_add(sum, expf(dsa_rn_sub(isc[i], mx))); /* NOTE: CUDA expf */
        lse_i = dsa_rn_add(mx, logf(sum));                                      /* NOTE: CUDA logf */
        count = cnt;
    }
    __syncthreads();
    if (count == 0) { /* no valid key: KL 0, G 0, still a row of the mean (rules/kl.h) */
        if (tid == 0) a.row_kl[n] = 0.0, a.row_sel[n] = 0.0;
        return;
    }
    double kl = 0; /* thread 0's, over the chunks in slot order */
    for (int64_t i0 = 0; i0 < a.K; i0 += KLD_BK) {
        if (tid == 0) {
            int64_t nc = 0;
            for (int64_t i = i0; i < a.K && i < i0 + KLD_BK; i++)
                if (row[i] >= 0) slot[nc++] = (int32_t)i;
            nc_sh = nc;
        }
        __syncthreads();
        const int64_t nc = nc_sh;
        if (nc > 0) {
            for (int64_t it = tid; it < a.H * nc; it += nt) {
                const int64_t h = it / nc, c = it % nc;
                att[h * KLD_BK + c] = dsa_index_head_dot(a.tq + (n * a.H + h) * a.dqk,
                                                         a.tkv + (b * a.L + row[slot[c]]) * a.dqk, a.dqk);
            }
            __syncthreads();
            for (int64_t c = tid; c < nc; c += nt) {
                const int64_t i = slot[c];
                const float logp = kld_log_target(att + c, KLD_BK, lse, a.L, a.H, a.tau, a.log_h);
                const float logpi = dsa_kl_log_pi(isc[i], lse_i);
                const float p = expf(logp), pi = expf(logpi); /* NOTE: CUDA expf (the CPU: glibc's) */
                term[c] = dsa_kl_term(p, logp, logpi);        /* 0 where p = 0 */
                g[c] = gout[i] = dsa_kl_grad(a.grad_scale, pi, p);
            }
            __syncthreads();
            if (tid == 0)
                for (int64_t c = 0; c < nc; c++) kl = dsa_rn_dadd(kl, term[c]);
            if (a.grads) {
                for (int64_t it = tid; it < a.HI * nc; it += nt) {
                    const int64_t j = it / nc, c = it % nc;
                    u[j * KLD_BK + c] =
                        dsa_index_head_dot(a.q + (n * a.HI + j) * a.dI, a.k + (b * a.L + row[slot[c]]) * a.dI, a.dI);
                }
                __syncthreads();
                /* ∂w_t,j += c Σ G ReLU(u); E = (c G) w_t,j [u > 0] in place of u (one thread per head) */
                for (int64_t j = tid; j < a.HI; j += nt) {
                    float acc = 0.0f;
                    for (int64_t c = 0; c < nc; c++) {
                        const float uj = u[j * KLD_BK + c], gc = g[c];
                        acc = fmaf(gc, uj > 0.0f ? uj : 0.0f, acc);
                        u[j * KLD_BK + c] = uj > 0.0f ? dsa_rn_mul(dsa_rn_mul(a.scale, gc), wt[j]) : 0.0f;
                    }
                    a.dw[n * a.HI + j] = dsa_rn_add(a.dw[n * a.HI + j], dsa_rn_mul(a.scale, acc));
                }
                __syncthreads();
                /* ∂q̂_t,j += Σ_c E k̂ over the chunk, fused multiply-adds in chunk order from 0 */
                for (int64_t it = tid; it < a.HI * a.dI; it += nt) {
                    const int64_t j = it / a.dI, e = it % a.dI;
                    float acc = 0.0f;
                    for (int64_t c = 0; c < nc; c++)
                        acc = dsa_fma_rule(u[j * KLD_BK + c], a.k[(b * a.L + row[slot[c]]) * a.dI + e], acc);
                    float *dq = a.dq + (n * a.HI + j) * a.dI + e;
                    *dq = dsa_rn_add(*dq, acc);
                }
            }
        }
        __syncthreads();
    }
    if (tid == 0) a.row_kl[n] = kl, a.row_sel[n] = (double)count;
}

/* The sort's input: the global key of each slot (N for −1: sorted last) and its flat index. */
static __global__ void ks_sort_input(SparseArgs a) {
    const int64_t f = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (f >= a.N * a.K) return;
    const int32_t key = a.idx[f];
    a.keys_in[f] = key >= 0 ? (uint32_t)(f / a.K / a.L * a.L + key) : (uint32_t)a.N;
    a.vals_in[f] = (int32_t)f;
}

/* key_start[s] = the first sorted entry whose key is ≥ s, for s ≤ N (binary search). */
static __global__ void ks_key_starts(SparseArgs a) {
    const int64_t s = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (s > a.N) return;
    int64_t lo = 0, hi = a.N * a.K;
    while (lo < hi) {
        const int64_t mid = lo + (hi - lo) / 2;
        if ((int64_t)a.keys_out[mid] < s) lo = mid + 1;
        else hi = mid;
    }
    a.key_start[s] = lo;
}

/* One block per key: ∂k̂_s over the queries that selected it, rows ascending. Dynamic shared
 * memory: u [H_I] (the pair's head dots), acc [d_I]. */
static __global__ void ks_keys(SparseArgs a) {
    extern __shared__ double ks_shm[];
    float *u = (float *)ks_shm, *acc = u + a.HI;
    const int64_t ns = blockIdx.x, tid = threadIdx.x, nt = blockDim.x;
    const float *kr = a.k + ns * a.dI;
    for (int64_t e = tid; e < a.dI; e += nt) acc[e] = 0.0f;
    for (int64_t it = a.key_start[ns]; it < a.key_start[ns + 1]; it++) {
        const int64_t f = a.vals_out[it], n = f / a.K;
        const float gv = a.gsel[f];
        if (gv == 0.0f) continue; /* (the same for every thread of the block) */
        for (int64_t j = tid; j < a.HI; j += nt) u[j] = dsa_index_head_dot(a.q + (n * a.HI + j) * a.dI, kr, a.dI);
        __syncthreads();
        const float *qn = a.q + n * a.HI * a.dI, *wt = a.w + n * a.HI;
        for (int64_t e = tid; e < a.dI; e += nt) {
            float x = acc[e];
            for (int64_t j = 0; j < a.HI; j++)
                if (u[j] > 0.0f) x = fmaf(dsa_rn_mul(dsa_rn_mul(a.scale, gv), wt[j]), qn[j * a.dI + e], x);
            acc[e] = x;
        }
        __syncthreads();
    }
    for (int64_t e = tid; e < a.dI; e += nt) a.dk[ns * a.dI + e] = acc[e];
}

extern "C" DsaStatus dsa_cuda_indexer_kl_sparse(DsaIndexerLoss *out, float *dq, float *dk, float *dw,
                                                const DsaIndexerActs *act, const DsaIndexerShape *s,
                                                const DsaSparseTarget *target, const int32_t *idx,
                                                const float *idx_scores, float grad_scale) {
    DSA_TRY(kld_check_shape(s, target->heads, target->qk_dim, "CUDA sparse indexer KL"));
    const int64_t L = s->seq_len, N = s->batch * L, HI = s->heads, dI = s->head_dim, K = s->topk, H = target->heads;
    if (N * K > 2147483647)
        DSA_FAIL(DSA_ERR_ARG, "CUDA sparse indexer KL: %lld tokens x top-%lld = %lld slots, at most 2^31 - 1",
                 (long long)N, (long long)K, (long long)(N * K));
    if (!idx || !idx_scores) DSA_FAIL(DSA_ERR_ARG, "CUDA sparse indexer KL: idx and idx_scores are required");
    const bool grads = grad_scale != 0.0f;
    if (grads && (!dq || !dk || !dw))
        DSA_FAIL(DSA_ERR_ARG, "CUDA sparse indexer KL: grad_scale %g without dq, dk, dw", (double)grad_scale);
    const size_t rows_shm = ks_rows_shared(H, HI), keys_shm = (size_t)(HI + dI) * sizeof(float);
    DSA_TRY(kld_shared_opt_in(ks_rows, rows_shm, "CUDA sparse indexer KL row pass"));
    DSA_TRY(kld_shared_opt_in(ks_keys, keys_shm, "CUDA sparse indexer KL key pass"));

    SparseArgs a = {};
    a.q = act->q, a.k = act->k, a.w = act->w;
    a.tq = target->q, a.tkv = target->kv, a.tlse = target->lse;
    a.idx = idx, a.idx_scores = idx_scores;
    a.N = N, a.L = L, a.HI = HI, a.dI = dI, a.H = H, a.dqk = target->qk_dim, a.K = K;
    a.scale = s->scale, a.tau = target->scale, a.grad_scale = grad_scale;
    a.log_h = logf((float)H); /* the host's (glibc's) logf, as the CPU's ln H */
    a.grads = grads;
    a.dq = dq, a.dk = dk, a.dw = dw;
    const int nk = (int)(N * K);
    int end_bit = 1;
    while (end_bit < 32 && ((int64_t)1 << end_bit) <= N) end_bit++; /* keys 0 … N */
    size_t sort_bytes = 0;
    if (grads)
        DSA_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, sort_bytes, a.keys_in, a.keys_out, a.vals_in,
                                                       a.vals_out, nk, 0, end_bit, dsa_cuda_stream()));
    const size_t stat_bytes = (size_t)N * 2 * sizeof(double), slot_bytes = (size_t)(N * K) * 4;
    size_t ws_bytes = kld_align(stat_bytes) + kld_align(slot_bytes);
    if (grads) ws_bytes += 4 * kld_align(slot_bytes) + kld_align((size_t)(N + 1) * sizeof(int64_t)) + kld_align(sort_bytes);
    KldCarve cv = {(char *)dsa_cuda_workspace(ws_bytes), 0};
    a.row_kl = (double *)kld_take(&cv, stat_bytes), a.row_sel = a.row_kl + N;
    a.gsel = (float *)kld_take(&cv, slot_bytes);

    cudaStream_t st = dsa_cuda_stream();
    if (grads) {
        DSA_CUDA_CHECK(cudaMemsetAsync(dq, 0, (size_t)(N * HI * dI) * sizeof(float), st));
        DSA_CUDA_CHECK(cudaMemsetAsync(dw, 0, (size_t)(N * HI) * sizeof(float), st));
    }
    ks_rows<<<(unsigned)N, KLD_THREADS, rows_shm, st>>>(a);
    DSA_CUDA_LAUNCHED(ks_rows);
    if (grads) {
        a.keys_in = (uint32_t *)kld_take(&cv, slot_bytes), a.keys_out = (uint32_t *)kld_take(&cv, slot_bytes);
        a.vals_in = (int32_t *)kld_take(&cv, slot_bytes), a.vals_out = (int32_t *)kld_take(&cv, slot_bytes);
        a.key_start = (int64_t *)kld_take(&cv, (size_t)(N + 1) * sizeof(int64_t));
        void *sort_tmp = kld_take(&cv, sort_bytes);
        ks_sort_input<<<dsa_cuda_blocks(N * K, KLD_THREADS), KLD_THREADS, 0, st>>>(a);
        DSA_CUDA_LAUNCHED(ks_sort_input);
        /* NOTE: a stable sort: equal keys keep their flat (row, slot) order, the CPU's order */
        DSA_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(sort_tmp, sort_bytes, a.keys_in, a.keys_out, a.vals_in,
                                                       a.vals_out, nk, 0, end_bit, st));
        ks_key_starts<<<dsa_cuda_blocks(N + 1, KLD_THREADS), KLD_THREADS, 0, st>>>(a);
        DSA_CUDA_LAUNCHED(ks_key_starts);
        ks_keys<<<(unsigned)N, KLD_THREADS, keys_shm, st>>>(a);
        DSA_CUDA_LAUNCHED(ks_keys);
    }
    double *rows = (double *)dsa_malloc(stat_bytes);
    if (!rows) DSA_FAIL(DSA_ERR_NOMEM, "CUDA sparse indexer KL: %zu bytes of row statistics on the host", stat_bytes);
    kld_download(rows, a.row_kl, stat_bytes);
    double kl_sum = 0, selected = 0; /* in row order, as indexer/kl_sparse.c */
    for (int64_t n = 0; n < N; n++) kl_sum += rows[n], selected += rows[N + n];
    dsa_free(rows, stat_bytes);
    out->kl_sum += kl_sum;
    out->rows += N;
    out->selected_sum += selected;
    return DSA_OK;
}

/* ---- recall (§6.2 metric on sampled rows of the sparse stage) ------------------------- */

struct RecallArgs {
    const float *q, *kv; /* Q [N, H, dqk], K [N, dqk] */
    const int32_t *idx;  /* [N, K] */
    int64_t L, H, dqk, K, rows;
    float tau;
    float *lse;          /* [batch · rows, H] */
    double *contrib;     /* [batch · rows, K] */
    double *mass;        /* [batch · rows] */
};

/* The sampled row r of sequence b (indexer/kl_sparse.c): t = L − 1 − r · L / rows. */
static __device__ int64_t kr_token(const RecallArgs &a, int64_t sample) {
    const int64_t b = sample / a.rows, r = sample % a.rows;
    return b * a.L + (a.L - 1 - r * a.L / a.rows);
}

/* One block per (sampled row, head), KLD_THREADS threads: each runs the CPU's online update
 * over a contiguous key range; thread 0 combines the ranges in thread order. */
static __global__ void kr_lse(RecallArgs a) {
    __shared__ float ms[KLD_THREADS], ls[KLD_THREADS];
    const int64_t sample = blockIdx.x / a.H, h = blockIdx.x % a.H, n = kr_token(a, sample);
    const int64_t t = n % a.L, b0 = n - t, tid = threadIdx.x, nt = blockDim.x;
    const int64_t per = (t + 1 + nt - 1) / nt, lo = tid * per, hi = lo + per < t + 1 ? lo + per : t + 1;
    const float *q = a.q + (n * a.H + h) * a.dqk;
    float m = -INFINITY, sum = 0.0f;
    for (int64_t key = lo; key < hi; key++) {
        const float x = dsa_rn_mul(a.tau, dsa_index_head_dot(q, a.kv + (b0 + key) * a.dqk, a.dqk));
        if (x > m) sum = dsa_rn_mul(sum, expf(dsa_rn_sub(m, x))), m = x;
        sum = dsa_rn_add(sum, expf(dsa_rn_sub(x, m)));
    }
    ms[tid] = m, ls[tid] = sum;
    __syncthreads();
    if (tid != 0) return;
    float M = -INFINITY, S = 0.0f;
    for (int64_t i = 0; i < nt; i++) {
        if (ls[i] == 0.0f) continue; /* an empty range */
        if (ms[i] > M) S = dsa_rn_mul(S, expf(dsa_rn_sub(M, ms[i]))), M = ms[i];
        S = dsa_rn_add(S, dsa_rn_mul(ls[i], expf(dsa_rn_sub(ms[i], M))));
    }
    a.lse[sample * a.H + h] = dsa_rn_add(M, logf(S));
}

/* One block per sampled row: each valid slot's dense probability (head mean, double), then
 * their sum in slot order. */
static __global__ void kr_mass(RecallArgs a) {
    const int64_t sample = blockIdx.x, n = kr_token(a, sample), b0 = n - n % a.L, tid = threadIdx.x;
    const int32_t *row = a.idx + n * a.K;
    double *contrib = a.contrib + sample * a.K;
    for (int64_t i = tid; i < a.K; i += blockDim.x) {
        if (row[i] < 0) continue;
        const float *kv = a.kv + (b0 + row[i]) * a.dqk;
        double p = 0;
        for (int64_t h = 0; h < a.H; h++) {
            const float dot = dsa_index_head_dot(a.q + (n * a.H + h) * a.dqk, kv, a.dqk);
            p = dsa_rn_dadd(p, exp(dsa_rn_dsub(dsa_rn_dmul((double)a.tau, (double)dot), (double)a.lse[sample * a.H + h])));
        }
        contrib[i] = p / (double)a.H;
    }
    __syncthreads();
    if (tid != 0) return;
    double mt = 0;
    for (int64_t i = 0; i < a.K; i++)
        if (row[i] >= 0) mt = dsa_rn_dadd(mt, contrib[i]);
    a.mass[sample] = mt;
}

extern "C" void dsa_cuda_indexer_sparse_recall(DsaIndexerLoss *out, const DsaIndexerShape *s,
                                               const DsaSparseTarget *target, const int32_t *idx,
                                               int64_t rows_per_seq) {
    const int64_t L = s->seq_len, rows = rows_per_seq < L ? rows_per_seq : L;
    if (rows <= 0) return;
    DSA_ASSERT(s->batch >= 1 && s->topk >= 1 && target->heads >= 1 && target->qk_dim >= 1 && idx);
    const int64_t samples = s->batch * rows, H = target->heads, K = s->topk;
    DSA_ASSERT(samples * H <= 2147483647);
    const size_t lse_bytes = (size_t)(samples * H) * sizeof(float), contrib_bytes = (size_t)(samples * K) * sizeof(double);
    const size_t mass_bytes = (size_t)samples * sizeof(double);
    KldCarve cv = {(char *)dsa_cuda_workspace(kld_align(lse_bytes) + kld_align(contrib_bytes) + kld_align(mass_bytes)), 0};
    RecallArgs a;
    a.q = target->q, a.kv = target->kv, a.idx = idx;
    a.L = L, a.H = H, a.dqk = target->qk_dim, a.K = K, a.rows = rows, a.tau = target->scale;
    a.lse = (float *)kld_take(&cv, lse_bytes);
    a.contrib = (double *)kld_take(&cv, contrib_bytes);
    a.mass = (double *)kld_take(&cv, mass_bytes);
    cudaStream_t st = dsa_cuda_stream();
    kr_lse<<<(unsigned)(samples * H), KLD_THREADS, 0, st>>>(a);
    DSA_CUDA_LAUNCHED(kr_lse);
    kr_mass<<<(unsigned)samples, KLD_THREADS, 0, st>>>(a);
    DSA_CUDA_LAUNCHED(kr_mass);
    double *mass = (double *)dsa_malloc(mass_bytes);
    DSA_ASSERT(mass);
    kld_download(mass, a.mass, mass_bytes);
    for (int64_t b = 0; b < s->batch; b++) { /* rows in order, as indexer/kl_sparse.c */
        for (int64_t r = 0; r < rows; r++) out->mass_sum += mass[b * rows + r];
        out->mass_rows += rows;
    }
    dsa_free(mass, mass_bytes);
}
