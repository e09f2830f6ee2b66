/*  vid_trims — the trimmed copies a video worker keeps for HLS of a trim
 *  (the seed's /v.mp4?trimming=17-20,30-40/mp4hls/index.m3u8): the worker
 *  trims the source itself once, then indexes and segments the copy, so an
 *  HLS job never waits for another job (which, with every job slot taken,
 *  would wait for ever). Files live in TMPDIR/refract-video-trims-PID, at
 *  most `keep` of them (the oldest go first); a worker that died leaves
 *  its directory to the next one started on the host. Thread-safe.
 */
#ifndef VID_TRIMS_H
#define VID_TRIMS_H

#include <stddef.h>

#include "vid_core.h"

typedef struct vid_trims vid_trims_t;

/* A new store under `base` (TMPDIR when NULL), or NULL (logged). Caller owns. */
vid_trims_t *vid_trims_new(const char *base, size_t keep);

/* Removes the store's files and directory, frees it, sets *p to NULL. */
void vid_trims_destroy(vid_trims_t **p);

/* The path of src's ranges trimmed (made now when not kept yet; accurate
 * as vid_trim's) into path[path_len]. `key` names this version of the
 * source (ref, size, validator); src is read only when the copy is made.
 * 0, 1 when a range starts past the end, -1 with err set. */
int vid_trims_get(vid_trims_t *self, const vid_source_t *src, const char *key, const vid_range_t *ranges, int n,
                  int accurate, char *path, size_t path_len, char *err, size_t errlen);

#endif
