/* zero.h: data parallelism with ZeRO-1 over a DsaComm (DESIGN.md, "Distribution").
 *
 * Every rank holds the whole model (weights and gradients, the params.h flat layout) and
 * owns one contiguous shard [lo, hi) of that layout (dsa_comm_split of table.total): the
 * AdamW moments of its shard (pretrain/optim.h, a range optimizer) and, since the CPU
 * backend computes in fp32, the fp32 master values of its shard are the weights
 * themselves. One step:
 *   1. each rank accumulates the gradients of its own micro-batches (its loader windows);
 *   2. dsa_zero_reduce_grads: the flat gradient buffer is cut into buckets of
 *      DSA_ZERO_BUCKET elements, in layout order, and each bucket is reduce-scattered, so
 *      every rank ends with the sum over ranks of its shard (the same calls in the same
 *      order on every rank: the sums do not depend on timing);
 *   3. per group, the squared norm of the shard is summed over ranks (all-reduce of
 *      doubles) and the clip of the global norm is applied, as on one process;
 *   4. each rank updates its shard, then dsa_zero_gather_params all-gathers the weights
 *      bucket by bucket, so every rank holds the same bits again.
 * With the loss scaled by 1 / (global_batch · seq_len) on every rank, N ranks × B
 * sequences give the step of one rank × N·B sequences up to fp32 summation order.
 */
#ifndef DSA_PRETRAIN_ZERO_H
#define DSA_PRETRAIN_ZERO_H

#include <stdint.h>

#include "core/error.h"
#include "kernels/comm.h"

enum { DSA_ZERO_BUCKET = 1 << 22 }; /* elements per reduce-scatter / all-gather bucket (16 MiB of fp32) */

/* Sum `grads` (total floats) over the ranks of `c` so that rank r's shard of
 * dsa_comm_split(total) holds the sum; the rest of the buffer is undefined afterwards. */
DsaStatus dsa_zero_reduce_grads(DsaComm *c, float *grads, int64_t total);
/* Every rank's shard of `params` (total floats) to every rank. */
DsaStatus dsa_zero_gather_params(DsaComm *c, float *params, int64_t total);

#endif
