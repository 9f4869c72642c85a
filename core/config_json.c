/* config_json.c: reading a JSON tree through the key tables of the configuration
 * (config_schema.c) into DsaConfig (config_internal.h describes the parts).
 *
 * Every key is type-checked, every string checked against its allowed values, every
 * unknown key refused with a "did you mean" suggestion; a message names the file or the
 * --set override the value came from.
 */
#include "core/config_internal.h"

#include <math.h>

#include "core/error.h"
#include "core/strutil.h"

/* A JSON value in words, for "found ..." in type errors. */
void cfg_describe(const cJSON *v, char *buf, size_t cap) {
    if (cJSON_IsNull(v)) snprintf(buf, cap, "null");
    else if (cJSON_IsBool(v)) snprintf(buf, cap, "%s", cJSON_IsTrue(v) ? "true" : "false");
    else if (cJSON_IsNumber(v)) snprintf(buf, cap, "number %.15g", v->valuedouble);
    else if (cJSON_IsString(v))
        snprintf(buf, cap, "string \"%.40s%s\"", v->valuestring, strlen(v->valuestring) > 40 ? "..." : "");
    else if (cJSON_IsArray(v)) snprintf(buf, cap, "a list of %d entries", cJSON_GetArraySize(v));
    else snprintf(buf, cap, "an object");
}

const char *cfg_expected(const KeyDesc *k) {
    switch (k->type) {
    case KT_INT: return "an integer";
    case KT_FLOAT: return "a number";
    case KT_BOOL: return "true or false";
    case KT_STRING: return "a string";
    case KT_STRLIST: return "a string or a list of strings";
    case KT_INT2: return "a list of 2 integers";
    case KT_OBJECT: return "an object";
    case KT_STAGES: return "a list of stage objects";
    case KT_VERSION: return "the integer 1";
    }
    return "?";
}

static DsaStatus type_error(const ParseCtx *c, const KeyDesc *k, const cJSON *v, const char *path) {
    char found[96], w[WHERE_CAP];
    cfg_describe(v, found, sizeof found);
    DSA_FAIL(DSA_ERR_CONFIG, "%s in %s: expected %s%s, found %s", path, cfg_where(c, path, w), cfg_expected(k),
             k->nullable ? " or null" : "", found);
}

/* Check a string against a key's allowed values; `in` names the source for the message. */
DsaStatus cfg_check_choice(const KeyDesc *k, const char *s, const char *path, const char *in) {
    if (!k->choices || (k->nullable && !*s)) return DSA_OK;
    char list[256] = "";
    for (int i = 0; k->choices[i]; i++) {
        if (!strcmp(k->choices[i], s)) return DSA_OK;
        size_t len = strlen(list);
        snprintf(list + len, sizeof list - len, "%s\"%s\"", i ? ", " : "", k->choices[i]);
    }
    const char *guess = dsa_closest_word(s, k->choices);
    DSA_FAIL(DSA_ERR_CONFIG, "%s in %s: \"%s\" is not one of %s%s%s%s%s", path, in, s, list,
             k->nullable ? " or null" : "", guess ? "; did you mean \"" : "", guess ? guess : "", guess ? "\"?" : "");
}

/* ---- reading the JSON tree through the tables --------------------------------------- */

DsaStatus cfg_read_table(ParseCtx *c, const Table *t, const cJSON *obj, void *base, const char *path);

/* Other frameworks' names for our keys (Megatron-LM, HF Trainer, MaxText): an unknown key
 * spelled like this suggests ours when the closest-spelling guess finds nothing. */
static const char *const other_names[][2] = {
    {"learning_rate", "lr"},          {"max_lr", "lr"},
    {"min_learning_rate", "min_lr"},  {"warmup_steps", "lr_warmup_steps"},
    {"lr_warmup_iters", "lr_warmup_steps"}, {"lr_decay_style", "lr_schedule"},
    {"lr_scheduler_type", "lr_schedule"},   {"max_grad_norm", "grad_clip"},
    {"clip_grad", "grad_clip"},       {"adam_beta1", "beta1"},
    {"adam_beta2", "beta2"},          {"adam_eps", "eps"},
    {"adam_epsilon", "eps"},          {"batch_size", "global_batch"},
    {"global_batch_size", "global_batch"}, {"micro_batch_size", "micro_batch"},
    {"max_steps", "steps"},           {"train_iters", "steps"},
    {"seq_length", "seq_len"},        {"max_seq_length", "seq_len"},
    {"save_interval", "checkpoint_every"}, {"save_steps", "checkpoint_every"},
    {"log_interval", "log_every"},    {"logging_steps", "log_every"},
    {"output_dir", "out_dir"},        {"save", "out_dir"},
};

DsaStatus cfg_unknown_key(const ParseCtx *c, const Table *t, const char *prefix, const char *name) {
    char path[KEY_CAP], guess_path[KEY_CAP], w[WHERE_CAP];
    join(path, prefix, name);
    const char *in = cfg_where(c, path, w);
    if (t == &cfg_root_table && (find_key(&cfg_model_table, name) || find_alias(&cfg_model_table, name)))
        DSA_FAIL(DSA_ERR_CONFIG,
                 "unknown key %s in %s; did you mean model.%s? (model keys belong in the \"model\" section)", path,
                 in, name);
    const char *cands[MAX_CANDIDATES];
    int n = 0;
    for (int i = 0; i < t->n && n < MAX_CANDIDATES - 1; i++) cands[n++] = t->keys[i].name;
    for (int i = 0; i < t->n_aliases && n < MAX_CANDIDATES - 1; i++) cands[n++] = t->aliases[i].alias;
    for (int i = 0; i < t->n_fixed && n < MAX_CANDIDATES - 1; i++) cands[n++] = t->fixed[i].name;
    for (int i = 0; t->ignored && t->ignored[i] && n < MAX_CANDIDATES - 1; i++) cands[n++] = t->ignored[i];
    cands[n] = NULL;
    const char *guess = dsa_closest_word(name, cands);
    for (size_t i = 0; !guess && i < sizeof other_names / sizeof other_names[0]; i++)
        if (!strcmp(name, other_names[i][0]) && find_key(t, other_names[i][1])) guess = other_names[i][1];
    if (guess) {
        join(guess_path, prefix, guess);
        DSA_FAIL(DSA_ERR_CONFIG, "unknown key %s in %s; did you mean %s?", path, in, guess_path);
    }
    char list[1024] = "";
    for (int i = 0; i < t->n; i++) {
        size_t len = strlen(list);
        snprintf(list + len, sizeof list - len, "%s%s", i ? ", " : "", t->keys[i].name);
    }
    DSA_FAIL(DSA_ERR_CONFIG, "unknown key %s in %s; valid keys here: %s", path, in, list);
}

static DsaStatus check_fixed(const ParseCtx *c, const FixedKey *f, const cJSON *v, const char *prefix) {
    char path[KEY_CAP], w[WHERE_CAP], found[96];
    join(path, prefix, f->name);
    bool ok = f->kind == 'b' ? cJSON_IsBool(v) && (cJSON_IsTrue(v) == (f->value != 0))
                             : cJSON_IsNumber(v) && v->valuedouble == f->value;
    if (ok) return DSA_OK;
    cfg_describe(v, found, sizeof found);
    char want[32];
    if (f->kind == 'b') snprintf(want, sizeof want, "%s", f->value != 0 ? "true" : "false");
    else snprintf(want, sizeof want, "%g", f->value);
    DSA_FAIL(DSA_ERR_CONFIG, "%s in %s: only %s is supported (%s), found %s", path, cfg_where(c, path, w), want, f->why,
             found);
}

/* Every key of `obj` must be known (a key, an ignored or fixed key) and appear once. */
static DsaStatus check_keys(const ParseCtx *c, const Table *t, const cJSON *obj, const char *path) {
    for (const cJSON *it = obj->child; it; it = it->next) {
        for (const cJSON *prev = obj->child; prev != it; prev = prev->next) {
            if (strcmp(prev->string, it->string)) continue;
            char kp[KEY_CAP], w[WHERE_CAP];
            join(kp, path, it->string);
            DSA_FAIL(DSA_ERR_CONFIG, "%s in %s: key given twice", kp, cfg_where(c, kp, w));
        }
        const FixedKey *f = find_fixed(t, it->string);
        if (f) DSA_TRY(check_fixed(c, f, it, path));
        if (find_key(t, it->string) || f || is_ignored(t, it->string)) continue;
        return cfg_unknown_key(c, t, path, it->string);
    }
    return DSA_OK;
}

static DsaStatus json_int(const ParseCtx *c, const KeyDesc *k, const cJSON *v, const char *path, int64_t *out) {
    if (!cJSON_IsNumber(v)) return type_error(c, k, v, path);
    double d = v->valuedouble;
    if (d != floor(d) || fabs(d) > MAX_EXACT_INT) return type_error(c, k, v, path);
    *out = (int64_t)d;
    return DSA_OK;
}

static DsaStatus read_string(const ParseCtx *c, const KeyDesc *k, const cJSON *v, char *dst, const char *path) {
    char w[WHERE_CAP];
    if (!cJSON_IsString(v)) return type_error(c, k, v, path);
    if (strlen(v->valuestring) >= k->size)
        DSA_FAIL(DSA_ERR_CONFIG, "%s in %s: \"%.60s...\" is longer than %zu bytes", path, cfg_where(c, path, w),
                 v->valuestring, k->size - 1);
    DSA_TRY(cfg_check_choice(k, v->valuestring, path, cfg_where(c, path, w)));
    set_str(dst, k->size, v->valuestring);
    return DSA_OK;
}

/* A list of strings; a single string is a list of one. */
static DsaStatus read_strlist(const ParseCtx *c, const KeyDesc *k, const cJSON *v, void *base, const char *path) {
    char w[WHERE_CAP], ep[KEY_CAP], found[96];
    char *list = at(base, k->off);
    int *count = at(base, k->count_off);
    int n = cJSON_IsString(v) ? 1 : cJSON_IsArray(v) ? cJSON_GetArraySize(v) : -1;
    if (n < 0) return type_error(c, k, v, path);
    if (n > k->max_count)
        DSA_FAIL(DSA_ERR_CONFIG, "%s in %s: %d entries, at most %d (use directories or glob patterns)", path,
                 cfg_where(c, path, w), n, k->max_count);
    memset(list, 0, k->size * (size_t)k->max_count);
    *count = n;
    for (int i = 0; i < n; i++) {
        const cJSON *e = cJSON_IsString(v) ? v : cJSON_GetArrayItem(v, i);
        join_index(ep, path, i);
        cfg_describe(e, found, sizeof found);
        if (!cJSON_IsString(e) || !e->valuestring[0])
            DSA_FAIL(DSA_ERR_CONFIG, "%s in %s: expected a non-empty string, found %s", ep, cfg_where(c, path, w), found);
        if (strlen(e->valuestring) >= k->size)
            DSA_FAIL(DSA_ERR_CONFIG, "%s in %s: path longer than %zu bytes", ep, cfg_where(c, path, w), k->size - 1);
        set_str(list + (size_t)i * k->size, k->size, e->valuestring);
    }
    return DSA_OK;
}

static DsaStatus read_int2(const ParseCtx *c, const KeyDesc *k, const cJSON *v, int64_t *dst, const char *path) {
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != 2) return type_error(c, k, v, path);
    for (int i = 0; i < 2; i++) {
        const cJSON *e = cJSON_GetArrayItem(v, i);
        if (!cJSON_IsNumber(e) || e->valuedouble != floor(e->valuedouble) || fabs(e->valuedouble) > MAX_EXACT_INT)
            return type_error(c, k, v, path);
        dst[i] = (int64_t)e->valuedouble;
    }
    return DSA_OK;
}

static DsaStatus read_version(const ParseCtx *c, const KeyDesc *k, const cJSON *v, const char *path) {
    int64_t version = 0;
    char w[WHERE_CAP];
    DSA_TRY(json_int(c, k, v, path, &version));
    if (version != DSA_CONFIG_FORMAT_VERSION)
        DSA_FAIL(DSA_ERR_CONFIG, "%s in %s is %lld; this build reads config format %d", path, cfg_where(c, path, w),
                 LL(version), DSA_CONFIG_FORMAT_VERSION);
    return DSA_OK;
}

/* "stages": absent or null = one default stage; each entry starts from inherited values. */
static DsaStatus read_stages(ParseCtx *c, const KeyDesc *k, const cJSON *v, DsaConfig *cfg, const char *path) {
    char w[WHERE_CAP], sp[KEY_CAP];
    if (v && !cJSON_IsNull(v) && !cJSON_IsArray(v)) return type_error(c, k, v, path);
    int n = v && cJSON_IsArray(v) ? cJSON_GetArraySize(v) : 1;
    if (n == 0)
        DSA_FAIL(DSA_ERR_CONFIG, "%s in %s is empty; leave it out for one dense stage \"lm\" of train.steps steps",
                 path, cfg_where(c, path, w));
    if (n > DSA_CONFIG_MAX_STAGES)
        DSA_FAIL(DSA_ERR_CONFIG, "%s in %s: %d stages, at most %d", path, cfg_where(c, path, w), n,
                 DSA_CONFIG_MAX_STAGES);
    cfg->num_stages = n;
    for (int i = 0; i < n; i++) {
        const cJSON *e = v && cJSON_IsArray(v) ? cJSON_GetArrayItem(v, i) : NULL;
        join_index(sp, path, i);
        if (e && !cJSON_IsObject(e)) {
            char found[96];
            cfg_describe(e, found, sizeof found);
            DSA_FAIL(DSA_ERR_CONFIG, "%s in %s: expected a stage object, found %s", sp, cfg_where(c, sp, w), found);
        }
        cfg_stage_init(cfg, &cfg->stages[i], i, n, c->origins);
        DSA_TRY(cfg_read_table(c, &cfg_stage_table, e, &cfg->stages[i], sp));
    }
    return DSA_OK;
}

static DsaStatus read_null(const KeyDesc *k, void *p) {
    switch (k->type) {
    case KT_INT: *(int64_t *)p = k->null_i; break;
    case KT_STRING: set_str(p, k->size, ""); break;
    case KT_OBJECT:
        cfg_apply_defaults(k->sub, p);
        if (k->sub->on_null) k->sub->on_null(p);
        break;
    default: DSA_ASSERT(!"nullable key of a type without a null value");
    }
    return DSA_OK;
}

static DsaStatus read_key(ParseCtx *c, const KeyDesc *k, const cJSON *v, void *base, const char *path) {
    void *p = at(base, k->off);
    bool *has = k->has1 ? (bool *)at(base, k->has1 - 1) : NULL;
    if (k->type == KT_STAGES) return read_stages(c, k, v, base, path);
    if (k->type != KT_OBJECT || cJSON_IsNull(v)) cfg_origin_note(c->origins, path, path, cfg_override_of(c, path));
    if (cJSON_IsNull(v)) {
        if (!k->nullable) return type_error(c, k, v, path);
        if (has) *has = false;
        return read_null(k, p);
    }
    switch (k->type) {
    case KT_INT: DSA_TRY(json_int(c, k, v, path, p)); break;
    case KT_FLOAT:
        if (!cJSON_IsNumber(v)) return type_error(c, k, v, path);
        *(double *)p = v->valuedouble;
        break;
    case KT_BOOL:
        if (!cJSON_IsBool(v)) return type_error(c, k, v, path);
        *(bool *)p = cJSON_IsTrue(v);
        break;
    case KT_STRING: DSA_TRY(read_string(c, k, v, p, path)); break;
    case KT_STRLIST: DSA_TRY(read_strlist(c, k, v, base, path)); break;
    case KT_INT2: DSA_TRY(read_int2(c, k, v, p, path)); break;
    case KT_OBJECT:
        if (!cJSON_IsObject(v)) return type_error(c, k, v, path);
        DSA_TRY(cfg_read_table(c, k->sub, v, p, path));
        break;
    case KT_VERSION: DSA_TRY(read_version(c, k, v, path)); break;
    case KT_STAGES: break;
    }
    if (has) *has = true;
    return DSA_OK;
}

/* Read the keys of `obj` (NULL: the object is absent, keep defaults) into `base`. */
DsaStatus cfg_read_table(ParseCtx *c, const Table *t, const cJSON *obj, void *base, const char *path) {
    if (obj) DSA_TRY(check_keys(c, t, obj, path));
    for (int i = 0; i < t->n; i++) {
        const KeyDesc *k = &t->keys[i];
        const cJSON *v = obj ? get(obj, k->name) : NULL;
        char kp[KEY_CAP];
        join(kp, path, k->name);
        if (v || k->type == KT_STAGES) DSA_TRY(read_key(c, k, v, base, kp));
        else if (k->type == KT_OBJECT) DSA_TRY(cfg_read_table(c, k->sub, NULL, at(base, k->off), kp));
    }
    if (t->post) DSA_TRY(t->post(c, obj, base, path));
    return DSA_OK;
}
