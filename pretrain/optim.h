/* optim.h: AdamW over the parameter table with per-parameter trainable masks, per-group
 * gradient-norm clipping and the learning-rate schedule (DSA-SPEC §1 Decision
 * (optimizer)).
 *
 * State: fp32 first and second moments in the params.h flat layout, and one step
 * counter per group (the bias corrections of a group count only its own updates, so a
 * group that starts training later, e.g. the main model after the warm-up, starts its
 * moments and corrections from zero as the spec's stage switch requires).
 *
 * ZeRO-1 (DESIGN.md, "Distribution"): an optimizer may own only the range [lo, hi) of
 * the flat layout (its rank's shard); its moments are then (hi - lo) floats, it updates
 * only the parameters of that range, and the caller sums the per-group squared norms
 * over the ranks between dsa_optim_sumsq and dsa_optim_apply. The whole range (lo = 0,
 * hi = total) is the single-process optimizer, whose bits are those of dsa_optim_step.
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
    int64_t lo, hi;             /* the range of the flat layout this optimizer updates */
    float *m, *v;               /* (hi - lo) each, owned, backend memory (be->alloc): m[i - lo] is element i's moment */
    int64_t group_steps[DSA_GROUP_COUNT]; /* AdamW updates applied to each group */
} DsaOptimizer;

/* What one step did, for the metrics. */
typedef struct {
    double grad_norm[DSA_GROUP_COUNT]; /* before clipping; 0 for groups with nothing trainable */
    double clip_coef[DSA_GROUP_COUNT]; /* multiplier applied to the gradients (1 = no clip) */
    bool group_active[DSA_GROUP_COUNT];
} DsaOptimStepInfo;

DsaStatus dsa_optim_init(DsaOptimizer *o, const DsaParamTable *table, const DsaBackend *be);
/* The optimizer of the range [lo, hi) of the flat layout only (0 <= lo <= hi <= total). */
DsaStatus dsa_optim_init_range(DsaOptimizer *o, const DsaParamTable *table, const DsaBackend *be, int64_t lo,
                               int64_t hi);
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
/* The two halves of dsa_optim_step, for a sharded optimizer: sumsq[g] (added to) is the
 * squared L2 norm of group g's trainable gradients within [lo, hi), summed per tensor
 * piece in table order; active[g] is set where the range holds a trainable tensor of g. */
void dsa_optim_sumsq(const DsaOptimizer *o, const float *grads, const bool *trainable, double sumsq[DSA_GROUP_COUNT],
                     bool active[DSA_GROUP_COUNT]);
/* Clip (by the norms of the whole model, sumsq over every rank) and update [lo, hi) of
 * params and grads (full flat buffers); a group's step count advances where active[g]
 * (over every rank). Fills info. */
void dsa_optim_apply(DsaOptimizer *o, float *params, float *grads, const bool *trainable, const DsaOptimConfig *cfg,
                     double lr, const double sumsq[DSA_GROUP_COUNT], const bool active[DSA_GROUP_COUNT],
                     DsaOptimStepInfo *info);

double dsa_lr_at(const DsaStageConfig *stage, double min_lr, int64_t s);

#endif
