/* test_export.c: the streamed conversion loop (pretrain/model_io.h dsa_model_stream) and
 * the export rules (pretrain/export.h): bf16 rounding at its edges (ties to even, NaN,
 * infinities, overflow, signed zero); FP8 refused for 1-D tensors by name; the heap in
 * use during a stream stays of the order of the largest tensor, not of the model; the
 * per-slot dtype table of DSA-SPEC §3.1; the export config.json keys. The end-to-end
 * round trips, broken checkpoints and the multi-GB RSS bound are tests/cli/test_export.sh. */
#include <cJSON.h>

#include "checkpoints/hf.h"
#include "checkpoints/safetensors.h"
#include "core/config.h"
#include "core/fileutil.h"
#include "core/mem.h"
#include "pretrain/export.h"
#include "pretrain/model_io.h"
#include "pretrain/params.h"
#include "test_util.h"

/* A hand-made table of `n` entries "t<i>.weight" of shape [rows, cols] (cols 0: 1-D). */
static DsaParamTable make_table(DsaParamInfo *info, int n, int64_t rows, int64_t cols) {
    DsaParamTable t = {.info = info, .count = n, .capacity = n};
    for (int i = 0; i < n; i++) {
        DsaParamInfo *p = &info[i];
        memset(p, 0, sizeof *p);
        snprintf(p->name, sizeof p->name, "t%d.weight", i);
        p->slot = DSA_W_O;
        p->layer = 0;
        p->ndim = cols ? 2 : 1;
        p->shape[0] = rows, p->shape[1] = cols ? cols : 1;
        p->numel = rows * (cols ? cols : 1);
        p->offset = t.total;
        p->group = DSA_GROUP_MAIN;
        t.total += p->numel;
    }
    return t;
}

/* Write `t` with values `v` (t.total floats) as an F32 checkpoint directory `dir`. */
static void write_source(const char *dir, const DsaParamTable *t, const float *v) {
    assert_ok(dsa_mkdir_p(dir));
    char path[600];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    DsaStTensorRef refs[16];
    assert_true(t->count <= 16);
    for (int i = 0; i < t->count; i++) {
        const DsaParamInfo *p = &t->info[i];
        refs[i] = (DsaStTensorRef){.name = p->name, .dtype = DSA_F32, .ndim = p->ndim, .data = v + p->offset};
        refs[i].shape[0] = p->shape[0], refs[i].shape[1] = p->shape[1];
    }
    assert_ok(dsa_safetensors_write(path, refs, t->count, NULL, NULL, 0));
}

/* Stream `src` into `dst` with one dtype for every entry. */
static DsaStatus stream(const char *src, const char *dst, const DsaParamTable *t, DsaDType d) {
    DsaDType dtypes[16];
    for (int i = 0; i < t->count; i++) dtypes[i] = d;
    DsaHfReader r;
    DSA_TRY(dsa_hf_open(&r, src));
    DsaHfWriter w;
    assert_ok(dsa_mkdir_p(dst));
    DsaStatus st = dsa_hf_writer_init(&w, dst, 0);
    if (st == DSA_OK) {
        DsaModelStream s = {.src = &r, .table = t, .dtypes = dtypes, .block = {128, 128}, .label = "test"};
        st = dsa_model_stream(&s, &w, NULL);
        if (st == DSA_OK) st = dsa_hf_writer_finish(&w);
        dsa_hf_writer_abort(&w);
    }
    dsa_hf_close(&r);
    return st;
}

static float from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* bf16 output: round to nearest even, NaN stays NaN (quiet), overflow to inf. */
static void test_bf16_rounding_edges(void **state) {
    (void)state;
    static const struct {
        uint32_t in;
        uint16_t out;
    } cases[] = {
        {0x3F800000u, 0x3F80}, /* 1.0 exact */
        {0x3F808000u, 0x3F80}, /* tie, even below */
        {0x3F818000u, 0x3F82}, /* tie, odd below: up */
        {0x3F808001u, 0x3F81}, /* just above the tie */
        {0x3F807FFFu, 0x3F80}, /* just below the tie */
        {0xBF818000u, 0xBF82}, /* negative tie */
        {0x7F800000u, 0x7F80}, /* +inf */
        {0xFF800000u, 0xFF80}, /* -inf */
        {0x7F7FFFFFu, 0x7F80}, /* FLT_MAX rounds to inf */
        {0x80000000u, 0x8000}, /* -0 */
        {0x00000001u, 0x0000}, /* smallest subnormal rounds to 0 */
        {0x7FC00001u, 0x7FC0}, /* quiet NaN with payload in the dropped bits */
        {0x7F800001u, 0x7FC0}, /* signaling NaN: must not become inf */
    };
    enum { N = sizeof cases / sizeof cases[0] };
    DsaParamInfo info[1];
    DsaParamTable t = make_table(info, 1, N, 0);
    float v[N];
    for (int i = 0; i < N; i++) v[i] = from_bits(cases[i].in);
    write_source(test_path("bf16-src"), &t, v);
    assert_ok(stream(test_path("bf16-src"), test_path("bf16-dst"), &t, DSA_BF16));
    DsaSafetensors st;
    char path[600];
    snprintf(path, sizeof path, "%s/model.safetensors", test_path("bf16-dst"));
    assert_ok(dsa_safetensors_open(&st, path));
    const DsaStEntry *e = dsa_safetensors_find(&st, "t0.weight");
    assert_non_null(e);
    assert_int_equal(e->dtype, DSA_BF16);
    const uint16_t *got = dsa_safetensors_data(&st, e);
    for (int i = 0; i < N; i++)
        if (got[i] != cases[i].out)
            fail_msg("case %d: f32 bits %08x -> bf16 %04x, expected %04x", i, cases[i].in, got[i], cases[i].out);
    dsa_safetensors_close(&st);
}

static void test_fp8_refused_for_1d(void **state) {
    (void)state;
    DsaParamInfo info[1];
    DsaParamTable t = make_table(info, 1, 16, 0);
    float v[16] = {0};
    write_source(test_path("fp8-1d-src"), &t, v);
    assert_fails_with(stream(test_path("fp8-1d-src"), test_path("fp8-1d-dst"), &t, DSA_F8_E4M3), DSA_ERR_ARG,
                      "t0.weight: FP8 output needs a 2-D");
}

/* Heap in use while streaming 8 tensors of 256 x 384 to FP8: one F32 buffer and one
 * code buffer of the largest tensor plus scales and bookkeeping, not the model's 3 MB. */
static void test_stream_memory_is_one_tensor(void **state) {
    (void)state;
    enum { N = 8, R = 256, C = 384 };
    DsaParamInfo info[N];
    DsaParamTable t = make_table(info, N, R, C);
    float *v = dsa_malloc((size_t)t.total * sizeof *v);
    assert_non_null(v);
    for (int64_t i = 0; i < t.total; i++) v[i] = (float)((i * 37 % 101) - 50) * 1e-3f;
    write_source(test_path("mem-src"), &t, v);
    dsa_free(v, (size_t)t.total * sizeof *v);
    size_t live = dsa_mem_live();
    dsa_mem_reset_peak();
    assert_ok(stream(test_path("mem-src"), test_path("mem-dst"), &t, DSA_F8_E4M3));
    size_t used = dsa_mem_peak() - live, one = (size_t)R * C * sizeof(float), model = one * N;
    if (used > one * 2)
        fail_msg("streaming used %zu bytes of heap: more than 2x one tensor (%zu), model %zu", used, one, model);
    assert_int_equal(dsa_mem_live(), live);
    /* and the values: dequantize(quantize(W)) as hf.h defines it */
    DsaHfReader r;
    assert_ok(dsa_hf_open(&r, test_path("mem-dst")));
    float *got = dsa_malloc(one), *src = dsa_malloc(one), *want = dsa_malloc(one), *sc = dsa_malloc(6 * sizeof(float));
    uint8_t *w8 = dsa_malloc((size_t)R * C);
    DsaHfReader s;
    assert_ok(dsa_hf_open(&s, test_path("mem-src")));
    for (int i = 0; i < N; i++) {
        int64_t shape[2] = {R, C}, block[2] = {128, 128};
        assert_ok(dsa_hf_read_f32(&r, info[i].name, 2, shape, got));
        assert_ok(dsa_hf_read_f32(&s, info[i].name, 2, shape, src));
        assert_ok(dsa_fp8_block_quantize(src, R, C, block, w8, sc, "test"));
        dsa_fp8_block_dequantize(w8, sc, R, C, block, want);
        assert_memory_equal(got, want, one);
    }
    dsa_hf_close(&s);
    dsa_hf_close(&r);
    dsa_free(got, one), dsa_free(src, one), dsa_free(want, one), dsa_free(sc, 6 * sizeof(float));
    dsa_free(w8, (size_t)R * C);
}

/* DSA-SPEC §3.1: the V3.2 FP8 checkpoint's dtype of each tensor. */
static void test_export_dtype_rule(void **state) {
    (void)state;
    static const DsaWeightSlot fp8[] = {DSA_W_Q_A,         DSA_W_Q_B,          DSA_W_Q,           DSA_W_KV_A,
                                        DSA_W_KV_B,        DSA_W_O,            DSA_W_IDX_WQ_B,    DSA_W_IDX_WK,
                                        DSA_W_GATE,        DSA_W_UP,           DSA_W_DOWN,        DSA_W_EXPERT_GATE,
                                        DSA_W_EXPERT_UP,   DSA_W_EXPERT_DOWN,  DSA_W_SHARED_GATE, DSA_W_SHARED_UP,
                                        DSA_W_SHARED_DOWN};
    for (int s = 0; s < DSA_W_SLOT_COUNT; s++) {
        bool is_fp8 = false;
        for (size_t k = 0; k < sizeof fp8 / sizeof fp8[0]; k++) is_fp8 |= fp8[k] == (DsaWeightSlot)s;
        bool is_f32 = s == DSA_W_ROUTER_BIAS;
        DsaDType want_fp8 = is_f32 ? DSA_F32 : is_fp8 ? DSA_F8_E4M3 : DSA_BF16;
        assert_int_equal(dsa_export_dtype((DsaWeightSlot)s, DSA_EXPORT_FP8), want_fp8);
        assert_int_equal(dsa_export_dtype((DsaWeightSlot)s, DSA_EXPORT_BF16), is_f32 ? DSA_F32 : DSA_BF16);
        assert_int_equal(dsa_export_dtype((DsaWeightSlot)s, DSA_EXPORT_F32), DSA_F32);
    }
    /* never FP8: weights_proj, router, norms, embeddings */
    assert_int_equal(dsa_export_dtype(DSA_W_IDX_WEIGHTS_PROJ, DSA_EXPORT_FP8), DSA_BF16);
    assert_int_equal(dsa_export_dtype(DSA_W_ROUTER, DSA_EXPORT_FP8), DSA_BF16);
    assert_int_equal(dsa_export_dtype(DSA_W_EMBED, DSA_EXPORT_FP8), DSA_BF16);
    DsaExportDType m;
    assert_ok(dsa_export_dtype_parse("fp8", &m));
    assert_int_equal(m, DSA_EXPORT_FP8);
    assert_fails_with(dsa_export_dtype_parse("int4", &m), DSA_ERR_ARG, "\"int4\"");
}

static cJSON *export_json(const DsaModelConfig *m, DsaExportDType mode) {
    char *text = NULL;
    int64_t block[2] = {128, 128};
    assert_ok(dsa_export_config_json(m, mode, block, &text));
    cJSON *j = cJSON_Parse(text);
    free(text);
    assert_non_null(j);
    return j;
}

/* The config.json of a V3.2 export, and that our loader reads it back. */
static void test_export_config(void **state) {
    (void)state;
    DsaConfig *cfg = dsa_calloc(1, sizeof *cfg);
    assert_non_null(cfg);
    assert_ok(dsa_config_load(cfg, "configs/tiny-dsa.json", NULL, 0));
    cfg->model.num_nextn_predict_layers = 1;
    cJSON *j = export_json(&cfg->model, DSA_EXPORT_FP8);
    assert_string_equal(cJSON_GetObjectItem(j, "model_type")->valuestring, "deepseek_v32");
    assert_string_equal(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "architectures"), 0)->valuestring,
                        "DeepseekV32ForCausalLM");
    assert_string_equal(cJSON_GetObjectItem(j, "torch_dtype")->valuestring, "bfloat16");
    assert_int_equal(cJSON_GetObjectItem(j, "num_nextn_predict_layers")->valueint, 0);
    assert_int_equal(cJSON_GetObjectItem(j, "index_topk")->valueint, (int)cfg->model.index_topk);
    assert_int_equal(cJSON_GetObjectItem(j, "index_n_heads")->valueint, (int)cfg->model.index_n_heads);
    assert_int_equal(cJSON_GetObjectItem(j, "index_head_dim")->valueint, (int)cfg->model.index_head_dim);
    const cJSON *q = cJSON_GetObjectItem(j, "quantization_config");
    assert_non_null(q);
    assert_string_equal(cJSON_GetObjectItem(q, "quant_method")->valuestring, "fp8");
    assert_string_equal(cJSON_GetObjectItem(q, "fmt")->valuestring, "e4m3");
    assert_string_equal(cJSON_GetObjectItem(q, "scale_fmt")->valuestring, "ue8m0");
    assert_int_equal(cJSON_GetArrayItem(cJSON_GetObjectItem(q, "weight_block_size"), 1)->valueint, 128);
    /* our loader reads the export's config back, quantization_config included */
    char *text = cJSON_Print(j);
    const char *path = test_write_file("export-config.json", text, strlen(text));
    free(text);
    DsaModelConfig back;
    assert_ok(dsa_model_config_load(&back, path));
    assert_true(back.has_indexer && back.has_fp8);
    assert_int_equal(back.num_nextn_predict_layers, 0);
    cJSON_Delete(j);

    j = export_json(&cfg->model, DSA_EXPORT_BF16);
    assert_null(cJSON_GetObjectItem(j, "quantization_config"));
    cJSON_Delete(j);

    /* without an indexer: V3 layout, no index keys */
    cfg->model.has_indexer = false;
    snprintf(cfg->model.model_type, sizeof cfg->model.model_type, "deepseek_v2");
    j = export_json(&cfg->model, DSA_EXPORT_F32);
    assert_string_equal(cJSON_GetObjectItem(j, "model_type")->valuestring, "deepseek_v2");
    assert_string_equal(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "architectures"), 0)->valuestring,
                        "DeepseekV2ForCausalLM");
    assert_string_equal(cJSON_GetObjectItem(j, "torch_dtype")->valuestring, "float32");
    assert_null(cJSON_GetObjectItem(j, "index_topk"));
    assert_null(cJSON_GetObjectItem(j, "quantization_config"));
    cJSON_Delete(j);
    dsa_free(cfg, sizeof *cfg);
}

/* A model without routed experts (the demo's tiny-dense, tiny-dsa): transformers types
 * n_routed_experts and num_experts_per_tok as integers, so the export writes 0 for both
 * and first_k_dense_replace = num_hidden_layers; our loader reads that back as dense. */
static void test_export_config_dense(void **state) {
    (void)state;
    DsaConfig *cfg = dsa_calloc(1, sizeof *cfg);
    assert_non_null(cfg);
    const char *configs[] = {"configs/tiny-dense.json", "configs/tiny-dsa.json"};
    for (int c = 0; c < 2; c++) {
        assert_ok(dsa_config_load(cfg, configs[c], NULL, 0));
        assert_false(cfg->model.has_moe);
        assert_true(cfg->model.num_experts_per_tok > 0); /* the file's value, unused by a dense model */
        cJSON *j = export_json(&cfg->model, DSA_EXPORT_BF16);
        const cJSON *e = cJSON_GetObjectItem(j, "n_routed_experts"), *k = cJSON_GetObjectItem(j, "num_experts_per_tok");
        assert_true(cJSON_IsNumber(e) && e->valuedouble == 0);
        assert_true(cJSON_IsNumber(k) && k->valuedouble == 0);
        assert_int_equal(cJSON_GetObjectItem(j, "first_k_dense_replace")->valueint, (int)cfg->model.num_hidden_layers);
        char *text = cJSON_Print(j);
        const char *path = test_write_file("export-dense-config.json", text, strlen(text));
        free(text);
        cJSON_Delete(j);
        DsaModelConfig back;
        assert_ok(dsa_model_config_load(&back, path));
        assert_false(back.has_moe);
        assert_int_equal(back.n_routed_experts, 0);
        assert_int_equal(back.has_indexer, cfg->model.has_indexer);
        DsaParamCounts a, b;
        dsa_model_param_counts(&cfg->model, &a);
        dsa_model_param_counts(&back, &b);
        assert_int_equal(a.total, b.total);
        assert_int_equal(b.moe, 0);
    }
    /* 0 in our own configs means the same as null */
    const char *sets[] = {"model.n_routed_experts=0"};
    assert_ok(dsa_config_load(cfg, "configs/tiny.json", sets, 1));
    assert_false(cfg->model.has_moe);
    assert_ok(dsa_config_validate(cfg));
    dsa_free(cfg, sizeof *cfg);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bf16_rounding_edges),       cmocka_unit_test(test_fp8_refused_for_1d),
        cmocka_unit_test(test_stream_memory_is_one_tensor), cmocka_unit_test(test_export_dtype_rule),
        cmocka_unit_test(test_export_config),             cmocka_unit_test(test_export_config_dense),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    test_tmpdir_remove();
    return rc;
}
