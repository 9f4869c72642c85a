/* optim.c: AdamW with per-group clipping and the LR schedule (optim.h, DSA-SPEC §1). The
 * moments, parameters and gradients are backend memory: the host only launches the
 * backend's sum_squares (a scalar back), scale and adamw_step. */
#include "pretrain/optim.h"

#include <math.h>
#include <string.h>

#include "core/mem.h"

DsaStatus dsa_optim_init(DsaOptimizer *o, const DsaParamTable *table, const DsaBackend *be) {
    memset(o, 0, sizeof *o);
    o->table = table;
    o->be = be;
    o->m = be->alloc((size_t)table->total * sizeof(float)); /* backend memory, zero-filled */
    o->v = be->alloc((size_t)table->total * sizeof(float));
    if (!o->m || !o->v) {
        dsa_optim_free(o);
        DSA_FAIL(DSA_ERR_NOMEM, "AdamW moments: 2 x %.1f MiB", (double)table->total * 4 / (1 << 20));
    }
    return DSA_OK;
}

void dsa_optim_free(DsaOptimizer *o) {
    if (o->table) {
        if (o->m) o->be->release(o->m, (size_t)o->table->total * sizeof(float));
        if (o->v) o->be->release(o->v, (size_t)o->table->total * sizeof(float));
    }
    memset(o, 0, sizeof *o);
}

void dsa_optim_reset_group(DsaOptimizer *o, DsaParamGroup group) {
    for (int i = 0; i < o->table->count; i++) {
        const DsaParamInfo *p = &o->table->info[i];
        if (p->group != group) continue;
        o->be->fill_zero(o->m + p->offset, (size_t)p->numel * sizeof(float));
        o->be->fill_zero(o->v + p->offset, (size_t)p->numel * sizeof(float));
    }
    o->group_steps[group] = 0;
}

void dsa_optim_step(DsaOptimizer *o, float *params, float *grads, const bool *trainable, const DsaOptimConfig *cfg,
                    double lr, DsaOptimStepInfo *info) {
    const DsaParamTable *t = o->table;
    memset(info, 0, sizeof *info);
    /* Norms per group, summed in table order (deterministic). */
    double sumsq[DSA_GROUP_COUNT] = {0};
    for (int i = 0; i < t->count; i++) {
        if (!trainable[i] || t->info[i].frozen) continue;
        const DsaParamInfo *p = &t->info[i];
        sumsq[p->group] += o->be->sum_squares(grads + p->offset, p->numel);
        info->group_active[p->group] = true;
    }
    for (int g = 0; g < DSA_GROUP_COUNT; g++) {
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
        float *g = grads + p->offset;
        if (info->clip_coef[p->group] != 1.0) o->be->scale(g, (float)info->clip_coef[p->group], p->numel);
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
        o->be->adamw_step(params + p->offset, g, o->m + p->offset, o->v + p->offset, p->numel, &ap);
    }
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
