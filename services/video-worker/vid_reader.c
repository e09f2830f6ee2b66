/*  vid_reader — see vid_reader.h. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "rf_worker.h"
#include "vid_reader.h"

#define VID_EDGE_CONNECT_MS 5000
#define VID_AHEAD_MIN (64 << 10) /* the first read after a jump */
#define VID_PATH_MAX 4096

struct vid_reader {
    vid_source_t src;
    vid_reader_opts_t opts;
    int fd;    /* file: refs */
    char *url; /* edge: gateway_url + path */
    struct curl_slist *headers;
    uint8_t *buf; /* edge: the last answer, bytes [buf_off, buf_off + buf_len) */
    size_t buf_len, buf_cap;
    int64_t buf_off;
    size_t ahead; /* what the next edge read asks for at least: grows while reads follow on */
    char validator[160];
    char cache_control[160], expires[64], last_modified[64]; /* the source's freshness */
    int64_t bytes;                                           /* read from the source */
    int failed;                                              /* a read failed: its status (502, 504) */
    char why[200];
};

/* One connection to the gateway per job thread, kept across jobs and
 * closed when the thread ends. */
static pthread_key_t s_curl_key;

static void s_curl_free(void *c)
{
    curl_easy_cleanup(c);
}

static CURL *s_thread_curl(void)
{
    CURL *c = pthread_getspecific(s_curl_key);
    if (c == NULL && (c = curl_easy_init()) != NULL && pthread_setspecific(s_curl_key, c) != 0) {
        curl_easy_cleanup(c);
        c = NULL;
    }
    return c;
}

int vid_reader_global_init(void)
{
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return -1;
    return pthread_key_create(&s_curl_key, s_curl_free) == 0 ? 0 : -1;
}

void vid_reader_global_cleanup(void)
{
    curl_global_cleanup();
}

/* Marks the reader failed (the first reason wins) and returns -1. */
static int64_t s_fail(vid_reader_t *r, int status, const char *fmt, const char *arg)
{
    if (!r->failed) {
        r->failed = status;
        snprintf(r->why, sizeof(r->why), fmt, arg);
    }
    return -1;
}

static int s_stopped(vid_reader_t *r)
{
    if (r->opts.should_stop != NULL && r->opts.should_stop(r->opts.stop_arg))
        return 1;
    return rf_worker_now_ms() >= r->opts.deadline_ms;
}

/* ---- file:// ------------------------------------------------------------------ */

static int64_t s_file_read(void *arg, uint8_t *buf, int64_t off, int64_t len)
{
    vid_reader_t *r = arg;
    if (s_stopped(r))
        return s_fail(r, 504, "%s", "job cancelled or past its deadline");
    if (off >= r->src.size || len <= 0)
        return 0;
    ssize_t n;
    do
        n = pread(r->fd, buf, (size_t)len, off);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return s_fail(r, 502, "source read: %s", strerror(errno));
    r->bytes += n;
    return n;
}

static int s_file_open(vid_reader_t *r, const char *path, int *status, char *err, size_t errlen)
{
    struct stat st;
    r->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (r->fd < 0 || fstat(r->fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        *status = r->fd < 0 && errno != ENOENT && errno != ENOTDIR ? 502 : 404;
        snprintf(err, errlen, "source %.200s not readable here: %s", path,
                 r->fd < 0 ? strerror(errno) : "not a regular file");
        return -1;
    }
    r->src.size = st.st_size;
    r->src.read = s_file_read;
    snprintf(r->validator, sizeof(r->validator), "ino=%ju;mtime=%jd.%09ld", (uintmax_t)st.st_ino,
             (intmax_t)st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
    struct tm tm;
    gmtime_r(&st.st_mtim.tv_sec, &tm); /* what a file server says: the heuristic TTL comes from it */
    strftime(r->last_modified, sizeof(r->last_modified), "%a, %d %b %Y %H:%M:%S GMT", &tm);
    return 0;
}

/* ---- edge: ----------------------------------------------------------------------- */

/* What one ranged GET brings back. */
typedef struct {
    vid_reader_t *r;
    size_t want;   /* the bytes asked for: more is an error */
    int64_t total; /* from Content-Range "bytes A-B/TOTAL"; -1 = none */
    int64_t first; /* its A */
    char etag[120], last_modified[64], cache_control[160], expires[64];
} s_get_t;

static size_t s_on_header(char *line, size_t size, size_t n, void *arg)
{
    s_get_t *g = arg;
    size_t len = size * n;
    char h[256];
    size_t hl = len < sizeof(h) - 1 ? len : sizeof(h) - 1;
    memcpy(h, line, hl);
    h[hl] = '\0';
    h[strcspn(h, "\r\n")] = '\0';
    long long a, b, t;
    if (strncasecmp(h, "content-range:", 14) == 0 && sscanf(h + 14, " bytes %lld-%lld/%lld", &a, &b, &t) == 3 &&
        a >= 0 && b >= a && t > b) {
        g->first = a;
        g->total = t;
    } else if (strncasecmp(h, "etag:", 5) == 0) {
        snprintf(g->etag, sizeof(g->etag), "%s", h + 5 + strspn(h + 5, " \t"));
    } else if (strncasecmp(h, "last-modified:", 14) == 0) {
        snprintf(g->last_modified, sizeof(g->last_modified), "%s", h + 14 + strspn(h + 14, " \t"));
    } else if (strncasecmp(h, "cache-control:", 14) == 0) {
        snprintf(g->cache_control, sizeof(g->cache_control), "%s", h + 14 + strspn(h + 14, " \t"));
    } else if (strncasecmp(h, "expires:", 8) == 0) {
        snprintf(g->expires, sizeof(g->expires), "%s", h + 8 + strspn(h + 8, " \t"));
    }
    return len;
}

static size_t s_on_body(char *data, size_t size, size_t n, void *arg)
{
    s_get_t *g = arg;
    vid_reader_t *r = g->r;
    size_t len = size * n;
    if (r->buf_len + len > g->want || s_stopped(r))
        return 0; /* more than asked (a 200 for a range?), or stopped: abort */
    memcpy(r->buf + r->buf_len, data, len);
    r->buf_len += len;
    return len;
}

/* GETs bytes [off, off + len) into r->buf. 0, or -1 with r failed. */
static int s_edge_get(vid_reader_t *r, int64_t off, size_t len, s_get_t *g)
{
    CURL *c = s_thread_curl();
    if (c == NULL)
        return (int)s_fail(r, 502, "%s", "cannot create an HTTP client");
    if (len > r->buf_cap) {
        uint8_t *b = realloc(r->buf, len);
        if (b == NULL)
            return (int)s_fail(r, 502, "%s", "out of memory");
        r->buf = b;
        r->buf_cap = len;
    }
    r->buf_len = 0;
    r->buf_off = off;
    memset(g, 0, sizeof(*g));
    g->r = r;
    g->want = len;
    g->total = -1;
    char range[64];
    snprintf(range, sizeof(range), "%" PRId64 "-%" PRId64, off, off + (int64_t)len - 1);
    int64_t left = r->opts.deadline_ms == INT64_MAX ? 0 : r->opts.deadline_ms - rf_worker_now_ms();
    if (r->opts.deadline_ms != INT64_MAX && left <= 0)
        return (int)s_fail(r, 504, "%s", "job past its deadline");
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, r->url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, r->headers);
    curl_easy_setopt(c, CURLOPT_RANGE, range);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)VID_EDGE_CONNECT_MS);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)left); /* 0: none */
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, s_on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, g);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, s_on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, g);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    CURLcode rc = curl_easy_perform(c);
    long code = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    r->bytes += (int64_t)r->buf_len;
    if (s_stopped(r))
        return (int)s_fail(r, 504, "%s", "job cancelled or past its deadline");
    if (code == 404 || code == 410)
        return (int)s_fail(r, 404, "%s", "source not found");
    if (code == 416)
        return (int)s_fail(r, 415, "%s", "the source is empty");
    if (rc != CURLE_OK && code != 200) {
        char why[160];
        snprintf(why, sizeof(why), "%s", curl_easy_strerror(rc));
        return (int)s_fail(r, 502, "source read through the gateway: %s", why);
    }
    if (code == 200 && rc == CURLE_OK && off == 0) {
        /* The whole source, smaller than asked for (a server that answers
         * a Range covering everything with 200). */
        g->total = (int64_t)r->buf_len;
        g->first = 0;
        code = 206;
    }
    if (code != 206) {
        char why[32];
        snprintf(why, sizeof(why), "%ld", code);
        return (int)s_fail(r, 502, "source range read answered %s, not 206", why);
    }
    if (g->total < 0 || g->first != off || r->buf_len != len)
        return (int)s_fail(r, 502, "%s", "source range read: Content-Range or length not as asked");
    return 0;
}

static int64_t s_edge_read(void *arg, uint8_t *buf, int64_t off, int64_t len)
{
    vid_reader_t *r = arg;
    if (off >= r->src.size || len <= 0)
        return 0;
    if (off + len > r->src.size)
        len = r->src.size - off;
    if (off < r->buf_off || off + len > r->buf_off + (int64_t)r->buf_len) {
        /* Like a kernel's read-ahead: a read that follows on from the last
         * one doubles the next request (up to read_ahead); a jump (the
         * moov, then a keyframe far away) starts small again, so a
         * thumbnail does not fetch a megabyte per seek. */
        bool onward = r->buf_len > 0 && off >= r->buf_off && off <= r->buf_off + (int64_t)r->buf_len;
        r->ahead = onward ? (r->ahead * 2 < r->opts.read_ahead ? r->ahead * 2 : r->opts.read_ahead)
                          : (VID_AHEAD_MIN < r->opts.read_ahead ? VID_AHEAD_MIN : r->opts.read_ahead);
        int64_t want = len > (int64_t)r->ahead ? len : (int64_t)r->ahead;
        if (off + want > r->src.size)
            want = r->src.size - off;
        s_get_t g;
        if (s_edge_get(r, off, (size_t)want, &g) < 0)
            return -1;
        if (g.total != r->src.size)
            return s_fail(r, 502, "%s", "the source changed while it was read");
    }
    memcpy(buf, r->buf + (off - r->buf_off), (size_t)len);
    return len;
}

static int s_edge_open(vid_reader_t *r, const char *path, const char *host, int *status, char *err, size_t errlen)
{
    if (r->opts.gateway_url == NULL || host == NULL || path[0] != '/' || strlen(path) > VID_PATH_MAX ||
        strpbrk(path, " \r\n") != NULL || strpbrk(host, "\r\n") != NULL) {
        *status = 400;
        snprintf(err, errlen, "edge source needs a path, a host and video_worker.gateway_url");
        return -1;
    }
    size_t ul = strlen(r->opts.gateway_url) + strlen(path) + 1;
    char hh[300], rid[100];
    snprintf(hh, sizeof(hh), "Host: %.280s", host);
    snprintf(rid, sizeof(rid), "X-Request-Id: %.64s", r->opts.request_id != NULL ? r->opts.request_id : "-");
    if ((r->url = malloc(ul)) == NULL || (r->headers = curl_slist_append(NULL, hh)) == NULL ||
        curl_slist_append(r->headers, rid) == NULL ||
        curl_slist_append(r->headers, "User-Agent: refract-video-worker") == NULL) {
        *status = 502;
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    snprintf(r->url, ul, "%s%s", r->opts.gateway_url, path);
    /* The first bytes: the size (Content-Range), a validator, and where a
     * faststart moov is. */
    s_get_t g;
    r->src.size = INT64_MAX;
    r->ahead = VID_AHEAD_MIN < r->opts.read_ahead ? VID_AHEAD_MIN : r->opts.read_ahead;
    if (s_edge_get(r, 0, r->ahead, &g) < 0 && !(r->failed == 502 && g.total > 0 && g.first == 0)) {
        *status = r->failed;
        snprintf(err, errlen, "%s", r->why);
        return -1;
    }
    if (r->failed) { /* a source shorter than the read-ahead: Content-Range says how long */
        if ((int64_t)r->buf_len != g.total) {
            *status = r->failed;
            snprintf(err, errlen, "%s", r->why);
            return -1;
        }
        r->failed = 0;
        r->why[0] = '\0';
    }
    r->src.size = g.total;
    r->src.read = s_edge_read;
    snprintf(r->validator, sizeof(r->validator), "%s", g.etag[0] ? g.etag : g.last_modified);
    snprintf(r->cache_control, sizeof(r->cache_control), "%s", g.cache_control);
    snprintf(r->expires, sizeof(r->expires), "%s", g.expires);
    snprintf(r->last_modified, sizeof(r->last_modified), "%s", g.last_modified);
    return 0;
}

/* ---- the reader ------------------------------------------------------------------- */

vid_reader_t *vid_reader_open(const char *ref, const char *host, const vid_reader_opts_t *opts, int *status, char *err,
                              size_t errlen)
{
    vid_reader_t *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        *status = 502;
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    r->fd = -1;
    r->opts = *opts;
    r->src.arg = r;
    int rc;
    if (ref != NULL && strncmp(ref, "file://", 7) == 0 && ref[7] == '/') {
        rc = s_file_open(r, ref + 7, status, err, errlen);
    } else if (ref != NULL && strncmp(ref, "edge:", 5) == 0) {
        rc = s_edge_open(r, ref + 5, host, status, err, errlen);
    } else {
        *status = 400;
        snprintf(err, errlen, "unsupported source ref '%.80s' (file:// or edge:)", ref != NULL ? ref : "");
        rc = -1;
    }
    if (rc < 0)
        vid_reader_destroy(&r);
    return r;
}

void vid_reader_destroy(vid_reader_t **p)
{
    vid_reader_t *r = p != NULL ? *p : NULL;
    if (r == NULL)
        return;
    if (r->fd >= 0)
        close(r->fd);
    free(r->url);
    curl_slist_free_all(r->headers);
    free(r->buf);
    free(r);
    *p = NULL;
}

const vid_source_t *vid_reader_source(vid_reader_t *r)
{
    return &r->src;
}

const char *vid_reader_validator(const vid_reader_t *r)
{
    return r->validator;
}

int64_t vid_reader_bytes(const vid_reader_t *r)
{
    return r->bytes;
}

void vid_reader_freshness(const vid_reader_t *r, const char **cache_control, const char **expires,
                          const char **last_modified)
{
    *cache_control = r->cache_control;
    *expires = r->expires;
    *last_modified = r->last_modified;
}

int vid_reader_failed(const vid_reader_t *r, const char **why)
{
    if (why != NULL)
        *why = r->why;
    return r->failed;
}
