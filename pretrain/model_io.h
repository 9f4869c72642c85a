/* model_io.h: model weights and configs in Hugging Face form: model.safetensors with HF
 * DeepSeek names (the params.h table) and a flat HF config.json.
 *
 * A directory written here loads in Hugging Face tooling as a DeepSeek-V3 model, and a
 * Hugging Face directory holding one model.safetensors of the supported (dense) shape
 * loads here. Sharded and FP8 checkpoints come with the import issue.
 */
#ifndef DSA_PRETRAIN_MODEL_IO_H
#define DSA_PRETRAIN_MODEL_IO_H

#include <stddef.h>

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

/* Resolve `path` (checkpoint dir, run dir with `latest`, or HF model dir), verify its
 * manifest when it has one, read config.json, build `m` on backend `be` and load
 * model.safetensors into it. `dir` (cap bytes) receives the resolved directory. On
 * failure `m` is freed. */
DsaStatus dsa_model_load(DsaModel *m, const char *path, const DsaBackend *be, char *dir, size_t cap);

#endif
