/* strutil.h: small string helpers shared by the config parser and the CLI. */
#ifndef DSA_CORE_STRUTIL_H
#define DSA_CORE_STRUTIL_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

/* Edit distance (insert, delete, substitute, transpose adjacent) between a and b. */
int dsa_edit_distance(const char *a, const char *b);

/* The candidate closest to `word` by edit distance, or NULL when none is within
 * max(2, strlen(word) / 3) edits. `candidates` is NULL-terminated. */
const char *dsa_closest_word(const char *word, const char *const *candidates);

/* Parse a non-negative integer with an optional K/M/G/T suffix (powers of 1024 when
 * written Ki/Mi/Gi, of 1000 otherwise, e.g. "128Ki" = 131072, "2M" = 2000000).
 * The error names `what`. */
DsaStatus dsa_parse_count(const char *text, int64_t *out, const char *what);

/* Parse a comma-separated list of counts into `out` (capacity `cap`), count in *n. */
DsaStatus dsa_parse_count_list(const char *text, int64_t *out, int cap, int *n, const char *what);

/* Does `s` end with `suffix`? */
int dsa_ends_with(const char *s, const char *suffix);

#endif
