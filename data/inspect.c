/* inspect.c: `dsa inspect`'s statistics and verification of one shard (inspect.h); the
 * report (text and JSON) is in inspect_report.c.
 *
 * Statistics stream a shard in blocks of whole chunks (about 1Mi tokens) through
 * dsa_shard_read, so memory is one block plus the histogram whatever the shard size.
 * Verification runs in the same pass: the shard must belong to a finished set, every
 * document's end is checked for EOS, and with `verify` every block is read a second time
 * through HDF5's own filter pipeline and compared token for token.
 */
#include "data/inspect.h"

#include <math.h>
#include <string.h>
#include <sys/stat.h>

#include "core/log.h"
#include "core/mem.h"
#include "core/progress.h"
#include "core/rng.h"

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
