/* fuzz_shard.c: libFuzzer harness of shard opening and attribute validation
 * (data/shard_read.c, data/shard_set.c): the input is a shard file; it is opened (the
 * superblock check, HDF5's checksummed metadata, the attributes, /tokens and
 * /doc_offsets, the chunk index), checked against its set's manifest and read whole.
 * Seeds: shards `dsa pack` writes (tests/fuzz/corpus/shard/); the inputs that crashed
 * libhdf5 1.10.8 are tests/data/shard-fuzz/. NOTE: run with -detect_leaks=0 (make fuzz
 * does): libhdf5 leaks memory on some failed opens of damaged files. */
#include "core/error.h"
#include "data/shard.h"
#include "tests/fuzz/fuzz_util.h"

int FUZZ_NAME(shard)(const uint8_t *data, size_t size) {
    const char *path = fuzz_write("shard.h5", data, size);
    DsaShard s;
    if (dsa_shard_open(&s, path) == DSA_OK) {
        DsaShardSetCheck set = {0};
        (void)dsa_shard_check_set(&set, &s);
        dsa_shard_check_set_free(&set);
        DsaShardScratch *scratch = NULL;
        uint32_t *out = s.num_tokens <= (1 << 20) ? malloc((size_t)s.num_tokens * 4) : NULL;
        if (out && dsa_shard_scratch_new(&scratch) == DSA_OK) (void)dsa_shard_read(&s, 0, s.num_tokens, out, scratch);
        dsa_shard_scratch_free(scratch);
        free(out);
        dsa_shard_close(&s);
    }
    dsa_error_clear();
    return 0;
}
