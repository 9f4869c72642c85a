/* rope.cu: the interleaved (GPT-J) RoPE of MLA's qR and kR on the device (DSA-SPEC §4.4;
 * kernels/backend.h; the CPU twin is kernels/cpu/rope.c, which also builds the cos/sin
 * tables of §4.3 on the host: the caller uploads them).
 *
 * Each pair (2i, 2i+1) of the rope_dim-wide vector at x + r·row_stride + h·head_stride is
 * rotated by the angle of position t = r mod seq_len, in place:
 *   (a, b) ← (a·cos − b·sin', a·sin' + b·cos),  sin' = ±sin (+ forward, − backward: the
 * transpose). One thread per pair; every operation is the twin's, unfused (-fmad=false,
 * Makefile CUDA_NOFMA), so the results are its bits.
 */
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_ops.h"

enum { THREADS = 256 };

static __global__ void rope_kernel(float *x, const float *__restrict__ cos_t, const float *__restrict__ sin_t,
                                   int64_t n, int64_t seq_len, int64_t heads, int64_t half, int64_t row_stride,
                                   int64_t head_stride, float sign) {
    const int64_t total = n * heads * half, step = (int64_t)gridDim.x * blockDim.x;
    for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += step) {
        const int64_t i = e % half, h = (e / half) % heads, r = e / (half * heads);
        const int64_t t = (r % seq_len) * half + i;
        float *v = x + r * row_stride + h * head_stride;
        const float a = v[2 * i], b = v[2 * i + 1], c = cos_t[t], si = sign * sin_t[t];
        v[2 * i] = a * c - b * si;
        v[2 * i + 1] = a * si + b * c;
    }
}

static void rope(float *x, const float *cos_t, const float *sin_t, int64_t n, int64_t seq_len, int64_t heads,
                 int64_t rope_dim, int64_t row_stride, int64_t head_stride, float sign) {
    const int64_t half = rope_dim / 2;
    if (n <= 0 || heads <= 0 || half <= 0) return;
    rope_kernel<<<dsa_cuda_blocks(n * heads * half, THREADS), THREADS, 0, dsa_cuda_stream()>>>(
        x, cos_t, sin_t, n, seq_len, heads, half, row_stride, head_stride, sign);
    DSA_CUDA_LAUNCHED(rope_kernel);
}

extern "C" void dsa_cuda_rope_forward(float *x, const float *cos_t, const float *sin_t, int64_t n, int64_t seq_len,
                                      int64_t heads, int64_t rope_dim, int64_t row_stride, int64_t head_stride) {
    rope(x, cos_t, sin_t, n, seq_len, heads, rope_dim, row_stride, head_stride, 1.0f);
}

extern "C" void dsa_cuda_rope_backward(float *dx, const float *cos_t, const float *sin_t, int64_t n, int64_t seq_len,
                                       int64_t heads, int64_t rope_dim, int64_t row_stride, int64_t head_stride) {
    rope(dx, cos_t, sin_t, n, seq_len, heads, rope_dim, row_stride, head_stride, -1.0f);
}
