/* zero.c: the bucketed gradient reduce-scatter and weight all-gather of ZeRO-1 (zero.h). */
#include "pretrain/zero.h"

#include "core/mem.h"

/* counts[r] = |[b0, b1) ∩ shard r| for every rank: the piece of the bucket each rank owns. */
static void bucket_counts(const DsaComm *c, int64_t total, int64_t b0, int64_t b1, int64_t *counts) {
    for (int r = 0; r < c->world; r++) {
        int64_t lo, hi;
        dsa_comm_split(total, c->world, r, &lo, &hi);
        int64_t a = lo > b0 ? lo : b0, b = hi < b1 ? hi : b1;
        counts[r] = a < b ? b - a : 0;
    }
}

typedef DsaStatus (*BucketOp)(DsaComm *c, void *buf, const int64_t *counts, DsaCommType type);

static DsaStatus for_buckets(DsaComm *c, float *buf, int64_t total, BucketOp op) {
    if (c->world == 1) return DSA_OK;
    int64_t *counts = dsa_calloc((size_t)c->world, sizeof *counts);
    if (!counts) DSA_FAIL(DSA_ERR_NOMEM, "bucket counts of %d ranks", c->world);
    DsaStatus st = DSA_OK;
    for (int64_t b0 = 0; b0 < total && st == DSA_OK; b0 += DSA_ZERO_BUCKET) {
        const int64_t b1 = b0 + DSA_ZERO_BUCKET < total ? b0 + DSA_ZERO_BUCKET : total;
        bucket_counts(c, total, b0, b1, counts);
        st = op(c, buf + b0, counts, DSA_COMM_F32);
    }
    dsa_free(counts, (size_t)c->world * sizeof *counts);
    return st;
}

DsaStatus dsa_zero_reduce_grads(DsaComm *c, float *grads, int64_t total) {
    return for_buckets(c, grads, total, c->ops->reduce_scatter_sum);
}

DsaStatus dsa_zero_gather_params(DsaComm *c, float *params, int64_t total) {
    return for_buckets(c, params, total, c->ops->all_gather);
}
