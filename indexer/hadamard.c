/* hadamard.c: fast Walsh-Hadamard transform (hadamard.h, DSA-SPEC §5.1). */
#include "indexer/hadamard.h"

#include <math.h>

#include "core/error.h"

void dsa_hadamard(float *v, int64_t n) {
    DSA_ASSERT(n > 0 && (n & (n - 1)) == 0);
    for (int64_t h = 1; h < n; h *= 2)
        for (int64_t a = 0; a < n; a += 2 * h)
            for (int64_t i = a; i < a + h; i++) {
                float x = v[i], y = v[i + h];
                v[i] = x + y;
                v[i + h] = x - y;
            }
    const float norm = 1.0f / sqrtf((float)n);
    for (int64_t i = 0; i < n; i++) v[i] *= norm;
}
