/* trainer_state.c: the trainer's checkpoints (trainer_internal.h): what a step-N/
 * directory holds (weights, AdamW moments, the model and run configs, trainer_state.json
 * with the step, the groups' step counts and the data cursor), resume from one, and the
 * weights-only start of --init. The directory's atomic commit is checkpoints/checkpoint.c's.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "checkpoints/checkpoint.h"
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

DsaStatus trainer_save_checkpoint(Trainer *t, int stage) {
    const DsaConfig *cfg = t->cfg;
    char name[64], path[1400];
    snprintf(name, sizeof name, "step-%08lld", (long long)t->step);
    double t0 = dsa_time_now();
    DsaCheckpointWriter w;
    DSA_TRY(dsa_checkpoint_begin(&w, cfg->train.out_dir, name));
    w.pause_before_commit_ms = t->opts->pause_before_commit_ms;
    DsaStatus st = DSA_OK;
    char *text = NULL;
    /* the weights and moments as the host sees them (host_view.h: in place on the CPU) */
    const DsaBackend *be = t->model.be;
    const size_t bytes = (size_t)t->model.table.total * sizeof(float);
    DsaHostView vp = {0}, vm = {0}, vv = {0};
    DSA_TRY_GOTO(st, dsa_host_view_open(&vp, be, t->model.params, bytes, "checkpoint weights"), fail);
    DSA_TRY_GOTO(st, dsa_model_write_weights(dsa_checkpoint_file(&w, "model.safetensors", path, sizeof path),
                                             &t->model.table, vp.host),
                 fail);
    dsa_host_view_close(&vp);
    DSA_TRY_GOTO(st, dsa_host_view_open(&vm, be, t->optim.m, bytes, "checkpoint AdamW moments"), fail);
    DSA_TRY_GOTO(st, dsa_host_view_open(&vv, be, t->optim.v, bytes, "checkpoint AdamW moments"), fail);
    DSA_TRY_GOTO(st, dsa_model_write_state(dsa_checkpoint_file(&w, "optimizer.safetensors", path, sizeof path),
                                           &t->model.table, "exp_avg.", vm.host, "exp_avg_sq.", vv.host),
                 fail);
    dsa_host_view_close(&vm);
    dsa_host_view_close(&vv);
    DSA_TRY_GOTO(st, dsa_model_config_to_hf_json(&cfg->model, &text), fail);
    DSA_TRY_GOTO(st, dsa_checkpoint_write_text(&w, "config.json", text), fail);
    free(text);
    text = NULL;
    DSA_TRY_GOTO(st, dsa_config_to_json(cfg, &text), fail);
    DSA_TRY_GOTO(st, dsa_checkpoint_write_text(&w, "run_config.json", text), fail);
    free(text);
    text = NULL;
    DSA_TRY_GOTO(st, write_state_json(t, &w, stage), fail);
    DSA_TRY_GOTO(st, dsa_checkpoint_commit(&w), fail);
    snprintf(t->last_checkpoint, sizeof t->last_checkpoint, "%s/%s", cfg->train.out_dir, name);
    dsa_log(DSA_LOG_INFO, "checkpoint %s written in %.2f s", t->last_checkpoint, dsa_time_now() - t0);
    return DSA_OK;
fail:
    dsa_host_view_close(&vp);
    dsa_host_view_close(&vm);
    dsa_host_view_close(&vv);
    free(text);
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
    const cJSON *tok = cJSON_GetObjectItemCaseSensitive(root, "tokens_seen");
    t->tokens_seen = cJSON_IsNumber(tok) ? (int64_t)tok->valuedouble : 0;
    t->step = step;

    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    DSA_TRY_GOTO(st, read_into(t->model.be, t->model.params, path, &t->model.table, "", false), out);
    snprintf(path, sizeof path, "%s/optimizer.safetensors", dir);
    DSA_TRY_GOTO(st, read_into(t->model.be, t->optim.m, path, &t->model.table, "exp_avg.", true), out);
    DSA_TRY_GOTO(st, read_into(t->model.be, t->optim.v, path, &t->model.table, "exp_avg_sq.", true), out);
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
