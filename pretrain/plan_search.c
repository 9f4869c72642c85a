/* plan_search.c: the layouts of a number of devices for a stage, ranked (plan.h
 * dsa_plan_search), and issue 15's single-layer check (dsa_plan_layer_check), both on
 * the one memory model of plan.c. */
#include <stdlib.h>
#include <string.h>

#include "core/checked.h"
#include "core/mem.h"
#include "pretrain/plan.h"
#include "pretrain/plan_internal.h"

enum { MAX_DIVISORS = 4096 };

/* The divisors of n in ascending order; their count. */
static int divisors(int64_t n, int64_t *out) {
    int lo = 0, hi = 0;
    int64_t high[MAX_DIVISORS];
    for (int64_t d = 1; d <= n / d && lo + hi < MAX_DIVISORS; d++) {
        if (n % d) continue;
        out[lo++] = d;
        if (d != n / d) high[hi++] = n / d;
    }
    for (int i = hi - 1; i >= 0; i--) out[lo++] = high[i];
    return lo;
}

/* The ranking rule: step time, then bytes per device, then smaller cp, then smaller ep. */
static int rank_cmp(const void *pa, const void *pb) {
    const DsaPlanStage *a = pa, *b = pb;
    if (a->step_s != b->step_s) return a->step_s < b->step_s ? -1 : 1;
    if (a->bytes.total != b->bytes.total) return a->bytes.total < b->bytes.total ? -1 : 1;
    if (a->layout.cp != b->layout.cp) return a->layout.cp < b->layout.cp ? -1 : 1;
    if (a->layout.ep != b->layout.ep) return a->layout.ep < b->layout.ep ? -1 : 1;
    return 0;
}

DsaStatus dsa_plan_search(const DsaConfig *cfg, int s, int64_t gpus, const DsaPlanLayout *base,
                          const DsaPlanHardware *hw, DsaPlanStage *out, int cap, int *n_fit, int *n_valid,
                          DsaPlanStage *closest) {
    *n_fit = *n_valid = 0;
    if (gpus < 1 || gpus > INT32_MAX) DSA_FAIL(DSA_ERR_ARG, "--gpus %lld is out of range: 1 to %d", (long long)gpus, INT32_MAX);
    int64_t *divs = dsa_malloc(MAX_DIVISORS * sizeof *divs);
    if (!divs) DSA_FAIL(DSA_ERR_NOMEM, "the divisors of --gpus %lld", (long long)gpus);
    const int nd = divisors(gpus, divs);
    const int64_t E = cfg->model.has_moe ? cfg->model.n_routed_experts : 1;
    int n_ep = 0; /* the ep candidates: divisors of gpus that divide the experts */
    for (int j = 0; j < nd; j++) n_ep += E % divs[j] == 0;
    size_t fit_cap = (size_t)nd * (size_t)n_ep;
    DsaPlanStage *fit = dsa_malloc(fit_cap * sizeof *fit);
    DsaStatus st = DSA_OK;
    if (!fit) DSA_FAIL_GOTO(st, done, DSA_ERR_NOMEM, "%zu layouts of --gpus %lld", fit_cap, (long long)gpus);
    bool have_closest = false;
    for (int i = 0; i < nd; i++)     /* cp */
        for (int j = 0; j < nd; j++) { /* ep */
            if (E % divs[j]) continue;
            DsaPlanLayout l = *base;
            l.cp = divs[i], l.dp = gpus / divs[i], l.ep = divs[j];
            DsaPlanStage p;
            DsaStatus r = dsa_plan_stage(cfg, s, &l, hw, &p);
            if (r == DSA_ERR_ARG) { /* a layout the stage cannot run */
                dsa_error_clear();
                continue;
            }
            if (r != DSA_OK) DSA_TRY_GOTO(st, r, done);
            ++*n_valid;
            if (p.fits)
                fit[(*n_fit)++] = p;
            else if (closest && (!have_closest || p.bytes.total < closest->bytes.total))
                *closest = p, have_closest = true;
        }
    qsort(fit, (size_t)*n_fit, sizeof *fit, rank_cmp);
    for (int i = 0; i < *n_fit && i < cap; i++) out[i] = fit[i];
done:
    dsa_free(fit, fit_cap * sizeof *fit);
    dsa_free(divs, MAX_DIVISORS * sizeof *divs);
    return st;
}

/* n copies of one layer's parameters. */
static void scale_params(PlanParams *p, int64_t n, bool *of) {
    int64_t *f[] = {&p->count, &p->trained, &p->ne, &p->ne_train, &p->ex, &p->ex_train,
                    &p->mm_main, &p->mm_layers, &p->mm_expert, &p->mm_indexer};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) *f[i] = dsa_mul_sticky(*f[i], n, of);
}

/* The bytes of n layers (scope) on one device. */
static DsaStatus layer_bytes(const DsaConfig *cfg, const PlanShape *base, PlanScope scope, int64_t n,
                             DsaPlanRecompute rec, DsaPlanBytes *b) {
    PlanParams p;
    DSA_TRY(dsa_plan_params(&cfg->model, base->train_main, scope, 1, &p));
    bool of = false;
    scale_params(&p, n, &of);
    if (of) DSA_FAIL(DSA_ERR_CONFIG, "%lld layers: the parameter count overflows", (long long)n);
    PlanShape sh = *base;
    sh.lay.recompute = rec;
    sh.head = false;
    sh.n_attn = scope == PLAN_SCOPE_ATTENTION ? n : 0;
    sh.n_moe = scope == PLAN_SCOPE_LAYER && p.layer_moe ? n : 0;
    sh.n_dense = scope == PLAN_SCOPE_LAYER && !p.layer_moe ? n : 0;
    return dsa_plan_bytes(&sh, &p, b);
}

/* The most layers that fit, up to the model's own count: the bytes grow by the same
 * amount per layer. */
static DsaStatus layers_fit(const DsaConfig *cfg, const PlanShape *sh, PlanScope scope, DsaPlanRecompute rec,
                            int64_t mem, DsaPlanBytes *one, int64_t *n) {
    DsaPlanBytes b1, b2;
    DSA_TRY(layer_bytes(cfg, sh, scope, 1, rec, &b1));
    DSA_TRY(layer_bytes(cfg, sh, scope, 2, rec, &b2));
    if (one) *one = b1;
    const int64_t step = b2.total - b1.total;
    const int64_t all = cfg->model.num_hidden_layers;
    *n = b1.total > mem ? 0 : step > 0 ? 1 + (mem - b1.total) / step : all;
    if (*n > all) *n = all;
    return DSA_OK;
}

DsaStatus dsa_plan_layer_check(const DsaConfig *cfg, int s, int64_t seq_len, bool attention_only,
                               const DsaPlanHardware *hw, DsaPlanLayerCheck *out) {
    memset(out, 0, sizeof *out);
    DsaPlanLayout l = {.dp = 1, .cp = 1, .ep = 1, .zero = 0, .precision = DSA_PLAN_BF16,
                       .recompute = DSA_PLAN_RECOMPUTE_OFF, .micro_batch = 1, .seq_len = seq_len};
    PlanShape sh;
    DSA_TRY(dsa_plan_shape(cfg, s, &l, &sh));
    const PlanScope scope = attention_only ? PLAN_SCOPE_ATTENTION : PLAN_SCOPE_LAYER;
    out->stage = s;
    out->attention_only = attention_only;
    DSA_TRY(layers_fit(cfg, &sh, scope, DSA_PLAN_RECOMPUTE_OFF, hw->gpu_mem, &out->one, &out->layers_fit));
    DSA_TRY(layers_fit(cfg, &sh, scope, DSA_PLAN_RECOMPUTE_ON, hw->gpu_mem, NULL, &out->layers_fit_recompute));
    out->one_fits = out->one.total <= hw->gpu_mem;
    out->layers_total = cfg->model.num_hidden_layers;
    return DSA_OK;
}
