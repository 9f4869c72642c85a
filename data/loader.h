/* loader.h: the streaming loader: fixed-length windows from a set of shards, in a
 * shuffled, per-rank, resumable order, decoded ahead by a background thread.
 *
 * The token stream is the concatenation of the shards in the order given (callers
 * pass sorted paths; dsa_data_expand_paths sorts). Window w is the seq_len + 1 tokens
 * starting at w * seq_len, so consecutive windows share one token (the last input
 * token's target is the next window's first token) and windows cross document
 * boundaries, where the EOS written by `dsa pack` separates documents. The stream has
 * W = (N - 1) / seq_len windows; the N - 1 - W * seq_len tokens past the last full
 * window are never used.
 *
 * Order: epoch e visits the windows in a Fisher-Yates permutation drawn from the RNG
 * stream (seed, e) (core/rng.h), so the order is a pure function of (seed, epoch).
 * Rank split: rank r of `world` takes permutation entries r, r + world, r + 2 world, ...
 * Every rank gets W / world windows per epoch (the same count, so ranks step in
 * lockstep); the W mod world windows at the end of each epoch's permutation are skipped
 * that epoch (a different set each epoch). Ranks are disjoint and, with those
 * exceptions, cover every window each epoch.
 *
 * Cursor: (epoch, position) of the next window this rank will return, plus a
 * fingerprint of the data and options. Restoring a cursor (dsa_loader_seek) makes the
 * loader yield exactly the windows the uninterrupted run would have yielded next.
 *
 * Prefetch: with prefetch >= 1 a background thread decodes up to `prefetch` windows
 * ahead into a ring of prefetch + 1 buffers (double buffering at prefetch = 1: one
 * buffer is being filled while the caller holds the other). With prefetch = 0 windows
 * are decoded on the caller's thread. Both yield identical windows.
 */
#ifndef DSA_DATA_LOADER_H
#define DSA_DATA_LOADER_H

#include <stdint.h>

#include <cJSON.h>

#include "core/error.h"
#include "data/shard.h"

typedef struct {
    const char *const *paths; /* shard files, in stream order */
    int num_paths;
    int64_t seq_len;          /* window = seq_len + 1 tokens; default 131072 */
    uint64_t seed;
    int rank, world;          /* 0 <= rank < world */
    int segment_ids;          /* also produce per-token document ids */
    int prefetch;             /* windows decoded ahead by the background thread (0: none) */
    uint64_t vocab_size;      /* model vocabulary: shards must have vocab_size <= this (0: no check) */
} DsaLoaderOptions;

/* Defaults: seq_len 131072, seed 0, rank 0 of 1, no segment ids, prefetch 2. */
DsaLoaderOptions dsa_loader_options_default(void);

typedef struct {
    uint64_t epoch;
    uint64_t position; /* windows this rank has already taken in `epoch` */
    /* fingerprint, checked on seek */
    uint64_t seed;
    int64_t seq_len;
    int32_t rank, world;
    int64_t total_tokens;
    int32_t num_shards;
} DsaLoaderCursor;

/* One window, valid until the next dsa_loader_next/seek/close call. */
typedef struct {
    const uint32_t *tokens;     /* (seq_len + 1) */
    const int32_t *segment_ids; /* (seq_len + 1): 0 for the first document piece, +1 at each new one; NULL if off */
    int64_t window;             /* global window index w: tokens start at w * seq_len */
    uint64_t epoch, position;   /* where this window sits in this rank's order */
} DsaWindow;

typedef struct DsaLoader DsaLoader;

/* Open all shards (validating each), check they agree on vocab_size, eos_id and
 * tokenizer, and that there is at least one window per rank; start the prefetcher. */
DsaStatus dsa_loader_open(DsaLoader **out, const DsaLoaderOptions *opts);
/* The next window of this rank (moves to the next epoch when one ends). */
DsaStatus dsa_loader_next(DsaLoader *loader, DsaWindow *window);
/* The cursor of the next window dsa_loader_next will return. */
DsaLoaderCursor dsa_loader_cursor(const DsaLoader *loader);
/* Continue from a saved cursor; the fingerprint must match this loader's data and
 * options (the error names the field that differs). */
DsaStatus dsa_loader_seek(DsaLoader *loader, const DsaLoaderCursor *cursor);
void dsa_loader_close(DsaLoader *loader);

/* Facts about the loaded stream. */
int64_t dsa_loader_total_tokens(const DsaLoader *loader);
int64_t dsa_loader_num_windows(const DsaLoader *loader);     /* W, all ranks */
int64_t dsa_loader_rank_windows(const DsaLoader *loader);    /* W / world per epoch */
const DsaShardMeta *dsa_loader_meta(const DsaLoader *loader); /* of the first shard */

/* Cursor <-> JSON, for trainer_state.json. Parsing names `source` in errors. */
cJSON *dsa_loader_cursor_to_json(const DsaLoaderCursor *cursor);
DsaStatus dsa_loader_cursor_from_json(const cJSON *json, DsaLoaderCursor *cursor, const char *source);

/* Expand shard arguments: a file is taken as is, a directory contributes its *.h5
 * files, anything else is a glob pattern. The result is sorted within each argument,
 * duplicates are an error, and an argument matching nothing is an error naming it.
 * Free with dsa_data_paths_free. */
DsaStatus dsa_data_expand_paths(const char *const *args, int num_args, char ***paths, int *num_paths);
void dsa_data_paths_free(char **paths, int num_paths);

/* Refuse, before a run starts, a shard whose vocab_size exceeds the model's (its ids
 * could reach past the embedding): the error names the shard, its vocab_size and
 * tokenizer, and the model's vocab_size. Reads only each shard's attributes. The loader
 * makes the same check when it opens (DsaLoaderOptions.vocab_size). */
DsaStatus dsa_data_check_vocab(const char *const *paths, int num_paths, uint64_t model_vocab);

#endif
