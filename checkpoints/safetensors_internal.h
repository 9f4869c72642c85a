/* safetensors_internal.h: what the reader (safetensors.c) and the writer
 * (safetensors_write.c) of the safetensors format share: the metadata key, the UTF-8
 * check of names and metadata, and the duplicate-name check. Private to checkpoints/.
 */
#ifndef DSA_CHECKPOINTS_SAFETENSORS_INTERNAL_H
#define DSA_CHECKPOINTS_SAFETENSORS_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoints/safetensors.h"
#include "core/mem.h"

static const char META_KEY[] = "__metadata__";

/* True when bytes[0..n) are well-formed UTF-8 without NUL bytes (no overlong forms, no
 * surrogates, nothing past U+10FFFF). On failure *bad is the offending byte's offset. */
static inline bool utf8_valid(const uint8_t *s, size_t n, size_t *bad) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        size_t len;
        uint32_t cp;
        if (c == 0) goto fail;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            len = 2, cp = c & 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            len = 3, cp = c & 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            len = 4, cp = c & 0x07;
        } else {
            goto fail;
        }
        if (n - i < len) goto fail;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80) goto fail;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < min_cp[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) goto fail;
        i += len;
    }
    return true;
fail:
    *bad = i;
    return false;
}

static inline int cmp_str_ptr(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Find a duplicate among n strings (sorted copy of the pointers); NULL if none. */
static inline DsaStatus find_duplicate(const char **names, int n, const char **dup) {
    *dup = NULL;
    if (n < 2) return DSA_OK;
    const char **sorted = NULL;
    DSA_TRY(dsa_alloc((void **)&sorted, (size_t)n * sizeof *sorted, "name list"));
    memcpy(sorted, names, (size_t)n * sizeof *sorted);
    qsort(sorted, (size_t)n, sizeof *sorted, cmp_str_ptr);
    for (int i = 1; i < n && !*dup; i++)
        if (!strcmp(sorted[i - 1], sorted[i])) *dup = sorted[i];
    dsa_free(sorted, (size_t)n * sizeof *sorted);
    return DSA_OK;
}

#endif
