/* tokenizer_bytes.c: the byte-level tokenizer "bytes-v1" (see tokenizer_bytes.h). */
#include "data/tokenizer_bytes.h"

void dsa_tokenizer_bytes_encode(const uint8_t *bytes, size_t n, uint32_t *out) {
    for (size_t i = 0; i < n; i++) out[i] = bytes[i];
}

int64_t dsa_tokenizer_bytes_decode(const uint32_t *tokens, int64_t n, uint8_t *out) {
    int64_t bad = 0;
    for (int64_t i = 0; i < n; i++) {
        if (tokens[i] < 256) {
            out[i] = (uint8_t)tokens[i];
        } else if (tokens[i] == DSA_BYTES_EOS_ID) {
            out[i] = '\n';
        } else {
            out[i] = '?';
            bad++;
        }
    }
    return bad;
}
