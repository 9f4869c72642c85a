/* test_checkpoint.c: atomic checkpoint directories (checkpoints/checkpoint.h): commit and
 * `latest`, resolve, abort, stale temporary directories, the never-overwrite rule,
 * manifests catching flipped bytes, truncation and missing files, the pause hook. The
 * safetensors format itself is test_safetensors.c.
 */
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>

#include "checkpoints/checkpoint.h"
#include "checkpoints/safetensors.h"
#include "core/fileutil.h"
#include "core/mem.h"
#include "test_util.h"

/* ---- helpers ----------------------------------------------------------------------- */

/* Entries of `dir` whose name starts with `prefix`. */
static int count_prefixed(const char *dir, const char *prefix) {
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (!strncmp(e->d_name, prefix, strlen(prefix))) n++;
    closedir(d);
    return n;
}

/* ---- checkpoint directories -------------------------------------------------------- */

static void save(const char *out, const char *name, const char *content) {
    DsaCheckpointWriter w;
    char path[2048];
    assert_ok(dsa_checkpoint_begin(&w, out, name));
    assert_ok(dsa_checkpoint_write_text(&w, "a.txt", content));
    float v[3] = {1, 2, 3};
    DsaStTensorRef t[] = {{"v", DSA_F32, 1, {3}, v}};
    assert_ok(
        dsa_safetensors_write(dsa_checkpoint_file(&w, "model.safetensors", path, sizeof path), t, 1, NULL, NULL, 0));
    assert_ok(dsa_checkpoint_commit(&w));
    assert_int_equal(w.tmp_dir[0], 0);
}

static void test_commit_and_latest(void **state) {
    (void)state;
    const char *out = test_path("run");
    char latest_path[1024], buf[4096], dir[1024], path[1100];
    snprintf(latest_path, sizeof latest_path, "%s/latest", out);
    save(out, "step-1", "one");
    test_read_text(latest_path, buf, sizeof buf);
    assert_string_equal(buf, "step-1\n");
    /* the manifest lists every file with its size and CRC32 */
    snprintf(path, sizeof path, "%s/step-1/manifest.json", out);
    test_read_text(path, buf, sizeof buf);
    assert_non_null(strstr(buf, "\"format_version\":\t1"));
    assert_non_null(strstr(buf, "\"a.txt\":"));
    assert_non_null(strstr(buf, "\"bytes\":\t3"));
    assert_non_null(strstr(buf, "\"crc32\":\t\"7a6c86f1\"")); /* crc32("one") */
    assert_non_null(strstr(buf, "\"model.safetensors\":"));
    bool verified = false;
    snprintf(path, sizeof path, "%s/step-1", out);
    assert_ok(dsa_checkpoint_verify(path, &verified));
    assert_true(verified);
    /* resolve: a run directory follows latest; a checkpoint directory is itself */
    assert_ok(dsa_checkpoint_resolve(out, dir, sizeof dir));
    assert_string_equal(dir, path);
    assert_ok(dsa_checkpoint_resolve(path, dir, sizeof dir));
    assert_string_equal(dir, path);
    /* a second checkpoint switches latest; the first stays */
    save(out, "step-2", "two");
    test_read_text(latest_path, buf, sizeof buf);
    assert_string_equal(buf, "step-2\n");
    assert_ok(dsa_checkpoint_resolve(out, dir, sizeof dir));
    snprintf(path, sizeof path, "%s/step-2", out);
    assert_string_equal(dir, path);
    snprintf(path, sizeof path, "%s/step-1", out);
    assert_ok(dsa_checkpoint_verify(path, &verified));
    assert_int_equal(count_prefixed(out, ".tmp-"), 0);
    assert_int_equal(count_prefixed(out, ".latest"), 0);
    /* the saved tensor reads back through the checkpoint */
    snprintf(path, sizeof path, "%s/step-2/model.safetensors", out);
    DsaSafetensors st;
    float v[3];
    assert_ok(dsa_safetensors_open(&st, path));
    assert_ok(dsa_safetensors_read_f32(&st, "v", 1, (int64_t[]){3}, v));
    assert_true(v[2] == 3.0f);
    dsa_safetensors_close(&st);
}

static void test_abort_and_stale(void **state) {
    (void)state;
    const char *out = test_path("run-abort");
    char buf[64], path[1100];
    save(out, "step-1", "one");
    /* an aborted save leaves nothing and keeps latest */
    DsaCheckpointWriter w;
    assert_ok(dsa_checkpoint_begin(&w, out, "step-2"));
    assert_true(test_exists(w.tmp_dir));
    assert_ok(dsa_checkpoint_write_text(&w, "a.txt", "two"));
    dsa_checkpoint_abort(&w);
    dsa_checkpoint_abort(&w); /* twice is harmless */
    assert_int_equal(count_prefixed(out, ".tmp-"), 0);
    snprintf(path, sizeof path, "%s/step-2", out);
    assert_false(test_exists(path));
    snprintf(path, sizeof path, "%s/latest", out);
    test_read_text(path, buf, sizeof buf);
    assert_string_equal(buf, "step-1\n");
    /* a torn temporary directory (a killed save) is removed by the next begin */
    snprintf(path, sizeof path, "%s/.tmp-step-9-99999", out);
    assert_int_equal(mkdir(path, 0755), 0);
    snprintf(path, sizeof path, "%s/.tmp-step-9-99999/model.safetensors", out);
    test_put_text(path, "x");
    assert_ok(dsa_checkpoint_begin(&w, out, "step-3"));
    snprintf(path, sizeof path, "%s/.tmp-step-9-99999", out);
    assert_false(test_exists(path));
    assert_int_equal(count_prefixed(out, ".tmp-"), 1); /* ours */
    /* the pause hook announces itself on stderr, then commits normally */
    w.pause_before_commit_ms = 1;
    fflush(stderr);
    int saved = dup(2), fd = open(test_path("stderr.txt"), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(saved >= 0 && fd >= 0);
    dup2(fd, 2);
    DsaStatus st = dsa_checkpoint_commit(&w);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    close(fd);
    assert_ok(st);
    char text[256];
    test_read_text(test_path("stderr.txt"), text, sizeof text);
    assert_non_null(strstr(text, "checkpoint: paused before commit of step-3\n"));
    snprintf(path, sizeof path, "%s/latest", out);
    test_read_text(path, buf, sizeof buf);
    assert_string_equal(buf, "step-3\n");
}

static void test_never_overwrite(void **state) {
    (void)state;
    const char *out = test_path("run-over");
    char path[1100];
    save(out, "step-1", "one");
    DsaCheckpointWriter w;
    assert_fails_with(dsa_checkpoint_begin(&w, out, "step-1"), DSA_ERR_IO, "run-over/step-1 already exists");
    dsa_checkpoint_abort(&w); /* safe after a failed begin */
    /* a directory that appears between begin and commit, even an empty one (which a plain
     * rename would replace), is not overwritten either */
    assert_ok(dsa_checkpoint_begin(&w, out, "step-2"));
    assert_ok(dsa_checkpoint_write_text(&w, "a.txt", "two"));
    snprintf(path, sizeof path, "%s/step-2", out);
    assert_int_equal(mkdir(path, 0755), 0);
    assert_fails_with(dsa_checkpoint_commit(&w), DSA_ERR_IO, "run-over/step-2 already exists");
    dsa_checkpoint_abort(&w);
    assert_int_equal(count_prefixed(out, ".tmp-"), 0);
    snprintf(path, sizeof path, "%s/latest", out);
    char buf[64];
    test_read_text(path, buf, sizeof buf);
    assert_string_equal(buf, "step-1\n");
    /* names and files that are refused */
    assert_fails_with(dsa_checkpoint_begin(&w, out, "a/b"), DSA_ERR_ARG, "invalid checkpoint name \"a/b\"");
    assert_fails_with(dsa_checkpoint_begin(&w, out, ".x"), DSA_ERR_ARG, "invalid checkpoint name");
    assert_fails_with(dsa_checkpoint_begin(&w, out, "latest"), DSA_ERR_ARG, "invalid checkpoint name");
    assert_fails_with(dsa_checkpoint_begin(&w, out, ""), DSA_ERR_ARG, "invalid checkpoint name");
    assert_ok(dsa_checkpoint_begin(&w, out, "step-3"));
    assert_fails_with(dsa_checkpoint_write_text(&w, "manifest.json", "{}"), DSA_ERR_ARG, "manifest.json");
    assert_fails_with(dsa_checkpoint_write_text(&w, "../escape", "x"), DSA_ERR_ARG, "../escape");
    /* a checkpoint holds plain files only */
    snprintf(path, sizeof path, "%s/sub", w.tmp_dir);
    assert_int_equal(mkdir(path, 0755), 0);
    assert_fails_with(dsa_checkpoint_commit(&w), DSA_ERR_ARG, "sub: not a regular file");
    rmdir(path);
    dsa_checkpoint_abort(&w);
    assert_int_equal(count_prefixed(out, ".tmp-"), 0);
}

static void test_verify_detects_damage(void **state) {
    (void)state;
    const char *out = test_path("run-damage");
    char dir[1024], path[1100];
    bool verified = true;
    save(out, "step-1", "four");
    snprintf(dir, sizeof dir, "%s/step-1", out);
    snprintf(path, sizeof path, "%s/a.txt", dir);
    /* a flipped byte: same size, CRC differs */
    test_put_text(path, "fOur");
    assert_fails_with(dsa_checkpoint_verify(dir, &verified), DSA_ERR_FORMAT, "step-1/a.txt: CRC32 ");
    assert_non_null(strstr(dsa_error_message(), "manifest.json says"));
    assert_false(verified);
    /* a truncated file: size */
    assert_int_equal(truncate(path, 3), 0);
    assert_fails_with(dsa_checkpoint_verify(dir, &verified), DSA_ERR_FORMAT,
                      "step-1/a.txt: 3 bytes, " /* path of manifest */);
    assert_non_null(strstr(dsa_error_message(), "manifest.json says 4 (truncated or torn write)"));
    /* a missing file */
    unlink(path);
    assert_fails_with(dsa_checkpoint_verify(dir, &verified), DSA_ERR_FORMAT, "step-1/a.txt: missing (listed in");
    /* a flipped byte inside the safetensors data, past the header */
    test_put_text(path, "four");
    assert_ok(dsa_checkpoint_verify(dir, &verified));
    assert_true(verified);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    int64_t size = 0;
    assert_ok(dsa_file_size(path, &size));
    unsigned char byte = 0;
    assert_int_equal(pread(fd, &byte, 1, size - 1), 1);
    byte ^= 0x01;
    assert_int_equal(pwrite(fd, &byte, 1, size - 1), 1);
    close(fd);
    assert_fails_with(dsa_checkpoint_verify(dir, &verified), DSA_ERR_FORMAT, "model.safetensors: CRC32");
    /* a corrupt manifest, and one from another format version */
    snprintf(path, sizeof path, "%s/manifest.json", dir);
    test_put_text(path, "{\"format_version\": 1, \"fil");
    assert_fails_with(dsa_checkpoint_verify(dir, &verified), DSA_ERR_FORMAT, "step-1/manifest.json: not valid JSON");
    test_put_text(path, "{\"format_version\": 2, \"files\": {}}");
    assert_fails_with(dsa_checkpoint_verify(dir, &verified), DSA_ERR_FORMAT, "format_version 2, this build reads 1");
    test_put_text(path, "{\"format_version\": 1, \"files\": {\"a.txt\": {\"bytes\": 4}}}");
    assert_fails_with(dsa_checkpoint_verify(dir, &verified), DSA_ERR_FORMAT, "entry \"a.txt\": \"crc32\" missing");
    /* no manifest: a plain Hugging Face model directory passes unverified */
    unlink(path);
    verified = true;
    assert_ok(dsa_checkpoint_verify(dir, &verified));
    assert_false(verified);
    assert_ok(dsa_checkpoint_resolve(dir, path, sizeof path));
    assert_string_equal(path, dir);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    unlink(path);
    assert_fails_with(dsa_checkpoint_verify(dir, &verified), DSA_ERR_FORMAT,
                      "no manifest.json and no model.safetensors");
}

static void test_resolve_errors(void **state) {
    (void)state;
    char dir[1024], path[1100];
    const char *empty = test_path("empty-run");
    assert_int_equal(mkdir(empty, 0755), 0);
    assert_fails_with(dsa_checkpoint_resolve(empty, dir, sizeof dir), DSA_ERR_IO,
                      "empty-run: no checkpoint here: no 'latest' file and no manifest.json");
    snprintf(path, sizeof path, "%s/latest", empty);
    test_put_text(path, "step-7\n");
    assert_fails_with(dsa_checkpoint_resolve(empty, dir, sizeof dir), DSA_ERR_FORMAT, "empty-run/latest names");
    assert_non_null(strstr(dsa_error_message(), "step-7"));
    test_put_text(path, "../x\n");
    assert_fails_with(dsa_checkpoint_resolve(empty, dir, sizeof dir), DSA_ERR_FORMAT,
                      "empty-run/latest: does not hold the name");
    test_put_text(path, "a\nb\n");
    assert_fails_with(dsa_checkpoint_resolve(empty, dir, sizeof dir), DSA_ERR_FORMAT, "does not hold the name");
    assert_fails_with(dsa_checkpoint_resolve(test_path("nowhere"), dir, sizeof dir), DSA_ERR_IO,
                      "nowhere: cannot access");
    assert_fails_with(dsa_checkpoint_resolve(path, dir, sizeof dir), DSA_ERR_IO, "is not a directory");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_commit_and_latest),
        cmocka_unit_test(test_abort_and_stale),
        cmocka_unit_test(test_never_overwrite),
        cmocka_unit_test(test_verify_detects_damage),
        cmocka_unit_test(test_resolve_errors),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    test_tmpdir_remove();
    return rc;
}
