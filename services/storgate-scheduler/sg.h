/*  sg — refract-storgate-scheduler: storgate's batches and workflows (seed 003).
 *
 *  One process per node. The leader (sg_leader.c) evaluates each bucket's
 *  onBatch schedules (rf_cron), lists the batch's path in chunks of
 *  chunkSize (sg_batch.c), filters the items and queues them; `jobs` item
 *  threads run each item's workflow (sg_item.c: tasks, savePath,
 *  whenExist, onComplete) and queue its webhooks in the persistent outbox
 *  (sg_outbox.c), which a delivery thread empties at least once.
 *
 *  An item's path through the process, one way:
 *    schedule fires -> chunk listed (onChunkExtracted) -> item queued ->
 *    tasks -> onComplete.src -> onItemCompleted | onItemAborted ->
 *    chunk done (cursor saved, onChunkCompleted)
 *  Every log line of an item carries its id (BATCHRUN-N), from listing to
 *  webhook.
 */
#ifndef SG_H
#define SG_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "rf_config.h"
#include "rf_metrics.h"
#include "rf_sgconf.h"
#include "rf_sgfs.h"

typedef struct sg_outbox_t sg_outbox_t;
typedef struct sg_leader_t sg_leader_t;
typedef struct sg_bus_t sg_bus_t;
typedef struct sg_events_t sg_events_t;
typedef struct sg_throttle_t sg_throttle_t;
typedef struct sg_dist_t sg_dist_t;

/* Metrics of the scheduler, declared in main.c. */
typedef struct {
    rf_metric_t *items;     /* refract_storgate_items_total{bucket,workflow,outcome} */
    rf_metric_t *batches;   /* refract_storgate_batches_total{bucket,outcome} */
    rf_metric_t *leader;    /* refract_storgate_leader (1 while this node leads) */
    rf_metric_t *webhooks;  /* refract_storgate_webhooks_total{outcome} */
    rf_metric_t *outbox;    /* refract_storgate_outbox_pending */
    rf_metric_t *queue;     /* refract_storgate_items_queued */
    rf_metric_t *throttled; /* refract_storgate_throttled (1 while items are paused) */
    rf_metric_t *cpu;       /* refract_storgate_cpu_percent (the window's average) */
} sg_metrics_t;

extern sg_metrics_t sg_m;

/* One item of a batch chunk. */
typedef struct sg_item_t {
    struct sg_item_t *next;
    const rf_sg_bucket_t *bucket;
    const rf_sg_event_t *event; /* the onBatch (or onPut …) that raised it */
    const rf_sg_workflow_t *workflow;
    struct sg_chunk_t *chunk;      /* NULL for items not from a batch */
    char id[128];                  /* BATCHRUN-N: in every log line and webhook */
    char key[RF_SGFS_KEY_MAX + 1]; /* the bucket key, no leading '/' */
    bool deleted;                  /* onDelete: the source is gone, its outputs go too */
    bool again;                    /* handed out again after its node stopped: it may have run */
    char event_file[96];           /* an event's file in STATE/events ("" for batch items) */
    char dist_chunk[128];          /* handed out (sg_dist.c): its chunk, and */
    char raw[3200];                /* its queue entry as taken ("" for items run where listed) */
    char dist_file[160];           /* file:// leases: its file's name in the queue */
} sg_item_t;

/* A listed chunk: its items are done when `left` reaches 0. */
typedef struct sg_chunk_t {
    struct sg_batch_t *batch;
    atomic_int left;
    int n, failed;
    bool local;                     /* its items run on the leader's own queue (no Redis) */
    char last[RF_SGFS_KEY_MAX + 1]; /* the cursor after this chunk */
    char id[128];
} sg_chunk_t;

/* The process. */
typedef struct {
    const rf_config_t *cfg;
    const rf_sg_conf_t *sc;
    char node[128];
    char state_dir[512];
    sg_outbox_t *outbox;
    sg_leader_t *leader;
    sg_bus_t *bus; /* NULL without storgate_scheduler.bus_endpoint */
    sg_events_t *events;
    sg_dist_t *dist; /* redis:// lease: items handed out to every node; NULL otherwise */
    /* the item queue */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    sg_item_t *head, *tail;
    int queued;
    atomic_int stopping;
    bool throttled; /* under mu: item threads take no item while set */
    pthread_t *threads;
    int nthreads;
    pthread_t main_thread; /* woken (SIGUSR2) when a chunk's last item is done */
    atomic_int leading;    /* set by the main loop: this node holds the lease */
} sg_node_t;

/* ---- the item queue and workflows (sg_item.c) ---- */

void sg_queue_push(sg_node_t *n, sg_item_t *it);
/* Item threads: run until n->stopping. */
void *sg_item_thread(void *arg);
/* Runs the workflow of one item; 0 done, -1 aborted (logged, webhooked). */
int sg_item_run(sg_node_t *n, sg_item_t *it);
/* A held webhook's fate (sg_settle_fn; arg: the node): delivered when its
 * item's source is gone (its onComplete ran), dropped when the source is
 * there (the item runs again), left when that cannot be told. */
int sg_item_settle(void *arg, const char *payload);
/* Takes a dead node's webhooks into this node's outbox (sg_outbox_adopt,
 * held ones settled). Returns how many. */
int sg_item_adopt(sg_node_t *n, const char *from_node);

/* ---- scan events (sg_scan.c): onPut / onDelete from what a batch run lists ---- */

typedef struct sg_scan_t sg_scan_t;
/* A run's scan of onBatch `index` of b: NULL when b has neither onPut nor
 * onDelete enabled, or for a `resumed` run (another leader listed part of
 * it). Loads the last completed run's snapshot. */
sg_scan_t *sg_scan_begin(sg_node_t *n, const rf_sg_bucket_t *b, size_t index, bool resumed);
/* A key the run listed (it passed the batch's filter): onPut when it is new
 * or changed since the snapshot. NULL s: nothing. */
void sg_scan_saw(sg_scan_t *s, const char *key, uint64_t size, int64_t mtime_ns);
/* The run ended: `completed` raises onDelete for the snapshot's keys gone
 * since and saves the new snapshot; otherwise nothing. Frees *self_p. */
void sg_scan_end(sg_scan_t **self_p, bool completed);

/* ---- batches (sg_batch.c) ---- */

typedef struct sg_batch_t sg_batch_t;
/* Every enabled onBatch of every bucket, with its next run time. */
typedef struct sg_batches_t sg_batches_t;
sg_batches_t *sg_batches_new(sg_node_t *n, char *why, size_t why_len);
void sg_batches_destroy(sg_batches_t **self_p);
/* Called by the main loop: takes or renews the lease, then (leader only)
 * starts batches whose time has come (or all enabled ones when `now_all`)
 * and advances running ones by a chunk when the previous chunk is done.
 * Returns whether this node leads. */
bool sg_batches_tick(sg_batches_t *self, bool now_all);
/* Called by item threads when an item of a chunk is finished. */
void sg_chunk_item_done(sg_node_t *n, sg_chunk_t *c, bool ok);

/* ---- events from the gateway (sg_events.c) ---- */

sg_events_t *sg_events_new(sg_node_t *n);
void sg_events_destroy(sg_events_t **self_p);
/* Queues the items of new event files. Leader only. */
void sg_events_tick(sg_events_t *e);
/* An event's item is over: its file goes. */
void sg_events_done(sg_events_t *e, const char *name);

/* ---- items handed out to every node (sg_dist.c; redis:// and file:// leases) ---- */

sg_dist_t *sg_dist_new(sg_node_t *n, const char *host, int port, const char *prefix);
/* The same through files in dir (beside a file:// lease: one host, or NFS). */
sg_dist_t *sg_dist_new_files(sg_node_t *n, const char *dir);
/* Hands this node's own taken items back (a restart), starts its puller. */
int sg_dist_start(sg_dist_t *d);
void sg_dist_destroy(sg_dist_t **self_p); /* after n->stopping is set */
void sg_dist_heartbeat(sg_dist_t *d);
/* Leader: queues a chunk's items for every node; 0, or -1 (Redis away). */
int sg_dist_push(sg_dist_t *d, sg_chunk_t *c, sg_item_t **items, int n, size_t event_index);
/* Leader: items of the chunk not done yet (c->failed updated). */
int sg_dist_chunk_left(sg_dist_t *d, sg_chunk_t *c);
/* An item this node took is over. */
void sg_dist_ack(sg_dist_t *d, sg_item_t *it, bool ok);
/* Leader: hands out again the items of nodes whose heartbeat stopped. */
void sg_dist_reap(sg_dist_t *d);

/* The lease's Redis (host, port, key prefix) when it is redis://. */
bool sg_leader_redis(sg_leader_t *l, const char **host, int *port, const char **prefix);
/* The lease file's path when it is file://. */
bool sg_leader_file(sg_leader_t *l, const char **path);

/* ---- throttling (sg_throttle.c) ---- */

sg_throttle_t *sg_throttle_new(const rf_sg_conf_t *sc);
void sg_throttle_destroy(sg_throttle_t **self_p);
/* Samples the CPU; returns whether items should pause now. */
bool sg_throttle_tick(sg_throttle_t *t);

/* ---- the outbox (sg_outbox.c) ---- */

/* Opens (creating) STATE/outbox/NODE and starts the delivery thread. */
sg_outbox_t *sg_outbox_new(const char *state_dir, const char *node, char *why, size_t why_len);
void sg_outbox_destroy(sg_outbox_t **self_p);
/* Queues a webhook: target (an http(s):// URL, an absolute .js script path
 * or kafka://BROKERS/TOPIC), payload JSON text (copied), its idempotency key. Durable when it
 * returns 0 (written and fsynced). */
int sg_outbox_put(sg_outbox_t *o, const char *target, const char *key, const char *payload);
/* Runs the script hook at `path` (a ".js" target, sg_hook.c) for one
 * webhook; curl is the delivery thread's CURL handle. true = delivered. */
bool sg_hook_run(void *curl, const char *path, const char *key, const char *payload, char *why, size_t why_len);
/* A held webhook's fate, from its payload (JSON text, borrowed): 1
 * deliver it, 0 drop it, -1 leave it for later. */
typedef int(sg_settle_fn)(void *arg, const char *payload);
/* The webhooks a dead node (from_node) left in its outbox, when STATE is
 * shared (one host, NFS), move into to_node's: renamed, so each is
 * delivered by one node; its held ones as settle() says. Returns how many. */
int sg_outbox_adopt(const char *state_dir, const char *from_node, const char *to_node, sg_settle_fn *settle, void *arg);
/* A webhook that is not delivered until released (an item's, written
 * before its onComplete removes the source, so that a node killed between
 * the two leaves it behind, not nothing). Its file name into name (cap at
 * least 80). 0 or -1. */
int sg_outbox_hold(sg_outbox_t *o, const char *target, const char *key, const char *payload, char *name, size_t cap);
/* deliver: the held webhook is due now; else it is dropped. 0, or -1
 * (errno; ENOENT: another node settled it, as after a pause past the term). */
int sg_outbox_release(sg_outbox_t *o, const char *name, bool deliver);
/* The webhooks this outbox holds from an earlier run of this node, as
 * settle() says; called before any item runs. Returns how many are due. */
int sg_outbox_settle(sg_outbox_t *o, sg_settle_fn *settle, void *arg);
/* Deliveries waiting: the outbox's files, counted (for the gauge, at scrape time). */
int sg_outbox_pending(sg_outbox_t *o);

/* ---- leadership (sg_leader.c) ---- */

/* url: distribution.leader.url (NULL or meta.enable false: always leader). */
sg_leader_t *sg_leader_new(const rf_sg_conf_t *sc, const char *node, const char *state_dir, char *why, size_t why_len);
void sg_leader_destroy(sg_leader_t **self_p);
/* Acquires or renews the lease; true while this node leads. Its fencing
 * token (increasing with each new term) in *token. */
bool sg_leader_tick(sg_leader_t *l, uint64_t *token);
/* The node whose expired lease this node's last tick took over (an
 * https:// lease, which keeps no list of live nodes: its holder is the one
 * node known to have stopped), or NULL. Borrowed until the next tick. */
const char *sg_leader_took_from(sg_leader_t *l);
/* Saves a batch's progress (`name`: "BUCKET.INDEX", `text` copied) only if
 * the lease still holds `token`, in one critical section with that check.
 * 0 saved; -1 refused (errno EPERM: the lease moved on) or failed. */
int sg_leader_save(sg_leader_t *l, uint64_t token, const char *name, const char *text);
/* The progress saved for `name` (malloc'd; caller frees), or NULL. */
char *sg_leader_load(sg_leader_t *l, const char *name);

/* ---- transforms over the bus (sg_bus.c) ---- */

sg_bus_t *sg_bus_new(const rf_config_t *cfg, rf_metrics_t *metrics, char *why, size_t why_len);
void sg_bus_destroy(sg_bus_t **self_p);
/* Frees the calling thread's submitter (before the broker goes). */
void sg_bus_thread_end(void);
/* Runs chain (borrowed; the worker's JSON chain, rf_sgfunc_job) on
 * `service`'s worker over the file at path; the result's bytes in *out
 * (malloc'd) and its length. Blocks the calling item thread up to
 * timeout_s. 0, or -1 with why. */
int sg_bus_transform(sg_bus_t *b, const char *service, json_t *chain, const char *path, const char *id, int timeout_s,
                     void **out, size_t *out_len, char *why, size_t why_len);

#endif
