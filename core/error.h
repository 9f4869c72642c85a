/* error.h: status codes and the error trail every runtime error climbs.
 *
 * Two kinds of error (STYLE.md rule 7):
 *  - Programming errors (violated invariants) abort loudly with file:line and the
 *    expression: DSA_ASSERT.
 *  - Runtime errors (files, configs, data, devices) return a DsaStatus. The function
 *    that detects the problem records a message naming the file, key or tensor and
 *    what was expected (DSA_FAIL); each caller that passes it on adds a "file:line
 *    call" frame (DSA_TRY). The CLI prints the whole trail and exits non-zero.
 *    No library function calls exit().
 *
 * NOTE: the trail lives in a thread-local buffer, like errno: it is the one piece of
 * state outside explicit structs, chosen so that every function keeps the plain
 * `DsaStatus f(...)` signature. Worker threads (the data prefetcher) copy their trail
 * into their owner struct and the owner re-raises it on the caller's thread.
 */
#ifndef DSA_CORE_ERROR_H
#define DSA_CORE_ERROR_H

#include <stddef.h>

typedef enum {
    DSA_OK = 0,
    DSA_ERR_ARG,      /* bad argument or command-line usage */
    DSA_ERR_IO,       /* a file could not be opened, read or written */
    DSA_ERR_FORMAT,   /* a file exists but its content is wrong or corrupt */
    DSA_ERR_CONFIG,   /* a configuration key is unknown, mistyped or inconsistent */
    DSA_ERR_NOMEM,    /* an allocation failed */
    DSA_ERR_RANGE,    /* a value is out of its valid range (token id, window size) */
    DSA_ERR_DEVICE,   /* a device or communication runtime failed */
    DSA_ERR_INTERNAL, /* a dependency failed in a way we cannot classify */
} DsaStatus;

/* Short name of a status, e.g. "format error". */
const char *dsa_status_name(DsaStatus status);

/* Start a new trail: records `file:line: message` and returns `status`. */
DsaStatus dsa_error_set(DsaStatus status, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Add a context frame ("  at file:line: what") to the current trail. */
void dsa_error_push(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The current trail: first line is the root cause, later lines are context. */
const char *dsa_error_message(void);

/* Status of the current trail (DSA_OK when none was set since the last clear). */
DsaStatus dsa_error_status(void);

/* Forget the current trail. */
void dsa_error_clear(void);

/* Copy the trail into `buf` (NUL-terminated, truncated to `cap`) and restore it later
 * with dsa_error_restore: how a worker thread hands its error to its owner. */
void dsa_error_save(char *buf, size_t cap);
DsaStatus dsa_error_restore(DsaStatus status, const char *saved);

/* Record a runtime error and return it from the current function. */
#define DSA_FAIL(status, ...) return dsa_error_set((status), __FILE__, __LINE__, __VA_ARGS__)

/* Run `call`; on failure add this frame to the trail and return its status. */
#define DSA_TRY(call)                                                    \
    do {                                                                 \
        DsaStatus dsa_try_status_ = (call);                              \
        if (dsa_try_status_ != DSA_OK) {                                 \
            dsa_error_push(__FILE__, __LINE__, "%s", #call);             \
            return dsa_try_status_;                                      \
        }                                                                \
    } while (0)

/* Run `call`; on failure store its status in `st`, add this frame, goto `label`. */
#define DSA_TRY_GOTO(st, call, label)                                    \
    do {                                                                 \
        (st) = (call);                                                   \
        if ((st) != DSA_OK) {                                            \
            dsa_error_push(__FILE__, __LINE__, "%s", #call);             \
            goto label;                                                  \
        }                                                                \
    } while (0)

/* Record a runtime error into `st` and goto `label` (for goto-cleanup chains). */
#define DSA_FAIL_GOTO(st, label, status, ...)                            \
    do {                                                                 \
        (st) = dsa_error_set((status), __FILE__, __LINE__, __VA_ARGS__); \
        goto label;                                                      \
    } while (0)

/* Abort on a violated invariant: a bug, never bad input. */
__attribute__((noreturn)) void dsa_assert_fail(const char *expr, const char *file, int line, const char *func);
#define DSA_ASSERT(cond) \
    ((cond) ? (void)0 : dsa_assert_fail(#cond, __FILE__, __LINE__, __func__))

#endif
