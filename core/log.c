/* log.c: log lines and clocks (see log.h). */
#include "core/log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>

static atomic_int log_level = DSA_LOG_INFO;
static double log_start = -1.0;

double dsa_time_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void dsa_log_set_level(DsaLogLevel level) {
    atomic_store(&log_level, (int)level);
    if (log_start < 0) log_start = dsa_time_now();
}

DsaLogLevel dsa_log_level(void) { return (DsaLogLevel)atomic_load(&log_level); }

void dsa_log(DsaLogLevel level, const char *fmt, ...) {
    if ((int)level > atomic_load(&log_level)) return;
    static const char *tags[] = {"error", "warn", "info", "debug"};
    if (log_start < 0) log_start = dsa_time_now();
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    /* One fprintf per line so lines from threads do not interleave mid-line. */
    fprintf(stderr, "[%8.2fs %s] %s\n", dsa_time_now() - log_start, tags[level], line);
}

void dsa_timer_start(DsaTimer *t) { t->started = dsa_time_now(); }

void dsa_timer_stop(DsaTimer *t) {
    t->total += dsa_time_now() - t->started;
    t->count++;
}
