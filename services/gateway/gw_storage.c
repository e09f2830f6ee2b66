/*  gw_storage — the object-storage tier (a vhost's `storage:`, seed 002
 *  Appendix C) and the backup pipe (a vhost's `backup:`, seed 002 chapter 5
 *  "백업 파이프"). docs/storage.md is the user's page.
 *
 *  Storage tier. A request that claimed a cache object (a miss, plain or a
 *  function result) on a vhost with a tier asks S3 for the object first:
 *  this stage sits between lookup and serve/transform. A probe thread GETs
 *  PREFIX + the hex XXH3-128 of the cache key (the object's own identity:
 *  vhost, path, query policy, function and canonical chain, variant):
 *    - found (storage HIT): the probe thread writes the answer into the
 *      claimed object as it arrives, as a fill would, and the request
 *      follows the object like a collapsed reader: no origin, no worker.
 *    - not found (storage MISS), or S3 failing: the request goes on as if
 *      there were no tier (origin fill, or transform), and an upload
 *      follows the object.
 *  An upload thread reads the object with its own cursor while it fills
 *  and sends it to S3: one PUT up to RF_S3C_STREAM_PART, else a multipart
 *  upload that is aborted when the fill fails, so no partial object is ever
 *  visible. Only complete 200 answers the cache keeps (DISK or MEMORY) go
 *  up. A refresh (an expired object) skips the probe and uploads what it
 *  gets, so the stored copy follows the origin.
 *
 *  Backup pipe. Every plain fill a vhost with `backup:` claims or refreshes
 *  is followed the same way and written at PREFIX + its origin path: one
 *  origin read, three consumers (the waiting clients, the cache, S3).
 *
 *  Purges: gw_storage_purge deletes a URL's stored copy.
 *
 *  Threads. Blocking libcurl calls (rf_s3c) never run on an event loop:
 *  GW_STORAGE_PROBERS probe threads and GW_STORAGE_UPLOADERS upload threads,
 *  each with one queue of at most GW_STORAGE_QUEUE_MAX jobs (beyond it a
 *  probe is answered "miss" at once and an upload is dropped, both
 *  counted). A probe's answer comes back to the request's thread through
 *  its storage_receiver; the request may be gone by then (its pool's
 *  dispose hook clears job->rc). A job holds a reference on the vhost table,
 *  so a reload never frees the endpoint it uses.
 */
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "gw.h"
#include "gw_metrics.h"
#include "rf_log.h"
#include "rf_path.h"
#include "rf_s3c.h"
#include "rf_sgevent.h"
#include "rf_sgfs.h"
#include "rf_ttl.h"

#define GW_STORAGE_PROBERS 4
#define GW_STORAGE_UPLOADERS 2
#define GW_STORAGE_QUEUE_MAX 4096
#define GW_STORAGE_HEAD_MAX 8192 /* the headers a storage HIT keeps */

typedef enum { S_PROBE, S_UPLOAD, S_DELETE, S_WARM, S_RUN } s_kind_t;

typedef struct gw_sjob_t gw_sjob_t;
struct gw_sjob_t {
    gw_sjob_t *next;
    s_kind_t kind;
    const char *what; /* "storage" or "backup": the metric label */
    rf_obj_t *obj;    /* one reference (probe: the claimed object; upload: the one to follow) */
    gw_vhosts_t *vhosts; /* one reference: keeps vhost and ep valid */
    const rf_vhost_conf_t *vhost;
    const rf_s3ep_t *ep;
    const rf_s3tier_conf_t *tier; /* the vhost's storage or backup */
    char *key; /* the S3 key (malloc'd) */
    char *url; /* for x-amz-meta-refract-url (malloc'd) */
    char request_id[40];
    /* probe */
    gw_thread_t *thread;
    h2o_multithread_message_t msg;
    atomic_int refs; /* the probe thread's and the loop's */
    bool hit;
    gw_req_t *rc;      /* loop thread only: NULL once the request is gone */
    gw_sjob_t **hook;  /* loop thread only: the request pool's pointer to this job */
    bool head_set;
    char *blob; /* the head being built (name\0value\0…) */
    size_t blen, bcap;
    int64_t length;
    uint64_t got; /* body bytes appended */
    /* warm: GET url (the gateway's own listener) with Host: host */
    char *host;
    gw_warm_done_fn *done;
    void *done_arg;
    gw_warm_result_t result;
    /* run: work(arg) here, then finish(arg) on the thread's loop */
    void (*work)(void *arg);
    void (*finish)(void *arg);
    void *run_arg;
};

typedef struct {
    gw_storage_t *st;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    gw_sjob_t *head, *tail;
    size_t n;
    pthread_t *tids;
    size_t nthreads;
    s_kind_t serves; /* S_PROBE, or S_UPLOAD (uploads and deletes) */
} s_pool_t;

struct gw_storage_t {
    s_pool_t probes, uploads;
    atomic_bool stop;
    char outbox_in[600]; /* STATE/outbox-in: upload events for the scheduler's outbox */
};

/* ---- jobs ----------------------------------------------------------------------- */

static void s_job_free(gw_sjob_t *j)
{
    if (j == NULL)
        return;
    rf_obj_unref(&j->obj);
    gw_vhosts_unref(&j->vhosts);
    free(j->key);
    free(j->url);
    free(j->blob);
    free(j->host);
    free(j);
}

static void s_job_unref(gw_sjob_t *j)
{
    if (atomic_fetch_sub(&j->refs, 1) == 1)
        s_job_free(j);
}

/* A job for rc's vhost (references taken). NULL when out of memory. */
static gw_sjob_t *s_job_new(gw_req_t *rc, s_kind_t kind, const rf_s3tier_conf_t *tier, const char *what,
                            rf_obj_t *obj, char *key)
{
    gw_sjob_t *j = calloc(1, sizeof(*j));
    if (j == NULL || key == NULL) {
        free(j);
        free(key);
        return NULL;
    }
    j->kind = kind;
    j->what = what;
    j->key = key;
    if (obj != NULL) {
        j->obj = obj;
        rf_obj_ref(obj);
    }
    j->vhosts = rc->vhosts;
    gw_vhosts_ref(j->vhosts);
    j->vhost = rc->vhost;
    j->ep = &tier->ep;
    j->tier = tier;
    j->length = -1;
    atomic_init(&j->refs, 1);
    memcpy(j->request_id, rc->request_id, sizeof(j->request_id));
    j->url = h2o_concat(&rc->req->pool, rc->path, rc->query).base;
    j->url = j->url ? strdup(j->url) : NULL;
    return j;
}

/* The group of a cache key "vhost\npath?query\nfunc:chain[\nvariant]":
 * its first two lines, the URL a purge names — the object at it and every
 * function result made from it share the group. */
static uint64_t s_group(h2o_iovec_t key)
{
    const char *nl1 = memchr(key.base, '\n', key.len);
    const char *nl2 = nl1 ? memchr(nl1 + 1, '\n', key.len - (size_t)(nl1 + 1 - key.base)) : NULL;
    size_t gl = nl2 ? (size_t)(nl2 - key.base) : key.len;
    return XXH3_64bits(key.base, gl);
}

/* PREFIX + hex XXH3-64 of the key's group + "/" + hex XXH3-128 of the whole
 * cache key (malloc'd): the object's own identity (vhost, path, query
 * policy, function and canonical chain, variant), filed under the URL a
 * purge would name. */
static char *s_tier_key(const rf_s3tier_conf_t *t, h2o_iovec_t key)
{
    XXH128_hash_t h = XXH3_128bits(key.base, key.len);
    char *k = NULL;
    if (asprintf(&k, "%s%016" PRIx64 "/%016" PRIx64 "%016" PRIx64, t->prefix, s_group(key), (uint64_t)h.high64,
                 (uint64_t)h.low64) < 0)
        return NULL;
    return k;
}

/* PREFIX + the origin path without its leading '/' (malloc'd). */
static char *s_backup_key(const rf_s3tier_conf_t *t, gw_req_t *rc)
{
    h2o_iovec_t p = rc->origin_path.base != NULL ? rc->origin_path : rc->path;
    size_t skip = p.len > 0 && p.base[0] == '/' ? 1 : 0;
    char *k = NULL;
    if (asprintf(&k, "%s%.*s", t->prefix, (int)(p.len - skip), p.base + skip) < 0)
        return NULL;
    return k;
}

/* Queues j on pool p; false when the queue is full (j untouched). */
static bool s_push(s_pool_t *p, gw_sjob_t *j)
{
    pthread_mutex_lock(&p->mu);
    bool ok = p->n < GW_STORAGE_QUEUE_MAX;
    if (ok) {
        j->next = NULL;
        if (p->tail != NULL)
            p->tail->next = j;
        else
            p->head = j;
        p->tail = j;
        p->n++;
        pthread_cond_signal(&p->cv);
    }
    pthread_mutex_unlock(&p->mu);
    return ok;
}

/* The next job, or NULL when stopping. */
static gw_sjob_t *s_pop(s_pool_t *p)
{
    pthread_mutex_lock(&p->mu);
    while (p->head == NULL && !atomic_load(&p->st->stop))
        pthread_cond_wait(&p->cv, &p->mu);
    gw_sjob_t *j = p->head;
    if (j != NULL) {
        p->head = j->next;
        if (p->head == NULL)
            p->tail = NULL;
        p->n--;
    }
    pthread_mutex_unlock(&p->mu);
    return j;
}

/* ---- probe: a storage HIT fills the claimed object -------------------------------- */

/* The response headers a stored copy answers with: the S3 object's system
 * metadata a client cares about, and the origin's validators kept as
 * x-amz-meta-refract-* at upload. */
static const char *s_kept_header(const char *n, size_t nl)
{
    static const char *const map[][2] = {{"content-type", "content-type"},
                                         {"cache-control", "cache-control"},
                                         {"expires", "expires"},
                                         {"content-language", "content-language"},
                                         {"content-disposition", "content-disposition"},
                                         {"content-encoding", "content-encoding"},
                                         {"x-amz-meta-refract-etag", "etag"},
                                         {"x-amz-meta-refract-last-modified", "last-modified"},
                                         {"x-amz-meta-refract-note", "x-refract-note"}};
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
        if (strlen(map[i][0]) == nl && strncasecmp(n, map[i][0], nl) == 0)
            return map[i][1];
    return NULL;
}

static void s_on_header(void *arg, const char *n, size_t nl, const char *v, size_t vl)
{
    gw_sjob_t *j = arg;
    if (nl == 14 && strncasecmp(n, "content-length", 14) == 0) {
        j->length = strtoll(v, NULL, 10);
        return;
    }
    const char *name = s_kept_header(n, nl);
    if (name == NULL)
        return;
    size_t need = strlen(name) + vl + 2;
    if (j->blen + need > GW_STORAGE_HEAD_MAX)
        return;
    if (j->blen + need > j->bcap) {
        size_t cap = (j->blen + need) * 2;
        char *nb = realloc(j->blob, cap);
        if (nb == NULL)
            return;
        j->blob = nb;
        j->bcap = cap;
    }
    memcpy(j->blob + j->blen, name, strlen(name) + 1);
    j->blen += strlen(name) + 1;
    memcpy(j->blob + j->blen, v, vl);
    j->blen += vl;
    j->blob[j->blen++] = '\0';
}

/* Posts the probe's answer to the request's thread (once). */
static void s_answer(gw_sjob_t *j, bool hit)
{
    j->hit = hit;
    atomic_fetch_add(&j->refs, 1); /* the loop's, dropped by gw_storage_on_probe */
    h2o_multithread_send_message(&j->thread->storage_receiver, &j->msg);
}

/* The stored copy's head into the object, with the vhost's TTL rules
 * applied as to a fresh origin answer (the copy does not age in S3: a
 * content change purges it). 0 or -1. */
static int s_set_head(gw_sjob_t *j)
{
    size_t n = 0, at = 0;
    rf_hdr_t hs[16];
    gw_stored_line_t l;
    while (n < 16 && gw_stored_next(j->blob, j->blen, &at, &l))
        hs[n++] = (rf_hdr_t){l.name, l.name_len, l.value, l.value_len};
    int64_t now = (int64_t)time(NULL);
    rf_ttl_verdict_t v;
    if (rf_ttl_decide(&j->vhost->cache.ttl, 200, hs, n, now, now, false, &v) < 0)
        return -1;
    rf_keep_t keep = v.ttl <= 0 ? RF_KEEP_SHARE : j->vhost->cache.memory_only ? RF_KEEP_MEMORY : RF_KEEP_DISK;
    rf_meta_t meta = {.status = 200,
                      .stored_at = now,
                      .expires_at = now + (v.ttl > 0 ? v.ttl : 0),
                      .flags = (v.must_revalidate ? RF_META_MUST_REVALIDATE : 0) | (v.no_cache ? RF_META_NO_CACHE : 0),
                      .length = j->length,
                      .lifetime = v.lifetime,
                      .ttl_source = (int)v.source};
    if (rf_obj_set_head(j->obj, &meta, j->blob ? j->blob : "", j->blen, keep) < 0)
        return -1;
    j->head_set = true;
    return 0;
}

static int s_on_data(void *arg, const char *p, size_t n)
{
    gw_sjob_t *j = arg;
    if (!j->head_set) {
        if (s_set_head(j) < 0)
            return -1;
        s_answer(j, true);
    }
    if (rf_obj_append(j->obj, p, n) < 0)
        return -1;
    /* All the bytes the answer announced: complete now, not when curl
     * returns — a request arriving meanwhile is then a hit, not a join. */
    j->got += n;
    if (j->length >= 0 && j->got == (uint64_t)j->length)
        rf_obj_finish(j->obj, true);
    return 0;
}

static void s_probe(rf_s3c_t *c, gw_sjob_t *j)
{
    rf_s3c_use(c, j->ep);
    rf_s3c_get_cbs_t cbs = {s_on_header, s_on_data, j};
    char why[256] = "";
    int rc = rf_s3c_get_cb(c, j->key, &cbs, why, sizeof(why));
    const char *l[] = {j->vhost->name, rc == 0 ? "hit" : rc == 1 ? "miss" : "error"};
    rf_metric_add(gw_m.storage_lookups, l, 1);
    if (rc == 0 && !j->head_set) { /* an empty object: no body callback ran */
        if (s_set_head(j) < 0)
            rc = -1;
        else
            s_answer(j, true);
    }
    if (j->head_set) { /* the request follows the object: end it either way */
        if (rc != 0) {
            rf_log(RF_LOG_WARN, j->request_id, "storage %s: reading %s broke off: %s", j->ep->name, j->key, why);
            rf_obj_set_error(j->obj, 502, "object storage read failed");
        }
        rf_obj_finish(j->obj, rc == 0);
        return;
    }
    if (rc < 0)
        rf_log(RF_LOG_WARN, j->request_id, "storage %s: %s (served as a storage miss)", j->ep->name, why);
    s_answer(j, false);
}

/* ---- upload: follows an object while it fills ------------------------------------ */

typedef struct {
    rf_cursor_t cur;
    int efd; /* the upload thread's eventfd, written by the wake-up */
    atomic_bool *stop;
} s_follow_t;

static void s_follow_wake(rf_waiter_t *w)
{
    s_follow_t *f = H2O_STRUCT_FROM_MEMBER(s_follow_t, cur.waiter, w);
    uint64_t one = 1;
    ssize_t r = write(f->efd, &one, sizeof(one)); /* under the object's lock: only this */
    (void)r;
}

/* Waits for the wake-up (or 1 s: a last guard). false when stopping. */
static bool s_follow_wait(s_follow_t *f)
{
    struct pollfd p = {.fd = f->efd, .events = POLLIN};
    if (poll(&p, 1, 1000) > 0) {
        uint64_t v;
        ssize_t r = read(f->efd, &v, sizeof(v));
        (void)r;
    }
    return !atomic_load(f->stop);
}

static ssize_t s_follow_read(void *arg, char *buf, size_t cap)
{
    s_follow_t *f = arg;
    for (;;) {
        size_t n = 0;
        switch (rf_cursor_read(&f->cur, buf, cap, &n)) {
        case RF_READ_DATA:
            return (ssize_t)n;
        case RF_READ_EOF:
            return 0;
        case RF_READ_WAIT:
            if (!s_follow_wait(f))
                return -1;
            continue;
        case RF_READ_FAILED:
        case RF_READ_PASS:
            return -1; /* the fill failed: the upload is aborted */
        }
    }
}

/* "Name: value" lines for the PUT from the object's stored head, into
 * lines (at most max - 1, NULL-terminated; malloc'd: the caller frees the
 * n returned), and the content type into *ctype (malloc'd or NULL). */
static size_t s_put_headers(gw_sjob_t *j, char **lines, size_t max, char **ctype)
{
    size_t hl, n = 0, vl;
    const char *blob = rf_obj_headers(j->obj, &hl);
    static const struct {
        const char *from, *as;
    } map[] = {{"cache-control", "Cache-Control"},
               {"expires", "Expires"},
               {"content-language", "Content-Language"},
               {"content-disposition", "Content-Disposition"},
               {"content-encoding", "Content-Encoding"},
               {"etag", "x-amz-meta-refract-etag"},
               {"last-modified", "x-amz-meta-refract-last-modified"},
               {"x-refract-note", "x-amz-meta-refract-note"}};
    const char *ct = gw_stored_header(blob, hl, "content-type", &vl);
    *ctype = ct != NULL && vl < 200 ? strndup(ct, vl) : NULL;
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]) && n + 2 < max; i++) {
        const char *v = gw_stored_header(blob, hl, map[i].from, &vl);
        if (v != NULL && vl < 1024 && asprintf(&lines[n], "%s: %.*s", map[i].as, (int)vl, v) >= 0)
            n++;
    }
    if (j->url != NULL && strlen(j->url) < 1024 && asprintf(&lines[n], "x-amz-meta-refract-url: %s", j->url) >= 0)
        n++;
    lines[n] = NULL;
    return n;
}

/* The upload's completion or failure event, left for the scheduler's
 * persistent outbox (rf_outbox_write): delivered at least once to the
 * tier's `events` target, with the fill's request id and the kind as the
 * idempotency key. Skipped uploads (nothing the cache keeps) raise none. */
static void s_upload_event(gw_storage_t *st, gw_sjob_t *j, bool ok, uint64_t bytes, const char *why)
{
    char key[80];
    snprintf(key, sizeof(key), "%s-%s", j->request_id, j->what);
    json_t *e = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:I}", "id", key, "event",
                          ok ? "storage.upload.completed" : "storage.upload.failed", "kind", j->what, "vhost",
                          j->vhost->name, "url", j->url ? j->url : "", "bucket", j->ep->bucket, "key", j->key,
                          "request_id", j->request_id, "bytes", (json_int_t)bytes, "time", (json_int_t)time(NULL));
    if (e != NULL && !ok)
        json_object_set_new(e, "error", json_string(why));
    char *text = e ? json_dumps(e, JSON_COMPACT) : NULL;
    json_decref(e);
    if (text == NULL || rf_outbox_write(st->outbox_in, j->tier->events, key, text) < 0)
        rf_log(RF_LOG_ERROR, j->request_id, "%s upload event for %s could not be written to %s: %s", j->what, j->key,
               st->outbox_in, strerror(errno));
    free(text);
}

static void s_upload(gw_storage_t *st, rf_s3c_t *c, gw_sjob_t *j, int efd, atomic_bool *stop)
{
    s_follow_t f = {.efd = efd, .stop = stop};
    const char *result = "skipped";
    char why[256] = "";
    uint64_t total = 0;
    if (rf_cursor_init(&f.cur, j->obj, false, s_follow_wake) < 0)
        goto out; /* evicted before it could be read */
    rf_read_t h;
    while ((h = rf_cursor_head(&f.cur)) == RF_READ_WAIT)
        if (!s_follow_wait(&f))
            goto out;
    if (h != RF_READ_DATA)
        goto out; /* failed before a head, or not shareable */
    rf_keep_t keep = rf_obj_keep(j->obj);
    if (rf_obj_meta(j->obj)->status != 200 || (keep != RF_KEEP_DISK && keep != RF_KEEP_MEMORY))
        goto out; /* only what the cache keeps */
    char *lines[12], *ctype = NULL;
    size_t n = s_put_headers(j, lines, 12, &ctype);
    rf_s3c_use(c, j->ep);
    /* A length known from the head: the body goes from the cache file
     * straight into curl's buffers; else through one part held here. */
    int64_t length = rf_obj_meta(j->obj)->length;
    int rc = length >= 0 ? rf_s3c_put_sized(c, j->key, ctype, (const char *const *)lines, (uint64_t)length,
                                            s_follow_read, &f, why, sizeof(why))
                         : rf_s3c_put_stream(c, j->key, ctype, (const char *const *)lines, s_follow_read, &f, &total,
                                             why, sizeof(why));
    if (rc == 0 && length >= 0)
        total = (uint64_t)length;
    for (size_t i = 0; i < n; i++)
        free(lines[i]);
    free(ctype);
    result = rc == 0 ? "ok" : "failed";
    if (j->tier->events != NULL)
        s_upload_event(st, j, rc == 0, total, why);
    if (rc < 0)
        rf_log(RF_LOG_WARN, j->request_id, "%s upload %s to %s failed (nothing left in S3): %s", j->what, j->key,
               j->ep->name, why);
out:
    rf_cursor_close(&f.cur);
    const char *l[] = {j->vhost->name, j->what, result};
    rf_metric_add(gw_m.storage_uploads, l, 1);
    if (total > 0 && strcmp(result, "ok") == 0) {
        const char *lb[] = {j->vhost->name, j->what};
        rf_metric_add(gw_m.storage_upload_bytes, lb, total);
    }
}

static size_t s_discard(char *p, size_t size, size_t n, void *arg)
{
    (void)p, (void)arg;
    return size * n;
}

/* Tells the CDN in front (seed Appendix C, "content change"): POST
 * {"vhost": V, "urls": [URL]} to storage.cdn_purge, after the stored
 * copies are gone, so the CDN's next miss cannot refill from them. One
 * try, 10 s at most; a failure is logged and counted. */
static void s_cdn_purge(gw_sjob_t *j)
{
    json_t *doc = json_pack("{s:s, s:[s]}", "vhost", j->vhost->name, "urls", j->url);
    char *body = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    CURL *h = body ? curl_easy_init() : NULL;
    long status = 0;
    CURLcode cc = CURLE_FAILED_INIT;
    if (h != NULL) {
        struct curl_slist *hd = curl_slist_append(NULL, "Content-Type: application/json");
        char rid[64];
        snprintf(rid, sizeof(rid), "X-Request-Id: %s", j->request_id);
        hd = curl_slist_append(hd, rid);
        curl_easy_setopt(h, CURLOPT_URL, j->vhost->storage.cdn_purge);
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hd);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 10000L);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, s_discard);
        cc = curl_easy_perform(h);
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
        curl_slist_free_all(hd);
        curl_easy_cleanup(h);
    }
    bool ok = cc == CURLE_OK && status >= 200 && status <= 299;
    if (!ok)
        rf_log(RF_LOG_WARN, j->request_id, "CDN purge of %s at %s failed: %s", j->url, j->vhost->storage.cdn_purge,
               cc != CURLE_OK ? curl_easy_strerror(cc) : "not a 2xx answer");
    const char *l[] = {j->vhost->name, ok ? "ok" : "failed"};
    rf_metric_add(gw_m.storage_cdn_purges, l, 1);
    free(body);
}

/* A purge: every stored object of the group j->key names ("PREFIX…/"),
 * listed page by page and deleted one by one. */
static void s_delete(rf_s3c_t *c, gw_sjob_t *j)
{
    char why[256] = "", after[1024] = "";
    rf_s3c_use(c, j->ep);
    size_t ok = 0, failed = 0;
    for (;;) {
        rf_s3c_entry_t *e = NULL;
        size_t n = 0;
        bool more = false;
        if (rf_s3c_list(c, j->key, NULL, after, 1000, &e, &n, &more, why, sizeof(why)) < 0) {
            failed++;
            break;
        }
        for (size_t i = 0; i < n; i++) {
            if (rf_s3c_delete(c, e[i].key, why, sizeof(why)) == 0)
                ok++;
            else
                failed++;
        }
        if (n > 0)
            snprintf(after, sizeof(after), "%s", e[n - 1].key);
        rf_s3c_entries_free(e, n);
        if (!more || n == 0)
            break;
    }
    if (failed > 0)
        rf_log(RF_LOG_WARN, j->request_id, "storage purge of %s on %s: %zu deleted, %zu failed: %s", j->key,
               j->ep->name, ok, failed, why);
    const char *lo[] = {j->vhost->name, "ok"}, *lf[] = {j->vhost->name, "failed"};
    rf_metric_add(gw_m.storage_deletes, lo, ok);
    rf_metric_add(gw_m.storage_deletes, lf, failed);
    if (j->vhost->storage.cdn_purge != NULL && j->url != NULL)
        s_cdn_purge(j);
}

/* ---- warm: a pre-warm GET through this gateway (admin POST /prewarm) ---------------- */

static size_t s_warm_header(char *p, size_t size, size_t n, void *arg)
{
    gw_sjob_t *j = arg;
    size_t len = size * n;
    if (len > 14 && strncasecmp(p, "cache-status:", 13) == 0) {
        const char *v = p + 13;
        size_t vl = len - 13;
        while (vl > 0 && *v == ' ')
            v++, vl--;
        while (vl > 0 && (v[vl - 1] == '\r' || v[vl - 1] == '\n'))
            vl--;
        snprintf(j->result.cache_status, sizeof(j->result.cache_status), "%.*s", (int)vl, v);
    }
    return len;
}

static size_t s_warm_body(char *p, size_t size, size_t n, void *arg)
{
    (void)p;
    gw_sjob_t *j = arg;
    j->result.bytes += size * n;
    return size * n;
}

/* The whole answer is read and dropped: the gateway stores what it fetched
 * as for any client (the access log and Cache-Status say what happened). */
static void s_warm(gw_sjob_t *j)
{
    CURL *h = curl_easy_init();
    CURLcode cc = CURLE_FAILED_INIT;
    long status = 0;
    if (h != NULL) {
        char hh[300], rid[64];
        snprintf(hh, sizeof(hh), "Host: %s", j->host);
        snprintf(rid, sizeof(rid), "X-Request-Id: %s", j->request_id);
        struct curl_slist *hd = curl_slist_append(NULL, hh);
        hd = curl_slist_append(hd, rid);
        hd = curl_slist_append(hd, "User-Agent: refract-admin-prewarm");
        hd = curl_slist_append(hd, "X-Refract-Priority: background"); /* clients' jobs go first */
        curl_easy_setopt(h, CURLOPT_URL, j->url);
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hd);
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 300000L);
        curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, s_warm_header);
        curl_easy_setopt(h, CURLOPT_HEADERDATA, j);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, s_warm_body);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, j);
        cc = curl_easy_perform(h);
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
        curl_slist_free_all(hd);
        curl_easy_cleanup(h);
    }
    j->result.status = cc == CURLE_OK ? (int)status : 0;
    if (cc != CURLE_OK)
        snprintf(j->result.error, sizeof(j->result.error), "%s", curl_easy_strerror(cc));
    atomic_fetch_add(&j->refs, 1);
    h2o_multithread_send_message(&j->thread->storage_receiver, &j->msg);
}

static void *s_thread(void *arg)
{
    s_pool_t *p = arg;
    char why[200];
    /* The endpoint is set per job (rf_s3c_use); a placeholder until then. */
    static const rf_s3ep_t none = {.name = "none", .endpoint = "http://127.0.0.1", .region = "us-east-1",
                                   .bucket = "none", .path_style = true};
    rf_s3c_t *c = rf_s3c_new(&none, why, sizeof(why));
    if (c != NULL) /* a stopping gateway does not wait for an upload to end */
        rf_s3c_set_abort(c, &p->st->stop);
    int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    gw_sjob_t *j;
    while ((j = s_pop(p)) != NULL) {
        if (c == NULL || efd < 0) {
            if (j->kind == S_PROBE)
                s_answer(j, false);
            else if (j->kind == S_WARM)
                s_warm(j); /* no S3 client is needed for it */
            else if (j->kind == S_RUN) {
                j->work(j->run_arg); /* its own clients (rf_sgfs) */
                atomic_fetch_add(&j->refs, 1);
                h2o_multithread_send_message(&j->thread->storage_receiver, &j->msg);
            }
        } else if (j->kind == S_PROBE) {
            s_probe(c, j);
        } else if (j->kind == S_UPLOAD) {
            s_upload(p->st, c, j, efd, &p->st->stop);
        } else if (j->kind == S_WARM) {
            s_warm(j);
        } else if (j->kind == S_RUN) {
            j->work(j->run_arg);
            atomic_fetch_add(&j->refs, 1);
            h2o_multithread_send_message(&j->thread->storage_receiver, &j->msg);
        } else {
            s_delete(c, j);
        }
        s_job_unref(j);
    }
    rf_s3c_destroy(&c);
    rf_sgfs_thread_end(); /* the S3 API's clients of S3-backed mounts (S_RUN) */
    if (efd >= 0)
        close(efd);
    return NULL;
}

/* ---- the stage ------------------------------------------------------------------- */

static void s_probe_hook_dispose(void *p)
{
    gw_sjob_t **hook = p;
    if (*hook != NULL) /* the request goes while its probe is out */
        (*hook)->rc = NULL, (*hook)->hook = NULL;
}

/* Queues an upload of obj to tier under key (owned). */
static void s_follow(gw_req_t *rc, rf_obj_t *obj, const rf_s3tier_conf_t *tier, const char *what, char *key)
{
    gw_storage_t *st = rc->thread->server->storage;
    gw_sjob_t *j = s_job_new(rc, S_UPLOAD, tier, what, obj, key);
    if (j == NULL || !s_push(&st->uploads, j)) {
        const char *l[] = {rc->vhost->name, what, "dropped"};
        rf_metric_add(gw_m.storage_uploads, l, 1);
        s_job_free(j);
    }
}

/* What a request that goes on to its origin or worker leaves to the upload
 * threads: the tier's copy (function results and plain objects) and the
 * backup (plain fills). */
static void s_follow_fill(gw_req_t *rc)
{
    rf_obj_t *o = rc->fill != NULL ? rc->fill : rc->obj;
    const rf_vhost_conf_t *vh = rc->vhost;
    if (vh->storage.s3 != NULL)
        s_follow(rc, o, &vh->storage, "storage", s_tier_key(&vh->storage, rc->key));
    if (vh->backup.s3 != NULL && rc->func == NULL)
        s_follow(rc, o, &vh->backup, "backup", s_backup_key(&vh->backup, rc));
}

static void s_go_on(gw_req_t *rc)
{
    if (rc->obj != NULL)
        gw_serve(rc);
    else
        gw_transform(rc);
}

int gw_storage(gw_req_t *rc)
{
    gw_storage_t *st = rc->thread->server->storage;
    const rf_vhost_conf_t *vh = rc->vhost;
    if (st == NULL || vh == NULL || (vh->storage.s3 == NULL && vh->backup.s3 == NULL))
        return 0;
    rf_obj_t *claimed = rc->fill != NULL ? rc->fill : rc->obj;
    if (claimed == NULL || (rc->role != GW_CACHE_CLAIM && rc->role != GW_CACHE_REFRESH))
        return 0;
    if (rc->role == GW_CACHE_REFRESH || vh->storage.s3 == NULL) {
        s_follow_fill(rc);
        return 0;
    }
    gw_sjob_t *j = s_job_new(rc, S_PROBE, &vh->storage, "storage", claimed, s_tier_key(&vh->storage, rc->key));
    gw_sjob_t **hook = j ? h2o_mem_alloc_shared(&rc->req->pool, sizeof(*hook), s_probe_hook_dispose) : NULL;
    if (hook != NULL) { /* all set before the job is visible to a probe thread */
        *hook = j;
        j->hook = hook;
        j->rc = rc;
        j->thread = rc->thread;
    }
    if (hook == NULL || !s_push(&st->probes, j)) {
        const char *l[] = {vh->name, "error"};
        rf_metric_add(gw_m.storage_lookups, l, 1);
        if (hook != NULL)
            *hook = NULL;
        s_job_free(j);
        s_follow_fill(rc); /* as a miss */
        return 0;
    }
    rc->cache_status = "refract; fwd=miss; detail=storage-lookup";
    return 1;
}

void gw_storage_on_probe(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages)
{
    (void)receiver;
    while (!h2o_linklist_is_empty(messages)) {
        gw_sjob_t *j = H2O_STRUCT_FROM_MEMBER(gw_sjob_t, msg.link, messages->next);
        h2o_linklist_unlink(&j->msg.link);
        if (j->kind == S_WARM) {
            j->done(j->done_arg, &j->result);
            s_job_unref(j);
            continue;
        }
        if (j->kind == S_RUN) {
            j->finish(j->run_arg);
            s_job_unref(j);
            continue;
        }
        gw_req_t *rc = j->rc;
        if (j->hook != NULL)
            *j->hook = NULL;
        j->rc = NULL;
        j->hook = NULL;
        if (rc == NULL) {
            if (!j->hit) /* nobody will fill it: the joiners fetch on their own */
                rf_obj_finish(j->obj, false);
        } else if (j->hit) {
            /* The probe thread fills the object: follow it like a joiner. */
            if (rc->fill != NULL) {
                rc->obj = rc->fill;
                rc->fill = NULL;
            }
            rc->role = GW_CACHE_JOIN;
            rc->storage_hit = 1;
            rc->cache_result = "storage-hit";
            gw_serve(rc);
        } else {
            rc->cache_status = "refract; fwd=miss";
            s_follow_fill(rc);
            s_go_on(rc);
        }
        s_job_unref(j);
    }
}

void gw_storage_purge(gw_storage_t *st, const rf_vhost_conf_t *vh, gw_vhosts_t *vhosts, const char *url,
                      const char *asked)
{
    if (st == NULL || vh->storage.s3 == NULL)
        return;
    char group[RF_PATH_MAX + 2400];
    int gl = snprintf(group, sizeof(group), "%s\n%s", vh->name, url);
    gw_sjob_t *j = calloc(1, sizeof(*j));
    if (j == NULL || gl < 0 || (size_t)gl >= sizeof(group) ||
        asprintf(&j->key, "%s%016" PRIx64 "/", vh->storage.prefix, XXH3_64bits(group, (size_t)gl)) < 0) {
        free(j);
        return;
    }
    j->kind = S_DELETE;
    j->what = "storage";
    j->url = strdup(asked);
    j->vhosts = vhosts;
    gw_vhosts_ref(vhosts);
    j->vhost = vh;
    j->ep = &vh->storage.ep;
    atomic_init(&j->refs, 1);
    if (!s_push(&st->uploads, j))
        s_job_free(j);
}

int gw_storage_warm(gw_storage_t *st, gw_thread_t *thread, const char *url, const char *host, const char *request_id,
                    gw_warm_done_fn *done, void *arg)
{
    gw_sjob_t *j = st ? calloc(1, sizeof(*j)) : NULL;
    if (j == NULL || (j->url = strdup(url)) == NULL || (j->host = strdup(host)) == NULL) {
        s_job_free(j);
        return -1;
    }
    j->kind = S_WARM;
    j->thread = thread;
    j->done = done;
    j->done_arg = arg;
    snprintf(j->request_id, sizeof(j->request_id), "%s", request_id);
    atomic_init(&j->refs, 1);
    if (!s_push(&st->uploads, j)) {
        s_job_free(j);
        return -1;
    }
    return 0;
}

int gw_storage_offload(gw_storage_t *st, void *thread, void (*work)(void *arg), void (*finish)(void *arg), void *arg)
{
    gw_sjob_t *j = st ? calloc(1, sizeof(*j)) : NULL;
    if (j == NULL)
        return -1;
    j->kind = S_RUN;
    j->thread = thread;
    j->work = work;
    j->finish = finish;
    j->run_arg = arg;
    atomic_init(&j->refs, 1);
    if (!s_push(&st->probes, j)) {
        free(j);
        return -1;
    }
    return 0;
}

/* ---- lifetime -------------------------------------------------------------------- */

static int s_pool_start(gw_storage_t *st, s_pool_t *p, size_t n, s_kind_t serves)
{
    p->st = st;
    p->serves = serves;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    if ((p->tids = calloc(n, sizeof(*p->tids))) == NULL)
        return -1;
    for (; p->nthreads < n; p->nthreads++)
        if (pthread_create(&p->tids[p->nthreads], NULL, s_thread, p) != 0)
            return -1;
    return 0;
}

static void s_pool_stop(s_pool_t *p)
{
    pthread_mutex_lock(&p->mu);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (size_t i = 0; i < p->nthreads; i++)
        pthread_join(p->tids[i], NULL);
    free(p->tids);
    for (gw_sjob_t *j = p->head, *next; j != NULL; j = next) {
        next = j->next;
        s_job_free(j);
    }
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
}

gw_storage_t *gw_storage_new(const char *state_dir)
{
    gw_storage_t *st = calloc(1, sizeof(*st));
    if (st == NULL)
        return NULL;
    snprintf(st->outbox_in, sizeof(st->outbox_in), "%s/%s", state_dir, RF_OUTBOX_IN_DIR);
    atomic_init(&st->stop, false);
    if (s_pool_start(st, &st->probes, GW_STORAGE_PROBERS, S_PROBE) < 0 ||
        s_pool_start(st, &st->uploads, GW_STORAGE_UPLOADERS, S_UPLOAD) < 0) {
        gw_storage_destroy(&st);
        return NULL;
    }
    return st;
}

void gw_storage_destroy(gw_storage_t **st_p)
{
    gw_storage_t *st = *st_p;
    if (st == NULL)
        return;
    atomic_store(&st->stop, true);
    if (st->probes.tids != NULL)
        s_pool_stop(&st->probes);
    if (st->uploads.tids != NULL)
        s_pool_stop(&st->uploads);
    free(st);
    *st_p = NULL;
}
