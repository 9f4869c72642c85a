/* test_rules.c: the scalar rules of kernels/rules/ (DESIGN.md "Backends"), each tested
 * directly, so that a CPU test of a rule is a test of the device's rule:
 *
 *  - fp8.h (DSA-SPEC §3.2, §5.2): all 256 e4m3 codes against the format's definition and
 *    round trips, every tie midpoint to even, saturation, subnormals, −0 and NaN; the
 *    ue8m0 group scale and the export block exponent at their extremes.
 *  - bf16.h: all 65536 codes widen exactly and round-trip; ties to even; NaN, inf, overflow.
 *  - topk_order.h (§5.4): exact ties, ±0, the −1 / −inf padding, the "within" test and the
 *    radix key's order.
 *  - softmax.h (§8): dsa_softmax_exp2 equals vexp2 (kernels/cpu/vexp2.h, the attention
 *    kernels' vector form) lane for lane, bit for bit, on millions of inputs; its accuracy;
 *    the online update against a two-pass fp64 reference, over chunkings and orders; and
 *    both attention kernels reproduced bit for bit by the rules on one-dimensional heads,
 *    so the kernels are held to the rules.
 *  - exp.h: dsa_vexpf in a vectorized loop equals its scalar calls bit for bit.
 *  - kl.h (§6.1): the guards at p = 0, π = 0 and the log target against fp64.
 *  - index_score.h (§5.3): the rule gives dsa_indexer_score_tile's bits on every element
 *    of whole tiles and offset tiles (odd sizes, several heads), causal mask included.
 *  - adamw.h: one step against a hand-computed fp64 value, many against fp64, and the CPU
 *    kernel against the rule element by element.
 */
#include <float.h>

#include "indexer/indexer.h"
#include "kernels/cpu/ops.h"
#include "kernels/rules/index_score.h"
#include "kernels/rules/adamw.h"
#include "kernels/rules/bf16.h"
#include "kernels/rules/exp.h"
#include "kernels/rules/fp8.h"
#include "kernels/rules/kl.h"
#include "kernels/rules/softmax.h"
#include "kernels/rules/topk_order.h"
#include "test_util.h"

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

/* ---- the vector type of kernels/cpu/attention.c, for vexp2.h ---- */
#if defined(__AVX512F__)
enum { VW = 16 };
typedef __m512 Vec;
static inline Vec vsplat(float x) { return _mm512_set1_ps(x); }
static inline Vec vfma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
#elif defined(__AVX2__) && defined(__FMA__)
enum { VW = 8 };
typedef __m256 Vec;
static inline Vec vsplat(float x) { return _mm256_set1_ps(x); }
static inline Vec vfma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
#else
enum { VW = 4 };
typedef float Vec __attribute__((vector_size(16)));
static inline Vec vsplat(float x) { return (Vec){x, x, x, x}; }
static inline Vec vfma(Vec a, Vec b, Vec c) { return a * b + c; }
#endif
typedef int32_t Veci __attribute__((vector_size(sizeof(Vec))));
typedef uint32_t Vecu __attribute__((vector_size(sizeof(Vec))));
#include "kernels/cpu/vexp2.h"

static uint64_t lcg = 0x9E3779B97F4A7C15ull;
static uint32_t rnd32(void) {
    lcg = lcg * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(lcg >> 32);
}
static float uniform(float lo, float hi) { return lo + (hi - lo) * (float)(rnd32() >> 8) * 0x1p-24f; }

static bool same_bits(float a, float b) { return (isnan(a) && isnan(b)) || dsa_bits_of(a) == dsa_bits_of(b); }

/* ---- fp8.h ---- */

/* e4m3fn value from the format's definition, in double. */
static double e4m3_definition(int c) {
    const int s = c >> 7, e = (c >> 3) & 15, m = c & 7;
    const double v = e == 0 ? ldexp(m, -9) : ldexp(1.0 + m / 8.0, e - 7);
    return s ? -v : v;
}

static void test_fp8_codes(void **state) {
    (void)state;
    for (int c = 0; c < 256; c++) {
        const float v = dsa_e4m3_decode((uint8_t)c);
        if ((c & 0x7f) == 0x7f) {
            assert_true(isnan(v));
            assert_int_equal(dsa_e4m3_encode(v), 0x7f);
            continue;
        }
        if ((double)v != e4m3_definition(c)) fail_msg("decode(0x%02x) = %a, want %a", c, v, e4m3_definition(c));
        assert_int_equal(signbit(v) != 0, c >> 7);
        if (dsa_e4m3_encode(v) != c) fail_msg("encode(decode(0x%02x)) = 0x%02x", c, dsa_e4m3_encode(v));
        assert_true(same_bits(dsa_e4m3_round(v), v));
    }
}

static void test_fp8_ties_and_saturation(void **state) {
    (void)state;
    /* every midpoint of neighbouring positive codes goes to the even code, its neighbours
     * one float away to the nearer one; the same with the sign flipped */
    for (int c = 0; c < 0x7e; c++) {
        const float a = dsa_e4m3_decode((uint8_t)c), b = dsa_e4m3_decode((uint8_t)(c + 1));
        const float mid = 0.5f * (a + b); /* exact: a and b are 4-bit significands */
        assert_true((double)mid == 0.5 * ((double)a + (double)b));
        const int even = (c & 1) ? c + 1 : c;
        if (dsa_e4m3_encode(mid) != even) fail_msg("tie %a: code 0x%02x, want 0x%02x", mid, dsa_e4m3_encode(mid), even);
        assert_int_equal(dsa_e4m3_encode(-mid), even | 0x80);
        assert_int_equal(dsa_e4m3_encode(nextafterf(mid, 0.0f)), c);
        assert_int_equal(dsa_e4m3_encode(nextafterf(mid, INFINITY)), c + 1);
    }
    /* saturation at ±448 (0x7e / 0xfe), infinities included; NaN → 0x7f */
    const float big[] = {448.0f, 449.0f, 464.0f, 480.0f, 1e6f, FLT_MAX, INFINITY};
    for (size_t i = 0; i < sizeof big / sizeof *big; i++) {
        assert_int_equal(dsa_e4m3_encode(big[i]), 0x7e);
        assert_int_equal(dsa_e4m3_encode(-big[i]), 0xfe);
        assert_true(dsa_e4m3_round(big[i]) == 448.0f && dsa_e4m3_round(-big[i]) == -448.0f);
    }
    assert_int_equal(dsa_e4m3_encode(NAN), 0x7f);
    assert_true(isnan(dsa_e4m3_round(NAN)));
    /* subnormals: 2^-9 is code 1, 2^-10 a tie to 0, tiny values keep their sign */
    assert_int_equal(dsa_e4m3_encode(0x1p-9f), 0x01);
    assert_int_equal(dsa_e4m3_encode(0x1p-10f), 0x00);
    assert_int_equal(dsa_e4m3_encode(nextafterf(0x1p-10f, 1.0f)), 0x01);
    assert_int_equal(dsa_e4m3_encode(-1e-30f), 0x80);
    assert_int_equal(dsa_e4m3_encode(-0.0f), 0x80);
    assert_int_equal(dsa_e4m3_encode(0.0f), 0x00);
}

static void test_fp8_scales(void **state) {
    (void)state;
    /* ue8m0 group scale (§5.2): the 1e-4 clamp (zeros and NaN give 2^-22), exact powers
     * 448·2^e, one float above them, and the largest float */
    assert_true(dsa_fp8_group_scale(0.0f) == 0x1p-22f);
    assert_true(dsa_fp8_group_scale(NAN) == 0x1p-22f);
    assert_true(dsa_fp8_group_scale(1e-4f) == 0x1p-22f && dsa_fp8_group_scale(1e-30f) == 0x1p-22f);
    for (int e = -20; e <= 100; e++) {
        const float a = ldexpf(448.0f, e);
        assert_true(dsa_fp8_group_scale(a) == ldexpf(1.0f, e));
        assert_true(dsa_fp8_group_scale(nextafterf(a, INFINITY)) == ldexpf(1.0f, e + 1));
    }
    assert_true(dsa_fp8_group_scale(FLT_MAX) == 0x1p120f);
    assert_int_equal(dsa_fp8_group_size(4096), 128);
    assert_int_equal(dsa_fp8_group_size(128), 128);
    assert_int_equal(dsa_fp8_group_size(32), 32);
    /* export block exponent (§3.2): smallest e with amax ≤ 448·2^e, clamped at -126 */
    assert_int_equal(dsa_fp8_block_exponent(448.0f), 0);
    assert_int_equal(dsa_fp8_block_exponent(nextafterf(448.0f, INFINITY)), 1);
    assert_int_equal(dsa_fp8_block_exponent(224.0f), -1);
    assert_int_equal(dsa_fp8_block_exponent(2.0f), -7);
    assert_int_equal(dsa_fp8_block_exponent(FLT_MAX), 120);
    assert_int_equal(dsa_fp8_block_exponent(1e-40f), DSA_FP8_SCALE_EXP_MIN);
    assert_int_equal(dsa_fp8_block_exponent(ldexpf(448.0f, -126)), -126);
    for (int i = 0; i < 100000; i++) { /* the definition, and no code of the block saturates */
        const float a = ldexpf(uniform(0.5f, 1.0f), (int)(rnd32() % 200) - 100);
        const int e = dsa_fp8_block_exponent(a);
        assert_true(ldexp(448.0, e) >= a && (e == DSA_FP8_SCALE_EXP_MIN || ldexp(448.0, e - 1) < a));
        assert_true(fabsf(a / ldexpf(1.0f, e)) <= 448.0f);
    }
}

/* ---- bf16.h ---- */

static void test_bf16(void **state) {
    (void)state;
    for (uint32_t h = 0; h < 65536; h++) {
        const float f = dsa_bf16_to_f32((uint16_t)h);
        assert_true(dsa_bits_of(f) == h << 16);
        const uint16_t back = dsa_bf16_from_f32(f);
        if (isnan(f))
            assert_true(back == (h | 0x40)); /* quiet bit set, sign and payload kept */
        else if (back != h)
            fail_msg("bf16 0x%04x: round trip gives 0x%04x", h, back);
    }
    assert_int_equal(dsa_bf16_from_f32(dsa_float_of(0x3f808000u)), 0x3f80); /* tie → even */
    assert_int_equal(dsa_bf16_from_f32(dsa_float_of(0x3f818000u)), 0x3f82);
    assert_int_equal(dsa_bf16_from_f32(dsa_float_of(0x3f808001u)), 0x3f81);
    assert_int_equal(dsa_bf16_from_f32(dsa_float_of(0x3f807fffu)), 0x3f80);
    assert_int_equal(dsa_bf16_from_f32(FLT_MAX), 0x7f80); /* past the largest bf16: inf */
    assert_int_equal(dsa_bf16_from_f32(-INFINITY), 0xff80);
    assert_int_equal(dsa_bf16_from_f32(dsa_float_of(0x7f800001u)), 0x7fc0); /* signalling → quiet */
}

/* ---- topk_order.h ---- */

static int by_rank(const void *pa, const void *pb) {
    const DsaTopkCand a = *(const DsaTopkCand *)pa, b = *(const DsaTopkCand *)pb;
    return dsa_topk_worse(a, b) ? 1 : dsa_topk_worse(b, a) ? -1 : 0;
}

static void test_topk_order(void **state) {
    (void)state;
    /* exact ties rank by index; −0 ties +0 */
    DsaTopkCand c[] = {{1.0f, 5}, {2.0f, 9}, {1.0f, 2}, {-0.0f, 3}, {0.0f, 1}, {2.0f, 4}, {-INFINITY, 0}, {1.0f, 7}};
    const int32_t want[] = {4, 9, 2, 5, 7, 1, 3, 0};
    qsort(c, 8, sizeof *c, by_rank);
    for (int i = 0; i < 8; i++)
        if (c[i].index != want[i]) fail_msg("rank %d: key %d, want %d", i, c[i].index, want[i]);
    assert_false(dsa_topk_worse(c[0], c[0]));
    /* padding: a row with 3 candidates in 5 slots */
    for (int j = 0; j < 5; j++) {
        assert_int_equal(dsa_topk_slot_index(c, 3, j), j < 3 ? c[j].index : -1);
        const float s = dsa_topk_slot_score(c, 3, j);
        assert_true(j < 3 ? same_bits(s, c[j].score) : (isinf(s) && s < 0));
    }
    assert_int_equal(DSA_TOPK_PAD_INDEX, -1);
    /* within(a, last) ⇔ a is not worse than last, on values with many ties */
    for (int i = 0; i < 20000; i++) {
        const DsaTopkCand a = {(float)(int)(rnd32() % 5) - 2.0f, (int32_t)(rnd32() % 6)};
        const DsaTopkCand b = {(float)(int)(rnd32() % 5) - 2.0f, (int32_t)(rnd32() % 6)};
        assert_int_equal(dsa_topk_within(a.score, a.index, b.score, b.index), !dsa_topk_worse(a, b));
    }
    /* the radix key is order-preserving and merges the zeros */
    const float v[] = {-INFINITY, -FLT_MAX, -1.5f, -1.0f, -FLT_MIN, -0x1p-149f, 0.0f, 0x1p-149f, FLT_MIN, 1.0f, 3.0f,
                       FLT_MAX, INFINITY};
    for (size_t i = 0; i + 1 < sizeof v / sizeof *v; i++) assert_true(dsa_topk_radix_key(v[i]) < dsa_topk_radix_key(v[i + 1]));
    assert_true(dsa_topk_radix_key(-0.0f) == dsa_topk_radix_key(0.0f));
    for (int i = 0; i < 100000; i++) {
        const float a = dsa_float_of(rnd32()), b = dsa_float_of(rnd32());
        if (isnan(a) || isnan(b)) continue;
        assert_int_equal(a < b, dsa_topk_radix_key(a) < dsa_topk_radix_key(b));
        assert_int_equal(a == b, dsa_topk_radix_key(a) == dsa_topk_radix_key(b));
    }
}

/* ---- softmax.h ---- */

/* vexp2 over n inputs, VW at a time, against dsa_softmax_exp2 lane by lane. */
static void check_exp2_lanes(const float *x, int64_t n) {
    for (int64_t i = 0; i + VW <= n; i += VW) {
        Vec v;
        memcpy(&v, x + i, sizeof v);
        const Vec y = vexp2(v);
        float out[VW];
        memcpy(out, &y, sizeof out);
        for (int j = 0; j < VW; j++)
            if (!same_bits(out[j], dsa_softmax_exp2(x[i + j])))
                fail_msg("vexp2(%a) lane %d = %a, dsa_softmax_exp2 = %a", x[i + j], j, out[j],
                         dsa_softmax_exp2(x[i + j]));
    }
}

static void test_softmax_exp2_lanes(void **state) {
    (void)state;
    enum { N = 1 << 16 };
    float *x = malloc(N * sizeof(float));
    /* every 256th float of [−130, 2] (by bit pattern), in blocks */
    int64_t n = 0;
    for (uint32_t u = dsa_bits_of(-130.0f); u >= 0x80000000u; u -= 256) {
        x[n++] = dsa_float_of(u);
        if (n == N) check_exp2_lanes(x, n), n = 0;
    }
    for (uint32_t u = 0; u <= dsa_bits_of(2.0f); u += 256) {
        x[n++] = dsa_float_of(u);
        if (n == N) check_exp2_lanes(x, n), n = 0;
    }
    const float special[] = {-INFINITY, INFINITY, NAN, -NAN, -126.0f, nextafterf(-126.0f, 0.0f),
                             nextafterf(-126.0f, -INFINITY), -0.5f, 0.5f, -0.0f, 0.0f, 126.0f, -FLT_MAX, -1e-30f};
    for (size_t i = 0; i < sizeof special / sizeof *special; i++) x[n++] = special[i];
    while (n % VW) x[n++] = 0.0f;
    check_exp2_lanes(x, n);
    free(x);
    /* its accuracy: within 3 ulp of 2^x over the normal results, 0 below −126, NaN kept */
    double worst = 0;
    for (int i = 0; i < 1000000; i++) {
        const float t = uniform(-126.0f, 0.0f);
        const double want = exp2((double)t), ulp = ldexp(1.0, ilogb(want) - 23);
        worst = fmax(worst, fabs(dsa_softmax_exp2(t) - want) / ulp);
    }
    if (!(worst <= 3.0)) fail_msg("dsa_softmax_exp2: %.2f ulp", worst);
    assert_true(dsa_softmax_exp2(0.0f) == 1.0f && dsa_softmax_exp2(-1.0f) == 0.5f && dsa_softmax_exp2(3.0f) == 8.0f);
    assert_true(dsa_softmax_exp2(-INFINITY) == 0.0f && dsa_softmax_exp2(-127.0f) == 0.0f);
    assert_true(isnan(dsa_softmax_exp2(NAN)));
    assert_true(dsa_softmax_corr(-INFINITY, 3.0f) == 0.0f && dsa_softmax_corr(2.5f, 2.5f) == 1.0f);
    assert_true(dsa_softmax_max(NAN, 1.0f) == 1.0f && dsa_softmax_max(2.0f, 1.0f) == 2.0f);
    assert_true(signbit(dsa_softmax_max(0.0f, -0.0f))); /* equal: the running value stays */
}

/* One row by the rules, in chunks of `chunk` scores (log2 units): lse, and o = Σ P v. */
static void online_row(const float *s, const float *v, int64_t n, int64_t chunk, float *m_out, float *lse, float *o) {
    float m = -INFINITY, l = 0.0f, acc = 0.0f;
    for (int64_t j0 = 0; j0 < n; j0 += chunk) {
        const int64_t j1 = j0 + chunk < n ? j0 + chunk : n;
        float mx = m;
        for (int64_t j = j0; j < j1; j++) mx = dsa_softmax_max(s[j], mx);
        const float corr = dsa_softmax_corr(m, mx);
        l *= corr, acc *= corr, m = mx;
        for (int64_t j = j0; j < j1; j++) {
            const float p = dsa_softmax_exp2(s[j] - m);
            l += p, acc = dsa_fma_rule(p, v[j], acc);
        }
    }
    *m_out = m;
    *lse = n ? dsa_softmax_lse(m, l) : DSA_SOFTMAX_EMPTY_LSE;
    *o = n ? acc * dsa_softmax_inv(l) : 0.0f;
}

static void test_softmax_online(void **state) {
    (void)state;
    enum { NMAX = 300 };
    float s[NMAX], v[NMAX], rs[NMAX], rv[NMAX];
    const int64_t chunks[] = {1, 7, 64, NMAX};
    for (int trial = 0; trial < 300; trial++) {
        const int64_t n = 1 + rnd32() % NMAX;
        const float spread = trial % 3 == 0 ? 2.0f : trial % 3 == 1 ? 30.0f : 200.0f;
        for (int64_t j = 0; j < n; j++) s[j] = uniform(-spread, spread), v[j] = uniform(-1.0f, 1.0f);
        if (trial % 5 == 0 && n >= 3) s[1 + rnd32() % (n - 2)] = -INFINITY; /* a masked key, not first */
        /* two passes in fp64 */
        double mx = -INFINITY, sum = 0, num = 0, vabs = 0;
        for (int64_t j = 0; j < n; j++) mx = fmax(mx, s[j]);
        for (int64_t j = 0; j < n; j++) {
            const double p = exp2((double)s[j] - mx);
            sum += p, num += p * v[j], vabs += p * fabs(v[j]);
        }
        const double lse_ref = (mx + log2(sum)) * M_LN2, o_ref = num / sum;
        const double tol_rel = (8.0 + (double)n) * FLT_EPSILON; /* exp2 ≤ 3 ulp, n fp32 adds */
        for (int64_t j = 0; j < n; j++) rs[j] = s[n - 1 - j], rv[j] = v[n - 1 - j];
        float m0 = 0, lse0 = 0, o0 = 0;
        for (size_t c = 0; c < sizeof chunks / sizeof *chunks; c++)
            for (int rev = 0; rev < 2; rev++) {
                float m, lse, o;
                online_row(rev ? rs : s, rev ? rv : v, n, chunks[c], &m, &lse, &o);
                if (c == 0 && !rev) m0 = m, lse0 = lse, o0 = o;
                assert_true(same_bits(m, m0)); /* the max is exact whatever the order */
                if (!(fabs(lse - lse_ref) <= tol_rel * (1.0 + fabs(lse_ref)) && fabs(o - o_ref) <= tol_rel * vabs / sum))
                    fail_msg("n %lld chunk %lld%s: lse %.9g o %.9g, fp64 %.9g %.9g (chunk 1: %.9g %.9g)", (long long)n,
                             (long long)chunks[c], rev ? " reversed" : "", lse, o, lse_ref, o_ref, lse0, o0);
            }
    }
    float m, lse, o;
    online_row(s, v, 0, 64, &m, &lse, &o);
    assert_true(isinf(lse) && lse < 0 && o == 0.0f);
}

/* Dense attention, one head of qk_dim = v_dim = 1 (each score one rounded product): the
 * kernel's output and lse against the rules in its own tile order (64-key tiles, running
 * sum per key, P·V as one FMA chain per tile added to the rescaled output). */
static void test_softmax_attention_kernel(void **state) {
    (void)state;
    enum { L = 150, BK = 64 };
    float q[L], k[L], v[L], out[L], lse[L];
    for (int i = 0; i < L; i++) q[i] = uniform(-3, 3), k[i] = uniform(-3, 3), v[i] = uniform(-1, 1);
    const DsaAttnShape sh = {.batch = 1, .seq_len = L, .heads = 1, .qk_dim = 1, .v_dim = 1, .scale = 0.7f};
    dsa_cpu_attention_forward(out, lse, q, k, v, &sh);
    const float qmul = dsa_softmax_log2_scale(sh.scale);
    for (int t = 0; t < L; t++) {
        const float qt = q[t] * qmul;
        float m = -INFINITY, l = 0.0f, o = 0.0f;
        for (int s0 = 0; s0 <= t; s0 += BK) {
            const int nk = L - s0 < BK ? L - s0 : BK;
            float st[BK];
            for (int j = 0; j < nk; j++) st[j] = s0 + j > t ? -INFINITY : k[s0 + j] * qt;
            float x = m;
            for (int j = 0; j < nk; j++) x = dsa_softmax_max(st[j], x);
            const float corr = dsa_softmax_corr(m, x);
            l *= corr, m = x;
            float chain = 0.0f;
            for (int j = 0; j < nk; j++) {
                const float e = dsa_softmax_exp2(st[j] - m);
                l += e, chain = dsa_fma_rule(e, v[s0 + j], chain);
            }
            o = s0 > 0 ? o * corr + chain : chain;
        }
        const float want_o = o * dsa_softmax_inv(l), want_lse = dsa_softmax_lse(m, l);
        if (!same_bits(out[t], want_o) || !same_bits(lse[t], want_lse))
            fail_msg("query %d: kernel out %a lse %a, rules %a %a", t, out[t], lse[t], want_o, want_lse);
    }
}

/* Sparse attention, the same on qk_dim = v_dim = 1 with rows of up to 200 selected keys
 * (chunks of 64 valid keys, −1 slots skipped, the chunk sum added to the rescaled sum). */
static void test_softmax_sparse_kernel(void **state) {
    (void)state;
    enum { L = 260, K = 200, H = 2, BK = 64 };
    static float q[L * H], kv[L], out[L * H], lse[H * L];
    static int32_t idx[L * K];
    for (int i = 0; i < L * H; i++) q[i] = uniform(-3, 3);
    for (int i = 0; i < L; i++) kv[i] = uniform(-3, 3);
    for (int n = 0; n < L; n++)
        for (int j = 0; j < K; j++) idx[n * K + j] = j <= n && j % 9 != 4 ? (int32_t)((n * 7 + j * 13) % (n + 1)) : -1;
    idx[5 * K + 0] = -1, idx[5 * K + 1] = -1, idx[5 * K + 2] = -1, idx[5 * K + 3] = -1, idx[5 * K + 5] = -1;
    for (int j = 0; j < K; j++) idx[0 * K + j] = -1; /* row 0: no key */
    const DsaSparseAttnShape sh = {.batch = 1, .seq_len = L, .heads = H, .qk_dim = 1, .v_dim = 1, .topk = K,
                                   .scale = 0.4f};
    dsa_cpu_sparse_attention_forward(out, lse, q, kv, idx, &sh);
    const float c2 = dsa_softmax_log2_scale(sh.scale);
    for (int n = 0; n < L; n++)
        for (int h = 0; h < H; h++) {
            float m = -INFINITY, l = 0.0f, o = 0.0f, row[BK], key[BK];
            int c = 0, first = 1;
            for (int i = 0; i <= K; i++) {
                if (i < K && idx[n * K + i] >= 0) {
                    key[c] = kv[idx[n * K + i]];
                    row[c] = (q[n * H + h] * key[c]) * c2;
                    c++;
                }
                if (c == BK || (i == K && c > 0)) {
                    float mx = m, sum = 0.0f, chain = 0.0f;
                    for (int j = 0; j < c; j++) mx = dsa_softmax_max(row[j], mx);
                    for (int j = 0; j < c; j++) row[j] = dsa_softmax_exp2(row[j] - mx), sum += row[j];
                    const float corr = dsa_softmax_corr(m, mx);
                    l = l * corr + sum, m = mx;
                    for (int j = 0; j < c; j++) chain = dsa_fma_rule(row[j], key[j], chain);
                    o = first ? chain : o * corr + chain;
                    first = 0, c = 0;
                }
            }
            const float want_o = first ? 0.0f : o * dsa_softmax_inv(l);
            const float want_lse = first ? DSA_SOFTMAX_EMPTY_LSE : dsa_softmax_lse(m, l);
            if (!same_bits(out[n * H + h], want_o) || !same_bits(lse[h * L + n], want_lse))
                fail_msg("row %d head %d: kernel out %a lse %a, rules %a %a", n, h, out[n * H + h], lse[h * L + n],
                         want_o, want_lse);
        }
}

/* ---- exp.h ---- */

static __attribute__((noinline)) float vexpf_scalar(float x) { return dsa_vexpf(x); }

static void test_vexpf_lanes(void **state) {
    (void)state;
    enum { N = 1 << 16 };
    float *x = malloc(N * sizeof(float)), *y = malloc(N * sizeof(float));
    for (int i = 0; i < N; i++) x[i] = i < 16 ? (float[]){-INFINITY, NAN, -87.3f, -87.4f, 88.0f, 88.5f, 0.0f, -0.0f,
                                                         1.0f, -1.0f, 3.5f, -FLT_MIN, 1e-30f, -100.0f, 10.0f, -50.0f}[i]
                                               : uniform(-90.0f, 5.0f);
#pragma omp simd
    for (int i = 0; i < N; i++) y[i] = dsa_vexpf(x[i]);
    for (int i = 0; i < N; i++)
        if (!same_bits(y[i], vexpf_scalar(x[i]))) fail_msg("dsa_vexpf(%a): loop %a, call %a", x[i], y[i], vexpf_scalar(x[i]));
    free(x), free(y);
}

/* ---- kl.h ---- */

static void test_kl_guards(void **state) {
    (void)state;
    /* p = 0: the term is exactly 0, whatever the logs (no 0 · −inf = NaN) */
    assert_true(dsa_kl_term(0.0f, -INFINITY, -3.0f) == 0.0);
    assert_true(dsa_kl_term(0.0f, -INFINITY, -INFINITY) == 0.0);
    assert_true(dsa_kl_term(0.0f, -104.0f, -INFINITY) == 0.0);
    /* π = 0 with mass on the target: +inf, no epsilon caps it */
    assert_true(isinf(dsa_kl_term(0.25f, logf(0.25f), -INFINITY)) && dsa_kl_term(0.25f, logf(0.25f), -INFINITY) > 0);
    /* equal distributions: 0; otherwise p (log p − log π) in double */
    assert_true(dsa_kl_term(0.3f, logf(0.3f), logf(0.3f)) == 0.0);
    const double t = dsa_kl_term(0.5f, -0.75f, -2.0f);
    assert_true(t == 0.5 * 1.25);
    /* gradient: π − p, scaled; finite at both zeros */
    assert_true(dsa_kl_grad(2.0f, 0.25f, 0.0f) == 0.5f);
    assert_true(dsa_kl_grad(2.0f, 0.0f, 0.25f) == -0.5f);
    assert_true(dsa_kl_log_pi(1.5f, 4.0f) == -2.5f && dsa_kl_head_logit(0.5f, 3.0f, 1.0f) == 0.5f);
    /* the log target against fp64: heads' logits relative to their lse, combined */
    for (int trial = 0; trial < 2000; trial++) {
        enum { H = 7 };
        float a[H], mx = -INFINITY, se = 0.0f;
        const int heads = 1 + (int)(rnd32() % H);
        for (int h = 0; h < heads; h++)
            a[h] = dsa_kl_head_logit(0.3f, uniform(-20, 20), uniform(0, 8)), mx = dsa_softmax_max(a[h], mx);
        double ref = 0;
        for (int h = 0; h < heads; h++) se += expf(a[h] - mx), ref += exp((double)a[h]);
        ref = log(ref / heads);
        const float got = dsa_kl_log_target(mx, se, logf((float)heads));
        if (!(fabs(got - ref) <= 1e-5 * (1.0 + fabs(ref)))) fail_msg("log target %.9g, fp64 %.9g", got, ref);
    }
}

/* ---- adamw.h ---- */

static void test_adamw(void **state) {
    (void)state;
    /* step 1 by hand: p = 1, g = 0.5, m = v = 0, lr 1e-3, wd 0.1, β (0.9, 0.999), eps 1e-8:
     * m = 0.05, v = 2.5e-4, p = 1·(1 − 1e-4) − (1e-3 / 0.1) · 0.05 / (sqrt(2.5e-4) / sqrt(1e-3) + 1e-8)
     *   = 0.9999 − 0.01 · 0.05 / (0.5 + 1e-8) = 0.99890000002 */
    const float b1 = 0.9f, b2 = 0.999f;
    DsaAdamWConsts k = dsa_adamw_consts(1e-3f, 0.1f, b1, b2, 1e-8f, 1.0f - b1, 1.0f - b2);
    float p = 1.0f, m = 0.0f, v = 0.0f;
    dsa_adamw_update(&p, &m, &v, 0.5f, &k);
    const double want = 0.9999 - 0.01 * 0.05 / (0.5 + 1e-8);
    if (!(fabs(p - want) <= 2 * FLT_EPSILON)) fail_msg("AdamW step 1: %.9g, want %.11g", p, want);
    /* the moments against the fp32 coefficients 1 − β in double */
    assert_true(fabs(m - (double)(1.0f - b1) * 0.5) <= 0.05 * FLT_EPSILON);
    assert_true(fabs(v - (double)(1.0f - b2) * 0.25) <= 2.5e-4 * FLT_EPSILON);
    /* g = 0 and empty moments: decay alone, exactly */
    p = 3.0f, m = 0.0f, v = 0.0f;
    dsa_adamw_update(&p, &m, &v, 0.0f, &k);
    assert_true(p == 3.0f * k.decay && m == 0.0f && v == 0.0f);
    /* many elements and steps against fp64 torch formulas, and the CPU kernel = the rule */
    enum { N = 4096 };
    static float P[N], M[N], V[N], G[N], P2[N], M2[N], V2[N];
    static double PD[N], MD[N], VD[N];
    for (int i = 0; i < N; i++) P[i] = P2[i] = uniform(-1, 1), M[i] = M2[i] = V[i] = V2[i] = 0.0f;
    for (int i = 0; i < N; i++) PD[i] = P[i], MD[i] = VD[i] = 0;
    for (int step = 1; step <= 5; step++) {
        const float bc1 = 1.0f - powf(b1, (float)step), bc2 = 1.0f - powf(b2, (float)step);
        const DsaAdamWParams hp = {.lr = 3e-3f, .beta1 = b1, .beta2 = b2, .eps = 1e-8f, .weight_decay = 0.05f,
                                   .bias_correction1 = bc1, .bias_correction2 = bc2};
        k = dsa_adamw_consts(hp.lr, hp.weight_decay, b1, b2, hp.eps, bc1, bc2);
        for (int i = 0; i < N; i++) G[i] = uniform(-1, 1) * ldexpf(1.0f, (int)(rnd32() % 20) - 10);
        dsa_cpu_adamw_step(P2, G, M2, V2, N, &hp);
        for (int i = 0; i < N; i++) {
            dsa_adamw_update(&P[i], &M[i], &V[i], G[i], &k);
            assert_true(same_bits(P[i], P2[i]) && same_bits(M[i], M2[i]) && same_bits(V[i], V2[i]));
            PD[i] *= 1.0 - (double)hp.lr * hp.weight_decay;
            MD[i] = b1 * MD[i] + (1.0 - b1) * G[i], VD[i] = b2 * VD[i] + (1.0 - b2) * (double)G[i] * G[i];
            PD[i] -= hp.lr * (MD[i] / bc1) / (sqrt(VD[i] / bc2) + hp.eps);
            if (!(fabs(P[i] - PD[i]) <= 1e-6 * (1.0 + fabs(PD[i]))))
                fail_msg("step %d element %d: %.9g, fp64 %.9g", step, i, P[i], PD[i]);
        }
    }
}

/* index_score.h against the CPU score tiles, element by element, bit for bit. */
static void test_index_score_order(void **state) {
    (void)state;
    enum { B = 2, L = 37, HI = 3, DI = 32 };
    DsaIndexerShape s = {.batch = B, .seq_len = L, .heads = HI, .head_dim = DI, .rope_dim = 8, .topk = 8,
                         .scale = 1.0f / sqrtf((float)(HI * DI))};
    static float q[B * L * HI * DI], k[B * L * DI], w[B * L * HI], tile[L * L];
    for (size_t i = 0; i < sizeof q / sizeof *q; i++) q[i] = uniform(-1.0f, 1.0f);
    for (size_t i = 0; i < sizeof k / sizeof *k; i++) k[i] = uniform(-1.0f, 1.0f);
    for (size_t i = 0; i < sizeof w / sizeof *w; i++) w[i] = uniform(-0.5f, 1.0f);
    DsaIndexerActs a = {.q = q, .k = k, .w = w};
    const int64_t boxes[][4] = {{0, L, 0, L}, {5, 13, 3, 29}, {20, 17, 0, 21}};
    int64_t checked = 0;
    for (int64_t b = 0; b < B; b++)
        for (size_t bx = 0; bx < sizeof boxes / sizeof *boxes; bx++) {
            const int64_t t0 = boxes[bx][0], nq = boxes[bx][1], s0 = boxes[bx][2], nk = boxes[bx][3];
            dsa_indexer_score_tile(tile, NULL, L, &a, &s, b, t0, nq, s0, nk);
            for (int64_t i = 0; i < nq; i++)
                for (int64_t c = 0; c < nk; c++) {
                    const int64_t t = t0 + i, key = s0 + c;
                    float want = dsa_index_score(q + (b * L + t) * HI * DI, w + (b * L + t) * HI, k + (b * L + key) * DI,
                                                 HI, DI, s.scale, t, key);
                    if (!same_bits(tile[i * L + c], want))
                        fail_msg("seq %lld row %lld key %lld: tile %.9g, rule %.9g", (long long)b, (long long)t,
                                 (long long)key, tile[i * L + c], want);
                    checked++;
                }
        }
    assert_true(checked > 2000);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fp8_codes),          cmocka_unit_test(test_fp8_ties_and_saturation),
        cmocka_unit_test(test_fp8_scales),         cmocka_unit_test(test_bf16),
        cmocka_unit_test(test_topk_order),         cmocka_unit_test(test_softmax_exp2_lanes),
        cmocka_unit_test(test_softmax_online),     cmocka_unit_test(test_softmax_attention_kernel),
        cmocka_unit_test(test_softmax_sparse_kernel), cmocka_unit_test(test_vexpf_lanes),
        cmocka_unit_test(test_kl_guards),          cmocka_unit_test(test_adamw),
        cmocka_unit_test(test_index_score_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
