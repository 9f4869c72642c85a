/* config_schema.c: the key tables of the JSON configuration (config.h), one per section,
 * and the defaults they give (config_internal.h describes the parts).
 *
 * One table of key descriptors per section (name, type, offset in the section struct,
 * nullability, default, smallest valid value, allowed strings) drives everything: the
 * defaults, the reader, unknown-key detection with "did you mean" suggestions, the
 * writer (dsa_config_to_json), the hash and the per-key range checks of validation.
 * Key names and defaults follow DSA-SPEC §2 and the HF DeepSeek-V3 config.
 */
#include "core/config_internal.h"

#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))
#define FSIZE(st, f) sizeof(((st *)0)->f)
#define HAS(st, f) (offsetof(st, f) + 1)
#define K_INT(st, f, d, mn) .name = #f, .type = KT_INT, .off = offsetof(st, f), .def_i = (d), .min_i = (mn)
#define K_FLT(st, f, d, pos) .name = #f, .type = KT_FLOAT, .off = offsetof(st, f), .def_f = (d), .positive = (pos)
#define K_BOOL(st, f, d) .name = #f, .type = KT_BOOL, .off = offsetof(st, f), .def_i = (d)
#define K_STR(st, f, d, ch) \
    .name = #f, .type = KT_STRING, .off = offsetof(st, f), .size = FSIZE(st, f), .def_s = (d), .choices = (ch)
#define TABLE_KEYS(k) .keys = (k), .n = COUNT(k)

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
static const char *const devices[] = {"cpu", "cuda", "sim", NULL};
static const char *const precisions[] = {"fp32", "bf16", NULL};
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
    cfg_apply_defaults(&rope_table, r);
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

const Table cfg_model_table = {TABLE_KEYS(model_keys),
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
    {K_STR(DsaTrainConfig, precision, "fp32", precisions)},
    {K_BOOL(DsaTrainConfig, indexer_fp8, true)},
    {K_INT(DsaTrainConfig, recall_rows, 64, 0)},
};
static const Table train_table = {TABLE_KEYS(train_keys)};

/* Stage keys; their defaults are inherited (cfg_stage_init), not taken from this table. */
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
const Table cfg_stage_table = {TABLE_KEYS(stage_keys)};

/* The root: sections are read in this order, so stages can inherit from the others. */
static const KeyDesc root_keys[] = {
    {.name = "format_version", .type = KT_VERSION},
    {.name = "model", .type = KT_OBJECT, .off = offsetof(DsaConfig, model), .sub = &cfg_model_table},
    {.name = "data", .type = KT_OBJECT, .off = offsetof(DsaConfig, data), .sub = &data_table},
    {.name = "optimizer", .type = KT_OBJECT, .off = offsetof(DsaConfig, optimizer), .sub = &optim_table},
    {.name = "train", .type = KT_OBJECT, .off = offsetof(DsaConfig, train), .sub = &train_table},
    {.name = "stages", .type = KT_STAGES, .off = offsetof(DsaConfig, stages), .sub = &cfg_stage_table},
};
const Table cfg_root_table = {TABLE_KEYS(root_keys)};

/* ---- defaults --------------------------------------------------------------------- */

void cfg_apply_defaults(const Table *t, void *base) {
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
            cfg_apply_defaults(k->sub, p);
            if (k->has1 && !k->def_has && k->sub->on_null) k->sub->on_null(p);
            break;
        case KT_STAGES:
        case KT_VERSION: break;
        }
        if (k->has1) *(bool *)at(base, k->has1 - 1) = k->def_has;
    }
}

/* Stage keys and the section keys they inherit (cfg_stage_init). */
static const char *const stage_inherits[][2] = {
    {"steps", "train.steps"},         {"lr", "optimizer.lr"},
    {"global_batch", "train.global_batch"}, {"seq_len", "data.seq_len"},
    {"index_topk", "model.index_topk"}, {"lr_warmup_steps", "optimizer.lr_warmup_steps"},
    {"lr_schedule", "optimizer.lr_schedule"},
};

/* Stage i of n before its own keys are read: inherited values (config.h, DsaStageConfig),
 * with the key each one inherits noted in `origins` (read_key drops the note when the
 * stage gives the key itself). */
void cfg_stage_init(const DsaConfig *cfg, DsaStageConfig *s, int i, int n, DsaConfigOrigins *origins) {
    for (size_t k = 0; k < sizeof stage_inherits / sizeof stage_inherits[0]; k++) {
        char key[KEY_CAP];
        snprintf(key, sizeof key, "stages.%d.%s", i, stage_inherits[k][0]);
        const DsaConfigOrigin *parent = cfg_origin_find(origins, stage_inherits[k][1]);
        cfg_origin_note(origins, key, stage_inherits[k][1], parent && parent->set[0] ? parent->set : NULL);
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
