/* backend.h: the numeric ops of the model behind one table of function pointers.
 *
 * A backend is a DsaBackend: every op the model, the losses and the optimizer need, as
 * `<op>_forward` / `<op>_backward` pairs (STYLE.md conventions 1 and 9). The CPU backend
 * (kernels/cpu/, C + OpenMP + OpenBLAS, fp32) is always built and is the reference
 * every other backend is tested against; the model code in pretrain/ only ever calls
 * through this table, so a CUDA backend slots in without an #ifdef outside kernels/.
 *
 * Conventions shared by every op:
 *  - fp32, row-major, contiguous unless a stride is given; element counts are int64_t;
 *  - outputs come first; an input gradient (`dx`) is overwritten, a parameter gradient
 *    (`dweight`) is accumulated (+=); a NULL gradient pointer means "not needed" where
 *    the signature says so;
 *  - ops own no memory: outputs, saved statistics and scratch are the caller's;
 *  - ops are deterministic: the same inputs and thread count give the same bits;
 *  - shapes are trusted (programming errors abort through DSA_ASSERT in debug paths);
 *    validation happens once at the model/config boundary.
 *
 * Shape letters: N tokens (= batch · seq_len), D model width, V vocabulary, H heads.
 */
#ifndef DSA_KERNELS_BACKEND_H
#define DSA_KERNELS_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

/* Causal self-attention over `batch` independent sequences of `seq_len` tokens each
 * (token n = b·seq_len + t). Queries/keys have qk_dim per head, values v_dim. */
typedef struct {
    int64_t batch, seq_len, heads;
    int64_t qk_dim, v_dim;
    float scale; /* softmax scale τ (DSA-SPEC §4.3) */
} DsaAttnShape;

/* Sparse MLA attention in the absorbed (MQA) form (DSA-SPEC §4.2) over `batch`
 * sequences of `seq_len` tokens: every head of query t attends to the same topk keys
 * idx[t, :] (positions within t's own sequence, -1 = no key, skipped), each key one
 * shared row K_s of qk_dim = d_c + d_r values whose first v_dim = d_c entries are also
 * its value. */
typedef struct {
    int64_t batch, seq_len, heads;
    int64_t qk_dim, v_dim, topk;
    float scale; /* softmax scale τ */
} DsaSparseAttnShape;

/* AdamW hyper-parameters for one update of one parameter tensor. */
typedef struct {
    float lr;
    float beta1, beta2, eps;
    float weight_decay;      /* decoupled: p -= lr·wd·p (0 for norms and biases) */
    float bias_correction1;  /* 1 − beta1^step */
    float bias_correction2;  /* 1 − beta2^step */
} DsaAdamWParams;

struct DsaMoeOps; /* kernels/moe_ops.h */

typedef struct DsaBackend {
    const char *name; /* "cpu", "sim", "cuda" */

    /* ---- memory (DESIGN.md "Backends": the device model) ----------------------------
     * Every pointer an op below reads or writes is the backend's memory, obtained from
     * `alloc`; the host touches it only through `upload` / `download` (CPU: host memory
     * and memcpy). Ops run in issue order on one compute stream; `upload_async` copies on
     * a second stream (the loader's next batch while a step runs) and `copy_order` makes
     * later compute wait for it. `download` waits for all compute issued before it, so a
     * scalar read back is final. Sizes are bytes. */
    void *(*alloc)(size_t bytes);                        /* zero-filled; NULL when out of memory */
    void (*release)(void *p, size_t bytes);              /* NULL is a no-op */
    void (*upload)(void *dst, const void *src, size_t bytes);   /* host → device, synchronous */
    void (*download)(void *dst, const void *src, size_t bytes); /* device → host, synchronous */
    void (*copy)(void *dst, const void *src, size_t bytes);     /* device → device, in stream order */
    void (*fill_zero)(void *p, size_t bytes);                   /* in stream order */
    /* host → device on the copy stream; src must stay unchanged until copy_order returns */
    void (*upload_async)(void *dst, const void *src, size_t bytes);
    void (*copy_order)(void);   /* compute issued after this waits for every upload_async */
    void (*synchronize)(void);  /* the host waits for everything issued */
    /* Device bytes free and total (CPU: the process's view of host memory, 0 when unknown). */
    void (*memory_info)(size_t *free_bytes, size_t *total_bytes);
    /* true when `alloc` returns memory the host may read and write in place (CPU): host
     * code then uses a buffer directly instead of staging it through upload / download
     * (pretrain/host_view.h). false (the default) for every device backend. */
    bool host_memory;
    /* train.precision "bf16" (DESIGN.md "Backends", DSA-SPEC §3.2): the linear entries of
     * the bf16 table that dsa_backend_for_precision derives from this one. Same contract
     * as linear_forward / linear_backward, but both operands of every product are first
     * rounded to bf16 (kernels/rules/bf16.h, nearest even); products and sums stay fp32,
     * outputs fp32, dw still accumulated in fp32. NULL: the backend has no bf16 mode. */
    void (*linear_forward_bf16)(float *y, const float *x, const float *w, int64_t n, int64_t in,
                                int64_t out);
    void (*linear_backward_bf16)(float *dx, float *dw, const float *dy, const float *x,
                                 const float *w, int64_t n, int64_t in, int64_t out);
    /* In a bf16 table: the fp32 table it was derived from (the MoE router's GEMM stays
     * fp32); NULL in an fp32 table. */
    const struct DsaBackend *fp32_table;
    /* MoE routing, dispatch and combine (kernels/moe_ops.h) on this backend's memory;
     * NULL: the backend runs no MoE layer (dsa_model_init refuses a MoE model by name). */
    const struct DsaMoeOps *moe;

    /* Linear layer with the HF storage W[out, in]: y[N, out] = x[N, in] · Wᵀ. */
    void (*linear_forward)(float *y, const float *x, const float *w, int64_t n, int64_t in,
                           int64_t out);
    /* dx[N, in] = dy · W (overwritten; skipped when dx is NULL);
     * dw[out, in] += dyᵀ · x (skipped when dw is NULL). */
    void (*linear_backward)(float *dx, float *dw, const float *dy, const float *x,
                            const float *w, int64_t n, int64_t in, int64_t out);

    /* out[N, D] = table[ids[n], :]. ids are trusted to be in [0, V). */
    void (*embedding_forward)(float *out, const int32_t *ids, const float *table, int64_t n,
                              int64_t dim);
    /* dtable[ids[n], :] += dout[n, :], in token order (deterministic). */
    void (*embedding_backward)(float *dtable, const float *dout, const int32_t *ids, int64_t n,
                               int64_t dim);

    /* RMSNorm (DSA-SPEC §4): y = weight ⊙ x / sqrt(mean(x²) + eps), per row of width dim.
     * Saves rstd[N] = 1/sqrt(mean(x²) + eps) for the backward. */
    void (*rmsnorm_forward)(float *y, float *rstd, const float *x, const float *weight,
                            int64_t n, int64_t dim, float eps);
    /* dx overwritten; dweight accumulated. */
    void (*rmsnorm_backward)(float *dx, float *dweight, const float *dy, const float *x,
                             const float *weight, const float *rstd, int64_t n, int64_t dim);

    /* Interleaved (GPT-J) RoPE, in place (DSA-SPEC §4.4): pairs (2i, 2i+1) of each
     * rope_dim-wide vector at x + n·row_stride + h·head_stride, h < heads, rotated by the
     * angle of position t = n mod seq_len: cos/sin tables are [seq_len, rope_dim/2]. */
    void (*rope_forward)(float *x, const float *cos, const float *sin, int64_t n,
                         int64_t seq_len, int64_t heads, int64_t rope_dim, int64_t row_stride,
                         int64_t head_stride);
    /* The transpose (rotation by −φ), in place on the gradient, same layout. */
    void (*rope_backward)(float *dx, const float *cos, const float *sin, int64_t n,
                          int64_t seq_len, int64_t heads, int64_t rope_dim, int64_t row_stride,
                          int64_t head_stride);

    /* SwiGLU: out = silu(gate) ⊙ up, elementwise over count values. */
    void (*swiglu_forward)(float *out, const float *gate, const float *up, int64_t count);
    /* dgate, dup overwritten. */
    void (*swiglu_backward)(float *dgate, float *dup, const float *dout, const float *gate,
                            const float *up, int64_t count);

    /* Causal attention, tiled online softmax (no L×L buffer, DESIGN.md memory rule).
     * q, k: [N, H, qk_dim]; v, out: [N, H, v_dim]; lse: [batch, H, seq_len] natural-log
     * log-sum-exp of the scaled scores of each query row (saved for the backward). */
    void (*attention_forward)(float *out, float *lse, const float *q, const float *k,
                              const float *v, const DsaAttnShape *shape);
    /* dq, dk, dv overwritten, same layouts as q, k, v. scratch: attention_scratch_floats
     * floats (the per-row dot(dout, out) of FlashAttention-2). */
    void (*attention_backward)(float *dq, float *dk, float *dv, const float *dout,
                               const float *out, const float *lse, const float *q,
                               const float *k, const float *v, const DsaAttnShape *shape,
                               float *scratch);
    int64_t (*attention_scratch_floats)(const DsaAttnShape *shape);

    /* Sparse MQA attention (DSA-SPEC §4.2): q [N, H, qk_dim], kv [N, qk_dim],
     * idx [N, topk] int32; out [N, H, v_dim] = Σ_s P_{h,t,s} kv[s, :v_dim] with
     * P = softmax over the valid entries of idx[t] of scale · q_{t,h} · kv_s;
     * lse [batch, H, seq_len] natural log (−inf and out = 0 for a row without keys).
     * Duplicate indices are a caller error. */
    void (*sparse_attention_forward)(float *out, float *lse, const float *q, const float *kv,
                                     const int32_t *idx, const DsaSparseAttnShape *shape);
    /* dq [N, H, qk_dim] and dkv [N, qk_dim] overwritten (dkv sums the query-side and the
     * value-side gradients of every key over all queries that selected it, in a fixed
     * order: deterministic for any thread count). scratch: sparse_attention_scratch_bytes. */
    void (*sparse_attention_backward)(float *dq, float *dkv, const float *dout, const float *out,
                                      const float *lse, const float *q, const float *kv,
                                      const int32_t *idx, const DsaSparseAttnShape *shape,
                                      void *scratch);
    int64_t (*sparse_attention_scratch_bytes)(const DsaSparseAttnShape *shape);

    /* Cross-entropy of logits[N, V] against targets[N]: losses[n] = lse[n] − logit[target].
     * Targets < 0 are ignored (loss 0, no gradient). Saves lse[N]. Returns the sum of
     * the losses of counted rows (in double, summed in row order). */
    double (*cross_entropy_forward)(float *losses, float *lse, const float *logits,
                                    const int32_t *targets, int64_t n, int64_t vocab);
    /* dlogits[N, V] = scale · (softmax(logits) − onehot(target)); rows with target < 0
     * get zeros. dlogits may alias logits. */
    void (*cross_entropy_backward)(float *dlogits, const float *logits, const float *lse,
                                   const int32_t *targets, float scale, int64_t n,
                                   int64_t vocab);

    /* One AdamW update (PyTorch's torch.optim.AdamW semantics, fp32 moments):
     * p ← p − lr·wd·p; m ← β1 m + (1−β1) g; v ← β2 v + (1−β2) g²;
     * p ← p − lr · (m / bc1) / (sqrt(v / bc2) + eps). */
    void (*adamw_step)(float *param, const float *grad, float *m, float *v, int64_t count,
                       const DsaAdamWParams *p);

    /* Σ x², accumulated in double in a fixed order (deterministic for a thread count). */
    double (*sum_squares)(const float *x, int64_t count);
    /* x ← a · x */
    void (*scale)(float *x, float a, int64_t count);
    /* y ← y + x */
    void (*add)(float *y, const float *x, int64_t count);
    /* 2-D strided copy: dst[r·dst_stride + c] (=, or += when accumulate) src[r·src_stride + c]
     * for r < rows, c < cols (splitting fused projections into per-head views). */
    void (*copy_2d)(float *dst, int64_t dst_stride, const float *src, int64_t src_stride,
                    int64_t rows, int64_t cols, bool accumulate);
} DsaBackend;

/* The CPU reference backend (always available). */
const DsaBackend *dsa_backend_cpu(void);

/* The simulated device (kernels/sim/): the CPU ops on memory the host cannot dereference,
 * for tests that prove the host loop touches backend memory only through the memory
 * entries. */
const DsaBackend *dsa_backend_sim(void);

/* Look a backend up by name ("cpu", "sim"; "cuda" where built). DSA_ERR_CONFIG naming the
 * choices when unknown, DSA_ERR_DEVICE when compiled out or no device is present. */
DsaStatus dsa_backend_get(const char *name, const DsaBackend **out);

/* The table that computes train.precision `precision` on backend `be`: `be` itself for
 * "fp32"; for "bf16" a copy of it whose linear_forward / linear_backward are its bf16
 * entries (so every GEMM of the model, the indexer's projections and the MoE experts runs
 * on bf16 operands; every other op, memory and the name are be's) and whose fp32_table is
 * `be`. Made once per backend and kept. DSA_ERR_CONFIG naming the backend when it has no
 * bf16 entries, or naming the choices when `precision` is unknown. */
DsaStatus dsa_backend_for_precision(const DsaBackend *be, const char *precision, const DsaBackend **out);

/* Threads the CPU backend uses (OpenMP and OpenBLAS); 0 = all cores. */
void dsa_backend_cpu_set_threads(int threads);
int dsa_backend_cpu_threads(void);

/* YaRN-scaled rotary frequencies f'_i, i < rope_dim/2 (DSA-SPEC §4.3), computed in fp32
 * as the reference does. `factor` <= 1 or an empty scaling type gives plain RoPE. */
void dsa_rope_frequencies(float *freq, int64_t rope_dim, double theta, const char *scaling_type,
                          double factor, int64_t original_max_pos, double beta_fast,
                          double beta_slow);
/* cos/sin tables [seq_len, rope_dim/2]: φ = fp32(t · f'_i), amplitude 1 (DSA-SPEC §4.3). */
void dsa_rope_tables(float *cos, float *sin, const float *freq, int64_t seq_len,
                     int64_t rope_dim);

#endif
