/*  vid_ixcache — the parsed indexes a video worker keeps (saved form,
 *  vid_index_save), so that the segments of one video do not read and
 *  parse its moov each time. Keyed by the source's ref, size, validator
 *  and the segment duration; least recently used goes first. Thread-safe.
 */
#ifndef VID_IXCACHE_H
#define VID_IXCACHE_H

#include <stddef.h>

#include "vid_core.h"

typedef struct vid_ixcache vid_ixcache_t;

/* A cache of at most `entries` indexes (0: keeps nothing). Caller owns. */
vid_ixcache_t *vid_ixcache_new(size_t entries);
void vid_ixcache_destroy(vid_ixcache_t **p);

/* The index stored under key (a new one, caller owns), or NULL. */
vid_index_t *vid_ixcache_get(vid_ixcache_t *self, const char *key);

/* Stores ix (borrowed: a saved copy is kept) under key. */
void vid_ixcache_put(vid_ixcache_t *self, const char *key, const vid_index_t *ix);

#endif
