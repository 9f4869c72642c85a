/* config_validate.c: dsa_config_validate (config.h): the per-key range checks of the
 * tables and the relations between keys (config_internal.h describes the parts).
 *
 * A failed check names the key, its value and the bound; where a --set override or an
 * inherited section key is behind a value, the message names it and the key to change
 * (STYLE.md rule 16). The indexer rules follow DSA-SPEC §2, §5.1 and §5.2.
 */
#include "core/config_internal.h"

#include <ctype.h>
#include <math.h>

#include "core/error.h"

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
        o[i] = cfg_origin_find(&cfg->origins, keys[i]);
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
    const DsaConfigOrigin *o = cfg_origin_find(&cfg->origins, key);
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
            DSA_TRY(cfg_check_choice(k, p, kp, src));
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
    DSA_TRY(validate_table(cfg, &cfg_root_table, cfg, ""));
    REQUIRE(cfg->num_stages >= 1 && cfg->num_stages <= DSA_CONFIG_MAX_STAGES, "%s: %d stages, expected 1..%d", src,
            cfg->num_stages, DSA_CONFIG_MAX_STAGES);
    bool need_indexer = cfg->model.has_indexer;
    for (int i = 0; i < cfg->num_stages; i++) {
        char sp[KEY_CAP];
        join_index(sp, "stages", i);
        DSA_TRY(validate_table(cfg, &cfg_stage_table, &cfg->stages[i], sp));
        need_indexer |= !strcmp(cfg->stages[i].attention, "sparse") || !strcmp(cfg->stages[i].trainable, "indexer");
    }
    DSA_TRY(validate_model(section_src(cfg, model_keys_prefix, model_src), &cfg->model, need_indexer));
    DSA_TRY(validate_run(section_src(cfg, run_prefix, run_src), cfg));
    for (int i = 0; i < cfg->num_stages; i++) DSA_TRY(validate_stage(cfg, i));
    return DSA_OK;
}
