/* export.h: `dsa export`: a model as a DeepSeek-V3.2-layout Hugging Face checkpoint
 * (DSA-SPEC §3.1, §3.2, §10 #7 and #8), streamed tensor by tensor.
 *
 * Output directory: config.json and one model.safetensors, or shards
 * model-0000i-of-0000N.safetensors with model.safetensors.index.json (checkpoints/hf.h
 * writer), tensors under their HF names (params.h table, `self_attn.indexer.*`
 * included). config.json: the model's HF keys, with
 *   - model_type "deepseek_v32" and architectures ["DeepseekV32ForCausalLM"] plus the
 *     index_n_heads / index_head_dim / index_topk keys when the model has an indexer;
 *   - num_nextn_predict_layers 0 (no MTP layer is written, DSA-SPEC §3.1 Decision (MTP));
 *   - torch_dtype "bfloat16" (bf16 and fp8 exports) or "float32";
 *   - quantization_config (fp8, e4m3, weight_block_size, activation_scheme dynamic,
 *     scale_fmt: the source's, "ue8m0" when the source had none) only in fp8 exports.
 *
 * Dtypes per tensor (dsa_export_dtype):
 *   fp8:  e4m3 + F32 weight_scale_inv (DSA-SPEC §3.2 export rule: power-of-two scales,
 *         one per block, 128 x 128 unless the source's quantization_config says
 *         otherwise) for exactly what the V3.2 FP8 checkpoint stores as FP8: attention
 *         q_a/q_b/q/kv_a/kv_b/o, indexer wq_b and wk, dense, routed-expert and shared-
 *         expert gate/up/down; bf16 for embeddings, lm_head, norms, the router gate,
 *         indexer k_norm and weights_proj (never FP8); F32 for e_score_correction_bias.
 *   bf16: everything bf16 except e_score_correction_bias (F32).
 *   f32:  everything F32 (exact round trips, parity checks).
 * Default: fp8 when the model came from an FP8 checkpoint (its config.json keeps the
 * source's quantization_config, convert.h), else bf16.
 *
 * Decisions where the spec is silent:
 *   - A model without an indexer is exported too, in V3 layout: model_type and
 *     architectures those of the source (DeepseekV2ForCausalLM for deepseek_v2, else
 *     DeepseekV3ForCausalLM), no index_* keys.
 *   - A dense model (n_routed_experts null) is written with first_k_dense_replace =
 *     num_hidden_layers, the equivalent spelling Hugging Face's DeepSeek classes need
 *     to build dense FFNs in every layer.
 *   - The directory is written atomically: into the sibling ".<name>.tmp.<pid>", every
 *     file fsynced, renamed to DIR at the end. An existing non-empty DIR is refused; an
 *     existing empty one is replaced.
 */
#ifndef DSA_PRETRAIN_EXPORT_H
#define DSA_PRETRAIN_EXPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/config.h"
#include "core/error.h"
#include "core/tensor.h"
#include "pretrain/params.h"

typedef enum {
    DSA_EXPORT_AUTO = 0, /* fp8 when the source was FP8, else bf16 */
    DSA_EXPORT_BF16,
    DSA_EXPORT_FP8,
    DSA_EXPORT_F32,
} DsaExportDType;

typedef struct {
    DsaExportDType dtype;
    uint64_t shard_bytes; /* largest shard, bytes; 0 = one model.safetensors */
    bool progress;        /* progress lines on stderr */
} DsaExportOptions;

/* Parse "bf16" | "fp8" | "f32" (DSA_ERR_ARG naming the value otherwise), and back. */
DsaStatus dsa_export_dtype_parse(const char *text, DsaExportDType *out);
const char *dsa_export_dtype_name(DsaExportDType mode);
/* The dtype a tensor of `slot` is written in under `mode` (not AUTO): DSA_F8_E4M3 means
 * e4m3 with a weight_scale_inv tensor. */
DsaDType dsa_export_dtype(DsaWeightSlot slot, DsaExportDType mode);
/* The export's config.json text (ending in a newline) for model `m` written in `mode`
 * (not AUTO) with FP8 blocks `block`; *text is malloc'ed: free() it. */
DsaStatus dsa_export_config_json(const DsaModelConfig *m, DsaExportDType mode, const int64_t block[2], char **text);

/* Export the model at `src` (checkpoint dir, run dir with `latest`, or HF model dir) to
 * `out_dir` (see the file comment). On failure nothing is left at out_dir. `*mode_used`
 * (may be NULL) receives the dtype mode chosen. */
DsaStatus dsa_export(const char *src, const char *out_dir, const DsaExportOptions *opts, DsaExportDType *mode_used);

#endif
