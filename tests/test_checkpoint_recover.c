/* test_checkpoint_recover.c: the resume rule of checkpoints/checkpoint.h
 * (dsa_checkpoint_recover): a checkpoint renamed into place whose save stopped before
 * `latest` was switched is adopted when it verifies and set aside (named in a warning)
 * when it does not; the temporaries of saves that did not finish go; a manifest records
 * "previous"; manifests without it are never adopted; the first save's window (no
 * `latest` yet) is covered too; and fileutil's stale-temporary removal keeps what a live
 * process is writing. The kill-at-every-operation sweep of whole runs is
 * tests/reliability.sh. */
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoints/checkpoint.h"
#include "core/fileutil.h"
#include "core/mem.h"
#include "test_util.h"

static void save(const char *out, const char *name, const char *content) {
    DsaCheckpointWriter w;
    assert_ok(dsa_checkpoint_begin(&w, out, name));
    assert_ok(dsa_checkpoint_write_text(&w, "a.txt", content));
    assert_ok(dsa_checkpoint_commit(&w));
}

static void expect_latest(const char *out, const char *want) {
    char path[1024], buf[256];
    snprintf(path, sizeof path, "%s/latest", out);
    test_read_text(path, buf, sizeof buf);
    assert_string_equal(buf, want);
}

/* The state a save stopped between its rename and the switch of latest leaves: `name`
 * complete, latest still naming the one before, a torn .latest.tmp. */
static void stop_before_switch(const char *out, const char *name, const char *content, const char *latest_before) {
    char path[1024];
    save(out, name, content);
    snprintf(path, sizeof path, "%s/latest", out);
    if (latest_before) test_put_text(path, latest_before);
    else assert_int_equal(unlink(path), 0);
    snprintf(path, sizeof path, "%s/.latest.tmp", out);
    test_put_text(path, "ste");
}

/* Capture stderr (the warnings) around recover. */
static DsaStatus recover_logged(const char *out, char *log, size_t cap) {
    fflush(stderr);
    int saved = dup(2), fd = open(test_path("recover-stderr.txt"), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(saved >= 0 && fd >= 0);
    dup2(fd, 2);
    DsaStatus st = dsa_checkpoint_recover(out);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    close(fd);
    test_read_text(test_path("recover-stderr.txt"), log, cap);
    return st;
}

static void test_manifest_records_previous(void **state) {
    (void)state;
    const char *out = test_path("prev");
    char path[1024], buf[4096];
    save(out, "step-1", "one");
    save(out, "step-2", "two");
    snprintf(path, sizeof path, "%s/step-1/manifest.json", out);
    test_read_text(path, buf, sizeof buf);
    assert_non_null(strstr(buf, "\"previous\":\tnull"));
    snprintf(path, sizeof path, "%s/step-2/manifest.json", out);
    test_read_text(path, buf, sizeof buf);
    assert_non_null(strstr(buf, "\"previous\":\t\"step-1\""));
}

static void test_adopts_unswitched(void **state) {
    (void)state;
    const char *out = test_path("adopt");
    char path[1024], log[4096];
    save(out, "step-1", "one");
    stop_before_switch(out, "step-2", "two", "step-1\n");
    assert_ok(recover_logged(out, log, sizeof log));
    expect_latest(out, "step-2\n");
    assert_non_null(strstr(log, "adopting step-2"));
    snprintf(path, sizeof path, "%s/.latest.tmp", out);
    assert_false(test_exists(path));
    /* a second recover has nothing to do; the next save follows step-2 */
    assert_ok(recover_logged(out, log, sizeof log));
    assert_null(strstr(log, "adopting"));
    save(out, "step-3", "three");
    expect_latest(out, "step-3\n");
}

/* The trainer's case: it resumes only after recovery; begin alone, after the replayed
 * step, finds the adopted checkpoint and refuses to overwrite it. */
static void test_begin_recovers_first(void **state) {
    (void)state;
    const char *out = test_path("begin");
    save(out, "step-1", "one");
    stop_before_switch(out, "step-2", "two", "step-1\n");
    DsaCheckpointWriter w;
    assert_fails_with(dsa_checkpoint_begin(&w, out, "step-2"), DSA_ERR_IO, "step-2 already exists");
    expect_latest(out, "step-2\n"); /* adopted on the way */
    assert_ok(dsa_checkpoint_begin(&w, out, "step-3"));
    assert_string_equal(w.previous, "step-2");
    dsa_checkpoint_abort(&w);
}

static void test_first_save_window(void **state) {
    (void)state;
    const char *out = test_path("first");
    char log[4096];
    stop_before_switch(out, "converted", "weights", NULL); /* no latest at all */
    assert_ok(recover_logged(out, log, sizeof log));
    expect_latest(out, "converted\n");
    assert_non_null(strstr(log, "latest named nothing"));
}

static void test_sets_aside_damaged(void **state) {
    (void)state;
    const char *out = test_path("aside");
    char path[1024], log[4096];
    save(out, "step-1", "one");
    stop_before_switch(out, "step-2", "two", "step-1\n");
    snprintf(path, sizeof path, "%s/step-2/a.txt", out);
    test_put_text(path, "TWO"); /* same size, another CRC */
    assert_ok(recover_logged(out, log, sizeof log));
    expect_latest(out, "step-1\n");
    snprintf(path, sizeof path, "%s/step-2", out);
    assert_false(test_exists(path));
    snprintf(path, sizeof path, "%s/step-2.incomplete", out);
    assert_true(test_exists(path));
    assert_non_null(strstr(log, "set step-2 aside as"));
    assert_non_null(strstr(log, "CRC32")); /* the defect is named */
    /* the run saves step-2 again; a second damaged one goes to .incomplete.2 */
    save(out, "step-2", "two");
    expect_latest(out, "step-2\n");
    stop_before_switch(out, "step-3", "three", "step-2\n");
    snprintf(path, sizeof path, "%s/step-3/a.txt", out);
    assert_int_equal(unlink(path), 0);
    snprintf(path, sizeof path, "%s/step-3.incomplete", out);
    assert_int_equal(mkdir(path, 0755), 0);
    assert_ok(recover_logged(out, log, sizeof log));
    snprintf(path, sizeof path, "%s/step-3.incomplete.2", out);
    assert_true(test_exists(path));
    expect_latest(out, "step-2\n");
    /* a set-aside name is never a checkpoint name */
    DsaCheckpointWriter w;
    assert_fails_with(dsa_checkpoint_begin(&w, out, "x.incomplete"), DSA_ERR_ARG, "invalid checkpoint name");
}

static void test_old_manifest_not_adopted(void **state) {
    (void)state;
    const char *out = test_path("old");
    char path[1024], log[4096];
    save(out, "step-1", "one");
    stop_before_switch(out, "step-2", "two", "step-1\n");
    /* a manifest from before "previous" existed */
    snprintf(path, sizeof path, "%s/step-2/manifest.json", out);
    test_put_text(path, "{\"format_version\": 1, \"name\": \"step-2\", \"files\": {}}\n");
    assert_ok(recover_logged(out, log, sizeof log));
    expect_latest(out, "step-1\n");
    snprintf(path, sizeof path, "%s/step-2", out);
    assert_true(test_exists(path));
}

static void test_stale_temporaries(void **state) {
    (void)state;
    const char *out = test_path("stale");
    char dead[1024], live[1024], tmpdir[1024], log[4096];
    save(out, "step-1", "one");
    /* pid 2^22 + 1 is above Linux's pid_max ceiling: no such process */
    snprintf(dead, sizeof dead, "%s/.metrics.jsonl.tmp.4194305", out);
    snprintf(live, sizeof live, "%s/.metrics.jsonl.tmp.%ld", out, (long)getppid());
    snprintf(tmpdir, sizeof tmpdir, "%s/.tmp-step-2-4194305", out);
    test_put_text(dead, "x");
    test_put_text(live, "y");
    assert_int_equal(mkdir(tmpdir, 0755), 0);
    assert_ok(recover_logged(out, log, sizeof log));
    assert_false(test_exists(dead));
    assert_true(test_exists(live)); /* another process's write in progress */
    assert_false(test_exists(tmpdir));
    assert_non_null(strstr(log, ".metrics.jsonl.tmp.4194305"));
    assert_true(dsa_pid_alive((long)getpid()));
    assert_false(dsa_pid_alive(4194305));
    /* exact and prefix matches of dsa_temp_remove_stale */
    const char *dir = test_path("stale-names");
    char a[1024], b[1024];
    assert_ok(dsa_mkdir_p(dir));
    snprintf(a, sizeof a, "%s/.model.tmp.4194305", dir);
    snprintf(b, sizeof b, "%s/.model2.tmp.4194305", dir);
    test_put_text(a, "a");
    test_put_text(b, "b");
    assert_int_equal(dsa_temp_remove_stale(dir, "model", true), 1);
    assert_false(test_exists(a));
    assert_true(test_exists(b));
    assert_int_equal(dsa_temp_remove_stale(dir, "model", false), 1);
    assert_false(test_exists(b));
    /* nothing to recover in a directory that does not exist */
    assert_ok(dsa_checkpoint_recover(test_path("never-made")));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_manifest_records_previous), cmocka_unit_test(test_adopts_unswitched),
        cmocka_unit_test(test_begin_recovers_first),      cmocka_unit_test(test_first_save_window),
        cmocka_unit_test(test_sets_aside_damaged),        cmocka_unit_test(test_old_manifest_not_adopted),
        cmocka_unit_test(test_stale_temporaries),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    test_tmpdir_remove();
    return failed;
}
