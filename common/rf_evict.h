/*  rf_evict — which objects an edge cache keeps: the eviction policy, on
 *  its own, so that it can be measured on traces before the cache uses it
 *  (bench/evict.c) and unit-tested without a store.
 *
 *  Two policies over objects named by a 64-bit key with a size in bytes:
 *    RF_EVICT_LRU      the baseline: least recently used goes first;
 *    RF_EVICT_S3FIFO   S3-FIFO (Yang et al., SOSP 2023): a small FIFO
 *                      (10% of the bytes) takes new objects; those hit
 *                      while there move to the main FIFO, the others leave
 *                      and only their key is remembered in a ghost FIFO, so
 *                      a key seen again soon goes straight to main. Main is
 *                      a FIFO with a 2-bit frequency per object (CLOCK-like
 *                      reinsertion). One-hit wonders — most of a CDN's
 *                      long tail — never push popular objects out.
 *  Not thread-safe: one instance per owner (the cache index serialises).
 */
#ifndef RF_EVICT_H
#define RF_EVICT_H

#include <stddef.h>
#include <stdint.h>

typedef enum { RF_EVICT_LRU, RF_EVICT_S3FIFO } rf_evict_kind_t;

typedef struct rf_evict_t rf_evict_t;

/* Called for every object the policy drops to make room (key, its size). */
typedef void(rf_evict_fn)(uint64_t key, uint64_t size, void *arg);

/* A policy holding at most `capacity` bytes. Returns NULL on allocation
 * failure or capacity 0. Caller owns; rf_evict_destroy. */
rf_evict_t *rf_evict_new(rf_evict_kind_t kind, uint64_t capacity);

/* Frees it; safe on NULL and twice. */
void rf_evict_destroy(rf_evict_t **self_p);

/* Records a request for `key` of `size` bytes. Returns 1 on a hit. On a
 * miss the object is admitted (unless larger than the capacity) and
 * objects are dropped, through on_evict (may be NULL), until it fits.
 * Returns 0 on a miss, -1 when out of memory (nothing changed). */
int rf_evict_access(rf_evict_t *self, uint64_t key, uint64_t size, rf_evict_fn *on_evict, void *arg);

/* Forgets `key` (a purge); no callback. Returns 1 if it was held. */
int rf_evict_remove(rf_evict_t *self, uint64_t key);

/* Bytes and objects held now. */
uint64_t rf_evict_bytes(const rf_evict_t *self);
size_t rf_evict_count(const rf_evict_t *self);

const char *rf_evict_name(rf_evict_kind_t kind);

#endif
