/* convert.h: `dsa convert`: importing a checkpoint into our form, optionally adding a
 * lightning indexer to a dense MLA model (`--add-indexer`, DSA-SPEC §3.2).
 *
 * Input: a checkpoint directory, a run directory (its `latest`), or a Hugging Face model
 * directory: config.json (model_type deepseek_v2, deepseek_v3 or deepseek_v32) plus one
 * model.safetensors or shards listed by model.safetensors.index.json, tensors F32, BF16,
 * F16 or F8_E4M3 with weight_scale_inv block scales (model_io.h, checkpoints/hf.h).
 * Output: OUT/converted/ (model.safetensors, every tensor F32 (FP8 dequantized, DSA-SPEC
 * §3.2 Decision (training precision)); config.json; manifest.json), written atomically
 * through checkpoints/checkpoint.h, with OUT/latest naming it, so `dsa train --init OUT`
 * starts from it. The MTP layer of the source is dropped (num_nextn_predict_layers 0,
 * DSA-SPEC §3.1 Decision (MTP)).
 *
 * Streaming: the output is planned from the parameter table, then each tensor is read
 * (dequantized) into one buffer of the largest tensor's size and written at its final
 * offset (model_io.h dsa_model_stream); memory is of the order of the largest tensor,
 * not of the model. A log line at the end gives tensors, bytes, time and the process's
 * peak resident set (VmHWM), which the CLI tests bound.
 *
 * NOTE: the source's quantization_config is kept in the converted config.json although
 * the weights are F32 (our loader goes by each tensor's stored dtype, never by the
 * config): it is how `dsa export` learns the model came from an FP8 checkpoint and
 * defaults to FP8 (DSA-SPEC §10 #7, #8). It survives training, since the trainer writes
 * the run's model section, which must equal the init checkpoint's.
 *
 * Fresh indexer (DSA-SPEC §3.2 Decision): wq_b, wk, weights_proj ~ N(0, std²) with std
 * = model.initializer_range (0.02), k_norm.weight = 1, k_norm.bias = 0, each tensor from
 * the Philox stream of (seed, layer, tensor) (params.h dsa_param_init_indexer), generated
 * one tensor at a time with the same values.
 */
#ifndef DSA_PRETRAIN_CONVERT_H
#define DSA_PRETRAIN_CONVERT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

typedef struct {
    int64_t index_n_heads;  /* H_I (default 64, the V3.2 value) */
    int64_t index_head_dim; /* d_I, a power of two >= qk_rope_head_dim (default 128) */
    int64_t index_topk;     /* k (default 2048) */
    uint64_t seed;          /* indexer initialization seed */
} DsaAddIndexerOptions;

/* Import the checkpoint at `src` into `out_dir` (see the file comment); with `add` not
 * NULL also add a fresh indexer (as dsa_convert_add_indexer). Refuses an out_dir that
 * already holds a conversion. `progress`: progress lines on stderr. `*written` (cap
 * bytes) receives the checkpoint directory. */
DsaStatus dsa_convert_import(const char *src, const char *out_dir, const DsaAddIndexerOptions *add, bool progress,
                             char *written, size_t cap);

/* Add an indexer to the dense checkpoint at `src` and write it to `out_dir`. Refuses a
 * source that already has one, sizes that break DSA-SPEC §2's scaling rules (naming the
 * option), and an out_dir that already holds a conversion. `*written` (cap bytes)
 * receives the checkpoint directory. */
DsaStatus dsa_convert_add_indexer(const char *src, const char *out_dir, const DsaAddIndexerOptions *opts,
                                  char *written, size_t cap);

#endif
