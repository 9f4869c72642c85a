/* rmsnorm.cu: RMSNorm forward and backward on the device (DSA-SPEC §4; kernels/backend.h;
 * the CPU twin is kernels/cpu/rmsnorm.c), with the twin's arithmetic in the twin's order:
 *
 *   y = w ⊙ (x · r),   r = 1 / sqrt(fp32(mean(x²)) + eps)
 *   dx = r · (w ⊙ dy − x · m),   m = fp32(mean(w ⊙ dy ⊙ x)) · r · r
 *   dw += Σ_rows dy ⊙ x · r      (double, rows in order, one fp32 rounding at the end)
 *
 * Row sums: a row is handled by 16 threads ("lanes"), lane k summing in double the
 * elements j ≡ k (mod 16) in increasing j, then lane 0 adding the 16 lane sums in order:
 * exactly the 16 fixed lanes of the twin's dot3, so the sums, r, y and dx are its bits.
 * dweight: one thread per column adds the rows in order, as the twin's column blocks.
 * No atomics anywhere: deterministic. Built with -fmad=false (Makefile, CUDA_NOFMA): the
 * twin is ISO C, which never fuses a·b + c, so neither may this file.
 * NOTE: 8 rows per block of 128 threads and `dim` threads for dweight: simple first.
 */
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/rules/hd.h"

enum { LANES = 16, ROWS = 8, ROW_THREADS = LANES * ROWS, COL_THREADS = 256 };

/* Lane `lane`'s part of Σ_j a[j]·b[j] (c == NULL) or Σ_j a[j]·b[j]·c[j], in double,
 * the products formed left to right as the twin's ((double)a · b) · c. */
static __device__ double lane_dot3(const float *a, const float *b, const float *c, int64_t len, int lane) {
    double acc = 0;
    if (c) {
        for (int64_t j = lane; j < len; j += LANES) acc += (double)a[j] * (double)b[j] * (double)c[j];
    } else {
        for (int64_t j = lane; j < len; j += LANES) acc += (double)a[j] * (double)b[j];
    }
    return acc;
}

/* The 16 lane sums of a row slot added in order (lane 0 only). */
static __device__ double lanes_total(const double *part) {
    double s = 0;
    for (int k = 0; k < LANES; k++) s += part[k];
    return s;
}

static __global__ void rmsnorm_forward_kernel(float *y, float *rstd, const float *x, const float *weight, int64_t n,
                                              int64_t dim, float eps) {
    __shared__ double part[ROWS][LANES];
    __shared__ float r_row[ROWS];
    const int slot = threadIdx.x / LANES, lane = threadIdx.x % LANES;
    for (int64_t r0 = (int64_t)blockIdx.x * ROWS; r0 < n; r0 += (int64_t)gridDim.x * ROWS) {
        const int64_t i = r0 + slot;
        const bool live = i < n;
        part[slot][lane] = live ? lane_dot3(x + i * dim, x + i * dim, NULL, dim, lane) : 0.0;
        __syncthreads();
        if (live && lane == 0) {
            const float mean = (float)(lanes_total(part[slot]) / (double)dim);
            const float r = dsa_rn_div(1.0f, dsa_rn_sqrt(dsa_rn_add(mean, eps)));
            r_row[slot] = r;
            rstd[i] = r;
        }
        __syncthreads();
        if (live) {
            const float r = r_row[slot];
            const float *xi = x + i * dim;
            float *yi = y + i * dim;
            for (int64_t j = lane; j < dim; j += LANES) yi[j] = weight[j] * (xi[j] * r);
        }
        __syncthreads(); /* part and r_row are reused by the next rows */
    }
}

static __global__ void rmsnorm_dx_kernel(float *dx, const float *dy, const float *x, const float *weight,
                                         const float *rstd, int64_t n, int64_t dim) {
    __shared__ double part[ROWS][LANES];
    __shared__ float m_row[ROWS];
    const int slot = threadIdx.x / LANES, lane = threadIdx.x % LANES;
    for (int64_t r0 = (int64_t)blockIdx.x * ROWS; r0 < n; r0 += (int64_t)gridDim.x * ROWS) {
        const int64_t i = r0 + slot;
        const bool live = i < n;
        part[slot][lane] = live ? lane_dot3(weight, dy + i * dim, x + i * dim, dim, lane) : 0.0;
        __syncthreads();
        if (live && lane == 0) {
            const float r = rstd[i];
            m_row[slot] = (float)(lanes_total(part[slot]) / (double)dim) * r * r;
        }
        __syncthreads();
        if (live) {
            const float r = rstd[i], m = m_row[slot];
            const float *xi = x + i * dim, *gi = dy + i * dim;
            float *di = dx + i * dim;
            for (int64_t j = lane; j < dim; j += LANES) di[j] = r * (weight[j] * gi[j] - xi[j] * m);
        }
        __syncthreads();
    }
}

static __global__ void rmsnorm_dweight_kernel(float *dweight, const float *dy, const float *x, const float *rstd,
                                              int64_t n, int64_t dim) {
    const int64_t step = (int64_t)gridDim.x * blockDim.x;
    for (int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; c < dim; c += step) {
        double acc = 0;
        for (int64_t i = 0; i < n; i++) acc += (double)dy[i * dim + c] * (double)x[i * dim + c] * (double)rstd[i];
        dweight[c] += (float)acc;
    }
}

extern "C" void dsa_cuda_rmsnorm_forward(float *y, float *rstd, const float *x, const float *weight, int64_t n,
                                         int64_t dim, float eps) {
    if (n <= 0) return;
    rmsnorm_forward_kernel<<<dsa_cuda_blocks(n, ROWS), ROW_THREADS, 0, dsa_cuda_stream()>>>(y, rstd, x, weight, n,
                                                                                           dim, eps);
    DSA_CUDA_LAUNCHED(rmsnorm_forward_kernel);
}

extern "C" void dsa_cuda_rmsnorm_backward(float *dx, float *dweight, const float *dy, const float *x,
                                          const float *weight, const float *rstd, int64_t n, int64_t dim) {
    if (n <= 0 || dim <= 0) return;
    rmsnorm_dx_kernel<<<dsa_cuda_blocks(n, ROWS), ROW_THREADS, 0, dsa_cuda_stream()>>>(dx, dy, x, weight, rstd, n,
                                                                                      dim);
    DSA_CUDA_LAUNCHED(rmsnorm_dx_kernel);
    if (!dweight) return;
    rmsnorm_dweight_kernel<<<dsa_cuda_blocks(dim, COL_THREADS), COL_THREADS, 0, dsa_cuda_stream()>>>(dweight, dy, x,
                                                                                                    rstd, n, dim);
    DSA_CUDA_LAUNCHED(rmsnorm_dweight_kernel);
}
