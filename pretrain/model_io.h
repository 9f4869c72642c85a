/* model_io.h: model weights and configs in Hugging Face form: safetensors with HF
 * DeepSeek names (the params.h table) and a flat HF config.json.
 *
 * Reading goes through checkpoints/hf.h: one model.safetensors or shards listed by
 * model.safetensors.index.json, F32/BF16/F16 or F8_E4M3 with weight_scale_inv block
 * scales (block size from the config's quantization_config.weight_block_size, DSA-SPEC
 * §3.2), one tensor at a time. Missing, misshaped, wrongly typed and unexpected tensors
 * are errors naming the tensor and the file. The MTP layer (model.layers.<L>.* for
 * L = num_hidden_layers ... when num_nextn_predict_layers > 0) is skipped with one log
 * line (DSA-SPEC §3.1 Decision (MTP)).
 *
 * Writing streams too (dsa_model_stream): the output is planned from the table, then
 * each tensor is read (or generated), converted to its output dtype and put at its final
 * offset, so memory is of the order of the largest tensor, not of the model; `dsa
 * convert` and `dsa export` are this loop with different dtypes.
 */
#ifndef DSA_PRETRAIN_MODEL_IO_H
#define DSA_PRETRAIN_MODEL_IO_H

#include <stddef.h>

#include "checkpoints/hf.h"
#include "core/config.h"
#include "core/error.h"
#include "pretrain/model.h"
#include "pretrain/params.h"

/* Write the parameters as F32 safetensors named by the table (file fsynced). */
DsaStatus dsa_model_write_weights(const char *path, const DsaParamTable *t, const float *params);
/* Write buffers of the table layout under a name prefix ("exp_avg." ...), for optimizer
 * state; two buffers at once (NULL second = one). */
DsaStatus dsa_model_write_state(const char *path, const DsaParamTable *t, const char *prefix_a, const float *a,
                                const char *prefix_b, const float *b);
/* Read every tensor of the table from `path` (F32, BF16 or F16 stored), prefixed by
 * `prefix` ("" for weights). Missing, misshaped or unexpected tensors are errors naming
 * the tensor and the file. */
DsaStatus dsa_model_read_tensors(const char *path, const DsaParamTable *t, const char *prefix, float *out,
                                 bool allow_extra);

/* The model section as a flat HF config.json text (keys of DsaModelConfig plus
 * "architectures" and "torch_dtype"). *text is malloc'ed: free() it. */
DsaStatus dsa_model_config_to_hf_json(const DsaModelConfig *m, char **text);
/* Load the model section from an HF config.json (or any config file shape). */
DsaStatus dsa_model_config_load(DsaModelConfig *m, const char *path);
/* Compare two model sections; on a difference fail with DSA_ERR_CONFIG naming the first
 * key that differs with both values, `what_a` and `what_b` naming their sources. */
DsaStatus dsa_model_config_check_same(const DsaModelConfig *a, const char *what_a, const DsaModelConfig *b,
                                      const char *what_b);

/* Resolve `path` (checkpoint dir, run dir with `latest`, or HF model dir) into `dir` (cap
 * bytes), verify it against its manifest when it has one (*verified: false for a plain
 * HF directory), and load the model section of its config.json into `cfg`. */
DsaStatus dsa_model_open_dir(const char *path, char *dir, size_t cap, DsaModelConfig *cfg, bool *verified);

/* The FP8 weight block of model `cfg`: quantization_config.weight_block_size when it has
 * one, else 128 x 128 (DSA_HF_DEFAULT_BLOCK). */
void dsa_model_fp8_block(const DsaModelConfig *cfg, int64_t block[2]);
/* Open the Hugging Face checkpoint directory `dir` (hf.h) holding the model `cfg`, with
 * its FP8 block (dsa_model_fp8_block). Close with dsa_hf_close. */
DsaStatus dsa_model_hf_open(DsaHfReader *r, const char *dir, const DsaModelConfig *cfg);
/* Check `r` against table `t` (built from `cfg`) before reading anything, so a bad
 * checkpoint fails before any work: every entry present (except the indexer's when
 * `fresh_indexer`: those are generated and must be absent) with the table's shape and a
 * float dtype (F32, BF16, F16, F8_E4M3), and no other tensor. The MTP layers
 * (model.layers.<num_hidden_layers + i>.*, i < num_nextn_predict_layers) are not
 * unexpected: they are skipped with one log line saying how many tensors were left.
 * Errors (DSA_ERR_FORMAT) name the tensor, its file, and what was expected and found. */
DsaStatus dsa_model_hf_check(const DsaHfReader *r, const DsaModelConfig *cfg, const DsaParamTable *t,
                             bool fresh_indexer);
/* Read every tensor of table `t` (built from `cfg`) from the HF directory `dir` into
 * `out` (t->total floats) as F32, after dsa_model_hf_check. */
DsaStatus dsa_model_read_hf(const char *dir, const DsaModelConfig *cfg, const DsaParamTable *t, float *out);

/* A streamed conversion (dsa_model_stream): every entry of `table` is read from `src` by
 * name as F32 (or, with fresh_indexer, generated for the indexer entries), converted to
 * dtypes[i] and written under the same name:
 *   DSA_F32; DSA_BF16 (round to nearest even, NaN kept); or DSA_F8_E4M3: block-quantized
 *   by the export rule of DSA-SPEC §3.2 (hf.h dsa_fp8_block_quantize, blocks `block`) plus
 *   an F32 "<name>_scale_inv" tensor ("x.weight" -> "x.weight_scale_inv"); only for 2-D
 *   entries whose name ends in ".weight".
 * Memory: one F32 buffer of the largest entry and one output buffer of the largest
 * converted entry. Progress (tensor i of n, bytes written) goes to stderr every 10 s on
 * a log, live on a terminal, when `progress` is set. */
typedef struct {
    DsaHfReader *src;            /* source; NULL only when nothing is read */
    const DsaParamTable *table;  /* what is written, in this order */
    const DsaDType *dtypes;      /* (table->count) output dtype of each entry */
    int64_t block[2];            /* FP8 output block [rows, cols] */
    bool fresh_indexer;          /* indexer entries: dsa_param_init_indexer's values, not read */
    uint64_t seed;               /* fresh indexer: seed and std */
    double std;
    const char *label;           /* progress label, e.g. "convert" */
    bool progress;
} DsaModelStream;

typedef struct {
    int tensors;                 /* entries written (scales not counted) */
    uint64_t bytes_written;      /* tensor bytes written, scales included */
    int64_t max_numel;           /* the largest entry, in elements */
    double seconds;
} DsaModelStreamStats;

/* Plan every output tensor into `w` (initialized, not started), start it and put every
 * tensor; the caller finishes (dsa_hf_writer_finish) or aborts the writer. `stats` may
 * be NULL. */
DsaStatus dsa_model_stream(const DsaModelStream *s, DsaHfWriter *w, DsaModelStreamStats *stats);

/* Resolve `path` (checkpoint dir, run dir with `latest`, or HF model dir), verify its
 * manifest when it has one, read config.json, build `m` on backend `be` and load its
 * weights into it (dsa_model_read_hf: sharded, FP8, bf16 ...). `dir` (cap bytes)
 * receives the resolved directory. On failure `m` is freed. */
DsaStatus dsa_model_load(DsaModel *m, const char *path, const DsaBackend *be, char *dir, size_t cap);

#endif
