/* safetensors_write.c: write the Hugging Face safetensors format (safetensors.h).
 *
 * The writer builds the header text itself (integers printed exactly, names escaped),
 * pads it to 8 bytes and streams the tensors after it; the reader is safetensors.c.
 */
#include "checkpoints/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "checkpoints/safetensors_internal.h"
#include "core/mem.h"

/* ---- write ------------------------------------------------------------------------- */

/* A growing text buffer for the header (dsa_malloc'ed). */
typedef struct {
    char *p;
    size_t len, cap;
    bool oom;
} TextBuf;

static void tb_reserve(TextBuf *b, size_t extra) {
    if (b->oom || b->len + extra + 1 <= b->cap) return;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + extra + 1) cap *= 2;
    char *p = dsa_realloc(b->p, b->cap, cap);
    if (!p) {
        b->oom = true;
        return;
    }
    b->p = p, b->cap = cap;
}

static void tb_printf(TextBuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void tb_printf(TextBuf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    tb_reserve(b, (size_t)n);
    if (b->oom) return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* Append `s` as a JSON string literal (UTF-8 passes through; '"', '\\' and control
 * characters are escaped). */
static void tb_json_string(TextBuf *b, const char *s) {
    tb_printf(b, "\"");
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if (*c == '"' || *c == '\\')
            tb_printf(b, "\\%c", *c);
        else if (*c < 0x20)
            tb_printf(b, "\\u%04x", *c);
        else
            tb_printf(b, "%c", *c);
    }
    tb_printf(b, "\"");
}

static void tb_free(TextBuf *b) {
    dsa_free(b->p, b->cap);
    memset(b, 0, sizeof *b);
}

static DsaStatus write_all(int fd, const void *buf, size_t n, const char *path) {
    const uint8_t *p = buf;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) DSA_FAIL(DSA_ERR_IO, "%s: write failed: %s", path, strerror(errno));
        if (w == 0) DSA_FAIL(DSA_ERR_IO, "%s: write wrote nothing (disk full?)", path);
        p += w, n -= (size_t)w;
    }
    return DSA_OK;
}

/* Check the caller's tensors and metadata; sets bytes[i] of each tensor. */
static DsaStatus check_write_args(const char *path, const DsaStTensorRef *tensors, int count,
                                  const char *const *meta_keys, const char *const *meta_values, int n_meta,
                                  bool need_data, uint64_t *bytes) {
    size_t bad;
    if (count < 0 || n_meta < 0) DSA_FAIL(DSA_ERR_ARG, "%s: %d tensors, %d metadata pairs", path, count, n_meta);
    for (int i = 0; i < count; i++) {
        const DsaStTensorRef *t = &tensors[i];
        const char *name = t->name ? t->name : "(null)";
        if (!t->name || !t->name[0] || !strcmp(t->name, META_KEY) ||
            !utf8_valid((const uint8_t *)t->name, strlen(t->name), &bad))
            DSA_FAIL(DSA_ERR_ARG, "%s: tensor %d: invalid name \"%s\" (empty, \"%s\" or not UTF-8)", path, i, name,
                     META_KEY);
        if (!dsa_dtype_name(t->dtype))
            DSA_FAIL(DSA_ERR_ARG, "%s: tensor %s: invalid dtype %d", path, name, (int)t->dtype);
        if (t->ndim < 0 || t->ndim > DSA_MAX_DIMS)
            DSA_FAIL(DSA_ERR_ARG, "%s: tensor %s: ndim %d outside [0, %d]", path, name, t->ndim, DSA_MAX_DIMS);
        uint64_t n = dsa_dtype_size(t->dtype);
        for (int d = 0; d < t->ndim; d++) {
            if (t->shape[d] < 0)
                DSA_FAIL(DSA_ERR_ARG, "%s: tensor %s: shape[%d] = %lld", path, name, d, (long long)t->shape[d]);
            if (t->shape[d] && n > (UINT64_MAX >> 12) / (uint64_t)t->shape[d])
                DSA_FAIL(DSA_ERR_ARG, "%s: tensor %s: byte count overflows", path, name);
            n *= (uint64_t)t->shape[d];
        }
        if (need_data && n && !t->data) DSA_FAIL(DSA_ERR_ARG, "%s: tensor %s: data is NULL", path, name);
        bytes[i] = n;
    }
    for (int i = 0; i < n_meta; i++) {
        if (!meta_keys[i] || !meta_values[i] ||
            !utf8_valid((const uint8_t *)meta_keys[i], strlen(meta_keys[i]), &bad) ||
            !utf8_valid((const uint8_t *)meta_values[i], strlen(meta_values[i]), &bad))
            DSA_FAIL(DSA_ERR_ARG, "%s: metadata pair %d is NULL or not UTF-8", path, i);
    }
    const char **names = NULL;
    size_t names_bytes = (size_t)(count > n_meta ? count : n_meta) * sizeof *names;
    if (names_bytes == 0) return DSA_OK;
    DSA_TRY(dsa_alloc((void **)&names, names_bytes, "name list"));
    const char *dup = NULL;
    for (int i = 0; i < count; i++) names[i] = tensors[i].name;
    DsaStatus st = find_duplicate(names, count, &dup);
    if (st == DSA_OK && dup)
        st = dsa_error_set(DSA_ERR_ARG, __FILE__, __LINE__, "%s: tensor %s given twice", path, dup);
    if (st == DSA_OK) {
        for (int i = 0; i < n_meta; i++) names[i] = meta_keys[i];
        st = find_duplicate(names, n_meta, &dup);
        if (st == DSA_OK && dup)
            st = dsa_error_set(DSA_ERR_ARG, __FILE__, __LINE__, "%s: metadata key \"%s\" given twice", path, dup);
    }
    dsa_free(names, names_bytes);
    return st;
}

/* The storage order: indices sorted by element size (largest first), stable. */
static void layout_order(const DsaStTensorRef *tensors, int count, int *order) {
    int k = 0;
    for (size_t size = 8; size >= 1; size /= 2)
        for (int i = 0; i < count; i++)
            if (dsa_dtype_size(tensors[i].dtype) == size) order[k++] = i;
    DSA_ASSERT(k == count); /* every dtype is 1, 2, 4 or 8 bytes */
}

/* The layout (safetensors.h): argument checks, storage order, offsets and the header
 * bytes. `need_data`: refuse NULL data of non-empty tensors (the one-shot writer). */
static DsaStatus build_layout(DsaStLayout *lay, const char *path, const DsaStTensorRef *tensors, int count,
                              const char *const *meta_keys, const char *const *meta_values, int n_meta,
                              bool need_data) {
    memset(lay, 0, sizeof *lay);
    DsaStatus st = DSA_OK;
    TextBuf hb = {0};
    if (count < 0 || n_meta < 0) DSA_FAIL(DSA_ERR_ARG, "%s: %d tensors, %d metadata pairs", path, count, n_meta);
    lay->count = count;
    lay->aux_bytes = (size_t)count * (2 * sizeof(uint64_t) + sizeof(int));
    if (lay->aux_bytes) DSA_TRY(dsa_alloc(&lay->aux, lay->aux_bytes, "safetensors tensor list"));
    if (count) {
        lay->bytes = (uint64_t *)lay->aux;
        lay->offsets = lay->bytes + count;
        lay->order = (int *)(lay->offsets + count);
    }
    DSA_TRY_GOTO(st, check_write_args(path, tensors, count, meta_keys, meta_values, n_meta, need_data, lay->bytes),
                 fail);
    if (count) layout_order(tensors, count, lay->order);

    /* Header: metadata first, then the tensors in storage order (as the reference). */
    tb_printf(&hb, "{");
    if (n_meta > 0) {
        tb_printf(&hb, "\"%s\":{", META_KEY);
        for (int i = 0; i < n_meta; i++) {
            if (i) tb_printf(&hb, ",");
            tb_json_string(&hb, meta_keys[i]);
            tb_printf(&hb, ":");
            tb_json_string(&hb, meta_values[i]);
        }
        tb_printf(&hb, "}");
    }
    uint64_t offset = 0;
    for (int k = 0; k < count; k++) {
        int i = lay->order[k];
        const DsaStTensorRef *t = &tensors[i];
        if (k || n_meta > 0) tb_printf(&hb, ",");
        tb_json_string(&hb, t->name);
        tb_printf(&hb, ":{\"dtype\":\"%s\",\"shape\":[", dsa_dtype_name(t->dtype));
        for (int d = 0; d < t->ndim; d++) tb_printf(&hb, "%s%lld", d ? "," : "", (long long)t->shape[d]);
        tb_printf(&hb, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)offset,
                  (unsigned long long)(offset + lay->bytes[i]));
        lay->offsets[i] = offset;
        offset += lay->bytes[i];
    }
    tb_printf(&hb, "}");
    size_t padded = (hb.len + 7) / 8 * 8;
    tb_reserve(&hb, 8 + padded - hb.len);
    if (hb.oom) DSA_FAIL_GOTO(st, fail, DSA_ERR_NOMEM, "%s: out of memory building the header", path);
    if (padded > DSA_ST_MAX_HEADER_BYTES)
        DSA_FAIL_GOTO(st, fail, DSA_ERR_ARG, "%s: header of %zu bytes is over the %d readers accept", path, padded,
                      DSA_ST_MAX_HEADER_BYTES);
    memset(hb.p + hb.len, ' ', padded - hb.len);
    /* Prefix the 8-byte size: shift the text right inside the buffer. */
    memmove(hb.p + 8, hb.p, padded);
    for (int b = 0; b < 8; b++) hb.p[b] = (char)(uint8_t)((uint64_t)padded >> (8 * b));
    lay->header = (uint8_t *)hb.p;
    lay->header_cap = hb.cap;
    lay->header_bytes = 8 + padded;
    for (int i = 0; i < count; i++) lay->offsets[i] += lay->header_bytes;
    lay->file_bytes = lay->header_bytes + offset;
    return DSA_OK;
fail:
    tb_free(&hb);
    dsa_safetensors_layout_free(lay);
    return st;
}

DsaStatus dsa_safetensors_layout(DsaStLayout *lay, const char *path, const DsaStTensorRef *tensors, int count,
                                 const char *const *meta_keys, const char *const *meta_values, int n_meta) {
    return build_layout(lay, path, tensors, count, meta_keys, meta_values, n_meta, false);
}

void dsa_safetensors_layout_free(DsaStLayout *lay) {
    dsa_free(lay->header, lay->header_cap);
    dsa_free(lay->aux, lay->aux_bytes);
    memset(lay, 0, sizeof *lay);
}

DsaStatus dsa_safetensors_write(const char *path, const DsaStTensorRef *tensors, int count,
                                const char *const *meta_keys, const char *const *meta_values, int n_meta) {
    DsaStatus st = DSA_OK;
    DsaStLayout lay;
    int fd = -1;
    DSA_TRY(build_layout(&lay, path, tensors, count, meta_keys, meta_values, n_meta, true));
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) DSA_FAIL_GOTO(st, out, DSA_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    DSA_TRY_GOTO(st, write_all(fd, lay.header, lay.header_bytes, path), out);
    for (int k = 0; k < count; k++)
        if (lay.bytes[lay.order[k]])
            DSA_TRY_GOTO(st, write_all(fd, tensors[lay.order[k]].data, (size_t)lay.bytes[lay.order[k]], path), out);
    if (fsync(fd) != 0) DSA_FAIL_GOTO(st, out, DSA_ERR_IO, "%s: fsync failed: %s", path, strerror(errno));
out:
    if (fd >= 0 && close(fd) != 0 && st == DSA_OK)
        st = dsa_error_set(DSA_ERR_IO, __FILE__, __LINE__, "%s: close failed: %s", path, strerror(errno));
    if (fd >= 0 && st != DSA_OK) unlink(path);
    dsa_safetensors_layout_free(&lay);
    return st;
}
