/* kl_sparse.c: the stage-2 indexer loss over the selected keys (indexer.h; DSA-SPEC §6.3,
 * §8.2 F3) and the sampled dense recall metric of the sparse stage.
 *
 * Row pass (parallel over rows): for the valid entries s ∈ S_t of idx[t]:
 *   lseI_t over S_t from the top-k scores, a_h,t,s = τ Q_t,h · K_s (MQA form, §4.2),
 *   log p = logsumexp_h(a − lse_h) − ln H with the sparse attention's own lse (§6.3),
 *   KL_t, G = grad_scale (π − p), ∂w and ∂q̂ of the row (§7, sums over S_t only).
 * Key pass (parallel over keys): the selection transposed by a counting sort (queries in
 * ascending order per key) and ∂k̂_s = Σ E q̂ in that order: deterministic, race-free.
 */
#include <math.h>
#include <string.h>

#include "core/mem.h"
#include "indexer/indexer.h"
#include "indexer/internal.h"
#include "kernels/rules/kl.h"

typedef struct {
    int32_t row; /* query token n */
    float g;     /* G_t,s */
} KeyEntry;

/* The head dots u_j = q̂_t,j · k̂_s of one (row, key) pair: the ReLU inputs. */
static void pair_terms(float *u, const float *q, const float *k, int64_t HI, int64_t dI) {
    for (int64_t j = 0; j < HI; j++) u[j] = dsa_idx_dot(q + j * dI, k, dI);
}

/* One query row of the stage-2 loss: KL_t over S_t (returned), G into g_out[n, :],
 * and with dq the row's ∂w and ∂q̂. The selected keys are processed in chunks of KL_BK:
 * per-head logits and the indexer's head dots per key, then the row's ∂q̂ as one small
 * GEMM-shaped product over the gathered k̂ rows. */
static double sparse_row(DsaIdxTile *w, const DsaIndexerActs *a, const DsaIndexerShape *s, const DsaSparseTarget *tg,
                         const int32_t *idx, const float *idx_scores, float *g_out, float *dq, float *dw,
                         float grad_scale, int64_t n, double *selected) {
    const int64_t L = s->seq_len, HI = s->heads, dI = s->head_dim, K = s->topk, H = tg->heads, dqk = tg->qk_dim;
    const int64_t b = n / L, t = n % L;
    const int32_t *row = idx + n * K;
    const float *isc = idx_scores + n * K, *lse = tg->lse + b * H * L + t;
    float *g = g_out + n * K;
    float mx = -INFINITY, sum = 0.0f;
    int64_t count = 0;
    for (int64_t i = 0; i < K; i++)
        if (row[i] >= 0) mx = fmaxf(mx, isc[i]), count++;
    for (int64_t i = 0; i < K; i++) {
        g[i] = 0.0f;
        if (row[i] >= 0) sum += expf(isc[i] - mx);
    }
    *selected = (double)count;
    if (!count) return 0.0;
    const float lse_i = mx + logf(sum);
    double kl = 0;
    int32_t slot[KL_BK];
    for (int64_t i0 = 0; i0 < K; i0 += KL_BK) {
        int64_t nc = 0;
        for (int64_t i = i0; i < K && i < i0 + KL_BK; i++)
            if (row[i] >= 0) slot[nc++] = (int32_t)i;
        if (!nc) continue;
        /* a[h][c] = Q_t,h · K_s over the chunk (each key row read once, from cache, for all
         * heads; a gathered transpose of 576-wide rows costs more than it saves) */
        for (int64_t c = 0; c < nc; c++) {
            const float *kv = tg->kv + (b * L + row[slot[c]]) * dqk;
            for (int64_t h = 0; h < H; h++) w->att[h * KL_BK + c] = dsa_idx_dot(tg->q + (n * H + h) * dqk, kv, dqk);
        }
        float logp[KL_BK];
        dsa_idx_log_target(logp, w->att, KL_BK, H, lse, L, tg->scale, nc);
        for (int64_t c = 0; c < nc; c++) {
            const int64_t i = slot[c];
            const float logpi = dsa_kl_log_pi(isc[i], lse_i);
            const float p = expf(logp[c]), pi = expf(logpi);
            kl += dsa_kl_term(p, logp[c], logpi); /* 0 where p = 0 */
            g[i] = dsa_kl_grad(grad_scale, pi, p);
        }
        if (!dq) continue;
        /* u[j][c] = q̂_t,j · k̂_s; ∂w_t,j += c Σ G ReLU(u); E = c G w_t,j [u > 0] */
        for (int64_t c = 0; c < nc; c++) {
            const float *kr = a->k + (b * L + row[slot[c]]) * dI;
            for (int64_t j = 0; j < HI; j++) w->u[j * KL_BK + c] = dsa_idx_dot(a->q + (n * HI + j) * dI, kr, dI);
        }
        const float *wt = a->w + n * HI;
        for (int64_t j = 0; j < HI; j++) {
            const float *u = w->u + j * KL_BK;
            float *e = w->att + j * KL_BK, acc = 0.0f;
            for (int64_t c = 0; c < nc; c++) {
                const float gc = g[slot[c]];
                acc = fmaf(gc, u[c] > 0.0f ? u[c] : 0.0f, acc);
                e[c] = u[c] > 0.0f ? s->scale * gc * wt[j] : 0.0f;
            }
            dw[n * HI + j] += s->scale * acc;
        }
        /* ∂q̂_t += E · k̂ over the chunk (k̂ rows gathered) */
        for (int64_t c = 0; c < nc; c++)
            memcpy(w->kt + c * dI, a->k + (b * L + row[slot[c]]) * dI, (size_t)dI * sizeof(float));
        dsa_idx_dots(w->et, dI, w->att, KL_BK, w->kt, dI, HI, dI, nc);
        float *dqn = dq + n * HI * dI;
        for (int64_t x = 0; x < HI * dI; x++) dqn[x] += w->et[x];
    }
    return kl;
}

DsaStatus dsa_indexer_kl_sparse(DsaIndexerLoss *out, float *dq, float *dk, float *dw, const DsaIndexerActs *a,
                                const DsaIndexerShape *s, const DsaSparseTarget *tg, const int32_t *idx,
                                const float *idx_scores, float grad_scale) {
    const int64_t L = s->seq_len, N = s->batch * L, HI = s->heads, dI = s->head_dim, K = s->topk;
    const int64_t H = tg->heads, dqk = tg->qk_dim;
    const bool grads = grad_scale != 0.0f;
    DSA_ASSERT(HI <= 1024);
    size_t g_bytes = (size_t)(N * K) * sizeof(float), row_bytes = (size_t)N * 2 * sizeof(double);
    float *gsel = dsa_malloc(g_bytes);
    double *row_stats = dsa_malloc(row_bytes);
    if (!gsel || !row_stats) {
        dsa_free(gsel, g_bytes);
        dsa_free(row_stats, row_bytes);
        DSA_FAIL(DSA_ERR_NOMEM, "sparse indexer KL: %zu bytes", g_bytes + row_bytes);
    }
    if (grads) dsa_idx_zero_grads(dq, dk, dw, s);
    int failed = 0;
#pragma omp parallel reduction(+ : failed)
    {
        DsaIdxTile w = {0};
        if (!dsa_idx_tile_alloc(&w, s, H, dqk)) failed = 1;
#pragma omp for schedule(dynamic, 16)
        for (int64_t n = 0; n < N; n++) {
            if (failed) continue;
            row_stats[n] = sparse_row(&w, a, s, tg, idx, idx_scores, gsel, grads ? dq : NULL, dw, grad_scale, n,
                                      &row_stats[N + n]);
        }
        if (w.kt) dsa_idx_tile_free(&w);
    }
    if (failed) {
        dsa_free(gsel, g_bytes);
        dsa_free(row_stats, row_bytes);
        DSA_FAIL(DSA_ERR_NOMEM, "sparse indexer KL tile scratch");
    }
    double kl_sum = 0, selected = 0;
    for (int64_t n = 0; n < N; n++) kl_sum += row_stats[n], selected += row_stats[N + n];
    dsa_free(row_stats, row_bytes);
    DsaStatus st = DSA_OK;
    if (grads) {
        /* transpose the selection by key (counting sort, rows ascending per key) */
        size_t ptr_bytes = (size_t)(N + 1) * sizeof(int64_t), ent_bytes = (size_t)(N * K) * sizeof(KeyEntry);
        int64_t *ptr = dsa_calloc((size_t)N + 1, sizeof(int64_t));
        KeyEntry *ent = dsa_malloc(ent_bytes);
        if (!ptr || !ent) {
            st = dsa_error_set(DSA_ERR_NOMEM, __FILE__, __LINE__, "sparse indexer KL key index: %zu bytes",
                               ptr_bytes + ent_bytes);
        } else {
            for (int64_t n = 0; n < N; n++)
                for (int64_t i = 0; i < K; i++)
                    if (idx[n * K + i] >= 0) ptr[n / L * L + idx[n * K + i] + 1]++;
            for (int64_t n = 0; n < N; n++) ptr[n + 1] += ptr[n];
            int64_t *fill = dsa_malloc((size_t)N * sizeof(int64_t));
            if (!fill) {
                st = dsa_error_set(DSA_ERR_NOMEM, __FILE__, __LINE__, "sparse indexer KL key index");
            } else {
                memcpy(fill, ptr, (size_t)N * sizeof(int64_t));
                for (int64_t n = 0; n < N; n++)
                    for (int64_t i = 0; i < K; i++) {
                        int32_t key = idx[n * K + i];
                        if (key >= 0) ent[fill[n / L * L + key]++] = (KeyEntry){(int32_t)n, gsel[n * K + i]};
                    }
                dsa_free(fill, (size_t)N * sizeof(int64_t));
#pragma omp parallel for schedule(dynamic, 16)
                for (int64_t key = 0; key < N; key++) {
                    float u[1024];
                    const float *kr = a->k + key * dI;
                    float *dkr = dk + key * dI;
                    for (int64_t e = ptr[key]; e < ptr[key + 1]; e++) {
                        if (ent[e].g == 0.0f) continue;
                        const int64_t n = ent[e].row;
                        const float *qn = a->q + n * HI * dI, *wt = a->w + n * HI;
                        pair_terms(u, qn, kr, HI, dI);
                        for (int64_t j = 0; j < HI; j++) {
                            if (u[j] <= 0.0f) continue;
                            const float ej = s->scale * ent[e].g * wt[j];
                            for (int64_t d = 0; d < dI; d++) dkr[d] = fmaf(ej, qn[j * dI + d], dkr[d]);
                        }
                    }
                }
            }
        }
        dsa_free(ptr, ptr_bytes);
        dsa_free(ent, ent_bytes);
    }
    dsa_free(gsel, g_bytes);
    if (st != DSA_OK) return st;
    out->kl_sum += kl_sum;
    out->rows += N;
    out->selected_sum += selected;
    return DSA_OK;
}

void dsa_indexer_sparse_recall(DsaIndexerLoss *out, const DsaIndexerShape *s, const DsaSparseTarget *tg,
                               const int32_t *idx, int64_t rows_per_seq) {
    const int64_t L = s->seq_len, K = s->topk, H = tg->heads, dqk = tg->qk_dim;
    const int64_t rows = rows_per_seq < L ? rows_per_seq : L;
    if (rows <= 0) return;
    double mass[4096];
    DSA_ASSERT(rows <= 4096 && H <= 256);
    for (int64_t b = 0; b < s->batch; b++) {
#pragma omp parallel for schedule(dynamic, 1)
        for (int64_t r = 0; r < rows; r++) {
            /* evenly spaced rows ending at the last one: t = L − 1 − r · L / rows */
            const int64_t t = L - 1 - r * L / rows, n = b * L + t;
            float lse[256];
            for (int64_t h = 0; h < H; h++) {
                const float *q = tg->q + (n * H + h) * dqk;
                float m = -INFINITY, sum = 0.0f;
                for (int64_t key = 0; key <= t; key++) {
                    float x = tg->scale * dsa_idx_dot(q, tg->kv + (b * L + key) * dqk, dqk);
                    if (x > m) sum = sum * expf(m - x), m = x;
                    sum += expf(x - m);
                }
                lse[h] = m + logf(sum);
            }
            double mt = 0;
            for (int64_t i = 0; i < K; i++) {
                const int32_t key = idx[n * K + i];
                if (key < 0) continue;
                const float *kv = tg->kv + (b * L + key) * dqk;
                double p = 0;
                for (int64_t h = 0; h < H; h++)
                    p += exp((double)tg->scale * dsa_idx_dot(tg->q + (n * H + h) * dqk, kv, dqk) - lse[h]);
                mt += p / (double)H;
            }
            mass[r] = mt;
        }
        for (int64_t r = 0; r < rows; r++) out->mass_sum += mass[r];
        out->mass_rows += rows;
    }
}
