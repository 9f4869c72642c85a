/* comm.c: the communicator's common part (comm.h): the choice of implementation, the
 * local (world 1) one, the config check across ranks and the even split. */
#include "kernels/comm.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/mem.h"

size_t dsa_comm_type_size(DsaCommType type) {
    switch (type) {
    case DSA_COMM_F32: return 4;
    case DSA_COMM_F64: return 8;
    case DSA_COMM_U64: return 8;
    case DSA_COMM_BYTE: return 1;
    }
    return 1;
}

void dsa_comm_split(int64_t n, int world, int rank, int64_t *lo, int64_t *hi) {
    const int64_t base = n / world, extra = n % world;
    *lo = (int64_t)rank * base + (rank < extra ? rank : extra);
    *hi = *lo + base + (rank < extra ? 1 : 0);
}

/* ---- local: world 1, every collective is the identity --------------------------- */

static DsaStatus local_all_reduce(DsaComm *c, void *buf, int64_t count, DsaCommType type) { return DSA_OK; }
static DsaStatus local_reduce_scatter(DsaComm *c, void *buf, const int64_t *counts, DsaCommType type) { return DSA_OK; }
static DsaStatus local_all_gather(DsaComm *c, void *buf, const int64_t *counts, DsaCommType type) { return DSA_OK; }
static DsaStatus local_broadcast(DsaComm *c, void *buf, int64_t count, DsaCommType type, int root) { return DSA_OK; }
static DsaStatus local_all_to_all(DsaComm *c, const void *send, void *recv, int64_t count, DsaCommType type) {
    if (send != recv) memmove(recv, send, (size_t)count * dsa_comm_type_size(type));
    return DSA_OK;
}
static DsaStatus local_barrier(DsaComm *c) { return DSA_OK; }
static void local_abort(DsaComm *c, int code) { _exit(code); }
static void local_free(DsaComm *c) { dsa_free(c, sizeof *c); }

static const DsaCommOps LOCAL_OPS = {
    .all_reduce_sum = local_all_reduce,
    .reduce_scatter_sum = local_reduce_scatter,
    .all_gather = local_all_gather,
    .broadcast = local_broadcast,
    .all_to_all = local_all_to_all,
    .barrier = local_barrier,
    .abort = local_abort,
    .free = local_free,
};

DsaStatus dsa_comm_init_local(DsaComm **out) {
    DsaComm *c = dsa_calloc(1, sizeof *c);
    if (!c) DSA_FAIL(DSA_ERR_NOMEM, "communicator");
    c->ops = &LOCAL_OPS;
    c->kind = "local";
    c->world = c->local_world = 1;
    if (gethostname(c->host, sizeof c->host - 1) != 0) snprintf(c->host, sizeof c->host, "unknown");
    *out = c;
    return DSA_OK;
}

/* Started by a launcher: mpirun (Open MPI, or PMIx-based ones), MPICH's hydra, srun. */
static bool launched_by_mpi(void) {
    static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE", "SLURM_STEP_ID"};
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++)
        if (getenv(vars[i])) return true;
    return false;
}

DsaStatus dsa_comm_init(DsaComm **out, int *argc, char ***argv, double timeout_s) {
    *out = NULL;
    if (!launched_by_mpi()) return dsa_comm_init_local(out);
    return dsa_comm_mpi_init(out, argc, argv, timeout_s);
}

void dsa_comm_free(DsaComm *c) {
    if (c) c->ops->free(c);
}

void dsa_comm_abort(DsaComm *c, int code, const char *message) {
    fprintf(stderr, "dsa: rank %d of %d (host %s) failed: %s\n", c->rank, c->world, c->host, message);
    fflush(stderr);
    c->ops->abort(c, code);
}

DsaStatus dsa_comm_check_same(DsaComm *c, uint64_t value, const char *what) {
    if (c->world == 1) return DSA_OK;
    const size_t n = (size_t)c->world;
    uint64_t *all = dsa_calloc(n, sizeof *all);
    int64_t *counts = dsa_calloc(n, sizeof *counts);
    DsaStatus st = DSA_OK;
    if (!all || !counts) DSA_FAIL_GOTO(st, out, DSA_ERR_NOMEM, "%s check of %zu ranks", what, n);
    for (size_t r = 0; r < n; r++) counts[r] = 1;
    all[c->rank] = value;
    DSA_TRY_GOTO(st, c->ops->all_gather(c, all, counts, DSA_COMM_U64), out);
    char list[512] = "";
    size_t len = 0;
    int bad = 0;
    for (size_t r = 1; r < n; r++) {
        if (all[r] == all[0]) continue;
        if (bad++ < 16 && len < sizeof list - 32)
            len += (size_t)snprintf(list + len, sizeof list - len, "%s%zu (%016" PRIx64 ")", len ? ", " : "", r, all[r]);
    }
    if (bad)
        DSA_FAIL_GOTO(st, out, DSA_ERR_CONFIG,
                      "%s differs across ranks: rank 0 has %016" PRIx64 ", rank(s) %s%s differ; start every rank with "
                      "the same binary, config and --set overrides",
                      what, all[0], list, bad > 16 ? " ..." : "");
out:
    dsa_free(all, n * sizeof *all);
    dsa_free(counts, n * sizeof *counts);
    return st;
}
