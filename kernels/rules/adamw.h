/* adamw.h: one element of the AdamW update, torch.optim.AdamW semantics (the optimizer
 * decision of DSA-SPEC §1; kernels/backend.h adamw_step), one definition for the CPU
 * (kernels/cpu/adamw.c) and the CUDA backend (kernels/rules/hd.h).
 *
 *   p ← p · (1 − lr · wd)                                  (decoupled decay, first)
 *   m ← β1 m + (1 − β1) g,   v ← β2 v + (1 − β2) g²
 *   p ← p − (lr / bc1) · m / (sqrt(v) / sqrt(bc2) + eps)
 * The last line is torch's grouping (step_size = lr / bc1, denom = v.sqrt() / sqrt(bc2)
 * + eps); it equals backend.h's lr·(m/bc1)/(sqrt(v/bc2)+eps) in exact arithmetic.
 * NOTE: 1 / sqrt(bc2) is folded into a multiplier (one division per element instead of
 * two). The per-tensor constants are computed once, in double, then rounded to fp32; the
 * element update is fp32, every operation rounded on its own (no FMA), sqrtf and the
 * division IEEE, so host and device give the same bits.
 */
#ifndef DSA_KERNELS_RULES_ADAMW_H
#define DSA_KERNELS_RULES_ADAMW_H

#include "kernels/rules/hd.h"

/* The fp32 constants of one update of one tensor. */
typedef struct {
    float decay;        /* 1 − lr · wd */
    float b1, b2, c1, c2; /* β1, β2, 1 − β1, 1 − β2 */
    float eps;
    float step_size;    /* lr / bc1 */
    float inv_bc2_sqrt; /* 1 / sqrt(bc2) */
} DsaAdamWConsts;

/* bc1 = 1 − β1^step, bc2 = 1 − β2^step (the caller's per-group step counts). */
static inline DSA_HD DsaAdamWConsts dsa_adamw_consts(float lr, float weight_decay, float beta1, float beta2, float eps,
                                                     float bc1, float bc2) {
    DsaAdamWConsts k;
    k.decay = (float)dsa_rn_dsub(1.0, dsa_rn_dmul((double)lr, (double)weight_decay));
    k.b1 = beta1, k.b2 = beta2, k.c1 = dsa_rn_sub(1.0f, beta1), k.c2 = dsa_rn_sub(1.0f, beta2), k.eps = eps;
    k.step_size = (float)((double)lr / (double)bc1);
    k.inv_bc2_sqrt = (float)(1.0 / sqrt((double)bc2));
    return k;
}

/* One element: updates *param, *m, *v for gradient g. */
static inline DSA_HD void dsa_adamw_update(float *param, float *m, float *v, float g, const DsaAdamWConsts *k) {
    const float mi = dsa_rn_add(dsa_rn_mul(k->b1, *m), dsa_rn_mul(k->c1, g));
    const float vi = dsa_rn_add(dsa_rn_mul(k->b2, *v), dsa_rn_mul(k->c2, dsa_rn_mul(g, g)));
    *m = mi, *v = vi;
    const float denom = dsa_rn_add(dsa_rn_mul(dsa_rn_sqrt(vi), k->inv_bc2_sqrt), k->eps);
    *param = dsa_rn_sub(dsa_rn_mul(*param, k->decay), dsa_rn_mul(k->step_size, dsa_rn_div(mi, denom)));
}

#endif
