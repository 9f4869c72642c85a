/* model_layer.c: one layer of the DeepSeek-V3 decoder (model.h, model_internal.h),
 * forward and backward through the backend table: the MLA attention block (dense MHA
 * form, DSA-SPEC §4.1, or sparse MQA over the indexer's top-k, §4.2), the lightning
 * indexer's selection and loss (§5, §6; through the backend's DsaIndexerOps, m->ix), and the FFN (dense SwiGLU, or the MoE of
 * pretrain/moe.h). model.c runs the layers in order.
 */
#include "pretrain/model_internal.h"

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
    m->ix->forward(&m->iacts, a->x, d->dq ? a->cq : a->x, &wt, &is, m->rope_cos, m->rope_sin, m->be);
    return m->ix->topk(a->idx, m->idx_scores, &m->iacts, &is);
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
        DSA_TRY(m->ix->kl_sparse(&m->idx_stats[l], m->di_q, m->di_k, m->di_w, &m->iacts, &is, &tg, a->idx,
                                      m->idx_scores, gs));
        m->ix->sparse_recall(&m->idx_stats[l], &is, &tg, a->idx, m->mode.recall_rows);
    } else {
        DsaDenseTarget tg = {.q = a->q, .k = a->k, .lse = a->lse, .heads = d->H, .qk_dim = d->dqk, .scale = tau};
        DSA_TRY(m->ix->kl_dense(&m->idx_stats[l], m->di_q, m->di_k, m->di_w, &m->iacts, &is, &tg, a->idx,
                                     m->idx_scores, gs));
    }
    if (gs != 0.0f)
        m->ix->backward(&g, m->di_q, m->di_k, m->di_w, &m->iacts, a->x, d->dq ? a->cq : a->x, &wt, &is,
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

DsaStatus dsa_model_layer_forward(DsaModel *m, int l, const Dims *d) {
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

/* ---- backward ----------------------------------------------------------------------- */

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

/* On entry m->dh holds ∂loss/∂(layer output); on exit ∂loss/∂(layer input). */
void dsa_model_layer_backward(DsaModel *m, int l, const Dims *d) {
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
