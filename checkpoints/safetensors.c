/* safetensors.c: read the Hugging Face safetensors format (safetensors.h); the writer is
 * safetensors_write.c.
 *
 * The reader maps the file, checks the header is UTF-8, parses it with cJSON straight
 * from the map, and then checks the entries one by one and the layout as a whole; names,
 * metadata keys and values are copied into one string block so nothing points into cJSON
 * after open returns.
 */
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

#include "checkpoints/safetensors_internal.h"
#include "core/mem.h"
#include "kernels/rules/bf16.h"

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
