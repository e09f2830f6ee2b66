/*  refract-storgate-scheduler — storgate's batches, workflows and webhooks
 *  (sg.h). Reads the `storgate` and `storgate_scheduler` sections of the
 *  one configuration file.
 *
 *  Signals: SIGTERM / SIGINT stop (items in progress finish, queued ones
 *  are left for the next run: their chunk's cursor was not saved);
 *  SIGUSR1 starts every enabled onBatch now, as if its schedule had come.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "rf_cli.h"
#include "rf_config.h"
#include "rf_httpd.h"
#include "rf_log.h"
#include "rf_metrics.h"
#include "rf_tmpl.h"
#include "sg.h"

sg_metrics_t sg_m;

static void s_usage(FILE *f)
{
    fprintf(f, "usage: refract-storgate-scheduler -c CONFIG [-t]\n"
               "  -c CONFIG  the refract YAML file (sections storgate and storgate_scheduler)\n"
               "  -t         check the configuration (schedules too) and exit\n");
}

static int s_declare(rf_metrics_t *m)
{
    sg_m.items = rf_metrics_declare(m, RF_METRIC_COUNTER, "refract_storgate_items_total",
                                    "Items run through a workflow, by bucket, workflow and outcome (done, aborted)",
                                    "bucket,workflow,outcome", NULL, 0);
    sg_m.batches = rf_metrics_declare(m, RF_METRIC_COUNTER, "refract_storgate_batches_total",
                                      "onBatch runs by bucket and outcome (started, completed, stopped)",
                                      "bucket,outcome", NULL, 0);
    sg_m.leader = rf_metrics_declare(m, RF_METRIC_GAUGE, "refract_storgate_leader",
                                     "1 while this node holds the leader lease", "", NULL, 0);
    sg_m.webhooks =
        rf_metrics_declare(m, RF_METRIC_COUNTER, "refract_storgate_webhooks_total",
                           "Webhook deliveries by outcome (delivered, retried, unsupported)", "outcome", NULL, 0);
    sg_m.outbox = rf_metrics_declare(m, RF_METRIC_GAUGE, "refract_storgate_outbox_pending",
                                     "Webhooks in the outbox, not delivered yet", "", NULL, 0);
    sg_m.queue = rf_metrics_declare(m, RF_METRIC_GAUGE, "refract_storgate_items_queued",
                                    "Items listed and waiting for an item thread", "", NULL, 0);
    sg_m.throttled = rf_metrics_declare(m, RF_METRIC_GAUGE, "refract_storgate_throttled",
                                        "1 while items are paused because the CPU average is over throttling.cpu."
                                        "deactive (until it falls under reactive)",
                                        "", NULL, 0);
    sg_m.cpu = rf_metrics_declare(m, RF_METRIC_GAUGE, "refract_storgate_cpu_percent",
                                  "The machine's CPU use averaged over throttling.window", "", NULL, 0);
    return sg_m.items && sg_m.batches && sg_m.leader && sg_m.webhooks && sg_m.outbox && sg_m.queue && sg_m.throttled &&
                   sg_m.cpu
               ? 0
               : -1;
}

static int s_mkdirs(const char *dir)
{
    char p[512];
    snprintf(p, sizeof(p), "%s", dir);
    for (char *s = p + 1; (s = strchr(s, '/')) != NULL; s++) {
        *s = '\0';
        mkdir(p, 0700);
        *s = '/';
    }
    return mkdir(p, 0700) == 0 || errno == EEXIST ? 0 : -1;
}

/* Gauges read at scrape time: the outbox's files, counted. */
static void s_collect(rf_metrics_t *m, void *arg)
{
    (void)m;
    sg_node_t *n = arg;
    if (n->outbox != NULL)
        rf_metric_set(sg_m.outbox, NULL, sg_outbox_pending(n->outbox));
}

/* Every savePath (with its pathPattern) and onComplete move path compiles:
 * a bad template stops the start, naming the bucket, workflow and task. */
static int s_check_templates(const rf_sg_conf_t *sc, char *why, size_t why_len)
{
    char err[300];
    rf_tmpl_t *t = rf_tmpl_new(err, sizeof(err));
    if (t == NULL) {
        snprintf(why, why_len, "cannot load the template engine: %s", err);
        return -1;
    }
    int rc = 0;
    for (size_t b = 0; rc == 0 && b < sc->n_buckets; b++) {
        const rf_sg_bucket_t *bk = &sc->buckets[b];
        for (size_t w = 0; rc == 0 && w < bk->n_workflows; w++) {
            const rf_sg_workflow_t *wf = &bk->workflows[w];
            for (size_t k = 0; rc == 0 && k < wf->n_tasks; k++)
                if (rf_tmpl_check_pattern(t, wf->tasks[k].save_path, wf->tasks[k].path_pattern, err, sizeof(err)) < 0) {
                    snprintf(why, why_len, "bucket %s, workflow %s, task %zu: savePath: %s", bk->name, wf->name, k + 1,
                             err);
                    rc = -1;
                }
            if (rc == 0 && wf->src_path != NULL && rf_tmpl_check(t, wf->src_path, err, sizeof(err)) < 0) {
                snprintf(why, why_len, "bucket %s, workflow %s: onComplete.src.path: %s", bk->name, wf->name, err);
                rc = -1;
            }
        }
    }
    rf_tmpl_destroy(&t);
    return rc;
}

static int s_health(void *arg, char *buf, size_t len)
{
    sg_node_t *n = arg;
    if (atomic_load(&n->stopping)) {
        snprintf(buf, len, "stopping");
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *path;
    bool test_only;
    int rc = rf_cli_args(argc, argv, s_usage, &path, &test_only);
    if (rc >= 0)
        return rc;
    rc = 1;
    rf_log_init("storgate");
    /* Blocked before any thread exists (outbox, broker, metrics, items), so
     * that every thread inherits the mask and only the main loop's
     * sigtimedwait takes them: a SIGUSR1 that reached another thread would
     * end the process (its default action). SIGUSR2: an item thread wakes
     * the main loop when a chunk's last item is done. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGUSR1);
    sigaddset(&sigs, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    char *err = NULL, why[512] = "";
    rf_config_t *cfg = rf_config_load(path, &err);
    if (cfg == NULL) {
        fprintf(stderr, "%s\n", err ? err : "invalid configuration");
        free(err);
        return 1;
    }
    if (cfg->storgate == NULL) {
        fprintf(stderr, "%s:1:1: the scheduler needs a storgate section\n", path);
        rf_config_destroy(&cfg);
        return 1;
    }
    rf_log_set_level(cfg->log.level);
    sg_node_t n = {.cfg = cfg,
                   .sc = cfg->storgate,
                   .mu = PTHREAD_MUTEX_INITIALIZER,
                   .cv = PTHREAD_COND_INITIALIZER,
                   .main_thread = pthread_self()};
    rf_metrics_t *metrics = rf_metrics_new();
    rf_httpd_t *httpd = NULL;
    sg_batches_t *batches = NULL;
    if (metrics == NULL || s_declare(metrics) < 0) {
        fprintf(stderr, "cannot set up metrics\n");
        goto done;
    }
    rf_metrics_add_process_collector(metrics);
    rf_metrics_on_collect(metrics, s_collect, &n);
    if (cfg->storgate_scheduler.name != NULL) {
        snprintf(n.node, sizeof(n.node), "%s", cfg->storgate_scheduler.name);
    } else {
        char host[64] = "node";
        gethostname(host, sizeof(host) - 1);
        snprintf(n.node, sizeof(n.node), "%s", host); /* stable across restarts: its outbox is found again */
    }
    if (n.node[0] == '\0' ||
        strspn(n.node, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-_:") != strlen(n.node)) {
        fprintf(stderr, "%s: storgate_scheduler.name '%s': letters, digits and . - _ : only\n", path, n.node);
        goto done;
    }
    snprintf(n.state_dir, sizeof(n.state_dir), "%s", cfg->storgate_scheduler.state_dir);
    if (s_check_templates(n.sc, why, sizeof(why)) < 0) {
        fprintf(stderr, "%s: %s\n", path, why);
        goto done;
    }
    if (test_only) {
        /* the schedules parse, the lease URL is one we can take */
        if ((batches = sg_batches_new(&n, why, sizeof(why))) == NULL && why[0]) {
            fprintf(stderr, "%s: %s\n", path, why);
            goto done;
        }
        printf("%s: configuration OK (%zu bucket%s)\n", path, n.sc->n_buckets, n.sc->n_buckets == 1 ? "" : "s");
        rc = 0;
        goto done;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    char cursors[600];
    snprintf(cursors, sizeof(cursors), "%s/cursors", n.state_dir);
    if (s_mkdirs(n.state_dir) < 0 || s_mkdirs(cursors) < 0) {
        rf_error("cannot create state_dir %s: %s", n.state_dir, strerror(errno));
        goto done;
    }
    if ((n.outbox = sg_outbox_new(n.state_dir, n.node, why, sizeof(why))) == NULL ||
        (n.leader = sg_leader_new(n.sc, n.node, n.state_dir, why, sizeof(why))) == NULL ||
        (cfg->storgate_scheduler.bus_endpoint != NULL &&
         (n.bus = sg_bus_new(cfg, metrics, why, sizeof(why))) == NULL) ||
        (batches = sg_batches_new(&n, why, sizeof(why))) == NULL || (n.events = sg_events_new(&n)) == NULL) {
        rf_error("%s", why[0] ? why : "cannot start");
        goto done;
    }
    /* what an earlier run of this node held when it stopped, before any item runs */
    int due = sg_outbox_settle(n.outbox, sg_item_settle, &n);
    if (due > 0)
        rf_info("storgate outbox: %d held webhook(s) of an earlier run are due", due);
    const rf_listen_t *ml = &cfg->storgate_scheduler.metrics_listen;
    if (ml->port > 0 && (httpd = rf_httpd_new(ml->host, ml->port, metrics, s_health, &n, &err)) == NULL) {
        rf_error("metrics_listen: %s", err ? err : "cannot listen");
        free(err);
        goto done;
    }
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    n.nthreads = cfg->storgate_scheduler.jobs > 0 ? cfg->storgate_scheduler.jobs : (cpus > 0 ? (int)cpus : 1);
    n.threads = calloc((size_t)n.nthreads, sizeof(pthread_t));
    for (int i = 0; n.threads && i < n.nthreads; i++)
        if (pthread_create(&n.threads[i], NULL, sg_item_thread, &n) != 0)
            n.nthreads = i;
    const char *rhost, *rprefix;
    int rport;
    const char *lease_path;
    char dist_dir[1100];
    if (sg_leader_redis(n.leader, &rhost, &rport, &rprefix)) { /* items handed out to every node */
        if ((n.dist = sg_dist_new(&n, rhost, rport, rprefix)) == NULL || sg_dist_start(n.dist) < 0) {
            rf_error("cannot start taking items from Redis");
            goto done;
        }
        sg_dist_heartbeat(n.dist);
    } else if (sg_leader_file(n.leader, &lease_path)) { /* the same, through files beside the lease */
        snprintf(dist_dir, sizeof(dist_dir), "%s.dist", lease_path);
        if ((n.dist = sg_dist_new_files(&n, dist_dir)) == NULL || sg_dist_start(n.dist) < 0) {
            rf_error("cannot start taking items from %s", dist_dir);
            goto done;
        }
        sg_dist_heartbeat(n.dist);
    }
    rf_info("refract-storgate-scheduler %s: %zu bucket(s), %d item thread(s), state %s%s%s", n.node, n.sc->n_buckets,
            n.nthreads, n.state_dir, n.bus ? ", bus " : "", n.bus ? cfg->storgate_scheduler.bus_endpoint : "");
    sg_throttle_t *throttle = sg_throttle_new(n.sc);
    bool run_now = false;
    for (;;) {
        bool pause = sg_throttle_tick(throttle);
        pthread_mutex_lock(&n.mu);
        if (pause != n.throttled) {
            n.throttled = pause;
            pthread_cond_broadcast(&n.cv);
        }
        pthread_mutex_unlock(&n.mu);
        if (n.dist != NULL)
            sg_dist_heartbeat(n.dist);
        if (sg_batches_tick(batches, run_now))
            sg_events_tick(n.events);
        run_now = false;
        struct timespec ts = {0, 200 * 1000000};
        int sig = sigtimedwait(&sigs, NULL, &ts);
        if (sig == SIGUSR1) {
            rf_info("SIGUSR1: starting every enabled onBatch now");
            run_now = true;
        } else if (sig == SIGTERM || sig == SIGINT) {
            rf_info("stopping");
            break;
        }
    }
    sg_throttle_destroy(&throttle);
    rc = 0;
done:
    atomic_store(&n.stopping, 1);
    pthread_mutex_lock(&n.mu);
    pthread_cond_broadcast(&n.cv);
    pthread_mutex_unlock(&n.mu);
    for (int i = 0; n.threads && i < n.nthreads; i++)
        pthread_join(n.threads[i], NULL);
    free(n.threads);
    sg_dist_destroy(&n.dist); /* its puller sees n.stopping */
    while (n.head != NULL) {  /* never started: their chunk's cursor was not saved */
        sg_item_t *it = n.head;
        n.head = it->next;
        free(it);
    }
    rf_httpd_destroy(&httpd);
    rf_sgfs_thread_end(); /* the main thread's S3 clients (batch listings) */
    sg_batches_destroy(&batches);
    sg_events_destroy(&n.events);
    sg_bus_destroy(&n.bus);
    sg_leader_destroy(&n.leader);
    sg_outbox_destroy(&n.outbox);
    rf_metrics_destroy(&metrics);
    rf_config_destroy(&cfg);
    if (!test_only)
        curl_global_cleanup();
    return rc;
}
