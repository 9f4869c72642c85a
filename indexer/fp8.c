/* fp8.c: power-of-two group quantization of the indexer's activations (fp8.h, DSA-SPEC
 * §5.2), over the e4m3 and scale rules of kernels/rules/fp8.h. */
#include "indexer/fp8.h"

#include <math.h>

#include "core/error.h"

void dsa_fp8_quantize(uint8_t *codes, float *scales, float *deq, const float *v, int64_t n, int64_t g) {
    DSA_ASSERT(g > 0 && n % g == 0);
    for (int64_t g0 = 0; g0 < n; g0 += g) {
        float amax = 0.0f;
        for (int64_t i = g0; i < g0 + g; i++) amax = fmaxf(amax, fabsf(v[i]));
        float s = dsa_fp8_group_scale(amax);
        scales[g0 / g] = s;
        for (int64_t i = g0; i < g0 + g; i++) {
            /* division by a power of two is exact, so this is e4m3_rne(v · 2^-e) */
            float q = dsa_e4m3_round(v[i] / s);
            if (codes) codes[i] = dsa_e4m3_encode(q);
            if (deq) deq[i] = q * s;
        }
    }
}
