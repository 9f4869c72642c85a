/* test_hf_errors.c: Hugging Face checkpoint directories (checkpoints/hf.h): every reader
 * error naming the file and the tensor (index, FP8 scales, reads), unaligned tensors from
 * a foreign writer, the writer's argument errors and abort, and a 64 MB tensor read twice
 * with its pages released in between (resident size from /proc/self/smaps). The round
 * trips are in test_hf.c.
 */
#include <errno.h>

#include "checkpoints/hf.h"
#include "checkpoints/safetensors.h"
#include "core/fileutil.h"
#include "core/mem.h"
#include "test_util.h"

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
    const char *dir = test_fresh_dir(name);
    shard(dir, "a.st", SHARD_A, 2);
    shard(dir, "b.st", SHARD_B, 2);
    test_put_file_text(dir, "model.safetensors.index.json", index);
    return dir;
}

#define OPEN_FAILS(dir, status, ...)                                                                  \
    do {                                                                                             \
        DsaHfReader r_;                                                                              \
        memset(&r_, 0x5a, sizeof r_);                                                                \
        size_t live_ = dsa_mem_live();                                                               \
        assert_fails_with(dsa_hf_open(&r_, (dir)), (status), "");                                    \
        assert_int_equal(dsa_mem_live(), live_);                                                     \
        test_msg_has(__VA_ARGS__, NULL);                                                                  \
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
    OPEN_FAILS(test_fresh_dir("nothing"), DSA_ERR_IO, "nothing", "model.safetensors");
    OPEN_FAILS(test_path("no-such-dir"), DSA_ERR_IO, "no-such-dir");
}

static void test_reader_fp8_errors(void **state) {
    (void)state;
    const char *dir = test_fresh_dir("noscale");
    static const Spec noscale[] = {{"x.weight", DSA_F8_E4M3, 2, 4, 4, 0}};
    shard(dir, "model.safetensors", noscale, 1);
    OPEN_FAILS(dir, DSA_ERR_FORMAT, "noscale/model.safetensors", "x.weight", "x.weight_scale_inv", "missing");

    dir = test_fresh_dir("orphan");
    static const Spec orphan[] = {{"y.weight_scale_inv", DSA_F32, 2, 1, 1, 0}, {"z", DSA_F32, 1, 1, 0, 0}};
    shard(dir, "model.safetensors", orphan, 2);
    OPEN_FAILS(dir, DSA_ERR_FORMAT, "orphan/model.safetensors", "y.weight_scale_inv", "y.weight", "missing");

    dir = test_fresh_dir("notfp8");
    static const Spec notfp8[] = {{"y.weight", DSA_BF16, 2, 4, 4, 0}, {"y.weight_scale_inv", DSA_F32, 2, 1, 1, 0}};
    shard(dir, "model.safetensors", notfp8, 2);
    OPEN_FAILS(dir, DSA_ERR_FORMAT, "notfp8/model.safetensors", "y.weight_scale_inv", "BF16", "not F8_E4M3");

    dir = test_fresh_dir("scaledtype");
    static const Spec scaledtype[] = {{"x.weight", DSA_F8_E4M3, 2, 4, 4, 0},
                                      {"x.weight_scale_inv", DSA_F16, 2, 1, 1, 0}};
    shard(dir, "model.safetensors", scaledtype, 2);
    OPEN_FAILS(dir, DSA_ERR_FORMAT, "scaledtype/model.safetensors", "x.weight_scale_inv", "F16", "expected F32");

    dir = test_fresh_dir("fp8-3d");
    static const Spec fp83d[] = {{"x.weight", DSA_F8_E4M3, 3, 2, 2, 2}, {"x.weight_scale_inv", DSA_F32, 2, 1, 1, 0}};
    shard(dir, "model.safetensors", fp83d, 2);
    OPEN_FAILS(dir, DSA_ERR_FORMAT, "fp8-3d/model.safetensors", "x.weight", "3 dims");

    dir = test_fresh_dir("fp8-bias");
    static const Spec fp8bias[] = {{"x.bias", DSA_F8_E4M3, 2, 2, 2, 0}};
    shard(dir, "model.safetensors", fp8bias, 1);
    OPEN_FAILS(dir, DSA_ERR_FORMAT, "fp8-bias/model.safetensors", "x.bias", "F8_E4M3");

    /* scale shape: checked against the block size at read time */
    dir = test_fresh_dir("scaleshape");
    static const Spec scaleshape[] = {{"x.weight", DSA_F8_E4M3, 2, 300, 5, 0},
                                      {"x.weight_scale_inv", DSA_F32, 2, 2, 1, 0}};
    shard(dir, "model.safetensors", scaleshape, 2);
    DsaHfReader r;
    assert_ok(dsa_hf_open(&r, dir));
    float *out = malloc(1500 * sizeof *out);
    int64_t shape[2] = {300, 5};
    assert_fails_with(dsa_hf_read_f32(&r, "x.weight", 2, shape, out), DSA_ERR_FORMAT, "scaleshape/model.safetensors");
    test_msg_has("x.weight_scale_inv", "[2, 1]", "expected [3, 1]", NULL);
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
    test_put_file_text(dir, "model.safetensors.index.json",
                  "{\"weight_map\": {\"a.weight\": \"a.st\", \"b.weight\": \"a.st\", \"c.weight\": \"b.st\", "
                  "\"c.weight_scale_inv\": \"b.st\", \"i\": \"c.st\"}}");
    DsaHfReader r;
    assert_ok(dsa_hf_open(&r, dir));
    float out[1024];
    int64_t shape[2] = {2, 3};
    assert_fails_with(dsa_hf_read_f32(&r, "q.weight", 2, shape, out), DSA_ERR_FORMAT,
                      "readerr/model.safetensors.index.json");
    test_msg_has("q.weight", "missing", "[2, 3]", NULL);
    int64_t wrong[2] = {3, 2};
    assert_fails_with(dsa_hf_read_f32(&r, "a.weight", 2, wrong, out), DSA_ERR_FORMAT, "readerr/a.st");
    test_msg_has("a.weight", "[2, 3]", "[3, 2]", NULL);
    assert_fails_with(dsa_hf_read_f32(&r, "a.weight", 1, wrong, out), DSA_ERR_FORMAT, "a.weight");
    int64_t cw[2] = {130, 6};
    assert_fails_with(dsa_hf_read_f32(&r, "c.weight", 2, cw, out), DSA_ERR_FORMAT, "readerr/b.st");
    test_msg_has("c.weight", "[130, 5]", "[130, 6]", "F8_E4M3", NULL);
    int64_t is[1] = {3};
    assert_fails_with(dsa_hf_read_f32(&r, "i", 1, is, out), DSA_ERR_FORMAT, "readerr/c.st");
    test_msg_has("tensor i ", "I32", NULL);
    assert_fails_with(dsa_hf_read_f32(&r, "c.weight_scale_inv", 2, shape, out), DSA_ERR_FORMAT, "c.weight_scale_inv");
    dsa_hf_close(&r);
}

/* A foreign file whose tensors sit at odd offsets: an F32 weight after a 1-byte tensor,
 * an FP8 weight and its F32 scale at offsets 25 and 29. */
static void test_unaligned(void **state) {
    (void)state;
    const char *dir = test_fresh_dir("unaligned");
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
    const char *dir = test_fresh_dir("werr");
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
    assert_true(test_file_exists(dir, "model-00001-of-00003.safetensors"));
    assert_true(test_file_exists(dir, "model-00003-of-00003.safetensors"));
    assert_fails_with(dsa_hf_writer_plan(&w, "d", DSA_F32, 2, shape), DSA_ERR_ARG, "tensor d planned after start");
    assert_fails_with(dsa_hf_writer_put(&w, "zz", data), DSA_ERR_ARG, "tensor zz was not planned");
    assert_ok(dsa_hf_writer_put(&w, "b", data));
    assert_fails_with(dsa_hf_writer_put(&w, "b", data), DSA_ERR_ARG, "tensor b put twice");
    assert_fails_with(dsa_hf_writer_put(&w, "a", NULL), DSA_ERR_ARG, "tensor a: data is NULL");
    assert_fails_with(dsa_hf_writer_finish(&w), DSA_ERR_ARG, "tensor a was planned but never put");
    assert_false(test_file_exists(dir, "model.safetensors.index.json"));
    dsa_hf_writer_abort(&w);
    assert_int_equal(test_count_files(dir), 0);
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
    assert_int_equal(test_count_files(dir), 0);
}

/* Many tensors: the name table grows, every name lands where planned. */
static void test_writer_many(void **state) {
    (void)state;
    const char *dir = test_fresh_dir("many");
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
    const char *dir = test_fresh_dir("big");
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
        cmocka_unit_test(test_reader_index_errors),  cmocka_unit_test(test_reader_fp8_errors),
        cmocka_unit_test(test_reader_read_errors),
        cmocka_unit_test(test_unaligned),            cmocka_unit_test(test_writer_errors),
        cmocka_unit_test(test_writer_many),          cmocka_unit_test(test_big_tensor_release),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    test_tmpdir_remove();
    return rc;
}
