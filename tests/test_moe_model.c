/* test_moe_model.c: the DeepSeek MoE FFN in the model (params.h, model.h, optim.h,
 * trainer.h) on the CPU backend: the parameter table of an MoE config (names, shapes,
 * order, expert index, frozen bias, counts); whole-model loss and gradients by finite
 * differences on a tiny MoE model (first_k_dense_replace 1); the frozen router bias
 * through the optimizer and through `dsa train` steps, bit for bit. The MoE layer itself
 * is test_moe.c. */
#include <math.h>

#include "core/config.h"
#include "core/fileutil.h"
#include "core/mem.h"
#include "core/rng.h"
#include "data/pack.h"
#include "kernels/backend.h"
#include "pretrain/model.h"
#include "pretrain/model_io.h"
#include "pretrain/moe.h"
#include "pretrain/optim.h"
#include "pretrain/params.h"
#include "pretrain/trainer.h"
#include "test_util.h"

/* ---- the model ----------------------------------------------------------------------- */

static DsaConfig *moe_config(void) {
    DsaConfig *cfg = test_tiny_model_config(32);
    DsaModelConfig *m = &cfg->model;
    m->moe_intermediate_size = 8;
    m->has_moe = true;
    m->n_routed_experts = 8;
    m->n_shared_experts = 1;
    m->num_experts_per_tok = 2;
    m->n_group = 2;
    m->topk_group = 1;
    m->first_k_dense_replace = 1;
    assert_ok(dsa_config_validate(cfg));
    return cfg;
}

static void test_param_table(void **state) {
    (void)state;
    DsaConfig *cfg = dsa_calloc(1, sizeof *cfg);
    assert_ok(dsa_config_load(cfg, "configs/tiny.json", NULL, 0));
    DsaParamTable t;
    assert_ok(dsa_param_table_build(&t, &cfg->model));
    int64_t numel = 0;
    for (int i = 0; i < t.count; i++) numel += t.info[i].numel;
    assert_int_equal(numel, dsa_model_param_count(&cfg->model));
    assert_non_null(dsa_param_find(&t, "model.layers.0.mlp.gate_proj.weight"));
    assert_null(dsa_param_find(&t, "model.layers.0.mlp.gate.weight"));
    assert_null(dsa_param_find(&t, "model.layers.1.mlp.gate_proj.weight"));
    const DsaParamInfo *r = dsa_param_find(&t, "model.layers.1.mlp.gate.weight");
    const DsaParamInfo *b = dsa_param_find(&t, "model.layers.1.mlp.gate.e_score_correction_bias");
    const DsaParamInfo *d7 = dsa_param_find(&t, "model.layers.3.mlp.experts.7.down_proj.weight");
    const DsaParamInfo *sg = dsa_param_find(&t, "model.layers.2.mlp.shared_experts.gate_proj.weight");
    assert_non_null(r), assert_non_null(b), assert_non_null(d7), assert_non_null(sg);
    assert_true(r->slot == DSA_W_ROUTER && r->shape[0] == 8 && r->shape[1] == 256 && r->decay && !r->frozen);
    assert_true(b->slot == DSA_W_ROUTER_BIAS && b->ndim == 1 && b->shape[0] == 8 && b->frozen && b->is_bias &&
                !b->decay && b->expert == -1);
    assert_true(d7->slot == DSA_W_EXPERT_DOWN && d7->expert == 7 && d7->shape[0] == 256 && d7->shape[1] == 64);
    assert_true(sg->shape[0] == 64 && sg->shape[1] == 256 && sg->expert == -1);
    assert_ptr_equal(dsa_param_expert(&t, 3, DSA_W_EXPERT_DOWN, 7), d7);
    assert_null(dsa_param_expert(&t, 3, DSA_W_EXPERT_DOWN, 8));
    assert_null(dsa_param_expert(&t, 0, DSA_W_EXPERT_GATE, 0));
    /* HF order inside a layer: ..., post norm, router, bias, experts 0..7 (gate, up, down), shared */
    const DsaParamInfo *post = dsa_param_find(&t, "model.layers.1.post_attention_layernorm.weight");
    assert_ptr_equal(r, post + 1);
    assert_ptr_equal(b, r + 1);
    for (int j = 0; j < 8; j++)
        for (int k = 0; k < 3; k++) {
            const DsaParamInfo *p = b + 1 + 3 * j + k;
            assert_int_equal(p->expert, j);
            assert_int_equal(p->slot, DSA_W_EXPERT_GATE + k);
        }
    assert_string_equal((b + 25)->name, "model.layers.1.mlp.shared_experts.gate_proj.weight");
    assert_string_equal((b + 27)->name, "model.layers.1.mlp.shared_experts.down_proj.weight");
    assert_string_equal((b + 28)->name, "model.layers.2.input_layernorm.weight");
    dsa_param_table_free(&t);
    /* V2 routing: no bias; no shared experts: none of their tensors */
    snprintf(cfg->model.topk_method, sizeof cfg->model.topk_method, "greedy");
    cfg->model.n_shared_experts = 0;
    assert_ok(dsa_param_table_build(&t, &cfg->model));
    numel = 0;
    for (int i = 0; i < t.count; i++) numel += t.info[i].numel;
    assert_int_equal(numel, dsa_model_param_count(&cfg->model));
    assert_null(dsa_param_find(&t, "model.layers.1.mlp.gate.e_score_correction_bias"));
    assert_null(dsa_param_find(&t, "model.layers.1.mlp.shared_experts.up_proj.weight"));
    dsa_param_table_free(&t);
    dsa_free(cfg, sizeof *cfg);
}

static void random_tokens(int32_t *x, int64_t n, int64_t vocab, uint64_t seed) {
    for (int64_t i = 0; i < n; i++) x[i] = (int32_t)(dsa_rng_u32_at(seed, 0, (uint64_t)i) % (uint64_t)vocab);
}

/* The selections of every MoE layer of the last forward. */
static void model_selection(const DsaModel *m, int32_t *out) {
    const int64_t NK = m->batch * m->seq_len * m->cfg.num_experts_per_tok;
    for (int64_t l = m->cfg.first_k_dense_replace; l < m->cfg.num_hidden_layers; l++)
        memcpy(out + (l - m->cfg.first_k_dense_replace) * NK, m->acts[l].moe.sel, sizeof(int32_t) * (size_t)NK);
}

/* Directional central differences of the mean loss per tensor (as test_model.c does
 * for the dense model), along the gradient and a random direction; a direction whose
 * perturbation flips a selection is retried with a smaller step, then reported and
 * skipped. */
static void test_model_gradients(void **state) {
    (void)state;
    DsaConfig *cfg = moe_config();
    DsaModel m;
    assert_ok(dsa_model_init(&m, &cfg->model, dsa_backend_cpu()));
    dsa_param_init(&m.table, m.params, 3, 0.3);
    for (int i = 0; i < m.table.count; i++) {
        const DsaParamInfo *p = &m.table.info[i];
        if (p->is_norm)
            for (int64_t j = 0; j < p->numel; j++)
                m.params[p->offset + j] = 1.0f + 0.3f * (float)dsa_rng_normal_at(9, (uint64_t)i, (uint64_t)j);
        if (p->slot == DSA_W_ROUTER_BIAS)
            for (int64_t j = 0; j < p->numel; j++) m.params[p->offset + j] = 0.02f * (float)(j % 3);
    }
    enum { B = 2, L = 7 };
    int32_t in[B * L], tgt[B * L];
    random_tokens(in, B * L, 32, 1);
    random_tokens(tgt, B * L, 32, 2);
    tgt[4] = -1;
    double sum = 0;
    int64_t count = 0;
    dsa_model_zero_grad(&m);
    assert_ok(dsa_model_forward(&m, in, tgt, B, L, &sum, &count));
    const int64_t nsel = (cfg->model.num_hidden_layers - 1) * B * L * cfg->model.num_experts_per_tok;
    int32_t *sel0 = malloc(sizeof(int32_t) * (size_t)nsel), *sel1 = malloc(sizeof(int32_t) * (size_t)nsel);
    model_selection(&m, sel0);
    dsa_model_backward(&m, (float)(1.0 / (double)count));
    int failures = 0, skipped = 0, checked = 0, moe_checked = 0;
    for (int i = 0; i < m.table.count; i++) {
        const DsaParamInfo *p = &m.table.info[i];
        float *w = m.params + p->offset;
        const float *g = m.grads + p->offset;
        double gnorm = 0;
        for (int64_t j = 0; j < p->numel; j++) gnorm += (double)g[j] * g[j];
        gnorm = sqrt(gnorm);
        if (p->frozen) {
            assert_true(gnorm == 0.0);
            continue;
        }
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
            double eps = 3e-3, fd = 0;
            bool ok = false;
            for (int tries = 0; tries < 3 && !ok; tries++, eps /= 4) {
                double loss[2];
                ok = true;
                for (int side = 0; side < 2; side++) {
                    double e = side ? -eps : eps;
                    for (int64_t j = 0; j < p->numel; j++) w[j] = (float)(saved[j] + e * u[j] / unorm);
                    assert_ok(dsa_model_forward(&m, in, tgt, B, L, &sum, &count));
                    loss[side] = sum / (double)count;
                    model_selection(&m, sel1);
                    ok &= memcmp(sel0, sel1, sizeof(int32_t) * (size_t)nsel) == 0;
                }
                fd = (loss[0] - loss[1]) / (2 * eps);
            }
            memcpy(w, saved, sizeof(float) * (size_t)p->numel);
            if (!ok) {
                print_message("%s (%s direction): the perturbation flips a selection; skipped\n", p->name,
                              dir ? "random" : "gradient");
                skipped++;
                continue;
            }
            checked++;
            moe_checked += p->slot >= DSA_W_ROUTER;
            /* fp32 forward noise over 2·eps (eps down to 2e-4 after retries) */
            double tol = 1e-2 * gnorm + (eps < 3e-3 ? 3e-3 : 2e-4);
            if (fabs(fd - analytic) > tol) {
                print_message("gradient mismatch %s (%s direction): finite difference %.8g, analytic %.8g, |g| %.6g\n",
                              p->name, dir ? "random" : "gradient", fd, analytic, gnorm);
                failures++;
            }
        }
        free(u);
        free(saved);
    }
    if (skipped) print_message("%d of %d directions skipped (selection flips)\n", skipped, skipped + checked);
    assert_int_equal(failures, 0);
    assert_true(skipped * 10 < checked);
    assert_true(moe_checked >= 20); /* router, experts and shared experts were checked */
    free(sel0), free(sel1);
    dsa_model_free(&m);
    dsa_free(cfg, sizeof *cfg);
}

/* The bias never gets a gradient, and the optimizer neither moves it nor counts it,
 * even when the mask says trainable and its gradient slot holds garbage. */
static void test_frozen_bias_optimizer(void **state) {
    (void)state;
    DsaConfig *cfg = moe_config();
    DsaModel m;
    const DsaBackend *be = dsa_backend_cpu();
    assert_ok(dsa_model_init(&m, &cfg->model, be));
    dsa_param_init(&m.table, m.params, 4, 0.2);
    const DsaParamInfo *b = dsa_param_find(&m.table, "model.layers.1.mlp.gate.e_score_correction_bias");
    assert_non_null(b);
    assert_false(m.requires_grad[b - m.table.info]);
    for (int64_t j = 0; j < b->numel; j++) m.params[b->offset + j] = 0.1f * (float)j;
    float before[8];
    memcpy(before, m.params + b->offset, sizeof before);
    DsaOptimizer o;
    assert_ok(dsa_optim_init(&o, &m.table, be));
    bool *all = malloc(sizeof(bool) * (size_t)m.table.count);
    for (int i = 0; i < m.table.count; i++) all[i] = true;
    enum { B = 1, L = 9 };
    int32_t in[B * L], tgt[B * L];
    random_tokens(in, B * L, 32, 5);
    random_tokens(tgt, B * L, 32, 6);
    const DsaParamInfo *r = dsa_param_find(&m.table, "model.layers.1.mlp.gate.weight");
    float router0 = m.params[r->offset];
    for (int step = 0; step < 3; step++) {
        double sum;
        int64_t count;
        dsa_model_zero_grad(&m);
        assert_ok(dsa_model_forward(&m, in, tgt, B, L, &sum, &count));
        dsa_model_backward(&m, 0.1f);
        for (int64_t j = 0; j < b->numel; j++) assert_true(m.grads[b->offset + j] == 0.0f);
        double want = 0;
        for (int i = 0; i < m.table.count; i++)
            if (!m.table.info[i].frozen) want += be->sum_squares(m.grads + m.table.info[i].offset, m.table.info[i].numel);
        for (int64_t j = 0; j < b->numel; j++) m.grads[b->offset + j] = 1e3f; /* garbage */
        DsaOptimStepInfo info;
        dsa_optim_step(&o, m.params, m.grads, all, &cfg->optimizer, 1e-2, &info);
        assert_memory_equal(m.params + b->offset, before, sizeof before);
        assert_true(fabs(info.grad_norm[DSA_GROUP_MAIN] - sqrt(want)) <= 1e-12 * sqrt(want));
    }
    assert_true(m.params[r->offset] != router0); /* the router itself trains */
    free(all);
    dsa_optim_free(&o);
    dsa_model_free(&m);
    dsa_free(cfg, sizeof *cfg);
}

/* `dsa train` from an HF directory whose router biases are non-zero: after training
 * steps the checkpoint holds the same bias bits, and the experts moved. */
static void test_frozen_bias_trainer(void **state) {
    (void)state;
    /* synthetic data */
    DsaPackOptions po;
    dsa_pack_options_default(&po);
    po.format = DSA_PACK_SYNTHETIC;
    char prefix[512];
    snprintf(prefix, sizeof prefix, "%s", test_path("data/syn"));
    assert_ok(dsa_mkdir_p(test_path("data")));
    po.out_prefix = prefix;
    po.synthetic.task = DSA_SYN_TASK_MIXED;
    po.synthetic.doc_tokens = 256;
    po.synthetic.total_tokens = 16 * 256;
    po.synthetic.n_distances = 1;
    po.synthetic.distances[0] = 8;
    po.synthetic.vocab_size = 64;
    po.synthetic.queries_per_doc = 2;
    po.synthetic.seed = 3;
    po.vocab_size = 64;
    assert_ok(dsa_pack_run(&po, NULL));
    char json[4096];
    const char *out = test_path("run-moe");
    snprintf(json, sizeof json,
             "{\"model\": {\"vocab_size\": 64, \"hidden_size\": 32, \"intermediate_size\": 64,"
             " \"moe_intermediate_size\": 16, \"num_hidden_layers\": 2, \"num_attention_heads\": 2,"
             " \"q_lora_rank\": 16, \"kv_lora_rank\": 16, \"qk_nope_head_dim\": 8, \"qk_rope_head_dim\": 8,"
             " \"v_head_dim\": 8, \"first_k_dense_replace\": 1, \"n_routed_experts\": 8, \"n_shared_experts\": 1,"
             " \"num_experts_per_tok\": 2, \"n_group\": 2, \"topk_group\": 1, \"index_topk\": null,"
             " \"max_position_embeddings\": 256, \"num_nextn_predict_layers\": 0, \"quantization_config\": null,"
             " \"rope_scaling\": {\"type\": \"yarn\", \"factor\": 4, \"original_max_position_embeddings\": 64,"
             " \"beta_fast\": 32, \"beta_slow\": 1, \"mscale\": 1, \"mscale_all_dim\": 1}},"
             " \"data\": {\"train\": [\"%s\"], \"seq_len\": 32, \"seed\": 5, \"prefetch\": 1},"
             " \"optimizer\": {\"lr\": 3e-3, \"lr_warmup_steps\": 0},"
             " \"train\": {\"out_dir\": \"%s\", \"seed\": 1, \"global_batch\": 2, \"micro_batch\": 1,"
             " \"steps\": 3, \"checkpoint_every\": 3, \"log_every\": 1, \"threads\": 2}}",
             test_path("data/syn-*.h5"), out);
    DsaConfig *cfg = dsa_calloc(1, sizeof *cfg);
    assert_ok(dsa_config_parse(cfg, json, "test-config", NULL, 0));
    /* the initial weights, with biases 0.01·j, as an HF directory */
    DsaModel m;
    assert_ok(dsa_model_init(&m, &cfg->model, dsa_backend_cpu()));
    dsa_param_init(&m.table, m.params, 7, 0.02);
    const DsaParamInfo *b = dsa_param_find(&m.table, "model.layers.1.mlp.gate.e_score_correction_bias");
    const DsaParamInfo *e3 = dsa_param_find(&m.table, "model.layers.1.mlp.experts.3.up_proj.weight");
    for (int64_t j = 0; j < b->numel; j++) m.params[b->offset + j] = 0.01f * (float)(j + 1);
    const char *init = test_path("init");
    assert_ok(dsa_mkdir_p(init));
    char path[1100];
    snprintf(path, sizeof path, "%s/model.safetensors", init);
    assert_ok(dsa_model_write_weights(path, &m.table, m.params));
    char *text = NULL;
    assert_ok(dsa_model_config_to_hf_json(&cfg->model, &text));
    snprintf(path, sizeof path, "%s/config.json", init);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    free(text);
    DsaTrainOptions opts = {.init_from = init};
    DsaTrainResult res;
    assert_ok(dsa_train(cfg, &opts, &res));
    assert_int_equal(res.steps_done, 3);
    float *after = test_falloc(m.table.total);
    snprintf(path, sizeof path, "%s/model.safetensors", res.last_checkpoint);
    assert_ok(dsa_model_read_tensors(path, &m.table, "", after, false));
    assert_memory_equal(after + b->offset, m.params + b->offset, sizeof(float) * (size_t)b->numel);
    assert_memory_not_equal(after + e3->offset, m.params + e3->offset, sizeof(float) * (size_t)e3->numel);
    free(after);
    dsa_model_free(&m);
    dsa_free(cfg, sizeof *cfg);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_param_table),
        cmocka_unit_test(test_model_gradients),
        cmocka_unit_test(test_frozen_bias_optimizer),
        cmocka_unit_test(test_frozen_bias_trainer),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    test_tmpdir_remove();
    return rc;
}
