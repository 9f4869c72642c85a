/* test_config_errors.c: core/config's messages and rules: unknown keys with suggestions,
 * the --set override behind a value named in errors, wrong types, bad JSON and missing
 * files, --set overrides, and the validation rules (each failing with its message, each
 * shipped config passing and round-tripping). Run from the repository root. */
#include "tests/test_config_util.h"

#include "core/mem.h"

/* Load tiny.json with one override, then check validation fails with `needle`. */
static void expect_invalid(const char *set, const char *needle) {
    DsaConfig *cfg = cfg_new();
    const char *sets[] = {set};
    assert_ok(dsa_config_load(cfg, "configs/tiny.json", sets, 1));
    assert_fails_with(dsa_config_validate(cfg), DSA_ERR_CONFIG, needle);
    free(cfg);
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

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unknown_keys),
        cmocka_unit_test(test_override_blame),
        cmocka_unit_test(test_wrong_types),
        cmocka_unit_test(test_bad_json_and_missing_file),
        cmocka_unit_test(test_overrides),
        cmocka_unit_test(test_validation),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    test_tmpdir_remove();
    return failed;
}
