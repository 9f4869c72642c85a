/* test_config.c: core/config: the shipped configs, the HF config.json and reference-code
 * shapes, error messages (unknown keys with suggestions, wrong types, bad JSON, missing
 * files), --set overrides, validation rules, the JSON round trip and hash, stage
 * inheritance, and the derived constants of DSA-SPEC §2. Run from the repository root. */
#include "tests/test_util.h"

#include <math.h>

#include "core/config.h"
#include "core/mem.h"

/* The DeepSeek-V3.2 HF config.json (FP8 checkpoint), as published, plus auto_map. */
static const char hf_v32[] =
    "{\n"
    "  \"architectures\": [\"DeepseekV32ForCausalLM\"],\n"
    "  \"attention_bias\": false,\n"
    "  \"attention_dropout\": 0.0,\n"
    "  \"auto_map\": {\"AutoConfig\": \"configuration_deepseek.DeepseekV32Config\",\n"
    "               \"AutoModel\": \"modeling_deepseek.DeepseekV32Model\",\n"
    "               \"AutoModelForCausalLM\": \"modeling_deepseek.DeepseekV32ForCausalLM\"},\n"
    "  \"bos_token_id\": 0,\n"
    "  \"eos_token_id\": 1,\n"
    "  \"ep_size\": 1,\n"
    "  \"first_k_dense_replace\": 3,\n"
    "  \"hidden_act\": \"silu\",\n"
    "  \"hidden_size\": 7168,\n"
    "  \"index_head_dim\": 128,\n"
    "  \"index_n_heads\": 64,\n"
    "  \"index_topk\": 2048,\n"
    "  \"initializer_range\": 0.02,\n"
    "  \"intermediate_size\": 18432,\n"
    "  \"kv_lora_rank\": 512,\n"
    "  \"max_position_embeddings\": 163840,\n"
    "  \"model_type\": \"deepseek_v32\",\n"
    "  \"moe_intermediate_size\": 2048,\n"
    "  \"moe_layer_freq\": 1,\n"
    "  \"n_group\": 8,\n"
    "  \"n_routed_experts\": 256,\n"
    "  \"n_shared_experts\": 1,\n"
    "  \"norm_topk_prob\": true,\n"
    "  \"num_attention_heads\": 128,\n"
    "  \"num_experts_per_tok\": 8,\n"
    "  \"num_hidden_layers\": 61,\n"
    "  \"num_key_value_heads\": 128,\n"
    "  \"num_nextn_predict_layers\": 1,\n"
    "  \"q_lora_rank\": 1536,\n"
    "  \"qk_nope_head_dim\": 128,\n"
    "  \"qk_rope_head_dim\": 64,\n"
    "  \"quantization_config\": {\n"
    "    \"activation_scheme\": \"dynamic\",\n"
    "    \"fmt\": \"e4m3\",\n"
    "    \"quant_method\": \"fp8\",\n"
    "    \"scale_fmt\": \"ue8m0\",\n"
    "    \"weight_block_size\": [128, 128]\n"
    "  },\n"
    "  \"rms_norm_eps\": 1e-06,\n"
    "  \"rope_scaling\": {\n"
    "    \"beta_fast\": 32,\n"
    "    \"beta_slow\": 1,\n"
    "    \"factor\": 40,\n"
    "    \"mscale\": 1.0,\n"
    "    \"mscale_all_dim\": 1.0,\n"
    "    \"original_max_position_embeddings\": 4096,\n"
    "    \"type\": \"yarn\"\n"
    "  },\n"
    "  \"rope_theta\": 10000,\n"
    "  \"routed_scaling_factor\": 2.5,\n"
    "  \"scoring_func\": \"sigmoid\",\n"
    "  \"tie_word_embeddings\": false,\n"
    "  \"topk_group\": 4,\n"
    "  \"topk_method\": \"noaux_tc\",\n"
    "  \"torch_dtype\": \"bfloat16\",\n"
    "  \"transformers_version\": \"4.44.2\",\n"
    "  \"use_cache\": true,\n"
    "  \"v_head_dim\": 128,\n"
    "  \"vocab_size\": 129280\n"
    "}\n";

/* DeepSeek-V2-Lite: no query latent, softmax/greedy routing, mscale 0.707, bf16. */
static const char hf_v2_lite[] =
    "{\"_name_or_path\": \"deepseek-ai/DeepSeek-V2-Lite\", \"architectures\": [\"DeepseekV2ForCausalLM\"],"
    " \"attention_bias\": false, \"attention_dropout\": 0.0,"
    " \"auto_map\": {\"AutoConfig\": \"configuration_deepseek.DeepseekV2Config\"},"
    " \"aux_loss_alpha\": 0.001, \"bos_token_id\": 100000, \"eos_token_id\": 100001,"
    " \"first_k_dense_replace\": 1, \"hidden_act\": \"silu\", \"hidden_size\": 2048,"
    " \"initializer_range\": 0.02, \"intermediate_size\": 10944, \"kv_lora_rank\": 512,"
    " \"max_position_embeddings\": 163840, \"model_type\": \"deepseek_v2\", \"moe_intermediate_size\": 1408,"
    " \"moe_layer_freq\": 1, \"n_group\": 1, \"n_routed_experts\": 64, \"n_shared_experts\": 2,"
    " \"norm_topk_prob\": false, \"num_attention_heads\": 16, \"num_experts_per_tok\": 6,"
    " \"num_hidden_layers\": 27, \"num_key_value_heads\": 16, \"pretraining_tp\": 1, \"q_lora_rank\": null,"
    " \"qk_nope_head_dim\": 128, \"qk_rope_head_dim\": 64, \"rms_norm_eps\": 1e-06,"
    " \"rope_scaling\": {\"beta_fast\": 32, \"beta_slow\": 1, \"factor\": 40, \"mscale\": 0.707,"
    " \"mscale_all_dim\": 0.707, \"original_max_position_embeddings\": 4096, \"type\": \"yarn\"},"
    " \"rope_theta\": 10000, \"routed_scaling_factor\": 1.0, \"scoring_func\": \"softmax\", \"seq_aux\": true,"
    " \"tie_word_embeddings\": false, \"topk_group\": 1, \"topk_method\": \"greedy\","
    " \"torch_dtype\": \"bfloat16\", \"transformers_version\": \"4.33.1\", \"use_cache\": true,"
    " \"v_head_dim\": 128, \"vocab_size\": 102400}";

/* The reference inference code's config_671B_v3.2.json spellings. */
static const char ref_v32[] =
    "{\"vocab_size\": 129280, \"dim\": 7168, \"inter_dim\": 18432, \"moe_inter_dim\": 2048, \"n_layers\": 61,"
    " \"n_dense_layers\": 3, \"n_heads\": 128, \"n_routed_experts\": 256, \"n_shared_experts\": 1,"
    " \"n_activated_experts\": 8, \"n_expert_groups\": 8, \"n_limited_groups\": 4, \"route_scale\": 2.5,"
    " \"score_func\": \"sigmoid\", \"q_lora_rank\": 1536, \"kv_lora_rank\": 512, \"qk_nope_head_dim\": 128,"
    " \"qk_rope_head_dim\": 64, \"v_head_dim\": 128, \"dtype\": \"fp8\", \"scale_fmt\": \"ue8m0\","
    " \"index_n_heads\": 64, \"index_head_dim\": 128, \"index_topk\": 2048, \"max_batch_size\": 8,"
    " \"max_seq_len\": 163840, \"original_seq_len\": 4096, \"rope_theta\": 10000.0, \"rope_factor\": 40,"
    " \"beta_fast\": 32, \"beta_slow\": 1, \"mscale\": 1.0}";

static DsaConfig *cfg_new(void) {
    DsaConfig *cfg = calloc(1, sizeof *cfg);
    assert_non_null(cfg);
    return cfg;
}

static void assert_close(double got, double want, double rel) {
    if (fabs(got - want) > rel * fabs(want)) fail_msg("got %.12g, want %.12g (rel tol %g)", got, want, rel);
}

/* Parse `text` with overrides and check it fails with `needle` in the message. */
static void expect_parse_error(const char *text, const char *const *sets, int n, const char *needle) {
    DsaConfig *cfg = cfg_new();
    assert_fails_with(dsa_config_parse(cfg, text, "x.json", sets, n), DSA_ERR_CONFIG, needle);
    free(cfg);
}

/* Load tiny.json with one override, then check validation fails with `needle`. */
static void expect_invalid(const char *set, const char *needle) {
    DsaConfig *cfg = cfg_new();
    const char *sets[] = {set};
    assert_ok(dsa_config_load(cfg, "configs/tiny.json", sets, 1));
    assert_fails_with(dsa_config_validate(cfg), DSA_ERR_CONFIG, needle);
    free(cfg);
}

static void test_shipped_configs(void **state) {
    (void)state;
    size_t live = dsa_mem_live();
    DsaConfig *t = cfg_new(), *b = cfg_new();
    assert_ok(dsa_config_load(t, "configs/tiny.json", NULL, 0));
    assert_ok(dsa_config_validate(t));
    assert_ok(dsa_config_load(b, "configs/deepseek-v3.2.json", NULL, 0));
    assert_ok(dsa_config_validate(b));
    assert_int_equal(dsa_mem_live(), live);

    const DsaModelConfig *m = &t->model;
    assert_string_equal(m->model_type, "deepseek_v32");
    assert_int_equal(m->hidden_size, 256);
    assert_int_equal(m->num_hidden_layers, 4);
    assert_int_equal(m->q_lora_rank, 96);
    assert_true(m->has_q_lora && m->has_moe && m->has_indexer && !m->has_fp8);
    assert_int_equal(m->index_topk, 16);
    assert_int_equal(m->index_head_dim, 32);
    assert_string_equal(m->rope_scaling.type, "yarn");
    assert_true(m->rope_scaling.factor == 8.0);
    assert_int_equal(m->rope_scaling.original_max_position_embeddings, 128);
    assert_int_equal(m->max_position_embeddings, 1024);
    assert_int_equal(t->data.num_train, 1);
    assert_string_equal(t->data.train[0], "runs/demo/data/*.h5");
    assert_int_equal(t->num_stages, 2);
    assert_string_equal(t->stages[0].name, "warmup");
    assert_string_equal(t->stages[0].trainable, "indexer");
    assert_string_equal(t->stages[1].attention, "sparse");
    assert_true(t->stages[1].lr == 7.3e-6);

    m = &b->model;
    assert_true(m->has_fp8);
    assert_int_equal(m->quantization_config.weight_block_size[0], 128);
    assert_int_equal(m->quantization_config.weight_block_size[1], 128);
    assert_string_equal(m->quantization_config.scale_fmt, "ue8m0");
    assert_int_equal(m->num_nextn_predict_layers, 1);
    assert_int_equal(b->data.seq_len, 131072);
    assert_int_equal(b->stages[0].steps, 1000);
    assert_int_equal(b->stages[0].global_batch, 16);
    assert_true(b->stages[0].lr == 1e-3);
    assert_int_equal(b->stages[1].steps, 15000);
    assert_int_equal(b->stages[1].global_batch, 480);
    assert_int_equal(b->stages[1].index_topk, 2048);
    assert_int_equal(b->stages[1].lr_warmup_steps, 100);
    assert_true(b->stages[1].lr == 7.3e-6);
    assert_true(dsa_config_hash(t) != dsa_config_hash(b));
    free(t);
    free(b);
}

/* The HF config.json loads as it is, from a file, and equals our 671B model section. */
static void test_hf_config_json(void **state) {
    (void)state;
    DsaConfig *hf = cfg_new(), *ours = cfg_new();
    const char *path = test_write_file("config.json", hf_v32, strlen(hf_v32));
    assert_ok(dsa_config_load(hf, path, NULL, 0));
    assert_ok(dsa_config_validate(hf));
    assert_string_equal(hf->source, path);
    assert_true(hf->model.has_indexer && hf->model.has_fp8);
    assert_int_equal(hf->model.index_topk, 2048);
    assert_int_equal(hf->num_stages, 1);
    assert_string_equal(hf->stages[0].name, "lm");
    assert_ok(dsa_config_load(ours, "configs/deepseek-v3.2.json", NULL, 0));
    assert_memory_equal(&hf->model, &ours->model, sizeof hf->model);
    assert_true(dsa_config_hash(hf) == dsa_config_hash(ours));
    free(hf);
    free(ours);
}

static void test_v2_lite(void **state) {
    (void)state;
    DsaConfig *cfg = cfg_new();
    assert_ok(dsa_config_parse(cfg, hf_v2_lite, "v2-lite/config.json", NULL, 0));
    assert_ok(dsa_config_validate(cfg));
    const DsaModelConfig *m = &cfg->model;
    assert_false(m->has_q_lora);
    assert_int_equal(m->q_lora_rank, 0);
    assert_false(m->has_indexer);
    assert_string_equal(m->scoring_func, "softmax");
    assert_string_equal(m->topk_method, "greedy");
    assert_int_equal(m->n_shared_experts, 2);
    assert_false(m->norm_topk_prob);
    double ms = 0.1 * 0.707 * log(40.0) + 1.0;
    assert_close(dsa_model_softmax_scale(m), ms * ms / sqrt(192.0), 1e-12);
    int64_t params = dsa_model_param_count(m); /* published: 15.7B */
    assert_true(params > 15600000000LL && params < 15800000000LL);
    free(cfg);
}

/* The reference code's spellings give the same model as the HF keys (model_type aside). */
static void test_reference_spelling(void **state) {
    (void)state;
    DsaConfig *ref = cfg_new(), *ours = cfg_new();
    assert_ok(dsa_config_parse(ref, ref_v32, "config_671B_v3.2.json", NULL, 0));
    assert_ok(dsa_config_validate(ref));
    assert_ok(dsa_config_load(ours, "configs/deepseek-v3.2.json", NULL, 0));
    assert_string_equal(ref->model.model_type, "deepseek_v3");
    snprintf(ref->model.model_type, sizeof ref->model.model_type, "deepseek_v32");
    assert_memory_equal(&ref->model, &ours->model, sizeof ref->model);

    /* the reference's mscale is the softmax μ: it sets both HF fields */
    assert_ok(dsa_config_parse(ref, "{\"dim\": 7168, \"mscale\": 0.707}", "ref.json", NULL, 0));
    assert_true(ref->model.rope_scaling.mscale == 0.707 && ref->model.rope_scaling.mscale_all_dim == 0.707);
    /* bf16 reference weights: scale_fmt is dropped, no FP8 */
    assert_ok(dsa_config_parse(ref, "{\"dim\": 7168, \"dtype\": \"bf16\", \"scale_fmt\": null}", "ref.json", NULL, 0));
    assert_false(ref->model.has_fp8);
    expect_parse_error("{\"dim\": 7168, \"hidden_size\": 4096}", NULL, 0,
                       "model.dim and model.hidden_size in x.json disagree");
    free(ref);
    free(ours);
}

static void test_unknown_keys(void **state) {
    (void)state;
    const char *typo = "{\"model\": {\"index_top_k\": 8}}";
    const char *path = test_write_file("typo.json", typo, strlen(typo));
    DsaConfig *cfg = cfg_new();
    char want[512];
    snprintf(want, sizeof want, "unknown key model.index_top_k in %s; did you mean model.index_topk?", path);
    assert_fails_with(dsa_config_load(cfg, path, NULL, 0), DSA_ERR_CONFIG, want);
    free(cfg);
    expect_parse_error("{\"stages\": [{\"name\": \"a\"}, {\"lrr\": 1}]}", NULL, 0,
                       "unknown key stages.1.lrr in x.json; did you mean stages.1.lr?");
    expect_parse_error("{\"model_type\": \"deepseek_v3\", \"num_hiden_layers\": 3}", NULL, 0,
                       "unknown key model.num_hiden_layers in x.json; did you mean model.num_hidden_layers?");
    expect_parse_error("{\"data\": {}, \"hidden_size\": 3}", NULL, 0, "did you mean model.hidden_size?");
    expect_parse_error("{\"model\": {\"rope_scaling\": {\"factr\": 4}}}", NULL, 0,
                       "did you mean model.rope_scaling.factor?");
    expect_parse_error("{\"trian\": {}}", NULL, 0, "unknown key trian in x.json; did you mean train?");
    expect_parse_error("{\"model\": {\"zzzzzzzzzz\": 1}}", NULL, 0, "valid keys here: model_type, vocab_size");
    expect_parse_error("{\"model\": {\"hidden_size\": 1, \"hidden_size\": 2}}", NULL, 0,
                       "model.hidden_size in x.json: key given twice");
    expect_parse_error("{\"model_type\": \"deepseek_v3\", \"attention_bias\": true}", NULL, 0,
                       "model.attention_bias in x.json: only false is supported");
    expect_parse_error("{\"format_version\": 2}", NULL, 0, "format_version in x.json is 2");
    /* other frameworks' names point to ours */
    const char *lr[] = {"optimizer.learning_rate=1e-4"};
    expect_parse_error("{}", lr, 1, "unknown key optimizer.learning_rate in --set optimizer.learning_rate=1e-4; "
                                    "did you mean optimizer.lr?");
    expect_parse_error("{\"train\": {\"max_steps\": 5}}", NULL, 0, "did you mean train.steps?");
    expect_parse_error("{\"data\": {\"seq_length\": 5}}", NULL, 0, "did you mean data.seq_len?");
}

/* Load `file` with the one override `set`, then check validation fails with `needle`. */
static void expect_blame(const char *file, const char *set, const char *needle) {
    DsaConfig *cfg = cfg_new();
    const char *sets[] = {set};
    assert_ok(dsa_config_load(cfg, file, sets, 1));
    assert_fails_with(dsa_config_validate(cfg), DSA_ERR_CONFIG, needle);
    free(cfg);
}

/* A relation broken by a --set override names the override and the key to change, also
 * when a stage inherits the value (stages.0.steps holds train.steps); without overrides
 * the file is named; a stage key the file sets itself is not blamed on the section key. */
static void test_override_blame(void **state) {
    (void)state;
    DsaConfig *cfg = cfg_new();
    const char *steps[] = {"data.train=x", "train.steps=2"};
    assert_ok(dsa_config_load(cfg, "configs/tiny-dense.json", steps, 2));
    assert_fails_with(dsa_config_validate(cfg), DSA_ERR_CONFIG,
                      "--set train.steps=2: stages.0.lr_warmup_steps = 20 exceeds stages.0.steps = 2 "
                      "(stages.0.lr_warmup_steps is optimizer.lr_warmup_steps, from configs/tiny-dense.json; "
                      "stages.0.steps is train.steps, from --set train.steps=2): lower optimizer.lr_warmup_steps "
                      "or raise train.steps");
    assert_null(strstr(dsa_error_message(), "configs/tiny-dense.json: stages"));
    expect_blame("configs/tiny-dense.json", "optimizer.lr_warmup_steps=400",
                 "--set optimizer.lr_warmup_steps=400: stages.0.lr_warmup_steps = 400 exceeds");
    expect_blame("configs/tiny-dense.json", "data.seq_len=4096",
                 "--set data.seq_len=4096: stages.0.seq_len = 4096 exceeds model.max_position_embeddings = 1024 "
                 "(stages.0.seq_len is data.seq_len, from --set data.seq_len=4096; model.max_position_embeddings "
                 "from configs/tiny-dense.json): lower data.seq_len or raise model.max_position_embeddings");
    expect_blame("configs/tiny-dense.json", "train.steps=0", "--set train.steps=0: train.steps = 0 must be >= 1");
    expect_blame("configs/tiny-dense.json", "model.num_key_value_heads=2",
                 "--set model.num_key_value_heads=2: model.num_key");
    /* tiny-dsa's stages give their own steps: train.steps does not reach them */
    assert_ok(dsa_config_load(cfg, "configs/tiny-dsa.json", steps, 2));
    assert_ok(dsa_config_validate(cfg));
    expect_blame("configs/tiny-dsa.json", "stages.1.steps=5",
                 "--set stages.1.steps=5: stages.1.lr_warmup_steps = 10 exceeds stages.1.steps = 5 "
                 "(stages.1.lr_warmup_steps from configs/tiny-dsa.json; stages.1.steps from --set "
                 "stages.1.steps=5): lower stages.1.lr_warmup_steps or raise stages.1.steps");
    /* the same broken relation in a file names the file */
    const char *text = "{\"train\": {\"steps\": 2}, \"optimizer\": {\"lr_warmup_steps\": 3}}";
    assert_ok(dsa_config_parse(cfg, text, "w.json", NULL, 0));
    assert_fails_with(dsa_config_validate(cfg), DSA_ERR_CONFIG,
                      "w.json: stages.0.lr_warmup_steps = 3 exceeds stages.0.steps = 2 (stages.0.lr_warmup_steps is "
                      "optimizer.lr_warmup_steps, from w.json; stages.0.steps is train.steps, from w.json): lower "
                      "optimizer.lr_warmup_steps or raise train.steps");
    free(cfg);
}

static void test_wrong_types(void **state) {
    (void)state;
    expect_parse_error("{\"model\": {\"hidden_size\": \"256\"}}", NULL, 0,
                       "model.hidden_size in x.json: expected an integer, found string \"256\"");
    expect_parse_error("{\"model\": {\"hidden_size\": 25.5}}", NULL, 0, "expected an integer, found number 25.5");
    expect_parse_error("{\"model\": {\"hidden_size\": null}}", NULL, 0, "expected an integer, found null");
    expect_parse_error("{\"model\": {\"q_lora_rank\": true}}", NULL, 0, "expected an integer or null, found true");
    expect_parse_error("{\"optimizer\": {\"lr\": \"1e-3\"}}", NULL, 0, "optimizer.lr in x.json: expected a number");
    expect_parse_error("{\"data\": {\"segment_ids\": 1}}", NULL, 0, "expected true or false, found number 1");
    expect_parse_error("{\"data\": {\"train\": [\"a.h5\", 3]}}", NULL, 0,
                       "data.train.1 in x.json: expected a non-empty string, found number 3");
    expect_parse_error("{\"model\": {\"rope_scaling\": 4}}", NULL, 0, "expected an object or null, found number 4");
    expect_parse_error("{\"model\": {\"scoring_func\": \"sigmod\"}}", NULL, 0,
                       "\"sigmod\" is not one of \"sigmoid\", \"softmax\"; did you mean \"sigmoid\"?");
    expect_parse_error("{\"stages\": {}}", NULL, 0, "stages in x.json: expected a list of stage objects");
    expect_parse_error("{\"stages\": []}", NULL, 0, "stages in x.json is empty");
    expect_parse_error("[1, 2]", NULL, 0, "x.json: the top level must be a JSON object");
}

static void test_bad_json_and_missing_file(void **state) {
    (void)state;
    const char *bad = "{\n  \"model\": {\n    \"hidden_size\": 256,,\n  }\n}\n";
    const char *path = test_write_file("bad.json", bad, strlen(bad));
    DsaConfig *cfg = cfg_new();
    assert_fails_with(dsa_config_load(cfg, path, NULL, 0), DSA_ERR_CONFIG, "invalid JSON at line 3, column");
    assert_non_null(strstr(dsa_error_message(), path));
    expect_parse_error("{\"model\": {", NULL, 0, "x.json: invalid JSON at line 1");
    expect_parse_error("", NULL, 0, "x.json: empty file");
    const char *missing = test_path("no-such-config.json");
    assert_fails_with(dsa_config_load(cfg, missing, NULL, 0), DSA_ERR_IO, missing);
    free(cfg);
}

static void test_overrides(void **state) {
    (void)state;
    DsaConfig *cfg = cfg_new();
    const char *sets[] = {
        "model.index_topk=64",          "stages.1.lr=1e-4",         "data.train=[\"a.h5\",\"b.h5\"]",
        "train.out_dir=runs/x",         "model.q_lora_rank=null",   "stages.0.name=1",
        "model.rope_scaling.factor=4",  "data.eval=held-out.h5",    "model.quantization_config.scale_fmt=ue8m0",
    };
    assert_ok(dsa_config_load(cfg, "configs/tiny.json", sets, 9));
    assert_true(cfg->model.has_indexer);
    assert_int_equal(cfg->model.index_topk, 64);
    assert_int_equal(cfg->stages[1].index_topk, 64); /* inherited after the override */
    assert_true(cfg->stages[1].lr == 1e-4);
    assert_int_equal(cfg->data.num_train, 2);
    assert_string_equal(cfg->data.train[1], "b.h5");
    assert_string_equal(cfg->train.out_dir, "runs/x");
    assert_false(cfg->model.has_q_lora);
    assert_int_equal(cfg->model.q_lora_rank, 0);
    assert_string_equal(cfg->stages[0].name, "1");
    assert_true(cfg->model.rope_scaling.factor == 4.0);
    assert_int_equal(cfg->data.num_eval, 1);
    assert_string_equal(cfg->data.eval[0], "held-out.h5");
    assert_true(cfg->model.has_fp8); /* the override created quantization_config */
    assert_string_equal(cfg->model.quantization_config.scale_fmt, "ue8m0");

    /* on defaults: sections and stage entries are created; aliases and null work */
    const char *more[] = {"stages.2.steps=5", "model.dim=512", "model.mscale=0.5", "model.rope_scaling=null"};
    assert_ok(dsa_config_load(cfg, NULL, more, 4));
    assert_string_equal(cfg->source, "<defaults>");
    assert_int_equal(cfg->num_stages, 3);
    assert_string_equal(cfg->stages[1].name, "stage1");
    assert_int_equal(cfg->stages[2].steps, 5);
    assert_int_equal(cfg->stages[0].steps, 1000);
    assert_int_equal(cfg->model.hidden_size, 512);
    assert_string_equal(cfg->model.rope_scaling.type, "");
    assert_true(cfg->model.rope_scaling.factor == 1.0);
    const char *whole[] = {"model={\"dim\": 1024, \"dtype\": \"fp8\"}"}; /* whole section, reference keys */
    assert_ok(dsa_config_load(cfg, NULL, whole, 1));
    assert_int_equal(cfg->model.hidden_size, 1024);
    assert_true(cfg->model.has_fp8);
    const char *later[] = {"model.rope_scaling=null", "model.mscale=0.5"}; /* object made again */
    assert_ok(dsa_config_load(cfg, NULL, later, 2));
    assert_string_equal(cfg->model.rope_scaling.type, "yarn");
    assert_true(cfg->model.rope_scaling.mscale == 0.5 && cfg->model.rope_scaling.mscale_all_dim == 0.5);
    free(cfg);

    const char *unknown[] = {"model.index_top_k=64"};
    expect_parse_error("{}", unknown, 1,
                       "unknown key model.index_top_k in --set model.index_top_k=64; did you mean model.index_topk?");
    const char *badtype[] = {"model.hidden_size=abc"};
    expect_parse_error("{}", badtype, 1,
                       "model.hidden_size in --set model.hidden_size=abc: expected an integer, found string \"abc\"");
    const char *deep[] = {"model.hidden_size.x=1"};
    expect_parse_error("{}", deep, 1, "model.hidden_size is an integer, not an object");
    const char *index[] = {"stages.x.lr=1"};
    expect_parse_error("{}", index, 1, "\"x\" after stages is not a stage index 0..7");
    const char *stage_key[] = {"stages.0.lrr=1"};
    expect_parse_error("{}", stage_key, 1, "did you mean stages.0.lr?");
    const char *device[] = {"train.device=tpu"};
    expect_parse_error("{}", device, 1,
                       "train.device in --set train.device=tpu: \"tpu\" is not one of \"cpu\", \"cuda\"");
    const char *noeq[] = {"model.hidden_size"};
    cfg = cfg_new();
    assert_fails_with(dsa_config_parse(cfg, "{}", "x.json", noeq, 1), DSA_ERR_ARG, "expected key.path=value");
    free(cfg);
}

static void test_validation(void **state) {
    (void)state;
    expect_invalid("model.qk_rope_head_dim=15", "model.qk_rope_head_dim = 15 must be even");
    expect_invalid("model.index_head_dim=48", "model.index_head_dim = 48 must be a power of two");
    expect_invalid("model.index_head_dim=8", "model.index_head_dim = 8 must be >= model.qk_rope_head_dim = 16");
    expect_invalid("model.index_topk=0", "model.index_topk = 0 must be >= 1");
    expect_invalid("model.num_key_value_heads=2",
                   "model.num_key_value_heads = 2 must equal model.num_attention_heads = 4");
    expect_invalid("model.hidden_size=0", "model.hidden_size = 0 must be >= 1");
    expect_invalid("model.num_experts_per_tok=9",
                   "model.num_experts_per_tok = 9 must be in 1..model.n_routed_experts = 8");
    expect_invalid("model.n_group=3", "model.n_routed_experts = 8 must be divisible by model.n_group = 3");
    expect_invalid("model.topk_group=3", "model.topk_group = 3 must be in 1..model.n_group = 2");
    expect_invalid("model.num_experts_per_tok=5", "exceeds the 4 experts of model.topk_group = 1 groups of 4");
    expect_invalid("model.first_k_dense_replace=5",
                   "model.first_k_dense_replace = 5 must be <= model.num_hidden_layers = 4");
    expect_invalid("model.rope_scaling.factor=0.5", "model.rope_scaling.factor = 0.5 must be >= 1");
    expect_invalid("model.rms_norm_eps=0", "model.rms_norm_eps = 0 must be > 0");
    expect_invalid("data.seq_len=0", "data.seq_len = 0 must be >= 1");
    expect_invalid("train.micro_batch=3", "train.micro_batch = 3 must divide train.global_batch = 4");
    expect_invalid("stages.1.name=warmup", "stages.0.name and stages.1.name are both \"warmup\"");
    expect_invalid("stages.1.name=a b", "stages.1.name = \"a b\" must be non-empty letters");
    expect_invalid("stages.1.seq_len=2048", "stages.1.seq_len = 2048 exceeds model.max_position_embeddings = 1024");
    expect_invalid("stages.1.lr_warmup_steps=51", "stages.1.lr_warmup_steps = 51 exceeds stages.1.steps = 50");
    expect_invalid("optimizer.beta2=1", "optimizer.beta2 = 1 must be < 1");

    /* a sparse stage needs k even without an indexer in the model section */
    DsaConfig *cfg = cfg_new();
    const char *sparse[] = {"stages.0.attention=sparse"};
    assert_ok(dsa_config_load(cfg, NULL, sparse, 1));
    assert_fails_with(dsa_config_validate(cfg), DSA_ERR_CONFIG, "stages.0 is sparse but its index_topk = 0");
    /* and the indexer rules apply to it */
    const char *sparse48[] = {"stages.0.attention=sparse", "stages.0.index_topk=8", "model.index_head_dim=48"};
    assert_ok(dsa_config_load(cfg, NULL, sparse48, 3));
    assert_fails_with(dsa_config_validate(cfg), DSA_ERR_CONFIG, "must be a power of two");
    assert_ok(dsa_config_defaults(cfg));
    assert_ok(dsa_config_validate(cfg));
    free(cfg);
}

/* Write, read back: the same struct, the same text, the same hash. */
static void check_round_trip(const DsaConfig *a) {
    DsaConfig *b = cfg_new();
    char *text = NULL, *text2 = NULL;
    assert_ok(dsa_config_to_json(a, &text));
    assert_ok(dsa_config_parse(b, text, a->source, NULL, 0));
    b->origins = a->origins; /* where values came from is not part of the config */
    if (memcmp(a, b, sizeof *a) != 0) fail_msg("round trip of %s changed the config:\n%s", a->source, text);
    assert_ok(dsa_config_to_json(b, &text2));
    assert_string_equal(text, text2);
    assert_true(dsa_config_hash(a) == dsa_config_hash(b));
    free(text);
    free(text2);
    free(b);
}

static void test_round_trip(void **state) {
    (void)state;
    DsaConfig *cfg = cfg_new();
    assert_ok(dsa_config_load(cfg, "configs/tiny.json", NULL, 0));
    check_round_trip(cfg);
    assert_ok(dsa_config_load(cfg, "configs/deepseek-v3.2.json", NULL, 0));
    check_round_trip(cfg);
    assert_ok(dsa_config_parse(cfg, hf_v32, "hf.json", NULL, 0));
    check_round_trip(cfg);
    assert_ok(dsa_config_parse(cfg, hf_v2_lite, "v2.json", NULL, 0));
    check_round_trip(cfg);
    assert_ok(dsa_config_parse(cfg, "{\"model_type\": \"deepseek_v3\"}", "norope.json", NULL, 0));
    check_round_trip(cfg);
    const char *odd[] = {"optimizer.lr=0.30000000000000004", "optimizer.min_lr=1e-300", "data.seed=9007199254740992",
                         "model.rope_scaling={\"type\": null, \"beta_fast\": 7}"};
    assert_ok(dsa_config_load(cfg, NULL, odd, 4));
    assert_true(cfg->model.rope_scaling.beta_fast == 32.0); /* reset with type null */
    check_round_trip(cfg);
    assert_ok(dsa_config_defaults(cfg));
    check_round_trip(cfg);
    free(cfg);
}

static void test_stage_inheritance(void **state) {
    (void)state;
    const char *text =
        "{\"model\": {\"index_topk\": 32}, \"data\": {\"seq_len\": 512},"
        " \"optimizer\": {\"lr\": 2e-4, \"lr_warmup_steps\": 5, \"lr_schedule\": \"cosine\"},"
        " \"train\": {\"steps\": 77, \"global_batch\": 8},"
        " \"stages\": [{\"name\": \"a\"}, {\"name\": \"b\", \"lr\": 1e-5, \"steps\": 3, \"lr_warmup_steps\": 1,"
        " \"attention\": \"sparse\", \"trainable\": \"indexer\", \"seq_len\": 64, \"index_topk\": 4,"
        " \"global_batch\": 2, \"lr_schedule\": \"constant\"}, {}]}";
    DsaConfig *cfg = cfg_new();
    assert_ok(dsa_config_parse(cfg, text, "stages.json", NULL, 0));
    assert_ok(dsa_config_validate(cfg));
    assert_int_equal(cfg->num_stages, 3);
    const DsaStageConfig *a = &cfg->stages[0], *b = &cfg->stages[1], *c = &cfg->stages[2];
    assert_string_equal(a->attention, "dense");
    assert_string_equal(a->trainable, "all");
    assert_int_equal(a->steps, 77);
    assert_true(a->lr == 2e-4);
    assert_int_equal(a->global_batch, 8);
    assert_int_equal(a->seq_len, 512);
    assert_int_equal(a->index_topk, 32);
    assert_int_equal(a->lr_warmup_steps, 5);
    assert_string_equal(a->lr_schedule, "cosine");
    assert_int_equal(b->steps, 3);
    assert_true(b->lr == 1e-5);
    assert_int_equal(b->global_batch, 2);
    assert_int_equal(b->seq_len, 64);
    assert_int_equal(b->index_topk, 4);
    assert_int_equal(b->lr_warmup_steps, 1);
    assert_string_equal(b->lr_schedule, "constant");
    assert_string_equal(b->attention, "sparse");
    assert_string_equal(b->trainable, "indexer");
    assert_string_equal(c->name, "stage2");

    /* no "stages": one dense, all-parameter stage "lm" of train.steps */
    assert_ok(dsa_config_parse(cfg, "{\"train\": {\"steps\": 12}}", "one.json", NULL, 0));
    assert_int_equal(cfg->num_stages, 1);
    assert_string_equal(cfg->stages[0].name, "lm");
    assert_string_equal(cfg->stages[0].attention, "dense");
    assert_string_equal(cfg->stages[0].trainable, "all");
    assert_int_equal(cfg->stages[0].steps, 12);
    free(cfg);
}

/* HF semantics for raw config.json files: no rope_scaling = no scaling. */
static void test_hf_rope_semantics(void **state) {
    (void)state;
    DsaConfig *cfg = cfg_new();
    assert_ok(dsa_config_parse(cfg, "{\"model_type\": \"deepseek_v3\"}", "norope.json", NULL, 0));
    assert_string_equal(cfg->model.rope_scaling.type, "");
    assert_close(dsa_model_softmax_scale(&cfg->model), 1.0 / sqrt(192.0), 1e-15);
    assert_ok(dsa_config_parse(cfg, "{\"model_type\": \"deepseek_v3\", \"rope_scaling\": {\"type\": \"yarn\", "
                                    "\"factor\": 40, \"original_max_position_embeddings\": 4096}}",
                               "nomscale.json", NULL, 0));
    assert_true(cfg->model.rope_scaling.mscale_all_dim == 0.0); /* HF: no softmax correction */
    assert_close(dsa_model_softmax_scale(&cfg->model), 1.0 / sqrt(192.0), 1e-15);
    /* our format keeps the V3 default YaRN when the key is absent */
    assert_ok(dsa_config_parse(cfg, "{\"model\": {}}", "ours.json", NULL, 0));
    assert_string_equal(cfg->model.rope_scaling.type, "yarn");
    assert_true(cfg->model.rope_scaling.mscale_all_dim == 1.0);
    /* newer transformers spell the type rope_type */
    assert_ok(dsa_config_parse(cfg, "{\"model_type\": \"deepseek_v3\", \"rope_scaling\": {\"rope_type\": \"yarn\", "
                                    "\"type\": \"yarn\", \"factor\": 8}}",
                               "new.json", NULL, 0));
    assert_true(cfg->model.rope_scaling.factor == 8.0);
    free(cfg);
}

static void test_derived_constants(void **state) {
    (void)state;
    DsaConfig *cfg = cfg_new();
    assert_ok(dsa_config_load(cfg, "configs/deepseek-v3.2.json", NULL, 0));
    const DsaModelConfig *m = &cfg->model;
    assert_close(dsa_yarn_mscale(40.0, 1.0), 1.3688879454, 1e-9);
    assert_close(dsa_model_softmax_scale(m), 0.1352337789, 1e-9);
    /* the spec prints 10 decimals: within half a unit of the last one, and exactly 8192^-1/2 */
    assert_true(fabs(dsa_model_indexer_scale(m) - 0.0110485435) <= 5e-11);
    assert_close(dsa_model_indexer_scale(m), 1.0 / sqrt(8192.0), 1e-15);
    int low = -1, high = -1;
    dsa_model_yarn_bounds(m, &low, &high);
    assert_int_equal(low, 10);
    assert_int_equal(high, 23);
    assert_int_equal(dsa_model_indexer_param_count(m), 13959424);
    DsaParamCounts pc;
    dsa_model_param_counts(m, &pc);
    assert_int_equal(pc.indexer, 61LL * 13959424);
    int64_t dense_total = pc.total - pc.indexer; /* DeepSeek-V3: 671B without MTP */
    assert_int_equal(dense_total, 671026419200LL);
    assert_int_equal(dsa_model_param_count(m), pc.total);
    assert_true(pc.mtp > 11000000000LL && pc.mtp < 15000000000LL);
    print_message("671B: total %lld (indexers %lld), MTP %lld\n", (long long)pc.total, (long long)pc.indexer,
                  (long long)pc.mtp);
    assert_true(dsa_model_layer_is_moe(m, 3) && !dsa_model_layer_is_moe(m, 2));

    assert_ok(dsa_config_load(cfg, "configs/tiny.json", NULL, 0));
    dsa_model_yarn_bounds(&cfg->model, &low, &high);
    assert_int_equal(low, 0);
    assert_int_equal(high, 3);
    assert_close(dsa_model_indexer_scale(&cfg->model), 1.0 / sqrt(128.0), 1e-15);
    double ms = 0.1 * log(8.0) + 1.0;
    assert_close(dsa_model_softmax_scale(&cfg->model), ms * ms / sqrt(48.0), 1e-15);
    /* wq_b 96x128 + wk 256x32 + k_norm 2x32 + weights_proj 256x4 */
    assert_int_equal(dsa_model_indexer_param_count(&cfg->model), 96 * 128 + 256 * 32 + 64 + 256 * 4);
    free(cfg);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shipped_configs),
        cmocka_unit_test(test_hf_config_json),
        cmocka_unit_test(test_v2_lite),
        cmocka_unit_test(test_reference_spelling),
        cmocka_unit_test(test_unknown_keys),
        cmocka_unit_test(test_override_blame),
        cmocka_unit_test(test_wrong_types),
        cmocka_unit_test(test_bad_json_and_missing_file),
        cmocka_unit_test(test_overrides),
        cmocka_unit_test(test_validation),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_stage_inheritance),
        cmocka_unit_test(test_hf_rope_semantics),
        cmocka_unit_test(test_derived_constants),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    test_tmpdir_remove();
    return failed;
}
