/* emu_ops.cpp (host emulation): the KL entries of the CUDA indexer table, compiled for the host
 * from kernels/cuda/indexer_kl*.cu, for tests/test_cuda_kl.c built with TEST_CUDA_KL_HOST_EMU. */
extern "C" {
#include "kernels/cuda/cuda_ops.h"
extern const DsaIndexerOps dsa_host_emu_indexer_ops;
const DsaIndexerOps dsa_host_emu_indexer_ops = {
    "cuda (host emulation)", nullptr, nullptr, dsa_cuda_indexer_kl_dense, dsa_cuda_indexer_kl_sparse,
    dsa_cuda_indexer_sparse_recall, nullptr};
}
