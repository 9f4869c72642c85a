/* fp8.c: e4m3 conversion and power-of-two group quantization (fp8.h, DSA-SPEC §5.2). */
#include "indexer/fp8.h"

#include <math.h>
#include <string.h>

#include "core/error.h"

float dsa_e4m3_round(float x) {
    if (isnan(x)) return x;
    float a = fabsf(x);
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
    float r = nearbyintf(a / quantum) * quantum;
    return copysignf(r > 448.0f ? 448.0f : r, x);
}

uint8_t dsa_e4m3_encode(float x) {
    if (isnan(x)) return 0x7f;
    float r = dsa_e4m3_round(x);
    uint8_t sign = signbit(r) ? 0x80 : 0x00;
    float a = fabsf(r);
    if (a < 0x1p-6f) return sign | (uint8_t)(a * 512.0f); /* subnormal: m · 2^-9 */
    int e;
    float f = frexpf(a, &e); /* a = (2f) · 2^(e-1), 2f in [1, 2) */
    int exp_field = e - 1 + 7;
    int mant = (int)((2.0f * f - 1.0f) * 8.0f);
    return sign | (uint8_t)(exp_field << 3) | (uint8_t)mant;
}

float dsa_e4m3_decode(uint8_t code) {
    int sign = code & 0x80, exp_field = (code >> 3) & 0xf, mant = code & 0x7;
    float v;
    if (exp_field == 0xf && mant == 0x7) return NAN;
    if (exp_field == 0)
        v = ldexpf((float)mant, -9);
    else
        v = ldexpf(1.0f + (float)mant / 8.0f, exp_field - 7);
    return sign ? -v : v;
}

float dsa_fp8_group_scale(float amax) {
    if (!(amax > 1e-4f)) amax = 1e-4f;
    float r = amax * (1.0f / 448.0f);
    uint32_t bits;
    memcpy(&bits, &r, sizeof bits);
    int e = (int)((bits >> 23) & 0xff) - 127 + ((bits & 0x7fffff) != 0);
    return ldexpf(1.0f, e);
}

int64_t dsa_fp8_group_size(int64_t width) { return width < DSA_FP8_GROUP ? width : DSA_FP8_GROUP; }

void dsa_fp8_quantize(uint8_t *codes, float *scales, float *deq, const float *v, int64_t n, int64_t g) {
    DSA_ASSERT(g > 0 && n % g == 0);
    for (int64_t g0 = 0; g0 < n; g0 += g) {
        float amax = 0.0f;
        for (int64_t i = g0; i < g0 + g; i++) amax = fmaxf(amax, fabsf(v[i]));
        float s = dsa_fp8_group_scale(amax);
        scales[g0 / g] = s;
        for (int64_t i = g0; i < g0 + g; i++) {
            /* division by a power of two is exact, so this is e4m3_rne(v · 2^-e) */
            float q = dsa_e4m3_round(v[i] / s);
            if (codes) codes[i] = dsa_e4m3_encode(q);
            if (deq) deq[i] = q * s;
        }
    }
}
