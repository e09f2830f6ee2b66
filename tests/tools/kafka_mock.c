/*  refract-kafka-mock — a Kafka cluster for tests, from librdkafka's mock
 *  cluster (rdkafka_mock.h): real Kafka protocol over loopback TCP, in
 *  memory, no ZooKeeper, no JVM. Debian has no Kafka broker package; this
 *  lets the storgate scheduler's kafka:// webhooks be tested against
 *  something kcat and python3-confluent-kafka also talk to.
 *
 *    refract-kafka-mock [BROKERS [TOPIC…]]
 *
 *  BROKERS (default 1) brokers listen on 127.0.0.1, on ports of the
 *  kernel's choosing. The first line on stdout is the bootstrap list
 *  ("127.0.0.1:PORT,…"), flushed; then each TOPIC is created with 4
 *  partitions (others are created when first produced to, also with 4).
 *  It runs until SIGTERM or SIGINT. Outage tests:
 *    SIGUSR1  every broker down (connections closed, new ones refused);
 *             "down" is printed on stdout once done
 *    SIGUSR2  every broker up again; "up" is printed
 *  The mock has no leader failover, no admin API and keeps nothing on disk.
 */
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Every broker (ids 1..n) down or up. */
static void s_set(rd_kafka_mock_cluster_t *mc, int n, int up)
{
    for (int id = 1; id <= n; id++)
        if (up)
            rd_kafka_mock_broker_set_up(mc, id);
        else
            rd_kafka_mock_broker_set_down(mc, id);
    printf("%s\n", up ? "up" : "down");
    fflush(stdout);
}

int main(int argc, char **argv)
{
    int rc = 1;
    int n = argc > 1 ? atoi(argv[1]) : 1;
    char err[512];
    rd_kafka_t *rk = NULL;
    rd_kafka_mock_cluster_t *mc = NULL;
    if (n < 1 || n > 16) {
        fprintf(stderr, "usage: refract-kafka-mock [BROKERS (1-16) [TOPIC...]]\n");
        return 2;
    }
    /* Signals are taken with sigwait: blocked here, before librdkafka
     * starts its threads, so that they inherit the mask. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "log_level", "3", err, sizeof(err)) != RD_KAFKA_CONF_OK)
        fprintf(stderr, "kafka-mock: %s\n", err);
    /* The handle the mock cluster needs for its bookkeeping; it sends nothing. */
    if ((rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err))) == NULL) {
        fprintf(stderr, "kafka-mock: %s\n", err);
        rd_kafka_conf_destroy(conf);
        goto cleanup;
    }
    if ((mc = rd_kafka_mock_cluster_new(rk, n)) == NULL) {
        fprintf(stderr, "kafka-mock: cannot create the mock cluster\n");
        goto cleanup;
    }
    printf("%s\n", rd_kafka_mock_cluster_bootstraps(mc));
    fflush(stdout);
    for (int i = 2; i < argc; i++) {
        rd_kafka_resp_err_t e = rd_kafka_mock_topic_create(mc, argv[i], 4, 1);
        if (e != RD_KAFKA_RESP_ERR_NO_ERROR)
            fprintf(stderr, "kafka-mock: topic %s: %s\n", argv[i], rd_kafka_err2str(e));
    }
    for (;;) {
        int sig = 0;
        if (sigwait(&set, &sig) != 0)
            continue;
        if (sig == SIGUSR1 || sig == SIGUSR2)
            s_set(mc, n, sig == SIGUSR2);
        else
            break;
    }
    rc = 0;
cleanup:
    if (mc != NULL)
        rd_kafka_mock_cluster_destroy(mc);
    if (rk != NULL)
        rd_kafka_destroy(rk);
    return rc;
}
