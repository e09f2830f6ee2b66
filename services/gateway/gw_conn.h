/*  gw_conn — reaching an HTTP/1 request's connection in libh2o 2.2.5.
 *
 *  Two things the gateway needs are not in libh2o 2.2.5's public API:
 *    - the raw request head (h2o keeps Host, Content-Length and
 *      Transfer-Encoding out of req->headers, so duplicates are invisible
 *      there), which sits at the start of the connection's input buffer
 *      until the response is complete;
 *    - the client socket's fd, to notice a client that hung up while a job
 *      is out (2.2.5 does not read a connection while its request runs).
 *  Both need the socket, which 2.2.5 keeps right after the public structs
 *  (http1 conn: h2o_conn_t then the socket; evloop socket: h2o_socket_t
 *  then the fd). With any other libh2o these return NULL / -1 and callers
 *  fall back (the framing checks then see only what h2o exposes).
 */
#ifndef GW_CONN_H
#define GW_CONN_H

#define H2O_USE_LIBUV 0
#include <h2o.h>

#if H2O_VERSION_MAJOR == 2 && H2O_VERSION_MINOR == 2 && H2O_VERSION_PATCH == 5
#define GW_CONN_KNOWN_LAYOUT 1
struct gw_h2o225_http1_conn {
    h2o_conn_t super;
    h2o_socket_t *sock;
};
struct gw_h2o225_evloop_socket {
    h2o_socket_t super;
    int fd;
};
#else
#define GW_CONN_KNOWN_LAYOUT 0
#endif

/* The client socket of an HTTP/1 request (borrowed), or NULL for HTTP/2
 * or an unknown libh2o. */
static inline h2o_socket_t *gw_conn_http1_socket(h2o_req_t *req)
{
#if GW_CONN_KNOWN_LAYOUT
    if (req->version >= 0x200)
        return NULL;
    return ((struct gw_h2o225_http1_conn *)req->conn)->sock;
#else
    (void)req;
    return NULL;
#endif
}

/* The fd of an HTTP/1 request's client socket, or -1. */
static inline int gw_conn_http1_fd(h2o_req_t *req)
{
#if GW_CONN_KNOWN_LAYOUT
    h2o_socket_t *sock = gw_conn_http1_socket(req);
    return sock != NULL ? ((struct gw_h2o225_evloop_socket *)sock)->fd : -1;
#else
    (void)req;
    return -1;
#endif
}

#endif
