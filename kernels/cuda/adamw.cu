/* adamw.cu: one AdamW update on the device, torch.optim.AdamW semantics (kernels/backend.h;
 * the optimizer decision of DSA-SPEC §1; the CPU twin is kernels/cpu/adamw.c).
 *
 * The per-tensor constants are computed on the host by the shared rule
 * (dsa_adamw_consts, kernels/rules/adamw.h; host code is never contracted, Makefile) and
 * passed by value; each thread applies the rule's element update (dsa_adamw_update, every
 * operation an unfused __f*_rn intrinsic) to one element. The same rule on the same
 * constants: the twin's bits.
 */
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/rules/adamw.h"

enum { THREADS = 256 };

static __global__ void adamw_kernel(float *__restrict__ param, const float *__restrict__ grad, float *__restrict__ m,
                                    float *__restrict__ v, int64_t count, DsaAdamWConsts k) {
    const int64_t step = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += step)
        dsa_adamw_update(&param[i], &m[i], &v[i], grad[i], &k);
}

extern "C" void dsa_cuda_adamw_step(float *param, const float *grad, float *m, float *v, int64_t count,
                                    const DsaAdamWParams *p) {
    if (count <= 0) return;
    const DsaAdamWConsts k = dsa_adamw_consts(p->lr, p->weight_decay, p->beta1, p->beta2, p->eps,
                                              p->bias_correction1, p->bias_correction2);
    adamw_kernel<<<dsa_cuda_blocks(count, THREADS), THREADS, 0, dsa_cuda_stream()>>>(param, grad, m, v, count, k);
    DSA_CUDA_LAUNCHED(adamw_kernel);
}
