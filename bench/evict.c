/*  bench-evict — hit ratios of the edge cache's eviction policies
 *  (common/rf_evict) on synthetic Zipf traces, the cache holding 10% of
 *  the working set's bytes (issue: "measure hit ratio on a synthetic Zipf
 *  trace with the cache at 10% of the working set against plain LRU, and
 *  keep the better policy").
 *
 *    build/bin/bench-evict [REQUESTS] [OBJECTS]
 *
 *  Traces: Zipf(alpha) popularity over OBJECTS objects (default 200000),
 *  REQUESTS requests (default 4000000), object sizes either all equal or
 *  drawn from a heavy-tailed mix (1 KB .. 4 MB, most small), and a trace
 *  where half the requests are one-hit wonders (new keys), as CDN logs
 *  show. Deterministic (fixed seeds). Prints one line per trace and the
 *  ratio s3fifo/lru of object hit ratios. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "rf_evict.h"

static uint64_t s_rng = 0x9E3779B97F4A7C15ULL;

static uint64_t s_next(void)
{
    uint64_t x = s_rng;
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    return s_rng = x;
}

static double s_unit(void)
{
    return (double)(s_next() >> 11) / 9007199254740992.0;
}

/* Object i's size: equal, or heavy-tailed (mostly 1-64 KB, some to 4 MB). */
static uint64_t s_size(uint64_t i, int varied)
{
    if (!varied)
        return 1;
    uint64_t h = i * 0x9E3779B97F4A7C15ULL;
    h ^= h >> 29;
    double u = (double)(h % 1000000) / 1e6;
    return (uint64_t)(1024.0 * pow(2.0, 12.0 * u * u * u)); /* 1 KB .. 4 MB */
}

typedef struct {
    double alpha;
    int varied, wonders;
} s_trace_t;

static double s_run(rf_evict_kind_t kind, const s_trace_t *t, const double *cdf, size_t n, size_t requests,
                    uint64_t cap, double *byte_ratio)
{
    rf_evict_t *c = rf_evict_new(kind, cap);
    s_rng = 0x2545F4914F6CDD1DULL; /* the same trace for both policies */
    uint64_t hits = 0, reqs = 0, hbytes = 0, rbytes = 0, wonder = (uint64_t)n;
    for (size_t r = 0; r < requests; r++) {
        uint64_t key, size;
        if (t->wonders && (s_next() & 1)) {
            key = wonder++;
            size = s_size(key, t->varied);
        } else {
            double u = s_unit();
            size_t lo = 0, hi = n - 1;
            while (lo < hi) {
                size_t mid = (lo + hi) / 2;
                if (cdf[mid] < u)
                    lo = mid + 1;
                else
                    hi = mid;
            }
            key = lo;
            size = s_size(key, t->varied);
        }
        int hit = rf_evict_access(c, key, size, NULL, NULL) == 1;
        if (r >= requests / 5) { /* the first fifth warms the cache */
            hits += hit, reqs++;
            hbytes += hit ? size : 0, rbytes += size;
        }
    }
    rf_evict_destroy(&c);
    *byte_ratio = (double)hbytes / (double)rbytes;
    return (double)hits / (double)reqs;
}

int main(int argc, char **argv)
{
    size_t requests = argc > 1 ? strtoul(argv[1], NULL, 10) : 4000000;
    size_t n = argc > 2 ? strtoul(argv[2], NULL, 10) : 200000;
    static const s_trace_t traces[] = {
        {0.6, 0, 0}, {0.8, 0, 0}, {1.0, 0, 0}, {1.2, 0, 0}, {0.8, 1, 0}, {1.0, 1, 0}, {0.8, 0, 1}, {1.0, 1, 1},
    };
    double *cdf = malloc(n * sizeof(double));
    printf("evict: %zu requests over %zu objects per trace, cache = 10%% of the working set's bytes\n", requests, n);
    printf("%-34s %12s %12s %10s %14s\n", "trace", "lru hit", "s3fifo hit", "ratio", "bytes ratio");
    double worst = 1e9;
    for (size_t k = 0; k < sizeof(traces) / sizeof(traces[0]); k++) {
        const s_trace_t *t = &traces[k];
        double sum = 0;
        for (size_t i = 0; i < n; i++)
            sum += 1.0 / pow((double)(i + 1), t->alpha);
        double acc = 0, ws = 0;
        for (size_t i = 0; i < n; i++) {
            acc += 1.0 / pow((double)(i + 1), t->alpha) / sum;
            cdf[i] = acc;
            ws += (double)s_size(i, t->varied);
        }
        uint64_t cap = (uint64_t)(ws / 10);
        double lb, sb;
        double l = s_run(RF_EVICT_LRU, t, cdf, n, requests, cap, &lb);
        double s = s_run(RF_EVICT_S3FIFO, t, cdf, n, requests, cap, &sb);
        char name[64];
        snprintf(name, sizeof(name), "zipf %.1f, %s sizes%s", t->alpha, t->varied ? "varied" : "equal",
                 t->wonders ? ", 50% one-hit" : "");
        printf("%-34s %11.2f%% %11.2f%% %9.3fx %13.3fx\n", name, 100 * l, 100 * s, s / l, sb / lb);
        if (s / l < worst)
            worst = s / l;
    }
    printf("evict: s3fifo/lru object hit ratio, worst trace = %.3fx\n", worst);
    free(cdf);
    return 0;
}
