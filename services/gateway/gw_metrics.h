/*  gw_metrics — the gateway's metric families (declared in gw_metrics.def). */
#ifndef GW_METRICS_H
#define GW_METRICS_H

#include "rf_metrics.h"

typedef struct {
#define GW_METRIC(field, type, name, help, labels, buckets) rf_metric_t *field;
#include "gw_metrics.def"
#undef GW_METRIC
} gw_metrics_t;

/* The families, valid after gw_metrics_init (process-wide, read-only
 * pointers; updates are thread-safe). */
extern gw_metrics_t gw_m;

/* Declares every family on `reg` plus the process collector. 0 or -1. */
int gw_metrics_init(rf_metrics_t *reg);

#endif
