/* cuda_ops.h: the CUDA backend's entry points, callable from C (extern "C" in the .cu
 * files). Every dsa_cuda_<op> has exactly the signature and contract of the DsaBackend
 * field <op> (kernels/backend.h) or DsaIndexerOps field (kernels/indexer_ops.h), on
 * device memory, and is tested against its CPU twin (dsa_cpu_<op>, the indexer's CPU
 * table). Only the registries (kernels/backend_registry.c, indexer/ops.c) and tests use
 * this header, under DSA_HAVE_CUDA.
 */
#ifndef DSA_KERNELS_CUDA_CUDA_OPS_H
#define DSA_KERNELS_CUDA_CUDA_OPS_H

#include "kernels/backend.h"
#include "kernels/indexer_ops.h"

/* The CUDA backend's table, or NULL with why[] filled when no usable device is present. */
const DsaBackend *dsa_backend_cuda(char *why, size_t why_cap);
/* The CUDA backend's indexer table (kernels/cuda/indexer_ops.cu). */
const DsaIndexerOps *dsa_indexer_ops_cuda(void);

/* Its entries (DsaIndexerOps fields of the same name, indexer/indexer.h contracts):
 * kernels/cuda/indexer.cu, indexer_topk.cu, and the KL passes in indexer_kl*.cu. */
void dsa_cuda_indexer_forward(DsaIndexerActs *a, const float *x, const float *cq, const DsaIndexerWeights *wt,
                              const DsaIndexerShape *s, const float *rope_cos, const float *rope_sin,
                              const DsaBackend *be);
DsaStatus dsa_cuda_indexer_topk(int32_t *idx, float *scores, const DsaIndexerActs *a, const DsaIndexerShape *s);
DsaStatus dsa_cuda_indexer_kl_dense(DsaIndexerLoss *out, float *dq, float *dk, float *dw, const DsaIndexerActs *a,
                                    const DsaIndexerShape *s, const DsaDenseTarget *target, const int32_t *idx,
                                    const float *idx_scores, float grad_scale);
DsaStatus dsa_cuda_indexer_kl_sparse(DsaIndexerLoss *out, float *dq, float *dk, float *dw, const DsaIndexerActs *a,
                                     const DsaIndexerShape *s, const DsaSparseTarget *target, const int32_t *idx,
                                     const float *idx_scores, float grad_scale);
void dsa_cuda_indexer_sparse_recall(DsaIndexerLoss *out, const DsaIndexerShape *s, const DsaSparseTarget *target,
                                    const int32_t *idx, int64_t rows_per_seq);
void dsa_cuda_indexer_backward(const DsaIndexerGrads *g, float *dq, float *dk, const float *dw,
                               const DsaIndexerActs *a, const float *x, const float *cq, const DsaIndexerWeights *wt,
                               const DsaIndexerShape *s, const float *rope_cos, const float *rope_sin,
                               const DsaBackend *be);

/* The FP8 round trip of the forward alone (indexer/fp8.h dsa_fp8_quantize on device memory):
 * `count` vectors of width d (a power of two <= 1024) in groups of dsa_fp8_group_size(d);
 * codes [count·d] and deq [count·d] may be NULL, deq may alias v; scales [count·d / g].
 * The same device code as the forward's step 6, so its codes are the forward's. */
void dsa_cuda_fp8_quantize(uint8_t *codes, float *scales, float *deq, const float *v, int64_t count, int64_t d);

#endif
