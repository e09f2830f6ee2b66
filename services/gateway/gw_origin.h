/*  gw_origin — the gateway's HTTP/1.1 client to origins, on the same event
 *  loop as the server.
 *
 *  Why not h2o's own http1client: in libh2o 2.2.5 it re-arms its I/O timeout
 *  on every read and cannot pause reading, so a slow client would make the
 *  gateway buffer a whole origin object in memory. This client delivers body
 *  bytes as they arrive and can be paused (no reads, no timeout) while the
 *  client side catches up, so memory per request stays bounded whatever the
 *  object size.
 *
 *  One gw_upstream_t per origin (scheme, host:port and TLS setting) per
 *  event-loop thread holds the address, the timeouts and a pool of idle
 *  keep-alive connections.
 *
 *  Names. A host name is looked up with h2o_hostinfo_getaddr: getaddrinfo
 *  runs on h2o's resolver threads and the answer comes back on the loop
 *  through the context's hostinfo receiver, so a slow resolver never
 *  blocks an event loop. Fetches that need a connection before the first
 *  answer wait for it (bounded by connect_timeout). The address is kept for
 *  resolve_ttl; the first use after that starts a new lookup while
 *  connections keep going to the old address. When the answer differs,
 *  idle connections to the old address are closed and busy ones are not
 *  pooled. A failed lookup is not remembered: with no address yet the
 *  waiting fetches get 502 "origin host name does not resolve", and the
 *  next request looks again; a name that resolved before keeps its last
 *  address meanwhile. Address literals are never looked up.
 *
 *  TLS (https:// origins). After connect, h2o_socket_ssl_handshake runs
 *  with the shared SSL_CTX of the origin's TLS setting (gw_origin_tls.h:
 *  CA, verify, SNI name, client certificate) inside connect_timeout.
 *  OpenSSL verifies chain and name during the handshake; a failure is a
 *  502 "origin host:port TLS: certificate verify failed: <reason>".
 *  TLS connections are pooled and reused like plain ones.
 */
#ifndef GW_ORIGIN_H
#define GW_ORIGIN_H

#define H2O_USE_LIBUV 0
#include <h2o.h>
#include <stdint.h>

#include "gw_origin_parse.h" /* struct phr_header; the head parser and its rules */
#include "gw_origin_tls.h"

typedef struct gw_upstream_t gw_upstream_t;
typedef struct gw_fetch_t gw_fetch_t;

typedef struct {
    int connect_timeout_ms;
    int io_timeout_ms;
    int keepalive_max;
    int keepalive_timeout_ms;
    int resolve_ttl_ms;         /* how long a looked-up address is used */
    const gw_origin_tls_t *tls; /* https: the TLS setting (borrowed, process lifetime); NULL = http */
    int fails_max;              /* passive health: failures in a row that mark it down (0 = never) */
    int down_ms;                /* how long it stays down before a request tries it again */
    bool public_only;           /* refuse to connect to loopback, private, link-local, … addresses (403) */
} gw_upstream_opts_t;

typedef struct {
    /* The response head arrived, already checked by gw_origin_parse_head
     * (a head it refuses is an on_error 502 instead). Headers with a NULL
     * name do not occur. content_length is -1 when unknown. Return
     * 0 to receive the body, -1 to abort (the fetch is freed on return and
     * no other callback follows). */
    int (*on_head)(gw_fetch_t *f, void *arg, int status, const struct phr_header *headers, size_t n,
                   int64_t content_length);
    /* Body bytes, valid only during the call. When eos is set this is the
     * last call and the fetch is freed after it returns. The consumer may
     * call gw_fetch_pause from here. */
    void (*on_body)(gw_fetch_t *f, void *arg, const char *data, size_t len, int eos);
    /* The fetch failed: status 502 (unreachable, name does not resolve,
     * TLS handshake or certificate, bad response, connection lost) or 504
     * (timed out), with a one-line reason. May come before or
     * after on_head. The fetch is freed after it returns. */
    void (*on_error)(gw_fetch_t *f, void *arg, int status, const char *why);
} gw_fetch_cbs_t;

/* Creates an upstream for host:port on `loop`. Nothing is looked up yet:
 * the first fetch that needs a connection starts the lookup, answered
 * through `resolver` (the loop's h2o context's receivers.hostinfo_getaddr).
 * Returns NULL only when out of memory. Caller owns; upstreams live as long
 * as their thread (a lookup in flight holds a pointer to it). */
gw_upstream_t *gw_upstream_new(h2o_loop_t *loop, h2o_multithread_receiver_t *resolver, const char *host, int port,
                               const gw_upstream_opts_t *opts);

/* The "host:port" this upstream talks to (borrowed). */
const char *gw_upstream_name(gw_upstream_t *up);

/* Passive health: whether requests should go here now. An upstream is
 * marked down after fails_max failed fetches in a row (no answer,
 * timeouts, broken responses) for down_ms; then one request tries it — a
 * response head brings it back, a failure marks it down again. */
bool gw_upstream_up(gw_upstream_t *up);

/* The TLS setting it was created with (borrowed), NULL for http. */
const gw_origin_tls_t *gw_upstream_tls(gw_upstream_t *up);

/* Starts a request. `request` is the complete request head (and body, if
 * any) to write; it is copied. `is_head` tells the parser the response has
 * no body. Callbacks run on the loop, never from inside this call. Returns
 * the fetch (owned by the machinery: it frees itself after the final
 * callback) — the caller may use it only until that callback. */
gw_fetch_t *gw_fetch_start(gw_upstream_t *up, h2o_iovec_t request, int is_head, const gw_fetch_cbs_t *cbs, void *arg);

/* Stops reading (and the read timeout) until gw_fetch_resume. */
void gw_fetch_pause(gw_fetch_t *f);
void gw_fetch_resume(gw_fetch_t *f);

/* Abandons the fetch: no further callbacks; the connection is closed.
 * Safe from inside a callback. */
void gw_fetch_cancel(gw_fetch_t *f);

/* Empties *buf. h2o_buffer_consume frees a buffer it empties, so a busy
 * stream would allocate (and page-fault) a fresh one per read; this keeps
 * allocations of up to keep_max bytes for reuse and frees larger ones. */
void gw_buffer_clear(h2o_buffer_t **buf, size_t keep_max);

/* Microseconds from start to the response head (0 before it). */
uint64_t gw_fetch_head_usec(gw_fetch_t *f);

#endif
