/* rules_check.cu: every scalar rule of kernels/rules/ compiled by nvcc, in device code (a
 * __global__ kernel, sm_90) and in host code (DESIGN.md "Backends").
 *
 * The normal build compiles this file whenever nvcc is found, with nvcc's warnings and the
 * host compiler's as errors, so a header of kernels/rules/ that is not valid CUDA C++17 or
 * not callable from both sides fails the build on any machine, GPU or not. Nothing in the
 * library calls these functions; they are shaped for the device check of the rules
 * (DSA-SPEC §3.2, §5.2, §5.4, §6.1, §8): each evaluates DSA_RULES_CHECK_OUTPUTS values per
 * input pair with one shared __host__ __device__ function, so a run on a GPU compares
 * dsa_rules_check_kernel's outputs with dsa_rules_check_host's bit for bit.
 */
#include <cuda_runtime.h>

#include "kernels/rules/adamw.h"
#include "kernels/rules/bf16.h"
#include "kernels/rules/exp.h"
#include "kernels/rules/fp8.h"
#include "kernels/rules/hd.h"
#include "kernels/rules/index_score.h"
#include "kernels/rules/kl.h"
#include "kernels/rules/softmax.h"
#include "kernels/rules/topk_order.h"

enum { DSA_RULES_CHECK_OUTPUTS = 29 };

/* Every rule on the input pair (x, y): out[0 .. DSA_RULES_CHECK_OUTPUTS). The arithmetic
 * that derives further inputs uses hd.h's dsa_rn_* too, so nvcc cannot contract it. */
static DSA_HD void rules_eval(float x, float y, float *out) {
    const float ax = fabsf(x), ay = fabsf(y), ay1 = dsa_rn_add(ay, 1.0f);
    out[0] = dsa_e4m3_round(x);
    out[1] = (float)dsa_e4m3_encode(x);
    out[2] = dsa_e4m3_decode(dsa_e4m3_encode(y));
    out[3] = dsa_fp8_group_scale(ax);
    out[4] = (float)dsa_fp8_block_exponent(ax > 0.0f && ax <= 3.0e38f ? ax : 1.0f);
    out[5] = (float)dsa_fp8_group_size((int64_t)ay);
    out[6] = dsa_bf16_to_f32(dsa_bf16_from_f32(x));
    out[7] = dsa_softmax_exp2(x);
    out[8] = dsa_softmax_max(x, y);
    out[9] = dsa_softmax_corr(x < y ? x : y, x < y ? y : x);
    out[10] = dsa_softmax_inv(y);
    out[11] = dsa_softmax_lse(x, ay1);
    out[12] = dsa_softmax_log2_scale(y);
    out[13] = dsa_vexpf(x);
    out[14] = dsa_kl_head_logit(0.125f, x, y);
    out[15] = dsa_kl_log_target(x, ay1, 1.3862944f);
    out[16] = dsa_kl_log_pi(x, y);
    out[17] = (float)dsa_kl_term(ax, x, y);
    out[18] = dsa_kl_grad(0.5f, ax, ay);
    const DsaAdamWConsts k = dsa_adamw_consts(3e-4f, 0.1f, 0.9f, 0.95f, 1e-8f, 0.271f, 0.142625f);
    float p = x, m = dsa_rn_mul(0.1f, y), v = ay;
    dsa_adamw_update(&p, &m, &v, dsa_rn_sub(y, x), &k);
    out[19] = p, out[20] = m, out[21] = v;
    const DsaTopkCand sel[2] = {{x, 1}, {y, 2}};
    out[22] = (float)(dsa_topk_worse(sel[0], sel[1]) + 2 * dsa_topk_within(x, 3, y, 2));
    out[23] = dsa_rn_add((float)dsa_topk_slot_index(sel, 1, 1), dsa_topk_slot_score(sel, 2, 1));
    out[24] = dsa_float_of(dsa_topk_radix_key(x));
    out[25] = dsa_rn_add(dsa_rn_sqrt(ay), dsa_fma_rule(x, y, 1.0f));
    const float q2[4] = {x, y, ay, ax}, k2[2] = {y, x}, w2[2] = {0.5f, ay};
    out[26] = dsa_index_score(q2, w2, k2, 2, 2, 0.25f, 1, 0);
    const uint64_t ok = dsa_topk_order_key(x, 5);
    out[27] = dsa_float_of((uint32_t)(ok >> 32) ^ (uint32_t)ok);
    out[28] = dsa_topk_order_cand(ok).score;
}

/* out[i · DSA_RULES_CHECK_OUTPUTS ...] for the pairs (x[i], y[i]), i < n: one thread each. */
extern "C" __global__ void dsa_rules_check_kernel(const float *__restrict__ x, const float *__restrict__ y, int n,
                                                  float *__restrict__ out) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) rules_eval(x[i], y[i], out + (size_t)i * DSA_RULES_CHECK_OUTPUTS);
}

/* The same on the host. */
extern "C" void dsa_rules_check_host(const float *x, const float *y, int n, float *out) {
    for (int i = 0; i < n; i++) rules_eval(x[i], y[i], out + (size_t)i * DSA_RULES_CHECK_OUTPUTS);
}
