/* device.h: what compute devices this build can use.
 *
 * The CPU backend is always built. The CUDA backend is compiled whenever nvcc is
 * found (DSA_HAVE_CUDA); at run time it still needs a GPU and a driver, which
 * dsa_device_cuda_query reports without failing the process when absent.
 */
#ifndef DSA_KERNELS_DEVICE_H
#define DSA_KERNELS_DEVICE_H

#include <stddef.h>

#include "core/error.h"

enum { DSA_DEVICE_NAME_CAP = 128 };

typedef struct {
    int compiled;          /* 1 when this build contains the CUDA backend */
    int runtime_version;   /* e.g. 13000, 0 when unknown */
    int driver_version;    /* 0 when no driver is installed */
    int device_count;      /* GPUs visible to this process */
    char name[DSA_DEVICE_NAME_CAP]; /* device 0 */
    size_t total_memory;   /* device 0, bytes */
    int cc_major, cc_minor;
    char why_unavailable[256]; /* empty when device_count > 0 */
} DsaCudaInfo;

/* Fill `info`. Never fails: an absent driver or GPU is described in why_unavailable. */
void dsa_device_cuda_query(DsaCudaInfo *info);

#endif
