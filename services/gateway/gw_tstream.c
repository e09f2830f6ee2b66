/*  gw_tstream — a function result sent while the worker makes it
 *  (transcode.stream): a transcode is fragmented MP4, whose bytes are
 *  final as soon as they are written, so the client need not wait for
 *  the whole file.
 *
 *  The gateway creates an empty file in bus.spool_dir and names it in
 *  the JOB ("out", proto/rfb.md 2.2). The worker writes a one-line JSON
 *  preamble there (the result's type and the source's freshness: the head
 *  of the answer) and then the result as it is made. This pump looks at
 *  the file every 20 ms (thread->stream_timeout) and hands what is new to
 *  the client that asked (its own h2o generator, reading the file) and to
 *  the cache object the request claimed, which collapsed requests follow
 *  (gw_serve.c). A 200 REPLY naming the file says it is whole: the rest
 *  goes out and the object is complete. Any other end after the head is a
 *  broken transfer for every reader and no object: never a short result
 *  presented as whole.
 *
 *  The pump belongs to nobody: the job holds one reference until its
 *  REPLY, the request one until it ends. A client that leaves after the
 *  head does not stop a result that will be kept (as gw_fill.c); before
 *  the head it abandons the job as any transform does (gw_transform.c).
 *  Everything runs on the thread that submitted the job.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "gw.h"
#include "gw_preamble.h"
#include "rf_log.h"
#include "rf_ttl.h"

/* What the client or the cache take from the file at a time. */
#define GW_TSTREAM_CHUNK (256u << 10)

struct gw_tstream_t {
    int refs; /* the job's (until its REPLY) and the request's (until it ends) */
    gw_thread_t *thread;
    gw_vhosts_t *vhosts; /* one reference: keeps vhost valid */
    const rf_vhost_conf_t *vhost;
    char request_id[40];
    char label[48];
    bool auth; /* the request carried Authorization: the result is that client's (rf_ttl) */
    int fd;    /* the file, read here (pread) */
    char *path;
    char ref[600];     /* "file://" + path: the JOB's out, the REPLY's ref */
    gw_preamble_t pre; /* the head the worker wrote (its body_at is at) */
    char etag[32];     /* the answer's weak ETag, or "" */
    bool head;
    bool ended;     /* the REPLY came: the file is whole, or the stream failed */
    bool failed;    /* readers see a broken transfer */
    uint64_t at;    /* where the body starts in the file (after the preamble) */
    uint64_t avail; /* body bytes in the file so far (all of them once ended && !failed) */
    rf_obj_t *obj;  /* the cache object it fills (one reference), or NULL */
    uint64_t filled;
    h2o_timeout_entry_t tick;
    gw_tstream_head_fn *on_head;
    void *arg;
    gw_job_t *job; /* out on the bus until the REPLY (borrowed), or NULL */
    /* the client that asked */
    gw_req_t *rc; /* NULL once it ended */
    h2o_generator_t gen;
    bool started, sending, done;
    uint64_t sent;
    char *buf;
};

static void s_release(gw_tstream_t **p_p)
{
    gw_tstream_t *p = *p_p;
    *p_p = NULL;
    if (p == NULL || --p->refs > 0)
        return;
    if (h2o_timeout_is_linked(&p->tick))
        h2o_timeout_unlink(&p->tick);
    if (p->obj != NULL) {
        rf_obj_finish(p->obj, false); /* a no-op once it completed */
        rf_obj_unref(&p->obj);
    }
    if (p->fd >= 0)
        close(p->fd);
    if (p->path != NULL)
        unlink(p->path);
    free(p->path);
    free(p->buf);
    gw_vhosts_unref(&p->vhosts);
    free(p);
}

/* ---- the client ------------------------------------------------------------------ */

static void s_client_send(gw_tstream_t *p, size_t len, h2o_send_state_t state)
{
    h2o_iovec_t v = h2o_iovec_init(p->buf, len);
    if (state != H2O_SEND_STATE_IN_PROGRESS)
        p->done = true;
    else
        p->sending = true;
    h2o_send(p->rc->req, &v, len ? 1 : 0, state);
}

/* Sends what the file has beyond what was sent, when h2o is ready for it. */
static void s_client_pull(gw_tstream_t *p)
{
    if (p->rc == NULL || !p->started || p->sending || p->done)
        return;
    if (p->failed) {
        s_client_send(p, 0, H2O_SEND_STATE_ERROR); /* a broken transfer, never a short whole */
        return;
    }
    if (p->sent >= p->avail) {
        if (p->ended)
            s_client_send(p, 0, H2O_SEND_STATE_FINAL);
        return; /* the next tick brings more */
    }
    size_t want = p->avail - p->sent < GW_TSTREAM_CHUNK ? (size_t)(p->avail - p->sent) : GW_TSTREAM_CHUNK;
    ssize_t n = pread(p->fd, p->buf, want, (off_t)(p->at + p->sent));
    if (n <= 0) {
        rf_log(RF_LOG_ERROR, p->request_id, "%s: the streamed result cannot be read: %s", p->label,
               n < 0 ? strerror(errno) : "short file");
        s_client_send(p, 0, H2O_SEND_STATE_ERROR);
        return;
    }
    p->sent += (uint64_t)n;
    bool last = p->ended && p->sent == p->avail;
    s_client_send(p, (size_t)n, last ? H2O_SEND_STATE_FINAL : H2O_SEND_STATE_IN_PROGRESS);
}

static void s_on_proceed(h2o_generator_t *g, h2o_req_t *req)
{
    (void)req;
    gw_tstream_t *p = H2O_STRUCT_FROM_MEMBER(gw_tstream_t, gen, g);
    p->sending = false;
    s_client_pull(p);
}

/* The client left. The job goes on while its result will be kept or
 * others follow it; otherwise nobody would have it: the broker cancels
 * it (the worker stops at its next fragment). */
static void s_client_gone(gw_tstream_t *p)
{
    p->rc = NULL;
    p->done = true;
    if (p->job != NULL && !p->ended &&
        (p->obj == NULL || (rf_obj_keep(p->obj) == RF_KEEP_SHARE && rf_obj_readers(p->obj) == 0)))
        atomic_store(&p->job->abandoned, 1);
}

static void s_on_stop(h2o_generator_t *g, h2o_req_t *req)
{
    (void)req;
    s_client_gone(H2O_STRUCT_FROM_MEMBER(gw_tstream_t, gen, g));
}

static void s_add(h2o_req_t *req, const h2o_token_t *token, const char *value)
{
    if (value[0] != '\0')
        h2o_add_header(&req->pool, &req->res.headers, token, NULL, h2o_strdup(&req->pool, value, SIZE_MAX).base,
                       strlen(value));
}

/* The answer's head: 200, the result's type, the source's freshness;
 * no length (it is not known yet), so no Range either. */
static void s_client_start(gw_tstream_t *p, const char *cache_status)
{
    gw_req_t *rc = p->rc;
    h2o_req_t *req = rc->req;
    if ((p->buf = malloc(GW_TSTREAM_CHUNK)) == NULL) {
        gw_send_error(rc, 503, "Service Unavailable", "out of memory");
        p->done = true;
        return;
    }
    p->started = true;
    rc->cache_status = h2o_strdup(&req->pool, cache_status, SIZE_MAX).base;
    req->res.status = 200;
    req->res.reason = "OK";
    s_add(req, H2O_TOKEN_CONTENT_TYPE, p->pre.ctype);
    s_add(req, H2O_TOKEN_CACHE_CONTROL, p->pre.cc);
    s_add(req, H2O_TOKEN_EXPIRES, p->pre.ex);
    s_add(req, H2O_TOKEN_LAST_MODIFIED, p->pre.lm);
    s_add(req, H2O_TOKEN_ETAG, p->etag);
    gw_deliver_headers(rc);
    p->gen.proceed = s_on_proceed;
    p->gen.stop = s_on_stop;
    h2o_start_response(req, &p->gen);
    s_client_pull(p);
}

/* ---- the cache object --------------------------------------------------------------- */

/* Appends "name\0value\0" to blob[cap] at *len; false when it does not fit. */
static bool s_blob_add(char *blob, size_t cap, size_t *len, const char *name, const char *value)
{
    size_t nl = strlen(name), vl = strlen(value);
    if (vl == 0)
        return true;
    if (*len + nl + vl + 2 > cap)
        return false;
    memcpy(blob + *len, name, nl + 1);
    memcpy(blob + *len + nl + 1, value, vl + 1);
    *len += nl + vl + 2;
    return true;
}

/* Sets the object's head, if there is one, as the rest of the cache would
 * keep this answer (rf_ttl: the source's freshness, the vhost's policy),
 * and the client's Cache-Status into cs[cs_len]. Without a TTL the object is still shared
 * with the requests that joined it, then dropped (RF_KEEP_SHARE). */
static void s_obj_head(gw_tstream_t *p, char *cs, size_t cs_len)
{
    if (p->obj == NULL)
        return;
    char blob[1024];
    size_t bl = 0;
    rf_hdr_t hs[4];
    size_t n = 0;
    const char *const names[] = {"cache-control", "expires", "last-modified", "etag"};
    const char *const values[] = {p->pre.cc, p->pre.ex, p->pre.lm, p->etag};
    for (int i = 0; i < 4; i++)
        if (values[i][0] != '\0')
            hs[n++] = (rf_hdr_t){names[i], strlen(names[i]), values[i], strlen(values[i])};
    int64_t now = (int64_t)time(NULL);
    rf_ttl_verdict_t v;
    bool keep = rf_ttl_decide(&p->vhost->cache.ttl, 200, hs, n, now, now, p->auth, &v) == 0 && v.storable && v.ttl > 0;
    bool fits = s_blob_add(blob, sizeof(blob), &bl, "content-type", p->pre.ctype);
    for (int i = 0; i < 4 && fits; i++)
        fits = s_blob_add(blob, sizeof(blob), &bl, names[i], values[i]);
    rf_meta_t meta = {.status = 200,
                      .stored_at = now,
                      .expires_at = keep ? now + v.ttl : now,
                      .flags = keep && v.must_revalidate ? RF_META_MUST_REVALIDATE : 0,
                      .length = -1,
                      .lifetime = keep ? v.lifetime : 0,
                      .ttl_source = keep ? (int)v.source : 0};
    rf_keep_t how = !keep ? RF_KEEP_SHARE : p->vhost->cache.memory_only ? RF_KEEP_MEMORY : RF_KEEP_DISK;
    if (!fits || rf_obj_set_head(p->obj, &meta, blob, bl, how) < 0) {
        rf_obj_finish(p->obj, false);
        rf_obj_unref(&p->obj);
        return;
    }
    snprintf(cs, cs_len, "refract; fwd=miss; detail=streamed%s; ttl=%lld", keep ? "; stored" : "",
             (long long)(keep ? v.ttl : 0));
}

/* Appends what the file has beyond what the object holds. */
static void s_obj_fill(gw_tstream_t *p)
{
    while (p->obj != NULL && p->filled < p->avail) {
        size_t want = p->avail - p->filled < GW_TSTREAM_CHUNK ? (size_t)(p->avail - p->filled) : GW_TSTREAM_CHUNK;
        char *buf = malloc(want);
        ssize_t n = buf != NULL ? pread(p->fd, buf, want, (off_t)(p->at + p->filled)) : -1;
        if (n <= 0 || rf_obj_append(p->obj, buf, (size_t)n) < 0) {
            rf_obj_finish(p->obj, false);
            rf_obj_unref(&p->obj);
        } else {
            p->filled += (uint64_t)n;
        }
        free(buf);
    }
}

/* ---- the file ------------------------------------------------------------------------ */

/* Reads the preamble once it is whole: 1 (the head and p->at set), 0 not
 * yet, -1 bad (gw_preamble.h). */
static int s_preamble(gw_tstream_t *p, uint64_t size)
{
    char line[GW_PREAMBLE_MAX];
    size_t want = size < GW_PREAMBLE_MAX ? (size_t)size : GW_PREAMBLE_MAX;
    ssize_t n = pread(p->fd, line, want, 0);
    if (n < 0)
        return -1;
    int rc = gw_preamble_read(line, (size_t)n, size, &p->pre);
    if (rc == 1)
        p->at = p->pre.body_at;
    return rc;
}

/* The answer's ETag, weak: its bytes are not known when its head goes
 * out (and a second transcode need not make the same bytes), but it is
 * the same answer for the same URL (as the cache keys it, the function
 * and its options included) of the same source version. None when the
 * source gave no Last-Modified to tell versions apart. */
static void s_weak_etag(gw_tstream_t *p, h2o_iovec_t key)
{
    p->etag[0] = '\0';
    if (p->pre.lm[0] == '\0')
        return;
    uint64_t h = XXH3_64bits_withSeed(key.base, key.len, XXH3_64bits(p->pre.lm, strlen(p->pre.lm)));
    snprintf(p->etag, sizeof(p->etag), "W/\"%016llx\"", (unsigned long long)h);
}

/* The request now answers from the stream: it takes the object it
 * claimed, the transform lets go of the job, and the client's response
 * starts. Without a request (it left) there is nobody to start for: the
 * job was abandoned and its REPLY ends the pump. */
static void s_start(gw_tstream_t *p)
{
    gw_req_t *rc = p->rc;
    if (rc == NULL)
        return;
    p->head = true;
    p->obj = rc->fill;
    rc->fill = NULL;
    char cs[160];
    snprintf(cs, sizeof(cs), "%s; detail=streamed", rc->cache_status); /* cache off: fwd=bypass */
    s_weak_etag(p, rc->key);
    s_obj_head(p, cs, sizeof(cs));
    p->on_head(p->arg);
    s_client_start(p, cs);
}

/* Takes what the worker wrote since the last look. */
static void s_advance(gw_tstream_t *p)
{
    struct stat st;
    if (fstat(p->fd, &st) != 0)
        return;
    uint64_t size = (uint64_t)st.st_size;
    if (!p->head && size > 0) {
        int pr = s_preamble(p, size);
        if (pr < 0) {
            rf_log(RF_LOG_ERROR, p->request_id, "%s: the worker's stream has no valid preamble", p->label);
            p->failed = true;
            if (p->job != NULL) /* nothing it makes can be sent: the broker cancels it */
                atomic_store(&p->job->abandoned, 1);
            return;
        }
        if (pr == 0)
            return;
        s_start(p);
        if (!p->head)
            return;
    }
    if (p->head && size > p->at) {
        p->avail = size - p->at;
        s_obj_fill(p);
    }
}

static void s_on_tick(h2o_timeout_entry_t *entry)
{
    gw_tstream_t *p = H2O_STRUCT_FROM_MEMBER(gw_tstream_t, tick, entry);
    if (p->ended || p->failed)
        return;
    s_advance(p);
    s_client_pull(p);
    if (!p->failed)
        h2o_timeout_link(p->thread->ctx.loop, &p->thread->stream_timeout, &p->tick);
}

/* ---- the API ------------------------------------------------------------------------- */

gw_tstream_t *gw_tstream_new(gw_req_t *rc, gw_job_t *job, gw_tstream_head_fn *on_head, void *arg)
{
    const char *dir = rc->thread->server->cfg->bus.spool_dir;
    gw_tstream_t *p = calloc(1, sizeof(*p));
    if (p == NULL || dir == NULL)
        goto fail;
    p->fd = gw_spool_open(dir, &p->path);
    if (p->fd < 0 || snprintf(p->ref, sizeof(p->ref), "file://%s", p->path) >= (int)sizeof(p->ref))
        goto fail;
    p->refs = 2;
    p->thread = rc->thread;
    p->vhosts = rc->vhosts;
    gw_vhosts_ref(p->vhosts);
    p->vhost = rc->vhost;
    snprintf(p->request_id, sizeof(p->request_id), "%s", rc->request_id);
    snprintf(p->label, sizeof(p->label), "%s", rc->func->label);
    p->auth = h2o_find_header(&rc->req->headers, H2O_TOKEN_AUTHORIZATION, -1) != -1;
    p->on_head = on_head;
    p->arg = arg;
    p->job = job;
    p->rc = rc;
    p->tick.cb = s_on_tick;
    h2o_timeout_link(p->thread->ctx.loop, &p->thread->stream_timeout, &p->tick);
    return p;
fail:
    if (p != NULL) {
        if (p->fd >= 0 && p->path != NULL) {
            close(p->fd);
            unlink(p->path);
        }
        free(p->path);
        free(p);
    }
    return NULL;
}

const char *gw_tstream_ref(const gw_tstream_t *p)
{
    return p->ref;
}

/* A failure after the head: every reader sees it. */
static void s_fail(gw_tstream_t *p, int status, const char *why)
{
    p->failed = true;
    /* the client that left cancelled it: expected, not a fault */
    rf_log(p->rc == NULL && p->done ? RF_LOG_INFO : RF_LOG_WARN, p->request_id,
           "%s: the streamed result broke off after %llu bytes: %s", p->label, (unsigned long long)p->sent, why);
    if (p->obj != NULL) {
        rf_obj_set_error(p->obj, status, why);
        rf_obj_finish(p->obj, false);
        rf_obj_unref(&p->obj);
    }
    s_client_pull(p);
}

int gw_tstream_on_reply(gw_tstream_t **p_p, const rf_job_t *job)
{
    gw_tstream_t *p = *p_p;
    const rf_reply_t *r = &job->reply;
    bool whole = job->outcome == RF_JOB_OK && r->status == 200 && strcmp(r->ref, p->ref) == 0;
    p->job = NULL;
    if (h2o_timeout_is_linked(&p->tick))
        h2o_timeout_unlink(&p->tick);
    if (whole && !p->failed)
        s_advance(p); /* the rest, and the head of a result made before the first look */
    p->ended = true;
    unlink(p->path); /* the descriptor keeps the bytes for the client */
    free(p->path);
    p->path = NULL;
    int streamed = p->head || p->failed || whole ? 1 : 0;
    if (!p->head && streamed) {
        /* The worker wrote the file, but it never started: no valid
         * preamble (or the client left). The transform lets go of the job. */
        if (p->rc != NULL) {
            p->on_head(p->arg);
            gw_send_error(p->rc, 502, "Bad Gateway", "%s worker failed: its streamed result has no valid head",
                          p->label);
        }
    } else if (p->head && !whole) {
        char why[300];
        snprintf(why, sizeof(why), "%s", job->outcome != RF_JOB_OK ? job->why : r->error);
        s_fail(p, 502, why[0] ? why : "the worker failed");
    } else if (p->head) {
        if (p->obj != NULL)
            rf_obj_finish(p->obj, true);
        rf_obj_unref(&p->obj);
        s_client_pull(p);
    }
    s_release(p_p);
    return streamed;
}

void gw_tstream_release(gw_tstream_t **p_p)
{
    gw_tstream_t *p = *p_p;
    if (p == NULL)
        return;
    s_client_gone(p);
    s_release(p_p);
}
