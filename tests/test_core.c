/* test_core.c: core/: the error trail, Philox known answers and stream independence,
 * counted allocation and arenas, tensors, count parsing, suggestions, progress. */
#include "tests/test_util.h"

#include <math.h>
#include <omp.h>

#include "core/fileutil.h"
#include "core/mem.h"
#include "core/progress.h"
#include "core/rng.h"
#include "core/strutil.h"
#include "core/tensor.h"

static DsaStatus inner_fails(void) { DSA_FAIL(DSA_ERR_FORMAT, "file %s: bad thing %d", "x.h5", 7); }
static DsaStatus middle(void) {
    DSA_TRY(inner_fails());
    return DSA_OK;
}

static void test_error_trail(void **state) {
    (void)state;
    dsa_error_clear();
    assert_int_equal(middle(), DSA_ERR_FORMAT);
    const char *msg = dsa_error_message();
    assert_non_null(strstr(msg, "tests/test_core.c:"));
    assert_non_null(strstr(msg, "file x.h5: bad thing 7"));
    assert_non_null(strstr(msg, "  at tests/test_core.c:"));
    assert_non_null(strstr(msg, "inner_fails()"));
    assert_int_equal(dsa_error_status(), DSA_ERR_FORMAT);
    char saved[256];
    dsa_error_save(saved, sizeof saved);
    dsa_error_clear();
    assert_int_equal(dsa_error_status(), DSA_OK);
    assert_int_equal(dsa_error_restore(DSA_ERR_FORMAT, saved), DSA_ERR_FORMAT);
    assert_string_equal(dsa_error_message(), saved);
    assert_string_equal(dsa_status_name(DSA_ERR_CONFIG), "config error");
}

/* Random123's known-answer vectors for Philox4x32-10. */
static void test_philox_known_answers(void **state) {
    (void)state;
    struct {
        uint32_t ctr[4], key[2], out[4];
    } kat[] = {
        {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
        {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
         {0xffffffff, 0xffffffff},
         {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
        {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
         {0xa4093822, 0x299f31d0},
         {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
    };
    for (size_t i = 0; i < sizeof kat / sizeof kat[0]; i++) {
        uint32_t out[4];
        dsa_philox4x32_10(kat[i].ctr, kat[i].key, out);
        assert_memory_equal(out, kat[i].out, sizeof out);
    }
}

static void test_rng_streams(void **state) {
    (void)state;
    /* Sequential draws equal stateless draws: any thread can compute element i. */
    DsaRng r = dsa_rng_init(42, 7);
    for (uint64_t i = 0; i < 100; i++) assert_int_equal(dsa_rng_u32(&r), dsa_rng_u32_at(42, 7, i));
    /* Filling in parallel with any thread count gives the same numbers. */
    enum { N = 10000 };
    static double a[N], b[N];
    omp_set_num_threads(1);
#pragma omp parallel for
    for (int i = 0; i < N; i++) a[i] = dsa_rng_normal_at(5, 9, (uint64_t)i);
    omp_set_num_threads(2);
#pragma omp parallel for
    for (int i = 0; i < N; i++) b[i] = dsa_rng_normal_at(5, 9, (uint64_t)i);
    assert_memory_equal(a, b, sizeof a);
    /* The normals look normal: mean ~0, variance ~1. */
    double mean = 0, var = 0;
    for (int i = 0; i < N; i++) mean += a[i] / N;
    for (int i = 0; i < N; i++) var += (a[i] - mean) * (a[i] - mean) / N;
    assert_true(fabs(mean) < 0.05);
    assert_true(fabs(var - 1.0) < 0.05);
    /* Split streams differ from each other and from the parent. */
    DsaRng parent = dsa_rng_init(42, 0);
    DsaRng c1 = dsa_rng_split(&parent, 1), c2 = dsa_rng_split(&parent, 2), c1b = dsa_rng_split(&parent, 1);
    uint32_t x1 = dsa_rng_u32(&c1), x2 = dsa_rng_u32(&c2), x1b = dsa_rng_u32(&c1b), xp = dsa_rng_u32(&parent);
    assert_int_equal(x1, x1b);
    assert_int_not_equal(x1, x2);
    assert_int_not_equal(x1, xp);
    /* dsa_rng_below is in range and roughly uniform. */
    int counts[6] = {0};
    DsaRng u = dsa_rng_init(3, 3);
    for (int i = 0; i < 60000; i++) counts[dsa_rng_below(&u, 6)]++;
    for (int k = 0; k < 6; k++) assert_true(counts[k] > 9500 && counts[k] < 10500);
    for (int i = 0; i < 1000; i++) {
        double x = dsa_rng_uniform(&u);
        assert_true(x >= 0.0 && x < 1.0);
    }
}

static void test_memory_and_arena(void **state) {
    (void)state;
    size_t live = dsa_mem_live();
    dsa_mem_reset_peak();
    void *p = dsa_malloc(1 << 20);
    assert_non_null(p);
    assert_int_equal(((uintptr_t)p) % 64, 0);
    assert_int_equal(dsa_mem_live(), live + (1 << 20));
    dsa_free(p, 1 << 20);
    assert_int_equal(dsa_mem_live(), live);
    assert_true(dsa_mem_peak() >= live + (1 << 20));
    assert_null(dsa_calloc(SIZE_MAX / 2, 4)); /* overflow is refused, not wrapped */

    /* A sizing pass counts what a real arena then provides. */
    int64_t shape[2] = {3, 5};
    DsaArena sizing;
    dsa_arena_init_sizing(&sizing);
    DsaTensor t1 = dsa_tensor_make("a", DSA_F32, 2, shape), t2 = dsa_tensor_make("b", DSA_BF16, 2, shape);
    assert_ok(dsa_tensor_alloc(&t1, &sizing));
    assert_ok(dsa_tensor_alloc(&t2, &sizing));
    assert_null(t1.data);
    DsaArena arena;
    assert_ok(dsa_arena_init(&arena, sizing.used, "test arena"));
    assert_ok(dsa_tensor_alloc(&t1, &arena));
    assert_ok(dsa_tensor_alloc(&t2, &arena));
    assert_int_equal(arena.used, sizing.used);
    assert_int_equal(dsa_tensor_bytes(&t1), 60);
    assert_int_equal(dsa_tensor_bytes(&t2), 30);
    DsaTensor t3 = dsa_tensor_make("c", DSA_F32, 2, shape);
    assert_int_equal(dsa_tensor_alloc(&t3, &arena), DSA_ERR_NOMEM);
    assert_non_null(strstr(dsa_error_message(), "allocating tensor c"));
    int64_t other[2] = {5, 3};
    assert_fails_with(dsa_tensor_check_shape(&t1, 2, other), DSA_ERR_FORMAT, "tensor a has shape [3, 5], expected [5, 3]");
    dsa_arena_free(&arena);
    DsaDType dt;
    assert_ok(dsa_dtype_parse("F8_E4M3", &dt, "w"));
    assert_int_equal(dt, DSA_F8_E4M3);
    assert_fails_with(dsa_dtype_parse("F128", &dt, "model.x"), DSA_ERR_FORMAT, "model.x: unsupported dtype \"F128\"");
}

static void test_parse_count(void **state) {
    (void)state;
    int64_t v;
    assert_ok(dsa_parse_count("131072", &v, "x"));
    assert_int_equal(v, 131072);
    assert_ok(dsa_parse_count("128Ki", &v, "x"));
    assert_int_equal(v, 131072);
    assert_ok(dsa_parse_count("2M", &v, "x"));
    assert_int_equal(v, 2000000);
    assert_ok(dsa_parse_count("1Gi", &v, "x"));
    assert_int_equal(v, 1073741824);
    assert_fails_with(dsa_parse_count("-5", &v, "--tokens"), DSA_ERR_ARG, "--tokens: \"-5\" is negative");
    assert_fails_with(dsa_parse_count("12Q", &v, "--tokens"), DSA_ERR_ARG, "unknown suffix");
    assert_fails_with(dsa_parse_count("abc", &v, "--tokens"), DSA_ERR_ARG, "not a non-negative integer");
    assert_fails_with(dsa_parse_count("99999999999T", &v, "--tokens"), DSA_ERR_ARG, "too large");
    int64_t list[8];
    int n;
    assert_ok(dsa_parse_count_list("256,4Ki,32Ki", list, 8, &n, "--distances"));
    assert_int_equal(n, 3);
    assert_int_equal(list[1], 4096);
    assert_fails_with(dsa_parse_count_list("1,,2", list, 8, &n, "--distances"), DSA_ERR_ARG, "bad list item");
}

static void test_suggestions(void **state) {
    (void)state;
    const char *keys[] = {"index_topk", "index_n_heads", "index_head_dim", "hidden_size", NULL};
    assert_string_equal(dsa_closest_word("index_top_k", keys), "index_topk");
    assert_string_equal(dsa_closest_word("hiden_size", keys), "hidden_size");
    assert_string_equal(dsa_closest_word("index_nheads", keys), "index_n_heads");
    assert_null(dsa_closest_word("completely_different", keys));
    assert_int_equal(dsa_edit_distance("abc", "acb"), 1);
    assert_int_equal(dsa_edit_distance("", "abc"), 3);
}

static void test_progress_plain_lines(void **state) {
    (void)state;
    const char *path = test_path("progress.txt");
    DsaProgress p;
    dsa_progress_start(&p, "pack", "tokens", 1000, 1);
    p.out = fopen(path, "w");
    p.live = 0;
    p.interval = 0.0; /* print every update */
    dsa_progress_update(&p, 500);
    dsa_progress_finish(&p);
    fclose(p.out);
    char *text = NULL;
    size_t len = 0;
    assert_ok(dsa_file_read_all(path, &text, &len));
    assert_non_null(strstr(text, "pack: 500/1.00K tokens (50.0%)"));
    assert_non_null(strstr(text, "elapsed")); /* the final line */
    assert_null(strchr(text, '\r')); /* no carriage returns when not on a terminal */
    dsa_free(text, len + 1);
    char buf[32];
    assert_string_equal(dsa_format_count(buf, sizeof buf, 1234567), "1.23M");
    assert_string_equal(dsa_format_count(buf, sizeof buf, 12), "12");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_error_trail),     cmocka_unit_test(test_philox_known_answers),
        cmocka_unit_test(test_rng_streams),     cmocka_unit_test(test_memory_and_arena),
        cmocka_unit_test(test_parse_count),     cmocka_unit_test(test_suggestions),
        cmocka_unit_test(test_progress_plain_lines),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    test_tmpdir_remove();
    return failed;
}
