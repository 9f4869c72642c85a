/* elementwise.c: SwiGLU and the vector helpers of the backend (kernels/backend.h).
 *
 * SwiGLU: out = silu(g) · u, silu(g) = g · σ(g);
 *   du = dout · silu(g),   dg = dout · u · σ(g) · (1 + g · (1 − σ(g))).
 * sum_squares adds fixed 4096-element blocks in double, then the blocks in order, so it
 * returns the same bits for every thread count.
 */
#include <math.h>

#include "kernels/cpu/ops.h"

static inline float sigmoidf(float g) { return 1.0f / (1.0f + expf(-g)); }

void dsa_cpu_swiglu_forward(float *out, const float *gate, const float *up, int64_t count) {
#pragma omp parallel for schedule(static) if (count > 65536)
    for (int64_t i = 0; i < count; i++) out[i] = gate[i] * sigmoidf(gate[i]) * up[i];
}

void dsa_cpu_swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate, const float *up,
                             int64_t count) {
#pragma omp parallel for schedule(static) if (count > 65536)
    for (int64_t i = 0; i < count; i++) {
        float g = gate[i], s = sigmoidf(g);
        dup[i] = dout[i] * g * s;
        dgate[i] = dout[i] * up[i] * s * (1.0f + g * (1.0f - s));
    }
}

double dsa_cpu_sum_squares(const float *x, int64_t count) {
    enum { BLOCK = 4096 };
    int64_t blocks = (count + BLOCK - 1) / BLOCK;
    double total = 0;
    /* Blocks are summed in order: one partial per block, no dependence on threads. */
    for (int64_t b0 = 0; b0 < blocks; b0 += 256) {
        double part[256];
        int64_t nb = blocks - b0 < 256 ? blocks - b0 : 256;
#pragma omp parallel for schedule(static) if (nb > 4)
        for (int64_t b = 0; b < nb; b++) {
            int64_t i0 = (b0 + b) * BLOCK, i1 = i0 + BLOCK < count ? i0 + BLOCK : count;
            double s = 0;
            for (int64_t i = i0; i < i1; i++) s += (double)x[i] * x[i];
            part[b] = s;
        }
        for (int64_t b = 0; b < nb; b++) total += part[b];
    }
    return total;
}

void dsa_cpu_scale(float *x, float a, int64_t count) {
#pragma omp parallel for schedule(static) if (count > 65536)
    for (int64_t i = 0; i < count; i++) x[i] *= a;
}

void dsa_cpu_add(float *y, const float *x, int64_t count) {
#pragma omp parallel for schedule(static) if (count > 65536)
    for (int64_t i = 0; i < count; i++) y[i] += x[i];
}
