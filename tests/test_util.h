/* test_util.h: shared helpers for the cmocka tests.
 *
 * Include this instead of <cmocka.h>. Every test binary runs in its own temporary
 * directory (test_tmpdir) so tests never collide and CI leaves no litter.
 */
#ifndef DSA_TESTS_TEST_UTIL_H
#define DSA_TESTS_TEST_UTIL_H

#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/config.h"
#include "core/error.h"
#include "core/mem.h"
#include "core/rng.h"

/* Assert a DsaStatus is DSA_OK, printing the error trail when not. */
#define assert_ok(call)                                                                   \
    do {                                                                                  \
        DsaStatus st_ = (call);                                                           \
        if (st_ != DSA_OK) fail_msg("%s failed:\n%s", #call, dsa_error_message());        \
    } while (0)

/* Assert a call fails with `status` and its message contains `needle`. */
#define assert_fails_with(call, status, needle)                                            \
    do {                                                                                   \
        dsa_error_clear();                                                                 \
        DsaStatus st_ = (call);                                                            \
        if (st_ != (status))                                                               \
            fail_msg("%s returned %s, expected %s; message:\n%s", #call, dsa_status_name(st_), \
                     dsa_status_name(status), dsa_error_message());                        \
        if (!strstr(dsa_error_message(), (needle)))                                        \
            fail_msg("%s: message lacks \"%s\":\n%s", #call, (needle), dsa_error_message()); \
    } while (0)

/* Zeroed arrays of n floats / doubles (at least one element, so n = 0 is fine), for
 * test data and references; free() them. */
static inline float *test_falloc(int64_t n) {
    float *p = calloc((size_t)(n > 0 ? n : 1), sizeof(float));
    assert_non_null(p);
    return p;
}

static inline double *test_dalloc(int64_t n) {
    double *p = calloc((size_t)(n > 0 ? n : 1), sizeof(double));
    assert_non_null(p);
    return p;
}

/* A double copy of n floats (test_dalloc). */
static inline double *test_to_f64(const float *x, int64_t n) {
    double *y = test_dalloc(n);
    for (int64_t i = 0; i < n; i++) y[i] = x[i];
    return y;
}

/* n floats scale·N(0, 1) from stream 0 of `seed` (test_falloc). */
static inline float *test_randn(int64_t n, uint64_t seed, double scale) {
    float *x = test_falloc(n);
    for (int64_t i = 0; i < n; i++) x[i] = (float)(scale * dsa_rng_normal_at(seed, 0, (uint64_t)i));
    return x;
}

/* The tiny model the model-level tests share (2 layers, D 16, 2 heads, q latent 8, KV
 * latent 8, head dims 4/4/6, dense FFN 24, vocab 32, YaRN factor 4 over 16 positions, no
 * MoE, indexer or MTP), for sequences of `seq_len`; the caller changes what its test needs
 * and then calls dsa_config_validate. Free with dsa_free(cfg, sizeof *cfg). */
static inline DsaConfig *test_tiny_model_config(int64_t seq_len) {
    DsaConfig *cfg = dsa_calloc(1, sizeof *cfg);
    assert_non_null(cfg);
    assert_ok(dsa_config_defaults(cfg));
    DsaModelConfig *m = &cfg->model;
    m->vocab_size = 32;
    m->hidden_size = 16;
    m->intermediate_size = 24;
    m->num_hidden_layers = 2;
    m->num_attention_heads = m->num_key_value_heads = 2;
    m->has_q_lora = true;
    m->q_lora_rank = 8;
    m->kv_lora_rank = 8;
    m->qk_nope_head_dim = 4;
    m->qk_rope_head_dim = 4;
    m->v_head_dim = 6;
    m->has_moe = false;
    m->n_routed_experts = 0;
    m->first_k_dense_replace = 0;
    m->has_indexer = false;
    m->index_topk = 0;
    m->has_fp8 = false;
    m->max_position_embeddings = 64;
    m->rope_scaling.factor = 4;
    m->rope_scaling.original_max_position_embeddings = 16;
    m->num_nextn_predict_layers = 0;
    cfg->data.seq_len = seq_len;
    for (int s = 0; s < cfg->num_stages; s++) cfg->stages[s].seq_len = seq_len;
    return cfg;
}

/* A fresh temporary directory for this process (created once, removed at exit). */
static inline const char *test_tmpdir(void) {
    static char dir[256];
    if (!dir[0]) {
        const char *base = getenv("TMPDIR");
        snprintf(dir, sizeof dir, "%s/dsa-test-XXXXXX", base && *base ? base : "/tmp");
        if (!mkdtemp(dir)) {
            perror("mkdtemp");
            abort();
        }
    }
    return dir;
}

/* Path of `name` inside the test directory (static buffer rotation: 8 live at once). */
static inline const char *test_path(const char *name) {
    static char bufs[8][512];
    static int next;
    char *b = bufs[next++ % 8];
    snprintf(b, 512, "%s/%s", test_tmpdir(), name);
    return b;
}

/* Remove the test directory (call from main after cmocka_run_group_tests). */
static inline void test_tmpdir_remove(void) {
    if (getenv("DSA_KEEP_TMP")) return;
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", test_tmpdir());
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", test_tmpdir());
}

/* Write bytes to a file under the test directory; returns its path. */
static inline const char *test_write_file(const char *name, const void *data, size_t len) {
    const char *path = test_path(name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, len, f) != len) {
        perror(path);
        abort();
    }
    fclose(f);
    return path;
}

/* Replace the file at `path` with `text`. */
static inline void test_put_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
    assert_int_equal(fclose(f), 0);
}

/* The text of the file at `path` (at most cap - 1 bytes) into buf. */
static inline void test_read_text(const char *path, char *buf, size_t cap) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    size_t n = fread(buf, 1, cap - 1, f);
    buf[n] = 0;
    fclose(f);
}

/* Does anything (a file, a directory, a dangling link) exist at `path`? */
static inline bool test_exists(const char *path) {
    struct stat sb;
    return lstat(path, &sb) == 0;
}

/* A fresh (emptied) directory `name` under the test directory; returns its path. */
static inline const char *test_fresh_dir(const char *name) {
    const char *dir = test_path(name);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(mkdir(dir, 0755), 0);
    return dir;
}

/* Write `text` to dir/name. */
static inline void test_put_file_text(const char *dir, const char *name, const char *text) {
    char path[600];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
    assert_int_equal(fclose(f), 0);
}

/* Does dir/name exist? */
static inline bool test_file_exists(const char *dir, const char *name) {
    char path[600];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    struct stat sb;
    return stat(path, &sb) == 0;
}

/* Entries of `dir`, dot files left out. */
static inline int test_count_files(const char *dir) {
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n;
}

/* The last error message contains every one of the given strings (NULL-terminated). */
static inline void test_msg_has(const char *first, ...) {
    va_list ap;
    va_start(ap, first);
    for (const char *s = first; s; s = va_arg(ap, const char *))
        if (!strstr(dsa_error_message(), s)) fail_msg("message lacks \"%s\":\n%s", s, dsa_error_message());
    va_end(ap);
}

/* Numeric check of an fp32 result against an fp64 reference (STYLE.md rule 4): fails
 * when the worst |got - want| exceeds tol times max|want|, printing the worst index, both
 * values, the max abs and relative error; a NaN in `got` always fails. */
/* Central differences: fd[i] = (loss(x + eps·e_i) − loss(x − eps·e_i)) / 2eps for each
 * of the n entries of x, perturbed in place through `loss(ctx)` and restored. */
typedef double (*TestLossFn)(void *ctx);
static inline void test_central_differences(double *fd, double *x, int64_t n, double eps, TestLossFn loss, void *ctx) {
    for (int64_t i = 0; i < n; i++) {
        const double saved = x[i];
        x[i] = saved + eps;
        const double up = loss(ctx);
        x[i] = saved - eps;
        const double down = loss(ctx);
        x[i] = saved;
        fd[i] = (up - down) / (2 * eps);
    }
}

/* fp64 against fp64: fails when the worst |got − want| exceeds tol · max(max |want|,
 * floor), printing the worst index and both values. */
static inline void test_expect_close_f64(const char *what, const double *got, const double *want, int64_t n,
                                         double tol, double floor) {
    double amax = 0, worst = 0;
    int64_t at = 0;
    for (int64_t i = 0; i < n; i++) {
        amax = fmax(amax, fabs(want[i]));
        if (!(fabs(got[i] - want[i]) <= worst)) worst = fabs(got[i] - want[i]), at = i;
    }
    if (!(worst <= tol * fmax(amax, floor)))
        fail_msg("%s: worst index %lld: got %.12g, want %.12g (max |want| %.3g, tolerance %.1g)", what,
                 (long long)at, got[at], want[at], amax, tol);
}

/* Worst |got − want| relative to max |want| (a NaN in got counts as infinite): the
 * quantity test_expect_close checks, for messages and for checks that must FAIL. */
static inline double test_rel_error(const float *got, const double *want, int64_t n) {
    double amax = 0, worst = 0;
    for (int64_t i = 0; i < n; i++) amax = fmax(amax, fabs(want[i]));
    for (int64_t i = 0; i < n; i++) {
        double e = fabs(got[i] - want[i]);
        worst = e <= worst ? worst : (isnan(e) ? INFINITY : e);
    }
    return worst / (amax > 0 ? amax : 1);
}

static inline void test_expect_close(const char *what, const float *got, const double *want, int64_t n, double tol) {
    double amax = 0, worst = 0;
    int64_t at = 0;
    for (int64_t i = 0; i < n; i++) amax = fabs(want[i]) > amax ? fabs(want[i]) : amax;
    for (int64_t i = 0; i < n; i++) {
        double e = fabs(got[i] - want[i]);
        if (!(e <= worst)) worst = e, at = i; /* NaN compares false: taken as the worst */
    }
    double rel = worst / (amax > 0 ? amax : 1);
    if (!(rel <= tol))
        fail_msg("%s: worst index %lld: got %.9g, want %.9g; max abs error %.3g, rel %.3g > %.1g", what, (long long)at,
                 got[at], want[at], worst, rel, tol);
}

#endif
