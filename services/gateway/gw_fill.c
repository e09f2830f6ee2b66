/*  gw_fill — writes one origin response into a cache object (rf_store.h).
 *
 *  A fill is started by the request that claimed the object, on its
 *  thread, but belongs to nobody: the readers (gw_serve.c) follow the
 *  object, not the fill. So a client that leaves does not stop an object
 *  that will be kept; one that will not be kept (SHARE, SOLO) stops when
 *  its last reader leaves.
 *
 *  The response head decides how the object is kept (rf_ttl.h): stored
 *  (disk, or memory for memory_only vhosts) with its TTL; shared by the
 *  readers already waiting and then dropped (TTL 0: the "fixed load"
 *  pattern — one origin transaction for any number of waiters); or, when
 *  it may not be shared at all (private, Authorization, no-store), kept
 *  for its first reader only, with the pass-through stream's back-pressure,
 *  while the other waiters fetch on their own (RF_READ_PASS).
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <xxhash.h>

#include "gw.h"
#include "gw_metrics.h"
#include "rf_log.h"
#include "rf_ttl.h"

typedef struct {
    rf_obj_t *obj; /* one reference */
    gw_thread_t *thread;
    gw_fetch_t *fetch; /* NULL once it ended */
    gw_vhosts_t *vhosts; /* one reference: keeps vhost valid */
    const rf_vhost_conf_t *vhost;
    char request_id[40];
    char upstream[300];
    int64_t request_time;
    bool req_authorization;
    h2o_timeout_entry_t resume; /* RF_KEEP_SOLO: the reader drained the window */
    /* A refresh: the expired object this fill replaces, read through its
     * own cursor (the object may leave the index meanwhile). */
    rf_cursor_t stale;
    bool has_stale;
    bool answered; /* the object was made from the stale copy: ignore the origin's body */
    /* The claimer's request headers (copied: the fill outlives it), for
     * the variant a Vary response is stored as. */
    h2o_mem_pool_t pool;
    h2o_headers_t req_headers;
    /* Content chain: the path asked (in pool), the client's address, and
     * how many links were followed. */
    h2o_iovec_t target;
    char peer[64];
    int hops;
    const rf_vhost_conf_t *link_vhost; /* the vhost last linked to */
    bool to_sibling; /* asking the sibling that owns the key: its failure falls back to our origin */
    bool headed;     /* a response head arrived */
    /* Collapsing across gateways: the query in flight, the origin request
     * waiting for its answer, and whether we hold the key's marker. */
    gw_meta_query_t mq;
    h2o_iovec_t pending_request;
    int pending_is_head;
    gw_upstream_t *pending_up;
    bool marker_held;
    rf_origin_t owner; /* the gateway that fills the key (parsed), when not us */
    char client_host[256];
} gw_fill_t;

static void s_fill_free(gw_fill_t *f)
{
    if (h2o_timeout_is_linked(&f->resume))
        h2o_timeout_unlink(&f->resume);
    if (f->fetch != NULL)
        gw_fetch_cancel(f->fetch);
    rf_obj_on_drain(f->obj, NULL, NULL); /* a SOLO reader may drain after this */
    if (f->marker_held) {
        gw_meta_query_t rel = f->mq;
        rel.release = true;
        gw_meta_ask(f->thread->server->meta, &rel);
    }
    rf_origin_clear(&f->owner);
    if (f->has_stale)
        rf_cursor_close(&f->stale);
    rf_obj_unref(&f->obj);
    gw_vhosts_unref(&f->vhosts);
    h2o_mem_clear_pool(&f->pool);
    free(f);
}

static int64_t s_now(void)
{
    return (int64_t)time(NULL);
}

static void s_fill_end(gw_fill_t *f, bool ok)
{
    rf_obj_finish(f->obj, ok);
    rf_keep_t keep = rf_obj_keep(f->obj); /* after finish: a fill that could not be kept says SHARE */
    ok = ok && rf_obj_state(f->obj) == RF_OBJ_COMPLETE;
    if (ok && f->marker_held && (keep == RF_KEEP_DISK || keep == RF_KEEP_MEMORY)) {
        /* Stored: the other gateways may fetch it from us while it is
         * fresh (the release enters it in Redis). */
        uint32_t flags = 0;
        int64_t left = rf_obj_expires(f->obj, &flags) - s_now();
        if (!(flags & (RF_META_MUST_REVALIDATE | RF_META_NO_CACHE)) && left > 0)
            f->mq.keep_ms = left * 1000;
    }
    const char *l[] = {f->vhost->name, !ok                    ? "failed"
                                       : keep == RF_KEEP_SOLO  ? "uncacheable"
                                       : keep == RF_KEEP_SHARE ? "shared"
                                                               : "stored"};
    rf_metric_add(gw_m.cache_fills, l, 1);
    s_fill_free(f);
}

/* Runs on the loop (zero timeout): resuming from inside the reader's
 * rf_cursor_read would re-enter the object's lock. */
static void s_on_resume(h2o_timeout_entry_t *e)
{
    gw_fill_t *f = H2O_STRUCT_FROM_MEMBER(gw_fill_t, resume, e);
    if (f->fetch != NULL)
        gw_fetch_resume(f->fetch);
}

/* rf_obj_on_drain callback: under the object's lock, on the reader's
 * thread — which for SOLO is this fill's thread (the claimer reads). */
static void s_drained(void *arg)
{
    gw_fill_t *f = arg;
    if (!h2o_timeout_is_linked(&f->resume))
        h2o_timeout_link(f->thread->ctx.loop, &f->thread->ctx.zero_timeout, &f->resume);
}

/* Whether an answer without freshness is still worth keeping, as a base
 * to revalidate before every use (a 304 costs no body): Cache-Control:
 * no-cache (RFC 9111 5.2.2.4) or an origin lifetime of 0 (max-age=0, an
 * Expires already past), with a validator. Not a TTL of 0 from the
 * vhost's rules: there it means "do not keep" (STON). */
static bool s_keep_to_revalidate(const rf_ttl_verdict_t *v)
{
    return v->storable && v->has_validator && (v->no_cache || (v->ttl <= 0 && v->source == RF_TTL_SRC_ORIGIN));
}

/* How the verdict keeps the object. */
static rf_keep_t s_keep(const gw_fill_t *f, const rf_ttl_verdict_t *v)
{
    /* Set-Cookie: not shared at all (as nginx and Varnish do by default):
     * the one client gets its cookies, nobody else sees them. */
    if (!v->storable || v->strip_set_cookie)
        return RF_KEEP_SOLO;
    if (s_keep_to_revalidate(v))
        return f->vhost->cache.memory_only ? RF_KEEP_MEMORY : RF_KEEP_DISK;
    if (v->ttl <= 0 || v->no_cache)
        return RF_KEEP_SHARE;
    return f->vhost->cache.memory_only ? RF_KEEP_MEMORY : RF_KEEP_DISK;
}

/* ---- refreshes: revalidation and the circuit breaker ------------------------ */

/* The stale object's stored headers as rf_hdr_t (malloc'd, caller frees). */

/* What the policy said when the stale object was stored: decided again
 * from its headers, with the lifetime it had grown to since. */
static void s_stale_verdict(gw_fill_t *f, const rf_hdr_t *h, size_t n, rf_ttl_verdict_t *v)
{
    const rf_meta_t *m = rf_obj_meta(f->stale.obj);
    uint32_t flags;
    rf_obj_expires(f->stale.obj, &flags);
    rf_ttl_decide(&f->vhost->cache.ttl, m->status, h, n, m->stored_at, m->stored_at, f->req_authorization, v);
    v->lifetime = m->lifetime;
    v->source = (rf_ttl_source_t)m->ttl_source;
    if (flags & RF_META_MUST_REVALIDATE)
        v->must_revalidate = true;
}

static int s_blob_add(char **blob, size_t *len, size_t *cap, const char *n, size_t nl, const char *v, size_t vl)
{
    if (*len + nl + vl + 2 > *cap) {
        size_t c = (*len + nl + vl + 2) * 2 + 256;
        char *b = realloc(*blob, c);
        if (b == NULL)
            return -1;
        *blob = b, *cap = c;
    }
    for (size_t k = 0; k < nl; k++)
        (*blob)[*len + k] = (char)h2o_tolower(n[k]);
    *len += nl;
    (*blob)[(*len)++] = '\0';
    memcpy(*blob + *len, v, vl);
    *len += vl;
    (*blob)[(*len)++] = '\0';
    return 0;
}

/* Makes the object from the stale copy: its headers (updated by a 304's:
 * RFC 9111 4.3.4, a field in the 304 replaces every stored line of that
 * name), a new TTL, and its body copied from the stale file or memory.
 * fwd_status says why (304, or the origin's failure). 0 or -1. */
static int s_from_stale(gw_fill_t *f, int fwd_status, int64_t ttl, const rf_ttl_verdict_t *v,
                        const struct phr_header *h304, size_t n304, int64_t stale_since)
{
    size_t n;
    const rf_meta_t *sm = rf_obj_meta(f->stale.obj);
    rf_hdr_t *old = gw_stored_hdrs(f->stale.obj, &n);
    char *blob = NULL, *buf = NULL;
    size_t blen = 0, cap = 0;
    int rc = -1;
    if (old == NULL)
        goto out;
    for (size_t i = 0; i < n; i++) {
        if (h2o_memis(old[i].name, old[i].name_len, H2O_STRLIT(":stale-since")))
            continue; /* a 304 ends the staleness; stale-if-error sets it below */
        bool replaced = false;
        for (size_t j = 0; j < n304 && !replaced; j++)
            replaced = gw_proxy_passes_header(h304, n304, j) &&
                       h2o_lcstris(h304[j].name, h304[j].name_len, old[i].name, old[i].name_len);
        if (!replaced && s_blob_add(&blob, &blen, &cap, old[i].name, old[i].name_len, old[i].value, old[i].value_len) < 0)
            goto out;
    }
    for (size_t j = 0; j < n304; j++)
        if (gw_proxy_passes_header(h304, n304, j) &&
            s_blob_add(&blob, &blen, &cap, h304[j].name, h304[j].name_len, h304[j].value, h304[j].value_len) < 0)
            goto out;
    char since[24];
    int sl = snprintf(since, sizeof(since), "%lld", (long long)stale_since);
    if (stale_since > 0 && s_blob_add(&blob, &blen, &cap, ":stale-since", 12, since, (size_t)sl) < 0)
        goto out;
    int64_t now = s_now();
    rf_meta_t meta = {.status = sm->status,
                      .stored_at = now,
                      .expires_at = now + ttl,
                      .age = 0,
                      .flags = (v->must_revalidate ? RF_META_MUST_REVALIDATE : 0) | (v->no_cache ? RF_META_NO_CACHE : 0),
                      .length = (int64_t)rf_obj_length(f->stale.obj),
                      .lifetime = v->lifetime > 0 ? v->lifetime : ttl,
                      .ttl_source = (int)v->source,
                      .fwd_status = fwd_status};
    bool keepable = v->storable && (ttl > 0 || s_keep_to_revalidate(v));
    rf_keep_t keep = !keepable ? RF_KEEP_SHARE : f->vhost->cache.memory_only ? RF_KEEP_MEMORY : RF_KEEP_DISK;
    if (rf_obj_set_head(f->obj, &meta, blob ? blob : "", blen, keep) < 0 || (buf = malloc(256 * 1024)) == NULL)
        goto out;
    for (;;) {
        size_t got = 0;
        rf_read_t r = rf_cursor_read(&f->stale, buf, 256 * 1024, &got);
        if (r == RF_READ_EOF)
            break;
        if (r != RF_READ_DATA || rf_obj_append(f->obj, buf, got) < 0)
            goto out;
    }
    rc = 0;
out:
    free(old);
    free(blob);
    free(buf);
    f->answered = true;
    rf_obj_finish(f->obj, rc == 0);
    return rc;
}

/* How often a copy served under stale-if-error asks the origin again. */
#define GW_FILL_SIE_RETRY 10

/* RFC 5861 stale-if-error, when the vhost's circuit breaker does not
 * apply: the origin said stale-if-error=N and the copy went stale less
 * than N seconds ago (counted from its first expiry, which the remade
 * copy carries as ":stale-since"). Only for no answer or 500/502/503/504.
 * Returns how long to serve it before asking again (*since: when it went
 * stale), or -1. */
static int64_t s_stale_if_error(gw_fill_t *f, const rf_ttl_verdict_t *v, int status, int64_t *since)
{
    if (!(status == 0 || status == 500 || status == 502 || status == 503 || status == 504) || !v->storable ||
        v->must_revalidate || v->no_cache || v->stale_if_error <= 0)
        return -1;
    uint32_t flags;
    int64_t expires = rf_obj_expires(f->stale.obj, &flags), now = s_now();
    if (expires <= 0 || (flags & RF_META_PURGED)) /* made stale by a purge or an expire */
        return -1;
    size_t len, vl;
    const char *blob = rf_obj_headers(f->stale.obj, &len);
    const char *ss = gw_stored_header(blob, len, ":stale-since", &vl);
    *since = ss != NULL ? strtoll(ss, NULL, 10) : expires;
    int64_t left = *since + v->stale_if_error - now;
    if (*since <= 0 || left <= 0) {
        *since = 0;
        return -1;
    }
    return left < GW_FILL_SIE_RETRY ? left : GW_FILL_SIE_RETRY;
}

/* The origin failed to revalidate (status: its answer, 0 for none). With a
 * stale copy that may be served, the circuit breaker extends it: 1 when
 * it did (the object is complete), 0 when the failure goes through. */
static int s_breaker(gw_fill_t *f, int status, int fwd_status)
{
    if (!f->has_stale)
        return 0;
    size_t n;
    rf_hdr_t *h = gw_stored_hdrs(f->stale.obj, &n);
    if (h == NULL)
        return 0;
    rf_ttl_verdict_t v;
    s_stale_verdict(f, h, n, &v);
    free(h);
    int64_t ttl = rf_ttl_on_origin_error(&f->vhost->cache.ttl, &v, status), since = 0;
    if (ttl < 0 && (ttl = s_stale_if_error(f, &v, status, &since)) < 0)
        return 0;
    rf_log(RF_LOG_WARN, f->request_id, "origin %s failed (%d): serving the stale copy for %llds more%s", f->upstream,
           fwd_status, (long long)ttl, since > 0 ? " (stale-if-error)" : "");
    const char *l[] = {f->vhost->name};
    rf_metric_add(gw_m.cache_stale_served, l, 1);
    s_from_stale(f, fwd_status, ttl, &v, NULL, 0, since);
    return 1;
}

/* A 304 to our conditional request: the stale copy is current again. */
static void s_revalidated(gw_fill_t *f, const struct phr_header *headers, size_t n)
{
    size_t ns, m = 0;
    rf_hdr_t *stored = gw_stored_hdrs(f->stale.obj, &ns);
    rf_hdr_t *h = malloc((n ? n : 1) * sizeof(*h));
    rf_ttl_verdict_t prev, v;
    const char *l[] = {f->vhost->name, "not_modified"};
    rf_metric_add(gw_m.cache_revalidations, l, 1);
    if (stored == NULL || h == NULL) {
        free(stored), free(h);
        f->answered = true;
        rf_obj_finish(f->obj, false);
        return;
    }
    for (size_t i = 0; i < n; i++)
        if (headers[i].name != NULL)
            h[m++] = (rf_hdr_t){headers[i].name, headers[i].name_len, headers[i].value, headers[i].value_len};
    s_stale_verdict(f, stored, ns, &prev);
    rf_ttl_after_304(&f->vhost->cache.ttl, rf_obj_meta(f->stale.obj)->status, &prev, stored, ns, h, m, f->request_time,
                     s_now(), f->req_authorization, &v);
    s_from_stale(f, 304, v.ttl > 0 ? v.ttl : 0, &v, headers, n, 0);
    free(stored);
    free(h);
}

/* Adds the stale copy's validators to the origin request head. */
static h2o_iovec_t s_conditional(gw_fill_t *f, h2o_mem_pool_t *pool, h2o_iovec_t request)
{
    uint32_t flags;
    rf_obj_expires(f->stale.obj, &flags);
    if (flags & RF_META_PURGED)
        return request; /* purged: fetched whole, the copy is only a fallback */
    size_t len;
    const char *b = rf_obj_headers(f->stale.obj, &len);
    const char *etag = NULL, *lm = NULL;
    for (size_t i = 0; i < len;) {
        const char *name = b + i, *v = name + strlen(name) + 1;
        if (strcmp(name, "etag") == 0)
            etag = v;
        else if (strcmp(name, "last-modified") == 0)
            lm = v;
        i += strlen(name) + strlen(v) + 2;
    }
    if (etag == NULL && lm == NULL)
        return request;
    /* request ends with the empty line: insert before it. */
    size_t cap = request.len + 64 + (etag ? strlen(etag) : 0) + (lm ? strlen(lm) : 0);
    char *out = h2o_mem_alloc_pool(pool, cap);
    int k = snprintf(out, cap, "%.*s%s%s%s%s%s%s\r\n", (int)(request.len - 2), request.base,
                     etag ? "if-none-match: " : "", etag ? etag : "", etag ? "\r\n" : "",
                     lm ? "if-modified-since: " : "", lm ? lm : "", lm ? "\r\n" : "");
    return h2o_iovec_init(out, (size_t)k);
}

static const gw_fetch_cbs_t s_cbs;

/* A new fetch of the fill's path from origin `o` (pools of vhost `vh`),
 * with the client's Host instead of the origin's when `host` is set, marked
 * as a sibling request when `sibling`, with the stale copy's validators when
 * `conditional`. Sets f->upstream. Returns the fetch, or NULL. */
static gw_fetch_t *s_fetch_from(gw_fill_t *f, const rf_origin_t *o, const rf_vhost_conf_t *vh, const char *host,
                                int sibling, bool conditional)
{
    const char *why = NULL;
    gw_upstream_t *up = gw_thread_upstream(f->thread, o, vh, &why);
    if (up == NULL || (sibling && !gw_upstream_up(up)))
        return NULL;
    gw_origin_request_t q = {.origin = o,
                             .path = f->target,
                             .headers = &f->req_headers,
                             .peer = f->peer,
                             .request_id = f->request_id,
                             .via = f->thread->server->via,
                             .host = host,
                             .sibling = sibling,
                             .forward = 0};
    int is_head;
    h2o_iovec_t request = gw_proxy_request_head(&f->pool, &q, &is_head);
    if (conditional)
        request = s_conditional(f, &f->pool, request);
    gw_fetch_t *next = gw_fetch_start(up, request, is_head, &s_cbs, f);
    if (next != NULL)
        snprintf(f->upstream, sizeof(f->upstream), "%s", gw_upstream_name(up));
    return next;
}

/* Content chain (seed <VhostLink Condition="404">): the answer's status
 * sends the same path to the linked vhost's origin. Returns 1 when a new
 * fetch replaced the current one (the caller ends the current one). The
 * object keeps the first vhost's key and cache policy. Config load refuses
 * loops and missing targets; the hop limit guards a reload race. */
static int s_follow_link(gw_fill_t *f, int status)
{
    const rf_vhost_conf_t *from = f->hops == 0 ? f->vhost : f->link_vhost;
    if (f->hops >= 8 || !rf_link_matches(&from->link, status))
        return 0;
    const rf_vhost_conf_t *to = gw_vhosts_match(f->vhosts, from->link.vhost, strlen(from->link.vhost));
    if (to == NULL || strcasecmp(to->name, from->link.vhost) != 0 || to->origin.kind != RF_ORIGIN_HTTP)
        return 0;
    gw_fetch_t *next = s_fetch_from(f, &to->origin, to, NULL, 0, false);
    if (next == NULL)
        return 0;
    rf_log(RF_LOG_INFO, f->request_id, "content chain: %s answered %d, asking %s", from->name, status, to->name);
    const char *l[] = {to->name, "http"};
    rf_metric_add(gw_m.origin_requests, l, 1);
    f->link_vhost = to;
    f->hops++;
    f->fetch = next;
    return 1;
}

/* The sibling that owns the key did not answer: this gateway fetches from
 * its own origin instead (seed: "served locally when the owner is down").
 * Returns 1 when a new fetch started. */
static int s_sibling_fallback(gw_fill_t *f)
{
    char failed[300];
    snprintf(failed, sizeof(failed), "%s", f->upstream);
    gw_fetch_t *next = s_fetch_from(f, &f->vhost->origin, f->vhost, NULL, 0, f->has_stale);
    if (next == NULL)
        return 0;
    rf_log(RF_LOG_INFO, f->request_id, "sibling %s failed: fetching from %s", failed, f->upstream);
    if (f->mq.epoch[0] != '\0')
        f->marker_held = true; /* Redis named the unreachable one: our copy, once stored, takes its entry */
    const char *l[] = {f->vhost->name, "http"};
    rf_metric_add(gw_m.origin_requests, l, 1);
    f->to_sibling = false;
    f->fetch = next;
    return 1;
}

static int s_on_head(gw_fetch_t *fetch, void *arg, int status, const struct phr_header *headers, size_t n,
                     int64_t content_length)
{
    gw_fill_t *f = arg;
    f->headed = true;
    const char *l[] = {f->vhost->name};
    rf_metric_observe(gw_m.origin_duration, l, (double)gw_fetch_head_usec(fetch) / 1e6);
    /* A sibling (or the gateway filling this key) that could not reach
     * the origin answers 502-504 itself: ask our own origin rather than
     * keep its error. */
    if (f->to_sibling && status >= 502 && status <= 504 && s_sibling_fallback(f))
        return -1;
    if (status != 304 && s_follow_link(f, status))
        return -1; /* this answer is dropped; the linked origin's follows */
    if (f->has_stale && status == 304) {
        s_revalidated(f, headers, n);
        return 0; /* the (empty) body ends the fetch */
    }
    if (f->has_stale && status >= 400 && s_breaker(f, status, status)) {
        f->fetch = NULL; /* -1 ends the fetch */
        s_fill_free(f);
        return -1;
    }
    if (f->has_stale) {
        const char *lr[] = {f->vhost->name, "modified"};
        rf_metric_add(gw_m.cache_revalidations, lr, 1);
    }
    rf_hdr_t *hs = malloc((n ? n : 1) * sizeof(*hs));
    char *blob = NULL;
    size_t blen = 0, cap = 0;
    int rc = -1;
    if (hs == NULL)
        goto out;
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (headers[i].name != NULL)
            hs[m++] = (rf_hdr_t){headers[i].name, headers[i].name_len, headers[i].value, headers[i].value_len};
    rf_ttl_verdict_t v;
    if (rf_ttl_decide(&f->vhost->cache.ttl, status, hs, m, f->request_time, s_now(), f->req_authorization, &v) < 0)
        goto out;
    rf_keep_t keep = s_keep(f, &v);
    for (size_t i = 0; i < n; i++) {
        if (!gw_proxy_passes_header(headers, n, i))
            continue;
        /* Lines the verdict withholds (Set-Cookie, private="…") never
         * reach a shared copy; a SOLO object goes to its one client whole. */
        if (keep != RF_KEEP_SOLO && v.strip_fields &&
            rf_ttl_strip_field(hs, m, headers[i].name, headers[i].name_len))
            continue;
        /* STON NoCache MaxAge: clients are told max-age=N instead. */
        if (keep != RF_KEEP_SOLO && v.client_max_age >= 0 &&
            h2o_lcstris(headers[i].name, headers[i].name_len, H2O_STRLIT("cache-control")))
            continue;
        size_t need = headers[i].name_len + headers[i].value_len + 2;
        if (blen + need > cap) {
            cap = (blen + need) * 2 + 256;
            char *nb = realloc(blob, cap);
            if (nb == NULL)
                goto out;
            blob = nb;
        }
        for (size_t k = 0; k < headers[i].name_len; k++)
            blob[blen + k] = (char)h2o_tolower(headers[i].name[k]);
        blen += headers[i].name_len;
        blob[blen++] = '\0';
        memcpy(blob + blen, headers[i].value, headers[i].value_len);
        blen += headers[i].value_len;
        blob[blen++] = '\0';
    }
    if (keep != RF_KEEP_SOLO && v.client_max_age >= 0) {
        char cc[40];
        int ccl = snprintf(cc, sizeof(cc), "max-age=%lld", (long long)v.client_max_age);
        if (s_blob_add(&blob, &blen, &cap, "cache-control", 13, cc, (size_t)ccl) < 0)
            goto out;
    }
    /* Vary: which variant this is — the claimer's values for those headers. */
    size_t vl;
    const char *vary = blob != NULL ? gw_stored_header(blob, blen, "vary", &vl) : NULL;
    if (vary != NULL) {
        h2o_iovec_t vals = gw_vary_values(h2o_iovec_init(vary, vl), &f->req_headers, &f->pool);
        if (s_blob_add(&blob, &blen, &cap, ":vary", 5, vals.base, vals.len) < 0)
            goto out;
    }
    int64_t now = s_now();
    rf_meta_t meta = {.status = status,
                      .stored_at = now,
                      .expires_at = now + (v.ttl > 0 ? v.ttl : 0),
                      .age = v.age,
                      .flags = (v.must_revalidate ? RF_META_MUST_REVALIDATE : 0) | (v.no_cache ? RF_META_NO_CACHE : 0),
                      .length = content_length,
                      .lifetime = v.lifetime,
                      .ttl_source = (int)v.source};
    if (rf_obj_set_head(f->obj, &meta, blob ? blob : "", blen, keep) < 0)
        goto out;
    rc = 0;
out:
    free(hs);
    free(blob);
    if (rc < 0) {
        rf_log(RF_LOG_WARN, f->request_id, "cache fill %s: cannot keep the response (out of memory or disk)",
               f->upstream);
        rf_obj_set_error(f->obj, 503, "out of memory or cache disk");
        f->fetch = NULL; /* -1 ends the fetch */
        s_fill_end(f, false);
    }
    return rc;
}

static void s_on_body(gw_fetch_t *fetch, void *arg, const char *data, size_t len, int eos)
{
    gw_fill_t *f = arg;
    if (f->answered) { /* a 304: the object was made from the stale copy */
        if (eos) {
            f->fetch = NULL;
            s_fill_free(f);
        }
        return;
    }
    int r = rf_obj_append(f->obj, data, len);
    if (len > 0) {
        const char *l[] = {f->vhost->name};
        rf_metric_add(gw_m.cache_fill_bytes, l, (double)len);
    }
    if (eos) {
        f->fetch = NULL;
        s_fill_end(f, r >= 0);
        return;
    }
    rf_keep_t keep = rf_obj_keep(f->obj);
    if (r < 0 || ((keep == RF_KEEP_SHARE || keep == RF_KEEP_SOLO) && rf_obj_readers(f->obj) == 0)) {
        /* A write error, or nobody left to read what will not be kept. */
        s_fill_end(f, false);
        return;
    }
    if (r == 1)
        gw_fetch_pause(fetch);
}

static void s_on_error(gw_fetch_t *fetch, void *arg, int status, const char *why)
{
    (void)fetch;
    gw_fill_t *f = arg;
    f->fetch = NULL;
    gw_origin_failed(f->vhost->name, f->request_id, f->upstream, status, why);
    if (f->to_sibling && !f->headed && !f->answered && s_sibling_fallback(f))
        return;
    if (!f->answered && s_breaker(f, 0, status)) {
        s_fill_free(f);
        return;
    }
    rf_obj_set_error(f->obj, status, why);
    if (f->answered) {
        s_fill_free(f);
        return;
    }
    s_fill_end(f, false);
}

static const gw_fetch_cbs_t s_cbs = {s_on_head, s_on_body, s_on_error};

/* Starts the origin fetch prepared for this fill. 0 or -1. */
static int s_go(gw_fill_t *f, gw_upstream_t *up, h2o_iovec_t request, int is_head)
{
    const char *l[] = {f->vhost->name, "http"};
    rf_metric_add(gw_m.origin_requests, l, 1);
    return (f->fetch = gw_fetch_start(up, request, is_head, &s_cbs, f)) != NULL ? 0 : -1;
}

/* Fetches the key from the gateway that holds or fills it (a sibling
 * request: it serves its copy or joins its own fill); its failure falls
 * back to our origin. 0 or -1. */
static int s_go_owner(gw_fill_t *f, const char *owner_url, bool holds)
{
    const char *why = NULL;
    if (rf_origin_parse(owner_url, &f->owner, &why) < 0 || f->owner.kind != RF_ORIGIN_HTTP)
        return -1;
    gw_fetch_t *next = s_fetch_from(f, &f->owner, f->vhost, f->client_host, 1, false);
    if (next == NULL)
        return -1;
    rf_log(RF_LOG_INFO, f->request_id, "%s: %s %s it", holds ? "shared across gateways" : "collapsed across gateways",
           owner_url, holds ? "holds" : "fills");
    f->to_sibling = true;
    f->fetch = next;
    return 0;
}

void gw_fill_on_meta(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages)
{
    (void)receiver;
    while (!h2o_linklist_is_empty(messages)) {
        gw_meta_query_t *q = H2O_STRUCT_FROM_MEMBER(gw_meta_query_t, msg.link, messages->next);
        h2o_linklist_unlink(&q->msg.link);
        gw_fill_t *f = H2O_STRUCT_FROM_MEMBER(gw_fill_t, mq, q);
        if (!q->won && s_go_owner(f, q->owner, q->holds) == 0)
            continue;
        f->marker_held = q->won;
        if (s_go(f, f->pending_up, f->pending_request, f->pending_is_head) < 0) {
            rf_obj_set_error(f->obj, 503, "out of memory");
            s_fill_end(f, false);
        }
    }
}

static void s_no_wake(rf_waiter_t *w)
{
    (void)w; /* the stale copy is complete: its cursor never waits */
}

int gw_fill_start(gw_req_t *rc, rf_obj_t *obj, rf_obj_t *stale, bool background)
{
    h2o_req_t *req = rc->req;
    const char *why = NULL;
    gw_upstream_t *up = gw_proxy_pick(rc, &why);
    gw_fill_t *f = NULL;
    if (up == NULL) {
        if (background)
            rf_log(RF_LOG_WARN, rc->request_id, "refresh of a stale object not started: origin %s: %s",
                   rc->origin->url, why ? why : "unavailable");
        else
            gw_send_error(rc, 502, "Bad Gateway", "origin %s: %s", rc->origin->url, why ? why : "unavailable");
        goto fail;
    }
    if ((f = calloc(1, sizeof(*f))) == NULL)
        goto oom;
    h2o_mem_init_pool(&f->pool);
    f->obj = obj;
    rf_obj_ref(obj);
    f->thread = rc->thread;
    f->vhosts = rc->vhosts;
    gw_vhosts_ref(f->vhosts);
    f->vhost = rc->vhost;
    f->resume.cb = s_on_resume;
    memcpy(f->request_id, rc->request_id, sizeof(f->request_id));
    snprintf(f->upstream, sizeof(f->upstream), "%s", gw_upstream_name(up));
    f->request_time = s_now();
    for (size_t i = 0; i < req->headers.size; i++) {
        const h2o_header_t *e = &req->headers.entries[i];
        h2o_add_header_by_str(&f->pool, &f->req_headers, h2o_strdup(&f->pool, e->name->base, e->name->len).base,
                              e->name->len, 0, NULL, h2o_strdup(&f->pool, e->value.base, e->value.len).base,
                              e->value.len);
    }
    f->req_authorization = h2o_find_header(&req->headers, H2O_TOKEN_AUTHORIZATION, -1) != -1;
    rf_obj_on_drain(obj, s_drained, f);
    if (stale != NULL) {
        if (rf_cursor_init(&f->stale, stale, false, s_no_wake) == 0)
            f->has_stale = true;
        else
            rf_cursor_close(&f->stale); /* its body is gone: a plain fill */
    }
    /* The whole object, whatever this client's Range or validators. */
    h2o_iovec_t target = h2o_concat(&req->pool, rc->origin_path.base ? rc->origin_path : rc->path, rc->query);
    f->target = h2o_strdup(&f->pool, target.base, target.len);
    f->to_sibling = rc->to_sibling;
    gw_proxy_peer(req, f->peer, sizeof(f->peer));
    int is_head;
    h2o_iovec_t request = gw_proxy_request(rc, target.base, target.len, 0, &is_head);
    if (f->has_stale)
        request = s_conditional(f, &req->pool, request);
    /* The Host another gateway is asked with: the (rewritten) one that
     * chose this vhost, so that it makes the same choice. */
    h2o_iovec_t chost = rc->host.base != NULL ? rc->host : req->authority;
    snprintf(f->client_host, sizeof(f->client_host), "%.*s", (int)(chost.len < 255 ? chost.len : 255), chost.base);
    gw_meta_t *meta = rc->thread->server->meta;
    if (gw_meta_collapses(meta) && !rc->to_sibling && !f->has_stale && rc->byclient == NULL &&
        h2o_find_header_by_str(&req->headers, H2O_STRLIT("x-refract-sibling"), -1) == -1) {
        /* Another gateway may be filling this key: ask first (the answer
         * comes back through the thread's meta_receiver). */
        f->pending_request = h2o_strdup(&f->pool, request.base, request.len);
        f->pending_is_head = is_head;
        f->pending_up = up;
        f->mq.reply_to = &rc->thread->meta_receiver;
        XXH128_hash_t h = XXH3_128bits(rc->key.base, rc->key.len);
        snprintf(f->mq.key, sizeof(f->mq.key), "%016llx%016llx", (unsigned long long)h.high64,
                 (unsigned long long)h.low64);
        gw_meta_ask(meta, &f->mq);
        return 0;
    }
    if (s_go(f, up, request, is_head) < 0)
        goto oom;
    return 0;
oom:
    if (!background)
        gw_send_error(rc, 503, "Service Unavailable", "out of memory");
fail:
    if (f != NULL)
        s_fill_free(f);
    rf_obj_finish(obj, false);
    return -1;
}
