/*  pw — refract-prewarm: Kafka pre-warm messages in, cached objects and
 *  completion events out (issue 10, part 1; docs/prewarm.md).
 *
 *  Why a process of its own, and why through the gateway: a pre-warm must
 *  do exactly what a client's request does (origin fetch, function chains,
 *  cache store, and whatever the gateway learns to do later), so each
 *  message becomes one GET to a gateway listener with the message's host
 *  as Host, whose whole body is read so that the gateway stores it. The
 *  gateway's Cache-Status says what happened.
 *
 *  A message's way through the process:
 *    rd_kafka_consumer_poll (main thread, pw_run.c) -> parsed and queued on
 *    its partition (pw_msg.c) -> a worker thread takes the head of a
 *    partition no other worker holds -> GET through the gateway
 *    (pw_fetch.c), retried with backoff -> handed to the finisher thread,
 *    which sends a batch's dead-letter envelopes and events (pw_kafka.c),
 *    waits until all are acknowledged, then commits the batch's offsets.
 *  One message at a time per partition keeps each partition's order and
 *  makes every commit cover exactly the messages whose result is known:
 *  at-least-once, duplicates bounded by the few processed messages per
 *  partition that wait for the finisher.
 *
 *  Nothing here is global: the state lives in pw_run_t and its workers.
 */
#ifndef PW_H
#define PW_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rf_config.h"
#include "rf_metrics.h"

/* Bounds on what comes from Kafka (attacker-controlled). */
#define PW_MSG_MAX 65536  /* a whole message */
#define PW_URL_MAX 4096   /* a URL */
#define PW_HOST_MAX 255   /* a URL's authority, or vhost */
#define PW_ID_MAX 200     /* a message id */
#define PW_HEADERS_MAX 32 /* extra request headers */
#define PW_HEADER_NAME_MAX 100
#define PW_HEADER_VALUE_MAX 1024
#define PW_PRIORITY_MIN (-100)
#define PW_PRIORITY_MAX 100

/* ---- pw_msg.c: one message, parsed ---------------------------------------- */

typedef struct {
    char *id;       /* the message's "id", or TOPIC:PARTITION:OFFSET; always set */
    char *url;      /* the URL as given (a string found, even if refused); NULL if none */
    char *host;     /* Host for the gateway: "vhost", or the URL's authority */
    char *path;     /* the URL's path and query, from '/' (fragment dropped) */
    char **headers; /* "Name: value" lines */
    size_t n_headers;
    int priority; /* higher first between partitions; 0 by default */
} pw_msg_t;

/* Parses one message value (data, len: borrowed, any bytes) into *out
 * (zeroed first; the caller owns its strings: pw_msg_clear, also after a
 * failure). fallback_id (borrowed) is the id when the message has none.
 * 0, or -1 with why (a reason for the dead-letter envelope); out->id is
 * set either way, out->url when a URL string was found. */
int pw_msg_parse(const void *data, size_t len, const char *fallback_id, pw_msg_t *out, char *why, size_t why_len);

/* Frees the strings of *m and zeroes it; safe on a zeroed or cleared one. */
void pw_msg_clear(pw_msg_t *m);

/* ---- pw_fetch.c: one GET through the gateway -------------------------------- */

typedef struct {
    long status;            /* the gateway's HTTP status; 0 = no answer */
    char cache_status[256]; /* its Cache-Status ("" if none) */
    int64_t bytes;          /* body bytes read */
    double ms;              /* the attempt's duration */
    char error[256];        /* why there was no answer (status 0) */
} pw_result_t;

typedef struct pw_fetch_t pw_fetch_t;

/* A requester for one thread (a libcurl handle kept for keep-alive).
 * gateway_url (copied) is "http://HOST:PORT" without a trailing '/';
 * stop (borrowed, must outlive it) aborts a transfer when set. The caller
 * owns the result: pw_fetch_destroy. NULL on allocation failure. */
pw_fetch_t *pw_fetch_new(const char *gateway_url, int timeout_ms, const atomic_int *stop);

/* GETs m->path from the gateway with Host m->host and m's headers (all
 * borrowed), reading the whole body; fills *r. 0 when the gateway
 * answered (any status), -1 when it did not (r->error says why). */
int pw_fetch_get(pw_fetch_t *f, const pw_msg_t *m, pw_result_t *r);

/* Frees the requester and NULLs *self_p; safe on NULL and twice. */
void pw_fetch_destroy(pw_fetch_t **self_p);

/* ---- pw_kafka.c: the idempotent producer (dead letters, events) ------------ */

typedef struct pw_producer_t pw_producer_t;

/* An idempotent producer (enable.idempotence, acks=all) on `brokers`
 * (borrowed), with a thread serving its delivery reports. stop (borrowed,
 * must outlive it) cuts waits short. The caller owns the result:
 * pw_producer_destroy. NULL with why. */
pw_producer_t *pw_producer_new(const char *brokers, const atomic_int *stop, char *why, size_t why_len);

/* Fetches the metadata of the n topics (borrowed; NULL entries skipped)
 * that the producer will send to, so that the first event does not wait
 * for it (5 s at most each; a failure is only logged). */
void pw_producer_warm(pw_producer_t *p, const char *const *topics, size_t n);

typedef struct pw_send_t pw_send_t;

/* Starts producing value (len bytes) keyed by key to topic (all borrowed,
 * copied by librdkafka). The caller owns the send and must pass it to
 * pw_send_wait. NULL with why when librdkafka refused it at once.
 * Thread-safe. */
pw_send_t *pw_send_begin(pw_producer_t *p, const char *topic, const char *key, const char *value, size_t len, char *why,
                         size_t why_len);

/* Waits for the delivery report of *s_p (taken: freed, *s_p NULLed; NULL
 * counts as a failed send) until 12 s after it began, less if stop is
 * set. 0 once the brokers have it, -1 with why. Thread-safe. */
int pw_send_wait(pw_producer_t *p, pw_send_t **s_p, const char *topic, char *why, size_t why_len);

/* Stops the report thread, purges what is left, destroys the producer and
 * NULLs *self_p; safe on NULL and twice. */
void pw_producer_destroy(pw_producer_t **self_p);

/* ---- pw_run.c: the consumer group member and its workers ------------------- */

typedef struct {
    rf_metric_t *messages;   /* refract_prewarm_messages_total{outcome} */
    rf_metric_t *inflight;   /* refract_prewarm_inflight */
    rf_metric_t *duration;   /* refract_prewarm_duration_seconds */
    rf_metric_t *partitions; /* refract_prewarm_partitions (assigned to this member) */
    rf_metric_t *events;     /* refract_prewarm_events_total{outcome} */
} pw_metrics_t;

/* What pw_run needs, all borrowed for its whole run. */
typedef struct {
    const char *brokers, *topic, *group, *dead_letter_topic, *events_topic; /* events_topic may be NULL */
    /* events_webhook (may be NULL): each event is also left in outbox_in
     * (STATE/outbox-in) for storgate's persistent outbox to deliver there */
    const char *events_webhook, *outbox_in;
    const char *gateway_url;
    int concurrency, retries, timeout_ms, session_timeout_ms;
    const pw_metrics_t *m;
    atomic_int *stop; /* set by the signal handling: pw_run returns; pw_run sets it on a failure */
} pw_opts_t;

/* Joins the group, processes messages until *o->stop, then leaves the
 * group (in-flight requests aborted, left uncommitted). 0 after a clean
 * stop, -1 with why when the consumer could not be made or failed fatally. */
int pw_run(const pw_opts_t *o, char *why, size_t why_len);

#endif
