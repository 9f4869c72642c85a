/* test_hf.c: Hugging Face checkpoint directories (checkpoints/hf.h): sharded and FP8
 * reading, streaming writing, FP8 block (de)quantization.
 *
 * Round trips through the writer and the reader (one file; 3+ shards with a tensor
 * larger than the shard limit and a scale in another shard than its weight; mixed
 * F32/BF16/F16/F8 dtypes; puts in reverse order), the index's exact content, FP8
 * dequantization against the formula of DSA-SPEC §3.2 with an e4m3 decoder written
 * here from the format's definition (partial edge blocks, non-default blocks), the
 * export rule (power-of-two minimal scales, zero blocks, NaN/Inf refused, no
 * saturation, exact round trips of block-scaled e4m3 weights), every reader error
 * naming the file and the tensor, unaligned tensors from a foreign writer, the writer's
 * argument errors and abort, and a 64 MB tensor read
 * twice with its pages released in between (resident size from /proc/self/smaps).
 */
#include <dirent.h>
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

/* A fresh directory under the test directory. */
static const char *fresh_dir(const char *name) {
    const char *dir = test_path(name);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(mkdir(dir, 0755), 0);
    return dir;
}

static void put_file_text(const char *dir, const char *name, const char *text) {
    char path[600];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
    assert_int_equal(fclose(f), 0);
}

static bool file_exists(const char *dir, const char *name) {
    char path[600];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    struct stat sb;
    return stat(path, &sb) == 0;
}

static int count_files(const char *dir) {
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n;
}

/* The error message contains every one of the given strings (NULL-terminated). */
static void msg_has(const char *first, ...) {
    va_list ap;
    va_start(ap, first);
    for (const char *s = first; s; s = va_arg(ap, const char *))
        if (!strstr(dsa_error_message(), s)) fail_msg("message lacks \"%s\":\n%s", s, dsa_error_message());
    va_end(ap);
}

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
    const char *dir = fresh_dir("single");
    put_file_text(dir, "model.safetensors.index.json", "stale"); /* removed by start */
    model_write(m, dir, 0);
    assert_int_equal(count_files(dir), 1);
    assert_true(file_exists(dir, "model.safetensors"));
    model_check(m, dir, false);
    model_free(m);
}

static void test_round_trip_sharded(void **state) {
    (void)state;
    ModelTensor m[N_MODEL];
    model_make(m);
    const char *dir = fresh_dir("sharded");
    /* limit 12000: q_a_proj (26000 B, over the limit) alone; embed (25600) alone; bf16
     * 600 + f16 306 + norm 4000 + scalar 4 + scale 16 together. */
    model_write(m, dir, 12000);
    static const char *files[] = {"model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
                                  "model-00003-of-00003.safetensors", "model.safetensors.index.json"};
    assert_int_equal(count_files(dir), 4);
    for (int i = 0; i < 4; i++) assert_true(file_exists(dir, files[i]));
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
    const char *dir = fresh_dir("empty");
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
    msg_has("[1, 1]", "NaN", NULL);
    w[4] = -INFINITY;
    assert_fails_with(dsa_fp8_block_quantize(w, 2, 3, b, c, s, "wk"), DSA_ERR_ARG, "infinite");
    int64_t bad[2] = {0, 128};
    assert_fails_with(dsa_fp8_block_quantize(w, 2, 3, bad, c, s, "wk"), DSA_ERR_ARG, "wk");
}

/* ---- reader errors ------------------------------------------------------------------ */

/* Write one shard file `name` in `dir` with the given tensors (data zero-filled). */
typedef struct {
    const char *name;
    DsaDType dtype;
    int ndim;
    int64_t s0, s1, s2;
} Spec;

static void shard(const char *dir, const char *name, const Spec *specs, int n) {
    DsaStTensorRef refs[16];
    void *bufs[16];
    assert_true(n <= 16);
    for (int i = 0; i < n; i++) {
        refs[i] = (DsaStTensorRef){.name = specs[i].name, .dtype = specs[i].dtype, .ndim = specs[i].ndim,
                                   .shape = {specs[i].s0, specs[i].s1, specs[i].s2}};
        int64_t numel = 1;
        for (int d = 0; d < refs[i].ndim; d++) numel *= refs[i].shape[d];
        bufs[i] = calloc((size_t)numel + 1, dsa_dtype_size(specs[i].dtype));
        if (specs[i].dtype == DSA_F32) /* scales of 1 */
            for (int64_t k = 0; k < numel; k++) ((float *)bufs[i])[k] = 1.0f;
        refs[i].data = bufs[i];
    }
    char path[600];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    assert_ok(dsa_safetensors_write(path, refs, n, NULL, NULL, 0));
    for (int i = 0; i < n; i++) free(bufs[i]);
}

static const Spec SHARD_A[] = {{"a.weight", DSA_F32, 2, 2, 3, 0}, {"b.weight", DSA_BF16, 1, 4, 0, 0}};
static const Spec SHARD_B[] = {{"c.weight", DSA_F8_E4M3, 2, 130, 5, 0}, {"c.weight_scale_inv", DSA_F32, 2, 2, 1, 0}};
static const char GOOD_MAP[] = "{\"metadata\": {\"total_size\": 1}, \"weight_map\": {\"a.weight\": \"a.st\", "
                               "\"b.weight\": \"a.st\", \"c.weight\": \"b.st\", \"c.weight_scale_inv\": \"b.st\"}}";

/* A sharded directory with the good shards and the given index text. */
static const char *sharded_dir(const char *name, const char *index) {
    const char *dir = fresh_dir(name);
    shard(dir, "a.st", SHARD_A, 2);
    shard(dir, "b.st", SHARD_B, 2);
    put_file_text(dir, "model.safetensors.index.json", index);
    return dir;
}

#define OPEN_FAILS(dir, status, ...)                                                                  \
    do {                                                                                             \
        DsaHfReader r_;                                                                              \
        memset(&r_, 0x5a, sizeof r_);                                                                \
        size_t live_ = dsa_mem_live();                                                               \
        assert_fails_with(dsa_hf_open(&r_, (dir)), (status), "");                                    \
        assert_int_equal(dsa_mem_live(), live_);                                                     \
        msg_has(__VA_ARGS__, NULL);                                                                  \
        assert_null(r_.shards);                                                                      \
        assert_int_equal(r_.count, 0);                                                               \
    } while (0)

static void test_reader_index_errors(void **state) {
    (void)state;
    const char *dir = sharded_dir("good", GOOD_MAP);
    DsaHfReader r;
    assert_ok(dsa_hf_open(&r, dir));
    assert_int_equal(r.n_shards, 2);
    assert_int_equal(r.count, 3);
    dsa_hf_close(&r);

    OPEN_FAILS(sharded_dir("notjson", "{\"weight_map\": "), DSA_ERR_FORMAT, "notjson/model.safetensors.index.json",
               "not valid JSON");
    OPEN_FAILS(sharded_dir("nomap", "{\"metadata\": {}}"), DSA_ERR_FORMAT, "nomap/model.safetensors.index.json",
               "weight_map");
    OPEN_FAILS(sharded_dir("mapnum", "{\"weight_map\": {\"a.weight\": 3}}"), DSA_ERR_FORMAT,
               "mapnum/model.safetensors.index.json", "a.weight");
    OPEN_FAILS(sharded_dir("missing-shard", "{\"weight_map\": {\"a.weight\": \"a.st\", \"b.weight\": \"a.st\", "
                                            "\"c.weight\": \"gone.st\"}}"),
               DSA_ERR_FORMAT, "missing-shard/model.safetensors.index.json", "c.weight", "gone.st");
    OPEN_FAILS(sharded_dir("slash", "{\"weight_map\": {\"a.weight\": \"../slash/a.st\"}}"), DSA_ERR_FORMAT,
               "slash/model.safetensors.index.json", "a.weight", "../slash/a.st", "plain file name");
    OPEN_FAILS(sharded_dir("dotdot", "{\"weight_map\": {\"a.weight\": \"..\"}}"), DSA_ERR_FORMAT, "dotdot/model",
               "a.weight", "plain file name");
    /* a weight_map entry whose tensor is not in its shard */
    OPEN_FAILS(sharded_dir("notin", "{\"weight_map\": {\"a.weight\": \"a.st\", \"b.weight\": \"a.st\", "
                                    "\"c.weight\": \"b.st\", \"c.weight_scale_inv\": \"b.st\", "
                                    "\"d.weight\": \"b.st\"}}"),
               DSA_ERR_FORMAT, "notin/model.safetensors.index.json", "d.weight", "notin/b.st", "does not hold it");
    /* a shard tensor absent from weight_map */
    OPEN_FAILS(sharded_dir("absent", "{\"weight_map\": {\"a.weight\": \"a.st\", \"c.weight\": \"b.st\", "
                                     "\"c.weight_scale_inv\": \"b.st\"}}"),
               DSA_ERR_FORMAT, "absent/a.st", "b.weight", "not listed");
    /* listed twice */
    OPEN_FAILS(sharded_dir("twice", "{\"weight_map\": {\"a.weight\": \"a.st\", \"b.weight\": \"a.st\", "
                                    "\"c.weight\": \"b.st\", \"c.weight_scale_inv\": \"b.st\", "
                                    "\"a.weight\": \"a.st\"}}"),
               DSA_ERR_FORMAT, "twice/model.safetensors.index.json", "a.weight", "twice");
    /* a tensor held by two shards */
    dir = sharded_dir("two-shards", GOOD_MAP);
    static const Spec dup[] = {{"c.weight", DSA_F8_E4M3, 2, 130, 5, 0},
                               {"c.weight_scale_inv", DSA_F32, 2, 2, 1, 0},
                               {"a.weight", DSA_F32, 2, 2, 3, 0}};
    shard(dir, "b.st", dup, 3);
    OPEN_FAILS(dir, DSA_ERR_FORMAT, "two-shards/b.st", "a.weight", "two-shards/a.st");
    /* per-file checks of safetensors.h apply to shards: truncated, bad header */
    dir = sharded_dir("truncated", GOOD_MAP);
    char path[600];
    snprintf(path, sizeof path, "%s/a.st", dir);
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(truncate(path, sb.st_size - 3), 0);
    OPEN_FAILS(dir, DSA_ERR_FORMAT, "truncated/a.st", "tensor", "truncated file");
    dir = sharded_dir("badheader", GOOD_MAP);
    static const char bad[] = "\x10\0\0\0\0\0\0\0{\"c.weight\": 1}  ";
    test_write_file("badheader/b.st", bad, sizeof bad - 1);
    OPEN_FAILS(dir, DSA_ERR_FORMAT, "badheader/b.st", "c.weight");
    /* nothing to read */
    OPEN_FAILS(fresh_dir("nothing"), DSA_ERR_IO, "nothing", "model.safetensors");
    OPEN_FAILS(test_path("no-such-dir"), DSA_ERR_IO, "no-such-dir");
}

static void test_reader_fp8_errors(void **state) {
    (void)state;
    const char *dir = fresh_dir("noscale");
    static const Spec noscale[] = {{"x.weight", DSA_F8_E4M3, 2, 4, 4, 0}};
    shard(dir, "model.safetensors", noscale, 1);
    OPEN_FAILS(dir, DSA_ERR_FORMAT, "noscale/model.safetensors", "x.weight", "x.weight_scale_inv", "missing");

    dir = fresh_dir("orphan");
    static const Spec orphan[] = {{"y.weight_scale_inv", DSA_F32, 2, 1, 1, 0}, {"z", DSA_F32, 1, 1, 0, 0}};
    shard(dir, "model.safetensors", orphan, 2);
    OPEN_FAILS(dir, DSA_ERR_FORMAT, "orphan/model.safetensors", "y.weight_scale_inv", "y.weight", "missing");

    dir = fresh_dir("notfp8");
    static const Spec notfp8[] = {{"y.weight", DSA_BF16, 2, 4, 4, 0}, {"y.weight_scale_inv", DSA_F32, 2, 1, 1, 0}};
    shard(dir, "model.safetensors", notfp8, 2);
    OPEN_FAILS(dir, DSA_ERR_FORMAT, "notfp8/model.safetensors", "y.weight_scale_inv", "BF16", "not F8_E4M3");

    dir = fresh_dir("scaledtype");
    static const Spec scaledtype[] = {{"x.weight", DSA_F8_E4M3, 2, 4, 4, 0},
                                      {"x.weight_scale_inv", DSA_F16, 2, 1, 1, 0}};
    shard(dir, "model.safetensors", scaledtype, 2);
    OPEN_FAILS(dir, DSA_ERR_FORMAT, "scaledtype/model.safetensors", "x.weight_scale_inv", "F16", "expected F32");

    dir = fresh_dir("fp8-3d");
    static const Spec fp83d[] = {{"x.weight", DSA_F8_E4M3, 3, 2, 2, 2}, {"x.weight_scale_inv", DSA_F32, 2, 1, 1, 0}};
    shard(dir, "model.safetensors", fp83d, 2);
    OPEN_FAILS(dir, DSA_ERR_FORMAT, "fp8-3d/model.safetensors", "x.weight", "3 dims");

    dir = fresh_dir("fp8-bias");
    static const Spec fp8bias[] = {{"x.bias", DSA_F8_E4M3, 2, 2, 2, 0}};
    shard(dir, "model.safetensors", fp8bias, 1);
    OPEN_FAILS(dir, DSA_ERR_FORMAT, "fp8-bias/model.safetensors", "x.bias", "F8_E4M3");

    /* scale shape: checked against the block size at read time */
    dir = fresh_dir("scaleshape");
    static const Spec scaleshape[] = {{"x.weight", DSA_F8_E4M3, 2, 300, 5, 0},
                                      {"x.weight_scale_inv", DSA_F32, 2, 2, 1, 0}};
    shard(dir, "model.safetensors", scaleshape, 2);
    DsaHfReader r;
    assert_ok(dsa_hf_open(&r, dir));
    float *out = malloc(1500 * sizeof *out);
    int64_t shape[2] = {300, 5};
    assert_fails_with(dsa_hf_read_f32(&r, "x.weight", 2, shape, out), DSA_ERR_FORMAT, "scaleshape/model.safetensors");
    msg_has("x.weight_scale_inv", "[2, 1]", "expected [3, 1]", NULL);
    r.block[0] = 150; /* weight_block_size [150, 128] from config.json: [2, 1] fits */
    assert_ok(dsa_hf_read_f32(&r, "x.weight", 2, shape, out));
    for (int i = 0; i < 1500; i++) assert_true(out[i] == 0.0f);
    r.block[0] = 0;
    assert_fails_with(dsa_hf_read_f32(&r, "x.weight", 2, shape, out), DSA_ERR_ARG, "x.weight");
    dsa_hf_close(&r);
    free(out);
}

static void test_reader_read_errors(void **state) {
    (void)state;
    const char *dir = sharded_dir("readerr", GOOD_MAP);
    static const Spec ints[] = {{"i", DSA_I32, 1, 3, 0, 0}};
    shard(dir, "c.st", ints, 1);
    put_file_text(dir, "model.safetensors.index.json",
                  "{\"weight_map\": {\"a.weight\": \"a.st\", \"b.weight\": \"a.st\", \"c.weight\": \"b.st\", "
                  "\"c.weight_scale_inv\": \"b.st\", \"i\": \"c.st\"}}");
    DsaHfReader r;
    assert_ok(dsa_hf_open(&r, dir));
    float out[1024];
    int64_t shape[2] = {2, 3};
    assert_fails_with(dsa_hf_read_f32(&r, "q.weight", 2, shape, out), DSA_ERR_FORMAT,
                      "readerr/model.safetensors.index.json");
    msg_has("q.weight", "missing", "[2, 3]", NULL);
    int64_t wrong[2] = {3, 2};
    assert_fails_with(dsa_hf_read_f32(&r, "a.weight", 2, wrong, out), DSA_ERR_FORMAT, "readerr/a.st");
    msg_has("a.weight", "[2, 3]", "[3, 2]", NULL);
    assert_fails_with(dsa_hf_read_f32(&r, "a.weight", 1, wrong, out), DSA_ERR_FORMAT, "a.weight");
    int64_t cw[2] = {130, 6};
    assert_fails_with(dsa_hf_read_f32(&r, "c.weight", 2, cw, out), DSA_ERR_FORMAT, "readerr/b.st");
    msg_has("c.weight", "[130, 5]", "[130, 6]", "F8_E4M3", NULL);
    int64_t is[1] = {3};
    assert_fails_with(dsa_hf_read_f32(&r, "i", 1, is, out), DSA_ERR_FORMAT, "readerr/c.st");
    msg_has("tensor i ", "I32", NULL);
    assert_fails_with(dsa_hf_read_f32(&r, "c.weight_scale_inv", 2, shape, out), DSA_ERR_FORMAT, "c.weight_scale_inv");
    dsa_hf_close(&r);
}

/* A foreign file whose tensors sit at odd offsets: an F32 weight after a 1-byte tensor,
 * an FP8 weight and its F32 scale at offsets 25 and 29. */
static void test_unaligned(void **state) {
    (void)state;
    const char *dir = fresh_dir("unaligned");
    const char *header = "{\"u\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                         "\"f\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[1,25]},"
                         "\"w.weight\":{\"dtype\":\"F8_E4M3\",\"shape\":[2,2],\"data_offsets\":[25,29]},"
                         "\"w.weight_scale_inv\":{\"dtype\":\"F32\",\"shape\":[1,1],\"data_offsets\":[29,33]}}";
    size_t h = strlen(header);
    uint8_t buf[1024] = {0};
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)((uint64_t)h >> (8 * i));
    memcpy(buf + 8, header, h);
    uint8_t *data = buf + 8 + h;
    float f[6] = {1.5f, -2.25f, 3.0f, 1e-3f, 7.0f, -8.5f}, scale = 0.25f;
    memcpy(data + 1, f, sizeof f);
    uint8_t w8[4] = {0x38, 0xb8, 0x40, 0x01}; /* 1, -1, 2, 2^-9 */
    memcpy(data + 25, w8, 4);
    memcpy(data + 29, &scale, 4);
    char path[600];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(buf, 1, 8 + h + 33, fp), 8 + h + 33);
    assert_int_equal(fclose(fp), 0);
    DsaHfReader r;
    assert_ok(dsa_hf_open(&r, dir));
    float out[6];
    int64_t fs[2] = {2, 3}, ws[2] = {2, 2};
    assert_ok(dsa_hf_read_f32(&r, "f", 2, fs, out));
    assert_memory_equal(out, f, sizeof f);
    assert_ok(dsa_hf_read_f32(&r, "w.weight", 2, ws, out));
    assert_true(out[0] == 0.25f && out[1] == -0.25f && out[2] == 0.5f && out[3] == 0x1p-11f);
    dsa_hf_close(&r);
}

/* ---- writer errors ------------------------------------------------------------------ */

static void test_writer_errors(void **state) {
    (void)state;
    const char *dir = fresh_dir("werr");
    size_t live = dsa_mem_live();
    DsaHfWriter w;
    int64_t shape[2] = {2, 3}, neg[2] = {2, -1};
    float data[6] = {0};
    assert_ok(dsa_hf_writer_init(&w, dir, 16));
    assert_ok(dsa_hf_writer_plan(&w, "a", DSA_F32, 2, shape));
    assert_fails_with(dsa_hf_writer_plan(&w, "a", DSA_F32, 2, shape), DSA_ERR_ARG, "tensor a planned twice");
    assert_fails_with(dsa_hf_writer_plan(&w, "", DSA_F32, 2, shape), DSA_ERR_ARG, "empty name");
    assert_fails_with(dsa_hf_writer_plan(&w, "b", DSA_F32, 5, shape), DSA_ERR_ARG, "tensor b: ndim 5");
    assert_fails_with(dsa_hf_writer_plan(&w, "b", DSA_F32, -1, shape), DSA_ERR_ARG, "tensor b: ndim -1");
    assert_fails_with(dsa_hf_writer_plan(&w, "b", DSA_F32, 2, neg), DSA_ERR_ARG, "tensor b: shape[1] = -1");
    assert_fails_with(dsa_hf_writer_put(&w, "a", data), DSA_ERR_ARG, "before start");
    assert_ok(dsa_hf_writer_plan(&w, "b", DSA_F32, 2, shape));
    assert_ok(dsa_hf_writer_plan(&w, "c", DSA_F32, 1, shape));
    assert_ok(dsa_hf_writer_start(&w));
    assert_true(file_exists(dir, "model-00001-of-00003.safetensors"));
    assert_true(file_exists(dir, "model-00003-of-00003.safetensors"));
    assert_fails_with(dsa_hf_writer_plan(&w, "d", DSA_F32, 2, shape), DSA_ERR_ARG, "tensor d planned after start");
    assert_fails_with(dsa_hf_writer_put(&w, "zz", data), DSA_ERR_ARG, "tensor zz was not planned");
    assert_ok(dsa_hf_writer_put(&w, "b", data));
    assert_fails_with(dsa_hf_writer_put(&w, "b", data), DSA_ERR_ARG, "tensor b put twice");
    assert_fails_with(dsa_hf_writer_put(&w, "a", NULL), DSA_ERR_ARG, "tensor a: data is NULL");
    assert_fails_with(dsa_hf_writer_finish(&w), DSA_ERR_ARG, "tensor a was planned but never put");
    assert_false(file_exists(dir, "model.safetensors.index.json"));
    dsa_hf_writer_abort(&w);
    assert_int_equal(count_files(dir), 0);
    assert_int_equal(dsa_mem_live(), live);
    dsa_hf_writer_abort(&w); /* a zeroed writer */

    /* abort before start, and start into a directory that is not there */
    assert_ok(dsa_hf_writer_init(&w, test_path("no-such-dir"), 0));
    assert_ok(dsa_hf_writer_plan(&w, "a", DSA_F32, 2, shape));
    assert_fails_with(dsa_hf_writer_start(&w), DSA_ERR_IO, "no-such-dir");
    dsa_hf_writer_abort(&w);

    /* a tensor name the safetensors header cannot hold is refused at start */
    assert_ok(dsa_hf_writer_init(&w, dir, 0));
    assert_ok(dsa_hf_writer_plan(&w, "__metadata__", DSA_F32, 2, shape));
    assert_fails_with(dsa_hf_writer_start(&w), DSA_ERR_ARG, "__metadata__");
    dsa_hf_writer_abort(&w);
    assert_int_equal(count_files(dir), 0);
}

/* Many tensors: the name table grows, every name lands where planned. */
static void test_writer_many(void **state) {
    (void)state;
    const char *dir = fresh_dir("many");
    DsaHfWriter w;
    enum { N = 3000 };
    assert_ok(dsa_hf_writer_init(&w, dir, 4000));
    char name[64];
    int64_t shape[1] = {3};
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof name, "model.layers.%d.w", i);
        assert_ok(dsa_hf_writer_plan(&w, name, DSA_F32, 1, shape));
    }
    assert_ok(dsa_hf_writer_start(&w));
    for (int i = N - 1; i >= 0; i--) {
        float v[3] = {(float)i, -(float)i, 0.5f};
        snprintf(name, sizeof name, "model.layers.%d.w", i);
        assert_ok(dsa_hf_writer_put(&w, name, v));
    }
    assert_ok(dsa_hf_writer_finish(&w));
    dsa_hf_writer_abort(&w);
    DsaHfReader r;
    assert_ok(dsa_hf_open(&r, dir));
    assert_int_equal(r.count, N);
    assert_int_equal(r.n_shards, (N * 12 + 3995) / 3996); /* 333 tensors of 12 bytes per 4000 */
    for (int i = 0; i < N; i += 7) {
        float v[3];
        snprintf(name, sizeof name, "model.layers.%d.w", i);
        assert_ok(dsa_hf_read_f32(&r, name, 1, shape, v));
        assert_true(v[0] == (float)i && v[1] == -(float)i && v[2] == 0.5f);
    }
    dsa_hf_close(&r);
}

/* ---- memory ------------------------------------------------------------------------- */

/* Resident kB of the mapping that contains `addr` (/proc/self/smaps), -1 if unknown. */
static long mapping_rss_kb(const void *addr) {
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f) return -1;
    char line[512];
    bool in = false;
    long rss = -1;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' ')) {
            in = (uintptr_t)addr >= lo && (uintptr_t)addr < hi;
            continue;
        }
        if (in && !strncmp(line, "Rss:", 4)) {
            sscanf(line + 4, "%ld", &rss);
            break;
        }
    }
    fclose(f);
    return rss;
}

static void test_big_tensor_release(void **state) {
    (void)state;
    const char *dir = fresh_dir("big");
    enum { ROWS = 4096, COLS = 4096 }; /* 64 MB of F32 */
    size_t n = (size_t)ROWS * COLS;
    float *data = malloc(n * sizeof *data), *out = malloc(n * sizeof *out);
    for (size_t i = 0; i < n; i++) data[i] = (float)(i % 1000003) * 0.5f;
    int64_t shape[2] = {ROWS, COLS}, small[1] = {5};
    float five[5] = {1, 2, 3, 4, 5};
    DsaHfWriter w;
    assert_ok(dsa_hf_writer_init(&w, dir, 0));
    assert_ok(dsa_hf_writer_plan(&w, "big", DSA_F32, 2, shape));
    assert_ok(dsa_hf_writer_plan(&w, "small", DSA_F32, 1, small));
    assert_ok(dsa_hf_writer_start(&w));
    assert_ok(dsa_hf_writer_put(&w, "small", five));
    assert_ok(dsa_hf_writer_put(&w, "big", data));
    assert_ok(dsa_hf_writer_finish(&w));
    dsa_hf_writer_abort(&w);
    DsaHfReader r;
    assert_ok(dsa_hf_open(&r, dir));
    for (int pass = 0; pass < 2; pass++) {
        memset(out, 0, n * sizeof *out);
        assert_ok(dsa_hf_read_f32(&r, "big", 2, shape, out));
        assert_memory_equal(out, data, n * sizeof *out);
        long rss = mapping_rss_kb(r.shards[0].map);
        if (rss >= 0 && rss > 1024) fail_msg("pass %d: %ld kB of the 64 MB mapping still resident", pass, rss);
    }
    float got[5];
    assert_ok(dsa_hf_read_f32(&r, "small", 1, small, got)); /* its page may have been dropped too */
    assert_memory_equal(got, five, sizeof five);
    dsa_hf_close(&r);
    free(data), free(out);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_single),    cmocka_unit_test(test_round_trip_sharded),
        cmocka_unit_test(test_round_trip_empty),     cmocka_unit_test(test_fp8_dequantize),
        cmocka_unit_test(test_fp8_quantize_rule),    cmocka_unit_test(test_fp8_quantize_sec_3_2),
        cmocka_unit_test(test_fp8_exact_round_trip), cmocka_unit_test(test_fp8_quantize_refuses),
        cmocka_unit_test(test_reader_index_errors),  cmocka_unit_test(test_reader_fp8_errors),
        cmocka_unit_test(test_reader_read_errors),
        cmocka_unit_test(test_unaligned),            cmocka_unit_test(test_writer_errors),
        cmocka_unit_test(test_writer_many),          cmocka_unit_test(test_big_tensor_release),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    test_tmpdir_remove();
    return rc;
}
