/* test_cuda_kl.c: the CUDA backend's indexer KL entries (kernels/cuda/indexer_kl.cu,
 * indexer_kl_sparse.cu; DSA-SPEC §6, §7, §8) against the CPU reference table, on the same
 * inputs, through the backend tables only (dsa_backend_get("cuda"), dsa_indexer_ops_get; the
 * device memory through be->alloc / upload / download):
 *
 *  - stage 1 (kl_dense): KL sum, captured mass, rows, |S_t| and ∂q̂, ∂k̂, ∂w;
 *  - stage 2 (kl_sparse): KL sum, |S_t|, rows and the gradients over the CPU's own top-k
 *    and over random selections with −1 anywhere and empty rows;
 *  - sparse_recall on a sample of rows, every row, more rows than L, none;
 *  - adversarial inputs: short and fully masked rows (L = 1, empty selections), k ≥ L,
 *    exact score ties (repeated keys on a grid of exact values), L = 130 and 37 (not a
 *    multiple of the 128-key or 16-query tiles), batch 2;
 *  - run-to-run: every output of a second run has the same bits.
 * Inputs come from the CPU: the indexer forward (FP8 on) or exact hand-made activations,
 * the CPU top-k, the CPU dense and sparse attention forwards for the targets' lse.
 *
 * Tolerances (the device differs from the CPU only through CUDA's expf / logf against glibc's
 * and, in stage 2 and the recall, the order of a head dot, kernels/cuda/indexer_kl*.cu): loss
 * and mass sums 1e-5 relative plus 2e-6 per row; gradients 2e-5 of their largest entry; row
 * and selection counts exactly.
 *
 * Where no CUDA backend or no CUDA indexer table exists (a machine without a GPU, a build
 * without nvcc), every test skips and says why. */
#include <math.h>
#include <stdbool.h>

#include "core/rng.h"
#include "indexer/indexer.h"
#include "kernels/backend.h"
#include "test_util.h"

#ifdef TEST_CUDA_KL_HOST_EMU
/* kernels/cuda/dev/host_emu/run.sh: the same CUDA sources compiled for the host and run on
 * host memory under an emulation of their thread blocks (a check of their logic). */
extern const DsaIndexerOps dsa_host_emu_indexer_ops;
#endif

static const DsaBackend *dev;
static const DsaIndexerOps *dev_ops, *cpu_ops;
static char skip_why[1024];

/* skip_why = "prefix (the error message)", the message's trailing newlines dropped. */
static void set_skip_why(const char *prefix) {
    char msg[800];
    snprintf(msg, sizeof msg, "%s", dsa_error_message());
    for (size_t n = strlen(msg); n > 0 && msg[n - 1] == '\n'; n--) msg[n - 1] = 0;
    snprintf(skip_why, sizeof skip_why, "%s (%s)", prefix, msg);
}

static int group_setup(void **state) {
    (void)state;
    cpu_ops = dsa_indexer_ops_cpu();
#ifdef TEST_CUDA_KL_HOST_EMU
    dev = dsa_backend_cpu(), dev_ops = &dsa_host_emu_indexer_ops;
    return 0;
#endif
    if (dsa_backend_get("cuda", &dev) != DSA_OK) {
        set_skip_why("no CUDA backend here");
        dev = NULL;
    } else if (dsa_indexer_ops_get(dev, &dev_ops) != DSA_OK) {
        set_skip_why("the CUDA backend has no indexer table");
        dev_ops = NULL;
    }
    return 0;
}

#define NEED_DEVICE()                                                              \
    do {                                                                           \
        if (!dev_ops) {                                                            \
            print_message("skipped: %s; the GPU check runs this test\n", skip_why); \
            skip();                                                                \
        }                                                                          \
    } while (0)

/* ------------------------------------------------------------------------------------ */
/* device memory, only through the backend table                                         */

enum { MAX_BUFS = 32 };
typedef struct {
    void *p[MAX_BUFS];
    size_t bytes[MAX_BUFS];
    int n;
} DevBufs;

static void *dev_put(DevBufs *d, const void *host, size_t bytes) {
    assert_true(d->n < MAX_BUFS);
    void *p = dev->alloc(bytes ? bytes : 4);
    assert_non_null(p);
    if (host && bytes) dev->upload(p, host, bytes);
    d->p[d->n] = p, d->bytes[d->n++] = bytes ? bytes : 4;
    return p;
}

static void dev_release(DevBufs *d) {
    for (int i = 0; i < d->n; i++) dev->release(d->p[i], d->bytes[i]);
    d->n = 0;
}

/* ------------------------------------------------------------------------------------ */
/* comparisons (STYLE.md rule 4)                                                          */

/* The device's floats against the CPU's: fails when the worst |got − want| exceeds
 * tol · max |want| or when inf / NaN positions differ; prints the worst index, both values,
 * the max abs and rel error and the share within tolerance. */
static void expect_close(const char *what, const float *got, const float *want, int64_t n, double tol) {
    double amax = 0, worst = 0;
    int64_t at = 0, special = -1;
    for (int64_t i = 0; i < n; i++) {
        if (isfinite(want[i])) amax = fmax(amax, fabs((double)want[i]));
        if (isfinite(got[i]) != isfinite(want[i]) || isnan(got[i]) != isnan(want[i]) ||
            (isinf(want[i]) && got[i] != want[i]))
            special = special < 0 ? i : special;
    }
    if (special >= 0)
        fail_msg("%s: index %lld: got %.9g, want %.9g (inf / NaN positions must match)", what, (long long)special,
                 (double)got[special], (double)want[special]);
    const double bound = tol * (amax > 0 ? amax : 1);
    int64_t within = 0;
    for (int64_t i = 0; i < n; i++) {
        const double e = isfinite(want[i]) ? fabs((double)got[i] - (double)want[i]) : 0;
        within += e <= bound;
        if (e > worst) worst = e, at = i;
    }
    if (worst > bound)
        fail_msg("%s: worst index %lld: got %.9g, want %.9g; max abs error %.3g, rel %.3g > %.1g; %.2f%% within",
                 what, (long long)at, (double)got[at], (double)want[at], worst, worst / (amax > 0 ? amax : 1), tol,
                 100.0 * (double)within / (double)(n > 0 ? n : 1));
}

/* A loss sum: |got − want| ≤ 1e-5 |want| + 2e-6 · rows. */
static void expect_sum(const char *what, double got, double want, int64_t rows) {
    const double err = fabs(got - want), bound = 1e-5 * fabs(want) + 2e-6 * (double)rows;
    if (!(err <= bound))
        fail_msg("%s: got %.12g, want %.12g; abs error %.3g > %.3g (1e-5 rel + 2e-6 per row, %lld rows)", what, got,
                 want, err, bound, (long long)rows);
}

/* max |got − want| / max |want| over the finite entries (for the log lines). */
static double max_rel(const float *got, const float *want, int64_t n) {
    double amax = 0, worst = 0;
    for (int64_t i = 0; i < n; i++)
        if (isfinite(want[i])) amax = fmax(amax, fabs((double)want[i])), worst = fmax(worst, fabs((double)got[i] - want[i]));
    return worst / (amax > 0 ? amax : 1);
}

static void expect_bits(const char *what, const void *a, const void *b, size_t bytes) {
    const unsigned char *x = a, *y = b;
    for (size_t i = 0; i < bytes; i++)
        if (x[i] != y[i]) fail_msg("%s: run 2 differs from run 1 at byte %zu", what, i);
}

/* ------------------------------------------------------------------------------------ */
/* CPU inputs                                                                            */

typedef struct {
    DsaIndexerShape sh;
    float *actbuf;
    DsaIndexerActs a;
    int64_t H, dqk;                 /* target heads and widths (MHA dense, MQA sparse alike) */
    float *tq, *tk, *tv, *tlse;      /* dense target: q, k [N, H, dqk], v [N, H, dqk], lse */
    float *sq, *skv, *slse;          /* sparse target: Q [N, H, dqk], K [N, dqk], lse over sel */
    int32_t *idx, *sel;              /* the CPU top-k; the selection of the sparse stage */
    float *isc, *ssc;                /* their scores */
} Case;

static float uniform(DsaRng *r, float lo, float hi) { return lo + (hi - lo) * (float)dsa_rng_uniform(r); }

/* Indexer activations: the CPU forward (FP8 round trip on) from random weights, or (ties)
 * keys that repeat in groups of three, with every value a multiple of 1/4 so dots are exact. */
static void make_acts(Case *c, bool ties, uint64_t seed) {
    const DsaIndexerShape *sh = &c->sh;
    const int64_t N = sh->batch * sh->seq_len, HI = sh->heads, dI = sh->head_dim;
    c->actbuf = test_falloc(dsa_indexer_acts_floats(sh));
    dsa_indexer_acts_carve(&c->a, c->actbuf, sh);
    DsaRng r = dsa_rng_init(seed, 1);
    if (ties) {
        for (int64_t i = 0; i < N * HI * dI; i++) c->a.q[i] = (float)((int)dsa_rng_below(&r, 9) - 4) * 0.25f;
        for (int64_t n = 0; n < N; n++)
            for (int64_t e = 0; e < dI; e++)
                c->a.k[n * dI + e] = n % 3 ? c->a.k[(n - 1) * dI + e] : (float)((int)dsa_rng_below(&r, 9) - 4) * 0.25f;
        for (int64_t i = 0; i < N * HI; i++) c->a.w[i] = (float)((int)dsa_rng_below(&r, 7) - 2) * 0.5f;
        return;
    }
    float *x = test_randn(N * sh->x_in, seed + 1, 1.0), *cq = test_randn(N * sh->q_in, seed + 2, 1.0);
    float *wq = test_randn(HI * dI * sh->q_in, seed + 3, 0.4), *wk = test_randn(dI * sh->x_in, seed + 4, 0.4);
    float *gam = test_falloc(dI), *bet = test_randn(dI, seed + 5, 0.1), *wp = test_randn(HI * sh->x_in, seed + 6, 0.5);
    for (int64_t i = 0; i < dI; i++) gam[i] = uniform(&r, 0.7f, 1.3f);
    float freq[64], *cs = test_falloc(sh->seq_len * sh->rope_dim / 2), *sn = test_falloc(sh->seq_len * sh->rope_dim / 2);
    assert_true(sh->rope_dim / 2 <= 64);
    dsa_rope_frequencies(freq, sh->rope_dim, 10000.0, "", 1.0, 0, 0, 0);
    dsa_rope_tables(cs, sn, freq, sh->seq_len, sh->rope_dim);
    const DsaIndexerWeights W = {.wq_b = wq, .wk = wk, .k_norm_weight = gam, .k_norm_bias = bet, .weights_proj = wp};
    dsa_indexer_forward(&c->a, x, cq, &W, sh, cs, sn, dsa_backend_cpu());
    free(x), free(cq), free(wq), free(wk), free(gam), free(bet), free(wp), free(cs), free(sn);
}

/* A random selection: 0 … min(K, t + 1) distinct keys of {0 … t} in random slots, −1
 * elsewhere; row 3 of sequence 1 empty, the last row of sequence 0 full. */
static int32_t *random_selection(int64_t batch, int64_t L, int64_t K, uint64_t seed) {
    int32_t *idx = malloc(sizeof(int32_t) * (size_t)(batch * L * K)), *perm = malloc(sizeof(int32_t) * (size_t)L);
    assert_true(idx && perm);
    DsaRng r = dsa_rng_init(seed, 3);
    for (int64_t n = 0; n < batch * L; n++) {
        const int64_t t = n % L, avail = t + 1 < K ? t + 1 : K;
        int64_t m = (int64_t)dsa_rng_below(&r, (uint64_t)avail + 1);
        if (n == L + 3) m = 0;
        if (n == L - 1) m = avail;
        for (int64_t i = 0; i <= t; i++) perm[i] = (int32_t)i;
        for (int64_t i = 0; i < m; i++) {
            const int64_t j = i + (int64_t)dsa_rng_below(&r, (uint64_t)(t + 1 - i));
            const int32_t tmp = perm[i];
            perm[i] = perm[j], perm[j] = tmp;
        }
        int32_t *row = idx + n * K;
        for (int64_t i = 0; i < K; i++) row[i] = i < m ? perm[i] : -1;
        for (int64_t i = K - 1; i > 0; i--) {
            const int64_t j = (int64_t)dsa_rng_below(&r, (uint64_t)i + 1);
            const int32_t tmp = row[i];
            row[i] = row[j], row[j] = tmp;
        }
    }
    free(perm);
    return idx;
}

/* The indexer scores of a selection, from the CPU's score tiles (−∞ at −1). */
static float *selection_scores(const Case *c, const int32_t *sel) {
    const int64_t L = c->sh.seq_len, N = c->sh.batch * L, K = c->sh.topk;
    float *sc = test_falloc(N * K), *row = test_falloc(L);
    for (int64_t n = 0; n < N; n++) {
        dsa_indexer_score_tile(row, NULL, L, &c->a, &c->sh, n / L, n % L, 1, 0, L);
        for (int64_t i = 0; i < K; i++) sc[n * K + i] = sel[n * K + i] < 0 ? -INFINITY : row[sel[n * K + i]];
    }
    free(row);
    return sc;
}

/* A whole case: activations, the CPU top-k, both targets with the CPU attention's lse. */
static Case make_case(int64_t B, int64_t L, int64_t K, bool ties, bool random_sel, uint64_t seed) {
    Case c;
    memset(&c, 0, sizeof c);
    const int64_t HI = 4, dI = 32, N = B * L;
    c.sh = (DsaIndexerShape){.batch = B, .seq_len = L, .heads = HI, .head_dim = dI, .rope_dim = 16, .q_in = 12,
                             .x_in = 10, .topk = K, .fp8 = !ties, .scale = 1.0f / sqrtf((float)(HI * dI)),
                             .eps = 1e-6f};
    c.H = 3, c.dqk = 12;
    make_acts(&c, ties, seed);
    c.idx = malloc(sizeof(int32_t) * (size_t)(N * K)), c.isc = test_falloc(N * K);
    assert_non_null(c.idx);
    assert_ok(dsa_indexer_topk(c.idx, c.isc, &c.a, &c.sh));
    c.sel = random_sel ? random_selection(B, L, K, seed + 7) : c.idx;
    c.ssc = random_sel ? selection_scores(&c, c.sel) : c.isc;
    const DsaBackend *cpu = dsa_backend_cpu();
    c.tq = test_randn(N * c.H * c.dqk, seed + 8, 1.2), c.tk = test_randn(N * c.H * c.dqk, seed + 9, 1.2);
    c.tv = test_randn(N * c.H * c.dqk, seed + 10, 1.0), c.tlse = test_falloc(B * c.H * L);
    float *o = test_falloc(N * c.H * c.dqk);
    const DsaAttnShape as = {B, L, c.H, c.dqk, c.dqk, 1.0f / sqrtf((float)c.dqk)};
    cpu->attention_forward(o, c.tlse, c.tq, c.tk, c.tv, &as);
    c.sq = test_randn(N * c.H * c.dqk, seed + 11, 1.2), c.skv = test_randn(N * c.dqk, seed + 12, 1.2);
    c.slse = test_falloc(B * c.H * L);
    const DsaSparseAttnShape ss = {B, L, c.H, c.dqk, c.dqk / 2, K, 1.0f / sqrtf((float)c.dqk)};
    cpu->sparse_attention_forward(o, c.slse, c.sq, c.skv, c.sel, &ss);
    free(o);
    return c;
}

/* Rows whose last selected key ties (same score) with a valid key left out: the rank
 * threshold of the captured mass decides those by index (§5.4). */
static int64_t threshold_ties(const Case *c) {
    const int64_t L = c->sh.seq_len, N = c->sh.batch * L, K = c->sh.topk;
    float *row = test_falloc(L);
    int64_t ties = 0;
    for (int64_t n = 0; n < N; n++) {
        const int64_t t = n % L;
        if (t + 1 <= K) continue; /* every key selected */
        dsa_indexer_score_tile(row, NULL, L, &c->a, &c->sh, n / L, t, 1, 0, L);
        const int32_t last = c->idx[n * K + K - 1];
        bool tie = false;
        for (int64_t s = 0; s <= t; s++) {
            bool in = false;
            for (int64_t i = 0; i < K; i++) in = in || c->idx[n * K + i] == s;
            tie = tie || (!in && row[s] == row[last]);
        }
        ties += tie;
    }
    free(row);
    return ties;
}

static void case_free(Case *c) {
    if (c->sel != c->idx) free(c->sel), free(c->ssc);
    free(c->idx), free(c->isc), free(c->actbuf);
    free(c->tq), free(c->tk), free(c->tv), free(c->tlse), free(c->sq), free(c->skv), free(c->slse);
}

/* ------------------------------------------------------------------------------------ */
/* one stage on both tables                                                              */

typedef struct {
    DsaIndexerLoss loss;
    float *dq, *dk, *dw; /* host copies */
} Result;

static void result_free(Result *r) { free(r->dq), free(r->dk), free(r->dw); }

/* Stage 1 (sparse = false) or 2 of case c on the CPU table, or on the device table with
 * every input uploaded and the gradients downloaded. */
static Result run_stage(const Case *c, bool on_device, bool sparse, float grad_scale) {
    const DsaIndexerShape *sh = &c->sh;
    const int64_t N = sh->batch * sh->seq_len, HI = sh->heads, dI = sh->head_dim, K = sh->topk, H = c->H;
    const int64_t ng[3] = {N * HI * dI, N * dI, N * HI};
    Result r = {.loss = {0}, .dq = test_falloc(ng[0]), .dk = test_falloc(ng[1]), .dw = test_falloc(ng[2])};
    const bool grads = grad_scale != 0.0f;
    if (!on_device) {
        if (sparse) {
            const DsaSparseTarget tg = {c->sq, c->skv, c->slse, H, c->dqk, 1.0f / sqrtf((float)c->dqk)};
            assert_ok(cpu_ops->kl_sparse(&r.loss, grads ? r.dq : NULL, grads ? r.dk : NULL, grads ? r.dw : NULL, &c->a,
                                         sh, &tg, c->sel, c->ssc, grad_scale));
        } else {
            const DsaDenseTarget tg = {c->tq, c->tk, c->tlse, H, c->dqk, 1.0f / sqrtf((float)c->dqk)};
            assert_ok(cpu_ops->kl_dense(&r.loss, grads ? r.dq : NULL, grads ? r.dk : NULL, grads ? r.dw : NULL, &c->a,
                                        sh, &tg, c->idx, c->isc, grad_scale));
        }
        return r;
    }
    DevBufs d = {.n = 0};
    const int64_t acts = dsa_indexer_acts_floats(sh);
    DsaIndexerActs da;
    dsa_indexer_acts_carve(&da, dev_put(&d, c->actbuf, sizeof(float) * (size_t)acts), sh);
    float *g[3];
    for (int i = 0; i < 3; i++) g[i] = dev_put(&d, NULL, sizeof(float) * (size_t)ng[i]);
    const size_t fq = sizeof(float) * (size_t)(N * H * c->dqk), fl = sizeof(float) * (size_t)(sh->batch * H * sh->seq_len);
    const size_t fi = sizeof(int32_t) * (size_t)(N * K), fs = sizeof(float) * (size_t)(N * K);
    if (sparse) {
        const DsaSparseTarget tg = {dev_put(&d, c->sq, fq), dev_put(&d, c->skv, sizeof(float) * (size_t)(N * c->dqk)),
                                    dev_put(&d, c->slse, fl), H, c->dqk, 1.0f / sqrtf((float)c->dqk)};
        assert_ok(dev_ops->kl_sparse(&r.loss, grads ? g[0] : NULL, grads ? g[1] : NULL, grads ? g[2] : NULL, &da, sh,
                                     &tg, dev_put(&d, c->sel, fi), dev_put(&d, c->ssc, fs), grad_scale));
    } else {
        const DsaDenseTarget tg = {dev_put(&d, c->tq, fq), dev_put(&d, c->tk, fq), dev_put(&d, c->tlse, fl), H, c->dqk,
                                   1.0f / sqrtf((float)c->dqk)};
        assert_ok(dev_ops->kl_dense(&r.loss, grads ? g[0] : NULL, grads ? g[1] : NULL, grads ? g[2] : NULL, &da, sh, &tg,
                                    dev_put(&d, c->idx, fi), dev_put(&d, c->isc, fs), grad_scale));
    }
    if (grads) {
        dev->download(r.dq, g[0], sizeof(float) * (size_t)ng[0]);
        dev->download(r.dk, g[1], sizeof(float) * (size_t)ng[1]);
        dev->download(r.dw, g[2], sizeof(float) * (size_t)ng[2]);
    }
    dev_release(&d);
    return r;
}

/* Both tables on case c, one stage: sums, counts and gradients compared; then a second
 * device run compared bit for bit. */
static void check_stage(const Case *c, bool sparse, const char *label) {
    const DsaIndexerShape *sh = &c->sh;
    const int64_t N = sh->batch * sh->seq_len, ng[3] = {N * sh->heads * sh->head_dim, N * sh->head_dim, N * sh->heads};
    const float gs = sparse ? -0.61f : 0.37f;
    Result want = run_stage(c, false, sparse, gs), got = run_stage(c, true, sparse, gs);
    char what[200];
    const char *stage = sparse ? "stage 2" : "stage 1";
    snprintf(what, sizeof what, "%s %s: KL sum", stage, label);
    expect_sum(what, got.loss.kl_sum, want.loss.kl_sum, N);
    snprintf(what, sizeof what, "%s %s: captured mass", stage, label);
    expect_sum(what, got.loss.mass_sum, want.loss.mass_sum, N);
    assert_int_equal(got.loss.rows, want.loss.rows);
    assert_int_equal(got.loss.mass_rows, want.loss.mass_rows);
    if (!(got.loss.selected_sum == want.loss.selected_sum))
        fail_msg("%s %s: selected %.17g, CPU %.17g", stage, label, got.loss.selected_sum, want.loss.selected_sum);
    static const char *const nm[3] = {"dq", "dk", "dw"};
    float *const gp[3] = {got.dq, got.dk, got.dw}, *const wp[3] = {want.dq, want.dk, want.dw};
    for (int i = 0; i < 3; i++) {
        snprintf(what, sizeof what, "%s %s: %s", stage, label, nm[i]);
        expect_close(what, gp[i], wp[i], ng[i], 2e-5);
    }
    Result again = run_stage(c, true, sparse, gs);
    snprintf(what, sizeof what, "%s %s: loss struct", stage, label);
    expect_bits(what, &again.loss, &got.loss, sizeof got.loss);
    float *const ap[3] = {again.dq, again.dk, again.dw};
    for (int i = 0; i < 3; i++) {
        snprintf(what, sizeof what, "%s %s: %s", stage, label, nm[i]);
        expect_bits(what, ap[i], gp[i], sizeof(float) * (size_t)ng[i]);
    }
    /* without gradients: the same loss bits */
    Result plain = run_stage(c, true, sparse, 0.0f);
    if (!(plain.loss.kl_sum == got.loss.kl_sum))
        fail_msg("%s %s: KL without gradients %a, with %a", stage, label, plain.loss.kl_sum, got.loss.kl_sum);
    print_message("%s %-26s KL %.9f (CPU %.9f) mass %.6f (CPU %.6f) selected %.0f; rel err dq %.1e dk %.1e dw %.1e\n",
                  stage, label, got.loss.kl_sum, want.loss.kl_sum, got.loss.mass_sum, want.loss.mass_sum,
                  got.loss.selected_sum, max_rel(got.dq, want.dq, ng[0]), max_rel(got.dk, want.dk, ng[1]),
                  max_rel(got.dw, want.dw, ng[2]));
    result_free(&want), result_free(&got), result_free(&again), result_free(&plain);
}

/* ------------------------------------------------------------------------------------ */
/* tests                                                                                 */

static void test_dense(void **state) {
    (void)state;
    NEED_DEVICE();
    static const struct {
        int64_t B, L, K;
        bool ties;
        const char *label;
    } cases[] = {
        {2, 130, 9, false, "B 2, L 130, k 9"},  {1, 1, 4, false, "L 1 (one key)"},
        {2, 37, 40, false, "k >= L (L 37, k 40)"}, {2, 45, 7, true, "exact ties, L 45, k 7"},
        {1, 200, 130, false, "L 200, k 130"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        Case c = make_case(cases[i].B, cases[i].L, cases[i].K, cases[i].ties, false, 1000 + 10 * i);
        if (cases[i].ties) { /* the case must hold ties at the threshold, or it tests nothing */
            const int64_t ties = threshold_ties(&c);
            print_message("stage 1 %s: %lld rows tie at their top-k threshold\n", cases[i].label, (long long)ties);
            assert_true(ties > 0);
        }
        check_stage(&c, false, cases[i].label);
        case_free(&c);
    }
}

static void test_sparse(void **state) {
    (void)state;
    NEED_DEVICE();
    static const struct {
        int64_t B, L, K;
        bool ties, random_sel;
        const char *label;
    } cases[] = {
        {2, 130, 9, false, false, "top-k, B 2, L 130"},
        {2, 130, 150, false, true, "random, empty rows, L 130"},
        {2, 37, 40, false, false, "k >= L (L 37, k 40)"},
        {2, 45, 7, true, false, "exact ties, L 45, k 7"},
        {1, 1, 3, false, false, "L 1 (one key)"},
        {2, 17, 6, false, true, "random, -1 anywhere, L 17"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        Case c = make_case(cases[i].B, cases[i].L, cases[i].K, cases[i].ties, cases[i].random_sel, 2000 + 10 * i);
        check_stage(&c, true, cases[i].label);
        case_free(&c);
    }
}

static void test_recall(void **state) {
    (void)state;
    NEED_DEVICE();
    Case c = make_case(2, 130, 9, false, false, 3000);
    const int64_t L = c.sh.seq_len, N = c.sh.batch * L, K = c.sh.topk;
    DevBufs d = {.n = 0};
    const DsaSparseTarget ct = {c.sq, c.skv, c.slse, c.H, c.dqk, 1.0f / sqrtf((float)c.dqk)};
    const DsaSparseTarget dt = {dev_put(&d, c.sq, sizeof(float) * (size_t)(N * c.H * c.dqk)),
                                dev_put(&d, c.skv, sizeof(float) * (size_t)(N * c.dqk)), NULL, c.H, c.dqk, ct.scale};
    const int32_t *didx = dev_put(&d, c.idx, sizeof(int32_t) * (size_t)(N * K));
    const int64_t samples[] = {4, L, 3 * L, 0, 1};
    for (size_t i = 0; i < sizeof samples / sizeof samples[0]; i++) {
        DsaIndexerLoss want = {.mass_sum = 0.5, .mass_rows = 2}, got = want, again = want;
        cpu_ops->sparse_recall(&want, &c.sh, &ct, c.idx, samples[i]);
        dev_ops->sparse_recall(&got, &c.sh, &dt, didx, samples[i]);
        dev_ops->sparse_recall(&again, &c.sh, &dt, didx, samples[i]);
        char what[120];
        snprintf(what, sizeof what, "recall, %lld rows per sequence", (long long)samples[i]);
        assert_int_equal(got.mass_rows, want.mass_rows);
        expect_sum(what, got.mass_sum, want.mass_sum, got.mass_rows);
        expect_bits(what, &again, &got, sizeof got);
        print_message("%s: mass %.9f (CPU %.9f) over %lld rows\n", what, got.mass_sum - 0.5, want.mass_sum - 0.5,
                      (long long)(got.mass_rows - 2));
    }
    dev_release(&d);
    case_free(&c);
}

/* Refusals by name at the boundary. */
static void test_bad_shapes(void **state) {
    (void)state;
    NEED_DEVICE();
    Case c = make_case(1, 7, 3, false, false, 4000);
    DsaIndexerShape bad = c.sh;
    bad.heads = 0;
    DsaIndexerLoss out = {0};
    const DsaDenseTarget tg = {c.tq, c.tk, c.tlse, c.H, c.dqk, 1.0f};
    assert_true(dev_ops->kl_dense(&out, NULL, NULL, NULL, &c.a, &bad, &tg, NULL, NULL, 0.0f) != DSA_OK);
    assert_non_null(strstr(dsa_error_message(), "indexer heads 0"));
    case_free(&c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dense),
        cmocka_unit_test(test_sparse),
        cmocka_unit_test(test_recall),
        cmocka_unit_test(test_bad_shapes),
    };
    return cmocka_run_group_tests(tests, group_setup, NULL);
}
