/* error.c: the thread-local error trail behind error.h. */
#include "core/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { TRAIL_CAP = 8192 };

static _Thread_local char trail[TRAIL_CAP];
static _Thread_local size_t trail_len;
static _Thread_local DsaStatus trail_status;

const char *dsa_status_name(DsaStatus status) {
    switch (status) {
    case DSA_OK: return "ok";
    case DSA_ERR_ARG: return "usage error";
    case DSA_ERR_IO: return "I/O error";
    case DSA_ERR_FORMAT: return "format error";
    case DSA_ERR_CONFIG: return "config error";
    case DSA_ERR_NOMEM: return "out of memory";
    case DSA_ERR_RANGE: return "range error";
    case DSA_ERR_DEVICE: return "device error";
    case DSA_ERR_INTERNAL: return "internal error";
    }
    return "unknown error";
}

/* Strip the directory part so messages stay short: "data/shard.c:12". */
static const char *short_path(const char *file) {
    const char *dirs[] = {"core/", "data/", "kernels/", "indexer/", "pretrain/", "checkpoints/", "tests/", "bench/"};
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
        const char *hit = strstr(file, dirs[i]);
        if (hit) return hit;
    }
    return file;
}

static void trail_append(const char *prefix, const char *file, int line, const char *fmt, va_list ap) {
    if (trail_len >= TRAIL_CAP - 1) return;
    int n = snprintf(trail + trail_len, TRAIL_CAP - trail_len, "%s%s:%d: ", prefix, short_path(file), line);
    if (n < 0) return;
    trail_len += (size_t)n;
    if (trail_len >= TRAIL_CAP - 1) { trail_len = TRAIL_CAP - 1; return; }
    n = vsnprintf(trail + trail_len, TRAIL_CAP - trail_len, fmt, ap);
    if (n < 0) return;
    trail_len += (size_t)n;
    if (trail_len >= TRAIL_CAP - 1) { trail_len = TRAIL_CAP - 1; return; }
    trail[trail_len++] = '\n';
    trail[trail_len] = '\0';
}

DsaStatus dsa_error_set(DsaStatus status, const char *file, int line, const char *fmt, ...) {
    trail_len = 0;
    trail[0] = '\0';
    trail_status = status;
    va_list ap;
    va_start(ap, fmt);
    trail_append("", file, line, fmt, ap);
    va_end(ap);
    return status;
}

void dsa_error_push(const char *file, int line, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    trail_append("  at ", file, line, fmt, ap);
    va_end(ap);
}

const char *dsa_error_message(void) { return trail_len ? trail : "(no error recorded)\n"; }

DsaStatus dsa_error_status(void) { return trail_status; }

void dsa_error_clear(void) {
    trail_len = 0;
    trail[0] = '\0';
    trail_status = DSA_OK;
}

void dsa_error_save(char *buf, size_t cap) {
    if (cap == 0) return;
    snprintf(buf, cap, "%s", trail_len ? trail : "");
}

DsaStatus dsa_error_restore(DsaStatus status, const char *saved) {
    size_t n = strlen(saved);
    if (n >= TRAIL_CAP) n = TRAIL_CAP - 1;
    memcpy(trail, saved, n);
    trail[n] = '\0';
    trail_len = n;
    trail_status = status;
    return status;
}

__attribute__((noreturn)) void dsa_assert_fail(const char *expr, const char *file, int line, const char *func) {
    fprintf(stderr, "dsa: internal invariant violated at %s:%d in %s(): %s\n", short_path(file), line, func, expr);
    fflush(stderr);
    abort();
}
