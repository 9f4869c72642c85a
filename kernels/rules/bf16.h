/* bf16.h: fp32 ↔ bf16 (the upper 16 bits of an fp32), one definition for the CPU
 * (checkpoints/safetensors.c reading BF16 tensors, pretrain/model_io.c writing them) and
 * the CUDA backend's bf16 storage (DESIGN.md "Backends"; DSA-SPEC §3.2, §5.2: bf16 inputs
 * widened to fp32). Rounding is to nearest, ties to even (as torch's .to(torch.bfloat16)
 * and CUDA's __float2bfloat16_rn); a NaN stays a quiet NaN with its sign and upper payload;
 * ±inf and overflow past the largest bf16 give ±inf. Widening is exact.
 */
#ifndef DSA_KERNELS_RULES_BF16_H
#define DSA_KERNELS_RULES_BF16_H

#include "kernels/rules/hd.h"

static inline DSA_HD uint16_t dsa_bf16_from_f32(float f) {
    uint32_t u = dsa_bits_of(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u); /* NaN: set the quiet bit */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static inline DSA_HD float dsa_bf16_to_f32(uint16_t h) { return dsa_float_of((uint32_t)h << 16); }

#endif
