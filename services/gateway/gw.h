/*  gw — types shared by the gateway's modules.
 *
 *  Threads: N event-loop threads each own an h2o context, a SO_REUSEPORT
 *  listener, origin connection pools and a bus submitter; thread 0 also
 *  serves the admin port. The broker runs on its own thread (gw_broker.h)
 *  and the main thread only waits for signals (SIGTERM drains, SIGHUP
 *  reloads vhosts).
 *
 *  Request path: one way, stage by stage (see "the stages" below):
 *    recv -> route -> lookup -> fetch | transform -> deliver
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
#include "rf_store.h"
#include "rf_ttl.h"

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
    /* url_rewrite patterns, compiled (pcre2_code *), one per rule. */
    void **rewrite_re;
    /* round_robin turns, one per vhost (shared by the threads). */
    atomic_uint *rr;
} gw_vhosts_t;

typedef struct {
    h2o_linklist_t link;
    char host[256]; /* the origin host, as configured */
    int port;
    int connect_ms, read_ms; /* vhosts with other timeouts get their own pool */
    bool public_only;        /* a client-named host: guarded connections, their own pool */
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
    int s3_fd;            /* storgate.listen, -1 without */
    h2o_context_t s3_ctx; /* the S3 API (gw_s3.c): its own globalconf, on this loop */
    h2o_accept_ctx_t s3_accept_ctx;
    h2o_socket_t *s3_listener;
    h2o_context_t admin_ctx; /* thread 0 only */
    h2o_accept_ctx_t admin_accept_ctx;
    h2o_socket_t *admin_listener;
    gw_vhosts_t *vhosts;
    h2o_multithread_receiver_t job_receiver;
    h2o_multithread_receiver_t control_receiver;
    h2o_multithread_receiver_t cache_receiver;   /* wake-ups of readers following a fill (gw_serve.c) */
    h2o_multithread_receiver_t meta_receiver;    /* answers of gw_meta_ask (gw_fill.c) */
    h2o_multithread_receiver_t storage_receiver; /* answers of storage probes (gw_storage.c) */
    h2o_multithread_receiver_t source_receiver;  /* wake-ups of sources filling the cache (gw_srcache.c) */
    gw_submitter_t *submitter;
    h2o_linklist_t upstreams;      /* gw_upstream_entry_t */
    h2o_timeout_t probe_timeout;   /* HTTP/1 client liveness while a job is out */
    h2o_timeout_t sg_wait_timeout; /* S3 answers held for a `timing: pre` workflow: how often they look */
    h2o_timeout_t stream_timeout;  /* results streamed while made (gw_tstream.c): how often they look */
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
    h2o_globalconf_t h2o_conf, admin_conf, s3_conf;
    gw_broker_t *broker;
    rf_metrics_t *metrics;
    rf_store_t *store;            /* the edge cache (shared by all threads) */
    struct gw_meta_t *meta;       /* shared metadata (gw_meta.c) */
    struct gw_storage_t *storage; /* the object-storage tier and backup pipe's threads (gw_storage.c) */
    char via[160];                /* "1.1 NAME": this gateway's Via entry */
    h2o_mimemap_t *mimemap;
    struct ssl_ctx_st *tls_bootstrap; /* what TLS listeners accept with (gw_tls.h); NULL without */
    /* start-up handshake: each loop thread builds its own h2o context */
    pthread_mutex_t start_mu;
    pthread_cond_t start_cv;
    int started, start_failed;
};

/* ---- the function table (gw_func.c) ------------------------------------------
 *
 * Each URL function (dims today; mp4hls, trimming, thumbnails, drm and the
 * document endpoints next) is one row: how it is recognised in a canonical
 * path, how its chain is parsed and named canonically, which bus service
 * runs it, how its source travels, its limits, and how a worker's reply
 * becomes an HTTP answer. A new worker kind adds a row, not a request path. */

typedef struct gw_req_t gw_req_t;

typedef enum {
    GW_SOURCE_WHOLE, /* the whole source: body frames, or a file reference for file origins */
    /* The worker reads what it needs by byte range, nothing is fetched
     * first: a file origin's path (bus.file_refs), else "edge:PATH", which
     * the worker reads back through this gateway with Range requests
     * (Host: source.host) — so the origin's bytes are cached and counted
     * here and workers hold no origin credentials (proto/rfb.md 2.2). */
    GW_SOURCE_RANGE,
} gw_source_mode_t;

typedef enum {
    GW_REPLY_BODY,     /* send the worker's body with its content type */
    GW_REPLY_ORIGINAL, /* send the unprocessed source, marked as a fallback */
    GW_REPLY_ERROR,    /* send `http_status` with the worker's error as the reason */
} gw_reply_action_t;

/* How one worker reply status is answered. Error lines read
 * "prefix: <worker's error, or text>" — or, without a prefix, the worker's
 * error, else text. For GW_REPLY_ORIGINAL, text is the fallback token. */
typedef struct {
    int worker_status; /* 0 ends the list */
    gw_reply_action_t action;
    int http_status;
    const char *prefix;
    const char *text;
} gw_reply_rule_t;

typedef struct gw_func_t {
    const char *name;    /* "dims": logs, errors and the cache key */
    const char *service; /* bus service that runs it: "image" */
    const char *label;   /* "image processing …" in error lines */
    /* The URL keyword as this vhost spells it ("dims", or dims.keyword). */
    const char *(*keyword)(const rf_vhost_conf_t *vh);
    /* Whether the function applies to this canonical path (and query) on
     * vhost vh. On 1, src is the source path and chain the function text
     * (both borrowed from path/query). */
    int (*match)(const rf_vhost_conf_t *vh, h2o_iovec_t path, h2o_iovec_t query, h2o_iovec_t *src, h2o_iovec_t *chain);
    /* Parses the chain into *state (allocated in the request pool). 0, or
     * -1 with a one-line reason in why (the client gets 400, no origin
     * request is made). */
    int (*parse)(gw_req_t *rc, h2o_iovec_t chain, void **state, char *why, size_t why_len);
    /* Canonical text of a parsed chain, for the cache key. 0 or -1 (short). */
    int (*canon)(const void *state, char *buf, size_t len);
    /* The chain as the worker reads it (JSON, caller owns the reference). */
    json_t *(*to_json)(const void *state);
    gw_source_mode_t source;
    /* Largest source the function takes from vh (0 = no limit); larger ones
     * are answered with the original (fallback "over_max_source_size"). */
    size_t (*source_limit)(const rf_vhost_conf_t *vh);
    /* Where the source comes from when it is not a path of the vhost's
     * origin (dims: "/dims/CHAIN/src/http://host/p" or "…/src/NAME/p"):
     * sets rc->byclient and rc->src from rc->src. Also called for each
     * redirect of such a source (rc->src then the Location, absolute).
     * 0, or -1 when answered. NULL: sources are always local. */
    int (*resolve_source)(gw_req_t *rc);
    /* The cache key's URL for such a source (what follows "/src/", canonical,
     * without the query), as resolve_source and the key name it: so that a
     * purge can reach its results. Allowlists are not consulted. 0, or -1
     * when it names no source. NULL: sources are always local. */
    int (*source_key)(const rf_vhost_conf_t *vh, h2o_iovec_t src, char *out, size_t cap);
    const gw_reply_rule_t *replies; /* worker status -> answer; others: 502 */
    /* A second job that takes the first one's 200 result as its source
     * (a video thumbnail piped through a dims chain): its chain (caller
     * owns the reference), or NULL when this request has none. NULL: never. */
    json_t *(*then)(const void *state);
    const char *then_service;            /* the second job's service */
    const gw_reply_rule_t *then_replies; /* its statuses */
    /* fallbacks counter: labels vhost, reason */
    rf_metric_t **fallbacks;
    /* The k-th result (from 0) worth making ahead once this one has been
     * answered 200 (progressive HLS: the next segments), as the text after
     * the keyword, into buf[len]: 1, or 0 when there is none. gw_transform
     * requests them through this gateway's listener as background work so
     * that they are cached when the client asks: only on a vhost whose
     * cache is on, and never from a background request (no chains of
     * them). NULL: none. */
    int (*ahead)(const void *state, int k, char *buf, size_t len);
    /* Whether vh's results are sent while the worker makes them
     * (gw_tstream.c; the worker must write them into the JOB's "out").
     * NULL: never. */
    bool (*stream)(const rf_vhost_conf_t *vh);
} gw_func_t;

/* The functions in match order, NULL-terminated. */
extern const gw_func_t *const gw_funcs[];

/* ---- per-request state ------------------------------------------------------- */

typedef enum {
    GW_CACHE_NONE,    /* not answered from the cache */
    GW_CACHE_HIT,     /* a fresh complete object */
    GW_CACHE_JOIN,    /* someone else's fill: follow it (collapsed) */
    GW_CACHE_CLAIM,   /* a new fill this request starts */
    GW_CACHE_REFRESH, /* a new fill replacing an expired object */
    GW_CACHE_STALE,   /* an expired object served while it is refreshed (stale-while-revalidate) */
} gw_cache_role_t;

/* Allocated in the request pool (freed with it). Generic state only: each
 * stage and each function keeps its own beside it. */
struct gw_req_t {
    gw_thread_t *thread;
    h2o_req_t *req;
    gw_vhosts_t *vhosts; /* the table the request started with (one reference) */
    char request_id[40];
    struct timeval started;
    /* recv */
    h2o_iovec_t path;        /* canonical path (rf_path), in the request pool */
    h2o_iovec_t query;       /* "" or "?…" exactly as the client sent it (no control bytes) */
    h2o_iovec_t host;        /* the Host routing uses (a url_rewrite may change it) */
    h2o_iovec_t log_url;     /* logged instead of the request's path (url_rewrite access_log: replace) */
    unsigned close_conn : 1; /* answer and close: the connection's framing is suspect */
    /* route */
    const rf_vhost_conf_t *vhost;
    const rf_origin_t *origin;   /* the http origin chosen for it (gw_proxy_upstream), or NULL */
    unsigned to_sibling : 1;     /* origin is the sibling that owns the key */
    const rf_origin_t *byclient; /* the origin a byclient path names (in the pool), or NULL */
    h2o_iovec_t origin_path;     /* the path the origin is asked for, when not rc->path (byclient) */
    const gw_func_t *func;       /* NULL: a plain request */
    void *func_state;            /* the parsed chain (func->parse) */
    const char *vary;            /* request headers the answer depends on (Vary), e.g. "accept" for format/auto */
    h2o_iovec_t src;             /* the function's source path (canonical) */
    /* lookup */
    h2o_iovec_t key;          /* cache key: vhost, path, query, canonical chain */
    const char *cache_status; /* Cache-Status value */
    rf_obj_t *obj;            /* the cache object to answer from (one reference), or NULL */
    rf_obj_t *stale;          /* GW_CACHE_REFRESH: the expired object being replaced (one reference) */
    rf_obj_t *fill;           /* a function result this request computes for the cache (one reference) */
    rf_obj_t *refill;         /* GW_CACHE_STALE: the refresh this request starts in the background (one
                                 reference; its base is `stale`), or NULL when another request's runs */
    gw_cache_role_t role;     /* how the request relates to obj */
    const char *cache_result; /* refract_cache_requests_total's result label */
    unsigned invalidate : 1;  /* an unsafe method: a non-error answer removes the key (RFC 9111 4.4) */
    unsigned storage_hit : 1; /* obj is being filled from the object-storage tier (gw_storage.c) */
    void *srcache_hook;       /* gw_srcache.c: the request pool's pointer to its wait, or NULL */
    /* fetch / transform */
    struct gw_stream_t *stream;
    struct gw_transform_t *transform;
    /* deliver */
    const char *note; /* fallback reason etc., for the access log */
    int client_gone;  /* the client hung up before the answer: status 0 in logs */
};

/* ---- the stages, in request order -------------------------------------------
 *
 *   gw_req.c        the h2o handler: request id, then the stages below
 *   gw_recv.c       framing checks, canonical path, Range policy
 *   gw_rewrite.c    url_rewrite: may change host, path and query
 *   gw_route.c      vhost by Host, function by path (gw_func.c)
 *   gw_lookup.c     the cache key; hit, join a fill, claim a fill, or bypass
 *   gw_storage.c    a claim on a vhost with an object-storage tier asks S3
 *                   first (a hit fills the object from there); uploads and
 *                   the backup pipe follow the fills
 *   gw_serve.c      answers from a cache object (a hit, or following a fill
 *                   gw_fill.c writes from the origin)
 *   gw_fetch.c      plain requests the cache does not take: file origin
 *                   (gw_file.c) or http origin (gw_proxy.c)
 *   gw_transform.c  function requests: source, bus job, reply mapping
 *   gw_tstream.c    a transform result sent (and kept) while the worker makes it
 *   gw_deliver.c    what every response carries, error answers, log and metrics
 *
 * Each stage returns 0 to go on, or -1 when it has answered the request. */

/* gw_recv.c */
int gw_recv(gw_req_t *rc);

/* gw_rewrite.c: url_rewrite, before the vhost is chosen. */
int gw_rewrite(gw_req_t *rc);
/* Compiles the table's url_rewrite patterns. 0, or -1 with *err malloc'd. */
int gw_rewrite_compile(gw_vhosts_t *v, char **err);
void gw_rewrite_free(gw_vhosts_t *v);

/* gw_route.c */
int gw_route(gw_req_t *rc);

/* gw_lookup.c */
int gw_lookup(gw_req_t *rc);

/* gw_srcache.c: a function's source through the edge cache (cache.sources).
 * cb gets the source as [off, off + len) of the file at path (obj: its
 * cache object, borrowed; headers: its stored headers, in the request
 * pool), or path NULL: fetch it the usual way. */
typedef void(gw_srcache_cb)(gw_req_t *rc, const char *path, uint64_t off, uint64_t len, const h2o_headers_t *headers,
                            rf_obj_t *obj);
/* 1 when the cache takes the source (cb runs, now or later on this
 * thread; or the client was answered), 0 when it does not. */
int gw_srcache_get(gw_req_t *rc, gw_srcache_cb *cb);
void gw_srcache_on_wake(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages);

/* gw_storage.c: the object-storage tier and the backup pipe. */
typedef struct gw_storage_t gw_storage_t;
/* Starts the probe and upload threads; upload events go to
 * STATE_DIR/outbox-in (storgate_scheduler.state_dir). NULL when out of memory. */
gw_storage_t *gw_storage_new(const char *state_dir);
/* Stops the threads (after the loops: no request asks any more). */
void gw_storage_destroy(gw_storage_t **st_p);
/* The stage: 1 when the request waits for a storage probe (it goes on
 * from gw_storage_on_probe), 0 to go on now (uploads queued if any). */
int gw_storage(gw_req_t *rc);
void gw_storage_on_probe(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages);
/* A purge of url (canonical path + "?query" as the key keeps it) on vhost
 * vh: deletes the stored copies of the object at it and of every function
 * result made from it, in the background (vhosts: the table vh belongs
 * to, referenced while the job waits). asked: the URL as the purge named it,
 * for the vhost's storage.cdn_purge webhook. */
void gw_storage_purge(gw_storage_t *st, const rf_vhost_conf_t *vh, gw_vhosts_t *vhosts, const char *url,
                      const char *asked);
/* A pre-warm (admin POST /prewarm): url (this gateway's own listener) is
 * fetched with Host: host on an upload thread, its body read and dropped;
 * done(arg, result) then runs on `thread`'s loop. 0, or -1 (queue full,
 * out of memory: done never runs). */
typedef struct {
    int status; /* 0: no answer (error says why) */
    char cache_status[160];
    char error[120];
    uint64_t bytes;
} gw_warm_result_t;
typedef void(gw_warm_done_fn)(void *arg, const gw_warm_result_t *r);
int gw_storage_warm(gw_storage_t *st, gw_thread_t *thread, const char *url, const char *host, const char *request_id,
                    gw_warm_done_fn *done, void *arg);
/* Runs work(arg) on a storage thread (blocking calls allowed), then
 * finish(arg) on `thread`'s (a gw_thread_t *) loop. arg belongs to the
 * caller throughout. 0, or -1 (queue full, out of memory: neither runs). */
int gw_storage_offload(gw_storage_t *st, void *thread, void (*work)(void *arg), void (*finish)(void *arg), void *arg);
/* Removes the request's cached object and its compressed variants (RFC
 * 9111 4.4, after a non-error answer to an unsafe method). */
void gw_cache_invalidate(gw_req_t *rc);
/* The query ("" or "?…") as the cache key holds it under the vhost's
 * cache.query policy (in pool, or q itself). */
h2o_iovec_t gw_key_query(const rf_cache_conf_t *c, h2o_iovec_t q, h2o_mem_pool_t *pool);
/* The values `headers` has for the names listed in a Vary value, as
 * "name:value\n" lines (names lower case, repeated headers joined with
 * ",", spaces trimmed; in pool): which variant of a response a request
 * wants. Stored with each response that has Vary as the ":vary" line. */
h2o_iovec_t gw_vary_values(h2o_iovec_t vary, const h2o_headers_t *headers, h2o_mem_pool_t *pool);
/* A stored header's value in a "name\0value\0" blob, or NULL. */
const char *gw_stored_header(const char *blob, size_t len, const char *name, size_t *vlen);
/* One line of a stored header blob ("name\0value\0…", rf_obj_headers). */
typedef struct {
    const char *name, *value; /* NUL-terminated, in the blob */
    size_t name_len, value_len;
} gw_stored_line_t;
/* The line at *at (start at 0), *at moved past it; false at the end. */
bool gw_stored_next(const char *blob, size_t len, size_t *at, gw_stored_line_t *line);
/* The stored headers of `o` as an array for rf_ttl (malloc'd, the caller
 * frees it; the strings are borrowed from the object), or NULL. */
rf_hdr_t *gw_stored_hdrs(rf_obj_t *o, size_t *n);

/* gw_serve.c: answers from rc->obj (takes over its reference); starts
 * the fill first for GW_CACHE_CLAIM / REFRESH. */
void gw_serve(gw_req_t *rc);
void gw_serve_on_wake(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages);

/* gw_compress.c: for a hit, the object's compressed variant this client
 * accepts (made now, once, when missing; a new reference), or NULL to send
 * the object as it is. */
rf_obj_t *gw_compress_variant(gw_req_t *rc, rf_obj_t *o);
/* Whether the vhost would compress this object for some client (its
 * identity answer then says Vary: Accept-Encoding) — for one still
 * filling, going by its head, so that the first answer says it too. */
bool gw_compress_applies(gw_req_t *rc, rf_obj_t *o);

/* gw_fill.c: fills `obj` (a claimed object) from the request's http
 * origin. With `stale` (the expired object it replaces; borrowed) the
 * origin is asked conditionally: a 304 remakes the object from the stale
 * copy with a new TTL, and a failure (no answer, 5xx, 4xx if enabled) is
 * answered from it with its TTL extended (the circuit breaker), unless it
 * must not be served stale. The fill runs independently of the request
 * (it goes on when the client leaves, while the object is kept). Takes its
 * own reference. 0, or -1 when nothing could start: the object failed
 * (other readers see that) and, unless `background` (a refresh made for
 * stale-while-revalidate while the request is answered from the stale
 * copy), the request has been answered (502/503). */
int gw_fill_start(gw_req_t *rc, rf_obj_t *obj, rf_obj_t *stale, bool background);
void gw_fill_on_meta(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages);

/* gw_fetch.c: answers a plain request from its origin. */
void gw_fetch(gw_req_t *rc);

/* gw_transform.c: answers a function request; results arrive through the
 * thread's job receiver (registered with gw_transform_on_jobs). With
 * rc->fill, a result is also kept in the cache (any other answer fails
 * that object, and requests that joined it compute their own). */
void gw_transform(gw_req_t *rc);
void gw_transform_on_jobs(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages);

/* gw_tstream.c: a function result sent to the client and into the
 * request's cache object while the worker makes it. */
typedef struct gw_tstream_t gw_tstream_t;
/* Called once the stream answers the request (its head is known, or it
 * failed after the worker wrote it): the transform lets go of the job. */
typedef void(gw_tstream_head_fn)(void *arg);
/* A stream for rc's job (borrowed until its REPLY: a client that leaves
 * abandons it when nothing will be kept and nobody else reads): creates
 * its file in bus.spool_dir and starts looking at it. Holds two references, the job's (gw_tstream_on_reply
 * drops it) and rc's (gw_tstream_release, when rc ends). Once the head
 * is known it takes rc->fill and answers rc itself. NULL when it cannot
 * (no spool directory, out of memory): send the job unstreamed. */
gw_tstream_t *gw_tstream_new(gw_req_t *rc, gw_job_t *job, gw_tstream_head_fn *on_head, void *arg);
/* The JOB's "out" (borrowed). */
const char *gw_tstream_ref(const gw_tstream_t *p);
/* The job came back: ends the stream (whole when the REPLY is 200 with
 * this ref, else broken off) and drops the job's reference (*p_p NULLed).
 * 1 when the stream answered the request, or 0 when nothing was streamed:
 * the transform answers the reply as usual. */
int gw_tstream_on_reply(gw_tstream_t **p_p, const rf_job_t *job);
/* The request ended: drops its reference (*p_p NULLed). */
void gw_tstream_release(gw_tstream_t **p_p);

/* gw_deliver.c */
void gw_deliver_headers(gw_req_t *rc);
void gw_send_error(gw_req_t *rc, int status, const char *reason, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Sends status + `len` bytes that stay valid until the request pool is
 * freed (HEAD gets the head only). */
void gw_deliver_body(gw_req_t *rc, int status, const char *ctype, const void *body, size_t len);
/* Answers with an unprocessed original body (a fallback; borrowed until
 * the request ends) as a static server would: 304 for a matching
 * If-None-Match / If-Modified-Since against the ETag / Last-Modified
 * already set on the answer, 206 or 416 for a single Range (If-Range
 * honoured), else 200. */
void gw_deliver_original(gw_req_t *rc, const char *ctype, const void *body, size_t len);
/* Marks the answer as the unprocessed original: the function's fallbacks
 * metric, the access-log note and X-Refract-Fallback (`reason` is a
 * static token such as "over_max_source_size"). */
void gw_deliver_mark_fallback(gw_req_t *rc, const char *reason);
/* The access log line and request metrics, when the request is freed. */
void gw_deliver_log(gw_req_t *rc);

/* gw_req.c */
void gw_req_register(h2o_hostconf_t *hostconf);

/* gw_vhost.c */
/* Takes ownership of *cfg_p (NULLed). Returns the table with one
 * reference, or NULL with *err malloc'd (a certificate that does not load,
 * out of memory); the config is destroyed then. */
gw_vhosts_t *gw_vhosts_new(rf_config_t **cfg_p, char **err);
void gw_vhosts_ref(gw_vhosts_t *v);
void gw_vhosts_unref(gw_vhosts_t **v_p);
/* The vhost serving `host` (a Host header, port ignored), the default vhost
 * when none matches, or NULL. Borrowed from the table. */
const rf_vhost_conf_t *gw_vhosts_match(const gw_vhosts_t *v, const char *host, size_t len);
h2o_handler_t *gw_vhosts_file_handler(const gw_vhosts_t *v, const rf_vhost_conf_t *vhost);
/* The standard reason phrase of an HTTP status (static). */
const char *gw_reason(int status);

/* gw_proxy.c: http origins — per-thread upstream pools and streaming. */
gw_upstream_t *gw_thread_upstream(gw_thread_t *t, const rf_origin_t *origin, const rf_vhost_conf_t *vh,
                                  const char **why);
/* The upstream of the request's vhost origin on its thread (its sibling,
 * byclient origin, or the one `balance` picks; rc->origin says which), or
 * NULL with *why set (static) and nothing answered. */
gw_upstream_t *gw_proxy_pick(gw_req_t *rc, const char **why);
/* Whether `name` (lower case, "host" or "host:port" as a URL wrote it)
 * matches one of the fnmatch patterns (case-insensitive): a pattern
 * without a port allows the host on its default port only. */
bool gw_host_allowed(const char *name, char *const *patterns, size_t n);
/* An http(s) origin for a host a client named in its URL ("host[:port]",
 * lower case, already allowed), in the request pool; NULL after answering
 * 400 "WHAT: NAME: reason". */
rf_origin_t *gw_client_origin(gw_req_t *rc, bool https, const char *name, const char *what);
/* gw_proxy_pick, answering 502 with the reason when it fails. */
gw_upstream_t *gw_proxy_upstream(gw_req_t *rc);

/* Streaming from an origin to the client, or collecting a source body.
 * With a collector, a complete 200 is handed whole to on_collected; a body
 * larger than `limit` (or any other status) is passed through to the
 * client instead, after on_passthrough(rc, reason) for the over-limit case. */
typedef struct gw_stream_t gw_stream_t;
typedef struct {
    size_t limit; /* 0 = no limit */
    void (*on_collected)(gw_req_t *rc, void *body, size_t len, const h2o_headers_t *origin_headers);
    /* The source is over `limit`: size is its Content-Length, or -1 when
     * that was found while reading (what was read then goes out first).
     * Returns 1 when the collector took over (a new stream, or answered),
     * 0 to pass this answer through whole. */
    int (*on_over_limit)(gw_req_t *rc, int64_t size);
    /* A redirect (301/302/303/307/308 with a Location): 1 when the
     * collector took it (followed it with a new stream, or answered), 0 to
     * pass it through to the client. NULL: passed through. */
    int (*on_redirect)(gw_req_t *rc, const char *location, size_t len);
    /* A 200 whose Content-Length is within `limit` is about to be
     * collected: returns a descriptor (borrowed: the collector's owner
     * closes it) that the body is written to as it arrives — on_collected
     * then gets body NULL and the length —, or -1 to collect it in memory.
     * NULL: always in memory. */
    int (*spool)(gw_req_t *rc, int64_t size);
} gw_collector_t;
/* Starts a fetch of path (origin-relative, canonical, with any query) from
 * up. forward_headers: the client's method, headers and body go along (a
 * plain request); otherwise a bare GET (a transform source). `collect`
 * may be NULL (stream to the client). */
void gw_stream_start(gw_req_t *rc, gw_upstream_t *up, const char *path, size_t path_len, int forward_headers,
                     const gw_collector_t *collect);

/* Whether origin response header i goes to clients (and into the cache):
 * not hop-by-hop, not named by Connection, not Date or Server. */
int gw_proxy_passes_header(const struct phr_header *headers, size_t n, size_t i);
/* The origin request head for the request's path (in its pool). With
 * forward_headers the client's method, headers and body go along (a plain
 * request); without, a GET with the client's end-to-end headers minus
 * Range and conditionals (a transform source, a cache fill). */
h2o_iovec_t gw_proxy_request(gw_req_t *rc, const char *path, size_t path_len, int forward_headers, int *is_head);
/* What an origin request head is made of, for code that holds no request
 * (a cache fill following a content chain). All borrowed. */
typedef struct {
    const rf_origin_t *origin;
    h2o_iovec_t path;           /* canonical, with any query */
    h2o_iovec_t method, entity; /* used with forward only */
    const h2o_headers_t *headers;
    const char *peer; /* client address for X-Forwarded-For, or NULL */
    const char *request_id;
    const char *via;    /* this gateway's Via entry, appended to the client's */
    const char *host;   /* Host to send instead of the origin's (to a sibling: the client's), or NULL */
    int sibling;        /* the request goes to a sibling: marked so that it is not passed on again */
    int no_credentials; /* drop the client's Cookie and Authorization (a byclient host) */
    int forward;        /* as gw_proxy_request's forward_headers */
} gw_origin_request_t;
h2o_iovec_t gw_proxy_request_head(h2o_mem_pool_t *pool, const gw_origin_request_t *q, int *is_head);
/* Counts (refract_origin_errors_total, by reason) and logs an origin
 * failure: the one place that names the reasons. */
void gw_origin_failed(const char *vhost, const char *request_id, const char *upstream, int status, const char *why);
/* The client's address as text ("" when unknown) into peer[len]. */
void gw_proxy_peer(h2o_req_t *req, char *peer, size_t len);

/* gw_spool.c: bus.spool_dir, where http sources are written for workers. */
/* Creates `dir` when missing and removes the files gateways of this host
 * that no longer run left there. Returns 0, or -1 after logging why. */
int gw_spool_init(const char *dir);
/* Creates a new empty file in `dir`: returns its descriptor (O_CLOEXEC)
 * with its path in *path (malloc'd; the caller unlinks and frees it), or
 * -1 with errno. */
int gw_spool_open(const char *dir, char **path);

/* gw_file.c: file origins. */
/* Serves the request's canonical path from the vhost's directory with
 * h2o's file handler (Range, conditionals, HEAD). */
void gw_file_serve(gw_req_t *rc);
/* Serves the decoded path `path` of the vhost's directory unprocessed
 * (transform fallbacks), with its content type from the extension. */
void gw_file_serve_path(gw_req_t *rc, const char *path, size_t path_len);
/* Reads a whole local source for a transform. Returns 0 with *body
 * malloc'd (caller owns) and *len set — or, when body is NULL, only checks
 * the file and sets *len (the worker reads it by reference) —, 1 when it
 * is larger than limit (nothing read), -1 when it cannot be read (*why). */
int gw_file_read_source(const rf_origin_t *o, const char *path, size_t path_len, size_t limit, void **body, size_t *len,
                        const char **why);

/* gw_admin.c */
typedef enum { GW_PURGE, GW_EXPIRE, GW_HARDPURGE } gw_purge_kind_t;
/* Applies a purge to this gateway's store: every object of `vhost` whose
 * URL (canonical path and key query) equals `pattern`, or matches it as an
 * fnmatch pattern with `glob`. Returns how many objects it touched. */
size_t gw_purge_apply(gw_server_t *srv, gw_purge_kind_t kind, const char *vhost, const char *pattern, bool glob);

/* gw_meta.c: shared metadata — "embedded" (this process only) or "redis":
 * purges published on <prefix>:purge and applied by every gateway on the
 * same Redis; Redis going away never stops serving (purges queue and go
 * out on reconnect; a gateway that was cut off revalidates everything
 * once, since it may have missed purges). */
typedef struct gw_meta_t gw_meta_t;
/* NULL with *err malloc'd on a bad setting; embedded needs no thread. */
gw_meta_t *gw_meta_new(gw_server_t *srv, char **err);
void gw_meta_destroy(gw_meta_t **m_p);
/* Tells the other gateways (no-op when embedded). Thread-safe. */
void gw_meta_publish_purge(gw_meta_t *m, gw_purge_kind_t kind, const char *vhost, const char *pattern, bool glob);

/* Sharing across gateways (redis with gateway.metadata.advertise): a fill
 * first asks Redis, in one script, whether another gateway holds the key
 * (an object entry PREFIX:obj:HASH = "EPOCH URL", set when that gateway
 * stored it, living as long as the object is fresh) or is filling it (an
 * in-flight marker PREFIX:fill:HASH, SET NX). Every purge increments
 * PREFIX:epoch, so entries made before it are ignored: a gateway never
 * fetches a copy another gateway has not purged yet. The answer arrives on
 * the asking thread's meta_receiver. */
typedef struct {
    h2o_multithread_message_t msg; /* first */
    h2o_multithread_receiver_t *reply_to;
    char key[40];    /* hex hash of the cache key */
    bool release;    /* drop our marker (no reply) */
    int64_t keep_ms; /* release: > 0, the object was stored fresh for this long: enter it */
    /* answer */
    bool won;        /* this gateway fills it (or Redis had no answer) */
    bool holds;      /* not won: the owner holds the object (else it is filling it) */
    char epoch[24];  /* the purge epoch seen by the claim (a release enters the object under it) */
    char owner[256]; /* not won: the advertised URL of that gateway */
} gw_meta_query_t;
/* Whether fills should ask (redis backend with an advertise URL). */
bool gw_meta_collapses(gw_meta_t *m);
/* Queues a query (the caller owns q until its reply arrives; release
 * queries are copied and need no reply). Without Redis the reply is "won"
 * at once. */
void gw_meta_ask(gw_meta_t *m, gw_meta_query_t *q);
void gw_admin_register(h2o_hostconf_t *hostconf, gw_server_t *server);

/* gw_server.c */
/* The event-loop thread owning an h2o context (each thread's ctx is the
 * one embedded in its gw_thread_t). */
static inline gw_thread_t *gw_thread_of(h2o_context_t *ctx)
{
    return H2O_STRUCT_FROM_MEMBER(gw_thread_t, ctx, ctx);
}
int gw_server_run(const char *config_path, rf_config_t **cfg_p);

#endif
