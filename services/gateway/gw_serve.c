/*  gw_serve — answers a request from a cache object: a hit, or a fill in
 *  progress that any number of requests follow at their own pace.
 *
 *  A reader is a cursor on the object plus an h2o generator. It reads what
 *  the object holds, sends it, and on proceed reads on; when it has caught
 *  up with the fill it arms the cursor's waiter, and the fill's next append
 *  (on whichever thread runs it) posts a message to this thread's
 *  cache_receiver, which pulls again. A complete object held in memory is
 *  sent in one piece straight from the shared buffer.
 *
 *  Hits answer conditional requests (304) and single byte ranges (206,
 *  If-Range) themselves; the origin is not asked.
 *
 *  Lifetime: readers are malloc'd, not pool-allocated, because a wake-up
 *  message may still sit in this thread's queue when the request is freed;
 *  the reader is then marked dead and freed when the message is drained.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gw.h"
#include "gw_http_parse.h"
#include "rf_log.h"

/* Bytes copied per send while following a fill or reading from disk. */
#define GW_SERVE_CHUNK (256 * 1024)

typedef struct {
    h2o_generator_t super; /* first: h2o hands it back */
    h2o_multithread_message_t msg;
    atomic_bool queued;
    bool dead, started, done, sending, pass, head_sent;
    gw_thread_t *thread;
    gw_req_t *rc;
    rf_cursor_t cur;
    uint64_t total;  /* body length when known at start, else UINT64_MAX */
    rf_buf_t *body;  /* zero-copy send of a complete in-memory object */
    char *buf;
} gw_reader_t;

static void s_reader_free(gw_reader_t *r)
{
    rf_buf_unref(&r->body);
    free(r->buf);
    free(r);
}

/* Pool dispose hook: the request is gone. */
static void s_reader_dispose(void *p)
{
    gw_reader_t *r = *(gw_reader_t **)p;
    if (r == NULL)
        return;
    /* After close no wake-up can start (they run under the object's lock,
     * which close takes); one already posted is still queued. */
    rf_cursor_close(&r->cur);
    r->rc = NULL;
    if (atomic_load(&r->queued))
        r->dead = true;
    else
        s_reader_free(r);
}

/* rf_waiter_t callback: on the filler's thread, under the object's lock. */
static void s_wake(rf_waiter_t *w)
{
    gw_reader_t *r = H2O_STRUCT_FROM_MEMBER(gw_reader_t, cur.waiter, w);
    if (!atomic_exchange(&r->queued, true))
        h2o_multithread_send_message(&r->thread->cache_receiver, &r->msg);
}

/* ---- the response head ---------------------------------------------------------- */

static int64_t s_now(void)
{
    return (int64_t)time(NULL);
}

/* The stored response's validators; they borrow from the header blob. */
static gw_validators_t s_validators(const char *hdrs, size_t hlen)
{
    gw_validators_t v = {0};
    v.etag = gw_stored_header(hdrs, hlen, "etag", &v.etag_len);
    v.last_modified = gw_stored_header(hdrs, hlen, "last-modified", &v.last_modified_len);
    return v;
}

/* A request header's value, or NULL (borrowed from the request). */
static const char *s_req_header(h2o_req_t *req, const h2o_token_t *token, size_t *len)
{
    ssize_t i = h2o_find_header(&req->headers, token, -1);
    if (i < 0)
        return NULL;
    *len = req->headers.entries[i].value.len;
    return req->headers.entries[i].value.base;
}

/* Whether the client's validators match the stored response. */
static bool s_not_modified(h2o_req_t *req, const gw_validators_t *stored)
{
    size_t inm_len = 0, ims_len = 0;
    const char *inm = s_req_header(req, H2O_TOKEN_IF_NONE_MATCH, &inm_len);
    const char *ims = s_req_header(req, H2O_TOKEN_IF_MODIFIED_SINCE, &ims_len);
    return gw_not_modified(inm, inm_len, ims, ims_len, stored);
}

/* One byte range of a body of `total` bytes, as gw_parse_range answers;
 * a Range whose If-Range no longer matches is no Range (the whole body). */
static int s_range(h2o_req_t *req, const gw_validators_t *stored, uint64_t total, uint64_t *from, uint64_t *to)
{
    size_t len = 0, clen = 0;
    const char *v = s_req_header(req, H2O_TOKEN_RANGE, &len);
    if (v == NULL)
        return 0;
    const char *cond = s_req_header(req, H2O_TOKEN_IF_RANGE, &clen);
    if (cond != NULL && !gw_if_range_ok(cond, clen, stored))
        return 0;
    return gw_parse_range(v, len, total, from, to);
}

/* The Cache-Status value for this answer (RFC 9211). */
static const char *s_cache_status(gw_req_t *rc, rf_obj_t *o, rf_keep_t keep, int64_t now)
{
    char buf[128];
    const rf_meta_t *m = rf_obj_meta(o);
    int64_t ttl = rf_obj_expires(o, NULL) - now;
    bool stored = keep == RF_KEEP_DISK || keep == RF_KEEP_MEMORY;
    switch (rc->role) {
    case GW_CACHE_HIT:
        snprintf(buf, sizeof(buf), "refract; hit; ttl=%lld", (long long)ttl);
        break;
    case GW_CACHE_STALE: /* RFC 9211: a negative ttl is a stale hit */
        snprintf(buf, sizeof(buf), "refract; hit; ttl=%lld; detail=stale-while-revalidate", (long long)ttl);
        break;
    case GW_CACHE_JOIN:
        snprintf(buf, sizeof(buf), "refract; fwd=miss; %s%s; ttl=%lld",
                 rc->storage_hit ? "detail=storage-hit" : "collapsed", stored ? "; stored" : "",
                 (long long)(ttl > 0 ? ttl : 0));
        break;
    default:
        if (m->fwd_status != 0 && m->fwd_status != 304) { /* the circuit breaker */
            snprintf(buf, sizeof(buf), "refract; fwd=stale; fwd-status=%d; detail=origin-error; ttl=%lld",
                     m->fwd_status, (long long)(ttl > 0 ? ttl : 0));
            break;
        }
        snprintf(buf, sizeof(buf), "refract; fwd=%s; fwd-status=%d%s; ttl=%lld",
                 rc->role == GW_CACHE_REFRESH ? "stale" : "miss", m->fwd_status ? m->fwd_status : m->status,
                 stored                    ? "; stored"
                 : keep == RF_KEEP_SOLO    ? "; detail=uncacheable"
                                           : "",
                 (long long)(ttl > 0 ? ttl : 0));
    }
    return h2o_strdup(&rc->req->pool, buf, SIZE_MAX).base;
}

/* ---- sending ---------------------------------------------------------------------- */

static void s_pull(gw_reader_t *r);

static void s_on_proceed(h2o_generator_t *g, h2o_req_t *req)
{
    (void)req;
    gw_reader_t *r = (gw_reader_t *)g;
    r->sending = false;
    s_pull(r);
}

static void s_on_stop(h2o_generator_t *g, h2o_req_t *req)
{
    (void)req;
    gw_reader_t *r = (gw_reader_t *)g;
    r->done = true;
}

/* The object is not shareable: this request fetches on its own. */
static void s_pass(gw_reader_t *r)
{
    gw_req_t *rc = r->rc;
    r->done = true;
    rf_cursor_close(&r->cur);
    rc->cache_status = "refract; fwd=miss; detail=uncacheable";
    rc->cache_result = "uncacheable";
    gw_fetch(rc);
}

/* Whether the response being filled (its head known) varies on request
 * headers whose values differ from this request's. */
static bool s_other_variant(gw_reader_t *r)
{
    size_t hl, vl, sl;
    const char *blob = rf_obj_headers(r->cur.obj, &hl);
    const char *vary = gw_stored_header(blob, hl, "vary", &vl);
    if (vary == NULL)
        return false;
    h2o_iovec_t mine = gw_vary_values(h2o_iovec_init(vary, vl), &r->rc->req->headers, &r->rc->req->pool);
    const char *stored = gw_stored_header(blob, hl, ":vary", &sl);
    return stored == NULL || sl != mine.len || memcmp(stored, mine.base, sl) != 0;
}

/* Starts the response once the head is known: status, stored headers,
 * Age, and the client's conditional or Range. Returns 0 to send the body,
 * 1 when the answer is complete (HEAD, 304, 416). */
static int s_start(gw_reader_t *r)
{
    gw_req_t *rc = r->rc;
    h2o_req_t *req = rc->req;
    rf_obj_t *o = r->cur.obj;
    const rf_meta_t *m = rf_obj_meta(o);
    size_t hlen;
    const char *hdrs = rf_obj_headers(o, &hlen);
    int64_t now = s_now();
    bool complete = rf_obj_state(o) == RF_OBJ_COMPLETE;
    uint64_t total = complete ? rf_obj_length(o) : m->length >= 0 ? (uint64_t)m->length : UINT64_MAX;
    rc->cache_status = s_cache_status(rc, o, rf_obj_keep(o), now);
    req->res.status = m->status;
    req->res.reason = gw_reason(m->status);
    size_t at = 0;
    gw_stored_line_t l;
    while (gw_stored_next(hdrs, hlen, &at, &l)) {
        if (strcmp(l.name, "age") == 0 || strcmp(l.name, "accept-ranges") == 0 || l.name[0] == ':')
            continue; /* Age and Accept-Ranges are the cache's to say; ":" lines are its own */
        h2o_add_header_by_str(&req->pool, &req->res.headers, l.name, l.name_len, 1, NULL, l.value, l.value_len);
    }
    size_t vl;
    if (gw_stored_header(hdrs, hlen, "vary", &vl) == NULL && gw_compress_applies(rc, o))
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_VARY, NULL, H2O_STRLIT("accept-encoding"));
    int64_t age = m->age + (now - m->stored_at);
    if (rc->role == GW_CACHE_HIT || rc->role == GW_CACHE_STALE || age > 0) {
        char a[24];
        int al = snprintf(a, sizeof(a), "%lld", (long long)(age > 0 ? age : 0));
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_AGE, NULL, h2o_strdup(&req->pool, a, (size_t)al).base,
                       (size_t)al);
    }
    h2o_iovec_t method = req->method;
    bool head = h2o_memis(method.base, method.len, H2O_STRLIT("HEAD"));
    r->total = total;
    /* only a 200 answers conditionals and ranges */
    gw_validators_t stored = m->status == 200 ? s_validators(hdrs, hlen) : (gw_validators_t){0};
    if (m->status == 200 && s_not_modified(req, &stored)) {
        req->res.status = 304;
        req->res.reason = "Not Modified";
        gw_deliver_headers(rc);
        h2o_start_response(req, &r->super);
        return 1;
    }
    if (m->status == 200 && total != UINT64_MAX) {
        uint64_t from = 0, to = 0;
        int rr = s_range(req, &stored, total, &from, &to);
        char cr[80];
        if (rr < 0) {
            req->res.status = 416;
            req->res.reason = "Range Not Satisfiable";
            int n = snprintf(cr, sizeof(cr), "bytes */%llu", (unsigned long long)total);
            h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_RANGE, NULL,
                           h2o_strdup(&req->pool, cr, (size_t)n).base, (size_t)n);
            req->res.content_length = 0;
            gw_deliver_headers(rc);
            h2o_start_response(req, &r->super);
            return 1;
        }
        if (rr > 0) {
            req->res.status = 206;
            req->res.reason = "Partial Content";
            int n = snprintf(cr, sizeof(cr), "bytes %llu-%llu/%llu", (unsigned long long)from,
                             (unsigned long long)to, (unsigned long long)total);
            h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_RANGE, NULL,
                           h2o_strdup(&req->pool, cr, (size_t)n).base, (size_t)n);
            r->cur.off = from;
            r->cur.end = to + 1;
            r->total = to + 1 - from;
        }
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ACCEPT_RANGES, NULL, H2O_STRLIT("bytes"));
    }
    if (r->total != UINT64_MAX)
        req->res.content_length = (size_t)r->total;
    gw_deliver_headers(rc);
    h2o_start_response(req, &r->super);
    return head || m->status == 204 || m->status == 304 ? 1 : 0;
}

static void s_send(gw_reader_t *r, const void *data, size_t len, h2o_send_state_t state)
{
    h2o_iovec_t v = h2o_iovec_init(data, len);
    if (state != H2O_SEND_STATE_IN_PROGRESS)
        r->done = true;
    else
        r->sending = true;
    h2o_send(r->rc->req, &v, len ? 1 : 0, state);
}

static void s_pull(gw_reader_t *r)
{
    if (r->done || r->sending || r->rc == NULL)
        return;
    if (!r->started) {
        switch (rf_cursor_head(&r->cur)) {
        case RF_READ_WAIT:
            return;
        case RF_READ_PASS:
            s_pass(r);
            return;
        case RF_READ_FAILED:
        case RF_READ_EOF: {
            /* The fill failed before a head: the same answer the
             * pass-through would have given (502/504 with the reason). */
            const char *why = "";
            int st = rf_obj_error(r->cur.obj, &why);
            r->done = true;
            if (r->rc->func != NULL) {
                /* The result was not kept (a fallback, an error): make
                 * this one's answer as if nothing had been cached. */
                rf_cursor_close(&r->cur);
                r->rc->cache_status = "refract; fwd=miss";
                r->rc->cache_result = "miss";
                gw_transform(r->rc);
                return;
            }
            if (st == 0)
                st = 502, why = "origin response failed";
            gw_send_error(r->rc, st, gw_reason(st), "%s", why);
            return;
        }
        case RF_READ_DATA:
            break;
        }
        if (r->rc->role == GW_CACHE_JOIN && s_other_variant(r)) {
            s_pass(r); /* the fill is another variant of this URL */
            return;
        }
        r->started = true;
        if (s_start(r) == 1) {
            s_send(r, NULL, 0, H2O_SEND_STATE_FINAL);
            return;
        }
        /* A complete object in memory goes out in one piece, no copy. */
        if ((r->body = rf_obj_body(r->cur.obj)) != NULL) {
            uint64_t end = r->cur.end < r->body->len ? r->cur.end : r->body->len;
            s_send(r, r->body->data + r->cur.off, (size_t)(end - r->cur.off), H2O_SEND_STATE_FINAL);
            return;
        }
    }
    if (r->buf == NULL && (r->buf = malloc(GW_SERVE_CHUNK)) == NULL) {
        s_send(r, NULL, 0, H2O_SEND_STATE_ERROR);
        return;
    }
    size_t n = 0;
    switch (rf_cursor_read(&r->cur, r->buf, GW_SERVE_CHUNK, &n)) {
    case RF_READ_DATA: {
        bool last = r->total != UINT64_MAX && r->cur.off >= (r->cur.end != UINT64_MAX ? r->cur.end : r->total);
        r->head_sent = true;
        s_send(r, r->buf, n, last ? H2O_SEND_STATE_FINAL : H2O_SEND_STATE_IN_PROGRESS);
        return;
    }
    case RF_READ_EOF:
        s_send(r, NULL, 0, H2O_SEND_STATE_FINAL);
        return;
    case RF_READ_WAIT:
        /* Nothing to send yet (the fill is behind this reader's range, or
         * the origin paused): the head goes out now, not with the first
         * body bytes, so the client knows at once what is coming. */
        if (!r->head_sent) {
            r->head_sent = true;
            s_send(r, NULL, 0, H2O_SEND_STATE_IN_PROGRESS);
        }
        return;
    case RF_READ_FAILED:
    case RF_READ_PASS:
        /* Mid-body: a broken transfer, never a short object presented
         * as whole. */
        s_send(r, NULL, 0, H2O_SEND_STATE_ERROR);
        return;
    }
}

void gw_serve_on_wake(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages)
{
    (void)receiver;
    while (!h2o_linklist_is_empty(messages)) {
        gw_reader_t *r = H2O_STRUCT_FROM_MEMBER(gw_reader_t, msg.link, messages->next);
        h2o_linklist_unlink(&r->msg.link);
        atomic_store(&r->queued, false);
        if (r->dead)
            s_reader_free(r);
        else
            s_pull(r);
    }
}

void gw_serve(gw_req_t *rc)
{
    rf_obj_t *obj = rc->obj;
    rc->obj = NULL;
    if ((rc->role == GW_CACHE_CLAIM || rc->role == GW_CACHE_REFRESH) && gw_fill_start(rc, obj, rc->stale, false) < 0) {
        rf_obj_unref(&obj);
        return; /* answered */
    }
    if (rc->refill != NULL) { /* stale-while-revalidate: the refresh runs on while the stale copy answers */
        rf_obj_t *n = rc->refill;
        rc->refill = NULL;
        gw_fill_start(rc, n, rc->stale, true);
        rf_obj_unref(&n);
    }
    gw_reader_t *r = calloc(1, sizeof(*r));
    gw_reader_t **hook = h2o_mem_alloc_shared(&rc->req->pool, sizeof(*hook), s_reader_dispose);
    if (r == NULL) {
        *hook = NULL;
        rf_obj_unref(&obj);
        gw_send_error(rc, 503, "Service Unavailable", "out of memory");
        return;
    }
    *hook = r;
    r->super.proceed = s_on_proceed;
    r->super.stop = s_on_stop;
    r->thread = rc->thread;
    r->rc = rc;
    atomic_init(&r->queued, false);
    bool first = rc->role == GW_CACHE_CLAIM || rc->role == GW_CACHE_REFRESH;
    if (rc->role == GW_CACHE_HIT) {
        rf_obj_t *v = gw_compress_variant(rc, obj);
        if (v != NULL)
            rf_obj_unref(&obj), obj = v;
    }
    int ok = rf_cursor_init(&r->cur, obj, first, s_wake);
    rf_obj_unref(&obj);
    if (ok < 0) {
        /* Evicted between lookup and open: serve it as a plain miss. */
        rf_cursor_close(&r->cur);
        r->done = true;
        rc->cache_status = "refract; fwd=miss";
        gw_fetch(rc);
        return;
    }
    s_pull(r);
}
