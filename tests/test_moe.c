/* test_moe.c: the DeepSeek MoE FFN (pretrain/moe.h) on the CPU backend:
 *  - routing (V3 sigmoid/noaux_tc with groups and bias, V2 softmax greedy and
 *    group-limited) against a reference that selects by full sorts, on random logits
 *    with exact ties and tied groups; a hand-made case where the top-2 group sum and the
 *    group max disagree;
 *  - the routing backward against central differences of an fp64 weight function;
 *  - the MoE layer forward against an fp64 reference, and every gradient (router,
 *    routed experts, shared experts, layer input) against central differences of that
 *    reference, skipping (and reporting) perturbations that flip a selection;
 *  - identical bits on 1 and 3 threads.
 * Its place in the model (parameter table, gradients, frozen bias) is test_moe_model.c. */
#include <math.h>

#include "core/config.h"
#include "core/mem.h"
#include "core/rng.h"
#include "kernels/backend.h"
#include "pretrain/moe.h"
#include "test_util.h"

static double rnd(uint64_t seed, uint64_t stream, uint64_t i) { return dsa_rng_normal_at(seed, stream, i); }

/* ---- reference routing (full sorts, written independently of moe.c) ------------------ */

typedef struct {
    double v;
    int i;
} Item;

/* Larger value first, then lower index. */
static int item_cmp(const void *pa, const void *pb) {
    const Item *a = pa, *b = pb;
    if (a->v != b->v) return a->v > b->v ? -1 : 1;
    return a->i - b->i;
}

static int int_cmp(const void *pa, const void *pb) { return *(const int *)pa - *(const int *)pb; }

/* Selection of one token from its choice values (fp32 values held in double when
 * f32 is set: the group sums are then rounded to fp32 as the library does). */
static void ref_select(int *sel, const double *choice, const DsaMoeShape *s, bool f32) {
    const int E = (int)s->experts, G = (int)s->n_group, per = E / G, K = (int)s->topk;
    Item *it = malloc(sizeof(Item) * (size_t)E);
    bool *allowed = malloc(sizeof(bool) * (size_t)E);
    for (int e = 0; e < E; e++) allowed[e] = true;
    if (s->method != DSA_MOE_GREEDY && s->topk_group < G) {
        Item *gs = malloc(sizeof(Item) * (size_t)G);
        for (int g = 0; g < G; g++) {
            for (int j = 0; j < per; j++) it[j] = (Item){choice[g * per + j], g * per + j};
            qsort(it, (size_t)per, sizeof *it, item_cmp);
            double v = it[0].v;
            if (s->method == DSA_MOE_NOAUX_TC) v = f32 ? (double)((float)it[0].v + (float)it[1].v) : it[0].v + it[1].v;
            gs[g] = (Item){v, g};
        }
        qsort(gs, (size_t)G, sizeof *gs, item_cmp);
        for (int e = 0; e < E; e++) allowed[e] = false;
        for (int i = 0; i < s->topk_group; i++)
            for (int j = 0; j < per; j++) allowed[gs[i].i * per + j] = true;
        free(gs);
    }
    int n = 0;
    for (int e = 0; e < E; e++)
        if (allowed[e]) it[n++] = (Item){choice[e], e};
    qsort(it, (size_t)n, sizeof *it, item_cmp);
    assert_true(n >= K);
    for (int k = 0; k < K; k++) sel[k] = it[k].i;
    qsort(sel, (size_t)K, sizeof *sel, int_cmp);
    free(it);
    free(allowed);
}

/* Weights of the chosen experts from scores (double). */
static void ref_weights(double *w, const int *sel, const double *sc, const DsaMoeShape *s) {
    double sum = 0;
    for (int k = 0; k < s->topk; k++) sum += w[k] = sc[sel[k]];
    for (int k = 0; k < s->topk; k++) {
        if (s->scoring == DSA_MOE_SIGMOID && s->norm_topk_prob) w[k] /= sum + 1e-20;
        w[k] *= s->scaling;
    }
}

static void ref_scores(double *sc, const double *lg, const DsaMoeShape *s) {
    const int64_t E = s->experts;
    if (s->scoring == DSA_MOE_SIGMOID) {
        for (int64_t e = 0; e < E; e++) sc[e] = 1.0 / (1.0 + exp(-lg[e]));
        return;
    }
    double mx = -INFINITY, sum = 0;
    for (int64_t e = 0; e < E; e++) mx = fmax(mx, lg[e]);
    for (int64_t e = 0; e < E; e++) sum += sc[e] = exp(lg[e] - mx);
    for (int64_t e = 0; e < E; e++) sc[e] /= sum;
}

static DsaMoeShape shape_v3(int64_t N, int64_t D, int64_t E, int64_t K, int64_t G, int64_t TG) {
    return (DsaMoeShape){.tokens = N, .dim = D, .experts = E, .topk = K, .n_group = G, .topk_group = TG,
                         .scoring = DSA_MOE_SIGMOID, .method = DSA_MOE_NOAUX_TC, .norm_topk_prob = true,
                         .scaling = 2.5f};
}

static DsaMoeShape shape_v2(int64_t N, int64_t D, int64_t E, int64_t K, int64_t G, int64_t TG, bool grouped) {
    return (DsaMoeShape){.tokens = N, .dim = D, .experts = E, .topk = K, .n_group = G, .topk_group = TG,
                         .scoring = DSA_MOE_SOFTMAX, .method = grouped ? DSA_MOE_GROUP_LIMITED_GREEDY : DSA_MOE_GREEDY,
                         .norm_topk_prob = true /* ignored with softmax (moe.h NOTE) */, .scaling = 16.0f};
}

/* Random logits with exact ties: every 5th token all equal, every 5th + 1 quantized to
 * a few values, every 5th + 2 the same values in every group (tied groups). */
static void tie_logits(float *lg, const DsaMoeShape *s, uint64_t seed) {
    const int64_t E = s->experts, per = E / s->n_group;
    for (int64_t n = 0; n < s->tokens; n++)
        for (int64_t e = 0; e < E; e++) {
            float *v = &lg[n * E + e];
            switch (n % 5) {
            case 0: *v = 0.5f; break;
            case 1: *v = 0.5f * (float)(dsa_rng_u32_at(seed, (uint64_t)n, (uint64_t)e) % 3); break;
            case 2: *v = (float)(2 * rnd(seed, (uint64_t)n, (uint64_t)(e % per))); break;
            default: *v = (float)(2 * rnd(seed, (uint64_t)n, (uint64_t)e));
            }
        }
}

static void check_routing(const DsaMoeShape *s, const float *bias, uint64_t seed) {
    const int64_t N = s->tokens, E = s->experts, K = s->topk;
    float *lg = test_falloc(N * E), *sc = test_falloc(N * E), *w = test_falloc(N * K);
    int32_t *sel = calloc((size_t)(N * K), sizeof *sel);
    tie_logits(lg, s, seed);
    dsa_moe_route(sel, w, sc, lg, bias, s);
    double *dl = test_dalloc(E), *ds = test_dalloc(E), *ch = test_dalloc(E), *ws = test_dalloc(K), *want_w = test_dalloc(N * K);
    double *want_s = test_dalloc(N * E);
    int *rs = malloc(sizeof(int) * (size_t)K);
    for (int64_t n = 0; n < N; n++) {
        for (int64_t e = 0; e < E; e++) dl[e] = lg[n * E + e];
        ref_scores(want_s + n * E, dl, s);
        /* selection from the library's fp32 scores, so exact ties stay exact */
        for (int64_t e = 0; e < E; e++) {
            float c = sc[n * E + e];
            if (s->method == DSA_MOE_NOAUX_TC && bias) c = c + bias[e];
            ch[e] = c, ds[e] = sc[n * E + e];
        }
        ref_select(rs, ch, s, true);
        for (int64_t k = 0; k < K; k++)
            if (rs[k] != sel[n * K + k])
                fail_msg("token %lld (tie pattern %lld) slot %lld: expert %d, reference %d", (long long)n,
                         (long long)(n % 5), (long long)k, sel[n * K + k], rs[k]);
        ref_weights(ws, rs, ds, s);
        for (int64_t k = 0; k < K; k++) want_w[n * K + k] = ws[k];
    }
    test_expect_close("scores", sc, want_s, N * E, 1e-6);
    test_expect_close("routing weights", w, want_w, N * K, 1e-6);
    /* all-equal logits: the lowest indices of the first groups win */
    if (!bias)
        for (int64_t k = 0; k < K; k++) assert_int_equal(sel[k], k);
    free(lg), free(sc), free(w), free(sel), free(dl), free(ds), free(ch), free(ws), free(want_w), free(want_s), free(rs);
}

static void test_route_v3(void **state) {
    (void)state;
    DsaMoeShape s = shape_v3(203, 0, 16, 4, 4, 2);
    check_routing(&s, NULL, 11);
    float bias[16];
    for (int e = 0; e < 16; e++) bias[e] = 0.25f * (float)(e % 2); /* equal biases keep some ties */
    check_routing(&s, bias, 12);
    for (int e = 0; e < 16; e++) bias[e] = (float)(0.3 * rnd(13, 0, (uint64_t)e));
    check_routing(&s, bias, 14);
    s = shape_v3(57, 0, 8, 3, 1, 1); /* one group */
    check_routing(&s, bias, 15);
    s = shape_v3(33, 0, 8, 1, 4, 1); /* top-1 */
    s.norm_topk_prob = false;
    check_routing(&s, bias, 16);
}

static void test_route_v2(void **state) {
    (void)state;
    DsaMoeShape s = shape_v2(203, 0, 10, 3, 1, 1, false);
    check_routing(&s, NULL, 21);
    s = shape_v2(203, 0, 12, 5, 3, 2, true);
    check_routing(&s, NULL, 22);
    s = shape_v2(64, 0, 12, 2, 4, 1, true);
    s.scaling = 1.0f, s.norm_topk_prob = false; /* V2-Lite */
    check_routing(&s, NULL, 23);
}

/* noaux_tc ranks groups by the sum of their two best experts, group_limited_greedy by
 * their best one: a group with one strong expert loses to a group with two good ones. */
static void test_route_group_rule(void **state) {
    (void)state;
    /* group 0 = experts 0-3: one at 3.0, the rest -3; group 1 = experts 4-7: two at 1.5 */
    const float lg[8] = {3.0f, -3.0f, -3.0f, -3.0f, 1.5f, 1.5f, -3.0f, -3.0f};
    float sc[8], w[2];
    int32_t sel[2];
    DsaMoeShape s = shape_v3(1, 0, 8, 2, 2, 1);
    dsa_moe_route(sel, w, sc, lg, NULL, &s);
    assert_int_equal(sel[0], 4);
    assert_int_equal(sel[1], 5);
    assert_float_equal(w[0], 1.25f, 1e-6f); /* normalized then scaled: 2.5 / 2 */
    s = shape_v2(1, 0, 8, 2, 2, 1, true);
    dsa_moe_route(sel, w, sc, lg, NULL, &s);
    assert_int_equal(sel[0], 0);
    assert_int_equal(sel[1], 1); /* -3 ties: lower index first */
    /* the bias moves the selection, not the weights */
    const float bias[8] = {0, 0, 0, 0, 0, 0, 0, 10.0f};
    s = shape_v3(1, 0, 8, 2, 2, 1);
    dsa_moe_route(sel, w, sc, lg, bias, &s);
    assert_int_equal(sel[0], 4);
    assert_int_equal(sel[1], 7);
    const double s4 = 1 / (1 + exp(-1.5)), s7 = 1 / (1 + exp(3.0));
    assert_float_equal(w[1], (float)(2.5 * s7 / (s4 + s7)), 1e-6f);
}

/* ∂loss/∂logits of the routing weights against central differences of fp64 weights
 * with the selection held. */
static void check_route_backward(const DsaMoeShape *s, uint64_t seed) {
    const int64_t N = s->tokens, E = s->experts, K = s->topk;
    float *lg = test_falloc(N * E), *sc = test_falloc(N * E), *w = test_falloc(N * K), *dw = test_falloc(N * K), *dl = test_falloc(N * E);
    int32_t *sel = calloc((size_t)(N * K), sizeof *sel);
    for (int64_t i = 0; i < N * E; i++) lg[i] = (float)rnd(seed, 1, (uint64_t)i);
    for (int64_t i = 0; i < N * K; i++) dw[i] = (float)rnd(seed, 2, (uint64_t)i);
    dsa_moe_route(sel, w, sc, lg, NULL, s);
    dsa_moe_route_backward(dl, dw, sel, sc, s);
    double *want = test_dalloc(N * E), *l = test_dalloc(E), *p = test_dalloc(E), *wk = test_dalloc(K);
    int *se = malloc(sizeof(int) * (size_t)K);
    const double h = 1e-6;
    for (int64_t n = 0; n < N; n++) {
        for (int64_t k = 0; k < K; k++) se[k] = sel[n * K + k];
        for (int64_t e = 0; e < E; e++) {
            double f[2];
            for (int side = 0; side < 2; side++) {
                for (int64_t j = 0; j < E; j++) l[j] = lg[n * E + j];
                l[e] += side ? -h : h;
                ref_scores(p, l, s);
                ref_weights(wk, se, p, s);
                f[side] = 0;
                for (int64_t k = 0; k < K; k++) f[side] += wk[k] * dw[n * K + k];
            }
            want[n * E + e] = (f[0] - f[1]) / (2 * h);
        }
    }
    test_expect_close("dlogits", dl, want, N * E, 1e-5);
    free(lg), free(sc), free(w), free(dw), free(dl), free(sel), free(want), free(l), free(p), free(wk), free(se);
}

static void test_route_backward(void **state) {
    (void)state;
    DsaMoeShape s = shape_v3(37, 0, 8, 3, 2, 1);
    check_route_backward(&s, 31);
    s.norm_topk_prob = false;
    check_route_backward(&s, 32);
    s = shape_v2(37, 0, 10, 3, 1, 1, false);
    check_route_backward(&s, 33);
    s = shape_v2(37, 0, 12, 4, 3, 2, true);
    check_route_backward(&s, 34);
}

/* ---- the MoE layer ------------------------------------------------------------------- */

/* One layer's parameters in one flat vector (so finite differences can walk it). */
typedef struct {
    DsaMoeShape s;
    int64_t np, o_router, o_bias, o_gate, o_up, o_down, o_sg, o_su, o_sd;
    float *P, *G, *x, *R, *out, *dx, *abuf, *sbuf;
    const float **wg, **wu, **wd;
    float **gg, **gu, **gd;
    DsaMoeActs a;
    DsaMoeScratch sc;
} Layer;

static Layer layer_new(DsaMoeShape s, uint64_t seed) {
    Layer c = {.s = s};
    const int64_t N = s.tokens, D = s.dim, E = s.experts, I = s.inter, Is = s.shared_inter;
    int64_t o = 0;
    c.o_router = o, o += E * D;
    c.o_bias = o, o += E;
    c.o_gate = o, o += E * I * D;
    c.o_up = o, o += E * I * D;
    c.o_down = o, o += E * D * I;
    c.o_sg = o, o += Is * D;
    c.o_su = o, o += Is * D;
    c.o_sd = o, o += D * Is;
    c.np = o;
    c.P = test_falloc(o), c.G = test_falloc(o);
    for (int64_t i = 0; i < o; i++) c.P[i] = (float)(0.4 * rnd(seed, 0, (uint64_t)i));
    for (int64_t e = 0; e < E; e++) c.P[c.o_bias + e] = (float)(0.05 * rnd(seed, 5, (uint64_t)e));
    c.x = test_falloc(N * D), c.R = test_falloc(N * D), c.out = test_falloc(N * D), c.dx = test_falloc(N * D);
    for (int64_t i = 0; i < N * D; i++) c.x[i] = (float)rnd(seed, 1, (uint64_t)i), c.R[i] = (float)rnd(seed, 2, (uint64_t)i);
    c.wg = calloc((size_t)E, sizeof *c.wg), c.wu = calloc((size_t)E, sizeof *c.wu), c.wd = calloc((size_t)E, sizeof *c.wd);
    c.gg = calloc((size_t)E, sizeof *c.gg), c.gu = calloc((size_t)E, sizeof *c.gu), c.gd = calloc((size_t)E, sizeof *c.gd);
    for (int64_t e = 0; e < E; e++) {
        c.wg[e] = c.P + c.o_gate + e * I * D, c.gg[e] = c.G + c.o_gate + e * I * D;
        c.wu[e] = c.P + c.o_up + e * I * D, c.gu[e] = c.G + c.o_up + e * I * D;
        c.wd[e] = c.P + c.o_down + e * D * I, c.gd[e] = c.G + c.o_down + e * D * I;
    }
    c.abuf = test_falloc(dsa_moe_acts_floats(&c.s));
    c.sbuf = test_falloc(dsa_moe_scratch_floats(&c.s));
    dsa_moe_acts_carve(&c.a, c.abuf, &c.s);
    dsa_moe_scratch_carve(&c.sc, c.sbuf, &c.s);
    return c;
}

static void layer_free(Layer *c) {
    free(c->P), free(c->G), free(c->x), free(c->R), free(c->out), free(c->dx), free(c->abuf), free(c->sbuf);
    free(c->wg), free(c->wu), free(c->wd), free(c->gg), free(c->gu), free(c->gd);
}

static DsaMoeWeights layer_weights(const Layer *c) {
    const bool sh = c->s.shared_inter > 0, bias = c->s.method == DSA_MOE_NOAUX_TC;
    return (DsaMoeWeights){.router = c->P + c->o_router, .router_bias = bias ? c->P + c->o_bias : NULL,
                           .gate = c->wg, .up = c->wu, .down = c->wd,
                           .shared_gate = sh ? c->P + c->o_sg : NULL, .shared_up = sh ? c->P + c->o_su : NULL,
                           .shared_down = sh ? c->P + c->o_sd : NULL};
}

static void layer_run_on(Layer *c, const DsaBackend *be) {
    DsaMoeWeights w = layer_weights(c);
    const bool sh = c->s.shared_inter > 0;
    DsaMoeGrads g = {.router = c->G + c->o_router, .gate = c->gg, .up = c->gu, .down = c->gd,
                     .shared_gate = sh ? c->G + c->o_sg : NULL, .shared_up = sh ? c->G + c->o_su : NULL,
                     .shared_down = sh ? c->G + c->o_sd : NULL};
    memset(c->G, 0, sizeof(float) * (size_t)c->np);
    dsa_moe_forward(c->out, &c->a, c->x, &w, &c->s, &c->sc, be);
    dsa_moe_backward(c->dx, &g, c->R, &c->a, c->x, &w, &c->s, &c->sc, be);
}

static void layer_run(Layer *c) { layer_run_on(c, dsa_backend_cpu()); }

static double silu(double v) { return v / (1 + exp(-v)); }

/* fp64 reference: out (may be NULL) and Σ out ⊙ R; sel [N, K] receives the selection. */
static double ref_layer(const Layer *c, const double *P, const double *x, int *sel, double *out) {
    const DsaMoeShape *s = &c->s;
    const int64_t N = s->tokens, D = s->dim, E = s->experts, K = s->topk, I = s->inter, Is = s->shared_inter;
    double *lg = test_dalloc(E), *sc = test_dalloc(E), *ch = test_dalloc(E), *w = test_dalloc(K), *h = test_dalloc(I > Is ? I : Is);
    double *o = test_dalloc(D), loss = 0;
    for (int64_t n = 0; n < N; n++) {
        const double *xn = x + n * D;
        for (int64_t e = 0; e < E; e++) {
            lg[e] = 0;
            for (int64_t d = 0; d < D; d++) lg[e] += xn[d] * P[c->o_router + e * D + d];
        }
        ref_scores(sc, lg, s);
        for (int64_t e = 0; e < E; e++) ch[e] = sc[e] + (s->method == DSA_MOE_NOAUX_TC ? P[c->o_bias + e] : 0);
        int *se = sel + n * K;
        ref_select(se, ch, s, false);
        ref_weights(w, se, sc, s);
        for (int64_t d = 0; d < D; d++) o[d] = 0;
        for (int64_t k = 0; k <= K; k++) { /* K routed experts, then the shared ones */
            const bool shared = k == K;
            if (shared && !Is) break;
            const int64_t width = shared ? Is : I;
            const double *wg = shared ? P + c->o_sg : P + c->o_gate + se[k] * I * D;
            const double *wu = shared ? P + c->o_su : P + c->o_up + se[k] * I * D;
            const double *wd = shared ? P + c->o_sd : P + c->o_down + se[k] * D * I;
            for (int64_t i = 0; i < width; i++) {
                double gv = 0, uv = 0;
                for (int64_t d = 0; d < D; d++) gv += wg[i * D + d] * xn[d], uv += wu[i * D + d] * xn[d];
                h[i] = silu(gv) * uv;
            }
            const double scale = shared ? 1.0 : w[k];
            for (int64_t d = 0; d < D; d++) {
                double acc = 0;
                for (int64_t i = 0; i < width; i++) acc += wd[d * width + i] * h[i];
                o[d] += scale * acc;
            }
        }
        for (int64_t d = 0; d < D; d++) {
            if (out) out[n * D + d] = o[d];
            loss += o[d] * c->R[n * D + d];
        }
    }
    free(lg), free(sc), free(ch), free(w), free(h), free(o);
    return loss;
}

/* Forward vs fp64, then every gradient vs central differences of the fp64 reference. */
static void check_layer(DsaMoeShape s, uint64_t seed) {
    Layer c = layer_new(s, seed);
    layer_run(&c);
    const int64_t N = s.tokens, D = s.dim, K = s.topk;
    double *P = test_dalloc(c.np), *x = test_dalloc(N * D), *want = test_dalloc(N * D);
    for (int64_t i = 0; i < c.np; i++) P[i] = c.P[i];
    for (int64_t i = 0; i < N * D; i++) x[i] = c.x[i];
    int *sel0 = malloc(sizeof(int) * (size_t)(N * K)), *sel1 = malloc(sizeof(int) * (size_t)(N * K));
    ref_layer(&c, P, x, sel0, want);
    for (int64_t i = 0; i < N * K; i++)
        if (sel0[i] != c.a.sel[i]) fail_msg("selection %lld: expert %d, reference %d", (long long)i, c.a.sel[i], sel0[i]);
    test_expect_close("MoE output", c.out, want, N * D, 2e-6);

    /* central differences: every parameter but the (frozen) bias, and every input */
    const double h = 1e-4;
    int64_t skipped = 0, checked = 0;
    double *fd = test_dalloc(c.np + N * D);
    for (int64_t j = 0; j < c.np + N * D; j++) {
        if (j >= c.o_bias && j < c.o_bias + s.experts) continue;
        double *v = j < c.np ? &P[j] : &x[j - c.np];
        const double saved = *v;
        double f[2];
        bool flip = false;
        for (int side = 0; side < 2; side++) {
            *v = saved + (side ? -h : h);
            f[side] = ref_layer(&c, P, x, sel1, NULL);
            flip |= memcmp(sel0, sel1, sizeof(int) * (size_t)(N * K)) != 0;
        }
        *v = saved;
        if (flip) {
            skipped++;
            fd[j] = j < c.np ? c.G[j] : c.dx[j - c.np]; /* not checkable: the selection changed */
            continue;
        }
        fd[j] = (f[0] - f[1]) / (2 * h);
        checked++;
    }
    if (skipped) print_message("MoE layer: %lld of %lld perturbations flip a selection; skipped\n", (long long)skipped,
                               (long long)(skipped + checked));
    assert_true(skipped * 20 < checked);
    const double tol = 1e-4;
    test_expect_close("d router", c.G + c.o_router, fd + c.o_router, s.experts * D, tol);
    test_expect_close("d experts gate", c.G + c.o_gate, fd + c.o_gate, s.experts * s.inter * D, tol);
    test_expect_close("d experts up", c.G + c.o_up, fd + c.o_up, s.experts * s.inter * D, tol);
    test_expect_close("d experts down", c.G + c.o_down, fd + c.o_down, s.experts * s.inter * D, tol);
    if (s.shared_inter) {
        test_expect_close("d shared gate", c.G + c.o_sg, fd + c.o_sg, s.shared_inter * D, tol);
        test_expect_close("d shared up", c.G + c.o_su, fd + c.o_su, s.shared_inter * D, tol);
        test_expect_close("d shared down", c.G + c.o_sd, fd + c.o_sd, s.shared_inter * D, tol);
    }
    test_expect_close("dx", c.dx, fd + c.np, N * D, tol);
    for (int64_t e = 0; e < s.experts; e++) assert_true(c.G[c.o_bias + e] == 0.0f); /* never written */
    free(P), free(x), free(want), free(sel0), free(sel1), free(fd);
    layer_free(&c);
}

static void test_layer_v3(void **state) {
    (void)state;
    DsaMoeShape s = shape_v3(13, 10, 8, 2, 2, 1);
    s.inter = 6, s.shared_inter = 12; /* two shared experts */
    check_layer(s, 41);
    s.tokens = 1; /* a single token */
    check_layer(s, 42);
}

static void test_layer_v2(void **state) {
    (void)state;
    DsaMoeShape s = shape_v2(11, 9, 6, 3, 3, 2, true);
    s.inter = 5, s.shared_inter = 5;
    check_layer(s, 43);
    s = shape_v2(12, 8, 8, 2, 1, 1, false); /* V2-Lite routing, no shared experts */
    s.inter = 7, s.shared_inter = 0, s.scaling = 1.0f, s.norm_topk_prob = false;
    check_layer(s, 44);
}

static void test_layer_threads(void **state) {
    (void)state;
    DsaMoeShape s = shape_v3(96, 32, 16, 4, 4, 2);
    s.inter = 24, s.shared_inter = 24;
    Layer c[2] = {layer_new(s, 51), layer_new(s, 51)};
    const int saved = dsa_backend_cpu_threads();
    for (int r = 0; r < 2; r++) {
        dsa_backend_cpu_set_threads(r == 0 ? 1 : 3);
        layer_run(&c[r]);
    }
    dsa_backend_cpu_set_threads(saved);
    assert_memory_equal(c[0].a.sel, c[1].a.sel, sizeof(int32_t) * (size_t)(s.tokens * s.topk));
    assert_memory_equal(c[0].out, c[1].out, sizeof(float) * (size_t)(s.tokens * s.dim));
    assert_memory_equal(c[0].dx, c[1].dx, sizeof(float) * (size_t)(s.tokens * s.dim));
    assert_memory_equal(c[0].G, c[1].G, sizeof(float) * (size_t)c[0].np);
    layer_free(&c[0]);
    layer_free(&c[1]);
}

/* max |a − b| / max |b| */
static double rel_diff(const float *a, const float *b, int64_t n) {
    double d = 0, m = 0;
    for (int64_t i = 0; i < n; i++) d = fmax(d, fabs((double)a[i] - b[i])), m = fmax(m, fabs((double)b[i]));
    return m > 0 ? d / m : d;
}

/* train.precision bf16: the experts' GEMMs on bf16 operands, the router's in fp32, so the
 * routing (selection and scores) is fp32's bit for bit and the outputs and gradients are
 * within bf16 rounding of fp32's (2^-8 relative per operand, over sums of tens of terms). */
static void test_layer_bf16(void **state) {
    (void)state;
    DsaMoeShape s = shape_v3(40, 32, 16, 4, 4, 2);
    s.inter = 24, s.shared_inter = 24;
    const DsaBackend *bf = NULL;
    assert_ok(dsa_backend_for_precision(dsa_backend_cpu(), "bf16", &bf));
    Layer c[2] = {layer_new(s, 61), layer_new(s, 61)};
    layer_run(&c[0]);
    layer_run_on(&c[1], bf);
    assert_memory_equal(c[0].a.sel, c[1].a.sel, sizeof(int32_t) * (size_t)(s.tokens * s.topk));
    assert_memory_equal(c[0].a.scores, c[1].a.scores, sizeof(float) * (size_t)(s.tokens * s.experts));
    const int64_t nd = s.tokens * s.dim;
    const double dout = rel_diff(c[1].out, c[0].out, nd), ddx = rel_diff(c[1].dx, c[0].dx, nd);
    const double dg = rel_diff(c[1].G, c[0].G, c[0].np);
    print_message("bf16 vs fp32: out %.2e, dx %.2e, parameter gradients %.2e (of max |fp32|)\n", dout, ddx, dg);
    assert_true(dout > 0 && dout < 2e-2 && ddx > 0 && ddx < 2e-2 && dg > 0 && dg < 3e-2);
    layer_free(&c[0]);
    layer_free(&c[1]);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_route_v3),
        cmocka_unit_test(test_route_v2),
        cmocka_unit_test(test_route_group_rule),
        cmocka_unit_test(test_route_backward),
        cmocka_unit_test(test_layer_v3),
        cmocka_unit_test(test_layer_v2),
        cmocka_unit_test(test_layer_threads),
        cmocka_unit_test(test_layer_bf16),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    test_tmpdir_remove();
    return rc;
}
