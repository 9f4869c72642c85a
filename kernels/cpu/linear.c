/* linear.c: the CPU backend's linear layer through OpenBLAS (kernels/backend.h).
 *
 * Weights are stored as Hugging Face does (DSA-SPEC §3), W[out, in], so the forward is
 * y = x·Wᵀ and the two backward GEMMs are dx = dy·W and dW += dyᵀ·x (beta = 1
 * accumulates micro-batches). Row-major cblas_sgemm; OpenBLAS runs its own (OpenMP)
 * threads and is never called from inside an OpenMP region. Its results depend on the
 * thread count only through OpenBLAS's own blocking (deterministic for a given count).
 * Empty shapes are handled here: OpenBLAS rejects a leading dimension of 0.
 */
#include <cblas.h>
#include <limits.h>
#include <string.h>

#include "kernels/cpu/ops.h"

static void check_dims(int64_t n, int64_t in, int64_t out) {
    DSA_ASSERT(n >= 0 && in >= 0 && out >= 0);
    DSA_ASSERT(n <= INT_MAX && in <= INT_MAX && out <= INT_MAX); /* cblas takes int */
}

void dsa_cpu_linear_forward(float *y, const float *x, const float *w, int64_t n, int64_t in, int64_t out) {
    check_dims(n, in, out);
    if (n == 0 || out == 0) return;
    if (in == 0) {
        memset(y, 0, (size_t)(n * out) * sizeof(float));
        return;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)out, (int)in, 1.0f, x, (int)in, w, (int)in,
                0.0f, y, (int)out);
}

void dsa_cpu_linear_backward(float *dx, float *dw, const float *dy, const float *x, const float *w, int64_t n,
                             int64_t in, int64_t out) {
    check_dims(n, in, out);
    if (n == 0 || in == 0) return;
    if (dx && out == 0) memset(dx, 0, (size_t)(n * in) * sizeof(float));
    if (out == 0) return;
    if (dx)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)in, (int)out, 1.0f, dy, (int)out, w,
                    (int)in, 0.0f, dx, (int)in);
    if (dw)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)out, (int)in, (int)n, 1.0f, dy, (int)out, x,
                    (int)in, 1.0f, dw, (int)in);
}
