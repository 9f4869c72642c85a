/* model.c: forward and backward of the DeepSeek-V3 decoder (model.h) through the
 * backend table. Per layer (DSA-SPEC §4 steps 1-8, MHA form §4.1):
 *
 *   x   = RMSNorm(h)                          cQ = RMSNorm(W_DQ x)   (or q = W_Q x)
 *   q   = W_UQ cQ, viewed (H, d_n + d_r), rope part rotated (interleaved, §4.4)
 *   [c̃ ‖ kR] = W_DKV x,  c = RMSNorm(c̃),  kR rotated (one per token, shared by heads)
 *   [kN ‖ v] = W_UKV c per head,  k = [kN ‖ kR]
 *   o   = causal softmax(τ q kᵀ) v,  h += W_O o
 *   h  += W_down (silu(W_gate x2) ⊙ W_up x2),  x2 = RMSNorm(h)
 *         (or h += MoE(x2) in layers >= first_k_dense_replace, pretrain/moe.h)
 *
 * The backward walks the same steps in reverse; each linear's weight gradient is skipped
 * when its parameter does not require one.
 */
#include "pretrain/model.h"

#include <math.h>
#include <string.h>

#include "core/checked.h"
#include "core/mem.h"

/* Dimensions used everywhere below, named as in DSA-SPEC. */
typedef struct {
    int64_t N, B, L, D, V, H, dq, dn, dr, dv, dc, I, dqk, nL;
    int64_t HI, dI, K, dm; /* indexer heads, head dim, top-k; d_m = d_c + d_r (MQA row) */
} Dims;

static Dims dims_of(const DsaModel *m) {
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
static bool is_moe(const DsaModel *m, int64_t l) { return dsa_model_layer_is_moe(&m->cfg, l); }

static float *W(const DsaModel *m, int layer, DsaWeightSlot slot) {
    int row = layer < 0 ? (int)m->cfg.num_hidden_layers : layer;
    return m->w[row * DSA_W_SLOT_COUNT + slot];
}

/* Gradient buffer of (layer, slot), or NULL when it needs none. */
static float *G(const DsaModel *m, int layer, DsaWeightSlot slot) {
    const DsaParamInfo *p = dsa_param_slot(&m->table, layer, slot);
    if (!p || !m->requires_grad[p - m->table.info]) return NULL;
    return m->grads + p->offset;
}

DsaStatus dsa_model_init(DsaModel *m, const DsaModelConfig *cfg, const DsaBackend *be) {
    memset(m, 0, sizeof *m);
    m->cfg = *cfg;
    m->be = be;
    if (cfg->has_moe && cfg->n_routed_experts > 4096)
        DSA_FAIL(DSA_ERR_CONFIG, "model.n_routed_experts = %lld: at most 4096 routed experts are supported",
                 (long long)cfg->n_routed_experts);
    DSA_TRY(dsa_param_table_build(&m->table, cfg));
    size_t bytes = (size_t)m->table.total * sizeof(float);
    int rows = (int)cfg->num_hidden_layers + 1;
    m->params = dsa_calloc((size_t)m->table.total, sizeof(float));
    m->grads = dsa_calloc((size_t)m->table.total, sizeof(float));
    m->requires_grad = dsa_calloc((size_t)m->table.count, sizeof(bool));
    m->w = dsa_calloc((size_t)rows * DSA_W_SLOT_COUNT, sizeof(float *));
    m->idx_stats = dsa_calloc((size_t)cfg->num_hidden_layers, sizeof(DsaIndexerLoss));
    m->mode = dsa_forward_mode_default(cfg);
    const size_t ne = cfg->has_moe ? (size_t)cfg->n_routed_experts : 0, nexp = (size_t)cfg->num_hidden_layers * 3 * ne;
    if (ne) {
        m->moe_w = dsa_calloc(nexp, sizeof *m->moe_w);
        m->moe_idx = dsa_calloc(nexp, sizeof *m->moe_idx);
        m->moe_g = dsa_calloc(3 * ne, sizeof *m->moe_g);
    }
    if (!m->params || !m->grads || !m->requires_grad || !m->w || !m->idx_stats ||
        (ne && (!m->moe_w || !m->moe_idx || !m->moe_g))) {
        dsa_model_free(m);
        DSA_FAIL(DSA_ERR_NOMEM, "model parameters and gradients: 2 x %zu bytes", bytes);
    }
    for (size_t i = 0; i < nexp; i++) m->moe_idx[i] = -1;
    for (int i = 0; i < m->table.count; i++) {
        const DsaParamInfo *p = &m->table.info[i];
        int row = p->layer < 0 ? rows - 1 : p->layer;
        if (p->expert >= 0) {
            size_t at = ((size_t)p->layer * 3 + (size_t)(p->slot - DSA_W_EXPERT_GATE)) * ne + (size_t)p->expert;
            m->moe_w[at] = m->params + p->offset;
            m->moe_idx[at] = i;
        } else {
            m->w[row * DSA_W_SLOT_COUNT + p->slot] = m->params + p->offset;
        }
        /* frozen tensors (the router bias) never get a gradient */
        m->requires_grad[i] = !p->frozen;
    }
    return DSA_OK;
}

static void free_workspace(DsaModel *m) {
    dsa_free(m->arena, (size_t)m->arena_floats * sizeof(float));
    dsa_free(m->acts, sizeof *m->acts * (size_t)m->cfg.num_hidden_layers);
    m->arena = NULL, m->acts = NULL, m->arena_floats = 0;
    m->batch = m->seq_len = m->ws_topk = 0;
    m->have_forward = false;
}

void dsa_model_free(DsaModel *m) {
    free_workspace(m);
    size_t rows = (size_t)m->cfg.num_hidden_layers + 1;
    dsa_free(m->params, (size_t)m->table.total * sizeof(float));
    dsa_free(m->grads, (size_t)m->table.total * sizeof(float));
    dsa_free(m->requires_grad, (size_t)m->table.count * sizeof(bool));
    dsa_free(m->w, rows * DSA_W_SLOT_COUNT * sizeof(float *));
    dsa_free(m->idx_stats, (size_t)m->cfg.num_hidden_layers * sizeof(DsaIndexerLoss));
    const size_t ne = m->cfg.has_moe ? (size_t)m->cfg.n_routed_experts : 0;
    dsa_free(m->moe_w, (size_t)m->cfg.num_hidden_layers * 3 * ne * sizeof *m->moe_w);
    dsa_free(m->moe_idx, (size_t)m->cfg.num_hidden_layers * 3 * ne * sizeof *m->moe_idx);
    dsa_free(m->moe_g, 3 * ne * sizeof *m->moe_g);
    dsa_param_table_free(&m->table);
    memset(m, 0, sizeof *m);
}

/* ---- shapes of the DSA parts ------------------------------------------------------ */

static DsaIndexerShape indexer_shape(const DsaModel *m, const Dims *d) {
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

static DsaSparseAttnShape sparse_shape(const DsaModel *m, const Dims *d) {
    return (DsaSparseAttnShape){.batch = d->B, .seq_len = d->L, .heads = d->H, .qk_dim = d->dm, .v_dim = d->dc,
                                .topk = d->K, .scale = (float)dsa_model_softmax_scale(&m->cfg)};
}

DsaForwardMode dsa_forward_mode_default(const DsaModelConfig *cfg) {
    return (DsaForwardMode){.indexer_fp8 = true, .topk = cfg->has_indexer ? cfg->index_topk : 0};
}

DsaStatus dsa_model_set_mode(DsaModel *m, const DsaForwardMode *mode) {
    if ((mode->sparse || mode->indexer_loss) && !m->cfg.has_indexer)
        DSA_FAIL(DSA_ERR_CONFIG, "%s needs the lightning indexer, and the model has none (model.index_topk is null; "
                 "add one with `dsa convert --add-indexer`)", mode->sparse ? "sparse attention" : "the indexer loss");
    if (m->cfg.has_indexer && mode->topk < 1)
        DSA_FAIL(DSA_ERR_CONFIG, "index_topk = %lld: must be >= 1", (long long)mode->topk);
    m->mode = *mode;
    return DSA_OK;
}

void dsa_model_reset_indexer_stats(DsaModel *m) {
    memset(m->idx_stats, 0, (size_t)m->cfg.num_hidden_layers * sizeof(DsaIndexerLoss));
}

/* ---- workspace layout ------------------------------------------------------------ */

/* Carve (or, with base NULL, only count) the workspace. Every buffer is rounded up to
 * 16 floats. Token ids live in the same arena (int32 is float-sized).
 * NOTE (overflow): every size is a product of config values, so it is built with the
 * checked arithmetic of core/checked.h (mul2, mul3); an overflow sets `overflow` (and
 * saturates), and the sub-layouts of other modules (MoE, indexer, attention scratch) are
 * only asked for their sizes when a bound on their products fits (fits). */
typedef struct {
    float *base;
    int64_t used;
    bool overflow;
} Carver;

static float *carve(Carver *cv, int64_t floats) {
    float *p = cv->base && !cv->overflow ? cv->base + cv->used : NULL;
    cv->used = dsa_add_sticky(cv->used, dsa_add_sticky(floats, 15, &cv->overflow) / 16 * 16, &cv->overflow);
    return p;
}

static int64_t mul2(Carver *cv, int64_t a, int64_t b) { return dsa_mul_sticky(a, b, &cv->overflow); }
static int64_t mul3(Carver *cv, int64_t a, int64_t b, int64_t c) { return mul2(cv, mul2(cv, a, b), c); }

/* a · b · c, with room (x1024) for the sums of such terms a sub-layout adds, fits. */
static bool fits(Carver *cv, int64_t a, int64_t b, int64_t c) {
    bool of = false;
    dsa_mul_sticky(dsa_mul_sticky(dsa_mul_sticky(a, b, &of), c, &of), 1024, &of);
    cv->overflow |= of;
    return !of && !cv->overflow;
}

static int64_t max3(int64_t a, int64_t b, int64_t c) { return a > b ? (a > c ? a : c) : (b > c ? b : c); }

/* The MoE sub-layouts multiply tokens by top-k by the widest of the expert width, the
 * shared width (moe_intermediate_size · n_shared_experts), D and the expert count. */
static bool moe_fits(Carver *cv, const DsaModelConfig *c, int64_t tokens) {
    int64_t shared = 0;
    if (!dsa_mul_i64(c->moe_intermediate_size, c->n_shared_experts, &shared)) cv->overflow = true;
    int64_t widest = max3(max3(c->moe_intermediate_size, shared, c->hidden_size), c->n_routed_experts, 1);
    return fits(cv, tokens, c->num_experts_per_tok > 1 ? c->num_experts_per_tok : 1, widest);
}

static void layout_workspace(DsaModel *m, Carver *cv, const Dims *d) {
    for (int64_t l = 0; l < d->nL; l++) {
        DsaLayerActs *a = m->acts ? &m->acts[l] : &(DsaLayerActs){0};
        a->h_in = carve(cv, mul2(cv, d->N, d->D));
        a->x = carve(cv, mul2(cv, d->N, d->D));
        a->rstd1 = carve(cv, d->N);
        if (d->dq) {
            a->qa = carve(cv, mul2(cv, d->N, d->dq));
            a->cq = carve(cv, mul2(cv, d->N, d->dq));
            a->rstd_q = carve(cv, d->N);
        }
        a->q = carve(cv, mul3(cv, d->N, d->H, d->dqk));
        a->ckv = carve(cv, mul2(cv, d->N, d->dc));
        a->c = carve(cv, mul2(cv, d->N, d->dc));
        a->rstd_kv = carve(cv, d->N);
        a->k = carve(cv, mul3(cv, d->N, d->H, d->dqk));
        a->v = carve(cv, mul3(cv, d->N, d->H, d->dv));
        a->o = carve(cv, mul3(cv, d->N, d->H, d->dv));
        a->lse = carve(cv, mul3(cv, d->B, d->H, d->L));
        a->h_mid = carve(cv, mul2(cv, d->N, d->D));
        a->x2 = carve(cv, mul2(cv, d->N, d->D));
        a->rstd2 = carve(cv, d->N);
        if (is_moe(m, l)) {
            if (moe_fits(cv, &m->cfg, d->N)) {
                DsaMoeShape ms = dsa_moe_shape(&m->cfg, d->N);
                float *buf = carve(cv, dsa_moe_acts_floats(&ms));
                if (buf) dsa_moe_acts_carve(&a->moe, buf, &ms);
            }
        } else {
            a->gate = carve(cv, mul2(cv, d->N, d->I));
            a->up = carve(cv, mul2(cv, d->N, d->I));
            a->act = carve(cv, mul2(cv, d->N, d->I));
        }
        if (d->K) {
            a->idx = (int32_t *)carve(cv, mul2(cv, d->N, d->K));
            a->qm = carve(cv, mul3(cv, d->N, d->H, d->dm));
            a->kvm = carve(cv, mul2(cv, d->N, d->dm));
            a->om = carve(cv, mul3(cv, d->N, d->H, d->dc));
        }
    }
    m->h_final = carve(cv, mul2(cv, d->N, d->D));
    m->xf = carve(cv, mul2(cv, d->N, d->D));
    m->rstdf = carve(cv, d->N);
    m->logits = carve(cv, mul2(cv, d->N, d->V));
    m->losses = carve(cv, d->N);
    m->ce_lse = carve(cv, d->N);
    m->rope_cos = carve(cv, mul2(cv, d->L, d->dr) / 2);
    m->rope_sin = carve(cv, mul2(cv, d->L, d->dr) / 2);
    m->inputs = (int32_t *)carve(cv, d->N);
    m->targets = (int32_t *)carve(cv, d->N);
    /* scratch shared by all layers */
    int64_t wide = d->D > d->I ? d->D : d->I;
    int64_t qdim = d->dq > d->D ? d->dq : d->D;
    m->dh = carve(cv, mul2(cv, d->N, d->D));
    m->dx = carve(cv, mul2(cv, d->N, d->D));
    m->dtmp = carve(cv, mul2(cv, d->N, wide > qdim ? wide : qdim));
    m->dq = carve(cv, mul3(cv, d->N, d->H, d->dqk));
    m->dk = carve(cv, mul3(cv, d->N, d->H, d->dqk));
    m->dv = carve(cv, mul3(cv, d->N, d->H, d->dv));
    m->dkv = carve(cv, mul3(cv, d->N, d->H, d->dn + d->dv));
    m->dkva = carve(cv, mul2(cv, d->N, d->dc + d->dr));
    m->dc = carve(cv, mul2(cv, d->N, d->dc));
    m->dkr = carve(cv, mul2(cv, d->N, d->dr));
    m->dqa = carve(cv, mul2(cv, d->N, d->dq ? d->dq : 1));
    m->dcq = carve(cv, mul2(cv, d->N, d->dq ? d->dq : 1));
    m->dgate = carve(cv, mul2(cv, d->N, d->I));
    m->dup = carve(cv, mul2(cv, d->N, d->I));
    m->dact = carve(cv, mul2(cv, d->N, d->I));
    m->do_ = carve(cv, mul3(cv, d->N, d->H, d->dv));
    DsaAttnShape shape = {.batch = d->B, .seq_len = d->L, .heads = d->H, .qk_dim = d->dqk, .v_dim = d->dv};
    if (fits(cv, d->N, d->H, 64))
        m->attn_scratch = carve(cv, m->be ? m->be->attention_scratch_floats(&shape) : d->B * d->H * d->L);
    m->kv = carve(cv, mul3(cv, d->N, d->H, d->dn + d->dv));
    m->kva = carve(cv, mul2(cv, d->N, d->dc + d->dr));
    if (d->nL && is_moe(m, d->nL - 1) && moe_fits(cv, &m->cfg, d->N)) { /* the last layer is MoE whenever any is */
        DsaMoeShape ms = dsa_moe_shape(&m->cfg, d->N);
        float *buf = carve(cv, dsa_moe_scratch_floats(&ms));
        if (buf) dsa_moe_scratch_carve(&m->moe_scr, buf, &ms);
    }
    if (d->K) {
        DsaIndexerShape is = indexer_shape(m, d);
        if (fits(cv, d->N, d->HI + 2, d->dI + 2)) {
            float *ia = carve(cv, dsa_indexer_acts_floats(&is));
            if (ia) dsa_indexer_acts_carve(&m->iacts, ia, &is);
        }
        m->idx_scores = carve(cv, mul2(cv, d->N, d->K));
        m->di_q = carve(cv, mul3(cv, d->N, d->HI, d->dI));
        m->di_k = carve(cv, mul2(cv, d->N, d->dI));
        m->di_w = carve(cv, mul2(cv, d->N, d->HI));
        int64_t w = d->dc > d->dn ? d->dc : d->dn;
        w = w > d->dv ? w : d->dv;
        m->abs_a = carve(cv, mul2(cv, d->N, w));
        m->abs_b = carve(cv, mul2(cv, d->N, w));
        m->abs_c = carve(cv, mul2(cv, d->N, w));
        m->dqm = carve(cv, mul3(cv, d->N, d->H, d->dm));
        m->dkvm = carve(cv, mul2(cv, d->N, d->dm));
        m->dom = carve(cv, mul3(cv, d->N, d->H, d->dc));
        DsaSparseAttnShape ss = sparse_shape(m, d);
        if (fits(cv, d->N, max3(d->H, d->K, 64), 4))
            m->sparse_scratch = carve(cv, (m->be ? m->be->sparse_attention_scratch_bytes(&ss) : 0) / 4 + 1);
    }
}

int64_t dsa_model_workspace_bytes(const DsaModelConfig *cfg, int64_t batch, int64_t seq_len, int64_t topk) {
    int64_t tokens = 0, bytes = 0;
    if (!dsa_mul_i64(batch, seq_len, &tokens)) return -1;
    DsaModel tmp;
    memset(&tmp, 0, sizeof tmp);
    tmp.cfg = *cfg;
    tmp.be = dsa_backend_cpu();
    tmp.batch = batch, tmp.seq_len = seq_len;
    tmp.ws_topk = topk;
    Dims d = dims_of(&tmp);
    Carver cv = {0};
    layout_workspace(&tmp, &cv, &d);
    return !cv.overflow && dsa_mul_i64(cv.used, (int64_t)sizeof(float), &bytes) ? bytes : -1;
}

DsaStatus dsa_model_reserve(DsaModel *m, int64_t batch, int64_t seq_len) {
    const int64_t topk = m->cfg.has_indexer ? m->mode.topk : 0;
    if (m->arena && m->batch == batch && m->seq_len == seq_len && m->ws_topk == topk) return DSA_OK;
    int64_t tokens = 0;
    if (!dsa_mul_i64(batch, seq_len, &tokens))
        DSA_FAIL(DSA_ERR_RANGE, "activations for %lld x %lld tokens: the token count overflows 64 bits",
                 (long long)batch, (long long)seq_len);
    free_workspace(m);
    m->batch = batch, m->seq_len = seq_len, m->ws_topk = topk;
    Dims d = dims_of(m);
    Carver cv = {0};
    layout_workspace(m, &cv, &d);
    if (cv.overflow || cv.used > (int64_t)(SIZE_MAX / sizeof(float)))
        DSA_FAIL(DSA_ERR_RANGE, "activations for %lld x %lld tokens: the workspace size overflows 64-bit arithmetic",
                 (long long)batch, (long long)seq_len);
    m->acts = dsa_calloc((size_t)d.nL, sizeof *m->acts);
    m->arena = dsa_malloc((size_t)cv.used * sizeof(float));
    if (!m->acts || !m->arena) {
        size_t want = (size_t)cv.used * sizeof(float);
        dsa_free(m->acts, sizeof *m->acts * (size_t)d.nL);
        m->acts = NULL;
        m->arena = NULL;
        DSA_FAIL(DSA_ERR_NOMEM, "activations for %lld x %lld tokens: %.2f GiB", (long long)batch,
                 (long long)seq_len, (double)want / (1 << 30));
    }
    m->arena_floats = cv.used;
    cv = (Carver){.base = m->arena};
    layout_workspace(m, &cv, &d);
    /* RoPE tables for positions 0..L-1 (DSA-SPEC §4.3). */
    const DsaRopeScaling *rs = &m->cfg.rope_scaling;
    float freq[512];
    DSA_ASSERT(d.dr / 2 <= 512);
    dsa_rope_frequencies(freq, d.dr, m->cfg.rope_theta, rs->type, rs->factor, rs->original_max_position_embeddings,
                         rs->beta_fast, rs->beta_slow);
    dsa_rope_tables(m->rope_cos, m->rope_sin, freq, d.L, d.dr);
    return DSA_OK;
}

/* ---- DSA parts of the forward --------------------------------------------------------- */

static DsaIndexerWeights indexer_weights(const DsaModel *m, int l) {
    return (DsaIndexerWeights){.wq_b = W(m, l, DSA_W_IDX_WQ_B), .wk = W(m, l, DSA_W_IDX_WK),
                               .k_norm_weight = W(m, l, DSA_W_IDX_K_NORM),
                               .k_norm_bias = W(m, l, DSA_W_IDX_K_NORM_BIAS),
                               .weights_proj = W(m, l, DSA_W_IDX_WEIGHTS_PROJ)};
}

/* The indexer's forward and top-k of layer l (DSA-SPEC §5), from the detached x and cQ. */
static DsaStatus indexer_select(DsaModel *m, int l, const Dims *d) {
    DsaLayerActs *a = &m->acts[l];
    DsaIndexerShape is = indexer_shape(m, d);
    DsaIndexerWeights wt = indexer_weights(m, l);
    dsa_indexer_forward(&m->iacts, a->x, d->dq ? a->cq : a->x, &wt, &is, m->rope_cos, m->rope_sin, m->be);
    return dsa_indexer_topk(a->idx, m->idx_scores, &m->iacts, &is);
}

/* The indexer loss of layer l (stage 1: dense, §6.2; stage 2: over S_t, §6.3) and, for
 * the indexer tensors that require a gradient, its backward (§7). The targets are read
 * from the attention's saved state only: nothing flows back into the main model. */
static DsaStatus indexer_train(DsaModel *m, int l, const Dims *d, bool sparse) {
    DsaLayerActs *a = &m->acts[l];
    DsaIndexerShape is = indexer_shape(m, d);
    DsaIndexerWeights wt = indexer_weights(m, l);
    DsaIndexerGrads g = {.wq_b = G(m, l, DSA_W_IDX_WQ_B), .wk = G(m, l, DSA_W_IDX_WK),
                         .k_norm_weight = G(m, l, DSA_W_IDX_K_NORM), .k_norm_bias = G(m, l, DSA_W_IDX_K_NORM_BIAS),
                         .weights_proj = G(m, l, DSA_W_IDX_WEIGHTS_PROJ)};
    const bool grads = g.wq_b || g.wk || g.k_norm_weight || g.k_norm_bias || g.weights_proj;
    const float gs = grads ? m->mode.indexer_grad_scale : 0.0f;
    const float tau = (float)dsa_model_softmax_scale(&m->cfg);
    if (sparse) {
        DsaSparseTarget tg = {.q = a->qm, .kv = a->kvm, .lse = a->lse, .heads = d->H, .qk_dim = d->dm, .scale = tau};
        DSA_TRY(dsa_indexer_kl_sparse(&m->idx_stats[l], m->di_q, m->di_k, m->di_w, &m->iacts, &is, &tg, a->idx,
                                      m->idx_scores, gs));
        dsa_indexer_sparse_recall(&m->idx_stats[l], &is, &tg, a->idx, m->mode.recall_rows);
    } else {
        DsaDenseTarget tg = {.q = a->q, .k = a->k, .lse = a->lse, .heads = d->H, .qk_dim = d->dqk, .scale = tau};
        DSA_TRY(dsa_indexer_kl_dense(&m->idx_stats[l], m->di_q, m->di_k, m->di_w, &m->iacts, &is, &tg, a->idx,
                                     m->idx_scores, gs));
    }
    if (gs != 0.0f)
        dsa_indexer_backward(&g, m->di_q, m->di_k, m->di_w, &m->iacts, a->x, d->dq ? a->cq : a->x, &wt, &is,
                             m->rope_cos, m->rope_sin, m->be);
    return DSA_OK;
}

/* Sparse MLA attention of layer l in the absorbed form (DSA-SPEC §4.2):
 *   Q_t,h = [W_UK[h]ᵀ qN_t,h ‖ qR_t,h],  K_s = [c_s ‖ kR_s],  ō = Σ_{s∈S_t} P c_s,
 *   o_t,h = W_UV[h] ō_t,h.
 * W_UK[h] and W_UV[h] are the d_n × d_c and d_v × d_c row blocks of kv_b_proj (§3.1). */
static void attention_sparse_forward(DsaModel *m, int l, const Dims *d) {
    const DsaBackend *be = m->be;
    DsaLayerActs *a = &m->acts[l];
    const int64_t N = d->N, H = d->H, kv_w = d->dn + d->dv, kva_w = d->dc + d->dr;
    const float *wkvb = W(m, l, DSA_W_KV_B);
    for (int64_t h = 0; h < H; h++) {
        const float *w_uk = wkvb + h * kv_w * d->dc;
        be->copy_2d(m->abs_a, d->dn, a->q + h * d->dqk, H * d->dqk, N, d->dn, false);
        be->linear_backward(m->abs_b, NULL, m->abs_a, NULL, w_uk, N, d->dc, d->dn); /* qN · W_UK */
        be->copy_2d(a->qm + h * d->dm, H * d->dm, m->abs_b, d->dc, N, d->dc, false);
        be->copy_2d(a->qm + h * d->dm + d->dc, H * d->dm, a->q + h * d->dqk + d->dn, H * d->dqk, N, d->dr, false);
    }
    be->copy_2d(a->kvm, d->dm, a->c, d->dc, N, d->dc, false);
    be->copy_2d(a->kvm + d->dc, d->dm, m->kva + d->dc, kva_w, N, d->dr, false);
    DsaSparseAttnShape ss = sparse_shape(m, d);
    be->sparse_attention_forward(a->om, a->lse, a->qm, a->kvm, a->idx, &ss);
    for (int64_t h = 0; h < H; h++) {
        const float *w_uv = wkvb + (h * kv_w + d->dn) * d->dc;
        be->copy_2d(m->abs_a, d->dc, a->om + h * d->dc, H * d->dc, N, d->dc, false);
        be->linear_forward(m->abs_b, m->abs_a, w_uv, N, d->dc, d->dv);
        be->copy_2d(a->o + h * d->dv, H * d->dv, m->abs_b, d->dv, N, d->dv, false);
    }
}

/* ---- MoE FFN ------------------------------------------------------------------------ */

static DsaMoeWeights moe_weights(const DsaModel *m, int l) {
    const int64_t E = m->cfg.n_routed_experts;
    float *const *ew = m->moe_w + (size_t)l * 3 * (size_t)E;
    return (DsaMoeWeights){.router = W(m, l, DSA_W_ROUTER), .router_bias = W(m, l, DSA_W_ROUTER_BIAS),
                           .gate = (const float *const *)ew, .up = (const float *const *)(ew + E),
                           .down = (const float *const *)(ew + 2 * E), .shared_gate = W(m, l, DSA_W_SHARED_GATE),
                           .shared_up = W(m, l, DSA_W_SHARED_UP), .shared_down = W(m, l, DSA_W_SHARED_DOWN)};
}

/* Gradient pointers of layer l's MoE tensors (NULL where not required); the expert
 * arrays live in m->moe_g, valid until the next call. */
static DsaMoeGrads moe_grads(DsaModel *m, int l) {
    const int64_t E = m->cfg.n_routed_experts;
    const int *idx = m->moe_idx + (size_t)l * 3 * (size_t)E;
    for (int64_t i = 0; i < 3 * E; i++) {
        const int t = idx[i];
        m->moe_g[i] = t >= 0 && m->requires_grad[t] ? m->grads + m->table.info[t].offset : NULL;
    }
    return (DsaMoeGrads){.router = G(m, l, DSA_W_ROUTER), .gate = m->moe_g, .up = m->moe_g + E,
                         .down = m->moe_g + 2 * E, .shared_gate = G(m, l, DSA_W_SHARED_GATE),
                         .shared_up = G(m, l, DSA_W_SHARED_UP), .shared_down = G(m, l, DSA_W_SHARED_DOWN)};
}

/* ---- forward ------------------------------------------------------------------------ */

static DsaStatus layer_forward(DsaModel *m, int l, const Dims *d) {
    const DsaBackend *be = m->be;
    DsaLayerActs *a = &m->acts[l];
    const float eps = (float)m->cfg.rms_norm_eps;
    const int64_t N = d->N, H = d->H;

    be->rmsnorm_forward(a->x, a->rstd1, a->h_in, W(m, l, DSA_W_INPUT_NORM), N, d->D, eps);
    /* queries (steps 2-4) */
    if (d->dq) {
        be->linear_forward(a->qa, a->x, W(m, l, DSA_W_Q_A), N, d->D, d->dq);
        be->rmsnorm_forward(a->cq, a->rstd_q, a->qa, W(m, l, DSA_W_Q_A_NORM), N, d->dq, eps);
        be->linear_forward(a->q, a->cq, W(m, l, DSA_W_Q_B), N, d->dq, H * d->dqk);
    } else {
        be->linear_forward(a->q, a->x, W(m, l, DSA_W_Q), N, d->D, H * d->dqk);
    }
    be->rope_forward(a->q + d->dn, m->rope_cos, m->rope_sin, N, d->L, H, d->dr, H * d->dqk, d->dqk);
    /* keys and values (steps 5-6, §4.1) */
    const int64_t kva_w = d->dc + d->dr, kv_w = d->dn + d->dv;
    be->linear_forward(m->kva, a->x, W(m, l, DSA_W_KV_A), N, d->D, kva_w);
    be->copy_2d(a->ckv, d->dc, m->kva, kva_w, N, d->dc, false);
    be->rmsnorm_forward(a->c, a->rstd_kv, a->ckv, W(m, l, DSA_W_KV_A_NORM), N, d->dc, eps);
    be->rope_forward(m->kva + d->dc, m->rope_cos, m->rope_sin, N, d->L, 1, d->dr, kva_w, d->dr);
    const bool sparse = m->fwd_sparse; /* L <= k: every causal key is selected, dense is the same */
    if (d->K && (m->mode.sparse || m->mode.indexer_loss)) DSA_TRY(indexer_select(m, l, d));
    if (sparse) {
        attention_sparse_forward(m, l, d);
    } else {
        be->linear_forward(m->kv, a->c, W(m, l, DSA_W_KV_B), N, d->dc, H * kv_w);
        for (int64_t h = 0; h < H; h++) {
            be->copy_2d(a->k + h * d->dqk, H * d->dqk, m->kv + h * kv_w, H * kv_w, N, d->dn, false);
            be->copy_2d(a->k + h * d->dqk + d->dn, H * d->dqk, m->kva + d->dc, kva_w, N, d->dr, false);
            be->copy_2d(a->v + h * d->dv, H * d->dv, m->kv + h * kv_w + d->dn, H * kv_w, N, d->dv, false);
        }
        /* attention (step 7, MHA form §4.1) */
        DsaAttnShape shape = {.batch = d->B, .seq_len = d->L, .heads = H, .qk_dim = d->dqk, .v_dim = d->dv,
                              .scale = (float)dsa_model_softmax_scale(&m->cfg)};
        be->attention_forward(a->o, a->lse, a->q, a->k, a->v, &shape);
    }
    if (d->K && m->mode.indexer_loss) DSA_TRY(indexer_train(m, l, d, sparse));
    /* output projection (step 8) */
    be->linear_forward(a->h_mid, a->o, W(m, l, DSA_W_O), N, H * d->dv, d->D);
    be->add(a->h_mid, a->h_in, N * d->D);
    /* FFN */
    float *h_out = l + 1 < d->nL ? m->acts[l + 1].h_in : m->h_final;
    be->rmsnorm_forward(a->x2, a->rstd2, a->h_mid, W(m, l, DSA_W_POST_NORM), N, d->D, eps);
    if (is_moe(m, l)) {
        DsaMoeShape ms = dsa_moe_shape(&m->cfg, N);
        DsaMoeWeights mw = moe_weights(m, l);
        dsa_moe_forward(h_out, &a->moe, a->x2, &mw, &ms, &m->moe_scr, be);
    } else {
        be->linear_forward(a->gate, a->x2, W(m, l, DSA_W_GATE), N, d->D, d->I);
        be->linear_forward(a->up, a->x2, W(m, l, DSA_W_UP), N, d->D, d->I);
        be->swiglu_forward(a->act, a->gate, a->up, N * d->I);
        be->linear_forward(h_out, a->act, W(m, l, DSA_W_DOWN), N, d->I, d->D);
    }
    be->add(h_out, a->h_mid, N * d->D);
    return DSA_OK;
}

DsaStatus dsa_model_forward(DsaModel *m, const int32_t *inputs, const int32_t *targets, int64_t batch,
                            int64_t seq_len, double *loss_sum, int64_t *count) {
    DSA_TRY(dsa_model_reserve(m, batch, seq_len));
    Dims d = dims_of(m);
    const DsaBackend *be = m->be;
    memcpy(m->inputs, inputs, (size_t)d.N * sizeof(int32_t));
    memcpy(m->targets, targets, (size_t)d.N * sizeof(int32_t));
    int64_t counted = 0;
    for (int64_t i = 0; i < d.N; i++) {
        if (inputs[i] < 0 || inputs[i] >= d.V || targets[i] >= d.V)
            DSA_FAIL(DSA_ERR_RANGE, "token %lld of the micro-batch is %d (input) / %d (target): outside the vocabulary "
                     "of %lld", (long long)i, inputs[i], targets[i], (long long)d.V);
        counted += targets[i] >= 0;
    }
    float *h0 = d.nL ? m->acts[0].h_in : m->h_final;
    be->embedding_forward(h0, m->inputs, W(m, -1, DSA_W_EMBED), d.N, d.D);
    m->fwd_sparse = m->mode.sparse && d.K && (d.L > d.K || m->mode.mqa_always);
    for (int l = 0; l < (int)d.nL; l++) DSA_TRY(layer_forward(m, l, &d));
    be->rmsnorm_forward(m->xf, m->rstdf, m->h_final, W(m, -1, DSA_W_FINAL_NORM), d.N, d.D,
                        (float)m->cfg.rms_norm_eps);
    be->linear_forward(m->logits, m->xf, W(m, -1, DSA_W_LM_HEAD), d.N, d.D, d.V);
    *loss_sum = be->cross_entropy_forward(m->losses, m->ce_lse, m->logits, m->targets, d.N, d.V);
    *count = counted;
    m->count = counted;
    m->have_forward = true;
    return DSA_OK;
}

/* Dense MHA attention backward (§4.1): ∂q into m->dq, ∂c into m->dc (through W_UKV,
 * whose gradient accumulates), the head-summed ∂kR into m->dkr. */
static void attention_dense_backward(DsaModel *m, int l, const Dims *d) {
    const DsaBackend *be = m->be;
    DsaLayerActs *a = &m->acts[l];
    const int64_t N = d->N, H = d->H, kv_w = d->dn + d->dv;
    DsaAttnShape shape = {.batch = d->B, .seq_len = d->L, .heads = H, .qk_dim = d->dqk, .v_dim = d->dv,
                          .scale = (float)dsa_model_softmax_scale(&m->cfg)};
    be->attention_backward(m->dq, m->dk, m->dv, m->do_, a->o, a->lse, a->q, a->k, a->v, &shape, m->attn_scratch);
    /* gather per-head grads into [dkN ‖ dv] rows and the shared dkR */
    for (int64_t h = 0; h < H; h++) {
        be->copy_2d(m->dkv + h * kv_w, H * kv_w, m->dk + h * d->dqk, H * d->dqk, N, d->dn, false);
        be->copy_2d(m->dkv + h * kv_w + d->dn, H * kv_w, m->dv + h * d->dv, H * d->dv, N, d->dv, false);
        be->copy_2d(m->dkr, d->dr, m->dk + h * d->dqk + d->dn, H * d->dqk, N, d->dr, h > 0);
    }
    be->linear_backward(m->dc, G(m, l, DSA_W_KV_B), m->dkv, a->c, W(m, l, DSA_W_KV_B), N, d->dc, H * kv_w);
}

/* Sparse MQA attention backward (§4.2), the transpose of attention_sparse_forward:
 * through W_UV (∂ō, ∂W_UV), the sparse core (∂Q, ∂K), then W_UK (∂qN, ∂W_UK); ∂c is the
 * latent part of ∂K, ∂kR its rotary part. */
static void attention_sparse_backward(DsaModel *m, int l, const Dims *d) {
    const DsaBackend *be = m->be;
    DsaLayerActs *a = &m->acts[l];
    const int64_t N = d->N, H = d->H, kv_w = d->dn + d->dv;
    const float *wkvb = W(m, l, DSA_W_KV_B);
    float *gkvb = G(m, l, DSA_W_KV_B);
    for (int64_t h = 0; h < H; h++) {
        const int64_t uv = (h * kv_w + d->dn) * d->dc;
        be->copy_2d(m->abs_a, d->dv, m->do_ + h * d->dv, H * d->dv, N, d->dv, false);
        be->copy_2d(m->abs_b, d->dc, a->om + h * d->dc, H * d->dc, N, d->dc, false);
        /* o = ō W_UVᵀ: ∂ō = ∂o W_UV into dom, ∂W_UV += ∂oᵀ ō */
        be->linear_backward(m->abs_c, gkvb ? gkvb + uv : NULL, m->abs_a, m->abs_b, wkvb + uv, N, d->dc, d->dv);
        be->copy_2d(m->dom + h * d->dc, H * d->dc, m->abs_c, d->dc, N, d->dc, false);
    }
    DsaSparseAttnShape ss = sparse_shape(m, d);
    be->sparse_attention_backward(m->dqm, m->dkvm, m->dom, a->om, a->lse, a->qm, a->kvm, a->idx, &ss,
                                  m->sparse_scratch);
    for (int64_t h = 0; h < H; h++) {
        const int64_t uk = h * kv_w * d->dc;
        /* q̄ = qN W_UK: ∂qN = ∂q̄ W_UKᵀ, ∂W_UK += qNᵀ ∂q̄ */
        be->copy_2d(m->abs_a, d->dc, m->dqm + h * d->dm, H * d->dm, N, d->dc, false);
        be->linear_forward(m->abs_b, m->abs_a, wkvb + uk, N, d->dc, d->dn);
        be->copy_2d(m->dq + h * d->dqk, H * d->dqk, m->abs_b, d->dn, N, d->dn, false);
        be->copy_2d(m->dq + h * d->dqk + d->dn, H * d->dqk, m->dqm + h * d->dm + d->dc, H * d->dm, N, d->dr, false);
        if (gkvb) {
            be->copy_2d(m->abs_b, d->dn, a->q + h * d->dqk, H * d->dqk, N, d->dn, false);
            be->linear_backward(NULL, gkvb + uk, m->abs_b, m->abs_a, wkvb + uk, N, d->dc, d->dn);
        }
    }
    be->copy_2d(m->dc, d->dc, m->dkvm, d->dm, N, d->dc, false);
    be->copy_2d(m->dkr, d->dr, m->dkvm + d->dc, d->dm, N, d->dr, false);
}

/* ---- backward ----------------------------------------------------------------------- */

/* On entry m->dh holds ∂loss/∂(layer output); on exit ∂loss/∂(layer input). */
static void layer_backward(DsaModel *m, int l, const Dims *d) {
    const DsaBackend *be = m->be;
    DsaLayerActs *a = &m->acts[l];
    const int64_t N = d->N, H = d->H, D = d->D;
    const int64_t kva_w = d->dc + d->dr;

    /* FFN branch: out = h_mid + down(act), or h_mid + MoE(x2) */
    if (is_moe(m, l)) {
        DsaMoeShape ms = dsa_moe_shape(&m->cfg, N);
        DsaMoeWeights mw = moe_weights(m, l);
        DsaMoeGrads mg = moe_grads(m, l);
        dsa_moe_backward(m->dx, &mg, m->dh, &a->moe, a->x2, &mw, &ms, &m->moe_scr, be);
    } else {
        be->linear_backward(m->dact, G(m, l, DSA_W_DOWN), m->dh, a->act, W(m, l, DSA_W_DOWN), N, d->I, D);
        be->swiglu_backward(m->dgate, m->dup, m->dact, a->gate, a->up, N * d->I);
        be->linear_backward(m->dx, G(m, l, DSA_W_GATE), m->dgate, a->x2, W(m, l, DSA_W_GATE), N, D, d->I);
        be->linear_backward(m->dtmp, G(m, l, DSA_W_UP), m->dup, a->x2, W(m, l, DSA_W_UP), N, D, d->I);
        be->add(m->dx, m->dtmp, N * D);
    }
    be->rmsnorm_backward(m->dtmp, G(m, l, DSA_W_POST_NORM), m->dx, a->h_mid, W(m, l, DSA_W_POST_NORM), a->rstd2, N,
                         D);
    be->add(m->dh, m->dtmp, N * D); /* dh = ∂/∂h_mid */

    /* attention branch: h_mid = h_in + W_O o */
    be->linear_backward(m->do_, G(m, l, DSA_W_O), m->dh, a->o, W(m, l, DSA_W_O), N, H * d->dv, D);
    /* attention core: ∂q (m->dq), ∂c (m->dc) and the shared ∂kR (m->dkr) */
    if (m->fwd_sparse)
        attention_sparse_backward(m, l, d);
    else
        attention_dense_backward(m, l, d);

    /* query path: rotate the gradient back, then through W_UQ, the q norm and W_DQ */
    be->rope_backward(m->dq + d->dn, m->rope_cos, m->rope_sin, N, d->L, H, d->dr, H * d->dqk, d->dqk);
    if (d->dq) {
        be->linear_backward(m->dcq, G(m, l, DSA_W_Q_B), m->dq, a->cq, W(m, l, DSA_W_Q_B), N, d->dq, H * d->dqk);
        be->rmsnorm_backward(m->dqa, G(m, l, DSA_W_Q_A_NORM), m->dcq, a->qa, W(m, l, DSA_W_Q_A_NORM), a->rstd_q, N,
                             d->dq);
        be->linear_backward(m->dx, G(m, l, DSA_W_Q_A), m->dqa, a->x, W(m, l, DSA_W_Q_A), N, D, d->dq);
    } else {
        be->linear_backward(m->dx, G(m, l, DSA_W_Q), m->dq, a->x, W(m, l, DSA_W_Q), N, D, H * d->dqk);
    }

    be->rmsnorm_backward(m->dtmp, G(m, l, DSA_W_KV_A_NORM), m->dc, a->ckv, W(m, l, DSA_W_KV_A_NORM), a->rstd_kv, N,
                         d->dc);
    be->copy_2d(m->dkva, kva_w, m->dtmp, d->dc, N, d->dc, false);
    be->rope_backward(m->dkr, m->rope_cos, m->rope_sin, N, d->L, 1, d->dr, d->dr, d->dr);
    be->copy_2d(m->dkva + d->dc, kva_w, m->dkr, d->dr, N, d->dr, false);
    be->linear_backward(m->dtmp, G(m, l, DSA_W_KV_A), m->dkva, a->x, W(m, l, DSA_W_KV_A), N, D, kva_w);
    be->add(m->dx, m->dtmp, N * D);

    /* input norm; the residual passes dh through unchanged */
    be->rmsnorm_backward(m->dtmp, G(m, l, DSA_W_INPUT_NORM), m->dx, a->h_in, W(m, l, DSA_W_INPUT_NORM), a->rstd1, N,
                         D);
    be->add(m->dh, m->dtmp, N * D);
}

void dsa_model_backward(DsaModel *m, float loss_scale) {
    DSA_ASSERT(m->have_forward);
    Dims d = dims_of(m);
    const DsaBackend *be = m->be;
    float *dlogits = m->logits; /* in place */
    be->cross_entropy_backward(dlogits, m->logits, m->ce_lse, m->targets, loss_scale, d.N, d.V);
    be->linear_backward(m->dx, G(m, -1, DSA_W_LM_HEAD), dlogits, m->xf, W(m, -1, DSA_W_LM_HEAD), d.N, d.D, d.V);
    be->rmsnorm_backward(m->dh, G(m, -1, DSA_W_FINAL_NORM), m->dx, m->h_final, W(m, -1, DSA_W_FINAL_NORM), m->rstdf,
                         d.N, d.D);
    for (int l = (int)d.nL - 1; l >= 0; l--) layer_backward(m, l, &d);
    float *dembed = G(m, -1, DSA_W_EMBED);
    if (dembed) be->embedding_backward(dembed, m->dh, m->inputs, d.N, d.D);
    m->have_forward = false; /* the logits now hold gradients */
}

void dsa_model_zero_grad(DsaModel *m) { memset(m->grads, 0, (size_t)m->table.total * sizeof(float)); }

double dsa_model_train_flops_per_token(const DsaModelConfig *c, int64_t seq_len) {
    const double D = (double)c->hidden_size, H = (double)c->num_attention_heads;
    const double dqk = (double)(c->qk_nope_head_dim + c->qk_rope_head_dim), dv = (double)c->v_head_dim;
    const double dc = (double)c->kv_lora_rank, dr = (double)c->qk_rope_head_dim;
    double q = c->has_q_lora ? (double)c->q_lora_rank * (D + H * dqk) : D * H * dqk;
    double attn_proj = q + D * (dc + dr) + dc * H * (c->qk_nope_head_dim + dv) + H * dv * D;
    double matmul = D * (double)c->vocab_size; /* LM head */
    for (int64_t l = 0; l < c->num_hidden_layers; l++) {
        /* MoE: the router, the K routed experts a token uses and the shared experts */
        double ffn = dsa_model_layer_is_moe(c, l)
                         ? D * (double)c->n_routed_experts + 3.0 * D * (double)c->moe_intermediate_size *
                                                                 (double)(c->num_experts_per_tok + c->n_shared_experts)
                         : 3.0 * D * (double)c->intermediate_size;
        matmul += attn_proj + ffn;
    }
    /* causal attention: (L + 1) / 2 keys per query on average, QK and PV per head */
    double keys = ((double)seq_len + 1) / 2;
    double attn = (double)c->num_hidden_layers * H * (dqk + dv) * keys;
    return 6.0 * (matmul + attn);
}
