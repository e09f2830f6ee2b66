#include "gw_metrics.h"

gw_metrics_t gw_m;
static rf_metrics_t *s_registry;

rf_metrics_t *gw_metrics_registry(void)
{
    return s_registry;
}

int gw_metrics_init(rf_metrics_t *reg)
{
    s_registry = reg;
#define GW_METRIC(field, type, name, help, labels, buckets)                                                            \
    if ((gw_m.field = rf_metrics_declare(reg, RF_METRIC_##type, name, help, labels,                                    \
                                         (buckets) ? rf_metrics_latency_buckets : NULL,                                \
                                         (buckets) ? rf_metrics_latency_nbuckets : 0)) == NULL)                        \
        return -1;
#include "gw_metrics.def"
#undef GW_METRIC
    return rf_metrics_add_process_collector(reg);
}
