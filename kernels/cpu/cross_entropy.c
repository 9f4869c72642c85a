/* cross_entropy.c: next-token cross-entropy (kernels/backend.h).
 *
 * Per row: lse = m + log Σ exp(logit − m) with m the row max (no overflow for large
 * logits), loss = lse − logit[target]; rows with target < 0 are ignored. The backward
 * writes scale · (softmax − onehot), in place when dlogits == logits.
 */
#include <math.h>

#include "kernels/cpu/ops.h"

double dsa_cpu_cross_entropy_forward(float *losses, float *lse, const float *logits, const int32_t *targets, int64_t n,
                                     int64_t vocab) {
#pragma omp parallel for schedule(static) if (n * vocab > 65536)
    for (int64_t i = 0; i < n; i++) {
        const float *row = logits + i * vocab;
        float m = -INFINITY;
        for (int64_t j = 0; j < vocab; j++) m = fmaxf(m, row[j]);
        double s = 0;
        for (int64_t j = 0; j < vocab; j++) s += exp((double)(row[j] - m));
        lse[i] = m + (float)log(s);
        losses[i] = targets[i] < 0 ? 0.0f : lse[i] - row[targets[i]];
    }
    double total = 0;
    for (int64_t i = 0; i < n; i++) total += losses[i];
    return total;
}

void dsa_cpu_cross_entropy_backward(float *dlogits, const float *logits, const float *lse, const int32_t *targets,
                                    float scale, int64_t n, int64_t vocab) {
#pragma omp parallel for schedule(static) if (n * vocab > 65536)
    for (int64_t i = 0; i < n; i++) {
        const float *row = logits + i * vocab;
        float *drow = dlogits + i * vocab;
        if (targets[i] < 0) {
            for (int64_t j = 0; j < vocab; j++) drow[j] = 0.0f;
            continue;
        }
        for (int64_t j = 0; j < vocab; j++) drow[j] = scale * expf(row[j] - lse[i]);
        drow[targets[i]] -= scale;
    }
}
