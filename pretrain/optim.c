/* optim.c: AdamW with per-group clipping and the LR schedule (optim.h, DSA-SPEC §1), over
 * the whole flat layout or one rank's range of it (ZeRO-1). The moments, parameters and
 * gradients are backend memory: the host only launches the backend's sum_squares (a scalar
 * back), fill_zero, scale and adamw_step. */
#include "pretrain/optim.h"

#include <math.h>
#include <string.h>

#include "core/mem.h"

DsaStatus dsa_optim_init_range(DsaOptimizer *o, const DsaParamTable *table, const DsaBackend *be, int64_t lo,
                               int64_t hi) {
    DSA_ASSERT(0 <= lo && lo <= hi && hi <= table->total);
    memset(o, 0, sizeof *o);
    o->table = table;
    o->be = be;
    o->lo = lo, o->hi = hi;
    const size_t n = (size_t)(hi - lo);
    o->m = be->alloc((n ? n : 1) * sizeof(float)); /* backend memory, zero-filled */
    o->v = be->alloc((n ? n : 1) * sizeof(float));
    if (!o->m || !o->v) {
        dsa_optim_free(o);
        DSA_FAIL(DSA_ERR_NOMEM, "AdamW moments: 2 x %.1f MiB", (double)n * 4 / (1 << 20));
    }
    return DSA_OK;
}

DsaStatus dsa_optim_init(DsaOptimizer *o, const DsaParamTable *table, const DsaBackend *be) {
    return dsa_optim_init_range(o, table, be, 0, table->total);
}

void dsa_optim_free(DsaOptimizer *o) {
    if (o->table) {
        const size_t n = (size_t)(o->hi - o->lo);
        if (o->m) o->be->release(o->m, (n ? n : 1) * sizeof(float));
        if (o->v) o->be->release(o->v, (n ? n : 1) * sizeof(float));
    }
    memset(o, 0, sizeof *o);
}

/* The piece [*a, *b) of tensor p inside [lo, hi); false when empty. */
static bool piece(const DsaOptimizer *o, const DsaParamInfo *p, int64_t *a, int64_t *b) {
    *a = p->offset > o->lo ? p->offset : o->lo;
    *b = p->offset + p->numel < o->hi ? p->offset + p->numel : o->hi;
    return *a < *b;
}

void dsa_optim_reset_group(DsaOptimizer *o, DsaParamGroup group) {
    for (int i = 0; i < o->table->count; i++) {
        const DsaParamInfo *p = &o->table->info[i];
        int64_t a, b;
        if (p->group != group || !piece(o, p, &a, &b)) continue;
        o->be->fill_zero(o->m + (a - o->lo), (size_t)(b - a) * sizeof(float));
        o->be->fill_zero(o->v + (a - o->lo), (size_t)(b - a) * sizeof(float));
    }
    o->group_steps[group] = 0;
}

void dsa_optim_sumsq(const DsaOptimizer *o, const float *grads, const bool *trainable, double sumsq[DSA_GROUP_COUNT],
                     bool active[DSA_GROUP_COUNT]) {
    const DsaParamTable *t = o->table;
    /* Norms per group, summed in table order (deterministic). */
    for (int i = 0; i < t->count; i++) {
        if (!trainable[i] || t->info[i].frozen) continue;
        const DsaParamInfo *p = &t->info[i];
        int64_t a, b;
        if (!piece(o, p, &a, &b)) continue;
        sumsq[p->group] += o->be->sum_squares(grads + a, b - a);
        active[p->group] = true;
    }
}

void dsa_optim_apply(DsaOptimizer *o, float *params, float *grads, const bool *trainable, const DsaOptimConfig *cfg,
                     double lr, const double sumsq[DSA_GROUP_COUNT], const bool active[DSA_GROUP_COUNT],
                     DsaOptimStepInfo *info) {
    const DsaParamTable *t = o->table;
    memset(info, 0, sizeof *info);
    for (int g = 0; g < DSA_GROUP_COUNT; g++) {
        info->group_active[g] = active[g];
        info->grad_norm[g] = sqrt(sumsq[g]);
        info->clip_coef[g] = 1.0;
        /* NOTE: PyTorch's clip_grad_norm_ rule: scale by clip / (norm + 1e-6) when it is < 1. */
        if (cfg->grad_clip > 0 && info->grad_norm[g] > cfg->grad_clip)
            info->clip_coef[g] = cfg->grad_clip / (info->grad_norm[g] + 1e-6);
        if (info->group_active[g]) o->group_steps[g]++;
    }
    for (int i = 0; i < t->count; i++) {
        if (!trainable[i] || t->info[i].frozen) continue;
        const DsaParamInfo *p = &t->info[i];
        int64_t a, b;
        if (!piece(o, p, &a, &b)) continue;
        float *g = grads + a;
        if (info->clip_coef[p->group] != 1.0) o->be->scale(g, (float)info->clip_coef[p->group], b - a);
        double step = (double)o->group_steps[p->group];
        DsaAdamWParams ap = {
            .lr = (float)lr,
            .beta1 = (float)cfg->beta1,
            .beta2 = (float)cfg->beta2,
            .eps = (float)cfg->eps,
            .weight_decay = p->decay ? (float)cfg->weight_decay : 0.0f,
            .bias_correction1 = (float)(1.0 - pow(cfg->beta1, step)),
            .bias_correction2 = (float)(1.0 - pow(cfg->beta2, step)),
        };
        o->be->adamw_step(params + a, g, o->m + (a - o->lo), o->v + (a - o->lo), b - a, &ap);
    }
}

void dsa_optim_step(DsaOptimizer *o, float *params, float *grads, const bool *trainable, const DsaOptimConfig *cfg,
                    double lr, DsaOptimStepInfo *info) {
    double sumsq[DSA_GROUP_COUNT] = {0};
    bool active[DSA_GROUP_COUNT] = {0};
    dsa_optim_sumsq(o, grads, trainable, sumsq, active);
    dsa_optim_apply(o, params, grads, trainable, cfg, lr, sumsq, active, info);
}

double dsa_lr_at(const DsaStageConfig *stage, double min_lr, int64_t s) {
    const int64_t warm = stage->lr_warmup_steps;
    if (s < warm) return stage->lr * (double)(s + 1) / (double)warm;
    if (!strcmp(stage->lr_schedule, "cosine")) {
        int64_t span = stage->steps - warm;
        double progress = span > 1 ? (double)(s - warm) / (double)(span - 1) : 1.0;
        if (progress > 1) progress = 1;
        return min_lr + 0.5 * (stage->lr - min_lr) * (1.0 + cos(M_PI * progress));
    }
    return stage->lr;
}
