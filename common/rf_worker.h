/*  rf_worker — the generic RFB/1 bus worker (proto/rfb.md) that every
 *  worker kind (image now; video, document, drm later) is built on.
 *
 *  Threads:
 *    - the thread calling rf_worker_run owns the bus: one DEALER socket per
 *      `bus.connect` endpoint, READY, heartbeats, liveness, reconnects,
 *      CANCEL, and every send. It never runs a job, so heartbeats keep
 *      flowing however long jobs take (§3.2).
 *    - `capacity` job threads, each fed over an inproc PAIR socket, run the
 *      job callback one job at a time, build the REPLY and hand it back.
 *  Credit (RFB/1.1, proto/rfb.md 3.4): a broker may only send the jobs this
 *  worker granted it, and the worker grants a thread only when it is
 *  neither busy nor promised to another broker, so brokers that share it
 *  are never promised more than `capacity` in total. Jobs beyond the free
 *  threads (only from RFB/1.0 brokers, which send up to `capacity` each)
 *  wait in a local FIFO.
 *
 *  Replies: every JOB gets exactly one REPLY on the socket it came from,
 *  including jobs cancelled or expired before they started (status 504):
 *  the broker keeps counting a cancelled job against our capacity until we
 *  answer it (§3.3). A job whose broker connection was replaced since it
 *  arrived (DISCONNECT, or broker silent) is not answered: job ids are only
 *  unique per broker lifetime, so a reply on the new connection could be
 *  taken for a different job of a restarted broker.
 *
 *  Metrics (declared in the registry given to rf_worker_new):
 *    refract_worker_jobs_total{service,status}          counter
 *    refract_worker_job_duration_seconds{service}       histogram (callback run time)
 *    refract_worker_jobs_inflight{service}              gauge (queued + running)
 *    refract_worker_bus_reconnects_total{service}       counter
 *    refract_worker_queue_peak{service}                 gauge (rf_worker_queued_peak)
 */
#ifndef RF_WORKER_H
#define RF_WORKER_H

#include <jansson.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "rf_bus.h"
#include "rf_config.h"
#include "rf_metrics.h"

#define RF_WORKER_VERSION "0.1.0"

typedef struct rf_worker_t rf_worker_t;

/* One job as the callback sees it. Everything is borrowed and valid until
 * the callback returns. */
typedef struct {
    uint64_t job_id;           /* the broker's opaque job id */
    const char *service;       /* the service this worker announced */
    const char *request_id;    /* JOB JSON "request_id", for logs */
    const json_t *header;      /* the whole JOB JSON object (for members beyond the spec) */
    const rf_job_spec_t *spec; /* the decoded JOB JSON: chain, source, deadline */
    const void *body;          /* the body frames, contiguous; NULL when empty */
    size_t body_len;
    int64_t deadline_ms;         /* rf_worker_now_ms() time at which the broker gives up; INT64_MAX if none */
    const atomic_int *cancelled; /* becomes non-zero on CANCEL, reconnect or shutdown */
} rf_worker_job_t;

/* What the callback fills in. It starts zeroed; status 0 is sent as 500. */
typedef struct {
    int status;            /* HTTP-like, proto/rfb.md §2.3 */
    char content_type[64]; /* sent when status is 200 */
    char error[256];       /* one-line reason, sent when status is not 200 */
    char note[128];        /* one line about a 200 result for the client (X-Refract-Note), or "" */
    char ref[512];         /* with status 200 and no body: "file:///abs/path" of the result in bus.spool_dir,
                              which the gateway takes over (proto/rfb.md 2.3) */
    /* with status 200: the source's Cache-Control, Expires and Last-Modified ("" = none), for a source
     * the worker read itself: the gateway caches the result no longer than the source may be */
    char src_cache_control[160], src_expires[64], src_last_modified[64];
    void *body; /* the result, sent only when status is 200 */
    size_t body_len;
    void (*body_free)(void *); /* called on body after the REPLY is built (even if
                                  not sent); NULL when body is not to be freed */
} rf_worker_result_t;

/* Runs one job on a job thread. The return value is only logged (non-zero
 * = the callback considers it failed); the outcome is res->status. It may
 * run concurrently with itself on `capacity` threads. */
typedef int(rf_worker_job_fn)(void *arg, const rf_worker_job_t *job, rf_worker_result_t *res);

/* Creates a worker for `service` (1-32 chars of [a-z0-9_-]) announcing
 * `capacity` (1..256) and starts its job threads. `cfg` (bus section) and
 * `metrics` are borrowed and must outlive the worker; `metrics` may be NULL
 * (no metrics). Sockets are opened by rf_worker_run. Returns the worker
 * (caller owns; rf_worker_destroy) or NULL, logged, on invalid arguments
 * or when threads or sockets cannot be created. */
rf_worker_t *rf_worker_new(const rf_config_t *cfg, const char *service, int capacity, rf_worker_job_fn *fn, void *arg,
                           rf_metrics_t *metrics);

/* Source refs (proto/rfb.md 2.2) reach the callback as they are, in
 * job->spec->source, instead of being mapped (file://) or refused (other
 * schemes) before it runs: for workers that read sources by range. Call
 * before rf_worker_run. */
void rf_worker_own_refs(rf_worker_t *self);

/* Connects to every broker and serves jobs until rf_worker_stop is called,
 * then sends DISCONNECT to every broker, cancels running jobs (their
 * threads finish in rf_worker_destroy), drops queued ones and returns 0.
 * Returns -1 if it cannot open its sockets or is called a second time.
 * Call it from one thread only. */
int rf_worker_run(rf_worker_t *self);

/* Asks rf_worker_run to return. Async-signal-safe (an atomic flag and a
 * write to a self-pipe), callable from any thread or a signal handler,
 * before or during rf_worker_run; idempotent. */
void rf_worker_stop(rf_worker_t *self);

/* Stops and joins the job threads (waiting for running callbacks; they
 * were told to cancel), frees every pending job and the worker. Must not
 * be called while rf_worker_run is still running. Safe on NULL and twice;
 * sets *self_p to NULL. */
void rf_worker_destroy(rf_worker_t **self_p);

/* The most jobs that ever waited in the local FIFO for a thread (0 when
 * every broker follows the credit it was granted). Any thread. */
size_t rf_worker_queued_peak(rf_worker_t *self);

/* The clock deadline_ms is expressed in: CLOCK_MONOTONIC milliseconds
 * (the same clock as zclock_mono). */
int64_t rf_worker_now_ms(void);

/* Returns 1 when the job should be abandoned (cancelled, or its deadline
 * passed), else 0. Cheap; callbacks may call it between steps. */
int rf_worker_job_should_stop(const rf_worker_job_t *job);

#endif
