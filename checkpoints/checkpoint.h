/* checkpoint.h: checkpoint directories that are never seen half-written (DESIGN.md,
 * "Checkpoints").
 *
 * A run directory OUT holds checkpoint directories (named by the caller; the trainer
 * uses "step-%08lld") and a file OUT/latest whose content is the name of the newest
 * complete one plus '\n'. A save:
 *   1. begin: recovers OUT (dsa_checkpoint_recover, below) and creates
 *      OUT/.tmp-<name>-<pid>/;
 *   2. the caller writes its files there (dsa_checkpoint_file, write_text);
 *   3. commit: fsyncs every file, writes manifest.json (format_version 1; bytes and
 *      CRC32 of every file, computed by re-reading it, and "previous", the checkpoint
 *      `latest` named when the save began, or null), fsyncs the directory, renames it to
 *      OUT/<name> (never over an existing one), fsyncs OUT, and only then switches
 *      OUT/latest (write OUT/.latest.tmp, fsync, rename, fsync OUT).
 *
 * Resume rule (a kill, or a full disk, at any instant of a save): the newest complete
 * checkpoint wins, and no manual step is needed. Before a run resumes and before every
 * save, dsa_checkpoint_recover
 *   - removes what saves that did not finish left: OUT/.tmp-* directories,
 *     OUT/.latest.tmp and OUT/.<name>.tmp.<pid> temporaries of processes that are gone
 *     (one warning each, naming it);
 *   - adopts a checkpoint that was renamed into place but not yet named by `latest`
 *     (the save was stopped between its rename and the switch of `latest`): the
 *     directory whose manifest's "previous" is what `latest` names (null: no `latest`
 *     yet). If it verifies against its manifest, `latest` is switched to it (a
 *     warning names it); if not, it is set aside as OUT/<name>.incomplete (or
 *     .incomplete.2, ...; a warning names it and the defect) and `latest` stays. This
 *     repeats until no such directory is left.
 * A kill before the rename leaves only temporaries, so `latest` keeps the previous
 * checkpoint; a kill after it leaves a complete checkpoint that recovery adopts.
 * Readers resolve a path to a checkpoint directory and verify it against its manifest;
 * torn or corrupt files are named in the error.
 */
#ifndef DSA_CHECKPOINTS_CHECKPOINT_H
#define DSA_CHECKPOINTS_CHECKPOINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

enum {
    DSA_CHECKPOINT_MANIFEST_VERSION = 1,
    DSA_CHECKPOINT_PATH_CAP = 1024, /* out_dir and the temporary directory's path */
    DSA_CHECKPOINT_NAME_CAP = 256,  /* a checkpoint's name */
};

/* One save in progress. Filled by begin; the caller may set pause_before_commit_ms. */
typedef struct {
    char out_dir[DSA_CHECKPOINT_PATH_CAP];
    char name[DSA_CHECKPOINT_NAME_CAP];
    char tmp_dir[DSA_CHECKPOINT_PATH_CAP]; /* "" once committed or aborted */
    char previous[DSA_CHECKPOINT_NAME_CAP]; /* what latest named at begin; "" when none */
    /* Test hook (kill-mid-save tests): when > 0, commit prints "checkpoint: paused before
     * commit of <name>" on stderr and sleeps this many milliseconds right before the
     * rename, with every file written and fsynced, so a test can SIGKILL the process
     * mid-save. Set by the caller (the CLI's --pause-in-save); never read from the
     * environment. */
    int64_t pause_before_commit_ms;
    bool joined; /* dsa_checkpoint_join: writes files only, another process commits */
} DsaCheckpointWriter;

/* Start checkpoint `name` in `out_dir` (created if needed). `name` must be a plain file
 * name (no '/', not starting with '.', not "latest", no ".incomplete"); a checkpoint
 * OUT/<name> that exists already (after recovery) is refused (DSA_ERR_IO, naming it).
 * Recovers OUT first (dsa_checkpoint_recover; one saving process per OUT is assumed).
 * On failure there is nothing to abort (abort is still safe). */
DsaStatus dsa_checkpoint_begin(DsaCheckpointWriter *w, const char *out_dir, const char *name);
/* Multi-rank saves (DESIGN.md, "Checkpoints"): one rank begins and later commits; the
 * others join its temporary directory `tmp_dir` (the path begin made, passed to them by
 * the caller), write their files with dsa_checkpoint_file / write_text, fsync them, and
 * confirm to the committing rank (a barrier) before it commits; commit's manifest then
 * covers every rank's files. A joined writer never commits or aborts (programming error).
 * `tmp_dir` must be a ".tmp-<name>-<pid>" directory directly inside out_dir. */
DsaStatus dsa_checkpoint_join(DsaCheckpointWriter *w, const char *out_dir, const char *name, const char *tmp_dir);
/* Path of `file_name` (a plain name) inside the temporary directory, written into buf
 * (cap bytes, which must fit it: a programming error otherwise) and returned. */
const char *dsa_checkpoint_file(DsaCheckpointWriter *w, const char *file_name, char *buf, size_t cap);
/* Write a small text file into the temporary directory (replacing it), fsynced.
 * "manifest.json" is refused: commit writes it. */
DsaStatus dsa_checkpoint_write_text(DsaCheckpointWriter *w, const char *file_name, const char *text);
/* Finish the save (steps 3 above). Every entry of the temporary directory must be a
 * regular file. On failure before the rename the caller calls abort; after the rename
 * the checkpoint exists and only `latest` may be stale (the error says which). */
DsaStatus dsa_checkpoint_commit(DsaCheckpointWriter *w);
/* Remove the temporary directory and its files (after a failed save); a no-op when
 * there is none. Failures are logged, not returned. */
void dsa_checkpoint_abort(DsaCheckpointWriter *w);

/* Apply the resume rule above to the run directory `out_dir`: remove the temporaries
 * of saves that did not finish and adopt (or set aside) a checkpoint that a stopped
 * save renamed into place before switching `latest`. Logs a warning for everything it
 * changes. Nothing to do (DSA_OK) when out_dir does not exist. Errors name the file. */
DsaStatus dsa_checkpoint_recover(const char *out_dir);

/* Resolve a user path to a checkpoint directory, written into dir (cap bytes): `path`
 * itself when it has manifest.json (or is a Hugging Face model directory, with
 * model.safetensors or model.safetensors.index.json), else the directory that
 * path/latest names. Errors name the path and what is missing. */
DsaStatus dsa_checkpoint_resolve(const char *path, char *dir, size_t cap);
/* Check every file listed in dir/manifest.json: present, its size, its CRC32; sets
 * *verified. Errors (DSA_ERR_FORMAT) name the file and the mismatch, expected and found.
 * A directory without manifest.json but with model.safetensors (or its index) is a plain
 * Hugging Face model directory: accepted with *verified = false. */
DsaStatus dsa_checkpoint_verify(const char *dir, bool *verified);

#endif
