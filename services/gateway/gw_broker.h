/*  gw_broker — the gateway's side of the bus: it hosts an rf_broker
 *  (common/rf_broker.h) and brings each job back to the event-loop thread
 *  that submitted it.
 *
 *  A gw_job_t wraps an rf_job_t with an h2o multithread message: the job's
 *  rf_broker `done` callback (on the broker thread) posts that message to
 *  the submitting thread's receiver, where gw_transform_on_jobs picks it up.
 *  While the job is out the event-loop thread only touches `user` and
 *  `abandoned` (which the broker watches).
 */
#ifndef GW_BROKER_H
#define GW_BROKER_H

#define H2O_USE_LIBUV 0
#include <h2o.h>
#include <stdatomic.h>

#include "rf_broker.h"
#include "rf_config.h"

typedef rf_broker_t gw_broker_t;
typedef rf_submitter_t gw_submitter_t;

typedef struct gw_job_t {
    h2o_multithread_message_t super; /* must stay first: the return path */
    h2o_multithread_receiver_t *reply_to;
    rf_job_t *job;               /* the bus job: spec and body before, outcome and reply after (owned) */
    void *user;                  /* submitter's context; NULL once it went away */
    atomic_int abandoned;        /* set by the event loop: the broker drops or cancels the job */
    struct gw_tstream_t *stream; /* a result streamed while made (gw_tstream.c): it sees the REPLY first */
} gw_job_t;

/* Whether a request asks for its bus jobs to be background work
 * (RF_PRIORITY_HEADER: refract-prewarm sends it): they wait while clients'
 * jobs are queued. A request can only lower its own priority with it. */
static inline bool gw_background_request(h2o_req_t *req)
{
    ssize_t i = h2o_find_header_by_str(&req->headers, H2O_STRLIT(RF_PRIORITY_HEADER), -1);
    return i >= 0 && rf_priority_background(req->headers.entries[i].value.base, req->headers.entries[i].value.len);
}

/* Starts the broker on cfg->bus.endpoint with the gateway's metrics.
 * Returns NULL with *err (malloc'd) when binding fails. Caller owns. */
gw_broker_t *gw_broker_new(const rf_config_t *cfg, char **err);
void gw_broker_destroy(gw_broker_t **self_p);

/* A per-thread submit handle (see rf_submitter_new). */
gw_submitter_t *gw_submitter_new(gw_broker_t *broker);
void gw_submitter_destroy(gw_submitter_t **self_p);

/* Allocates a job for `service` whose result comes back to `reply_to`.
 * The caller fills job->job->spec, body and timeout (ownership passes to
 * the job). Returns NULL on allocation failure. */
gw_job_t *gw_job_new(const char *service, const char *request_id, h2o_multithread_receiver_t *reply_to);

/* Hands *job_p to the broker (consumed, set to NULL); it comes back,
 * exactly once, as a message on job->reply_to. Never blocks on workers. */
void gw_broker_submit(gw_submitter_t *sub, gw_job_t **job_p);

/* Frees a returned job and its bus job; safe on NULL and twice. */
void gw_job_destroy(gw_job_t **job_p);

#endif
