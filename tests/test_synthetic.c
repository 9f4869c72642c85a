/* test_synthetic.c: the synthetic-v1 recall tasks (data/synthetic.h): determinism, the
 * token layout, exact distances, key and needle uniqueness, the scanner on hand-made
 * windows (cut records, cut answers, document boundaries), and option errors. */
#include "tests/test_util.h"

#include "core/mem.h"
#include "data/synthetic.h"

typedef struct {
    DsaSynGen *gen;
    uint32_t *doc;
    int64_t len;
} Gen;

static Gen gen_open(const DsaSyntheticOptions *o) {
    Gen g = {0};
    assert_ok(dsa_synthetic_gen_new(&g.gen, o));
    g.len = dsa_synthetic_gen_doc_len(g.gen);
    g.doc = dsa_malloc((size_t)g.len * sizeof *g.doc);
    assert_non_null(g.doc);
    return g;
}

static void gen_close(Gen *g) {
    dsa_free(g->doc, (size_t)g->len * sizeof *g->doc);
    dsa_synthetic_gen_free(g->gen);
}

static DsaSyntheticOptions small_options(DsaSynTask task) {
    DsaSyntheticOptions o;
    dsa_synthetic_options_default(&o);
    o.task = task;
    o.doc_tokens = 4096;
    o.total_tokens = 8 * 4096;
    o.vocab_size = 64;
    o.queries_per_doc = 8;
    o.n_distances = 4;
    o.distances[0] = 4;
    o.distances[1] = 100;
    o.distances[2] = 1000;
    o.distances[3] = 4096 - 10;
    return o;
}

static int in_list(const DsaSyntheticOptions *o, int64_t d) {
    for (int i = 0; i < o->n_distances; i++)
        if (o->distances[i] == d) return 1;
    return 0;
}

/* Every token is PAD-free, never reserved, and below V; filler / symbol ranges hold. */
static void check_tokens(const uint32_t *t, int64_t n, uint64_t vocab) {
    for (int64_t i = 0; i < n; i++) {
        assert_true(t[i] < vocab);
        assert_true(t[i] != DSA_SYN_PAD && t[i] != DSA_SYN_EOS);
        assert_false(t[i] > DSA_SYN_NEEDLE && t[i] < DSA_SYN_FIRST_FILLER);
    }
}

/* Structural checks of one document; returns the number of answers. */
static int64_t check_doc(const DsaSyntheticOptions *o, const uint32_t *t, int64_t n, int needle) {
    check_tokens(t, n, o->vocab_size);
    DsaSynScan scan = {0};
    assert_ok(dsa_synthetic_scan(t, n, &scan));
    int64_t records = 0;
    for (int64_t i = 0; i < n; i++) records += t[i] == (needle ? DSA_SYN_NEEDLE : DSA_SYN_KV_OPEN);
    if (needle) records -= scan.count;     /* queries hold a NEEDLE token too */
    assert_int_equal(records, scan.count); /* one record per query */
    assert_true(scan.count >= 1);
    for (int64_t a = 0; a < scan.count; a++) {
        const DsaSynAnswer *x = &scan.answers[a];
        assert_int_equal(x->task, needle ? DSA_SYN_TASK_NEEDLE : DSA_SYN_TASK_KV);
        assert_int_equal(x->value_len, needle ? 4 : 2);
        assert_true(x->in_window && x->complete && x->values_match);
        assert_int_equal(x->distance, x->answer_pos - x->record_pos);
        if (!in_list(o, x->distance)) fail_msg("distance %lld is not a requested one", (long long)x->distance);
        /* The values are symbols, and the record sits where the format says. */
        for (int k = 1; k <= x->value_len; k++) assert_true(t[x->answer_pos + k] >= o->vocab_size / 2);
        if (needle) {
            assert_int_equal(t[x->record_pos - 4], DSA_SYN_NEEDLE);
            assert_int_equal(t[x->answer_pos - 2], DSA_SYN_QUERY);
        } else {
            assert_int_equal(t[x->record_pos - 5], DSA_SYN_KV_OPEN);
            assert_int_equal(t[x->record_pos - 2], DSA_SYN_KV_SEP);
            assert_int_equal(t[x->answer_pos - 3], DSA_SYN_QUERY);
            assert_int_equal(t[x->answer_pos - 2], t[x->record_pos - 4]);
            assert_int_equal(t[x->answer_pos - 1], t[x->record_pos - 3]);
        }
        /* Uniqueness: no other answer has the same key (kv) or value (needle). */
        for (int64_t b = 0; b < a; b++) {
            const DsaSynAnswer *y = &scan.answers[b];
            int64_t xo = needle ? x->answer_pos + 1 : x->answer_pos - 2,
                    yo = needle ? y->answer_pos + 1 : y->answer_pos - 2;
            assert_true(memcmp(t + xo, t + yo, (needle ? 4 : 2) * sizeof *t) != 0);
        }
    }
    int64_t count = scan.count;
    dsa_synthetic_scan_free(&scan);
    return count;
}

static void test_kv_layout(void **state) {
    (void)state;
    DsaSyntheticOptions o = small_options(DSA_SYN_TASK_KV);
    Gen g = gen_open(&o);
    assert_int_equal(g.len, 4095);
    assert_int_equal(dsa_synthetic_gen_num_docs(g.gen), 8);
    int64_t seen[4] = {0}, total = 0;
    for (int64_t d = 0; d < 8; d++) {
        assert_ok(dsa_synthetic_gen_doc(g.gen, d, g.doc));
        total += check_doc(&o, g.doc, g.len, 0);
        DsaSynScan scan = {0};
        assert_ok(dsa_synthetic_scan(g.doc, g.len, &scan));
        for (int64_t a = 0; a < scan.count; a++)
            for (int i = 0; i < 4; i++) seen[i] += scan.answers[a].distance == o.distances[i];
        dsa_synthetic_scan_free(&scan);
    }
    /* Every distance occurs; the longest fits once per document at most. */
    for (int i = 0; i < 4; i++) assert_true(seen[i] > 0);
    assert_true(total >= 8 * 6);
    gen_close(&g);
}

static void test_needle_and_mixed(void **state) {
    (void)state;
    DsaSyntheticOptions o = small_options(DSA_SYN_TASK_NEEDLE);
    Gen g = gen_open(&o);
    for (int64_t d = 0; d < 8; d++) {
        assert_ok(dsa_synthetic_gen_doc(g.gen, d, g.doc));
        check_doc(&o, g.doc, g.len, 1);
    }
    gen_close(&g);
    o.task = DSA_SYN_TASK_MIXED;
    g = gen_open(&o);
    for (int64_t d = 0; d < 8; d++) {
        assert_ok(dsa_synthetic_gen_doc(g.gen, d, g.doc));
        check_doc(&o, g.doc, g.len, (int)(d & 1));
    }
    gen_close(&g);
}

/* One requested distance: every answer is exactly that far from its record. */
static void test_exact_distance(void **state) {
    (void)state;
    for (int task = 0; task < 2; task++) {
        DsaSyntheticOptions o = small_options((DsaSynTask)task);
        o.n_distances = 1;
        o.distances[0] = 777;
        o.vocab_size = 1000;
        Gen g = gen_open(&o);
        assert_ok(dsa_synthetic_gen_doc(g.gen, 5, g.doc));
        int64_t n = check_doc(&o, g.doc, g.len, task);
        assert_true(n >= (task ? 3 : 8)); /* kv: all 8; needle: 4095 / 786 = 5 pairs fit */
        gen_close(&g);
    }
}

/* Long distances up to the limit, and a document with room for one pair only. */
static void test_longest_distance(void **state) {
    (void)state;
    for (int task = 0; task < 2; task++) {
        DsaSyntheticOptions o = small_options((DsaSynTask)task);
        o.doc_tokens = 128 * 1024;
        o.total_tokens = 2 * o.doc_tokens;
        o.n_distances = 1;
        o.distances[0] = o.doc_tokens - 10;
        o.queries_per_doc = 4;
        Gen g = gen_open(&o);
        for (int64_t d = 0; d < 2; d++) {
            assert_ok(dsa_synthetic_gen_doc(g.gen, d, g.doc));
            assert_int_equal(check_doc(&o, g.doc, g.len, task), 1);
        }
        gen_close(&g);
    }
}

static void test_determinism(void **state) {
    (void)state;
    DsaSyntheticOptions o = small_options(DSA_SYN_TASK_MIXED);
    Gen a = gen_open(&o), b = gen_open(&o);
    uint32_t *keep = dsa_malloc((size_t)a.len * sizeof *keep);
    /* Document 3 alone equals document 3 generated after 0..2: one stream per document. */
    assert_ok(dsa_synthetic_gen_doc(a.gen, 3, keep));
    for (int64_t d = 0; d < 4; d++) assert_ok(dsa_synthetic_gen_doc(b.gen, d, b.doc));
    assert_memory_equal(keep, b.doc, (size_t)a.len * sizeof *keep);
    /* Another seed, another document; another index, another document. */
    o.seed = 1;
    Gen c = gen_open(&o);
    assert_ok(dsa_synthetic_gen_doc(c.gen, 3, c.doc));
    assert_memory_not_equal(keep, c.doc, (size_t)a.len * sizeof *keep);
    assert_ok(dsa_synthetic_gen_doc(a.gen, 2, a.doc));
    assert_memory_not_equal(keep, a.doc, (size_t)a.len * sizeof *keep);
    dsa_free(keep, (size_t)a.len * sizeof *keep);
    gen_close(&a);
    gen_close(&b);
    gen_close(&c);
}

/* Hand-made windows: records cut by the window start, answers cut by its end,
 * documents separated by EOS, and the nearest record winning. */
static void test_scan_windows(void **state) {
    (void)state;
    enum { K1 = 40, K2 = 41, V1 = 50, V2 = 51, F = 20 };
    /* clang-format off */
    const uint32_t t[] = {
        DSA_SYN_KV_OPEN, K1, K2, DSA_SYN_KV_SEP, V1, V2,    /* 0..5: record */
        F, F,                                               /* 6, 7 */
        DSA_SYN_QUERY, K1, K2, DSA_SYN_ANSWER, V1, V2,      /* 8..13: answer at 11, d = 6 */
        DSA_SYN_EOS,                                        /* 14 */
        DSA_SYN_QUERY, K1, K2, DSA_SYN_ANSWER, V1, V2,      /* 15..20: other document */
        DSA_SYN_NEEDLE, 60, 61, 62, 63, F,                  /* 21..26: needle ends at 25 */
        DSA_SYN_NEEDLE, 33, 34, 35, 36,                     /* 27..31: nearer needle */
        DSA_SYN_QUERY, DSA_SYN_NEEDLE, DSA_SYN_ANSWER, 33, 34, 35, 36, /* 32..38: answer 34 */
        DSA_SYN_QUERY, K1, K2, DSA_SYN_ANSWER, V1,          /* 39..43: cut answer */
    };
    /* clang-format on */
    int64_t n = (int64_t)(sizeof t / sizeof t[0]);
    DsaSynScan s = {0};
    assert_ok(dsa_synthetic_scan(t, n, &s));
    assert_int_equal(s.count, 4);
    assert_int_equal(s.answers[0].answer_pos, 11);
    assert_int_equal(s.answers[0].distance, 6);
    assert_true(s.answers[0].values_match);
    assert_int_equal(s.answers[1].answer_pos, 18);
    assert_false(s.answers[1].in_window); /* the record is in the previous document */
    assert_int_equal(s.answers[1].distance, -1);
    assert_int_equal(s.answers[2].task, DSA_SYN_TASK_NEEDLE);
    assert_int_equal(s.answers[2].record_pos, 31);
    assert_int_equal(s.answers[2].distance, 3);
    assert_true(s.answers[2].values_match);
    assert_int_equal(s.answers[3].answer_pos, 42);
    assert_false(s.answers[3].in_window); /* no record of K1 K2 in this document */
    assert_false(s.answers[3].complete);
    /* A window starting inside the record: it is not found; at the ANSWER: task -1. */
    assert_ok(dsa_synthetic_scan(t + 2, 12, &s));
    assert_int_equal(s.count, 1);
    assert_false(s.answers[0].in_window);
    assert_int_equal(s.answers[0].task, DSA_SYN_TASK_KV);
    assert_ok(dsa_synthetic_scan(t + 11, 3, &s));
    assert_int_equal(s.count, 1);
    assert_int_equal(s.answers[0].task, -1);
    assert_int_equal(s.answers[0].value_len, 0);
    assert_ok(dsa_synthetic_scan(t, 0, &s));
    assert_int_equal(s.count, 0);
    dsa_synthetic_scan_free(&s);
}

static void test_bad_options(void **state) {
    (void)state;
    DsaSynGen *g = NULL;
    DsaSyntheticOptions o = small_options(DSA_SYN_TASK_KV);
    o.distances[3] = 4096 - 9;
    assert_fails_with(dsa_synthetic_gen_new(&g, &o), DSA_ERR_ARG, "distance 4087 does not fit");
    o = small_options(DSA_SYN_TASK_KV);
    o.distances[0] = 3;
    assert_fails_with(dsa_synthetic_gen_new(&g, &o), DSA_ERR_ARG, "distance 3 does not fit");
    o = small_options(DSA_SYN_TASK_KV);
    o.vocab_size = 63;
    assert_fails_with(dsa_synthetic_gen_new(&g, &o), DSA_ERR_ARG, "vocab_size 63");
    o = small_options(DSA_SYN_TASK_KV);
    o.queries_per_doc = 1000;
    assert_fails_with(dsa_synthetic_gen_new(&g, &o), DSA_ERR_ARG, "at most 170 queries");
    o = small_options(DSA_SYN_TASK_KV);
    o.doc_tokens = 15;
    assert_fails_with(dsa_synthetic_gen_new(&g, &o), DSA_ERR_ARG, "doc_tokens 15");
    DsaSynTask task;
    assert_fails_with(dsa_synthetic_task_parse("kvv", &task), DSA_ERR_ARG, "kv, needle or mixed");
    assert_null(g);
}

/* No distances given: 64, 256, 1024 for 4096-token documents. */
static void test_default_distances(void **state) {
    (void)state;
    DsaSyntheticOptions o = small_options(DSA_SYN_TASK_KV);
    o.n_distances = 0;
    Gen g = gen_open(&o);
    const DsaSyntheticOptions *r = dsa_synthetic_gen_options(g.gen);
    assert_int_equal(r->n_distances, 3);
    assert_int_equal(r->distances[0], 64);
    assert_int_equal(r->distances[2], 1024);
    assert_ok(dsa_synthetic_gen_doc(g.gen, 0, g.doc));
    check_doc(r, g.doc, g.len, 0);
    gen_close(&g);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kv_layout),      cmocka_unit_test(test_needle_and_mixed),
        cmocka_unit_test(test_exact_distance), cmocka_unit_test(test_longest_distance),
        cmocka_unit_test(test_determinism),    cmocka_unit_test(test_scan_windows),
        cmocka_unit_test(test_bad_options),    cmocka_unit_test(test_default_distances),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    test_tmpdir_remove();
    return rc;
}
