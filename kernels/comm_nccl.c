/* comm_nccl.c: the NCCL communicator (kernels/comm.h) of the CUDA backend: device
 * buffers, one CUDA stream, the NCCL unique id created by rank 0 and broadcast over the
 * MPI communicator, and every collective waited for by polling the stream and
 * ncclCommGetAsyncError, so a peer that died or an NCCL error ends the wait: after
 * timeout_s the communicator is aborted (ncclCommAbort) and the error names the
 * collective, the rank and the host.
 *
 * NOTE (uneven pieces): ncclReduceScatter and ncclAllGather take equal counts; the shards
 * of comm.h may differ by one element, so the v-forms are NCCL groups of one ncclReduce
 * (reduce-scatter) or ncclBroadcast (all-gather) per rank, rooted at the rank that owns
 * the piece; all-to-all is a group of ncclSend / ncclRecv pairs.
 * Compiled where the build finds NCCL's headers (DSA_HAVE_NCCL, Makefile); without them
 * dsa_comm_nccl_init refuses by name. Not run in CI (no GPU): bench/RESULTS.md lists it
 * among the paths never run.
 */
#include "kernels/comm.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "core/mem.h"

#ifdef DSA_HAVE_NCCL
#include <time.h>

#include <cuda_runtime_api.h>
#include <nccl.h>

typedef struct {
    DsaComm *mpi; /* not owned: the id broadcast, barrier and abort */
    ncclComm_t nccl;
    cudaStream_t stream;
    int device;
} NcclImpl;

static ncclDataType_t nccl_type(DsaCommType t) {
    switch (t) {
    case DSA_COMM_F32: return ncclFloat32;
    case DSA_COMM_F64: return ncclFloat64;
    case DSA_COMM_U64: return ncclUint64;
    case DSA_COMM_BYTE: return ncclUint8;
    }
    return ncclUint8;
}

static double seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#define NCCL_TRY(c, call, op)                                                                                    \
    do {                                                                                                        \
        ncclResult_t r_ = (call);                                                                               \
        if (r_ != ncclSuccess)                                                                                  \
            DSA_FAIL(DSA_ERR_DEVICE, "%s on rank %d of %d (host %s): %s", op, (c)->rank, (c)->world, (c)->host, \
                     ncclGetErrorString(r_));                                                                   \
    } while (0)

/* Wait for the stream; an asynchronous NCCL error or the timeout aborts the communicator. */
static DsaStatus wait_done(DsaComm *c, const char *op) {
    NcclImpl *n = c->impl;
    const double t0 = seconds();
    for (;;) {
        cudaError_t e = cudaStreamQuery(n->stream);
        if (e == cudaSuccess) return DSA_OK;
        if (e != cudaErrorNotReady)
            DSA_FAIL(DSA_ERR_DEVICE, "%s on rank %d (host %s): CUDA error %s", op, c->rank, c->host,
                     cudaGetErrorString(e));
        ncclResult_t async = ncclSuccess;
        ncclCommGetAsyncError(n->nccl, &async);
        if (async != ncclSuccess) {
            ncclCommAbort(n->nccl);
            n->nccl = NULL;
            DSA_FAIL(DSA_ERR_DEVICE, "%s on rank %d of %d (host %s): NCCL reported %s (a peer rank may have died)", op,
                     c->rank, c->world, c->host, ncclGetErrorString(async));
        }
        if (c->timeout_s > 0 && seconds() - t0 > c->timeout_s) {
            ncclCommAbort(n->nccl);
            n->nccl = NULL;
            DSA_FAIL(DSA_ERR_DEVICE,
                     "%s on rank %d of %d (host %s) waited more than %.0f s for the other ranks (one of them died or "
                     "hangs; --comm-timeout sets the limit)",
                     op, c->rank, c->world, c->host, c->timeout_s);
        }
        struct timespec ts = {0, 100 * 1000};
        nanosleep(&ts, NULL);
    }
}

static DsaStatus nccl_all_reduce(DsaComm *c, void *buf, int64_t count, DsaCommType type) {
    NcclImpl *n = c->impl;
    NCCL_TRY(c, ncclAllReduce(buf, buf, (size_t)count, nccl_type(type), ncclSum, n->nccl, n->stream), "ncclAllReduce");
    return wait_done(c, "ncclAllReduce");
}

/* One rooted call per rank's piece, in one group (see the NOTE above). */
static DsaStatus pieces(DsaComm *c, void *buf, const int64_t *counts, DsaCommType type, bool reduce) {
    NcclImpl *n = c->impl;
    const size_t es = dsa_comm_type_size(type);
    const char *op = reduce ? "ncclReduce (reduce-scatter)" : "ncclBroadcast (all-gather)";
    NCCL_TRY(c, ncclGroupStart(), op);
    size_t off = 0;
    for (int r = 0; r < c->world; r++) {
        char *p = (char *)buf + off * es;
        ncclResult_t res = reduce ? ncclReduce(p, p, (size_t)counts[r], nccl_type(type), ncclSum, r, n->nccl, n->stream)
                                  : ncclBroadcast(p, p, (size_t)counts[r], nccl_type(type), r, n->nccl, n->stream);
        if (res != ncclSuccess) {
            ncclGroupEnd();
            NCCL_TRY(c, res, op);
        }
        off += (size_t)counts[r];
    }
    NCCL_TRY(c, ncclGroupEnd(), op);
    return wait_done(c, op);
}

static DsaStatus nccl_reduce_scatter(DsaComm *c, void *buf, const int64_t *counts, DsaCommType type) {
    return pieces(c, buf, counts, type, true);
}

static DsaStatus nccl_all_gather(DsaComm *c, void *buf, const int64_t *counts, DsaCommType type) {
    return pieces(c, buf, counts, type, false);
}

static DsaStatus nccl_broadcast(DsaComm *c, void *buf, int64_t count, DsaCommType type, int root) {
    NcclImpl *n = c->impl;
    NCCL_TRY(c, ncclBroadcast(buf, buf, (size_t)count, nccl_type(type), root, n->nccl, n->stream), "ncclBroadcast");
    return wait_done(c, "ncclBroadcast");
}

static DsaStatus nccl_all_to_all(DsaComm *c, const void *send, void *recv, int64_t count, DsaCommType type) {
    NcclImpl *n = c->impl;
    const size_t bytes = (size_t)count * dsa_comm_type_size(type);
    NCCL_TRY(c, ncclGroupStart(), "ncclSend/ncclRecv (all-to-all)");
    for (int r = 0; r < c->world; r++) {
        ncclResult_t a = ncclSend((const char *)send + (size_t)r * bytes, (size_t)count, nccl_type(type), r, n->nccl,
                                  n->stream);
        ncclResult_t b = a == ncclSuccess ? ncclRecv((char *)recv + (size_t)r * bytes, (size_t)count, nccl_type(type),
                                                     r, n->nccl, n->stream)
                                          : a;
        if (b != ncclSuccess) {
            ncclGroupEnd();
            NCCL_TRY(c, b, "ncclSend/ncclRecv (all-to-all)");
        }
    }
    NCCL_TRY(c, ncclGroupEnd(), "ncclSend/ncclRecv (all-to-all)");
    return wait_done(c, "ncclSend/ncclRecv (all-to-all)");
}

static DsaStatus nccl_barrier(DsaComm *c) {
    NcclImpl *n = c->impl;
    DSA_TRY(wait_done(c, "barrier (stream)"));
    return n->mpi->ops->barrier(n->mpi);
}

static void nccl_abort(DsaComm *c, int code) {
    NcclImpl *n = c->impl;
    if (n->nccl) ncclCommAbort(n->nccl);
    n->nccl = NULL;
    n->mpi->ops->abort(n->mpi, code);
}

static void nccl_free(DsaComm *c) {
    NcclImpl *n = c->impl;
    if (n->nccl) ncclCommDestroy(n->nccl);
    if (n->stream) cudaStreamDestroy(n->stream);
    dsa_free(n, sizeof *n);
    dsa_free(c, sizeof *c);
}

static const DsaCommOps NCCL_OPS = {
    .all_reduce_sum = nccl_all_reduce,
    .reduce_scatter_sum = nccl_reduce_scatter,
    .all_gather = nccl_all_gather,
    .broadcast = nccl_broadcast,
    .all_to_all = nccl_all_to_all,
    .barrier = nccl_barrier,
    .abort = nccl_abort,
    .free = nccl_free,
};

DsaStatus dsa_comm_nccl_init(DsaComm **out, DsaComm *mpi, int device) {
    *out = NULL;
    DsaComm *c = dsa_calloc(1, sizeof *c);
    NcclImpl *n = dsa_calloc(1, sizeof *n);
    DsaStatus st = DSA_OK;
    if (!c || !n) DSA_FAIL_GOTO(st, fail, DSA_ERR_NOMEM, "NCCL communicator");
    *c = *mpi;
    c->ops = &NCCL_OPS;
    c->kind = "nccl";
    c->impl = n;
    n->mpi = mpi;
    n->device = device;
    cudaError_t ce = cudaSetDevice(device);
    if (ce == cudaSuccess) ce = cudaStreamCreateWithFlags(&n->stream, cudaStreamNonBlocking);
    if (ce != cudaSuccess)
        DSA_FAIL_GOTO(st, fail, DSA_ERR_DEVICE, "rank %d (host %s): CUDA device %d (the local rank): %s", c->rank,
                      c->host, device, cudaGetErrorString(ce));
    ncclUniqueId id;
    memset(&id, 0, sizeof id);
    if (c->rank == 0) {
        ncclResult_t r = ncclGetUniqueId(&id);
        if (r != ncclSuccess)
            DSA_FAIL_GOTO(st, fail, DSA_ERR_DEVICE, "ncclGetUniqueId on rank 0 (host %s): %s", c->host,
                          ncclGetErrorString(r));
    }
    DSA_TRY_GOTO(st, mpi->ops->broadcast(mpi, &id, (int64_t)sizeof id, DSA_COMM_BYTE, 0), fail);
    ncclResult_t r = ncclCommInitRank(&n->nccl, c->world, id, c->rank);
    if (r != ncclSuccess)
        DSA_FAIL_GOTO(st, fail, DSA_ERR_DEVICE, "ncclCommInitRank on rank %d of %d (host %s, device %d): %s", c->rank,
                      c->world, c->host, device, ncclGetErrorString(r));
    *out = c;
    return DSA_OK;
fail:
    if (n && n->stream) cudaStreamDestroy(n->stream);
    dsa_free(n, sizeof *n);
    dsa_free(c, sizeof *c);
    return st;
}

/* Values are small integers, so every sum is exact in fp32 whatever the order. */
static DsaStatus selftest_run(DsaComm *c, float *dev, float *host, int64_t n) {
    const int W = c->world, R = c->rank;
    const size_t bytes = (size_t)n * sizeof(float);
    int64_t *counts = dsa_calloc((size_t)W, sizeof *counts);
    if (!counts) DSA_FAIL(DSA_ERR_NOMEM, "selftest counts");
    DsaStatus st = DSA_OK;
    for (int r = 0; r < W; r++) { /* uneven pieces: the last rank gets the remainder */
        int64_t lo, hi;
        dsa_comm_split(n, W, r, &lo, &hi);
        counts[r] = hi - lo;
    }
#define UP() (cudaMemcpy(dev, host, bytes, cudaMemcpyHostToDevice) == cudaSuccess)
#define DOWN() (cudaMemcpy(host, dev, bytes, cudaMemcpyDeviceToHost) == cudaSuccess)
#define EXPECT(cond, what)                                                                                          \
    do {                                                                                                            \
        if (!(cond)) DSA_FAIL_GOTO(st, out, DSA_ERR_DEVICE, "NCCL selftest on rank %d: %s is wrong", R, what); \
    } while (0)
    for (int64_t i = 0; i < n; i++) host[i] = (float)(i + R);
    EXPECT(UP(), "copy to the device");
    DSA_TRY_GOTO(st, c->ops->all_reduce_sum(c, dev, n, DSA_COMM_F32), out);
    EXPECT(DOWN(), "copy to the host");
    for (int64_t i = 0; i < n; i++) EXPECT(host[i] == (float)(W * i + W * (W - 1) / 2), "all-reduce");
    for (int64_t i = 0; i < n; i++) host[i] = (float)(i + R);
    EXPECT(UP(), "copy to the device");
    DSA_TRY_GOTO(st, c->ops->reduce_scatter_sum(c, dev, counts, DSA_COMM_F32), out);
    DSA_TRY_GOTO(st, c->ops->all_gather(c, dev, counts, DSA_COMM_F32), out);
    EXPECT(DOWN(), "copy to the host");
    for (int64_t i = 0; i < n; i++) EXPECT(host[i] == (float)(W * i + W * (W - 1) / 2), "reduce-scatter + all-gather");
    for (int64_t i = 0; i < n; i++) host[i] = (float)(R == 0 ? 7 * i : -1);
    EXPECT(UP(), "copy to the device");
    DSA_TRY_GOTO(st, c->ops->broadcast(c, dev, n, DSA_COMM_F32, 0), out);
    EXPECT(DOWN(), "copy to the host");
    for (int64_t i = 0; i < n; i++) EXPECT(host[i] == (float)(7 * i), "broadcast");
    const int64_t per = n / (2 * W); /* send block q holds 100 R + q; recv block q must hold 100 q + R */
    for (int64_t i = 0; i < per * W; i++) host[i] = (float)(100 * R + i / per);
    EXPECT(UP(), "copy to the device");
    DSA_TRY_GOTO(st, c->ops->all_to_all(c, dev, dev + per * W, per, DSA_COMM_F32), out);
    EXPECT(DOWN(), "copy to the host");
    for (int64_t i = 0; i < per * W; i++) EXPECT(host[per * W + i] == (float)(100 * (i / per) + R), "all-to-all");
    DSA_TRY_GOTO(st, c->ops->barrier(c), out);
#undef UP
#undef DOWN
#undef EXPECT
out:
    dsa_free(counts, (size_t)W * sizeof *counts);
    return st;
}

DsaStatus dsa_comm_nccl_selftest(DsaComm *host, int device) {
    DsaComm *c = NULL;
    DSA_TRY(dsa_comm_nccl_init(&c, host, device));
    const int64_t n = 1000 * (int64_t)host->world + 3;
    float *dev = NULL, *buf = dsa_calloc((size_t)n, sizeof(float));
    DsaStatus st = DSA_OK;
    if (!buf || cudaMalloc((void **)&dev, (size_t)n * sizeof(float)) != cudaSuccess)
        DSA_FAIL_GOTO(st, out, DSA_ERR_NOMEM, "NCCL selftest buffers of %lld floats", (long long)n);
    st = selftest_run(c, dev, buf, n);
out:
    if (dev) cudaFree(dev);
    dsa_free(buf, (size_t)n * sizeof(float));
    c->ops->free(c);
    return st;
}

#else

DsaStatus dsa_comm_nccl_selftest(DsaComm *host, int device) { return dsa_comm_nccl_init(&(DsaComm *){NULL}, host, device); }

DsaStatus dsa_comm_nccl_init(DsaComm **out, DsaComm *mpi, int device) {
    *out = NULL;
    DSA_FAIL(DSA_ERR_CONFIG,
             "rank %d (host %s), device %d: this build has no NCCL (its headers were not found, or CUDA=0): rebuild "
             "where nccl.h is installed",
             mpi->rank, mpi->host, device);
}

#endif
