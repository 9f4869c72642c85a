/* linear.c: the CPU backend's linear layer through OpenBLAS (kernels/backend.h).
 *
 * Weights are stored as Hugging Face does, W[out, in], so the forward is y = x·Wᵀ and
 * the two backward GEMMs are dx = dy·W and dW += dyᵀ·x (beta = 1 accumulates micro-
 * batches). OpenBLAS runs its own threads; it is never called inside an OpenMP region.
 */
#include <cblas.h>

#include "kernels/cpu/ops.h"

void dsa_cpu_linear_forward(float *y, const float *x, const float *w, int64_t n, int64_t in, int64_t out) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)out, (int)in, 1.0f, x, (int)in, w, (int)in,
                0.0f, y, (int)out);
}

void dsa_cpu_linear_backward(float *dx, float *dw, const float *dy, const float *x, const float *w, int64_t n,
                             int64_t in, int64_t out) {
    if (dx)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)in, (int)out, 1.0f, dy, (int)out, w,
                    (int)in, 0.0f, dx, (int)in);
    if (dw)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)out, (int)in, (int)n, 1.0f, dy, (int)out, x, (int)in,
                    1.0f, dw, (int)in);
}
