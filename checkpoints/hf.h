/* hf.h: Hugging Face checkpoint directories, read and written one tensor at a time.
 *
 * A directory holds config.json and either one model.safetensors or shards listed by
 * model.safetensors.index.json:
 *     {"metadata": {"total_size": BYTES}, "weight_map": {"tensor name": "shard file", ...}}
 * FP8 checkpoints (DeepSeek-V3/V3.2) store linear weights as F8_E4M3 next to an F32
 * tensor "<name minus .weight>.weight_scale_inv" of one scale per block
 * (DSA-SPEC §3.2); the reader dequantizes them, the writer can produce them.
 *
 * Memory: reading goes through each shard's read-only mmap (safetensors.h); after a
 * tensor is read its pages are released (madvise), so walking a checkpoint far larger
 * than memory keeps the resident set of the order of the largest tensor. The writer
 * computes the whole layout first, writes headers, then each tensor's bytes with
 * pwrite at their final offset, in any order, so a converter never holds more than one
 * tensor either.
 *
 * Errors (DSA_ERR_FORMAT unless noted) name the file and, where there is one, the
 * tensor: an index that is not JSON or lacks weight_map, an index naming a missing
 * shard file (or a path that leaves the directory), a weight_map entry whose tensor is
 * not in its shard, a shard tensor absent from weight_map or listed twice, a missing
 * tensor, another shape or dtype than expected, an F8_E4M3 weight without its scale or
 * with a scale of the wrong shape or dtype, plus every per-file check of safetensors.h.
 */
#ifndef DSA_CHECKPOINTS_HF_H
#define DSA_CHECKPOINTS_HF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "checkpoints/safetensors.h"
#include "core/error.h"
#include "core/tensor.h"

enum {
    DSA_HF_PATH_CAP = 4096,
    DSA_HF_DEFAULT_BLOCK = 128, /* FP8 weight_block_size, both dims, when not set */
};

/* One logical tensor of a checkpoint (scales are not listed on their own: they belong to
 * their weight). */
typedef struct {
    const char *name;             /* HF name; owned by the reader */
    DsaDType dtype;               /* as stored */
    int ndim;
    int64_t shape[DSA_MAX_DIMS];
    int shard;                    /* index into DsaHfReader.shards */
    const DsaStEntry *entry;      /* inside shards[shard] */
    int scale_shard;              /* -1 when no scale */
    const DsaStEntry *scale;      /* "<base>.weight_scale_inv" of an F8_E4M3 weight, else NULL */
} DsaHfTensor;

typedef struct {
    char dir[DSA_HF_PATH_CAP];
    bool sharded;                 /* model.safetensors.index.json was used */
    DsaSafetensors *shards;       /* (n_shards) open files, in index order of first mention */
    int n_shards;
    DsaHfTensor *tensors;         /* (count) sorted by name */
    int count;
    int64_t block[2];             /* FP8 block [rows, cols]; open sets {128, 128}, the
                                   * caller may set quantization_config.weight_block_size */
    uint64_t total_bytes;         /* sum of all tensors' stored bytes (scales included) */
    void *priv;                   /* implementation data */
} DsaHfReader;

/* Open `dir` (model.safetensors.index.json when present, else model.safetensors) and
 * validate every shard and the index (see the file comment). config.json is not read
 * here (model_io.h does). On failure nothing stays open and `r` is zeroed. */
DsaStatus dsa_hf_open(DsaHfReader *r, const char *dir);
/* Close every shard and free; `r` is zeroed (closing a zeroed reader is a no-op). */
void dsa_hf_close(DsaHfReader *r);
/* The tensor called `name`, or NULL (binary search). */
const DsaHfTensor *dsa_hf_find(const DsaHfReader *r, const char *name);
/* Path of the file holding `t` (for messages), owned by the reader. */
const char *dsa_hf_file_of(const DsaHfReader *r, const DsaHfTensor *t);
/* Read tensor `name` into `out` (numel floats) as F32 after checking it has `ndim` dims
 * equal to `shape`: F32 copied, BF16 and F16 widened exactly, F8_E4M3 dequantized with
 * its block scales (DSA-SPEC §3.2: W = float(W8) · S[i/b0][j/b1], b = r->block; 2-D
 * only). Releases the tensor's pages after reading. Errors name the tensor and file
 * with the expected and found shape/dtype.
 * NOTE: open checks the FP8 pairing (every F8_E4M3 tensor is a 2-D "<p>.weight" with a
 * 2-D F32 or BF16 "<p>.weight_scale_inv", every scale has its F8 weight); the scale's
 * shape [ceil(rows/b0), ceil(cols/b1)] is checked here, since the caller may set
 * r->block after open. The data may sit
 * at any alignment (files from other writers): bytes are copied, never cast. */
DsaStatus dsa_hf_read_f32(DsaHfReader *r, const char *name, int ndim, const int64_t *shape, float *out);

/* ---- writing ------------------------------------------------------------------------ */

/* A checkpoint being written into an existing directory. Usage:
 *   dsa_hf_writer_init(&w, dir, max_shard_bytes);
 *   dsa_hf_writer_plan(&w, name, dtype, ndim, shape);   ... every tensor (scales too)
 *   dsa_hf_writer_start(&w);     layout fixed, files created at full size, headers written
 *   dsa_hf_writer_put(&w, name, data);                  ... every tensor, any order
 *   dsa_hf_writer_finish(&w);    checks every tensor was put, fsyncs, writes the index
 * and on any failure dsa_hf_writer_abort(&w) (removes the files it created).
 * One shard is written as "model.safetensors" with no index; more as
 * "model-00001-of-0000N.safetensors" ... plus model.safetensors.index.json. Tensors go
 * to shards greedily in plan order (a shard closes when the next tensor would pass
 * max_shard_bytes; a tensor larger than that gets a shard of its own); inside a shard
 * they are stably sorted by element size, largest first, as safetensors.h's writer does,
 * so each starts at a multiple of its element size. Every file has the metadata
 * {"format": "pt"} that transformers expects. */
typedef struct {
    char dir[DSA_HF_PATH_CAP];
    uint64_t max_shard_bytes;     /* 0 = no limit (one file) */
    void *priv;                   /* implementation data */
} DsaHfWriter;

DsaStatus dsa_hf_writer_init(DsaHfWriter *w, const char *dir, uint64_t max_shard_bytes);
/* Refused (DSA_ERR_ARG): after start, duplicate or empty names, ndim outside
 * [0, DSA_MAX_DIMS], negative dims. */
DsaStatus dsa_hf_writer_plan(DsaHfWriter *w, const char *name, DsaDType dtype, int ndim, const int64_t *shape);
DsaStatus dsa_hf_writer_start(DsaHfWriter *w);
/* `data`: the tensor's numel · dtype size bytes, row-major little-endian. A name not
 * planned or put twice is DSA_ERR_ARG. */
DsaStatus dsa_hf_writer_put(DsaHfWriter *w, const char *name, const void *data);
DsaStatus dsa_hf_writer_finish(DsaHfWriter *w);
/* Remove what was created and free; safe after a failed call and after finish (then it
 * only frees). */
void dsa_hf_writer_abort(DsaHfWriter *w);

/* ---- FP8 block (de)quantization (DSA-SPEC §3.2) ------------------------------------- */

/* Scale tensor shape of a [rows, cols] weight with blocks b: [ceil(rows/b0), ceil(cols/b1)]. */
void dsa_fp8_block_scale_shape(int64_t rows, int64_t cols, const int64_t block[2], int64_t scale_shape[2]);
/* out[i][j] = e4m3_decode(w8[i][j]) · scale_inv[i/b0][j/b1]. */
void dsa_fp8_block_dequantize(const uint8_t *w8, const float *scale_inv, int64_t rows, int64_t cols,
                              const int64_t block[2], float *out);
/* Export rule: per block S = 2^ceil(log2(amax / 448)), S = 2^-22 for an all-zero block;
 * w8 = e4m3_rne(w / S); scale_inv = S. Deterministic; a NaN or Inf weight is
 * DSA_ERR_ARG naming `what` and the element. */
DsaStatus dsa_fp8_block_quantize(const float *w, int64_t rows, int64_t cols, const int64_t block[2], uint8_t *w8,
                                 float *scale_inv, const char *what);

#endif
