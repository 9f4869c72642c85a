/* model.h: the DeepSeek-V3 decoder (MLA attention, dense SwiGLU FFN or DeepSeek MoE FFN)
 * with forward and backward through a DsaBackend.
 *
 * Math: DSA-SPEC §4 (MLA, MHA form §4.1, YaRN RoPE §4.3 with the interleaved layout of
 * §4.4), plus the parts every DeepSeek-V3 model shares: token embedding, pre-norm
 * residual blocks, SwiGLU FFN down(silu(gate(x)) ⊙ up(x)) in the layers <
 * first_k_dense_replace and the MoE FFN (pretrain/moe.h: router, routed and shared
 * experts) in the others, final RMSNorm, LM head and the cross-entropy of each token
 * against the next one.
 *
 * Ownership: a DsaModel owns its parameters, gradients and activations (one flat buffer
 * each, params.h layout), all of them backend memory (be->alloc): host code reads or
 * writes them only through the backend's memory entries (pretrain/host_view.h), and the
 * layers call the indexer through the backend's DsaIndexerOps (m->ix). Activations are sized for one micro-batch shape
 * (batch × seq_len) by dsa_model_reserve and reused; the forward saves what the backward
 * needs (no recomputation yet), which is O(L·d) per layer and no L×L buffer (DESIGN.md
 * memory rule; attention saves only its per-head log-sum-exp).
 *
 * Gradients accumulate (+=) over forward/backward calls until dsa_model_zero_grad, which
 * is how the trainer accumulates micro-batches into one optimizer step. Parameters whose
 * `requires_grad` entry is false get no gradient computed at all.
 */
#ifndef DSA_PRETRAIN_MODEL_H
#define DSA_PRETRAIN_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "core/config.h"
#include "core/error.h"
#include "indexer/indexer.h"
#include "kernels/backend.h"
#include "pretrain/moe.h"
#include "pretrain/params.h"

/* How the next forwards run (DSA-SPEC §6): attention over all causal keys or over the
 * indexer's top-k (sparse MQA form, §4.2; dense whenever seq_len <= topk, which is the
 * same result), and whether each layer's indexer loss is computed. The indexer loss and
 * its gradients are formed inside the forward, right after the layer's attention, from
 * detached inputs (§6.2, §6.4); its gradients go to the indexer parameters that require
 * one, scaled by indexer_grad_scale (1/|R|, the valid rows of the whole step). */
typedef struct {
    bool sparse;               /* top-k attention (needs the indexer) */
    bool indexer_loss;         /* KL of every layer's indexer (stats, and grads where required) */
    bool indexer_fp8;          /* FP8 round trip of the indexer's q and k (§5.2); off for gradient checks */
    int64_t topk;              /* k (index_topk) */
    float indexer_grad_scale;  /* scale of ∂KL/∂I (0: no indexer gradients) */
    int64_t recall_rows;       /* sparse: query rows per sequence for the dense recall metric (0: off) */
    bool mqa_always;           /* tests: the sparse MQA path even when seq_len <= topk */
} DsaForwardMode;

/* Saved activations of one layer; shapes for N = batch · seq_len tokens. */
typedef struct {
    float *h_in;   /* (N, D) residual stream entering the layer */
    float *x;      /* (N, D) input_layernorm output */
    float *rstd1;  /* (N) */
    float *qa;     /* (N, d_q) q_a_proj output (q latent before its norm); NULL without q latent */
    float *cq;     /* (N, d_q) q_a_layernorm output: the query latent cQ */
    float *rstd_q; /* (N) */
    float *q;      /* (N, H, d_n + d_r) queries, rope part rotated */
    float *ckv;    /* (N, d_c) kv latent before kv_a_layernorm */
    float *c;      /* (N, d_c) kv latent c after kv_a_layernorm */
    float *rstd_kv; /* (N) */
    float *k;      /* (N, H, d_n + d_r) keys [kN ‖ kR] */
    float *v;      /* (N, H, d_v) */
    float *o;      /* (N, H·d_v) attention output */
    float *lse;    /* (B, H, L) attention log-sum-exp */
    float *h_mid;  /* (N, D) residual after attention */
    float *x2;     /* (N, D) post_attention_layernorm output */
    float *rstd2;  /* (N) */
    float *gate;   /* (N, I) dense FFN; NULL in MoE layers */
    float *up;     /* (N, I) */
    float *act;    /* (N, I) silu(gate) ⊙ up */
    DsaMoeActs moe; /* MoE layers: routing and expert activations (moe.h); zeroed otherwise */
    /* with the indexer */
    int32_t *idx;  /* (N, k) top-k keys of each query (sparse stage and metrics) */
    float *qm;     /* (N, H, d_c + d_r) absorbed queries [W_UKᵀ qN ‖ qR] (sparse, §4.2) */
    float *kvm;    /* (N, d_c + d_r) shared key rows [c ‖ kR] */
    float *om;     /* (N, H, d_c) latent attention output ō */
} DsaLayerActs;

typedef struct {
    DsaModelConfig cfg;
    const DsaBackend *be;
    const DsaIndexerOps *ix; /* the backend's indexer entries (dsa_indexer_ops_get); NULL without an indexer */
    DsaParamTable table;
    float *params;     /* (table.total) */
    float *grads;      /* (table.total), zero-initialized */
    bool *requires_grad; /* (table.count) all true by default */
    /* weights by (layer, slot), resolved from the table; NULL where absent */
    float **w;         /* (num_layers + 1) × DSA_W_SLOT_COUNT; row num_layers holds globals */
    /* routed experts: weights and table indices by (layer, gate/up/down, expert J),
     * (num_layers × 3 × E), NULL / -1 in dense layers; moe_g: one layer's gradient
     * pointers (3 × E), filled at each backward */
    float **moe_w;
    int *moe_idx;
    float **moe_g;

    /* activation workspace for one (batch, seq_len) */
    int64_t batch, seq_len;
    float *arena;
    int64_t arena_floats;
    DsaLayerActs *acts;  /* (num_layers) */
    float *h_final;      /* (N, D) residual after the last layer */
    float *xf, *rstdf;   /* final norm output (N, D) and its rstd (N) */
    float *logits;       /* (N, V); replaced by dlogits in the backward */
    float *losses, *ce_lse; /* (N) */
    float *rope_cos, *rope_sin; /* (L, d_r / 2) */
    int32_t *inputs, *targets;  /* (N) copies of the last forward's tokens */
    /* backward scratch */
    float *dh, *dx, *dtmp, *dq, *dk, *dv, *dkv, *dkva, *dc, *dkr, *dqa, *dcq, *dgate, *dup, *dact, *do_,
        *attn_scratch, *kv, *kva;
    int64_t count; /* tokens with a target in the last forward */
    bool have_forward;

    /* DSA: the mode of the next forwards and what the indexer measured */
    DsaForwardMode mode;
    int64_t ws_topk;          /* k the workspace was laid out for */
    bool fwd_sparse;          /* the last forward ran the sparse MQA path */
    DsaIndexerLoss *idx_stats; /* (num_layers) accumulated since dsa_model_reset_indexer_stats */
    DsaIndexerActs iacts;     /* shared by all layers (consumed inside each layer's forward) */
    float *idx_scores, *di_q, *di_k, *di_w; /* (N, k), indexer grads (N, H_I, d_I), (N, d_I), (N, H_I) */
    float *abs_a, *abs_b, *abs_c; /* (N, max(d_c, d_n, d_v)) absorption scratch */
    float *dqm, *dkvm, *dom;  /* sparse backward: (N, H, d_c + d_r), (N, d_c + d_r), (N, H, d_c) */
    void *sparse_scratch;
    DsaMoeScratch moe_scr;    /* shared by the MoE layers */
} DsaModel;

/* Build the parameter table for `cfg` and allocate parameters and gradients (zeros).
 * Refuses unsupported configs (params.h). */
DsaStatus dsa_model_init(DsaModel *m, const DsaModelConfig *cfg, const DsaBackend *be);
void dsa_model_free(DsaModel *m);
/* Fresh weights: dsa_param_init(seed, model.initializer_range) on the host, uploaded. */
DsaStatus dsa_model_init_weights(DsaModel *m, uint64_t seed);

/* Allocate the activation workspace for micro-batches of batch × seq_len tokens (a no-op
 * when already sized so). Errors name the bytes wanted. */
DsaStatus dsa_model_reserve(DsaModel *m, int64_t batch, int64_t seq_len);
/* Bytes the workspace for (batch, seq_len) needs with top-k k, without allocating; -1
 * when a size overflows 64-bit arithmetic (dsa_model_reserve then refuses it). */
int64_t dsa_model_workspace_bytes(const DsaModelConfig *cfg, int64_t batch, int64_t seq_len, int64_t topk);

/* Forward of batch sequences of seq_len tokens (inputs[b·L + t]); targets < 0 are not
 * counted. Returns the summed cross-entropy and the number of counted targets; saves
 * the activations for dsa_model_backward. Reserves the workspace when needed. */
DsaStatus dsa_model_forward(DsaModel *m, const int32_t *inputs, const int32_t *targets, int64_t batch,
                            int64_t seq_len, double *loss_sum, int64_t *count);
/* The same forward on token ids already in backend memory (inputs, targets: N int32 each,
 * e.g. uploaded by the trainer on the copy stream; they are copied in stream order, so the
 * caller may overwrite them once this returns). `counted` is the number of targets >= 0,
 * from the caller's host copy, checked there with dsa_model_check_tokens. */
DsaStatus dsa_model_forward_device(DsaModel *m, const int32_t *inputs, const int32_t *targets, int64_t batch,
                                   int64_t seq_len, int64_t counted, double *loss_sum, int64_t *count);
/* Host token ids of a micro-batch of n tokens: DSA_ERR_RANGE naming the first outside the
 * vocabulary; *count = targets that count (>= 0). */
DsaStatus dsa_model_check_tokens(const DsaModel *m, const int32_t *inputs, const int32_t *targets, int64_t n,
                                 int64_t *count);
/* Backward of `loss_scale · Σ losses` of the last forward; accumulates into m->grads. */
void dsa_model_backward(DsaModel *m, float loss_scale);
void dsa_model_zero_grad(DsaModel *m);

/* Set how the next forwards run. Refuses sparse attention or an indexer loss without
 * the indexer. Changing topk re-lays out the workspace at the next forward. */
DsaStatus dsa_model_set_mode(DsaModel *m, const DsaForwardMode *mode);
/* The default mode: dense attention, no indexer loss, FP8 on, k = model.index_topk. */
DsaForwardMode dsa_forward_mode_default(const DsaModelConfig *cfg);
void dsa_model_reset_indexer_stats(DsaModel *m);

/* Training FLOPs per token for a sequence of seq_len (forward + backward = 3× forward):
 * 6 · (weights used per token in matmuls) + 6 · causal attention (QK and PV) per token,
 * averaged over positions. The same formula is used by tools/torch_ref.py bench. */
double dsa_model_train_flops_per_token(const DsaModelConfig *cfg, int64_t seq_len);

#endif
