/* model_internal.h: what the two parts of the decoder (model.h) share: model.c (the
 * model's buffers, the workspace and the whole-model forward and backward) and
 * model_layer.c (one decoder layer: MLA attention, dense or sparse, the indexer's part,
 * the FFN). Private to pretrain/.
 */
#ifndef DSA_PRETRAIN_MODEL_INTERNAL_H
#define DSA_PRETRAIN_MODEL_INTERNAL_H

#include "pretrain/model.h"

/* Dimensions used everywhere below, named as in DSA-SPEC. */
typedef struct {
    int64_t N, B, L, D, V, H, dq, dn, dr, dv, dc, I, dqk, nL;
    int64_t HI, dI, K, dm; /* indexer heads, head dim, top-k; d_m = d_c + d_r (MQA row) */
} Dims;

static inline Dims dims_of(const DsaModel *m) {
    const DsaModelConfig *c = &m->cfg;
    Dims d = {
        .B = m->batch,
        .L = m->seq_len,
        .D = c->hidden_size,
        .V = c->vocab_size,
        .H = c->num_attention_heads,
        .dq = c->has_q_lora ? c->q_lora_rank : 0,
        .dn = c->qk_nope_head_dim,
        .dr = c->qk_rope_head_dim,
        .dv = c->v_head_dim,
        .dc = c->kv_lora_rank,
        .I = c->intermediate_size,
        .nL = c->num_hidden_layers,
    };
    d.N = d.B * d.L;
    d.dqk = d.dn + d.dr;
    if (c->has_indexer) {
        d.HI = c->index_n_heads, d.dI = c->index_head_dim;
        d.K = m->ws_topk > 0 ? m->ws_topk : c->index_topk;
    }
    d.dm = d.dc + d.dr;
    return d;
}

/* Does layer l use the MoE FFN? */
static inline bool is_moe(const DsaModel *m, int64_t l) { return dsa_model_layer_is_moe(&m->cfg, l); }

static inline float *W(const DsaModel *m, int layer, DsaWeightSlot slot) {
    int row = layer < 0 ? (int)m->cfg.num_hidden_layers : layer;
    return m->w[row * DSA_W_SLOT_COUNT + slot];
}

/* Gradient buffer of (layer, slot), or NULL when it needs none. */
static inline float *G(const DsaModel *m, int layer, DsaWeightSlot slot) {
    const DsaParamInfo *p = dsa_param_slot(&m->table, layer, slot);
    if (!p || !m->requires_grad[p - m->table.info]) return NULL;
    return m->grads + p->offset;
}

/* Shapes of the DSA parts. */
static inline DsaIndexerShape indexer_shape(const DsaModel *m, const Dims *d) {
    return (DsaIndexerShape){
        .batch = d->B,
        .seq_len = d->L,
        .heads = d->HI,
        .head_dim = d->dI,
        .rope_dim = d->dr,
        .q_in = d->dq ? d->dq : d->D,
        .x_in = d->D,
        .topk = d->K,
        .fp8 = m->mode.indexer_fp8,
        .scale = (float)dsa_model_indexer_scale(&m->cfg),
        .eps = 1e-6f,
    };
}

static inline DsaSparseAttnShape sparse_shape(const DsaModel *m, const Dims *d) {
    return (DsaSparseAttnShape){.batch = d->B, .seq_len = d->L, .heads = d->H, .qk_dim = d->dm, .v_dim = d->dc,
                                .topk = d->K, .scale = (float)dsa_model_softmax_scale(&m->cfg)};
}

/* Layer l's forward (DSA-SPEC §4 steps 1-8; the indexer's selection and loss where the
 * mode asks for them): reads acts[l].h_in, writes the next layer's h_in (or h_final). */
DsaStatus dsa_model_layer_forward(DsaModel *m, int l, const Dims *d);
/* Layer l's backward: on entry m->dh holds ∂loss/∂(layer output); on exit ∂loss/∂(layer
 * input); parameter gradients accumulate. */
void dsa_model_layer_backward(DsaModel *m, int l, const Dims *d);

#endif
