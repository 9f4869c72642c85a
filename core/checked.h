/* checked.h: 64-bit integer arithmetic that reports overflow instead of wrapping (which
 * is undefined behaviour for signed integers in C). The sizing code (pretrain/sizing.h,
 * the parameter table, the activation workspace) builds every element and byte count
 * with these, so a config whose sizes do not fit in 64 bits is refused by name instead
 * of allocating a wrapped-around size.
 *
 * The sticky forms take a flag that an overflow sets and never clears, so a chain of
 * operations is checked once at its end; their result is then INT64_MAX (saturated),
 * which is still safe to compare or to add to. */
#ifndef DSA_CORE_CHECKED_H
#define DSA_CORE_CHECKED_H

#include <stdbool.h>
#include <stdint.h>

/* a · b and a + b into *out; false (and *out unspecified) on overflow. */
static inline bool dsa_mul_i64(int64_t a, int64_t b, int64_t *out) { return !__builtin_mul_overflow(a, b, out); }
static inline bool dsa_add_i64(int64_t a, int64_t b, int64_t *out) { return !__builtin_add_overflow(a, b, out); }

/* Sticky: the result, or INT64_MAX with *overflow set. */
static inline int64_t dsa_mul_sticky(int64_t a, int64_t b, bool *overflow) {
    int64_t r;
    if (*overflow || !dsa_mul_i64(a, b, &r)) {
        *overflow = true;
        return INT64_MAX;
    }
    return r;
}

static inline int64_t dsa_add_sticky(int64_t a, int64_t b, bool *overflow) {
    int64_t r;
    if (*overflow || !dsa_add_i64(a, b, &r)) {
        *overflow = true;
        return INT64_MAX;
    }
    return r;
}

#endif
