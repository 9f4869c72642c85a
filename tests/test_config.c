/* test_config.c: core/config: the shipped configs, the HF config.json and reference-code
 * shapes, the JSON round trip and hash, stage inheritance, HF RoPE semantics and the
 * derived constants of DSA-SPEC §2; the error messages, --set overrides and validation
 * rules are in test_config_errors.c. Run from the repository root. */
#include "tests/test_config_util.h"

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
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_stage_inheritance),
        cmocka_unit_test(test_hf_rope_semantics),
        cmocka_unit_test(test_derived_constants),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    test_tmpdir_remove();
    return failed;
}
