/* model_io.c: HF-named safetensors and config.json for the model (model_io.h). */
#include "pretrain/model_io.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "checkpoints/checkpoint.h"
#include "checkpoints/safetensors.h"
#include "core/mem.h"

static DsaStatus write_tables(const char *path, const DsaParamTable *t, const char *const *prefixes,
                              const float *const *bufs, int nbufs) {
    int n = t->count * nbufs;
    DsaStTensorRef *refs = dsa_calloc((size_t)n, sizeof *refs);
    char *names = dsa_calloc((size_t)n, DSA_PARAM_NAME_CAP + 32);
    if (!refs || !names) {
        dsa_free(refs, (size_t)n * sizeof *refs);
        dsa_free(names, (size_t)n * (DSA_PARAM_NAME_CAP + 32));
        DSA_FAIL(DSA_ERR_NOMEM, "tensor list of %s", path);
    }
    for (int b = 0; b < nbufs; b++) {
        for (int i = 0; i < t->count; i++) {
            const DsaParamInfo *p = &t->info[i];
            DsaStTensorRef *r = &refs[b * t->count + i];
            char *name = names + (size_t)(b * t->count + i) * (DSA_PARAM_NAME_CAP + 32);
            snprintf(name, DSA_PARAM_NAME_CAP + 32, "%s%s", prefixes[b], p->name);
            r->name = name;
            r->dtype = DSA_F32;
            r->ndim = p->ndim;
            r->shape[0] = p->shape[0];
            r->shape[1] = p->shape[1];
            r->data = bufs[b] + p->offset;
        }
    }
    static const char *const keys[] = {"format"}, *const values[] = {"pt"};
    DsaStatus st = dsa_safetensors_write(path, refs, n, keys, values, 1);
    dsa_free(refs, (size_t)n * sizeof *refs);
    dsa_free(names, (size_t)n * (DSA_PARAM_NAME_CAP + 32));
    return st;
}

DsaStatus dsa_model_write_weights(const char *path, const DsaParamTable *t, const float *params) {
    const char *prefixes[] = {""};
    const float *bufs[] = {params};
    return write_tables(path, t, prefixes, bufs, 1);
}

DsaStatus dsa_model_write_state(const char *path, const DsaParamTable *t, const char *prefix_a, const float *a,
                                const char *prefix_b, const float *b) {
    const char *prefixes[] = {prefix_a, prefix_b};
    const float *bufs[] = {a, b};
    return write_tables(path, t, prefixes, bufs, b ? 2 : 1);
}

DsaStatus dsa_model_read_tensors(const char *path, const DsaParamTable *t, const char *prefix, float *out,
                                 bool allow_extra) {
    DsaSafetensors st;
    DSA_TRY(dsa_safetensors_open(&st, path));
    DsaStatus status = DSA_OK;
    char name[DSA_PARAM_NAME_CAP + 32];
    for (int i = 0; i < t->count && status == DSA_OK; i++) {
        const DsaParamInfo *p = &t->info[i];
        snprintf(name, sizeof name, "%s%s", prefix, p->name);
        if (!dsa_safetensors_find(&st, name)) {
            status = DSA_ERR_FORMAT;
            dsa_error_set(status, __FILE__, __LINE__, "%s: tensor %s is missing (the model config expects shape %s)",
                           path, name, p->ndim == 2 ? "2-D" : "1-D");
            break;
        }
        status = dsa_safetensors_read_f32(&st, name, p->ndim, p->shape, out + p->offset);
    }
    for (int i = 0; status == DSA_OK && !allow_extra && i < st.count; i++) {
        const char *n = st.entries[i].name;
        size_t plen = strlen(prefix);
        if (strncmp(n, prefix, plen) != 0 || !dsa_param_find(t, n + plen)) {
            status = DSA_ERR_FORMAT;
            dsa_error_set(status, __FILE__, __LINE__,
                           "%s: unexpected tensor %s (not part of the model the config describes)", path, n);
        }
    }
    dsa_safetensors_close(&st);
    return status;
}

/* The model section of `m` as a cJSON object (caller deletes). */
static DsaStatus model_json(const DsaModelConfig *m, cJSON **out) {
    DsaConfig *cfg = dsa_malloc(sizeof *cfg);
    if (!cfg) DSA_FAIL(DSA_ERR_NOMEM, "config");
    DsaStatus st = dsa_config_defaults(cfg);
    char *text = NULL;
    if (st == DSA_OK) {
        cfg->model = *m;
        st = dsa_config_to_json(cfg, &text);
    }
    dsa_free(cfg, sizeof *cfg);
    DSA_TRY(st);
    cJSON *root = cJSON_Parse(text);
    free(text);
    cJSON *model = root ? cJSON_DetachItemFromObject(root, "model") : NULL;
    cJSON_Delete(root);
    if (!model) DSA_FAIL(DSA_ERR_INTERNAL, "config JSON has no model section");
    *out = model;
    return DSA_OK;
}

DsaStatus dsa_model_config_to_hf_json(const DsaModelConfig *m, char **text) {
    cJSON *model = NULL;
    DSA_TRY(model_json(m, &model));
    cJSON *arch = cJSON_CreateStringArray((const char *[]){"DeepseekV3ForCausalLM"}, 1);
    cJSON_AddItemToObject(model, "architectures", arch);
    cJSON_AddStringToObject(model, "torch_dtype", "float32");
    *text = cJSON_Print(model);
    cJSON_Delete(model);
    if (!*text) DSA_FAIL(DSA_ERR_NOMEM, "config.json text");
    return DSA_OK;
}

DsaStatus dsa_model_config_load(DsaModelConfig *m, const char *path) {
    DsaConfig *cfg = dsa_malloc(sizeof *cfg);
    if (!cfg) DSA_FAIL(DSA_ERR_NOMEM, "config");
    DsaStatus st = dsa_config_load(cfg, path, NULL, 0);
    /* Only the model section matters here: keep the default run's sequence length from
     * tripping the max_position_embeddings check of a small model. */
    cfg->data.seq_len = 1;
    for (int i = 0; i < cfg->num_stages; i++) cfg->stages[i].seq_len = 1;
    if (st == DSA_OK) st = dsa_config_validate(cfg);
    if (st == DSA_OK) *m = cfg->model;
    dsa_free(cfg, sizeof *cfg);
    return st;
}

DsaStatus dsa_model_config_check_same(const DsaModelConfig *a, const char *what_a, const DsaModelConfig *b,
                                      const char *what_b) {
    cJSON *ja = NULL, *jb = NULL;
    DSA_TRY(model_json(a, &ja));
    DsaStatus st = model_json(b, &jb);
    if (st != DSA_OK) {
        cJSON_Delete(ja);
        return st;
    }
    const cJSON *ia = NULL;
    cJSON_ArrayForEach(ia, ja) {
        const cJSON *ib = cJSON_GetObjectItemCaseSensitive(jb, ia->string);
        char *sa = cJSON_PrintUnformatted(ia), *sb = ib ? cJSON_PrintUnformatted(ib) : NULL;
        bool same = sa && sb && !strcmp(sa, sb);
        if (!same) {
            st = DSA_ERR_CONFIG;
            dsa_error_set(st, __FILE__, __LINE__, "model.%s differs: %s in %s, %s in %s", ia->string,
                           sa ? sa : "?", what_a, sb ? sb : "(absent)", what_b);
        }
        free(sa);
        free(sb);
        if (!same) break;
    }
    cJSON_Delete(ja);
    cJSON_Delete(jb);
    return st;
}

DsaStatus dsa_model_load(DsaModel *m, const char *path, const DsaBackend *be, char *dir, size_t cap) {
    memset(m, 0, sizeof *m);
    DSA_TRY(dsa_checkpoint_resolve(path, dir, cap));
    bool verified = false;
    DSA_TRY(dsa_checkpoint_verify(dir, &verified));
    char file[1100];
    snprintf(file, sizeof file, "%s/config.json", dir);
    DsaModelConfig cfg;
    DSA_TRY(dsa_model_config_load(&cfg, file));
    DSA_TRY(dsa_model_init(m, &cfg, be));
    snprintf(file, sizeof file, "%s/model.safetensors", dir);
    DsaStatus st = dsa_model_read_tensors(file, &m->table, "", m->params, false);
    if (st != DSA_OK) {
        dsa_model_free(m);
        DSA_TRY(st);
    }
    return DSA_OK;
}
