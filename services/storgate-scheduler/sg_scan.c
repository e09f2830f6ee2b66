/*  sg_scan — onPut and onDelete raised by what a batch run lists (sg.h):
 *  changes made beside the S3 API (a file dropped into a mount's
 *  directory, an NFS landing zone, a file removed by hand) that no S3
 *  request announced.
 *
 *  Each onBatch of a bucket whose onPut or onDelete is enabled keeps the
 *  keys its last completed run listed (size and modification time) in
 *  STATE/scans/BUCKET.INDEX — local files only, and only those storgate
 *  did not write as they are now (rf_sgfs_stat_t.stored): what the S3 API
 *  or a workflow writes is announced by that request, not again here. A new run compares what it lists with that:
 *    - a key that was not there, or whose size or time changed: onPut;
 *    - at the run's end, a key that was there, was not listed and is gone
 *      now: onDelete (one the run's own workflow removed or moved, an
 *      onComplete.src delete or move, was listed: it raises nothing).
 *  Events go through the event files the gateway writes too
 *  (rf_sgevent_write), each event's own filter applied, so they wait for
 *  the leader and run at least once like any other.
 *
 *  The first run with no snapshot only records one (a baseline: a new
 *  scheduler does not announce every existing file). A run resumed by
 *  another leader raises nothing and keeps the old snapshot (the keys the
 *  first leader listed are not known here). At most SG_SCAN_MAX keys are
 *  kept; a path with more is not scanned for events (logged once a run).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "rf_log.h"
#include "rf_sgevent.h"
#include "sg.h"
#include "sg_snap.h"

#define SG_SCAN_MAX 1000000

typedef struct {
    char *key;
    uint64_t size;
    int64_t mtime_ns;
} s_rec_t;

typedef struct {
    s_rec_t *v;
    size_t n, cap;
} s_set_t;

struct sg_scan_t {
    sg_node_t *n;
    const rf_sg_bucket_t *b;
    char path[800];  /* the snapshot file */
    char label[128]; /* BUCKET.INDEX, for logs */
    bool baseline;   /* no snapshot yet: record, raise nothing */
    bool over;       /* more than SG_SCAN_MAX keys: given up for this run */
    s_set_t prev, cur;
    int puts, deletes;
};

static void s_set_clear(s_set_t *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->v[i].key);
    free(s->v);
    memset(s, 0, sizeof(*s));
}

static int s_set_add(s_set_t *s, const char *key, uint64_t size, int64_t mtime_ns)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 1024;
        s_rec_t *v = realloc(s->v, cap * sizeof(*v));
        if (v == NULL)
            return -1;
        s->v = v, s->cap = cap;
    }
    if ((s->v[s->n].key = strdup(key)) == NULL)
        return -1;
    s->v[s->n].size = size;
    s->v[s->n++].mtime_ns = mtime_ns;
    return 0;
}

static int s_rec_cmp(const void *a, const void *b)
{
    return strcmp(((const s_rec_t *)a)->key, ((const s_rec_t *)b)->key);
}

static const s_rec_t *s_find(const s_set_t *s, const char *key)
{
    s_rec_t probe = {.key = (char *)key};
    return s->n ? bsearch(&probe, s->v, s->n, sizeof(*s->v), s_rec_cmp) : NULL;
}

/* Sorts by key and drops repeats (a cursor-reset run lists keys again). */
static void s_set_sort(s_set_t *s)
{
    if (s->n < 2)
        return;
    qsort(s->v, s->n, sizeof(*s->v), s_rec_cmp);
    size_t o = 1;
    for (size_t i = 1; i < s->n; i++) {
        if (strcmp(s->v[i].key, s->v[o - 1].key) == 0) {
            free(s->v[o - 1].key);
            s->v[o - 1] = s->v[i]; /* the later listing's size and time */
        } else {
            s->v[o++] = s->v[i];
        }
    }
    s->n = o;
}

static int s_prev_add(void *arg, const char *key, uint64_t size, int64_t mtime_ns)
{
    return s_set_add(arg, key, size, mtime_ns);
}

/* The snapshot (sg_snap.h), in key order. 1 loaded, 0 none, -1 damaged
 * or unreadable (treated as none: a baseline). */
static int s_load(sg_scan_t *s)
{
    FILE *f = fopen(s->path, "r");
    if (f == NULL)
        return errno == ENOENT ? 0 : -1;
    int rc = sg_snap_read(f, RF_SGFS_KEY_MAX, SG_SCAN_MAX, s_prev_add, &s->prev) < 0 ? -1 : 1;
    fclose(f);
    if (rc < 0) {
        rf_warn("storgate scan %s: %s is damaged: taken as a new baseline", s->label, s->path);
        s_set_clear(&s->prev);
    }
    s_set_sort(&s->prev);
    return rc;
}

static int s_save(sg_scan_t *s)
{
    char tmp[820];
    snprintf(tmp, sizeof(tmp), "%s.tmp", s->path);
    FILE *f = fopen(tmp, "w");
    if (f == NULL)
        return -1;
    bool ok = true;
    for (size_t i = 0; ok && i < s->cur.n; i++)
        ok = sg_snap_write(f, s->cur.v[i].key, s->cur.v[i].size, s->cur.v[i].mtime_ns) == 0;
    ok = ok && fflush(f) == 0 && fsync(fileno(f)) == 0;
    ok = fclose(f) == 0 && ok;
    if (!ok || rename(tmp, s->path) < 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

static bool s_on(const rf_sg_bucket_t *b, const rf_sg_event_t *ev)
{
    const rf_sg_workflow_t *wf = ev->enable ? rf_sgconf_workflow(b, ev->workflow) : NULL;
    return wf != NULL && wf->enable;
}

sg_scan_t *sg_scan_begin(sg_node_t *n, const rf_sg_bucket_t *b, size_t index, bool resumed)
{
    if (resumed || (!s_on(b, &b->on_put) && !s_on(b, &b->on_delete)))
        return NULL;
    sg_scan_t *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->n = n;
    s->b = b;
    snprintf(s->label, sizeof(s->label), "%s.%zu", b->name, index);
    char dir[600];
    snprintf(dir, sizeof(dir), "%s/scans", n->state_dir);
    if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
        rf_error("storgate scan %s: cannot create %s: %s", s->label, dir, strerror(errno));
        free(s);
        return NULL;
    }
    snprintf(s->path, sizeof(s->path), "%s/%s", dir, s->label);
    s->baseline = s_load(s) != 1;
    return s;
}

/* Writes one event file; counted, or logged when it cannot be written. */
static void s_raise(sg_scan_t *s, const char *kind, const rf_sg_event_t *ev, const char *key, uint64_t size,
                    int64_t mtime_ns)
{
    if (!s_on(s->b, ev) || !rf_sgevent_filter_ok(ev, key, (int64_t)size, mtime_ns / 1000000000, (int64_t)time(NULL)))
        return;
    char id[48];
    if (rf_sgevent_write(s->n->state_dir, kind, s->b->name, key, (int64_t)size, NULL, id, sizeof(id)) < 0) {
        rf_error("storgate scan %s: cannot raise %s for /%s: %s", s->label, kind, key, strerror(errno));
        return;
    }
    rf_info("storgate %s: %s raised by a batch scan for /%s", id, kind, key);
    *(strcmp(kind, "onPut") == 0 ? &s->puts : &s->deletes) += 1;
}

/* Whether key names a local file storgate did not write as it is now. */
static bool s_beside(const rf_sg_bucket_t *b, const char *key)
{
    rf_sgfs_loc_t loc;
    rf_sgfs_stat_t st;
    const char *why;
    return rf_sgfs_resolve(b, key, strlen(key), false, RF_SGFS_INTERNAL, &loc, &why) == 0 &&
           rf_sgfs_stat(&loc, &st) == 0 && !st.is_dir && !st.stored;
}

void sg_scan_saw(sg_scan_t *s, const char *key, uint64_t size, int64_t mtime_ns)
{
    if (s == NULL || s->over || !s_beside(s->b, key))
        return; /* written through the S3 API or by a workflow: that request announced it */
    if (s->cur.n >= SG_SCAN_MAX || s_set_add(&s->cur, key, size, mtime_ns) < 0) {
        rf_warn("storgate scan %s: more than %d keys (or out of memory): no scan events this run", s->label,
                SG_SCAN_MAX);
        s->over = true;
        return;
    }
    if (s->baseline)
        return;
    const s_rec_t *p = s_find(&s->prev, key);
    if (p == NULL || p->size != size || p->mtime_ns != mtime_ns)
        s_raise(s, "onPut", &s->b->on_put, key, size, mtime_ns);
}

/* Whether key names an object now (the internal view: hidden mounts too). */
static bool s_exists(const rf_sg_bucket_t *b, const char *key)
{
    rf_sgfs_loc_t loc;
    rf_sgfs_stat_t st;
    const char *why;
    return rf_sgfs_resolve(b, key, strlen(key), false, RF_SGFS_INTERNAL, &loc, &why) == 0 &&
           rf_sgfs_stat(&loc, &st) == 0 && !st.is_dir;
}

void sg_scan_end(sg_scan_t **self_p, bool completed)
{
    sg_scan_t *s = *self_p;
    *self_p = NULL;
    if (s == NULL)
        return;
    if (completed && !s->over) {
        s_set_sort(&s->cur);
        for (size_t i = 0; !s->baseline && i < s->prev.n; i++)
            if (s_find(&s->cur, s->prev.v[i].key) == NULL && !s_exists(s->b, s->prev.v[i].key))
                s_raise(s, "onDelete", &s->b->on_delete, s->prev.v[i].key, s->prev.v[i].size, s->prev.v[i].mtime_ns);
        /* what the run's own workflow removed or moved is not there for the next one */
        size_t o = 0;
        for (size_t i = 0; i < s->cur.n; i++) {
            if (s_exists(s->b, s->cur.v[i].key))
                s->cur.v[o++] = s->cur.v[i];
            else
                free(s->cur.v[i].key);
        }
        s->cur.n = o;
        if (s_save(s) < 0)
            rf_error("storgate scan %s: cannot save %s: %s", s->label, s->path, strerror(errno));
        rf_info("storgate scan %s: %zu key(s) %s; %d onPut, %d onDelete raised", s->label, s->cur.n,
                s->baseline ? "recorded (a baseline)" : "seen", s->puts, s->deletes);
    }
    s_set_clear(&s->prev);
    s_set_clear(&s->cur);
    free(s);
}
