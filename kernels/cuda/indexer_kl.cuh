/* indexer_kl.cuh: what the two KL sources of the CUDA indexer share (indexer_kl.cu, stage 1;
 * indexer_kl_sparse.cu, stage 2 and recall; DSA-SPEC §6-§8): the tile width that fixes the
 * CPU's partial sums, the dynamic shared-memory opt-in, carving the backend workspace, and
 * the download of per-row statistics that the host sums in row order (nvcc only).
 *
 * Scratch: every call takes its O(N) (stage 2: O(N·k)) scratch from dsa_cuda_workspace,
 * once per call, carved here. NOTE: the workspace rather than cudaMallocAsync per call: the
 * KL runs once per layer per step with the same shapes, so the workspace reaches its size on
 * the first layer and no allocator call sits in the step loop afterwards; its peak is the
 * largest op's scratch, the figure the device plan counts once (pretrain/plan.h, "scratch").
 * Every kernel that reads it runs on the compute stream before the next call that could
 * move it, and the statistics are downloaded (synchronously) before returning.
 */
#ifndef DSA_KERNELS_CUDA_INDEXER_KL_CUH
#define DSA_KERNELS_CUDA_INDEXER_KL_CUH

#include <cstdint>
#include <cstdio>

#include "kernels/cuda/common.cuh"

extern "C" {
#include "kernels/indexer_ops.h"
}

#include "kernels/rules/exp.h"
#include "kernels/rules/hd.h"
#include "kernels/rules/kl.h"

/* The target's log p of one (row, key) pair from the raw head dots att[h · stride] and the
 * rows' lse[h · lse_stride] (indexer/scores.c dsa_idx_log_target, for one key):
 * m = max_h (τ a_h − lse_h), se = Σ_h e^(τ a_h − lse_h − m) in head order (rules/exp.h),
 * log p = m + log se − ln H (rules/kl.h; log_h = ln H from the host). */
static __device__ __forceinline__ float kld_log_target(const float *att, int64_t stride, const float *lse,
                                                       int64_t lse_stride, int64_t heads, float tau, float log_h) {
    float m = -INFINITY, se = 0.0f;
    for (int64_t h = 0; h < heads; h++) {
        const float v = dsa_kl_head_logit(tau, att[h * stride], lse[h * lse_stride]);
        m = v > m ? v : m;
    }
    for (int64_t h = 0; h < heads; h++)
        se = dsa_rn_add(se, dsa_vexpf(dsa_rn_sub(dsa_kl_head_logit(tau, att[h * stride], lse[h * lse_stride]), m)));
    return dsa_kl_log_target(m, se, log_h); /* NOTE: logf(se) is CUDA's, within 1 ulp of glibc's */
}

/* NOTE: the key-tile width of the CPU passes (indexer/internal.h KL_BK, KL_BQ, which kernels/
 * may not include): the CPU adds each row's KL, mass, ∂w and ∂q̂ per key tile of 128 and each
 * key's ∂k̂ per query tile of 16, so the device forms the same partial sums in the same
 * tiles, and the bits differ only where a library transcendental or a vector lane order
 * does (named at each use). */
constexpr int64_t KLD_BK = 128, KLD_BQ = 16; /* keys per row tile, query rows per key tile */
constexpr int KLD_THREADS = 256;           /* threads of the row and key blocks */

/* Round a byte count up to 256 (every carved piece starts aligned for any type). */
static inline size_t kld_align(size_t bytes) { return (bytes + 255) & ~(size_t)255; }

/* Carves consecutive pieces out of one workspace block. */
typedef struct {
    char *base;
    size_t used;
} KldCarve;

static inline void *kld_take(KldCarve *c, size_t bytes) {
    void *p = c->base + c->used;
    c->used += kld_align(bytes);
    return p;
}

/* Allow `bytes` of dynamic shared memory for `kernel`, or say why not (DSA_ERR_DEVICE naming
 * the op and the shapes that set the size). */
template <typename Kernel>
static DsaStatus kld_shared_opt_in(Kernel kernel, size_t bytes, const char *what) {
    int dev = 0, optin = 0;
    DSA_CUDA_CHECK(cudaGetDevice(&dev));
    DSA_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    if (bytes > (size_t)optin)
        DSA_FAIL(DSA_ERR_DEVICE, "%s: %zu bytes of shared memory per block, the device allows %d", what, bytes, optin);
    DSA_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
    return DSA_OK;
}

/* Device → host on the compute stream, then wait: the statistics are final. */
static inline void kld_download(void *dst, const void *src, size_t bytes) {
    cudaStream_t s = dsa_cuda_stream();
    DSA_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, s));
    DSA_CUDA_CHECK(cudaStreamSynchronize(s));
}

/* The shapes every KL op refuses by name rather than launching on. */
static inline DsaStatus kld_check_shape(const DsaIndexerShape *s, int64_t heads, int64_t qk_dim, const char *what) {
    if (s->batch < 1 || s->seq_len < 1 || s->heads < 1 || s->head_dim < 1 || heads < 1 || qk_dim < 1 || s->topk < 1)
        DSA_FAIL(DSA_ERR_ARG,
                 "%s: shape batch %lld, seq_len %lld, indexer heads %lld x %lld, target heads %lld x %lld, topk %lld: "
                 "every one must be at least 1",
                 what, (long long)s->batch, (long long)s->seq_len, (long long)s->heads, (long long)s->head_dim,
                 (long long)heads, (long long)qk_dim, (long long)s->topk);
    return DSA_OK;
}

#endif
