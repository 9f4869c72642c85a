/* test_ops.c: the CPU backend's ops other than attention (kernels/cpu/ files) against
 * plain fp64 formulas: forward values, and every backward against central finite
 * differences in fp64 of the fp64 forward of loss = Σ r ⊙ y; the YaRN constants of
 * DSA-SPEC §4.3 and §9; the interleaved RoPE against complex multiplication (and a
 * half-split rotation failing that check); deterministic reductions; backend lookup. */
#include <math.h>
#include <omp.h>

#include "core/config.h"
#include "core/mem.h"
#include "core/rng.h"
#include "kernels/cpu/ops.h"
#include "test_util.h"

static void fill(float *x, int64_t n, uint64_t seed, double scale) {
    for (int64_t i = 0; i < n; i++) x[i] = (float)(scale * dsa_rng_normal_at(seed, 1, (uint64_t)i));
}

/* A fp64 forward: y = f(x) for one input vector under a fixed context. */
typedef void (*Fwd64)(double *y, const double *x, const void *ctx);

/* Central differences of Σ r ⊙ f(x) with respect to x, in fp64. */
static void finite_diff(double *grad, Fwd64 f, const void *ctx, const double *x0, int64_t nx, const double *r,
                        int64_t ny) {
    double *x = malloc(8 * nx), *y = malloc(8 * ny);
    memcpy(x, x0, 8 * nx);
    for (int64_t i = 0; i < nx; i++) {
        double l[2];
        for (int s = 0; s < 2; s++) {
            x[i] = x0[i] + (s ? -1e-6 : 1e-6);
            f(y, x, ctx);
            l[s] = 0;
            for (int64_t j = 0; j < ny; j++) l[s] += r[j] * y[j];
        }
        x[i] = x0[i];
        grad[i] = (l[0] - l[1]) / 2e-6;
    }
    free(x), free(y);
}

static double *widen(const float *x, int64_t n) {
    double *d = malloc(8 * n);
    for (int64_t i = 0; i < n; i++) d[i] = x[i];
    return d;
}

/* ---- RMSNorm ------------------------------------------------------------------------ */

typedef struct {
    int64_t n, dim;
    const double *w; /* NULL: x holds the weight and w_x the input */
    const double *x_fixed;
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
    rms64(y, n->x_fixed, w, n->n, n->dim);
}

static void test_rmsnorm(void **state) {
    (void)state;
    enum { N = 5, DIM = 33 };
    float x[N * DIM], w[DIM], y[N * DIM], rstd[N], dy[N * DIM], dx[N * DIM], dw[DIM];
    fill(x, N * DIM, 1, 2), fill(w, DIM, 2, 1), fill(dy, N * DIM, 3, 1);
    dsa_cpu_rmsnorm_forward(y, rstd, x, w, N, DIM, 1e-6f);
    double *xd = widen(x, N * DIM), *wd = widen(w, DIM), *rd = widen(dy, N * DIM), yd[N * DIM], gx[N * DIM], gw[DIM];
    rms64(yd, xd, wd, N, DIM);
    test_expect_close("rmsnorm forward", y, yd, N * DIM, 1e-6);
    for (int i = 0; i < DIM; i++) dw[i] = 0.5f; /* accumulates */
    dsa_cpu_rmsnorm_backward(dx, dw, dy, x, w, rstd, N, DIM);
    NormCtx c = {N, DIM, wd, xd};
    finite_diff(gx, rms_wrt_x, &c, xd, N * DIM, rd, N * DIM);
    finite_diff(gw, rms_wrt_w, &c, wd, DIM, rd, N * DIM);
    for (int i = 0; i < DIM; i++) gw[i] += 0.5;
    test_expect_close("rmsnorm dx", dx, gx, N * DIM, 1e-5);
    test_expect_close("rmsnorm dweight", dw, gw, DIM, 1e-5);
    free(xd), free(wd), free(rd);
}

/* ---- RoPE --------------------------------------------------------------------------- */

static void test_yarn_constants(void **state) {
    (void)state;
    float f[32];
    dsa_rope_frequencies(f, 64, 10000.0, "yarn", 40.0, 4096, 32.0, 1.0);
    assert_true(fabs(f[0] - 1.0) < 1e-7);
    double want31 = pow(10000.0, -62.0 / 64.0) / 40.0;
    assert_true(fabs(f[31] - want31) / want31 < 1e-6);
    for (int i = 0; i <= 10; i++) assert_true(fabsf(f[i] - 1.0f / powf(10000.0f, (float)(2 * i) / 64.0f)) == 0.0f);
    for (int i = 23; i < 32; i++) {
        float base = 1.0f / powf(10000.0f, (float)(2 * i) / 64.0f);
        assert_true(fabs(f[i] - base / 40.0) <= 1e-7 * base);
    }
    /* the bounds agree with the config's own derivation (core/config.c) */
    DsaConfig *cfg = dsa_calloc(1, sizeof *cfg);
    assert_ok(dsa_config_load(cfg, "configs/deepseek-v3.2.json", NULL, 0));
    int low, high;
    dsa_model_yarn_bounds(&cfg->model, &low, &high);
    assert_int_equal(low, 10);
    assert_int_equal(high, 23);
    dsa_free(cfg, sizeof *cfg);
    /* no scaling: plain RoPE */
    dsa_rope_frequencies(f, 16, 10000.0, "", 8.0, 128, 32.0, 1.0);
    assert_true(f[7] == 1.0f / powf(10000.0f, 14.0f / 16.0f));
}

static void test_rope_interleaved_and_transpose(void **state) {
    (void)state;
    enum { L = 9, HEADS = 3, DR = 8, STRIDE = 40, HSTRIDE = 12 };
    float freq[DR / 2], c[L * DR / 2], s[L * DR / 2];
    dsa_rope_frequencies(freq, DR, 10000.0, "yarn", 4.0, 4, 32.0, 1.0);
    dsa_rope_tables(c, s, freq, L, DR);
    const int64_t n = 2 * L; /* two sequences: position = row mod L */
    float x[2 * L * STRIDE], y[2 * L * STRIDE];
    fill(x, n * STRIDE, 4, 1);
    memcpy(y, x, sizeof x);
    dsa_cpu_rope_forward(y, c, s, n, L, HEADS, DR, STRIDE, HSTRIDE);
    double *want = malloc(8 * n * STRIDE), *half = malloc(8 * n * STRIDE);
    for (int64_t i = 0; i < n * STRIDE; i++) want[i] = half[i] = x[i];
    for (int64_t r = 0; r < n; r++)
        for (int h = 0; h < HEADS; h++)
            for (int i = 0; i < DR / 2; i++) {
                double phi = (double)((float)(r % L) * freq[i]);
                int64_t o = r * STRIDE + h * HSTRIDE;
                /* (a + ib) · e^{iφ} on the pair (2i, 2i+1) */
                double a = x[o + 2 * i], b = x[o + 2 * i + 1];
                want[o + 2 * i] = a * cos(phi) - b * sin(phi);
                want[o + 2 * i + 1] = a * sin(phi) + b * cos(phi);
                double ha = x[o + i], hb = x[o + i + DR / 2]; /* the half-split layout */
                half[o + i] = ha * cos(phi) - hb * sin(phi);
                half[o + i + DR / 2] = ha * sin(phi) + hb * cos(phi);
            }
    test_expect_close("rope interleaved (gaps untouched)", y, want, n * STRIDE, 1e-6);
    double worst = 0;
    for (int64_t i = 0; i < n * STRIDE; i++) worst = fmax(worst, fabs(y[i] - half[i]));
    assert_true(worst > 1e-2); /* swapping the layout must fail the check above */
    /* backward = transpose: <R x, g> = <x, Rᵀ g> */
    float g[2 * L * STRIDE], gt[2 * L * STRIDE];
    fill(g, n * STRIDE, 5, 1);
    memcpy(gt, g, sizeof g);
    dsa_cpu_rope_backward(gt, c, s, n, L, HEADS, DR, STRIDE, HSTRIDE);
    double lhs = 0, rhs = 0;
    for (int64_t i = 0; i < n * STRIDE; i++) lhs += (double)y[i] * g[i], rhs += (double)x[i] * gt[i];
    assert_true(fabs(lhs - rhs) < 1e-4 * fabs(lhs) + 1e-5);
    free(want), free(half);
}

/* ---- SwiGLU, cross-entropy, embedding, linear ---------------------------------------- */

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

static void test_swiglu(void **state) {
    (void)state;
    enum { N = 37 };
    float g[N], u[N], out[N], d[N], dg[N], du[N];
    fill(g, N, 6, 3), fill(u, N, 7, 1), fill(d, N, 8, 1);
    g[0] = 60, g[1] = -60; /* saturated sigmoid */
    dsa_cpu_swiglu_forward(out, g, u, N);
    dsa_cpu_swiglu_backward(dg, du, d, g, u, N);
    double *gd = widen(g, N), *ud = widen(u, N), *rd = widen(d, N), y[N], wg[N], wu[N];
    SwiCtx c0 = {ud, N, 0}, c1 = {gd, N, 1};
    swi64(y, gd, &c0);
    test_expect_close("swiglu forward", out, y, N, 1e-6);
    finite_diff(wg, swi64, &c0, gd, N, rd, N);
    finite_diff(wu, swi64, &c1, ud, N, rd, N);
    test_expect_close("swiglu dgate", dg, wg, N, 1e-5);
    test_expect_close("swiglu dup", du, wu, N, 1e-5);
    free(gd), free(ud), free(rd);
}

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
    enum { N = 6, V = 11 };
    float logits[N * V], losses[N], lse[N], dl[N * V];
    int32_t t[N] = {3, 0, -1, 10, 5, 5};
    fill(logits, N * V, 9, 3);
    logits[V + 2] = 80.0f, logits[4 * V + 1] = -80.0f; /* no overflow */
    double total = dsa_cpu_cross_entropy_forward(losses, lse, logits, t, N, V);
    double *ld = widen(logits, N * V), want[N], r[N], g[N * V];
    CeCtx c = {t, N, V};
    ce64(want, ld, &c);
    test_expect_close("cross-entropy losses", losses, want, N, 1e-6);
    double sum = 0;
    for (int i = 0; i < N; i++) sum += want[i], r[i] = 0.25;
    assert_true(fabs(total - sum) < 1e-5 * sum);
    assert_true(losses[2] == 0.0f);
    memcpy(dl, logits, sizeof dl);
    dsa_cpu_cross_entropy_backward(dl, dl, lse, t, 0.25f, N, V); /* in place */
    finite_diff(g, ce64, &c, ld, N * V, r, N);
    test_expect_close("cross-entropy dlogits (in place)", dl, g, N * V, 1e-5);
    for (int j = 0; j < V; j++) assert_true(dl[2 * V + j] == 0.0f);
    free(ld);
}

static void test_embedding_and_linear(void **state) {
    (void)state;
    enum { N = 7, D = 5, V = 4, O = 3 };
    float table[V * D], out[N * D], dout[N * D], dtable[V * D] = {0};
    int32_t ids[N] = {1, 3, 1, 0, 1, 2, 3};
    fill(table, V * D, 10, 1), fill(dout, N * D, 11, 1);
    dsa_cpu_embedding_forward(out, ids, table, N, D);
    dsa_cpu_embedding_backward(dtable, dout, ids, N, D);
    for (int i = 0; i < N; i++) assert_memory_equal(out + i * D, table + ids[i] * D, sizeof(float) * D);
    double want[V * D] = {0};
    for (int i = 0; i < N; i++)
        for (int j = 0; j < D; j++) want[ids[i] * D + j] += dout[i * D + j];
    test_expect_close("embedding backward (repeated ids)", dtable, want, V * D, 1e-6);

    float x[N * D], w[O * D], y[N * O], dy[N * O], dx[N * D], dw[O * D];
    fill(x, N * D, 12, 1), fill(w, O * D, 13, 1), fill(dy, N * O, 14, 1);
    for (int i = 0; i < O * D; i++) dw[i] = 1.0f;
    dsa_cpu_linear_forward(y, x, w, N, D, O);
    dsa_cpu_linear_backward(dx, dw, dy, x, w, N, D, O);
    double wy[N * O] = {0}, wdx[N * D] = {0}, wdw[O * D];
    for (int i = 0; i < O * D; i++) wdw[i] = 1.0;
    for (int n = 0; n < N; n++)
        for (int o = 0; o < O; o++)
            for (int i = 0; i < D; i++) {
                wy[n * O + o] += (double)x[n * D + i] * w[o * D + i];
                wdx[n * D + i] += (double)dy[n * O + o] * w[o * D + i];
                wdw[o * D + i] += (double)dy[n * O + o] * x[n * D + i];
            }
    test_expect_close("linear forward", y, wy, N * O, 1e-6);
    test_expect_close("linear dx", dx, wdx, N * D, 1e-6);
    test_expect_close("linear dw (accumulated)", dw, wdw, O * D, 1e-6);
    float dw2[O * D] = {0};
    dsa_cpu_linear_backward(NULL, dw2, dy, x, w, N, D, O); /* dx not needed */
    dsa_cpu_linear_backward(dx, NULL, dy, x, w, N, D, O);  /* dw not needed */
}

static void test_sum_squares_deterministic(void **state) {
    (void)state;
    int64_t n = 3 * 4096 * 70 + 17;
    float *x = malloc(4 * n);
    fill(x, n, 15, 1);
    int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    double a = dsa_cpu_sum_squares(x, n);
    omp_set_num_threads(2);
    double b = dsa_cpu_sum_squares(x, n);
    omp_set_num_threads(saved);
    assert_memory_equal(&a, &b, sizeof a);
    double want = 0;
    for (int64_t i = 0; i < n; i++) want += (double)x[i] * x[i];
    assert_true(fabs(a - want) < 1e-9 * want);
    free(x);
}

static void test_backend_lookup(void **state) {
    (void)state;
    const DsaBackend *be = NULL;
    assert_ok(dsa_backend_get("cpu", &be));
    assert_string_equal(be->name, "cpu");
    assert_ptr_equal(be, dsa_backend_cpu());
    assert_fails_with(dsa_backend_get("cuda", &be), DSA_ERR_DEVICE, "not built yet");
    assert_fails_with(dsa_backend_get("tpu", &be), DSA_ERR_CONFIG, "\"cpu\" and \"cuda\"");
    /* every entry of the table is filled */
    be = dsa_backend_cpu();
    const void *const *slots = (const void *const *)((const char *)be + sizeof(const char *));
    size_t n = (sizeof *be - sizeof(const char *)) / sizeof(void *);
    for (size_t i = 0; i < n; i++) assert_non_null(slots[i]);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rmsnorm),
        cmocka_unit_test(test_yarn_constants),
        cmocka_unit_test(test_rope_interleaved_and_transpose),
        cmocka_unit_test(test_swiglu),
        cmocka_unit_test(test_cross_entropy),
        cmocka_unit_test(test_embedding_and_linear),
        cmocka_unit_test(test_sum_squares_deterministic),
        cmocka_unit_test(test_backend_lookup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
