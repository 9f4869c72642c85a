/* plan_internal.h: what plan.c (one stage under one layout) and plan_search.c (the
 * search over layouts, the single-layer check) share: the parameter table split the way
 * the plan needs it and the shape of one planned step. Not a public interface. */
#ifndef DSA_PRETRAIN_PLAN_INTERNAL_H
#define DSA_PRETRAIN_PLAN_INTERNAL_H

#include "pretrain/plan.h"

/* Which tensors a plan holds: the whole model, one attention block (input norm, MLA,
 * indexer: issue 15's single-layer check), or one whole layer (its FFN too). */
typedef enum { PLAN_SCOPE_MODEL = 0, PLAN_SCOPE_ATTENTION, PLAN_SCOPE_LAYER } PlanScope;

/* Element counts from the parameter table (pretrain/params.h). */
typedef struct {
    int64_t count, trained;   /* all parameters; those the stage trains */
    int64_t ne, ne_train;     /* non-expert tensors (replicated on every device) */
    int64_t ex, ex_train;     /* routed experts, the whole model (a device holds 1/ep) */
    int64_t mm_main;          /* matmul weights per token, non-expert, not the indexer: forward 2 FLOPs each */
    int64_t mm_layers;        /* mm_main without the LM head: what a recompute repeats */
    int64_t mm_expert;        /* routed-expert weights a token passes through: K/E of each MoE layer's */
    int64_t mm_indexer;       /* indexer wq_b, wk, weights_proj */
    int64_t kvb;              /* kv_b_proj of one layer (the dense form's K/V expansion) */
    int64_t layer_train_max;  /* the largest layer's trained elements on one device (experts / ep) */
    bool layer_moe;           /* PLAN_SCOPE_LAYER: the layer is an MoE layer */
} PlanParams;

/* One planned micro-batch step. */
typedef struct {
    const DsaModelConfig *m;
    DsaPlanLayout lay;        /* recompute ON or OFF */
    bool sparse_form;         /* sparse attention with L > k: the MQA form over top-k (DSA-SPEC §4.2) */
    bool train_main;          /* the stage trains the main model (a backward through every layer) */
    bool indexer;             /* the model has an indexer: its KL runs in every stage (trainer.c) */
    bool head;                /* embedding, final norm and LM head are held (PLAN_SCOPE_MODEL) */
    int64_t k;                /* min(index_topk, L) */
    int64_t L, N, Lg, a;      /* sequence, own tokens, tokens of the micro-batch, activation bytes */
    int64_t n_attn, n_dense, n_moe; /* layers: attention blocks alone, dense-FFN, MoE */
} PlanShape;

DsaStatus dsa_plan_params(const DsaModelConfig *m, bool train_main, PlanScope scope, int64_t ep, PlanParams *p);
DsaStatus dsa_plan_bytes(const PlanShape *s, const PlanParams *p, DsaPlanBytes *b);
/* The shape of stage `s` under `lay` (recompute resolved), validated; DSA_ERR_ARG names the flag. */
DsaStatus dsa_plan_shape(const DsaConfig *cfg, int s, const DsaPlanLayout *lay, PlanShape *out);

#endif
