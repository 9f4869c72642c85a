/* backend_sim.c: the simulated device's table (kernels/sim/sim.h): memory entries that hand
 * out tagged (non-dereferenceable) pointers, and every op of the CPU reference backend
 * wrapped so that it translates its pointer arguments back first. Threads are the CPU
 * backend's (dsa_backend_cpu_set_threads).
 */
#include "kernels/sim/sim.h"

#include <string.h>

#include "kernels/cpu/ops.h"

#define R(p) dsa_sim_real(p)

/* ---- memory ------------------------------------------------------------------------- */

static void *sim_alloc(size_t bytes) {
    void *p = dsa_cpu_alloc(bytes);
    return p ? (void *)((uintptr_t)p ^ DSA_SIM_TAG) : NULL;
}

static void sim_release(void *p, size_t bytes) {
    if (p) dsa_cpu_release(R(p), bytes);
}

static void sim_upload(void *dst, const void *src, size_t bytes) { dsa_cpu_copy(R(dst), src, bytes); }
static void sim_download(void *dst, const void *src, size_t bytes) { dsa_cpu_copy(dst, R(src), bytes); }
static void sim_copy(void *dst, const void *src, size_t bytes) { dsa_cpu_copy(R(dst), R(src), bytes); }
static void sim_fill_zero(void *p, size_t bytes) { dsa_cpu_fill_zero(R(p), bytes); }

/* ---- ops ----------------------------------------------------------------------------- */

static void sim_linear_forward(float *y, const float *x, const float *w, int64_t n, int64_t in, int64_t out) {
    dsa_cpu_linear_forward(R(y), R(x), R(w), n, in, out);
}
static void sim_linear_backward(float *dx, float *dw, const float *dy, const float *x, const float *w, int64_t n,
                                int64_t in, int64_t out) {
    dsa_cpu_linear_backward(R(dx), R(dw), R(dy), R(x), R(w), n, in, out);
}
static void sim_linear_forward_bf16(float *y, const float *x, const float *w, int64_t n, int64_t in, int64_t out) {
    dsa_cpu_linear_forward_bf16(R(y), R(x), R(w), n, in, out);
}
static void sim_linear_backward_bf16(float *dx, float *dw, const float *dy, const float *x, const float *w, int64_t n,
                                     int64_t in, int64_t out) {
    dsa_cpu_linear_backward_bf16(R(dx), R(dw), R(dy), R(x), R(w), n, in, out);
}
static void sim_embedding_forward(float *out, const int32_t *ids, const float *table, int64_t n, int64_t dim) {
    dsa_cpu_embedding_forward(R(out), R(ids), R(table), n, dim);
}
static void sim_embedding_backward(float *dtable, const float *dout, const int32_t *ids, int64_t n, int64_t dim) {
    dsa_cpu_embedding_backward(R(dtable), R(dout), R(ids), n, dim);
}
static void sim_rmsnorm_forward(float *y, float *rstd, const float *x, const float *weight, int64_t n, int64_t dim,
                                float eps) {
    dsa_cpu_rmsnorm_forward(R(y), R(rstd), R(x), R(weight), n, dim, eps);
}
static void sim_rmsnorm_backward(float *dx, float *dweight, const float *dy, const float *x, const float *weight,
                                 const float *rstd, int64_t n, int64_t dim) {
    dsa_cpu_rmsnorm_backward(R(dx), R(dweight), R(dy), R(x), R(weight), R(rstd), n, dim);
}
static void sim_rope_forward(float *x, const float *cos, const float *sin, int64_t n, int64_t seq_len, int64_t heads,
                             int64_t rope_dim, int64_t row_stride, int64_t head_stride) {
    dsa_cpu_rope_forward(R(x), R(cos), R(sin), n, seq_len, heads, rope_dim, row_stride, head_stride);
}
static void sim_rope_backward(float *dx, const float *cos, const float *sin, int64_t n, int64_t seq_len,
                              int64_t heads, int64_t rope_dim, int64_t row_stride, int64_t head_stride) {
    dsa_cpu_rope_backward(R(dx), R(cos), R(sin), n, seq_len, heads, rope_dim, row_stride, head_stride);
}
static void sim_swiglu_forward(float *out, const float *gate, const float *up, int64_t count) {
    dsa_cpu_swiglu_forward(R(out), R(gate), R(up), count);
}
static void sim_swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate, const float *up,
                                int64_t count) {
    dsa_cpu_swiglu_backward(R(dgate), R(dup), R(dout), R(gate), R(up), count);
}
static void sim_attention_forward(float *out, float *lse, const float *q, const float *k, const float *v,
                                  const DsaAttnShape *shape) {
    dsa_cpu_attention_forward(R(out), R(lse), R(q), R(k), R(v), shape);
}
static void sim_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *out,
                                   const float *lse, const float *q, const float *k, const float *v,
                                   const DsaAttnShape *shape, float *scratch) {
    dsa_cpu_attention_backward(R(dq), R(dk), R(dv), R(dout), R(out), R(lse), R(q), R(k), R(v), shape, R(scratch));
}
static void sim_sparse_attention_forward(float *out, float *lse, const float *q, const float *kv, const int32_t *idx,
                                         const DsaSparseAttnShape *shape) {
    dsa_cpu_sparse_attention_forward(R(out), R(lse), R(q), R(kv), R(idx), shape);
}
static void sim_sparse_attention_backward(float *dq, float *dkv, const float *dout, const float *out,
                                          const float *lse, const float *q, const float *kv, const int32_t *idx,
                                          const DsaSparseAttnShape *shape, void *scratch) {
    dsa_cpu_sparse_attention_backward(R(dq), R(dkv), R(dout), R(out), R(lse), R(q), R(kv), R(idx), shape,
                                      R(scratch));
}
static double sim_cross_entropy_forward(float *losses, float *lse, const float *logits, const int32_t *targets,
                                        int64_t n, int64_t vocab) {
    return dsa_cpu_cross_entropy_forward(R(losses), R(lse), R(logits), R(targets), n, vocab);
}
static void sim_cross_entropy_backward(float *dlogits, const float *logits, const float *lse, const int32_t *targets,
                                       float scale, int64_t n, int64_t vocab) {
    dsa_cpu_cross_entropy_backward(R(dlogits), R(logits), R(lse), R(targets), scale, n, vocab);
}
static void sim_adamw_step(float *param, const float *grad, float *m, float *v, int64_t count,
                           const DsaAdamWParams *p) {
    dsa_cpu_adamw_step(R(param), R(grad), R(m), R(v), count, p);
}
static double sim_sum_squares(const float *x, int64_t count) { return dsa_cpu_sum_squares(R(x), count); }
static void sim_scale(float *x, float a, int64_t count) { dsa_cpu_scale(R(x), a, count); }
static void sim_add(float *y, const float *x, int64_t count) { dsa_cpu_add(R(y), R(x), count); }
static void sim_copy_2d(float *dst, int64_t dst_stride, const float *src, int64_t src_stride, int64_t rows,
                        int64_t cols, bool accumulate) {
    dsa_cpu_copy_2d(R(dst), dst_stride, R(src), src_stride, rows, cols, accumulate);
}

static const DsaBackend sim_backend = {
    .name = "sim",
    .alloc = sim_alloc,
    .release = sim_release,
    .upload = sim_upload,
    .download = sim_download,
    .copy = sim_copy,
    .fill_zero = sim_fill_zero,
    .upload_async = sim_upload,
    .copy_order = dsa_cpu_no_wait,
    .synchronize = dsa_cpu_no_wait,
    .memory_info = dsa_cpu_memory_info,
    .host_memory = false,
    .moe = &dsa_sim_moe_ops,
    .linear_forward = sim_linear_forward,
    .linear_backward = sim_linear_backward,
    .linear_forward_bf16 = sim_linear_forward_bf16,
    .linear_backward_bf16 = sim_linear_backward_bf16,
    .embedding_forward = sim_embedding_forward,
    .embedding_backward = sim_embedding_backward,
    .rmsnorm_forward = sim_rmsnorm_forward,
    .rmsnorm_backward = sim_rmsnorm_backward,
    .rope_forward = sim_rope_forward,
    .rope_backward = sim_rope_backward,
    .swiglu_forward = sim_swiglu_forward,
    .swiglu_backward = sim_swiglu_backward,
    .attention_forward = sim_attention_forward,
    .attention_backward = sim_attention_backward,
    .attention_scratch_floats = dsa_cpu_attention_scratch_floats,
    .sparse_attention_forward = sim_sparse_attention_forward,
    .sparse_attention_backward = sim_sparse_attention_backward,
    .sparse_attention_scratch_bytes = dsa_cpu_sparse_attention_scratch_bytes,
    .cross_entropy_forward = sim_cross_entropy_forward,
    .cross_entropy_backward = sim_cross_entropy_backward,
    .adamw_step = sim_adamw_step,
    .sum_squares = sim_sum_squares,
    .scale = sim_scale,
    .add = sim_add,
    .copy_2d = sim_copy_2d,
};

const DsaBackend *dsa_backend_sim(void) { return &sim_backend; }
