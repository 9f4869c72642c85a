/* inspect.h: looking at token shards from the outside: per-shard statistics
 * (`dsa inspect`) and the loader throughput benchmark (`dsa bench loader`).
 *
 * Statistics: dsa_inspect_shard decodes every token of one shard, chunk by chunk,
 * through the same fast path the loader uses (dsa_shard_read), and computes document
 * lengths, compression figures and a unigram histogram summary (distinct ids, id
 * range, EOS share, top-N ids, entropy). With `verify` it also reads every token a
 * second time through the HDF5 filter pipeline (dsa_shard_read_hdf5) and compares.
 *
 * Benchmark: dsa_bench_loader_run generates a data set (in a directory), writes it as
 * shards and as one raw uint32 file holding the same token stream, and times, on warm
 * page cache: the loader (prefetch 0 and prefetch 2) over one shuffled epoch, pread of
 * the same windows in the same order from the raw file, and plain zstd decoding of the
 * shards' chunks (the ceiling). Correctness in the same run: sampled windows from the
 * loader are compared with the raw file before any figure is reported.
 *
 * Implemented in inspect.c (statistics and verification), inspect_report.c (text and JSON),
 * bench_data.c (the benchmark's data set) and bench_loader.c (its measurements).
 */
#ifndef DSA_DATA_INSPECT_H
#define DSA_DATA_INSPECT_H

#include <stdint.h>
#include <stdio.h>

#include <cJSON.h>

#include "core/error.h"
#include "data/shard.h"

/* ---- shard statistics ------------------------------------------------------------ */

enum {
    DSA_INSPECT_DEFAULT_TOP = 10,
    DSA_INSPECT_MAX_TOP = 1000,
    /* NOTE: vocabularies up to 2^24 ids get a dense uint64 histogram (at most 128 MiB);
     * larger ones (vocab_size may be up to 2^32) a hash table sized by the ids seen. */
    DSA_INSPECT_DENSE_VOCAB_MAX = 1 << 24,
};

typedef struct {
    int top_n;                 /* 0..DSA_INSPECT_MAX_TOP most frequent ids to report */
    int verify;                /* also read through HDF5 and compare */
    int progress;              /* show a progress line on stderr ... */
    int64_t progress_min_tokens; /* ... for shards of at least this many tokens */
} DsaInspectOptions;

/* top_n 10, no verify, progress on for shards of >= 16Mi tokens. */
DsaInspectOptions dsa_inspect_options_default(void);

typedef struct {
    uint32_t id;
    uint64_t count;
} DsaTokenCount;

typedef struct {
    char path[DSA_PATH_CAP];
    DsaShardMeta meta;        /* chunk_tokens from the HDF5 layout, the rest from attributes */
    uint32_t format_version;
    int64_t file_bytes;

    int64_t num_tokens;
    int64_t num_docs;
    int64_t doc_min, doc_max; /* document lengths in tokens (EOS included) */
    double doc_mean;
    int64_t docs_without_eos; /* documents whose last token is not eos_id (split pieces, empty ones) */

    int64_t num_chunks;
    uint64_t compressed_bytes; /* sum of chunk sizes */
    double compression_ratio;  /* 4 * num_tokens / compressed_bytes */
    double bits_per_token;     /* 8 * compressed_bytes / num_tokens */

    int64_t distinct_ids;
    uint32_t min_id, max_id;
    int64_t eos_count;
    double eos_share;          /* eos_count / num_tokens */
    double entropy_bits;       /* of the unigram distribution, bits per token */
    int num_top;               /* entries in top (<= top_n, <= distinct_ids) */
    DsaTokenCount top[DSA_INSPECT_MAX_TOP]; /* count descending, id ascending on ties */

    int verified;              /* 1: HDF5 pipeline read agrees on every token */
    double seconds;            /* wall time of the inspection */
} DsaShardStats;

/* Open, decode and summarize `path` into *stats (no allocation survives the call).
 * Every error names the file: missing, not HDF5, bad format, corrupt chunk, token id
 * out of range, or (verify) a token where the two read paths disagree. */
DsaStatus dsa_inspect_shard(const char *path, const DsaInspectOptions *opts, DsaShardStats *stats);

/* Totals over several shards (what the "total" line shows). */
typedef struct {
    int num_files;
    int64_t num_tokens, num_docs, docs_without_eos, num_chunks, eos_count;
    uint64_t compressed_bytes;
    int64_t file_bytes;
} DsaInspectTotals;

void dsa_inspect_totals_add(DsaInspectTotals *totals, const DsaShardStats *stats);

/* Readable aligned table for one shard; `verify` says whether a verify line belongs. */
void dsa_inspect_print_text(FILE *out, const DsaShardStats *stats, int verify);
void dsa_inspect_print_totals(FILE *out, const DsaInspectTotals *totals);
/* The same fields as JSON (caller frees with cJSON_Delete). */
cJSON *dsa_inspect_to_json(const DsaShardStats *stats, int verify);
cJSON *dsa_inspect_totals_to_json(const DsaInspectTotals *totals);

/* ---- loader benchmark ------------------------------------------------------------ */

typedef enum {
    DSA_BENCH_TEXT = 0, /* Zipf ids over a 32000 vocabulary with repeated phrases, BPE-like */
    DSA_BENCH_SYNTHETIC, /* the synthetic-v1 recall tasks (data/synthetic.h), task "mixed" */
    DSA_BENCH_UNIFORM,  /* uniform ids over DeepSeek's 129280 vocabulary: the hard case for zstd */
    DSA_BENCH_NUM_DISTS,
} DsaBenchDist;

/* "text-like", "synthetic", "uniform". */
const char *dsa_bench_dist_name(DsaBenchDist dist);
/* Name (or "text" for text-like) -> dist; DSA_ERR_ARG listing the choices otherwise. */
DsaStatus dsa_bench_dist_parse(const char *name, DsaBenchDist *out);

typedef struct {
    const char *dir;       /* where the data set is written (must exist or be creatable) */
    DsaBenchDist dist;
    int64_t tokens;        /* approximate size of the data set (whole documents) */
    int64_t seq_len;       /* loader window = seq_len + 1 */
    int64_t chunk_tokens;
    int zstd_level;
    int64_t shard_tokens;  /* tokens per shard */
    int repeat;            /* timed runs of every measurement; the median is reported */
    uint64_t seed;
    int progress;          /* progress lines on stderr while generating */
} DsaBenchLoaderOptions;

/* 128Mi tokens, seq_len 131072, chunk 16384, level 3, 64Mi tokens per shard,
 * repeat 3, seed 1. `dir` and `dist` must be set by the caller. */
DsaBenchLoaderOptions dsa_bench_loader_options_default(void);

/* One timed measurement: tokens and the median (and best) seconds over the repeats. */
typedef struct {
    int64_t tokens;
    double median_s, best_s;
} DsaBenchTiming;

typedef struct {
    DsaBenchDist dist;
    int64_t stream_tokens;     /* tokens in the shards (= the raw file) */
    int num_shards;
    int64_t num_docs;
    uint64_t compressed_bytes; /* sum of chunk sizes over all shards */
    double compression_ratio;  /* 4 * stream_tokens / compressed_bytes */
    int64_t windows;           /* windows per epoch (all read once per run) */
    double generate_s;         /* generating and writing the data set */
    DsaBenchTiming loader_p0;  /* dsa_loader_next, prefetch 0: decoding on the caller */
    DsaBenchTiming loader_p2;  /* dsa_loader_next, prefetch 2: background decoder */
    DsaBenchTiming plain;      /* pread of the same windows from the raw uint32 file */
    DsaBenchTiming zstd;       /* ZSTD_decompressDCtx over every chunk, from memory */
    DsaBenchTiming range;      /* the max-scan of the token-range check over decoded data */
    DsaBenchTiming open;       /* dsa_loader_open (HDF5 validation, chunk index); tokens 0 */
    int64_t num_chunks;        /* chunks in all shards */
    int64_t decoded_tokens;    /* tokens the loader decodes per epoch (whole chunks) */
    int64_t checked_windows;   /* windows compared between loader and raw file */
} DsaBenchLoaderResult;

/* Check the sizes and settings (not dir and dist): what the CLI checks before starting. */
DsaStatus dsa_bench_loader_check(const DsaBenchLoaderOptions *opts);

/* Generate the data set under opts->dir (files "<dist>-*.h5" and "<dist>.u32", left in
 * place), warm the page cache by reading every file once, then run each measurement
 * `repeat` times. Runs on the caller's thread (plus the loader's thread at prefetch 2). */
DsaStatus dsa_bench_loader_run(const DsaBenchLoaderOptions *opts, DsaBenchLoaderResult *result);

/* Remove the files dsa_bench_loader_run wrote for `dist` under `dir` (missing ones are
 * not an error). */
void dsa_bench_loader_cleanup(const char *dir, DsaBenchDist dist);

#endif
