/*  gw_proxy — http:// origins: one upstream (address, keep-alive pool, TLS
 *  setting) per origin per event-loop thread, and the stream that carries
 *  an origin response to the client with bounded memory — or collects a
 *  whole source body for a transform (gw_collector_t).
 */
#include <fnmatch.h>
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <xxhash.h>

#include "gw.h"
#include "gw_metrics.h"
#include "rf_log.h"

/* Bytes received from the origin but not yet accepted by the client before
 * the origin read is paused: bounds memory per request whatever the object
 * size, while letting reads overlap writes. */
#define GW_STREAM_WINDOW (512 * 1024)

/* ---- upstream pools per thread -------------------------------------------- */

/* One upstream per origin host:port and TLS setting (none for http://)
 * per thread, made on first use. Returns it (the thread owns it), or NULL
 * with *why when out of memory or when the TLS setting's files cannot be
 * loaded. Names are looked up later, without blocking (gw_origin.h). */
gw_upstream_t *gw_thread_upstream(gw_thread_t *t, const rf_origin_t *origin, const rf_vhost_conf_t *vh,
                                  const char **why)
{
    const rf_config_t *cfg = t->server->cfg;
    int connect_ms = vh->connect_timeout_ms > 0 ? vh->connect_timeout_ms : cfg->gateway.connect_timeout_ms;
    int read_ms = vh->read_timeout_ms > 0 ? vh->read_timeout_ms : cfg->gateway.read_timeout_ms;
    /* Every request looks its upstream up: compare fields, format nothing. */
    for (h2o_linklist_t *l = t->upstreams.next; l != &t->upstreams; l = l->next) {
        gw_upstream_entry_t *e = H2O_STRUCT_FROM_MEMBER(gw_upstream_entry_t, link, l);
        if (e->port == origin->port && e->connect_ms == connect_ms && e->read_ms == read_ms &&
            e->public_only == origin->public_only && strcmp(e->host, origin->host) == 0 &&
            gw_origin_tls_matches(gw_upstream_tls(e->up), origin))
            return e->up;
    }
    if (strlen(origin->host) >= sizeof(((gw_upstream_entry_t *)0)->host)) {
        *why = "origin host name too long";
        return NULL;
    }
    /* byclient hosts come from URLs: bound the pools a thread keeps. */
    size_t n_entries = 0;
    for (h2o_linklist_t *l = t->upstreams.next; l != &t->upstreams; l = l->next)
        n_entries++;
    if (n_entries >= 1024) {
        *why = "too many distinct origins on this thread (1024)";
        return NULL;
    }
    gw_upstream_opts_t opts = {.connect_timeout_ms = connect_ms,
                               .io_timeout_ms = read_ms,
                               .keepalive_max = cfg->gateway.keepalive_max,
                               .keepalive_timeout_ms = cfg->gateway.keepalive_timeout_ms,
                               .resolve_ttl_ms = cfg->gateway.resolve_ttl_ms,
                               .fails_max = vh->health_fails,
                               .down_ms = vh->health_down_ms,
                               .public_only = origin->public_only};
    if (origin->https && (opts.tls = gw_origin_tls_get(origin, why)) == NULL)
        return NULL;
    gw_upstream_t *up =
        gw_upstream_new(t->ctx.loop, &t->ctx.receivers.hostinfo_getaddr, origin->host, origin->port, &opts);
    if (up == NULL) {
        *why = "out of memory";
        return NULL;
    }
    gw_upstream_entry_t *e = calloc(1, sizeof(*e));
    if (e == NULL) {
        *why = "out of memory";
        return NULL; /* the upstream leaks; allocation failure is fatal soon anyway */
    }
    snprintf(e->host, sizeof(e->host), "%s", origin->host);
    e->port = origin->port;
    e->connect_ms = connect_ms;
    e->read_ms = read_ms;
    e->public_only = origin->public_only;
    e->up = up;
    h2o_linklist_insert(&t->upstreams, &e->link);
    return up;
}

static void s_origin_dispose(void *p)
{
    rf_origin_clear(p);
}

rf_origin_t *gw_client_origin(gw_req_t *rc, bool https, const char *name, const char *what)
{
    char url[300];
    snprintf(url, sizeof(url), "%s://%s", https ? "https" : "http", name);
    rf_origin_t *o = h2o_mem_alloc_shared(&rc->req->pool, sizeof(*o), s_origin_dispose);
    memset(o, 0, sizeof(*o));
    const char *why = NULL;
    if (rf_origin_parse(url, o, &why) < 0 || o->kind != RF_ORIGIN_HTTP) {
        gw_send_error(rc, 400, "Bad Request", "%s: %s: %s", what, name, why ? why : "not a host");
        return NULL;
    }
    return o;
}

bool gw_host_allowed(const char *name, char *const *patterns, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (fnmatch(patterns[i], name, FNM_CASEFOLD) == 0)
            return true;
    return false;
}

/* The i-th origin of a vhost (0: `origin`). */
static const rf_origin_t *s_origin_at(const rf_vhost_conf_t *vh, size_t i)
{
    return i == 0 ? &vh->origin : &vh->more_origins[i - 1];
}

/* Which origin this request goes to: the only one; or, by `balance`, the
 * next in turn (round_robin) or the one whose rendezvous hash with the
 * cache key is highest (hash: adding an origin moves about 1/N of the keys
 * to it, and a down origin's keys spread over the others) — skipping those
 * passive health marks down, unless all are. */
static const rf_origin_t *s_pick(gw_req_t *rc, const char **why, gw_upstream_t **up_out)
{
    const rf_vhost_conf_t *vh = rc->vhost;
    size_t n = 1 + vh->n_more_origins;
    gw_thread_t *t = rc->thread;
    if (n == 1) {
        *up_out = gw_thread_upstream(t, &vh->origin, vh, why);
        return &vh->origin;
    }
    size_t vi = (size_t)(vh - rc->vhosts->cfg->vhosts);
    uint64_t score[64], start = vh->balance_hash ? 0 : atomic_fetch_add(&rc->vhosts->rr[vi], 1);
    for (size_t i = 0; i < n; i++)
        score[i] = vh->balance_hash
                       ? XXH3_64bits_withSeed(rc->key.base, rc->key.len,
                                              XXH3_64bits(s_origin_at(vh, i)->url, strlen(s_origin_at(vh, i)->url)))
                       : (uint64_t)(n - ((i + n - start % n) % n)); /* turn order */
    size_t best = SIZE_MAX, any = 0;
    gw_upstream_t *best_up = NULL;
    for (size_t i = 0; i < n; i++) {
        if (score[i] > score[any])
            any = i;
        gw_upstream_t *up = gw_thread_upstream(t, s_origin_at(vh, i), vh, why);
        if (up != NULL && gw_upstream_up(up) && (best == SIZE_MAX || score[i] > score[best]))
            best = i, best_up = up;
    }
    if (best == SIZE_MAX) { /* all down: the preferred one is tried */
        *up_out = gw_thread_upstream(t, s_origin_at(vh, any), vh, why);
        return s_origin_at(vh, any);
    }
    *up_out = best_up;
    return s_origin_at(vh, best);
}

/* Sibling distribution: the sibling that owns the request's key (highest
 * rendezvous hash), when it is another gateway and up — or NULL: this one
 * serves it from its own origin. A request a sibling passed here is never
 * passed on (x-refract-sibling), and Via catches any other loop. */
static const rf_origin_t *s_sibling(gw_req_t *rc, gw_upstream_t **up_out)
{
    const rf_vhost_conf_t *vh = rc->vhost;
    if (vh->n_siblings == 0 || h2o_find_header_by_str(&rc->req->headers, H2O_STRLIT("x-refract-sibling"), -1) != -1)
        return NULL;
    size_t best = 0;
    uint64_t best_score = 0;
    for (size_t i = 0; i < vh->n_siblings; i++) {
        const char *u = vh->siblings[i].url;
        uint64_t sc = XXH3_64bits_withSeed(rc->key.base, rc->key.len, XXH3_64bits(u, strlen(u)));
        if (i == 0 || sc > best_score)
            best = i, best_score = sc;
    }
    if (best == vh->sibling_self)
        return NULL;
    const char *why = NULL;
    gw_upstream_t *up = gw_thread_upstream(rc->thread, &vh->siblings[best], vh, &why);
    if (up == NULL || !gw_upstream_up(up))
        return NULL; /* the owner is down: served here */
    *up_out = up;
    return &vh->siblings[best];
}

gw_upstream_t *gw_proxy_pick(gw_req_t *rc, const char **why)
{
    gw_upstream_t *up = NULL;
    *why = NULL;
    if (rc->byclient != NULL) {
        rc->origin = rc->byclient;
        return gw_thread_upstream(rc->thread, rc->byclient, rc->vhost, why);
    }
    const rf_origin_t *sib = s_sibling(rc, &up);
    if (sib != NULL) {
        rc->origin = sib;
        rc->to_sibling = 1;
        return up;
    }
    rc->origin = s_pick(rc, why, &up);
    return up;
}

gw_upstream_t *gw_proxy_upstream(gw_req_t *rc)
{
    const char *why = NULL;
    gw_upstream_t *up = gw_proxy_pick(rc, &why);
    if (up == NULL)
        gw_send_error(rc, 502, "Bad Gateway", "origin %s: %s", rc->origin->url, why ? why : "unavailable");
    return up;
}

/* ---- origin -> client streaming -------------------------------------------- */

struct gw_stream_t {
    h2o_generator_t super; /* first: h2o hands it back to proceed/stop */
    gw_req_t *rc;
    gw_fetch_t *fetch; /* NULL once the fetch ended */
    h2o_buffer_t *pending, *sending;
    gw_collector_t collect; /* valid while `collecting` */
    int status;
    int64_t content_length;
    int spool_fd;          /* collecting into this file (collect.spool), or -1 */
    size_t spooled;        /* bytes written to it */
    h2o_headers_t headers; /* filtered origin response headers (req pool) */
    unsigned collecting : 1, started : 1, inflight : 1, eos : 1, failed : 1, done : 1, paused : 1, head_only : 1;
    const char *upstream;
};

static const char *const s_hop_by_hop[] = {"connection",
                                           "keep-alive",
                                           "proxy-connection",
                                           "te",
                                           "trailer",
                                           "transfer-encoding",
                                           "upgrade",
                                           "content-length",
                                           "http2-settings",
                                           "proxy-authenticate",
                                           "proxy-authorization",
                                           NULL};

/* The gateway writes its own Date and Server, as nginx does by default. */
static const char *const s_hidden[] = {"date", "server", NULL};

static int s_is_listed(const char *const *list, const char *name, size_t len)
{
    for (int i = 0; list[i]; i++)
        if (h2o_lcstris(name, len, list[i], strlen(list[i])))
            return 1;
    return 0;
}

static int s_is_hop(const char *name, size_t len)
{
    return s_is_listed(s_hop_by_hop, name, len);
}

/* Whether `name` is one of the comma-separated tokens of a Connection
 * header value: such headers are hop-by-hop too (RFC 9110 7.6.1). */
static int s_named_in_connection(const char *conn, size_t conn_len, const char *name, size_t len)
{
    size_t i = 0;
    while (i < conn_len) {
        while (i < conn_len && (conn[i] == ' ' || conn[i] == '\t' || conn[i] == ','))
            i++;
        size_t start = i;
        while (i < conn_len && conn[i] != ',' && conn[i] != ' ' && conn[i] != '\t')
            i++;
        if (i - start == len && strncasecmp(conn + start, name, len) == 0)
            return 1;
    }
    return 0;
}

/* Whether any Connection header of the origin response names `name`. */
static int s_origin_nominated(const struct phr_header *headers, size_t n, const char *name, size_t len)
{
    for (size_t i = 0; i < n; i++)
        if (headers[i].name != NULL && h2o_lcstris(headers[i].name, headers[i].name_len, H2O_STRLIT("connection")) &&
            s_named_in_connection(headers[i].value, headers[i].value_len, name, len))
            return 1;
    return 0;
}

static void s_stream_dispose(void *p)
{
    gw_stream_t *s = p;
    if (s->fetch != NULL) {
        gw_fetch_cancel(s->fetch);
        s->fetch = NULL;
    }
    h2o_buffer_dispose(&s->pending);
    h2o_buffer_dispose(&s->sending);
}

static void s_append(h2o_buffer_t **buf, const char *data, size_t len)
{
    if (len == 0)
        return;
    h2o_iovec_t dst = h2o_buffer_reserve(buf, len);
    memcpy(dst.base, data, len);
    (*buf)->size += len;
}

/* Moves pending bytes to the client when nothing is in flight. */
static void s_flush(gw_stream_t *s)
{
    h2o_req_t *req = s->rc->req;
    if (s->inflight || s->done)
        return;
    if (s->failed) {
        s->done = 1;
        h2o_send(req, NULL, 0, H2O_SEND_STATE_ERROR);
        return;
    }
    if (s->pending->size == 0 && !s->eos)
        return;
    h2o_buffer_t *tmp = s->sending;
    s->sending = s->pending;
    s->pending = tmp;
    h2o_iovec_t buf = h2o_iovec_init(s->sending->bytes, s->sending->size);
    int final = s->eos;
    s->inflight = 1;
    if (final)
        s->done = 1;
    if (s->paused && s->fetch != NULL) {
        s->paused = 0;
        gw_fetch_resume(s->fetch);
    }
    h2o_send(req, &buf, buf.len ? 1 : 0, final ? H2O_SEND_STATE_FINAL : H2O_SEND_STATE_IN_PROGRESS);
}

static void s_on_proceed(h2o_generator_t *g, h2o_req_t *req)
{
    (void)req;
    gw_stream_t *s = (gw_stream_t *)g;
    s->inflight = 0;
    /* Keep the allocation: the next swap reuses it for incoming bytes. */
    gw_buffer_clear(&s->sending, 2 * GW_STREAM_WINDOW);
    s_flush(s);
}

static void s_on_stop(h2o_generator_t *g, h2o_req_t *req)
{
    (void)req;
    gw_stream_t *s = (gw_stream_t *)g;
    s->done = 1;
    if (s->fetch != NULL) {
        gw_fetch_cancel(s->fetch);
        s->fetch = NULL;
    }
}

/* Starts the client response from the saved origin head. */
static void s_start_response(gw_stream_t *s)
{
    h2o_req_t *req = s->rc->req;
    req->res.status = s->status;
    req->res.reason = gw_reason(s->status);
    for (size_t i = 0; i < s->headers.size; i++)
        h2o_vector_reserve(&req->pool, &req->res.headers, req->res.headers.size + 1),
            req->res.headers.entries[req->res.headers.size++] = s->headers.entries[i];
    if (s->content_length >= 0)
        req->res.content_length = (size_t)s->content_length;
    gw_deliver_headers(s->rc);
    s->started = 1;
    s->super.proceed = s_on_proceed;
    s->super.stop = s_on_stop;
    h2o_start_response(req, &s->super);
    if (h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD"))) {
        /* A transform source is fetched with GET; a HEAD client gets the
         * head only (a body would corrupt its keep-alive connection). */
        if (s->fetch != NULL) {
            gw_fetch_cancel(s->fetch);
            s->fetch = NULL;
        }
        h2o_buffer_consume(&s->pending, s->pending->size);
        s->eos = 1;
        s->head_only = 1;
    }
}

int gw_proxy_passes_header(const struct phr_header *headers, size_t n, size_t i)
{
    return headers[i].name != NULL && !s_is_hop(headers[i].name, headers[i].name_len) &&
           !s_is_listed(s_hidden, headers[i].name, headers[i].name_len) &&
           !s_origin_nominated(headers, n, headers[i].name, headers[i].name_len);
}

static int s_on_head(gw_fetch_t *f, void *arg, int status, const struct phr_header *headers, size_t n,
                     int64_t content_length)
{
    gw_stream_t *s = arg;
    gw_req_t *rc = s->rc;
    h2o_req_t *req = rc->req;
    const char *l[] = {rc->vhost->name};
    rf_metric_observe(gw_m.origin_duration, l, (double)gw_fetch_head_usec(f) / 1e6);
    s->status = status;
    s->content_length = content_length;
    if (rc->invalidate && status < 400)
        gw_cache_invalidate(rc);
    for (size_t i = 0; i < n; i++) {
        if (!gw_proxy_passes_header(headers, n, i))
            continue;
        h2o_iovec_t name = h2o_strdup(&req->pool, headers[i].name, headers[i].name_len);
        h2o_strtolower(name.base, name.len);
        h2o_iovec_t *np = h2o_mem_alloc_pool(&req->pool, sizeof(*np));
        *np = name;
        h2o_vector_reserve(&req->pool, &s->headers, s->headers.size + 1);
        h2o_header_t *h = &s->headers.entries[s->headers.size++];
        const h2o_token_t *tok = h2o_lookup_token(name.base, name.len);
        h->name = tok ? (h2o_iovec_t *)&tok->buf : np;
        h->orig_name = NULL;
        h->value = h2o_strdup(&req->pool, headers[i].value, headers[i].value_len);
    }
    if (s->collecting && s->collect.on_redirect != NULL &&
        (status == 301 || status == 302 || status == 303 || status == 307 || status == 308)) {
        for (size_t i = 0; i < n; i++)
            if (headers[i].name != NULL && h2o_lcstris(headers[i].name, headers[i].name_len, H2O_STRLIT("location"))) {
                /* The collector may follow it with a new stream: this one
                 * ends here, quietly (the fetch is freed when we return). */
                h2o_iovec_t loc = h2o_strdup(&req->pool, headers[i].value, headers[i].value_len);
                if (s->collect.on_redirect(rc, loc.base, loc.len)) {
                    s->fetch = NULL;
                    s->done = 1;
                    return -1;
                }
                break;
            }
    }
    if (s->collecting) {
        /* Only a complete 200 can be a transform source; anything else
         * (404, redirects, …) passes through as the origin said it. */
        if (status != 200) {
            s->collecting = 0;
        } else if (s->collect.limit > 0 && content_length > (int64_t)s->collect.limit) {
            s->collecting = 0;
            if (s->collect.on_over_limit(rc, content_length)) {
                s->fetch = NULL; /* freed when we return */
                s->done = 1;
                return -1;
            }
        } else if (content_length >= 0 && s->collect.spool != NULL) {
            s->spool_fd = s->collect.spool(rc, content_length);
        }
    }
    if (!s->collecting) {
        s_start_response(s);
        if (s->head_only) {
            s_flush(s);
            return -1; /* the fetch was cancelled above: end it here */
        }
    }
    return 0;
}

/* Collecting into the spool file: each piece is written as it comes, so
 * the gateway never holds the whole source. A failed write ends the
 * fetch with 503 (the transform's owner removes the file). */
static void s_spool_body(gw_stream_t *s, const char *data, size_t len, int eos)
{
    gw_req_t *rc = s->rc;
    while (len > 0) {
        ssize_t n = write(s->spool_fd, data, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            const char *why = n < 0 ? strerror(errno) : "short write";
            if (s->fetch != NULL) {
                gw_fetch_cancel(s->fetch);
                s->fetch = NULL;
            }
            s->collecting = 0;
            s->done = 1;
            rf_log(RF_LOG_ERROR, rc->request_id, "bus.spool_dir: cannot write a source: %s", why);
            gw_send_error(rc, 503, "Service Unavailable", "source spool: %s", why);
            return;
        }
        data += n;
        len -= (size_t)n;
        s->spooled += (size_t)n;
    }
    if (eos) {
        s->eos = 1;
        s->fetch = NULL;
        s->collect.on_collected(rc, NULL, s->spooled, &s->headers);
    }
}

static void s_on_body(gw_fetch_t *f, void *arg, const char *data, size_t len, int eos)
{
    gw_stream_t *s = arg;
    gw_req_t *rc = s->rc;
    if (s->head_only)
        return;
    if (s->collecting && s->spool_fd >= 0) {
        s_spool_body(s, data, len, eos);
        return;
    }
    s_append(&s->pending, data, len);
    if (eos) {
        s->eos = 1;
        s->fetch = NULL;
    }
    if (s->collecting) {
        if (s->collect.limit > 0 && s->pending->size > s->collect.limit) {
            /* No Content-Length and bigger than allowed: serve the original
             * after all, starting with what was collected. */
            s->collecting = 0;
            s->collect.on_over_limit(rc, -1);
            s_start_response(s);
            if (s->head_only) {
                s_flush(s);
                return;
            }
        } else if (s->eos) {
            /* Hand the whole body over; it becomes the job's buffer. */
            size_t blen = s->pending->size;
            void *body = malloc(blen ? blen : 1);
            if (body == NULL) {
                gw_send_error(rc, 503, "Service Unavailable", "out of memory");
                return;
            }
            memcpy(body, s->pending->bytes, blen);
            h2o_buffer_consume(&s->pending, blen);
            s->collect.on_collected(rc, body, blen, &s->headers);
            return;
        } else {
            return;
        }
    }
    if (!s->eos && s->pending->size >= GW_STREAM_WINDOW && !s->paused && s->fetch != NULL) {
        s->paused = 1;
        gw_fetch_pause(f);
    }
    s_flush(s);
}

void gw_origin_failed(const char *vhost, const char *request_id, const char *upstream, int status, const char *why)
{
    const char *l[] = {vhost, status == 504                     ? "timeout"
                              : strstr(why, "does not resolve") ? "resolve"
                              : strstr(why, " TLS: ")           ? "tls"
                              : strstr(why, "unreachable")      ? "unreachable"
                                                                : "protocol"};
    rf_metric_add(gw_m.origin_errors, l, 1);
    rf_log(RF_LOG_WARN, request_id, "origin %s: %s", upstream, why);
}

static void s_on_fetch_error(gw_fetch_t *f, void *arg, int status, const char *why)
{
    (void)f;
    gw_stream_t *s = arg;
    gw_req_t *rc = s->rc;
    s->fetch = NULL;
    gw_origin_failed(rc->vhost->name, rc->request_id, s->upstream, status, why);
    if (!s->started) {
        gw_send_error(rc, status, status == 504 ? "Gateway Timeout" : "Bad Gateway", "%s", why);
        return;
    }
    /* Mid-body: the client must see a broken transfer, never a short
     * object presented as whole. */
    s->failed = 1;
    s_flush(s);
}

static const gw_fetch_cbs_t s_fetch_cbs = {s_on_head, s_on_body, s_on_fetch_error};

/* Whether any Connection header of the client request names `name`. */
static int s_client_nominated(const h2o_headers_t *headers, const char *name, size_t len)
{
    for (ssize_t i = -1; (i = h2o_find_header(headers, H2O_TOKEN_CONNECTION, i)) != -1;)
        if (s_named_in_connection(headers->entries[i].value.base, headers->entries[i].value.len, name, len))
            return 1;
    return 0;
}

void gw_proxy_peer(h2o_req_t *req, char *peer, size_t len)
{
    struct sockaddr_storage ss;
    socklen_t sl = req->conn->callbacks->get_peername ? req->conn->callbacks->get_peername(req->conn, (void *)&ss) : 0;
    peer[0] = '\0';
    if (sl > 0 && ss.ss_family == AF_INET)
        inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, peer, (socklen_t)len);
    else if (sl > 0 && ss.ss_family == AF_INET6)
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, peer, (socklen_t)len);
}

h2o_iovec_t gw_proxy_request_head(h2o_mem_pool_t *pool, const gw_origin_request_t *q, int *is_head)
{
    const rf_origin_t *o = q->origin;
    const h2o_headers_t *headers = q->headers;
    h2o_iovec_t method = q->forward ? q->method : h2o_iovec_init(H2O_STRLIT("GET"));
    h2o_iovec_t entity = q->forward ? q->entity : h2o_iovec_init(NULL, 0);
    *is_head = h2o_memis(method.base, method.len, H2O_STRLIT("HEAD"));
    size_t cap = 256 + method.len + strlen(o->prefix) + q->path.len + strlen(o->host) + entity.len;
    for (size_t i = 0; i < headers->size; i++)
        cap += headers->entries[i].name->len + headers->entries[i].value.len + 4;
    const char *peer = q->peer ? q->peer : "";
    const char *via = q->via ? q->via : "";
    cap += strlen(peer) + strlen(q->request_id) + strlen(via) + (q->host ? strlen(q->host) : 0) + 120;
    char *buf = h2o_mem_alloc_pool(pool, cap);
    size_t off = 0;
    int xff_done = 0;
#define APPEND(p, l) (memcpy(buf + off, (p), (l)), off += (l))
#define APPENDS(s) APPEND(s, strlen(s))
    APPEND(method.base, method.len);
    APPENDS(" ");
    APPENDS(o->prefix);
    APPEND(q->path.base, q->path.len);
    APPENDS(" HTTP/1.1\r\nhost: ");
    if (q->host != NULL)
        APPENDS(q->host);
    else
        APPENDS(o->host);
    if (q->host == NULL && o->port != (o->https ? 443 : 80)) {
        char port[16], *p = port + sizeof(port);
        *--p = '\0';
        for (int v = o->port; v > 0; v /= 10)
            *--p = (char)('0' + v % 10);
        *--p = ':';
        APPENDS(p);
    }
    APPENDS("\r\n");
    for (size_t i = 0; i < headers->size; i++) {
        const h2o_header_t *h = &headers->entries[i];
        if (s_is_hop(h->name->base, h->name->len) || h2o_lcstris(h->name->base, h->name->len, H2O_STRLIT("host")) ||
            h2o_lcstris(h->name->base, h->name->len, H2O_STRLIT("x-request-id")) ||
            h2o_lcstris(h->name->base, h->name->len, H2O_STRLIT("x-refract-sibling")) ||
            (via[0] && h2o_lcstris(h->name->base, h->name->len, H2O_STRLIT("via"))) ||
            s_client_nominated(headers, h->name->base, h->name->len))
            continue;
        /* A host named by the URL (byclient) is a third party: the
         * client's credentials for this site are not its business. */
        if (q->no_credentials && (h2o_lcstris(h->name->base, h->name->len, H2O_STRLIT("cookie")) ||
                                  h2o_lcstris(h->name->base, h->name->len, H2O_STRLIT("authorization"))))
            continue;
        /* A transform or a cache fill needs the whole, current object: no
         * ranges or conditionals from the client reach the origin then. */
        if (!q->forward && (h2o_lcstris(h->name->base, h->name->len, H2O_STRLIT("range")) ||
                            h2o_memis(h->name->base, h->name->len > 3 ? 3 : h->name->len, H2O_STRLIT("if-"))))
            continue;
        APPEND(h->name->base, h->name->len);
        APPENDS(": ");
        APPEND(h->value.base, h->value.len);
        if (peer[0] && h2o_lcstris(h->name->base, h->name->len, H2O_STRLIT("x-forwarded-for"))) {
            APPENDS(", ");
            APPENDS(peer);
            xff_done = 1;
        }
        APPENDS("\r\n");
    }
    if (peer[0] && !xff_done) {
        APPENDS("x-forwarded-for: ");
        APPENDS(peer);
        APPENDS("\r\n");
    }
    APPENDS("x-request-id: ");
    APPENDS(q->request_id);
    APPENDS("\r\n");
    if (q->sibling)
        APPENDS("x-refract-sibling: 1\r\n");
    if (via[0]) {
        /* RFC 9110 7.6.3: the client's Via entries, then ours. */
        APPENDS("via: ");
        for (ssize_t i = -1; (i = h2o_find_header(headers, H2O_TOKEN_VIA, i)) != -1;) {
            APPEND(headers->entries[i].value.base, headers->entries[i].value.len);
            APPENDS(", ");
        }
        APPENDS(via);
        APPENDS("\r\n");
    }
    if (entity.base != NULL) {
        char cl[48];
        snprintf(cl, sizeof(cl), "content-length: %zu\r\n", entity.len);
        APPENDS(cl);
    }
    APPENDS("\r\n");
    if (entity.base != NULL)
        APPEND(entity.base, entity.len);
#undef APPEND
#undef APPENDS
    return h2o_iovec_init(buf, off);
}

h2o_iovec_t gw_proxy_request(gw_req_t *rc, const char *path, size_t path_len, int forward_headers, int *is_head)
{
    h2o_req_t *req = rc->req;
    char peer[INET6_ADDRSTRLEN + 1];
    gw_proxy_peer(req, peer, sizeof(peer));
    gw_origin_request_t q = {.origin = rc->origin != NULL ? rc->origin : &rc->vhost->origin,
                             .path = h2o_iovec_init(path, path_len),
                             .method = req->method,
                             .headers = &req->headers,
                             .entity = req->entity,
                             .peer = peer,
                             .request_id = rc->request_id,
                             .via = rc->thread->server->via,
                             .host = rc->to_sibling
                                         ? h2o_strdup(&req->pool, rc->host.base ? rc->host.base : req->authority.base,
                                                      rc->host.base ? rc->host.len : req->authority.len)
                                               .base
                                         : NULL,
                             .no_credentials = rc->byclient != NULL,
                             .sibling = rc->to_sibling,
                             .forward = forward_headers};
    return gw_proxy_request_head(&req->pool, &q, is_head);
}

void gw_stream_start(gw_req_t *rc, gw_upstream_t *up, const char *path, size_t path_len, int forward_headers,
                     const gw_collector_t *collect)
{
    h2o_req_t *req = rc->req;
    gw_stream_t *s = h2o_mem_alloc_shared(&req->pool, sizeof(*s), s_stream_dispose);
    memset(s, 0, sizeof(*s));
    s->rc = rc;
    s->upstream = gw_upstream_name(up);
    s->collecting = collect != NULL;
    s->spool_fd = -1;
    if (collect != NULL)
        s->collect = *collect;
    h2o_buffer_init(&s->pending, &h2o_socket_buffer_prototype);
    h2o_buffer_init(&s->sending, &h2o_socket_buffer_prototype);
    rc->stream = s;
    int is_head;
    h2o_iovec_t request = gw_proxy_request(rc, path, path_len, forward_headers, &is_head);
    const char *l[] = {rc->vhost->name, "http"};
    rf_metric_add(gw_m.origin_requests, l, 1);
    s->fetch = gw_fetch_start(up, request, is_head, &s_fetch_cbs, s);
    if (s->fetch == NULL)
        gw_send_error(rc, 503, "Service Unavailable", "out of memory");
}
