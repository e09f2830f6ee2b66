#include "rf_worker.h"

#include <sys/mman.h>
#include <sys/stat.h>

#include <czmq.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "rf_bus.h"
#include "rf_log.h"

/* rf_worker_stop runs in signal handlers: the flag must be lock-free. */
_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "atomic_int must be lock-free for rf_worker_stop");

typedef struct s_job_t s_job_t;
struct s_job_t {
    rf_worker_job_t pub; /* what the callback sees; pub.cancelled points at `cancelled` */
    atomic_int cancelled;
    json_t *header;                 /* owned JOB JSON; pub.header borrows it */
    rf_job_spec_t spec;             /* decoded JOB JSON; pub.spec and pub.request_id borrow it */
    zmsg_t *raw;                    /* backs pub.body when the body is one frame */
    void *joined;                   /* pub.body when the body had several frames (malloc'd) */
    size_t broker;                  /* index in self->brokers */
    uint64_t gen;                   /* the broker connection it came on */
    int64_t t_recv, t_start, t_end; /* µs, monotonic */
    int ran;                        /* the callback was called */
    int status;                     /* the status in the reply, for metrics and logs */
    zmsg_t *reply;                  /* the REPLY, built by whoever finished the job */
    s_job_t *next;                  /* local FIFO link */
};

typedef struct {
    char *endpoint;
    zsock_t *sock;        /* NULL while (re)connecting failed */
    uint64_t gen;         /* bumped at each new socket */
    int64_t last_recv;    /* ms, any decoded message */
    int64_t last_send;    /* ms, any message (or the last connect attempt) */
    int silent;           /* already warned that this broker went silent */
    size_t unanswered;    /* jobs of this connection not yet answered */
    int credit;           /* RFB/1.1: jobs granted to this connection and not yet received */
    int want;             /* its last DEMAND's queue depth, less what we granted since */
    int64_t reclaim_sent; /* ms; a reclaim is outstanding until its DEMAND answer (or a heartbeat) */
} s_broker_t;

typedef struct {
    rf_worker_t *worker;
    int index;
    pthread_t tid;
    int started;
    zsock_t *main_end;   /* PAIR used by the main thread */
    zsock_t *thread_end; /* PAIR used by the job thread only */
    s_job_t *job;        /* main thread's view of the running job */
} s_slot_t;

struct rf_worker_t {
    const rf_config_t *cfg;
    char service[RF_BUS_MAX_SERVICE + 1];
    int capacity;
    rf_worker_job_fn *fn;
    void *arg;
    rf_metric_t *m_jobs, *m_duration, *m_inflight, *m_reconnects, *m_queue_peak;
    s_broker_t *brokers;
    size_t n_brokers;
    s_slot_t *slots;
    s_job_t *queue_head, *queue_tail;
    size_t queued;             /* jobs in the local FIFO */
    atomic_size_t queued_peak; /* most jobs seen waiting for a thread (rf_worker_queued_peak) */
    int pipe[2];               /* self-pipe: rf_worker_stop -> rf_worker_run */
    atomic_int stop;
    int ran;
    char host[128];
    bool own_refs; /* source refs go to the callback as they are (rf_worker_own_refs) */
};

/* Monotonic microseconds, for job timings. */
static int64_t s_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t rf_worker_now_ms(void)
{
    return s_now_us() / 1000;
}

int rf_worker_job_should_stop(const rf_worker_job_t *job)
{
    return atomic_load(job->cancelled) != 0 || rf_worker_now_ms() >= job->deadline_ms;
}

/* Copies src into dst as printable ASCII: JSON strings must be UTF-8 and
 * the reply's reason one line, whatever a library put in its message. */
static void s_ascii_line(char *dst, size_t len, const char *src, size_t src_max)
{
    size_t i = 0;
    for (; i < src_max && src[i] != '\0' && i + 1 < len; i++) {
        unsigned char c = (unsigned char)src[i];
        dst[i] = c < 0x20 || c == 0x7f ? ' ' : c > 0x7f ? '?' : (char)c;
    }
    dst[i] = '\0';
    while (i > 0 && dst[i - 1] == ' ')
        dst[--i] = '\0';
}

/* The job's request id for logs (borrowed), "-" if the JOB had none. */
static const char *s_reqid(const s_job_t *job)
{
    return job->pub.request_id != NULL ? job->pub.request_id : "-";
}

/* Builds job->reply from res (body copied into the message) and sets
 * job->status. Runs on a job thread or the main thread. On allocation
 * failure job->reply stays NULL (logged): the broker will time the job out. */
static void s_build_reply(s_job_t *job, const rf_worker_result_t *res)
{
    rf_reply_t r;
    memset(&r, 0, sizeof(r));
    r.status = res->status > 0 ? res->status : 500;
    job->status = r.status;
    if (r.status == 200) {
        s_ascii_line(r.content_type, sizeof(r.content_type), res->content_type, sizeof(res->content_type));
        s_ascii_line(r.note, sizeof(r.note), res->note, sizeof(res->note));
        s_ascii_line(r.ref, sizeof(r.ref), res->ref, sizeof(res->ref));
        s_ascii_line(r.src_cache_control, sizeof(r.src_cache_control), res->src_cache_control,
                     sizeof(res->src_cache_control));
        s_ascii_line(r.src_expires, sizeof(r.src_expires), res->src_expires, sizeof(res->src_expires));
        s_ascii_line(r.src_last_modified, sizeof(r.src_last_modified), res->src_last_modified,
                     sizeof(res->src_last_modified));
    } else if (res->error[0] != '\0')
        s_ascii_line(r.error, sizeof(r.error), res->error, sizeof(res->error));
    r.elapsed_ms = (double)(job->t_end - job->t_recv) / 1000.0;
    job->reply = rf_bus_encode_reply(job->pub.job_id, &r);
    if (job->reply == NULL)
        goto fail;
    if (r.status == 200 && res->body != NULL && res->body_len > 0 &&
        zmsg_addmem(job->reply, res->body, res->body_len) < 0) {
        zmsg_destroy(&job->reply);
        goto fail;
    }
    return;
fail:
    rf_log(RF_LOG_ERROR, s_reqid(job), "worker: cannot build the REPLY (out of memory?)");
}

/* Frees the job and everything it owns; safe on NULL. */
static void s_job_free(s_job_t *job)
{
    if (job == NULL)
        return;
    zmsg_destroy(&job->reply);
    zmsg_destroy(&job->raw);
    free(job->joined);
    if (job->header != NULL)
        json_decref(job->header);
    rf_job_spec_clear(&job->spec);
    free(job);
}

/* A JOB without body frames may name its source by reference
 * (proto/rfb.md 2.2): "file:///abs/path" is mapped read-only, so a local
 * source reaches the transform without a single copy. Returns 0 with
 * the mapping in *map and *map_len (munmap it; NULL and 0 for an empty file), 1 when the
 * job has no reference, -1 with res->status/error set when it cannot be
 * read here. */
static int s_map_ref(s_job_t *job, void **map, size_t *map_len, rf_worker_result_t *res)
{
    *map = NULL;
    *map_len = 0;
    const char *ref = job->spec.source.ref;
    if (ref == NULL || job->pub.body_len > 0)
        return 1;
    if (strncmp(ref, "file://", 7) != 0 || ref[7] != '/') {
        res->status = 400;
        snprintf(res->error, sizeof(res->error), "unsupported source ref '%.80s'", ref);
        return -1;
    }
    int fd = open(ref + 7, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        res->status = 404;
        snprintf(res->error, sizeof(res->error), "source ref %.120s not readable here: %s", ref + 7,
                 fd < 0 ? strerror(errno) : "not a regular file");
        if (fd >= 0)
            close(fd);
        return -1;
    }
    /* With an offset, the source is [offset, offset + size) of the file (a
     * cache object: header, key and headers, then the body). */
    int64_t off = job->spec.source.offset, want = job->spec.source.size;
    if (off > 0 && (want < 0 || off > st.st_size || want > st.st_size - off)) {
        close(fd);
        res->status = 404;
        snprintf(res->error, sizeof(res->error), "source ref %.120s: %lld bytes at %lld are not in it (%lld bytes)",
                 ref + 7, (long long)want, (long long)off, (long long)st.st_size);
        return -1;
    }
    if (st.st_size > 0) {
        void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            close(fd);
            res->status = 500;
            snprintf(res->error, sizeof(res->error), "cannot map source ref: %s", strerror(errno));
            return -1;
        }
        *map = p;
        *map_len = (size_t)st.st_size;
    }
    close(fd);
    job->pub.body = off > 0 ? (char *)*map + off : *map;
    job->pub.body_len = off > 0 ? (size_t)want : *map_len;
    return 0;
}

/* Runs one job on the calling job thread and leaves its REPLY in job->reply. */
static void s_run_job(rf_worker_t *self, s_job_t *job)
{
    void *map = NULL;
    size_t map_len = 0;
    rf_worker_result_t res;
    memset(&res, 0, sizeof(res));
    job->t_start = s_now_us();
    /* CANCEL or expiry may land between the main thread's dispatch and now */
    if (atomic_load(&job->cancelled)) {
        res.status = 504;
        snprintf(res.error, sizeof(res.error), "cancelled before start");
    } else if (job->t_start / 1000 >= job->pub.deadline_ms) {
        res.status = 504;
        snprintf(res.error, sizeof(res.error), "deadline passed before start");
    } else if (self->own_refs || s_map_ref(job, &map, &map_len, &res) >= 0) {
        int rc = self->fn(self->arg, &job->pub, &res);
        job->ran = 1;
        if (rc != 0)
            rf_log(RF_LOG_DEBUG, s_reqid(job), "worker: job callback returned %d (status %d)", rc, res.status);
    }
    job->t_end = s_now_us();
    s_build_reply(job, &res);
    if (res.body != NULL && res.body_free != NULL)
        res.body_free(res.body);
    /* the source can be large; give it back before the main thread gets round to it */
    if (map != NULL)
        munmap(map, map_len);
    zmsg_destroy(&job->raw);
    free(job->joined);
    job->joined = NULL;
    job->pub.body = NULL;
    job->pub.body_len = 0;
}

/* Job thread: receives job pointers, runs them, sends them back; a NULL
 * pointer (or a dead socket) ends it. Returns NULL. */
static void *s_job_thread(void *arg)
{
    s_slot_t *slot = arg;
    void *sock = zsock_resolve(slot->thread_end);
    while (1) {
        s_job_t *job = NULL;
        int n = zmq_recv(sock, &job, sizeof(job), 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n != (int)sizeof(job) || job == NULL)
            break;
        s_run_job(slot->worker, job);
        while (zmq_send(sock, &job, sizeof(job), 0) < 0) {
            /* Only when the context is being torn down. The main thread
             * still points at the job, so it is leaked, not freed. */
            if (errno != EINTR)
                return NULL;
        }
    }
    return NULL;
}

/* Counts an answered (or abandoned-after-running) job; the metric
 * families may be NULL, which the rf_metric_* calls ignore. */
static void s_metric_job_done(rf_worker_t *self, s_job_t *job)
{
    char status[16];
    snprintf(status, sizeof(status), "%d", job->status);
    const char *jv[] = {self->service, status};
    const char *sv[] = {self->service};
    rf_metric_add(self->m_jobs, jv, 1);
    if (job->ran)
        rf_metric_observe(self->m_duration, sv, (double)(job->t_end - job->t_start) / 1e6);
    rf_metric_gauge_add(self->m_inflight, sv, -1);
}

/* Sends a zmsg on a broker's socket. Returns 0, or -1 (logged; message freed). */
static int s_send(s_broker_t *b, zmsg_t **msg_p)
{
    if (b->sock == NULL || *msg_p == NULL) {
        zmsg_destroy(msg_p);
        return -1;
    }
    if (rf_bus_send(b->sock, NULL, msg_p) < 0) {
        /* sndtimeo is 0: a full pipe means the broker does not read; liveness will sort it out */
        rf_warn("worker: send to %s failed: %s", b->endpoint, zmq_strerror(zmq_errno()));
        return -1;
    }
    b->last_send = rf_worker_now_ms();
    return 0;
}

/* Sends a command with no frames (HEARTBEAT, DISCONNECT). Returns 0 or -1. */
static int s_send_cmd(s_broker_t *b, rf_bus_cmd_t cmd)
{
    zmsg_t *msg = rf_bus_encode(cmd, NULL, 0, NULL);
    return s_send(b, &msg);
}

/* Answers a finished job (REPLY on its connection if that is still the
 * current one), records metrics and frees the job. */
static void s_finish(rf_worker_t *self, s_job_t *job)
{
    s_broker_t *b = &self->brokers[job->broker];
    int current = job->gen == b->gen && b->sock != NULL;
    /* before the send: whoever sees the REPLY also sees it counted */
    s_metric_job_done(self, job);
    if (current && b->unanswered > 0)
        b->unanswered--;
    if (current && job->reply != NULL)
        s_send(b, &job->reply);
    else
        rf_log(RF_LOG_DEBUG, s_reqid(job), "worker: job %016" PRIx64 " not answered (connection replaced)",
               job->pub.job_id);
    rf_log(RF_LOG_DEBUG, s_reqid(job), "worker: job %016" PRIx64 " status %d in %.1f ms", job->pub.job_id, job->status,
           (double)((job->t_end ? job->t_end : s_now_us()) - job->t_recv) / 1000.0);
    s_job_free(job);
}

/* Answers a job that did not run, from the main thread. */
static void s_answer_now(rf_worker_t *self, s_job_t *job, int status, const char *why)
{
    rf_worker_result_t res;
    memset(&res, 0, sizeof(res));
    res.status = status;
    snprintf(res.error, sizeof(res.error), "%s", why);
    job->t_end = s_now_us();
    s_build_reply(job, &res);
    s_finish(self, job);
}

/* Unlinks `job` from the local FIFO (prev is its predecessor or NULL). */
static void s_queue_unlink(rf_worker_t *self, s_job_t *prev, s_job_t *job)
{
    if (prev != NULL)
        prev->next = job->next;
    else
        self->queue_head = job->next;
    if (self->queue_tail == job)
        self->queue_tail = prev;
    job->next = NULL;
    self->queued--;
}

/* Appends `job` to the local FIFO, which then owns it. */
static void s_queue_push(rf_worker_t *self, s_job_t *job)
{
    job->next = NULL;
    if (self->queue_tail != NULL)
        self->queue_tail->next = job;
    else
        self->queue_head = job;
    self->queue_tail = job;
    self->queued++;
}

/* Answers 504 for queued jobs whose deadline passed: the broker has given
 * up on them, and answering frees its view of our capacity. */
static void s_expire_queued(rf_worker_t *self)
{
    int64_t now = rf_worker_now_ms();
    s_job_t *prev = NULL, *job = self->queue_head;
    while (job != NULL) {
        s_job_t *next = job->next;
        if (now >= job->pub.deadline_ms) {
            s_queue_unlink(self, prev, job);
            s_answer_now(self, job, 504, "deadline passed before start");
        } else {
            prev = job;
        }
        job = next;
    }
}

/* Hands queued jobs to idle job threads, oldest first. */
static void s_pump(rf_worker_t *self)
{
    for (int i = 0; i < self->capacity && self->queue_head != NULL; i++) {
        s_slot_t *slot = &self->slots[i];
        if (slot->job != NULL)
            continue;
        s_job_t *job = self->queue_head;
        s_queue_unlink(self, NULL, job);
        if (rf_worker_now_ms() >= job->pub.deadline_ms) {
            s_answer_now(self, job, 504, "deadline passed before start");
            i--; /* the slot is still free */
            continue;
        }
        if (zmq_send(zsock_resolve(slot->main_end), &job, sizeof(job), 0) < 0) {
            rf_log(RF_LOG_ERROR, s_reqid(job), "worker: cannot hand the job to a thread: %s",
                   zmq_strerror(zmq_errno()));
            s_answer_now(self, job, 500, "worker cannot start the job");
            continue;
        }
        slot->job = job;
    }
    /* What is left waits for a thread: with RFB/1.1 brokers, never. */
    if (self->queued > atomic_load(&self->queued_peak)) {
        atomic_store(&self->queued_peak, self->queued);
        rf_metric_set(self->m_queue_peak, (const char *const[]){self->service}, (double)self->queued);
    }
}

/* Number of job threads busy, plus jobs waiting in the local FIFO. */
static int s_busy(rf_worker_t *self)
{
    int busy = (int)self->queued;
    for (int i = 0; i < self->capacity; i++)
        busy += self->slots[i].job != NULL;
    return busy;
}

static int s_send(s_broker_t *b, zmsg_t **msg);
static zmsg_t *s_ready_msg(rf_worker_t *self, int credit);

/* RFB/1.1 (proto/rfb.md 3.4): promises free job threads to brokers and
 * sends each its grant in a READY. A thread is free when it is neither
 * busy nor promised, so busy + the credit of every connection never
 * exceeds capacity and no job waits here for a thread. Free threads go
 * first to brokers that asked (DEMAND), one at a time to the one holding
 * the fewest; the rest are spread as standing credit up to a fair share
 * (capacity / connected brokers, rounded up) so that an idle broker's next
 * job needs no round trip. When brokers still ask and nothing is free,
 * standing credit of brokers that do not ask is reclaimed (READY with
 * "reclaim"; they give back what they have not used in a DEMAND). */
static void s_grant(rf_worker_t *self)
{
    int pool = self->capacity - s_busy(self), connected = 0, wanting = 0;
    for (size_t i = 0; i < self->n_brokers; i++) {
        s_broker_t *b = &self->brokers[i];
        if (b->sock == NULL)
            continue;
        pool -= b->credit;
        connected++;
        wanting += b->want > 0 ? b->want : 0;
    }
    if (connected == 0)
        return;
    int share = (self->capacity + connected - 1) / connected;
    int grants[self->n_brokers];
    memset(grants, 0, sizeof(grants));
    for (int pass = 0; pass < 2 && pool > 0; pass++) {
        while (pool > 0) {
            s_broker_t *best = NULL;
            for (size_t i = 0; i < self->n_brokers; i++) {
                s_broker_t *b = &self->brokers[i];
                int held = (int)b->unanswered + b->credit;
                if (b->sock == NULL || (pass == 0 ? b->want <= 0 : held >= share))
                    continue;
                if (best == NULL || held < (int)best->unanswered + best->credit)
                    best = b;
            }
            if (best == NULL)
                break;
            best->credit++;
            if (pass == 0) {
                best->want--;
                wanting--;
            }
            grants[best - self->brokers]++;
            pool--;
        }
    }
    int64_t now = rf_worker_now_ms();
    for (size_t i = 0; i < self->n_brokers; i++) {
        s_broker_t *b = &self->brokers[i];
        rf_ready_t r = {.capacity = self->capacity, .credit = grants[i]};
        /* Reclaim standing credit from brokers that do not ask for work,
         * while others ask and nothing is free. */
        if (wanting > 0 && b->sock != NULL && b->want <= 0 && b->credit > 0 && grants[i] == 0 &&
            now - b->reclaim_sent >= self->cfg->bus.heartbeat_ms) {
            r.reclaim = b->credit < wanting ? b->credit : wanting;
            wanting -= r.reclaim;
            b->reclaim_sent = now;
        }
        if (r.credit == 0 && r.reclaim == 0)
            continue;
        r.pid = (int)getpid();
        snprintf(r.host, sizeof(r.host), "%s", self->host);
        snprintf(r.version, sizeof(r.version), "%s", RF_WORKER_VERSION);
        zmsg_t *msg = rf_bus_encode_ready(self->service, &r);
        if (msg == NULL || s_send(b, &msg) < 0)
            rf_warn("worker: cannot send a credit update to %s", b->endpoint);
        else
            rf_debug("worker: %s: granted %d, reclaiming %d", b->endpoint, r.credit, r.reclaim);
    }
}

/* Builds READY granting `credit` jobs (RFB/1.1; 0 on connect). Returns a
 * new message (caller owns) or NULL on allocation failure. */
static zmsg_t *s_ready_msg(rf_worker_t *self, int credit)
{
    rf_ready_t r = {.capacity = self->capacity, .credit = credit, .pid = (int)getpid()};
    snprintf(r.host, sizeof(r.host), "%s", self->host);
    snprintf(r.version, sizeof(r.version), "%s", RF_WORKER_VERSION);
    return rf_bus_encode_ready(self->service, &r);
}

/* Opens a new DEALER socket to the broker and sends READY. Returns 0, or
 * -1 (logged) leaving b->sock NULL; last_send is set either way so a
 * failed attempt is retried one heartbeat later, not in a busy loop. */
static int s_connect(rf_worker_t *self, s_broker_t *b)
{
    int64_t now = rf_worker_now_ms();
    b->last_send = b->last_recv = now;
    b->gen++;
    b->unanswered = 0;
    b->credit = 0; /* RFB/1.1: s_grant gives the new connection its share */
    b->want = 0;
    b->reclaim_sent = 0;
    b->sock = zsock_new(ZMQ_DEALER);
    if (b->sock == NULL) {
        rf_error("worker: cannot create a socket for %s", b->endpoint);
        return -1;
    }
    zsock_set_linger(b->sock, 0);
    zsock_set_sndtimeo(b->sock, 0);
    if (zsock_connect(b->sock, "%s", b->endpoint) < 0) {
        rf_error("worker: cannot connect to %s: %s", b->endpoint, zmq_strerror(zmq_errno()));
        zsock_destroy(&b->sock);
        return -1;
    }
    zmsg_t *msg = s_ready_msg(self, 0);
    if (msg == NULL || s_send(b, &msg) < 0) {
        rf_error("worker: cannot send READY to %s", b->endpoint);
        zsock_destroy(&b->sock);
        return -1;
    }
    rf_debug("worker: READY sent to %s (service %s, capacity %d)", b->endpoint, self->service, self->capacity);
    return 0;
}

/* Drops the broker's socket and everything tied to it, then connects a new
 * one (the socket identity changes, so the broker sees a fresh worker). */
static void s_reconnect(rf_worker_t *self, s_broker_t *b, const char *why)
{
    size_t idx = (size_t)(b - self->brokers);
    zsock_destroy(&b->sock);
    /* The broker re-dispatches our unanswered jobs: stop work on them. */
    s_job_t *prev = NULL, *job = self->queue_head;
    while (job != NULL) {
        s_job_t *next = job->next;
        if (job->broker == idx) {
            s_queue_unlink(self, prev, job);
            rf_log(RF_LOG_DEBUG, s_reqid(job), "worker: queued job dropped (%s)", why);
            rf_metric_gauge_add(self->m_inflight, (const char *const[]){self->service}, -1);
            s_job_free(job);
        } else {
            prev = job;
        }
        job = next;
    }
    for (int i = 0; i < self->capacity; i++)
        if (self->slots[i].job != NULL && self->slots[i].job->broker == idx)
            atomic_store(&self->slots[i].job->cancelled, 1);
    rf_metric_add(self->m_reconnects, (const char *const[]){self->service}, 1);
    s_connect(self, b);
}

/* Finds the current-connection job with this id: queued (*prev_p set to
 * its predecessor, *running 0) or running (*running 1). Returns NULL if
 * unknown. */
static s_job_t *s_find_job(rf_worker_t *self, size_t idx, uint64_t gen, uint64_t id, s_job_t **prev_p, int *running)
{
    s_job_t *prev = NULL;
    for (s_job_t *job = self->queue_head; job != NULL; prev = job, job = job->next)
        if (job->broker == idx && job->gen == gen && job->pub.job_id == id) {
            *prev_p = prev;
            *running = 0;
            return job;
        }
    for (int i = 0; i < self->capacity; i++) {
        s_job_t *job = self->slots[i].job;
        if (job != NULL && job->broker == idx && job->gen == gen && job->pub.job_id == id) {
            *running = 1;
            return job;
        }
    }
    return NULL;
}

/* Takes a decoded JOB (header and raw message ownership move to the job)
 * and queues it. */
static void s_on_job(rf_worker_t *self, s_broker_t *b, rf_bus_msg_t *msg, zmsg_t **raw_p)
{
    s_job_t *job = calloc(1, sizeof(*job));
    if (job == NULL) {
        rf_error("worker: out of memory for a job");
        return; /* the broker times it out */
    }
    char why[160];
    if (rf_job_spec_decode(msg->header, &job->spec, why, sizeof(why)) < 0) {
        rf_warn("worker: JOB from %s dropped: %s", b->endpoint, why);
        free(job);
        return; /* the broker times it out */
    }
    if (b->credit > 0)
        b->credit--; /* else an RFB/1.0 broker: it sends up to our capacity */
    job->header = msg->header;
    msg->header = NULL;
    job->raw = *raw_p;
    *raw_p = NULL;
    job->broker = (size_t)(b - self->brokers);
    job->gen = b->gen;
    job->t_recv = s_now_us();
    atomic_init(&job->cancelled, 0);
    job->pub.job_id = msg->job_id;
    job->pub.service = self->service;
    job->pub.header = job->header;
    job->pub.spec = &job->spec;
    job->pub.request_id = job->spec.request_id;
    job->pub.cancelled = &job->cancelled;
    if (job->spec.deadline_ms >= 0) {
        job->pub.deadline_ms = job->t_recv / 1000 + job->spec.deadline_ms;
    } else {
        rf_log(RF_LOG_DEBUG, s_reqid(job), "worker: JOB without deadline_ms");
        job->pub.deadline_ms = INT64_MAX;
    }
    rf_metric_gauge_add(self->m_inflight, (const char *const[]){self->service}, 1);
    b->unanswered++;
    if (msg->n_body == 1 && msg->body_len > 0) {
        job->pub.body = msg->body[0].data; /* lives in job->raw */
        job->pub.body_len = msg->body_len;
    } else if (msg->n_body > 1 && msg->body_len > 0) {
        unsigned char *p = job->joined = malloc(msg->body_len);
        if (p == NULL) {
            s_answer_now(self, job, 500, "worker out of memory");
            return;
        }
        for (size_t i = 0; i < msg->n_body; i++) {
            if (msg->body[i].len > 0)
                memcpy(p, msg->body[i].data, msg->body[i].len);
            p += msg->body[i].len;
        }
        job->pub.body = job->joined;
        job->pub.body_len = msg->body_len;
        zmsg_destroy(&job->raw);
    }
    rf_log(RF_LOG_DEBUG, s_reqid(job), "worker: job %016" PRIx64 " from %s, %zu body bytes", job->pub.job_id,
           b->endpoint, job->pub.body_len);
    /* The broker should never exceed our capacity; bound memory if it does. */
    if (b->unanswered > 2 * (size_t)self->capacity) {
        rf_log(RF_LOG_WARN, s_reqid(job), "worker: %s sent more than twice our capacity", b->endpoint);
        s_answer_now(self, job, 500, "worker over capacity");
        return;
    }
    s_queue_push(self, job);
}

/* CANCEL: a queued job is answered 504 without running; a running one
 * only gets its flag set (the callback decides whether to stop). */
static void s_on_cancel(rf_worker_t *self, s_broker_t *b, uint64_t id)
{
    s_job_t *prev = NULL;
    int running = 0;
    s_job_t *job = s_find_job(self, (size_t)(b - self->brokers), b->gen, id, &prev, &running);
    if (job == NULL) {
        rf_debug("worker: CANCEL for unknown job %016" PRIx64, id);
        return;
    }
    atomic_store(&job->cancelled, 1);
    rf_log(RF_LOG_DEBUG, s_reqid(job), "worker: job %016" PRIx64 " cancelled (%s)", id, running ? "running" : "queued");
    if (!running) {
        /* still answered: the broker counts it against our capacity until then */
        s_queue_unlink(self, prev, job);
        s_answer_now(self, job, 504, "cancelled before start");
    }
}

/* Reads and handles what a broker sent, a bounded number of messages at a
 * time so that one busy broker cannot starve the others. */
static void s_on_broker(rf_worker_t *self, s_broker_t *b)
{
    /* a DISCONNECT replaces b->sock: stop reading as soon as the generation changes */
    uint64_t gen = b->gen;
    for (int n = 0; n < 64 && b->gen == gen && (zsock_events(b->sock) & ZMQ_POLLIN); n++) {
        rf_bus_msg_t msg;
        memset(&msg, 0, sizeof(msg));
        zmsg_t *raw = rf_bus_recv(b->sock, NULL, &msg);
        if (raw == NULL)
            continue; /* did not decode: logged and dropped */
        b->last_recv = rf_worker_now_ms();
        if (b->silent) {
            rf_info("worker: broker %s answers again", b->endpoint);
            b->silent = 0;
        }
        switch (msg.cmd) {
        case RF_BUS_JOB: s_on_job(self, b, &msg, &raw); break;
        case RF_BUS_CANCEL: s_on_cancel(self, b, msg.job_id); break;
        case RF_BUS_DEMAND: {
            rf_demand_t d;
            char why[160];
            if (rf_demand_decode(msg.header, &d, why, sizeof(why)) < 0) {
                rf_warn("worker: DEMAND from %s dropped: %s", b->endpoint, why);
                break;
            }
            b->credit -= d.returned < b->credit ? d.returned : b->credit;
            b->want = d.queued;
            b->reclaim_sent = 0; /* answered */
            break;
        }
        case RF_BUS_HEARTBEAT: break;
        case RF_BUS_DISCONNECT:
            rf_info("worker: broker %s sent DISCONNECT; reconnecting", b->endpoint);
            s_reconnect(self, b, "broker sent DISCONNECT");
            break;
        default: rf_warn("worker: unexpected %s from broker %s", rf_bus_cmd_name(msg.cmd), b->endpoint); break;
        }
        rf_bus_msg_clear(&msg);
        zmsg_destroy(&raw);
    }
}

/* Sends due heartbeats, reconnects silent brokers, retries failed
 * connects. Returns the poll timeout in ms until the next timer. */
static long s_tick(rf_worker_t *self)
{
    int64_t hb = self->cfg->bus.heartbeat_ms;
    int64_t dead = hb * self->cfg->bus.liveness;
    int64_t now = rf_worker_now_ms();
    int64_t next = now + hb;
    for (size_t i = 0; i < self->n_brokers; i++) {
        s_broker_t *b = &self->brokers[i];
        if (b->sock == NULL) {
            if (now - b->last_send >= hb) {
                s_connect(self, b);
                rf_metric_add(self->m_reconnects, (const char *const[]){self->service}, 1);
            }
        } else if (now - b->last_recv >= dead) {
            if (!b->silent)
                rf_warn("worker: broker %s silent for %" PRId64 " ms; reconnecting", b->endpoint, now - b->last_recv);
            else
                rf_debug("worker: broker %s still silent; reconnecting", b->endpoint);
            b->silent = 1;
            s_reconnect(self, b, "broker silent");
        } else if (now - b->last_send >= hb) {
            s_send_cmd(b, RF_BUS_HEARTBEAT);
        }
        if (b->sock != NULL && b->last_recv + dead < next)
            next = b->last_recv + dead;
        if (b->last_send + hb < next)
            next = b->last_send + hb;
    }
    for (s_job_t *job = self->queue_head; job != NULL; job = job->next)
        if (job->pub.deadline_ms < next)
            next = job->pub.deadline_ms;
    return next <= now ? 0 : (long)(next - now);
}

/* Takes back a finished job from a job thread and answers it. */
static void s_on_slot(rf_worker_t *self, s_slot_t *slot)
{
    s_job_t *job = NULL;
    int n = zmq_recv(zsock_resolve(slot->main_end), &job, sizeof(job), ZMQ_DONTWAIT);
    if (n != (int)sizeof(job) || job == NULL)
        return;
    slot->job = NULL;
    s_finish(self, job);
}

/* On stop: DISCONNECT everywhere, cancel running jobs, drop queued ones. */
static void s_shutdown(rf_worker_t *self)
{
    for (size_t i = 0; i < self->n_brokers; i++) {
        s_broker_t *b = &self->brokers[i];
        if (b->sock == NULL)
            continue;
        s_send_cmd(b, RF_BUS_DISCONNECT);
        /* let the DISCONNECT (and replies just sent) leave before the context ends */
        zsock_set_linger(b->sock, self->cfg->bus.heartbeat_ms);
        zsock_destroy(&b->sock);
        b->gen++;
    }
    while (self->queue_head != NULL) {
        s_job_t *job = self->queue_head;
        s_queue_unlink(self, NULL, job);
        rf_metric_gauge_add(self->m_inflight, (const char *const[]){self->service}, -1);
        s_job_free(job);
    }
    for (int i = 0; i < self->capacity; i++)
        if (self->slots[i].job != NULL)
            atomic_store(&self->slots[i].job->cancelled, 1);
}

void rf_worker_own_refs(rf_worker_t *self)
{
    self->own_refs = true;
}

int rf_worker_run(rf_worker_t *self)
{
    if (self == NULL || self->ran)
        return -1;
    self->ran = 1;
    for (size_t i = 0; i < self->n_brokers; i++) {
        if (s_connect(self, &self->brokers[i]) < 0) {
            s_shutdown(self);
            return -1;
        }
    }
    rf_info("worker: service %s, capacity %d, %zu broker(s)", self->service, self->capacity, self->n_brokers);
    size_t n_items = 1 + (size_t)self->capacity + self->n_brokers;
    zmq_pollitem_t *items = calloc(n_items, sizeof(*items));
    s_broker_t **polled = calloc(self->n_brokers, sizeof(*polled)); /* broker of each polled socket */
    if (items == NULL || polled == NULL) {
        free(items);
        free(polled);
        s_shutdown(self);
        return -1;
    }
    while (!atomic_load(&self->stop)) {
        s_expire_queued(self);
        s_pump(self);
        s_grant(self);
        long timeout = s_tick(self);
        size_t n = 0;
        items[n++] = (zmq_pollitem_t){.socket = NULL, .fd = self->pipe[0], .events = ZMQ_POLLIN};
        for (int i = 0; i < self->capacity; i++)
            items[n++] = (zmq_pollitem_t){.socket = zsock_resolve(self->slots[i].main_end), .events = ZMQ_POLLIN};
        size_t first_broker = n, n_polled = 0;
        for (size_t i = 0; i < self->n_brokers; i++) {
            if (self->brokers[i].sock == NULL)
                continue; /* reconnect failed; s_tick retries */
            polled[n_polled++] = &self->brokers[i];
            items[n++] = (zmq_pollitem_t){.socket = zsock_resolve(self->brokers[i].sock), .events = ZMQ_POLLIN};
        }
        int rc = zmq_poll(items, (int)n, timeout);
        if (rc < 0) {
            if (zmq_errno() == EINTR)
                continue;
            rf_error("worker: poll failed: %s", zmq_strerror(zmq_errno()));
            break;
        }
        if (items[0].revents & ZMQ_POLLIN) {
            char buf[64];
            while (read(self->pipe[0], buf, sizeof(buf)) > 0) {
            }
        }
        for (int i = 0; i < self->capacity; i++)
            if (items[1 + i].revents & ZMQ_POLLIN)
                s_on_slot(self, &self->slots[i]);
        for (size_t i = 0; i < n_polled; i++)
            if ((items[first_broker + i].revents & ZMQ_POLLIN) && polled[i]->sock != NULL)
                s_on_broker(self, polled[i]);
    }
    free(items);
    free(polled);
    rf_info("worker: stopping; DISCONNECT sent to %zu broker(s)", self->n_brokers);
    s_shutdown(self);
    return 0;
}

size_t rf_worker_queued_peak(rf_worker_t *self)
{
    return atomic_load(&self->queued_peak);
}

void rf_worker_stop(rf_worker_t *self)
{
    if (self == NULL)
        return;
    int saved = errno; /* a signal handler must not clobber errno */
    atomic_store(&self->stop, 1);
    ssize_t w = write(self->pipe[1], "s", 1); /* EAGAIN: a wake-up is already pending */
    (void)w;
    errno = saved;
}

rf_worker_t *rf_worker_new(const rf_config_t *cfg, const char *service, int capacity, rf_worker_job_fn *fn, void *arg,
                           rf_metrics_t *metrics)
{
    if (cfg == NULL || service == NULL || fn == NULL || capacity < 1 || capacity > 256 || cfg->bus.n_connect == 0 ||
        strlen(service) == 0 || strlen(service) > RF_BUS_MAX_SERVICE || cfg->bus.heartbeat_ms < 1 ||
        cfg->bus.liveness < 1) {
        rf_error("worker: invalid arguments to rf_worker_new");
        return NULL;
    }
    for (const char *p = service; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_' || *p == '-')) {
            rf_error("worker: invalid service name '%s'", service);
            return NULL;
        }
    rf_worker_t *self = calloc(1, sizeof(*self));
    if (self == NULL)
        return NULL;
    self->pipe[0] = self->pipe[1] = -1;
    self->cfg = cfg;
    snprintf(self->service, sizeof(self->service), "%s", service);
    self->capacity = capacity;
    self->fn = fn;
    self->arg = arg;
    atomic_init(&self->stop, 0);
    if (gethostname(self->host, sizeof(self->host)) < 0)
        snprintf(self->host, sizeof(self->host), "unknown");
    self->host[sizeof(self->host) - 1] = '\0';
    if (pipe2(self->pipe, O_NONBLOCK | O_CLOEXEC) < 0) {
        rf_error("worker: pipe: %s", strerror(errno));
        goto fail;
    }

    if (metrics != NULL) {
        self->m_jobs = rf_metrics_declare(metrics, RF_METRIC_COUNTER, "refract_worker_jobs_total",
                                          "Jobs answered by this worker, by reply status.", "service,status", NULL, 0);
        self->m_duration = rf_metrics_declare(metrics, RF_METRIC_HISTOGRAM, "refract_worker_job_duration_seconds",
                                              "Time the job callback ran.", "service", rf_metrics_latency_buckets,
                                              rf_metrics_latency_nbuckets);
        self->m_inflight =
            rf_metrics_declare(metrics, RF_METRIC_GAUGE, "refract_worker_jobs_inflight",
                               "Jobs received and not yet answered (queued or running).", "service", NULL, 0);
        self->m_reconnects =
            rf_metrics_declare(metrics, RF_METRIC_COUNTER, "refract_worker_bus_reconnects_total",
                               "Times a broker connection was replaced (DISCONNECT or silence).", "service", NULL, 0);
        self->m_queue_peak = rf_metrics_declare(
            metrics, RF_METRIC_GAUGE, "refract_worker_queue_peak",
            "Most jobs that waited here for a job thread (0 while every broker keeps to its RFB/1.1 credit).",
            "service", NULL, 0);
        if (!self->m_jobs || !self->m_duration || !self->m_inflight || !self->m_reconnects || !self->m_queue_peak)
            rf_warn("worker: some worker metrics were already declared in this registry; they are not updated");
        /* export the series at 0 from the start, so rates work from the first scrape */
        const char *sv[] = {self->service};
        rf_metric_set(self->m_inflight, sv, 0);
        rf_metric_set(self->m_queue_peak, sv, 0);
        rf_metric_add(self->m_reconnects, sv, 0);
    }

    self->n_brokers = cfg->bus.n_connect;
    self->brokers = calloc(self->n_brokers, sizeof(*self->brokers));
    self->slots = calloc((size_t)capacity, sizeof(*self->slots));
    if (self->brokers == NULL || self->slots == NULL)
        goto fail;
    for (size_t i = 0; i < self->n_brokers; i++)
        if ((self->brokers[i].endpoint = strdup(cfg->bus.connect[i])) == NULL)
            goto fail;

    /* inproc names are unbound asynchronously after close: a name derived
     * from our address could still be taken by a freed predecessor */
    static atomic_uint s_instances;
    unsigned instance = atomic_fetch_add(&s_instances, 1);
    for (int i = 0; i < capacity; i++) {
        s_slot_t *slot = &self->slots[i];
        slot->worker = self;
        slot->index = i;
        char ep[96];
        snprintf(ep, sizeof(ep), "inproc://rf-worker-%d-%u-%d", (int)getpid(), instance, i);
        slot->main_end = zsock_new(ZMQ_PAIR);
        slot->thread_end = zsock_new(ZMQ_PAIR);
        if (slot->main_end == NULL || slot->thread_end == NULL || zsock_bind(slot->main_end, "%s", ep) < 0 ||
            zsock_connect(slot->thread_end, "%s", ep) < 0) {
            rf_error("worker: cannot create the job thread sockets");
            goto fail;
        }
    }
    /* Job threads take no asynchronous signals, so a SIGTERM always wakes
     * the main thread's poll; faults stay deliverable (sanitizers, cores). */
    sigset_t all, old;
    sigfillset(&all);
    const int sync_signals[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT, SIGTRAP, SIGSYS};
    for (size_t i = 0; i < sizeof(sync_signals) / sizeof(sync_signals[0]); i++)
        sigdelset(&all, sync_signals[i]);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int err = 0;
    for (int i = 0; i < capacity && err == 0; i++) {
        err = pthread_create(&self->slots[i].tid, NULL, s_job_thread, &self->slots[i]);
        if (err == 0)
            self->slots[i].started = 1;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (err != 0) {
        rf_error("worker: cannot start job threads: %s", strerror(err));
        goto fail;
    }
    return self;
fail:
    rf_worker_destroy(&self);
    return NULL;
}

void rf_worker_destroy(rf_worker_t **self_p)
{
    if (self_p == NULL || *self_p == NULL)
        return;
    rf_worker_t *self = *self_p;
    if (self->slots != NULL) {
        for (int i = 0; i < self->capacity; i++) {
            s_slot_t *slot = &self->slots[i];
            if (!slot->started)
                continue;
            if (slot->job != NULL)
                atomic_store(&slot->job->cancelled, 1);
            s_job_t *none = NULL;
            while (zmq_send(zsock_resolve(slot->main_end), &none, sizeof(none), 0) < 0 && errno == EINTR) {
            }
            pthread_join(slot->tid, NULL);
        }
        for (int i = 0; i < self->capacity; i++) {
            s_slot_t *slot = &self->slots[i];
            /* a job that finished after rf_worker_run returned */
            s_job_t *job = NULL;
            while (slot->main_end != NULL &&
                   zmq_recv(zsock_resolve(slot->main_end), &job, sizeof(job), ZMQ_DONTWAIT) == (int)sizeof(job)) {
                if (job != NULL)
                    s_job_free(job);
                job = NULL;
            }
            slot->job = NULL;
            zsock_destroy(&slot->thread_end);
            zsock_destroy(&slot->main_end);
        }
        free(self->slots);
    }
    while (self->queue_head != NULL) {
        s_job_t *job = self->queue_head;
        s_queue_unlink(self, NULL, job);
        s_job_free(job);
    }
    if (self->brokers != NULL) {
        for (size_t i = 0; i < self->n_brokers; i++) {
            zsock_destroy(&self->brokers[i].sock);
            free(self->brokers[i].endpoint);
        }
        free(self->brokers);
    }
    if (self->pipe[0] >= 0)
        close(self->pipe[0]);
    if (self->pipe[1] >= 0)
        close(self->pipe[1]);
    free(self);
    *self_p = NULL;
}
