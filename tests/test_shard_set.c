/* test_shard_set.c: shard sets and their completion manifest (data/shard.h, "writing a
 * set"; data/shard_set.c): the manifest lists every shard and each shard names it; a
 * shard whose set has no manifest (an interrupted pack), is not listed, or differs from
 * its entry is refused by the loader and by `dsa inspect`, naming both files; a lone
 * shard needs none; and `dsa pack` removes the temporaries of a killed run into its
 * prefix, replaces an interrupted set without --force and refuses a finished one. The
 * kill-at-every-operation sweep of `dsa pack` is tests/reliability.sh. */
#include <sys/stat.h>
#include <unistd.h>

#include "core/fileutil.h"
#include "core/mem.h"
#include "data/inspect.h"
#include "data/loader.h"
#include "data/pack.h"
#include "data/shard.h"
#include "test_util.h"

/* A set of `docs` documents of 10 tokens, 3 documents a shard: returns its shard count. */
static int write_set(const char *prefix, int docs) {
    DsaShardSetOptions o = {.out_prefix = prefix, .shard_tokens = 33, .meta = dsa_shard_meta_default(100, 0)};
    o.meta.chunk_tokens = 8;
    DsaShardSet *set = NULL;
    assert_ok(dsa_shardset_open(&set, &o));
    uint32_t doc[10];
    for (int d = 0; d < docs; d++) {
        for (int i = 0; i < 10; i++) doc[i] = 1 + (uint32_t)((d * 10 + i) % 99);
        assert_ok(dsa_shardset_add_doc(set, doc, 10));
    }
    DsaShardSetStats st;
    assert_ok(dsa_shardset_close(set, &st));
    return st.num_shards;
}

static DsaStatus load(const char *dir) {
    char **paths = NULL;
    int n = 0;
    const char *args[] = {dir};
    DSA_TRY(dsa_data_expand_paths(args, 1, &paths, &n));
    DsaLoaderOptions lo = dsa_loader_options_default();
    lo.paths = (const char *const *)paths;
    lo.num_paths = n;
    lo.seq_len = 8;
    lo.prefetch = 0;
    DsaLoader *l = NULL;
    DsaStatus st = dsa_loader_open(&l, &lo);
    if (l) dsa_loader_close(l);
    dsa_data_paths_free(paths, n);
    return st;
}

static void test_manifest_lists_shards(void **state) {
    (void)state;
    const char *dir = test_path("set");
    char prefix[600], path[700], text[8192];
    snprintf(prefix, sizeof prefix, "%s/part", dir);
    assert_int_equal(write_set(prefix, 7), 3);
    dsa_shardset_manifest_path(path, sizeof path, prefix);
    char *buf = NULL;
    size_t len = 0;
    assert_ok(dsa_file_read_all(path, &buf, &len));
    snprintf(text, sizeof text, "%s", buf);
    dsa_free(buf, len + 1);
    assert_non_null(strstr(text, "\"file\":\t\"part-00000.h5\""));
    assert_non_null(strstr(text, "\"file\":\t\"part-00002.h5\""));
    assert_non_null(strstr(text, "\"tokens\":\t77")); /* 7 x (10 + EOS) */
    assert_non_null(strstr(text, "\"documents\":\t7"));
    DsaShard sh;
    dsa_shardset_path(path, sizeof path, prefix, 1);
    assert_ok(dsa_shard_open(&sh, path));
    assert_string_equal(sh.meta.pack_manifest, "part.manifest.json");
    dsa_shard_close(&sh);
    assert_ok(load(dir));
}

static void test_unfinished_set_refused(void **state) {
    (void)state;
    const char *dir = test_path("cut");
    char prefix[600], manifest[700], shard[700];
    snprintf(prefix, sizeof prefix, "%s/part", dir);
    write_set(prefix, 7);
    dsa_shardset_manifest_path(manifest, sizeof manifest, prefix);
    assert_int_equal(unlink(manifest), 0); /* what a pack killed before its end leaves */
    assert_fails_with(load(dir), DSA_ERR_FORMAT, "part-00000.h5: its pack did not finish");
    assert_non_null(strstr(dsa_error_message(), "part.manifest.json, which `dsa pack` writes after the last shard, is missing"));
    DsaInspectOptions io = dsa_inspect_options_default();
    DsaShardStats stats;
    dsa_shardset_path(shard, sizeof shard, prefix, 2);
    assert_fails_with(dsa_inspect_shard(shard, &io, &stats), DSA_ERR_FORMAT, "part.manifest.json");
    /* a lone shard is complete by itself */
    DsaShardMeta meta = dsa_shard_meta_default(100, 0);
    DsaShardWriter *w = NULL;
    const char *lone_dir = test_path("lone");
    assert_ok(dsa_mkdir_p(lone_dir));
    snprintf(shard, sizeof shard, "%s/one.h5", lone_dir);
    assert_ok(dsa_shard_writer_open(&w, shard, &meta));
    assert_ok(dsa_shard_writer_append(w, (uint32_t[]){1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 10));
    assert_ok(dsa_shard_writer_close(w));
    assert_ok(load(lone_dir));
}

static void test_entry_mismatch_refused(void **state) {
    (void)state;
    const char *dir = test_path("odd");
    char prefix[600], manifest[700];
    snprintf(prefix, sizeof prefix, "%s/part", dir);
    write_set(prefix, 4); /* shards of 3 and 1 documents */
    dsa_shardset_manifest_path(manifest, sizeof manifest, prefix);
    test_put_text(manifest, "{\"format_version\": 1, \"shards\": [{\"file\": \"part-00000.h5\", \"tokens\": 33, "
                       "\"documents\": 3, \"bytes\": 1}]}");
    assert_fails_with(load(dir), DSA_ERR_FORMAT, "part-00000.h5: 33 tokens, 3 documents,");
    assert_non_null(strstr(dsa_error_message(), "but " ));
    assert_non_null(strstr(dsa_error_message(), "part.manifest.json lists 33, 3, 1"));
    /* right sizes for shard 0, but shard 1 is not listed */
    struct stat sb;
    char shard0[700], text[512];
    dsa_shardset_path(shard0, sizeof shard0, prefix, 0);
    assert_int_equal(stat(shard0, &sb), 0);
    snprintf(text, sizeof text,
             "{\"format_version\": 1, \"shards\": [{\"file\": \"part-00000.h5\", \"tokens\": 33, \"documents\": 3, "
             "\"bytes\": %lld}]}",
             (long long)sb.st_size);
    test_put_text(manifest, text);
    assert_fails_with(load(dir), DSA_ERR_FORMAT, "part-00001.h5: not listed in");
    test_put_text(manifest, "[1, 2]");
    assert_fails_with(load(dir), DSA_ERR_FORMAT, "part.manifest.json: not a shard set manifest");
    test_put_text(manifest, "{\"format_version\": 2, \"shards\": []}");
    assert_fails_with(load(dir), DSA_ERR_FORMAT, "format_version 2, this dsa reads 1");
}

static DsaPackOptions text_options(const char **inputs, const char *prefix) {
    DsaPackOptions o;
    dsa_pack_options_default(&o);
    o.format = DSA_PACK_TEXT;
    o.inputs = inputs;
    o.n_inputs = 2;
    o.out_prefix = prefix;
    o.shard_tokens = 40; /* one document a shard */
    return o;
}

static void test_pack_rerun_after_kill(void **state) {
    (void)state;
    const char *inputs[] = {test_write_file("a.txt", "the first document of the pack", 30),
                            test_write_file("b.txt", "and the second one, a bit longer", 32)};
    const char *dir = test_path("packs");
    char prefix[600], manifest[700], stale[700], stale_manifest[700], other[700];
    snprintf(prefix, sizeof prefix, "%s/txt", dir);
    DsaPackOptions o = text_options(inputs, prefix);
    assert_ok(dsa_pack_run(&o, NULL));
    dsa_shardset_manifest_path(manifest, sizeof manifest, prefix);
    assert_true(test_exists(manifest));
    /* a finished set is refused without --force */
    assert_fails_with(dsa_pack_run(&o, NULL), DSA_ERR_ARG, "already exist");
    /* a killed pack: no manifest, a hidden temporary of a dead process, and one of
     * another prefix that is none of this run's business */
    assert_int_equal(unlink(manifest), 0);
    snprintf(stale, sizeof stale, "%s/.txt-00001.h5.tmp.4194305", dir);
    snprintf(stale_manifest, sizeof stale_manifest, "%s/.txt.manifest.json.tmp.4194305", dir);
    snprintf(other, sizeof other, "%s/.other-00000.h5.tmp.4194305", dir);
    test_put_text(stale, "half a shard");
    test_put_text(stale_manifest, "{");
    test_put_text(other, "x");
    assert_ok(dsa_pack_run(&o, NULL)); /* replaced without --force */
    assert_true(test_exists(manifest));
    assert_false(test_exists(stale));
    assert_false(test_exists(stale_manifest));
    assert_true(test_exists(other));
    assert_ok(load(dir));
    /* --force removes the temporaries too, and rewrites the manifest */
    test_put_text(stale, "half a shard");
    o.overwrite = 1;
    assert_ok(dsa_pack_run(&o, NULL));
    assert_false(test_exists(stale));
    assert_true(test_exists(manifest));
    /* shards without a manifest that are not this version's set are not replaced */
    assert_int_equal(unlink(manifest), 0);
    char shard0[700];
    dsa_shardset_path(shard0, sizeof shard0, prefix, 0);
    test_put_text(shard0, "not a shard");
    o.overwrite = 0;
    assert_fails_with(dsa_pack_run(&o, NULL), DSA_ERR_ARG, "already exist");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_manifest_lists_shards),
        cmocka_unit_test(test_unfinished_set_refused),
        cmocka_unit_test(test_entry_mismatch_refused),
        cmocka_unit_test(test_pack_rerun_after_kill),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    test_tmpdir_remove();
    return failed;
}
