/* shard.h: the token shard format (DESIGN.md "Data") and its writer and reader.
 *
 * A shard is an HDF5 file:
 *   /tokens       uint32, 1-D, chunked (chunk_tokens), zstd filter id 32015 with
 *                 cd_values[0] = level (the registered id, so h5py + hdf5plugin read it)
 *   /doc_offsets  uint64, 1-D, num_docs + 1 entries: document d is
 *                 tokens[doc_offsets[d], doc_offsets[d+1]); first 0, last = num tokens
 *   attributes on the root group:
 *                 vocab_size (uint64), eos_id (uint32), tokenizer (string),
 *                 format_version (uint32, DSA_SHARD_FORMAT_VERSION),
 *                 chunk_tokens (uint64, informative), zstd_level (int32, informative),
 *                 pack_manifest (string, only in a shard of a set: the file name of
 *                 the set's manifest, in the shard's directory; see "sets" below)
 * in the HDF5 1.10 file format (superblock version 3): every piece of HDF5 metadata
 * (superblock, object headers with the attributes, chunk index) carries a checksum
 * that HDF5 verifies before decoding it.
 *
 * NOTE (trust boundary): libhdf5 1.10.8 (Debian 12's) reads freed or out-of-range
 * memory, or allocates what a size field says, when it decodes corrupt metadata of the
 * older formats, which have no checksums (attribute messages reached through H5Aexists;
 * the regression inputs are tests/data/shard-fuzz/). dsa_shard_open therefore refuses a
 * file whose superblock is older than version 2 before HDF5 parses it, and checks
 * HDF5's end-of-file address against the file size. Accidental damage (bit rot, a torn
 * copy, truncation) is then caught by a checksum and reported by name; a file crafted
 * to pass the checksums and exploit libhdf5 is not: a shard is trusted input, as any
 * file HDF5 opens.
 *
 * Every document written by dsa_shard_writer ends with eos_id; a document longer than
 * a shard's budget is split across shards (its pieces are documents of their shards,
 * and only the last piece ends with EOS).
 *
 * Writes are atomic: the file is written under a temporary name in the same
 * directory, fsynced and renamed on close, so a crash never leaves a half shard under
 * the final name.
 *
 * Reads bypass the HDF5 filter pipeline on the hot path: dsa_shard_open validates the
 * file with HDF5, reads the chunk index (file offset and size of every chunk) once, and
 * dsa_shard_read then preads compressed chunks and decodes them with libzstd. Every
 * chunk is a zstd frame with a content checksum, so a corrupt chunk is an error, never
 * garbage. Token ids are checked against vocab_size on every read.
 */
#ifndef DSA_DATA_SHARD_H
#define DSA_DATA_SHARD_H

#include <stdint.h>

#include "core/error.h"

enum {
    DSA_SHARD_FORMAT_VERSION = 1,
    DSA_H5Z_FILTER_ZSTD = 32015,
    DSA_SHARD_DEFAULT_CHUNK_TOKENS = 16384, /* 64 KiB of uint32 per chunk */
    DSA_SHARD_DEFAULT_ZSTD_LEVEL = 3,
    DSA_TOKENIZER_NAME_CAP = 64,
};

/* What a shard says about its tokens. */
typedef struct {
    uint64_t vocab_size;                     /* every token id is < vocab_size */
    uint32_t eos_id;                         /* appended after every document */
    char tokenizer[DSA_TOKENIZER_NAME_CAP];  /* "bytes-v1", "synthetic-v1", or "external" */
    int64_t chunk_tokens;                    /* HDF5 chunk size, in tokens */
    int zstd_level;                          /* 1..22 */
    char pack_manifest[DSA_TOKENIZER_NAME_CAP * 4]; /* the set's manifest file name; "" for a lone shard */
} DsaShardMeta;

/* Default meta: chunk_tokens and zstd_level at their defaults, tokenizer "external". */
DsaShardMeta dsa_shard_meta_default(uint64_t vocab_size, uint32_t eos_id);

/* Register the zstd filter (id 32015) with HDF5 and silence HDF5's own error printing.
 * Idempotent and thread-safe; called by every function below. */
DsaStatus dsa_h5z_zstd_register(void);

/* Index of the first token id >= vocab_size in tokens[0, n), or -1 when all are in
 * range. The one range check of the project: the writer, the reader and the loader
 * benchmark all use it. */
int64_t dsa_tokens_first_out_of_range(const uint32_t *tokens, int64_t n, uint64_t vocab_size);

/* ---- writing one shard ---------------------------------------------------------- */

typedef struct DsaShardWriter DsaShardWriter;

/* Start writing `path` (written under a temporary name until close). Validates meta:
 * vocab_size >= 1, eos_id < vocab_size, chunk_tokens >= 1, level in 1..22. */
DsaStatus dsa_shard_writer_open(DsaShardWriter **out, const char *path, const DsaShardMeta *meta);
/* Append tokens to the current document. Each id must be < vocab_size; the error names
 * the id, its position in the shard, and the shard. */
DsaStatus dsa_shard_writer_append(DsaShardWriter *w, const uint32_t *tokens, int64_t n);
/* End the current document: `with_eos` = 1 appends eos_id first. An empty document
 * (nothing appended since the last end) is dropped. */
DsaStatus dsa_shard_writer_end_doc(DsaShardWriter *w, int with_eos);
/* Tokens written so far, including the current document. */
int64_t dsa_shard_writer_tokens(const DsaShardWriter *w);
/* Documents so far, the open one included when it holds tokens. */
int64_t dsa_shard_writer_docs(const DsaShardWriter *w);
/* Flush, write /doc_offsets and attributes, fsync and rename into place; frees `w`.
 * An open document is ended without EOS. A shard with no tokens is an error (and no
 * file is left behind). */
DsaStatus dsa_shard_writer_close(DsaShardWriter *w);
/* Give up: remove the temporary file and free `w` (NULL is a no-op). */
void dsa_shard_writer_abort(DsaShardWriter *w);

/* ---- writing a set of shards (what `dsa pack` produces; data/shard_set.c) --------- *
 *
 * A set under prefix P is the shards P-00000.h5, P-00001.h5, ... and the manifest
 * P.manifest.json, written last (atomically: temporary name, fsync, rename, fsync of the
 * directory) when the set is closed:
 *   {"format_version": 1, "shards": [{"file": "P-00000.h5", "tokens": N, "documents": D,
 *    "bytes": B}, ...], "tokens": N, "documents": D, "vocab_size": V, "eos_id": E,
 *    "tokenizer": T}
 * Each shard of a set names its manifest in its pack_manifest attribute. A set whose
 * writer stopped (a kill, a full disk, an error) has shards but no manifest: readers
 * that check sets (dsa_shard_check_set: the loader, `dsa inspect`) refuse such a shard,
 * naming the missing manifest. A shard written alone (dsa_shard_writer) has no
 * pack_manifest and is complete by itself. */

enum { DSA_SHARD_MANIFEST_VERSION = 1 };

typedef struct {
    const char *out_prefix; /* shard i is "<out_prefix>-%05d.h5"; its directory is created */
    int64_t shard_tokens;   /* at most this many tokens per shard (>= 1) */
    DsaShardMeta meta;      /* meta.pack_manifest is set by the set */
} DsaShardSetOptions;

typedef struct {
    int num_shards;
    int64_t num_tokens; /* including EOS tokens */
    int64_t num_docs;   /* documents given to dsa_shardset_add_doc (empty ones dropped) */
} DsaShardSetStats;

typedef struct DsaShardSet DsaShardSet;

DsaStatus dsa_shardset_open(DsaShardSet **out, const DsaShardSetOptions *opts);
/* Add one document's tokens (without EOS; EOS is appended). A document that does not
 * fit in the current shard starts a new shard; one longer than shard_tokens is split. */
DsaStatus dsa_shardset_add_doc(DsaShardSet *set, const uint32_t *tokens, int64_t n);
/* Close the last shard, write the set's manifest and report what was written; frees
 * `set`. Zero documents in total is an error. */
DsaStatus dsa_shardset_close(DsaShardSet *set, DsaShardSetStats *stats);
/* Remove the shard being written (earlier, finished shards stay) and free `set`. */
void dsa_shardset_abort(DsaShardSet *set);
/* Path of shard `index` for a prefix. */
void dsa_shardset_path(char *buf, size_t cap, const char *out_prefix, int index);
/* Path of the manifest of a prefix ("<out_prefix>.manifest.json"). */
void dsa_shardset_manifest_path(char *buf, size_t cap, const char *out_prefix);

/* ---- reading ---------------------------------------------------------------------- */

enum { DSA_PATH_CAP = 1024 };

/* An open shard: metadata and chunk index in memory, the file open for pread.
 * Read-only after open, so several threads may read it with their own scratch. */
typedef struct {
    char path[DSA_PATH_CAP];
    DsaShardMeta meta;
    uint32_t format_version;
    int64_t num_tokens;
    int64_t num_docs;
    uint64_t *doc_offsets;     /* (num_docs + 1) */
    int64_t num_chunks;
    uint64_t *chunk_addr;      /* (num_chunks) file offset of each compressed chunk */
    uint32_t *chunk_bytes;     /* (num_chunks) compressed size */
    uint64_t compressed_bytes; /* sum of chunk_bytes */
    uint64_t file_bytes;       /* size of the file */
    int fd;
} DsaShard;

/* Decoding state of one reader thread: buffers and a zstd context. */
typedef struct DsaShardScratch DsaShardScratch;
DsaStatus dsa_shard_scratch_new(DsaShardScratch **out);
void dsa_shard_scratch_free(DsaShardScratch *scratch);

/* Open and validate `path`: exists, is HDF5, has /tokens (uint32, 1-D, chunked, zstd)
 * and /doc_offsets (uint64, 1-D, starts at 0, non-decreasing, ends at the token count),
 * all attributes with the right types, format_version supported, not empty. Every
 * failure names the file and what was wrong. */
DsaStatus dsa_shard_open(DsaShard *shard, const char *path);
void dsa_shard_close(DsaShard *shard);

/* The attributes of `path` alone (vocab_size, eos_id, tokenizer, ...), validated as by
 * dsa_shard_open, without reading the chunk index or /doc_offsets: cheap enough to check
 * every shard of a run before it starts (dsa_data_check_vocab). */
DsaStatus dsa_shard_read_meta(const char *path, DsaShardMeta *meta);

/* The manifest of the set a shard belongs to, parsed once for consecutive shards of one
 * set (callers keep one per loop; zero-initialize, free with dsa_shard_check_set_free). */
typedef struct {
    char path[DSA_PATH_CAP + 256]; /* of the parsed manifest; "" none */
    void *root;                    /* its cJSON tree */
} DsaShardSetCheck;

/* A shard of a set (pack_manifest set) is complete only when its set's manifest exists
 * and lists it with its token and document counts and byte size; errors name the shard
 * and the manifest (its absence: the pack did not finish). A lone shard passes. */
DsaStatus dsa_shard_check_set(DsaShardSetCheck *check, const DsaShard *shard);
void dsa_shard_check_set_free(DsaShardSetCheck *check);

/* Read tokens [start, start + count) into `out`. Decodes only the chunks the range
 * touches; checks every id < vocab_size. */
DsaStatus dsa_shard_read(const DsaShard *shard, int64_t start, int64_t count, uint32_t *out,
                         DsaShardScratch *scratch);

/* Read [start, start + count) through the HDF5 filter pipeline (H5Dread): slower, an
 * independent path used by `dsa inspect --verify` and tests to cross-check the fast one. */
DsaStatus dsa_shard_read_hdf5(const DsaShard *shard, int64_t start, int64_t count, uint32_t *out);

#endif
