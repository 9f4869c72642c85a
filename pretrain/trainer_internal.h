/* trainer_internal.h: the trainer's state, shared by trainer.c (the loop) and
 * trainer_state.c (its checkpoints: save, resume, --init weights). Private to pretrain/. */
#ifndef DSA_PRETRAIN_TRAINER_INTERNAL_H
#define DSA_PRETRAIN_TRAINER_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "core/config.h"
#include "core/error.h"
#include "data/loader.h"
#include "pretrain/model.h"
#include "pretrain/optim.h"
#include "pretrain/trainer.h"

typedef struct {
    const DsaConfig *cfg;
    const DsaTrainOptions *opts;
    DsaComm *comm;   /* opts->comm, or a local one (world 1) owned here */
    bool own_comm;
    DsaComm *dcomm;  /* gradients and weights: opts->device_comm, or comm */
    DsaModel model;
    DsaOptimizer optim;
    bool *trainable; /* (table.count) for the current stage */
    int64_t step;    /* global optimizer steps done */
    int64_t total_steps;
    /* data */
    char **paths;
    int num_paths;
    DsaLoader *loader;
    int loader_stage; /* stage the loader was opened for, -1 none */
    bool have_cursor; /* resume: seek the next loader of cursor_stage to cursor */
    int cursor_stage;
    DsaLoaderCursor cursor; /* as saved: rank 0's cursor of a run of cursor.world ranks */
    /* token slots (trainer.c): 2 x (inputs, targets) of io_tokens ids, host and device */
    int32_t *io_host, *io_dev;
    int64_t io_tokens;
    int64_t io_counted[2];     /* targets >= 0 in each slot */
    FILE *metrics;
    double last_loss, last_lr;
    int64_t tokens_seen;
    char last_checkpoint[1024];
} Trainer;

/* Write step-N/ (weights, AdamW moments, config.json, run_config.json,
 * trainer_state.json with the data cursor of `stage`) and switch `latest` to it. */
DsaStatus trainer_save_checkpoint(Trainer *t, int stage);
/* Restore weights, moments, step and data cursor from the checkpoint `dir`. */
DsaStatus trainer_load_checkpoint(Trainer *t, const char *dir);
/* Weights only, from a checkpoint or an HF model directory, sharded or FP8 (--init). */
DsaStatus trainer_load_init_weights(Trainer *t, const char *from);

/* trainer_dist.c: before the run, every rank together: the global batches split over the
 * ranks, the binary and the resolved config are the same on every rank (the error names
 * the ranks that differ). */
DsaStatus trainer_dist_check(Trainer *t);
/* World > 1: rank 0 logs every rank's host, pid and memory (weights, gradients, AdamW
 * shard, activations). Collective. */
DsaStatus trainer_dist_report(Trainer *t);
/* Seek the loader of the saved cursor's stage to it, on this run's world size (the rule
 * of a world-size change is at the definition). */
DsaStatus trainer_seek_saved_cursor(Trainer *t);
/* The end of a step over the ranks: sums, norms, this rank's AdamW shard, all-gather. */
DsaStatus trainer_data_parallel_step(Trainer *t, double *loss_sum, int64_t *count, double lr, DsaOptimStepInfo *info);

#endif
