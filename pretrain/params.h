/* params.h: the model's parameter table: every tensor with its Hugging Face DeepSeek
 * name, shape, place in one flat fp32 buffer, optimizer group and weight-decay flag.
 *
 * This is the one table that maps model tensors to HF names (STYLE.md rule 11): the
 * checkpoint writer, the loader, the optimizer and the model all walk it. Parameters,
 * gradients and AdamW moments are each one allocation of `total` floats with the same
 * layout (llm.c style), so an offset found here addresses all four.
 *
 * Supported now: the DeepSeek-V3 / V3.2 decoder with dense FFNs (DSA-SPEC §3.1 without
 * MoE and without MTP), with or without the query latent (q_lora_rank null as in
 * DeepSeek-V2-Lite: `q_proj`), with the five lightning-indexer tensors per layer when
 * model.index_topk is set (optimizer group DSA_GROUP_INDEXER), and DeepSeek MoE FFNs in
 * the layers >= first_k_dense_replace: the router (mlp.gate.weight), its
 * e_score_correction_bias (topk_method "noaux_tc" only; frozen, DSA-SPEC §3.1 Decision
 * (router bias)), the routed experts mlp.experts.J.{gate,up,down}_proj and the shared
 * experts mlp.shared_experts.{gate,up,down}_proj (width moe_intermediate_size ·
 * n_shared_experts; absent when n_shared_experts is 0). Layers < first_k_dense_replace
 * keep the dense mlp.{gate,up,down}_proj.
 *
 * Table order is the HF order inside a layer: attention (with the indexer), the post
 * attention norm, then the FFN: dense gate/up/down, or mlp.gate, its bias, experts
 * 0..E-1 (each gate, up, down) and the shared experts.
 */
#ifndef DSA_PRETRAIN_PARAMS_H
#define DSA_PRETRAIN_PARAMS_H

#include <stdbool.h>
#include <stdint.h>

#include "core/config.h"
#include "core/error.h"

/* What a tensor is inside its layer; the model addresses weights by slot. */
typedef enum {
    DSA_W_EMBED = 0,     /* model.embed_tokens.weight        [V, D] */
    DSA_W_FINAL_NORM,    /* model.norm.weight                [D] */
    DSA_W_LM_HEAD,       /* lm_head.weight                   [V, D] */
    DSA_W_INPUT_NORM,    /* input_layernorm.weight           [D] */
    DSA_W_Q_A,           /* self_attn.q_a_proj.weight        [d_q, D] */
    DSA_W_Q_A_NORM,      /* self_attn.q_a_layernorm.weight   [d_q] */
    DSA_W_Q_B,           /* self_attn.q_b_proj.weight        [H·(d_n+d_r), d_q] */
    DSA_W_Q,             /* self_attn.q_proj.weight          [H·(d_n+d_r), D] (no q latent) */
    DSA_W_KV_A,          /* self_attn.kv_a_proj_with_mqa.weight [d_c+d_r, D] */
    DSA_W_KV_A_NORM,     /* self_attn.kv_a_layernorm.weight  [d_c] */
    DSA_W_KV_B,          /* self_attn.kv_b_proj.weight       [H·(d_n+d_v), d_c] */
    DSA_W_O,             /* self_attn.o_proj.weight          [D, H·d_v] */
    DSA_W_POST_NORM,     /* post_attention_layernorm.weight  [D] */
    DSA_W_GATE,          /* mlp.gate_proj.weight             [I, D] */
    DSA_W_UP,            /* mlp.up_proj.weight               [I, D] */
    DSA_W_DOWN,          /* mlp.down_proj.weight             [D, I] */
    /* the lightning indexer (DSA-SPEC §3.1, §5), present when model.index_topk is set */
    DSA_W_IDX_WQ_B,      /* self_attn.indexer.wq_b.weight    [H_I·d_I, d_q] (or [.., D] without q latent) */
    DSA_W_IDX_WK,        /* self_attn.indexer.wk.weight      [d_I, D] */
    DSA_W_IDX_K_NORM,    /* self_attn.indexer.k_norm.weight  [d_I] */
    DSA_W_IDX_K_NORM_BIAS, /* self_attn.indexer.k_norm.bias  [d_I] */
    DSA_W_IDX_WEIGHTS_PROJ, /* self_attn.indexer.weights_proj.weight [H_I, D] */
    /* MoE FFN (layers >= first_k_dense_replace). NOTE: appended after the indexer so the
     * slot numbers above (which key the indexer's init streams) never change. */
    DSA_W_ROUTER,        /* mlp.gate.weight                  [E, D] */
    DSA_W_ROUTER_BIAS,   /* mlp.gate.e_score_correction_bias [E] (noaux_tc only; frozen) */
    DSA_W_EXPERT_GATE,   /* mlp.experts.J.gate_proj.weight   [I_e, D] (one per expert J) */
    DSA_W_EXPERT_UP,     /* mlp.experts.J.up_proj.weight     [I_e, D] */
    DSA_W_EXPERT_DOWN,   /* mlp.experts.J.down_proj.weight   [D, I_e] */
    DSA_W_SHARED_GATE,   /* mlp.shared_experts.gate_proj.weight [I_e·n_shared, D] */
    DSA_W_SHARED_UP,     /* mlp.shared_experts.up_proj.weight   [I_e·n_shared, D] */
    DSA_W_SHARED_DOWN,   /* mlp.shared_experts.down_proj.weight [D, I_e·n_shared] */
    DSA_W_SLOT_COUNT,
} DsaWeightSlot;

/* Optimizer groups (DSA-SPEC §1: the main model and the indexers are clipped and
 * scheduled separately). */
typedef enum { DSA_GROUP_MAIN = 0, DSA_GROUP_INDEXER, DSA_GROUP_COUNT } DsaParamGroup;

enum { DSA_PARAM_NAME_CAP = 96 };

typedef struct {
    char name[DSA_PARAM_NAME_CAP]; /* HF name, e.g. "model.layers.0.self_attn.o_proj.weight" */
    DsaWeightSlot slot;
    int layer;                     /* -1 for embeddings, final norm and head */
    int expert;                    /* routed expert index J (DSA_W_EXPERT_*), else -1 */
    int ndim;                      /* 1 or 2 */
    int64_t shape[2];
    int64_t offset;                /* in floats, into the flat buffers */
    int64_t numel;
    bool decay;                    /* weight decay applies (not to norms or biases) */
    bool is_norm;                  /* norm weight: initialized to 1 */
    bool is_bias;                  /* bias (k_norm.bias, e_score_correction_bias): initialized to 0 */
    bool frozen;                   /* never trained (e_score_correction_bias, DSA-SPEC §3.1 Decision
                                    * (router bias)): no gradient, never updated by the optimizer,
                                    * not in gradient norms */
    DsaParamGroup group;
} DsaParamInfo;

typedef struct {
    DsaParamInfo *info; /* (count) */
    int count, capacity;
    int64_t total;      /* floats in one flat buffer */
} DsaParamTable;

/* Build the table for `m`. Refuses (DSA_ERR_CONFIG, naming the key) what the model
 * does not support: tied embeddings. */
DsaStatus dsa_param_table_build(DsaParamTable *t, const DsaModelConfig *m);
void dsa_param_table_free(DsaParamTable *t);

/* The entry named `name`, or NULL. */
const DsaParamInfo *dsa_param_find(const DsaParamTable *t, const char *name);
/* The entry of (layer, slot), or NULL when the model has no such tensor. For the routed
 * expert slots this is expert 0's; use dsa_param_expert for the others. */
const DsaParamInfo *dsa_param_slot(const DsaParamTable *t, int layer, DsaWeightSlot slot);
/* The entry of routed expert `expert` of (layer, slot) (DSA_W_EXPERT_GATE/UP/DOWN), or
 * NULL when the model has no such tensor. */
const DsaParamInfo *dsa_param_expert(const DsaParamTable *t, int layer, DsaWeightSlot slot, int expert);

/* Fresh initialization (the HF DeepSeek-V3 rule): norms 1, biases 0 (the router's
 * e_score_correction_bias included), every other tensor (router and experts included)
 * N(0, initializer_range²), each tensor from its own Philox stream, so the values depend
 * only on (seed, config), never on thread count. Main-model tensors are keyed by their
 * index in the table; indexer tensors by (layer, slot) (dsa_param_init_indexer). */
void dsa_param_init(const DsaParamTable *t, float *params, uint64_t seed, double std);

/* Fresh indexer weights only (DSA-SPEC §3.2 Decision): wq_b, wk, weights_proj
 * ~ N(0, std²), k_norm.weight = 1, k_norm.bias = 0, each tensor from the Philox stream
 * keyed by (layer, slot) under `seed`: the same values whatever else the table holds, so
 * `dsa convert --add-indexer` and a fresh DSA model agree. */
void dsa_param_init_indexer(const DsaParamTable *t, float *params, uint64_t seed, double std);

/* Is this slot one of the indexer's? */
bool dsa_param_slot_is_indexer(DsaWeightSlot slot);

#endif
