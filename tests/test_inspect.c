/* test_inspect.c: shard statistics (data/inspect.h) checked exactly on hand-computed
 * shards, the --verify path, the hash histogram of huge vocabularies, errors that name
 * the file, and a smoke run of the loader benchmark on a tiny data set. */
#include "tests/test_util.h"

#include <hdf5.h>
#include <math.h>

#include "core/mem.h"
#include "data/inspect.h"
#include "data/shard.h"

/* Three documents, vocab 100, EOS 0, chunks of 8 tokens (15 tokens: one full chunk and
 * a partial one). The stream is
 *   5 5 5 7 0 | 9 0 | 5 7 11 99 5 5 3 0
 * so counts are 5:6, 0:3, 7:2, and 1 each for 3, 9, 11, 99. */
static const uint32_t doc_a[] = {5, 5, 5, 7}, doc_b[] = {9}, doc_c[] = {5, 7, 11, 99, 5, 5, 3};

static const char *write_known(const char *name, int64_t shard_tokens) {
    char prefix[600];
    snprintf(prefix, sizeof prefix, "%s/%s", test_tmpdir(), name);
    DsaShardSetOptions o = {.out_prefix = prefix, .shard_tokens = shard_tokens, .meta = dsa_shard_meta_default(100, 0)};
    o.meta.chunk_tokens = 8;
    snprintf(o.meta.tokenizer, sizeof o.meta.tokenizer, "test-v1");
    DsaShardSet *set = NULL;
    assert_ok(dsa_shardset_open(&set, &o));
    assert_ok(dsa_shardset_add_doc(set, doc_a, 4));
    assert_ok(dsa_shardset_add_doc(set, doc_b, 1));
    assert_ok(dsa_shardset_add_doc(set, doc_c, 7));
    assert_ok(dsa_shardset_close(set, NULL));
    static char path[8][700];
    static int next;
    char *p = path[next++ % 8];
    dsa_shardset_path(p, 700, prefix, 0);
    return p;
}

static DsaInspectOptions quiet_options(int top_n, int verify) {
    DsaInspectOptions o = dsa_inspect_options_default();
    o.top_n = top_n;
    o.verify = verify;
    o.progress = 0;
    return o;
}

static void check_known_stats(const DsaShardStats *s, const char *path) {
    assert_string_equal(s->path, path);
    assert_int_equal(s->format_version, DSA_SHARD_FORMAT_VERSION);
    assert_string_equal(s->meta.tokenizer, "test-v1");
    assert_int_equal(s->meta.vocab_size, 100);
    assert_int_equal(s->meta.eos_id, 0);
    assert_int_equal(s->meta.chunk_tokens, 8);
    assert_int_equal(s->meta.zstd_level, DSA_SHARD_DEFAULT_ZSTD_LEVEL);
    assert_int_equal(s->num_tokens, 15);
    assert_int_equal(s->num_docs, 3);
    assert_int_equal(s->doc_min, 2);
    assert_int_equal(s->doc_max, 8);
    assert_true(s->doc_mean == 5.0);
    assert_int_equal(s->docs_without_eos, 0);
    assert_int_equal(s->num_chunks, 2);
    DsaShard sh;
    assert_ok(dsa_shard_open(&sh, path));
    assert_int_equal(s->compressed_bytes, sh.compressed_bytes);
    dsa_shard_close(&sh);
    assert_true(s->file_bytes > (int64_t)s->compressed_bytes);
    assert_true(fabs(s->compression_ratio - 60.0 / (double)s->compressed_bytes) < 1e-12);
    assert_true(fabs(s->bits_per_token - 8.0 * (double)s->compressed_bytes / 15.0) < 1e-12);
    assert_int_equal(s->distinct_ids, 7);
    assert_int_equal(s->min_id, 0);
    assert_int_equal(s->max_id, 99);
    assert_int_equal(s->eos_count, 3);
    assert_true(fabs(s->eos_share - 0.2) < 1e-15);
    double p[] = {6 / 15.0, 3 / 15.0, 2 / 15.0, 1 / 15.0, 1 / 15.0, 1 / 15.0, 1 / 15.0}, h = 0;
    for (int i = 0; i < 7; i++) h -= p[i] * log2(p[i]);
    assert_true(fabs(s->entropy_bits - h) < 1e-12);
}

static void test_known_shard(void **state) {
    (void)state;
    const char *path = write_known("known", 1000);
    DsaInspectOptions o = quiet_options(5, 0);
    DsaShardStats *s = dsa_malloc(sizeof *s);
    assert_ok(dsa_inspect_shard(path, &o, s));
    check_known_stats(s, path);
    /* Top 5: count descending, ties by id ascending. */
    const DsaTokenCount want[] = {{5, 6}, {0, 3}, {7, 2}, {3, 1}, {9, 1}};
    assert_int_equal(s->num_top, 5);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(s->top[i].id, want[i].id);
        assert_int_equal(s->top[i].count, want[i].count);
    }
    assert_int_equal(s->verified, 0);
    /* More than there are ids: all 7; none: 0. */
    o.top_n = 100;
    assert_ok(dsa_inspect_shard(path, &o, s));
    assert_int_equal(s->num_top, 7);
    assert_int_equal(s->top[6].id, 99);
    o.top_n = 0;
    assert_ok(dsa_inspect_shard(path, &o, s));
    assert_int_equal(s->num_top, 0);
    assert_int_equal(s->distinct_ids, 7);
    o.top_n = DSA_INSPECT_MAX_TOP + 1;
    assert_fails_with(dsa_inspect_shard(path, &o, s), DSA_ERR_ARG, "top-N");
    dsa_free(s, sizeof *s);
}

static void test_verify_agrees(void **state) {
    (void)state;
    const char *path = write_known("verify", 1000);
    DsaInspectOptions o = quiet_options(3, 1);
    DsaShardStats *s = dsa_malloc(sizeof *s);
    assert_ok(dsa_inspect_shard(path, &o, s));
    check_known_stats(s, path);
    assert_int_equal(s->verified, 1);
    assert_int_equal(s->num_top, 3);
    dsa_free(s, sizeof *s);
}

/* A document split across shards: the first piece has no EOS. */
static void test_split_document(void **state) {
    (void)state;
    char prefix[600];
    snprintf(prefix, sizeof prefix, "%s/split", test_tmpdir());
    DsaShardSetOptions o = {.out_prefix = prefix, .shard_tokens = 6, .meta = dsa_shard_meta_default(50, 1)};
    o.meta.chunk_tokens = 4;
    uint32_t doc[10] = {2, 3, 4, 5, 6, 7, 8, 9, 10, 11};
    DsaShardSet *set = NULL;
    assert_ok(dsa_shardset_open(&set, &o));
    assert_ok(dsa_shardset_add_doc(set, doc, 10));
    DsaShardSetStats st;
    assert_ok(dsa_shardset_close(set, &st));
    assert_int_equal(st.num_shards, 2);
    char p0[700], p1[700];
    dsa_shardset_path(p0, sizeof p0, prefix, 0);
    dsa_shardset_path(p1, sizeof p1, prefix, 1);
    DsaInspectOptions io = quiet_options(2, 1);
    DsaShardStats *s = dsa_malloc(sizeof *s);
    DsaInspectTotals totals = {0};
    assert_ok(dsa_inspect_shard(p0, &io, s));
    assert_int_equal(s->num_tokens, 6);
    assert_int_equal(s->num_docs, 1);
    assert_int_equal(s->docs_without_eos, 1);
    assert_int_equal(s->eos_count, 0);
    assert_true(s->eos_share == 0.0);
    assert_int_equal(s->min_id, 2);
    assert_int_equal(s->max_id, 7);
    assert_true(fabs(s->entropy_bits - log2(6.0)) < 1e-12);
    dsa_inspect_totals_add(&totals, s);
    assert_ok(dsa_inspect_shard(p1, &io, s));
    assert_int_equal(s->num_tokens, 5);
    assert_int_equal(s->docs_without_eos, 0);
    assert_int_equal(s->eos_count, 1);
    assert_int_equal(s->max_id, 11);
    dsa_inspect_totals_add(&totals, s);
    assert_int_equal(totals.num_files, 2);
    assert_int_equal(totals.num_tokens, 11);
    assert_int_equal(totals.num_docs, 2);
    assert_int_equal(totals.docs_without_eos, 1);
    assert_int_equal(totals.eos_count, 1);
    dsa_free(s, sizeof *s);
}

/* vocab_size 2^32 takes the hash histogram; 50000 distinct ids make it grow. */
static void test_huge_vocab_hash(void **state) {
    (void)state;
    const char *path = test_path("huge.h5");
    DsaShardMeta meta = dsa_shard_meta_default(1ull << 32, 4000000000u);
    meta.chunk_tokens = 4096;
    DsaShardWriter *w = NULL;
    assert_ok(dsa_shard_writer_open(&w, path, &meta));
    enum { N = 50000 };
    uint32_t *ids = dsa_malloc(N * 4);
    for (int i = 0; i < N; i++) ids[i] = 7 + (uint32_t)i * 80000u; /* up to ~4e9, never the EOS */
    assert_ok(dsa_shard_writer_append(w, ids, N));
    assert_ok(dsa_shard_writer_append(w, ids + 10, 1)); /* id 800007 twice */
    assert_ok(dsa_shard_writer_end_doc(w, 1));
    assert_ok(dsa_shard_writer_close(w));
    DsaInspectOptions o = quiet_options(2, 0);
    DsaShardStats *s = dsa_malloc(sizeof *s);
    assert_ok(dsa_inspect_shard(path, &o, s));
    assert_int_equal(s->num_tokens, N + 2);
    assert_int_equal(s->distinct_ids, N + 1);
    assert_int_equal(s->min_id, 7);
    assert_int_equal(s->max_id, 4000000000u);
    assert_int_equal(s->eos_count, 1);
    assert_int_equal(s->top[0].id, 800007);
    assert_int_equal(s->top[0].count, 2);
    assert_int_equal(s->top[1].id, 7);
    assert_int_equal(s->top[1].count, 1);
    dsa_free(ids, N * 4);
    dsa_free(s, sizeof *s);
}

static void test_errors_name_the_file(void **state) {
    (void)state;
    DsaInspectOptions o = quiet_options(10, 0);
    DsaShardStats *s = dsa_malloc(sizeof *s);
    const char *missing = test_path("missing.h5");
    assert_fails_with(dsa_inspect_shard(missing, &o, s), DSA_ERR_IO, missing);
    const char *text = test_write_file("notes.h5", "not a shard\n", 12);
    assert_fails_with(dsa_inspect_shard(text, &o, s), DSA_ERR_FORMAT, text);
    assert_non_null(strstr(dsa_error_message(), "not an HDF5 file"));

    /* Token ids beyond a tampered vocab_size: the read names the id and the file. */
    const char *path = write_known("range", 1000);
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    assert_true(f >= 0);
    hid_t a = H5Aopen(f, "vocab_size", H5P_DEFAULT);
    uint64_t vocab = 50;
    assert_true(H5Awrite(a, H5T_NATIVE_UINT64, &vocab) >= 0);
    H5Aclose(a);
    H5Fclose(f);
    assert_fails_with(dsa_inspect_shard(path, &o, s), DSA_ERR_RANGE, path);
    assert_non_null(strstr(dsa_error_message(), "token id 99"));

    /* A corrupt chunk: the error names the file and the chunk. */
    path = write_known("corrupt", 1000);
    DsaShard sh;
    assert_ok(dsa_shard_open(&sh, path));
    uint64_t at = sh.chunk_addr[1] + sh.chunk_bytes[1] / 2;
    dsa_shard_close(&sh);
    FILE *fp = fopen(path, "r+b");
    assert_non_null(fp);
    fseek(fp, (long)at, SEEK_SET);
    const uint8_t junk[4] = {0xde, 0xad, 0xbe, 0xef};
    fwrite(junk, 1, sizeof junk, fp);
    fclose(fp);
    assert_fails_with(dsa_inspect_shard(path, &o, s), DSA_ERR_FORMAT, path);
    assert_non_null(strstr(dsa_error_message(), "chunk 1"));
    dsa_free(s, sizeof *s);
}

static void test_printers(void **state) {
    (void)state;
    const char *path = write_known("print", 1000);
    DsaInspectOptions o = quiet_options(3, 1);
    DsaShardStats *s = dsa_malloc(sizeof *s);
    assert_ok(dsa_inspect_shard(path, &o, s));
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    dsa_inspect_print_text(out, s, 1);
    DsaInspectTotals t = {0};
    dsa_inspect_totals_add(&t, s);
    dsa_inspect_totals_add(&t, s);
    dsa_inspect_print_totals(out, &t);
    fclose(out);
    const char *expect[] = {path, "test-v1", "documents        3  (length min 2, mean 5.0, max 8)",
                            "distinct ids     7 of 100", "id range         0 .. 99", "EOS share        20.0000%",
                            "verify           ok", "total: 2 files, 30 tokens, 6 documents"};
    for (size_t i = 0; i < sizeof expect / sizeof *expect; i++)
        if (!strstr(text, expect[i])) fail_msg("text output lacks \"%s\":\n%s", expect[i], text);
    free(text);

    cJSON *j = dsa_inspect_to_json(s, 1);
    assert_string_equal(cJSON_GetObjectItem(j, "path")->valuestring, path);
    assert_int_equal(cJSON_GetObjectItem(j, "tokens")->valuedouble, 15);
    assert_int_equal(cJSON_GetObjectItem(j, "distinct_ids")->valuedouble, 7);
    assert_int_equal(cJSON_GetObjectItem(j, "doc_len_max")->valuedouble, 8);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(j, "verified")));
    cJSON *top = cJSON_GetObjectItem(j, "top");
    assert_int_equal(cJSON_GetArraySize(top), 3);
    assert_int_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(top, 0), "id")->valuedouble, 5);
    assert_int_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(top, 0), "count")->valuedouble, 6);
    cJSON_Delete(j);
    j = dsa_inspect_totals_to_json(&t);
    assert_int_equal(cJSON_GetObjectItem(j, "tokens")->valuedouble, 30);
    cJSON_Delete(j);
    dsa_free(s, sizeof *s);
}

/* The benchmark on a tiny data set: every measurement runs and the checks pass. */
static void test_bench_smoke(void **state) {
    (void)state;
    for (int d = 0; d < DSA_BENCH_NUM_DISTS; d++) {
        DsaBenchLoaderOptions o = dsa_bench_loader_options_default();
        o.dir = test_tmpdir();
        o.dist = (DsaBenchDist)d;
        o.tokens = 150000;
        o.seq_len = 4096;
        o.chunk_tokens = 1024;
        o.shard_tokens = 50000;
        o.repeat = 2;
        DsaBenchLoaderResult r;
        assert_ok(dsa_bench_loader_run(&o, &r));
        assert_true(r.stream_tokens >= o.tokens);
        assert_true(r.num_shards >= 3);
        assert_int_equal(r.windows, (r.stream_tokens - 1) / o.seq_len);
        assert_int_equal(r.checked_windows, 16);
        assert_true(r.compression_ratio > 1.0);
        assert_int_equal(r.loader_p0.tokens, r.windows * (o.seq_len + 1));
        assert_true(r.decoded_tokens >= r.loader_p0.tokens);
        const DsaBenchTiming *t[] = {&r.loader_p0, &r.loader_p2, &r.plain, &r.zstd, &r.range};
        for (int i = 0; i < 5; i++) assert_true(t[i]->best_s > 0 && t[i]->best_s <= t[i]->median_s);
        char path[700];
        snprintf(path, sizeof path, "%s/%s.u32", o.dir, dsa_bench_dist_name(o.dist));
        assert_int_equal(access(path, F_OK), 0);
        dsa_bench_loader_cleanup(o.dir, o.dist);
        assert_int_not_equal(access(path, F_OK), 0);
        snprintf(path, sizeof path, "%s/%s-00000.h5", o.dir, dsa_bench_dist_name(o.dist));
        assert_int_not_equal(access(path, F_OK), 0);
    }
    DsaBenchDist dist;
    assert_ok(dsa_bench_dist_parse("text", &dist));
    assert_int_equal(dist, DSA_BENCH_TEXT);
    assert_fails_with(dsa_bench_dist_parse("zipf", &dist), DSA_ERR_ARG, "choices");
    DsaBenchLoaderOptions o = dsa_bench_loader_options_default();
    o.dir = test_tmpdir();
    o.tokens = 100;
    DsaBenchLoaderResult r;
    assert_fails_with(dsa_bench_loader_run(&o, &r), DSA_ERR_ARG, "--tokens 100 is too few");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_known_shard),     cmocka_unit_test(test_verify_agrees),
        cmocka_unit_test(test_split_document),  cmocka_unit_test(test_huge_vocab_hash),
        cmocka_unit_test(test_errors_name_the_file), cmocka_unit_test(test_printers),
        cmocka_unit_test(test_bench_smoke),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    test_tmpdir_remove();
    return failed;
}
