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
#include <pthread.h>
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

/* The bf16 tables made so far, one per fp32 table (cpu, sim, cuda), kept for the process. */
enum { MAX_BF16_TABLES = 8 };
static DsaBackend bf16_tables[MAX_BF16_TABLES];
static int bf16_count;
static pthread_mutex_t bf16_lock = PTHREAD_MUTEX_INITIALIZER;

DsaStatus dsa_backend_for_precision(const DsaBackend *be, const char *precision, const DsaBackend **out) {
    DSA_ASSERT(be && precision && out);
    *out = NULL;
    if (be->fp32_table) be = be->fp32_table; /* asked of a bf16 table: start from its fp32 one */
    if (!strcmp(precision, "fp32")) {
        *out = be;
        return DSA_OK;
    }
    if (strcmp(precision, "bf16"))
        DSA_FAIL(DSA_ERR_CONFIG, "precision \"%s\" is unknown; the choices are \"fp32\" and \"bf16\"", precision);
    if (!be->linear_forward_bf16 || !be->linear_backward_bf16)
        DSA_FAIL(DSA_ERR_CONFIG, "the %s backend has no bf16 linear entries: use precision \"fp32\"", be->name);
    pthread_mutex_lock(&bf16_lock);
    for (int i = 0; i < bf16_count && !*out; i++)
        if (bf16_tables[i].fp32_table == be) *out = &bf16_tables[i];
    if (!*out && bf16_count < MAX_BF16_TABLES) {
        DsaBackend *t = &bf16_tables[bf16_count++];
        *t = *be;
        t->linear_forward = be->linear_forward_bf16;
        t->linear_backward = be->linear_backward_bf16;
        t->fp32_table = be;
        *out = t;
    }
    pthread_mutex_unlock(&bf16_lock);
    DSA_ASSERT(*out); /* more distinct backends than MAX_BF16_TABLES: a programming error */
    return DSA_OK;
}
