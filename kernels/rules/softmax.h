/* softmax.h: the online-softmax rules of the attention kernels (DSA-SPEC §4.1, §4.2 and §8:
 * tiled softmax that keeps only a running max and sum per row, then the lse), one
 * definition for the CPU (kernels/cpu/attention.c, sparse_attention.c) and the CUDA
 * backend (kernels/rules/hd.h).
 *
 * Units: scores are pre-scaled by τ·log2 e (dsa_softmax_log2_scale), so probabilities are
 * powers of two, P = 2^(s − m), and the saved lse is in natural-log units. Per query row,
 * starting from m = −inf, l = 0, for each tile (or chunk) of its valid scores s_j:
 *
 *   m'   = max(m, s_j ...)          each step dsa_softmax_max(s_j, running)
 *   corr = 2^(m − m')               dsa_softmax_corr: exactly 0 on the first tile (m = −inf)
 *   l    = l · corr                  (and the row's output accumulator o = o · corr)
 *   P_j  = 2^(s_j − m'),  l = l + P_j (in the kernel's order),  o = o + Σ P_j v_j
 * and at the end o = o · (1 / l) (dsa_softmax_inv) and lse = dsa_softmax_lse(m, l). A row
 * with no valid key has o = 0 and lse = −inf (DSA_SOFTMAX_EMPTY_LSE). Masked scores are −inf
 * (P = 0), but a row's first tile must hold a valid score: from m = −inf a tile of only −inf
 * would give corr = 2^(−inf + inf) = NaN (the kernels never form one: causal tiles hold the
 * diagonal, sparse chunks only valid keys). The order of the sums
 * is the kernel's, not a rule: it fixes bits per kernel (DESIGN.md "Backends", determinism).
 *
 * The CPU kernels evaluate 2^x on whole vector registers (kernels/cpu/vexp2.h, one body for
 * both kernels' vector types); dsa_softmax_exp2 below is its scalar definition, lane for lane
 * the same bits (tests/test_rules.c checks it on every rounding of many inputs), and the one
 * the device evaluates.
 */
#ifndef DSA_KERNELS_RULES_SOFTMAX_H
#define DSA_KERNELS_RULES_SOFTMAX_H

#include "kernels/rules/hd.h"

#define DSA_SOFTMAX_LOG2E 1.44269504088896341f /* fp32(log2 e) */
#define DSA_SOFTMAX_EMPTY_LSE (-INFINITY)        /* lse of a row with no valid key */

/* 2^x, x ≤ 126 (here x ≤ 0 up to rounding: scores minus their row max or their lse):
 * x = n + r with n = round(x) by the 1.5·2^23 trick (whose low mantissa bits are n), 2^n
 * built in the exponent bits, 2^r for |r| ≤ 1/2 by Cephes' exp2f polynomial (≈ 2 ulp).
 * x < −126 (the masked −inf scores and every result below FLT_MIN) gives 0; NaN gives NaN.
 * The polynomial's multiply-adds are dsa_fma_rule (fused, as vexp2's vfma). */
static inline DSA_HD float dsa_softmax_exp2(float x) {
    const int under = x < -126.0f;
    const float xc = under ? -126.0f : x;
    const float t = dsa_rn_add(xc, 12582912.0f), n = dsa_rn_sub(t, 12582912.0f), r = dsa_rn_sub(xc, n);
    float p = 1.535336188319500e-4f;
    p = dsa_fma_rule(p, r, 1.339887440266574e-3f);
    p = dsa_fma_rule(p, r, 9.618437357674640e-3f);
    p = dsa_fma_rule(p, r, 5.550332471162809e-2f);
    p = dsa_fma_rule(p, r, 2.402264791363012e-1f);
    p = dsa_fma_rule(p, r, 6.931472028550421e-1f);
    p = dsa_fma_rule(p, r, 1.0f); /* 1 + r·P(r) */
    const uint32_t bits = under ? 0u : (dsa_bits_of(t) - 0x4B400000u + 127u) << 23; /* (n + 127) << 23, or 0 */
    return dsa_rn_mul(p, dsa_float_of(bits));
}

/* The running max: s if s > m, else m (so a NaN score leaves m unchanged, and of two equal
 * values the running one stays: the x86 maxps(s, m) rule the vector code uses). */
static inline DSA_HD float dsa_softmax_max(float s, float m) { return s > m ? s : m; }

/* The rescale factor of the old sum and output when the max moves from m to m_new ≥ m:
 * 2^(m − m_new), exactly 0 when m = −inf (first tile). */
static inline DSA_HD float dsa_softmax_corr(float m, float m_new) { return dsa_softmax_exp2(dsa_rn_sub(m, m_new)); }

/* The multiplier of the final output: 1 / l (one division, then a product per element). */
static inline DSA_HD float dsa_softmax_inv(float l) { return dsa_rn_div(1.0f, l); }

/* The saved lse in natural-log units from the running max m (log2 units) and sum l > 0:
 * (m + log2 l) · ln 2 in double, rounded once to fp32.
 * NOTE: log2 is the library's (glibc on the host, libdevice on the device, both within an
 * ulp of double): the fp32 result agrees except when the double lands within that ulp of an
 * fp32 rounding boundary. */
static inline DSA_HD float dsa_softmax_lse(float m, float l) {
    return (float)dsa_rn_dmul(dsa_rn_dadd((double)m, log2((double)l)), 0.69314718055994531);
}

/* The score multiplier that puts q·k into log2 units: τ · log2 e. */
static inline DSA_HD float dsa_softmax_log2_scale(float tau) { return dsa_rn_mul(tau, DSA_SOFTMAX_LOG2E); }

#endif
