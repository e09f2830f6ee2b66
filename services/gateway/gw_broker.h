/*  gw_broker — the RFB/1 broker the gateway hosts (proto/rfb.md).
 *
 *  It runs on its own thread (a czmq actor) so that heartbeats, liveness
 *  and deadlines never wait on HTTP work. Event-loop threads hand it jobs
 *  through an inproc PUSH socket (one per thread, a pointer per job), and
 *  the broker hands every job back exactly once — answered, failed,
 *  timed out or cancelled — through the submitting thread's h2o
 *  multithread receiver. Between submit and return the broker owns the
 *  job's broker-side fields; the submitter only touches `abandoned`.
 */
#ifndef GW_BROKER_H
#define GW_BROKER_H

#define H2O_USE_LIBUV 0
#include <h2o.h>
#include <stdatomic.h>
#include <stdint.h>

#include "rf_bus.h"
#include "rf_config.h"

typedef struct gw_broker_t gw_broker_t;
typedef struct gw_submitter_t gw_submitter_t;

typedef enum {
    GW_JOB_OK,          /* reply holds the worker's REPLY */
    GW_JOB_UNAVAILABLE, /* no worker, queue full, or workers died: 503 */
    GW_JOB_TIMEOUT,     /* deadline passed: 504 */
    GW_JOB_CANCELLED,   /* the submitter abandoned it */
} gw_job_outcome_t;

typedef struct gw_job_t {
    h2o_multithread_message_t super; /* must stay first: the return path */
    h2o_multithread_receiver_t *reply_to;
    /* set by the submitter before submit, read-only afterwards */
    char service[RF_BUS_MAX_SERVICE + 1];
    char request_id[40];
    json_t *header; /* JOB JSON; the broker sets deadline_ms in it */
    void *body;     /* source bytes, owned by the job (free()) */
    size_t body_len;
    int timeout_ms;
    void *user; /* submitter's context; NULL once it went away */
    /* broker side */
    uint64_t id;
    int64_t submitted_us, deadline_us;
    int dispatches;
    void *worker;
    atomic_int abandoned;
    /* result, valid when the job comes back */
    gw_job_outcome_t outcome;
    char why[160];
    zmsg_t *reply_msg;  /* backs reply.body frames */
    rf_bus_msg_t reply; /* reply.header: status, content_type, error */
} gw_job_t;

/* Binds cfg->bus.endpoint and starts the broker thread. Returns NULL with
 * *err (malloc'd) when binding fails. Caller owns the broker. */
gw_broker_t *gw_broker_new(const rf_config_t *cfg, char **err);

/* Stops the thread (unanswered jobs are returned as UNAVAILABLE first) and
 * frees the broker; safe on NULL and twice. */
void gw_broker_destroy(gw_broker_t **self_p);

/* A per-thread handle to submit jobs; create and use it on one thread. */
gw_submitter_t *gw_submitter_new(gw_broker_t *broker);
void gw_submitter_destroy(gw_submitter_t **self_p);

/* Hands *job_p to the broker (consumed, set to NULL). The job comes back
 * through job->reply_to. Never blocks on workers. */
void gw_broker_submit(gw_submitter_t *sub, gw_job_t **job_p);

/* Allocates a job for `service` with a copy of nothing: header and body
 * are attached by the caller (ownership passes to the job). */
gw_job_t *gw_job_new(const char *service, const char *request_id, h2o_multithread_receiver_t *reply_to);

/* Frees a returned job (header, body, reply); safe on NULL and twice. */
void gw_job_destroy(gw_job_t **job_p);

#endif
