/* rope.c: YaRN rotary frequencies and the interleaved RoPE of MLA (DSA-SPEC §4.3, §4.4).
 *
 * Frequencies follow the reference in fp32: f_i = 1 / θ^(2i/d); with YaRN the ramp
 * between the bounds low/high (corr(β_fast), corr(β_slow)) blends f_i with f_i / F.
 * Angles are fp32(t · f'_i); cos and sin are taken in double of that fp32 angle and
 * rounded once. The rotation pairs (2i, 2i+1) (GPT-J layout, as MLA's qR and kR); the
 * backward is the rotation by −φ.
 */
#include <math.h>

#include "kernels/cpu/ops.h"

void dsa_rope_frequencies(float *freq, int64_t rope_dim, double theta, const char *scaling_type, double factor,
                          int64_t original_max_pos, double beta_fast, double beta_slow) {
    const int64_t half = rope_dim / 2;
    for (int64_t i = 0; i < half; i++) freq[i] = 1.0f / powf((float)theta, (float)(2 * i) / (float)rope_dim);
    if (!scaling_type || !scaling_type[0] || factor <= 1.0) return;
    const double d = (double)rope_dim, denom = 2.0 * log(theta);
    double low = floor(d * log((double)original_max_pos / (2 * M_PI * beta_fast)) / denom);
    double high = ceil(d * log((double)original_max_pos / (2 * M_PI * beta_slow)) / denom);
    if (low < 0) low = 0;
    if (high > d - 1) high = d - 1;
    if (low == high) high += 0.001;
    for (int64_t i = 0; i < half; i++) {
        float ramp = (float)(((double)i - low) / (high - low));
        ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
        freq[i] = freq[i] * (1.0f - ramp) + (freq[i] / (float)factor) * ramp;
    }
}

void dsa_rope_tables(float *cos_t, float *sin_t, const float *freq, int64_t seq_len, int64_t rope_dim) {
    const int64_t half = rope_dim / 2;
    for (int64_t t = 0; t < seq_len; t++)
        for (int64_t i = 0; i < half; i++) {
            float phi = (float)t * freq[i];
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
                float a = v[2 * i], b = v[2 * i + 1], si = sign * s[i];
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
