/*  rf_worker_app — see rf_worker_app.h. */
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <czmq.h>

#include "rf_httpd.h"
#include "rf_log.h"
#include "rf_metrics.h"
#include "rf_worker_app.h"

/* Read by the signal handler: the worker to stop, NULL outside its life. */
static rf_worker_t *_Atomic s_worker;

static void s_on_signal(int sig)
{
    (void)sig;
    rf_worker_t *w = atomic_load(&s_worker);
    if (w != NULL)
        rf_worker_stop(w);
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

static void s_usage(const rf_worker_app_t *app, FILE *f)
{
    fprintf(f,
            "usage: refract-%s -c FILE [-m HOST:PORT]\n"
            "  -c FILE       the refract YAML configuration (sections bus, %s, log)\n"
            "  -m HOST:PORT  serve /metrics and /healthz here instead of %s.metrics_listen\n"
            "                (several workers on one host share the file; 0 disables)\n"
            "  -h            this help\n"
            "Exits 0 after a clean shutdown (SIGTERM/SIGINT), 1 on errors, 2 on bad usage.\n",
            app->name, app->section, app->section);
}

/* The metrics registry and, when configured, its endpoint. 0 or -1 (logged). */
static int s_metrics(rf_listen_t *at, rf_metrics_t **metrics, rf_httpd_t **httpd)
{
    char *err = NULL;
    *metrics = rf_metrics_new();
    if (*metrics == NULL || rf_metrics_add_process_collector(*metrics) < 0) {
        rf_error("cannot create the metrics registry");
        return -1;
    }
    if (at->port == 0)
        return 0;
    *httpd = rf_httpd_new(at->host, at->port, *metrics, NULL, NULL, &err);
    if (*httpd == NULL) {
        rf_error("metrics endpoint: %s", err != NULL ? err : "cannot start");
        free(err);
        return -1;
    }
    rf_info("metrics on port %d", rf_httpd_port(*httpd));
    return 0;
}

int rf_worker_app_main(const rf_worker_app_t *app, int argc, char **argv)
{
    const char *path = NULL, *metrics_override = NULL;
    int opt;
    while ((opt = getopt(argc, argv, "c:m:h")) != -1) {
        switch (opt) {
        case 'c': path = optarg; break;
        case 'm': metrics_override = optarg; break;
        case 'h': s_usage(app, stdout); return 0;
        default: s_usage(app, stderr); return 2;
        }
    }
    if (path == NULL || optind != argc) {
        s_usage(app, stderr);
        return 2;
    }

    int rc = 1;
    char *err = NULL;
    rf_metrics_t *metrics = NULL;
    rf_httpd_t *httpd = NULL;
    rf_worker_t *worker = NULL;
    void *arg = NULL;
    int set_up = 0;

    rf_log_init(app->name);
    rf_config_t *cfg = rf_config_load(path, &err);
    if (cfg == NULL) {
        fprintf(stderr, "%s: %s\n", app->name, err != NULL ? err : "cannot load the configuration");
        free(err);
        return 1;
    }
    rf_log_set_level((rf_log_level_t)cfg->log.level);
    if (metrics_override != NULL && rf_listen_parse(metrics_override, app->metrics_listen(cfg)) < 0) {
        fprintf(stderr, "%s: -m %s: expected a port or HOST:PORT\n", app->name, metrics_override);
        rf_config_destroy(&cfg);
        return 2;
    }
    int *jobs = app->jobs(cfg);
    if (*jobs == 0) { /* one job per CPU */
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        *jobs = cpus < 1 ? 1 : cpus > 256 ? 256 : (int)cpus;
    }
    set_up = 1;
    if (app->setup(cfg, &arg) < 0)
        goto done;
    if (s_metrics(app->metrics_listen(cfg), &metrics, &httpd) < 0)
        goto done;

    /* czmq would install its own SIGINT/SIGTERM handler with its first
     * socket; ours stops the worker cleanly instead. */
    zsys_handler_set(NULL);
    worker = rf_worker_new(cfg, app->service, *jobs, app->job, arg, metrics);
    if (worker == NULL)
        goto done;
    if (app->own_refs)
        rf_worker_own_refs(worker);
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
    if (set_up && app->teardown != NULL)
        app->teardown(arg);
    rf_config_destroy(&cfg);
    if (rc == 0)
        rf_info("stopped");
    return rc;
}
