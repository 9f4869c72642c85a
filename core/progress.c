/* progress.c: the progress line (see progress.h). */
#include "core/progress.h"

#include <unistd.h>

#include "core/log.h"

const char *dsa_format_count(char *buf, size_t cap, double value) {
    const char *suffix[] = {"", "K", "M", "G", "T", "P"};
    int i = 0;
    while (value >= 1000.0 && i < 5) {
        value /= 1000.0;
        i++;
    }
    snprintf(buf, cap, i ? "%.2f%s" : "%.0f%s", value, suffix[i]);
    return buf;
}

void dsa_progress_start(DsaProgress *p, const char *label, const char *unit, int64_t total, int enabled) {
    p->label = label;
    p->unit = unit;
    p->total = total;
    p->done = 0;
    p->out = stderr;
    p->enabled = enabled;
    p->live = enabled && isatty(fileno(stderr));
    p->interval = 10.0;
    p->started = dsa_time_now();
    p->last_draw = p->started;
}

static void draw(DsaProgress *p, int final) {
    double elapsed = dsa_time_now() - p->started;
    double rate = elapsed > 0 ? (double)p->done / elapsed : 0.0;
    char done[32], total[32], speed[32], tail[64];
    dsa_format_count(done, sizeof done, (double)p->done);
    dsa_format_count(speed, sizeof speed, rate);
    if (final || p->total <= 0 || rate <= 0)
        snprintf(tail, sizeof tail, "%.1fs elapsed", elapsed);
    else
        snprintf(tail, sizeof tail, "%.0fs left", (double)(p->total - p->done) / rate);
    const char *start = p->live ? "\r" : "";
    const char *end = p->live && !final ? "\033[K" : "\n";
    if (p->total > 0) {
        dsa_format_count(total, sizeof total, (double)p->total);
        double pct = 100.0 * (double)p->done / (double)p->total;
        fprintf(p->out, "%s%s: %s/%s %s (%.1f%%), %s %s/s, %s%s", start, p->label, done, total, p->unit, pct, speed,
                p->unit, tail, end);
    } else {
        fprintf(p->out, "%s%s: %s %s, %s %s/s, %s%s", start, p->label, done, p->unit, speed, p->unit, tail, end);
    }
    fflush(p->out);
}

void dsa_progress_update(DsaProgress *p, int64_t done) {
    if (!p->enabled) return;
    p->done = done;
    double now = dsa_time_now();
    double every = p->live ? 0.1 : p->interval;
    if (now - p->last_draw < every) return;
    p->last_draw = now;
    draw(p, 0);
}

void dsa_progress_finish(DsaProgress *p) {
    if (!p->enabled) return;
    draw(p, 1);
}
