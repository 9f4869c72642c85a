/* fileutil.c: file helpers (see fileutil.h). */
#include "core/fileutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <signal.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/log.h"
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

int dsa_open_retry(const char *path, int flags, unsigned mode) {
    int fd;
    do fd = open(path, flags, (mode_t)mode);
    while (fd < 0 && errno == EINTR);
    return fd;
}

int dsa_fsync_retry(int fd) {
    int rc;
    do rc = fsync(fd);
    while (rc != 0 && errno == EINTR);
    return rc;
}

DsaStatus dsa_file_write_synced(const char *path, const void *data, size_t n) {
    int fd = dsa_open_retry(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) DSA_FAIL(DSA_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    const char *bytes = data;
    size_t off = 0;
    while (off < n) {
        ssize_t r = write(fd, bytes + off, n - off);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            int err = r < 0 ? errno : ENOSPC;
            close(fd);
            DSA_FAIL(DSA_ERR_IO, "%s: write failed: %s", path, strerror(err));
        }
        off += (size_t)r;
    }
    if (dsa_fsync_retry(fd) != 0) {
        int err = errno;
        close(fd);
        DSA_FAIL(DSA_ERR_IO, "%s: fsync failed: %s", path, strerror(err));
    }
    if (close(fd) != 0) DSA_FAIL(DSA_ERR_IO, "%s: close failed: %s", path, strerror(errno));
    return DSA_OK;
}

void dsa_remove_flat_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) {
        if (errno != ENOENT) dsa_log(DSA_LOG_WARN, "cannot list %s to remove it: %s", dir, strerror(errno));
        return;
    }
    struct dirent *e;
    char path[8192];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        struct stat sb;
        int n = snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (n < 0 || (size_t)n >= sizeof path || lstat(path, &sb) != 0) continue;
        if (S_ISDIR(sb.st_mode)) {
            dsa_log(DSA_LOG_WARN, "not removing %s: a directory inside a temporary directory", path);
            continue;
        }
        if (unlink(path) != 0) dsa_log(DSA_LOG_WARN, "cannot remove %s: %s", path, strerror(errno));
    }
    closedir(d);
    if (rmdir(dir) != 0) dsa_log(DSA_LOG_WARN, "cannot remove %s: %s", dir, strerror(errno));
}

bool dsa_pid_alive(long pid) {
    if (pid <= 0) return false;
    return kill((pid_t)pid, 0) == 0 || errno == EPERM;
}

/* The pid of a temporary name ".<name>.tmp.<pid>" whose <name> is `match` (exact) or
 * starts with it, or -1 when `entry` is no such name. */
static long temp_pid(const char *entry, const char *match, bool exact) {
    size_t mlen = match ? strlen(match) : 0;
    if (entry[0] != '.' || strncmp(entry + 1, match ? match : "", mlen) != 0) return -1;
    const char *last = NULL;
    for (const char *tag = strstr(entry + 1, ".tmp."); tag; tag = strstr(tag + 1, ".tmp.")) last = tag;
    if (!last || last == entry + 1) return -1; /* the name itself may hold ".tmp.": take the last */
    size_t nlen = (size_t)(last - entry - 1);
    if (nlen < mlen || (exact && nlen != mlen)) return -1;
    char *end = NULL;
    long pid = strtol(last + 5, &end, 10);
    return end != last + 5 && *end == '\0' && pid > 0 ? pid : -1;
}

int dsa_temp_remove_stale(const char *dir, const char *match, bool exact) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int removed = 0;
    char path[8192];
    for (struct dirent *e; (e = readdir(d));) {
        long pid = temp_pid(e->d_name, match, exact);
        if (pid < 0 || pid == (long)getpid() || dsa_pid_alive(pid)) continue;
        int n = snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat sb;
        if (n < 0 || (size_t)n >= sizeof path || lstat(path, &sb) != 0) continue;
        dsa_log(DSA_LOG_WARN, "removing %s, left by process %ld that did not finish writing it", path, pid);
        if (S_ISDIR(sb.st_mode)) dsa_remove_flat_dir(path);
        else if (unlink(path) != 0) dsa_log(DSA_LOG_WARN, "cannot remove %s: %s", path, strerror(errno));
        removed++;
    }
    closedir(d);
    return removed;
}
