/*  sg_kafka — Kafka webhook targets of the storgate outbox (sg_kafka.h).
 *
 *  Why this shape: the outbox already gives at-least-once delivery (a file
 *  per webhook, removed after a success, retried with backoff), so a Kafka
 *  target only has to say "the brokers have it" truthfully. Each message is
 *  produced and then waited for: its delivery report comes from an
 *  idempotent producer with acks=all, so librdkafka's own retries (lost
 *  responses, reconnects) never write it twice; only a retry by the outbox
 *  after an uncertain failure can, and receivers dedupe on the key, which
 *  is the webhook's idempotency key (the same partition, in order, too).
 *
 *  One producer per broker list, made at its first use and kept. A list
 *  whose last send failed (brokers down) is probed with a metadata request
 *  (2 s at most) before the next message is produced, and a failed probe
 *  answers the following sends at once for 1 s: an outage costs the
 *  delivery thread a probe per pass instead of the full 10 s per file, and
 *  no message is left queued in librdkafka behind the outbox's back.
 */
#include <librdkafka/rdkafka.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rf_log.h"
#include "sg_kafka.h"

#define S_PREFIX "kafka://"
#define S_TIMEOUT_MS 10000 /* message.timeout.ms: the bound of one delivery */
#define S_PROBE_MS 2000    /* a metadata probe of a failing broker list */
#define S_HOLD_MS 1000     /* after a failed probe, sends fail at once this long */
#define S_TOPIC_MAX 249

/* One message's delivery report, filled by s_dr on the delivery thread
 * (rd_kafka_poll); freed by the sender, or by s_dr when it gave up. */
typedef struct {
    bool done;
    bool abandoned;
    rd_kafka_resp_err_t err;
} s_report_t;

typedef struct s_prod_t {
    struct s_prod_t *next;
    char *brokers;
    rd_kafka_t *rk;
    bool failing;         /* the last send failed: probe before the next */
    int64_t probe_failed; /* when the last probe failed (ms), 0 if none */
} s_prod_t;

struct sg_kafka_t {
    const atomic_int *stop;
    s_prod_t *prods;
};

static int64_t s_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

bool sg_kafka_is_target(const char *target)
{
    return strncmp(target, S_PREFIX, strlen(S_PREFIX)) == 0;
}

/* One HOST:PORT of the broker list, [s, e). */
static bool s_hostport_ok(const char *s, const char *e)
{
    const char *colon = NULL;
    for (const char *p = s; p < e; p++)
        if (*p == ':')
            colon = p;
    if (colon == NULL || colon == s || colon + 1 == e || e - colon > 6)
        return false;
    long port = 0;
    for (const char *p = colon + 1; p < e; p++) {
        if (*p < '0' || *p > '9')
            return false;
        port = port * 10 + (*p - '0');
    }
    for (const char *p = s; p < colon; p++)
        if (*p <= ' ' || *p == '/' || *p == '@' || *p == '?' || *p == '#')
            return false;
    return port >= 1 && port <= 65535;
}

/* Splits a kafka:// target into its broker list and topic (copied into
 * the buffers). 0, or -1 with why. */
static int s_split(const char *target, char *brokers, size_t blen, char *topic, size_t tlen, char *why, size_t why_len)
{
    if (!sg_kafka_is_target(target)) {
        snprintf(why, why_len, "not a kafka:// target");
        return -1;
    }
    const char *b = target + strlen(S_PREFIX), *slash = strchr(b, '/');
    if (slash == NULL || slash == b) {
        snprintf(why, why_len, "kafka://HOST:PORT[,HOST:PORT...]/TOPIC expected");
        return -1;
    }
    for (const char *s = b; s < slash;) {
        const char *e = memchr(s, ',', (size_t)(slash - s));
        if (e == NULL)
            e = slash;
        if (!s_hostport_ok(s, e)) {
            snprintf(why, why_len, "broker %.*s: HOST:PORT expected", (int)(e - s) > 100 ? 100 : (int)(e - s), s);
            return -1;
        }
        s = e < slash ? e + 1 : e;
        if (e < slash && s == slash) {
            snprintf(why, why_len, "empty broker after ','");
            return -1;
        }
    }
    const char *t = slash + 1;
    size_t tl = strlen(t);
    bool ok = tl >= 1 && tl <= S_TOPIC_MAX && strcmp(t, ".") != 0 && strcmp(t, "..") != 0 &&
              strspn(t, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == tl;
    if (!ok) {
        snprintf(why, why_len, "topic: 1 to %d of [A-Za-z0-9._-] expected", S_TOPIC_MAX);
        return -1;
    }
    if ((size_t)(slash - b) >= blen || tl >= tlen) {
        snprintf(why, why_len, "target too long");
        return -1;
    }
    memcpy(brokers, b, (size_t)(slash - b));
    brokers[slash - b] = '\0';
    memcpy(topic, t, tl + 1);
    return 0;
}

int sg_kafka_check(const char *target, char *why, size_t why_len)
{
    char brokers[2048], topic[S_TOPIC_MAX + 1];
    return s_split(target, brokers, sizeof(brokers), topic, sizeof(topic), why, why_len);
}

/* ---- librdkafka callbacks ------------------------------------------------------------------ */

/* Delivery reports: called by rd_kafka_poll on the delivery thread. */
static void s_dr(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    (void)opaque;
    s_report_t *r = m->_private;
    if (r == NULL)
        return;
    if (r->abandoned) {
        free(r);
        return;
    }
    r->err = m->err;
    r->done = true;
}

/* Errors (rd_kafka_poll, delivery thread): logged, but for transport
 * errors, which s_log has already said; fatal ones are handled after the
 * send (rd_kafka_fatal_error). */
static void s_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    (void)opaque;
    if (err == RD_KAFKA_RESP_ERR__TRANSPORT)
        return;
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        char fatal[256] = "";
        rd_kafka_fatal_error(rk, fatal, sizeof(fatal));
        rf_error("storgate kafka %s: fatal: %s (a new producer is made for the next send)", rd_kafka_name(rk), fatal);
    } else {
        rf_warn("storgate kafka %s: %s", rd_kafka_name(rk), reason);
    }
}

/* librdkafka's own log (its threads): warnings and worse only. */
static void s_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    if (level <= 4)
        rf_warn("storgate kafka %s: %s: %s", rd_kafka_name(rk), fac, buf);
}

/* ---- producers ------------------------------------------------------------------------------- */

static void s_prod_free(s_prod_t *p)
{
    if (p == NULL)
        return;
    if (p->rk != NULL) {
        /* Nothing should be left (each send waits for its report); what
         * is (an abandoned send) is purged, its report freeing it. */
        rd_kafka_purge(p->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        rd_kafka_flush(p->rk, 1000);
        rd_kafka_destroy(p->rk);
    }
    free(p->brokers);
    free(p);
}

static int s_set(rd_kafka_conf_t *conf, const char *name, const char *value, char *why, size_t why_len)
{
    char err[256];
    if (rd_kafka_conf_set(conf, name, value, err, sizeof(err)) == RD_KAFKA_CONF_OK)
        return 0;
    snprintf(why, why_len, "%s: %s", name, err);
    return -1;
}

/* The producer of a broker list, made when first needed. */
static s_prod_t *s_producer(sg_kafka_t *k, const char *brokers, char *why, size_t why_len)
{
    for (s_prod_t *p = k->prods; p != NULL; p = p->next)
        if (strcmp(p->brokers, brokers) == 0)
            return p;
    char timeout[16];
    snprintf(timeout, sizeof(timeout), "%d", S_TIMEOUT_MS);
    s_prod_t *p = calloc(1, sizeof(*p));
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (p == NULL || conf == NULL || (p->brokers = strdup(brokers)) == NULL) {
        snprintf(why, why_len, "out of memory");
        goto fail;
    }
    if (s_set(conf, "bootstrap.servers", brokers, why, why_len) < 0 ||
        s_set(conf, "client.id", "refract-storgate-scheduler", why, why_len) < 0 ||
        s_set(conf, "enable.idempotence", "true", why, why_len) < 0 || s_set(conf, "acks", "all", why, why_len) < 0 ||
        s_set(conf, "message.timeout.ms", timeout, why, why_len) < 0 ||
        s_set(conf, "linger.ms", "0", why, why_len) < 0 ||
        s_set(conf, "reconnect.backoff.max.ms", "1000", why, why_len) < 0 ||
        s_set(conf, "log.connection.close", "false", why, why_len) < 0)
        goto fail;
    rd_kafka_conf_set_dr_msg_cb(conf, s_dr);
    rd_kafka_conf_set_error_cb(conf, s_error);
    rd_kafka_conf_set_log_cb(conf, s_log);
    char err[256];
    if ((p->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err))) == NULL) {
        snprintf(why, why_len, "cannot make a producer: %s", err);
        goto fail;
    }
    conf = NULL; /* the producer's now */
    p->next = k->prods;
    k->prods = p;
    rf_info("storgate kafka: idempotent producer %s for %s", rd_kafka_name(p->rk), brokers);
    return p;
fail:
    if (conf != NULL)
        rd_kafka_conf_destroy(conf);
    s_prod_free(p);
    return NULL;
}

/* Removes a producer from the set and destroys it. */
static void s_drop(sg_kafka_t *k, s_prod_t *p)
{
    for (s_prod_t **pp = &k->prods; *pp != NULL; pp = &(*pp)->next)
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    s_prod_free(p);
}

/* Whether a failing broker list answers again: a metadata request. */
static bool s_probe(s_prod_t *p, char *why, size_t why_len)
{
    int64_t now = s_now_ms();
    if (p->probe_failed != 0 && now - p->probe_failed < S_HOLD_MS) {
        snprintf(why, why_len, "brokers unreachable (probed %lld ms ago)", (long long)(now - p->probe_failed));
        return false;
    }
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t err = rd_kafka_metadata(p->rk, 0, NULL, &md, S_PROBE_MS);
    if (md != NULL)
        rd_kafka_metadata_destroy(md);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        p->probe_failed = s_now_ms();
        snprintf(why, why_len, "brokers unreachable: %s", rd_kafka_err2str(err));
        return false;
    }
    p->probe_failed = 0;
    return true;
}

/* ---- the public functions --------------------------------------------------------------------- */

sg_kafka_t *sg_kafka_new(const atomic_int *stop)
{
    sg_kafka_t *k = calloc(1, sizeof(*k));
    if (k != NULL)
        k->stop = stop;
    return k;
}

void sg_kafka_destroy(sg_kafka_t **self_p)
{
    if (self_p == NULL || *self_p == NULL)
        return;
    sg_kafka_t *k = *self_p;
    while (k->prods != NULL)
        s_drop(k, k->prods);
    free(k);
    *self_p = NULL;
}

bool sg_kafka_send(sg_kafka_t *k, const char *target, const char *key, const char *payload, char *why, size_t why_len)
{
    char brokers[2048], topic[S_TOPIC_MAX + 1];
    s_report_t *r = NULL;
    bool ok = false;
    if (s_split(target, brokers, sizeof(brokers), topic, sizeof(topic), why, why_len) < 0)
        return false;
    s_prod_t *p = s_producer(k, brokers, why, why_len);
    if (p == NULL)
        return false;
    if (p->failing && !s_probe(p, why, why_len))
        goto cleanup;
    if ((r = calloc(1, sizeof(*r))) == NULL) {
        snprintf(why, why_len, "out of memory");
        goto cleanup;
    }
    rd_kafka_resp_err_t err =
        rd_kafka_producev(p->rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, strlen(key)),
                          RD_KAFKA_V_VALUE((void *)payload, strlen(payload)), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                          RD_KAFKA_V_OPAQUE(r), RD_KAFKA_V_END);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        snprintf(why, why_len, "produce: %s", rd_kafka_err2str(err));
        goto cleanup;
    }
    /* librdkafka reports every message by message.timeout.ms; the margin
     * only guards against a report that never comes. */
    int64_t deadline = s_now_ms() + S_TIMEOUT_MS + 2000;
    while (!r->done && s_now_ms() < deadline && !(k->stop != NULL && atomic_load(k->stop)))
        rd_kafka_poll(p->rk, 100);
    if (!r->done) {
        r->abandoned = true; /* s_dr frees it when its report comes */
        r = NULL;
        snprintf(why, why_len, "no delivery report yet (%s)", k->stop && atomic_load(k->stop) ? "stopping" : "timeout");
        goto cleanup;
    }
    if (r->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        snprintf(why, why_len, "%s", rd_kafka_err2str(r->err));
        goto cleanup;
    }
    ok = true;
cleanup:
    free(r);
    p->failing = !ok;
    if (!ok && rd_kafka_fatal_error(p->rk, NULL, 0) != RD_KAFKA_RESP_ERR_NO_ERROR)
        s_drop(k, p);
    return ok;
}
