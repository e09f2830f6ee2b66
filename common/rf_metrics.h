/*  rf_metrics — a small Prometheus registry shared by every refract process.
 *
 *  A process declares its metric families once (see each service's
 *  *_metrics.def, an X-macro list) and updates series by label values.
 *  All update functions are thread-safe and cheap (one mutex per family,
 *  series found by a short linear/hash lookup on label values).
 *  rf_metrics_render() produces Prometheus text exposition format 0.0.4
 *  that `promtool check metrics` accepts (HELP and TYPE lines, base units,
 *  histogram _bucket{le=...}/_sum/_count with a +Inf bucket).
 */
#ifndef RF_METRICS_H
#define RF_METRICS_H

#include <stddef.h>
#include <stdint.h>

#define RF_METRICS_MAX_LABELS 4

typedef enum { RF_METRIC_COUNTER, RF_METRIC_GAUGE, RF_METRIC_HISTOGRAM } rf_metric_type_t;

typedef struct rf_metrics_t rf_metrics_t; /* a registry */
typedef struct rf_metric_t rf_metric_t;   /* one family, owned by its registry */

/* Refreshes gauges right before a render (e.g. RSS); called with the
 * registry's render lock held, must not call rf_metrics_render. */
typedef void(rf_metrics_collect_fn)(rf_metrics_t *self, void *arg);

/* Creates an empty registry. Returns NULL only on allocation failure.
 * The caller owns the result; free it with rf_metrics_destroy. */
rf_metrics_t *rf_metrics_new(void);

/* Destroys the registry and every family in it; safe on NULL and twice
 * (sets *self_p to NULL). */
void rf_metrics_destroy(rf_metrics_t **self_p);

/* Declares a family. `name` and `help` are copied. `labels` is a
 * comma-separated list of label names ("" or NULL for none, at most
 * RF_METRICS_MAX_LABELS). For histograms `buckets` holds `nbuckets`
 * strictly increasing upper bounds (copied; +Inf is implicit); for other
 * types pass NULL/0. Returns the family (borrowed, lives as long as the
 * registry) or NULL if the name is invalid or already declared. */
rf_metric_t *rf_metrics_declare(rf_metrics_t *self, rf_metric_type_t type, const char *name, const char *help,
                                const char *labels, const double *buckets, size_t nbuckets);

/* Counter: adds v (>= 0) to the series with these label values; the
 * series is created at 0 on first use. `values` has one entry per label
 * declared (NULL when the family has no labels). */
void rf_metric_add(rf_metric_t *m, const char *const *values, double v);

/* Gauge: sets / adds (v may be negative) on the series. */
void rf_metric_set(rf_metric_t *m, const char *const *values, double v);
void rf_metric_gauge_add(rf_metric_t *m, const char *const *values, double v);

/* Histogram: records one observation. */
void rf_metric_observe(rf_metric_t *m, const char *const *values, double v);

/* Reads a counter/gauge series value (0 if the series does not exist);
 * for tests and for the process's own logic. */
double rf_metric_value(rf_metric_t *m, const char *const *values);

/* Registers a collector run before each render (at most 8). */
void rf_metrics_on_collect(rf_metrics_t *self, rf_metrics_collect_fn *fn, void *arg);

/* Renders the whole registry as Prometheus text. Returns a NUL-terminated
 * string owned by the caller (free()), length in *len if len != NULL;
 * NULL on allocation failure. Label values are escaped (\\, \", \n). */
char *rf_metrics_render(rf_metrics_t *self, size_t *len);

/* Process gauges every refract process exports:
 * refract_process_resident_memory_bytes, refract_process_start_time_seconds,
 * refract_process_cpu_seconds_total (read from /proc/self at render time).
 * Declares them on `self`. Returns 0, or -1 if already declared. */
int rf_metrics_add_process_collector(rf_metrics_t *self);

/* Standard latency buckets in seconds (0.0005 … 30). */
extern const double rf_metrics_latency_buckets[];
extern const size_t rf_metrics_latency_nbuckets;

#endif
