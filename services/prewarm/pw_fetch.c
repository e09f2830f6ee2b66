/*  pw_fetch — one pre-warm request through the gateway (pw.h).
 *
 *  A GET of the message's path to gateway_url with the message's host as
 *  Host: the gateway treats it as any client's request, so the origin
 *  fetch, the function chain and the cache store happen as they would for
 *  a client. The whole body is read (and dropped): the gateway stores an
 *  object once its fill has run to the end. The answer's Cache-Status is
 *  kept for the event.
 *
 *  One pw_fetch_t per worker thread; its libcurl handle keeps the
 *  connection to the gateway alive between messages. Redirects are not
 *  followed (the gateway caches the redirect it was given).
 *
 *  Every request says "X-Refract-Priority: background": the gateway's bus
 *  jobs for it (image and video functions) then wait while clients' jobs
 *  are queued, so pre-warming does not take workers ahead of live traffic
 *  (rf_broker.h). Messages may not set that header (pw_msg.c).
 */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "pw.h"
#include "rf_broker.h" /* RF_PRIORITY_HEADER */

struct pw_fetch_t {
    CURL *curl;
    char *base; /* gateway_url */
    int timeout_ms;
    const atomic_int *stop;
};

/* The response being read, for the callbacks. */
typedef struct {
    pw_result_t *r;
} s_xfer_t;

static double s_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

static size_t s_body(char *ptr, size_t size, size_t n, void *arg)
{
    (void)ptr;
    s_xfer_t *x = arg;
    x->r->bytes += (int64_t)(size * n);
    return size * n;
}

/* Response header lines: a status line starts a new response (a 100
 * Continue before the real one), Cache-Status is kept. */
static size_t s_header(char *line, size_t size, size_t n, void *arg)
{
    s_xfer_t *x = arg;
    size_t len = size * n;
    static const char name[] = "cache-status:";
    if (len >= 5 && strncmp(line, "HTTP/", 5) == 0) {
        x->r->cache_status[0] = '\0';
    } else if (len > sizeof(name) - 1 && strncasecmp(line, name, sizeof(name) - 1) == 0) {
        const char *v = line + sizeof(name) - 1, *e = line + len;
        while (v < e && (*v == ' ' || *v == '\t'))
            v++;
        while (e > v && (e[-1] == '\r' || e[-1] == '\n' || e[-1] == ' ' || e[-1] == '\t'))
            e--;
        size_t vl = (size_t)(e - v);
        if (vl >= sizeof(x->r->cache_status))
            vl = sizeof(x->r->cache_status) - 1;
        memcpy(x->r->cache_status, v, vl);
        x->r->cache_status[vl] = '\0';
    }
    return len;
}

/* Aborts a transfer when the process stops. */
static int s_progress(void *arg, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    (void)dt, (void)dn, (void)ut, (void)un;
    const atomic_int *stop = arg;
    return stop != NULL && atomic_load(stop) ? 1 : 0;
}

pw_fetch_t *pw_fetch_new(const char *gateway_url, int timeout_ms, const atomic_int *stop)
{
    pw_fetch_t *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return NULL;
    f->timeout_ms = timeout_ms;
    f->stop = stop;
    if ((f->base = strdup(gateway_url)) == NULL || (f->curl = curl_easy_init()) == NULL) {
        pw_fetch_destroy(&f);
        return NULL;
    }
    return f;
}

int pw_fetch_get(pw_fetch_t *f, const pw_msg_t *m, pw_result_t *r)
{
    memset(r, 0, sizeof(*r));
    char *url = NULL, *host = NULL;
    struct curl_slist *hdrs = NULL, *t;
    int rc = -1;
    double t0 = s_now_ms();
    s_xfer_t x = {.r = r};
    if (asprintf(&url, "%s%s", f->base, m->path) < 0) {
        url = NULL;
        snprintf(r->error, sizeof(r->error), "out of memory");
        goto cleanup;
    }
    if (asprintf(&host, "Host: %s", m->host) < 0) {
        host = NULL;
        snprintf(r->error, sizeof(r->error), "out of memory");
        goto cleanup;
    }
    const char *fixed[] = {host, "User-Agent: refract-prewarm",
                           "Accept:", RF_PRIORITY_HEADER ": " RF_PRIORITY_BACKGROUND, NULL};
    for (int i = 0; fixed[i] != NULL; i++) {
        if ((t = curl_slist_append(hdrs, fixed[i])) == NULL)
            goto oom;
        hdrs = t;
    }
    for (size_t i = 0; i < m->n_headers; i++) {
        if ((t = curl_slist_append(hdrs, m->headers[i])) == NULL)
            goto oom;
        hdrs = t;
    }
    CURL *c = f->curl;
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(c, CURLOPT_PATH_AS_IS, 1L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)f->timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, s_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &x);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, s_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &x);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, s_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, (void *)f->stop);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    CURLcode cc = curl_easy_perform(c);
    if (cc != CURLE_OK) {
        snprintf(r->error, sizeof(r->error), "%s",
                 cc == CURLE_ABORTED_BY_CALLBACK ? "stopping" : curl_easy_strerror(cc));
        r->status = 0;
        goto cleanup;
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    rc = 0;
    goto cleanup;
oom:
    snprintf(r->error, sizeof(r->error), "out of memory");
cleanup:
    r->ms = s_now_ms() - t0;
    curl_slist_free_all(hdrs);
    free(url);
    free(host);
    return rc;
}

void pw_fetch_destroy(pw_fetch_t **self_p)
{
    if (self_p == NULL || *self_p == NULL)
        return;
    pw_fetch_t *f = *self_p;
    if (f->curl != NULL)
        curl_easy_cleanup(f->curl);
    free(f->base);
    free(f);
    *self_p = NULL;
}
