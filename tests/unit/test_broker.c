/*  Unit tests of rf_broker with real rf_workers over ipc:// endpoints:
 *  done callbacks, the no-worker grace, RFB/1.1 credit with two brokers
 *  sharing one worker (proto/rfb.md 3.4), and live jobs going before
 *  background ones (dispatch order, promotion, room in a full queue). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rf_broker.h"
#include "rf_log.h"
#include "rf_worker.h"

/* ---- a worker whose jobs sleep and count how many run at once --------------- */

typedef struct {
    atomic_int running, max_running, ran;
    int sleep_ms;
    int busy_ms; /* jobs whose request id starts with "busy" sleep this long instead */
} s_load_t;

static int s_job(void *arg, const rf_worker_job_t *job, rf_worker_result_t *res)
{
    s_load_t *l = arg;
    int now = atomic_fetch_add(&l->running, 1) + 1;
    int max = atomic_load(&l->max_running);
    while (now > max && !atomic_compare_exchange_weak(&l->max_running, &max, now)) {
    }
    bool busy = l->busy_ms > 0 && strncmp(job->spec->request_id, "busy", 4) == 0;
    usleep((useconds_t)(busy ? l->busy_ms : l->sleep_ms) * 1000);
    atomic_fetch_sub(&l->running, 1);
    atomic_fetch_add(&l->ran, 1);
    res->status = 200;
    snprintf(res->content_type, sizeof(res->content_type), "text/plain");
    res->body = (void *)job->spec->request_id;
    res->body_len = strlen(job->spec->request_id);
    return 0;
}

typedef struct {
    rf_config_t cfg;
    char *connect[2];
    rf_worker_t *worker;
    pthread_t tid;
    int rc;
} s_worker_fixture_t;

static void *s_worker_thread(void *arg)
{
    s_worker_fixture_t *w = arg;
    w->rc = rf_worker_run(w->worker);
    return NULL;
}

static void s_worker_start(s_worker_fixture_t *w, char **endpoints, size_t n, int capacity, s_load_t *load)
{
    memset(w, 0, sizeof(*w));
    for (size_t i = 0; i < n; i++)
        w->connect[i] = endpoints[i];
    w->cfg.bus.connect = w->connect;
    w->cfg.bus.n_connect = n;
    w->cfg.bus.heartbeat_ms = 50;
    w->cfg.bus.liveness = 20;
    w->worker = rf_worker_new(&w->cfg, "image", capacity, s_job, load, NULL);
    assert_non_null(w->worker);
    assert_int_equal(pthread_create(&w->tid, NULL, s_worker_thread, w), 0);
}

static void s_worker_stop(s_worker_fixture_t *w)
{
    rf_worker_stop(w->worker);
    pthread_join(w->tid, NULL);
    assert_int_equal(w->rc, 0);
    rf_worker_destroy(&w->worker);
}

/* ---- brokers ------------------------------------------------------------------ */

typedef struct {
    rf_config_t cfg;
    char endpoint[96];
    rf_metrics_t *metrics;
    rf_broker_t *broker;
    rf_submitter_t *sub;
} s_broker_fixture_t;

static void s_broker_start_q(s_broker_fixture_t *b, const char *name, int grace_ms, int queue_max)
{
    memset(b, 0, sizeof(*b));
    snprintf(b->endpoint, sizeof(b->endpoint), "ipc:///tmp/rf-test-broker-%d-%s", (int)getpid(), name);
    b->cfg.bus.endpoint = b->endpoint;
    b->cfg.bus.heartbeat_ms = 50;
    b->cfg.bus.liveness = 20;
    b->cfg.bus.queue_max = queue_max;
    b->cfg.bus.job_timeout_ms = 10000;
    b->cfg.bus.retries = 1;
    b->cfg.bus.no_worker_grace_ms = grace_ms;
    b->metrics = rf_metrics_new();
    char *err = NULL;
    b->broker = rf_broker_new(&b->cfg, b->metrics, &err);
    if (b->broker == NULL)
        fail_msg("rf_broker_new: %s", err ? err : "?");
    b->sub = rf_submitter_new(b->broker);
    assert_non_null(b->sub);
}

static void s_broker_start(s_broker_fixture_t *b, const char *name, int grace_ms)
{
    s_broker_start_q(b, name, grace_ms, 64);
}

static void s_broker_stop(s_broker_fixture_t *b)
{
    rf_submitter_destroy(&b->sub);
    rf_submitter_destroy(&b->sub); /* twice is safe */
    rf_broker_destroy(&b->broker);
    assert_null(b->broker);
    rf_broker_destroy(&b->broker);
    rf_metrics_destroy(&b->metrics);
}

static double s_metric(s_broker_fixture_t *b, const char *name)
{
    char *text = rf_metrics_render(b->metrics, NULL);
    double v = -1;
    char *p = text ? strstr(text, name) : NULL;
    if (p != NULL)
        v = strtod(p + strlen(name), NULL);
    free(text);
    return v;
}

/* Waits until `name` (a full series, e.g. `x{service="image"} `) reads v. */
static void s_wait_metric(s_broker_fixture_t *b, const char *name, double v, int timeout_ms)
{
    int64_t end = zclock_mono() + timeout_ms;
    while (zclock_mono() < end) {
        if (s_metric(b, name) == v)
            return;
        zclock_sleep(10);
    }
    fail_msg("%s is %g, not %g, after %d ms", name, s_metric(b, name), v, timeout_ms);
}

/* Results come back on the broker thread: collect them under a lock. */
typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int done, ok, unavailable, other;
    int64_t last_done_ms;
    char order[512]; /* "id=ok,id=503,…" in the order the jobs came back */
} s_results_t;

static void s_on_done(rf_job_t *job, void *arg)
{
    s_results_t *r = arg;
    pthread_mutex_lock(&r->lock);
    if (job->outcome == RF_JOB_OK && job->reply.status == 200 && job->reply_len == strlen(job->spec.request_id) &&
        memcmp(job->body_frames[0].data, job->spec.request_id, job->reply_len) == 0)
        r->ok++;
    else if (job->outcome == RF_JOB_UNAVAILABLE)
        r->unavailable++;
    else
        r->other++;
    size_t ol = strlen(r->order);
    snprintf(r->order + ol, sizeof(r->order) - ol, "%s%s=%s", ol ? "," : "", job->spec.request_id,
             job->outcome == RF_JOB_OK            ? "ok"
             : job->outcome == RF_JOB_UNAVAILABLE ? "503"
                                                  : "other");
    r->done++;
    r->last_done_ms = zclock_mono();
    pthread_cond_broadcast(&r->cond);
    pthread_mutex_unlock(&r->lock);
    rf_job_destroy(&job);
    rf_job_destroy(&job); /* twice is safe */
}

/* Submits a job; returns it (owned by the broker: only for
 * rf_job_promote while it surely waits). */
static rf_job_t *s_submit_job(s_broker_fixture_t *b, s_results_t *r, const char *reqid, bool background)
{
    rf_job_t *job = rf_job_new("image", reqid);
    assert_non_null(job);
    job->done = s_on_done;
    job->done_arg = r;
    job->background = background;
    job->spec.chain = json_array();
    rf_job_t *out = job;
    rf_broker_submit(b->sub, &job);
    assert_null(job);
    return out;
}

static void s_submit(s_broker_fixture_t *b, s_results_t *r, const char *reqid)
{
    s_submit_job(b, r, reqid, false);
}

static void s_wait_done(s_results_t *r, int n, int timeout_ms)
{
    int64_t end = zclock_mono() + timeout_ms;
    pthread_mutex_lock(&r->lock);
    while (r->done < n && zclock_mono() < end) {
        pthread_mutex_unlock(&r->lock);
        zclock_sleep(5);
        pthread_mutex_lock(&r->lock);
    }
    int done = r->done;
    pthread_mutex_unlock(&r->lock);
    if (done < n)
        fail_msg("%d of %d jobs came back in %d ms", done, n, timeout_ms);
}

static void s_results_init(s_results_t *r)
{
    memset(r, 0, sizeof(*r));
    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->cond, NULL);
}

/* ---- tests -------------------------------------------------------------------- */

/* One broker, one worker: jobs come back through their callback with the
 * reply decoded; the worker's threads are used in full (credit = capacity
 * for a single broker) and nothing waits in its local FIFO. */
static void test_one_broker(void **state)
{
    (void)state;
    s_broker_fixture_t b;
    s_broker_start(&b, "one", 1000);
    s_load_t load = {.sleep_ms = 20};
    s_worker_fixture_t w;
    char *eps[] = {b.endpoint};
    s_worker_start(&w, eps, 1, 3, &load);
    s_wait_metric(&b, "refract_bus_workers{service=\"image\"} ", 1, 3000);
    s_wait_metric(&b, "refract_bus_worker_credit{service=\"image\"} ", 3, 3000);
    s_results_t r;
    s_results_init(&r);
    char id[32];
    for (int i = 0; i < 12; i++) {
        snprintf(id, sizeof(id), "one-%d", i);
        s_submit(&b, &r, id);
    }
    s_wait_done(&r, 12, 5000);
    assert_int_equal(r.ok, 12);
    assert_int_equal(atomic_load(&load.max_running), 3);
    assert_int_equal(rf_worker_queued_peak(w.worker), 0);
    s_worker_stop(&w);
    s_broker_stop(&b);
}

/* Two brokers share one worker with 2 threads and both keep it busy: it
 * never holds a job it has no thread for, both brokers' jobs all succeed,
 * and the threads are used in full. */
static void test_two_brokers_share_credit(void **state)
{
    (void)state;
    s_broker_fixture_t a, b;
    s_broker_start(&a, "a", 1000);
    s_broker_start(&b, "b", 1000);
    s_load_t load = {.sleep_ms = 15};
    s_worker_fixture_t w;
    char *eps[] = {a.endpoint, b.endpoint};
    s_worker_start(&w, eps, 2, 2, &load);
    s_wait_metric(&a, "refract_bus_workers{service=\"image\"} ", 1, 3000);
    s_wait_metric(&b, "refract_bus_workers{service=\"image\"} ", 1, 3000);
    /* idle: the two threads are split, one standing credit each */
    s_wait_metric(&a, "refract_bus_worker_credit{service=\"image\"} ", 1, 3000);
    s_wait_metric(&b, "refract_bus_worker_credit{service=\"image\"} ", 1, 3000);
    s_results_t ra, rb;
    s_results_init(&ra);
    s_results_init(&rb);
    char id[32];
    for (int i = 0; i < 20; i++) {
        snprintf(id, sizeof(id), "a-%d", i);
        s_submit(&a, &ra, id);
        snprintf(id, sizeof(id), "b-%d", i);
        s_submit(&b, &rb, id);
    }
    s_wait_done(&ra, 20, 10000);
    s_wait_done(&rb, 20, 10000);
    assert_int_equal(ra.ok, 20);
    assert_int_equal(rb.ok, 20);
    assert_int_equal(atomic_load(&load.max_running), 2);
    assert_int_equal(rf_worker_queued_peak(w.worker), 0);

    /* Only broker a is busy now: it gets both threads (b's standing credit
     * is reclaimed), still without a job waiting in the worker. */
    atomic_store(&load.max_running, 0);
    s_results_t r2;
    s_results_init(&r2);
    for (int i = 0; i < 12; i++) {
        snprintf(id, sizeof(id), "a2-%d", i);
        s_submit(&a, &r2, id);
    }
    s_wait_done(&r2, 12, 10000);
    assert_int_equal(r2.ok, 12);
    assert_int_equal(atomic_load(&load.max_running), 2);
    assert_int_equal(rf_worker_queued_peak(w.worker), 0);
    s_worker_stop(&w);
    s_broker_stop(&a);
    s_broker_stop(&b);
}

/* No worker ever: refused at once. The only worker leaves: jobs wait
 * bus.no_worker_grace, then fail UNAVAILABLE (not at job_timeout). */
static void test_no_worker_grace(void **state)
{
    (void)state;
    s_broker_fixture_t b;
    s_broker_start(&b, "grace", 300);
    s_results_t r;
    s_results_init(&r);
    int64_t t0 = zclock_mono();
    s_submit(&b, &r, "never");
    s_wait_done(&r, 1, 1000);
    assert_int_equal(r.unavailable, 1);
    assert_true(r.last_done_ms - t0 < 200);

    s_load_t load = {.sleep_ms = 1};
    s_worker_fixture_t w;
    char *eps[] = {b.endpoint};
    s_worker_start(&w, eps, 1, 1, &load);
    s_wait_metric(&b, "refract_bus_workers{service=\"image\"} ", 1, 3000);
    s_worker_stop(&w); /* DISCONNECT */
    s_wait_metric(&b, "refract_bus_workers{service=\"image\"} ", 0, 3000);
    t0 = zclock_mono();
    s_submit(&b, &r, "orphan");
    s_wait_done(&r, 2, 3000);
    assert_int_equal(r.unavailable, 2);
    int64_t took = r.last_done_ms - t0;
    if (took < 100 || took > 1500)
        fail_msg("an orphaned job failed after %d ms (grace 300 ms, job_timeout 10 s)", (int)took);
    /* once the grace is over, refused at once */
    t0 = zclock_mono();
    s_submit(&b, &r, "late");
    s_wait_done(&r, 3, 1000);
    assert_int_equal(r.unavailable, 3);
    assert_true(r.last_done_ms - t0 < 200);
    s_broker_stop(&b);
}

/* One worker slot, taken by a long "busy" job (the worker's credit is 1).
 * Starts the broker (queue_max) and the worker, submits "busy" and waits
 * until it runs. */
static void s_one_slot_busy(s_broker_fixture_t *b, const char *name, int queue_max, s_load_t *load,
                            s_worker_fixture_t *w, s_results_t *r)
{
    s_broker_start_q(b, name, 1000, queue_max);
    char *eps[] = {b->endpoint};
    s_worker_start(w, eps, 1, 1, load);
    s_wait_metric(b, "refract_bus_worker_credit{service=\"image\"} ", 1, 3000);
    s_results_init(r);
    s_submit(b, r, "busy");
    s_wait_metric(b, "refract_bus_jobs_inflight{service=\"image\"} ", 1, 3000);
}

/* With the one slot busy, a background job queued first and a live job
 * queued after it: the live one is dispatched first, then the background
 * ones in their order. */
static void test_live_before_background(void **state)
{
    (void)state;
    s_broker_fixture_t b;
    s_worker_fixture_t w;
    s_results_t r;
    s_load_t load = {.sleep_ms = 10, .busy_ms = 500};
    s_one_slot_busy(&b, "prio", 64, &load, &w, &r);
    s_submit_job(&b, &r, "bg-1", true);
    s_submit_job(&b, &r, "bg-2", true);
    s_submit_job(&b, &r, "live-1", false);
    s_wait_metric(&b, "refract_bus_queue_depth{service=\"image\"} ", 3, 3000);
    assert_int_equal(r.done, 0); /* all three waited behind "busy" */
    s_wait_done(&r, 4, 5000);
    assert_string_equal(r.order, "busy=ok,live-1=ok,bg-1=ok,bg-2=ok");
    assert_int_equal(atomic_load(&load.max_running), 1);
    s_worker_stop(&w);
    s_broker_stop(&b);
}

/* A promoted background job (a client joined it) moves to the end of the
 * live FIFO: after the live jobs queued before the promotion, before those
 * queued after it, before the other background jobs. */
static void test_promoted_background(void **state)
{
    (void)state;
    s_broker_fixture_t b;
    s_worker_fixture_t w;
    s_results_t r;
    s_load_t load = {.sleep_ms = 10, .busy_ms = 600};
    s_one_slot_busy(&b, "promote", 64, &load, &w, &r);
    s_submit_job(&b, &r, "bg-1", true);
    rf_job_t *bg2 = s_submit_job(&b, &r, "bg-2", true);
    s_submit_job(&b, &r, "live-1", false);
    s_wait_metric(&b, "refract_bus_queue_depth{service=\"image\"} ", 3, 3000);
    rf_job_promote(bg2); /* still queued: "busy" runs for 600 ms */
    zclock_sleep(150);   /* several broker ticks (25 ms here) */
    s_submit_job(&b, &r, "live-2", false);
    s_wait_done(&r, 5, 5000);
    assert_string_equal(r.order, "busy=ok,live-1=ok,bg-2=ok,live-2=ok,bg-1=ok");
    assert_true(s_metric(&b, "refract_bus_background_jobs_total{service=\"image\",event=\"submitted\"} ") == 2);
    assert_true(s_metric(&b, "refract_bus_background_jobs_total{service=\"image\",event=\"promoted\"} ") == 1);
    s_worker_stop(&w);
    s_broker_stop(&b);
}

/* A full queue: a live job takes the place of the newest background job
 * (which fails 503); a background job is refused; a live job is refused
 * once every queued job is live. */
static void test_full_queue_live_takes_room(void **state)
{
    (void)state;
    s_broker_fixture_t b;
    s_worker_fixture_t w;
    s_results_t r;
    s_load_t load = {.sleep_ms = 10, .busy_ms = 500};
    s_one_slot_busy(&b, "room", 2, &load, &w, &r);
    s_submit_job(&b, &r, "bg-1", true);
    s_submit_job(&b, &r, "bg-2", true);
    s_wait_metric(&b, "refract_bus_queue_depth{service=\"image\"} ", 2, 3000);
    s_submit_job(&b, &r, "live-1", false); /* bg-2 gives its place */
    s_submit_job(&b, &r, "bg-3", true);    /* refused: full, and background */
    s_submit_job(&b, &r, "live-2", false); /* bg-1 gives its place */
    s_submit_job(&b, &r, "live-3", false); /* refused: full of live jobs */
    s_wait_done(&r, 7, 5000);
    assert_string_equal(r.order, "bg-2=503,bg-3=503,bg-1=503,live-3=503,busy=ok,live-1=ok,live-2=ok");
    assert_true(s_metric(&b, "refract_bus_background_jobs_total{service=\"image\",event=\"submitted\"} ") == 3);
    assert_true(s_metric(&b, "refract_bus_background_jobs_total{service=\"image\",event=\"displaced\"} ") == 2);
    s_worker_stop(&w);
    s_broker_stop(&b);
}

int main(void)
{
    rf_log_init("test_broker");
    rf_log_set_level(RF_LOG_ERROR);
    zsys_handler_set(NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_broker),
        cmocka_unit_test(test_two_brokers_share_credit),
        cmocka_unit_test(test_no_worker_grace),
        cmocka_unit_test(test_live_before_background),
        cmocka_unit_test(test_promoted_background),
        cmocka_unit_test(test_full_queue_live_takes_room),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
