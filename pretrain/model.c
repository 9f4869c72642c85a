/* model.c: the DeepSeek-V3 decoder (model.h): its parameters and gradients, the
 * activation workspace, and the whole-model forward and backward (embedding, the layers
 * of model_layer.c, final norm, LM head, cross-entropy) through the backend table.
 * Per layer (model_layer.c; DSA-SPEC §4 steps 1-8, MHA form §4.1):
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
#include "pretrain/host_view.h"
#include "pretrain/model_internal.h"

DsaStatus dsa_model_init(DsaModel *m, const DsaModelConfig *cfg, const DsaBackend *be) {
    memset(m, 0, sizeof *m);
    m->cfg = *cfg;
    m->be = be;
    if (cfg->has_moe && cfg->n_routed_experts > 4096)
        DSA_FAIL(DSA_ERR_CONFIG, "model.n_routed_experts = %lld: at most 4096 routed experts are supported",
                 (long long)cfg->n_routed_experts);
    if (cfg->has_moe && !be->moe)
        DSA_FAIL(DSA_ERR_DEVICE, "backend \"%s\" has no MoE entries (kernels/moe_ops.h), and the model has %lld routed "
                 "experts: run it on \"cpu\"", be->name, (long long)cfg->n_routed_experts);
    if (cfg->has_indexer) DSA_TRY(dsa_indexer_ops_get(be, &m->ix));
    DSA_TRY(dsa_param_table_build(&m->table, cfg));
    size_t bytes = (size_t)m->table.total * sizeof(float);
    int rows = (int)cfg->num_hidden_layers + 1;
    /* parameters and gradients are backend memory (zero-filled): the host reaches them only
     * through the memory entries (pretrain/host_view.h) */
    m->params = be->alloc(bytes);
    m->grads = be->alloc(bytes);
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
    if (m->arena) m->be->release(m->arena, (size_t)m->arena_floats * sizeof(float));
    dsa_free(m->acts, sizeof *m->acts * (size_t)m->cfg.num_hidden_layers);
    m->arena = NULL, m->acts = NULL, m->arena_floats = 0;
    m->batch = m->seq_len = m->ws_topk = 0;
    m->have_forward = false;
}

void dsa_model_free(DsaModel *m) {
    free_workspace(m);
    size_t rows = (size_t)m->cfg.num_hidden_layers + 1;
    if (m->params) m->be->release(m->params, (size_t)m->table.total * sizeof(float));
    if (m->grads) m->be->release(m->grads, (size_t)m->table.total * sizeof(float));
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

DsaStatus dsa_model_init_weights(DsaModel *m, uint64_t seed) {
    DsaHostView v;
    DSA_TRY(dsa_host_view_open(&v, m->be, m->params, (size_t)m->table.total * sizeof(float), "initial weights"));
    dsa_param_init(&m->table, v.host, seed, m->cfg.initializer_range);
    dsa_host_view_commit(&v, m->be, m->params);
    dsa_host_view_close(&v);
    return DSA_OK;
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
    m->arena = m->be->alloc((size_t)cv.used * sizeof(float));
    if (!m->acts || !m->arena) {
        size_t want = (size_t)cv.used * sizeof(float);
        dsa_free(m->acts, sizeof *m->acts * (size_t)d.nL);
        if (m->arena) m->be->release(m->arena, want);
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
    const size_t half = (size_t)(d.L * d.dr / 2) * sizeof(float);
    DsaHostView vc, vs;
    DsaStatus st = dsa_host_view_open(&vc, m->be, m->rope_cos, half, "RoPE tables");
    if (st == DSA_OK && (st = dsa_host_view_open(&vs, m->be, m->rope_sin, half, "RoPE tables")) != DSA_OK)
        dsa_host_view_close(&vc);
    if (st != DSA_OK) {
        free_workspace(m);
        return st;
    }
    dsa_rope_tables(vc.host, vs.host, freq, d.L, d.dr);
    dsa_host_view_commit(&vc, m->be, m->rope_cos);
    dsa_host_view_commit(&vs, m->be, m->rope_sin);
    dsa_host_view_close(&vc);
    dsa_host_view_close(&vs);
    return DSA_OK;
}

/* ---- forward and backward of the whole model ----------------------------------------- */

static DsaStatus forward_resident(DsaModel *m, int64_t counted, double *loss_sum, int64_t *count);

DsaStatus dsa_model_check_tokens(const DsaModel *m, const int32_t *inputs, const int32_t *targets, int64_t n,
                                 int64_t *count) {
    const int64_t V = m->cfg.vocab_size;
    int64_t counted = 0;
    for (int64_t i = 0; i < n; i++) {
        if (inputs[i] < 0 || inputs[i] >= V || targets[i] >= V)
            DSA_FAIL(DSA_ERR_RANGE, "token %lld of the micro-batch is %d (input) / %d (target): outside the vocabulary "
                     "of %lld", (long long)i, inputs[i], targets[i], (long long)V);
        counted += targets[i] >= 0;
    }
    *count = counted;
    return DSA_OK;
}

DsaStatus dsa_model_forward(DsaModel *m, const int32_t *inputs, const int32_t *targets, int64_t batch,
                            int64_t seq_len, double *loss_sum, int64_t *count) {
    int64_t counted = 0;
    DSA_TRY(dsa_model_reserve(m, batch, seq_len));
    DSA_TRY(dsa_model_check_tokens(m, inputs, targets, batch * seq_len, &counted));
    m->be->upload(m->inputs, inputs, (size_t)(batch * seq_len) * sizeof(int32_t));
    m->be->upload(m->targets, targets, (size_t)(batch * seq_len) * sizeof(int32_t));
    return forward_resident(m, counted, loss_sum, count);
}

DsaStatus dsa_model_forward_device(DsaModel *m, const int32_t *inputs, const int32_t *targets, int64_t batch,
                                   int64_t seq_len, int64_t counted, double *loss_sum, int64_t *count) {
    DSA_TRY(dsa_model_reserve(m, batch, seq_len));
    m->be->copy(m->inputs, inputs, (size_t)(batch * seq_len) * sizeof(int32_t));
    m->be->copy(m->targets, targets, (size_t)(batch * seq_len) * sizeof(int32_t));
    return forward_resident(m, counted, loss_sum, count);
}

/* The forward of the tokens already in m->inputs / m->targets. */
static DsaStatus forward_resident(DsaModel *m, int64_t counted, double *loss_sum, int64_t *count) {
    Dims d = dims_of(m);
    const DsaBackend *be = m->be;
    float *h0 = d.nL ? m->acts[0].h_in : m->h_final;
    be->embedding_forward(h0, m->inputs, W(m, -1, DSA_W_EMBED), d.N, d.D);
    m->fwd_sparse = m->mode.sparse && d.K && (d.L > d.K || m->mode.mqa_always);
    for (int l = 0; l < (int)d.nL; l++) DSA_TRY(dsa_model_layer_forward(m, l, &d));
    be->rmsnorm_forward(m->xf, m->rstdf, m->h_final, W(m, -1, DSA_W_FINAL_NORM), d.N, d.D,
                        (float)m->cfg.rms_norm_eps);
    be->linear_forward(m->logits, m->xf, W(m, -1, DSA_W_LM_HEAD), d.N, d.D, d.V);
    *loss_sum = be->cross_entropy_forward(m->losses, m->ce_lse, m->logits, m->targets, d.N, d.V);
    *count = counted;
    m->count = counted;
    m->have_forward = true;
    return DSA_OK;
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
    for (int l = (int)d.nL - 1; l >= 0; l--) dsa_model_layer_backward(m, l, &d);
    float *dembed = G(m, -1, DSA_W_EMBED);
    if (dembed) be->embedding_backward(dembed, m->dh, m->inputs, d.N, d.D);
    m->have_forward = false; /* the logits now hold gradients */
}

void dsa_model_zero_grad(DsaModel *m) { m->be->fill_zero(m->grads, (size_t)m->table.total * sizeof(float)); }

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
