/* elementwise.c: SwiGLU (the FFN activation, config hidden_act "silu", DSA-SPEC §2) and
 * the vector helpers of the CPU backend (kernels/backend.h).
 *
 *   SwiGLU: out = silu(g) · u,  silu(g) = g · σ(g);
 *           du = dout · g · σ(g),  dg = dout · u · σ(g) · (1 + g · (1 − σ(g))).
 *   σ(g) from e = exp(−|g|) ∈ (0, 1]: σ = 1/(1+e) for g ≥ 0, e/(1+e) otherwise, so no
 *   exponential ever overflows (g = ±100 gives 0 or g, not NaN).
 *
 * Every loop is elementwise, vectorized (`omp simd`, dsa_vexpf of kernels/rules/exp.h) and
 * split over threads in contiguous ranges, so results do not depend on the thread count.
 * NOTE: `omp simd` (not `restrict`) tells the compiler there is no loop-carried
 * dependence: an output may therefore be the very same array as an input (add(y, y),
 * swiglu in place), which `restrict` would make undefined.
 *
 * sum_squares adds fixed 4096-element blocks in double over 16 fixed lanes, then the
 * block sums in order: the same bits for every thread count, ISA and alignment.
 */
#include <math.h>

#include "kernels/cpu/ops.h"
#include "kernels/rules/exp.h"

/* Below this many elements a loop stays on the calling thread. */
enum { PAR_MIN = 1 << 15 };

static inline float sigmoid(float g) {
    const float e = dsa_vexpf(-fabsf(g));
    const float inv = 1.0f / (1.0f + e);
    return g >= 0.0f ? inv : e * inv;
}

void dsa_cpu_swiglu_forward(float *out, const float *gate, const float *up, int64_t count) {
#pragma omp parallel for simd schedule(static) if (parallel : count > PAR_MIN)
    for (int64_t i = 0; i < count; i++) out[i] = gate[i] * sigmoid(gate[i]) * up[i];
}

void dsa_cpu_swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate, const float *up,
                             int64_t count) {
#pragma omp parallel for simd schedule(static) if (parallel : count > PAR_MIN)
    for (int64_t i = 0; i < count; i++) {
        const float g = gate[i], u = up[i], d = dout[i], s = sigmoid(g);
        dup[i] = d * g * s;
        dgate[i] = d * u * s * (1.0f + g * (1.0f - s));
    }
}

enum { SS_BLOCK = 4096, SS_LANES = 16, SS_BATCH = 256 };

/* Σ x² of one block in double: lane k takes the elements ≡ k (mod 16) of the block. */
static double block_sum_squares(const float *x, int64_t len) {
    double acc[SS_LANES] = {0};
    int64_t j = 0;
    for (; j + SS_LANES <= len; j += SS_LANES)
#pragma omp simd
        for (int k = 0; k < SS_LANES; k++) acc[k] += (double)x[j + k] * (double)x[j + k];
    for (int k = 0; j + k < len; k++) acc[k] += (double)x[j + k] * (double)x[j + k];
    double s = 0;
    for (int k = 0; k < SS_LANES; k++) s += acc[k];
    return s;
}

double dsa_cpu_sum_squares(const float *x, int64_t count) {
    const int64_t blocks = (count + SS_BLOCK - 1) / SS_BLOCK;
    double total = 0;
    /* SS_BATCH blocks at a time (a bounded stack buffer), block sums added in order. */
    for (int64_t b0 = 0; b0 < blocks; b0 += SS_BATCH) {
        double part[SS_BATCH];
        const int64_t nb = blocks - b0 < SS_BATCH ? blocks - b0 : SS_BATCH;
#pragma omp parallel for schedule(static) if (nb > 4)
        for (int64_t b = 0; b < nb; b++) {
            const int64_t i0 = (b0 + b) * SS_BLOCK, i1 = i0 + SS_BLOCK < count ? i0 + SS_BLOCK : count;
            part[b] = block_sum_squares(x + i0, i1 - i0);
        }
        for (int64_t b = 0; b < nb; b++) total += part[b];
    }
    return total;
}

void dsa_cpu_scale(float *x, float a, int64_t count) {
#pragma omp parallel for simd schedule(static) if (parallel : count > PAR_MIN)
    for (int64_t i = 0; i < count; i++) x[i] *= a;
}

void dsa_cpu_add(float *y, const float *x, int64_t count) {
#pragma omp parallel for simd schedule(static) if (parallel : count > PAR_MIN)
    for (int64_t i = 0; i < count; i++) y[i] += x[i];
}
