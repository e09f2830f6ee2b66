#include "gw_origin.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <openssl/err.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "rf_log.h"

/* Origin reads start with this much room: a typical small object (head and
 * body) arrives in one read() instead of two. */
#define GW_READ_RESERVE (32 * 1024)
/* Input buffers up to this size stay allocated between reads and on pooled
 * connections; larger ones (fast origins grow them) are freed. */
#define GW_READ_KEEP (256 * 1024)

/* Resolver threads h2o runs getaddrinfo on (h2o's default is 1: one slow
 * name would hold up every other origin's lookups). */
#define GW_RESOLVER_THREADS 4

typedef struct {
    h2o_linklist_t link;
    h2o_socket_t *sock;
    h2o_timeout_entry_t timer;
    gw_upstream_t *up;
} s_idle_t;

struct gw_upstream_t {
    h2o_loop_t *loop;
    h2o_multithread_receiver_t *resolver; /* the loop's hostinfo receiver */
    char name[300];                       /* "host:port" */
    char *host;
    char port_s[8];
    /* The address connections go to. A name's address is kept until
     * addr_expires (loop ms), then looked up again on the next use while
     * connections keep going to the old one; an address literal never
     * expires. addr_gen counts changes: connections to an older address
     * are not pooled. */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    int has_addr, literal;
    uint64_t addr_expires;
    unsigned addr_gen;
    h2o_hostinfo_getaddr_req_t *lookup; /* in flight, or NULL */
    h2o_linklist_t resolving;           /* gw_fetch_t waiting for a first address */
    const gw_origin_tls_t *tls;         /* NULL = plain HTTP */
    gw_upstream_opts_t opts;
    h2o_timeout_t connect_timeout, io_timeout, keepalive_timeout, zero_timeout;
    h2o_linklist_t idle; /* s_idle_t, most recently returned last */
    int n_idle;
    /* passive health */
    int fails;
    uint64_t down_until; /* loop ms */
    bool probing;        /* the down period ended: the next failure marks it down at once */
};

typedef enum { S_RESOLVING, S_CONNECTING, S_HEAD, S_BODY } s_state_t;

struct gw_fetch_t {
    gw_upstream_t *up;
    h2o_socket_t *sock;
    h2o_linklist_t resolving; /* in up->resolving while S_RESOLVING */
    unsigned conn_gen;        /* up->addr_gen of the connection's address */
    const gw_fetch_cbs_t *cbs;
    void *arg;
    h2o_iovec_t request;
    s_state_t state;
    gw_body_mode_t mode;
    int64_t remaining;
    struct phr_chunked_decoder chunked;
    h2o_timeout_entry_t timer;
    const char *deferred_error; /* reported from the zero timeout (static, or deferred_text) */
    int deferred_status;
    char deferred_text[400];
    struct timeval started;
    uint64_t head_usec;
    unsigned is_head : 1, reused : 1, retried : 1, paused : 1, cancelled : 1, in_cb : 1, keepalive : 1;
};

static void s_connect(gw_fetch_t *f);
static void s_on_read(h2o_socket_t *sock, const char *err);
static void s_idle_close(s_idle_t *idle);
static void s_fail(gw_fetch_t *f, int status, const char *why);
static void s_health(gw_upstream_t *up, bool ok);

/* Closes a connection. h2o's TLS shutdown may leave an entry in this
 * thread's OpenSSL error queue, which would make a later SSL_read on
 * another connection of the thread look failed: it is emptied. */
static void s_sock_close(h2o_socket_t *sock)
{
    int tls = sock->ssl != NULL;
    h2o_socket_close(sock);
    if (tls)
        ERR_clear_error();
}

/* ---- upstream and its idle pool ----------------------------------------- */

static pthread_once_t s_resolver_once = PTHREAD_ONCE_INIT;

static void s_resolver_init(void)
{
    if (h2o_hostinfo_max_threads < GW_RESOLVER_THREADS)
        h2o_hostinfo_max_threads = GW_RESOLVER_THREADS;
}

/* Fills up->addr from an address literal (IPv4 or IPv6) host. Returns 1
 * when host is one, 0 when it is a name to look up. */
static int s_addr_literal(gw_upstream_t *up, const char *host, int port)
{
    struct sockaddr_in *sin = (struct sockaddr_in *)&up->addr;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&up->addr;
    if (inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)port);
        up->addrlen = sizeof(*sin);
        return 1;
    }
    memset(&up->addr, 0, sizeof(up->addr));
    if (inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)port);
        up->addrlen = sizeof(*sin6);
        return 1;
    }
    memset(&up->addr, 0, sizeof(up->addr));
    return 0;
}

gw_upstream_t *gw_upstream_new(h2o_loop_t *loop, h2o_multithread_receiver_t *resolver, const char *host, int port,
                               const gw_upstream_opts_t *opts)
{
    pthread_once(&s_resolver_once, s_resolver_init);
    gw_upstream_t *up = calloc(1, sizeof(*up));
    if (up == NULL || (up->host = strdup(host)) == NULL) {
        free(up);
        return NULL;
    }
    up->loop = loop;
    up->resolver = resolver;
    snprintf(up->name, sizeof(up->name), "%s:%d", host, port);
    snprintf(up->port_s, sizeof(up->port_s), "%d", port);
    up->literal = up->has_addr = s_addr_literal(up, host, port);
    up->tls = opts->tls;
    up->opts = *opts;
    h2o_timeout_init(loop, &up->connect_timeout, (uint64_t)opts->connect_timeout_ms);
    h2o_timeout_init(loop, &up->io_timeout, (uint64_t)opts->io_timeout_ms);
    h2o_timeout_init(loop, &up->keepalive_timeout, (uint64_t)opts->keepalive_timeout_ms);
    h2o_timeout_init(loop, &up->zero_timeout, 0);
    h2o_linklist_init_anchor(&up->idle);
    h2o_linklist_init_anchor(&up->resolving);
    return up;
}

const char *gw_upstream_name(gw_upstream_t *up)
{
    return up->name;
}

const gw_origin_tls_t *gw_upstream_tls(gw_upstream_t *up)
{
    return up->tls;
}

/* ---- name resolution ------------------------------------------------------ */

/* Closes every idle connection: they go to an address the name no longer
 * has. */
static void s_pool_flush(gw_upstream_t *up)
{
    while (!h2o_linklist_is_empty(&up->idle))
        s_idle_close(H2O_STRUCT_FROM_MEMBER(s_idle_t, link, up->idle.next));
}

/* A lookup answered, on the loop (h2o's hostinfo receiver). Takes the first
 * address (getaddrinfo's preference order), then connects or fails the
 * fetches that were waiting for one. */
static void s_on_resolved(h2o_hostinfo_getaddr_req_t *req, const char *errstr, struct addrinfo *res, void *cbdata)
{
    (void)req;
    gw_upstream_t *up = cbdata;
    up->lookup = NULL;
    struct addrinfo *ai = res;
    while (ai != NULL && ai->ai_family != AF_INET && ai->ai_family != AF_INET6)
        ai = ai->ai_next;
    char why[400] = "";
    if (errstr != NULL || ai == NULL || ai->ai_addrlen > sizeof(up->addr)) {
        snprintf(why, sizeof(why), "origin host name does not resolve: %s (%s)", up->name,
                 errstr ? errstr : "no address");
        /* Not remembered: the next connection looks the name up again. A
         * name that resolved before keeps its last address meanwhile. */
        up->addr_expires = 0;
        if (up->has_addr)
            rf_log(RF_LOG_WARN, NULL, "%s; still using its previous address", why);
    } else {
        if (!up->has_addr || up->addrlen != ai->ai_addrlen || memcmp(&up->addr, ai->ai_addr, ai->ai_addrlen) != 0) {
            char host[INET6_ADDRSTRLEN] = "?";
            const void *a = ai->ai_family == AF_INET ? (const void *)&((struct sockaddr_in *)ai->ai_addr)->sin_addr
                                                     : (const void *)&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr;
            inet_ntop(ai->ai_family, a, host, sizeof(host));
            if (up->has_addr) {
                rf_log(RF_LOG_INFO, NULL, "origin %s now resolves to %s", up->name, host);
                s_pool_flush(up);
            }
            memset(&up->addr, 0, sizeof(up->addr));
            memcpy(&up->addr, ai->ai_addr, ai->ai_addrlen);
            up->addrlen = ai->ai_addrlen;
            up->addr_gen++;
            up->has_addr = 1;
        }
        up->addr_expires = h2o_now(up->loop) + (uint64_t)up->opts.resolve_ttl_ms;
    }
    /* Only the fetches waiting now: one started from a callback below
     * waits for a lookup of its own. */
    h2o_linklist_t waiting;
    h2o_linklist_init_anchor(&waiting);
    h2o_linklist_insert_list(&waiting, &up->resolving);
    while (!h2o_linklist_is_empty(&waiting)) {
        gw_fetch_t *f = H2O_STRUCT_FROM_MEMBER(gw_fetch_t, resolving, waiting.next);
        h2o_linklist_unlink(&f->resolving);
        if (up->has_addr)
            s_connect(f);
        else
            s_fail(f, 502, why);
    }
}

/* Starts a lookup when the upstream has no address yet or its address is
 * past its TTL, unless one is already in flight. Never blocks: h2o runs
 * getaddrinfo on its resolver threads and answers through the loop. */
static void s_resolve_if_stale(gw_upstream_t *up)
{
    if (up->literal || up->lookup != NULL)
        return;
    if (up->has_addr && h2o_now(up->loop) < up->addr_expires)
        return;
    up->lookup = h2o_hostinfo_getaddr(up->resolver, h2o_iovec_init(up->host, strlen(up->host)),
                                      h2o_iovec_init(up->port_s, strlen(up->port_s)), AF_UNSPEC, SOCK_STREAM,
                                      IPPROTO_TCP, AI_NUMERICSERV, s_on_resolved, up);
}

static void s_idle_close(s_idle_t *idle)
{
    h2o_linklist_unlink(&idle->link);
    if (h2o_timeout_is_linked(&idle->timer))
        h2o_timeout_unlink(&idle->timer);
    idle->up->n_idle--;
    s_sock_close(idle->sock);
    free(idle);
}

/* An idle connection became readable: the origin closed it (or sent junk);
 * either way it can no longer carry a request. */
static void s_idle_on_read(h2o_socket_t *sock, const char *err)
{
    /* A TLS record that carries no data (a session ticket) is no reason
     * to give the connection up. */
    if (err == NULL && sock->ssl != NULL && sock->input->size == 0)
        return;
    s_idle_close(sock->data);
}

static void s_idle_on_timeout(h2o_timeout_entry_t *entry)
{
    s_idle_close(H2O_STRUCT_FROM_MEMBER(s_idle_t, timer, entry));
}

/* Takes ownership of sock: keeps it for reuse or closes it (also when it
 * goes to an address the name no longer has: gen is not up->addr_gen). */
static void s_pool_return(gw_upstream_t *up, h2o_socket_t *sock, unsigned gen)
{
    if (up->n_idle >= up->opts.keepalive_max || gen != up->addr_gen) {
        s_sock_close(sock);
        return;
    }
    s_idle_t *idle = calloc(1, sizeof(*idle));
    if (idle == NULL) {
        s_sock_close(sock);
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

/* Whether an idle connection is still quiet: no unread bytes and no EOF
 * waiting in the kernel (the idle read callback may not have run yet). Bytes
 * the origin sent without being asked would otherwise be read as the head
 * of the next response. Returns 1 when the connection can carry a request. */
static int s_idle_is_quiet(h2o_socket_t *sock)
{
    char c;
    int fd = h2o_socket_get_fd(sock);
    if (fd < 0)
        return 0;
    ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

/* Returns the most recently used idle connection (warmest) that is still
 * quiet, closing the ones that are not, or NULL. Caller owns the socket. */
static h2o_socket_t *s_pool_take(gw_upstream_t *up)
{
    while (!h2o_linklist_is_empty(&up->idle)) {
        s_idle_t *idle = H2O_STRUCT_FROM_MEMBER(s_idle_t, link, up->idle.prev);
        if (!s_idle_is_quiet(idle->sock)) {
            s_idle_close(idle);
            continue;
        }
        h2o_socket_t *sock = idle->sock;
        h2o_linklist_unlink(&idle->link);
        h2o_timeout_unlink(&idle->timer);
        up->n_idle--;
        free(idle);
        h2o_socket_read_stop(sock);
        return sock;
    }
    return NULL;
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
    if (h2o_linklist_is_linked(&f->resolving))
        h2o_linklist_unlink(&f->resolving);
    if (f->sock != NULL) {
        if (reuse_socket && f->keepalive) {
            h2o_socket_read_stop(f->sock);
            s_pool_return(f->up, f->sock, f->conn_gen);
        } else {
            s_sock_close(f->sock);
        }
        f->sock = NULL;
    }
    free(f->request.base);
    free(f);
}

bool gw_upstream_up(gw_upstream_t *up)
{
    uint64_t now = h2o_now(up->loop);
    if (up->down_until == 0 || now >= up->down_until) {
        if (up->down_until != 0)
            up->probing = true, up->down_until = 0;
        return true;
    }
    return false;
}

static void s_health(gw_upstream_t *up, bool ok)
{
    if (ok) {
        up->fails = 0;
        up->probing = false;
        return;
    }
    if (up->opts.fails_max <= 0)
        return;
    if (up->probing || ++up->fails >= up->opts.fails_max) {
        up->down_until = h2o_now(up->loop) + (uint64_t)up->opts.down_ms;
        up->fails = 0;
        up->probing = false;
        rf_warn("origin %s marked down for %d ms (passive health)", up->name, up->opts.down_ms);
    }
}

static void s_fail(gw_fetch_t *f, int status, const char *why)
{
    s_health(f->up, false);
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
    case S_RESOLVING: s_fail(f, 504, "origin connect timed out: host name lookup pending"); break;
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

/* Whether a handshake error from h2o is only its own post-handshake name
 * check (run for TLS 1.2 only). It duplicates, less exactly (no IP address
 * names), the check OpenSSL already made inside the handshake when verify
 * is on, and is unwanted when verify is off. Returns 1 or 0. */
static int s_tls_err_is_h2o_name_check(const char *err)
{
    return err == h2o_socket_error_ssl_cert_name_mismatch || err == h2o_socket_error_ssl_cert_invalid ||
           err == h2o_socket_error_ssl_no_cert;
}

/* Whether a failed handshake's error is OpenSSL's verdict on the
 * certificate (h2o passes X509_verify_cert_error_string of the verify
 * result) rather than a failure of the connection or the protocol. */
static int s_tls_err_is_verify(const gw_upstream_t *up, const char *err)
{
    return gw_origin_tls_verifies(up->tls) && err != h2o_socket_error_out_of_memory && err != h2o_socket_error_io &&
           err != h2o_socket_error_closed && err != h2o_socket_error_conn_fail && err != h2o_socket_error_ssl_decode &&
           strcmp(err, "ssl handshake failure") != 0 && strcmp(err, "picotls handshake error") != 0;
}

static void s_on_handshake(h2o_socket_t *sock, const char *err)
{
    gw_fetch_t *f = sock->data;
    if (err != NULL && !s_tls_err_is_h2o_name_check(err)) {
        char why[600];
        if (s_tls_err_is_verify(f->up, err)) {
            snprintf(why, sizeof(why), "origin %s TLS: certificate verify failed: %s (name '%s')", f->up->name, err,
                     gw_origin_tls_name(f->up->tls));
        } else {
            /* OpenSSL's queue says more than h2o's summary, e.g. the
             * origin's alert ("tlsv13 alert certificate required"). */
            unsigned long e = ERR_peek_last_error();
            const char *detail = e ? ERR_reason_error_string(e) : NULL;
            snprintf(why, sizeof(why), "origin %s TLS: handshake failed: %s%s%s", f->up->name, err, detail ? ": " : "",
                     detail ? detail : "");
        }
        ERR_clear_error();
        s_health(f->up, false);
        f->in_cb = 1;
        f->cbs->on_error(f, f->arg, 502, why);
        s_free(f, 0);
        return;
    }
    ERR_clear_error();
    s_send_request(f);
}

static void s_on_connect(h2o_socket_t *sock, const char *err)
{
    gw_fetch_t *f = sock->data;
    if (err != NULL) {
        char why[400];
        snprintf(why, sizeof(why), "origin %s unreachable: %s", f->up->name, err);
        /* The socket is closed by s_free. */
        s_health(f->up, false);
        f->in_cb = 1;
        f->cbs->on_error(f, f->arg, 502, why);
        s_free(f, 0);
        return;
    }
    if (f->up->tls != NULL) {
        /* Still S_CONNECTING: connect_timeout bounds the handshake too. */
        h2o_socket_ssl_handshake(sock, gw_origin_tls_ctx(f->up->tls), gw_origin_tls_name(f->up->tls), s_on_handshake);
        return;
    }
    s_send_request(f);
}

/* Bytes the kernel may queue for one origin connection. libh2o 2.2.5 reads
 * a socket until it is empty, into one buffer, so with the receive buffer
 * left to autotuning (it grows to tcp_rmem's max, 32 MB here) a fast origin
 * makes a 32-64 MB read buffer per fill. A fixed 1 MiB keeps loopback and
 * LAN fills at full speed. */
#define GW_ORIGIN_RCVBUF (1 << 20)

/* h2o_socket_connect with a bounded receive buffer (set before connect, so
 * the window is negotiated with it). NULL when no socket could be made. */
static h2o_socket_t *s_socket_connect(h2o_loop_t *loop, struct sockaddr *addr, socklen_t addrlen)
{
    int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return NULL;
    int rcvbuf = GW_ORIGIN_RCVBUF, one = 1;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (!(connect(fd, addr, addrlen) == 0 || errno == EINPROGRESS)) {
        close(fd);
        return NULL;
    }
    h2o_socket_t *sock = h2o_evloop_socket_create(loop, fd, H2O_SOCKET_FLAG_IS_CONNECTING);
    h2o_socket_notify_write(sock, s_on_connect);
    return sock;
}


/* Connects to the upstream's address, or, when it has none yet, waits for
 * the lookup (S_RESOLVING, bounded by connect_timeout). */
/* What kind of non-public IPv4 address v4 is, with its article ("a
 * loopback"), or NULL for a public one. */
static const char *s_nonpublic_v4(uint32_t v4)
{
    static const struct {
        uint32_t net, mask;
        const char *kind;
    } ranges[] = {
        {0x00000000, 0xff000000, "an unspecified"},            /* 0.0.0.0/8 */
        {0x7f000000, 0xff000000, "a loopback"},                /* 127/8 */
        {0x0a000000, 0xff000000, "a private"},                 /* 10/8 */
        {0xac100000, 0xfff00000, "a private"},                 /* 172.16/12 */
        {0xc0a80000, 0xffff0000, "a private"},                 /* 192.168/16 */
        {0xa9fe0000, 0xffff0000, "a link-local"},              /* 169.254/16 (cloud metadata) */
        {0x64400000, 0xffc00000, "a shared (carrier NAT)"},    /* 100.64/10 */
        {0xc0000000, 0xffffff00, "a reserved"},                /* 192.0.0/24 */
        {0xc0000200, 0xffffff00, "a documentation"},           /* 192.0.2/24 TEST-NET-1 */
        {0xc6336400, 0xffffff00, "a documentation"},           /* 198.51.100/24 TEST-NET-2 */
        {0xcb007100, 0xffffff00, "a documentation"},           /* 203.0.113/24 TEST-NET-3 */
        {0xc6120000, 0xfffe0000, "a reserved (benchmarking)"}, /* 198.18/15 */
        {0xe0000000, 0xf0000000, "a multicast"},               /* 224/4 */
        {0xf0000000, 0xf0000000, "a reserved"},                /* 240/4 and broadcast */
    };
    for (size_t i = 0; i < sizeof(ranges) / sizeof(ranges[0]); i++)
        if ((v4 & ranges[i].mask) == ranges[i].net)
            return ranges[i].kind;
    return NULL;
}

static uint32_t s_v4_at(const uint8_t *b)
{
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

/* What kind of non-public address `sa` is, with its article, or NULL for
 * a public one. IPv6 forms that carry an IPv4 address (mapped, NAT64,
 * 6to4) are judged by that address; Teredo is refused outright. */
static const char *s_nonpublic(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return s_nonpublic_v4(ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr));
    if (sa->sa_family != AF_INET6)
        return "a non-IP";
    const uint8_t *b = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    static const uint8_t nat64[12] = {0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0};
    static const uint8_t zero[16] = {0};
    if (memcmp(b, mapped, 12) == 0 || memcmp(b, nat64, 12) == 0)
        return s_nonpublic_v4(s_v4_at(b + 12));
    if (b[0] == 0x20 && b[1] == 0x02) /* 6to4: the IPv4 address in bits 16-47 */
        return s_nonpublic_v4(s_v4_at(b + 2));
    if (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0 && b[3] == 0)
        return "a Teredo";
    if (memcmp(b, zero, 16) == 0)
        return "an unspecified";
    if (memcmp(b, zero, 15) == 0 && b[15] == 1)
        return "a loopback";
    if ((b[0] & 0xfe) == 0xfc)
        return "a private (unique local)";
    if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80)
        return "a link-local";
    if (b[0] == 0xff)
        return "a multicast";
    if (memcmp(b, zero, 10) == 0) /* the rest of ::/80: IPv4-compatible, reserved */
        return "a reserved";
    if (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x0d && b[3] == 0xb8)
        return "a documentation";
    return NULL;
}

static void s_connect(gw_fetch_t *f)
{
    gw_upstream_t *up = f->up;
    f->reused = 0;
    s_resolve_if_stale(up);
    if (!up->has_addr) {
        f->state = S_RESOLVING;
        h2o_linklist_insert(&up->resolving, &f->resolving);
        s_timer_set(f, &up->connect_timeout);
        return;
    }
    /* A host a client named: checked on the address about to be used,
     * after resolution, so that a name resolving to 127.0.0.1 is caught. */
    const char *kind = up->opts.public_only ? s_nonpublic((const struct sockaddr *)&up->addr) : NULL;
    if (kind != NULL) {
        char addr[INET6_ADDRSTRLEN] = "?";
        const struct sockaddr *sa = (const struct sockaddr *)&up->addr;
        inet_ntop(sa->sa_family,
                  sa->sa_family == AF_INET ? (const void *)&((const struct sockaddr_in *)sa)->sin_addr
                                           : (const void *)&((const struct sockaddr_in6 *)sa)->sin6_addr,
                  addr, sizeof(addr));
        snprintf(f->deferred_text, sizeof(f->deferred_text), "source %.200s refused: it resolves to %s, %s address",
                 up->name, addr, kind);
        s_fail_later(f, 403, f->deferred_text);
        return;
    }
    f->state = S_CONNECTING;
    f->conn_gen = up->addr_gen;
    f->sock = s_socket_connect(f->up->loop, (struct sockaddr *)&f->up->addr, f->up->addrlen);
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
    /* A warm connection needs no address, but a stale address is looked up
     * again now so that a changed one is followed. */
    s_resolve_if_stale(up);
    if ((f->sock = s_pool_take(up)) != NULL) {
        f->reused = 1;
        f->conn_gen = up->addr_gen;
        s_send_request(f);
    } else {
        s_connect(f);
    }
    return f;
}

/* ---- response parsing ------------------------------------------------ */

/* Parses the head at the start of the input (gw_origin_parse_head has the
 * rules). Returns 1 when the body phase started, 0 when more bytes are
 * needed, -1 when the fetch ended (failed or aborted; f is freed). */
static int s_parse_head(gw_fetch_t *f)
{
    gw_origin_head_t head;
    const char *why = NULL;
    h2o_buffer_t *in = f->sock->input;
    int r = gw_origin_parse_head(in->bytes, in->size, f->is_head, &head, &why);
    if (r == 0)
        return 0;
    if (r < 0) {
        s_fail(f, 502, why);
        return -1;
    }
    f->mode = head.body;
    f->remaining = head.body == GW_BODY_LENGTH ? head.content_length : 0;
    f->keepalive = head.keepalive;
    /* Trailers are read (and dropped) so that a complete chunked body
     * leaves the connection at the next response. */
    f->chunked.consume_trailer = 1;
    struct timeval now;
    gettimeofday(&now, NULL);
    f->head_usec = (uint64_t)((now.tv_sec - f->started.tv_sec) * 1000000 + (now.tv_usec - f->started.tv_usec));
    f->state = S_BODY;
    s_health(f->up, true);
    f->in_cb = 1;
    int64_t clen = head.body == GW_BODY_NONE ? (f->is_head ? head.content_length : 0) : head.content_length;
    int rc = f->cbs->on_head(f, f->arg, head.status, head.headers, head.n_headers, clen);
    f->in_cb = 0;
    /* The headers point into the input buffer; only now may it move. */
    h2o_buffer_consume(&f->sock->input, (size_t)r);
    if (rc < 0 || f->cancelled) {
        s_free(f, 0);
        return -1;
    }
    return 1;
}

/* Hands the buffered body bytes to the consumer. Returns -1 when the fetch
 * ended (f freed), 0 otherwise. */
static int s_deliver_body(gw_fetch_t *f, int at_eof)
{
    h2o_buffer_t *in = f->sock->input;
    size_t len = in->size;
    int eos = 0;
    switch (f->mode) {
    case GW_BODY_NONE:
        /* Bytes after a bodyless response are not the next response: an
         * origin that sends them (a HEAD or 204 "with a body") is out of
         * step with us, so the connection is not reused. */
        if (len > 0)
            f->keepalive = 0;
        len = 0;
        eos = 1;
        break;
    case GW_BODY_LENGTH:
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
    case GW_BODY_CHUNKED: {
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
    case GW_BODY_CLOSE: eos = at_eof; break;
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
                s_sock_close(f->sock);
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
