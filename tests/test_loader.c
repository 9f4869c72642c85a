/* test_loader.c: the streaming loader: window content, epoch permutations, rank split,
 * determinism, resume equality, prefetch equivalence, segment ids, and bad input. */
#include "tests/test_util.h"

#include <hdf5.h>

#include "core/mem.h"
#include "data/loader.h"
#include "data/shard.h"

enum { VOCAB = 50000, EOS = 0 };

/* Global token i of the test stream (EOS every 37 tokens, so documents are 37 long). */
static uint32_t stream_token(int64_t i) { return i % 37 == 36 ? EOS : 1 + (uint32_t)((i * 7919) % (VOCAB - 1)); }

/* Write the stream's first `n` tokens as shards of at most `per_shard` tokens, split
 * at document boundaries; returns the number of shards. */
static int write_stream(const char *prefix, int64_t n, int64_t per_shard, int64_t chunk) {
    DsaShardSetOptions opts = {.out_prefix = prefix, .shard_tokens = per_shard, .meta = dsa_shard_meta_default(VOCAB, EOS)};
    opts.meta.chunk_tokens = chunk;
    DsaShardSet *set = NULL;
    assert_ok(dsa_shardset_open(&set, &opts));
    uint32_t doc[36];
    for (int64_t start = 0; start < n; start += 37) {
        for (int j = 0; j < 36; j++) doc[j] = stream_token(start + j);
        assert_ok(dsa_shardset_add_doc(set, doc, 36));
    }
    DsaShardSetStats stats;
    assert_ok(dsa_shardset_close(set, &stats));
    return stats.num_shards;
}

typedef struct {
    char **paths;
    int num_paths;
} Data;

static Data data_for(const char *prefix) {
    char pattern[600];
    snprintf(pattern, sizeof pattern, "%s-*.h5", prefix);
    const char *args[1] = {pattern};
    Data d;
    assert_ok(dsa_data_expand_paths(args, 1, &d.paths, &d.num_paths));
    return d;
}

static DsaLoaderOptions options_for(const Data *d, int64_t seq_len) {
    DsaLoaderOptions o = dsa_loader_options_default();
    o.paths = (const char *const *)d->paths;
    o.num_paths = d->num_paths;
    o.seq_len = seq_len;
    o.seed = 1234;
    return o;
}

static Data shared;
static const int64_t STREAM_TOKENS = 37 * 300; /* 11100 tokens */

static int setup(void **state) {
    (void)state;
    int shards = write_stream(test_path("stream"), STREAM_TOKENS, 2000, 64);
    if (shards < 3) return -1;
    shared = data_for(test_path("stream"));
    return 0;
}

static int teardown(void **state) {
    (void)state;
    dsa_data_paths_free(shared.paths, shared.num_paths);
    return 0;
}

/* Every window holds exactly the stream's tokens at w * seq_len, and one epoch visits
 * every window once, in an order that is not the identity. */
static void test_windows_and_epoch(void **state) {
    (void)state;
    DsaLoaderOptions o = options_for(&shared, 100);
    DsaLoader *l = NULL;
    assert_ok(dsa_loader_open(&l, &o));
    int64_t W = dsa_loader_num_windows(l);
    assert_int_equal(dsa_loader_total_tokens(l), STREAM_TOKENS);
    assert_int_equal(W, (STREAM_TOKENS - 1) / 100);
    uint8_t *seen = calloc((size_t)W, 1);
    int in_order = 1;
    for (int64_t i = 0; i < W; i++) {
        DsaWindow win;
        assert_ok(dsa_loader_next(l, &win));
        assert_int_equal(win.epoch, 0);
        assert_int_equal(win.position, i);
        assert_false(seen[win.window]);
        seen[win.window] = 1;
        in_order &= win.window == i;
        for (int64_t j = 0; j <= 100; j++) assert_int_equal(win.tokens[j], stream_token(win.window * 100 + j));
    }
    assert_false(in_order);
    DsaWindow win;
    assert_ok(dsa_loader_next(l, &win)); /* wraps into epoch 1 */
    assert_int_equal(win.epoch, 1);
    assert_int_equal(win.position, 0);
    free(seen);
    dsa_loader_close(l);
}

/* Read `n` windows' indices from a fresh loader. */
static void collect(DsaLoaderOptions o, int64_t n, int64_t *out) {
    DsaLoader *l = NULL;
    assert_ok(dsa_loader_open(&l, &o));
    for (int64_t i = 0; i < n; i++) {
        DsaWindow w;
        assert_ok(dsa_loader_next(l, &w));
        out[i] = w.window;
    }
    dsa_loader_close(l);
}

static void test_determinism(void **state) {
    (void)state;
    DsaLoaderOptions o = options_for(&shared, 64);
    int64_t a[400], b[400], c[400];
    collect(o, 400, a); /* spans more than two epochs of 173 windows */
    collect(o, 400, b);
    assert_memory_equal(a, b, sizeof a);
    o.seed = 99;
    collect(o, 400, c);
    assert_memory_not_equal(a, c, sizeof a);
    /* Epochs differ from each other. */
    assert_memory_not_equal(a, a + 173, 100 * sizeof a[0]);
    /* Prefetch depth and synchronous mode give the same stream. */
    o.seed = 1234;
    for (int depth = 0; depth <= 3; depth++) {
        o.prefetch = depth;
        collect(o, 400, b);
        assert_memory_equal(a, b, sizeof a);
    }
}

static void test_rank_split(void **state) {
    (void)state;
    DsaLoaderOptions o = options_for(&shared, 64);
    DsaLoader *l = NULL;
    assert_ok(dsa_loader_open(&l, &o));
    int64_t W = dsa_loader_num_windows(l);
    dsa_loader_close(l);
    for (int world = 1; world <= 4; world++) {
        int *owner = malloc((size_t)W * sizeof *owner);
        for (int64_t i = 0; i < W; i++) owner[i] = -1;
        int64_t per_rank = W / world, covered = 0;
        for (int rank = 0; rank < world; rank++) {
            o.rank = rank;
            o.world = world;
            assert_ok(dsa_loader_open(&l, &o));
            assert_int_equal(dsa_loader_rank_windows(l), per_rank);
            for (int64_t i = 0; i < per_rank; i++) {
                DsaWindow w;
                assert_ok(dsa_loader_next(l, &w));
                assert_int_equal(owner[w.window], -1); /* disjoint */
                owner[w.window] = rank;
                covered++;
            }
            DsaWindow w;
            assert_ok(dsa_loader_next(l, &w));
            assert_int_equal(w.epoch, 1); /* every rank has the same epoch length */
            dsa_loader_close(l);
        }
        assert_int_equal(covered, W - W % world); /* covers all but the W mod world remainder */
        free(owner);
    }
}

/* Stop after k windows, save the cursor (through JSON), resume in a new loader: the
 * next windows equal the uninterrupted run's, across an epoch boundary too. */
static void test_resume_equality(void **state) {
    (void)state;
    DsaLoaderOptions o = options_for(&shared, 64);
    o.segment_ids = 1;
    int64_t full[300];
    collect(o, 300, full);
    int64_t stops[] = {0, 1, 7, 172, 173, 250};
    for (size_t s = 0; s < sizeof stops / sizeof stops[0]; s++) {
        DsaLoader *l = NULL;
        assert_ok(dsa_loader_open(&l, &o));
        DsaWindow w;
        for (int64_t i = 0; i < stops[s]; i++) assert_ok(dsa_loader_next(l, &w));
        DsaLoaderCursor saved = dsa_loader_cursor(l);
        cJSON *json = dsa_loader_cursor_to_json(&saved);
        char *text = cJSON_PrintUnformatted(json);
        cJSON_Delete(json);
        dsa_loader_close(l);

        cJSON *parsed = cJSON_Parse(text);
        free(text);
        DsaLoaderCursor restored;
        assert_ok(dsa_loader_cursor_from_json(parsed, &restored, "test"));
        cJSON_Delete(parsed);
        assert_ok(dsa_loader_open(&l, &o));
        assert_ok(dsa_loader_seek(l, &restored));
        for (int64_t i = stops[s]; i < 300; i++) {
            assert_ok(dsa_loader_next(l, &w));
            assert_int_equal(w.window, full[i]);
        }
        dsa_loader_close(l);
    }
}

/* Segment ids change exactly after each EOS (every document ends with one here). */
static void test_segment_ids(void **state) {
    (void)state;
    DsaLoaderOptions o = options_for(&shared, 500); /* windows cross shard boundaries */
    o.segment_ids = 1;
    DsaLoader *l = NULL;
    assert_ok(dsa_loader_open(&l, &o));
    for (int64_t i = 0; i < dsa_loader_rank_windows(l); i++) {
        DsaWindow w;
        assert_ok(dsa_loader_next(l, &w));
        assert_int_equal(w.segment_ids[0], 0);
        for (int64_t j = 1; j <= 500; j++) {
            int32_t step = w.segment_ids[j] - w.segment_ids[j - 1];
            assert_int_equal(step, w.tokens[j - 1] == EOS ? 1 : 0);
        }
    }
    dsa_loader_close(l);
}

static void test_cursor_mismatch(void **state) {
    (void)state;
    DsaLoaderOptions o = options_for(&shared, 64);
    DsaLoader *l = NULL;
    assert_ok(dsa_loader_open(&l, &o));
    DsaLoaderCursor c = dsa_loader_cursor(l);
    c.seq_len = 128;
    assert_fails_with(dsa_loader_seek(l, &c), DSA_ERR_FORMAT, "seq_len = 128 but the loader has seq_len = 64");
    c = dsa_loader_cursor(l);
    c.total_tokens++;
    assert_fails_with(dsa_loader_seek(l, &c), DSA_ERR_FORMAT, "total_tokens");
    c = dsa_loader_cursor(l);
    c.position = 1000000;
    assert_fails_with(dsa_loader_seek(l, &c), DSA_ERR_FORMAT, "past the");
    cJSON *bad = cJSON_Parse("{\"epoch\": \"x\"}");
    assert_fails_with(dsa_loader_cursor_from_json(bad, &c, "state.json"), DSA_ERR_FORMAT, "state.json");
    cJSON_Delete(bad);
    dsa_loader_close(l);
}

/* The run check before training (dsa_data_check_vocab): vocab_size equal to the shards'
 * passes, one less is refused naming the shard, both sizes and the tokenizer; a file
 * that is no shard is refused by name. */
static void test_check_vocab(void **state) {
    (void)state;
    DsaShardMeta meta;
    assert_ok(dsa_shard_read_meta(shared.paths[0], &meta));
    assert_int_equal(meta.vocab_size, VOCAB);
    assert_int_equal(meta.eos_id, EOS);
    assert_string_equal(meta.tokenizer, "external");
    const char *const *paths = (const char *const *)shared.paths;
    assert_ok(dsa_data_check_vocab(paths, shared.num_paths, VOCAB));
    assert_ok(dsa_data_check_vocab(paths, shared.num_paths, VOCAB + 7));
    char want[700];
    snprintf(want, sizeof want, "%s: shard vocab_size %d (tokenizer external) exceeds the model's vocab_size %d",
             shared.paths[0], VOCAB, VOCAB - 1);
    assert_fails_with(dsa_data_check_vocab(paths, shared.num_paths, VOCAB - 1), DSA_ERR_RANGE, want);
    const char *not_shard = test_path("not-a-shard.h5");
    test_put_text(not_shard, "hello");
    assert_fails_with(dsa_data_check_vocab(&not_shard, 1, VOCAB), DSA_ERR_FORMAT, "not-a-shard.h5: not an HDF5 file");
}

static void test_bad_input(void **state) {
    (void)state;
    /* A window longer than the data. */
    DsaLoaderOptions o = options_for(&shared, STREAM_TOKENS);
    DsaLoader *l = NULL;
    assert_fails_with(dsa_loader_open(&l, &o), DSA_ERR_RANGE, "longer than the data");
    /* Fewer windows than ranks. */
    o = options_for(&shared, STREAM_TOKENS / 2);
    o.world = 3;
    assert_fails_with(dsa_loader_open(&l, &o), DSA_ERR_RANGE, "fewer than the 3 ranks");
    /* A model vocabulary smaller than the shards'. */
    o = options_for(&shared, 64);
    o.vocab_size = 1000;
    assert_fails_with(dsa_loader_open(&l, &o), DSA_ERR_RANGE, "exceeds the model's vocab_size 1000");
    /* Shards from different tokenizers. */
    DsaShardSetOptions other = {.out_prefix = test_path("other"), .shard_tokens = 1000,
                                .meta = dsa_shard_meta_default(VOCAB + 1, EOS)};
    DsaShardSet *set = NULL;
    uint32_t doc[4] = {1, 2, 3, 4};
    assert_ok(dsa_shardset_open(&set, &other));
    assert_ok(dsa_shardset_add_doc(set, doc, 4));
    assert_ok(dsa_shardset_close(set, NULL));
    char other_path[600];
    dsa_shardset_path(other_path, sizeof other_path, other.out_prefix, 0);
    const char *mixed[2] = {shared.paths[0], other_path};
    o = options_for(&shared, 64);
    o.paths = mixed;
    o.num_paths = 2;
    assert_fails_with(dsa_loader_open(&l, &o), DSA_ERR_FORMAT, "must share one tokenizer");
    /* Missing files and patterns. */
    const char *missing[1] = {test_path("nothing-*.h5")};
    char **paths = NULL;
    int n = 0;
    assert_fails_with(dsa_data_expand_paths(missing, 1, &paths, &n), DSA_ERR_IO, "no file matches");
    const char *twice[2] = {shared.paths[0], shared.paths[0]};
    assert_fails_with(dsa_data_expand_paths(twice, 2, &paths, &n), DSA_ERR_ARG, "listed twice");
    /* Bad options. */
    o = options_for(&shared, 64);
    o.rank = 2;
    o.world = 2;
    assert_fails_with(dsa_loader_open(&l, &o), DSA_ERR_ARG, "rank 2 of world 2");
}

/* A corrupt chunk met by the prefetch thread surfaces on the caller's thread, naming
 * the file, when the caller reaches that window. */
static void test_corrupt_chunk_in_prefetch(void **state) {
    (void)state;
    write_stream(test_path("corrupt"), 37 * 40, 100000, 64);
    Data d = data_for(test_path("corrupt"));
    DsaShard s;
    assert_ok(dsa_shard_open(&s, d.paths[0]));
    uint64_t at = s.chunk_addr[5] + s.chunk_bytes[5] / 2;
    dsa_shard_close(&s);
    FILE *f = fopen(d.paths[0], "r+b");
    fseek(f, (long)at, SEEK_SET);
    fwrite("\x55\xaa\x55\xaa\x55\xaa", 1, 6, f);
    fclose(f);
    DsaLoaderOptions o = options_for(&d, 64);
    o.prefetch = 2;
    DsaLoader *l = NULL;
    assert_ok(dsa_loader_open(&l, &o));
    DsaStatus st = DSA_OK;
    DsaWindow w;
    int64_t good = 0;
    for (int64_t i = 0; i < dsa_loader_rank_windows(l) && st == DSA_OK; i++) {
        dsa_error_clear();
        st = dsa_loader_next(l, &w);
        good += st == DSA_OK;
    }
    assert_int_equal(st, DSA_ERR_FORMAT);
    assert_true(good > 0); /* windows before the bad one were delivered */
    assert_non_null(strstr(dsa_error_message(), d.paths[0]));
    assert_non_null(strstr(dsa_error_message(), "corrupt"));
    assert_non_null(strstr(dsa_error_message(), "prefetch thread"));
    dsa_loader_close(l);
    dsa_data_paths_free(d.paths, d.num_paths);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_windows_and_epoch), cmocka_unit_test(test_determinism),
        cmocka_unit_test(test_rank_split),        cmocka_unit_test(test_resume_equality),
        cmocka_unit_test(test_segment_ids),       cmocka_unit_test(test_cursor_mismatch),
        cmocka_unit_test(test_bad_input),         cmocka_unit_test(test_corrupt_chunk_in_prefetch),
        cmocka_unit_test(test_check_vocab),
    };
    int failed = cmocka_run_group_tests(tests, setup, teardown);
    test_tmpdir_remove();
    return failed;
}
