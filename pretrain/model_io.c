/* model_io.c: HF-named safetensors and config.json for the model (model_io.h). */
#include "pretrain/model_io.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "checkpoints/checkpoint.h"
#include "checkpoints/safetensors.h"
#include "pretrain/host_view.h"
#include "pretrain/sizing.h"
#include "core/log.h"
#include "core/mem.h"
#include "core/progress.h"
#include "kernels/rules/bf16.h"

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
    DsaSizing z; /* sizes that overflow or could never be allocated, named by key and file */
    if (st == DSA_OK) st = dsa_sizing_model(&cfg->model, path, &z);
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

/* ---- reading Hugging Face directories ------------------------------------------------ */

enum { MAX_MTP_PREFIXES = 8, MTP_PREFIX_CAP = 48 };

DsaStatus dsa_model_open_dir(const char *path, char *dir, size_t cap, DsaModelConfig *cfg, bool *verified) {
    DSA_TRY(dsa_checkpoint_resolve(path, dir, cap));
    DSA_TRY(dsa_checkpoint_verify(dir, verified));
    char file[DSA_CHECKPOINT_PATH_CAP + 16];
    snprintf(file, sizeof file, "%s/config.json", dir);
    return dsa_model_config_load(cfg, file);
}

void dsa_model_fp8_block(const DsaModelConfig *cfg, int64_t block[2]) {
    block[0] = cfg->has_fp8 ? cfg->quantization_config.weight_block_size[0] : DSA_HF_DEFAULT_BLOCK;
    block[1] = cfg->has_fp8 ? cfg->quantization_config.weight_block_size[1] : DSA_HF_DEFAULT_BLOCK;
}

DsaStatus dsa_model_hf_open(DsaHfReader *r, const char *dir, const DsaModelConfig *cfg) {
    DSA_TRY(dsa_hf_open(r, dir));
    dsa_model_fp8_block(cfg, r->block);
    return DSA_OK;
}

static int cmp_str_ptr(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

DsaStatus dsa_model_hf_check(const DsaHfReader *r, const DsaModelConfig *cfg, const DsaParamTable *t,
                             bool fresh_indexer) {
    char a[96], b[96];
    for (int i = 0; i < t->count; i++) {
        const DsaParamInfo *p = &t->info[i];
        const DsaHfTensor *h = dsa_hf_find(r, p->name);
        if (fresh_indexer && p->group == DSA_GROUP_INDEXER) {
            if (h)
                DSA_FAIL(DSA_ERR_FORMAT, "%s: tensor %s is present: the model already has a lightning indexer",
                         dsa_hf_file_of(r, h), p->name);
            continue;
        }
        if (!h)
            DSA_FAIL(DSA_ERR_FORMAT, "%s/%s: tensor %s is missing (%s/config.json implies shape %s)", r->dir,
                     r->sharded ? "model.safetensors.index.json" : "model.safetensors", p->name, r->dir,
                     dsa_shape_text(a, sizeof a, p->ndim, p->shape));
        bool same = h->ndim == p->ndim;
        for (int k = 0; same && k < p->ndim; k++) same = h->shape[k] == p->shape[k];
        if (!same)
            DSA_FAIL(DSA_ERR_FORMAT, "%s: tensor %s has shape %s, %s/config.json implies %s", dsa_hf_file_of(r, h),
                     p->name, dsa_shape_text(a, sizeof a, h->ndim, h->shape), r->dir,
                     dsa_shape_text(b, sizeof b, p->ndim, p->shape));
        if (h->dtype != DSA_F32 && h->dtype != DSA_BF16 && h->dtype != DSA_F16 && h->dtype != DSA_F8_E4M3)
            DSA_FAIL(DSA_ERR_FORMAT, "%s: tensor %s has dtype %s, expected a float weight (F32, BF16, F16 or F8_E4M3)",
                     dsa_hf_file_of(r, h), p->name, dsa_dtype_name(h->dtype));
    }

    char prefixes[MAX_MTP_PREFIXES][MTP_PREFIX_CAP];
    int n_skip = (int)(cfg->num_nextn_predict_layers < MAX_MTP_PREFIXES ? cfg->num_nextn_predict_layers
                                                                          : MAX_MTP_PREFIXES);
    for (int i = 0; i < n_skip; i++)
        snprintf(prefixes[i], sizeof prefixes[i], "model.layers.%lld.", (long long)cfg->num_hidden_layers + i);
    const char **names = dsa_calloc((size_t)t->count + 1, sizeof *names);
    if (!names) DSA_FAIL(DSA_ERR_NOMEM, "name list of %d tensors", t->count);
    for (int i = 0; i < t->count; i++) names[i] = t->info[i].name;
    qsort(names, (size_t)t->count, sizeof *names, cmp_str_ptr);
    DsaStatus st = DSA_OK;
    int skipped = 0;
    for (int i = 0; i < r->count && st == DSA_OK; i++) {
        const DsaHfTensor *h = &r->tensors[i];
        bool mtp = false;
        for (int k = 0; k < n_skip && !mtp; k++) mtp = !strncmp(h->name, prefixes[k], strlen(prefixes[k]));
        if (mtp) {
            skipped++;
            continue;
        }
        if (!bsearch(&h->name, names, (size_t)t->count, sizeof *names, cmp_str_ptr))
            st = dsa_error_set(DSA_ERR_FORMAT, __FILE__, __LINE__,
                               "%s: unexpected tensor %s (%s %s): not part of the model %s/config.json describes (%lld "
                               "layers, %s indexer, num_nextn_predict_layers %lld)",
                               dsa_hf_file_of(r, h), h->name, dsa_dtype_name(h->dtype),
                               dsa_shape_text(a, sizeof a, h->ndim, h->shape), r->dir, (long long)cfg->num_hidden_layers,
                               cfg->has_indexer ? "with" : "without", (long long)cfg->num_nextn_predict_layers);
    }
    dsa_free(names, ((size_t)t->count + 1) * sizeof *names);
    /* NOTE: DSA-SPEC §3.1 Decision (MTP): the multi-token-prediction layer is not part of
     * the DSA recipe; its tensors stay behind and converted configs say
     * num_nextn_predict_layers 0. */
    if (st == DSA_OK && skipped)
        dsa_log(DSA_LOG_INFO,
                "%s: skipping the MTP layer%s model.layers.%lld%s.* (%d tensors; DSA-SPEC 3.1 Decision (MTP))",
                r->dir, n_skip > 1 ? "s" : "", (long long)cfg->num_hidden_layers, n_skip > 1 ? "+" : "", skipped);
    return st;
}

DsaStatus dsa_model_read_hf(const char *dir, const DsaModelConfig *cfg, const DsaParamTable *t, float *out) {
    DsaHfReader r;
    DSA_TRY(dsa_model_hf_open(&r, dir, cfg));
    DsaStatus st = dsa_model_hf_check(&r, cfg, t, false);
    for (int i = 0; i < t->count && st == DSA_OK; i++) {
        const DsaParamInfo *p = &t->info[i];
        st = dsa_hf_read_f32(&r, p->name, p->ndim, p->shape, out + p->offset);
        if (st != DSA_OK) dsa_error_push(__FILE__, __LINE__, "reading %s from %s", p->name, dir);
    }
    dsa_hf_close(&r);
    return st;
}

/* ---- streamed conversion ----------------------------------------------------------- */

/* "<x>.weight" -> "<x>.weight_scale_inv" into buf; false when `name` does not end in
 * ".weight" (no FP8 form). */
static bool scale_name(const char *name, char *buf, size_t cap) {
    size_t n = strlen(name);
    if (n < 7 || strcmp(name + n - 7, ".weight") != 0) return false;
    return snprintf(buf, cap, "%s_scale_inv", name) < (int)cap;
}

static bool stream_fresh(const DsaModelStream *s, const DsaParamInfo *p) {
    return s->fresh_indexer && p->group == DSA_GROUP_INDEXER;
}

/* Fill `w` (p->numel floats) with the fresh indexer values of entry `p`: the one-entry
 * table makes dsa_param_init_indexer write at offset 0 with the stream of (layer, slot),
 * so the values are those of a whole-buffer initialization. */
static void fresh_indexer_tensor(const DsaParamInfo *p, float *w, uint64_t seed, double std) {
    DsaParamInfo one = *p;
    one.offset = 0;
    DsaParamTable t = {.info = &one, .count = 1, .capacity = 1, .total = p->numel};
    dsa_param_init_indexer(&t, w, seed, std);
}

DsaStatus dsa_model_stream(const DsaModelStream *s, DsaHfWriter *w, DsaModelStreamStats *stats) {
    const DsaParamTable *t = s->table;
    double t0 = dsa_time_now();
    int64_t max_numel = 0;
    size_t max_out = 0, max_scales = 0;
    uint64_t total_bytes = 0;
    char sname[DSA_PARAM_NAME_CAP + 32];
    for (int i = 0; i < t->count; i++) {
        const DsaParamInfo *p = &t->info[i];
        DsaDType d = s->dtypes[i];
        if (p->numel > max_numel) max_numel = p->numel;
        DSA_TRY(dsa_hf_writer_plan(w, p->name, d, p->ndim, p->shape));
        total_bytes += (uint64_t)p->numel * dsa_dtype_size(d);
        size_t out_bytes = (size_t)p->numel * dsa_dtype_size(d);
        if (d != DSA_F32 && out_bytes > max_out) max_out = out_bytes;
        if (d == DSA_F8_E4M3) {
            if (p->ndim != 2 || !scale_name(p->name, sname, sizeof sname))
                DSA_FAIL(DSA_ERR_ARG, "%s: FP8 output needs a 2-D \".weight\" tensor", p->name);
            int64_t ss[2];
            dsa_fp8_block_scale_shape(p->shape[0], p->shape[1], s->block, ss);
            DSA_TRY(dsa_hf_writer_plan(w, sname, DSA_F32, 2, ss));
            if ((size_t)(ss[0] * ss[1]) > max_scales) max_scales = (size_t)(ss[0] * ss[1]);
            total_bytes += (uint64_t)(ss[0] * ss[1]) * sizeof(float);
        } else if (d != DSA_F32 && d != DSA_BF16) {
            DSA_FAIL(DSA_ERR_ARG, "%s: output dtype %s is not one of F32, BF16, F8_E4M3", p->name,
                     dsa_dtype_name(d));
        }
    }
    DSA_TRY(dsa_hf_writer_start(w));

    float *buf = NULL, *scales = NULL;
    void *out = NULL;
    size_t buf_bytes = (size_t)max_numel * sizeof(float), scale_bytes = max_scales * sizeof(float);
    DsaStatus st = DSA_OK;
    DSA_TRY_GOTO(st, dsa_alloc((void **)&buf, buf_bytes ? buf_bytes : 1, "one F32 tensor of the conversion"), out);
    if (max_out) DSA_TRY_GOTO(st, dsa_alloc(&out, max_out, "one converted tensor"), out);
    if (scale_bytes) DSA_TRY_GOTO(st, dsa_alloc((void **)&scales, scale_bytes, "one FP8 scale tensor"), out);

    char label[128] = "";
    DsaProgress prog;
    dsa_progress_start(&prog, label, "B", (int64_t)total_bytes, s->progress);
    uint64_t done = 0;
    for (int i = 0; i < t->count; i++) {
        const DsaParamInfo *p = &t->info[i];
        DsaDType d = s->dtypes[i];
        snprintf(label, sizeof label, "%s: tensor %d of %d", s->label ? s->label : "convert", i + 1, t->count);
        if (stream_fresh(s, p)) {
            fresh_indexer_tensor(p, buf, s->seed, s->std);
        } else {
            DSA_ASSERT(s->src);
            DSA_TRY_GOTO(st, dsa_hf_read_f32(s->src, p->name, p->ndim, p->shape, buf), out);
        }
        const void *data = buf;
        if (d == DSA_BF16) {
            uint16_t *o = out;
            for (int64_t j = 0; j < p->numel; j++) o[j] = dsa_bf16_from_f32(buf[j]); /* nearest even, NaN kept */
            data = out;
        } else if (d == DSA_F8_E4M3) {
            DSA_TRY_GOTO(st, dsa_fp8_block_quantize(buf, p->shape[0], p->shape[1], s->block, out, scales, p->name),
                         out);
            scale_name(p->name, sname, sizeof sname);
            DSA_TRY_GOTO(st, dsa_hf_writer_put(w, sname, scales), out);
            int64_t ss[2];
            dsa_fp8_block_scale_shape(p->shape[0], p->shape[1], s->block, ss);
            done += (uint64_t)(ss[0] * ss[1]) * sizeof(float);
            data = out;
        }
        DSA_TRY_GOTO(st, dsa_hf_writer_put(w, p->name, data), out);
        done += (uint64_t)p->numel * dsa_dtype_size(d);
        dsa_progress_update(&prog, (int64_t)done);
    }
    snprintf(label, sizeof label, "%s: %d tensors", s->label ? s->label : "convert", t->count);
    dsa_progress_finish(&prog);
    if (stats) {
        stats->tensors = t->count;
        stats->bytes_written = done;
        stats->max_numel = max_numel;
        stats->seconds = dsa_time_now() - t0;
    }
out:
    dsa_free(buf, buf_bytes ? buf_bytes : 1);
    dsa_free(out, max_out);
    dsa_free(scales, scale_bytes);
    return st;
}

DsaStatus dsa_model_load(DsaModel *m, const char *path, const DsaBackend *be, char *dir, size_t cap) {
    memset(m, 0, sizeof *m);
    bool verified = false;
    DsaModelConfig cfg;
    DSA_TRY(dsa_model_open_dir(path, dir, cap, &cfg, &verified));
    DSA_TRY(dsa_model_init(m, &cfg, be));
    DsaHostView v;
    DsaStatus st = dsa_host_view_open(&v, be, m->params, (size_t)m->table.total * sizeof(float), dir);
    if (st == DSA_OK) {
        st = dsa_model_read_hf(dir, &cfg, &m->table, v.host);
        if (st == DSA_OK) dsa_host_view_commit(&v, be, m->params);
        dsa_host_view_close(&v);
    }
    if (st != DSA_OK) {
        dsa_model_free(m);
        DSA_TRY(st);
    }
    return DSA_OK;
}
