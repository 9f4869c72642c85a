/* plan.h: the device plan of a training stage: bytes per device by kind, FLOPs,
 * communication, time per step and GPU-hours for a parallel layout; the search over
 * layouts; the single-layer check. `dsa plan` prints it; the CUDA trainer (not built yet)
 * is to call dsa_plan_stage and dsa_plan_require_fit before it allocates anything, so the
 * sizing pass and the planner are one implementation (sizing.h covers the host memory of
 * the CPU reference). Parameter counts come from the parameter table (pretrain/params.h);
 * every byte count is checked 64-bit arithmetic (core/checked.h): an overflow is refused.
 *
 * Layout (Megatron-Core's convention, the one DeepSeek-V3 trained with: EP folded into DP):
 * gpus = dp · cp. dp data-parallel groups each run micro-batches of `micro_batch` whole
 * sequences, split over cp context-parallel ranks (L/cp tokens each, load-balanced causal
 * halves, so every rank does 1/cp of the attention work). The routed experts of every MoE
 * layer are split over ep ranks, ep dividing dp · cp and n_routed_experts; every other
 * tensor is replicated on all dp · cp ranks. A tensor's replicas (dp · cp of a non-expert
 * tensor, dp · cp / ep of an expert) reduce its gradient and share its ZeRO shards.
 *
 * Precision (issue 15): bf16 weights and activations, fp32 master weights of the trained
 * tensors, fp32 gradients (accumulated and reduced in fp32), fp32 AdamW moments, fp32
 * softmax statistics (lse) and losses, FP8 e4m3 indexer keys with one fp32 power-of-two
 * scale per group of min(128, d_I) (DSA-SPEC §5.2); DSA_PLAN_FP32 keeps weights and
 * activations in fp32 (no separate master copy). Frozen tensors (the whole main model in
 * an `indexer` stage, the router bias always) hold only their compute copy.
 *
 * ZeRO: 0 every replica holds all master weights and moments; 1 (the default) they are
 * sharded over the replicas (reduce-scatter of gradients, all-gather of updated weights);
 * 2 the fp32 gradients too (each micro-batch's gradients reduce-scattered layer by layer,
 * one layer's gradients of scratch).
 *
 * Memory model per device (N = micro_batch · L / cp own tokens, Lg = micro_batch · L
 * tokens of the micro-batch's sequences, a = activation bytes), DESIGN.md "Device plan":
 *  - activations: what one layer stores for its backward (DsaPlanBytes.activations_per_layer):
 *    without recompute every layer's inputs and the outputs the backward reads (norm
 *    inputs/outputs and rstd, q latent, queries, KV latent, per-head K and V (dense MHA
 *    form) or absorbed queries and latent outputs (sparse MQA form), attention output, lse,
 *    FFN gate/up/act or MoE routing and expert activations); with recompute only the layer
 *    input (N·D), and one layer's full set is live during its backward. A stage that does
 *    not train the main model stores nothing: its layers run one at a time (DSA-SPEC §6.2).
 *    Plus the final norm, the LM head input and the token ids.
 *  - kv_latent: one layer's key source: the sparse (MQA) form reads the [c ‖ kR] latent of
 *    all Lg tokens; the dense (MHA) form under cp > 1 the gathered latent of the other
 *    ranks' tokens and its per-head K, V expansion (the own tokens' K, V are activations).
 *  - indexer: one layer's FP8 keys and scales of all Lg tokens, their fp32 gradient
 *    accumulators, the head weights w and ∂w (fp32), lseI, and ∂q̂ of the own tokens.
 *  - indices: the sparse stage's top-k indices (N·k int32) stored by every trained layer
 *    for its backward and its recompute (DSA-SPEC §6.3), plus one layer's selected scores
 *    I_S (N·k fp32); a dense stage with an indexer: one layer's top-k candidates (score and
 *    index) for the captured-mass metric.
 *  - scratch: the largest transient: the chunked LM head (4096 tokens of fp32 logits, the
 *    gradient in place), or in a trained backward one layer's activation gradients (bounded
 *    by its stored set) plus the fp32 residual gradient; ZeRO-2 adds one layer's gradients.
 *  Attention and KL tiles (B_q × B_k) live on chip and are not device bytes; no L × L buffer
 *  exists (DESIGN.md "Memory rule").
 *
 * FLOPs (DSA-SPEC §8.4): linear layers 2 per weight per token forward and 4 backward (an
 * indexer linear only its weight gradient: inputs detached, §6.4), the attention core from
 * the causal pair counts (dense L(L+1)/2, sparse Σ min(t+1, k)), its backward 2.5× (the
 * scores recomputed, flash style), the indexer scores, top-k and KL passes of the CPU
 * reference (§8.1, §8.2), the dense form's K/V re-expansion on cp ranks, and with recompute
 * one more forward of every layer (the indexer reuses its stored indices). Time per step =
 * FLOPs per device / (peak · mfu) + communication bytes per device / link bandwidth (no
 * overlap assumed: an upper bound).
 *
 * Communication per device per step (ring collectives, uniform routing): gradients
 * all-reduce (ZeRO-0: 2(R−1)/R of the fp32 gradient) or reduce-scatter ((R−1)/R, once per
 * step, ZeRO-2 once per micro-batch) plus the all-gather of the updated weights (ZeRO ≥ 1);
 * EP all-to-all: each MoE layer sends (ep−1)/ep of its N·K token copies (D wide) to other
 * ranks at dispatch and at combine, in the forward, in the backward and in a recompute;
 * CP: each layer all-gathers the KV latent and the indexer's FP8 keys (and scales) and
 * reduce-scatters the indexer key gradients; a trained backward gathers the latent again and
 * reduce-scatters its gradient, a recompute gathers it once more.
 */
#ifndef DSA_PRETRAIN_PLAN_H
#define DSA_PRETRAIN_PLAN_H

#include <stdbool.h>
#include <stdint.h>

#include "core/config.h"
#include "core/error.h"

typedef enum { DSA_PLAN_BF16 = 0, DSA_PLAN_FP32 } DsaPlanPrecision;
typedef enum { DSA_PLAN_RECOMPUTE_AUTO = 0, DSA_PLAN_RECOMPUTE_OFF, DSA_PLAN_RECOMPUTE_ON } DsaPlanRecompute;

enum {
    DSA_PLAN_CE_CHUNK = 4096,   /* tokens of LM-head logits at a time (chunked cross-entropy) */
    DSA_PLAN_MAX_ZERO = 2,
};

/* Defaults of `dsa plan`: H800/H200 dense bf16 peak, 40% MFU, one 400 Gb/s link per GPU. */
#define DSA_PLAN_DEFAULT_PEAK_TFLOPS 989.0
#define DSA_PLAN_DEFAULT_MFU 0.40
#define DSA_PLAN_DEFAULT_LINK_GBPS 50.0 /* GB/s per GPU */

typedef struct {
    int64_t dp, cp, ep;
    int zero;                   /* 0, 1 or 2 */
    DsaPlanPrecision precision;
    DsaPlanRecompute recompute; /* AUTO: off when the stage fits without it (the sizing decides) */
    int64_t micro_batch;        /* sequences per forward/backward of one dp group */
    int64_t seq_len;            /* tokens per sequence (L) */
} DsaPlanLayout;

typedef struct {
    double peak_flops;      /* per GPU, FLOP/s */
    double mfu;             /* fraction of peak achieved on the FLOPs executed */
    double link_bytes_s;    /* collective bandwidth per GPU, bytes/s */
    int64_t gpu_mem;        /* bytes per GPU */
} DsaPlanHardware;

/* Bytes per device, by kind (plan.h header: what each holds). */
typedef struct {
    int64_t weights, master, gradients, optimizer;
    int64_t activations;           /* all kinds of activation storage of the stage */
    int64_t activations_per_layer; /* the largest layer's stored set (recompute: its input) */
    int64_t kv_latent, indexer, indices, scratch;
    int64_t total;
} DsaPlanBytes;

/* FLOPs of one optimizer step, all devices together (exact integers below 2^53). */
typedef struct {
    double linear;      /* main-model linear layers (the LM head, router and experts included), fwd + bwd */
    double attention;   /* attention core (QK, PV), fwd + bwd */
    double indexer;     /* indexer projections, scores, their backward */
    double kl;          /* the KL target: MLA logits recomputed over the pairs, log-target terms */
    double topk;        /* one compare per scored pair */
    double cp_extra;    /* dense form under cp > 1: K/V re-expansion of the gathered latents */
    double recompute;   /* the extra forward of activation recompute */
    double total;
    double per_device;  /* total / gpus */
} DsaPlanFlops;

/* Bytes each device sends per optimizer step. */
typedef struct {
    int64_t gradients;  /* all-reduce or reduce-scatter of the fp32 gradients */
    int64_t zero_gather; /* ZeRO >= 1: all-gather of the updated weights */
    int64_t ep_all_to_all;
    int64_t cp_exchange;
    int64_t total;
} DsaPlanComm;

typedef struct {
    int stage;                  /* index into cfg->stages */
    DsaPlanLayout layout;       /* recompute resolved to ON or OFF */
    int64_t gpus;
    int64_t micro_steps;        /* micro-batches per dp group per optimizer step */
    int64_t tokens_per_step;    /* global_batch · seq_len */
    int64_t tokens;             /* the stage's tokens: steps · global_batch · seq_len */
    int64_t parameters, trained; /* parameters of the model, and those the stage trains */
    DsaPlanBytes bytes;
    DsaPlanFlops flops;
    DsaPlanComm comm;
    double compute_s, comm_s, step_s, gpu_hours;
    int64_t gpu_mem;            /* the hardware's bytes per device */
    bool fits;                  /* bytes.total <= gpu_mem */
} DsaPlanStage;

/* Tokens of stage `s`: steps · global_batch · seq_len (seq_len 0: the stage's own;
 * DeepSeek-V3.2: 2,097,152,000 and 943,718,400,000). DSA_ERR_CONFIG when it overflows. */
DsaStatus dsa_plan_stage_tokens(const DsaConfig *cfg, int s, int64_t seq_len, int64_t *tokens);

/* Plan stage `s` of the validated config `cfg` under `lay` (seq_len 0: the stage's own).
 * Refuses (DSA_ERR_ARG, naming the flag: --dp, --cp, --ep, --micro-batch, --zero, --seq)
 * a layout the stage cannot run: dp · micro_batch not dividing global_batch, cp not dividing
 * L, ep not dividing dp · cp or n_routed_experts; DSA_ERR_CONFIG when a size overflows. */
DsaStatus dsa_plan_stage(const DsaConfig *cfg, int s, const DsaPlanLayout *lay, const DsaPlanHardware *hw,
                         DsaPlanStage *out);

/* Every layout of `gpus` devices for stage `s`: dp · cp = gpus, ep a divisor of gpus
 * (and of n_routed_experts; 1 without MoE), with zero, precision, micro_batch, seq_len and
 * recompute from `base`; the valid ones are planned. The fitting ones go to `out` (at most
 * `cap`), ranked by step time, then fewer bytes per device, then smaller cp, then smaller
 * ep; *n_fit counts them all, *n_valid the valid layouts, and *closest (when not NULL and
 * nothing fits) gets the valid layout that needs the fewest bytes. */
DsaStatus dsa_plan_search(const DsaConfig *cfg, int s, int64_t gpus, const DsaPlanLayout *base,
                          const DsaPlanHardware *hw, DsaPlanStage *out, int cap, int *n_fit, int *n_valid,
                          DsaPlanStage *closest);

/* The single-layer check of issue 15: one attention block (input norm, MLA and the
 * indexer; attention_only) or one whole layer of the config (its first MoE layer if any,
 * else its first), one device, micro_batch 1, sequences of seq_len, stage `s`'s training
 * step (its trainable parts). `one` is the step of a single layer without recompute;
 * `layers_fit` the most such layers one device holds, without and with recompute (0 when
 * not even one fits; at most the model's num_hidden_layers, `layers_total`). */
typedef struct {
    int stage;
    bool attention_only;
    DsaPlanBytes one;
    bool one_fits;
    int64_t layers_fit, layers_fit_recompute;
    int64_t layers_total; /* the model's num_hidden_layers */
} DsaPlanLayerCheck;
DsaStatus dsa_plan_layer_check(const DsaConfig *cfg, int s, int64_t seq_len, bool attention_only,
                               const DsaPlanHardware *hw, DsaPlanLayerCheck *out);

/* The table of bytes by kind, one kind a line (the sizing table a run prints and stops
 * with), into buf. */
void dsa_plan_format_bytes(const DsaPlanBytes *b, int64_t gpu_mem, char *buf, size_t cap);

/* For the trainer, before it allocates: DSA_OK when the plan fits, else DSA_ERR_NOMEM with
 * the stage, the layout and the table of bytes in the error. */
DsaStatus dsa_plan_require_fit(const DsaConfig *cfg, const DsaPlanStage *p);

#endif
