/* tensor.c: tensor views (see tensor.h). */
#include "core/tensor.h"

#include <stdio.h>
#include <string.h>

static const struct {
    const char *name;
    size_t size;
} dtype_table[DSA_DTYPE_COUNT] = {
    [DSA_F32] = {"F32", 4},     [DSA_BF16] = {"BF16", 2}, [DSA_F16] = {"F16", 2}, [DSA_F8_E4M3] = {"F8_E4M3", 1},
    [DSA_I32] = {"I32", 4},     [DSA_U32] = {"U32", 4},   [DSA_I64] = {"I64", 8}, [DSA_U8] = {"U8", 1},
};

size_t dsa_dtype_size(DsaDType dtype) {
    DSA_ASSERT(dtype >= 0 && dtype < DSA_DTYPE_COUNT);
    return dtype_table[dtype].size;
}

const char *dsa_dtype_name(DsaDType dtype) {
    if (dtype < 0 || dtype >= DSA_DTYPE_COUNT) return NULL;
    return dtype_table[dtype].name;
}

DsaStatus dsa_dtype_parse(const char *name, DsaDType *out, const char *what) {
    for (int i = 0; i < DSA_DTYPE_COUNT; i++) {
        if (strcmp(name, dtype_table[i].name) == 0) {
            *out = (DsaDType)i;
            return DSA_OK;
        }
    }
    DSA_FAIL(DSA_ERR_FORMAT, "%s: unsupported dtype \"%s\" (expected F32, BF16, F16, F8_E4M3, I32, U32, I64 or U8)",
             what, name);
}

DsaTensor dsa_tensor_make(const char *name, DsaDType dtype, int ndim, const int64_t *shape) {
    DSA_ASSERT(ndim >= 0 && ndim <= DSA_MAX_DIMS);
    DsaTensor t = {.data = NULL, .dtype = dtype, .ndim = ndim, .name = name};
    for (int i = 0; i < ndim; i++) t.shape[i] = shape[i];
    return t;
}

int64_t dsa_tensor_numel(const DsaTensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

size_t dsa_tensor_bytes(const DsaTensor *t) { return (size_t)dsa_tensor_numel(t) * dsa_dtype_size(t->dtype); }

DsaStatus dsa_tensor_alloc(DsaTensor *t, DsaArena *arena) {
    t->data = dsa_arena_push(arena, dsa_tensor_bytes(t));
    if (!t->data && arena->base) {
        dsa_error_push(__FILE__, __LINE__, "allocating tensor %s", t->name ? t->name : "(unnamed)");
        return DSA_ERR_NOMEM;
    }
    return DSA_OK;
}

const char *dsa_shape_text(char *buf, size_t cap, int ndim, const int64_t *shape) {
    size_t len = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && len < cap; i++)
        len += (size_t)snprintf(buf + len, cap - len, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (len < cap) snprintf(buf + len, cap - len, "]");
    return buf;
}

DsaStatus dsa_tensor_check_shape(const DsaTensor *t, int ndim, const int64_t *shape) {
    int same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++) same = t->shape[i] == shape[i];
    if (same) return DSA_OK;
    char want[128], got[128];
    dsa_shape_text(want, sizeof want, ndim, shape);
    dsa_shape_text(got, sizeof got, t->ndim, t->shape);
    DSA_FAIL(DSA_ERR_FORMAT, "tensor %s has shape %s, expected %s", t->name ? t->name : "(unnamed)", got, want);
}
