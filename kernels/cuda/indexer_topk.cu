/* indexer_topk.cu: the CUDA top-k of the lightning indexer (DSA-SPEC §5.3, §5.4), the twin
 * of indexer/topk.c (dsa_indexer_topk, same contract, on device memory).
 *
 * One thread block per query row (token n = b·L + t), DSA_CUDA_TOPK_TILE threads: the
 * algorithm of kernels/cuda/topk_select.h. Scores are kernels/rules/index_score.h's, the
 * order of arithmetic of the CPU score tiles, so every score has the CPU's bits and the
 * selected sets are the CPU's, ties included; order and padding are topk_order.h's.
 *
 * Memory: the row's candidate list (2·min(k, L) + 256 keys of 8 bytes and their fp32
 * scores), its query row and
 * head weights live in shared memory; nothing is written to global memory but the output.
 * Work per row of t + 1 keys: (t + 1)·H_I·d_I FMAs of scores (fp32, CUDA cores; the tensor
 * core version comes after the GPU check), plus the selection: each cut is 8 histogram
 * passes and one compaction over at most 2·keep + 256 keys, and a cut happens only after
 * keep + 1 keys beat the threshold, so selection is O(t + keep) per row in the worst case
 * (scores ascending in s) and about O(keep · log(t / keep)) for random scores; the final
 * bitonic sort is O(keep · log² keep).
 */
#include <cassert>

#include <cub/block/block_scan.cuh>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/topk_select.h"
#include "kernels/rules/index_score.h"
#include "kernels/rules/topk_order.h"

extern "C" {
#include "kernels/cuda/cuda_ops.h"
}

namespace {

constexpr int kThreads = DSA_CUDA_TOPK_TILE;
using BlockScan = cub::BlockScan<int, kThreads>;

struct RowShared {
    typename BlockScan::TempStorage scan;
    int count;       /* keys in the candidate list */
    uint64_t prefix; /* the radix descent's digits so far */
};

/* The rank-th largest of keys[0, count) (rank <= count; keys distinct): exact, 8 passes of
 * one 8-bit digit each (DSA-SPEC §5.4's radix select). Every thread gets the result. */
__device__ uint64_t block_kth_largest(const uint64_t *keys, int count, uint32_t rank, uint32_t *hist,
                                      RowShared *rs) {
    uint64_t prefix = 0, mask = 0;
    for (int shift = 56; shift >= 0; shift -= 8) {
        for (int i = threadIdx.x; i < DSA_CUDA_TOPK_BINS; i += kThreads) hist[i] = 0;
        __syncthreads();
        for (int i = threadIdx.x; i < count; i += kThreads) {
            const uint64_t k = keys[i];
            /* integer counts: the histogram is the same whatever the order of the atomics */
            if ((k & mask) == prefix) atomicAdd(&hist[(k >> shift) & 0xffu], 1u);
        }
        __syncthreads();
        if (threadIdx.x == 0) rs->prefix = prefix | ((uint64_t)dsa_topk_radix_digit(hist, &rank) << shift);
        __syncthreads();
        prefix = rs->prefix;
        mask |= (uint64_t)0xffu << shift;
    }
    __syncthreads(); /* every thread has read rs->prefix before anyone writes it again */
    return prefix;
}

/* Keep the keys >= thr of keys[0, count) and their scores, stably, in place; returns how
 * many remain. A chunk is read before any of it is written, and key i moves only to a slot
 * <= i. */
__device__ int block_compact(uint64_t *keys, float *vals, int count, uint64_t thr, RowShared *rs) {
    int base = 0;
    for (int c0 = 0; c0 < count; c0 += kThreads) {
        const int i = c0 + (int)threadIdx.x;
        const uint64_t k = i < count ? keys[i] : 0;
        const float v = i < count ? vals[i] : 0.0f;
        const int flag = i < count && k >= thr;
        int pos, total;
        BlockScan(rs->scan).ExclusiveSum(flag, pos, total);
        __syncthreads();
        if (flag) keys[base + pos] = k, vals[base + pos] = v;
        base += total;
        __syncthreads();
    }
    return base;
}

/* Cut the list to its `keep` best keys when it holds more; returns the new count and sets
 * *thr to the keep-th best key (the threshold) when it cut. */
__device__ int block_cut(uint64_t *keys, float *vals, int count, int keep, uint64_t *thr, bool *have_thr, uint32_t *hist,
                         RowShared *rs) {
    if (count <= keep) return count;
    *thr = block_kth_largest(keys, count, (uint32_t)keep, hist, rs);
    *have_thr = true;
    return block_compact(keys, vals, count, *thr, rs);
}

/* keys[0, n) descending, their scores alongside; n a power of two. */
__device__ void block_sort_desc(uint64_t *keys, float *vals, int n) {
    for (int size = 2; size <= n; size <<= 1)
        for (int stride = size >> 1; stride > 0; stride >>= 1) {
            for (int i = threadIdx.x; i < n; i += kThreads) {
                const int j = i ^ stride;
                if (j > i) {
                    const uint64_t a = keys[i], b = keys[j];
                    const bool desc = (i & size) == 0;
                    if (desc ? a < b : a > b) {
                        const float va = vals[i];
                        keys[i] = b, keys[j] = a, vals[i] = vals[j], vals[j] = va;
                    }
                }
            }
            __syncthreads();
        }
}

struct TopkParams {
    int32_t *__restrict__ idx;   /* [N, k] */
    float *__restrict__ scores;  /* [N, k] or NULL */
    const float *__restrict__ q; /* [N, H_I, d_I] */
    const float *__restrict__ k; /* [N, d_I] */
    const float *__restrict__ w; /* [N, H_I] */
    int64_t seq_len, heads, dim, topk;
    float scale;
    DsaCudaTopkPlan plan;
};

__global__ void __launch_bounds__(kThreads) topk_rows_kernel(TopkParams p) {
    extern __shared__ __align__(16) unsigned char smem[];
    __shared__ RowShared rs;
    uint64_t *keys = reinterpret_cast<uint64_t *>(smem);
    float *vals = reinterpret_cast<float *>(keys + p.plan.capacity); /* the keys' scores */
    float *qrow = vals + p.plan.capacity;
    float *wrow = qrow + p.heads * p.dim;
    uint32_t *hist = reinterpret_cast<uint32_t *>(wrow + p.heads);

    const int64_t n = blockIdx.x, t = n % p.seq_len, row0 = n - t; /* row0 = b·L */
    const int64_t qn = p.heads * p.dim;
    for (int64_t i = threadIdx.x; i < qn; i += kThreads) qrow[i] = p.q[n * qn + i];
    for (int64_t i = threadIdx.x; i < p.heads; i += kThreads) wrow[i] = p.w[n * p.heads + i];
    if (threadIdx.x == 0) rs.count = 0;
    __syncthreads();

    const int keep = (int)p.plan.keep;
    uint64_t thr = 0;
    bool have_thr = false;
    for (int64_t s0 = 0; s0 <= t; s0 += kThreads) {
        const int64_t s = s0 + threadIdx.x;
        if (s <= t) {
            const float sc = dsa_index_score(qrow, wrow, p.k + (row0 + s) * p.dim, p.heads, p.dim, p.scale, t, s);
            assert(!isnan(sc)); /* a NaN score is a programming error (DSA-SPEC §5.4) */
            const uint64_t key = dsa_topk_order_key(sc, (int32_t)s);
            /* a key not above the keep-th best so far can never be selected */
            if (!have_thr || key > thr) {
                const int slot = atomicAdd(&rs.count, 1);
                keys[slot] = key, vals[slot] = sc;
            }
        }
        __syncthreads();
        const int count = rs.count;
        if (dsa_cuda_topk_must_cut(&p.plan, count)) {
            const int kept = block_cut(keys, vals, count, keep, &thr, &have_thr, hist, &rs);
            if (threadIdx.x == 0) rs.count = kept;
        }
        __syncthreads();
    }
    const int count = block_cut(keys, vals, rs.count, keep, &thr, &have_thr, hist, &rs);
    /* the slot order of the list depends on the atomics; the sort makes the output exact */
    const int width = (int)dsa_cuda_pow2_at_least(count > 0 ? count : 1);
    for (int i = count + (int)threadIdx.x; i < width; i += kThreads) keys[i] = 0, vals[i] = 0.0f;
    __syncthreads();
    block_sort_desc(keys, vals, width);
    for (int64_t j = threadIdx.x; j < p.topk; j += kThreads) {
        /* NOTE: the score comes from vals, not from the key: the key maps −0.0 to +0.0, and a
         * score is −0.0 where a tiny negative head sum underflows in the product by c. */
        const int64_t fill = j < count; /* slot j as slot 0 of a list of `fill` */
        DsaTopkCand c = fill ? dsa_topk_order_cand(keys[j]) : DsaTopkCand{0.0f, 0};
        if (fill) c.score = vals[j];
        p.idx[n * p.topk + j] = dsa_topk_slot_index(&c, fill, 0);
        if (p.scores) p.scores[n * p.topk + j] = dsa_topk_slot_score(&c, fill, 0);
    }
}

} // namespace

extern "C" DsaStatus dsa_cuda_indexer_topk(int32_t *idx, float *scores, const DsaIndexerActs *a,
                                           const DsaIndexerShape *s) {
    const int64_t N = s->batch * s->seq_len;
    if (s->topk < 1 || s->seq_len < 1)
        DSA_FAIL(DSA_ERR_CONFIG, "indexer top-k: k = %lld and seq_len = %lld must both be >= 1", (long long)s->topk,
                 (long long)s->seq_len);
    if (N == 0) return DSA_OK;
    const DsaCudaTopkPlan plan = dsa_cuda_topk_plan(s->topk, s->seq_len, s->heads, s->head_dim, kThreads);
    int device = 0, optin = 0;
    DSA_CUDA_CHECK(cudaGetDevice(&device));
    DSA_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
    const size_t static_bytes = sizeof(RowShared);
    if (plan.shared_bytes + static_bytes > (size_t)optin)
        DSA_FAIL(DSA_ERR_DEVICE,
                 "indexer top-k: k = %lld over %lld keys with %lld x %lld queries needs %zu bytes of shared memory "
                 "per block; the device allows %d (lower index_topk)",
                 (long long)s->topk, (long long)s->seq_len, (long long)s->heads, (long long)s->head_dim,
                 plan.shared_bytes + static_bytes, optin);
    if (N > 2147483647LL) DSA_FAIL(DSA_ERR_CONFIG, "indexer top-k: %lld rows exceed one grid", (long long)N);
    DSA_CUDA_CHECK(cudaFuncSetAttribute(topk_rows_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        (int)plan.shared_bytes));
    TopkParams p;
    p.idx = idx, p.scores = scores, p.q = a->q, p.k = a->k, p.w = a->w;
    p.seq_len = s->seq_len, p.heads = s->heads, p.dim = s->head_dim, p.topk = s->topk, p.scale = s->scale;
    p.plan = plan;
    topk_rows_kernel<<<(unsigned)N, kThreads, plan.shared_bytes, dsa_cuda_stream()>>>(p);
    DSA_CUDA_LAUNCHED(topk_rows_kernel);
    return DSA_OK;
}
