/* backend_cuda.cu: the CUDA backend's table and its availability check (kernels/backend.h;
 * the CPU twin is kernels/cpu/backend_cpu.c; looked up by kernels/backend_registry.c).
 *
 * The table holds the dsa_cuda_* ops of cuda_ops.h, each on device memory with the
 * contract of its DsaBackend field. dsa_backend_cuda refuses, with the reason, when this
 * process cannot run them: no driver, no visible GPU (both from the device query of
 * kernels/device.h), or a GPU older than the sm_90 code this build carries (-arch=sm_90:
 * sm_90 machine code plus compute_90 PTX, which newer GPUs compile on load).
 * NOTE: the table is filled field by field (C++17 has no designated initializers).
 */
#include <cstdio>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_ops.h"

extern "C" {
#include "kernels/device.h"
}

static DsaBackend make_table(void) {
    DsaBackend t = {};
    t.name = "cuda";
    t.alloc = dsa_cuda_alloc;
    t.release = dsa_cuda_release;
    t.upload = dsa_cuda_upload;
    t.download = dsa_cuda_download;
    t.copy = dsa_cuda_copy;
    t.fill_zero = dsa_cuda_fill_zero;
    t.upload_async = dsa_cuda_upload_async;
    t.copy_order = dsa_cuda_copy_order;
    t.synchronize = dsa_cuda_synchronize;
    t.memory_info = dsa_cuda_memory_info;
    t.linear_forward = dsa_cuda_linear_forward;
    t.linear_backward = dsa_cuda_linear_backward;
    t.linear_forward_bf16 = dsa_cuda_linear_forward_bf16;
    t.linear_backward_bf16 = dsa_cuda_linear_backward_bf16;
    t.embedding_forward = dsa_cuda_embedding_forward;
    t.embedding_backward = dsa_cuda_embedding_backward;
    t.rmsnorm_forward = dsa_cuda_rmsnorm_forward;
    t.rmsnorm_backward = dsa_cuda_rmsnorm_backward;
    t.rope_forward = dsa_cuda_rope_forward;
    t.rope_backward = dsa_cuda_rope_backward;
    t.swiglu_forward = dsa_cuda_swiglu_forward;
    t.swiglu_backward = dsa_cuda_swiglu_backward;
    t.attention_forward = dsa_cuda_attention_forward;
    t.attention_backward = dsa_cuda_attention_backward;
    t.attention_scratch_floats = dsa_cuda_attention_scratch_floats;
    t.sparse_attention_forward = dsa_cuda_sparse_attention_forward;
    t.sparse_attention_backward = dsa_cuda_sparse_attention_backward;
    t.sparse_attention_scratch_bytes = dsa_cuda_sparse_attention_scratch_bytes;
    t.cross_entropy_forward = dsa_cuda_cross_entropy_forward;
    t.cross_entropy_backward = dsa_cuda_cross_entropy_backward;
    t.adamw_step = dsa_cuda_adamw_step;
    t.sum_squares = dsa_cuda_sum_squares;
    t.scale = dsa_cuda_scale;
    t.add = dsa_cuda_add;
    t.copy_2d = dsa_cuda_copy_2d;
    return t;
}

extern "C" const DsaBackend *dsa_backend_cuda(char *why, size_t why_cap) {
    static const DsaBackend table = make_table();
    DsaCudaInfo info;
    dsa_device_cuda_query(&info);
    if (info.device_count <= 0) {
        std::snprintf(why, why_cap, "%s", info.why_unavailable);
        return NULL;
    }
    if (info.cc_major < 9) {
        std::snprintf(why, why_cap,
                      "device 0 (%s) has compute capability %d.%d; this build carries device code for sm_90 "
                      "(Hopper) and newer",
                      info.name, info.cc_major, info.cc_minor);
        return NULL;
    }
    return &table;
}
