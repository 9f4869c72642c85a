/* linear.c: the CPU backend's linear layer through OpenBLAS (kernels/backend.h).
 *
 * Weights are stored as Hugging Face does (DSA-SPEC §3), W[out, in], so the forward is
 * y = x·Wᵀ and the two backward GEMMs are dx = dy·W and dW += dyᵀ·x (beta = 1
 * accumulates micro-batches). Row-major cblas_sgemm; OpenBLAS runs its own (OpenMP)
 * threads and is never called from inside an OpenMP region. Its results depend on the
 * thread count only through OpenBLAS's own blocking (deterministic for a given count).
 * Empty shapes are handled here: OpenBLAS rejects a leading dimension of 0.
 *
 * bf16 entries (train.precision "bf16", DSA-SPEC §3.2): the reference emulation of a bf16
 * GEMM with fp32 accumulation. Both operands are rounded to bf16 (kernels/rules/bf16.h)
 * into fp32 buffers, then the fp32 GEMM runs on them: a product of two bf16 values is
 * exact in fp32, so this is what a tensor core's bf16-in, fp32-accumulate GEMM computes,
 * up to the order of the fp32 sums. The rounded copies are heap buffers of this call
 * (the size of the operands), freed before it returns; an allocation failure stops the
 * process with the sizes, as a device's out-of-memory in an op would.
 */
#include <cblas.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/ops.h"
#include "kernels/rules/bf16.h"

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

/* A heap copy of src[count] rounded to bf16 (held as fp32), or NULL when src is NULL. */
static float *rounded_copy(const float *src, int64_t count, const char *what) {
    if (!src) return NULL;
    float *dst = malloc((size_t)(count > 0 ? count : 1) * sizeof(float));
    if (!dst) {
        fprintf(stderr, "dsa: the bf16 linear layer's rounded %s (%lld floats) does not fit in memory\n", what,
                (long long)count);
        abort();
    }
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < count; i++) dst[i] = dsa_bf16_to_f32(dsa_bf16_from_f32(src[i]));
    return dst;
}

void dsa_cpu_linear_forward_bf16(float *y, const float *x, const float *w, int64_t n, int64_t in, int64_t out) {
    check_dims(n, in, out);
    if (n == 0 || out == 0 || in == 0) {
        dsa_cpu_linear_forward(y, x, w, n, in, out); /* nothing to round */
        return;
    }
    float *xb = rounded_copy(x, n * in, "input"), *wb = rounded_copy(w, out * in, "weight");
    dsa_cpu_linear_forward(y, xb, wb, n, in, out);
    free(wb);
    free(xb);
}

void dsa_cpu_linear_backward_bf16(float *dx, float *dw, const float *dy, const float *x, const float *w, int64_t n,
                                  int64_t in, int64_t out) {
    check_dims(n, in, out);
    if (n == 0 || in == 0 || out == 0) {
        dsa_cpu_linear_backward(dx, dw, dy, x, w, n, in, out);
        return;
    }
    float *dyb = rounded_copy(dy, n * out, "output gradient");
    float *wb = dx ? rounded_copy(w, out * in, "weight") : NULL, *xb = dw ? rounded_copy(x, n * in, "input") : NULL;
    dsa_cpu_linear_backward(dx, dw, dyb, xb, wb, n, in, out);
    free(xb);
    free(wb);
    free(dyb);
}
