/* moe.c: the DeepSeek MoE FFN (moe.h): routing (sigmoid/noaux_tc as DeepSeek-V3,
 * softmax/greedy or group-limited as DeepSeek-V2), the routed experts as one GEMM per
 * expert over its expert-major rows, the shared experts, and the backward of all of it.
 */
#include "pretrain/moe.h"

#include <math.h>
#include <string.h>

#include "core/error.h"

/* NOTE: per-token routing scratch lives on the stack; dsa_model_init refuses configs
 * with more experts (none exists: DeepSeek-V3 has 256, V2 160). */
enum { MOE_MAX_EXPERTS = 4096 };

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

/* ---- routing ------------------------------------------------------------------------ */

/* Index of the largest v[i] over i in [0, n) with allowed[i] (lower index on ties);
 * -1 when none is allowed. */
static int64_t argmax_allowed(const float *v, const unsigned char *allowed, int64_t n) {
    int64_t best = -1;
    for (int64_t i = 0; i < n; i++)
        if (allowed[i] && (best < 0 || v[i] > v[best])) best = i;
    return best;
}

/* Route one token: scores sc[E] from logits lg[E], chosen experts sel[K] (ascending)
 * and weights w[K]. */
static void route_token(int32_t *sel, float *w, float *sc, const float *lg, const float *bias, const DsaMoeShape *s) {
    const int64_t E = s->experts, K = s->topk, G = s->n_group, per = E / G;
    float choice[MOE_MAX_EXPERTS], gscore[MOE_MAX_EXPERTS];
    unsigned char allowed[MOE_MAX_EXPERTS], gkeep[MOE_MAX_EXPERTS];
    /* scores in fp32 (transformers: sigmoid / softmax of the fp32 logits) */
    if (s->scoring == DSA_MOE_SIGMOID) {
        for (int64_t e = 0; e < E; e++) sc[e] = 1.0f / (1.0f + expf(-lg[e]));
    } else {
        float mx = lg[0];
        for (int64_t e = 1; e < E; e++) mx = lg[e] > mx ? lg[e] : mx;
        double sum = 0;
        for (int64_t e = 0; e < E; e++) sum += (double)(sc[e] = expf(lg[e] - mx));
        const float inv = (float)(1.0 / sum);
        for (int64_t e = 0; e < E; e++) sc[e] *= inv;
    }
    for (int64_t e = 0; e < E; e++) {
        choice[e] = s->method == DSA_MOE_NOAUX_TC && bias ? sc[e] + bias[e] : sc[e];
        allowed[e] = 1;
    }
    /* group limit: score each group, keep the topk_group best, mask the rest */
    if (s->method != DSA_MOE_GREEDY && s->topk_group < G) {
        for (int64_t g = 0; g < G; g++) {
            const float *c = choice + g * per;
            float m1 = -INFINITY, m2 = -INFINITY;
            for (int64_t j = 0; j < per; j++) {
                if (c[j] > m1) m2 = m1, m1 = c[j];
                else if (c[j] > m2) m2 = c[j];
            }
            /* noaux_tc: the sum of the two largest choices; group_limited_greedy: the max */
            gscore[g] = s->method == DSA_MOE_NOAUX_TC ? m1 + m2 : m1;
            gkeep[g] = 1; /* here: still selectable */
        }
        unsigned char kept[MOE_MAX_EXPERTS];
        memset(kept, 0, (size_t)G);
        for (int64_t i = 0; i < s->topk_group; i++) {
            int64_t g = argmax_allowed(gscore, gkeep, G);
            kept[g] = 1, gkeep[g] = 0;
        }
        for (int64_t e = 0; e < E; e++) allowed[e] = kept[e / per];
    }
    /* top-k experts by choice among the allowed ones */
    for (int64_t k = 0; k < K; k++) {
        int64_t e = argmax_allowed(choice, allowed, E);
        DSA_ASSERT(e >= 0); /* config validation: K <= experts of the kept groups */
        sel[k] = (int32_t)e;
        allowed[e] = 0;
    }
    /* ascending expert order (insertion sort of K values) */
    for (int64_t i = 1; i < K; i++)
        for (int64_t j = i; j > 0 && sel[j - 1] > sel[j]; j--) {
            int32_t t = sel[j];
            sel[j] = sel[j - 1], sel[j - 1] = t;
        }
    /* weights: the scores without the bias, normalized (sigmoid) and scaled */
    for (int64_t k = 0; k < K; k++) w[k] = sc[sel[k]];
    if (s->scoring == DSA_MOE_SIGMOID && s->norm_topk_prob) {
        float denom = 0.0f;
        for (int64_t k = 0; k < K; k++) denom += w[k];
        denom += 1e-20f;
        for (int64_t k = 0; k < K; k++) w[k] /= denom;
    }
    for (int64_t k = 0; k < K; k++) w[k] *= s->scaling;
}

void dsa_moe_route(int32_t *sel, float *weight, float *scores, const float *logits, const float *bias,
                   const DsaMoeShape *s) {
    DSA_ASSERT(s->experts >= 1 && s->experts <= MOE_MAX_EXPERTS);
    DSA_ASSERT(s->n_group >= 1 && s->experts % s->n_group == 0 && s->topk >= 1 && s->topk <= s->experts);
    const int64_t E = s->experts, K = s->topk;
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < s->tokens; n++)
        route_token(sel + n * K, weight + n * K, scores + n * E, logits + n * E, bias, s);
}

void dsa_moe_route_backward(float *dlogits, const float *dweight, const int32_t *sel, const float *scores,
                            const DsaMoeShape *s) {
    const int64_t E = s->experts, K = s->topk;
    const double c = s->scaling;
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < s->tokens; n++) {
        const int32_t *se = sel + n * K;
        const float *sc = scores + n * E;
        const float *dw = dweight + n * K;
        float *dl = dlogits + n * E;
        double ds[MOE_MAX_EXPERTS]; /* ∂loss/∂s of the chosen experts, in k order */
        if (s->scoring == DSA_MOE_SIGMOID && s->norm_topk_prob) {
            /* w_k = c s_k / S, S = Σ s_j + 1e-20: ∂s_k = (c / S)(∂w_k − Σ_j ∂w_j s_j / S) */
            double S = 0, t = 0;
            for (int64_t k = 0; k < K; k++) S += sc[se[k]];
            S += 1e-20;
            for (int64_t k = 0; k < K; k++) t += (double)dw[k] * sc[se[k]];
            t /= S;
            for (int64_t k = 0; k < K; k++) ds[k] = c / S * ((double)dw[k] - t);
        } else {
            for (int64_t k = 0; k < K; k++) ds[k] = c * dw[k];
        }
        if (s->scoring == DSA_MOE_SIGMOID) {
            for (int64_t e = 0; e < E; e++) dl[e] = 0.0f;
            for (int64_t k = 0; k < K; k++) {
                const double v = sc[se[k]];
                dl[se[k]] = (float)(ds[k] * v * (1.0 - v));
            }
        } else {
            /* softmax: ∂l_e = s_e (∂s_e − Σ_j ∂s_j s_j), ∂s zero off the chosen experts */
            double dot = 0;
            for (int64_t k = 0; k < K; k++) dot += ds[k] * sc[se[k]];
            for (int64_t e = 0; e < E; e++) dl[e] = (float)(-(double)sc[e] * dot);
            for (int64_t k = 0; k < K; k++) dl[se[k]] = (float)((double)sc[se[k]] * (ds[k] - dot));
        }
    }
}

/* ---- experts ------------------------------------------------------------------------ */

/* Expert-major rows: a counting sort of the N·K pairs by expert, tokens in order. */
static void group_rows(DsaMoeActs *a, const DsaMoeShape *s) {
    const int64_t E = s->experts, NK = s->tokens * s->topk;
    memset(a->start, 0, (size_t)(E + 1) * sizeof(int32_t));
    for (int64_t p = 0; p < NK; p++) a->start[a->sel[p] + 1]++;
    for (int64_t e = 0; e < E; e++) a->start[e + 1] += a->start[e];
    for (int64_t p = 0; p < NK; p++) { /* start[e] walks through expert e's rows */
        int32_t r = a->start[a->sel[p]]++;
        a->pair[r] = (int32_t)p;
        a->row[p] = r;
    }
    for (int64_t e = E; e > 0; e--) a->start[e] = a->start[e - 1];
    a->start[0] = 0;
}

/* xg[r] = x[token of row r]. */
static void gather_rows(float *xg, const float *x, const DsaMoeActs *a, const DsaMoeShape *s) {
    const int64_t NK = s->tokens * s->topk, D = s->dim, K = s->topk;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < NK; r++) memcpy(xg + r * D, x + (int64_t)(a->pair[r] / K) * D, (size_t)D * sizeof(float));
}

static const float *wat(const float *const *arr, int64_t e) { return arr[e]; }
static float *gat(float *const *arr, int64_t e) { return arr ? arr[e] : NULL; }

/* ya rows = down_e(act rows) for every expert: the unweighted expert outputs. */
static void experts_down(float *ya, const DsaMoeActs *a, const DsaMoeWeights *w, const DsaMoeShape *s,
                         const DsaBackend *be) {
    const int64_t D = s->dim, I = s->inter;
    for (int64_t e = 0; e < s->experts; e++) {
        const int64_t r0 = a->start[e], ne = a->start[e + 1] - r0;
        if (ne) be->linear_forward(ya + r0 * D, a->act + r0 * I, wat(w->down, e), ne, I, D);
    }
}

void dsa_moe_forward(float *out, DsaMoeActs *a, const float *x, const DsaMoeWeights *w, const DsaMoeShape *s,
                     DsaMoeScratch *sc, const DsaBackend *be) {
    const int64_t N = s->tokens, D = s->dim, E = s->experts, K = s->topk, I = s->inter, Is = s->shared_inter;
    be->linear_forward(sc->logits, x, w->router, N, D, E);
    dsa_moe_route(a->sel, a->weight, a->scores, sc->logits, w->router_bias, s);
    group_rows(a, s);
    gather_rows(sc->xg, x, a, s);
    for (int64_t e = 0; e < E; e++) {
        const int64_t r0 = a->start[e], ne = a->start[e + 1] - r0;
        if (!ne) continue;
        be->linear_forward(a->gate + r0 * I, sc->xg + r0 * D, wat(w->gate, e), ne, D, I);
        be->linear_forward(a->up + r0 * I, sc->xg + r0 * D, wat(w->up, e), ne, D, I);
    }
    be->swiglu_forward(a->act, a->gate, a->up, N * K * I);
    experts_down(sc->ya, a, w, s, be);
    if (Is) {
        be->linear_forward(a->sgate, x, w->shared_gate, N, D, Is);
        be->linear_forward(a->sup, x, w->shared_up, N, D, Is);
        be->swiglu_forward(a->sact, a->sgate, a->sup, N * Is);
        be->linear_forward(sc->tmp, a->sact, w->shared_down, N, Is, D);
    }
    /* out = (Σ_k w_k y_k, experts ascending, from 0) + shared */
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; n++) {
        float *o = out + n * D;
        for (int64_t d = 0; d < D; d++) o[d] = 0.0f;
        for (int64_t k = 0; k < K; k++) {
            const float wk = a->weight[n * K + k];
            const float *y = sc->ya + (int64_t)a->row[n * K + k] * D;
            for (int64_t d = 0; d < D; d++) o[d] += y[d] * wk;
        }
        if (Is) {
            const float *sh = sc->tmp + n * D;
            for (int64_t d = 0; d < D; d++) o[d] += sh[d];
        }
    }
}

void dsa_moe_backward(float *dx, const DsaMoeGrads *g, const float *dout, const DsaMoeActs *a, const float *x,
                      const DsaMoeWeights *w, const DsaMoeShape *s, DsaMoeScratch *sc, const DsaBackend *be) {
    const int64_t N = s->tokens, D = s->dim, E = s->experts, K = s->topk, I = s->inter, Is = s->shared_inter;
    const int64_t NK = N * K;
    /* ∂w_k = ⟨∂out, y_k⟩ with the expert outputs recomputed, then ∂y_k = w_k ∂out */
    experts_down(sc->ya, a, w, s, be);
#pragma omp parallel for schedule(static)
    for (int64_t p = 0; p < NK; p++) {
        const float *y = sc->ya + (int64_t)a->row[p] * D, *go = dout + (p / K) * D;
        double acc = 0;
        for (int64_t d = 0; d < D; d++) acc += (double)go[d] * y[d];
        sc->dw[p] = (float)acc;
    }
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < NK; r++) {
        const int64_t p = a->pair[r];
        const float wk = a->weight[p], *go = dout + (p / K) * D;
        float *dy = sc->ya + r * D;
        for (int64_t d = 0; d < D; d++) dy[d] = wk * go[d];
    }
    /* through each expert: down, SwiGLU, gate and up */
    for (int64_t e = 0; e < E; e++) {
        const int64_t r0 = a->start[e], ne = a->start[e + 1] - r0;
        if (ne)
            be->linear_backward(sc->da + r0 * I, gat(g->down, e), sc->ya + r0 * D, a->act + r0 * I,
                                wat(w->down, e), ne, I, D);
    }
    be->swiglu_backward(sc->db, sc->dc, sc->da, a->gate, a->up, NK * I);
    gather_rows(sc->xg, x, a, s);
    for (int64_t e = 0; e < E; e++) {
        const int64_t r0 = a->start[e], ne = a->start[e + 1] - r0;
        if (!ne) continue;
        be->linear_backward(sc->yb + r0 * D, gat(g->gate, e), sc->db + r0 * I, sc->xg + r0 * D, wat(w->gate, e), ne,
                            D, I);
        be->linear_backward(sc->ya + r0 * D, gat(g->up, e), sc->dc + r0 * I, sc->xg + r0 * D, wat(w->up, e), ne, D,
                            I);
    }
    be->add(sc->yb, sc->ya, NK * D);
    /* ∂x from the routed experts: each token's rows in k order */
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; n++) {
        float *o = dx + n * D;
        for (int64_t d = 0; d < D; d++) o[d] = 0.0f;
        for (int64_t k = 0; k < K; k++) {
            const float *src = sc->yb + (int64_t)a->row[n * K + k] * D;
            for (int64_t d = 0; d < D; d++) o[d] += src[d];
        }
    }
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
    dsa_moe_route_backward(sc->logits, sc->dw, a->sel, a->scores, s);
    be->linear_backward(sc->tmp, g->router, sc->logits, x, w->router, N, D, E);
    be->add(dx, sc->tmp, N * D);
}
