/* sizing.h: what a training run needs, computed before anything is allocated (STYLE.md
 * rule 9), with the sizing code the trainer itself uses: the parameter table
 * (pretrain/params.h) and the workspace layout (dsa_model_workspace_bytes), both built
 * with checked 64-bit arithmetic (core/checked.h). `dsa config --check` prints it.
 *
 * One CPU process holds (pretrain/trainer.c): the fp32 parameters and their gradients,
 * the AdamW moments m and v (each a buffer of `table.total` floats), the activation
 * workspace of one micro-batch (train.micro_batch sequences of a stage's seq_len, with
 * that stage's top-k; the largest over the stages is kept), the trainer's input and
 * target ids (two int32 per token of a micro-batch) and the loader's window buffers
 * (data.prefetch + 1 windows of seq_len + 1 uint32 tokens, twice with segment ids).
 *
 * A config is refused (DSA_ERR_CONFIG, naming the key, its value and the figure) when a
 * size overflows 64-bit arithmetic, when a buffer or the whole step would exceed
 * DSA_SIZING_MAX_ALLOC_BYTES (2^47 bytes, 128 TiB: the x86-64 user address space, so it
 * could never be allocated on any machine), or when a value does not fit the type the
 * code keeps it in (token ids and positions are int32; at most 4096 routed experts; at
 * most DSA_SIZING_MAX_THREADS threads; at most DSA_SIZING_MAX_TENSORS tensors, so the
 * parameter table itself stays small). A refusal of a size names the keys it grows
 * with: each size key is set to 1 in turn and the step re-sized; the keys whose change
 * shrinks it most are named, with their values. The published DeepSeek configs pass: V3.2 at
 * 128K tokens needs about 19.2 TiB in one process, the figure `dsa config --check`
 * prints.
 *
 * NOTE: host memory of one CPU process only. The device memory of a GPU run, per rank
 * (ZeRO shards, context and expert parallelism, recompute), is pretrain/plan.h: the CUDA
 * trainer is to call dsa_plan_stage and dsa_plan_require_fit before it allocates, and
 * `dsa plan` prints the same figures, from the same parameter table.
 */
#ifndef DSA_PRETRAIN_SIZING_H
#define DSA_PRETRAIN_SIZING_H

#include <stdint.h>

#include "core/config.h"
#include "core/error.h"

#define DSA_SIZING_MAX_ALLOC_BYTES ((int64_t)1 << 47)
enum { DSA_SIZING_MAX_THREADS = 65536, DSA_SIZING_MAX_EXPERTS = 4096, DSA_SIZING_MAX_TENSORS = 1 << 22 };

typedef struct {
    int64_t parameters;      /* model parameters (the table's element count, main model + indexer) */
    int64_t tensors;         /* entries of the parameter table */
    int64_t param_bytes;     /* one fp32 copy of the flat parameter buffer (16-float aligned tensors) */
    int64_t optimizer_bytes; /* gradients + AdamW m and v: 3 copies */
    int64_t workspace_bytes; /* activations of one micro-batch, the largest over the stages */
    int workspace_stage;     /* the stage that needs it */
    int64_t token_bytes;     /* trainer ids and loader windows, the largest over the stages */
    int64_t step_bytes;      /* all of the above: the host memory of one training step */
} DsaSizing;

/* Size a training run of the validated config `cfg` (call dsa_config_validate first).
 * Errors name cfg->source, the key and the figure. */
DsaStatus dsa_sizing_train(const DsaConfig *cfg, DsaSizing *out);

/* The model section alone (a checkpoint's config.json, `source`): the range checks of
 * the model keys and the parameter table; fills parameters, tensors and param_bytes. */
DsaStatus dsa_sizing_model(const DsaModelConfig *m, const char *source, DsaSizing *out);

#endif
