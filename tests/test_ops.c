/* test_ops.c: the CPU backend's RoPE, AdamW, vector helpers and backend table
 * (kernels/cpu/, kernels/backend.h) against plain fp64 formulas written here:
 *  - the YaRN constants of DSA-SPEC §4.3 / §9 and the bounds core/config.c derives, for
 *    the V3.2 and tiny configs; the interleaved RoPE against complex multiplication, with
 *    the half-split layout failing the same check; strided RoPE leaves gaps untouched;
 *  - the AdamW step against torch.optim.AdamW in fp64; sum of squares, scale, add and
 *    the vectorized exp against fp64;
 *  - determinism across thread counts (bit-equal), backend lookup errors and the thread
 *    control.
 * The layer ops (linear, embedding, RMSNorm, SwiGLU, cross-entropy) are in
 * test_layer_ops.c.
 */
#include <math.h>
#include <stddef.h>

#include "core/config.h"
#include "core/mem.h"
#include "kernels/cpu/ops.h"
#include "kernels/device.h"
#include "kernels/rules/exp.h"
#include "test_ops_util.h"

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
    /* "cuda": the table where this build has it and a GPU is visible, else the device
     * query's reason (no driver, no device, or no CUDA in this build) */
    DsaCudaInfo cuda;
    dsa_device_cuda_query(&cuda);
    if (cuda.compiled && cuda.device_count > 0 && cuda.cc_major >= 9) {
        assert_ok(dsa_backend_get("cuda", &be));
        assert_string_equal(be->name, "cuda");
    } else {
        assert_fails_with(dsa_backend_get("cuda", &be), DSA_ERR_DEVICE, "device \"cuda\" is not available");
        test_msg_has(cuda.device_count > 0 ? "compute capability" : cuda.why_unavailable, "use \"cpu\"", NULL);
        assert_null(be);
    }
    assert_fails_with(dsa_backend_get("tpu", &be), DSA_ERR_CONFIG, "\"cpu\" and \"cuda\"");
    assert_fails_with(dsa_backend_get("", &be), DSA_ERR_CONFIG, "device \"\" is unknown");
    assert_fails_with(dsa_backend_get("CPU", &be), DSA_ERR_CONFIG, "unknown");
    /* every entry of the table is filled, but fp32_table (NULL: this is an fp32 table) */
    be = dsa_backend_cpu();
    const void *const *slots = (const void *const *)((const char *)be + sizeof(const char *));
    size_t n = (sizeof *be - sizeof(const char *)) / sizeof(void *);
    const size_t fp32_slot = (offsetof(DsaBackend, fp32_table) - sizeof(const char *)) / sizeof(void *);
    for (size_t i = 0; i < n; i++)
        if (i != fp32_slot) assert_non_null(slots[i]);
    assert_null(be->fp32_table);
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
        cmocka_unit_test(test_yarn_frequencies),
        cmocka_unit_test(test_rope_tables),
        cmocka_unit_test(test_rope),
        cmocka_unit_test(test_adamw),
        cmocka_unit_test(test_sum_squares),
        cmocka_unit_test(test_scale_add),
        cmocka_unit_test(test_vexp),
        cmocka_unit_test(test_backend),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
