/* test_cuda_attention.c: the CUDA backend's dense causal attention and sparse MLA attention
 * (kernels/cuda/attention.cu, sparse_attention.cu; DSA-SPEC §4.1, §4.2, §8) against their
 * CPU twins (kernels/cpu/attention.c, sparse_attention.c, through dsa_backend_cpu()).
 *
 * Every output and gradient is compared on random inputs and irregular shapes (STYLE.md
 * rules 4 and 5): L not a multiple of any tile (32, 64, 8 rows per block), batch > 1,
 * one-token sequences, several heads (35: two groups of 32 in the sparse backward), head
 * dims that are not multiples of 32, the V3.2 head dims scaled down (MHA 192/128 → 96/64;
 * absorbed 576/512 → 72/64), sparse rows fully masked (all −1) and short, k ≥ L, more
 * than one 32-slot window. Device memory only through be->alloc / upload / download.
 * Each gradient is computed twice on the device and must be bit-identical (no float
 * atomics, DESIGN.md "Backends" determinism).
 *
 * Where no CUDA backend is available (no nvcc, no device, or the table not built yet)
 * every test skips, saying why: the comparison runs in the GPU check.
 */
#include <math.h>

#include "core/rng.h"
#include "kernels/backend.h"
#include "test_util.h"

/* Tolerances, normalized: worst |cuda − cpu| / max(max |cpu|, 1) over the array, fp32 both
 * sides. The kernels follow the same softmax rules (kernels/rules/softmax.h) and differ
 * only in the order of the dot products' sums, so out and the gradients agree to a few
 * fp32 ulps of the array's scale (≤ 7e-7 in a host emulation of the CUDA kernels); lse, a
 * log of a sum of O(L) terms, tighter (≤ 3e-7 seen). The floor 1 is the scale of the
 * inputs (N(0, 1), τ = 1/sqrt(qk)): a gradient that is zero in exact arithmetic (dq of a
 * row with one key, where dP = D) is rounding noise of 1e-7 on both sides. */
#define TOL_OUT 1e-5
#define TOL_LSE 2e-6
#define TOL_GRAD 1e-5

static const DsaBackend *cuda_or_skip(void) {
    const DsaBackend *be = NULL;
    dsa_error_clear();
    if (dsa_backend_get("cuda", &be) != DSA_OK || !be) {
        char why[512];
        snprintf(why, sizeof why, "%s", dsa_error_message());
        why[strcspn(why, "\n")] = '\0';
        print_message("skipped: no CUDA backend here (%s); the GPU check runs this test\n", why);
        skip();
    }
    return be;
}

/* Compare n floats, device result `got` vs CPU `want` (STYLE.md rule 4): non-finite values
 * (the −inf lse of empty rows) must sit at the same places with the same value; the finite
 * ones within tol of max(max |want|, 1). On failure: worst index, both values, max abs and rel
 * error, share within tolerance. */
static void expect_close(const char *what, const float *got, const float *want, int64_t n, double tol) {
    double amax = 0;
    for (int64_t i = 0; i < n; i++)
        if (isfinite(want[i]) && fabs(want[i]) > amax) amax = fabs(want[i]);
    const double norm = amax > 1 ? amax : 1, lim = tol * norm;
    double worst = 0;
    int64_t at = -1, ok = 0;
    for (int64_t i = 0; i < n; i++) {
        double e;
        if (!isfinite(want[i]) || !isfinite(got[i]))
            e = (isnan(want[i]) == isnan(got[i]) && (isnan(want[i]) || want[i] == got[i])) ? 0 : INFINITY;
        else
            e = fabs((double)got[i] - want[i]);
        if (e <= lim) ok++;
        if (at < 0 || !(e <= worst)) worst = e, at = i;
    }
    if (n > 0 && !(worst <= lim))
        fail_msg("%s: worst index %lld: cuda %.9g, cpu %.9g; max abs error %.3g, rel %.3g > %.1g; %.2f%% of %lld "
                 "within tolerance",
                 what, (long long)at, got[at], want[at], worst, worst / norm, tol,
                 100.0 * (double)ok / (double)n, (long long)n);
}

/* A device copy of `bytes` of host data (at least 4 bytes allocated). */
static float *dev_upload(const DsaBackend *be, const void *host, size_t bytes) {
    float *p = be->alloc(bytes > 0 ? bytes : 4);
    assert_non_null(p);
    if (bytes > 0) be->upload(p, host, bytes);
    return p;
}

static float *dev_nans(const DsaBackend *be, int64_t n) { /* an output that must be written */
    float *h = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    for (int64_t i = 0; i < n; i++) h[i] = NAN;
    float *p = dev_upload(be, h, sizeof(float) * (size_t)n);
    free(h);
    return p;
}

static float *host_of(const DsaBackend *be, const float *dev, int64_t n) {
    float *h = test_falloc(n);
    if (n > 0) be->download(h, dev, sizeof(float) * (size_t)n);
    return h;
}

static void dev_free(const DsaBackend *be, void *p, int64_t bytes) { be->release(p, (size_t)(bytes > 0 ? bytes : 4)); }

static const char *name_of(char *buf, size_t cap, const char *kind, const int64_t *dims, int nd, const char *what) {
    int w = snprintf(buf, cap, "%s", kind);
    for (int i = 0; i < nd && w > 0 && (size_t)w < cap; i++) w += snprintf(buf + w, cap - (size_t)w, " %lld", (long long)dims[i]);
    snprintf(buf + w, cap - (size_t)w, ": %s", what);
    return buf;
}

/* ---- dense causal attention ---- */

typedef struct {
    int64_t B, L, H, dq, dv;
} DenseShape;

static void check_dense(const DsaBackend *be, DenseShape s, uint64_t seed) {
    const DsaBackend *cpu = dsa_backend_cpu();
    const DsaAttnShape as = {s.B, s.L, s.H, s.dq, s.dv, (float)(1.0 / sqrt((double)s.dq))};
    const int64_t N = s.B * s.L, nq = N * s.H * s.dq, nv = N * s.H * s.dv, nl = N * s.H;
    float *q = test_randn(nq, seed, 1.5), *k = test_randn(nq, seed + 1, 1.0), *v = test_randn(nv, seed + 2, 1.0);
    float *g = test_randn(nv, seed + 3, 1.0);
    /* the CPU twin */
    float *out = test_falloc(nv), *lse = test_falloc(nl), *dq = test_falloc(nq), *dk = test_falloc(nq);
    float *dv = test_falloc(nv), *scr = test_falloc(cpu->attention_scratch_floats(&as));
    cpu->attention_forward(out, lse, q, k, v, &as);
    cpu->attention_backward(dq, dk, dv, g, out, lse, q, k, v, &as, scr);
    /* the device */
    float *Q = dev_upload(be, q, 4 * (size_t)nq), *K = dev_upload(be, k, 4 * (size_t)nq);
    float *V = dev_upload(be, v, 4 * (size_t)nv), *G = dev_upload(be, g, 4 * (size_t)nv);
    float *O = dev_nans(be, nv), *LSE = dev_nans(be, nl), *DQ = dev_nans(be, nq), *DK = dev_nans(be, nq);
    float *DV = dev_nans(be, nv);
    const int64_t ns = be->attention_scratch_floats(&as);
    float *SCR = dev_nans(be, ns);
    be->attention_forward(O, LSE, Q, K, V, &as);
    be->attention_backward(DQ, DK, DV, G, O, LSE, Q, K, V, &as, SCR);
    float *o_h = host_of(be, O, nv), *lse_h = host_of(be, LSE, nl), *dq_h = host_of(be, DQ, nq);
    float *dk_h = host_of(be, DK, nq), *dv_h = host_of(be, DV, nv);
    const int64_t dims[5] = {s.B, s.L, s.H, s.dq, s.dv};
    char nm[160];
    expect_close(name_of(nm, sizeof nm, "dense B L H qk v", dims, 5, "out"), o_h, out, nv, TOL_OUT);
    expect_close(name_of(nm, sizeof nm, "dense B L H qk v", dims, 5, "lse"), lse_h, lse, nl, TOL_LSE);
    expect_close(name_of(nm, sizeof nm, "dense B L H qk v", dims, 5, "dq"), dq_h, dq, nq, TOL_GRAD);
    expect_close(name_of(nm, sizeof nm, "dense B L H qk v", dims, 5, "dk"), dk_h, dk, nq, TOL_GRAD);
    expect_close(name_of(nm, sizeof nm, "dense B L H qk v", dims, 5, "dv"), dv_h, dv, nv, TOL_GRAD);
    /* run to run: the forward and every gradient again, bit for bit */
    be->attention_forward(O, LSE, Q, K, V, &as);
    be->attention_backward(DQ, DK, DV, G, O, LSE, Q, K, V, &as, SCR);
    float *o2 = host_of(be, O, nv), *lse2 = host_of(be, LSE, nl), *dq2 = host_of(be, DQ, nq);
    float *dk2 = host_of(be, DK, nq), *dv2 = host_of(be, DV, nv);
    assert_memory_equal(o2, o_h, 4 * (size_t)nv);
    assert_memory_equal(lse2, lse_h, 4 * (size_t)nl);
    assert_memory_equal(dq2, dq_h, 4 * (size_t)nq);
    assert_memory_equal(dk2, dk_h, 4 * (size_t)nq);
    assert_memory_equal(dv2, dv_h, 4 * (size_t)nv);
    free(o2), free(lse2), free(dq2), free(dk2), free(dv2);
    free(o_h), free(lse_h), free(dq_h), free(dk_h), free(dv_h);
    dev_free(be, Q, 4 * nq), dev_free(be, K, 4 * nq), dev_free(be, V, 4 * nv), dev_free(be, G, 4 * nv);
    dev_free(be, O, 4 * nv), dev_free(be, LSE, 4 * nl), dev_free(be, DQ, 4 * nq), dev_free(be, DK, 4 * nq);
    dev_free(be, DV, 4 * nv), dev_free(be, SCR, 4 * ns);
    free(q), free(k), free(v), free(g), free(out), free(lse), free(dq), free(dk), free(dv), free(scr);
}

static void test_dense_matches_cpu(void **state) {
    (void)state;
    const DsaBackend *be = cuda_or_skip();
    const DenseShape shapes[] = {
        {2, 77, 3, 24, 16}, /* L not a multiple of 8, 32 or 64; batch 2 */
        {1, 1, 2, 5, 3},    /* one token, dims under a warp */
        {3, 1, 1, 37, 29},  /* one-token sequences, batch 3, dims past one warp */
        {1, 130, 2, 48, 32}, /* the tiny MLA config's head, more than two 64-key tiles */
        {2, 100, 4, 96, 64}, /* V3.2's MHA head (192/128) scaled down */
        {1, 33, 1, 64, 64},  /* one key past a 32-tile */
    };
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) check_dense(be, shapes[i], 100 + 10 * i);
}

/* ---- sparse MLA attention (absorbed form) ---- */

typedef struct {
    int64_t B, L, H, dq, dv, K;
    bool causal; /* every key 0…t in shuffled slots (needs K ≥ L); else random subsets */
} SparseShape;

static void shuffle(int32_t *a, int64_t n, DsaRng *rng) {
    for (int64_t i = n - 1; i > 0; i--) {
        const int64_t j = (int64_t)dsa_rng_below(rng, (uint64_t)i + 1);
        const int32_t x = a[i];
        a[i] = a[j], a[j] = x;
    }
}

/* idx [N, K]: random subsets of {0…t} in random slots, −1 elsewhere; one row in 6 fully
 * masked, one in 6 short; every row of sequence 0's last token empty too (so a row at
 * the end of a window is masked). Causal: all of 0…t. */
static int32_t *make_idx(const SparseShape *s, uint64_t seed) {
    const int64_t N = s->B * s->L, K = s->K;
    int32_t *idx = malloc(sizeof(int32_t) * (size_t)(N * K > 0 ? N * K : 1));
    int32_t *perm = malloc(sizeof(int32_t) * (size_t)s->L);
    DsaRng rng = dsa_rng_init(seed, 3);
    for (int64_t n = 0; n < N; n++) {
        const int64_t t = n % s->L;
        int32_t *row = idx + n * K;
        for (int64_t i = 0; i < K; i++) row[i] = -1;
        int64_t count = t + 1 < K ? t + 1 : K;
        const uint64_t r = dsa_rng_below(&rng, 6);
        if (!s->causal && (r == 0 || n == s->L - 1)) count = 0;
        if (!s->causal && r == 1) count = (int64_t)dsa_rng_below(&rng, (uint64_t)count + 1);
        for (int64_t i = 0; i <= t; i++) perm[i] = (int32_t)i;
        if (!s->causal) shuffle(perm, t + 1, &rng);
        for (int64_t i = 0; i < count; i++) row[i] = perm[i];
        shuffle(row, K, &rng);
    }
    free(perm);
    return idx;
}

static void check_sparse(const DsaBackend *be, SparseShape s, uint64_t seed) {
    const DsaBackend *cpu = dsa_backend_cpu();
    const DsaSparseAttnShape as = {s.B, s.L, s.H, s.dq, s.dv, s.K, (float)(1.0 / sqrt((double)s.dq))};
    const int64_t N = s.B * s.L, nq = N * s.H * s.dq, nkv = N * s.dq, nv = N * s.H * s.dv, nl = N * s.H;
    const int64_t ni = N * s.K;
    float *q = test_randn(nq, seed, 1.5), *kv = test_randn(nkv, seed + 1, 1.0), *g = test_randn(nv, seed + 2, 1.0);
    int32_t *idx = make_idx(&s, seed + 3);
    float *out = test_falloc(nv), *lse = test_falloc(nl), *dq = test_falloc(nq), *dkv = test_falloc(nkv);
    const int64_t cpu_scr = cpu->sparse_attention_scratch_bytes(&as);
    void *scr = aligned_alloc(64, (size_t)(cpu_scr + 63) / 64 * 64 + 64);
    cpu->sparse_attention_forward(out, lse, q, kv, idx, &as);
    cpu->sparse_attention_backward(dq, dkv, g, out, lse, q, kv, idx, &as, scr);

    float *Q = dev_upload(be, q, 4 * (size_t)nq), *KV = dev_upload(be, kv, 4 * (size_t)nkv);
    float *G = dev_upload(be, g, 4 * (size_t)nv);
    int32_t *IDX = (int32_t *)dev_upload(be, idx, 4 * (size_t)ni);
    float *O = dev_nans(be, nv), *LSE = dev_nans(be, nl), *DQ = dev_nans(be, nq), *DKV = dev_nans(be, nkv);
    const int64_t ns = be->sparse_attention_scratch_bytes(&as);
    assert_true(ns >= 0);
    void *SCR = dev_nans(be, (ns + 3) / 4);
    be->sparse_attention_forward(O, LSE, Q, KV, IDX, &as);
    be->sparse_attention_backward(DQ, DKV, G, O, LSE, Q, KV, IDX, &as, SCR);
    float *o_h = host_of(be, O, nv), *lse_h = host_of(be, LSE, nl), *dq_h = host_of(be, DQ, nq);
    float *dkv_h = host_of(be, DKV, nkv);
    const int64_t dims[6] = {s.B, s.L, s.H, s.dq, s.dv, s.K};
    char nm[160];
    const char *kind = s.causal ? "sparse causal B L H qk v k" : "sparse B L H qk v k";
    expect_close(name_of(nm, sizeof nm, kind, dims, 6, "out"), o_h, out, nv, TOL_OUT);
    expect_close(name_of(nm, sizeof nm, kind, dims, 6, "lse"), lse_h, lse, nl, TOL_LSE);
    expect_close(name_of(nm, sizeof nm, kind, dims, 6, "dq"), dq_h, dq, nq, TOL_GRAD);
    expect_close(name_of(nm, sizeof nm, kind, dims, 6, "dkv"), dkv_h, dkv, nkv, TOL_GRAD);
    /* rows without a key: out and dq exactly 0, lse −inf (on the CPU too) */
    int64_t empty = 0;
    for (int64_t n = 0; n < N; n++) {
        bool none = true;
        for (int64_t i = 0; i < s.K; i++) none = none && idx[n * s.K + i] < 0;
        if (!none) continue;
        empty++;
        for (int64_t h = 0; h < s.H; h++) {
            const int64_t b = n / s.L, t = n % s.L;
            if (!(isinf(lse_h[(b * s.H + h) * s.L + t]) && lse_h[(b * s.H + h) * s.L + t] < 0))
                fail_msg("%s: row %lld head %lld has no key but lse %.9g", kind, (long long)n, (long long)h,
                         lse_h[(b * s.H + h) * s.L + t]);
            for (int64_t x = 0; x < s.dv; x++)
                if (o_h[(n * s.H + h) * s.dv + x] != 0.0f) fail_msg("%s: empty row %lld: out != 0", kind, (long long)n);
            for (int64_t x = 0; x < s.dq; x++)
                if (dq_h[(n * s.H + h) * s.dq + x] != 0.0f) fail_msg("%s: empty row %lld: dq != 0", kind, (long long)n);
        }
    }
    if (!s.causal) assert_true(empty > 0); /* the case is exercised */
    /* run to run, bit for bit */
    be->sparse_attention_forward(O, LSE, Q, KV, IDX, &as);
    be->sparse_attention_backward(DQ, DKV, G, O, LSE, Q, KV, IDX, &as, SCR);
    float *o2 = host_of(be, O, nv), *lse2 = host_of(be, LSE, nl), *dq2 = host_of(be, DQ, nq);
    float *dkv2 = host_of(be, DKV, nkv);
    assert_memory_equal(o2, o_h, 4 * (size_t)nv);
    assert_memory_equal(lse2, lse_h, 4 * (size_t)nl);
    assert_memory_equal(dq2, dq_h, 4 * (size_t)nq);
    assert_memory_equal(dkv2, dkv_h, 4 * (size_t)nkv);
    free(o2), free(lse2), free(dq2), free(dkv2), free(o_h), free(lse_h), free(dq_h), free(dkv_h);
    dev_free(be, Q, 4 * nq), dev_free(be, KV, 4 * nkv), dev_free(be, G, 4 * nv), dev_free(be, IDX, 4 * ni);
    dev_free(be, O, 4 * nv), dev_free(be, LSE, 4 * nl), dev_free(be, DQ, 4 * nq), dev_free(be, DKV, 4 * nkv);
    dev_free(be, SCR, (ns + 3) / 4 * 4);
    free(q), free(kv), free(g), free(idx), free(out), free(lse), free(dq), free(dkv), free(scr);
}

static void test_sparse_matches_cpu(void **state) {
    (void)state;
    const DsaBackend *be = cuda_or_skip();
    const SparseShape shapes[] = {
        {2, 70, 3, 40, 32, 16, false},   /* batch 2, odd L, short and empty rows */
        {1, 100, 8, 72, 64, 70, false},  /* V3.2's 576/512 scaled down; k past two 32-slot windows */
        {1, 50, 35, 20, 16, 12, false},  /* 35 heads: two groups of 32 in the key pass */
        {3, 1, 2, 9, 5, 4, false},       /* one-token sequences */
        {2, 33, 2, 24, 16, 40, true},    /* k ≥ L: every key 0…t (dense causal) */
        {1, 45, 4, 37, 37, 64, false},   /* k ≥ L with random subsets; qk = v */
    };
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) check_sparse(be, shapes[i], 500 + 10 * i);
}

/* topk 0: every row is empty (out 0, lse −inf, dq 0) and no key has a gradient (dkv 0). */
static void test_sparse_topk_zero(void **state) {
    (void)state;
    const DsaBackend *be = cuda_or_skip();
    check_sparse(be, (SparseShape){2, 9, 2, 8, 8, 0, true}, 900);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dense_matches_cpu),
        cmocka_unit_test(test_sparse_matches_cpu),
        cmocka_unit_test(test_sparse_topk_zero),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
