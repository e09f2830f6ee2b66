/*  pw_kafka — the producer of dead letters and events (pw.h).
 *
 *  Why wait for each delivery report: a message's offset is committed only
 *  once its dead-letter envelope and its event are in the brokers' hands,
 *  so nothing a consumer saw is forgotten. The producer is idempotent
 *  (enable.idempotence, acks=all): librdkafka's own resends never write a
 *  message twice; only a resend by the caller after an uncertain failure
 *  can, and subscribers dedupe on the key (the message id).
 *
 *  Shape: one librdkafka producer shared by the worker threads (it is
 *  thread-safe), one thread that serves its delivery reports
 *  (rd_kafka_poll) and wakes the worker that waits for each one.
 */
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pw.h"
#include "rf_log.h"

#define S_TIMEOUT_MS 10000 /* message.timeout.ms: the bound of one delivery */

/* One message's delivery report (the head of a pw_send_t). */
typedef struct {
    bool done;
    bool abandoned;
    rd_kafka_resp_err_t err;
} s_report_t;

struct pw_producer_t {
    rd_kafka_t *rk;
    const atomic_int *stop;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* CLOCK_MONOTONIC */
    pthread_t th;
    bool th_started;
    atomic_int quit;
};

static void s_deadline(struct timespec *ts, int ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

static bool s_past(const struct timespec *d)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec > d->tv_sec || (now.tv_sec == d->tv_sec && now.tv_nsec >= d->tv_nsec);
}

/* Delivery reports, on the report thread (rd_kafka_poll). */
static void s_dr(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    pw_producer_t *p = opaque;
    s_report_t *r = m->_private;
    if (r == NULL)
        return;
    pthread_mutex_lock(&p->mu);
    if (r->abandoned) {
        free(r); /* the head of its pw_send_t: the whole send */
    } else {
        r->err = m->err;
        r->done = true;
        pthread_cond_broadcast(&p->cv);
    }
    pthread_mutex_unlock(&p->mu);
}

static void s_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    (void)opaque;
    if (err == RD_KAFKA_RESP_ERR__TRANSPORT || err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN)
        return; /* said by s_log, or by the failed sends */
    rf_warn("prewarm producer %s: %s", rd_kafka_name(rk), reason);
}

static void s_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    if (level <= 4)
        rf_warn("prewarm kafka %s: %s: %s", rd_kafka_name(rk), fac, buf);
}

static void *s_reports(void *arg)
{
    pw_producer_t *p = arg;
    while (!atomic_load(&p->quit))
        rd_kafka_poll(p->rk, 100);
    return NULL;
}

static int s_set(rd_kafka_conf_t *conf, const char *name, const char *value, char *why, size_t why_len)
{
    char err[256];
    if (rd_kafka_conf_set(conf, name, value, err, sizeof(err)) == RD_KAFKA_CONF_OK)
        return 0;
    return rf_why(why, why_len, "%s: %s", name, err);
}

pw_producer_t *pw_producer_new(const char *brokers, const atomic_int *stop, char *why, size_t why_len)
{
    pw_producer_t *p = calloc(1, sizeof(*p));
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    pthread_condattr_t ca;
    char timeout[16], err[256];
    if (p == NULL || conf == NULL) {
        rf_why(why, why_len, "out of memory");
        goto fail;
    }
    p->stop = stop;
    pthread_mutex_init(&p->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->cv, &ca);
    pthread_condattr_destroy(&ca);
    snprintf(timeout, sizeof(timeout), "%d", S_TIMEOUT_MS);
    if (s_set(conf, "bootstrap.servers", brokers, why, why_len) < 0 ||
        s_set(conf, "client.id", "refract-prewarm", why, why_len) < 0 ||
        s_set(conf, "enable.idempotence", "true", why, why_len) < 0 || s_set(conf, "acks", "all", why, why_len) < 0 ||
        s_set(conf, "message.timeout.ms", timeout, why, why_len) < 0 ||
        s_set(conf, "linger.ms", "1", why, why_len) < 0 ||
        s_set(conf, "reconnect.backoff.max.ms", "1000", why, why_len) < 0 ||
        s_set(conf, "log.connection.close", "false", why, why_len) < 0)
        goto fail;
    rd_kafka_conf_set_opaque(conf, p);
    rd_kafka_conf_set_dr_msg_cb(conf, s_dr);
    rd_kafka_conf_set_error_cb(conf, s_error);
    rd_kafka_conf_set_log_cb(conf, s_log);
    if ((p->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err))) == NULL) {
        rf_why(why, why_len, "cannot make a producer: %s", err);
        goto fail;
    }
    conf = NULL; /* the producer's now */
    if (pthread_create(&p->th, NULL, s_reports, p) != 0) {
        rf_why(why, why_len, "cannot start the delivery report thread");
        goto fail;
    }
    p->th_started = true;
    return p;
fail:
    if (conf != NULL)
        rd_kafka_conf_destroy(conf);
    pw_producer_destroy(&p);
    return NULL;
}

void pw_producer_warm(pw_producer_t *p, const char *const *topics, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (topics[i] == NULL)
            continue;
        rd_kafka_topic_t *t = rd_kafka_topic_new(p->rk, topics[i], NULL);
        const struct rd_kafka_metadata *md = NULL;
        rd_kafka_resp_err_t err = t != NULL ? rd_kafka_metadata(p->rk, 0, t, &md, 5000) : RD_KAFKA_RESP_ERR__FAIL;
        if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
            rf_info("prewarm: metadata of %s not fetched ahead (%s): the first send fetches it", topics[i],
                    rd_kafka_err2str(err));
        if (md != NULL)
            rd_kafka_metadata_destroy(md);
        if (t != NULL)
            rd_kafka_topic_destroy(t);
    }
}

/* A send begun by pw_send_begin: its delivery report and how long to
 * wait for it. Filled under the producer's mutex by s_dr; freed by
 * pw_send_wait, or by s_dr when the waiter gave up. */
struct pw_send_t {
    s_report_t rep; /* first: s_dr finds it through the message's opaque */
    struct timespec deadline;
};

pw_send_t *pw_send_begin(pw_producer_t *p, const char *topic, const char *key, const char *value, size_t len, char *why,
                         size_t why_len)
{
    pw_send_t *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        rf_why(why, why_len, "out of memory");
        return NULL;
    }
    /* librdkafka reports every message within message.timeout.ms; the
     * margin only guards against a report that never comes. */
    s_deadline(&s->deadline, S_TIMEOUT_MS + 2000);
    rd_kafka_resp_err_t err = rd_kafka_producev(
        p->rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, strlen(key)), RD_KAFKA_V_VALUE((void *)value, len),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_OPAQUE(&s->rep), RD_KAFKA_V_END);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        free(s);
        rf_why(why, why_len, "produce to %s: %s", topic, rd_kafka_err2str(err));
        return NULL;
    }
    return s;
}

int pw_send_wait(pw_producer_t *p, pw_send_t **s_p, const char *topic, char *why, size_t why_len)
{
    pw_send_t *s = *s_p;
    *s_p = NULL;
    if (s == NULL)
        return rf_why(why, why_len, "to %s: not sent", topic);
    int rc = -1;
    pthread_mutex_lock(&p->mu);
    while (!s->rep.done && !s_past(&s->deadline) && !(p->stop != NULL && atomic_load(p->stop))) {
        struct timespec step;
        s_deadline(&step, 100);
        pthread_cond_timedwait(&p->cv, &p->mu, &step);
    }
    if (!s->rep.done) {
        s->rep.abandoned = true; /* s_dr frees it */
        rf_why(why, why_len, "to %s: no delivery report (%s)", topic,
               p->stop != NULL && atomic_load(p->stop) ? "stopping" : "timeout");
    } else if (s->rep.err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        rf_why(why, why_len, "to %s: %s", topic, rd_kafka_err2str(s->rep.err));
        free(s);
    } else {
        rc = 0;
        free(s);
    }
    pthread_mutex_unlock(&p->mu);
    return rc;
}

void pw_producer_destroy(pw_producer_t **self_p)
{
    if (self_p == NULL || *self_p == NULL)
        return;
    pw_producer_t *p = *self_p;
    if (p->rk != NULL) {
        /* Every send was waited for; what is left (abandoned sends) is
         * purged, and its reports free their records. */
        rd_kafka_purge(p->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        rd_kafka_flush(p->rk, 2000);
    }
    if (p->th_started) {
        atomic_store(&p->quit, 1);
        pthread_join(p->th, NULL);
    }
    if (p->rk != NULL)
        rd_kafka_destroy(p->rk);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p);
    *self_p = NULL;
}
