/*  rf_s3c — a small S3 client for storgate's S3-backed mounts (an
 *  `aws_s3` endpoint: "NAME@aws_s3[/skip/path]").
 *
 *  libcurl does the HTTP and the SigV4 signature (CURLOPT_AWS_SIGV4), with
 *  the two traps verified on libcurl 7.88: it does not add
 *  x-amz-content-sha256 (set here: UNSIGNED-PAYLOAD, which it then signs),
 *  and it signs the query as given (so queries are built sorted and
 *  encoded here). Bodies stream: GET writes into a file descriptor as the
 *  bytes arrive, PUT reads from one; objects over RF_S3C_SINGLE_MAX go up
 *  as a multipart upload, aborted if any part fails, so no partial object
 *  is ever visible. Listings are ListObjectsV2 pages, parsed with expat.
 *
 *  One rf_s3c_t holds one curl handle: use it from one thread at a time.
 *  Blocking calls: meant for worker and scheduler threads, not an event
 *  loop.
 */
#ifndef RF_S3C_H
#define RF_S3C_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "rf_sgconf.h"

#define RF_S3C_SINGLE_MAX ((uint64_t)64 << 20) /* larger objects: multipart */
#define RF_S3C_PART_SIZE ((uint64_t)16 << 20)
#define RF_S3C_STREAM_PART ((size_t)8 << 20) /* rf_s3c_put_stream's part (S3: at least 5 MiB) */

typedef struct rf_s3c_t rf_s3c_t;

typedef struct {
    uint64_t size;
    int64_t mtime_s;
    char etag[80]; /* without quotes */
    char content_type[128];
} rf_s3c_obj_t;

typedef struct {
    char *key; /* malloc'd; the backend's key */
    bool prefix;
    uint64_t size;
    int64_t mtime_s;
    char etag[80];
} rf_s3c_entry_t;

/* A client of endpoint ep (borrowed: it must outlive the client). NULL
 * with why when curl cannot be set up. */
rf_s3c_t *rf_s3c_new(const rf_sg_s3ep_t *ep, char *why, size_t why_len);
void rf_s3c_destroy(rf_s3c_t **self_p);
/* While *flag is set, every transfer of c ends at once with an error
 * (a process stopping: an upload then never completes, so nothing partial
 * appears). flag is borrowed; NULL: none. */
void rf_s3c_set_abort(rf_s3c_t *c, atomic_bool *flag);
/* Points the client at another endpoint (borrowed, as in rf_s3c_new),
 * keeping its curl handle and so its open connections. */
void rf_s3c_use(rf_s3c_t *c, const rf_sg_s3ep_t *ep);

/* HEAD key: 0 found (out filled), 1 no such key, -1 error (why). */
int rf_s3c_head(rf_s3c_t *c, const char *key, rf_s3c_obj_t *out, char *why, size_t why_len);

/* GET key, its bytes written to fd as they come. 0, 1 (no such key), -1.
 * On -1 fd may hold part of the object: the caller discards it. */
int rf_s3c_get_fd(rf_s3c_t *c, const char *key, int fd, rf_s3c_obj_t *out, char *why, size_t why_len);

/* GET len bytes of key from offset first into buf (len bytes), only if
 * its ETag is still `etag` (If-Match; "" = any). 0 (buf filled), 1 (no
 * such key, or its ETag moved on), -1 (why; also when the endpoint
 * ignores Range or sends another length). */
int rf_s3c_get_range(rf_s3c_t *c, const char *key, uint64_t first, size_t len, const char *etag, char *buf, char *why,
                     size_t why_len);

/* PUT size bytes read from fd (from offset 0) as key; multipart above
 * RF_S3C_SINGLE_MAX (aborted on failure). etag (80 bytes, may be NULL)
 * receives the answer's ETag. 0 or -1. */
int rf_s3c_put_fd(rf_s3c_t *c, const char *key, int fd, uint64_t size, const char *content_type, char *etag, char *why,
                  size_t why_len);

/* Streamed GET: cbs->on_header gets each header of a 2xx answer (value
 * trimmed), then cbs->on_data each body chunk (return -1 to stop; the
 * result is then -1). 0 (2xx, all of the body delivered), 1 (404, or 403:
 * no such key as far as the caller may know), -1 (why). Callbacks run on
 * the calling thread. */
typedef struct {
    void (*on_header)(void *arg, const char *name, size_t nl, const char *value, size_t vl);
    int (*on_data)(void *arg, const char *p, size_t n);
    void *arg;
} rf_s3c_get_cbs_t;
int rf_s3c_get_cb(rf_s3c_t *c, const char *key, const rf_s3c_get_cbs_t *cbs, char *why, size_t why_len);

/* Reads up to cap bytes into buf: >0 bytes, 0 at the end, -1 to give up. */
typedef ssize_t(rf_s3c_read_fn)(void *arg, char *buf, size_t cap);

/* PUT a stream of unknown length as key, with content_type (may be NULL)
 * and hdrs (more "Name: value" lines such as x-amz-meta-*, NULL-terminated,
 * may be NULL). Up to RF_S3C_STREAM_PART bytes go up as one PUT; a longer
 * stream as a multipart upload of parts of that size (each read, then
 * sent), aborted if rd gives up or a part fails, so no
 * partial object is ever visible. One part is held in memory. *total:
 * the bytes sent. 0 or -1 (why). */
int rf_s3c_put_stream(rf_s3c_t *c, const char *key, const char *content_type, const char *const *hdrs,
                      rf_s3c_read_fn *rd, void *arg, uint64_t *total, char *why, size_t why_len);

/* PUT size bytes read from rd (as rf_s3c_put_stream's) straight into
 * libcurl's buffers, with no part held here: one PUT up to
 * RF_S3C_STREAM_PART, else a multipart upload in parts of that size,
 * aborted when rd gives up or ends short of size. 0 or -1 (why). */
int rf_s3c_put_sized(rf_s3c_t *c, const char *key, const char *content_type, const char *const *hdrs, uint64_t size,
                     rf_s3c_read_fn *rd, void *arg, char *why, size_t why_len);

/* A conditional PUT of len bytes of mem as key, a compare-and-swap where
 * the service has conditional writes (S3 since 2024, storgate's S3 API):
 * if_match an ETag (without quotes) the object must have, or NULL: no
 * object may be there (If-None-Match: *). 0 written (etag, 80 bytes or
 * NULL, receives the new ETag), 1 the condition failed (412; 409, another
 * conditional write in flight; 404 for If-Match on a missing key), 2 the
 * service answered 501 (no conditional writes), -1 error (why). A service
 * that ignores the headers answers 0: see sg_leader's probe. */
int rf_s3c_put_if(rf_s3c_t *c, const char *key, const void *mem, size_t len, const char *if_match, char *etag,
                  char *why, size_t why_len);

/* GET a small object whole: *buf (malloc'd, NUL-terminated; the caller
 * frees it) and *len, its ETag (without quotes) into etag (80 bytes).
 * 0, 1 (no such key), -1 (why; also an object over max bytes, or over
 * 8 MiB, which is as much as a body in memory is allowed here). */
int rf_s3c_get_small(rf_s3c_t *c, const char *key, char **buf, size_t max, size_t *len, char *etag, char *why,
                     size_t why_len);

/* DELETE key (a missing key is fine, as in S3). 0 or -1. */
int rf_s3c_delete(rf_s3c_t *c, const char *key, char *why, size_t why_len);

/* One ListObjectsV2 page: keys starting with prefix, after start_after
 * ("" = from the start), with delimiter (NULL = none), at most max (1..1000).
 * *out is a malloc'd array the caller frees with rf_s3c_entries_free. 0 or -1. */
int rf_s3c_list(rf_s3c_t *c, const char *prefix, const char *delim, const char *start_after, size_t max,
                rf_s3c_entry_t **out, size_t *n, bool *truncated, char *why, size_t why_len);
void rf_s3c_entries_free(rf_s3c_entry_t *e, size_t n);

#endif
