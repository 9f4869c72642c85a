/* optim.h: AdamW over the parameter table with per-parameter trainable masks, per-group
 * gradient-norm clipping and the learning-rate schedule (DSA-SPEC §1 Decision
 * (optimizer)).
 *
 * State: fp32 first and second moments in the params.h flat layout, and one step
 * counter per group (the bias corrections of a group count only its own updates, so a
 * group that starts training later, e.g. the main model after the warm-up, starts its
 * moments and corrections from zero as the spec's stage switch requires).
 */
#ifndef DSA_PRETRAIN_OPTIM_H
#define DSA_PRETRAIN_OPTIM_H

#include <stdbool.h>
#include <stdint.h>

#include "core/config.h"
#include "core/error.h"
#include "kernels/backend.h"
#include "pretrain/params.h"

typedef struct {
    const DsaParamTable *table; /* not owned */
    const DsaBackend *be;       /* not owned */
    float *m, *v;               /* (table->total) each, owned, backend memory (be->alloc) */
    int64_t group_steps[DSA_GROUP_COUNT]; /* AdamW updates applied to each group */
} DsaOptimizer;

/* What one step did, for the metrics. */
typedef struct {
    double grad_norm[DSA_GROUP_COUNT]; /* before clipping; 0 for groups with nothing trainable */
    double clip_coef[DSA_GROUP_COUNT]; /* multiplier applied to the gradients (1 = no clip) */
    bool group_active[DSA_GROUP_COUNT];
} DsaOptimStepInfo;

DsaStatus dsa_optim_init(DsaOptimizer *o, const DsaParamTable *table, const DsaBackend *be);
void dsa_optim_free(DsaOptimizer *o);
/* Zero the moments and the step counter of one group. */
void dsa_optim_reset_group(DsaOptimizer *o, DsaParamGroup group);

/* One update of every parameter with trainable[i] true and not frozen (params.h: the
 * router bias is never updated, whatever the mask says, and is not in the norms): per
 * group, the global L2 norm of
 * its trainable gradients, clipping to `grad_clip` (0 = off) by scaling them, then AdamW
 * with the config's betas, eps and weight decay (only where the table says decay) at
 * learning rate `lr`. Gradients are modified in place by the clip. */
void dsa_optim_step(DsaOptimizer *o, float *params, float *grads, const bool *trainable, const DsaOptimConfig *cfg,
                    double lr, DsaOptimStepInfo *info);

/* Learning rate of 0-based step `s` of a stage: linear ramp (s + 1) / warmup · lr over
 * the first lr_warmup_steps steps, then constant, or cosine from lr down to min_lr at
 * the stage's last step. */
double dsa_lr_at(const DsaStageConfig *stage, double min_lr, int64_t s);

#endif
