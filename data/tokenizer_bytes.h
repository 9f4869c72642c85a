/* tokenizer_bytes.h: the byte-level tokenizer "bytes-v1".
 *
 * The simplest tokenizer that loses nothing: token id i (0..255) is the byte i, and
 * id 256 is the end-of-document token. Vocabulary size 257. Any byte sequence, UTF-8 or
 * not, encodes and decodes exactly. `dsa pack --format text|jsonl` uses it when no
 * pre-tokenized ids are given; shards record the name "bytes-v1".
 */
#ifndef DSA_DATA_TOKENIZER_BYTES_H
#define DSA_DATA_TOKENIZER_BYTES_H

#include <stddef.h>
#include <stdint.h>

#define DSA_BYTES_TOKENIZER_NAME "bytes-v1"

enum {
    DSA_BYTES_EOS_ID = 256,     /* end of document */
    DSA_BYTES_VOCAB_SIZE = 257, /* 256 bytes + EOS */
};

/* Encode `n` bytes into `out` (capacity >= n): out[i] = bytes[i]. */
void dsa_tokenizer_bytes_encode(const uint8_t *bytes, size_t n, uint32_t *out);

/* Decode tokens into bytes: ids 0..255 become their byte, EOS becomes '\n', anything
 * else '?'. `out` has capacity >= n. Returns the number of ids that were not bytes. */
int64_t dsa_tokenizer_bytes_decode(const uint32_t *tokens, int64_t n, uint8_t *out);

#endif
