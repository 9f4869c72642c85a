/* bench_loader_internal.h: what the two parts of the loader benchmark (inspect.h, `dsa
 * bench loader`) share: bench_data.c generates and writes the data set, bench_loader.c
 * times the reads of it. Private to data/.
 */
#ifndef DSA_DATA_BENCH_LOADER_INTERNAL_H
#define DSA_DATA_BENCH_LOADER_INTERNAL_H

#include <stddef.h>

#include "data/inspect.h"

enum {
    TEXT_VOCAB = 32000,
    UNIFORM_VOCAB = 129280, /* DeepSeek-V3's vocabulary */
    BENCH_CHECK_WINDOWS = 16,
};

/* The raw uint32 file and the shard name prefix of distribution `dist` under `dir`. */
void dsa_bench_raw_path(char *buf, size_t cap, const char *dir, DsaBenchDist dist);
void dsa_bench_prefix(char *buf, size_t cap, const char *dir, DsaBenchDist dist);
/* Generate the data set of `o` and write it as shards and as the raw file (res gets the
 * stream's figures and the shard count). */
DsaStatus dsa_bench_generate(const DsaBenchLoaderOptions *o, DsaBenchLoaderResult *res);

#endif
