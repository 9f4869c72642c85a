/* test_fuzz_replay.c: the libFuzzer harnesses of tests/fuzz/ as a plain test: every seed
 * of tests/fuzz/corpus/<harness>/ and every regression input of tests/data/fuzz/<harness>/
 * (a crash `make fuzz` once found; tests/fuzz/README.md) goes through its harness, so
 * `make test` checks the harnesses still build and run, and `make asan` that no input
 * makes a parser read out of bounds, crash or leak. The shard harness also replays
 * tests/data/shard-fuzz/, the inputs that crashed libhdf5 1.10.8. */
#include <dirent.h>
#include <sys/stat.h>

#include "core/fileutil.h"
#include "test_util.h"

#define FUZZ_NAME(h) fuzz_##h
#include "tests/fuzz/fuzz_config.c"
#include "tests/fuzz/fuzz_hf_index.c"
#include "tests/fuzz/fuzz_megatron_idx.c"
#include "tests/fuzz/fuzz_safetensors.c"
#include "tests/fuzz/fuzz_shard.c"

typedef int (*Harness)(const uint8_t *data, size_t size);

/* Run every regular file of `dir` (absent: none) through `h`; returns how many. */
static int replay_dir(const char *dir, Harness h) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.' || strstr(e->d_name, ".md")) continue;
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        char *data = NULL;
        size_t len = 0;
        assert_ok(dsa_file_read_all(path, &data, &len));
        h((const uint8_t *)data, len);
        dsa_free(data, len + 1);
        n++;
    }
    closedir(d);
    return n;
}

static void replay(const char *name, Harness h, const char *extra) {
    char dir[256];
    snprintf(dir, sizeof dir, "tests/fuzz/corpus/%s", name);
    int seeds = replay_dir(dir, h);
    snprintf(dir, sizeof dir, "tests/data/fuzz/%s", name);
    int found = replay_dir(dir, h) + (extra ? replay_dir(extra, h) : 0);
    print_message("%s: %d seeds, %d regression inputs\n", name, seeds, found);
    assert_true(seeds > 0);
}

static void test_safetensors(void **state) { (void)state, replay("safetensors", fuzz_safetensors, NULL); }
static void test_hf_index(void **state) { (void)state, replay("hf_index", fuzz_hf_index, NULL); }
static void test_config(void **state) { (void)state, replay("config", fuzz_config, NULL); }
static void test_megatron_idx(void **state) { (void)state, replay("megatron_idx", fuzz_megatron_idx, NULL); }
static void test_shard(void **state) { (void)state, replay("shard", fuzz_shard, "tests/data/shard-fuzz"); }

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_safetensors), cmocka_unit_test(test_hf_index), cmocka_unit_test(test_config),
        cmocka_unit_test(test_megatron_idx), cmocka_unit_test(test_shard),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", fuzz_dir());
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", fuzz_dir());
    test_tmpdir_remove();
    return failed;
}
