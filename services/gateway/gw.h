/*  gw — types shared by the gateway's modules.
 *
 *  Threads: N event-loop threads each own an h2o context, a SO_REUSEPORT
 *  listener, origin connection pools and a bus submitter; thread 0 also
 *  serves the admin port. The broker runs on its own thread (gw_broker.h)
 *  and the main thread only waits for signals (SIGTERM drains, SIGHUP
 *  reloads vhosts).
 *
 *  Request path (gw_proxy.c):
 *    route (vhost by Host) -> split function chain -> cache lookup
 *    -> origin fetch (http: gw_origin.c, file: h2o_file_send)
 *    -> [image chain: bus job to an image worker, gw_image.c] -> client
 */
#ifndef GW_H
#define GW_H

#define H2O_USE_LIBUV 0
#include <h2o.h>
#include <pthread.h>
#include <stdatomic.h>

#include "gw_broker.h"
#include "gw_origin.h"
#include "rf_chain.h"
#include "rf_config.h"
#include "rf_metrics.h"

/* A vhost table built from one configuration; shared by all threads and
 * swapped as a whole on reload. Refcounted: each thread holds one ref for
 * its current table, each request one for the table it started with. */
typedef struct {
    atomic_int refs;
    rf_config_t *cfg; /* owned: vhosts point into it */
    const rf_vhost_conf_t *def;
    /* For file:// vhosts, h2o's own file handler (HEAD, Range, ETag and
     * conditional requests, index files), one per vhost, NULL otherwise. */
    h2o_pathconf_t *file_pathconfs;
    h2o_handler_t **file_handlers;
    h2o_mimemap_t *mimemap;
    /* TLS (gateway.tls): the default certificate's context and one per vhost
     * with its own certificate (NULL otherwise); NULL without a TLS listener. */
    struct ssl_ctx_st *tls_def;
    struct ssl_ctx_st **tls_vhost;
} gw_vhosts_t;

typedef struct {
    h2o_linklist_t link;
    char key[300]; /* host:port */
    gw_upstream_t *up;
} gw_upstream_entry_t;

typedef struct gw_server_t gw_server_t;

typedef struct {
    int idx;
    gw_server_t *server;
    int listen_fd, admin_fd, tls_fd; /* bound by the main thread, wrapped by the loop thread */
    pthread_t tid;
    h2o_context_t ctx;
    h2o_accept_ctx_t accept_ctx;
    h2o_socket_t *listener;
    h2o_accept_ctx_t tls_accept_ctx;
    h2o_socket_t *tls_listener;
    h2o_context_t admin_ctx; /* thread 0 only */
    h2o_accept_ctx_t admin_accept_ctx;
    h2o_socket_t *admin_listener;
    gw_vhosts_t *vhosts;
    h2o_multithread_receiver_t job_receiver;
    h2o_multithread_receiver_t control_receiver;
    gw_submitter_t *submitter;
    h2o_linklist_t upstreams;    /* gw_upstream_entry_t */
    h2o_timeout_t probe_timeout; /* HTTP/1 client liveness while a job is out */
    int inflight;
    int draining;
    int64_t drain_deadline_ms;
    atomic_int stopped;
    uint64_t rng;
} gw_thread_t;

struct gw_server_t {
    rf_config_t *cfg; /* start-up config: listen, bus, threads */
    int nthreads;
    gw_thread_t *threads;
    h2o_globalconf_t h2o_conf, admin_conf;
    gw_broker_t *broker;
    rf_metrics_t *metrics;
    h2o_mimemap_t *mimemap;
    struct ssl_ctx_st *tls_bootstrap; /* what TLS listeners accept with (gw_tls.h); NULL without */
    /* start-up handshake: each loop thread builds its own h2o context */
    pthread_mutex_t start_mu;
    pthread_cond_t start_cv;
    int started, start_failed;
};

/* Per-request state, allocated in the request pool (freed with it). */
typedef struct gw_req_t {
    gw_thread_t *thread;
    h2o_req_t *req;
    gw_vhosts_t *vhosts;
    const rf_vhost_conf_t *vhost;
    char request_id[40];
    h2o_iovec_t path;  /* canonical path (rf_path), in the request pool; set by gw_recv */
    h2o_iovec_t query; /* "" or "?…" exactly as the client sent it (no control bytes) */
    unsigned close_conn : 1; /* answer and close: the connection's framing is suspect */
    struct timeval started;
    const char *cache_status; /* Cache-Status value */
    struct gw_stream_t *stream;
    gw_job_t *job;    /* out on the bus, when not NULL */
    const char *note; /* fallback reason etc., for the access log */
    rf_chain_t chain; /* image function chain */
    const char *src;  /* image source path (borrowed from the request) */
    size_t src_len;
    const h2o_headers_t *stream_headers; /* origin response headers of the source */
    h2o_iovec_t file_src;                /* file origins: the normalized source path */
    h2o_timeout_entry_t probe;           /* linked while a job is out for an HTTP/1 client */
    int client_gone;                     /* the probe saw the client hang up: status 0 in logs */
} gw_req_t;

/* gw_vhost.c */
/* Takes ownership of *cfg_p (NULLed). Returns the table with one
 * reference, or NULL with *err malloc'd (a certificate that does not load,
 * out of memory); the config is destroyed then. */
gw_vhosts_t *gw_vhosts_new(rf_config_t **cfg_p, char **err);
void gw_vhosts_ref(gw_vhosts_t *v);
void gw_vhosts_unref(gw_vhosts_t **v_p);
const rf_vhost_conf_t *gw_vhosts_match(const gw_vhosts_t *v, const char *host, size_t len);
h2o_handler_t *gw_vhosts_file_handler(const gw_vhosts_t *v, const rf_vhost_conf_t *vhost);
const char *gw_reason(int status);

/* gw_recv.c: framing checks, canonical path, Range policy. Returns 0 to go
 * on, or -1 after answering (400). */
int gw_recv(gw_req_t *rc);

/* gw_proxy.c */
void gw_proxy_register(h2o_hostconf_t *hostconf);
gw_upstream_t *gw_thread_upstream(gw_thread_t *t, const rf_origin_t *origin, const char **why);
void gw_send_error(gw_req_t *rc, int status, const char *reason, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Streaming from an origin to the client, or collecting a source body.
 * Collect mode hands the whole body to on_collected, unless it is larger
 * than `limit`, in which case the stream falls back to pass-through and
 * the original is served unprocessed. */
typedef struct gw_stream_t gw_stream_t;
typedef void(gw_collected_fn)(gw_req_t *rc, void *body, size_t len, const h2o_headers_t *origin_headers);
void gw_stream_start(gw_req_t *rc, gw_upstream_t *up, const char *path, size_t path_len, int forward_headers,
                     size_t collect_limit, gw_collected_fn *on_collected);

/* Reads a whole local source for a transform. Returns 0 with *body
 * malloc'd (caller owns) and *len set — or, when body is NULL, only checks
 * the file and sets *len (the worker reads it by reference) —, 1 when it
 * is larger than limit (nothing read), -1 when it cannot be read (*why). */
int gw_file_read_source(const rf_origin_t *o, const char *path, size_t path_len, size_t limit, void **body, size_t *len,
                        const char **why);
/* Serves dir + path of a file origin unprocessed (image fallbacks). 0. */
int gw_serve_file_path(gw_req_t *rc, const char *path, size_t path_len);

/* gw_image.c */
int gw_image_handle(gw_req_t *rc, const char *src, size_t src_len, const char *chain, size_t chain_len);
void gw_image_on_jobs(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages);
void gw_image_send_original(gw_req_t *rc, void *body, size_t len, const h2o_headers_t *origin_headers,
                            const char *reason);
/* Records that an image request is answered with its original: the
 * fallbacks metric, the access-log note and the X-Refract-Fallback header
 * (`reason` is a static token such as "over_max_source_size"). */
void gw_image_mark_fallback(gw_req_t *rc, const char *reason);

/* gw_admin.c */
void gw_admin_register(h2o_hostconf_t *hostconf, gw_server_t *server);

/* gw_server.c */
gw_thread_t *gw_thread_of(h2o_context_t *ctx);
int gw_server_run(const char *config_path, rf_config_t **cfg_p);

#endif
