#include "gw_origin.h"

#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>

#include "rf_log.h"

/* picohttpparser ships inside libh2o (exported symbols) but Debian does not
 * install its header; these are its stable prototypes. */
int phr_parse_response(const char *buf, size_t len, int *minor_version, int *status, const char **msg, size_t *msg_len,
                       struct phr_header *headers, size_t *num_headers, size_t last_len);
struct phr_chunked_decoder {
    size_t bytes_left_in_chunk;
    char consume_trailer;
    char _hex_count;
    char _state;
};
ssize_t phr_decode_chunked(struct phr_chunked_decoder *decoder, char *buf, size_t *bufsz);

#define GW_MAX_HEADERS 100
#define GW_MAX_HEAD_BYTES 65536
/* Origin reads start with this much room: a typical small object (head and
 * body) arrives in one read() instead of two. */
#define GW_READ_RESERVE (32 * 1024)
/* Input buffers up to this size stay allocated between reads and on pooled
 * connections; larger ones (fast origins grow them) are freed. */
#define GW_READ_KEEP (256 * 1024)

typedef struct {
    h2o_linklist_t link;
    h2o_socket_t *sock;
    h2o_timeout_entry_t timer;
    gw_upstream_t *up;
} s_idle_t;

struct gw_upstream_t {
    h2o_loop_t *loop;
    char name[300];
    struct sockaddr_storage addr;
    socklen_t addrlen;
    gw_upstream_opts_t opts;
    h2o_timeout_t connect_timeout, io_timeout, keepalive_timeout, zero_timeout;
    h2o_linklist_t idle; /* s_idle_t, most recently returned last */
    int n_idle;
};

typedef enum { S_CONNECTING, S_HEAD, S_BODY } s_state_t;
typedef enum { B_NONE, B_LENGTH, B_CHUNKED, B_CLOSE } s_body_mode_t;

struct gw_fetch_t {
    gw_upstream_t *up;
    h2o_socket_t *sock;
    const gw_fetch_cbs_t *cbs;
    void *arg;
    h2o_iovec_t request;
    s_state_t state;
    s_body_mode_t mode;
    int64_t remaining;
    struct phr_chunked_decoder chunked;
    h2o_timeout_entry_t timer;
    const char *deferred_error; /* reported from the zero timeout */
    int deferred_status;
    struct timeval started;
    uint64_t head_usec;
    unsigned is_head : 1, reused : 1, retried : 1, paused : 1, cancelled : 1, in_cb : 1, keepalive : 1;
};

static void s_connect(gw_fetch_t *f);
static void s_on_read(h2o_socket_t *sock, const char *err);

/* ---- upstream and its idle pool ----------------------------------------- */

gw_upstream_t *gw_upstream_new(h2o_loop_t *loop, const char *host, int port, const gw_upstream_opts_t *opts,
                               const char **why)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    char port_s[16];
    snprintf(port_s, sizeof(port_s), "%d", port);
    if (getaddrinfo(host, port_s, &hints, &res) != 0 || res == NULL) {
        *why = "origin host name does not resolve";
        return NULL;
    }
    gw_upstream_t *up = calloc(1, sizeof(*up));
    if (up == NULL) {
        freeaddrinfo(res);
        *why = "out of memory";
        return NULL;
    }
    up->loop = loop;
    snprintf(up->name, sizeof(up->name), "%s:%d", host, port);
    memcpy(&up->addr, res->ai_addr, res->ai_addrlen);
    up->addrlen = res->ai_addrlen;
    freeaddrinfo(res);
    up->opts = *opts;
    h2o_timeout_init(loop, &up->connect_timeout, (uint64_t)opts->connect_timeout_ms);
    h2o_timeout_init(loop, &up->io_timeout, (uint64_t)opts->io_timeout_ms);
    h2o_timeout_init(loop, &up->keepalive_timeout, (uint64_t)opts->keepalive_timeout_ms);
    h2o_timeout_init(loop, &up->zero_timeout, 0);
    h2o_linklist_init_anchor(&up->idle);
    return up;
}

const char *gw_upstream_name(gw_upstream_t *up)
{
    return up->name;
}

static void s_idle_close(s_idle_t *idle)
{
    h2o_linklist_unlink(&idle->link);
    if (h2o_timeout_is_linked(&idle->timer))
        h2o_timeout_unlink(&idle->timer);
    idle->up->n_idle--;
    h2o_socket_close(idle->sock);
    free(idle);
}

/* An idle connection became readable: the origin closed it (or sent junk);
 * either way it can no longer carry a request. */
static void s_idle_on_read(h2o_socket_t *sock, const char *err)
{
    (void)err;
    s_idle_close(sock->data);
}

static void s_idle_on_timeout(h2o_timeout_entry_t *entry)
{
    s_idle_close(H2O_STRUCT_FROM_MEMBER(s_idle_t, timer, entry));
}

/* Takes ownership of sock: keeps it for reuse or closes it. */
static void s_pool_return(gw_upstream_t *up, h2o_socket_t *sock)
{
    if (up->n_idle >= up->opts.keepalive_max) {
        h2o_socket_close(sock);
        return;
    }
    s_idle_t *idle = calloc(1, sizeof(*idle));
    if (idle == NULL) {
        h2o_socket_close(sock);
        return;
    }
    idle->sock = sock;
    idle->up = up;
    idle->timer.cb = s_idle_on_timeout;
    sock->data = idle;
    gw_buffer_clear(&sock->input, GW_READ_KEEP);
    h2o_linklist_insert(&up->idle, &idle->link);
    up->n_idle++;
    h2o_timeout_link(up->loop, &up->keepalive_timeout, &idle->timer);
    h2o_socket_read_start(sock, s_idle_on_read);
}

/* Returns the most recently used idle connection (warmest), or NULL. */
static h2o_socket_t *s_pool_take(gw_upstream_t *up)
{
    if (h2o_linklist_is_empty(&up->idle))
        return NULL;
    s_idle_t *idle = H2O_STRUCT_FROM_MEMBER(s_idle_t, link, up->idle.prev);
    h2o_socket_t *sock = idle->sock;
    h2o_linklist_unlink(&idle->link);
    h2o_timeout_unlink(&idle->timer);
    up->n_idle--;
    free(idle);
    h2o_socket_read_stop(sock);
    return sock;
}

/* ---- fetch lifecycle --------------------------------------------------- */

static void s_timer_set(gw_fetch_t *f, h2o_timeout_t *t)
{
    if (h2o_timeout_is_linked(&f->timer))
        h2o_timeout_unlink(&f->timer);
    if (t != NULL)
        h2o_timeout_link(f->up->loop, t, &f->timer);
}

/* Frees the fetch; the socket goes back to the pool only when the response
 * was read completely on a keep-alive connection. */
static void s_free(gw_fetch_t *f, int reuse_socket)
{
    s_timer_set(f, NULL);
    if (f->sock != NULL) {
        if (reuse_socket && f->keepalive) {
            h2o_socket_read_stop(f->sock);
            s_pool_return(f->up, f->sock);
        } else {
            h2o_socket_close(f->sock);
        }
        f->sock = NULL;
    }
    free(f->request.base);
    free(f);
}

static void s_fail(gw_fetch_t *f, int status, const char *why)
{
    f->in_cb = 1;
    f->cbs->on_error(f, f->arg, status, why);
    s_free(f, 0);
}

static void s_on_timeout(h2o_timeout_entry_t *entry)
{
    gw_fetch_t *f = H2O_STRUCT_FROM_MEMBER(gw_fetch_t, timer, entry);
    if (f->deferred_error != NULL) {
        s_fail(f, f->deferred_status, f->deferred_error);
        return;
    }
    switch (f->state) {
    case S_CONNECTING: s_fail(f, 504, "origin connect timed out"); break;
    case S_HEAD: s_fail(f, 504, "origin response timed out"); break;
    default: s_fail(f, 504, "origin stalled mid-body"); break;
    }
}

/* Reports an error from the next loop iteration, so that gw_fetch_start
 * never calls back into its caller. */
static void s_fail_later(gw_fetch_t *f, int status, const char *why)
{
    f->deferred_error = why;
    f->deferred_status = status;
    s_timer_set(f, &f->up->zero_timeout);
}

static void s_on_write(h2o_socket_t *sock, const char *err)
{
    gw_fetch_t *f = sock->data;
    /* A write error shows up as a read error too; the read side decides
     * between retrying and failing, so nothing to do here. */
    (void)f;
    (void)err;
}

static void s_send_request(gw_fetch_t *f)
{
    f->state = S_HEAD;
    f->sock->data = f;
    h2o_buffer_reserve(&f->sock->input, GW_READ_RESERVE);
    h2o_iovec_t buf = f->request;
    h2o_socket_write(f->sock, &buf, 1, s_on_write);
    h2o_socket_read_start(f->sock, s_on_read);
    s_timer_set(f, &f->up->io_timeout);
}

static void s_on_connect(h2o_socket_t *sock, const char *err)
{
    gw_fetch_t *f = sock->data;
    if (err != NULL) {
        char why[400];
        snprintf(why, sizeof(why), "origin %s unreachable: %s", f->up->name, err);
        /* The socket is closed by s_free. */
        f->in_cb = 1;
        f->cbs->on_error(f, f->arg, 502, why);
        s_free(f, 0);
        return;
    }
    s_send_request(f);
}

static void s_connect(gw_fetch_t *f)
{
    f->state = S_CONNECTING;
    f->reused = 0;
    f->sock = h2o_socket_connect(f->up->loop, (struct sockaddr *)&f->up->addr, f->up->addrlen, s_on_connect);
    if (f->sock == NULL) {
        s_fail_later(f, 502, "origin unreachable: cannot create a socket");
        return;
    }
    f->sock->data = f;
    s_timer_set(f, &f->up->connect_timeout);
}

gw_fetch_t *gw_fetch_start(gw_upstream_t *up, h2o_iovec_t request, int is_head, const gw_fetch_cbs_t *cbs, void *arg)
{
    gw_fetch_t *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return NULL;
    f->up = up;
    f->cbs = cbs;
    f->arg = arg;
    f->is_head = is_head;
    f->timer.cb = s_on_timeout;
    gettimeofday(&f->started, NULL);
    f->request.base = malloc(request.len);
    if (f->request.base == NULL) {
        free(f);
        return NULL;
    }
    memcpy(f->request.base, request.base, request.len);
    f->request.len = request.len;
    if ((f->sock = s_pool_take(up)) != NULL) {
        f->reused = 1;
        s_send_request(f);
    } else {
        s_connect(f);
    }
    return f;
}

/* ---- response parsing ------------------------------------------------ */

static int s_header_is(const struct phr_header *h, const char *name)
{
    return h->name_len == strlen(name) && strncasecmp(h->name, name, h->name_len) == 0;
}

static int s_value_has_token(const struct phr_header *h, const char *token)
{
    size_t tl = strlen(token);
    for (size_t i = 0; i + tl <= h->value_len; i++)
        if (strncasecmp(h->value + i, token, tl) == 0)
            return 1;
    return 0;
}

/* Parses the head at the start of the input. Returns 1 when the body
 * phase started, 0 when more bytes are needed, -1 when the fetch ended
 * (failed or aborted; f is freed). */
static int s_parse_head(gw_fetch_t *f)
{
    for (;;) {
        struct phr_header headers[GW_MAX_HEADERS];
        size_t n = GW_MAX_HEADERS, msg_len;
        int minor, status;
        const char *msg;
        h2o_buffer_t *in = f->sock->input;
        int r = phr_parse_response(in->bytes, in->size, &minor, &status, &msg, &msg_len, headers, &n, 0);
        if (r == -2) {
            if (in->size > GW_MAX_HEAD_BYTES) {
                s_fail(f, 502, "origin response head too large");
                return -1;
            }
            return 0;
        }
        if (r < 0) {
            s_fail(f, 502, "origin sent a malformed response");
            return -1;
        }
        if (status >= 100 && status < 200 && status != 101) {
            h2o_buffer_consume(&f->sock->input, (size_t)r);
            continue; /* 100 Continue and friends precede the real head */
        }
        int64_t clen = -1;
        int chunked = 0, close = minor == 0;
        for (size_t i = 0; i < n; i++) {
            if (s_header_is(&headers[i], "content-length")) {
                char tmp[32];
                size_t l = headers[i].value_len < sizeof(tmp) - 1 ? headers[i].value_len : sizeof(tmp) - 1;
                memcpy(tmp, headers[i].value, l);
                tmp[l] = '\0';
                char *end;
                long long v = strtoll(tmp, &end, 10);
                if (end == tmp || *end != '\0' || v < 0) {
                    s_fail(f, 502, "origin sent a bad Content-Length");
                    return -1;
                }
                clen = v;
            } else if (s_header_is(&headers[i], "transfer-encoding")) {
                chunked = s_value_has_token(&headers[i], "chunked");
            } else if (s_header_is(&headers[i], "connection")) {
                if (s_value_has_token(&headers[i], "close"))
                    close = 1;
                else if (s_value_has_token(&headers[i], "keep-alive"))
                    close = 0;
            }
        }
        if (f->is_head || status == 204 || status == 304) {
            f->mode = B_NONE;
        } else if (chunked) {
            f->mode = B_CHUNKED;
            clen = -1;
        } else if (clen >= 0) {
            f->mode = B_LENGTH;
            f->remaining = clen;
        } else {
            f->mode = B_CLOSE;
            close = 1;
        }
        f->keepalive = !close;
        struct timeval now;
        gettimeofday(&now, NULL);
        f->head_usec = (uint64_t)((now.tv_sec - f->started.tv_sec) * 1000000 + (now.tv_usec - f->started.tv_usec));
        f->state = S_BODY;
        f->in_cb = 1;
        int rc = f->cbs->on_head(f, f->arg, status, headers, n, f->mode == B_NONE ? (f->is_head ? clen : 0) : clen);
        f->in_cb = 0;
        /* The headers point into the input buffer; only now may it move. */
        h2o_buffer_consume(&f->sock->input, (size_t)r);
        if (rc < 0 || f->cancelled) {
            s_free(f, 0);
            return -1;
        }
        return 1;
    }
}

/* Hands the buffered body bytes to the consumer. Returns -1 when the fetch
 * ended (f freed), 0 otherwise. */
static int s_deliver_body(gw_fetch_t *f, int at_eof)
{
    h2o_buffer_t *in = f->sock->input;
    size_t len = in->size;
    int eos = 0;
    switch (f->mode) {
    case B_NONE:
        len = 0;
        eos = 1;
        break;
    case B_LENGTH:
        if ((int64_t)len >= f->remaining) {
            if ((int64_t)len > f->remaining)
                f->keepalive = 0; /* trailing garbage: do not trust the connection */
            len = (size_t)f->remaining;
            eos = 1;
        }
        f->remaining -= (int64_t)len;
        if (at_eof && !eos) {
            s_fail(f, 502, "origin closed the connection mid-body");
            return -1;
        }
        break;
    case B_CHUNKED: {
        ssize_t r = phr_decode_chunked(&f->chunked, in->bytes, &len);
        if (r == -1) {
            s_fail(f, 502, "origin sent malformed chunked encoding");
            return -1;
        }
        if (r >= 0) {
            eos = 1;
            if (r > 0)
                f->keepalive = 0;
        } else if (at_eof) {
            s_fail(f, 502, "origin closed the connection mid-body");
            return -1;
        }
        break;
    }
    case B_CLOSE: eos = at_eof; break;
    }
    if (len > 0 || eos) {
        f->in_cb = 1;
        f->cbs->on_body(f, f->arg, in->bytes, len, eos);
        f->in_cb = 0;
    }
    if (eos || f->cancelled) {
        s_free(f, eos && !f->cancelled);
        return -1;
    }
    gw_buffer_clear(&f->sock->input, GW_READ_KEEP);
    return 0;
}

static void s_on_read(h2o_socket_t *sock, const char *err)
{
    gw_fetch_t *f = sock->data;
    s_timer_set(f, NULL);
    if (err != NULL) {
        if (f->state == S_HEAD) {
            /* A pooled connection the origin closed while idle: retry once
             * on a fresh one before anything of the response arrived. */
            if (f->reused && !f->retried && sock->input->size == 0) {
                f->retried = 1;
                h2o_socket_close(f->sock);
                f->sock = NULL;
                s_connect(f);
                return;
            }
            s_fail(f, 502, "origin closed the connection before responding");
            return;
        }
        s_deliver_body(f, 1);
        return;
    }
    if (f->state == S_HEAD) {
        int r = s_parse_head(f);
        if (r <= 0) {
            if (r == 0)
                s_timer_set(f, &f->up->io_timeout);
            return;
        }
    }
    if (s_deliver_body(f, 0) < 0)
        return;
    if (!f->paused)
        s_timer_set(f, &f->up->io_timeout);
}

void gw_fetch_pause(gw_fetch_t *f)
{
    if (f->paused || f->state != S_BODY)
        return;
    f->paused = 1;
    h2o_socket_read_stop(f->sock);
    s_timer_set(f, NULL);
}

void gw_fetch_resume(gw_fetch_t *f)
{
    if (!f->paused)
        return;
    f->paused = 0;
    h2o_socket_read_start(f->sock, s_on_read);
    s_timer_set(f, &f->up->io_timeout);
}

void gw_fetch_cancel(gw_fetch_t *f)
{
    if (f->in_cb) {
        f->cancelled = 1;
        return;
    }
    s_free(f, 0);
}

void gw_buffer_clear(h2o_buffer_t **buf, size_t keep_max)
{
    h2o_buffer_t *b = *buf;
    if (b->size == 0 && b->bytes == NULL)
        return; /* the prototype's empty buffer: nothing allocated */
    if (b->capacity <= keep_max && b->_fd == -1) {
        b->size = 0;
        b->bytes = b->_buf;
        return;
    }
    /* Too big to keep: back to the prototype's empty buffer. */
    h2o_buffer_init(buf, b->_prototype);
    h2o_buffer_dispose(&b);
}

uint64_t gw_fetch_head_usec(gw_fetch_t *f)
{
    return f->head_usec;
}
