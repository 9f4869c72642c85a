/* config.h: the run configuration: model shape (HF config.json keys), data, optimizer,
 * trainer and the list of training stages, read from JSON with cJSON.
 *
 * Three file shapes are read (DSA-SPEC §2):
 *  - our format: an object with the sections "model", "data", "optimizer", "train",
 *    "stages" (all optional) and an optional "format_version" (1);
 *  - a Hugging Face config.json of DeepSeek-V2/V3/V3.2 (no "model" object, top level has
 *    "model_type" or "hidden_size"): the whole object is the model section;
 *  - the DeepSeek reference inference code's config (keys "dim", "n_layers", ...): the
 *    same, with its spellings translated to the HF keys.
 * An absent key takes its default (DeepSeek-V3 values for the model); JSON null means
 * "none" where a key allows it (q_lora_rank, n_routed_experts, index_topk, rope_scaling,
 * quantization_config, scale_fmt); n_routed_experts 0 means none too (the spelling of a
 * dense model in an exported config.json, DSA-SPEC §3.4). Unknown keys and wrong JSON types are errors that
 * name the key path and the file (or the --set override) and suggest the closest key.
 *
 * Loading checks keys and types only; dsa_config_validate checks the relations
 * between values (sizes, divisibility, DSA-SPEC §2 scaling rules). Call both.
 *
 * Strings are stored in fixed arrays and always NUL-terminated; counts are int64_t.
 * NOTE: a DsaConfig is about 265 KB (the data file lists): allocate it on the heap or as
 * a static, not on a worker thread's stack.
 */
#ifndef DSA_CORE_CONFIG_H
#define DSA_CORE_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "core/error.h"

enum {
    DSA_CONFIG_FORMAT_VERSION = 1, /* "format_version" written by dsa_config_to_json */
    DSA_CONFIG_MAX_FILES = 256,    /* entries of data.train and data.eval */
    DSA_CONFIG_PATH_CAP = 512,     /* bytes of a path value, NUL included */
    DSA_CONFIG_NAME_CAP = 32,      /* bytes of a short string value, NUL included */
    DSA_CONFIG_MAX_STAGES = 8,     /* entries of "stages" */
};

/* model.rope_scaling (DSA-SPEC §4.3). JSON null (or "type": null) means no scaling: type
 * is "" and factor is 1, so every YaRN formula reduces to plain RoPE without a branch. */
typedef struct {
    char type[DSA_CONFIG_NAME_CAP];           /* "yarn", or "" for none */
    double factor;                            /* F */
    int64_t original_max_position_embeddings; /* L_orig */
    double beta_fast, beta_slow;              /* ramp bounds, in rotations */
    double mscale, mscale_all_dim;            /* attention scale μ (MLA uses mscale_all_dim) */
} DsaRopeScaling;

/* model.quantization_config (DSA-SPEC §3.2); meaningful when DsaModelConfig.has_fp8. */
typedef struct {
    char quant_method[DSA_CONFIG_NAME_CAP];      /* "fp8" */
    char fmt[DSA_CONFIG_NAME_CAP];               /* "e4m3" */
    int64_t weight_block_size[2];                /* [rows, cols] of one scale block */
    char activation_scheme[DSA_CONFIG_NAME_CAP]; /* "dynamic" */
    char scale_fmt[DSA_CONFIG_NAME_CAP];         /* "ue8m0", or "" (f32 scales, as V3) */
} DsaQuantConfig;

/* The model section: HF config.json keys of DeepSeek-V2/V3/V3.2, same names. */
typedef struct {
    char model_type[DSA_CONFIG_NAME_CAP]; /* "deepseek_v2" | "deepseek_v3" | "deepseek_v32" */
    int64_t vocab_size;
    int64_t hidden_size;           /* D */
    int64_t intermediate_size;     /* dense FFN width (layers < first_k_dense_replace) */
    int64_t moe_intermediate_size; /* expert width */
    int64_t num_hidden_layers;
    int64_t num_attention_heads; /* H */
    int64_t num_key_value_heads; /* == H (MLA); absent or null = num_attention_heads */
    bool has_q_lora;             /* false: q_lora_rank was null, queries are W_Q x (V2-Lite) */
    int64_t q_lora_rank;         /* d_q; 0 when !has_q_lora */
    int64_t kv_lora_rank;        /* d_c */
    int64_t qk_nope_head_dim;    /* d_n */
    int64_t qk_rope_head_dim;    /* d_r */
    int64_t v_head_dim;          /* d_v */
    int64_t first_k_dense_replace;
    bool has_moe;               /* false: n_routed_experts was null or 0, every FFN is dense */
    int64_t n_routed_experts;   /* 0 when !has_moe */
    int64_t n_shared_experts;   /* null = 0 */
    int64_t num_experts_per_tok;
    int64_t n_group, topk_group; /* null = 1 */
    double routed_scaling_factor;
    char scoring_func[DSA_CONFIG_NAME_CAP]; /* "sigmoid" | "softmax" */
    char topk_method[DSA_CONFIG_NAME_CAP];  /* "noaux_tc" | "greedy" | "group_limited_greedy" */
    bool norm_topk_prob;
    int64_t num_nextn_predict_layers; /* MTP modules in the checkpoint */
    int64_t max_position_embeddings;
    double rms_norm_eps;
    double rope_theta;
    DsaRopeScaling rope_scaling;
    double initializer_range; /* std of fresh weights (the indexer, DSA-SPEC §3.2) */
    bool tie_word_embeddings;
    char hidden_act[DSA_CONFIG_NAME_CAP]; /* "silu" */
    bool has_indexer;       /* index_topk was given (a V3.2 model) */
    int64_t index_n_heads;  /* H_I */
    int64_t index_head_dim; /* d_I */
    int64_t index_topk;     /* k; 0 when !has_indexer */
    bool has_fp8;           /* quantization_config was given (FP8 e4m3 block weights) */
    DsaQuantConfig quantization_config;
} DsaModelConfig;

/* The data section: token shards (DESIGN.md "Data"). */
typedef struct {
    char train[DSA_CONFIG_MAX_FILES][DSA_CONFIG_PATH_CAP]; /* shard files, directories, globs */
    int num_train;
    char eval[DSA_CONFIG_MAX_FILES][DSA_CONFIG_PATH_CAP];
    int num_eval;
    int64_t seq_len;  /* tokens per window (the loader reads seq_len + 1) */
    int64_t seed;     /* shuffle order seed */
    bool segment_ids; /* document ids per token (attention does not cross documents) */
    int64_t prefetch; /* windows decoded ahead by the loader thread */
} DsaDataConfig;

/* The optimizer section: AdamW (DSA-SPEC §1 Decision (optimizer)). */
typedef struct {
    double lr, beta1, beta2, eps, weight_decay;
    double grad_clip;        /* global gradient-norm clip; 0 = off */
    int64_t lr_warmup_steps; /* linear ramp from 0 */
    char lr_schedule[DSA_CONFIG_NAME_CAP]; /* "constant" | "cosine" (down to min_lr) */
    double min_lr;
} DsaOptimConfig;

/* The train section: the run itself. */
typedef struct {
    char out_dir[DSA_CONFIG_PATH_CAP];
    int64_t seed;
    int64_t global_batch; /* sequences per optimizer step, all ranks */
    int64_t micro_batch;  /* sequences per forward/backward on one rank */
    int64_t steps;
    int64_t checkpoint_every; /* steps; 0 = only at the end */
    int64_t log_every;
    int64_t threads;                   /* CPU threads; 0 = all cores */
    char device[DSA_CONFIG_NAME_CAP];  /* "cpu" | "cuda" | "sim" (the test device, kernels/sim/) */
    char precision[DSA_CONFIG_NAME_CAP]; /* "fp32" (default) | "bf16" (bf16 storage, fp32 master and sums; cuda) */
    bool indexer_fp8;    /* FP8 round trip of the indexer's q and k (DSA-SPEC §5.2); default true */
    int64_t recall_rows; /* sparse stages: query rows per sequence on which top-k recall is measured */
} DsaTrainConfig;

/* One training stage (DSA-SPEC §1). Keys a stage omits inherit from the sections:
 * steps and global_batch from train, lr, lr_warmup_steps and lr_schedule from optimizer,
 * seq_len from data, index_topk from model; the values stored here are the resolved ones. */
typedef struct {
    char name[DSA_CONFIG_NAME_CAP];      /* unique; default "lm" for a single stage, else "stage<i>" */
    char attention[DSA_CONFIG_NAME_CAP]; /* "dense" | "sparse" (top-k over the indexer) */
    char trainable[DSA_CONFIG_NAME_CAP]; /* "indexer" (model frozen) | "all" */
    int64_t steps;
    double lr;
    int64_t global_batch;
    int64_t seq_len;
    int64_t index_topk;
    int64_t lr_warmup_steps;
    char lr_schedule[DSA_CONFIG_NAME_CAP];
} DsaStageConfig;

/* Where values came from, for messages only (dsa_config_validate names the override and
 * the key to change): one entry per key that a --set override gave its value, or that a
 * stage inherited from a section key ("stages.0.steps" holds train.steps). Keys without an
 * entry hold what the file (or the defaults) gave them. */
enum { DSA_CONFIG_MAX_ORIGINS = 96, DSA_CONFIG_KEY_CAP = 64 };
typedef struct {
    char key[DSA_CONFIG_KEY_CAP]; /* "stages.0.steps" */
    char via[DSA_CONFIG_KEY_CAP]; /* the key whose value it holds: "train.steps", or key itself */
    char set[DSA_CONFIG_PATH_CAP]; /* the override that set via ("train.steps=2"), "" for the file */
} DsaConfigOrigin;
typedef struct {
    int count;
    DsaConfigOrigin entry[DSA_CONFIG_MAX_ORIGINS];
} DsaConfigOrigins;

typedef struct {
    DsaModelConfig model;
    DsaDataConfig data;
    DsaOptimConfig optimizer;
    DsaTrainConfig train;
    DsaStageConfig stages[DSA_CONFIG_MAX_STAGES];
    int num_stages; /* >= 1; without "stages" one stage "lm" (dense, all) of train.steps */
    char source[DSA_CONFIG_PATH_CAP]; /* file it came from, "<defaults>" or the source name */
    DsaConfigOrigins origins;         /* --set overrides and stage inheritance, for messages */
} DsaConfig;

/* Fill `cfg` with the defaults (DeepSeek-V3 671B model without indexer, one "lm" stage). */
DsaStatus dsa_config_defaults(DsaConfig *cfg);

/* Read a config file (any of the three shapes), apply `overrides` ("key.path=value",
 * n_overrides of them, may be NULL when 0) and store the resolved result in `cfg`.
 * `path` NULL means defaults plus overrides. Checks keys and types, not relations. On
 * error `cfg` holds partial values. */
DsaStatus dsa_config_load(DsaConfig *cfg, const char *path, const char *const *overrides, int n_overrides);

/* As dsa_config_load, from JSON text; `source_name` names it in errors and cfg->source.
 * Override syntax: the key path uses dots, stage entries by 0-based index
 * ("stages.1.lr=1e-4"); the value is JSON ("[\"a.h5\"]", "null", "64") or, when it does
 * not parse as JSON or the key holds strings, a plain string ("train.out_dir=runs/x").
 * Missing sections and stage entries are created. */
DsaStatus dsa_config_parse(DsaConfig *cfg, const char *json_text, const char *source_name,
                           const char *const *overrides, int n_overrides);

/* Check the relations between values (positive sizes, divisibility, DSA-SPEC §2 scaling
 * rules, stage names); the error names the keys, their values and where they came from:
 * cfg->source, or the --set override that set them (and, for a stage key inherited from a
 * section key, that key: the one to change). */
DsaStatus dsa_config_validate(const DsaConfig *cfg);

/* The fully resolved config in our file format, pretty-printed; parsing it back gives an
 * identical DsaConfig (except `source` and `origins`). *text is malloc'ed: release it with free(). */
DsaStatus dsa_config_to_json(const DsaConfig *cfg, char **text);

/* Stable 64-bit hash (FNV-1a) of the resolved model section, for checkpoint
 * compatibility checks: equal for equal model sections, independent of the run. */
uint64_t dsa_config_hash(const DsaConfig *cfg);

/* ---- derived quantities (pure functions, DSA-SPEC §2 and §4.3) ---------------------- */

/* YaRN attention factor m(F, μ) = 1 if F <= 1 else 0.1 μ ln F + 1. */
double dsa_yarn_mscale(double factor, double mscale);

/* MLA softmax scale τ = (d_n + d_r)^-1/2 · m(F, mscale_all_dim)² (671B: 0.1352337789). */
double dsa_model_softmax_scale(const DsaModelConfig *m);

/* Indexer constant c = (H_I · d_I)^-1/2 (671B: 0.0110485435). */
double dsa_model_indexer_scale(const DsaModelConfig *m);

/* YaRN ramp bounds over the d_r/2 rotary frequencies (§4.3): corr(n) =
 * d ln(L_orig / (2π n)) / (2 ln θ), low = max(⌊corr(β_fast)⌋, 0),
 * high = min(⌈corr(β_slow)⌉, d − 1) (671B: 10 and 23). */
void dsa_model_yarn_bounds(const DsaModelConfig *m, int *low, int *high);

/* Does layer `layer` (0-based; num_hidden_layers for the MTP layer) use the MoE FFN? */
bool dsa_model_layer_is_moe(const DsaModelConfig *m, int64_t layer);

/* Parameters of one indexer (DSA-SPEC §3.1: wq_b, wk, k_norm weight and bias,
 * weights_proj), whether or not has_indexer (671B: 13,959,424). Without a query latent
 * (!has_q_lora) wq_b reads the hidden state x. */
int64_t dsa_model_indexer_param_count(const DsaModelConfig *m);

/* Parameter counts by part (DSA-SPEC §3.1 tensor table). */
typedef struct {
    int64_t embedding; /* embed_tokens */
    int64_t attention; /* MLA projections and their norms, all layers */
    int64_t indexer;   /* all layers' indexers (0 without has_indexer) */
    int64_t dense_ffn; /* layers < first_k_dense_replace (all layers without MoE) */
    int64_t moe;       /* router, its bias, routed and shared experts */
    int64_t norms;     /* input/post-attention layernorms and the final norm */
    int64_t head;      /* lm_head (0 when tied) */
    int64_t total;     /* the sum above: the main model without MTP */
    int64_t mtp;       /* num_nextn_predict_layers MTP modules (not in total) */
} DsaParamCounts;
void dsa_model_param_counts(const DsaModelConfig *m, DsaParamCounts *out);

/* DsaParamCounts.total: embedding + layers + head, without MTP modules. */
int64_t dsa_model_param_count(const DsaModelConfig *m);

#endif
