/* rmsnorm.c: RMSNorm forward and backward (DSA-SPEC §4; kernels/backend.h).
 *
 *   y = w ⊙ (x · r),   r = 1 / sqrt(mean(x²) + eps)
 *   dx = r · (w ⊙ dy − x · r² · mean(w ⊙ dy ⊙ x)),   dw += Σ_rows dy ⊙ x · r
 * NOTE: the row sums (mean(x²), mean(w ⊙ dy ⊙ x)) accumulate in double over 16 fixed
 * lanes; r itself is fp32: 1 / sqrtf(fp32(mean) + eps), then y = w · (x · r) as HF's
 * DeepseekV3RMSNorm in fp32. Rows are split over threads, dweight's columns are split
 * over threads in fixed blocks with the rows summed in order (in double), so every
 * result is the same for every thread count.
 */
#include <math.h>

#include "kernels/cpu/ops.h"

enum { RMS_LANES = 16, RMS_COLS = 32, RMS_PAR_MIN = 1 << 15 };

/* Σ a[j]·b[j]·c[j] in double (c may be NULL: Σ a·b), lanes as in elementwise.c. */
static double dot3(const float *a, const float *b, const float *c, int64_t len) {
    double acc[RMS_LANES] = {0};
    int64_t j = 0;
    if (c) {
        for (; j + RMS_LANES <= len; j += RMS_LANES)
#pragma omp simd
            for (int k = 0; k < RMS_LANES; k++) acc[k] += (double)a[j + k] * b[j + k] * c[j + k];
        for (int k = 0; j + k < len; k++) acc[k] += (double)a[j + k] * b[j + k] * c[j + k];
    } else {
        for (; j + RMS_LANES <= len; j += RMS_LANES)
#pragma omp simd
            for (int k = 0; k < RMS_LANES; k++) acc[k] += (double)a[j + k] * b[j + k];
        for (int k = 0; j + k < len; k++) acc[k] += (double)a[j + k] * b[j + k];
    }
    double s = 0;
    for (int k = 0; k < RMS_LANES; k++) s += acc[k];
    return s;
}

void dsa_cpu_rmsnorm_forward(float *y, float *rstd, const float *x, const float *weight, int64_t n, int64_t dim,
                             float eps) {
#pragma omp parallel for schedule(static) if (n * dim > RMS_PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        const float *restrict xi = x + i * dim;
        float *restrict yi = y + i * dim;
        const float r = 1.0f / sqrtf((float)(dot3(xi, xi, NULL, dim) / (double)dim) + eps);
        rstd[i] = r;
        for (int64_t j = 0; j < dim; j++) yi[j] = weight[j] * (xi[j] * r);
    }
}

void dsa_cpu_rmsnorm_backward(float *dx, float *dweight, const float *dy, const float *x, const float *weight,
                              const float *rstd, int64_t n, int64_t dim) {
#pragma omp parallel for schedule(static) if (n * dim > RMS_PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        const float *restrict xi = x + i * dim, *restrict gi = dy + i * dim;
        float *restrict di = dx + i * dim;
        const float r = rstd[i];
        const float m = (float)(dot3(weight, gi, xi, dim) / (double)dim) * r * r;
        for (int64_t j = 0; j < dim; j++) di[j] = r * (weight[j] * gi[j] - xi[j] * m);
    }
    if (!dweight) return;
    /* dweight: blocks of RMS_COLS columns, one thread each, rows added in order. */
    const int64_t blocks = (dim + RMS_COLS - 1) / RMS_COLS;
#pragma omp parallel for schedule(static) if (n * dim > RMS_PAR_MIN)
    for (int64_t b = 0; b < blocks; b++) {
        const int64_t c0 = b * RMS_COLS, w = dim - c0 < RMS_COLS ? dim - c0 : RMS_COLS;
        double acc[RMS_COLS] = {0};
        for (int64_t i = 0; i < n; i++) {
            const float *gi = dy + i * dim + c0, *xi = x + i * dim + c0;
            const double r = rstd[i];
#pragma omp simd
            for (int64_t c = 0; c < w; c++) acc[c] += (double)gi[c] * xi[c] * r;
        }
        for (int64_t c = 0; c < w; c++) dweight[c0 + c] += (float)acc[c];
    }
}
