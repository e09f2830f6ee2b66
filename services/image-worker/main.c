/*  refract-image-worker — serves the "image" service of the bus: receives
 *  a source image and an rf_chain, answers with the transformed image.
 *
 *    refract-image-worker -c /etc/refract/refract.yaml
 *
 *  Everything about the bus (READY, heartbeats, reconnects, job threads) is
 *  in common/rf_worker; the transform is img_core. This file wires them up
 *  and owns the process: config, logs, metrics endpoint, signals.
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

/* Read by the signal handler: the worker to stop, NULL outside its life. */
static rf_worker_t *_Atomic s_worker;

static void s_on_signal(int sig)
{
    (void)sig;
    rf_worker_t *w = atomic_load(&s_worker);
    if (w != NULL)
        rf_worker_stop(w);
}

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

/* Installs `handler` for SIGTERM and SIGINT. Returns 0 or -1. */
static int s_signals(void (*handler)(int))
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = handler;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGTERM, &sa, NULL) < 0 || sigaction(SIGINT, &sa, NULL) < 0)
        return -1;
    return 0;
}

static void s_usage(FILE *f)
{
    fprintf(f, "usage: refract-image-worker -c FILE [-m HOST:PORT]\n"
               "  -c FILE       the refract YAML configuration (sections bus, image_worker, log)\n"
               "  -m HOST:PORT  serve /metrics and /healthz here instead of image_worker.metrics_listen\n"
               "                (several workers on one host share the file; 0 disables)\n"
               "  -h            this help\n"
               "Exits 0 after a clean shutdown (SIGTERM/SIGINT), 1 on errors, 2 on bad usage.\n");
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

int main(int argc, char **argv)
{
    const char *path = NULL, *metrics_override = NULL;
    int opt;
    while ((opt = getopt(argc, argv, "c:m:h")) != -1) {
        switch (opt) {
        case 'c': path = optarg; break;
        case 'm': metrics_override = optarg; break;
        case 'h': s_usage(stdout); return 0;
        default: s_usage(stderr); return 2;
        }
    }
    if (path == NULL || optind != argc) {
        s_usage(stderr);
        return 2;
    }

    int rc = 1;
    char *err = NULL;
    rf_metrics_t *metrics = NULL;
    rf_httpd_t *httpd = NULL;
    rf_worker_t *worker = NULL;
    int vips_up = 0;
    img_opts_t opts;
    memset(&opts, 0, sizeof(opts));

    rf_log_init("image-worker");
    rf_config_t *cfg = rf_config_load(path, &err);
    if (cfg == NULL) {
        fprintf(stderr, "image-worker: %s\n", err != NULL ? err : "cannot load the configuration");
        free(err);
        return 1;
    }
    rf_log_set_level((rf_log_level_t)cfg->log.level);
    if (metrics_override != NULL && rf_listen_parse(metrics_override, &cfg->image_worker.metrics_listen) < 0) {
        fprintf(stderr, "image-worker: -m %s: expected a port or HOST:PORT\n", metrics_override);
        rf_config_destroy(&cfg);
        return 2;
    }
    opts.max_pixels = cfg->image_worker.max_pixels;
    opts.max_output_pixels = cfg->image_worker.max_output_pixels;
    opts.max_frames = cfg->image_worker.max_frames;

    /* Defaults that fill the machine without oversubscribing it: one job
     * per CPU, and the CPUs shared among the jobs' libvips threads. */
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    if (cpus < 1)
        cpus = 1;
    if (cfg->image_worker.jobs == 0)
        cfg->image_worker.jobs = cpus > 256 ? 256 : (int)cpus;
    if (cfg->image_worker.vips_concurrency == 0)
        cfg->image_worker.vips_concurrency = cpus / cfg->image_worker.jobs > 0 ? (int)(cpus / cfg->image_worker.jobs) : 1;
    g_log_set_handler("VIPS", G_LOG_LEVEL_CRITICAL | G_LOG_LEVEL_WARNING | G_LOG_LEVEL_MESSAGE, s_on_glib_log, NULL);
    if (img_init(cfg->image_worker.vips_concurrency) < 0)
        goto done;
    vips_up = 1;

    metrics = rf_metrics_new();
    if (metrics == NULL || rf_metrics_add_process_collector(metrics) < 0) {
        rf_error("cannot create the metrics registry");
        goto done;
    }
    if (cfg->image_worker.metrics_listen.port != 0) {
        httpd = rf_httpd_new(cfg->image_worker.metrics_listen.host, cfg->image_worker.metrics_listen.port, metrics,
                             NULL, NULL, &err);
        if (httpd == NULL) {
            rf_error("metrics endpoint: %s", err != NULL ? err : "cannot start");
            free(err);
            goto done;
        }
        rf_info("metrics on port %d", rf_httpd_port(httpd));
    }

    /* czmq would install its own SIGINT/SIGTERM handler with its first
     * socket; ours stops the worker cleanly instead. */
    zsys_handler_set(NULL);
    worker = rf_worker_new(cfg, "image", cfg->image_worker.jobs, s_job, &opts, metrics);
    if (worker == NULL)
        goto done;
    atomic_store(&s_worker, worker);
    if (s_signals(s_on_signal) < 0) {
        rf_error("cannot install signal handlers");
        goto done;
    }
    signal(SIGPIPE, SIG_IGN);
    /* Nothing of a worker's config can change while it runs; a SIGHUP
     * sent to the whole stack (to reload the gateway) must not kill it. */
    signal(SIGHUP, SIG_IGN);

    if (rf_worker_run(worker) == 0)
        rc = 0;
done:
    /* A second signal during teardown (e.g. a transform that will not
     * finish) terminates the process the default way. */
    s_signals(SIG_DFL);
    atomic_store(&s_worker, NULL);
    rf_worker_destroy(&worker);
    rf_httpd_destroy(&httpd);
    rf_metrics_destroy(&metrics);
    if (vips_up)
        img_shutdown();
    rf_config_destroy(&cfg);
    if (rc == 0)
        rf_info("stopped");
    return rc;
}
