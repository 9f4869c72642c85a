/* strutil.c: string helpers (see strutil.h). */
#include "core/strutil.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

int dsa_edit_distance(const char *a, const char *b) {
    enum { MAXLEN = 64 };
    size_t n = strlen(a), m = strlen(b);
    if (n > MAXLEN || m > MAXLEN) return (int)(n > m ? n : m);
    int d[MAXLEN + 1][MAXLEN + 1];
    for (size_t i = 0; i <= n; i++) d[i][0] = (int)i;
    for (size_t j = 0; j <= m; j++) d[0][j] = (int)j;
    for (size_t i = 1; i <= n; i++) {
        for (size_t j = 1; j <= m; j++) {
            int cost = tolower((unsigned char)a[i - 1]) != tolower((unsigned char)b[j - 1]);
            int best = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < best) best = d[i][j - 1] + 1;
            if (d[i - 1][j - 1] + cost < best) best = d[i - 1][j - 1] + cost;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] && d[i - 2][j - 2] + 1 < best)
                best = d[i - 2][j - 2] + 1;
            d[i][j] = best;
        }
    }
    return d[n][m];
}

const char *dsa_closest_word(const char *word, const char *const *candidates) {
    int limit = (int)strlen(word) / 3;
    if (limit < 2) limit = 2;
    const char *best = NULL;
    int best_dist = limit + 1;
    for (int i = 0; candidates[i]; i++) {
        int dist = dsa_edit_distance(word, candidates[i]);
        /* A candidate that contains the word (or vice versa) is a strong hint too. */
        if (dist > limit && strlen(word) >= 4 && (strstr(candidates[i], word) || strstr(word, candidates[i])))
            dist = limit;
        if (dist < best_dist) {
            best_dist = dist;
            best = candidates[i];
        }
    }
    return best;
}

DsaStatus dsa_parse_count(const char *text, int64_t *out, const char *what) {
    if (!text || !*text) DSA_FAIL(DSA_ERR_ARG, "%s: empty value, expected a non-negative integer", what);
    errno = 0;
    char *end = NULL;
    if (text[0] == '-') DSA_FAIL(DSA_ERR_ARG, "%s: \"%s\" is negative, expected a non-negative integer", what, text);
    unsigned long long v = strtoull(text, &end, 10);
    if (end == text || errno == ERANGE)
        DSA_FAIL(DSA_ERR_ARG, "%s: \"%s\" is not a non-negative integer (suffixes K, M, G, T, Ki, Mi, Gi, Ti allowed)",
                 what, text);
    uint64_t mult = 1;
    if (*end) {
        const char *units = "KMGT";
        const char *u = strchr(units, toupper((unsigned char)*end));
        if (!u || !*u)
            DSA_FAIL(DSA_ERR_ARG, "%s: \"%s\" has an unknown suffix \"%s\" (allowed: K, M, G, T, Ki, Mi, Gi, Ti)", what,
                     text, end);
        int power = (int)(u - units) + 1;
        int binary = end[1] == 'i';
        if (end[1 + binary] != '\0')
            DSA_FAIL(DSA_ERR_ARG, "%s: \"%s\" has trailing characters after the suffix", what, text);
        for (int i = 0; i < power; i++) mult *= binary ? 1024u : 1000u;
    }
    if (v > (uint64_t)INT64_MAX / mult) DSA_FAIL(DSA_ERR_ARG, "%s: \"%s\" is too large", what, text);
    *out = (int64_t)(v * mult);
    return DSA_OK;
}

DsaStatus dsa_parse_count_list(const char *text, int64_t *out, int cap, int *n, const char *what) {
    *n = 0;
    const char *p = text;
    while (*p) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char item[64];
        if (len == 0 || len >= sizeof item) DSA_FAIL(DSA_ERR_ARG, "%s: bad list item in \"%s\"", what, text);
        if (*n >= cap) DSA_FAIL(DSA_ERR_ARG, "%s: more than %d items in \"%s\"", what, cap, text);
        memcpy(item, p, len);
        item[len] = '\0';
        DSA_TRY(dsa_parse_count(item, &out[*n], what));
        (*n)++;
        p += len + (comma ? 1 : 0);
    }
    if (*n == 0) DSA_FAIL(DSA_ERR_ARG, "%s: empty list", what);
    return DSA_OK;
}

int dsa_ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}
