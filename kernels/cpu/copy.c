/* copy.c: the CPU backend's 2-D strided copy (kernels/backend.h copy_2d).
 *
 * The MLA layer keeps fused projections as they come out of the GEMMs (kv_b_proj gives
 * [kN ‖ v] per head, kv_a_proj_with_mqa gives [c̃ ‖ kR], DSA-SPEC §3.1 row layouts) and
 * splits or joins them with this copy rather than with strided variants of every op.
 */
#include "kernels/cpu/ops.h"

#include <string.h>

void dsa_cpu_copy_2d(float *dst, int64_t dst_stride, const float *src, int64_t src_stride,
                     int64_t rows, int64_t cols, bool accumulate) {
#pragma omp parallel for schedule(static) if (rows * cols > 32768)
    for (int64_t r = 0; r < rows; r++) {
        float *restrict d = dst + r * dst_stride;
        const float *restrict s = src + r * src_stride;
        if (accumulate) {
            for (int64_t c = 0; c < cols; c++) d[c] += s[c];
        } else {
            memcpy(d, s, (size_t)cols * sizeof(float));
        }
    }
}
