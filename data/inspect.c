/* inspect.c: shard statistics for `dsa inspect` and the loader benchmark for
 * `dsa bench loader` (see inspect.h).
 *
 * Statistics stream a shard in blocks of whole chunks (about 1Mi tokens) through
 * dsa_shard_read, so memory is one block plus the histogram whatever the shard size.
 * The benchmark lives here too so tests can run it as a library call on tiny data.
 */
#include "data/inspect.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zstd.h>

#include "core/log.h"
#include "core/mem.h"
#include "core/progress.h"
#include "core/rng.h"
#include "data/loader.h"
#include "data/synthetic.h"

enum { BLOCK_TOKENS = 1 << 20 };

DsaInspectOptions dsa_inspect_options_default(void) {
    return (DsaInspectOptions){.top_n = DSA_INSPECT_DEFAULT_TOP, .progress = 1, .progress_min_tokens = 1 << 24};
}

/* ---- histogram: dense for vocabularies up to 2^24, else an open-addressing table ---- */

typedef struct {
    uint64_t *dense; /* (dense_len) */
    size_t dense_len;
    uint32_t *keys;  /* (cap) hash table; a slot is free when its count is 0 */
    uint64_t *counts;
    size_t cap, used;
} Histogram;

static DsaStatus hist_init(Histogram *h, uint64_t vocab, const char *path) {
    memset(h, 0, sizeof *h);
    if (vocab <= DSA_INSPECT_DENSE_VOCAB_MAX) {
        h->dense = dsa_calloc((size_t)vocab, sizeof *h->dense);
        if (!h->dense)
            DSA_FAIL(DSA_ERR_NOMEM, "%s: out of memory for a histogram of %llu token ids", path,
                     (unsigned long long)vocab);
        h->dense_len = (size_t)vocab;
        return DSA_OK;
    }
    h->cap = 1 << 16;
    h->keys = dsa_calloc(h->cap, sizeof *h->keys);
    h->counts = dsa_calloc(h->cap, sizeof *h->counts);
    if (!h->keys || !h->counts) DSA_FAIL(DSA_ERR_NOMEM, "%s: out of memory for the token histogram", path);
    return DSA_OK;
}

static void hist_free(Histogram *h) {
    dsa_free(h->dense, h->dense_len * sizeof *h->dense);
    dsa_free(h->keys, h->cap * sizeof *h->keys);
    dsa_free(h->counts, h->cap * sizeof *h->counts);
    memset(h, 0, sizeof *h);
}

static size_t hash_slot(uint32_t id, size_t mask) { return (size_t)dsa_mix64(id) & mask; }

static DsaStatus hist_grow(Histogram *h) {
    size_t cap = h->cap * 2, mask = cap - 1;
    uint32_t *keys = dsa_calloc(cap, sizeof *keys);
    uint64_t *counts = dsa_calloc(cap, sizeof *counts);
    if (!keys || !counts) {
        dsa_free(keys, cap * sizeof *keys);
        dsa_free(counts, cap * sizeof *counts);
        DSA_FAIL(DSA_ERR_NOMEM, "out of memory growing the token histogram to %zu ids", cap);
    }
    for (size_t i = 0; i < h->cap; i++) {
        if (!h->counts[i]) continue;
        size_t s = hash_slot(h->keys[i], mask);
        while (counts[s]) s = (s + 1) & mask;
        keys[s] = h->keys[i];
        counts[s] = h->counts[i];
    }
    dsa_free(h->keys, h->cap * sizeof *h->keys);
    dsa_free(h->counts, h->cap * sizeof *h->counts);
    h->keys = keys;
    h->counts = counts;
    h->cap = cap;
    return DSA_OK;
}

/* Count tokens; ids are already checked < vocab_size by the reader. */
static DsaStatus hist_add(Histogram *h, const uint32_t *tokens, int64_t n) {
    if (h->dense) {
        uint64_t *d = h->dense;
        for (int64_t i = 0; i < n; i++) d[tokens[i]]++;
        return DSA_OK;
    }
    for (int64_t i = 0; i < n; i++) {
        if ((h->used + 1) * 2 > h->cap) DSA_TRY(hist_grow(h));
        size_t mask = h->cap - 1, s = hash_slot(tokens[i], mask);
        while (h->counts[s] && h->keys[s] != tokens[i]) s = (s + 1) & mask;
        if (!h->counts[s]) {
            h->keys[s] = tokens[i];
            h->used++;
        }
        h->counts[s]++;
    }
    return DSA_OK;
}

/* Next (id, count > 0) from position *pos; returns 0 at the end. */
static int hist_next(const Histogram *h, size_t *pos, uint32_t *id, uint64_t *count) {
    if (h->dense) {
        for (; *pos < h->dense_len; (*pos)++) {
            if (h->dense[*pos]) {
                *id = (uint32_t)*pos;
                *count = h->dense[(*pos)++];
                return 1;
            }
        }
        return 0;
    }
    for (; *pos < h->cap; (*pos)++) {
        if (h->counts[*pos]) {
            *id = h->keys[*pos];
            *count = h->counts[(*pos)++];
            return 1;
        }
    }
    return 0;
}

static int top_better(DsaTokenCount a, DsaTokenCount b) { return a.count > b.count || (a.count == b.count && a.id < b.id); }

/* Distinct ids, id range, EOS count, entropy and the top-N from the histogram. */
static void hist_summarize(const Histogram *h, DsaShardStats *s, int top_n) {
    size_t pos = 0;
    uint32_t id;
    uint64_t count;
    double n = (double)s->num_tokens, entropy = 0.0;
    s->distinct_ids = 0;
    s->min_id = UINT32_MAX;
    s->max_id = 0;
    s->num_top = 0;
    while (hist_next(h, &pos, &id, &count)) {
        s->distinct_ids++;
        s->min_id = id < s->min_id ? id : s->min_id;
        s->max_id = id > s->max_id ? id : s->max_id;
        if (id == s->meta.eos_id) s->eos_count = (int64_t)count;
        double p = (double)count / n;
        entropy -= p * log2(p);
        DsaTokenCount c = {.id = id, .count = count};
        if (top_n == 0 || (s->num_top == top_n && !top_better(c, s->top[top_n - 1]))) continue;
        int k = s->num_top < top_n ? s->num_top++ : top_n - 1;
        while (k > 0 && top_better(c, s->top[k - 1])) {
            s->top[k] = s->top[k - 1];
            k--;
        }
        s->top[k] = c;
    }
    s->entropy_bits = entropy > 0 ? entropy : 0.0; /* one distinct id gives -0.0 */
    s->eos_share = (double)s->eos_count / n;
}

/* ---- inspecting one shard ------------------------------------------------------------ */

static void doc_lengths(const DsaShard *sh, DsaShardStats *s) {
    s->doc_min = INT64_MAX;
    s->doc_max = 0;
    for (int64_t d = 0; d < sh->num_docs; d++) {
        int64_t len = (int64_t)(sh->doc_offsets[d + 1] - sh->doc_offsets[d]);
        s->doc_min = len < s->doc_min ? len : s->doc_min;
        s->doc_max = len > s->doc_max ? len : s->doc_max;
    }
    s->doc_mean = (double)sh->num_tokens / (double)sh->num_docs;
}

/* Count documents ending in [block_start, block_end) whose last token is not EOS;
 * *next_doc is the first document whose end has not been seen. */
static void check_doc_ends(const DsaShard *sh, const uint32_t *block, int64_t block_start, int64_t block_end,
                           int64_t *next_doc, int64_t *without_eos) {
    int64_t d = *next_doc;
    for (; d < sh->num_docs && (int64_t)sh->doc_offsets[d + 1] <= block_end; d++) {
        int64_t a = (int64_t)sh->doc_offsets[d], b = (int64_t)sh->doc_offsets[d + 1];
        if (b == a || block[b - 1 - block_start] != sh->meta.eos_id) (*without_eos)++;
    }
    *next_doc = d;
}

static DsaStatus compare_paths(const DsaShard *sh, const uint32_t *fast, const uint32_t *slow, int64_t start, int64_t n) {
    if (!memcmp(fast, slow, (size_t)n * 4)) return DSA_OK;
    int64_t i = 0;
    while (fast[i] == slow[i]) i++;
    DSA_FAIL(DSA_ERR_FORMAT,
             "%s: the fast reader and the HDF5 filter pipeline disagree at token %lld (fast path %u, HDF5 %u)",
             sh->path, (long long)(start + i), fast[i], slow[i]);
}

static DsaStatus scan_tokens(const DsaShard *sh, const DsaInspectOptions *o, DsaShardStats *s, Histogram *h,
                             uint32_t *block, uint32_t *check, int64_t block_tokens, DsaShardScratch *scratch) {
    DsaProgress progress;
    dsa_progress_start(&progress, "inspect", "tokens", sh->num_tokens,
                       o->progress && sh->num_tokens >= o->progress_min_tokens);
    int64_t next_doc = 0;
    for (int64_t start = 0; start < sh->num_tokens; start += block_tokens) {
        int64_t n = sh->num_tokens - start < block_tokens ? sh->num_tokens - start : block_tokens;
        DSA_TRY(dsa_shard_read(sh, start, n, block, scratch));
        if (check) {
            DSA_TRY(dsa_shard_read_hdf5(sh, start, n, check));
            DSA_TRY(compare_paths(sh, block, check, start, n));
        }
        DSA_TRY(hist_add(h, block, n));
        check_doc_ends(sh, block, start, start + n, &next_doc, &s->docs_without_eos);
        dsa_progress_update(&progress, start + n);
    }
    dsa_progress_finish(&progress);
    return DSA_OK;
}

DsaStatus dsa_inspect_shard(const char *path, const DsaInspectOptions *o, DsaShardStats *s) {
    if (o->top_n < 0 || o->top_n > DSA_INSPECT_MAX_TOP)
        DSA_FAIL(DSA_ERR_ARG, "top-N %d out of range [0, %d]", o->top_n, DSA_INSPECT_MAX_TOP);
    double t0 = dsa_time_now();
    memset(s, 0, sizeof *s);
    snprintf(s->path, sizeof s->path, "%s", path);
    DsaShard sh;
    DSA_TRY(dsa_shard_open(&sh, path));
    DsaShardSetCheck set = {0};
    DsaStatus st = dsa_shard_check_set(&set, &sh); /* a shard of an unfinished pack is refused */
    dsa_shard_check_set_free(&set);
    if (st != DSA_OK) {
        dsa_shard_close(&sh);
        return st;
    }
    Histogram h = {0};
    DsaShardScratch *scratch = NULL;
    uint32_t *block = NULL, *check = NULL;
    int64_t ct = sh.meta.chunk_tokens;
    int64_t block_tokens = BLOCK_TOKENS > ct ? BLOCK_TOKENS / ct * ct : ct; /* whole chunks: decoded in place */
    if (block_tokens > sh.num_tokens) block_tokens = sh.num_tokens;

    s->meta = sh.meta;
    s->format_version = sh.format_version;
    s->num_tokens = sh.num_tokens;
    s->num_docs = sh.num_docs;
    s->num_chunks = sh.num_chunks;
    s->compressed_bytes = sh.compressed_bytes;
    s->compression_ratio = 4.0 * (double)sh.num_tokens / (double)sh.compressed_bytes;
    s->bits_per_token = 8.0 * (double)sh.compressed_bytes / (double)sh.num_tokens;
    struct stat sb;
    if (fstat(sh.fd, &sb) == 0) s->file_bytes = (int64_t)sb.st_size;
    doc_lengths(&sh, s);

    DSA_TRY_GOTO(st, hist_init(&h, sh.meta.vocab_size, path), done);
    DSA_TRY_GOTO(st, dsa_shard_scratch_new(&scratch), done);
    DSA_TRY_GOTO(st, dsa_alloc((void **)&block, (size_t)block_tokens * 4, "inspect block"), done);
    if (o->verify) DSA_TRY_GOTO(st, dsa_alloc((void **)&check, (size_t)block_tokens * 4, "verify block"), done);
    DSA_TRY_GOTO(st, scan_tokens(&sh, o, s, &h, block, check, block_tokens, scratch), done);
    hist_summarize(&h, s, o->top_n);
    s->verified = o->verify;
    s->seconds = dsa_time_now() - t0;
done:
    dsa_free(block, (size_t)block_tokens * 4);
    dsa_free(check, (size_t)block_tokens * 4);
    dsa_shard_scratch_free(scratch);
    hist_free(&h);
    dsa_shard_close(&sh);
    return st;
}

void dsa_inspect_totals_add(DsaInspectTotals *t, const DsaShardStats *s) {
    t->num_files++;
    t->num_tokens += s->num_tokens;
    t->num_docs += s->num_docs;
    t->docs_without_eos += s->docs_without_eos;
    t->num_chunks += s->num_chunks;
    t->eos_count += s->eos_count;
    t->compressed_bytes += s->compressed_bytes;
    t->file_bytes += s->file_bytes;
}

/* ---- printing -------------------------------------------------------------------------- */

/* 1234567 -> "1,234,567". */
static const char *group(char *buf, size_t cap, int64_t v) {
    char raw[32];
    int len = snprintf(raw, sizeof raw, "%lld", (long long)(v < 0 ? -v : v));
    size_t o = 0;
    if (v < 0 && o + 1 < cap) buf[o++] = '-';
    for (int i = 0; i < len && o + 1 < cap; i++) {
        buf[o++] = raw[i];
        if ((len - 1 - i) % 3 == 0 && i != len - 1 && o + 1 < cap) buf[o++] = ',';
    }
    buf[o] = '\0';
    return buf;
}

static const char *human_bytes(char *buf, size_t cap, double bytes) {
    const char *unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int i = 0;
    while (bytes >= 1024.0 && i < 4) {
        bytes /= 1024.0;
        i++;
    }
    snprintf(buf, cap, i ? "%.2f %s" : "%.0f %s", bytes, unit[i]);
    return buf;
}

void dsa_inspect_print_text(FILE *out, const DsaShardStats *s, int verify) {
    char a[32], b[32], c[32];
    const int w = 16;
    fprintf(out, "%-*s %s\n", w, "shard", s->path);
    fprintf(out, "%-*s %u\n", w, "format_version", s->format_version);
    fprintf(out, "%-*s %s\n", w, "tokenizer", s->meta.tokenizer);
    fprintf(out, "%-*s %s\n", w, "vocab_size", group(a, sizeof a, (int64_t)s->meta.vocab_size));
    fprintf(out, "%-*s %u\n", w, "eos_id", s->meta.eos_id);
    fprintf(out, "%-*s %s\n", w, "chunk_tokens", group(a, sizeof a, s->meta.chunk_tokens));
    fprintf(out, "%-*s %d\n", w, "zstd_level", s->meta.zstd_level);
    fprintf(out, "%-*s %s\n", w, "tokens", group(a, sizeof a, s->num_tokens));
    fprintf(out, "%-*s %s  (length min %s, mean %.1f, max %s)\n", w, "documents", group(a, sizeof a, s->num_docs),
            group(b, sizeof b, s->doc_min), s->doc_mean, group(c, sizeof c, s->doc_max));
    fprintf(out, "%-*s %s  (split across shards, or empty)\n", w, "docs w/o EOS", group(a, sizeof a, s->docs_without_eos));
    fprintf(out, "%-*s %s\n", w, "chunks", group(a, sizeof a, s->num_chunks));
    fprintf(out, "%-*s %s bytes (%s; file %s)\n", w, "compressed", group(a, sizeof a, (int64_t)s->compressed_bytes),
            human_bytes(b, sizeof b, (double)s->compressed_bytes), human_bytes(c, sizeof c, (double)s->file_bytes));
    fprintf(out, "%-*s %.2fx  (raw uint32 bytes / compressed bytes)\n", w, "ratio", s->compression_ratio);
    fprintf(out, "%-*s %.3f\n", w, "bits/token", s->bits_per_token);
    fprintf(out, "%-*s %s of %s\n", w, "distinct ids", group(a, sizeof a, s->distinct_ids),
            group(b, sizeof b, (int64_t)s->meta.vocab_size));
    fprintf(out, "%-*s %u .. %u\n", w, "id range", s->min_id, s->max_id);
    fprintf(out, "%-*s %.4f%%  (%s tokens)\n", w, "EOS share", 100.0 * s->eos_share, group(a, sizeof a, s->eos_count));
    fprintf(out, "%-*s %.4f bits/token (unigram)\n", w, "entropy", s->entropy_bits);
    if (s->num_top > 0) {
        char label[32];
        snprintf(label, sizeof label, "top %d ids", s->num_top);
        fprintf(out, "%-*s %4s  %10s  %15s  %8s\n", w, label, "rank", "id", "count", "share");
        for (int i = 0; i < s->num_top; i++)
            fprintf(out, "%-*s %4d  %10u  %15s  %7.3f%%\n", w, "", i + 1, s->top[i].id,
                    group(a, sizeof a, (int64_t)s->top[i].count), 100.0 * (double)s->top[i].count / (double)s->num_tokens);
    }
    if (verify)
        fprintf(out, "%-*s %s\n", w, "verify",
                s->verified ? "ok: the HDF5 filter pipeline reads the same tokens" : "not run");
    fprintf(out, "%-*s %.2f s (%s tokens/s)\n", w, "time", s->seconds,
            dsa_format_count(a, sizeof a, s->seconds > 0 ? (double)s->num_tokens / s->seconds : 0.0));
}

void dsa_inspect_print_totals(FILE *out, const DsaInspectTotals *t) {
    char a[32], b[32], c[32], d[32], e[32];
    double ratio = t->compressed_bytes ? 4.0 * (double)t->num_tokens / (double)t->compressed_bytes : 0.0;
    double bits = t->num_tokens ? 8.0 * (double)t->compressed_bytes / (double)t->num_tokens : 0.0;
    fprintf(out, "total: %d files, %s tokens, %s documents (%s w/o EOS), %s chunks, %s compressed, ratio %.2fx, %.3f bits/token\n",
            t->num_files, group(a, sizeof a, t->num_tokens), group(b, sizeof b, t->num_docs),
            group(c, sizeof c, t->docs_without_eos), group(d, sizeof d, t->num_chunks),
            human_bytes(e, sizeof e, (double)t->compressed_bytes), ratio, bits);
}

cJSON *dsa_inspect_to_json(const DsaShardStats *s, int verify) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "path", s->path);
    cJSON_AddNumberToObject(j, "format_version", s->format_version);
    cJSON_AddStringToObject(j, "tokenizer", s->meta.tokenizer);
    cJSON_AddNumberToObject(j, "vocab_size", (double)s->meta.vocab_size);
    cJSON_AddNumberToObject(j, "eos_id", s->meta.eos_id);
    cJSON_AddNumberToObject(j, "chunk_tokens", (double)s->meta.chunk_tokens);
    cJSON_AddNumberToObject(j, "zstd_level", s->meta.zstd_level);
    cJSON_AddNumberToObject(j, "tokens", (double)s->num_tokens);
    cJSON_AddNumberToObject(j, "documents", (double)s->num_docs);
    cJSON_AddNumberToObject(j, "doc_len_min", (double)s->doc_min);
    cJSON_AddNumberToObject(j, "doc_len_mean", s->doc_mean);
    cJSON_AddNumberToObject(j, "doc_len_max", (double)s->doc_max);
    cJSON_AddNumberToObject(j, "docs_without_eos", (double)s->docs_without_eos);
    cJSON_AddNumberToObject(j, "chunks", (double)s->num_chunks);
    cJSON_AddNumberToObject(j, "compressed_bytes", (double)s->compressed_bytes);
    cJSON_AddNumberToObject(j, "file_bytes", (double)s->file_bytes);
    cJSON_AddNumberToObject(j, "compression_ratio", s->compression_ratio);
    cJSON_AddNumberToObject(j, "bits_per_token", s->bits_per_token);
    cJSON_AddNumberToObject(j, "distinct_ids", (double)s->distinct_ids);
    cJSON_AddNumberToObject(j, "min_id", s->min_id);
    cJSON_AddNumberToObject(j, "max_id", s->max_id);
    cJSON_AddNumberToObject(j, "eos_count", (double)s->eos_count);
    cJSON_AddNumberToObject(j, "eos_share", s->eos_share);
    cJSON_AddNumberToObject(j, "entropy_bits", s->entropy_bits);
    cJSON *top = cJSON_AddArrayToObject(j, "top");
    for (int i = 0; i < s->num_top; i++) {
        cJSON *e = cJSON_CreateObject();
        cJSON_AddNumberToObject(e, "id", s->top[i].id);
        cJSON_AddNumberToObject(e, "count", (double)s->top[i].count);
        cJSON_AddNumberToObject(e, "share", (double)s->top[i].count / (double)s->num_tokens);
        cJSON_AddItemToArray(top, e);
    }
    if (verify) cJSON_AddBoolToObject(j, "verified", s->verified);
    cJSON_AddNumberToObject(j, "seconds", s->seconds);
    return j;
}

cJSON *dsa_inspect_totals_to_json(const DsaInspectTotals *t) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "files", t->num_files);
    cJSON_AddNumberToObject(j, "tokens", (double)t->num_tokens);
    cJSON_AddNumberToObject(j, "documents", (double)t->num_docs);
    cJSON_AddNumberToObject(j, "docs_without_eos", (double)t->docs_without_eos);
    cJSON_AddNumberToObject(j, "chunks", (double)t->num_chunks);
    cJSON_AddNumberToObject(j, "eos_count", (double)t->eos_count);
    cJSON_AddNumberToObject(j, "compressed_bytes", (double)t->compressed_bytes);
    cJSON_AddNumberToObject(j, "file_bytes", (double)t->file_bytes);
    cJSON_AddNumberToObject(j, "compression_ratio",
                            t->compressed_bytes ? 4.0 * (double)t->num_tokens / (double)t->compressed_bytes : 0.0);
    cJSON_AddNumberToObject(j, "bits_per_token",
                            t->num_tokens ? 8.0 * (double)t->compressed_bytes / (double)t->num_tokens : 0.0);
    return j;
}

/* ---- loader benchmark: data generation --------------------------------------------------- */

enum {
    TEXT_VOCAB = 32000,
    UNIFORM_VOCAB = 129280, /* DeepSeek-V3's vocabulary */
    BENCH_CHECK_WINDOWS = 16,
};

static const char *const dist_names[DSA_BENCH_NUM_DISTS] = {"text-like", "synthetic", "uniform"};

const char *dsa_bench_dist_name(DsaBenchDist dist) {
    return (int)dist >= 0 && dist < DSA_BENCH_NUM_DISTS ? dist_names[dist] : "?";
}

DsaStatus dsa_bench_dist_parse(const char *name, DsaBenchDist *out) {
    for (int i = 0; i < DSA_BENCH_NUM_DISTS; i++) {
        if (!strcmp(name, dist_names[i])) {
            *out = (DsaBenchDist)i;
            return DSA_OK;
        }
    }
    if (!strcmp(name, "text")) {
        *out = DSA_BENCH_TEXT;
        return DSA_OK;
    }
    DSA_FAIL(DSA_ERR_ARG, "unknown data distribution \"%s\" (choices: text-like (or text), synthetic, uniform)", name);
}

DsaBenchLoaderOptions dsa_bench_loader_options_default(void) {
    return (DsaBenchLoaderOptions){.tokens = 128ll << 20,
                                   .seq_len = 131072,
                                   .chunk_tokens = DSA_SHARD_DEFAULT_CHUNK_TOKENS,
                                   .zstd_level = DSA_SHARD_DEFAULT_ZSTD_LEVEL,
                                   .shard_tokens = 64ll << 20,
                                   .repeat = 3,
                                   .seed = 1};
}

/* xoshiro256+: fast enough to generate hundreds of millions of ids (Philox is the
 * project's RNG for anything that must be reproducible across ranks; this is bench data). */
typedef struct {
    uint64_t s[4];
} FastRng;

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t fast_next(FastRng *r) {
    uint64_t *s = r->s, out = s[0] + s[3], t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

static double fast_uniform(FastRng *r) { return (double)(fast_next(r) >> 11) * 0x1.0p-53; }
static uint32_t fast_below(FastRng *r, uint32_t n) { return (uint32_t)(((fast_next(r) >> 32) * n) >> 32); }

/* Walker/Vose alias table over ids 1..n-1 (0 is EOS), id k with weight 1 / k^s. */
typedef struct {
    uint32_t n;
    float *prob;
    uint32_t *alias;
} Alias;

static DsaStatus alias_zipf(Alias *a, uint32_t vocab, double exponent) {
    uint32_t n = vocab - 1;
    double *w = dsa_malloc((size_t)n * sizeof *w);
    uint32_t *small = dsa_malloc((size_t)n * 4), *large = dsa_malloc((size_t)n * 4);
    a->n = n;
    a->prob = dsa_malloc((size_t)n * sizeof *a->prob);
    a->alias = dsa_malloc((size_t)n * sizeof *a->alias);
    DsaStatus st = DSA_OK;
    if (!w || !small || !large || !a->prob || !a->alias)
        DSA_FAIL_GOTO(st, done, DSA_ERR_NOMEM, "out of memory for the Zipf table of the benchmark");
    double sum = 0;
    for (uint32_t k = 0; k < n; k++) sum += w[k] = pow((double)(k + 1), -exponent);
    uint32_t ns = 0, nl = 0;
    for (uint32_t k = 0; k < n; k++) {
        w[k] *= (double)n / sum;
        if (w[k] < 1.0) small[ns++] = k;
        else large[nl++] = k;
    }
    while (ns && nl) {
        uint32_t s = small[--ns], l = large[--nl];
        a->prob[s] = (float)w[s];
        a->alias[s] = l;
        w[l] -= 1.0 - w[s];
        if (w[l] < 1.0) small[ns++] = l;
        else large[nl++] = l;
    }
    while (nl) a->prob[large[--nl]] = 1.0f, a->alias[large[nl]] = large[nl];
    while (ns) a->prob[small[--ns]] = 1.0f, a->alias[small[ns]] = small[ns];
done:
    dsa_free(w, (size_t)n * sizeof *w);
    dsa_free(small, (size_t)n * 4);
    dsa_free(large, (size_t)n * 4);
    return st;
}

static void alias_free(Alias *a) {
    dsa_free(a->prob, (size_t)a->n * sizeof *a->prob);
    dsa_free(a->alias, (size_t)a->n * sizeof *a->alias);
}

static uint32_t alias_draw(const Alias *a, FastRng *r) {
    uint64_t x = fast_next(r);
    uint32_t k = (uint32_t)(((x >> 32) * a->n) >> 32);
    float u = (float)(x & 0xffffff) * 0x1.0p-24f;
    return 1 + (u < a->prob[k] ? k : a->alias[k]);
}

/* Document length: log-normal with median 700 tokens and sigma 1.3 (mean about 1.6K),
 * clamped to [8, 1Mi]: short web pages with a long tail of books and code files. */
static int64_t draw_doc_len(FastRng *r) {
    double u1 = fast_uniform(r), u2 = fast_uniform(r);
    double z = sqrt(-2.0 * log(u1 > 0 ? u1 : 1e-300)) * cos(2.0 * M_PI * u2);
    double len = 700.0 * exp(1.3 * z);
    return len < 8 ? 8 : len > (double)(1 << 20) ? (1 << 20) : (int64_t)len;
}

/* NOTE: text-like ids: Zipf(1.0) unigrams over 32000 ids (unigram entropy 10.5 bits, as
 * BPE vocabularies of that size show on web text; low ids frequent, as merge order
 * gives), and one position in 128 starts copying a 4..32-token phrase from earlier in
 * the document (about 12% of tokens), so zstd finds some repeated n-grams. That gives
 * about 2.3x at level 3 (13.7 bits/token), near what real tokenized text gets in
 * uint32. Uniform ids are i.i.d. over 129280 ids: nearly incompressible beyond the
 * zero top byte. */
static void fill_doc(DsaBenchDist dist, const Alias *zipf, FastRng *r, uint32_t *doc, int64_t len) {
    if (dist == DSA_BENCH_UNIFORM) {
        for (int64_t i = 0; i < len; i++) doc[i] = 1 + fast_below(r, UNIFORM_VOCAB - 1);
        return;
    }
    int64_t i = 0;
    while (i < len) {
        if (i >= 64 && fast_below(r, 128) == 0) {
            int64_t run = 4 + fast_below(r, 29), from = fast_below(r, (uint32_t)(i - run));
            for (int64_t k = 0; k < run && i < len; k++) doc[i++] = doc[from + k];
        } else {
            doc[i++] = alias_draw(zipf, r);
        }
    }
}

static void bench_raw_path(char *buf, size_t cap, const char *dir, DsaBenchDist dist) {
    snprintf(buf, cap, "%s/%s.u32", dir, dsa_bench_dist_name(dist));
}

static void bench_prefix(char *buf, size_t cap, const char *dir, DsaBenchDist dist) {
    snprintf(buf, cap, "%s/%s", dir, dsa_bench_dist_name(dist));
}

void dsa_bench_loader_cleanup(const char *dir, DsaBenchDist dist) {
    char path[DSA_PATH_CAP + 64], prefix[DSA_PATH_CAP];
    bench_raw_path(path, sizeof path, dir, dist);
    unlink(path);
    bench_prefix(prefix, sizeof prefix, dir, dist);
    for (int i = 0;; i++) {
        dsa_shardset_path(path, sizeof path, prefix, i);
        if (unlink(path) != 0) break;
    }
}

/* Where documents come from: the bench's own generators, or data/synthetic.h. */
typedef struct {
    DsaBenchDist dist;
    Alias zipf;
    FastRng rng;
    DsaSynGen *syn;
    int64_t syn_next, syn_docs;
} DocSource;

static DsaStatus source_open(DocSource *src, const DsaBenchLoaderOptions *o, DsaShardMeta *meta) {
    memset(src, 0, sizeof *src);
    src->dist = o->dist;
    uint64_t seed = o->seed;
    src->rng = (FastRng){{dsa_mix64(seed), dsa_mix64(seed + 1), dsa_mix64(seed + 2), dsa_mix64(seed + 3 + o->dist)}};
    if (o->dist == DSA_BENCH_SYNTHETIC) {
        DsaSyntheticOptions so;
        dsa_synthetic_options_default(&so);
        so.task = DSA_SYN_TASK_MIXED;
        so.total_tokens = o->tokens;
        so.doc_tokens = o->seq_len < DSA_SYN_MIN_DOC_TOKENS ? DSA_SYN_MIN_DOC_TOKENS : o->seq_len;
        so.seed = seed;
        DSA_TRY(dsa_synthetic_gen_new(&src->syn, &so));
        src->syn_docs = dsa_synthetic_gen_num_docs(src->syn);
        *meta = dsa_shard_meta_default(so.vocab_size, DSA_SYN_EOS);
        snprintf(meta->tokenizer, sizeof meta->tokenizer, "%s", DSA_SYN_TOKENIZER_NAME);
        return DSA_OK;
    }
    *meta = dsa_shard_meta_default(o->dist == DSA_BENCH_UNIFORM ? UNIFORM_VOCAB : TEXT_VOCAB, 0);
    snprintf(meta->tokenizer, sizeof meta->tokenizer, "bench-%s", dsa_bench_dist_name(o->dist));
    if (o->dist == DSA_BENCH_TEXT) DSA_TRY(alias_zipf(&src->zipf, TEXT_VOCAB, 1.0));
    return DSA_OK;
}

static void source_close(DocSource *src) {
    alias_free(&src->zipf);
    dsa_synthetic_gen_free(src->syn);
}

/* Longest document a source produces (buffer size). */
static int64_t source_max_len(const DocSource *src) {
    return src->syn ? dsa_synthetic_gen_doc_len(src->syn) : (int64_t)1 << 20;
}

/* The next document (without EOS) into doc; *len = 0 when the source is exhausted. */
static DsaStatus source_next(DocSource *src, int64_t remaining, uint32_t *doc, int64_t *len) {
    if (src->syn) {
        *len = 0;
        if (src->syn_next == src->syn_docs) return DSA_OK;
        DSA_TRY(dsa_synthetic_gen_doc(src->syn, src->syn_next++, doc));
        *len = dsa_synthetic_gen_doc_len(src->syn);
        return DSA_OK;
    }
    *len = 0;
    if (remaining <= 0) return DSA_OK;
    int64_t n = draw_doc_len(&src->rng);
    if (n > remaining) n = remaining > 8 ? remaining : 8;
    fill_doc(src->dist, &src->zipf, &src->rng, doc, n);
    *len = n;
    return DSA_OK;
}

/* Write the data set: shards through dsa_shardset_*, the same stream to the raw file. */
static DsaStatus generate(const DsaBenchLoaderOptions *o, DsaBenchLoaderResult *res) {
    char raw_path[DSA_PATH_CAP + 64], prefix[DSA_PATH_CAP];
    bench_raw_path(raw_path, sizeof raw_path, o->dir, o->dist);
    bench_prefix(prefix, sizeof prefix, o->dir, o->dist);
    DsaShardSetOptions so = {.out_prefix = prefix, .shard_tokens = o->shard_tokens};

    DsaStatus st = DSA_OK;
    DocSource src;
    DsaShardSet *set = NULL;
    uint32_t *doc = NULL;
    size_t doc_cap = 0;
    FILE *raw = NULL;
    DsaProgress progress;
    dsa_progress_start(&progress, "bench: generate", "tokens", o->tokens, o->progress);
    DSA_TRY_GOTO(st, source_open(&src, o, &so.meta), done);
    so.meta.chunk_tokens = o->chunk_tokens;
    so.meta.zstd_level = o->zstd_level;
    doc_cap = (size_t)source_max_len(&src) + 1;
    DSA_TRY_GOTO(st, dsa_alloc((void **)&doc, doc_cap * 4, "benchmark document"), done);
    DSA_TRY_GOTO(st, dsa_shardset_open(&set, &so), done);
    raw = fopen(raw_path, "wb");
    if (!raw) DSA_FAIL_GOTO(st, done, DSA_ERR_IO, "%s: cannot create: %s", raw_path, strerror(errno));
    int64_t written = 0, len = 0;
    while (1) {
        DSA_TRY_GOTO(st, source_next(&src, o->tokens - written, doc, &len), done);
        if (len == 0) break;
        DSA_TRY_GOTO(st, dsa_shardset_add_doc(set, doc, len), done);
        doc[len] = so.meta.eos_id; /* as the shard set appends it */
        if (fwrite(doc, 4, (size_t)len + 1, raw) != (size_t)len + 1)
            DSA_FAIL_GOTO(st, done, DSA_ERR_IO, "%s: write failed: %s", raw_path, strerror(errno));
        written += len + 1;
        dsa_progress_update(&progress, written);
    }
    if (fclose(raw) != 0) {
        raw = NULL;
        DSA_FAIL_GOTO(st, done, DSA_ERR_IO, "%s: write failed: %s", raw_path, strerror(errno));
    }
    raw = NULL;
    DsaShardSetStats stats;
    DsaShardSet *closing = set;
    set = NULL;
    DSA_TRY_GOTO(st, dsa_shardset_close(closing, &stats), done);
    if (stats.num_tokens != written)
        DSA_FAIL_GOTO(st, done, DSA_ERR_INTERNAL, "benchmark: the shards hold %lld tokens but %lld were written",
                      (long long)stats.num_tokens, (long long)written);
    res->stream_tokens = stats.num_tokens;
    res->num_shards = stats.num_shards;
    res->num_docs = stats.num_docs;
    dsa_progress_finish(&progress);
done:
    if (raw) fclose(raw);
    dsa_shardset_abort(set);
    dsa_free(doc, doc_cap * 4);
    source_close(&src);
    return st;
}

/* ---- loader benchmark: measurements ------------------------------------------------------ */

/* Read a whole file once so later reads come from the page cache. */
static DsaStatus warm_file(const char *path, void *buf, size_t cap) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) DSA_FAIL(DSA_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    ssize_t got;
    while ((got = read(fd, buf, cap)) > 0) {
    }
    close(fd);
    if (got < 0) DSA_FAIL(DSA_ERR_IO, "%s: read failed: %s", path, strerror(errno));
    return DSA_OK;
}

typedef struct {
    const DsaBenchLoaderOptions *o;
    DsaBenchLoaderResult *res;
    char **paths;        /* (num_shards) */
    DsaShard *shards;    /* (num_shards), open */
    int64_t *order;      /* (windows) window indices in the loader's epoch-0 order */
    uint32_t *window;    /* (window_cap): one window, or one chunk if that is larger */
    int64_t window_cap;
    uint8_t *compressed; /* every chunk of every shard, back to back */
    int raw_fd;
} Bench;

static DsaStatus time_loader(Bench *b, int prefetch, double *seconds, double *open_s, int record_order) {
    const DsaBenchLoaderOptions *o = b->o;
    DsaLoaderOptions lo = dsa_loader_options_default();
    lo.paths = (const char *const *)b->paths;
    lo.num_paths = b->res->num_shards;
    lo.seq_len = o->seq_len;
    lo.seed = o->seed;
    lo.prefetch = prefetch;
    DsaLoader *loader = NULL;
    double t_open = dsa_time_now();
    DSA_TRY(dsa_loader_open(&loader, &lo));
    *open_s = dsa_time_now() - t_open;
    DsaStatus st = DSA_OK;
    int64_t n = dsa_loader_rank_windows(loader);
    uint64_t sink = 0;
    double t0 = dsa_time_now();
    for (int64_t i = 0; i < n; i++) {
        DsaWindow w;
        DSA_TRY_GOTO(st, dsa_loader_next(loader, &w), done);
        sink += w.tokens[0];
        if (record_order) b->order[i] = w.window;
        else if (b->order[i] != w.window)
            DSA_FAIL_GOTO(st, done, DSA_ERR_INTERNAL, "benchmark: loader order differs between runs at position %lld",
                          (long long)i);
    }
    *seconds = dsa_time_now() - t0;
    __asm__ volatile("" : : "r"(sink));
done:
    dsa_loader_close(loader);
    return st;
}

static DsaStatus pread_window(int fd, uint32_t *dst, int64_t count, int64_t first) {
    size_t len = (size_t)count * 4;
    off_t off = (off_t)first * 4;
    uint8_t *p = (uint8_t *)dst;
    while (len) {
        ssize_t got = pread(fd, p, len, off);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) DSA_FAIL(DSA_ERR_IO, "benchmark raw file: read at byte %lld failed", (long long)off);
        p += got;
        len -= (size_t)got;
        off += got;
    }
    return DSA_OK;
}

static DsaStatus time_plain(Bench *b, double *seconds) {
    int64_t len = b->o->seq_len + 1;
    uint64_t sink = 0;
    double t0 = dsa_time_now();
    for (int64_t i = 0; i < b->res->windows; i++) {
        DSA_TRY(pread_window(b->raw_fd, b->window, len, b->order[i] * b->o->seq_len));
        sink += b->window[0];
    }
    *seconds = dsa_time_now() - t0;
    __asm__ volatile("" : : "r"(sink));
    return DSA_OK;
}

/* Decode every chunk of every shard from memory, into a window-sized buffer in turn
 * (as the loader decodes into its window), with one context: the zstd ceiling. */
static DsaStatus time_zstd(Bench *b, ZSTD_DCtx *dctx, double *seconds) {
    int64_t ct = b->o->chunk_tokens, per_window = (b->o->seq_len + 1) / ct;
    if (per_window < 1) per_window = 1;
    size_t want = (size_t)ct * 4;
    const uint8_t *src = b->compressed;
    int64_t k = 0;
    double t0 = dsa_time_now();
    for (int s = 0; s < b->res->num_shards; s++) {
        const DsaShard *sh = &b->shards[s];
        for (int64_t c = 0; c < sh->num_chunks; c++, k++) {
            uint32_t *dst = b->window + (k % per_window) * ct;
            size_t got = ZSTD_decompressDCtx(dctx, dst, want, src, sh->chunk_bytes[c]);
            if (ZSTD_isError(got) || got != want)
                DSA_FAIL(DSA_ERR_FORMAT, "%s: chunk %lld does not decode: %s", sh->path, (long long)c,
                         ZSTD_isError(got) ? ZSTD_getErrorName(got) : "short output");
            src += sh->chunk_bytes[c];
        }
    }
    *seconds = dsa_time_now() - t0;
    return DSA_OK;
}

/* The loader's token-range check (dsa_tokens_first_out_of_range), alone, per window. */
static void time_range(Bench *b, double *seconds) {
    int64_t len = b->o->seq_len + 1, bad = 0;
    double t0 = dsa_time_now();
    for (int64_t i = 0; i < b->res->windows; i++) {
        const uint32_t *t = b->window;
        __asm__ volatile("" : : "r"(t) : "memory");
        bad |= dsa_tokens_first_out_of_range(t, len, b->shards[0].meta.vocab_size);
    }
    *seconds = dsa_time_now() - t0;
    __asm__ volatile("" : : "r"(bad));
}

/* Tokens the loader decodes for the epoch: whole chunks, per shard piece of each window. */
static int64_t decoded_tokens(const Bench *b) {
    int64_t total = 0, len = b->o->seq_len + 1;
    for (int64_t i = 0; i < b->res->windows; i++) {
        int64_t start = b->order[i] * b->o->seq_len, end = start + len, base = 0;
        for (int s = 0; s < b->res->num_shards; s++) {
            const DsaShard *sh = &b->shards[s];
            int64_t lo = start > base ? start : base, hi = end < base + sh->num_tokens ? end : base + sh->num_tokens;
            if (lo < hi) {
                int64_t ct = sh->meta.chunk_tokens;
                total += (((hi - base - 1) / ct) - ((lo - base) / ct) + 1) * ct;
            }
            base += sh->num_tokens;
        }
    }
    return total;
}

/* Before any timing: the loader's first windows equal the raw file at the same place. */
static DsaStatus check_windows(Bench *b) {
    DsaLoaderOptions lo = dsa_loader_options_default();
    lo.paths = (const char *const *)b->paths;
    lo.num_paths = b->res->num_shards;
    lo.seq_len = b->o->seq_len;
    lo.seed = b->o->seed;
    lo.prefetch = 0;
    DsaLoader *loader = NULL;
    DSA_TRY(dsa_loader_open(&loader, &lo));
    DsaStatus st = DSA_OK;
    int64_t len = b->o->seq_len + 1, n = b->res->windows < BENCH_CHECK_WINDOWS ? b->res->windows : BENCH_CHECK_WINDOWS;
    for (int64_t i = 0; i < n; i++) {
        DsaWindow w;
        DSA_TRY_GOTO(st, dsa_loader_next(loader, &w), done);
        DSA_TRY_GOTO(st, pread_window(b->raw_fd, b->window, len, w.window * b->o->seq_len), done);
        if (memcmp(w.tokens, b->window, (size_t)len * 4) != 0)
            DSA_FAIL_GOTO(st, done, DSA_ERR_INTERNAL,
                          "benchmark: loader window %lld differs from the raw file at the same offset", (long long)w.window);
    }
    b->res->checked_windows = n;
done:
    dsa_loader_close(loader);
    return st;
}

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void set_timing(DsaBenchTiming *t, int64_t tokens, double *runs, int n) {
    qsort(runs, (size_t)n, sizeof *runs, compare_doubles);
    t->tokens = tokens;
    t->best_s = runs[0];
    t->median_s = n % 2 ? runs[n / 2] : 0.5 * (runs[n / 2 - 1] + runs[n / 2]);
}

static DsaStatus open_shards(Bench *b) {
    char prefix[DSA_PATH_CAP];
    bench_prefix(prefix, sizeof prefix, b->o->dir, b->o->dist);
    int n = b->res->num_shards;
    b->paths = dsa_calloc((size_t)n, sizeof *b->paths);
    b->shards = dsa_calloc((size_t)n, sizeof *b->shards);
    if (!b->paths || !b->shards) DSA_FAIL(DSA_ERR_NOMEM, "out of memory for the benchmark's shard list");
    for (int i = 0; i < n; i++) {
        DSA_TRY(dsa_alloc((void **)&b->paths[i], DSA_PATH_CAP + 16, "shard path"));
        dsa_shardset_path(b->paths[i], DSA_PATH_CAP + 16, prefix, i);
        b->shards[i].fd = -1;
    }
    for (int i = 0; i < n; i++) {
        DSA_TRY(dsa_shard_open(&b->shards[i], b->paths[i]));
        b->res->compressed_bytes += b->shards[i].compressed_bytes;
    }
    return DSA_OK;
}

/* Warm the page cache and load every compressed chunk into memory. */
static DsaStatus load_files(Bench *b) {
    size_t cap = (size_t)b->window_cap * 4;
    for (int i = 0; i < b->res->num_shards; i++) DSA_TRY(warm_file(b->paths[i], b->window, cap));
    char raw_path[DSA_PATH_CAP + 64];
    bench_raw_path(raw_path, sizeof raw_path, b->o->dir, b->o->dist);
    DSA_TRY(warm_file(raw_path, b->window, cap));
    b->raw_fd = open(raw_path, O_RDONLY | O_CLOEXEC);
    if (b->raw_fd < 0) DSA_FAIL(DSA_ERR_IO, "%s: cannot open: %s", raw_path, strerror(errno));
    DSA_TRY(dsa_alloc((void **)&b->compressed, b->res->compressed_bytes, "compressed chunks"));
    uint8_t *dst = b->compressed;
    for (int s = 0; s < b->res->num_shards; s++) {
        const DsaShard *sh = &b->shards[s];
        for (int64_t c = 0; c < sh->num_chunks; c++) {
            if (pread(sh->fd, dst, sh->chunk_bytes[c], (off_t)sh->chunk_addr[c]) != (ssize_t)sh->chunk_bytes[c])
                DSA_FAIL(DSA_ERR_IO, "%s: cannot read chunk %lld", sh->path, (long long)c);
            dst += sh->chunk_bytes[c];
        }
    }
    return DSA_OK;
}

static void bench_free(Bench *b) {
    int n = b->res->num_shards;
    for (int i = 0; b->shards && i < n; i++) dsa_shard_close(&b->shards[i]);
    for (int i = 0; b->paths && i < n; i++) dsa_free(b->paths[i], DSA_PATH_CAP + 16);
    dsa_free(b->paths, (size_t)n * sizeof *b->paths);
    dsa_free(b->shards, (size_t)n * sizeof *b->shards);
    dsa_free(b->order, (size_t)b->res->windows * sizeof *b->order);
    dsa_free(b->window, (size_t)b->window_cap * 4);
    dsa_free(b->compressed, b->res->compressed_bytes);
    if (b->raw_fd >= 0) close(b->raw_fd);
}

DsaStatus dsa_bench_loader_check(const DsaBenchLoaderOptions *o) {
    if (o->seq_len < 1) DSA_FAIL(DSA_ERR_ARG, "benchmark: seq_len %lld must be >= 1", (long long)o->seq_len);
    if (o->tokens < 2 * (o->seq_len + 1))
        DSA_FAIL(DSA_ERR_ARG, "benchmark: --tokens %lld is too few for windows of %lld tokens (need at least %lld)",
                 (long long)o->tokens, (long long)(o->seq_len + 1), (long long)(2 * (o->seq_len + 1)));
    if (o->repeat < 1 || o->repeat > 100) DSA_FAIL(DSA_ERR_ARG, "benchmark: repeat %d out of range [1, 100]", o->repeat);
    if (o->shard_tokens < o->seq_len + 1)
        DSA_FAIL(DSA_ERR_ARG, "benchmark: shard_tokens %lld is below one window (%lld tokens)", (long long)o->shard_tokens,
                 (long long)(o->seq_len + 1));
    if (o->chunk_tokens < 1 || o->chunk_tokens > (1 << 26))
        DSA_FAIL(DSA_ERR_ARG, "benchmark: chunk_tokens %lld out of range [1, 2^26]", (long long)o->chunk_tokens);
    if (o->zstd_level < 1 || o->zstd_level > 22)
        DSA_FAIL(DSA_ERR_ARG, "benchmark: zstd level %d out of range [1, 22]", o->zstd_level);
    return DSA_OK;
}

static DsaStatus check_bench_options(const DsaBenchLoaderOptions *o) {
    if (!o->dir || !*o->dir) DSA_FAIL(DSA_ERR_ARG, "benchmark: no directory given for the data set");
    if ((int)o->dist < 0 || (int)o->dist >= DSA_BENCH_NUM_DISTS)
        DSA_FAIL(DSA_ERR_ARG, "benchmark: unknown distribution %d", (int)o->dist);
    DSA_TRY(dsa_bench_loader_check(o));
    return DSA_OK;
}

static DsaStatus measure(Bench *b) {
    const DsaBenchLoaderOptions *o = b->o;
    DsaBenchLoaderResult *res = b->res;
    int r = o->repeat;
    double p0[100], p2[100], plain[100], zs[100], range[100], open0[100], open2[100];
    ZSTD_DCtx *dctx = ZSTD_createDCtx();
    if (!dctx) DSA_FAIL(DSA_ERR_NOMEM, "cannot create a zstd decompression context");
    DsaStatus st = DSA_OK;
    int64_t total_chunk_tokens = 0;
    for (int s = 0; s < res->num_shards; s++) total_chunk_tokens += b->shards[s].num_chunks * b->shards[s].meta.chunk_tokens;
    DSA_TRY_GOTO(st, check_windows(b), done);
    for (int i = 0; i < r; i++) {
        DSA_TRY_GOTO(st, time_loader(b, 0, &p0[i], &open0[i], i == 0), done);
        DSA_TRY_GOTO(st, time_loader(b, 2, &p2[i], &open2[i], 0), done);
        DSA_TRY_GOTO(st, time_plain(b, &plain[i]), done);
        DSA_TRY_GOTO(st, time_zstd(b, dctx, &zs[i]), done);
        time_range(b, &range[i]);
        if (i == 0) res->decoded_tokens = decoded_tokens(b);
    }
    int64_t delivered = res->windows * (o->seq_len + 1);
    set_timing(&res->loader_p0, delivered, p0, r);
    set_timing(&res->loader_p2, delivered, p2, r);
    set_timing(&res->plain, delivered, plain, r);
    set_timing(&res->zstd, total_chunk_tokens, zs, r);
    set_timing(&res->range, delivered, range, r);
    set_timing(&res->open, 0, open0, r);
    res->num_chunks = total_chunk_tokens / o->chunk_tokens;
done:
    ZSTD_freeDCtx(dctx);
    return st;
}

DsaStatus dsa_bench_loader_run(const DsaBenchLoaderOptions *o, DsaBenchLoaderResult *res) {
    DSA_TRY(check_bench_options(o));
    memset(res, 0, sizeof *res);
    res->dist = o->dist;
    double t0 = dsa_time_now();
    DSA_TRY(generate(o, res));
    res->generate_s = dsa_time_now() - t0;
    res->windows = (res->stream_tokens - 1) / o->seq_len;
    Bench b = {.o = o, .res = res, .raw_fd = -1};
    DsaStatus st = DSA_OK;
    DSA_TRY_GOTO(st, open_shards(&b), done);
    res->compression_ratio = 4.0 * (double)res->stream_tokens / (double)res->compressed_bytes;
    DSA_TRY_GOTO(st, dsa_alloc((void **)&b.order, (size_t)res->windows * sizeof *b.order, "window order"), done);
    b.window_cap = o->seq_len + 1 > o->chunk_tokens ? o->seq_len + 1 : o->chunk_tokens;
    DSA_TRY_GOTO(st, dsa_alloc((void **)&b.window, (size_t)b.window_cap * 4, "window buffer"), done);
    DSA_TRY_GOTO(st, load_files(&b), done);
    DSA_TRY_GOTO(st, measure(&b), done);
done:
    bench_free(&b);
    return st;
}
