/* fileutil.h: file helpers with error trails: whole-file reads, directories, and the
 * write-to-temporary, fsync, rename sequence that makes a write atomic. */
#ifndef DSA_CORE_FILEUTIL_H
#define DSA_CORE_FILEUTIL_H

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

#endif
