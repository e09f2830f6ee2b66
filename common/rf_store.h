/*  rf_store — the edge cache's objects: an index shared by every thread,
 *  bodies on disk and (small, hot ones) in memory, and objects that are
 *  read while they are still being filled.
 *
 *  One object per cache key. rf_store_lookup finds it or — atomically, so
 *  that any number of concurrent misses make exactly one origin request —
 *  inserts a new FILLING object whose caller becomes its filler. Readers
 *  (rf_cursor_t) follow the fill with their own offsets: a slow reader
 *  never stalls the fill or the others, because every byte appended is
 *  written to the object's file at once and a reader behind reads it back
 *  (page cache); only the "solo" mode below keeps bytes in memory instead.
 *
 *  How a fill ends depends on what the response head allows
 *  (rf_obj_set_head):
 *    RF_KEEP_DISK    stored: written to a temporary file on the cache's
 *                    filesystem and renamed into place when complete, so a
 *                    crash never leaves a partial object under a real name;
 *                    small bodies are also kept in memory (memory tier);
 *    RF_KEEP_MEMORY  stored in memory only (volatile vhosts), never on disk;
 *    RF_KEEP_SHARE   not kept: the readers that joined while it fills
 *                    share it (TTL 0: one origin transaction for all of
 *                    them), then it leaves the index;
 *    RF_KEEP_SOLO    not shareable (private): it leaves the index at once,
 *                    readers other than the first are told RF_READ_PASS
 *                    (they fetch on their own, in parallel), and the fill
 *                    keeps at most a window of bytes for its one reader —
 *                    rf_obj_append says when to pause the origin.
 *
 *  File format (one file per object, host byte order):
 *    rf_obj_disk_t header | key | meta (headers) | body
 *  The header carries a format version, the lengths, a CRC-32 of the body
 *  and a CRC-32 of header, key and meta. At start the index is rebuilt by
 *  reading every header (no second index to disagree with the files after
 *  a kill -9); an object whose header is bad or whose file length is wrong
 *  is deleted. An object found at start is "unverified" until its body CRC
 *  has been checked once (rf_obj_verify), so a bit flip reads as a miss.
 *
 *  Eviction: S3-FIFO (rf_evict) over body bytes, one policy for disk and
 *  one for the memory tier; the memory tier only drops the in-memory copy.
 *
 *  Thread-safe: the index has one mutex, each object another (lock order:
 *  store, then object). Wake-ups are callbacks run under the object's lock:
 *  they must only post a message (h2o_multithread_send_message) or similar.
 */
#ifndef RF_STORE_H
#define RF_STORE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct rf_store_t rf_store_t;
typedef struct rf_obj_t rf_obj_t;

typedef struct {
    const char *dir;            /* created if missing */
    uint64_t memory;            /* bytes of bodies kept in memory */
    uint64_t disk;              /* bytes of bodies kept on disk */
    uint64_t memory_object_max; /* larger bodies are not kept in memory */
} rf_store_opts_t;

/* Opens (creates) the store under opts->dir, removes leftover temporary
 * files and rebuilds the index from the object headers. Returns the store
 * (caller owns; rf_store_destroy) or NULL with *err malloc'd. */
rf_store_t *rf_store_new(const rf_store_opts_t *opts, char **err);

/* Frees the index; objects still referenced stay valid until their last
 * reference goes. Safe on NULL and twice. */
void rf_store_destroy(rf_store_t **self_p);

/* ---- objects ------------------------------------------------------------- */

typedef enum { RF_OBJ_FILLING, RF_OBJ_COMPLETE, RF_OBJ_FAILED } rf_obj_state_t;
typedef enum { RF_KEEP_DISK, RF_KEEP_MEMORY, RF_KEEP_SHARE, RF_KEEP_SOLO } rf_keep_t;

/* What is known of a response once its head arrived. */
typedef struct {
    int status;
    int64_t stored_at;  /* unix seconds the head arrived */
    int64_t expires_at; /* unix seconds it stops being fresh */
    int64_t age;        /* its age when it arrived (seconds) */
    uint32_t flags;     /* RF_META_* */
    int64_t length;     /* body length from the head, -1 unknown */
    int64_t lifetime;   /* freshness lifetime the TTL policy gave (grows on 304s: rf_ttl.h) */
    int ttl_source;     /* rf_ttl_source_t of that lifetime */
    int fwd_status;     /* not stored: the origin status this fill answered from a stale copy (304, 5xx, 502/504 for no answer), 0 otherwise */
} rf_meta_t;

#define RF_META_MUST_REVALIDATE 1u /* never served stale */
#define RF_META_NO_CACHE 2u        /* revalidate before every use */
#define RF_META_PURGED 4u          /* purged: refetched whole, kept only as a fallback if the origin fails */
#define RF_META_NO_GAIN 8u         /* a compressed variant that was not smaller: an empty marker, serve identity */

/* Body bytes in memory, shared by reference (senders keep one while h2o
 * sends from it). */
typedef struct {
    atomic_int refs;
    size_t len, cap;
    char data[];
} rf_buf_t;
void rf_buf_ref(rf_buf_t *b);
void rf_buf_unref(rf_buf_t **b_p);

typedef enum {
    RF_LOOKUP_MISS,  /* nothing (and nothing claimed) */
    RF_LOOKUP_HIT,   /* complete object (fresh or not: see its meta) */
    RF_LOOKUP_BUSY,  /* being filled by someone else: read it with a cursor */
    RF_LOOKUP_CLAIM, /* a new FILLING object: the caller fills it */
} rf_lookup_t;

/* Looks `key` up. With `claim`, a miss inserts a new FILLING object and
 * returns RF_LOOKUP_CLAIM (so does a complete object the caller marks
 * replaceable with `replace_complete`: an expired one to refetch — the old
 * one leaves the index but stays valid for holders). On HIT, BUSY and
 * CLAIM *obj gets one reference (caller owns; rf_obj_unref). An
 * unverified object (found at start) is verified first: a bad one is
 * removed and reads as a miss. */
rf_lookup_t rf_store_lookup(rf_store_t *self, const char *key, size_t key_len, bool claim, bool replace_complete,
                            rf_obj_t **obj);

/* Removes the object of `key` from the index (and its file). Returns 1 if
 * there was one. */
int rf_store_remove(rf_store_t *self, const char *key, size_t key_len);

/* Calls fn for each indexed object's key — complete ones and fills in
 * progress (a purge takes those too: they finish for their readers but
 * are not kept) — under the index lock (fn must not call back into the
 * store); objects for which fn returns 1 are removed. Returns how many. */
size_t rf_store_remove_if(rf_store_t *self, int (*fn)(const char *key, size_t len, void *arg), void *arg);

/* Expires every indexed complete object for which fn returns 1 (the next
 * request refreshes it) and ORs `flags` into its meta; persisted in the
 * object's file. Same locking rule as rf_store_remove_if. Returns how many
 * were expired. */
size_t rf_store_expire_if(rf_store_t *self, int (*fn)(const char *key, size_t len, void *arg), void *arg,
                          uint32_t flags);

typedef struct {
    uint64_t objects, disk_bytes, memory_bytes;
    uint64_t evicted_disk, evicted_memory; /* counts since start */
    uint64_t loaded, dropped_at_load;      /* index rebuild at start */
} rf_store_stats_t;
void rf_store_stats(rf_store_t *self, rf_store_stats_t *out);

void rf_obj_ref(rf_obj_t *o);
/* Drops one reference; the last one frees the object. NULLs *o_p. */
void rf_obj_unref(rf_obj_t **o_p);

rf_obj_state_t rf_obj_state(rf_obj_t *o);
/* While `o` fills in place of an expired complete object (a refresh), that
 * object — a new reference, the caller owns it — else NULL. What a cache
 * serves meanwhile under stale-while-revalidate (RFC 5861). */
rf_obj_t *rf_obj_replaced(rf_obj_t *o);
/* Objects are numbered as they are created (claimed or loaded at start):
 * an object numbered no more than rf_store_seq() read at some moment was
 * claimed before that moment — what "stored before this write" means for
 * a cache, without clocks. */
uint64_t rf_obj_seq(rf_obj_t *o);
uint64_t rf_store_seq(rf_store_t *self);
/* The meta and serialized headers (set by the filler; stable once the
 * head is set, which is before any reader sees data). */
const rf_meta_t *rf_obj_meta(rf_obj_t *o);
/* expires_at and flags, which a purge may change after the head: read
 * them through this (locked), not through rf_obj_meta. */
int64_t rf_obj_expires(rf_obj_t *o, uint32_t *flags);
/* Headers as "name\0value\0" pairs (borrowed from the object). */
const char *rf_obj_headers(rf_obj_t *o, size_t *len);
/* Whether the head is known yet (readers wait for it). */
bool rf_obj_has_head(rf_obj_t *o);
/* Body length: the final one once complete, else bytes filled so far. */
uint64_t rf_obj_length(rf_obj_t *o);
/* The in-memory body of a complete object (a new reference, caller owns),
 * or NULL when it is only on disk. */
rf_buf_t *rf_obj_body(rf_obj_t *o);
/* The key (borrowed). */
const char *rf_obj_key(rf_obj_t *o, size_t *len);

/* ---- filling (the claimer) ---------------------------------------------- */

/* Sets the response head: meta, headers ("name\0value\0" pairs, copied)
 * and how the object is kept. With RF_KEEP_DISK and no room or no file,
 * the object falls back to RF_KEEP_SHARE. Wakes readers. 0 or -1 (out of
 * memory / disk: the caller fails the fill). */
int rf_obj_set_head(rf_obj_t *o, const rf_meta_t *meta, const char *headers, size_t headers_len, rf_keep_t keep);

/* How the object is being kept (after set_head; it can degrade from DISK
 * or MEMORY to SHARE when the body outgrows what can be kept). */
rf_keep_t rf_obj_keep(rf_obj_t *o);

/* Appends body bytes and wakes readers. Returns 1 when the filler should
 * pause reading its source until the pause callback runs (RF_KEEP_SOLO
 * with a full window), 0 to go on, -1 on a write error (the caller fails
 * the fill). */
int rf_obj_append(rf_obj_t *o, const void *data, size_t len);

/* For RF_KEEP_SOLO: `resume` runs (under the object's lock) when the reader
 * has drained the window after append returned 1. */
void rf_obj_on_drain(rf_obj_t *o, void (*resume)(void *arg), void *arg);

/* Ends the fill. ok: the body is complete (its length must match a known
 * one, else it fails); the object is published (file renamed, accounted
 * for eviction) or, for SHARE/SOLO, leaves the index. !ok: readers see
 * RF_READ_FAILED, the object leaves the index and nothing is kept. */
void rf_obj_finish(rf_obj_t *o, bool ok);

/* Records why a fill failed (an HTTP status such as 502/504 and a
 * one-line reason, copied) for readers that have not started answering:
 * call before rf_obj_finish(o, false). */
void rf_obj_set_error(rf_obj_t *o, int status, const char *why);
/* The recorded failure: its status (0 when none) and reason (borrowed). */
int rf_obj_error(rf_obj_t *o, const char **why);

/* Number of cursors attached (so a filler can stop when nobody reads an
 * object that will not be kept). */
int rf_obj_readers(rf_obj_t *o);

/* A client request joined this fill and waits for it (sticky; any thread).
 * Unlike rf_obj_readers, which also counts the cache's own followers (an
 * upload to the storage tier), this says someone is waiting: a filler
 * doing background work then goes ahead as live work (rf_job_promote). */
void rf_obj_set_wanted(rf_obj_t *o);
bool rf_obj_wanted(rf_obj_t *o);

/* ---- reading -------------------------------------------------------------- */

typedef struct rf_waiter_t rf_waiter_t;
struct rf_waiter_t {
    /* Runs (on the filler's thread, under the object's lock) when more
     * data or a state change is available after a read returned
     * RF_READ_WAIT. Must not call into the object. */
    void (*wake)(rf_waiter_t *w);
    rf_waiter_t *next;
    bool armed;
};

typedef struct {
    rf_obj_t *obj; /* one reference, owned by the cursor */
    uint64_t off;  /* next byte to read */
    uint64_t end;  /* stop here (UINT64_MAX: to the end) */
    int fd;        /* the reader's own descriptor for disk reads, -1 none */
    unsigned fd_gen;
    uint64_t fd_off; /* where the body starts in fd's file */
    bool attached; /* counted in the object's readers */
    bool first;    /* the claimer's own cursor (kept in SOLO mode) */
    rf_waiter_t waiter;
} rf_cursor_t;

typedef enum {
    RF_READ_DATA,   /* *n > 0 bytes copied */
    RF_READ_WAIT,   /* nothing yet: the waiter will be woken */
    RF_READ_EOF,    /* all of [off, end) was read */
    RF_READ_FAILED, /* the fill failed: the reader must not present a whole object */
    RF_READ_PASS,   /* the response is not shareable: fetch on your own */
} rf_read_t;

/* Attaches a cursor to o (takes its own reference). `first`: the claimer.
 * wake: see rf_waiter_t. Returns 0, or -1 when a complete object's body
 * is gone (evicted since the lookup): close the cursor, treat as a miss. */
int rf_cursor_init(rf_cursor_t *c, rf_obj_t *o, bool first, void (*wake)(rf_waiter_t *w));
/* Copies up to cap bytes at c->off into buf. */
rf_read_t rf_cursor_read(rf_cursor_t *c, void *buf, size_t cap, size_t *n);
/* For a reader waiting for the head: RF_READ_DATA once it is known (then
 * read meta/headers), RF_READ_WAIT (waiter armed), FAILED or PASS. */
rf_read_t rf_cursor_head(rf_cursor_t *c);
/* Waits for the fill to end without reading: RF_READ_EOF (complete),
 * RF_READ_FAILED, RF_READ_PASS (not shareable: a SOLO fill waits for its
 * one reader to read, so it is never waited for), or RF_READ_WAIT (the
 * waiter is armed: woken at the next append or end). */
rf_read_t rf_cursor_wait_end(rf_cursor_t *c);
/* A complete object kept on disk: its file's path (cap bytes), where the
 * body starts in that file and the body's length. 0, or -1 when it is not
 * complete on disk (filling, failed, memory-only, shared, evicted). The
 * path is only a name: eviction may remove the file at any time, so a
 * reader by path (a worker) must expect it gone. */
int rf_obj_file(rf_obj_t *o, char *path, size_t cap, uint64_t *body_off, uint64_t *len);
/* Detaches, disarms the waiter, closes the fd and drops the reference. */
void rf_cursor_close(rf_cursor_t *c);

/* ---- helpers ---------------------------------------------------------------- */

/* Checks the body of an object file against its CRC (used at lookup for
 * unverified objects; exposed for tests). 0 good, -1 bad. */
int rf_store_verify_file(const char *path);

/* The file path of a key's object (for tests and tools): buf >= 4096. */
void rf_store_path(rf_store_t *self, const char *key, size_t key_len, char *buf, size_t len);

#endif
