/* import_raw.c: the `dsa pack` importer for raw token files (u16 / u32).
 *
 * A raw file is a flat array of little-endian token ids, 2 or 4 bytes each, as written
 * by numpy's tofile() or many tokenizer scripts. eos_id tokens delimit documents (the
 * EOS itself is re-added by the shard writer); a piece after the last EOS is a final
 * document, and consecutive EOS tokens make empty documents, which are dropped. The
 * file is streamed in blocks; only the current document is held in memory.
 *
 * The input "-" is standard input (a pipe from a tokenizer, e.g. tools/tokenize_pack.py):
 * read to end of file, its length unknown in advance; a stream that ends inside a token
 * is an error. NOTE: a pipe cannot tell a finished producer from one that died, so the
 * producer must make pack fail when it fails (tools/tokenize_pack.py kills it): pack
 * then leaves no finished set (pack.h).
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/fileutil.h"
#include "core/mem.h"
#include "data/pack.h"

enum { RAW_BLOCK_TOKENS = 1 << 20 };

static uint32_t read_le(const uint8_t *p, int bytes) {
    if (bytes == 2) return (uint32_t)p[0] | (uint32_t)p[1] << 8;
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Feed tokens[0, n) (token index `first` of the file) into the sink. */
static DsaStatus raw_feed(DsaPackSink *s, const uint8_t *block, int64_t n, int bytes, int64_t first, const char *path) {
    DSA_TRY(dsa_pack_sink_reserve(s, n));
    for (int64_t i = 0; i < n; i++) {
        uint32_t id = read_le(block + i * bytes, bytes);
        if (id >= s->vocab_size)
            DSA_FAIL(DSA_ERR_RANGE, "%s: token %lld (byte offset %lld) is %u, >= vocab_size %llu", path,
                     (long long)(first + i), (long long)((first + i) * bytes), id, (unsigned long long)s->vocab_size);
        if (id == s->eos_id) {
            DSA_TRY(dsa_pack_sink_end_doc(s));
            DSA_TRY(dsa_pack_sink_reserve(s, n - i));
        } else {
            s->doc[s->doc_len++] = id;
        }
    }
    return DSA_OK;
}

DsaStatus dsa_pack_import_raw(DsaPackSink *s, const char *path, int bytes) {
    DSA_ASSERT(bytes == 2 || bytes == 4);
    const bool from_stdin = !strcmp(path, "-");
    const char *name = from_stdin ? "standard input" : path;
    int64_t size = -1; /* unknown for standard input */
    FILE *f = stdin;
    if (from_stdin) {
        if (isatty(STDIN_FILENO))
            DSA_FAIL(DSA_ERR_ARG, "input \"-\" reads token ids from standard input, which is a terminal: pipe the "
                     "ids into dsa pack (e.g. from tools/tokenize_pack.py)");
    } else {
        DSA_TRY(dsa_file_size(path, &size));
        if (size % bytes != 0)
            DSA_FAIL(DSA_ERR_FORMAT,
                     "%s: size %lld bytes is not a multiple of %d (a u%d token file): truncated or wrong --format", path,
                     (long long)size, bytes, bytes * 8);
        f = fopen(path, "rb");
        if (!f) DSA_FAIL(DSA_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    }
    DsaStatus st = DSA_OK;
    const size_t block_bytes = (size_t)RAW_BLOCK_TOKENS * bytes;
    uint8_t *block = dsa_malloc(block_bytes);
    if (!block) DSA_FAIL_GOTO(st, done, DSA_ERR_NOMEM, "%s: out of memory for a read buffer", name);
    int64_t first = 0; /* tokens read so far */
    for (;;) {
        /* fread returns less than asked only at the end of the input or on an error */
        size_t got = fread(block, 1, block_bytes, f);
        if (ferror(f)) DSA_FAIL_GOTO(st, done, DSA_ERR_IO, "%s: read error after token %lld: %s", name,
                                     (long long)first, strerror(errno));
        if (got % (size_t)bytes != 0)
            DSA_FAIL_GOTO(st, done, DSA_ERR_FORMAT,
                          "%s: ends with %zu byte(s) after token %lld, less than one u%d token: the stream was cut "
                          "short or is not --format u%d",
                          name, got % (size_t)bytes, (long long)(first + (int64_t)(got / (size_t)bytes)), bytes * 8,
                          bytes * 8);
        int64_t n = (int64_t)(got / (size_t)bytes);
        DSA_TRY_GOTO(st, raw_feed(s, block, n, bytes, first, name), done);
        first += n;
        dsa_pack_sink_progress(s, first * bytes);
        if (got < block_bytes) break;
    }
    if (size >= 0 && first * bytes != size)
        DSA_FAIL_GOTO(st, done, DSA_ERR_IO, "%s: read %lld of %lld bytes (file changed while packing?)", path,
                      (long long)(first * bytes), (long long)size);
    DSA_TRY_GOTO(st, dsa_pack_sink_end_doc(s), done);
done:
    s->doc_len = 0;
    dsa_free(block, block_bytes);
    if (!from_stdin) fclose(f);
    return st;
}
