/* test_indexer_math.c: the exact arithmetic of the lightning indexer (DSA-SPEC §4.4, §5,
 * §9), each piece against an independent formula written here:
 *
 *  - FP8 (indexer/fp8.h, §5.2): every row of §5.2's worked-examples table (bf16 and fp32
 *    inputs, group widths 128 and 32, one group or several), all 256 e4m3 codes, ties to
 *    even at every midpoint between neighbouring codes (against a brute-force nearest
 *    search), saturation, −0, the smallest subnormal, the 1e-4 amax clamp and exact
 *    powers of two 448·2^e; all bit-exact.
 *  - Hadamard (indexer/hadamard.h, §5.1): the butterflies against the explicit matrix
 *    H[i][j] = (−1)^popcount(i AND j) / √n, Ĥ Ĥ v = v and preserved dot products.
 *  - NeoX RoPE (dsa_rope_neox, §4.4): against the complex multiplication on the pairs
 *    (i, i + d_r/2), dims ≥ d_r untouched, the inverse; and a check that the interleaved
 *    (GPT-J) layout would fail the comparison, so a layout swap cannot pass.
 *  - Scores and top-k (dsa_indexer_score_tile, dsa_indexer_topk, §5.3, §5.4): scores
 *    against fp64 c Σ_j w ReLU(q̂·k̂); the selection against a full sort by (score
 *    descending, index ascending) of the score tile's own fp32 scores, with exact ties
 *    (repeated key rows), negative head weights, rows shorter than k (−1 / −∞ padding),
 *    k = 1 and k ≥ L; identical bits on 1 and 3 threads.
 *
 * Random inputs come from a small LCG so the file depends on nothing but the code under
 * test. */
#include <math.h>
#include <omp.h>
#include <stdbool.h>

#include "indexer/fp8.h"
#include "indexer/hadamard.h"
#include "indexer/indexer.h"
#include "kernels/backend.h"
#include "test_util.h"

/* ------------------------------------------------------------------------------------ */
/* helpers                                                                               */

/* A 64-bit LCG (Knuth's MMIX constants); uniform values in [−1, 1) with 24 random bits,
 * exact in fp32. */
static uint32_t lcg_next(uint64_t *st) {
    *st = *st * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(*st >> 33);
}

static float lcg_uniform(uint64_t *st) { return (float)((double)(lcg_next(st) >> 7) / 16777216.0 * 2.0 - 1.0); }

/* fp32 → bf16 → fp32, round to nearest even (finite inputs). */
static float to_bf16(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    u += 0x7fffu + ((u >> 16) & 1u);
    u &= 0xffff0000u;
    float y;
    memcpy(&y, &u, sizeof y);
    return y;
}

static uint32_t bits_of(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

/* Value of a positive e4m3fn code 0x00…0x7e, written from the format definition:
 * exponent field 0: m · 2^-9; else (1 + m/8) · 2^(e − 7). */
static double e4m3_value(int code) {
    const int e = code >> 3, m = code & 7;
    return e == 0 ? ldexp((double)m, -9) : ldexp(1.0 + m / 8.0, e - 7);
}

/* The e4m3 value nearest x by brute force over all 127 non-negative finite codes; a tie
 * goes to the even code (= even significand); |x| ≥ 448 saturates; NaN stays NaN. */
static float ref_e4m3_round(float x) {
    if (isnan(x)) return x;
    const double a = fabs((double)x);
    if (a >= 448.0) return copysignf(448.0f, x);
    int best = 0;
    double bd = INFINITY;
    for (int c = 0; c <= 0x7e; c++) {
        const double d = fabs(a - e4m3_value(c));
        if (d < bd || (d == bd && (c & 1) == 0)) best = c, bd = d;
    }
    return copysignf((float)e4m3_value(best), x);
}

/* σ of a group (§5.2) derived with frexp instead of bit fields: amax clamped at 1e-4,
 * r = amax · fp32(1/448), σ = 2^ceil(log2 r). */
static float ref_group_scale(float amax) {
    if (!(amax > 1e-4f)) amax = 1e-4f;
    const float r = amax * (1.0f / 448.0f);
    int k;
    const double f = frexp((double)r, &k); /* r = f · 2^k, f in [0.5, 1) */
    return ldexpf(1.0f, f == 0.5 ? k - 1 : k);
}

/* ------------------------------------------------------------------------------------ */
/* FP8                                                                                   */

/* One row of DSA-SPEC §5.2's worked examples: group values (rest zero), e, codes as
 * values (v8), dequantized values. */
typedef struct {
    int n;
    float v[4];
    int e;
    float code[4];
    double deq[4];
} Fp8Example;

static const Fp8Example FP8_TABLE[] = {
    {4, {1.0f, 0.3f, 0.01f, -0.5f}, -8, {256, 80, 2.5f, -128}, {1.0, 0.3125, 0.009765625, -0.5}},
    {3, {448.0f, 1.0f, -3.3f}, 0, {448, 1, -3.25f}, {448, 1, -3.25}},
    {2, {450.0f, 0.7f}, 1, {224, 0.34375f}, {448, 0.6875}},
    {2, {7.0f, 100.0f}, -2, {28, 384}, {7, 96}},
    {2, {1e-5f, -2e-5f}, -22, {40, -80}, {9.5367431640625e-6, -1.9073486328125e-5}},
    {2, {0.0f, 0.0f}, -22, {0, 0}, {0, 0}},
};
enum { FP8_ROWS = (int)(sizeof FP8_TABLE / sizeof FP8_TABLE[0]) };

/* Check one quantized group [g0, g0 + g) holding example `ex` at positions pos (others
 * zero): σ, codes and dequantized values bit-exact. */
static void check_fp8_group(const char *what, const Fp8Example *ex, const int *pos, const uint8_t *codes,
                            const float *scales, const float *deq, int64_t g0, int64_t g) {
    const float sigma = ldexpf(1.0f, ex->e);
    if (scales[g0 / g] != sigma)
        fail_msg("%s: scale %.9g (2^%d expected = %.9g)", what, scales[g0 / g], ex->e, sigma);
    for (int64_t i = g0; i < g0 + g; i++) {
        int which = -1;
        for (int j = 0; j < ex->n; j++)
            if (g0 + pos[j] == i) which = j;
        const float want_code = which >= 0 ? ex->code[which] : 0.0f;
        const double want_deq = which >= 0 ? ex->deq[which] : 0.0;
        const float got_code = dsa_e4m3_decode(codes[i]);
        if (got_code != want_code)
            fail_msg("%s: entry %lld: code 0x%02x = %.9g, want %.9g", what, (long long)i, codes[i], got_code,
                     want_code);
        if (deq[i] != want_deq)
            fail_msg("%s: entry %lld: dequantized %.17g, want %.17g", what, (long long)i, deq[i], want_deq);
        if (deq[i] != got_code * sigma)
            fail_msg("%s: entry %lld: dequantized %.17g != decode(code) * sigma = %.17g", what, (long long)i,
                     deq[i], got_code * sigma);
        if (which < 0 && codes[i] != 0x00) fail_msg("%s: zero entry %lld: code 0x%02x", what, (long long)i, codes[i]);
    }
}

/* Every table row at group widths 128 and 32, values at the front or spread over the
 * group, as bf16 and as fp32 inputs; the three output combinations (codes only, deq
 * only, deq in place over v) agree. */
static void test_fp8_spec_table(void **state) {
    (void)state;
    static const int64_t widths[] = {128, 32};
    for (int wi = 0; wi < 2; wi++) {
        const int64_t g = widths[wi];
        assert_int_equal(dsa_fp8_group_size(g), g);
        const int front[4] = {0, 1, 2, 3};
        const int spread[4] = {(int)g - 1, 5, (int)g / 2 + 1, 0};
        for (int layout = 0; layout < 2; layout++)
            for (int bf = 0; bf < 2; bf++)
                for (int r = 0; r < FP8_ROWS; r++) {
                    const Fp8Example *ex = &FP8_TABLE[r];
                    const int *pos = layout ? spread : front;
                    float v[128] = {0}, deq[128], deq2[128], inplace[128], scales[1], scales2[1], scales3[1];
                    uint8_t codes[128], codes3[128];
                    float amax = 0;
                    for (int j = 0; j < ex->n; j++) {
                        v[pos[j]] = bf ? to_bf16(ex->v[j]) : ex->v[j];
                        amax = fmaxf(amax, fabsf(v[pos[j]]));
                    }
                    char what[160];
                    snprintf(what, sizeof what, "table row %d (%g, %g, ...), g %lld, %s, %s inputs", r, ex->v[0],
                             ex->v[1], (long long)g, layout ? "spread" : "front", bf ? "bf16" : "fp32");
                    dsa_fp8_quantize(codes, scales, deq, v, g, g);
                    check_fp8_group(what, ex, pos, codes, scales, deq, 0, g);
                    if (dsa_fp8_group_scale(amax) != scales[0])
                        fail_msg("%s: dsa_fp8_group_scale(%.9g) = %.9g, quantize used %.9g", what, amax,
                                 dsa_fp8_group_scale(amax), scales[0]);
                    /* codes NULL, deq NULL, deq aliasing v: same results */
                    dsa_fp8_quantize(NULL, scales2, deq2, v, g, g);
                    memset(codes3, 0xaa, sizeof codes3);
                    dsa_fp8_quantize(codes3, scales3, NULL, v, g, g);
                    memcpy(inplace, v, sizeof v);
                    dsa_fp8_quantize(NULL, scales3, inplace, inplace, g, g);
                    assert_true(scales2[0] == scales[0] && scales3[0] == scales[0]);
                    assert_memory_equal(deq2, deq, sizeof(float) * (size_t)g);
                    assert_memory_equal(inplace, deq, sizeof(float) * (size_t)g);
                    assert_memory_equal(codes3, codes, (size_t)g);
                }
    }
    /* the spec's remark: 449 is 448 in bf16, so the 450 row needs 450 */
    assert_true(to_bf16(449.0f) == 448.0f && to_bf16(450.0f) == 450.0f && to_bf16(0.7f) == 0.69921875f);
}

/* A 256-wide vector in two groups of 128 (rows 1 and 4 of the table), and in eight
 * groups of 32 (row 3 in group 5, all other groups zero). */
static void test_fp8_multi_group(void **state) {
    (void)state;
    assert_int_equal(dsa_fp8_group_size(256), 128);
    assert_int_equal(dsa_fp8_group_size(128), 128);
    assert_int_equal(dsa_fp8_group_size(32), 32);
    assert_int_equal(dsa_fp8_group_size(16), 16);
    const int pos[4] = {3, 100, 64, 127};
    float v[256] = {0}, deq[256], scales[8];
    uint8_t codes[256];
    for (int j = 0; j < FP8_TABLE[0].n; j++) v[pos[j]] = to_bf16(FP8_TABLE[0].v[j]);
    for (int j = 0; j < FP8_TABLE[3].n; j++) v[128 + pos[j]] = to_bf16(FP8_TABLE[3].v[j]);
    dsa_fp8_quantize(codes, scales, deq, v, 256, dsa_fp8_group_size(256));
    check_fp8_group("256 wide, group 0 (row 1)", &FP8_TABLE[0], pos, codes, scales, deq, 0, 128);
    check_fp8_group("256 wide, group 1 (row 4)", &FP8_TABLE[3], pos, codes, scales, deq, 128, 128);

    const int pos32[4] = {31, 0, 7, 8};
    memset(v, 0, sizeof v);
    for (int j = 0; j < FP8_TABLE[2].n; j++) v[5 * 32 + pos32[j]] = to_bf16(FP8_TABLE[2].v[j]);
    dsa_fp8_quantize(codes, scales, deq, v, 256, 32);
    for (int64_t gi = 0; gi < 8; gi++) {
        char what[64];
        snprintf(what, sizeof what, "256 wide in groups of 32, group %lld", (long long)gi);
        check_fp8_group(what, gi == 5 ? &FP8_TABLE[2] : &FP8_TABLE[5], pos32, codes, scales, deq, gi * 32, 32);
    }
}

/* All 256 codes: decode matches the format definition, encode ∘ decode is the identity
 * (−0 included), NaN codes decode to NaN and NaN encodes to 0x7f. */
static void test_e4m3_all_codes(void **state) {
    (void)state;
    for (int c = 0; c < 256; c++) {
        const uint8_t code = (uint8_t)c;
        const float x = dsa_e4m3_decode(code);
        if ((c & 0x7f) == 0x7f) {
            if (!isnan(x)) fail_msg("decode(0x%02x) = %.9g, want NaN", c, x);
            continue;
        }
        const double want = (c & 0x80 ? -1.0 : 1.0) * e4m3_value(c & 0x7f);
        if (x != want || (bool)signbit(x) != (bool)(c & 0x80))
            fail_msg("decode(0x%02x) = %.9g, want %s%.9g", c, x, c & 0x80 ? "-" : "+", fabs(want));
        if (dsa_e4m3_encode(x) != code) fail_msg("encode(decode(0x%02x) = %.9g) = 0x%02x", c, x, dsa_e4m3_encode(x));
        const float r = dsa_e4m3_round(x);
        if (bits_of(r) != bits_of(x)) fail_msg("round(%.9g) = %.9g: e4m3 values must round to themselves", x, r);
        if (c > 0 && c < 0x7f && !(x > dsa_e4m3_decode((uint8_t)(c - 1))))
            fail_msg("decode not increasing at 0x%02x", c);
    }
    /* anchors */
    assert_true(dsa_e4m3_decode(0x01) == 0x1p-9f);
    assert_true(dsa_e4m3_decode(0x07) == 7 * 0x1p-9f);
    assert_true(dsa_e4m3_decode(0x08) == 0x1p-6f);
    assert_true(dsa_e4m3_decode(0x38) == 1.0f);
    assert_true(dsa_e4m3_decode(0x77) == 240.0f);
    assert_true(dsa_e4m3_decode(0x7e) == 448.0f);
    assert_true(dsa_e4m3_decode(0xfe) == -448.0f);
    assert_int_equal(dsa_e4m3_encode(NAN), 0x7f);
    assert_int_equal(dsa_e4m3_encode(-NAN), 0x7f);
    assert_true(isnan(dsa_e4m3_round(NAN)));
}

/* Hand-checked rounding cases, then every midpoint between neighbouring codes (and one
 * fp32 ulp either side) and random values over the whole range, against the
 * brute-force nearest search. */
static void test_e4m3_rounding(void **state) {
    (void)state;
    static const struct {
        float x, want;
    } cases[] = {
        /* subnormal range (quantum 2^-9) */
        {0x1p-10f, 0.0f},           /* 0.5 · 2^-9: tie 0 | 2^-9 → 0 (even) */
        {0x1.8p-9f, 0x1p-8f},       /* 1.5 · 2^-9: tie 1 | 2 (·2^-9) → 2 */
        {0x1.4p-8f, 0x1p-8f},       /* 2.5 · 2^-9: tie 2 | 3 → 2 */
        {0x1.cp-8f, 0x1p-7f},       /* 3.5 · 2^-9: tie 3 | 4 → 4 */
        {0x1.ep-7f, 0x1p-6f},       /* 7.5 · 2^-9: tie 0x07 | 0x08 (= 2^-6, first normal) → 0x08 */
        {0x1.1p-6f, 0x1p-6f},       /* 2^-6 + 2^-10: tie 0x08 | 0x09 → 0x08 */
        {0x1.3p-6f, 0x1.4p-6f},     /* 2^-6 + 3·2^-10: tie 0x09 | 0x0a → 0x0a = 2^-6 + 2^-8 */
        {0x1.000002p-10f, 0x1p-9f}, /* just above the first midpoint */
        {0x1.fffffep-11f, 0.0f},    /* just below it */
        {0x1p-9f, 0x1p-9f},         /* smallest subnormal is exact */
        {0x1p-20f, 0.0f},
        /* normal range */
        {17.0f, 16.0f},   /* [16, 32) quantum 2: tie 16 | 18 → 16 (mantissa 0) */
        {19.0f, 20.0f},   /* tie 18 | 20 → 20 (mantissa 2) */
        {1.0625f, 1.0f},  /* [1, 2) quantum 1/8: tie 1 | 1.125 → 1 */
        {1.1875f, 1.25f}, /* tie 1.125 | 1.25 → 1.25 */
        {248.0f, 256.0f}, /* tie 240 (m 7) | 256 (next binade, m 0) → 256 */
        {400.0f, 384.0f}, /* tie 384 (m 4) | 416 (m 5) → 384 (the table's 100 / 0.25) */
        {432.0f, 448.0f}, /* tie 416 (m 5) | 448 (m 6) → 448 */
        {17.000002f, 18.0f},
        {18.999998f, 18.0f},
        {-17.0f, -16.0f},
        {-19.0f, -20.0f},
        {-0x1.8p-9f, -0x1p-8f},
        /* saturation (satfinite) */
        {448.0f, 448.0f},
        {449.0f, 448.0f},
        {464.0f, 448.0f}, /* would be the tie 448 | 480 (480 is not finite in e4m3fn) */
        {1000.0f, 448.0f},
        {-1000.0f, -448.0f},
        {-464.0f, -448.0f},
        {1e30f, 448.0f},
        {INFINITY, 448.0f},
        {-INFINITY, -448.0f},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const float got = dsa_e4m3_round(cases[i].x);
        if (bits_of(got) != bits_of(cases[i].want))
            fail_msg("e4m3_round(%a = %.9g) = %.9g, want %.9g", cases[i].x, cases[i].x, got, cases[i].want);
        if (dsa_e4m3_decode(dsa_e4m3_encode(cases[i].x)) != cases[i].want)
            fail_msg("decode(encode(%.9g)) = %.9g, want %.9g", cases[i].x,
                     dsa_e4m3_decode(dsa_e4m3_encode(cases[i].x)), cases[i].want);
        if (bits_of(ref_e4m3_round(cases[i].x)) != bits_of(cases[i].want))
            fail_msg("test's own brute-force reference disagrees at %.9g", cases[i].x); /* sanity */
    }
    assert_int_equal(dsa_e4m3_encode(0x1p-9f), 0x01);
    assert_int_equal(dsa_e4m3_encode(-0x1p-9f), 0x81);
    assert_int_equal(dsa_e4m3_encode(1000.0f), 0x7e);
    assert_int_equal(dsa_e4m3_encode(-1000.0f), 0xfe);
    assert_int_equal(dsa_e4m3_encode(464.0f), 0x7e);
    /* −0: keeps its sign (code 0x80); tiny negatives round to −0 */
    assert_int_equal(dsa_e4m3_encode(0.0f), 0x00);
    assert_int_equal(dsa_e4m3_encode(-0.0f), 0x80);
    assert_int_equal(dsa_e4m3_encode(-0x1p-11f), 0x80);
    assert_true(signbit(dsa_e4m3_round(-0.0f)) && dsa_e4m3_round(-0.0f) == 0.0f);
    assert_true(signbit(dsa_e4m3_decode(0x80)) && dsa_e4m3_decode(0x80) == 0.0f);

    /* every midpoint between neighbouring positive codes, ±1 ulp, both signs */
    for (int c = 0; c < 0x7e; c++) {
        const float lo = (float)e4m3_value(c), hi = (float)e4m3_value(c + 1);
        const float mid = (float)((e4m3_value(c) + e4m3_value(c + 1)) / 2); /* exact in fp32 */
        const float want_mid = (c & 1) ? hi : lo;
        const float xs[3] = {mid, nextafterf(mid, 0.0f), nextafterf(mid, INFINITY)};
        const float want[3] = {want_mid, lo, hi};
        for (int k = 0; k < 3; k++)
            for (int sgn = 0; sgn < 2; sgn++) {
                const float x = sgn ? -xs[k] : xs[k], w = sgn ? -want[k] : want[k];
                const float got = dsa_e4m3_round(x);
                if (bits_of(got) != bits_of(w))
                    fail_msg("e4m3_round(%a = %.9g) = %.9g, want %.9g (codes 0x%02x | 0x%02x)", x, x, got, w, c,
                             c + 1);
                if (dsa_e4m3_encode(x) != (uint8_t)((sgn ? 0x80 : 0) | (w == lo || w == -lo ? c : c + 1)))
                    fail_msg("encode(%.9g) = 0x%02x", x, dsa_e4m3_encode(x));
            }
    }
    /* random magnitudes 2^-12 … 2^10 (log-uniform), both signs */
    uint64_t st = 7;
    for (int i = 0; i < 20000; i++) {
        const float e = lcg_uniform(&st) * 11.0f - 1.0f; /* [-12, 10) */
        float x = exp2f(e) * (1.0f + 0.5f * lcg_uniform(&st));
        if (i & 1) x = -x;
        const float got = dsa_e4m3_round(x), want = ref_e4m3_round(x);
        if (bits_of(got) != bits_of(want)) fail_msg("e4m3_round(%a = %.9g) = %.9g, want %.9g", x, x, got, want);
    }
}

/* Group scales: the 1e-4 amax clamp, exact powers 448 · 2^e, and random groups against
 * the frexp-based reference quantizer. */
static void test_fp8_scales(void **state) {
    (void)state;
    /* clamp: amax below 1e-4 gives 2^-22 */
    static const float small[] = {0.0f, 1e-30f, 1e-6f, 5e-5f, 9.99e-5f, 1e-4f};
    for (size_t i = 0; i < sizeof small / sizeof small[0]; i++)
        if (dsa_fp8_group_scale(small[i]) != 0x1p-22f)
            fail_msg("group_scale(%.9g) = %a, want 2^-22", small[i], dsa_fp8_group_scale(small[i]));
    assert_true(dsa_fp8_group_scale(448.0f * 0x1p-22f * 1.01f) == 0x1p-21f);
    assert_true(dsa_fp8_group_scale(2e-4f) == 0x1p-21f); /* 2e-4 / 448 = 4.46e-7 in (2^-22, 2^-21] */
    /* amax = 448 · 2^e exactly: σ = 2^e (both with · fp32(1/448) and / 448); a hair more
     * gives the next power; in a group the amax entry gets code 448 (0x7e). */
    for (int e = -22; e <= 40; e++) {
        const float amax = ldexpf(448.0f, e);
        assert_true(amax * (1.0f / 448.0f) == ldexpf(1.0f, e) && amax / 448.0f == ldexpf(1.0f, e));
        if (dsa_fp8_group_scale(amax) != ldexpf(1.0f, e))
            fail_msg("group_scale(448 * 2^%d) = %a, want 2^%d", e, dsa_fp8_group_scale(amax), e);
        if (dsa_fp8_group_scale(ldexpf(449.0f, e)) != ldexpf(1.0f, e + 1))
            fail_msg("group_scale(449 * 2^%d) = %a, want 2^%d", e, dsa_fp8_group_scale(ldexpf(449.0f, e)), e + 1);
        const float up = nextafterf(amax, INFINITY);
        if (dsa_fp8_group_scale(up) != ref_group_scale(up))
            fail_msg("group_scale(%a) = %a, want %a", up, dsa_fp8_group_scale(up), ref_group_scale(up));
        float v[128] = {0}, deq[128], sc[1];
        uint8_t codes[128];
        v[77] = -amax, v[3] = ldexpf(1.0f, e);
        dsa_fp8_quantize(codes, sc, deq, v, 128, 128);
        assert_true(sc[0] == ldexpf(1.0f, e));
        assert_int_equal(codes[77], 0xfe);
        assert_int_equal(codes[3], 0x38);
        assert_true(deq[77] == -amax && deq[3] == v[3]);
        float v32[32] = {0}, d32[32], s32[1];
        v32[31] = amax;
        dsa_fp8_quantize(NULL, s32, d32, v32, 32, dsa_fp8_group_size(32));
        assert_true(s32[0] == ldexpf(1.0f, e) && d32[31] == amax);
    }
    /* −0 in a group: σ = 2^-22, code 0x80, dequantized −0 */
    {
        float v[32] = {0}, deq[32], sc[1];
        uint8_t codes[32];
        v[4] = -0.0f;
        dsa_fp8_quantize(codes, sc, deq, v, 32, 32);
        assert_true(sc[0] == 0x1p-22f);
        assert_int_equal(codes[4], 0x80);
        assert_true(deq[4] == 0.0f && signbit(deq[4]));
        assert_int_equal(codes[5], 0x00);
    }
    /* random groups at magnitudes 1e-7 … 1e6 against the reference quantizer, widths
     * 128 and 32, several groups per call */
    uint64_t st = 99;
    static const float mags[] = {1e-7f, 3e-5f, 1e-4f, 2e-3f, 0.7f, 1.0f, 37.0f, 448.0f, 1e6f};
    for (size_t m = 0; m < sizeof mags / sizeof mags[0]; m++)
        for (int gw = 0; gw < 2; gw++) {
            const int64_t g = gw ? 32 : 128, n = 384;
            float v[384], deq[384], sc[12];
            uint8_t codes[384];
            for (int64_t i = 0; i < n; i++) {
                v[i] = to_bf16(mags[m] * lcg_uniform(&st) * (i % 7 == 0 ? 1.0f : 0.3f));
                if (i % 11 == 0) v[i] = 0.0f;
            }
            dsa_fp8_quantize(codes, sc, deq, v, n, g);
            for (int64_t g0 = 0; g0 < n; g0 += g) {
                float amax = 0;
                for (int64_t i = g0; i < g0 + g; i++) amax = fmaxf(amax, fabsf(v[i]));
                const float sigma = ref_group_scale(amax);
                if (sc[g0 / g] != sigma)
                    fail_msg("magnitude %g, g %lld, group %lld: scale %a, want %a (amax %a)", mags[m], (long long)g,
                             (long long)(g0 / g), sc[g0 / g], sigma, amax);
                for (int64_t i = g0; i < g0 + g; i++) {
                    const float q = ref_e4m3_round(v[i] / sigma);
                    if (bits_of(deq[i]) != bits_of(q * sigma) || bits_of(dsa_e4m3_decode(codes[i])) != bits_of(q))
                        fail_msg("magnitude %g, g %lld, entry %lld (%.9g): code 0x%02x deq %.9g, want %.9g deq %.9g",
                                 mags[m], (long long)g, (long long)i, v[i], codes[i], deq[i], q, q * sigma);
                }
            }
        }
}

/* ------------------------------------------------------------------------------------ */
/* Hadamard                                                                              */

static int popcount64(uint64_t x) {
    int c = 0;
    for (; x; x &= x - 1) c++;
    return c;
}

static void test_hadamard_matrix(void **state) {
    (void)state;
    static const int64_t sizes[] = {1, 2, 32, 128};
    uint64_t st = 1234;
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        const int64_t n = sizes[si];
        for (int trial = 0; trial < 4; trial++) {
            float v[128], u[128], w[128];
            double want[128], orig[128];
            for (int64_t i = 0; i < n; i++) {
                v[i] = lcg_uniform(&st) * (trial == 3 && i == 5 % n ? 100.0f : 1.0f); /* one outlier */
                orig[i] = v[i];
            }
            for (int64_t i = 0; i < n; i++) {
                double acc = 0;
                for (int64_t j = 0; j < n; j++) acc += (popcount64((uint64_t)(i & j)) & 1 ? -1.0 : 1.0) * orig[j];
                want[i] = acc / sqrt((double)n);
            }
            memcpy(u, v, sizeof(float) * (size_t)n);
            dsa_hadamard(u, n);
            char what[96];
            snprintf(what, sizeof what, "hadamard n %lld trial %d vs explicit matrix", (long long)n, trial);
            test_expect_close(what, u, want, n, 1e-6);
            /* Ĥ Ĥ v = v */
            memcpy(w, u, sizeof(float) * (size_t)n);
            dsa_hadamard(w, n);
            snprintf(what, sizeof what, "hadamard n %lld trial %d twice", (long long)n, trial);
            test_expect_close(what, w, orig, n, 1e-6);
        }
        if (n == 2) {
            float p[2] = {3.0f, 1.0f};
            dsa_hadamard(p, 2);
            assert_true(fabsf(p[0] - 4.0f / sqrtf(2.0f)) <= 1e-6f && fabsf(p[1] - 2.0f / sqrtf(2.0f)) <= 1e-6f);
        }
        if (n == 1) {
            float p[1] = {-2.5f};
            dsa_hadamard(p, 1);
            assert_true(p[0] == -2.5f);
        }
    }
    /* dot products preserved: Ĥq · Ĥk = q · k (orthogonality) */
    for (int trial = 0; trial < 16; trial++) {
        float q[128], k[128];
        double dot = 0, nq = 0, nk = 0, dot2 = 0;
        for (int i = 0; i < 128; i++) q[i] = lcg_uniform(&st), k[i] = lcg_uniform(&st);
        for (int i = 0; i < 128; i++) dot += (double)q[i] * k[i], nq += (double)q[i] * q[i], nk += (double)k[i] * k[i];
        dsa_hadamard(q, 128);
        dsa_hadamard(k, 128);
        for (int i = 0; i < 128; i++) dot2 += (double)q[i] * k[i];
        if (!(fabs(dot2 - dot) <= 1e-6 * sqrt(nq * nk)))
            fail_msg("dot product: %.9g before, %.9g after Hadamard (|q||k| = %.6g)", dot, dot2, sqrt(nq * nk));
    }
}

/* ------------------------------------------------------------------------------------ */
/* NeoX RoPE                                                                             */

/* fp64 rotation of x [n, heads, dim] by ±φ from the tables: NeoX pairs (i, i + d_r/2)
 * or, for the layout-swap check, interleaved pairs (2i, 2i + 1). Dims ≥ d_r copied. */
static void ref_rope(double *y, const float *x, const float *cos_t, const float *sin_t, int64_t n, int64_t seq_len,
                     int64_t heads, int64_t dim, int64_t rope_dim, bool inverse, bool interleaved) {
    const int64_t half = rope_dim / 2;
    for (int64_t r = 0; r < n; r++) {
        const int64_t t = r % seq_len;
        for (int64_t h = 0; h < heads; h++) {
            const float *v = x + (r * heads + h) * dim;
            double *o = y + (r * heads + h) * dim;
            for (int64_t i = 0; i < dim; i++) o[i] = v[i];
            for (int64_t i = 0; i < half; i++) {
                const int64_t ia = interleaved ? 2 * i : i, ib = interleaved ? 2 * i + 1 : i + half;
                /* (a + i b) · (cos φ + i sin φ), φ negated for the inverse */
                const double a = v[ia], b = v[ib], c = cos_t[t * half + i];
                const double s = inverse ? -(double)sin_t[t * half + i] : (double)sin_t[t * half + i];
                o[ia] = a * c - b * s;
                o[ib] = a * s + b * c;
            }
        }
    }
}

static void check_rope(int64_t dim, int64_t rope_dim, const char *scaling, double factor) {
    const int64_t heads = 3, batch = 2, L = 37, n = batch * L, half = rope_dim / 2, total = n * heads * dim;
    float freq[64];
    float *cos_t = malloc(sizeof(float) * (size_t)(L * half)), *sin_t = malloc(sizeof(float) * (size_t)(L * half));
    dsa_rope_frequencies(freq, rope_dim, 10000.0, scaling, factor, 4096, 32.0, 1.0);
    dsa_rope_tables(cos_t, sin_t, freq, L, rope_dim);
    float *x = malloc(sizeof(float) * (size_t)total), *y = malloc(sizeof(float) * (size_t)total);
    float *z = malloc(sizeof(float) * (size_t)total);
    double *want = malloc(sizeof(double) * (size_t)total), *orig = malloc(sizeof(double) * (size_t)total);
    uint64_t st = 42 + (uint64_t)dim;
    for (int64_t i = 0; i < total; i++) x[i] = lcg_uniform(&st), orig[i] = x[i];
    char what[128];

    /* forward vs the complex multiplication on pairs (i, i + d_r/2) */
    memcpy(y, x, sizeof(float) * (size_t)total);
    dsa_rope_neox(y, cos_t, sin_t, n, L, heads, dim, rope_dim, false);
    ref_rope(want, x, cos_t, sin_t, n, L, heads, dim, rope_dim, false, false);
    snprintf(what, sizeof what, "rope_neox dim %lld rope %lld forward", (long long)dim, (long long)rope_dim);
    test_expect_close(what, y, want, total, 1e-6);
    for (int64_t r = 0; r < n * heads; r++)
        for (int64_t i = rope_dim; i < dim; i++)
            if (bits_of(y[r * dim + i]) != bits_of(x[r * dim + i]))
                fail_msg("%s: vector %lld dim %lld (>= rope_dim) changed: %.9g -> %.9g", what, (long long)r,
                         (long long)i, x[r * dim + i], y[r * dim + i]);
    /* position 0 of each sequence is the identity */
    for (int64_t b = 0; b < batch; b++)
        for (int64_t i = 0; i < heads * dim; i++) assert_true(y[b * L * heads * dim + i] == x[b * L * heads * dim + i]);

    /* the layout swap must fail: the interleaved rotation is far from the NeoX reference
     * (and the NeoX output far from the interleaved reference) */
    {
        double *gptj = malloc(sizeof(double) * (size_t)total);
        float *gptj32 = malloc(sizeof(float) * (size_t)total);
        ref_rope(gptj, x, cos_t, sin_t, n, L, heads, dim, rope_dim, false, true);
        for (int64_t i = 0; i < total; i++) gptj32[i] = (float)gptj[i];
        const double e1 = test_rel_error(gptj32, want, total), e2 = test_rel_error(y, gptj, total);
        if (!(e1 > 1e-2 && e2 > 1e-2))
            fail_msg("%s: interleaved layout within %.3g / %.3g of NeoX: the test would not catch a swap", what, e1,
                     e2);
        free(gptj), free(gptj32);
    }

    /* inverse undoes forward; inverse alone is the rotation by −φ */
    memcpy(z, y, sizeof(float) * (size_t)total);
    dsa_rope_neox(z, cos_t, sin_t, n, L, heads, dim, rope_dim, true);
    snprintf(what, sizeof what, "rope_neox dim %lld rope %lld inverse(forward(x))", (long long)dim,
             (long long)rope_dim);
    test_expect_close(what, z, orig, total, 1e-6);
    memcpy(z, x, sizeof(float) * (size_t)total);
    dsa_rope_neox(z, cos_t, sin_t, n, L, heads, dim, rope_dim, true);
    ref_rope(want, x, cos_t, sin_t, n, L, heads, dim, rope_dim, true, false);
    snprintf(what, sizeof what, "rope_neox dim %lld rope %lld inverse", (long long)dim, (long long)rope_dim);
    test_expect_close(what, z, want, total, 1e-6);

    free(cos_t), free(sin_t), free(x), free(y), free(z), free(want), free(orig);
}

static void test_rope_neox(void **state) {
    (void)state;
    check_rope(32, 16, "", 1.0);
    check_rope(128, 64, "yarn", 40.0);
    check_rope(128, 64, "", 1.0);
}

/* ------------------------------------------------------------------------------------ */
/* Scores and top-k                                                                      */

typedef struct {
    DsaIndexerShape s;
    DsaIndexerActs a;
    float *buf;
} TopkCase;

/* Shape of the top-k tests: batch 2, H_I 4, d_I 32, d_r 16, c = (4 · 32)^-1/2.
 * `pool` > 0: every key row is one of `pool` rows (row 0 of the pool all zero), so
 * scores tie exactly; 0: all keys distinct. Every fifth token has only negative head
 * weights (scores ≤ 0), the others mixed signs. With fp8, q and k hold FP8 round trips
 * (groups of dsa_fp8_group_size(d_I)), as the forward leaves them. */
static TopkCase topk_case(int64_t L, int64_t k, bool fp8, int pool, uint64_t seed) {
    TopkCase c;
    memset(&c, 0, sizeof c);
    c.s = (DsaIndexerShape){.batch = 2, .seq_len = L, .heads = 4, .head_dim = 32, .rope_dim = 16, .q_in = 24,
                            .x_in = 40, .topk = k, .fp8 = fp8, .scale = 1.0f / sqrtf(4.0f * 32.0f), .eps = 1e-6f};
    const int64_t nf = dsa_indexer_acts_floats(&c.s);
    assert_true(nf > 0);
    c.buf = calloc((size_t)nf, sizeof(float));
    assert_non_null(c.buf);
    dsa_indexer_acts_carve(&c.a, c.buf, &c.s);
    const int64_t N = c.s.batch * L, H = c.s.heads, d = c.s.head_dim, g = dsa_fp8_group_size(d);
    uint64_t st = seed;
    float pk[8][32], scales[4];
    assert_true(pool <= 8 && d == 32);
    for (int p = 0; p < pool; p++)
        for (int64_t i = 0; i < d; i++) pk[p][i] = p == 0 ? 0.0f : lcg_uniform(&st);
    for (int64_t t = 0; t < N; t++) {
        float *q = c.a.q + t * H * d, *kr = c.a.k + t * d, *w = c.a.w + t * H;
        for (int64_t i = 0; i < H * d; i++) q[i] = lcg_uniform(&st);
        if (pool > 0)
            memcpy(kr, pk[lcg_next(&st) % (uint32_t)pool], sizeof(float) * (size_t)d);
        else
            for (int64_t i = 0; i < d; i++) kr[i] = lcg_uniform(&st);
        for (int64_t j = 0; j < H; j++) {
            const float u = lcg_uniform(&st);
            w[j] = t % 5 == 2 ? -(0.05f + 0.95f * fabsf(u)) : u;
        }
        if (fp8) {
            dsa_fp8_quantize(NULL, scales, q, q, H * d, g);
            dsa_fp8_quantize(NULL, scales, kr, kr, d, g);
        }
    }
    return c;
}

static void topk_case_free(TopkCase *c) { free(c->buf); }

/* Rank order of §5.4: s before s' iff I_s > I_s', or equal and s < s' (−0 == +0). */
static bool ranks_before(const float *sc, int32_t x, int32_t y) { return sc[x] > sc[y] || (sc[x] == sc[y] && x < y); }

/* Score tile of sequence b for all L × L (query, key) pairs, checked against fp64
 * c Σ_j w ReLU(q·k) (1e-5 of the row's max |I|), −∞ above the diagonal, the head dot
 * products (relu_in) against fp64 as well, and an irregular sub-tile against the full
 * one. Returns the tile (caller frees); *ties counts exactly equal pairs of valid
 * scores. */
static float *checked_score_tile(const TopkCase *c, int64_t b, int64_t *ties) {
    const DsaIndexerShape *s = &c->s;
    const int64_t L = s->seq_len, H = s->heads, d = s->head_dim;
    float *tile = malloc(sizeof(float) * (size_t)(L * L));
    float *relu = malloc(sizeof(float) * (size_t)(L * H * L));
    double *want = malloc(sizeof(double) * (size_t)L), *wdot = malloc(sizeof(double) * (size_t)L);
    float *gdot = malloc(sizeof(float) * (size_t)L);
    for (int64_t i = 0; i < L * H * L; i++) relu[i] = NAN;
    dsa_indexer_score_tile(tile, relu, L, &c->a, s, b, 0, L, 0, L);
    char what[160];
    for (int64_t t = 0; t < L; t++) {
        const int64_t n = b * L + t;
        for (int64_t si = 0; si <= t; si++) want[si] = 0;
        for (int64_t j = 0; j < H; j++) {
            double wrow_max = 0;
            for (int64_t si = 0; si <= t; si++) {
                double dot = 0;
                for (int64_t i = 0; i < d; i++)
                    dot += (double)c->a.q[(n * H + j) * d + i] * (double)c->a.k[(b * L + si) * d + i];
                wdot[si] = dot, gdot[si] = relu[(t * H + j) * L + si];
                wrow_max = fmax(wrow_max, fabs(dot));
                want[si] += (double)c->a.w[n * H + j] * (dot > 0 ? dot : 0);
            }
            snprintf(what, sizeof what, "relu_in, seq %lld row %lld head %lld (L %lld, fp8 %d)", (long long)b,
                     (long long)t, (long long)j, (long long)L, s->fp8);
            test_expect_close(what, gdot, wdot, t + 1, 1e-5);
        }
        for (int64_t si = 0; si <= t; si++) want[si] *= (double)s->scale;
        snprintf(what, sizeof what, "score_tile vs fp64, seq %lld row %lld (L %lld, fp8 %d)", (long long)b,
                 (long long)t, (long long)L, s->fp8);
        test_expect_close(what, tile + t * L, want, t + 1, 1e-5);
        for (int64_t si = t + 1; si < L; si++)
            if (!(isinf(tile[t * L + si]) && tile[t * L + si] < 0))
                fail_msg("score_tile seq %lld row %lld key %lld > row: %.9g, want -inf", (long long)b, (long long)t,
                         (long long)si, tile[t * L + si]);
        for (int64_t x = 0; x <= t; x++)
            for (int64_t y = x + 1; y <= t; y++) *ties += tile[t * L + x] == tile[t * L + y];
    }
    /* an irregular sub-tile (query rows t0 … t0+nq, keys s0 … s0+nk, stride > nk) */
    if (L >= 17) {
        const int64_t t0 = L / 3, nq = L - L / 3 - 1, s0 = 3, nk = L - 5, ld = nk + 3;
        float *sub = malloc(sizeof(float) * (size_t)(nq * ld));
        double *ref = malloc(sizeof(double) * (size_t)nk);
        float *got = malloc(sizeof(float) * (size_t)nk);
        dsa_indexer_score_tile(sub, NULL, ld, &c->a, s, b, t0, nq, s0, nk);
        for (int64_t r = 0; r < nq; r++) {
            const int64_t t = t0 + r;
            int64_t nv = 0;
            for (int64_t j = 0; j < nk; j++) {
                const float v = sub[r * ld + j], full = tile[t * L + s0 + j];
                if (s0 + j > t) {
                    if (!(isinf(v) && v < 0))
                        fail_msg("sub-tile seq %lld row %lld key %lld: %.9g, want -inf", (long long)b, (long long)t,
                                 (long long)(s0 + j), v);
                } else {
                    got[nv] = v, ref[nv++] = full;
                }
            }
            snprintf(what, sizeof what, "sub-tile vs full tile, seq %lld row %lld (L %lld)", (long long)b,
                     (long long)t, (long long)L);
            if (nv > 0) test_expect_close(what, got, ref, nv, 1e-5);
        }
        free(sub), free(ref), free(got);
    }
    free(relu), free(want), free(wdot), free(gdot);
    return tile;
}

/* dsa_indexer_topk against the full sort of the score tile's fp32 scores. */
static void check_topk(int64_t L, int64_t k, bool fp8, int pool, uint64_t seed) {
    TopkCase c = topk_case(L, k, fp8, pool, seed);
    const DsaIndexerShape *s = &c.s;
    const int64_t N = s->batch * L;
    int32_t *idx = malloc(sizeof(int32_t) * (size_t)(N * k)), *order = malloc(sizeof(int32_t) * (size_t)L);
    float *sc = malloc(sizeof(float) * (size_t)(N * k));
    for (int64_t i = 0; i < N * k; i++) idx[i] = -7, sc[i] = NAN;
    assert_ok(dsa_indexer_topk(idx, sc, &c.a, s));
    int64_t ties = 0;
    for (int64_t b = 0; b < s->batch; b++) {
        float *tile = checked_score_tile(&c, b, &ties);
        for (int64_t t = 0; t < L; t++) {
            const float *row = tile + t * L;
            /* insertion sort of 0 … t by (score desc, index asc) */
            for (int64_t i = 0; i <= t; i++) {
                int32_t x = (int32_t)i;
                int64_t j = i;
                for (; j > 0 && ranks_before(row, x, order[j - 1]); j--) order[j] = order[j - 1];
                order[j] = x;
            }
            const int64_t n = b * L + t, m = t + 1 < k ? t + 1 : k;
            const int32_t *gi = idx + n * k;
            const float *gs = sc + n * k;
            for (int64_t r = 0; r < k; r++) {
                if (r < m) {
                    if (gi[r] != order[r])
                        fail_msg("topk L %lld k %lld fp8 %d pool %d: seq %lld row %lld rank %lld: key %d (score "
                                 "%.9g), want key %d (score %.9g)",
                                 (long long)L, (long long)k, fp8, pool, (long long)b, (long long)t, (long long)r,
                                 gi[r], gi[r] >= 0 && gi[r] <= t ? row[gi[r]] : NAN, order[r], row[order[r]]);
                    if (gs[r] != row[order[r]])
                        fail_msg("topk L %lld k %lld fp8 %d pool %d: seq %lld row %lld rank %lld key %d: score "
                                 "%.9g, score_tile %.9g",
                                 (long long)L, (long long)k, fp8, pool, (long long)b, (long long)t, (long long)r,
                                 gi[r], gs[r], row[order[r]]);
                } else {
                    if (gi[r] != -1 || !(isinf(gs[r]) && gs[r] < 0))
                        fail_msg("topk L %lld k %lld: seq %lld row %lld padding slot %lld: key %d score %.9g, want "
                                 "-1 / -inf",
                                 (long long)L, (long long)k, (long long)b, (long long)t, (long long)r, gi[r], gs[r]);
                }
            }
        }
        free(tile);
    }
    /* the tie cases must really contain exact ties */
    if (pool > 0 && L >= 7 && ties == 0)
        fail_msg("topk L %lld pool %d: no exact ties were produced", (long long)L, pool);
    free(idx), free(order), free(sc);
    topk_case_free(&c);
}

static void test_topk_matches_sort(void **state) {
    (void)state;
    static const int64_t lens[] = {1, 7, 16, 17, 33, 100};
    uint64_t seed = 1000;
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++)
        for (int fp8 = 0; fp8 < 2; fp8++)
            for (int pool = 0; pool <= 3; pool += 3) check_topk(lens[li], 16, fp8, pool, seed++);
}

static void test_topk_edge_k(void **state) {
    (void)state;
    uint64_t seed = 5000;
    for (int fp8 = 0; fp8 < 2; fp8++) {
        check_topk(33, 1, fp8, 0, seed++);  /* k = 1 */
        check_topk(100, 1, fp8, 3, seed++); /* k = 1 with ties: the lowest index among the best */
        check_topk(1, 1, fp8, 0, seed++);
        check_topk(33, 33, fp8, 0, seed++);  /* k = L: the last row selects every key */
        check_topk(33, 40, fp8, 3, seed++);  /* k > L */
        check_topk(100, 128, fp8, 0, seed++); /* k > L, every row padded */
        check_topk(17, 16, fp8, 1, seed++);  /* every key identical: keys 0 … k−1 in order */
        check_topk(90, 16, fp8, 1, seed++);  /* the same through many buffer shrinks (2k full) */
        check_topk(257, 5, fp8, 3, 7000 + fp8); /* ties at the shrink boundary, odd k */
    }
}

/* Identical bits with 1 and 3 OpenMP threads (scores and selection). */
static void test_topk_threads(void **state) {
    (void)state;
    const int saved = omp_get_max_threads();
    static const int64_t lens[] = {100, 257};
    for (size_t li = 0; li < 2; li++)
        for (int pool = 0; pool <= 3; pool += 3) {
            TopkCase c = topk_case(lens[li], 16, true, pool, 77 + li);
            const int64_t N = c.s.batch * c.s.seq_len, k = c.s.topk, L = c.s.seq_len;
            int32_t *idx[2];
            float *sc[2], *tile[2];
            for (int r = 0; r < 2; r++) {
                const int threads = r == 0 ? 1 : 3;
                dsa_backend_cpu_set_threads(threads);
                omp_set_num_threads(threads);
                idx[r] = malloc(sizeof(int32_t) * (size_t)(N * k));
                sc[r] = malloc(sizeof(float) * (size_t)(N * k));
                tile[r] = malloc(sizeof(float) * (size_t)(L * L));
                assert_ok(dsa_indexer_topk(idx[r], sc[r], &c.a, &c.s));
                dsa_indexer_score_tile(tile[r], NULL, L, &c.a, &c.s, 1, 0, L, 0, L);
            }
            dsa_backend_cpu_set_threads(saved);
            omp_set_num_threads(saved);
            for (int64_t i = 0; i < N * k; i++)
                if (idx[0][i] != idx[1][i] || bits_of(sc[0][i]) != bits_of(sc[1][i]))
                    fail_msg("topk L %lld pool %d: row %lld slot %lld: 1 thread key %d score %a, 3 threads key %d "
                             "score %a",
                             (long long)L, pool, (long long)(i / k), (long long)(i % k), idx[0][i], sc[0][i],
                             idx[1][i], sc[1][i]);
            assert_memory_equal(tile[0], tile[1], sizeof(float) * (size_t)(L * L));
            for (int r = 0; r < 2; r++) free(idx[r]), free(sc[r]), free(tile[r]);
            topk_case_free(&c);
        }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fp8_spec_table),
        cmocka_unit_test(test_fp8_multi_group),
        cmocka_unit_test(test_e4m3_all_codes),
        cmocka_unit_test(test_e4m3_rounding),
        cmocka_unit_test(test_fp8_scales),
        cmocka_unit_test(test_hadamard_matrix),
        cmocka_unit_test(test_rope_neox),
        cmocka_unit_test(test_topk_matches_sort),
        cmocka_unit_test(test_topk_edge_k),
        cmocka_unit_test(test_topk_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
