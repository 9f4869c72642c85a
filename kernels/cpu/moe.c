/* moe.c: the CPU reference entries of the MoE ops (kernels/moe_ops.h): routing (sigmoid /
 * noaux_tc as DeepSeek-V3, softmax / greedy or group-limited as DeepSeek-V2; pretrain/moe.h
 * states the rule), its backward, the expert-major grouping, dispatch and combine and their
 * transposes. Every output element is summed by one thread in a fixed order, so the bits do
 * not depend on the thread count.
 */
#include <math.h>
#include <string.h>

#include "core/error.h"
#include "kernels/cpu/ops.h"
#include "kernels/moe_ops.h"

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
    float choice[DSA_MOE_MAX_EXPERTS], gscore[DSA_MOE_MAX_EXPERTS];
    unsigned char allowed[DSA_MOE_MAX_EXPERTS], gkeep[DSA_MOE_MAX_EXPERTS];
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
        unsigned char kept[DSA_MOE_MAX_EXPERTS];
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

static void cpu_moe_route(int32_t *sel, float *weight, float *scores, const float *logits, const float *bias,
                   const DsaMoeShape *s) {
    DSA_ASSERT(s->experts >= 1 && s->experts <= DSA_MOE_MAX_EXPERTS);
    DSA_ASSERT(s->n_group >= 1 && s->experts % s->n_group == 0 && s->topk >= 1 && s->topk <= s->experts);
    const int64_t E = s->experts, K = s->topk;
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < s->tokens; n++)
        route_token(sel + n * K, weight + n * K, scores + n * E, logits + n * E, bias, s);
}

static void cpu_moe_route_backward(float *dlogits, const float *dweight, const int32_t *sel, const float *scores,
                            const DsaMoeShape *s) {
    const int64_t E = s->experts, K = s->topk;
    const double c = s->scaling;
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < s->tokens; n++) {
        const int32_t *se = sel + n * K;
        const float *sc = scores + n * E;
        const float *dw = dweight + n * K;
        float *dl = dlogits + n * E;
        double ds[DSA_MOE_MAX_EXPERTS]; /* ∂loss/∂s of the chosen experts, in k order */
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

/* ---- dispatch and combine ----------------------------------------------------------- */

/* Expert-major rows: a counting sort of the N·K pairs by expert, tokens in order. */
static void cpu_moe_group(int32_t *pair, int32_t *row, int32_t *start, const int32_t *sel, const DsaMoeShape *s) {
    const int64_t E = s->experts, NK = s->tokens * s->topk;
    memset(start, 0, (size_t)(E + 1) * sizeof(int32_t));
    for (int64_t p = 0; p < NK; p++) start[sel[p] + 1]++;
    for (int64_t e = 0; e < E; e++) start[e + 1] += start[e];
    for (int64_t p = 0; p < NK; p++) { /* start[e] walks through expert e's rows */
        int32_t r = start[sel[p]]++;
        pair[r] = (int32_t)p;
        row[p] = r;
    }
    for (int64_t e = E; e > 0; e--) start[e] = start[e - 1];
    start[0] = 0;
}

static void cpu_moe_gather(float *xg, const float *x, const int32_t *pair, const DsaMoeShape *s) {
    const int64_t NK = s->tokens * s->topk, D = s->dim, K = s->topk;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < NK; r++) memcpy(xg + r * D, x + (int64_t)(pair[r] / K) * D, (size_t)D * sizeof(float));
}

static void cpu_moe_combine(float *out, const float *y, const float *weight, const int32_t *row, const float *shared,
                            const DsaMoeShape *s) {
    const int64_t N = s->tokens, D = s->dim, K = s->topk;
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; n++) {
        float *o = out + n * D;
        for (int64_t d = 0; d < D; d++) o[d] = 0.0f;
        for (int64_t k = 0; k < K; k++) {
            const float wk = weight[n * K + k];
            const float *yk = y + (int64_t)row[n * K + k] * D;
            for (int64_t d = 0; d < D; d++) o[d] += yk[d] * wk;
        }
        if (shared) {
            const float *sh = shared + n * D;
            for (int64_t d = 0; d < D; d++) o[d] += sh[d];
        }
    }
}

static void cpu_moe_weight_grad(float *dweight, const float *y, const float *dout, const int32_t *row,
                                const DsaMoeShape *s) {
    const int64_t NK = s->tokens * s->topk, D = s->dim, K = s->topk;
#pragma omp parallel for schedule(static)
    for (int64_t p = 0; p < NK; p++) {
        const float *yp = y + (int64_t)row[p] * D, *go = dout + (p / K) * D;
        double acc = 0;
        for (int64_t d = 0; d < D; d++) acc += (double)go[d] * yp[d];
        dweight[p] = (float)acc;
    }
}

static void cpu_moe_dispatch_grad(float *dy, const float *dout, const float *weight, const int32_t *pair,
                                  const DsaMoeShape *s) {
    const int64_t NK = s->tokens * s->topk, D = s->dim, K = s->topk;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < NK; r++) {
        const int64_t p = pair[r];
        const float wk = weight[p], *go = dout + (p / K) * D;
        float *d_ = dy + r * D;
        for (int64_t d = 0; d < D; d++) d_[d] = wk * go[d];
    }
}

static void cpu_moe_gather_backward(float *dx, const float *dy, const int32_t *row, const DsaMoeShape *s) {
    const int64_t N = s->tokens, D = s->dim, K = s->topk;
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; n++) {
        float *o = dx + n * D;
        for (int64_t d = 0; d < D; d++) o[d] = 0.0f;
        for (int64_t k = 0; k < K; k++) {
            const float *src = dy + (int64_t)row[n * K + k] * D;
            for (int64_t d = 0; d < D; d++) o[d] += src[d];
        }
    }
}

const DsaMoeOps dsa_cpu_moe_ops = {
    .name = "cpu",
    .route = cpu_moe_route,
    .route_backward = cpu_moe_route_backward,
    .group = cpu_moe_group,
    .gather = cpu_moe_gather,
    .combine = cpu_moe_combine,
    .weight_grad = cpu_moe_weight_grad,
    .dispatch_grad = cpu_moe_dispatch_grad,
    .gather_backward = cpu_moe_gather_backward,
};

const DsaMoeOps *dsa_moe_ops_cpu(void) { return &dsa_cpu_moe_ops; }
