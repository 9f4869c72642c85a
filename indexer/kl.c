/* kl.c: the indexer's training losses and their gradients w.r.t. the scores (indexer.h;
 * DSA-SPEC §6, §7, §8).
 *
 * Per query row t with key support U_t:
 *   log p_t,s = logsumexp_h(a_h,t,s − lse_h,t) − ln H      target: head-mean attention
 *   log π_t,s = I_t,s − lseI_t                             prediction: softmax of scores
 *   KL_t = Σ_s p (log p − log π),   ∂KL_t/∂I_t,s = π − p    (§6.1, log space, no epsilon)
 * then through I = c Σ_j w_j ReLU(u_j), u_j = q̂_j · k̂_s (§7):
 *   ∂w_t,j += c Σ_s G ReLU(u),  E_t,j,s = c G w_t,j [u > 0],
 *   ∂q̂_t,j += Σ_s E k̂_s,        ∂k̂_s += Σ_t,j E q̂_t,j.
 *
 * Stage 1 (dense, §8.1) runs three tiled passes so no L × L buffer exists and every sum
 * has a fixed order: P1 row statistics lseI_t; P2 row-major: KL, captured mass, ∂w, ∂q̂;
 * P3 key-major: ∂k̂ (recomputing the tile, as FlashAttention-2's backward does).
 * Stage 2 (sparse, §8.2 F3) walks each row's selected keys, then a key-major pass over
 * the transposed selection (counting sort by key) sums ∂k̂.
 *
 * The dot products here are plain loops with a fixed reduction order, so a score is the
 * same bits whatever tile it is computed in (top-k and the KL passes agree exactly).
 */
#include <math.h>
#include <string.h>

#include "core/mem.h"
#include "indexer/indexer.h"
#include "indexer/internal.h"
#include "kernels/rules/exp.h" /* dsa_vexpf */
#include "kernels/rules/kl.h"
#include "kernels/rules/topk_order.h"

/* ---- dense (stage 1) ----------------------------------------------------------------- */

typedef struct {
    const DsaIndexerActs *a;
    const DsaIndexerShape *s;
    const DsaDenseTarget *tg;
    const float *lse_i;       /* [N] lseI_t (after P1) */
    const float *thr_score;   /* [N] score of the last selected key, or NULL (no mass) */
    const int32_t *thr_index; /* [N] its index */
    float grad_scale;
} DenseCtx;

/* P2/P3 tile: scores, MLA logits, G (into w->g) and E (into w->att, H_I rows per query).
 * With row_kl / row_mass, adds each row's KL and captured-mass terms. */
static void dense_tile(DsaIdxTile *w, const DenseCtx *cx, int64_t b, int64_t t0, int64_t nq, int64_t s0, int64_t nk,
                       double *row_kl, double *row_mass) {
    const DsaIndexerShape *s = cx->s;
    const DsaDenseTarget *tg = cx->tg;
    const int64_t L = s->seq_len, H = tg->heads, dqk = tg->qk_dim, HI = s->heads;
    float *att = w->att;
    for (int64_t h = 0; h < H; h++)
        dsa_idx_dots(att + h * KL_BQ * KL_BK, KL_BK, tg->q + (b * L + t0) * H * dqk + h * dqk, H * dqk,
                     w->mla_t + (b * H + h) * dqk * L + s0, L, nq, nk, dqk);
    dsa_idx_score_tile(w, cx->a, s, b, t0, nq, s0, nk);
    for (int64_t i = 0; i < nq; i++) {
        const int64_t t = t0 + i, n = b * L + t;
        const int64_t nv = t - s0 + 1 < nk ? t - s0 + 1 : nk; /* causal keys of this row in the tile */
        const float *lse = tg->lse + b * H * L + t, *sc = w->sc + i * KL_BK;
        const float lse_i = cx->lse_i[n];
        float *g = w->g + i * KL_BK;
        float logp[KL_BK];
        dsa_idx_log_target(logp, att + i * KL_BK, KL_BQ * KL_BK, H, lse, L, tg->scale, nv < 0 ? 0 : nv);
        float p[KL_BK];
#pragma omp simd
        for (int64_t c = 0; c < nv; c++) {
            p[c] = dsa_vexpf(logp[c]);
            g[c] = dsa_kl_grad(cx->grad_scale, dsa_vexpf(dsa_kl_log_pi(sc[c], lse_i)), p[c]);
        }
        double kl = 0, mass = 0;
        for (int64_t c = 0; c < nv; c++) {
            kl += dsa_kl_term(p[c], logp[c], dsa_kl_log_pi(sc[c], lse_i)); /* 0 where p = 0 */
            if (cx->thr_score && dsa_topk_within(sc[c], s0 + c, cx->thr_score[n], cx->thr_index[n])) mass += p[c];
        }
        for (int64_t c = nv < 0 ? 0 : nv; c < nk; c++) g[c] = 0.0f;
        if (row_kl) row_kl[i] += kl;
        if (row_mass) row_mass[i] += mass;
    }
    /* E_t,j,s = c G w_t,j [u > 0], over the attention buffer (no longer needed) */
    float *e = w->att;
    for (int64_t i = 0; i < nq; i++) {
        const float *wt = cx->a->w + (b * L + t0 + i) * HI;
        for (int64_t j = 0; j < HI; j++) {
            const float *u = w->u + (i * HI + j) * KL_BK, *g = w->g + i * KL_BK;
            float *er = e + (i * HI + j) * KL_BK;
            const float cw = s->scale * wt[j];
            for (int64_t c = 0; c < nk; c++) er[c] = cw * g[c] * (float)(u[c] > 0.0f); /* (no branch: vectorizes) */
        }
    }
}

DsaStatus dsa_indexer_kl_dense(DsaIndexerLoss *out, float *dq, float *dk, float *dw, const DsaIndexerActs *a,
                               const DsaIndexerShape *s, const DsaDenseTarget *target, const int32_t *idx,
                               const float *idx_scores, float grad_scale) {
    const int64_t L = s->seq_len, N = s->batch * L, HI = s->heads, dI = s->head_dim, K = s->topk;
    const int64_t qblocks = (L + KL_BQ - 1) / KL_BQ, kblocks = (L + KL_BK - 1) / KL_BK;
    const bool grads = grad_scale != 0.0f;
    size_t stat_bytes = (size_t)N * (2 * sizeof(double) + 2 * sizeof(float) + sizeof(int32_t));
    double *kl_rows = dsa_malloc(stat_bytes);
    if (!kl_rows) DSA_FAIL(DSA_ERR_NOMEM, "indexer KL row statistics: %zu bytes", stat_bytes);
    double *mass_rows = kl_rows + N;
    float *lse_i = (float *)(mass_rows + N);
    float *thr_score = lse_i + N;
    int32_t *thr_index = (int32_t *)(thr_score + N);
    /* the rank threshold of each row: its last selected key (§6.2 metric) */
    for (int64_t n = 0; idx && n < N; n++) {
        int64_t last = K - 1;
        while (last > 0 && idx[n * K + last] < 0) last--;
        thr_score[n] = idx_scores[n * K + last];
        thr_index[n] = idx[n * K + last];
    }
    /* every key transposed once (indexer k̂ and the MLA keys of each head): O(L·d) */
    const int64_t H = target->heads, dqk = target->qk_dim;
    size_t keys_bytes = (size_t)(N * dI + N * H * dqk) * sizeof(float);
    float *k_t = dsa_malloc(keys_bytes);
    if (!k_t) {
        dsa_free(kl_rows, stat_bytes);
        DSA_FAIL(DSA_ERR_NOMEM, "indexer KL transposed keys: %zu bytes", keys_bytes);
    }
    float *mla_t = k_t + N * dI;
    dsa_idx_keys_transposed(k_t, a->k, s->batch, L, 1, dI, dI);
    dsa_idx_keys_transposed(mla_t, target->k, s->batch, L, H, dqk, H * dqk);
    DenseCtx cx = {.a = a, .s = s, .tg = target, .lse_i = lse_i, .thr_score = idx ? thr_score : NULL,
                   .thr_index = thr_index, .grad_scale = grad_scale};
    if (grads) dsa_idx_zero_grads(dq, dk, dw, s);
    int failed = 0;
#pragma omp parallel reduction(+ : failed)
    {
        DsaIdxTile w = {0};
        if (!dsa_idx_tile_alloc(&w, s, target->heads, target->qk_dim)) failed = 1;
        w.k_t = k_t, w.mla_t = mla_t;
        /* P1: lseI_t by online log-sum-exp over the causal key tiles */
#pragma omp for schedule(dynamic, 1)
        for (int64_t job = 0; job < s->batch * qblocks; job++) {
            if (failed) continue;
            const int64_t b = job / qblocks, t0 = (job % qblocks) * KL_BQ, nq = L - t0 < KL_BQ ? L - t0 : KL_BQ;
            float m[KL_BQ], l[KL_BQ];
            for (int64_t i = 0; i < nq; i++) m[i] = -INFINITY, l[i] = 0.0f;
            for (int64_t s0 = 0; s0 < t0 + nq; s0 += KL_BK) {
                const int64_t nk = t0 + nq - s0 < KL_BK ? t0 + nq - s0 : KL_BK;
                dsa_idx_score_tile(&w, a, s, b, t0, nq, s0, nk);
                for (int64_t i = 0; i < nq; i++) {
                    const float *row = w.sc + i * KL_BK;
                    float mx = m[i];
                    for (int64_t c = 0; c < nk; c++) mx = fmaxf(mx, row[c]);
                    float sum = l[i] * expf(m[i] - mx);
                    if (m[i] == -INFINITY) sum = 0.0f;
                    for (int64_t c = 0; c < nk; c++) sum += expf(row[c] - mx);
                    m[i] = mx, l[i] = sum;
                }
            }
            for (int64_t i = 0; i < nq; i++) lse_i[b * L + t0 + i] = m[i] + logf(l[i]);
        }
        /* P2: row-major: KL, captured mass, ∂w and ∂q̂ */
#pragma omp for schedule(dynamic, 1)
        for (int64_t job = 0; job < s->batch * qblocks; job++) {
            if (failed) continue;
            const int64_t b = job / qblocks, t0 = (job % qblocks) * KL_BQ, nq = L - t0 < KL_BQ ? L - t0 : KL_BQ;
            double row_kl[KL_BQ] = {0}, row_mass[KL_BQ] = {0};
            for (int64_t s0 = 0; s0 < t0 + nq; s0 += KL_BK) {
                const int64_t nk = t0 + nq - s0 < KL_BK ? t0 + nq - s0 : KL_BK;
                dense_tile(&w, &cx, b, t0, nq, s0, nk, row_kl, row_mass);
                if (!grads) continue;
                for (int64_t i = 0; i < nq; i++) {
                    const int64_t n = b * L + t0 + i;
                    for (int64_t j = 0; j < HI; j++) {
                        const float *u = w.u + (i * HI + j) * KL_BK, *g = w.g + i * KL_BK;
                        float acc = 0.0f;
                        /* (lanes of a fixed width per build: deterministic, whatever the threads) */
#pragma omp simd reduction(+ : acc)
                        for (int64_t c = 0; c < nk; c++) acc += g[c] * (u[c] > 0.0f ? u[c] : 0.0f);
                        dw[n * HI + j] += s->scale * acc;
                    }
                }
                /* ∂q̂ += E · k̂ over this key tile (one GEMM-shaped product), tiles in key order */
                dsa_idx_dots(w.et, dI, w.att, KL_BK, a->k + (b * L + s0) * dI, dI, nq * HI, dI, nk);
                float *dqb = dq + (b * L + t0) * HI * dI;
                for (int64_t x = 0; x < nq * HI * dI; x++) dqb[x] += w.et[x];
            }
            for (int64_t i = 0; i < nq; i++) kl_rows[b * L + t0 + i] = row_kl[i], mass_rows[b * L + t0 + i] = row_mass[i];
        }
        /* P3: key-major: ∂k̂_s = Σ_t,j E q̂_t,j, query blocks in ascending order */
#pragma omp for schedule(dynamic, 1)
        for (int64_t job = 0; job < (grads ? s->batch * kblocks : 0); job++) {
            if (failed) continue;
            const int64_t b = job / kblocks, s0 = (job % kblocks) * KL_BK, nk = L - s0 < KL_BK ? L - s0 : KL_BK;
            for (int64_t t0 = s0 / KL_BQ * KL_BQ; t0 < L; t0 += KL_BQ) {
                const int64_t nq = L - t0 < KL_BQ ? L - t0 : KL_BQ;
                dense_tile(&w, &cx, b, t0, nq, s0, nk, NULL, NULL);
                /* ∂k̂ += Eᵀ · q̂ over this query tile, query tiles in ascending order */
                dsa_idx_transpose(w.et, nq * HI, w.att, KL_BK, nq * HI, nk);
                dsa_idx_dots(w.kt, dI, w.et, nq * HI, a->q + (b * L + t0) * HI * dI, dI, nk, dI, nq * HI);
                float *dkb = dk + (b * L + s0) * dI;
                for (int64_t x = 0; x < nk * dI; x++) dkb[x] += w.kt[x];
            }
        }
        if (w.kt) dsa_idx_tile_free(&w);
    }
    double kl_sum = 0, mass_sum = 0; /* in row order: the same bits for any thread count */
    for (int64_t n = 0; n < N; n++) kl_sum += kl_rows[n], mass_sum += mass_rows[n];
    dsa_free(kl_rows, stat_bytes);
    dsa_free(k_t, keys_bytes);
    if (failed) DSA_FAIL(DSA_ERR_NOMEM, "indexer KL tile scratch");
    out->kl_sum += kl_sum;
    out->rows += N;
    if (idx) out->mass_sum += mass_sum, out->mass_rows += N;
    for (int64_t n = 0; idx && n < N; n++) {
        int64_t sel = 0;
        for (int64_t i = 0; i < K; i++) sel += idx[n * K + i] >= 0;
        out->selected_sum += (double)sel;
    }
    return DSA_OK;
}
