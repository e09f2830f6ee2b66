/*  sg_item — one item through its workflow (sg.h): each task makes an
 *  output (a copy, or a chain run by a worker over the bus), names it
 *  (pathPattern, then the Nunjucks savePath) and stores it under the
 *  whenExist rule; then onComplete.src; then the item's webhook.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "rf_log.h"
#include "rf_tmpl.h"
#include "rf_sgfunc.h"
#include "sg.h"

/* ---- the queue ------------------------------------------------------------------ */

void sg_queue_push(sg_node_t *n, sg_item_t *it)
{
    it->next = NULL;
    pthread_mutex_lock(&n->mu);
    if (n->tail)
        n->tail->next = it;
    else
        n->head = it;
    n->tail = it;
    n->queued++;
    rf_metric_set(sg_m.queue, NULL, n->queued);
    pthread_cond_signal(&n->cv);
    pthread_mutex_unlock(&n->mu);
}

static sg_item_t *s_pop(sg_node_t *n)
{
    pthread_mutex_lock(&n->mu);
    while ((n->head == NULL || n->throttled) && !atomic_load(&n->stopping))
        pthread_cond_wait(&n->cv, &n->mu);
    sg_item_t *it = atomic_load(&n->stopping) ? NULL : n->head;
    if (it != NULL) {
        n->head = it->next;
        if (n->head == NULL)
            n->tail = NULL;
        n->queued--;
        rf_metric_set(sg_m.queue, NULL, n->queued);
        pthread_cond_broadcast(&n->cv); /* room: a puller (sg_dist.c) waiting for it takes the next */
    }
    pthread_mutex_unlock(&n->mu);
    return it;
}

/* Each item thread has its own template heap (a Duktape heap is not
 * thread-safe), made on first use. */
static __thread rf_tmpl_t *s_tmpl;

void *sg_item_thread(void *arg)
{
    sg_node_t *n = arg;
    for (sg_item_t *it; (it = s_pop(n)) != NULL;) {
        int rc = sg_item_run(n, it);
        if (it->raw[0] != '\0' && n->dist != NULL)
            sg_dist_ack(n->dist, it, rc == 0);
        else if (it->chunk != NULL)
            sg_chunk_item_done(n, it->chunk, rc == 0);
        free(it);
    }
    rf_tmpl_destroy(&s_tmpl);
    sg_bus_thread_end();
    rf_sgfs_thread_end();
    return NULL;
}

/* ---- the item's description ---------------------------------------------------- */

/* item.* as the seed lists them, from the open source file. */
static json_t *s_item_json(const char *key, int fd)
{
    struct stat sb;
    memset(&sb, 0, sizeof(sb));
    if (fd >= 0 && fstat(fd, &sb) != 0)
        return NULL;
    char path[RF_SGFS_KEY_MAX + 2], dir[RF_SGFS_KEY_MAX + 2], mode[8], user[64], group[64];
    snprintf(path, sizeof(path), "/%s", key);
    const char *slash = strrchr(path, '/');
    snprintf(dir, sizeof(dir), "%.*s", slash == path ? 1 : (int)(slash - path), path);
    snprintf(mode, sizeof(mode), "%04o", (unsigned)(sb.st_mode & 07777));
    struct passwd pw, *pwp = NULL;
    struct group gr, *grp = NULL;
    char buf[4096];
    snprintf(user, sizeof(user), "%u", (unsigned)sb.st_uid);
    if (getpwuid_r(sb.st_uid, &pw, buf, sizeof(buf), &pwp) == 0 && pwp != NULL)
        snprintf(user, sizeof(user), "%s", pw.pw_name);
    snprintf(group, sizeof(group), "%u", (unsigned)sb.st_gid);
    if (getgrgid_r(sb.st_gid, &gr, buf, sizeof(buf), &grp) == 0 && grp != NULL)
        snprintf(group, sizeof(group), "%s", gr.gr_name);
    return json_pack("{s:s, s:s, s:s, s:s, s:I, s:s, s:s, s:s, s:I, s:I, s:I, s:I}", "path", path, "filename",
                     slash + 1, "dirname", dir, "state",
                     fd < 0                ? "absent"
                     : S_ISDIR(sb.st_mode) ? "directory"
                                           : "file",
                     "size", (json_int_t)sb.st_size, "owner", user, "group", group, "mode", mode, "mtime",
                     (json_int_t)sb.st_mtim.tv_sec, "atime", (json_int_t)sb.st_atim.tv_sec, "ctime",
                     (json_int_t)sb.st_ctim.tv_sec, "inode", (json_int_t)sb.st_ino);
}

/* Renders a path template (pathPattern first, when given) into a bucket
 * key: leading '/' dropped, repeated '/' folded. 0 or -1 with why. */
static int s_render_path(const char *tmpl, const char *pattern, const json_t *item, const char *ctx_json, char *key,
                         size_t cap, char *why, size_t why_len)
{
    if (s_tmpl == NULL && (s_tmpl = rf_tmpl_new(why, why_len)) == NULL)
        return -1;
    /* pathPattern's #N go in as data (never pasted into template source) */
    char *out = rf_tmpl_render_pattern(s_tmpl, tmpl, pattern, json_string_value(json_object_get(item, "path")),
                                       ctx_json, why, why_len);
    if (out == NULL)
        return -1;
    size_t k = 0;
    for (const char *p = out; *p && k + 1 < cap; p++) {
        if (*p == '/' && (k == 0 || key[k - 1] == '/'))
            continue; /* "/image_service//image_landing/a" names "image_service/image_landing/a" */
        key[k++] = *p;
    }
    key[k] = '\0';
    bool too_long = strlen(out) >= cap;
    free(out);
    if (too_long || k == 0) {
        snprintf(why, why_len, "the rendered path is %s", k == 0 ? "empty" : "too long");
        return -1;
    }
    return 0;
}

/* ---- making and storing one output ----------------------------------------------- */

static int s_copy_fd(int fd, rf_sgfs_put_t *w, char *why, size_t why_len)
{
    char *buf = malloc(1 << 20);
    off_t off = 0;
    int rc = buf ? 0 : -1;
    for (ssize_t r; rc == 0 && (r = pread(fd, buf, 1 << 20, off)) != 0;) {
        if (r < 0 || rf_sgfs_put_write(w, buf, (size_t)r) < 0)
            rc = -1;
        off += r > 0 ? r : 0;
    }
    free(buf);
    if (rc < 0)
        snprintf(why, why_len, "copy failed: %s", strerror(errno ? errno : ENOMEM));
    return rc;
}

/* MD5 hex of an existing object: its stored ETag when that is an MD5,
 * else read whole. 0 or -1. */
static int s_dest_md5(const rf_sgfs_loc_t *loc, char out[33])
{
    rf_sgfs_stat_t st;
    int fd = rf_sgfs_open(loc, &st);
    if (fd < 0)
        return -1;
    if (strlen(st.etag) == 32) {
        memcpy(out, st.etag, 33);
        close(fd);
        return 0;
    }
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    char *buf = malloc(1 << 20);
    int rc = md && buf && EVP_DigestInit_ex(md, EVP_md5(), NULL) == 1 ? 0 : -1;
    for (ssize_t r; rc == 0 && (r = read(fd, buf, 1 << 20)) != 0;)
        rc = r < 0 ? -1 : (EVP_DigestUpdate(md, buf, (size_t)r), 0);
    unsigned char d[16];
    unsigned int dl = 0;
    if (rc == 0 && EVP_DigestFinal_ex(md, d, &dl) == 1 && dl == 16)
        for (int i = 0; i < 16; i++)
            sprintf(out + 2 * i, "%02x", d[i]);
    else
        rc = -1;
    EVP_MD_CTX_free(md);
    free(buf);
    close(fd);
    return rc;
}

/* Runs one task of the item. 0 stored (or skipped by whenExist), -1 failed. */
static int s_task(sg_node_t *n, sg_item_t *it, const rf_sg_task_t *t, int src_fd, const char *src_path,
                  const json_t *item, const char *ctx, char *why, size_t why_len)
{
    char key[RF_SGFS_KEY_MAX + 1];
    if (s_render_path(t->save_path, t->path_pattern, item, ctx, key, sizeof(key), why, why_len) < 0)
        return -1;
    rf_sgfs_loc_t dst;
    const char *rwhy = NULL;
    if (rf_sgfs_resolve(it->bucket, key, strlen(key), true, true, &dst, &rwhy) < 0) {
        snprintf(why, why_len, "savePath /%.200s: %s", key, rwhy ? rwhy : "cannot be resolved");
        return -1;
    }
    rf_sgfs_stat_t dst_st;
    bool exists = rf_sgfs_stat(&dst, &dst_st) == 0;
    if (it->deleted) { /* onDelete: the output made from the source goes with it */
        if (exists && rf_sgfs_delete(&dst) < 0) {
            snprintf(why, why_len, "cannot remove /%.200s: %s", key, strerror(errno));
            return -1;
        }
        rf_info("storgate %s: source deleted: /%s %s", it->id, key, exists ? "removed" : "was not there");
        return 0;
    }
    if (exists && t->when_exist == RF_SG_SKIP) {
        rf_info("storgate %s: task -> /%s skipped (whenExist: skip)", it->id, key);
        return 0;
    }
    rf_sgfs_put_t *w = rf_sgfs_put_begin(&dst, NULL, NULL);
    if (w == NULL) {
        snprintf(why, why_len, "cannot write /%.200s: %s", key, strerror(errno));
        return -1;
    }
    int rc;
    if (t->function == NULL) {
        rc = s_copy_fd(src_fd, w, why, why_len);
    } else {
        const char *service = NULL;
        json_t *chain = NULL;
        void *out = NULL;
        size_t out_len = 0;
        if (rf_sgfunc_job(t->function, src_path, &service, &chain, why, why_len) < 0) {
            rc = -1;
        } else if (n->bus == NULL) {
            snprintf(why, why_len, "function %s needs storgate_scheduler.bus_endpoint and a worker", t->function);
            rc = -1;
        } else {
            rc = sg_bus_transform(n->bus, service, chain, src_path, it->id, t->timeout_s, &out, &out_len, why, why_len);
            if (rc == 0 && rf_sgfs_put_write(w, out, out_len) < 0) {
                snprintf(why, why_len, "cannot write /%.200s: %s", key, strerror(errno));
                rc = -1;
            }
            free(out);
        }
        json_decref(chain);
    }
    if (rc == 0 && exists && t->when_exist == RF_SG_DIFF) {
        char mine[33], theirs[33];
        rf_sgfs_put_md5(w, mine);
        if (s_dest_md5(&dst, theirs) == 0 && strcmp(mine, theirs) == 0) {
            rf_sgfs_put_abort(&w);
            rf_info("storgate %s: task -> /%s unchanged (whenExist: diff)", it->id, key);
            return 0;
        }
    }
    if (rc < 0) {
        rf_sgfs_put_abort(&w);
        return -1;
    }
    if (rf_sgfs_put_commit(&w, NULL, NULL) < 0) {
        snprintf(why, why_len, "cannot store /%.200s: %s", key, strerror(errno));
        return -1;
    }
    rf_info("storgate %s: task %s -> /%s stored", it->id, t->function ? t->function : "copy", key);
    return 0;
}

/* Whether every output of the item's workflow exists (its tasks' saved
 * paths, and where onComplete moves the source), rendered from `item`
 * as the source's stat would give it ("absent": so a template that uses
 * the source's size or times cannot tell, and says no). */
static bool s_outputs_there(sg_item_t *it, const json_t *item, const char *sdir, char *why, size_t why_len)
{
    const rf_sg_workflow_t *w = it->workflow;
    json_t *ctx = json_pack("{s:O, s:s}", "item", item, "source_dir", sdir);
    char *ctx_text = ctx ? json_dumps(ctx, JSON_COMPACT) : NULL;
    json_decref(ctx);
    bool there = ctx_text != NULL && w->src_op != RF_SG_SRC_NONE;
    for (size_t i = 0; there && i <= w->n_tasks; i++) {
        const char *tmpl = i < w->n_tasks ? w->tasks[i].save_path : w->src_op == RF_SG_SRC_MOVE ? w->src_path : NULL;
        const char *pattern = i < w->n_tasks ? w->tasks[i].path_pattern : NULL;
        if (tmpl == NULL)
            continue;
        char key[RF_SGFS_KEY_MAX + 1];
        rf_sgfs_loc_t dst;
        rf_sgfs_stat_t st;
        const char *rwhy = NULL;
        there = s_render_path(tmpl, pattern, item, ctx_text, key, sizeof(key), why, why_len) == 0 &&
                rf_sgfs_resolve(it->bucket, key, strlen(key), true, true, &dst, &rwhy) == 0 &&
                rf_sgfs_stat(&dst, &st) == 0;
    }
    free(ctx_text);
    why[0] = '\0';
    return there;
}

/* onComplete.src: none, delete, or move to its rendered path. */
static int s_on_complete(sg_item_t *it, const rf_sgfs_loc_t *src, int src_fd, const json_t *item, const char *ctx,
                         char *why, size_t why_len)
{
    const rf_sg_workflow_t *w = it->workflow;
    if (w->src_op == RF_SG_SRC_NONE)
        return 0;
    if (w->src_op == RF_SG_SRC_MOVE) {
        char key[RF_SGFS_KEY_MAX + 1];
        if (s_render_path(w->src_path, NULL, item, ctx, key, sizeof(key), why, why_len) < 0)
            return -1;
        rf_sgfs_loc_t dst;
        const char *rwhy = NULL;
        if (rf_sgfs_resolve(it->bucket, key, strlen(key), true, true, &dst, &rwhy) < 0) {
            snprintf(why, why_len, "onComplete move to /%.200s: %s", key, rwhy ? rwhy : "cannot be resolved");
            return -1;
        }
        rf_sgfs_put_t *p = rf_sgfs_put_begin(&dst, NULL, NULL);
        if (p == NULL || s_copy_fd(src_fd, p, why, why_len) < 0 || rf_sgfs_put_commit(&p, NULL, NULL) < 0) {
            if (why[0] == '\0')
                snprintf(why, why_len, "onComplete move to /%.200s: %s", key, strerror(errno));
            rf_sgfs_put_abort(&p);
            return -1;
        }
    }
    if (rf_sgfs_delete(src) < 0) {
        snprintf(why, why_len, "cannot remove the source: %s", strerror(errno));
        return -1;
    }
    return 0;
}

/* The item's webhook payload (onItemCompleted / onItemAborted) and its
 * idempotency key (200 bytes), or NULL: malloc'd. */
static char *s_webhook_text(sg_node_t *n, sg_item_t *it, bool ok, json_t *item, const char *why, char key[200])
{
    snprintf(key, 200, "%s:%s", it->id, ok ? "onItemCompleted" : "onItemAborted");
    json_t *p = json_pack("{s:s, s:s, s:s, s:s, s:s, s:O}", "id", key, "event",
                          ok ? "onItemCompleted" : "onItemAborted", "node", n->node, "bucket", it->bucket->name,
                          "workflow", it->workflow->name, "item", item ? item : json_null());
    if (p != NULL && !ok)
        json_object_set_new(p, "error", json_string(why));
    char *text = p ? json_dumps(p, JSON_COMPACT) : NULL;
    json_decref(p);
    return text;
}

/* Queues the item's webhook, if any. */
static void s_webhook(sg_node_t *n, sg_item_t *it, bool ok, json_t *item, const char *why)
{
    const char *target = ok ? it->event->on_item_completed : it->event->on_item_aborted;
    if (target == NULL)
        return;
    char key[200];
    char *text = s_webhook_text(n, it, ok, item, why, key);
    if (text == NULL || sg_outbox_put(n->outbox, target, key, text) < 0)
        rf_error("storgate %s: cannot queue the webhook to %s", it->id, target);
    free(text);
}

/* Holds the onItemCompleted webhook before onComplete removes the source
 * (name: the held file, "" when none). A node killed between the two
 * leaves it held; whoever settles it finds the source gone and sends it. */
static void s_webhook_hold(sg_node_t *n, sg_item_t *it, json_t *item, char *name, size_t cap)
{
    name[0] = '\0';
    const char *target = it->event->on_item_completed;
    if (target == NULL)
        return;
    char key[200];
    char *text = s_webhook_text(n, it, true, item, NULL, key);
    if (text == NULL || sg_outbox_hold(n->outbox, target, key, text, name, cap) < 0)
        name[0] = '\0'; /* queued after onComplete, as without a hold */
    free(text);
}

int sg_item_settle(void *arg, const char *payload)
{
    sg_node_t *n = arg;
    json_error_t err;
    json_t *p = json_loads(payload, 0, &err);
    const char *bucket = json_string_value(json_object_get(p, "bucket"));
    const char *path = json_string_value(json_object_get(json_object_get(p, "item"), "path"));
    int v = -1;
    for (size_t i = 0; bucket != NULL && path != NULL && path[0] == '/' && i < n->sc->n_buckets && v < 0; i++) {
        const rf_sg_bucket_t *b = &n->sc->buckets[i];
        rf_sgfs_loc_t loc;
        rf_sgfs_stat_t st;
        const char *why = NULL;
        if (strcmp(b->name, bucket) != 0 || rf_sgfs_resolve(b, path + 1, strlen(path + 1), false, true, &loc, &why) < 0)
            continue;
        if (rf_sgfs_stat(&loc, &st) == 0)
            v = 0; /* the source is there: onComplete did not run, the item runs again */
        else if (errno == ENOENT)
            v = 1; /* it went: the item was done */
    }
    if (p != NULL && (bucket == NULL || path == NULL))
        v = 0; /* not an item's: nothing to wait for */
    json_decref(p);
    if (v >= 0)
        rf_info("storgate outbox: a webhook held by a stopped node: %s (%s)", v ? "due" : "dropped",
                v ? "its source is gone" : "its item runs again");
    return v;
}

int sg_item_adopt(sg_node_t *n, const char *from_node)
{
    return sg_outbox_adopt(n->state_dir, from_node, n->node, sg_item_settle, n);
}

int sg_item_run(sg_node_t *n, sg_item_t *it)
{
    char why[512] = "", src_path[4200], linked[700] = "", held[80] = ""; /* before any goto done */
    const char *labels[] = {it->bucket->name, it->workflow->name, "done"};
    rf_sgfs_loc_t src;
    const char *rwhy = NULL;
    json_t *item = NULL, *ctx = NULL;
    char *ctx_text = NULL;
    int fd = -1, rc = -1;
    if (rf_sgfs_resolve(it->bucket, it->key, strlen(it->key), false, true, &src, &rwhy) < 0) {
        snprintf(why, sizeof(why), "%s", rwhy ? rwhy : "cannot resolve");
        goto done;
    }
    /* relpath(source_dir): below the batch's path, or for an event below its mount point */
    const char *sdir = it->event->path ? it->event->path : src.mount->mount_point[0] ? src.mount->mount_point : "/";
    rf_sgfs_stat_t st;
    if (!it->deleted && (fd = rf_sgfs_open(&src, &st)) < 0) {
        int err = errno;
        item = s_item_json(it->key, -1); /* the webhook still names the item ("state": "absent") */
        if (err == ENOENT && it->again && item != NULL && s_outputs_there(it, item, sdir, why, sizeof(why))) {
            /* its node stopped after the source went (moved or deleted by
             * onComplete) but before the webhook was queued: the outputs
             * are there, so it is done, and the webhook is still owed */
            rf_info("storgate %s: the source is gone and every output is there: done by an earlier attempt", it->id);
            rc = 0;
            goto done;
        }
        snprintf(why, sizeof(why), "the source is gone: %s", strerror(err));
        goto done;
    }
    item = s_item_json(it->key, fd);
    ctx = json_pack("{s:O, s:s}", "item", item, "source_dir", sdir);
    if (item == NULL || ctx == NULL || (ctx_text = json_dumps(ctx, JSON_COMPACT)) == NULL) {
        snprintf(why, sizeof(why), "out of memory");
        goto done;
    }
    if (src.mount->kind == RF_SG_MOUNT_LOCAL || fd < 0) {
        snprintf(src_path, sizeof(src_path), "%s/%s", src.mount->dir ? src.mount->dir : "", src.rel);
    } else {
        /* an S3-backed source is in an anonymous temporary file: a worker
         * maps files by path, so give it one for the item's time */
        char self[64];
        snprintf(self, sizeof(self), "/proc/self/fd/%d", fd);
        snprintf(linked, sizeof(linked), "%s/tmp", n->state_dir);
        mkdir(linked, 0700);
        snprintf(linked, sizeof(linked), "%s/tmp/%.100s.src", n->state_dir, it->id);
        unlink(linked);
        if (linkat(AT_FDCWD, self, AT_FDCWD, linked, AT_SYMLINK_FOLLOW) != 0) {
            snprintf(why, sizeof(why), "cannot name the S3 source for a worker: %s", strerror(errno));
            linked[0] = '\0';
            goto done;
        }
        snprintf(src_path, sizeof(src_path), "%s", linked);
    }
    for (size_t i = 0; i < it->workflow->n_tasks; i++)
        if (s_task(n, it, &it->workflow->tasks[i], fd, src_path, item, ctx_text, why, sizeof(why)) < 0)
            goto done;
    if (!it->deleted) {
        s_webhook_hold(n, it, item, held, sizeof(held));
        if (s_on_complete(it, &src, fd, item, ctx_text, why, sizeof(why)) < 0)
            goto done;
    }
    rc = 0;
done:
    if (linked[0] != '\0')
        unlink(linked);
    if (fd >= 0)
        close(fd);
    if (rc == 0)
        rf_info("storgate %s: /%s done (workflow %s)", it->id, it->key, it->workflow->name);
    else
        rf_warn("storgate %s: /%s aborted (workflow %s): %s", it->id, it->key, it->workflow->name, why);
    labels[2] = rc == 0 ? "done" : "aborted";
    rf_metric_add(sg_m.items, labels, 1);
    /* the held webhook is due, or dropped for the aborted one; queued anew
     * when another node settled it meanwhile (a pause past the term) */
    bool sent = held[0] != '\0' && sg_outbox_release(n->outbox, held, rc == 0) == 0 && rc == 0;
    if (!sent)
        s_webhook(n, it, rc == 0, item, why);
    if (it->event_file[0] != '\0')
        sg_events_done(n->events, it->event_file);
    json_decref(item);
    json_decref(ctx);
    free(ctx_text);
    return rc;
}
