/* params.c: the parameter table (params.h): HF DeepSeek names and shapes (DSA-SPEC §3.1)
 * laid out in one flat buffer, and the fresh initialization. */
#include "pretrain/params.h"

#include <stdio.h>
#include <string.h>

#include "core/checked.h"
#include "core/mem.h"
#include "core/rng.h"

/* Per-layer tensors in table order; `fmt` takes the layer index. */
static const struct {
    DsaWeightSlot slot;
    const char *fmt;
} layer_names[] = {
    {DSA_W_INPUT_NORM, "model.layers.%d.input_layernorm.weight"},
    {DSA_W_Q_A, "model.layers.%d.self_attn.q_a_proj.weight"},
    {DSA_W_Q_A_NORM, "model.layers.%d.self_attn.q_a_layernorm.weight"},
    {DSA_W_Q_B, "model.layers.%d.self_attn.q_b_proj.weight"},
    {DSA_W_Q, "model.layers.%d.self_attn.q_proj.weight"},
    {DSA_W_KV_A, "model.layers.%d.self_attn.kv_a_proj_with_mqa.weight"},
    {DSA_W_KV_A_NORM, "model.layers.%d.self_attn.kv_a_layernorm.weight"},
    {DSA_W_KV_B, "model.layers.%d.self_attn.kv_b_proj.weight"},
    {DSA_W_O, "model.layers.%d.self_attn.o_proj.weight"},
    {DSA_W_IDX_WQ_B, "model.layers.%d.self_attn.indexer.wq_b.weight"},
    {DSA_W_IDX_WK, "model.layers.%d.self_attn.indexer.wk.weight"},
    {DSA_W_IDX_K_NORM, "model.layers.%d.self_attn.indexer.k_norm.weight"},
    {DSA_W_IDX_K_NORM_BIAS, "model.layers.%d.self_attn.indexer.k_norm.bias"},
    {DSA_W_IDX_WEIGHTS_PROJ, "model.layers.%d.self_attn.indexer.weights_proj.weight"},
    {DSA_W_POST_NORM, "model.layers.%d.post_attention_layernorm.weight"},
    /* dense FFN (layers < first_k_dense_replace) */
    {DSA_W_GATE, "model.layers.%d.mlp.gate_proj.weight"},
    {DSA_W_UP, "model.layers.%d.mlp.up_proj.weight"},
    {DSA_W_DOWN, "model.layers.%d.mlp.down_proj.weight"},
    /* MoE FFN: router and its bias; the routed experts follow (expert_names) */
    {DSA_W_ROUTER, "model.layers.%d.mlp.gate.weight"},
    {DSA_W_ROUTER_BIAS, "model.layers.%d.mlp.gate.e_score_correction_bias"},
};

/* Routed experts, in this order for each expert J; `fmt` takes (layer, J). */
static const struct {
    DsaWeightSlot slot;
    const char *fmt;
} expert_names[] = {
    {DSA_W_EXPERT_GATE, "model.layers.%d.mlp.experts.%d.gate_proj.weight"},
    {DSA_W_EXPERT_UP, "model.layers.%d.mlp.experts.%d.up_proj.weight"},
    {DSA_W_EXPERT_DOWN, "model.layers.%d.mlp.experts.%d.down_proj.weight"},
};

/* The shared experts, after the routed ones. */
static const struct {
    DsaWeightSlot slot;
    const char *fmt;
} shared_names[] = {
    {DSA_W_SHARED_GATE, "model.layers.%d.mlp.shared_experts.gate_proj.weight"},
    {DSA_W_SHARED_UP, "model.layers.%d.mlp.shared_experts.up_proj.weight"},
    {DSA_W_SHARED_DOWN, "model.layers.%d.mlp.shared_experts.down_proj.weight"},
};

/* Shape of a slot of layer `layer` (-1: globals) for model `m`; false when the model
 * has no such tensor there. A product of config values that overflows sets *overflow
 * (core/checked.h). */
static bool slot_shape(const DsaModelConfig *m, int layer, DsaWeightSlot slot, int *ndim, int64_t shape[2],
                       bool *overflow) {
    const int64_t D = m->hidden_size, H = m->num_attention_heads;
    const int64_t dqk = dsa_add_sticky(m->qk_nope_head_dim, m->qk_rope_head_dim, overflow);
    const bool moe = layer >= 0 && dsa_model_layer_is_moe(m, layer);
    const int64_t Ie = m->moe_intermediate_size, Is = dsa_mul_sticky(m->moe_intermediate_size, m->n_shared_experts, overflow);
#define MUL(a, b) dsa_mul_sticky((a), (b), overflow)
#define ADD(a, b) dsa_add_sticky((a), (b), overflow)
    int64_t r = 0, c = 0;
    switch (slot) {
    case DSA_W_EMBED:
    case DSA_W_LM_HEAD: r = m->vocab_size, c = D; break;
    case DSA_W_FINAL_NORM:
    case DSA_W_INPUT_NORM:
    case DSA_W_POST_NORM: r = D; break;
    case DSA_W_Q_A:
        if (!m->has_q_lora) return false;
        r = m->q_lora_rank, c = D;
        break;
    case DSA_W_Q_A_NORM:
        if (!m->has_q_lora) return false;
        r = m->q_lora_rank;
        break;
    case DSA_W_Q_B:
        if (!m->has_q_lora) return false;
        r = MUL(H, dqk), c = m->q_lora_rank;
        break;
    case DSA_W_Q:
        if (m->has_q_lora) return false;
        r = MUL(H, dqk), c = D;
        break;
    case DSA_W_KV_A: r = ADD(m->kv_lora_rank, m->qk_rope_head_dim), c = D; break;
    case DSA_W_KV_A_NORM: r = m->kv_lora_rank; break;
    case DSA_W_KV_B: r = MUL(H, ADD(m->qk_nope_head_dim, m->v_head_dim)), c = m->kv_lora_rank; break;
    case DSA_W_O: r = D, c = MUL(H, m->v_head_dim); break;
    case DSA_W_GATE:
    case DSA_W_UP:
        if (moe) return false;
        r = m->intermediate_size, c = D;
        break;
    case DSA_W_DOWN:
        if (moe) return false;
        r = D, c = m->intermediate_size;
        break;
    case DSA_W_ROUTER:
        if (!moe) return false;
        r = m->n_routed_experts, c = D;
        break;
    case DSA_W_ROUTER_BIAS:
        if (!moe || strcmp(m->topk_method, "noaux_tc") != 0) return false;
        r = m->n_routed_experts;
        break;
    case DSA_W_EXPERT_GATE:
    case DSA_W_EXPERT_UP:
        if (!moe) return false;
        r = Ie, c = D;
        break;
    case DSA_W_EXPERT_DOWN:
        if (!moe) return false;
        r = D, c = Ie;
        break;
    case DSA_W_SHARED_GATE:
    case DSA_W_SHARED_UP:
        if (!moe || Is == 0) return false;
        r = Is, c = D;
        break;
    case DSA_W_SHARED_DOWN:
        if (!moe || Is == 0) return false;
        r = D, c = Is;
        break;
    case DSA_W_IDX_WQ_B:
        if (!m->has_indexer) return false;
        r = MUL(m->index_n_heads, m->index_head_dim), c = m->has_q_lora ? m->q_lora_rank : D;
        break;
    case DSA_W_IDX_WK:
        if (!m->has_indexer) return false;
        r = m->index_head_dim, c = D;
        break;
    case DSA_W_IDX_K_NORM:
    case DSA_W_IDX_K_NORM_BIAS:
        if (!m->has_indexer) return false;
        r = m->index_head_dim;
        break;
    case DSA_W_IDX_WEIGHTS_PROJ:
        if (!m->has_indexer) return false;
        r = m->index_n_heads, c = D;
        break;
    default: return false;
    }
#undef MUL
#undef ADD
    *ndim = c ? 2 : 1;
    shape[0] = r, shape[1] = c ? c : 1;
    return true;
}

static bool slot_is_norm(DsaWeightSlot s) {
    return s == DSA_W_FINAL_NORM || s == DSA_W_INPUT_NORM || s == DSA_W_POST_NORM || s == DSA_W_Q_A_NORM ||
           s == DSA_W_KV_A_NORM || s == DSA_W_IDX_K_NORM;
}

bool dsa_param_slot_is_indexer(DsaWeightSlot s) { return s >= DSA_W_IDX_WQ_B && s <= DSA_W_IDX_WEIGHTS_PROJ; }

/* Add the entry of (slot, layer, expert); false when its size (or the table's total)
 * overflows 64-bit arithmetic, with the entry's name and shape filled in for the error. */
static bool add_entry(DsaParamTable *t, const DsaModelConfig *m, DsaWeightSlot slot, int layer, int expert,
                      const char *name) {
    DSA_ASSERT(t->count < t->capacity);
    DsaParamInfo *p = &t->info[t->count];
    bool overflow = false;
    if (!slot_shape(m, layer, slot, &p->ndim, p->shape, &overflow)) return true; /* no such tensor here */
    snprintf(p->name, sizeof p->name, "%s", name);
    p->slot = slot;
    p->layer = layer;
    p->expert = expert;
    p->numel = dsa_mul_sticky(p->shape[0], p->ndim == 2 ? p->shape[1] : 1, &overflow);
    p->offset = t->total;
    p->is_norm = slot_is_norm(slot);
    p->is_bias = slot == DSA_W_IDX_K_NORM_BIAS || slot == DSA_W_ROUTER_BIAS;
    p->frozen = slot == DSA_W_ROUTER_BIAS; /* DSA-SPEC §3.1 Decision (router bias) */
    p->decay = !p->is_norm && !p->is_bias; /* DSA-SPEC §1: no decay on norms or biases */
    p->group = dsa_param_slot_is_indexer(slot) ? DSA_GROUP_INDEXER : DSA_GROUP_MAIN;
    /* NOTE: 16-float alignment keeps every tensor 64-byte aligned for vector loads. */
    t->total = dsa_add_sticky(t->total, dsa_add_sticky(p->numel, 15, &overflow) / 16 * 16, &overflow);
    if (overflow) return false;
    t->count++;
    return true;
}

/* The error of an entry whose size overflows (add_entry returned false). */
static DsaStatus overflow_error(const DsaParamTable *t) {
    const DsaParamInfo *p = &t->info[t->count];
    DSA_FAIL(DSA_ERR_CONFIG,
             "model: tensor %s [%lld, %lld]: its element count, or the parameter count with it, overflows 64-bit "
             "arithmetic (a size of the model section is out of range)",
             p->name, (long long)p->shape[0], (long long)p->shape[1]);
}

DsaStatus dsa_param_table_build(DsaParamTable *t, const DsaModelConfig *m) {
    memset(t, 0, sizeof *t);
    if (m->tie_word_embeddings)
        DSA_FAIL(DSA_ERR_CONFIG, "model.tie_word_embeddings = true is not supported (DeepSeek models untie them)");
    const int nl = (int)(sizeof layer_names / sizeof layer_names[0]);
    const int ne = (int)(sizeof expert_names / sizeof expert_names[0]);
    const int ns = (int)(sizeof shared_names / sizeof shared_names[0]);
    const int64_t experts = m->has_moe ? m->n_routed_experts : 0;
    bool too_many = false;
    const int64_t max = dsa_add_sticky(
        3, dsa_mul_sticky(m->num_hidden_layers, dsa_add_sticky(nl + ns, dsa_mul_sticky(ne, experts, &too_many), &too_many), &too_many),
        &too_many);
    if (too_many || max > 0x7fffffff)
        DSA_FAIL(DSA_ERR_CONFIG, "model.num_hidden_layers = %lld with model.n_routed_experts = %lld: %lld tensors is "
                 "too many for the parameter table", (long long)m->num_hidden_layers, (long long)experts,
                 (long long)(too_many ? INT64_MAX : max));
    t->info = dsa_calloc((size_t)max, sizeof *t->info);
    if (!t->info) DSA_FAIL(DSA_ERR_NOMEM, "parameter table of %lld entries", (long long)max);
    t->capacity = (int)max;
#define ADD_ENTRY(...)                                  \
    do {                                                \
        if (!add_entry(t, m, __VA_ARGS__)) {            \
            DsaStatus st_ = overflow_error(t);          \
            dsa_param_table_free(t);                    \
            return st_;                                 \
        }                                               \
    } while (0)
    ADD_ENTRY(DSA_W_EMBED, -1, -1, "model.embed_tokens.weight");
    char name[DSA_PARAM_NAME_CAP];
    for (int l = 0; l < (int)m->num_hidden_layers; l++) {
        for (int i = 0; i < nl; i++) {
            snprintf(name, sizeof name, layer_names[i].fmt, l);
            ADD_ENTRY(layer_names[i].slot, l, -1, name);
        }
        if (!dsa_model_layer_is_moe(m, l)) continue;
        for (int j = 0; j < (int)experts; j++)
            for (int i = 0; i < ne; i++) {
                snprintf(name, sizeof name, expert_names[i].fmt, l, j);
                ADD_ENTRY(expert_names[i].slot, l, j, name);
            }
        for (int i = 0; i < ns; i++) {
            snprintf(name, sizeof name, shared_names[i].fmt, l);
            ADD_ENTRY(shared_names[i].slot, l, -1, name);
        }
    }
    ADD_ENTRY(DSA_W_FINAL_NORM, -1, -1, "model.norm.weight");
    ADD_ENTRY(DSA_W_LM_HEAD, -1, -1, "lm_head.weight");
#undef ADD_ENTRY
    return DSA_OK;
}

void dsa_param_table_free(DsaParamTable *t) {
    dsa_free(t->info, sizeof *t->info * (size_t)t->capacity);
    memset(t, 0, sizeof *t);
}

const DsaParamInfo *dsa_param_find(const DsaParamTable *t, const char *name) {
    for (int i = 0; i < t->count; i++)
        if (!strcmp(t->info[i].name, name)) return &t->info[i];
    return NULL;
}

const DsaParamInfo *dsa_param_slot(const DsaParamTable *t, int layer, DsaWeightSlot slot) {
    for (int i = 0; i < t->count; i++)
        if (t->info[i].layer == layer && t->info[i].slot == slot) return &t->info[i];
    return NULL;
}

const DsaParamInfo *dsa_param_expert(const DsaParamTable *t, int layer, DsaWeightSlot slot, int expert) {
    for (int i = 0; i < t->count; i++) {
        const DsaParamInfo *p = &t->info[i];
        if (p->layer == layer && p->slot == slot && p->expert == expert) return p;
    }
    return NULL;
}

/* One tensor: norms 1, biases 0, else N(0, std²) from Philox stream `stream`. */
static void init_tensor(const DsaParamInfo *p, float *params, uint64_t seed, uint64_t stream, double std) {
    float *w = params + p->offset;
    if (p->is_norm || p->is_bias) {
        for (int64_t j = 0; j < p->numel; j++) w[j] = p->is_norm ? 1.0f : 0.0f;
        return;
    }
#pragma omp parallel for schedule(static)
    for (int64_t j = 0; j < p->numel; j++) w[j] = (float)(std * dsa_rng_normal_at(seed, stream, (uint64_t)j));
}

/* Stream of an indexer tensor: keyed by (layer, slot), far from the table indices. */
/* The indexer's Philox stream of (layer, slot). The stride is frozen at 21, the slot
 * count when indexers were introduced (before the MoE slots), so that adding slots never
 * changes the fresh indexer a given seed produces: conversions stay reproducible across
 * versions. Indexer slots are < 21. */
enum { INDEXER_STREAM_STRIDE = 21 };
_Static_assert((int)DSA_W_IDX_WEIGHTS_PROJ < (int)INDEXER_STREAM_STRIDE, "indexer slots must stay below the frozen stride");

static uint64_t indexer_stream(const DsaParamInfo *p) {
    return 0x1D000000ull + (uint64_t)p->layer * INDEXER_STREAM_STRIDE + (uint64_t)p->slot;
}

void dsa_param_init(const DsaParamTable *t, float *params, uint64_t seed, double std) {
    for (int i = 0; i < t->count; i++) {
        const DsaParamInfo *p = &t->info[i];
        init_tensor(p, params, seed, p->group == DSA_GROUP_INDEXER ? indexer_stream(p) : (uint64_t)i, std);
    }
}

void dsa_param_init_indexer(const DsaParamTable *t, float *params, uint64_t seed, double std) {
    for (int i = 0; i < t->count; i++) {
        const DsaParamInfo *p = &t->info[i];
        if (p->group == DSA_GROUP_INDEXER) init_tensor(p, params, seed, indexer_stream(p), std);
    }
}
