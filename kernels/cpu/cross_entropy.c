/* cross_entropy.c: next-token cross-entropy, the LM loss of DSA-SPEC §1 and §6.3
 * (kernels/backend.h).
 *
 * Per row: m = max logit, lse = m + log Σ exp(logit − m) (never overflows, whatever the
 * logits), loss = lse − logit[target]; rows with target < 0 are ignored (loss 0, zero
 * gradient). The exponentials are fp32 (dsa_vexpf, < 1 ulp, vectorized), their sum is
 * double over 16 fixed lanes (the same bits for every ISA and alignment), the log is
 * double, lse is stored in fp32. The total is summed in double in row order.
 * The backward writes scale · (softmax − onehot) and may run in place (dlogits == logits):
 * each element is read before it is written, and the target's −scale comes last.
 */
#include <math.h>

#include "kernels/cpu/ops.h"
#include "kernels/rules/exp.h"

enum { CE_LANES = 16, CE_CHUNK = 256, CE_PAR_MIN = 1 << 16 };

/* The natural-log log-sum-exp of one row of `vocab` logits. */
static float row_lse(const float *row, int64_t vocab) {
    float m = -INFINITY;
#pragma omp simd reduction(max : m)
    for (int64_t j = 0; j < vocab; j++) m = row[j] > m ? row[j] : m;
    /* NOTE: exponentials of CE_CHUNK logits into a stack buffer, then added into lane
     * (j mod 16): two simple loops GCC vectorizes (one fused loop it does not). */
    double acc[CE_LANES] = {0};
    float e[CE_CHUNK];
    for (int64_t j0 = 0; j0 < vocab; j0 += CE_CHUNK) {
        const int64_t len = vocab - j0 < CE_CHUNK ? vocab - j0 : CE_CHUNK;
#pragma omp simd
        for (int64_t k = 0; k < len; k++) e[k] = dsa_vexpf(row[j0 + k] - m);
        int64_t k = 0;
        for (; k + CE_LANES <= len; k += CE_LANES)
            for (int l = 0; l < CE_LANES; l++) acc[l] += e[k + l];
        for (int l = 0; k + l < len; l++) acc[l] += e[k + l];
    }
    double s = 0;
    for (int l = 0; l < CE_LANES; l++) s += acc[l];
    return m + (float)log(s);
}

/* One row of the gradient; drow may be row. */
static void row_grad(float *drow, const float *row, float lse, int32_t target, float scale, int64_t vocab) {
    if (target < 0) {
        for (int64_t j = 0; j < vocab; j++) drow[j] = 0.0f;
        return;
    }
#pragma omp simd
    for (int64_t j = 0; j < vocab; j++) drow[j] = scale * dsa_vexpf(row[j] - lse);
    drow[target] -= scale;
}

double dsa_cpu_cross_entropy_forward(float *losses, float *lse, const float *logits, const int32_t *targets, int64_t n,
                                     int64_t vocab) {
#pragma omp parallel for schedule(static) if (n * vocab > CE_PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        const float *row = logits + i * vocab;
        lse[i] = row_lse(row, vocab);
        losses[i] = targets[i] < 0 ? 0.0f : lse[i] - row[targets[i]];
    }
    double total = 0;
    for (int64_t i = 0; i < n; i++) total += losses[i];
    return total;
}

void dsa_cpu_cross_entropy_backward(float *dlogits, const float *logits, const float *lse, const int32_t *targets,
                                    float scale, int64_t n, int64_t vocab) {
#pragma omp parallel for schedule(static) if (n * vocab > CE_PAR_MIN)
    for (int64_t i = 0; i < n; i++) row_grad(dlogits + i * vocab, logits + i * vocab, lse[i], targets[i], scale, vocab);
}
