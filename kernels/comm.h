/* comm.h: the communicator of a multi-rank run (DESIGN.md, "Distribution"): who this
 * process is (rank, world, local rank, host) and the collectives the trainer uses, behind
 * one table with three implementations:
 *   local  world 1, no library: every collective is the identity (dsa train started
 *          without a launcher; the bits are those of a single process);
 *   mpi    MPI collectives on host buffers (comm_mpi.c; the CPU backend, and CI);
 *   nccl   NCCL collectives on device buffers, the unique id broadcast over MPI
 *          (comm_nccl.c; the CUDA backend; compiled where NCCL's headers are found).
 *
 * Determinism: every collective is called in the same order with the same counts on
 * every rank (the trainer's fixed bucket order), and a sum is formed in an order that
 * depends only on the world size and the counts, never on timing (MPI's reduction
 * algorithms are chosen by size and process count; NCCL's by the topology), so the same
 * world size and inputs give the same bits run to run.
 *
 * Failures (STYLE.md rule 7): the MPI error handler is MPI_ERRORS_RETURN, so a failed
 * collective returns DSA_ERR_DEVICE with the MPI error string; a watchdog thread ends the
 * whole job (dsa_comm_abort) when one collective has waited longer than timeout_s, which
 * is how a rank never hangs after a peer died without its launcher noticing.
 * dsa_comm_abort prints "rank R (host H) ...: cause" on stderr and takes every rank down.
 */
#ifndef DSA_KERNELS_COMM_H
#define DSA_KERNELS_COMM_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

typedef enum { DSA_COMM_F32 = 0, DSA_COMM_F64, DSA_COMM_U64, DSA_COMM_BYTE } DsaCommType;

typedef struct DsaComm DsaComm;

/* The collectives. Counts are elements of `type`; buffers are host memory for local and
 * mpi, device memory for nccl. Each returns DSA_OK or an error naming the collective. */
typedef struct {
    /* sum over ranks, in place: buf (count) */
    DsaStatus (*all_reduce_sum)(DsaComm *c, void *buf, int64_t count, DsaCommType type);
    /* sum over ranks of buf (Σ counts), rank r keeps its piece, counts[r] elements starting
     * at Σ_{q<r} counts[q], in place (the other pieces of buf are left undefined) */
    DsaStatus (*reduce_scatter_sum)(DsaComm *c, void *buf, const int64_t *counts, DsaCommType type);
    /* rank r's piece (counts[r] elements at Σ_{q<r} counts[q]) to every rank, in place */
    DsaStatus (*all_gather)(DsaComm *c, void *buf, const int64_t *counts, DsaCommType type);
    DsaStatus (*broadcast)(DsaComm *c, void *buf, int64_t count, DsaCommType type, int root);
    /* send (world · count): block q goes to rank q; recv (world · count): block q from rank q */
    DsaStatus (*all_to_all)(DsaComm *c, const void *send, void *recv, int64_t count, DsaCommType type);
    DsaStatus (*barrier)(DsaComm *c);
    /* end every rank of the job with exit code `code` (never returns) */
    void (*abort)(DsaComm *c, int code);
    void (*free)(DsaComm *c);
} DsaCommOps;

struct DsaComm {
    const DsaCommOps *ops;
    const char *kind;  /* "local", "mpi", "nccl" */
    int rank, world;   /* in the job */
    int local_rank, local_world; /* among the ranks of this host (device = local rank) */
    char host[64];
    double timeout_s;  /* watchdog: the longest a collective may wait (0: no watchdog) */
    void *impl;        /* the implementation's state */
};

/* The communicator of this process: mpi when a launcher started it (mpirun or srun:
 * OMPI_COMM_WORLD_SIZE, PMIX_RANK, PMI_RANK or SLURM_STEP_ID in the environment, read
 * once here), else local (world 1, no MPI_Init). `argc`/`argv` go to MPI_Init. Errors
 * (DSA_ERR_DEVICE) say what failed. Free with dsa_comm_free, which finalizes MPI. */
DsaStatus dsa_comm_init(DsaComm **out, int *argc, char ***argv, double timeout_s);
/* The local communicator alone (world 1): for library callers and tests. */
DsaStatus dsa_comm_init_local(DsaComm **out);
void dsa_comm_free(DsaComm *c);

/* Print "dsa: rank R of W (host H) failed: <message>" on stderr and end the job. */
void dsa_comm_abort(DsaComm *c, int code, const char *message);

/* Every rank's value of `value` must be equal: otherwise DSA_ERR_CONFIG naming `what`
 * and the ranks whose value differs from rank 0's (collective). */
DsaStatus dsa_comm_check_same(DsaComm *c, uint64_t value, const char *what);

/* An even split of n elements over `world` ranks: rank r owns [lo, hi) with the first
 * n mod world ranks holding one more. */
void dsa_comm_split(int64_t n, int world, int rank, int64_t *lo, int64_t *hi);

/* Element size of a DsaCommType. */
size_t dsa_comm_type_size(DsaCommType type);

/* Implementations (comm_mpi.c, comm_nccl.c). */
DsaStatus dsa_comm_mpi_init(DsaComm **out, int *argc, char ***argv, double timeout_s);
/* NCCL over the ranks of `mpi` (an "mpi" communicator, not owned, kept for the id
 * broadcast and the abort), on CUDA device `device`. DSA_ERR_CONFIG in a build without NCCL. */
DsaStatus dsa_comm_nccl_init(DsaComm **out, DsaComm *mpi, int device);
/* The GPU check of comm_nccl.c: an NCCL communicator over the ranks of `host` (any
 * communicator: local at world 1) on `device`, every collective on small device buffers,
 * the results checked exactly (integers in fp32). DSA_ERR_CONFIG without NCCL. */
DsaStatus dsa_comm_nccl_selftest(DsaComm *host, int device);

#endif
