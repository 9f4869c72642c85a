/* pack.c: `dsa pack` as a library call: options, input expansion, the document sink
 * the importers feed, and the run itself (formats in pack.h; importers in
 * data/import_*.c).
 *
 * A run: refuse (or with `overwrite` remove) existing shards of the prefix, expand the
 * inputs, fix the token kind where the format decides it (so a missing --vocab-size is
 * reported before any reading), import every input in order, close the shard set. On
 * any failure the shards written so far are removed.
 */
#include "core/log.h"
#include "data/pack.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/fileutil.h"
#include "core/mem.h"
#include "core/strutil.h"
#include "data/tokenizer_bytes.h"

static const char *const format_names[] = {"text", "jsonl", "u16", "u32", "megatron", "synthetic"};
enum { NUM_FORMATS = sizeof format_names / sizeof format_names[0] };

void dsa_pack_options_default(DsaPackOptions *o) {
    memset(o, 0, sizeof *o);
    o->format = DSA_PACK_TEXT;
    o->shard_tokens = 1ll << 26; /* 4096 chunks of 16Ki: see the NOTE in pack.h */
    o->chunk_tokens = DSA_SHARD_DEFAULT_CHUNK_TOKENS;
    o->zstd_level = DSA_SHARD_DEFAULT_ZSTD_LEVEL;
    o->eos_id = -1;
    o->text_key = "text";
    o->ids_key = "input_ids";
    dsa_synthetic_options_default(&o->synthetic);
}

DsaStatus dsa_pack_format_parse(const char *name, DsaPackFormat *out) {
    for (int i = 0; i < NUM_FORMATS; i++) {
        if (!strcmp(name, format_names[i])) {
            *out = (DsaPackFormat)i;
            return DSA_OK;
        }
    }
    const char *candidates[NUM_FORMATS + 1];
    for (int i = 0; i < NUM_FORMATS; i++) candidates[i] = format_names[i];
    candidates[NUM_FORMATS] = NULL;
    const char *guess = dsa_closest_word(name, candidates);
    DSA_FAIL(DSA_ERR_ARG, "unknown format \"%s\"%s%s%s (expected text, jsonl, u16, u32, megatron or synthetic)", name,
             guess ? "; did you mean \"" : "", guess ? guess : "", guess ? "\"?" : "");
}

const char *dsa_pack_format_name(DsaPackFormat f) {
    return (int)f >= 0 && (int)f < NUM_FORMATS ? format_names[f] : "?";
}

/* ---- the sink ---------------------------------------------------------------------- */

static const char *kind_name(DsaPackKind kind) {
    switch (kind) {
    case DSA_PACK_KIND_BYTES: return "text (bytes-v1 tokenizer)";
    case DSA_PACK_KIND_IDS: return "pre-tokenized ids";
    case DSA_PACK_KIND_SYNTHETIC: return "synthetic";
    default: return "none";
    }
}

/* vocab_size and eos_id of a kind, checked against what the options say. */
static DsaStatus sink_fix_vocab(DsaPackSink *s, DsaPackKind kind, const char *where) {
    const DsaPackOptions *o = s->opts;
    if (kind == DSA_PACK_KIND_BYTES) {
        if ((o->vocab_size && o->vocab_size != DSA_BYTES_VOCAB_SIZE) ||
            (o->eos_id >= 0 && o->eos_id != DSA_BYTES_EOS_ID))
            DSA_FAIL(DSA_ERR_ARG,
                     "%s: text is tokenized by bytes-v1 (vocab 257, EOS 256); --vocab-size/--eos-id "
                     "are for pre-tokenized input and conflict with it",
                     where);
        s->vocab_size = DSA_BYTES_VOCAB_SIZE;
        s->eos_id = DSA_BYTES_EOS_ID;
    } else if (kind == DSA_PACK_KIND_IDS) {
        if (!o->vocab_size || o->eos_id < 0)
            DSA_FAIL(DSA_ERR_ARG, "%s: pre-tokenized input needs --vocab-size and --eos-id (missing: %s%s%s)", where,
                     o->vocab_size ? "" : "--vocab-size", !o->vocab_size && o->eos_id < 0 ? ", " : "",
                     o->eos_id < 0 ? "--eos-id" : "");
        if (o->vocab_size > (1ull << 32))
            DSA_FAIL(DSA_ERR_ARG, "--vocab-size %llu is above 2^32 (token ids are uint32)",
                     (unsigned long long)o->vocab_size);
        if ((uint64_t)o->eos_id >= o->vocab_size)
            DSA_FAIL(DSA_ERR_ARG, "--eos-id %lld must be < --vocab-size %llu", (long long)o->eos_id,
                     (unsigned long long)o->vocab_size);
        s->vocab_size = o->vocab_size;
        s->eos_id = (uint32_t)o->eos_id;
    } else {
        if (o->eos_id >= 0 && o->eos_id != DSA_SYN_EOS)
            DSA_FAIL(DSA_ERR_ARG, "synthetic-v1 has EOS id %d; --eos-id %lld conflicts", DSA_SYN_EOS,
                     (long long)o->eos_id);
        s->vocab_size = o->vocab_size ? o->vocab_size : o->synthetic.vocab_size;
        s->eos_id = DSA_SYN_EOS;
    }
    return DSA_OK;
}

DsaStatus dsa_pack_sink_kind(DsaPackSink *s, DsaPackKind kind, const char *where) {
    if (s->kind == kind) return DSA_OK;
    if (s->kind != DSA_PACK_KIND_NONE)
        DSA_FAIL(DSA_ERR_FORMAT, "%s: %s record, but %s fixed this run to %s; one run packs one kind", where,
                 kind_name(kind), s->kind_where, kind_name(s->kind));
    DSA_TRY(sink_fix_vocab(s, kind, where));
    s->kind = kind;
    snprintf(s->kind_where, sizeof s->kind_where, "%s", where);
    return DSA_OK;
}

DsaStatus dsa_pack_sink_reserve(DsaPackSink *s, int64_t n) {
    if (s->doc_len + n <= s->doc_cap) return DSA_OK;
    int64_t cap = s->doc_cap ? s->doc_cap : 4096;
    while (cap < s->doc_len + n) cap *= 2;
    uint32_t *grown = dsa_realloc(s->doc, (size_t)s->doc_cap * sizeof *grown, (size_t)cap * sizeof *grown);
    if (!grown) DSA_FAIL(DSA_ERR_NOMEM, "out of memory for a document of %lld tokens", (long long)cap);
    s->doc = grown;
    s->doc_cap = cap;
    return DSA_OK;
}

static DsaStatus sink_open_set(DsaPackSink *s) {
    const DsaPackOptions *o = s->opts;
    DsaShardSetOptions so = {.out_prefix = o->out_prefix, .shard_tokens = o->shard_tokens};
    so.meta = dsa_shard_meta_default(s->vocab_size, s->eos_id);
    so.meta.chunk_tokens = o->chunk_tokens;
    so.meta.zstd_level = o->zstd_level;
    const char *name = s->kind == DSA_PACK_KIND_BYTES       ? DSA_BYTES_TOKENIZER_NAME
                       : s->kind == DSA_PACK_KIND_SYNTHETIC ? DSA_SYN_TOKENIZER_NAME
                       : o->tokenizer && *o->tokenizer      ? o->tokenizer
                                                            : "external";
    snprintf(so.meta.tokenizer, sizeof so.meta.tokenizer, "%s", name);
    DSA_TRY(dsa_shardset_open(&s->set, &so));
    return DSA_OK;
}

DsaStatus dsa_pack_sink_end_doc(DsaPackSink *s) {
    if (s->doc_len == 0) return DSA_OK;
    DSA_ASSERT(s->kind != DSA_PACK_KIND_NONE);
    if (!s->set) DSA_TRY(sink_open_set(s));
    int64_t n = s->doc_len;
    s->doc_len = 0;
    DSA_TRY(dsa_shardset_add_doc(s->set, s->doc, n));
    return DSA_OK;
}

void dsa_pack_sink_progress(DsaPackSink *s, int64_t done) {
    dsa_progress_update(&s->progress, s->progress_base + done);
}

/* ---- inputs ------------------------------------------------------------------------ */

typedef struct {
    char **items;
    int count, cap;
} PathList;

static void paths_free(PathList *l) {
    for (int i = 0; i < l->count; i++) dsa_free(l->items[i], strlen(l->items[i]) + 1);
    dsa_free(l->items, (size_t)l->cap * sizeof *l->items);
    memset(l, 0, sizeof *l);
}

static DsaStatus paths_add(PathList *l, const char *dir, const char *name) {
    if (l->count == l->cap) {
        int cap = l->cap ? l->cap * 2 : 16;
        char **grown = dsa_realloc(l->items, (size_t)l->cap * sizeof *grown, (size_t)cap * sizeof *grown);
        if (!grown) DSA_FAIL(DSA_ERR_NOMEM, "out of memory for the input list");
        l->items = grown;
        l->cap = cap;
    }
    size_t len = (dir ? strlen(dir) + 1 : 0) + strlen(name) + 1;
    char *p = dsa_malloc(len);
    if (!p) DSA_FAIL(DSA_ERR_NOMEM, "out of memory for the input list");
    snprintf(p, len, "%s%s%s", dir ? dir : "", dir ? "/" : "", name);
    l->items[l->count++] = p;
    return DSA_OK;
}

static int cmp_names(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Regular files of `dir` sorted by name (megatron: its *.idx files). */
static DsaStatus paths_add_dir(PathList *l, const char *dir, int megatron) {
    DIR *d = opendir(dir);
    if (!d) DSA_FAIL(DSA_ERR_IO, "%s: cannot list the input directory", dir);
    int first = l->count;
    DsaStatus st = DSA_OK;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.' || (megatron && !dsa_ends_with(e->d_name, ".idx"))) continue;
        char path[4096];
        struct stat sb;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode)) continue;
        DSA_TRY_GOTO(st, paths_add(l, dir, e->d_name), done);
    }
    if (l->count == first)
        DSA_FAIL_GOTO(st, done, DSA_ERR_IO, "input directory %s holds no %s", dir,
                      megatron ? ".idx files" : "regular files");
    qsort(l->items + first, (size_t)(l->count - first), sizeof *l->items, cmp_names);
done:
    closedir(d);
    return st;
}

static bool is_stdin(const char *path) { return !strcmp(path, "-"); }

static DsaStatus paths_expand(PathList *l, const DsaPackOptions *o) {
    int stdin_seen = 0;
    for (int i = 0; i < o->n_inputs; i++) {
        const char *in = o->inputs[i];
        struct stat sb;
        int megatron = o->format == DSA_PACK_MEGATRON;
        if (is_stdin(in)) { /* standard input: raw token streams only (import_raw.c) */
            if (o->format != DSA_PACK_U16 && o->format != DSA_PACK_U32)
                DSA_FAIL(DSA_ERR_ARG, "input \"-\" (standard input) is only for --format u16 or u32, not %s; name "
                         "a file \"./-\" to read one called -", format_names[o->format]);
            if (stdin_seen++)
                DSA_FAIL(DSA_ERR_ARG, "input \"-\" (standard input) is given twice; it can be read only once");
            DSA_TRY(paths_add(l, NULL, in));
        } else if (stat(in, &sb) == 0 && S_ISDIR(sb.st_mode)) {
            DSA_TRY(paths_add_dir(l, in, megatron));
        } else if (megatron || (stat(in, &sb) == 0 && S_ISREG(sb.st_mode))) {
            DSA_TRY(paths_add(l, NULL, in)); /* a Megatron prefix is no file: its importer checks */
        } else {
            DSA_FAIL(DSA_ERR_IO, "input %s: no such file or directory", in);
        }
    }
    return DSA_OK;
}

/* Progress total: input bytes (.bin bytes for megatron), tokens for synthetic. */
static int64_t inputs_total(const PathList *l, const DsaPackOptions *o) {
    if (o->format == DSA_PACK_SYNTHETIC) {
        int64_t docs = (o->synthetic.total_tokens + o->synthetic.doc_tokens - 1) / o->synthetic.doc_tokens;
        return docs * o->synthetic.doc_tokens;
    }
    int64_t total = 0;
    for (int i = 0; i < l->count; i++) {
        int64_t size = 0;
        if (is_stdin(l->items[i])) return 0; /* unknown */
        DsaStatus st = o->format == DSA_PACK_MEGATRON ? dsa_pack_megatron_bin_size(l->items[i], &size)
                                                      : dsa_file_size(l->items[i], &size);
        if (st == DSA_OK) total += size;
    }
    dsa_error_clear(); /* a missing input is reported by its importer, with context */
    return total;
}

/* ---- the run ----------------------------------------------------------------------- */

static DsaStatus check_options(const DsaPackOptions *o) {
    if ((int)o->format < 0 || (int)o->format >= NUM_FORMATS)
        DSA_FAIL(DSA_ERR_ARG, "unknown pack format %d", (int)o->format);
    if (!o->out_prefix || !*o->out_prefix) DSA_FAIL(DSA_ERR_ARG, "no output prefix given (--out)");
    if (o->format == DSA_PACK_SYNTHETIC && o->n_inputs > 0)
        DSA_FAIL(DSA_ERR_ARG, "--format synthetic takes no inputs, got %d (first: %s)", o->n_inputs, o->inputs[0]);
    if (o->format != DSA_PACK_SYNTHETIC && o->n_inputs <= 0)
        DSA_FAIL(DSA_ERR_ARG, "--format %s needs at least one input file or directory", format_names[o->format]);
    if (o->shard_tokens < 2) DSA_FAIL(DSA_ERR_ARG, "--shard-tokens %lld must be >= 2", (long long)o->shard_tokens);
    if (o->chunk_tokens > 0 && o->shard_tokens / o->chunk_tokens > DSA_PACK_WARN_CHUNKS_PER_SHARD)
        DSA_LOG_WARN("--shard-tokens %lld / --chunk-tokens %lld = %lld chunks per shard: opening such a shard takes "
                     "seconds (HDF5 1.10 chunk lookups are quadratic); keep it under %d chunks",
                     (long long)o->shard_tokens, (long long)o->chunk_tokens,
                     (long long)(o->shard_tokens / o->chunk_tokens), DSA_PACK_WARN_CHUNKS_PER_SHARD);
    if (o->tokenizer && strlen(o->tokenizer) >= DSA_TOKENIZER_NAME_CAP)
        DSA_FAIL(DSA_ERR_ARG, "tokenizer name \"%s\" is longer than %d characters", o->tokenizer,
                 DSA_TOKENIZER_NAME_CAP - 1);
    if (o->format == DSA_PACK_JSONL && !(o->text_key && *o->text_key) && !(o->ids_key && *o->ids_key))
        DSA_FAIL(DSA_ERR_ARG, "jsonl: both the text key and the ids key are empty; set at least one");
    return DSA_OK;
}

/* Remove <prefix>-00000.h5, -00001.h5, ... up to the first that does not exist. */
static void remove_shards(const char *prefix) {
    char path[DSA_PATH_CAP + 32];
    for (int i = 0;; i++) {
        dsa_shardset_path(path, sizeof path, prefix, i);
        if (unlink(path) != 0) break;
    }
}

/* Is shard 0 of the prefix from a set whose pack did not finish (it names the manifest,
 * which is missing)? */
static bool interrupted_set(const char *shard0, const char *manifest) {
    DsaShard sh;
    if (dsa_shard_open(&sh, shard0) != DSA_OK) {
        dsa_error_clear();
        return false;
    }
    const char *base = strrchr(manifest, '/') ? strrchr(manifest, '/') + 1 : manifest;
    bool ours = !strcmp(sh.meta.pack_manifest, base);
    dsa_shard_close(&sh);
    return ours;
}

/* Make the prefix free for this run: remove the temporaries of killed packs into it;
 * refuse a finished set unless `overwrite`; replace an interrupted one (its manifest is
 * missing) with a warning. The manifest goes first, so a set being replaced is never
 * taken for a finished one. */
static DsaStatus check_output(const DsaPackOptions *o) {
    char shard0[DSA_PATH_CAP + 32], manifest[DSA_PATH_CAP + 32], dir[DSA_PATH_CAP], base[DSA_PATH_CAP + 2];
    dsa_shardset_path(shard0, sizeof shard0, o->out_prefix, 0);
    dsa_shardset_manifest_path(manifest, sizeof manifest, o->out_prefix);
    const char *slash = strrchr(o->out_prefix, '/');
    snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - o->out_prefix) + (slash == o->out_prefix) : 1,
             slash ? o->out_prefix : ".");
    snprintf(base, sizeof base, "%s-", slash ? slash + 1 : o->out_prefix);
    dsa_temp_remove_stale(dir, base, false);                                       /* .P-NNNNN.h5.tmp.PID */
    dsa_temp_remove_stale(dir, strrchr(manifest, '/') ? strrchr(manifest, '/') + 1 : manifest, true);
    bool have_shards = access(shard0, F_OK) == 0, have_manifest = access(manifest, F_OK) == 0;
    if (have_shards && !o->overwrite) {
        if (have_manifest || !interrupted_set(shard0, manifest))
            DSA_FAIL(DSA_ERR_ARG,
                     "output shards already exist (%s); pass --force to replace them or choose another --out", shard0);
        dsa_log(DSA_LOG_WARN, "replacing the shards of %s: a pack that did not finish (%s is missing)", o->out_prefix,
                manifest);
    }
    if (have_manifest) {
        if (unlink(manifest) != 0)
            DSA_FAIL(DSA_ERR_IO, "%s: cannot remove the old set manifest: %s", manifest, strerror(errno));
        DSA_TRY(dsa_fsync_path(dir));
    }
    remove_shards(o->out_prefix);
    return DSA_OK;
}

static DsaStatus import_one(DsaPackSink *s, const char *path) {
    switch (s->opts->format) {
    case DSA_PACK_TEXT: return dsa_pack_import_text(s, path);
    case DSA_PACK_JSONL: return dsa_pack_import_jsonl(s, path);
    case DSA_PACK_U16: return dsa_pack_import_raw(s, path, 2);
    case DSA_PACK_U32: return dsa_pack_import_raw(s, path, 4);
    case DSA_PACK_MEGATRON: return dsa_pack_import_megatron(s, path);
    default: DSA_FAIL(DSA_ERR_ARG, "format %s has no input files", dsa_pack_format_name(s->opts->format));
    }
}

static DsaStatus pack_inputs(DsaPackSink *s, const PathList *inputs) {
    const DsaPackOptions *o = s->opts;
    if (o->format == DSA_PACK_SYNTHETIC) return dsa_pack_import_synthetic(s);
    for (int i = 0; i < inputs->count; i++) {
        DsaStatus st = import_one(s, inputs->items[i]);
        if (st != DSA_OK) {
            dsa_error_push(__FILE__, __LINE__, "packing input %d of %d: %s", i + 1, inputs->count,
                           is_stdin(inputs->items[i]) ? "standard input" : inputs->items[i]);
            return st;
        }
        int64_t size = 0;
        if (is_stdin(inputs->items[i])) continue;
        if (o->format == DSA_PACK_MEGATRON ? dsa_pack_megatron_bin_size(inputs->items[i], &size) == DSA_OK
                                           : dsa_file_size(inputs->items[i], &size) == DSA_OK)
            s->progress_base += size;
        dsa_pack_sink_progress(s, 0);
    }
    return DSA_OK;
}

DsaStatus dsa_pack_run(const DsaPackOptions *o, DsaShardSetStats *stats) {
    DSA_TRY(check_options(o));
    DSA_TRY(check_output(o));
    PathList inputs = {0};
    DsaPackSink s = {.opts = o};
    DsaStatus st = DSA_OK;
    DSA_TRY_GOTO(st, paths_expand(&inputs, o), fail);
    static const DsaPackKind format_kind[NUM_FORMATS] = {DSA_PACK_KIND_BYTES, DSA_PACK_KIND_NONE,
                                                         DSA_PACK_KIND_IDS,   DSA_PACK_KIND_IDS,
                                                         DSA_PACK_KIND_IDS,   DSA_PACK_KIND_SYNTHETIC};
    if (format_kind[o->format] != DSA_PACK_KIND_NONE) {
        char where[64];
        snprintf(where, sizeof where, "--format %s", format_names[o->format]);
        DSA_TRY_GOTO(st, dsa_pack_sink_kind(&s, format_kind[o->format], where), fail);
    }
    dsa_progress_start(&s.progress, "pack", o->format == DSA_PACK_SYNTHETIC ? "tokens" : "bytes",
                       inputs_total(&inputs, o), o->show_progress);
    DSA_TRY_GOTO(st, pack_inputs(&s, &inputs), fail);
    if (!s.set) {
        char names[600] = "";
        for (int i = 0; i < inputs.count && strlen(names) < 400; i++) {
            size_t n = strlen(names);
            snprintf(names + n, sizeof names - n, "%s%s", i ? ", " : "",
                     is_stdin(inputs.items[i]) ? "standard input" : inputs.items[i]);
        }
        DSA_FAIL_GOTO(st, fail, DSA_ERR_FORMAT, "no documents found in %s%s (%s empty); nothing to pack", names,
                      strlen(names) >= 400 && inputs.count > 1 ? ", ..." : "", inputs.count == 1 ? "it is" : "all are");
    }
    DsaShardSet *set = s.set;
    s.set = NULL;
    DSA_TRY_GOTO(st, dsa_shardset_close(set, stats), fail);
    dsa_progress_finish(&s.progress);
    dsa_free(s.doc, (size_t)s.doc_cap * sizeof *s.doc);
    paths_free(&inputs);
    return DSA_OK;
fail:
    dsa_shardset_abort(s.set);
    remove_shards(o->out_prefix);
    dsa_free(s.doc, (size_t)s.doc_cap * sizeof *s.doc);
    paths_free(&inputs);
    return st;
}
