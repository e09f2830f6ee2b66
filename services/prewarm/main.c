/*  refract-prewarm — pre-warms the edge cache from a Kafka topic (pw.h,
 *  docs/prewarm.md). Reads the `prewarm` section of the one configuration
 *  file (and `gateway.listen` for the default gateway_url).
 *
 *  Why a separate process: it is a Kafka consumer group member, which
 *  several of them form over a topic's partitions, and it reaches the
 *  cache only the way clients do, through a gateway listener; so it can
 *  run beside any gateway, be scaled on its own, and be stopped without
 *  touching live traffic.
 *
 *  Signals: SIGTERM / SIGINT stop (requests in flight are aborted and
 *  their messages left uncommitted, for the next owner of the partition).
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "pw.h"
#include "rf_sgevent.h"
#include "rf_cli.h"
#include "rf_config.h"
#include "rf_httpd.h"
#include "rf_log.h"
#include "rf_metrics.h"

static void s_usage(FILE *f)
{
    fprintf(f, "usage: refract-prewarm -c CONFIG [-t]\n"
               "  -c CONFIG  the refract YAML file (section prewarm)\n"
               "  -t         check the configuration and exit\n");
}

static int s_declare(rf_metrics_t *reg, pw_metrics_t *m)
{
    static const double buckets[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
    m->messages = rf_metrics_declare(reg, RF_METRIC_COUNTER, "refract_prewarm_messages_total",
                                     "Pre-warm messages by outcome: done (the gateway answered < 400), dead_letter "
                                     "(malformed, or failed after its retries), retried (one per retry)",
                                     "outcome", NULL, 0);
    m->inflight = rf_metrics_declare(reg, RF_METRIC_GAUGE, "refract_prewarm_inflight", "Messages being processed now",
                                     "", NULL, 0);
    m->duration = rf_metrics_declare(reg, RF_METRIC_HISTOGRAM, "refract_prewarm_duration_seconds",
                                     "Time to process one message, retries, dead letter and event included", "",
                                     buckets, sizeof(buckets) / sizeof(buckets[0]));
    m->partitions = rf_metrics_declare(reg, RF_METRIC_GAUGE, "refract_prewarm_partitions",
                                       "Partitions of the topic assigned to this member", "", NULL, 0);
    m->events = rf_metrics_declare(reg, RF_METRIC_COUNTER, "refract_prewarm_events_total",
                                   "Events acknowledged by the brokers on events_topic, by kind (done, failed)",
                                   "outcome", NULL, 0);
    if (m->messages == NULL || m->inflight == NULL || m->duration == NULL || m->partitions == NULL || m->events == NULL)
        return -1;
    static const char *const outcomes[] = {"done", "retried", "dead_letter"};
    for (size_t i = 0; i < 3; i++) { /* every series from the start, at 0 */
        const char *l[1] = {outcomes[i]};
        rf_metric_add(m->messages, l, 0);
    }
    rf_metric_set(m->inflight, NULL, 0);
    rf_metric_set(m->partitions, NULL, 0);
    return 0;
}

static bool s_topic_ok(const char *t)
{
    size_t n = strlen(t);
    return n >= 1 && n <= 249 && strcmp(t, ".") != 0 && strcmp(t, "..") != 0 &&
           strspn(t, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == n;
}

/* Checks the prewarm section and fills the derived values (the buffers).
 * 0, or -1 with why. */
static int s_check(const rf_config_t *cfg, char *dlq, size_t dlq_len, char *gw, size_t gw_len, char *why,
                   size_t why_len)
{
    const typeof(cfg->prewarm) *p = &cfg->prewarm;
    if (p->brokers == NULL || p->topic == NULL)
        return rf_why(why, why_len, "prewarm.brokers and prewarm.topic are required");
    if (!s_topic_ok(p->topic))
        return rf_why(why, why_len, "prewarm.topic: 1 to 249 of [A-Za-z0-9._-] expected");
    if (p->events_topic != NULL && !s_topic_ok(p->events_topic))
        return rf_why(why, why_len, "prewarm.events_topic: 1 to 249 of [A-Za-z0-9._-] expected");
    if (p->dead_letter_topic != NULL && !s_topic_ok(p->dead_letter_topic))
        return rf_why(why, why_len, "prewarm.dead_letter_topic: 1 to 249 of [A-Za-z0-9._-] expected");
    if (p->group == NULL || p->group[0] == '\0' || strlen(p->group) > 255)
        return rf_why(why, why_len, "prewarm.group: 1 to 255 bytes expected");
    if (p->dead_letter_topic != NULL)
        snprintf(dlq, dlq_len, "%s", p->dead_letter_topic);
    else if ((size_t)snprintf(dlq, dlq_len, "%s.dead-letter", p->topic) >= dlq_len || strlen(dlq) > 249)
        return rf_why(why, why_len, "prewarm.topic too long for the default dead-letter topic: set dead_letter_topic");
    const char *wh = p->events_webhook;
    size_t whl = wh ? strlen(wh) : 0;
    if (wh != NULL && strncmp(wh, "http://", 7) != 0 && strncmp(wh, "https://", 8) != 0 && strncmp(wh, "kafka://", 8) != 0 &&
        !(wh[0] == '/' && whl > 3 && strcmp(wh + whl - 3, ".js") == 0))
        return rf_why(why, why_len, "prewarm.events_webhook: an http(s):// URL, kafka://HOST:PORT[,...]/TOPIC or an absolute .js hook");
    if (p->events_topic != NULL && (strcmp(p->events_topic, p->topic) == 0 || strcmp(p->events_topic, dlq) == 0))
        return rf_why(why, why_len, "prewarm.events_topic must differ from topic and dead_letter_topic");
    if (strcmp(dlq, p->topic) == 0)
        return rf_why(why, why_len, "prewarm.dead_letter_topic must differ from topic");
    if (p->gateway_url != NULL) {
        if ((strncmp(p->gateway_url, "http://", 7) != 0 && strncmp(p->gateway_url, "https://", 8) != 0) ||
            strlen(p->gateway_url) >= gw_len)
            return rf_why(why, why_len, "prewarm.gateway_url: an http:// or https:// URL expected");
        snprintf(gw, gw_len, "%s", p->gateway_url);
    } else if (cfg->gateway.listen.port > 0) {
        snprintf(gw, gw_len, "http://127.0.0.1:%d", cfg->gateway.listen.port);
    } else {
        return rf_why(why, why_len, "prewarm.gateway_url is needed (no gateway.listen to default to)");
    }
    size_t gl = strlen(gw);
    while (gl > 0 && gw[gl - 1] == '/')
        gw[--gl] = '\0';
    return 0;
}

typedef struct {
    atomic_int stop;
    sigset_t sigs;
} s_sig_t;

/* Waits for SIGTERM / SIGINT (blocked in every thread) and sets stop. */
static void *s_signals(void *arg)
{
    s_sig_t *s = arg;
    while (!atomic_load(&s->stop)) {
        struct timespec ts = {0, 200 * 1000000};
        int sig = sigtimedwait(&s->sigs, NULL, &ts);
        if (sig == SIGTERM || sig == SIGINT) {
            rf_info("stopping (%s)", sig == SIGTERM ? "SIGTERM" : "SIGINT");
            atomic_store(&s->stop, 1);
        }
    }
    return NULL;
}

static int s_health(void *arg, char *buf, size_t len)
{
    s_sig_t *s = arg;
    if (atomic_load(&s->stop)) {
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
    rf_log_init("prewarm");
    char *err = NULL, why[512] = "", dlq[300], gw[600];
    rf_config_t *cfg = rf_config_load(path, &err);
    rf_metrics_t *reg = NULL;
    rf_httpd_t *httpd = NULL;
    pthread_t sig_th;
    bool sig_started = false, curl_started = false;
    s_sig_t sig = {.stop = 0};
    pw_metrics_t m = {0};
    if (cfg == NULL) {
        fprintf(stderr, "%s\n", err ? err : "invalid configuration");
        free(err);
        return 1;
    }
    rf_log_set_level(cfg->log.level);
    if (s_check(cfg, dlq, sizeof(dlq), gw, sizeof(gw), why, sizeof(why)) < 0) {
        fprintf(stderr, "%s: %s\n", path, why);
        goto cleanup;
    }
    if (test_only) {
        printf("%s: configuration OK (topic %s, group %s)\n", path, cfg->prewarm.topic, cfg->prewarm.group);
        rc = 0;
        goto cleanup;
    }
    /* Before any thread (librdkafka's too): only s_signals takes them. */
    sigemptyset(&sig.sigs);
    sigaddset(&sig.sigs, SIGTERM);
    sigaddset(&sig.sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sig.sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
    if ((reg = rf_metrics_new()) == NULL || s_declare(reg, &m) < 0) {
        rf_error("cannot set up metrics");
        goto cleanup;
    }
    rf_metrics_add_process_collector(reg);
    const rf_listen_t *ml = &cfg->prewarm.metrics_listen;
    if (ml->port > 0 && (httpd = rf_httpd_new(ml->host, ml->port, reg, s_health, &sig, &err)) == NULL) {
        rf_error("metrics_listen: %s", err ? err : "cannot listen");
        free(err);
        goto cleanup;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        rf_error("cannot initialise libcurl");
        goto cleanup;
    }
    curl_started = true;
    if (pthread_create(&sig_th, NULL, s_signals, &sig) != 0) {
        rf_error("cannot start the signal thread");
        goto cleanup;
    }
    sig_started = true;
    char outbox_in[700];
    snprintf(outbox_in, sizeof(outbox_in), "%s/%s", cfg->storgate_scheduler.state_dir, RF_OUTBOX_IN_DIR);
    pw_opts_t o = {.brokers = cfg->prewarm.brokers,
                   .topic = cfg->prewarm.topic,
                   .group = cfg->prewarm.group,
                   .dead_letter_topic = dlq,
                   .events_topic = cfg->prewarm.events_topic,
                   .events_webhook = cfg->prewarm.events_webhook,
                   .outbox_in = outbox_in,
                   .gateway_url = gw,
                   .concurrency = cfg->prewarm.concurrency,
                   .retries = cfg->prewarm.retries,
                   .timeout_ms = cfg->prewarm.timeout_ms,
                   .session_timeout_ms = cfg->prewarm.session_timeout_ms,
                   .m = &m,
                   .stop = &sig.stop};
    if (pw_run(&o, why, sizeof(why)) < 0) {
        rf_error("%s", why);
        goto cleanup;
    }
    rf_info("stopped");
    rc = 0;
cleanup:
    atomic_store(&sig.stop, 1);
    if (sig_started)
        pthread_join(sig_th, NULL);
    rf_httpd_destroy(&httpd);
    rf_metrics_destroy(&reg);
    if (curl_started)
        curl_global_cleanup();
    rf_config_destroy(&cfg);
    return rc;
}
