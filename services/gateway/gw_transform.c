/*  gw_transform — requests that carry a URL function (gw_func.c): get the
 *  source, send it with the parsed chain as a bus job to the function's
 *  service, and answer from the reply as the function's rules say.
 *
 *  The source travels whole: from a file origin as a reference the worker
 *  maps itself (bus.file_refs) or as bytes; from an http origin fetched by
 *  a bare GET (no client Range or conditionals) and written to a file in
 *  bus.spool_dir as it arrives (sent as a reference too), or collected in
 *  memory and sent as bytes. A source over the
 *  function's limit, or one the worker cannot decode, is answered with the
 *  original, marked as a fallback. Results come back on the submitting
 *  thread (gw_transform_on_jobs).
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <unistd.h>

#include <time.h>

#include "gw.h"
#include "gw_conn.h"
#include "gw_metrics.h"
#include "rf_log.h"
#include "rf_path.h"
#include "rf_ttl.h"

#include <xxhash.h>

/* The transform's own state beside gw_req_t, in the request pool. */
typedef struct gw_transform_t {
    gw_req_t *rc;
    gw_job_t *job;                       /* out on the bus, when not NULL */
    h2o_timeout_entry_t probe;           /* linked while a job is out for an HTTP/1 client */
    const h2o_headers_t *origin_headers; /* of an http source */
    h2o_iovec_t file_src;                /* file origins: the decoded source path */
    int redirects;                       /* followed for a /src/ source */
    int stage;                           /* 1 while the function's second job (gw_func_t.then) is out */
    int spool_fd;                        /* the source's file in bus.spool_dir, or -1 */
    char *spool_path;                    /* its path (malloc'd), unlinked with the request */
    void *spool_map;                     /* mapped for a fallback original, or NULL */
    size_t spool_len;
    void *result_map; /* a result the worker left in bus.spool_dir (REPLY ref), mapped; or NULL */
    size_t result_len;
    rf_obj_t *src_obj;    /* cache.sources: the source's cache object the worker reads by file (one reference) */
    int64_t src_off;      /* where its body starts in that file */
    gw_tstream_t *stream; /* the result is sent while it is made (one reference), or NULL */
} gw_transform_t;

static void s_spool_close(gw_transform_t *t)
{
    if (t->spool_fd >= 0)
        close(t->spool_fd);
    t->spool_fd = -1;
}

/* Removes the spool file, once the worker is done with it or the request
 * ends. A worker still reading it (an abandoned job) holds its mapping:
 * the bytes stay until it lets go. */
static void s_spool_remove(gw_transform_t *t)
{
    s_spool_close(t);
    if (t->spool_path != NULL) {
        unlink(t->spool_path);
        free(t->spool_path);
        t->spool_path = NULL;
    }
}

/* Runs when the request pool is freed: a job still out is abandoned (the
 * broker drops it from its queue or cancels it on the worker). */
static void s_dispose(void *p)
{
    gw_transform_t *t = p;
    if (h2o_timeout_is_linked(&t->probe))
        h2o_timeout_unlink(&t->probe);
    if (t->job != NULL) {
        t->job->user = NULL;
        atomic_store(&t->job->abandoned, 1);
        t->job = NULL;
    }
    gw_tstream_release(&t->stream);
    s_spool_remove(t);
    if (t->spool_map != NULL)
        munmap(t->spool_map, t->spool_len);
    if (t->result_map != NULL)
        munmap(t->result_map, t->result_len);
    rf_obj_unref(&t->src_obj);
}

/* ---- answers --------------------------------------------------------------- */

/* Origin headers worth keeping on a transformed result: freshness, not
 * identity (the bytes differ, so no ETag or Content-Length). */
static void s_keep_freshness(gw_req_t *rc, const h2o_headers_t *origin_headers)
{
    static const char *const kept[] = {"cache-control", "expires", "last-modified", NULL};
    h2o_req_t *req = rc->req;
    for (size_t i = 0; origin_headers && i < origin_headers->size; i++) {
        const h2o_header_t *h = &origin_headers->entries[i];
        for (int k = 0; kept[k]; k++)
            if (h2o_lcstris(h->name->base, h->name->len, kept[k], strlen(kept[k]))) {
                h2o_vector_reserve(&req->pool, &req->res.headers, req->res.headers.size + 1);
                req->res.headers.entries[req->res.headers.size++] = *h;
            }
    }
}

/* A result's ETag, a hash of its bytes: equal results (one source
 * version, one chain) validate across requests, workers and cache
 * entries, and a changed source gives a new one. Strong: equal bytes. */
static void s_result_etag(const void *body, size_t len, char out[24])
{
    snprintf(out, 24, "\"%016llx\"", (unsigned long long)XXH3_64bits(body, len));
}

/* Sets the result's ETag on the answer (before it is delivered). */
static void s_set_etag(gw_req_t *rc, const char *etag)
{
    h2o_set_header(&rc->req->pool, &rc->req->res.headers, H2O_TOKEN_ETAG,
                   h2o_strdup(&rc->req->pool, etag, SIZE_MAX).base, strlen(etag), 1);
}

/* The value of header `name` (malloc'd, caller frees), or NULL. */
static char *s_find(const h2o_headers_t *headers, const char *name)
{
    for (size_t i = 0; headers && i < headers->size; i++)
        if (h2o_lcstris(headers->entries[i].name->base, headers->entries[i].name->len, name, strlen(name)))
            return h2o_strdup(NULL, headers->entries[i].value.base, headers->entries[i].value.len).base;
    return NULL;
}

/* Answers with the unprocessed source `body` (borrowed until the request
 * ends) — or, for a source the worker read by reference, the file. */
static void s_send_original(gw_transform_t *t, const void *body, size_t len, const char *reason)
{
    gw_req_t *rc = t->rc;
    gw_deliver_mark_fallback(rc, reason);
    if (body == NULL && t->file_src.base != NULL) {
        gw_file_serve_path(rc, t->file_src.base, t->file_src.len);
        return;
    }
    if (body == NULL && rc->func->source == GW_SOURCE_RANGE) {
        /* Read by range, never here: the origin answers, with the client's
         * Range and conditionals. */
        gw_upstream_t *up = gw_proxy_upstream(rc);
        if (up != NULL)
            gw_stream_start(rc, up, rc->src.base, rc->src.len, 1, NULL);
        return;
    }
    if (body == NULL && t->src_obj != NULL) {
        /* A source from the cache: answered from its object, like a hit
         * (Range and conditionals included). */
        rc->obj = t->src_obj;
        t->src_obj = NULL;
        rc->role = GW_CACHE_HIT;
        gw_serve(rc);
        return;
    }
    if (body == NULL && len > 0) {
        /* A spooled source: mapped when its job came back (s_on_result). */
        if (t->spool_map == NULL || t->spool_len != len) {
            gw_send_error(rc, 503, "Service Unavailable", "source spool: the source is gone");
            return;
        }
        body = t->spool_map;
    }
    s_keep_freshness(rc, t->origin_headers);
    char *etag = s_find(t->origin_headers, "etag"); /* the original's bytes: its identity holds */
    if (etag != NULL) {
        h2o_iovec_t e = h2o_strdup(&rc->req->pool, etag, SIZE_MAX);
        h2o_add_header(&rc->req->pool, &rc->req->res.headers, H2O_TOKEN_ETAG, NULL, e.base, e.len);
        free(etag);
    }
    char *ctype = s_find(t->origin_headers, "content-type");
    if (ctype == NULL) {
        /* The source path, not the URL: the URL ends with the chain. */
        h2o_mimemap_type_t *mt =
            h2o_mimemap_get_type_by_extension(rc->thread->server->mimemap, h2o_get_filext(rc->src.base, rc->src.len));
        ctype = h2o_strdup(NULL, mt->data.mimetype.base, mt->data.mimetype.len).base;
    }
    gw_deliver_original(rc, ctype, body, len);
    free(ctype);
}

/* The job owns the source and the reply frames; they are sent from there,
 * so it lives until the request ends. */
static void s_job_dispose(void *p)
{
    gw_job_destroy((gw_job_t **)p);
}

static void s_hold_job(gw_req_t *rc, gw_job_t *job)
{
    gw_job_t **slot = h2o_mem_alloc_shared(&rc->req->pool, sizeof(*slot), s_job_dispose);
    *slot = job;
}

/* The reply body as one buffer (frames joined in the pool when split). */
static const void *s_reply_body(gw_req_t *rc, const rf_job_t *job)
{
    if (job->n_body == 1)
        return job->body_frames[0].data;
    if (job->reply_len == 0)
        return NULL;
    char *joined = h2o_mem_alloc_pool(&rc->req->pool, job->reply_len);
    size_t off = 0;
    for (size_t i = 0; i < job->n_body; i++) {
        memcpy(joined + off, job->body_frames[i].data, job->body_frames[i].len);
        off += job->body_frames[i].len;
    }
    return joined;
}

static const gw_reply_rule_t *s_rule(const gw_reply_rule_t *r, int status)
{
    while (r->worker_status != 0 && r->worker_status != status)
        r++;
    return r; /* the terminating rule is the default */
}

/* Keeps a function result in the cache object this request claimed
 * (rc->fill): the content type and the source's freshness headers, with
 * a TTL the vhost's policy gives them (a file source has none: res2xx). */
static void s_keep_result(gw_req_t *rc, int status, const char *ctype, const char *etag, const char *note,
                          const void *body, size_t len, const h2o_headers_t *origin_headers)
{
    static const char *const kept[] = {"cache-control", "expires", "last-modified", NULL};
    char blob[4096];
    size_t bl = 0;
    rf_hdr_t hs[8];
    size_t n = 0;
    int64_t now = (int64_t)time(NULL);
    if (rc->fill == NULL)
        return;
    for (size_t i = 0; origin_headers && i < origin_headers->size && n < 8; i++) {
        const h2o_header_t *h = &origin_headers->entries[i];
        for (int k = 0; kept[k]; k++)
            if (h2o_lcstris(h->name->base, h->name->len, kept[k], strlen(kept[k])) &&
                bl + strlen(kept[k]) + h->value.len + 2 <= sizeof(blob) - 512) {
                memcpy(blob + bl, kept[k], strlen(kept[k]) + 1);
                hs[n].name = blob + bl, hs[n].name_len = strlen(kept[k]);
                bl += strlen(kept[k]) + 1;
                memcpy(blob + bl, h->value.base, h->value.len);
                hs[n].value = blob + bl, hs[n].value_len = h->value.len;
                bl += h->value.len;
                blob[bl++] = '\0';
                n++;
            }
    }
    size_t cl = strlen(ctype);
    if (bl + cl + 16 > sizeof(blob))
        goto fail;
    memcpy(blob + bl, "content-type", 13), bl += 13;
    memcpy(blob + bl, ctype, cl + 1), bl += cl + 1;
    size_t el = etag != NULL ? strlen(etag) : 0;
    if (el > 0 && bl + el + 8 <= sizeof(blob)) {
        memcpy(blob + bl, "etag", 5), bl += 5;
        memcpy(blob + bl, etag, el + 1), bl += el + 1;
    }
    size_t nl = strlen(note);
    if (nl > 0 && bl + nl + 20 <= sizeof(blob)) { /* hits say it too */
        memcpy(blob + bl, "x-refract-note", 15), bl += 15;
        memcpy(blob + bl, note, nl + 1), bl += nl + 1;
    }
    rf_ttl_verdict_t v;
    /* A result made from a source fetched with the client's Authorization
     * is that client's (RFC 9111 3.5), unless the source says otherwise. */
    bool auth = h2o_find_header(&rc->req->headers, H2O_TOKEN_AUTHORIZATION, -1) != -1;
    if (rf_ttl_decide(&rc->vhost->cache.ttl, status, hs, n, now, now, auth, &v) < 0 || !v.storable || v.ttl <= 0)
        goto fail;
    rf_meta_t meta = {.status = status,
                      .stored_at = now,
                      .expires_at = now + v.ttl,
                      .flags = v.must_revalidate ? RF_META_MUST_REVALIDATE : 0,
                      .length = (int64_t)len,
                      .lifetime = v.lifetime,
                      .ttl_source = (int)v.source};
    if (rf_obj_set_head(rc->fill, &meta, blob, bl, rc->vhost->cache.memory_only ? RF_KEEP_MEMORY : RF_KEEP_DISK) < 0 ||
        rf_obj_append(rc->fill, body, len) < 0)
        goto fail;
    rf_obj_finish(rc->fill, true);
    char cs[96];
    snprintf(cs, sizeof(cs), "refract; fwd=miss; stored; ttl=%lld", (long long)v.ttl);
    rc->cache_status = h2o_strdup(&rc->req->pool, cs, SIZE_MAX).base;
    rf_obj_unref(&rc->fill);
    return;
fail:
    rf_obj_finish(rc->fill, false);
    rf_obj_unref(&rc->fill);
}

static void s_answer_result(gw_transform_t *t, gw_job_t *gj);
static void s_submit(gw_transform_t *t, void *body, size_t len, const char *ref);

/* The function's second job, when this request has one (gw_func_t.then):
 * the first job's result (frames joined, copied: the job owns its
 * frames) becomes its source. 1 when it was started (or answered with an
 * error), 0 when there is none. */
static int s_then(gw_transform_t *t, const rf_job_t *job)
{
    gw_req_t *rc = t->rc;
    json_t *next = rc->func->then(rc->func_state);
    if (next == NULL)
        return 0;
    json_decref(next);               /* a cheap test; s_submit asks again */
    if (job->reply.ref[0] != '\0') { /* results by reference are big ones: not piped */
        gw_send_error(rc, 400, "Bad Request", "%s: this result cannot be piped into another function", rc->func->name);
        return 1;
    }
    void *copy = malloc(job->reply_len ? job->reply_len : 1);
    if (copy == NULL) {
        gw_send_error(rc, 503, "Service Unavailable", "out of memory");
        return 1;
    }
    size_t off = 0;
    for (size_t i = 0; i < job->n_body; i++) {
        memcpy((char *)copy + off, job->body_frames[i].data, job->body_frames[i].len);
        off += job->body_frames[i].len;
    }
    t->stage = 1;
    s_submit(t, copy, off, NULL);
    return 1;
}

/* The path of a REPLY ref ("file:///…"), when it names a file directly in
 * the spool directory; else NULL. */
static const char *s_ref_path(const char *spool_dir, const char *ref)
{
    if (spool_dir == NULL || ref[0] == '\0' || strncmp(ref, "file://", 7) != 0)
        return NULL;
    const char *path = ref + 7;
    size_t dl = strlen(spool_dir);
    if (strncmp(path, spool_dir, dl) != 0 || path[dl] != '/' || path[dl + 1] == '\0' || path[dl + 1] == '.' ||
        strchr(path + dl + 1, '/') != NULL)
        return NULL;
    return path;
}

/* A result the worker wrote to a file of bus.spool_dir (REPLY ref): it is
 * ours now. Mapped (and its name removed) so it is served and stored like
 * a body, with Range and conditionals answered as for an original (a
 * player seeks in an MP4 by Range). A ref outside the spool directory is
 * refused: the bus is trusted, but not with the gateway's whole disk. */
static void s_result_by_ref(gw_transform_t *t, const rf_reply_t *r, const char *ctype)
{
    gw_req_t *rc = t->rc;
    const char *path = s_ref_path(rc->thread->server->cfg->bus.spool_dir, r->ref);
    if (path == NULL) {
        rf_log(RF_LOG_ERROR, rc->request_id, "%s: the worker answered by a file outside bus.spool_dir: %s",
               rc->func->label, r->ref);
        gw_send_error(rc, 502, "Bad Gateway", "%s worker failed: its result is not in the spool directory",
                      rc->func->label);
        return;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    void *map = MAP_FAILED;
    if (fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0)
        map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (fd >= 0)
        close(fd);
    unlink(path);
    if (map == MAP_FAILED) {
        gw_send_error(rc, 502, "Bad Gateway", "%s worker failed: its result file cannot be read", rc->func->label);
        return;
    }
    t->result_map = map;
    t->result_len = (size_t)st.st_size;
    char etag[24];
    s_result_etag(map, t->result_len, etag);
    s_keep_result(rc, 200, ctype, etag, r->note, map, t->result_len, t->origin_headers);
    s_keep_freshness(rc, t->origin_headers);
    s_set_etag(rc, etag);
    if (r->note[0] != '\0')
        h2o_add_header_by_str(&rc->req->pool, &rc->req->res.headers, H2O_STRLIT("x-refract-note"), 0, NULL,
                              h2o_strdup(&rc->req->pool, r->note, SIZE_MAX).base, strlen(r->note));
    gw_deliver_original(rc, ctype, map, t->result_len);
}

/* The worker is done with the source: a spooled one goes at once (an
 * original sent back from it is mapped first). */
static void s_fetch_source(gw_req_t *rc);

/* A cached source the worker could not open: evicted between the lookup
 * and the job. Fetched again the usual way (true), once. */
static bool s_source_gone(gw_transform_t *t, gw_job_t *gj)
{
    const rf_job_t *job = gj->job;
    if (t->src_obj == NULL || job->outcome != RF_JOB_OK || job->reply.status != 404 ||
        strncmp(job->reply.error, "source ref", 10) != 0)
        return false;
    rf_log(RF_LOG_INFO, t->rc->request_id, "source from the cache: %s; fetching it", job->reply.error);
    rf_obj_unref(&t->src_obj);
    t->src_off = 0;
    t->origin_headers = NULL;
    t->job = NULL;
    if (h2o_timeout_is_linked(&t->probe))
        h2o_timeout_unlink(&t->probe);
    gw_job_destroy(&gj);
    s_fetch_source(t->rc);
    return true;
}

static void s_on_result(gw_transform_t *t, gw_job_t *gj)
{
    if (s_source_gone(t, gj))
        return;
    if (t->spool_path != NULL && gj->job->spec.source.size > 0) {
        /* Mapped for an original the rules may send back (a failed map is
         * answered there); the name goes before any answer does. */
        int fd = open(t->spool_path, O_RDONLY | O_CLOEXEC);
        size_t len = (size_t)gj->job->spec.source.size;
        void *map = fd >= 0 ? mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0) : MAP_FAILED;
        if (fd >= 0)
            close(fd);
        if (map != MAP_FAILED) {
            t->spool_map = map;
            t->spool_len = len;
        }
    }
    s_spool_remove(t);
    s_answer_result(t, gj);
}

/* The source freshness a worker that read the source itself reported
 * (REPLY source), as the origin headers a result is kept and answered
 * with: a result is cached no longer than its source may be. */
static void s_reply_freshness(gw_transform_t *t, const rf_reply_t *r)
{
    h2o_req_t *req = t->rc->req;
    const struct {
        const h2o_token_t *token;
        const char *value;
    } hs[] = {{H2O_TOKEN_CACHE_CONTROL, r->src_cache_control},
              {H2O_TOKEN_EXPIRES, r->src_expires},
              {H2O_TOKEN_LAST_MODIFIED, r->src_last_modified}};
    if (t->origin_headers != NULL || !(r->src_cache_control[0] || r->src_expires[0] || r->src_last_modified[0]))
        return;
    h2o_headers_t *h = h2o_mem_alloc_pool(&req->pool, sizeof(*h));
    memset(h, 0, sizeof(*h));
    for (size_t i = 0; i < sizeof(hs) / sizeof(hs[0]); i++)
        if (hs[i].value[0] != '\0')
            h2o_add_header(&req->pool, h, hs[i].token, NULL, h2o_strdup(&req->pool, hs[i].value, SIZE_MAX).base,
                           strlen(hs[i].value));
    t->origin_headers = h;
}

static void s_ahead_done(void *arg, const gw_warm_result_t *r)
{
    (void)arg;
    rf_log(RF_LOG_DEBUG, NULL, "ahead: %d%s%s", r->status, r->error[0] ? " " : "", r->error);
}

/* Percent-encodes what is not unreserved or '/' of s[0..n) into out[cap]; false when it does not fit. */
static bool s_url_path(const char *s, size_t n, char *out, size_t cap)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (isalnum(ch) || (ch != 0 && strchr("/-._~", ch) != NULL)) { /* strchr finds the NUL terminator too */
            if (o + 1 >= cap)
                return false;
            out[o++] = (char)ch;
        } else {
            if (o + 3 >= cap)
                return false;
            out[o++] = '%', out[o++] = hex[ch >> 4], out[o++] = hex[ch & 15];
        }
    }
    out[o] = '\0';
    return true;
}

/* The function's next results made ahead (gw_func_t.ahead): background
 * GETs through this gateway's own listener (the pre-warm path), so the
 * cache has them when the client asks. */
static void s_ahead(gw_req_t *rc)
{
    const gw_func_t *f = rc->func;
    if (f->ahead == NULL || !rc->vhost->cache.enable || gw_background_request(rc->req))
        return;
    char chain[200], path[2048], url[2400], rid[96], host[256];
    h2o_iovec_t a = rc->req->authority;
    if (a.len == 0 || a.len >= sizeof(host) || !s_url_path(rc->src.base, rc->src.len, path, sizeof(path)))
        return;
    memcpy(host, a.base, a.len);
    host[a.len] = '\0';
    for (int k = 0; f->ahead(rc->func_state, k, chain, sizeof(chain)); k++) {
        snprintf(url, sizeof(url), "http://127.0.0.1:%d%s/%s/%s", rc->thread->server->cfg->gateway.listen.port, path,
                 f->keyword(rc->vhost), chain);
        snprintf(rid, sizeof(rid), "%.80s-ahead%d", rc->request_id, k);
        if (gw_storage_warm(rc->thread->server->storage, rc->thread, url, host, rid, s_ahead_done, NULL) < 0)
            break; /* the queue is full: made when asked instead */
    }
}

static void s_answer_result(gw_transform_t *t, gw_job_t *gj)
{
    gw_req_t *rc = t->rc;
    const gw_func_t *f = rc->func;
    t->job = NULL;
    if (h2o_timeout_is_linked(&t->probe))
        h2o_timeout_unlink(&t->probe);
    s_hold_job(rc, gj);
    const rf_job_t *job = gj->job;
    switch (job->outcome) {
    case RF_JOB_UNAVAILABLE:
        gw_send_error(rc, 503, "Service Unavailable", "%s processing unavailable: %s", f->label, job->why);
        return;
    case RF_JOB_TIMEOUT:
        gw_send_error(rc, 504, "Gateway Timeout", "%s processing timed out: %s", f->label, job->why);
        return;
    case RF_JOB_CANCELLED: gw_send_error(rc, 503, "Service Unavailable", "%s job cancelled", f->label); return;
    case RF_JOB_OK: break;
    }
    const rf_reply_t *r = &job->reply;
    const char *err = r->error[0] ? r->error : NULL;
    if (r->status == 200)
        s_reply_freshness(t, r);
    const gw_reply_rule_t *rule = s_rule(t->stage ? f->then_replies : f->replies, r->status);
    switch (rule->action) {
    case GW_REPLY_BODY: {
        const char *ctype = r->content_type[0] ? r->content_type : "application/octet-stream";
        if (t->stage == 0 && f->then != NULL && s_then(t, job))
            return;
        if (r->ref[0] != '\0') {
            s_result_by_ref(t, r, ctype);
            return;
        }
        if (t->stage == 0)
            s_ahead(rc);
        const void *body = s_reply_body(rc, job);
        char etag[24];
        s_result_etag(body, job->reply_len, etag);
        s_keep_result(rc, rule->http_status, ctype, etag, r->note, body, job->reply_len, t->origin_headers);
        s_keep_freshness(rc, t->origin_headers);
        s_set_etag(rc, etag);
        if (r->note[0] != '\0')
            h2o_add_header_by_str(&rc->req->pool, &rc->req->res.headers, H2O_STRLIT("x-refract-note"), 0, NULL,
                                  h2o_strdup(&rc->req->pool, r->note, SIZE_MAX).base, strlen(r->note));
        if (rule->http_status == 200) /* conditionals on its ETag, and Range (players ask by range) */
            gw_deliver_original(rc, ctype, body, job->reply_len);
        else
            gw_deliver_body(rc, rule->http_status, ctype, body, job->reply_len);
        return;
    }
    case GW_REPLY_ORIGINAL:
        rf_log(RF_LOG_INFO, rc->request_id, "%s: %s: sending original", f->label, err ? err : rule->text);
        s_send_original(t, job->body, job->body != NULL ? job->body_len : (size_t)job->spec.source.size, rule->text);
        return;
    case GW_REPLY_ERROR:
        if (rule->prefix != NULL)
            gw_send_error(rc, rule->http_status, gw_reason(rule->http_status), "%s: %s", rule->prefix,
                          err ? err : rule->text);
        else
            gw_send_error(rc, rule->http_status, gw_reason(rule->http_status), "%s", err ? err : rule->text);
        return;
    }
}

void gw_transform_on_jobs(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages)
{
    while (!h2o_linklist_is_empty(messages)) {
        gw_job_t *job = H2O_STRUCT_FROM_MEMBER(gw_job_t, super.link, messages->next);
        h2o_linklist_unlink(&job->super.link);
        if (job->stream != NULL && gw_tstream_on_reply(&job->stream, job->job)) {
            gw_job_destroy(&job); /* the stream answered (its head let go of the job) */
            continue;
        }
        gw_transform_t *t = job->user;
        if (t == NULL) { /* the client left while the job was out */
            const rf_reply_t *r = &job->job->reply;
            gw_thread_t *th = H2O_STRUCT_FROM_MEMBER(gw_thread_t, job_receiver, receiver);
            const char *path = job->job->outcome == RF_JOB_OK && r->status == 200
                                   ? s_ref_path(th->server->cfg->bus.spool_dir, r->ref)
                                   : NULL;
            if (path != NULL)
                unlink(path); /* nobody takes the worker's file */
            gw_job_destroy(&job);
            continue;
        }
        s_on_result(t, job);
    }
}

/* ---- client liveness while a job is out -------------------------------------- */

/* A background job whose result a client now waits for (it joined this
 * request's cache fill: gw_lookup.c marks it) becomes live: otherwise that
 * client would wait behind every live job, at pre-warm priority. */
static void s_promote_if_joined(gw_transform_t *t)
{
    if (t->job != NULL && t->job->job->background && t->rc->fill != NULL && rf_obj_wanted(t->rc->fill))
        rf_job_promote(t->job->job);
}

/* libh2o 2.2.5 does not read an HTTP/1 connection while its request is
 * being handled, so a client that hangs up is only noticed when the
 * response is written — after the job, which would keep a worker busy for
 * nobody. Until then the client socket is peeked every 250 ms (gw_conn.h;
 * HTTP/2 clients reset streams, which h2o notices itself). The same timer
 * promotes a background job a client has joined (any protocol). */
static void s_on_probe(h2o_timeout_entry_t *entry)
{
    gw_transform_t *t = H2O_STRUCT_FROM_MEMBER(gw_transform_t, probe, entry);
    gw_req_t *rc = t->rc;
    int fd = gw_conn_http1_fd(rc->req);
    char c;
    ssize_t r = fd >= 0 ? recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) : 1;
    int gone = r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
    s_promote_if_joined(t);
    if (gone && t->job != NULL) {
        /* The broker drops or cancels it and hands it back as cancelled. */
        atomic_store(&t->job->abandoned, 1);
        rc->note = "client went away";
        rc->client_gone = 1;
        return;
    }
    if (t->job != NULL)
        h2o_timeout_link(rc->thread->ctx.loop, &rc->thread->probe_timeout, &t->probe);
}

static void s_probe_start(gw_transform_t *t)
{
    if (gw_conn_http1_fd(t->rc->req) < 0 && !t->job->job->background)
        return;
    t->probe.cb = s_on_probe;
    h2o_timeout_link(t->rc->thread->ctx.loop, &t->rc->thread->probe_timeout, &t->probe);
}

/* ---- the job ----------------------------------------------------------------- */

/* The stream answers the request from here: the job is the stream's. */
static void s_on_stream_head(void *arg)
{
    gw_transform_t *t = arg;
    if (h2o_timeout_is_linked(&t->probe))
        h2o_timeout_unlink(&t->probe);
    if (t->job != NULL) {
        t->job->user = NULL;
        t->job = NULL;
    }
}

/* Whether this job's result is streamed while it is made: the function
 * says so for the vhost, and the gateway and worker share a spool
 * directory. The file goes in the JOB's "out". 0, or -1 when answered. */
static int s_stream(gw_transform_t *t, gw_job_t *job)
{
    gw_req_t *rc = t->rc;
    if (t->stage != 0 || rc->func->stream == NULL || !rc->func->stream(rc->vhost) ||
        rc->thread->server->cfg->bus.spool_dir == NULL)
        return 0;
    if ((t->stream = gw_tstream_new(rc, job, s_on_stream_head, t)) == NULL) {
        rf_log(RF_LOG_WARN, rc->request_id, "%s: cannot stream the result (%s): it goes whole", rc->func->label,
               strerror(errno));
        return 0;
    }
    job->stream = t->stream; /* the job's reference (s_submit gives it back if the job never goes) */
    return (job->job->spec.out = strdup(gw_tstream_ref(t->stream))) == NULL ? -1 : 0;
}

/* Submits the job. The source is either `body` (owned by the job from
 * here) or, when body is NULL, the file `ref` the worker reads itself;
 * `len` is the source size either way. */
static void s_submit(gw_transform_t *t, void *body, size_t len, const char *ref)
{
    gw_req_t *rc = t->rc;
    gw_thread_t *th = rc->thread;
    const gw_func_t *f = rc->func;
    gw_job_t *job = gw_job_new(t->stage ? f->then_service : f->service, rc->request_id, &th->job_receiver);
    if (job == NULL) {
        free(body);
        gw_send_error(rc, 503, "Service Unavailable", "out of memory");
        return;
    }
    rf_job_t *bj = job->job;
    bj->body = body;
    bj->body_len = body != NULL ? len : 0;
    bj->timeout_ms = th->server->cfg->bus.job_timeout_ms;
    /* Pre-warm work waits for clients' jobs, unless a client already
     * joined this fill (while the source was fetched). */
    bj->background = gw_background_request(rc->req) && !(rc->fill != NULL && rf_obj_wanted(rc->fill));
    job->user = t;
    rf_job_spec_t *spec = &bj->spec;
    spec->chain = t->stage ? f->then(rc->func_state) : f->to_json(rc->func_state);
    spec->source.path = strndup(rc->src.base, rc->src.len);
    spec->source.size = len != (size_t)-1 ? (int64_t)len : -1;
    spec->source.content_type = s_find(t->origin_headers, "content-type"); /* malloc'd or NULL */
    spec->source.ref = ref != NULL ? strdup(ref) : NULL;
    spec->source.offset = ref != NULL ? t->src_off : 0;
    if (ref != NULL && strncmp(ref, "edge:", 5) == 0) /* read back through this gateway, as this vhost */
        spec->source.host = strdup(rc->vhost->name);
    if (spec->chain == NULL || spec->source.path == NULL || (ref != NULL && spec->source.ref == NULL) ||
        s_stream(t, job) < 0) {
        if (job->stream != NULL) /* the job's reference, never submitted */
            gw_tstream_on_reply(&job->stream, job->job);
        gw_job_destroy(&job);
        gw_send_error(rc, 503, "Service Unavailable", "out of memory");
        return;
    }
    t->job = job;
    gw_broker_submit(th->submitter, &job);
    s_probe_start(t);
}

/* ---- the source ---------------------------------------------------------------- */

/* body NULL: the source is in the spool file (s_spool). */
static void s_on_collected(gw_req_t *rc, void *body, size_t len, const h2o_headers_t *origin_headers)
{
    gw_transform_t *t = rc->transform;
    t->origin_headers = origin_headers;
    if (body != NULL) {
        s_submit(t, body, len, NULL);
        return;
    }
    s_spool_close(t);
    char *ref = h2o_mem_alloc_pool(&rc->req->pool, 7 + strlen(t->spool_path) + 1);
    sprintf(ref, "file://%s", t->spool_path);
    s_submit(t, NULL, len, ref);
}

/* With bus.spool_dir, the source is written to a file there as it
 * arrives and the worker maps it (proto/rfb.md 2.2): no whole copy in the
 * gateway, no bytes over the bus. Returns the file's descriptor (owned by
 * the transform), or -1 to collect in memory. */
static int s_spool(gw_req_t *rc, int64_t size)
{
    gw_transform_t *t = rc->transform;
    const char *dir = rc->thread->server->cfg->bus.spool_dir;
    if (dir == NULL || size <= 0)
        return -1;
    s_spool_remove(t); /* none yet: one 200 per source */
    t->spool_fd = gw_spool_open(dir, &t->spool_path);
    if (t->spool_fd < 0) {
        rf_log(RF_LOG_WARN, rc->request_id, "bus.spool_dir %s: %s: the source goes over the bus", dir, strerror(errno));
        return -1;
    }
    return t->spool_fd;
}

/* The original goes out. When the origin said its size up front and the
 * client asked for a Range or conditionally, the origin is asked again
 * with the client's headers, so that it answers them (206, 304) as it does
 * for a plain request; otherwise this answer goes out whole. */
static int s_on_over_limit(gw_req_t *rc, int64_t size)
{
    gw_deliver_mark_fallback(rc, "over_max_source_size");
    rf_log(RF_LOG_INFO, rc->request_id, "%s: source%s%lld bytes over the limit of %zu: sending original",
           rc->func->label, size >= 0 ? " is " : " has more than ", (long long)(size >= 0 ? size : 0),
           rc->func->source_limit(rc->vhost));
    if (size < 0)
        return 0;
    const h2o_headers_t *h = &rc->req->headers;
    if (h2o_find_header(h, H2O_TOKEN_RANGE, -1) < 0 && h2o_find_header(h, H2O_TOKEN_IF_NONE_MATCH, -1) < 0 &&
        h2o_find_header(h, H2O_TOKEN_IF_MODIFIED_SINCE, -1) < 0)
        return 0;
    gw_upstream_t *up = gw_proxy_upstream(rc);
    if (up != NULL)
        gw_stream_start(rc, up, rc->src.base, rc->src.len, 1, NULL);
    return 1;
}

/* A source in a file origin: checked (by reference) or read, then sent. */
static void s_from_file(gw_transform_t *t, size_t limit)
{
    gw_req_t *rc = t->rc;
    h2o_req_t *req = rc->req;
    const rf_origin_t *o = &rc->vhost->origin;
    /* src is part of the canonical path (gw_recv): it cannot climb out of
     * the directory; the file system wants it decoded. */
    char *dec = h2o_mem_alloc_pool(&req->pool, rc->src.len + 1);
    t->file_src = h2o_iovec_init(dec, rf_path_decode(rc->src.base, rc->src.len, dec));
    const char *l[] = {rc->vhost->name, "file"};
    rf_metric_add(gw_m.origin_requests, l, 1);
    void *body = NULL;
    size_t len = 0;
    const char *why = NULL;
    int by_ref = rc->thread->server->cfg->bus.file_refs;
    int r = gw_file_read_source(o, t->file_src.base, t->file_src.len, limit, by_ref ? NULL : &body, &len, &why);
    if (r < 0) {
        gw_send_error(rc, 404, "Not Found", "source %.*s: %s", (int)(t->file_src.len > 200 ? 200 : t->file_src.len),
                      t->file_src.base, why);
        return;
    }
    if (r == 1) {
        s_on_over_limit(rc, -1);
        gw_file_serve_path(rc, t->file_src.base, t->file_src.len);
        return;
    }
    char *ref = NULL;
    if (by_ref) {
        size_t dl = strlen(o->dir);
        ref = h2o_mem_alloc_pool(&req->pool, 7 + dl + t->file_src.len + 1);
        memcpy(ref, "file://", 7);
        memcpy(ref + 7, o->dir, dl);
        memcpy(ref + 7 + dl, t->file_src.base, t->file_src.len);
        ref[7 + dl + t->file_src.len] = '\0';
    }
    s_submit(t, body, len, ref);
}

/* Redirects a /src/ source may take, each checked like the first URL. */
#define GW_SOURCE_REDIRECTS_MAX 3

static int s_on_redirect(gw_req_t *rc, const char *location, size_t len);

/* Fetches the source from rc->byclient or the vhost's origin, collecting it. */
/* gw_srcache_cb: the source as a file in the cache, or (ref NULL) not. */
static void s_on_cached_source(gw_req_t *rc, const char *path, uint64_t off, uint64_t len, const h2o_headers_t *headers,
                               rf_obj_t *obj)
{
    gw_transform_t *t = rc->transform;
    if (path == NULL) {
        s_fetch_source(rc);
        return;
    }
    t->origin_headers = headers;
    t->src_obj = obj;
    rf_obj_ref(obj);
    t->src_off = (int64_t)off;
    char *ref = h2o_mem_alloc_pool(&rc->req->pool, 7 + strlen(path) + 1);
    sprintf(ref, "file://%s", path);
    s_submit(t, NULL, (size_t)len, ref);
}

static void s_fetch_source(gw_req_t *rc)
{
    gw_upstream_t *up = gw_proxy_upstream(rc);
    if (up == NULL)
        return;
    static const gw_collector_t collect_template = {0, s_on_collected, s_on_over_limit, s_on_redirect, s_spool};
    gw_collector_t c = collect_template;
    c.limit = rc->func->source_limit(rc->vhost);
    gw_stream_start(rc, up, rc->src.base, rc->src.len, 0, &c);
}

/* A redirect of the source. The vhost's own origin's goes to the client as
 * before; a /src/ source's is followed (at most GW_SOURCE_REDIRECTS_MAX),
 * each hop checked by the function's resolve_source as the first URL was:
 * allowed host, public address. */
static int s_on_redirect(gw_req_t *rc, const char *location, size_t len)
{
    gw_transform_t *t = rc->transform;
    const rf_origin_t *from = rc->byclient;
    if (from == NULL || rc->func->resolve_source == NULL)
        return 0;
    if (++t->redirects > GW_SOURCE_REDIRECTS_MAX) {
        gw_send_error(rc, 502, "Bad Gateway", "%s source: more than %d redirects", rc->func->name,
                      GW_SOURCE_REDIRECTS_MAX);
        return 1;
    }
    h2o_mem_pool_t *pool = &rc->req->pool;
    h2o_iovec_t next;
    if (len > 0 && location[0] == '/' && (len < 2 || location[1] != '/')) { /* a path on the same host */
        char base[300];
        bool default_port = from->port == (from->https ? 443 : 80); /* as a URL would write it */
        int bl = default_port ? snprintf(base, sizeof(base), "%s://%s", from->https ? "https" : "http", from->host)
                              : snprintf(base, sizeof(base), "%s://%s:%d", from->https ? "https" : "http", from->host,
                                         from->port);
        next = h2o_concat(pool, h2o_iovec_init(base, (size_t)bl), h2o_iovec_init(location, len));
    } else if ((len > 7 && memcmp(location, "http://", 7) == 0) || (len > 8 && memcmp(location, "https://", 8) == 0)) {
        next = h2o_strdup(pool, location, len);
    } else {
        gw_send_error(rc, 502, "Bad Gateway", "%s source: a redirect to '%.*s' is not followed", rc->func->name,
                      (int)(len > 100 ? 100 : len), location);
        return 1;
    }
    rf_log(RF_LOG_INFO, rc->request_id, "%s source redirected (%d of at most %d) to %.*s", rc->func->name, t->redirects,
           GW_SOURCE_REDIRECTS_MAX, (int)(next.len > 200 ? 200 : next.len), next.base);
    const char *q = memchr(next.base, '?', next.len); /* resolve_source puts the query back */
    rc->query = q ? h2o_iovec_init(q, (size_t)(next.base + next.len - q)) : h2o_iovec_init("", 0);
    rc->src = h2o_iovec_init(next.base, q ? (size_t)(q - next.base) : next.len);
    rc->byclient = NULL;
    if (rc->func->resolve_source(rc) == 0)
        s_fetch_source(rc);
    return 1;
}

/* A source the worker reads by range (GW_SOURCE_RANGE): nothing is
 * fetched here. A file origin's file goes by path (bus.file_refs), after
 * a check that it is there; anything else as "edge:PATH", which the
 * worker reads back through this gateway's own listener (cached, counted,
 * with this vhost's origin settings). */
static void s_by_range(gw_transform_t *t)
{
    gw_req_t *rc = t->rc;
    h2o_req_t *req = rc->req;
    const rf_origin_t *o = &rc->vhost->origin;
    /* A source with a query is another function's result (the seed's
     * /v.mp4?trimming=…/mp4hls/…): only the gateway can make it. */
    if (o->kind == RF_ORIGIN_FILE && rc->thread->server->cfg->bus.file_refs &&
        memchr(rc->src.base, '?', rc->src.len) == NULL) {
        s_from_file(t, 0);
        return;
    }
    char *ref = h2o_mem_alloc_pool(&req->pool, 5 + rc->src.len + 1);
    memcpy(ref, "edge:", 5);
    memcpy(ref + 5, rc->src.base, rc->src.len);
    ref[5 + rc->src.len] = '\0';
    s_submit(t, NULL, (size_t)-1, ref);
}

void gw_transform(gw_req_t *rc)
{
    gw_transform_t *t = h2o_mem_alloc_shared(&rc->req->pool, sizeof(*t), s_dispose);
    memset(t, 0, sizeof(*t));
    t->spool_fd = -1;
    t->rc = rc;
    rc->transform = t;
    if (rc->func->source == GW_SOURCE_RANGE) {
        s_by_range(t);
        return;
    }
    size_t limit = rc->func->source_limit(rc->vhost);
    if (rc->byclient == NULL && rc->vhost->origin.kind == RF_ORIGIN_FILE) { /* (a /src/ source is http) */
        s_from_file(t, limit);
        return;
    }
    if (gw_srcache_get(rc, s_on_cached_source))
        return;
    s_fetch_source(rc);
}
