/* bench_data.c: the data set of the loader benchmark (inspect.h, `dsa bench loader`):
 * documents drawn from a text-like Zipf distribution, the synthetic recall tasks or
 * uniform ids, written as shards and as one raw uint32 file holding the same token
 * stream; bench_loader.c times the reads. It lives in data/ so tests can run it as a
 * library call on tiny data.
 */
#include "data/bench_loader_internal.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/mem.h"
#include "core/progress.h"
#include "core/rng.h"
#include "data/synthetic.h"

/* ---- loader benchmark: data generation --------------------------------------------------- */

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

void dsa_bench_raw_path(char *buf, size_t cap, const char *dir, DsaBenchDist dist) {
    snprintf(buf, cap, "%s/%s.u32", dir, dsa_bench_dist_name(dist));
}

void dsa_bench_prefix(char *buf, size_t cap, const char *dir, DsaBenchDist dist) {
    snprintf(buf, cap, "%s/%s", dir, dsa_bench_dist_name(dist));
}

void dsa_bench_loader_cleanup(const char *dir, DsaBenchDist dist) {
    char path[DSA_PATH_CAP + 64], prefix[DSA_PATH_CAP];
    dsa_bench_raw_path(path, sizeof path, dir, dist);
    unlink(path);
    dsa_bench_prefix(prefix, sizeof prefix, dir, dist);
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
DsaStatus dsa_bench_generate(const DsaBenchLoaderOptions *o, DsaBenchLoaderResult *res) {
    char raw_path[DSA_PATH_CAP + 64], prefix[DSA_PATH_CAP];
    dsa_bench_raw_path(raw_path, sizeof raw_path, o->dir, o->dist);
    dsa_bench_prefix(prefix, sizeof prefix, o->dir, o->dist);
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
