/* trainer_dist.c: the trainer's data-parallel parts (trainer.h, pretrain/zero.h): the
 * checks every rank makes together before a run starts (same binary, same config, a
 * global batch that splits over the ranks), the per-rank memory report, the end of a
 * step over the ranks and the data cursor of a resume on another world size.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zlib.h>

#include "core/log.h"
#include "core/mem.h"
#include "pretrain/trainer_internal.h"
#include "pretrain/zero.h"

/* Seek this rank's loader to the saved cursor (rank 0's, of a run of cursor.world ranks).
 * NOTE (world-size change, DESIGN.md "Distribution"): ranks step in lockstep, so a saved
 * position p of world W means the epoch's permutation entries 0 .. p·W - 1 were consumed,
 * by all ranks together. On W' ranks the run continues at entry g = p·W: rank r' at
 * position g / W', taking entries g + r', g + r' + W', ... Nothing is seen twice or
 * skipped within the epoch (beyond the loader's own tail rule: the W mod W' last entries
 * of each epoch's permutation). g must be a multiple of W' (it is whenever the epoch did
 * not end in the middle of a step); otherwise the resume is refused. */
DsaStatus trainer_seek_saved_cursor(Trainer *t) {
    DsaLoaderCursor c = t->cursor;
    const int world = t->comm->world;
    if (c.world != world) {
        const uint64_t g = c.position * (uint64_t)c.world;
        if (c.world < 1 || g % (uint64_t)world)
            DSA_FAIL(DSA_ERR_CONFIG,
                     "the checkpoint's data cursor (epoch %llu, %llu windows consumed in it by %d ranks) cannot be "
                     "split over %d ranks without repeating or skipping a window: resume on a world size that "
                     "divides %llu, or on %d ranks",
                     (unsigned long long)c.epoch, (unsigned long long)g, c.world, world, (unsigned long long)g,
                     c.world);
        c.position = g / (uint64_t)world;
        c.world = world;
        if (c.position >= (uint64_t)dsa_loader_rank_windows(t->loader)) { /* only the epoch's tail is left */
            c.epoch++;
            c.position = 0;
        }
    }
    c.rank = t->comm->rank;
    return dsa_loader_seek(t->loader, &c);
}

/* The end of a step (zero.h): gradients, loss and indexer figures summed over the ranks,
 * the global norms per group, this rank's shard updated, the weights all-gathered. On
 * one rank every collective is the identity: the bits of dsa_optim_step. */
DsaStatus trainer_data_parallel_step(Trainer *t, double *loss_sum, int64_t *count, double lr, DsaOptimStepInfo *info) {
    DsaComm *comm = t->comm;
    DsaModel *m = &t->model;
    double sumsq[DSA_GROUP_COUNT] = {0}, act[DSA_GROUP_COUNT] = {0};
    bool active[DSA_GROUP_COUNT] = {0};
    if (comm->world > 1) {
        DSA_TRY(dsa_zero_reduce_grads(t->dcomm, m->grads, m->table.total));
        const int nL = (int)m->cfg.num_hidden_layers;
        const size_t cap = 2 + 5 * (size_t)nL;
        double *red = dsa_malloc(cap * sizeof *red);
        if (!red) DSA_FAIL(DSA_ERR_NOMEM, "step figures of %d layers", nL);
        int n = 2;
        red[0] = *loss_sum, red[1] = (double)*count;
        for (int l = 0; m->mode.indexer_loss && l < nL; l++) {
            const DsaIndexerLoss *x = &m->idx_stats[l];
            red[n++] = x->kl_sum, red[n++] = x->mass_sum, red[n++] = (double)x->rows, red[n++] = (double)x->mass_rows;
            red[n++] = x->selected_sum;
        }
        DsaStatus st = comm->ops->all_reduce_sum(comm, red, n, DSA_COMM_F64);
        if (st != DSA_OK) {
            dsa_free(red, cap * sizeof *red);
            return st;
        }
        *loss_sum = red[0], *count = (int64_t)red[1];
        for (int l = 0, k = 2; m->mode.indexer_loss && l < nL; l++) {
            DsaIndexerLoss *x = &m->idx_stats[l];
            x->kl_sum = red[k++], x->mass_sum = red[k++], x->rows = (int64_t)red[k++];
            x->mass_rows = (int64_t)red[k++], x->selected_sum = red[k++];
        }
        dsa_free(red, cap * sizeof *red);
    }
    dsa_optim_sumsq(&t->optim, m->grads, t->trainable, sumsq, active);
    if (comm->world > 1) {
        double red[2 * DSA_GROUP_COUNT];
        for (int g = 0; g < DSA_GROUP_COUNT; g++) red[g] = sumsq[g], red[DSA_GROUP_COUNT + g] = active[g] ? 1 : 0;
        DSA_TRY(comm->ops->all_reduce_sum(comm, red, 2 * DSA_GROUP_COUNT, DSA_COMM_F64));
        for (int g = 0; g < DSA_GROUP_COUNT; g++) sumsq[g] = red[g], act[g] = red[DSA_GROUP_COUNT + g];
        for (int g = 0; g < DSA_GROUP_COUNT; g++) active[g] = act[g] > 0;
    }
    dsa_optim_apply(&t->optim, m->params, m->grads, t->trainable, &t->cfg->optimizer, lr, sumsq, active, info);
    return dsa_zero_gather_params(t->dcomm, m->params, m->table.total);
}

/* FNV-1a 64 of a text. */
static uint64_t fnv1a(const char *s) {
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

/* CRC32 of this process's executable (0 when it cannot be read: then every rank says 0). */
static uint64_t binary_crc(void) {
    int fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    unsigned char buf[1 << 16];
    uLong c = crc32(0L, Z_NULL, 0);
    for (ssize_t r; (r = read(fd, buf, sizeof buf)) > 0;) c = crc32(c, buf, (uInt)r);
    close(fd);
    return (uint64_t)c;
}

DsaStatus trainer_dist_check(Trainer *t) {
    const DsaConfig *cfg = t->cfg;
    DsaComm *comm = t->comm;
    for (int s = 0; s < cfg->num_stages; s++) {
        const DsaStageConfig *st = &cfg->stages[s];
        const int64_t per = cfg->train.micro_batch * comm->world;
        if (st->global_batch % per)
            DSA_FAIL(DSA_ERR_CONFIG,
                     "%s: stages.%d (\"%s\") has global_batch %lld, which %d ranks x train.micro_batch %lld = %lld "
                     "sequences per micro-step do not divide: set the stage's global_batch to a multiple of %lld, or "
                     "run on another number of ranks",
                     cfg->source, s, st->name, (long long)st->global_batch, comm->world,
                     (long long)cfg->train.micro_batch, (long long)per, (long long)per);
    }
    if (comm->world == 1) return DSA_OK;
    DSA_TRY(dsa_comm_check_same(comm, binary_crc(), "the dsa binary (CRC32 of the executable)"));
    char *text = NULL;
    DSA_TRY(dsa_config_to_json(cfg, &text));
    char opts[1400];
    const DsaTrainOptions *o = t->opts;
    snprintf(opts, sizeof opts, "resume=%d init=%s stop_at=%lld pause=%lld shard=%llu", o->resume,
             o->init_from ? o->init_from : "", (long long)o->stop_at, (long long)o->pause_before_commit_ms,
             (unsigned long long)o->weights_shard_bytes);
    const uint64_t h = fnv1a(text) ^ (fnv1a(opts) * 0x9E3779B97F4A7C15ULL);
    free(text);
    return dsa_comm_check_same(comm, h, "the resolved run config and dsa train options (hash of both)");
}

typedef struct {
    double params, grads, optim, acts;
    int64_t lo, hi, pid;
    char host[64];
} RankMemory;

DsaStatus trainer_dist_report(Trainer *t) {
    DsaComm *comm = t->comm;
    if (comm->world == 1) return DSA_OK;
    const DsaConfig *cfg = t->cfg;
    int64_t acts = 0;
    for (int s = 0; s < cfg->num_stages; s++) {
        int64_t b = dsa_model_workspace_bytes(&cfg->model, cfg->train.micro_batch, cfg->stages[s].seq_len,
                                              cfg->model.has_indexer ? cfg->stages[s].index_topk : 0);
        if (b > acts) acts = b;
    }
    const size_t n = (size_t)comm->world;
    RankMemory *all = dsa_calloc(n, sizeof *all);
    int64_t *counts = dsa_calloc(n, sizeof *counts);
    DsaStatus st = DSA_OK;
    if (!all || !counts) DSA_FAIL_GOTO(st, out, DSA_ERR_NOMEM, "memory report of %zu ranks", n);
    RankMemory *me = &all[comm->rank];
    me->params = me->grads = (double)t->model.table.total * sizeof(float);
    me->optim = 2.0 * (double)(t->optim.hi - t->optim.lo) * sizeof(float);
    me->acts = (double)acts;
    me->lo = t->optim.lo, me->hi = t->optim.hi, me->pid = (int64_t)getpid();
    snprintf(me->host, sizeof me->host, "%.63s", comm->host);
    for (size_t r = 0; r < n; r++) counts[r] = (int64_t)sizeof *all;
    DSA_TRY_GOTO(st, comm->ops->all_gather(comm, all, counts, DSA_COMM_BYTE), out);
    const double mib = 1024.0 * 1024.0;
    if (comm->rank == 0) {
        dsa_log(DSA_LOG_INFO, "data parallel over %d ranks (%s), ZeRO-1: AdamW moments sharded, weights all-gathered",
                comm->world, comm->kind);
        for (size_t r = 0; r < n; r++)
            dsa_log(DSA_LOG_INFO,
                    "rank %zu (host %s, pid %lld): weights %.1f MiB, gradients %.1f MiB, AdamW shard %.1f MiB "
                    "(elements %lld..%lld), activations %.1f MiB",
                    r, all[r].host, (long long)all[r].pid, all[r].params / mib, all[r].grads / mib,
                    all[r].optim / mib, (long long)all[r].lo, (long long)all[r].hi, all[r].acts / mib);
    }
out:
    dsa_free(all, n * sizeof *all);
    dsa_free(counts, n * sizeof *counts);
    return st;
}
