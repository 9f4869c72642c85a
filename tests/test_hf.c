/* test_hf.c: Hugging Face checkpoint directories (checkpoints/hf.h): round trips of the
 * streaming writer and the sharded, FP8 reader, and FP8 block (de)quantization; the
 * reader's and writer's errors and memory are in test_hf_errors.c.
 *
 * Round trips through the writer and the reader (one file; 3+ shards with a tensor
 * larger than the shard limit and a scale in another shard than its weight; mixed
 * F32/BF16/F16/F8 dtypes; puts in reverse order), the index's exact content, FP8
 * dequantization against the formula of DSA-SPEC §3.2 with an e4m3 decoder written
 * here from the format's definition (partial edge blocks, non-default blocks), the
 * export rule (power-of-two minimal scales, zero blocks, NaN/Inf refused, no
 * saturation, exact round trips of block-scaled e4m3 weights).
 */
#include <errno.h>
#include <sys/stat.h>

#include <cJSON.h>

#include "checkpoints/hf.h"
#include "checkpoints/safetensors.h"
#include "core/fileutil.h"
#include "core/mem.h"
#include "test_util.h"

/* ---- helpers ----------------------------------------------------------------------- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(void) {
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rng_state >> 33);
}
/* Uniform in [-1, 1). */
static float rnd_unit(void) { return (float)rnd() / 2147483648.0f - 1.0f; }

static uint16_t bf16_bits(float x) { /* x is bf16-exact in these tests */
    uint32_t b;
    memcpy(&b, &x, 4);
    assert_int_equal(b & 0xffff, 0);
    return (uint16_t)(b >> 16);
}

/* Half bits of x, for x = m · 2^e exactly representable as a normal half (checked). */
static uint16_t half_bits(float x) {
    if (x == 0.0f) return signbit(x) ? 0x8000 : 0;
    int e;
    float f = frexpf(fabsf(x), &e); /* |x| = f · 2^e, f in [0.5, 1) */
    int exp_field = e - 1 + 15;
    float man = (2.0f * f - 1.0f) * 1024.0f;
    assert_true(exp_field > 0 && exp_field < 31 && man == floorf(man));
    return (uint16_t)((x < 0 ? 0x8000 : 0) | exp_field << 10 | (int)man);
}

/* e4m3fn value of a code from the format's definition (DSA-SPEC §3.2), independent of
 * kernels/rules/fp8.h: sign, 4 exponent bits with bias 7, 3 mantissa bits, 0x7f/0xff NaN. */
static double e4m3_value(uint8_t c) {
    int s = c >> 7, e = (c >> 3) & 15, m = c & 7;
    if (e == 15 && m == 7) return NAN;
    double v = e ? ldexp(1.0 + m / 8.0, e - 7) : ldexp(m / 8.0, -6);
    return s ? -v : v;
}

/* A random non-NaN e4m3 code. */
static uint8_t rnd_code(void) {
    uint8_t c;
    do c = (uint8_t)rnd();
    while ((c & 0x7f) == 0x7f);
    return c;
}

/* ---- a mixed-dtype model written with the streaming writer -------------------------- */

enum { N_MODEL = 7 };
typedef struct {
    const char *name;
    DsaDType dtype;
    int ndim;
    int64_t shape[2];
    void *data;      /* stored bytes */
    size_t bytes;
    float *want;     /* what read_f32 must give (NULL for scales) */
} ModelTensor;

/* Tensors of every dtype: an FP8 weight [200, 130] (partial edge blocks) whose scale is
 * planned last (another shard when sharded), a large F32 tensor, BF16, F16, a scalar. */
static void model_make(ModelTensor *m) {
    static const ModelTensor shapes[N_MODEL] = {
        {"model.layers.0.self_attn.q_a_proj.weight", DSA_F8_E4M3, 2, {200, 130}, 0, 0, 0},
        {"model.embed_tokens.weight", DSA_F32, 2, {64, 100}, 0, 0, 0}, /* 25600 bytes */
        {"model.layers.0.input_layernorm.weight", DSA_BF16, 1, {300}, 0, 0, 0},
        {"model.layers.0.mlp.gate.weight", DSA_F16, 2, {17, 9}, 0, 0, 0},
        {"model.norm.weight", DSA_F32, 1, {1000}, 0, 0, 0},
        {"model.scalar", DSA_F32, 0, {0}, 0, 0, 0},
        {"model.layers.0.self_attn.q_a_proj.weight_scale_inv", DSA_F32, 2, {2, 2}, 0, 0, 0},
    };
    for (int k = 0; k < N_MODEL; k++) {
        m[k] = shapes[k];
        int64_t n = 1;
        for (int d = 0; d < m[k].ndim; d++) n *= m[k].shape[d];
        m[k].bytes = (size_t)n * dsa_dtype_size(m[k].dtype);
        m[k].data = calloc(1, m[k].bytes + 1);
        m[k].want = k == N_MODEL - 1 ? NULL : calloc((size_t)n + 1, sizeof(float));
        for (int64_t i = 0; i < n; i++) {
            float v;
            switch (m[k].dtype) {
            case DSA_F32:
                v = rnd_unit() * 3.0f;
                memcpy((float *)m[k].data + i, &v, 4);
                if (m[k].want) m[k].want[i] = v;
                break;
            case DSA_BF16: {
                v = (float)(int)(rnd() % 255 - 127) / 32.0f; /* 8 significant bits at most */
                uint16_t b = bf16_bits(v);
                memcpy((uint8_t *)m[k].data + 2 * i, &b, 2);
                m[k].want[i] = v;
                break;
            }
            case DSA_F16: {
                v = (float)(int)(rnd() % 2001 - 1000) / 64.0f;
                uint16_t h = half_bits(v);
                memcpy((uint8_t *)m[k].data + 2 * i, &h, 2);
                m[k].want[i] = v;
                break;
            }
            default: /* F8: codes now, values once the scales are known */
                ((uint8_t *)m[k].data)[i] = rnd_code();
            }
        }
    }
    float *s = m[N_MODEL - 1].data;
    s[0] = 0x1p-8f, s[1] = 0.75f, s[2] = 3.0f, s[3] = 0x1p-20f; /* any f32, not only powers of two */
    const uint8_t *w8 = m[0].data;
    for (int64_t i = 0; i < 200; i++)
        for (int64_t j = 0; j < 130; j++)
            m[0].want[i * 130 + j] = (float)(e4m3_value(w8[i * 130 + j]) * s[(i / 128) * 2 + j / 128]);
}

static void model_free(ModelTensor *m) {
    for (int k = 0; k < N_MODEL; k++) free(m[k].data), free(m[k].want);
}

/* Plan in model order, put in reverse order. */
static void model_write(const ModelTensor *m, const char *dir, uint64_t max_shard) {
    size_t live = dsa_mem_live();
    DsaHfWriter w;
    assert_ok(dsa_hf_writer_init(&w, dir, max_shard));
    for (int k = 0; k < N_MODEL; k++) assert_ok(dsa_hf_writer_plan(&w, m[k].name, m[k].dtype, m[k].ndim, m[k].shape));
    assert_ok(dsa_hf_writer_start(&w));
    for (int k = N_MODEL - 1; k >= 0; k--) assert_ok(dsa_hf_writer_put(&w, m[k].name, m[k].data));
    assert_ok(dsa_hf_writer_finish(&w));
    dsa_hf_writer_abort(&w); /* after finish: frees only */
    assert_int_equal(dsa_mem_live(), live);
}

/* Open, check the listing, read every tensor bit for bit. */
static void model_check(const ModelTensor *m, const char *dir, bool sharded) {
    size_t live = dsa_mem_live();
    DsaHfReader r;
    assert_ok(dsa_hf_open(&r, dir));
    assert_int_equal(r.sharded, sharded);
    assert_int_equal(r.count, N_MODEL - 1); /* the scale belongs to its weight */
    assert_null(dsa_hf_find(&r, m[N_MODEL - 1].name));
    uint64_t total = 0;
    for (int k = 0; k < N_MODEL; k++) total += m[k].bytes;
    assert_int_equal(r.total_bytes, total);
    for (int i = 1; i < r.count; i++) assert_true(strcmp(r.tensors[i - 1].name, r.tensors[i].name) < 0);
    for (int s = 0; s < r.n_shards; s++) {
        const char *fmt = dsa_safetensors_meta(&r.shards[s], "format");
        assert_non_null(fmt);
        assert_string_equal(fmt, "pt");
    }
    const DsaHfTensor *w = dsa_hf_find(&r, m[0].name);
    assert_non_null(w);
    assert_int_equal(w->dtype, DSA_F8_E4M3);
    assert_non_null(w->scale);
    assert_string_equal(w->scale->name, m[N_MODEL - 1].name);
    for (int k = 0; k < N_MODEL - 1; k++) {
        const DsaHfTensor *t = dsa_hf_find(&r, m[k].name);
        assert_non_null(t);
        assert_int_equal(t->dtype, m[k].dtype);
        assert_non_null(strstr(dsa_hf_file_of(&r, t), dir));
        size_t n = m[k].bytes / dsa_dtype_size(m[k].dtype);
        float *got = malloc((n + 1) * sizeof *got);
        assert_ok(dsa_hf_read_f32(&r, m[k].name, m[k].ndim, m[k].shape, got));
        if (n && memcmp(got, m[k].want, n * sizeof *got))
            for (size_t i = 0; i < n; i++)
                if (memcmp(&got[i], &m[k].want[i], 4))
                    fail_msg("%s[%zu]: got %.9g, want %.9g", m[k].name, i, got[i], m[k].want[i]);
        free(got);
    }
    dsa_hf_close(&r);
    dsa_hf_close(&r); /* closing a zeroed reader is a no-op */
    assert_int_equal(dsa_mem_live(), live); /* every byte-counted allocation freed */
}

/* ---- round trips ------------------------------------------------------------------- */

static void test_round_trip_single(void **state) {
    (void)state;
    ModelTensor m[N_MODEL];
    model_make(m);
    const char *dir = test_fresh_dir("single");
    test_put_file_text(dir, "model.safetensors.index.json", "stale"); /* removed by start */
    model_write(m, dir, 0);
    assert_int_equal(test_count_files(dir), 1);
    assert_true(test_file_exists(dir, "model.safetensors"));
    model_check(m, dir, false);
    model_free(m);
}

static void test_round_trip_sharded(void **state) {
    (void)state;
    ModelTensor m[N_MODEL];
    model_make(m);
    const char *dir = test_fresh_dir("sharded");
    /* limit 12000: q_a_proj (26000 B, over the limit) alone; embed (25600) alone; bf16
     * 600 + f16 306 + norm 4000 + scalar 4 + scale 16 together. */
    model_write(m, dir, 12000);
    static const char *files[] = {"model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
                                  "model-00003-of-00003.safetensors", "model.safetensors.index.json"};
    assert_int_equal(test_count_files(dir), 4);
    for (int i = 0; i < 4; i++) assert_true(test_file_exists(dir, files[i]));
    model_check(m, dir, true);

    /* The index: total_size, every tensor to the shard the greedy rule gives, sorted. */
    char path[600];
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    char *text = NULL;
    size_t len = 0;
    assert_ok(dsa_file_read_all(path, &text, &len));
    cJSON *root = cJSON_Parse(text);
    assert_non_null(root);
    const cJSON *total = cJSON_GetObjectItem(cJSON_GetObjectItem(root, "metadata"), "total_size");
    uint64_t want_total = 0;
    for (int k = 0; k < N_MODEL; k++) want_total += m[k].bytes;
    assert_true(cJSON_IsNumber(total));
    assert_int_equal((uint64_t)total->valuedouble, want_total);
    const cJSON *wm = cJSON_GetObjectItem(root, "weight_map");
    assert_int_equal(cJSON_GetArraySize(wm), N_MODEL);
    static const int shard_of[N_MODEL] = {0, 1, 2, 2, 2, 2, 2};
    for (int k = 0; k < N_MODEL; k++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(wm, m[k].name);
        assert_true(cJSON_IsString(v));
        assert_string_equal(v->valuestring, files[shard_of[k]]);
    }
    const cJSON *kv, *prev = NULL;
    cJSON_ArrayForEach(kv, wm) {
        if (prev) assert_true(strcmp(prev->string, kv->string) < 0);
        prev = kv;
    }
    cJSON_Delete(root);
    dsa_free(text, len + 1);

    /* Each shard holds just its tensors, header padded to 8, data tiling the file. */
    DsaHfReader r;
    assert_ok(dsa_hf_open(&r, dir));
    assert_int_equal(r.n_shards, 3); /* in the index's order of first mention */
    for (int s = 0; s < 3; s++) assert_int_equal(r.shards[s].header_bytes % 8, 0);
    static const int count_of[3] = {1, 1, 5};
    for (int k = 0; k < N_MODEL - 1; k++) {
        const DsaHfTensor *t = dsa_hf_find(&r, m[k].name);
        assert_non_null(strstr(dsa_hf_file_of(&r, t), files[shard_of[k]]));
        assert_int_equal(r.shards[t->shard].count, count_of[shard_of[k]]);
    }
    const DsaHfTensor *w = dsa_hf_find(&r, m[0].name);
    assert_non_null(strstr(r.shards[w->scale_shard].path, files[2]));
    dsa_hf_close(&r);
    model_free(m);
}

/* No tensors at all, and 0-element tensors: still valid files. */
static void test_round_trip_empty(void **state) {
    (void)state;
    const char *dir = test_fresh_dir("empty");
    DsaHfWriter w;
    assert_ok(dsa_hf_writer_init(&w, dir, 0));
    int64_t shape[2] = {0, 5};
    assert_ok(dsa_hf_writer_plan(&w, "e", DSA_BF16, 2, shape));
    assert_ok(dsa_hf_writer_start(&w));
    assert_ok(dsa_hf_writer_put(&w, "e", NULL));
    assert_ok(dsa_hf_writer_finish(&w));
    dsa_hf_writer_abort(&w);
    DsaHfReader r;
    assert_ok(dsa_hf_open(&r, dir));
    assert_int_equal(r.count, 1);
    float x;
    assert_ok(dsa_hf_read_f32(&r, "e", 2, shape, &x));
    dsa_hf_close(&r);
}

/* ---- FP8 blocks -------------------------------------------------------------------- */

static void check_dequantize(int64_t rows, int64_t cols, int64_t b0, int64_t b1) {
    int64_t block[2] = {b0, b1}, ss[2];
    dsa_fp8_block_scale_shape(rows, cols, block, ss);
    assert_int_equal(ss[0], (rows + b0 - 1) / b0);
    assert_int_equal(ss[1], (cols + b1 - 1) / b1);
    uint8_t *w8 = malloc((size_t)(rows * cols));
    float *s = malloc((size_t)(ss[0] * ss[1]) * sizeof *s), *out = malloc((size_t)(rows * cols) * sizeof *out);
    for (int64_t i = 0; i < rows * cols; i++) w8[i] = rnd_code();
    for (int64_t i = 0; i < ss[0] * ss[1]; i++) s[i] = ldexpf(1.0f + (float)(rnd() % 8) / 8.0f, (int)(rnd() % 40) - 30);
    dsa_fp8_block_dequantize(w8, s, rows, cols, block, out);
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++) {
            double want = e4m3_value(w8[i * cols + j]) * (double)s[(i / b0) * ss[1] + j / b1];
            if (out[i * cols + j] != (float)want)
                fail_msg("[%lld, %lld] of %lldx%lld in %lldx%lld blocks: got %.9g, want %.9g", (long long)i,
                         (long long)j, (long long)rows, (long long)cols, (long long)b0, (long long)b1,
                         out[i * cols + j], want);
        }
    free(w8), free(s), free(out);
}

static void test_fp8_dequantize(void **state) {
    (void)state;
    check_dequantize(200, 130, 128, 128); /* partial edge blocks both ways */
    check_dequantize(256, 128, 128, 128); /* whole blocks */
    check_dequantize(37, 53, 16, 8);      /* non-default blocks */
    check_dequantize(5, 300, 1, 64);
    check_dequantize(1, 1, 128, 128);
    /* NaN codes decode to NaN */
    uint8_t nan_code[2] = {0x7f, 0xff};
    float one = 1.0f, out[2];
    int64_t block[2] = {128, 128};
    dsa_fp8_block_dequantize(nan_code, &one, 1, 2, block, out);
    assert_true(isnan(out[0]) && isnan(out[1]));
}

/* The export rule on w [rows, cols]: checked element by element and block by block. */
static void check_quantize(const float *w, int64_t rows, int64_t cols, const int64_t block[2]) {
    int64_t ss[2];
    dsa_fp8_block_scale_shape(rows, cols, block, ss);
    uint8_t *w8 = malloc((size_t)(rows * cols) + 1);
    float *s = malloc((size_t)(ss[0] * ss[1] + 1) * sizeof *s);
    assert_ok(dsa_fp8_block_quantize(w, rows, cols, block, w8, s, "test weight"));
    for (int64_t bi = 0; bi < ss[0]; bi++)
        for (int64_t bj = 0; bj < ss[1]; bj++) {
            double amax = 0;
            for (int64_t i = bi * block[0]; i < rows && i < (bi + 1) * block[0]; i++)
                for (int64_t j = bj * block[1]; j < cols && j < (bj + 1) * block[1]; j++)
                    amax = fmax(amax, fabs(w[i * cols + j]));
            double sc = s[bi * ss[1] + bj];
            int e;
            assert_true(frexp(sc, &e) == 0.5); /* a power of two */
            if (amax == 0) {
                assert_true(sc == 0x1p-22);
            } else {
                assert_true(amax / sc <= 448.0);      /* never saturates */
                assert_true(amax / (sc / 2) > 448.0); /* the smallest such power */
            }
            for (int64_t i = bi * block[0]; i < rows && i < (bi + 1) * block[0]; i++)
                for (int64_t j = bj * block[1]; j < cols && j < (bj + 1) * block[1]; j++) {
                    double x = w[i * cols + j] / sc, got = e4m3_value(w8[i * cols + j]);
                    /* got is the e4m3 value nearest x: no other code is closer */
                    for (int c = 0; c < 256; c++) {
                        double v = e4m3_value((uint8_t)c);
                        if (!isnan(v) && fabs(v - x) < fabs(got - x))
                            fail_msg("[%lld, %lld]: w/S = %.9g coded as %.9g, but %.9g is nearer", (long long)i,
                                     (long long)j, x, got, v);
                    }
                }
        }
    free(w8), free(s);
}

static void test_fp8_quantize_rule(void **state) {
    (void)state;
    int64_t rows = 200, cols = 130, block[2] = {128, 128};
    float *w = malloc((size_t)(rows * cols) * sizeof *w);
    for (int64_t i = 0; i < rows * cols; i++) w[i] = rnd_unit() * ldexpf(1.0f, (int)(i / 97 % 30) - 15);
    for (int64_t i = 128; i < rows; i++) /* the bottom-right edge block is all zeros */
        for (int64_t j = 128; j < cols; j++) w[i * cols + j] = (i + j) % 2 ? 0.0f : -0.0f;
    check_quantize(w, rows, cols, block);
    /* amax exactly 448 · 2^k gives S = 2^k; one ulp more gives 2^(k+1). */
    float edge[4] = {448.0f * 0x1p-5f, 1.0f, -2.0f, 0.5f};
    uint8_t c8[4];
    float sc[2];
    int64_t b2[2] = {1, 2};
    assert_ok(dsa_fp8_block_quantize(edge, 2, 2, b2, c8, sc, "edge"));
    assert_true(sc[0] == 0x1p-5f);
    assert_true(sc[1] == 0x1p-7f); /* ceil(log2(2 / 448)) = ceil(-7.81) = -7 */
    edge[0] = nextafterf(448.0f * 0x1p-5f, INFINITY);
    assert_ok(dsa_fp8_block_quantize(edge, 2, 2, b2, c8, sc, "edge"));
    assert_true(sc[0] == 0x1p-4f);
    check_quantize(edge, 2, 2, b2);
    /* non-default blocks, huge and tiny values */
    int64_t b3[2] = {7, 5};
    for (int64_t i = 0; i < rows * cols; i++) w[i] = rnd_unit() * ldexpf(1.0f, (int)(rnd() % 200) - 100);
    w[0] = 3e38f, w[1] = -1e-40f;
    check_quantize(w, rows, cols, b3);
    free(w);
}

static void test_fp8_quantize_sec_3_2(void **state) {
    (void)state;
    /* S = 2^ceil(log2(2 / 448)) = 2^-7: codes 256 and 128 */
    float v[2] = {2.0f, 1.0f};
    uint8_t c[2];
    float s;
    int64_t b[2] = {1, 2};
    assert_ok(dsa_fp8_block_quantize(v, 1, 2, b, c, &s, "x"));
    assert_true(s == 0x1p-7f); /* log2(2/448) = -7.807, ceil -7 */
    assert_true(e4m3_value(c[0]) == 256.0 && e4m3_value(c[1]) == 128.0);
}

/* dequantize(quantize(W)) == W when W is e4m3 values times power-of-two block scales. */
static void test_fp8_exact_round_trip(void **state) {
    (void)state;
    int64_t rows = 200, cols = 130, block[2] = {128, 128}, ss[2];
    dsa_fp8_block_scale_shape(rows, cols, block, ss);
    float *w = malloc((size_t)(rows * cols) * sizeof *w), *back = malloc((size_t)(rows * cols) * sizeof *back);
    uint8_t *w8 = malloc((size_t)(rows * cols));
    float s[4], s_in[4] = {0x1p-10f, 0x1p3f, 0x1p-30f, 1.0f};
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++)
            w[i * cols + j] = (float)e4m3_value(rnd_code()) * s_in[(i / 128) * 2 + j / 128];
    w[5] = -0.0f;
    assert_ok(dsa_fp8_block_quantize(w, rows, cols, block, w8, s, "exact"));
    dsa_fp8_block_dequantize(w8, s, rows, cols, block, back);
    for (int64_t i = 0; i < rows * cols; i++)
        if (memcmp(&w[i], &back[i], 4)) fail_msg("element %lld: %.9g came back as %.9g", (long long)i, w[i], back[i]);
    free(w), free(back), free(w8);
}

static void test_fp8_quantize_refuses(void **state) {
    (void)state;
    float w[6] = {1, 2, 3, 4, 5, 6};
    uint8_t c[6];
    float s[6];
    int64_t b[2] = {2, 2};
    w[4] = NAN;
    assert_fails_with(dsa_fp8_block_quantize(w, 2, 3, b, c, s, "layer 3 wq_b"), DSA_ERR_ARG, "layer 3 wq_b");
    test_msg_has("[1, 1]", "NaN", NULL);
    w[4] = -INFINITY;
    assert_fails_with(dsa_fp8_block_quantize(w, 2, 3, b, c, s, "wk"), DSA_ERR_ARG, "infinite");
    int64_t bad[2] = {0, 128};
    assert_fails_with(dsa_fp8_block_quantize(w, 2, 3, bad, c, s, "wk"), DSA_ERR_ARG, "wk");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_single),    cmocka_unit_test(test_round_trip_sharded),
        cmocka_unit_test(test_round_trip_empty),     cmocka_unit_test(test_fp8_dequantize),
        cmocka_unit_test(test_fp8_quantize_rule),    cmocka_unit_test(test_fp8_quantize_sec_3_2),
        cmocka_unit_test(test_fp8_exact_round_trip), cmocka_unit_test(test_fp8_quantize_refuses),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    test_tmpdir_remove();
    return rc;
}
