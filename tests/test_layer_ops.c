/* test_layer_ops.c: the CPU backend's layer ops (kernels/cpu/): linear, embedding,
 * RMSNorm, SwiGLU and cross-entropy, against plain fp64 formulas written here.
 *
 *  - forwards: the fp32 op against a naive fp64 forward of the same inputs;
 *  - backwards: against central finite differences, in fp64, of the fp64 forward of the
 *    scalar loss Σ r ⊙ y (r random and fixed), step 1e-6. Tolerance 1e-5 of the largest
 *    |gradient| (FD_TOL): the fp64 differences are good to ~1e-9, the fp32 analytic
 *    gradients of these tiny shapes to ~1e-6;
 *  - determinism across thread counts (bit-equal), odd sizes, in-place use.
 * Shapes above each op's parallel threshold are included so the OpenMP paths run.
 * The bf16 linear entries (train.precision "bf16"): the fp32 GEMM of the bf16-rounded
 * operands bit for bit, and the bf16 table dsa_backend_for_precision makes of the CPU's.
 * RoPE, AdamW, the vector helpers and the backend table are in test_ops.c.
 */
#include <math.h>

#include <string.h>

#include "core/mem.h"
#include "kernels/cpu/ops.h"
#include "kernels/rules/bf16.h"
#include "test_ops_util.h"

/* ---- linear --------------------------------------------------------------------------- */

typedef struct {
    int64_t n, in, out;
    const double *x, *w; /* the operand held fixed */
} LinCtx;

static void lin64(double *y, const double *x, const double *w, int64_t n, int64_t in, int64_t out) {
    for (int64_t t = 0; t < n; t++)
        for (int64_t o = 0; o < out; o++) {
            double s = 0;
            for (int64_t i = 0; i < in; i++) s += x[t * in + i] * w[o * in + i];
            y[t * out + o] = s;
        }
}
static void lin_wrt_x(double *y, const double *x, const void *c) {
    const LinCtx *l = c;
    lin64(y, x, l->w, l->n, l->in, l->out);
}
static void lin_wrt_w(double *y, const double *w, const void *c) {
    const LinCtx *l = c;
    lin64(y, l->x, w, l->n, l->in, l->out);
}

static void check_linear(int64_t n, int64_t in, int64_t out, uint64_t seed) {
    float *x = test_falloc(n * in), *w = test_falloc(out * in), *y = test_falloc(n * out), *dy = test_falloc(n * out);
    float *dx = test_falloc(n * in), *dw = test_falloc(out * in), *dx2 = test_falloc(n * in), *dw2 = test_falloc(out * in);
    fill(x, n * in, seed, 1), fill(w, out * in, seed + 1, 1), fill(dy, n * out, seed + 2, 1);
    dsa_cpu_linear_forward(y, x, w, n, in, out);
    double *xd = test_to_f64(x, n * in), *wd = test_to_f64(w, out * in), *rd = test_to_f64(dy, n * out), *yd = test_dalloc(n * out);
    double *gx = test_dalloc(n * in), *gw = test_dalloc(out * in);
    lin64(yd, xd, wd, n, in, out);
    test_expect_close("linear forward", y, yd, n * out, 1e-6);

    for (int64_t i = 0; i < out * in; i++) dw[i] = 0.75f; /* dw accumulates */
    dsa_cpu_linear_backward(dx, dw, dy, x, w, n, in, out);
    LinCtx c = {n, in, out, xd, wd};
    finite_diff(gx, lin_wrt_x, &c, xd, n * in, rd, n * out);
    finite_diff(gw, lin_wrt_w, &c, wd, out * in, rd, n * out);
    for (int64_t i = 0; i < out * in; i++) gw[i] += 0.75;
    test_expect_close("linear dx", dx, gx, n * in, FD_TOL);
    test_expect_close("linear dw (+= 0.75)", dw, gw, out * in, FD_TOL);

    /* NULL dx: dw alone, same bits; NULL dw: dx alone, same bits. */
    for (int64_t i = 0; i < out * in; i++) dw2[i] = 0.75f;
    dsa_cpu_linear_backward(NULL, dw2, dy, x, w, n, in, out);
    assert_memory_equal(dw2, dw, sizeof(float) * (size_t)(out * in));
    memset(dx2, 0xff, sizeof(float) * (size_t)(n * in)); /* NaN: dx is overwritten */
    dsa_cpu_linear_backward(dx2, NULL, dy, x, w, n, in, out);
    assert_memory_equal(dx2, dx, sizeof(float) * (size_t)(n * in));
    free(x), free(w), free(y), free(dy), free(dx), free(dw), free(dx2), free(dw2);
    free(xd), free(wd), free(rd), free(yd), free(gx), free(gw);
}

static void test_linear(void **state) {
    (void)state;
    check_linear(7, 5, 3, 10);
    check_linear(1, 33, 7, 20);  /* a single token, odd widths */
    check_linear(17, 1, 9, 30);  /* in = 1 */
    /* empty inner dimension: y = 0, dx = 0 (OpenBLAS itself rejects lda = 0) */
    float y[6] = {1, 1, 1, 1, 1, 1}, dx[3] = {0}, dy[6] = {1, 2, 3, 4, 5, 6}, x1[3] = {1, 2, 3};
    dsa_cpu_linear_forward(y, NULL, NULL, 3, 0, 2);
    for (int i = 0; i < 6; i++) assert_true(y[i] == 0.0f);
    dx[0] = dx[1] = dx[2] = 7;
    dsa_cpu_linear_backward(dx, NULL, dy, x1, NULL, 3, 1, 0);
    for (int i = 0; i < 3; i++) assert_true(dx[i] == 0.0f);
}

/* ---- bf16 linear ----------------------------------------------------------------------- */

static float *rounded(const float *x, int64_t n) {
    float *r = test_falloc(n);
    for (int64_t i = 0; i < n; i++) r[i] = dsa_bf16_to_f32(dsa_bf16_from_f32(x[i]));
    return r;
}

static void check_linear_bf16(int64_t n, int64_t in, int64_t out, uint64_t seed) {
    float *x = test_falloc(n * in), *w = test_falloc(out * in), *dy = test_falloc(n * out);
    fill(x, n * in, seed, 1), fill(w, out * in, seed + 1, 1), fill(dy, n * out, seed + 2, 1);
    float *xr = rounded(x, n * in), *wr = rounded(w, out * in), *dyr = rounded(dy, n * out);
    float *y = test_falloc(n * out), *want = test_falloc(n * out), *y32 = test_falloc(n * out);
    dsa_cpu_linear_forward_bf16(y, x, w, n, in, out);
    dsa_cpu_linear_forward(want, xr, wr, n, in, out);
    assert_memory_equal(y, want, sizeof(float) * (size_t)(n * out));
    /* against fp64 of the rounded operands (products exact, fp32 sums) */
    double *xd = test_to_f64(xr, n * in), *wd = test_to_f64(wr, out * in), *yd = test_dalloc(n * out);
    lin64(yd, xd, wd, n, in, out);
    test_expect_close("bf16 linear forward", y, yd, n * out, 1e-6);
    /* and not the fp32 GEMM: the rounding is really applied */
    dsa_cpu_linear_forward(y32, x, w, n, in, out);
    assert_true(memcmp(y, y32, sizeof(float) * (size_t)(n * out)) != 0);

    float *dx = test_falloc(n * in), *dw = test_falloc(out * in), *dxw = test_falloc(n * in), *dww = test_falloc(out * in);
    for (int64_t i = 0; i < out * in; i++) dw[i] = dww[i] = 0.75f; /* dw accumulates, in fp32 */
    memset(dx, 0xff, sizeof(float) * (size_t)(n * in));         /* NaN: dx is overwritten */
    dsa_cpu_linear_backward_bf16(dx, dw, dy, x, w, n, in, out);
    dsa_cpu_linear_backward(dxw, dww, dyr, xr, wr, n, in, out);
    assert_memory_equal(dx, dxw, sizeof(float) * (size_t)(n * in));
    assert_memory_equal(dw, dww, sizeof(float) * (size_t)(out * in));
    /* NULL dx or dw: the other alone, the same bits */
    for (int64_t i = 0; i < out * in; i++) dww[i] = 0.75f;
    dsa_cpu_linear_backward_bf16(NULL, dww, dy, x, w, n, in, out);
    assert_memory_equal(dww, dw, sizeof(float) * (size_t)(out * in));
    memset(dxw, 0, sizeof(float) * (size_t)(n * in));
    dsa_cpu_linear_backward_bf16(dxw, NULL, dy, x, w, n, in, out);
    assert_memory_equal(dxw, dx, sizeof(float) * (size_t)(n * in));
    free(x), free(w), free(dy), free(xr), free(wr), free(dyr), free(y), free(want), free(y32);
    free(xd), free(wd), free(yd), free(dx), free(dw), free(dxw), free(dww);
}

static void test_linear_bf16(void **state) {
    (void)state;
    check_linear_bf16(7, 5, 3, 40);
    check_linear_bf16(1, 33, 7, 50);
    check_linear_bf16(130, 97, 65, 60); /* above the rounding loop's parallel threshold */
    /* empty shapes behave as the fp32 entries */
    float y[6] = {1, 1, 1, 1, 1, 1}, dx[3] = {7, 7, 7}, dy[6] = {1, 2, 3, 4, 5, 6}, x1[3] = {1, 2, 3};
    dsa_cpu_linear_forward_bf16(y, NULL, NULL, 3, 0, 2);
    for (int i = 0; i < 6; i++) assert_true(y[i] == 0.0f);
    dsa_cpu_linear_backward_bf16(dx, NULL, dy, x1, NULL, 3, 1, 0);
    for (int i = 0; i < 3; i++) assert_true(dx[i] == 0.0f);
    dsa_cpu_linear_forward_bf16(NULL, NULL, NULL, 0, 4, 4);
}

/* dsa_backend_for_precision: fp32 is the table itself; bf16 a kept copy with the bf16
 * GEMMs and every other entry the CPU's; a backend without bf16 entries is refused. */
static void test_precision_tables(void **state) {
    (void)state;
    const DsaBackend *cpu = dsa_backend_cpu(), *t = NULL, *again = NULL, *back = NULL;
    assert_int_equal(dsa_backend_for_precision(cpu, "fp32", &t), DSA_OK);
    assert_ptr_equal(t, cpu);
    assert_null(cpu->fp32_table);
    assert_int_equal(dsa_backend_for_precision(cpu, "bf16", &t), DSA_OK);
    assert_ptr_not_equal(t, cpu);
    assert_ptr_equal(t->fp32_table, cpu);
    assert_string_equal(t->name, "cpu");
    assert_true(t->linear_forward == dsa_cpu_linear_forward_bf16 && t->linear_backward == dsa_cpu_linear_backward_bf16);
    assert_true(t->attention_forward == cpu->attention_forward && t->adamw_step == cpu->adamw_step &&
                t->alloc == cpu->alloc && t->moe == cpu->moe && t->host_memory);
    assert_int_equal(dsa_backend_for_precision(cpu, "bf16", &again), DSA_OK);
    assert_ptr_equal(again, t); /* made once */
    assert_int_equal(dsa_backend_for_precision(t, "bf16", &again), DSA_OK);
    assert_ptr_equal(again, t);
    assert_int_equal(dsa_backend_for_precision(t, "fp32", &back), DSA_OK);
    assert_ptr_equal(back, cpu);
    assert_int_equal(dsa_backend_for_precision(cpu, "fp16", &t), DSA_ERR_CONFIG);
    assert_null(t);
    assert_non_null(strstr(dsa_error_message(), "\"fp16\" is unknown"));
    DsaBackend plain = *cpu;
    plain.name = "plain";
    plain.linear_forward_bf16 = NULL, plain.linear_backward_bf16 = NULL;
    assert_int_equal(dsa_backend_for_precision(&plain, "bf16", &t), DSA_ERR_CONFIG);
    assert_non_null(strstr(dsa_error_message(), "the plain backend has no bf16 linear entries"));
}

/* ---- embedding ------------------------------------------------------------------------ */

typedef struct {
    const int32_t *ids;
    int64_t n, dim;
} EmbCtx;
static void emb64(double *y, const double *table, const void *c) {
    const EmbCtx *e = c;
    for (int64_t i = 0; i < e->n; i++)
        for (int64_t j = 0; j < e->dim; j++) y[i * e->dim + j] = table[e->ids[i] * e->dim + j];
}

static void test_embedding(void **state) {
    (void)state;
    enum { N = 9, D = 7, V = 4 };
    float table[V * D], out[N * D], dout[N * D], dtable[V * D];
    int32_t ids[N] = {1, 3, 1, 0, 1, 3, 3, 1, 2}; /* repeated ids */
    fill(table, V * D, 40, 1), fill(dout, N * D, 41, 1);
    dsa_cpu_embedding_forward(out, ids, table, N, D);
    for (int i = 0; i < N; i++) assert_memory_equal(out + i * D, table + ids[i] * D, sizeof(float) * D);
    for (int i = 0; i < V * D; i++) dtable[i] = -0.5f; /* accumulates */
    dsa_cpu_embedding_backward(dtable, dout, ids, N, D);
    double *td = test_to_f64(table, V * D), *rd = test_to_f64(dout, N * D), g[V * D];
    EmbCtx c = {ids, N, D};
    finite_diff(g, emb64, &c, td, V * D, rd, N * D);
    for (int i = 0; i < V * D; i++) g[i] -= 0.5;
    test_expect_close("embedding dtable (repeated ids, += -0.5)", dtable, g, V * D, FD_TOL);
    /* n = 1 */
    float one[D], done[V * D] = {0};
    dsa_cpu_embedding_forward(one, ids + 8, table, 1, D);
    assert_memory_equal(one, table + 2 * D, sizeof one);
    dsa_cpu_embedding_backward(done, dout, ids + 8, 1, D);
    assert_memory_equal(done + 2 * D, dout, sizeof(float) * D);
    free(td), free(rd);

    /* Above the parallel threshold, odd width, few distinct ids (many collisions):
     * bit-equal for 1 and 2 threads, and in token order (a serial fp32 sum). */
    const int64_t n = 1000, dim = 131, vocab = 5;
    float *big = test_falloc(n * dim), *t1 = test_falloc(vocab * dim), *t2 = test_falloc(vocab * dim), *ts = test_falloc(vocab * dim);
    int32_t *bid = malloc(sizeof(int32_t) * n);
    fill(big, n * dim, 42, 1);
    for (int64_t i = 0; i < n; i++) bid[i] = (int32_t)((i * 7 + i / 3) % vocab);
    for (int64_t i = 0; i < vocab * dim; i++) t1[i] = t2[i] = ts[i] = 0.25f;
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < dim; j++) ts[bid[i] * dim + j] += big[i * dim + j];
    int saved = threads_push(1);
    dsa_cpu_embedding_backward(t1, big, bid, n, dim);
    omp_set_num_threads(2);
    dsa_cpu_embedding_backward(t2, big, bid, n, dim);
    omp_set_num_threads(saved);
    assert_memory_equal(t1, t2, sizeof(float) * (size_t)(vocab * dim));
    assert_memory_equal(t1, ts, sizeof(float) * (size_t)(vocab * dim));
    free(big), free(t1), free(t2), free(ts), free(bid);
}

/* ---- RMSNorm -------------------------------------------------------------------------- */

typedef struct {
    int64_t n, dim;
    const double *w, *x; /* the operand held fixed */
} NormCtx;

static void rms64(double *y, const double *x, const double *w, int64_t n, int64_t dim) {
    for (int64_t i = 0; i < n; i++) {
        double ss = 0;
        for (int64_t j = 0; j < dim; j++) ss += x[i * dim + j] * x[i * dim + j];
        double r = 1 / sqrt(ss / dim + 1e-6);
        for (int64_t j = 0; j < dim; j++) y[i * dim + j] = w[j] * x[i * dim + j] * r;
    }
}
static void rms_wrt_x(double *y, const double *x, const void *c) {
    const NormCtx *n = c;
    rms64(y, x, n->w, n->n, n->dim);
}
static void rms_wrt_w(double *y, const double *w, const void *c) {
    const NormCtx *n = c;
    rms64(y, n->x, w, n->n, n->dim);
}

static void check_rmsnorm_fd(int64_t n, int64_t dim, uint64_t seed) {
    float *x = test_falloc(n * dim), *w = test_falloc(dim), *y = test_falloc(n * dim), *rstd = test_falloc(n), *dy = test_falloc(n * dim);
    float *dx = test_falloc(n * dim), *dx2 = test_falloc(n * dim), *dw = test_falloc(dim);
    fill(x, n * dim, seed, 2), fill(w, dim, seed + 1, 1), fill(dy, n * dim, seed + 2, 1);
    dsa_cpu_rmsnorm_forward(y, rstd, x, w, n, dim, 1e-6f);
    double *xd = test_to_f64(x, n * dim), *wd = test_to_f64(w, dim), *rd = test_to_f64(dy, n * dim), *yd = test_dalloc(n * dim);
    double *gx = test_dalloc(n * dim), *gw = test_dalloc(dim), *rs = test_dalloc(n);
    rms64(yd, xd, wd, n, dim);
    test_expect_close("rmsnorm forward", y, yd, n * dim, 1e-6);
    for (int64_t i = 0; i < n; i++) {
        double ss = 0;
        for (int64_t j = 0; j < dim; j++) ss += xd[i * dim + j] * xd[i * dim + j];
        rs[i] = 1 / sqrt(ss / dim + 1e-6);
    }
    test_expect_close("rmsnorm rstd", rstd, rs, n, 1e-6);
    for (int64_t i = 0; i < dim; i++) dw[i] = 0.5f; /* accumulates */
    dsa_cpu_rmsnorm_backward(dx, dw, dy, x, w, rstd, n, dim);
    NormCtx c = {n, dim, wd, xd};
    finite_diff(gx, rms_wrt_x, &c, xd, n * dim, rd, n * dim);
    finite_diff(gw, rms_wrt_w, &c, wd, dim, rd, n * dim);
    for (int64_t i = 0; i < dim; i++) gw[i] += 0.5;
    test_expect_close("rmsnorm dx", dx, gx, n * dim, FD_TOL);
    test_expect_close("rmsnorm dweight (+= 0.5)", dw, gw, dim, FD_TOL);
    dsa_cpu_rmsnorm_backward(dx2, NULL, dy, x, w, rstd, n, dim); /* no weight gradient */
    assert_memory_equal(dx2, dx, sizeof(float) * (size_t)(n * dim));
    free(x), free(w), free(y), free(rstd), free(dy), free(dx), free(dx2), free(dw);
    free(xd), free(wd), free(rd), free(yd), free(gx), free(gw), free(rs);
}

static void test_rmsnorm(void **state) {
    (void)state;
    check_rmsnorm_fd(5, 33, 1);
    check_rmsnorm_fd(1, 7, 4);
    check_rmsnorm_fd(3, 2, 7); /* (dim 1 is degenerate: y = ±w, dx ~ eps, all cancellation) */

    /* Above the parallel threshold (odd width, more rows than the lanes and column
     * blocks): the closed form in fp64 (the formula the FD checks above validate), and
     * bit-equal results for 1 and 2 threads. */
    const int64_t n = 301, dim = 129;
    float *x = test_falloc(n * dim), *w = test_falloc(dim), *dy = test_falloc(n * dim), *y[2], *rstd[2], *dx[2], *dw[2];
    fill(x, n * dim, 50, 1.5), fill(w, dim, 51, 1), fill(dy, n * dim, 52, 1);
    for (int t = 0; t < 2; t++) {
        y[t] = test_falloc(n * dim), rstd[t] = test_falloc(n), dx[t] = test_falloc(n * dim), dw[t] = test_falloc(dim);
        for (int64_t j = 0; j < dim; j++) dw[t][j] = 0;
        int saved = threads_push(t + 1);
        dsa_cpu_rmsnorm_forward(y[t], rstd[t], x, w, n, dim, 1e-6f);
        dsa_cpu_rmsnorm_backward(dx[t], dw[t], dy, x, w, rstd[t], n, dim);
        omp_set_num_threads(saved);
    }
    assert_memory_equal(y[0], y[1], sizeof(float) * (size_t)(n * dim));
    assert_memory_equal(dx[0], dx[1], sizeof(float) * (size_t)(n * dim));
    assert_memory_equal(dw[0], dw[1], sizeof(float) * (size_t)dim);
    double *yd = test_dalloc(n * dim), *gx = test_dalloc(n * dim), *gw = test_dalloc(dim);
    for (int64_t i = 0; i < n; i++) {
        const float *xi = x + i * dim, *gi = dy + i * dim;
        double ss = 0, dot = 0;
        for (int64_t j = 0; j < dim; j++) ss += (double)xi[j] * xi[j], dot += (double)w[j] * gi[j] * xi[j];
        double r = 1 / sqrt(ss / dim + 1e-6);
        for (int64_t j = 0; j < dim; j++) {
            yd[i * dim + j] = w[j] * xi[j] * r;
            gx[i * dim + j] = r * (w[j] * gi[j] - xi[j] * r * r * dot / dim);
            gw[j] += gi[j] * xi[j] * r;
        }
    }
    test_expect_close("rmsnorm forward (301 x 129)", y[0], yd, n * dim, 1e-6);
    test_expect_close("rmsnorm dx (301 x 129)", dx[0], gx, n * dim, 1e-6);
    test_expect_close("rmsnorm dweight (301 x 129)", dw[0], gw, dim, 1e-6);
    for (int t = 0; t < 2; t++) free(y[t]), free(rstd[t]), free(dx[t]), free(dw[t]);
    free(x), free(w), free(dy), free(yd), free(gx), free(gw);
}

/* ---- SwiGLU --------------------------------------------------------------------------- */

typedef struct {
    const double *other;
    int64_t n;
    int which; /* 0: x is gate, 1: x is up */
} SwiCtx;
static void swi64(double *y, const double *x, const void *c) {
    const SwiCtx *s = c;
    for (int64_t i = 0; i < s->n; i++) {
        double g = s->which ? s->other[i] : x[i], u = s->which ? x[i] : s->other[i];
        y[i] = g / (1 + exp(-g)) * u;
    }
}

static void check_swiglu(int64_t n, uint64_t seed, int fd) {
    float *g = test_falloc(n), *u = test_falloc(n), *d = test_falloc(n), *out = test_falloc(n), *dg = test_falloc(n), *du = test_falloc(n);
    fill(g, n, seed, 3), fill(u, n, seed + 1, 1), fill(d, n, seed + 2, 1);
    const float extreme[] = {60, -60, 100, -100, 88.5f, -88.5f, 0, -0.0f, 1e-30f, -17};
    for (int64_t i = 0; i < n && i < 10; i++) g[i] = extreme[i]; /* saturated and e^x-overflowing gates */
    dsa_cpu_swiglu_forward(out, g, u, n);
    dsa_cpu_swiglu_backward(dg, du, d, g, u, n);
    double *gd = test_to_f64(g, n), *ud = test_to_f64(u, n), *rd = test_to_f64(d, n), *y = test_dalloc(n), *wg = test_dalloc(n), *wu = test_dalloc(n);
    SwiCtx c0 = {ud, n, 0}, c1 = {gd, n, 1};
    swi64(y, gd, &c0);
    test_expect_close("swiglu forward", out, y, n, 1e-6);
    if (fd) {
        finite_diff(wg, swi64, &c0, gd, n, rd, n);
        finite_diff(wu, swi64, &c1, ud, n, rd, n);
    } else { /* closed form, validated by the FD case */
        for (int64_t i = 0; i < n; i++) {
            double s = 1 / (1 + exp(-gd[i]));
            wu[i] = rd[i] * gd[i] * s;
            wg[i] = rd[i] * ud[i] * s * (1 + gd[i] * (1 - s));
        }
    }
    test_expect_close("swiglu dgate", dg, wg, n, FD_TOL);
    test_expect_close("swiglu dup", du, wu, n, FD_TOL);
    /* each element on its own (the relative check above is of the largest) */
    for (int64_t i = 0; i < n; i++)
        if (!(fabs(out[i] - y[i]) <= 1e-6 * fabs(y[i]) + 1e-30))
            fail_msg("swiglu forward %lld: got %.9g want %.9g", (long long)i, out[i], y[i]);
    free(g), free(u), free(d), free(out), free(dg), free(du), free(gd), free(ud), free(rd), free(y), free(wg), free(wu);
}

static void test_swiglu(void **state) {
    (void)state;
    check_swiglu(37, 6, 1);
    check_swiglu(1, 7, 1);
    check_swiglu(100003, 8, 0); /* parallel path, vector body and tail */
    /* in place: out may be the gate array */
    float g[5] = {-2, -0.5f, 0, 0.5f, 2}, u[5] = {1, 2, 3, 4, 5}, o[5];
    dsa_cpu_swiglu_forward(o, g, u, 5);
    dsa_cpu_swiglu_forward(g, g, u, 5);
    assert_memory_equal(o, g, sizeof o);
}

/* ---- cross-entropy -------------------------------------------------------------------- */

typedef struct {
    const int32_t *t;
    int64_t n, v;
} CeCtx;
static void ce64(double *y, const double *x, const void *c) {
    const CeCtx *e = c;
    for (int64_t i = 0; i < e->n; i++) {
        double m = -INFINITY, s = 0;
        for (int64_t j = 0; j < e->v; j++) m = fmax(m, x[i * e->v + j]);
        for (int64_t j = 0; j < e->v; j++) s += exp(x[i * e->v + j] - m);
        y[i] = e->t[i] < 0 ? 0 : m + log(s) - x[i * e->v + e->t[i]];
    }
}

static void test_cross_entropy(void **state) {
    (void)state;
    enum { N = 7, V = 37 };
    float logits[N * V], losses[N], lse[N], dl[N * V], dl2[N * V];
    int32_t t[N] = {3, 0, -1, 36, 5, 5, -7};
    fill(logits, N * V, 9, 3);
    /* large logits: e^x overflows fp32 above 88.7 and fp64 above 709 */
    for (int j = 0; j < V; j++) logits[4 * V + j] = 1000.0f + (float)(j % 3);
    for (int j = 0; j < V; j++) logits[5 * V + j] -= 1000.0f;
    logits[5 * V + 5] = -1080.0f; /* a very unlikely target */
    logits[1 * V + 2] = 80.0f;    /* one dominant logit, ±80 */
    logits[1 * V + 7] = -80.0f;
    double total = dsa_cpu_cross_entropy_forward(losses, lse, logits, t, N, V);
    double *ld = test_to_f64(logits, N * V), want[N], r[N], g[N * V];
    CeCtx c = {t, N, V};
    ce64(want, ld, &c);
    test_expect_close("cross-entropy losses", losses, want, N, 1e-6);
    for (int i = 0; i < N; i++) {
        double m = -INFINITY, s = 0;
        for (int j = 0; j < V; j++) m = fmax(m, ld[i * V + j]);
        for (int j = 0; j < V; j++) s += exp(ld[i * V + j] - m);
        if (!(fabs(lse[i] - (m + log(s))) <= 1e-6 * fabs(m + log(s))))
            fail_msg("lse[%d] = %.9g, want %.9g", i, lse[i], m + log(s));
    }
    double sum = 0;
    for (int i = 0; i < N; i++) sum += losses[i], r[i] = 0.25;
    assert_true(total == sum); /* the row-order double sum of the stored losses */
    assert_true(fabs(total - (want[0] + want[1] + want[3] + want[4] + want[5])) < 1e-5 * total);
    assert_true(losses[2] == 0.0f && losses[6] == 0.0f);

    dsa_cpu_cross_entropy_backward(dl2, logits, lse, t, 0.25f, N, V); /* out of place */
    memcpy(dl, logits, sizeof dl);
    dsa_cpu_cross_entropy_backward(dl, dl, lse, t, 0.25f, N, V); /* in place */
    assert_memory_equal(dl, dl2, sizeof dl);
    finite_diff(g, ce64, &c, ld, N * V, r, N);
    test_expect_close("cross-entropy dlogits (in place)", dl, g, N * V, FD_TOL);
    for (int j = 0; j < V; j++) assert_true(dl[2 * V + j] == 0.0f && dl[6 * V + j] == 0.0f);
    for (int i = 0; i < N * V; i++) assert_false(isnan(dl[i]) || isinf(dl[i]));
    free(ld);

    /* vocab 1: loss 0, gradient 0 */
    float one = 5.0f, l1, s1, d1;
    int32_t t0 = 0;
    assert_true(dsa_cpu_cross_entropy_forward(&l1, &s1, &one, &t0, 1, 1) == 0.0);
    assert_true(l1 == 0.0f && s1 == 5.0f);
    dsa_cpu_cross_entropy_backward(&d1, &one, &s1, &t0, 1.0f, 1, 1);
    assert_true(d1 == 0.0f);
}

static void test_cross_entropy_large(void **state) {
    (void)state;
    /* above the parallel threshold, vocab not a multiple of the lanes or the chunk */
    const int64_t n = 37, v = 2011;
    float *x = test_falloc(n * v), *loss[2], *lse[2], *d = test_falloc(n * v);
    int32_t *t = malloc(sizeof(int32_t) * n);
    fill(x, n * v, 70, 4);
    for (int64_t i = 0; i < n; i++) t[i] = i % 5 == 4 ? -1 : (int32_t)((i * 101) % v);
    double tot[2];
    for (int k = 0; k < 2; k++) {
        loss[k] = test_falloc(n), lse[k] = test_falloc(n);
        int saved = threads_push(k + 1);
        tot[k] = dsa_cpu_cross_entropy_forward(loss[k], lse[k], x, t, n, v);
        omp_set_num_threads(saved);
    }
    assert_memory_equal(&tot[0], &tot[1], sizeof(double));
    assert_memory_equal(loss[0], loss[1], sizeof(float) * (size_t)n);
    double *xd = test_to_f64(x, n * v), *want = test_dalloc(n), *gd = test_dalloc(n * v);
    CeCtx c = {t, n, v};
    ce64(want, xd, &c);
    test_expect_close("cross-entropy losses (37 x 2011)", loss[0], want, n, 1e-6);
    dsa_cpu_cross_entropy_backward(d, x, lse[0], t, 0.5f, n, v);
    for (int64_t i = 0; i < n; i++) {
        if (t[i] < 0) continue;
        double m = -INFINITY, s = 0;
        for (int64_t j = 0; j < v; j++) m = fmax(m, xd[i * v + j]);
        for (int64_t j = 0; j < v; j++) s += exp(xd[i * v + j] - m);
        for (int64_t j = 0; j < v; j++) gd[i * v + j] = 0.5 * (exp(xd[i * v + j] - m) / s - (j == t[i]));
    }
    test_expect_close("cross-entropy dlogits (37 x 2011)", d, gd, n * v, 1e-6);
    for (int k = 0; k < 2; k++) free(loss[k]), free(lse[k]);
    free(x), free(d), free(t), free(xd), free(want), free(gd);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_linear),
        cmocka_unit_test(test_linear_bf16),
        cmocka_unit_test(test_precision_tables),
        cmocka_unit_test(test_embedding),
        cmocka_unit_test(test_rmsnorm),
        cmocka_unit_test(test_swiglu),
        cmocka_unit_test(test_cross_entropy),
        cmocka_unit_test(test_cross_entropy_large),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
