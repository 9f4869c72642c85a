/* fuzz_hf_index.c: libFuzzer harness of the Hugging Face index reader (checkpoints/
 * hf_read.c): model.safetensors.index.json (weight_map, shard names, metadata) over two
 * fixed, valid shards written once by dsa_safetensors_write, then every small tensor read
 * as F32. Seeds: indexes `dsa export --shard-size` writes (tests/fuzz/corpus/hf_index/). */
#include <sys/stat.h>

#include "checkpoints/hf.h"
#include "checkpoints/safetensors.h"
#include "core/error.h"
#include "tests/fuzz/fuzz_util.h"

/* A directory with the shards model-00001-of-00002.safetensors ("a" [2, 3] F32, "b" [4]
 * BF16) and model-00002-of-00002.safetensors ("c.weight" [2, 2] F8_E4M3 and its F32
 * scale "c.weight_scale_inv" [1, 1]), made once. */
static const char *hf_index_dir(void) {
    static char dir[600];
    if (dir[0]) return dir;
    snprintf(dir, sizeof dir, "%s/hf", fuzz_dir());
    if (mkdir(dir, 0755) != 0) abort();
    char path[700];
    float a[6] = {1, 2, 3, 4, 5, 6};
    uint16_t b[4] = {0x3f80, 0x4000, 0xbf80, 0};
    uint8_t c[4] = {0x38, 0x40, 0xb8, 0};
    float s[1] = {0.5f};
    DsaStTensorRef one[] = {{"a", DSA_F32, 2, {2, 3}, a}, {"b", DSA_BF16, 1, {4}, b}};
    DsaStTensorRef two[] = {{"c.weight", DSA_F8_E4M3, 2, {2, 2}, c}, {"c.weight_scale_inv", DSA_F32, 2, {1, 1}, s}};
    snprintf(path, sizeof path, "%s/model-00001-of-00002.safetensors", dir);
    if (dsa_safetensors_write(path, one, 2, NULL, NULL, 0) != DSA_OK) abort();
    snprintf(path, sizeof path, "%s/model-00002-of-00002.safetensors", dir);
    if (dsa_safetensors_write(path, two, 2, NULL, NULL, 0) != DSA_OK) abort();
    return dir;
}

int FUZZ_NAME(hf_index)(const uint8_t *data, size_t size) {
    const char *dir = hf_index_dir();
    char path[700];
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    FILE *f = fopen(path, "wb");
    if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f) != 0) abort();
    DsaHfReader r;
    if (dsa_hf_open(&r, dir) == DSA_OK) {
        float out[64];
        for (int i = 0; i < r.count; i++) {
            const DsaHfTensor *t = &r.tensors[i];
            int64_t numel = 1;
            for (int d = 0; d < t->ndim; d++) numel *= t->shape[d];
            if (numel <= 64) (void)dsa_hf_read_f32(&r, t->name, t->ndim, t->shape, out);
        }
        dsa_hf_close(&r);
    }
    dsa_error_clear();
    return 0;
}
