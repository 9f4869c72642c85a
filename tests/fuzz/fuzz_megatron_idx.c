/* fuzz_megatron_idx.c: libFuzzer harness of the Megatron-LM .idx reader
 * (data/import_megatron.c): the input is the .idx of a dataset whose .bin is 64 fixed
 * bytes, packed by `dsa pack --format megatron` into a shard set. Seeds: valid indexes of
 * every token dtype (tests/fuzz/corpus/megatron_idx/). */
#include "core/error.h"
#include "data/pack.h"
#include "tests/fuzz/fuzz_util.h"

int FUZZ_NAME(megatron_idx)(const uint8_t *data, size_t size) {
    static uint8_t bin[64];
    for (int i = 0; i < 64; i++) bin[i] = (uint8_t)(i % 7);
    fuzz_write("mg.bin", bin, sizeof bin);
    const char *idx = fuzz_write("mg.idx", data, size);
    char prefix[600], out[700];
    snprintf(prefix, sizeof prefix, "%.*s", (int)(strlen(idx) - 4), idx);
    snprintf(out, sizeof out, "%s/mgout/part", fuzz_dir());
    const char *inputs[] = {prefix};
    DsaPackOptions o;
    dsa_pack_options_default(&o);
    o.format = DSA_PACK_MEGATRON;
    o.inputs = inputs;
    o.n_inputs = 1;
    o.out_prefix = out;
    o.vocab_size = 1u << 16;
    o.eos_id = 0;
    o.overwrite = 1;
    o.shard_tokens = 1 << 10;
    o.chunk_tokens = 256;
    (void)dsa_pack_run(&o, NULL);
    dsa_error_clear();
    return 0;
}
