/* cuda_ops.h: the CUDA backend's entry points, callable from C (extern "C" in the .cu
 * files). Every dsa_cuda_<op> has exactly the signature and contract of the DsaBackend
 * field <op> (kernels/backend.h) or DsaIndexerOps field (kernels/indexer_ops.h), on
 * device memory, and is tested against its CPU twin (dsa_cpu_<op>, the indexer's CPU
 * table). Only the registries (kernels/backend_registry.c, indexer/ops.c) and tests use
 * this header, under DSA_HAVE_CUDA.
 */
#ifndef DSA_KERNELS_CUDA_CUDA_OPS_H
#define DSA_KERNELS_CUDA_CUDA_OPS_H

#include "kernels/backend.h"
#include "kernels/indexer_ops.h"

/* The CUDA backend's table, or NULL with why[] filled when no usable device is present. */
const DsaBackend *dsa_backend_cuda(char *why, size_t why_cap);
/* The CUDA backend's indexer table. */
const DsaIndexerOps *dsa_indexer_ops_cuda(void);

#endif
