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

/* ---- attention (kernels/cuda/attention.cu, sparse_attention.cu) ----
 * The DsaBackend fields attention_* and sparse_attention_* (kernels/backend.h), on device
 * memory, on the compute stream; no float atomics in any gradient (same bits run to run). */
void dsa_cuda_attention_forward(float *out, float *lse, const float *q, const float *k, const float *v,
                                const DsaAttnShape *shape);
void dsa_cuda_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *out,
                                 const float *lse, const float *q, const float *k, const float *v,
                                 const DsaAttnShape *shape, float *scratch);
int64_t dsa_cuda_attention_scratch_floats(const DsaAttnShape *shape);
void dsa_cuda_sparse_attention_forward(float *out, float *lse, const float *q, const float *kv, const int32_t *idx,
                                       const DsaSparseAttnShape *shape);
void dsa_cuda_sparse_attention_backward(float *dq, float *dkv, const float *dout, const float *out, const float *lse,
                                        const float *q, const float *kv, const int32_t *idx,
                                        const DsaSparseAttnShape *shape, void *scratch);
int64_t dsa_cuda_sparse_attention_scratch_bytes(const DsaSparseAttnShape *shape);

#endif
