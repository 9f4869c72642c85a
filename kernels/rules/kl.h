/* kl.h: the guards and pointwise steps of the indexer's KL loss (DSA-SPEC §6.1, log space,
 * no epsilon), one definition for the CPU (indexer/kl.c, kl_sparse.c, scores.c) and the
 * CUDA backend (kernels/rules/hd.h).
 *
 * Per query row t and key s of its support:
 *   a_h − lse_h                        dsa_kl_head_logit (τ·att − lse_h, per MLA head)
 *   log p = m + log Σ_h e^(a_h − lse_h − m) − ln H,  m = max_h     dsa_kl_log_target
 *   log π = I − lseI                   dsa_kl_log_pi
 *   KL_t += p (log p − log π)           dsa_kl_term, in double
 *   G     = grad_scale · (π − p)        dsa_kl_grad
 * Guards (the whole of what is special at zero):
 *   - p = 0 (the target puts no mass on s: log p = −inf, or e^(log p) underflows): the term is
 *     exactly 0 (p log p = 0 by definition), never 0 · (−inf) = NaN; G = grad_scale · π.
 *   - π = 0 with p > 0 (log π = −inf or a huge negative): the term is +inf or huge. No epsilon
 *     caps it (§6.1 Decision), and G = −grad_scale · p stays finite.
 *   - no epsilon anywhere: log p and log π are differences of logits and log-sum-exps.
 *   - a row with no valid key (sparse stage, every slot −1) contributes KL 0 and G 0 and
 *     still counts as a row of the mean (kl_sparse.c).
 * NOTE: the exponentials around these steps are the kernels': the dense KL's p and π use
 * dsa_vexpf (kernels/rules/exp.h, a rule), the sparse KL's and the ln / log of
 * dsa_kl_log_target use libm expf / logf (glibc on the host, libdevice on the device: within
 * about 1 ulp of each other, not bit for bit).
 */
#ifndef DSA_KERNELS_RULES_KL_H
#define DSA_KERNELS_RULES_KL_H

#include "kernels/rules/hd.h"

/* One head's logit relative to its lse, τ·att − lse_h (att the raw q·k dot). */
static inline DSA_HD float dsa_kl_head_logit(float scale, float att, float lse_h) {
    return dsa_rn_sub(dsa_rn_mul(scale, att), lse_h);
}

/* log p from the head max m, the sum se = Σ_h e^(a_h − lse_h − m) ≥ 1 and log_h = ln H. */
static inline DSA_HD float dsa_kl_log_target(float m, float se, float log_h) {
    return dsa_rn_sub(dsa_rn_add(m, logf(se)), log_h);
}

/* log π = I − lseI. */
static inline DSA_HD float dsa_kl_log_pi(float score, float lse_i) { return dsa_rn_sub(score, lse_i); }

/* p (log p − log π) in double; exactly 0 where p = 0 (or p is NaN). */
static inline DSA_HD double dsa_kl_term(float p, float logp, float logpi) {
    return p > 0.0f ? dsa_rn_dmul((double)p, dsa_rn_dsub((double)logp, (double)logpi)) : 0.0;
}

/* ∂(grad_scale · KL_t)/∂I = grad_scale · (π − p). */
static inline DSA_HD float dsa_kl_grad(float grad_scale, float pi, float p) {
    return dsa_rn_mul(grad_scale, dsa_rn_sub(pi, p));
}

#endif
