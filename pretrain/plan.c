/* plan.c: the device plan of one training stage under one layout (plan.h has the model
 * and its assumptions; DESIGN.md "Device plan"; FLOPs DSA-SPEC §8.4). Parameter counts
 * walk the parameter table (pretrain/params.h); every byte count is checked 64-bit
 * arithmetic (core/checked.h) and an overflow is refused by name. FLOPs are doubles (a
 * V3.2 step is ~1e19, past int64; below 2^53 they are exact integers). */
#include "pretrain/plan.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/checked.h"
#include "pretrain/params.h"
#include "pretrain/plan_internal.h"

/* ---- checked arithmetic ------------------------------------------------------------- */

static int64_t M(bool *of, int64_t a, int64_t b) { return dsa_mul_sticky(a, b, of); }
static int64_t M3(bool *of, int64_t a, int64_t b, int64_t c) { return M(of, M(of, a, b), c); }
static int64_t A(bool *of, int64_t a, int64_t b) { return dsa_add_sticky(a, b, of); }
static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }
static int64_t ceil_div(int64_t a, int64_t b) { return a / b + (a % b != 0); }

/* ---- the parameter table, split the way the plan needs it ---------------------------- */

static bool slot_is_attention(DsaWeightSlot s) {
    return s == DSA_W_INPUT_NORM || (s >= DSA_W_Q_A && s <= DSA_W_O) || dsa_param_slot_is_indexer(s);
}

static bool slot_is_expert(DsaWeightSlot s) {
    return s == DSA_W_EXPERT_GATE || s == DSA_W_EXPERT_UP || s == DSA_W_EXPERT_DOWN;
}

DsaStatus dsa_plan_params(const DsaModelConfig *m, bool train_main, PlanScope scope, int64_t ep, PlanParams *p) {
    memset(p, 0, sizeof *p);
    DsaModelConfig one = *m;
    if (scope != PLAN_SCOPE_MODEL) { /* one layer: the first MoE layer if any, else a dense one */
        one.num_hidden_layers = 1;
        one.first_k_dense_replace = scope == PLAN_SCOPE_LAYER && m->has_moe ? 0 : 1;
        p->layer_moe = scope == PLAN_SCOPE_LAYER && m->has_moe;
    }
    DsaParamTable t;
    DSA_TRY(dsa_param_table_build(&t, &one));
    bool of = false;
    int layer = -2;
    int64_t l_ne = 0, l_ex = 0, l_ex_all = 0; /* the current layer: trained non-expert, trained expert, all expert */
    const int64_t E = m->has_moe ? m->n_routed_experts : 1, K = m->has_moe ? m->num_experts_per_tok : 0;
    for (int i = 0; i <= t.count; i++) {
        const DsaParamInfo *e = i < t.count ? &t.info[i] : NULL;
        if (!e || e->layer != layer) { /* close the previous layer */
            if (layer >= 0) {
                p->mm_expert = A(&of, p->mm_expert, M(&of, l_ex_all / E, K)); /* K of its E experts per token */
                p->layer_train_max = max64(p->layer_train_max, A(&of, l_ne, l_ex / ep));
            }
            l_ne = l_ex = l_ex_all = 0;
            if (!e) break;
            layer = e->layer;
        }
        if (scope != PLAN_SCOPE_MODEL && e->layer < 0) continue;
        if (scope == PLAN_SCOPE_ATTENTION && !slot_is_attention(e->slot)) continue;
        const bool expert = slot_is_expert(e->slot), indexer = dsa_param_slot_is_indexer(e->slot);
        /* the trainer's rule (pretrain/trainer.c): frozen tensors never; the main model only in "all" */
        const bool trained = !e->frozen && (train_main || e->group == DSA_GROUP_INDEXER);
        p->count = A(&of, p->count, e->numel);
        if (trained) p->trained = A(&of, p->trained, e->numel);
        if (expert) {
            p->ex = A(&of, p->ex, e->numel);
            l_ex_all = A(&of, l_ex_all, e->numel);
            if (trained) p->ex_train = A(&of, p->ex_train, e->numel), l_ex = A(&of, l_ex, e->numel);
        } else {
            p->ne = A(&of, p->ne, e->numel);
            if (trained) p->ne_train = A(&of, p->ne_train, e->numel), l_ne = A(&of, l_ne, e->numel);
        }
        /* matmul weights a token passes through: the 2-D tensors but the embedding (a lookup) */
        if (e->ndim == 2 && e->slot != DSA_W_EMBED && !expert) {
            if (indexer)
                p->mm_indexer = A(&of, p->mm_indexer, e->numel);
            else {
                p->mm_main = A(&of, p->mm_main, e->numel);
                if (e->slot != DSA_W_LM_HEAD) p->mm_layers = A(&of, p->mm_layers, e->numel);
            }
        }
        if (e->slot == DSA_W_KV_B) p->kvb = e->numel;
    }
    dsa_param_table_free(&t);
    if (of) DSA_FAIL(DSA_ERR_CONFIG, "the parameter counts overflow 64-bit arithmetic: a model size is out of range");
    return DSA_OK;
}

/* ---- bytes per device ----------------------------------------------------------------- */

/* Stored activations of one layer for its backward (plan.h), bytes, for N tokens. */
static int64_t attn_set(const PlanShape *s, bool *of) {
    const DsaModelConfig *m = s->m;
    const int64_t N = s->N, H = m->num_attention_heads, dq = m->has_q_lora ? m->q_lora_rank : 0;
    const int64_t dqk = m->qk_nope_head_dim + m->qk_rope_head_dim, dv = m->v_head_dim;
    const int64_t dc = m->kv_lora_rank, dr = m->qk_rope_head_dim, D = m->hidden_size;
    /* h_in, x, q_a output and q latent, q, kv_a output, c, then the form's own, o */
    int64_t w = A(of, A(of, M(of, 2, D), M(of, 2, dq)), A(of, M(of, H, dqk), A(of, dc + dr, dc)));
    if (s->sparse_form) /* latent outputs om (absorbed queries are formed per block on chip) */
        w = A(of, w, M(of, H, dc));
    else /* per-head keys and values */
        w = A(of, w, M(of, H, dqk + dv));
    w = A(of, w, M(of, H, dv));
    const int64_t stats = A(of, M(of, N, 2 + (dq ? 1 : 0)), M(of, N, H)); /* rstd1, rstd_kv, rstd_q; lse (H, N) */
    return A(of, M3(of, s->a, N, w), M(of, 4, stats));
}

static int64_t ffn_set(const PlanShape *s, bool moe, bool *of) {
    const DsaModelConfig *m = s->m;
    const int64_t N = s->N, D = m->hidden_size, a = s->a;
    int64_t b = A(of, M3(of, a, N, 2 * D), M(of, 4, N)); /* h_mid, x2; rstd2 */
    if (!moe) return A(of, b, M3(of, a, N, M(of, 3, m->intermediate_size))); /* gate, up, act */
    const int64_t E = m->n_routed_experts, K = m->num_experts_per_tok, Ie = m->moe_intermediate_size;
    const int64_t Ish = M(of, Ie, m->n_shared_experts);
    b = A(of, b, M3(of, 4, N, E));       /* router scores, fp32 */
    b = A(of, b, M3(of, 8, N, K));       /* expert ids int32, weights fp32 */
    b = A(of, b, M3(of, a, M(of, N, K), A(of, M(of, 2, D), M(of, 3, Ie)))); /* dispatched x, gate, up, act, expert out */
    return A(of, b, M3(of, a, N, M(of, 3, Ish)));                          /* shared gate, up, act */
}

/* Gradient buffers live at the peak of one layer's backward (plan.h "scratch"). */
static int64_t attn_grads(const PlanShape *s, bool *of) {
    const DsaModelConfig *m = s->m;
    const int64_t H = m->num_attention_heads, dqk = m->qk_nope_head_dim + m->qk_rope_head_dim, dv = m->v_head_dim;
    const int64_t dodq = M3(of, s->a, s->N, M(of, H, dv + dqk)); /* dO, dq of the own queries */
    if (s->sparse_form) /* fp32 scatter-add accumulators of the latent keys of all Lg tokens */
        return A(of, dodq, M3(of, 4, s->Lg, m->kv_lora_rank + m->qk_rope_head_dim));
    return A(of, dodq, M3(of, s->a, s->Lg, M(of, H, dqk + dv))); /* dK, dV of every key attended */
}

static int64_t ffn_grads(const PlanShape *s, bool moe, bool *of) {
    const DsaModelConfig *m = s->m;
    if (!moe) return M3(of, s->a, s->N, M(of, 3, m->intermediate_size));
    const int64_t K = m->num_experts_per_tok, Ie = m->moe_intermediate_size;
    return A(of, M3(of, s->a, M(of, s->N, K), A(of, m->hidden_size, M(of, 3, Ie))),
             M3(of, s->a, s->N, M(of, 3, M(of, Ie, m->n_shared_experts))));
}

DsaStatus dsa_plan_bytes(const PlanShape *s, const PlanParams *p, DsaPlanBytes *b) {
    memset(b, 0, sizeof *b);
    const DsaModelConfig *m = s->m;
    const DsaPlanLayout *l = &s->lay;
    bool of = false;
    const int64_t N = s->N, Lg = s->Lg, a = s->a, D = m->hidden_size;
    const int64_t nL = s->n_attn + s->n_dense + s->n_moe;
    const int64_t w = l->precision == DSA_PLAN_FP32 ? 4 : 2;
    /* parameters: experts split over ep; replicas R share gradients and ZeRO shards */
    const int64_t R_ne = M(&of, l->dp, l->cp), R_e = R_ne / l->ep;
    const int64_t ex_dev = p->ex / l->ep, ex_train_dev = p->ex_train / l->ep;
    const int64_t trained_dev = A(&of, p->ne_train, ex_train_dev);
    const int64_t shards = A(&of, ceil_div(p->ne_train, R_ne), ceil_div(ex_train_dev, R_e));
    b->weights = M(&of, w, A(&of, p->ne, ex_dev));
    b->master = l->precision == DSA_PLAN_FP32 ? 0 : M(&of, 4, l->zero >= 1 ? shards : trained_dev);
    b->gradients = M(&of, 4, l->zero >= 2 ? shards : trained_dev);
    b->optimizer = M(&of, 8, l->zero >= 1 ? shards : trained_dev);
    /* activations */
    const int64_t f_attn = attn_set(s, &of);
    const int64_t f_dense = A(&of, f_attn, ffn_set(s, false, &of)), f_moe = A(&of, f_attn, m->has_moe ? ffn_set(s, true, &of) : 0);
    int64_t f_max = s->n_attn ? f_attn : 0;
    if (s->n_dense) f_max = max64(f_max, f_dense);
    if (s->n_moe) f_max = max64(f_max, f_moe);
    const bool rec = l->recompute == DSA_PLAN_RECOMPUTE_ON;
    int64_t stored = 0, live = 0;
    if (s->train_main && !rec) {
        stored = A(&of, A(&of, M(&of, s->n_attn, f_attn), M(&of, s->n_dense, f_dense)), M(&of, s->n_moe, f_moe));
        b->activations_per_layer = f_max;
    } else if (s->train_main) {
        stored = M(&of, nL, M3(&of, a, N, D)); /* each layer's input */
        b->activations_per_layer = M3(&of, a, N, D);
        live = f_max;
    } else {
        live = f_max; /* layers run one at a time, nothing kept for a backward */
    }
    int64_t head = 0;
    if (s->head) /* h_final, final norm output; rstd, losses, CE lse; input and target ids */
        head = A(&of, M3(&of, a, N, 2 * D), M3(&of, 4, N, 5));
    b->activations = A(&of, A(&of, stored, live), head);
    /* the key source of one layer's attention */
    const int64_t dc = m->kv_lora_rank, dr = m->qk_rope_head_dim, H = m->num_attention_heads;
    const int64_t dqk = m->qk_nope_head_dim + dr, dv = m->v_head_dim;
    if (s->sparse_form)
        b->kv_latent = M3(&of, a, Lg, dc + dr);
    else if (l->cp > 1)
        b->kv_latent = M3(&of, a, Lg - N, A(&of, dc + dr, M(&of, H, dqk + dv)));
    if (s->indexer) {
        const int64_t HI = m->index_n_heads, dI = m->index_head_dim, groups = dI / (dI < 128 ? dI : 128);
        b->indexer = M(&of, Lg, A(&of, dI, 4 * groups));          /* k8 and its scales, all keys */
        b->indexer = A(&of, b->indexer, M3(&of, 4, Lg, dI));       /* ∂k̂ accumulators, fp32 */
        b->indexer = A(&of, b->indexer, M3(&of, 8, N, HI));        /* w and ∂w, fp32 */
        b->indexer = A(&of, b->indexer, M(&of, 4, N));             /* lseI */
        b->indexer = A(&of, b->indexer, M3(&of, a, N, M(&of, HI, dI))); /* ∂q̂ */
        const int64_t nk = M(&of, N, s->k);
        if (s->sparse_form) /* idx of every trained layer (one otherwise), plus one layer's I_S */
            b->indices = M(&of, M(&of, 4, nk), A(&of, s->train_main ? nL : 1, 1));
        else /* one layer's top-k candidates (score, index) for the captured mass */
            b->indices = M(&of, 8, nk);
    }
    /* scratch: the largest transient */
    int64_t scratch = s->head ? M3(&of, 4, N < DSA_PLAN_CE_CHUNK ? N : DSA_PLAN_CE_CHUNK, m->vocab_size) : 0;
    if (s->train_main) {
        int64_t g = s->n_attn ? attn_grads(s, &of) : 0;
        if (s->n_dense) g = max64(g, max64(attn_grads(s, &of), ffn_grads(s, false, &of)));
        if (s->n_moe) g = max64(g, max64(attn_grads(s, &of), ffn_grads(s, true, &of)));
        scratch = max64(scratch, A(&of, M3(&of, 4, N, D), g)); /* + the fp32 residual gradient */
    }
    if (l->zero >= 2) /* one layer's fp32 gradients before their reduce-scatter */
        scratch = A(&of, scratch, M(&of, 4, p->layer_train_max));
    b->scratch = scratch;
    b->total = A(&of, A(&of, A(&of, b->weights, b->master), A(&of, b->gradients, b->optimizer)),
                 A(&of, A(&of, b->activations, b->kv_latent), A(&of, A(&of, b->indexer, b->indices), b->scratch)));
    if (of) DSA_FAIL(DSA_ERR_CONFIG, "the bytes per device overflow 64-bit arithmetic: a size is out of range");
    return DSA_OK;
}

/* ---- the shape of a stage under a layout ---------------------------------------------- */

DsaStatus dsa_plan_shape(const DsaConfig *cfg, int s, const DsaPlanLayout *lay, PlanShape *out) {
    memset(out, 0, sizeof *out);
    const DsaModelConfig *m = &cfg->model;
    if (s < 0 || s >= cfg->num_stages) DSA_FAIL(DSA_ERR_ARG, "%s has no stage %d", cfg->source, s);
    const DsaStageConfig *st = &cfg->stages[s];
    const int64_t L = lay->seq_len > 0 ? lay->seq_len : st->seq_len;
    if (L < 1 || L > INT32_MAX - 1)
        DSA_FAIL(DSA_ERR_ARG, "--seq %lld is out of range: 1 to %d tokens", (long long)L, INT32_MAX - 1);
    if (lay->dp < 1 || lay->cp < 1 || lay->ep < 1 || lay->micro_batch < 1)
        DSA_FAIL(DSA_ERR_ARG, "--dp %lld, --cp %lld, --ep %lld, --micro-batch %lld: each must be at least 1",
                 (long long)lay->dp, (long long)lay->cp, (long long)lay->ep, (long long)lay->micro_batch);
    if (lay->zero < 0 || lay->zero > DSA_PLAN_MAX_ZERO)
        DSA_FAIL(DSA_ERR_ARG, "--zero %d: expected 0, 1 or 2", lay->zero);
    if (L % lay->cp)
        DSA_FAIL(DSA_ERR_ARG, "--cp %lld does not divide the %lld-token sequences of stage %d (\"%s\"): choose a divisor",
                 (long long)lay->cp, (long long)L, s, st->name);
    int64_t seqs = 0, ranks = 0;
    if (!dsa_mul_i64(lay->dp, lay->micro_batch, &seqs) || st->global_batch % seqs)
        DSA_FAIL(DSA_ERR_ARG,
                 "--dp %lld x --micro-batch %lld does not divide stages.%d.global_batch = %lld sequences (\"%s\"): "
                 "every dp group runs whole micro-batches",
                 (long long)lay->dp, (long long)lay->micro_batch, s, (long long)st->global_batch, st->name);
    if (!dsa_mul_i64(lay->dp, lay->cp, &ranks) || ranks % lay->ep)
        DSA_FAIL(DSA_ERR_ARG, "--ep %lld does not divide dp x cp = %lld devices: the experts' ranks fold over them",
                 (long long)lay->ep, (long long)ranks);
    if (!m->has_moe && lay->ep != 1)
        DSA_FAIL(DSA_ERR_ARG, "--ep %lld: %s has no routed experts (model.n_routed_experts is null): use --ep 1",
                 (long long)lay->ep, cfg->source);
    if (m->has_moe && m->n_routed_experts % lay->ep)
        DSA_FAIL(DSA_ERR_ARG, "--ep %lld does not divide model.n_routed_experts = %lld", (long long)lay->ep,
                 (long long)m->n_routed_experts);
    const bool sparse = !strcmp(st->attention, "sparse"), train_main = !strcmp(st->trainable, "all");
    if ((sparse || !train_main) && !m->has_indexer)
        DSA_FAIL(DSA_ERR_CONFIG, "%s: stage %d (\"%s\") needs the indexer, but model.index_topk is null", cfg->source, s,
                 st->name);
    out->m = m;
    out->lay = *lay;
    out->lay.seq_len = L;
    out->indexer = m->has_indexer;
    out->k = m->has_indexer ? (st->index_topk < L ? st->index_topk : L) : 0;
    out->sparse_form = sparse && L > st->index_topk;
    out->train_main = train_main;
    out->head = true;
    out->L = L;
    if (!dsa_mul_i64(L, lay->micro_batch, &out->Lg))
        DSA_FAIL(DSA_ERR_ARG, "--micro-batch %lld x %lld tokens overflows", (long long)lay->micro_batch, (long long)L);
    out->N = out->Lg / lay->cp;
    out->a = lay->precision == DSA_PLAN_FP32 ? 4 : 2;
    const int64_t nL = m->num_hidden_layers, k0 = m->first_k_dense_replace < nL ? m->first_k_dense_replace : nL;
    out->n_moe = m->has_moe ? nL - k0 : 0;
    out->n_dense = nL - out->n_moe;
    return DSA_OK;
}

/* ---- FLOPs (DSA-SPEC §8.4) -------------------------------------------------------------- */

/* The per-pair and per-layer terms of DSA-SPEC §8.4's table for one sequence of L tokens
 * with top-k k: what plan_flops sums over a stage and dsa_plan_attention_flops reports per
 * op (`dsa bench gpu`), from one place. */
typedef struct {
    double Pd, Ps;                 /* Σ_t (t + 1); Σ_t min(t + 1, k) */
    double dense_fwd, sparse_fwd;  /* attention core forward, MHA form over Pd / MQA form over Ps */
    double score, back;            /* indexer score per pair (head dots + ReLU-weighted head sum); ∂q̂, ∂k̂, ∂w */
    double head_dots;              /* the head dots alone, 2·H_I·d_I per pair (F3's passes) */
    double kl_dense, kl_sparse;    /* KL target per pair: MLA logits recomputed + 4·H for the log target */
} AttnTerms;

static void attn_terms(const DsaModelConfig *m, double L, double k, AttnTerms *t) {
    const double H = (double)m->num_attention_heads, dc = (double)m->kv_lora_rank, dr = (double)m->qk_rope_head_dim;
    const double HI = (double)m->index_n_heads, dI = (double)m->index_head_dim;
    t->Pd = L * (L + 1) / 2;
    t->Ps = L > k ? k * (k + 1) / 2 + (L - k) * k : t->Pd;
    t->dense_fwd = 2 * H * (double)(m->qk_nope_head_dim + m->qk_rope_head_dim + m->v_head_dim) * t->Pd;
    t->sparse_fwd = 2 * H * (2 * dc + dr) * t->Ps;
    t->score = 2 * HI * dI + 2 * HI;
    t->back = 4 * HI * dI + 2 * HI;
    t->head_dots = 2 * HI * dI;
    t->kl_dense = 2 * H * (double)(m->qk_nope_head_dim + m->qk_rope_head_dim) + 4 * H;
    t->kl_sparse = 2 * H * (dc + dr) + 4 * H;
}

void dsa_plan_attention_flops(const DsaModelConfig *m, int64_t seq_len, DsaPlanAttnFlops *f) {
    AttnTerms t;
    const int64_t k = m->has_indexer ? m->index_topk : seq_len;
    attn_terms(m, (double)seq_len, (double)(k < seq_len ? k : seq_len), &t);
    memset(f, 0, sizeof *f);
    f->pairs_dense = t.Pd;
    f->pairs_sparse = t.Ps;
    f->dense_fwd = t.dense_fwd;
    f->dense_bwd = 2.5 * t.dense_fwd;
    f->sparse_fwd = t.sparse_fwd;
    f->sparse_bwd = 2.5 * t.sparse_fwd;
    if (!m->has_indexer) return;
    f->indexer_topk = t.score * t.Pd + t.Pd;
    f->kl_dense = (3 * t.score + t.back) * t.Pd + 2 * t.kl_dense * t.Pd;
    f->kl_sparse = (2 * t.head_dots + t.back) * t.Ps + t.kl_sparse * t.Ps;
}

static void plan_flops(const PlanShape *s, const PlanParams *p, int64_t seqs, DsaPlanFlops *f) {
    const DsaModelConfig *m = s->m;
    memset(f, 0, sizeof *f);
    const double L = (double)s->L, T = (double)seqs * L;
    const double layers = (double)(s->n_attn + s->n_dense + s->n_moe) * (double)seqs; /* layer-sequences */
    AttnTerms t;
    attn_terms(m, L, s->sparse_form ? (double)s->k : L, &t); /* Ps = Pd in the dense form */
    const double Pd = t.Pd, Ps = t.Ps;
    const bool rec = s->lay.recompute == DSA_PLAN_RECOMPUTE_ON && s->train_main;
    const double mm = (double)p->mm_main + (double)p->mm_expert;
    f->linear = (s->train_main ? 6 : 2) * mm * T;                   /* forward 2, backward 4 per weight */
    const double af = s->sparse_form ? t.sparse_fwd : t.dense_fwd;
    f->attention = layers * af * (s->train_main ? 3.5 : 1);         /* backward 2.5x: scores recomputed */
    if (s->indexer) {
        f->indexer = 4 * (double)p->mm_indexer * T;                 /* projections: forward and weight gradient */
        if (s->sparse_form) { /* F1 over all causal pairs; F3's row and key passes over S_t (§8.2) */
            f->indexer += layers * (t.score * Pd + 2 * t.head_dots * Ps + t.back * Ps);
            f->kl = layers * t.kl_sparse * Ps;
        } else { /* P1, P2, P3 score the pairs; P2 and P3 recompute the MLA logits (§8.1) */
            f->indexer += layers * (3 * t.score + t.back) * Pd;
            f->kl = layers * 2 * t.kl_dense * Pd;
        }
        f->topk = layers * Pd;
    }
    if (!s->sparse_form && s->lay.cp > 1) /* each cp rank expands the other ranks' latents through kv_b */
        f->cp_extra = layers * (double)(s->lay.cp - 1) * 2 * L * (double)p->kvb *
                      (1 + (s->train_main ? 2 : 0) + (rec ? 1 : 0));
    if (rec) f->recompute = 2 * ((double)p->mm_layers + (double)p->mm_expert) * T + layers * af;
    f->total = f->linear + f->attention + f->indexer + f->kl + f->topk + f->cp_extra + f->recompute;
}

/* ---- communication ---------------------------------------------------------------------- */

static DsaStatus plan_comm(const PlanShape *s, const PlanParams *p, int64_t micro_steps, DsaPlanComm *c) {
    const DsaModelConfig *m = s->m;
    const DsaPlanLayout *l = &s->lay;
    memset(c, 0, sizeof *c);
    bool of = false;
    const int64_t R_ne = l->dp * l->cp, R_e = R_ne / l->ep, w = l->precision == DSA_PLAN_FP32 ? 4 : 2;
    const int64_t ex_train_dev = p->ex_train / l->ep;
    /* ring: a shard of ceil(n / R) elements travels R − 1 hops */
    const int64_t hops = A(&of, M(&of, R_ne - 1, ceil_div(p->ne_train, R_ne)), M(&of, R_e - 1, ceil_div(ex_train_dev, R_e)));
    if (l->zero == 0)
        c->gradients = M3(&of, 2, 4, hops); /* all-reduce = reduce-scatter + all-gather */
    else
        c->gradients = M3(&of, l->zero >= 2 ? micro_steps : 1, 4, hops);
    if (l->zero >= 1) c->zero_gather = M(&of, w, hops);
    const bool rec = l->recompute == DSA_PLAN_RECOMPUTE_ON && s->train_main;
    if (m->has_moe && l->ep > 1) { /* dispatch + combine, in the forward, backward, recompute */
        const int64_t passes = 2 + (s->train_main ? 2 : 0) + (rec ? 2 : 0);
        const int64_t one = M3(&of, M(&of, s->N, m->num_experts_per_tok), M(&of, m->hidden_size, s->a), l->ep - 1) / l->ep;
        c->ep_all_to_all = M3(&of, M(&of, passes, s->n_moe), micro_steps, one);
    }
    if (l->cp > 1) { /* per layer: the KV latent, the indexer's keys and key gradients */
        const int64_t lat = M(&of, s->a, m->kv_lora_rank + m->qk_rope_head_dim);
        int64_t per_token = lat;
        if (s->indexer) {
            const int64_t dI = m->index_head_dim, groups = dI / (dI < 128 ? dI : 128);
            per_token = A(&of, per_token, A(&of, A(&of, dI, 4 * groups), M(&of, 4, dI)));
        }
        if (s->train_main) per_token = A(&of, per_token, M(&of, rec ? 3 : 2, lat)); /* re-gather, gradient, recompute */
        const int64_t nL = s->n_attn + s->n_dense + s->n_moe;
        c->cp_exchange = M3(&of, M(&of, l->cp - 1, s->N), per_token, M(&of, nL, micro_steps));
    }
    c->total = A(&of, A(&of, c->gradients, c->zero_gather), A(&of, c->ep_all_to_all, c->cp_exchange));
    if (of) DSA_FAIL(DSA_ERR_CONFIG, "the communication volume overflows 64-bit arithmetic: a size is out of range");
    return DSA_OK;
}

/* ---- a stage ------------------------------------------------------------------------------ */

DsaStatus dsa_plan_stage_tokens(const DsaConfig *cfg, int s, int64_t seq_len, int64_t *tokens) {
    if (s < 0 || s >= cfg->num_stages) DSA_FAIL(DSA_ERR_ARG, "%s has no stage %d", cfg->source, s);
    const DsaStageConfig *st = &cfg->stages[s];
    const int64_t L = seq_len > 0 ? seq_len : st->seq_len;
    bool of = false;
    *tokens = M3(&of, st->steps, st->global_batch, L);
    if (of)
        DSA_FAIL(DSA_ERR_CONFIG, "%s: stages.%d: steps %lld x global_batch %lld x seq_len %lld tokens overflows 64 bits",
                 cfg->source, s, (long long)st->steps, (long long)st->global_batch, (long long)L);
    return DSA_OK;
}

static DsaStatus plan_fixed(const DsaConfig *cfg, int s, const DsaPlanLayout *lay, const DsaPlanHardware *hw,
                            DsaPlanStage *out) {
    PlanShape sh;
    DSA_TRY(dsa_plan_shape(cfg, s, lay, &sh));
    PlanParams p;
    DSA_TRY(dsa_plan_params(&cfg->model, sh.train_main, PLAN_SCOPE_MODEL, lay->ep, &p));
    const DsaStageConfig *st = &cfg->stages[s];
    memset(out, 0, sizeof *out);
    out->stage = s;
    out->layout = sh.lay;
    out->gpus = lay->dp * lay->cp;
    out->micro_steps = st->global_batch / (lay->dp * lay->micro_batch);
    out->parameters = p.count;
    out->trained = p.trained;
    bool of = false;
    out->tokens_per_step = M(&of, st->global_batch, sh.L);
    if (of) DSA_FAIL(DSA_ERR_CONFIG, "%s: stage %d: the tokens of a step overflow 64 bits", cfg->source, s);
    DSA_TRY(dsa_plan_stage_tokens(cfg, s, sh.L, &out->tokens));
    DSA_TRY(dsa_plan_bytes(&sh, &p, &out->bytes));
    plan_flops(&sh, &p, st->global_batch, &out->flops);
    out->flops.per_device = out->flops.total / (double)out->gpus;
    DSA_TRY(plan_comm(&sh, &p, out->micro_steps, &out->comm));
    out->compute_s = out->flops.per_device / (hw->peak_flops * hw->mfu);
    out->comm_s = hw->link_bytes_s > 0 ? (double)out->comm.total / hw->link_bytes_s : 0;
    out->step_s = out->compute_s + out->comm_s;
    out->gpu_hours = out->step_s * (double)st->steps * (double)out->gpus / 3600.0;
    out->gpu_mem = hw->gpu_mem;
    out->fits = out->bytes.total <= hw->gpu_mem;
    return DSA_OK;
}

DsaStatus dsa_plan_stage(const DsaConfig *cfg, int s, const DsaPlanLayout *lay, const DsaPlanHardware *hw,
                         DsaPlanStage *out) {
    if (!(hw->peak_flops > 0) || !(hw->mfu > 0) || hw->mfu > 1 || !(hw->link_bytes_s >= 0) || hw->gpu_mem < 1)
        DSA_FAIL(DSA_ERR_ARG, "the hardware figures must be positive (--peak-tflops, --bw, --gpu-mem) and --mfu in (0, 1]");
    DsaPlanLayout l = *lay;
    if (l.recompute != DSA_PLAN_RECOMPUTE_AUTO) return plan_fixed(cfg, s, &l, hw, out);
    /* the sizing decides: no recompute when it fits without */
    l.recompute = DSA_PLAN_RECOMPUTE_OFF;
    DSA_TRY(plan_fixed(cfg, s, &l, hw, out));
    if (out->fits || strcmp(cfg->stages[s].trainable, "all")) return DSA_OK;
    l.recompute = DSA_PLAN_RECOMPUTE_ON;
    return plan_fixed(cfg, s, &l, hw, out);
}

/* ---- the table a run stops with ----------------------------------------------------------- */

void dsa_plan_format_bytes(const DsaPlanBytes *b, int64_t gpu_mem, char *buf, size_t cap) {
    const double gib = 1024.0 * 1024.0 * 1024.0;
    const struct { const char *name; int64_t v; } rows[] = {
        {"weights", b->weights},         {"master (fp32)", b->master}, {"gradients (fp32)", b->gradients},
        {"optimizer (AdamW)", b->optimizer}, {"activations", b->activations}, {"kv latent", b->kv_latent},
        {"indexer q/k", b->indexer},     {"top-k indices", b->indices}, {"scratch", b->scratch},
        {"total", b->total},
    };
    size_t n = 0;
    buf[0] = 0;
    for (size_t i = 0; i < sizeof rows / sizeof rows[0] && n < cap; i++)
        n += (size_t)snprintf(buf + n, cap - n, "  %-18s %12.3f GiB  %20lld bytes\n", rows[i].name, (double)rows[i].v / gib,
                              (long long)rows[i].v);
    if (n < cap)
        snprintf(buf + n, cap - n, "  %-18s %12.3f GiB  %20lld bytes: %s\n", "device memory", (double)gpu_mem / gib,
                 (long long)gpu_mem, b->total <= gpu_mem ? "fits" : "does not fit");
}

DsaStatus dsa_plan_require_fit(const DsaConfig *cfg, const DsaPlanStage *p) {
    if (p->fits) return DSA_OK;
    char table[2048];
    dsa_plan_format_bytes(&p->bytes, p->gpu_mem, table, sizeof table);
    const DsaPlanLayout *l = &p->layout;
    DSA_FAIL(DSA_ERR_NOMEM,
             "%s: stage %d (\"%s\") does not fit the device with dp %lld, cp %lld, ep %lld, ZeRO-%d, recompute %s, "
             "micro-batch %lld x %lld tokens (`dsa plan` searches the layouts that fit):\n%s",
             cfg->source, p->stage, cfg->stages[p->stage].name, (long long)l->dp, (long long)l->cp, (long long)l->ep,
             l->zero, l->recompute == DSA_PLAN_RECOMPUTE_ON ? "on" : "off", (long long)l->micro_batch,
             (long long)l->seq_len, table);
}
