/*  gw_lookup — the edge cache's decision for each request. Every request
 *  reaches it with its key: the vhost, the canonical path, the query (as
 *  the vhost's cache.query says: all, none, or listed parameters) and, for a
 *  function, the name and canonical text of its chain, so
 *  "/a.jpg/dims/resize/10x" and "/a.jpg/dims/resize/10x0" are one object.
 *
 *  Then, for a GET or HEAD to an http(s) origin on a vhost with the cache
 *  on: a fresh object is a hit; an object being filled is joined (any
 *  number of concurrent misses make one origin request); otherwise this
 *  request claims a new fill — replacing an expired object. Everything
 *  else is forwarded (Cache-Status: refract; fwd=bypass or fwd=method,
 *  RFC 9211); an unsafe method that reaches the origin invalidates the
 *  key (RFC 9111 4.4).
 *
 *  Function results are cached by their canonical chain, from any origin;
 *  the request that claims one computes it (gw_transform.c). Plain
 *  requests to file:// origins are not cached (already local).
 */
#include <stdatomic.h>
#include <string.h>
#include <xxhash.h>
#include <time.h>

#include "gw.h"
#include "gw_metrics.h"
#include "rf_log.h"
#include "rf_path.h"
#include "rf_ttl.h"

/* Whether parameter name[0..len) is in the vhost's keep list. */
static bool s_kept(const rf_cache_conf_t *c, const char *name, size_t len)
{
    for (size_t i = 0; i < c->n_query_keep; i++)
        if (strlen(c->query_keep[i]) == len && memcmp(c->query_keep[i], name, len) == 0)
            return true;
    return false;
}

/* The query as the key sees it (cache.query): all of it, none, or only
 * the listed parameters in request order ("?a=1&b=2" keeping b: "?b=2"). */
h2o_iovec_t gw_key_query(const rf_cache_conf_t *c, h2o_iovec_t q, h2o_mem_pool_t *pool)
{
    if (c->query == RF_QUERY_ALL || q.len == 0)
        return q;
    if (c->query == RF_QUERY_NONE)
        return h2o_iovec_init("", 0);
    char *out = h2o_mem_alloc_pool(pool, q.len + 1);
    size_t o = 0;
    for (const char *p = q.base + 1, *end = q.base + q.len; p < end;) {
        const char *amp = memchr(p, '&', (size_t)(end - p)), *pe = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(pe - p));
        if (s_kept(c, p, (size_t)((eq ? eq : pe) - p))) {
            char sep = o == 0 ? '?' : '&';
            out[o++] = sep;
            memcpy(out + o, p, (size_t)(pe - p));
            o += (size_t)(pe - p);
        }
        p = amp ? amp + 1 : end;
    }
    return h2o_iovec_init(out, o);
}

static void s_append(char **buf, size_t *len, size_t *cap, h2o_mem_pool_t *pool, const char *p, size_t n)
{
    if (*len + n > *cap) {
        size_t c = (*len + n) * 2 + 64;
        char *b = h2o_mem_alloc_pool(pool, c);
        if (*len > 0)
            memcpy(b, *buf, *len);
        *buf = b, *cap = c;
    }
    memcpy(*buf + *len, p, n);
    *len += n;
}

h2o_iovec_t gw_vary_values(h2o_iovec_t vary, const h2o_headers_t *headers, h2o_mem_pool_t *pool)
{
    char *out = NULL;
    size_t len = 0, cap = 0;
    for (size_t i = 0; i < vary.len;) {
        while (i < vary.len && (vary.base[i] == ' ' || vary.base[i] == '\t' || vary.base[i] == ','))
            i++;
        size_t s = i;
        while (i < vary.len && vary.base[i] != ',' && vary.base[i] != ' ' && vary.base[i] != '\t')
            i++;
        if (i == s)
            continue;
        char name[128];
        size_t nl = i - s < sizeof(name) ? i - s : sizeof(name) - 1;
        for (size_t k = 0; k < nl; k++)
            name[k] = (char)h2o_tolower(vary.base[s + k]);
        s_append(&out, &len, &cap, pool, name, nl);
        s_append(&out, &len, &cap, pool, ":", 1);
        bool first = true;
        for (ssize_t j = -1; (j = h2o_find_header_by_str(headers, name, nl, j)) != -1;) {
            h2o_iovec_t v = headers->entries[j].value;
            while (v.len > 0 && (v.base[0] == ' ' || v.base[0] == '\t'))
                v.base++, v.len--;
            while (v.len > 0 && (v.base[v.len - 1] == ' ' || v.base[v.len - 1] == '\t'))
                v.len--;
            if (!first)
                s_append(&out, &len, &cap, pool, ",", 1);
            s_append(&out, &len, &cap, pool, v.base, v.len);
            first = false;
        }
        s_append(&out, &len, &cap, pool, "\n", 1);
    }
    return h2o_iovec_init(out ? out : "", len);
}

bool gw_stored_next(const char *blob, size_t len, size_t *at, gw_stored_line_t *line)
{
    if (*at >= len)
        return false;
    line->name = blob + *at;
    line->name_len = strlen(line->name);
    line->value = line->name + line->name_len + 1;
    line->value_len = strlen(line->value);
    *at += line->name_len + line->value_len + 2;
    return true;
}

const char *gw_stored_header(const char *blob, size_t len, const char *name, size_t *vlen)
{
    size_t want = strlen(name), at = 0;
    gw_stored_line_t l;
    while (gw_stored_next(blob, len, &at, &l))
        if (l.name_len == want && memcmp(l.name, name, want) == 0) {
            *vlen = l.value_len;
            return l.value;
        }
    return NULL;
}

rf_hdr_t *gw_stored_hdrs(rf_obj_t *o, size_t *n)
{
    size_t len, cap = 16;
    const char *b = rf_obj_headers(o, &len);
    rf_hdr_t *h = malloc(cap * sizeof(*h));
    *n = 0;
    size_t at = 0;
    gw_stored_line_t l;
    while (h != NULL && gw_stored_next(b, len, &at, &l)) {
        if (*n == cap) {
            rf_hdr_t *g = realloc(h, (cap *= 2) * sizeof(*h));
            if (g == NULL) {
                free(h);
                return NULL;
            }
            h = g;
        }
        h[(*n)++] = (rf_hdr_t){l.name, l.name_len, l.value, l.value_len};
    }
    return h;
}

/* Whether the expired `o` may answer now while a refresh runs: the origin
 * said stale-while-revalidate=N (RFC 5861) and it expired less than N
 * seconds ago. Never for must-revalidate or no-cache answers, nor for
 * objects a purge or an expire made stale (their expiry is 0). */
static bool s_may_serve_stale(const rf_vhost_conf_t *vh, rf_obj_t *o, int64_t now)
{
    uint32_t flags;
    int64_t expires = rf_obj_expires(o, &flags);
    if (expires <= 0 || (flags & (RF_META_MUST_REVALIDATE | RF_META_NO_CACHE | RF_META_PURGED)))
        return false;
    size_t n;
    rf_hdr_t *h = gw_stored_hdrs(o, &n);
    if (h == NULL)
        return false;
    const rf_meta_t *m = rf_obj_meta(o);
    rf_ttl_verdict_t v;
    rf_ttl_decide(&vh->cache.ttl, m->status, h, n, m->stored_at, m->stored_at, false, &v);
    free(h);
    return v.storable && !v.must_revalidate && !v.no_cache && v.stale_while_revalidate > 0 &&
           now - expires <= v.stale_while_revalidate;
}

/* Serves the expired `o` (the caller's reference, taken) while it is
 * refreshed — by this request in the background when `refill` is the
 * claimed refresh (taken), else by the request already running it. */
static void s_serve_stale(gw_req_t *rc, rf_obj_t *o, rf_obj_t *refill)
{
    rc->role = GW_CACHE_STALE;
    rc->obj = o;
    if (refill != NULL) {
        rf_obj_ref(o);
        rc->stale = o; /* the refresh's base */
        rc->refill = refill;
    }
    const char *l[] = {rc->vhost->name};
    rf_metric_add(gw_m.cache_stale_served, l, 1);
}

/* For a stored response with Vary: NULL when `o` is the variant this
 * request wants (or has no Vary), else the key of the variant it wants
 * (the key plus "\n" and the request's values, in the pool). */
static h2o_iovec_t s_variant_key(gw_req_t *rc, rf_obj_t *o)
{
    size_t hl, vl, sl;
    const char *blob = rf_obj_headers(o, &hl);
    const char *vary = gw_stored_header(blob, hl, "vary", &vl);
    if (vary == NULL)
        return h2o_iovec_init(NULL, 0);
    h2o_iovec_t mine = gw_vary_values(h2o_iovec_init(vary, vl), &rc->req->headers, &rc->req->pool);
    const char *stored = gw_stored_header(blob, hl, ":vary", &sl);
    if (stored != NULL && sl == mine.len && memcmp(stored, mine.base, sl) == 0)
        return h2o_iovec_init(NULL, 0);
    return h2o_concat(&rc->req->pool, rc->key, h2o_iovec_init(H2O_STRLIT("\n")), mine);
}

/* When each URL key was last invalidated by a write (the store's object
 * number then, rf_store_seq), by hash slot. Vary variants (keys
 * "KEY\nVALUES") are reached only through the object at KEY, and a variant
 * claimed before its URL's last write is dropped when found — no scan of
 * the index on every write. Two keys sharing a slot only cost extra misses
 * (a slot keeps the latest). */
#define GW_INVALIDATED_SLOTS 4096
static _Atomic uint64_t s_invalidated[GW_INVALIDATED_SLOTS];

static _Atomic uint64_t *s_invalidated_slot(h2o_iovec_t key)
{
    return &s_invalidated[XXH3_64bits(key.base, key.len) % GW_INVALIDATED_SLOTS];
}

/* Whether the Vary variant `v` of the URL key `key` predates a write. */
static bool s_variant_invalidated(h2o_iovec_t key, rf_obj_t *v)
{
    return rf_obj_seq(v) <= atomic_load(s_invalidated_slot(key));
}

void gw_cache_invalidate(gw_req_t *rc)
{
    /* The object and its compressed variants, each by its key: O(1), not a
     * scan of the index under its lock on every write. Its Vary variants
     * go when next found (s_variant_invalidated); function results of the
     * URL age out (or go with a purge). */
    rf_store_t *store = rc->thread->server->store;
    if (store == NULL)
        return;
    _Atomic uint64_t *slot = s_invalidated_slot(rc->key);
    uint64_t now = rf_store_seq(store), was = atomic_load(slot);
    while (was < now && !atomic_compare_exchange_weak(slot, &was, now))
        ;
    rf_store_remove(store, rc->key.base, rc->key.len);
    static const char *const ce[] = {"\nce:gzip", "\nce:br"};
    for (size_t i = 0; i < 2; i++) {
        h2o_iovec_t k = h2o_concat(&rc->req->pool, rc->key, h2o_iovec_init(ce[i], strlen(ce[i])));
        rf_store_remove(store, k.base, k.len);
    }
}

/* The key as one string: "vhost\npath?query\nfunc:canonical chain". */
static int s_key(gw_req_t *rc)
{
    h2o_req_t *req = rc->req;
    char canon[1024] = "";
    const char *fname = "";
    if (rc->func != NULL) {
        if (rc->func->canon(rc->func_state, canon, sizeof(canon)) < 0)
            return -1;
        fname = rc->func->name;
    }
    h2o_iovec_t path = rc->func != NULL ? rc->src : rc->path;
    if (rc->func != NULL && rc->byclient != NULL) /* a /src/ source: its origin is part of what it is */
        path = h2o_concat(&req->pool, h2o_iovec_init(rc->byclient->url, strlen(rc->byclient->url)), rc->src);
    h2o_iovec_t query = rc->func != NULL ? h2o_iovec_init("", 0) : gw_key_query(&rc->vhost->cache, rc->query, &req->pool);
    size_t vl = strlen(rc->vhost->name), fl = strlen(fname), cl = strlen(canon);
    size_t len = vl + 1 + path.len + query.len + 1 + fl + 1 + cl;
    char *k = h2o_mem_alloc_pool(&req->pool, len + 1), *p = k;
    memcpy(p, rc->vhost->name, vl), p += vl, *p++ = '\n';
    memcpy(p, path.base, path.len), p += path.len;
    memcpy(p, query.base, query.len), p += query.len;
    *p++ = '\n';
    memcpy(p, fname, fl), p += fl, *p++ = ':';
    memcpy(p, canon, cl), p += cl;
    *p = '\0';
    rc->key = h2o_iovec_init(k, (size_t)(p - k));
    return 0;
}

/* The client's request headers, as rf_ttl reads them (in the pool). */
static rf_hdr_t *s_req_hdrs(h2o_req_t *req, size_t *n)
{
    rf_hdr_t *h = h2o_mem_alloc_pool(&req->pool, sizeof(*h) * (req->headers.size + 1));
    for (size_t i = 0; i < req->headers.size; i++) {
        const h2o_header_t *e = &req->headers.entries[i];
        h[i] = (rf_hdr_t){e->name->base, e->name->len, e->value.base, e->value.len};
    }
    *n = req->headers.size;
    return h;
}

/* Whether an object may answer now without asking the origin. The
 * client's no-cache, max-age and min-fresh are not obeyed (as Varnish,
 * nginx and STON do by default): any client could otherwise send every
 * request of a popular object to the origin. */
static bool s_fresh(rf_obj_t *o)
{
    uint32_t flags;
    int64_t expires = rf_obj_expires(o, &flags);
    return !(flags & RF_META_NO_CACHE) && expires > (int64_t)time(NULL);
}

int gw_lookup(gw_req_t *rc)
{
    if (s_key(rc) < 0) {
        gw_send_error(rc, 400, "Bad Request", "function chain too long");
        return -1;
    }
    rc->cache_status = "refract; fwd=bypass";
    h2o_req_t *req = rc->req;
    rf_store_t *store = rc->thread->server->store;
    /* Plain requests to local files gain nothing; function results (from
     * any origin) are what costs most to make. */
    if (store == NULL || !rc->vhost->cache.enable ||
        (rc->func == NULL && rc->byclient == NULL && rc->vhost->origin.kind != RF_ORIGIN_HTTP))
        return 0;
    bool get = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET"));
    bool head = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD"));
    if (!get && !head) {
        rc->cache_status = "refract; fwd=method";
        /* RFC 9111 4.4: a non-error answer to it invalidates the key
         * (gw_proxy.c, when the head arrives) — not a refused one, or any
         * client could evict anything with a POST. */
        rc->invalidate = !h2o_memis(req->method.base, req->method.len, H2O_STRLIT("OPTIONS"));
        return 0;
    }
    if (rc->vhost->bypass.get || rc->vhost->bypass.n_rules > 0) {
        /* Bypass (seed BypassGetRequest + bypass.txt): straight to the
         * origin, uncached, unless a ", cache" rule names the path. */
        char path[RF_PATH_MAX + 1];
        size_t pl = rc->path.len < RF_PATH_MAX ? rc->path.len : RF_PATH_MAX;
        memcpy(path, rc->path.base, pl);
        path[pl] = '\0';
        if (rf_bypass_matches(&rc->vhost->bypass, path))
            return 0;
    }
    size_t n;
    rf_hdr_t *h = s_req_hdrs(req, &n);
    rf_ttl_req_t creq;
    rf_ttl_request(h, n, &creq);
    rf_obj_t *o = NULL;
    /* no-store (RFC 9111 5.2.1.5): nothing of this exchange is stored —
     * a stored object may still answer it. */
    if (creq.no_store) {
        if (rf_store_lookup(store, rc->key.base, rc->key.len, false, false, &o) == RF_LOOKUP_HIT && s_fresh(o)) {
            rc->role = GW_CACHE_HIT;
            rc->cache_status = "refract; hit";
            rc->cache_result = "hit";
            rc->obj = o;
            return 0;
        }
        rf_obj_unref(&o);
        rc->cache_status = "refract; fwd=request";
        return 0;
    }
    rf_lookup_t found = rf_store_lookup(store, rc->key.base, rc->key.len, true, false, &o);
    if (found == RF_LOOKUP_HIT) {
        /* Vary: another variant than this one is wanted — it lives under
         * its own key (the key plus the request's values). */
        h2o_iovec_t vk = s_variant_key(rc, o);
        if (vk.base != NULL) {
            rf_obj_unref(&o);
            h2o_iovec_t url_key = rc->key;
            rc->key = vk;
            found = rf_store_lookup(store, rc->key.base, rc->key.len, true, false, &o);
            if (found == RF_LOOKUP_HIT && s_variant_invalidated(url_key, o)) {
                rf_obj_unref(&o);
                rf_store_remove(store, rc->key.base, rc->key.len);
                found = rf_store_lookup(store, rc->key.base, rc->key.len, true, false, &o);
            }
        }
    }
    switch (found) {
    case RF_LOOKUP_HIT:
        if (s_fresh(o)) {
            rc->role = GW_CACHE_HIT;
            break;
        }
        /* Expired: a new fill takes its place (concurrent requests join
         * it), asking the origin conditionally, with this one to fall
         * back on — or, within its stale-while-revalidate time, answering
         * meanwhile. */
        bool swr = rc->func == NULL && !creq.only_if_cached && s_may_serve_stale(rc->vhost, o, (int64_t)time(NULL));
        rc->stale = o;
        o = NULL;
        switch (rf_store_lookup(store, rc->key.base, rc->key.len, true, true, &o)) {
        case RF_LOOKUP_CLAIM:
            rc->role = GW_CACHE_REFRESH;
            if (swr) {
                rf_obj_t *stale = rc->stale;
                rc->stale = NULL;
                s_serve_stale(rc, stale, o);
                o = NULL;
            }
            break;
        case RF_LOOKUP_BUSY:
            rc->role = GW_CACHE_JOIN;
            if (swr) {
                rf_obj_unref(&o);
                rf_obj_t *stale = rc->stale;
                rc->stale = NULL;
                s_serve_stale(rc, stale, NULL);
            }
            break;
        case RF_LOOKUP_HIT: /* another request refreshed it meanwhile */
            rc->role = GW_CACHE_HIT;
            break;
        case RF_LOOKUP_MISS:
            return 0;
        }
        break;
    case RF_LOOKUP_BUSY: {
        rc->role = GW_CACHE_JOIN;
        /* A refresh under way: its stale copy answers while it may. */
        rf_obj_t *prev = rc->func == NULL ? rf_obj_replaced(o) : NULL;
        if (prev != NULL && s_may_serve_stale(rc->vhost, prev, (int64_t)time(NULL))) {
            rf_obj_unref(&o);
            s_serve_stale(rc, prev, NULL);
        } else {
            rf_obj_unref(&prev);
        }
        break;
    }
    case RF_LOOKUP_CLAIM:
        rc->role = GW_CACHE_CLAIM;
        break;
    case RF_LOOKUP_MISS: /* out of memory, or a key too long to keep */
        return 0;
    }
    if (creq.only_if_cached && rc->role != GW_CACHE_HIT) {
        if (rc->role == GW_CACHE_CLAIM || rc->role == GW_CACHE_REFRESH)
            rf_obj_finish(o, false);
        rf_obj_unref(&o);
        rc->cache_status = "refract; fwd=miss";
        gw_send_error(rc, 504, "Gateway Timeout", "only-if-cached: not in the cache");
        return -1;
    }
    static const char *const status[] = {
        [GW_CACHE_HIT] = "refract; hit",
        [GW_CACHE_JOIN] = "refract; fwd=miss; collapsed",
        [GW_CACHE_CLAIM] = "refract; fwd=miss",
        [GW_CACHE_REFRESH] = "refract; fwd=stale",
    };
    static const char *const result[] = {
        [GW_CACHE_HIT] = "hit",
        [GW_CACHE_JOIN] = "collapsed",
        [GW_CACHE_CLAIM] = "miss",
        [GW_CACHE_REFRESH] = "stale",
    };
    if (rc->role == GW_CACHE_STALE) {
        rc->cache_status = "refract; hit; detail=stale-while-revalidate"; /* refined in gw_serve.c */
        rc->cache_result = "hit";
        return 0;
    }
    rc->cache_status = status[rc->role]; /* refined once the head is known (gw_serve.c) */
    rc->cache_result = result[rc->role];
    if (rc->func != NULL && (rc->role == GW_CACHE_CLAIM || rc->role == GW_CACHE_REFRESH)) {
        /* The transform computes it; the object takes the result. */
        rc->fill = o;
        rf_obj_unref(&rc->stale); /* a result is recomputed, not revalidated */
        return 0;
    }
    /* A client waits: a background job filling it goes live (gw_transform.c).
     * Another pre-warm of the same URL does not count. */
    if (rc->role == GW_CACHE_JOIN && o != NULL && !gw_background_request(req))
        rf_obj_set_wanted(o);
    rc->obj = o;
    return 0;
}
