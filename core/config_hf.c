/* config_hf.c: the shapes a configuration file may have (config.h), brought into ours
 * before the tree is read (config_internal.h describes the parts).
 *
 * A raw Hugging Face config.json or a reference-code config becomes {"model": {...}};
 * the reference spellings become HF keys; transformers >= 5 spellings (rope_parameters,
 * qk_head_dim) and the deepseek_v2 routing defaults are mapped to the V3 keys we store
 * (DSA-SPEC §2).
 */
#include "core/config_internal.h"

#include "core/error.h"
#include "core/log.h"

/* ---- normalizing the tree: file shapes and aliases ----------------------------------- */

/* Copy the value of alias `a` to its target inside `obj` (creating a parent object). */
static DsaStatus alias_copy(const ParseCtx *c, cJSON *obj, const cJSON *v, const Alias *a, const char *path) {
    char target[KEY_CAP], apath[KEY_CAP], tpath[KEY_CAP], w[WHERE_CAP];
    snprintf(target, sizeof target, "%s", a->target);
    join(apath, path, a->alias);
    join(tpath, path, a->target);
    cJSON *parent = obj;
    char *leaf = target, *dot = strchr(target, '.');
    if (dot) {
        *dot = '\0';
        leaf = dot + 1;
        parent = get(obj, target);
        if (!parent && !(parent = cJSON_AddObjectToObject(obj, target)))
            DSA_FAIL(DSA_ERR_NOMEM, "out of memory reading %s", c->source);
        if (!cJSON_IsObject(parent))
            DSA_FAIL(DSA_ERR_CONFIG, "%s in %s sets %s, but %s.%s is not an object", apath, cfg_where(c, apath, w), tpath,
                     path, target);
    }
    const cJSON *cur = get(parent, leaf);
    if (cur) {
        if (cJSON_Compare(cur, v, true)) return DSA_OK;
        DSA_FAIL(DSA_ERR_CONFIG, "%s and %s in %s disagree (%s is the reference code's name for %s)", apath, tpath,
                 cfg_where(c, apath, w), a->alias, a->target);
    }
    cJSON *dup = cJSON_Duplicate(v, true);
    if (!dup || !cJSON_AddItemToObject(parent, leaf, dup)) {
        cJSON_Delete(dup);
        DSA_FAIL(DSA_ERR_NOMEM, "out of memory reading %s", c->source);
    }
    return DSA_OK;
}

/* Replace every alias of table `t` in `obj` (and its sub-objects) by its target key. */
static DsaStatus resolve_aliases(const ParseCtx *c, const Table *t, cJSON *obj, const char *path) {
    for (int i = 0; i < t->n_aliases; i++) {
        const cJSON *v = get(obj, t->aliases[i].alias);
        if (v) DSA_TRY(alias_copy(c, obj, v, &t->aliases[i], path));
    }
    for (int i = 0; i < t->n_aliases; i++) cJSON_DeleteItemFromObjectCaseSensitive(obj, t->aliases[i].alias);
    for (int i = 0; i < t->n; i++) {
        const KeyDesc *k = &t->keys[i];
        cJSON *sub = get(obj, k->name);
        char kp[KEY_CAP];
        join(kp, path, k->name);
        if (k->type == KT_OBJECT && k->sub->n_aliases && cJSON_IsObject(sub))
            DSA_TRY(resolve_aliases(c, k->sub, sub, kp));
    }
    return DSA_OK;
}

/* The reference config's "dtype": "fp8" means FP8 block weights (a quantization_config);
 * its "scale_fmt" belongs to that config and is dropped for bf16 weights (the indexer
 * always uses ue8m0 scales, DSA-SPEC §5.2). HF's newer "dtype" ("bfloat16") is ignored. */
static DsaStatus prepare_reference_dtype(const ParseCtx *c, cJSON *model) {
    const cJSON *dtype = get(model, "dtype");
    cJSON *qc = get(model, "quantization_config");
    if (cJSON_IsString(dtype) && !strcmp(dtype->valuestring, "fp8") && !qc &&
        !(qc = cJSON_AddObjectToObject(model, "quantization_config")))
        DSA_FAIL(DSA_ERR_NOMEM, "out of memory reading %s", c->source);
    cJSON_DeleteItemFromObjectCaseSensitive(model, "dtype");
    if (!cJSON_IsObject(qc)) cJSON_DeleteItemFromObjectCaseSensitive(model, "scale_fmt");
    return DSA_OK;
}

/* transformers >= 5 writes RoPE as "rope_parameters": {"rope_type": "default" | "yarn",
 * "rope_theta": θ, YaRN keys...} instead of rope_theta + rope_scaling, and adds the
 * derived "qk_head_dim". NOTE: both are mapped here rather than stored: rope_parameters
 * becomes rope_theta (unless given too) and rope_scaling (null for "default"; the same
 * keys without rope_theta otherwise, unless rope_scaling is given too); qk_head_dim must
 * equal qk_nope_head_dim + qk_rope_head_dim (when both are given) and is dropped. */
static DsaStatus prepare_hf_v5(const ParseCtx *c, cJSON *model) {
    const cJSON *qk = get(model, "qk_head_dim"), *dn = get(model, "qk_nope_head_dim"),
                *dr = get(model, "qk_rope_head_dim");
    if (qk && cJSON_IsNumber(dn) && cJSON_IsNumber(dr) &&
        (!cJSON_IsNumber(qk) || qk->valuedouble != dn->valuedouble + dr->valuedouble))
        DSA_FAIL(DSA_ERR_CONFIG, "%s: model.qk_head_dim must be qk_nope_head_dim + qk_rope_head_dim = %g",
                 c->source, dn->valuedouble + dr->valuedouble);
    cJSON_DeleteItemFromObjectCaseSensitive(model, "qk_head_dim");
    cJSON *rp = cJSON_DetachItemFromObjectCaseSensitive(model, "rope_parameters");
    if (!rp || cJSON_IsNull(rp)) {
        cJSON_Delete(rp);
        return DSA_OK;
    }
    if (!cJSON_IsObject(rp)) {
        cJSON_Delete(rp);
        DSA_FAIL(DSA_ERR_CONFIG, "%s: model.rope_parameters must be an object or null", c->source);
    }
    cJSON *theta = cJSON_DetachItemFromObjectCaseSensitive(rp, "rope_theta");
    bool ok = true;
    if (theta && !get(model, "rope_theta")) ok = cJSON_AddItemToObject(model, "rope_theta", theta);
    else cJSON_Delete(theta);
    const cJSON *type = get(rp, "rope_type");
    if (!type) type = get(rp, "type");
    bool none = !type || (cJSON_IsString(type) && !strcmp(type->valuestring, "default"));
    if (ok && !get(model, "rope_scaling")) {
        if (none) ok = cJSON_AddNullToObject(model, "rope_scaling") != NULL;
        else ok = cJSON_AddItemToObject(model, "rope_scaling", rp), rp = NULL;
    }
    cJSON_Delete(rp);
    if (!ok) DSA_FAIL(DSA_ERR_NOMEM, "out of memory reading %s", c->source);
    return DSA_OK;
}

/* A deepseek_v2 config.json routes with softmax scores and greedy top-k unless it says
 * otherwise (the V2 reference code's and transformers' defaults; transformers >= 5 leaves
 * both keys out of a saved V2 config), not with our V3 defaults, and has no MTP module
 * (num_nextn_predict_layers 0: V2 has none, and its config has no such key). */
static DsaStatus prepare_hf_v2(const ParseCtx *c, cJSON *model) {
    const cJSON *type = get(model, "model_type");
    if (!cJSON_IsString(type) || strcmp(type->valuestring, "deepseek_v2") != 0) return DSA_OK;
    bool ok = true;
    if (!get(model, "scoring_func")) ok = cJSON_AddStringToObject(model, "scoring_func", "softmax") != NULL;
    if (ok && !get(model, "topk_method")) ok = cJSON_AddStringToObject(model, "topk_method", "greedy") != NULL;
    if (ok && !get(model, "num_nextn_predict_layers"))
        ok = cJSON_AddNumberToObject(model, "num_nextn_predict_layers", 0) != NULL;
    if (!ok) DSA_FAIL(DSA_ERR_NOMEM, "out of memory reading %s", c->source);
    return DSA_OK;
}

/* HF semantics for a raw config.json: no rope_scaling means no scaling, and a YaRN
 * rope_scaling without mscale_all_dim leaves the softmax scale alone (μ = 0). */
static DsaStatus prepare_hf(const ParseCtx *c, cJSON *model) {
    DSA_TRY(prepare_hf_v5(c, model));
    DSA_TRY(prepare_hf_v2(c, model));
    cJSON *rope = get(model, "rope_scaling");
    bool ok = true;
    if (!rope) ok = cJSON_AddNullToObject(model, "rope_scaling") != NULL;
    else if (cJSON_IsObject(rope) && !get(rope, "mscale_all_dim"))
        ok = cJSON_AddNumberToObject(rope, "mscale_all_dim", 0.0) != NULL;
    if (!ok) DSA_FAIL(DSA_ERR_NOMEM, "out of memory reading %s", c->source);
    return DSA_OK;
}

/* Reference spellings in the model section become HF keys. Run again after the
 * overrides, which may bring whole objects (--set 'model={"dim": 256}'). */
DsaStatus cfg_normalize_model(const ParseCtx *c, cJSON *root) {
    cJSON *model = get(root, "model");
    if (!cJSON_IsObject(model)) return DSA_OK;
    DSA_TRY(prepare_reference_dtype(c, model));
    DSA_TRY(resolve_aliases(c, &cfg_model_table, model, "model"));
    return DSA_OK;
}

/* The keys that size a model: a config.json (or reference config) without one takes our
 * DeepSeek-V3 (671B) default silently, which then fails on the first tensor shape; a
 * warning names them (reference-code spelling second). MoE keys only matter with MoE. */
static const struct {
    const char *key, *alias;
    bool moe;
} size_keys[] = {
    {"vocab_size", "vocab_size", false},
    {"hidden_size", "dim", false},
    {"intermediate_size", "inter_dim", false},
    {"num_hidden_layers", "n_layers", false},
    {"num_attention_heads", "n_heads", false},
    {"q_lora_rank", "q_lora_rank", false},
    {"kv_lora_rank", "kv_lora_rank", false},
    {"qk_nope_head_dim", "qk_nope_head_dim", false},
    {"qk_rope_head_dim", "qk_rope_head_dim", false},
    {"v_head_dim", "v_head_dim", false},
    {"n_routed_experts", "n_routed_experts", false},
    {"moe_intermediate_size", "moe_inter_dim", true},
    {"n_shared_experts", "n_shared_experts", true},
    {"num_experts_per_tok", "n_activated_experts", true},
    {"first_k_dense_replace", "n_dense_layers", true},
};

/* Warn, naming the file, about the size keys a raw model config leaves to defaults. */
static void warn_defaulted(const ParseCtx *c, const cJSON *model) {
    char names[512] = "", values[768] = "";
    const cJSON *experts = get(model, "n_routed_experts");
    bool moe = !cJSON_IsNull(experts); /* absent means the default, 256 experts */
    for (size_t i = 0; i < sizeof size_keys / sizeof size_keys[0]; i++) {
        if ((size_keys[i].moe && !moe) || get(model, size_keys[i].key) || get(model, size_keys[i].alias)) continue;
        const KeyDesc *k = find_key(&cfg_model_table, size_keys[i].key);
        size_t n = strlen(names), v = strlen(values);
        snprintf(names + n, sizeof names - n, "%s%s", n ? ", " : "", size_keys[i].key);
        snprintf(values + v, sizeof values - v, "%s%s = %lld", v ? ", " : "", size_keys[i].key, LL(k ? k->def_i : 0));
    }
    if (names[0])
        dsa_log(DSA_LOG_WARN,
                "%s: no %s given: the DeepSeek-V3 (671B) defaults %s are used; a checkpoint whose tensors have "
                "other shapes is refused at its first tensor",
                c->source, names, values);
}

/* Bring any accepted shape into our format: {"model": {HF keys}, ...}. A file with none
 * of our top-level keys but with model_type, hidden_size or dim is a model config. */
DsaStatus cfg_normalize(const ParseCtx *c, cJSON **root) {
    char found[96];
    if (!cJSON_IsObject(*root)) {
        cfg_describe(*root, found, sizeof found);
        DSA_FAIL(DSA_ERR_CONFIG, "%s: the top level must be a JSON object, found %s", c->source, found);
    }
    bool ours = false;
    for (int i = 0; i < cfg_root_table.n; i++) ours |= get(*root, cfg_root_table.keys[i].name) != NULL;
    bool raw = !ours && (get(*root, "model_type") || get(*root, "hidden_size") || get(*root, "dim"));
    if (raw) {
        bool hf = get(*root, "model_type") != NULL;
        warn_defaulted(c, *root);
        cJSON *wrapped = cJSON_CreateObject();
        if (!wrapped || !cJSON_AddItemToObject(wrapped, "model", *root)) {
            cJSON_Delete(wrapped);
            DSA_FAIL(DSA_ERR_NOMEM, "out of memory reading %s", c->source);
        }
        *root = wrapped;
        if (hf) DSA_TRY(prepare_hf(c, get(wrapped, "model")));
    }
    DSA_TRY(cfg_normalize_model(c, *root));
    return DSA_OK;
}
