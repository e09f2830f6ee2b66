/*  vid_reader — a video job's source as a vid_source_t, from the JOB's
 *  source ref (proto/rfb.md 2.2):
 *
 *    file:///abs/path   read with pread (a file origin the worker sees)
 *    edge:/path         read by HTTP Range requests to the gateway
 *                       (video_worker.gateway_url) with Host: source.host,
 *                       so origin bytes go through the gateway's cache
 *
 *  Edge reads ask for at least `read_ahead` bytes and keep the last answer:
 *  libavformat reads in 32 KiB steps, which would otherwise be one request
 *  each. The connection to the gateway is kept per thread across jobs.
 */
#ifndef VID_READER_H
#define VID_READER_H

#include <stddef.h>
#include <stdint.h>

#include "vid_core.h"

typedef struct vid_reader vid_reader_t;

typedef struct {
    const char *gateway_url; /* "http://host:port" (no trailing '/'), for edge: refs */
    size_t read_ahead;       /* bytes asked at least per edge read */
    const char *request_id;  /* sent as X-Request-Id, for the gateway's log; may be NULL */
    /* Polled before each read: non-zero stops the job (reads then fail). */
    int (*should_stop)(void *arg);
    void *stop_arg;
    int64_t deadline_ms; /* rf_worker_now_ms() time after which reads fail; INT64_MAX: none */
} vid_reader_opts_t;

/* Opens `ref` (borrowed; host is source.host, for edge: refs). Learns the
 * size and a validator (first bytes are read for an edge: ref). Returns the
 * reader (caller owns; vid_reader_destroy) or NULL with an HTTP-like status
 * in *status (400 bad ref, 404 not found, 502 unreadable, 504 stopped) and
 * a one-line reason in err. */
vid_reader_t *vid_reader_open(const char *ref, const char *host, const vid_reader_opts_t *opts, int *status, char *err,
                              size_t errlen);

void vid_reader_destroy(vid_reader_t **p);

/* The source to hand to vid_core; valid while the reader lives. */
const vid_source_t *vid_reader_source(vid_reader_t *r);

/* What identifies this version of the source: ETag or Last-Modified (edge),
 * inode and mtime (file); "" when nothing does. Borrowed. */
const char *vid_reader_validator(const vid_reader_t *r);

/* The source's Cache-Control, Expires and Last-Modified as its origin
 * stated them (edge: through the gateway; file: Last-Modified from its
 * mtime), "" when absent. Borrowed. */
void vid_reader_freshness(const vid_reader_t *r, const char **cache_control, const char **expires,
                          const char **last_modified);

/* Bytes read from the source so far (edge: transferred; file: pread). */
int64_t vid_reader_bytes(const vid_reader_t *r);

/* After a vid_core call failed: whether a read failed (rather than the
 * bytes being bad), with its status (502, 504) and reason. 0 when no read
 * failed. */
int vid_reader_failed(const vid_reader_t *r, const char **why);

/* Once per process, before any thread opens a reader (libcurl's init). 0 or -1. */
int vid_reader_global_init(void);
void vid_reader_global_cleanup(void);

#endif
