/*  sg_bus — tasks with a `function` run by workers over RFB (sg.h).
 *
 *  The scheduler hosts a broker of its own (common/rf_broker, the one the
 *  gateway hosts) on storgate_scheduler.bus_endpoint; workers list that
 *  endpoint in bus.connect beside the gateway's. A task's source goes by
 *  reference (file:///path: the worker maps the file), its result comes
 *  back in the reply's body frames. Item threads block on their job: each
 *  has its own submitter (a submitter belongs to one thread).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "rf_broker.h"
#include "rf_chain.h"
#include "rf_log.h"
#include "sg.h"

struct sg_bus_t {
    rf_broker_t *broker;
    rf_config_t *bus_cfg; /* a copy of the bus settings with this endpoint */
};

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    rf_job_t *job; /* set by done */
} s_wait_t;

static __thread rf_submitter_t *s_sub;
static __thread sg_bus_t *s_sub_bus;

static void s_done(rf_job_t *job, void *arg)
{
    s_wait_t *w = arg;
    pthread_mutex_lock(&w->mu);
    w->job = job;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

sg_bus_t *sg_bus_new(const rf_config_t *cfg, rf_metrics_t *metrics, char *why, size_t why_len)
{
    sg_bus_t *b = calloc(1, sizeof(*b));
    if (b == NULL)
        return NULL;
    /* rf_broker binds cfg->bus.endpoint: hand it a config whose bus section
     * is this process's, with the scheduler's endpoint */
    b->bus_cfg = calloc(1, sizeof(*b->bus_cfg));
    if (b->bus_cfg == NULL) {
        free(b);
        return NULL;
    }
    b->bus_cfg->bus = cfg->bus;
    b->bus_cfg->bus.endpoint = cfg->storgate_scheduler.bus_endpoint;
    char *err = NULL;
    b->broker = rf_broker_new(b->bus_cfg, metrics, &err);
    if (b->broker == NULL) {
        snprintf(why, why_len, "bus broker on %s: %s", cfg->storgate_scheduler.bus_endpoint, err ? err : "failed");
        free(err);
        free(b->bus_cfg);
        free(b);
        return NULL;
    }
    return b;
}

void sg_bus_destroy(sg_bus_t **self_p)
{
    if (self_p == NULL || *self_p == NULL)
        return;
    sg_bus_t *b = *self_p;
    rf_broker_destroy(&b->broker);
    free(b->bus_cfg); /* its strings belong to the process config */
    free(b);
    *self_p = NULL;
}

/* Reads and removes a REPLY ref's file (file:///abs/path). */
static int s_read_ref(const char *ref, void **out, size_t *len, char *why, size_t why_len)
{
    if (strncmp(ref, "file:///", 8) != 0) {
        snprintf(why, why_len, "the worker answered with a reference this scheduler cannot read: %.80s", ref);
        return -1;
    }
    const char *path = ref + 7;
    FILE *f = fopen(path, "rb");
    long n = -1;
    if (f != NULL && fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
        (*out = malloc(n ? (size_t)n : 1)) != NULL && fread(*out, 1, (size_t)n, f) == (size_t)n) {
        fclose(f);
        unlink(path);
        *len = (size_t)n;
        return 0;
    }
    if (f != NULL)
        fclose(f);
    free(*out);
    *out = NULL;
    snprintf(why, why_len, "cannot read the worker's result %.80s", path);
    return -1;
}

void sg_bus_thread_end(void)
{
    rf_submitter_destroy(&s_sub);
    s_sub_bus = NULL;
}

/* Submits one job and waits for it to come back; NULL on allocation failure. */
static rf_job_t *s_submit(const char *service, json_t *chain, const char *path, const char *id, int timeout_s,
                          char *why, size_t why_len)
{
    rf_job_t *job = rf_job_new(service, id);
    if (job == NULL) {
        snprintf(why, why_len, "out of memory");
        return NULL;
    }
    job->spec.chain = json_incref(chain);
    job->spec.source.path = strdup(path);
    size_t rl = strlen(path) + 8;
    job->spec.source.ref = malloc(rl);
    if (job->spec.source.ref)
        snprintf(job->spec.source.ref, rl, "file://%s", path);
    job->timeout_ms = timeout_s * 1000;
    s_wait_t w = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    job->done = s_done;
    job->done_arg = &w;
    if (job->spec.chain == NULL || job->spec.source.path == NULL || job->spec.source.ref == NULL) {
        rf_job_destroy(&job);
        snprintf(why, why_len, "out of memory");
        return NULL;
    }
    rf_broker_submit(s_sub, &job);
    pthread_mutex_lock(&w.mu);
    while (w.job == NULL)
        pthread_cond_wait(&w.cv, &w.mu); /* the broker hands every job back, timed out at the latest */
    pthread_mutex_unlock(&w.mu);
    return w.job;
}

int sg_bus_transform(sg_bus_t *b, const char *service, json_t *chain, const char *path, const char *id, int timeout_s,
                     void **out, size_t *out_len, char *why, size_t why_len)
{
    *out = NULL;
    *out_len = 0;
    if (s_sub == NULL || s_sub_bus != b) {
        rf_submitter_destroy(&s_sub);
        s_sub = rf_submitter_new(b->broker);
        s_sub_bus = b;
        if (s_sub == NULL) {
            snprintf(why, why_len, "cannot reach the bus broker");
            return -1;
        }
    }
    /* A batch is not in a hurry: a service with no worker yet (the scheduler
     * just started, a worker is restarting) is asked again every 500 ms
     * until the task's timeout, where the gateway would answer 503 at once. */
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    rf_job_t *job = NULL;
    for (;;) {
        job = s_submit(service, chain, path, id, timeout_s, why, why_len);
        if (job == NULL)
            return -1;
        if (job->outcome != RF_JOB_UNAVAILABLE || strstr(job->why, "worker is connected") == NULL)
            break;
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if ((now.tv_sec - t0.tv_sec) * 1000 + (now.tv_nsec - t0.tv_nsec) / 1000000 + 500 >= (long)timeout_s * 1000)
            break;
        rf_job_destroy(&job);
        struct timespec nap = {0, 500 * 1000000};
        nanosleep(&nap, NULL);
    }
    int rc = -1;
    if (job->outcome != RF_JOB_OK) {
        snprintf(why, why_len, "%s: %s", job->outcome == RF_JOB_TIMEOUT ? "timed out" : "no worker",
                 job->why[0] ? job->why : "the bus gave up");
    } else if (job->reply.status != 200) {
        snprintf(why, why_len, "the worker answered %d: %s", job->reply.status,
                 job->reply.error[0] ? job->reply.error : "failed");
    } else if (job->reply.ref[0] != '\0') { /* the result in a file the worker wrote: ours now */
        rc = s_read_ref(job->reply.ref, out, out_len, why, why_len);
    } else if ((*out = malloc(job->reply_len ? job->reply_len : 1)) == NULL) {
        snprintf(why, why_len, "out of memory");
    } else {
        size_t off = 0;
        for (size_t i = 0; i < job->n_body; i++) {
            memcpy((char *)*out + off, job->body_frames[i].data, job->body_frames[i].len);
            off += job->body_frames[i].len;
        }
        *out_len = off;
        rc = 0;
    }
    rf_job_destroy(&job);
    return rc;
}
