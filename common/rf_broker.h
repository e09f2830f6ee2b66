/*  rf_broker — the RFB/1 broker (proto/rfb.md), for any process that
 *  hosts one (the gateway today, a storgate-scheduler later).
 *
 *  It runs on its own thread (a czmq actor) so that heartbeats, liveness
 *  and deadlines never wait on the host's work. Submitting threads hand it
 *  jobs through an rf_submitter_t (an inproc PUSH socket, one per thread,
 *  a pointer per job), and the broker hands every job back exactly once —
 *  answered, failed, timed out or cancelled — by calling the job's `done`
 *  callback. Between submit and `done` the broker owns the job; the
 *  submitter may only call rf_job_abandon (or set its `watch` flag).
 *
 *  Dispatch is least-busy-first within a service, bounded by each worker's
 *  capacity (RFB/1.0 workers) or by the credit it granted (RFB/1.1, §3.4).
 *  Queued jobs of a service with no live worker fail after
 *  bus.no_worker_grace.
 *
 *  Live jobs go first: each service has two FIFOs, and a queued
 *  `background` job (pre-warm work) is dispatched only when no live job of
 *  its service waits. When the queue is full, a live job takes the place
 *  of the newest queued background job, which fails UNAVAILABLE. A
 *  background job a live client now waits for is moved to the live FIFO
 *  (rf_job_promote). The order is this broker's alone: it is not on the
 *  wire, and a running job is never pre-empted.
 *
 *  Metrics (declared in the registry given to rf_broker_new, if any):
 *    refract_bus_jobs_total{service,outcome}        counter
 *    refract_bus_job_duration_seconds{service}      histogram
 *    refract_bus_workers{service}                   gauge
 *    refract_bus_worker_capacity{service}           gauge
 *    refract_bus_worker_credit{service}             gauge (RFB/1.1 credit held)
 *    refract_bus_queue_depth{service}               gauge
 *    refract_bus_jobs_inflight{service}             gauge
 *    refract_bus_job_retries_total{service}         counter
 *    refract_bus_worker_deaths_total{service,reason} counter
 *    refract_bus_background_jobs_total{service,event} counter
 */
#ifndef RF_BROKER_H
#define RF_BROKER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "rf_bus.h"
#include "rf_config.h"
#include "rf_metrics.h"

/* The request header that marks a request's bus jobs as background work
 * when its value is RF_PRIORITY_BACKGROUND (case-insensitive):
 * refract-prewarm sends it, the gateway sets rf_job_t.background from it.
 * Any other value, or none, is live. */
#define RF_PRIORITY_HEADER "x-refract-priority"
#define RF_PRIORITY_BACKGROUND "background"

/* Whether a RF_PRIORITY_HEADER value (value, len: borrowed) asks for
 * background work. */
bool rf_priority_background(const char *value, size_t len);

typedef struct rf_broker_t rf_broker_t;
typedef struct rf_submitter_t rf_submitter_t;
typedef struct rf_job_t rf_job_t;

typedef enum {
    RF_JOB_OK,          /* reply holds the worker's REPLY */
    RF_JOB_UNAVAILABLE, /* no worker, queue full, or workers died: 503 */
    RF_JOB_TIMEOUT,     /* deadline passed: 504 */
    RF_JOB_CANCELLED,   /* the submitter abandoned it */
} rf_job_outcome_t;

/* Called exactly once per submitted job, on the broker thread (or, when
 * the broker cannot be reached, inside rf_broker_submit on the caller's
 * thread). Ownership of the job passes to the callback, which must be
 * quick and must not call back into the broker: typically it posts the job
 * to the submitting thread's event loop. */
typedef void(rf_job_done_fn)(rf_job_t *job, void *arg);

struct rf_job_t {
    /* set by the submitter before submit, read-only afterwards */
    char service[RF_BUS_MAX_SERVICE + 1];
    rf_job_spec_t spec; /* JOB JSON (owned); the broker sets spec.deadline_ms at each dispatch */
    void *body;         /* source bytes, owned by the job (free()); NULL when by reference */
    size_t body_len;
    int timeout_ms; /* from submission; 0 = bus.job_timeout */
    bool background; /* dispatched only while no live job of its service waits */
    rf_job_done_fn *done;
    void *done_arg;
    const atomic_int *watch; /* a submitter's own flag that also abandons the job; may be NULL */
    atomic_int abandoned;    /* rf_job_abandon */
    atomic_int promoted;     /* rf_job_promote: a background job queued as a live one from now on */
    /* Release/acquire pair around the hand-over through the inproc socket:
     * libzmq orders it, but with atomics ThreadSanitizer cannot see. */
    atomic_int handed;
    /* broker side: private */
    uint64_t id;
    int64_t submitted_us, deadline_us;
    int dispatches;
    void *worker;
    /* result, valid in and after `done` */
    rf_job_outcome_t outcome;
    char why[160];           /* outcome != OK: a one-line reason */
    rf_reply_t reply;        /* outcome == OK: status, content_type, error */
    size_t n_body;           /* outcome == OK: the REPLY's body frames */
    rf_frame_t body_frames[RF_BUS_MAX_BODY];
    size_t reply_len; /* sum of body frame lengths */
    zmsg_t *reply_msg; /* backs body_frames */
};

/* Binds cfg->bus.endpoint and starts the broker thread. `cfg` (bus
 * section) must outlive the broker; `metrics` may be NULL (no metrics) and
 * must outlive it too. Returns the broker (caller owns) or NULL with *err
 * (malloc'd, caller frees) when binding fails. */
rf_broker_t *rf_broker_new(const rf_config_t *cfg, rf_metrics_t *metrics, char **err);

/* Stops the thread (every job still held is handed back as UNAVAILABLE
 * first, workers get DISCONNECT) and frees the broker; safe on NULL and
 * twice, sets *self_p to NULL. No submitter may be used after this. */
void rf_broker_destroy(rf_broker_t **self_p);

/* A per-thread handle to submit jobs; create and use it on one thread.
 * Returns NULL when the socket cannot be created. Destroy before the
 * broker; destroy is safe on NULL and twice. */
rf_submitter_t *rf_submitter_new(rf_broker_t *broker);
void rf_submitter_destroy(rf_submitter_t **self_p);

/* Hands *job_p to the broker (consumed, set to NULL). The job comes back
 * through job->done. Never blocks on workers. */
void rf_broker_submit(rf_submitter_t *sub, rf_job_t **job_p);

/* Allocates a job for `service` with spec.request_id set and no body, no
 * chain and no callback: the caller fills in the rest (ownership of what it
 * attaches passes to the job). Returns NULL on allocation failure. */
rf_job_t *rf_job_new(const char *service, const char *request_id);

/* Asks the broker to drop the job (queued) or cancel it (dispatched); it
 * still comes back through `done`, as CANCELLED unless it finished first.
 * Callable from any thread while the job is out. */
void rf_job_abandon(rf_job_t *job);

/* Asks the broker to treat a queued background job as live from now on
 * (a live client waits for its result): it moves to the end of the live
 * FIFO at the broker's next tick (at most 50 ms). No effect on a live or
 * dispatched job. Callable from any thread while the job is out. */
void rf_job_promote(rf_job_t *job);

/* Frees a returned job (spec, body, reply); safe on NULL and twice. */
void rf_job_destroy(rf_job_t **job_p);

#endif
