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
 *  One gw_upstream_t per origin (host:port) per event-loop thread holds the
 *  resolved address, the timeouts and a pool of idle keep-alive connections.
 */
#ifndef GW_ORIGIN_H
#define GW_ORIGIN_H

#define H2O_USE_LIBUV 0
#include <h2o.h>
#include <stdint.h>

#include "gw_origin_parse.h" /* struct phr_header; the head parser and its rules */

typedef struct gw_upstream_t gw_upstream_t;
typedef struct gw_fetch_t gw_fetch_t;

typedef struct {
    int connect_timeout_ms;
    int io_timeout_ms;
    int keepalive_max;
    int keepalive_timeout_ms;
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
    /* The fetch failed: status 502 (unreachable, bad response, connection
     * lost) or 504 (timed out), with a one-line reason. May come before or
     * after on_head. The fetch is freed after it returns. */
    void (*on_error)(gw_fetch_t *f, void *arg, int status, const char *why);
} gw_fetch_cbs_t;

/* Creates an upstream for host:port on `loop`, resolving the name now.
 * The lookup blocks the calling loop; each thread does it once per origin,
 * on the first request that needs it, and keeps the address until the
 * process restarts (reloads included). Returns NULL with *why (static)
 * when the name does not resolve. Caller owns; upstreams live as long as
 * their thread. */
gw_upstream_t *gw_upstream_new(h2o_loop_t *loop, const char *host, int port, const gw_upstream_opts_t *opts,
                               const char **why);

/* The "host:port" this upstream talks to (borrowed). */
const char *gw_upstream_name(gw_upstream_t *up);

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
