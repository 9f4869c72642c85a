/* progress.h: a progress line for long work.
 *
 * On a terminal (stderr is a tty) the line is redrawn in place at most 10 times a
 * second; otherwise (CI, files) a plain line is printed every `interval` seconds
 * (default 10) and once at the end. Shows done/total, rate, and time left.
 */
#ifndef DSA_CORE_PROGRESS_H
#define DSA_CORE_PROGRESS_H

#include <stdint.h>
#include <stdio.h>

typedef struct {
    const char *label; /* e.g. "pack" */
    const char *unit;  /* e.g. "tokens" */
    int64_t total;     /* 0 when unknown */
    int64_t done;
    double started, last_draw;
    double interval; /* seconds between plain lines */
    int live;        /* 1: redraw in place on a tty */
    int enabled;
    FILE *out;
} DsaProgress;

/* Start a progress line on stderr; `enabled` = 0 makes every call a no-op. */
void dsa_progress_start(DsaProgress *p, const char *label, const char *unit, int64_t total, int enabled);
/* Set the amount done and redraw if it is time. */
void dsa_progress_update(DsaProgress *p, int64_t done);
/* Final line (always printed when enabled). */
void dsa_progress_finish(DsaProgress *p);
/* Format a count with SI suffix, e.g. 1.23M; returns buf. */
const char *dsa_format_count(char *buf, size_t cap, double value);

#endif
