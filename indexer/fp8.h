/* fp8.h: FP8 e4m3 (OCP "e4m3fn") emulation and the indexer's activation quantization with
 * power-of-two (ue8m0) per-group scales, bit-exact on the CPU (DSA-SPEC §3.2, §5.2).
 *
 * e4m3fn: sign, 4 exponent bits (bias 7), 3 mantissa bits, max ±448, no infinities,
 * NaN = 0x7f / 0xff, smallest subnormal 2^-9. Conversion rounds to nearest, ties to even,
 * and saturates at ±448 (the CUDA "satfinite" conversion).
 */
#ifndef DSA_INDEXER_FP8_H
#define DSA_INDEXER_FP8_H

#include <stdint.h>

enum { DSA_FP8_GROUP = 128 }; /* quantization group of the reference (DSA-SPEC §5.2) */

/* e4m3 code of x: round to nearest even, saturate at ±448; NaN → 0x7f. */
uint8_t dsa_e4m3_encode(float x);
/* Value of an e4m3 code (NaN for 0x7f / 0xff). */
float dsa_e4m3_decode(uint8_t code);
/* The e4m3 value nearest x (ties to even), saturated at ±448: decode(encode(x)). */
float dsa_e4m3_round(float x);

/* Power-of-two scale of one group (DSA-SPEC §5.2): amax = max(amax, 1e-4),
 * σ = 2^ceil_log2(amax · fp32(1/448)), ceil_log2 taken from the fp32 bit fields. */
float dsa_fp8_group_scale(float amax);

/* Group size for a vector of `width` values: min(128, width) (widths below 128 are our
 * extension for small test configs). */
int64_t dsa_fp8_group_size(int64_t width);

/* Quantize n values in groups of g (n a multiple of g): scales[n / g] = σ of each group,
 * codes[i] = e4m3(v[i] / σ) (may be NULL), deq[i] = decode(codes[i]) · σ (may alias v;
 * may be NULL). */
void dsa_fp8_quantize(uint8_t *codes, float *scales, float *deq, const float *v, int64_t n, int64_t g);

#endif
