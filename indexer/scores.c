/* scores.c: the indexer's score tiles (indexer.h dsa_indexer_score_tile; DSA-SPEC §5.3)
 * and the per-thread tile scratch shared by top-k and the KL passes (internal.h).
 *
 * Dot products are plain loops with a fixed reduction order (vectorized across keys), so
 * a score is the same bits whatever tile it is computed in: top-k and the KL passes
 * agree exactly on which keys are selected.
 */
#include <string.h>

#include "core/mem.h"
#include "indexer/indexer.h"
#include "indexer/internal.h"
#include "kernels/rules/exp.h"
#include "kernels/rules/kl.h"


/* out[r][c] = Σ_d A[r][d] · BT[d][c] for r < m, c < n (BT stride ld, out stride ld). */
void dsa_idx_dots(float *out, int64_t ldo, const float *A, int64_t lda, const float *BT, int64_t ld, int64_t m,
                  int64_t n, int64_t d) {
    /* Register blocks of 4 rows × 16 columns (the compiler keeps acc in vector registers);
     * every output is still the sum over e in order 0 … d−1, so edges computed by the
     * plain loop below give the same bits as the blocked interior. */
    enum { RB = 4, CB = 2 * IDX_VW };
    int64_t r = 0;
    for (; r + RB <= m; r += RB) {
        int64_t c = 0;
        for (; c + CB <= n; c += CB) {
            IdxVec acc[RB][2];
            for (int rr = 0; rr < RB; rr++) acc[rr][0] = acc[rr][1] = idx_vsplat(0.0f);
            for (int64_t e = 0; e < d; e++) {
                const IdxVec b0 = idx_vload(BT + e * ld + c), b1 = idx_vload(BT + e * ld + c + IDX_VW);
                for (int rr = 0; rr < RB; rr++) {
                    const IdxVec x = idx_vsplat(A[(r + rr) * lda + e]);
                    acc[rr][0] = idx_vfma(x, b0, acc[rr][0]);
                    acc[rr][1] = idx_vfma(x, b1, acc[rr][1]);
                }
            }
            for (int rr = 0; rr < RB; rr++) {
                idx_vstore(out + (r + rr) * ldo + c, acc[rr][0]);
                idx_vstore(out + (r + rr) * ldo + c + IDX_VW, acc[rr][1]);
            }
        }
        for (int64_t rr = r; rr < r + RB && c < n; rr++) {
            float *o = out + rr * ldo;
            for (int64_t cc = c; cc < n; cc++) o[cc] = 0.0f;
            for (int64_t e = 0; e < d; e++)
                for (int64_t cc = c; cc < n; cc++) o[cc] = fmaf(A[rr * lda + e], BT[e * ld + cc], o[cc]);
        }
    }
    for (; r < m; r++) {
        float *o = out + r * ldo;
        const float *a = A + r * lda;
        for (int64_t c = 0; c < n; c++) o[c] = 0.0f;
        for (int64_t e = 0; e < d; e++) {
            const float x = a[e], *bt = BT + e * ld;
            for (int64_t c = 0; c < n; c++) o[c] = fmaf(x, bt[c], o[c]);
        }
    }
}

/* BT[d][c] = B[c][d] for c < n (B row stride ldb). */
void dsa_idx_keys_transposed(float *dst, const float *src, int64_t batch, int64_t L, int64_t heads, int64_t d,
                             int64_t row) {
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t b = 0; b < batch; b++)
        for (int64_t h = 0; h < heads; h++) {
            float *o = dst + (b * heads + h) * d * L;
            /* blocks of 16 tokens keep the strided reads and writes in cache lines */
            for (int64_t t0 = 0; t0 < L; t0 += 16)
                for (int64_t e = 0; e < d; e++)
                    for (int64_t t = t0; t < t0 + 16 && t < L; t++) o[e * L + t] = src[(b * L + t) * row + h * d + e];
        }
}

void dsa_idx_transpose(float *BT, int64_t ld, const float *B, int64_t ldb, int64_t n, int64_t d) {
    for (int64_t c = 0; c < n; c++)
        for (int64_t e = 0; e < d; e++) BT[e * ld + c] = B[c * ldb + e];
}


bool dsa_idx_tile_alloc(DsaIdxTile *t, const DsaIndexerShape *s, int64_t heads, int64_t qk_dim) {
    int64_t dmax = s->head_dim > qk_dim ? s->head_dim : qk_dim;
    int64_t hmax = heads > s->heads ? heads : s->heads;
    int64_t et = KL_BQ * s->heads * (KL_BK > s->head_dim ? KL_BK : s->head_dim);
    t->floats = (size_t)(dmax * KL_BK + KL_BQ * s->heads * KL_BK + 2 * KL_BQ * KL_BK + hmax * KL_BQ * KL_BK + et);
    float *p = dsa_malloc(t->floats * sizeof(float));
    if (!p) return false;
    t->kt = p;
    t->k_t = t->mla_t = NULL;
    t->u = t->kt + dmax * KL_BK;
    t->sc = t->u + KL_BQ * s->heads * KL_BK;
    t->g = t->sc + KL_BQ * KL_BK;
    t->att = t->g + KL_BQ * KL_BK;
    t->et = t->att + hmax * KL_BQ * KL_BK;
    return true;
}

void dsa_idx_tile_free(DsaIdxTile *t) { dsa_free(t->kt, t->floats * sizeof(float)); }

/* Indexer scores and head dots of one tile, with the fixed-order dots above. */
void dsa_idx_score_tile(DsaIdxTile *w, const DsaIndexerActs *a, const DsaIndexerShape *s, int64_t b, int64_t t0,
                       int64_t nq, int64_t s0, int64_t nk) {
    const int64_t HI = s->heads, dI = s->head_dim, L = s->seq_len;
    const float *bt = w->kt;
    int64_t ld = KL_BK;
    if (w->k_t) {
        bt = w->k_t + b * dI * L + s0, ld = L;
    } else {
        dsa_idx_transpose(w->kt, KL_BK, a->k + (b * L + s0) * dI, dI, nk, dI);
    }
    dsa_idx_dots(w->u, KL_BK, a->q + (b * L + t0) * HI * dI, dI, bt, ld, nq * HI, nk, dI);
    for (int64_t i = 0; i < nq; i++) {
        float *row = w->sc + i * KL_BK;
        const float *wt = a->w + (b * L + t0 + i) * HI;
        int64_t c0 = 0;
        for (; c0 + IDX_VW <= nk; c0 += IDX_VW) { /* the same per-element order as the tail */
            IdxVec acc = idx_vsplat(0.0f);
            for (int64_t j = 0; j < HI; j++)
                acc = idx_vfma(idx_vsplat(wt[j]), idx_vrelu(idx_vload(w->u + (i * HI + j) * KL_BK + c0)), acc);
            idx_vstore(row + c0, acc);
        }
        for (int64_t c = c0; c < nk; c++) row[c] = 0.0f;
        for (int64_t j = 0; j < HI; j++) {
            const float *u = w->u + (i * HI + j) * KL_BK;
            for (int64_t c = c0; c < nk; c++) row[c] = fmaf(wt[j], u[c] > 0.0f ? u[c] : 0.0f, row[c]);
        }
        for (int64_t c = 0; c < nk; c++) row[c] = s0 + c <= t0 + i ? s->scale * row[c] : -INFINITY;
    }
}

void dsa_indexer_score_tile(float *scores, float *relu_in, int64_t ld, const DsaIndexerActs *a,
                            const DsaIndexerShape *s, int64_t b, int64_t t0, int64_t nq, int64_t s0, int64_t nk) {
    /* Tiles of any size, computed KL_BQ × KL_BK at a time through the same kernel. */
    DsaIdxTile w;
    DSA_ASSERT(dsa_idx_tile_alloc(&w, s, 1, 1));
    for (int64_t i0 = 0; i0 < nq; i0 += KL_BQ)
        for (int64_t c0 = 0; c0 < nk; c0 += KL_BK) {
            int64_t mq = nq - i0 < KL_BQ ? nq - i0 : KL_BQ, mk = nk - c0 < KL_BK ? nk - c0 : KL_BK;
            dsa_idx_score_tile(&w, a, s, b, t0 + i0, mq, s0 + c0, mk);
            for (int64_t i = 0; i < mq; i++) {
                memcpy(scores + (i0 + i) * ld + c0, w.sc + i * KL_BK, (size_t)mk * sizeof(float));
                if (relu_in)
                    for (int64_t j = 0; j < s->heads; j++)
                        memcpy(relu_in + ((i0 + i) * s->heads + j) * ld + c0, w.u + (i * s->heads + j) * KL_BK,
                               (size_t)mk * sizeof(float));
            }
        }
    dsa_idx_tile_free(&w);
}


void dsa_idx_log_target(float *logp, const float *att, int64_t head_stride, int64_t heads, const float *lse,
                        int64_t lse_stride, float scale, int64_t n) {
    float m[KL_BK], se[KL_BK], x[KL_BK];
    DSA_ASSERT(n <= KL_BK);
    for (int64_t c = 0; c < n; c++) m[c] = -INFINITY, se[c] = 0.0f;
    for (int64_t h = 0; h < heads; h++) {
        const float *ah = att + h * head_stride, lh = lse[h * lse_stride];
#pragma omp simd
        for (int64_t c = 0; c < n; c++) {
            const float v = dsa_kl_head_logit(scale, ah[c], lh);
            m[c] = v > m[c] ? v : m[c]; /* (a ternary, not fmaxf: it vectorizes) */
        }
    }
    for (int64_t h = 0; h < heads; h++) {
        const float *ah = att + h * head_stride, lh = lse[h * lse_stride];
        for (int64_t c = 0; c < n; c++) x[c] = dsa_kl_head_logit(scale, ah[c], lh) - m[c];
#pragma omp simd
        for (int64_t c = 0; c < n; c++) x[c] = dsa_vexpf(x[c]);
        for (int64_t c = 0; c < n; c++) se[c] += x[c];
    }
    const float log_h = logf((float)heads);
    for (int64_t c = 0; c < n; c++) logp[c] = dsa_kl_log_target(m[c], se[c], log_h);
}

void dsa_idx_zero_grads(float *dq, float *dk, float *dw, const DsaIndexerShape *s) {
    const int64_t N = s->batch * s->seq_len;
    memset(dq, 0, (size_t)(N * s->heads * s->head_dim) * sizeof(float));
    memset(dk, 0, (size_t)(N * s->head_dim) * sizeof(float));
    memset(dw, 0, (size_t)(N * s->heads) * sizeof(float));
}
