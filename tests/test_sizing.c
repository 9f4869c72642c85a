/* test_sizing.c: overflow-safe sizing (core/checked.h, pretrain/sizing.h): the checked
 * helpers; the sizes dsa_sizing_train reports are what the trainer allocates (the
 * parameter table, the model's buffers, the workspace dsa_model_reserve lays out); an
 * overflowing parameter table or workspace is refused, naming the tensor or the token
 * count, and never allocated; the refusals name the keys. The extremes of every integer
 * key through `dsa config --check` are tests/cli/test_config_check.sh. */
#include "core/checked.h"
#include "kernels/backend.h"
#include "pretrain/model.h"
#include "pretrain/params.h"
#include "pretrain/sizing.h"
#include "test_util.h"

static void test_checked_helpers(void **state) {
    (void)state;
    int64_t r = 0;
    assert_true(dsa_mul_i64(INT64_MAX / 2, 2, &r) && r == INT64_MAX - 1);
    assert_false(dsa_mul_i64(INT64_MAX / 2 + 1, 2, &r));
    assert_false(dsa_mul_i64(-2, INT64_MAX / 2 + 2, &r));
    assert_true(dsa_add_i64(INT64_MAX - 1, 1, &r) && r == INT64_MAX);
    assert_false(dsa_add_i64(INT64_MAX, 1, &r));
    bool of = false;
    assert_int_equal(dsa_mul_sticky(3, 4, &of), 12);
    assert_false(of);
    assert_int_equal(dsa_mul_sticky((int64_t)1 << 40, (int64_t)1 << 30, &of), INT64_MAX);
    assert_true(of);
    assert_int_equal(dsa_add_sticky(1, 1, &of), INT64_MAX); /* sticky: stays overflowed */
}

/* The figures are the trainer's own allocations. */
static void test_sizes_are_the_trainers(void **state) {
    (void)state;
    DsaConfig *cfg = test_tiny_model_config(16);
    cfg->train.micro_batch = 2;
    cfg->train.global_batch = 4;
    assert_ok(dsa_config_validate(cfg));
    DsaSizing z;
    assert_ok(dsa_sizing_train(cfg, &z));
    DsaModel m;
    assert_ok(dsa_model_init(&m, &cfg->model, dsa_backend_cpu()));
    assert_int_equal(z.parameters, dsa_model_param_count(&cfg->model));
    assert_int_equal(z.tensors, m.table.count);
    assert_int_equal(z.param_bytes, m.table.total * (int64_t)sizeof(float));
    assert_int_equal(z.optimizer_bytes, 3 * z.param_bytes);
    assert_ok(dsa_model_reserve(&m, 2, 16));
    assert_int_equal(z.workspace_bytes, m.arena_floats * (int64_t)sizeof(float));
    assert_int_equal(z.token_bytes, 2 * 16 * 8 + (cfg->data.prefetch + 1) * 17 * 4);
    assert_int_equal(z.step_bytes, 4 * z.param_bytes + z.workspace_bytes + z.token_bytes);
    dsa_model_free(&m);
    dsa_free(cfg, sizeof *cfg);
}

static void test_overflow_refused(void **state) {
    (void)state;
    DsaConfig *cfg = test_tiny_model_config(16);
    /* a workspace whose size overflows is -1, and reserve refuses it without allocating */
    assert_int_equal(dsa_model_workspace_bytes(&cfg->model, (int64_t)1 << 32, (int64_t)1 << 32, 0), -1);
    assert_int_equal(dsa_model_workspace_bytes(&cfg->model, (int64_t)1 << 20, (int64_t)1 << 30, 0), -1);
    assert_true(dsa_model_workspace_bytes(&cfg->model, 1, 16, 0) > 0);
    DsaModel m;
    assert_ok(dsa_model_init(&m, &cfg->model, dsa_backend_cpu()));
    assert_fails_with(dsa_model_reserve(&m, (int64_t)1 << 32, (int64_t)1 << 32),
                      DSA_ERR_RANGE, "overflows 64 bits");
    assert_fails_with(dsa_model_reserve(&m, (int64_t)1 << 20, (int64_t)1 << 30), DSA_ERR_RANGE,
                      "workspace size overflows 64-bit arithmetic");
    assert_null(m.arena);
    dsa_model_free(&m);
    /* a tensor whose element count overflows is named */
    cfg->model.vocab_size = (int64_t)1 << 52;
    cfg->model.hidden_size = (int64_t)1 << 20;
    DsaParamTable t;
    assert_fails_with(dsa_param_table_build(&t, &cfg->model), DSA_ERR_CONFIG,
                      "tensor model.embed_tokens.weight [4503599627370496, 1048576]: its element count");
    /* and --check's sizing names the key */
    cfg->model.vocab_size = 32;
    cfg->model.hidden_size = 16;
    cfg->model.intermediate_size = (int64_t)1 << 40;
    snprintf(cfg->source, sizeof cfg->source, "my-run.json");
    DsaSizing z;
    assert_fails_with(dsa_sizing_train(cfg, &z), DSA_ERR_CONFIG, "my-run.json: one fp32 copy of the model parameters");
    assert_non_null(strstr(dsa_error_message(), "one of: model.intermediate_size = 1099511627776"));
    dsa_free(cfg, sizeof *cfg);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_checked_helpers),
        cmocka_unit_test(test_sizes_are_the_trainers),
        cmocka_unit_test(test_overflow_refused),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    test_tmpdir_remove();
    return failed;
}
