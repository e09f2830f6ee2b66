/*  gw_s3_ops — the S3 operations on a bucket's path space (gw_s3.h).
 *
 *  Each operation checks the bucket's access rule, resolves the key with
 *  rf_sgfs (hidden mounts: invisible to reads, refused to writes), does its
 *  work and answers. Buckets are declared in the configuration: creating
 *  an existing one succeeds (as S3 does for its owner), creating or
 *  deleting others is refused.
 */
#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "gw.h"
#include "gw_http_parse.h"
#include "gw_metrics.h"
#include "gw_s3.h"
#include "rf_log.h"
#include "rf_s3xml.h"
#include "rf_sgevent.h"

#define S_XMLNS "xmlns=\"" RF_S3XML_NS "\""
#define S_MIN_PART ((uint64_t)5 << 20) /* S3's smallest part but the last */

static bool s_method(const gw_s3_req_t *r, const char *m)
{
    return h2o_memis(r->req->method.base, r->req->method.len, m, strlen(m));
}

/* Subresources S3 has and this API does not serve. */
static const char *s_unsupported(const gw_s3_req_t *r)
{
    static const char *const names[] = {"acl", "policy", "cors", "lifecycle", "tagging", "website", "logging",
                                        "notification", "encryption", "object-lock", "replication", "retention",
                                        "legal-hold", "ownershipControls", "publicAccessBlock", "requestPayment",
                                        "accelerate", "analytics", "inventory", "metrics", "intelligent-tiering",
                                        "torrent", "restore", "select", "attributes", "policyStatus",
                                        /* not a ListObjects answer: a client would read "no versions" */
                                        "versions", NULL};
    for (int i = 0; names[i]; i++)
        if (gw_s3_param(r, names[i]) != NULL)
            return names[i];
    return NULL;
}

/* Answers AccessDenied unless the bucket allows `what` (get, put, delete). */
static bool s_allowed(gw_s3_req_t *r, const rf_sg_bucket_t *b, const char *what)
{
    bool ok = strcmp(what, "get") == 0 ? b->get : strcmp(what, "put") == 0 ? b->put : b->del;
    if (!ok)
        gw_s3_error(r, "AccessDenied", "bucket '%s' does not allow %s (access.%s.enable is false)", b->name, what,
                    what);
    return ok;
}

/* Resolves r->key; answers and returns -1 when it cannot. */
static int s_resolve(gw_s3_req_t *r, const rf_sg_bucket_t *b, const char *key, size_t klen, bool write,
                     rf_sgfs_loc_t *loc)
{
    const char *why = NULL;
    int rc = rf_sgfs_resolve(b, key, klen, write, r->s3_ok ? RF_SGFS_S3_OK : 0, loc, &why);
    if (rc == 0)
        return 0;
    if (rc == -2)
        gw_s3_error(r, write ? "AccessDenied" : "NoSuchKey", write ? "%s" : "the specified key does not exist", why);
    else if (klen > RF_SGFS_KEY_MAX)
        gw_s3_error(r, "KeyTooLongError", "%s", why);
    else
        gw_s3_error(r, write ? "InvalidArgument" : "NoSuchKey", "%s", why ? why : "invalid key");
    return -1;
}

/* Answers a failure to publish an object at a key, from errno
 * (rf_sgfs_put_check, rf_sgfs_put_commit). */
static void s_store_error(gw_s3_req_t *r, int e)
{
    if (e == EXDEV || e == ELOOP)
        gw_s3_error(r, "AccessDenied", "the path leaves the mount (a symlink escape)");
    else if (e == EEXIST)
        gw_s3_error(r, "PreconditionFailed", "an object has this key already (If-None-Match: *)");
    else if (e == ECANCELED)
        gw_s3_error(r, "PreconditionFailed", "the object's ETag is not the one If-Match names");
    else if (e == ENOENT && gw_s3_header(r, "if-match", &(size_t){0}) != NULL)
        gw_s3_error(r, "NoSuchKey", "If-Match names an object that does not exist");
    else if (e == ENOTSUP)
        gw_s3_error(r, "NotImplemented", "conditional writes are not supported on an S3-backed mount");
    else if (e == EISDIR || e == ENOTDIR)
        gw_s3_error(r, "InvalidRequest", "cannot store the object: %s",
                    "a directory of the mount has this name (a file mount cannot hold both KEY and KEY/…)");
    else
        gw_s3_error(r, "InternalError", "cannot store the object: %s", strerror(e));
}

/* Resolves r->key for writing and checks that an object can be published
 * there, before any body is read; -1 after answering. */
static int s_resolve_put(gw_s3_req_t *r, rf_sgfs_loc_t *loc)
{
    if (s_resolve(r, r->bucket, r->key, r->key_len, true, loc) < 0)
        return -1;
    if (rf_sgfs_put_check(loc) < 0) {
        s_store_error(r, errno);
        return -1;
    }
    return 0;
}

static void s_etag_header(gw_s3_req_t *r, const char *etag)
{
    char q[56];
    snprintf(q, sizeof(q), "\"%s\"", etag);
    gw_s3_set_header(r, "etag", q);
}

/* The standard headers S3 keeps with an object and answers with on GET
 * and HEAD, besides Content-Type (which has a field of its own). */
static bool s_kept_header(const h2o_header_t *h)
{
    static const char *const names[] = {
        "cache-control", "content-disposition", "content-encoding", "content-language", "expires", NULL};
    for (int i = 0; names[i]; i++)
        if (h2o_memis(h->name->base, h->name->len, names[i], strlen(names[i])))
            return true;
    return false;
}

/* Content-Encoding without "aws-chunked" (the framing of this request's
 * body, not a coding of the object: S3 drops it) into out; its length. */
static size_t s_object_encoding(const char *v, size_t len, char *out, size_t cap)
{
    size_t n = 0;
    for (size_t i = 0; i < len;) {
        size_t j = i;
        while (j < len && v[j] != ',')
            j++;
        size_t a = i, b = j;
        while (a < b && (v[a] == ' ' || v[a] == '\t'))
            a++;
        while (b > a && (v[b - 1] == ' ' || v[b - 1] == '\t'))
            b--;
        if (b > a && !(b - a == 11 && strncasecmp(v + a, "aws-chunked", 11) == 0) && n + (b - a) + 2 < cap) {
            if (n > 0)
                out[n++] = ',';
            memcpy(out + n, v + a, b - a);
            n += b - a;
        }
        i = j + 1;
    }
    out[n] = '\0';
    return n;
}

/* The request's x-amz-meta-* headers and the standard headers S3 keeps
 * (Cache-Control, Content-Disposition, Content-Encoding, Content-Language,
 * Expires) as "name: value\n" lines; rf_sgfs stores them and a GET answers
 * with each line as a header. -1 after answering. */
static int s_meta_lines(gw_s3_req_t *r, char *out, size_t cap)
{
    size_t n = 0;
    out[0] = '\0';
    for (size_t i = 0; i < r->req->headers.size; i++) {
        h2o_header_t *h = &r->req->headers.entries[i];
        bool user = h->name->len > 11 && h2o_memis(h->name->base, 11, H2O_STRLIT("x-amz-meta-"));
        if (!user && !s_kept_header(h))
            continue;
        if (memchr(h->value.base, '\n', h->value.len) != NULL) {
            gw_s3_error(r, "InvalidArgument", "a metadata value may not hold a line break");
            return -1;
        }
        const char *val = h->value.base;
        size_t vl = h->value.len;
        char enc[256];
        if (h2o_memis(h->name->base, h->name->len, H2O_STRLIT("content-encoding"))) {
            if (vl >= sizeof(enc) || (vl = s_object_encoding(val, vl, enc, sizeof(enc))) == 0)
                continue;
            val = enc;
        }
        int w = snprintf(out + n, cap - n, "%.*s: %.*s\n", (int)h->name->len, h->name->base, (int)vl, val);
        if (w < 0 || (size_t)w >= cap - n) {
            gw_s3_error(r, "MetadataTooLarge", "x-amz-meta-* and the kept headers exceed %zu bytes", cap - 1);
            return -1;
        }
        n += (size_t)w;
    }
    return 0;
}

static const char *s_content_type(gw_s3_req_t *r, char *buf, size_t cap)
{
    size_t l;
    const char *v = gw_s3_header(r, "content-type", &l);
    if (v == NULL || l == 0 || l >= cap || memchr(v, '\n', l) != NULL)
        return NULL;
    memcpy(buf, v, l);
    buf[l] = '\0';
    return buf;
}

/* ---- the service and buckets ------------------------------------------------------------ */

static int64_t s_dir_mtime_ns(const rf_sg_bucket_t *b)
{
    struct stat st;
    for (size_t i = 0; i < b->n_mounts; i++)
        if (b->mounts[i].kind == RF_SG_MOUNT_LOCAL && stat(b->mounts[i].dir, &st) == 0)
            return (int64_t)st.st_mtim.tv_sec * 1000000000;
    return 0;
}

void gw_s3_list_buckets(gw_s3_req_t *r)
{
    rf_xml_t x;
    rf_xml_init(&x);
    rf_xml_open(&x, "ListAllMyBucketsResult", S_XMLNS);
    rf_xml_open(&x, "Owner", NULL);
    rf_xml_textf(&x, "ID", "%s", r->auth.access_key);
    rf_xml_textf(&x, "DisplayName", "%s", r->auth.access_key);
    rf_xml_close(&x);
    rf_xml_open(&x, "Buckets", NULL);
    for (size_t i = 0; i < r->sc->n_buckets; i++) {
        const rf_sg_bucket_t *b = &r->sc->buckets[i];
        if (!b->enable || !b->expose)
            continue;
        char t[32];
        gw_s3_iso_time(s_dir_mtime_ns(b), t);
        rf_xml_open(&x, "Bucket", NULL);
        rf_xml_textf(&x, "Name", "%s", b->name);
        rf_xml_textf(&x, "CreationDate", "%s", t);
        rf_xml_close(&x);
    }
    size_t len = 0;
    char *doc = rf_xml_finish(&x, &len);
    gw_s3_xml(r, 200, doc, len);
}

/* Writes text (a key or prefix) as element tag, percent-encoded for encoding-type=url. */
static void s_xml_key(rf_xml_t *x, const char *tag, const char *text, bool url)
{
    size_t l = strlen(text);
    if (!url) {
        rf_xml_text(x, tag, text, l);
        return;
    }
    char buf[3 * RF_SGFS_KEY_MAX + 4];
    size_t n = rf_s3_urlencode(text, l, buf, sizeof(buf), true);
    rf_xml_text(x, tag, n < sizeof(buf) ? buf : "", n < sizeof(buf) ? n : 0);
}

static bool s_b64url_token(const char *tok, char *out, size_t cap)
{
    size_t l = strlen(tok);
    if (l == 0 || l % 4 != 0 || l / 4 * 3 >= cap)
        return false;
    int n = EVP_DecodeBlock((unsigned char *)out, (const unsigned char *)tok, (int)l);
    if (n < 0)
        return false;
    while (l > 0 && tok[l - 1] == '=')
        l--, n--;
    out[n] = '\0';
    return strlen(out) == (size_t)n;
}

/* A listing's parsed request, kept for its answer (in the request pool). */
typedef struct {
    bool v2, url;
    const char *prefix, *delim, *token, *after;
    long max;
    char tok_after[RF_SGFS_KEY_MAX + 8];
} s_list_q_t;

/* The ListBucketResult of l (cleared here). */
static void s_list_answer(gw_s3_req_t *r, const s_list_q_t *q, rf_sgfs_list_t *l)
{
    rf_xml_t x;
    rf_xml_init(&x);
    rf_xml_open(&x, "ListBucketResult", S_XMLNS);
    rf_xml_textf(&x, "Name", "%s", r->bucket->name);
    s_xml_key(&x, "Prefix", q->prefix ? q->prefix : "", q->url);
    if (q->v2) {
        size_t n = 0;
        for (size_t i = 0; i < l->n; i++)
            n++;
        rf_xml_textf(&x, "KeyCount", "%zu", n);
        if (q->token != NULL)
            rf_xml_textf(&x, "ContinuationToken", "%s", q->token);
        if (gw_s3_param(r, "start-after") != NULL)
            s_xml_key(&x, "StartAfter", gw_s3_param(r, "start-after"), q->url);
    } else {
        s_xml_key(&x, "Marker", q->after ? q->after : "", q->url);
    }
    rf_xml_textf(&x, "MaxKeys", "%ld", q->max);
    if (q->delim != NULL)
        s_xml_key(&x, "Delimiter", q->delim, q->url);
    rf_xml_textf(&x, "IsTruncated", "%s", l->truncated ? "true" : "false");
    if (l->truncated && l->n > 0) {
        const char *last = l->e[l->n - 1].key;
        if (q->v2) {
            size_t ll = strlen(last);
            char *tok = malloc(4 * ((ll + 2) / 3) + 1);
            if (tok != NULL) {
                EVP_EncodeBlock((unsigned char *)tok, (const unsigned char *)last, (int)ll);
                rf_xml_textf(&x, "NextContinuationToken", "%s", tok);
                free(tok);
            }
        } else {
            s_xml_key(&x, "NextMarker", last, q->url);
        }
    }
    if (q->url)
        rf_xml_textf(&x, "EncodingType", "url");
    for (size_t i = 0; i < l->n; i++) {
        if (l->e[i].prefix)
            continue;
        char t[32];
        gw_s3_iso_time(l->e[i].mtime_ns, t);
        rf_xml_open(&x, "Contents", NULL);
        s_xml_key(&x, "Key", l->e[i].key, q->url);
        rf_xml_textf(&x, "LastModified", "%s", t);
        rf_xml_textf(&x, "ETag", "\"%s\"", l->e[i].etag);
        rf_xml_textf(&x, "Size", "%llu", (unsigned long long)l->e[i].size);
        rf_xml_textf(&x, "StorageClass", "STANDARD");
        if (!q->v2 || gw_s3_param(r, "fetch-owner") != NULL) {
            rf_xml_open(&x, "Owner", NULL);
            rf_xml_textf(&x, "ID", "%s", r->auth.access_key);
            rf_xml_textf(&x, "DisplayName", "%s", r->auth.access_key);
            rf_xml_close(&x);
        }
        rf_xml_close(&x);
    }
    for (size_t i = 0; i < l->n; i++) {
        if (!l->e[i].prefix)
            continue;
        rf_xml_open(&x, "CommonPrefixes", NULL);
        s_xml_key(&x, "Prefix", l->e[i].key, q->url);
        rf_xml_close(&x);
    }
    rf_sgfs_list_clear(l);
    size_t len = 0;
    char *doc = rf_xml_finish(&x, &len);
    gw_s3_xml(r, 200, doc, len);
}

static void s_offload_list(gw_s3_req_t *r, s_list_q_t *q);

static void s_list_objects(gw_s3_req_t *r, bool v2)
{
    r->op = v2 ? "ListObjectsV2" : "ListObjects";
    const rf_sg_bucket_t *b = r->bucket;
    if (!s_allowed(r, b, "get"))
        return;
    const char *prefix = gw_s3_param(r, "prefix"), *delim = gw_s3_param(r, "delimiter");
    const char *enc = gw_s3_param(r, "encoding-type"), *mk = gw_s3_param(r, "max-keys");
    const char *token = v2 ? gw_s3_param(r, "continuation-token") : NULL;
    const char *after = v2 ? gw_s3_param(r, "start-after") : gw_s3_param(r, "marker");
    bool url = enc != NULL && strcmp(enc, "url") == 0;
    if (enc != NULL && !url) {
        gw_s3_error(r, "InvalidArgument", "encoding-type must be url");
        return;
    }
    long max = 1000;
    if (mk != NULL) {
        char *end;
        max = strtol(mk, &end, 10);
        if (*mk == '\0' || *end != '\0' || max < 0) {
            gw_s3_error(r, "InvalidArgument", "max-keys must be a non-negative integer");
            return;
        }
        if (max > 1000)
            max = 1000;
    }
    s_list_q_t *q = h2o_mem_alloc_pool(&r->req->pool, sizeof(*q));
    if (token != NULL) {
        if (!s_b64url_token(token, q->tok_after, sizeof(q->tok_after))) {
            gw_s3_error(r, "InvalidArgument", "the continuation token provided is incorrect");
            return;
        }
        after = q->tok_after;
    }
    q->v2 = v2;
    q->url = url;
    q->prefix = prefix;
    q->delim = delim;
    q->token = token;
    q->after = after;
    q->max = max;
    if (max > 0 && rf_sgfs_lists_s3(b)) { /* an S3-backed mount's page is a blocking call */
        s_offload_list(r, q);
        return;
    }
    rf_sgfs_list_t l = {0};
    if (max > 0 && rf_sgfs_list(b, prefix ? prefix : "", delim, after ? after : "", (size_t)max, &l) < 0) {
        gw_s3_error(r, "InternalError", "cannot list: %s", strerror(errno));
        return;
    }
    s_list_answer(r, q, &l);
}

/* Whether upload u comes after the markers (S3: key-marker alone skips
 * every upload of keys up to it; with upload-id-marker, the uploads of
 * key-marker itself after that id remain). */
static bool s_after_markers(const rf_sgfs_upload_t *u, const char *km, const char *im)
{
    if (km == NULL || km[0] == '\0')
        return true;
    int c = strcmp(u->key, km);
    return c > 0 || (c == 0 && im != NULL && im[0] != '\0' && strcmp(u->id, im) > 0);
}

static void s_list_uploads(gw_s3_req_t *r)
{
    r->op = "ListMultipartUploads";
    if (!s_allowed(r, r->bucket, "get"))
        return;
    const char *prefix = gw_s3_param(r, "prefix");
    const char *mu = gw_s3_param(r, "max-uploads");
    const char *km = gw_s3_param(r, "key-marker"), *im = gw_s3_param(r, "upload-id-marker");
    long max = mu ? strtol(mu, NULL, 10) : 1000;
    if (max < 1 || max > 1000)
        max = 1000;
    /* all of them (rf_sgfs reads every upload to sort them anyway), then the
     * page after the markers: a truncated answer names where to go on */
    rf_sgfs_upload_t *u = NULL;
    size_t n = 0;
    bool all_trunc = false;
    if (rf_sgfs_mpu_list(r->bucket, prefix ? prefix : "", SIZE_MAX, &u, &n, &all_trunc) < 0) {
        gw_s3_error(r, "InternalError", "cannot list the uploads: %s", strerror(errno));
        return;
    }
    size_t first = 0;
    while (first < n && !s_after_markers(&u[first], km, im))
        first++;
    size_t last = first + (size_t)max < n ? first + (size_t)max : n;
    bool trunc = last < n;
    rf_xml_t x;
    rf_xml_init(&x);
    rf_xml_open(&x, "ListMultipartUploadsResult", S_XMLNS);
    rf_xml_textf(&x, "Bucket", "%s", r->bucket->name);
    rf_xml_text(&x, "KeyMarker", km ? km : "", km ? strlen(km) : 0);
    rf_xml_text(&x, "UploadIdMarker", im ? im : "", im ? strlen(im) : 0);
    if (trunc) {
        rf_xml_text(&x, "NextKeyMarker", u[last - 1].key, strlen(u[last - 1].key));
        rf_xml_textf(&x, "NextUploadIdMarker", "%s", u[last - 1].id);
    }
    if (prefix != NULL)
        rf_xml_text(&x, "Prefix", prefix, strlen(prefix));
    rf_xml_textf(&x, "MaxUploads", "%ld", max);
    rf_xml_textf(&x, "IsTruncated", "%s", trunc ? "true" : "false");
    for (size_t i = first; i < last; i++) {
        char t[32];
        gw_s3_iso_time(u[i].initiated_ns, t);
        rf_xml_open(&x, "Upload", NULL);
        rf_xml_text(&x, "Key", u[i].key, strlen(u[i].key));
        rf_xml_textf(&x, "UploadId", "%s", u[i].id);
        rf_xml_textf(&x, "StorageClass", "STANDARD");
        rf_xml_textf(&x, "Initiated", "%s", t);
        rf_xml_close(&x);
    }
    rf_sgfs_uploads_free(u, n);
    size_t len = 0;
    char *doc = rf_xml_finish(&x, &len);
    gw_s3_xml(r, 200, doc, len);
}

/* Deletes key from each root mount that holds it (a copy left in another
 * would show through). 1 (deleted), 0 (nothing there), -1 impossible key
 * (no object: fine), -2 hidden (*why), -3 failed (errno). */
static int s_delete_key(const rf_sg_bucket_t *b, const char *key, size_t klen, const char **why)
{
    int deleted = 0;
    for (size_t i = 0; i <= b->n_mounts; i++) { /* bounded: one mount per round */
        rf_sgfs_loc_t loc;
        rf_sgfs_stat_t st;
        int rc = rf_sgfs_resolve(b, key, klen, false, false, &loc, why);
        if (rc < 0)
            return rc;
        /* nothing there (the mount it fell back to lacks it too) — but a
         * symlink that leaves the mount is removed (the link, not its target) */
        if (rf_sgfs_stat(&loc, &st) < 0 && errno != EXDEV && errno != ELOOP)
            return deleted;
        if (rf_sgfs_delete(&loc) < 0)
            return -3;
        deleted = 1;
    }
    return deleted;
}

/* The bucket's event of kind (onPut, onGet, onDelete). */
static const rf_sg_event_t *s_event(const rf_sg_bucket_t *b, const char *kind)
{
    return strcmp(kind, "onPut") == 0 ? &b->on_put : strcmp(kind, "onGet") == 0 ? &b->on_get : &b->on_delete;
}

/* Raises a bucket event for the scheduler (rf_sgevent: a file in
 * STATE/events that waits for it) when the bucket's event is enabled,
 * names a workflow and its filter passes, and the request has not raised
 * it already (timing pre). A failure to write the event is logged, not
 * answered. The event's id goes back in X-Refract-Event (answer headers
 * not sent yet) and, when id_out is given, to the caller. 1 raised, 0 not. */
static int s_raise_id(gw_s3_req_t *r, const char *kind, const char *key, int64_t size, int64_t mtime_s,
                      const char *etag, bool header, char *id_out, size_t id_len)
{
    const rf_sg_bucket_t *b = r->bucket;
    const rf_sg_event_t *ev = s_event(b, kind);
    int64_t now = (int64_t)time(NULL);
    if (r->pre_done || !ev->enable || ev->workflow == NULL || !rf_sgevent_filter_ok(ev, key, size, mtime_s, now))
        return 0;
    char id[64];
    if (rf_sgevent_write(r->state_dir, kind, b->name, key, size, etag, id, sizeof(id)) < 0) {
        rf_error("s3 %s: cannot raise %s for %s/%.200s in %s: %s", r->request_id, kind, b->name, key, r->state_dir,
                 strerror(errno));
        return 0;
    }
    if (header)
        gw_s3_set_header(r, "x-refract-event", id);
    if (id_out != NULL)
        snprintf(id_out, id_len, "%s", id);
    return 1;
}

static void s_raise(gw_s3_req_t *r, const char *kind, const char *key, int64_t size, int64_t mtime_s, const char *etag,
                    bool header)
{
    s_raise_id(r, kind, key, size, mtime_s, etag, header, NULL, 0);
}

/* ---- timing: pre ------------------------------------------------------------------------------
 *
 * The seed's "pre": the workflow runs first, then the client's request is
 * answered. The event is raised as for post (a file in STATE/events); the
 * answer is held, on the request's loop, until the scheduler has finished
 * the workflow (it removes the file then, done or aborted), for at most
 * the workflow's task timeouts plus 5 s (S_PRE_MAX_MS in all). Then the
 * request goes on with X-Refract-Workflow: finished, or pending when the
 * wait ran out (the workflow still runs, as post). onGet and onDelete
 * wait before the object is read or removed, onPut once it is stored. */
#define S_PRE_MAX_MS 120000

typedef void (*s_pre_then_fn)(gw_s3_req_t *r, void *arg);

typedef struct {
    gw_s3_req_t *r;
    h2o_timeout_entry_t timer;
    char path[700]; /* STATE/events/ID.json: gone once the workflow is over */
    uint64_t deadline;
    s_pre_then_fn then;
    void *arg;
} s_pre_t;

static void s_pre_dispose(void *p)
{
    s_pre_t *w = p;
    if (h2o_timeout_is_linked(&w->timer))
        h2o_timeout_unlink(&w->timer);
}

static void s_pre_check(h2o_timeout_entry_t *e)
{
    s_pre_t *w = H2O_STRUCT_FROM_MEMBER(s_pre_t, timer, e);
    gw_thread_t *t = w->r->thread;
    bool over = access(w->path, F_OK) != 0 && errno == ENOENT;
    if (!over && h2o_now(t->ctx.loop) < w->deadline) {
        h2o_timeout_link(t->ctx.loop, &t->sg_wait_timeout, &w->timer);
        return;
    }
    gw_s3_set_header(w->r, "x-refract-workflow", over ? "finished" : "pending");
    if (!over)
        rf_warn("s3 %s: the pre workflow of %s did not finish in time: answering, it goes on", w->r->request_id,
                w->path);
    w->r->pre_done = true;
    w->then(w->r, w->arg);
}

/* Whether the bucket's `kind` event is pre and would pass for key: if so,
 * raises it, holds the request until the workflow is over and returns
 * true; then(r, arg) goes on with the request (r->pre_done set, so the
 * operation raises nothing again). false: nothing held, carry on. */
static bool s_pre(gw_s3_req_t *r, const char *kind, const char *key, int64_t size, int64_t mtime_s, const char *etag,
                  s_pre_then_fn then, void *arg)
{
    const rf_sg_event_t *ev = s_event(r->bucket, kind);
    char id[64];
    if (!ev->pre || r->pre_done || !s_raise_id(r, kind, key, size, mtime_s, etag, true, id, sizeof(id)))
        return false;
    s_pre_t *w = h2o_mem_alloc_shared(&r->req->pool, sizeof(*w), s_pre_dispose);
    memset(w, 0, sizeof(*w));
    w->r = r;
    w->then = then;
    w->arg = arg;
    w->timer.cb = s_pre_check;
    snprintf(w->path, sizeof(w->path), "%s/%s/%s.json", r->state_dir, RF_SGEVENT_DIR, id);
    int64_t ms = 5000;
    for (size_t i = 0; i < r->bucket->n_workflows; i++)
        if (strcmp(r->bucket->workflows[i].name, ev->workflow) == 0)
            for (size_t k = 0; k < r->bucket->workflows[i].n_tasks; k++)
                ms += (int64_t)r->bucket->workflows[i].tasks[k].timeout_s * 1000;
    gw_thread_t *t = r->thread;
    w->deadline = h2o_now(t->ctx.loop) + (uint64_t)(ms < S_PRE_MAX_MS ? ms : S_PRE_MAX_MS);
    h2o_timeout_link(t->ctx.loop, &t->sg_wait_timeout, &w->timer);
    return true;
}

static void s_delete_objects(gw_s3_req_t *r)
{
    r->op = "DeleteObjects";
    if (!s_allowed(r, r->bucket, "delete"))
        return;
    char *body;
    size_t blen;
    if (gw_s3_body_small(r, RF_S3XML_DELETE_BODY_MAX, &body, &blen) < 0)
        return;
    rf_s3xml_delete_t d = {0};
    const char *code = NULL;
    char why[200] = "";
    if (rf_s3xml_parse_delete(body, blen, &d, &code, why, sizeof(why)) < 0) {
        gw_s3_error(r, code ? code : "MalformedXML", "%s", why);
        return;
    }
    rf_xml_t x;
    rf_xml_init(&x);
    rf_xml_open(&x, "DeleteResult", S_XMLNS);
    for (size_t i = 0; i < d.n; i++) {
        const char *key = d.objs[i].key, *kwhy = NULL;
        int rc = s_delete_key(r->bucket, key, strlen(key), &kwhy);
        const char *ecode = NULL, *emsg = NULL;
        if (rc == -2)
            ecode = "AccessDenied", emsg = kwhy;
        else if (rc == -3)
            ecode = "InternalError", emsg = strerror(errno);
        /* rc == -1: an impossible key holds no object; deleting it succeeds, as in S3 */
        if (ecode != NULL) {
            rf_xml_open(&x, "Error", NULL);
            rf_xml_text(&x, "Key", key, strlen(key));
            rf_xml_textf(&x, "Code", "%s", ecode);
            rf_xml_textf(&x, "Message", "%s", emsg ? emsg : "");
            rf_xml_close(&x);
        } else {
            if (rc == 1)
                s_raise(r, "onDelete", key, -1, -1, NULL, false);
            if (!d.quiet) {
                rf_xml_open(&x, "Deleted", NULL);
                rf_xml_text(&x, "Key", key, strlen(key));
                rf_xml_close(&x);
            }
        }
    }
    rf_s3xml_delete_clear(&d);
    size_t len = 0;
    char *doc = rf_xml_finish(&x, &len);
    gw_s3_xml(r, 200, doc, len);
}

void gw_s3_bucket_op(gw_s3_req_t *r)
{
    const rf_sg_bucket_t *b = r->bucket;
    const char *sub = s_unsupported(r);
    if (sub != NULL) {
        r->op = "Unsupported";
        gw_s3_error(r, "NotImplemented", "the ?%s subresource is not supported", sub);
        return;
    }
    if (s_method(r, "HEAD")) {
        r->op = "HeadBucket";
        gw_s3_set_header(r, "x-amz-bucket-region", b->region);
        gw_s3_empty(r, 200);
    } else if (s_method(r, "GET")) {
        if (gw_s3_param(r, "location") != NULL) {
            r->op = "GetBucketLocation";
            rf_xml_t x;
            rf_xml_init(&x);
            /* us-east-1 is written as an empty constraint */
            const char *reg = strcmp(b->region, "us-east-1") == 0 ? "" : b->region;
            rf_xml_open(&x, "LocationConstraint", S_XMLNS);
            rf_xml_close(&x);
            size_t len = 0;
            char *doc = rf_xml_finish(&x, &len);
            if (doc != NULL && reg[0] != '\0') { /* <LocationConstraint …>REGION</LocationConstraint> */
                char *alt = NULL;
                if (asprintf(
                        &alt,
                        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<LocationConstraint %s>%s</LocationConstraint>",
                        S_XMLNS, reg) > 0) {
                    free(doc);
                    doc = alt;
                    len = strlen(alt);
                }
            }
            gw_s3_xml(r, 200, doc, len);
        } else if (gw_s3_param(r, "versioning") != NULL) {
            r->op = "GetBucketVersioning";
            rf_xml_t x;
            rf_xml_init(&x);
            rf_xml_open(&x, "VersioningConfiguration", S_XMLNS);
            size_t len = 0;
            char *doc = rf_xml_finish(&x, &len);
            gw_s3_xml(r, 200, doc, len);
        } else if (gw_s3_param(r, "uploads") != NULL) {
            s_list_uploads(r);
        } else {
            const char *lt = gw_s3_param(r, "list-type");
            s_list_objects(r, lt != NULL && strcmp(lt, "2") == 0);
        }
    } else if (s_method(r, "PUT")) {
        r->op = "CreateBucket";
        /* buckets are declared in the configuration: this one exists and is ours */
        gw_s3_set_header(r, "location", r->bucket_name);
        gw_s3_empty(r, 200);
    } else if (s_method(r, "POST") && gw_s3_param(r, "delete") != NULL) {
        s_delete_objects(r);
    } else if (s_method(r, "DELETE")) {
        r->op = "DeleteBucket";
        gw_s3_error(r, "MethodNotAllowed", "buckets are declared in storgate.buckets, not deleted through the API");
    } else {
        r->op = "Unsupported";
        gw_s3_error(r, "MethodNotAllowed", "the method is not allowed on a bucket");
    }
}

/* ---- objects --------------------------------------------------------------------------------- */

static int64_t s_http_date(const char *v, size_t len)
{
    char buf[64];
    if (len >= sizeof(buf))
        return -1;
    memcpy(buf, v, len);
    buf[len] = '\0';
    struct tm tm = {0};
    const char *end = strptime(buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    if (end == NULL || *end != '\0')
        return -1;
    return (int64_t)timegm(&tm);
}

/* The conditional headers of GET and HEAD: 0 go on, -1 answered (304 or 412). */
static int s_conditions(gw_s3_req_t *r, const rf_sgfs_stat_t *st)
{
    char etag[56];
    int el = snprintf(etag, sizeof(etag), "\"%s\"", st->etag);
    int64_t mtime = st->mtime_ns / 1000000000;
    size_t l;
    const char *im = gw_s3_header(r, "if-match", &l);
    if (im != NULL && !gw_etag_in(im, l, etag, (size_t)el)) {
        gw_s3_error(r, "PreconditionFailed", "If-Match does not hold the object's ETag");
        return -1;
    }
    const char *ius = gw_s3_header(r, "if-unmodified-since", &l);
    int64_t d;
    if (im == NULL && ius != NULL && (d = s_http_date(ius, l)) >= 0 && mtime > d) {
        gw_s3_error(r, "PreconditionFailed", "the object was modified after If-Unmodified-Since");
        return -1;
    }
    const char *inm = gw_s3_header(r, "if-none-match", &l);
    const char *ims = NULL;
    size_t imsl = 0;
    bool not_modified = false;
    if (inm != NULL)
        not_modified = gw_etag_in(inm, l, etag, (size_t)el);
    else if ((ims = gw_s3_header(r, "if-modified-since", &imsl)) != NULL && (d = s_http_date(ims, imsl)) >= 0)
        not_modified = mtime <= d;
    if (not_modified) {
        s_etag_header(r, st->etag);
        gw_s3_empty(r, 304);
        return -1;
    }
    return 0;
}

/* Object headers: ETag, Last-Modified, Content-Type, x-amz-meta-*. */
static void s_object_headers(gw_s3_req_t *r, const rf_sgfs_stat_t *st)
{
    char t[40];
    s_etag_header(r, st->etag);
    gw_s3_http_time(st->mtime_ns, t);
    gw_s3_set_header(r, "last-modified", t);
    gw_s3_set_header(r, "accept-ranges", "bytes");
    const char *ct = st->content_type[0] ? st->content_type : NULL;
    if (ct == NULL) {
        const char *dot = strrchr(r->key, '.');
        h2o_mimemap_type_t *mt =
            dot && !strchr(dot, '/') && r->mimemap
                ? h2o_mimemap_get_type_by_extension(r->mimemap, h2o_iovec_init(dot + 1, strlen(dot + 1)))
                : NULL;
        ct = mt != NULL && mt->type == H2O_MIMEMAP_TYPE_MIMETYPE
                 ? h2o_strdup(&r->req->pool, mt->data.mimetype.base, mt->data.mimetype.len).base
                 : "binary/octet-stream";
    }
    gw_s3_set_header(r, "content-type", ct);
    for (const char *p = st->meta; *p;) {
        const char *nl = strchr(p, '\n'), *colon = strstr(p, ": ");
        if (nl == NULL || colon == NULL || colon > nl)
            break;
        char name[256], value[RF_SGFS_META_MAX];
        snprintf(name, sizeof(name), "%.*s", (int)(colon - p), p);
        snprintf(value, sizeof(value), "%.*s", (int)(nl - colon - 2), colon + 2);
        gw_s3_set_header(r, name, value);
        p = nl + 1;
    }
    /* response-* overrides, as S3 allows on signed requests */
    static const char *const ov[][2] = {
        {"response-content-type", "content-type"},         {"response-content-disposition", "content-disposition"},
        {"response-cache-control", "cache-control"},       {"response-content-encoding", "content-encoding"},
        {"response-content-language", "content-language"}, {"response-expires", "expires"}};
    for (size_t i = 0; i < sizeof(ov) / sizeof(ov[0]); i++) {
        const char *v = gw_s3_param(r, ov[i][0]);
        if (v == NULL || strchr(v, '\n') || strchr(v, '\r'))
            continue;
        ssize_t at = h2o_find_header_by_str(&r->req->res.headers, ov[i][1], strlen(ov[i][1]), -1);
        if (at >= 0)
            h2o_delete_header(&r->req->res.headers, at);
        gw_s3_set_header(r, ov[i][1], v);
    }
}

/* Buckets keep no versions: each object is its only version, "null" (as
 * S3 names the version of an unversioned object). Answers and returns
 * false for any other versionId. */
static bool s_version_ok(gw_s3_req_t *r)
{
    const char *v = gw_s3_param(r, "versionId");
    if (v == NULL || strcmp(v, "null") == 0)
        return true;
    gw_s3_error(r, "InvalidArgument", "invalid version id specified (buckets here keep no versions)");
    return false;
}

/* ?partNumber=N of GET / HEAD. Part boundaries are not kept once an upload
 * is complete, so every object answers as one part: N = 1 is the whole
 * object, N > 1 is InvalidPartNumber (416), as S3 answers for an object
 * uploaded in one piece. Without this a client fetching parts 1..N of a
 * multipart object in parallel would get the whole object N times. Returns
 * false after answering. */
static bool s_part_number_ok(gw_s3_req_t *r)
{
    const char *pn = gw_s3_param(r, "partNumber");
    if (pn == NULL)
        return true;
    char *end;
    long n = strtol(pn, &end, 10);
    if (*pn == '\0' || *end != '\0' || n < 1 || n > 10000) {
        gw_s3_error(r, "InvalidArgument", "partNumber must be an integer from 1 to 10000");
        return false;
    }
    if (n > 1) {
        gw_s3_error(r, "InvalidPartNumber", "the requested partnumber is not satisfiable (the object is one part)");
        return false;
    }
    return true;
}

static void s_stream_start(gw_s3_req_t *r, const rf_sgfs_loc_t *loc, const rf_sgfs_stat_t *st, uint64_t from,
                           uint64_t len);

/* GetObject and HeadObject once the object is open (fd) or its metadata
 * known (s3: an S3-backed mount's object, whose bytes are then streamed
 * from the endpoint; fd is -1), or not (ok false, errno says why). */
static void s_get_object(gw_s3_req_t *r);
static void s_delete_object(gw_s3_req_t *r);

static void s_again(gw_s3_req_t *r, void *arg)
{
    ((void (*)(gw_s3_req_t *))arg)(r); /* the operation from its start, the pre workflow over */
}

static void s_get_opened(gw_s3_req_t *r, int fd, bool ok, const rf_sgfs_stat_t *st, const rf_sgfs_loc_t *s3)
{
    bool head = s_method(r, "HEAD");
    if (ok && !head &&
        s_pre(r, "onGet", r->key, (int64_t)st->size, st->mtime_ns / 1000000000, st->etag, s_again,
              (void *)s_get_object)) {
        if (fd >= 0)
            close(fd); /* the workflow may change the object: opened again after it */
        return;
    }
    if (!ok) {
        if (errno == ENOENT || errno == EISDIR || errno == ENOTDIR)
            gw_s3_error(r, "NoSuchKey", "the specified key does not exist");
        else if (errno == EXDEV || errno == ELOOP)
            gw_s3_error(r, "AccessDenied", "the path leaves the mount (a symlink or '..' escape)");
        else if (errno == EIO)
            gw_s3_error(r, "InternalError", "the S3 backend of this mount failed (the gateway's log says why)");
        else
            gw_s3_error(r, "InternalError", "cannot open: %s", strerror(errno));
        return;
    }
    if (s_conditions(r, st) < 0) {
        if (fd >= 0)
            close(fd);
        return;
    }
    s_object_headers(r, st);
    uint64_t from = 0, len = st->size, to = 0;
    size_t rl;
    const char *range = gw_s3_header(r, "range", &rl);
    if (range != NULL && st->size > 0) {
        int pr = gw_parse_range(range, rl, st->size, &from, &to);
        if (pr < 0) {
            if (fd >= 0)
                close(fd);
            char cr[48];
            snprintf(cr, sizeof(cr), "bytes */%llu", (unsigned long long)st->size);
            gw_s3_set_header(r, "content-range", cr);
            gw_s3_error(r, "InvalidRange", "the requested range is not satisfiable");
            return;
        }
        if (pr == 1) {
            len = to - from + 1;
            char cr[80];
            snprintf(cr, sizeof(cr), "bytes %llu-%llu/%llu", (unsigned long long)from, (unsigned long long)to,
                     (unsigned long long)st->size);
            gw_s3_set_header(r, "content-range", cr);
            r->req->res.status = 206;
        } else {
            from = 0;
        }
    }
    if (!head)
        s_raise(r, "onGet", r->key, (int64_t)st->size, st->mtime_ns / 1000000000, st->etag, true);
    if (s3 != NULL && !head && len > 0)
        s_stream_start(r, s3, st, from, len);
    else
        gw_s3_send_file(r, fd, from, len);
}

/* ---- S3-backed mounts: GET streamed a range at a time ---------------------------------- */

/* The bytes of a GET from an S3-backed mount are asked of the endpoint a
 * chunk at a time (a ranged GET on condition of the ETag the answer's
 * headers announced): 256 KiB first, each next one four times larger up
 * to 8 MiB (a request each: larger chunks cost the endpoint fewer
 * requests). The next chunk is fetched
 * while the current one is sent, and no further: the first byte waits for
 * one small chunk, not the whole object; a request holds at most two
 * chunks, and a slow client slows the reading. An object that changes
 * meanwhile, or an endpoint that fails,
 * cuts the answer short: the client sees fewer bytes than Content-Length
 * said, never a mix of two objects. */
#define S_STREAM_FIRST (256u << 10) /* the first chunk: small, so the first byte comes soon */
#define S_STREAM_CHUNK (8u << 20)   /* the largest: each costs the endpoint a request of its own */
#define S_STREAM_ONE (1u << 20)     /* up to this, the whole answer in one chunk */

typedef struct s_stream_t s_stream_t;

typedef struct {   /* one chunk, between the loop and a storage thread */
    s_stream_t *s; /* NULL once the request went */
    rf_sgfs_loc_t loc;
    char etag[48];
    uint64_t first;
    size_t len;
    char *buf;
    int rc, err;
} s_chunk_t;

struct s_stream_t {
    h2o_generator_t super;
    gw_s3_req_t *r;
    rf_sgfs_loc_t loc;
    char etag[48];
    uint64_t from;                 /* the first byte sent */
    uint64_t fetch_at, fetch_left; /* what is still to be asked of the endpoint */
    uint64_t send_left;            /* what is still to be sent */
    size_t last_len;               /* of the last chunk asked for */
    s_chunk_t *inflight;           /* being fetched, or NULL */
    s_chunk_t *ready;              /* fetched, waiting for h2o, or NULL */
    char *sending;                 /* the chunk h2o is sending (freed at the next proceed) */
    bool waiting;                  /* h2o asked for more and nothing was ready */
    bool failed;                   /* a fetch failed: the answer ends short */
};

static void s_chunk_free(s_chunk_t *c)
{
    if (c != NULL)
        free(c->buf);
    free(c);
}

static void s_chunk_work(void *arg)
{
    s_chunk_t *c = arg;
    c->rc = rf_sgfs_read_range(&c->loc, c->etag, c->first, c->buf, c->len);
    c->err = errno;
}

/* Ends the answer short (once h2o waits for it; else at its next proceed). */
static void s_stream_fail(s_stream_t *s)
{
    s->failed = true;
    if (s->waiting) {
        s->waiting = false;
        h2o_send(s->r->req, NULL, 0, H2O_SEND_STATE_ERROR);
    }
}

static void s_chunk_finish(void *arg);

/* Starts fetching the next chunk, unless one is in flight or waiting, or
 * all are asked for. */
static void s_stream_fetch(s_stream_t *s)
{
    if (s->inflight != NULL || s->ready != NULL || s->fetch_left == 0 || s->failed)
        return;
    /* each chunk four times the last, up to S_STREAM_CHUNK */
    size_t chunk = s->fetch_at != s->from          ? s->last_len * 4
                   : s->fetch_left <= S_STREAM_ONE ? (size_t)s->fetch_left /* a small range: one request */
                                                   : S_STREAM_FIRST;
    if (chunk > S_STREAM_CHUNK)
        chunk = S_STREAM_CHUNK;
    size_t len = s->fetch_left < chunk ? (size_t)s->fetch_left : chunk;
    s_chunk_t *c = calloc(1, sizeof(*c));
    char *buf = c != NULL ? malloc(len) : NULL;
    if (buf == NULL) {
        free(c);
        s_stream_fail(s);
        return;
    }
    *c = (s_chunk_t){.s = s, .loc = s->loc, .first = s->fetch_at, .len = len, .buf = buf};
    memcpy(c->etag, s->etag, sizeof(c->etag));
    s->fetch_at += len;
    s->fetch_left -= len;
    s->last_len = len;
    s->inflight = c;
    if (gw_storage_offload(s->r->storage, s->r->thread, s_chunk_work, s_chunk_finish, c) < 0) {
        s->inflight = NULL;
        s_chunk_free(c);
        s_stream_fail(s);
    }
}

/* Hands chunk c (taken) to h2o, then asks for the next one. */
static void s_stream_send(s_stream_t *s, s_chunk_t *c)
{
    s->sending = c->buf;
    s->send_left -= c->len;
    const char *l[] = {"out"};
    rf_metric_add(gw_m.s3_bytes, l, (double)c->len);
    h2o_iovec_t v = h2o_iovec_init(c->buf, c->len);
    free(c);
    h2o_send(s->r->req, &v, 1, s->send_left == 0 ? H2O_SEND_STATE_FINAL : H2O_SEND_STATE_IN_PROGRESS);
    s_stream_fetch(s);
}

static void s_chunk_finish(void *arg)
{
    s_chunk_t *c = arg;
    s_stream_t *s = c->s;
    if (s == NULL) { /* the request went meanwhile */
        s_chunk_free(c);
        return;
    }
    s->inflight = NULL;
    if (c->rc < 0) {
        rf_log(RF_LOG_WARN, s->r->request_id, "s3 GET /%s: cut short at byte %llu: %s", s->r->key,
               (unsigned long long)c->first,
               c->err == ESTALE ? "the object changed in the endpoint meanwhile" : "the endpoint failed");
        s_chunk_free(c);
        s_stream_fail(s);
        return;
    }
    if (!s->waiting) {
        s->ready = c;
        return;
    }
    s->waiting = false;
    s_stream_send(s, c);
}

static void s_stream_proceed(h2o_generator_t *gen, h2o_req_t *req)
{
    s_stream_t *s = (s_stream_t *)gen;
    free(s->sending);
    s->sending = NULL;
    if (s->failed) {
        h2o_send(req, NULL, 0, H2O_SEND_STATE_ERROR);
        return;
    }
    if (s->ready != NULL) {
        s_chunk_t *c = s->ready;
        s->ready = NULL;
        s_stream_send(s, c);
        return;
    }
    s->waiting = true;
    s_stream_fetch(s);
}

static void s_stream_stop(h2o_generator_t *gen, h2o_req_t *req)
{
    (void)gen;
    (void)req; /* the pool's dispose hook lets go of the chunks */
}

static void s_stream_dispose(void *p)
{
    s_stream_t *s = p;
    if (s->inflight != NULL)
        s->inflight->s = NULL;
    s_chunk_free(s->ready);
    free(s->sending);
}

static void s_stream_start(gw_s3_req_t *r, const rf_sgfs_loc_t *loc, const rf_sgfs_stat_t *st, uint64_t from,
                           uint64_t len)
{
    s_stream_t *s = h2o_mem_alloc_shared(&r->req->pool, sizeof(*s), s_stream_dispose);
    *s = (s_stream_t){.super = {s_stream_proceed, s_stream_stop},
                      .r = r,
                      .loc = *loc,
                      .from = from,
                      .fetch_at = from,
                      .fetch_left = len,
                      .send_left = len,
                      .waiting = true};
    snprintf(s->etag, sizeof(s->etag), "%s", st->etag);
    gw_s3_start_stream(r, len, &s->super);
    s_stream_fetch(s);
}

/* ---- S3-backed mounts: their blocking calls on the storage threads ---------------------- */

static void s_put_answer(gw_s3_req_t *r, bool copy, const rf_sgfs_stat_t *st);
static void s_copy_opened(gw_s3_req_t *r, const rf_sgfs_loc_t *loc, const char *ct, const char *meta, int sfd,
                          const rf_sgfs_stat_t *src);

typedef enum {
    S_OFF_GET,
    S_OFF_HEAD,
    S_OFF_PUT,
    S_OFF_COPY_PUT,
    S_OFF_DELETE,
    S_OFF_LIST,
    S_OFF_COPY_SRC,
    S_OFF_PART_SRC,
    S_OFF_COMPLETE
} s_off_kind_t;

static void s_part_write(gw_s3_req_t *r, const rf_sgfs_loc_t *loc, const char *id, int number, int sfd,
                         const rf_sgfs_stat_t *src);

static void s_complete_answer(gw_s3_req_t *r, int rc, const char *code, int e, const rf_sgfs_stat_t *st);
static void s_complete_then(gw_s3_req_t *r, void *arg);
static int s_complete_parts(const rf_sgfs_loc_t *loc, const char *id, const rf_s3xml_complete_t *c, rf_sgfs_stat_t *st,
                            const char **code);

/* One operation on an S3-backed mount, between the loop and a storage
 * thread (gw_storage_offload). The request may go meanwhile: its pool's
 * dispose hook clears r, and finish then only cleans up. */
typedef struct {
    gw_s3_req_t *r;
    void **hook;
    s_off_kind_t kind;
    rf_sgfs_loc_t loc;
    rf_sgfs_put_t *w; /* PUT: the written body, committed (uploaded) there */
    rf_sgfs_stat_t st;
    int fd, rc, err;
    /* LIST: the page asked (copies: the request may go meanwhile), its
     * parsed request for the answer, and the page */
    const rf_sg_bucket_t *b;
    char *prefix, *delim, *after;
    size_t max;
    s_list_q_t *q;
    rf_sgfs_list_t l;
    /* COPY_SRC: the copy's destination and its content type and metadata (in the request pool) */
    rf_sgfs_loc_t dst;
    const char *ct, *meta;
    /* COMPLETE, PART_SRC: the upload (PART_SRC: at dst), its parts as the
     * client listed them (owned), the part a copy writes */
    char id[33];
    int number;
    rf_s3xml_complete_t parts;
    const char *code;
} s_off_t;

static void s_off_dispose(void *p)
{
    s_off_t *o = *(s_off_t **)p;
    if (o != NULL)
        o->r = NULL;
}

/* On a storage thread. */
static void s_off_work(void *arg)
{
    s_off_t *o = arg;
    switch (o->kind) {
    case S_OFF_GET: /* the metadata; the bytes follow a range at a time (s_stream_start) */
    case S_OFF_HEAD: o->rc = rf_sgfs_stat(&o->loc, &o->st); break;
    case S_OFF_PUT:
    case S_OFF_COPY_PUT: o->rc = rf_sgfs_put_commit(&o->w, NULL, &o->st); break;
    case S_OFF_COPY_SRC: /* the source downloaded into an anonymous temporary file */
    case S_OFF_PART_SRC: o->fd = rf_sgfs_open(&o->loc, &o->st); break;
    case S_OFF_LIST:
        o->rc = rf_sgfs_list_opts(o->b, o->prefix, o->delim, o->after, o->max, RF_SGFS_S3_OK, &o->l);
        break;
    case S_OFF_DELETE: /* 1 deleted, 0 nothing there (S3 answers 204 either way), -1 */
        if (rf_sgfs_stat(&o->loc, &o->st) < 0)
            o->rc = errno == ENOENT ? 0 : -1;
        else
            o->rc = rf_sgfs_delete(&o->loc) == 0 ? 1 : -1;
        break;
    case S_OFF_COMPLETE: /* the staged parts joined and uploaded */
        o->rc = s_complete_parts(&o->loc, o->id, &o->parts, &o->st, &o->code);
        break;
    }
    o->err = errno;
}

/* On the request's loop. */
static void s_off_finish(void *arg)
{
    s_off_t *o = arg;
    gw_s3_req_t *r = o->r;
    if (r == NULL) {
        if (o->fd >= 0)
            close(o->fd);
    } else {
        *o->hook = NULL;
        errno = o->err;
        switch (o->kind) {
        case S_OFF_GET:
        case S_OFF_HEAD: s_get_opened(r, -1, o->rc == 0, &o->st, &o->loc); break;
        case S_OFF_PUT:
        case S_OFF_COPY_PUT:
            if (o->rc < 0)
                s_store_error(r, o->err);
            else
                s_put_answer(r, o->kind == S_OFF_COPY_PUT, &o->st);
            break;
        case S_OFF_COPY_SRC:
            s_copy_opened(r, &o->dst, o->ct, o->meta, o->fd, &o->st);
            o->fd = -1; /* taken */
            break;
        case S_OFF_PART_SRC:
            if (o->fd < 0)
                gw_s3_error(r, "NoSuchKey", "the copy source does not exist");
            else
                s_part_write(r, &o->dst, o->id, o->number, o->fd, &o->st);
            o->fd = -1; /* taken */
            break;
        case S_OFF_LIST:
            if (o->rc < 0)
                gw_s3_error(r, "InternalError", "cannot list: %s",
                            o->err == EIO ? "the S3 backend of a mount failed" : strerror(o->err));
            else
                s_list_answer(r, o->q, &o->l);
            break;
        case S_OFF_DELETE:
            if (o->rc < 0) {
                gw_s3_error(r, "InternalError", "cannot delete: the S3 backend of this mount failed");
                break;
            }
            if (o->rc == 1)
                s_raise(r, "onDelete", r->key, -1, -1, NULL, true);
            gw_s3_empty(r, 204);
            break;
        case S_OFF_COMPLETE: s_complete_answer(r, o->rc, o->code, o->err, &o->st); break;
        }
    }
    rf_s3xml_complete_clear(&o->parts);
    if (o->w != NULL)
        rf_sgfs_put_abort(&o->w);
    rf_sgfs_list_clear(&o->l);
    free(o->prefix);
    free(o->delim);
    free(o->after);
    free(o);
}

/* Sends o (prepared) to a storage thread; the answer comes from
 * s_off_finish. On failure o is freed (w aborted) and r answered. */
static void s_offload_run(gw_s3_req_t *r, s_off_t *o)
{
    void **hook = h2o_mem_alloc_shared(&r->req->pool, sizeof(*hook), s_off_dispose);
    *hook = o;
    o->hook = hook;
    o->r = r;
    if (gw_storage_offload(r->storage, r->thread, s_off_work, s_off_finish, o) < 0) {
        *hook = NULL;
        o->r = NULL;
        s_off_finish(o);
        gw_s3_error(r, "SlowDown", "too many requests to S3-backed mounts are waiting");
    }
}

/* A new operation of kind on loc, or NULL (r answered). */
static s_off_t *s_off_new(gw_s3_req_t *r, s_off_kind_t kind, const rf_sgfs_loc_t *loc)
{
    s_off_t *o = calloc(1, sizeof(*o));
    if (o == NULL) {
        gw_s3_error(r, "InternalError", "out of memory");
        return NULL;
    }
    o->kind = kind;
    o->loc = *loc;
    o->fd = -1;
    return o;
}

/* Runs kind on the S3-backed mount of loc off the loop. w (PUT) is taken. */
static void s_offload(gw_s3_req_t *r, s_off_kind_t kind, const rf_sgfs_loc_t *loc, rf_sgfs_put_t *w)
{
    s_off_t *o = s_off_new(r, kind, loc);
    if (o == NULL) {
        if (w != NULL)
            rf_sgfs_put_abort(&w);
        return;
    }
    o->w = w;
    s_offload_run(r, o);
}

/* A copy whose source is on an S3-backed mount: downloaded off the loop. */
static void s_offload_copy(gw_s3_req_t *r, const rf_sgfs_loc_t *src, const rf_sgfs_loc_t *dst, const char *ct,
                           const char *meta)
{
    s_off_t *o = s_off_new(r, S_OFF_COPY_SRC, src);
    if (o == NULL)
        return;
    o->dst = *dst;
    o->ct = ct;
    o->meta = meta;
    s_offload_run(r, o);
}

/* A part copied from a source on an S3-backed mount: downloaded off the loop. */
static void s_offload_part_copy(gw_s3_req_t *r, const rf_sgfs_loc_t *src, const rf_sgfs_loc_t *upload, const char *id,
                                int number)
{
    s_off_t *o = s_off_new(r, S_OFF_PART_SRC, src);
    if (o == NULL)
        return;
    o->dst = *upload;
    snprintf(o->id, sizeof(o->id), "%s", id);
    o->number = number;
    s_offload_run(r, o);
}

static void s_offload_list(gw_s3_req_t *r, s_list_q_t *q)
{
    s_off_t *o = calloc(1, sizeof(*o));
    if (o == NULL || (o->prefix = strdup(q->prefix ? q->prefix : "")) == NULL ||
        (o->after = strdup(q->after ? q->after : "")) == NULL || (q->delim && !(o->delim = strdup(q->delim)))) {
        if (o != NULL)
            free(o->prefix), free(o->after), free(o);
        gw_s3_error(r, "InternalError", "out of memory");
        return;
    }
    o->kind = S_OFF_LIST;
    o->fd = -1;
    o->b = r->bucket;
    o->max = (size_t)q->max;
    o->q = q;
    s_offload_run(r, o);
}

static void s_get_object(gw_s3_req_t *r)
{
    bool head = s_method(r, "HEAD");
    r->op = head ? "HeadObject" : "GetObject";
    if (!s_allowed(r, r->bucket, "get") || !s_version_ok(r) || !s_part_number_ok(r))
        return;
    rf_sgfs_loc_t loc;
    r->s3_ok = true;
    if (s_resolve(r, r->bucket, r->key, r->key_len, false, &loc) < 0)
        return;
    if (loc.mount->kind == RF_SG_MOUNT_S3) {
        s_offload(r, head ? S_OFF_HEAD : S_OFF_GET, &loc, NULL);
        return;
    }
    rf_sgfs_stat_t st;
    int fd = rf_sgfs_open(&loc, &st);
    s_get_opened(r, fd, fd >= 0, &st, NULL);
}

/* "/bucket/key" or "bucket/key" (percent-encoded, maybe ?versionId=) of a copy source. */
static int s_copy_source(gw_s3_req_t *r, const rf_sg_bucket_t **b, char **key, size_t *klen)
{
    size_t l;
    const char *v = gw_s3_header(r, "x-amz-copy-source", &l);
    const char *q = memchr(v, '?', l);
    if (q != NULL) {
        /* only the one version there is: "null" */
        size_t ql = l - (size_t)(q - v);
        if (!(ql == 15 && memcmp(q, "?versionId=null", 15) == 0)) {
            gw_s3_error(r, "InvalidArgument", "invalid version id specified in x-amz-copy-source");
            return -1;
        }
        l = (size_t)(q - v);
    }
    if (l > 0 && v[0] == '/')
        v++, l--;
    char *dec = h2o_mem_alloc_pool(&r->req->pool, l + 1);
    size_t k = 0;
    for (size_t i = 0; i < l; i++) {
        if (v[i] == '%' && i + 2 < l) {
            char hx[3] = {v[i + 1], v[i + 2], 0};
            char *end;
            long c = strtol(hx, &end, 16);
            if (*end != '\0') {
                gw_s3_error(r, "InvalidArgument", "x-amz-copy-source has a malformed %%-escape");
                return -1;
            }
            dec[k++] = (char)c;
            i += 2;
        } else {
            dec[k++] = v[i];
        }
    }
    dec[k] = '\0';
    char *slash = strchr(dec, '/');
    if (slash == NULL || slash[1] == '\0') {
        gw_s3_error(r, "InvalidArgument", "x-amz-copy-source must be BUCKET/KEY");
        return -1;
    }
    *b = rf_sgconf_bucket(r->sc, dec, (size_t)(slash - dec));
    if (*b == NULL || !(*b)->enable || !(*b)->expose) {
        gw_s3_error(r, "NoSuchBucket", "the copy source's bucket does not exist");
        return -1;
    }
    *key = slash + 1;
    *klen = k - (size_t)(slash + 1 - dec);
    return 0;
}

/* x-amz-copy-source-if-* against the source, as S3 applies them: a match
 * that holds overrides a date that fails, and any failure is 412. Answers
 * and returns false on one. */
static bool s_copy_conditions(gw_s3_req_t *r, const rf_sgfs_stat_t *st)
{
    char etag[56];
    int el = snprintf(etag, sizeof(etag), "\"%s\"", st->etag);
    int64_t mtime = st->mtime_ns / 1000000000, d;
    size_t l;
    const char *im = gw_s3_header(r, "x-amz-copy-source-if-match", &l);
    bool im_ok = im != NULL && gw_etag_in(im, l, etag, (size_t)el);
    if (im != NULL && !im_ok)
        goto failed;
    const char *ius = gw_s3_header(r, "x-amz-copy-source-if-unmodified-since", &l);
    if (!im_ok && ius != NULL && (d = s_http_date(ius, l)) >= 0 && mtime > d)
        goto failed;
    const char *inm = gw_s3_header(r, "x-amz-copy-source-if-none-match", &l);
    if (inm != NULL && gw_etag_in(inm, l, etag, (size_t)el))
        goto failed;
    const char *ims = gw_s3_header(r, "x-amz-copy-source-if-modified-since", &l);
    if (inm == NULL && ims != NULL && (d = s_http_date(ims, l)) >= 0 && mtime <= d)
        goto failed;
    return true;
failed:
    gw_s3_error(r, "PreconditionFailed", "a x-amz-copy-source-if-* condition does not hold");
    return false;
}

/* x-amz-copy-source-range: "bytes=FIRST-LAST", both given, FIRST <= LAST
 * < size — unlike a Range header, S3 neither clamps nor takes suffixes
 * here (a clamped range would copy other bytes than asked). 0 or -1. */
static int s_copy_range_header(const char *v, size_t len, uint64_t size, uint64_t *from, uint64_t *to)
{
    char buf[64];
    if (len >= sizeof(buf) || len < 9 || memcmp(v, "bytes=", 6) != 0)
        return -1;
    memcpy(buf, v + 6, len - 6);
    buf[len - 6] = '\0';
    char *dash = strchr(buf, '-'), *end;
    if (dash == NULL || dash == buf || dash[1] == '\0' || buf[0] < '0' || buf[0] > '9' || dash[1] < '0' ||
        dash[1] > '9')
        return -1;
    *dash = '\0';
    errno = 0;
    unsigned long long a = strtoull(buf, &end, 10);
    if (*end != '\0' || errno != 0)
        return -1;
    unsigned long long b = strtoull(dash + 1, &end, 10);
    if (*end != '\0' || errno != 0 || a > b || b >= size)
        return -1;
    *from = a;
    *to = b;
    return 0;
}

/* Copies [off, off+len) of fd into *w_p. 0, or -1 after aborting the
 * writer (first: no temporary file outlives the answer) and answering. */
static int s_copy_range(gw_s3_req_t *r, int fd, uint64_t off, uint64_t len, rf_sgfs_put_t **w_p)
{
    rf_sgfs_put_t *w = *w_p;
    char *buf = malloc(1 << 20);
    int rc = buf ? 0 : -1;
    while (rc == 0 && len > 0) {
        size_t want = len < (1u << 20) ? (size_t)len : (1u << 20);
        ssize_t n = pread(fd, buf, want, (off_t)off);
        if (n <= 0 || rf_sgfs_put_write(w, buf, (size_t)n) < 0)
            rc = -1;
        else
            off += (uint64_t)n, len -= (uint64_t)n;
    }
    int e = errno ? errno : EIO;
    free(buf);
    if (rc < 0) {
        rf_sgfs_put_abort(w_p);
        gw_s3_error(r, "InternalError", "copy failed: %s", strerror(e));
    }
    return rc;
}

static void s_copy_result(gw_s3_req_t *r, const char *root, const rf_sgfs_stat_t *st)
{
    char t[32];
    gw_s3_iso_time(st->mtime_ns, t);
    rf_xml_t x;
    rf_xml_init(&x);
    rf_xml_open(&x, root, S_XMLNS);
    rf_xml_textf(&x, "LastModified", "%s", t);
    rf_xml_textf(&x, "ETag", "\"%s\"", st->etag);
    size_t len = 0;
    char *doc = rf_xml_finish(&x, &len);
    gw_s3_xml(r, 200, doc, len);
}

/* What a PutObject or CopyObject answers with, kept while a pre workflow runs. */
typedef struct {
    bool copy;
    rf_sgfs_stat_t st;
} s_put_done_t;

static void s_put_then(gw_s3_req_t *r, void *arg)
{
    const s_put_done_t *d = arg;
    if (d->copy) {
        s_copy_result(r, "CopyObjectResult", &d->st);
        return;
    }
    s_etag_header(r, d->st.etag);
    gw_s3_empty(r, 200);
}

/* The answer to a stored PutObject or CopyObject (with its event). */
static void s_put_answer(gw_s3_req_t *r, bool copy, const rf_sgfs_stat_t *st)
{
    s_put_done_t *d = h2o_mem_alloc_pool(&r->req->pool, sizeof(*d));
    d->copy = copy;
    d->st = *st;
    if (s_pre(r, "onPut", r->key, (int64_t)st->size, st->mtime_ns / 1000000000, st->etag, s_put_then, d))
        return;
    s_raise(r, "onPut", r->key, (int64_t)st->size, st->mtime_ns / 1000000000, st->etag, true);
    s_put_then(r, d);
}

static void s_put_with(gw_s3_req_t *r, const rf_sgfs_loc_t *loc, const char *ct, const char *meta, int sfd,
                       const rf_sgfs_stat_t *src);

/* A conditional write, as S3 has them since 2024: If-None-Match: * writes
 * only where no object is, If-Match: "ETAG" replaces only that object (a
 * compare-and-swap: the storgate leader lease on https:// is built on it).
 * Sets the condition on w; -1 after answering. */
static int s_put_require(gw_s3_req_t *r, rf_sgfs_put_t *w)
{
    size_t nl = 0, ml = 0;
    const char *inm = gw_s3_header(r, "if-none-match", &nl), *im = gw_s3_header(r, "if-match", &ml);
    if (inm == NULL && im == NULL)
        return 0;
    if (inm != NULL && !h2o_memis(inm, nl, H2O_STRLIT("*"))) {
        gw_s3_error(r, "NotImplemented", "If-None-Match on a write takes only '*'");
        return -1;
    }
    char etag[48] = "";
    if (im != NULL) {
        if (ml >= 2 && im[0] == '"' && im[ml - 1] == '"')
            im++, ml -= 2;
        if (ml == 0 || ml >= sizeof(etag) || memchr(im, '"', ml) != NULL || memchr(im, ',', ml) != NULL) {
            gw_s3_error(r, "InvalidArgument", "If-Match on a write takes one ETag");
            return -1;
        }
        memcpy(etag, im, ml);
        etag[ml] = '\0';
    }
    rf_sgfs_put_require(w, im != NULL ? etag : NULL, inm != NULL);
    return 0;
}

/* A copy's source opened (sfd, or -1: errno): its conditions, then the write. */
static void s_copy_opened(gw_s3_req_t *r, const rf_sgfs_loc_t *loc, const char *ct, const char *meta, int sfd,
                          const rf_sgfs_stat_t *src)
{
    if (sfd < 0) {
        gw_s3_error(r, "NoSuchKey", "the copy source does not exist");
        return;
    }
    if (!s_copy_conditions(r, src)) {
        close(sfd);
        return;
    }
    s_put_with(r, loc, ct, meta, sfd, src);
}

/* PutObject, or CopyObject once its source is open (sfd, *src): writes
 * the object at loc and answers. ct and meta: the request's (in the pool);
 * a copy takes the source's unless x-amz-metadata-directive is REPLACE. */
static void s_put_with(gw_s3_req_t *r, const rf_sgfs_loc_t *loc, const char *ct, const char *meta, int sfd,
                       const rf_sgfs_stat_t *src)
{
    bool copy = src != NULL;
    if (copy) {
        size_t dl;
        const char *dir = gw_s3_header(r, "x-amz-metadata-directive", &dl);
        if (dir == NULL || h2o_memis(dir, dl, H2O_STRLIT("COPY"))) {
            ct = src->content_type[0] ? h2o_strdup(&r->req->pool, src->content_type, SIZE_MAX).base : NULL;
            meta = h2o_strdup(&r->req->pool, src->meta, SIZE_MAX).base;
        }
    }
    rf_sgfs_put_t *w = rf_sgfs_put_begin(loc, ct, meta[0] ? meta : NULL);
    if (w == NULL) {
        if (sfd >= 0)
            close(sfd);
        gw_s3_error(r, "InternalError", "cannot write: %s", strerror(errno));
        return;
    }
    if (s_put_require(r, w) < 0) {
        rf_sgfs_put_abort(&w);
        if (sfd >= 0)
            close(sfd);
        return;
    }
    /* on failure these abort w, then answer */
    int rc = copy ? s_copy_range(r, sfd, 0, src->size, &w) : gw_s3_body_into(r, &w);
    if (sfd >= 0)
        close(sfd);
    if (rc < 0)
        return;
    if (r->key[r->key_len - 1] == '/' && rf_sgfs_put_size(w) > 0) {
        /* a folder marker is a directory: it has nowhere to keep bytes */
        rf_sgfs_put_abort(&w);
        gw_s3_error(r, "InvalidRequest", "a key ending in '/' is a folder marker: its body must be empty");
        return;
    }
    if (loc->mount->kind == RF_SG_MOUNT_S3) { /* the upload runs off the loop */
        s_offload(r, copy ? S_OFF_COPY_PUT : S_OFF_PUT, loc, w);
        return;
    }
    rf_sgfs_stat_t st;
    if (rf_sgfs_put_commit(&w, NULL, &st) < 0) {
        s_store_error(r, errno);
        return;
    }
    s_put_answer(r, copy, &st);
}

static void s_put_object(gw_s3_req_t *r, bool copy)
{
    r->op = copy ? "CopyObject" : "PutObject";
    if (!s_allowed(r, r->bucket, "put"))
        return;
    rf_sgfs_loc_t loc;
    r->s3_ok = true;
    if (s_resolve_put(r, &loc) < 0)
        return;
    char meta[RF_SGFS_META_MAX], ctbuf[128];
    const char *ct = s_content_type(r, ctbuf, sizeof(ctbuf));
    if (s_meta_lines(r, meta, sizeof(meta)) < 0)
        return;
    ct = ct != NULL ? h2o_strdup(&r->req->pool, ct, SIZE_MAX).base : NULL;
    const char *m = h2o_strdup(&r->req->pool, meta, SIZE_MAX).base;
    if (!copy) {
        s_put_with(r, &loc, ct, m, -1, NULL);
        return;
    }
    const rf_sg_bucket_t *sb;
    char *skey;
    size_t sklen;
    rf_sgfs_loc_t sloc;
    if (s_copy_source(r, &sb, &skey, &sklen) < 0 || !s_allowed(r, sb, "get") ||
        s_resolve(r, sb, skey, sklen, false, &sloc) < 0)
        return;
    if (sloc.mount->kind == RF_SG_MOUNT_S3) { /* downloaded off the loop, then s_copy_opened */
        s_offload_copy(r, &sloc, &loc, ct, m);
        return;
    }
    rf_sgfs_stat_t src;
    int sfd = rf_sgfs_open(&sloc, &src);
    s_copy_opened(r, &loc, ct, m, sfd, &src);
}

static void s_delete_object(gw_s3_req_t *r)
{
    r->op = "DeleteObject";
    if (!s_allowed(r, r->bucket, "delete") || !s_version_ok(r))
        return;
    rf_sgfs_loc_t loc;
    const char *why = NULL;
    bool resolved = rf_sgfs_resolve(r->bucket, r->key, r->key_len, false, RF_SGFS_S3_OK, &loc, &why) == 0;
    /* pre: the workflow sees the object before it goes (an S3-backed
     * mount's is not looked up here: that would block this loop) */
    rf_sgfs_stat_t st;
    if (resolved && s_event(r->bucket, "onDelete")->pre &&
        (loc.mount->kind == RF_SG_MOUNT_S3 || (rf_sgfs_stat(&loc, &st) == 0 && !st.is_dir)) &&
        s_pre(r, "onDelete", r->key, -1, -1, NULL, s_again, (void *)s_delete_object))
        return;
    if (resolved && loc.mount->kind == RF_SG_MOUNT_S3) {
        s_offload(r, S_OFF_DELETE, &loc, NULL);
        return;
    }
    int rc = s_delete_key(r->bucket, r->key, r->key_len, &why);
    if (rc == -2) {
        gw_s3_error(r, "AccessDenied", "%s", why);
        return;
    }
    if (rc == -3) {
        gw_s3_error(r, "InternalError", "cannot delete: %s", strerror(errno));
        return;
    }
    if (rc == 1)
        s_raise(r, "onDelete", r->key, -1, -1, NULL, true);
    gw_s3_empty(r, 204);
}

/* ---- multipart ------------------------------------------------------------------------------- */

static int s_upload_loc(gw_s3_req_t *r, const char *id, rf_sgfs_loc_t *loc)
{
    if (s_resolve(r, r->bucket, r->key, r->key_len, true, loc) < 0)
        return -1;
    if (rf_sgfs_mpu_check(loc, r->key, id) < 0) {
        gw_s3_error(r, "NoSuchUpload", "the specified upload does not exist");
        return -1;
    }
    return 0;
}

static void s_create_upload(gw_s3_req_t *r)
{
    r->op = "CreateMultipartUpload";
    if (!s_allowed(r, r->bucket, "put"))
        return;
    rf_sgfs_loc_t loc;
    r->s3_ok = true; /* an S3-backed mount stages the parts locally (rf_sgfs.c) */
    if (s_resolve_put(r, &loc) < 0)
        return;
    char meta[RF_SGFS_META_MAX], ctbuf[128], id[33];
    const char *ct = s_content_type(r, ctbuf, sizeof(ctbuf));
    if (s_meta_lines(r, meta, sizeof(meta)) < 0)
        return;
    if (rf_sgfs_mpu_create(&loc, r->key, ct, meta, id) < 0) {
        gw_s3_error(r, "InternalError", "cannot start the upload: %s", strerror(errno));
        return;
    }
    rf_xml_t x;
    rf_xml_init(&x);
    rf_xml_open(&x, "InitiateMultipartUploadResult", S_XMLNS);
    rf_xml_textf(&x, "Bucket", "%s", r->bucket->name);
    rf_xml_text(&x, "Key", r->key, r->key_len);
    rf_xml_textf(&x, "UploadId", "%s", id);
    size_t len = 0;
    char *doc = rf_xml_finish(&x, &len);
    gw_s3_xml(r, 200, doc, len);
}

/* Writes part `number` of upload id at loc: the request's body, or (sfd >=
 * 0, taken) a range of the copy source sfd whose stat is src. Answers. */
static void s_part_write(gw_s3_req_t *r, const rf_sgfs_loc_t *loc, const char *id, int number, int sfd,
                         const rf_sgfs_stat_t *src)
{
    bool copy = sfd >= 0;
    uint64_t from = 0, len = copy ? src->size : 0;
    if (copy) {
        size_t rl;
        const char *range = gw_s3_header(r, "x-amz-copy-source-range", &rl);
        uint64_t to;
        if (!s_copy_conditions(r, src)) {
            close(sfd);
            return;
        }
        if (range != NULL) {
            if (s_copy_range_header(range, rl, src->size, &from, &to) < 0) {
                close(sfd);
                gw_s3_error(r, "InvalidArgument", "x-amz-copy-source-range must be bytes=FIRST-LAST within the source");
                return;
            }
            len = to - from + 1;
        }
    }
    rf_sgfs_put_t *w = rf_sgfs_mpu_part_begin(loc, id, number);
    if (w == NULL) {
        if (sfd >= 0)
            close(sfd);
        gw_s3_error(r, "InternalError", "cannot write the part: %s", strerror(errno));
        return;
    }
    /* on failure these abort w, then answer */
    int rc = copy ? s_copy_range(r, sfd, from, len, &w) : gw_s3_body_into(r, &w);
    if (sfd >= 0)
        close(sfd);
    if (rc < 0)
        return;
    rf_sgfs_stat_t st;
    if (rf_sgfs_put_commit(&w, NULL, &st) < 0) {
        gw_s3_error(r, errno == ENOENT ? "NoSuchUpload" : "InternalError", "cannot store the part: %s",
                    strerror(errno));
        return;
    }
    if (copy) {
        s_copy_result(r, "CopyPartResult", &st);
        return;
    }
    s_etag_header(r, st.etag);
    gw_s3_empty(r, 200);
}

static void s_upload_part(gw_s3_req_t *r, const char *id, const char *pn, bool copy)
{
    r->op = copy ? "UploadPartCopy" : "UploadPart";
    if (!s_allowed(r, r->bucket, "put"))
        return;
    char *end;
    long number = strtol(pn, &end, 10);
    if (*pn == '\0' || *end != '\0' || number < 1 || number > 10000) {
        gw_s3_error(r, "InvalidArgument", "partNumber must be an integer from 1 to 10000");
        return;
    }
    rf_sgfs_loc_t loc;
    r->s3_ok = true; /* an S3-backed mount stages its parts locally (rf_sgfs.c) */
    if (s_upload_loc(r, id, &loc) < 0)
        return;
    if (!copy) {
        s_part_write(r, &loc, id, (int)number, -1, NULL);
        return;
    }
    const rf_sg_bucket_t *sb;
    char *skey;
    size_t sklen;
    rf_sgfs_loc_t sloc;
    if (s_copy_source(r, &sb, &skey, &sklen) < 0 || !s_allowed(r, sb, "get") ||
        s_resolve(r, sb, skey, sklen, false, &sloc) < 0)
        return;
    if (sloc.mount->kind == RF_SG_MOUNT_S3) { /* downloaded off the loop, then s_part_write */
        s_offload_part_copy(r, &sloc, &loc, id, (int)number);
        return;
    }
    rf_sgfs_stat_t src;
    int sfd = rf_sgfs_open(&sloc, &src);
    if (sfd < 0) {
        gw_s3_error(r, "NoSuchKey", "the copy source does not exist");
        return;
    }
    s_part_write(r, &loc, id, (int)number, sfd, &src);
}

/* Joins the listed parts of upload id into the object at loc (blocking:
 * on an S3-backed mount the object is uploaded). 0, or -1 with *code. */
static int s_complete_parts(const rf_sgfs_loc_t *loc, const char *id, const rf_s3xml_complete_t *c, rf_sgfs_stat_t *st,
                            const char **code)
{
    int *numbers = malloc(c->n * sizeof(int));
    const char **etags = malloc(c->n * sizeof(char *));
    int rc = -1;
    if (numbers != NULL && etags != NULL) {
        for (size_t i = 0; i < c->n; i++) {
            numbers[i] = c->parts[i].number;
            etags[i] = c->parts[i].etag;
        }
        rc = rf_sgfs_mpu_complete(loc, id, numbers, etags, c->n, S_MIN_PART, st, code);
    } else {
        *code = "InternalError";
        errno = ENOMEM;
    }
    int e = errno;
    free(numbers);
    free(etags);
    errno = e;
    return rc;
}

static void s_complete_answer(gw_s3_req_t *r, int rc, const char *code, int e, const rf_sgfs_stat_t *st)
{
    if (rc < 0 && strcmp(code, "InternalError") == 0) { /* publishing failed: say why */
        s_store_error(r, e);
        return;
    }
    if (rc < 0) {
        const char *msg = strcmp(code, "InvalidPart") == 0
                              ? "one or more of the specified parts could not be found or its ETag does not match"
                          : strcmp(code, "EntityTooSmall") == 0 ? "a part other than the last is smaller than 5 MiB"
                          : strcmp(code, "NoSuchUpload") == 0   ? "the specified upload does not exist"
                                                                : strerror(e);
        gw_s3_error(r, code, "%s", msg);
        return;
    }
    rf_sgfs_stat_t *keep = h2o_mem_alloc_pool(&r->req->pool, sizeof(*keep));
    *keep = *st;
    if (s_pre(r, "onPut", r->key, (int64_t)st->size, st->mtime_ns / 1000000000, st->etag, s_complete_then, keep))
        return;
    s_raise(r, "onPut", r->key, (int64_t)st->size, st->mtime_ns / 1000000000, st->etag, true);
    s_complete_then(r, keep);
}

/* The answer to a completed upload (arg: its rf_sgfs_stat_t). */
static void s_complete_then(gw_s3_req_t *r, void *arg)
{
    const rf_sgfs_stat_t *st = arg;
    rf_xml_t x;
    rf_xml_init(&x);
    rf_xml_open(&x, "CompleteMultipartUploadResult", S_XMLNS);
    char locurl[64 + RF_SGFS_KEY_MAX];
    snprintf(locurl, sizeof(locurl), "/%s/%s", r->bucket->name, r->key);
    rf_xml_text(&x, "Location", locurl, strlen(locurl));
    rf_xml_textf(&x, "Bucket", "%s", r->bucket->name);
    rf_xml_text(&x, "Key", r->key, r->key_len);
    rf_xml_textf(&x, "ETag", "\"%s\"", st->etag);
    size_t len = 0;
    char *doc = rf_xml_finish(&x, &len);
    gw_s3_xml(r, 200, doc, len);
}

static void s_complete_upload(gw_s3_req_t *r, const char *id)
{
    r->op = "CompleteMultipartUpload";
    if (!s_allowed(r, r->bucket, "put"))
        return;
    rf_sgfs_loc_t loc;
    r->s3_ok = true;
    size_t hl;
    if (gw_s3_header(r, "if-none-match", &hl) != NULL || gw_s3_header(r, "if-match", &hl) != NULL) {
        /* refused rather than ignored: a client relying on it would race unseen */
        gw_s3_error(r, "NotImplemented",
                    "conditional writes are taken by PutObject and CopyObject, not by "
                    "CompleteMultipartUpload");
        return;
    }
    if (s_upload_loc(r, id, &loc) < 0)
        return;
    char *body;
    size_t blen;
    if (gw_s3_body_small(r, RF_S3XML_COMPLETE_BODY_MAX, &body, &blen) < 0)
        return;
    rf_s3xml_complete_t c = {0};
    const char *code = NULL;
    char why[200] = "";
    if (rf_s3xml_parse_complete(body, blen, &c, &code, why, sizeof(why)) < 0) {
        gw_s3_error(r, code ? code : "MalformedXML", "%s", why);
        return;
    }
    if (loc.mount->kind == RF_SG_MOUNT_S3) { /* the upload runs off the loop */
        s_off_t *o = s_off_new(r, S_OFF_COMPLETE, &loc);
        if (o == NULL) {
            rf_s3xml_complete_clear(&c);
            return;
        }
        snprintf(o->id, sizeof(o->id), "%s", id);
        o->parts = c; /* taken */
        o->code = "InternalError";
        s_offload_run(r, o);
        return;
    }
    rf_sgfs_stat_t st;
    int rc = s_complete_parts(&loc, id, &c, &st, &code);
    int e = errno;
    rf_s3xml_complete_clear(&c);
    s_complete_answer(r, rc, code, e, &st);
}

static void s_abort_upload(gw_s3_req_t *r, const char *id)
{
    r->op = "AbortMultipartUpload";
    if (!s_allowed(r, r->bucket, "put"))
        return;
    rf_sgfs_loc_t loc;
    r->s3_ok = true;
    if (s_upload_loc(r, id, &loc) < 0)
        return;
    rf_sgfs_mpu_abort(&loc, id);
    gw_s3_empty(r, 204);
}

static void s_list_parts(gw_s3_req_t *r, const char *id)
{
    r->op = "ListParts";
    if (!s_allowed(r, r->bucket, "get"))
        return;
    rf_sgfs_loc_t loc;
    r->s3_ok = true;
    if (s_upload_loc(r, id, &loc) < 0)
        return;
    rf_sgfs_part_t *parts = NULL;
    size_t n = 0;
    if (rf_sgfs_mpu_parts(&loc, id, &parts, &n) < 0) {
        gw_s3_error(r, "NoSuchUpload", "the specified upload does not exist");
        return;
    }
    const char *pm = gw_s3_param(r, "part-number-marker"), *mp = gw_s3_param(r, "max-parts");
    long marker = pm ? strtol(pm, NULL, 10) : 0, max = mp ? strtol(mp, NULL, 10) : 1000;
    if (max < 1 || max > 1000)
        max = 1000;
    rf_xml_t x;
    rf_xml_init(&x);
    rf_xml_open(&x, "ListPartsResult", S_XMLNS);
    rf_xml_textf(&x, "Bucket", "%s", r->bucket->name);
    rf_xml_text(&x, "Key", r->key, r->key_len);
    rf_xml_textf(&x, "UploadId", "%s", id);
    rf_xml_textf(&x, "PartNumberMarker", "%ld", marker);
    long shown = 0, last = marker;
    bool trunc = false;
    for (size_t i = 0; i < n; i++) {
        if (parts[i].number <= marker)
            continue;
        if (shown == max) {
            trunc = true;
            break;
        }
        char t[32];
        gw_s3_iso_time(parts[i].mtime_ns, t);
        rf_xml_open(&x, "Part", NULL);
        rf_xml_textf(&x, "PartNumber", "%d", parts[i].number);
        rf_xml_textf(&x, "LastModified", "%s", t);
        rf_xml_textf(&x, "ETag", "\"%s\"", parts[i].etag);
        rf_xml_textf(&x, "Size", "%llu", (unsigned long long)parts[i].size);
        rf_xml_close(&x);
        shown++;
        last = parts[i].number;
    }
    free(parts);
    rf_xml_textf(&x, "NextPartNumberMarker", "%ld", last);
    rf_xml_textf(&x, "MaxParts", "%ld", max);
    rf_xml_textf(&x, "IsTruncated", "%s", trunc ? "true" : "false");
    rf_xml_textf(&x, "StorageClass", "STANDARD");
    size_t len = 0;
    char *doc = rf_xml_finish(&x, &len);
    gw_s3_xml(r, 200, doc, len);
}

void gw_s3_object_op(gw_s3_req_t *r)
{
    const char *sub = s_unsupported(r);
    if (sub != NULL) {
        r->op = "Unsupported";
        gw_s3_error(r, "NotImplemented", "the ?%s subresource is not supported", sub);
        return;
    }
    const char *id = gw_s3_param(r, "uploadId");
    size_t l;
    bool copy = gw_s3_header(r, "x-amz-copy-source", &l) != NULL;
    if (s_method(r, "GET") || s_method(r, "HEAD")) {
        if (id != NULL && s_method(r, "GET"))
            s_list_parts(r, id);
        else
            s_get_object(r);
    } else if (s_method(r, "PUT")) {
        const char *pn = gw_s3_param(r, "partNumber");
        if (pn != NULL || id != NULL) {
            if (pn == NULL || id == NULL) {
                gw_s3_error(r, "InvalidArgument", "an upload part needs both partNumber and uploadId");
                return;
            }
            s_upload_part(r, id, pn, copy);
        } else {
            s_put_object(r, copy);
        }
    } else if (s_method(r, "POST")) {
        if (gw_s3_param(r, "uploads") != NULL)
            s_create_upload(r);
        else if (id != NULL)
            s_complete_upload(r, id);
        else {
            r->op = "Unsupported";
            gw_s3_error(r, "MethodNotAllowed", "POST on an object takes ?uploads or ?uploadId");
        }
    } else if (s_method(r, "DELETE")) {
        if (id != NULL)
            s_abort_upload(r, id);
        else
            s_delete_object(r);
    } else {
        r->op = "Unsupported";
        gw_s3_error(r, "MethodNotAllowed", "the method is not allowed on an object");
    }
}
