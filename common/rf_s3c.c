/*  rf_s3c — the S3 client of S3-backed mounts (rf_s3c.h). */
#include "rf_s3c.h"

#include <curl/curl.h>
#include <stdatomic.h>
#include <errno.h>
#include <expat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "rf_s3xml.h"

struct rf_s3c_t {
    const rf_sg_s3ep_t *ep;
    atomic_bool *abort; /* set: transfers in progress end at once (rf_s3c_set_abort) */
    CURL *curl;
    char sigv4[128]; /* "aws:amz:REGION:s3" */
    bool signed_;    /* the endpoint has keys */
};

rf_s3c_t *rf_s3c_new(const rf_sg_s3ep_t *ep, char *why, size_t why_len)
{
    rf_s3c_t *c = calloc(1, sizeof(*c));
    if (c == NULL || (c->curl = curl_easy_init()) == NULL) {
        snprintf(why, why_len, "cannot set up libcurl");
        free(c);
        return NULL;
    }
    rf_s3c_use(c, ep);
    return c;
}

void rf_s3c_set_abort(rf_s3c_t *c, atomic_bool *flag)
{
    c->abort = flag;
}

static int s_xferinfo(void *arg, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    (void)dt, (void)dn, (void)ut, (void)un;
    atomic_bool *flag = arg;
    return atomic_load(flag) ? 1 : 0;
}

void rf_s3c_use(rf_s3c_t *c, const rf_sg_s3ep_t *ep)
{
    c->ep = ep;
    snprintf(c->sigv4, sizeof(c->sigv4), "aws:amz:%s:s3", ep->region);
    c->signed_ = ep->access_key != NULL;
}

void rf_s3c_destroy(rf_s3c_t **self_p)
{
    if (self_p == NULL || *self_p == NULL)
        return;
    curl_easy_cleanup((*self_p)->curl);
    free(*self_p);
    *self_p = NULL;
}

/* The object URL: endpoint/bucket/KEY (path style) or bucket.host/KEY,
 * the key encoded as S3 canonicalises it ('/' kept), then ?query. */
static char *s_url(const rf_s3c_t *c, const char *key, const char *query)
{
    const char *ep = c->ep->endpoint;
    size_t kl = key ? strlen(key) : 0;
    char *enc = malloc(3 * kl + 1);
    if (enc == NULL)
        return NULL;
    rf_s3_urlencode(key ? key : "", kl, enc, 3 * kl + 1, true);
    char *url = NULL;
    int n;
    if (c->ep->path_style) {
        size_t el = strlen(ep);
        while (el > 0 && ep[el - 1] == '/')
            el--;
        n = asprintf(&url, "%.*s/%s/%s%s%s", (int)el, ep, c->ep->bucket, enc, query ? "?" : "", query ? query : "");
    } else {
        const char *host = strstr(ep, "://");
        host = host ? host + 3 : ep;
        n = asprintf(&url, "%.*s%s.%s/%s%s%s", (int)(host - ep), ep, c->ep->bucket, host, enc, query ? "?" : "",
                     query ? query : "");
    }
    free(enc);
    return n < 0 ? NULL : url;
}

typedef struct {
    int fd;    /* body into a file, or */
    char *buf; /* into memory (listings, errors), bounded */
    size_t len, cap;
    rf_s3c_obj_t *obj; /* headers of interest */
    bool failed;
    const rf_s3c_get_cbs_t *cbs; /* or to callbacks, for a 2xx answer */
    char *dst;                   /* or into this buffer, for a 206 answer (exactly dst_cap bytes) */
    size_t dst_cap, dst_len;
    long status; /* of the response being read (its status line) */
} s_sink_t;

static bool s_2xx(long st)
{
    return st >= 200 && st <= 299;
}

static size_t s_write(char *p, size_t size, size_t n, void *arg)
{
    s_sink_t *s = arg;
    size_t len = size * n;
    if (s->dst != NULL && s->status == 206) {
        if (len > s->dst_cap - s->dst_len) { /* more than the range asked for */
            s->failed = true;
            return 0;
        }
        memcpy(s->dst + s->dst_len, p, len);
        s->dst_len += len;
        return len;
    }
    if (s->cbs != NULL && s_2xx(s->status)) {
        if (s->cbs->on_data(s->cbs->arg, p, len) < 0) {
            s->failed = true;
            return 0;
        }
        return len;
    }
    if (s->fd >= 0) {
        for (size_t off = 0; off < len;) {
            ssize_t w = write(s->fd, p + off, len - off);
            if (w <= 0) {
                s->failed = true;
                return 0;
            }
            off += (size_t)w;
        }
        return len;
    }
    if (s->len + len > (8u << 20)) /* a listing page is far smaller */
        return 0;
    if (s->len + len + 1 > s->cap) {
        size_t cap = (s->len + len + 1) * 2;
        char *nb = realloc(s->buf, cap);
        if (nb == NULL)
            return 0;
        s->buf = nb;
        s->cap = cap;
    }
    memcpy(s->buf + s->len, p, len);
    s->len += len;
    s->buf[s->len] = '\0';
    return len;
}

static void s_copy_hdr(char *dst, size_t cap, const char *v, size_t vl)
{
    while (vl > 0 && (v[vl - 1] == '\r' || v[vl - 1] == '\n' || v[vl - 1] == ' '))
        vl--;
    while (vl > 0 && (*v == ' ' || *v == '"'))
        v++, vl--;
    if (vl > 0 && v[vl - 1] == '"')
        vl--;
    snprintf(dst, cap, "%.*s", (int)(vl < cap ? vl : cap - 1), v);
}

static size_t s_header(char *p, size_t size, size_t n, void *arg)
{
    s_sink_t *s = arg;
    size_t len = size * n;
    if (len > 5 && memcmp(p, "HTTP/", 5) == 0) { /* each response's status line (100, redirects, the answer) */
        const char *sp = memchr(p, ' ', len);
        s->status = sp != NULL ? strtol(sp + 1, NULL, 10) : 0;
        return len;
    }
    const char *colon = memchr(p, ':', len);
    if (colon == NULL)
        return len;
    size_t nl = (size_t)(colon - p);
    const char *v = colon + 1;
    size_t vl = len - nl - 1;
    if (s->cbs != NULL && s->cbs->on_header != NULL && s_2xx(s->status)) {
        while (vl > 0 && (*v == ' ' || *v == '\t'))
            v++, vl--;
        while (vl > 0 && (v[vl - 1] == '\r' || v[vl - 1] == '\n' || v[vl - 1] == ' '))
            vl--;
        s->cbs->on_header(s->cbs->arg, p, nl, v, vl);
    }
    if (s->obj == NULL)
        return len;
    if (nl == 4 && strncasecmp(p, "etag", 4) == 0)
        s_copy_hdr(s->obj->etag, sizeof(s->obj->etag), v, vl);
    else if (nl == 12 && strncasecmp(p, "content-type", 12) == 0)
        s_copy_hdr(s->obj->content_type, sizeof(s->obj->content_type), v, vl);
    else if (nl == 14 && strncasecmp(p, "content-length", 14) == 0)
        s->obj->size = strtoull(v, NULL, 10);
    else if (nl == 13 && strncasecmp(p, "last-modified", 13) == 0) {
        char t[64];
        s_copy_hdr(t, sizeof(t), v, vl);
        struct tm tm = {0};
        if (strptime(t, "%a, %d %b %Y %H:%M:%S GMT", &tm) != NULL)
            s->obj->mtime_s = (int64_t)timegm(&tm);
    }
    return len;
}

typedef struct {
    int fd;
    const char *mem;    /* or the bytes themselves */
    rf_s3c_read_fn *rd; /* or a reader (rf_s3c_put_sized) */
    void *rd_arg;
    uint64_t off, left;
} s_source_t;

static size_t s_read(char *p, size_t size, size_t n, void *arg)
{
    s_source_t *s = arg;
    size_t want = size * n;
    if (want > s->left)
        want = (size_t)s->left;
    if (want == 0)
        return 0;
    if (s->mem != NULL) {
        memcpy(p, s->mem + s->off, want);
        s->off += want;
        s->left -= want;
        return want;
    }
    if (s->rd != NULL) { /* straight into curl's buffer: no copy of ours */
        ssize_t r = s->rd(s->rd_arg, p, want);
        if (r <= 0) /* the source ended short of the size it said, or failed */
            return CURL_READFUNC_ABORT;
        s->off += (uint64_t)r;
        s->left -= (uint64_t)r;
        return (size_t)r;
    }
    ssize_t r = pread(s->fd, p, want, (off_t)s->off);
    if (r <= 0)
        return CURL_READFUNC_ABORT;
    s->off += (uint64_t)r;
    s->left -= (uint64_t)r;
    return (size_t)r;
}

/* One request. method "GET"/"HEAD"/"PUT"/"POST"/"DELETE"; body from src
 * (PUT) or `post` (POST, a string); hdrs: more "Name: value" lines
 * (NULL-terminated, may be NULL); answer into sink. Returns the HTTP
 * status, or -1 (transport error, why). */
static long s_do_h(rf_s3c_t *c, const char *method, const char *url, s_source_t *src, const char *post,
                   const char *content_type, const char *const *hdrs, s_sink_t *sink, char *why, size_t why_len)
{
    CURL *h = c->curl;
    curl_easy_reset(h);
    struct curl_slist *hd = curl_slist_append(NULL, "x-amz-content-sha256: UNSIGNED-PAYLOAD");
    char ct[200];
    if (content_type != NULL) {
        snprintf(ct, sizeof(ct), "Content-Type: %s", content_type);
        hd = curl_slist_append(hd, ct);
    }
    for (size_t i = 0; hdrs != NULL && hdrs[i] != NULL; i++)
        hd = curl_slist_append(hd, hdrs[i]);
    /* no "Expect:" line: libcurl 7.88 would sign it (an empty header it
     * then does not send); 100-continue is kept short instead */
    curl_easy_setopt(h, CURLOPT_EXPECT_100_TIMEOUT_MS, 200L);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hd);
    if (c->signed_) { /* apart: Swift's access keys hold a ':' ("account:user") */
        curl_easy_setopt(h, CURLOPT_AWS_SIGV4, c->sigv4);
        curl_easy_setopt(h, CURLOPT_USERNAME, c->ep->access_key);
        curl_easy_setopt(h, CURLOPT_PASSWORD, c->ep->secret_key);
    }
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    if (c->abort != NULL) {
        curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, s_xferinfo);
        curl_easy_setopt(h, CURLOPT_XFERINFODATA, c->abort);
        curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    }
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L); /* stalled 60 s: give up */
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, 60L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, s_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, sink);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, s_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, sink);
    if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    } else if (strcmp(method, "PUT") == 0) {
        curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(h, CURLOPT_READFUNCTION, s_read);
        curl_easy_setopt(h, CURLOPT_READDATA, src);
        curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)src->left);
    } else if (strcmp(method, "POST") == 0) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, post ? post : "");
    } else if (strcmp(method, "GET") != 0) {
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    }
    CURLcode rc = curl_easy_perform(h);
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(hd);
    if (rc != CURLE_OK) {
        snprintf(why, why_len, "%s %s: %s", method, c->ep->name, curl_easy_strerror(rc));
        return -1;
    }
    return status;
}

static long s_do(rf_s3c_t *c, const char *method, const char *url, s_source_t *src, const char *post,
                 const char *content_type, s_sink_t *sink, char *why, size_t why_len)
{
    return s_do_h(c, method, url, src, post, content_type, NULL, sink, why, why_len);
}

/* "answered 403 AccessDenied: message" from an S3 error body. */
static void s_status_why(const char *what, long status, const s_sink_t *s, char *why, size_t why_len)
{
    const char *code = s->buf ? strstr(s->buf, "<Code>") : NULL;
    const char *end = code ? strstr(code, "</Code>") : NULL;
    if (code != NULL && end != NULL)
        snprintf(why, why_len, "%s answered %ld %.*s", what, status, (int)(end - code - 6), code + 6);
    else
        snprintf(why, why_len, "%s answered %ld", what, status);
}

int rf_s3c_head(rf_s3c_t *c, const char *key, rf_s3c_obj_t *out, char *why, size_t why_len)
{
    char *url = s_url(c, key, NULL);
    memset(out, 0, sizeof(*out));
    s_sink_t sink = {.fd = -1, .obj = out};
    long st = url ? s_do(c, "HEAD", url, NULL, NULL, NULL, &sink, why, why_len) : -1;
    free(url);
    free(sink.buf);
    if (st == 404)
        return 1;
    if (st < 200 || st > 299) {
        if (st > 0)
            snprintf(why, why_len, "HEAD %s answered %ld", c->ep->name, st);
        return -1;
    }
    return 0;
}

int rf_s3c_get_fd(rf_s3c_t *c, const char *key, int fd, rf_s3c_obj_t *out, char *why, size_t why_len)
{
    rf_s3c_obj_t tmp;
    if (out == NULL)
        out = &tmp;
    memset(out, 0, sizeof(*out));
    char *url = s_url(c, key, NULL);
    s_sink_t sink = {.fd = fd, .obj = out};
    long st = url ? s_do(c, "GET", url, NULL, NULL, NULL, &sink, why, why_len) : -1;
    free(url);
    if (st == 404)
        return 1;
    if (st < 200 || st > 299 || sink.failed) {
        if (st > 0)
            snprintf(why, why_len, "GET %s answered %ld%s", c->ep->name, st, sink.failed ? " (write failed)" : "");
        return -1;
    }
    return 0;
}

int rf_s3c_get_range(rf_s3c_t *c, const char *key, uint64_t first, size_t len, const char *etag, char *buf, char *why,
                     size_t why_len)
{
    char range[80], match[120];
    snprintf(range, sizeof(range), "Range: bytes=%llu-%llu", (unsigned long long)first,
             (unsigned long long)(first + len - 1));
    const char *hdrs[3] = {range, NULL, NULL};
    if (etag != NULL && etag[0] != '\0') {
        snprintf(match, sizeof(match), "If-Match: \"%s\"", etag);
        hdrs[1] = match;
    }
    rf_s3c_obj_t o;
    memset(&o, 0, sizeof(o));
    char *url = s_url(c, key, NULL);
    s_sink_t sink = {.fd = -1, .obj = &o, .dst = buf, .dst_cap = len};
    long st = url && len > 0 ? s_do_h(c, "GET", url, NULL, NULL, NULL, hdrs, &sink, why, why_len) : -1;
    free(url);
    free(sink.buf);
    if (st == 404 || st == 412)
        return 1;
    if (st != 206 || sink.failed || sink.dst_len != len) {
        if (st > 0)
            snprintf(why, why_len, "ranged GET %s answered %ld%s", c->ep->name, st,
                     st == 200             ? " (the Range was ignored)"
                     : sink.failed         ? " (more bytes than asked for)"
                     : sink.dst_len != len ? " (fewer bytes than asked for)"
                                           : "");
        return -1;
    }
    return 0;
}

int rf_s3c_delete(rf_s3c_t *c, const char *key, char *why, size_t why_len)
{
    char *url = s_url(c, key, NULL);
    s_sink_t sink = {.fd = -1};
    long st = url ? s_do(c, "DELETE", url, NULL, NULL, NULL, &sink, why, why_len) : -1;
    free(url);
    if (st >= 200 && st <= 299) {
        free(sink.buf);
        return 0;
    }
    if (st == 404) {
        free(sink.buf);
        return 0;
    }
    if (st > 0)
        s_status_why("DELETE", st, &sink, why, why_len);
    free(sink.buf);
    return -1;
}

/* ---- PUT, single or multipart ------------------------------------------------------------ */

/* One PUT of src (a file range or memory) at key?query. 0 or -1. */
static int s_put_src(rf_s3c_t *c, const char *key, const char *query, s_source_t *src, const char *content_type,
                     const char *const *hdrs, char *etag, char *why, size_t why_len)
{
    char *url = s_url(c, key, query);
    rf_s3c_obj_t hdr = {0};
    s_sink_t sink = {.fd = -1, .obj = &hdr};
    long st = url ? s_do_h(c, "PUT", url, src, NULL, content_type, hdrs, &sink, why, why_len) : -1;
    free(url);
    int rc = s_2xx(st) ? 0 : -1;
    if (rc < 0 && st > 0)
        s_status_why("PUT", st, &sink, why, why_len);
    if (rc == 0 && etag != NULL)
        snprintf(etag, 80, "%s", hdr.etag);
    free(sink.buf);
    return rc;
}

int rf_s3c_put_if(rf_s3c_t *c, const char *key, const void *mem, size_t len, const char *if_match, char *etag,
                  char *why, size_t why_len)
{
    char cond[120];
    if (if_match != NULL)
        snprintf(cond, sizeof(cond), "If-Match: \"%s\"", if_match);
    else
        snprintf(cond, sizeof(cond), "If-None-Match: *");
    const char *hdrs[2] = {cond, NULL};
    s_source_t src = {.fd = -1, .mem = mem, .left = len};
    char *url = s_url(c, key, NULL);
    rf_s3c_obj_t hdr = {0};
    s_sink_t sink = {.fd = -1, .obj = &hdr};
    long st = url ? s_do_h(c, "PUT", url, &src, NULL, "text/plain", hdrs, &sink, why, why_len) : -1;
    free(url);
    int rc = -1;
    if (s_2xx(st)) {
        rc = 0;
        if (etag != NULL)
            snprintf(etag, 80, "%s", hdr.etag);
    } else if (st == 412 || st == 409 || (st == 404 && if_match != NULL)) {
        rc = 1; /* 409: ConditionalRequestConflict, another conditional write in flight */
    } else if (st > 0) {
        s_status_why("conditional PUT", st, &sink, why, why_len);
        rc = st == 501 ? 2 : -1;
    }
    free(sink.buf);
    return rc;
}

int rf_s3c_get_small(rf_s3c_t *c, const char *key, char **buf, size_t max, size_t *len, char *etag, char *why,
                     size_t why_len)
{
    *buf = NULL;
    *len = 0;
    rf_s3c_obj_t hdr = {0};
    char *url = s_url(c, key, NULL);
    s_sink_t sink = {.fd = -1, .obj = &hdr};
    long st = url ? s_do(c, "GET", url, NULL, NULL, NULL, &sink, why, why_len) : -1;
    free(url);
    if (st == 404) {
        free(sink.buf);
        return 1;
    }
    if (!s_2xx(st) || sink.len > max) {
        if (st > 0 && !s_2xx(st))
            s_status_why("GET", st, &sink, why, why_len);
        else if (st > 0)
            snprintf(why, why_len, "GET %s: the object is over %zu bytes", c->ep->name, max);
        free(sink.buf);
        return -1;
    }
    if (sink.buf == NULL && (sink.buf = calloc(1, 1)) == NULL) {
        snprintf(why, why_len, "out of memory");
        return -1;
    }
    *buf = sink.buf;
    *len = sink.len;
    snprintf(etag, 80, "%s", hdr.etag);
    return 0;
}

/* The text of <Tag>…</Tag> in a small XML answer, or "". */
static void s_xml_value(const char *xml, const char *tag, char *out, size_t cap)
{
    char open[64], close[64];
    snprintf(open, sizeof(open), "<%s>", tag);
    snprintf(close, sizeof(close), "</%s>", tag);
    const char *a = xml ? strstr(xml, open) : NULL, *b = a ? strstr(a, close) : NULL;
    out[0] = '\0';
    if (a != NULL && b != NULL) {
        a += strlen(open);
        snprintf(out, cap, "%.*s", (int)((size_t)(b - a) < cap ? (size_t)(b - a) : cap - 1), a);
    }
}

/* "&quot;…&quot;" or quotes from the XML, taken off in place. */
static void s_unquote(char *p)
{
    if (strncmp(p, "&quot;", 6) == 0)
        memmove(p, p + 6, strlen(p + 6) + 1);
    size_t l = strlen(p);
    if (l >= 6 && strcmp(p + l - 6, "&quot;") == 0)
        p[l - 6] = '\0';
    l = strlen(p);
    if (l > 0 && p[0] == '"')
        memmove(p, p + 1, l--);
    if (l > 0 && p[l - 1] == '"')
        p[l - 1] = '\0';
}

/* A multipart upload in progress: its id (URL-encoded) and the
 * CompleteMultipartUpload body being written as parts go up. */
typedef struct {
    rf_s3c_t *c;
    const char *key;
    char enc_id[800];
    rf_xml_t x;
    size_t parts;
} s_mp_t;

/* CreateMultipartUpload (the object's headers go here). 0 or -1. */
static int s_mp_create(s_mp_t *m, rf_s3c_t *c, const char *key, const char *content_type, const char *const *hdrs,
                       char *why, size_t why_len)
{
    memset(m, 0, sizeof(*m));
    m->c = c;
    m->key = key;
    char *url = s_url(c, key, "uploads=");
    s_sink_t sink = {.fd = -1};
    char id[256];
    long st = url ? s_do_h(c, "POST", url, NULL, "", content_type, hdrs, &sink, why, why_len) : -1;
    free(url);
    s_xml_value(sink.buf, "UploadId", id, sizeof(id));
    if (!s_2xx(st) || id[0] == '\0') {
        if (st > 0)
            s_status_why("CreateMultipartUpload", st, &sink, why, why_len);
        free(sink.buf);
        return -1;
    }
    free(sink.buf);
    rf_s3_urlencode(id, strlen(id), m->enc_id, sizeof(m->enc_id), false);
    rf_xml_init(&m->x);
    rf_xml_open(&m->x, "CompleteMultipartUpload", NULL);
    return 0;
}

/* UploadPart of src as the next part. 0 or -1. */
static int s_mp_part(s_mp_t *m, s_source_t *src, char *why, size_t why_len)
{
    char q[900], petag[80];
    m->parts++;
    snprintf(q, sizeof(q), "partNumber=%zu&uploadId=%s", m->parts, m->enc_id); /* sorted: p before u */
    if (s_put_src(m->c, m->key, q, src, NULL, NULL, petag, why, why_len) < 0)
        return -1;
    rf_xml_open(&m->x, "Part", NULL);
    rf_xml_textf(&m->x, "PartNumber", "%zu", m->parts);
    rf_xml_textf(&m->x, "ETag", "\"%s\"", petag);
    rf_xml_close(&m->x);
    return 0;
}

/* Completes the upload when ok, else (or when completing fails) aborts
 * it, so that no partial object is ever visible. Frees m. 0 or -1. */
static int s_mp_end(s_mp_t *m, bool ok, char *etag, char *why, size_t why_len)
{
    size_t blen = 0;
    char *body = rf_xml_finish(&m->x, &blen);
    char q[900];
    snprintf(q, sizeof(q), "uploadId=%s", m->enc_id);
    char *url = s_url(m->c, m->key, q);
    int rc = -1;
    if (ok && body != NULL && url != NULL) {
        s_sink_t s2 = {.fd = -1};
        long st = s_do(m->c, "POST", url, NULL, body, "application/xml", &s2, why, why_len);
        /* S3 may answer 200 with an <Error> body after a long completion */
        if (s_2xx(st) && (s2.buf == NULL || strstr(s2.buf, "<Error>") == NULL)) {
            if (etag != NULL) {
                s_xml_value(s2.buf, "ETag", etag, 80);
                s_unquote(etag);
            }
            rc = 0;
        } else if (st > 0) {
            s_status_why("CompleteMultipartUpload", st, &s2, why, why_len);
        }
        free(s2.buf);
    }
    if (rc < 0 && url != NULL) {
        char w2[64];
        s_sink_t s3 = {.fd = -1};
        s_do(m->c, "DELETE", url, NULL, NULL, NULL, &s3, w2, sizeof(w2));
        free(s3.buf);
    }
    free(url);
    free(body);
    return rc;
}

static int s_put_multipart(rf_s3c_t *c, const char *key, int fd, uint64_t size, const char *content_type, char *etag,
                           char *why, size_t why_len)
{
    s_mp_t m;
    if (s_mp_create(&m, c, key, content_type, NULL, why, why_len) < 0)
        return -1;
    bool ok = true;
    for (uint64_t off = 0; ok && off < size; off += RF_S3C_PART_SIZE) {
        s_source_t src = {.fd = fd, .off = off, .left = size - off < RF_S3C_PART_SIZE ? size - off : RF_S3C_PART_SIZE};
        ok = s_mp_part(&m, &src, why, why_len) == 0;
    }
    return s_mp_end(&m, ok, etag, why, why_len);
}

int rf_s3c_put_fd(rf_s3c_t *c, const char *key, int fd, uint64_t size, const char *content_type, char *etag, char *why,
                  size_t why_len)
{
    if (size > RF_S3C_SINGLE_MAX)
        return s_put_multipart(c, key, fd, size, content_type, etag, why, why_len);
    s_source_t src = {.fd = fd, .left = size};
    return s_put_src(c, key, NULL, &src, content_type, NULL, etag, why, why_len);
}

/* Fills buf (cap bytes) from rd; *n bytes read. 1 at the end of the
 * stream, 0 when buf is full, -1 when rd gave up. */
static int s_fill_part(rf_s3c_read_fn *rd, void *arg, char *buf, size_t cap, size_t *n)
{
    *n = 0;
    while (*n < cap) {
        ssize_t r = rd(arg, buf + *n, cap - *n);
        if (r < 0)
            return -1;
        if (r == 0)
            return 1;
        *n += (size_t)r;
    }
    return 0;
}

int rf_s3c_put_stream(rf_s3c_t *c, const char *key, const char *content_type, const char *const *hdrs,
                      rf_s3c_read_fn *rd, void *arg, uint64_t *total, char *why, size_t why_len)
{
    *total = 0;
    char *buf = malloc(RF_S3C_STREAM_PART);
    if (buf == NULL) {
        snprintf(why, why_len, "out of memory");
        return -1;
    }
    size_t n;
    int end = s_fill_part(rd, arg, buf, RF_S3C_STREAM_PART, &n);
    int rc = -1;
    if (end < 0) {
        snprintf(why, why_len, "the source failed");
    } else if (end == 1) { /* the whole stream fits one part: one PUT */
        s_source_t src = {.fd = -1, .mem = buf, .left = n};
        rc = s_put_src(c, key, NULL, &src, content_type, hdrs, NULL, why, why_len);
        *total = n;
    } else {
        s_mp_t m;
        if (s_mp_create(&m, c, key, content_type, hdrs, why, why_len) == 0) {
            bool ok = true;
            for (;;) {
                s_source_t src = {.fd = -1, .mem = buf, .left = n};
                if (n > 0 && s_mp_part(&m, &src, why, why_len) < 0) {
                    ok = false;
                    break;
                }
                *total += n;
                if (end == 1)
                    break;
                if ((end = s_fill_part(rd, arg, buf, RF_S3C_STREAM_PART, &n)) < 0) {
                    snprintf(why, why_len, "the source failed after %llu bytes", (unsigned long long)*total);
                    ok = false;
                    break;
                }
            }
            rc = s_mp_end(&m, ok, NULL, why, why_len);
        }
    }
    free(buf);
    return rc;
}

int rf_s3c_put_sized(rf_s3c_t *c, const char *key, const char *content_type, const char *const *hdrs, uint64_t size,
                     rf_s3c_read_fn *rd, void *arg, char *why, size_t why_len)
{
    if (size <= RF_S3C_STREAM_PART) {
        s_source_t src = {.fd = -1, .rd = rd, .rd_arg = arg, .left = size};
        return s_put_src(c, key, NULL, &src, content_type, hdrs, NULL, why, why_len);
    }
    s_mp_t m;
    if (s_mp_create(&m, c, key, content_type, hdrs, why, why_len) < 0)
        return -1;
    bool ok = true;
    for (uint64_t off = 0; ok && off < size; off += RF_S3C_STREAM_PART) {
        uint64_t n = size - off < RF_S3C_STREAM_PART ? size - off : RF_S3C_STREAM_PART;
        s_source_t src = {.fd = -1, .rd = rd, .rd_arg = arg, .left = n};
        ok = s_mp_part(&m, &src, why, why_len) == 0;
    }
    return s_mp_end(&m, ok, NULL, why, why_len);
}

int rf_s3c_get_cb(rf_s3c_t *c, const char *key, const rf_s3c_get_cbs_t *cbs, char *why, size_t why_len)
{
    char *url = s_url(c, key, NULL);
    s_sink_t sink = {.fd = -1, .cbs = cbs};
    long st = url ? s_do(c, "GET", url, NULL, NULL, NULL, &sink, why, why_len) : -1;
    free(url);
    int rc = 0;
    if (st == 404 || st == 403) /* 403: a bucket policy that hides missing keys */
        rc = 1;
    else if (!s_2xx(st) || sink.failed) {
        if (st > 0 && sink.failed)
            snprintf(why, why_len, "GET %s: the body was refused after %ld", c->ep->name, st);
        else if (st > 0)
            s_status_why("GET", st, &sink, why, why_len);
        rc = -1;
    }
    free(sink.buf);
    return rc;
}

/* ---- listing ---------------------------------------------------------------------------- */

typedef struct {
    rf_s3c_entry_t *e;
    size_t n, cap;
    bool truncated, in_contents, in_prefixes, oom;
    char text[2048];
    size_t tl;
    rf_s3c_entry_t cur;
} s_list_t;

static void XMLCALL s_start(void *ud, const XML_Char *name, const XML_Char **atts)
{
    (void)atts;
    s_list_t *l = ud;
    l->tl = 0;
    l->text[0] = '\0';
    if (strcmp(name, "Contents") == 0 || strcmp(name, "CommonPrefixes") == 0) {
        memset(&l->cur, 0, sizeof(l->cur));
        l->in_contents = strcmp(name, "Contents") == 0;
        l->in_prefixes = !l->in_contents;
    }
}

static void XMLCALL s_chars(void *ud, const XML_Char *s, int len)
{
    s_list_t *l = ud;
    size_t n = (size_t)len;
    if (l->tl + n >= sizeof(l->text))
        n = sizeof(l->text) - 1 - l->tl;
    memcpy(l->text + l->tl, s, n);
    l->tl += n;
    l->text[l->tl] = '\0';
}

static void s_push(s_list_t *l)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        rf_s3c_entry_t *ne = realloc(l->e, cap * sizeof(*ne));
        if (ne == NULL) {
            free(l->cur.key);
            l->oom = true;
            return;
        }
        l->e = ne;
        l->cap = cap;
    }
    l->e[l->n++] = l->cur;
    memset(&l->cur, 0, sizeof(l->cur));
}

static void XMLCALL s_end(void *ud, const XML_Char *name)
{
    s_list_t *l = ud;
    if ((l->in_contents && strcmp(name, "Key") == 0) || (l->in_prefixes && strcmp(name, "Prefix") == 0)) {
        free(l->cur.key);
        l->cur.key = strdup(l->text);
    } else if (l->in_contents && strcmp(name, "Size") == 0) {
        l->cur.size = strtoull(l->text, NULL, 10);
    } else if (l->in_contents && strcmp(name, "ETag") == 0) {
        s_copy_hdr(l->cur.etag, sizeof(l->cur.etag), l->text, strlen(l->text));
    } else if (l->in_contents && strcmp(name, "LastModified") == 0) {
        struct tm tm = {0};
        if (strptime(l->text, "%Y-%m-%dT%H:%M:%S", &tm) != NULL)
            l->cur.mtime_s = (int64_t)timegm(&tm);
    } else if (strcmp(name, "Contents") == 0 || strcmp(name, "CommonPrefixes") == 0) {
        l->cur.prefix = l->in_prefixes;
        if (l->cur.key != NULL)
            s_push(l);
        l->in_contents = l->in_prefixes = false;
    } else if (strcmp(name, "IsTruncated") == 0) {
        l->truncated = strcmp(l->text, "true") == 0;
    }
    l->tl = 0;
}

/* Appends "&name=value" (value encoded) to q. */
static void s_qparam(char *q, size_t cap, const char *name, const char *value)
{
    size_t vl = strlen(value), ql = strlen(q);
    char *enc = malloc(3 * vl + 1);
    if (enc == NULL)
        return;
    rf_s3_urlencode(value, vl, enc, 3 * vl + 1, false);
    snprintf(q + ql, cap - ql, "%s%s=%s", ql ? "&" : "", name, enc);
    free(enc);
}

int rf_s3c_list(rf_s3c_t *c, const char *prefix, const char *delim, const char *start_after, size_t max,
                rf_s3c_entry_t **out, size_t *n, bool *truncated, char *why, size_t why_len)
{
    *out = NULL;
    *n = 0;
    *truncated = false;
    char q[8192] = "";
    char mk[16];
    snprintf(mk, sizeof(mk), "%zu", max < 1 ? 1 : max > 1000 ? 1000 : max);
    /* sorted by name, as the signature needs */
    if (delim != NULL && delim[0])
        s_qparam(q, sizeof(q), "delimiter", delim);
    s_qparam(q, sizeof(q), "list-type", "2");
    s_qparam(q, sizeof(q), "max-keys", mk);
    s_qparam(q, sizeof(q), "prefix", prefix ? prefix : "");
    if (start_after != NULL && start_after[0])
        s_qparam(q, sizeof(q), "start-after", start_after);
    char *url = s_url(c, NULL, q);
    s_sink_t sink = {.fd = -1};
    long st = url ? s_do(c, "GET", url, NULL, NULL, NULL, &sink, why, why_len) : -1;
    free(url);
    if (st < 200 || st > 299) {
        if (st > 0)
            s_status_why("ListObjectsV2", st, &sink, why, why_len);
        free(sink.buf);
        return -1;
    }
    s_list_t l = {0};
    XML_Parser p = XML_ParserCreate(NULL);
    int rc = -1;
    if (p != NULL) {
        XML_SetUserData(p, &l);
        XML_SetElementHandler(p, s_start, s_end);
        XML_SetCharacterDataHandler(p, s_chars);
        if (XML_Parse(p, sink.buf ? sink.buf : "", (int)sink.len, 1) == XML_STATUS_OK && !l.oom)
            rc = 0;
        else
            snprintf(why, why_len, "ListObjectsV2 %s: the answer is not a listing", c->ep->name);
        XML_ParserFree(p);
    }
    free(l.cur.key);
    free(sink.buf);
    if (rc < 0) {
        rf_s3c_entries_free(l.e, l.n);
        return -1;
    }
    *out = l.e;
    *n = l.n;
    *truncated = l.truncated;
    return 0;
}

void rf_s3c_entries_free(rf_s3c_entry_t *e, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(e[i].key);
    free(e);
}
