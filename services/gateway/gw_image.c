#include <errno.h>
#include <stdio.h>
#include <sys/socket.h>
#include <stdlib.h>
#include <string.h>

#include "gw.h"
#include "gw_metrics.h"
#include "rf_chain.h"
#include "rf_log.h"
#include "rf_path.h"

/* Origin headers worth keeping on a transformed image: freshness, not
 * identity (the bytes differ, so no ETag or Content-Length). */
static const char *const s_kept[] = {"cache-control", "expires", "last-modified", NULL};

static void s_keep_freshness(gw_req_t *rc, const h2o_headers_t *origin_headers)
{
    h2o_req_t *req = rc->req;
    for (size_t i = 0; origin_headers && i < origin_headers->size; i++) {
        const h2o_header_t *h = &origin_headers->entries[i];
        for (int k = 0; s_kept[k]; k++)
            if (h2o_lcstris(h->name->base, h->name->len, s_kept[k], strlen(s_kept[k]))) {
                h2o_vector_reserve(&req->pool, &req->res.headers, req->res.headers.size + 1);
                req->res.headers.entries[req->res.headers.size++] = *h;
            }
    }
}

static const char *s_find(const h2o_headers_t *headers, const char *name)
{
    for (size_t i = 0; headers && i < headers->size; i++)
        if (h2o_lcstris(headers->entries[i].name->base, headers->entries[i].name->len, name, strlen(name)))
            return h2o_strdup(NULL, headers->entries[i].value.base, headers->entries[i].value.len).base;
    return NULL;
}

static h2o_generator_t s_no_generator = {NULL, NULL};

/* Sends `len` bytes that stay valid until the request pool is freed. */
static void s_send_body(gw_req_t *rc, int status, const char *ctype, const void *body, size_t len)
{
    h2o_req_t *req = rc->req;
    req->res.status = status;
    req->res.reason = "OK";
    req->res.content_length = len;
    if (ctype != NULL)
        h2o_set_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, ctype, strlen(ctype), 1);
    h2o_set_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-request-id"), 0, rc->request_id,
                          strlen(rc->request_id), 1);
    h2o_set_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("cache-status"), 0, rc->cache_status,
                          strlen(rc->cache_status), 1);
    h2o_start_response(req, &s_no_generator);
    h2o_iovec_t buf = h2o_iovec_init(body, len);
    int head = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD"));
    h2o_send(req, &buf, head || len == 0 ? 0 : 1, H2O_SEND_STATE_FINAL);
}

/* The job owns the body from here; keep it alive until the request ends. */
static void s_job_dispose(void *p)
{
    gw_job_t **slot = p;
    gw_job_destroy(slot);
}

static gw_job_t **s_hold_job(gw_req_t *rc, gw_job_t *job)
{
    gw_job_t **slot = h2o_mem_alloc_shared(&rc->req->pool, sizeof(*slot), s_job_dispose);
    *slot = job;
    return slot;
}

void gw_image_mark_fallback(gw_req_t *rc, const char *reason)
{
    h2o_req_t *req = rc->req;
    const char *fl[] = {rc->vhost->name, reason};
    rf_metric_add(gw_m.image_fallbacks, fl, 1);
    char note[96];
    snprintf(note, sizeof(note), "fallback=%s", reason);
    rc->note = h2o_strdup(&req->pool, note, SIZE_MAX).base;
    h2o_set_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-refract-fallback"), 0, reason, strlen(reason),
                          1);
}

void gw_image_send_original(gw_req_t *rc, void *body, size_t len, const h2o_headers_t *origin_headers,
                            const char *reason)
{
    gw_image_mark_fallback(rc, reason);
    s_keep_freshness(rc, origin_headers);
    char *ctype = (char *)s_find(origin_headers, "content-type");
    if (ctype == NULL) {
        /* The source path, not the URL: the URL ends with the chain. */
        h2o_mimemap_type_t *mt =
            h2o_mimemap_get_type_by_extension(rc->thread->server->mimemap, h2o_get_filext(rc->src, rc->src_len));
        ctype = h2o_strdup(NULL, mt->data.mimetype.base, mt->data.mimetype.len).base;
    }
    s_send_body(rc, 200, ctype, body, len);
    free(ctype);
}

/* ---- client liveness while a job is out ------------------------------------------ */

/* libh2o 2.2.5 does not read an HTTP/1 connection while its request is
 * being handled, so a client that hangs up is only noticed when the
 * response is written — after the job, which would keep a worker busy for
 * nobody. Until then we peek at the client socket every 250 ms. This needs
 * the fd, which 2.2.5 keeps right after the public structs (http1 conn:
 * h2o_conn_t then the socket; evloop socket: h2o_socket_t then the fd);
 * with any other libh2o the probe is off and the job deadline applies. */
#if H2O_VERSION_MAJOR == 2 && H2O_VERSION_MINOR == 2 && H2O_VERSION_PATCH == 5
#define GW_CAN_PROBE 1
struct s_h2o225_http1_conn {
    h2o_conn_t super;
    h2o_socket_t *sock;
};
struct s_h2o225_evloop_socket {
    h2o_socket_t super;
    int fd;
};
#else
#define GW_CAN_PROBE 0
#endif

static int s_client_fd(h2o_req_t *req)
{
#if GW_CAN_PROBE
    if (req->version >= 0x200)
        return -1; /* HTTP/2 resets streams; h2o disposes the request itself */
    h2o_socket_t *sock = ((struct s_h2o225_http1_conn *)req->conn)->sock;
    return sock != NULL ? ((struct s_h2o225_evloop_socket *)sock)->fd : -1;
#else
    (void)req;
    return -1;
#endif
}

static void s_on_probe(h2o_timeout_entry_t *entry)
{
    gw_req_t *rc = H2O_STRUCT_FROM_MEMBER(gw_req_t, probe, entry);
    int fd = s_client_fd(rc->req);
    char c;
    ssize_t r = fd >= 0 ? recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) : -1;
    int gone = r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
    if (gone && rc->job != NULL) {
        /* The broker drops or cancels it and hands it back as cancelled. */
        atomic_store(&rc->job->abandoned, 1);
        rc->note = "client went away";
        rc->client_gone = 1;
        return;
    }
    if (rc->job != NULL)
        h2o_timeout_link(rc->thread->ctx.loop, &rc->thread->probe_timeout, &rc->probe);
}

static void s_probe_start(gw_req_t *rc)
{
    if (s_client_fd(rc->req) < 0)
        return;
    rc->probe.cb = s_on_probe;
    h2o_timeout_link(rc->thread->ctx.loop, &rc->thread->probe_timeout, &rc->probe);
}

/* ---- job results ---------------------------------------------------------------- */

/* Answers the client from a returned job (held in the request pool from
 * here: the reply body is sent from its frames). */
static void s_on_result(gw_req_t *rc, gw_job_t *gj)
{
    rc->job = NULL;
    if (h2o_timeout_is_linked(&rc->probe))
        h2o_timeout_unlink(&rc->probe);
    s_hold_job(rc, gj);
    const rf_job_t *job = gj->job;
    switch (job->outcome) {
    case RF_JOB_UNAVAILABLE:
        gw_send_error(rc, 503, "Service Unavailable", "image processing unavailable: %s", job->why);
        return;
    case RF_JOB_TIMEOUT: gw_send_error(rc, 504, "Gateway Timeout", "image processing timed out: %s", job->why); return;
    case RF_JOB_CANCELLED: gw_send_error(rc, 503, "Service Unavailable", "image job cancelled"); return;
    case RF_JOB_OK: break;
    }
    const rf_reply_t *r = &job->reply;
    const char *err = r->error[0] ? r->error : NULL;
    if (r->status == 200) {
        s_keep_freshness(rc, rc->stream_headers);
        /* Body frames: one in practice; join if a worker split it. */
        const void *data = NULL;
        size_t len = job->reply_len;
        if (job->n_body == 1) {
            data = job->body_frames[0].data;
        } else if (len > 0) {
            char *joined = h2o_mem_alloc_pool(&rc->req->pool, len);
            size_t off = 0;
            for (size_t i = 0; i < job->n_body; i++) {
                memcpy(joined + off, job->body_frames[i].data, job->body_frames[i].len);
                off += job->body_frames[i].len;
            }
            data = joined;
        }
        s_send_body(rc, 200, r->content_type[0] ? r->content_type : "application/octet-stream", data, len);
        return;
    }
    if (r->status == 415 || r->status == 413) {
        const char *reason = r->status == 415 ? "source_not_decodable" : "source_too_large";
        rf_log(RF_LOG_INFO, rc->request_id, "image: %s: sending original", err ? err : "not processable");
        if (job->body == NULL && rc->file_src.base != NULL) {
            /* The worker read the source by reference: send the file. */
            gw_image_mark_fallback(rc, reason);
            gw_serve_file_path(rc, rc->file_src.base, rc->file_src.len);
            return;
        }
        gw_image_send_original(rc, job->body, job->body_len, rc->stream_headers, reason);
        return;
    }
    if (r->status == 404) {
        gw_send_error(rc, 404, "Not Found", "%s", err ? err : "source not found");
        return;
    }
    if (r->status == 400) {
        gw_send_error(rc, 400, "Bad Request", "%s", err ? err : "the function chain cannot apply to this image");
        return;
    }
    if (r->status == 504) {
        gw_send_error(rc, 504, "Gateway Timeout", "image processing timed out: %s", err ? err : "deadline passed");
        return;
    }
    if (r->status == 503) {
        gw_send_error(rc, 503, "Service Unavailable", "image worker busy: %s", err ? err : "over capacity");
        return;
    }
    gw_send_error(rc, 502, "Bad Gateway", "image worker failed: %s", err ? err : "unknown error");
}

void gw_image_on_jobs(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages)
{
    (void)receiver;
    while (!h2o_linklist_is_empty(messages)) {
        gw_job_t *job = H2O_STRUCT_FROM_MEMBER(gw_job_t, super.link, messages->next);
        h2o_linklist_unlink(&job->super.link);
        gw_req_t *rc = job->user;
        if (rc == NULL) {
            gw_job_destroy(&job); /* the client left while the job was out */
            continue;
        }
        s_on_result(rc, job);
    }
}

/* ---- request entry ---------------------------------------------------------------- */

/* Submits the image job. The source is either `body` (owned by the job
 * from here) or, when body is NULL, the file `ref` the worker reads itself;
 * `len` is the source size either way. */
static void s_submit(gw_req_t *rc, void *body, size_t len, const h2o_headers_t *origin_headers, const char *ref)
{
    gw_thread_t *t = rc->thread;
    const rf_config_t *cfg = t->server->cfg;
    rc->stream_headers = origin_headers;
    gw_job_t *job = gw_job_new("image", rc->request_id, &t->job_receiver);
    if (job == NULL) {
        free(body);
        gw_send_error(rc, 503, "Service Unavailable", "out of memory");
        return;
    }
    rf_job_t *bj = job->job;
    bj->body = body;
    bj->body_len = body != NULL ? len : 0;
    bj->timeout_ms = cfg->bus.job_timeout_ms;
    job->user = rc;
    rf_job_spec_t *spec = &bj->spec;
    spec->chain = rf_chain_to_json(&rc->chain);
    spec->source.path = strndup(rc->src, rc->src_len);
    spec->source.size = (int64_t)len;
    spec->source.content_type = (char *)s_find(origin_headers, "content-type"); /* malloc'd or NULL */
    spec->source.ref = ref != NULL ? strdup(ref) : NULL;
    if (spec->chain == NULL || spec->source.path == NULL || (ref != NULL && spec->source.ref == NULL)) {
        gw_job_destroy(&job);
        gw_send_error(rc, 503, "Service Unavailable", "out of memory");
        return;
    }
    rc->job = job;
    gw_broker_submit(t->submitter, &job);
    s_probe_start(rc);
}

static void s_on_collected(gw_req_t *rc, void *body, size_t len, const h2o_headers_t *origin_headers)
{
    s_submit(rc, body, len, origin_headers, NULL);
}

int gw_image_handle(gw_req_t *rc, const char *src, size_t src_len, const char *chain, size_t chain_len)
{
    h2o_req_t *req = rc->req;
    if (!h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET")) &&
        !h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD"))) {
        h2o_set_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("allow"), 0, H2O_STRLIT("GET, HEAD"), 1);
        gw_send_error(rc, 405, "Method Not Allowed", "image functions answer GET and HEAD only");
        return 0;
    }
    char why[200];
    if (rf_chain_parse(chain, chain_len, &rc->chain, why, sizeof(why)) < 0) {
        gw_send_error(rc, 400, "Bad Request", "bad %s chain: %s", rc->vhost->dims.keyword, why);
        return 0;
    }
    rc->src = src;
    rc->src_len = src_len;
    size_t limit = rc->vhost->dims.max_source_size;
    const rf_origin_t *o = &rc->vhost->origin;
    if (o->kind == RF_ORIGIN_FILE) {
        /* src is part of the canonical path (gw_recv): it cannot climb out
         * of the directory; the file system wants it decoded. */
        char *dec = h2o_mem_alloc_pool(&req->pool, src_len + 1);
        h2o_iovec_t norm = h2o_iovec_init(dec, rf_path_decode(src, src_len, dec));
        rc->file_src = norm;
        void *body = NULL;
        size_t len = 0;
        const char *rwhy = NULL;
        const char *l[] = {rc->vhost->name, "file"};
        rf_metric_add(gw_m.origin_requests, l, 1);
        int by_ref = rc->thread->server->cfg->bus.file_refs;
        int r = gw_file_read_source(o, norm.base, norm.len, limit, by_ref ? NULL : &body, &len, &rwhy);
        if (r < 0) {
            gw_send_error(rc, 404, "Not Found", "source %.*s: %s", (int)(norm.len > 200 ? 200 : norm.len), norm.base,
                          rwhy);
            return 0;
        }
        if (r == 1) {
            gw_image_mark_fallback(rc, "over_max_source_size");
            rf_log(RF_LOG_INFO, rc->request_id, "image: source over max_source_size %zu: sending original", limit);
            return gw_serve_file_path(rc, norm.base, norm.len);
        }
        char *ref = NULL;
        if (by_ref) {
            size_t dl = strlen(o->dir);
            ref = h2o_mem_alloc_pool(&req->pool, 7 + dl + norm.len + 1);
            memcpy(ref, "file://", 7);
            memcpy(ref + 7, o->dir, dl);
            memcpy(ref + 7 + dl, norm.base, norm.len);
            ref[7 + dl + norm.len] = '\0';
        }
        s_submit(rc, body, len, NULL, ref);
        return 0;
    }
    const char *uwhy = NULL;
    gw_upstream_t *up = gw_thread_upstream(rc->thread, o, &uwhy);
    if (up == NULL) {
        gw_send_error(rc, 502, "Bad Gateway", "origin %s: %s", o->url, uwhy);
        return 0;
    }
    gw_stream_start(rc, up, src, src_len, 0, limit, s_on_collected);
    return 0;
}
