/* fuzz_safetensors.c: libFuzzer harness of the safetensors reader (checkpoints/
 * safetensors.h): the header JSON, dtypes, shapes, data_offsets against the file, and
 * reading every small tensor back as F32. Seeds: files dsa_safetensors_write makes
 * (tests/fuzz/corpus/safetensors/). */
#include "checkpoints/safetensors.h"
#include "core/error.h"
#include "tests/fuzz/fuzz_util.h"

int FUZZ_NAME(safetensors)(const uint8_t *data, size_t size) {
    const char *path = fuzz_write("model.safetensors", data, size);
    DsaSafetensors st;
    if (dsa_safetensors_open(&st, path) == DSA_OK) {
        for (int i = 0; i < st.count; i++) {
            const DsaStEntry *e = &st.entries[i];
            int64_t numel = 1;
            for (int d = 0; d < e->ndim && numel <= (1 << 16); d++) numel *= e->shape[d];
            if (numel > (1 << 16) || numel < 0) continue;
            float *out = malloc((size_t)(numel ? numel : 1) * sizeof(float));
            if (!out) abort();
            (void)dsa_safetensors_read_f32(&st, e->name, e->ndim, e->shape, out);
            free(out);
        }
        (void)dsa_safetensors_meta(&st, "format");
        dsa_safetensors_close(&st);
    }
    dsa_error_clear();
    return 0;
}
