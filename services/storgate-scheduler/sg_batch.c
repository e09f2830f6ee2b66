/*  sg_batch — onBatch: schedules, chunks and cursors (sg.h).
 *
 *  A run lists the batch's path in key order (rf_sgfs_list: depth-first,
 *  as S3 lists), chunkSize items at a time, filters them (Ansible find's
 *  criteria) and queues them. The next chunk is listed when every item of
 *  the previous one is done:
 *    cursor continue: after the previous chunk's last key;
 *    cursor reset:    from the start again (the workflow removed or moved
 *                     what it did; if a chunk begins where the previous
 *                     one began, nothing was removed and the run stops
 *                     rather than loop, as the seed warns).
 *  The run's progress (its id and cursor) is saved after each chunk in
 *  STATE/cursors/, under the leader's fencing token, so a restarted or new
 *  leader resumes the chunk in progress: at most that chunk's finished
 *  items run twice, none is lost.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <sys/random.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "rf_cron.h"
#include "rf_log.h"
#include "rf_sgevent.h"
#include "sg.h"

struct sg_batch_t {
    sg_node_t *n;
    const rf_sg_bucket_t *b;
    const rf_sg_event_t *ev;
    const rf_sg_workflow_t *wf;
    size_t index;
    rf_cron_t cron;
    int64_t next_at;
    bool running;
    sg_chunk_t *chunk; /* in flight; NULL between chunks */
    char cursor[RF_SGFS_KEY_MAX + 1];
    char prev_first[RF_SGFS_KEY_MAX + 1]; /* reset mode: where the previous chunk began */
    char run_id[96];
    int chunk_no;
    uint64_t item_no;
    uint64_t token;  /* the fencing token the run's progress is written under */
    sg_scan_t *scan; /* the run's scan events (sg_scan.c), or NULL */
};

struct sg_batches_t {
    sg_node_t *n;
    int64_t last_reap;
    sg_batch_t *v;
    size_t nv;
    bool leading;
};

/* ---- progress files ------------------------------------------------------------------- */

static void s_state_name(const sg_batch_t *bt, char *out, size_t cap)
{
    snprintf(out, cap, "%s.%zu", bt->b->name, bt->index);
}

/* Saves "RUN_ID\nCURSOR\nCHUNK\nITEM\n" (RUN_ID "" = no run in progress)
 * where the lease keeps progress, if this node still leads under the
 * run's token. */
static void s_save(sg_batch_t *bt)
{
    char name[128], text[RF_SGFS_KEY_MAX + 256];
    s_state_name(bt, name, sizeof(name));
    snprintf(text, sizeof(text), "%s\n%s\n%d\n%llu\n", bt->running ? bt->run_id : "", bt->cursor, bt->chunk_no,
             (unsigned long long)bt->item_no);
    if (sg_leader_save(bt->n->leader, bt->token, name, text) < 0)
        rf_warn("storgate batch %s: progress not saved: %s (fencing token %llu)", bt->run_id,
                errno == EPERM ? "the lease moved on" : strerror(errno), (unsigned long long)bt->token);
}

/* Loads a run in progress, if one was saved. */
static void s_load(sg_batch_t *bt)
{
    char name[128];
    s_state_name(bt, name, sizeof(name));
    char *text = sg_leader_load(bt->n->leader, name);
    if (text == NULL)
        return;
    char *f[4] = {0}; /* fields may be empty: split by hand */
    char *p = text;
    for (int i = 0; i < 4 && p != NULL; i++) {
        f[i] = p;
        p = strchr(p, '\n');
        if (p != NULL)
            *p++ = '\0';
    }
    if (f[0] != NULL && f[0][0] != '\0' && f[1] != NULL && f[3] != NULL) {
        bt->running = true;
        snprintf(bt->run_id, sizeof(bt->run_id), "%s", f[0]);
        snprintf(bt->cursor, sizeof(bt->cursor), "%s", f[1]);
        /* The chunk after the saved one may have been listed and handed
         * out before the last leader stopped: its number and its items'
         * numbers are burnt, so that the chunk listed now (from the same
         * cursor, but without the items done meanwhile) shares neither its
         * counter in Redis nor any webhook's idempotency key with it. */
        bt->chunk_no = atoi(f[2]) + 1;
        bt->item_no = strtoull(f[3], NULL, 10) + (uint64_t)bt->ev->chunk_size;
        rf_info("storgate batch %s: resuming after '%s' (chunk %d)", bt->run_id, bt->cursor, bt->chunk_no + 1);
    }
    free(text);
}

/* ---- webhooks of chunks ----------------------------------------------------------------- */

static void s_chunk_hook(sg_batch_t *bt, const char *event, const char *target, const sg_chunk_t *c)
{
    if (target == NULL)
        return;
    char key[200];
    snprintf(key, sizeof(key), "%s:%s", c->id, event);
    json_t *p = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:i, s:i, s:s}", "id", key, "event", event, "node",
                          bt->n->node, "bucket", bt->b->name, "path", bt->ev->path, "run", bt->run_id, "items", c->n,
                          "failed", c->failed, "last", c->last);
    char *text = p ? json_dumps(p, JSON_COMPACT) : NULL;
    if (text == NULL || sg_outbox_put(bt->n->outbox, target, key, text) < 0)
        rf_error("storgate batch %s: cannot queue %s to %s", bt->run_id, event, target);
    free(text);
    json_decref(p);
}

/* ---- runs and chunks ---------------------------------------------------------------------- */

/* The key prefix of the batch's path ("" for "/", "a/b/" for "/a/b"). */
static void s_prefix(const sg_batch_t *bt, char *out, size_t cap)
{
    const char *p = bt->ev->path;
    if (strcmp(p, "/") == 0)
        out[0] = '\0';
    else
        snprintf(out, cap, "%s/", p + 1);
}

static void s_run_end(sg_batch_t *bt, const char *how)
{
    const char *l[] = {bt->b->name, how};
    rf_metric_add(sg_m.batches, l, 1);
    rf_info("storgate batch %s: %s after %d chunk(s), %llu item(s)", bt->run_id, how, bt->chunk_no,
            (unsigned long long)bt->item_no);
    sg_scan_end(&bt->scan, strcmp(how, "completed") == 0);
    bt->running = false;
    bt->cursor[0] = '\0';
    bt->prev_first[0] = '\0';
    s_save(bt);
    bt->next_at = rf_cron_next(&bt->cron, (int64_t)time(NULL), false);
}

/* A key the listing found for the next chunk. */
typedef struct {
    char *key;
    int depth; /* '/'s below the batch's path: breadth order */
    uint64_t size;
    int64_t mtime_ns;
} s_cand_t;

static void s_cands_free(s_cand_t *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i].key);
    free(v);
}

static int s_depth(const char *key, size_t plen)
{
    int d = 0;
    for (const char *p = key + plen; *p; p++)
        d += *p == '/';
    return d;
}

/* traverse: depth — the next `want` keys after `after` in S3 key order (a
 * depth-first walk), filtered; *last is where the listing stopped. */
static size_t s_gather_depth(sg_batch_t *bt, const char *prefix, const char *delim, char *after, size_t want,
                             s_cand_t *out)
{
    size_t n = 0;
    int64_t now = (int64_t)time(NULL);
    while (n < want) { /* S3 lists at most 1000 a page: a chunk may take several */
        rf_sgfs_list_t l;
        if (rf_sgfs_list_opts(bt->b, prefix, delim, after, want - n > 1000 ? 1000 : want - n, RF_SGFS_INTERNAL, &l) <
            0) {
            rf_error("storgate batch %s: cannot list /%s: %s", bt->run_id, prefix, strerror(errno));
            break;
        }
        for (size_t i = 0; i < l.n; i++) {
            snprintf(after, RF_SGFS_KEY_MAX + 1, "%s", l.e[i].key);
            if (l.e[i].prefix ||
                !rf_sgevent_filter_ok(bt->ev, l.e[i].key, (int64_t)l.e[i].size, l.e[i].mtime_ns / 1000000000, now))
                continue;
            if ((out[n].key = strdup(l.e[i].key)) != NULL) {
                out[n].size = l.e[i].size;
                out[n++].mtime_ns = l.e[i].mtime_ns;
            }
        }
        bool more = l.truncated;
        rf_sgfs_list_clear(&l);
        if (!more)
            break;
    }
    return n;
}

static int s_cand_cmp(const void *a, const void *b)
{
    const s_cand_t *x = a, *y = b;
    return x->depth != y->depth ? x->depth - y->depth : strcmp(x->key, y->key);
}

/* traverse: breadth — the next `want` keys after the cursor "DEPTH:KEY" in
 * (depth, key) order: a directory's files before its subdirectories'. It
 * lists the whole path for each chunk (a cost the depth order has not),
 * which the seed expects of a breadth walk. */
static size_t s_gather_breadth(sg_batch_t *bt, const char *prefix, char *cursor, size_t want, s_cand_t *out)
{
    int cdepth = -1;
    const char *ckey = "";
    char *colon = strchr(cursor, ':');
    if (cursor[0] != '\0' && colon != NULL) {
        cdepth = atoi(cursor);
        ckey = colon + 1;
    }
    size_t cap = 1024, n = 0, plen = strlen(prefix);
    s_cand_t *all = calloc(cap, sizeof(*all));
    char after[RF_SGFS_KEY_MAX + 1] = "";
    int64_t now = (int64_t)time(NULL);
    for (bool more = true; more && all != NULL;) {
        rf_sgfs_list_t l;
        if (rf_sgfs_list_opts(bt->b, prefix, NULL, after, 1000, RF_SGFS_INTERNAL, &l) < 0) {
            rf_error("storgate batch %s: cannot list /%s: %s", bt->run_id, prefix, strerror(errno));
            break;
        }
        for (size_t i = 0; i < l.n; i++) {
            snprintf(after, sizeof(after), "%s", l.e[i].key);
            int d = s_depth(l.e[i].key, plen);
            if (d < cdepth || (d == cdepth && strcmp(l.e[i].key, ckey) <= 0) ||
                !rf_sgevent_filter_ok(bt->ev, l.e[i].key, (int64_t)l.e[i].size, l.e[i].mtime_ns / 1000000000, now))
                continue;
            if (n == cap) {
                s_cand_t *na = realloc(all, 2 * cap * sizeof(*all));
                if (na == NULL)
                    break;
                all = na;
                cap *= 2;
            }
            if ((all[n].key = strdup(l.e[i].key)) != NULL) {
                all[n].size = l.e[i].size;
                all[n].mtime_ns = l.e[i].mtime_ns;
                all[n++].depth = d;
            }
        }
        more = l.truncated;
        rf_sgfs_list_clear(&l);
    }
    if (all == NULL)
        return 0;
    if (n > 1)
        qsort(all, n, sizeof(*all), s_cand_cmp);
    size_t k = n < want ? n : want;
    memcpy(out, all, k * sizeof(*out));
    for (size_t i = k; i < n; i++)
        free(all[i].key);
    free(all);
    if (k > 0)
        snprintf(cursor, RF_SGFS_KEY_MAX + 1, "%d:%.*s", out[k - 1].depth, RF_SGFS_KEY_MAX - 12, out[k - 1].key);
    return k;
}

/* Lists and queues the next chunk; ends the run when nothing is left. */
static void s_next_chunk(sg_batch_t *bt)
{
    char prefix[RF_SGFS_KEY_MAX + 2], after[RF_SGFS_KEY_MAX + 1];
    s_prefix(bt, prefix, sizeof(prefix));
    snprintf(after, sizeof(after), "%s", bt->ev->cursor_reset ? "" : bt->cursor);
    /* without a filter every file under path; a filter is Ansible find's:
     * recursive only when it says so */
    bool recursive = !bt->ev->has_filter || bt->ev->filter.recursive;
    size_t want = (size_t)bt->ev->chunk_size;
    sg_chunk_t *c = calloc(1, sizeof(*c));
    sg_item_t **items = calloc(want, sizeof(*items));
    s_cand_t *cands = calloc(want, sizeof(*cands));
    if (c == NULL || items == NULL || cands == NULL) {
        free(c);
        free(items);
        free(cands);
        return;
    }
    c->batch = bt;
    size_t nc = bt->ev->breadth && recursive ? s_gather_breadth(bt, prefix, after, want, cands)
                                             : s_gather_depth(bt, prefix, recursive ? NULL : "/", after, want, cands);
    char first[RF_SGFS_KEY_MAX + 1] = "";
    for (size_t i = 0; i < nc; i++) {
        sg_item_t *it = calloc(1, sizeof(*it));
        if (it == NULL)
            break;
        if (first[0] == '\0')
            snprintf(first, sizeof(first), "%s", cands[i].key);
        sg_scan_saw(bt->scan, cands[i].key, cands[i].size, cands[i].mtime_ns);
        it->bucket = bt->b;
        it->event = bt->ev;
        it->workflow = bt->wf;
        it->chunk = c;
        snprintf(it->key, sizeof(it->key), "%s", cands[i].key);
        snprintf(it->id, sizeof(it->id), "%s-%llu", bt->run_id, (unsigned long long)++bt->item_no);
        items[c->n++] = it;
    }
    s_cands_free(cands, nc);
    if (c->n == 0) {
        free(c);
        free(items);
        s_run_end(bt, "completed");
        return;
    }
    if (bt->ev->cursor_reset && bt->prev_first[0] != '\0' && strcmp(first, bt->prev_first) == 0) {
        for (int i = 0; i < c->n; i++)
            free(items[i]);
        free(c);
        free(items);
        rf_warn("storgate batch %s: cursor reset, but the previous chunk's items are still there (the workflow "
                "neither deletes nor moves its sources): stopping the run instead of looping",
                bt->run_id);
        s_run_end(bt, "stopped");
        return;
    }
    snprintf(bt->prev_first, sizeof(bt->prev_first), "%s", first);
    snprintf(c->last, sizeof(c->last), "%s", after);
    snprintf(c->id, sizeof(c->id), "%s:chunk%d", bt->run_id, ++bt->chunk_no);
    atomic_store(&c->left, c->n);
    bt->chunk = c;
    rf_info("storgate batch %s: chunk %d: %d item(s) from /%s (%s .. %s)", bt->run_id, bt->chunk_no, c->n, prefix,
            items[0]->key, items[c->n - 1]->key);
    s_chunk_hook(bt, "onChunkExtracted", bt->ev->on_chunk_extracted, c);
    if (bt->n->dist != NULL && sg_dist_push(bt->n->dist, c, items, c->n, bt->index) == 0) {
        for (int i = 0; i < c->n; i++) /* in Redis now, for every node */
            free(items[i]);
    } else {
        if (bt->n->dist != NULL)
            rf_warn("storgate batch %s: Redis is away: chunk %d runs on this node", bt->run_id, bt->chunk_no);
        c->local = true;
        for (int i = 0; i < c->n; i++)
            sg_queue_push(bt->n, items[i]);
    }
    free(items);
}

void sg_chunk_item_done(sg_node_t *n, sg_chunk_t *c, bool ok)
{
    if (!ok)
        __atomic_add_fetch(&c->failed, 1, __ATOMIC_RELAXED);
    /* the last one wakes the main loop, which lists the next chunk now
     * rather than at its next tick: chunk boundaries left the item threads
     * idle up to 200 ms each (bench/storgate_batch.sh) */
    if (atomic_fetch_sub(&c->left, 1) == 1)
        pthread_kill(n->main_thread, SIGUSR2);
}

/* A chunk whose items are all done: save the cursor, send onChunkCompleted. */
static void s_chunk_finish(sg_batch_t *bt)
{
    sg_chunk_t *c = bt->chunk;
    snprintf(bt->cursor, sizeof(bt->cursor), "%s", c->last);
    s_save(bt);
    s_chunk_hook(bt, "onChunkCompleted", bt->ev->on_chunk_completed, c);
    rf_info("storgate batch %s: chunk %d done (%d item(s), %d failed)", bt->run_id, bt->chunk_no, c->n, c->failed);
    free(c);
    bt->chunk = NULL;
}

static void s_run_start(sg_batch_t *bt, uint64_t token)
{
    /* The run id is part of every webhook's idempotency key: two runs in
     * one second (a SIGUSR1 right after a run) must not share it, or a
     * subscriber deduping on the key would drop the second run's events.
     * Milliseconds and 16 random bits make it unique. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char t[32];
    strftime(t, sizeof(t), "%Y%m%dT%H%M%S", &tm);
    unsigned short rnd = 0;
    if (getrandom(&rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
        rnd = (unsigned short)ts.tv_nsec;
    snprintf(bt->run_id, sizeof(bt->run_id), "%s.%zu.%s.%03ldZ-%04x", bt->b->name, bt->index, t, ts.tv_nsec / 1000000,
             rnd);
    bt->running = true;
    bt->cursor[0] = '\0';
    bt->prev_first[0] = '\0';
    bt->chunk_no = 0;
    bt->item_no = 0;
    bt->token = token;
    sg_scan_end(&bt->scan, false);
    bt->scan = sg_scan_begin(bt->n, bt->b, bt->index, false);
    const char *l[] = {bt->b->name, "started"};
    rf_metric_add(sg_m.batches, l, 1);
    rf_info("storgate batch %s: started (%s, path %s, workflow %s)", bt->run_id, bt->ev->schedule, bt->ev->path,
            bt->wf->name);
    s_save(bt);
}

bool sg_batches_tick(sg_batches_t *self, bool now_all)
{
    uint64_t token = 0;
    bool lead = sg_leader_tick(self->n->leader, &token);
    rf_metric_set(sg_m.leader, NULL, lead ? 1 : 0);
    if (lead && !self->leading) { /* a new term: pick up what a previous leader left */
        rf_info("storgate: %s leads (fencing token %llu)", self->n->node, (unsigned long long)token);
        const char *prev = sg_leader_took_from(self->n->leader);
        if (prev != NULL) /* no hand-out (https://): the last holder ran the items, and stopped */
            rf_warn("storgate: took the lease of %s, which stopped renewing it: %d of its webhook(s) adopted", prev,
                    sg_item_adopt(self->n, prev));
        for (size_t i = 0; i < self->nv; i++) {
            sg_scan_end(&self->v[i].scan, false); /* a resumed run: another leader listed part of it */
            s_load(&self->v[i]);
            self->v[i].token = token;
        }
    }
    if (!lead && self->leading) {
        rf_warn("storgate: %s no longer leads; runs in progress stay where they are for the next leader",
                self->n->node);
        for (size_t i = 0; i < self->nv; i++)
            sg_scan_end(&self->v[i].scan, false);
    }
    self->leading = lead;
    atomic_store(&self->n->leading, lead ? 1 : 0);
    if (!lead)
        return false;
    int64_t now = (int64_t)time(NULL);
    if (self->n->dist != NULL && now != self->last_reap) { /* about once a second */
        self->last_reap = now;
        sg_dist_reap(self->n->dist);
    }
    for (size_t i = 0; i < self->nv; i++) {
        sg_batch_t *bt = &self->v[i];
        bt->token = token;
        if (bt->chunk != NULL) {
            int left = bt->n->dist != NULL && !bt->chunk->local ? sg_dist_chunk_left(bt->n->dist, bt->chunk)
                                                                : atomic_load(&bt->chunk->left);
            if (left > 0)
                continue;
            s_chunk_finish(bt);
        }
        if (!bt->running && (now_all || (bt->next_at > 0 && now >= bt->next_at)))
            s_run_start(bt, token);
        if (bt->running && bt->chunk == NULL)
            s_next_chunk(bt);
    }
    return true;
}

sg_batches_t *sg_batches_new(sg_node_t *n, char *why, size_t why_len)
{
    sg_batches_t *self = calloc(1, sizeof(*self));
    if (self == NULL)
        return NULL;
    self->n = n;
    size_t total = 0;
    for (size_t b = 0; b < n->sc->n_buckets; b++)
        total += n->sc->buckets[b].n_on_batch;
    self->v = calloc(total ? total : 1, sizeof(*self->v));
    if (self->v == NULL) {
        free(self);
        return NULL;
    }
    int64_t now = (int64_t)time(NULL);
    for (size_t b = 0; b < n->sc->n_buckets; b++) {
        const rf_sg_bucket_t *bk = &n->sc->buckets[b];
        for (size_t i = 0; i < bk->n_on_batch; i++) {
            const rf_sg_event_t *ev = &bk->on_batch[i];
            if (!bk->enable || !ev->enable)
                continue;
            const rf_sg_workflow_t *wf = rf_sgconf_workflow(bk, ev->workflow);
            if (wf == NULL || !wf->enable) {
                rf_warn("storgate: bucket %s onBatch %zu has no enabled workflow: skipped", bk->name, i);
                continue;
            }
            sg_batch_t *bt = &self->v[self->nv];
            char cwhy[200];
            if (rf_cron_parse(ev->schedule, &bt->cron, cwhy, sizeof(cwhy)) < 0) {
                snprintf(why, why_len, "bucket %s onBatch %zu: schedule '%s': %s", bk->name, i, ev->schedule, cwhy);
                sg_batches_destroy(&self);
                return NULL;
            }
            bt->n = n;
            bt->b = bk;
            bt->ev = ev;
            bt->wf = wf;
            bt->index = i;
            bt->next_at = rf_cron_next(&bt->cron, now, false);
            self->nv++;
        }
    }
    return self;
}

void sg_batches_destroy(sg_batches_t **self_p)
{
    if (self_p == NULL || *self_p == NULL)
        return;
    sg_batches_t *self = *self_p;
    for (size_t i = 0; i < self->nv; i++) {
        free(self->v[i].chunk); /* its items were freed by the item threads, or are never run */
        sg_scan_end(&self->v[i].scan, false);
    }
    free(self->v);
    free(self);
    *self_p = NULL;
}
