/* indexer_ops.cu: the CUDA backend's indexer table (kernels/indexer_ops.h), looked up by
 * indexer/ops.c's dsa_indexer_ops_get for the backend named "cuda". The entries are
 * kernels/cuda/indexer.cu (forward, backward, DSA-SPEC §5, §7), indexer_topk.cu (§5.4)
 * and the KL passes of indexer_kl*.cu (§6, §8).
 */
#include "kernels/cuda/common.cuh"

extern "C" {
#include "kernels/cuda/cuda_ops.h"
}

/* Positional (C++17 has no designated initializers): the field order of DsaIndexerOps. */
static const DsaIndexerOps cuda_indexer_ops = {
    "cuda",                   /* name */
    dsa_cuda_indexer_forward, /* forward */
    dsa_cuda_indexer_topk,    /* topk */
    dsa_cuda_indexer_kl_dense,      /* kl_dense */
    dsa_cuda_indexer_kl_sparse,     /* kl_sparse */
    dsa_cuda_indexer_sparse_recall, /* sparse_recall */
    dsa_cuda_indexer_backward, /* backward */
};

extern "C" const DsaIndexerOps *dsa_indexer_ops_cuda(void) { return &cuda_indexer_ops; }
