/* topk_select.h: the plan and the radix step of the CUDA top-k (kernels/cuda/indexer_topk.cu,
 * DSA-SPEC §5.4), in C that nvcc and cc both compile, so that the host logic is tested on a
 * machine without a GPU (tests/test_cuda_indexer.c runs the device algorithm with these
 * helpers on one host thread against the CPU top-k).
 *
 * The device algorithm, one thread block per query row t (keys s = 0 … t):
 *  - keys arrive in tiles of DSA_CUDA_TOPK_TILE (one per thread); each thread scores its key
 *    with kernels/rules/index_score.h and forms its order key (kernels/rules/topk_order.h
 *    dsa_topk_order_key: higher key = ranks first, no two alike);
 *  - a key enters the row's candidate list (shared memory, `capacity` slots) unless a
 *    threshold is known and the key is not above it;
 *  - when fewer than a tile's slots remain free, the list is cut to its `keep` best keys by
 *    an exact radix select of the keep-th largest key (8 passes of 8 bits, a 256-bin
 *    histogram each, dsa_topk_radix_digit picking the digit), which becomes the threshold:
 *    a later key that is not above it can never be among the row's best `keep`;
 *  - at the end the list is cut once more, sorted descending (bitonic, padded with key 0)
 *    and written out with the −1 / −inf padding of topk_order.h. Each key's score travels
 *    beside it (the key cannot tell −0.0, a real score, from +0.0).
 * Memory: O(k) per block in shared memory, nothing global; no score row is stored.
 */
#ifndef DSA_KERNELS_CUDA_TOPK_SELECT_H
#define DSA_KERNELS_CUDA_TOPK_SELECT_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/rules/hd.h"

enum {
    DSA_CUDA_TOPK_TILE = 256, /* keys per tile = threads per block */
    DSA_CUDA_TOPK_BINS = 256  /* radix digit of 8 bits */
};

/* The shared-memory plan of one block of the top-k kernel. */
typedef struct {
    int64_t keep;        /* min(k, L): the most keys one row can select */
    int64_t capacity;    /* candidate slots: 2·keep + tile (room for the bitonic sort's power of two too) */
    int64_t tile;        /* keys scored per step */
    size_t shared_bytes; /* capacity uint64 keys and their fp32 scores, the query row
                            [heads][dim] and w [heads] as floats, and the histogram */
} DsaCudaTopkPlan;

/* Plan for top-`k` over rows of up to `seq_len` keys with `heads` × `dim` queries, `tile`
 * keys per step (DSA_CUDA_TOPK_TILE on the device; smaller in the host test, to force many
 * cuts). k, seq_len >= 1. */
static inline DsaCudaTopkPlan dsa_cuda_topk_plan(int64_t k, int64_t seq_len, int64_t heads, int64_t dim, int64_t tile) {
    DsaCudaTopkPlan p;
    p.keep = k < seq_len ? k : seq_len;
    p.tile = tile;
    p.capacity = 2 * p.keep + tile;
    p.shared_bytes = (size_t)p.capacity * (sizeof(uint64_t) + sizeof(float)) + (size_t)(heads * dim + heads) * sizeof(float) +
                     (size_t)DSA_CUDA_TOPK_BINS * sizeof(uint32_t);
    return p;
}

/* Whether the list must be cut before the next tile can be appended. */
static inline DSA_HD int dsa_cuda_topk_must_cut(const DsaCudaTopkPlan *p, int64_t count) {
    return count > p->capacity - p->tile;
}

/* One step of the radix descent for the rank-th largest key (rank >= 1) among the keys that
 * share the digits chosen so far: hist[d] counts those whose next digit is d. Returns the
 * digit of the rank-th largest and lowers *rank by the keys with a larger digit.
 * Precondition: Σ hist >= *rank (the caller's count is at least the rank asked for). */
static inline DSA_HD int dsa_topk_radix_digit(const uint32_t *hist, uint32_t *rank) {
    for (int d = DSA_CUDA_TOPK_BINS - 1; d > 0; d--) {
        if (hist[d] >= *rank) return d;
        *rank -= hist[d];
    }
    return 0;
}

/* Smallest power of two >= n (n >= 1): the bitonic sort's width. */
static inline DSA_HD int64_t dsa_cuda_pow2_at_least(int64_t n) {
    int64_t p = 1;
    while (p < n) p *= 2;
    return p;
}

#endif
