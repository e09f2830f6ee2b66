/*  rf_worker_app — the process around a worker service: command line,
 *  configuration, logs, the /metrics endpoint, signals, the bus worker
 *  (rf_worker) and an orderly shutdown. Each worker's main() names its
 *  service, its config section and its job function, and nothing else:
 *
 *    static const rf_worker_app_t app = {.name = "video-worker", .service = "video", ...};
 *    int main(int argc, char **argv) { return rf_worker_app_main(&app, argc, argv); }
 */
#ifndef RF_WORKER_APP_H
#define RF_WORKER_APP_H

#include <stdbool.h>

#include "rf_config.h"
#include "rf_worker.h"

typedef struct {
    const char *name;    /* the process's name in logs and usage: "image-worker" */
    const char *service; /* the bus service it serves: "image" */
    const char *section; /* its config section, in the usage text: "image_worker" */
    /* Its metrics address and job count in cfg (borrowed). */
    rf_listen_t *(*metrics_listen)(rf_config_t *cfg);
    int *(*jobs)(rf_config_t *cfg);
    /* After the config is loaded and jobs resolved (0 -> CPUs), before the
     * bus: libraries, options. Sets *arg, given to every job (and to
     * teardown). cfg is borrowed and outlives arg. 0, or -1 after logging. */
    int (*setup)(rf_config_t *cfg, void **arg);
    /* Frees what setup made (also after a failed setup, with its *arg). May be NULL. */
    void (*teardown)(void *arg);
    rf_worker_job_fn *job;
    bool own_refs; /* source refs go to the job as they are (rf_worker_own_refs) */
} rf_worker_app_t;

/* Runs the worker process: "-c FILE [-m HOST:PORT]". Returns the exit
 * status: 0 after a clean shutdown (SIGTERM/SIGINT), 1 on errors, 2 on bad
 * usage. */
int rf_worker_app_main(const rf_worker_app_t *app, int argc, char **argv);

#endif
