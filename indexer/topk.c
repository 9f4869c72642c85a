/* topk.c: streaming top-k selection over the indexer scores (indexer.h, DSA-SPEC §5.4).
 *
 * Per query block (TOPK_BQ rows) the causal key blocks are scored one tile at a time
 * (dsa_idx_score_tile). Each row keeps a candidate buffer of up to 2k keys, in ascending
 * key index (keys arrive in that order), and a threshold: once the row has held k keys, a
 * newcomer that does not rank before the row's k-th best so far cannot be selected and is
 * dropped with one comparison. When the buffer fills, an exact radix select on the
 * order-preserving score key (kernels/rules/topk_order.h dsa_topk_radix_key, 8 bits per
 * pass) finds the k-th best, and a stable compaction keeps the k best: every key that
 * ranks strictly higher, then the lowest-indexed of those equal to it (equal scores rank
 * by lower index, and the buffer is in index order). At the end the same select leaves
 * the row's min(k, |valid keys|) best, and a stable LSD radix sort on the score key
 * (descending) puts them in rank order; stability keeps equal scores in ascending index.
 * Linear in the keys scored: no heap, no comparison sort. The result is the rule's, so it
 * is the same set and order as any exact method (tests/test_indexer_math.c checks it
 * against a brute-force sort, exact ties included). Memory per thread is
 * O(TOPK_BQ · 2k + KL_BK · H_I): no L × L score matrix.
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

/* One row's state: buf[0 .. fill) in ascending index; when have_thr, a key is kept only
 * if it ranks before thr (the k-th best among the keys seen so far). */
typedef struct {
    Cand *buf;
    int64_t fill;
    bool have_thr;
    Cand thr;
} Row;

/* The radix key of rank order: larger key = better score (−0 and +0 equal). */
static inline uint32_t key_of(float score) { return dsa_topk_radix_key(score); }

/* The k-th largest key among buf[0 .. n) (1 ≤ k ≤ n), and how many keys are strictly
 * larger: four 8-bit passes from the top byte, each narrowing to one bucket. */
static uint32_t kth_key(const Cand *buf, int64_t n, int64_t k, int64_t *above) {
    uint32_t prefix = 0, mask = 0;
    int64_t need = k, larger = 0;
    for (int shift = 24; shift >= 0; shift -= 8) {
        int64_t count[256] = {0};
        for (int64_t i = 0; i < n; i++) {
            const uint32_t u = key_of(buf[i].score);
            if ((u & mask) == prefix) count[(u >> shift) & 255]++;
        }
        int bucket = 255;
        while (count[bucket] < need) need -= count[bucket], larger += count[bucket], bucket--;
        prefix |= (uint32_t)bucket << shift;
        mask |= 255u << shift;
    }
    *above = larger;
    return prefix;
}

/* Keep the k best of buf[0 .. fill) in place, still in ascending index; sets the threshold
 * to the k-th best. Requires fill > k. */
static void row_shrink(Row *r, int64_t k) {
    int64_t above;
    const uint32_t kth = kth_key(r->buf, r->fill, k, &above);
    int64_t ties = k - above, out = 0, last = -1;
    for (int64_t i = 0; i < r->fill; i++) {
        const uint32_t u = key_of(r->buf[i].score);
        if (u > kth || (u == kth && ties > 0)) {
            if (u == kth) ties--, last = out;
            r->buf[out++] = r->buf[i];
        }
    }
    r->fill = out;
    /* the k-th best is the highest-indexed kept key of the k-th key (ties kept by lower
     * index); it ranks after every other kept key */
    r->thr = r->buf[last];
    r->have_thr = true;
}

static inline void row_push(Row *r, int64_t k, Cand c) {
    if (r->have_thr && !dsa_topk_worse(r->thr, c)) return; /* does not rank before the k-th best */
    r->buf[r->fill++] = c;
    if (r->fill == 2 * k) row_shrink(r, k);
}

/* buf[0 .. n) sorted into rank order (score descending, index ascending): stable LSD
 * radix sort on the inverted key, from a buffer in ascending index. */
static void rank_sort(Cand *buf, Cand *tmp, int64_t n) {
    for (int shift = 0; shift < 32; shift += 8) {
        int64_t start[257] = {0};
        for (int64_t i = 0; i < n; i++) start[((~key_of(buf[i].score)) >> shift & 255) + 1]++;
        for (int b = 0; b < 256; b++) start[b + 1] += start[b];
        for (int64_t i = 0; i < n; i++) tmp[start[(~key_of(buf[i].score)) >> shift & 255]++] = buf[i];
        memcpy(buf, tmp, (size_t)n * sizeof *buf);
    }
}

DsaStatus dsa_indexer_topk(int32_t *idx, float *scores, const DsaIndexerActs *a, const DsaIndexerShape *s) {
    const int64_t L = s->seq_len, K = s->topk;
    const int64_t qblocks = (L + TOPK_BQ - 1) / TOPK_BQ, jobs = s->batch * qblocks;
    /* TOPK_BQ row buffers of 2k, and one of 2k for the final sort */
    const size_t cand_items = (size_t)((TOPK_BQ + 1) * 2 * K);
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
        Cand *cands = dsa_malloc(cand_items * sizeof(Cand));
        if (!have_tile || !cands) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t job = 0; job < jobs; job++) {
            if (!have_tile || !cands) continue;
            const int64_t b = job / qblocks, t0 = (job % qblocks) * TOPK_BQ;
            const int64_t nq = L - t0 < TOPK_BQ ? L - t0 : TOPK_BQ;
            Row rows[TOPK_BQ];
            for (int64_t i = 0; i < nq; i++) rows[i] = (Row){.buf = cands + i * 2 * K};
            const float *sc = tile.sc;
            for (int64_t s0 = 0; s0 <= t0 + nq - 1; s0 += TOPK_BK) {
                const int64_t nk = t0 + nq - s0 < TOPK_BK ? t0 + nq - s0 : TOPK_BK;
                dsa_idx_score_tile(&tile, a, s, b, t0, nq, s0, nk);
                for (int64_t i = 0; i < nq; i++) {
                    const int64_t t = t0 + i, valid = t - s0 + 1 < nk ? t - s0 + 1 : nk;
                    for (int64_t c = 0; c < valid; c++) {
                        DSA_ASSERT(!isnan(sc[i * TOPK_BK + c]));
                        row_push(&rows[i], K, (Cand){sc[i * TOPK_BK + c], (int32_t)(s0 + c)});
                    }
                }
            }
            Cand *tmp = cands + TOPK_BQ * 2 * K;
            for (int64_t i = 0; i < nq; i++) {
                Row *r = &rows[i];
                if (r->fill > K) row_shrink(r, K);
                rank_sort(r->buf, tmp, r->fill);
                const int64_t n = b * L + t0 + i;
                for (int64_t j = 0; j < K; j++) {
                    idx[n * K + j] = dsa_topk_slot_index(r->buf, r->fill, j);
                    if (scores) scores[n * K + j] = dsa_topk_slot_score(r->buf, r->fill, j);
                }
            }
        }
        if (have_tile) dsa_idx_tile_free(&tile);
        dsa_free(cands, cand_items * sizeof(Cand));
    }
    dsa_free(k_t, kt_bytes);
    if (failed)
        DSA_FAIL(DSA_ERR_NOMEM, "top-k scratch: %zu bytes per thread", cand_items * sizeof(Cand));
    return DSA_OK;
}
