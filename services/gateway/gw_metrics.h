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

/* Declares every family on `reg` plus the process collector, and keeps
 * reg for gw_metrics_registry. 0 or -1. The bus families are the
 * broker's own (rf_broker.h), declared by gw_broker_new. */
int gw_metrics_init(rf_metrics_t *reg);

/* The registry given to gw_metrics_init (borrowed), or NULL before. */
rf_metrics_t *gw_metrics_registry(void);

#endif
