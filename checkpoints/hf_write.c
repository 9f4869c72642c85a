/* hf_write.c: writing Hugging Face checkpoint directories one tensor at a time (hf.h).
 *
 * plan records names, dtypes and shapes (a hash table finds names in O(1), so ~10^5
 * tensors of a 671B checkpoint plan in linear time); start splits them into shards,
 * computes each shard's layout with safetensors.h's writer code (dsa_safetensors_layout:
 * the same header text, padding and element-size order as dsa_safetensors_write), creates
 * each file at its full size (ftruncate) and writes its header; put writes one tensor's
 * bytes with pwrite at their final offset; finish checks that every tensor was put,
 * fsyncs the shards and writes model.safetensors.index.json (several shards only).
 *
 * NOTE: decisions where hf.h is silent.
 *  - Shard sizes count tensor bytes only (headers excluded), as transformers'
 *    max_shard_size does; index metadata.total_size is the sum of all tensors' bytes.
 *  - Files are opened per put (no descriptor per shard is held), so any number of
 *    shards works within the descriptor limit.
 *  - The index is written to a temporary name, fsynced and renamed (dsa_rename_durable),
 *    so a crash never leaves a partial index. Its keys are sorted, indented by 2, like
 *    transformers' save_pretrained.
 *  - start with a single shard removes a model.safetensors.index.json already in the
 *    directory (readers would prefer it over the new model.safetensors); with several
 *    shards, a stale model.safetensors is removed for the same reason (transformers
 *    reads the single file first).
 *  - Names that are not UTF-8 or are "__metadata__" pass plan and are refused by start
 *    (DSA_ERR_ARG from the safetensors layout, naming the shard file and the tensor).
 *  - A file that exists is overwritten; abort removes every file start created.
 *  - After any failed call the writer should be aborted; put after a failed put is
 *    allowed (each put writes only its own tensor's range).
 */
#include "checkpoints/hf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/fileutil.h"
#include "core/mem.h"

static const char INDEX_NAME[] = "model.safetensors.index.json";
static const char SINGLE_NAME[] = "model.safetensors";

typedef struct {
    char *name; /* dsa_malloc'ed copy */
    size_t name_bytes;
    DsaDType dtype;
    int ndim;
    int64_t shape[DSA_MAX_DIMS];
    uint64_t bytes;
    int shard;
    uint64_t offset; /* in the shard file */
    bool put;
} Planned;

typedef struct {
    char path[DSA_HF_PATH_CAP + 64];
    int first, count; /* planned tensors [first, first + count) */
    uint64_t data_bytes;
    bool created;
} Shard;

typedef struct {
    Planned *t;
    int count, cap;
    int *hash; /* (hash_cap) index + 1 into t, 0 = empty; open addressing */
    int hash_cap;
    Shard *shards;
    int n_shards;
    bool started, finished, index_written;
    char index_path[DSA_HF_PATH_CAP + 64];
} WriterPriv;

static uint64_t hash_name(const char *s) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

/* Slot of `name` in the table: its slot, or the empty slot where it would go. */
static int hash_slot(const WriterPriv *p, const char *name) {
    int mask = p->hash_cap - 1;
    int i = (int)(hash_name(name) & (uint64_t)mask);
    while (p->hash[i] && strcmp(p->t[p->hash[i] - 1].name, name)) i = (i + 1) & mask;
    return i;
}

static Planned *find_planned(WriterPriv *p, const char *name) {
    if (!p->hash_cap) return NULL;
    int h = p->hash[hash_slot(p, name)];
    return h ? &p->t[h - 1] : NULL;
}

/* Keep the table at most half full. */
static DsaStatus hash_grow(WriterPriv *p) {
    if (2 * (p->count + 1) <= p->hash_cap) return DSA_OK;
    int cap = p->hash_cap ? 2 * p->hash_cap : 64;
    int *old = p->hash, old_cap = p->hash_cap;
    DSA_TRY(dsa_alloc((void **)&p->hash, (size_t)cap * sizeof *p->hash, "checkpoint writer name table"));
    memset(p->hash, 0, (size_t)cap * sizeof *p->hash);
    p->hash_cap = cap;
    for (int i = 0; i < p->count; i++) p->hash[hash_slot(p, p->t[i].name)] = i + 1;
    dsa_free(old, (size_t)old_cap * sizeof *old);
    return DSA_OK;
}

DsaStatus dsa_hf_writer_init(DsaHfWriter *w, const char *dir, uint64_t max_shard_bytes) {
    memset(w, 0, sizeof *w);
    if (snprintf(w->dir, sizeof w->dir, "%s", dir) >= (int)sizeof w->dir)
        DSA_FAIL(DSA_ERR_ARG, "checkpoint directory path too long (%zu bytes): %.200s...", strlen(dir), dir);
    w->max_shard_bytes = max_shard_bytes;
    DSA_TRY(dsa_alloc(&w->priv, sizeof(WriterPriv), "checkpoint writer"));
    memset(w->priv, 0, sizeof(WriterPriv));
    return DSA_OK;
}

DsaStatus dsa_hf_writer_plan(DsaHfWriter *w, const char *name, DsaDType dtype, int ndim, const int64_t *shape) {
    WriterPriv *p = w->priv;
    DSA_ASSERT(p);
    if (p->started) DSA_FAIL(DSA_ERR_ARG, "%s: tensor %s planned after start", w->dir, name ? name : "(null)");
    if (!name || !name[0]) DSA_FAIL(DSA_ERR_ARG, "%s: a tensor with an empty name", w->dir);
    if (!dsa_dtype_name(dtype)) DSA_FAIL(DSA_ERR_ARG, "%s: tensor %s: invalid dtype %d", w->dir, name, (int)dtype);
    if (ndim < 0 || ndim > DSA_MAX_DIMS || (ndim > 0 && !shape))
        DSA_FAIL(DSA_ERR_ARG, "%s: tensor %s: ndim %d outside [0, %d]", w->dir, name, ndim, DSA_MAX_DIMS);
    uint64_t bytes = dsa_dtype_size(dtype);
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0)
            DSA_FAIL(DSA_ERR_ARG, "%s: tensor %s: shape[%d] = %lld", w->dir, name, d, (long long)shape[d]);
        if (shape[d] && bytes > (UINT64_MAX >> 12) / (uint64_t)shape[d])
            DSA_FAIL(DSA_ERR_ARG, "%s: tensor %s: byte count overflows", w->dir, name);
        bytes *= (uint64_t)shape[d];
    }
    if (find_planned(p, name)) DSA_FAIL(DSA_ERR_ARG, "%s: tensor %s planned twice", w->dir, name);
    if (p->count == p->cap) {
        int cap = p->cap ? 2 * p->cap : 256;
        Planned *t = dsa_realloc(p->t, (size_t)p->cap * sizeof *t, (size_t)cap * sizeof *t);
        if (!t) DSA_FAIL(DSA_ERR_NOMEM, "%s: out of memory planning %d tensors", w->dir, cap);
        p->t = t, p->cap = cap;
    }
    DSA_TRY(hash_grow(p));
    Planned *t = &p->t[p->count];
    memset(t, 0, sizeof *t);
    t->name_bytes = strlen(name) + 1;
    DSA_TRY(dsa_alloc((void **)&t->name, t->name_bytes, "tensor name"));
    memcpy(t->name, name, t->name_bytes);
    t->dtype = dtype, t->ndim = ndim, t->bytes = bytes;
    for (int d = 0; d < ndim; d++) t->shape[d] = shape[d];
    p->hash[hash_slot(p, name)] = ++p->count;
    return DSA_OK;
}

/* Split the planned tensors into shards, greedily in plan order. */
static DsaStatus assign_shards(DsaHfWriter *w) {
    WriterPriv *p = w->priv;
    int n = 1;
    uint64_t cur = 0;
    for (int i = 0; i < p->count; i++) {
        if (w->max_shard_bytes && cur > 0 && cur + p->t[i].bytes > w->max_shard_bytes)
            n++, cur = 0;
        p->t[i].shard = n - 1;
        cur += p->t[i].bytes;
    }
    DSA_TRY(dsa_alloc((void **)&p->shards, (size_t)n * sizeof *p->shards, "checkpoint shard list"));
    memset(p->shards, 0, (size_t)n * sizeof *p->shards);
    p->n_shards = n;
    for (int i = 0; i < p->count; i++) {
        Shard *s = &p->shards[p->t[i].shard];
        if (!s->count) s->first = i;
        s->count++;
        s->data_bytes += p->t[i].bytes;
    }
    for (int s = 0; s < n; s++) {
        if (n == 1)
            snprintf(p->shards[s].path, sizeof p->shards[s].path, "%s/%s", w->dir, SINGLE_NAME);
        else
            snprintf(p->shards[s].path, sizeof p->shards[s].path, "%s/model-%05d-of-%05d.safetensors", w->dir, s + 1,
                     n);
    }
    snprintf(p->index_path, sizeof p->index_path, "%s/%s", w->dir, INDEX_NAME);
    return DSA_OK;
}

static DsaStatus pwrite_all(int fd, const void *buf, uint64_t n, uint64_t offset, const char *path, const char *what) {
    const uint8_t *b = buf;
    while (n > 0) {
        size_t chunk = n > (1u << 30) ? (1u << 30) : (size_t)n;
        ssize_t k = pwrite(fd, b, chunk, (off_t)offset);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) DSA_FAIL(DSA_ERR_IO, "%s: writing %s failed: %s", path, what, strerror(errno));
        if (k == 0) DSA_FAIL(DSA_ERR_IO, "%s: writing %s wrote nothing (disk full?)", path, what);
        b += k, n -= (uint64_t)k, offset += (uint64_t)k;
    }
    return DSA_OK;
}

/* Lay out shard s, create its file at full size, write its header. */
static DsaStatus start_shard(WriterPriv *p, int s) {
    Shard *sh = &p->shards[s];
    DsaStatus st = DSA_OK;
    DsaStTensorRef *refs = NULL;
    size_t refs_bytes = (size_t)(sh->count > 0 ? sh->count : 1) * sizeof *refs;
    DsaStLayout lay = {0};
    int fd = -1;
    DSA_TRY(dsa_alloc((void **)&refs, refs_bytes, "shard tensor list"));
    for (int k = 0; k < sh->count; k++) {
        const Planned *t = &p->t[sh->first + k];
        refs[k] = (DsaStTensorRef){.name = t->name, .dtype = t->dtype, .ndim = t->ndim};
        memcpy(refs[k].shape, t->shape, sizeof refs[k].shape);
    }
    static const char *const meta_keys[] = {"format"}, *const meta_values[] = {"pt"};
    DSA_TRY_GOTO(st, dsa_safetensors_layout(&lay, sh->path, refs, sh->count, meta_keys, meta_values, 1), out);
    for (int k = 0; k < sh->count; k++) p->t[sh->first + k].offset = lay.offsets[k];
    fd = dsa_open_retry(sh->path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) DSA_FAIL_GOTO(st, out, DSA_ERR_IO, "%s: cannot create: %s", sh->path, strerror(errno));
    sh->created = true;
    if (ftruncate(fd, (off_t)lay.file_bytes) != 0)
        DSA_FAIL_GOTO(st, out, DSA_ERR_IO, "%s: cannot size the file to %llu bytes: %s", sh->path,
                      (unsigned long long)lay.file_bytes, strerror(errno));
    DSA_TRY_GOTO(st, pwrite_all(fd, lay.header, lay.header_bytes, 0, sh->path, "the header"), out);
out:
    if (fd >= 0 && close(fd) != 0 && st == DSA_OK)
        st = dsa_error_set(DSA_ERR_IO, __FILE__, __LINE__, "%s: close failed: %s", sh->path, strerror(errno));
    dsa_safetensors_layout_free(&lay);
    dsa_free(refs, refs_bytes);
    return st;
}

/* Remove `path` if it exists (a stale file that readers would prefer). */
static DsaStatus remove_stale(const char *path) {
    if (unlink(path) != 0 && errno != ENOENT)
        DSA_FAIL(DSA_ERR_IO, "%s: cannot remove the stale file: %s", path, strerror(errno));
    return DSA_OK;
}

DsaStatus dsa_hf_writer_start(DsaHfWriter *w) {
    WriterPriv *p = w->priv;
    DSA_ASSERT(p);
    if (p->started) DSA_FAIL(DSA_ERR_ARG, "%s: checkpoint writer started twice", w->dir);
    struct stat sb;
    if (stat(w->dir, &sb) != 0) DSA_FAIL(DSA_ERR_IO, "%s: cannot access: %s", w->dir, strerror(errno));
    if (!S_ISDIR(sb.st_mode)) DSA_FAIL(DSA_ERR_IO, "%s: not a directory", w->dir);
    p->started = true;
    DSA_TRY(assign_shards(w));
    char other[DSA_HF_PATH_CAP + 64];
    snprintf(other, sizeof other, "%s/%s", w->dir, p->n_shards == 1 ? INDEX_NAME : SINGLE_NAME);
    DSA_TRY(remove_stale(other));
    for (int s = 0; s < p->n_shards; s++) DSA_TRY(start_shard(p, s));
    return DSA_OK;
}

DsaStatus dsa_hf_writer_put(DsaHfWriter *w, const char *name, const void *data) {
    WriterPriv *p = w->priv;
    DSA_ASSERT(p);
    if (!p->started || p->finished)
        DSA_FAIL(DSA_ERR_ARG, "%s: tensor %s put %s", w->dir, name, p->finished ? "after finish" : "before start");
    Planned *t = find_planned(p, name);
    if (!t) DSA_FAIL(DSA_ERR_ARG, "%s: tensor %s was not planned", w->dir, name);
    const char *path = p->shards[t->shard].path;
    if (t->put) DSA_FAIL(DSA_ERR_ARG, "%s: tensor %s put twice", path, name);
    if (t->bytes && !data) DSA_FAIL(DSA_ERR_ARG, "%s: tensor %s: data is NULL", path, name);
    if (t->bytes) {
        int fd = dsa_open_retry(path, O_WRONLY | O_CLOEXEC, 0);
        if (fd < 0) DSA_FAIL(DSA_ERR_IO, "%s: cannot open for writing tensor %s: %s", path, name, strerror(errno));
        char what[300];
        snprintf(what, sizeof what, "tensor %.256s", name);
        DsaStatus st = pwrite_all(fd, data, t->bytes, t->offset, path, what);
        if (close(fd) != 0 && st == DSA_OK)
            st = dsa_error_set(DSA_ERR_IO, __FILE__, __LINE__, "%s: close failed after tensor %s: %s", path, name,
                               strerror(errno));
        DSA_TRY(st);
    }
    t->put = true;
    return DSA_OK;
}

static int cmp_planned_ptr(const void *a, const void *b) {
    return strcmp((*(const Planned *const *)a)->name, (*(const Planned *const *)b)->name);
}

/* Append `s` as a JSON string literal to f (names are UTF-8, checked by the layout). */
static void json_string(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if (*c == '"' || *c == '\\')
            fprintf(f, "\\%c", *c);
        else if (*c < 0x20)
            fprintf(f, "\\u%04x", *c);
        else
            fputc(*c, f);
    }
    fputc('"', f);
}

/* model.safetensors.index.json: metadata.total_size and weight_map, keys sorted. */
static DsaStatus write_index(DsaHfWriter *w) {
    WriterPriv *p = w->priv;
    DsaStatus st = DSA_OK;
    const Planned **sorted = NULL;
    size_t sorted_bytes = (size_t)(p->count > 0 ? p->count : 1) * sizeof *sorted;
    FILE *f = NULL;
    char tmp[DSA_HF_PATH_CAP + 128];
    dsa_temp_path(tmp, sizeof tmp, p->index_path);
    DSA_TRY(dsa_alloc((void **)&sorted, sorted_bytes, "index tensor list"));
    uint64_t total = 0;
    for (int i = 0; i < p->count; i++) sorted[i] = &p->t[i], total += p->t[i].bytes;
    if (p->count > 1) qsort(sorted, (size_t)p->count, sizeof *sorted, cmp_planned_ptr);
    f = fopen(tmp, "wb");
    if (!f) DSA_FAIL_GOTO(st, out, DSA_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
    fprintf(f, "{\n  \"metadata\": {\n    \"total_size\": %llu\n  },\n  \"weight_map\": {", (unsigned long long)total);
    for (int i = 0; i < p->count; i++) {
        const char *shard = strrchr(p->shards[sorted[i]->shard].path, '/') + 1;
        fprintf(f, "%s\n    ", i ? "," : "");
        json_string(f, sorted[i]->name);
        fprintf(f, ": ");
        json_string(f, shard);
    }
    fprintf(f, "\n  }\n}\n");
    if (fflush(f) != 0 || ferror(f)) DSA_FAIL_GOTO(st, out, DSA_ERR_IO, "%s: write failed: %s", tmp, strerror(errno));
    if (fsync(fileno(f)) != 0) DSA_FAIL_GOTO(st, out, DSA_ERR_IO, "%s: fsync failed: %s", tmp, strerror(errno));
    int rc = fclose(f);
    f = NULL;
    if (rc != 0) DSA_FAIL_GOTO(st, out, DSA_ERR_IO, "%s: close failed: %s", tmp, strerror(errno));
    DSA_TRY_GOTO(st, dsa_rename_durable(tmp, p->index_path), out);
    p->index_written = true;
out:
    if (f) fclose(f);
    if (st != DSA_OK) unlink(tmp);
    dsa_free(sorted, sorted_bytes);
    return st;
}

DsaStatus dsa_hf_writer_finish(DsaHfWriter *w) {
    WriterPriv *p = w->priv;
    DSA_ASSERT(p);
    if (!p->started || p->finished)
        DSA_FAIL(DSA_ERR_ARG, "%s: checkpoint writer finished %s", w->dir, p->finished ? "twice" : "before start");
    for (int i = 0; i < p->count; i++)
        if (!p->t[i].put)
            DSA_FAIL(DSA_ERR_ARG, "%s: tensor %s was planned but never put", p->shards[p->t[i].shard].path,
                     p->t[i].name);
    for (int s = 0; s < p->n_shards; s++) DSA_TRY(dsa_fsync_path(p->shards[s].path));
    if (p->n_shards > 1) DSA_TRY(write_index(w));
    DSA_TRY(dsa_fsync_path(w->dir));
    p->finished = true;
    return DSA_OK;
}

void dsa_hf_writer_abort(DsaHfWriter *w) {
    WriterPriv *p = w->priv;
    if (!p) {
        memset(w, 0, sizeof *w);
        return;
    }
    if (!p->finished) {
        for (int s = 0; s < p->n_shards; s++)
            if (p->shards[s].created) unlink(p->shards[s].path);
        if (p->index_written) unlink(p->index_path);
    }
    for (int i = 0; i < p->count; i++) dsa_free(p->t[i].name, p->t[i].name_bytes);
    dsa_free(p->t, (size_t)p->cap * sizeof *p->t);
    dsa_free(p->hash, (size_t)p->hash_cap * sizeof *p->hash);
    dsa_free(p->shards, (size_t)p->n_shards * sizeof *p->shards);
    dsa_free(p, sizeof *p);
    memset(w, 0, sizeof *w);
}
