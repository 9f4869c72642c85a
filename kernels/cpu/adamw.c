/* adamw.c: one AdamW update, torch.optim.AdamW semantics (kernels/backend.h, DSA-SPEC §1).
 *
 *   p ← p · (1 − lr · wd)
 *   m ← β1 m + (1 − β1) g,   v ← β2 v + (1 − β2) g²
 *   p ← p − lr · (m / bc1) / (sqrt(v / bc2) + eps)
 */
#include <math.h>

#include "kernels/cpu/ops.h"

void dsa_cpu_adamw_step(float *param, const float *grad, float *m, float *v, int64_t count, const DsaAdamWParams *p) {
    const float decay = 1.0f - p->lr * p->weight_decay, b1 = p->beta1, b2 = p->beta2;
    const float inv_bc1 = 1.0f / p->bias_correction1, inv_bc2 = 1.0f / p->bias_correction2;
#pragma omp parallel for schedule(static) if (count > 65536)
    for (int64_t i = 0; i < count; i++) {
        float g = grad[i];
        float mi = b1 * m[i] + (1.0f - b1) * g;
        float vi = b2 * v[i] + (1.0f - b2) * g * g;
        m[i] = mi, v[i] = vi;
        param[i] = param[i] * decay - p->lr * (mi * inv_bc1) / (sqrtf(vi * inv_bc2) + p->eps);
    }
}
