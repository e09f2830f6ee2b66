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
 *
 *  With a file:// lease the same is done with files in LEASE.dist/, which
 *  every node sees (one host, or NFS as in the seed's example):
 *    queue/CHUNK~N.json      an item waiting (written, then renamed in)
 *    proc/NODE/CHUNK~N.json  an item NODE took: rename(2) from queue/, so
 *                            one node wins it; removed when done
 *    alive/NODE              NODE's heartbeat: its mtime, refreshed 5 times
 *                            a second; older than 3 s is a dead node
 *    failed/CHUNK            one byte per failed item of the chunk
 *  A chunk's items left are its files in queue/ and proc/ (the leader
 *  counts them at its tick); a dead node's proc/ files go back to queue/,
 *  marked "again", and its late acknowledgement finds its file gone.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

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
    /* file:// leases: items as files (see above); files true */
    bool files;
    char dir[800], queue[820], proc_dir[820], proc[1000], alive_dir[820], alive[1000], failed[820];
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

/* Whether this node's queue has room for an item, after waiting up to
 * 100 ms for it: an item thread taking an item signals it (a fixed nap
 * here capped a node at ~10 items / 100 ms). */
static bool s_room(sg_dist_t *d)
{
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
    return room;
}

/* Takes items while this node's own queue has room for them. */
static void *s_puller(void *arg)
{
    sg_dist_t *d = arg;
    redisContext *c = NULL;
    while (!atomic_load(&d->n->stopping)) {
        if (!s_room(d))
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

/* ---- file:// leases: items as files ----------------------------------------------------- */

static void s_nap_ms(long ms)
{
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000};
    nanosleep(&t, NULL);
}

/* A file name for key made of [A-Za-z0-9._-] (others become '_'). */
static void s_safe(const char *key, char *out, size_t len)
{
    size_t i = 0;
    for (; key[i] != '\0' && i + 1 < len; i++) {
        char ch = key[i];
        out[i] = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '.' ||
                         ch == '-' || ch == '_'
                     ? ch
                     : '_';
    }
    out[i] = '\0';
}

/* Writes text as dir/name: a temporary name first, then renamed in, so a
 * reader sees it whole or not at all. 0 or -1. */
static int s_put_file(const char *dir, const char *name, const char *text)
{
    char tmp[1200], dst[1200];
    snprintf(tmp, sizeof(tmp), "%s/.%s.%ld.tmp", dir, name, (long)getpid());
    snprintf(dst, sizeof(dst), "%s/%s", dir, name);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    size_t len = strlen(text);
    bool ok = write(fd, text, len) == (ssize_t)len;
    ok = close(fd) == 0 && ok;
    if (!ok || rename(tmp, dst) != 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

/* Reads a small file (an item's entry) into buf; its length or -1. */
static ssize_t s_get_file(const char *path, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, cap - 1);
    close(fd);
    if (n >= 0)
        buf[n] = '\0';
    return n;
}

/* Moves every item in from_dir back to the queue, each marked "again".
 * Written to the queue before it leaves from_dir: a crash between the two
 * runs it once more, never loses it. Returns how many moved. */
static int s_f_requeue(sg_dist_t *d, const char *from_dir)
{
    DIR *dir = opendir(from_dir);
    if (dir == NULL)
        return 0;
    int moved = 0;
    for (struct dirent *de; (de = readdir(dir)) != NULL;) {
        if (de->d_name[0] == '.')
            continue;
        char path[1300], raw[3200];
        snprintf(path, sizeof(path), "%s/%s", from_dir, de->d_name);
        ssize_t n = s_get_file(path, raw, sizeof(raw));
        json_t *j = n > 0 ? json_loadb(raw, (size_t)n, 0, NULL) : NULL;
        char *text = NULL;
        if (j != NULL && json_object_set_new(j, "again", json_integer(1)) == 0)
            text = json_dumps(j, JSON_COMPACT);
        json_decref(j);
        if (text != NULL && s_put_file(d->queue, de->d_name, text) == 0) {
            unlink(path);
            moved++;
        } else {
            rf_warn("storgate dist: cannot hand %s out again: %s", path, strerror(errno));
        }
        free(text);
    }
    closedir(dir);
    return moved;
}

/* Counts one failed item of chunk (its safe name): a byte more in failed/CHUNK. */
static void s_f_failed(sg_dist_t *d, const char *chunk)
{
    char fp[1100];
    snprintf(fp, sizeof(fp), "%s/%s", d->failed, chunk);
    int fd = open(fp, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0 || write(fd, "x", 1) != 1)
        rf_warn("storgate dist: cannot count a failed item in %s", fp);
    if (fd >= 0)
        close(fd);
}

/* Takes the first waiting item it can win (rename into its proc/): the
 * item, or NULL when none is waiting. */
static sg_item_t *s_f_take(sg_dist_t *d)
{
    DIR *dir = opendir(d->queue);
    if (dir == NULL)
        return NULL;
    sg_item_t *it = NULL;
    for (struct dirent *de; it == NULL && (de = readdir(dir)) != NULL;) {
        if (de->d_name[0] == '.' || strlen(de->d_name) >= sizeof(it->dist_file))
            continue;
        char from[1300], to[1300], raw[3200];
        snprintf(from, sizeof(from), "%s/%s", d->queue, de->d_name);
        snprintf(to, sizeof(to), "%s/%s", d->proc, de->d_name);
        if (rename(from, to) != 0)
            continue; /* another node won it */
        ssize_t n = s_get_file(to, raw, sizeof(raw));
        it = n > 0 ? s_item(d, raw, (size_t)n) : NULL;
        if (it == NULL) { /* not runnable here: out of the way, counted as failed */
            char chunk[160];
            snprintf(chunk, sizeof(chunk), "%.150s", de->d_name);
            char *sep = strstr(chunk, "~");
            if (sep != NULL)
                *sep = '\0';
            s_f_failed(d, chunk);
            unlink(to);
            continue;
        }
        snprintf(it->dist_file, sizeof(it->dist_file), "%.159s", de->d_name);
    }
    closedir(dir);
    return it;
}

static void *s_f_puller(void *arg)
{
    sg_dist_t *d = arg;
    while (!atomic_load(&d->n->stopping)) {
        if (!s_room(d))
            continue;
        sg_item_t *it = s_f_take(d);
        if (it == NULL) {
            s_nap_ms(50); /* nothing waiting: look again soon */
            continue;
        }
        rf_info("storgate %s: taken from the shared queue", it->id);
        sg_queue_push(d->n, it);
    }
    return NULL;
}

/* Entries (items) in dir, not counting dot files. */
static int s_f_entries(const char *dir_path)
{
    DIR *dir = opendir(dir_path);
    int n = 0;
    for (struct dirent *de; dir != NULL && (de = readdir(dir)) != NULL;)
        n += de->d_name[0] != '.';
    if (dir != NULL)
        closedir(dir);
    return n;
}

/* While this node leads: wakes the main loop (SIGUSR2) when the last item
 * waiting or taken anywhere is done, so the next chunk is listed at once
 * rather than at the next 200 ms tick (other nodes cannot signal this
 * process: they may be on other hosts). Looks every 20 ms. */
static void *s_f_watcher(void *arg)
{
    sg_dist_t *d = arg;
    char procs[820], path[1100];
    snprintf(procs, sizeof(procs), "%s/proc", d->dir);
    int before = 0;
    while (!atomic_load(&d->n->stopping)) {
        s_nap_ms(20);
        if (!atomic_load(&d->n->leading))
            continue;
        int n = s_f_entries(d->queue);
        DIR *dir = opendir(procs);
        for (struct dirent *de; dir != NULL && (de = readdir(dir)) != NULL;) {
            if (de->d_name[0] == '.')
                continue;
            snprintf(path, sizeof(path), "%s/%s", procs, de->d_name);
            n += s_f_entries(path);
        }
        if (dir != NULL)
            closedir(dir);
        if (before > 0 && n == 0)
            pthread_kill(d->n->main_thread, SIGUSR2);
        before = n;
    }
    return NULL;
}

static int s_f_push(sg_dist_t *d, sg_chunk_t *c, sg_item_t **items, int n, size_t event_index)
{
    char chunk[160];
    s_safe(c->id, chunk, sizeof(chunk));
    for (int i = 0; i < n; i++) {
        json_t *j = json_pack("{s:s, s:s, s:i, s:s, s:s}", "id", items[i]->id, "bucket", items[i]->bucket->name,
                              "event", (int)event_index, "key", items[i]->key, "chunk", c->id);
        char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
        json_decref(j);
        char name[200];
        snprintf(name, sizeof(name), "%s~%06d.json", chunk, i);
        int rc = text != NULL ? s_put_file(d->queue, name, text) : -1;
        free(text);
        if (rc < 0) {
            rf_warn("storgate dist: cannot queue %s in %s: %s", items[i]->id, d->queue, strerror(errno));
            return -1; /* those queued run anywhere; the leader runs the chunk itself too: once more at most */
        }
    }
    return 0;
}

/* Files of chunk (its safe name) in dir. */
static int s_f_count(const char *dir_path, const char *chunk)
{
    DIR *dir = opendir(dir_path);
    if (dir == NULL)
        return 0;
    size_t cl = strlen(chunk);
    int n = 0;
    for (struct dirent *de; (de = readdir(dir)) != NULL;)
        n += strncmp(de->d_name, chunk, cl) == 0 && de->d_name[cl] == '~';
    closedir(dir);
    return n;
}

static int s_f_chunk_left(sg_dist_t *d, sg_chunk_t *c)
{
    char chunk[160], path[1100];
    s_safe(c->id, chunk, sizeof(chunk));
    int left = s_f_count(d->queue, chunk);
    char procs[820];
    snprintf(procs, sizeof(procs), "%s/proc", d->dir);
    DIR *dir = opendir(procs);
    for (struct dirent *de; dir != NULL && (de = readdir(dir)) != NULL;) {
        if (de->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "%s/%s", procs, de->d_name);
        left += s_f_count(path, chunk);
    }
    if (dir != NULL)
        closedir(dir);
    struct stat st;
    snprintf(path, sizeof(path), "%s/%s", d->failed, chunk);
    c->failed = stat(path, &st) == 0 ? (int)st.st_size : 0;
    return left;
}

static void s_f_ack(sg_dist_t *d, sg_item_t *it, bool ok)
{
    char path[1300];
    snprintf(path, sizeof(path), "%s/%s", d->proc, it->dist_file);
    if (access(path, F_OK) != 0) { /* handed out again meanwhile (we were taken for dead): its new taker counts it */
        rf_warn("storgate %s: done here, but it had been handed to another node meanwhile", it->id);
        return;
    }
    if (!ok) { /* counted before the file goes, so a chunk found done has its failures */
        char chunk[160];
        s_safe(it->dist_chunk, chunk, sizeof(chunk));
        s_f_failed(d, chunk);
    }
    if (unlink(path) != 0)
        rf_warn("storgate %s: done here, but it had been handed to another node meanwhile", it->id);
}

static void s_f_heartbeat(sg_dist_t *d)
{
    int fd = open(d->alive, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd >= 0) {
        futimens(fd, NULL);
        close(fd);
    }
}

static void s_f_reap(sg_dist_t *d)
{
    DIR *dir = opendir(d->alive_dir);
    if (dir == NULL)
        return;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    for (struct dirent *de; (de = readdir(dir)) != NULL;) {
        const char *node = de->d_name;
        if (node[0] == '.' || strcmp(node, d->n->node) == 0)
            continue;
        char path[1100], from[1100];
        snprintf(path, sizeof(path), "%s/%s", d->alive_dir, node);
        struct stat st;
        if (stat(path, &st) != 0 || now.tv_sec - st.st_mtim.tv_sec < 3)
            continue;
        snprintf(from, sizeof(from), "%s/proc/%s", d->dir, node);
        int moved = s_f_requeue(d, from);
        unlink(path);
        int adopted = sg_item_adopt(d->n, node);
        rf_warn("storgate dist: node %s stopped answering: %d of its item(s) handed out again, %d of its webhook(s) "
                "adopted",
                node, moved, adopted);
    }
    closedir(dir);
}

sg_dist_t *sg_dist_new_files(sg_node_t *n, const char *dir)
{
    sg_dist_t *d = calloc(1, sizeof(*d));
    if (d == NULL)
        return NULL;
    d->n = n;
    d->files = true;
    pthread_mutex_init(&d->mu, NULL);
    snprintf(d->dir, sizeof(d->dir), "%s", dir);
    snprintf(d->queue, sizeof(d->queue), "%s/queue", dir);
    snprintf(d->proc, sizeof(d->proc), "%s/proc/%s", dir, n->node);
    snprintf(d->alive_dir, sizeof(d->alive_dir), "%s/alive", dir);
    snprintf(d->alive, sizeof(d->alive), "%s/alive/%s", dir, n->node);
    snprintf(d->failed, sizeof(d->failed), "%s/failed", dir);
    char procs[820];
    snprintf(procs, sizeof(procs), "%s/proc", dir);
    const char *dirs[] = {d->dir, d->queue, procs, d->proc, d->alive_dir, d->failed};
    for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++)
        if (mkdir(dirs[i], 0755) != 0 && errno != EEXIST) {
            rf_error("storgate dist: cannot make %s: %s", dirs[i], strerror(errno));
            sg_dist_destroy(&d);
            return NULL;
        }
    return d;
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
    int moved = d->files ? s_f_requeue(d, d->proc) : s_requeue(d, d->k_proc);
    if (moved > 0)
        rf_info("storgate dist: %d item(s) this node had taken before it stopped handed out again", moved);
    if (pthread_create(&d->puller, NULL, d->files ? s_f_puller : s_puller, d) != 0)
        return -1;
    d->puller_started = true;
    if (pthread_create(&d->watcher, NULL, d->files ? s_f_watcher : s_watcher, d) != 0)
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
    if (d->files) {
        s_f_heartbeat(d);
        return;
    }
    freeReplyObject(s_cmd(d, "SET %s 1 PX 3000", d->k_alive));
    freeReplyObject(s_cmd(d, "SADD %s %s", d->k_nodes, d->n->node));
}

int sg_dist_push(sg_dist_t *d, sg_chunk_t *c, sg_item_t **items, int n, size_t event_index)
{
    if (d->files)
        return s_f_push(d, c, items, n, event_index);
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
    if (d->files)
        return s_f_chunk_left(d, c);
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
    if (d->files) {
        s_f_ack(d, it, ok);
        return;
    }
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

void sg_dist_reap(sg_dist_t *d)
{
    if (d->files) {
        s_f_reap(d);
        return;
    }
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
        int adopted = sg_item_adopt(d->n, node);
        rf_warn("storgate dist: node %s stopped answering: %d of its item(s) handed out again, %d of its webhook(s) "
                "adopted",
                node, moved, adopted);
    }
    freeReplyObject(nodes);
}
