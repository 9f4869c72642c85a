/* embedding.c: token embedding lookup (model.embed_tokens, DSA-SPEC §3) and its
 * gradient (kernels/backend.h).
 *
 * NOTE: the backward scatters rows of dout into dtable in token order; it parallelizes
 * over columns, so every element of dtable is summed by one thread in that order and
 * the result is the same for every thread count.
 */
#include <string.h>

#include "kernels/cpu/ops.h"

void dsa_cpu_embedding_forward(float *out, const int32_t *ids, const float *table, int64_t n, int64_t dim) {
#pragma omp parallel for schedule(static) if (n * dim > 65536)
    for (int64_t i = 0; i < n; i++) memcpy(out + i * dim, table + (int64_t)ids[i] * dim, (size_t)dim * sizeof(float));
}

void dsa_cpu_embedding_backward(float *dtable, const float *dout, const int32_t *ids, int64_t n, int64_t dim) {
    enum { COLS = 64 };
    int64_t blocks = (dim + COLS - 1) / COLS;
#pragma omp parallel for schedule(static) if (n * dim > 65536)
    for (int64_t b = 0; b < blocks; b++) {
        int64_t c0 = b * COLS, c1 = c0 + COLS < dim ? c0 + COLS : dim;
        for (int64_t i = 0; i < n; i++) {
            float *restrict row = dtable + (int64_t)ids[i] * dim;
            const float *restrict g = dout + i * dim;
            for (int64_t c = c0; c < c1; c++) row[c] += g[c];
        }
    }
}
