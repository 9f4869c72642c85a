/* test_cuda_ops.c: the CUDA backend's basic ops against their CPU twins (STYLE.md rule 2):
 * memory entries, linear (fp32 and bf16), embedding, RMSNorm, RoPE, SwiGLU, cross-entropy, AdamW and the
 * vector helpers, each on random inputs and irregular shapes (odd sizes, one row, sizes
 * that are no multiple of any block), through dsa_backend_get("cuda") and the table's
 * memory entries only, and a determinism check (two runs, the same bits).
 *
 * Tolerances, per output (STYLE.md rule 4; each check prints the worst index):
 *  - bit-exact where the device performs the twin's operations in the twin's order (the
 *    shared rules of kernels/rules/, the same 16-lane sums, no FMA contraction): embedding,
 *    RMSNorm (y, rstd, dx, dweight), RoPE, SwiGLU, the cross-entropy gradient, AdamW,
 *    sum_squares, scale, add, copy_2d, and every memory entry;
 *  - GEMMs: 1e-5 of max |want| (cuBLASLt and OpenBLAS sum k products in different orders;
 *    the rounding of either is about sqrt(k)·2^-24 of the result, a transposed operand
 *    or a wrong leading dimension is O(1));
 *  - cross-entropy lse, losses and their total: 1e-6 of max |want| (the double log is
 *    libdevice's on the device and glibc's on the host: one fp32 ulp where they differ).
 * Without a usable device (no driver, no GPU, or a build without CUDA: the registry says
 * which) every test is skipped with that reason and counts as passing.
 */
#include <math.h>

#include "kernels/backend.h"
#include "kernels/cpu/ops.h"
#include "test_ops_util.h"

/* The CUDA table, or skip the test saying why there is none. */
static const DsaBackend *cuda_or_skip(void) {
    const DsaBackend *be = NULL;
    if (dsa_backend_get("cuda", &be) != DSA_OK) {
        print_message("skipped: %s\n", dsa_error_message());
        dsa_error_clear();
        skip();
    }
    return be;
}

/* Device copy of `bytes` of host data (alloc + upload). */
static void *dev_from(const DsaBackend *be, const void *host, size_t bytes) {
    void *d = be->alloc(bytes);
    assert_non_null(d);
    be->upload(d, host, bytes);
    return d;
}

/* A host copy of n device floats (test_falloc). */
static float *host_of(const DsaBackend *be, const float *dev, int64_t n) {
    float *h = test_falloc(n);
    be->download(h, dev, (size_t)n * sizeof(float));
    return h;
}

static uint32_t bits(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

/* Every value bit for bit (so inf/NaN positions too); names the first difference. */
static void expect_same_bits(const char *what, const float *got, const float *want, int64_t n) {
    int64_t first = -1, differ = 0;
    for (int64_t i = 0; i < n; i++)
        if (bits(got[i]) != bits(want[i])) differ++, first = first < 0 ? i : first;
    if (differ)
        fail_msg("%s: %lld of %lld values differ in their bits; first at index %lld: got %.9g (0x%08x), "
                 "want %.9g (0x%08x)",
                 what, (long long)differ, (long long)n, (long long)first, got[first], bits(got[first]), want[first],
                 bits(want[first]));
}

/* |got − want| ≤ tol · max |want| for every finite want; inf/NaN positions exactly. */
static void expect_close_f32(const char *what, const float *got, const float *want, int64_t n, double tol) {
    double amax = 0, worst = 0;
    int64_t at = 0, within = 0;
    for (int64_t i = 0; i < n; i++) {
        if (isfinite(want[i])) amax = fmax(amax, fabs(want[i]));
        if (isnan(want[i]) != isnan(got[i]) || (isinf(want[i]) && got[i] != want[i]))
            fail_msg("%s: index %lld: got %.9g, want %.9g (inf/NaN positions must match)", what, (long long)i, got[i],
                     want[i]);
    }
    const double bound = tol * (amax > 0 ? amax : 1);
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(want[i])) {
            within++;
            continue;
        }
        const double e = fabs((double)got[i] - want[i]);
        within += e <= bound;
        if (!(e <= worst)) worst = e, at = i;
    }
    if (!(worst <= bound))
        fail_msg("%s: worst index %lld: got %.9g, want %.9g; max abs error %.3g, rel %.3g > %.1g; %.1f%% within",
                 what, (long long)at, got[at], want[at], worst, worst / (amax > 0 ? amax : 1), tol,
                 100.0 * (double)within / (double)(n > 0 ? n : 1));
}

static float *randn(int64_t n, uint64_t seed, double scale) { return test_randn(n, seed, scale); }

/* ---- memory entries ------------------------------------------------------------------- */

static void test_memory(void **state) {
    (void)state;
    const DsaBackend *be = cuda_or_skip();
    enum { N = 1001 };
    float *d = be->alloc(N * sizeof(float)), *e = be->alloc(N * sizeof(float));
    assert_non_null(d), assert_non_null(e);
    float *zero = test_falloc(N), *h = host_of(be, d, N);
    expect_same_bits("alloc is zero-filled", h, zero, N);
    free(h);
    float *x = randn(N, 1, 1.0), *want = test_falloc(N);
    be->upload(d, x, N * sizeof(float));
    h = host_of(be, d, N);
    expect_same_bits("upload then download", h, x, N);
    free(h);
    be->copy(e, d, N * sizeof(float));
    h = host_of(be, e, N);
    expect_same_bits("copy", h, x, N);
    free(h);
    /* overlapping copy: memmove semantics, both directions */
    be->copy(d + 3, d, (N - 3) * sizeof(float));
    memcpy(want, x, sizeof(float) * N), memmove(want + 3, want, (N - 3) * sizeof(float));
    h = host_of(be, d, N);
    expect_same_bits("overlapping copy forward", h, want, N);
    free(h);
    be->copy(d, d + 5, (N - 5) * sizeof(float));
    memmove(want, want + 5, (N - 5) * sizeof(float));
    h = host_of(be, d, N);
    expect_same_bits("overlapping copy backward", h, want, N);
    free(h);
    /* fill_zero of a middle range */
    be->fill_zero(d + 10, 77 * sizeof(float));
    memset(want + 10, 0, 77 * sizeof(float));
    h = host_of(be, d, N);
    expect_same_bits("fill_zero", h, want, N);
    free(h);
    /* upload_async on the copy stream, ordered before compute by copy_order */
    float *y = randn(N, 2, 1.0);
    be->upload_async(e, y, N * sizeof(float));
    be->copy_order();
    be->scale(e, 2.0f, N);
    for (int i = 0; i < N; i++) want[i] = 2.0f * y[i];
    h = host_of(be, e, N);
    expect_same_bits("upload_async, copy_order, then scale", h, want, N);
    free(h);
    be->synchronize();
    size_t free_b = 0, total_b = 0;
    be->memory_info(&free_b, &total_b);
    print_message("device memory: %.2f GiB free of %.2f GiB\n", (double)free_b / (1 << 30), (double)total_b / (1 << 30));
    assert_true(total_b > 0 && free_b <= total_b);
    void *empty = be->alloc(0);
    assert_non_null(empty);
    be->release(empty, 0);
    be->release(NULL, 0);
    be->release(d, N * sizeof(float)), be->release(e, N * sizeof(float));
    free(zero), free(x), free(want), free(y);
}

/* ---- linear --------------------------------------------------------------------------- */

/* One shape: forward and both backward GEMMs, the inputs at unaligned offsets into their
 * device buffers (x at +1 float, w at +3, dy at +2) as views into fused buffers are. */
typedef void (*LinFwd)(float *, const float *, const float *, int64_t, int64_t, int64_t);
typedef void (*LinBwd)(float *, float *, const float *, const float *, const float *, int64_t, int64_t, int64_t);

/* be is the device table of one precision; cpu_fwd / cpu_bwd its CPU twins. */
static void check_linear_with(const DsaBackend *be, LinFwd cpu_fwd, LinBwd cpu_bwd, int64_t n, int64_t in, int64_t out,
                              uint64_t seed) {
    float *x = randn(n * in, seed, 1.0), *w = randn(out * in, seed + 1, 0.5), *dy = randn(n * out, seed + 2, 1.0);
    float *dw = randn(out * in, seed + 3, 0.1), *y = test_falloc(n * out), *dx = test_falloc(n * in);
    float *junk = randn(n * (in > out ? in : out), seed + 4, 9.0); /* what the outputs hold before */
    memcpy(y, junk, sizeof(float) * (size_t)(n * out)), memcpy(dx, junk, sizeof(float) * (size_t)(n * in));
    float *d_x = be->alloc((size_t)(n * in + 1) * sizeof(float)), *d_w = be->alloc((size_t)(out * in + 3) * sizeof(float));
    float *d_dy = be->alloc((size_t)(n * out + 2) * sizeof(float));
    be->upload(d_x + 1, x, (size_t)(n * in) * sizeof(float));
    be->upload(d_w + 3, w, (size_t)(out * in) * sizeof(float));
    be->upload(d_dy + 2, dy, (size_t)(n * out) * sizeof(float));
    float *d_y = dev_from(be, y, (size_t)(n * out) * sizeof(float)), *d_dx = dev_from(be, dx, (size_t)(n * in) * sizeof(float));
    float *d_dw = dev_from(be, dw, (size_t)(out * in) * sizeof(float));
    cpu_fwd(y, x, w, n, in, out);
    cpu_bwd(dx, dw, dy, x, w, n, in, out);
    be->linear_forward(d_y, d_x + 1, d_w + 3, n, in, out);
    be->linear_backward(d_dx, d_dw, d_dy + 2, d_x + 1, d_w + 3, n, in, out);
    const char *kind = be->fp32_table ? "bf16 linear" : "linear";
    char what[96];
    float *g = host_of(be, d_y, n * out);
    snprintf(what, sizeof what, "%s y, n %lld in %lld out %lld", kind, (long long)n, (long long)in, (long long)out);
    expect_close_f32(what, g, y, n * out, 1e-5), free(g);
    g = host_of(be, d_dx, n * in);
    snprintf(what, sizeof what, "%s dx, n %lld in %lld out %lld", kind, (long long)n, (long long)in, (long long)out);
    expect_close_f32(what, g, dx, n * in, 1e-5), free(g);
    g = host_of(be, d_dw, out * in);
    snprintf(what, sizeof what, "%s dw (+=), n %lld in %lld out %lld", kind, (long long)n, (long long)in, (long long)out);
    expect_close_f32(what, g, dw, out * in, 1e-5), free(g);
    /* dx = NULL and dw = NULL are skipped: dw alone still accumulates */
    be->linear_backward(NULL, d_dw, d_dy + 2, d_x + 1, d_w + 3, n, in, out);
    cpu_bwd(NULL, dw, dy, x, w, n, in, out);
    g = host_of(be, d_dw, out * in);
    snprintf(what, sizeof what, "%s dw alone (+= twice), n %lld in %lld", kind, (long long)n, (long long)in);
    expect_close_f32(what, g, dw, out * in, 1e-5), free(g);
    be->release(d_x, 0), be->release(d_w, 0), be->release(d_dy, 0), be->release(d_y, 0), be->release(d_dx, 0);
    be->release(d_dw, 0);
    free(x), free(w), free(dy), free(dw), free(y), free(dx), free(junk);
}

static void check_linear(const DsaBackend *be, int64_t n, int64_t in, int64_t out, uint64_t seed) {
    check_linear_with(be, dsa_cpu_linear_forward, dsa_cpu_linear_backward, n, in, out, seed);
}

static void test_linear(void **state) {
    (void)state;
    const DsaBackend *be = cuda_or_skip();
    const int64_t shapes[][3] = {{1, 1, 1}, {1, 300, 7}, {7, 13, 5}, {33, 65, 17}, {130, 97, 257}, {3, 1, 9},
                                 {5, 0, 3}, {4, 6, 0}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        check_linear(be, shapes[i][0], shapes[i][1], shapes[i][2], 100 + 10 * i);
}

/* train.precision bf16: cuBLASLt on bf16 operands against the CPU's fp32 GEMM of the same
 * rounded operands (every product exact in both, the fp32 sums in another order). */
static void test_linear_bf16(void **state) {
    (void)state;
    const DsaBackend *be = cuda_or_skip(), *bf = NULL;
    assert_int_equal(dsa_backend_for_precision(be, "bf16", &bf), DSA_OK);
    const int64_t shapes[][3] = {{1, 1, 1}, {1, 300, 7}, {7, 13, 5}, {33, 65, 17}, {130, 97, 257}, {5, 0, 3}, {4, 6, 0}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        check_linear_with(bf, dsa_cpu_linear_forward_bf16, dsa_cpu_linear_backward_bf16, shapes[i][0], shapes[i][1],
                          shapes[i][2], 500 + 10 * i);
}

/* ---- embedding ------------------------------------------------------------------------ */

static void test_embedding(void **state) {
    (void)state;
    const DsaBackend *be = cuda_or_skip();
    const int64_t shapes[][3] = {{1, 1, 1}, {37, 11, 19}, {300, 5, 67}}; /* n, vocab, dim */
    for (size_t s = 0; s < 3; s++) {
        const int64_t n = shapes[s][0], vocab = shapes[s][1], dim = shapes[s][2];
        int32_t *ids = malloc(sizeof(int32_t) * (size_t)n);
        for (int64_t i = 0; i < n; i++) ids[i] = (int32_t)(dsa_rng_u32_at(7 + s, 0, (uint64_t)i) % (uint64_t)vocab);
        float *table = randn(vocab * dim, 20 + s, 1.0), *dout = randn(n * dim, 30 + s, 1.0);
        float *dtable = randn(vocab * dim, 40 + s, 1.0), *out = test_falloc(n * dim);
        int32_t *d_ids = dev_from(be, ids, sizeof(int32_t) * (size_t)n);
        float *d_table = dev_from(be, table, sizeof(float) * (size_t)(vocab * dim));
        float *d_dout = dev_from(be, dout, sizeof(float) * (size_t)(n * dim));
        float *d_dtable = dev_from(be, dtable, sizeof(float) * (size_t)(vocab * dim));
        float *d_out = be->alloc(sizeof(float) * (size_t)(n * dim));
        dsa_cpu_embedding_forward(out, ids, table, n, dim);
        dsa_cpu_embedding_backward(dtable, dout, ids, n, dim);
        be->embedding_forward(d_out, d_ids, d_table, n, dim);
        be->embedding_backward(d_dtable, d_dout, d_ids, n, dim);
        float *g = host_of(be, d_out, n * dim);
        expect_same_bits("embedding forward", g, out, n * dim), free(g);
        g = host_of(be, d_dtable, vocab * dim);
        expect_same_bits("embedding backward (+=, token order)", g, dtable, vocab * dim), free(g);
        be->release(d_ids, 0), be->release(d_table, 0), be->release(d_dout, 0), be->release(d_dtable, 0);
        be->release(d_out, 0);
        free(ids), free(table), free(dout), free(dtable), free(out);
    }
}

/* ---- RMSNorm -------------------------------------------------------------------------- */

static void test_rmsnorm(void **state) {
    (void)state;
    const DsaBackend *be = cuda_or_skip();
    const int64_t shapes[][2] = {{1, 1}, {1, 17}, {9, 33}, {130, 1031}, {3, 4099}}; /* n, dim */
    for (size_t s = 0; s < 5; s++) {
        const int64_t n = shapes[s][0], dim = shapes[s][1];
        float *x = randn(n * dim, 50 + s, 2.0), *w = randn(dim, 60 + s, 1.0), *dy = randn(n * dim, 70 + s, 1.0);
        float *dw = randn(dim, 80 + s, 0.1), *y = test_falloc(n * dim), *rstd = test_falloc(n);
        float *dx = test_falloc(n * dim);
        float *d_x = dev_from(be, x, sizeof(float) * (size_t)(n * dim)), *d_w = dev_from(be, w, sizeof(float) * (size_t)dim);
        float *d_dy = dev_from(be, dy, sizeof(float) * (size_t)(n * dim));
        float *d_dw = dev_from(be, dw, sizeof(float) * (size_t)dim);
        float *d_y = be->alloc(sizeof(float) * (size_t)(n * dim)), *d_rstd = be->alloc(sizeof(float) * (size_t)n);
        float *d_dx = be->alloc(sizeof(float) * (size_t)(n * dim));
        dsa_cpu_rmsnorm_forward(y, rstd, x, w, n, dim, 1e-6f);
        dsa_cpu_rmsnorm_backward(dx, dw, dy, x, w, rstd, n, dim);
        be->rmsnorm_forward(d_y, d_rstd, d_x, d_w, n, dim, 1e-6f);
        be->rmsnorm_backward(d_dx, d_dw, d_dy, d_x, d_w, d_rstd, n, dim);
        float *g = host_of(be, d_y, n * dim);
        expect_same_bits("rmsnorm y", g, y, n * dim), free(g);
        g = host_of(be, d_rstd, n);
        expect_same_bits("rmsnorm rstd", g, rstd, n), free(g);
        g = host_of(be, d_dx, n * dim);
        expect_same_bits("rmsnorm dx", g, dx, n * dim), free(g);
        g = host_of(be, d_dw, dim);
        expect_same_bits("rmsnorm dweight (+=)", g, dw, dim), free(g);
        /* dweight NULL: dx only, dweight untouched */
        be->fill_zero(d_dx, sizeof(float) * (size_t)(n * dim));
        be->rmsnorm_backward(d_dx, NULL, d_dy, d_x, d_w, d_rstd, n, dim);
        g = host_of(be, d_dx, n * dim);
        expect_same_bits("rmsnorm dx without dweight", g, dx, n * dim), free(g);
        be->release(d_x, 0), be->release(d_w, 0), be->release(d_dy, 0), be->release(d_dw, 0), be->release(d_y, 0);
        be->release(d_rstd, 0), be->release(d_dx, 0);
        free(x), free(w), free(dy), free(dw), free(y), free(rstd), free(dx);
    }
}

/* ---- RoPE ----------------------------------------------------------------------------- */

static void test_rope(void **state) {
    (void)state;
    const DsaBackend *be = cuda_or_skip();
    /* 13 rows of 2 sequences' positions (seq_len 5 wraps), 3 heads of 6 rope values at
     * head stride 10 inside rows of 33: the values between the vectors stay untouched. */
    const int64_t n = 13, seq_len = 5, heads = 3, rope_dim = 6, head_stride = 10, row_stride = 33;
    float freq[3], *cos_t = test_falloc(seq_len * rope_dim / 2), *sin_t = test_falloc(seq_len * rope_dim / 2);
    dsa_rope_frequencies(freq, rope_dim, 10000.0, "yarn", 4.0, 4, 32.0, 1.0);
    dsa_rope_tables(cos_t, sin_t, freq, seq_len, rope_dim);
    float *x = randn(n * row_stride, 90, 1.0);
    float *d_x = dev_from(be, x, sizeof(float) * (size_t)(n * row_stride));
    float *d_cos = dev_from(be, cos_t, sizeof(float) * (size_t)(seq_len * rope_dim / 2));
    float *d_sin = dev_from(be, sin_t, sizeof(float) * (size_t)(seq_len * rope_dim / 2));
    dsa_cpu_rope_forward(x, cos_t, sin_t, n, seq_len, heads, rope_dim, row_stride, head_stride);
    be->rope_forward(d_x, d_cos, d_sin, n, seq_len, heads, rope_dim, row_stride, head_stride);
    float *g = host_of(be, d_x, n * row_stride);
    expect_same_bits("rope forward (in place, strided)", g, x, n * row_stride), free(g);
    dsa_cpu_rope_backward(x, cos_t, sin_t, n, seq_len, heads, rope_dim, row_stride, head_stride);
    be->rope_backward(d_x, d_cos, d_sin, n, seq_len, heads, rope_dim, row_stride, head_stride);
    g = host_of(be, d_x, n * row_stride);
    expect_same_bits("rope backward", g, x, n * row_stride), free(g);
    be->release(d_x, 0), be->release(d_cos, 0), be->release(d_sin, 0);
    free(cos_t), free(sin_t), free(x);
}

/* ---- SwiGLU --------------------------------------------------------------------------- */

static void test_swiglu(void **state) {
    (void)state;
    const DsaBackend *be = cuda_or_skip();
    enum { N = 4099 };
    float *gate = randn(N, 100, 3.0), *up = randn(N, 101, 1.0), *dout = randn(N, 102, 1.0);
    gate[0] = 100.0f, gate[1] = -100.0f, gate[2] = 0.0f, gate[3] = -0.0f, gate[4] = 88.5f, gate[5] = -1e-30f;
    float *out = test_falloc(N), *dgate = test_falloc(N), *dup = test_falloc(N);
    float *d_gate = dev_from(be, gate, sizeof(float) * N), *d_up = dev_from(be, up, sizeof(float) * N);
    float *d_dout = dev_from(be, dout, sizeof(float) * N), *d_out = be->alloc(sizeof(float) * N);
    float *d_dgate = be->alloc(sizeof(float) * N), *d_dup = be->alloc(sizeof(float) * N);
    dsa_cpu_swiglu_forward(out, gate, up, N);
    dsa_cpu_swiglu_backward(dgate, dup, dout, gate, up, N);
    be->swiglu_forward(d_out, d_gate, d_up, N);
    be->swiglu_backward(d_dgate, d_dup, d_dout, d_gate, d_up, N);
    float *g = host_of(be, d_out, N);
    expect_same_bits("swiglu forward", g, out, N), free(g);
    g = host_of(be, d_dgate, N);
    expect_same_bits("swiglu dgate", g, dgate, N), free(g);
    g = host_of(be, d_dup, N);
    expect_same_bits("swiglu dup", g, dup, N), free(g);
    /* in place: out is the gate array */
    be->swiglu_forward(d_gate, d_gate, d_up, N);
    g = host_of(be, d_gate, N);
    expect_same_bits("swiglu forward in place", g, out, N), free(g);
    be->release(d_gate, 0), be->release(d_up, 0), be->release(d_dout, 0), be->release(d_out, 0);
    be->release(d_dgate, 0), be->release(d_dup, 0);
    free(gate), free(up), free(dout), free(out), free(dgate), free(dup);
}

/* ---- cross-entropy -------------------------------------------------------------------- */

static void test_cross_entropy(void **state) {
    (void)state;
    const DsaBackend *be = cuda_or_skip();
    const int64_t shapes[][2] = {{1, 1}, {1, 7}, {37, 129}, {5, 4099}}; /* n, vocab */
    for (size_t s = 0; s < 4; s++) {
        const int64_t n = shapes[s][0], v = shapes[s][1];
        float *logits = randn(n * v, 110 + s, 3.0);
        if (n * v > 10) logits[3] = 80.0f, logits[7] = -80.0f; /* a dominant logit, a vanishing one */
        int32_t *targets = malloc(sizeof(int32_t) * (size_t)n);
        for (int64_t i = 0; i < n; i++)
            targets[i] = i % 4 == 3 ? -1 : (int32_t)(dsa_rng_u32_at(120 + s, 0, (uint64_t)i) % (uint64_t)v);
        float *losses = test_falloc(n), *lse = test_falloc(n), *dlogits = test_falloc(n * v);
        float *d_logits = dev_from(be, logits, sizeof(float) * (size_t)(n * v));
        int32_t *d_targets = dev_from(be, targets, sizeof(int32_t) * (size_t)n);
        float *d_losses = be->alloc(sizeof(float) * (size_t)n), *d_lse = be->alloc(sizeof(float) * (size_t)n);
        float *d_dlogits = be->alloc(sizeof(float) * (size_t)(n * v));
        const double total = dsa_cpu_cross_entropy_forward(losses, lse, logits, targets, n, v);
        const double d_total = be->cross_entropy_forward(d_losses, d_lse, d_logits, d_targets, n, v);
        if (!(fabs(d_total - total) <= 1e-6 * fmax(fabs(total), 1.0)))
            fail_msg("cross-entropy total, n %lld vocab %lld: got %.12g, want %.12g", (long long)n, (long long)v,
                     d_total, total);
        float *g = host_of(be, d_lse, n);
        expect_close_f32("cross-entropy lse", g, lse, n, 1e-6), free(g);
        g = host_of(be, d_losses, n);
        expect_close_f32("cross-entropy losses", g, losses, n, 1e-6), free(g);
        /* the backward from the CPU's lse: the exp rule alone, bit for bit */
        be->upload(d_lse, lse, sizeof(float) * (size_t)n);
        dsa_cpu_cross_entropy_backward(dlogits, logits, lse, targets, 0.25f, n, v);
        be->cross_entropy_backward(d_dlogits, d_logits, d_lse, d_targets, 0.25f, n, v);
        g = host_of(be, d_dlogits, n * v);
        expect_same_bits("cross-entropy dlogits", g, dlogits, n * v), free(g);
        be->cross_entropy_backward(d_logits, d_logits, d_lse, d_targets, 0.25f, n, v); /* in place */
        g = host_of(be, d_logits, n * v);
        expect_same_bits("cross-entropy dlogits in place", g, dlogits, n * v), free(g);
        be->release(d_logits, 0), be->release(d_targets, 0), be->release(d_losses, 0), be->release(d_lse, 0);
        be->release(d_dlogits, 0);
        free(logits), free(targets), free(losses), free(lse), free(dlogits);
    }
}

/* ---- AdamW ---------------------------------------------------------------------------- */

static void test_adamw(void **state) {
    (void)state;
    const DsaBackend *be = cuda_or_skip();
    enum { N = 1001 };
    float *p = randn(N, 130, 1.0), *m = randn(N, 131, 0.01), *v = randn(N, 132, 0.01);
    for (int i = 0; i < N; i++) v[i] = v[i] * v[i];
    float *d_p = dev_from(be, p, sizeof(float) * N), *d_m = dev_from(be, m, sizeof(float) * N);
    float *d_v = dev_from(be, v, sizeof(float) * N), *d_g = be->alloc(sizeof(float) * N);
    for (int step = 1; step <= 2; step++) {
        float *grad = randn(N, 140 + (uint64_t)step, 0.1);
        be->upload(d_g, grad, sizeof(float) * N);
        const DsaAdamWParams hp = {3e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, 1.0f - powf(0.9f, (float)step),
                                   1.0f - powf(0.95f, (float)step)};
        dsa_cpu_adamw_step(p, grad, m, v, N, &hp);
        be->adamw_step(d_p, d_g, d_m, d_v, N, &hp);
        free(grad);
    }
    float *g = host_of(be, d_p, N);
    expect_same_bits("adamw param", g, p, N), free(g);
    g = host_of(be, d_m, N);
    expect_same_bits("adamw m", g, m, N), free(g);
    g = host_of(be, d_v, N);
    expect_same_bits("adamw v", g, v, N), free(g);
    be->release(d_p, 0), be->release(d_m, 0), be->release(d_v, 0), be->release(d_g, 0);
    free(p), free(m), free(v);
}

/* ---- sum_squares, scale, add, copy_2d ------------------------------------------------- */

static void test_vector_ops(void **state) {
    (void)state;
    const DsaBackend *be = cuda_or_skip();
    const int64_t counts[] = {0, 1, 17, 4096, 4097, 3 * 4096 + 5, 300007};
    for (size_t c = 0; c < sizeof counts / sizeof counts[0]; c++) {
        const int64_t n = counts[c];
        float *x = randn(n, 150 + c, 1.5), *y = randn(n, 160 + c, 1.0);
        float *d_x = dev_from(be, x, sizeof(float) * (size_t)(n > 0 ? n : 1));
        float *d_y = dev_from(be, y, sizeof(float) * (size_t)(n > 0 ? n : 1));
        const double want = dsa_cpu_sum_squares(x, n), got = be->sum_squares(d_x, n);
        if (memcmp(&want, &got, sizeof want))
            fail_msg("sum_squares of %lld values: got %.17g, want %.17g (bit for bit)", (long long)n, got, want);
        dsa_cpu_scale(x, -0.7f, n), be->scale(d_x, -0.7f, n);
        dsa_cpu_add(y, x, n), be->add(d_y, d_x, n);
        dsa_cpu_add(y, y, n), be->add(d_y, d_y, n); /* y + y: an input that is the output */
        float *g = host_of(be, d_x, n);
        expect_same_bits("scale", g, x, n), free(g);
        g = host_of(be, d_y, n);
        expect_same_bits("add", g, y, n), free(g);
        be->release(d_x, 0), be->release(d_y, 0);
        free(x), free(y);
    }
    /* copy_2d: 7 rows of 5 columns out of rows of 9 into rows of 13, then accumulated back */
    const int64_t rows = 7, cols = 5, ss = 9, ds = 13;
    float *src = randn(rows * ss, 170, 1.0), *dst = randn(rows * ds, 171, 1.0);
    float *d_src = dev_from(be, src, sizeof(float) * (size_t)(rows * ss));
    float *d_dst = dev_from(be, dst, sizeof(float) * (size_t)(rows * ds));
    dsa_cpu_copy_2d(dst + 2, ds, src + 1, ss, rows, cols, false);
    be->copy_2d(d_dst + 2, ds, d_src + 1, ss, rows, cols, false);
    dsa_cpu_copy_2d(src, ss, dst + 7, ds, rows, cols + 1, true);
    be->copy_2d(d_src, ss, d_dst + 7, ds, rows, cols + 1, true);
    float *g = host_of(be, d_dst, rows * ds);
    expect_same_bits("copy_2d", g, dst, rows * ds), free(g);
    g = host_of(be, d_src, rows * ss);
    expect_same_bits("copy_2d accumulate", g, src, rows * ss), free(g);
    be->release(d_src, 0), be->release(d_dst, 0);
    free(src), free(dst);
}

/* ---- determinism ---------------------------------------------------------------------- */

/* Every reduction of the backend twice on the same inputs: the same bits. */
static void test_determinism(void **state) {
    (void)state;
    const DsaBackend *be = cuda_or_skip();
    const int64_t n = 257, in = 129, out = 65, vocab = 1031, dim = in;
    float *x = randn(n * in, 180, 1.0), *w = randn(out * in, 181, 0.5), *dy = randn(n * out, 182, 1.0);
    float *logits = randn(n * vocab, 183, 2.0);
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)n);
    for (int64_t i = 0; i < n; i++) ids[i] = (int32_t)(dsa_rng_u32_at(184, 0, (uint64_t)i) % 7); /* many repeats */
    float *d_x = dev_from(be, x, sizeof(float) * (size_t)(n * in)), *d_w = dev_from(be, w, sizeof(float) * (size_t)(out * in));
    float *d_dy = dev_from(be, dy, sizeof(float) * (size_t)(n * out));
    float *d_logits = dev_from(be, logits, sizeof(float) * (size_t)(n * vocab));
    int32_t *d_ids = dev_from(be, ids, sizeof(int32_t) * (size_t)n);
    float *d_y = be->alloc(sizeof(float) * (size_t)(n * out)), *d_dx = be->alloc(sizeof(float) * (size_t)(n * in));
    float *d_dw = be->alloc(sizeof(float) * (size_t)(out * in)), *d_rstd = be->alloc(sizeof(float) * (size_t)n);
    float *d_norm = be->alloc(sizeof(float) * (size_t)(n * in)), *d_dnw = be->alloc(sizeof(float) * (size_t)in);
    float *d_tab = be->alloc(sizeof(float) * (size_t)(7 * dim)), *d_losses = be->alloc(sizeof(float) * (size_t)n);
    float *d_lse = be->alloc(sizeof(float) * (size_t)n);
    float *run[2][6];
    double scalar[2][2];
    for (int r = 0; r < 2; r++) {
        be->fill_zero(d_dw, sizeof(float) * (size_t)(out * in)), be->fill_zero(d_dnw, sizeof(float) * (size_t)in);
        be->fill_zero(d_tab, sizeof(float) * (size_t)(7 * dim));
        be->linear_forward(d_y, d_x, d_w, n, in, out);
        be->linear_backward(d_dx, d_dw, d_dy, d_x, d_w, n, in, out);
        be->rmsnorm_forward(d_norm, d_rstd, d_x, d_w, n, in, 1e-6f);
        be->rmsnorm_backward(d_norm, d_dnw, d_dx, d_x, d_w, d_rstd, n, in);
        be->embedding_backward(d_tab, d_dx, d_ids, n, dim);
        scalar[r][0] = be->cross_entropy_forward(d_losses, d_lse, d_logits, d_ids, n, vocab);
        scalar[r][1] = be->sum_squares(d_logits, n * vocab);
        run[r][0] = host_of(be, d_y, n * out), run[r][1] = host_of(be, d_dx, n * in);
        run[r][2] = host_of(be, d_dw, out * in), run[r][3] = host_of(be, d_dnw, in);
        run[r][4] = host_of(be, d_tab, 7 * dim), run[r][5] = host_of(be, d_norm, n * in);
    }
    const char *names[6] = {"linear y", "linear dx", "linear dw", "rmsnorm dweight", "embedding dtable", "rmsnorm dx"};
    const int64_t sizes[6] = {n * out, n * in, out * in, in, 7 * dim, n * in};
    for (int k = 0; k < 6; k++) {
        char what[64];
        snprintf(what, sizeof what, "%s, second run against the first", names[k]);
        expect_same_bits(what, run[1][k], run[0][k], sizes[k]);
        free(run[0][k]), free(run[1][k]);
    }
    assert_memory_equal(&scalar[0][0], &scalar[1][0], sizeof(double)); /* cross-entropy total */
    assert_memory_equal(&scalar[0][1], &scalar[1][1], sizeof(double)); /* sum_squares */
    void *bufs[] = {d_x, d_w, d_dy, d_logits, d_ids, d_y, d_dx, d_dw, d_rstd, d_norm, d_dnw, d_tab, d_losses, d_lse};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) be->release(bufs[i], 0);
    free(x), free(w), free(dy), free(logits), free(ids);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_memory),      cmocka_unit_test(test_linear),        cmocka_unit_test(test_linear_bf16),
        cmocka_unit_test(test_embedding),
        cmocka_unit_test(test_rmsnorm),     cmocka_unit_test(test_rope),          cmocka_unit_test(test_swiglu),
        cmocka_unit_test(test_cross_entropy), cmocka_unit_test(test_adamw),       cmocka_unit_test(test_vector_ops),
        cmocka_unit_test(test_determinism),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
