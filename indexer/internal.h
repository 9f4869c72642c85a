/* internal.h: small helpers shared by the indexer's .c files (not part of the API). */
#ifndef DSA_INDEXER_INTERNAL_H
#define DSA_INDEXER_INTERNAL_H

#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "indexer/indexer.h"

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

/* ---- vectors for the score kernels: explicit FMA (-std=c11 does not contract), so a
 * vector lane computes exactly what fmaf computes for that element. ---- */
#if defined(__AVX512F__)
enum { IDX_VW = 16 };
typedef __m512 IdxVec;
static inline IdxVec idx_vload(const float *p) { return _mm512_loadu_ps(p); }
static inline void idx_vstore(float *p, IdxVec v) { _mm512_storeu_ps(p, v); }
static inline IdxVec idx_vsplat(float x) { return _mm512_set1_ps(x); }
static inline IdxVec idx_vfma(IdxVec a, IdxVec b, IdxVec c) { return _mm512_fmadd_ps(a, b, c); }
static inline IdxVec idx_vrelu(IdxVec a) { return _mm512_max_ps(a, _mm512_setzero_ps()); }
#elif defined(__AVX2__) && defined(__FMA__)
enum { IDX_VW = 8 };
typedef __m256 IdxVec;
static inline IdxVec idx_vload(const float *p) { return _mm256_loadu_ps(p); }
static inline void idx_vstore(float *p, IdxVec v) { _mm256_storeu_ps(p, v); }
static inline IdxVec idx_vsplat(float x) { return _mm256_set1_ps(x); }
static inline IdxVec idx_vfma(IdxVec a, IdxVec b, IdxVec c) { return _mm256_fmadd_ps(a, b, c); }
static inline IdxVec idx_vrelu(IdxVec a) { return _mm256_max_ps(a, _mm256_setzero_ps()); }
#else
enum { IDX_VW = 4 };
typedef struct {
    float v[4];
} IdxVec;
static inline IdxVec idx_vload(const float *p) { return (IdxVec){{p[0], p[1], p[2], p[3]}}; }
static inline void idx_vstore(float *p, IdxVec v) { p[0] = v.v[0], p[1] = v.v[1], p[2] = v.v[2], p[3] = v.v[3]; }
static inline IdxVec idx_vsplat(float x) { return (IdxVec){{x, x, x, x}}; }
static inline IdxVec idx_vfma(IdxVec a, IdxVec b, IdxVec c) {
    for (int i = 0; i < 4; i++) c.v[i] = fmaf(a.v[i], b.v[i], c.v[i]);
    return c;
}
static inline IdxVec idx_vrelu(IdxVec a) {
    for (int i = 0; i < 4; i++) a.v[i] = a.v[i] > 0.0f ? a.v[i] : 0.0f;
    return a;
}
#endif

/* Tile sizes of the score passes: query rows × keys. */
enum { KL_BQ = 16, KL_BK = 128 };

/* Per-thread tile scratch (dsa_idx_tile_alloc). */
typedef struct {
    float *kt;  /* [max(d_I, dqk)][KL_BK] transposed key tile */
    float *u;   /* [KL_BQ · H_I][KL_BK] head dots u = q̂ · k̂ */
    float *sc;  /* [KL_BQ][KL_BK] scores I */
    float *att; /* [max(H, H_I)][KL_BQ][KL_BK] MLA logits, then E */
    float *g;   /* [KL_BQ][KL_BK] G = ∂L/∂I */
    float *et;  /* [KL_BK][KL_BQ · H_I] Eᵀ, then [KL_BQ · H_I][d_I] partial ∂q̂ */
    size_t floats;
    /* optional, shared and read-only: every key pre-transposed once per call
     * (dsa_idx_keys_transposed), so tiles need no transpose of their own */
    const float *k_t;   /* [batch][d_I][L] k̂ */
    const float *mla_t; /* [batch][H][d_qk][L] MLA keys (dense KL) */
} DsaIdxTile;

/* Scratch for tiles of an indexer `s` and a target attention of `heads` × `qk_dim`. */
bool dsa_idx_tile_alloc(DsaIdxTile *t, const DsaIndexerShape *s, int64_t heads, int64_t qk_dim);
void dsa_idx_tile_free(DsaIdxTile *t);
/* out[r][c] = Σ_e A[r][e] · BT[e][c] (r < m, c < n, e < d in order; strides ldo, lda, ld). */
void dsa_idx_dots(float *out, int64_t ldo, const float *A, int64_t lda, const float *BT, int64_t ld, int64_t m,
                  int64_t n, int64_t d);
/* BT[d][c] = B[c][d] for c < n (B row stride ldb). */
void dsa_idx_transpose(float *BT, int64_t ld, const float *B, int64_t ldb, int64_t n, int64_t d);
/* dst[b][h][e][t] = src[(b·L + t)·row + h·d + e]: keys of `heads` heads of width d per
 * token, transposed per sequence and head (parallel over sequences and heads). */
void dsa_idx_keys_transposed(float *dst, const float *src, int64_t batch, int64_t L, int64_t heads, int64_t d,
                             int64_t row);

/* The target's log p over n keys of one query row (DSA-SPEC §6.1):
 *   logp[c] = m + log Σ_h exp(τ·att_h[c] − lse_h − m) − ln H,  m = max_h (τ·att_h[c] − lse_h),
 * with att_h = att + h·head_stride (raw q·k dots) and lse_h = lse[h·lse_stride]. Key loops
 * innermost, so they vectorize. */
void dsa_idx_log_target(float *logp, const float *att, int64_t head_stride, int64_t heads, const float *lse,
                        int64_t lse_stride, float scale, int64_t n);

/* Zero the three score-side gradient buffers ∂q̂ [N, H_I, d_I], ∂k̂ [N, d_I], ∂w [N, H_I]. */
void dsa_idx_zero_grads(float *dq, float *dk, float *dw, const DsaIndexerShape *s);

/* Scores (t->sc) and head dots (t->u) of rows t0..t0+nq and keys s0..s0+nk of sequence b
 * (nq <= KL_BQ, nk <= KL_BK); −∞ where s > t. */
void dsa_idx_score_tile(DsaIdxTile *t, const DsaIndexerActs *a, const DsaIndexerShape *s, int64_t b, int64_t t0,
                        int64_t nq, int64_t s0, int64_t nk);

/* Σ a_i b_i in a fixed order (the same bits wherever it is called in one build): two
 * vector accumulators over chunks of 2·IDX_VW, the tail into the same lanes, then a
 * pairwise tree over the 2·IDX_VW lanes. */
static inline float dsa_idx_dot(const float *a, const float *b, int64_t n) {
    enum { W = 2 * IDX_VW };
    IdxVec acc0 = idx_vsplat(0.0f), acc1 = idx_vsplat(0.0f);
    int64_t i = 0;
    for (; i + W <= n; i += W) {
        acc0 = idx_vfma(idx_vload(a + i), idx_vload(b + i), acc0);
        acc1 = idx_vfma(idx_vload(a + i + IDX_VW), idx_vload(b + i + IDX_VW), acc1);
    }
    float lane[W];
    idx_vstore(lane, acc0);
    idx_vstore(lane + IDX_VW, acc1);
    for (int j = 0; i < n; i++, j++) lane[j] = fmaf(a[i], b[i], lane[j]);
    for (int w = W / 2; w >= 1; w /= 2)
        for (int j = 0; j < w; j++) lane[j] += lane[j + w];
    return lane[0];
}

#endif
