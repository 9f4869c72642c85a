/* device_cpu.c: the device query when the CUDA backend is not compiled in. */
#include "kernels/device.h"

#include <stdio.h>
#include <string.h>

#ifndef DSA_HAVE_CUDA
void dsa_device_cuda_query(DsaCudaInfo *info) {
    memset(info, 0, sizeof *info);
    snprintf(info->why_unavailable, sizeof info->why_unavailable,
             "this build has no CUDA backend (nvcc was not found or CUDA=0 was given)");
}
#endif
