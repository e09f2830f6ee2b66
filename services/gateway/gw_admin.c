#include <fnmatch.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "gw.h"
#include "gw_http_parse.h"
#include "gw_metrics.h"
#include "rf_log.h"
#include "rf_path.h"

/* The admin port: Prometheus text at /metrics, liveness at /healthz, and
 * the cache's purge API (POST, with the admin token):
 *
 *   /purge      the object is refetched whole by the next request; the old
 *               copy stays only as a fallback should the origin fail
 *   /expire     the next request revalidates it (If-None-Match /
 *               If-Modified-Since; a 304 keeps it)
 *   /hardpurge  gone: index entry and file
 *
 * Each takes URLs — `?url=` (percent-encoded) and/or one per line in the
 * body — "http://host/path?query" or "//host/path" forms, where host picks
 * the vhost as a request's Host would. A `*` in the path makes it a
 * pattern (fnmatch over path and query: `/img/` then `*` — which also crosses '/').
 * An exact URL also removes its variants: every function result made from
 * it (/a.jpg/dims/…). Seed 004's Unlink modes map to the same three. */

typedef struct {
    h2o_handler_t super;
    gw_server_t *server;
} s_admin_handler_t;

static void s_free_dispose(void *p)
{
    free(*(char **)p);
}

/* ---- purge ------------------------------------------------------------------ */

typedef struct {
    const char *vhost;
    const char *pattern; /* canonical path (+ "?query") or fnmatch pattern */
    int glob;
} s_match_t;

/* Matches a cache key "vhost\npath?query\nfunc:chain" (see gw_lookup.c). */
static int s_key_matches(const char *key, size_t len, void *arg)
{
    const s_match_t *m = arg;
    const char *nl1 = memchr(key, '\n', len);
    if (nl1 == NULL || (size_t)(nl1 - key) != strlen(m->vhost) || memcmp(key, m->vhost, (size_t)(nl1 - key)) != 0)
        return 0;
    const char *url = nl1 + 1, *nl2 = memchr(url, '\n', len - (size_t)(url - key));
    if (nl2 == NULL)
        return 0;
    char buf[RF_PATH_MAX + 2048];
    size_t ul = (size_t)(nl2 - url);
    if (ul >= sizeof(buf))
        return 0;
    memcpy(buf, url, ul);
    buf[ul] = '\0';
    return m->glob ? fnmatch(m->pattern, buf, 0) == 0 : strcmp(m->pattern, buf) == 0;
}

size_t gw_purge_apply(gw_server_t *srv, gw_purge_kind_t kind, const char *vhost, const char *pattern, bool glob)
{
    s_match_t m = {vhost, pattern, glob};
    return kind == GW_HARDPURGE
               ? rf_store_remove_if(srv->store, s_key_matches, &m)
               : rf_store_expire_if(srv->store, s_key_matches, &m, kind == GW_PURGE ? RF_META_PURGED : 0);
}

/* "/src/SOURCE[?query]" also names the results of an external or named
 * source (/KEYWORD/CHAIN/src/SOURCE), keyed by where SOURCE comes from
 * (gw_lookup.c): those are purged too. The query is the source URL's, as
 * the client sent it (not filtered by cache.query). Returns the objects. */
static size_t s_purge_sources(gw_server_t *srv, gw_purge_kind_t kind, const rf_vhost_conf_t *vh, const char *canon,
                              size_t cl, const gw_purge_target_t *t)
{
    if (cl <= 5 || memcmp(canon, "/src/", 5) != 0)
        return 0;
    size_t n = 0;
    for (size_t i = 0; gw_funcs[i] != NULL; i++) {
        char key[RF_PATH_MAX + 2048];
        if (gw_funcs[i]->source_key == NULL ||
            gw_funcs[i]->source_key(vh, h2o_iovec_init(canon + 5, cl - 5), key, sizeof(key)) < 0)
            continue;
        size_t kl = strlen(key);
        if (t->query != NULL) {
            if (kl + t->query_len >= sizeof(key))
                continue;
            memcpy(key + kl, t->query, t->query_len);
            key[kl + t->query_len] = '\0';
        }
        n += gw_purge_apply(srv, kind, vh->name, key, t->glob);
        gw_meta_publish_purge(srv->meta, kind, vh->name, key, t->glob);
    }
    return n;
}

/* One URL: resolves its vhost, canonicalises its path and applies `kind`.
 * Appends a result object to `out`. */
static void s_purge_one(gw_server_t *srv, h2o_mem_pool_t *pool, gw_purge_kind_t kind, const char *url, size_t len,
                        json_t *out)
{
    json_t *r = json_object();
    json_object_set_new(r, "url", json_stringn(url, len));
    gw_purge_target_t t;
    const char *bad = gw_purge_target_split(url, len, &t);
    if (bad != NULL) {
        json_object_set_new(r, "error", json_string(bad));
        goto done;
    }
    gw_vhosts_t *vt = srv->threads[0].vhosts; /* this runs on thread 0: its table */
    const rf_vhost_conf_t *vh = gw_vhosts_match(vt, t.host, t.host_len);
    if (vh == NULL) {
        json_object_set_new(r, "error", json_string("no vhost serves this host"));
        goto done;
    }
    json_object_set_new(r, "vhost", json_string(vh->name));
    char canon[RF_PATH_MAX + 2048];
    const char *why = NULL;
    ssize_t cl = t.path_len <= RF_PATH_MAX ? rf_path_canon(t.path, t.path_len, canon, &why) : -1;
    if (cl < 0 || (size_t)cl + t.query_len + 1 > sizeof(canon)) {
        json_object_set_new(r, "error", json_string(why ? why : "path too long"));
        goto done;
    }
    size_t n = s_purge_sources(srv, kind, vh, canon, (size_t)cl, &t);
    if (t.query != NULL) {
        /* The key holds the query as the vhost's cache.query says. */
        h2o_iovec_t q = h2o_iovec_init(t.query, t.query_len);
        h2o_iovec_t kq = t.glob ? q : gw_key_query(&vh->cache, q, pool);
        memcpy(canon + cl, kq.base, kq.len);
        cl += (ssize_t)kq.len;
    }
    canon[cl] = '\0';
    n += gw_purge_apply(srv, kind, vh->name, canon, t.glob);
    gw_meta_publish_purge(srv->meta, kind, vh->name, canon, t.glob);
    if (!t.glob && vh->storage.s3 != NULL) { /* the stored copies go too (a pattern cannot reach them) */
        char *asked = strndup(url, len);
        if (asked != NULL)
            gw_storage_purge(srv->storage, vh, vt, canon, asked);
        free(asked);
        json_object_set_new(r, "storage", json_string("deleting"));
    }
    json_object_set_new(r, "objects", json_integer((json_int_t)n));
done:
    json_array_append_new(out, r);
}

static void s_json_answer(h2o_req_t *req, int status, json_t *doc)
{
    char *text = json_dumps(doc, JSON_COMPACT);
    size_t len = text ? strlen(text) : 0;
    char *body = h2o_mem_alloc_pool(&req->pool, len + 2);
    memcpy(body, text ? text : "", len);
    body[len++] = '\n';
    free(text);
    req->res.status = status;
    req->res.reason = gw_reason(status);
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, H2O_STRLIT("application/json"));
    h2o_send_inline(req, body, len);
}

#define GW_ADMIN_URLS_MAX 1000

/* Whether the request carries the admin token ("Bearer TOKEN"); when not,
 * it is answered (403 without a token configured, 401 with a wrong one). */
static bool s_authorized(gw_server_t *srv, h2o_req_t *req, const char *what)
{
    const char *token = srv->cfg->gateway.admin_token;
    if (token == NULL || token[0] == '\0') {
        char msg[120];
        int ml = snprintf(msg, sizeof(msg), "%s is off: set gateway.admin_token\n", what);
        h2o_send_error_generic(req, 403, "Forbidden", h2o_strdup(&req->pool, msg, (size_t)ml).base, 0);
        return false;
    }
    ssize_t i = h2o_find_header(&req->headers, H2O_TOKEN_AUTHORIZATION, -1);
    size_t tl = strlen(token);
    h2o_iovec_t v = i >= 0 ? req->headers.entries[i].value : h2o_iovec_init(NULL, 0);
    if (i < 0 || v.len != 7 + tl || strncasecmp(v.base, "Bearer ", 7) != 0 ||
        CRYPTO_memcmp(v.base + 7, token, tl) != 0) {
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_WWW_AUTHENTICATE, NULL, H2O_STRLIT("Bearer"));
        h2o_send_error_generic(req, 401, "Unauthorized", "the admin token is missing or wrong\n",
                               H2O_SEND_ERROR_KEEP_HEADERS);
        return false;
    }
    return true;
}

/* Calls fn(arg, url, len) for each URL of the request — ?url=…
 * (repeatable, percent-encoded), then one per body line — up to max of
 * them. Returns how many there were (more than max: max + 1 or more). */
static size_t s_each_url(h2o_req_t *req, size_t max, void (*fn)(void *arg, const char *url, size_t len), void *arg)
{
    size_t n = 0;
    if (req->query_at != SIZE_MAX) {
        const char *qs = req->path.base + req->query_at + 1, *qe = req->path.base + req->path.len, *enc;
        size_t enc_len;
        while (gw_query_next(&qs, qe, "url", &enc, &enc_len)) {
            h2o_iovec_t val = h2o_strdup(&req->pool, enc, enc_len);
            val.len = gw_query_decode(val.base, val.len);
            if (n++ < max)
                fn(arg, val.base, val.len);
        }
    }
    for (const char *b = req->entity.base, *be = b + req->entity.len; b != NULL && b < be;) {
        const char *nl = memchr(b, '\n', (size_t)(be - b));
        const char *le = nl ? nl : be;
        size_t ll = (size_t)(le - b);
        while (ll > 0 && (b[ll - 1] == '\r' || b[ll - 1] == ' '))
            ll--;
        if (ll > 0 && n++ < max)
            fn(arg, b, ll);
        b = nl ? nl + 1 : be;
    }
    return n;
}

static void s_bad_count(h2o_req_t *req, size_t n)
{
    if (n == 0)
        h2o_send_error_generic(req, 400, "Bad Request", "give URLs: ?url=… or one per line in the body\n", 0);
    else
        h2o_send_error_generic(req, 400, "Bad Request", "at most 1000 URLs per request\n", 0);
}

typedef struct {
    gw_server_t *srv;
    h2o_mem_pool_t *pool;
    gw_purge_kind_t kind;
    json_t *results;
} s_purge_arg_t;

static void s_purge_url(void *arg, const char *url, size_t len)
{
    s_purge_arg_t *a = arg;
    s_purge_one(a->srv, a->pool, a->kind, url, len, a->results);
}

static int s_purge(gw_server_t *srv, h2o_req_t *req, gw_purge_kind_t kind)
{
    if (!s_authorized(srv, req, "cache purge"))
        return 0;
    json_t *results = json_array();
    s_purge_arg_t pa = {srv, &req->pool, kind, results};
    size_t n = s_each_url(req, GW_ADMIN_URLS_MAX, s_purge_url, &pa);
    if (n == 0 || n > GW_ADMIN_URLS_MAX) {
        json_decref(results);
        s_bad_count(req, n);
        return 0;
    }
    static const char *const names[] = {"purge", "expire", "hardpurge"};
    rf_info("cache %s: %zu URL(s)", names[kind], n);
    const char *l[] = {names[kind]};
    rf_metric_add(gw_m.purges, l, (double)n);
    json_t *doc = json_pack("{s:s, s:o}", "action", names[kind], "results", results);
    s_json_answer(req, 200, doc);
    json_decref(doc);
    return 0;
}

/* ---- pre-warm ---------------------------------------------------------------- */

/* One POST /prewarm: its URLs are fetched through this gateway's own
 * listener on the upload threads, and the answer waits for all of them.
 * The batch outlives a client that leaves (the hook tells it so). */
typedef struct s_warm_batch_t {
    h2o_req_t *req; /* NULL once the admin client is gone */
    struct s_warm_batch_t **hook;
    json_t *results;
    size_t pending;
    size_t failed;
} s_warm_batch_t;

typedef struct {
    s_warm_batch_t *batch;
    json_t *result; /* borrowed from batch->results */
} s_warm_slot_t;

static void s_warm_hook_dispose(void *p)
{
    s_warm_batch_t **hook = p;
    if (*hook != NULL)
        (*hook)->req = NULL;
}

static void s_warm_finish(s_warm_batch_t *b)
{
    if (b->req != NULL) {
        *b->hook = NULL;
        json_t *doc = json_pack("{s:s, s:O}", "action", "prewarm", "results", b->results);
        s_json_answer(b->req, 200, doc);
        json_decref(doc);
    }
    json_decref(b->results);
    free(b);
}

static void s_warm_done(void *arg, const gw_warm_result_t *r)
{
    s_warm_slot_t *slot = arg;
    s_warm_batch_t *b = slot->batch;
    if (r->status > 0) {
        json_object_set_new(slot->result, "status", json_integer(r->status));
        json_object_set_new(slot->result, "cache_status", json_string(r->cache_status));
        json_object_set_new(slot->result, "bytes", json_integer((json_int_t)r->bytes));
    } else {
        json_object_set_new(slot->result, "error", json_string(r->error));
    }
    const char *l[] = {r->status >= 200 && r->status <= 299 ? "ok" : "failed"};
    rf_metric_add(gw_m.admin_prewarms, l, 1);
    free(slot);
    if (--b->pending == 0)
        s_warm_finish(b);
}

typedef struct {
    gw_server_t *srv;
    s_warm_batch_t *batch;
    char id[24];
    size_t i;
} s_warm_arg_t;

static void s_warm_url(void *arg, const char *url, size_t len)
{
    s_warm_arg_t *a = arg;
    json_t *r = json_object();
    json_object_set_new(r, "url", json_stringn(url, len));
    json_array_append_new(a->batch->results, r);
    gw_purge_target_t t;
    const char *bad = gw_purge_target_split(url, len, &t);
    if (bad == NULL && t.glob)
        bad = "a pre-warm names one URL, not a pattern";
    gw_vhosts_t *vt = a->srv->threads[0].vhosts;
    if (bad == NULL && gw_vhosts_match(vt, t.host, t.host_len) == NULL)
        bad = "no vhost serves this host";
    char *target = NULL, *host = NULL, rid[40];
    snprintf(rid, sizeof(rid), "%s-%zu", a->id, a->i++);
    s_warm_slot_t *slot = bad == NULL ? calloc(1, sizeof(*slot)) : NULL;
    if (slot != NULL && (asprintf(&target, "http://127.0.0.1:%d%.*s%.*s", a->srv->cfg->gateway.listen.port,
                                  (int)t.path_len, t.path, (int)t.query_len, t.query ? t.query : "") < 0 ||
                         (host = strndup(t.host, t.host_len)) == NULL))
        target = NULL;
    if (slot != NULL && target != NULL) {
        slot->batch = a->batch;
        slot->result = r;
        json_object_set_new(r, "request_id", json_string(rid));
        if (gw_storage_warm(a->srv->storage, &a->srv->threads[0], target, host, rid, s_warm_done, slot) == 0) {
            a->batch->pending++;
            slot = NULL;
        } else {
            bad = "the pre-warm queue is full";
        }
    } else if (bad == NULL) {
        bad = "out of memory";
    }
    if (bad != NULL) {
        json_object_set_new(r, "error", json_string(bad));
        a->batch->failed++;
    }
    free(slot);
    free(target);
    free(host);
}

/* POST /prewarm: each URL is requested through this gateway like a
 * client's GET (origin, function chain, cache store, storage upload), at
 * most two at a time (the upload threads); the answer lists each URL's
 * status and Cache-Status once all are done. */
static int s_prewarm(gw_server_t *srv, h2o_req_t *req)
{
    if (!s_authorized(srv, req, "pre-warm"))
        return 0;
    s_warm_batch_t *b = calloc(1, sizeof(*b));
    if (b == NULL || (b->results = json_array()) == NULL) {
        free(b);
        h2o_send_error_generic(req, 503, "Service Unavailable", "out of memory\n", 0);
        return 0;
    }
    b->req = req;
    b->hook = h2o_mem_alloc_shared(&req->pool, sizeof(*b->hook), s_warm_hook_dispose);
    *b->hook = b;
    s_warm_arg_t a = {srv, b, "", 0};
    uint32_t rnd = 0;
    if (getrandom(&rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
        rnd = (uint32_t)time(NULL);
    snprintf(a.id, sizeof(a.id), "prewarm-%08x", rnd);
    b->pending = 1; /* held while the URLs are queued */
    size_t n = s_each_url(req, GW_ADMIN_URLS_MAX, s_warm_url, &a);
    rf_info("admin pre-warm %s: %zu URL(s)", a.id, n);
    if (n == 0 || n > GW_ADMIN_URLS_MAX) {
        b->req = NULL; /* answered here; the queued ones finish into nothing */
        *b->hook = NULL;
        s_bad_count(req, n);
    }
    if (--b->pending == 0)
        s_warm_finish(b);
    return 0;
}

static int s_on_req(h2o_handler_t *h, h2o_req_t *req)
{
    s_admin_handler_t *self = (s_admin_handler_t *)h;
    size_t plen = req->query_at != SIZE_MAX ? req->query_at : req->path.len;
    static const struct {
        const char *path;
        gw_purge_kind_t kind;
    } purges[] = {{"/purge", GW_PURGE}, {"/expire", GW_EXPIRE}, {"/hardpurge", GW_HARDPURGE}};
    for (size_t i = 0; i < sizeof(purges) / sizeof(purges[0]); i++)
        if (h2o_memis(req->path.base, plen, purges[i].path, strlen(purges[i].path))) {
            if (!h2o_memis(req->method.base, req->method.len, H2O_STRLIT("POST"))) {
                h2o_send_error_generic(req, 405, "Method Not Allowed", "cache purges are POST\n", 0);
                return 0;
            }
            return s_purge(self->server, req, purges[i].kind);
        }
    if (h2o_memis(req->path.base, plen, H2O_STRLIT("/prewarm"))) {
        if (!h2o_memis(req->method.base, req->method.len, H2O_STRLIT("POST"))) {
            h2o_send_error_generic(req, 405, "Method Not Allowed", "pre-warms are POST\n", 0);
            return 0;
        }
        return s_prewarm(self->server, req);
    }
    if (!h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET")) &&
        !h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD"))) {
        h2o_send_error_generic(req, 405, "Method Not Allowed", "the admin endpoints answer GET and HEAD\n", 0);
        return 0;
    }
    if (h2o_memis(req->path.base, plen, H2O_STRLIT("/metrics"))) {
        size_t len = 0;
        char *text = rf_metrics_render(self->server->metrics, &len);
        if (text == NULL) {
            h2o_send_error_generic(req, 503, "Service Unavailable", "out of memory\n", 0);
            return 0;
        }
        char **slot = h2o_mem_alloc_shared(&req->pool, sizeof(*slot), s_free_dispose);
        *slot = text;
        static h2o_generator_t gen = {NULL, NULL};
        req->res.status = 200;
        req->res.reason = "OK";
        req->res.content_length = len;
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                       H2O_STRLIT("text/plain; version=0.0.4; charset=utf-8"));
        h2o_start_response(req, &gen);
        h2o_iovec_t buf = h2o_iovec_init(text, len);
        int head = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD"));
        h2o_send(req, &buf, head ? 0 : 1, H2O_SEND_STATE_FINAL);
        return 0;
    }
    if (h2o_memis(req->path.base, plen, H2O_STRLIT("/healthz"))) {
        gw_thread_t *t0 = &self->server->threads[0];
        if (t0->draining) {
            h2o_send_error_generic(req, 503, "Service Unavailable", "draining: shutting down\n", 0);
            return 0;
        }
        req->res.status = 200;
        req->res.reason = "OK";
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, H2O_STRLIT("text/plain"));
        h2o_send_inline(req, H2O_STRLIT("ok\n"));
        return 0;
    }
    h2o_send_error_generic(req, 404, "Not Found", "admin paths: /metrics /healthz /purge /expire /hardpurge /prewarm\n",
                           0);
    return 0;
}

void gw_admin_register(h2o_hostconf_t *hostconf, gw_server_t *server)
{
    h2o_pathconf_t *pathconf = h2o_config_register_path(hostconf, "/", 0);
    s_admin_handler_t *h = (s_admin_handler_t *)h2o_create_handler(pathconf, sizeof(*h));
    h->super.on_req = s_on_req;
    h->server = server;
}
