/* copy.cu: the CUDA backend's 2-D strided copy (kernels/backend.h copy_2d; the CPU twin is
 * kernels/cpu/copy.c): dst[r·dst_stride + c] = (or +=) src[r·src_stride + c], r < rows,
 * c < cols, how the MLA layer splits and joins its fused projections (DSA-SPEC §3.1 row
 * layouts). One thread per value; the accumulate form is one fp32 addition per value,
 * the twin's bits.
 */
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_ops.h"

enum { THREADS = 256 };

static __global__ void copy_2d_kernel(float *__restrict__ dst, int64_t dst_stride, const float *__restrict__ src,
                                      int64_t src_stride, int64_t rows, int64_t cols, bool accumulate) {
    const int64_t total = rows * cols, step = (int64_t)gridDim.x * blockDim.x;
    for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += step) {
        const int64_t r = e / cols, c = e - r * cols;
        const float s = src[r * src_stride + c];
        float *d = dst + r * dst_stride + c;
        *d = accumulate ? *d + s : s;
    }
}

extern "C" void dsa_cuda_copy_2d(float *dst, int64_t dst_stride, const float *src, int64_t src_stride, int64_t rows,
                                 int64_t cols, bool accumulate) {
    if (rows <= 0 || cols <= 0) return;
    copy_2d_kernel<<<dsa_cuda_blocks(rows * cols, THREADS), THREADS, 0, dsa_cuda_stream()>>>(
        dst, dst_stride, src, src_stride, rows, cols, accumulate);
    DSA_CUDA_LAUNCHED(copy_2d_kernel);
}
