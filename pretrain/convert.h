/* convert.h: checkpoint conversions that change the model: adding a lightning indexer to
 * a dense MLA checkpoint (`dsa convert --add-indexer`, DSA-SPEC §3.2).
 *
 * Input: a checkpoint directory, a run directory (its `latest`), or a Hugging Face model
 * directory (config.json + model.safetensors) of a dense DeepSeek-V3-shape model.
 * Output: OUT/converted/ (model.safetensors with every source tensor unchanged plus five
 * fresh indexer tensors per layer, config.json with model_type deepseek_v32 and the
 * index_* keys, manifest.json), written atomically, with OUT/latest naming it, so
 * `dsa train --init OUT` starts the warm-up from it.
 *
 * Fresh indexer (DSA-SPEC §3.2 Decision): wq_b, wk, weights_proj ~ N(0, std²) with std
 * = model.initializer_range (0.02), k_norm.weight = 1, k_norm.bias = 0, each tensor from
 * the Philox stream of (seed, layer, tensor) (params.h dsa_param_init_indexer).
 */
#ifndef DSA_PRETRAIN_CONVERT_H
#define DSA_PRETRAIN_CONVERT_H

#include <stdint.h>

#include "core/error.h"

typedef struct {
    int64_t index_n_heads;  /* H_I (default 64, the V3.2 value) */
    int64_t index_head_dim; /* d_I, a power of two >= qk_rope_head_dim (default 128) */
    int64_t index_topk;     /* k (default 2048) */
    uint64_t seed;          /* indexer initialization seed */
} DsaAddIndexerOptions;

/* Add an indexer to the dense checkpoint at `src` and write it to `out_dir`. Refuses a
 * source that already has one, sizes that break DSA-SPEC §2's scaling rules (naming the
 * option), and an out_dir that already holds a conversion. `*written` (cap bytes)
 * receives the checkpoint directory. */
DsaStatus dsa_convert_add_indexer(const char *src, const char *out_dir, const DsaAddIndexerOptions *opts,
                                  char *written, size_t cap);

#endif
