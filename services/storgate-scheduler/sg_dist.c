/*  sg_dist — with a redis:// lease, the leader hands a chunk's items out
 *  to every node (seed 003: "the leader hands items to scheduler nodes";
 *  "a dead node's work is redistributed by the leader"). sg.h.
 *
 *  Redis, under the lease's prefix:
 *    PREFIX:storgate:queue         list of items waiting (JSON)
 *    PREFIX:storgate:proc:NODE     items NODE took (a reliable queue:
 *                                  LMOVE from queue, LREM when done)
 *    PREFIX:storgate:alive:NODE    NODE's heartbeat (PX 3 s)
 *    PREFIX:storgate:nodes         the nodes seen
 *    PREFIX:storgate:chunk:ID      hash: left, failed
 *    PREFIX:storgate:chunkdone     IDs of chunks whose last item was just
 *                                  acknowledged: the leader's watcher pops
 *                                  them and wakes its main loop, so the next
 *                                  chunk is listed at once, not at the next
 *                                  200 ms tick (which capped a distributed
 *                                  run at one chunk per tick)
 *  Every node's puller thread takes items while its own queue has room and
 *  hands them to its item threads; an item done is acknowledged (LREM,
 *  then left - 1 only if the LREM found it). The leader requeues the items
 *  of a node whose heartbeat stopped: an item runs at most once more (the
 *  seed's warning), none is lost, and a late acknowledgement of a requeued
 *  item does not count twice.
 */
#include <dirent.h>
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rf_log.h"
#include "sg.h"

struct sg_dist_t {
    sg_node_t *n;
    char host[256];
    int port;
    char k_queue[200], k_proc[300], k_alive[300], k_nodes[200], k_done[200], prefix[100];
    pthread_mutex_t mu;   /* c_main: main thread and item threads (acks) */
    redisContext *c_main; /* leader pushes, heartbeats, reaping, acks */
    pthread_t puller, watcher;
    bool puller_started, watcher_started;
};

static redisContext *s_connect(sg_dist_t *d, redisContext **cp)
{
    if (*cp != NULL && (*cp)->err == 0)
        return *cp;
    if (*cp != NULL)
        redisFree(*cp);
    struct timeval tv = {2, 0};
    *cp = redisConnectWithTimeout(d->host, d->port, tv);
    if (*cp == NULL || (*cp)->err) {
        if (*cp != NULL)
            redisFree(*cp);
        *cp = NULL;
        return NULL;
    }
    redisSetTimeout(*cp, tv);
    return *cp;
}

/* Runs one command on the shared connection (under the mutex); the
 * reply (caller frees) or NULL. */
static redisReply *s_cmd(sg_dist_t *d, const char *fmt, ...)
{
    pthread_mutex_lock(&d->mu);
    redisContext *c = s_connect(d, &d->c_main);
    redisReply *r = NULL;
    if (c != NULL) {
        va_list ap;
        va_start(ap, fmt);
        r = redisvCommand(c, fmt, ap);
        va_end(ap);
    }
    pthread_mutex_unlock(&d->mu);
    return r;
}

/* The item a queue entry describes, or NULL (logged, dropped). */
static sg_item_t *s_item(sg_dist_t *d, const char *raw, size_t len)
{
    json_error_t jerr;
    json_t *j = json_loadb(raw, len, 0, &jerr);
    const char *id = NULL, *bucket = NULL, *key = NULL, *chunk = NULL;
    int ev = -1;
    sg_item_t *it = NULL;
    if (j == NULL || json_unpack(j, "{s:s, s:s, s:i, s:s, s:s}", "id", &id, "bucket", &bucket, "event", &ev, "key",
                                 &key, "chunk", &chunk) != 0)
        goto done;
    const rf_sg_bucket_t *b = rf_sgconf_bucket(d->n->sc, bucket, strlen(bucket));
    if (b == NULL || ev < 0 || (size_t)ev >= b->n_on_batch || strlen(key) > RF_SGFS_KEY_MAX || len >= sizeof(it->raw))
        goto done;
    const rf_sg_workflow_t *wf = rf_sgconf_workflow(b, b->on_batch[ev].workflow);
    if (wf == NULL || (it = calloc(1, sizeof(*it))) == NULL)
        goto done;
    it->bucket = b;
    it->event = &b->on_batch[ev];
    it->workflow = wf;
    snprintf(it->id, sizeof(it->id), "%s", id);
    snprintf(it->key, sizeof(it->key), "%s", key);
    snprintf(it->dist_chunk, sizeof(it->dist_chunk), "%s", chunk);
    it->again = json_is_integer(json_object_get(j, "again"));
    memcpy(it->raw, raw, len);
    it->raw[len] = '\0';
done:
    if (it == NULL)
        rf_warn("storgate dist: a queued item this node cannot run was dropped: %.200s", raw);
    json_decref(j);
    return it;
}

/* Takes items while this node's own queue has room for them. */
static void *s_puller(void *arg)
{
    sg_dist_t *d = arg;
    redisContext *c = NULL;
    while (!atomic_load(&d->n->stopping)) {
        /* wait for room in this node's queue: an item thread taking an item
         * signals it (a fixed nap here capped a node at ~10 items / 100 ms) */
        pthread_mutex_lock(&d->n->mu);
        if ((d->n->queued >= d->n->nthreads || d->n->throttled) && !atomic_load(&d->n->stopping)) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 100 * 1000000;
            if (ts.tv_nsec >= 1000000000)
                ts.tv_sec++, ts.tv_nsec -= 1000000000;
            pthread_cond_timedwait(&d->n->cv, &d->n->mu, &ts);
        }
        bool room = d->n->queued < d->n->nthreads && !d->n->throttled;
        pthread_mutex_unlock(&d->n->mu);
        if (!room)
            continue;
        if (s_connect(d, &c) == NULL) {
            struct timespec nap = {0, 100 * 1000000};
            nanosleep(&nap, NULL);
            continue;
        }
        redisReply *r = redisCommand(c, "BLMOVE %s %s LEFT RIGHT 0.5", d->k_queue, d->k_proc);
        if (r != NULL && r->type == REDIS_REPLY_STRING) {
            sg_item_t *it = s_item(d, r->str, r->len);
            if (it != NULL) {
                rf_info("storgate %s: taken from the shared queue", it->id);
                sg_queue_push(d->n, it);
            } else { /* not runnable here: out of the way, counted as failed */
                redisReply *x = redisCommand(c, "LREM %s 1 %b", d->k_proc, r->str, r->len);
                freeReplyObject(x);
            }
        }
        freeReplyObject(r);
    }
    if (c != NULL)
        redisFree(c);
    return NULL;
}

/* While this node leads: wakes the main loop (SIGUSR2) when an
 * acknowledgement, on any node, finished a chunk. */
static void *s_watcher(void *arg)
{
    sg_dist_t *d = arg;
    redisContext *c = NULL;
    while (!atomic_load(&d->n->stopping)) {
        if (!atomic_load(&d->n->leading) || s_connect(d, &c) == NULL) {
            struct timespec nap = {0, 100 * 1000000};
            nanosleep(&nap, NULL);
            continue;
        }
        redisReply *r = redisCommand(c, "BLPOP %s 0.5", d->k_done);
        if (r != NULL && r->type == REDIS_REPLY_ARRAY)
            pthread_kill(d->n->main_thread, SIGUSR2);
        freeReplyObject(r);
    }
    if (c != NULL)
        redisFree(c);
    return NULL;
}

/* Moves every item of a node's taken list back to the queue, each marked
 * "again" (it may have run, up to any step, before its node stopped: see
 * sg_item_run). One script per item, so an item is in exactly one list
 * at every moment. Returns how many moved. */
static int s_requeue(sg_dist_t *d, const char *from)
{
    static const char lua[] = "local v = redis.call('LPOP', KEYS[1]) "
                              "if not v then return false end "
                              "local ok, o = pcall(cjson.decode, v) "
                              "if ok and type(o) == 'table' then o['again'] = 1; v = cjson.encode(o) end "
                              "redis.call('RPUSH', KEYS[2], v) return 1";
    int moved = 0;
    for (;;) {
        redisReply *r = s_cmd(d, "EVAL %s 2 %s %s", lua, from, d->k_queue);
        bool more = r != NULL && r->type == REDIS_REPLY_INTEGER && r->integer == 1;
        if (r != NULL && r->type == REDIS_REPLY_ERROR)
            rf_warn("storgate dist: cannot hand out %s's items again: %s", from, r->str);
        freeReplyObject(r);
        if (!more)
            return moved;
        moved++;
    }
}

sg_dist_t *sg_dist_new(sg_node_t *n, const char *host, int port, const char *prefix)
{
    sg_dist_t *d = calloc(1, sizeof(*d));
    if (d == NULL)
        return NULL;
    d->n = n;
    snprintf(d->host, sizeof(d->host), "%s", host);
    d->port = port;
    snprintf(d->prefix, sizeof(d->prefix), "%s", prefix);
    snprintf(d->k_queue, sizeof(d->k_queue), "%s:storgate:queue", prefix);
    snprintf(d->k_proc, sizeof(d->k_proc), "%s:storgate:proc:%s", prefix, n->node);
    snprintf(d->k_alive, sizeof(d->k_alive), "%s:storgate:alive:%s", prefix, n->node);
    snprintf(d->k_nodes, sizeof(d->k_nodes), "%s:storgate:nodes", prefix);
    snprintf(d->k_done, sizeof(d->k_done), "%s:storgate:chunkdone", prefix);
    pthread_mutex_init(&d->mu, NULL);
    return d;
}

int sg_dist_start(sg_dist_t *d)
{
    /* what this node had taken before a restart goes back to the queue */
    int moved = s_requeue(d, d->k_proc);
    if (moved > 0)
        rf_info("storgate dist: %d item(s) this node had taken before it stopped handed out again", moved);
    if (pthread_create(&d->puller, NULL, s_puller, d) != 0)
        return -1;
    d->puller_started = true;
    if (pthread_create(&d->watcher, NULL, s_watcher, d) != 0)
        return -1;
    d->watcher_started = true;
    return 0;
}

void sg_dist_destroy(sg_dist_t **self_p)
{
    if (self_p == NULL || *self_p == NULL)
        return;
    sg_dist_t *d = *self_p;
    if (d->puller_started)
        pthread_join(d->puller, NULL); /* it sees n->stopping within half a second */
    if (d->watcher_started)
        pthread_join(d->watcher, NULL); /* the same */
    if (d->c_main != NULL)
        redisFree(d->c_main);
    pthread_mutex_destroy(&d->mu);
    free(d);
    *self_p = NULL;
}

void sg_dist_heartbeat(sg_dist_t *d)
{
    freeReplyObject(s_cmd(d, "SET %s 1 PX 3000", d->k_alive));
    freeReplyObject(s_cmd(d, "SADD %s %s", d->k_nodes, d->n->node));
}

int sg_dist_push(sg_dist_t *d, sg_chunk_t *c, sg_item_t **items, int n, size_t event_index)
{
    char kc[300];
    snprintf(kc, sizeof(kc), "%s:storgate:chunk:%s", d->prefix, c->id);
    redisReply *r = s_cmd(d, "HSET %s left %d failed 0", kc, n);
    int rc = r != NULL && r->type != REDIS_REPLY_ERROR ? 0 : -1;
    freeReplyObject(r);
    freeReplyObject(s_cmd(d, "EXPIRE %s 604800", kc)); /* a week: a stalled run's counter does not stay forever */
    for (int i = 0; rc == 0 && i < n; i++) {
        json_t *j = json_pack("{s:s, s:s, s:i, s:s, s:s}", "id", items[i]->id, "bucket", items[i]->bucket->name,
                              "event", (int)event_index, "key", items[i]->key, "chunk", c->id);
        char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
        json_decref(j);
        r = text ? s_cmd(d, "RPUSH %s %s", d->k_queue, text) : NULL;
        rc = r != NULL && r->type == REDIS_REPLY_INTEGER ? 0 : -1;
        freeReplyObject(r);
        free(text);
    }
    return rc;
}

int sg_dist_chunk_left(sg_dist_t *d, sg_chunk_t *c)
{
    char kc[300];
    snprintf(kc, sizeof(kc), "%s:storgate:chunk:%s", d->prefix, c->id);
    redisReply *r = s_cmd(d, "HMGET %s left failed", kc);
    int left = 1; /* unknown (Redis away): not done */
    if (r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 2 && r->element[0]->type == REDIS_REPLY_STRING) {
        left = atoi(r->element[0]->str);
        if (r->element[1]->type == REDIS_REPLY_STRING)
            c->failed = atoi(r->element[1]->str);
    }
    freeReplyObject(r);
    return left;
}

void sg_dist_ack(sg_dist_t *d, sg_item_t *it, bool ok)
{
    redisReply *r = s_cmd(d, "LREM %s 1 %s", d->k_proc, it->raw);
    bool mine = r != NULL && r->type == REDIS_REPLY_INTEGER && r->integer == 1;
    freeReplyObject(r);
    if (!mine) { /* requeued meanwhile (we were taken for dead): its new taker counts it */
        rf_warn("storgate %s: done here, but it had been handed to another node meanwhile", it->id);
        return;
    }
    char kc[300];
    snprintf(kc, sizeof(kc), "%s:storgate:chunk:%s", d->prefix, it->dist_chunk);
    if (!ok)
        freeReplyObject(s_cmd(d, "HINCRBY %s failed 1", kc));
    r = s_cmd(d, "HINCRBY %s left -1", kc);
    if (r != NULL && r->type == REDIS_REPLY_INTEGER && r->integer == 0) {
        /* the chunk's last item: tell the leader (kept short, in case no
         * node leads to pop them) */
        freeReplyObject(s_cmd(d, "RPUSH %s %s", d->k_done, it->dist_chunk));
        freeReplyObject(s_cmd(d, "LTRIM %s -64 -1", d->k_done));
    }
    freeReplyObject(r);
}

/* The webhooks a dead node left in its outbox (when STATE is shared, as on
 * one host or NFS) move into this node's: renamed, so each is delivered by
 * one node. Returns how many. */
static int s_adopt_outbox(sg_dist_t *d, const char *node)
{
    if (strpbrk(node, "/") != NULL || strcmp(node, ".") == 0 || strcmp(node, "..") == 0)
        return 0;
    char from[700], to[700];
    snprintf(from, sizeof(from), "%s/outbox/%s", d->n->state_dir, node);
    DIR *dir = opendir(from);
    if (dir == NULL)
        return 0;
    int n = 0;
    for (struct dirent *de; (de = readdir(dir)) != NULL;) {
        size_t l = strlen(de->d_name);
        if (de->d_name[0] == '.' || l < 6 || strcmp(de->d_name + l - 5, ".json") != 0)
            continue;
        char a[1000], b[1000];
        snprintf(a, sizeof(a), "%s/%s", from, de->d_name);
        snprintf(to, sizeof(to), "%s/outbox/%s", d->n->state_dir, d->n->node);
        snprintf(b, sizeof(b), "%s/%s", to, de->d_name);
        n += rename(a, b) == 0;
    }
    closedir(dir);
    return n;
}

void sg_dist_reap(sg_dist_t *d)
{
    redisReply *nodes = s_cmd(d, "SMEMBERS %s", d->k_nodes);
    for (size_t i = 0; nodes != NULL && nodes->type == REDIS_REPLY_ARRAY && i < nodes->elements; i++) {
        const char *node = nodes->element[i]->str;
        if (node == NULL || strcmp(node, d->n->node) == 0)
            continue;
        char ka[300], kp[300];
        snprintf(ka, sizeof(ka), "%s:storgate:alive:%s", d->prefix, node);
        snprintf(kp, sizeof(kp), "%s:storgate:proc:%s", d->prefix, node);
        redisReply *r = s_cmd(d, "EXISTS %s", ka);
        bool alive = r != NULL && r->type == REDIS_REPLY_INTEGER && r->integer == 1;
        freeReplyObject(r);
        if (alive)
            continue;
        int moved = s_requeue(d, kp);
        freeReplyObject(s_cmd(d, "SREM %s %s", d->k_nodes, node));
        int adopted = s_adopt_outbox(d, node);
        rf_warn("storgate dist: node %s stopped answering: %d of its item(s) handed out again, %d of its webhook(s) "
                "adopted",
                node, moved, adopted);
    }
    freeReplyObject(nodes);
}
