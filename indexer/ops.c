/* ops.c: the indexer's op table (kernels/indexer_ops.h) of the CPU reference backend, and
 * the lookup of a backend's table by name: the registry of indexer entries (DESIGN.md,
 * Backends). The CPU entries are the functions of indexer.h, unchanged; the sim entries
 * (ops_sim.c) wrap them for the simulated device; the CUDA table is
 * kernels/cuda/indexer_ops.cu's, where built.
 */
#include <string.h>

#include "indexer/indexer.h"
#ifdef DSA_HAVE_CUDA
#include "kernels/cuda/cuda_ops.h"
#endif

static const DsaIndexerOps cpu_indexer_ops = {
    .name = "cpu",
    .forward = dsa_indexer_forward,
    .topk = dsa_indexer_topk,
    .kl_dense = dsa_indexer_kl_dense,
    .kl_sparse = dsa_indexer_kl_sparse,
    .sparse_recall = dsa_indexer_sparse_recall,
    .backward = dsa_indexer_backward,
};

const DsaIndexerOps *dsa_indexer_ops_cpu(void) { return &cpu_indexer_ops; }

DsaStatus dsa_indexer_ops_get(const DsaBackend *be, const DsaIndexerOps **out) {
    DSA_ASSERT(be && out);
    *out = NULL;
    if (!strcmp(be->name, "cpu")) {
        *out = &cpu_indexer_ops;
        return DSA_OK;
    }
    if (!strcmp(be->name, "sim")) {
        *out = dsa_indexer_ops_sim();
        return DSA_OK;
    }
#ifdef DSA_HAVE_CUDA /* the registry: the one place a backend's #ifdef may live (DESIGN.md) */
    if (!strcmp(be->name, "cuda")) {
        *out = dsa_indexer_ops_cuda();
        return DSA_OK;
    }
#endif
    DSA_FAIL(DSA_ERR_DEVICE, "backend \"%s\" has no indexer entries", be->name);
}
