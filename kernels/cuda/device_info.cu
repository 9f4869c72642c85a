/* device_info.cu: the CUDA device query (see kernels/device.h).
 *
 * Translates CUDA runtime errors into the text of why_unavailable instead of failing:
 * a CPU-only machine with the toolkit installed (CI) must still run every CPU test. */
#include <cuda_runtime.h>

#include <cstdio>
#include <cstring>

extern "C" {
#include "kernels/device.h"
}

extern "C" void dsa_device_cuda_query(DsaCudaInfo *info) {
    std::memset(info, 0, sizeof *info);
    info->compiled = 1;
    cudaRuntimeGetVersion(&info->runtime_version);
    cudaError_t err = cudaDriverGetVersion(&info->driver_version);
    if (err != cudaSuccess || info->driver_version == 0) {
        std::snprintf(info->why_unavailable, sizeof info->why_unavailable, "no CUDA driver installed");
        return;
    }
    err = cudaGetDeviceCount(&info->device_count);
    if (err != cudaSuccess || info->device_count == 0) {
        info->device_count = 0;
        std::snprintf(info->why_unavailable, sizeof info->why_unavailable, "no CUDA device visible: %s",
                      err != cudaSuccess ? cudaGetErrorString(err) : "device count is 0");
        cudaGetLastError();
        return;
    }
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess) {
        std::snprintf(info->name, sizeof info->name, "%.*s", (int)sizeof info->name - 1, prop.name);
        info->total_memory = prop.totalGlobalMem;
        info->cc_major = prop.major;
        info->cc_minor = prop.minor;
    }
}
