/* backend_registry.c: the backend lookup by name (kernels/backend.h dsa_backend_get), the
 * one place outside kernels/cuda/ that knows whether this build has the CUDA backend
 * (DSA_HAVE_CUDA, set by the Makefile when nvcc is found; DESIGN.md "Backends").
 *
 * "cpu" is always there, and "sim", the test device (the CPU ops on pointers the host cannot
 * dereference). "cuda" is the CUDA backend's table when this build carries it
 * and the process sees a usable GPU; otherwise DSA_ERR_DEVICE with the reason (the
 * device query's: no driver, no device, too old a GPU, or a build without CUDA), so a
 * CPU-only machine runs everything that asks for "cpu" and a clear refusal otherwise.
 */
#include <stdio.h>
#include <string.h>

#include "kernels/backend.h"
#include "kernels/device.h"
#ifdef DSA_HAVE_CUDA
#include "kernels/cuda/cuda_ops.h"
#endif

/* The CUDA backend, or NULL with why[] saying what is missing. */
static const DsaBackend *cuda_backend(char *why, size_t why_cap) {
#ifdef DSA_HAVE_CUDA
    return dsa_backend_cuda(why, why_cap);
#else
    DsaCudaInfo info;
    dsa_device_cuda_query(&info);
    snprintf(why, why_cap, "%s", info.why_unavailable);
    return NULL;
#endif
}

DsaStatus dsa_backend_get(const char *name, const DsaBackend **out) {
    DSA_ASSERT(name && out);
    *out = NULL;
    if (!strcmp(name, "cpu")) {
        *out = dsa_backend_cpu();
        return DSA_OK;
    }
    if (!strcmp(name, "sim")) { /* the test device (kernels/sim/sim.h) */
        *out = dsa_backend_sim();
        return DSA_OK;
    }
    if (!strcmp(name, "cuda")) {
        char why[320];
        *out = cuda_backend(why, sizeof why);
        if (*out) return DSA_OK;
        DSA_FAIL(DSA_ERR_DEVICE, "device \"cuda\" is not available: %s; use \"cpu\"", why);
    }
    DSA_FAIL(DSA_ERR_CONFIG, "device \"%s\" is unknown; the choices are \"cpu\" and \"cuda\" (and \"sim\", the test device)", name);
}
