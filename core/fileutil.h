/* fileutil.h: file helpers with error trails: whole-file reads, directories, and the
 * write-to-temporary, fsync, rename sequence that makes a write atomic.
 *
 * Temporary names: a file or directory being written as `<dir>/<name>` lives as
 * `<dir>/.<name>.tmp.<pid>` (dsa_temp_path) until it is renamed into place. A process
 * killed before the rename leaves it behind; the next run of the same command removes
 * the ones whose process is gone (dsa_temp_remove_stale), naming each in a warning. */
#ifndef DSA_CORE_FILEUTIL_H
#define DSA_CORE_FILEUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

/* Read a whole file into a dsa_malloc'ed, NUL-terminated buffer (free with
 * dsa_free(buf, *len + 1)). */
DsaStatus dsa_file_read_all(const char *path, char **buf, size_t *len);
/* Size of a file in bytes. */
DsaStatus dsa_file_size(const char *path, int64_t *size);
/* Create a directory and its parents (like mkdir -p). */
DsaStatus dsa_mkdir_p(const char *path);
/* fsync a file or directory by path. */
DsaStatus dsa_fsync_path(const char *path);
/* rename(tmp, final), then fsync final's directory so the rename is durable. */
DsaStatus dsa_rename_durable(const char *tmp, const char *final_path);
/* The temporary name used while writing `path`: "<dir>/.<name>.tmp.<pid>". */
void dsa_temp_path(char *buf, size_t cap, const char *path);
/* Remove the temporaries `<dir>/.<name>.tmp.<pid>` (files, or directories of plain
 * files) whose process `pid` no longer runs, for the `name` equal to `match` (exact) or
 * starting with it (!exact; NULL or "": any name), logging a warning naming each. A
 * temporary of a live process is left alone (another writer is at work), and so is one
 * of this process. Returns the number removed; a directory that cannot be listed is
 * nothing to do. */
int dsa_temp_remove_stale(const char *dir, const char *match, bool exact);
/* Is process `pid` running (or alive but not ours to signal)? */
bool dsa_pid_alive(long pid);
/* open(2) and fsync(2), retried on EINTR; return what the call returns (errno set). */
int dsa_open_retry(const char *path, int flags, unsigned mode);
int dsa_fsync_retry(int fd);
/* Create/replace `path` with `n` bytes of `data`, fsynced (not atomic: write into a
 * temporary name and rename for that). */
DsaStatus dsa_file_write_synced(const char *path, const void *data, size_t n);
/* Remove a directory of plain files and the directory itself, best effort: failures
 * are logged as warnings; a nested directory is left (with a warning), and so the
 * directory with it; a directory that does not exist is nothing to do. */
void dsa_remove_flat_dir(const char *dir);

#endif
