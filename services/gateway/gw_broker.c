#include "gw_broker.h"

#include <stdlib.h>

#include "gw_metrics.h"

gw_broker_t *gw_broker_new(const rf_config_t *cfg, char **err)
{
    return rf_broker_new(cfg, gw_metrics_registry(), err);
}

void gw_broker_destroy(gw_broker_t **self_p)
{
    rf_broker_destroy(self_p);
}

gw_submitter_t *gw_submitter_new(gw_broker_t *broker)
{
    return rf_submitter_new(broker);
}

void gw_submitter_destroy(gw_submitter_t **self_p)
{
    rf_submitter_destroy(self_p);
}

/* rf_broker's completion callback, on the broker thread: posts the job to
 * the submitting thread's event loop. */
static void s_handoff(rf_job_t *job, void *arg)
{
    (void)job;
    gw_job_t *gj = arg;
    h2o_multithread_send_message(gj->reply_to, &gj->super);
}

gw_job_t *gw_job_new(const char *service, const char *request_id, h2o_multithread_receiver_t *reply_to)
{
    gw_job_t *gj = calloc(1, sizeof(*gj));
    if (gj == NULL)
        return NULL;
    gj->job = rf_job_new(service, request_id);
    if (gj->job == NULL) {
        free(gj);
        return NULL;
    }
    gj->reply_to = reply_to;
    atomic_init(&gj->abandoned, 0);
    gj->job->done = s_handoff;
    gj->job->done_arg = gj;
    gj->job->watch = &gj->abandoned;
    return gj;
}

void gw_broker_submit(gw_submitter_t *sub, gw_job_t **job_p)
{
    gw_job_t *gj = *job_p;
    *job_p = NULL;
    rf_job_t *job = gj->job; /* gj keeps pointing at it: it comes back through s_handoff */
    rf_broker_submit(sub, &job);
}

void gw_job_destroy(gw_job_t **job_p)
{
    if (job_p == NULL || *job_p == NULL)
        return;
    rf_job_destroy(&(*job_p)->job);
    free(*job_p);
    *job_p = NULL;
}
