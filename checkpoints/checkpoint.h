/* checkpoint.h: checkpoint directories that are never seen half-written.
 *
 * A run directory OUT holds checkpoint directories (named by the caller, the trainer
 * uses "step-NNNNNNNN") and a file OUT/latest naming the newest complete one. A save
 * writes every file into OUT/.tmp-<name>-<pid>/, adds manifest.json (size and CRC32 of
 * each file), fsyncs the files and the directory, renames it to OUT/<name>, fsyncs OUT,
 * and only then switches OUT/latest (write, fsync, rename, fsync). A crash or kill at
 * any point leaves the previous checkpoint and `latest` intact; the torn temporary
 * directory is removed by the next save in OUT.
 */
#ifndef DSA_CHECKPOINTS_CHECKPOINT_H
#define DSA_CHECKPOINTS_CHECKPOINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

enum { DSA_CHECKPOINT_MANIFEST_VERSION = 1, DSA_CHECKPOINT_PATH_CAP = 1024 };

typedef struct {
    char out_dir[DSA_CHECKPOINT_PATH_CAP];
    char name[256];
    char tmp_dir[DSA_CHECKPOINT_PATH_CAP];
    /* Testing aid: when > 0, commit prints "checkpoint: paused before commit of <name>"
     * on stderr and sleeps this long before the rename, so a test can kill the process
     * mid-save. */
    int64_t pause_before_commit_ms;
} DsaCheckpointWriter;

/* Start checkpoint `name` in `out_dir` (created if needed): removes torn .tmp-* dirs of
 * earlier saves (logged), creates the temporary directory. */
DsaStatus dsa_checkpoint_begin(DsaCheckpointWriter *w, const char *out_dir, const char *name);
/* Path of `file_name` inside the temporary directory, in buf (returned). */
const char *dsa_checkpoint_file(DsaCheckpointWriter *w, const char *file_name, char *buf, size_t cap);
/* Write a small text file into the temporary directory (fsynced). */
DsaStatus dsa_checkpoint_write_text(DsaCheckpointWriter *w, const char *file_name, const char *text);
/* Write the manifest, make everything durable, rename into place, switch `latest`. */
DsaStatus dsa_checkpoint_commit(DsaCheckpointWriter *w);
/* Remove the temporary directory (after a failed save). */
void dsa_checkpoint_abort(DsaCheckpointWriter *w);

/* `path` is a checkpoint directory (has manifest.json or model.safetensors) or a run
 * directory with `latest`: the checkpoint directory it stands for, in dir. */
DsaStatus dsa_checkpoint_resolve(const char *path, char *dir, size_t cap);
/* Check every file of dir/manifest.json: present, its size, its CRC32. A directory
 * without a manifest but with model.safetensors (a Hugging Face model) passes with
 * *verified = false. */
DsaStatus dsa_checkpoint_verify(const char *dir, bool *verified);

#endif
