/*  rf_httpd — the tiny admin HTTP endpoint of worker processes.
 *
 *  One thread, one connection at a time: the only clients are Prometheus
 *  and a liveness probe, so concurrency would buy nothing but risk. What
 *  keeps a single thread safe is that every wait is bounded: the request
 *  head must arrive within S_READ_TIMEOUT_MS, the response must drain
 *  within S_WRITE_TIMEOUT_MS, and every poll() also watches a self-pipe so
 *  rf_httpd_destroy() interrupts even a connection in progress instead of
 *  waiting out a stuck peer.
 */
#include "rf_httpd.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define S_MAX_HEAD 8192
#define S_READ_TIMEOUT_MS 5000
#define S_WRITE_TIMEOUT_MS 5000
#define S_LINGER_MS 500

struct rf_httpd_t {
    int lfd;
    int wake[2]; /* destroy writes wake[1]; the thread polls wake[0] */
    pthread_t thread;
    bool started;
    int port;
    rf_metrics_t *metrics; /* borrowed */
    rf_httpd_health_fn *health;
    void *health_arg;
};

typedef struct {
    int status;
    const char *reason;
    const char *content_type;
    const char *extra_headers; /* "" or complete "Name: value\r\n" lines */
    char *body;                /* owned by the response */
    size_t body_len;
    bool head_only;
} s_response_t;

/* Milliseconds on the monotonic clock, so deadlines survive clock jumps. */
static int64_t s_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits until fd has `events` or the deadline passes. Returns 1 when
 * ready, 0 on timeout, -1 when destroy asked the thread to stop or poll
 * failed (either way the caller should give up on the connection). */
static int s_wait(rf_httpd_t *self, int fd, short events, int64_t deadline)
{
    for (;;) {
        int64_t left = deadline - s_now_ms();
        if (left <= 0)
            return 0;
        struct pollfd pfd[2] = {{.fd = self->wake[0], .events = POLLIN}, {.fd = fd, .events = events}};
        int rc = poll(pfd, 2, (int)left);
        if (rc < 0 && errno == EINTR)
            continue;
        if (rc < 0 || pfd[0].revents)
            return -1;
        if (pfd[1].revents)
            return 1; /* includes POLLERR/POLLHUP: the next read/send reports it */
    }
}

/* Sends all of buf on the non-blocking fd before the deadline. Returns 0,
 * or -1 if the peer went away, timed out, or destroy interrupted.
 * MSG_NOSIGNAL: a scraper that hangs up mid-response must not SIGPIPE the
 * whole worker. */
static int s_send_all(rf_httpd_t *self, int fd, const char *buf, size_t len, int64_t deadline)
{
    while (len > 0) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
        if (n > 0) {
            buf += n;
            len -= (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (s_wait(self, fd, POLLOUT, deadline) != 1)
                return -1;
            continue;
        }
        return -1;
    }
    return 0;
}

/* Reads the request head (up to the blank line) into buf. Returns its
 * length (> 0), 0 if it did not fit in S_MAX_HEAD bytes (-> 431), or -1 if
 * the peer closed, errored, was too slow or destroy interrupted. The
 * deadline covers the whole head, not each read, so a client trickling a
 * byte at a time cannot hold the thread either. */
static ssize_t s_read_head(rf_httpd_t *self, int fd, char *buf)
{
    int64_t deadline = s_now_ms() + S_READ_TIMEOUT_MS;
    size_t len = 0;
    while (len < S_MAX_HEAD) {
        ssize_t n = recv(fd, buf + len, S_MAX_HEAD - len, 0);
        if (n == 0)
            return -1;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                return -1;
            if (s_wait(self, fd, POLLIN, deadline) != 1)
                return -1;
            continue;
        }
        /* rescan a few bytes back: the terminator may straddle reads */
        size_t from = len > 3 ? len - 3 : 0;
        len += (size_t)n;
        buf[len] = '\0';
        if (memmem(buf + from, len - from, "\r\n\r\n", 4) || memmem(buf + from, len - from, "\n\n", 2))
            return (ssize_t)len;
    }
    return 0;
}

/* Fills r for a plain-text body built from fmt. Returns 0, or -1 on
 * allocation failure (r->body stays NULL). */
__attribute__((format(printf, 4, 5))) static int s_text(s_response_t *r, int status, const char *reason,
                                                        const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *body = NULL;
    int n = vasprintf(&body, fmt, ap);
    va_end(ap);
    r->status = status;
    r->reason = reason;
    r->content_type = "text/plain; charset=utf-8";
    if (n < 0)
        return -1;
    r->body = body;
    r->body_len = (size_t)n;
    return 0;
}

/* Asks the health callback; the reason is squashed to one line because
 * it goes verbatim into the response body. */
static void s_healthz(rf_httpd_t *self, s_response_t *r)
{
    char reason[256] = "";
    if (!self->health || self->health(self->health_arg, reason, sizeof reason) == 0) {
        s_text(r, 200, "OK", "ok\n");
        return;
    }
    reason[sizeof reason - 1] = '\0'; /* the callback may not terminate on truncation */
    for (char *p = reason; *p; p++)
        if (*p == '\r' || *p == '\n')
            *p = ' ';
    s_text(r, 503, "Service Unavailable", "%s\n", reason[0] ? reason : "unhealthy");
}

/* Builds the response for one request head (NUL-terminated, modified in
 * place). Never fails: errors become 4xx/5xx responses; r->body is owned
 * by r and may stay NULL if even the error text could not be allocated. */
static void s_route(rf_httpd_t *self, char *head, s_response_t *r)
{
    /* request-line: METHOD SP target SP HTTP/1.x */
    char *eol = strpbrk(head, "\r\n");
    if (eol)
        *eol = '\0';
    char *save = NULL;
    char *method = strtok_r(head, " ", &save);
    char *target = strtok_r(NULL, " ", &save);
    char *version = strtok_r(NULL, " ", &save);
    if (!method || !target || !version || strtok_r(NULL, " ", &save) || strncmp(version, "HTTP/1.", 7) != 0) {
        s_text(r, 400, "Bad Request", "bad request line\n");
        return;
    }
    /* Scrapers may append parameters; they never change what we serve. */
    target[strcspn(target, "?#")] = '\0';

    bool is_metrics = strcmp(target, "/metrics") == 0;
    bool is_healthz = strcmp(target, "/healthz") == 0;
    if (!is_metrics && !is_healthz) {
        s_text(r, 404, "Not Found", "not found\n");
        return;
    }
    bool head_only = strcmp(method, "HEAD") == 0;
    if (!head_only && strcmp(method, "GET") != 0) {
        s_text(r, 405, "Method Not Allowed", "method not allowed\n");
        r->extra_headers = "Allow: GET, HEAD\r\n";
        return;
    }
    r->head_only = head_only;
    if (is_healthz) {
        s_healthz(self, r);
        return;
    }
    size_t len = 0;
    char *text = rf_metrics_render(self->metrics, &len);
    if (!text) {
        s_text(r, 500, "Internal Server Error", "metrics render failed\n");
        return;
    }
    r->status = 200;
    r->reason = "OK";
    r->content_type = "text/plain; version=0.0.4; charset=utf-8";
    r->body = text;
    r->body_len = len;
}

/* Serves one accepted connection and closes it. Never fails visibly: a
 * broken client only costs us its own connection. */
static void s_serve(rf_httpd_t *self, int fd)
{
    char head[S_MAX_HEAD + 1];
    s_response_t r = {.extra_headers = ""};
    ssize_t n = s_read_head(self, fd, head);
    if (n < 0)
        goto done;
    if (n == 0)
        s_text(&r, 431, "Request Header Fields Too Large", "request header too large\n");
    else
        s_route(self, head, &r);

    char hdr[512];
    int hlen = snprintf(hdr, sizeof hdr,
                        "HTTP/1.1 %d %s\r\n"
                        "Content-Type: %s\r\n"
                        "Content-Length: %zu\r\n"
                        "Cache-Control: no-store\r\n"
                        "%s"
                        "Connection: close\r\n\r\n",
                        r.status ? r.status : 500, r.reason ? r.reason : "Internal Server Error",
                        r.content_type ? r.content_type : "text/plain", r.body ? r.body_len : 0, r.extra_headers);
    int64_t deadline = s_now_ms() + S_WRITE_TIMEOUT_MS;
    if (hlen < 0 || (size_t)hlen >= sizeof hdr || s_send_all(self, fd, hdr, (size_t)hlen, deadline) != 0)
        goto done;
    if (r.body && !r.head_only && s_send_all(self, fd, r.body, r.body_len, deadline) != 0)
        goto done;

    /* Lingering close: closing with unread request bytes (a body, a
     * pipelined request) makes the kernel send RST, which can destroy the
     * response before the client reads it. Half-close and drain briefly. */
    shutdown(fd, SHUT_WR);
    int64_t linger = s_now_ms() + S_LINGER_MS;
    char sink[1024];
    while (s_wait(self, fd, POLLIN, linger) == 1) {
        ssize_t k = recv(fd, sink, sizeof sink, 0);
        if (k == 0 || (k < 0 && errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK))
            break;
    }
done:
    free(r.body);
    close(fd);
}

/* Thread body: accept, serve, repeat until the self-pipe is readable. */
static void *s_run(void *arg)
{
    rf_httpd_t *self = arg;
    for (;;) {
        struct pollfd pfd[2] = {{.fd = self->wake[0], .events = POLLIN}, {.fd = self->lfd, .events = POLLIN}};
        int rc = poll(pfd, 2, -1);
        if (rc < 0 && errno == EINTR)
            continue;
        if (rc < 0 || pfd[0].revents)
            break;
        if (!pfd[1].revents)
            continue;
        int fd = accept4(self->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            s_serve(self, fd);
            continue;
        }
        /* Out of descriptors: the pending connection stays queued and
         * poll() would spin on it, so back off (still wakeable). */
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
            if (s_wait(self, self->wake[0], POLLIN, s_now_ms() + 100) != 0)
                break;
    }
    return NULL;
}

/* Stores a malloc'd message in *err when err is non-NULL; allocation
 * failure leaves *err NULL, which callers must tolerate anyway. */
__attribute__((format(printf, 2, 3))) static void s_set_err(char **err, const char *fmt, ...)
{
    if (!err)
        return;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(err, fmt, ap) < 0)
        *err = NULL;
    va_end(ap);
}

/* Opens, binds and listens on the first address of host:port that works.
 * Returns the listening fd, or -1 with *err set. SO_REUSEADDR so a worker
 * restarting right after a crash can rebind past TIME_WAIT sockets. */
static int s_listen(const char *host, int port, char **err)
{
    char service[16];
    snprintf(service, sizeof service, "%d", port);
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    int gai = getaddrinfo(host, service, &hints, &res);
    if (gai != 0) {
        s_set_err(err, "rf_httpd: cannot resolve %s: %s", host, gai_strerror(gai));
        return -1;
    }
    int fd = -1;
    int saved = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            saved = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 64) == 0)
            break;
        saved = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0)
        s_set_err(err, "rf_httpd: cannot listen on %s:%d: %s", host, port, strerror(saved));
    return fd;
}

/* Beyond bind failures, also returns NULL (with *err) for a port outside
 * 0..65535, a NULL metrics registry, or when the pipe or thread cannot be
 * created. err may be NULL when the caller does not want the message. */
rf_httpd_t *rf_httpd_new(const char *host, int port, rf_metrics_t *metrics, rf_httpd_health_fn *health, void *arg,
                         char **err)
{
    if (err)
        *err = NULL;
    if (!host || !*host)
        host = "0.0.0.0";
    if (port < 0 || port > 65535) {
        s_set_err(err, "rf_httpd: invalid port %d", port);
        return NULL;
    }
    if (!metrics) {
        s_set_err(err, "rf_httpd: no metrics registry");
        return NULL;
    }
    rf_httpd_t *self = calloc(1, sizeof *self);
    if (!self) {
        s_set_err(err, "rf_httpd: out of memory");
        return NULL;
    }
    self->lfd = -1;
    self->wake[0] = self->wake[1] = -1;
    self->metrics = metrics;
    self->health = health;
    self->health_arg = arg;

    self->lfd = s_listen(host, port, err);
    if (self->lfd < 0)
        goto fail;
    struct sockaddr_storage ss;
    socklen_t sslen = sizeof ss;
    if (getsockname(self->lfd, (struct sockaddr *)&ss, &sslen) != 0) {
        s_set_err(err, "rf_httpd: getsockname: %s", strerror(errno));
        goto fail;
    }
    self->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                : ((struct sockaddr_in *)&ss)->sin_port);
    if (pipe2(self->wake, O_CLOEXEC | O_NONBLOCK) != 0) {
        s_set_err(err, "rf_httpd: pipe: %s", strerror(errno));
        goto fail;
    }

    /* The thread blocks every signal so SIGTERM/SIGINT are delivered to
     * the worker's own threads, whose handlers and zmq_poll EINTR logic
     * expect them; the mask is inherited from the creating thread. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&self->thread, NULL, s_run, self);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        s_set_err(err, "rf_httpd: pthread_create: %s", strerror(rc));
        goto fail;
    }
    self->started = true;
    return self;

fail:
    rf_httpd_destroy(&self);
    return NULL;
}

/* Returns -1 for a NULL httpd. */
int rf_httpd_port(rf_httpd_t *self)
{
    return self ? self->port : -1;
}

/* Blocks only until the thread notices the self-pipe, which every wait
 * in it watches, so at most one in-progress recv/send call long. */
void rf_httpd_destroy(rf_httpd_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    rf_httpd_t *self = *self_p;
    if (self->started) {
        /* The byte is never read, so the pipe stays readable and every
         * later poll in the thread returns at once. */
        ssize_t n;
        do
            n = write(self->wake[1], "x", 1);
        while (n < 0 && errno == EINTR);
        pthread_join(self->thread, NULL);
    }
    if (self->lfd >= 0)
        close(self->lfd);
    if (self->wake[0] >= 0)
        close(self->wake[0]);
    if (self->wake[1] >= 0)
        close(self->wake[1]);
    free(self);
    *self_p = NULL;
}
