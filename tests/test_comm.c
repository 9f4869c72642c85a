/* test_comm.c: the single-process parts of data parallelism (pretrain/comm.h, zero.h,
 * optim.h ranges; checkpoints/checkpoint.h join): the even split, the local communicator,
 * ZeRO-1 shards of AdamW that update exactly the bits of the whole optimizer, and a second
 * writer joining a checkpoint save. The multi-rank runs are tests/cli/test_mpi.sh. */
#include "checkpoints/checkpoint.h"
#include "core/fileutil.h"
#include "kernels/backend.h"
#include "kernels/device.h"
#include "kernels/comm.h"
#include "pretrain/optim.h"
#include "pretrain/params.h"
#include "pretrain/zero.h"
#include "test_util.h"

static void test_split_covers_evenly(void **state) {
    (void)state;
    const int64_t sizes[] = {0, 1, 7, 8, 1000003};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++)
        for (int world = 1; world <= 5; world++) {
            int64_t next = 0;
            for (int r = 0; r < world; r++) {
                int64_t lo, hi;
                dsa_comm_split(sizes[i], world, r, &lo, &hi);
                assert_int_equal(lo, next);
                assert_true(hi - lo == sizes[i] / world || hi - lo == sizes[i] / world + 1);
                next = hi;
            }
            assert_int_equal(next, sizes[i]);
        }
}

static void test_local_comm_is_identity(void **state) {
    (void)state;
    DsaComm *c = NULL;
    assert_ok(dsa_comm_init_local(&c));
    assert_int_equal(c->world, 1);
    assert_int_equal(c->rank, 0);
    assert_string_equal(c->kind, "local");
    float x[3] = {1, 2, 3};
    int64_t counts[1] = {3};
    assert_ok(c->ops->all_reduce_sum(c, x, 3, DSA_COMM_F32));
    assert_ok(c->ops->reduce_scatter_sum(c, x, counts, DSA_COMM_F32));
    assert_ok(dsa_zero_reduce_grads(c, x, 3));
    assert_ok(dsa_zero_gather_params(c, x, 3));
    assert_true(x[0] == 1 && x[1] == 2 && x[2] == 3);
    double y[2] = {0}, z[2] = {4, 5};
    assert_ok(c->ops->all_to_all(c, z, y, 2, DSA_COMM_F64));
    assert_true(y[0] == 4 && y[1] == 5);
    assert_ok(dsa_comm_check_same(c, 42, "a value"));
    dsa_comm_free(c);
}

/* ZeRO-1 on one process: the optimizers of three ranges, their squared norms summed as
 * the all-reduce would, give every weight and moment the bits of the whole optimizer. */
static void test_range_optimizers_match_whole(void **state) {
    (void)state;
    DsaConfig *cfg = test_tiny_model_config(8);
    DsaParamTable t;
    assert_ok(dsa_param_table_build(&t, &cfg->model));
    const DsaBackend *be = NULL;
    assert_ok(dsa_backend_get("cpu", &be));
    float *p_full = test_randn(t.total, 1, 0.02), *p_shard = test_randn(t.total, 1, 0.02);
    bool *trainable = dsa_calloc((size_t)t.count, sizeof(bool));
    for (int i = 0; i < t.count; i++) trainable[i] = i % 3 != 1; /* a mix, pieces cut through tensors */
    DsaOptimizer whole, part[3];
    assert_ok(dsa_optim_init(&whole, &t, be));
    int64_t lo[3], hi[3];
    for (int r = 0; r < 3; r++) {
        dsa_comm_split(t.total, 3, r, &lo[r], &hi[r]);
        assert_ok(dsa_optim_init_range(&part[r], &t, be, lo[r], hi[r]));
    }
    cfg->optimizer.grad_clip = 0.5; /* the clip is active: the global norm matters */
    for (int step = 0; step < 3; step++) {
        float *g_full = test_randn(t.total, 10 + (uint64_t)step, 1.0), *g_shard = test_randn(t.total, 10 + (uint64_t)step, 1.0);
        DsaOptimStepInfo info_full, info_part;
        dsa_optim_step(&whole, p_full, g_full, trainable, &cfg->optimizer, 1e-3, &info_full);
        double sumsq[DSA_GROUP_COUNT] = {0};
        bool active[DSA_GROUP_COUNT] = {0};
        for (int r = 0; r < 3; r++) dsa_optim_sumsq(&part[r], g_shard, trainable, sumsq, active);
        for (int r = 0; r < 3; r++)
            dsa_optim_apply(&part[r], p_shard, g_shard, trainable, &cfg->optimizer, 1e-3, sumsq, active, &info_part);
        assert_true(fabs(info_part.grad_norm[DSA_GROUP_MAIN] - info_full.grad_norm[DSA_GROUP_MAIN]) <=
                    1e-9 * info_full.grad_norm[DSA_GROUP_MAIN]);
        assert_true(info_full.clip_coef[DSA_GROUP_MAIN] < 1);
        free(g_full);
        free(g_shard);
        /* the clip coefficient may differ in its last bits (the norm's pieces sum in another
         * order); the weights agree to fp32 rounding of that coefficient */
        for (int64_t i = 0; i < t.total; i++) assert_true(fabsf(p_full[i] - p_shard[i]) <= 1e-6f);
    }
    for (int r = 0; r < 3; r++) {
        for (int64_t i = lo[r]; i < hi[r]; i++) assert_true(fabsf(part[r].m[i - lo[r]] - whole.m[i]) <= 1e-6f);
        assert_int_equal(part[r].group_steps[DSA_GROUP_MAIN], whole.group_steps[DSA_GROUP_MAIN]);
        dsa_optim_free(&part[r]);
    }
    dsa_optim_free(&whole);
    free(p_full);
    free(p_shard);
    dsa_free(trainable, (size_t)t.count * sizeof(bool));
    dsa_param_table_free(&t);
    dsa_free(cfg, sizeof *cfg);
}

/* One range holding everything is the whole optimizer, bit for bit (the one-rank run). */
static void test_full_range_is_bitwise(void **state) {
    (void)state;
    DsaConfig *cfg = test_tiny_model_config(8);
    DsaParamTable t;
    assert_ok(dsa_param_table_build(&t, &cfg->model));
    const DsaBackend *be = NULL;
    assert_ok(dsa_backend_get("cpu", &be));
    float *a = test_randn(t.total, 3, 0.02), *b = test_randn(t.total, 3, 0.02);
    float *ga = test_randn(t.total, 4, 1.0), *gb = test_randn(t.total, 4, 1.0);
    bool *trainable = dsa_calloc((size_t)t.count, sizeof(bool));
    for (int i = 0; i < t.count; i++) trainable[i] = true;
    DsaOptimizer o1, o2;
    assert_ok(dsa_optim_init(&o1, &t, be));
    assert_ok(dsa_optim_init_range(&o2, &t, be, 0, t.total));
    DsaOptimStepInfo i1, i2;
    dsa_optim_step(&o1, a, ga, trainable, &cfg->optimizer, 1e-3, &i1);
    double sumsq[DSA_GROUP_COUNT] = {0};
    bool active[DSA_GROUP_COUNT] = {0};
    dsa_optim_sumsq(&o2, gb, trainable, sumsq, active);
    dsa_optim_apply(&o2, b, gb, trainable, &cfg->optimizer, 1e-3, sumsq, active, &i2);
    assert_memory_equal(a, b, (size_t)t.total * sizeof(float));
    assert_memory_equal(o1.v, o2.v, (size_t)t.total * sizeof(float));
    dsa_optim_free(&o1);
    dsa_optim_free(&o2);
    free(a), free(b), free(ga), free(gb);
    dsa_free(trainable, (size_t)t.count * sizeof(bool));
    dsa_param_table_free(&t);
    dsa_free(cfg, sizeof *cfg);
}

/* A second writer joins a save: its file is in the manifest; a bad directory is refused. */
static void test_checkpoint_join(void **state) {
    (void)state;
    const char *out = test_path("joined-run");
    DsaCheckpointWriter w0, w1;
    assert_ok(dsa_checkpoint_begin(&w0, out, "step-1"));
    assert_ok(dsa_checkpoint_join(&w1, out, "step-1", w0.tmp_dir));
    assert_ok(dsa_checkpoint_write_text(&w1, "rank1.txt", "from rank 1\n"));
    assert_ok(dsa_checkpoint_write_text(&w0, "rank0.txt", "from rank 0\n"));
    dsa_checkpoint_abort(&w1); /* a joined writer leaves the directory to its owner */
    struct stat sb;
    assert_int_equal(stat(w0.tmp_dir, &sb), 0);
    assert_ok(dsa_checkpoint_commit(&w0));
    char path[2048], *text = NULL;
    size_t len = 0;
    snprintf(path, sizeof path, "%s/step-1/manifest.json", out);
    assert_ok(dsa_file_read_all(path, &text, &len));
    assert_non_null(strstr(text, "rank1.txt"));
    dsa_free(text, len + 1);
    bool verified = false;
    snprintf(path, sizeof path, "%s/step-1", out);
    assert_ok(dsa_checkpoint_verify(path, &verified));
    assert_true(verified);
    assert_fails_with(dsa_checkpoint_join(&w1, out, "step-2", "/elsewhere/.tmp-step-2-1"), DSA_ERR_ARG,
                      "not the temporary directory of checkpoint step-2");
    snprintf(path, sizeof path, "%s/.tmp-step-2-999999", out);
    assert_fails_with(dsa_checkpoint_join(&w1, out, "step-2", path), DSA_ERR_IO, "shared file system");
}

/* The NCCL communicator at world 1 on GPU 0 (kernels/comm_nccl.c), wherever a GPU is. */
static void test_nccl_world1(void **state) {
    (void)state;
    DsaCudaInfo info;
    dsa_device_cuda_query(&info);
    if (info.device_count < 1) {
        printf("# SKIP NCCL communicator: no GPU (%s)\n", info.why_unavailable);
        skip();
    }
    DsaComm *c = NULL;
    assert_ok(dsa_comm_init_local(&c));
    DsaStatus st = dsa_comm_nccl_selftest(c, 0);
    if (st == DSA_ERR_CONFIG && strstr(dsa_error_message(), "no NCCL")) {
        printf("# SKIP NCCL communicator: %s\n", dsa_error_message());
        dsa_comm_free(c);
        skip();
    }
    assert_ok(st);
    dsa_comm_free(c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split_covers_evenly),
        cmocka_unit_test(test_local_comm_is_identity),
        cmocka_unit_test(test_range_optimizers_match_whole),
        cmocka_unit_test(test_full_range_is_bitwise),
        cmocka_unit_test(test_checkpoint_join),
        cmocka_unit_test(test_nccl_world1),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    test_tmpdir_remove();
    return rc;
}
