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
/* The CUDA backend's indexer table. */
const DsaIndexerOps *dsa_indexer_ops_cuda(void);

/* ---- the indexer's KL losses (kernels/cuda/indexer_kl.cu, indexer_kl_sparse.cu) ---------
 * DsaIndexerOps.kl_dense, .kl_sparse and .sparse_recall: the contracts of the CPU's
 * dsa_indexer_kl_dense, dsa_indexer_kl_sparse and dsa_indexer_sparse_recall (indexer/indexer.h)
 * on device memory; `out` is a host struct. Scratch comes from the backend workspace. */
DsaStatus dsa_cuda_indexer_kl_dense(DsaIndexerLoss *out, float *dq, float *dk, float *dw, const DsaIndexerActs *a,
                                    const DsaIndexerShape *s, const DsaDenseTarget *target, const int32_t *idx,
                                    const float *idx_scores, float grad_scale);
DsaStatus dsa_cuda_indexer_kl_sparse(DsaIndexerLoss *out, float *dq, float *dk, float *dw, const DsaIndexerActs *a,
                                     const DsaIndexerShape *s, const DsaSparseTarget *target, const int32_t *idx,
                                     const float *idx_scores, float grad_scale);
void dsa_cuda_indexer_sparse_recall(DsaIndexerLoss *out, const DsaIndexerShape *s, const DsaSparseTarget *target,
                                    const int32_t *idx, int64_t rows_per_seq);

#endif
