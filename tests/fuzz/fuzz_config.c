/* fuzz_config.c: libFuzzer harness of the config loader (core/config.h): JSON of any of
 * the three shapes (ours, a Hugging Face config.json, the reference code's), validation
 * of the relations, the sizing of `dsa config --check` (pretrain/sizing.h) and the round
 * trip through dsa_config_to_json. Seeds: configs/ and the published config.json files
 * of tests/data/hf-configs/ (tests/fuzz/corpus/config/). */
#include "core/config.h"
#include "core/error.h"
#include "core/mem.h"
#include "pretrain/sizing.h"
#include "tests/fuzz/fuzz_util.h"

int FUZZ_NAME(config)(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1);
    DsaConfig *cfg = dsa_malloc(sizeof *cfg);
    if (!text || !cfg) abort();
    memcpy(text, data, size);
    text[size] = 0; /* the loader reads NUL-terminated text, as dsa_file_read_all gives it */
    if (dsa_config_parse(cfg, text, "fuzz.json", NULL, 0) == DSA_OK && dsa_config_validate(cfg) == DSA_OK) {
        DsaSizing z;
        (void)dsa_sizing_train(cfg, &z);
        char *json = NULL;
        if (dsa_config_to_json(cfg, &json) == DSA_OK) {
            DsaConfig *again = dsa_malloc(sizeof *again);
            if (!again || dsa_config_parse(again, json, "round trip", NULL, 0) != DSA_OK) abort(); /* must read back */
            dsa_free(again, sizeof *again);
        }
        free(json);
    }
    dsa_error_clear();
    dsa_free(cfg, sizeof *cfg);
    free(text);
    return 0;
}
