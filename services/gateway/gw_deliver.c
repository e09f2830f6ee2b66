/*  gw_deliver — the last stage: what every response carries, whoever
 *  produced it (the stages, h2o's file handler, a worker's reply), error
 *  answers with a one-line reason, and the access log and metrics when the
 *  request is freed.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>

#include "gw.h"
#include "gw_http_parse.h"
#include "gw_metrics.h"
#include "rf_log.h"

void gw_deliver_headers(gw_req_t *rc)
{
    h2o_req_t *req = rc->req;
    h2o_set_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-request-id"), 0, rc->request_id,
                          strlen(rc->request_id), 1);
    h2o_set_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("cache-status"), 0, rc->cache_status,
                          strlen(rc->cache_status), 1);
    if (rc->vary != NULL && h2o_find_header(&req->res.headers, H2O_TOKEN_VARY, -1) < 0) /* e.g. format/auto */
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_VARY, NULL, rc->vary, strlen(rc->vary));
    /* RFC 9110 7.6.3: the origin's (or a parent gateway's) Via, then ours. */
    const char *via = rc->thread->server->via;
    ssize_t i = h2o_find_header(&req->res.headers, H2O_TOKEN_VIA, -1);
    size_t vl = strlen(via);
    if (i >= 0) {
        h2o_iovec_t cur = req->res.headers.entries[i].value;
        if (cur.len >= vl && memcmp(cur.base + cur.len - vl, via, vl) == 0)
            return; /* ours is there already (headers set twice on one answer) */
        h2o_iovec_t v = h2o_concat(&req->pool, cur, h2o_iovec_init(H2O_STRLIT(", ")), h2o_iovec_init(via, vl));
        req->res.headers.entries[i].value = v;
    } else {
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_VIA, NULL, via, strlen(via));
    }
}

void gw_send_error(gw_req_t *rc, int status, const char *reason, const char *fmt, ...)
{
    char body[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(body, sizeof(body) - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t)n > sizeof(body) - 2)
        n = (int)sizeof(body) - 2;
    body[n++] = '\n';
    body[n] = '\0';
    rc->note = h2o_strdup(&rc->req->pool, body, (size_t)n - 1).base;
    if (status == 503)
        h2o_set_header_by_str(&rc->req->pool, &rc->req->res.headers, H2O_STRLIT("retry-after"), 0, H2O_STRLIT("1"), 1);
    gw_deliver_headers(rc);
    h2o_send_error_generic(rc->req, status, reason, h2o_strdup(&rc->req->pool, body, (size_t)n).base,
                           H2O_SEND_ERROR_KEEP_HEADERS | (rc->close_conn ? H2O_SEND_ERROR_HTTP1_CLOSE_CONNECTION : 0));
}

void gw_deliver_body(gw_req_t *rc, int status, const char *ctype, const void *body, size_t len)
{
    static h2o_generator_t no_generator = {NULL, NULL};
    h2o_req_t *req = rc->req;
    req->res.status = status;
    req->res.reason = gw_reason(status);
    req->res.content_length = len;
    if (ctype != NULL)
        h2o_set_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, ctype, strlen(ctype), 1);
    gw_deliver_headers(rc);
    h2o_start_response(req, &no_generator);
    h2o_iovec_t buf = h2o_iovec_init(body, len);
    int head = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD"));
    h2o_send(req, &buf, head || len == 0 ? 0 : 1, H2O_SEND_STATE_FINAL);
}

/* The value of request header `name`, or NULL (and *len 0). */
static const char *s_req_header(h2o_req_t *req, const h2o_token_t *name, size_t *len)
{
    ssize_t i = h2o_find_header(&req->headers, name, -1);
    *len = i >= 0 ? req->headers.entries[i].value.len : 0;
    return i >= 0 ? req->headers.entries[i].value.base : NULL;
}

void gw_deliver_original(gw_req_t *rc, const char *ctype, const void *body, size_t len)
{
    static h2o_generator_t no_generator = {NULL, NULL};
    h2o_req_t *req = rc->req;
    /* The validators the original answer carries (kept from the origin). */
    gw_validators_t v = {0};
    ssize_t e = h2o_find_header(&req->res.headers, H2O_TOKEN_ETAG, -1);
    ssize_t m = h2o_find_header(&req->res.headers, H2O_TOKEN_LAST_MODIFIED, -1);
    if (e >= 0)
        v.etag = req->res.headers.entries[e].value.base, v.etag_len = req->res.headers.entries[e].value.len;
    if (m >= 0)
        v.last_modified = req->res.headers.entries[m].value.base,
        v.last_modified_len = req->res.headers.entries[m].value.len;
    size_t inml, imsl, rl, irl;
    const char *inm = s_req_header(req, H2O_TOKEN_IF_NONE_MATCH, &inml);
    const char *ims = s_req_header(req, H2O_TOKEN_IF_MODIFIED_SINCE, &imsl);
    if ((inm || ims) && gw_not_modified(inm, inml, ims, imsl, &v)) {
        req->res.status = 304;
        req->res.reason = gw_reason(304);
        gw_deliver_headers(rc);
        h2o_start_response(req, &no_generator);
        h2o_send(req, NULL, 0, H2O_SEND_STATE_FINAL);
        return;
    }
    const char *range = s_req_header(req, H2O_TOKEN_RANGE, &rl);
    const char *ifr = s_req_header(req, H2O_TOKEN_IF_RANGE, &irl);
    uint64_t from = 0, to = 0;
    int r = range != NULL && (ifr == NULL || gw_if_range_ok(ifr, irl, &v)) ? gw_parse_range(range, rl, len, &from, &to)
                                                                             : 0;
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ACCEPT_RANGES, NULL, H2O_STRLIT("bytes"));
    if (r == 0) {
        gw_deliver_body(rc, 200, ctype, body, len);
        return;
    }
    char cr[80];
    int cl = r > 0 ? snprintf(cr, sizeof(cr), "bytes %llu-%llu/%zu", (unsigned long long)from, (unsigned long long)to, len)
                   : snprintf(cr, sizeof(cr), "bytes */%zu", len);
    h2o_set_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_RANGE, h2o_strdup(&req->pool, cr, (size_t)cl).base,
                   (size_t)cl, 1);
    if (r < 0) {
        gw_deliver_body(rc, 416, ctype, NULL, 0);
        return;
    }
    gw_deliver_body(rc, 206, ctype, (const char *)body + from, (size_t)(to - from + 1));
}

void gw_deliver_mark_fallback(gw_req_t *rc, const char *reason)
{
    h2o_req_t *req = rc->req;
    if (rc->func != NULL && rc->func->fallbacks != NULL) {
        const char *fl[] = {rc->vhost->name, reason};
        rf_metric_add(*rc->func->fallbacks, fl, 1);
    }
    char note[96];
    snprintf(note, sizeof(note), "fallback=%s", reason);
    rc->note = h2o_strdup(&req->pool, note, SIZE_MAX).base;
    h2o_set_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-refract-fallback"), 0, reason, strlen(reason),
                          1);
}

static const char *s_method_label(h2o_iovec_t m)
{
    static const char *const known[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", NULL};
    for (int i = 0; known[i]; i++)
        if (h2o_memis(m.base, m.len, known[i], strlen(known[i])))
            return known[i];
    return "OTHER";
}

void gw_deliver_log(gw_req_t *rc)
{
    h2o_req_t *req = rc->req;
    struct timeval now;
    gettimeofday(&now, NULL);
    double secs = (double)(now.tv_sec - rc->started.tv_sec) + (double)(now.tv_usec - rc->started.tv_usec) / 1e6;
    /* Status 0: no response reached the client (it went away first). A
     * status is 3 digits (h2o refuses others); no printf per request. */
    int code = rc->client_gone ? 0 : req->res.status;
    char status[4] = "0";
    if (code >= 100 && code <= 999)
        status[0] = (char)('0' + code / 100), status[1] = (char)('0' + code / 10 % 10), status[2] = (char)('0' + code % 10);
    const char *vhost = rc->vhost ? rc->vhost->name : "unknown";
    const char *l3[] = {vhost, s_method_label(req->method), status};
    rf_metric_add(gw_m.http_requests, l3, 1);
    const char *l1[] = {vhost};
    rf_metric_observe(gw_m.http_duration, l1, secs);
    rf_metric_add(gw_m.http_response_bytes, l1, (double)req->bytes_sent);
    const char *lr[] = {vhost, rc->cache_result ? rc->cache_result : "bypass"};
    rf_metric_add(gw_m.cache_requests, lr, 1);
    const char *ls[] = {vhost, rc->role == GW_CACHE_HIT || rc->role == GW_CACHE_STALE ? "cache" : "origin"};
    rf_metric_add(gw_m.cache_client_bytes, ls, (double)req->bytes_sent);
    rf_metric_gauge_add(gw_m.http_inflight, NULL, -1);
    if (rc->thread->server->cfg->gateway.access_log)
        rf_log(RF_LOG_INFO, rc->request_id, "%.*s %s %.*s %d %zuB %.1fms %s%s%s", (int)req->method.len,
               req->method.base, vhost, (int)(rc->log_url.base ? (rc->log_url.len > 512 ? 512 : rc->log_url.len)
                                                              : (req->path.len > 512 ? 512 : req->path.len)),
               rc->log_url.base ? rc->log_url.base : req->path.base,
               status[0] == '0' ? 0 : req->res.status, req->bytes_sent, secs * 1000, rc->cache_status,
               rc->note ? " " : "", rc->note ? rc->note : "");
}
