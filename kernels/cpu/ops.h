/* ops.h: the CPU reference backend's ops, one function per DsaBackend entry.
 *
 * Each function has exactly the signature and contract of the DsaBackend field of the
 * same name (kernels/backend.h documents them); backend_cpu.c puts them in the table.
 * They are declared here so tests can call the CPU reference directly and later backends
 * can be compared against it. fp32, OpenMP over the configured threads, GEMMs through
 * OpenBLAS (cblas_sgemm).
 */
#ifndef DSA_KERNELS_CPU_OPS_H
#define DSA_KERNELS_CPU_OPS_H

#include "kernels/backend.h"
#include "kernels/moe_ops.h"

/* memory.c (upload, download and copy are all dsa_cpu_copy; the waits are no-ops) */
void *dsa_cpu_alloc(size_t bytes);
void dsa_cpu_release(void *p, size_t bytes);
void dsa_cpu_copy(void *dst, const void *src, size_t bytes);
void dsa_cpu_fill_zero(void *p, size_t bytes);
void dsa_cpu_no_wait(void);
void dsa_cpu_memory_info(size_t *free_bytes, size_t *total_bytes);

/* linear.c */
void dsa_cpu_linear_forward(float *y, const float *x, const float *w, int64_t n, int64_t in,
                            int64_t out);
void dsa_cpu_linear_backward(float *dx, float *dw, const float *dy, const float *x,
                             const float *w, int64_t n, int64_t in, int64_t out);
void dsa_cpu_linear_forward_bf16(float *y, const float *x, const float *w, int64_t n, int64_t in,
                                 int64_t out);
void dsa_cpu_linear_backward_bf16(float *dx, float *dw, const float *dy, const float *x,
                                  const float *w, int64_t n, int64_t in, int64_t out);

/* embedding.c */
void dsa_cpu_embedding_forward(float *out, const int32_t *ids, const float *table, int64_t n,
                               int64_t dim);
void dsa_cpu_embedding_backward(float *dtable, const float *dout, const int32_t *ids,
                                int64_t n, int64_t dim);

/* rmsnorm.c */
void dsa_cpu_rmsnorm_forward(float *y, float *rstd, const float *x, const float *weight,
                             int64_t n, int64_t dim, float eps);
void dsa_cpu_rmsnorm_backward(float *dx, float *dweight, const float *dy, const float *x,
                              const float *weight, const float *rstd, int64_t n, int64_t dim);

/* rope.c (also dsa_rope_frequencies and dsa_rope_tables of backend.h) */
void dsa_cpu_rope_forward(float *x, const float *cos, const float *sin, int64_t n,
                          int64_t seq_len, int64_t heads, int64_t rope_dim, int64_t row_stride,
                          int64_t head_stride);
void dsa_cpu_rope_backward(float *dx, const float *cos, const float *sin, int64_t n,
                           int64_t seq_len, int64_t heads, int64_t rope_dim,
                           int64_t row_stride, int64_t head_stride);

/* elementwise.c */
void dsa_cpu_swiglu_forward(float *out, const float *gate, const float *up, int64_t count);
void dsa_cpu_swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate,
                             const float *up, int64_t count);
double dsa_cpu_sum_squares(const float *x, int64_t count);
void dsa_cpu_scale(float *x, float a, int64_t count);
void dsa_cpu_add(float *y, const float *x, int64_t count);

/* copy.c */
void dsa_cpu_copy_2d(float *dst, int64_t dst_stride, const float *src, int64_t src_stride,
                     int64_t rows, int64_t cols, bool accumulate);

/* attention.c */
void dsa_cpu_attention_forward(float *out, float *lse, const float *q, const float *k,
                               const float *v, const DsaAttnShape *shape);
void dsa_cpu_attention_backward(float *dq, float *dk, float *dv, const float *dout,
                                const float *out, const float *lse, const float *q,
                                const float *k, const float *v, const DsaAttnShape *shape,
                                float *scratch);
int64_t dsa_cpu_attention_scratch_floats(const DsaAttnShape *shape);

/* sparse_attention.c */
void dsa_cpu_sparse_attention_forward(float *out, float *lse, const float *q, const float *kv,
                                      const int32_t *idx, const DsaSparseAttnShape *shape);
void dsa_cpu_sparse_attention_backward(float *dq, float *dkv, const float *dout, const float *out,
                                       const float *lse, const float *q, const float *kv,
                                       const int32_t *idx, const DsaSparseAttnShape *shape,
                                       void *scratch);
int64_t dsa_cpu_sparse_attention_scratch_bytes(const DsaSparseAttnShape *shape);

/* cross_entropy.c */
double dsa_cpu_cross_entropy_forward(float *losses, float *lse, const float *logits,
                                     const int32_t *targets, int64_t n, int64_t vocab);
void dsa_cpu_cross_entropy_backward(float *dlogits, const float *logits, const float *lse,
                                    const int32_t *targets, float scale, int64_t n,
                                    int64_t vocab);

/* adamw.c */
void dsa_cpu_adamw_step(float *param, const float *grad, float *m, float *v, int64_t count,
                        const DsaAdamWParams *p);

/* moe.c: the MoE entries (kernels/moe_ops.h) */
extern const DsaMoeOps dsa_cpu_moe_ops;

#endif
