/* test_config_util.h: helpers shared by the configuration tests (test_config.c,
 * test_config_errors.c). */
#ifndef DSA_TESTS_TEST_CONFIG_UTIL_H
#define DSA_TESTS_TEST_CONFIG_UTIL_H

#include <math.h>

#include "core/config.h"
#include "tests/test_util.h"

static inline DsaConfig *cfg_new(void) {
    DsaConfig *cfg = calloc(1, sizeof *cfg);
    assert_non_null(cfg);
    return cfg;
}

static inline void assert_close(double got, double want, double rel) {
    if (fabs(got - want) > rel * fabs(want)) fail_msg("got %.12g, want %.12g (rel tol %g)", got, want, rel);
}

/* Parse `text` with overrides and check it fails with `needle` in the message. */
static inline void expect_parse_error(const char *text, const char *const *sets, int n, const char *needle) {
    DsaConfig *cfg = cfg_new();
    assert_fails_with(dsa_config_parse(cfg, text, "x.json", sets, n), DSA_ERR_CONFIG, needle);
    free(cfg);
}

/* Write, read back: the same struct, the same text, the same hash. */
static inline void check_round_trip(const DsaConfig *a) {
    DsaConfig *b = cfg_new();
    char *text = NULL, *text2 = NULL;
    assert_ok(dsa_config_to_json(a, &text));
    assert_ok(dsa_config_parse(b, text, a->source, NULL, 0));
    b->origins = a->origins; /* where values came from is not part of the config */
    if (memcmp(a, b, sizeof *a) != 0) fail_msg("round trip of %s changed the config:\n%s", a->source, text);
    assert_ok(dsa_config_to_json(b, &text2));
    assert_string_equal(text, text2);
    assert_true(dsa_config_hash(a) == dsa_config_hash(b));
    free(text);
    free(text2);
    free(b);
}

#endif
