/*  sg_events — bucket events the gateway raised (onPut, onGet, onDelete),
 *  taken from STATE/events/ (sg.h).
 *
 *  The gateway writes one small JSON file per event that passes the
 *  bucket's filter (rf_sgevent_write: written, fsynced, renamed in), so an
 *  event raised while the scheduler is down waits for it. The leader queues
 *  each file's item once and removes the file only when the item's workflow
 *  is over (done or aborted): a scheduler killed meanwhile finds the file
 *  again at its next start, so an event runs at least once and at most one
 *  extra time.
 *
 *  onDelete: the source is gone; the workflow's tasks name their outputs as
 *  usual (savePath) and those outputs are removed — derived files follow
 *  their source.
 */
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rf_log.h"
#include "rf_sgevent.h"
#include "sg.h"

#define S_INFLIGHT_MAX 65536

struct sg_events_t {
    sg_node_t *n;
    char dir[600];
    /* names of event files queued and not finished: not queued again */
    pthread_mutex_t mu;
    char **inflight;
    size_t n_inflight;
};

static bool s_inflight_has(sg_events_t *e, const char *name)
{
    for (size_t i = 0; i < e->n_inflight; i++)
        if (strcmp(e->inflight[i], name) == 0)
            return true;
    return false;
}

sg_events_t *sg_events_new(sg_node_t *n)
{
    sg_events_t *e = calloc(1, sizeof(*e));
    if (e == NULL)
        return NULL;
    e->n = n;
    pthread_mutex_init(&e->mu, NULL);
    snprintf(e->dir, sizeof(e->dir), "%s/%s", n->state_dir, RF_SGEVENT_DIR);
    e->inflight = calloc(S_INFLIGHT_MAX, sizeof(char *));
    if (e->inflight == NULL) {
        free(e);
        return NULL;
    }
    return e;
}

void sg_events_destroy(sg_events_t **self_p)
{
    if (self_p == NULL || *self_p == NULL)
        return;
    sg_events_t *e = *self_p;
    for (size_t i = 0; i < e->n_inflight; i++)
        free(e->inflight[i]);
    free(e->inflight);
    pthread_mutex_destroy(&e->mu);
    free(e);
    *self_p = NULL;
}

void sg_events_done(sg_events_t *e, const char *name)
{
    char path[1000];
    snprintf(path, sizeof(path), "%s/%s", e->dir, name);
    unlink(path);
    pthread_mutex_lock(&e->mu);
    for (size_t i = 0; i < e->n_inflight; i++)
        if (strcmp(e->inflight[i], name) == 0) {
            free(e->inflight[i]);
            e->inflight[i] = e->inflight[--e->n_inflight];
            break;
        }
    pthread_mutex_unlock(&e->mu);
}

/* The item of one event file, or NULL (then the file is dropped, logged). */
static sg_item_t *s_item(sg_events_t *e, const char *name, const char *path)
{
    json_error_t jerr;
    json_t *j = json_load_file(path, 0, &jerr);
    const char *id = NULL, *kind = NULL, *bucket = NULL, *key = NULL;
    if (j == NULL || json_unpack(j, "{s:s, s:s, s:s, s:s}", "id", &id, "event", &kind, "bucket", &bucket, "key",
                                 &key) != 0) {
        rf_warn("storgate events: %s is not an event: dropped", name);
        json_decref(j);
        return NULL;
    }
    const rf_sg_bucket_t *b = rf_sgconf_bucket(e->n->sc, bucket, strlen(bucket));
    const rf_sg_event_t *ev = NULL;
    if (b != NULL)
        ev = strcmp(kind, "onPut") == 0 ? &b->on_put : strcmp(kind, "onGet") == 0 ? &b->on_get
             : strcmp(kind, "onDelete") == 0                                        ? &b->on_delete
                                                                                    : NULL;
    const rf_sg_workflow_t *wf = ev ? rf_sgconf_workflow(b, ev->workflow) : NULL;
    sg_item_t *it = NULL;
    if (ev == NULL || !ev->enable || wf == NULL || !wf->enable || strlen(key) > RF_SGFS_KEY_MAX) {
        rf_info("storgate events: %s (%s on %s/%s): no enabled event and workflow for it now: dropped", name,
                kind, bucket, key);
    } else if ((it = calloc(1, sizeof(*it))) != NULL) {
        it->bucket = b;
        it->event = ev;
        it->workflow = wf;
        it->deleted = strcmp(kind, "onDelete") == 0;
        snprintf(it->id, sizeof(it->id), "%s", id);
        snprintf(it->key, sizeof(it->key), "%s", key);
        snprintf(it->event_file, sizeof(it->event_file), "%.95s", name); /* shorter: checked when listed */
    }
    json_decref(j);
    return it;
}

void sg_events_tick(sg_events_t *e)
{
    DIR *d = opendir(e->dir);
    if (d == NULL)
        return;
    for (struct dirent *de; (de = readdir(d)) != NULL;) {
        const char *name = de->d_name;
        size_t l = strlen(name);
        if (name[0] == '.' || l < 6 || strcmp(name + l - 5, ".json") != 0 || l >= sizeof(((sg_item_t *)0)->event_file))
            continue;
        pthread_mutex_lock(&e->mu);
        bool skip = s_inflight_has(e, name) || e->n_inflight == S_INFLIGHT_MAX;
        if (!skip)
            e->inflight[e->n_inflight++] = strdup(name);
        pthread_mutex_unlock(&e->mu);
        if (skip)
            continue;
        char path[1000];
        snprintf(path, sizeof(path), "%s/%s", e->dir, name);
        sg_item_t *it = s_item(e, name, path);
        if (it == NULL) {
            sg_events_done(e, name);
            continue;
        }
        rf_info("storgate %s: %s event for /%s queued (workflow %s)", it->id,
                it->deleted ? "onDelete" : it->event == &it->bucket->on_get ? "onGet" : "onPut", it->key,
                it->workflow->name);
        sg_queue_push(e->n, it);
    }
    closedir(d);
}
