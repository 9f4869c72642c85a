/* safetensors.c: read and write the safetensors format (safetensors.h). */
#include "checkpoints/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cJSON.h>

#include "core/mem.h"

enum { MAX_HEADER_BYTES = 100 << 20 };

/* ---- write ------------------------------------------------------------------------- */

static DsaStatus write_all(int fd, const void *buf, size_t n, const char *path) {
    const uint8_t *p = buf;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) DSA_FAIL(DSA_ERR_IO, "%s: write failed: %s", path, strerror(errno));
        p += w, n -= (size_t)w;
    }
    return DSA_OK;
}

static int64_t ref_numel(const DsaStTensorRef *t) {
    int64_t n = 1;
    for (int d = 0; d < t->ndim; d++) n *= t->shape[d];
    return n;
}

DsaStatus dsa_safetensors_write(const char *path, const DsaStTensorRef *tensors, int count,
                                const char *const *meta_keys, const char *const *meta_values, int n_meta) {
    cJSON *root = cJSON_CreateObject();
    if (!root) DSA_FAIL(DSA_ERR_NOMEM, "%s: header", path);
    if (n_meta > 0) {
        cJSON *meta = cJSON_AddObjectToObject(root, "__metadata__");
        for (int i = 0; i < n_meta; i++) cJSON_AddStringToObject(meta, meta_keys[i], meta_values[i]);
    }
    uint64_t offset = 0;
    for (int i = 0; i < count; i++) {
        const DsaStTensorRef *t = &tensors[i];
        DSA_ASSERT(t->ndim >= 0 && t->ndim <= DSA_MAX_DIMS && dsa_dtype_name(t->dtype));
        cJSON *e = cJSON_AddObjectToObject(root, t->name);
        cJSON_AddStringToObject(e, "dtype", dsa_dtype_name(t->dtype));
        cJSON *shape = cJSON_AddArrayToObject(e, "shape");
        for (int d = 0; d < t->ndim; d++) cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)t->shape[d]));
        uint64_t bytes = (uint64_t)ref_numel(t) * dsa_dtype_size(t->dtype);
        cJSON *off = cJSON_AddArrayToObject(e, "data_offsets");
        cJSON_AddItemToArray(off, cJSON_CreateNumber((double)offset));
        cJSON_AddItemToArray(off, cJSON_CreateNumber((double)(offset + bytes)));
        offset += bytes;
    }
    char *json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!json) DSA_FAIL(DSA_ERR_NOMEM, "%s: header text", path);
    size_t jlen = strlen(json), padded = (jlen + 7) / 8 * 8;
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        free(json);
        DSA_FAIL(DSA_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    }
    DsaStatus st = DSA_OK;
    uint8_t len8[8];
    for (int b = 0; b < 8; b++) len8[b] = (uint8_t)((uint64_t)padded >> (8 * b));
    DSA_TRY_GOTO(st, write_all(fd, len8, 8, path), out);
    DSA_TRY_GOTO(st, write_all(fd, json, jlen, path), out);
    for (size_t i = jlen; i < padded; i++) DSA_TRY_GOTO(st, write_all(fd, " ", 1, path), out);
    for (int i = 0; i < count; i++) {
        const DsaStTensorRef *t = &tensors[i];
        DSA_TRY_GOTO(st, write_all(fd, t->data, (size_t)ref_numel(t) * dsa_dtype_size(t->dtype), path), out);
    }
    if (fsync(fd) != 0) DSA_FAIL_GOTO(st, out, DSA_ERR_IO, "%s: fsync failed: %s", path, strerror(errno));
out:
    if (close(fd) != 0 && st == DSA_OK) st = dsa_error_set(DSA_ERR_IO, __FILE__, __LINE__, "%s: close failed: %s", path, strerror(errno));
    free(json);
    return st;
}

/* ---- read -------------------------------------------------------------------------- */

static int cmp_begin(const void *a, const void *b) {
    const DsaStEntry *x = *(const DsaStEntry *const *)a, *y = *(const DsaStEntry *const *)b;
    return x->begin < y->begin ? -1 : x->begin > y->begin;
}

/* A JSON number that is a non-negative integer. */
static bool json_uint(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 9007199254740992.0) return false;
    if ((double)(uint64_t)v->valuedouble != v->valuedouble) return false;
    *out = (uint64_t)v->valuedouble;
    return true;
}

static DsaStatus parse_entry(const char *path, const cJSON *item, DsaStEntry *e) {
    const char *name = item->string;
    if (!cJSON_IsObject(item)) DSA_FAIL(DSA_ERR_FORMAT, "%s: tensor %s: header entry is not an object", path, name);
    const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(item, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(item, "shape");
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(item, "data_offsets");
    if (!cJSON_IsString(dtype)) DSA_FAIL(DSA_ERR_FORMAT, "%s: tensor %s: \"dtype\" missing or not a string", path, name);
    if (!cJSON_IsArray(shape)) DSA_FAIL(DSA_ERR_FORMAT, "%s: tensor %s: \"shape\" missing or not an array", path, name);
    if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2)
        DSA_FAIL(DSA_ERR_FORMAT, "%s: tensor %s: \"data_offsets\" must be [begin, end]", path, name);
    char what[1400];
    snprintf(what, sizeof what, "%s: tensor %s", path, name);
    DSA_TRY(dsa_dtype_parse(dtype->valuestring, &e->dtype, what));
    int nd = cJSON_GetArraySize(shape);
    if (nd > DSA_MAX_DIMS) DSA_FAIL(DSA_ERR_FORMAT, "%s: tensor %s has %d dims, at most %d are supported", path, name, nd, DSA_MAX_DIMS);
    e->ndim = nd;
    uint64_t numel = 1;
    for (int d = 0; d < nd; d++) {
        uint64_t v;
        if (!json_uint(cJSON_GetArrayItem(shape, d), &v))
            DSA_FAIL(DSA_ERR_FORMAT, "%s: tensor %s: shape[%d] is not a non-negative integer", path, name, d);
        e->shape[d] = (int64_t)v;
        if (v && numel > UINT64_MAX / v) DSA_FAIL(DSA_ERR_FORMAT, "%s: tensor %s: shape overflows", path, name);
        numel *= v;
    }
    if (!json_uint(cJSON_GetArrayItem(off, 0), &e->begin) || !json_uint(cJSON_GetArrayItem(off, 1), &e->end))
        DSA_FAIL(DSA_ERR_FORMAT, "%s: tensor %s: data_offsets are not non-negative integers", path, name);
    if (e->begin > e->end) DSA_FAIL(DSA_ERR_FORMAT, "%s: tensor %s: data_offsets [%llu, %llu] run backwards", path, name,
                                    (unsigned long long)e->begin, (unsigned long long)e->end);
    uint64_t want = numel * dsa_dtype_size(e->dtype);
    if (e->end - e->begin != want)
        DSA_FAIL(DSA_ERR_FORMAT, "%s: tensor %s: %llu bytes in data_offsets, but %s of %llu elements needs %llu", path,
                 name, (unsigned long long)(e->end - e->begin), dtype->valuestring, (unsigned long long)numel,
                 (unsigned long long)want);
    e->name = strdup(name);
    if (!e->name) DSA_FAIL(DSA_ERR_NOMEM, "tensor name");
    return DSA_OK;
}

static DsaStatus parse_header(DsaSafetensors *st, const char *text) {
    const char *path = st->path;
    cJSON *root = cJSON_Parse(text);
    if (!root) DSA_FAIL(DSA_ERR_FORMAT, "%s: header is not valid JSON (near byte %td)", path, cJSON_GetErrorPtr() ? cJSON_GetErrorPtr() - text : 0);
    DsaStatus status = DSA_OK;
    if (!cJSON_IsObject(root)) DSA_FAIL_GOTO(status, out, DSA_ERR_FORMAT, "%s: header is not a JSON object", path);
    int n = cJSON_GetArraySize(root);
    st->entries = calloc((size_t)n + 1, sizeof *st->entries);
    st->meta_keys = calloc((size_t)n + 1, sizeof(char *));
    st->meta_values = calloc((size_t)n + 1, sizeof(char *));
    if (!st->entries || !st->meta_keys || !st->meta_values) DSA_FAIL_GOTO(status, out, DSA_ERR_NOMEM, "%s: header", path);
    const cJSON *item;
    cJSON_ArrayForEach(item, root) {
        if (!strcmp(item->string, "__metadata__")) {
            if (!cJSON_IsObject(item)) DSA_FAIL_GOTO(status, out, DSA_ERR_FORMAT, "%s: __metadata__ is not an object", path);
            const cJSON *kv;
            int nm = cJSON_GetArraySize(item);
            free(st->meta_keys), free(st->meta_values);
            st->meta_keys = calloc((size_t)nm + 1, sizeof(char *));
            st->meta_values = calloc((size_t)nm + 1, sizeof(char *));
            if (!st->meta_keys || !st->meta_values) DSA_FAIL_GOTO(status, out, DSA_ERR_NOMEM, "%s: metadata", path);
            cJSON_ArrayForEach(kv, item) {
                if (!cJSON_IsString(kv))
                    DSA_FAIL_GOTO(status, out, DSA_ERR_FORMAT, "%s: __metadata__ value of \"%s\" is not a string", path, kv->string);
                st->meta_keys[st->n_meta] = strdup(kv->string);
                st->meta_values[st->n_meta] = strdup(kv->valuestring);
                st->n_meta++;
            }
            continue;
        }
        for (int i = 0; i < st->count; i++)
            if (!strcmp(st->entries[i].name, item->string))
                DSA_FAIL_GOTO(status, out, DSA_ERR_FORMAT, "%s: tensor %s appears twice in the header", path, item->string);
        DSA_TRY_GOTO(status, parse_entry(path, item, &st->entries[st->count]), out);
        st->count++;
    }
    /* The tensors must tile the buffer exactly: sorted by begin, each starts where the
     * previous ended, and the last ends at the end of the file. */
    DsaStEntry **order = calloc((size_t)st->count + 1, sizeof *order);
    if (!order) DSA_FAIL_GOTO(status, out, DSA_ERR_NOMEM, "%s: header", path);
    for (int i = 0; i < st->count; i++) order[i] = &st->entries[i];
    qsort(order, (size_t)st->count, sizeof *order, cmp_begin);
    uint64_t at = 0;
    for (int i = 0; i < st->count && status == DSA_OK; i++) {
        const DsaStEntry *e = order[i];
        if (e->end > st->buffer_bytes)
            status = dsa_error_set(DSA_ERR_FORMAT, __FILE__, __LINE__,
                                   "%s: tensor %s ends at byte %llu of the data, but the file holds %llu data bytes "
                                   "(truncated?)", path, e->name, (unsigned long long)e->end,
                                   (unsigned long long)st->buffer_bytes);
        else if (e->begin < at)
            status = dsa_error_set(DSA_ERR_FORMAT, __FILE__, __LINE__, "%s: tensor %s overlaps the tensor before it", path,
                                   e->name);
        else if (e->begin > at)
            status = dsa_error_set(DSA_ERR_FORMAT, __FILE__, __LINE__,
                                   "%s: %llu unused bytes before tensor %s", path, (unsigned long long)(e->begin - at), e->name);
        at = e->end;
    }
    free(order);
    if (status == DSA_OK && at != st->buffer_bytes)
        status = dsa_error_set(DSA_ERR_FORMAT, __FILE__, __LINE__,
                               "%s: %llu bytes after the last tensor (the file is %llu data bytes, tensors cover %llu)",
                               path, (unsigned long long)(st->buffer_bytes - at), (unsigned long long)st->buffer_bytes,
                               (unsigned long long)at);
out:
    cJSON_Delete(root);
    return status;
}

DsaStatus dsa_safetensors_open(DsaSafetensors *st, const char *path) {
    memset(st, 0, sizeof *st);
    snprintf(st->path, sizeof st->path, "%s", path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) DSA_FAIL(DSA_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        close(fd);
        DSA_FAIL(DSA_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
    }
    size_t size = (size_t)sb.st_size;
    if (size < 8) {
        close(fd);
        DSA_FAIL(DSA_ERR_FORMAT, "%s: %zu bytes, too short for a safetensors file (8-byte header size first)", path, size);
    }
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) DSA_FAIL(DSA_ERR_IO, "%s: mmap failed: %s", path, strerror(errno));
    st->map = map;
    st->map_bytes = size;
    const uint8_t *b = map;
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++) hlen |= (uint64_t)b[i] << (8 * i);
    DsaStatus status = DSA_OK;
    if (hlen > MAX_HEADER_BYTES || hlen > size - 8)
        DSA_FAIL_GOTO(status, fail, DSA_ERR_FORMAT, "%s: header size %llu does not fit the file of %zu bytes%s", path,
                      (unsigned long long)hlen, size, hlen > MAX_HEADER_BYTES ? " (over 100 MB: not safetensors?)" : "");
    char *text = malloc(hlen + 1);
    if (!text) DSA_FAIL_GOTO(status, fail, DSA_ERR_NOMEM, "%s: header of %llu bytes", path, (unsigned long long)hlen);
    memcpy(text, b + 8, hlen);
    text[hlen] = 0;
    st->buffer = b + 8 + hlen;
    st->buffer_bytes = size - 8 - hlen;
    status = parse_header(st, text);
    free(text);
    if (status != DSA_OK) goto fail;
    return DSA_OK;
fail:
    dsa_safetensors_close(st);
    return status;
}

void dsa_safetensors_close(DsaSafetensors *st) {
    for (int i = 0; st->entries && i < st->count; i++) free(st->entries[i].name);
    for (int i = 0; i < st->n_meta; i++) free(st->meta_keys[i]), free(st->meta_values[i]);
    free(st->entries);
    free(st->meta_keys);
    free(st->meta_values);
    if (st->map) munmap(st->map, st->map_bytes);
    memset(st, 0, sizeof *st);
}

const DsaStEntry *dsa_safetensors_find(const DsaSafetensors *st, const char *name) {
    for (int i = 0; i < st->count; i++)
        if (!strcmp(st->entries[i].name, name)) return &st->entries[i];
    return NULL;
}

const void *dsa_safetensors_data(const DsaSafetensors *st, const DsaStEntry *e) { return st->buffer + e->begin; }

const char *dsa_safetensors_meta(const DsaSafetensors *st, const char *key) {
    for (int i = 0; i < st->n_meta; i++)
        if (!strcmp(st->meta_keys[i], key)) return st->meta_values[i];
    return NULL;
}

static void shape_text(char *buf, size_t cap, int ndim, const int64_t *shape) {
    size_t n = (size_t)snprintf(buf, cap, "[");
    for (int d = 0; d < ndim && n < cap; d++) n += (size_t)snprintf(buf + n, cap - n, "%s%lld", d ? ", " : "", (long long)shape[d]);
    if (n < cap) snprintf(buf + n, cap - n, "]");
}

static float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 31, man = h & 1023, bits;
    if (exp == 0) {
        if (!man) bits = sign;
        else {
            exp = 127 - 15 + 1;
            while (!(man & 1024)) man <<= 1, exp--;
            bits = sign | (exp << 23) | ((man & 1023) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp - 15 + 127) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

DsaStatus dsa_safetensors_read_f32(const DsaSafetensors *st, const char *name, int ndim, const int64_t *shape,
                                   float *out) {
    const DsaStEntry *e = dsa_safetensors_find(st, name);
    char want[128], found[128];
    shape_text(want, sizeof want, ndim, shape);
    if (!e) DSA_FAIL(DSA_ERR_FORMAT, "%s: tensor %s is missing (expected shape %s)", st->path, name, want);
    shape_text(found, sizeof found, e->ndim, e->shape);
    bool same = e->ndim == ndim;
    for (int d = 0; same && d < ndim; d++) same = e->shape[d] == shape[d];
    if (!same) DSA_FAIL(DSA_ERR_FORMAT, "%s: tensor %s has shape %s, expected %s", st->path, name, found, want);
    int64_t n = 1;
    for (int d = 0; d < ndim; d++) n *= shape[d];
    const uint8_t *src = dsa_safetensors_data(st, e);
    switch (e->dtype) {
    case DSA_F32: memcpy(out, src, (size_t)n * 4); break;
    case DSA_BF16:
        for (int64_t i = 0; i < n; i++) {
            uint32_t bits = (uint32_t)(src[2 * i] | src[2 * i + 1] << 8) << 16;
            memcpy(&out[i], &bits, 4);
        }
        break;
    case DSA_F16:
        for (int64_t i = 0; i < n; i++) out[i] = half_to_float((uint16_t)(src[2 * i] | src[2 * i + 1] << 8));
        break;
    default:
        DSA_FAIL(DSA_ERR_FORMAT, "%s: tensor %s is %s; F32, BF16 or F16 expected here (FP8 checkpoints are imported "
                 "with dsa convert)", st->path, name, dsa_dtype_name(e->dtype));
    }
    return DSA_OK;
}
