/* fp8.h: the indexer's activation quantization, FP8 e4m3 codes with power-of-two (ue8m0)
 * per-group scales, bit-exact on the CPU (DSA-SPEC §5.2).
 *
 * The scalar rules (e4m3 round / encode / decode, the group scale and the group size) are
 * kernels/rules/fp8.h's, shared with the CUDA backend; this header adds the loop over a
 * vector's groups.
 */
#ifndef DSA_INDEXER_FP8_H
#define DSA_INDEXER_FP8_H

#include <stdint.h>

#include "kernels/rules/fp8.h"

/* Quantize n values in groups of g (n a multiple of g): scales[n / g] = σ of each group,
 * codes[i] = e4m3(v[i] / σ) (may be NULL), deq[i] = decode(codes[i]) · σ (may alias v;
 * may be NULL). */
void dsa_fp8_quantize(uint8_t *codes, float *scales, float *deq, const float *v, int64_t n, int64_t g);

#endif
