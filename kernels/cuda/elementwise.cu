/* elementwise.cu: SwiGLU (the FFN activation, DSA-SPEC §2) and the vector helpers on the
 * device (kernels/backend.h; the CPU twin is kernels/cpu/elementwise.c):
 *
 *   SwiGLU: out = (g · σ(g)) · u;  du = (dout · g) · σ(g),
 *           dg = ((dout · u) · σ(g)) · (1 + g · (1 − σ(g)))
 *   σ(g) from e = dsa_vexpf(−|g|) (kernels/rules/exp.h, the twin's expf): 1/(1+e) for
 *   g ≥ 0, e/(1+e) otherwise.
 *
 * One thread per element, outputs written by the thread that read the inputs, so an
 * output may be the very array of an input (add(y, y), SwiGLU in place), as on the CPU.
 * Every operation is the twin's, unfused (-fmad=false, Makefile CUDA_NOFMA): the same bits.
 *
 * sum_squares: the twin's order exactly. Blocks of 4096 elements; within one, 16 lanes
 * each sum in double the elements ≡ lane (mod 16) in order, then the lane sums in order;
 * then one thread adds the block sums in order. The total is read back (a download waits
 * for the compute stream), so it returns a final double.
 */
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/rules/exp.h"
#include "kernels/rules/hd.h"

enum { THREADS = 256, SS_BLOCK = 4096, SS_LANES = 16, SS_PER_CTA = 8 };

#define GRID_STRIDE(i, count)                                                                              \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, step_ = (int64_t)gridDim.x * blockDim.x; \
         i < (count); i += step_)

static __device__ float sigmoid(float g) {
    const float e = dsa_vexpf(-fabsf(g));
    const float inv = dsa_rn_div(1.0f, 1.0f + e);
    return g >= 0.0f ? inv : e * inv;
}

static __global__ void swiglu_forward_kernel(float *out, const float *gate, const float *up, int64_t count) {
    GRID_STRIDE(i, count) {
        const float g = gate[i];
        out[i] = g * sigmoid(g) * up[i];
    }
}

static __global__ void swiglu_backward_kernel(float *dgate, float *dup, const float *dout, const float *gate,
                                              const float *up, int64_t count) {
    GRID_STRIDE(i, count) {
        const float g = gate[i], u = up[i], d = dout[i], s = sigmoid(g);
        dup[i] = d * g * s;
        dgate[i] = d * u * s * (1.0f + g * (1.0f - s));
    }
}

static __global__ void scale_kernel(float *x, float a, int64_t count) {
    GRID_STRIDE(i, count) x[i] *= a;
}

static __global__ void add_kernel(float *y, const float *x, int64_t count) {
    GRID_STRIDE(i, count) y[i] += x[i];
}

/* part[b] = Σ x² over block b of SS_BLOCK elements, SS_PER_CTA blocks per CTA. */
static __global__ void sum_squares_blocks_kernel(double *part, const float *x, int64_t count, int64_t blocks) {
    __shared__ double lane_sum[SS_PER_CTA][SS_LANES];
    const int slot = threadIdx.x / SS_LANES, lane = threadIdx.x % SS_LANES;
    for (int64_t b0 = (int64_t)blockIdx.x * SS_PER_CTA; b0 < blocks; b0 += (int64_t)gridDim.x * SS_PER_CTA) {
        const int64_t b = b0 + slot;
        double acc = 0;
        if (b < blocks) {
            const int64_t i0 = b * SS_BLOCK, i1 = i0 + SS_BLOCK < count ? i0 + SS_BLOCK : count;
            for (int64_t i = i0 + lane; i < i1; i += SS_LANES) acc += (double)x[i] * (double)x[i];
        }
        lane_sum[slot][lane] = acc;
        __syncthreads();
        if (b < blocks && lane == 0) {
            double s = 0;
            for (int k = 0; k < SS_LANES; k++) s += lane_sum[slot][k];
            part[b] = s;
        }
        __syncthreads();
    }
}

/* *total = Σ part[b] in order (one thread). */
static __global__ void sum_in_order_kernel(double *total, const double *part, int64_t count) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    double s = 0;
    for (int64_t b = 0; b < count; b++) s += part[b];
    *total = s;
}

static unsigned grid(int64_t count) { return dsa_cuda_blocks(count, THREADS); }

extern "C" void dsa_cuda_swiglu_forward(float *out, const float *gate, const float *up, int64_t count) {
    if (count <= 0) return;
    swiglu_forward_kernel<<<grid(count), THREADS, 0, dsa_cuda_stream()>>>(out, gate, up, count);
    DSA_CUDA_LAUNCHED(swiglu_forward_kernel);
}

extern "C" void dsa_cuda_swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate,
                                         const float *up, int64_t count) {
    if (count <= 0) return;
    swiglu_backward_kernel<<<grid(count), THREADS, 0, dsa_cuda_stream()>>>(dgate, dup, dout, gate, up, count);
    DSA_CUDA_LAUNCHED(swiglu_backward_kernel);
}

extern "C" double dsa_cuda_sum_squares(const float *x, int64_t count) {
    if (count <= 0) return 0.0;
    const int64_t blocks = (count + SS_BLOCK - 1) / SS_BLOCK;
    double *part = (double *)dsa_cuda_workspace((size_t)(blocks + 1) * sizeof(double)), *total = part + blocks;
    cudaStream_t s = dsa_cuda_stream();
    sum_squares_blocks_kernel<<<dsa_cuda_blocks(blocks, SS_PER_CTA), SS_PER_CTA * SS_LANES, 0, s>>>(part, x, count,
                                                                                                   blocks);
    DSA_CUDA_LAUNCHED(sum_squares_blocks_kernel);
    sum_in_order_kernel<<<1, 1, 0, s>>>(total, part, blocks);
    DSA_CUDA_LAUNCHED(sum_in_order_kernel);
    double result = 0;
    dsa_cuda_download(&result, total, sizeof result);
    return result;
}

extern "C" void dsa_cuda_scale(float *x, float a, int64_t count) {
    if (count <= 0) return;
    scale_kernel<<<grid(count), THREADS, 0, dsa_cuda_stream()>>>(x, a, count);
    DSA_CUDA_LAUNCHED(scale_kernel);
}

extern "C" void dsa_cuda_add(float *y, const float *x, int64_t count) {
    if (count <= 0) return;
    add_kernel<<<grid(count), THREADS, 0, dsa_cuda_stream()>>>(y, x, count);
    DSA_CUDA_LAUNCHED(add_kernel);
}
