/* test_checkpoint.c: safetensors reading and writing (checkpoints/safetensors.h) and
 * atomic checkpoint directories (checkpoints/checkpoint.h): round trips, a file built
 * byte by byte from the format's definition, every malformed header refused naming the
 * file and tensor, bf16/f16 widening, manifests that catch flipped bytes, truncation and
 * missing files, `latest` switching, aborted and torn saves. */
#include <sys/stat.h>

#include "checkpoints/checkpoint.h"
#include "checkpoints/safetensors.h"
#include "core/fileutil.h"
#include "test_util.h"

static void write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    fclose(f);
}

/* A safetensors file from a header string and a data buffer, as the format defines it. */
static void handmade(const char *path, const char *header, const void *data, size_t n) {
    size_t h = strlen(header);
    unsigned char *buf = malloc(8 + h + n);
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)h >> (8 * i));
    memcpy(buf + 8, header, h);
    if (n) memcpy(buf + 8 + h, data, n);
    write_bytes(path, buf, 8 + h + n);
    free(buf);
}

static void test_round_trip(void **state) {
    (void)state;
    float a[6] = {1, -2, 3.5f, 0, 1e-30f, -7};
    uint16_t b[3] = {0x3f80, 0xc000, 0x4049}; /* bf16 1, -2, 3.140625 */
    int32_t c[1] = {42};
    DsaStTensorRef t[3] = {
        {"w.a", DSA_F32, 2, {2, 3}, a},
        {"w.b", DSA_BF16, 1, {3}, b},
        {"scalar", DSA_I32, 0, {0}, c},
    };
    const char *keys[] = {"format"}, *values[] = {"pt"};
    const char *path = test_path("rt.safetensors");
    assert_ok(dsa_safetensors_write(path, t, 3, keys, values, 1));
    DsaSafetensors st;
    assert_ok(dsa_safetensors_open(&st, path));
    assert_int_equal(st.count, 3);
    assert_string_equal(dsa_safetensors_meta(&st, "format"), "pt");
    const DsaStEntry *e = dsa_safetensors_find(&st, "w.a");
    assert_non_null(e);
    assert_memory_equal(dsa_safetensors_data(&st, e), a, sizeof a);
    float out[6];
    assert_ok(dsa_safetensors_read_f32(&st, "w.b", 1, (int64_t[]){3}, out));
    assert_true(out[0] == 1.0f && out[1] == -2.0f && out[2] == 3.140625f);
    assert_fails_with(dsa_safetensors_read_f32(&st, "w.a", 2, (int64_t[]){3, 2}, out), DSA_ERR_FORMAT,
                      "tensor w.a has shape [2, 3], expected [3, 2]");
    assert_fails_with(dsa_safetensors_read_f32(&st, "nope", 1, (int64_t[]){1}, out), DSA_ERR_FORMAT,
                      "tensor nope is missing");
    assert_fails_with(dsa_safetensors_read_f32(&st, "scalar", 0, NULL, out), DSA_ERR_FORMAT, "I32");
    assert_int_equal(dsa_safetensors_find(&st, "scalar")->ndim, 0);
    dsa_safetensors_close(&st);
}

static void test_handmade_file(void **state) {
    (void)state;
    uint16_t h[2] = {0x3c00, 0xc500}; /* f16 1.0, -5.0 */
    float f[2] = {0.25f, 8.0f};
    unsigned char data[12];
    memcpy(data, f, 8);
    memcpy(data + 8, h, 4);
    const char *path = test_path("hand.safetensors");
    handmade(path,
             "{\"__metadata__\":{\"k\":\"v\"},\"half\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[8,12]},"
             "\"full\":{\"dtype\":\"F32\",\"shape\":[1,2],\"data_offsets\":[0,8]}}",
             data, sizeof data);
    DsaSafetensors st;
    assert_ok(dsa_safetensors_open(&st, path));
    float out[2];
    assert_ok(dsa_safetensors_read_f32(&st, "half", 1, (int64_t[]){2}, out));
    assert_true(out[0] == 1.0f && out[1] == -5.0f);
    assert_ok(dsa_safetensors_read_f32(&st, "full", 2, (int64_t[]){1, 2}, out));
    assert_true(out[0] == 0.25f && out[1] == 8.0f);
    dsa_safetensors_close(&st);
}

static void test_malformed_refused(void **state) {
    (void)state;
    static const struct {
        const char *header;
        size_t data_bytes;
        const char *needle;
    } cases[] = {
        {"not json", 0, "not valid JSON"},
        {"[1,2]", 0, "not a JSON object"},
        {"{\"t\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "tensor t: \"dtype\" missing"},
        {"{\"t\":{\"dtype\":\"F33\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "F33"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, "tensor t: shape[0]"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4, "tensor t: 4 bytes in data_offsets"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 4, "run backwards"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 8, "4 bytes after the last tensor"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, "4 unused bytes before tensor t"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"u\":{\"dtype\":\"F32\",\"shape\":[1],"
         "\"data_offsets\":[0,4]}}", 4, "overlaps"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4, "truncated"},
        {"{\"__metadata__\":{\"k\":1}}", 0, "__metadata__ value of \"k\" is not a string"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1],\"data_offsets\":[0,4]}}", 4, "5 dims"},
    };
    unsigned char zeros[16] = {0};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char name[64];
        snprintf(name, sizeof name, "bad%zu.safetensors", i);
        const char *path = test_path(name);
        handmade(path, cases[i].header, zeros, cases[i].data_bytes);
        DsaSafetensors st;
        assert_fails_with(dsa_safetensors_open(&st, path), DSA_ERR_FORMAT, cases[i].needle);
        assert_non_null(strstr(dsa_error_message(), name));
    }
    const char *tiny = test_path("tiny.safetensors");
    write_bytes(tiny, "abc", 3);
    DsaSafetensors st;
    assert_fails_with(dsa_safetensors_open(&st, tiny), DSA_ERR_FORMAT, "too short");
    unsigned char huge[8] = {0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0};
    write_bytes(tiny, huge, 8);
    assert_fails_with(dsa_safetensors_open(&st, tiny), DSA_ERR_FORMAT, "does not fit the file");
    assert_fails_with(dsa_safetensors_open(&st, test_path("absent.safetensors")), DSA_ERR_IO, "absent.safetensors");
}

static void read_latest(const char *out, char *buf, size_t cap) {
    char path[600], *text = NULL;
    size_t n = 0;
    snprintf(path, sizeof path, "%s/latest", out);
    assert_ok(dsa_file_read_all(path, &text, &n));
    snprintf(buf, cap, "%s", text);
    dsa_free(text, n + 1);
}

static void save(const char *out, const char *name, const char *content) {
    DsaCheckpointWriter w;
    assert_ok(dsa_checkpoint_begin(&w, out, name));
    assert_ok(dsa_checkpoint_write_text(&w, "a.txt", content));
    assert_ok(dsa_checkpoint_write_text(&w, "model.safetensors", "placeholder"));
    assert_ok(dsa_checkpoint_commit(&w));
}

static void test_checkpoint_dirs(void **state) {
    (void)state;
    const char *out = test_path("run");
    char latest[64], dir[1024], path[1100];
    save(out, "step-1", "one");
    read_latest(out, latest, sizeof latest);
    assert_string_equal(latest, "step-1\n");
    save(out, "step-2", "two");
    read_latest(out, latest, sizeof latest);
    assert_string_equal(latest, "step-2\n");
    assert_ok(dsa_checkpoint_resolve(out, dir, sizeof dir));
    assert_non_null(strstr(dir, "run/step-2"));
    snprintf(path, sizeof path, "%s/step-1", out);
    assert_ok(dsa_checkpoint_resolve(path, dir, sizeof dir));
    assert_non_null(strstr(dir, "run/step-1"));
    bool verified = false;
    assert_ok(dsa_checkpoint_verify(dir, &verified));
    assert_true(verified);
    /* a checkpoint is never overwritten */
    DsaCheckpointWriter w;
    assert_fails_with(dsa_checkpoint_begin(&w, out, "step-2"), DSA_ERR_IO, "never overwritten");
    /* an aborted save leaves nothing and keeps latest */
    assert_ok(dsa_checkpoint_begin(&w, out, "step-3"));
    assert_ok(dsa_checkpoint_write_text(&w, "a.txt", "three"));
    dsa_checkpoint_abort(&w);
    read_latest(out, latest, sizeof latest);
    assert_string_equal(latest, "step-2\n");
    snprintf(path, sizeof path, "%s/step-3", out);
    struct stat sb;
    assert_int_not_equal(stat(path, &sb), 0);
    /* a torn temporary directory (a killed save) is removed by the next save */
    snprintf(path, sizeof path, "%s/.tmp-step-9-1", out);
    assert_int_equal(mkdir(path, 0755), 0);
    snprintf(path, sizeof path, "%s/.tmp-step-9-1/x", out);
    write_bytes(path, "x", 1);
    save(out, "step-4", "four");
    snprintf(path, sizeof path, "%s/.tmp-step-9-1", out);
    assert_int_not_equal(stat(path, &sb), 0);
    /* damage is caught by the manifest, naming the file */
    snprintf(dir, sizeof dir, "%s/step-4", out);
    snprintf(path, sizeof path, "%s/a.txt", dir);
    write_bytes(path, "fOur", 4);
    assert_fails_with(dsa_checkpoint_verify(dir, &verified), DSA_ERR_FORMAT, "a.txt: CRC32");
    write_bytes(path, "fou", 3);
    assert_fails_with(dsa_checkpoint_verify(dir, &verified), DSA_ERR_FORMAT, "a.txt: 3 bytes, the manifest says 4");
    unlink(path);
    assert_fails_with(dsa_checkpoint_verify(dir, &verified), DSA_ERR_FORMAT, "a.txt: missing");
    /* a directory with neither a manifest nor a latest file */
    assert_fails_with(dsa_checkpoint_resolve(test_tmpdir(), dir, sizeof dir), DSA_ERR_IO, "no checkpoint here");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_handmade_file),
        cmocka_unit_test(test_malformed_refused),
        cmocka_unit_test(test_checkpoint_dirs),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    test_tmpdir_remove();
    return rc;
}
