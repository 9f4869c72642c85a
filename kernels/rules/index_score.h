/* index_score.h: the order of the arithmetic of one indexer score (DSA-SPEC §5.3), one
 * definition for the CPU score tiles (indexer/scores.c, which vectorizes across keys, so
 * every lane computes exactly this) and the CUDA score kernels:
 *
 *   u_j = Σ_e q̂_j[e] · k̂[e]      one fused multiply-add per e, e = 0 … d_I − 1, from 0
 *   acc = Σ_j w_j · ReLU(u_j)      one fused multiply-add per head, j = 0 … H_I − 1, from 0
 *   I   = c · acc                  (−∞ for a key after the query: causal mask)
 *
 * With the same q̂, k̂, w the device gives the same bits as the CPU, so both select the same
 * top-k keys, ties included. (On a CPU build without FMA, dsa_fma_rule rounds the product
 * first and the CPU agrees with itself only, hd.h.)
 */
#ifndef DSA_KERNELS_RULES_INDEX_SCORE_H
#define DSA_KERNELS_RULES_INDEX_SCORE_H

#include "kernels/rules/hd.h"

/* u = Σ_e q[e]·k[e] in order (q, k contiguous, d values). */
static inline DSA_HD float dsa_index_head_dot(const float *q, const float *k, int64_t d) {
    float acc = 0.0f;
    for (int64_t e = 0; e < d; e++) acc = dsa_fma_rule(q[e], k[e], acc);
    return acc;
}

/* One step of the head sum: acc + w · ReLU(u). */
static inline DSA_HD float dsa_index_head_add(float acc, float w, float u) {
    return dsa_fma_rule(w, u > 0.0f ? u : 0.0f, acc);
}

/* I_t,s of query row q [heads][d] with head weights w [heads] against key k [d]; scale c;
 * −∞ when the key comes after the query (s > t). */
static inline DSA_HD float dsa_index_score(const float *q, const float *w, const float *k, int64_t heads, int64_t d,
                                           float scale, int64_t t, int64_t s) {
    if (s > t) return -INFINITY;
    float acc = 0.0f;
    for (int64_t j = 0; j < heads; j++) acc = dsa_index_head_add(acc, w[j], dsa_index_head_dot(q + j * d, k, d));
    return dsa_rn_mul(scale, acc);
}

#endif
