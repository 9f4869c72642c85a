/* test_safetensors.c: safetensors reading and writing (checkpoints/safetensors.h): round
 * trips of every dtype incl. 0-d, 1-element and empty tensors, the writer's exact bytes
 * against a byte string built from the format's definition, a hand-built foreign file,
 * every malformed header refused naming the file and tensor, truncation, exhaustive
 * bf16/f16 widening, read_f32's shape and dtype errors, and the writer's argument checks.
 */
#include <fcntl.h>
#include <sys/stat.h>

#include "checkpoints/safetensors.h"
#include "core/fileutil.h"
#include "core/mem.h"
#include "test_util.h"

/* ---- helpers ----------------------------------------------------------------------- */

/* A safetensors file from a header string and a data buffer, as the format defines it:
 * u64 little-endian header length, the header, the data. No padding. */
static const char *handmade(const char *name, const char *header, const void *data, size_t n) {
    size_t h = strlen(header);
    unsigned char *buf = malloc(8 + h + n);
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)h >> (8 * i));
    memcpy(buf + 8, header, h);
    if (n) memcpy(buf + 8 + h, data, n);
    const char *path = test_write_file(name, buf, 8 + h + n);
    free(buf);
    return path;
}

static char *slurp(const char *path, size_t *n) {
    char *text = NULL;
    assert_ok(dsa_file_read_all(path, &text, n));
    return text;
}

static void expect_open_fails(const char *path, DsaStatus status, const char *needle) {
    DsaSafetensors st;
    assert_fails_with(dsa_safetensors_open(&st, path), status, needle);
    assert_non_null(strstr(dsa_error_message(), path)); /* the message names the file */
    assert_null(st.map);                                /* nothing stays open */
}

/* ---- safetensors ------------------------------------------------------------------- */

static void test_round_trip(void **state) {
    (void)state;
    float a[6] = {1, -2, 3.5f, 0, 1e-30f, -7};
    uint16_t b[3] = {0x3f80, 0xc000, 0x4049}; /* bf16 1, -2, 3.140625 */
    int32_t c = 42;
    uint16_t h = 0x3555; /* f16 0.333251953125 */
    int64_t big[2] = {INT64_MIN, 1234567890123LL};
    uint8_t u[3] = {1, 2, 255};
    float scalar = -0.5f;
    DsaStTensorRef t[] = {
        {"w.a", DSA_F32, 2, {2, 3}, a},      {"w.b", DSA_BF16, 1, {3}, b},    {"int scalar", DSA_I32, 0, {0}, &c},
        {"one", DSA_F16, 1, {1}, &h},        {"big", DSA_I64, 1, {2}, big},   {"bytes", DSA_U8, 1, {3}, u},
        {"empty", DSA_F32, 2, {0, 4}, NULL}, {"s", DSA_F32, 0, {0}, &scalar},
    };
    int n = (int)(sizeof t / sizeof t[0]);
    const char *keys[] = {"format", "note"}, *values[] = {"pt", "quote \" backslash \\ tab \t é"};
    const char *path = test_path("rt.safetensors");
    assert_ok(dsa_safetensors_write(path, t, n, keys, values, 2));

    DsaSafetensors st;
    assert_ok(dsa_safetensors_open(&st, path));
    assert_int_equal(st.count, n);
    assert_int_equal(st.n_meta, 2);
    assert_string_equal(dsa_safetensors_meta(&st, "format"), "pt");
    assert_string_equal(dsa_safetensors_meta(&st, "note"), values[1]);
    assert_null(dsa_safetensors_meta(&st, "absent"));
    assert_null(dsa_safetensors_find(&st, "nope"));
    /* the header is padded to 8 bytes, so the buffer and every tensor start aligned */
    assert_int_equal(st.header_bytes % 8, 0);
    assert_int_equal((uintptr_t)st.buffer % 8, 0);
    uint64_t total = 0;
    for (int i = 0; i < n; i++) {
        const DsaStEntry *e = dsa_safetensors_find(&st, t[i].name);
        assert_non_null(e);
        assert_string_equal(e->name, t[i].name);
        assert_int_equal(e->dtype, t[i].dtype);
        assert_int_equal(e->ndim, t[i].ndim);
        int64_t numel = 1;
        for (int d = 0; d < t[i].ndim; d++) {
            assert_int_equal(e->shape[d], t[i].shape[d]);
            numel *= t[i].shape[d];
        }
        size_t bytes = (size_t)numel * dsa_dtype_size(t[i].dtype);
        assert_int_equal(e->end - e->begin, bytes);
        assert_int_equal(e->begin % dsa_dtype_size(t[i].dtype), 0);
        if (bytes) assert_memory_equal(dsa_safetensors_data(&st, e), t[i].data, bytes);
        total += bytes;
    }
    int64_t file_bytes = 0;
    assert_ok(dsa_file_size(path, &file_bytes));
    assert_int_equal(file_bytes, 8 + st.header_bytes + total);
    assert_int_equal(st.buffer_bytes, total);

    float out[6];
    assert_ok(dsa_safetensors_read_f32(&st, "w.a", 2, (int64_t[]){2, 3}, out));
    assert_memory_equal(out, a, sizeof a);
    assert_ok(dsa_safetensors_read_f32(&st, "w.b", 1, (int64_t[]){3}, out));
    assert_true(out[0] == 1.0f && out[1] == -2.0f && out[2] == 3.140625f);
    assert_ok(dsa_safetensors_read_f32(&st, "one", 1, (int64_t[]){1}, out));
    assert_true(out[0] == 0.333251953125f);
    assert_ok(dsa_safetensors_read_f32(&st, "s", 0, NULL, out));
    assert_true(out[0] == -0.5f);
    assert_ok(dsa_safetensors_read_f32(&st, "empty", 2, (int64_t[]){0, 4}, out));
    dsa_safetensors_close(&st);
    assert_null(st.map);
    dsa_safetensors_close(&st); /* closing twice is harmless */

    /* An all-F32 file keeps the order given. */
    DsaStTensorRef f[] = {{"c", DSA_F32, 1, {2}, a}, {"a", DSA_F32, 1, {1}, a}, {"b", DSA_F32, 1, {3}, a}};
    path = test_path("order.safetensors");
    assert_ok(dsa_safetensors_write(path, f, 3, NULL, NULL, 0));
    assert_ok(dsa_safetensors_open(&st, path));
    assert_null(dsa_safetensors_meta(&st, "format"));
    assert_int_equal(dsa_safetensors_find(&st, "c")->begin, 0);
    assert_int_equal(dsa_safetensors_find(&st, "a")->begin, 8);
    assert_int_equal(dsa_safetensors_find(&st, "b")->begin, 12);
    dsa_safetensors_close(&st);

    /* No tensors at all. */
    path = test_path("none.safetensors");
    assert_ok(dsa_safetensors_write(path, NULL, 0, keys, values, 1));
    assert_ok(dsa_safetensors_open(&st, path));
    assert_int_equal(st.count, 0);
    assert_string_equal(dsa_safetensors_meta(&st, "format"), "pt");
    dsa_safetensors_close(&st);
}

/* The writer's bytes equal the format's definition, spelled out here by hand. */
static void test_writer_bytes(void **state) {
    (void)state;
    float w[2] = {1.5f, -2.0f};
    uint16_t b = 0x3f80;
    DsaStTensorRef t[] = {{"b", DSA_BF16, 1, {1}, &b}, {"w", DSA_F32, 2, {1, 2}, w}};
    const char *keys[] = {"format"}, *values[] = {"pt"};
    const char *path = test_path("exact.safetensors");
    assert_ok(dsa_safetensors_write(path, t, 2, keys, values, 1));
    /* F32 before BF16 (larger elements first), offsets exact, padded with spaces to 8. */
    const char *json = "{\"__metadata__\":{\"format\":\"pt\"},"
                       "\"w\":{\"dtype\":\"F32\",\"shape\":[1,2],\"data_offsets\":[0,8]},"
                       "\"b\":{\"dtype\":\"BF16\",\"shape\":[1],\"data_offsets\":[8,10]}}";
    size_t jlen = strlen(json), padded = (jlen + 7) / 8 * 8;
    unsigned char want[512];
    size_t k = 0;
    for (int i = 0; i < 8; i++) want[k++] = (unsigned char)(padded >> (8 * i));
    memcpy(want + k, json, jlen), k += jlen;
    while (k < 8 + padded) want[k++] = ' ';
    memcpy(want + k, w, 8), k += 8;
    want[k++] = 0x80, want[k++] = 0x3f;
    size_t n = 0;
    char *got = slurp(path, &n);
    assert_int_equal(n, k);
    assert_memory_equal(got, want, k);
    dsa_free(got, n + 1);
}

/* A file as another writer may produce it: unpadded header, keys in any order,
 * data in an order other than the header's. */
static void test_handmade_file(void **state) {
    (void)state;
    unsigned char data[14];
    float f[2] = {0.25f, 8.0f};
    uint16_t h[2] = {0x3c00, 0xc500}; /* f16 1.0, -5.0 */
    uint16_t bf = 0xbf80;             /* bf16 -1.0 */
    memcpy(data, f, 8);
    memcpy(data + 8, h, 4);
    memcpy(data + 12, &bf, 2);
    const char *path = handmade("hand.safetensors",
                                "{\"half\":{\"shape\":[2],\"data_offsets\":[8,12],\"dtype\":\"F16\"},"
                                "\"__metadata__\":{\"k\":\"v\"},"
                                "\"brain\":{\"dtype\":\"BF16\",\"shape\":[],\"data_offsets\":[12,14]},"
                                "\"full\":{\"dtype\":\"F32\",\"shape\":[1,2],\"data_offsets\":[0,8]}}",
                                data, sizeof data);
    DsaSafetensors st;
    assert_ok(dsa_safetensors_open(&st, path));
    assert_int_equal(st.count, 3);
    assert_string_equal(st.entries[0].name, "half"); /* entries keep header order */
    assert_string_equal(dsa_safetensors_meta(&st, "k"), "v");
    float out[2];
    assert_ok(dsa_safetensors_read_f32(&st, "half", 1, (int64_t[]){2}, out));
    assert_true(out[0] == 1.0f && out[1] == -5.0f);
    assert_ok(dsa_safetensors_read_f32(&st, "full", 2, (int64_t[]){1, 2}, out));
    assert_true(out[0] == 0.25f && out[1] == 8.0f);
    assert_ok(dsa_safetensors_read_f32(&st, "brain", 0, NULL, out));
    assert_true(out[0] == -1.0f);
    dsa_safetensors_close(&st);
    /* trailing whitespace after the JSON (padding) is fine, "__metadata__": null too */
    float one = 1;
    path = handmade("pad.safetensors",
                    "{\"__metadata__\":null,\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}  \n ", &one,
                    4);
    assert_ok(dsa_safetensors_open(&st, path));
    dsa_safetensors_close(&st);
}

#define T1 "\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}"

static void test_malformed_refused(void **state) {
    (void)state;
    static const struct {
        const char *header;
        size_t data_bytes;
        const char *needle;
    } cases[] = {
        {"not json", 0, "not valid JSON"},
        {"", 0, "not valid JSON"},
        {"[1,2]", 0, "not a JSON object"},
        {"{" T1 "} x", 4, "text after its JSON value"},
        {"{\"t\":3}", 0, "tensor t: header entry is not an object"},
        {"{\"t\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "tensor t: \"dtype\" missing"},
        {"{\"t\":{\"dtype\":7,\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
         "tensor t: \"dtype\" missing or not a string"},
        {"{\"t\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, "tensor t: \"shape\" missing"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":4,\"data_offsets\":[0,4]}}", 4,
         "tensor t: \"shape\" missing or not an array"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "tensor t: \"data_offsets\" missing"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 4,
         "tensor t: \"data_offsets\" has 3 values"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[\"0\",\"4\"]}}", 4,
         "tensor t: data_offsets are not"},
        {"{\"t\":{\"dtype\":\"F33\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "tensor t: unsupported dtype \"F33\""},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4,
         "tensor t: shape[0] is not a non-negative"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[1,1.5],\"data_offsets\":[0,4]}}", 4, "tensor t: shape[1] is not"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[\"1\"],\"data_offsets\":[0,4]}}", 4, "tensor t: shape[0] is not"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1],\"data_offsets\":[0,4]}}", 4, "tensor t has 5 dims"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 4,
         "tensor t: data_offsets [4, 0] run backwards"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4,
         "tensor t: data_offsets [0, 4] hold 4 bytes, but F32 of 2 elements needs 8"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4, "tensor t ends at byte 8"},
        {"{" T1 "}", 8, "4 bytes after the last tensor t"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, "4 unused bytes before tensor t"},
        {"{" T1 ",\"u\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", 12,
         "4 unused bytes before tensor u (a hole in the data buffer, after tensor t)"},
        {"{" T1 ",\"u\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
         "tensor u [0, 8) overlaps tensor t"},
        {"{" T1 "," T1 "}", 4, "tensor t appears twice"},
        {"{\"__metadata__\":{\"k\":1}}", 0, "__metadata__ value of \"k\" is not a string"},
        {"{\"__metadata__\":[\"k\"]}", 0, "\"__metadata__\" is not an object"},
        {"{\"__metadata__\":{\"k\":\"a\",\"k\":\"b\"}}", 0, "__metadata__ key \"k\" appears twice"},
        {"{\"t\xff\":{}}", 0, "not valid UTF-8"},
    };
    unsigned char zeros[16] = {0};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char name[64];
        snprintf(name, sizeof name, "bad%02zu.safetensors", i);
        const char *path = handmade(name, cases[i].header, zeros, cases[i].data_bytes);
        expect_open_fails(path, DSA_ERR_FORMAT, cases[i].needle);
    }
    /* A NUL byte inside the header. */
    unsigned char nul[8 + 8] = {8, 0, 0, 0, 0, 0, 0, 0, '{', '}', 0, ' ', ' ', ' ', ' ', ' '};
    expect_open_fails(test_write_file("nul.safetensors", nul, sizeof nul), DSA_ERR_FORMAT, "header byte 2 is a NUL");
    /* Sizes. */
    expect_open_fails(test_write_file("tiny.safetensors", "abc", 3), DSA_ERR_FORMAT, "too short");
    expect_open_fails(test_write_file("empty.safetensors", "", 0), DSA_ERR_FORMAT, "too short");
    unsigned char huge[8] = {0x00, 0x00, 0x00, 0x10, 0, 0, 0, 0}; /* 256 MiB */
    expect_open_fails(test_write_file("huge.safetensors", huge, 8), DSA_ERR_FORMAT, "header size 268435456 is absurd");
    unsigned char past[12] = {5, 0, 0, 0, 0, 0, 0, 0, '{', '}', ' ', ' '};
    expect_open_fails(test_write_file("past.safetensors", past, 12), DSA_ERR_FORMAT,
                      "header size 5 is larger than the file allows (4 bytes");
    expect_open_fails(test_path("absent.safetensors"), DSA_ERR_IO, "cannot open");
    expect_open_fails(test_tmpdir(), DSA_ERR_IO, "not a regular file");
}

/* Cutting bytes off the end of a valid file is caught, naming the tensor. */
static void test_truncated(void **state) {
    (void)state;
    float a[4] = {1, 2, 3, 4}, b[3] = {5, 6, 7};
    DsaStTensorRef t[] = {{"first", DSA_F32, 1, {4}, a}, {"last", DSA_F32, 1, {3}, b}};
    const char *path = test_path("trunc.safetensors");
    assert_ok(dsa_safetensors_write(path, t, 2, NULL, NULL, 0));
    int64_t size = 0;
    assert_ok(dsa_file_size(path, &size));
    assert_int_equal(truncate(path, size - 3), 0);
    expect_open_fails(path, DSA_ERR_FORMAT,
                      "tensor last ends at byte 28 of the data buffer, but the file holds only 25");
    assert_non_null(strstr(dsa_error_message(), "truncated"));
    assert_int_equal(truncate(path, 20), 0); /* into the header */
    expect_open_fails(path, DSA_ERR_FORMAT, "is larger than the file allows");
}

/* bf16 -> f32 is a 16-bit shift: exact for all 65536 patterns (NaNs keep their bits);
 * f16 -> f32 matches the IEEE definition for every pattern. */
static void test_widening_exact(void **state) {
    (void)state;
    enum { N = 65536 };
    uint16_t *bits = malloc(N * 2);
    float *out = malloc(N * 4);
    for (int i = 0; i < N; i++) bits[i] = (uint16_t)i;
    DsaStTensorRef t[] = {{"bf", DSA_BF16, 1, {N}, bits}, {"h", DSA_F16, 2, {256, 256}, bits}};
    const char *path = test_path("widen.safetensors");
    assert_ok(dsa_safetensors_write(path, t, 2, NULL, NULL, 0));
    DsaSafetensors st;
    assert_ok(dsa_safetensors_open(&st, path));
    assert_ok(dsa_safetensors_read_f32(&st, "bf", 1, (int64_t[]){N}, out));
    for (int i = 0; i < N; i++) {
        uint32_t got;
        memcpy(&got, &out[i], 4);
        if (got != (uint32_t)i << 16) fail_msg("bf16 %04x widened to %08x, want %08x", i, got, (uint32_t)i << 16);
    }
    assert_ok(dsa_safetensors_read_f32(&st, "h", 2, (int64_t[]){256, 256}, out));
    for (int i = 0; i < N; i++) {
        int s = i >> 15, e = (i >> 10) & 31, m = i & 1023;
        double want = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(1024 + m, e - 25);
        if (s) want = -want;
        bool ok = isnan(want) ? isnan(out[i]) : (double)out[i] == want && (signbit(out[i]) != 0) == (s != 0);
        if (!ok) fail_msg("f16 %04x widened to %.10g, want %.10g", i, out[i], want);
    }
    assert_true(out[0x0001] == ldexpf(1, -24) && out[0x7bff] == 65504.0f && signbit(out[0x8000]));
    dsa_safetensors_close(&st);
    free(bits);
    free(out);
}

static void test_read_f32_errors(void **state) {
    (void)state;
    float a[6] = {0};
    int32_t i[2] = {1, 2};
    uint8_t f8[4] = {0x38, 0x40, 0, 0};
    DsaStTensorRef t[] = {
        {"layers.0.w", DSA_F32, 2, {2, 3}, a}, {"ids", DSA_I32, 1, {2}, i}, {"q", DSA_F8_E4M3, 1, {4}, f8}};
    const char *path = test_path("errs.safetensors");
    assert_ok(dsa_safetensors_write(path, t, 3, NULL, NULL, 0));
    DsaSafetensors st;
    assert_ok(dsa_safetensors_open(&st, path));
    float out[6];
    assert_fails_with(dsa_safetensors_read_f32(&st, "layers.0.w", 2, (int64_t[]){3, 2}, out), DSA_ERR_FORMAT,
                      "tensor layers.0.w has shape [2, 3] (F32), expected [3, 2]");
    assert_non_null(strstr(dsa_error_message(), path));
    assert_fails_with(dsa_safetensors_read_f32(&st, "layers.0.w", 1, (int64_t[]){6}, out), DSA_ERR_FORMAT,
                      "has shape [2, 3] (F32), expected [6]");
    assert_fails_with(dsa_safetensors_read_f32(&st, "nope", 1, (int64_t[]){1}, out), DSA_ERR_FORMAT,
                      "tensor nope is missing (expected shape [1])");
    assert_fails_with(dsa_safetensors_read_f32(&st, "ids", 1, (int64_t[]){2}, out), DSA_ERR_FORMAT,
                      "tensor ids is I32, expected F32, BF16 or F16");
    assert_fails_with(dsa_safetensors_read_f32(&st, "q", 1, (int64_t[]){4}, out), DSA_ERR_FORMAT,
                      "tensor q is F8_E4M3");
    assert_fails_with(dsa_safetensors_read_f32(&st, "ids", 5, (int64_t[]){1, 1, 1, 1, 1}, out), DSA_ERR_ARG,
                      "expected ndim 5");
    dsa_safetensors_close(&st);
}

static void test_write_refuses(void **state) {
    (void)state;
    float a[2] = {0};
    const char *path = test_path("refused.safetensors");
    DsaStTensorRef dup[] = {{"x", DSA_F32, 1, {1}, a}, {"x", DSA_F32, 1, {1}, a}};
    assert_fails_with(dsa_safetensors_write(path, dup, 2, NULL, NULL, 0), DSA_ERR_ARG, "tensor x given twice");
    DsaStTensorRef meta[] = {{"__metadata__", DSA_F32, 1, {1}, a}};
    assert_fails_with(dsa_safetensors_write(path, meta, 1, NULL, NULL, 0), DSA_ERR_ARG, "invalid name");
    DsaStTensorRef dims[] = {{"d", DSA_F32, 5, {1, 1, 1, 1}, a}};
    assert_fails_with(dsa_safetensors_write(path, dims, 1, NULL, NULL, 0), DSA_ERR_ARG, "tensor d: ndim 5");
    DsaStTensorRef neg[] = {{"n", DSA_F32, 1, {-2}, a}};
    assert_fails_with(dsa_safetensors_write(path, neg, 1, NULL, NULL, 0), DSA_ERR_ARG, "tensor n: shape[0] = -2");
    DsaStTensorRef null_data[] = {{"z", DSA_F32, 1, {2}, NULL}};
    assert_fails_with(dsa_safetensors_write(path, null_data, 1, NULL, NULL, 0), DSA_ERR_ARG, "tensor z: data is NULL");
    const char *keys[] = {"k", "k"}, *values[] = {"1", "2"};
    assert_fails_with(dsa_safetensors_write(path, NULL, 0, keys, values, 2), DSA_ERR_ARG,
                      "metadata key \"k\" given twice");
    assert_false(test_exists(path));
    DsaStTensorRef ok[] = {{"o", DSA_F32, 1, {2}, a}};
    assert_fails_with(dsa_safetensors_write(test_path("no/such/dir.safetensors"), ok, 1, NULL, NULL, 0), DSA_ERR_IO,
                      "no/such/dir.safetensors: cannot create");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_writer_bytes),
        cmocka_unit_test(test_handmade_file),
        cmocka_unit_test(test_malformed_refused),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_widening_exact),
        cmocka_unit_test(test_read_f32_errors),
        cmocka_unit_test(test_write_refuses),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    test_tmpdir_remove();
    return rc;
}
