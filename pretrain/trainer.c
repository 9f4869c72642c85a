/* trainer.c: the training loop (trainer.h): stages, micro-batches, AdamW, metrics,
 * checkpoints and exact resume.
 *
 * NOTE (data per stage): each stage streams its own shuffled order, seeded with
 * data.seed + stage index, at the stage's seq_len; the cursor of the current stage's
 * loader is saved with every checkpoint, so a resumed run sees the same windows.
 * NOTE (loss scale): LM training counts every target of every window, so each
 * micro-batch's backward is scaled by 1 / (global_batch · seq_len) and the accumulated
 * gradient is that of the mean loss over the step, whatever the micro-batch split.
 * The indexer's KL gradient uses the same 1/|R| (every query row of the step, DSA-SPEC
 * §6.1 Decision (reduction)), summed over layers.
 * NOTE (DSA stages, DSA-SPEC §1, §6): for a model with an indexer every stage computes
 * the indexer loss; `trainable: "indexer"` freezes the main model (requires_grad off, no
 * LM backward, AdamW masked: its weights stay bit-identical), `"all"` trains the main
 * model by the LM loss and the indexer by its KL (the two never mix, §6.4). `attention:
 * "sparse"` selects top-k keys per query (stage index_topk). A dense "all" stage of a
 * DSA model (not in the paper's recipe) therefore trains the indexer by the dense KL.
 * At the switch nothing is reset: the indexer's AdamW state carries over and the main
 * model's moments are still zero from the frozen warm-up (§1 Decision (switch)).
 * Recall is measured on every row in dense stages and on train.recall_rows sampled rows
 * per sequence in sparse ones (their dense log-sum-exps are recomputed for the metric).
 */
#include "pretrain/trainer.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cJSON.h>

#include "checkpoints/checkpoint.h"
#include "core/fileutil.h"
#include "core/log.h"
#include "core/mem.h"
#include "data/loader.h"
#include "kernels/backend.h"
#include "pretrain/model.h"
#include "pretrain/model_io.h"
#include "pretrain/optim.h"
#include "pretrain/trainer_internal.h"

/* Stage of global step `step` (the stage the next step belongs to) and its first step. */
static int stage_of(const DsaConfig *cfg, int64_t step, int64_t *stage_start) {
    int64_t start = 0;
    for (int s = 0; s < cfg->num_stages; s++) {
        if (step < start + cfg->stages[s].steps || s == cfg->num_stages - 1) {
            *stage_start = start;
            return s;
        }
        start += cfg->stages[s].steps;
    }
    *stage_start = 0;
    return 0;
}

static DsaStatus check_supported(const DsaConfig *cfg) {
    for (int s = 0; s < cfg->num_stages; s++) {
        const DsaStageConfig *st = &cfg->stages[s];
        const bool needs_indexer = !strcmp(st->attention, "sparse") || !strcmp(st->trainable, "indexer");
        if (needs_indexer && !cfg->model.has_indexer)
            DSA_FAIL(DSA_ERR_CONFIG,
                     "%s: stages.%d (\"%s\") has attention \"%s\" and trains \"%s\", which needs the lightning "
                     "indexer, but model.index_topk is null: give the model an indexer (model.index_topk, "
                     "index_n_heads, index_head_dim; `dsa convert --add-indexer` adds one to a dense checkpoint)",
                     cfg->source, s, st->name, st->attention, st->trainable);
    }
    if (cfg->data.num_train == 0)
        DSA_FAIL(DSA_ERR_CONFIG, "%s: data.train is empty: give the token shards to train on (dsa pack makes them)",
                 cfg->source);
    return DSA_OK;
}

/* ---- data ------------------------------------------------------------------------ */

/* A stage that needs more windows than the data holds sees each of them several times
 * (epochs); when it needs more than one epoch, say so with the figures. */
static void warn_repeats(const Trainer *t, int stage) {
    const DsaStageConfig *s = &t->cfg->stages[stage];
    const int64_t have = dsa_loader_rank_windows(t->loader), need = s->steps * s->global_batch / t->comm->world;
    if (need <= have) return;
    dsa_log(DSA_LOG_WARN,
            "stage %d \"%s\": %lld steps x %lld sequences need %lld windows of %lld tokens, but the data (%d shard(s) "
            "starting with %s, %lld tokens) holds %lld: each window is used about %.3g times%s; add data or lower "
            "the stage's steps, global_batch or seq_len",
            stage, s->name, (long long)s->steps, (long long)s->global_batch, (long long)need, (long long)s->seq_len + 1,
            t->num_paths, t->paths[0], (long long)dsa_loader_total_tokens(t->loader), (long long)have,
            (double)need / (double)have, have < s->global_batch ? ", several times within every step" : "");
}

static DsaStatus open_stage_loader(Trainer *t, int stage) {
    const DsaConfig *cfg = t->cfg;
    if (t->loader && t->loader_stage == stage) return DSA_OK;
    if (t->loader) dsa_loader_close(t->loader);
    t->loader = NULL;
    DsaLoaderOptions lo = dsa_loader_options_default();
    lo.paths = (const char *const *)t->paths;
    lo.num_paths = t->num_paths;
    lo.seq_len = cfg->stages[stage].seq_len;
    lo.seed = (uint64_t)cfg->data.seed + (uint64_t)stage;
    lo.segment_ids = 0;
    lo.prefetch = (int)cfg->data.prefetch;
    lo.vocab_size = (uint64_t)cfg->model.vocab_size;
    lo.rank = t->comm->rank;
    lo.world = t->comm->world;
    DsaStatus st = dsa_loader_open(&t->loader, &lo);
    if (st == DSA_ERR_RANGE)
        dsa_error_push(__FILE__, __LINE__,
                       "stages.%d (\"%s\") reads windows of seq_len + 1 = %lld tokens: lower stages.%d.seq_len (or "
                       "data.seq_len, which stages inherit) until a window fits in the data, or add shards to data.train",
                       stage, cfg->stages[stage].name, (long long)lo.seq_len + 1, stage);
    else if (st != DSA_OK)
        dsa_error_push(__FILE__, __LINE__, "opening the data.train shards for stages.%d", stage);
    if (st != DSA_OK) return st;
    t->loader_stage = stage;
    warn_repeats(t, stage);
    if (t->have_cursor && t->cursor_stage == stage) {
        DSA_TRY(trainer_seek_saved_cursor(t));
        t->have_cursor = false;
    }
    return DSA_OK;
}

/* Token slots: two (inputs, targets) pairs of `tokens` ids each, on the host and on the
 * device: while micro-batch a runs from slot a mod 2, the next one is read into the other
 * slot and copied to the device on the copy stream (upload_async). */
static void free_token_slots(Trainer *t) {
    const size_t bytes = (size_t)t->io_tokens * 4 * sizeof(int32_t);
    if (t->io_host) dsa_free(t->io_host, bytes);
    if (t->io_dev) t->model.be->release(t->io_dev, bytes);
    t->io_host = t->io_dev = NULL;
    t->io_tokens = 0;
}

static DsaStatus reserve_token_slots(Trainer *t, int64_t tokens) {
    if (t->io_tokens >= tokens) return DSA_OK;
    free_token_slots(t);
    const size_t bytes = (size_t)tokens * 4 * sizeof(int32_t);
    t->io_host = dsa_malloc(bytes);
    t->io_dev = t->model.be->alloc(bytes);
    if (!t->io_host || !t->io_dev) {
        if (t->io_host) dsa_free(t->io_host, bytes);
        if (t->io_dev) t->model.be->release(t->io_dev, bytes);
        t->io_host = t->io_dev = NULL;
        DSA_FAIL(DSA_ERR_NOMEM, "token buffers of 2 x %lld tokens", (long long)tokens);
    }
    t->io_tokens = tokens;
    return DSA_OK;
}

/* Slot k's inputs (targets follow them) in the host or the device block. */
static int32_t *slot(int32_t *block, const Trainer *t, int k) { return block + (int64_t)k * 2 * t->io_tokens; }

/* Read the next `mb` windows into host slot k, check them, and start their copy into
 * device slot k (upload_async: the host slot stays untouched until the copy_order before
 * the slot's forward). */
static DsaStatus prefetch_micro_batch(Trainer *t, int k, int64_t mb, int64_t L) {
    int32_t *in = slot(t->io_host, t, k), *tgt = in + t->io_tokens;
    for (int64_t b = 0; b < mb; b++) {
        DsaWindow w;
        DSA_TRY(dsa_loader_next(t->loader, &w));
        for (int64_t i = 0; i < L; i++) {
            in[b * L + i] = (int32_t)w.tokens[i];
            tgt[b * L + i] = (int32_t)w.tokens[i + 1];
        }
    }
    DSA_TRY(dsa_model_check_tokens(&t->model, in, tgt, mb * L, &t->io_counted[k]));
    const DsaBackend *be = t->model.be;
    int32_t *din = slot(t->io_dev, t, k);
    be->upload_async(din, in, (size_t)(mb * L) * sizeof(int32_t));
    be->upload_async(din + t->io_tokens, tgt, (size_t)(mb * L) * sizeof(int32_t));
    return DSA_OK;
}

/* ---- metrics ----------------------------------------------------------------------- */

/* Keep the lines of metrics.jsonl with "step" <= keep_step (a resumed run replaces what
 * the interrupted one logged after its last checkpoint), then open it for appending. */
static DsaStatus open_metrics(Trainer *t, int64_t keep_step) {
    char path[DSA_CONFIG_PATH_CAP + 32], tmp[DSA_CONFIG_PATH_CAP + 64];
    snprintf(path, sizeof path, "%s/metrics.jsonl", t->cfg->train.out_dir);
    if (keep_step > 0) {
        char *text = NULL;
        size_t len = 0;
        if (dsa_file_read_all(path, &text, &len) == DSA_OK) {
            dsa_temp_path(tmp, sizeof tmp, path);
            FILE *f = fopen(tmp, "w");
            if (!f) {
                dsa_free(text, len + 1);
                DSA_FAIL(DSA_ERR_IO, "%s: cannot write: %s", tmp, strerror(errno));
            }
            for (char *line = text, *end; line && *line; line = end ? end + 1 : NULL) {
                end = strchr(line, '\n');
                if (end) *end = 0;
                long long s = -1;
                const char *p = strstr(line, "\"step\":");
                if (p) s = strtoll(p + 7, NULL, 10);
                if (s >= 0 && s <= keep_step) fprintf(f, "%s\n", line);
            }
            dsa_free(text, len + 1);
            if (fclose(f) != 0) DSA_FAIL(DSA_ERR_IO, "%s: write failed: %s", tmp, strerror(errno));
            DSA_TRY(dsa_rename_durable(tmp, path));
        } else {
            dsa_error_clear();
        }
    }
    t->metrics = fopen(path, keep_step > 0 ? "a" : "w");
    if (!t->metrics) DSA_FAIL(DSA_ERR_IO, "%s: cannot open for writing: %s", path, strerror(errno));
    return DSA_OK;
}

/* ---- indexer metrics ------------------------------------------------------------------- */

typedef struct {
    double kl_total;      /* Σ_layers KL: the indexer objective L^I (DSA-SPEC §6.1) */
    double recall_mean;   /* mean over layers of the captured dense attention mass */
    double selected_mean; /* mean keys attended per query row */
} IndexerSummary;

static void summarize_indexer(const DsaModel *m, IndexerSummary *sum) {
    const int nL = (int)m->cfg.num_hidden_layers;
    for (int l = 0; l < nL; l++) {
        const DsaIndexerLoss *x = &m->idx_stats[l];
        sum->kl_total += x->rows ? x->kl_sum / (double)x->rows : 0.0;
        sum->recall_mean += x->mass_rows ? x->mass_sum / (double)x->mass_rows / nL : 0.0;
        sum->selected_mean += x->rows ? x->selected_sum / (double)x->rows / nL : 0.0;
    }
}

/* The indexer fields of a metrics line: per-layer KL and recall (tools/plot_metrics.py). */
static void write_indexer_metrics(FILE *f, const DsaModel *m, const IndexerSummary *sum, const char *attention,
                                  const DsaOptimStepInfo *info) {
    const int nL = (int)m->cfg.num_hidden_layers;
    fprintf(f, ",\"attention\":\"%s\",\"indexer_loss\":%.9g,\"indexer_grad_norm\":%.9g,\"selected\":%.6g",
            attention, sum->kl_total, info->grad_norm[DSA_GROUP_INDEXER], sum->selected_mean);
    fputs(",\"indexer_kl\":[", f);
    for (int l = 0; l < nL; l++) {
        const DsaIndexerLoss *x = &m->idx_stats[l];
        fprintf(f, "%s%.9g", l ? "," : "", x->rows ? x->kl_sum / (double)x->rows : 0.0);
    }
    fputs("],\"recall\":[", f);
    for (int l = 0; l < nL; l++) {
        const DsaIndexerLoss *x = &m->idx_stats[l];
        fprintf(f, "%s%.6g", l ? "," : "", x->mass_rows ? x->mass_sum / (double)x->mass_rows : 0.0);
    }
    fputc(']', f);
}

/* ---- the loop ---------------------------------------------------------------------- */

static DsaStatus train_step(Trainer *t, int stage, int64_t stage_start) {
    const DsaConfig *cfg = t->cfg;
    const DsaStageConfig *s = &cfg->stages[stage];
    const int64_t mb = cfg->train.micro_batch, L = s->seq_len;
    DsaComm *comm = t->comm;
    const int64_t accum = s->global_batch / (mb * comm->world);
    double t0 = dsa_time_now();
    DSA_TRY(open_stage_loader(t, stage));
    DSA_TRY(reserve_token_slots(t, mb * L));
    /* what trains (DSA-SPEC §1): "indexer" freezes the main model, "all" trains both,
     * the main model by the LM loss and the indexer by its KL (§6.4) */
    DsaModel *m = &t->model;
    const bool train_main = !strcmp(s->trainable, "all");
    for (int i = 0; i < m->table.count; i++) {
        /* frozen tensors (the router bias, §3.1 Decision (router bias)) train in no stage */
        t->trainable[i] = !m->table.info[i].frozen && (train_main || m->table.info[i].group == DSA_GROUP_INDEXER);
        m->requires_grad[i] = t->trainable[i];
    }
    const float scale = (float)(1.0 / ((double)s->global_batch * (double)L));
    DsaForwardMode mode = dsa_forward_mode_default(&cfg->model);
    mode.sparse = !strcmp(s->attention, "sparse");
    mode.indexer_loss = cfg->model.has_indexer;
    mode.indexer_fp8 = cfg->train.indexer_fp8;
    mode.topk = cfg->model.has_indexer ? s->index_topk : 0;
    mode.indexer_grad_scale = scale; /* 1/|R|: every query row of the step counts (§6.1) */
    mode.recall_rows = cfg->train.recall_rows;
    DSA_TRY(dsa_model_set_mode(m, &mode));
    dsa_model_reset_indexer_stats(m);

    dsa_model_zero_grad(m);
    double loss_sum = 0;
    int64_t count = 0;
    DSA_TRY(prefetch_micro_batch(t, 0, mb, L));
    for (int64_t a = 0; a < accum; a++) {
        const int k = (int)(a & 1);
        double ls = 0;
        int64_t n = 0;
        m->be->copy_order(); /* slot k's upload is complete before the forward reads it */
        const int32_t *din = slot(t->io_dev, t, k);
        DSA_TRY(dsa_model_forward_device(m, din, din + t->io_tokens, mb, L, t->io_counted[k], &ls, &n));
        /* warm-up: no LM backward through the frozen model (§6.2) */
        if (train_main) dsa_model_backward(m, scale);
        /* the next micro-batch is read and copied while this backward runs (the other slot:
         * its last reader, the forward's copy, finished before that forward returned its loss) */
        if (a + 1 < accum) DSA_TRY(prefetch_micro_batch(t, 1 - k, mb, L));
        loss_sum += ls;
        count += n;
    }
    double lr = dsa_lr_at(s, cfg->optimizer.min_lr, t->step - stage_start);
    DsaOptimStepInfo info;
    DSA_TRY(trainer_data_parallel_step(t, &loss_sum, &count, lr, &info));
    t->step++;
    t->tokens_seen += s->global_batch * L;
    t->last_loss = loss_sum / (double)(count ? count : 1);
    t->last_lr = lr;
    double dt = dsa_time_now() - t0;
    double tps = (double)(s->global_batch * L) / dt;
    if (!t->metrics) return DSA_OK; /* ranks > 0 log nothing */
    fprintf(t->metrics,
            "{\"step\":%lld,\"stage\":\"%s\",\"lr\":%.9g,\"loss\":%.9g,\"grad_norm\":%.9g,\"clip\":%.6g,"
            "\"tokens\":%lld,\"tokens_per_s\":%.6g,\"step_time_s\":%.6g,\"peak_mem_bytes\":%zu,\"peak_rss_bytes\":%lld",
            (long long)t->step, s->name, lr, t->last_loss, info.grad_norm[DSA_GROUP_MAIN], info.clip_coef[DSA_GROUP_MAIN],
            (long long)t->tokens_seen, tps, dt, dsa_mem_peak(), (long long)dsa_mem_rss_peak());
    IndexerSummary sum = {0};
    if (mode.indexer_loss) {
        summarize_indexer(m, &sum);
        write_indexer_metrics(t->metrics, m, &sum, s->attention, &info);
    }
    fputs("}\n", t->metrics);
    fflush(t->metrics);
    if (t->opts->progress && (t->step % cfg->train.log_every == 0 || t->step == t->total_steps)) {
        double eta = dt * (double)(t->total_steps - t->step);
        char extra[128] = "";
        if (mode.indexer_loss)
            snprintf(extra, sizeof extra, "  KL %.4f  recall %.3f  k %.0f", sum.kl_total, sum.recall_mean,
                     sum.selected_mean);
        dsa_log(DSA_LOG_INFO, "step %lld/%lld  %s  loss %.4f%s  lr %.3g  grad %.3f  %.0f tok/s  eta %.0f s",
                (long long)t->step, (long long)t->total_steps, s->name, t->last_loss, extra, lr,
                info.grad_norm[train_main ? DSA_GROUP_MAIN : DSA_GROUP_INDEXER], tps, eta);
    }
    return DSA_OK;
}

/* Every data.train shard's ids must fit the model's embedding: refused before anything
 * is allocated or written, naming the shard (data/loader.h) and where model.vocab_size
 * came from. */
static DsaStatus check_data_vocab(const Trainer *t) {
    const DsaConfig *cfg = t->cfg;
    DsaStatus st = dsa_data_check_vocab((const char *const *)t->paths, t->num_paths, (uint64_t)cfg->model.vocab_size);
    if (st != DSA_OK) {
        const char *set = NULL;
        for (int i = 0; i < cfg->origins.count; i++)
            if (!strcmp(cfg->origins.entry[i].key, "model.vocab_size")) set = cfg->origins.entry[i].set;
        dsa_error_push(__FILE__, __LINE__, "data.train does not fit model.vocab_size = %lld (from %s%s)",
                       (long long)cfg->model.vocab_size, set && *set ? "--set " : "", set && *set ? set : cfg->source);
    }
    return st;
}

static bool has_latest(const char *out_dir) {
    char path[DSA_CONFIG_PATH_CAP + 16];
    snprintf(path, sizeof path, "%s/latest", out_dir);
    struct stat sb;
    return stat(path, &sb) == 0;
}

static void trainer_free(Trainer *t) {
    if (t->loader) dsa_loader_close(t->loader);
    if (t->metrics) fclose(t->metrics);
    free_token_slots(t);
    dsa_free(t->trainable, (size_t)t->model.table.count * sizeof(bool));
    dsa_optim_free(&t->optim);
    dsa_model_free(&t->model);
    if (t->paths) dsa_data_paths_free(t->paths, t->num_paths);
    if (t->own_comm) dsa_comm_free(t->comm);
}

DsaStatus dsa_train(const DsaConfig *cfg, const DsaTrainOptions *opts, DsaTrainResult *result) {
    memset(result, 0, sizeof *result);
    DSA_TRY(dsa_config_validate(cfg));
    DSA_TRY(check_supported(cfg));
    const DsaBackend *be = NULL;
    DSA_TRY(dsa_backend_get(cfg->train.device, &be));
    /* bf16: the same backend with bf16 GEMMs (kernels/backend.h dsa_backend_for_precision) */
    DSA_TRY(dsa_backend_for_precision(be, cfg->train.precision, &be));
    dsa_backend_cpu_set_threads((int)cfg->train.threads);

    Trainer t;
    memset(&t, 0, sizeof t);
    t.cfg = cfg;
    t.opts = opts;
    t.loader_stage = -1;
    for (int s = 0; s < cfg->num_stages; s++) t.total_steps += cfg->stages[s].steps;
    DsaStatus st = DSA_OK;
    t.comm = opts->comm;
    if (!t.comm) {
        DSA_TRY(dsa_comm_init_local(&t.comm));
        t.own_comm = true;
    }
    t.dcomm = opts->device_comm ? opts->device_comm : t.comm;
    const bool rank0 = t.comm->rank == 0;
    DSA_TRY_GOTO(st, trainer_dist_check(&t), out);
    const char *args[DSA_CONFIG_MAX_FILES];
    for (int i = 0; i < cfg->data.num_train; i++) args[i] = cfg->data.train[i];
    DSA_TRY_GOTO(st, dsa_data_expand_paths(args, cfg->data.num_train, &t.paths, &t.num_paths), out);
    DSA_TRY_GOTO(st, check_data_vocab(&t), out);
    DSA_TRY_GOTO(st, dsa_model_init(&t.model, &cfg->model, be), out);
    int64_t shard_lo = 0, shard_hi = 0; /* ZeRO-1: this rank's range of the flat layout (zero.h) */
    dsa_comm_split(t.model.table.total, t.comm->world, t.comm->rank, &shard_lo, &shard_hi);
    DSA_TRY_GOTO(st, dsa_optim_init_range(&t.optim, &t.model.table, be, shard_lo, shard_hi), out);
    t.trainable = dsa_calloc((size_t)t.model.table.count, sizeof(bool));
    if (!t.trainable) DSA_FAIL_GOTO(st, out, DSA_ERR_NOMEM, "trainable mask");

    const char *out_dir = cfg->train.out_dir;
    int64_t end = opts->stop_at > 0 && opts->stop_at < t.total_steps ? opts->stop_at : t.total_steps;
    /* a save stopped by a kill or a full disk: adopt its checkpoint (checkpoint.h) */
    if (rank0) DSA_TRY_GOTO(st, dsa_checkpoint_recover(out_dir), out);
    DSA_TRY_GOTO(st, t.comm->ops->barrier(t.comm), out);
    if (opts->resume) {
        char dir[1024];
        struct stat sb;
        if (stat(out_dir, &sb) != 0 && errno == ENOENT)
            DSA_FAIL_GOTO(st, out, DSA_ERR_IO,
                          "--resume: train.out_dir %s does not exist, so there is no run to resume: start the run "
                          "without --resume, or set train.out_dir to the directory of the run to continue",
                          out_dir);
        st = dsa_checkpoint_resolve(out_dir, dir, sizeof dir);
        if (st != DSA_OK) {
            dsa_error_push(__FILE__, __LINE__,
                           "--resume: no checkpoint to resume in train.out_dir %s: start the run without --resume, "
                           "or set train.out_dir to the directory of the run to continue",
                           out_dir);
            goto out;
        }
        DSA_TRY_GOTO(st, trainer_load_checkpoint(&t, dir), out);
        if (t.step >= end) { /* nothing left to do: say so, change nothing */
            result->steps_done = t.step;
            result->total_steps = t.total_steps;
            result->already_done = true;
            snprintf(result->last_checkpoint, sizeof result->last_checkpoint, "%s", dir);
            goto out;
        }
        dsa_log(DSA_LOG_INFO, "resumed from %s at step %lld", dir, (long long)t.step);
    } else {
        if (has_latest(out_dir))
            DSA_FAIL_GOTO(st, out, DSA_ERR_CONFIG,
                          "%s already holds checkpoints (%s/latest): pass --resume to continue that run, or choose "
                          "another train.out_dir",
                          out_dir, out_dir);
        if (rank0) DSA_TRY_GOTO(st, dsa_mkdir_p(out_dir), out);
        if (opts->init_from) {
            DSA_TRY_GOTO(st, trainer_load_init_weights(&t, opts->init_from), out);
        } else {
            DSA_TRY_GOTO(st, dsa_model_init_weights(&t.model, (uint64_t)cfg->train.seed), out);
        }
    }
    DSA_TRY_GOTO(st, t.comm->ops->barrier(t.comm), out); /* every rank checked out_dir before rank 0 writes */
    if (rank0) DSA_TRY_GOTO(st, open_metrics(&t, opts->resume ? t.step : 0), out);
    DSA_TRY_GOTO(st, trainer_dist_report(&t), out);

    dsa_log(DSA_LOG_INFO, "training %lld parameters on %s (%d threads), steps %lld..%lld of %lld, out_dir %s",
            (long long)dsa_model_param_count(&cfg->model), be->name, dsa_backend_cpu_threads(), (long long)t.step + 1,
            (long long)end, (long long)t.total_steps, out_dir);
    while (t.step < end) {
        int64_t stage_start = 0;
        int stage = stage_of(cfg, t.step, &stage_start);
        if (t.step == stage_start && t.step > 0)
            dsa_log(DSA_LOG_INFO, "stage %d \"%s\" starts at step %lld", stage, cfg->stages[stage].name,
                    (long long)t.step + 1);
        DSA_TRY_GOTO(st, train_step(&t, stage, stage_start), out);
        bool periodic = cfg->train.checkpoint_every > 0 && t.step % cfg->train.checkpoint_every == 0;
        if (periodic || t.step == end) DSA_TRY_GOTO(st, trainer_save_checkpoint(&t, stage), out);
    }
    result->steps_done = t.step;
    result->total_steps = t.total_steps;
    result->last_loss = t.last_loss;
    snprintf(result->last_checkpoint, sizeof result->last_checkpoint, "%s", t.last_checkpoint);
out:
    trainer_free(&t);
    return st;
}
