/* hf_read.c: reading Hugging Face checkpoint directories (hf.h): one model.safetensors
 * or a model.safetensors.index.json with its shards, FP8 weights dequantized with their
 * block scales (DSA-SPEC §3.2).
 *
 * Open validates everything that does not depend on the caller: the index against the
 * shards (every weight_map entry is in its shard, every shard tensor is in weight_map
 * under that shard), each shard's own header (safetensors.h), and the FP8 pairing (every
 * F8_E4M3 tensor is a 2-D "<p>.weight" with an F32 or BF16 2-D "<p>.weight_scale_inv",
 * every scale has its F8 weight). The scale's shape depends on the block size, which
 * the caller may change after open (config.json's quantization_config), so it is checked
 * when the weight is read.
 *
 * NOTE: decisions where hf.h is silent.
 *  - metadata.total_size of the index is not checked (transformers does not either, and
 *    published checkpoints disagree on whether scales count); extra index keys are ignored.
 *  - Files in the directory that the index does not name are ignored.
 *  - A directory with neither model.safetensors.index.json nor model.safetensors is
 *    DSA_ERR_IO (nothing to read), like a missing file.
 *  - A weight_scale_inv next to a weight that is not F8_E4M3 is refused: applying it or
 *    ignoring it would both be guesses.
 *  - Other dtypes (integers) are listed as tensors; dsa_hf_read_f32 refuses them by name.
 */
#include "checkpoints/hf.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cJSON.h>

#include "core/fileutil.h"
#include "core/mem.h"

static const char INDEX_NAME[] = "model.safetensors.index.json";
static const char SINGLE_NAME[] = "model.safetensors";
static const char SCALE_SUFFIX[] = "_scale_inv"; /* "<p>.weight" + this */
static const char WEIGHT_SUFFIX[] = ".weight";

typedef struct {
    char index_path[DSA_HF_PATH_CAP + 64]; /* the index, or the single file: what a missing tensor names */
    size_t tensors_bytes;
    size_t shards_bytes;
} ReaderPriv;

/* One tensor of the checkpoint while open builds the list (scales included). */
typedef struct {
    const char *name;
    int shard;
    const DsaStEntry *entry;
} Item;

static int cmp_item(const void *a, const void *b) { return strcmp(((const Item *)a)->name, ((const Item *)b)->name); }

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !memcmp(s + n - k, suffix, k);
}

static const Item *find_item(const Item *items, int n, const char *name) {
    Item key = {.name = name};
    return n ? bsearch(&key, items, (size_t)n, sizeof *items, cmp_item) : NULL;
}

static const char *priv_index_path(const DsaHfReader *r) { return ((const ReaderPriv *)r->priv)->index_path; }

/* ---- the index ---------------------------------------------------------------------- */

/* A weight_map entry: tensor name -> shard number (order of first mention). */
typedef struct {
    const char *name; /* inside the parsed JSON */
    int shard;
} MapEntry;

static int cmp_map(const void *a, const void *b) {
    return strcmp(((const MapEntry *)a)->name, ((const MapEntry *)b)->name);
}

/* A shard file name must be a plain name inside the directory. */
static bool plain_file_name(const char *s) {
    return s[0] && !strchr(s, '/') && strcmp(s, ".") && strcmp(s, "..");
}

/* The shard names of the index, in order of first mention (pointers into the JSON). */
typedef struct {
    const char **names;
    int count, cap;
} NameList;

static DsaStatus names_add(NameList *l, const char *name, int *index) {
    /* entries of one shard are usually adjacent: try the last one first */
    if (l->count && !strcmp(l->names[l->count - 1], name)) {
        *index = l->count - 1;
        return DSA_OK;
    }
    for (int i = 0; i < l->count; i++)
        if (!strcmp(l->names[i], name)) {
            *index = i;
            return DSA_OK;
        }
    if (l->count == l->cap) {
        int cap = l->cap ? 2 * l->cap : 16;
        const char **p = dsa_realloc(l->names, (size_t)l->cap * sizeof *p, (size_t)cap * sizeof *p);
        if (!p) DSA_FAIL(DSA_ERR_NOMEM, "out of memory listing %d shard names", cap);
        l->names = p, l->cap = cap;
    }
    l->names[l->count] = name;
    *index = l->count++;
    return DSA_OK;
}

/* Allocate the shard array (zeroed) for n shards. */
static DsaStatus alloc_shards(DsaHfReader *r, int n) {
    ReaderPriv *p = r->priv;
    p->shards_bytes = (size_t)(n > 0 ? n : 1) * sizeof *r->shards;
    return dsa_alloc((void **)&r->shards, p->shards_bytes, "checkpoint shard list");
}

/* Open the shards named by the index and check the index against them; fills *items
 * (every tensor, scales included, with its shard). */
static DsaStatus open_sharded(DsaHfReader *r, const char *index_path, Item **items_out, int *n_items_out,
                              size_t *items_bytes_out) {
    DsaStatus st = DSA_OK;
    char *text = NULL;
    size_t len = 0;
    cJSON *root = NULL;
    MapEntry *map = NULL;
    size_t map_bytes = 0;
    NameList shards = {0};
    Item *items = NULL;
    size_t items_bytes = 0;
    DSA_TRY(dsa_file_read_all(index_path, &text, &len));
    root = cJSON_ParseWithLength(text, len);
    if (!root) DSA_FAIL_GOTO(st, out, DSA_ERR_FORMAT, "%s: not valid JSON", index_path);
    if (!cJSON_IsObject(root)) DSA_FAIL_GOTO(st, out, DSA_ERR_FORMAT, "%s: not a JSON object", index_path);
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!cJSON_IsObject(wm))
        DSA_FAIL_GOTO(st, out, DSA_ERR_FORMAT, "%s: \"weight_map\" is %s, expected an object of tensor -> shard file",
                      index_path, wm ? "not an object" : "missing");
    int n = cJSON_GetArraySize(wm);
    map_bytes = (size_t)(n > 0 ? n : 1) * sizeof *map;
    DSA_TRY_GOTO(st, dsa_alloc((void **)&map, map_bytes, "weight_map"), out);
    const cJSON *kv;
    int k = 0;
    cJSON_ArrayForEach(kv, wm) {
        if (!cJSON_IsString(kv))
            DSA_FAIL_GOTO(st, out, DSA_ERR_FORMAT, "%s: weight_map entry of tensor %s is not a file name (a string)",
                          index_path, kv->string);
        if (!plain_file_name(kv->valuestring))
            DSA_FAIL_GOTO(st, out, DSA_ERR_FORMAT,
                          "%s: weight_map puts tensor %s in \"%s\", which is not a plain file name inside the "
                          "checkpoint directory",
                          index_path, kv->string, kv->valuestring);
        map[k].name = kv->string;
        DSA_TRY_GOTO(st, names_add(&shards, kv->valuestring, &map[k].shard), out);
        k++;
    }
    if (n > 1) qsort(map, (size_t)n, sizeof *map, cmp_map);
    for (int i = 1; i < n; i++)
        if (!strcmp(map[i - 1].name, map[i].name))
            DSA_FAIL_GOTO(st, out, DSA_ERR_FORMAT, "%s: weight_map lists tensor %s twice", index_path, map[i].name);

    /* Open the shards; a missing one is named with a tensor the index puts there. */
    DSA_TRY_GOTO(st, alloc_shards(r, shards.count), out);
    for (int s = 0; s < shards.count; s++) {
        char path[DSA_HF_PATH_CAP + 256];
        if (snprintf(path, sizeof path, "%s/%s", r->dir, shards.names[s]) >= (int)sizeof path)
            DSA_FAIL_GOTO(st, out, DSA_ERR_ARG, "%s: shard path too long: %s", index_path, shards.names[s]);
        struct stat sb;
        if (stat(path, &sb) != 0) {
            const char *who = "?";
            for (int i = 0; i < n; i++)
                if (map[i].shard == s) {
                    who = map[i].name;
                    break;
                }
            DSA_FAIL_GOTO(st, out, DSA_ERR_FORMAT, "%s: weight_map puts tensor %s in shard %s, but %s: %s",
                          index_path, who, shards.names[s], path, strerror(errno));
        }
        DSA_TRY_GOTO(st, dsa_safetensors_open(&r->shards[s], path), out);
        r->n_shards++;
    }
    /* Every weight_map entry is in its shard. */
    for (int i = 0; i < n; i++)
        if (!dsa_safetensors_find(&r->shards[map[i].shard], map[i].name))
            DSA_FAIL_GOTO(st, out, DSA_ERR_FORMAT, "%s: weight_map puts tensor %s in %s, which does not hold it",
                          index_path, map[i].name, r->shards[map[i].shard].path);
    /* Every shard tensor is in weight_map, under its own shard: then the shards hold
     * exactly the n tensors of the map. */
    for (int s = 0; s < r->n_shards; s++) {
        const DsaSafetensors *sh = &r->shards[s];
        for (int e = 0; e < sh->count; e++) {
            MapEntry key = {.name = sh->entries[e].name};
            const MapEntry *m = n ? bsearch(&key, map, (size_t)n, sizeof *map, cmp_map) : NULL;
            if (!m)
                DSA_FAIL_GOTO(st, out, DSA_ERR_FORMAT, "%s: tensor %s is not listed in %s's weight_map", sh->path,
                              key.name, index_path);
            if (m->shard != s)
                DSA_FAIL_GOTO(st, out, DSA_ERR_FORMAT,
                              "%s: tensor %s is in this shard too, but %s's weight_map puts it in %s", sh->path,
                              key.name, index_path, r->shards[m->shard].path);
        }
    }
    items_bytes = (size_t)(n > 0 ? n : 1) * sizeof *items;
    DSA_TRY_GOTO(st, dsa_alloc((void **)&items, items_bytes, "checkpoint tensor list"), out);
    for (int i = 0; i < n; i++) {
        const DsaSafetensors *sh = &r->shards[map[i].shard];
        const DsaStEntry *e = dsa_safetensors_find(sh, map[i].name);
        items[i] = (Item){.name = e->name, .shard = map[i].shard, .entry = e}; /* names owned by the shard */
    }
    *items_out = items, *n_items_out = n, *items_bytes_out = items_bytes;
    items = NULL;
out:
    dsa_free(items, items_bytes);
    dsa_free(shards.names, (size_t)shards.cap * sizeof *shards.names);
    dsa_free(map, map_bytes);
    cJSON_Delete(root);
    dsa_free(text, len + 1);
    return st;
}

static DsaStatus open_single(DsaHfReader *r, const char *path, Item **items_out, int *n_items_out,
                             size_t *items_bytes_out) {
    DSA_TRY(alloc_shards(r, 1));
    DSA_TRY(dsa_safetensors_open(&r->shards[0], path));
    r->n_shards = 1;
    const DsaSafetensors *sh = &r->shards[0];
    size_t bytes = (size_t)(sh->count > 0 ? sh->count : 1) * sizeof(Item);
    Item *items = NULL;
    DSA_TRY(dsa_alloc((void **)&items, bytes, "checkpoint tensor list"));
    for (int e = 0; e < sh->count; e++)
        items[e] = (Item){.name = sh->entries[e].name, .shard = 0, .entry = &sh->entries[e]};
    *items_out = items, *n_items_out = sh->count, *items_bytes_out = bytes;
    return DSA_OK;
}

/* ---- FP8 pairing and the tensor list ------------------------------------------------ */

/* items: sorted by name. Attach scales to their F8 weights and fill r->tensors. */
static DsaStatus build_tensors(DsaHfReader *r, const Item *items, int n) {
    ReaderPriv *p = r->priv;
    int count = 0;
    char buf[1024];
    for (int i = 0; i < n; i++) {
        const Item *it = &items[i];
        const char *file = r->shards[it->shard].path;
        r->total_bytes += it->entry->end - it->entry->begin;
        if (ends_with(it->name, ".weight_scale_inv")) {
            size_t base = strlen(it->name) - strlen(SCALE_SUFFIX);
            if (base >= sizeof buf) DSA_FAIL(DSA_ERR_FORMAT, "%s: tensor %.200s...: name too long", file, it->name);
            memcpy(buf, it->name, base);
            buf[base] = '\0';
            const Item *w = find_item(items, n, buf);
            if (!w)
                DSA_FAIL(DSA_ERR_FORMAT, "%s: tensor %s is a block scale, but its weight %s is missing from %s", file,
                         it->name, buf, p->index_path);
            if (w->entry->dtype != DSA_F8_E4M3)
                DSA_FAIL(DSA_ERR_FORMAT,
                         "%s: tensor %s is a block scale, but its weight %s is %s, not F8_E4M3 (in %s)", file,
                         it->name, buf, dsa_dtype_name(w->entry->dtype), r->shards[w->shard].path);
            if (it->entry->dtype != DSA_F32 && it->entry->dtype != DSA_BF16)
                DSA_FAIL(DSA_ERR_FORMAT, "%s: tensor %s (block scale of %s) is %s, expected F32 (or BF16)", file,
                         it->name, buf, dsa_dtype_name(it->entry->dtype));
            if (it->entry->ndim != 2)
                DSA_FAIL(DSA_ERR_FORMAT, "%s: tensor %s (block scale of %s) has %d dims, expected 2", file, it->name,
                         buf, it->entry->ndim);
            continue;
        }
        if (it->entry->dtype == DSA_F8_E4M3) {
            if (!ends_with(it->name, WEIGHT_SUFFIX))
                DSA_FAIL(DSA_ERR_FORMAT,
                         "%s: tensor %s is F8_E4M3, but only \"<name>.weight\" tensors may be FP8 (their block "
                         "scale is \"<name>.weight_scale_inv\")",
                         file, it->name);
            if (it->entry->ndim != 2)
                DSA_FAIL(DSA_ERR_FORMAT, "%s: tensor %s is F8_E4M3 with %d dims; FP8 block weights must be 2-D", file,
                         it->name, it->entry->ndim);
            if (snprintf(buf, sizeof buf, "%s%s", it->name, SCALE_SUFFIX) >= (int)sizeof buf)
                DSA_FAIL(DSA_ERR_FORMAT, "%s: tensor %.200s...: name too long", file, it->name);
            if (!find_item(items, n, buf))
                DSA_FAIL(DSA_ERR_FORMAT, "%s: tensor %s is F8_E4M3, but its block scale %s is missing from %s", file,
                         it->name, buf, p->index_path);
        }
        count++;
    }
    p->tensors_bytes = (size_t)(count > 0 ? count : 1) * sizeof *r->tensors;
    DSA_TRY(dsa_alloc((void **)&r->tensors, p->tensors_bytes, "checkpoint tensor list"));
    for (int i = 0; i < n; i++) {
        const Item *it = &items[i];
        if (ends_with(it->name, ".weight_scale_inv")) continue;
        DsaHfTensor *t = &r->tensors[r->count++];
        *t = (DsaHfTensor){.name = it->name, .dtype = it->entry->dtype, .ndim = it->entry->ndim,
                           .shard = it->shard, .entry = it->entry, .scale_shard = -1};
        memcpy(t->shape, it->entry->shape, sizeof t->shape);
        if (t->dtype == DSA_F8_E4M3) {
            snprintf(buf, sizeof buf, "%s%s", it->name, SCALE_SUFFIX);
            const Item *s = find_item(items, n, buf);
            t->scale_shard = s->shard;
            t->scale = s->entry;
        }
    }
    DSA_ASSERT(r->count == count); /* items sorted => tensors sorted */
    return DSA_OK;
}

DsaStatus dsa_hf_open(DsaHfReader *r, const char *dir) {
    memset(r, 0, sizeof *r);
    if (snprintf(r->dir, sizeof r->dir, "%s", dir) >= (int)sizeof r->dir)
        DSA_FAIL(DSA_ERR_ARG, "checkpoint directory path too long (%zu bytes): %.200s...", strlen(dir), dir);
    r->block[0] = r->block[1] = DSA_HF_DEFAULT_BLOCK;
    DsaStatus st = DSA_OK;
    Item *items = NULL;
    int n_items = 0;
    size_t items_bytes = 0;
    DSA_TRY(dsa_alloc(&r->priv, sizeof(ReaderPriv), "checkpoint reader"));
    ReaderPriv *p = r->priv;
    memset(p, 0, sizeof *p);
    struct stat sb;
    if (stat(dir, &sb) != 0)
        DSA_FAIL_GOTO(st, fail, DSA_ERR_IO, "%s: cannot open checkpoint directory: %s", dir, strerror(errno));
    if (!S_ISDIR(sb.st_mode)) DSA_FAIL_GOTO(st, fail, DSA_ERR_IO, "%s: not a directory", dir);
    snprintf(p->index_path, sizeof p->index_path, "%s/%s", dir, INDEX_NAME);
    if (stat(p->index_path, &sb) == 0) {
        r->sharded = true;
        DSA_TRY_GOTO(st, open_sharded(r, p->index_path, &items, &n_items, &items_bytes), fail);
    } else {
        snprintf(p->index_path, sizeof p->index_path, "%s/%s", dir, SINGLE_NAME);
        if (stat(p->index_path, &sb) != 0)
            DSA_FAIL_GOTO(st, fail, DSA_ERR_IO, "%s: no %s and no %s: not a Hugging Face checkpoint directory", dir,
                          INDEX_NAME, SINGLE_NAME);
        DSA_TRY_GOTO(st, open_single(r, p->index_path, &items, &n_items, &items_bytes), fail);
    }
    if (n_items > 1) qsort(items, (size_t)n_items, sizeof *items, cmp_item);
    DSA_TRY_GOTO(st, build_tensors(r, items, n_items), fail);
    dsa_free(items, items_bytes);
    return DSA_OK;
fail:
    dsa_free(items, items_bytes);
    dsa_hf_close(r);
    return st;
}

void dsa_hf_close(DsaHfReader *r) {
    ReaderPriv *p = r->priv;
    for (int s = 0; s < r->n_shards; s++) dsa_safetensors_close(&r->shards[s]);
    if (p) {
        dsa_free(r->shards, p->shards_bytes);
        dsa_free(r->tensors, p->tensors_bytes);
        dsa_free(p, sizeof *p);
    }
    memset(r, 0, sizeof *r);
}

static int cmp_key_tensor(const void *key, const void *elem) {
    return strcmp((const char *)key, ((const DsaHfTensor *)elem)->name);
}

const DsaHfTensor *dsa_hf_find(const DsaHfReader *r, const char *name) {
    if (r->count == 0) return NULL;
    return bsearch(name, r->tensors, (size_t)r->count, sizeof *r->tensors, cmp_key_tensor);
}

const char *dsa_hf_file_of(const DsaHfReader *r, const DsaHfTensor *t) { return r->shards[t->shard].path; }

/* ---- reading ------------------------------------------------------------------------ */

/* Drop the pages of bytes [begin, end) of a shard's data buffer from the resident set.
 * NOTE: the range is rounded outwards to whole pages, which may drop a page of a
 * neighbouring tensor too: harmless, the mapping is read-only and private and never
 * written, so a later access reads the page back from the file. */
static void release_pages(const DsaSafetensors *sh, const DsaStEntry *e) {
    if (e->end == e->begin) return;
    long page = sysconf(_SC_PAGESIZE);
    /* the map starts on a page boundary and its last page is whole (mmap rounds up) */
    uintptr_t pg = (uintptr_t)page, base = (uintptr_t)sh->map;
    uintptr_t lo = (uintptr_t)(sh->buffer + e->begin) - base, hi = (uintptr_t)(sh->buffer + e->end) - base;
    lo = lo / pg * pg;
    hi = (hi + pg - 1) / pg * pg;
    (void)madvise((void *)(base + lo), hi - lo, MADV_DONTNEED); /* advice only: failure changes nothing but memory */
}

/* Dequantize F8 weight t into out (its shape already checked). */
static DsaStatus read_fp8(DsaHfReader *r, const DsaHfTensor *t, float *out) {
    const DsaSafetensors *wsh = &r->shards[t->shard], *ssh = &r->shards[t->scale_shard];
    const DsaStEntry *s = t->scale;
    if (r->block[0] <= 0 || r->block[1] <= 0)
        DSA_FAIL(DSA_ERR_ARG, "%s: tensor %s: FP8 block size [%lld, %lld] is not positive", wsh->path, t->name,
                 (long long)r->block[0], (long long)r->block[1]);
    int64_t want[2];
    dsa_fp8_block_scale_shape(t->shape[0], t->shape[1], r->block, want);
    if (s->shape[0] != want[0] || s->shape[1] != want[1])
        DSA_FAIL(DSA_ERR_FORMAT,
                 "%s: tensor %s has shape [%lld, %lld], expected [%lld, %lld]: one scale per %lldx%lld block of "
                 "weight %s [%lld, %lld]",
                 ssh->path, s->name, (long long)s->shape[0], (long long)s->shape[1], (long long)want[0],
                 (long long)want[1], (long long)r->block[0], (long long)r->block[1], t->name,
                 (long long)t->shape[0], (long long)t->shape[1]);
    int64_t ns = want[0] * want[1];
    float *scales = NULL;
    size_t scale_bytes = (size_t)(ns > 0 ? ns : 1) * sizeof *scales;
    DSA_TRY(dsa_alloc((void **)&scales, scale_bytes, "FP8 block scales"));
    /* F32 or BF16 (checked at open), at any offset: read_f32 copies bytes */
    DsaStatus st = dsa_safetensors_read_f32(ssh, s->name, 2, s->shape, scales);
    if (st != DSA_OK) {
        dsa_free(scales, scale_bytes);
        return st;
    }
    dsa_fp8_block_dequantize(dsa_safetensors_data(wsh, t->entry), scales, t->shape[0], t->shape[1], r->block, out);
    dsa_free(scales, scale_bytes);
    release_pages(ssh, s);
    return DSA_OK;
}

DsaStatus dsa_hf_read_f32(DsaHfReader *r, const char *name, int ndim, const int64_t *shape, float *out) {
    if (ndim < 0 || ndim > DSA_MAX_DIMS || (ndim > 0 && !shape))
        DSA_FAIL(DSA_ERR_ARG, "%s: tensor %s: expected ndim %d (shape %s) is invalid", r->dir, name, ndim,
                 shape ? "given" : "NULL");
    char want[160], found[160];
    dsa_shape_text(want, sizeof want, ndim, shape);
    DsaHfTensor *t = (DsaHfTensor *)dsa_hf_find(r, name);
    if (!t) DSA_FAIL(DSA_ERR_FORMAT, "%s: tensor %s is missing (expected shape %s)", priv_index_path(r), name, want);
    const DsaSafetensors *sh = &r->shards[t->shard];
    if (t->dtype == DSA_F8_E4M3) {
        dsa_shape_text(found, sizeof found, t->ndim, t->shape);
        bool same = t->ndim == ndim;
        for (int d = 0; same && d < ndim; d++) same = t->shape[d] == shape[d];
        if (!same)
            DSA_FAIL(DSA_ERR_FORMAT, "%s: tensor %s has shape %s (F8_E4M3), expected %s", sh->path, name, found, want);
        DSA_TRY(read_fp8(r, t, out));
    } else {
        DSA_TRY(dsa_safetensors_read_f32(sh, name, ndim, shape, out));
    }
    release_pages(sh, t->entry);
    return DSA_OK;
}
