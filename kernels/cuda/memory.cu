/* memory.cu: the CUDA backend's memory entries (kernels/backend.h, "memory"; the CPU twin
 * is kernels/cpu/memory.c): device memory from cudaMalloc, copies on the compute stream
 * of common.cuh, the loader's batches on the copy stream.
 *
 * Ordering (DESIGN.md "Backends"): every op runs on the compute stream in issue order.
 * upload and download are synchronous: the copy is queued on the compute stream behind
 * all compute issued before it and the host waits for it, so a download reads final
 * values and an upload's source may change as soon as it returns. upload_async queues on
 * the copy stream and records `uploads_done`; copy_order makes the compute stream wait
 * for that event (so later compute sees every upload) and, so that the caller may reuse
 * the sources once it returns (backend.h's contract, pinned sources included), the host
 * waits for it too: by then the copies have overlapped the step they were issued beside.
 * NOTE: alloc zero-fills on the compute stream and waits, so an upload_async on the copy
 * stream can never be overtaken by the zero fill of its own buffer.
 */
#include <cstring>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_ops.h"

static cudaEvent_t uploads_done; /* recorded on the copy stream after each upload_async */

static cudaEvent_t upload_event(void) {
    if (!uploads_done) DSA_CUDA_CHECK(cudaEventCreateWithFlags(&uploads_done, cudaEventDisableTiming));
    return uploads_done;
}

extern "C" void *dsa_cuda_alloc(size_t bytes) {
    void *p = NULL;
    const size_t size = bytes ? bytes : 1; /* as the CPU backend: a valid pointer for 0 bytes */
    cudaError_t err = cudaMalloc(&p, size);
    if (err == cudaErrorMemoryAllocation) {
        (void)cudaGetLastError(); /* clear it: out of memory is the caller's to report */
        return NULL;
    }
    DSA_CUDA_CHECK(err);
    cudaStream_t s = dsa_cuda_stream();
    DSA_CUDA_CHECK(cudaMemsetAsync(p, 0, size, s));
    DSA_CUDA_CHECK(cudaStreamSynchronize(s));
    return p;
}

extern "C" void dsa_cuda_release(void *p, size_t bytes) {
    (void)bytes;
    if (p) DSA_CUDA_CHECK(cudaFree(p)); /* cudaFree waits for the work that may still use p */
}

extern "C" void dsa_cuda_upload(void *dst, const void *src, size_t bytes) {
    if (!bytes) return;
    cudaStream_t s = dsa_cuda_stream();
    DSA_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, s));
    DSA_CUDA_CHECK(cudaStreamSynchronize(s));
}

extern "C" void dsa_cuda_download(void *dst, const void *src, size_t bytes) {
    if (!bytes) return;
    cudaStream_t s = dsa_cuda_stream();
    DSA_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, s));
    DSA_CUDA_CHECK(cudaStreamSynchronize(s));
}

/* Device to device in stream order. Overlapping ranges (memmove semantics, as the CPU
 * backend) go through the workspace: cudaMemcpy leaves overlap undefined. */
extern "C" void dsa_cuda_copy(void *dst, const void *src, size_t bytes) {
    if (!bytes || dst == src) return;
    cudaStream_t s = dsa_cuda_stream();
    const char *d = (const char *)dst, *c = (const char *)src;
    if (d < c + bytes && c < d + bytes) {
        void *tmp = dsa_cuda_workspace(bytes);
        DSA_CUDA_CHECK(cudaMemcpyAsync(tmp, src, bytes, cudaMemcpyDeviceToDevice, s));
        DSA_CUDA_CHECK(cudaMemcpyAsync(dst, tmp, bytes, cudaMemcpyDeviceToDevice, s));
        return;
    }
    DSA_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, s));
}

extern "C" void dsa_cuda_fill_zero(void *p, size_t bytes) {
    if (bytes) DSA_CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, dsa_cuda_stream()));
}

extern "C" void dsa_cuda_upload_async(void *dst, const void *src, size_t bytes) {
    if (!bytes) return;
    cudaStream_t s = dsa_cuda_copy_stream();
    DSA_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, s));
    /* The copy stream runs in order, so the latest record covers every earlier upload. */
    DSA_CUDA_CHECK(cudaEventRecord(upload_event(), s));
}

extern "C" void dsa_cuda_copy_order(void) {
    cudaEvent_t ev = upload_event(); /* never recorded: complete, the wait is free */
    DSA_CUDA_CHECK(cudaStreamWaitEvent(dsa_cuda_stream(), ev, 0));
    DSA_CUDA_CHECK(cudaEventSynchronize(ev));
}

extern "C" void dsa_cuda_synchronize(void) {
    DSA_CUDA_CHECK(cudaStreamSynchronize(dsa_cuda_copy_stream()));
    DSA_CUDA_CHECK(cudaStreamSynchronize(dsa_cuda_stream()));
}

extern "C" void dsa_cuda_memory_info(size_t *free_bytes, size_t *total_bytes) {
    size_t f = 0, t = 0;
    DSA_CUDA_CHECK(cudaMemGetInfo(&f, &t));
    *free_bytes = f, *total_bytes = t;
}
