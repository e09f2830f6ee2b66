#include "gw_broker.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "gw_metrics.h"
#include "rf_log.h"

typedef struct s_service_t s_service_t;

typedef struct {
    zframe_t *identity;
    char key[64]; /* hex of the identity, the workers map key */
    s_service_t *service;
    int capacity;
    int inflight;      /* dispatched, unanswered, including zombies */
    zlistx_t *jobs;    /* gw_job_t* dispatched and still owned by clients */
    zhashx_t *zombies; /* job ids cancelled but still running on the worker */
    int64_t expiry_us, last_sent_us, last_dispatch_us;
} s_worker_t;

struct s_service_t {
    char name[RF_BUS_MAX_SERVICE + 1];
    zlistx_t *queue;   /* gw_job_t* waiting, FIFO */
    zlistx_t *workers; /* s_worker_t* (borrowed from the workers map) */
    int64_t orphaned_us; /* when the last worker went away; 0 = never had one */
};

typedef struct {
    const rf_config_t *cfg;
    zsock_t *pipe, *router, *pull;
    zhashx_t *workers;  /* key -> s_worker_t (owned) */
    zhashx_t *services; /* name -> s_service_t (owned) */
    zhashx_t *inflight; /* job id hex -> gw_job_t (borrowed) */
    uint64_t next_id;
    int64_t hb_us, expiry_us;
    int terminated;
} s_broker_t;

struct gw_broker_t {
    zactor_t *actor;
    char submit_endpoint[64];
};

struct gw_submitter_t {
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

/* ---- job return ------------------------------------------------------ */

/* Returns the job to its submitter; the broker must not touch it after. */
static void s_finish(s_broker_t *b, gw_job_t *job, gw_job_outcome_t outcome, const char *why)
{
    (void)b;
    static const char *const names[] = {"ok", "unavailable", "timeout", "cancelled"};
    job->outcome = outcome;
    snprintf(job->why, sizeof(job->why), "%s", why ? why : "");
    const char *labels[] = {job->service, names[outcome]};
    rf_metric_add(gw_m.bus_jobs, labels, 1);
    if (outcome == GW_JOB_OK) {
        const char *l1[] = {job->service};
        rf_metric_observe(gw_m.bus_job_duration, l1, (double)(s_now_us() - job->submitted_us) / 1e6);
    } else if (outcome != GW_JOB_CANCELLED) {
        rf_log(RF_LOG_WARN, job->request_id, "bus: %s job %s: %s", job->service, names[outcome], job->why);
    }
    job->worker = NULL;
    h2o_multithread_send_message(job->reply_to, &job->super);
}

/* ---- services and workers ------------------------------------------------ */

static void s_service_gauges(s_service_t *s)
{
    const char *l[] = {s->name};
    int cap = 0, inflight = 0;
    for (s_worker_t *w = zlistx_first(s->workers); w; w = zlistx_next(s->workers)) {
        cap += w->capacity;
        inflight += w->inflight;
    }
    rf_metric_set(gw_m.bus_workers, l, (double)zlistx_size(s->workers));
    rf_metric_set(gw_m.bus_capacity, l, cap);
    rf_metric_set(gw_m.bus_inflight, l, inflight);
    rf_metric_set(gw_m.bus_queue_depth, l, (double)zlistx_size(s->queue));
}

static void s_service_free(void **item)
{
    s_service_t *s = *item;
    if (s == NULL)
        return;
    zlistx_destroy(&s->queue);
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
    s->workers = zlistx_new();
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

/* Forgets a worker: its unanswered jobs go back to the head of the queue
 * while they have retries left (proto/rfb.md 3.3), else fail. */
static void s_worker_delete(s_broker_t *b, s_worker_t *w, const char *reason)
{
    s_service_t *s = w->service;
    const char *dl[] = {s->name, reason};
    rf_metric_add(gw_m.bus_worker_deaths, dl, 1);
    rf_warn("bus: %s worker %.12s gone (%s) with %zu job(s) unanswered", s->name, w->key, reason, zlistx_size(w->jobs));
    gw_job_t *job;
    /* Walk newest first so re-queued jobs keep their original order. */
    while ((job = zlistx_last(w->jobs)) != NULL) {
        zlistx_delete(w->jobs, zlistx_cursor(w->jobs));
        char key[17];
        s_id_key(job->id, key);
        zhashx_delete(b->inflight, key);
        job->worker = NULL;
        if (atomic_load(&job->abandoned)) {
            s_finish(b, job, GW_JOB_CANCELLED, "client went away");
        } else if (job->dispatches <= b->cfg->bus.retries) {
            const char *l[] = {s->name};
            rf_metric_add(gw_m.bus_retries, l, 1);
            rf_log(RF_LOG_WARN, job->request_id, "bus: retrying %s job after its worker died", s->name);
            zlistx_add_start(s->queue, job);
        } else {
            s_finish(b, job, GW_JOB_UNAVAILABLE, "the worker running this job died, and so did the retry");
        }
    }
    void *h = zlistx_find(s->workers, w);
    if (h != NULL)
        zlistx_delete(s->workers, h);
    zhashx_delete(b->workers, w->key); /* frees w */
    if (zlistx_size(s->workers) == 0)
        s->orphaned_us = s_now_us(); /* queued jobs get bus.no_worker_grace */
    s_dispatch(b, s);
    s_service_gauges(s);
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

/* Least busy first (unanswered/capacity), ties to the longest idle. */
static s_worker_t *s_pick(s_service_t *s)
{
    s_worker_t *best = NULL;
    for (s_worker_t *w = zlistx_first(s->workers); w; w = zlistx_next(s->workers)) {
        if (w->inflight >= w->capacity)
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

static int s_send_job(s_broker_t *b, s_worker_t *w, gw_job_t *job)
{
    int64_t left_ms = (job->deadline_us - s_now_us()) / 1000;
    json_object_set_new(job->header, "deadline_ms", json_integer(left_ms > 0 ? left_ms : 0));
    zmsg_t *msg = rf_bus_encode(RF_BUS_JOB, NULL, job->id, job->header);
    if (msg == NULL)
        return -1;
    /* No body frame for jobs whose source travels by reference. */
    if (job->body != NULL && job->body_len > 0 && zmsg_addmem(msg, job->body, job->body_len) < 0) {
        zmsg_destroy(&msg);
        return -1;
    }
    return s_send(b, w, &msg);
}

static void s_dispatch(s_broker_t *b, s_service_t *s)
{
    gw_job_t *job;
    while ((job = zlistx_first(s->queue)) != NULL) {
        if (atomic_load(&job->abandoned)) {
            zlistx_delete(s->queue, zlistx_cursor(s->queue));
            s_finish(b, job, GW_JOB_CANCELLED, "client went away");
            continue;
        }
        s_worker_t *w = s_pick(s);
        if (w == NULL)
            break;
        zlistx_delete(s->queue, zlistx_cursor(s->queue));
        if (s_send_job(b, w, job) < 0) {
            /* The peer is gone (ROUTER_MANDATORY): put the job back and
             * forget the worker, which re-dispatches. */
            zlistx_add_start(s->queue, job);
            s_worker_delete(b, w, "unreachable");
            return;
        }
        job->dispatches++;
        job->worker = w;
        w->inflight++;
        w->last_dispatch_us = s_now_us();
        zlistx_add_end(w->jobs, job);
        char key[17];
        s_id_key(job->id, key);
        zhashx_insert(b->inflight, key, job);
        rf_log(RF_LOG_DEBUG, job->request_id, "bus: %s job %" PRIu64 " -> worker %.12s (%d/%d)", s->name, job->id,
               w->key, w->inflight, w->capacity);
    }
    s_service_gauges(s);
}

/* ---- messages from workers ---------------------------------------------------- */

static void s_on_ready(s_broker_t *b, zframe_t **identity, const char *key, rf_bus_msg_t *m)
{
    int cap = (int)json_integer_value(json_object_get(m->header, "capacity"));
    s_worker_t *w = zhashx_lookup(b->workers, key);
    if (w != NULL) {
        w->capacity = cap;
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
    w->capacity = cap;
    w->jobs = zlistx_new();
    w->zombies = zhashx_new();
    w->expiry_us = s_now_us() + b->expiry_us;
    zhashx_insert(b->workers, w->key, w);
    zlistx_add_end(s->workers, w);
    json_t *pid = json_object_get(m->header, "pid"), *host = json_object_get(m->header, "host");
    rf_info("bus: %s worker %.12s ready (capacity %d, pid %" JSON_INTEGER_FORMAT ", host %s)", s->name, w->key, cap,
            json_integer_value(pid), json_string_value(host) ? json_string_value(host) : "?");
    s_dispatch(b, s);
}

static void s_on_reply(s_broker_t *b, s_worker_t *w, zmsg_t **raw, rf_bus_msg_t *m)
{
    char key[17];
    s_id_key(m->job_id, key);
    gw_job_t *job = zhashx_lookup(b->inflight, key);
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
    job->reply_msg = *raw;
    *raw = NULL;
    job->reply = *m; /* takes the header reference */
    memset(m, 0, sizeof(*m));
    s_finish(b, job, GW_JOB_OK, NULL);
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

static void s_on_submit(s_broker_t *b, gw_job_t *job)
{
    job->id = ++b->next_id;
    job->submitted_us = s_now_us();
    job->deadline_us = job->submitted_us + (int64_t)job->timeout_ms * 1000;
    s_service_t *s = s_service_get(b, job->service);
    if (s == NULL) {
        s_finish(b, job, GW_JOB_UNAVAILABLE, "out of memory");
        return;
    }
    /* No worker: refuse at once, unless the last one left less than
     * bus.no_worker_grace ago (it may be restarting): then wait the rest. */
    if (zlistx_size(s->workers) == 0 &&
        (s->orphaned_us == 0 || job->submitted_us >= s->orphaned_us + (int64_t)b->cfg->bus.no_worker_grace_ms * 1000)) {
        char why[96];
        snprintf(why, sizeof(why), "no %s worker is connected", s->name);
        s_finish(b, job, GW_JOB_UNAVAILABLE, why);
        return;
    }
    if ((int)zlistx_size(s->queue) >= b->cfg->bus.queue_max && s_pick(s) == NULL) {
        char why[96];
        snprintf(why, sizeof(why), "%s queue is full (%d waiting)", s->name, b->cfg->bus.queue_max);
        s_finish(b, job, GW_JOB_UNAVAILABLE, why);
        return;
    }
    zlistx_add_end(s->queue, job);
    s_dispatch(b, s);
}

/* ---- timers ---------------------------------------------------------------- */

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

    /* Queued jobs past their deadline or abandoned, and those of a service
     * that has had no worker for bus.no_worker_grace. */
    int64_t grace_us = (int64_t)b->cfg->bus.no_worker_grace_ms * 1000;
    for (s_service_t *s = zhashx_first(b->services); s; s = zhashx_next(b->services)) {
        if (zlistx_size(s->workers) == 0 && s->orphaned_us != 0 && now >= s->orphaned_us + grace_us) {
            char why[128];
            snprintf(why, sizeof(why), "no %s worker is connected (none for %" PRId64 " ms)", s->name,
                     (now - s->orphaned_us) / 1000);
            gw_job_t *job;
            while ((job = zlistx_first(s->queue)) != NULL) {
                zlistx_delete(s->queue, zlistx_cursor(s->queue));
                if (atomic_load(&job->abandoned))
                    s_finish(b, job, GW_JOB_CANCELLED, "client went away");
                else
                    s_finish(b, job, GW_JOB_UNAVAILABLE, why);
            }
        }
        void *h = zlistx_first(s->queue);
        while (h != NULL) {
            gw_job_t *job = h;
            void *cur = zlistx_cursor(s->queue);
            h = zlistx_next(s->queue);
            if (atomic_load(&job->abandoned) || job->deadline_us <= now) {
                zlistx_delete(s->queue, cur);
                if (atomic_load(&job->abandoned))
                    s_finish(b, job, GW_JOB_CANCELLED, "client went away");
                else
                    s_finish(b, job, GW_JOB_TIMEOUT, "no worker was free before the deadline");
            }
        }
        s_service_gauges(s);
    }

    /* Dispatched jobs past their deadline or abandoned: cancel them on the
     * worker, which keeps the slot (a zombie) until it answers. */
    zlistx_t *expired = zlistx_new();
    for (gw_job_t *job = zhashx_first(b->inflight); job; job = zhashx_next(b->inflight))
        if (atomic_load(&job->abandoned) || job->deadline_us <= now)
            zlistx_add_end(expired, job);
    for (gw_job_t *job = zlistx_first(expired); job; job = zlistx_next(expired)) {
        s_worker_t *w = job->worker;
        char key[17];
        s_id_key(job->id, key);
        zhashx_delete(b->inflight, key);
        void *h = zlistx_find(w->jobs, job);
        if (h != NULL)
            zlistx_delete(w->jobs, h);
        zhashx_insert(w->zombies, key, (void *)1);
        s_send_cmd(b, w, RF_BUS_CANCEL, job->id);
        if (atomic_load(&job->abandoned))
            s_finish(b, job, GW_JOB_CANCELLED, "client went away");
        else
            s_finish(b, job, GW_JOB_TIMEOUT, "the worker did not answer before the deadline");
    }
    zlistx_destroy(&expired);
}

/* ---- the actor ------------------------------------------------------------- */

typedef struct {
    const rf_config_t *cfg;
    const char *submit_endpoint;
    int bind_errno; /* set by the actor before its first signal */
} s_args_t;

static void s_broker_actor(zsock_t *pipe, void *argp)
{
    s_args_t *args = argp;
    s_broker_t b = {.cfg = args->cfg, .pipe = pipe};
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
        args->bind_errno = zmq_errno() ? zmq_errno() : EINVAL;
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
            gw_job_t *job = NULL;
            if (zsock_recv(b.pull, "p", &job) == 0 && job != NULL)
                s_on_submit(&b, job);
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
        gw_job_t *job;
        while ((job = zlistx_first(s->queue)) != NULL) {
            zlistx_delete(s->queue, zlistx_cursor(s->queue));
            s_finish(&b, job, GW_JOB_UNAVAILABLE, "the gateway is shutting down");
        }
    }
    for (s_worker_t *w = zhashx_first(b.workers); w; w = zhashx_next(b.workers)) {
        gw_job_t *job;
        while ((job = zlistx_first(w->jobs)) != NULL) {
            zlistx_delete(w->jobs, zlistx_cursor(w->jobs));
            s_finish(&b, job, GW_JOB_UNAVAILABLE, "the gateway is shutting down");
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

gw_broker_t *gw_broker_new(const rf_config_t *cfg, char **err)
{
    gw_broker_t *self = calloc(1, sizeof(*self));
    if (self == NULL)
        return NULL;
    snprintf(self->submit_endpoint, sizeof(self->submit_endpoint), "inproc://refract-submit-%p", (void *)self);
    s_args_t args = {.cfg = cfg, .submit_endpoint = self->submit_endpoint};
    /* zactor_new returns after the actor's first signal, so bind_errno is
     * settled by then. */
    self->actor = zactor_new(s_broker_actor, &args);
    if (self->actor == NULL || args.bind_errno != 0) {
        if (asprintf(err, "cannot bind bus endpoint %s: %s", cfg->bus.endpoint,
                     zmq_strerror(args.bind_errno ? args.bind_errno : ENOMEM)) < 0)
            *err = NULL;
        zactor_destroy(&self->actor);
        free(self);
        return NULL;
    }
    return self;
}

void gw_broker_destroy(gw_broker_t **self_p)
{
    if (self_p == NULL || *self_p == NULL)
        return;
    zactor_destroy(&(*self_p)->actor);
    free(*self_p);
    *self_p = NULL;
}

gw_submitter_t *gw_submitter_new(gw_broker_t *broker)
{
    gw_submitter_t *sub = calloc(1, sizeof(*sub));
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

void gw_submitter_destroy(gw_submitter_t **self_p)
{
    if (self_p == NULL || *self_p == NULL)
        return;
    zsock_destroy(&(*self_p)->push);
    free(*self_p);
    *self_p = NULL;
}

void gw_broker_submit(gw_submitter_t *sub, gw_job_t **job_p)
{
    gw_job_t *job = *job_p;
    *job_p = NULL;
    if (zsock_send(sub->push, "p", job) != 0) {
        job->outcome = GW_JOB_UNAVAILABLE;
        snprintf(job->why, sizeof(job->why), "the bus broker is not running");
        h2o_multithread_send_message(job->reply_to, &job->super);
    }
}

gw_job_t *gw_job_new(const char *service, const char *request_id, h2o_multithread_receiver_t *reply_to)
{
    gw_job_t *job = calloc(1, sizeof(*job));
    if (job == NULL)
        return NULL;
    snprintf(job->service, sizeof(job->service), "%s", service);
    snprintf(job->request_id, sizeof(job->request_id), "%s", request_id);
    job->reply_to = reply_to;
    atomic_init(&job->abandoned, 0);
    return job;
}

void gw_job_destroy(gw_job_t **job_p)
{
    if (job_p == NULL || *job_p == NULL)
        return;
    gw_job_t *job = *job_p;
    json_decref(job->header);
    free(job->body);
    rf_bus_msg_clear(&job->reply);
    zmsg_destroy(&job->reply_msg);
    free(job);
    *job_p = NULL;
}
