/* rmsnorm.c: RMSNorm forward and backward (DSA-SPEC §4; kernels/backend.h).
 *
 *   y = w ⊙ x · r,   r = 1 / sqrt(mean(x²) + eps)
 *   dx = r · (w ⊙ dy − x · r² · mean(w ⊙ dy ⊙ x)),   dw += dy ⊙ x · r
 * Row sums accumulate in double; each row is one thread's work (deterministic).
 */
#include <math.h>

#include "kernels/cpu/ops.h"

void dsa_cpu_rmsnorm_forward(float *y, float *rstd, const float *x, const float *weight, int64_t n, int64_t dim,
                             float eps) {
#pragma omp parallel for schedule(static) if (n * dim > 32768)
    for (int64_t i = 0; i < n; i++) {
        const float *restrict xi = x + i * dim;
        float *restrict yi = y + i * dim;
        double ss = 0;
        for (int64_t j = 0; j < dim; j++) ss += (double)xi[j] * xi[j];
        float r = 1.0f / sqrtf((float)(ss / (double)dim) + eps);
        rstd[i] = r;
        for (int64_t j = 0; j < dim; j++) yi[j] = weight[j] * (xi[j] * r);
    }
}

void dsa_cpu_rmsnorm_backward(float *dx, float *dweight, const float *dy, const float *x, const float *weight,
                              const float *rstd, int64_t n, int64_t dim) {
#pragma omp parallel for schedule(static) if (n * dim > 32768)
    for (int64_t i = 0; i < n; i++) {
        const float *restrict xi = x + i * dim, *restrict gi = dy + i * dim;
        float *restrict di = dx + i * dim;
        const float r = rstd[i];
        double dot = 0;
        for (int64_t j = 0; j < dim; j++) dot += (double)weight[j] * gi[j] * xi[j];
        const float m = (float)(dot / (double)dim) * r * r;
        for (int64_t j = 0; j < dim; j++) di[j] = r * (weight[j] * gi[j] - xi[j] * m);
    }
    if (!dweight) return;
    /* dweight: columns split across threads, rows summed in order (deterministic). */
#pragma omp parallel for schedule(static) if (n * dim > 32768)
    for (int64_t j = 0; j < dim; j++) {
        float acc = 0;
        for (int64_t i = 0; i < n; i++) acc += dy[i * dim + j] * (x[i * dim + j] * rstd[i]);
        dweight[j] += acc;
    }
}
