/* test_model.c: the dense DeepSeek-V3 model (pretrain/model.h, params.h) and AdamW
 * (pretrain/optim.h) on the CPU backend: the parameter table against the config's
 * counts and HF names, finite-difference gradients of the whole model (with and
 * without the query latent), frozen parameters, micro-batch equivalence, the workspace
 * growing linearly in L (memory rule), the LR schedule, clipping and AdamW groups. */
#include <math.h>

#include "core/config.h"
#include "core/mem.h"
#include "core/rng.h"
#include "kernels/backend.h"
#include "pretrain/model.h"
#include "pretrain/optim.h"
#include "pretrain/params.h"
#include "test_util.h"

static DsaConfig *small_config(bool q_lora) {
    DsaConfig *cfg = test_tiny_model_config(32);
    cfg->model.has_q_lora = q_lora;
    cfg->model.q_lora_rank = q_lora ? 8 : 0;
    assert_ok(dsa_config_validate(cfg));
    return cfg;
}

static void random_tokens(int32_t *x, int64_t n, int64_t vocab, uint64_t seed) {
    for (int64_t i = 0; i < n; i++) x[i] = (int32_t)(dsa_rng_u32_at(seed, 0, (uint64_t)i) % (uint64_t)vocab);
}

static double mean_loss(DsaModel *m, const int32_t *in, const int32_t *tgt, int64_t B, int64_t L) {
    double sum = 0;
    int64_t count = 0;
    assert_ok(dsa_model_forward(m, in, tgt, B, L, &sum, &count));
    return sum / (double)count;
}

/* ---- parameter table -------------------------------------------------------------- */

static void test_param_table(void **state) {
    (void)state;
    for (int ql = 0; ql < 2; ql++) {
        DsaConfig *cfg = small_config(ql);
        DsaParamTable t;
        assert_ok(dsa_param_table_build(&t, &cfg->model));
        int64_t numel = 0;
        for (int i = 0; i < t.count; i++) numel += t.info[i].numel;
        assert_int_equal(numel, dsa_model_param_count(&cfg->model));
        const DsaParamInfo *p = dsa_param_find(&t, "model.layers.1.self_attn.kv_b_proj.weight");
        assert_non_null(p);
        assert_int_equal(p->shape[0], 2 * (4 + 6));
        assert_int_equal(p->shape[1], 8);
        assert_true(p->decay);
        assert_false(dsa_param_find(&t, "model.layers.0.input_layernorm.weight")->decay);
        assert_true((dsa_param_find(&t, "model.layers.0.self_attn.q_proj.weight") != NULL) == !ql);
        assert_true((dsa_param_find(&t, "model.layers.0.self_attn.q_a_proj.weight") != NULL) == ql);
        assert_non_null(dsa_param_find(&t, "lm_head.weight"));
        assert_non_null(dsa_param_find(&t, "model.norm.weight"));
        dsa_param_table_free(&t);
        dsa_free(cfg, sizeof *cfg);
    }
}

static void test_unsupported_refused(void **state) {
    (void)state;
    DsaConfig *cfg = dsa_calloc(1, sizeof *cfg);
    assert_ok(dsa_config_load(cfg, "configs/tiny.json", NULL, 0));
    DsaParamTable t;
    /* the MoE DSA config builds (MoE layers: tests/test_moe.c, tests/test_moe_model.c) */
    assert_ok(dsa_param_table_build(&t, &cfg->model));
    assert_non_null(dsa_param_find(&t, "model.layers.1.mlp.experts.0.gate_proj.weight"));
    assert_non_null(dsa_param_find(&t, "model.layers.3.self_attn.indexer.wq_b.weight"));
    dsa_param_table_free(&t);
    /* without MoE the DSA model builds, with five indexer tensors per layer in their group */
    cfg->model.has_moe = false;
    assert_ok(dsa_param_table_build(&t, &cfg->model));
    const DsaParamInfo *wq = dsa_param_find(&t, "model.layers.3.self_attn.indexer.wq_b.weight");
    const DsaParamInfo *bias = dsa_param_find(&t, "model.layers.0.self_attn.indexer.k_norm.bias");
    assert_non_null(wq);
    assert_non_null(bias);
    assert_int_equal(wq->shape[0], 4 * 32);
    assert_int_equal(wq->shape[1], 96);
    assert_int_equal(wq->group, DSA_GROUP_INDEXER);
    assert_true(bias->is_bias && !bias->decay);
    assert_non_null(dsa_param_find(&t, "model.layers.2.self_attn.indexer.weights_proj.weight"));
    int64_t indexer_floats = 0;
    for (int i = 0; i < t.count; i++)
        if (t.info[i].group == DSA_GROUP_INDEXER) indexer_floats += t.info[i].numel;
    assert_int_equal(indexer_floats, 4 * dsa_model_indexer_param_count(&cfg->model));
    dsa_param_table_free(&t);
    cfg->model.tie_word_embeddings = true;
    assert_fails_with(dsa_param_table_build(&t, &cfg->model), DSA_ERR_CONFIG, "tie_word_embeddings");
    dsa_free(cfg, sizeof *cfg);
}

/* ---- gradients -------------------------------------------------------------------- */

/* Directional finite differences per tensor: along the gradient itself and along a
 * random direction, central differences of the mean loss (summed in double by the
 * cross-entropy). fp32 forward noise (~1e-6 of the loss) over 2·eps bounds what the
 * check can see; the tolerance is 1% of the tensor's gradient norm. */
static void check_model_gradients(bool q_lora) {
    DsaConfig *cfg = small_config(q_lora);
    DsaModel m;
    assert_ok(dsa_model_init(&m, &cfg->model, dsa_backend_cpu()));
    dsa_param_init(&m.table, m.params, 3, 0.3);
    /* non-trivial norm weights */
    for (int i = 0; i < m.table.count; i++) {
        const DsaParamInfo *p = &m.table.info[i];
        if (!p->is_norm) continue;
        for (int64_t j = 0; j < p->numel; j++)
            m.params[p->offset + j] = 1.0f + 0.3f * (float)dsa_rng_normal_at(9, (uint64_t)i, (uint64_t)j);
    }
    enum { B = 2, L = 7 };
    int32_t in[B * L], tgt[B * L];
    random_tokens(in, B * L, 32, 1);
    random_tokens(tgt, B * L, 32, 2);
    tgt[3] = -1; /* an ignored target */
    double sum = 0;
    int64_t count = 0;
    dsa_model_zero_grad(&m);
    assert_ok(dsa_model_forward(&m, in, tgt, B, L, &sum, &count));
    assert_int_equal(count, B * L - 1);
    dsa_model_backward(&m, (float)(1.0 / (double)count));

    const double eps = 3e-3;
    int failures = 0;
    for (int i = 0; i < m.table.count; i++) {
        const DsaParamInfo *p = &m.table.info[i];
        float *w = m.params + p->offset;
        const float *g = m.grads + p->offset;
        double gnorm = 0;
        for (int64_t j = 0; j < p->numel; j++) gnorm += (double)g[j] * g[j];
        gnorm = sqrt(gnorm);
        double *u = malloc(sizeof(double) * (size_t)p->numel);
        float *saved = malloc(sizeof(float) * (size_t)p->numel);
        memcpy(saved, w, sizeof(float) * (size_t)p->numel);
        for (int dir = 0; dir < 2; dir++) {
            double unorm = 0;
            for (int64_t j = 0; j < p->numel; j++) {
                u[j] = dir == 0 ? (double)g[j] : dsa_rng_normal_at(77, (uint64_t)i, (uint64_t)j);
                unorm += u[j] * u[j];
            }
            unorm = sqrt(unorm);
            if (unorm == 0) continue;
            double analytic = 0;
            for (int64_t j = 0; j < p->numel; j++) analytic += (double)g[j] * u[j] / unorm;
            double loss[2];
            for (int side = 0; side < 2; side++) {
                double e = side ? -eps : eps;
                for (int64_t j = 0; j < p->numel; j++) w[j] = (float)(saved[j] + e * u[j] / unorm);
                loss[side] = mean_loss(&m, in, tgt, B, L);
            }
            memcpy(w, saved, sizeof(float) * (size_t)p->numel);
            double fd = (loss[0] - loss[1]) / (2 * eps);
            double tol = 1e-2 * gnorm + 2e-4;
            if (fabs(fd - analytic) > tol) {
                print_message("gradient mismatch %s (%s direction): finite difference %.8g, analytic %.8g, |g| %.6g\n",
                              p->name, dir ? "random" : "gradient", fd, analytic, gnorm);
                failures++;
            }
        }
        free(u);
        free(saved);
    }
    assert_int_equal(failures, 0);
    dsa_model_free(&m);
    dsa_free(cfg, sizeof *cfg);
}

static void test_gradients_q_lora(void **state) {
    (void)state;
    check_model_gradients(true);
}

static void test_gradients_no_q_lora(void **state) {
    (void)state;
    check_model_gradients(false);
}

/* A frozen tensor gets no gradient; the others are unchanged bit for bit. */
static void test_requires_grad(void **state) {
    (void)state;
    DsaConfig *cfg = small_config(true);
    DsaModel m;
    assert_ok(dsa_model_init(&m, &cfg->model, dsa_backend_cpu()));
    dsa_param_init(&m.table, m.params, 5, 0.2);
    enum { B = 1, L = 9 };
    int32_t in[B * L], tgt[B * L];
    random_tokens(in, B * L, 32, 3);
    random_tokens(tgt, B * L, 32, 4);
    double sum;
    int64_t count;
    dsa_model_zero_grad(&m);
    assert_ok(dsa_model_forward(&m, in, tgt, B, L, &sum, &count));
    dsa_model_backward(&m, 0.1f);
    float *full = malloc(sizeof(float) * (size_t)m.table.total);
    memcpy(full, m.grads, sizeof(float) * (size_t)m.table.total);
    const DsaParamInfo *frozen = dsa_param_find(&m.table, "model.layers.0.self_attn.kv_b_proj.weight");
    const DsaParamInfo *emb = dsa_param_find(&m.table, "model.embed_tokens.weight");
    m.requires_grad[frozen - m.table.info] = false;
    m.requires_grad[emb - m.table.info] = false;
    dsa_model_zero_grad(&m);
    assert_ok(dsa_model_forward(&m, in, tgt, B, L, &sum, &count));
    dsa_model_backward(&m, 0.1f);
    for (int i = 0; i < m.table.count; i++) {
        const DsaParamInfo *p = &m.table.info[i];
        bool off = p == frozen || p == emb;
        for (int64_t j = 0; j < p->numel; j++) {
            float want = off ? 0.0f : full[p->offset + j];
            if (memcmp(&want, &m.grads[p->offset + j], sizeof want) != 0)
                fail_msg("%s[%lld]: %g, expected %g", p->name, (long long)j, m.grads[p->offset + j], want);
        }
    }
    free(full);
    dsa_model_free(&m);
    dsa_free(cfg, sizeof *cfg);
}

/* Two micro-batches of one sequence accumulate the gradient of one batch of two. */
static void test_micro_batches_accumulate(void **state) {
    (void)state;
    DsaConfig *cfg = small_config(true);
    DsaModel m;
    assert_ok(dsa_model_init(&m, &cfg->model, dsa_backend_cpu()));
    dsa_param_init(&m.table, m.params, 6, 0.2);
    enum { L = 11 };
    int32_t in[2 * L], tgt[2 * L];
    random_tokens(in, 2 * L, 32, 5);
    random_tokens(tgt, 2 * L, 32, 6);
    double sum_a = 0, sum_b = 0, s;
    int64_t c;
    dsa_model_zero_grad(&m);
    assert_ok(dsa_model_forward(&m, in, tgt, 2, L, &sum_a, &c));
    dsa_model_backward(&m, 0.5f);
    float *both = malloc(sizeof(float) * (size_t)m.table.total);
    memcpy(both, m.grads, sizeof(float) * (size_t)m.table.total);
    dsa_model_zero_grad(&m);
    for (int b = 0; b < 2; b++) {
        assert_ok(dsa_model_forward(&m, in + b * L, tgt + b * L, 1, L, &s, &c));
        dsa_model_backward(&m, 0.5f);
        sum_b += s;
    }
    assert_true(fabs(sum_a - sum_b) <= 1e-5 * fabs(sum_a));
    double worst = 0, gmax = 0;
    for (int64_t j = 0; j < m.table.total; j++) {
        worst = fmax(worst, fabs((double)both[j] - m.grads[j]));
        gmax = fmax(gmax, fabs((double)both[j]));
    }
    if (worst > 1e-5 * gmax) fail_msg("micro-batch gradients differ by %g (max |g| %g)", worst, gmax);
    free(both);
    dsa_model_free(&m);
    dsa_free(cfg, sizeof *cfg);
}

/* A fresh model predicts close to uniformly: loss ≈ ln V. */
static void test_initial_loss(void **state) {
    (void)state;
    DsaConfig *cfg = small_config(true);
    DsaModel m;
    assert_ok(dsa_model_init(&m, &cfg->model, dsa_backend_cpu()));
    dsa_param_init(&m.table, m.params, 7, 0.02);
    enum { L = 16 };
    int32_t in[L], tgt[L];
    random_tokens(in, L, 32, 7);
    random_tokens(tgt, L, 32, 8);
    double loss = mean_loss(&m, in, tgt, 1, L);
    assert_true(fabs(loss - log(32.0)) < 0.02);
    /* out-of-vocabulary input is a runtime error, not a crash */
    in[5] = 32;
    double sum;
    int64_t count;
    assert_fails_with(dsa_model_forward(&m, in, tgt, 1, L, &sum, &count), DSA_ERR_RANGE, "outside the vocabulary");
    dsa_model_free(&m);
    dsa_free(cfg, sizeof *cfg);
}

/* Memory rule: activations grow linearly in L (no L×L term), checked on the tiny
 * config's shapes up to 128K tokens without allocating. */
static void test_workspace_linear_in_length(void **state) {
    (void)state;
    DsaConfig *cfg = dsa_calloc(1, sizeof *cfg);
    assert_ok(dsa_config_load(cfg, "configs/tiny-dense.json", NULL, 0));
    int64_t prev = dsa_model_workspace_bytes(&cfg->model, 1, 4096, 0);
    for (int64_t L = 8192; L <= 131072; L *= 2) {
        int64_t bytes = dsa_model_workspace_bytes(&cfg->model, 1, L, 0);
        double ratio = (double)bytes / (double)prev;
        if (ratio > 2.001) fail_msg("workspace grows %.4fx from L=%lld to L=%lld", ratio, (long long)L / 2, (long long)L);
        prev = bytes;
    }
    /* 32K tokens of the tiny model fit comfortably on the 24 GiB CI machine */
    assert_true(dsa_model_workspace_bytes(&cfg->model, 1, 32768, 0) < (int64_t)4 << 30);
    /* with the indexer and a fixed top-k the workspace is O(L·(d + k)): still linear in L */
    dsa_free(cfg, sizeof *cfg);
    cfg = dsa_calloc(1, sizeof *cfg);
    assert_ok(dsa_config_load(cfg, "configs/tiny-dsa.json", NULL, 0));
    prev = dsa_model_workspace_bytes(&cfg->model, 1, 4096, 2048);
    for (int64_t L = 8192; L <= 131072; L *= 2) {
        int64_t bytes = dsa_model_workspace_bytes(&cfg->model, 1, L, 2048);
        double ratio = (double)bytes / (double)prev;
        if (ratio > 2.001) fail_msg("DSA workspace grows %.4fx from L=%lld to L=%lld", ratio, (long long)L / 2, (long long)L);
        prev = bytes;
    }
    dsa_free(cfg, sizeof *cfg);
}

/* ---- optimizer -------------------------------------------------------------------- */

static void test_lr_schedule(void **state) {
    (void)state;
    DsaStageConfig s = {.steps = 110, .lr = 1e-3, .lr_warmup_steps = 10};
    snprintf(s.lr_schedule, sizeof s.lr_schedule, "constant");
    assert_true(fabs(dsa_lr_at(&s, 0, 0) - 1e-4) < 1e-15);
    assert_true(fabs(dsa_lr_at(&s, 0, 9) - 1e-3) < 1e-15);
    assert_true(fabs(dsa_lr_at(&s, 0, 50) - 1e-3) < 1e-15);
    snprintf(s.lr_schedule, sizeof s.lr_schedule, "cosine");
    assert_true(fabs(dsa_lr_at(&s, 1e-5, 10) - 1e-3) < 1e-15);
    assert_true(fabs(dsa_lr_at(&s, 1e-5, 109) - 1e-5) < 1e-15);
    double mid = dsa_lr_at(&s, 1e-5, 59);
    assert_true(mid < 1e-3 && mid > 1e-5);
    s.lr_warmup_steps = 0;
    assert_true(fabs(dsa_lr_at(&s, 0, 0) - 1e-3) < 1e-15);
}

/* AdamW matches a double-precision transcription of torch.optim.AdamW (after the
 * clip), frozen tensors stay bit-identical, and the clip hits the configured norm. */
static void test_adamw_clip_and_mask(void **state) {
    (void)state;
    DsaConfig *cfg = small_config(true);
    DsaModel m;
    assert_ok(dsa_model_init(&m, &cfg->model, dsa_backend_cpu()));
    dsa_param_init(&m.table, m.params, 8, 0.1);
    DsaOptimizer o;
    assert_ok(dsa_optim_init(&o, &m.table, dsa_backend_cpu()));
    bool *trainable = calloc((size_t)m.table.count, sizeof(bool));
    for (int i = 0; i < m.table.count; i++) trainable[i] = i % 3 != 0;
    size_t bytes = sizeof(float) * (size_t)m.table.total;
    float *p0 = malloc(bytes), *g0 = malloc(bytes);
    for (int64_t j = 0; j < m.table.total; j++) m.grads[j] = (float)dsa_rng_normal_at(4, 0, (uint64_t)j);
    memcpy(p0, m.params, bytes);
    memcpy(g0, m.grads, bytes);
    DsaOptimConfig oc = cfg->optimizer;
    oc.grad_clip = 1.0;
    oc.weight_decay = 0.1;
    DsaOptimStepInfo info;
    dsa_optim_step(&o, m.params, m.grads, trainable, &oc, 1e-2, &info);
    double sumsq = 0;
    for (int i = 0; i < m.table.count; i++)
        for (int64_t j = 0; trainable[i] && j < m.table.info[i].numel; j++) {
            double g = g0[m.table.info[i].offset + j];
            sumsq += g * g;
        }
    assert_true(fabs(info.grad_norm[DSA_GROUP_MAIN] - sqrt(sumsq)) < 1e-6 * sqrt(sumsq));
    double coef = 1.0 / (sqrt(sumsq) + 1e-6);
    assert_true(fabs(info.clip_coef[DSA_GROUP_MAIN] - coef) < 1e-12);
    assert_int_equal(o.group_steps[DSA_GROUP_MAIN], 1);
    assert_int_equal(o.group_steps[DSA_GROUP_INDEXER], 0);
    for (int i = 0; i < m.table.count; i++) {
        const DsaParamInfo *p = &m.table.info[i];
        for (int64_t j = 0; j < p->numel; j++) {
            int64_t k = p->offset + j;
            if (!trainable[i]) {
                assert_memory_equal(&m.params[k], &p0[k], sizeof(float));
                continue;
            }
            double g = (double)(float)(g0[k] * (float)coef);
            double wd = p->decay ? 0.1 : 0.0;
            double w = p0[k] * (1 - 1e-2 * wd);
            double mm = 0.1 * g, vv = 0.05 * g * g;
            double mhat = mm / (1 - 0.9), vhat = vv / (1 - 0.95);
            w -= 1e-2 * mhat / (sqrt(vhat) + oc.eps);
            if (fabs(w - m.params[k]) > 1e-6 * fmax(1.0, fabs(w)))
                fail_msg("%s[%lld]: %.9g, expected %.9g", p->name, (long long)j, m.params[k], w);
        }
    }
    free(p0);
    free(g0);
    free(trainable);
    dsa_optim_free(&o);
    dsa_model_free(&m);
    dsa_free(cfg, sizeof *cfg);
}

/* train.precision bf16 (every GEMM on bf16-rounded operands, fp32 sums): the loss and
 * every tensor's gradient within bf16 rounding of fp32 on the same weights and tokens, and
 * not equal to them; the fp32 master weights are not touched by the forward. */
static void test_bf16_close_to_fp32(void **state) {
    (void)state;
    DsaConfig *cfg = small_config(true);
    const DsaBackend *bf = NULL;
    assert_ok(dsa_backend_for_precision(dsa_backend_cpu(), "bf16", &bf));
    DsaModel m[2];
    assert_ok(dsa_model_init(&m[0], &cfg->model, dsa_backend_cpu()));
    assert_ok(dsa_model_init(&m[1], &cfg->model, bf));
    dsa_param_init(&m[0].table, m[0].params, 3, 0.3);
    memcpy(m[1].params, m[0].params, sizeof(float) * (size_t)m[0].table.total);
    enum { B = 2, L = 9 };
    int32_t in[B * L], tgt[B * L];
    random_tokens(in, B * L, 32, 11);
    random_tokens(tgt, B * L, 32, 12);
    double loss[2];
    for (int p = 0; p < 2; p++) {
        int64_t count = 0;
        double sum = 0;
        dsa_model_zero_grad(&m[p]);
        assert_ok(dsa_model_forward(&m[p], in, tgt, B, L, &sum, &count));
        dsa_model_backward(&m[p], (float)(1.0 / (double)count));
        loss[p] = sum / (double)count;
    }
    assert_memory_equal(m[1].params, m[0].params, sizeof(float) * (size_t)m[0].table.total);
    print_message("bf16 loss %.7f, fp32 %.7f\n", loss[1], loss[0]);
    assert_true(loss[1] != loss[0] && fabs(loss[1] - loss[0]) < 1e-2 * fabs(loss[0]));
    double worst = 0;
    for (int i = 0; i < m[0].table.count; i++) {
        const DsaParamInfo *p = &m[0].table.info[i];
        double d = 0, n = 0;
        for (int64_t j = 0; j < p->numel; j++) {
            const double a = m[0].grads[p->offset + j], b = m[1].grads[p->offset + j];
            d += (a - b) * (a - b), n += a * a;
        }
        if (n > 0) worst = fmax(worst, sqrt(d / n));
    }
    print_message("worst per-tensor gradient difference: %.3f of its norm\n", worst);
    assert_true(worst > 0 && worst < 0.1);
    dsa_model_free(&m[0]);
    dsa_model_free(&m[1]);
    dsa_free(cfg, sizeof *cfg);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_param_table),
        cmocka_unit_test(test_unsupported_refused),
        cmocka_unit_test(test_gradients_q_lora),
        cmocka_unit_test(test_gradients_no_q_lora),
        cmocka_unit_test(test_requires_grad),
        cmocka_unit_test(test_micro_batches_accumulate),
        cmocka_unit_test(test_initial_loss),
        cmocka_unit_test(test_workspace_linear_in_length),
        cmocka_unit_test(test_lr_schedule),
        cmocka_unit_test(test_adamw_clip_and_mask),
        cmocka_unit_test(test_bf16_close_to_fp32),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
