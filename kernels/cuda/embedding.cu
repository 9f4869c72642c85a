/* embedding.cu: token embedding lookup (model.embed_tokens, DSA-SPEC §3) and its
 * gradient on the device (kernels/backend.h; the CPU twin is kernels/cpu/embedding.c).
 *
 * Forward: one thread per output value. Backward: one thread per column c of the table,
 * walking the tokens in order and adding dout[n, c] into dtable[ids[n], c]: each value of
 * dtable is summed by one thread, in token order, with no atomics, so the result is the
 * CPU twin's bit for bit (the same fp32 additions in the same order) and the same every
 * run. NOTE: that is only `dim` threads, each over all tokens: simple first (a sort of
 * the ids by row, then a segmented sum, is the faster form with the same order).
 */
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_ops.h"

enum { THREADS = 256 };

static __global__ void embedding_forward_kernel(float *__restrict__ out, const int32_t *__restrict__ ids,
                                                const float *__restrict__ table, int64_t n, int64_t dim) {
    const int64_t total = n * dim, step = (int64_t)gridDim.x * blockDim.x;
    for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += step) {
        const int64_t i = e / dim, c = e - i * dim;
        out[e] = table[(int64_t)ids[i] * dim + c];
    }
}

static __global__ void embedding_backward_kernel(float *__restrict__ dtable, const float *__restrict__ dout,
                                                 const int32_t *__restrict__ ids, int64_t n, int64_t dim) {
    const int64_t step = (int64_t)gridDim.x * blockDim.x;
    for (int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; c < dim; c += step)
        for (int64_t i = 0; i < n; i++) dtable[(int64_t)ids[i] * dim + c] += dout[i * dim + c];
}

extern "C" void dsa_cuda_embedding_forward(float *out, const int32_t *ids, const float *table, int64_t n,
                                           int64_t dim) {
    if (n <= 0 || dim <= 0) return;
    embedding_forward_kernel<<<dsa_cuda_blocks(n * dim, THREADS), THREADS, 0, dsa_cuda_stream()>>>(out, ids, table,
                                                                                                  n, dim);
    DSA_CUDA_LAUNCHED(embedding_forward_kernel);
}

extern "C" void dsa_cuda_embedding_backward(float *dtable, const float *dout, const int32_t *ids, int64_t n,
                                            int64_t dim) {
    if (n <= 0 || dim <= 0) return;
    embedding_backward_kernel<<<dsa_cuda_blocks(dim, THREADS), THREADS, 0, dsa_cuda_stream()>>>(dtable, dout, ids,
                                                                                               n, dim);
    DSA_CUDA_LAUNCHED(embedding_backward_kernel);
}
