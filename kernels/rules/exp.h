/* exp.h: the vectorizable expf of the CPU kernels' elementwise loops (cross-entropy's
 * softmax, SwiGLU's sigmoid, the dense indexer KL's p and π, DSA-SPEC §6.1) as a shared
 * scalar rule (kernels/rules/hd.h), so the CUDA backend computes the same bits.
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
 * +, −, × (never fused: hd.h's dsa_rn_*) and a bit cast: the same bits on every x86-64
 * level and on the device.
 */
#ifndef DSA_KERNELS_RULES_EXP_H
#define DSA_KERNELS_RULES_EXP_H

#include "kernels/rules/hd.h"

static inline DSA_HD float dsa_vexpf(float x) {
    /* NOTE: the comparisons send NaN to the lower clamp (no undefined float-to-int
     * conversion); the NaN comes back through (x − x) below. */
    const float xc = x > -87.3f ? (x < 88.0f ? x : 88.0f) : -87.3f;
    /* n = round(x / ln2) by the 1.5·2^23 trick (floorf does not vectorize without
     * -fno-trapping-math); exact for |x / ln2| < 2^22, and the build never reassociates. */
    const float n = dsa_rn_sub(dsa_rn_add(dsa_rn_mul(xc, 1.44269504088896341f), 12582912.0f), 12582912.0f);
    float r = dsa_rn_sub(xc, dsa_rn_mul(n, 0.693359375f));
    r = dsa_rn_sub(r, dsa_rn_mul(n, -2.12194440e-4f));
    const float z = dsa_rn_mul(r, r);
    float p = 1.9875691500e-4f;
    p = dsa_rn_add(dsa_rn_mul(p, r), 1.3981999507e-3f);
    p = dsa_rn_add(dsa_rn_mul(p, r), 8.3334519073e-3f);
    p = dsa_rn_add(dsa_rn_mul(p, r), 4.1665795894e-2f);
    p = dsa_rn_add(dsa_rn_mul(p, r), 1.6666665459e-1f);
    p = dsa_rn_add(dsa_rn_mul(p, r), 5.0000001201e-1f);
    p = dsa_rn_add(dsa_rn_add(dsa_rn_mul(p, z), r), 1.0f);
    const float two_n = dsa_float_of((uint32_t)(((int32_t)n + 127) << 23));
    const float y = dsa_rn_add(dsa_rn_mul(p, two_n), dsa_rn_sub(x, x));
    return x < -87.3f ? 0.0f : y;
}

#endif
