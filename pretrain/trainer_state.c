/* trainer_state.c: the trainer's checkpoints (trainer_internal.h): what a step-N/
 * directory holds (weights, AdamW moments, the model and run configs, trainer_state.json
 * with the step, the groups' step counts and the data cursor), resume from one, and the
 * weights-only start of --init. The directory's atomic commit is checkpoints/checkpoint.c's.
 *
 * Over N > 1 ranks (DESIGN.md, "Checkpoints"): rank 0 begins the save and broadcasts the
 * temporary directory; every rank writes its AdamW shard there as
 * optimizer-rank-RRRRR-of-NNNNN.safetensors (tensors "exp_avg" and "exp_avg_sq", the
 * shard's range of the flat layout in the metadata "shard_lo", "shard_hi", "total"),
 * fsyncs it, and the ranks confirm (an all-reduce of their outcome, which is the barrier);
 * rank 0 writes the weights (identical on every rank) as Hugging Face shards of at most
 * opts->weights_shard_bytes (5 GB by default: one model.safetensors, or
 * model-0000K-of-0000M.safetensors with model.safetensors.index.json) and the JSON files,
 * commits (its
 * manifest covers every rank's file) and switches `latest`. A kill of any rank before the
 * commit leaves only the temporary directory, which the next start removes. A resume on
 * any world size reads, for its own shard, the pieces of every file that overlap it
 * (optimizer.safetensors of a one-rank run, or the shards).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cJSON.h>

#include "checkpoints/checkpoint.h"
#include "checkpoints/safetensors.h"
#include "core/fileutil.h"
#include "core/log.h"
#include "core/mem.h"
#include "kernels/backend.h"
#include "pretrain/host_view.h"
#include "pretrain/model_io.h"
#include "pretrain/trainer_internal.h"

static DsaStatus write_state_json(Trainer *t, DsaCheckpointWriter *w, int stage) {
    cJSON *root = cJSON_CreateObject();
    char hex[32];
    cJSON_AddNumberToObject(root, "format_version", DSA_TRAIN_STATE_VERSION);
    cJSON_AddNumberToObject(root, "step", (double)t->step);
    cJSON_AddStringToObject(root, "stage", t->cfg->stages[stage].name);
    cJSON_AddNumberToObject(root, "stage_index", stage);
    cJSON *gs = cJSON_AddArrayToObject(root, "group_steps");
    for (int g = 0; g < DSA_GROUP_COUNT; g++) cJSON_AddItemToArray(gs, cJSON_CreateNumber((double)t->optim.group_steps[g]));
    cJSON_AddNumberToObject(root, "lr", t->last_lr);
    cJSON_AddNumberToObject(root, "loss", t->last_loss);
    cJSON_AddNumberToObject(root, "tokens_seen", (double)t->tokens_seen);
    snprintf(hex, sizeof hex, "%016" PRIx64, dsa_config_hash(t->cfg));
    cJSON_AddStringToObject(root, "model_hash", hex);
    cJSON_AddNumberToObject(root, "seed", (double)t->cfg->train.seed);
    cJSON_AddNumberToObject(root, "threads", dsa_backend_cpu_threads());
    if (t->comm->world > 1) {
        cJSON_AddNumberToObject(root, "world", t->comm->world);
        cJSON *files = cJSON_AddArrayToObject(root, "optimizer_files");
        char name[96];
        for (int r = 0; r < t->comm->world; r++) {
            snprintf(name, sizeof name, "optimizer-rank-%05d-of-%05d.safetensors", r, t->comm->world);
            cJSON_AddItemToArray(files, cJSON_CreateString(name));
        }
    }
    if (t->loader) {
        DsaLoaderCursor c = dsa_loader_cursor(t->loader);
        cJSON_AddNumberToObject(root, "data_stage", t->loader_stage);
        cJSON_AddItemToObject(root, "data_cursor", dsa_loader_cursor_to_json(&c));
    } else if (t->have_cursor) {
        cJSON_AddNumberToObject(root, "data_stage", t->cursor_stage);
        cJSON_AddItemToObject(root, "data_cursor", dsa_loader_cursor_to_json(&t->cursor));
    }
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    if (!text) DSA_FAIL(DSA_ERR_NOMEM, "trainer_state.json text");
    DsaStatus st = dsa_checkpoint_write_text(w, "trainer_state.json", text);
    free(text);
    return st;
}

/* This rank's AdamW shard as one file (world > 1). */
static DsaStatus write_optimizer_shard(Trainer *t, DsaCheckpointWriter *w) {
    char name[96], path[1400], lo[32], hi[32], total[32];
    snprintf(name, sizeof name, "optimizer-rank-%05d-of-%05d.safetensors", t->comm->rank, t->comm->world);
    snprintf(lo, sizeof lo, "%lld", (long long)t->optim.lo);
    snprintf(hi, sizeof hi, "%lld", (long long)t->optim.hi);
    snprintf(total, sizeof total, "%lld", (long long)t->model.table.total);
    const int64_t n = t->optim.hi - t->optim.lo;
    const DsaBackend *be = t->model.be;
    DsaHostView vm = {0}, vv = {0};
    DsaStatus st = dsa_host_view_open(&vm, be, t->optim.m, (size_t)n * sizeof(float), "checkpoint AdamW moments");
    if (st == DSA_OK) st = dsa_host_view_open(&vv, be, t->optim.v, (size_t)n * sizeof(float), "checkpoint AdamW moments");
    if (st == DSA_OK) {
        DsaStTensorRef refs[2] = {
            {.name = "exp_avg", .dtype = DSA_F32, .ndim = 1, .shape = {n}, .data = vm.host},
            {.name = "exp_avg_sq", .dtype = DSA_F32, .ndim = 1, .shape = {n}, .data = vv.host},
        };
        const char *keys[] = {"shard_lo", "shard_hi", "total"}, *vals[] = {lo, hi, total};
        st = dsa_safetensors_write(dsa_checkpoint_file(w, name, path, sizeof path), refs, 2, keys, vals, 3);
    }
    dsa_host_view_close(&vm);
    dsa_host_view_close(&vv);
    return st;
}

/* The weights as an HF directory of shards (world > 1; checkpoints/hf.h's writer). */
static DsaStatus write_weights_sharded(Trainer *t, DsaCheckpointWriter *w, const float *params) {
    const DsaParamTable *tab = &t->model.table;
    const uint64_t cap = t->opts->weights_shard_bytes ? t->opts->weights_shard_bytes : 5000000000ULL;
    DsaHfWriter hw;
    DSA_TRY(dsa_hf_writer_init(&hw, w->tmp_dir, cap));
    DsaStatus st = DSA_OK;
    for (int i = 0; i < tab->count && st == DSA_OK; i++)
        st = dsa_hf_writer_plan(&hw, tab->info[i].name, DSA_F32, tab->info[i].ndim, tab->info[i].shape);
    if (st == DSA_OK) st = dsa_hf_writer_start(&hw);
    for (int i = 0; i < tab->count && st == DSA_OK; i++)
        st = dsa_hf_writer_put(&hw, tab->info[i].name, params + tab->info[i].offset);
    if (st == DSA_OK) st = dsa_hf_writer_finish(&hw);
    dsa_hf_writer_abort(&hw); /* after finish it only frees */
    return st;
}

/* Rank 0's files: weights, moments (one rank), configs, trainer state. */
static DsaStatus write_rank0_files(Trainer *t, DsaCheckpointWriter *w, int stage) {
    const DsaConfig *cfg = t->cfg;
    char path[1400];
    char *text = NULL;
    DsaStatus st = DSA_OK;
    /* the weights and (one rank) the moments as the host sees them (host_view.h: in place
     * on the CPU) */
    const DsaBackend *be = t->model.be;
    const size_t bytes = (size_t)t->model.table.total * sizeof(float);
    DsaHostView vp = {0}, vm = {0}, vv = {0};
    DSA_TRY_GOTO(st, dsa_host_view_open(&vp, be, t->model.params, bytes, "checkpoint weights"), out);
    if (t->comm->world > 1) DSA_TRY_GOTO(st, write_weights_sharded(t, w, vp.host), out);
    else DSA_TRY_GOTO(st, dsa_model_write_weights(dsa_checkpoint_file(w, "model.safetensors", path, sizeof path),
                                                  &t->model.table, vp.host), out);
    dsa_host_view_close(&vp);
    if (t->comm->world == 1) { /* the whole range: hi - lo = total */
        DSA_TRY_GOTO(st, dsa_host_view_open(&vm, be, t->optim.m, bytes, "checkpoint AdamW moments"), out);
        DSA_TRY_GOTO(st, dsa_host_view_open(&vv, be, t->optim.v, bytes, "checkpoint AdamW moments"), out);
        DSA_TRY_GOTO(st, dsa_model_write_state(dsa_checkpoint_file(w, "optimizer.safetensors", path, sizeof path),
                                               &t->model.table, "exp_avg.", vm.host, "exp_avg_sq.", vv.host),
                     out);
        dsa_host_view_close(&vm);
        dsa_host_view_close(&vv);
    }
    DSA_TRY_GOTO(st, dsa_model_config_to_hf_json(&cfg->model, &text), out);
    DSA_TRY_GOTO(st, dsa_checkpoint_write_text(w, "config.json", text), out);
    free(text);
    text = NULL;
    DSA_TRY_GOTO(st, dsa_config_to_json(cfg, &text), out);
    DSA_TRY_GOTO(st, dsa_checkpoint_write_text(w, "run_config.json", text), out);
    DSA_TRY_GOTO(st, write_state_json(t, w, stage), out);
out:
    dsa_host_view_close(&vp);
    dsa_host_view_close(&vm);
    dsa_host_view_close(&vv);
    free(text);
    return st;
}

/* How many ranks report a failure (collective; 0 on one rank when st is DSA_OK). */
static DsaStatus count_failures(DsaComm *c, DsaStatus st, int *failed) {
    double f = st != DSA_OK;
    DsaStatus cs = c->ops->all_reduce_sum(c, &f, 1, DSA_COMM_F64);
    *failed = (int)f;
    return cs;
}

DsaStatus trainer_save_checkpoint(Trainer *t, int stage) {
    const DsaConfig *cfg = t->cfg;
    DsaComm *c = t->comm;
    const bool rank0 = c->rank == 0;
    char name[64], tmp[DSA_CHECKPOINT_PATH_CAP] = "";
    snprintf(name, sizeof name, "step-%08lld", (long long)t->step);
    double t0 = dsa_time_now();
    DsaCheckpointWriter w;
    memset(&w, 0, sizeof w);
    DsaStatus st = DSA_OK;
    int failed = 0;
    if (rank0) {
        st = dsa_checkpoint_begin(&w, cfg->train.out_dir, name);
        if (st == DSA_OK) snprintf(tmp, sizeof tmp, "%s", w.tmp_dir);
    }
    DSA_TRY(c->ops->broadcast(c, tmp, sizeof tmp, DSA_COMM_BYTE, 0));
    if (!tmp[0]) {
        if (rank0) goto fail;
        DSA_FAIL(DSA_ERR_IO, "rank 0 could not begin checkpoint %s/%s (its error ends the job)", cfg->train.out_dir,
                 name);
    }
    if (!rank0) st = dsa_checkpoint_join(&w, cfg->train.out_dir, name, tmp);
    w.pause_before_commit_ms = t->opts->pause_before_commit_ms;
    if (st == DSA_OK && c->world > 1) st = write_optimizer_shard(t, &w);
    if (st == DSA_OK && rank0) st = write_rank0_files(t, &w, stage);
    /* every rank's files are fsynced: confirm before rank 0 commits */
    DSA_TRY(count_failures(c, st, &failed));
    if (st != DSA_OK) goto fail;
    if (failed) {
        dsa_error_set(DSA_ERR_IO, __FILE__, __LINE__, "%d rank(s) could not write their part of the checkpoint", failed);
        st = DSA_ERR_IO;
        goto fail;
    }
    if (rank0) st = dsa_checkpoint_commit(&w);
    DSA_TRY(count_failures(c, st, &failed));
    if (st != DSA_OK) goto fail;
    if (failed) DSA_FAIL(DSA_ERR_IO, "rank 0 could not commit checkpoint %s/%s", cfg->train.out_dir, name);
    snprintf(t->last_checkpoint, sizeof t->last_checkpoint, "%s/%s", cfg->train.out_dir, name);
    if (rank0) dsa_log(DSA_LOG_INFO, "checkpoint %s written in %.2f s", t->last_checkpoint, dsa_time_now() - t0);
    return DSA_OK;
fail:
    dsa_checkpoint_abort(&w);
    dsa_error_push(__FILE__, __LINE__, "saving checkpoint %s/%s", cfg->train.out_dir, name);
    return st;
}

static DsaStatus json_int(const cJSON *root, const char *key, const char *file, int64_t *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!cJSON_IsNumber(v) || v->valuedouble < 0)
        DSA_FAIL(DSA_ERR_FORMAT, "%s: \"%s\" is missing or not a non-negative number", file, key);
    *out = (int64_t)v->valuedouble;
    return DSA_OK;
}

/* Read the tensors `prefix`<name> of the safetensors file `path` into the backend buffer
 * dev (the table's flat layout), through a host view. */
static DsaStatus read_into(const DsaBackend *be, float *dev, const char *path, const DsaParamTable *table,
                           const char *prefix, bool allow_extra) {
    DsaHostView v;
    DSA_TRY(dsa_host_view_open(&v, be, dev, (size_t)table->total * sizeof(float), path));
    DsaStatus st = dsa_model_read_tensors(path, table, prefix, v.host, allow_extra);
    if (st == DSA_OK) dsa_host_view_commit(&v, be, dev);
    dsa_host_view_close(&v);
    return st;
}

/* Copy the part of src (the elements [src_lo, src_hi) of the flat layout) that overlaps
 * this optimizer's range into its moments. */
static void copy_overlap(DsaOptimizer *o, float *dst, const float *src, int64_t src_lo, int64_t src_hi) {
    const int64_t a = src_lo > o->lo ? src_lo : o->lo, b = src_hi < o->hi ? src_hi : o->hi;
    if (a < b) memcpy(dst + (a - o->lo), src + (a - src_lo), (size_t)(b - a) * sizeof(float));
}

/* An F32 tensor of `numel` elements in `st`, or an error naming the file. */
static DsaStatus f32_entry(const DsaSafetensors *st, const char *name, int64_t numel, const float **out) {
    const DsaStEntry *e = dsa_safetensors_find(st, name);
    if (!e) DSA_FAIL(DSA_ERR_FORMAT, "%s: tensor %s is missing", st->path, name);
    if (e->dtype != DSA_F32 || (int64_t)(e->end - e->begin) != numel * 4)
        DSA_FAIL(DSA_ERR_FORMAT, "%s: tensor %s must be F32 with %lld elements", st->path, name, (long long)numel);
    *out = dsa_safetensors_data(st, e);
    return DSA_OK;
}

/* One rank's shard file: its range from the metadata, checked against the model. */
static DsaStatus read_shard_file(DsaOptimizer *o, float *hm, float *hv, const char *path, int64_t *covered) {
    DsaSafetensors st;
    DSA_TRY(dsa_safetensors_open(&st, path));
    DsaStatus status = DSA_OK;
    const char *lo_s = dsa_safetensors_meta(&st, "shard_lo"), *hi_s = dsa_safetensors_meta(&st, "shard_hi"),
               *tot_s = dsa_safetensors_meta(&st, "total");
    const long long lo = lo_s ? atoll(lo_s) : -1, hi = hi_s ? atoll(hi_s) : -1, total = tot_s ? atoll(tot_s) : -1;
    const float *m = NULL, *v = NULL;
    if (total != o->table->total)
        DSA_FAIL_GOTO(status, out, DSA_ERR_FORMAT, "%s: metadata \"total\" %lld, the model has %lld parameters", path,
                      total, (long long)o->table->total);
    if (lo != *covered || hi < lo || hi > total)
        DSA_FAIL_GOTO(status, out, DSA_ERR_FORMAT,
                      "%s: shard range %lld..%lld, the next one expected to start at %lld (shards must tile the model)",
                      path, lo, hi, (long long)*covered);
    DSA_TRY_GOTO(status, f32_entry(&st, "exp_avg", hi - lo, &m), out);
    DSA_TRY_GOTO(status, f32_entry(&st, "exp_avg_sq", hi - lo, &v), out);
    copy_overlap(o, hm, m, lo, hi);
    copy_overlap(o, hv, v, lo, hi);
    *covered = hi;
out:
    dsa_safetensors_close(&st);
    return status;
}

/* optimizer.safetensors of a one-rank run, per tensor, for a shard of the layout. */
static DsaStatus read_full_file_range(DsaOptimizer *o, float *hm, float *hv, const char *path) {
    DsaSafetensors st;
    DSA_TRY(dsa_safetensors_open(&st, path));
    DsaStatus status = DSA_OK;
    char name[DSA_PARAM_NAME_CAP + 32];
    for (int i = 0; i < o->table->count && status == DSA_OK; i++) {
        const DsaParamInfo *p = &o->table->info[i];
        if (p->offset + p->numel <= o->lo || p->offset >= o->hi) continue;
        const float *m = NULL, *v = NULL;
        snprintf(name, sizeof name, "exp_avg.%s", p->name);
        status = f32_entry(&st, name, p->numel, &m);
        snprintf(name, sizeof name, "exp_avg_sq.%s", p->name);
        if (status == DSA_OK) status = f32_entry(&st, name, p->numel, &v);
        if (status != DSA_OK) break;
        copy_overlap(o, hm, m, p->offset, p->offset + p->numel);
        copy_overlap(o, hv, v, p->offset, p->offset + p->numel);
    }
    dsa_safetensors_close(&st);
    return status;
}

/* This rank's AdamW moments from the checkpoint `dir`, whatever world size wrote it, into
 * host arrays hm, hv of its range (hi - lo each). */
static DsaStatus read_moments(Trainer *t, float *hm, float *hv, const char *dir, const cJSON *files) {
    char path[1400];
    DsaOptimizer *o = &t->optim;
    if (!files) {
        snprintf(path, sizeof path, "%s/optimizer.safetensors", dir);
        if (o->lo == 0 && o->hi == t->model.table.total) { /* one rank: as always */
            DSA_TRY(dsa_model_read_tensors(path, &t->model.table, "exp_avg.", hm, true));
            return dsa_model_read_tensors(path, &t->model.table, "exp_avg_sq.", hv, true);
        }
        return read_full_file_range(o, hm, hv, path);
    }
    if (!cJSON_IsArray(files) || cJSON_GetArraySize(files) < 1)
        DSA_FAIL(DSA_ERR_FORMAT, "%s/trainer_state.json: \"optimizer_files\" must be a non-empty array of names", dir);
    int64_t covered = 0;
    const cJSON *f;
    cJSON_ArrayForEach(f, files) {
        if (!cJSON_IsString(f) || strchr(f->valuestring, '/'))
            DSA_FAIL(DSA_ERR_FORMAT, "%s/trainer_state.json: \"optimizer_files\" holds a non-file-name entry", dir);
        snprintf(path, sizeof path, "%s/%s", dir, f->valuestring);
        DSA_TRY(read_shard_file(o, hm, hv, path, &covered));
    }
    if (covered != t->model.table.total)
        DSA_FAIL(DSA_ERR_FORMAT, "%s: the optimizer shards cover %lld of the model's %lld parameters", dir,
                 (long long)covered, (long long)t->model.table.total);
    return DSA_OK;
}

/* The moments through host views of the optimizer's backend buffers (host_view.h). */
static DsaStatus load_moments(Trainer *t, const char *dir, const cJSON *files) {
    DsaOptimizer *o = &t->optim;
    const DsaBackend *be = t->model.be;
    const size_t bytes = (size_t)(o->hi - o->lo) * sizeof(float);
    DsaHostView vm = {0}, vv = {0};
    DsaStatus st = dsa_host_view_open(&vm, be, o->m, bytes, "resumed AdamW moments");
    if (st == DSA_OK) st = dsa_host_view_open(&vv, be, o->v, bytes, "resumed AdamW moments");
    if (st == DSA_OK) st = read_moments(t, vm.host, vv.host, dir, files);
    if (st == DSA_OK) {
        dsa_host_view_commit(&vm, be, o->m);
        dsa_host_view_commit(&vv, be, o->v);
    }
    dsa_host_view_close(&vm);
    dsa_host_view_close(&vv);
    return st;
}

DsaStatus trainer_load_checkpoint(Trainer *t, const char *dir) {
    const DsaConfig *cfg = t->cfg;
    char path[1100];
    bool verified = false;
    DSA_TRY(dsa_checkpoint_verify(dir, &verified));
    if (!verified) DSA_FAIL(DSA_ERR_FORMAT, "%s: not a training checkpoint (no manifest.json)", dir);

    snprintf(path, sizeof path, "%s/config.json", dir);
    DsaModelConfig saved;
    DSA_TRY(dsa_model_config_load(&saved, path));
    DSA_TRY(dsa_model_config_check_same(&saved, path, &cfg->model, cfg->source));

    snprintf(path, sizeof path, "%s/trainer_state.json", dir);
    char *text = NULL;
    size_t len = 0;
    DSA_TRY(dsa_file_read_all(path, &text, &len));
    cJSON *root = cJSON_Parse(text);
    dsa_free(text, len + 1);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        DSA_FAIL(DSA_ERR_FORMAT, "%s: not a JSON object", path);
    }
    DsaStatus st = DSA_OK;
    int64_t version = 0, step = 0, stage = 0;
    DSA_TRY_GOTO(st, json_int(root, "format_version", path, &version), out);
    if (version != DSA_TRAIN_STATE_VERSION)
        DSA_FAIL_GOTO(st, out, DSA_ERR_FORMAT, "%s: format_version %lld, this build reads %d", path, (long long)version,
                      DSA_TRAIN_STATE_VERSION);
    DSA_TRY_GOTO(st, json_int(root, "step", path, &step), out);
    const cJSON *gs = cJSON_GetObjectItemCaseSensitive(root, "group_steps");
    if (!cJSON_IsArray(gs) || cJSON_GetArraySize(gs) != DSA_GROUP_COUNT)
        DSA_FAIL_GOTO(st, out, DSA_ERR_FORMAT, "%s: \"group_steps\" must be an array of %d numbers", path,
                      DSA_GROUP_COUNT);
    for (int g = 0; g < DSA_GROUP_COUNT; g++) {
        const cJSON *e = cJSON_GetArrayItem(gs, g);
        if (!cJSON_IsNumber(e) || e->valuedouble < 0)
            DSA_FAIL_GOTO(st, out, DSA_ERR_FORMAT, "%s: group_steps[%d] is not a non-negative number", path, g);
        t->optim.group_steps[g] = (int64_t)e->valuedouble;
    }
    if (step > t->total_steps)
        DSA_FAIL_GOTO(st, out, DSA_ERR_CONFIG, "%s: step %lld is past the %lld steps of the config's stages", path,
                      (long long)step, (long long)t->total_steps);
    const cJSON *cur = cJSON_GetObjectItemCaseSensitive(root, "data_cursor");
    if (cur) {
        DSA_TRY_GOTO(st, json_int(root, "data_stage", path, &stage), out);
        if (stage >= cfg->num_stages)
            DSA_FAIL_GOTO(st, out, DSA_ERR_FORMAT, "%s: data_stage %lld, the config has %d stages", path,
                          (long long)stage, cfg->num_stages);
        DSA_TRY_GOTO(st, dsa_loader_cursor_from_json(cur, &t->cursor, path), out);
        t->have_cursor = true;
        t->cursor_stage = (int)stage;
    }
    const cJSON *thr = cJSON_GetObjectItemCaseSensitive(root, "threads");
    if (cJSON_IsNumber(thr) && (int)thr->valuedouble != dsa_backend_cpu_threads())
        dsa_log(DSA_LOG_WARN,
                "%s was written with %d threads, this run has %d: it continues correctly, but not bit for bit "
                "like the uninterrupted run (reductions are ordered per thread count)",
                path, (int)thr->valuedouble, dsa_backend_cpu_threads());
    const cJSON *wor = cJSON_GetObjectItemCaseSensitive(root, "world");
    const int saved_world = cJSON_IsNumber(wor) ? (int)wor->valuedouble : 1;
    if (saved_world != t->comm->world && t->comm->rank == 0)
        dsa_log(DSA_LOG_WARN,
                "%s was written by %d rank(s), this run has %d: the optimizer shards are re-split and the data "
                "continues where it stopped, but the sums are formed in another order (not bit for bit)",
                path, saved_world, t->comm->world);
    const cJSON *tok = cJSON_GetObjectItemCaseSensitive(root, "tokens_seen");
    t->tokens_seen = cJSON_IsNumber(tok) ? (int64_t)tok->valuedouble : 0;
    t->step = step;

    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    struct stat sb;
    if (stat(path, &sb) == 0) { /* sharded weights (a multi-rank save) */
        DsaHostView vp;
        DSA_TRY_GOTO(st, dsa_host_view_open(&vp, t->model.be, t->model.params,
                                            (size_t)t->model.table.total * sizeof(float), dir), out);
        st = dsa_model_read_hf(dir, &cfg->model, &t->model.table, vp.host);
        if (st == DSA_OK) dsa_host_view_commit(&vp, t->model.be, t->model.params);
        dsa_host_view_close(&vp);
        if (st != DSA_OK) goto out;
    } else {
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        DSA_TRY_GOTO(st, read_into(t->model.be, t->model.params, path, &t->model.table, "", false), out);
    }
    DSA_TRY_GOTO(st, load_moments(t, dir, cJSON_GetObjectItemCaseSensitive(root, "optimizer_files")), out);
out:
    cJSON_Delete(root);
    return st;
}

DsaStatus trainer_load_init_weights(Trainer *t, const char *from) {
    char dir[1024], path[1100];
    bool verified = false;
    DsaModelConfig saved;
    DSA_TRY(dsa_model_open_dir(from, dir, sizeof dir, &saved, &verified));
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (!saved.has_indexer && t->cfg->model.has_indexer)
        DSA_FAIL(DSA_ERR_CONFIG,
                 "%s: a dense model (no lightning indexer), and %s trains a DSA model: add the indexer first with "
                 "`dsa convert --add-indexer %s --out DIR --index-n-heads %lld --index-head-dim %lld --index-topk %lld`, "
                 "then --init DIR",
                 path, t->cfg->source, from, (long long)t->cfg->model.index_n_heads,
                 (long long)t->cfg->model.index_head_dim, (long long)t->cfg->model.index_topk);
    DSA_TRY(dsa_model_config_check_same(&saved, path, &t->cfg->model, t->cfg->source));
    /* through the HF reader: one file or shards, F32/BF16/F16 or FP8 blocks */
    DsaHostView v;
    DSA_TRY(dsa_host_view_open(&v, t->model.be, t->model.params, (size_t)t->model.table.total * sizeof(float), dir));
    DsaStatus st = dsa_model_read_hf(dir, &saved, &t->model.table, v.host);
    if (st == DSA_OK) dsa_host_view_commit(&v, t->model.be, t->model.params);
    dsa_host_view_close(&v);
    DSA_TRY(st);
    dsa_log(DSA_LOG_INFO, "initialized from %s%s", dir, verified ? "" : " (no manifest: checksums not verified)");
    return DSA_OK;
}
