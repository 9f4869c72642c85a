/* test_attention.c: the tiled causal attention of the CPU backend (kernels/cpu/attention.c,
 * DSA-SPEC §4.1, §8) against a naive fp64 reference that walks the causal rows one by one
 * (O(L) per row; the small shapes hold everything in memory): outputs and log-sum-exp on
 * irregular shapes across the 64-wide tile edges and the 256-wide head-dim chunks; the
 * three gradients against the analytic fp64 backward and against central finite
 * differences of the fp64 forward (which also checks the reference backward); identical
 * bits across runs and thread counts, both backward schemes included; the memory rule
 * (nothing allocated, no L×L buffer, at L = 4096); and a 32K-token sequence checked on
 * sampled rows (skipped with DSA_SLOW_TESTS=0 and under AddressSanitizer). */
#include <math.h>
#include <omp.h>

#include "core/mem.h"
#include "core/rng.h"
#include "kernels/cpu/ops.h"
#include "test_util.h"

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

typedef struct {
    int64_t B, L, H, dq, dv;
    double scale;
} Shape;

static int64_t nq_(const Shape *s) { return s->B * s->L * s->H * s->dq; }
static int64_t nv_(const Shape *s) { return s->B * s->L * s->H * s->dv; }
static int64_t nl_(const Shape *s) { return s->B * s->H * s->L; }
static DsaAttnShape kshape(const Shape *s) { return (DsaAttnShape){s->B, s->L, s->H, s->dq, s->dv, (float)s->scale}; }

/* The kernel's inputs (fp32) and the same values in fp64 for the reference. */
typedef struct {
    Shape s;
    float *q, *k, *v, *g; /* g: the upstream gradient dout (the r of loss = Σ r ⊙ out) */
    double *q64, *k64, *v64, *g64;
} Inputs;

static Inputs inputs_make(Shape s, uint64_t seed, double qk_std) {
    Inputs in = {.s = s};
    in.q = test_randn(nq_(&s), seed, qk_std), in.k = test_randn(nq_(&s), seed + 1, qk_std);
    in.v = test_randn(nv_(&s), seed + 2, 1), in.g = test_randn(nv_(&s), seed + 3, 1);
    in.q64 = test_to_f64(in.q, nq_(&s)), in.k64 = test_to_f64(in.k, nq_(&s));
    in.v64 = test_to_f64(in.v, nv_(&s)), in.g64 = test_to_f64(in.g, nv_(&s));
    return in;
}

static void inputs_free(Inputs *in) {
    free(in->q), free(in->k), free(in->v), free(in->g);
    free(in->q64), free(in->k64), free(in->v64), free(in->g64);
}

/* The fp64 reference for query rows [t_lo, t_hi) of every (sequence, head): out and lse
 * of those rows (when out != NULL) and, when dq != NULL, their contributions to the
 * gradients of loss = Σ g ⊙ out: dq of those rows (complete), dk and dv += (complete for
 * a key s when every row t ≥ s was walked). p: scratch of L doubles. */
static void reference_rows(const Shape *s, const double *q, const double *k, const double *v, const double *g,
                           int64_t t_lo, int64_t t_hi, double *out, double *lse, double *dq, double *dk, double *dv) {
    const int64_t L = s->L, H = s->H, dqd = s->dq, dvd = s->dv;
    double *p = malloc(sizeof(double) * (size_t)L), *o = malloc(sizeof(double) * (size_t)dvd);
    for (int64_t b = 0; b < s->B; b++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t t = t_lo; t < t_hi; t++) {
                const int64_t rt = (b * L + t) * H + h;
                double m = -INFINITY, sum = 0;
                for (int64_t u = 0; u <= t; u++) {
                    const int64_t ru = (b * L + u) * H + h;
                    double a = 0;
                    for (int64_t c = 0; c < dqd; c++) a += q[rt * dqd + c] * k[ru * dqd + c];
                    p[u] = a * s->scale;
                    m = fmax(m, p[u]);
                }
                for (int64_t u = 0; u <= t; u++) sum += exp(p[u] - m);
                const double l = m + log(sum);
                for (int64_t c = 0; c < dvd; c++) o[c] = 0;
                for (int64_t u = 0; u <= t; u++) {
                    p[u] = exp(p[u] - l);
                    for (int64_t c = 0; c < dvd; c++) o[c] += p[u] * v[((b * L + u) * H + h) * dvd + c];
                }
                if (out) {
                    lse[(b * H + h) * L + t] = l;
                    for (int64_t c = 0; c < dvd; c++) out[rt * dvd + c] = o[c];
                }
                if (!dq) continue;
                const double *gt = g + rt * dvd;
                double D = 0;
                for (int64_t c = 0; c < dvd; c++) D += gt[c] * o[c];
                for (int64_t c = 0; c < dqd; c++) dq[rt * dqd + c] = 0;
                for (int64_t u = 0; u <= t; u++) {
                    const int64_t ru = (b * L + u) * H + h;
                    double dp = 0;
                    for (int64_t c = 0; c < dvd; c++) {
                        dp += gt[c] * v[ru * dvd + c];
                        dv[ru * dvd + c] += p[u] * gt[c];
                    }
                    const double ds = p[u] * (dp - D) * s->scale;
                    for (int64_t c = 0; c < dqd; c++) {
                        dq[rt * dqd + c] += ds * k[ru * dqd + c];
                        dk[ru * dqd + c] += ds * q[rt * dqd + c];
                    }
                }
            }
    free(p), free(o);
}

/* The whole reference: forward (out, lse) and, when dq != NULL, all three gradients. */
static void reference(const Shape *s, const double *q, const double *k, const double *v, const double *g, double *out,
                      double *lse, double *dq, double *dk, double *dv) {
    if (dq) {
        memset(dk, 0, sizeof(double) * (size_t)nq_(s));
        memset(dv, 0, sizeof(double) * (size_t)nv_(s));
    }
    reference_rows(s, q, k, v, g, 0, s->L, out, lse, dq, dk, dv);
}

/* The kernel's results, outputs pre-filled with NaN so a value it fails to write shows. */
typedef struct {
    float *out, *lse, *dq, *dk, *dv, *scratch;
} Results;

static float *nans(int64_t n) {
    float *x = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    for (int64_t i = 0; i < n; i++) x[i] = NAN;
    return x;
}

static Results run_kernel(const Inputs *in, bool backward) {
    const Shape *s = &in->s;
    const DsaAttnShape as = kshape(s);
    Results r = {nans(nv_(s)), nans(nl_(s)), nans(nq_(s)), nans(nq_(s)), nans(nv_(s)),
                 nans(dsa_cpu_attention_scratch_floats(&as))};
    dsa_cpu_attention_forward(r.out, r.lse, in->q, in->k, in->v, &as);
    if (backward)
        dsa_cpu_attention_backward(r.dq, r.dk, r.dv, in->g, r.out, r.lse, in->q, in->k, in->v, &as, r.scratch);
    return r;
}

static void results_free(Results *r) {
    free(r->out), free(r->lse), free(r->dq), free(r->dk), free(r->dv), free(r->scratch);
}

static const char *shape_name(const Shape *s, const char *what) {
    static char buf[160];
    snprintf(buf, sizeof buf, "B%lld L%lld H%lld qk%lld v%lld scale %.3g: %s", (long long)s->B, (long long)s->L,
             (long long)s->H, (long long)s->dq, (long long)s->dv, s->scale, what);
    return buf;
}

/* Tolerances (normalized: worst |got − want| / max |want|), fp32 kernel vs fp64:
 * out and lse are one softmax-weighted sum per row (≈ 1e-7 seen); the gradients sum
 * dS products over up to L rows (≈ 1e-6 seen). */
#define TOL_OUT 1e-5
#define TOL_GRAD 1e-4

/* Forward and backward against the fp64 reference on one shape. */
static void check_against_reference(Shape s, double qk_std, bool backward) {
    Inputs in = inputs_make(s, 11 + (uint64_t)s.L, qk_std);
    Results r = run_kernel(&in, backward);
    double *out = malloc(8 * (size_t)nv_(&s)), *lse = malloc(8 * (size_t)nl_(&s));
    double *dq = malloc(8 * (size_t)nq_(&s)), *dk = malloc(8 * (size_t)nq_(&s)), *dv = malloc(8 * (size_t)nv_(&s));
    reference(&s, in.q64, in.k64, in.v64, in.g64, out, lse, backward ? dq : NULL, dk, dv);
    test_expect_close(shape_name(&s, "out"), r.out, out, nv_(&s), TOL_OUT);
    test_expect_close(shape_name(&s, "lse"), r.lse, lse, nl_(&s), TOL_OUT);
    if (backward) {
        test_expect_close(shape_name(&s, "dq"), r.dq, dq, nq_(&s), TOL_GRAD);
        test_expect_close(shape_name(&s, "dk"), r.dk, dk, nq_(&s), TOL_GRAD);
        test_expect_close(shape_name(&s, "dv"), r.dv, dv, nv_(&s), TOL_GRAD);
    }
    free(out), free(lse), free(dq), free(dk), free(dv);
    results_free(&r);
    inputs_free(&in);
}

/* Forward on every combination of lengths around the 64-token tiles, batch 1 and 2,
 * 1 and 3 heads, head dims 48/32 (the tiny MLA config) and 5/3 (no whole vector). */
static void test_forward_matches_reference(void **state) {
    (void)state;
    const int64_t lens[] = {1, 7, 16, 17, 33, 63, 64, 65, 100, 129, 257};
    const int64_t dims[][2] = {{48, 32}, {5, 3}};
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++)
        for (int64_t B = 1; B <= 2; B++)
            for (int64_t H = 1; H <= 3; H += 2)
                for (int d = 0; d < 2; d++) {
                    Shape s = {B, lens[i], H, dims[d][0], dims[d][1], 1.0 / sqrt((double)dims[d][0])};
                    check_against_reference(s, 1.5, false);
                }
}

/* Forward and backward against the analytic fp64 backward: medium shapes, v wider than
 * qk, whole-vector dims, head dims past one 256-wide chunk (qk 300 / v 260: the
 * re-transposed path), and large scores (scale 1 at qk 48: logits of std ≈ 15, so the
 * running max moves and most weights underflow). */
static void test_backward_matches_reference(void **state) {
    (void)state;
    const Shape shapes[] = {
        {1, 100, 1, 48, 32, 1.0 / sqrt(48.0)}, {2, 100, 3, 5, 3, 1.0 / sqrt(5.0)},  {2, 65, 2, 48, 32, 0.15},
        {1, 130, 4, 12, 20, 0.3},              {1, 129, 2, 16, 16, 0.25},          {1, 200, 1, 64, 64, 0.125},
        {1, 70, 2, 300, 260, 0.05},            {1, 67, 1, 257, 1, 0.06},           {1, 150, 2, 48, 32, 1.0},
        {3, 1, 2, 48, 32, 0.14},               {1, 257, 3, 48, 32, 1.0 / sqrt(48.0)},
    };
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) check_against_reference(shapes[i], 1.5, true);
}

/* What the finite differences perturb: the inputs, and fp64 buffers for the forward. */
typedef struct {
    const Inputs *in;
    double *out, *lse;
} LossCtx;

/* loss = Σ g ⊙ out of the fp64 reference forward. */
static double loss_of(void *ctx) {
    const LossCtx *c = ctx;
    const Inputs *in = c->in;
    reference(&in->s, in->q64, in->k64, in->v64, NULL, c->out, c->lse, NULL, NULL, NULL);
    double loss = 0;
    for (int64_t i = 0; i < nv_(&in->s); i++) loss += in->g64[i] * c->out[i];
    return loss;
}

/* Gradients by central finite differences (fp64, eps 1e-6) of the fp64 forward, against
 * both the kernel's fp32 gradients and the fp64 analytic reference (tight: this is what
 * makes the reference trustworthy for the larger shapes above). */
static void test_backward_finite_differences(void **state) {
    (void)state;
    const Shape shapes[] = {{1, 9, 2, 5, 3, 0.7}, {2, 5, 1, 3, 2, 0.9}, {1, 67, 1, 3, 2, 0.6}};
    const double eps = 1e-6;
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const Shape s = shapes[si];
        Inputs in = inputs_make(s, 40 + si, 1.0);
        Results r = run_kernel(&in, true);
        double *out = malloc(8 * (size_t)nv_(&s)), *lse = malloc(8 * (size_t)nl_(&s));
        double *ref[3] = {malloc(8 * (size_t)nq_(&s)), malloc(8 * (size_t)nq_(&s)), malloc(8 * (size_t)nv_(&s))};
        reference(&s, in.q64, in.k64, in.v64, in.g64, out, lse, ref[0], ref[1], ref[2]);
        double *x[3] = {in.q64, in.k64, in.v64};
        const float *got[3] = {r.dq, r.dk, r.dv};
        const int64_t n[3] = {nq_(&s), nq_(&s), nv_(&s)};
        const char *names[3] = {"dq vs finite differences", "dk vs finite differences", "dv vs finite differences"};
        LossCtx lc = {&in, out, lse};
        for (int w = 0; w < 3; w++) {
            double *fd = test_dalloc(n[w]);
            test_central_differences(fd, x[w], n[w], eps, loss_of, &lc);
            test_expect_close(shape_name(&s, names[w]), got[w], fd, n[w], TOL_GRAD);
            /* the fp64 reference: FD truncation O(eps²) and rounding O(1e-16 / eps) */
            char what[96];
            snprintf(what, sizeof what, "fp64 reference, %s", names[w]);
            test_expect_close_f64(shape_name(&s, what), ref[w], fd, n[w], 1e-7, 1e-3);
            free(fd);
        }
        free(out), free(lse), free(ref[0]), free(ref[1]), free(ref[2]);
        results_free(&r);
        inputs_free(&in);
    }
}

static void expect_same_bits(const char *what, const Results *a, const Results *b, const Shape *s) {
    const float *x[5] = {a->out, a->lse, a->dq, a->dk, a->dv}, *y[5] = {b->out, b->lse, b->dq, b->dk, b->dv};
    const int64_t n[5] = {nv_(s), nl_(s), nq_(s), nq_(s), nv_(s)};
    const char *names[5] = {"out", "lse", "dq", "dk", "dv"};
    for (int i = 0; i < 5; i++)
        for (int64_t j = 0; j < n[i]; j++)
            if (memcmp(&x[i][j], &y[i][j], sizeof(float)) != 0)
                fail_msg("%s: %s[%lld] differs: %.9g vs %.9g", shape_name(s, what), names[i], (long long)j, x[i][j],
                         y[i][j]);
}

/* Same inputs, same bits: twice with the same thread count, and across 1, 2 and 3
 * threads. The kernel guarantees this for any thread count (every output element is
 * summed by one thread in a fixed order). One (sequence, head) on 2 or 3 threads runs the
 * two-pass backward and on 1 thread the one-pass one, so this also checks that the two
 * schemes agree bit for bit. */
static void test_deterministic(void **state) {
    (void)state;
    const Shape shapes[] = {{2, 200, 3, 48, 32, 0.15}, {1, 300, 1, 48, 32, 0.15}, {2, 129, 1, 5, 3, 0.4}};
    const int saved = omp_get_max_threads();
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        Inputs in = inputs_make(shapes[si], 70 + si, 1.0);
        omp_set_num_threads(2);
        Results first = run_kernel(&in, true), again = run_kernel(&in, true);
        expect_same_bits("two runs, 2 threads", &first, &again, &in.s);
        results_free(&again);
        for (int t = 1; t <= 3; t += 2) {
            omp_set_num_threads(t);
            Results other = run_kernel(&in, true);
            expect_same_bits(t == 1 ? "1 vs 2 threads" : "3 vs 2 threads", &first, &other, &in.s);
            results_free(&other);
        }
        results_free(&first);
        inputs_free(&in);
    }
    omp_set_num_threads(saved);
}

/* Memory rule (DESIGN.md): at L = 4096 (an L×L fp32 buffer is 64 MiB) forward and
 * backward allocate nothing through dsa_malloc (the counted peak stays at the inputs)
 * and, the kernel's tiles living on the stack, raise the process's peak RSS (VmHWM) by
 * far less than one L×L buffer. */
static void test_no_quadratic_buffer(void **state) {
    (void)state;
    Shape s = {1, 4096, 1, 48, 32, 0.14};
    const DsaAttnShape as = kshape(&s);
    const int64_t n[10] = {nq_(&s), nq_(&s), nv_(&s), nv_(&s), nv_(&s), nl_(&s),
                           nq_(&s), nq_(&s), nv_(&s), dsa_cpu_attention_scratch_floats(&as)};
    float *x[10];
    size_t inputs = 0;
    for (int i = 0; i < 10; i++) {
        x[i] = dsa_malloc(sizeof(float) * (size_t)n[i]);
        assert_non_null(x[i]);
        for (int64_t j = 0; j < n[i]; j++) x[i][j] = (float)dsa_rng_normal_at(90 + (uint64_t)i, 0, (uint64_t)j);
        inputs += sizeof(float) * (size_t)n[i];
    }
    float *q = x[0], *k = x[1], *v = x[2], *out = x[3], *g = x[4], *lse = x[5], *dq = x[6], *dk = x[7], *dv = x[8];
    /* warm the OpenMP pool first, so its thread stacks are not counted against the kernel */
    dsa_cpu_attention_forward(out, lse, q, k, v, &as);
    dsa_mem_reset_peak();
    const size_t live = dsa_mem_live();
    FILE *clear = fopen("/proc/self/clear_refs", "w"); /* "5" resets VmHWM to the current RSS */
    if (clear) fputs("5", clear), fclose(clear);
    const int64_t rss_before = dsa_mem_rss_peak();
    dsa_cpu_attention_forward(out, lse, q, k, v, &as);
    dsa_cpu_attention_backward(dq, dk, dv, g, out, lse, q, k, v, &as, x[9]);
    const int64_t rss_grew = dsa_mem_rss_peak() - rss_before;
    const size_t peak = dsa_mem_peak();
    print_message("L=4096: counted peak %.1f MiB (inputs %.1f MiB), peak RSS grew by %.1f MiB; "
                  "an L x L buffer is 64 MiB\n",
                  peak / 1048576.0, inputs / 1048576.0, rss_grew / 1048576.0);
    assert_true(peak == live);           /* the kernel allocates nothing through dsa_malloc */
    assert_true(peak <= inputs + 4096);  /* (plus what the test harness itself holds) */
    if (!UNDER_ASAN && clear)            /* shadow memory makes RSS meaningless under ASan */
        assert_true(rss_grew < 32 << 20); /* half an L×L buffer: none was touched */
    for (int i = 0; i < 10; i++) dsa_free(x[i], sizeof(float) * (size_t)n[i]);
}

/* A 32K-token sequence (the tiny MLA config's per-head shape), checked on sampled rows:
 * out, lse and dq of rows 0, 1, 4097, 20000, and dk, dv of the last 70 keys (all of whose
 * query rows the reference walks), against the fp64 reference at O(L) per row. */
static void test_long_sequence(void **state) {
    (void)state;
    const char *env = getenv("DSA_SLOW_TESTS");
    if (env && strcmp(env, "0") == 0) {
        print_message("skipped: DSA_SLOW_TESTS=0\n");
        skip();
    }
    if (UNDER_ASAN) {
        print_message("skipped under AddressSanitizer (too slow there; the normal build runs it)\n");
        skip();
    }
    Shape s = {1, 32768, 1, 48, 32, 1.0 / sqrt(48.0)};
    Inputs in = inputs_make(s, 100, 1.5);
    const double t0 = omp_get_wtime();
    Results r = run_kernel(&in, true);
    const double secs = omp_get_wtime() - t0;
    const double pairs = (double)s.L * (double)(s.L + 1) / 2;
    print_message("L=32768 H=1 qk48 v32, %d threads: forward + backward %.2f s (%.0f GFLOP/s counting 3.5 x 2 x 80 "
                  "FLOPs per pair)\n",
                  omp_get_max_threads(), secs, 3.5 * 2 * 80 * pairs / secs * 1e-9);
    double *out = malloc(8 * (size_t)nv_(&s)), *lse = malloc(8 * (size_t)nl_(&s));
    double *dq = malloc(8 * (size_t)nq_(&s)), *dk = calloc((size_t)nq_(&s), 8), *dv = calloc((size_t)nv_(&s), 8);
    const int64_t rows[] = {0, 1, 4097, 20000}, tail = 70, L = s.L;
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        reference_rows(&s, in.q64, in.k64, in.v64, in.g64, rows[i], rows[i] + 1, out, lse, dq, dk, dv);
    memset(dk, 0, 8 * (size_t)nq_(&s)), memset(dv, 0, 8 * (size_t)nv_(&s)); /* only the tail's are complete */
    reference_rows(&s, in.q64, in.k64, in.v64, in.g64, L - tail, L, out, lse, dq, dk, dv);
    /* gather the checked rows into small arrays */
    const int64_t nrows = (int64_t)(sizeof rows / sizeof rows[0]) + tail;
    float *go = malloc(4 * (size_t)(nrows * s.dv)), *gl = malloc(4 * (size_t)nrows);
    float *gq = malloc(4 * (size_t)(nrows * s.dq));
    float *gk = malloc(4 * (size_t)(tail * s.dq)), *gv = malloc(4 * (size_t)(tail * s.dv));
    double *wo = malloc(8 * (size_t)(nrows * s.dv)), *wl = malloc(8 * (size_t)nrows);
    double *wq = malloc(8 * (size_t)(nrows * s.dq));
    double *wk = malloc(8 * (size_t)(tail * s.dq)), *wv = malloc(8 * (size_t)(tail * s.dv));
    for (int64_t i = 0; i < nrows; i++) {
        const int64_t t = i < 4 ? rows[i] : L - tail + (i - 4);
        gl[i] = r.lse[t], wl[i] = lse[t];
        for (int64_t c = 0; c < s.dv; c++) go[i * s.dv + c] = r.out[t * s.dv + c], wo[i * s.dv + c] = out[t * s.dv + c];
        for (int64_t c = 0; c < s.dq; c++) gq[i * s.dq + c] = r.dq[t * s.dq + c], wq[i * s.dq + c] = dq[t * s.dq + c];
    }
    for (int64_t i = 0; i < tail; i++) {
        const int64_t t = L - tail + i;
        for (int64_t c = 0; c < s.dq; c++) gk[i * s.dq + c] = r.dk[t * s.dq + c], wk[i * s.dq + c] = dk[t * s.dq + c];
        for (int64_t c = 0; c < s.dv; c++) gv[i * s.dv + c] = r.dv[t * s.dv + c], wv[i * s.dv + c] = dv[t * s.dv + c];
    }
    test_expect_close("L=32768 sampled out rows", go, wo, nrows * s.dv, TOL_OUT);
    test_expect_close("L=32768 sampled lse", gl, wl, nrows, TOL_OUT);
    test_expect_close("L=32768 sampled dq rows", gq, wq, nrows * s.dq, TOL_GRAD);
    test_expect_close("L=32768 last 70 dk rows", gk, wk, tail * s.dq, TOL_GRAD);
    test_expect_close("L=32768 last 70 dv rows", gv, wv, tail * s.dv, TOL_GRAD);
    free(go), free(gl), free(gq), free(gk), free(gv), free(wo), free(wl), free(wq), free(wk), free(wv);
    free(out), free(lse), free(dq), free(dk), free(dv);
    results_free(&r);
    inputs_free(&in);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forward_matches_reference),
        cmocka_unit_test(test_backward_matches_reference),
        cmocka_unit_test(test_backward_finite_differences),
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_no_quadratic_buffer),
        cmocka_unit_test(test_long_sequence),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
