/* synthetic.h: synthetic long-range recall tasks ("synthetic-v1"), generator and scanner.
 *
 * These documents measure whether (sparse) attention retrieves a token from far back,
 * without a downloaded corpus: every answer is fully determined by one earlier record
 * at a known distance, and everything else is random filler.
 *
 * Vocabulary of V ids (64 <= V <= 2^32, default 512):
 *   0 PAD (never emitted)   1 EOS   2 KV_OPEN   3 KV_SEP   4 QUERY   5 ANSWER   6 NEEDLE
 *   7..15 reserved (never emitted)
 *   filler ids   [16, V/2)   drawn uniformly, fill every position not used below
 *   symbol ids   [V/2, V)    keys, values and needles, drawn uniformly
 *
 * Task "kv" (associative recall). A document holds Q record/query pairs:
 *   record  KV_OPEN k1 k2 KV_SEP v1 v2      (6 tokens)
 *   query   QUERY k1 k2 ANSWER v1 v2        (6 tokens)
 * Keys (k1, k2) are unique within a document, so each query has exactly one matching
 * record. Pairs are placed at random, longest distance first, and may interleave
 * (another record may lie between a record and its query); no two structures overlap.
 * A pair whose distance leaves no free room (distances close to doc_tokens fit about
 * once per document) is left out, so a document may hold fewer than Q pairs.
 *
 * Task "needle". A document holds up to Q needle/query pairs:
 *   needle  NEEDLE n1 n2 n3 n4              (5 tokens)
 *   query   QUERY NEEDLE ANSWER n1 n2 n3 n4 (7 tokens)
 * A query's needle is the nearest NEEDLE record before it: pairs never interleave (each
 * pair's needle ... query span holds no other structure), and needle values are unique
 * within a document. Pairs are drawn one by one from the distances that still fit, so a
 * document with long distances holds fewer pairs; filler gaps between pairs are random.
 *
 * Task "mixed": documents alternate, even document indices are "kv", odd are "needle".
 *
 * DISTANCE. d = (position of the query's ANSWER token) - (position of the last token of
 * the matching record: v2 for kv, n4 for needle). The record ends exactly d tokens
 * before ANSWER; the value the model must copy first (predicted at ANSWER) sits at
 * ANSWER - d - 1 (v1) or ANSWER - d - 3 (n1). Every query's d is drawn uniformly from
 * the distance list. Valid distances: 4 <= d <= doc_tokens - 10.
 *
 * Documents. Document i has doc_tokens - 1 generated tokens; the shard writer appends
 * EOS, so each document occupies exactly doc_tokens tokens of the stream (with
 * doc_tokens = seq_len, loader window w starts at document w). The number of documents
 * is ceil(total_tokens / doc_tokens). Document i is drawn from its own RNG stream
 * dsa_rng_split(dsa_rng_init(seed, DSA_SYN_RNG_STREAM), i), so it depends only on
 * (options, i), never on chunking, threads or the other documents.
 */
#ifndef DSA_DATA_SYNTHETIC_H
#define DSA_DATA_SYNTHETIC_H

#include <stdint.h>

#include "core/error.h"

#define DSA_SYN_TOKENIZER_NAME "synthetic-v1"

enum {
    DSA_SYN_PAD = 0,
    DSA_SYN_EOS = 1,
    DSA_SYN_KV_OPEN = 2,
    DSA_SYN_KV_SEP = 3,
    DSA_SYN_QUERY = 4,
    DSA_SYN_ANSWER = 5,
    DSA_SYN_NEEDLE = 6,
    DSA_SYN_FIRST_FILLER = 16, /* filler is [16, V/2), symbols [V/2, V) */
    DSA_SYN_MIN_VOCAB = 64,
    DSA_SYN_DEFAULT_VOCAB = 512,
    DSA_SYN_MIN_DISTANCE = 4,
    DSA_SYN_DISTANCE_MARGIN = 10, /* max distance = doc_tokens - 10 */
    DSA_SYN_MIN_DOC_TOKENS = 16,
    DSA_SYN_MAX_DISTANCES = 32,
    DSA_SYN_KV_VALUE_LEN = 2,
    DSA_SYN_NEEDLE_VALUE_LEN = 4,
    DSA_SYN_RNG_STREAM = 0x53594e, /* "SYN": parent stream of the per-document streams */
};

typedef enum { DSA_SYN_TASK_KV = 0, DSA_SYN_TASK_NEEDLE = 1, DSA_SYN_TASK_MIXED = 2 } DsaSynTask;

typedef struct {
    DsaSynTask task;
    int64_t total_tokens; /* documents = ceil(total_tokens / doc_tokens), >= 1 */
    int64_t doc_tokens;   /* tokens per document including its EOS, >= 16 */
    int64_t distances[DSA_SYN_MAX_DISTANCES];
    int n_distances; /* 0: powers of 4 from 64 up to the largest that fits */
    uint64_t seed;
    uint64_t vocab_size;     /* V */
    int64_t queries_per_doc; /* Q >= 1; "needle" documents may hold fewer */
} DsaSyntheticOptions;

/* Defaults: kv, 16Mi tokens, doc_tokens 128Ki, automatic distances, seed 0, V 512, Q 16. */
void dsa_synthetic_options_default(DsaSyntheticOptions *opts);
/* "kv", "needle", "mixed" -> task; DSA_ERR_ARG naming the other choices otherwise. */
DsaStatus dsa_synthetic_task_parse(const char *name, DsaSynTask *out);
const char *dsa_synthetic_task_name(DsaSynTask task);

/* ---- generator ------------------------------------------------------------------- */

typedef struct DsaSynGen DsaSynGen;

/* Validate `opts` (every relation above, refused by name and value) and allocate the
 * generator's scratch (about doc_tokens bytes). */
DsaStatus dsa_synthetic_gen_new(DsaSynGen **out, const DsaSyntheticOptions *opts);
void dsa_synthetic_gen_free(DsaSynGen *gen);
/* The options with distances resolved (n_distances >= 1). */
const DsaSyntheticOptions *dsa_synthetic_gen_options(const DsaSynGen *gen);
int64_t dsa_synthetic_gen_num_docs(const DsaSynGen *gen);
/* Generated tokens per document (doc_tokens - 1; EOS not included). */
int64_t dsa_synthetic_gen_doc_len(const DsaSynGen *gen);
/* Write document `index` (0 <= index < num_docs) into `out` (doc_len tokens). Fails
 * only for an index out of range. */
DsaStatus dsa_synthetic_gen_doc(DsaSynGen *gen, int64_t index, uint32_t *out);

/* ---- scanner --------------------------------------------------------------------- */

/* One ANSWER token found in a window. */
typedef struct {
    int task;           /* DSA_SYN_TASK_KV or _NEEDLE; -1 when ANSWER is the window's first token */
    int64_t answer_pos; /* window position of the ANSWER token; answer tokens follow it */
    int value_len;      /* answer tokens after ANSWER: 2 (kv), 4 (needle), 0 (task -1) */
    int complete;       /* all value_len answer tokens lie inside the window */
    int in_window;      /* the matching record lies inside the window, in the same document */
    int64_t record_pos; /* window position of the record's last token (v2 / n4); -1 if !in_window */
    int64_t distance;   /* answer_pos - record_pos; -1 if !in_window */
    int values_match;   /* in_window && complete && answer tokens == the record's values */
} DsaSynAnswer;

typedef struct {
    DsaSynAnswer *answers; /* (count) in window order */
    int64_t count, cap;
} DsaSynScan;

/* Find every ANSWER token in tokens[0, n) and its matching record: for a kv query
 * (QUERY k1 k2 ANSWER) the nearest earlier `KV_OPEN k1 k2 KV_SEP v1 v2`, for a needle
 * query (QUERY NEEDLE ANSWER) the nearest earlier `NEEDLE n1 n2 n3 n4`, both searched
 * only back to the last EOS (records never match across documents). A query whose keys
 * or record start before the window reports in_window = 0. `out` is filled (reset
 * first); free it with dsa_synthetic_scan_free. Fails only on out-of-memory. */
DsaStatus dsa_synthetic_scan(const uint32_t *tokens, int64_t n, DsaSynScan *out);
void dsa_synthetic_scan_free(DsaSynScan *scan);

#endif
