/* internal.h: small helpers shared by the indexer's .c files (not part of the API). */
#ifndef DSA_INDEXER_INTERNAL_H
#define DSA_INDEXER_INTERNAL_H

#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "indexer/indexer.h"

/* Tile sizes of the score passes: query rows × keys. */
enum { KL_BQ = 16, KL_BK = 128 };

/* Per-thread tile scratch (dsa_idx_tile_alloc). */
typedef struct {
    float *kt;  /* [max(d_I, dqk)][KL_BK] transposed key tile */
    float *u;   /* [KL_BQ · H_I][KL_BK] head dots u = q̂ · k̂ */
    float *sc;  /* [KL_BQ][KL_BK] scores I */
    float *att; /* [max(H, H_I)][KL_BQ][KL_BK] MLA logits, then E */
    float *g;   /* [KL_BQ][KL_BK] G = ∂L/∂I */
    size_t floats;
} DsaIdxTile;

/* Scratch for tiles of an indexer `s` and a target attention of `heads` × `qk_dim`. */
bool dsa_idx_tile_alloc(DsaIdxTile *t, const DsaIndexerShape *s, int64_t heads, int64_t qk_dim);
void dsa_idx_tile_free(DsaIdxTile *t);
/* out[r][c] = Σ_d A[r][d] · BT[d][c] (r < m, c < n; out and BT stride ld), d in order. */
void dsa_idx_dots(float *out, int64_t ld, const float *A, int64_t lda, const float *BT, int64_t m, int64_t n,
                  int64_t d);
/* BT[d][c] = B[c][d] for c < n (B row stride ldb). */
void dsa_idx_transpose(float *BT, int64_t ld, const float *B, int64_t ldb, int64_t n, int64_t d);
/* Scores (t->sc) and head dots (t->u) of rows t0..t0+nq and keys s0..s0+nk of sequence b
 * (nq <= KL_BQ, nk <= KL_BK); −∞ where s > t. */
void dsa_idx_score_tile(DsaIdxTile *t, const DsaIndexerActs *a, const DsaIndexerShape *s, int64_t b, int64_t t0,
                        int64_t nq, int64_t s0, int64_t nk);

/* Σ a_i b_i in index order (fixed order: the same bits wherever it is called). */
static inline float dsa_idx_dot(const float *a, const float *b, int64_t n) {
    float s = 0.0f;
    for (int64_t i = 0; i < n; i++) s = fmaf(a[i], b[i], s);
    return s;
}

#endif
