/* test_cuda_indexer_util.h: the cases and checks of test_cuda_indexer.c: adversarial top-k
 * rows (saved indexer state), forward cases (inputs, weights, rope tables) on the host and
 * their device copies, bit-for-bit and tolerance comparisons, and the CUDA backend lookup
 * that skips, saying why, where there is none. Device memory only through the backend's
 * alloc / upload / download / release.
 */
#ifndef DSA_TESTS_TEST_CUDA_INDEXER_UTIL_H
#define DSA_TESTS_TEST_CUDA_INDEXER_UTIL_H

#include "indexer/indexer.h"
#include "test_util.h"

/* Saved indexer state of one top-k case, host side (q̂, k̂, w only). */
typedef struct {
    DsaIndexerShape sh;
    float *buf;
    DsaIndexerActs a;
    const char *what;
} TopkCase;

enum { CASE_RANDOM, CASE_TIES, CASE_ZERO_Q, CASE_ASCENDING, CASE_HUGE, CASE_TINY, CASE_KINDS };
static const char *const CASE_NAMES[CASE_KINDS] = {"random", "repeated key rows (ties)", "all-zero q (all tied)",
                                                   "ascending scores", "huge (2^50)", "tiny (2^-70, subnormal)"};

static TopkCase topk_case(int kind, int64_t batch, int64_t L, int64_t K, uint64_t seed) {
    TopkCase c;
    memset(&c, 0, sizeof c);
    c.sh = (DsaIndexerShape){.batch = batch, .seq_len = L, .heads = 4, .head_dim = 32, .rope_dim = 8, .q_in = 8,
                             .x_in = 8, .topk = K, .fp8 = true, .scale = 1.0f / sqrtf(128.0f), .eps = 1e-6f};
    c.what = CASE_NAMES[kind];
    c.buf = test_falloc(dsa_indexer_acts_floats(&c.sh));
    dsa_indexer_acts_carve(&c.a, c.buf, &c.sh);
    const int64_t N = batch * L, HI = c.sh.heads, dI = c.sh.head_dim;
    DsaRng r = dsa_rng_init(seed, 11);
    const float mag = kind == CASE_HUGE ? 0x1p50f : kind == CASE_TINY ? 0x1p-70f : 1.0f;
    for (int64_t i = 0; i < N * HI * dI; i++) c.a.q[i] = kind == CASE_ZERO_Q ? 0.0f : mag * (float)dsa_rng_normal(&r);
    for (int64_t n = 0; n < N; n++)
        for (int64_t e = 0; e < dI; e++) {
            float v = mag * (float)dsa_rng_normal(&r);
            if (kind == CASE_TIES) v = (float)(((n % 3) * 7 + e) % 5) - 2.0f; /* 3 distinct key rows */
            if (kind == CASE_ASCENDING) v = (float)(n % L + 1) * 0x1p-10f;   /* scores grow with s */
            c.a.k[n * dI + e] = v;
        }
    for (int64_t i = 0; i < N * HI; i++) c.a.w[i] = kind == CASE_ASCENDING ? 1.0f : (float)dsa_rng_normal(&r);
    if (kind == CASE_ASCENDING)
        for (int64_t i = 0; i < N * HI * dI; i++) c.a.q[i] = 1.0f;
    return c;
}

/* Indices equal and scores equal bit for bit; names the first difference. */
static void expect_same_topk(const char *what, const int32_t *idx, const float *sc, const int32_t *ref_idx,
                             const float *ref_sc, const DsaIndexerShape *s) {
    const int64_t K = s->topk;
    for (int64_t i = 0; i < s->batch * s->seq_len * K; i++) {
        uint32_t a, b;
        memcpy(&a, sc + i, 4), memcpy(&b, ref_sc + i, 4);
        if (idx[i] != ref_idx[i] || a != b)
            fail_msg("%s (L %lld, k %lld): row %lld slot %lld: index %d score %.9g (0x%08x), CPU %d %.9g (0x%08x)", what,
                     (long long)s->seq_len, (long long)K, (long long)(i / K), (long long)(i % K), idx[i], sc[i], a,
                     ref_idx[i], ref_sc[i], b);
    }
}

static const DsaBackend *cuda_backend_or_skip(void) {
    const DsaBackend *be = NULL;
    dsa_error_clear();
    if (dsa_backend_get("cuda", &be) != DSA_OK) {
        print_message("skipped: no CUDA backend in this process (needs a GPU; runs in the GPU check): %s\n",
                      dsa_error_message());
        dsa_error_clear();
        skip();
    }
    return be;
}

static const DsaIndexerOps *cuda_indexer(const DsaBackend *be) {
    const DsaIndexerOps *ops = NULL;
    assert_ok(dsa_indexer_ops_get(be, &ops));
    assert_string_equal(ops->name, "cuda");
    return ops;
}

/* Device copy of `bytes` of host memory (zeros when src is NULL). */
static void *dput(const DsaBackend *be, const void *src, size_t bytes) {
    void *d = be->alloc(bytes > 0 ? bytes : 4);
    assert_non_null(d);
    if (src && bytes) be->upload(d, src, bytes);
    return d;
}

static void *dget(const DsaBackend *be, const void *dev, size_t bytes) {
    void *h = malloc(bytes > 0 ? bytes : 4);
    assert_non_null(h);
    be->download(h, dev, bytes);
    return h;
}

/* Bits equal (or both NaN); names the first difference. */
static void expect_same_bits(const char *what, const float *got, const float *want, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        uint32_t a, b;
        memcpy(&a, got + i, 4), memcpy(&b, want + i, 4);
        if (a != b && !(isnan(got[i]) && isnan(want[i])))
            fail_msg("%s: index %lld: got %.9g (0x%08x), CPU %.9g (0x%08x)", what, (long long)i, got[i], a, want[i], b);
    }
}

static void expect_close(const char *what, const float *got, const float *want, int64_t n, double tol) {
    double *w = test_to_f64(want, n);
    test_expect_close(what, got, w, n, tol);
    free(w);
}

/* ---- forward and backward cases: inputs, weights, rope tables on the host ---- */

typedef struct {
    DsaIndexerShape sh;
    float *x, *cq, *cos, *sin, *wt[5];
    int64_t wn[5], nx, ncq, ntab;
} FwdCase;

/* exact: every input in {−1, 0, 1}·mag and every projection weight in {−1, 0, 1}/4, so
 * each projection output is a multiple of mag/4 below 2^6·mag: exact in fp32 (and bf16,
 * TF32) whatever the summation order. Otherwise normal inputs, 0.3·normal weights. */
static FwdCase fwd_case(int64_t HI, int64_t dI, bool fp8, bool exact, float mag, uint64_t seed) {
    FwdCase c;
    memset(&c, 0, sizeof c);
    c.sh = (DsaIndexerShape){.batch = 2, .seq_len = 37, .heads = HI, .head_dim = dI, .rope_dim = dI / 2, .q_in = 24,
                             .x_in = 40, .topk = 5, .fp8 = fp8, .scale = 1.0f / sqrtf((float)(HI * dI)), .eps = 1e-6f};
    const int64_t N = 2 * 37;
    DsaRng r = dsa_rng_init(seed, 3);
    c.nx = N * c.sh.x_in, c.ncq = N * c.sh.q_in;
    c.x = test_falloc(c.nx), c.cq = test_falloc(c.ncq);
    for (int64_t i = 0; i < c.nx + c.ncq; i++) {
        const double z = dsa_rng_normal(&r);
        (i < c.nx ? c.x : c.cq)[i < c.nx ? i : i - c.nx] = exact ? mag * (float)((z > 0.5) - (z < -0.5)) : (float)z;
    }
    c.wn[0] = HI * dI * c.sh.q_in, c.wn[1] = dI * c.sh.x_in, c.wn[2] = c.wn[3] = dI, c.wn[4] = HI * c.sh.x_in;
    for (int w = 0; w < 5; w++) {
        c.wt[w] = test_falloc(c.wn[w]);
        for (int64_t i = 0; i < c.wn[w]; i++) {
            const double z = dsa_rng_normal(&r);
            c.wt[w][i] = w == 2 ? (float)(1.0 + 0.3 * z) : w == 3 ? (float)(0.3 * z)
                       : exact  ? 0.25f * (float)((z > 0.5) - (z < -0.5)) : (float)(0.3 * z);
        }
    }
    float freq[512];
    dsa_rope_frequencies(freq, c.sh.rope_dim, 10000.0, "", 1.0, 0, 0, 0);
    c.ntab = 37 * c.sh.rope_dim / 2;
    c.cos = test_falloc(c.ntab), c.sin = test_falloc(c.ntab);
    dsa_rope_tables(c.cos, c.sin, freq, 37, c.sh.rope_dim);
    return c;
}

static void fwd_case_free(FwdCase *c) {
    free(c->x), free(c->cq), free(c->cos), free(c->sin);
    for (int w = 0; w < 5; w++) free(c->wt[w]);
}

/* The case on the device: inputs, weights and tables uploaded. */
typedef struct {
    float *x, *cq, *cos, *sin, *wt[5];
} DevCase;

static DevCase dev_case(const DsaBackend *be, const FwdCase *c) {
    DevCase d;
    d.x = dput(be, c->x, 4 * (size_t)c->nx), d.cq = dput(be, c->cq, 4 * (size_t)c->ncq);
    d.cos = dput(be, c->cos, 4 * (size_t)c->ntab), d.sin = dput(be, c->sin, 4 * (size_t)c->ntab);
    for (int w = 0; w < 5; w++) d.wt[w] = dput(be, c->wt[w], 4 * (size_t)c->wn[w]);
    return d;
}

static void dev_case_free(const DsaBackend *be, DevCase *d, const FwdCase *c) {
    be->release(d->x, 4 * (size_t)c->nx), be->release(d->cq, 4 * (size_t)c->ncq);
    be->release(d->cos, 4 * (size_t)c->ntab), be->release(d->sin, 4 * (size_t)c->ntab);
    for (int w = 0; w < 5; w++) be->release(d->wt[w], 4 * (size_t)c->wn[w]);
}

static DsaIndexerWeights weights(float *const *wt) {
    return (DsaIndexerWeights){.wq_b = wt[0], .wk = wt[1], .k_norm_weight = wt[2], .k_norm_bias = wt[3],
                               .weights_proj = wt[4]};
}

#endif
