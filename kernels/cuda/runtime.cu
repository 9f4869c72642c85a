/* runtime.cu: the shared state of the CUDA backend (common.cuh): error stop, the compute
 * and copy streams, the growing workspace. One process drives one device (the current
 * one, chosen by the caller: local rank under MPI), so the state is process-wide. */
#include <cstdio>
#include <cstdlib>

#include "kernels/cuda/common.cuh"

extern "C" void dsa_cuda_fail(const char *what, cudaError_t err, const char *file, int line) {
    std::fprintf(stderr, "cuda: %s failed at %s:%d: %s (%s)\n", what, file, line, cudaGetErrorString(err),
                 cudaGetErrorName(err));
    std::fflush(stderr);
    std::abort();
}

static cudaStream_t compute_stream, copy_stream;

extern "C" cudaStream_t dsa_cuda_stream(void) {
    if (!compute_stream) DSA_CUDA_CHECK(cudaStreamCreateWithFlags(&compute_stream, cudaStreamNonBlocking));
    return compute_stream;
}

extern "C" cudaStream_t dsa_cuda_copy_stream(void) {
    if (!copy_stream) DSA_CUDA_CHECK(cudaStreamCreateWithFlags(&copy_stream, cudaStreamNonBlocking));
    return copy_stream;
}

static void *workspace;
static size_t workspace_bytes;

extern "C" void *dsa_cuda_workspace(size_t bytes) {
    if (bytes <= workspace_bytes && workspace) return workspace;
    cudaStream_t s = dsa_cuda_stream();
    if (workspace) DSA_CUDA_CHECK(cudaFreeAsync(workspace, s));
    size_t grown = bytes + bytes / 4 + 256;
    DSA_CUDA_CHECK(cudaMallocAsync(&workspace, grown, s));
    workspace_bytes = grown;
    return workspace;
}
