/*  gw_srcache — the sources of function requests through the edge cache
 *  (a vhost's `cache.sources`, docs/image.md "Sources from the cache").
 *
 *  Without it, every function request on an http(s) origin fetches its
 *  whole source again: ten sizes of one photo are ten downloads, and each
 *  crosses the gateway into a spool file or the bus. With it, the source
 *  is a cache object of its own — the one a plain GET of the source path
 *  makes, under the same key — filled once (collapsed like any fill,
 *  revalidated when it expires) and handed to the worker as a file
 *  reference into the cache: the object's file, at the offset where its
 *  body starts (proto/rfb.md 2.2 `source.offset`). The worker maps it; no
 *  byte of the source crosses a socket after the first fill.
 *
 *  gw_srcache_get is called by the transform (gw_transform.c) and answers
 *  through the callback it passes: a file reference once the object is
 *  complete on disk, or "fetch it yourself" (ref NULL) when the cache
 *  cannot give one (a status other than 200, an object kept in memory
 *  only or not kept, a failed fill, a source over the function's limit),
 *  so the transform's usual path answers exactly as before.
 *
 *  The wait: a cursor on the object whose wake-up posts a message to the
 *  request's thread (source_receiver), as gw_serve.c's readers do; the
 *  waiter is malloc'd, not in the request pool, because a wake-up may be
 *  queued when the client leaves.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gw.h"
#include "rf_log.h"
#include "rf_store.h"

typedef struct {
    h2o_multithread_message_t msg; /* first: the receiver's link */
    rf_cursor_t cur;
    gw_thread_t *thread;
    gw_req_t *rc; /* NULL once the request is gone */
    gw_srcache_cb *cb;
    atomic_bool queued;
    bool dead;
} s_wait_t;

static void s_wait_free(s_wait_t *w)
{
    rf_cursor_close(&w->cur);
    free(w);
}

static void s_wait_dispose(void *p)
{
    s_wait_t *w = *(s_wait_t **)p;
    if (w == NULL)
        return;
    /* After close no wake-up can start; one already posted is queued. */
    rf_cursor_close(&w->cur);
    w->rc = NULL;
    if (atomic_load(&w->queued))
        w->dead = true;
    else
        free(w);
}

/* rf_waiter_t callback: on the filler's thread, under the object's lock. */
static void s_wake(rf_waiter_t *wt)
{
    s_wait_t *w = H2O_STRUCT_FROM_MEMBER(s_wait_t, cur.waiter, wt);
    if (!atomic_exchange(&w->queued, true))
        h2o_multithread_send_message(&w->thread->source_receiver, &w->msg);
}

/* The stored headers as the origin's (in the request pool): the worker's
 * content type and the result's freshness come from them. */
static h2o_headers_t *s_headers(gw_req_t *rc, rf_obj_t *o)
{
    h2o_mem_pool_t *pool = &rc->req->pool;
    h2o_headers_t *h = h2o_mem_alloc_pool(pool, sizeof(*h));
    memset(h, 0, sizeof(*h));
    size_t hl, at = 0;
    const char *blob = rf_obj_headers(o, &hl);
    gw_stored_line_t l;
    while (gw_stored_next(blob, hl, &at, &l))
        if (l.name[0] != ':')
            h2o_add_header_by_str(pool, h, h2o_strdup(pool, l.name, l.name_len).base, l.name_len, 0, NULL,
                                  h2o_strdup(pool, l.value, l.value_len).base, l.value_len);
    return h;
}

/* The fill ended (or never will): hand the request a reference, or send
 * it the usual way. Consumes w. */
static void s_finish(s_wait_t *w, rf_read_t r)
{
    gw_req_t *rc = w->rc;
    gw_srcache_cb *cb = w->cb;
    rf_obj_t *o = w->cur.obj;
    char path[4096];
    uint64_t off = 0, len = 0;
    const char *why = NULL;
    if (r != RF_READ_EOF)
        why = r == RF_READ_PASS ? "not shareable" : "the fill failed";
    else if (rf_obj_meta(o)->status != 200)
        why = "not a 200";
    else if (rf_obj_file(o, path, sizeof(path), &off, &len) < 0)
        why = "not kept on disk";
    else if (len > rc->func->source_limit(rc->vhost))
        why = "over the function's limit";
    h2o_headers_t *headers = why == NULL ? s_headers(rc, o) : NULL;
    rf_obj_ref(o);
    *(s_wait_t **)rc->srcache_hook = NULL;
    s_wait_free(w);
    if (why != NULL) {
        rf_log(RF_LOG_DEBUG, rc->request_id, "source from the cache: %s; fetching it", why);
        cb(rc, NULL, 0, 0, NULL, NULL);
    } else {
        cb(rc, path, off, len, headers, o);
    }
    rf_obj_unref(&o);
}

static void s_pull(s_wait_t *w)
{
    rf_read_t r = rf_cursor_wait_end(&w->cur);
    if (r != RF_READ_WAIT)
        s_finish(w, r);
}

void gw_srcache_on_wake(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages)
{
    (void)receiver;
    while (!h2o_linklist_is_empty(messages)) {
        s_wait_t *w = H2O_STRUCT_FROM_MEMBER(s_wait_t, msg.link, messages->next);
        h2o_linklist_unlink(&w->msg.link);
        atomic_store(&w->queued, false);
        if (w->dead) {
            free(w);
            continue;
        }
        s_pull(w);
    }
}

/* The key a plain GET of the source path has (gw_lookup.c s_key: no query,
 * no function), in the request pool. */
static h2o_iovec_t s_source_key(gw_req_t *rc)
{
    size_t vl = strlen(rc->vhost->name);
    char *k = h2o_mem_alloc_pool(&rc->req->pool, vl + 1 + rc->src.len + 3);
    memcpy(k, rc->vhost->name, vl);
    k[vl] = '\n';
    memcpy(k + vl + 1, rc->src.base, rc->src.len);
    memcpy(k + vl + 1 + rc->src.len, "\n:", 3);
    return h2o_iovec_init(k, vl + 1 + rc->src.len + 2);
}

static bool s_fresh(rf_obj_t *o)
{
    uint32_t flags = 0;
    return rf_obj_expires(o, &flags) > (int64_t)time(NULL) && !(flags & (RF_META_NO_CACHE | RF_META_MUST_REVALIDATE));
}

/* Starts the fill of the source object as if the request were a plain GET
 * of the source path (the fill copies what it needs). 0, or -1 when it
 * could not start (the client has been answered). */
static int s_fill(gw_req_t *rc, rf_obj_t *o, rf_obj_t *stale, h2o_iovec_t key)
{
    h2o_iovec_t path = rc->path, query = rc->query, k = rc->key;
    rc->path = rc->src;
    rc->query = h2o_iovec_init("", 0);
    rc->key = key;
    int r = gw_fill_start(rc, o, stale, false);
    rc->path = path;
    rc->query = query;
    rc->key = k;
    return r;
}

int gw_srcache_get(gw_req_t *rc, gw_srcache_cb *cb)
{
    const rf_vhost_conf_t *vh = rc->vhost;
    rf_store_t *store = rc->thread->server->store;
    if (!vh->cache.sources || !vh->cache.enable || store == NULL || rc->byclient != NULL ||
        vh->origin.kind != RF_ORIGIN_HTTP || rc->func->source != GW_SOURCE_WHOLE ||
        !rc->thread->server->cfg->bus.file_refs)
        return 0;
    h2o_iovec_t key = s_source_key(rc);
    rf_obj_t *o = NULL, *stale = NULL;
    rf_lookup_t found = rf_store_lookup(store, key.base, key.len, true, false, &o);
    if (found == RF_LOOKUP_HIT && !s_fresh(o)) { /* expired: refresh it, revalidating against it */
        stale = o;
        o = NULL;
        found = rf_store_lookup(store, key.base, key.len, true, true, &o);
    }
    if (found == RF_LOOKUP_MISS) {
        rf_obj_unref(&stale);
        return 0;
    }
    if (found == RF_LOOKUP_CLAIM && s_fill(rc, o, stale, key) < 0) {
        rf_obj_unref(&stale);
        rf_obj_unref(&o);
        return 1; /* answered */
    }
    rf_obj_unref(&stale);
    s_wait_t *w = calloc(1, sizeof(*w));
    s_wait_t **hook = h2o_mem_alloc_shared(&rc->req->pool, sizeof(*hook), s_wait_dispose);
    *hook = w;
    if (w == NULL) {
        rf_obj_unref(&o);
        return 0;
    }
    w->thread = rc->thread;
    w->rc = rc;
    w->cb = cb;
    atomic_init(&w->queued, false);
    rc->srcache_hook = hook;
    int ok = rf_cursor_init(&w->cur, o, found == RF_LOOKUP_CLAIM, s_wake);
    rf_obj_unref(&o);
    if (ok < 0) { /* evicted between the lookup and now */
        *hook = NULL;
        s_wait_free(w);
        return 0;
    }
    s_pull(w);
    return 1;
}
