/* backend_cpu.c: the CPU reference backend's table and its thread control
 * (kernels/backend.h; the lookup by name is kernels/backend_registry.c).
 *
 * The table holds the dsa_cpu_* ops of kernels/cpu/ops.h (the executable form of the
 * DSA-SPEC §4 math the CUDA backend is tested against). Threads: one count for our
 * OpenMP loops and for OpenBLAS (the OpenMP build shares libgomp's pool, see Makefile);
 * 0 means every core the process may use.
 */
#include <cblas.h>
#include <omp.h>

#include "kernels/cpu/ops.h"

static const DsaBackend cpu_backend = {
    .name = "cpu",
    .alloc = dsa_cpu_alloc,
    .release = dsa_cpu_release,
    .upload = dsa_cpu_copy,
    .download = dsa_cpu_copy,
    .copy = dsa_cpu_copy,
    .fill_zero = dsa_cpu_fill_zero,
    .upload_async = dsa_cpu_copy,
    .copy_order = dsa_cpu_no_wait,
    .synchronize = dsa_cpu_no_wait,
    .memory_info = dsa_cpu_memory_info,
    .host_memory = true,
    .moe = &dsa_cpu_moe_ops,
    .linear_forward = dsa_cpu_linear_forward,
    .linear_backward = dsa_cpu_linear_backward,
    .linear_forward_bf16 = dsa_cpu_linear_forward_bf16,
    .linear_backward_bf16 = dsa_cpu_linear_backward_bf16,
    .embedding_forward = dsa_cpu_embedding_forward,
    .embedding_backward = dsa_cpu_embedding_backward,
    .rmsnorm_forward = dsa_cpu_rmsnorm_forward,
    .rmsnorm_backward = dsa_cpu_rmsnorm_backward,
    .rope_forward = dsa_cpu_rope_forward,
    .rope_backward = dsa_cpu_rope_backward,
    .swiglu_forward = dsa_cpu_swiglu_forward,
    .swiglu_backward = dsa_cpu_swiglu_backward,
    .attention_forward = dsa_cpu_attention_forward,
    .attention_backward = dsa_cpu_attention_backward,
    .attention_scratch_floats = dsa_cpu_attention_scratch_floats,
    .sparse_attention_forward = dsa_cpu_sparse_attention_forward,
    .sparse_attention_backward = dsa_cpu_sparse_attention_backward,
    .sparse_attention_scratch_bytes = dsa_cpu_sparse_attention_scratch_bytes,
    .cross_entropy_forward = dsa_cpu_cross_entropy_forward,
    .cross_entropy_backward = dsa_cpu_cross_entropy_backward,
    .adamw_step = dsa_cpu_adamw_step,
    .sum_squares = dsa_cpu_sum_squares,
    .scale = dsa_cpu_scale,
    .add = dsa_cpu_add,
    .copy_2d = dsa_cpu_copy_2d,
};

const DsaBackend *dsa_backend_cpu(void) { return &cpu_backend; }

void dsa_backend_cpu_set_threads(int threads) {
    int n = threads > 0 ? threads : omp_get_num_procs();
    omp_set_num_threads(n);
    openblas_set_num_threads(n);
}

int dsa_backend_cpu_threads(void) { return omp_get_max_threads(); }
