/* shard_set.c: sets of shards, what `dsa pack` writes (shard.h, "writing a set"): the
 * split of documents over shards, the set's manifest written last, and the check a
 * reader makes that a shard's set was finished.
 *
 * NOTE (completion marker): shards are renamed into place one by one as they fill, so a
 * pack stopped half way leaves complete shards that look like a smaller data set. The
 * manifest P.manifest.json is the marker that the set is whole: written only after the
 * last shard is in place, listing every shard with its token and document counts and
 * byte size. Every shard of a set records the manifest's name (attribute pack_manifest),
 * so a reader holding one shard knows a manifest must exist and list it; without one
 * the shard is refused by name (an interrupted pack), and a shard that differs from its
 * entry (replaced or truncated after packing) is refused too.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cJSON.h>

#include "core/fileutil.h"
#include "core/mem.h"
#include "data/shard.h"
#include "data/shard_internal.h"

typedef struct {
    char file[DSA_PATH_CAP + 16]; /* shard file name, without directory */
    int64_t tokens, docs;
} SetEntry;

struct DsaShardSet {
    DsaShardSetOptions opts;
    char prefix[DSA_PATH_CAP];
    DsaShardWriter *current;
    DsaShardSetStats stats;
    SetEntry *entries; /* (entries_cap) the closed shards */
    int entries_cap;
};

static const char *base_name(const char *path) {
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

void dsa_shardset_path(char *buf, size_t cap, const char *out_prefix, int index) {
    snprintf(buf, cap, "%s-%05d.h5", out_prefix, index);
}

void dsa_shardset_manifest_path(char *buf, size_t cap, const char *out_prefix) {
    snprintf(buf, cap, "%s.manifest.json", out_prefix);
}

static DsaStatus open_next_shard(DsaShardSet *set) {
    char path[DSA_PATH_CAP + 16];
    dsa_shardset_path(path, sizeof path, set->prefix, set->stats.num_shards);
    DSA_TRY(dsa_shard_writer_open(&set->current, path, &set->opts.meta));
    set->stats.num_shards++;
    return DSA_OK;
}

static DsaStatus close_current_shard(DsaShardSet *set) {
    DsaShardWriter *w = set->current;
    set->current = NULL;
    int i = set->stats.num_shards - 1;
    if (i >= set->entries_cap) {
        int cap = set->entries_cap ? 2 * set->entries_cap : 16;
        SetEntry *grown = dsa_realloc(set->entries, (size_t)set->entries_cap * sizeof *grown, (size_t)cap * sizeof *grown);
        if (!grown) {
            dsa_shard_writer_abort(w);
            DSA_FAIL(DSA_ERR_NOMEM, "%s: out of memory for the shard list", set->prefix);
        }
        set->entries = grown;
        set->entries_cap = cap;
    }
    char path[DSA_PATH_CAP + 16];
    dsa_shardset_path(path, sizeof path, set->prefix, i);
    snprintf(set->entries[i].file, sizeof set->entries[i].file, "%s", base_name(path));
    set->entries[i].tokens = dsa_shard_writer_tokens(w);
    set->entries[i].docs = dsa_shard_writer_docs(w);
    set->stats.num_tokens += set->entries[i].tokens;
    DSA_TRY(dsa_shard_writer_close(w));
    return DSA_OK;
}

static void set_free(DsaShardSet *set) {
    dsa_free(set->entries, (size_t)set->entries_cap * sizeof *set->entries);
    dsa_free(set, sizeof *set);
}

DsaStatus dsa_shardset_open(DsaShardSet **out, const DsaShardSetOptions *opts) {
    *out = NULL;
    if (!opts->out_prefix || !*opts->out_prefix) DSA_FAIL(DSA_ERR_ARG, "no output prefix given for the shards");
    if (strlen(opts->out_prefix) >= DSA_PATH_CAP - 16) DSA_FAIL(DSA_ERR_ARG, "output prefix too long: %s", opts->out_prefix);
    if (opts->shard_tokens < 2) DSA_FAIL(DSA_ERR_ARG, "shard_tokens %lld must be >= 2", (long long)opts->shard_tokens);
    DsaShardMeta meta = opts->meta;
    char manifest[DSA_PATH_CAP + 32];
    dsa_shardset_manifest_path(manifest, sizeof manifest, opts->out_prefix);
    if (strlen(base_name(manifest)) >= sizeof meta.pack_manifest)
        DSA_FAIL(DSA_ERR_ARG, "output prefix %s: file name too long", opts->out_prefix);
    snprintf(meta.pack_manifest, sizeof meta.pack_manifest, "%s", base_name(manifest));
    DSA_TRY(shard_validate_meta(&meta, opts->out_prefix));
    char dir[DSA_PATH_CAP];
    snprintf(dir, sizeof dir, "%s", opts->out_prefix);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = '\0';
        DSA_TRY(dsa_mkdir_p(dir));
    }
    DsaShardSet *set = dsa_calloc(1, sizeof *set);
    if (!set) DSA_FAIL(DSA_ERR_NOMEM, "out of memory for the shard set");
    set->opts = *opts;
    set->opts.meta = meta;
    snprintf(set->prefix, sizeof set->prefix, "%s", opts->out_prefix);
    set->opts.out_prefix = set->prefix;
    *out = set;
    return DSA_OK;
}

DsaStatus dsa_shardset_add_doc(DsaShardSet *set, const uint32_t *tokens, int64_t n) {
    if (n <= 0) return DSA_OK;
    int64_t limit = set->opts.shard_tokens;
    /* Start a new shard when the document (with its EOS) does not fit in what is left. */
    if (set->current && dsa_shard_writer_tokens(set->current) + n + 1 > limit) DSA_TRY(close_current_shard(set));
    /* A document longer than a whole shard is split; only its last piece ends in EOS. */
    while (1) {
        if (!set->current) DSA_TRY(open_next_shard(set));
        int64_t room = limit - dsa_shard_writer_tokens(set->current);
        if (n + 1 <= room) break;
        int64_t take = n < room ? n : room;
        DSA_TRY(dsa_shard_writer_append(set->current, tokens, take));
        DSA_TRY(dsa_shard_writer_end_doc(set->current, 0));
        DSA_TRY(close_current_shard(set));
        tokens += take;
        n -= take;
    }
    DSA_TRY(dsa_shard_writer_append(set->current, tokens, n));
    /* n == 0 here only when a split left nothing but the EOS: keep it as its own piece. */
    if (n == 0) DSA_TRY(dsa_shard_writer_append(set->current, &set->opts.meta.eos_id, 1));
    DSA_TRY(dsa_shard_writer_end_doc(set->current, n > 0));
    set->stats.num_docs++;
    return DSA_OK;
}

/* The manifest of the closed set, written atomically (fileutil.h temporary name). */
static DsaStatus write_manifest(const DsaShardSet *set) {
    char path[DSA_PATH_CAP + 32], tmp[DSA_PATH_CAP + 96], shard[DSA_PATH_CAP + 16];
    dsa_shardset_manifest_path(path, sizeof path, set->prefix);
    const DsaShardMeta *m = &set->opts.meta;
    cJSON *root = cJSON_CreateObject(), *list = NULL;
    bool ok = root && cJSON_AddNumberToObject(root, "format_version", DSA_SHARD_MANIFEST_VERSION) &&
              (list = cJSON_AddArrayToObject(root, "shards"));
    int64_t docs = 0;
    for (int i = 0; ok && i < set->stats.num_shards; i++) {
        const SetEntry *e = &set->entries[i];
        int64_t bytes = 0;
        dsa_shardset_path(shard, sizeof shard, set->prefix, i);
        if (dsa_file_size(shard, &bytes) != DSA_OK) {
            cJSON_Delete(root);
            return dsa_error_status();
        }
        cJSON *o = cJSON_CreateObject();
        ok = o && cJSON_AddItemToArray(list, o) && cJSON_AddStringToObject(o, "file", e->file) &&
             cJSON_AddNumberToObject(o, "tokens", (double)e->tokens) &&
             cJSON_AddNumberToObject(o, "documents", (double)e->docs) &&
             cJSON_AddNumberToObject(o, "bytes", (double)bytes);
        docs += e->docs;
    }
    ok = ok && cJSON_AddNumberToObject(root, "tokens", (double)set->stats.num_tokens) &&
         cJSON_AddNumberToObject(root, "documents", (double)docs) &&
         cJSON_AddNumberToObject(root, "vocab_size", (double)m->vocab_size) &&
         cJSON_AddNumberToObject(root, "eos_id", (double)m->eos_id) &&
         cJSON_AddStringToObject(root, "tokenizer", m->tokenizer);
    char *text = ok ? cJSON_Print(root) : NULL;
    cJSON_Delete(root);
    if (!text) DSA_FAIL(DSA_ERR_NOMEM, "%s: building the set manifest", path);
    dsa_temp_path(tmp, sizeof tmp, path);
    size_t n = strlen(text);
    text[n] = '\n'; /* replaces the NUL: cJSON_Print leaves no final newline */
    DsaStatus st = dsa_file_write_synced(tmp, text, n + 1);
    free(text);
    if (st == DSA_OK) st = dsa_rename_durable(tmp, path);
    if (st != DSA_OK) {
        unlink(tmp);
        dsa_error_push(__FILE__, __LINE__, "writing %s, the manifest that completes the set", path);
    }
    return st;
}

DsaStatus dsa_shardset_close(DsaShardSet *set, DsaShardSetStats *stats) {
    DsaStatus st = DSA_OK;
    if (set->stats.num_docs == 0)
        DSA_FAIL_GOTO(st, fail, DSA_ERR_ARG, "%s: no documents to write (all inputs were empty)", set->prefix);
    if (set->current) DSA_TRY_GOTO(st, close_current_shard(set), fail);
    DSA_TRY_GOTO(st, write_manifest(set), fail);
    if (stats) *stats = set->stats;
    set_free(set);
    return DSA_OK;
fail:
    dsa_shardset_abort(set);
    return st;
}

void dsa_shardset_abort(DsaShardSet *set) {
    if (!set) return;
    dsa_shard_writer_abort(set->current);
    set_free(set);
}

/* ---- checking a shard against its set ----------------------------------------------- */

void dsa_shard_check_set_free(DsaShardSetCheck *c) {
    cJSON_Delete(c->root);
    c->root = NULL;
    c->path[0] = 0;
}

/* An integer field of a manifest entry (the JSON number must be a whole number). */
static bool entry_int(const cJSON *o, const char *key, int64_t *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 9007199254740992.0 ||
        v->valuedouble != (double)(int64_t)v->valuedouble)
        return false;
    *out = (int64_t)v->valuedouble;
    return true;
}

/* Parse the manifest at `path` into the check (kept for the next shard of the set). */
static DsaStatus load_manifest(DsaShardSetCheck *c, const char *path, const char *shard) {
    dsa_shard_check_set_free(c);
    struct stat sb;
    if (stat(path, &sb) != 0) {
        if (errno == ENOENT)
            DSA_FAIL(DSA_ERR_FORMAT,
                     "%s: its pack did not finish: %s, which `dsa pack` writes after the last shard, is missing (the "
                     "pack was interrupted or failed; run the same `dsa pack` again to replace the partial set)",
                     shard, path);
        DSA_FAIL(DSA_ERR_IO, "%s: cannot access %s, the manifest of its set: %s", shard, path, strerror(errno));
    }
    char *text = NULL;
    size_t len = 0;
    DSA_TRY(dsa_file_read_all(path, &text, &len));
    cJSON *root = cJSON_ParseWithLength(text, len);
    dsa_free(text, len + 1);
    const cJSON *ver = cJSON_GetObjectItemCaseSensitive(root, "format_version");
    if (!cJSON_IsObject(root) || !cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(root, "shards")) ||
        !cJSON_IsNumber(ver)) {
        cJSON_Delete(root);
        DSA_FAIL(DSA_ERR_FORMAT, "%s: not a shard set manifest (a JSON object with \"format_version\" and \"shards\")",
                 path);
    }
    if (ver->valuedouble != DSA_SHARD_MANIFEST_VERSION) {
        double v = ver->valuedouble;
        cJSON_Delete(root);
        DSA_FAIL(DSA_ERR_FORMAT, "%s: format_version %g, this dsa reads %d; regenerate the set with this `dsa pack`",
                 path, v, DSA_SHARD_MANIFEST_VERSION);
    }
    c->root = root;
    snprintf(c->path, sizeof c->path, "%s", path);
    return DSA_OK;
}

DsaStatus dsa_shard_check_set(DsaShardSetCheck *c, const DsaShard *s) {
    if (!s->meta.pack_manifest[0]) return DSA_OK; /* a lone shard */
    char path[DSA_PATH_CAP + 256];
    const char *base = base_name(s->path);
    snprintf(path, sizeof path, "%.*s%s", (int)(base - s->path), s->path, s->meta.pack_manifest);
    if (!c->root || strcmp(c->path, path) != 0) DSA_TRY(load_manifest(c, path, s->path));
    const cJSON *e = NULL, *list = cJSON_GetObjectItemCaseSensitive(c->root, "shards");
    cJSON_ArrayForEach(e, list) {
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(e, "file");
        if (cJSON_IsString(f) && !strcmp(f->valuestring, base)) break;
    }
    if (!e)
        DSA_FAIL(DSA_ERR_FORMAT, "%s: not listed in %s, the manifest of its set (a shard left from another pack into "
                 "the same prefix?)", s->path, path);
    int64_t tokens = 0, docs = 0, bytes = 0, size = 0;
    if (!entry_int(e, "tokens", &tokens) || !entry_int(e, "documents", &docs) || !entry_int(e, "bytes", &bytes))
        DSA_FAIL(DSA_ERR_FORMAT, "%s: the entry of %s lacks whole numbers \"tokens\", \"documents\" and \"bytes\"",
                 path, base);
    DSA_TRY(dsa_file_size(s->path, &size));
    if (tokens != s->num_tokens || docs != s->num_docs || bytes != size)
        DSA_FAIL(DSA_ERR_FORMAT,
                 "%s: %lld tokens, %lld documents, %lld bytes, but %s lists %lld, %lld, %lld (the shard was replaced "
                 "or damaged after packing)",
                 s->path, (long long)s->num_tokens, (long long)s->num_docs, (long long)size, path, (long long)tokens,
                 (long long)docs, (long long)bytes);
    return DSA_OK;
}
