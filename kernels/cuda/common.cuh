/* common.cuh: what every CUDA source of the backend shares (nvcc only): the error check,
 * the compute and copy streams, a growing device workspace for ops whose scratch is not
 * the caller's, and launch-size helpers. Implemented in runtime.cu.
 *
 * Errors: a table op returns nothing (kernels/backend.h), and a CUDA error inside a step
 * leaves the device state unusable, so a failed call or launch stops the process with
 * the call, file:line and CUDA's message (DSA_CUDA_CHECK). Launches are checked right after
 * they are issued (DSA_CUDA_LAUNCHED), asynchronous faults at the next synchronizing call.
 */
#ifndef DSA_KERNELS_CUDA_COMMON_CUH
#define DSA_KERNELS_CUDA_COMMON_CUH

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

extern "C" {
#include "kernels/backend.h"
}

#define DSA_CUDA_CHECK(call)                                                          \
    do {                                                                              \
        cudaError_t dsa_cuda_err_ = (call);                                           \
        if (dsa_cuda_err_ != cudaSuccess) dsa_cuda_fail(#call, dsa_cuda_err_, __FILE__, __LINE__); \
    } while (0)
#define DSA_CUDA_LAUNCHED(kernel_name) DSA_CUDA_CHECK(cudaPeekAtLastError())

extern "C" {
/* Print "cuda: <what> failed at file:line: <message>" and abort. */
[[noreturn]] void dsa_cuda_fail(const char *what, cudaError_t err, const char *file, int line);
/* The backend's compute stream (every op runs on it, in issue order) and copy stream
 * (upload_async); both are created on first use on the current device. */
cudaStream_t dsa_cuda_stream(void);
cudaStream_t dsa_cuda_copy_stream(void);
/* A device workspace of at least `bytes`, valid until the next call on the compute
 * stream that asks for more (the old one is freed in stream order). Not for outputs. */
void *dsa_cuda_workspace(size_t bytes);
}

/* Blocks of `threads` covering `count` items (at least 1). */
static inline unsigned dsa_cuda_blocks(int64_t count, int threads) {
    int64_t b = (count + threads - 1) / threads;
    return (unsigned)(b > 0 ? (b < 2147483647 ? b : 2147483647) : 1);
}

#endif
