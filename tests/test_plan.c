/* test_plan.c: the device plan (pretrain/plan.h) against figures counted by hand for a
 * small config, the DeepSeek-V3.2 stage token counts of the paper, issue 15's single
 * V3.2 attention layer at 128K tokens in 80 GB, the search, and the refusals (invalid
 * layouts by flag, sizes that overflow). The CLI is tests/cli/test_plan.sh.
 *
 * The small config (SMALL below): D 64, V 128, 2 layers (layer 0 dense FFN I 96, layer 1
 * MoE: E 4 experts of I_e 16, K 2, one shared expert), H 2, d_q 32, d_c 16, d_n 8, d_r 8,
 * d_v 8 (d_qk 16), indexer H_I 2 x d_I 16, top-k 8; stages: warmup (dense, indexer, 10
 * steps) and sparse (sparse, all, 20 steps), 4 sequences of L 32.
 *
 * Parameters (DSA-SPEC §3.1 shapes):
 *   globals: embed 128·64 = 8192, final norm 64, lm_head 8192                    = 16448
 *   attention per layer: q_a 32·64 = 2048, q_b 2·16·32 = 1024, kv_a 24·64 = 1536,
 *     kv_b 2·16·16 = 512, o 64·16 = 1024 (matmuls 6144); norms 64 + 32 + 16 + 64 = 176
 *   indexer per layer: wq_b 2·16·32 = 1024, wk 16·64 = 1024, weights_proj 2·64 = 128
 *     (matmuls 2176), k_norm 16 + 16                                             = 2208
 *   layer 0: dense FFN 3·96·64 = 18432                         6144+176+2208+18432 = 26960
 *   layer 1: router 4·64 = 256, its bias 4 (frozen), experts 4·3·16·64 = 12288,
 *     shared 3·16·64 = 3072                        6144+176+2208+256+4+12288+3072 = 24148
 *   total 67556; routed experts 12288, the rest (non-expert) 55268;
 *   trained: warm-up the two indexers 4416; sparse all but the router bias: 55264 + 12288.
 * Matmul weights per token (2 FLOPs each forward): lm_head 8192 + attention 2·6144 + FFN
 *   18432 + router 256 + shared 3072 = 42240 (34048 without lm_head); routed 12288·2/4 =
 *   6144; indexer 2·2176 = 4352.
 * Pairs: dense Pd = 32·33/2 = 528; sparse Ps = 8·9/2 + 24·8 = 228.
 */
#include "pretrain/plan.h"
#include "test_util.h"

static const char SMALL[] =
    "{\"model\": {\"model_type\": \"deepseek_v32\", \"vocab_size\": 128, \"hidden_size\": 64, \"intermediate_size\": 96,"
    " \"moe_intermediate_size\": 16, \"num_hidden_layers\": 2, \"num_attention_heads\": 2, \"num_key_value_heads\": 2,"
    " \"q_lora_rank\": 32, \"kv_lora_rank\": 16, \"qk_nope_head_dim\": 8, \"qk_rope_head_dim\": 8, \"v_head_dim\": 8,"
    " \"first_k_dense_replace\": 1, \"n_routed_experts\": 4, \"n_shared_experts\": 1, \"num_experts_per_tok\": 2,"
    " \"n_group\": 1, \"topk_group\": 1, \"num_nextn_predict_layers\": 0, \"max_position_embeddings\": 64,"
    " \"rope_scaling\": null, \"index_n_heads\": 2, \"index_head_dim\": 16, \"index_topk\": 8,"
    " \"quantization_config\": null},"
    " \"data\": {\"seq_len\": 32}, \"train\": {\"global_batch\": 4, \"micro_batch\": 1, \"device\": \"cpu\"},"
    " \"stages\": [{\"name\": \"warmup\", \"attention\": \"dense\", \"trainable\": \"indexer\", \"steps\": 10},"
    "            {\"name\": \"sparse\", \"attention\": \"sparse\", \"trainable\": \"all\", \"steps\": 20}]}";

/* 1 TFLOP/s at 50%, 1 GB/s, a memory no small plan reaches */
static const DsaPlanHardware HW = {.peak_flops = 1e12, .mfu = 0.5, .link_bytes_s = 1e9, .gpu_mem = (int64_t)1 << 40};

static DsaConfig *small_config(void) {
    DsaConfig *cfg = dsa_calloc(1, sizeof *cfg);
    assert_non_null(cfg);
    assert_ok(dsa_config_parse(cfg, SMALL, "small.json", NULL, 0));
    assert_ok(dsa_config_validate(cfg));
    return cfg;
}

static DsaPlanLayout layout(int64_t dp, int64_t cp, int64_t ep, int zero, DsaPlanRecompute rec) {
    return (DsaPlanLayout){.dp = dp, .cp = cp, .ep = ep, .zero = zero, .precision = DSA_PLAN_BF16,
                           .recompute = rec, .micro_batch = 1, .seq_len = 0};
}

/* Sparse stage, dp 2, ZeRO-1, bf16, no recompute: N = Lg = 32 tokens, a = 2 bytes,
 * 4 / 2 = 2 micro-batches per step, replicas R = 2 of every tensor. */
static void test_sparse_dp2_zero1_by_hand(void **state) {
    (void)state;
    DsaConfig *cfg = small_config();
    DsaPlanLayout l = layout(2, 1, 1, 1, DSA_PLAN_RECOMPUTE_OFF);
    DsaPlanStage p;
    assert_ok(dsa_plan_stage(cfg, 1, &l, &HW, &p));
    assert_int_equal(p.parameters, 67556);
    assert_int_equal(p.trained, 67552);
    assert_int_equal(p.micro_steps, 2);
    assert_int_equal(p.tokens, 20 * 4 * 32);
    /* weights bf16: 2·67556 */
    assert_int_equal(p.bytes.weights, 135112);
    /* ZeRO-1 shards: ceil(55264/2) + ceil(12288/2) = 27632 + 6144 = 33776;
     * master 4·33776, moments 8·33776; gradients fp32 unsharded 4·67552 */
    assert_int_equal(p.bytes.master, 135104);
    assert_int_equal(p.bytes.optimizer, 270208);
    assert_int_equal(p.bytes.gradients, 270208);
    /* stored activations (sparse MQA form), N = 32:
     *   attention: 2·32·(2·64 + 2·32 + 2·16 [q] + 24 [kv_a out] + 16 [c] + 2·16 [om] + 2·8 [o]) = 2·32·312 = 19968
     *     + fp32 4·(32·3 [rstd1, rstd_q, rstd_kv] + 2·32 [lse]) = 640                               = 20608
     *   FFN common: 2·32·128 [h_mid, x2] + 4·32 [rstd2]                                              = 8320
     *   dense: 8320 + 2·32·3·96 = 26752;  MoE: 8320 + 4·32·4 [scores] + 8·32·2 [ids, weights]
     *     + 2·32·2·(128 + 48) [dispatched x, gate, up, act, expert out] + 2·32·3·16 [shared] = 34944
     *   layer 0 = 47360, layer 1 = 55552; head: 2·32·128 + 4·32·5 = 8832
     *   activations = 47360 + 55552 + 8832 = 111744, per layer (largest) 55552 */
    assert_int_equal(p.bytes.activations_per_layer, 55552);
    assert_int_equal(p.bytes.activations, 111744);
    /* kv latent (MQA): 2·32·(16 + 8) = 1536 */
    assert_int_equal(p.bytes.kv_latent, 1536);
    /* indexer: k8 + scale 32·(16 + 4) = 640, ∂k̂ 4·32·16 = 2048, w and ∂w 8·32·2 = 512,
     * lseI 4·32 = 128, ∂q̂ 2·32·2·16 = 2048                                      = 5376 */
    assert_int_equal(p.bytes.indexer, 5376);
    /* indices: idx of 2 trained layers 2·4·32·8 = 2048 + one layer's I_S 4·32·8 = 1024 = 3072 */
    assert_int_equal(p.bytes.indices, 3072);
    /* scratch: max(LM head 4·32·128 = 16384, residual 4·32·64 = 8192 + the largest layer
     * gradients: attention 2·32·2·(8 + 16) + 4·32·24 = 6144, dense FFN 2·32·3·96 = 18432,
     * MoE 2·32·2·(64 + 48) + 2·32·3·16 = 17408 -> 8192 + 18432 = 26624) */
    assert_int_equal(p.bytes.scratch, 26624);
    assert_int_equal(p.bytes.total, 135112 + 135104 + 270208 + 270208 + 111744 + 1536 + 5376 + 3072 + 26624);
    /* FLOPs, T = 4·32 = 128 tokens, 2 layers x 4 sequences = 8 layer-sequences:
     *   linear 6·(42240 + 6144)·128                                     = 37158912
     *   attention: forward 2·H·(2·d_c + d_r)·Ps = 2·2·40·228 = 36480; ·8·3.5 = 1021440
     *   indexer: 4·4352·128 = 2228224 + 8·[(2·2·16 + 2·2)·528 (F1) + 2·(2·2·16)·228
     *     (F3 row and key passes) + (4·2·16 + 2·2)·228 (∂q̂, ∂k̂, ∂w)] = 2228224 + 8·95184 = 2989696
     *   KL: 8·(2·2·24 + 4·2)·228 = 189696;  top-k 8·528 = 4224 */
    assert_true(p.flops.linear == 37158912.0);
    assert_true(p.flops.attention == 1021440.0);
    assert_true(p.flops.indexer == 2989696.0);
    assert_true(p.flops.kl == 189696.0);
    assert_true(p.flops.topk == 4224.0);
    assert_true(p.flops.cp_extra == 0 && p.flops.recompute == 0);
    assert_true(p.flops.total == 41363968.0);
    assert_true(p.flops.per_device == 20681984.0);
    /* comm: reduce-scatter 4·(1·27632 + 1·6144) = 135104; all-gather bf16 2·33776 = 67552 */
    assert_int_equal(p.comm.gradients, 135104);
    assert_int_equal(p.comm.zero_gather, 67552);
    assert_int_equal(p.comm.ep_all_to_all, 0);
    assert_int_equal(p.comm.cp_exchange, 0);
    assert_int_equal(p.comm.total, 202656);
    /* time: 20681984 / (1e12·0.5) + 202656 / 1e9; GPU-hours = 20 steps · time · 2 / 3600 */
    assert_true(fabs(p.compute_s - 20681984 / 5e11) < 1e-15);
    assert_true(fabs(p.comm_s - 202656 / 1e9) < 1e-15);
    assert_true(fabs(p.gpu_hours - p.step_s * 20 * 2 / 3600) < 1e-15);
    assert_true(p.fits);
    /* ZeRO-0: everything unsharded, all-reduce 2·4·33776; ZeRO-2: gradients sharded,
     * reduce-scattered each of the 2 micro-batches, one layer's gradients (layer 0: 26960)
     * of scratch: 26624 + 4·26960 */
    l.zero = 0;
    assert_ok(dsa_plan_stage(cfg, 1, &l, &HW, &p));
    assert_int_equal(p.bytes.master, 4 * 67552);
    assert_int_equal(p.bytes.optimizer, 8 * 67552);
    assert_int_equal(p.comm.gradients, 270208);
    assert_int_equal(p.comm.zero_gather, 0);
    l.zero = 2;
    assert_ok(dsa_plan_stage(cfg, 1, &l, &HW, &p));
    assert_int_equal(p.bytes.gradients, 135104);
    assert_int_equal(p.comm.gradients, 2 * 135104);
    assert_int_equal(p.bytes.scratch, 26624 + 4 * 26960);
    /* recompute: each layer keeps its input 2·32·64 = 4096, one layer's full set is live:
     * 2·4096 + 55552 + 8832; one more forward: 2·(34048 + 6144)·128 + 8·36480 */
    l.zero = 1, l.recompute = DSA_PLAN_RECOMPUTE_ON;
    assert_ok(dsa_plan_stage(cfg, 1, &l, &HW, &p));
    assert_int_equal(p.bytes.activations_per_layer, 4096);
    assert_int_equal(p.bytes.activations, 72576);
    assert_true(p.flops.recompute == 10580992.0);
    /* fp32: weights 4·67556, no separate master; the MoE layer's set with a = 4:
     * attention 4·32·312 + 640 = 40576, MoE 4·32·128 + 128 + 512 + 512 + 4·32·2·176 + 4·32·3·16 = 68736 */
    l.recompute = DSA_PLAN_RECOMPUTE_OFF, l.precision = DSA_PLAN_FP32;
    assert_ok(dsa_plan_stage(cfg, 1, &l, &HW, &p));
    assert_int_equal(p.bytes.weights, 270224);
    assert_int_equal(p.bytes.master, 0);
    assert_int_equal(p.bytes.activations_per_layer, 40576 + 68736);
    dsa_free(cfg, sizeof *cfg);
}

/* Warm-up (dense MHA form, the indexer trained, the model frozen), dp 2, ZeRO-1. */
static void test_warmup_dp2_by_hand(void **state) {
    (void)state;
    DsaConfig *cfg = small_config();
    DsaPlanLayout l = layout(2, 1, 1, 1, DSA_PLAN_RECOMPUTE_AUTO);
    DsaPlanStage p;
    assert_ok(dsa_plan_stage(cfg, 0, &l, &HW, &p));
    assert_int_equal(p.trained, 4416);
    assert_int_equal(p.bytes.weights, 135112);
    assert_int_equal(p.bytes.master, 4 * 2208); /* ceil(4416 / 2) */
    assert_int_equal(p.bytes.gradients, 4 * 4416);
    assert_int_equal(p.bytes.optimizer, 8 * 2208);
    /* nothing stored; one layer live: MHA attention 2·32·(128 + 64 + 32 [q] + 24 + 16 + 32 [k]
     * + 16 [v] + 16 [o]) + 640 = 21632; MoE layer 21632 + 34944 = 56576; + head 8832 */
    assert_int_equal(p.bytes.activations_per_layer, 0);
    assert_int_equal(p.bytes.activations, 56576 + 8832);
    assert_int_equal(p.bytes.kv_latent, 0);     /* cp 1: the own K, V are the activations */
    assert_int_equal(p.bytes.indexer, 5376);
    assert_int_equal(p.bytes.indices, 8 * 32 * 8); /* one layer's top-k candidates (score, index) */
    assert_int_equal(p.bytes.scratch, 16384);   /* the LM head chunk only: no backward */
    assert_int_equal(p.bytes.total, 268488);
    assert_int_equal(p.layout.recompute, DSA_PLAN_RECOMPUTE_OFF);
    /* FLOPs: linear forward only 2·48384·128 = 12386304; attention 8·2·2·(16 + 8)·528 = 405504;
     * indexer 2228224 + 8·[3·68 + 132]·528 = 3647488 (P1, P2, P3 scores; ∂q̂, ∂k̂, ∂w);
     * KL 8·2·(2·2·16 + 8)·528 = 608256 (P2 and P3 recompute the MLA logits); top-k 4224 */
    assert_true(p.flops.linear == 12386304.0);
    assert_true(p.flops.attention == 405504.0);
    assert_true(p.flops.indexer == 3647488.0);
    assert_true(p.flops.kl == 608256.0);
    assert_true(p.flops.total == 17051776.0);
    /* comm: reduce-scatter 4·2208, all-gather 2·2208 */
    assert_int_equal(p.comm.gradients, 8832);
    assert_int_equal(p.comm.zero_gather, 4416);
    assert_int_equal(p.comm.total, 13248);
    /* cp 2: each rank expands the other rank's 16 tokens: kv 2·16·(24 + 2·24) = 2304, and
     * re-expansion FLOPs 8·(2 − 1)·2·32·512 = 262144 */
    l = layout(1, 2, 1, 1, DSA_PLAN_RECOMPUTE_OFF);
    assert_ok(dsa_plan_stage(cfg, 0, &l, &HW, &p));
    assert_int_equal(p.bytes.kv_latent, 2304);
    assert_true(p.flops.cp_extra == 262144.0);
    dsa_free(cfg, sizeof *cfg);
}

/* Sparse, dp 1 x cp 2 with ep 2, recompute on: N = 16 own tokens of Lg = 32, 4 micro-batches. */
static void test_cp_ep_comm_by_hand(void **state) {
    (void)state;
    DsaConfig *cfg = small_config();
    DsaPlanLayout l = layout(1, 2, 2, 1, DSA_PLAN_RECOMPUTE_ON);
    DsaPlanStage p;
    assert_ok(dsa_plan_stage(cfg, 1, &l, &HW, &p));
    assert_int_equal(p.micro_steps, 4);
    /* 2 experts per device: weights 2·(55268 + 6144); non-expert replicas 2, expert replicas 1 */
    assert_int_equal(p.bytes.weights, 122824);
    assert_int_equal(p.bytes.master, 4 * (27632 + 6144));
    assert_int_equal(p.bytes.gradients, 4 * (55264 + 6144));
    /* gradients: 4·(1·27632 + 0·6144); gather 2·27632 */
    assert_int_equal(p.comm.gradients, 110528);
    assert_int_equal(p.comm.zero_gather, 55264);
    /* EP: 16·2·64·2·(2 − 1)/2 = 2048 per exchange; 6 exchanges (forward, backward,
     * recompute) x 1 MoE layer x 4 micro-batches */
    assert_int_equal(p.comm.ep_all_to_all, 49152);
    /* CP per layer and micro-batch: (2 − 1)·16 tokens x [latent 2·24 + indexer keys 16 + 4
     * + key gradients 4·16 + backward re-gather, gradient, recompute 3·48] = 16·276; x 2 x 4 */
    assert_int_equal(p.comm.cp_exchange, 35328);
    assert_int_equal(p.comm.total, 110528 + 55264 + 49152 + 35328);
    /* activations: inputs 2·2·16·64 + the live MoE layer at N = 16 (55552 / 2) + head 8832 / 2 */
    assert_int_equal(p.bytes.activations, 4096 + 27776 + 4416);
    dsa_free(cfg, sizeof *cfg);
}

/* The paper's token counts (DSA-SPEC §1): warm-up 1000 x 16 x 128K = 2.1B, sparse
 * 15000 x 480 x 128K = 943.7B. */
static void test_v32_token_counts(void **state) {
    (void)state;
    DsaConfig *cfg = dsa_calloc(1, sizeof *cfg);
    assert_ok(dsa_config_load(cfg, "configs/deepseek-v3.2.json", NULL, 0));
    assert_ok(dsa_config_validate(cfg));
    assert_int_equal(cfg->num_stages, 2);
    int64_t t = 0;
    assert_ok(dsa_plan_stage_tokens(cfg, 0, 0, &t));
    assert_int_equal(t, 2097152000LL);
    assert_ok(dsa_plan_stage_tokens(cfg, 1, 0, &t));
    assert_int_equal(t, 943718400000LL);
    assert_ok(dsa_plan_stage_tokens(cfg, 1, 4096, &t)); /* --seq 4096 */
    assert_int_equal(t, 15000LL * 480 * 4096);
    /* the plan reports the same */
    DsaPlanLayout l = layout(16, 128, 64, 1, DSA_PLAN_RECOMPUTE_AUTO);
    DsaPlanStage p;
    assert_ok(dsa_plan_stage(cfg, 0, &l, &HW, &p));
    assert_int_equal(p.tokens, 2097152000LL);
    dsa_free(cfg, sizeof *cfg);
}

/* Issue 15: one 131072-token sequence of the V3.2 attention layer (hidden 7168, 128 heads,
 * kv_lora 512, rope 64, indexer 64 x 128, top-2048) fits in 80 GB for a single layer's
 * training step in the warm-up and in the sparse stage; the check says how many fit. */
static void test_v32_layer_fits_80gb(void **state) {
    (void)state;
    DsaConfig *cfg = dsa_calloc(1, sizeof *cfg);
    assert_ok(dsa_config_load(cfg, "configs/deepseek-v3.2.json", NULL, 0));
    assert_ok(dsa_config_validate(cfg));
    const DsaPlanHardware hw = {.peak_flops = 989e12, .mfu = 0.4, .link_bytes_s = 50e9, .gpu_mem = 80000000000LL};
    for (int s = 0; s < 2; s++) {
        DsaPlanLayerCheck c;
        assert_ok(dsa_plan_layer_check(cfg, s, 131072, true, &hw, &c));
        print_message("stage %d: one attention layer %.2f GB, %lld layers fit (%lld with recompute)\n", s,
                      (double)c.one.total / 1e9, (long long)c.layers_fit, (long long)c.layers_fit_recompute);
        assert_true(c.one_fits);
        assert_true(c.one.total <= 80000000000LL);
        assert_true(c.layers_fit >= 1);
        assert_true(c.layers_fit_recompute >= c.layers_fit);
        if (s == 1) {
            assert_true(c.one.indices > 0 && c.one.kv_latent > 0); /* top-k indices, the latent keys */
            assert_true(c.layers_fit_recompute > c.layers_fit);   /* recompute buys layers */
        }
        /* a whole MoE layer (256 experts) on one device does not fit: expert parallelism is needed */
        assert_ok(dsa_plan_layer_check(cfg, s, 131072, false, &hw, &c));
        assert_false(c.one_fits);
        assert_int_equal(c.layers_fit, 0);
    }
    dsa_free(cfg, sizeof *cfg);
}

/* The search lists only layouts that fit, ranked by step time. */
static void test_search_lists_fitting_ranked(void **state) {
    (void)state;
    DsaConfig *cfg = small_config();
    DsaPlanLayout base = layout(1, 1, 1, 1, DSA_PLAN_RECOMPUTE_OFF);
    DsaPlanStage all[32], fit[32], closest;
    int n_fit = 0, n_valid = 0;
    /* 4 GPUs: cp 1, 2, 4 (dp 4, 2, 1) x ep 1, 2, 4: 9 layouts, all valid, all fit 1 TiB */
    assert_ok(dsa_plan_search(cfg, 1, 4, &base, &HW, all, 32, &n_fit, &n_valid, NULL));
    assert_int_equal(n_valid, 9);
    assert_int_equal(n_fit, 9);
    for (int i = 1; i < n_fit; i++) assert_true(all[i - 1].step_s <= all[i].step_s);
    /* a memory between the smallest and the largest plan: only those at or below it */
    int64_t lo = all[0].bytes.total, hi = lo;
    for (int i = 0; i < n_fit; i++) {
        if (all[i].bytes.total < lo) lo = all[i].bytes.total;
        if (all[i].bytes.total > hi) hi = all[i].bytes.total;
    }
    assert_true(lo < hi);
    DsaPlanHardware hw = HW;
    hw.gpu_mem = (lo + hi) / 2;
    int expect = 0;
    for (int i = 0; i < 9; i++) expect += all[i].bytes.total <= hw.gpu_mem;
    assert_ok(dsa_plan_search(cfg, 1, 4, &base, &hw, fit, 32, &n_fit, &n_valid, &closest));
    assert_int_equal(n_fit, expect);
    assert_true(n_fit > 0 && n_fit < 9);
    for (int i = 0; i < n_fit; i++) assert_true(fit[i].fits && fit[i].bytes.total <= hw.gpu_mem);
    /* nothing fits: the closest is the smallest */
    hw.gpu_mem = lo - 1;
    assert_ok(dsa_plan_search(cfg, 1, 4, &base, &hw, fit, 32, &n_fit, &n_valid, &closest));
    assert_int_equal(n_fit, 0);
    assert_int_equal(closest.bytes.total, lo);
    /* recompute auto turns it on where only that fits */
    DsaPlanLayout l = layout(1, 1, 1, 1, DSA_PLAN_RECOMPUTE_AUTO);
    DsaPlanStage off, on;
    l.recompute = DSA_PLAN_RECOMPUTE_OFF;
    assert_ok(dsa_plan_stage(cfg, 1, &l, &HW, &off));
    l.recompute = DSA_PLAN_RECOMPUTE_ON;
    assert_ok(dsa_plan_stage(cfg, 1, &l, &HW, &on));
    assert_true(on.bytes.total < off.bytes.total);
    hw.gpu_mem = on.bytes.total;
    l.recompute = DSA_PLAN_RECOMPUTE_AUTO;
    DsaPlanStage chosen;
    assert_ok(dsa_plan_stage(cfg, 1, &l, &hw, &chosen));
    assert_int_equal(chosen.layout.recompute, DSA_PLAN_RECOMPUTE_ON);
    assert_true(chosen.fits);
    hw.gpu_mem = off.bytes.total; /* both fit: the sizing keeps it off */
    assert_ok(dsa_plan_stage(cfg, 1, &l, &hw, &chosen));
    assert_int_equal(chosen.layout.recompute, DSA_PLAN_RECOMPUTE_OFF);
    dsa_free(cfg, sizeof *cfg);
}

static void test_refusals(void **state) {
    (void)state;
    DsaConfig *cfg = small_config();
    DsaPlanStage p;
    DsaPlanLayout l = layout(3, 1, 1, 1, DSA_PLAN_RECOMPUTE_OFF);
    assert_fails_with(dsa_plan_stage(cfg, 1, &l, &HW, &p), DSA_ERR_ARG, "--dp 3 x --micro-batch 1 does not divide stages.1.global_batch = 4");
    l = layout(1, 3, 1, 1, DSA_PLAN_RECOMPUTE_OFF);
    assert_fails_with(dsa_plan_stage(cfg, 1, &l, &HW, &p), DSA_ERR_ARG, "--cp 3 does not divide the 32-token sequences");
    l = layout(4, 1, 3, 1, DSA_PLAN_RECOMPUTE_OFF);
    assert_fails_with(dsa_plan_stage(cfg, 1, &l, &HW, &p), DSA_ERR_ARG, "--ep 3 does not divide dp x cp = 4");
    l = layout(1, 1, 1, 3, DSA_PLAN_RECOMPUTE_OFF);
    assert_fails_with(dsa_plan_stage(cfg, 1, &l, &HW, &p), DSA_ERR_ARG, "--zero 3");
    /* sizes that overflow 64 bits are refused, not wrapped */
    cfg->stages[1].global_batch = (int64_t)1 << 40;
    l = layout(1, 1, 1, 1, DSA_PLAN_RECOMPUTE_OFF);
    l.micro_batch = (int64_t)1 << 30;
    l.seq_len = (int64_t)1 << 30;
    assert_fails_with(dsa_plan_stage(cfg, 1, &l, &HW, &p), DSA_ERR_CONFIG, "overflow");
    cfg->stages[1].steps = (int64_t)1 << 40;
    cfg->stages[1].seq_len = (int64_t)1 << 20;
    int64_t t = 0;
    assert_fails_with(dsa_plan_stage_tokens(cfg, 1, 0, &t), DSA_ERR_CONFIG, "overflows 64 bits");
    /* a plan that does not fit stops the trainer with the table */
    DsaConfig *ok = small_config();
    DsaPlanHardware hw = HW;
    hw.gpu_mem = 1000;
    assert_ok(dsa_plan_stage(ok, 1, &(DsaPlanLayout){.dp = 1, .cp = 1, .ep = 1, .zero = 1, .micro_batch = 1,
                                                     .recompute = DSA_PLAN_RECOMPUTE_AUTO},
                             &hw, &p));
    assert_false(p.fits);
    assert_fails_with(dsa_plan_require_fit(ok, &p), DSA_ERR_NOMEM, "does not fit the device");
    assert_fails_with(dsa_plan_require_fit(ok, &p), DSA_ERR_NOMEM, "optimizer (AdamW)");
    dsa_free(ok, sizeof *ok);
    dsa_free(cfg, sizeof *cfg);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sparse_dp2_zero1_by_hand),
        cmocka_unit_test(test_warmup_dp2_by_hand),
        cmocka_unit_test(test_cp_ep_comm_by_hand),
        cmocka_unit_test(test_v32_token_counts),
        cmocka_unit_test(test_v32_layer_fits_80gb),
        cmocka_unit_test(test_search_lists_fitting_ranked),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
