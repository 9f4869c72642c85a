/* topk.c: streaming top-k selection over the indexer scores (indexer.h, DSA-SPEC §5.4).
 *
 * Per query block (TOPK_BQ rows) the causal key blocks are scored one tile at a time
 * (dsa_idx_score_tile) and each row keeps a bounded heap of its k best keys so far,
 * the worst at the root. Order and padding are kernels/rules/topk_order.h's (higher score
 * first, equal scores by lower key index, −1 in the empty slots); since keys arrive in
 * ascending index, a newcomer that ties the root loses. Memory per
 * thread is O(KL_BQ · (k + KL_BK · H_I)): no L × L score matrix.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"
#include "indexer/indexer.h"
#include "indexer/internal.h"
#include "kernels/rules/topk_order.h"

enum { TOPK_BQ = KL_BQ, TOPK_BK = KL_BK };

typedef DsaTopkCand Cand;

/* a ranks after b (§5.4: score descending, then index ascending). */
static inline int worse(Cand a, Cand b) { return dsa_topk_worse(a, b); }

static void sift_down(Cand *h, int64_t n, int64_t i) {
    for (;;) {
        int64_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && worse(h[l], h[m])) m = l;
        if (r < n && worse(h[r], h[m])) m = r;
        if (m == i) return;
        Cand tmp = h[i];
        h[i] = h[m], h[m] = tmp;
        i = m;
    }
}

static void heap_push(Cand *h, int64_t *n, int64_t cap, Cand c) {
    if (*n < cap) {
        int64_t i = (*n)++;
        h[i] = c;
        while (i > 0 && worse(h[i], h[(i - 1) / 2])) {
            Cand tmp = h[i];
            h[i] = h[(i - 1) / 2], h[(i - 1) / 2] = tmp;
            i = (i - 1) / 2;
        }
    } else if (worse(h[0], c)) {
        h[0] = c;
        sift_down(h, *n, 0);
    }
}

static int rank_order(const void *pa, const void *pb) {
    Cand a = *(const Cand *)pa, b = *(const Cand *)pb;
    return worse(a, b) ? 1 : worse(b, a) ? -1 : 0;
}

DsaStatus dsa_indexer_topk(int32_t *idx, float *scores, const DsaIndexerActs *a, const DsaIndexerShape *s) {
    const int64_t L = s->seq_len, K = s->topk;
    const int64_t qblocks = (L + TOPK_BQ - 1) / TOPK_BQ, jobs = s->batch * qblocks;
    const size_t heap_items = (size_t)(TOPK_BQ * K);
    const size_t kt_bytes = (size_t)(s->batch * L * s->head_dim) * sizeof(float);
    float *k_t = dsa_malloc(kt_bytes); /* keys transposed once, shared by every tile */
    if (!k_t) DSA_FAIL(DSA_ERR_NOMEM, "top-k transposed keys: %zu bytes", kt_bytes);
    dsa_idx_keys_transposed(k_t, a->k, s->batch, L, 1, s->head_dim, s->head_dim);
    int failed = 0;
#pragma omp parallel
    {
        DsaIdxTile tile = {0};
        bool have_tile = dsa_idx_tile_alloc(&tile, s, 1, 1);
        tile.k_t = k_t;
        Cand *heaps = dsa_malloc(heap_items * sizeof(Cand));
        if (!have_tile || !heaps) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t job = 0; job < jobs; job++) {
            if (!have_tile || !heaps) continue;
            const int64_t b = job / qblocks, t0 = (job % qblocks) * TOPK_BQ;
            const int64_t nq = L - t0 < TOPK_BQ ? L - t0 : TOPK_BQ;
            int64_t fill[TOPK_BQ] = {0};
            const float *sc = tile.sc;
            for (int64_t s0 = 0; s0 <= t0 + nq - 1; s0 += TOPK_BK) {
                const int64_t nk = t0 + nq - s0 < TOPK_BK ? t0 + nq - s0 : TOPK_BK;
                dsa_idx_score_tile(&tile, a, s, b, t0, nq, s0, nk);
                for (int64_t i = 0; i < nq; i++) {
                    const int64_t t = t0 + i, valid = t - s0 + 1 < nk ? t - s0 + 1 : nk;
                    for (int64_t c = 0; c < valid; c++) {
                        DSA_ASSERT(!isnan(sc[i * TOPK_BK + c]));
                        Cand cand = {sc[i * TOPK_BK + c], (int32_t)(s0 + c)};
                        heap_push(heaps + i * K, &fill[i], K, cand);
                    }
                }
            }
            for (int64_t i = 0; i < nq; i++) {
                Cand *h = heaps + i * K;
                qsort(h, (size_t)fill[i], sizeof *h, rank_order);
                const int64_t n = b * L + t0 + i;
                for (int64_t j = 0; j < K; j++) {
                    idx[n * K + j] = dsa_topk_slot_index(h, fill[i], j);
                    if (scores) scores[n * K + j] = dsa_topk_slot_score(h, fill[i], j);
                }
            }
        }
        if (have_tile) dsa_idx_tile_free(&tile);
        dsa_free(heaps, heap_items * sizeof(Cand));
    }
    dsa_free(k_t, kt_bytes);
    if (failed)
        DSA_FAIL(DSA_ERR_NOMEM, "top-k scratch: %zu bytes per thread", heap_items * sizeof(Cand));
    return DSA_OK;
}
