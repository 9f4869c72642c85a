/* config.c: the entry points of the JSON configuration (config.h), read and written
 * with cJSON: parse and load (the pipeline below), the defaults, the JSON writer
 * (dsa_config_to_json), the hash, and the derived constants of a model config.
 *
 * Reading a file goes: parse the text -> normalize its shape (config_hf.c: a raw HF
 * config.json or a reference-code config becomes {"model": {...}}, reference spellings
 * become HF keys) -> apply the --set overrides to the JSON tree (config_override.c) ->
 * read the tree through the tables (config_json.c, config_schema.c). The relations
 * between keys are checked by dsa_config_validate (config_validate.c).
 * Key names and defaults follow DSA-SPEC §2 and the HF DeepSeek-V3 config; the derived
 * constants follow DSA-SPEC §2 and §4.3.
 */
#include "core/config.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>

#include "core/config_internal.h"
#include "core/fileutil.h"
#include "core/mem.h"

/* Shortest decimal that reads back as exactly `v` (cJSON's own printer may lose the last
 * bit), with ".0" kept on integral values so floats still look like floats. */
static cJSON *float_json(double v) {
    if (!isfinite(v)) return cJSON_CreateNull();
    char buf[40];
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, v);
        if (strtod(buf, NULL) == v) break;
    }
    if (!strpbrk(buf, ".eEn")) strcat(buf, ".0");
    return cJSON_CreateRaw(buf);
}

static cJSON *int_json(int64_t v) {
    char buf[32];
    snprintf(buf, sizeof buf, "%lld", LL(v));
    return cJSON_CreateRaw(buf);
}

/* ---- parse and load ---------------------------------------------------------------- */

static DsaStatus parse_json(const char *source, const char *text, cJSON **out) {
    const char *end = NULL;
    *out = cJSON_ParseWithOpts(text, &end, true);
    if (*out) return DSA_OK;
    size_t len = strlen(text), off = end && end >= text ? (size_t)(end - text) : len;
    if (off > len) off = len;
    int line = 1, col = 1;
    for (size_t i = 0; i < off; i++) {
        if (text[i] == '\n') line++, col = 1;
        else col++;
    }
    char near[32];
    size_t n = 0;
    for (; n < sizeof near - 1 && text[off + n]; n++)
        near[n] = isprint((unsigned char)text[off + n]) ? text[off + n] : ' ';
    near[n] = '\0';
    if (!len) DSA_FAIL(DSA_ERR_CONFIG, "%s: empty file, expected a JSON object", source);
    DSA_FAIL(DSA_ERR_CONFIG, "%s: invalid JSON at line %d, column %d (byte %zu)%s%s%s", source, line, col, off,
             n ? ": near \"" : ": unexpected end of input", near, n ? "\"" : "");
}

DsaStatus dsa_config_parse(DsaConfig *cfg, const char *json_text, const char *source_name,
                           const char *const *overrides, int n_overrides) {
    DSA_ASSERT(cfg && json_text && n_overrides >= 0 && (overrides || n_overrides == 0));
    const char *src = source_name ? source_name : "<text>";
    memset(cfg, 0, sizeof *cfg);
    cfg_apply_defaults(&cfg_root_table, cfg);
    set_str(cfg->source, sizeof cfg->source, src);
    if (!strncmp(json_text, "\xEF\xBB\xBF", 3)) json_text += 3; /* UTF-8 byte order mark */
    ParseCtx c = {.source = src, .overrides = overrides, .n_overrides = n_overrides, .origins = &cfg->origins};
    cJSON *root = NULL;
    DsaStatus st = DSA_OK;
    DSA_TRY(parse_json(src, json_text, &root));
    DSA_TRY_GOTO(st, cfg_normalize(&c, &root), done);
    for (int i = 0; i < n_overrides; i++) DSA_TRY_GOTO(st, cfg_apply_override(&c, root, overrides[i]), done);
    if (n_overrides) DSA_TRY_GOTO(st, cfg_normalize_model(&c, root), done);
    DSA_TRY_GOTO(st, cfg_read_table(&c, &cfg_root_table, root, cfg, ""), done);
done:
    cJSON_Delete(root);
    return st;
}

DsaStatus dsa_config_load(DsaConfig *cfg, const char *path, const char *const *overrides, int n_overrides) {
    if (!path) {
        DSA_TRY(dsa_config_parse(cfg, "{}", "<defaults>", overrides, n_overrides));
        return DSA_OK;
    }
    char *text = NULL;
    size_t len = 0;
    DSA_TRY(dsa_file_read_all(path, &text, &len));
    DsaStatus st = dsa_config_parse(cfg, text, path, overrides, n_overrides);
    dsa_free(text, len + 1);
    if (st != DSA_OK) dsa_error_push(__FILE__, __LINE__, "reading config %s", path);
    return st;
}

DsaStatus dsa_config_defaults(DsaConfig *cfg) {
    DSA_TRY(dsa_config_parse(cfg, "{}", "<defaults>", NULL, 0));
    return DSA_OK;
}

/* ---- writing --------------------------------------------------------------------------- */

static cJSON *emit_table(const Table *t, const void *base);

static cJSON *emit_strlist(const KeyDesc *k, const void *base) {
    cJSON *arr = cJSON_CreateArray();
    int n = *(const int *)cat(base, k->count_off);
    for (int i = 0; arr && i < n; i++) {
        if (!cJSON_AddItemToArray(arr, cJSON_CreateString((const char *)cat(base, k->off) + (size_t)i * k->size))) {
            cJSON_Delete(arr);
            return NULL;
        }
    }
    return arr;
}

static cJSON *emit_stages(const DsaConfig *cfg) {
    cJSON *arr = cJSON_CreateArray();
    for (int i = 0; arr && i < cfg->num_stages; i++) {
        if (!cJSON_AddItemToArray(arr, emit_table(&cfg_stage_table, &cfg->stages[i]))) {
            cJSON_Delete(arr);
            return NULL;
        }
    }
    return arr;
}

static cJSON *emit_value(const KeyDesc *k, const void *base) {
    const void *p = cat(base, k->off);
    if (k->has1 && !*(const bool *)cat(base, k->has1 - 1)) return cJSON_CreateNull();
    switch (k->type) {
    case KT_INT: return int_json(*(const int64_t *)p);
    case KT_FLOAT: return float_json(*(const double *)p);
    case KT_BOOL: return cJSON_CreateBool(*(const bool *)p);
    case KT_STRING: return k->nullable && !*(const char *)p ? cJSON_CreateNull() : cJSON_CreateString(p);
    case KT_STRLIST: return emit_strlist(k, base);
    case KT_INT2: {
        cJSON *arr = cJSON_CreateArray();
        for (int i = 0; arr && i < 2; i++) {
            if (!cJSON_AddItemToArray(arr, int_json(((const int64_t *)p)[i]))) {
                cJSON_Delete(arr);
                return NULL;
            }
        }
        return arr;
    }
    case KT_OBJECT: return k->sub->is_null && k->sub->is_null(p) ? cJSON_CreateNull() : emit_table(k->sub, p);
    case KT_STAGES: return emit_stages(base);
    case KT_VERSION: return int_json(DSA_CONFIG_FORMAT_VERSION);
    }
    return NULL;
}

static cJSON *emit_table(const Table *t, const void *base) {
    cJSON *obj = cJSON_CreateObject();
    for (int i = 0; obj && i < t->n; i++) {
        cJSON *v = emit_value(&t->keys[i], base);
        if (!v || !cJSON_AddItemToObject(obj, t->keys[i].name, v)) {
            cJSON_Delete(v);
            cJSON_Delete(obj);
            return NULL;
        }
    }
    return obj;
}

DsaStatus dsa_config_to_json(const DsaConfig *cfg, char **text) {
    *text = NULL;
    cJSON *obj = emit_table(&cfg_root_table, cfg);
    *text = obj ? cJSON_Print(obj) : NULL;
    cJSON_Delete(obj);
    if (!*text) DSA_FAIL(DSA_ERR_NOMEM, "out of memory writing the config of %s as JSON", cfg->source);
    return DSA_OK;
}

uint64_t dsa_config_hash(const DsaConfig *cfg) {
    cJSON *obj = emit_table(&cfg_model_table, &cfg->model);
    char *text = obj ? cJSON_PrintUnformatted(obj) : NULL;
    cJSON_Delete(obj);
    DSA_ASSERT(text != NULL); /* only an allocation failure of a few KB gets here */
    uint64_t h = 1469598103934665603ull; /* FNV-1a 64 */
    for (const unsigned char *p = (const unsigned char *)text; *p; p++) h = (h ^ *p) * 1099511628211ull;
    free(text);
    return h;
}

/* ---- derived quantities ------------------------------------------------------------- */

double dsa_yarn_mscale(double factor, double mscale) { return factor <= 1 ? 1.0 : 0.1 * mscale * log(factor) + 1.0; }

double dsa_model_softmax_scale(const DsaModelConfig *m) {
    double ms = dsa_yarn_mscale(m->rope_scaling.factor, m->rope_scaling.mscale_all_dim);
    return ms * ms / sqrt((double)(m->qk_nope_head_dim + m->qk_rope_head_dim));
}

double dsa_model_indexer_scale(const DsaModelConfig *m) {
    return 1.0 / sqrt((double)m->index_n_heads * (double)m->index_head_dim);
}

void dsa_model_yarn_bounds(const DsaModelConfig *m, int *low, int *high) {
    double d = (double)m->qk_rope_head_dim, l = (double)m->rope_scaling.original_max_position_embeddings;
    double denom = 2 * log(m->rope_theta);
    double lo = floor(d * log(l / (2 * M_PI * m->rope_scaling.beta_fast)) / denom);
    double hi = ceil(d * log(l / (2 * M_PI * m->rope_scaling.beta_slow)) / denom);
    *low = (int)(lo > 0 ? lo : 0);
    *high = (int)(hi < d - 1 ? hi : d - 1);
}

bool dsa_model_layer_is_moe(const DsaModelConfig *m, int64_t layer) {
    return m->has_moe && layer >= m->first_k_dense_replace;
}

int64_t dsa_model_indexer_param_count(const DsaModelConfig *m) {
    int64_t q_in = m->has_q_lora ? m->q_lora_rank : m->hidden_size;
    int64_t d = m->hidden_size, hi = m->index_n_heads, di = m->index_head_dim;
    return q_in * hi * di /* wq_b */ + d * di /* wk */ + 2 * di /* k_norm */ + d * hi /* weights_proj */;
}

/* MLA projections of one layer, with the q_a and kv_a norms. */
static int64_t attention_params(const DsaModelConfig *m) {
    int64_t d = m->hidden_size, h = m->num_attention_heads, qk = m->qk_nope_head_dim + m->qk_rope_head_dim;
    int64_t q = m->has_q_lora ? d * m->q_lora_rank + m->q_lora_rank + m->q_lora_rank * h * qk : d * h * qk;
    int64_t kv = d * (m->kv_lora_rank + m->qk_rope_head_dim) + m->kv_lora_rank +
                 m->kv_lora_rank * h * (m->qk_nope_head_dim + m->v_head_dim);
    return q + kv + h * m->v_head_dim * d;
}

static int64_t ffn_params(const DsaModelConfig *m, int64_t layer) {
    int64_t d = m->hidden_size;
    if (!dsa_model_layer_is_moe(m, layer)) return 3 * d * m->intermediate_size;
    int64_t e = m->n_routed_experts, expert = 3 * d * m->moe_intermediate_size;
    int64_t bias = !strcmp(m->topk_method, "noaux_tc") ? e : 0; /* e_score_correction_bias */
    return d * e + bias + e * expert + m->n_shared_experts * expert;
}

void dsa_model_param_counts(const DsaModelConfig *m, DsaParamCounts *out) {
    int64_t d = m->hidden_size, vocab = m->vocab_size, layers = m->num_hidden_layers;
    int64_t indexer = m->has_indexer ? dsa_model_indexer_param_count(m) : 0;
    memset(out, 0, sizeof *out);
    out->embedding = vocab * d;
    out->attention = layers * attention_params(m);
    out->indexer = layers * indexer;
    for (int64_t l = 0; l < layers; l++) {
        if (dsa_model_layer_is_moe(m, l)) out->moe += ffn_params(m, l);
        else out->dense_ffn += ffn_params(m, l);
    }
    out->norms = layers * 2 * d + d;
    out->head = m->tie_word_embeddings ? 0 : vocab * d;
    out->total = out->embedding + out->attention + out->indexer + out->dense_ffn + out->moe + out->norms + out->head;
    /* MTP module: embed_tokens, enorm, hnorm, eh_proj, one decoder layer (at index
     * num_hidden_layers), shared_head.norm and shared_head.head (DSA-SPEC §3.1). */
    int64_t mtp = vocab * d + 2 * d + 2 * d * d + attention_params(m) + indexer + 2 * d + ffn_params(m, layers) + d +
                  vocab * d;
    out->mtp = m->num_nextn_predict_layers * mtp;
}

int64_t dsa_model_param_count(const DsaModelConfig *m) {
    DsaParamCounts counts;
    dsa_model_param_counts(m, &counts);
    return counts.total;
}
