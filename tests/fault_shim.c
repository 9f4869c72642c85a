/* fault_shim.c: an LD_PRELOAD fault injector for the crash-consistency tests
 * (tests/reliability.sh). Loaded into a process, it counts the file-system operations
 * that process performs under chosen directories and, at the n-th one, either SIGKILLs
 * the process just before the operation would happen ("kill at every syscall": run once
 * per n) or makes it, and every later operation that needs disk space, fail with ENOSPC
 * as a full disk does.
 *
 * Environment, read once when the library loads:
 *   DSA_FAULT_DIR   directories, ':'-separated. Only operations on paths under one of
 *                   them, or on descriptors and FILE streams opened there, are counted.
 *                   Unset: the shim only passes calls through.
 *   DSA_FAULT_AT    n >= 1: the n-th counted operation is the fault. 0 or unset: count
 *                   only (with DSA_FAULT_LOG, to learn how many operations a run does).
 *   DSA_FAULT_MODE  "kill" (default): raise SIGKILL instead of performing operation n.
 *                   "enospc": operation n and every later counted operation that
 *                   allocates space fails with errno ENOSPC (write, pwrite, writev, the
 *                   stdio writes and fflush/fclose of a stream with data, fsync,
 *                   fdatasync, ftruncate, fallocate, open/fopen creating a file, mkdir,
 *                   rename, link, symlink); unlink, rmdir and close still work, as they
 *                   do on a full disk. Nothing is written by a failed call.
 *   DSA_FAULT_OPS   ','-separated operation names to count (default: all of them):
 *                   open write fsync truncate rename link unlink mkdir rmdir close.
 *   DSA_FAULT_LOG   append one line per counted operation, "N OP PATH", and "fault N"
 *                   before a fault, to this file. "%p" in the name becomes the pid and
 *                   "%r" the MPI rank, so processes that share the environment (mpirun
 *                   ranks, children) write separate logs.
 *   DSA_FAULT_RANK  only the process whose MPI rank is this injects; the others count
 *                   (and log) but never fault. The rank is read from
 *                   OMPI_COMM_WORLD_RANK, PMI_RANK, PMIX_RANK or SLURM_PROCID.
 *
 * Reuse for a multi-rank save: run `mpirun -np N env LD_PRELOAD=... DSA_FAULT_DIR=OUT
 * DSA_FAULT_LOG=OUT.log.%r dsa train ...` once to count each rank's operations (wc -l of
 * each log), then for every rank r and every n up to its count run again with
 * DSA_FAULT_RANK=r DSA_FAULT_AT=n; the other ranks see rank r die mid-save exactly as
 * after a real kill. tests/reliability.sh's sweep() is written to take any command.
 *
 * Counted operations: open/open64/openat/openat64/creat/fopen/fopen64 for writing
 * (O_WRONLY, O_RDWR, O_CREAT or O_TRUNC; a read-only open under a directory is tracked
 * for the fsync that may follow, not counted), write/pwrite/pwrite64/writev/pwritev,
 * on tracked streams, the calls where stdio's buffer goes to the kernel: a fwrite/fputs/
 * fputc/putc/fprintf/vfprintf that overflows the buffer, and fflush/fclose with data
 * pending (glibc's stdio calls write(2) internally, out of the shim's reach; a put that
 * only fills the buffer changes nothing on disk), fsync/fdatasync, ftruncate/ftruncate64/truncate/fallocate/
 * posix_fallocate, rename/renameat/renameat2, link/linkat/symlink/symlinkat,
 * unlink/unlinkat/remove/rmdir, mkdir/mkdirat, and close of a tracked descriptor that
 * was opened for writing (DSA_FAULT_OPS=close only: closing adds nothing durable). Two
 * directories on one path (a symlink) are compared by their resolved paths.
 *
 * NOTE: this file is a test tool, not part of libdsa; it reads the environment (the
 * project's code never does) and keeps process-wide state, as an interposer must.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdio_ext.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

enum { MAX_DIRS = 8, MAX_FDS = 4096, MAX_STREAMS = 64 };
enum { OP_OPEN = 1, OP_WRITE = 2, OP_FSYNC = 4, OP_TRUNCATE = 8, OP_RENAME = 16, OP_LINK = 32, OP_UNLINK = 64,
       OP_MKDIR = 128, OP_RMDIR = 256, OP_CLOSE = 512 };

static const struct {
    const char *name;
    int bit;
} op_names[] = {{"open", OP_OPEN},   {"write", OP_WRITE},   {"fsync", OP_FSYNC}, {"truncate", OP_TRUNCATE},
                {"rename", OP_RENAME}, {"link", OP_LINK},   {"unlink", OP_UNLINK}, {"mkdir", OP_MKDIR},
                {"rmdir", OP_RMDIR}, {"close", OP_CLOSE}};

static struct {
    bool on;                  /* DSA_FAULT_DIR given */
    char dirs[MAX_DIRS][PATH_MAX];
    int n_dirs;
    long at;                  /* DSA_FAULT_AT */
    bool enospc;              /* DSA_FAULT_MODE=enospc */
    bool may_inject;          /* not filtered out by DSA_FAULT_RANK */
    int ops;                  /* DSA_FAULT_OPS mask */
    int log_fd;
    long count;               /* counted operations so far */
    bool full;                /* ENOSPC mode: the disk is "full" */
    char *fd_path[MAX_FDS];   /* tracked descriptors: the path they were opened with */
    bool fd_written[MAX_FDS]; /* opened for writing */
    FILE *streams[MAX_STREAMS];
    char *stream_path[MAX_STREAMS];
} S = {.log_fd = -1, .ops = ~0};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

/* The next definition of `name` (libc's), looked up once. */
#define REAL(ret, name, ...)                                                     \
    static ret (*real_##name)(__VA_ARGS__);                                      \
    if (!real_##name) real_##name = (ret(*)(__VA_ARGS__))dlsym(RTLD_NEXT, #name)

static ssize_t raw_write(int fd, const void *buf, size_t n) {
    REAL(ssize_t, write, int, const void *, size_t);
    return real_write(fd, buf, n);
}

static void log_line(const char *text) {
    if (S.log_fd >= 0) raw_write(S.log_fd, text, strlen(text));
}

static const char *rank_text(void) {
    const char *vars[] = {"OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "SLURM_PROCID"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        if (getenv(vars[i])) return getenv(vars[i]);
    return NULL;
}

/* `tmpl` with %p -> pid and %r -> rank ("x" without one). */
static void expand_log_path(char *out, size_t cap, const char *tmpl) {
    size_t n = 0;
    const char *rank = rank_text();
    for (const char *p = tmpl; *p && n + 24 < cap; p++) {
        if (p[0] == '%' && p[1] == 'p') n += (size_t)snprintf(out + n, cap - n, "%ld", (long)getpid()), p++;
        else if (p[0] == '%' && p[1] == 'r') n += (size_t)snprintf(out + n, cap - n, "%s", rank ? rank : "x"), p++;
        else out[n++] = *p;
    }
    out[n] = 0;
}

__attribute__((constructor)) static void shim_init(void) {
    const char *dirs = getenv("DSA_FAULT_DIR");
    if (!dirs || !*dirs) return;
    char copy[MAX_DIRS * PATH_MAX];
    snprintf(copy, sizeof copy, "%s", dirs);
    for (char *save = NULL, *d = strtok_r(copy, ":", &save); d && S.n_dirs < MAX_DIRS; d = strtok_r(NULL, ":", &save)) {
        /* the directory may not exist yet (the run creates it): resolve what exists */
        if (!realpath(d, S.dirs[S.n_dirs])) snprintf(S.dirs[S.n_dirs], PATH_MAX, "%s", d);
        S.n_dirs++;
    }
    S.on = S.n_dirs > 0;
    S.at = getenv("DSA_FAULT_AT") ? atol(getenv("DSA_FAULT_AT")) : 0;
    S.enospc = getenv("DSA_FAULT_MODE") && !strcmp(getenv("DSA_FAULT_MODE"), "enospc");
    const char *want_rank = getenv("DSA_FAULT_RANK"), *rank = rank_text();
    S.may_inject = !want_rank || (rank && !strcmp(rank, want_rank));
    const char *ops = getenv("DSA_FAULT_OPS");
    if (ops && *ops) {
        S.ops = 0;
        for (size_t i = 0; i < sizeof op_names / sizeof op_names[0]; i++) {
            const char *hit = strstr(ops, op_names[i].name);
            size_t len = strlen(op_names[i].name);
            if (hit && (hit == ops || hit[-1] == ',') && (hit[len] == 0 || hit[len] == ',')) S.ops |= op_names[i].bit;
        }
    } else {
        S.ops &= ~OP_CLOSE; /* closing adds nothing durable: counted only when asked for */
    }
    const char *log = getenv("DSA_FAULT_LOG");
    if (log && *log) {
        char path[PATH_MAX];
        expand_log_path(path, sizeof path, log);
        REAL(int, open, const char *, int, ...);
        S.log_fd = real_open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    }
}

/* ---- which paths count -------------------------------------------------------------- */

/* Absolute, resolved form of (dirfd, path): the parent resolved by realpath, the last
 * component kept (it may not exist yet). */
static bool resolve(int dirfd, const char *path, char *out) {
    char abs[2 * PATH_MAX], parent[PATH_MAX];
    if (!path) return false;
    if (path[0] == '/') {
        snprintf(abs, sizeof abs, "%s", path);
    } else {
        char base[PATH_MAX];
        if (dirfd == AT_FDCWD) {
            if (!getcwd(base, sizeof base)) return false;
        } else {
            char link[64];
            snprintf(link, sizeof link, "/proc/self/fd/%d", dirfd);
            ssize_t n = readlink(link, base, sizeof base - 1);
            if (n <= 0) return false;
            base[n] = 0;
        }
        snprintf(abs, sizeof abs, "%s/%s", base, path);
    }
    size_t len = strlen(abs);
    while (len > 1 && abs[len - 1] == '/') abs[--len] = 0;
    char *slash = strrchr(abs, '/');
    if (!slash) return false;
    const char *leaf = slash + 1;
    if (slash == abs) snprintf(parent, sizeof parent, "/");
    else {
        *slash = 0;
        if (!realpath(abs, parent)) snprintf(parent, sizeof parent, "%s", abs);
    }
    int n = snprintf(out, PATH_MAX, "%s%s%.*s", parent, strcmp(parent, "/") ? "/" : "", (int)(PATH_MAX / 2), leaf);
    return n > 0 && n < PATH_MAX;
}

static bool is_under(const char *resolved) {
    for (int i = 0; i < S.n_dirs; i++) {
        size_t n = strlen(S.dirs[i]);
        if (!strncmp(resolved, S.dirs[i], n) && (resolved[n] == 0 || resolved[n] == '/')) return true;
    }
    return false;
}

static bool path_counts(int dirfd, const char *path, char *resolved) {
    return S.on && resolve(dirfd, path, resolved) && is_under(resolved);
}

static const char *fd_tracked(int fd) { return fd >= 0 && fd < MAX_FDS ? S.fd_path[fd] : NULL; }

static int stream_index(FILE *f) {
    for (int i = 0; f && i < MAX_STREAMS; i++)
        if (S.streams[i] == f) return i;
    return -1;
}

/* ---- the fault point ---------------------------------------------------------------- */

/* Count one operation `op` (bit `kind`) on `path`; returns 0 to perform it, or ENOSPC
 * to fail it. In kill mode the process dies here at the n-th. `allocates`: the
 * operation needs disk space (ENOSPC mode). */
static int fault_point(int kind, const char *op, const char *path, bool allocates) {
    if (!(S.ops & kind)) return 0;
    pthread_mutex_lock(&lock);
    long n = ++S.count;
    char line[PATH_MAX + 64];
    snprintf(line, sizeof line, "%ld %s %s\n", n, op, path ? path : "?");
    log_line(line);
    int fail = 0;
    if (S.may_inject && S.at > 0 && n == S.at) {
        snprintf(line, sizeof line, "fault %ld\n", n);
        log_line(line);
        if (!S.enospc) {
            kill(getpid(), SIGKILL);
            for (;;) pause(); /* SIGKILL cannot be caught: never reached */
        }
        S.full = true;
    }
    if (S.full && allocates) fail = ENOSPC;
    pthread_mutex_unlock(&lock);
    return fail;
}

static bool opens_for_writing(int flags) { return (flags & (O_WRONLY | O_RDWR | O_CREAT | O_TRUNC)) != 0; }

static void track_fd(int fd, const char *path, bool written) {
    if (fd < 0 || fd >= MAX_FDS) return;
    pthread_mutex_lock(&lock);
    free(S.fd_path[fd]);
    S.fd_path[fd] = strdup(path);
    S.fd_written[fd] = written;
    pthread_mutex_unlock(&lock);
}

static void untrack_fd(int fd) {
    if (fd < 0 || fd >= MAX_FDS || !S.fd_path[fd]) return;
    pthread_mutex_lock(&lock);
    free(S.fd_path[fd]);
    S.fd_path[fd] = NULL;
    S.fd_written[fd] = false;
    pthread_mutex_unlock(&lock);
}

/* Before an open of (dirfd, path): count it when it writes; ENOSPC when it would create
 * a file on a full disk. Returns 0 to go on, else the errno to fail with. */
static int before_open(int dirfd, const char *path, int flags, char *resolved, bool *counts) {
    *counts = path_counts(dirfd, path, resolved);
    if (!*counts || !opens_for_writing(flags)) return 0;
    struct stat sb;
    bool creates = (flags & O_CREAT) && fstatat(dirfd, path, &sb, 0) != 0;
    return fault_point(OP_OPEN, "open", resolved, creates);
}

static int after_open(int fd, bool counts, const char *resolved, int flags) {
    if (fd >= 0 && counts) track_fd(fd, resolved, opens_for_writing(flags));
    return fd;
}

static mode_t mode_arg(int flags, va_list ap) { return (flags & (O_CREAT | O_TMPFILE)) ? (mode_t)va_arg(ap, int) : 0; }

#define OPEN_BODY(real, dirfd, ...)                                            \
    char resolved[PATH_MAX];                                                   \
    bool counts = false;                                                       \
    int err = before_open(dirfd, path, flags, resolved, &counts);              \
    if (err) {                                                                 \
        errno = err;                                                           \
        return -1;                                                             \
    }                                                                          \
    return after_open(real(__VA_ARGS__), counts, resolved, flags)

int open(const char *path, int flags, ...) {
    va_list ap;
    va_start(ap, flags);
    mode_t mode = mode_arg(flags, ap);
    va_end(ap);
    REAL(int, open, const char *, int, ...);
    OPEN_BODY(real_open, AT_FDCWD, path, flags, mode);
}

int open64(const char *path, int flags, ...) {
    va_list ap;
    va_start(ap, flags);
    mode_t mode = mode_arg(flags, ap);
    va_end(ap);
    REAL(int, open64, const char *, int, ...);
    OPEN_BODY(real_open64, AT_FDCWD, path, flags, mode);
}

int openat(int dirfd, const char *path, int flags, ...) {
    va_list ap;
    va_start(ap, flags);
    mode_t mode = mode_arg(flags, ap);
    va_end(ap);
    REAL(int, openat, int, const char *, int, ...);
    OPEN_BODY(real_openat, dirfd, dirfd, path, flags, mode);
}

int openat64(int dirfd, const char *path, int flags, ...) {
    va_list ap;
    va_start(ap, flags);
    mode_t mode = mode_arg(flags, ap);
    va_end(ap);
    REAL(int, openat64, int, const char *, int, ...);
    OPEN_BODY(real_openat64, dirfd, dirfd, path, flags, mode);
}

int creat(const char *path, mode_t mode) { return open(path, O_CREAT | O_WRONLY | O_TRUNC, mode); }
int creat64(const char *path, mode_t mode) { return open64(path, O_CREAT | O_WRONLY | O_TRUNC, mode); }

int close(int fd) {
    REAL(int, close, int);
    const char *p = fd_tracked(fd);
    if (p && S.fd_written[fd]) fault_point(OP_CLOSE, "close", p, false);
    untrack_fd(fd);
    return real_close(fd);
}

/* ---- descriptors: writes, syncs, truncation ----------------------------------------- */

/* Count an operation on a tracked descriptor; returns the errno to fail with, or 0. */
static int fd_point(int fd, int kind, const char *op, bool allocates) {
    const char *p = fd_tracked(fd);
    return p ? fault_point(kind, op, p, allocates) : 0;
}

#define FD_GUARD(fd, kind, op, allocates, fail_value) \
    do {                                                \
        int err_ = fd_point(fd, kind, op, allocates);   \
        if (err_) {                                     \
            errno = err_;                               \
            return fail_value;                          \
        }                                               \
    } while (0)

ssize_t write(int fd, const void *buf, size_t n) {
    FD_GUARD(fd, OP_WRITE, "write", n > 0, -1);
    return raw_write(fd, buf, n);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off) {
    REAL(ssize_t, pwrite, int, const void *, size_t, off_t);
    FD_GUARD(fd, OP_WRITE, "pwrite", n > 0, -1);
    return real_pwrite(fd, buf, n, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off64_t off) {
    REAL(ssize_t, pwrite64, int, const void *, size_t, off64_t);
    FD_GUARD(fd, OP_WRITE, "pwrite", n > 0, -1);
    return real_pwrite64(fd, buf, n, off);
}

ssize_t writev(int fd, const struct iovec *iov, int cnt) {
    REAL(ssize_t, writev, int, const struct iovec *, int);
    FD_GUARD(fd, OP_WRITE, "writev", cnt > 0, -1);
    return real_writev(fd, iov, cnt);
}

ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off) {
    REAL(ssize_t, pwritev, int, const struct iovec *, int, off_t);
    FD_GUARD(fd, OP_WRITE, "pwritev", cnt > 0, -1);
    return real_pwritev(fd, iov, cnt, off);
}

int fsync(int fd) {
    REAL(int, fsync, int);
    FD_GUARD(fd, OP_FSYNC, "fsync", true, -1);
    return real_fsync(fd);
}

int fdatasync(int fd) {
    REAL(int, fdatasync, int);
    FD_GUARD(fd, OP_FSYNC, "fdatasync", true, -1);
    return real_fdatasync(fd);
}

int ftruncate(int fd, off_t len) {
    REAL(int, ftruncate, int, off_t);
    FD_GUARD(fd, OP_TRUNCATE, "ftruncate", true, -1);
    return real_ftruncate(fd, len);
}

int ftruncate64(int fd, off64_t len) {
    REAL(int, ftruncate64, int, off64_t);
    FD_GUARD(fd, OP_TRUNCATE, "ftruncate", true, -1);
    return real_ftruncate64(fd, len);
}

int fallocate(int fd, int mode, off_t off, off_t len) {
    REAL(int, fallocate, int, int, off_t, off_t);
    FD_GUARD(fd, OP_TRUNCATE, "fallocate", true, -1);
    return real_fallocate(fd, mode, off, len);
}

int posix_fallocate(int fd, off_t off, off_t len) {
    REAL(int, posix_fallocate, int, off_t, off_t);
    int err = fd_point(fd, OP_TRUNCATE, "posix_fallocate", true);
    return err ? err : real_posix_fallocate(fd, off, len); /* returns the error number */
}

/* ---- paths: rename, link, unlink, mkdir ----------------------------------------------- */

/* Count an operation on (dirfd, path) (and a second path, for rename and link, when the
 * first is not under a directory). Returns the errno to fail with, or 0. */
static int path_point(int kind, const char *op, int dirfd, const char *path, int dirfd2, const char *path2,
                      bool allocates) {
    char resolved[PATH_MAX];
    if (path_counts(dirfd, path, resolved) || (path2 && path_counts(dirfd2, path2, resolved)))
        return fault_point(kind, op, resolved, allocates);
    return 0;
}

#define PATH_GUARD(...)                      \
    do {                                     \
        int err_ = path_point(__VA_ARGS__);  \
        if (err_) {                          \
            errno = err_;                    \
            return -1;                       \
        }                                    \
    } while (0)

int rename(const char *from, const char *to) {
    REAL(int, rename, const char *, const char *);
    PATH_GUARD(OP_RENAME, "rename", AT_FDCWD, to, AT_FDCWD, from, true);
    return real_rename(from, to);
}

int renameat(int fd1, const char *from, int fd2, const char *to) {
    REAL(int, renameat, int, const char *, int, const char *);
    PATH_GUARD(OP_RENAME, "renameat", fd2, to, fd1, from, true);
    return real_renameat(fd1, from, fd2, to);
}

int renameat2(int fd1, const char *from, int fd2, const char *to, unsigned flags) {
    REAL(int, renameat2, int, const char *, int, const char *, unsigned);
    PATH_GUARD(OP_RENAME, "renameat2", fd2, to, fd1, from, true);
    return real_renameat2(fd1, from, fd2, to, flags);
}

int link(const char *from, const char *to) {
    REAL(int, link, const char *, const char *);
    PATH_GUARD(OP_LINK, "link", AT_FDCWD, to, AT_FDCWD, from, true);
    return real_link(from, to);
}

int linkat(int fd1, const char *from, int fd2, const char *to, int flags) {
    REAL(int, linkat, int, const char *, int, const char *, int);
    PATH_GUARD(OP_LINK, "linkat", fd2, to, fd1, from, true);
    return real_linkat(fd1, from, fd2, to, flags);
}

int symlink(const char *target, const char *path) {
    REAL(int, symlink, const char *, const char *);
    PATH_GUARD(OP_LINK, "symlink", AT_FDCWD, path, AT_FDCWD, NULL, true);
    return real_symlink(target, path);
}

int symlinkat(const char *target, int dirfd, const char *path) {
    REAL(int, symlinkat, const char *, int, const char *);
    PATH_GUARD(OP_LINK, "symlinkat", dirfd, path, AT_FDCWD, NULL, true);
    return real_symlinkat(target, dirfd, path);
}

int unlink(const char *path) {
    REAL(int, unlink, const char *);
    PATH_GUARD(OP_UNLINK, "unlink", AT_FDCWD, path, AT_FDCWD, NULL, false);
    return real_unlink(path);
}

int unlinkat(int dirfd, const char *path, int flags) {
    REAL(int, unlinkat, int, const char *, int);
    PATH_GUARD((flags & AT_REMOVEDIR) ? OP_RMDIR : OP_UNLINK, "unlinkat", dirfd, path, AT_FDCWD, NULL, false);
    return real_unlinkat(dirfd, path, flags);
}

int remove(const char *path) {
    REAL(int, remove, const char *);
    PATH_GUARD(OP_UNLINK, "remove", AT_FDCWD, path, AT_FDCWD, NULL, false);
    return real_remove(path);
}

int rmdir(const char *path) {
    REAL(int, rmdir, const char *);
    PATH_GUARD(OP_RMDIR, "rmdir", AT_FDCWD, path, AT_FDCWD, NULL, false);
    return real_rmdir(path);
}

int truncate(const char *path, off_t len) {
    REAL(int, truncate, const char *, off_t);
    PATH_GUARD(OP_TRUNCATE, "truncate", AT_FDCWD, path, AT_FDCWD, NULL, true);
    return real_truncate(path, len);
}

int mkdir(const char *path, mode_t mode) {
    REAL(int, mkdir, const char *, mode_t);
    PATH_GUARD(OP_MKDIR, "mkdir", AT_FDCWD, path, AT_FDCWD, NULL, true);
    return real_mkdir(path, mode);
}

int mkdirat(int dirfd, const char *path, mode_t mode) {
    REAL(int, mkdirat, int, const char *, mode_t);
    PATH_GUARD(OP_MKDIR, "mkdirat", dirfd, path, AT_FDCWD, NULL, true);
    return real_mkdirat(dirfd, path, mode);
}

/* ---- stdio streams ----------------------------------------------------------------------- */

static bool mode_writes(const char *mode) { return mode && (strchr(mode, 'w') || strchr(mode, 'a') || strchr(mode, '+')); }

static FILE *track_stream(FILE *f, const char *resolved) {
    if (!f) return f;
    pthread_mutex_lock(&lock);
    for (int i = 0; i < MAX_STREAMS; i++) {
        if (S.streams[i]) continue;
        S.streams[i] = f;
        S.stream_path[i] = strdup(resolved);
        break;
    }
    pthread_mutex_unlock(&lock);
    return f;
}

static FILE *open_stream(FILE *(*real)(const char *, const char *), const char *path, const char *mode) {
    char resolved[PATH_MAX];
    if (!path_counts(AT_FDCWD, path, resolved) || !mode_writes(mode)) return real(path, mode);
    struct stat sb;
    int err = fault_point(OP_OPEN, "fopen", resolved, stat(path, &sb) != 0);
    if (err) {
        errno = err;
        return NULL;
    }
    return track_stream(real(path, mode), resolved);
}

FILE *fopen(const char *path, const char *mode) {
    REAL(FILE *, fopen, const char *, const char *);
    return open_stream(real_fopen, path, mode);
}

FILE *fopen64(const char *path, const char *mode) {
    REAL(FILE *, fopen64, const char *, const char *);
    return open_stream(real_fopen64, path, mode);
}

FILE *fdopen(int fd, const char *mode) {
    REAL(FILE *, fdopen, int, const char *);
    FILE *f = real_fdopen(fd, mode);
    const char *p = fd_tracked(fd);
    return p && mode_writes(mode) ? track_stream(f, p) : f;
}

/* Count a call on stream f that hands `len` bytes to the kernel, or buffers them when
 * they fit (then nothing reaches the disk and nothing is counted: glibc's stdio calls
 * write(2) internally, out of the shim's reach, so a stream is counted where its buffer
 * is written: a put that overflows the buffer, fflush, fclose). Returns the errno to
 * fail with, or 0. A stream that fails is purged, so stdio never writes its buffer
 * afterwards. */
static int stream_point(FILE *f, const char *op, size_t len, bool flushes) {
    int i = stream_index(f);
    if (i < 0) return 0;
    size_t pending = __fpending(f), cap = __fbufsize(f) ? __fbufsize(f) : 4096; /* glibc: st_blksize */
    bool writes = flushes ? pending > 0 : pending + len > cap;
    if (!writes) return 0;
    int err = fault_point(OP_WRITE, op, S.stream_path[i], true);
    if (err) __fpurge(f);
    return err;
}

#define STREAM_GUARD(f, op, len, flushes, fail_value)       \
    do {                                                     \
        int err_ = stream_point(f, op, len, flushes);        \
        if (err_) {                                          \
            errno = err_;                                    \
            return fail_value;                               \
        }                                                    \
    } while (0)

size_t fwrite(const void *p, size_t size, size_t n, FILE *f) {
    REAL(size_t, fwrite, const void *, size_t, size_t, FILE *);
    STREAM_GUARD(f, "fwrite", size * n, false, 0);
    return real_fwrite(p, size, n, f);
}

int fputs(const char *s, FILE *f) {
    REAL(int, fputs, const char *, FILE *);
    STREAM_GUARD(f, "fputs", strlen(s), false, EOF);
    return real_fputs(s, f);
}

int fputc(int c, FILE *f) {
    REAL(int, fputc, int, FILE *);
    STREAM_GUARD(f, "fputc", 1, false, EOF);
    return real_fputc(c, f);
}

int putc(int c, FILE *f) {
    REAL(int, putc, int, FILE *);
    STREAM_GUARD(f, "putc", 1, false, EOF);
    return real_putc(c, f);
}

int vfprintf(FILE *restrict f, const char *restrict fmt, va_list ap) {
    REAL(int, vfprintf, FILE *, const char *, va_list);
    if (stream_index(f) >= 0) {
        va_list copy;
        va_copy(copy, ap);
        int len = vsnprintf(NULL, 0, fmt, copy);
        va_end(copy);
        STREAM_GUARD(f, "fprintf", len > 0 ? (size_t)len : 0, false, -1);
    }
    return real_vfprintf(f, fmt, ap);
}

int fprintf(FILE *restrict f, const char *restrict fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int r = vfprintf(f, fmt, ap);
    va_end(ap);
    return r;
}

int fflush(FILE *f) {
    REAL(int, fflush, FILE *);
    if (f) STREAM_GUARD(f, "fflush", 0, true, EOF);
    return real_fflush(f);
}

int fclose(FILE *f) {
    REAL(int, fclose, FILE *);
    untrack_fd(fileno(f)); /* glibc closes the descriptor without calling close() */
    int i = stream_index(f);
    int err = i >= 0 ? stream_point(f, "fclose", 0, true) : 0;
    if (i >= 0) {
        pthread_mutex_lock(&lock);
        free(S.stream_path[i]);
        S.streams[i] = NULL, S.stream_path[i] = NULL;
        pthread_mutex_unlock(&lock);
    }
    int r = real_fclose(f);
    if (err) {
        errno = err;
        return EOF;
    }
    return r;
}
