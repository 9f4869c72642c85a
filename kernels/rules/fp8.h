/* fp8.h: FP8 e4m3 (OCP "e4m3fn") encode, decode and round, and the power-of-two scale rules:
 * the ue8m0 group scale of the indexer's activation quantization (DSA-SPEC §5.2) and the
 * block scale of an FP8 export (DSA-SPEC §3.2). One definition for the CPU and the CUDA
 * backend (kernels/rules/hd.h); used by indexer/fp8.c and checkpoints/fp8_block.c.
 *
 * e4m3fn: sign, 4 exponent bits (bias 7), 3 mantissa bits, max ±448, no infinities,
 * NaN = 0x7f / 0xff, smallest subnormal 2^-9. Conversion rounds to nearest, ties to even,
 * and saturates at ±448 (the CUDA "satfinite" conversion). Every step below is exact
 * (frexpf / ldexpf, products by powers of two, nearbyintf in the default rounding mode), so
 * the host and the device give the same codes.
 */
#ifndef DSA_KERNELS_RULES_FP8_H
#define DSA_KERNELS_RULES_FP8_H

#include "kernels/rules/hd.h"

enum {
    DSA_FP8_GROUP = 128,           /* quantization group of the reference (DSA-SPEC §5.2) */
    DSA_FP8_SCALE_EXP_MIN = -126,  /* export block scales stay normal f32 (DSA-SPEC §3.2) */
    DSA_FP8_SCALE_EXP_MAX = 127,
    DSA_FP8_ZERO_BLOCK_EXP = -22   /* S = 2^-22 for an all-zero export block */
};

/* The e4m3 value nearest x (ties to even), saturated at ±448: decode(encode(x)); NaN stays
 * NaN. */
static inline DSA_HD float dsa_e4m3_round(float x) {
    if (isnan(x)) return x;
    const float a = fabsf(x);
    if (a >= 448.0f) return copysignf(448.0f, x);
    /* quantum: 2^-9 in the subnormal range (a < 2^-6), else 2^(exponent - 3) */
    float quantum;
    if (a < 0x1p-6f) {
        quantum = 0x1p-9f;
    } else {
        int e;
        frexpf(a, &e); /* a = f · 2^e, f in [0.5, 1): leading bit 2^(e-1) */
        quantum = ldexpf(1.0f, e - 1 - 3);
    }
    /* a / quantum is exact (power of two); nearbyintf rounds ties to even */
    const float r = dsa_rn_mul(nearbyintf(dsa_rn_div(a, quantum)), quantum);
    return copysignf(r > 448.0f ? 448.0f : r, x);
}

/* e4m3 code of x: round to nearest even, saturate at ±448; NaN → 0x7f. */
static inline DSA_HD uint8_t dsa_e4m3_encode(float x) {
    if (isnan(x)) return 0x7f;
    const float r = dsa_e4m3_round(x);
    const uint8_t sign = signbit(r) ? 0x80 : 0x00;
    const float a = fabsf(r);
    if (a < 0x1p-6f) return (uint8_t)(sign | (uint8_t)dsa_rn_mul(a, 512.0f)); /* subnormal: m · 2^-9 */
    int e;
    const float f = frexpf(a, &e); /* a = (2f) · 2^(e-1), 2f in [1, 2) */
    const int exp_field = e - 1 + 7;
    const int mant = (int)dsa_rn_mul(dsa_rn_sub(dsa_rn_mul(2.0f, f), 1.0f), 8.0f);
    return (uint8_t)(sign | (uint8_t)(exp_field << 3) | (uint8_t)mant);
}

/* Value of an e4m3 code (a quiet NaN, 0x7fc00000, for 0x7f / 0xff). */
static inline DSA_HD float dsa_e4m3_decode(uint8_t code) {
    const int sign = code & 0x80, exp_field = (code >> 3) & 0xf, mant = code & 0x7;
    float v;
    if (exp_field == 0xf && mant == 0x7) return dsa_float_of(0x7fc00000u);
    if (exp_field == 0)
        v = ldexpf((float)mant, -9);
    else
        v = ldexpf(dsa_rn_add(1.0f, dsa_rn_div((float)mant, 8.0f)), exp_field - 7);
    return sign ? -v : v;
}

/* Power-of-two scale of one activation group (DSA-SPEC §5.2): amax = max(amax, 1e-4)
 * (NaN → 1e-4), σ = 2^ceil_log2(amax · fp32(1/448)), ceil_log2 taken from the fp32 bit
 * fields. */
static inline DSA_HD float dsa_fp8_group_scale(float amax) {
    if (!(amax > 1e-4f)) amax = 1e-4f;
    const uint32_t bits = dsa_bits_of(dsa_rn_mul(amax, 1.0f / 448.0f));
    const int e = (int)((bits >> 23) & 0xff) - 127 + ((bits & 0x7fffff) != 0);
    return ldexpf(1.0f, e);
}

/* Group size for a vector of `width` values: min(128, width) (widths below 128 are our
 * extension for small test configs, DSA-SPEC §5.2). */
static inline DSA_HD int64_t dsa_fp8_group_size(int64_t width) {
    return width < DSA_FP8_GROUP ? width : (int64_t)DSA_FP8_GROUP;
}

/* Export block exponent (DSA-SPEC §3.2) of a block whose largest magnitude is `amax`
 * (finite, > 0): the smallest e with amax ≤ 448 · 2^e, clamped below at -126; the scale is
 * S = 2^e (ldexpf(1, e)), and an all-zero block takes DSA_FP8_ZERO_BLOCK_EXP instead.
 * NOTE: computed exactly in double, where 448 · 2^e and the comparison are exact, rather
 * than from a rounded amax / 448: then |w / S| ≤ 448 always (no code saturates) and
 * |amax / S| > 224 (no precision wasted). The clamp keeps every scale a normal f32
 * (consumers that flush subnormals to zero read the same scale; only blocks with amax below
 * 448 · 2^-126 are affected). The result never exceeds 127 (amax ≤ FLT_MAX < 448 · 2^120). */
static inline DSA_HD int dsa_fp8_block_exponent(float amax) {
    const double a = amax;
    int e;
    frexp(a / 448.0, &e); /* a / 448 in [2^(e-1), 2^e) up to rounding: start there */
    while (e > DSA_FP8_SCALE_EXP_MIN && ldexp(448.0, e - 1) >= a) e--;
    while (ldexp(448.0, e) < a) e++;
    return e < DSA_FP8_SCALE_EXP_MIN ? DSA_FP8_SCALE_EXP_MIN : e;
}

#endif
