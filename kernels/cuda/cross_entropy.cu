/* cross_entropy.cu: next-token cross-entropy on the device, the LM loss of DSA-SPEC §1
 * and §6.3 (kernels/backend.h; the CPU twin is kernels/cpu/cross_entropy.c).
 *
 * Per row: m = max logit, lse = m + fp32(log Σ exp(logit − m)), loss = lse − logit[target]
 * (0 for target < 0). The exponentials are the twin's dsa_vexpf (kernels/rules/exp.h) in
 * fp32; their sum is double over the twin's 16 fixed lanes (lane k takes j ≡ k mod 16 in
 * order, lane sums added in order): a row is 16 threads. The only difference from the
 * twin is the double log (libdevice's against glibc's, both within an ulp of the exact
 * value), which can move lse by an fp32 ulp when the double lands at a rounding
 * boundary. The kernel reads the caller's [N, V] logits and writes N losses and N lse:
 * nothing of vocabulary size is materialised beyond the logits block it is given.
 * The returned total is the losses summed in double in row order by one thread (the
 * twin's loop), then read back.
 *
 * Backward: one thread per logit, dlogits = scale · exp(logit − lse), then − scale at the
 * target (two roundings, the twin's order), zeros for ignored rows. In place is allowed
 * (dlogits == logits): each value is read and written by the same thread. Unfused
 * (-fmad=false, Makefile CUDA_NOFMA), as the twin.
 */
#include <math.h>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/rules/exp.h"

enum { LANES = 16, ROWS = 8, ROW_THREADS = LANES * ROWS, THREADS = 256 };

static __global__ void cross_entropy_rows_kernel(float *losses, float *lse, const float *__restrict__ logits,
                                                 const int32_t *__restrict__ targets, int64_t n, int64_t vocab) {
    __shared__ float lane_max[ROWS][LANES];
    __shared__ double lane_sum[ROWS][LANES];
    __shared__ float row_max[ROWS];
    const int slot = threadIdx.x / LANES, lane = threadIdx.x % LANES;
    for (int64_t r0 = (int64_t)blockIdx.x * ROWS; r0 < n; r0 += (int64_t)gridDim.x * ROWS) {
        const int64_t i = r0 + slot;
        const bool live = i < n;
        const float *row = logits + (live ? i : 0) * vocab;
        float m = -INFINITY;
        if (live)
            for (int64_t j = lane; j < vocab; j += LANES) m = row[j] > m ? row[j] : m;
        lane_max[slot][lane] = m;
        __syncthreads();
        if (lane == 0) {
            float mm = -INFINITY;
            for (int k = 0; k < LANES; k++) mm = lane_max[slot][k] > mm ? lane_max[slot][k] : mm;
            row_max[slot] = mm;
        }
        __syncthreads();
        m = row_max[slot];
        double acc = 0;
        if (live)
            for (int64_t j = lane; j < vocab; j += LANES) acc += (double)dsa_vexpf(row[j] - m);
        lane_sum[slot][lane] = acc;
        __syncthreads();
        if (live && lane == 0) {
            double s = 0;
            for (int k = 0; k < LANES; k++) s += lane_sum[slot][k];
            const float l = m + (float)log(s);
            lse[i] = l;
            losses[i] = targets[i] < 0 ? 0.0f : l - row[targets[i]];
        }
        __syncthreads();
    }
}

/* *total = Σ losses[i] in double, in row order (one thread). */
static __global__ void loss_total_kernel(double *total, const float *losses, int64_t n) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += losses[i];
    *total = s;
}

static __global__ void cross_entropy_backward_kernel(float *dlogits, const float *logits, const float *lse,
                                                     const int32_t *targets, float scale, int64_t n, int64_t vocab) {
    const int64_t total = n * vocab, step = (int64_t)gridDim.x * blockDim.x;
    for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += step) {
        const int64_t i = e / vocab, j = e - i * vocab;
        const int32_t t = targets[i];
        if (t < 0) {
            dlogits[e] = 0.0f;
            continue;
        }
        float g = scale * dsa_vexpf(logits[e] - lse[i]);
        if (j == t) g = g - scale;
        dlogits[e] = g;
    }
}

extern "C" double dsa_cuda_cross_entropy_forward(float *losses, float *lse, const float *logits,
                                                 const int32_t *targets, int64_t n, int64_t vocab) {
    if (n <= 0) return 0.0;
    cudaStream_t s = dsa_cuda_stream();
    cross_entropy_rows_kernel<<<dsa_cuda_blocks(n, ROWS), ROW_THREADS, 0, s>>>(losses, lse, logits, targets, n,
                                                                              vocab);
    DSA_CUDA_LAUNCHED(cross_entropy_rows_kernel);
    double *total = (double *)dsa_cuda_workspace(sizeof(double));
    loss_total_kernel<<<1, 1, 0, s>>>(total, losses, n);
    DSA_CUDA_LAUNCHED(loss_total_kernel);
    double result = 0;
    dsa_cuda_download(&result, total, sizeof result);
    return result;
}

extern "C" void dsa_cuda_cross_entropy_backward(float *dlogits, const float *logits, const float *lse,
                                                const int32_t *targets, float scale, int64_t n, int64_t vocab) {
    if (n <= 0 || vocab <= 0) return;
    cross_entropy_backward_kernel<<<dsa_cuda_blocks(n * vocab, THREADS), THREADS, 0, dsa_cuda_stream()>>>(
        dlogits, logits, lse, targets, scale, n, vocab);
    DSA_CUDA_LAUNCHED(cross_entropy_backward_kernel);
}
