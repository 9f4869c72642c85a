/* vexp2.h: 2^x on a whole vector register, shared by the attention kernels
 * (attention.c, sparse_attention.c): the vector form of dsa_softmax_exp2 of
 * kernels/rules/softmax.h (DSA-SPEC §8), which defines the rule for the CPU and the device;
 * each lane gives that function's bits (tests/test_rules.c checks it on many inputs, for
 * the kernels' vector types).
 *
 * Generic over the includer's vector type: include it after defining Vec (the float
 * vector), Veci / Vecu (int32 / uint32 GCC vectors of the same size), vsplat and vfma;
 * each kernel keeps its own vector layer (intrinsics or GCC vectors) and this one body
 * serves both.
 */
#ifndef DSA_KERNELS_CPU_VEXP2_H
#define DSA_KERNELS_CPU_VEXP2_H

/* 2^x for the softmax (keep in step with dsa_softmax_exp2), x ≤ 126 (here x ≤ 0 up to rounding: scores minus their row max
 * or their lse): x = n + r with n = round(x) by the 1.5·2^23 trick (whose low mantissa
 * bits are n), 2^n built in the exponent bits, 2^r for |r| ≤ 1/2 by Cephes' exp2f
 * polynomial (≈ 2 ulp). x < −126 (the masked −inf scores and every result below
 * FLT_MIN) gives 0; NaN gives NaN.
 * NOTE: written on vectors with bit masks: as a scalar function in an omp simd loop,
 * GCC turns the underflow select into a branch around trapping FP ops (-std=c11) and
 * leaves the loop scalar without AVX-512. */
static inline Vec vexp2(Vec x) {
    const Veci under = x < vsplat(-126.0f); /* all ones where x < −126 */
    const Vec xc = (Vec)((under & (Veci)vsplat(-126.0f)) | (~under & (Veci)x));
    const Vec t = xc + vsplat(12582912.0f), n = t - vsplat(12582912.0f), r = xc - n;
    Vec p = vsplat(1.535336188319500e-4f);
    p = vfma(p, r, vsplat(1.339887440266574e-3f));
    p = vfma(p, r, vsplat(9.618437357674640e-3f));
    p = vfma(p, r, vsplat(5.550332471162809e-2f));
    p = vfma(p, r, vsplat(2.402264791363012e-1f));
    p = vfma(p, r, vsplat(6.931472028550421e-1f));
    p = vfma(p, r, vsplat(1.0f)); /* 1 + r·P(r) */
    const Vecu bits = (((Vecu)t - 0x4B400000u + 127u) << 23) & ~(Vecu)under; /* (n + 127) << 23, or 0 */
    return p * (Vec)bits;
}

#endif
