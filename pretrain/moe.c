/* moe.c: the DeepSeek MoE FFN (moe.h): the buffers, and the forward and backward driven from
 * the host: routing, dispatch and combine through the backend's MoE entries
 * (kernels/moe_ops.h; CPU: kernels/cpu/moe.c), the routed experts as one GEMM per expert
 * over its expert-major rows, and the shared experts.
 */
#include "pretrain/moe.h"

#include <math.h>
#include <string.h>

#include "core/error.h"

DsaMoeShape dsa_moe_shape(const DsaModelConfig *c, int64_t tokens) {
    DsaMoeShape s = {
        .tokens = tokens,
        .dim = c->hidden_size,
        .experts = c->n_routed_experts,
        .topk = c->num_experts_per_tok,
        .inter = c->moe_intermediate_size,
        .shared_inter = c->moe_intermediate_size * c->n_shared_experts,
        .n_group = c->n_group,
        .topk_group = c->topk_group,
        .norm_topk_prob = c->norm_topk_prob,
        .scaling = (float)c->routed_scaling_factor,
    };
    s.scoring = !strcmp(c->scoring_func, "softmax") ? DSA_MOE_SOFTMAX : DSA_MOE_SIGMOID;
    s.method = !strcmp(c->topk_method, "greedy")                 ? DSA_MOE_GREEDY
               : !strcmp(c->topk_method, "group_limited_greedy") ? DSA_MOE_GROUP_LIMITED_GREEDY
                                                                 : DSA_MOE_NOAUX_TC;
    return s;
}

/* ---- buffers ------------------------------------------------------------------------ */

/* Next buffer of n floats from *base (NULL while only counting), rounded up to 16. */
static float *take(float *base, int64_t *used, int64_t n) {
    float *p = base ? base + *used : NULL;
    *used += (n + 15) / 16 * 16;
    return p;
}

static int64_t layout_acts(DsaMoeActs *a, float *buf, const DsaMoeShape *s) {
    const int64_t N = s->tokens, NK = s->tokens * s->topk, I = s->inter, Is = s->shared_inter;
    int64_t used = 0;
    a->scores = take(buf, &used, N * s->experts);
    a->sel = (int32_t *)take(buf, &used, NK);
    a->weight = take(buf, &used, NK);
    a->pair = (int32_t *)take(buf, &used, NK);
    a->row = (int32_t *)take(buf, &used, NK);
    a->start = (int32_t *)take(buf, &used, s->experts + 1);
    a->gate = take(buf, &used, NK * I);
    a->up = take(buf, &used, NK * I);
    a->act = take(buf, &used, NK * I);
    a->sgate = a->sup = a->sact = NULL;
    if (Is) {
        a->sgate = take(buf, &used, N * Is);
        a->sup = take(buf, &used, N * Is);
        a->sact = take(buf, &used, N * Is);
    }
    return used;
}

static int64_t layout_scratch(DsaMoeScratch *sc, float *buf, const DsaMoeShape *s) {
    const int64_t N = s->tokens, NK = s->tokens * s->topk, D = s->dim;
    const int64_t wide = NK * s->inter > N * s->shared_inter ? NK * s->inter : N * s->shared_inter;
    int64_t used = 0;
    sc->logits = take(buf, &used, N * s->experts);
    sc->xg = take(buf, &used, NK * D);
    sc->ya = take(buf, &used, NK * D);
    sc->yb = take(buf, &used, NK * D);
    sc->da = take(buf, &used, wide);
    sc->db = take(buf, &used, wide);
    sc->dc = take(buf, &used, wide);
    sc->dw = take(buf, &used, NK);
    sc->tmp = take(buf, &used, N * D);
    return used;
}

int64_t dsa_moe_acts_floats(const DsaMoeShape *s) {
    DsaMoeActs a;
    return layout_acts(&a, NULL, s);
}

void dsa_moe_acts_carve(DsaMoeActs *a, float *buf, const DsaMoeShape *s) {
    DSA_ASSERT(buf != NULL);
    layout_acts(a, buf, s);
}

int64_t dsa_moe_scratch_floats(const DsaMoeShape *s) {
    DsaMoeScratch sc;
    return layout_scratch(&sc, NULL, s);
}

void dsa_moe_scratch_carve(DsaMoeScratch *sc, float *buf, const DsaMoeShape *s) {
    DSA_ASSERT(buf != NULL);
    layout_scratch(sc, buf, s);
}

/* ---- routing (the CPU entries, for tests) ---------------------------------------------- */

void dsa_moe_route(int32_t *sel, float *weight, float *scores, const float *logits, const float *bias,
                   const DsaMoeShape *s) {
    dsa_moe_ops_cpu()->route(sel, weight, scores, logits, bias, s);
}

void dsa_moe_route_backward(float *dlogits, const float *dweight, const int32_t *sel, const float *scores,
                            const DsaMoeShape *s) {
    dsa_moe_ops_cpu()->route_backward(dlogits, dweight, sel, scores, s);
}

/* ---- experts ------------------------------------------------------------------------ */

/* The first row of each expert, start[E + 1], read back from the backend (the one host
 * read of the layer: it sizes the per-expert GEMMs). */
static void expert_rows(int32_t *start, const DsaMoeActs *a, const DsaMoeShape *s, const DsaBackend *be) {
    DSA_ASSERT(s->experts >= 1 && s->experts <= DSA_MOE_MAX_EXPERTS);
    be->download(start, a->start, (size_t)(s->experts + 1) * sizeof(int32_t));
}

static const float *wat(const float *const *arr, int64_t e) { return arr[e]; }
static float *gat(float *const *arr, int64_t e) { return arr ? arr[e] : NULL; }

/* ya rows = down_e(act rows) for every expert: the unweighted expert outputs. */
static void experts_down(float *ya, const DsaMoeActs *a, const int32_t *start, const DsaMoeWeights *w,
                         const DsaMoeShape *s, const DsaBackend *be) {
    const int64_t D = s->dim, I = s->inter;
    for (int64_t e = 0; e < s->experts; e++) {
        const int64_t r0 = start[e], ne = start[e + 1] - r0;
        if (ne) be->linear_forward(ya + r0 * D, a->act + r0 * I, wat(w->down, e), ne, I, D);
    }
}

/* The router's GEMM stays fp32 in bf16 mode (DESIGN.md "Backends": routing decisions are
 * discontinuous in the logits, so they are not computed from rounded operands). */
static const DsaBackend *router_table(const DsaBackend *be) { return be->fp32_table ? be->fp32_table : be; }

void dsa_moe_forward(float *out, DsaMoeActs *a, const float *x, const DsaMoeWeights *w, const DsaMoeShape *s,
                     DsaMoeScratch *sc, const DsaBackend *be) {
    const int64_t N = s->tokens, D = s->dim, E = s->experts, K = s->topk, I = s->inter, Is = s->shared_inter;
    const DsaMoeOps *mo = be->moe;
    DSA_ASSERT(mo != NULL);
    int32_t start[DSA_MOE_MAX_EXPERTS + 1];
    router_table(be)->linear_forward(sc->logits, x, w->router, N, D, E);
    mo->route(a->sel, a->weight, a->scores, sc->logits, w->router_bias, s);
    mo->group(a->pair, a->row, a->start, a->sel, s);
    expert_rows(start, a, s, be);
    mo->gather(sc->xg, x, a->pair, s);
    for (int64_t e = 0; e < E; e++) {
        const int64_t r0 = start[e], ne = start[e + 1] - r0;
        if (!ne) continue;
        be->linear_forward(a->gate + r0 * I, sc->xg + r0 * D, wat(w->gate, e), ne, D, I);
        be->linear_forward(a->up + r0 * I, sc->xg + r0 * D, wat(w->up, e), ne, D, I);
    }
    be->swiglu_forward(a->act, a->gate, a->up, N * K * I);
    experts_down(sc->ya, a, start, w, s, be);
    if (Is) {
        be->linear_forward(a->sgate, x, w->shared_gate, N, D, Is);
        be->linear_forward(a->sup, x, w->shared_up, N, D, Is);
        be->swiglu_forward(a->sact, a->sgate, a->sup, N * Is);
        be->linear_forward(sc->tmp, a->sact, w->shared_down, N, Is, D);
    }
    /* out = (Σ_k w_k y_k, experts ascending, from 0) + shared */
    mo->combine(out, sc->ya, a->weight, a->row, Is ? sc->tmp : NULL, s);
}

void dsa_moe_backward(float *dx, const DsaMoeGrads *g, const float *dout, const DsaMoeActs *a, const float *x,
                      const DsaMoeWeights *w, const DsaMoeShape *s, DsaMoeScratch *sc, const DsaBackend *be) {
    const int64_t N = s->tokens, D = s->dim, E = s->experts, K = s->topk, I = s->inter, Is = s->shared_inter;
    const int64_t NK = N * K;
    const DsaMoeOps *mo = be->moe;
    DSA_ASSERT(mo != NULL);
    int32_t start[DSA_MOE_MAX_EXPERTS + 1];
    expert_rows(start, a, s, be);
    /* ∂w_k = ⟨∂out, y_k⟩ with the expert outputs recomputed, then ∂y_k = w_k ∂out */
    experts_down(sc->ya, a, start, w, s, be);
    mo->weight_grad(sc->dw, sc->ya, dout, a->row, s);
    mo->dispatch_grad(sc->ya, dout, a->weight, a->pair, s);
    /* through each expert: down, SwiGLU, gate and up */
    for (int64_t e = 0; e < E; e++) {
        const int64_t r0 = start[e], ne = start[e + 1] - r0;
        if (ne)
            be->linear_backward(sc->da + r0 * I, gat(g->down, e), sc->ya + r0 * D, a->act + r0 * I,
                                wat(w->down, e), ne, I, D);
    }
    be->swiglu_backward(sc->db, sc->dc, sc->da, a->gate, a->up, NK * I);
    mo->gather(sc->xg, x, a->pair, s);
    for (int64_t e = 0; e < E; e++) {
        const int64_t r0 = start[e], ne = start[e + 1] - r0;
        if (!ne) continue;
        be->linear_backward(sc->yb + r0 * D, gat(g->gate, e), sc->db + r0 * I, sc->xg + r0 * D, wat(w->gate, e), ne,
                            D, I);
        be->linear_backward(sc->ya + r0 * D, gat(g->up, e), sc->dc + r0 * I, sc->xg + r0 * D, wat(w->up, e), ne, D,
                            I);
    }
    be->add(sc->yb, sc->ya, NK * D);
    /* ∂x from the routed experts: each token's rows in k order */
    mo->gather_backward(dx, sc->yb, a->row, s);
    /* shared experts */
    if (Is) {
        be->linear_backward(sc->da, g->shared_down, dout, a->sact, w->shared_down, N, Is, D);
        be->swiglu_backward(sc->db, sc->dc, sc->da, a->sgate, a->sup, N * Is);
        be->linear_backward(sc->tmp, g->shared_gate, sc->db, x, w->shared_gate, N, D, Is);
        be->add(dx, sc->tmp, N * D);
        be->linear_backward(sc->tmp, g->shared_up, sc->dc, x, w->shared_up, N, D, Is);
        be->add(dx, sc->tmp, N * D);
    }
    /* router: ∂w → ∂logits → ∂x and ∂W_router */
    mo->route_backward(sc->logits, sc->dw, a->sel, a->scores, s);
    router_table(be)->linear_backward(sc->tmp, g->router, sc->logits, x, w->router, N, D, E);
    be->add(dx, sc->tmp, N * D);
}
