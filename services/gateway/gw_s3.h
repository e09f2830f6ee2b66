/*  gw_s3 — storgate's S3 API, served by the gateway on storgate.listen.
 *
 *  A request walks one way: parse (bucket, key, query) -> authenticate
 *  (rf_sigv4) -> authorise (the bucket's access rules, hidden mounts) ->
 *  read the body (plain, or aws-chunked, with its checksums) -> one
 *  operation (gw_s3_ops.c) on the bucket's path space (rf_sgfs) -> an
 *  S3 XML answer. Buckets come from the configuration (storgate.buckets
 *  with meta.expose); path-style addressing (http://HOST:PORT/BUCKET/KEY).
 *
 *  libh2o 2.2.5 reads a request body whole before the handler runs: up to
 *  32 MiB in memory, beyond that in a temporary file it maps (h2o's socket
 *  buffer spill), bounded by storgate.max_put. So one PUT holds at most
 *  32 MiB of RAM per request; the largest single PUT or part accepted is
 *  max_put (default 5 GiB, S3's own limit); larger objects go multipart.
 */
#ifndef GW_S3_H
#define GW_S3_H

#define H2O_USE_LIBUV 0
#include <h2o.h>
#include <stdbool.h>

#include "rf_sgconf.h"
#include "rf_sgfs.h"
#include "rf_sigv4.h"

typedef struct gw_server_t gw_server_t;

/* One decoded query parameter (both NUL-terminated, in the request pool). */
typedef struct {
    const char *name, *value;
} gw_s3_param_t;

#define GW_S3_MAX_PARAMS 64

typedef struct {
    h2o_req_t *req;
    const rf_sg_conf_t *sc;
    const char *bucket_name; /* "" for the service (GET /) */
    const rf_sg_bucket_t *bucket;
    char *key; /* decoded, NUL-terminated, "" when none */
    size_t key_len;
    gw_s3_param_t params[GW_S3_MAX_PARAMS];
    size_t n_params;
    rf_sigv4_auth_t auth;
    char request_id[17];
    const char *op;         /* for metrics and logs */
    h2o_mimemap_t *mimemap; /* Content-Type of files stored without one */
    const char *state_dir;  /* storgate_scheduler.state_dir: where bucket events go */
    /* S3-backed mounts: their blocking calls run on the gateway's storage
     * threads (gw_storage_offload), the answer on this request's loop. */
    struct gw_storage_t *storage;
    void *thread;  /* gw_thread_t * */
    bool s3_ok;    /* the operation serves S3-backed mounts (s_resolve passes RF_SGFS_S3_OK) */
    bool pre_done; /* its `timing: pre` event was raised and waited for: raise none again */
} gw_s3_req_t;

/* Registers the S3 handler on the host config of storgate.listen. */
void gw_s3_register(h2o_hostconf_t *host, gw_server_t *srv);

/* ---- answers (gw_s3.c) ---- */

/* An S3 error document (no body for HEAD); status from the code. */
void gw_s3_error(gw_s3_req_t *r, const char *code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Sends a finished XML document (taken: freed with the request). NULL = out of memory. */
void gw_s3_xml(gw_s3_req_t *r, int status, char *doc, size_t len);
/* An empty answer with `status` (200, 204). */
void gw_s3_empty(gw_s3_req_t *r, int status);
/* The value of query parameter name, or NULL. */
const char *gw_s3_param(const gw_s3_req_t *r, const char *name);
/* A request header's value (first), or NULL; len set. */
const char *gw_s3_header(const gw_s3_req_t *r, const char *name, size_t *len);
/* Adds a response header (copied into the pool). */
void gw_s3_set_header(gw_s3_req_t *r, const char *name, const char *value);
/* ISO 8601 with milliseconds (ListObjects) and RFC 7231 (Last-Modified) times. */
void gw_s3_iso_time(int64_t ns, char out[32]);
void gw_s3_http_time(int64_t ns, char out[40]);

/* Reads the request body through the payload checks (x-amz-content-sha256,
 * aws-chunked and its trailer, Content-MD5, x-amz-checksum-*) into *w_p.
 * Returns 0, or -1 after aborting the writer (*w_p NULL: its temporary
 * file is gone before the client hears of the refusal) and answering. */
int gw_s3_body_into(gw_s3_req_t *r, rf_sgfs_put_t **w_p);

/* The body as a whole (small XML bodies), checked the same way; *out in
 * the request pool. 0, or -1 after answering. */
int gw_s3_body_small(gw_s3_req_t *r, size_t max, char **out, size_t *len);

/* Streams an open object (fd taken) to the client: whole or the range
 * [from, to], HEAD without body. */
void gw_s3_send_file(gw_s3_req_t *r, int fd, uint64_t from, uint64_t len);
/* Starts a response of len body bytes (status as set, or 200) that gen
 * (in the request's pool, its owner's) produces with h2o_send. */
void gw_s3_start_stream(gw_s3_req_t *r, uint64_t len, h2o_generator_t *gen);

/* ---- operations (gw_s3_ops.c): each answers the request ---- */

void gw_s3_list_buckets(gw_s3_req_t *r);
void gw_s3_bucket_op(gw_s3_req_t *r);
void gw_s3_object_op(gw_s3_req_t *r);

#endif
