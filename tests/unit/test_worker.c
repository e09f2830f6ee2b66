/*  Unit tests for common/rf_worker: the worker runs in a thread against a
 *  broker emulated here with a ROUTER socket on tcp://127.0.0.1 (ephemeral
 *  port), speaking RFB/1 through rf_bus_encode/rf_bus_recv. The emulated
 *  broker heartbeats the worker whenever the test waits, like a real one. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "rf_bus.h"
#include "rf_log.h"
#include "rf_metrics.h"
#include "rf_worker.h"

/* ---- the emulated broker ---------------------------------------------- */

typedef struct {
    zsock_t *router;
    char endpoint[64];
    int hb_ms;      /* how often the broker heartbeats the worker */
    zframe_t *peer; /* routing id of the last READY */
    int readies, heartbeats, disconnects;
    int capacity; /* from the last READY */
    int credit;   /* RFB/1.1: credit granted on the current connection */
    int64_t last_hb_sent;
    int64_t last_from_worker; /* to measure gaps in the worker's traffic */
    int64_t max_gap;
} s_broker_t;

static s_broker_t *s_broker_new(int hb_ms)
{
    s_broker_t *b = calloc(1, sizeof(*b));
    assert_non_null(b);
    b->router = zsock_new(ZMQ_ROUTER);
    assert_non_null(b->router);
    int port = zsock_bind(b->router, "tcp://127.0.0.1:*");
    assert_true(port > 0);
    snprintf(b->endpoint, sizeof(b->endpoint), "tcp://127.0.0.1:%d", port);
    b->hb_ms = hb_ms;
    return b;
}

static void s_broker_destroy(s_broker_t **b_p)
{
    if (*b_p == NULL)
        return;
    zframe_destroy(&(*b_p)->peer);
    zsock_destroy(&(*b_p)->router);
    free(*b_p);
    *b_p = NULL;
}

static void s_to_worker(s_broker_t *b, zmsg_t *msg)
{
    assert_non_null(msg);
    assert_non_null(b->peer);
    assert_int_equal(rf_bus_send(b->router, b->peer, &msg), 0);
}

static void s_send_cmd(s_broker_t *b, rf_bus_cmd_t cmd, uint64_t id)
{
    s_to_worker(b, rf_bus_encode(cmd, NULL, id, NULL));
}

/* Sends a JOB; `extra` (borrowed, may be NULL) is merged into its JSON;
 * deadline_ms < 0 leaves the member out. Body = the n frames given. */
static void s_send_job(s_broker_t *b, uint64_t id, const char *reqid, int deadline_ms, json_t *extra,
                       const char *const *frames, size_t n)
{
    json_t *h = json_pack("{s:s, s:[{s:s, s:i, s:i}]}", "request_id", reqid, "chain", "op", "resize", "w", 10, "h", 10);
    if (deadline_ms >= 0)
        json_object_set_new(h, "deadline_ms", json_integer(deadline_ms));
    if (extra != NULL)
        json_object_update(h, extra);
    zmsg_t *msg = rf_bus_encode(RF_BUS_JOB, NULL, id, h);
    json_decref(h);
    assert_non_null(msg);
    for (size_t i = 0; i < n; i++)
        zmsg_addmem(msg, frames[i], strlen(frames[i]));
    s_to_worker(b, msg);
}

/* Waits up to timeout_ms for a message with command `cmd` from the worker,
 * heartbeating it meanwhile and keeping counts of what it sees. Returns
 * the raw message (caller destroys, and clears *msg) or NULL on timeout. */
static zmsg_t *s_wait_for(s_broker_t *b, uint8_t cmd, int timeout_ms, rf_bus_msg_t *msg)
{
    int64_t end = zclock_mono() + timeout_ms;
    zsock_set_rcvtimeo(b->router, 5);
    while (zclock_mono() < end) {
        int64_t now = zclock_mono();
        if (b->peer != NULL && now - b->last_hb_sent >= b->hb_ms) {
            s_send_cmd(b, RF_BUS_HEARTBEAT, 0);
            b->last_hb_sent = now;
        }
        zframe_t *id = NULL;
        memset(msg, 0, sizeof(*msg));
        zmsg_t *raw = rf_bus_recv(b->router, &id, msg);
        if (raw == NULL)
            continue;
        now = zclock_mono();
        if (b->last_from_worker != 0 && now - b->last_from_worker > b->max_gap)
            b->max_gap = now - b->last_from_worker;
        b->last_from_worker = now;
        switch (msg->cmd) {
        case RF_BUS_READY:
            b->capacity = (int)json_integer_value(json_object_get(msg->header, "capacity"));
            if (b->peer != NULL && zframe_eq(b->peer, id)) {
                /* a credit grant on the same connection (RFB/1.1), not a new one */
                b->credit += (int)json_integer_value(json_object_get(msg->header, "credit"));
                break;
            }
            b->readies++;
            b->credit = (int)json_integer_value(json_object_get(msg->header, "credit"));
            zframe_destroy(&b->peer);
            b->peer = zframe_dup(id);
            break;
        case RF_BUS_HEARTBEAT: b->heartbeats++; break;
        case RF_BUS_DISCONNECT: b->disconnects++; break;
        default: break;
        }
        zframe_destroy(&id);
        if (msg->cmd == cmd)
            return raw;
        rf_bus_msg_clear(msg);
        zmsg_destroy(&raw);
    }
    return NULL;
}

/* Waits for a REPLY to job `id` (replies to other jobs fail the test). */
static zmsg_t *s_wait_reply(s_broker_t *b, uint64_t id, int timeout_ms, rf_bus_msg_t *msg)
{
    zmsg_t *raw = s_wait_for(b, RF_BUS_REPLY, timeout_ms, msg);
    if (raw == NULL)
        fail_msg("no REPLY to job %llu within %d ms", (unsigned long long)id, timeout_ms);
    if (msg->job_id != id)
        fail_msg("REPLY to job %llu, expected %llu", (unsigned long long)msg->job_id, (unsigned long long)id);
    return raw;
}

static int s_reply_status(const rf_bus_msg_t *msg)
{
    return (int)json_integer_value(json_object_get(msg->header, "status"));
}

/* The REPLY's body, NUL-terminated, in buf. */
static const char *s_reply_body(const rf_bus_msg_t *msg, char *buf, size_t len)
{
    size_t off = 0;
    for (size_t i = 0; i < msg->n_body && off + msg->body[i].len < len; i++) {
        memcpy(buf + off, msg->body[i].data, msg->body[i].len);
        off += msg->body[i].len;
    }
    buf[off] = '\0';
    return buf;
}

/* ---- the worker under test ------------------------------------------------ */

typedef struct {
    atomic_int calls;
    atomic_int cancelled_seen;
    atomic_int running, max_running;
    char last_reqid[64];
    pthread_mutex_t lock;
} s_cb_t;

/* Echoes the body as "echo:<body>". JOB JSON members steer it:
 * "sleep_ms" (sleep first), "wait_cancel" (run until cancelled), "fail". */
static int s_job(void *arg, const rf_worker_job_t *job, rf_worker_result_t *res)
{
    s_cb_t *cb = arg;
    atomic_fetch_add(&cb->calls, 1);
    int now_running = atomic_fetch_add(&cb->running, 1) + 1;
    int prev = atomic_load(&cb->max_running);
    while (now_running > prev && !atomic_compare_exchange_weak(&cb->max_running, &prev, now_running)) {
    }
    pthread_mutex_lock(&cb->lock);
    snprintf(cb->last_reqid, sizeof(cb->last_reqid), "%s", job->request_id);
    pthread_mutex_unlock(&cb->lock);

    int rc = 0;
    int sleep_ms = (int)json_integer_value(json_object_get(job->header, "sleep_ms"));
    int wait_cancel = json_is_true(json_object_get(job->header, "wait_cancel"));
    int64_t end = rf_worker_now_ms() + (wait_cancel ? 5000 : sleep_ms);
    while (rf_worker_now_ms() < end) {
        if (wait_cancel && atomic_load(job->cancelled)) {
            atomic_fetch_add(&cb->cancelled_seen, 1);
            res->status = 500;
            snprintf(res->error, sizeof(res->error), "cancelled\nwhile running"); /* newline must not leak */
            rc = -1;
            goto out;
        }
        usleep(2000);
    }
    if (json_is_true(json_object_get(job->header, "fail"))) {
        res->status = 415;
        snprintf(res->error, sizeof(res->error), "not an image");
        rc = -1;
        goto out;
    }
    res->status = 200;
    snprintf(res->content_type, sizeof(res->content_type), "text/plain");
    res->body = malloc(5 + job->body_len + 1);
    assert_non_null(res->body);
    memcpy(res->body, "echo:", 5);
    if (job->body_len > 0)
        memcpy((char *)res->body + 5, job->body, job->body_len);
    res->body_len = 5 + job->body_len;
    res->body_free = free;
out:
    atomic_fetch_sub(&cb->running, 1);
    return rc;
}

typedef struct {
    rf_config_t cfg;
    char *connect[2];
    rf_metrics_t *metrics;
    rf_worker_t *worker;
    pthread_t tid;
    int started;
    int rc;
    s_cb_t cb;
    s_broker_t *brokers[2];
    size_t n_brokers;
} s_fixture_t;

static void *s_run_thread(void *arg)
{
    s_fixture_t *f = arg;
    f->rc = rf_worker_run(f->worker);
    return NULL;
}

/* Starts brokers (n) and a worker connected to all of them; waits for a
 * READY on each. */
static void s_start(s_fixture_t *f, size_t n, int capacity, int hb_ms, int liveness)
{
    memset(f, 0, sizeof(*f));
    pthread_mutex_init(&f->cb.lock, NULL);
    f->n_brokers = n;
    for (size_t i = 0; i < n; i++) {
        f->brokers[i] = s_broker_new(hb_ms / 2 > 0 ? hb_ms / 2 : 1);
        f->connect[i] = f->brokers[i]->endpoint;
    }
    f->cfg.bus.connect = f->connect;
    f->cfg.bus.n_connect = n;
    f->cfg.bus.heartbeat_ms = hb_ms;
    f->cfg.bus.liveness = liveness;
    f->metrics = rf_metrics_new();
    assert_non_null(f->metrics);
    f->worker = rf_worker_new(&f->cfg, "image", capacity, s_job, &f->cb, f->metrics);
    assert_non_null(f->worker);
    assert_int_equal(pthread_create(&f->tid, NULL, s_run_thread, f), 0);
    f->started = 1;
    for (size_t i = 0; i < n; i++) {
        rf_bus_msg_t msg = {0};
        zmsg_t *raw = s_wait_for(f->brokers[i], RF_BUS_READY, 3000, &msg);
        assert_non_null(raw);
        rf_bus_msg_clear(&msg);
        zmsg_destroy(&raw);
    }
}

/* Stops the worker, checks it said DISCONNECT to every broker and that
 * rf_worker_run returned 0, and frees everything. */
static void s_stop(s_fixture_t *f)
{
    rf_worker_stop(f->worker);
    rf_worker_stop(f->worker); /* idempotent */
    pthread_join(f->tid, NULL);
    assert_int_equal(f->rc, 0);
    for (size_t i = 0; i < f->n_brokers; i++) {
        rf_bus_msg_t msg = {0};
        zmsg_t *raw = s_wait_for(f->brokers[i], RF_BUS_DISCONNECT, 2000, &msg);
        if (raw == NULL)
            fail_msg("broker %zu got no DISCONNECT", i);
        rf_bus_msg_clear(&msg);
        zmsg_destroy(&raw);
    }
    rf_worker_destroy(&f->worker);
    assert_null(f->worker);
    rf_worker_destroy(&f->worker); /* twice is safe */
    rf_metrics_destroy(&f->metrics);
    for (size_t i = 0; i < f->n_brokers; i++)
        s_broker_destroy(&f->brokers[i]);
    pthread_mutex_destroy(&f->cb.lock);
}

static void s_assert_metric(s_fixture_t *f, const char *needle)
{
    char *text = rf_metrics_render(f->metrics, NULL);
    assert_non_null(text);
    if (strstr(text, needle) == NULL)
        fail_msg("missing metric line:\n%s\n--- in ---\n%s", needle, text);
    free(text);
}

/* ---- tests ---------------------------------------------------------------- */

static void test_ready(void **state)
{
    (void)state;
    s_broker_t *b = s_broker_new(50);
    char *connect[] = {b->endpoint};
    rf_config_t cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.bus.connect = connect;
    cfg.bus.n_connect = 1;
    cfg.bus.heartbeat_ms = 100;
    cfg.bus.liveness = 3;
    s_fixture_t f;
    memset(&f, 0, sizeof(f));
    f.worker = rf_worker_new(&cfg, "image", 3, s_job, &f.cb, NULL); /* metrics are optional */
    assert_non_null(f.worker);
    assert_int_equal(pthread_create(&f.tid, NULL, s_run_thread, &f), 0);

    rf_bus_msg_t msg = {0};
    zmsg_t *raw = s_wait_for(b, RF_BUS_READY, 3000, &msg);
    assert_non_null(raw);
    assert_string_equal(msg.service, "image");
    assert_int_equal(json_integer_value(json_object_get(msg.header, "capacity")), 3);
    assert_int_equal(json_integer_value(json_object_get(msg.header, "pid")), getpid());
    assert_string_equal(json_string_value(json_object_get(msg.header, "version")), "0.1.0");
    assert_true(json_is_string(json_object_get(msg.header, "host")));
    rf_bus_msg_clear(&msg);
    zmsg_destroy(&raw);

    rf_worker_stop(f.worker);
    pthread_join(f.tid, NULL);
    assert_int_equal(f.rc, 0);
    raw = s_wait_for(b, RF_BUS_DISCONNECT, 2000, &msg);
    assert_non_null(raw);
    zmsg_destroy(&raw);
    assert_int_equal(rf_worker_run(f.worker), -1); /* only once */
    rf_worker_destroy(&f.worker);
    s_broker_destroy(&b);
}

static void test_new_rejects_bad_arguments(void **state)
{
    (void)state;
    char *connect[] = {"tcp://127.0.0.1:1"};
    rf_config_t cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.bus.connect = connect;
    cfg.bus.n_connect = 1;
    cfg.bus.heartbeat_ms = 100;
    cfg.bus.liveness = 3;
    s_cb_t cb;
    memset(&cb, 0, sizeof(cb));
    assert_null(rf_worker_new(&cfg, "Image", 1, s_job, &cb, NULL));
    assert_null(rf_worker_new(&cfg, "", 1, s_job, &cb, NULL));
    assert_null(rf_worker_new(&cfg, "image", 0, s_job, &cb, NULL));
    assert_null(rf_worker_new(&cfg, "image", 257, s_job, &cb, NULL));
    assert_null(rf_worker_new(&cfg, "image", 1, NULL, &cb, NULL));
    rf_worker_destroy(NULL);
    rf_worker_stop(NULL);
}

static void test_stop_before_run(void **state)
{
    (void)state;
    char *connect[] = {"tcp://127.0.0.1:1"};
    rf_config_t cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.bus.connect = connect;
    cfg.bus.n_connect = 1;
    cfg.bus.heartbeat_ms = 100;
    cfg.bus.liveness = 3;
    s_cb_t cb;
    memset(&cb, 0, sizeof(cb));
    rf_worker_t *w = rf_worker_new(&cfg, "image", 2, s_job, &cb, NULL);
    assert_non_null(w);
    rf_worker_stop(w);
    int64_t t0 = zclock_mono();
    assert_int_equal(rf_worker_run(w), 0);
    assert_true(zclock_mono() - t0 < 1000);
    rf_worker_destroy(&w);
    /* and destroy without ever running */
    w = rf_worker_new(&cfg, "image", 2, s_job, &cb, NULL);
    assert_non_null(w);
    rf_worker_destroy(&w);
}

static void test_job_reply(void **state)
{
    (void)state;
    s_fixture_t f;
    s_start(&f, 1, 2, 100, 5);
    s_broker_t *b = f.brokers[0];
    rf_bus_msg_t msg = {0};
    char body[256];

    /* a body split in several frames reaches the callback contiguous */
    const char *frames[] = {"ab", "", "cd"};
    s_send_job(b, 7, "req-7", 5000, NULL, frames, 3);
    zmsg_t *raw = s_wait_reply(b, 7, 3000, &msg);
    assert_int_equal(s_reply_status(&msg), 200);
    assert_string_equal(json_string_value(json_object_get(msg.header, "content_type")), "text/plain");
    assert_true(json_is_number(json_object_get(msg.header, "elapsed_ms")));
    assert_null(json_object_get(msg.header, "error"));
    assert_string_equal(s_reply_body(&msg, body, sizeof(body)), "echo:abcd");
    rf_bus_msg_clear(&msg);
    zmsg_destroy(&raw);
    pthread_mutex_lock(&f.cb.lock);
    assert_string_equal(f.cb.last_reqid, "req-7");
    pthread_mutex_unlock(&f.cb.lock);

    /* one frame, and no body at all */
    const char *one[] = {"xyz"};
    s_send_job(b, 8, "req-8", 5000, NULL, one, 1);
    raw = s_wait_reply(b, 8, 3000, &msg);
    assert_string_equal(s_reply_body(&msg, body, sizeof(body)), "echo:xyz");
    rf_bus_msg_clear(&msg);
    zmsg_destroy(&raw);
    s_send_job(b, 9, "req-9", -1, NULL, NULL, 0); /* no deadline_ms: tolerated */
    raw = s_wait_reply(b, 9, 3000, &msg);
    assert_int_equal(s_reply_status(&msg), 200);
    assert_string_equal(s_reply_body(&msg, body, sizeof(body)), "echo:");
    rf_bus_msg_clear(&msg);
    zmsg_destroy(&raw);

    /* a failure carries its reason and no body */
    json_t *extra = json_pack("{s:b}", "fail", 1);
    s_send_job(b, 10, "req-10", 5000, extra, one, 1);
    json_decref(extra);
    raw = s_wait_reply(b, 10, 3000, &msg);
    assert_int_equal(s_reply_status(&msg), 415);
    assert_string_equal(json_string_value(json_object_get(msg.header, "error")), "not an image");
    assert_int_equal(msg.n_body, 0);
    rf_bus_msg_clear(&msg);
    zmsg_destroy(&raw);

    assert_int_equal(atomic_load(&f.cb.calls), 4);
    s_assert_metric(&f, "refract_worker_jobs_total{service=\"image\",status=\"200\"} 3");
    s_assert_metric(&f, "refract_worker_jobs_total{service=\"image\",status=\"415\"} 1");
    s_assert_metric(&f, "refract_worker_job_duration_seconds_count{service=\"image\"} 4");
    s_assert_metric(&f, "refract_worker_jobs_inflight{service=\"image\"} 0");
    s_assert_metric(&f, "refract_worker_bus_reconnects_total{service=\"image\"} 0");
    s_stop(&f);
}

/* A JOB without body frames that names its source by reference gets the
 * file's bytes; a reference that cannot be read here answers 404, an
 * unsupported scheme 400, and neither reaches the callback. */
static void test_source_ref(void **state)
{
    (void)state;
    char path[] = "/tmp/refract-test-ref-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "from-a-file", 11), 11);
    close(fd);
    s_fixture_t f;
    s_start(&f, 1, 2, 100, 5);
    s_broker_t *b = f.brokers[0];
    rf_bus_msg_t msg = {0};
    char body[256], ref[300];

    snprintf(ref, sizeof(ref), "file://%s", path);
    json_t *extra = json_pack("{s:{s:s}}", "source", "ref", ref);
    s_send_job(b, 21, "req-21", 5000, extra, NULL, 0);
    json_decref(extra);
    zmsg_t *raw = s_wait_reply(b, 21, 3000, &msg);
    assert_int_equal(s_reply_status(&msg), 200);
    assert_string_equal(s_reply_body(&msg, body, sizeof(body)), "echo:from-a-file");
    rf_bus_msg_clear(&msg);
    zmsg_destroy(&raw);

    unlink(path);
    extra = json_pack("{s:{s:s}}", "source", "ref", ref);
    s_send_job(b, 22, "req-22", 5000, extra, NULL, 0);
    json_decref(extra);
    raw = s_wait_reply(b, 22, 3000, &msg);
    assert_int_equal(s_reply_status(&msg), 404);
    assert_non_null(strstr(json_string_value(json_object_get(msg.header, "error")), "not readable here"));
    rf_bus_msg_clear(&msg);
    zmsg_destroy(&raw);

    extra = json_pack("{s:{s:s}}", "source", "ref", "s3://bucket/key");
    s_send_job(b, 23, "req-23", 5000, extra, NULL, 0);
    json_decref(extra);
    raw = s_wait_reply(b, 23, 3000, &msg);
    assert_int_equal(s_reply_status(&msg), 400);
    rf_bus_msg_clear(&msg);
    zmsg_destroy(&raw);

    assert_int_equal(atomic_load(&f.cb.calls), 1);
    s_stop(&f);
}

/* Garbage and wrong-direction messages are dropped without harm. */
static void test_bad_messages_ignored(void **state)
{
    (void)state;
    s_fixture_t f;
    s_start(&f, 1, 1, 100, 5);
    s_broker_t *b = f.brokers[0];
    zmsg_t *junk = zmsg_new();
    zmsg_addstr(junk, "HTTP");
    zmsg_addstr(junk, "x");
    s_to_worker(b, junk);
    json_t *h = json_pack("{s:i}", "status", 200);
    s_to_worker(b, rf_bus_encode(RF_BUS_REPLY, NULL, 1, h));
    json_decref(h);
    s_send_cmd(b, RF_BUS_CANCEL, 12345); /* unknown job */
    const char *one[] = {"ok"};
    s_send_job(b, 1, "req-1", 5000, NULL, one, 1);
    rf_bus_msg_t msg = {0};
    zmsg_t *raw = s_wait_reply(b, 1, 3000, &msg);
    assert_int_equal(s_reply_status(&msg), 200);
    rf_bus_msg_clear(&msg);
    zmsg_destroy(&raw);
    assert_int_equal(b->readies, 1);
    s_stop(&f);
}

static void test_heartbeats(void **state)
{
    (void)state;
    s_fixture_t f;
    s_start(&f, 1, 1, 100, 5);
    s_broker_t *b = f.brokers[0];
    rf_bus_msg_t msg = {0};
    int before = b->heartbeats;
    /* nothing to wait for: just watch the traffic for 15 intervals */
    assert_null(s_wait_for(b, RF_BUS_REPLY, 1500, &msg));
    int got = b->heartbeats - before;
    if (got < 8 || got > 20)
        fail_msg("%d heartbeats in 1.5 s at a 100 ms interval", got);
    assert_int_equal(b->readies, 1); /* a heartbeating broker is never given up on */
    s_stop(&f);
}

static void test_cancel_before_start(void **state)
{
    (void)state;
    s_fixture_t f;
    s_start(&f, 1, 1, 100, 5);
    s_broker_t *b = f.brokers[0];
    rf_bus_msg_t msg = {0};
    json_t *slow = json_pack("{s:i}", "sleep_ms", 1500);
    const char *one[] = {"a"};
    s_send_job(b, 1, "req-slow", 5000, slow, one, 1);
    json_decref(slow);
    usleep(50000); /* job 1 is running: job 2 has to wait in the local queue */
    s_send_job(b, 2, "req-cancelled", 5000, NULL, one, 1);
    s_send_cmd(b, RF_BUS_CANCEL, 2);
    int64_t t0 = zclock_mono();
    /* the cancelled job is still answered (the broker counts it until then), at once */
    zmsg_t *raw = s_wait_reply(b, 2, 3000, &msg);
    assert_int_equal(s_reply_status(&msg), 504);
    assert_true(zclock_mono() - t0 < 1000);
    rf_bus_msg_clear(&msg);
    zmsg_destroy(&raw);
    raw = s_wait_reply(b, 1, 3000, &msg);
    assert_int_equal(s_reply_status(&msg), 200);
    rf_bus_msg_clear(&msg);
    zmsg_destroy(&raw);
    assert_int_equal(atomic_load(&f.cb.calls), 1); /* job 2 never ran */
    s_assert_metric(&f, "refract_worker_jobs_total{service=\"image\",status=\"504\"} 1");
    s_stop(&f);
}

static void test_cancel_running(void **state)
{
    (void)state;
    s_fixture_t f;
    s_start(&f, 1, 1, 100, 5);
    s_broker_t *b = f.brokers[0];
    rf_bus_msg_t msg = {0};
    json_t *extra = json_pack("{s:b}", "wait_cancel", 1);
    s_send_job(b, 5, "req-5", 5000, extra, NULL, 0);
    json_decref(extra);
    usleep(100000);
    assert_int_equal(atomic_load(&f.cb.running), 1);
    s_send_cmd(b, RF_BUS_CANCEL, 5);
    zmsg_t *raw = s_wait_reply(b, 5, 2000, &msg);
    assert_int_equal(s_reply_status(&msg), 500);
    assert_string_equal(json_string_value(json_object_get(msg.header, "error")), "cancelled while running");
    rf_bus_msg_clear(&msg);
    zmsg_destroy(&raw);
    assert_int_equal(atomic_load(&f.cb.cancelled_seen), 1);
    s_stop(&f);
}

static void test_expired_deadline(void **state)
{
    (void)state;
    s_fixture_t f;
    s_start(&f, 1, 1, 100, 5);
    s_broker_t *b = f.brokers[0];
    rf_bus_msg_t msg = {0};
    const char *one[] = {"a"};
    /* already expired on arrival */
    s_send_job(b, 1, "req-1", 0, NULL, one, 1);
    zmsg_t *raw = s_wait_reply(b, 1, 2000, &msg);
    assert_int_equal(s_reply_status(&msg), 504);
    assert_non_null(json_string_value(json_object_get(msg.header, "error")));
    rf_bus_msg_clear(&msg);
    zmsg_destroy(&raw);
    assert_int_equal(atomic_load(&f.cb.calls), 0);

    /* expires while waiting behind a busy job thread: answered at its deadline */
    json_t *slow = json_pack("{s:i}", "sleep_ms", 1500);
    s_send_job(b, 2, "req-2", 5000, slow, one, 1);
    json_decref(slow);
    usleep(50000);
    int64_t t0 = zclock_mono();
    s_send_job(b, 3, "req-3", 100, NULL, one, 1);
    raw = s_wait_reply(b, 3, 2000, &msg);
    assert_int_equal(s_reply_status(&msg), 504);
    int64_t waited = zclock_mono() - t0;
    if (waited < 80 || waited > 1000)
        fail_msg("queued job expired after %lld ms, deadline was 100 ms", (long long)waited);
    rf_bus_msg_clear(&msg);
    zmsg_destroy(&raw);
    raw = s_wait_reply(b, 2, 3000, &msg);
    assert_int_equal(s_reply_status(&msg), 200);
    rf_bus_msg_clear(&msg);
    zmsg_destroy(&raw);
    assert_int_equal(atomic_load(&f.cb.calls), 1);
    s_stop(&f);
}

static void test_disconnect_reconnects(void **state)
{
    (void)state;
    s_fixture_t f;
    s_start(&f, 1, 2, 100, 5);
    s_broker_t *b = f.brokers[0];
    rf_bus_msg_t msg = {0};
    zframe_t *old = zframe_dup(b->peer);
    s_send_cmd(b, RF_BUS_DISCONNECT, 0);
    zmsg_t *raw = NULL;
    for (int i = 0; i < 10 && b->readies < 2; i++) { /* skip credit grants on the old connection */
        rf_bus_msg_clear(&msg);
        zmsg_destroy(&raw);
        raw = s_wait_for(b, RF_BUS_READY, 2000, &msg);
        assert_non_null(raw);
    }
    assert_int_equal(json_integer_value(json_object_get(msg.header, "capacity")), 2);
    rf_bus_msg_clear(&msg);
    zmsg_destroy(&raw);
    assert_int_equal(b->readies, 2);
    assert_false(zframe_eq(old, b->peer)); /* a new socket, so a new routing id */
    zframe_destroy(&old);
    /* and the new connection serves jobs */
    const char *one[] = {"again"};
    s_send_job(b, 1, "req-1", 5000, NULL, one, 1);
    raw = s_wait_reply(b, 1, 2000, &msg);
    assert_int_equal(s_reply_status(&msg), 200);
    rf_bus_msg_clear(&msg);
    zmsg_destroy(&raw);
    s_assert_metric(&f, "refract_worker_bus_reconnects_total{service=\"image\"} 1");
    s_stop(&f);
}

/* A job that arrived on a connection the worker has since replaced is not
 * answered on the new one (job ids are per broker lifetime). */
static void test_no_reply_across_reconnect(void **state)
{
    (void)state;
    s_fixture_t f;
    s_start(&f, 1, 1, 100, 5);
    s_broker_t *b = f.brokers[0];
    rf_bus_msg_t msg = {0};
    json_t *slow = json_pack("{s:i}", "sleep_ms", 300);
    const char *one[] = {"a"};
    s_send_job(b, 1, "req-1", 5000, slow, one, 1);
    json_decref(slow);
    usleep(50000);
    s_send_cmd(b, RF_BUS_DISCONNECT, 0);
    zmsg_t *raw = s_wait_for(b, RF_BUS_READY, 2000, &msg);
    assert_non_null(raw);
    rf_bus_msg_clear(&msg);
    zmsg_destroy(&raw);
    assert_null(s_wait_for(b, RF_BUS_REPLY, 600, &msg));
    s_stop(&f);
}

static void test_silent_broker_reconnect(void **state)
{
    (void)state;
    s_fixture_t f;
    s_start(&f, 1, 1, 50, 2);
    s_broker_t *b = f.brokers[0];
    /* the broker goes quiet: read without heartbeating for 1 s */
    int readies = 0;
    int64_t end = zclock_mono() + 1000;
    zsock_set_rcvtimeo(b->router, 20);
    while (zclock_mono() < end) {
        rf_bus_msg_t msg = {0};
        zframe_t *id = NULL;
        zmsg_t *raw = rf_bus_recv(b->router, &id, &msg);
        if (raw == NULL)
            continue;
        if (msg.cmd == RF_BUS_READY && (b->peer == NULL || !zframe_eq(b->peer, id))) {
            readies++; /* a new connection, not a credit grant on the same one */
            zframe_destroy(&b->peer);
            b->peer = zframe_dup(id);
        }
        zframe_destroy(&id);
        rf_bus_msg_clear(&msg);
        zmsg_destroy(&raw);
    }
    /* liveness is 100 ms: several new READYs, each from a fresh socket */
    if (readies < 3 || readies > 12)
        fail_msg("%d READYs in 1 s of silence with a 100 ms liveness", readies);
    char *text = rf_metrics_render(f.metrics, NULL);
    assert_null(strstr(text, "refract_worker_bus_reconnects_total{service=\"image\"} 0"));
    free(text);
    s_stop(&f);
}

static void test_heartbeats_while_busy(void **state)
{
    (void)state;
    s_fixture_t f;
    s_start(&f, 1, 1, 100, 4);
    s_broker_t *b = f.brokers[0];
    rf_bus_msg_t msg = {0};
    json_t *slow = json_pack("{s:i}", "sleep_ms", 1500); /* > 3 × liveness × interval */
    const char *one[] = {"a"};
    b->max_gap = 0;
    b->last_from_worker = zclock_mono();
    s_send_job(b, 1, "req-1", 5000, slow, one, 1);
    json_decref(slow);
    zmsg_t *raw = s_wait_reply(b, 1, 3000, &msg);
    assert_int_equal(s_reply_status(&msg), 200);
    rf_bus_msg_clear(&msg);
    zmsg_destroy(&raw);
    if (b->max_gap >= 400)
        fail_msg("the worker was silent for %lld ms while busy", (long long)b->max_gap);
    assert_true(b->heartbeats >= 10);
    assert_int_equal(b->readies, 1); /* and it never thought the broker dead */
    s_stop(&f);
}

/* Two brokers share a worker with one job thread: the second job waits in
 * the local queue and each reply goes back on its own connection. */
static void test_two_brokers_local_queue(void **state)
{
    (void)state;
    s_fixture_t f;
    s_start(&f, 2, 1, 100, 5);
    rf_bus_msg_t msg = {0};
    json_t *slow = json_pack("{s:i}", "sleep_ms", 200);
    const char *one[] = {"one"}, *two[] = {"two"};
    s_send_job(f.brokers[0], 1, "req-a", 5000, slow, one, 1);
    s_send_job(f.brokers[1], 1, "req-b", 5000, slow, two, 1); /* same id: ids are per broker */
    json_decref(slow);
    char body[64];
    int64_t t0 = zclock_mono();
    zmsg_t *raw = s_wait_reply(f.brokers[0], 1, 3000, &msg);
    assert_string_equal(s_reply_body(&msg, body, sizeof(body)), "echo:one");
    rf_bus_msg_clear(&msg);
    zmsg_destroy(&raw);
    raw = s_wait_reply(f.brokers[1], 1, 3000, &msg);
    assert_string_equal(s_reply_body(&msg, body, sizeof(body)), "echo:two");
    rf_bus_msg_clear(&msg);
    zmsg_destroy(&raw);
    assert_true(zclock_mono() - t0 >= 350); /* one after the other */
    assert_int_equal(atomic_load(&f.cb.max_running), 1);
    assert_int_equal(f.brokers[0]->readies, 1);
    assert_int_equal(f.brokers[1]->readies, 1);
    s_stop(&f);
}

/* capacity jobs run at once. */
static void test_parallel_jobs(void **state)
{
    (void)state;
    s_fixture_t f;
    s_start(&f, 1, 3, 100, 5);
    s_broker_t *b = f.brokers[0];
    rf_bus_msg_t msg = {0};
    json_t *slow = json_pack("{s:i}", "sleep_ms", 600);
    const char *one[] = {"p"};
    for (uint64_t id = 1; id <= 3; id++)
        s_send_job(b, id, "req-p", 5000, slow, one, 1);
    json_decref(slow);
    int64_t t0 = zclock_mono();
    for (int i = 0; i < 3; i++) {
        zmsg_t *raw = s_wait_for(b, RF_BUS_REPLY, 3000, &msg);
        assert_non_null(raw);
        assert_int_equal(s_reply_status(&msg), 200);
        rf_bus_msg_clear(&msg);
        zmsg_destroy(&raw);
    }
    assert_true(zclock_mono() - t0 < 1500); /* in series it would take 1.8 s */
    assert_int_equal(atomic_load(&f.cb.max_running), 3);
    s_stop(&f);
}

/* Stopping with a job running cancels it and still returns promptly. */
static void test_stop_with_running_job(void **state)
{
    (void)state;
    s_fixture_t f;
    s_start(&f, 1, 1, 100, 5);
    s_broker_t *b = f.brokers[0];
    json_t *extra = json_pack("{s:b}", "wait_cancel", 1);
    s_send_job(b, 1, "req-1", 5000, extra, NULL, 0);
    s_send_job(b, 2, "req-2", 5000, extra, NULL, 0); /* queued: dropped */
    json_decref(extra);
    usleep(100000);
    int64_t t0 = zclock_mono();
    s_stop(&f);
    assert_true(zclock_mono() - t0 < 2000);
    assert_int_equal(atomic_load(&f.cb.calls), 1);
    assert_int_equal(atomic_load(&f.cb.cancelled_seen), 1);
}

int main(void)
{
    rf_log_init("test_worker");
    rf_log_set_level(RF_LOG_WARN);
    zsys_handler_set(NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ready),
        cmocka_unit_test(test_new_rejects_bad_arguments),
        cmocka_unit_test(test_stop_before_run),
        cmocka_unit_test(test_job_reply),
        cmocka_unit_test(test_source_ref),
        cmocka_unit_test(test_bad_messages_ignored),
        cmocka_unit_test(test_heartbeats),
        cmocka_unit_test(test_cancel_before_start),
        cmocka_unit_test(test_cancel_running),
        cmocka_unit_test(test_expired_deadline),
        cmocka_unit_test(test_disconnect_reconnects),
        cmocka_unit_test(test_no_reply_across_reconnect),
        cmocka_unit_test(test_silent_broker_reconnect),
        cmocka_unit_test(test_heartbeats_while_busy),
        cmocka_unit_test(test_two_brokers_local_queue),
        cmocka_unit_test(test_parallel_jobs),
        cmocka_unit_test(test_stop_with_running_job),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
