/* trainer.h: the training loop behind `dsa train`: stages, gradient accumulation,
 * AdamW, metrics, checkpoints and exact resume.
 *
 * One optimizer step of stage s consumes stages[s].global_batch windows of seq_len + 1
 * tokens from the loader, in micro-batches of train.micro_batch sequences whose
 * gradients accumulate; the loss is the mean cross-entropy over all predicted tokens of
 * the step. Stages run back to back; the switch happens at a step boundary.
 *
 * Run directory (train.out_dir):
 *   metrics.jsonl          one JSON object per step (see dsa_train)
 *   step-NNNNNNNN/         checkpoints (checkpoints/checkpoint.h: temp dir, fsync, rename)
 *     model.safetensors    F32 weights, HF DeepSeek names
 *     config.json          flat HF model config
 *     run_config.json      the resolved run config (our format)
 *     optimizer.safetensors  AdamW moments: exp_avg.<name>, exp_avg_sq.<name>
 *     trainer_state.json   step, stage, per-group AdamW step counts, data cursor, hashes
 *     manifest.json        sizes and CRC32 of the files above
 *   latest                 name of the newest complete checkpoint, switched last
 *
 * Data parallel (pretrain/zero.h, DESIGN.md "Distribution"): with opts->comm of world N
 * every rank streams its own windows (the loader's rank split), runs global_batch /
 * (micro_batch · N) micro-batches per step, and the gradients, loss and indexer figures
 * are summed over the ranks; the AdamW state is sharded (ZeRO-1). Rank 0 alone writes
 * metrics.jsonl and the log; checkpoints hold one optimizer file per rank
 * (optimizer-rank-RRRRR-of-NNNNN.safetensors, N > 1), the weights as Hugging Face shards
 * with an index (opts->weights_shard_bytes), and resume on any world size.
 *
 * Exactness: with the same config, data and thread count, a run resumed from a
 * checkpoint produces the same bits as the uninterrupted run (tested). The state that
 * makes this so: weights and AdamW moments (F32, exact), the per-group AdamW step counts,
 * the global step (the LR schedule is a pure function of it) and the loader cursor of
 * the current stage. No random numbers are drawn after initialization (no dropout), so
 * the only RNG state is the seed, recorded for reference.
 */
#ifndef DSA_PRETRAIN_TRAINER_H
#define DSA_PRETRAIN_TRAINER_H

#include <stdbool.h>
#include <stdint.h>

#include "core/config.h"
#include "core/error.h"
#include "kernels/comm.h"

enum { DSA_TRAIN_STATE_VERSION = 1 };

typedef struct {
    bool resume;              /* continue from out_dir/latest (error when there is none) */
    const char *init_from;    /* start from these weights (checkpoint or HF dir), fresh optimizer */
    int64_t stop_at;          /* stop (with a checkpoint) after this global step; 0 = run to the end */
    int progress;             /* 1: a log line per log_every steps with ETA; 0: quiet */
    int64_t pause_before_commit_ms; /* test hook: sleep inside each checkpoint save */
    DsaComm *comm;            /* the ranks of a data-parallel run (not owned); NULL: one process */
    uint64_t weights_shard_bytes; /* world > 1: largest weights file of a checkpoint (0: 5 GB) */
    DsaComm *device_comm;     /* the same ranks, collectives on the backend's buffers (NCCL for
                               * cuda; not owned); NULL: comm (host buffers, the CPU backend) */
} DsaTrainOptions;

/* Outcome of a run, for callers and tests. */
typedef struct {
    int64_t steps_done;  /* global step reached */
    int64_t total_steps; /* of all stages */
    bool already_done;   /* --resume found the run at or past its end (or --stop-at): nothing ran */
    double last_loss;
    char last_checkpoint[1024]; /* directory of the last checkpoint written ("" if none; the
                                 * resumed one when already_done) */
} DsaTrainResult;

/* Run training as `cfg` describes (validated here). Refuses to start fresh in an
 * out_dir that already holds checkpoints unless opts->resume. */
DsaStatus dsa_train(const DsaConfig *cfg, const DsaTrainOptions *opts, DsaTrainResult *result);

#endif
