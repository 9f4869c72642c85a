/* hd.h: what every header of kernels/rules/ needs to compile, with the same meaning, as
 * C11 (cc) and as CUDA C++17 (nvcc, host and device passes).
 *
 * kernels/rules/ holds the scalar rules that the CPU backend and the CUDA backend must
 * compute identically (DESIGN.md "Backends"): each rule is a `static inline DSA_HD`
 * function, written once, used by the CPU code and compiled into device code, so a CPU
 * test of a rule is a test of the device's rule (tests/test_rules.c;
 * kernels/cuda/rules_check.cu proves every header is nvcc-clean).
 *
 * Arithmetic that fixes bits goes through the helpers below rather than bare operators:
 *  - dsa_rn_add / sub / mul / div / sqrt (and dsa_rn_dadd / dsub / dmul in double): one
 *    IEEE operation, rounded to nearest even, never fused with a neighbour. The C build is
 *    ISO C (-std=c11: GCC does not contract a*b + c); nvcc contracts device code into FMA by
 *    default (--fmad=true), so the device forms are the __f*_rn / __d*_rn intrinsics, which
 *    it never contracts. (Host code in .cu files is built with
 *    -ffp-contract=off, see the Makefile.)
 *  - dsa_fma_rule: the multiply-add of the vector kernels' vfma. NOTE: fused wherever the
 *    CPU kernels fuse (x86-64 with FMA: the x86-64-v3 and v4 builds) and on the device; a
 *    CPU build without FMA (ARCH= on an older target) rounds the product first, as its
 *    vector code does, so it agrees with itself lane for lane but not with the device.
 *  - dsa_bits_of / dsa_float_of: bit casts (a union in C, the cast intrinsics on the
 *    device; GCC documents union punning in C++ too).
 * Transcendental library calls (expf, logf, log2) are not bit-identical between glibc and
 * CUDA's libdevice (both within about 1 ulp); the rules name where they use one.
 */
#ifndef DSA_KERNELS_RULES_HD_H
#define DSA_KERNELS_RULES_HD_H

#include <math.h>
#include <stdint.h>

#if defined(__CUDACC__)
#define DSA_HD __host__ __device__
#else
#define DSA_HD
#endif

static inline DSA_HD uint32_t dsa_bits_of(float x) {
#if defined(__CUDA_ARCH__)
    return __float_as_uint(x);
#else
    union {
        float f;
        uint32_t u;
    } c;
    c.f = x;
    return c.u;
#endif
}

static inline DSA_HD float dsa_float_of(uint32_t u) {
#if defined(__CUDA_ARCH__)
    return __uint_as_float(u);
#else
    union {
        float f;
        uint32_t u;
    } c;
    c.u = u;
    return c.f;
#endif
}

static inline DSA_HD float dsa_rn_add(float a, float b) {
#if defined(__CUDA_ARCH__)
    return __fadd_rn(a, b);
#else
    return a + b;
#endif
}

static inline DSA_HD float dsa_rn_sub(float a, float b) {
#if defined(__CUDA_ARCH__)
    return __fsub_rn(a, b);
#else
    return a - b;
#endif
}

static inline DSA_HD float dsa_rn_mul(float a, float b) {
#if defined(__CUDA_ARCH__)
    return __fmul_rn(a, b);
#else
    return a * b;
#endif
}

static inline DSA_HD float dsa_rn_div(float a, float b) {
#if defined(__CUDA_ARCH__)
    return __fdiv_rn(a, b);
#else
    return a / b;
#endif
}

static inline DSA_HD float dsa_rn_sqrt(float a) {
#if defined(__CUDA_ARCH__)
    return __fsqrt_rn(a);
#else
    return sqrtf(a);
#endif
}

/* The same in double (the per-call constants of AdamW, the lse in softmax.h). */
static inline DSA_HD double dsa_rn_dadd(double a, double b) {
#if defined(__CUDA_ARCH__)
    return __dadd_rn(a, b);
#else
    return a + b;
#endif
}

static inline DSA_HD double dsa_rn_dsub(double a, double b) {
#if defined(__CUDA_ARCH__)
    return __dsub_rn(a, b);
#else
    return a - b;
#endif
}

static inline DSA_HD double dsa_rn_dmul(double a, double b) {
#if defined(__CUDA_ARCH__)
    return __dmul_rn(a, b);
#else
    return a * b;
#endif
}

/* a·b + c as the vector kernels' vfma computes it (see the NOTE above). */
static inline DSA_HD float dsa_fma_rule(float a, float b, float c) {
#if defined(__CUDA_ARCH__)
    return __fmaf_rn(a, b, c);
#elif defined(__FMA__) || defined(__AVX512F__)
    return fmaf(a, b, c);
#else
    return a * b + c;
#endif
}

#endif
