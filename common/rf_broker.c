#include "rf_broker.h"

#include <errno.h>
#include <stdatomic.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "rf_log.h"

typedef struct {
    rf_metric_t *jobs, *job_duration, *workers, *capacity, *credit, *queue_depth, *inflight, *retries, *deaths;
    rf_metric_t *background; /* {service,event}: submitted, promoted, displaced */
} s_metrics_t;

typedef struct s_service_t s_service_t;

typedef struct {
    zframe_t *identity;
    char key[64]; /* hex of the identity, the workers map key */
    s_service_t *service;
    int capacity;
    int inflight;      /* dispatched, unanswered, including zombies */
    int credit_mode;   /* RFB/1.1: dispatch against credit, not capacity (§3.4) */
    int credit;        /* credit-mode: jobs we may still send it */
    int demanded;      /* queue depth last sent in a DEMAND; -1 none since its last grant */
    int64_t demand_sent_us;
    zlistx_t *jobs;    /* rf_job_t* dispatched and still owned by clients */
    zhashx_t *zombies; /* job ids cancelled but still running on the worker */
    int64_t expiry_us, last_sent_us, last_dispatch_us;
} s_worker_t;

/* Two FIFOs, so that live jobs go first without any search: a live job
 * never waits behind pre-warm work queued before it. Background jobs wait
 * as long as live ones are queued; their deadline (bus.job_timeout) still
 * bounds that wait. */
struct s_service_t {
    char name[RF_BUS_MAX_SERVICE + 1];
    zlistx_t *queue;    /* rf_job_t* live, waiting, FIFO */
    zlistx_t *bg_queue; /* rf_job_t* background, waiting, FIFO: dispatched when `queue` is empty */
    zlistx_t *workers; /* s_worker_t* (borrowed from the workers map) */
    int64_t orphaned_us; /* when the last worker went away; 0 = never had one */
};

typedef struct {
    const rf_config_t *cfg;
    const s_metrics_t *m;
    zsock_t *pipe, *router, *pull;
    zhashx_t *workers;  /* key -> s_worker_t (owned) */
    zhashx_t *services; /* name -> s_service_t (owned) */
    zhashx_t *inflight; /* job id hex -> rf_job_t (borrowed) */
    uint64_t next_id;
    int64_t hb_us, expiry_us;
    int terminated;
} s_broker_t;

/* What the actor starts from. It lives in the broker, not on the caller's
 * stack: the actor reads it on its own thread, and the hand-over goes
 * through libzmq, which ThreadSanitizer cannot see into. */
typedef struct {
    const rf_config_t *cfg;
    const s_metrics_t *m;
    const char *submit_endpoint;
    atomic_int bind_errno; /* set by the actor before its first signal */
} s_args_t;

struct rf_broker_t {
    zactor_t *actor;
    char submit_endpoint[64];
    s_metrics_t m;
    s_args_t args;
};

struct rf_submitter_t {
    zsock_t *push;
};

static int64_t s_now_us(void)
{
    return zclock_usecs();
}

static void s_id_key(uint64_t id, char key[17])
{
    snprintf(key, 17, "%016" PRIx64, id);
}

/* Returns 1 when the submitter abandoned the job (either flag). */
static int s_abandoned(rf_job_t *job)
{
    return atomic_load(&job->abandoned) != 0 || (job->watch != NULL && atomic_load(job->watch) != 0);
}

/* Whether the job waits behind live ones: background and not promoted. */
static bool s_is_background(rf_job_t *job)
{
    return job->background && atomic_load(&job->promoted) == 0;
}

/* ---- job return ------------------------------------------------------ */

/* Returns the job to its submitter; the broker must not touch it after. */
static void s_finish(s_broker_t *b, rf_job_t *job, rf_job_outcome_t outcome, const char *why)
{
    static const char *const names[] = {"ok", "unavailable", "timeout", "cancelled"};
    job->outcome = outcome;
    snprintf(job->why, sizeof(job->why), "%s", why ? why : "");
    const char *labels[] = {job->service, names[outcome]};
    rf_metric_add(b->m->jobs, labels, 1);
    if (outcome == RF_JOB_OK) {
        const char *l1[] = {job->service};
        rf_metric_observe(b->m->job_duration, l1, (double)(s_now_us() - job->submitted_us) / 1e6);
    } else if (outcome != RF_JOB_CANCELLED) {
        rf_log(RF_LOG_WARN, job->spec.request_id, "bus: %s job %s: %s", job->service, names[outcome], job->why);
    }
    job->worker = NULL;
    job->done(job, job->done_arg);
}

/* Counts a background job's event: "submitted", "promoted" (a client
 * joined it) or "displaced" (gave its place in a full queue to a live job). */
static void s_background_event(s_broker_t *b, const rf_job_t *job, const char *event)
{
    const char *l[] = {job->service, event};
    rf_metric_add(b->m->background, l, 1);
}

/* ---- services and workers ------------------------------------------------ */

/* The FIFO a waiting job of `s` belongs in. */
static zlistx_t *s_queue_of(s_service_t *s, rf_job_t *job)
{
    return s_is_background(job) ? s->bg_queue : s->queue;
}

/* The FIFO the next job is taken from: live jobs first. */
static zlistx_t *s_queue_next(s_service_t *s)
{
    return zlistx_size(s->queue) > 0 ? s->queue : s->bg_queue;
}

/* Jobs of `s` waiting, live and background. */
static size_t s_queued(s_service_t *s)
{
    return zlistx_size(s->queue) + zlistx_size(s->bg_queue);
}

/* Updates the service's gauges (no-op without metrics). */
static void s_service_gauges(s_broker_t *b, s_service_t *s)
{
    const char *l[] = {s->name};
    int cap = 0, inflight = 0, credit = 0;
    for (s_worker_t *w = zlistx_first(s->workers); w; w = zlistx_next(s->workers)) {
        cap += w->capacity;
        inflight += w->inflight;
        credit += w->credit_mode ? w->credit : 0;
    }
    rf_metric_set(b->m->workers, l, (double)zlistx_size(s->workers));
    rf_metric_set(b->m->capacity, l, cap);
    rf_metric_set(b->m->credit, l, credit);
    rf_metric_set(b->m->inflight, l, inflight);
    rf_metric_set(b->m->queue_depth, l, (double)s_queued(s));
}

static void s_service_free(void **item)
{
    s_service_t *s = *item;
    if (s == NULL)
        return;
    zlistx_destroy(&s->queue);
    zlistx_destroy(&s->bg_queue);
    zlistx_destroy(&s->workers);
    free(s);
    *item = NULL;
}

static s_service_t *s_service_get(s_broker_t *b, const char *name)
{
    s_service_t *s = zhashx_lookup(b->services, name);
    if (s != NULL)
        return s;
    s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    snprintf(s->name, sizeof(s->name), "%s", name);
    s->queue = zlistx_new();
    s->bg_queue = zlistx_new();
    s->workers = zlistx_new();
    if (s->queue == NULL || s->bg_queue == NULL || s->workers == NULL) {
        void *item = s;
        s_service_free(&item);
        return NULL;
    }
    zhashx_insert(b->services, name, s);
    return s;
}

static int s_send(s_broker_t *b, s_worker_t *w, zmsg_t **msg)
{
    if (*msg == NULL)
        return -1;
    w->last_sent_us = s_now_us();
    return rf_bus_send(b->router, w->identity, msg);
}

/* Sends a command without JSON. Returns 0, or -1 when the worker's
 * connection is gone (ROUTER_MANDATORY) or on allocation failure. */
static int s_send_cmd(s_broker_t *b, s_worker_t *w, rf_bus_cmd_t cmd, uint64_t id)
{
    zmsg_t *msg = rf_bus_encode(cmd, NULL, id, NULL);
    return s_send(b, w, &msg);
}

static void s_dispatch(s_broker_t *b, s_service_t *s);
static void s_service_gauges(s_broker_t *b, s_service_t *s);

/* Forgets a worker: its unanswered jobs go back to the head of their
 * queue (live or background) while they have retries left (proto/rfb.md
 * 3.3), else fail. */
static void s_worker_delete(s_broker_t *b, s_worker_t *w, const char *reason)
{
    s_service_t *s = w->service;
    const char *dl[] = {s->name, reason};
    rf_metric_add(b->m->deaths, dl, 1);
    rf_warn("bus: %s worker %.12s gone (%s) with %zu job(s) unanswered", s->name, w->key, reason, zlistx_size(w->jobs));
    rf_job_t *job;
    /* Walk newest first so re-queued jobs keep their original order. */
    while ((job = zlistx_last(w->jobs)) != NULL) {
        zlistx_delete(w->jobs, zlistx_cursor(w->jobs));
        char key[17];
        s_id_key(job->id, key);
        zhashx_delete(b->inflight, key);
        job->worker = NULL;
        if (s_abandoned(job)) {
            s_finish(b, job, RF_JOB_CANCELLED, "client went away");
        } else if (job->dispatches <= b->cfg->bus.retries) {
            const char *l[] = {s->name};
            rf_metric_add(b->m->retries, l, 1);
            rf_log(RF_LOG_WARN, job->spec.request_id, "bus: retrying %s job after its worker died", s->name);
            zlistx_add_start(s_queue_of(s, job), job);
        } else {
            s_finish(b, job, RF_JOB_UNAVAILABLE, "the worker running this job died, and so did the retry");
        }
    }
    void *h = zlistx_find(s->workers, w);
    if (h != NULL)
        zlistx_delete(s->workers, h);
    zhashx_delete(b->workers, w->key); /* frees w */
    if (zlistx_size(s->workers) == 0)
        s->orphaned_us = s_now_us(); /* queued jobs get bus.no_worker_grace */
    s_dispatch(b, s);
    s_service_gauges(b, s);
}

static void s_worker_free(void **item)
{
    s_worker_t *w = *item;
    if (w == NULL)
        return;
    zframe_destroy(&w->identity);
    zlistx_destroy(&w->jobs);
    zhashx_destroy(&w->zombies);
    free(w);
    *item = NULL;
}

/* Least busy first (unanswered/capacity), ties to the longest idle, among
 * workers that may take a job: below capacity (RFB/1.0) or holding credit
 * (RFB/1.1). Returns the worker (borrowed) or NULL when none may. */
static s_worker_t *s_pick(s_service_t *s)
{
    s_worker_t *best = NULL;
    for (s_worker_t *w = zlistx_first(s->workers); w; w = zlistx_next(s->workers)) {
        if (w->credit_mode ? w->credit <= 0 : w->inflight >= w->capacity)
            continue;
        if (best == NULL) {
            best = w;
            continue;
        }
        long lhs = (long)w->inflight * best->capacity, rhs = (long)best->inflight * w->capacity;
        if (lhs < rhs || (lhs == rhs && w->last_dispatch_us < best->last_dispatch_us))
            best = w;
    }
    return best;
}

/* Sends JOB with the time left. Returns 0, or -1 when the worker is
 * unreachable or the message cannot be built. */
static int s_send_job(s_broker_t *b, s_worker_t *w, rf_job_t *job)
{
    int64_t left_ms = (job->deadline_us - s_now_us()) / 1000;
    job->spec.deadline_ms = left_ms > 0 ? left_ms : 0;
    zmsg_t *msg = rf_bus_encode_job(job->id, &job->spec);
    if (msg == NULL)
        return -1;
    /* No body frame for jobs whose source travels by reference. */
    if (job->body != NULL && job->body_len > 0 && zmsg_addmem(msg, job->body, job->body_len) < 0) {
        zmsg_destroy(&msg);
        return -1;
    }
    return s_send(b, w, &msg);
}

/* RFB/1.1 (§3.4): with jobs waiting, tells each credit-mode worker of `s`
 * that has given us no credit how many (DEMAND), again when the queue grew
 * since or after a heartbeat interval. Unused credit is given back only
 * when the worker reclaims it (s_on_ready). */
static void s_credit_sync(s_broker_t *b, s_service_t *s)
{
    int queued = (int)s_queued(s);
    if (queued == 0)
        return;
    int64_t now = s_now_us();
    for (s_worker_t *w = zlistx_first(s->workers); w; w = zlistx_next(s->workers)) {
        if (!w->credit_mode || w->credit > 0)
            continue;
        if (queued <= w->demanded && now - w->demand_sent_us < b->hb_us)
            continue;
        rf_demand_t d = {.queued = queued, .returned = 0};
        zmsg_t *msg = rf_bus_encode_demand(&d);
        s_send(b, w, &msg); /* an unreachable worker is found by the next heartbeat */
        w->demanded = queued;
        w->demand_sent_us = now;
    }
}

/* Sends queued jobs of `s` to workers while any may take one: every live
 * job first, then background ones. */
static void s_dispatch(s_broker_t *b, s_service_t *s)
{
    rf_job_t *job;
    zlistx_t *q;
    while ((job = zlistx_first(q = s_queue_next(s))) != NULL) {
        if (s_abandoned(job)) {
            zlistx_delete(q, zlistx_cursor(q));
            s_finish(b, job, RF_JOB_CANCELLED, "client went away");
            continue;
        }
        s_worker_t *w = s_pick(s);
        if (w == NULL)
            break;
        zlistx_delete(q, zlistx_cursor(q));
        if (s_send_job(b, w, job) < 0) {
            /* The peer is gone (ROUTER_MANDATORY): put the job back and
             * forget the worker, which re-dispatches. */
            zlistx_add_start(q, job);
            s_worker_delete(b, w, "unreachable");
            return;
        }
        job->dispatches++;
        job->worker = w;
        w->inflight++;
        if (w->credit_mode)
            w->credit--;
        w->last_dispatch_us = s_now_us();
        zlistx_add_end(w->jobs, job);
        char key[17];
        s_id_key(job->id, key);
        zhashx_insert(b->inflight, key, job);
        rf_log(RF_LOG_DEBUG, job->spec.request_id, "bus: %s job %" PRIu64 " -> worker %.12s (%d/%d)", s->name,
               job->id, w->key, w->inflight, w->capacity);
    }
    s_credit_sync(b, s);
    s_service_gauges(b, s);
}

/* ---- messages from workers ---------------------------------------------------- */

/* READY: a new worker joins its service; from a known worker (RFB/1.1) it
 * grants more credit. */
static void s_on_ready(s_broker_t *b, zframe_t **identity, const char *key, rf_bus_msg_t *m)
{
    rf_ready_t r;
    char why[160];
    if (rf_ready_decode(m->header, &r, why, sizeof(why)) < 0) {
        rf_warn("bus: READY from %.12s dropped: %s", key, why);
        return;
    }
    s_worker_t *w = zhashx_lookup(b->workers, key);
    if (w != NULL) {
        w->capacity = r.capacity;
        if (w->credit_mode && r.credit > 0) {
            w->credit += r.credit;
            w->demanded = -1; /* the next shortfall is news to it */
        }
        if (w->credit_mode && r.reclaim > 0) {
            /* Give back what we have not used; the answer is due even if 0. */
            rf_demand_t d = {.queued = (int)s_queued(w->service)};
            d.returned = r.reclaim < w->credit ? r.reclaim : w->credit;
            w->credit -= d.returned;
            zmsg_t *msg = rf_bus_encode_demand(&d);
            s_send(b, w, &msg);
            w->demanded = d.queued;
            w->demand_sent_us = s_now_us();
        }
        s_dispatch(b, w->service);
        return;
    }
    s_service_t *s = s_service_get(b, m->service);
    w = calloc(1, sizeof(*w));
    if (s == NULL || w == NULL) {
        free(w);
        return;
    }
    w->identity = *identity;
    *identity = NULL;
    snprintf(w->key, sizeof(w->key), "%s", key);
    w->service = s;
    w->capacity = r.capacity;
    w->credit_mode = r.credit >= 0;
    w->credit = r.credit > 0 ? r.credit : 0;
    w->demanded = -1;
    w->jobs = zlistx_new();
    w->zombies = zhashx_new();
    w->expiry_us = s_now_us() + b->expiry_us;
    zhashx_insert(b->workers, w->key, w);
    zlistx_add_end(s->workers, w);
    rf_info("bus: %s worker %.12s ready (capacity %d, pid %d, host %s, %s)", s->name, w->key, r.capacity, r.pid,
            r.host[0] ? r.host : "?", w->credit_mode ? "credit" : "RFB/1.0");
    s_dispatch(b, s);
}

/* REPLY: hands the job back (or, for a zombie, only frees the slot). */
static void s_on_reply(s_broker_t *b, s_worker_t *w, zmsg_t **raw, rf_bus_msg_t *m)
{
    char key[17];
    s_id_key(m->job_id, key);
    rf_job_t *job = zhashx_lookup(b->inflight, key);
    if (job == NULL || job->worker != w) {
        /* A late answer to a job that timed out or was cancelled: it only
         * frees the worker's slot. */
        if (zhashx_lookup(w->zombies, key) != NULL) {
            zhashx_delete(w->zombies, key);
            w->inflight--;
        }
        rf_bus_msg_clear(m);
        s_dispatch(b, w->service);
        return;
    }
    zhashx_delete(b->inflight, key);
    void *h = zlistx_find(w->jobs, job);
    if (h != NULL)
        zlistx_delete(w->jobs, h);
    w->inflight--;
    char why[160];
    if (rf_reply_decode(m->header, &job->reply, why, sizeof(why)) < 0) {
        job->reply.status = 502;
        snprintf(job->reply.error, sizeof(job->reply.error), "bad REPLY: %s", why);
    } else {
        job->reply_msg = *raw; /* backs the body frames */
        *raw = NULL;
        job->n_body = m->n_body;
        memcpy(job->body_frames, m->body, m->n_body * sizeof(m->body[0]));
        job->reply_len = m->body_len;
    }
    rf_bus_msg_clear(m);
    s_finish(b, job, RF_JOB_OK, NULL);
    s_dispatch(b, w->service);
}

static void s_on_router(s_broker_t *b)
{
    zframe_t *identity = NULL;
    rf_bus_msg_t m;
    zmsg_t *raw = rf_bus_recv(b->router, &identity, &m);
    if (raw == NULL)
        return;
    char *hex = zframe_strhex(identity);
    char key[64];
    snprintf(key, sizeof(key), "%s", hex ? hex : "");
    free(hex);
    s_worker_t *w = zhashx_lookup(b->workers, key);
    if (w != NULL)
        w->expiry_us = s_now_us() + b->expiry_us;
    switch (m.cmd) {
    case RF_BUS_READY: s_on_ready(b, &identity, key, &m); break;
    case RF_BUS_REPLY:
        if (w != NULL)
            s_on_reply(b, w, &raw, &m);
        break;
    case RF_BUS_HEARTBEAT: break;
    case RF_BUS_DISCONNECT:
        if (w != NULL)
            s_worker_delete(b, w, "disconnect");
        w = NULL;
        break;
    default: break;
    }
    /* Anything but READY from a stranger (e.g. a worker of a previous
     * gateway process) is told to reconnect and announce itself. */
    if (w == NULL && m.cmd != RF_BUS_READY && m.cmd != RF_BUS_DISCONNECT && identity != NULL) {
        zmsg_t *d = rf_bus_encode(RF_BUS_DISCONNECT, NULL, 0, NULL);
        if (d != NULL)
            rf_bus_send(b->router, identity, &d);
    }
    rf_bus_msg_clear(&m);
    zframe_destroy(&identity);
    zmsg_destroy(&raw);
}

/* ---- submissions ---------------------------------------------------------- */

/* Moves promoted background jobs (rf_job_promote) to the end of the live
 * FIFO, in their order: a live client waits for them now. Called at each
 * tick, and before a full queue displaces a background job, but not at
 * each dispatch: the background FIFO is walked about once a tick. */
static void s_promote(s_broker_t *b, s_service_t *s)
{
    void *h = zlistx_first(s->bg_queue);
    while (h != NULL) {
        rf_job_t *job = h;
        void *cur = zlistx_cursor(s->bg_queue);
        h = zlistx_next(s->bg_queue);
        if (atomic_load(&job->promoted) != 0) {
            zlistx_delete(s->bg_queue, cur);
            zlistx_add_end(s->queue, job);
            s_background_event(b, job, "promoted");
            rf_log(RF_LOG_DEBUG, job->spec.request_id, "bus: background %s job promoted: a client waits for it",
                   s->name);
        }
    }
}

/* A full queue and a live `job`: the newest background job gives up its
 * place (fails UNAVAILABLE, so pre-warm retries it later), so that queued
 * pre-warm work never turns a client away. The newest, because the
 * oldest has waited longest. 0 when a place was made, -1 when none can be
 * (the job is background itself, or every queued job is live). */
static int s_make_room(s_broker_t *b, s_service_t *s, rf_job_t *job)
{
    if (s_is_background(job))
        return -1;
    s_promote(b, s); /* a promoted job is a live one: it keeps its place */
    if (zlistx_size(s->bg_queue) == 0)
        return -1;
    rf_job_t *victim = zlistx_last(s->bg_queue);
    zlistx_delete(s->bg_queue, zlistx_cursor(s->bg_queue));
    s_background_event(b, victim, "displaced");
    if (s_abandoned(victim)) {
        s_finish(b, victim, RF_JOB_CANCELLED, "client went away");
    } else {
        char why[160];
        snprintf(why, sizeof(why), "%s queue is full (%d waiting): a background job gave its place to a live one",
                 s->name, b->cfg->bus.queue_max);
        s_finish(b, victim, RF_JOB_UNAVAILABLE, why);
    }
    return 0;
}

static void s_on_submit(s_broker_t *b, rf_job_t *job)
{
    job->id = ++b->next_id;
    job->submitted_us = s_now_us();
    int timeout_ms = job->timeout_ms > 0 ? job->timeout_ms : b->cfg->bus.job_timeout_ms;
    job->deadline_us = job->submitted_us + (int64_t)timeout_ms * 1000;
    if (job->background)
        s_background_event(b, job, "submitted");
    s_service_t *s = s_service_get(b, job->service);
    if (s == NULL) {
        s_finish(b, job, RF_JOB_UNAVAILABLE, "out of memory");
        return;
    }
    /* No worker: refuse at once, unless the last one left less than
     * bus.no_worker_grace ago (it may be restarting): then wait the rest. */
    if (zlistx_size(s->workers) == 0 &&
        (s->orphaned_us == 0 || job->submitted_us >= s->orphaned_us + (int64_t)b->cfg->bus.no_worker_grace_ms * 1000)) {
        char why[96];
        snprintf(why, sizeof(why), "no %s worker is connected", s->name);
        s_finish(b, job, RF_JOB_UNAVAILABLE, why);
        return;
    }
    if ((int)s_queued(s) >= b->cfg->bus.queue_max && s_pick(s) == NULL && s_make_room(b, s, job) < 0) {
        char why[96];
        snprintf(why, sizeof(why), "%s queue is full (%d waiting)", s->name, b->cfg->bus.queue_max);
        s_finish(b, job, RF_JOB_UNAVAILABLE, why);
        return;
    }
    zlistx_add_end(s_queue_of(s, job), job);
    s_dispatch(b, s);
}

/* ---- timers ---------------------------------------------------------------- */

/* Hands back every job of queue `q` as UNAVAILABLE with `why` (or
 * CANCELLED when abandoned). */
static void s_fail_queue(s_broker_t *b, zlistx_t *q, const char *why)
{
    rf_job_t *job;
    while ((job = zlistx_first(q)) != NULL) {
        zlistx_delete(q, zlistx_cursor(q));
        if (s_abandoned(job))
            s_finish(b, job, RF_JOB_CANCELLED, "client went away");
        else
            s_finish(b, job, RF_JOB_UNAVAILABLE, why);
    }
}

/* Hands back the jobs of queue `q` that are abandoned or past their
 * deadline. */
static void s_expire_queue(s_broker_t *b, zlistx_t *q, int64_t now)
{
    void *h = zlistx_first(q);
    while (h != NULL) {
        rf_job_t *job = h;
        void *cur = zlistx_cursor(q);
        h = zlistx_next(q);
        if (s_abandoned(job) || job->deadline_us <= now) {
            zlistx_delete(q, cur);
            if (s_abandoned(job))
                s_finish(b, job, RF_JOB_CANCELLED, "client went away");
            else
                s_finish(b, job, RF_JOB_TIMEOUT, "no worker was free before the deadline");
        }
    }
}

static void s_tick(s_broker_t *b)
{
    int64_t now = s_now_us();
    /* Workers: liveness and heartbeats. Collect the dead first: deleting
     * while iterating the hash is not allowed. */
    zlistx_t *dead = zlistx_new();
    zlistx_t *gone = zlistx_new();
    for (s_worker_t *w = zhashx_first(b->workers); w; w = zhashx_next(b->workers)) {
        if (w->expiry_us < now)
            zlistx_add_end(dead, w);
        else if (now - w->last_sent_us >= b->hb_us && s_send_cmd(b, w, RF_BUS_HEARTBEAT, 0) < 0)
            /* Its connection closed (kill -9, crash): ZeroMQ dropped the
             * peer, so it is gone now, not after bus.liveness. */
            zlistx_add_end(gone, w);
    }
    for (s_worker_t *w = zlistx_first(dead); w; w = zlistx_next(dead))
        s_worker_delete(b, w, "expired");
    for (s_worker_t *w = zlistx_first(gone); w; w = zlistx_next(gone))
        s_worker_delete(b, w, "unreachable");
    zlistx_destroy(&dead);
    zlistx_destroy(&gone);

    for (s_service_t *s = zhashx_first(b->services); s; s = zhashx_next(b->services))
        s_credit_sync(b, s); /* DEMAND again for workers that had nothing free */

    /* Queued jobs past their deadline or abandoned, and those of a service
     * that has had no worker for bus.no_worker_grace. */
    int64_t grace_us = (int64_t)b->cfg->bus.no_worker_grace_ms * 1000;
    for (s_service_t *s = zhashx_first(b->services); s; s = zhashx_next(b->services)) {
        if (zlistx_size(s->workers) == 0 && s->orphaned_us != 0 && now >= s->orphaned_us + grace_us) {
            char why[128];
            snprintf(why, sizeof(why), "no %s worker is connected (none for %" PRId64 " ms)", s->name,
                     (now - s->orphaned_us) / 1000);
            s_fail_queue(b, s->queue, why);
            s_fail_queue(b, s->bg_queue, why);
        }
        s_expire_queue(b, s->queue, now);
        s_expire_queue(b, s->bg_queue, now);
        s_promote(b, s);
        s_service_gauges(b, s);
    }

    /* Dispatched jobs past their deadline or abandoned: cancel them on the
     * worker, which keeps the slot (a zombie) until it answers. */
    zlistx_t *expired = zlistx_new();
    for (rf_job_t *job = zhashx_first(b->inflight); job; job = zhashx_next(b->inflight))
        if (s_abandoned(job) || job->deadline_us <= now)
            zlistx_add_end(expired, job);
    for (rf_job_t *job = zlistx_first(expired); job; job = zlistx_next(expired)) {
        s_worker_t *w = job->worker;
        char key[17];
        s_id_key(job->id, key);
        zhashx_delete(b->inflight, key);
        void *h = zlistx_find(w->jobs, job);
        if (h != NULL)
            zlistx_delete(w->jobs, h);
        zhashx_insert(w->zombies, key, (void *)1);
        s_send_cmd(b, w, RF_BUS_CANCEL, job->id);
        if (s_abandoned(job))
            s_finish(b, job, RF_JOB_CANCELLED, "client went away");
        else
            s_finish(b, job, RF_JOB_TIMEOUT, "the worker did not answer before the deadline");
    }
    zlistx_destroy(&expired);
}

/* ---- the actor ------------------------------------------------------------- */

static void s_broker_actor(zsock_t *pipe, void *argp)
{
    s_args_t *args = argp;
    s_broker_t b = {.cfg = args->cfg, .m = args->m, .pipe = pipe};
    b.hb_us = (int64_t)b.cfg->bus.heartbeat_ms * 1000;
    b.expiry_us = b.hb_us * b.cfg->bus.liveness;
    b.router = zsock_new(ZMQ_ROUTER);
    b.pull = zsock_new(ZMQ_PULL);
    b.workers = zhashx_new();
    b.services = zhashx_new();
    b.inflight = zhashx_new();
    zhashx_set_destructor(b.workers, s_worker_free);
    zhashx_set_destructor(b.services, s_service_free);
    zsock_set_router_mandatory(b.router, 1);
    zsock_set_linger(b.router, 0);
    zsock_set_sndhwm(b.router, 0);
    zsock_set_rcvhwm(b.pull, 0);
    int ok = b.router && b.pull && zsock_bind(b.router, "%s", b.cfg->bus.endpoint) >= 0 &&
             zsock_bind(b.pull, "%s", args->submit_endpoint) >= 0;
    if (!ok) {
        atomic_store(&args->bind_errno, zmq_errno() ? zmq_errno() : EINVAL);
        zsock_signal(pipe, 1);
        goto done;
    }
    zsock_signal(pipe, 0);
    rf_info("bus: broker listening on %s", b.cfg->bus.endpoint);

    zpoller_t *poller = zpoller_new(pipe, b.router, b.pull, NULL);
    int tick_ms = b.cfg->bus.heartbeat_ms / 2 < 50 ? b.cfg->bus.heartbeat_ms / 2 : 50;
    int64_t next_tick = s_now_us();
    while (!b.terminated) {
        int64_t wait = (next_tick - s_now_us()) / 1000;
        zsock_t *which = zpoller_wait(poller, wait > 0 ? (int)wait : 0);
        if (which == pipe) {
            char *cmd = zstr_recv(pipe);
            if (cmd == NULL || streq(cmd, "$TERM"))
                b.terminated = 1;
            zstr_free(&cmd);
        } else if (which == b.router) {
            s_on_router(&b);
        } else if (which == b.pull) {
            rf_job_t *job = NULL;
            if (zsock_recv(b.pull, "p", &job) == 0 && job != NULL) {
                (void)atomic_load_explicit(&job->handed, memory_order_acquire);
                s_on_submit(&b, job);
            }
        } else if (zpoller_terminated(poller)) {
            break;
        }
        if (s_now_us() >= next_tick) {
            s_tick(&b);
            next_tick = s_now_us() + tick_ms * 1000;
        }
    }
    zpoller_destroy(&poller);
    /* Hand every job back so no request waits on a broker that is gone. */
    for (s_service_t *s = zhashx_first(b.services); s; s = zhashx_next(b.services)) {
        s_fail_queue(&b, s->queue, "the gateway is shutting down");
        s_fail_queue(&b, s->bg_queue, "the gateway is shutting down");
    }
    for (s_worker_t *w = zhashx_first(b.workers); w; w = zhashx_next(b.workers)) {
        rf_job_t *job;
        while ((job = zlistx_first(w->jobs)) != NULL) {
            zlistx_delete(w->jobs, zlistx_cursor(w->jobs));
            s_finish(&b, job, RF_JOB_UNAVAILABLE, "the gateway is shutting down");
        }
        s_send_cmd(&b, w, RF_BUS_DISCONNECT, 0);
    }
done:
    zhashx_destroy(&b.inflight);
    zhashx_destroy(&b.workers);
    zhashx_destroy(&b.services);
    zsock_destroy(&b.router);
    zsock_destroy(&b.pull);
}

/* Declares the broker's metric families on reg; a family already declared
 * there stays NULL (not updated). */
static void s_declare_metrics(s_metrics_t *m, rf_metrics_t *reg)
{
    if (reg == NULL)
        return;
    m->jobs = rf_metrics_declare(reg, RF_METRIC_COUNTER, "refract_bus_jobs_total",
                                 "Bus jobs finished, by service and outcome (ok, unavailable, timeout, cancelled)",
                                 "service,outcome", NULL, 0);
    m->job_duration = rf_metrics_declare(reg, RF_METRIC_HISTOGRAM, "refract_bus_job_duration_seconds",
                                         "Time from job submission to its reply", "service",
                                         rf_metrics_latency_buckets, rf_metrics_latency_nbuckets);
    m->workers =
        rf_metrics_declare(reg, RF_METRIC_GAUGE, "refract_bus_workers", "Workers connected, by service", "service", NULL, 0);
    m->capacity = rf_metrics_declare(reg, RF_METRIC_GAUGE, "refract_bus_worker_capacity",
                                     "Job slots announced by connected workers", "service", NULL, 0);
    m->credit = rf_metrics_declare(reg, RF_METRIC_GAUGE, "refract_bus_worker_credit",
                                   "Unused dispatch credit granted by RFB/1.1 workers", "service", NULL, 0);
    m->queue_depth = rf_metrics_declare(reg, RF_METRIC_GAUGE, "refract_bus_queue_depth",
                                        "Jobs waiting for a free worker", "service", NULL, 0);
    m->inflight = rf_metrics_declare(reg, RF_METRIC_GAUGE, "refract_bus_jobs_inflight",
                                     "Jobs dispatched and not yet answered", "service", NULL, 0);
    m->retries = rf_metrics_declare(reg, RF_METRIC_COUNTER, "refract_bus_job_retries_total",
                                    "Jobs re-dispatched after their worker died", "service", NULL, 0);
    m->deaths = rf_metrics_declare(reg, RF_METRIC_COUNTER, "refract_bus_worker_deaths_total",
                                   "Workers forgotten, by reason (expired, disconnect, unreachable)", "service,reason",
                                   NULL, 0);
    m->background = rf_metrics_declare(
        reg, RF_METRIC_COUNTER, "refract_bus_background_jobs_total",
        "Background (pre-warm) jobs, by event: submitted, promoted (a client joined it), displaced (gave its place "
        "in a full queue to a live job)",
        "service,event", NULL, 0);
}

rf_broker_t *rf_broker_new(const rf_config_t *cfg, rf_metrics_t *metrics, char **err)
{
    *err = NULL;
    rf_broker_t *self = calloc(1, sizeof(*self));
    if (self == NULL)
        return NULL;
    s_declare_metrics(&self->m, metrics);
    snprintf(self->submit_endpoint, sizeof(self->submit_endpoint), "inproc://refract-submit-%p", (void *)self);
    self->args.cfg = cfg;
    self->args.m = &self->m;
    self->args.submit_endpoint = self->submit_endpoint;
    atomic_init(&self->args.bind_errno, 0);
    /* zactor_new returns after the actor's first signal, so bind_errno is
     * settled by then. */
    self->actor = zactor_new(s_broker_actor, &self->args);
    int bind_errno = atomic_load(&self->args.bind_errno);
    if (self->actor == NULL || bind_errno != 0) {
        if (asprintf(err, "cannot bind bus endpoint %s: %s", cfg->bus.endpoint,
                     zmq_strerror(bind_errno ? bind_errno : ENOMEM)) < 0)
            *err = NULL;
        zactor_destroy(&self->actor);
        free(self);
        return NULL;
    }
    return self;
}

void rf_broker_destroy(rf_broker_t **self_p)
{
    if (self_p == NULL || *self_p == NULL)
        return;
    zactor_destroy(&(*self_p)->actor);
    free(*self_p);
    *self_p = NULL;
}

rf_submitter_t *rf_submitter_new(rf_broker_t *broker)
{
    rf_submitter_t *sub = calloc(1, sizeof(*sub));
    if (sub == NULL)
        return NULL;
    sub->push = zsock_new_push(broker->submit_endpoint);
    if (sub->push == NULL) {
        free(sub);
        return NULL;
    }
    zsock_set_sndhwm(sub->push, 0);
    return sub;
}

void rf_submitter_destroy(rf_submitter_t **self_p)
{
    if (self_p == NULL || *self_p == NULL)
        return;
    zsock_destroy(&(*self_p)->push);
    free(*self_p);
    *self_p = NULL;
}

void rf_broker_submit(rf_submitter_t *sub, rf_job_t **job_p)
{
    rf_job_t *job = *job_p;
    *job_p = NULL;
    atomic_store_explicit(&job->handed, 1, memory_order_release);
    if (sub == NULL || zsock_send(sub->push, "p", job) != 0) {
        job->outcome = RF_JOB_UNAVAILABLE;
        snprintf(job->why, sizeof(job->why), "the bus broker is not running");
        job->done(job, job->done_arg);
    }
}

rf_job_t *rf_job_new(const char *service, const char *request_id)
{
    rf_job_t *job = calloc(1, sizeof(*job));
    if (job == NULL)
        return NULL;
    rf_job_spec_init(&job->spec);
    snprintf(job->service, sizeof(job->service), "%s", service);
    job->spec.request_id = strdup(request_id);
    if (job->spec.request_id == NULL) {
        free(job);
        return NULL;
    }
    atomic_init(&job->abandoned, 0);
    atomic_init(&job->promoted, 0);
    return job;
}

void rf_job_abandon(rf_job_t *job)
{
    atomic_store(&job->abandoned, 1);
}

void rf_job_promote(rf_job_t *job)
{
    atomic_store(&job->promoted, 1);
}

bool rf_priority_background(const char *value, size_t len)
{
    return value != NULL && len == strlen(RF_PRIORITY_BACKGROUND) &&
           strncasecmp(value, RF_PRIORITY_BACKGROUND, len) == 0;
}

void rf_job_destroy(rf_job_t **job_p)
{
    if (job_p == NULL || *job_p == NULL)
        return;
    rf_job_t *job = *job_p;
    rf_job_spec_clear(&job->spec);
    free(job->body);
    zmsg_destroy(&job->reply_msg);
    free(job);
    *job_p = NULL;
}
