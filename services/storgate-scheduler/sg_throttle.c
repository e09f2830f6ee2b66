/*  sg_throttle — tasks run only while the CPU has room (seed 003 throttling).
 *
 *  The main loop samples /proc/stat (all CPUs of the machine, not only this
 *  process: the seed protects the host) every tick; the average use over
 *  throttling.window decides: at or above cpu.deactive the item threads
 *  stop taking items (the one each is running finishes), below cpu.reactive
 *  they take them again. The gap between the two keeps it from flapping.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rf_log.h"
#include "sg.h"

#define S_SAMPLES 4096

struct sg_throttle_t {
    bool enable;
    int deactive, reactive, window_ms;
    struct {
        int64_t at_ms;
        unsigned long long total, idle;
    } ring[S_SAMPLES];
    size_t head, n;
    bool paused;
    double last_pct;
};

static int64_t s_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The machine's CPU counters (jiffies): all, and idle + iowait. */
static int s_read(unsigned long long *total, unsigned long long *idle)
{
    FILE *f = fopen("/proc/stat", "r");
    if (f == NULL)
        return -1;
    unsigned long long v[10] = {0};
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4],
                   &v[5], &v[6], &v[7], &v[8], &v[9]);
    fclose(f);
    if (n < 4)
        return -1;
    *total = 0;
    for (int i = 0; i < 8; i++) /* guest times are already in user and nice */
        *total += v[i];
    *idle = v[3] + v[4];
    return 0;
}

sg_throttle_t *sg_throttle_new(const rf_sg_conf_t *sc)
{
    sg_throttle_t *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    t->enable = sc->throttling.enable;
    t->deactive = sc->throttling.deactive;
    t->reactive = sc->throttling.reactive;
    t->window_ms = sc->throttling.window_ms;
    return t;
}

void sg_throttle_destroy(sg_throttle_t **self_p)
{
    if (self_p != NULL) {
        free(*self_p);
        *self_p = NULL;
    }
}

bool sg_throttle_tick(sg_throttle_t *t)
{
    if (t == NULL || !t->enable)
        return false;
    unsigned long long total, idle;
    if (s_read(&total, &idle) < 0)
        return t->paused;
    int64_t now = s_now_ms();
    size_t slot = (t->head + t->n) % S_SAMPLES;
    if (t->n == S_SAMPLES)
        t->head = (t->head + 1) % S_SAMPLES;
    else
        t->n++;
    t->ring[slot].at_ms = now;
    t->ring[slot].total = total;
    t->ring[slot].idle = idle;
    /* the oldest sample still inside the window */
    while (t->n > 2 && now - t->ring[(t->head + 1) % S_SAMPLES].at_ms >= t->window_ms) {
        t->head = (t->head + 1) % S_SAMPLES;
        t->n--;
    }
    const typeof(t->ring[0]) *old = &t->ring[t->head];
    if (t->n < 2 || now - old->at_ms < t->window_ms / 2) /* not enough history yet */
        return t->paused;
    unsigned long long dt = total - old->total, di = idle - old->idle;
    double pct = dt > 0 ? 100.0 * (double)(dt - di) / (double)dt : 0;
    t->last_pct = pct;
    rf_metric_set(sg_m.cpu, NULL, pct);
    if (!t->paused && pct >= t->deactive) {
        t->paused = true;
        rf_warn("storgate: CPU %.0f%% over %d ms >= deactive %d%%: items paused", pct, t->window_ms, t->deactive);
    } else if (t->paused && pct < t->reactive) {
        t->paused = false;
        rf_info("storgate: CPU %.0f%% < reactive %d%%: items resume", pct, t->reactive);
    }
    rf_metric_set(sg_m.throttled, NULL, t->paused ? 1 : 0);
    return t->paused;
}
