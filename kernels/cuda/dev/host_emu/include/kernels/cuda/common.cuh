/* common.cuh (host emulation): what the KL sources of kernels/cuda/ take from the real
 * common.cuh and the CUDA runtime, for a host compile (kernels/cuda/dev/host_emu/README.md).
 *
 * A launch runs its blocks one after another; each block is blockDim.x std::threads (one per
 * CUDA thread), __syncthreads is a std::barrier of them, __shared__ variables are statics
 * (one block lives at a time) and dynamic shared memory is one NaN-filled buffer. Memory is
 * host memory; copies and fills are memcpy / memset; the workspace is NaN-filled on every
 * call, so a kernel that reads scratch it did not write shows NaN.
 */
#ifndef DSA_HOST_EMU_COMMON_CUH
#define DSA_HOST_EMU_COMMON_CUH

#include <barrier>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

extern "C" {
#include "kernels/backend.h"
}

struct uint3 {
    unsigned x, y, z;
};
inline thread_local uint3 threadIdx, blockIdx;
inline uint3 blockDim;
inline double *emu_shm;
inline std::barrier<> *emu_bar;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __syncthreads() emu_bar->arrive_and_wait()

typedef void *cudaStream_t;
typedef int cudaError_t;
enum {
    cudaSuccess = 0,
    cudaDevAttrMaxSharedMemoryPerBlockOptin,
    cudaFuncAttributeMaxDynamicSharedMemorySize,
    cudaMemcpyDeviceToHost
};
#define DSA_CUDA_CHECK(call)                \
    do {                                    \
        if ((call) != cudaSuccess) abort(); \
    } while (0)
#define DSA_CUDA_LAUNCHED(kernel_name) (void)0

static inline int cudaGetDevice(int *d) { return *d = 0, cudaSuccess; }
static inline int cudaDeviceGetAttribute(int *v, int, int) { return *v = 227 * 1024, cudaSuccess; } /* sm_90 */
template <class K> static inline int cudaFuncSetAttribute(K, int, int) { return cudaSuccess; }
static inline int cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t) { return memset(p, v, n), cudaSuccess; }
static inline int cudaMemcpyAsync(void *d, const void *s, size_t n, int, cudaStream_t) {
    return memcpy(d, s, n), cudaSuccess;
}
static inline int cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
static inline cudaStream_t dsa_cuda_stream(void) { return nullptr; }
static inline void *dsa_cuda_workspace(size_t bytes) {
    static std::vector<double> ws;
    ws.assign(bytes / sizeof(double) + 1, NAN);
    return ws.data();
}
static inline unsigned dsa_cuda_blocks(int64_t count, int threads) {
    return (unsigned)((count + threads - 1) / threads > 0 ? (count + threads - 1) / threads : 1);
}

/* kernel<<<grid, block, shm, stream>>>(args), as run.sh rewrites the launches. */
template <class Kernel, class Args>
static void emu_launch(Kernel kernel, unsigned grid, int block, size_t shm, cudaStream_t, Args args) {
    std::vector<double> buf(shm / sizeof(double) + 2, NAN);
    std::barrier<> bar(block);
    emu_shm = buf.data(), emu_bar = &bar, blockDim = {(unsigned)block, 1, 1};
    std::vector<std::thread> threads;
    for (int t = 0; t < block; t++)
        threads.emplace_back([&, t] {
            threadIdx = {(unsigned)t, 0, 0};
            for (unsigned b = 0; b < grid; b++) {
                blockIdx = {b, 0, 0};
                kernel(args);
                bar.arrive_and_wait(); /* the block ends: its shared memory is free again */
            }
        });
    for (auto &th : threads) th.join();
}

#endif
