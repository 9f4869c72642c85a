/* test_sparse_attention.c: the sparse MQA attention of the CPU backend
 * (kernels/cpu/sparse_attention.c, DSA-SPEC §4.2, §8.2, §9) against:
 *  - a naive fp64 reference written as DENSE attention over all L keys with an additive
 *    −inf mask outside S_t (§9 "sparse with random S_t equals dense attention with a −∞
 *    mask"), forward and analytic backward, on irregular shapes: odd lengths, 1…4 and 35
 *    heads (two head groups), head dims that are not whole vectors, −1 padding, random
 *    subsets in random order, rows without any key, more than one 64-key chunk;
 *  - central finite differences in fp64 of loss = Σ R ⊙ out (which also checks the
 *    reference backward);
 *  - the dense causal kernel (kernels/cpu/attention.c) when topk ≥ L and S_t = {0…t}
 *    (§9 "sparse with k ≥ L equals dense causal attention"), through the MHA form with
 *    the shared key row broadcast to every head: out, lse, dq, and dkv = Σ_h dk_h +
 *    Σ_h dv_h (on the first v_dim entries);
 *  - identical bits for 1, 2 and 3 OpenMP threads, forward and backward;
 *  - exact zeros and −inf for rows without keys and keys nobody selected.
 */
#include <math.h>
#include <omp.h>

#include "core/rng.h"
#include "kernels/cpu/ops.h"
#include "test_util.h"

typedef struct {
    int64_t B, L, H, dq, dv, K;
    double scale;
} Shape;

/* How idx is filled. */
typedef enum {
    IDX_RANDOM, /* random subsets of {0…t} in random slots, −1 elsewhere; some rows short or empty */
    IDX_CAUSAL, /* every key 0…t, in shuffled slot order (needs K ≥ L) */
} IdxKind;

static int64_t n_(const Shape *s) { return s->B * s->L; }
static int64_t nq_(const Shape *s) { return n_(s) * s->H * s->dq; }
static int64_t nkv_(const Shape *s) { return n_(s) * s->dq; }
static int64_t nv_(const Shape *s) { return n_(s) * s->H * s->dv; }
static int64_t nl_(const Shape *s) { return n_(s) * s->H; }
static DsaSparseAttnShape kshape(const Shape *s) {
    return (DsaSparseAttnShape){s->B, s->L, s->H, s->dq, s->dv, s->K, (float)s->scale};
}

static const char *shape_name(const Shape *s, const char *what) {
    static char buf[200];
    snprintf(buf, sizeof buf, "B%lld L%lld H%lld qk%lld v%lld k%lld scale %.3g: %s", (long long)s->B, (long long)s->L,
             (long long)s->H, (long long)s->dq, (long long)s->dv, (long long)s->K, s->scale, what);
    return buf;
}

/* The kernel's inputs (fp32), the same values in fp64, and the index. */
typedef struct {
    Shape s;
    float *q, *kv, *g; /* g: upstream gradient dout, the R of loss = Σ R ⊙ out */
    double *q64, *kv64, *g64;
    int32_t *idx;
} Inputs;

static void shuffle(int32_t *a, int64_t n, DsaRng *rng) {
    for (int64_t i = n - 1; i > 0; i--) {
        const int64_t j = (int64_t)dsa_rng_below(rng, (uint64_t)i + 1);
        const int32_t x = a[i];
        a[i] = a[j], a[j] = x;
    }
}

static int32_t *make_idx(const Shape *s, IdxKind kind, uint64_t seed) {
    const int64_t L = s->L, K = s->K;
    int32_t *idx = malloc(sizeof(int32_t) * (size_t)(n_(s) * K > 0 ? n_(s) * K : 1));
    int32_t *perm = malloc(sizeof(int32_t) * (size_t)L);
    DsaRng rng = dsa_rng_init(seed, 7);
    for (int64_t n = 0; n < n_(s); n++) {
        const int64_t t = n % L;
        int32_t *row = idx + n * K;
        for (int64_t i = 0; i < K; i++) row[i] = -1;
        int64_t count = t + 1 < K ? t + 1 : K;
        if (kind == IDX_CAUSAL) {
            DSA_ASSERT(K >= L);
            for (int64_t i = 0; i <= t; i++) row[i] = (int32_t)i;
        } else {
            const uint64_t r = dsa_rng_below(&rng, 8);
            if (r == 0) count = 0;                                                     /* no key at all */
            if (r == 1) count = (int64_t)dsa_rng_below(&rng, (uint64_t)count + 1); /* short row */
            for (int64_t i = 0; i <= t; i++) perm[i] = (int32_t)i;
            shuffle(perm, t + 1, &rng); /* a random subset: the first `count` of a permutation */
            for (int64_t i = 0; i < count; i++) row[i] = perm[i];
        }
        shuffle(row, K, &rng); /* random slot order, −1 anywhere */
    }
    free(perm);
    return idx;
}

static Inputs inputs_make(Shape s, IdxKind kind, uint64_t seed) {
    Inputs in = {.s = s};
    in.q = test_randn(nq_(&s), seed, 1.0), in.kv = test_randn(nkv_(&s), seed + 1, 1.0), in.g = test_randn(nv_(&s), seed + 2, 1.0);
    in.q64 = test_to_f64(in.q, nq_(&s)), in.kv64 = test_to_f64(in.kv, nkv_(&s)), in.g64 = test_to_f64(in.g, nv_(&s));
    in.idx = make_idx(&s, kind, seed + 3);
    return in;
}

static void inputs_free(Inputs *in) {
    free(in->q), free(in->kv), free(in->g), free(in->q64), free(in->kv64), free(in->g64), free(in->idx);
}

/* ---- the fp64 reference: dense attention over all L keys of the sequence with an additive
 * mask, 0 on S_t and −inf elsewhere (whatever the slot order of idx) ----
 * out, lse always; when dq != NULL also the gradients of loss = Σ g ⊙ out (dkv summed
 * over every (row, head)). */
static void reference(const Shape *s, const int32_t *idx, const double *q, const double *kv, const double *g,
                      double *out, double *lse, double *dq, double *dkv) {
    const int64_t L = s->L, H = s->H, Dq = s->dq, Dv = s->dv, K = s->K;
    double *mask = malloc(sizeof(double) * (size_t)L), *a = malloc(sizeof(double) * (size_t)L);
    double *o = malloc(sizeof(double) * (size_t)Dv);
    if (dq) {
        memset(dq, 0, sizeof(double) * (size_t)nq_(s));
        memset(dkv, 0, sizeof(double) * (size_t)nkv_(s));
    }
    for (int64_t n = 0; n < n_(s); n++) {
        const int64_t b = n / L, t = n % L;
        const double *kb = kv + b * L * Dq; /* the sequence's key rows */
        for (int64_t u = 0; u < L; u++) mask[u] = -INFINITY;
        for (int64_t i = 0; i < K; i++)
            if (idx[n * K + i] >= 0) mask[idx[n * K + i]] = 0;
        for (int64_t h = 0; h < H; h++) {
            const double *qh = q + (n * H + h) * Dq;
            double m = -INFINITY;
            for (int64_t u = 0; u < L; u++) {
                double dot = 0;
                for (int64_t c = 0; c < Dq; c++) dot += qh[c] * kb[u * Dq + c];
                a[u] = s->scale * dot + mask[u];
                m = fmax(m, a[u]);
            }
            double *orow = out + (n * H + h) * Dv;
            if (m == -INFINITY) { /* no key: out 0, lse −inf, no gradient */
                for (int64_t c = 0; c < Dv; c++) orow[c] = 0;
                lse[(b * H + h) * L + t] = -INFINITY;
                continue;
            }
            double sum = 0;
            for (int64_t u = 0; u < L; u++) sum += exp(a[u] - m);
            const double l = m + log(sum);
            for (int64_t c = 0; c < Dv; c++) o[c] = 0;
            for (int64_t u = 0; u < L; u++) {
                a[u] = exp(a[u] - l); /* P (0 outside S_t) */
                for (int64_t c = 0; c < Dv; c++) o[c] += a[u] * kb[u * Dq + c];
            }
            for (int64_t c = 0; c < Dv; c++) orow[c] = o[c];
            lse[(b * H + h) * L + t] = l;
            if (!dq) continue;
            const double *gh = g + (n * H + h) * Dv;
            double D = 0;
            for (int64_t c = 0; c < Dv; c++) D += gh[c] * o[c];
            for (int64_t u = 0; u < L; u++) {
                if (mask[u] != 0) continue;
                double dp = 0;
                for (int64_t c = 0; c < Dv; c++) dp += gh[c] * kb[u * Dq + c];
                const double ds = a[u] * (dp - D) * s->scale;
                double *dk = dkv + (b * L + u) * Dq;
                for (int64_t c = 0; c < Dq; c++) {
                    dq[(n * H + h) * Dq + c] += ds * kb[u * Dq + c];
                    dk[c] += ds * qh[c];
                }
                for (int64_t c = 0; c < Dv; c++) dk[c] += a[u] * gh[c];
            }
        }
    }
    free(mask), free(a), free(o);
}

/* ---- the kernel ---- */

typedef struct {
    float *out, *lse, *dq, *dkv;
} Results;

static float *nans(int64_t n) {
    float *x = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    for (int64_t i = 0; i < n; i++) x[i] = NAN;
    return x;
}

/* Outputs pre-filled with NaN, scratch with garbage: anything not written shows. */
static Results run_kernel(const Inputs *in, bool backward) {
    const Shape *s = &in->s;
    const DsaSparseAttnShape ks = kshape(s);
    Results r = {nans(nv_(s)), nans(nl_(s)), nans(nq_(s)), nans(nkv_(s))};
    dsa_cpu_sparse_attention_forward(r.out, r.lse, in->q, in->kv, in->idx, &ks);
    if (backward) {
        const int64_t bytes = dsa_cpu_sparse_attention_scratch_bytes(&ks);
        assert_true(bytes >= 0);
        void *scratch = malloc((size_t)bytes + 1);
        memset(scratch, 0xA5, (size_t)bytes + 1);
        dsa_cpu_sparse_attention_backward(r.dq, r.dkv, in->g, r.out, r.lse, in->q, in->kv, in->idx, &ks, scratch);
        free(scratch);
    }
    return r;
}

static void results_free(Results *r) { free(r->out), free(r->lse), free(r->dq), free(r->dkv); }

/* −inf positions must coincide exactly (STYLE.md rule 4); the finite values are then
 * compared by test_expect_close with the −inf entries set to 0 on both sides. */
static void expect_close_lse(const char *what, const float *got, const double *want, int64_t n, double tol) {
    float *g = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    double *w = malloc(sizeof(double) * (size_t)(n > 0 ? n : 1));
    for (int64_t i = 0; i < n; i++) {
        const bool gi = isinf(got[i]) && got[i] < 0, wi = isinf(want[i]) && want[i] < 0;
        if (gi != wi) fail_msg("%s: index %lld: got %.9g, want %.9g (−inf must match)", what, (long long)i, got[i], want[i]);
        g[i] = gi ? 0.0f : got[i], w[i] = wi ? 0.0 : want[i];
    }
    test_expect_close(what, g, w, n, tol);
    free(g), free(w);
}

/* Tolerances (normalized: worst |got − want| / max |want|), fp32 kernel vs fp64:
 * out and lse are one softmax-weighted sum per row (§9: 1e-5); the gradients sum
 * products over up to topk keys (dq) or every selecting (row, head) (dkv). */
#define TOL_OUT 1e-5
#define TOL_GRAD 1e-4

static void check_against_reference(Shape s, IdxKind kind, uint64_t seed, bool backward) {
    Inputs in = inputs_make(s, kind, seed);
    Results r = run_kernel(&in, backward);
    double *out = malloc(8 * (size_t)(nv_(&s) + 1)), *lse = malloc(8 * (size_t)(nl_(&s) + 1));
    double *dq = malloc(8 * (size_t)(nq_(&s) + 1)), *dkv = malloc(8 * (size_t)(nkv_(&s) + 1));
    reference(&s, in.idx, in.q64, in.kv64, in.g64, out, lse, backward ? dq : NULL, dkv);
    test_expect_close(shape_name(&s, "out"), r.out, out, nv_(&s), TOL_OUT);
    expect_close_lse(shape_name(&s, "lse"), r.lse, lse, nl_(&s), TOL_OUT);
    if (backward) {
        test_expect_close(shape_name(&s, "dq"), r.dq, dq, nq_(&s), TOL_GRAD);
        test_expect_close(shape_name(&s, "dkv"), r.dkv, dkv, nkv_(&s), TOL_GRAD);
    }
    free(out), free(lse), free(dq), free(dkv);
    results_free(&r);
    inputs_free(&in);
}

/* Forward on every combination of batch 1 and 2, lengths 1, 7, 33, 100, heads 1…4, head
 * dims 40/32 and 19/13 (no whole vector at the end), topk 1, 5, 16 and 80 (two 64-key
 * chunks on long rows), random subsets with −1 padding. */
static void test_forward_matches_reference(void **state) {
    (void)state;
    const int64_t lens[] = {1, 7, 33, 100}, ks[] = {1, 5, 16, 80};
    const int64_t dims[][2] = {{40, 32}, {19, 13}};
    uint64_t seed = 1;
    for (int64_t B = 1; B <= 2; B++)
        for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++)
            for (int64_t H = 1; H <= 4; H++)
                for (int di = 0; di < 2; di++)
                    for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++) {
                        const Shape s = {B, lens[li], H, dims[di][0], dims[di][1], ks[ki],
                                         1.0 / sqrt((double)dims[di][0])};
                        check_against_reference(s, IDX_RANDOM, seed++, false);
                    }
}

/* Forward and backward against the analytic fp64 backward: the sweep's corners, several
 * 64-key chunks and key blocks (L 200, k 150), 35 heads (two head groups of 32), the
 * 671B head dims 576/512, qk = v (no rope part), 3 whole vectors of 16 (56/48), large scores (scale 1: logits of std ≈ 6,
 * most weights underflow), single-token sequences, and the causal full index. */
static void test_backward_matches_reference(void **state) {
    (void)state;
    const struct {
        Shape s;
        IdxKind kind;
    } cases[] = {
        {{2, 1, 2, 40, 32, 1, 0.16}, IDX_RANDOM},     {{2, 7, 3, 40, 32, 5, 0.16}, IDX_RANDOM},
        {{2, 33, 4, 40, 32, 16, 0.16}, IDX_RANDOM},   {{2, 100, 1, 40, 32, 16, 0.16}, IDX_RANDOM},
        {{1, 100, 3, 19, 13, 5, 0.23}, IDX_RANDOM},   {{2, 100, 2, 40, 32, 80, 0.16}, IDX_RANDOM},
        {{1, 200, 2, 24, 16, 150, 0.2}, IDX_RANDOM},  {{1, 40, 35, 8, 5, 16, 0.35}, IDX_RANDOM},
        {{1, 70, 3, 576, 512, 64, 0.0417}, IDX_RANDOM}, {{2, 50, 2, 16, 16, 9, 0.25}, IDX_RANDOM},
        {{1, 90, 2, 40, 32, 30, 1.0}, IDX_RANDOM},    {{3, 1, 1, 40, 32, 3, 0.16}, IDX_RANDOM},
        {{1, 60, 2, 56, 48, 20, 0.13}, IDX_RANDOM},   {{1, 70, 2, 40, 32, 70, 0.16}, IDX_CAUSAL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_against_reference(cases[i].s, cases[i].kind, 100 + i, true);
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
    reference(&in->s, in->idx, in->q64, in->kv64, NULL, c->out, c->lse, NULL, NULL);
    double loss = 0;
    for (int64_t i = 0; i < nv_(&in->s); i++) loss += in->g64[i] * c->out[i];
    return loss;
}

/* Gradients by central finite differences (fp64, eps 1e-6) of the fp64 forward w.r.t.
 * every entry of q and kv, against the fp64 analytic reference (tight: what makes the
 * reference trustworthy for the larger shapes above) and against the kernel. */
static void test_backward_finite_differences(void **state) {
    (void)state;
    const Shape shapes[] = {{1, 9, 2, 5, 3, 4, 0.7}, {2, 6, 3, 7, 7, 3, 0.9}, {1, 12, 1, 6, 4, 12, 0.6}};
    const double eps = 1e-6;
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const Shape s = shapes[si];
        Inputs in = inputs_make(s, IDX_RANDOM, 40 + si);
        Results r = run_kernel(&in, true);
        double *out = malloc(8 * (size_t)nv_(&s)), *lse = malloc(8 * (size_t)nl_(&s));
        double *ref[2] = {malloc(8 * (size_t)nq_(&s)), malloc(8 * (size_t)nkv_(&s))};
        reference(&s, in.idx, in.q64, in.kv64, in.g64, out, lse, ref[0], ref[1]);
        double *x[2] = {in.q64, in.kv64};
        const float *got[2] = {r.dq, r.dkv};
        const int64_t n[2] = {nq_(&s), nkv_(&s)};
        const char *names[2] = {"dq vs finite differences", "dkv vs finite differences"};
        LossCtx lc = {&in, out, lse};
        for (int w = 0; w < 2; w++) {
            double *fd = test_dalloc(n[w]);
            test_central_differences(fd, x[w], n[w], eps, loss_of, &lc);
            test_expect_close(shape_name(&s, names[w]), got[w], fd, n[w], TOL_GRAD);
            char what[96];
            snprintf(what, sizeof what, "fp64 reference, %s", names[w]);
            test_expect_close_f64(shape_name(&s, what), ref[w], fd, n[w], 1e-7, 1e-3);
            free(fd);
        }
        free(out), free(lse), free(ref[0]), free(ref[1]);
        results_free(&r);
        inputs_free(&in);
    }
}

/* topk ≥ L and S_t = {0…t} (shuffled slots): the sparse kernel equals the dense causal
 * kernel (§4.2 Decision, §9), run in the MHA form on k_{s,h} = K_s and v_{s,h} = K_s[:Dv]
 * for every head. Gradients: dq equal; dkv_s = Σ_h dk_{s,h} + Σ_h dv_{s,h} (first Dv). */
static void test_equals_dense_causal(void **state) {
    (void)state;
    const Shape shapes[] = {{2, 100, 3, 40, 32, 100, 0.16}, {1, 130, 2, 48, 32, 140, 0.144},
                            {1, 1, 2, 40, 32, 1, 0.16},     {1, 70, 1, 19, 13, 77, 0.5}};
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const Shape s = shapes[si];
        const int64_t N = n_(&s), H = s.H, Dq = s.dq, Dv = s.dv;
        Inputs in = inputs_make(s, IDX_CAUSAL, 200 + si);
        Results r = run_kernel(&in, true);
        float *k = malloc(sizeof(float) * (size_t)nq_(&s)), *v = malloc(sizeof(float) * (size_t)nv_(&s));
        for (int64_t n = 0; n < N; n++)
            for (int64_t h = 0; h < H; h++) {
                memcpy(k + (n * H + h) * Dq, in.kv + n * Dq, sizeof(float) * (size_t)Dq);
                memcpy(v + (n * H + h) * Dv, in.kv + n * Dq, sizeof(float) * (size_t)Dv);
            }
        const DsaAttnShape as = {s.B, s.L, s.H, s.dq, s.dv, (float)s.scale};
        float *out = nans(nv_(&s)), *lse = nans(nl_(&s)), *dq = nans(nq_(&s)), *dk = nans(nq_(&s));
        float *dv = nans(nv_(&s)), *scratch = nans(dsa_cpu_attention_scratch_floats(&as));
        dsa_cpu_attention_forward(out, lse, in.q, k, v, &as);
        dsa_cpu_attention_backward(dq, dk, dv, in.g, out, lse, in.q, k, v, &as, scratch);
        double *want_out = test_to_f64(out, nv_(&s)), *want_lse = test_to_f64(lse, nl_(&s)), *want_dq = test_to_f64(dq, nq_(&s));
        double *want_dkv = calloc((size_t)nkv_(&s), sizeof(double));
        for (int64_t n = 0; n < N; n++)
            for (int64_t h = 0; h < H; h++) {
                for (int64_t c = 0; c < Dq; c++) want_dkv[n * Dq + c] += dk[(n * H + h) * Dq + c];
                for (int64_t c = 0; c < Dv; c++) want_dkv[n * Dq + c] += dv[(n * H + h) * Dv + c];
            }
        test_expect_close(shape_name(&s, "out vs dense kernel"), r.out, want_out, nv_(&s), TOL_OUT);
        test_expect_close(shape_name(&s, "lse vs dense kernel"), r.lse, want_lse, nl_(&s), TOL_OUT);
        test_expect_close(shape_name(&s, "dq vs dense kernel"), r.dq, want_dq, nq_(&s), TOL_OUT);
        test_expect_close(shape_name(&s, "dkv vs dense dk + dv"), r.dkv, want_dkv, nkv_(&s), TOL_OUT);
        free(k), free(v), free(out), free(lse), free(dq), free(dk), free(dv), free(scratch);
        free(want_out), free(want_lse), free(want_dq), free(want_dkv);
        results_free(&r);
        inputs_free(&in);
    }
}

/* Rows without a valid key: out exactly 0, lse −inf, dq exactly 0; keys no row selected:
 * dkv exactly 0. Also topk = 0 (every row empty). */
static void test_empty_rows_and_keys(void **state) {
    (void)state;
    const Shape shapes[] = {{2, 50, 3, 19, 13, 6, 0.3}, {1, 9, 2, 8, 4, 0, 0.3}};
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const Shape s = shapes[si];
        Inputs in = inputs_make(s, IDX_RANDOM, 300 + si);
        Results r = run_kernel(&in, true);
        bool *used = calloc((size_t)n_(&s) + 1, 1);
        int64_t empty = 0, unused = 0;
        for (int64_t n = 0; n < n_(&s); n++) {
            bool any = false;
            for (int64_t i = 0; i < s.K; i++)
                if (in.idx[n * s.K + i] >= 0) any = true, used[(n / s.L) * s.L + in.idx[n * s.K + i]] = true;
            if (any) continue;
            empty++;
            for (int64_t h = 0; h < s.H; h++) {
                const float l = r.lse[((n / s.L) * s.H + h) * s.L + n % s.L];
                if (!(isinf(l) && l < 0)) fail_msg("%s: row %lld head %lld: lse %.9g, want -inf",
                                                  shape_name(&s, "empty row"), (long long)n, (long long)h, l);
                for (int64_t c = 0; c < s.dv; c++) assert_true(r.out[(n * s.H + h) * s.dv + c] == 0.0f);
                for (int64_t c = 0; c < s.dq; c++) assert_true(r.dq[(n * s.H + h) * s.dq + c] == 0.0f);
            }
        }
        for (int64_t n = 0; n < n_(&s); n++) {
            if (used[n]) continue;
            unused++;
            for (int64_t c = 0; c < s.dq; c++) assert_true(r.dkv[n * s.dq + c] == 0.0f);
        }
        assert_true(empty > 0 && unused > 0); /* the index generator made some of both */
        free(used);
        results_free(&r);
        inputs_free(&in);
    }
}

static void expect_same_bits(const char *what, const Results *a, const Results *b, const Shape *s) {
    const float *x[4] = {a->out, a->lse, a->dq, a->dkv}, *y[4] = {b->out, b->lse, b->dq, b->dkv};
    const int64_t n[4] = {nv_(s), nl_(s), nq_(s), nkv_(s)};
    const char *names[4] = {"out", "lse", "dq", "dkv"};
    for (int i = 0; i < 4; i++)
        for (int64_t j = 0; j < n[i]; j++)
            if (memcmp(&x[i][j], &y[i][j], sizeof(float)) != 0)
                fail_msg("%s: %s[%lld] differs: %.9g vs %.9g", shape_name(s, what), names[i], (long long)j, x[i][j],
                         y[i][j]);
}

/* Same inputs, same bits: twice on 2 threads, and on 1 and 3 threads. At L = 2100 the
 * backward's key blocks are 256, 128 and 64 positions on 1, 2 and 3 threads. */
static void test_deterministic(void **state) {
    (void)state;
    const Shape shapes[] = {{2, 200, 3, 40, 32, 100, 0.16},
                            {1, 300, 1, 48, 32, 64, 0.15},
                            {2, 129, 35, 19, 13, 7, 0.3},
                            {1, 2100, 2, 19, 13, 40, 0.3}};
    const int saved = omp_get_max_threads();
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        Inputs in = inputs_make(shapes[si], IDX_RANDOM, 70 + si);
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

/* The scratch is the transposed index plus small tables: at the 671B shape of one rank
 * (128K tokens, 128 heads, k = 2048) about 4 bytes per (row, slot), nothing per head and
 * key pair. */
static void test_scratch_bytes(void **state) {
    (void)state;
    const DsaSparseAttnShape big = {1, 131072, 128, 576, 512, 2048, 0.0417f};
    const double entries = 4.0 * 131072 * 2048, extra = 4.0 * 131072 * 128 + 8.0 * 65 * 2048 + 256;
    const int64_t bytes = dsa_cpu_sparse_attention_scratch_bytes(&big);
    print_message("scratch at 128K tokens, 128 heads, k 2048: %.2f GiB\n", bytes / 1073741824.0);
    assert_true((double)bytes >= entries && (double)bytes <= entries + extra);
    const DsaSparseAttnShape none = {0, 0, 4, 40, 32, 16, 0.2f};
    assert_true(dsa_cpu_sparse_attention_scratch_bytes(&none) >= 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forward_matches_reference),
        cmocka_unit_test(test_backward_matches_reference),
        cmocka_unit_test(test_backward_finite_differences),
        cmocka_unit_test(test_equals_dense_causal),
        cmocka_unit_test(test_empty_rows_and_keys),
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_scratch_bytes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
