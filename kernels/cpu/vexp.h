/* vexp.h: a vectorizable expf for the CPU kernels' elementwise loops (cross-entropy's
 * softmax, SwiGLU's sigmoid).
 *
 * libm's expf is a scalar call that stops GCC from vectorizing a loop (glibc's vector
 * variants are only declared under -ffast-math). This one is inline arithmetic: the
 * Cephes single-precision scheme, x = n·ln2 + r with |r| ≤ ln2/2 (ln2 split in two so
 * n·C1 is exact), e^r by Cephes' degree-7 polynomial, 2^n built in the exponent bits.
 * Measured against exp() in double over [−87.3, 0]: under 1 ulp (tests/test_ops.c
 * checks 2 ulp over [−87.3, 3.5]).
 *
 * Domain: meant for x ≤ 0 (scores minus their maximum, −|g|), valid up to x = 88.
 * x < −87.3 (every e^x below FLT_MIN, and −inf) gives 0; NaN and +inf give NaN. Only IEEE
 * +, −, × and a bit cast: the same bits on every x86-64 level (the build's ISO C
 * mode keeps GCC from contracting into FMA).
 */
#ifndef DSA_KERNELS_CPU_VEXP_H
#define DSA_KERNELS_CPU_VEXP_H

#include <stdint.h>

static inline float dsa_vexpf(float x) {
    /* NOTE: the comparisons send NaN to the lower clamp (no undefined float-to-int
     * conversion); the NaN comes back through (x − x) below. */
    const float xc = x > -87.3f ? (x < 88.0f ? x : 88.0f) : -87.3f;
    /* n = round(x / ln2) by the 1.5·2^23 trick (floorf does not vectorize without
     * -fno-trapping-math); exact for |x / ln2| < 2^22, and the build never reassociates. */
    const float n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = xc - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    const float z = r * r;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * z + r + 1.0f;
    union {
        float f;
        int32_t i;
    } two_n = {.i = ((int32_t)n + 127) << 23};
    const float y = p * two_n.f + (x - x);
    return x < -87.3f ? 0.0f : y;
}

#endif
