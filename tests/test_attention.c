/* test_attention.c: the tiled causal attention of the CPU backend (kernels/cpu/attention.c)
 * against a naive fp64 reference that materializes the L×L scores (fine on small L):
 * outputs, log-sum-exp and all three gradients on irregular shapes across tile edges,
 * central finite differences of the reference (so the analytic reference is itself
 * checked), bit-identical results for 1 and 2 threads, and the memory rule (no L×L
 * allocation at L = 4096). */
#include <math.h>
#include <omp.h>

#include "core/mem.h"
#include "core/rng.h"
#include "kernels/cpu/ops.h"
#include "test_util.h"

typedef struct {
    int64_t B, L, H, dq, dv;
} Shape;

static int64_t nq_(const Shape *s) { return s->B * s->L * s->H * s->dq; }
static int64_t nv_(const Shape *s) { return s->B * s->L * s->H * s->dv; }

static void fill(float *x, int64_t n, uint64_t seed, double scale) {
    for (int64_t i = 0; i < n; i++) x[i] = (float)(scale * dsa_rng_normal_at(seed, 0, (uint64_t)i));
}

/* Naive fp64 attention and its gradients (dq, dk, dv may be NULL for forward only). */
static void reference(const Shape *s, double scale, const float *q, const float *k, const float *v, const float *dout,
                      double *out, double *lse, double *dq, double *dk, double *dv) {
    const int64_t L = s->L, H = s->H;
    double *p = malloc(sizeof(double) * (size_t)L);
    if (dq) {
        memset(dq, 0, sizeof(double) * (size_t)nq_(s));
        memset(dk, 0, sizeof(double) * (size_t)nq_(s));
        memset(dv, 0, sizeof(double) * (size_t)nv_(s));
    }
    for (int64_t b = 0; b < s->B; b++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t t = 0; t < L; t++) {
                const float *qt = q + ((b * L + t) * H + h) * s->dq;
                double m = -INFINITY, sum = 0;
                for (int64_t u = 0; u <= t; u++) {
                    const float *ku = k + ((b * L + u) * H + h) * s->dq;
                    double a = 0;
                    for (int64_t c = 0; c < s->dq; c++) a += (double)qt[c] * ku[c];
                    p[u] = a * scale;
                    m = fmax(m, p[u]);
                }
                for (int64_t u = 0; u <= t; u++) sum += exp(p[u] - m);
                double l = m + log(sum);
                lse[(b * H + h) * L + t] = l;
                double *o = out + ((b * L + t) * H + h) * s->dv;
                for (int64_t c = 0; c < s->dv; c++) o[c] = 0;
                for (int64_t u = 0; u <= t; u++) {
                    p[u] = exp(p[u] - l);
                    for (int64_t c = 0; c < s->dv; c++) o[c] += p[u] * v[((b * L + u) * H + h) * s->dv + c];
                }
                if (!dq) continue;
                const float *g = dout + ((b * L + t) * H + h) * s->dv;
                double D = 0;
                for (int64_t c = 0; c < s->dv; c++) D += g[c] * o[c];
                for (int64_t u = 0; u <= t; u++) {
                    const int64_t ku = (b * L + u) * H + h;
                    double dp = 0;
                    for (int64_t c = 0; c < s->dv; c++) {
                        dp += g[c] * (double)v[ku * s->dv + c];
                        dv[ku * s->dv + c] += p[u] * g[c];
                    }
                    double ds = p[u] * (dp - D) * scale;
                    for (int64_t c = 0; c < s->dq; c++) {
                        dq[((b * L + t) * H + h) * s->dq + c] += ds * k[ku * s->dq + c];
                        dk[ku * s->dq + c] += ds * qt[c];
                    }
                }
            }
    free(p);
}

static void check_shape(Shape s) {
    const double scale = 1.0 / sqrt((double)s.dq);
    DsaAttnShape as = {s.B, s.L, s.H, s.dq, s.dv, (float)scale};
    int64_t nq = nq_(&s), nv = nv_(&s), nl = s.B * s.H * s.L;
    float *q = malloc(4 * nq), *k = malloc(4 * nq), *v = malloc(4 * nv), *g = malloc(4 * nv);
    float *out = malloc(4 * nv), *lse = malloc(4 * nl), *dq = malloc(4 * nq), *dk = malloc(4 * nq), *dv = malloc(4 * nv);
    float *scratch = malloc(4 * dsa_cpu_attention_scratch_floats(&as));
    double *ro = malloc(8 * nv), *rl = malloc(8 * nl), *rdq = malloc(8 * nq), *rdk = malloc(8 * nq), *rdv = malloc(8 * nv);
    fill(q, nq, 1, 1.5), fill(k, nq, 2, 1.5), fill(v, nv, 3, 1), fill(g, nv, 4, 1);
    dsa_cpu_attention_forward(out, lse, q, k, v, &as);
    dsa_cpu_attention_backward(dq, dk, dv, g, out, lse, q, k, v, &as, scratch);
    reference(&s, scale, q, k, v, g, ro, rl, rdq, rdk, rdv);
    char what[128];
    snprintf(what, sizeof what, "B%lld L%lld H%lld d%lld/%lld out", (long long)s.B, (long long)s.L, (long long)s.H,
             (long long)s.dq, (long long)s.dv);
    test_expect_close(what, out, ro, nv, 1e-5);
    test_expect_close("lse", lse, rl, nl, 1e-5);
    test_expect_close("dq", dq, rdq, nq, 1e-4);
    test_expect_close("dk", dk, rdk, nq, 1e-4);
    test_expect_close("dv", dv, rdv, nv, 1e-4);
    free(q), free(k), free(v), free(g), free(out), free(lse), free(dq), free(dk), free(dv), free(scratch);
    free(ro), free(rl), free(rdq), free(rdk), free(rdv);
}

static void test_matches_reference(void **state) {
    (void)state;
    const int64_t lens[] = {1, 7, 16, 17, 33, 63, 64, 65, 100, 129, 257};
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) check_shape((Shape){1, lens[i], 1, 48, 32});
    check_shape((Shape){2, 100, 3, 5, 3});
    check_shape((Shape){2, 65, 2, 48, 32});
    check_shape((Shape){1, 130, 4, 12, 20});
}

/* The fp64 reference gradient equals central finite differences of the fp64 forward
 * of loss = Σ g ⊙ out, so the comparison above checks against the true derivative. */
static void test_reference_gradient_by_finite_differences(void **state) {
    (void)state;
    Shape s = {1, 9, 2, 3, 2};
    const double scale = 0.7, eps = 1e-6;
    int64_t nq = nq_(&s), nv = nv_(&s), nl = s.B * s.H * s.L;
    float *q = malloc(4 * nq), *k = malloc(4 * nq), *v = malloc(4 * nv), *g = malloc(4 * nv);
    double *o = malloc(8 * nv), *l = malloc(8 * nl), *dq = malloc(8 * nq), *dk = malloc(8 * nq), *dv = malloc(8 * nv);
    fill(q, nq, 5, 1), fill(k, nq, 6, 1), fill(v, nv, 7, 1), fill(g, nv, 8, 1);
    reference(&s, scale, q, k, v, g, o, l, dq, dk, dv);
    /* perturbation of a float input in double: re-run the reference with the value
     * nudged through a double copy of the inputs */
    float *inputs[3] = {q, k, v};
    double *grads[3] = {dq, dk, dv};
    int64_t counts[3] = {nq, nq, nv};
    for (int w = 0; w < 3; w++)
        for (int64_t i = 0; i < counts[w]; i += 3) {
            float saved = inputs[w][i];
            double loss[2];
            for (int side = 0; side < 2; side++) {
                /* fp32 storage limits the step: use a float-representable step and its true size */
                float nudged = (float)(saved + (side ? -1 : 1) * 1e-3);
                inputs[w][i] = nudged;
                reference(&s, scale, q, k, v, NULL, o, l, NULL, NULL, NULL);
                loss[side] = 0;
                for (int64_t j = 0; j < nv; j++) loss[side] += g[j] * o[j];
            }
            double step = (double)(float)(saved + 1e-3) - (double)(float)(saved - 1e-3);
            inputs[w][i] = saved;
            double fd = (loss[0] - loss[1]) / step;
            if (fabs(fd - grads[w][i]) > 1e-5 * fmax(1, fabs(fd)) + 1e-6)
                fail_msg("input %d[%lld]: finite difference %.10g, reference gradient %.10g", w, (long long)i, fd,
                         grads[w][i]);
        }
    (void)eps;
    free(q), free(k), free(v), free(g), free(o), free(l), free(dq), free(dk), free(dv);
}

static void test_deterministic_across_threads(void **state) {
    (void)state;
    Shape s = {2, 200, 3, 48, 32};
    DsaAttnShape as = {s.B, s.L, s.H, s.dq, s.dv, 0.15f};
    int64_t nq = nq_(&s), nv = nv_(&s), nl = s.B * s.H * s.L;
    float *q = malloc(4 * nq), *k = malloc(4 * nq), *v = malloc(4 * nv), *g = malloc(4 * nv);
    float *scratch = malloc(4 * dsa_cpu_attention_scratch_floats(&as));
    float *res[2][5];
    fill(q, nq, 1, 1), fill(k, nq, 2, 1), fill(v, nv, 3, 1), fill(g, nv, 4, 1);
    int saved = omp_get_max_threads();
    for (int r = 0; r < 2; r++) {
        omp_set_num_threads(r ? 2 : 1);
        res[r][0] = malloc(4 * nv), res[r][1] = malloc(4 * nl), res[r][2] = malloc(4 * nq), res[r][3] = malloc(4 * nq),
        res[r][4] = malloc(4 * nv);
        dsa_cpu_attention_forward(res[r][0], res[r][1], q, k, v, &as);
        dsa_cpu_attention_backward(res[r][2], res[r][3], res[r][4], g, res[r][0], res[r][1], q, k, v, &as, scratch);
    }
    omp_set_num_threads(saved);
    int64_t sizes[5] = {nv, nl, nq, nq, nv};
    for (int i = 0; i < 5; i++) {
        assert_memory_equal(res[0][i], res[1][i], (size_t)(4 * sizes[i]));
        free(res[0][i]), free(res[1][i]);
    }
    free(q), free(k), free(v), free(g), free(scratch);
}

/* Memory rule: forward + backward at L = 4096 (L×L fp32 = 64 MiB) raise the peak RSS by
 * far less than one L×L buffer. */
static void test_no_quadratic_buffer(void **state) {
    (void)state;
#if defined(__SANITIZE_ADDRESS__)
    skip(); /* the sanitizer's shadow memory makes RSS meaningless */
#endif
    Shape s = {1, 4096, 1, 48, 32};
    DsaAttnShape as = {s.B, s.L, s.H, s.dq, s.dv, 0.14f};
    int64_t nq = nq_(&s), nv = nv_(&s), nl = s.L;
    float *bufs[9];
    int64_t n[9] = {nq, nq, nv, nv, nv, nl, nq, nq, nv};
    for (int i = 0; i < 9; i++) {
        bufs[i] = malloc(4 * n[i]);
        fill(bufs[i], n[i], (uint64_t)i, 1);
    }
    float *scratch = malloc(4 * dsa_cpu_attention_scratch_floats(&as));
    memset(scratch, 0, 4 * dsa_cpu_attention_scratch_floats(&as));
    FILE *clear = fopen("/proc/self/clear_refs", "w"); /* "5" resets the peak RSS (VmHWM) */
    if (clear) fputs("5", clear), fclose(clear);
    int64_t before = dsa_mem_rss_peak();
    dsa_cpu_attention_forward(bufs[3], bufs[5], bufs[0], bufs[1], bufs[2], &as);
    dsa_cpu_attention_backward(bufs[6], bufs[7], bufs[8], bufs[4], bufs[3], bufs[5], bufs[0], bufs[1], bufs[2], &as,
                               scratch);
    int64_t grew = dsa_mem_rss_peak() - before;
    print_message("peak RSS grew by %.1f MiB during attention at L=4096 (an L x L buffer is 64 MiB)\n", grew / 1048576.0);
    assert_true(grew < 16 << 20);
    for (int i = 0; i < 9; i++) free(bufs[i]);
    free(scratch);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matches_reference),
        cmocka_unit_test(test_reference_gradient_by_finite_differences),
        cmocka_unit_test(test_deterministic_across_threads),
        cmocka_unit_test(test_no_quadratic_buffer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
