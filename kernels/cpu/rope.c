/* rope.c: YaRN rotary frequencies and the interleaved RoPE of MLA (DSA-SPEC §4.3, §4.4).
 *
 * Frequencies replay the reference's fp32 operations (DeepSeek's inference model.py,
 * precompute_freqs_cis) one by one, so they match its bits:
 *   f_i    = 1 / θ^(fp32(2i) / d)                        (powf, fp32 division)
 *   low    = max(⌊corr(β_fast)⌋, 0), high = min(⌈corr(β_slow)⌉, d − 1)   (double, as Python)
 *            corr(b) = d · ln(L_orig / (2π b)) / (2 ln θ); high += 0.001 when low == high
 *   ramp_i = clamp((fp32(i) − low) / fp32(high − low), 0, 1),  smooth_i = 1 − ramp_i
 *   f'_i   = (f_i / F) · (1 − smooth_i) + f_i · smooth_i
 * which is §4.3's f_i (1 − ramp_i) + (f_i / F) ramp_i. The bounds are the ones
 * core/config.c's dsa_model_yarn_bounds derives (tests/test_ops.c checks both agree).
 * NOTE: tables: the angle is the fp32 product fp32(t) · f'_i (as the reference);
 * cos and sin are taken in double of that fp32 angle and rounded once (the reference's
 * torch.polar computes them in fp32, within an ulp of ours).
 *
 * The rotation pairs (2i, 2i+1) (GPT-J layout, MLA's qR and kR); the backward, the
 * transpose, rotates by −φ. Both run in place on strided vectors.
 */
#include <math.h>
#include <string.h>

#include "kernels/cpu/ops.h"

void dsa_rope_frequencies(float *freq, int64_t rope_dim, double theta, const char *scaling_type, double factor,
                          int64_t original_max_pos, double beta_fast, double beta_slow) {
    DSA_ASSERT(rope_dim > 0 && rope_dim % 2 == 0);
    const int64_t half = rope_dim / 2;
    for (int64_t i = 0; i < half; i++) freq[i] = 1.0f / powf((float)theta, (float)(2 * i) / (float)rope_dim);
    if (!scaling_type || !scaling_type[0] || factor <= 1.0) return;
    DSA_ASSERT(!strcmp(scaling_type, "yarn")); /* the config accepts nothing else */
    const double d = (double)rope_dim, denom = 2.0 * log(theta);
    double low = floor(d * log((double)original_max_pos / (beta_fast * 2 * M_PI)) / denom);
    double high = ceil(d * log((double)original_max_pos / (beta_slow * 2 * M_PI)) / denom);
    low = low > 0 ? low : 0;
    high = high < d - 1 ? high : d - 1;
    if (low == high) high += 0.001;
    const float lo = (float)low, span = (float)(high - low), f = (float)factor;
    for (int64_t i = 0; i < half; i++) {
        float ramp = ((float)i - lo) / span;
        ramp = ramp < 0.0f ? 0.0f : ramp > 1.0f ? 1.0f : ramp;
        const float smooth = 1.0f - ramp;
        freq[i] = freq[i] / f * (1.0f - smooth) + freq[i] * smooth;
    }
}

void dsa_rope_tables(float *cos_t, float *sin_t, const float *freq, int64_t seq_len, int64_t rope_dim) {
    const int64_t half = rope_dim / 2;
    for (int64_t t = 0; t < seq_len; t++)
        for (int64_t i = 0; i < half; i++) {
            const float phi = (float)t * freq[i];
            cos_t[t * half + i] = (float)cos((double)phi);
            sin_t[t * half + i] = (float)sin((double)phi);
        }
}

/* Rotate every pair by +φ (sign 1) or −φ (sign −1). */
static void rotate(float *x, const float *cos_t, const float *sin_t, int64_t n, int64_t seq_len, int64_t heads,
                   int64_t rope_dim, int64_t row_stride, int64_t head_stride, float sign) {
    const int64_t half = rope_dim / 2;
#pragma omp parallel for schedule(static) if (n * heads * rope_dim > 32768)
    for (int64_t r = 0; r < n; r++) {
        const float *c = cos_t + (r % seq_len) * half, *s = sin_t + (r % seq_len) * half;
        for (int64_t h = 0; h < heads; h++) {
            float *v = x + r * row_stride + h * head_stride;
            for (int64_t i = 0; i < half; i++) {
                const float a = v[2 * i], b = v[2 * i + 1], si = sign * s[i];
                v[2 * i] = a * c[i] - b * si;
                v[2 * i + 1] = a * si + b * c[i];
            }
        }
    }
}

void dsa_cpu_rope_forward(float *x, const float *cos_t, const float *sin_t, int64_t n, int64_t seq_len, int64_t heads,
                          int64_t rope_dim, int64_t row_stride, int64_t head_stride) {
    rotate(x, cos_t, sin_t, n, seq_len, heads, rope_dim, row_stride, head_stride, 1.0f);
}

void dsa_cpu_rope_backward(float *dx, const float *cos_t, const float *sin_t, int64_t n, int64_t seq_len,
                           int64_t heads, int64_t rope_dim, int64_t row_stride, int64_t head_stride) {
    rotate(dx, cos_t, sin_t, n, seq_len, heads, rope_dim, row_stride, head_stride, -1.0f);
}
