/* safetensors.c: read and write the Hugging Face safetensors format (safetensors.h).
 *
 * The writer builds the header text itself (integers printed exactly, names escaped),
 * pads it to 8 bytes and streams the tensors after it. The reader maps the file, checks
 * the header is UTF-8, parses it with cJSON straight from the map, and then checks the
 * entries one by one and the layout as a whole; names, metadata keys and values are
 * copied into one string block so nothing points into cJSON after open returns.
 */
#include "checkpoints/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cJSON.h>

#include "core/mem.h"
#include "kernels/rules/bf16.h"

static const char META_KEY[] = "__metadata__";

/* True when bytes[0..n) are well-formed UTF-8 without NUL bytes (no overlong forms, no
 * surrogates, nothing past U+10FFFF). On failure *bad is the offending byte's offset. */
static bool utf8_valid(const uint8_t *s, size_t n, size_t *bad) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        size_t len;
        uint32_t cp;
        if (c == 0) goto fail;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            len = 2, cp = c & 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            len = 3, cp = c & 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            len = 4, cp = c & 0x07;
        } else {
            goto fail;
        }
        if (n - i < len) goto fail;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80) goto fail;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < min_cp[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) goto fail;
        i += len;
    }
    return true;
fail:
    *bad = i;
    return false;
}

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

static int cmp_str_ptr(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Find a duplicate among n strings (sorted copy of the pointers); NULL if none. */
static DsaStatus find_duplicate(const char **names, int n, const char **dup) {
    *dup = NULL;
    if (n < 2) return DSA_OK;
    const char **sorted = NULL;
    DSA_TRY(dsa_alloc((void **)&sorted, (size_t)n * sizeof *sorted, "name list"));
    memcpy(sorted, names, (size_t)n * sizeof *sorted);
    qsort(sorted, (size_t)n, sizeof *sorted, cmp_str_ptr);
    for (int i = 1; i < n && !*dup; i++)
        if (!strcmp(sorted[i - 1], sorted[i])) *dup = sorted[i];
    dsa_free(sorted, (size_t)n * sizeof *sorted);
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

/* ---- read -------------------------------------------------------------------------- */

/* A JSON number that is a non-negative integer exactly representable in a double. */
static bool json_uint(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0) || v->valuedouble > 9007199254740992.0) return false;
    if ((double)(uint64_t)v->valuedouble != v->valuedouble) return false;
    *out = (uint64_t)v->valuedouble;
    return true;
}

/* Validate one header entry and fill `e` (its name is set by the caller). */
static DsaStatus parse_entry(const char *path, const cJSON *item, DsaStEntry *e) {
    const char *name = item->string;
    if (!cJSON_IsObject(item)) DSA_FAIL(DSA_ERR_FORMAT, "%s: tensor %s: header entry is not an object", path, name);
    const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(item, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(item, "shape");
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(item, "data_offsets");
    if (!cJSON_IsString(dtype))
        DSA_FAIL(DSA_ERR_FORMAT, "%s: tensor %s: \"dtype\" missing or not a string", path, name);
    if (!cJSON_IsArray(shape)) DSA_FAIL(DSA_ERR_FORMAT, "%s: tensor %s: \"shape\" missing or not an array", path, name);
    if (!cJSON_IsArray(off))
        DSA_FAIL(DSA_ERR_FORMAT, "%s: tensor %s: \"data_offsets\" missing or not an array", path, name);
    if (cJSON_GetArraySize(off) != 2)
        DSA_FAIL(DSA_ERR_FORMAT, "%s: tensor %s: \"data_offsets\" has %d values, [begin, end] expected", path, name,
                 cJSON_GetArraySize(off));
    char what[DSA_ST_PATH_CAP + 300];
    snprintf(what, sizeof what, "%s: tensor %.256s", path, name);
    DSA_TRY(dsa_dtype_parse(dtype->valuestring, &e->dtype, what));
    int nd = cJSON_GetArraySize(shape);
    if (nd > DSA_MAX_DIMS)
        DSA_FAIL(DSA_ERR_FORMAT, "%s: tensor %s has %d dims, at most %d are supported", path, name, nd, DSA_MAX_DIMS);
    e->ndim = nd;
    uint64_t numel = 1;
    for (int d = 0; d < nd; d++) {
        uint64_t v = 0;
        if (!json_uint(cJSON_GetArrayItem(shape, d), &v))
            DSA_FAIL(DSA_ERR_FORMAT, "%s: tensor %s: shape[%d] is not a non-negative integer", path, name, d);
        if (v > INT64_MAX || (v && numel > (UINT64_MAX >> 4) / v))
            DSA_FAIL(DSA_ERR_FORMAT, "%s: tensor %s: shape overflows a 64-bit byte count", path, name);
        e->shape[d] = (int64_t)v;
        numel *= v;
    }
    if (!json_uint(cJSON_GetArrayItem(off, 0), &e->begin) || !json_uint(cJSON_GetArrayItem(off, 1), &e->end))
        DSA_FAIL(DSA_ERR_FORMAT, "%s: tensor %s: data_offsets are not non-negative integers", path, name);
    if (e->begin > e->end)
        DSA_FAIL(DSA_ERR_FORMAT, "%s: tensor %s: data_offsets [%llu, %llu] run backwards", path, name,
                 (unsigned long long)e->begin, (unsigned long long)e->end);
    uint64_t want = numel * dsa_dtype_size(e->dtype);
    if (e->end - e->begin != want)
        DSA_FAIL(DSA_ERR_FORMAT,
                 "%s: tensor %s: data_offsets [%llu, %llu] hold %llu bytes, but %s of %llu elements needs %llu", path,
                 name, (unsigned long long)e->begin, (unsigned long long)e->end,
                 (unsigned long long)(e->end - e->begin), dtype->valuestring, (unsigned long long)numel,
                 (unsigned long long)want);
    return DSA_OK;
}

static int cmp_entry_name(const void *a, const void *b) {
    return strcmp((*(const DsaStEntry *const *)a)->name, (*(const DsaStEntry *const *)b)->name);
}

static int cmp_entry_offsets(const void *a, const void *b) {
    const DsaStEntry *x = *(const DsaStEntry *const *)a, *y = *(const DsaStEntry *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

/* The tensors must tile the data buffer exactly, as the reference requires: sorted by
 * (begin, end), each starts where the previous ended, the last ends at the buffer's end.
 * `order` is scratch of `count` pointers. */
static DsaStatus check_tiling(const DsaSafetensors *st, const DsaStEntry **order) {
    const char *path = st->path;
    for (int i = 0; i < st->count; i++) {
        const DsaStEntry *e = &st->entries[i];
        if (e->end > st->buffer_bytes)
            DSA_FAIL(DSA_ERR_FORMAT,
                     "%s: tensor %s ends at byte %llu of the data buffer, but the file holds only %llu data bytes "
                     "(truncated file?)",
                     path, e->name, (unsigned long long)e->end, (unsigned long long)st->buffer_bytes);
        order[i] = e;
    }
    if (st->count > 1) qsort(order, (size_t)st->count, sizeof *order, cmp_entry_offsets);
    uint64_t at = 0;
    for (int i = 0; i < st->count; i++) {
        const DsaStEntry *e = order[i], *prev = i ? order[i - 1] : NULL;
        if (e->begin < at)
            DSA_FAIL(DSA_ERR_FORMAT, "%s: tensor %s [%llu, %llu) overlaps tensor %s [%llu, %llu)", path, e->name,
                     (unsigned long long)e->begin, (unsigned long long)e->end, prev->name,
                     (unsigned long long)prev->begin, (unsigned long long)prev->end);
        if (e->begin > at)
            DSA_FAIL(DSA_ERR_FORMAT, "%s: %llu unused bytes before tensor %s (a hole in the data buffer%s%s)", path,
                     (unsigned long long)(e->begin - at), e->name, prev ? ", after tensor " : "",
                     prev ? prev->name : "");
        at = e->end;
    }
    if (at != st->buffer_bytes)
        DSA_FAIL(DSA_ERR_FORMAT,
                 "%s: %llu bytes after the last tensor%s%s (the data buffer holds %llu bytes, the tensors "
                 "cover %llu)",
                 path, (unsigned long long)(st->buffer_bytes - at), st->count ? " " : "",
                 st->count ? order[st->count - 1]->name : "", (unsigned long long)st->buffer_bytes,
                 (unsigned long long)at);
    return DSA_OK;
}

/* Append a NUL-terminated copy of s to the string area of the block. */
static const char *pool_add(char *pool, size_t cap, size_t *used, const char *s) {
    size_t n = strlen(s) + 1;
    DSA_ASSERT(*used + n <= cap);
    char *p = pool + *used;
    memcpy(p, s, n);
    *used += n;
    return p;
}

/* Validate the parsed header and fill entries, metadata and the name index. */
static DsaStatus load_header(DsaSafetensors *st, const cJSON *root) {
    const char *path = st->path;
    if (!cJSON_IsObject(root)) DSA_FAIL(DSA_ERR_FORMAT, "%s: the header is not a JSON object", path);
    /* First pass: count, and size the string area. */
    const cJSON *item, *meta = NULL, *kv;
    size_t count = 0, n_meta = 0, strings = 0;
    cJSON_ArrayForEach(item, root) {
        if (!strcmp(item->string, META_KEY)) {
            if (meta) DSA_FAIL(DSA_ERR_FORMAT, "%s: \"%s\" appears twice in the header", path, META_KEY);
            meta = item;
            if (cJSON_IsNull(item)) continue;
            if (!cJSON_IsObject(item)) DSA_FAIL(DSA_ERR_FORMAT, "%s: \"%s\" is not an object", path, META_KEY);
            cJSON_ArrayForEach(kv, item) {
                if (!cJSON_IsString(kv))
                    DSA_FAIL(DSA_ERR_FORMAT, "%s: %s value of \"%s\" is not a string", path, META_KEY, kv->string);
                strings += strlen(kv->string) + strlen(kv->valuestring) + 2;
                n_meta++;
            }
        } else {
            strings += strlen(item->string) + 1;
            count++;
        }
    }
    if (count > INT32_MAX / 2) DSA_FAIL(DSA_ERR_FORMAT, "%s: %zu tensors", path, count);
    /* One block: entries, by_name, meta_keys, meta_values (all 8-byte multiples), strings. */
    size_t off_by_name = count * sizeof *st->entries, off_keys = off_by_name + count * sizeof *st->by_name,
           off_values = off_keys + n_meta * sizeof(char *), off_strings = off_values + n_meta * sizeof(char *);
    st->block_bytes = off_strings + strings;
    char *pool = NULL;
    if (st->block_bytes) {
        DSA_TRY(dsa_alloc(&st->block, st->block_bytes, "safetensors header"));
        uint8_t *block = st->block;
        st->entries = count ? (DsaStEntry *)block : NULL;
        st->by_name = count ? (const DsaStEntry **)(block + off_by_name) : NULL;
        st->meta_keys = n_meta ? (const char **)(block + off_keys) : NULL;
        st->meta_values = n_meta ? (const char **)(block + off_values) : NULL;
        pool = (char *)block + off_strings;
    }
    /* Second pass: fill in. */
    size_t used = 0;
    cJSON_ArrayForEach(item, root) {
        if (item == meta) {
            cJSON_ArrayForEach(kv, item) {
                st->meta_keys[st->n_meta] = pool_add(pool, strings, &used, kv->string);
                st->meta_values[st->n_meta] = pool_add(pool, strings, &used, kv->valuestring);
                st->n_meta++;
            }
            continue;
        }
        DsaStEntry *e = &st->entries[st->count];
        DSA_TRY(parse_entry(path, item, e));
        e->name = pool_add(pool, strings, &used, item->string);
        st->by_name[st->count] = e;
        st->count++;
    }
    if (st->count > 1) qsort(st->by_name, (size_t)st->count, sizeof *st->by_name, cmp_entry_name);
    for (int i = 1; i < st->count; i++)
        if (!strcmp(st->by_name[i - 1]->name, st->by_name[i]->name))
            DSA_FAIL(DSA_ERR_FORMAT, "%s: tensor %s appears twice in the header", path, st->by_name[i]->name);
    if (st->n_meta > 1) {
        const char *dup = NULL;
        DSA_TRY(find_duplicate(st->meta_keys, st->n_meta, &dup));
        if (dup) DSA_FAIL(DSA_ERR_FORMAT, "%s: %s key \"%s\" appears twice", path, META_KEY, dup);
    }
    if (st->count == 0) return check_tiling(st, NULL);
    const DsaStEntry **order = NULL;
    DSA_TRY(dsa_alloc((void **)&order, (size_t)st->count * sizeof *order, "safetensors layout check"));
    DsaStatus status = check_tiling(st, order);
    dsa_free(order, (size_t)st->count * sizeof *order);
    return status;
}

DsaStatus dsa_safetensors_open(DsaSafetensors *st, const char *path) {
    memset(st, 0, sizeof *st);
    if (snprintf(st->path, sizeof st->path, "%s", path) >= (int)sizeof st->path)
        DSA_FAIL(DSA_ERR_ARG, "path too long (%zu bytes): %.200s...", strlen(path), path);
    int fd;
    do fd = open(path, O_RDONLY | O_CLOEXEC);
    while (fd < 0 && errno == EINTR);
    if (fd < 0) DSA_FAIL(DSA_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int err = errno;
        close(fd);
        DSA_FAIL(DSA_ERR_IO, "%s: cannot stat: %s", path, strerror(err));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        DSA_FAIL(DSA_ERR_IO, "%s: not a regular file", path);
    }
    size_t size = (size_t)sb.st_size;
    if (size < 8) {
        close(fd);
        DSA_FAIL(DSA_ERR_FORMAT, "%s: %zu bytes, too short for a safetensors file (an 8-byte header size comes first)",
                 path, size);
    }
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int map_err = errno;
    close(fd); /* the mapping keeps the file */
    if (map == MAP_FAILED) DSA_FAIL(DSA_ERR_IO, "%s: mmap of %zu bytes failed: %s", path, size, strerror(map_err));
    st->map = map;
    st->map_bytes = size;
    const uint8_t *b = map;
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++) hlen |= (uint64_t)b[i] << (8 * i);
    DsaStatus status = DSA_OK;
    cJSON *root = NULL;
    if (hlen > DSA_ST_MAX_HEADER_BYTES)
        DSA_FAIL_GOTO(status, fail, DSA_ERR_FORMAT,
                      "%s: header size %llu is absurd (over %d bytes): not a safetensors file?", path,
                      (unsigned long long)hlen, DSA_ST_MAX_HEADER_BYTES);
    if (hlen > size - 8)
        DSA_FAIL_GOTO(status, fail, DSA_ERR_FORMAT,
                      "%s: header size %llu is larger than the file allows (%zu bytes after the size field): "
                      "truncated or not a safetensors file",
                      path, (unsigned long long)hlen, size - 8);
    st->header_bytes = hlen;
    st->buffer = b + 8 + hlen;
    st->buffer_bytes = size - 8 - hlen;
    const char *text = (const char *)b + 8;
    size_t bad = 0;
    if (!utf8_valid((const uint8_t *)text, hlen, &bad))
        DSA_FAIL_GOTO(status, fail, DSA_ERR_FORMAT, "%s: header byte %zu is %s (the header must be UTF-8 JSON)", path,
                      bad, text[bad] ? "not valid UTF-8" : "a NUL");
    /* NOTE: parsed in place from the map with an explicit length; only JSON whitespace
     * may follow the value (writers pad with spaces). */
    const char *end = NULL;
    root = cJSON_ParseWithLengthOpts(text, hlen, &end, 0);
    if (!root) {
        const char *err = cJSON_GetErrorPtr();
        long at = err && err >= text && err <= text + hlen ? (long)(err - text) : -1;
        DSA_FAIL_GOTO(status, fail, DSA_ERR_FORMAT, "%s: the header is not valid JSON (near byte %ld of %llu)", path,
                      at, (unsigned long long)hlen);
    }
    for (const char *p = end; p < text + hlen; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r')
            DSA_FAIL_GOTO(status, fail, DSA_ERR_FORMAT, "%s: the header has text after its JSON value (at byte %ld)",
                          path, (long)(p - text));
    DSA_TRY_GOTO(status, load_header(st, root), fail);
    cJSON_Delete(root);
    return DSA_OK;
fail:
    cJSON_Delete(root);
    dsa_safetensors_close(st);
    return status;
}

void dsa_safetensors_close(DsaSafetensors *st) {
    dsa_free(st->block, st->block_bytes);
    if (st->map) munmap(st->map, st->map_bytes);
    memset(st, 0, sizeof *st);
}

static int cmp_key_entry(const void *key, const void *elem) {
    return strcmp((const char *)key, (*(const DsaStEntry *const *)elem)->name);
}

const DsaStEntry *dsa_safetensors_find(const DsaSafetensors *st, const char *name) {
    if (st->count == 0) return NULL;
    const DsaStEntry *const *hit = bsearch(name, st->by_name, (size_t)st->count, sizeof *st->by_name, cmp_key_entry);
    return hit ? *hit : NULL;
}

const void *dsa_safetensors_data(const DsaSafetensors *st, const DsaStEntry *e) { return st->buffer + e->begin; }

const char *dsa_safetensors_meta(const DsaSafetensors *st, const char *key) {
    for (int i = 0; i < st->n_meta; i++)
        if (!strcmp(st->meta_keys[i], key)) return st->meta_values[i];
    return NULL;
}

/* "[2, 3]" (truncated to cap). */
/* IEEE half to float, exact (every half is a float); subnormals normalized. */
static float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 31, man = h & 1023, bits;
    if (exp == 0) {
        if (!man) {
            bits = sign;
        } else {
            exp = 127 - 15 + 1;
            while (!(man & 1024)) man <<= 1, exp--;
            bits = sign | (exp << 23) | ((man & 1023) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (man << 13); /* inf, or NaN keeping its payload */
    } else {
        bits = sign | ((exp - 15 + 127) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

DsaStatus dsa_safetensors_read_f32(const DsaSafetensors *st, const char *name, int ndim, const int64_t *shape,
                                   float *out) {
    if (ndim < 0 || ndim > DSA_MAX_DIMS || (ndim > 0 && !shape))
        DSA_FAIL(DSA_ERR_ARG, "%s: tensor %s: expected ndim %d (shape %s) is invalid", st->path, name, ndim,
                 shape ? "given" : "NULL");
    char want[160], found[160];
    dsa_shape_text(want, sizeof want, ndim, shape);
    const DsaStEntry *e = dsa_safetensors_find(st, name);
    if (!e) DSA_FAIL(DSA_ERR_FORMAT, "%s: tensor %s is missing (expected shape %s)", st->path, name, want);
    dsa_shape_text(found, sizeof found, e->ndim, e->shape);
    bool same = e->ndim == ndim;
    for (int d = 0; same && d < ndim; d++) same = e->shape[d] == shape[d];
    if (!same)
        DSA_FAIL(DSA_ERR_FORMAT, "%s: tensor %s has shape %s (%s), expected %s", st->path, name, found,
                 dsa_dtype_name(e->dtype), want);
    uint64_t n = (e->end - e->begin) / dsa_dtype_size(e->dtype);
    const uint8_t *src = dsa_safetensors_data(st, e);
    switch (e->dtype) {
    case DSA_F32:
        if (n) memcpy(out, src, (size_t)n * 4);
        break;
    case DSA_BF16:
        for (uint64_t i = 0; i < n; i++) out[i] = dsa_bf16_to_f32((uint16_t)(src[2 * i] | src[2 * i + 1] << 8));
        break;
    case DSA_F16:
        for (uint64_t i = 0; i < n; i++) out[i] = half_to_float((uint16_t)(src[2 * i] | src[2 * i + 1] << 8));
        break;
    case DSA_F8_E4M3:
        DSA_FAIL(DSA_ERR_FORMAT,
                 "%s: tensor %s is F8_E4M3, expected F32, BF16 or F16: FP8 weights need their block scales "
                 "(weight_scale_inv), which read_f32 does not apply; dequantize the checkpoint first",
                 st->path, name);
    default:
        DSA_FAIL(DSA_ERR_FORMAT, "%s: tensor %s is %s, expected F32, BF16 or F16 (a floating-point tensor)", st->path,
                 name, dsa_dtype_name(e->dtype));
    }
    return DSA_OK;
}
