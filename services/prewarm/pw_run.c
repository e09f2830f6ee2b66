/*  pw_run — the consumer group member and its workers (pw.h).
 *
 *  Threads:
 *    - the main thread polls the consumer (rd_kafka_consumer_poll, which
 *      also runs the rebalance callback), parses each message and queues it
 *      on its partition; a partition with S_QUEUE_MAX messages (or
 *      S_QUEUE_BYTES_MAX bytes) waiting is paused (librdkafka then fetches
 *      it again from the next message after the last one it handed out)
 *      and resumed once half drained;
 *    - `concurrency` workers: each takes the head of a partition that no
 *      other worker holds (the highest "priority" first, then the oldest),
 *      processes it (pw_fetch, retries) and hands it to the finisher, which
 *      frees the partition for its next message;
 *    - the finisher: takes every processed message handed over so far as a
 *      batch, sends their dead-letter envelopes and events all at once,
 *      waits until every one is acknowledged (retrying what failed), then
 *      commits each partition's highest offset in the batch, in one
 *      request. One round trip per batch, not one per message, and the
 *      workers are not kept waiting for it.
 *  So a partition's messages are processed in order, one at a time, and
 *  reach the finisher in that order; a commit covers only messages whose
 *  result is known (done, or dead-lettered) and whose sends are
 *  acknowledged: at-least-once. A partition has at most S_FINISH_MAX
 *  processed messages waiting for the finisher before its next message
 *  waits too, so a process killed with messages in flight leaves at most
 *  S_FINISH_MAX + 1 uncommitted, processed messages per partition it held,
 *  which the next owner processes again.
 *
 *  Rebalances (eager protocol): on a revoke the queued messages of the
 *  revoked partitions are dropped (never started, so nothing is lost: the
 *  next owner starts from the committed offset) and the callback waits for
 *  the in-flight ones to finish and commit (S_REVOKE_WAIT_MS at most; a
 *  message still running or unsent then is not committed by this member,
 *  and its events are not sent: its next owner does both).
 */
#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "pw.h"
#include "rf_sgevent.h"
#include <errno.h>
#include "rf_log.h"

/* A partition is paused when this many messages, or bytes of them, wait
 * on it, and resumed at half. Why so many: a pause drops what librdkafka
 * had fetched ahead, and a resumed partition's next fetch can take a
 * broker's fetch.wait.max.ms (500 ms) to come back; the half that is left
 * must keep its worker busy meanwhile, or the partition stalls (at 64
 * messages, 2,000 small resizes spent a fifth of their time so). The bytes
 * bound the memory: messages are at most PW_MSG_MAX each. */
#define S_QUEUE_MAX 2048
#define S_QUEUE_BYTES_MAX (8u << 20)
#define S_FINISH_MAX 4         /* processed messages per partition waiting for their sends and commit */
#define S_REVOKE_WAIT_MS 30000 /* how long a revoke waits for in-flight messages */
#define S_BACKOFF_FIRST_MS 500 /* the first retry's delay, doubled each time */
#define S_BACKOFF_MAX_MS 10000 /* the longest delay between retries */
#define S_SEND_BACKOFF_MAX_MS 5000

/* A message waiting or in flight. */
typedef struct s_node_t {
    struct s_node_t *next;
    rd_kafka_message_t *km; /* owned */
    pw_msg_t msg;           /* parsed (msg.id always set) */
    char why[300];          /* why it is malformed; "" if well-formed */
    uint64_t seq;           /* arrival order */
} s_node_t;

typedef struct {
    int32_t partition;
    bool assigned, busy, paused;
    uint64_t epoch;  /* bumped when a revoke gives up on an in-flight message */
    uint64_t gen;    /* the assignment (s_run_t.gen) that gave it to us last */
    int64_t pending; /* a processed offset whose commit failed; -1: none */
    s_node_t *head, *tail;
    size_t n, bytes;  /* messages waiting, and their payloads' bytes */
    size_t finishing; /* its messages in the finisher's hands */
} s_part_t;

typedef struct {
    const pw_opts_t *o;
    rd_kafka_t *rk;
    pw_producer_t *prod;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* CLOCK_MONOTONIC: work queued, a partition let go */
    s_part_t *parts;
    size_t n_parts, cap_parts;
    uint64_t seq;
    uint64_t gen;                        /* assignments seen */
    struct s_fin_t *fin_head, *fin_tail; /* processed messages for the finisher, in order */
    struct timespec hold_until;          /* no new message before (a rebalance is coming) */
} s_run_t;

typedef enum { S_DONE, S_FAILED, S_STOPPED } s_outcome_t;

/* ---- small helpers -------------------------------------------------------------------------- */

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

static bool s_stopping(const s_run_t *r)
{
    return atomic_load(r->o->stop) != 0;
}

/* Sleeps ms, in steps, returning early (false) when the process stops. */
static bool s_sleep(const s_run_t *r, int ms)
{
    while (ms > 0 && !s_stopping(r)) {
        int step = ms < 50 ? ms : 50;
        usleep((useconds_t)step * 1000);
        ms -= step;
    }
    return !s_stopping(r);
}

static void s_count(const s_run_t *r, const char *outcome)
{
    const char *l[1] = {outcome};
    rf_metric_add(r->o->m->messages, l, 1);
}

static void s_node_free(s_node_t *n)
{
    if (n == NULL)
        return;
    pw_msg_clear(&n->msg);
    if (n->km != NULL)
        rd_kafka_message_destroy(n->km);
    free(n);
}

/* The state of a partition, made when first seen. Under r->mu. */
static s_part_t *s_part(s_run_t *r, int32_t partition)
{
    for (size_t i = 0; i < r->n_parts; i++)
        if (r->parts[i].partition == partition)
            return &r->parts[i];
    if (r->n_parts == r->cap_parts) {
        size_t cap = r->cap_parts ? r->cap_parts * 2 : 16;
        s_part_t *p = realloc(r->parts, cap * sizeof(*p));
        if (p == NULL)
            return NULL;
        r->parts = p;
        r->cap_parts = cap;
    }
    s_part_t *p = &r->parts[r->n_parts++];
    memset(p, 0, sizeof(*p));
    p->partition = partition;
    p->pending = -1;
    return p;
}

/* Drops a partition's queued messages. Under r->mu. */
static void s_part_drop(s_part_t *p)
{
    while (p->head != NULL) {
        s_node_t *n = p->head;
        p->head = n->next;
        s_node_free(n);
    }
    p->tail = NULL;
    p->n = 0;
    p->bytes = 0;
}

/* Pauses or resumes one partition (main thread). */
static void s_pause(s_run_t *r, int32_t partition, bool pause)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    if (l == NULL)
        return;
    rd_kafka_topic_partition_list_add(l, r->o->topic, partition);
    rd_kafka_resp_err_t err = pause ? rd_kafka_pause_partitions(r->rk, l) : rd_kafka_resume_partitions(r->rk, l);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
        rf_warn("prewarm: %s partition %d: %s", pause ? "pause" : "resume", (int)partition, rd_kafka_err2str(err));
    rd_kafka_topic_partition_list_destroy(l);
}

/* ---- JSON out: events and dead-letter envelopes ---------------------------------------------- */

static char *s_base64(const unsigned char *s, size_t n)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *out = malloc((n + 2) / 3 * 4 + 1), *o = out;
    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)s[i] << 16 | (i + 1 < n ? (unsigned)s[i + 1] << 8 : 0) | (i + 2 < n ? s[i + 2] : 0);
        *o++ = tab[v >> 18 & 63];
        *o++ = tab[v >> 12 & 63];
        *o++ = i + 1 < n ? tab[v >> 6 & 63] : '=';
        *o++ = i + 2 < n ? tab[v & 63] : '=';
    }
    *o = '\0';
    return out;
}

/* Sets key to a JSON string of s (NULL or not UTF-8: null). */
static void s_set_str(json_t *o, const char *key, const char *s)
{
    json_t *v = s != NULL ? json_string(s) : NULL;
    json_object_set_new(o, key, v != NULL ? v : json_null());
}

/* The original message in the envelope: as a string when it is UTF-8,
 * else base64; PW_MSG_MAX bytes of it at most. */
static void s_original(json_t *o, const rd_kafka_message_t *km)
{
    size_t len = km->payload != NULL ? km->len : 0, n = len > PW_MSG_MAX ? PW_MSG_MAX : len;
    json_t *v = json_stringn(km->payload != NULL ? km->payload : "", n);
    if (v != NULL) {
        json_object_set_new(o, "original", v);
    } else {
        char *b = s_base64(km->payload, n);
        json_object_set_new(o, "original", json_null());
        if (b != NULL)
            json_object_set_new(o, "original_base64", json_string(b));
        free(b);
    }
    if (n < len) {
        json_object_set_new(o, "original_truncated", json_true());
        json_object_set_new(o, "original_bytes", json_integer((json_int_t)len));
    }
}

static json_t *s_common(const s_run_t *r, const s_node_t *n)
{
    json_t *o = json_object();
    if (o == NULL)
        return NULL;
    s_set_str(o, "id", n->msg.id);
    s_set_str(o, "url", n->msg.url);
    json_object_set_new(o, "topic", json_string(r->o->topic));
    json_object_set_new(o, "partition", json_integer(n->km->partition));
    json_object_set_new(o, "offset", json_integer((json_int_t)n->km->offset));
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    json_object_set_new(o, "time_ms", json_integer((json_int_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000));
    return o;
}

/* The dead-letter envelope of a message (a JSON text the caller owns;
 * NULL when out of memory). */
static char *s_dead_letter_text(const s_run_t *r, const s_node_t *n, const char *reason, int attempts)
{
    json_t *o = s_common(r, n);
    if (o == NULL)
        return NULL;
    json_object_set_new(o, "reason", json_string(reason));
    json_object_set_new(o, "attempts", json_integer(attempts));
    s_original(o, n->km);
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return text;
}

/* The completion or failure event of a message (a JSON text the caller
 * owns; NULL when out of memory). */
static char *s_event_text(const s_run_t *r, const s_node_t *n, bool done, const pw_result_t *res, int attempts,
                          const char *reason)
{
    json_t *o = s_common(r, n);
    if (o == NULL)
        return NULL;
    s_set_str(o, "host", n->msg.host);
    json_object_set_new(o, "status", json_string(done ? "done" : "failed"));
    json_object_set_new(o, "http_status", res->status > 0 ? json_integer(res->status) : json_null());
    s_set_str(o, "cache_status", res->cache_status[0] ? res->cache_status : NULL);
    json_object_set_new(o, "bytes", json_integer((json_int_t)res->bytes));
    json_object_set_new(o, "ms", json_real(res->ms));
    json_object_set_new(o, "attempts", json_integer(attempts));
    if (!done) {
        s_set_str(o, "reason", reason);
        json_object_set_new(o, "dead_letter", json_true());
    }
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return text;
}

/* Out of memory with a message in hand: it cannot be skipped (a later
 * commit would cover it), so the process stops, leaving it uncommitted. */
static void s_oom(s_run_t *r, rd_kafka_message_t *km)
{
    rf_error("prewarm: out of memory at partition %d offset %lld: stopping (the message stays uncommitted)",
             (int)km->partition, (long long)km->offset);
    atomic_store(r->o->stop, 1);
}

/* ---- one message ----------------------------------------------------------------------------- */

/* A message taken by a worker, then, once processed, waiting in the
 * finisher's queue for its dead-letter envelope and event to be
 * acknowledged and its offset committed. */
typedef struct s_fin_t {
    struct s_fin_t *next;
    s_node_t *n; /* owned */
    int32_t partition;
    uint64_t epoch; /* its partition's when it was taken */
    s_outcome_t out;
    pw_result_t res;
    int attempts;
    char reason[600];
    double secs;              /* how long the processing took */
    char *dl_text;            /* the dead-letter envelope (owned); NULL: none */
    char *ev_text;            /* the event (owned); NULL: none */
    bool dl_ok, ev_ok, wh_ok; /* acknowledged / left in the outbox */
    bool stale;               /* its partition was revoked meanwhile: not sent, not committed here */
    pw_send_t *dl_s, *ev_s;   /* sends in flight */
} s_fin_t;

static void s_fin_free(s_fin_t *j)
{
    if (j == NULL)
        return;
    s_node_free(j->n);
    free(j->dl_text);
    free(j->ev_text);
    free(j);
}

/* Whether an answer is worth another attempt. */
static bool s_retryable(long status)
{
    return status == 0 || status == 408 || status == 429 || status >= 500;
}

/* Processes j's message: the GET with its retries, filling j->res,
 * j->attempts and j->reason. S_STOPPED: the process stops. */
static s_outcome_t s_process(s_run_t *r, pw_fetch_t *f, s_fin_t *j)
{
    const s_node_t *n = j->n;
    if (n->why[0] != '\0') {
        rf_warn("prewarm %s: malformed message (partition %d offset %lld): %s", n->msg.id, (int)n->km->partition,
                (long long)n->km->offset, n->why);
        snprintf(j->reason, sizeof(j->reason), "malformed: %s", n->why);
        return S_FAILED;
    }
    int delay = S_BACKOFF_FIRST_MS;
    for (;;) {
        j->attempts++;
        int got = pw_fetch_get(f, &n->msg, &j->res);
        if (s_stopping(r))
            return S_STOPPED;
        if (got == 0 && !s_retryable(j->res.status) && j->res.status < 400) {
            rf_debug("prewarm %s: %s%s %ld %lldB %.1fms %s", n->msg.id, n->msg.host, n->msg.path, j->res.status,
                     (long long)j->res.bytes, j->res.ms, j->res.cache_status);
            return S_DONE;
        }
        if (got == 0)
            snprintf(j->reason, sizeof(j->reason), "HTTP %ld from the gateway (Cache-Status: %s)", j->res.status,
                     j->res.cache_status[0] ? j->res.cache_status : "none");
        else
            snprintf(j->reason, sizeof(j->reason), "no answer from the gateway: %s", j->res.error);
        if ((got == 0 && !s_retryable(j->res.status)) || j->attempts > r->o->retries)
            break;
        s_count(r, "retried");
        rf_info("prewarm %s: attempt %d: %s (retried in %d ms)", n->msg.id, j->attempts, j->reason, delay);
        if (!s_sleep(r, delay))
            return S_STOPPED;
        delay = delay * 2 > S_BACKOFF_MAX_MS ? S_BACKOFF_MAX_MS : delay * 2;
    }
    rf_warn("prewarm %s: %s%s failed after %d attempt(s): %s", n->msg.id, n->msg.host, n->msg.path, j->attempts,
            j->reason);
    return S_FAILED;
}

/* Builds what a processed message sends: its dead-letter envelope when it
 * failed, its event when events are on. -1 when out of memory. */
static int s_fin_texts(const s_run_t *r, s_fin_t *j)
{
    bool done = j->out == S_DONE;
    if (!done && (j->dl_text = s_dead_letter_text(r, j->n, j->reason, j->attempts)) == NULL)
        return -1;
    if (r->o->events_topic == NULL && r->o->events_webhook == NULL)
        return 0;
    j->ev_text = s_event_text(r, j->n, done, &j->res, j->attempts, done ? NULL : j->reason);
    return j->ev_text != NULL ? 0 : -1;
}

/* ---- the finisher: acknowledged sends, then one commit per batch ---------------------------- */

/* One round of a batch's sends: the webhook events left in the outbox
 * (rf_outbox_write: written, fsynced, renamed in, before the commit, so a
 * crash re-sends at worst), every Kafka send begun, then every one waited
 * for, so that a batch costs one round trip, not one per message. The
 * number of sends that failed; the first failure's reason in why. */
static int s_fin_round(s_run_t *r, s_fin_t *batch, char *why, size_t why_len)
{
    const pw_opts_t *o = r->o;
    char w[300];
    int failed = 0;
    for (s_fin_t *j = batch; j != NULL; j = j->next) {
        if (j->stale)
            continue;
        if (j->ev_text != NULL && o->events_webhook != NULL && !j->wh_ok) {
            j->wh_ok = rf_outbox_write(o->outbox_in, o->events_webhook, j->n->msg.id, j->ev_text) == 0;
            if (!j->wh_ok && failed++ == 0)
                snprintf(why, why_len, "%s: cannot leave the event in %s: %s", j->n->msg.id, o->outbox_in,
                         strerror(errno));
        }
        if (j->dl_text != NULL && !j->dl_ok)
            j->dl_s = pw_send_begin(r->prod, o->dead_letter_topic, j->n->msg.id, j->dl_text, strlen(j->dl_text), w,
                                    sizeof(w));
        if (j->ev_text != NULL && o->events_topic != NULL && !j->ev_ok)
            j->ev_s =
                pw_send_begin(r->prod, o->events_topic, j->n->msg.id, j->ev_text, strlen(j->ev_text), w, sizeof(w));
    }
    for (s_fin_t *j = batch; j != NULL; j = j->next) {
        if (j->stale)
            continue;
        if (j->dl_text != NULL && !j->dl_ok) {
            j->dl_ok = pw_send_wait(r->prod, &j->dl_s, o->dead_letter_topic, w, sizeof(w)) == 0;
            if (!j->dl_ok && failed++ == 0)
                snprintf(why, why_len, "%s: dead letter %s", j->n->msg.id, w);
        }
        if (j->ev_text != NULL && o->events_topic != NULL && !j->ev_ok) {
            j->ev_ok = pw_send_wait(r->prod, &j->ev_s, o->events_topic, w, sizeof(w)) == 0;
            if (j->ev_ok) {
                const char *l[1] = {j->out == S_DONE ? "done" : "failed"};
                rf_metric_add(o->m->events, l, 1);
            } else if (failed++ == 0) {
                snprintf(why, why_len, "%s: event %s", j->n->msg.id, w);
            }
        }
    }
    return failed;
}

/* Marks the messages of a batch whose partition was revoked meanwhile (a
 * revoke that gave up waiting for them, after S_REVOKE_WAIT_MS): their
 * next owner processes them again, so sending their events here too
 * would only make duplicates. */
static void s_fin_mark_stale(s_run_t *r, s_fin_t *batch)
{
    pthread_mutex_lock(&r->mu);
    for (s_fin_t *j = batch; j != NULL; j = j->next) {
        s_part_t *p = s_part(r, j->partition);
        if (!j->stale && (p == NULL || p->epoch != j->epoch)) {
            j->stale = true;
            rf_warn("prewarm %s: partition %d was revoked meanwhile: left to its next owner", j->n->msg.id,
                    (int)j->partition);
        }
    }
    pthread_mutex_unlock(&r->mu);
}

/* Sends a batch until all of it is acknowledged (or left to another
 * owner), backing off between rounds. false when the process stops first. */
static bool s_fin_send(s_run_t *r, s_fin_t *batch)
{
    int delay = 250;
    for (;;) {
        s_fin_mark_stale(r, batch);
        char why[400] = "";
        int failed = s_fin_round(r, batch, why, sizeof(why));
        if (failed == 0)
            return true;
        rf_warn("prewarm: %d send(s) failed (%s): retried in %d ms", failed, why, delay);
        if (!s_sleep(r, delay))
            return false;
        delay = delay * 2 > S_SEND_BACKOFF_MAX_MS ? S_SEND_BACKOFF_MAX_MS : delay * 2;
    }
}

/* Records a commit's result on the partition (under r->mu). A failed
 * commit leaves the offset pending: carried over if the partition comes
 * back to us in the next assignment (s_rebalance), else processed again
 * by its next owner. A failure that announces a rebalance holds new
 * messages back until it has happened, so that little is done twice. */
static void s_committed(s_run_t *r, int32_t partition, uint64_t epoch, int64_t next, rd_kafka_resp_err_t err)
{
    s_part_t *p = s_part(r, partition);
    if (p == NULL || p->epoch != epoch)
        return;
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        p->pending = -1;
        return;
    }
    p->pending = next;
    if (err == RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS || err == RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION ||
        err == RD_KAFKA_RESP_ERR_UNKNOWN_MEMBER_ID)
        s_deadline(&r->hold_until, 2 * r->o->session_timeout_ms);
}

/* Commits, synchronously and in one request, each partition's highest
 * offset in an acknowledged batch. A partition's messages reach the
 * finisher in offset order (one is processed at a time, and finishers
 * take batches in turn), so that offset covers only messages whose result
 * is known. Messages of a partition revoked meanwhile are not committed
 * here. */
static void s_fin_commit(s_run_t *r, s_fin_t *batch)
{
    size_t cap = 0;
    for (s_fin_t *j = batch; j != NULL; j = j->next)
        cap++;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new((int)cap);
    uint64_t *epochs = calloc(cap, sizeof(*epochs));
    if (l == NULL || epochs == NULL) {
        rf_error("prewarm: cannot commit a batch of %zu: out of memory (processed again by the next owner)", cap);
        goto cleanup;
    }
    pthread_mutex_lock(&r->mu);
    for (s_fin_t *j = batch; j != NULL; j = j->next) {
        s_part_t *p = s_part(r, j->partition);
        if (j->stale || p == NULL || p->epoch != j->epoch) {
            if (!j->stale)
                rf_warn("prewarm %s: partition %d was revoked meanwhile: not committed here", j->n->msg.id,
                        (int)j->partition);
            continue;
        }
        rd_kafka_topic_partition_t *e = rd_kafka_topic_partition_list_find(l, r->o->topic, j->partition);
        if (e == NULL) {
            e = rd_kafka_topic_partition_list_add(l, r->o->topic, j->partition);
            epochs[l->cnt - 1] = j->epoch;
        }
        if (j->n->km->offset + 1 > e->offset)
            e->offset = j->n->km->offset + 1;
    }
    pthread_mutex_unlock(&r->mu);
    if (l->cnt == 0)
        goto cleanup;
    rd_kafka_resp_err_t err = rd_kafka_commit(r->rk, l, 0);
    pthread_mutex_lock(&r->mu);
    for (int i = 0; i < l->cnt; i++) {
        rd_kafka_resp_err_t e = err != RD_KAFKA_RESP_ERR_NO_ERROR ? err : l->elems[i].err;
        if (e != RD_KAFKA_RESP_ERR_NO_ERROR)
            rf_warn("prewarm: commit of partition %d offset %lld failed: %s", (int)l->elems[i].partition,
                    (long long)l->elems[i].offset, rd_kafka_err2str(e));
        s_committed(r, l->elems[i].partition, epochs[i], l->elems[i].offset, e);
    }
    pthread_mutex_unlock(&r->mu);
cleanup:
    if (l != NULL)
        rd_kafka_topic_partition_list_destroy(l);
    free(epochs);
}

/* Lets a batch go (under r->mu): counted, its partitions' finishing
 * counts released, freed. */
static void s_fin_release(s_run_t *r, s_fin_t *batch, bool counted)
{
    while (batch != NULL) {
        s_fin_t *j = batch;
        batch = j->next;
        if (counted && !j->stale) {
            s_count(r, j->out == S_DONE ? "done" : "dead_letter");
            rf_metric_observe(r->o->m->duration, NULL, j->secs);
        }
        rf_metric_gauge_add(r->o->m->inflight, NULL, -1);
        s_part_t *p = s_part(r, j->partition);
        if (p != NULL && p->finishing > 0)
            p->finishing--;
        s_fin_free(j);
    }
    pthread_cond_broadcast(&r->cv);
}

/* The finisher thread: takes every processed message queued so far as one
 * batch, sends, commits, and comes back for the next. The workers go on
 * with the next messages meanwhile (S_FINISH_MAX per partition at most). */
static void *s_finisher(void *arg)
{
    s_run_t *r = arg;
    pthread_mutex_lock(&r->mu);
    while (!s_stopping(r)) {
        if (r->fin_head == NULL) {
            struct timespec step;
            s_deadline(&step, 100);
            pthread_cond_timedwait(&r->cv, &r->mu, &step);
            continue;
        }
        s_fin_t *batch = r->fin_head;
        r->fin_head = r->fin_tail = NULL;
        pthread_mutex_unlock(&r->mu);
        bool sent = s_fin_send(r, batch);
        if (sent)
            s_fin_commit(r, batch);
        pthread_mutex_lock(&r->mu);
        s_fin_release(r, batch, sent);
    }
    /* Stopping: what is left stays uncommitted for the next owner. */
    s_fin_release(r, r->fin_head, false);
    r->fin_head = r->fin_tail = NULL;
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

/* ---- the workers ----------------------------------------------------------------------------- */

/* The next message for a worker: the head of a partition that no worker
 * is processing and whose finishing backlog is below S_FINISH_MAX,
 * highest priority first, then the oldest. Under r->mu. */
static s_part_t *s_pick(s_run_t *r)
{
    s_part_t *best = NULL;
    if (!s_past(&r->hold_until))
        return NULL;
    for (size_t i = 0; i < r->n_parts; i++) {
        s_part_t *p = &r->parts[i];
        if (!p->assigned || p->busy || p->finishing >= S_FINISH_MAX || p->head == NULL)
            continue;
        if (best == NULL || p->head->msg.priority > best->head->msg.priority ||
            (p->head->msg.priority == best->head->msg.priority && p->head->seq < best->head->seq))
            best = p;
    }
    return best;
}

typedef struct {
    s_run_t *r;
    pthread_t th;
    bool started;
} s_worker_t;

/* Hands a processed message to the finisher (under r->mu): its partition
 * is free for its next message from now on. */
static void s_fin_queue(s_run_t *r, s_fin_t *j)
{
    s_part_t *p = s_part(r, j->partition);
    if (p != NULL) {
        p->busy = false;
        p->finishing++;
    }
    if (r->fin_tail != NULL)
        r->fin_tail->next = j;
    else
        r->fin_head = j;
    r->fin_tail = j;
    pthread_cond_broadcast(&r->cv);
}

static void *s_worker(void *arg)
{
    s_worker_t *w = arg;
    s_run_t *r = w->r;
    pw_fetch_t *f = pw_fetch_new(r->o->gateway_url, r->o->timeout_ms, r->o->stop);
    if (f == NULL) {
        rf_error("prewarm: a worker could not start (out of memory)");
        return NULL;
    }
    pthread_mutex_lock(&r->mu);
    while (!s_stopping(r)) {
        s_part_t *p = s_pick(r);
        if (p == NULL) {
            struct timespec step;
            s_deadline(&step, 100);
            pthread_cond_timedwait(&r->cv, &r->mu, &step);
            continue;
        }
        s_fin_t *j = calloc(1, sizeof(*j));
        if (j == NULL) {
            pthread_mutex_unlock(&r->mu);
            s_oom(r, p->head->km);
            pthread_mutex_lock(&r->mu);
            break;
        }
        j->n = p->head;
        p->head = j->n->next;
        if (p->head == NULL)
            p->tail = NULL;
        p->n--;
        p->bytes -= j->n->km->len;
        j->n->next = NULL;
        p->busy = true;
        j->partition = p->partition; /* p may move: r->parts is realloc'd */
        j->epoch = p->epoch;
        pthread_mutex_unlock(&r->mu);

        rf_metric_gauge_add(r->o->m->inflight, NULL, 1);
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        j->out = s_process(r, f, j);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        j->secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
        if (j->out != S_STOPPED && s_fin_texts(r, j) < 0) {
            s_oom(r, j->n->km);
            j->out = S_STOPPED;
        }
        pthread_mutex_lock(&r->mu);
        if (j->out == S_STOPPED) { /* nothing to commit: the partition is let go as it is */
            s_part_t *q = s_part(r, j->partition);
            if (q != NULL)
                q->busy = false;
            rf_metric_gauge_add(r->o->m->inflight, NULL, -1);
            s_fin_free(j);
            pthread_cond_broadcast(&r->cv);
        } else {
            s_fin_queue(r, j);
        }
    }
    pthread_mutex_unlock(&r->mu);
    pw_fetch_destroy(&f);
    return NULL;
}

/* ---- the consumer ---------------------------------------------------------------------------- */

static void s_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    s_run_t *r = opaque;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        /* A partition that was ours in the previous assignment too, with
         * an offset processed but not committed (the commit was refused
         * while the group rebalanced): nobody else had it in between, so
         * it starts at that offset, which is committed now. */
        rd_kafka_topic_partition_list_t *start = rd_kafka_topic_partition_list_copy(parts);
        rd_kafka_topic_partition_list_t *carry = rd_kafka_topic_partition_list_new(parts->cnt > 0 ? parts->cnt : 1);
        pthread_mutex_lock(&r->mu);
        r->gen++;
        for (int i = 0; i < parts->cnt; i++) {
            s_part_t *p = s_part(r, parts->elems[i].partition);
            if (p == NULL)
                continue;
            if (p->pending >= 0 && p->gen + 1 == r->gen && start != NULL && carry != NULL) {
                start->elems[i].offset = p->pending;
                rd_kafka_topic_partition_list_add(carry, r->o->topic, p->partition)->offset = p->pending;
            }
            p->pending = -1;
            p->gen = r->gen;
            s_part_drop(p);
            p->assigned = true;
            p->paused = false;
        }
        memset(&r->hold_until, 0, sizeof(r->hold_until));
        pthread_mutex_unlock(&r->mu);
        rf_metric_set(r->o->m->partitions, NULL, parts->cnt);
        rf_info("prewarm: %d partition(s) of %s assigned", parts->cnt, r->o->topic);
        rd_kafka_assign(rk, start != NULL ? start : parts);
        rd_kafka_resume_partitions(rk, parts); /* a pause of an earlier assignment does not carry over */
        for (int i = 0; carry != NULL && i < carry->cnt; i++)
            rf_info("prewarm: partition %d continues at offset %lld (processed before the rebalance)",
                    (int)carry->elems[i].partition, (long long)carry->elems[i].offset);
        if (carry != NULL && carry->cnt > 0) {
            rd_kafka_resp_err_t ce = rd_kafka_commit(rk, carry, 1);
            if (ce != RD_KAFKA_RESP_ERR_NO_ERROR)
                rf_warn("prewarm: commit of the carried offsets: %s", rd_kafka_err2str(ce));
        }
        if (start != NULL)
            rd_kafka_topic_partition_list_destroy(start);
        if (carry != NULL)
            rd_kafka_topic_partition_list_destroy(carry);
        return;
    }
    if (err != RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS)
        rf_error("prewarm: rebalance: %s", rd_kafka_err2str(err));
    /* Revoked (or an error): queued messages dropped, in-flight ones waited for. */
    struct timespec deadline;
    s_deadline(&deadline, S_REVOKE_WAIT_MS);
    pthread_mutex_lock(&r->mu);
    for (int i = 0; i < parts->cnt; i++) {
        s_part_t *p = s_part(r, parts->elems[i].partition);
        if (p != NULL) {
            p->assigned = false;
            s_part_drop(p);
        }
    }
    for (;;) {
        bool busy = false;
        for (int i = 0; i < parts->cnt; i++) {
            s_part_t *p = s_part(r, parts->elems[i].partition);
            busy = busy || (p != NULL && (p->busy || p->finishing > 0));
        }
        if (!busy || s_past(&deadline) || s_stopping(r))
            break;
        struct timespec step;
        s_deadline(&step, 100);
        pthread_cond_timedwait(&r->cv, &r->mu, &step);
    }
    for (int i = 0; i < parts->cnt; i++) {
        s_part_t *p = s_part(r, parts->elems[i].partition);
        if (p != NULL && (p->busy || p->finishing > 0)) {
            p->epoch++; /* its result is not committed by this member */
            rf_warn("prewarm: partition %d revoked with a message still in flight", (int)p->partition);
        }
    }
    pthread_mutex_unlock(&r->mu);
    rf_metric_set(r->o->m->partitions, NULL, 0);
    rf_info("prewarm: %d partition(s) of %s revoked", parts->cnt, r->o->topic);
    rd_kafka_assign(rk, NULL);
}

static void s_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    if (level <= 4)
        rf_warn("prewarm kafka %s: %s: %s", rd_kafka_name(rk), fac, buf);
}

static int s_set(rd_kafka_conf_t *conf, const char *name, const char *value, char *why, size_t why_len)
{
    char err[256];
    if (rd_kafka_conf_set(conf, name, value, err, sizeof(err)) == RD_KAFKA_CONF_OK)
        return 0;
    return rf_why(why, why_len, "%s: %s", name, err);
}

static rd_kafka_t *s_consumer(s_run_t *r, char *why, size_t why_len)
{
    const pw_opts_t *o = r->o;
    char session[16], heartbeat[16], err[256];
    snprintf(session, sizeof(session), "%d", o->session_timeout_ms);
    snprintf(heartbeat, sizeof(heartbeat), "%d", o->session_timeout_ms / 4 > 100 ? o->session_timeout_ms / 4 : 100);
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (conf == NULL) {
        rf_why(why, why_len, "out of memory");
        return NULL;
    }
    if (s_set(conf, "bootstrap.servers", o->brokers, why, why_len) < 0 ||
        s_set(conf, "group.id", o->group, why, why_len) < 0 ||
        s_set(conf, "client.id", "refract-prewarm", why, why_len) < 0 ||
        s_set(conf, "enable.auto.commit", "false", why, why_len) < 0 ||
        s_set(conf, "enable.auto.offset.store", "false", why, why_len) < 0 ||
        s_set(conf, "auto.offset.reset", "earliest", why, why_len) < 0 ||
        s_set(conf, "enable.partition.eof", "false", why, why_len) < 0 ||
        s_set(conf, "session.timeout.ms", session, why, why_len) < 0 ||
        s_set(conf, "heartbeat.interval.ms", heartbeat, why, why_len) < 0 ||
        s_set(conf, "queued.max.messages.kbytes", "16384", why, why_len) < 0 ||
        /* A fetch in flight when a paused partition resumes delays its
         * next messages by up to this much (librdkafka's default is 500). */
        s_set(conf, "fetch.wait.max.ms", "100", why, why_len) < 0 ||
        s_set(conf, "reconnect.backoff.max.ms", "1000", why, why_len) < 0 ||
        s_set(conf, "log.connection.close", "false", why, why_len) < 0) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_conf_set_opaque(conf, r);
    rd_kafka_conf_set_rebalance_cb(conf, s_rebalance);
    rd_kafka_conf_set_log_cb(conf, s_log);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    if (rk == NULL) {
        rd_kafka_conf_destroy(conf);
        rf_why(why, why_len, "cannot make a consumer: %s", err);
        return NULL;
    }
    rd_kafka_poll_set_consumer(rk);
    return rk;
}

/* Queues one fetched message (owned) on its partition. Main thread. */
static void s_enqueue(s_run_t *r, rd_kafka_message_t *km)
{
    s_node_t *n = calloc(1, sizeof(*n));
    char fallback[300];
    if (n == NULL) {
        s_oom(r, km);
        rd_kafka_message_destroy(km);
        return;
    }
    n->km = km;
    snprintf(fallback, sizeof(fallback), "%s:%d:%lld", r->o->topic, (int)km->partition, (long long)km->offset);
    if (pw_msg_parse(km->payload, km->payload != NULL ? km->len : 0, fallback, &n->msg, n->why, sizeof(n->why)) == 0)
        n->why[0] = '\0';
    else if (n->why[0] == '\0')
        snprintf(n->why, sizeof(n->why), "refused");
    if (n->msg.id == NULL) { /* out of memory in the parser */
        s_oom(r, km);
        s_node_free(n);
        return;
    }
    bool pause = false;
    pthread_mutex_lock(&r->mu);
    s_part_t *p = s_part(r, km->partition);
    if (p == NULL || !p->assigned) { /* revoked meanwhile: its next owner fetches it */
        pthread_mutex_unlock(&r->mu);
        if (p == NULL)
            s_oom(r, km);
        s_node_free(n);
        return;
    }
    n->seq = ++r->seq;
    if (p->tail != NULL)
        p->tail->next = n;
    else
        p->head = n;
    p->tail = n;
    p->bytes += km->len;
    if ((++p->n >= S_QUEUE_MAX || p->bytes >= S_QUEUE_BYTES_MAX) && !p->paused)
        pause = p->paused = true;
    pthread_cond_broadcast(&r->cv);
    int32_t partition = p->partition;
    pthread_mutex_unlock(&r->mu);
    if (pause)
        s_pause(r, partition, true);
}

/* Resumes paused partitions whose queue is half drained. Main thread. */
static void s_resume_drained(s_run_t *r)
{
    int32_t resume[64];
    int n = 0;
    pthread_mutex_lock(&r->mu);
    for (size_t i = 0; i < r->n_parts && n < 64; i++) {
        s_part_t *p = &r->parts[i];
        if (p->paused && p->assigned && p->n <= S_QUEUE_MAX / 2 && p->bytes <= S_QUEUE_BYTES_MAX / 2) {
            p->paused = false;
            resume[n++] = p->partition;
        }
    }
    pthread_mutex_unlock(&r->mu);
    for (int i = 0; i < n; i++)
        s_pause(r, resume[i], false);
}

int pw_run(const pw_opts_t *o, char *why, size_t why_len)
{
    s_run_t r = {.o = o};
    s_worker_t *workers = NULL;
    int rc = -1, nworkers = 0;
    pthread_t finisher;
    bool finisher_started = false;
    rd_kafka_topic_partition_list_t *topics = NULL;
    pthread_condattr_t ca;
    pthread_mutex_init(&r.mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r.cv, &ca);
    pthread_condattr_destroy(&ca);
    if ((r.prod = pw_producer_new(o->brokers, o->stop, why, why_len)) == NULL)
        goto cleanup;
    const char *out_topics[2] = {o->dead_letter_topic, o->events_topic};
    pw_producer_warm(r.prod, out_topics, 2);
    if ((r.rk = s_consumer(&r, why, why_len)) == NULL)
        goto cleanup;
    if ((topics = rd_kafka_topic_partition_list_new(1)) == NULL) {
        rf_why(why, why_len, "out of memory");
        goto cleanup;
    }
    rd_kafka_topic_partition_list_add(topics, o->topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t err = rd_kafka_subscribe(r.rk, topics);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        rf_why(why, why_len, "subscribe to %s: %s", o->topic, rd_kafka_err2str(err));
        goto cleanup;
    }
    if ((workers = calloc((size_t)o->concurrency, sizeof(*workers))) == NULL) {
        rf_why(why, why_len, "out of memory");
        goto cleanup;
    }
    if (pthread_create(&finisher, NULL, s_finisher, &r) != 0) {
        rf_why(why, why_len, "cannot start the finisher thread");
        goto cleanup;
    }
    finisher_started = true;
    for (; nworkers < o->concurrency; nworkers++) {
        workers[nworkers].r = &r;
        if (pthread_create(&workers[nworkers].th, NULL, s_worker, &workers[nworkers]) != 0) {
            rf_why(why, why_len, "cannot start worker threads");
            goto cleanup;
        }
        workers[nworkers].started = true;
    }
    rf_info("refract-prewarm: group %s on %s (%s), %d at once, through %s; dead letters to %s, events to %s", o->group,
            o->topic, o->brokers, o->concurrency, o->gateway_url, o->dead_letter_topic,
            o->events_topic ? o->events_topic : "(none)");
    while (!s_stopping(&r)) {
        rd_kafka_message_t *km = rd_kafka_consumer_poll(r.rk, 100);
        if (km != NULL) {
            if (km->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
                s_enqueue(&r, km);
            } else {
                if (km->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                    rf_warn("prewarm: consumer: %s", rd_kafka_message_errstr(km));
                bool fatal = km->err == RD_KAFKA_RESP_ERR__FATAL;
                rd_kafka_message_destroy(km);
                if (fatal) {
                    char fe[256] = "";
                    rd_kafka_fatal_error(r.rk, fe, sizeof(fe));
                    rf_why(why, why_len, "consumer: fatal: %s", fe);
                    goto cleanup;
                }
            }
        }
        s_resume_drained(&r);
    }
    rc = 0;
cleanup:
    if (rc != 0 && why[0] == '\0')
        rf_why(why, why_len, "cannot start");
    /* Workers see the stop (or must be told: a failure here), abort their
     * requests and leave their messages uncommitted. */
    if (rc != 0)
        atomic_store(o->stop, 1);
    pthread_mutex_lock(&r.mu);
    pthread_cond_broadcast(&r.cv);
    pthread_mutex_unlock(&r.mu);
    for (int i = 0; workers != NULL && i < nworkers; i++)
        if (workers[i].started)
            pthread_join(workers[i].th, NULL);
    if (finisher_started)
        pthread_join(finisher, NULL);
    free(workers);
    if (r.rk != NULL) {
        rd_kafka_consumer_close(r.rk); /* leaves the group: the revoke callback runs */
        rd_kafka_destroy(r.rk);
    }
    for (size_t i = 0; i < r.n_parts; i++)
        s_part_drop(&r.parts[i]);
    free(r.parts);
    if (topics != NULL)
        rd_kafka_topic_partition_list_destroy(topics);
    pw_producer_destroy(&r.prod);
    pthread_mutex_destroy(&r.mu);
    pthread_cond_destroy(&r.cv);
    rf_metric_set(o->m->partitions, NULL, 0);
    return rc;
}
