/* test_shard.c: the shard format: round trips, the fast read path against HDF5's own
 * filter pipeline, shard sets, atomic writes, and every bad-input case of DESIGN.md. */
#include "tests/test_util.h"

#include <dirent.h>
#include <hdf5.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/fileutil.h"
#include "core/mem.h"
#include "data/shard.h"

/* Token i of a test stream: never the EOS id 0, spread over the vocabulary. */
static uint32_t pattern(int64_t i, uint32_t vocab) { return 1 + (uint32_t)((i * 2654435761u) % (vocab - 1)); }

/* Write a shard of `ndocs` documents with lengths 1, 2, ... (+ EOS). Returns tokens. */
static int64_t write_docs(const char *path, int ndocs, int64_t chunk, uint32_t vocab) {
    DsaShardMeta meta = dsa_shard_meta_default(vocab, 0);
    meta.chunk_tokens = chunk;
    DsaShardWriter *w = NULL;
    assert_ok(dsa_shard_writer_open(&w, path, &meta));
    int64_t k = 0;
    for (int d = 0; d < ndocs; d++) {
        for (int j = 0; j <= d; j++) {
            uint32_t t = pattern(k++, vocab);
            assert_ok(dsa_shard_writer_append(w, &t, 1));
        }
        assert_ok(dsa_shard_writer_end_doc(w, 1));
        k++; /* the EOS */
    }
    assert_ok(dsa_shard_writer_close(w));
    return k;
}

static void test_round_trip(void **state) {
    (void)state;
    const char *path = test_path("round.h5");
    int ndocs = 40;
    int64_t n = write_docs(path, ndocs, 7, 1000);
    DsaShard s;
    assert_ok(dsa_shard_open(&s, path));
    assert_int_equal(s.num_tokens, n);
    assert_int_equal(s.num_docs, ndocs);
    assert_int_equal(s.meta.vocab_size, 1000);
    assert_int_equal(s.meta.eos_id, 0);
    assert_int_equal(s.meta.chunk_tokens, 7);
    assert_int_equal(s.meta.zstd_level, DSA_SHARD_DEFAULT_ZSTD_LEVEL);
    assert_string_equal(s.meta.tokenizer, "external");
    assert_int_equal(s.num_chunks, (n + 6) / 7);
    uint32_t *all = dsa_malloc((size_t)n * 4), *ref = dsa_malloc((size_t)n * 4);
    DsaShardScratch *scratch = NULL;
    assert_ok(dsa_shard_scratch_new(&scratch));
    assert_ok(dsa_shard_read(&s, 0, n, all, scratch));
    int64_t k = 0;
    for (int d = 0; d < ndocs; d++) {
        assert_int_equal(s.doc_offsets[d], k);
        for (int j = 0; j <= d; j++, k++) assert_int_equal(all[k], pattern(k, 1000));
        assert_int_equal(all[k], 0); /* EOS ends every document */
        k++;
    }
    assert_int_equal(s.doc_offsets[ndocs], n);
    /* Irregular ranges: fast path == HDF5 pipeline == the full read. */
    int64_t ranges[][2] = {{0, 1}, {3, 9}, {6, 2}, {7, 7}, {13, 40}, {n - 1, 1}, {n - 10, 10}, {0, n}};
    for (size_t r = 0; r < sizeof ranges / sizeof ranges[0]; r++) {
        int64_t a = ranges[r][0], c = ranges[r][1];
        memset(ref, 0xff, (size_t)n * 4);
        assert_ok(dsa_shard_read(&s, a, c, ref, scratch));
        assert_memory_equal(ref, all + a, (size_t)c * 4);
        memset(ref, 0xff, (size_t)n * 4);
        assert_ok(dsa_shard_read_hdf5(&s, a, c, ref));
        assert_memory_equal(ref, all + a, (size_t)c * 4);
    }
    assert_fails_with(dsa_shard_read(&s, n - 1, 2, ref, scratch), DSA_ERR_RANGE, "outside the shard");
    dsa_shard_scratch_free(scratch);
    dsa_free(all, (size_t)n * 4);
    dsa_free(ref, (size_t)n * 4);
    dsa_shard_close(&s);
}

static void test_writer_validation(void **state) {
    (void)state;
    DsaShardWriter *w = NULL;
    DsaShardMeta meta = dsa_shard_meta_default(10, 10);
    assert_fails_with(dsa_shard_writer_open(&w, test_path("bad.h5"), &meta), DSA_ERR_ARG, "eos_id 10 must be < vocab_size 10");
    meta = dsa_shard_meta_default(10, 0);
    meta.zstd_level = 0;
    assert_fails_with(dsa_shard_writer_open(&w, test_path("bad.h5"), &meta), DSA_ERR_ARG, "zstd level 0");
    meta = dsa_shard_meta_default(10, 0);
    assert_ok(dsa_shard_writer_open(&w, test_path("range.h5"), &meta));
    uint32_t toks[3] = {1, 9, 10};
    assert_fails_with(dsa_shard_writer_append(w, toks, 3), DSA_ERR_RANGE, "token id 10 at shard position 2");
    dsa_shard_writer_abort(w);
    /* An empty shard is refused and leaves no file behind. */
    assert_ok(dsa_shard_writer_open(&w, test_path("empty.h5"), &meta));
    assert_fails_with(dsa_shard_writer_close(w), DSA_ERR_ARG, "no tokens");
    struct stat st;
    assert_int_not_equal(stat(test_path("empty.h5"), &st), 0);
}

static void test_atomic_write(void **state) {
    (void)state;
    const char *path = test_path("atomic.h5");
    DsaShardMeta meta = dsa_shard_meta_default(100, 0);
    DsaShardWriter *w = NULL;
    assert_ok(dsa_shard_writer_open(&w, path, &meta));
    uint32_t t[4] = {1, 2, 3, 4};
    assert_ok(dsa_shard_writer_append(w, t, 4));
    struct stat st;
    assert_int_not_equal(stat(path, &st), 0); /* not visible under its name until closed */
    dsa_shard_writer_abort(w);
    assert_int_not_equal(stat(path, &st), 0);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "ls -A '%s' | grep -c tmp > /dev/null", test_tmpdir());
    assert_int_not_equal(system(cmd), 0); /* no temporary file left */
}

static void test_shardset_rollover(void **state) {
    (void)state;
    DsaShardSetOptions opts = {.out_prefix = test_path("set/part"), .shard_tokens = 10,
                               .meta = dsa_shard_meta_default(50, 0)};
    DsaShardSet *set = NULL;
    assert_ok(dsa_shardset_open(&set, &opts));
    uint32_t doc[30];
    for (int i = 0; i < 30; i++) doc[i] = 1 + (uint32_t)i;
    assert_ok(dsa_shardset_add_doc(set, doc, 4));  /* 5 tokens: shard 0 */
    assert_ok(dsa_shardset_add_doc(set, doc, 3));  /* 4 tokens: shard 0 (9) */
    assert_ok(dsa_shardset_add_doc(set, doc, 5));  /* 6: does not fit, shard 1 */
    assert_ok(dsa_shardset_add_doc(set, doc, 23)); /* 24: split across shards */
    DsaShardSetStats stats;
    assert_ok(dsa_shardset_close(set, &stats));
    assert_int_equal(stats.num_docs, 4);
    assert_int_equal(stats.num_tokens, 5 + 4 + 6 + 24);
    /* Concatenating the shards gives back the stream exactly. */
    uint32_t expect[64];
    int n = 0;
    int lens[4] = {4, 3, 5, 23};
    for (int d = 0; d < 4; d++) {
        for (int i = 0; i < lens[d]; i++) expect[n++] = doc[i];
        expect[n++] = 0;
    }
    uint32_t got[64];
    int64_t total = 0;
    DsaShardScratch *scratch = NULL;
    assert_ok(dsa_shard_scratch_new(&scratch));
    for (int i = 0; i < stats.num_shards; i++) {
        char path[600];
        dsa_shardset_path(path, sizeof path, opts.out_prefix, i);
        DsaShard s;
        assert_ok(dsa_shard_open(&s, path));
        assert_true(s.num_tokens <= 10);
        assert_ok(dsa_shard_read(&s, 0, s.num_tokens, got + total, scratch));
        total += s.num_tokens;
        dsa_shard_close(&s);
    }
    assert_int_equal(total, n);
    assert_memory_equal(got, expect, (size_t)n * 4);
    assert_int_equal(stats.num_shards, 5);
    dsa_shard_scratch_free(scratch);
}

/* ---- bad input -------------------------------------------------------------------- */

static void expect_open_error(const char *path, DsaStatus status, const char *needle) {
    DsaShard s;
    assert_fails_with(dsa_shard_open(&s, path), status, needle);
    /* Every message names the file. */
    assert_non_null(strstr(dsa_error_message(), path));
}

static void test_missing_and_not_hdf5(void **state) {
    (void)state;
    expect_open_error(test_path("nope.h5"), DSA_ERR_IO, "No such file");
    const char *text = test_write_file("text.h5", "hello, not hdf5\n", 16);
    expect_open_error(text, DSA_ERR_FORMAT, "not an HDF5 file");
    const char *empty = test_write_file("zero.h5", "", 0);
    expect_open_error(empty, DSA_ERR_FORMAT, "empty");
}

/* Build an HDF5 file by hand: `tokens_type` < 0 omits /tokens; `old_format` writes the
 * HDF5 default (superblock 0, no metadata checksums) instead of the 1.10 format. */
static const char *write_custom_as(const char *name, hid_t tokens_type, int compress, int64_t ntokens,
                                   int with_offsets, int old_format) {
    assert_ok(dsa_h5z_zstd_register());
    const char *path = test_path(name);
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (!old_format) H5Pset_libver_bounds(fapl, H5F_LIBVER_V110, H5F_LIBVER_V110);
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    if (tokens_type >= 0) {
        hsize_t dims[1] = {(hsize_t)ntokens}, chunk[1] = {4};
        hid_t space = H5Screate_simple(1, dims, NULL);
        hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
        H5Pset_chunk(dcpl, 1, chunk);
        unsigned level = 3;
        if (compress) H5Pset_filter(dcpl, DSA_H5Z_FILTER_ZSTD, H5Z_FLAG_MANDATORY, 1, &level);
        hid_t d = H5Dcreate2(f, "/tokens", tokens_type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
        if (ntokens > 0) {
            uint32_t vals[16] = {1, 2, 3, 0, 4, 5, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0};
            H5Dwrite(d, H5T_NATIVE_UINT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, vals);
        }
        H5Dclose(d);
        H5Pclose(dcpl);
        H5Sclose(space);
    }
    if (with_offsets) {
        uint64_t off[2] = {0, (uint64_t)ntokens};
        hsize_t dims[1] = {2};
        hid_t space = H5Screate_simple(1, dims, NULL);
        hid_t d = H5Dcreate2(f, "/doc_offsets", H5T_STD_U64LE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        H5Dwrite(d, H5T_NATIVE_UINT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, off);
        H5Dclose(d);
        H5Sclose(space);
    }
    struct {
        const char *name;
        uint64_t value;
    } attrs[] = {{"vocab_size", 16}, {"eos_id", 0}, {"format_version", DSA_SHARD_FORMAT_VERSION}};
    for (int i = 0; i < 3; i++) {
        hid_t space = H5Screate(H5S_SCALAR);
        hid_t a = H5Acreate2(f, attrs[i].name, H5T_STD_U64LE, space, H5P_DEFAULT, H5P_DEFAULT);
        H5Awrite(a, H5T_NATIVE_UINT64, &attrs[i].value);
        H5Aclose(a);
        H5Sclose(space);
    }
    hid_t str = H5Tcopy(H5T_C_S1);
    H5Tset_size(str, 9);
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(f, "tokenizer", str, space, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, str, "external");
    H5Aclose(a);
    H5Sclose(space);
    H5Tclose(str);
    H5Fclose(f);
    return path;
}

static const char *write_custom(const char *name, hid_t tokens_type, int compress, int64_t ntokens, int with_offsets) {
    return write_custom_as(name, tokens_type, compress, ntokens, with_offsets, 0);
}

static void test_bad_datasets(void **state) {
    (void)state;
    expect_open_error(write_custom("notokens.h5", -1, 1, 16, 1), DSA_ERR_FORMAT, "dataset /tokens is missing");
    expect_open_error(write_custom("float.h5", H5T_IEEE_F32LE, 1, 16, 1), DSA_ERR_FORMAT, "has type float32, expected uint32");
    expect_open_error(write_custom("int64.h5", H5T_STD_I64LE, 1, 16, 1), DSA_ERR_FORMAT, "has type int64, expected uint32");
    expect_open_error(write_custom("raw.h5", H5T_STD_U32LE, 0, 16, 1), DSA_ERR_FORMAT, "expected exactly the zstd filter");
    expect_open_error(write_custom("nooffsets.h5", H5T_STD_U32LE, 1, 16, 0), DSA_ERR_FORMAT, "/doc_offsets is missing");
    expect_open_error(write_custom("empty_tokens.h5", H5T_STD_U32LE, 1, 0, 1), DSA_ERR_FORMAT, "/tokens is empty");
    /* The hand-made file with everything right opens: the cases above fail for their reason only. */
    DsaShard s;
    assert_ok(dsa_shard_open(&s, write_custom("good.h5", H5T_STD_U32LE, 1, 16, 1)));
    dsa_shard_close(&s);
    /* the same file in the older HDF5 format (no metadata checksums) is refused before
     * HDF5 parses it (data/shard.h, "trust boundary") */
    expect_open_error(write_custom_as("old-format.h5", H5T_STD_U32LE, 1, 16, 1, 1), DSA_ERR_FORMAT,
                      "old-format.h5: HDF5 superblock version 0, expected 2 or later");
}

static void set_attr_u64(const char *path, const char *name, uint64_t value) {
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    assert_true(f >= 0);
    H5Adelete(f, name);
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(f, name, H5T_STD_U64LE, space, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, H5T_NATIVE_UINT64, &value);
    H5Aclose(a);
    H5Sclose(space);
    H5Fclose(f);
}

static void test_bad_attributes(void **state) {
    (void)state;
    const char *path = test_path("attr.h5");
    write_docs(path, 10, 8, 1000);
    set_attr_u64(path, "format_version", 99);
    expect_open_error(path, DSA_ERR_FORMAT, "format_version 99, this dsa reads version 1");
    write_docs(path, 10, 8, 1000);
    set_attr_u64(path, "eos_id", 5000);
    expect_open_error(path, DSA_ERR_FORMAT, "eos_id = 5000 is not below vocab_size");
    /* Tokens beyond a (tampered) vocabulary: open succeeds, the read names the id. */
    write_docs(path, 10, 8, 1000);
    set_attr_u64(path, "vocab_size", 3);
    DsaShard s;
    assert_ok(dsa_shard_open(&s, path));
    uint32_t buf[64];
    DsaShardScratch *scratch = NULL;
    assert_ok(dsa_shard_scratch_new(&scratch));
    assert_fails_with(dsa_shard_read(&s, 0, 20, buf, scratch), DSA_ERR_RANGE, "is >= vocab_size 3");
    assert_non_null(strstr(dsa_error_message(), path));
    dsa_shard_scratch_free(scratch);
    dsa_shard_close(&s);
}

static void test_truncated_and_corrupt(void **state) {
    (void)state;
    const char *path = test_path("victim.h5");
    int64_t n = write_docs(path, 200, 64, 60000);
    int64_t size = 0;
    assert_ok(dsa_file_size(path, &size));
    /* Truncated: cut the file in half. */
    const char *cut = test_path("cut.h5");
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "head -c %lld '%s' > '%s'", (long long)size / 2, path, cut);
    assert_int_equal(system(cmd), 0);
    expect_open_error(cut, DSA_ERR_FORMAT, cut);
    /* Corrupt: flip bytes in the middle of chunk 3's compressed data. */
    DsaShard s;
    assert_ok(dsa_shard_open(&s, path));
    uint64_t at = s.chunk_addr[3] + s.chunk_bytes[3] / 2;
    dsa_shard_close(&s);
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    fseek(f, (long)at, SEEK_SET);
    uint8_t junk[8] = {0xde, 0xad, 0xbe, 0xef, 0x01, 0x23, 0x45, 0x67};
    fwrite(junk, 1, sizeof junk, f);
    fclose(f);
    assert_ok(dsa_shard_open(&s, path));
    uint32_t *buf = dsa_malloc((size_t)n * 4);
    DsaShardScratch *scratch = NULL;
    assert_ok(dsa_shard_scratch_new(&scratch));
    assert_ok(dsa_shard_read(&s, 0, 3 * 64, buf, scratch)); /* chunks 0-2 are intact */
    assert_fails_with(dsa_shard_read(&s, 0, n, buf, scratch), DSA_ERR_FORMAT, "chunk 3");
    assert_non_null(strstr(dsa_error_message(), "corrupt"));
    assert_non_null(strstr(dsa_error_message(), path));
    assert_int_not_equal(dsa_shard_read_hdf5(&s, 0, n, buf), DSA_OK); /* HDF5's own path refuses it too */
    dsa_shard_scratch_free(scratch);
    dsa_free(buf, (size_t)n * 4);
    dsa_shard_close(&s);
}

/* LeakSanitizer's switch, present only in sanitizer builds. */
extern void __lsan_disable(void) __attribute__((weak));
extern void __lsan_enable(void) __attribute__((weak));

/* Open and read `path`: 0 opened and read, 1 refused at open, 2 refused at read, each
 * with an error naming the file (checked). NOTE: libhdf5 1.10.8 leaks memory on some
 * failed opens of damaged files, so LeakSanitizer is told to ignore what is allocated
 * meanwhile; AddressSanitizer still checks every access. */
static int open_and_read(const char *path, uint32_t *buf, int64_t cap, DsaShardScratch *scratch, size_t flipped) {
    if (__lsan_disable) __lsan_disable();
    DsaShard s;
    int verdict = 0;
    dsa_error_clear();
    if (dsa_shard_open(&s, path) != DSA_OK) {
        verdict = 1;
    } else {
        if (s.num_tokens <= cap && dsa_shard_read(&s, 0, s.num_tokens, buf, scratch) != DSA_OK) verdict = 2;
        dsa_shard_close(&s);
    }
    if (__lsan_enable) __lsan_enable();
    if (verdict && !strstr(dsa_error_message(), path))
        fail_msg("byte %zu flipped: error without the file name:\n%s", flipped, dsa_error_message());
    return verdict;
}

static void flip_byte(int fd, size_t at) {
    uint8_t b = 0;
    assert_int_equal(pread(fd, &b, 1, (off_t)at), 1);
    b ^= 0x5a;
    assert_int_equal(pwrite(fd, &b, 1, (off_t)at), 1);
}

/* Every byte of a shard flipped in turn: a shard either opens and reads back (the byte
 * was free space, or a data byte the zstd checksum catches on read), or is refused with
 * an error naming it. HDF5 metadata is checksummed, so no flip reaches its decoder; under
 * ASan (make asan) this shows no flip makes libhdf5 misbehave either. */
static void test_every_byte_flipped(void **state) {
    (void)state;
    const char *path = test_path("flip.h5");
    int64_t n = write_docs(path, 12, 16, 1000), size = 0;
    assert_ok(dsa_file_size(path, &size));
    uint32_t *buf = dsa_malloc((size_t)n * 4);
    DsaShardScratch *scratch = NULL;
    assert_ok(dsa_shard_scratch_new(&scratch));
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    int count[3] = {0};
    for (size_t i = 0; i < (size_t)size; i++) {
        flip_byte(fd, i);
        count[open_and_read(path, buf, n, scratch, i)]++;
        flip_byte(fd, i);
    }
    close(fd);
    print_message("%lld bytes flipped: %d read back, %d refused at open, %d at read\n", (long long)size, count[0],
                  count[1], count[2]);
    assert_true(count[1] > 100 && count[2] > 0);
    assert_int_equal(open_and_read(path, buf, n, scratch, 0), 0); /* restored */
    dsa_shard_scratch_free(scratch);
    dsa_free(buf, (size_t)n * 4);
}

/* Every input that crashed libhdf5 1.10.8 (tests/data/shard-fuzz/README.md) gets a clean
 * format error naming the file (make asan runs this under AddressSanitizer). */
static void test_fuzz_regressions(void **state) {
    (void)state;
    const char *dir = "tests/data/shard-fuzz";
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.' || strstr(e->d_name, ".md")) continue;
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        DsaShard s;
        dsa_error_clear();
        DsaStatus st = dsa_shard_open(&s, path);
        if (st == DSA_OK) fail_msg("%s opened as a shard", path);
        if (st != DSA_ERR_FORMAT || !strstr(dsa_error_message(), path))
            fail_msg("%s: %s, expected a format error naming the file:\n%s", path, dsa_status_name(st),
                     dsa_error_message());
        n++;
    }
    closedir(d);
    assert_int_equal(n, 34);
}

int main(void) {
    /* no HDF5 free lists: a block HDF5 leaks is then one it allocated right there
     * (test_every_byte_flipped tells LeakSanitizer which ones to ignore) */
    H5set_free_list_limits(0, 0, 0, 0, 0, 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),       cmocka_unit_test(test_writer_validation),
        cmocka_unit_test(test_atomic_write),     cmocka_unit_test(test_shardset_rollover),
        cmocka_unit_test(test_missing_and_not_hdf5), cmocka_unit_test(test_bad_datasets),
        cmocka_unit_test(test_bad_attributes),   cmocka_unit_test(test_truncated_and_corrupt),
        cmocka_unit_test(test_every_byte_flipped), cmocka_unit_test(test_fuzz_regressions),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    test_tmpdir_remove();
    return failed;
}
