/* topk_order.h: the order of the indexer's top-k selection and its padding (DSA-SPEC §5.4),
 * one definition for the CPU (indexer/topk.c, the captured-mass metric of indexer/kl.c)
 * and the CUDA backend (kernels/rules/hd.h).
 *
 * A key s ranks before s' iff I_s > I_s', or the scores are equal and s < s' (−0.0 equals
 * +0.0). A row's list is its min(k, |valid keys|) best keys in rank order, then
 * DSA_TOPK_PAD_INDEX (−1, score −inf) in the remaining slots. A NaN score is a programming
 * error (the CPU selection asserts it away); the comparisons below never see one there.
 */
#ifndef DSA_KERNELS_RULES_TOPK_ORDER_H
#define DSA_KERNELS_RULES_TOPK_ORDER_H

#include "kernels/rules/hd.h"

enum { DSA_TOPK_PAD_INDEX = -1 }; /* index of an empty slot; its score is −inf */

/* One candidate of a row's selection. */
typedef struct {
    float score;
    int32_t index;
} DsaTopkCand;

/* a ranks after b: lower score, or equal scores and the higher index. */
static inline DSA_HD int dsa_topk_worse(DsaTopkCand a, DsaTopkCand b) {
    return a.score < b.score || (a.score == b.score && a.index > b.index);
}

/* a ranks at or before the candidate `last` (the row's last selected key): a key is among
 * the selected exactly when this holds for the row's last selected one. */
static inline DSA_HD int dsa_topk_within(float score, int64_t index, float last_score, int64_t last_index) {
    return score > last_score || (score == last_score && index <= last_index);
}

/* Slot j of a row whose selection holds `fill` candidates (rank order in `sel`): the
 * index, or the padding. */
static inline DSA_HD int32_t dsa_topk_slot_index(const DsaTopkCand *sel, int64_t fill, int64_t j) {
    return j < fill ? sel[j].index : (int32_t)DSA_TOPK_PAD_INDEX;
}
static inline DSA_HD float dsa_topk_slot_score(const DsaTopkCand *sel, int64_t fill, int64_t j) {
    return j < fill ? sel[j].score : -INFINITY;
}

/* The order-preserving uint32 key of a score for a bitwise radix select (DSA-SPEC §5.4):
 * key(a) < key(b) iff a < b, with −0.0 and +0.0 on one key (that of +0): negatives have
 * every bit flipped, positives their sign bit set. Select on (key descending, index
 * ascending). */
static inline DSA_HD uint32_t dsa_topk_radix_key(float score) {
    uint32_t u = dsa_bits_of(score);
    if (u == 0x80000000u) u = 0; /* −0.0 → +0.0 */
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

/* The whole selection order as one integer (DSA-SPEC §5.4), for a select over 64-bit keys:
 * order_key(a) > order_key(b) iff a ranks before b. The score's radix key above, then the
 * complement of the index below it (the lower index ranks first); index >= 0, so distinct
 * indices give distinct keys and a row's keys have no ties. 0 is below every key of a
 * real candidate (the radix key of −inf is 0x007fffff), so it pads a sort. */
static inline DSA_HD uint64_t dsa_topk_order_key(float score, int32_t index) {
    return ((uint64_t)dsa_topk_radix_key(score) << 32) | (uint64_t)(0xffffffffu - (uint32_t)index);
}

/* The candidate of an order key (its inverse; −0.0 comes back as +0.0). */
static inline DSA_HD DsaTopkCand dsa_topk_order_cand(uint64_t key) {
    const uint32_t r = (uint32_t)(key >> 32);
    DsaTopkCand c;
    c.score = dsa_float_of((r & 0x80000000u) ? (r & 0x7fffffffu) : ~r);
    c.index = (int32_t)(0xffffffffu - (uint32_t)key);
    return c;
}

#endif
