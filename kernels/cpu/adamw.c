/* adamw.c: one AdamW update, torch.optim.AdamW semantics (kernels/backend.h; the
 * optimizer decision of DSA-SPEC §1): the element rule of kernels/rules/adamw.h, shared
 * with the CUDA backend, over a tensor.
 * NOTE: the loop is scalar (sqrtf under the default -fmath-errno does not vectorize); fp32
 * throughout, elementwise, so the thread count never changes a bit.
 */
#include "kernels/cpu/ops.h"
#include "kernels/rules/adamw.h"

void dsa_cpu_adamw_step(float *param, const float *grad, float *m, float *v, int64_t count, const DsaAdamWParams *p) {
    const DsaAdamWConsts k = dsa_adamw_consts(p->lr, p->weight_decay, p->beta1, p->beta2, p->eps,
                                              p->bias_correction1, p->bias_correction2);
#pragma omp parallel for schedule(static) if (count > (1 << 15))
    for (int64_t i = 0; i < count; i++) dsa_adamw_update(&param[i], &m[i], &v[i], grad[i], &k);
}
