/* fileutil.c: file helpers (see fileutil.h). */
#include "core/fileutil.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/mem.h"

DsaStatus dsa_file_size(const char *path, int64_t *size) {
    struct stat st;
    if (stat(path, &st) != 0) DSA_FAIL(DSA_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode)) DSA_FAIL(DSA_ERR_IO, "%s: not a regular file", path);
    *size = (int64_t)st.st_size;
    return DSA_OK;
}

DsaStatus dsa_file_read_all(const char *path, char **buf, size_t *len) {
    *buf = NULL;
    *len = 0;
    int64_t size = 0;
    DSA_TRY(dsa_file_size(path, &size));
    FILE *f = fopen(path, "rb");
    if (!f) DSA_FAIL(DSA_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    char *data = dsa_malloc((size_t)size + 1);
    if (!data) {
        fclose(f);
        DSA_FAIL(DSA_ERR_NOMEM, "%s: out of memory reading %lld bytes", path, (long long)size);
    }
    size_t got = fread(data, 1, (size_t)size, f);
    int err = ferror(f);
    fclose(f);
    if (got != (size_t)size || err) {
        dsa_free(data, (size_t)size + 1);
        DSA_FAIL(DSA_ERR_IO, "%s: short read (%zu of %lld bytes)", path, got, (long long)size);
    }
    data[size] = '\0';
    *buf = data;
    *len = (size_t)size;
    return DSA_OK;
}

DsaStatus dsa_mkdir_p(const char *path) {
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) DSA_FAIL(DSA_ERR_ARG, "path too long: %s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(buf, 0777) != 0 && errno != EEXIST) DSA_FAIL(DSA_ERR_IO, "%s: cannot create directory: %s", buf, strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, 0777) != 0 && errno != EEXIST) DSA_FAIL(DSA_ERR_IO, "%s: cannot create directory: %s", buf, strerror(errno));
    struct stat st;
    if (stat(buf, &st) != 0 || !S_ISDIR(st.st_mode)) DSA_FAIL(DSA_ERR_IO, "%s: exists and is not a directory", buf);
    return DSA_OK;
}

DsaStatus dsa_fsync_path(const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) DSA_FAIL(DSA_ERR_IO, "%s: cannot open for fsync: %s", path, strerror(errno));
    int rc = fsync(fd);
    int saved = errno;
    close(fd);
    /* Some file systems refuse fsync on directories (EINVAL): nothing more can be done. */
    if (rc != 0 && saved != EINVAL) DSA_FAIL(DSA_ERR_IO, "%s: fsync failed: %s", path, strerror(saved));
    return DSA_OK;
}

DsaStatus dsa_rename_durable(const char *tmp, const char *final_path) {
    if (rename(tmp, final_path) != 0)
        DSA_FAIL(DSA_ERR_IO, "cannot rename %s to %s: %s", tmp, final_path, strerror(errno));
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", final_path);
    DSA_TRY(dsa_fsync_path(dirname(dir)));
    return DSA_OK;
}

void dsa_temp_path(char *buf, size_t cap, const char *path) {
    char copy1[4096], copy2[4096];
    snprintf(copy1, sizeof copy1, "%s", path);
    snprintf(copy2, sizeof copy2, "%s", path);
    snprintf(buf, cap, "%s/.%s.tmp.%ld", dirname(copy1), basename(copy2), (long)getpid());
}
