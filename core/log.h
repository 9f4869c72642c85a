/* log.h: leveled log lines on stderr, and a clock.
 *
 * The level is set once from the CLI (--quiet, --verbose) into a DsaLogLevel the
 * caller passes around; dsa_log_set_level stores it for the process (a constant after
 * start-up). Each line is prefixed with the elapsed wall time since start-up.
 */
#ifndef DSA_CORE_LOG_H
#define DSA_CORE_LOG_H

typedef enum { DSA_LOG_ERROR = 0, DSA_LOG_WARN, DSA_LOG_INFO, DSA_LOG_DEBUG } DsaLogLevel;

void dsa_log_set_level(DsaLogLevel level);
DsaLogLevel dsa_log_level(void);
void dsa_log(DsaLogLevel level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define DSA_LOG_INFO(...) dsa_log(DSA_LOG_INFO, __VA_ARGS__)
#define DSA_LOG_WARN(...) dsa_log(DSA_LOG_WARN, __VA_ARGS__)
#define DSA_LOG_DEBUG(...) dsa_log(DSA_LOG_DEBUG, __VA_ARGS__)

/* Monotonic seconds (CLOCK_MONOTONIC). */
double dsa_time_now(void);

/* Stopwatch: accumulate elapsed time over start/stop pairs. */
typedef struct {
    double started;
    double total;
    long count;
} DsaTimer;

void dsa_timer_start(DsaTimer *t);
void dsa_timer_stop(DsaTimer *t);

#endif
