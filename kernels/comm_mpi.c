/* comm_mpi.c: the MPI communicator (comm.h) for the CPU backend: host buffers, MPI's
 * own collectives on MPI_COMM_WORLD with MPI_ERRORS_RETURN, and a watchdog thread that
 * ends the job when one collective waits longer than timeout_s.
 *
 * NOTE (in place): MPI_Reduce_scatter with MPI_IN_PLACE leaves the rank's piece at the
 * start of the buffer; it is moved to the piece's own offset so that every collective of
 * comm.h works on the one flat layout. Counts above INT_MAX are sent in chunks (all-reduce,
 * broadcast) or refused by name (the v-collectives take int counts).
 * NOTE (watchdog): MPI is initialized with MPI_THREAD_MULTIPLE when the library offers it,
 * so the watchdog may call MPI_Abort while the main thread waits in a collective; with
 * less it prints the same message and _exit()s, and the launcher (mpirun, srun) ends the
 * other ranks when it sees one exit without MPI_Finalize.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <mpi.h>

#include "core/log.h"
#include "core/mem.h"
#include "kernels/comm.h"

typedef struct {
    MPI_Comm world;
    bool threads_multiple;
    pthread_t watchdog;
    bool watchdog_running;
    atomic_bool stop;
    _Atomic int64_t since_ns; /* start of the collective in progress (0: none) */
    const char *_Atomic op;   /* its name */
} MpiImpl;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static MPI_Datatype mpi_type(DsaCommType t) {
    switch (t) {
    case DSA_COMM_F32: return MPI_FLOAT;
    case DSA_COMM_F64: return MPI_DOUBLE;
    case DSA_COMM_U64: return MPI_UINT64_T;
    case DSA_COMM_BYTE: return MPI_BYTE;
    }
    return MPI_BYTE;
}

/* An MPI return code as a DsaStatus naming the collective and MPI's reason. */
static DsaStatus mpi_check(DsaComm *c, int rc, const char *op) {
    MpiImpl *m = c->impl;
    atomic_store(&m->since_ns, 0);
    if (rc == MPI_SUCCESS) return DSA_OK;
    char text[MPI_MAX_ERROR_STRING] = "";
    int len = 0;
    MPI_Error_string(rc, text, &len);
    DSA_FAIL(DSA_ERR_DEVICE, "%s failed on rank %d of %d (host %s): %s (a peer rank may have died)", op, c->rank,
             c->world, c->host, text);
}

static void enter(DsaComm *c, const char *op) {
    MpiImpl *m = c->impl;
    atomic_store(&m->op, op);
    atomic_store(&m->since_ns, now_ns());
}

static int *int_counts(DsaComm *c, const int64_t *counts, int **displs, const char *op, DsaStatus *st) {
    const size_t n = (size_t)c->world;
    int *cnt = dsa_calloc(2 * n, sizeof(int));
    *st = DSA_OK;
    if (!cnt) {
        *st = dsa_error_set(DSA_ERR_NOMEM, __FILE__, __LINE__, "%s: counts of %zu ranks", op, n);
        return NULL;
    }
    int64_t off = 0;
    for (size_t r = 0; r < n; r++) {
        if (counts[r] > INT_MAX || off > INT_MAX) {
            dsa_free(cnt, 2 * n * sizeof(int));
            *st = dsa_error_set(DSA_ERR_RANGE, __FILE__, __LINE__,
                                "%s: %lld elements at offset %lld exceed MPI's int counts (split into smaller buckets)",
                                op, (long long)counts[r], (long long)off);
            return NULL;
        }
        cnt[r] = (int)counts[r];
        cnt[n + r] = (int)off;
        off += counts[r];
    }
    *displs = cnt + n;
    return cnt;
}

enum { CHUNK = 1 << 28 };

static DsaStatus mpi_all_reduce(DsaComm *c, void *buf, int64_t count, DsaCommType type) {
    MpiImpl *m = c->impl;
    const size_t es = dsa_comm_type_size(type);
    for (int64_t done = 0; done < count; done += CHUNK) {
        int n = (int)(count - done < CHUNK ? count - done : CHUNK);
        enter(c, "MPI_Allreduce");
        DSA_TRY(mpi_check(c, MPI_Allreduce(MPI_IN_PLACE, (char *)buf + (size_t)done * es, n, mpi_type(type), MPI_SUM,
                                           m->world),
                          "MPI_Allreduce"));
    }
    return DSA_OK;
}

static DsaStatus mpi_reduce_scatter(DsaComm *c, void *buf, const int64_t *counts, DsaCommType type) {
    MpiImpl *m = c->impl;
    int *displs = NULL;
    DsaStatus st;
    int *cnt = int_counts(c, counts, &displs, "MPI_Reduce_scatter", &st);
    if (!cnt) return st;
    enter(c, "MPI_Reduce_scatter");
    st = mpi_check(c, MPI_Reduce_scatter(MPI_IN_PLACE, buf, cnt, mpi_type(type), MPI_SUM, m->world),
                   "MPI_Reduce_scatter");
    const size_t es = dsa_comm_type_size(type);
    if (st == DSA_OK && displs[c->rank] > 0)
        memmove((char *)buf + (size_t)displs[c->rank] * es, buf, (size_t)cnt[c->rank] * es);
    dsa_free(cnt, 2 * (size_t)c->world * sizeof(int));
    return st;
}

static DsaStatus mpi_all_gather(DsaComm *c, void *buf, const int64_t *counts, DsaCommType type) {
    MpiImpl *m = c->impl;
    int *displs = NULL;
    DsaStatus st;
    int *cnt = int_counts(c, counts, &displs, "MPI_Allgatherv", &st);
    if (!cnt) return st;
    enter(c, "MPI_Allgatherv");
    st = mpi_check(c, MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf, cnt, displs, mpi_type(type), m->world),
                   "MPI_Allgatherv");
    dsa_free(cnt, 2 * (size_t)c->world * sizeof(int));
    return st;
}

static DsaStatus mpi_broadcast(DsaComm *c, void *buf, int64_t count, DsaCommType type, int root) {
    MpiImpl *m = c->impl;
    const size_t es = dsa_comm_type_size(type);
    for (int64_t done = 0; done < count; done += CHUNK) {
        int n = (int)(count - done < CHUNK ? count - done : CHUNK);
        enter(c, "MPI_Bcast");
        DSA_TRY(mpi_check(c, MPI_Bcast((char *)buf + (size_t)done * es, n, mpi_type(type), root, m->world),
                          "MPI_Bcast"));
    }
    return DSA_OK;
}

static DsaStatus mpi_all_to_all(DsaComm *c, const void *send, void *recv, int64_t count, DsaCommType type) {
    MpiImpl *m = c->impl;
    if (count > INT_MAX)
        DSA_FAIL(DSA_ERR_RANGE, "MPI_Alltoall: %lld elements per rank exceed MPI's int counts", (long long)count);
    enter(c, "MPI_Alltoall");
    return mpi_check(c, MPI_Alltoall(send, (int)count, mpi_type(type), recv, (int)count, mpi_type(type), m->world),
                     "MPI_Alltoall");
}

static DsaStatus mpi_barrier(DsaComm *c) {
    MpiImpl *m = c->impl;
    enter(c, "MPI_Barrier");
    return mpi_check(c, MPI_Barrier(m->world), "MPI_Barrier");
}

static void mpi_abort(DsaComm *c, int code) {
    MPI_Abort(MPI_COMM_WORLD, code);
    _exit(code);
}

static void *watchdog_main(void *arg) {
    DsaComm *c = arg;
    MpiImpl *m = c->impl;
    const int64_t limit = (int64_t)(c->timeout_s * 1e9);
    while (!atomic_load(&m->stop)) {
        struct timespec ts = {0, 200 * 1000 * 1000};
        nanosleep(&ts, NULL);
        int64_t since = atomic_load(&m->since_ns);
        if (since && now_ns() - since > limit) {
            char msg[256];
            snprintf(msg, sizeof msg,
                     "%s waited more than %.0f s for the other ranks (one of them died or hangs; "
                     "--comm-timeout sets the limit)",
                     atomic_load(&m->op), c->timeout_s);
            fprintf(stderr, "dsa: rank %d of %d (host %s) failed: %s\n", c->rank, c->world, c->host, msg);
            fflush(stderr);
            if (m->threads_multiple) MPI_Abort(MPI_COMM_WORLD, 3);
            _exit(3);
        }
    }
    return NULL;
}

static void mpi_free(DsaComm *c) {
    MpiImpl *m = c->impl;
    if (m->watchdog_running) {
        atomic_store(&m->stop, true);
        pthread_join(m->watchdog, NULL);
    }
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Finalize();
    dsa_free(m, sizeof *m);
    dsa_free(c, sizeof *c);
}

static const DsaCommOps MPI_OPS = {
    .all_reduce_sum = mpi_all_reduce,
    .reduce_scatter_sum = mpi_reduce_scatter,
    .all_gather = mpi_all_gather,
    .broadcast = mpi_broadcast,
    .all_to_all = mpi_all_to_all,
    .barrier = mpi_barrier,
    .abort = mpi_abort,
    .free = mpi_free,
};

DsaStatus dsa_comm_mpi_init(DsaComm **out, int *argc, char ***argv, double timeout_s) {
    *out = NULL;
    int provided = 0, rc = MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided);
    if (rc != MPI_SUCCESS) DSA_FAIL(DSA_ERR_DEVICE, "MPI_Init_thread failed (code %d)", rc);
    DsaComm *c = dsa_calloc(1, sizeof *c);
    MpiImpl *m = dsa_calloc(1, sizeof *m);
    if (!c || !m) {
        dsa_free(c, sizeof *c);
        dsa_free(m, sizeof *m);
        MPI_Finalize();
        DSA_FAIL(DSA_ERR_NOMEM, "MPI communicator");
    }
    c->ops = &MPI_OPS;
    c->kind = "mpi";
    c->impl = m;
    c->timeout_s = timeout_s;
    m->world = MPI_COMM_WORLD;
    m->threads_multiple = provided >= MPI_THREAD_MULTIPLE;
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &c->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &c->world);
    int len = 0;
    char name[MPI_MAX_PROCESSOR_NAME] = "";
    MPI_Get_processor_name(name, &len);
    snprintf(c->host, sizeof c->host, "%.63s", name[0] ? name : "unknown");
    MPI_Comm node;
    if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, c->rank, MPI_INFO_NULL, &node) == MPI_SUCCESS) {
        MPI_Comm_rank(node, &c->local_rank);
        MPI_Comm_size(node, &c->local_world);
        MPI_Comm_free(&node);
    } else {
        c->local_rank = 0, c->local_world = 1;
    }
    if (timeout_s > 0 && c->world > 1) {
        if (pthread_create(&m->watchdog, NULL, watchdog_main, c) != 0) {
            mpi_free(c);
            DSA_FAIL(DSA_ERR_DEVICE, "cannot start the collective watchdog thread: %s", strerror(errno));
        }
        m->watchdog_running = true;
    }
    *out = c;
    return DSA_OK;
}
