/*  refract-image-worker — serves the "image" service of the bus: receives
 *  a source image and an rf_chain, answers with the transformed image.
 *
 *    refract-image-worker -c /etc/refract/refract.yaml
 *
 *  Everything about the bus (READY, heartbeats, reconnects, job threads) is
 *  in common/rf_worker, the process (config, logs, metrics endpoint,
 *  signals) in common/rf_worker_app; the transform is img_core. This file
 *  is the job callback and libvips' set-up.
 */
#include <jansson.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <czmq.h>
#include <glib.h>

#include "img_core.h"
#include "rf_chain.h"
#include "rf_config.h"
#include "rf_httpd.h"
#include "rf_log.h"
#include "rf_metrics.h"
#include "rf_worker.h"
#include "rf_worker_app.h"

/* Whether img_init succeeded (img_shutdown is then due). */
static int s_vips_up;

/* libvips reports recoverable trouble with a source (truncated JPEG, …)
 * through GLib warnings: keep them in our log format, at debug level, as
 * the job's own log line already carries the outcome. */
static void s_on_glib_log(const gchar *domain, GLogLevelFlags level, const gchar *message, gpointer arg)
{
    (void)arg;
    char line[512];
    snprintf(line, sizeof(line), "%s", message != NULL ? message : "");
    for (char *p = line; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    rf_log((level & (G_LOG_LEVEL_ERROR | G_LOG_LEVEL_CRITICAL)) ? RF_LOG_ERROR : RF_LOG_DEBUG, NULL, "%s: %s",
           domain != NULL ? domain : "glib", line);
}

/* Job callback, on a job thread: chain from the JOB JSON, transform, result.
 * Returns 0 on a 200, -1 otherwise (only logged by rf_worker). */
static int s_should_stop(void *job)
{
    return rf_worker_job_should_stop(job);
}

static int s_job(void *arg, const rf_worker_job_t *job, rf_worker_result_t *res)
{
    /* this job's own copy: the transform polls whether it must stop */
    img_opts_t job_opts = *(const img_opts_t *)arg;
    job_opts.should_stop = s_should_stop;
    job_opts.stop_arg = (void *)job;
    const img_opts_t *opts = &job_opts;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    rf_chain_t chain;
    char why[256] = "", text[512] = "-";
    img_result_t out;
    memset(&out, 0, sizeof(out));
    int status;

    if (rf_chain_from_json(job->spec->chain, &chain, why, sizeof(why)) < 0) {
        status = 400;
    } else {
        if (rf_chain_format(&chain, text, sizeof(text)) < 0)
            snprintf(text, sizeof(text), "(long chain)");
        if (rf_worker_job_should_stop(job)) {
            /* a transform cannot be interrupted midway: this is the last cheap exit */
            status = 504;
            snprintf(why, sizeof(why), "cancelled or past deadline");
        } else {
            status = img_transform(job->body, job->body_len, &chain, opts, &out, why, sizeof(why));
        }
    }
    res->status = status;
    if (status == 200) {
        snprintf(res->content_type, sizeof(res->content_type), "%s", out.mime);
        if (out.frames_note[0] != '\0') /* e.g. an animation flattened for jpeg: say so */
            snprintf(res->note, sizeof(res->note), "frames=%d (%s)", out.frames, out.frames_note);
        res->body = out.data;
        res->body_len = out.len;
        res->body_free = g_free;
    } else {
        snprintf(res->error, sizeof(res->error), "%s", why);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    if (status == 200)
        rf_log(RF_LOG_INFO, job->request_id, "image %s 200 %s %dx%d frames=%d%s%s%s in=%zu out=%zu %.1fms", text,
               out.mime, out.width, out.height, out.frames, out.frames_note[0] ? " (" : "", out.frames_note,
               out.frames_note[0] ? ")" : "", job->body_len, out.len, ms);
    else
        rf_log(status >= 500 ? RF_LOG_WARN : RF_LOG_INFO, job->request_id, "image %s %d in=%zu out=0 %.1fms: %s", text,
               status, job->body_len, ms, why);
    return status == 200 ? 0 : -1;
}

static rf_listen_t *s_metrics_listen(rf_config_t *cfg)
{
    return &cfg->image_worker.metrics_listen;
}

static int *s_jobs(rf_config_t *cfg)
{
    return &cfg->image_worker.jobs;
}

/* libvips, with the CPUs shared among the jobs' threads so that the
 * defaults fill the machine without oversubscribing it. */
static int s_setup(rf_config_t *cfg, void **arg)
{
    img_opts_t *opts = calloc(1, sizeof(*opts));
    *arg = opts;
    if (opts == NULL)
        return -1;
    opts->max_pixels = cfg->image_worker.max_pixels;
    opts->max_output_pixels = cfg->image_worker.max_output_pixels;
    opts->max_frames = cfg->image_worker.max_frames;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    if (cpus < 1)
        cpus = 1;
    if (cfg->image_worker.vips_concurrency == 0)
        cfg->image_worker.vips_concurrency =
            cpus / cfg->image_worker.jobs > 0 ? (int)(cpus / cfg->image_worker.jobs) : 1;
    g_log_set_handler("VIPS", G_LOG_LEVEL_CRITICAL | G_LOG_LEVEL_WARNING | G_LOG_LEVEL_MESSAGE, s_on_glib_log, NULL);
    if (img_init(cfg->image_worker.vips_concurrency) < 0)
        return -1;
    s_vips_up = 1;
    return 0;
}

static void s_teardown(void *arg)
{
    if (s_vips_up)
        img_shutdown();
    free(arg);
}

static const rf_worker_app_t s_app = {
    .name = "image-worker",
    .service = "image",
    .section = "image_worker",
    .metrics_listen = s_metrics_listen,
    .jobs = s_jobs,
    .setup = s_setup,
    .teardown = s_teardown,
    .job = s_job,
};

int main(int argc, char **argv)
{
    return rf_worker_app_main(&s_app, argc, argv);
}
