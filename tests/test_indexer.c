/* test_indexer.c: the indexer's training losses and backward (indexer/kl.c, kl_sparse.c,
 * indexer.c; DSA-SPEC §6, §7, §8, §9) against naive fp64 references written here, which
 * walk every (row, key) pair of tiny sequences:
 *
 *  - fused dense KL (dsa_indexer_kl_dense, §6.2, §8.1): KL sum, captured mass of the
 *    top-k set and the gradients ∂/∂(q̂, k̂, w) against the fp64 chain G = g (π − p),
 *    ∂w = c Σ G ReLU(u), E = c G w [u > 0], ∂q̂ = Σ E k̂, ∂k̂ = Σ E q̂; L = 1, 7, 33, 130
 *    (130 crosses the 128-key and 16-query tiles);
 *  - the gradient formula itself: ∂KL/∂I = π − p by central differences in fp64;
 *  - the full indexer (dsa_indexer_forward, FP8 off, then dsa_indexer_backward): the
 *    forward activations against an fp64 forward (linears, LayerNorm with bias, NeoX
 *    RoPE, the explicit Hadamard matrix); the backward on arbitrary upstream gradients
 *    against the fp64 transpose chain (+= accumulation, NULL entries); and the gradients
 *    of loss = Σ KL / N against central differences, both of the fp64 reference loss
 *    (every entry of the small tensors, random directions for all five) and of the
 *    implementation's own fp32 loss (random directions);
 *  - sparse KL (dsa_indexer_kl_sparse, §6.3, §8.2 F3) over random S_t with −1 padding
 *    anywhere in the list and empty rows, MQA-form target with the lse over S_t;
 *  - sparse == dense when k ≥ L (top-k then selects every causal key);
 *  - dsa_indexer_sparse_recall against the fp64 captured dense mass;
 *  - identical bits on 1 and 3 OpenMP threads.
 *
 * Random numbers come from core/rng.h, so the file needs nothing beyond the library. */
#include <math.h>
#include <omp.h>
#include <stdbool.h>

#include "core/rng.h"
#include "indexer/indexer.h"
#include "kernels/backend.h"
#include "test_util.h"

/* ------------------------------------------------------------------------------------ */
/* helpers                                                                               */

static float uniform(DsaRng *r, float lo, float hi) { return lo + (hi - lo) * (float)dsa_rng_uniform(r); }

/* A scalar against its fp64 reference: |got − want| ≤ rel · |want| + abs_floor. */
static void expect_scalar(const char *what, double got, double want, double rel, double abs_floor) {
    const double err = fabs(got - want);
    if (!(err <= rel * fabs(want) + abs_floor))
        fail_msg("%s: got %.12g, want %.12g; abs error %.3g, rel %.3g (tolerance %.1g rel + %.1g)", what, got, want,
                 err, err / (fabs(want) > 0 ? fabs(want) : 1), rel, abs_floor);
}

static void set_threads(int threads) {
    dsa_backend_cpu_set_threads(threads);
    omp_set_num_threads(threads);
}

/* ------------------------------------------------------------------------------------ */
/* fp64 reference of the KL losses (§6.1) and their gradients (§7)                       */

/* The indexer's saved activations in fp64. */
typedef struct {
    const double *q, *k, *w; /* [N, H_I, d_I], [N, d_I], [N, H_I] */
    int64_t batch, L, HI, dI;
    double c;
} RefIdx;

/* The MLA target: MHA form (q, k [N, H, d]) or MQA form (q [N, H, d], kv [N, d]). */
typedef struct {
    const float *q, *k;
    int64_t H, d;
    bool mqa;
    double tau;
} RefTarget;

typedef struct {
    double kl, mass, selected;
    double *dq, *dk, *dw; /* NULL: no gradients */
} RefOut;

static double ref_logit(const RefTarget *tg, int64_t n, int64_t h, int64_t key_row) {
    const float *q = tg->q + (n * tg->H + h) * tg->d;
    const float *k = tg->mqa ? tg->k + key_row * tg->d : tg->k + (key_row * tg->H + h) * tg->d;
    double dot = 0;
    for (int64_t i = 0; i < tg->d; i++) dot += (double)q[i] * k[i];
    return tg->tau * dot;
}

/* I_n,key = c Σ_j w_j ReLU(u_j), u_j = q̂_n,j · k̂_key (u receives the H_I dots). */
static double ref_score(const RefIdx *ri, int64_t n, int64_t key_row, double *u) {
    double I = 0;
    for (int64_t j = 0; j < ri->HI; j++) {
        double dot = 0;
        for (int64_t d = 0; d < ri->dI; d++) dot += ri->q[(n * ri->HI + j) * ri->dI + d] * ri->k[key_row * ri->dI + d];
        u[j] = dot;
        I += ri->w[n * ri->HI + j] * (dot > 0 ? dot : 0);
    }
    return ri->c * I;
}

/* log Σ exp over x[0 … m). */
static double ref_lse(const double *x, int64_t m) {
    double mx = -INFINITY, sum = 0;
    for (int64_t i = 0; i < m; i++) mx = fmax(mx, x[i]);
    for (int64_t i = 0; i < m; i++) sum += exp(x[i] - mx);
    return mx + log(sum);
}

/* The naive per-row KL of every row n = b·L + t with support U_t = {0 … t} (sel NULL)
 * or the valid entries of sel[n, :K]: per-head softmax of the target over U_t in fp64
 * (its own exact lse), head mean p, π = softmax(I) over U_t, KL_t; the mass of p inside
 * mass_idx[n, :mass_k] (when given); gradients of g · Σ KL_t into o->dq/dk/dw (+=). */
static void ref_kl(RefOut *o, const RefIdx *ri, const RefTarget *tg, const int32_t *sel, int64_t K,
                   const int32_t *mass_idx, int64_t mass_k, double g) {
    const int64_t L = ri->L, N = ri->batch * L, HI = ri->HI, dI = ri->dI, H = tg->H;
    int64_t *U = malloc(sizeof(int64_t) * (size_t)L);
    double *a = test_dalloc(H * L), *I = test_dalloc(L), *p = test_dalloc(L), *u = test_dalloc(L * HI);
    for (int64_t n = 0; n < N; n++) {
        const int64_t b = n / L, t = n % L;
        int64_t m = 0;
        if (!sel)
            for (int64_t key = 0; key <= t; key++) U[m++] = key;
        else
            for (int64_t i = 0; i < K; i++)
                if (sel[n * K + i] >= 0) U[m++] = sel[n * K + i];
        o->selected += (double)m;
        if (m == 0) continue;
        for (int64_t i = 0; i < m; i++) p[i] = 0;
        for (int64_t h = 0; h < H; h++) {
            double *ah = a + h * L;
            for (int64_t i = 0; i < m; i++) ah[i] = ref_logit(tg, n, h, b * L + U[i]);
            const double lse = ref_lse(ah, m);
            for (int64_t i = 0; i < m; i++) p[i] += exp(ah[i] - lse) / (double)H;
        }
        for (int64_t i = 0; i < m; i++) I[i] = ref_score(ri, n, b * L + U[i], u + i * HI);
        const double lse_i = ref_lse(I, m);
        double kl = 0, mass = 0;
        for (int64_t i = 0; i < m; i++) {
            if (p[i] > 0) kl += p[i] * (log(p[i]) - (I[i] - lse_i));
            for (int64_t r = 0; mass_idx && r < mass_k; r++)
                if (mass_idx[n * mass_k + r] == U[i]) mass += p[i];
        }
        o->kl += kl, o->mass += mass;
        if (!o->dq) continue;
        for (int64_t i = 0; i < m; i++) {
            const double G = g * (exp(I[i] - lse_i) - p[i]);
            const int64_t key = b * L + U[i];
            for (int64_t j = 0; j < HI; j++) {
                const double uj = u[i * HI + j];
                o->dw[n * HI + j] += ri->c * G * (uj > 0 ? uj : 0);
                if (!(uj > 0)) continue;
                const double E = ri->c * G * ri->w[n * HI + j];
                for (int64_t d = 0; d < dI; d++) {
                    o->dq[(n * HI + j) * dI + d] += E * ri->k[key * dI + d];
                    o->dk[key * dI + d] += E * ri->q[(n * HI + j) * dI + d];
                }
            }
        }
    }
    free(U), free(a), free(I), free(p), free(u);
}

/* lse [batch, H, L] in fp64 (rounded to fp32) over {0 … t} (sel NULL) or over the valid
 * entries of sel[n, :K] (−∞ for a row without keys). */
static void ref_target_lse(float *lse, const RefTarget *tg, int64_t batch, int64_t L, const int32_t *sel, int64_t K) {
    double *x = test_dalloc(L > K ? L : K);
    for (int64_t b = 0; b < batch; b++)
        for (int64_t h = 0; h < tg->H; h++)
            for (int64_t t = 0; t < L; t++) {
                const int64_t n = b * L + t;
                int64_t m = 0;
                if (!sel)
                    for (int64_t key = 0; key <= t; key++) x[m++] = ref_logit(tg, n, h, b * L + key);
                else
                    for (int64_t i = 0; i < K; i++)
                        if (sel[n * K + i] >= 0) x[m++] = ref_logit(tg, n, h, b * L + sel[n * K + i]);
                lse[(b * tg->H + h) * L + t] = m ? (float)ref_lse(x, m) : -INFINITY;
            }
    free(x);
}

/* ------------------------------------------------------------------------------------ */
/* random cases                                                                          */

/* Hand-filled indexer activations (as the forward would leave them) and fp64 copies.
 * Head weights of mixed signs; every fifth token has only negative ones. */
typedef struct {
    DsaIndexerShape sh;
    DsaIndexerActs a;
    float *buf;
    double *q, *k, *w;
    RefIdx ri;
} ActsCase;

static ActsCase acts_case(int64_t batch, int64_t L, int64_t HI, int64_t dI, int64_t K, uint64_t seed) {
    ActsCase c;
    memset(&c, 0, sizeof c);
    c.sh = (DsaIndexerShape){.batch = batch, .seq_len = L, .heads = HI, .head_dim = dI, .rope_dim = dI / 2,
                             .q_in = 8, .x_in = 8, .topk = K, .fp8 = false,
                             .scale = 1.0f / sqrtf((float)(HI * dI)), .eps = 1e-6f};
    c.buf = test_falloc(dsa_indexer_acts_floats(&c.sh));
    dsa_indexer_acts_carve(&c.a, c.buf, &c.sh);
    const int64_t N = batch * L;
    DsaRng r = dsa_rng_init(seed, 1);
    for (int64_t i = 0; i < N * HI * dI; i++) c.a.q[i] = uniform(&r, -2, 2);
    for (int64_t i = 0; i < N * dI; i++) c.a.k[i] = uniform(&r, -1.5f, 1.5f);
    for (int64_t n = 0; n < N; n++)
        for (int64_t j = 0; j < HI; j++)
            c.a.w[n * HI + j] = n % 5 == 3 ? uniform(&r, -2, -0.1f) : uniform(&r, -1, 2);
    c.q = test_to_f64(c.a.q, N * HI * dI), c.k = test_to_f64(c.a.k, N * dI), c.w = test_to_f64(c.a.w, N * HI);
    c.ri = (RefIdx){.q = c.q, .k = c.k, .w = c.w, .batch = batch, .L = L, .HI = HI, .dI = dI, .c = c.sh.scale};
    return c;
}

static void acts_case_free(ActsCase *c) { free(c->buf), free(c->q), free(c->k), free(c->w); }

/* Random MLA queries and keys: MHA (k [N, H, d]) or MQA (kv [N, d]). */
typedef struct {
    float *q, *k, *lse;
    RefTarget rt;
} TargetCase;

static TargetCase target_case(int64_t batch, int64_t L, int64_t H, int64_t d, bool mqa, uint64_t seed) {
    TargetCase c;
    const int64_t N = batch * L;
    c.q = test_falloc(N * H * d), c.k = test_falloc(mqa ? N * d : N * H * d), c.lse = test_falloc(batch * H * L);
    DsaRng r = dsa_rng_init(seed, 2);
    for (int64_t i = 0; i < N * H * d; i++) c.q[i] = uniform(&r, -2, 2);
    for (int64_t i = 0; i < (mqa ? N * d : N * H * d); i++) c.k[i] = uniform(&r, -2, 2);
    c.rt = (RefTarget){.q = c.q, .k = c.k, .H = H, .d = d, .mqa = mqa, .tau = (double)(1.0f / sqrtf((float)d))};
    return c;
}

static void target_case_free(TargetCase *c) { free(c->q), free(c->k), free(c->lse); }

static DsaDenseTarget dense_target(const TargetCase *c) {
    return (DsaDenseTarget){.q = c->q, .k = c->k, .lse = c->lse, .heads = c->rt.H, .qk_dim = c->rt.d,
                            .scale = (float)c->rt.tau};
}

static DsaSparseTarget sparse_target(const TargetCase *c) {
    return (DsaSparseTarget){.q = c->q, .kv = c->k, .lse = c->lse, .heads = c->rt.H, .qk_dim = c->rt.d,
                             .scale = (float)c->rt.tau};
}

/* Random S_t: a random number (0 … min(K, t + 1)) of distinct keys of {0 … t} in
 * random slots of the K-list, −1 elsewhere; row 3 of sequence 1 (when present) is
 * empty and the last row of sequence 0 is full where K allows. */
static int32_t *random_selection(int64_t batch, int64_t L, int64_t K, uint64_t seed) {
    int32_t *idx = malloc(sizeof(int32_t) * (size_t)(batch * L * K));
    int32_t *perm = malloc(sizeof(int32_t) * (size_t)L);
    DsaRng r = dsa_rng_init(seed, 3);
    for (int64_t n = 0; n < batch * L; n++) {
        const int64_t t = n % L, avail = t + 1 < K ? t + 1 : K;
        int64_t m = (int64_t)dsa_rng_below(&r, (uint64_t)avail + 1);
        if (n == L + 3) m = 0;
        if (n == L - 1) m = avail;
        for (int64_t i = 0; i <= t; i++) perm[i] = (int32_t)i;
        for (int64_t i = 0; i < m; i++) { /* partial Fisher-Yates over the keys */
            int64_t j = i + (int64_t)dsa_rng_below(&r, (uint64_t)(t + 1 - i));
            int32_t tmp = perm[i];
            perm[i] = perm[j], perm[j] = tmp;
        }
        int32_t *row = idx + n * K;
        for (int64_t i = 0; i < K; i++) row[i] = i < m ? perm[i] : -1;
        for (int64_t i = K - 1; i > 0; i--) { /* shuffle the slots: −1 anywhere */
            int64_t j = (int64_t)dsa_rng_below(&r, (uint64_t)i + 1);
            int32_t tmp = row[i];
            row[i] = row[j], row[j] = tmp;
        }
    }
    free(perm);
    return idx;
}

/* The scores of a selection from the fp64 reference I (rounded to fp32), −∞ at −1. */
static float *selection_scores(const ActsCase *c, const int32_t *idx, int64_t K) {
    const int64_t L = c->sh.seq_len, N = c->sh.batch * L;
    float *sc = test_falloc(N * K);
    double u[64];
    assert_true(c->sh.heads <= 64);
    for (int64_t n = 0; n < N; n++)
        for (int64_t i = 0; i < K; i++) {
            const int32_t key = idx[n * K + i];
            sc[n * K + i] = key < 0 ? -INFINITY : (float)ref_score(&c->ri, n, n / L * L + key, u);
        }
    return sc;
}

/* ------------------------------------------------------------------------------------ */
/* 1. fused dense KL vs the naive fp64 rows                                              */

static void check_dense(int64_t L, uint64_t seed) {
    const int64_t B = 2, HI = 4, dI = 16, H = 3, dqk = 12, K = 5, N = B * L;
    ActsCase c = acts_case(B, L, HI, dI, K, seed);
    TargetCase tc = target_case(B, L, H, dqk, false, seed + 1);
    ref_target_lse(tc.lse, &tc.rt, B, L, NULL, 0);
    int32_t *idx = malloc(sizeof(int32_t) * (size_t)(N * K));
    float *isc = test_falloc(N * K);
    assert_ok(dsa_indexer_topk(idx, isc, &c.a, &c.sh));
    const float g = 0.37f;
    float *dq = test_falloc(N * HI * dI), *dk = test_falloc(N * dI), *dw = test_falloc(N * HI);
    for (int64_t i = 0; i < N * dI; i++) dk[i] = NAN; /* overwritten, not accumulated */
    DsaIndexerLoss out = {0};
    const DsaDenseTarget tg = dense_target(&tc);
    assert_ok(dsa_indexer_kl_dense(&out, dq, dk, dw, &c.a, &c.sh, &tg, idx, isc, g));

    RefOut ref = {.dq = test_dalloc(N * HI * dI), .dk = test_dalloc(N * dI), .dw = test_dalloc(N * HI)};
    ref_kl(&ref, &c.ri, &tc.rt, NULL, 0, idx, K, g);
    double sel_want = 0;
    for (int64_t n = 0; n < N; n++) sel_want += (double)(n % L + 1 < K ? n % L + 1 : K);
    char what[160];
    snprintf(what, sizeof what, "dense KL sum, L %lld", (long long)L);
    expect_scalar(what, out.kl_sum, ref.kl, 1e-5, 1e-6 * (double)N);
    snprintf(what, sizeof what, "dense captured mass, L %lld", (long long)L);
    expect_scalar(what, out.mass_sum, ref.mass, 1e-5, 1e-6 * (double)N);
    assert_int_equal(out.rows, N);
    assert_int_equal(out.mass_rows, N);
    assert_true(out.selected_sum == sel_want);
    snprintf(what, sizeof what, "dense KL dq, L %lld", (long long)L);
    test_expect_close(what, dq, ref.dq, N * HI * dI, 1e-4);
    snprintf(what, sizeof what, "dense KL dk, L %lld", (long long)L);
    test_expect_close(what, dk, ref.dk, N * dI, 1e-4);
    snprintf(what, sizeof what, "dense KL dw, L %lld", (long long)L);
    test_expect_close(what, dw, ref.dw, N * HI, 1e-4);
    print_message("dense KL L %3lld: KL sum %.6f (ref %.6f), mass %.6f (ref %.6f), rel err dq %.2e dk %.2e dw %.2e\n",
                  (long long)L, out.kl_sum, ref.kl, out.mass_sum, ref.mass, test_rel_error(dq, ref.dq, N * HI * dI),
                  test_rel_error(dk, ref.dk, N * dI), test_rel_error(dw, ref.dw, N * HI));

    /* no gradients (NULL buffers) and no mass: the same loss bits; sums accumulate */
    DsaIndexerLoss out2 = {.kl_sum = 1.0, .rows = 3};
    assert_ok(dsa_indexer_kl_dense(&out2, NULL, NULL, NULL, &c.a, &c.sh, &tg, NULL, NULL, 0.0f));
    assert_true(out2.kl_sum == 1.0 + out.kl_sum);
    assert_int_equal(out2.rows, 3 + N);
    assert_true(out2.mass_sum == 0 && out2.mass_rows == 0 && out2.selected_sum == 0);

    free(ref.dq), free(ref.dk), free(ref.dw);
    free(idx), free(isc), free(dq), free(dk), free(dw);
    target_case_free(&tc);
    acts_case_free(&c);
}

static void test_kl_dense(void **state) {
    (void)state;
    static const int64_t lens[] = {1, 7, 33, 130};
    for (int i = 0; i < 4; i++) check_dense(lens[i], 100 + 10 * (uint64_t)i);
}

/* ------------------------------------------------------------------------------------ */
/* 2a. ∂KL/∂I = π − p by central differences (the reference's own formula)              */

static double kl_of_scores(const double *I, const double *p, int64_t m) {
    const double lse = ref_lse(I, m);
    double kl = 0;
    for (int64_t i = 0; i < m; i++)
        if (p[i] > 0) kl += p[i] * (log(p[i]) - (I[i] - lse));
    return kl;
}

static void test_kl_gradient_formula(void **state) {
    (void)state;
    DsaRng r = dsa_rng_init(7, 4);
    for (int64_t m = 1; m <= 9; m += 4) {
        double I[9], p[9], a[3][9];
        for (int64_t i = 0; i < m; i++) I[i] = 3 * dsa_rng_normal(&r), p[i] = 0;
        for (int h = 0; h < 3; h++) { /* p: the head mean of three softmaxes */
            for (int64_t i = 0; i < m; i++) a[h][i] = 2 * dsa_rng_normal(&r);
            const double lse = ref_lse(a[h], m);
            for (int64_t i = 0; i < m; i++) p[i] += exp(a[h][i] - lse) / 3;
        }
        if (m == 9) p[5] += p[4], p[4] = 0; /* a zero target entry: p log p = 0 */
        const double lse = ref_lse(I, m);
        double worst = 0, amax = 0;
        int64_t at = 0;
        for (int64_t i = 0; i < m; i++) {
            const double h = 1e-5, keep = I[i];
            I[i] = keep + h;
            const double up = kl_of_scores(I, p, m);
            I[i] = keep - h;
            const double down = kl_of_scores(I, p, m);
            I[i] = keep;
            const double fd = (up - down) / (2 * h), grad = exp(I[i] - lse) - p[i];
            amax = fmax(amax, fabs(fd));
            if (fabs(grad - fd) > worst) worst = fabs(grad - fd), at = i;
        }
        print_message("dKL/dI = pi - p vs central differences, %lld keys: max abs error %.2e (max |grad| %.3g)\n",
                      (long long)m, worst, amax);
        if (!(worst <= 1e-6 * amax + 1e-12))
            fail_msg("dKL/dI = pi - p, %lld keys: worst key %lld, abs error %.3g > 1e-6 of max |grad| %.3g",
                     (long long)m, (long long)at, worst, amax);
    }
}

/* ------------------------------------------------------------------------------------ */
/* 2b. the full indexer: fp64 forward and backward chain, finite differences             */

enum { NW = 5 }; /* wq_b, wk, k_norm.weight, k_norm.bias, weights_proj */
static const char *const W_NAMES[NW] = {"wq_b", "wk", "k_norm.weight", "k_norm.bias", "weights_proj"};

typedef struct {
    DsaIndexerShape sh;
    float *x, *cq;            /* [N, x_in], [N, q_in] */
    float *wt[NW];            /* fp32 weights */
    double *wd[NW];           /* fp64 copies (the FD perturbs these) */
    int64_t wn[NW];           /* entries */
    double wscale[NW];        /* RMS of each tensor */
    float *cos, *sin;         /* [L, d_r / 2] */
    double *xd, *cqd, *hm;    /* fp64 inputs; Ĥ [d_I, d_I] */
    TargetCase tc;
    /* fp64 forward results */
    double *rq, *rk, *rkn, *rrstd, *rw;
} FullCase;

/* §5: q = RoPE(W_qI cQ) then Ĥ; k = Ĥ RoPE(LayerNorm(W_kI x)); w = W_w x, in fp64 with
 * the fp32 angle tables and the explicit matrix Ĥ[i][j] = (−1)^popcount(i AND j)/√d_I. */
static void ref_forward(FullCase *c, double *const *W) {
    const DsaIndexerShape *sh = &c->sh;
    const int64_t L = sh->seq_len, N = sh->batch * L, HI = sh->heads, dI = sh->head_dim, half = sh->rope_dim / 2;
    double v[256];
    assert_true(dI <= 256);
    for (int64_t n = 0; n < N; n++) {
        const int64_t t = n % L;
        const double *cq = c->cqd + n * sh->q_in, *x = c->xd + n * sh->x_in;
        for (int64_t j = 0; j <= HI; j++) { /* j < HI: query heads; j == HI: the key */
            if (j < HI) {
                for (int64_t i = 0; i < dI; i++) {
                    double s = 0;
                    for (int64_t e = 0; e < sh->q_in; e++) s += W[0][(j * dI + i) * sh->q_in + e] * cq[e];
                    v[i] = s;
                }
            } else {
                double mean = 0, var = 0;
                for (int64_t i = 0; i < dI; i++) {
                    double s = 0;
                    for (int64_t e = 0; e < sh->x_in; e++) s += W[1][i * sh->x_in + e] * x[e];
                    v[i] = s, mean += s;
                }
                mean /= (double)dI;
                for (int64_t i = 0; i < dI; i++) var += (v[i] - mean) * (v[i] - mean);
                var /= (double)dI;
                const double rstd = 1 / sqrt(var + (double)sh->eps);
                c->rrstd[n] = rstd;
                for (int64_t i = 0; i < dI; i++) {
                    c->rkn[n * dI + i] = (v[i] - mean) * rstd;
                    v[i] = W[2][i] * c->rkn[n * dI + i] + W[3][i];
                }
            }
            for (int64_t i = 0; i < half; i++) { /* NeoX pairs (i, i + d_r/2) */
                const double cs = c->cos[t * half + i], sn = c->sin[t * half + i], a = v[i], b = v[i + half];
                v[i] = a * cs - b * sn, v[i + half] = a * sn + b * cs;
            }
            double *out = j < HI ? c->rq + (n * HI + j) * dI : c->rk + n * dI;
            for (int64_t i = 0; i < dI; i++) {
                double s = 0;
                for (int64_t e = 0; e < dI; e++) s += c->hm[i * dI + e] * v[e];
                out[i] = s;
            }
        }
        for (int64_t j = 0; j < HI; j++) {
            double s = 0;
            for (int64_t e = 0; e < sh->x_in; e++) s += W[4][j * sh->x_in + e] * x[e];
            c->rw[n * HI + j] = s;
        }
    }
}

/* loss = Σ_t KL_t / N of the fp64 forward with weights W. */
static double ref_full_loss(FullCase *c, double *const *W) {
    ref_forward(c, W);
    const RefIdx ri = {.q = c->rq, .k = c->rk, .w = c->rw, .batch = c->sh.batch, .L = c->sh.seq_len,
                       .HI = c->sh.heads, .dI = c->sh.head_dim, .c = c->sh.scale};
    RefOut o = {0};
    ref_kl(&o, &ri, &c->tc.rt, NULL, 0, NULL, 0, 0);
    return o.kl / (double)(c->sh.batch * c->sh.seq_len);
}

static FullCase full_case(int64_t L, int64_t HI, int64_t dI, int64_t dr, uint64_t seed) {
    FullCase c;
    memset(&c, 0, sizeof c);
    c.sh = (DsaIndexerShape){.batch = 2, .seq_len = L, .heads = HI, .head_dim = dI, .rope_dim = dr, .q_in = 24,
                             .x_in = 40, .topk = 4, .fp8 = false, .scale = 1.0f / sqrtf((float)(HI * dI)),
                             .eps = 1e-6f};
    const int64_t N = 2 * L;
    DsaRng r = dsa_rng_init(seed, 5);
    c.x = test_falloc(N * c.sh.x_in), c.cq = test_falloc(N * c.sh.q_in);
    for (int64_t i = 0; i < N * c.sh.x_in; i++) c.x[i] = (float)dsa_rng_normal(&r);
    for (int64_t i = 0; i < N * c.sh.q_in; i++) c.cq[i] = (float)dsa_rng_normal(&r);
    c.wn[0] = HI * dI * c.sh.q_in, c.wn[1] = dI * c.sh.x_in, c.wn[2] = dI, c.wn[3] = dI, c.wn[4] = HI * c.sh.x_in;
    for (int w = 0; w < NW; w++) {
        c.wt[w] = test_falloc(c.wn[w]);
        double ss = 0;
        for (int64_t i = 0; i < c.wn[w]; i++) {
            c.wt[w][i] = (float)((w == 2 ? 1.0 : 0.0) + 0.3 * dsa_rng_normal(&r)); /* γ around 1 */
            ss += (double)c.wt[w][i] * c.wt[w][i];
        }
        c.wd[w] = test_to_f64(c.wt[w], c.wn[w]);
        c.wscale[w] = sqrt(ss / (double)c.wn[w]);
    }
    float freq[128];
    assert_true(dr / 2 <= 128);
    dsa_rope_frequencies(freq, dr, 10000.0, "", 1.0, 0, 0, 0);
    c.cos = test_falloc(L * dr / 2), c.sin = test_falloc(L * dr / 2);
    dsa_rope_tables(c.cos, c.sin, freq, L, dr);
    c.xd = test_to_f64(c.x, N * c.sh.x_in), c.cqd = test_to_f64(c.cq, N * c.sh.q_in);
    c.hm = test_dalloc(dI * dI);
    for (int64_t i = 0; i < dI; i++)
        for (int64_t j = 0; j < dI; j++)
            c.hm[i * dI + j] = (__builtin_popcountll((unsigned long long)(i & j)) & 1 ? -1.0 : 1.0) / sqrt((double)dI);
    c.tc = target_case(2, L, 2, 8, false, seed + 7);
    ref_target_lse(c.tc.lse, &c.tc.rt, 2, L, NULL, 0);
    c.rq = test_dalloc(N * HI * dI), c.rk = test_dalloc(N * dI), c.rkn = test_dalloc(N * dI);
    c.rrstd = test_dalloc(N), c.rw = test_dalloc(N * HI);
    return c;
}

static void full_case_free(FullCase *c) {
    free(c->x), free(c->cq), free(c->cos), free(c->sin), free(c->xd), free(c->cqd), free(c->hm);
    for (int w = 0; w < NW; w++) free(c->wt[w]), free(c->wd[w]);
    free(c->rq), free(c->rk), free(c->rkn), free(c->rrstd), free(c->rw);
    target_case_free(&c->tc);
}

static DsaIndexerWeights weights_of(float *const *wt) {
    return (DsaIndexerWeights){.wq_b = wt[0], .wk = wt[1], .k_norm_weight = wt[2], .k_norm_bias = wt[3],
                               .weights_proj = wt[4]};
}

/* The implementation's loss Σ KL / N (fp32 compute) with fp32 weights wt. */
static double impl_loss(const FullCase *c, float *const *wt, float *actbuf) {
    DsaIndexerActs a;
    dsa_indexer_acts_carve(&a, actbuf, &c->sh);
    const DsaIndexerWeights W = weights_of(wt);
    dsa_indexer_forward(&a, c->x, c->cq, &W, &c->sh, c->cos, c->sin, dsa_backend_cpu());
    DsaIndexerLoss out = {0};
    const DsaDenseTarget tg = dense_target(&c->tc);
    assert_ok(dsa_indexer_kl_dense(&out, NULL, NULL, NULL, &a, &c->sh, &tg, NULL, NULL, 0.0f));
    return out.kl_sum / (double)(c->sh.batch * c->sh.seq_len);
}

/* Forward, dense KL with grad_scale 1/N, backward: parameter gradients into g[w]
 * (zeroed first); the activations stay in actbuf. */
static void impl_grads(const FullCase *c, float **g, float *actbuf) {
    const DsaIndexerShape *sh = &c->sh;
    const int64_t N = sh->batch * sh->seq_len;
    DsaIndexerActs a;
    dsa_indexer_acts_carve(&a, actbuf, sh);
    const DsaIndexerWeights W = weights_of(c->wt);
    dsa_indexer_forward(&a, c->x, c->cq, &W, sh, c->cos, c->sin, dsa_backend_cpu());
    float *dq = test_falloc(N * sh->heads * sh->head_dim), *dk = test_falloc(N * sh->head_dim), *dw = test_falloc(N * sh->heads);
    DsaIndexerLoss out = {0};
    const DsaDenseTarget tg = dense_target(&c->tc);
    assert_ok(dsa_indexer_kl_dense(&out, dq, dk, dw, &a, sh, &tg, NULL, NULL, 1.0f / (float)N));
    for (int w = 0; w < NW; w++) memset(g[w], 0, sizeof(float) * (size_t)c->wn[w]);
    const DsaIndexerGrads G = {.wq_b = g[0], .wk = g[1], .k_norm_weight = g[2], .k_norm_bias = g[3],
                               .weights_proj = g[4]};
    dsa_indexer_backward(&G, dq, dk, dw, &a, c->x, c->cq, &W, sh, c->cos, c->sin, dsa_backend_cpu());
    free(dq), free(dk), free(dw);
}

/* The implementation's forward against the fp64 forward (q̂, k̂, w, LayerNorm state). */
static void check_forward(FullCase *c, const DsaIndexerActs *a) {
    const DsaIndexerShape *sh = &c->sh;
    const int64_t N = sh->batch * sh->seq_len, HI = sh->heads, dI = sh->head_dim;
    ref_forward(c, c->wd);
    test_expect_close("forward q", a->q, c->rq, N * HI * dI, 1e-5);
    test_expect_close("forward k", a->k, c->rk, N * dI, 1e-5);
    test_expect_close("forward w", a->w, c->rw, N * HI, 1e-5);
    test_expect_close("forward k_norm", a->k_norm, c->rkn, N * dI, 1e-5);
    test_expect_close("forward k_rstd", a->k_rstd, c->rrstd, N, 1e-5);
}

/* §7 steps 1-5 in fp64 from arbitrary upstream dq, dk, dw: Ĥ (symmetric), RoPE by −φ,
 * LayerNorm backward from the fp64 forward's n and 1/σ, the three weight gradients. */
static void ref_backward(double **g, const FullCase *c, const float *dq, const float *dk, const float *dw) {
    const DsaIndexerShape *sh = &c->sh;
    const int64_t L = sh->seq_len, N = sh->batch * L, HI = sh->heads, dI = sh->head_dim, half = sh->rope_dim / 2;
    double v[256], y[256];
    for (int64_t n = 0; n < N; n++) {
        const int64_t t = n % L;
        for (int64_t j = 0; j <= HI; j++) {
            const float *src = j < HI ? dq + (n * HI + j) * dI : dk + n * dI;
            for (int64_t i = 0; i < dI; i++) {
                double s = 0;
                for (int64_t e = 0; e < dI; e++) s += c->hm[i * dI + e] * src[e];
                v[i] = s;
            }
            for (int64_t i = 0; i < half; i++) { /* transpose of the rotation: rotation by −φ */
                const double cs = c->cos[t * half + i], sn = c->sin[t * half + i], a = v[i], b = v[i + half];
                v[i] = a * cs + b * sn, v[i + half] = -a * sn + b * cs;
            }
            if (j < HI) {
                for (int64_t i = 0; i < dI; i++)
                    for (int64_t e = 0; e < sh->q_in; e++)
                        g[0][(j * dI + i) * sh->q_in + e] += v[i] * c->cqd[n * sh->q_in + e];
                continue;
            }
            /* LayerNorm: k = γ n + β, n = (k̃ − μ) / σ; explicit Jacobian of n w.r.t. k̃:
             * ∂n_i/∂k̃_e = (δ_ie − 1/d − n_i n_e / d) / σ */
            const double *nn = c->rkn + n * dI, rstd = c->rrstd[n];
            for (int64_t i = 0; i < dI; i++) g[2][i] += v[i] * nn[i], g[3][i] += v[i];
            for (int64_t e = 0; e < dI; e++) {
                double s = 0;
                for (int64_t i = 0; i < dI; i++)
                    s += v[i] * c->wd[2][i] * ((i == e ? 1.0 : 0.0) - 1.0 / (double)dI - nn[i] * nn[e] / (double)dI) *
                         rstd;
                y[e] = s;
            }
            for (int64_t i = 0; i < dI; i++)
                for (int64_t e = 0; e < sh->x_in; e++) g[1][i * sh->x_in + e] += y[i] * c->xd[n * sh->x_in + e];
        }
        for (int64_t j = 0; j < HI; j++)
            for (int64_t e = 0; e < sh->x_in; e++)
                g[4][j * sh->x_in + e] += (double)dw[n * HI + j] * c->xd[n * sh->x_in + e];
    }
}

/* dsa_indexer_backward on random upstream gradients against ref_backward; then the
 * accumulation (+=) and NULL entries. Forward with or without FP8 (straight-through:
 * the backward is the same chain either way). */
static void check_backward_chain(FullCase *c, bool fp8) {
    DsaIndexerShape sh = c->sh;
    sh.fp8 = fp8;
    const int64_t N = sh.batch * sh.seq_len, HI = sh.heads, dI = sh.head_dim;
    float *actbuf = test_falloc(dsa_indexer_acts_floats(&sh));
    DsaIndexerActs a;
    dsa_indexer_acts_carve(&a, actbuf, &sh);
    const DsaIndexerWeights W = weights_of(c->wt);
    dsa_indexer_forward(&a, c->x, c->cq, &W, &sh, c->cos, c->sin, dsa_backend_cpu());
    ref_forward(c, c->wd);
    DsaRng r = dsa_rng_init(99 + fp8, 6);
    float *dq0 = test_falloc(N * HI * dI), *dk0 = test_falloc(N * dI), *dw = test_falloc(N * HI);
    float *dq = test_falloc(N * HI * dI), *dk = test_falloc(N * dI);
    for (int64_t i = 0; i < N * HI * dI; i++) dq0[i] = (float)dsa_rng_normal(&r);
    for (int64_t i = 0; i < N * dI; i++) dk0[i] = (float)dsa_rng_normal(&r);
    for (int64_t i = 0; i < N * HI; i++) dw[i] = (float)dsa_rng_normal(&r);
    float *g[NW];
    double *want[NW];
    for (int w = 0; w < NW; w++) g[w] = test_falloc(c->wn[w]), want[w] = test_dalloc(c->wn[w]);
    memcpy(dq, dq0, sizeof(float) * (size_t)(N * HI * dI));
    memcpy(dk, dk0, sizeof(float) * (size_t)(N * dI));
    DsaIndexerGrads G = {.wq_b = g[0], .wk = g[1], .k_norm_weight = g[2], .k_norm_bias = g[3], .weights_proj = g[4]};
    dsa_indexer_backward(&G, dq, dk, dw, &a, c->x, c->cq, &W, &sh, c->cos, c->sin, dsa_backend_cpu());
    ref_backward(want, c, dq0, dk0, dw);
    char what[96];
    for (int w = 0; w < NW; w++) {
        snprintf(what, sizeof what, "backward chain %s (fp8 %d)", W_NAMES[w], fp8);
        test_expect_close(what, g[w], want[w], c->wn[w], 1e-5);
    }
    print_message("backward chain (fp8 %d): rel err wq_b %.2e wk %.2e gamma %.2e beta %.2e weights_proj %.2e\n", fp8,
                  test_rel_error(g[0], want[0], c->wn[0]), test_rel_error(g[1], want[1], c->wn[1]),
                  test_rel_error(g[2], want[2], c->wn[2]), test_rel_error(g[3], want[3], c->wn[3]),
                  test_rel_error(g[4], want[4], c->wn[4]));
    /* again, accumulating into the first result, with wk and k_norm.bias not wanted */
    float *first[NW];
    for (int w = 0; w < NW; w++) {
        first[w] = test_falloc(c->wn[w]);
        memcpy(first[w], g[w], sizeof(float) * (size_t)c->wn[w]);
    }
    memcpy(dq, dq0, sizeof(float) * (size_t)(N * HI * dI));
    memcpy(dk, dk0, sizeof(float) * (size_t)(N * dI));
    G.wk = NULL, G.k_norm_bias = NULL;
    dsa_indexer_backward(&G, dq, dk, dw, &a, c->x, c->cq, &W, &sh, c->cos, c->sin, dsa_backend_cpu());
    for (int w = 0; w < NW; w++) {
        const bool skipped = w == 1 || w == 3;
        for (int64_t i = 0; i < c->wn[w]; i++) {
            const float expect = skipped ? first[w][i] : first[w][i] + first[w][i];
            if (!(fabsf(g[w][i] - expect) <= 1e-6f * fabsf(expect) + 1e-7f))
                fail_msg("backward accumulation %s[%lld] (%s): %.9g, want %.9g", W_NAMES[w], (long long)i,
                         skipped ? "NULL, untouched" : "+= twice", g[w][i], expect);
        }
        free(first[w]);
    }
    for (int w = 0; w < NW; w++) free(g[w]), free(want[w]);
    free(dq0), free(dk0), free(dw), free(dq), free(dk), free(actbuf);
}

/* Finite differences of the loss against the implementation's gradients. */
static void check_full_fd(int64_t L, int64_t HI, int64_t dI, int64_t dr, uint64_t seed) {
    FullCase c = full_case(L, HI, dI, dr, seed);
    const DsaIndexerShape *sh = &c.sh;
    float *actbuf = test_falloc(dsa_indexer_acts_floats(sh));
    float *g[NW];
    for (int w = 0; w < NW; w++) g[w] = test_falloc(c.wn[w]);
    impl_grads(&c, g, actbuf);
    {
        DsaIndexerActs a;
        dsa_indexer_acts_carve(&a, actbuf, sh);
        check_forward(&c, &a);
    }
    check_backward_chain(&c, false);
    check_backward_chain(&c, true);
    const double loss64 = ref_full_loss(&c, c.wd), loss32 = impl_loss(&c, c.wt, actbuf);
    expect_scalar("full loss fp32 vs fp64", loss32, loss64, 1e-5, 1e-7);
    assert_true(loss64 > 1e-3); /* a loss worth differentiating */

    /* (a) fp64 reference loss: every entry of the small tensors, h = 1e-5 · RMS */
    char what[128];
    for (int w = 1; w < NW; w++) {
        double *fd = test_dalloc(c.wn[w]);
        const double h = 1e-5 * c.wscale[w];
        for (int64_t i = 0; i < c.wn[w]; i++) {
            const double keep = c.wd[w][i];
            c.wd[w][i] = keep + h;
            const double up = ref_full_loss(&c, c.wd);
            c.wd[w][i] = keep - h;
            const double down = ref_full_loss(&c, c.wd);
            c.wd[w][i] = keep;
            fd[i] = (up - down) / (2 * h);
        }
        snprintf(what, sizeof what, "d loss / d %s vs fp64 central differences (L %lld, d_I %lld)", W_NAMES[w],
                 (long long)L, (long long)dI);
        double gmax = 0;
        for (int64_t i = 0; i < c.wn[w]; i++) gmax = fmax(gmax, fabs(fd[i]));
        print_message("FD fp64, every entry: %-13s rel err %.2e (max |grad| %.3g)\n", W_NAMES[w],
                      test_rel_error(g[w], fd, c.wn[w]), gmax);
        test_expect_close(what, g[w], fd, c.wn[w], 1e-4);
        free(fd);
    }
    /* (b) random directions for all five tensors, fp64 reference loss (h = 1e-5) and the
     * implementation's fp32 loss (h = 1e-3), both relative to the weights' RMS. v ~ N(0, I),
     * so a typical g · v is of size ‖g‖; errors are measured relative to max(|FD|, ‖g‖)
     * (a direction nearly orthogonal to g would otherwise turn the fp32 loss's rounding
     * noise, ~1e-7 / 2h, into a large relative error of a tiny difference). */
    float *wp[NW];
    for (int w = 0; w < NW; w++) wp[w] = c.wt[w];
    DsaRng r = dsa_rng_init(seed, 8);
    for (int w = 0; w < NW; w++)
        for (int dir = 0; dir < 2; dir++) {
            double *v = test_dalloc(c.wn[w]), analytic = 0, gnorm = 0;
            for (int64_t i = 0; i < c.wn[w]; i++) {
                v[i] = dsa_rng_normal(&r);
                analytic += v[i] * g[w][i], gnorm += (double)g[w][i] * g[w][i];
            }
            gnorm = sqrt(gnorm);
            double fd64, fd32;
            {
                const double h = 1e-5 * c.wscale[w];
                double *save = test_to_f64(c.wt[w], c.wn[w]);
                for (int64_t i = 0; i < c.wn[w]; i++) c.wd[w][i] = save[i] + h * v[i];
                const double up = ref_full_loss(&c, c.wd);
                for (int64_t i = 0; i < c.wn[w]; i++) c.wd[w][i] = save[i] - h * v[i];
                const double down = ref_full_loss(&c, c.wd);
                memcpy(c.wd[w], save, sizeof(double) * (size_t)c.wn[w]);
                fd64 = (up - down) / (2 * h);
                free(save);
            }
            {
                const double h = 1e-3 * c.wscale[w];
                float *pert = test_falloc(c.wn[w]);
                wp[w] = pert;
                for (int64_t i = 0; i < c.wn[w]; i++) pert[i] = (float)(c.wt[w][i] + h * v[i]);
                const double up = impl_loss(&c, wp, actbuf);
                for (int64_t i = 0; i < c.wn[w]; i++) pert[i] = (float)(c.wt[w][i] - h * v[i]);
                const double down = impl_loss(&c, wp, actbuf);
                wp[w] = c.wt[w];
                free(pert);
                fd32 = (up - down) / (2 * h);
            }
            const double e64 = fabs(analytic - fd64) / fmax(fabs(fd64), gnorm);
            const double e32 = fabs(analytic - fd32) / fmax(fabs(fd32), gnorm);
            print_message("FD direction %d %-13s: analytic %+.6e, fp64 FD %+.6e (err %.1e), fp32 FD %+.6e (err "
                          "%.1e); errors relative to max(|FD|, |g| = %.3g)\n",
                          dir, W_NAMES[w], analytic, fd64, e64, fd32, e32, gnorm);
            if (!(e64 <= 1e-4))
                fail_msg("%s direction %d: analytic %.9g vs fp64 FD %.9g: rel error %.3g > 1e-4", W_NAMES[w], dir,
                         analytic, fd64, e64);
            if (!(e32 <= 2e-2))
                fail_msg("%s direction %d: analytic %.9g vs fp32 FD %.9g: rel error %.3g > 2e-2", W_NAMES[w], dir,
                         analytic, fd32, e32);
            free(v);
        }
    for (int w = 0; w < NW; w++) free(g[w]);
    free(actbuf);
    full_case_free(&c);
}

static void test_full_indexer_fd(void **state) {
    (void)state;
    check_full_fd(9, 4, 32, 16, 2024);
    check_full_fd(5, 2, 16, 4, 77);
}

/* ------------------------------------------------------------------------------------ */
/* 3. sparse KL over random S_t                                                          */

static void check_sparse(int64_t L, uint64_t seed) {
    const int64_t B = 2, HI = 4, dI = 16, H = 3, dm = 10, K = 6, N = B * L;
    ActsCase c = acts_case(B, L, HI, dI, K, seed);
    TargetCase tc = target_case(B, L, H, dm, true, seed + 1);
    int32_t *idx = random_selection(B, L, K, seed + 2);
    ref_target_lse(tc.lse, &tc.rt, B, L, idx, K);
    float *isc = selection_scores(&c, idx, K);
    const float g = -0.61f;
    float *dq = test_falloc(N * HI * dI), *dk = test_falloc(N * dI), *dw = test_falloc(N * HI);
    for (int64_t i = 0; i < N * HI; i++) dw[i] = NAN; /* overwritten, not accumulated */
    DsaIndexerLoss out = {0};
    const DsaSparseTarget tg = sparse_target(&tc);
    assert_ok(dsa_indexer_kl_sparse(&out, dq, dk, dw, &c.a, &c.sh, &tg, idx, isc, g));
    RefOut ref = {.dq = test_dalloc(N * HI * dI), .dk = test_dalloc(N * dI), .dw = test_dalloc(N * HI)};
    ref_kl(&ref, &c.ri, &tc.rt, idx, K, NULL, 0, g);
    char what[160];
    snprintf(what, sizeof what, "sparse KL sum, L %lld", (long long)L);
    expect_scalar(what, out.kl_sum, ref.kl, 1e-5, 1e-6 * (double)N);
    if (!(out.selected_sum == ref.selected))
        fail_msg("sparse selected_sum %.17g, want %.17g", out.selected_sum, ref.selected);
    assert_int_equal(out.rows, N);
    snprintf(what, sizeof what, "sparse KL dq, L %lld", (long long)L);
    test_expect_close(what, dq, ref.dq, N * HI * dI, 1e-4);
    snprintf(what, sizeof what, "sparse KL dk, L %lld", (long long)L);
    test_expect_close(what, dk, ref.dk, N * dI, 1e-4);
    snprintf(what, sizeof what, "sparse KL dw, L %lld", (long long)L);
    test_expect_close(what, dw, ref.dw, N * HI, 1e-4);
    print_message("sparse KL L %3lld: KL sum %.6f (ref %.6f), selected %.0f, rel err dq %.2e dk %.2e dw %.2e\n",
                  (long long)L, out.kl_sum, ref.kl, out.selected_sum, test_rel_error(dq, ref.dq, N * HI * dI),
                  test_rel_error(dk, ref.dk, N * dI), test_rel_error(dw, ref.dw, N * HI));
    /* no gradients: the same loss bits */
    DsaIndexerLoss out2 = {0};
    assert_ok(dsa_indexer_kl_sparse(&out2, NULL, NULL, NULL, &c.a, &c.sh, &tg, idx, isc, 0.0f));
    assert_true(out2.kl_sum == out.kl_sum && out2.selected_sum == out.selected_sum);
    free(ref.dq), free(ref.dk), free(ref.dw);
    free(idx), free(isc), free(dq), free(dk), free(dw);
    target_case_free(&tc);
    acts_case_free(&c);
}

static void test_kl_sparse(void **state) {
    (void)state;
    static const int64_t lens[] = {1, 7, 33, 130};
    for (int i = 0; i < 4; i++) check_sparse(lens[i], 300 + 10 * (uint64_t)i);
}

/* ------------------------------------------------------------------------------------ */
/* 4. k ≥ L: sparse KL == dense KL                                                       */

/* MQA target (Q, kv) and the MHA target with k_h = kv for every head: equal logits. */
static float *expand_kv(const TargetCase *mqa, int64_t N) {
    const int64_t H = mqa->rt.H, d = mqa->rt.d;
    float *k = test_falloc(N * H * d);
    for (int64_t n = 0; n < N; n++)
        for (int64_t h = 0; h < H; h++) memcpy(k + (n * H + h) * d, mqa->k + n * d, sizeof(float) * (size_t)d);
    return k;
}

static void check_sparse_equals_dense(int64_t L, int64_t K, uint64_t seed) {
    const int64_t B = 2, HI = 4, dI = 16, H = 3, dm = 10, N = B * L;
    ActsCase c = acts_case(B, L, HI, dI, K, seed);
    TargetCase tc = target_case(B, L, H, dm, true, seed + 1);
    ref_target_lse(tc.lse, &tc.rt, B, L, NULL, 0); /* dense lse = lse over S_t = {0 … t} */
    int32_t *idx = malloc(sizeof(int32_t) * (size_t)(N * K));
    float *isc = test_falloc(N * K);
    assert_ok(dsa_indexer_topk(idx, isc, &c.a, &c.sh));
    for (int64_t n = 0; n < N; n++) { /* every causal key selected once */
        int64_t count = 0;
        for (int64_t i = 0; i < K; i++) count += idx[n * K + i] >= 0 && idx[n * K + i] <= n % L;
        assert_int_equal(count, n % L + 1);
    }
    float *kmha = expand_kv(&tc, N);
    const DsaDenseTarget dt = {
        .q = tc.q, .k = kmha, .lse = tc.lse, .heads = H, .qk_dim = dm, .scale = (float)tc.rt.tau};
    const DsaSparseTarget st = sparse_target(&tc);
    const float g = 1.0f / (float)N;
    float *dq[2], *dk[2], *dw[2];
    DsaIndexerLoss out[2];
    memset(out, 0, sizeof out);
    for (int r = 0; r < 2; r++) dq[r] = test_falloc(N * HI * dI), dk[r] = test_falloc(N * dI), dw[r] = test_falloc(N * HI);
    assert_ok(dsa_indexer_kl_dense(&out[0], dq[0], dk[0], dw[0], &c.a, &c.sh, &dt, NULL, NULL, g));
    assert_ok(dsa_indexer_kl_sparse(&out[1], dq[1], dk[1], dw[1], &c.a, &c.sh, &st, idx, isc, g));
    char what[128];
    snprintf(what, sizeof what, "k >= L (L %lld, k %lld): sparse KL sum vs dense", (long long)L, (long long)K);
    expect_scalar(what, out[1].kl_sum, out[0].kl_sum, 1e-5, 1e-6 * (double)N);
    double sel = 0;
    for (int64_t n = 0; n < N; n++) sel += (double)(n % L + 1);
    assert_true(out[1].selected_sum == sel);
    double *want = test_dalloc(N * HI * dI);
    float *const got[3] = {dq[1], dk[1], dw[1]};
    const float *ref[3] = {dq[0], dk[0], dw[0]};
    const int64_t cnt[3] = {N * HI * dI, N * dI, N * HI};
    static const char *const nm[3] = {"dq", "dk", "dw"};
    for (int t = 0; t < 3; t++) {
        for (int64_t i = 0; i < cnt[t]; i++) want[i] = ref[t][i];
        snprintf(what, sizeof what, "k >= L (L %lld, k %lld): sparse %s vs dense", (long long)L, (long long)K, nm[t]);
        test_expect_close(what, got[t], want, cnt[t], 1e-5);
    }
    print_message("sparse == dense, L %3lld k %3lld: KL %.9f vs %.9f\n", (long long)L, (long long)K, out[1].kl_sum,
                  out[0].kl_sum);
    free(want);
    for (int r = 0; r < 2; r++) free(dq[r]), free(dk[r]), free(dw[r]);
    free(kmha), free(idx), free(isc);
    target_case_free(&tc);
    acts_case_free(&c);
}

static void test_sparse_equals_dense(void **state) {
    (void)state;
    check_sparse_equals_dense(1, 1, 500);
    check_sparse_equals_dense(7, 7, 510);
    check_sparse_equals_dense(33, 40, 520);
    check_sparse_equals_dense(130, 130, 530);
}

/* ------------------------------------------------------------------------------------ */
/* 5. sampled recall                                                                     */

static void test_sparse_recall(void **state) {
    (void)state;
    const int64_t B = 2, L = 37, HI = 4, dI = 16, H = 3, dm = 10, K = 5, N = B * L;
    ActsCase c = acts_case(B, L, HI, dI, K, 600);
    TargetCase tc = target_case(B, L, H, dm, true, 601);
    int32_t *idx = malloc(sizeof(int32_t) * (size_t)(N * K));
    assert_ok(dsa_indexer_topk(idx, NULL, &c.a, &c.sh));
    /* reference: captured dense mass of every row (the dense KL reference computes it) */
    RefOut ref = {0};
    ref_kl(&ref, &c.ri, &tc.rt, NULL, 0, idx, K, 0);
    const DsaSparseTarget st = sparse_target(&tc); /* lse unused by the recall */
    DsaIndexerLoss out = {.mass_sum = 0.5, .mass_rows = 2};
    dsa_indexer_sparse_recall(&out, &c.sh, &st, idx, L);
    expect_scalar("sparse recall, every row", out.mass_sum - 0.5, ref.mass, 1e-5, 1e-7 * (double)N);
    assert_int_equal(out.mass_rows, 2 + N);
    /* rows_per_seq > L: every row once */
    DsaIndexerLoss more = {0};
    dsa_indexer_sparse_recall(&more, &c.sh, &st, idx, 3 * L);
    expect_scalar("sparse recall, rows_per_seq 3 L", more.mass_sum, out.mass_sum - 0.5, 1e-12, 0);
    assert_int_equal(more.mass_rows, N);
    /* none */
    DsaIndexerLoss none = {0};
    dsa_indexer_sparse_recall(&none, &c.sh, &st, idx, 0);
    assert_true(none.mass_sum == 0 && none.mass_rows == 0);
    /* a sample of 4 rows per sequence: 4·B rows, each M_t in [0, 1], the last row included */
    DsaIndexerLoss some = {0};
    dsa_indexer_sparse_recall(&some, &c.sh, &st, idx, 4);
    assert_int_equal(some.mass_rows, 4 * B);
    assert_true(some.mass_sum > 0 && some.mass_sum <= 4 * B + 1e-6);
    print_message("recall: mean captured mass %.6f (ref %.6f) at k %lld, L %lld\n", (out.mass_sum - 0.5) / (double)N,
                  ref.mass / (double)N, (long long)K, (long long)L);
    /* the dense stage's mass (same target in MHA form) agrees */
    float *kmha = expand_kv(&tc, N);
    ref_target_lse(tc.lse, &tc.rt, B, L, NULL, 0);
    const DsaDenseTarget dt = {
        .q = tc.q, .k = kmha, .lse = tc.lse, .heads = H, .qk_dim = dm, .scale = (float)tc.rt.tau};
    float *isc = test_falloc(N * K);
    assert_ok(dsa_indexer_topk(idx, isc, &c.a, &c.sh));
    DsaIndexerLoss dense = {0};
    assert_ok(dsa_indexer_kl_dense(&dense, NULL, NULL, NULL, &c.a, &c.sh, &dt, idx, isc, 0.0f));
    expect_scalar("dense-stage captured mass vs recall reference", dense.mass_sum, ref.mass, 1e-5, 1e-7 * (double)N);
    free(kmha), free(isc), free(idx);
    target_case_free(&tc);
    acts_case_free(&c);
}

/* ------------------------------------------------------------------------------------ */
/* 6. identical bits on 1 and 3 threads                                                  */

static void test_threads(void **state) {
    (void)state;
    const int saved = omp_get_max_threads();
    const int64_t B = 2, L = 150, HI = 4, dI = 16, H = 3, dqk = 12, K = 9, N = B * L;
    ActsCase c = acts_case(B, L, HI, dI, K, 700);
    TargetCase dtc = target_case(B, L, H, dqk, false, 701), stc = target_case(B, L, H, dqk, true, 702);
    ref_target_lse(dtc.lse, &dtc.rt, B, L, NULL, 0);
    int32_t *sel = random_selection(B, L, K, 703);
    ref_target_lse(stc.lse, &stc.rt, B, L, sel, K);
    float *ssc = selection_scores(&c, sel, K);
    const DsaDenseTarget dt = dense_target(&dtc);
    const DsaSparseTarget st = sparse_target(&stc);
    float *buf[2][6];
    DsaIndexerLoss out[2][2];
    int32_t *idx[2];
    float *isc[2];
    for (int r = 0; r < 2; r++) {
        set_threads(r == 0 ? 1 : 3);
        idx[r] = malloc(sizeof(int32_t) * (size_t)(N * K)), isc[r] = test_falloc(N * K);
        assert_ok(dsa_indexer_topk(idx[r], isc[r], &c.a, &c.sh));
        for (int m = 0; m < 2; m++) {
            buf[r][3 * m] = test_falloc(N * HI * dI), buf[r][3 * m + 1] = test_falloc(N * dI), buf[r][3 * m + 2] = test_falloc(N * HI);
            memset(&out[r][m], 0, sizeof out[r][m]);
        }
        assert_ok(dsa_indexer_kl_dense(&out[r][0], buf[r][0], buf[r][1], buf[r][2], &c.a, &c.sh, &dt, idx[r], isc[r],
                                       0.01f));
        assert_ok(dsa_indexer_kl_sparse(&out[r][1], buf[r][3], buf[r][4], buf[r][5], &c.a, &c.sh, &st, sel, ssc,
                                        0.01f));
    }
    set_threads(saved);
    assert_memory_equal(idx[0], idx[1], sizeof(int32_t) * (size_t)(N * K));
    static const char *const nm[6] = {"dense dq", "dense dk", "dense dw", "sparse dq", "sparse dk", "sparse dw"};
    const int64_t cnt[6] = {N * HI * dI, N * dI, N * HI, N * HI * dI, N * dI, N * HI};
    for (int t = 0; t < 6; t++)
        for (int64_t i = 0; i < cnt[t]; i++)
            if (memcmp(&buf[0][t][i], &buf[1][t][i], sizeof(float)))
                fail_msg("%s[%lld]: 1 thread %a, 3 threads %a", nm[t], (long long)i, buf[0][t][i], buf[1][t][i]);
    for (int m = 0; m < 2; m++) {
        if (memcmp(&out[0][m].kl_sum, &out[1][m].kl_sum, sizeof(double)) ||
            memcmp(&out[0][m].mass_sum, &out[1][m].mass_sum, sizeof(double)))
            fail_msg("%s loss: 1 thread KL %a mass %a, 3 threads KL %a mass %a", m ? "sparse" : "dense",
                     out[0][m].kl_sum, out[0][m].mass_sum, out[1][m].kl_sum, out[1][m].mass_sum);
    }
    for (int r = 0; r < 2; r++) {
        for (int t = 0; t < 6; t++) free(buf[r][t]);
        free(idx[r]), free(isc[r]);
    }
    free(sel), free(ssc);
    target_case_free(&dtc), target_case_free(&stc);
    acts_case_free(&c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kl_dense),
        cmocka_unit_test(test_kl_gradient_formula),
        cmocka_unit_test(test_full_indexer_fd),
        cmocka_unit_test(test_kl_sparse),
        cmocka_unit_test(test_sparse_equals_dense),
        cmocka_unit_test(test_sparse_recall),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
