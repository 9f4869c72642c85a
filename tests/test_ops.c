/* test_ops.c: the CPU backend's ops other than attention (kernels/cpu/) against plain
 * fp64 formulas written here.
 *
 *  - forwards: the fp32 op against a naive fp64 forward of the same inputs;
 *  - backwards: against central finite differences, in fp64, of the fp64 forward of the
 *    scalar loss Σ r ⊙ y (r random and fixed), step 1e-6. Tolerance 1e-5 of the largest
 *    |gradient| (FD_TOL): the fp64 differences are good to ~1e-9, the fp32 analytic
 *    gradients of these tiny shapes to ~1e-6;
 *  - the YaRN constants of DSA-SPEC §4.3 / §9 and the bounds core/config.c derives, for
 *    the V3.2 and tiny configs; the interleaved RoPE against complex multiplication, with
 *    the half-split layout failing the same check; strided RoPE leaves gaps untouched;
 *  - determinism across thread counts (bit-equal), odd sizes, in-place use, backend
 *    lookup errors.
 * Shapes above each op's parallel threshold are included so the OpenMP paths run.
 */
#include <math.h>
#include <omp.h>

#include "core/config.h"
#include "core/mem.h"
#include "core/rng.h"
#include "kernels/cpu/ops.h"
#include "kernels/rules/exp.h"
#include "test_util.h"

enum { FD_STEP_INV = 1000000 };
#define FD_TOL 1e-5 /* finite-difference checks, relative to max |gradient| */

static void fill(float *x, int64_t n, uint64_t seed, double scale) {
    for (int64_t i = 0; i < n; i++) x[i] = (float)(scale * dsa_rng_normal_at(seed, 1, (uint64_t)i));
}

/* An fp64 forward y = f(x) for one input vector under a fixed context. */
typedef void (*Fwd64)(double *y, const double *x, const void *ctx);

/* Central differences of Σ r ⊙ f(x) with respect to x, in fp64. */
static void finite_diff(double *grad, Fwd64 f, const void *ctx, const double *x0, int64_t nx, const double *r,
                        int64_t ny) {
    const double h = 1.0 / FD_STEP_INV;
    double *x = test_dalloc(nx), *y = test_dalloc(ny);
    memcpy(x, x0, sizeof(double) * (size_t)nx);
    for (int64_t i = 0; i < nx; i++) {
        double l[2];
        for (int s = 0; s < 2; s++) {
            x[i] = x0[i] + (s ? -h : h);
            f(y, x, ctx);
            l[s] = 0;
            for (int64_t j = 0; j < ny; j++) l[s] += r[j] * y[j];
        }
        x[i] = x0[i];
        grad[i] = (l[0] - l[1]) / (2 * h);
    }
    free(x), free(y);
}

/* Run with a given OpenMP thread count, restoring the previous one. */
static int threads_push(int n) {
    int saved = omp_get_max_threads();
    omp_set_num_threads(n);
    return saved;
}

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

/* ---- YaRN frequencies and RoPE --------------------------------------------------------- */

/* DSA-SPEC §4.3 in fp64. */
static void yarn64(double *f, int64_t d, double theta, double factor, double l_orig, double beta_fast,
                   double beta_slow) {
    double cf = d * log(l_orig / (2 * M_PI * beta_fast)) / (2 * log(theta));
    double cs = d * log(l_orig / (2 * M_PI * beta_slow)) / (2 * log(theta));
    double low = fmax(floor(cf), 0), high = fmin(ceil(cs), (double)(d - 1));
    if (low == high) high += 0.001;
    for (int64_t i = 0; i < d / 2; i++) {
        double base = pow(theta, -2.0 * (double)i / (double)d);
        double ramp = fmin(fmax((i - low) / (high - low), 0), 1);
        f[i] = base * (1 - ramp) + base / factor * ramp;
    }
}

/* The bounds our fp32 frequencies realize: i ≤ low keeps f_i (ramp 0: exactly the plain
 * bits), i ≥ high is exactly fp32(f_i / F) (ramp 1), and everything between is neither.
 * Fails when the frequencies do not have that shape. */
static void implied_bounds(const float *f, const float *plain, float factor, int64_t half, int *low, int *high) {
    *low = -1, *high = (int)half;
    for (int64_t i = 0; i < half; i++)
        if (f[i] == plain[i]) *low = (int)i;
    for (int64_t i = half - 1; i >= 0; i--)
        if (f[i] == plain[i] / factor) *high = (int)i;
    for (int64_t i = 0; i < half; i++) {
        if (i <= *low) assert_true(f[i] == plain[i]);
        else if (i >= *high) assert_true(f[i] == plain[i] / factor);
        else assert_true(f[i] < plain[i] && f[i] > plain[i] / factor);
    }
}

/* Every f'_i within 2e-7 of the fp64 formula (fp32 rounding of f_i, the division by F
 * and the blend: a few ulp). */
static void check_yarn_formula(int64_t d, double theta, double factor, double l_orig, double beta_fast,
                               double beta_slow) {
    float f[64];
    double want[64];
    assert_true(d / 2 <= 64);
    dsa_rope_frequencies(f, d, theta, "yarn", factor, (int64_t)l_orig, beta_fast, beta_slow);
    yarn64(want, d, theta, factor, l_orig, beta_fast, beta_slow);
    for (int64_t i = 0; i < d / 2; i++)
        if (!(fabs(f[i] - want[i]) <= 2e-7 * want[i]))
            fail_msg("yarn d %lld theta %g F %g L_orig %g: f'_%lld = %.9g, fp64 %.9g, rel %.3g", (long long)d, theta,
                     factor, l_orig, (long long)i, f[i], want[i], fabs(f[i] - want[i]) / want[i]);
}

/* YaRN frequencies of one config: bounds equal to core/config.c's, values as above. */
static void check_yarn_config(const char *path, int want_low, int want_high) {
    DsaConfig *cfg = dsa_calloc(1, sizeof *cfg);
    assert_ok(dsa_config_load(cfg, path, NULL, 0));
    const DsaModelConfig *m = &cfg->model;
    const DsaRopeScaling *rs = &m->rope_scaling;
    int low, high;
    dsa_model_yarn_bounds(m, &low, &high);
    assert_int_equal(low, want_low);
    assert_int_equal(high, want_high);
    const int64_t d = m->qk_rope_head_dim, half = d / 2;
    float f[64], plain[64];
    assert_true(half <= 64);
    dsa_rope_frequencies(f, d, m->rope_theta, rs->type, rs->factor, rs->original_max_position_embeddings,
                         rs->beta_fast, rs->beta_slow);
    dsa_rope_frequencies(plain, d, m->rope_theta, "", rs->factor, rs->original_max_position_embeddings,
                         rs->beta_fast, rs->beta_slow);
    int ilow, ihigh;
    implied_bounds(f, plain, (float)rs->factor, half, &ilow, &ihigh);
    assert_int_equal(ilow, low);
    assert_int_equal(ihigh, high);
    check_yarn_formula(d, m->rope_theta, rs->factor, (double)rs->original_max_position_embeddings, rs->beta_fast,
                       rs->beta_slow);
    dsa_free(cfg, sizeof *cfg);
}

static void test_yarn_frequencies(void **state) {
    (void)state;
    /* DSA-SPEC §4.3 / §9: low 10, high 23, f'_0 = 1, f'_31 = 10000^(−62/64) / 40 (1e-7 rel) */
    float f[32];
    dsa_rope_frequencies(f, 64, 10000.0, "yarn", 40.0, 4096, 32.0, 1.0);
    assert_true(f[0] == 1.0f);
    const double want31 = pow(10000.0, -62.0 / 64.0) / 40.0;
    if (!(fabs(f[31] - want31) <= 1e-7 * want31))
        fail_msg("f'_31 = %.9g, want %.9g (rel %.3g)", f[31], want31, fabs(f[31] - want31) / want31);
    check_yarn_config("configs/deepseek-v3.2.json", 10, 23);
    check_yarn_config("configs/tiny.json", 0, 3);
    /* beyond the shipped configs: high clamped at d − 1 (not d/2 − 1), low > 0, another θ */
    check_yarn_formula(16, 1e4, 8, 1e6, 32, 1);
    check_yarn_formula(16, 1e4, 8, 1e9, 32, 1);
    check_yarn_formula(32, 5e4, 16, 65536, 16, 2);
    check_yarn_formula(128, 1e6, 4, 8192, 32, 1);

    /* low == high (both corrections ≤ 0, clamped to 0): high becomes 0.001, so f'_0 = f_0
     * and every other frequency is divided by F. */
    float g[4], plain[4];
    dsa_rope_frequencies(g, 8, 10000.0, "yarn", 4.0, 4, 32.0, 1.0);
    dsa_rope_frequencies(plain, 8, 10000.0, NULL, 4.0, 4, 32.0, 1.0);
    assert_true(g[0] == plain[0]);
    for (int i = 1; i < 4; i++) assert_true(g[i] == plain[i] / 4.0f);
    /* no scaling: type "" or factor ≤ 1 gives f_i = θ^(−2i/d) */
    float p16[8], q16[8];
    dsa_rope_frequencies(p16, 16, 10000.0, "", 8.0, 128, 32.0, 1.0);
    dsa_rope_frequencies(q16, 16, 10000.0, "yarn", 1.0, 128, 32.0, 1.0);
    assert_memory_equal(p16, q16, sizeof p16);
    for (int i = 0; i < 8; i++) {
        double w = pow(10000.0, -2.0 * i / 16.0);
        assert_true(fabs(p16[i] - w) <= 1.2e-7 * w);
    }
}

static void test_rope_tables(void **state) {
    (void)state;
    enum { L = 300, DR = 16 };
    float freq[DR / 2], c[L * DR / 2], s[L * DR / 2];
    dsa_rope_frequencies(freq, DR, 10000.0, "yarn", 8.0, 128, 32.0, 1.0);
    dsa_rope_tables(c, s, freq, L, DR);
    double wc[L * DR / 2], ws[L * DR / 2];
    for (int t = 0; t < L; t++)
        for (int i = 0; i < DR / 2; i++) {
            const double phi = (double)((float)t * freq[i]); /* the fp32 angle of §4.3 */
            wc[t * DR / 2 + i] = cos(phi), ws[t * DR / 2 + i] = sin(phi);
        }
    test_expect_close("rope cos table", c, wc, L * DR / 2, 1e-7);
    test_expect_close("rope sin table", s, ws, L * DR / 2, 1e-7);
    for (int i = 0; i < DR / 2; i++) assert_true(c[i] == 1.0f && s[i] == 0.0f); /* t = 0 */
}

/* Interleaved RoPE over two sequences of L tokens, heads at a stride inside wider rows:
 * against complex multiplication (a + ib)·e^{iφ} on pairs (2i, 2i+1); the half-split
 * pairing (i, i + d/2) must fail the same check; gaps unchanged bit for bit; the backward
 * is the transpose and undoes the forward. */
static void check_rope(int64_t seqs, int64_t L, int64_t heads, int64_t dr, int64_t row_stride, int64_t head_stride,
                       int64_t offset, uint64_t seed) {
    const int64_t n = seqs * L, total = n * row_stride, half = dr / 2;
    float *freq = test_falloc(half), *c = test_falloc(L * half), *s = test_falloc(L * half);
    dsa_rope_frequencies(freq, dr, 10000.0, "yarn", 4.0, 16, 32.0, 1.0);
    dsa_rope_tables(c, s, freq, L, dr);
    float *x = test_falloc(total), *y = test_falloc(total), *g = test_falloc(total), *gt = test_falloc(total);
    fill(x, total, seed, 1), fill(g, total, seed + 1, 1);
    memcpy(y, x, sizeof(float) * (size_t)total);
    dsa_cpu_rope_forward(y + offset, c, s, n, L, heads, dr, row_stride, head_stride);
    double *want = test_to_f64(x, total), *neox = test_to_f64(x, total);
    char *touched = calloc((size_t)total, 1);
    for (int64_t r = 0; r < n; r++)
        for (int64_t h = 0; h < heads; h++)
            for (int64_t i = 0; i < half; i++) {
                const double phi = (double)((float)(r % L) * freq[i]);
                const int64_t o = offset + r * row_stride + h * head_stride;
                const double a = x[o + 2 * i], b = x[o + 2 * i + 1];
                want[o + 2 * i] = a * cos(phi) - b * sin(phi);
                want[o + 2 * i + 1] = a * sin(phi) + b * cos(phi);
                const double na = x[o + i], nb = x[o + i + half];
                neox[o + i] = na * cos(phi) - nb * sin(phi);
                neox[o + i + half] = na * sin(phi) + nb * cos(phi);
                touched[o + 2 * i] = touched[o + 2 * i + 1] = 1;
            }
    test_expect_close("rope interleaved vs complex multiplication", y, want, total, 1e-6);
    if (L > 1 && dr > 2) { /* (one pair, or position 0 only, cannot tell layouts apart) */
        const double swapped = test_rel_error(y, neox, total);
        if (!(swapped > 1e-2)) fail_msg("the half-split layout passes the interleaved check (rel %.3g)", swapped);
    }
    for (int64_t i = 0; i < total; i++)
        if (!touched[i] && memcmp(&x[i], &y[i], sizeof(float)))
            fail_msg("rope wrote outside its vectors: index %lld: %.9g -> %.9g", (long long)i, x[i], y[i]);

    /* backward = transpose: <R x, g> = <x, Rᵀ g>; and Rᵀ R x = x */
    memcpy(gt, g, sizeof(float) * (size_t)total);
    dsa_cpu_rope_backward(gt + offset, c, s, n, L, heads, dr, row_stride, head_stride);
    double lhs = 0, rhs = 0, norm = 0;
    for (int64_t i = 0; i < total; i++)
        lhs += (double)y[i] * g[i], rhs += (double)x[i] * gt[i], norm += fabs((double)x[i] * g[i]);
    if (!(fabs(lhs - rhs) <= 1e-6 * norm)) fail_msg("<Rx, g> = %.9g but <x, R^T g> = %.9g", lhs, rhs);
    for (int64_t i = 0; i < total; i++)
        if (!touched[i] && memcmp(&g[i], &gt[i], sizeof(float))) fail_msg("rope backward wrote outside its vectors");
    dsa_cpu_rope_backward(y + offset, c, s, n, L, heads, dr, row_stride, head_stride);
    double *xd = test_to_f64(x, total);
    test_expect_close("rope backward(forward(x)) = x", y, xd, total, 1e-6);
    free(freq), free(c), free(s), free(x), free(y), free(g), free(gt), free(want), free(neox), free(touched), free(xd);
}

static void test_rope(void **state) {
    (void)state;
    /* MLA's q layout: heads of qk_dim 12 with the rope part at offset 8 (a 4-wide gap
     * before each), rows padded to 40 */
    check_rope(2, 9, 3, 4, 40, 12, 8, 60);
    check_rope(1, 1, 1, 2, 2, 2, 0, 61);         /* one token at position 0, one pair */
    check_rope(3, 5, 1, 16, 21, 0, 5, 62);       /* kR: one shared head, odd row stride */
    check_rope(2, 300, 8, 16, 8 * 24, 24, 8, 63); /* above the parallel threshold */
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

/* ---- AdamW ---------------------------------------------------------------------------- */

/* torch.optim.AdamW in fp64, `steps` steps with the same gradient sequence. */
static void adamw64(double *p, double *m, double *v, const float *grads, int64_t count, int steps, double lr,
                    double b1, double b2, double eps, double wd) {
    for (int s = 1; s <= steps; s++) {
        const float *g = grads + (s - 1) * count;
        double bc1 = 1 - pow(b1, s), bc2 = 1 - pow(b2, s);
        for (int64_t i = 0; i < count; i++) {
            p[i] *= 1 - lr * wd;
            m[i] = b1 * m[i] + (1 - b1) * g[i];
            v[i] = b2 * v[i] + (1 - b2) * (double)g[i] * g[i];
            p[i] -= lr * (m[i] / bc1) / (sqrt(v[i] / bc2) + eps);
        }
    }
}

static void check_adamw(int64_t count, int steps, float wd, uint64_t seed) {
    const float lr = 0.05f, b1 = 0.9f, b2 = 0.95f, eps = 1e-8f;
    float *p = test_falloc(count), *m = test_falloc(count), *v = test_falloc(count), *g = test_falloc(count * steps);
    fill(p, count, seed, 1), fill(g, count * steps, seed + 1, 0.1);
    g[0] = 0; /* a zero gradient: the update is decay only */
    for (int64_t i = 0; i < count; i++) m[i] = v[i] = 0;
    double *pd = test_to_f64(p, count), *md = test_dalloc(count), *vd = test_dalloc(count), *p0 = test_to_f64(p, count);
    for (int s = 1; s <= steps; s++) {
        DsaAdamWParams hp = {.lr = lr, .beta1 = b1, .beta2 = b2, .eps = eps, .weight_decay = wd,
                             .bias_correction1 = (float)(1 - pow(b1, s)), .bias_correction2 = (float)(1 - pow(b2, s))};
        dsa_cpu_adamw_step(p, g + (s - 1) * count, m, v, count, &hp);
    }
    adamw64(pd, md, vd, g, count, steps, lr, b1, b2, eps, wd);
    /* compare the change of p (≈ lr per step), not p, so the check sees the update */
    float *dp = test_falloc(count);
    double *dpd = test_dalloc(count);
    for (int64_t i = 0; i < count; i++) dp[i] = (float)((double)p[i] - p0[i]), dpd[i] = pd[i] - p0[i];
    char what[96];
    snprintf(what, sizeof what, "adamw param change (%d steps, wd %g, n %lld)", steps, wd, (long long)count);
    test_expect_close(what, dp, dpd, count, 1e-5);
    snprintf(what, sizeof what, "adamw m (%d steps)", steps);
    test_expect_close(what, m, md, count, 1e-6);
    snprintf(what, sizeof what, "adamw v (%d steps)", steps);
    test_expect_close(what, v, vd, count, 1e-6);
    if (steps == 1) assert_true(fabs(dp[0] - (-(double)lr * wd * p0[0])) <= 1e-6 * fabs(p0[0]) + 1e-12);
    free(p), free(m), free(v), free(g), free(pd), free(md), free(vd), free(p0), free(dp), free(dpd);
}

static void test_adamw(void **state) {
    (void)state;
    for (int wd = 0; wd < 2; wd++) {
        check_adamw(37, 1, wd ? 0.1f : 0.0f, 80);
        check_adamw(37, 3, wd ? 0.1f : 0.0f, 82);
    }
    check_adamw(1, 3, 0.1f, 84);
    check_adamw(70001, 3, 0.1f, 86); /* parallel path */
}

/* ---- vector helpers ------------------------------------------------------------------- */

static void test_sum_squares(void **state) {
    (void)state;
    const int64_t n = 3 * 4096 * 70 + 17;
    float *x = test_falloc(n);
    fill(x, n, 15, 1);
    double r[3];
    for (int t = 0; t < 3; t++) {
        int saved = threads_push(t + 1);
        r[t] = dsa_cpu_sum_squares(x, n);
        omp_set_num_threads(saved);
    }
    assert_memory_equal(&r[0], &r[1], sizeof(double));
    assert_memory_equal(&r[0], &r[2], sizeof(double));
    long double want = 0;
    for (int64_t i = 0; i < n; i++) want += (long double)x[i] * x[i];
    assert_true(fabsl(r[0] - want) < 1e-12L * want);
    const int64_t sizes[] = {0, 1, 7, 16, 17, 4095, 4096, 4097};
    for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
        double w = 0;
        for (int64_t i = 0; i < sizes[k]; i++) w += (double)x[i] * x[i];
        if (!(fabs(dsa_cpu_sum_squares(x, sizes[k]) - w) <= 1e-13 * w))
            fail_msg("sum_squares(%lld) = %.17g, want %.17g", (long long)sizes[k], dsa_cpu_sum_squares(x, sizes[k]), w);
    }
    free(x);
}

static void test_scale_add(void **state) {
    (void)state;
    const int64_t sizes[] = {1, 7, 33, 100003}; /* the last above the parallel threshold */
    for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
        const int64_t n = sizes[k];
        float *x = test_falloc(n), *x0 = test_falloc(n), *y = test_falloc(n), *y0 = test_falloc(n);
        fill(x, n, 90 + k, 1), fill(y, n, 95 + k, 1);
        memcpy(x0, x, sizeof(float) * (size_t)n), memcpy(y0, y, sizeof(float) * (size_t)n);
        dsa_cpu_add(y, x, n);
        for (int64_t i = 0; i < n; i++)
            if (y[i] != y0[i] + x[i]) fail_msg("add[%lld]: %.9g != %.9g", (long long)i, y[i], y0[i] + x[i]);
        dsa_cpu_add(x, x, n);       /* in place: x ← 2x (exact) */
        dsa_cpu_scale(x, 0.25f, n); /* x ← x / 4 (exact) */
        for (int64_t i = 0; i < n; i++)
            if (x[i] != x0[i] * 0.5f) fail_msg("add in place + scale [%lld]: %.9g != %.9g", (long long)i, x[i], x0[i] * 0.5f);
        dsa_cpu_scale(y, 3.0f, n);
        for (int64_t i = 0; i < n; i++)
            if (y[i] != (y0[i] + x0[i]) * 3.0f) fail_msg("scale[%lld]", (long long)i);
        free(x), free(x0), free(y), free(y0);
    }
}

/* The vectorized exp of kernels/rules/exp.h: within 2 ulp of exp() over [−87.3, 0] and beyond, 0
 * below FLT_MIN, NaN for NaN. */
static void test_vexp(void **state) {
    (void)state;
    double worst = 0, at = 0;
    for (int64_t k = 0; k <= 2000000; k++) {
        const float x = (float)(-87.3 + 87.3 * 1.04 * (double)k / 2000000.0); /* [−87.3, 3.5] */
        const double want = exp((double)x);
        const double ulp = ldexp(1.0, ilogb(want) - 23);
        const double e = fabs(dsa_vexpf(x) - want) / ulp;
        if (e > worst) worst = e, at = x;
    }
    if (!(worst <= 2.0)) fail_msg("dsa_vexpf: %.2f ulp at x = %.9g", worst, at);
    assert_true(dsa_vexpf(0.0f) == 1.0f);
    assert_true(dsa_vexpf(-87.4f) == 0.0f && dsa_vexpf(-1e30f) == 0.0f && dsa_vexpf(-INFINITY) == 0.0f);
    assert_true(isnan(dsa_vexpf(NAN)));
    assert_true(fabs(dsa_vexpf(88.0f) - exp(88.0)) <= 2 * ldexp(1.0, ilogb(exp(88.0)) - 23));
}

/* ---- backend -------------------------------------------------------------------------- */

static void test_backend(void **state) {
    (void)state;
    const DsaBackend *be = NULL;
    assert_ok(dsa_backend_get("cpu", &be));
    assert_string_equal(be->name, "cpu");
    assert_ptr_equal(be, dsa_backend_cpu());
    assert_ptr_equal(be->linear_forward, dsa_cpu_linear_forward);
    assert_ptr_equal(be->rope_backward, dsa_cpu_rope_backward);
    assert_ptr_equal(be->cross_entropy_backward, dsa_cpu_cross_entropy_backward);
    assert_ptr_equal(be->adamw_step, dsa_cpu_adamw_step);
    assert_fails_with(dsa_backend_get("cuda", &be), DSA_ERR_DEVICE, "not built yet");
    assert_null(be);
    assert_fails_with(dsa_backend_get("tpu", &be), DSA_ERR_CONFIG, "\"cpu\" and \"cuda\"");
    assert_fails_with(dsa_backend_get("", &be), DSA_ERR_CONFIG, "device \"\" is unknown");
    assert_fails_with(dsa_backend_get("CPU", &be), DSA_ERR_CONFIG, "unknown");
    /* every entry of the table is filled */
    be = dsa_backend_cpu();
    const void *const *slots = (const void *const *)((const char *)be + sizeof(const char *));
    size_t n = (sizeof *be - sizeof(const char *)) / sizeof(void *);
    for (size_t i = 0; i < n; i++) assert_non_null(slots[i]);
    /* threads: an explicit count, then 0 = every core */
    int saved = dsa_backend_cpu_threads();
    dsa_backend_cpu_set_threads(1);
    assert_int_equal(dsa_backend_cpu_threads(), 1);
    dsa_backend_cpu_set_threads(0);
    assert_int_equal(dsa_backend_cpu_threads(), omp_get_num_procs());
    dsa_backend_cpu_set_threads(saved);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_linear),        cmocka_unit_test(test_embedding),
        cmocka_unit_test(test_rmsnorm),       cmocka_unit_test(test_yarn_frequencies),
        cmocka_unit_test(test_rope_tables),   cmocka_unit_test(test_rope),
        cmocka_unit_test(test_swiglu),        cmocka_unit_test(test_cross_entropy),
        cmocka_unit_test(test_cross_entropy_large), cmocka_unit_test(test_adamw),
        cmocka_unit_test(test_sum_squares),   cmocka_unit_test(test_scale_add),
        cmocka_unit_test(test_vexp),          cmocka_unit_test(test_backend),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
