/* synthetic.c: the "synthetic-v1" long-range recall tasks (format in synthetic.h).
 *
 * Generation of one document: fill every position with filler, then lay the
 * structures over it. An occupancy map (one byte per position) keeps structures
 * disjoint, and a small open-addressing set keeps keys (kv) and needle values unique.
 * kv pairs are placed largest distance first, each at a random answer position (a few
 * random tries, then a scan from a random start), so long pairs get the empty document;
 * a pair that fits nowhere is left out. Needle pairs are laid end to end in random order
 * with random filler gaps, so they never interleave.
 *
 * The scanner walks the window once, remembering the last record of each key (a hash
 * map whose entries are tagged with a document counter, bumped at every EOS) and the
 * last needle record.
 */
#include "data/synthetic.h"

#include <stdlib.h>
#include <string.h>

#include "core/mem.h"
#include "core/rng.h"

enum { KV_SPAN = 6, NEEDLE_SPAN = 5, NEEDLE_QUERY_SPAN = 7, PLACE_TRIES = 64 };

struct DsaSynGen {
    DsaSyntheticOptions opts; /* distances resolved */
    int64_t content;          /* generated tokens per document: doc_tokens - 1 */
    uint64_t filler_count, symbol_base, symbol_count;
    uint8_t *used; /* (content) 1 where a structure lies */
    uint64_t *set; /* (set_cap) keys + 1, 0 = empty */
    int64_t set_cap;
    int64_t *pair_d;   /* (pair_cap) distance of each pair */
    int64_t *pair_pos; /* (pair_cap) answer positions (kv) or gap cut points (needle) */
    int64_t pair_cap;
};

void dsa_synthetic_options_default(DsaSyntheticOptions *opts) {
    memset(opts, 0, sizeof *opts);
    opts->task = DSA_SYN_TASK_KV;
    opts->total_tokens = 16ll << 20;
    opts->doc_tokens = 128ll << 10;
    opts->vocab_size = DSA_SYN_DEFAULT_VOCAB;
    opts->queries_per_doc = 16;
}

static const char *const task_names[] = {"kv", "needle", "mixed"};

DsaStatus dsa_synthetic_task_parse(const char *name, DsaSynTask *out) {
    for (int i = 0; i < 3; i++) {
        if (!strcmp(name, task_names[i])) {
            *out = (DsaSynTask)i;
            return DSA_OK;
        }
    }
    DSA_FAIL(DSA_ERR_ARG, "unknown synthetic task \"%s\" (expected kv, needle or mixed)", name);
}

const char *dsa_synthetic_task_name(DsaSynTask task) { return task >= 0 && task <= 2 ? task_names[task] : "?"; }

static DsaStatus check_options(const DsaSyntheticOptions *o) {
    if (o->task < DSA_SYN_TASK_KV || o->task > DSA_SYN_TASK_MIXED)
        DSA_FAIL(DSA_ERR_ARG, "synthetic: unknown task %d", (int)o->task);
    if (o->vocab_size < DSA_SYN_MIN_VOCAB || o->vocab_size > (1ull << 32))
        DSA_FAIL(DSA_ERR_ARG, "synthetic: vocab_size %llu out of range [%d, 2^32]", (unsigned long long)o->vocab_size,
                 DSA_SYN_MIN_VOCAB);
    if (o->doc_tokens < DSA_SYN_MIN_DOC_TOKENS)
        DSA_FAIL(DSA_ERR_ARG, "synthetic: doc_tokens %lld is below the minimum %d", (long long)o->doc_tokens,
                 DSA_SYN_MIN_DOC_TOKENS);
    if (o->doc_tokens > (1ll << 40))
        DSA_FAIL(DSA_ERR_ARG, "synthetic: doc_tokens %lld is too large", (long long)o->doc_tokens);
    if (o->total_tokens < 1) DSA_FAIL(DSA_ERR_ARG, "synthetic: total tokens must be >= 1");
    if (o->queries_per_doc < 1) DSA_FAIL(DSA_ERR_ARG, "synthetic: queries_per_doc must be >= 1");
    if (o->n_distances < 0 || o->n_distances > DSA_SYN_MAX_DISTANCES)
        DSA_FAIL(DSA_ERR_ARG, "synthetic: %d distances given, at most %d allowed", o->n_distances,
                 DSA_SYN_MAX_DISTANCES);
    int64_t max_d = o->doc_tokens - DSA_SYN_DISTANCE_MARGIN;
    for (int i = 0; i < o->n_distances; i++) {
        int64_t d = o->distances[i];
        if (d < DSA_SYN_MIN_DISTANCE || d > max_d)
            DSA_FAIL(DSA_ERR_ARG,
                     "synthetic: distance %lld does not fit: distances must lie in [%d, doc_tokens - %d] = [%d, %lld] "
                     "for documents of %lld tokens (raise --doc-tokens or lower the distance)",
                     (long long)d, DSA_SYN_MIN_DISTANCE, DSA_SYN_DISTANCE_MARGIN, DSA_SYN_MIN_DISTANCE,
                     (long long)max_d, (long long)o->doc_tokens);
    }
    int64_t content = o->doc_tokens - 1;
    if (o->task != DSA_SYN_TASK_NEEDLE && o->queries_per_doc * 2 * KV_SPAN > content / 2)
        DSA_FAIL(DSA_ERR_ARG,
                 "synthetic: %lld kv queries per document need %lld tokens of records and queries, more than half a "
                 "document of %lld tokens; use at most %lld queries per document",
                 (long long)o->queries_per_doc, (long long)(o->queries_per_doc * 2 * KV_SPAN), (long long)o->doc_tokens,
                 (long long)(content / (4 * KV_SPAN)));
    uint64_t symbols = o->vocab_size - o->vocab_size / 2;
    if (o->task != DSA_SYN_TASK_NEEDLE && (uint64_t)o->queries_per_doc > symbols * symbols / 4)
        DSA_FAIL(DSA_ERR_ARG,
                 "synthetic: %lld kv queries per document need unique keys; a vocabulary of %llu allows "
                 "at most %llu",
                 (long long)o->queries_per_doc, (unsigned long long)o->vocab_size,
                 (unsigned long long)(symbols * symbols / 4));
    return DSA_OK;
}

/* Default distances: 64, 256, 1024, ... up to the largest that fits (at least one). */
static void resolve_distances(DsaSyntheticOptions *o) {
    if (o->n_distances > 0) return;
    int64_t max_d = o->doc_tokens - DSA_SYN_DISTANCE_MARGIN;
    for (int64_t d = 64; d <= max_d && o->n_distances < DSA_SYN_MAX_DISTANCES; d *= 4)
        o->distances[o->n_distances++] = d;
    if (o->n_distances == 0) o->distances[o->n_distances++] = max_d;
}

DsaStatus dsa_synthetic_gen_new(DsaSynGen **out, const DsaSyntheticOptions *opts) {
    *out = NULL;
    DSA_TRY(check_options(opts));
    DsaSynGen *g = dsa_calloc(1, sizeof *g);
    if (!g) DSA_FAIL(DSA_ERR_NOMEM, "synthetic: out of memory for the generator");
    g->opts = *opts;
    resolve_distances(&g->opts);
    g->content = opts->doc_tokens - 1;
    g->symbol_base = opts->vocab_size / 2;
    g->symbol_count = opts->vocab_size - g->symbol_base;
    g->filler_count = g->symbol_base - DSA_SYN_FIRST_FILLER;
    /* At most Q pairs, and never more than fit (a pair takes >= 12 tokens). */
    g->pair_cap = opts->queries_per_doc;
    if (g->pair_cap > g->content / 12 + 1) g->pair_cap = g->content / 12 + 1;
    g->set_cap = 16;
    while (g->set_cap < 2 * g->pair_cap + 2) g->set_cap *= 2;
    g->used = dsa_malloc((size_t)g->content);
    g->set = dsa_malloc((size_t)g->set_cap * sizeof *g->set);
    g->pair_d = dsa_malloc((size_t)g->pair_cap * sizeof *g->pair_d);
    g->pair_pos = dsa_malloc((size_t)g->pair_cap * sizeof *g->pair_pos);
    if (!g->used || !g->set || !g->pair_d || !g->pair_pos) {
        dsa_synthetic_gen_free(g);
        DSA_FAIL(DSA_ERR_NOMEM, "synthetic: out of memory for documents of %lld tokens", (long long)opts->doc_tokens);
    }
    *out = g;
    return DSA_OK;
}

void dsa_synthetic_gen_free(DsaSynGen *g) {
    if (!g) return;
    dsa_free(g->used, (size_t)g->content);
    dsa_free(g->set, (size_t)g->set_cap * sizeof *g->set);
    dsa_free(g->pair_d, (size_t)g->pair_cap * sizeof *g->pair_d);
    dsa_free(g->pair_pos, (size_t)g->pair_cap * sizeof *g->pair_pos);
    dsa_free(g, sizeof *g);
}

const DsaSyntheticOptions *dsa_synthetic_gen_options(const DsaSynGen *g) { return &g->opts; }
int64_t dsa_synthetic_gen_doc_len(const DsaSynGen *g) { return g->content; }
int64_t dsa_synthetic_gen_num_docs(const DsaSynGen *g) {
    return (g->opts.total_tokens + g->opts.doc_tokens - 1) / g->opts.doc_tokens;
}

/* Insert `key` into the set; returns 0 when it was already there. */
static int set_insert(DsaSynGen *g, uint64_t key) {
    uint64_t mask = (uint64_t)g->set_cap - 1, stored = key + 1;
    for (uint64_t i = dsa_mix64(key) & mask;; i = (i + 1) & mask) {
        if (g->set[i] == stored) return 0;
        if (g->set[i] == 0) {
            g->set[i] = stored;
            return 1;
        }
    }
}

static uint32_t draw_symbol(DsaSynGen *g, DsaRng *rng) {
    return (uint32_t)(g->symbol_base + dsa_rng_below(rng, g->symbol_count));
}

static int span_free(const DsaSynGen *g, int64_t start, int64_t len) {
    for (int64_t i = start; i < start + len; i++)
        if (g->used[i]) return 0;
    return 1;
}

static void mark(DsaSynGen *g, int64_t start, int64_t len) { memset(g->used + start, 1, (size_t)len); }

static int cmp_desc(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x < y) - (x > y);
}

static int cmp_asc(const void *a, const void *b) { return -cmp_desc(a, b); }

/* Answer position for a kv pair at distance d: record [p-d-5, p-d], query [p-3, p+2].
 * Random tries first, then every position from a random start; -1 when none is free. */
static int64_t place_kv(DsaSynGen *g, DsaRng *rng, int64_t d) {
    int64_t lo = d + KV_SPAN - 1, count = g->content - 2 - lo; /* p in [lo, content - 3] */
    int64_t start = lo + (int64_t)dsa_rng_below(rng, (uint64_t)count);
    for (int t = 0; t < PLACE_TRIES; t++) {
        int64_t p = lo + (int64_t)dsa_rng_below(rng, (uint64_t)count);
        if (span_free(g, p - d - 5, KV_SPAN) && span_free(g, p - 3, KV_SPAN)) return p;
    }
    for (int64_t k = 0; k < count; k++) {
        int64_t p = lo + (start - lo + k) % count;
        if (span_free(g, p - d - 5, KV_SPAN) && span_free(g, p - 3, KV_SPAN)) return p;
    }
    return -1;
}

static void gen_kv(DsaSynGen *g, DsaRng *rng, uint32_t *out) {
    int64_t q = g->pair_cap; /* == queries_per_doc: check_options bounds kv queries */
    for (int64_t j = 0; j < q; j++) g->pair_d[j] = g->opts.distances[dsa_rng_below(rng, (uint64_t)g->opts.n_distances)];
    /* NOTE: longest first, so the pairs that need the most room meet an empty document. */
    qsort(g->pair_d, (size_t)q, sizeof *g->pair_d, cmp_desc);
    for (int64_t j = 0; j < q; j++) {
        int64_t d = g->pair_d[j], p = place_kv(g, rng, d);
        if (p < 0) continue; /* no room left at this distance: the document holds fewer pairs */
        uint32_t k1, k2;
        do {
            k1 = draw_symbol(g, rng);
            k2 = draw_symbol(g, rng);
        } while (!set_insert(g, (uint64_t)(k1 - g->symbol_base) * g->symbol_count + (k2 - g->symbol_base)));
        uint32_t v1 = draw_symbol(g, rng), v2 = draw_symbol(g, rng);
        int64_t r = p - d - 5;
        const uint32_t rec[KV_SPAN] = {DSA_SYN_KV_OPEN, k1, k2, DSA_SYN_KV_SEP, v1, v2};
        const uint32_t qry[KV_SPAN] = {DSA_SYN_QUERY, k1, k2, DSA_SYN_ANSWER, v1, v2};
        memcpy(out + r, rec, sizeof rec);
        memcpy(out + p - 3, qry, sizeof qry);
        mark(g, r, KV_SPAN);
        mark(g, p - 3, KV_SPAN);
    }
}

static void gen_needle(DsaSynGen *g, DsaRng *rng, uint32_t *out) {
    /* Draw pairs while some distance still fits; a pair spans d + 9 tokens. */
    int64_t room = g->content, n = 0;
    const DsaSyntheticOptions *o = &g->opts;
    while (n < g->pair_cap) {
        int64_t fit[DSA_SYN_MAX_DISTANCES];
        int nfit = 0;
        for (int i = 0; i < o->n_distances; i++)
            if (o->distances[i] + 9 <= room) fit[nfit++] = o->distances[i];
        if (nfit == 0) break;
        g->pair_d[n] = fit[dsa_rng_below(rng, (uint64_t)nfit)];
        room -= g->pair_d[n++] + 9;
    }
    /* Random order (Fisher-Yates), then n cut points in [0, room] split the slack. */
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)dsa_rng_below(rng, (uint64_t)i + 1), t = g->pair_d[i];
        g->pair_d[i] = g->pair_d[j];
        g->pair_d[j] = t;
    }
    for (int64_t i = 0; i < n; i++) g->pair_pos[i] = (int64_t)dsa_rng_below(rng, (uint64_t)room + 1);
    qsort(g->pair_pos, (size_t)n, sizeof *g->pair_pos, cmp_asc);
    int64_t pos = 0, prev_cut = 0;
    for (int64_t i = 0; i < n; i++) {
        pos += g->pair_pos[i] - prev_cut;
        prev_cut = g->pair_pos[i];
        uint32_t v[DSA_SYN_NEEDLE_VALUE_LEN];
        uint64_t h;
        do {
            h = 0;
            for (int k = 0; k < DSA_SYN_NEEDLE_VALUE_LEN; k++) {
                v[k] = draw_symbol(g, rng);
                h = dsa_mix64(h ^ v[k]);
            }
        } while (!set_insert(g, h)); /* equal hash => maybe equal values: redraw */
        int64_t d = g->pair_d[i], p = pos + 4 + d;
        const uint32_t rec[NEEDLE_SPAN] = {DSA_SYN_NEEDLE, v[0], v[1], v[2], v[3]};
        const uint32_t qry[NEEDLE_QUERY_SPAN] = {DSA_SYN_QUERY, DSA_SYN_NEEDLE, DSA_SYN_ANSWER, v[0], v[1], v[2], v[3]};
        memcpy(out + pos, rec, sizeof rec);
        memcpy(out + p - 2, qry, sizeof qry);
        pos += d + 9;
    }
}

DsaStatus dsa_synthetic_gen_doc(DsaSynGen *g, int64_t index, uint32_t *out) {
    if (index < 0 || index >= dsa_synthetic_gen_num_docs(g))
        DSA_FAIL(DSA_ERR_RANGE, "synthetic: document %lld out of range [0, %lld)", (long long)index,
                 (long long)dsa_synthetic_gen_num_docs(g));
    DsaRng root = dsa_rng_init(g->opts.seed, DSA_SYN_RNG_STREAM);
    DsaRng rng = dsa_rng_split(&root, (uint64_t)index);
    for (int64_t i = 0; i < g->content; i++)
        out[i] = (uint32_t)(DSA_SYN_FIRST_FILLER + dsa_rng_below(&rng, g->filler_count));
    memset(g->used, 0, (size_t)g->content);
    memset(g->set, 0, (size_t)g->set_cap * sizeof *g->set);
    int needle = g->opts.task == DSA_SYN_TASK_NEEDLE || (g->opts.task == DSA_SYN_TASK_MIXED && (index & 1));
    if (needle)
        gen_needle(g, &rng, out);
    else
        gen_kv(g, &rng, out);
    return DSA_OK;
}

/* ---- scanner --------------------------------------------------------------------- */

typedef struct {
    uint64_t key; /* k1 << 32 | k2 */
    int64_t pos;  /* last token of the record */
    int64_t doc;  /* document counter when stored; other values mean empty */
} ScanSlot;

typedef struct {
    ScanSlot *slots;
    int64_t cap;
} ScanMap;

static ScanSlot *map_find(ScanMap *m, uint64_t key, int64_t doc) {
    uint64_t mask = (uint64_t)m->cap - 1;
    for (uint64_t i = dsa_mix64(key) & mask;; i = (i + 1) & mask) {
        ScanSlot *s = &m->slots[i];
        if (s->doc != doc || s->key == key) return s;
    }
}

static DsaStatus scan_push(DsaSynScan *out, const DsaSynAnswer *a) {
    if (out->count == out->cap) {
        int64_t cap = out->cap ? out->cap * 2 : 64;
        DsaSynAnswer *grown = dsa_realloc(out->answers, (size_t)out->cap * sizeof *grown, (size_t)cap * sizeof *grown);
        if (!grown) DSA_FAIL(DSA_ERR_NOMEM, "synthetic scan: out of memory for %lld answers", (long long)cap);
        out->answers = grown;
        out->cap = cap;
    }
    out->answers[out->count++] = *a;
    return DSA_OK;
}

/* Fill the record fields of `a` from the record ending at `rec_end` with values at
 * tokens[rec_end - len + 1 .. rec_end]. */
static void scan_match(const uint32_t *t, int64_t n, DsaSynAnswer *a, int64_t rec_end) {
    a->in_window = 1;
    a->record_pos = rec_end;
    a->distance = a->answer_pos - rec_end;
    a->complete = a->answer_pos + a->value_len < n;
    if (!a->complete) return;
    a->values_match = !memcmp(t + rec_end - a->value_len + 1, t + a->answer_pos + 1, (size_t)a->value_len * sizeof *t);
}

static DsaStatus scan_answer(const uint32_t *t, int64_t n, int64_t p, ScanMap *m, int64_t doc, int64_t needle_end,
                             DsaSynScan *out) {
    DsaSynAnswer a = {.task = -1, .answer_pos = p, .record_pos = -1, .distance = -1};
    if (p >= 1 && t[p - 1] == DSA_SYN_NEEDLE) {
        a.task = DSA_SYN_TASK_NEEDLE;
        a.value_len = DSA_SYN_NEEDLE_VALUE_LEN;
        a.complete = p + a.value_len < n;
        if (needle_end >= 0) scan_match(t, n, &a, needle_end);
    } else if (p >= 1) {
        a.task = DSA_SYN_TASK_KV;
        a.value_len = DSA_SYN_KV_VALUE_LEN;
        a.complete = p + a.value_len < n;
        if (p >= 2) {
            ScanSlot *s = map_find(m, (uint64_t)t[p - 2] << 32 | t[p - 1], doc);
            if (s->doc == doc) scan_match(t, n, &a, s->pos);
        }
    }
    return scan_push(out, &a);
}

DsaStatus dsa_synthetic_scan(const uint32_t *t, int64_t n, DsaSynScan *out) {
    out->count = 0;
    int64_t records = 0;
    for (int64_t i = 0; i < n; i++) records += t[i] == DSA_SYN_KV_OPEN;
    ScanMap m = {.cap = 16};
    while (m.cap < 2 * records + 2) m.cap *= 2;
    m.slots = dsa_malloc((size_t)m.cap * sizeof *m.slots);
    if (!m.slots) DSA_FAIL(DSA_ERR_NOMEM, "synthetic scan: out of memory for %lld records", (long long)records);
    for (int64_t i = 0; i < m.cap; i++) m.slots[i].doc = -1;
    DsaStatus st = DSA_OK;
    int64_t doc = 0, needle_end = -1;
    for (int64_t i = 0; i < n; i++) {
        if (t[i] == DSA_SYN_EOS) {
            doc++;
            needle_end = -1;
        }
        if (t[i] == DSA_SYN_ANSWER) DSA_TRY_GOTO(st, scan_answer(t, n, i, &m, doc, needle_end, out), done);
        /* Register a record at its last token, so it only matches later queries. */
        if (i >= 5 && t[i - 5] == DSA_SYN_KV_OPEN && t[i - 2] == DSA_SYN_KV_SEP) {
            ScanSlot *s = map_find(&m, (uint64_t)t[i - 4] << 32 | t[i - 3], doc);
            *s = (ScanSlot){.key = (uint64_t)t[i - 4] << 32 | t[i - 3], .pos = i, .doc = doc};
        }
        if (i >= 4 && t[i - 4] == DSA_SYN_NEEDLE && t[i - 3] != DSA_SYN_ANSWER) needle_end = i;
    }
done:
    dsa_free(m.slots, (size_t)m.cap * sizeof *m.slots);
    return st;
}

void dsa_synthetic_scan_free(DsaSynScan *scan) {
    dsa_free(scan->answers, (size_t)scan->cap * sizeof *scan->answers);
    memset(scan, 0, sizeof *scan);
}
