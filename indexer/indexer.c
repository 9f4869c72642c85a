/* indexer.c: the lightning indexer's forward and backward (indexer.h; DSA-SPEC §5, §7)
 * and its score tiles. */
#include "indexer/indexer.h"

#include <math.h>
#include <string.h>

#include "core/mem.h"
#include "indexer/fp8.h"
#include "indexer/hadamard.h"

int64_t dsa_indexer_acts_floats(const DsaIndexerShape *s) {
    const int64_t N = s->batch * s->seq_len;
    return N * s->heads * s->head_dim + 2 * N * s->head_dim + N * s->heads + N;
}

void dsa_indexer_acts_carve(DsaIndexerActs *a, float *buf, const DsaIndexerShape *s) {
    const int64_t N = s->batch * s->seq_len;
    a->q = buf;
    a->k = a->q + N * s->heads * s->head_dim;
    a->k_norm = a->k + N * s->head_dim;
    a->w = a->k_norm + N * s->head_dim;
    a->k_rstd = a->w + N * s->heads;
}

void dsa_rope_neox(float *x, const float *cos, const float *sin, int64_t n, int64_t seq_len, int64_t heads,
                   int64_t dim, int64_t rope_dim, bool inverse) {
    const int64_t half = rope_dim / 2;
    const float sign = inverse ? -1.0f : 1.0f;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < n; r++) {
        const float *c = cos + (r % seq_len) * half, *sn = sin + (r % seq_len) * half;
        for (int64_t h = 0; h < heads; h++) {
            float *v = x + (r * heads + h) * dim;
            for (int64_t i = 0; i < half; i++) {
                /* §4.4 half-split: y_i = v_i cos − v_{i+half} sin, y_{i+half} = v_i sin + v_{i+half} cos */
                float a = v[i], b = v[i + half], si = sign * sn[i];
                v[i] = a * c[i] - b * si;
                v[i + half] = a * si + b * c[i];
            }
        }
    }
}

/* Hadamard then (optionally) the FP8 round trip of `count` vectors of width d. */
static void rotate_and_quantize(float *v, int64_t count, int64_t d, bool fp8) {
    const int64_t g = dsa_fp8_group_size(d);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < count; i++) {
        float *row = v + i * d;
        dsa_hadamard(row, d);
        if (fp8) {
            float scales[64];
            DSA_ASSERT(d / g <= 64);
            dsa_fp8_quantize(NULL, scales, row, row, d, g);
        }
    }
}

void dsa_indexer_forward(DsaIndexerActs *a, const float *x, const float *cq, const DsaIndexerWeights *wt,
                         const DsaIndexerShape *s, const float *rope_cos, const float *rope_sin,
                         const DsaBackend *be) {
    const int64_t N = s->batch * s->seq_len, HI = s->heads, dI = s->head_dim;
    /* §5 steps 1, 4, 5, 6: q from the query latent, rotary part rotated, Hadamard, FP8 */
    be->linear_forward(a->q, cq, wt->wq_b, N, s->q_in, HI * dI);
    dsa_rope_neox(a->q, rope_cos, rope_sin, N, s->seq_len, HI, dI, s->rope_dim, false);
    rotate_and_quantize(a->q, N * HI, dI, s->fp8);
    /* steps 2-6 for k: projection, LayerNorm with bias, RoPE, Hadamard, FP8 */
    be->linear_forward(a->k, x, wt->wk, N, s->x_in, dI);
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; n++) {
        float *k = a->k + n * dI, *kn = a->k_norm + n * dI;
        double mean = 0, var = 0;
        for (int64_t i = 0; i < dI; i++) mean += k[i];
        mean /= (double)dI;
        for (int64_t i = 0; i < dI; i++) var += ((double)k[i] - mean) * ((double)k[i] - mean);
        var /= (double)dI; /* biased variance, as torch's LayerNorm */
        float rstd = (float)(1.0 / sqrt(var + (double)s->eps));
        a->k_rstd[n] = rstd;
        for (int64_t i = 0; i < dI; i++) {
            kn[i] = (float)((double)k[i] - mean) * rstd;
            k[i] = wt->k_norm_weight[i] * kn[i] + wt->k_norm_bias[i];
        }
    }
    dsa_rope_neox(a->k, rope_cos, rope_sin, N, s->seq_len, 1, dI, s->rope_dim, false);
    rotate_and_quantize(a->k, N, dI, s->fp8);
    /* step 7: head weights from x */
    be->linear_forward(a->w, x, wt->weights_proj, N, s->x_in, HI);
}

void dsa_indexer_backward(const DsaIndexerGrads *g, float *dq, float *dk, const float *dw, const DsaIndexerActs *a,
                          const float *x, const float *cq, const DsaIndexerWeights *wt, const DsaIndexerShape *s,
                          const float *rope_cos, const float *rope_sin, const DsaBackend *be) {
    const int64_t N = s->batch * s->seq_len, HI = s->heads, dI = s->head_dim;
    /* §7 steps 1-3: straight-through FP8 (identity), Hadamard (its own transpose), RoPE⁻¹ */
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < N * HI; i++) dsa_hadamard(dq + i * dI, dI);
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; n++) dsa_hadamard(dk + n * dI, dI);
    dsa_rope_neox(dq, rope_cos, rope_sin, N, s->seq_len, HI, dI, s->rope_dim, true);
    dsa_rope_neox(dk, rope_cos, rope_sin, N, s->seq_len, 1, dI, s->rope_dim, true);
    /* step 4: LayerNorm. γ, β gradients summed over tokens in order (deterministic). */
    if (g->k_norm_weight || g->k_norm_bias) {
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < dI; i++) {
            double gw = 0, gb = 0;
            for (int64_t n = 0; n < N; n++) {
                gw += (double)dk[n * dI + i] * a->k_norm[n * dI + i];
                gb += dk[n * dI + i];
            }
            if (g->k_norm_weight) g->k_norm_weight[i] += (float)gw;
            if (g->k_norm_bias) g->k_norm_bias[i] += (float)gb;
        }
    }
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; n++) {
        float *d = dk + n * dI;
        const float *kn = a->k_norm + n * dI;
        double mean_dn = 0, mean_dn_n = 0;
        for (int64_t i = 0; i < dI; i++) {
            double dn = (double)d[i] * wt->k_norm_weight[i];
            mean_dn += dn;
            mean_dn_n += dn * kn[i];
        }
        mean_dn /= (double)dI, mean_dn_n /= (double)dI;
        for (int64_t i = 0; i < dI; i++) {
            double dn = (double)d[i] * wt->k_norm_weight[i];
            d[i] = (float)((dn - mean_dn - kn[i] * mean_dn_n) * a->k_rstd[n]);
        }
    }
    /* step 5: the three projections; no input gradient (detached) */
    if (g->wq_b) be->linear_backward(NULL, g->wq_b, dq, cq, wt->wq_b, N, s->q_in, HI * dI);
    if (g->wk) be->linear_backward(NULL, g->wk, dk, x, wt->wk, N, s->x_in, dI);
    if (g->weights_proj) be->linear_backward(NULL, g->weights_proj, dw, x, wt->weights_proj, N, s->x_in, HI);
}
