/* test_trainer.c: `dsa train` as a library call (pretrain/trainer.h) on generated
 * synthetic shards: the loss falls; equal seeds give equal losses; 20 steps equal 10
 * steps, a stop, a resume and 10 more, bit for bit (weights, moments, losses); corrupt,
 * truncated, incomplete or mismatched checkpoints are refused naming the file or key;
 * a used run directory is not overwritten; unsupported stages are refused by name. */
#include <math.h>
#include <sys/stat.h>

#include "core/config.h"
#include "core/fileutil.h"
#include "core/mem.h"
#include "data/pack.h"
#include "pretrain/model_io.h"
#include "pretrain/params.h"
#include "pretrain/trainer.h"
#include "test_util.h"

static const char *data_glob(void) { return test_path("data/syn-*.h5"); }

static int setup_data(void **state) {
    (void)state;
    DsaPackOptions o;
    dsa_pack_options_default(&o);
    o.format = DSA_PACK_SYNTHETIC;
    char prefix[512];
    snprintf(prefix, sizeof prefix, "%s", test_path("data/syn"));
    if (dsa_mkdir_p(test_path("data")) != DSA_OK) return -1;
    o.out_prefix = prefix;
    o.synthetic.task = DSA_SYN_TASK_MIXED;
    o.synthetic.doc_tokens = 512;
    o.synthetic.total_tokens = 64 * 512;
    o.synthetic.n_distances = 2;
    o.synthetic.distances[0] = 8;
    o.synthetic.distances[1] = 24;
    o.synthetic.vocab_size = 64;
    o.synthetic.queries_per_doc = 4;
    o.synthetic.seed = 3;
    o.vocab_size = 64;
    if (dsa_pack_run(&o, NULL) != DSA_OK) {
        fprintf(stderr, "%s\n", dsa_error_message());
        return -1;
    }
    return 0;
}

/* A small dense model on the synthetic data, writing to `out`. */
static DsaConfig *config_for(const char *out, const char *const *extra, int n_extra) {
    char json[4096];
    snprintf(json, sizeof json,
             "{\"model\": {\"vocab_size\": 64, \"hidden_size\": 32, \"intermediate_size\": 64,"
             " \"num_hidden_layers\": 2, \"num_attention_heads\": 2, \"q_lora_rank\": 16, \"kv_lora_rank\": 16,"
             " \"qk_nope_head_dim\": 8, \"qk_rope_head_dim\": 8, \"v_head_dim\": 8, \"n_routed_experts\": null,"
             " \"first_k_dense_replace\": 0, \"index_topk\": null, \"max_position_embeddings\": 256,"
             " \"num_nextn_predict_layers\": 0, \"quantization_config\": null,"
             " \"rope_scaling\": {\"type\": \"yarn\", \"factor\": 4, \"original_max_position_embeddings\": 64,"
             " \"beta_fast\": 32, \"beta_slow\": 1, \"mscale\": 1, \"mscale_all_dim\": 1}},"
             " \"data\": {\"train\": [\"%s\"], \"seq_len\": 32, \"seed\": 5, \"prefetch\": 1},"
             " \"optimizer\": {\"lr\": 3e-3, \"lr_warmup_steps\": 3, \"lr_schedule\": \"cosine\", \"min_lr\": 3e-4},"
             " \"train\": {\"out_dir\": \"%s\", \"seed\": 1, \"global_batch\": 4, \"micro_batch\": 2,"
             " \"steps\": 20, \"checkpoint_every\": 5, \"log_every\": 5, \"threads\": 2}}",
             data_glob(), out);
    DsaConfig *cfg = dsa_calloc(1, sizeof *cfg);
    assert_non_null(cfg);
    assert_ok(dsa_config_parse(cfg, json, "test-config", extra, n_extra));
    return cfg;
}

static DsaStatus train(const char *out, const DsaTrainOptions *opts, const char *const *extra, int n_extra) {
    DsaConfig *cfg = config_for(out, extra, n_extra);
    DsaTrainResult res;
    DsaStatus st = dsa_train(cfg, opts, &res);
    dsa_free(cfg, sizeof *cfg);
    return st;
}

/* The "loss" values of metrics.jsonl, in order. */
static int read_losses(const char *out, double *losses, int cap) {
    char path[600];
    snprintf(path, sizeof path, "%s/metrics.jsonl", out);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char line[2048];
    int n = 0;
    long long prev = 0;
    while (fgets(line, sizeof line, f) && n < cap) {
        const char *s = strstr(line, "\"step\":"), *l = strstr(line, "\"loss\":");
        assert_non_null(s);
        assert_non_null(l);
        long long step = strtoll(s + 7, NULL, 10);
        assert_int_equal(step, prev + 1); /* one line per step, no gaps or repeats */
        prev = step;
        losses[n++] = strtod(l + 7, NULL);
    }
    fclose(f);
    return n;
}

static bool files_equal(const char *a, const char *b) {
    char *x = NULL, *y = NULL;
    size_t nx = 0, ny = 0;
    assert_ok(dsa_file_read_all(a, &x, &nx));
    assert_ok(dsa_file_read_all(b, &y, &ny));
    bool same = nx == ny && memcmp(x, y, nx) == 0;
    dsa_free(x, nx + 1);
    dsa_free(y, ny + 1);
    return same;
}

static void test_loss_falls_and_is_deterministic(void **state) {
    (void)state;
    DsaTrainOptions opts = {.progress = 0};
    const char *a = test_path("run-a"), *c = test_path("run-c"), *d = test_path("run-d");
    assert_ok(train(a, &opts, NULL, 0));
    assert_ok(train(c, &opts, NULL, 0));
    double la[32], lc[32], ld[32];
    assert_int_equal(read_losses(a, la, 32), 20);
    assert_int_equal(read_losses(c, lc, 32), 20);
    for (int i = 0; i < 20; i++)
        if (memcmp(&la[i], &lc[i], sizeof la[i]) != 0) fail_msg("step %d: loss %.9g vs %.9g with equal seeds", i + 1, la[i], lc[i]);
    double last = (la[15] + la[16] + la[17] + la[18] + la[19]) / 5;
    print_message("loss %.4f at step 1, %.4f over steps 16-20\n", la[0], last);
    assert_true(fabs(la[0] - log(64.0)) < 0.1);
    assert_true(last < la[0] - 0.8);
    const char *seed2[] = {"train.seed=2"};
    assert_ok(train(d, &opts, seed2, 1));
    assert_int_equal(read_losses(d, ld, 32), 20);
    assert_true(memcmp(la, ld, sizeof(double) * 20) != 0);
}

static void test_resume_is_bit_exact(void **state) {
    (void)state;
    DsaTrainOptions opts = {.progress = 0};
    const char *a = test_path("run-a"), *b = test_path("run-b");
    struct stat sb;
    if (stat(a, &sb) != 0) assert_ok(train(a, &opts, NULL, 0));
    DsaTrainOptions stop = {.stop_at = 10};
    assert_ok(train(b, &stop, NULL, 0));
    DsaTrainOptions resume = {.resume = true};
    assert_ok(train(b, &resume, NULL, 0));
    char pa[700], pb[700];
    for (int i = 0; i < 2; i++) {
        const char *f = i ? "optimizer.safetensors" : "model.safetensors";
        snprintf(pa, sizeof pa, "%s/step-00000020/%s", a, f);
        snprintf(pb, sizeof pb, "%s/step-00000020/%s", b, f);
        if (!files_equal(pa, pb)) fail_msg("%s differs between the straight and the resumed run", f);
    }
    double la[32], lb[32];
    assert_int_equal(read_losses(a, la, 32), 20);
    assert_int_equal(read_losses(b, lb, 32), 20);
    assert_memory_equal(la, lb, sizeof(double) * 20);
    char *latest = NULL;
    size_t n = 0;
    snprintf(pb, sizeof pb, "%s/latest", b);
    assert_ok(dsa_file_read_all(pb, &latest, &n));
    assert_string_equal(latest, "step-00000020\n");
    dsa_free(latest, n + 1);
}

/* Overwrite `len` bytes at `offset` (negative: from the end) or truncate by -len. */
static void damage(const char *path, long offset, int truncate_by) {
    if (truncate_by) {
        struct stat sb;
        assert_int_equal(stat(path, &sb), 0);
        assert_int_equal(truncate(path, sb.st_size - truncate_by), 0);
        return;
    }
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    fseek(f, offset, offset < 0 ? SEEK_END : SEEK_SET);
    int ch = fgetc(f);
    fseek(f, -1, SEEK_CUR);
    fputc(ch ^ 0x5a, f);
    fclose(f);
}

static void test_bad_checkpoints_refused(void **state) {
    (void)state;
    const char *out = test_path("run-bad");
    char path[700];
    DsaTrainOptions stop = {.stop_at = 5}, resume = {.resume = true};
    const char *cases[][2] = {
        {"model.safetensors", "model.safetensors"},
        {"optimizer.safetensors", "optimizer.safetensors"},
        {"trainer_state.json", "trainer_state.json"},
    };
    for (int c = 0; c < 3; c++) {
        char dir[600];
        snprintf(dir, sizeof dir, "%s-%d", out, c);
        assert_ok(train(dir, &stop, NULL, 0));
        snprintf(path, sizeof path, "%s/step-00000005/%s", dir, cases[c][0]);
        if (c == 0) damage(path, -7, 0);      /* a flipped byte in the weights */
        if (c == 1) damage(path, 0, 100);     /* a truncated file */
        if (c == 2) assert_int_equal(unlink(path), 0); /* a missing file */
        assert_fails_with(train(dir, &resume, NULL, 0), DSA_ERR_FORMAT, cases[c][1]);
    }
    /* a different model is refused naming the key */
    char dir[600];
    snprintf(dir, sizeof dir, "%s-model", out);
    assert_ok(train(dir, &stop, NULL, 0));
    const char *wider[] = {"model.intermediate_size=96"};
    assert_fails_with(train(dir, &resume, wider, 1), DSA_ERR_CONFIG, "model.intermediate_size differs");
    /* starting fresh over a used run directory is refused */
    assert_fails_with(train(dir, &stop, NULL, 0), DSA_ERR_CONFIG, "--resume");
    /* resuming where nothing was saved names the directory */
    assert_fails_with(train(test_path("run-none"), &resume, NULL, 0), DSA_ERR_IO, "run-none");
}

/* The two-stage DSA recipe on the small model: indexer warm-up (dense, model frozen) for
 * 6 steps, then sparse top-8 training of everything for 6 steps (seq_len 32 > k). */
static const char *const dsa_overrides[] = {
    "model.model_type=deepseek_v32", "model.index_topk=8", "model.index_n_heads=2", "model.index_head_dim=8",
    "stages=[{\"name\": \"warmup\", \"attention\": \"dense\", \"trainable\": \"indexer\", \"steps\": 6, "
    "\"lr\": 1e-2}, {\"name\": \"sparse\", \"attention\": \"sparse\", \"trainable\": \"all\", \"steps\": 6, "
    "\"lr\": 1e-3, \"lr_warmup_steps\": 2}]",
    "train.checkpoint_every=3",
};
enum { DSA_OVERRIDES = sizeof dsa_overrides / sizeof dsa_overrides[0] };

/* A metrics.jsonl number field of line `line` (1-based). */
static double metric_at(const char *out, int line, const char *key) {
    char path[600], buf[4096], pat[64];
    snprintf(path, sizeof path, "%s/metrics.jsonl", out);
    snprintf(pat, sizeof pat, "\"%s\":", key);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    double v = NAN;
    for (int i = 1; fgets(buf, sizeof buf, f); i++) {
        const char *p = strstr(buf, pat);
        if (i == line && p) v = strtod(p + strlen(pat) + (p[strlen(pat)] == '[' ? 1 : 0), NULL);
    }
    fclose(f);
    return v;
}

static void test_two_stage_dsa(void **state) {
    (void)state;
    char a[600];
    snprintf(a, sizeof a, "%s", test_path("run-dsa-a"));
    DsaTrainOptions opts = {.progress = 0};
    assert_ok(train(a, &opts, dsa_overrides, DSA_OVERRIDES));
    /* warm-up: the frozen model is bit-identical to its initialization (DSA-SPEC §6.2) */
    DsaConfig *cfg = config_for(a, dsa_overrides, DSA_OVERRIDES);
    DsaParamTable t;
    assert_ok(dsa_param_table_build(&t, &cfg->model));
    float *init = dsa_malloc((size_t)t.total * sizeof(float)), *saved = dsa_malloc((size_t)t.total * sizeof(float));
    dsa_param_init(&t, init, (uint64_t)cfg->train.seed, cfg->model.initializer_range);
    char path[700];
    snprintf(path, sizeof path, "%s/step-00000006/model.safetensors", a);
    assert_ok(dsa_model_read_tensors(path, &t, "", saved, false));
    int changed_indexer = 0;
    for (int i = 0; i < t.count; i++) {
        const DsaParamInfo *p = &t.info[i];
        bool same = !memcmp(init + p->offset, saved + p->offset, (size_t)p->numel * sizeof(float));
        if (p->group == DSA_GROUP_MAIN && !same) fail_msg("%s changed during the warm-up", p->name);
        changed_indexer += p->group == DSA_GROUP_INDEXER && !same;
    }
    assert_int_equal(changed_indexer, 2 * 5);
    /* after the sparse stage the main model has moved */
    snprintf(path, sizeof path, "%s/step-00000012/model.safetensors", a);
    assert_ok(dsa_model_read_tensors(path, &t, "", saved, false));
    const DsaParamInfo *o = dsa_param_find(&t, "model.layers.1.self_attn.o_proj.weight");
    assert_true(memcmp(init + o->offset, saved + o->offset, (size_t)o->numel * sizeof(float)) != 0);
    dsa_free(init, (size_t)t.total * sizeof(float));
    dsa_free(saved, (size_t)t.total * sizeof(float));
    dsa_param_table_free(&t);
    dsa_free(cfg, sizeof *cfg);
    /* metrics: the indexer fields; the warm-up lowers the KL; the sparse stage attends k keys */
    double kl1 = metric_at(a, 1, "indexer_loss"), kl6 = metric_at(a, 6, "indexer_loss");
    double sel7 = metric_at(a, 7, "selected"), rec6 = metric_at(a, 6, "recall");
    print_message("indexer KL %.4f -> %.4f over the warm-up; recall (layer 0) %.3f; keys attended %.2f\n", kl1,
                  kl6, rec6, sel7);
    assert_true(kl6 < kl1);
    assert_true(rec6 > 0.0 && rec6 <= 1.0 + 1e-6);
    /* rows t < 8 attend t + 1 keys, the others 8: mean (1+...+8 + 24·8) / 32 = 7.125 */
    assert_true(fabs(sel7 - 7.125) < 1e-9);
    /* resume before, at and after the switch continues bit for bit */
    const int stops[] = {5, 6, 7};
    for (int i = 0; i < 3; i++) {
        char b[600];
        snprintf(b, sizeof b, "%s-%d", test_path("run-dsa-b"), stops[i]);
        DsaTrainOptions stop = {.stop_at = stops[i]}, resume = {.resume = true};
        assert_ok(train(b, &stop, dsa_overrides, DSA_OVERRIDES));
        assert_ok(train(b, &resume, dsa_overrides, DSA_OVERRIDES));
        char pa[700], pb[700];
        for (int f = 0; f < 2; f++) {
            const char *name = f ? "optimizer.safetensors" : "model.safetensors";
            snprintf(pa, sizeof pa, "%s/step-00000012/%s", a, name);
            snprintf(pb, sizeof pb, "%s/step-00000012/%s", b, name);
            if (!files_equal(pa, pb)) fail_msg("%s differs after a stop at step %d and a resume", name, stops[i]);
        }
        double la[16], lb[16];
        assert_int_equal(read_losses(a, la, 16), 12);
        assert_int_equal(read_losses(b, lb, 16), 12);
        assert_memory_equal(la, lb, sizeof(double) * 12);
    }
}

static void test_unsupported_stages_refused(void **state) {
    (void)state;
    DsaTrainOptions opts = {0};
    const char *sparse[] = {"stages=[{\"name\": \"s\", \"attention\": \"sparse\", \"index_topk\": 4}]"};
    assert_fails_with(train(test_path("run-sparse"), &opts, sparse, 1), DSA_ERR_CONFIG, "dsa convert --add-indexer");
    const char *nodata[] = {"data.train=[]"};
    assert_fails_with(train(test_path("run-nodata"), &opts, nodata, 1), DSA_ERR_CONFIG, "data.train");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_loss_falls_and_is_deterministic),
        cmocka_unit_test(test_resume_is_bit_exact),
        cmocka_unit_test(test_bad_checkpoints_refused),
        cmocka_unit_test(test_two_stage_dsa),
        cmocka_unit_test(test_unsupported_stages_refused),
    };
    int rc = cmocka_run_group_tests(tests, setup_data, NULL);
    test_tmpdir_remove();
    return rc;
}
