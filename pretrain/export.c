/* export.c: `dsa export`, a DeepSeek-V3.2-layout checkpoint streamed tensor by tensor
 * (export.h; DSA-SPEC §3.1, §3.2). */
#include "pretrain/export.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cJSON.h>

#include "checkpoints/checkpoint.h"
#include "checkpoints/hf.h"
#include "core/fileutil.h"
#include "core/log.h"
#include "core/mem.h"
#include "pretrain/model_io.h"

DsaStatus dsa_export_dtype_parse(const char *text, DsaExportDType *out) {
    if (!strcmp(text, "bf16")) *out = DSA_EXPORT_BF16;
    else if (!strcmp(text, "fp8")) *out = DSA_EXPORT_FP8;
    else if (!strcmp(text, "f32")) *out = DSA_EXPORT_F32;
    else DSA_FAIL(DSA_ERR_ARG, "--dtype \"%s\": expected bf16, fp8 or f32", text);
    return DSA_OK;
}

const char *dsa_export_dtype_name(DsaExportDType m) {
    return m == DSA_EXPORT_FP8 ? "fp8" : m == DSA_EXPORT_F32 ? "f32" : "bf16";
}

/* The tensors the DeepSeek-V3.2 FP8 checkpoint stores as e4m3 (DSA-SPEC §3.1 table). */
static bool slot_is_fp8(DsaWeightSlot s) {
    switch (s) {
    case DSA_W_Q_A:
    case DSA_W_Q_B:
    case DSA_W_Q:
    case DSA_W_KV_A:
    case DSA_W_KV_B:
    case DSA_W_O:
    case DSA_W_IDX_WQ_B:
    case DSA_W_IDX_WK:
    case DSA_W_GATE:
    case DSA_W_UP:
    case DSA_W_DOWN:
    case DSA_W_EXPERT_GATE:
    case DSA_W_EXPERT_UP:
    case DSA_W_EXPERT_DOWN:
    case DSA_W_SHARED_GATE:
    case DSA_W_SHARED_UP:
    case DSA_W_SHARED_DOWN: return true;
    default: return false;
    }
}

/* Tensors kept F32 in every mode (DSA-SPEC §3.1: e_score_correction_bias is f32). */
static bool slot_is_f32(DsaWeightSlot s) { return s == DSA_W_ROUTER_BIAS; }

DsaDType dsa_export_dtype(DsaWeightSlot slot, DsaExportDType mode) {
    DSA_ASSERT(mode != DSA_EXPORT_AUTO);
    if (mode == DSA_EXPORT_F32 || slot_is_f32(slot)) return DSA_F32;
    if (mode == DSA_EXPORT_FP8 && slot_is_fp8(slot)) return DSA_F8_E4M3;
    return DSA_BF16;
}

/* Replace (or add) `key` of `obj` with `item`. */
static void set_item(cJSON *obj, const char *key, cJSON *item) {
    if (cJSON_HasObjectItem(obj, key)) cJSON_ReplaceItemInObjectCaseSensitive(obj, key, item);
    else cJSON_AddItemToObject(obj, key, item);
}

DsaStatus dsa_export_config_json(const DsaModelConfig *m, DsaExportDType mode, const int64_t block[2], char **text) {
    DSA_ASSERT(mode != DSA_EXPORT_AUTO);
    char *base = NULL;
    DSA_TRY(dsa_model_config_to_hf_json(m, &base));
    cJSON *root = cJSON_Parse(base);
    free(base);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        DSA_FAIL(DSA_ERR_INTERNAL, "the model's config.json text does not parse back");
    }
    const char *type = m->has_indexer ? "deepseek_v32" : m->model_type;
    const char *arch = m->has_indexer                           ? "DeepseekV32ForCausalLM"
                       : !strcmp(m->model_type, "deepseek_v2") ? "DeepseekV2ForCausalLM"
                                                               : "DeepseekV3ForCausalLM";
    set_item(root, "model_type", cJSON_CreateString(type));
    set_item(root, "architectures", cJSON_CreateStringArray(&arch, 1));
    set_item(root, "torch_dtype", cJSON_CreateString(mode == DSA_EXPORT_F32 ? "float32" : "bfloat16"));
    set_item(root, "num_nextn_predict_layers", cJSON_CreateNumber(0));
    /* NOTE: HF's DeepSeek classes build an MoE block in every layer >= first_k_dense_replace
     * whatever n_routed_experts says; a dense model spells "no MoE layer" this way. Their
     * configs type n_routed_experts and num_experts_per_tok as integers (transformers 5
     * refuses null), so a dense model writes 0 for both: no routed experts, none per token.
     * Our reader takes n_routed_experts 0 as dense again (core/config_schema.c, model_post;
     * DSA-SPEC §3.4 Decision (models without routed experts)). */
    if (!m->has_moe) {
        set_item(root, "first_k_dense_replace", cJSON_CreateNumber((double)m->num_hidden_layers));
        set_item(root, "n_routed_experts", cJSON_CreateNumber(0));
        set_item(root, "num_experts_per_tok", cJSON_CreateNumber(0));
    }
    if (!m->has_indexer) {
        cJSON_DeleteItemFromObjectCaseSensitive(root, "index_topk");
        cJSON_DeleteItemFromObjectCaseSensitive(root, "index_n_heads");
        cJSON_DeleteItemFromObjectCaseSensitive(root, "index_head_dim");
    }
    /* A quantization_config (even null) makes HF treat the weights as quantized. */
    cJSON_DeleteItemFromObjectCaseSensitive(root, "quantization_config");
    if (mode == DSA_EXPORT_FP8) {
        cJSON *q = cJSON_AddObjectToObject(root, "quantization_config");
        const DsaQuantConfig *src = m->has_fp8 ? &m->quantization_config : NULL;
        double bs[2] = {(double)block[0], (double)block[1]};
        cJSON_AddStringToObject(q, "quant_method", "fp8");
        cJSON_AddStringToObject(q, "fmt", "e4m3");
        cJSON_AddItemToObject(q, "weight_block_size", cJSON_CreateDoubleArray(bs, 2));
        cJSON_AddStringToObject(q, "activation_scheme", src && src->activation_scheme[0] ? src->activation_scheme
                                                                                          : "dynamic");
        /* NOTE: exported scales are powers of two, valid as f32 and as ue8m0 (§3.2). */
        cJSON_AddStringToObject(q, "scale_fmt", src && src->scale_fmt[0] ? src->scale_fmt : "ue8m0");
    }
    char *body = cJSON_Print(root);
    cJSON_Delete(root);
    size_t n = body ? strlen(body) : 0;
    *text = body ? realloc(body, n + 2) : NULL; /* room for the final newline */
    if (!*text) {
        free(body);
        DSA_FAIL(DSA_ERR_NOMEM, "config.json text");
    }
    memcpy(*text + n, "\n", 2);
    return DSA_OK;
}

/* out_dir must not exist, or be an empty directory. */
static DsaStatus check_out_dir(const char *out_dir) {
    struct stat sb;
    if (stat(out_dir, &sb) != 0) {
        if (errno == ENOENT) return DSA_OK;
        DSA_FAIL(DSA_ERR_IO, "%s: cannot access: %s", out_dir, strerror(errno));
    }
    if (!S_ISDIR(sb.st_mode)) DSA_FAIL(DSA_ERR_IO, "%s exists and is not a directory", out_dir);
    DIR *d = opendir(out_dir);
    if (!d) DSA_FAIL(DSA_ERR_IO, "%s: cannot open: %s", out_dir, strerror(errno));
    struct dirent *e;
    bool found = false;
    char first[256] = "";
    while (!found && (e = readdir(d))) {
        found = strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
        if (found) snprintf(first, sizeof first, "%s", e->d_name);
    }
    closedir(d);
    if (found)
        DSA_FAIL(DSA_ERR_IO, "%s is not empty (it holds %s): refusing to export over it; pick a new directory",
                 out_dir, first);
    return DSA_OK;
}

DsaStatus dsa_export(const char *src, const char *out_dir, const DsaExportOptions *opts, DsaExportDType *mode_used) {
    char dir[1024], target[1024], tmp[1200];
    bool verified = false;
    DsaModelConfig cfg;
    DSA_TRY(dsa_model_open_dir(src, dir, sizeof dir, &cfg, &verified));
    DsaExportDType mode = opts->dtype != DSA_EXPORT_AUTO ? opts->dtype
                          : cfg.has_fp8                 ? DSA_EXPORT_FP8
                                                        : DSA_EXPORT_BF16;
    if (mode_used) *mode_used = mode;
    int64_t block[2];
    dsa_model_fp8_block(&cfg, block);

    /* the target without trailing slashes, and its temporary sibling */
    size_t n = strlen(out_dir);
    while (n > 1 && out_dir[n - 1] == '/') n--;
    if (n == 0 || n >= sizeof target) DSA_FAIL(DSA_ERR_ARG, "--out \"%.200s\": empty or too long", out_dir);
    memcpy(target, out_dir, n);
    target[n] = 0;
    DSA_TRY(check_out_dir(target));
    dsa_temp_path(tmp, sizeof tmp, target);

    DsaParamTable t = {0};
    DsaDType *dtypes = NULL;
    DsaHfReader r = {0};
    DsaHfWriter w = {0};
    bool writer_open = false, tmp_made = false;
    char *json = NULL;
    DsaModelStreamStats stats = {0};
    DsaStatus st = DSA_OK;
    DSA_TRY_GOTO(st, dsa_param_table_build(&t, &cfg), out);
    DSA_TRY_GOTO(st, dsa_alloc((void **)&dtypes, (size_t)t.count * sizeof *dtypes, "dtype list"), out);
    for (int i = 0; i < t.count; i++) dtypes[i] = dsa_export_dtype(t.info[i].slot, mode);
    DSA_TRY_GOTO(st, dsa_model_hf_open(&r, dir, &cfg), out);
    DSA_TRY_GOTO(st, dsa_model_hf_check(&r, &cfg, &t, false), out);

    dsa_remove_flat_dir(tmp); /* a killed export of this pid's number: nothing of value */
    {
        char parent[1200];
        snprintf(parent, sizeof parent, "%s", tmp);
        *strrchr(parent, '/') = 0;
        DSA_TRY_GOTO(st, dsa_mkdir_p(parent), out);
        /* the .DIR.tmp.PID of killed exports into the same DIR (fileutil.h) */
        dsa_temp_remove_stale(parent, strrchr(target, '/') ? strrchr(target, '/') + 1 : target, true);
    }
    if (mkdir(tmp, 0755) != 0) DSA_FAIL_GOTO(st, out, DSA_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
    tmp_made = true;
    DSA_TRY_GOTO(st, dsa_hf_writer_init(&w, tmp, opts->shard_bytes), out);
    writer_open = true;
    DsaModelStream s = {
        .src = &r,
        .table = &t,
        .dtypes = dtypes,
        .block = {block[0], block[1]},
        .label = "export",
        .progress = opts->progress,
    };
    DSA_TRY_GOTO(st, dsa_model_stream(&s, &w, &stats), out);
    DSA_TRY_GOTO(st, dsa_hf_writer_finish(&w), out);
    DSA_TRY_GOTO(st, dsa_export_config_json(&cfg, mode, block, &json), out);
    {
        char path[1300];
        snprintf(path, sizeof path, "%s/config.json", tmp);
        DSA_TRY_GOTO(st, dsa_file_write_synced(path, json, strlen(json)), out);
    }
    DSA_TRY_GOTO(st, dsa_fsync_path(tmp), out);
    /* an existing empty target is replaced by the rename (rename(2) onto an empty dir) */
    DSA_TRY_GOTO(st, dsa_rename_durable(tmp, target), out);
    tmp_made = false;
    dsa_log(DSA_LOG_INFO,
            "exported %d tensors (%s%s) from %s%s to %s: %.3f GB written in %.1f s; largest tensor %lld elements; "
            "peak RSS %.1f MB",
            stats.tensors, dsa_export_dtype_name(mode), opts->dtype == DSA_EXPORT_AUTO ? ", the default for this source" : "", dir,
            verified ? "" : " (no manifest: checksums not verified)", target, (double)stats.bytes_written / 1e9,
            stats.seconds, (long long)stats.max_numel, (double)dsa_mem_rss_peak() / 1e6);
out:
    if (writer_open) dsa_hf_writer_abort(&w); /* after finish it only frees */
    if (tmp_made) dsa_remove_flat_dir(tmp);
    free(json);
    dsa_hf_close(&r);
    dsa_free(dtypes, (size_t)t.count * sizeof *dtypes);
    dsa_param_table_free(&t);
    if (st != DSA_OK) dsa_error_push(__FILE__, __LINE__, "exporting %s to %s", dir, target);
    return st;
}
