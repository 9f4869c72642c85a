/* fp8_block.c: FP8 e4m3 weights with one power-of-two scale per block (hf.h,
 * DSA-SPEC §3.2): the dequantization of FP8 checkpoints and the export rule.
 *
 * The e4m3 codec and the export scale rule are kernels/rules/fp8.h's (round to nearest
 * even, saturating; shared with the CUDA backend); this file only adds the block
 * bookkeeping. Partial edge blocks (rows or columns past the last full block) use their
 * block's scale, and for the export their missing elements count as zeros, i.e. the amax
 * runs over the elements that exist.
 */
#include "checkpoints/hf.h"

#include <math.h>

#include "kernels/rules/fp8.h"

void dsa_fp8_block_scale_shape(int64_t rows, int64_t cols, const int64_t block[2], int64_t scale_shape[2]) {
    DSA_ASSERT(rows >= 0 && cols >= 0 && block[0] > 0 && block[1] > 0);
    scale_shape[0] = (rows + block[0] - 1) / block[0];
    scale_shape[1] = (cols + block[1] - 1) / block[1];
}

void dsa_fp8_block_dequantize(const uint8_t *w8, const float *scale_inv, int64_t rows, int64_t cols,
                              const int64_t block[2], float *out) {
    DSA_ASSERT(rows >= 0 && cols >= 0 && block[0] > 0 && block[1] > 0);
    float table[256];
    for (int c = 0; c < 256; c++) table[c] = dsa_e4m3_decode((uint8_t)c);
    int64_t scale_cols = (cols + block[1] - 1) / block[1];
#pragma omp parallel for schedule(static) if (rows * cols > (1 << 20))
    for (int64_t i = 0; i < rows; i++) {
        const float *srow = scale_inv + (i / block[0]) * scale_cols;
        const uint8_t *src = w8 + i * cols;
        float *dst = out + i * cols;
        for (int64_t j0 = 0; j0 < cols; j0 += block[1]) {
            float s = srow[j0 / block[1]];
            int64_t j1 = j0 + block[1] < cols ? j0 + block[1] : cols;
            for (int64_t j = j0; j < j1; j++) dst[j] = table[src[j]] * s;
        }
    }
}

DsaStatus dsa_fp8_block_quantize(const float *w, int64_t rows, int64_t cols, const int64_t block[2], uint8_t *w8,
                                 float *scale_inv, const char *what) {
    if (rows < 0 || cols < 0 || block[0] <= 0 || block[1] <= 0)
        DSA_FAIL(DSA_ERR_ARG, "%s: cannot quantize a [%lld, %lld] weight in [%lld, %lld] blocks", what,
                 (long long)rows, (long long)cols, (long long)block[0], (long long)block[1]);
    int64_t ss[2];
    dsa_fp8_block_scale_shape(rows, cols, block, ss);
    for (int64_t bi = 0; bi < ss[0]; bi++) {
        int64_t i0 = bi * block[0], i1 = i0 + block[0] < rows ? i0 + block[0] : rows;
        for (int64_t bj = 0; bj < ss[1]; bj++) {
            int64_t j0 = bj * block[1], j1 = j0 + block[1] < cols ? j0 + block[1] : cols;
            float amax = 0.0f;
            for (int64_t i = i0; i < i1; i++)
                for (int64_t j = j0; j < j1; j++) {
                    float v = w[i * cols + j];
                    if (!isfinite(v))
                        DSA_FAIL(DSA_ERR_ARG, "%s: element [%lld, %lld] is %s: cannot quantize to FP8", what,
                                 (long long)i, (long long)j, isnan(v) ? "NaN" : "infinite");
                    amax = fmaxf(amax, fabsf(v));
                }
            const int e = amax > 0.0f ? dsa_fp8_block_exponent(amax) : DSA_FP8_ZERO_BLOCK_EXP;
            DSA_ASSERT(e <= DSA_FP8_SCALE_EXP_MAX);
            float s = ldexpf(1.0f, e);
            scale_inv[bi * ss[1] + bj] = s;
            /* w / s is exact (a power of two, no overflow since |w / s| <= 448) */
            for (int64_t i = i0; i < i1; i++)
                for (int64_t j = j0; j < j1; j++) w8[i * cols + j] = dsa_e4m3_encode(w[i * cols + j] / s);
        }
    }
    return DSA_OK;
}
