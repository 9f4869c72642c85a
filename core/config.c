/* config.c: the JSON configuration (config.h), read and written with cJSON.
 *
 * One table of key descriptors per section (name, type, offset in the section struct,
 * nullability, default, smallest valid value, allowed strings) drives everything: the
 * defaults, the reader, unknown-key detection with "did you mean" suggestions, the
 * writer (dsa_config_to_json), the hash and the per-key range checks of validation.
 * Relations between keys are checked by short functions at the end of the file.
 *
 * Reading a file goes: parse the text -> normalize its shape (a raw HF config.json or a
 * reference-code config becomes {"model": {...}}, reference spellings become HF keys)
 * -> apply the --set overrides to the JSON tree -> read the tree through the tables.
 * Key names and defaults follow DSA-SPEC §2 and the HF DeepSeek-V3 config; the derived
 * constants follow DSA-SPEC §2 and §4.3.
 */
#include "core/config.h"

#include <cJSON.h>
#include <ctype.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fileutil.h"
#include "core/log.h"
#include "core/mem.h"
#include "core/strutil.h"

enum { KEY_CAP = 256, WHERE_CAP = 600, MAX_DEPTH = 8, MAX_CANDIDATES = 128 };
#define MAX_EXACT_INT 9007199254740992.0 /* 2^53: larger integers do not survive a double */
#define LL(x) ((long long)(x))

/* Who is being read, for messages: the file, and the overrides that may have set a key;
 * `origins` records which keys the overrides set (DsaConfig.origins). */
typedef struct {
    const char *source;
    const char *const *overrides;
    int n_overrides;
    DsaConfigOrigins *origins;
} ParseCtx;

typedef enum {
    KT_INT = 1, /* int64_t */
    KT_FLOAT,   /* double */
    KT_BOOL,    /* bool */
    KT_STRING,  /* char[size] */
    KT_STRLIST, /* char[max_count][size] + int count at count_off */
    KT_INT2,    /* int64_t[2] */
    KT_OBJECT,  /* a nested struct described by `sub` */
    KT_STAGES,  /* DsaConfig.stages (the only list of objects) */
    KT_VERSION, /* "format_version": must equal DSA_CONFIG_FORMAT_VERSION, not stored */
} KeyType;

struct Table;

typedef struct {
    const char *name;
    KeyType type;
    size_t off;        /* offset of the value in its section struct */
    size_t size;       /* KT_STRING, KT_STRLIST: bytes of one string */
    size_t has1;       /* 1 + offset of a bool set by a value and cleared by null; 0: none */
    bool def_has;      /* default of that bool */
    bool nullable;     /* JSON null accepted */
    int64_t null_i;    /* KT_INT: stored for null */
    int64_t def_i;     /* default of KT_INT, KT_BOOL, KT_INT2 (both entries) */
    double def_f;      /* default of KT_FLOAT */
    const char *def_s; /* default of KT_STRING */
    int64_t min_i;     /* KT_INT, KT_INT2: smallest valid value (validation) */
    bool positive;     /* KT_FLOAT: must be > 0 (else >= 0) */
    size_t count_off;  /* KT_STRLIST: offset of the int entry count */
    int max_count;     /* KT_STRLIST: capacity */
    const char *const *choices; /* KT_STRING: allowed values, NULL-terminated */
    const struct Table *sub;    /* KT_OBJECT, KT_STAGES: the nested table */
} KeyDesc;

/* Another spelling of a key: `target` is a path relative to the same object ("a.b"). */
typedef struct {
    const char *alias, *target;
} Alias;

/* A key we accept but do not store, whose value must be the one we implement. */
typedef struct {
    const char *name;
    char kind;    /* 'b' boolean, 'n' number */
    double value; /* required value (0/1 for booleans) */
    const char *why;
} FixedKey;

typedef struct Table {
    const KeyDesc *keys;
    int n;
    const Alias *aliases;
    int n_aliases;
    const char *const *ignored; /* accepted and ignored, NULL-terminated (or NULL) */
    const FixedKey *fixed;
    int n_fixed;
    void (*on_null)(void *obj);      /* KT_OBJECT read as null: set its "none" values */
    bool (*is_null)(const void *obj); /* KT_OBJECT written as null? */
    DsaStatus (*post)(ParseCtx *c, const cJSON *obj, void *base, const char *path);
} Table;

#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))
#define FSIZE(st, f) sizeof(((st *)0)->f)
#define HAS(st, f) (offsetof(st, f) + 1)
#define K_INT(st, f, d, mn) .name = #f, .type = KT_INT, .off = offsetof(st, f), .def_i = (d), .min_i = (mn)
#define K_FLT(st, f, d, pos) .name = #f, .type = KT_FLOAT, .off = offsetof(st, f), .def_f = (d), .positive = (pos)
#define K_BOOL(st, f, d) .name = #f, .type = KT_BOOL, .off = offsetof(st, f), .def_i = (d)
#define K_STR(st, f, d, ch) \
    .name = #f, .type = KT_STRING, .off = offsetof(st, f), .size = FSIZE(st, f), .def_s = (d), .choices = (ch)
#define TABLE_KEYS(k) .keys = (k), .n = COUNT(k)

static void apply_defaults(const Table *t, void *base);

/* ---- the tables ------------------------------------------------------------------ */

static const char *const model_types[] = {"deepseek_v2", "deepseek_v3", "deepseek_v32", NULL};
static const char *const scoring_funcs[] = {"sigmoid", "softmax", NULL};
static const char *const topk_methods[] = {"noaux_tc", "greedy", "group_limited_greedy", NULL};
static const char *const activations[] = {"silu", NULL};
static const char *const rope_types[] = {"yarn", NULL};
static const char *const quant_methods[] = {"fp8", NULL};
static const char *const fp8_formats[] = {"e4m3", NULL};
static const char *const act_schemes[] = {"dynamic", NULL};
static const char *const scale_formats[] = {"ue8m0", NULL};
static const char *const schedules[] = {"constant", "cosine", NULL};
static const char *const devices[] = {"cpu", "cuda", NULL};
static const char *const attentions[] = {"dense", "sparse", NULL};
static const char *const trainables[] = {"indexer", "all", NULL};

/* model.rope_scaling: the DeepSeek-V3 YaRN values. */
static const KeyDesc rope_keys[] = {
    {K_STR(DsaRopeScaling, type, "yarn", rope_types), .nullable = true},
    {K_FLT(DsaRopeScaling, factor, 40.0, true)},
    {K_INT(DsaRopeScaling, original_max_position_embeddings, 4096, 1)},
    {K_FLT(DsaRopeScaling, beta_fast, 32.0, true)},
    {K_FLT(DsaRopeScaling, beta_slow, 1.0, true)},
    {K_FLT(DsaRopeScaling, mscale, 1.0, false)},
    {K_FLT(DsaRopeScaling, mscale_all_dim, 1.0, false)},
};
static const Alias rope_aliases[] = {{"rope_type", "type"}}; /* newer transformers */
static void rope_none(void *obj);
static bool rope_is_none(const void *obj) { return ((const DsaRopeScaling *)obj)->type[0] == '\0'; }
static DsaStatus rope_post(ParseCtx *c, const cJSON *obj, void *base, const char *path) {
    (void)c, (void)obj, (void)path;
    if (rope_is_none(base)) rope_none(base); /* {"type": null, ...} is the same as null */
    return DSA_OK;
}
static const Table rope_table = {TABLE_KEYS(rope_keys), .aliases = rope_aliases, .n_aliases = COUNT(rope_aliases),
                                 .on_null = rope_none, .is_null = rope_is_none, .post = rope_post};
/* No scaling: defaults with type "" and factor 1, so m(F, μ) = 1 and f'_i = f_i. */
static void rope_none(void *obj) {
    DsaRopeScaling *r = obj;
    apply_defaults(&rope_table, r);
    memset(r->type, 0, sizeof r->type);
    r->factor = 1.0;
}

/* model.quantization_config: the DeepSeek-V3 FP8 block format (DSA-SPEC §3.2). */
static const KeyDesc quant_keys[] = {
    {K_STR(DsaQuantConfig, quant_method, "fp8", quant_methods)},
    {K_STR(DsaQuantConfig, fmt, "e4m3", fp8_formats)},
    {.name = "weight_block_size", .type = KT_INT2, .off = offsetof(DsaQuantConfig, weight_block_size), .def_i = 128,
     .min_i = 1},
    {K_STR(DsaQuantConfig, activation_scheme, "dynamic", act_schemes)},
    {K_STR(DsaQuantConfig, scale_fmt, "", scale_formats), .nullable = true},
};
static const Table quant_table = {TABLE_KEYS(quant_keys)};

/* num_key_value_heads absent or null means "as many as num_attention_heads" (as HF).
 * n_routed_experts 0 means no routed experts, the same as null: the spelling of a dense
 * model in an exported config.json, whose HF readers want an integer (DSA-SPEC §3.4). */
static DsaStatus model_post(ParseCtx *c, const cJSON *obj, void *base, const char *path) {
    (void)c, (void)obj, (void)path;
    DsaModelConfig *m = base;
    if (m->num_key_value_heads == 0) m->num_key_value_heads = m->num_attention_heads;
    if (m->has_moe && m->n_routed_experts == 0) m->has_moe = false;
    return DSA_OK;
}

/* The model section: HF keys, DeepSeek-V3 (671B) defaults; no indexer, no FP8 unless given.
 * MoE counts have minimum 0 here because a dense model (n_routed_experts null) leaves
 * them null; validate_moe checks them when has_moe. */
#define MC DsaModelConfig
static const KeyDesc model_keys[] = {
    {K_STR(MC, model_type, "deepseek_v3", model_types)},
    {K_INT(MC, vocab_size, 129280, 1)},
    {K_INT(MC, hidden_size, 7168, 1)},
    {K_INT(MC, intermediate_size, 18432, 1)},
    {K_INT(MC, moe_intermediate_size, 2048, 1)},
    {K_INT(MC, num_hidden_layers, 61, 1)},
    {K_INT(MC, num_attention_heads, 128, 1)},
    {K_INT(MC, num_key_value_heads, 0, 1), .nullable = true},
    {K_INT(MC, q_lora_rank, 1536, 1), .nullable = true, .has1 = HAS(MC, has_q_lora), .def_has = true},
    {K_INT(MC, kv_lora_rank, 512, 1)},
    {K_INT(MC, qk_nope_head_dim, 128, 1)},
    {K_INT(MC, qk_rope_head_dim, 64, 1)},
    {K_INT(MC, v_head_dim, 128, 1)},
    {K_INT(MC, first_k_dense_replace, 3, 0)},
    {K_INT(MC, n_routed_experts, 256, 1), .nullable = true, .has1 = HAS(MC, has_moe), .def_has = true},
    {K_INT(MC, n_shared_experts, 1, 0), .nullable = true},
    {K_INT(MC, num_experts_per_tok, 8, 0), .nullable = true},
    {K_INT(MC, n_group, 8, 0), .nullable = true, .null_i = 1},
    {K_INT(MC, topk_group, 4, 0), .nullable = true, .null_i = 1},
    {K_FLT(MC, routed_scaling_factor, 2.5, true)},
    {K_STR(MC, scoring_func, "sigmoid", scoring_funcs)},
    {K_STR(MC, topk_method, "noaux_tc", topk_methods)},
    {K_BOOL(MC, norm_topk_prob, true)},
    {K_INT(MC, num_nextn_predict_layers, 1, 0)},
    {K_INT(MC, max_position_embeddings, 163840, 1)},
    {K_FLT(MC, rms_norm_eps, 1e-6, true)},
    {K_FLT(MC, rope_theta, 10000.0, true)},
    {.name = "rope_scaling", .type = KT_OBJECT, .off = offsetof(MC, rope_scaling), .nullable = true,
     .sub = &rope_table},
    {K_FLT(MC, initializer_range, 0.02, true)},
    {K_BOOL(MC, tie_word_embeddings, false)},
    {K_STR(MC, hidden_act, "silu", activations)},
    {K_INT(MC, index_n_heads, 64, 1)},
    {K_INT(MC, index_head_dim, 128, 1)},
    {K_INT(MC, index_topk, 0, 1), .nullable = true, .has1 = HAS(MC, has_indexer), .def_has = false},
    {.name = "quantization_config", .type = KT_OBJECT, .off = offsetof(MC, quantization_config), .nullable = true,
     .has1 = HAS(MC, has_fp8), .def_has = false, .sub = &quant_table},
};
#undef MC

/* The DeepSeek reference inference code's spellings (its ModelArgs). Its `mscale` is the
 * μ of the softmax scale, which HF calls mscale_all_dim; with mscale equal to it the
 * HF cos/sin amplitude is 1, as in the reference, so it sets both. */
static const Alias model_aliases[] = {
    {"dim", "hidden_size"},
    {"n_layers", "num_hidden_layers"},
    {"n_dense_layers", "first_k_dense_replace"},
    {"n_heads", "num_attention_heads"},
    {"inter_dim", "intermediate_size"},
    {"moe_inter_dim", "moe_intermediate_size"},
    {"n_activated_experts", "num_experts_per_tok"},
    {"n_expert_groups", "n_group"},
    {"n_limited_groups", "topk_group"},
    {"route_scale", "routed_scaling_factor"},
    {"score_func", "scoring_func"},
    {"original_seq_len", "rope_scaling.original_max_position_embeddings"},
    {"rope_factor", "rope_scaling.factor"},
    {"beta_fast", "rope_scaling.beta_fast"},
    {"beta_slow", "rope_scaling.beta_slow"},
    {"mscale", "rope_scaling.mscale"},
    {"mscale", "rope_scaling.mscale_all_dim"},
    {"scale_fmt", "quantization_config.scale_fmt"},
};

/* HF and reference keys that do not change what we compute. */
static const char *const model_ignored[] = {
    "architectures", "auto_map", "torch_dtype", "transformers_version", "_name_or_path", "use_cache",
    "bos_token_id", "eos_token_id", "pad_token_id", "aux_loss_alpha", "seq_aux", "ep_size", "pretraining_tp",
    "router_aux_loss_coef", "output_router_logits", "head_dim", /* HF: = qk_rope_head_dim */
    "max_seq_len", "max_batch_size", /* reference inference limits */
    NULL,
};

static const FixedKey model_fixed[] = {
    {"attention_bias", 'b', 0, "MLA projections have no bias"},
    {"mlp_bias", 'b', 0, "the FFN projections have no bias"},
    {"attention_dropout", 'n', 0, "attention dropout is not implemented"},
    {"moe_layer_freq", 'n', 1, "every layer from first_k_dense_replace on is MoE"},
    {"rope_interleave", 'b', 1, "MLA RoPE is the interleaved layout (DSA-SPEC §4.4)"},
    {"indexer_rope_interleave", 'b', 0, "the indexer RoPE is the half-split layout (DSA-SPEC §4.4, §10)"},
};

static const Table model_table = {TABLE_KEYS(model_keys),
                                  .aliases = model_aliases,
                                  .n_aliases = COUNT(model_aliases),
                                  .ignored = model_ignored,
                                  .fixed = model_fixed,
                                  .n_fixed = COUNT(model_fixed),
                                  .post = model_post};

static const KeyDesc data_keys[] = {
    {.name = "train", .type = KT_STRLIST, .off = offsetof(DsaDataConfig, train), .size = DSA_CONFIG_PATH_CAP,
     .count_off = offsetof(DsaDataConfig, num_train), .max_count = DSA_CONFIG_MAX_FILES},
    {.name = "eval", .type = KT_STRLIST, .off = offsetof(DsaDataConfig, eval), .size = DSA_CONFIG_PATH_CAP,
     .count_off = offsetof(DsaDataConfig, num_eval), .max_count = DSA_CONFIG_MAX_FILES},
    {K_INT(DsaDataConfig, seq_len, 131072, 1)},
    {K_INT(DsaDataConfig, seed, 0, 0)},
    {K_BOOL(DsaDataConfig, segment_ids, false)},
    {K_INT(DsaDataConfig, prefetch, 2, 0)},
};
static const Table data_table = {TABLE_KEYS(data_keys)};

static const KeyDesc optim_keys[] = {
    {K_FLT(DsaOptimConfig, lr, 1e-3, false)},
    {K_FLT(DsaOptimConfig, beta1, 0.9, false)},
    {K_FLT(DsaOptimConfig, beta2, 0.95, false)},
    {K_FLT(DsaOptimConfig, eps, 1e-8, true)},
    {K_FLT(DsaOptimConfig, weight_decay, 0.1, false)},
    {K_FLT(DsaOptimConfig, grad_clip, 1.0, false)},
    {K_INT(DsaOptimConfig, lr_warmup_steps, 0, 0)},
    {K_STR(DsaOptimConfig, lr_schedule, "constant", schedules)},
    {K_FLT(DsaOptimConfig, min_lr, 0.0, false)},
};
static const Table optim_table = {TABLE_KEYS(optim_keys)};

static const KeyDesc train_keys[] = {
    {K_STR(DsaTrainConfig, out_dir, "runs/dsa", NULL)},
    {K_INT(DsaTrainConfig, seed, 0, 0)},
    {K_INT(DsaTrainConfig, global_batch, 16, 1)},
    {K_INT(DsaTrainConfig, micro_batch, 1, 1)},
    {K_INT(DsaTrainConfig, steps, 1000, 1)},
    {K_INT(DsaTrainConfig, checkpoint_every, 100, 0)},
    {K_INT(DsaTrainConfig, log_every, 1, 1)},
    {K_INT(DsaTrainConfig, threads, 0, 0)},
    {K_STR(DsaTrainConfig, device, "cpu", devices)},
    {K_BOOL(DsaTrainConfig, indexer_fp8, true)},
    {K_INT(DsaTrainConfig, recall_rows, 64, 0)},
};
static const Table train_table = {TABLE_KEYS(train_keys)};

/* Stage keys; their defaults are inherited (stage_init), not taken from this table. */
static const KeyDesc stage_keys[] = {
    {K_STR(DsaStageConfig, name, NULL, NULL)},
    {K_STR(DsaStageConfig, attention, NULL, attentions)},
    {K_STR(DsaStageConfig, trainable, NULL, trainables)},
    {K_INT(DsaStageConfig, steps, 0, 1)},
    {K_FLT(DsaStageConfig, lr, 0.0, false)},
    {K_INT(DsaStageConfig, global_batch, 0, 1)},
    {K_INT(DsaStageConfig, seq_len, 0, 1)},
    {K_INT(DsaStageConfig, index_topk, 0, 0)},
    {K_INT(DsaStageConfig, lr_warmup_steps, 0, 0)},
    {K_STR(DsaStageConfig, lr_schedule, NULL, schedules)},
};
static const Table stage_table = {TABLE_KEYS(stage_keys)};

/* The root: sections are read in this order, so stages can inherit from the others. */
static const KeyDesc root_keys[] = {
    {.name = "format_version", .type = KT_VERSION},
    {.name = "model", .type = KT_OBJECT, .off = offsetof(DsaConfig, model), .sub = &model_table},
    {.name = "data", .type = KT_OBJECT, .off = offsetof(DsaConfig, data), .sub = &data_table},
    {.name = "optimizer", .type = KT_OBJECT, .off = offsetof(DsaConfig, optimizer), .sub = &optim_table},
    {.name = "train", .type = KT_OBJECT, .off = offsetof(DsaConfig, train), .sub = &train_table},
    {.name = "stages", .type = KT_STAGES, .off = offsetof(DsaConfig, stages), .sub = &stage_table},
};
static const Table root_table = {TABLE_KEYS(root_keys)};

/* ---- small helpers --------------------------------------------------------------- */

static void *at(void *base, size_t off) { return (char *)base + off; }
static const void *cat(const void *base, size_t off) { return (const char *)base + off; }

/* Copy `src` into a fixed array, zero-filling the rest (so structs compare with memcmp). */
static void set_str(char *dst, size_t cap, const char *src) {
    memset(dst, 0, cap);
    if (!src) return;
    size_t n = strlen(src);
    if (n >= cap) n = cap - 1;
    memcpy(dst, src, n);
}

/* out = "prefix.name", or "name" at the root (out may be prefix; truncated to KEY_CAP). */
static void join(char *out, const char *prefix, const char *name) {
    size_t len = strlen(prefix);
    if (out != prefix) memmove(out, prefix, len + 1);
    if (len && len < KEY_CAP - 1) out[len++] = '.';
    size_t n = strlen(name);
    if (len + n > KEY_CAP - 1) n = len < KEY_CAP - 1 ? KEY_CAP - 1 - len : 0;
    memcpy(out + len, name, n);
    out[len + n] = '\0';
}

/* out = "prefix.<index>". */
static void join_index(char *out, const char *prefix, int index) {
    char num[16];
    snprintf(num, sizeof num, "%d", index);
    join(out, prefix, num);
}

static cJSON *get(const cJSON *obj, const char *name) { return cJSON_GetObjectItemCaseSensitive(obj, name); }

static const KeyDesc *find_key(const Table *t, const char *name) {
    for (int i = 0; i < t->n; i++)
        if (!strcmp(t->keys[i].name, name)) return &t->keys[i];
    return NULL;
}

static const Alias *find_alias(const Table *t, const char *name) {
    for (int i = 0; i < t->n_aliases; i++)
        if (!strcmp(t->aliases[i].alias, name)) return &t->aliases[i];
    return NULL;
}

static const FixedKey *find_fixed(const Table *t, const char *name) {
    for (int i = 0; i < t->n_fixed; i++)
        if (!strcmp(t->fixed[i].name, name)) return &t->fixed[i];
    return NULL;
}

static bool is_ignored(const Table *t, const char *name) {
    for (int i = 0; t->ignored && t->ignored[i]; i++)
        if (!strcmp(t->ignored[i], name)) return true;
    return false;
}

/* The last --set that names key `path` (or a parent of it), or NULL. */
static const char *override_of(const ParseCtx *c, const char *path) {
    for (int i = c->n_overrides - 1; i >= 0; i--) {
        const char *ov = c->overrides[i];
        const char *eq = strchr(ov, '=');
        size_t n = eq ? (size_t)(eq - ov) : strlen(ov);
        if (n > 0 && !strncmp(path, ov, n) && (path[n] == '\0' || path[n] == '.')) return ov;
    }
    return NULL;
}

/* Where a key's value came from: the last --set that names it (or a parent), else the file. */
static const char *where(const ParseCtx *c, const char *path, char *buf) {
    const char *ov = override_of(c, path);
    if (!ov) return c->source;
    snprintf(buf, WHERE_CAP, "--set %s", ov);
    return buf;
}

static const DsaConfigOrigin *origin_find(const DsaConfigOrigins *o, const char *key) {
    for (int i = 0; o && i < o->count; i++)
        if (!strcmp(o->entry[i].key, key)) return &o->entry[i];
    return NULL;
}

/* Record that `key` holds the value of `via`, set by override `set` (NULL: the file);
 * key == via from the file is the default and removes any entry. Beyond the table's
 * capacity nothing is recorded (messages then name the file). */
static void origin_note(DsaConfigOrigins *o, const char *key, const char *via, const char *set) {
    if (!o) return;
    DsaConfigOrigin *e = (DsaConfigOrigin *)origin_find(o, key);
    if (!set && !strcmp(key, via)) {
        if (e) *e = o->entry[--o->count];
        return;
    }
    if (!e && o->count == DSA_CONFIG_MAX_ORIGINS) return;
    if (!e) e = &o->entry[o->count++];
    set_str(e->key, sizeof e->key, key);
    set_str(e->via, sizeof e->via, via);
    set_str(e->set, sizeof e->set, set);
}

/* A JSON value in words, for "found ..." in type errors. */
static void describe(const cJSON *v, char *buf, size_t cap) {
    if (cJSON_IsNull(v)) snprintf(buf, cap, "null");
    else if (cJSON_IsBool(v)) snprintf(buf, cap, "%s", cJSON_IsTrue(v) ? "true" : "false");
    else if (cJSON_IsNumber(v)) snprintf(buf, cap, "number %.15g", v->valuedouble);
    else if (cJSON_IsString(v))
        snprintf(buf, cap, "string \"%.40s%s\"", v->valuestring, strlen(v->valuestring) > 40 ? "..." : "");
    else if (cJSON_IsArray(v)) snprintf(buf, cap, "a list of %d entries", cJSON_GetArraySize(v));
    else snprintf(buf, cap, "an object");
}

static const char *expected(const KeyDesc *k) {
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
    describe(v, found, sizeof found);
    DSA_FAIL(DSA_ERR_CONFIG, "%s in %s: expected %s%s, found %s", path, where(c, path, w), expected(k),
             k->nullable ? " or null" : "", found);
}

/* Check a string against a key's allowed values; `in` names the source for the message. */
static DsaStatus check_choice(const KeyDesc *k, const char *s, const char *path, const char *in) {
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

/* ---- defaults --------------------------------------------------------------------- */

static void apply_defaults(const Table *t, void *base) {
    for (int i = 0; i < t->n; i++) {
        const KeyDesc *k = &t->keys[i];
        void *p = at(base, k->off);
        switch (k->type) {
        case KT_INT: *(int64_t *)p = k->def_i; break;
        case KT_FLOAT: *(double *)p = k->def_f; break;
        case KT_BOOL: *(bool *)p = k->def_i != 0; break;
        case KT_STRING: set_str(p, k->size, k->def_s); break;
        case KT_STRLIST:
            memset(p, 0, k->size * (size_t)k->max_count);
            *(int *)at(base, k->count_off) = 0;
            break;
        case KT_INT2: ((int64_t *)p)[0] = ((int64_t *)p)[1] = k->def_i; break;
        case KT_OBJECT:
            apply_defaults(k->sub, p);
            if (k->has1 && !k->def_has && k->sub->on_null) k->sub->on_null(p);
            break;
        case KT_STAGES:
        case KT_VERSION: break;
        }
        if (k->has1) *(bool *)at(base, k->has1 - 1) = k->def_has;
    }
}

/* Stage keys and the section keys they inherit (stage_init). */
static const char *const stage_inherits[][2] = {
    {"steps", "train.steps"},         {"lr", "optimizer.lr"},
    {"global_batch", "train.global_batch"}, {"seq_len", "data.seq_len"},
    {"index_topk", "model.index_topk"}, {"lr_warmup_steps", "optimizer.lr_warmup_steps"},
    {"lr_schedule", "optimizer.lr_schedule"},
};

/* Stage i of n before its own keys are read: inherited values (config.h, DsaStageConfig),
 * with the key each one inherits noted in `origins` (read_key drops the note when the
 * stage gives the key itself). */
static void stage_init(const DsaConfig *cfg, DsaStageConfig *s, int i, int n, DsaConfigOrigins *origins) {
    for (size_t k = 0; k < sizeof stage_inherits / sizeof stage_inherits[0]; k++) {
        char key[KEY_CAP];
        snprintf(key, sizeof key, "stages.%d.%s", i, stage_inherits[k][0]);
        const DsaConfigOrigin *parent = origin_find(origins, stage_inherits[k][1]);
        origin_note(origins, key, stage_inherits[k][1], parent && parent->set[0] ? parent->set : NULL);
    }
    char name[DSA_CONFIG_NAME_CAP];
    snprintf(name, sizeof name, "stage%d", i);
    memset(s, 0, sizeof *s);
    set_str(s->name, sizeof s->name, n == 1 ? "lm" : name);
    set_str(s->attention, sizeof s->attention, "dense");
    set_str(s->trainable, sizeof s->trainable, "all");
    s->steps = cfg->train.steps;
    s->lr = cfg->optimizer.lr;
    s->global_batch = cfg->train.global_batch;
    s->seq_len = cfg->data.seq_len;
    s->index_topk = cfg->model.index_topk;
    s->lr_warmup_steps = cfg->optimizer.lr_warmup_steps;
    set_str(s->lr_schedule, sizeof s->lr_schedule, cfg->optimizer.lr_schedule);
}

/* ---- reading the JSON tree through the tables --------------------------------------- */

static DsaStatus read_table(ParseCtx *c, const Table *t, const cJSON *obj, void *base, const char *path);

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

static DsaStatus unknown_key(const ParseCtx *c, const Table *t, const char *prefix, const char *name) {
    char path[KEY_CAP], guess_path[KEY_CAP], w[WHERE_CAP];
    join(path, prefix, name);
    const char *in = where(c, path, w);
    if (t == &root_table && (find_key(&model_table, name) || find_alias(&model_table, name)))
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
    describe(v, found, sizeof found);
    char want[32];
    if (f->kind == 'b') snprintf(want, sizeof want, "%s", f->value != 0 ? "true" : "false");
    else snprintf(want, sizeof want, "%g", f->value);
    DSA_FAIL(DSA_ERR_CONFIG, "%s in %s: only %s is supported (%s), found %s", path, where(c, path, w), want, f->why,
             found);
}

/* Every key of `obj` must be known (a key, an ignored or fixed key) and appear once. */
static DsaStatus check_keys(const ParseCtx *c, const Table *t, const cJSON *obj, const char *path) {
    for (const cJSON *it = obj->child; it; it = it->next) {
        for (const cJSON *prev = obj->child; prev != it; prev = prev->next) {
            if (strcmp(prev->string, it->string)) continue;
            char kp[KEY_CAP], w[WHERE_CAP];
            join(kp, path, it->string);
            DSA_FAIL(DSA_ERR_CONFIG, "%s in %s: key given twice", kp, where(c, kp, w));
        }
        const FixedKey *f = find_fixed(t, it->string);
        if (f) DSA_TRY(check_fixed(c, f, it, path));
        if (find_key(t, it->string) || f || is_ignored(t, it->string)) continue;
        return unknown_key(c, t, path, it->string);
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
        DSA_FAIL(DSA_ERR_CONFIG, "%s in %s: \"%.60s...\" is longer than %zu bytes", path, where(c, path, w),
                 v->valuestring, k->size - 1);
    DSA_TRY(check_choice(k, v->valuestring, path, where(c, path, w)));
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
                 where(c, path, w), n, k->max_count);
    memset(list, 0, k->size * (size_t)k->max_count);
    *count = n;
    for (int i = 0; i < n; i++) {
        const cJSON *e = cJSON_IsString(v) ? v : cJSON_GetArrayItem(v, i);
        join_index(ep, path, i);
        describe(e, found, sizeof found);
        if (!cJSON_IsString(e) || !e->valuestring[0])
            DSA_FAIL(DSA_ERR_CONFIG, "%s in %s: expected a non-empty string, found %s", ep, where(c, path, w), found);
        if (strlen(e->valuestring) >= k->size)
            DSA_FAIL(DSA_ERR_CONFIG, "%s in %s: path longer than %zu bytes", ep, where(c, path, w), k->size - 1);
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
        DSA_FAIL(DSA_ERR_CONFIG, "%s in %s is %lld; this build reads config format %d", path, where(c, path, w),
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
                 path, where(c, path, w));
    if (n > DSA_CONFIG_MAX_STAGES)
        DSA_FAIL(DSA_ERR_CONFIG, "%s in %s: %d stages, at most %d", path, where(c, path, w), n,
                 DSA_CONFIG_MAX_STAGES);
    cfg->num_stages = n;
    for (int i = 0; i < n; i++) {
        const cJSON *e = v && cJSON_IsArray(v) ? cJSON_GetArrayItem(v, i) : NULL;
        join_index(sp, path, i);
        if (e && !cJSON_IsObject(e)) {
            char found[96];
            describe(e, found, sizeof found);
            DSA_FAIL(DSA_ERR_CONFIG, "%s in %s: expected a stage object, found %s", sp, where(c, sp, w), found);
        }
        stage_init(cfg, &cfg->stages[i], i, n, c->origins);
        DSA_TRY(read_table(c, &stage_table, e, &cfg->stages[i], sp));
    }
    return DSA_OK;
}

static DsaStatus read_null(const KeyDesc *k, void *p) {
    switch (k->type) {
    case KT_INT: *(int64_t *)p = k->null_i; break;
    case KT_STRING: set_str(p, k->size, ""); break;
    case KT_OBJECT:
        apply_defaults(k->sub, p);
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
    if (k->type != KT_OBJECT || cJSON_IsNull(v)) origin_note(c->origins, path, path, override_of(c, path));
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
        DSA_TRY(read_table(c, k->sub, v, p, path));
        break;
    case KT_VERSION: DSA_TRY(read_version(c, k, v, path)); break;
    case KT_STAGES: break;
    }
    if (has) *has = true;
    return DSA_OK;
}

/* Read the keys of `obj` (NULL: the object is absent, keep defaults) into `base`. */
static DsaStatus read_table(ParseCtx *c, const Table *t, const cJSON *obj, void *base, const char *path) {
    if (obj) DSA_TRY(check_keys(c, t, obj, path));
    for (int i = 0; i < t->n; i++) {
        const KeyDesc *k = &t->keys[i];
        const cJSON *v = obj ? get(obj, k->name) : NULL;
        char kp[KEY_CAP];
        join(kp, path, k->name);
        if (v || k->type == KT_STAGES) DSA_TRY(read_key(c, k, v, base, kp));
        else if (k->type == KT_OBJECT) DSA_TRY(read_table(c, k->sub, NULL, at(base, k->off), kp));
    }
    if (t->post) DSA_TRY(t->post(c, obj, base, path));
    return DSA_OK;
}

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
            DSA_FAIL(DSA_ERR_CONFIG, "%s in %s sets %s, but %s.%s is not an object", apath, where(c, apath, w), tpath,
                     path, target);
    }
    const cJSON *cur = get(parent, leaf);
    if (cur) {
        if (cJSON_Compare(cur, v, true)) return DSA_OK;
        DSA_FAIL(DSA_ERR_CONFIG, "%s and %s in %s disagree (%s is the reference code's name for %s)", apath, tpath,
                 where(c, apath, w), a->alias, a->target);
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
static DsaStatus normalize_model(const ParseCtx *c, cJSON *root) {
    cJSON *model = get(root, "model");
    if (!cJSON_IsObject(model)) return DSA_OK;
    DSA_TRY(prepare_reference_dtype(c, model));
    DSA_TRY(resolve_aliases(c, &model_table, model, "model"));
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
        const KeyDesc *k = find_key(&model_table, size_keys[i].key);
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
static DsaStatus normalize(const ParseCtx *c, cJSON **root) {
    char found[96];
    if (!cJSON_IsObject(*root)) {
        describe(*root, found, sizeof found);
        DSA_FAIL(DSA_ERR_CONFIG, "%s: the top level must be a JSON object, found %s", c->source, found);
    }
    bool ours = false;
    for (int i = 0; i < root_table.n; i++) ours |= get(*root, root_table.keys[i].name) != NULL;
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
    DSA_TRY(normalize_model(c, *root));
    return DSA_OK;
}

/* ---- overrides ------------------------------------------------------------------------ */

/* The JSON value of an override: JSON when it parses, else the text as a string; text
 * for string keys even when it looks like a number ("stages.0.name=1"). */
static cJSON *override_value(const KeyDesc *k, const char *text) {
    cJSON *v = cJSON_ParseWithOpts(text, NULL, true);
    bool wants_text = k && (k->type == KT_STRING || k->type == KT_STRLIST);
    if (v && wants_text && !(cJSON_IsString(v) || cJSON_IsArray(v) || cJSON_IsNull(v))) {
        cJSON_Delete(v);
        v = NULL;
    }
    return v ? v : cJSON_CreateString(text);
}

/* Make `parent`[name] (object) or `parent`[index] (array) a container of the given kind. */
static cJSON *ensure_child(cJSON *parent, const char *comp, bool want_array) {
    cJSON *child = NULL;
    if (cJSON_IsArray(parent)) {
        int idx = atoi(comp);
        while (cJSON_GetArraySize(parent) <= idx)
            if (!cJSON_AddItemToArray(parent, cJSON_CreateObject())) return NULL;
        child = cJSON_GetArrayItem(parent, idx);
        if (cJSON_IsObject(child)) return child;
        cJSON *fresh = cJSON_CreateObject();
        return fresh && cJSON_ReplaceItemInArray(parent, idx, fresh) ? fresh : NULL;
    }
    child = get(parent, comp);
    if (child && (want_array ? cJSON_IsArray(child) : cJSON_IsObject(child))) return child;
    cJSON *fresh = want_array ? cJSON_CreateArray() : cJSON_CreateObject();
    if (!fresh) return NULL;
    bool ok = child ? cJSON_ReplaceItemInObjectCaseSensitive(parent, comp, fresh)
                    : cJSON_AddItemToObject(parent, comp, fresh);
    return ok ? fresh : NULL;
}

/* Store `v` at the last component (taking ownership of v). */
static bool set_leaf(cJSON *parent, const char *comp, cJSON *v) {
    if (cJSON_IsArray(parent)) {
        int idx = atoi(comp);
        while (cJSON_GetArraySize(parent) <= idx)
            if (!cJSON_AddItemToArray(parent, cJSON_CreateObject())) return false;
        return cJSON_ReplaceItemInArray(parent, idx, v);
    }
    if (get(parent, comp)) return cJSON_ReplaceItemInObjectCaseSensitive(parent, comp, v);
    return cJSON_AddItemToObject(parent, comp, v);
}

static DsaStatus apply_key(const ParseCtx *c, cJSON *root, const char *key, const char *value, int depth);

/* Split "a.b.c" into components (in place). */
static int split_key(char *key, char **comps) {
    int n = 0;
    for (char *p = key; n < MAX_DEPTH;) {
        comps[n++] = p;
        char *dot = strchr(p, '.');
        if (!dot) return n;
        *dot = '\0';
        p = dot + 1;
    }
    return MAX_DEPTH + 1;
}

/* An alias at component i: rewrite the key with the target spelling and apply that. */
static DsaStatus apply_alias(const ParseCtx *c, cJSON *root, const Table *t, char **comps, int n, int i,
                             const char *value, int depth) {
    for (int a = 0; a < t->n_aliases; a++) {
        if (strcmp(t->aliases[a].alias, comps[i])) continue;
        char key[KEY_CAP] = "";
        for (int j = 0; j < n; j++) {
            size_t len = strlen(key);
            snprintf(key + len, sizeof key - len, "%s%s", j ? "." : "", j == i ? t->aliases[a].target : comps[j]);
        }
        DSA_TRY(apply_key(c, root, key, value, depth + 1));
    }
    return DSA_OK;
}

/* Walk `key` through the tables (checking every component), then set it in the tree. */
static DsaStatus apply_key(const ParseCtx *c, cJSON *root, const char *key, const char *value, int depth) {
    char buf[KEY_CAP], prefix[KEY_CAP] = "";
    char *comps[MAX_DEPTH + 1];
    bool is_array[MAX_DEPTH + 1] = {false};
    snprintf(buf, sizeof buf, "%s", key);
    int n = split_key(buf, comps);
    DSA_ASSERT(depth < 3);
    if (n > MAX_DEPTH) DSA_FAIL(DSA_ERR_CONFIG, "--set %s: key path too deep", key);
    const Table *t = &root_table;
    const KeyDesc *k = NULL;
    bool want_index = false;
    for (int i = 0; i < n; i++) {
        char *end = NULL;
        if (want_index) {
            long idx = strtol(comps[i], &end, 10);
            if (end == comps[i] || *end || idx < 0 || idx >= DSA_CONFIG_MAX_STAGES)
                DSA_FAIL(DSA_ERR_CONFIG, "--set %s=%s: \"%s\" after %s is not a stage index 0..%d", key, value,
                         comps[i], prefix, DSA_CONFIG_MAX_STAGES - 1);
            want_index = false, t = &stage_table, k = NULL;
        } else if (!t) {
            DSA_FAIL(DSA_ERR_CONFIG, "--set %s=%s: %s is %s, not an object", key, value, prefix, expected(k));
        } else if (!(k = find_key(t, comps[i]))) {
            if (find_alias(t, comps[i])) return apply_alias(c, root, t, comps, n, i, value, depth);
            if (i == n - 1 && (is_ignored(t, comps[i]) || find_fixed(t, comps[i]))) break;
            return unknown_key(c, t, prefix, comps[i]);
        } else {
            is_array[i] = k->type == KT_STAGES;
            want_index = k->type == KT_STAGES;
            t = k->type == KT_OBJECT ? k->sub : NULL;
        }
        join(prefix, prefix, comps[i]);
    }
    cJSON *node = root;
    for (int i = 0; i < n - 1 && node; i++) node = ensure_child(node, comps[i], is_array[i]);
    cJSON *v = node ? override_value(want_index ? NULL : k, value) : NULL;
    if (!v || !set_leaf(node, comps[n - 1], v)) {
        cJSON_Delete(v); /* not attached */
        DSA_FAIL(DSA_ERR_NOMEM, "out of memory applying --set %s", key);
    }
    return DSA_OK;
}

static DsaStatus apply_override(const ParseCtx *c, cJSON *root, const char *ov) {
    const char *eq = strchr(ov, '=');
    if (!eq || eq == ov || (size_t)(eq - ov) >= KEY_CAP)
        DSA_FAIL(DSA_ERR_ARG, "--set %s: expected key.path=value (e.g. model.index_topk=64)", ov);
    char key[KEY_CAP];
    snprintf(key, sizeof key, "%.*s", (int)(eq - ov), ov);
    DSA_TRY(apply_key(c, root, key, eq + 1, 0));
    return DSA_OK;
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
    apply_defaults(&root_table, cfg);
    set_str(cfg->source, sizeof cfg->source, src);
    if (!strncmp(json_text, "\xEF\xBB\xBF", 3)) json_text += 3; /* UTF-8 byte order mark */
    ParseCtx c = {.source = src, .overrides = overrides, .n_overrides = n_overrides, .origins = &cfg->origins};
    cJSON *root = NULL;
    DsaStatus st = DSA_OK;
    DSA_TRY(parse_json(src, json_text, &root));
    DSA_TRY_GOTO(st, normalize(&c, &root), done);
    for (int i = 0; i < n_overrides; i++) DSA_TRY_GOTO(st, apply_override(&c, root, overrides[i]), done);
    if (n_overrides) DSA_TRY_GOTO(st, normalize_model(&c, root), done);
    DSA_TRY_GOTO(st, read_table(&c, &root_table, root, cfg, ""), done);
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
        if (!cJSON_AddItemToArray(arr, emit_table(&stage_table, &cfg->stages[i]))) {
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
    cJSON *obj = emit_table(&root_table, cfg);
    *text = obj ? cJSON_Print(obj) : NULL;
    cJSON_Delete(obj);
    if (!*text) DSA_FAIL(DSA_ERR_NOMEM, "out of memory writing the config of %s as JSON", cfg->source);
    return DSA_OK;
}

uint64_t dsa_config_hash(const DsaConfig *cfg) {
    cJSON *obj = emit_table(&model_table, &cfg->model);
    char *text = obj ? cJSON_PrintUnformatted(obj) : NULL;
    cJSON_Delete(obj);
    DSA_ASSERT(text != NULL); /* only an allocation failure of a few KB gets here */
    uint64_t h = 1469598103934665603ull; /* FNV-1a 64 */
    for (const unsigned char *p = (const unsigned char *)text; *p; p++) h = (h ^ *p) * 1099511628211ull;
    free(text);
    return h;
}

/* ---- validation ------------------------------------------------------------------------ */

#define REQUIRE(cond, ...)                                       \
    do {                                                         \
        if (!(cond)) DSA_FAIL(DSA_ERR_CONFIG, __VA_ARGS__);      \
    } while (0)

/* Where the values of the keys named by a failed check came from (keys[0..n), n <= 2):
 * `src` gets the --set overrides that set any of them ("--set a=1", or "--set a=1 and --set
 * b=2"), or the file when none did; `why` gets " (K is V, from --set V=1; ...)" for each key
 * that holds a section key's value (a stage inheriting it) or an override's, else "". */
static void blame(const DsaConfig *cfg, const char *const *keys, int n, char *src, char *why) {
    const DsaConfigOrigin *o[2] = {NULL, NULL};
    snprintf(src, WHERE_CAP, "%s", cfg->source[0] ? cfg->source : "<config>");
    why[0] = '\0';
    bool any_set = false;
    for (int i = 0; i < n; i++) {
        o[i] = origin_find(&cfg->origins, keys[i]);
        if (!o[i]) continue;
        if (o[i]->set[0] && !(i == 1 && o[0] && !strcmp(o[0]->set, o[i]->set))) {
            size_t len = any_set ? strlen(src) : 0;
            snprintf(src + len, WHERE_CAP - len, "%s--set %s", any_set ? " and " : "", o[i]->set);
            any_set = true;
        }
    }
    const char *from[2];
    for (int i = 0; i < n; i++) from[i] = o[i] && o[i]->set[0] ? o[i]->set : NULL;
    const bool differ = n == 2 && !(from[0] == from[1] || (from[0] && from[1] && !strcmp(from[0], from[1])));
    for (int i = 0; i < n; i++) {
        const bool inherited = o[i] && strcmp(o[i]->key, o[i]->via) != 0;
        if (!inherited && !differ) continue;
        size_t len = strlen(why);
        char as[KEY_CAP + 8] = "";
        if (inherited) snprintf(as, sizeof as, " is %s,", o[i]->via);
        snprintf(why + len, 2 * WHERE_CAP - len, "%s%s%s from %s%s", len ? "; " : " (", keys[i], as,
                 from[i] ? "--set " : "", from[i] ? from[i] : cfg->source);
    }
    if (why[0]) {
        size_t len = strlen(why);
        snprintf(why + len, 2 * WHERE_CAP - len, ")");
    }
}

/* The key to change for the value of `key`: the section key a stage inherited it from,
 * else `key` itself. */
static const char *key_to_change(const DsaConfig *cfg, const char *key) {
    const DsaConfigOrigin *o = origin_find(&cfg->origins, key);
    return o ? o->via : key;
}

/* Where the model / run sections' relation checks' values came from: every --set override
 * that set a key under one of `prefixes` (NULL-terminated), or the file. */
static const char *section_src(const DsaConfig *cfg, const char *const *prefixes, char *buf) {
    snprintf(buf, WHERE_CAP, "%s", cfg->source[0] ? cfg->source : "<config>");
    bool any = false;
    for (int i = 0; i < cfg->origins.count; i++) {
        const DsaConfigOrigin *o = &cfg->origins.entry[i];
        bool under = false, seen = false;
        for (int j = 0; prefixes[j]; j++) under |= !strncmp(o->key, prefixes[j], strlen(prefixes[j]));
        for (int j = 0; j < i; j++) seen |= !strcmp(cfg->origins.entry[j].set, o->set);
        if (!under || !o->set[0] || seen || strcmp(o->key, o->via) != 0) continue;
        size_t len = any ? strlen(buf) : 0;
        snprintf(buf + len, WHERE_CAP - len, "%s--set %s", any ? " and " : "", o->set);
        any = true;
    }
    return buf;
}

/* Per-key checks from the tables: minimum values, finite numbers, allowed strings. */
static DsaStatus validate_table(const DsaConfig *cfg, const Table *t, const void *base, const char *path) {
    for (int i = 0; i < t->n; i++) {
        const KeyDesc *k = &t->keys[i];
        const void *p = cat(base, k->off);
        char kp[KEY_CAP], src[WHERE_CAP], why[2 * WHERE_CAP];
        join(kp, path, k->name);
        const char *keys[] = {kp};
        blame(cfg, keys, 1, src, why);
        if (k->has1 && !*(const bool *)cat(base, k->has1 - 1)) continue; /* null: nothing to check */
        if (k->type == KT_INT) {
            int64_t v = *(const int64_t *)p;
            REQUIRE(v >= k->min_i, "%s: %s = %lld must be >= %lld%s", src, kp, LL(v), LL(k->min_i), why);
        } else if (k->type == KT_INT2) {
            for (int j = 0; j < 2; j++)
                REQUIRE(((const int64_t *)p)[j] >= k->min_i, "%s: %s[%d] = %lld must be >= %lld", src, kp, j,
                        LL(((const int64_t *)p)[j]), LL(k->min_i));
        } else if (k->type == KT_FLOAT) {
            double v = *(const double *)p;
            REQUIRE(isfinite(v) && (k->positive ? v > 0 : v >= 0), "%s: %s = %g must be %s", src, kp, v,
                    k->positive ? "> 0" : ">= 0");
        } else if (k->type == KT_STRING) {
            DSA_TRY(check_choice(k, p, kp, src));
            REQUIRE(k->choices || k->nullable || *(const char *)p, "%s: %s must not be empty", src, kp);
        } else if (k->type == KT_OBJECT && !(k->sub->is_null && k->sub->is_null(p))) {
            DSA_TRY(validate_table(cfg, k->sub, p, kp));
        }
    }
    return DSA_OK;
}

static bool is_pow2(int64_t v) { return v > 0 && (v & (v - 1)) == 0; }

static DsaStatus validate_moe(const char *src, const DsaModelConfig *m) {
    if (!m->has_moe) return DSA_OK;
    int64_t e = m->n_routed_experts, g = m->n_group;
    REQUIRE(m->num_experts_per_tok >= 1 && m->num_experts_per_tok <= e,
            "%s: model.num_experts_per_tok = %lld must be in 1..model.n_routed_experts = %lld", src,
            LL(m->num_experts_per_tok), LL(e));
    REQUIRE(g >= 1 && e % g == 0, "%s: model.n_routed_experts = %lld must be divisible by model.n_group = %lld", src,
            LL(e), LL(g));
    REQUIRE(m->topk_group >= 1 && m->topk_group <= g, "%s: model.topk_group = %lld must be in 1..model.n_group = %lld",
            src, LL(m->topk_group), LL(g));
    if (strcmp(m->topk_method, "greedy") != 0) /* group-limited routing */
        REQUIRE(m->num_experts_per_tok <= m->topk_group * (e / g),
                "%s: model.num_experts_per_tok = %lld exceeds the %lld experts of model.topk_group = %lld groups "
                "of %lld", src, LL(m->num_experts_per_tok), LL(m->topk_group * (e / g)), LL(m->topk_group), LL(e / g));
    if (!strcmp(m->topk_method, "noaux_tc")) /* a group scores by the sum of its top-2 experts */
        REQUIRE(e / g >= 2, "%s: model.topk_method noaux_tc needs at least 2 experts per group, "
                "model.n_routed_experts / model.n_group = %lld", src, LL(e / g));
    return DSA_OK;
}

/* DSA-SPEC §2 scaling rules for the indexer. */
static DsaStatus validate_indexer(const char *src, const DsaModelConfig *m) {
    int64_t d = m->index_head_dim, g = d < 128 ? d : 128;
    REQUIRE(is_pow2(d), "%s: model.index_head_dim = %lld must be a power of two (Hadamard transform, DSA-SPEC §5.1)",
            src, LL(d));
    REQUIRE(d >= m->qk_rope_head_dim,
            "%s: model.index_head_dim = %lld must be >= model.qk_rope_head_dim = %lld (its rotary part)", src, LL(d),
            LL(m->qk_rope_head_dim));
    REQUIRE(d % g == 0,
            "%s: model.index_head_dim = %lld must be a multiple of the FP8 group size %lld (DSA-SPEC §5.2)", src,
            LL(d), LL(g));
    return DSA_OK;
}

static DsaStatus validate_model(const char *src, const DsaModelConfig *m, bool need_indexer) {
    REQUIRE(m->num_key_value_heads == m->num_attention_heads,
            "%s: model.num_key_value_heads = %lld must equal model.num_attention_heads = %lld (MLA)", src,
            LL(m->num_key_value_heads), LL(m->num_attention_heads));
    REQUIRE(m->qk_rope_head_dim % 2 == 0, "%s: model.qk_rope_head_dim = %lld must be even (RoPE rotates pairs)", src,
            LL(m->qk_rope_head_dim));
    REQUIRE(m->first_k_dense_replace <= m->num_hidden_layers,
            "%s: model.first_k_dense_replace = %lld must be <= model.num_hidden_layers = %lld", src,
            LL(m->first_k_dense_replace), LL(m->num_hidden_layers));
    REQUIRE(m->rope_theta > 1, "%s: model.rope_theta = %g must be > 1", src, m->rope_theta);
    const DsaRopeScaling *r = &m->rope_scaling;
    REQUIRE(r->factor >= 1, "%s: model.rope_scaling.factor = %g must be >= 1", src, r->factor);
    REQUIRE(r->beta_fast >= r->beta_slow, "%s: model.rope_scaling.beta_fast = %g must be >= beta_slow = %g", src,
            r->beta_fast, r->beta_slow);
    DSA_TRY(validate_moe(src, m));
    if (need_indexer) DSA_TRY(validate_indexer(src, m));
    return DSA_OK;
}

static DsaStatus validate_run(const char *src, const DsaConfig *cfg) {
    const DsaOptimConfig *o = &cfg->optimizer;
    REQUIRE(o->beta1 < 1 && o->beta2 < 1, "%s: optimizer.beta1 = %g and optimizer.beta2 = %g must be < 1", src,
            o->beta1, o->beta2);
    REQUIRE(o->min_lr <= o->lr, "%s: optimizer.min_lr = %g must be <= optimizer.lr = %g", src, o->min_lr, o->lr);
    REQUIRE(cfg->train.global_batch % cfg->train.micro_batch == 0,
            "%s: train.micro_batch = %lld must divide train.global_batch = %lld", src, LL(cfg->train.micro_batch),
            LL(cfg->train.global_batch));
    return DSA_OK;
}

static bool valid_name(const char *s) {
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && !strchr("_-.", *s)) return false;
    return true;
}

/* The --set overrides behind stage i's keys `a` and `b` ("lr_warmup_steps", "steps"):
 * fills src, why and the full key paths (blame). */
static void stage_blame(const DsaConfig *cfg, int i, const char *a, const char *b, char *src, char *why,
                        char ka[KEY_CAP], char kb[KEY_CAP]) {
    snprintf(ka, KEY_CAP, "stages.%d.%s", i, a);
    if (b && strchr(b, '.')) snprintf(kb, KEY_CAP, "%s", b); /* a section key */
    else snprintf(kb, KEY_CAP, "stages.%d.%s", i, b ? b : "");
    const char *keys[] = {ka, kb};
    blame(cfg, keys, b ? 2 : 1, src, why);
}

static DsaStatus validate_stage(const DsaConfig *cfg, int i) {
    const DsaStageConfig *s = &cfg->stages[i];
    char src[WHERE_CAP], why[2 * WHERE_CAP], ka[KEY_CAP], kb[KEY_CAP];
    stage_blame(cfg, i, "name", NULL, src, why, ka, kb);
    REQUIRE(s->name[0] && valid_name(s->name),
            "%s: stages.%d.name = \"%s\" must be non-empty letters, digits, '_', '-' or '.'", src, i, s->name);
    for (int j = 0; j < i; j++)
        REQUIRE(strcmp(cfg->stages[j].name, s->name) != 0, "%s: stages.%d.name and stages.%d.name are both \"%s\"",
                src, j, i, s->name);
    stage_blame(cfg, i, "global_batch", "train.micro_batch", src, why, ka, kb);
    REQUIRE(s->global_batch % cfg->train.micro_batch == 0,
            "%s: train.micro_batch = %lld must divide stages.%d.global_batch = %lld%s: change %s or %s", src,
            LL(cfg->train.micro_batch), i, LL(s->global_batch), why, key_to_change(cfg, ka), kb);
    stage_blame(cfg, i, "lr_warmup_steps", "steps", src, why, ka, kb);
    REQUIRE(s->lr_warmup_steps <= s->steps,
            "%s: stages.%d.lr_warmup_steps = %lld exceeds stages.%d.steps = %lld%s: lower %s or raise %s", src, i,
            LL(s->lr_warmup_steps), i, LL(s->steps), why, key_to_change(cfg, ka), key_to_change(cfg, kb));
    stage_blame(cfg, i, "seq_len", "model.max_position_embeddings", src, why, ka, kb);
    REQUIRE(s->seq_len <= cfg->model.max_position_embeddings,
            "%s: stages.%d.seq_len = %lld exceeds model.max_position_embeddings = %lld%s: lower %s or raise "
            "model.max_position_embeddings", src, i, LL(s->seq_len), LL(cfg->model.max_position_embeddings), why,
            key_to_change(cfg, ka));
    stage_blame(cfg, i, "index_topk", "attention", src, why, ka, kb);
    REQUIRE(strcmp(s->attention, "sparse") != 0 || s->index_topk >= 1,
            "%s: stages.%d is sparse but its index_topk = %lld%s; set model.index_topk or stages.%d.index_topk >= 1",
            src, i, LL(s->index_topk), why, i);
    return DSA_OK;
}

DsaStatus dsa_config_validate(const DsaConfig *cfg) {
    const char *src = cfg->source[0] ? cfg->source : "<config>";
    static const char *const model_keys_prefix[] = {"model.", NULL}, *const run_prefix[] = {"optimizer.", "train.", NULL};
    char model_src[WHERE_CAP], run_src[WHERE_CAP];
    DSA_TRY(validate_table(cfg, &root_table, cfg, ""));
    REQUIRE(cfg->num_stages >= 1 && cfg->num_stages <= DSA_CONFIG_MAX_STAGES, "%s: %d stages, expected 1..%d", src,
            cfg->num_stages, DSA_CONFIG_MAX_STAGES);
    bool need_indexer = cfg->model.has_indexer;
    for (int i = 0; i < cfg->num_stages; i++) {
        char sp[KEY_CAP];
        join_index(sp, "stages", i);
        DSA_TRY(validate_table(cfg, &stage_table, &cfg->stages[i], sp));
        need_indexer |= !strcmp(cfg->stages[i].attention, "sparse") || !strcmp(cfg->stages[i].trainable, "indexer");
    }
    DSA_TRY(validate_model(section_src(cfg, model_keys_prefix, model_src), &cfg->model, need_indexer));
    DSA_TRY(validate_run(section_src(cfg, run_prefix, run_src), cfg));
    for (int i = 0; i < cfg->num_stages; i++) DSA_TRY(validate_stage(cfg, i));
    return DSA_OK;
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
