/* adamw.c: one AdamW update, torch.optim.AdamW semantics (kernels/backend.h; the
 * optimizer decision of DSA-SPEC §1).
 *
 *   p ← p · (1 − lr · wd)                                  (decoupled decay, first)
 *   m ← β1 m + (1 − β1) g,   v ← β2 v + (1 − β2) g²
 *   p ← p − (lr / bc1) · m / (sqrt(v) / sqrt(bc2) + eps)
 * The last line is torch's grouping (step_size = lr / bc1, denom = v.sqrt() / sqrt(bc2)
 * + eps); it equals backend.h's lr·(m/bc1)/(sqrt(v/bc2)+eps) in exact arithmetic.
 * NOTE: 1 / sqrt(bc2) is folded into a multiplier (one division per element instead of
 * two: the loop is scalar, since sqrtf under the default -fmath-errno does not
 * vectorize); fp32 throughout, elementwise, so the thread count never changes a bit.
 */
#include <math.h>

#include "kernels/cpu/ops.h"

void dsa_cpu_adamw_step(float *param, const float *grad, float *m, float *v, int64_t count, const DsaAdamWParams *p) {
    const float decay = (float)(1.0 - (double)p->lr * p->weight_decay);
    const float b1 = p->beta1, b2 = p->beta2, c1 = 1.0f - b1, c2 = 1.0f - b2, eps = p->eps;
    const float step_size = (float)((double)p->lr / p->bias_correction1);
    const float inv_bc2_sqrt = (float)(1.0 / sqrt((double)p->bias_correction2));
#pragma omp parallel for schedule(static) if (count > (1 << 15))
    for (int64_t i = 0; i < count; i++) {
        const float g = grad[i];
        const float mi = b1 * m[i] + c1 * g;
        const float vi = b2 * v[i] + c2 * (g * g);
        m[i] = mi, v[i] = vi;
        param[i] = param[i] * decay - step_size * (mi / (sqrtf(vi) * inv_bc2_sqrt + eps));
    }
}
