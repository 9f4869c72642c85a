/* fuzz_util.h: what the libFuzzer harnesses of tests/fuzz/ share. Every harness defines
 * FUZZ_NAME(one_input)(data, size), the body of one run, named LLVMFuzzerTestOneInput in
 * the fuzzer build and fuzz_<harness> when tests/test_fuzz_replay.c includes the
 * harnesses to replay the regression inputs of tests/data/fuzz/ and the seed corpora
 * in every `make test` and `make asan`. A harness writes its input to a file in one
 * private temporary directory (the parsers read files, as the tools do) and must never
 * crash, leak or read out of bounds: any error is a DsaStatus, cleared after the run. */
#ifndef DSA_TESTS_FUZZ_UTIL_H
#define DSA_TESTS_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef FUZZ_NAME
#define FUZZ_NAME(h) LLVMFuzzerTestOneInput
#endif

/* A private directory for this process, made once (removed by the replay test). */
static inline const char *fuzz_dir(void) {
    static char dir[256];
    if (!dir[0]) {
        const char *base = getenv("TMPDIR");
        snprintf(dir, sizeof dir, "%s/dsa-fuzz-XXXXXX", base && *base ? base : "/tmp");
        if (!mkdtemp(dir)) abort();
    }
    return dir;
}

/* Write `n` bytes to `name` inside fuzz_dir(); returns the path (static buffers, 4 live). */
static inline const char *fuzz_write(const char *name, const uint8_t *data, size_t n) {
    static char bufs[4][512];
    static int next;
    char *path = bufs[next++ % 4];
    snprintf(path, 512, "%s/%s", fuzz_dir(), name);
    FILE *f = fopen(path, "wb");
    if (!f || (n && fwrite(data, 1, n, f) != n) || fclose(f) != 0) abort();
    return path;
}

#endif
