/* cuda_ops.h: the CUDA backend's entry points, callable from C (extern "C" in the .cu
 * files). Every dsa_cuda_<op> has exactly the signature and contract of the DsaBackend
 * field <op> (kernels/backend.h) or DsaIndexerOps field (kernels/indexer_ops.h), on
 * device memory, and is tested against its CPU twin (dsa_cpu_<op>, the indexer's CPU
 * table). Only the registries (kernels/backend_registry.c, indexer/ops.c) and the CUDA
 * sources use this header, under DSA_HAVE_CUDA; tests reach the ops through the table.
 */
#ifndef DSA_KERNELS_CUDA_CUDA_OPS_H
#define DSA_KERNELS_CUDA_CUDA_OPS_H

#ifdef __cplusplus
extern "C" {
#endif

#include "kernels/backend.h"
#include "kernels/indexer_ops.h"

/* The CUDA backend's table (backend_cuda.cu), or NULL with why[] filled when no usable
 * device is present (no driver, no GPU, or one older than the sm_90 code of this build). */
const DsaBackend *dsa_backend_cuda(char *why, size_t why_cap);
/* The CUDA backend's indexer table (kernels/cuda/indexer_ops.cu). */
const DsaIndexerOps *dsa_indexer_ops_cuda(void);

/* memory.cu */
void *dsa_cuda_alloc(size_t bytes);
void dsa_cuda_release(void *p, size_t bytes);
void dsa_cuda_upload(void *dst, const void *src, size_t bytes);
void dsa_cuda_download(void *dst, const void *src, size_t bytes);
void dsa_cuda_copy(void *dst, const void *src, size_t bytes);
void dsa_cuda_fill_zero(void *p, size_t bytes);
void dsa_cuda_upload_async(void *dst, const void *src, size_t bytes);
void dsa_cuda_copy_order(void);
void dsa_cuda_synchronize(void);
void dsa_cuda_memory_info(size_t *free_bytes, size_t *total_bytes);

/* linear.cu */
void dsa_cuda_linear_forward(float *y, const float *x, const float *w, int64_t n, int64_t in, int64_t out);
void dsa_cuda_linear_backward(float *dx, float *dw, const float *dy, const float *x, const float *w, int64_t n,
                              int64_t in, int64_t out);
void dsa_cuda_linear_forward_bf16(float *y, const float *x, const float *w, int64_t n, int64_t in, int64_t out);
void dsa_cuda_linear_backward_bf16(float *dx, float *dw, const float *dy, const float *x, const float *w, int64_t n,
                                   int64_t in, int64_t out);

/* embedding.cu */
void dsa_cuda_embedding_forward(float *out, const int32_t *ids, const float *table, int64_t n, int64_t dim);
void dsa_cuda_embedding_backward(float *dtable, const float *dout, const int32_t *ids, int64_t n, int64_t dim);

/* rmsnorm.cu */
void dsa_cuda_rmsnorm_forward(float *y, float *rstd, const float *x, const float *weight, int64_t n, int64_t dim,
                              float eps);
void dsa_cuda_rmsnorm_backward(float *dx, float *dweight, const float *dy, const float *x, const float *weight,
                               const float *rstd, int64_t n, int64_t dim);

/* rope.cu */
void dsa_cuda_rope_forward(float *x, const float *cos, const float *sin, int64_t n, int64_t seq_len, int64_t heads,
                           int64_t rope_dim, int64_t row_stride, int64_t head_stride);
void dsa_cuda_rope_backward(float *dx, const float *cos, const float *sin, int64_t n, int64_t seq_len,
                            int64_t heads, int64_t rope_dim, int64_t row_stride, int64_t head_stride);

/* elementwise.cu */
void dsa_cuda_swiglu_forward(float *out, const float *gate, const float *up, int64_t count);
void dsa_cuda_swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate, const float *up,
                              int64_t count);
double dsa_cuda_sum_squares(const float *x, int64_t count);
void dsa_cuda_scale(float *x, float a, int64_t count);
void dsa_cuda_add(float *y, const float *x, int64_t count);

/* copy.cu */
void dsa_cuda_copy_2d(float *dst, int64_t dst_stride, const float *src, int64_t src_stride, int64_t rows,
                      int64_t cols, bool accumulate);

/* cross_entropy.cu */
double dsa_cuda_cross_entropy_forward(float *losses, float *lse, const float *logits, const int32_t *targets,
                                      int64_t n, int64_t vocab);
void dsa_cuda_cross_entropy_backward(float *dlogits, const float *logits, const float *lse, const int32_t *targets,
                                     float scale, int64_t n, int64_t vocab);

/* adamw.cu */
void dsa_cuda_adamw_step(float *param, const float *grad, float *m, float *v, int64_t count,
                         const DsaAdamWParams *p);

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

/* ---- the indexer (kernels/cuda/indexer*.cu) ---- */
/* Its entries (DsaIndexerOps fields of the same name, indexer/indexer.h contracts):
 * kernels/cuda/indexer.cu, indexer_topk.cu, and the KL passes in indexer_kl*.cu. */
void dsa_cuda_indexer_forward(DsaIndexerActs *a, const float *x, const float *cq, const DsaIndexerWeights *wt,
                              const DsaIndexerShape *s, const float *rope_cos, const float *rope_sin,
                              const DsaBackend *be);
DsaStatus dsa_cuda_indexer_topk(int32_t *idx, float *scores, const DsaIndexerActs *a, const DsaIndexerShape *s);

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
void dsa_cuda_indexer_backward(const DsaIndexerGrads *g, float *dq, float *dk, const float *dw,
                               const DsaIndexerActs *a, const float *x, const float *cq, const DsaIndexerWeights *wt,
                               const DsaIndexerShape *s, const float *rope_cos, const float *rope_sin,
                               const DsaBackend *be);

/* The FP8 round trip of the forward alone (indexer/fp8.h dsa_fp8_quantize on device memory):
 * `count` vectors of width d (a power of two <= 1024) in groups of dsa_fp8_group_size(d);
 * codes [count·d] and deq [count·d] may be NULL, deq may alias v; scales [count·d / g].
 * The same device code as the forward's step 6, so its codes are the forward's. */
void dsa_cuda_fp8_quantize(uint8_t *codes, float *scales, float *deq, const float *v, int64_t count, int64_t d);

#ifdef __cplusplus
}
#endif

#endif
