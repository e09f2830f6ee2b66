/*  rf_store — see rf_store.h. */
#include "rf_store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>
#include <zlib.h>

#include "rf_evict.h"

#define RF_OBJ_MAGIC "RFOBJ\r\n\x1a"
#define RF_OBJ_VERSION 2u
/* A SOLO fill pauses its source once this many bytes wait for the reader:
 * what the pass-through stream bounded memory to before the cache. */
#define RF_SOLO_WINDOW (512 * 1024)
#define RF_KEY_MAX (64 * 1024)
#define RF_META_MAX (1024 * 1024)

typedef struct {
    char magic[8];
    uint32_t version;
    uint32_t head_len; /* header + key + meta: where the body starts */
    uint32_t key_len;
    uint32_t meta_len;
    uint64_t body_len;
    uint32_t body_crc;
    int32_t status;
    int64_t stored_at, expires_at, age;
    int64_t lifetime; /* rf_meta_t.lifetime */
    int32_t ttl_source;
    uint32_t flags;
    uint32_t head_crc; /* of this header (with head_crc 0), key and meta */
    uint32_t pad;      /* 0: no implicit padding, whose bytes a copy need not keep (the CRC covers them) */
} rf_obj_disk_t;

struct rf_obj_t {
    atomic_int refs;
    atomic_bool wanted; /* a client waits for the fill (rf_obj_set_wanted) */
    pthread_mutex_t mu;
    rf_store_t *store; /* one reference */
    uint64_t h;        /* seeded hash: index and eviction key */
    uint64_t seq;      /* creation number in this store (rf_obj_seq) */
    char *key;
    size_t key_len;
    char name[33]; /* file name: 128-bit unseeded hash, hex */
    /* under the store's lock */
    rf_obj_t *hnext;
    bool indexed, in_disk_policy, in_mem_policy, unverified;
    /* under the object's lock */
    rf_obj_state_t state;
    bool has_head, on_disk, paused;
    rf_meta_t meta;
    char *hdrs;
    size_t hdrs_len;
    rf_keep_t keep;
    uint64_t filled;
    uint32_t crc;
    int fd;         /* the fill's file (temporary or unlinked), -1 none */
    unsigned fd_gen;   /* bumped when fd is replaced: cursors re-dup theirs */
    uint64_t body_off; /* where body byte 0 sits in fd's file (and in the object file) */
    char *tmp_path; /* RF_KEEP_DISK while filling */
    rf_buf_t *mem;  /* in-memory body [0, filled), NULL none */
    /* RF_KEEP_SOLO: bytes [win_off, filled) waiting for the one reader */
    char *win;
    size_t win_len, win_cap;
    uint64_t win_off;
    void (*resume)(void *arg);
    void *resume_arg;
    rf_obj_t *prev; /* FILLING in place of an expired complete object: that one (one reference), for
                       stale-while-revalidate readers; dropped at finish */
    rf_waiter_t *waiters;
    int readers;
    /* The file of the same key's previous object, left in place when this
     * one replaced it (s_index): removed at finish unless this object is
     * renamed over it. ino 0: none. */
    dev_t old_dev;
    ino_t old_ino;
    int err_status;
    char err_why[256];
};

struct rf_store_t {
    atomic_int refs;
    atomic_uint_fast64_t seq; /* the last object's creation number */
    pthread_mutex_t mu;
    char *dir;
    rf_store_opts_t opts;
    uint64_t seed;
    rf_obj_t **buckets;
    size_t nbuckets, count;
    rf_evict_t *disk, *memory;
    atomic_uint_fast64_t tmp_seq;
    int lock_fd; /* flock on <dir>/lock: one process per cache directory */
    rf_store_stats_t stats;
};

/* ---- small helpers -------------------------------------------------------------- */

void rf_buf_ref(rf_buf_t *b)
{
    atomic_fetch_add_explicit(&b->refs, 1, memory_order_relaxed);
}

void rf_buf_unref(rf_buf_t **b_p)
{
    rf_buf_t *b = *b_p;
    *b_p = NULL;
    if (b != NULL && atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) == 1)
        free(b);
}

static rf_buf_t *s_buf_new(size_t cap)
{
    rf_buf_t *b = malloc(sizeof(*b) + (cap ? cap : 1));
    if (b == NULL)
        return NULL;
    atomic_init(&b->refs, 1);
    b->len = 0;
    b->cap = cap;
    return b;
}

static void s_hex128(const char *key, size_t len, char out[33])
{
    XXH128_hash_t h = XXH3_128bits(key, len);
    static const char hex[] = "0123456789abcdef";
    uint64_t parts[2] = {h.high64, h.low64};
    for (int p = 0; p < 2; p++)
        for (int i = 0; i < 16; i++)
            out[p * 16 + i] = hex[(parts[p] >> (60 - 4 * i)) & 15];
    out[32] = '\0';
}

static void s_obj_path(const rf_store_t *s, const char *name, char *buf, size_t len)
{
    snprintf(buf, len, "%s/objects/%.2s/%s", s->dir, name, name);
}

static int s_write_all(int fd, const void *p, size_t len, off_t off)
{
    const char *c = p;
    while (len > 0) {
        ssize_t n = pwrite(fd, c, len, off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        c += n, len -= (size_t)n, off += n;
    }
    return 0;
}

static int s_read_all(int fd, void *p, size_t len, off_t off)
{
    char *c = p;
    while (len > 0) {
        ssize_t n = pread(fd, c, len, off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        c += n, len -= (size_t)n, off += n;
    }
    return 0;
}

static uint32_t s_head_crc(rf_obj_disk_t d, const char *key, const char *meta)
{
    d.head_crc = 0;
    uLong c = crc32(0L, (const Bytef *)&d, sizeof(d));
    c = crc32(c, (const Bytef *)key, d.key_len);
    c = crc32(c, (const Bytef *)meta, d.meta_len);
    return (uint32_t)c;
}

/* ---- the index (store lock held) ------------------------------------------------ */

static rf_obj_t **s_slot(rf_store_t *s, uint64_t h)
{
    return &s->buckets[h & (s->nbuckets - 1)];
}

static rf_obj_t *s_find(rf_store_t *s, uint64_t h, const char *key, size_t len)
{
    for (rf_obj_t *o = *s_slot(s, h); o != NULL; o = o->hnext)
        if (o->h == h && o->key_len == len && memcmp(o->key, key, len) == 0)
            return o;
    return NULL;
}

static void s_grow(rf_store_t *s)
{
    size_t n = s->nbuckets * 2;
    rf_obj_t **b = calloc(n, sizeof(*b));
    if (b == NULL)
        return; /* chains just get longer */
    for (size_t i = 0; i < s->nbuckets; i++)
        for (rf_obj_t *o = s->buckets[i], *next; o != NULL; o = next) {
            next = o->hnext;
            o->hnext = b[o->h & (n - 1)];
            b[o->h & (n - 1)] = o;
        }
    free(s->buckets);
    s->buckets = b;
    s->nbuckets = n;
}

static void s_unindex(rf_store_t *s, rf_obj_t *o);
static void s_unindex_keep_file(rf_store_t *s, rf_obj_t *o);

/* Inserts o (the index takes one reference). Another object with the same
 * seeded hash (same key, or a collision) leaves first. */
static void s_index(rf_store_t *s, rf_obj_t *o)
{
    for (rf_obj_t *x = *s_slot(s, o->h); x != NULL; x = x->hnext)
        if (x->h == o->h) {
            /* The same key: its file stays until the new object is renamed
             * over it, so a refresh can still read (or fall back to) the
             * old body. Another key (a hash collision) goes for good. */
            if (x->key_len == o->key_len && memcmp(x->key, o->key, o->key_len) == 0) {
                char path[4096];
                struct stat st;
                s_obj_path(s, x->name, path, sizeof(path));
                if (x->on_disk && stat(path, &st) == 0)
                    o->old_dev = st.st_dev, o->old_ino = st.st_ino;
                s_unindex_keep_file(s, x);
            } else
                s_unindex(s, x);
            break;
        }
    if (s->count + 1 > s->nbuckets)
        s_grow(s);
    rf_obj_t **slot = s_slot(s, o->h);
    o->hnext = *slot;
    *slot = o;
    o->indexed = true;
    s->count++;
    rf_obj_ref(o);
}

static void s_unindex_file(rf_store_t *s, rf_obj_t *o, bool keep_file);

/* Removes o from the index and the policies and deletes its file; drops
 * the index's reference (o stays valid for other holders). */
static void s_unindex(rf_store_t *s, rf_obj_t *o)
{
    s_unindex_file(s, o, false);
}

static void s_unindex_keep_file(rf_store_t *s, rf_obj_t *o)
{
    s_unindex_file(s, o, true);
}

static void s_unindex_file(rf_store_t *s, rf_obj_t *o, bool keep_file)
{
    if (!o->indexed)
        return;
    for (rf_obj_t **p = s_slot(s, o->h); *p != NULL; p = &(*p)->hnext)
        if (*p == o) {
            *p = o->hnext;
            break;
        }
    o->indexed = false;
    o->hnext = NULL;
    s->count--;
    if (o->in_disk_policy)
        rf_evict_remove(s->disk, o->h), o->in_disk_policy = false;
    if (o->in_mem_policy)
        rf_evict_remove(s->memory, o->h), o->in_mem_policy = false;
    pthread_mutex_lock(&o->mu);
    if (o->on_disk && !keep_file) {
        char path[4096];
        s_obj_path(s, o->name, path, sizeof(path));
        unlink(path);
        o->on_disk = false;
    }
    pthread_mutex_unlock(&o->mu);
    rf_obj_unref(&o);
}

static rf_obj_t *s_find_h(rf_store_t *s, uint64_t h)
{
    for (rf_obj_t *o = *s_slot(s, h); o != NULL; o = o->hnext)
        if (o->h == h)
            return o;
    return NULL;
}

/* Whether an object of `size` bytes fits a policy of `budget` bytes at
 * all: rf_evict_access returns 0 (a miss) for one that does not, without
 * admitting it. */
static bool s_fits(uint64_t size, uint64_t budget)
{
    return size <= (budget ? budget : 1);
}

/* rf_evict callbacks (store lock held). */
static void s_on_evict_disk(uint64_t h, uint64_t size, void *arg)
{
    (void)size;
    rf_store_t *s = arg;
    rf_obj_t *o = s_find_h(s, h);
    if (o == NULL)
        return;
    o->in_disk_policy = false; /* the policy already dropped it */
    s->stats.evicted_disk++;
    s_unindex(s, o);
}

static void s_on_evict_memory(uint64_t h, uint64_t size, void *arg)
{
    (void)size;
    rf_store_t *s = arg;
    rf_obj_t *o = s_find_h(s, h);
    if (o == NULL)
        return;
    o->in_mem_policy = false;
    s->stats.evicted_memory++;
    pthread_mutex_lock(&o->mu);
    bool memory_only = o->keep == RF_KEEP_MEMORY;
    rf_buf_unref(&o->mem);
    pthread_mutex_unlock(&o->mu);
    if (memory_only)
        s_unindex(s, o); /* nowhere else to read it from */
}

/* ---- objects ----------------------------------------------------------------------- */

static void s_store_unref(rf_store_t *s);

static rf_obj_t *s_obj_new(rf_store_t *s, const char *key, size_t len, uint64_t h)
{
    rf_obj_t *o = calloc(1, sizeof(*o));
    if (o == NULL || (o->key = malloc(len + 1)) == NULL) {
        free(o);
        return NULL;
    }
    atomic_init(&o->refs, 1);
    atomic_init(&o->wanted, false);
    pthread_mutex_init(&o->mu, NULL);
    memcpy(o->key, key, len);
    o->key[len] = '\0';
    o->key_len = len;
    o->h = h;
    o->seq = atomic_fetch_add(&s->seq, 1) + 1;
    s_hex128(key, len, o->name);
    o->fd = -1;
    o->meta.length = -1;
    o->store = s;
    atomic_fetch_add(&s->refs, 1);
    return o;
}

void rf_obj_ref(rf_obj_t *o)
{
    atomic_fetch_add_explicit(&o->refs, 1, memory_order_relaxed);
}

void rf_obj_unref(rf_obj_t **o_p)
{
    rf_obj_t *o = *o_p;
    *o_p = NULL;
    if (o == NULL || atomic_fetch_sub_explicit(&o->refs, 1, memory_order_acq_rel) != 1)
        return;
    if (o->fd >= 0)
        close(o->fd);
    if (o->tmp_path != NULL) {
        unlink(o->tmp_path); /* a fill that never finished */
        free(o->tmp_path);
    }
    rf_obj_unref(&o->prev); /* a fill that never finished */
    rf_buf_unref(&o->mem);
    free(o->win);
    free(o->hdrs);
    free(o->key);
    pthread_mutex_destroy(&o->mu);
    s_store_unref(o->store);
    free(o);
}

uint64_t rf_obj_seq(rf_obj_t *o)
{
    return o->seq;
}

uint64_t rf_store_seq(rf_store_t *s)
{
    return atomic_load(&s->seq);
}

rf_obj_t *rf_obj_replaced(rf_obj_t *o)
{
    pthread_mutex_lock(&o->mu);
    rf_obj_t *p = o->state == RF_OBJ_FILLING ? o->prev : NULL;
    if (p != NULL)
        rf_obj_ref(p);
    pthread_mutex_unlock(&o->mu);
    return p;
}

rf_obj_state_t rf_obj_state(rf_obj_t *o)
{
    pthread_mutex_lock(&o->mu);
    rf_obj_state_t st = o->state;
    pthread_mutex_unlock(&o->mu);
    return st;
}

const rf_meta_t *rf_obj_meta(rf_obj_t *o)
{
    return &o->meta;
}

int64_t rf_obj_expires(rf_obj_t *o, uint32_t *flags)
{
    pthread_mutex_lock(&o->mu);
    int64_t e = o->meta.expires_at;
    if (flags != NULL)
        *flags = o->meta.flags;
    pthread_mutex_unlock(&o->mu);
    return e;
}

const char *rf_obj_headers(rf_obj_t *o, size_t *len)
{
    *len = o->hdrs_len;
    return o->hdrs;
}

bool rf_obj_has_head(rf_obj_t *o)
{
    pthread_mutex_lock(&o->mu);
    bool v = o->has_head;
    pthread_mutex_unlock(&o->mu);
    return v;
}

uint64_t rf_obj_length(rf_obj_t *o)
{
    pthread_mutex_lock(&o->mu);
    uint64_t v = o->filled;
    pthread_mutex_unlock(&o->mu);
    return v;
}

rf_buf_t *rf_obj_body(rf_obj_t *o)
{
    rf_buf_t *b = NULL;
    pthread_mutex_lock(&o->mu);
    if (o->state == RF_OBJ_COMPLETE && o->mem != NULL && o->mem->len == o->filled) {
        b = o->mem;
        rf_buf_ref(b);
    }
    pthread_mutex_unlock(&o->mu);
    return b;
}

const char *rf_obj_key(rf_obj_t *o, size_t *len)
{
    *len = o->key_len;
    return o->key;
}

rf_keep_t rf_obj_keep(rf_obj_t *o)
{
    pthread_mutex_lock(&o->mu);
    rf_keep_t k = o->keep;
    pthread_mutex_unlock(&o->mu);
    return k;
}

void rf_obj_set_error(rf_obj_t *o, int status, const char *why)
{
    pthread_mutex_lock(&o->mu);
    o->err_status = status;
    snprintf(o->err_why, sizeof(o->err_why), "%s", why ? why : "");
    pthread_mutex_unlock(&o->mu);
}

int rf_obj_error(rf_obj_t *o, const char **why)
{
    pthread_mutex_lock(&o->mu);
    int st = o->err_status;
    *why = o->err_why; /* written once, before the FAILED state readers act on */
    pthread_mutex_unlock(&o->mu);
    return st;
}

void rf_obj_set_wanted(rf_obj_t *o)
{
    atomic_store(&o->wanted, true);
}

bool rf_obj_wanted(rf_obj_t *o)
{
    return atomic_load(&o->wanted);
}

int rf_obj_readers(rf_obj_t *o)
{
    pthread_mutex_lock(&o->mu);
    int n = o->readers;
    pthread_mutex_unlock(&o->mu);
    return n;
}

/* Wakes every armed waiter (object lock held). */
static void s_wake_all(rf_obj_t *o)
{
    rf_waiter_t *w = o->waiters;
    o->waiters = NULL;
    while (w != NULL) {
        rf_waiter_t *next = w->next;
        w->next = NULL;
        w->armed = false;
        w->wake(w);
        w = next;
    }
}

static void s_arm(rf_obj_t *o, rf_waiter_t *w)
{
    if (w->armed)
        return;
    w->armed = true;
    w->next = o->waiters;
    o->waiters = w;
}

static void s_disarm(rf_obj_t *o, rf_waiter_t *w)
{
    if (!w->armed)
        return;
    for (rf_waiter_t **p = &o->waiters; *p != NULL; p = &(*p)->next)
        if (*p == w) {
            *p = w->next;
            break;
        }
    w->armed = false;
    w->next = NULL;
}

/* An unlinked file in the cache's tmp directory: where a fill that is not
 * kept spills so that readers behind never stall it. */
static int s_spill_fd(rf_store_t *s)
{
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s/tmp", s->dir);
    return open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
}

/* Turns a DISK or MEMORY fill into SHARE: it will not be kept. Bytes held
 * only in memory move to a spill file (object lock held). */
static int s_degrade(rf_obj_t *o)
{
    if (o->keep == RF_KEEP_SHARE || o->keep == RF_KEEP_SOLO)
        return 0;
    if (o->tmp_path != NULL) {
        /* The descriptor stays: readers go on reading the unlinked file. */
        unlink(o->tmp_path);
        free(o->tmp_path);
        o->tmp_path = NULL;
    }
    if (o->fd < 0) {
        o->fd_gen++;
        o->body_off = 0;
        if ((o->fd = s_spill_fd(o->store)) < 0)
            return -1;
        if (o->mem != NULL && s_write_all(o->fd, o->mem->data, o->mem->len, 0) < 0)
            return -1;
    }
    o->keep = RF_KEEP_SHARE;
    return 0;
}

int rf_obj_set_head(rf_obj_t *o, const rf_meta_t *meta, const char *headers, size_t headers_len, rf_keep_t keep)
{
    rf_store_t *s = o->store;
    int rc = -1;
    pthread_mutex_lock(&o->mu);
    if (o->has_head || o->state != RF_OBJ_FILLING || headers_len > RF_META_MAX)
        goto out;
    o->meta = *meta;
    if ((o->hdrs = malloc(headers_len ? headers_len : 1)) == NULL)
        goto out;
    memcpy(o->hdrs, headers, headers_len);
    o->hdrs_len = headers_len;
    o->keep = keep;
    if (keep == RF_KEEP_DISK || keep == RF_KEEP_MEMORY) {
        /* Bodies that fit the memory tier are kept in memory as they come. */
        if (meta->length >= 0 ? (uint64_t)meta->length <= s->opts.memory_object_max : s->opts.memory_object_max > 0)
            o->mem = s_buf_new(meta->length >= 0 ? (size_t)meta->length : 16384);
        if (keep == RF_KEEP_MEMORY && o->mem == NULL && s_degrade(o) < 0)
            goto out;
    }
    if (o->keep == RF_KEEP_DISK) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/tmp/%ld-%lu.tmp", s->dir, (long)getpid(),
                 (unsigned long)atomic_fetch_add(&s->tmp_seq, 1));
        o->fd = open(path, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
        o->body_off = sizeof(rf_obj_disk_t) + o->key_len + o->hdrs_len;
        if (o->fd < 0 || (o->tmp_path = strdup(path)) == NULL) {
            if (o->fd >= 0)
                unlink(path), close(o->fd), o->fd = -1;
            if (s_degrade(o) < 0)
                goto out;
        }
    } else if (o->keep == RF_KEEP_SHARE && o->fd < 0) { /* (a degraded MEMORY one has its spill) */
        if ((o->fd = s_spill_fd(s)) < 0)
            goto out;
        o->body_off = 0;
    }
    o->has_head = true;
    rc = 0;
out:
    if (rc == 0)
        s_wake_all(o);
    pthread_mutex_unlock(&o->mu);
    if (rc == 0 && (keep == RF_KEEP_SOLO || keep == RF_KEEP_SHARE)) {
        /* Not kept: later requests must not join (SOLO) or find it after
         * the fill (SHARE leaves at finish). */
        if (keep == RF_KEEP_SOLO) {
            pthread_mutex_lock(&s->mu);
            s_unindex(s, o);
            pthread_mutex_unlock(&s->mu);
        }
    }
    return rc;
}

int rf_obj_append(rf_obj_t *o, const void *data, size_t len)
{
    int rc = -1;
    pthread_mutex_lock(&o->mu);
    if (o->state != RF_OBJ_FILLING || !o->has_head)
        goto out;
    if (len == 0) {
        rc = 0;
        goto out;
    }
    if (o->keep == RF_KEEP_SOLO) {
        if (o->win_len + len > o->win_cap) {
            size_t cap = o->win_cap ? o->win_cap : 65536;
            while (cap < o->win_len + len)
                cap *= 2;
            char *w = realloc(o->win, cap);
            if (w == NULL)
                goto out;
            o->win = w;
            o->win_cap = cap;
        }
        memcpy(o->win + o->win_len, data, len);
        o->win_len += len;
        o->filled += len;
        s_wake_all(o);
        rc = o->win_len >= RF_SOLO_WINDOW ? 1 : 0;
        o->paused = rc == 1;
        goto out;
    }
    if (o->mem != NULL) {
        uint64_t max = o->store->opts.memory_object_max;
        if (o->filled + len > max || (o->meta.length >= 0 && o->filled + len > (uint64_t)o->meta.length)) {
            /* Outgrew the memory tier (or its own length: that fails at
             * finish). Only disk keeps it now, or nothing. */
            if (o->keep == RF_KEEP_MEMORY && s_degrade(o) < 0)
                goto out;
            rf_buf_unref(&o->mem);
        } else {
            if (o->mem->len + len > o->mem->cap) {
                size_t cap = o->mem->cap * 2;
                while (cap < o->mem->len + len)
                    cap *= 2;
                if (cap > max)
                    cap = max;
                rf_buf_t *b = realloc(o->mem, sizeof(*b) + cap);
                if (b == NULL)
                    goto out;
                b->cap = cap;
                o->mem = b; /* no sender holds it before COMPLETE */
            }
            memcpy(o->mem->data + o->mem->len, data, len);
            o->mem->len += len;
        }
    }
    if (o->fd >= 0 && s_write_all(o->fd, data, len, (off_t)(o->body_off + o->filled)) < 0) {
        if (o->keep != RF_KEEP_DISK || o->mem == NULL)
            goto out;
        /* Disk full: go on from a spill of the memory copy, but do not
         * keep the object. */
        close(o->fd), o->fd = -1;
        if (s_degrade(o) < 0)
            goto out;
    }
    o->crc = (uint32_t)crc32(o->crc, data, (uInt)len);
    o->filled += len;
    s_wake_all(o);
    rc = 0;
out:
    pthread_mutex_unlock(&o->mu);
    return rc;
}

void rf_obj_on_drain(rf_obj_t *o, void (*resume)(void *arg), void *arg)
{
    pthread_mutex_lock(&o->mu);
    o->resume = resume;
    o->resume_arg = arg;
    pthread_mutex_unlock(&o->mu);
}

/* Writes the final header and renames the file into place (object lock
 * held). 0 or -1. */
/* The object's file header as it stands (object lock held). */
static void s_disk_header(const rf_obj_t *o, rf_obj_disk_t *out)
{
    rf_obj_disk_t d;
    memset(&d, 0, sizeof(d));
    memcpy(d.magic, RF_OBJ_MAGIC, 8);
    d.version = RF_OBJ_VERSION;
    d.key_len = (uint32_t)o->key_len;
    d.meta_len = (uint32_t)o->hdrs_len;
    d.head_len = (uint32_t)(sizeof(d) + o->key_len + o->hdrs_len);
    d.body_len = o->filled;
    d.body_crc = o->crc;
    d.status = o->meta.status;
    d.stored_at = o->meta.stored_at;
    d.expires_at = o->meta.expires_at;
    d.age = o->meta.age;
    d.flags = o->meta.flags;
    d.lifetime = o->meta.lifetime;
    d.ttl_source = o->meta.ttl_source;
    d.head_crc = s_head_crc(d, o->key, o->hdrs);
    *out = d;
}

static int s_publish_file(rf_obj_t *o)
{
    rf_store_t *s = o->store;
    rf_obj_disk_t d;
    s_disk_header(o, &d);
    if (s_write_all(o->fd, &d, sizeof(d), 0) < 0 || s_write_all(o->fd, o->key, o->key_len, sizeof(d)) < 0 ||
        s_write_all(o->fd, o->hdrs, o->hdrs_len, (off_t)(sizeof(d) + o->key_len)) < 0)
        return -1;
    char dir[4096], path[4096];
    snprintf(dir, sizeof(dir), "%s/objects/%.2s", s->dir, o->name);
    if (mkdir(dir, 0700) < 0 && errno != EEXIST)
        return -1;
    s_obj_path(s, o->name, path, sizeof(path));
    if (rename(o->tmp_path, path) < 0)
        return -1;
    free(o->tmp_path);
    o->tmp_path = NULL;
    o->on_disk = true;
    return 0;
}

void rf_obj_finish(rf_obj_t *o, bool ok)
{
    rf_store_t *s = o->store;
    pthread_mutex_lock(&s->mu);
    pthread_mutex_lock(&o->mu);
    if (o->state != RF_OBJ_FILLING) {
        pthread_mutex_unlock(&o->mu);
        pthread_mutex_unlock(&s->mu);
        return;
    }
    if (ok && (!o->has_head || (o->meta.length >= 0 && o->filled != (uint64_t)o->meta.length)))
        ok = false;
    bool keep = false;
    uint64_t size = o->filled + sizeof(rf_obj_disk_t) + o->key_len + o->hdrs_len;
    if (!o->indexed) {
        /* Purged while filling: readers finish, nothing is kept. */
        if (o->keep == RF_KEEP_DISK || o->keep == RF_KEEP_MEMORY)
            s_degrade(o);
    } else if (ok && o->keep == RF_KEEP_DISK) {
        if (o->tmp_path != NULL && s_fits(size, s->opts.disk) && s_publish_file(o) == 0)
            keep = true;
        else
            s_degrade(o);
    } else if (ok && o->keep == RF_KEEP_MEMORY) {
        keep = o->mem != NULL;
    }
    if (!ok && o->tmp_path != NULL) {
        unlink(o->tmp_path);
        free(o->tmp_path);
        o->tmp_path = NULL;
    }
    o->state = ok ? RF_OBJ_COMPLETE : RF_OBJ_FAILED;
    if (o->mem != NULL && o->mem->len != o->filled)
        rf_buf_unref(&o->mem);
    s_wake_all(o);
    bool has_mem = o->mem != NULL;
    rf_obj_t *prev = o->prev;
    o->prev = NULL;
    pthread_mutex_unlock(&o->mu);
    if (!keep && o->old_ino != 0) {
        /* Not kept: the previous object's file must not outlive it (a
         * purge or a restart would bring it back). Only that file: a newer
         * object may own the name by now. */
        char path[4096];
        struct stat st;
        s_obj_path(s, o->name, path, sizeof(path));
        if (stat(path, &st) == 0 && st.st_dev == o->old_dev && st.st_ino == o->old_ino)
            unlink(path);
    }
    if (!keep) {
        s_unindex(s, o);
    } else if (o->indexed) {
        /* Account for it; room is made by evicting others (never itself). */
        if (o->keep == RF_KEEP_DISK && rf_evict_access(s->disk, o->h, size, s_on_evict_disk, s) == 0)
            o->in_disk_policy = true;
        if (has_mem && s_fits(size, s->opts.memory) &&
            rf_evict_access(s->memory, o->h, size, s_on_evict_memory, s) == 0)
            o->in_mem_policy = true;
        if (o->keep == RF_KEEP_DISK && !o->in_disk_policy)
            s_unindex(s, o); /* larger than the whole disk budget */
        else if (o->keep == RF_KEEP_MEMORY && !o->in_mem_policy)
            s_unindex(s, o);
        else if (!o->in_mem_policy && has_mem) {
            pthread_mutex_lock(&o->mu);
            rf_buf_unref(&o->mem);
            pthread_mutex_unlock(&o->mu);
        }
    }
    pthread_mutex_unlock(&s->mu);
    /* The fill's descriptor is no longer needed by new readers (complete
     * objects are opened by path; readers that dup'ed it keep theirs). */
    pthread_mutex_lock(&o->mu);
    if (o->fd >= 0 && o->keep != RF_KEEP_SHARE && o->keep != RF_KEEP_SOLO)
        close(o->fd), o->fd = -1;
    pthread_mutex_unlock(&o->mu);
    rf_obj_unref(&prev); /* after the locks: dropping the last reference closes files */
}

/* ---- lookup ---------------------------------------------------------------------------- */

int rf_store_verify_file(const char *path)
{
    int rc = -1, fd = open(path, O_RDONLY | O_CLOEXEC);
    char *head = NULL, *buf = NULL;
    if (fd < 0)
        return -1;
    rf_obj_disk_t d;
    struct stat st;
    if (fstat(fd, &st) < 0 || s_read_all(fd, &d, sizeof(d), 0) < 0 || memcmp(d.magic, RF_OBJ_MAGIC, 8) != 0 ||
        d.version != RF_OBJ_VERSION || d.key_len > RF_KEY_MAX || d.meta_len > RF_META_MAX ||
        d.head_len != sizeof(d) + d.key_len + d.meta_len || (uint64_t)st.st_size != d.head_len + d.body_len)
        goto out;
    if ((head = malloc(d.key_len + d.meta_len + 1)) == NULL || (buf = malloc(1 << 20)) == NULL ||
        s_read_all(fd, head, d.key_len + d.meta_len, sizeof(d)) < 0 ||
        s_head_crc(d, head, head + d.key_len) != d.head_crc)
        goto out;
    uLong c = 0;
    for (uint64_t off = 0; off < d.body_len;) {
        size_t n = d.body_len - off > (1 << 20) ? (1 << 20) : (size_t)(d.body_len - off);
        if (s_read_all(fd, buf, n, (off_t)(d.head_len + off)) < 0)
            goto out;
        c = crc32(c, (const Bytef *)buf, (uInt)n);
        off += n;
    }
    rc = (uint32_t)c == d.body_crc ? 0 : -1;
out:
    free(head);
    free(buf);
    close(fd);
    return rc;
}

rf_lookup_t rf_store_lookup(rf_store_t *s, const char *key, size_t key_len, bool claim, bool replace_complete,
                            rf_obj_t **obj)
{
    *obj = NULL;
    if (key_len > RF_KEY_MAX)
        return RF_LOOKUP_MISS;
    uint64_t h = XXH3_64bits_withSeed(key, key_len, s->seed);
    pthread_mutex_lock(&s->mu);
    rf_obj_t *o = s_find(s, h, key, key_len);
    if (o != NULL && o->unverified) {
        /* Once per object found at start: a torn or flipped body is a
         * miss. Read outside the index lock (a large body takes a while);
         * two requests may both verify, which is harmless. */
        char path[4096];
        s_obj_path(s, o->name, path, sizeof(path));
        rf_obj_ref(o);
        pthread_mutex_unlock(&s->mu);
        int good = rf_store_verify_file(path) == 0;
        pthread_mutex_lock(&s->mu);
        if (good) {
            o->unverified = false;
        } else if (o->indexed && o->unverified) {
            s->stats.dropped_at_load++;
            s_unindex(s, o);
        }
        bool still = o->indexed && !o->unverified;
        rf_obj_unref(&o);
        o = still ? s_find(s, h, key, key_len) : NULL;
    }
    if (o != NULL) {
        pthread_mutex_lock(&o->mu);
        rf_obj_state_t st = o->state;
        pthread_mutex_unlock(&o->mu);
        if (st == RF_OBJ_FILLING || !(claim && replace_complete)) {
            if (st == RF_OBJ_COMPLETE) {
                if (o->in_disk_policy)
                    rf_evict_access(s->disk, o->h, 0, NULL, NULL);
                if (o->in_mem_policy)
                    rf_evict_access(s->memory, o->h, 0, NULL, NULL);
            }
            rf_obj_ref(o);
            *obj = o;
            pthread_mutex_unlock(&s->mu);
            return st == RF_OBJ_FILLING ? RF_LOOKUP_BUSY : RF_LOOKUP_HIT;
        }
    }
    if (!claim) {
        pthread_mutex_unlock(&s->mu);
        return RF_LOOKUP_MISS;
    }
    rf_obj_t *n = s_obj_new(s, key, key_len, h);
    if (n == NULL) {
        pthread_mutex_unlock(&s->mu);
        return RF_LOOKUP_MISS;
    }
    if (o != NULL) { /* an expired complete one: readers may still want it meanwhile */
        rf_obj_ref(o);
        n->prev = o;
    }
    s_index(s, n); /* replaces o, if any */
    pthread_mutex_unlock(&s->mu);
    *obj = n;
    return RF_LOOKUP_CLAIM;
}

int rf_store_remove(rf_store_t *s, const char *key, size_t key_len)
{
    uint64_t h = XXH3_64bits_withSeed(key, key_len, s->seed);
    pthread_mutex_lock(&s->mu);
    rf_obj_t *o = s_find(s, h, key, key_len);
    if (o != NULL)
        s_unindex(s, o);
    pthread_mutex_unlock(&s->mu);
    return o != NULL;
}

size_t rf_store_remove_if(rf_store_t *s, int (*fn)(const char *key, size_t len, void *arg), void *arg)
{
    size_t n = 0;
    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; i < s->nbuckets; i++)
        for (rf_obj_t *o = s->buckets[i], *next; o != NULL; o = next) {
            next = o->hnext;
            if (fn(o->key, o->key_len, arg) == 1) {
                s_unindex(s, o);
                n++;
            }
        }
    pthread_mutex_unlock(&s->mu);
    return n;
}

size_t rf_store_expire_if(rf_store_t *s, int (*fn)(const char *key, size_t len, void *arg), void *arg, uint32_t flags)
{
    size_t n = 0;
    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; i < s->nbuckets; i++)
        for (rf_obj_t *o = s->buckets[i]; o != NULL; o = o->hnext) {
            if (fn(o->key, o->key_len, arg) != 1)
                continue;
            pthread_mutex_lock(&o->mu);
            if (o->state == RF_OBJ_COMPLETE) {
                o->meta.expires_at = 0;
                o->meta.flags |= flags;
                if (o->on_disk) {
                    /* Persist it: a restart must not make it fresh again. */
                    char path[4096];
                    rf_obj_disk_t d;
                    s_obj_path(s, o->name, path, sizeof(path));
                    s_disk_header(o, &d);
                    int fd = open(path, O_WRONLY | O_CLOEXEC);
                    if (fd < 0 || s_write_all(fd, &d, sizeof(d), 0) < 0)
                        unlink(path); /* cannot persist: drop the file instead */
                    if (fd >= 0)
                        close(fd);
                }
                n++;
            }
            pthread_mutex_unlock(&o->mu);
        }
    pthread_mutex_unlock(&s->mu);
    return n;
}

void rf_store_stats(rf_store_t *s, rf_store_stats_t *out)
{
    pthread_mutex_lock(&s->mu);
    *out = s->stats;
    out->objects = s->count;
    out->disk_bytes = rf_evict_bytes(s->disk);
    out->memory_bytes = rf_evict_bytes(s->memory);
    pthread_mutex_unlock(&s->mu);
}

void rf_store_path(rf_store_t *s, const char *key, size_t key_len, char *buf, size_t len)
{
    char name[33];
    s_hex128(key, key_len, name);
    s_obj_path(s, name, buf, len);
}

static int s_cursor_fd(rf_cursor_t *c);

/* ---- cursors ---------------------------------------------------------------------------- */

int rf_cursor_init(rf_cursor_t *c, rf_obj_t *o, bool first, void (*wake)(rf_waiter_t *w))
{
    int rc = 0;
    memset(c, 0, sizeof(*c));
    c->obj = o;
    rf_obj_ref(o);
    c->end = UINT64_MAX;
    c->fd = -1;
    c->first = first;
    c->waiter.wake = wake;
    pthread_mutex_lock(&o->mu);
    o->readers++;
    c->attached = true;
    /* A complete object only on disk: open it now, so an eviction racing
     * with this hit makes a miss rather than a broken transfer. A fill's
     * file too: finish closes the fill's descriptor, and an eviction right
     * after would leave a reader that has not read yet with nothing. */
    if (o->state == RF_OBJ_COMPLETE && o->mem == NULL && o->keep != RF_KEEP_SOLO)
        rc = s_cursor_fd(c);
    else if (o->state == RF_OBJ_FILLING && o->fd >= 0)
        s_cursor_fd(c); /* best effort: without it, reads fall back to the path */
    pthread_mutex_unlock(&o->mu);
    return rc;
}

void rf_cursor_close(rf_cursor_t *c)
{
    rf_obj_t *o = c->obj;
    if (o == NULL)
        return;
    pthread_mutex_lock(&o->mu);
    s_disarm(o, &c->waiter);
    if (c->attached) {
        o->readers--;
        c->attached = false;
    }
    pthread_mutex_unlock(&o->mu);
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    rf_obj_unref(&c->obj);
}

rf_read_t rf_cursor_wait_end(rf_cursor_t *c)
{
    rf_obj_t *o = c->obj;
    rf_read_t r;
    pthread_mutex_lock(&o->mu);
    if (o->state == RF_OBJ_FAILED)
        r = RF_READ_FAILED;
    else if (o->has_head && o->keep == RF_KEEP_SOLO) /* its window waits for a reader: never for this one */
        r = RF_READ_PASS;
    else if (o->state == RF_OBJ_COMPLETE)
        r = RF_READ_EOF;
    else
        s_arm(o, &c->waiter), r = RF_READ_WAIT;
    pthread_mutex_unlock(&o->mu);
    return r;
}

int rf_obj_file(rf_obj_t *o, char *path, size_t cap, uint64_t *body_off, uint64_t *len)
{
    pthread_mutex_lock(&o->mu);
    bool ok = o->state == RF_OBJ_COMPLETE && o->keep == RF_KEEP_DISK && o->on_disk;
    if (ok) {
        *body_off = o->body_off;
        *len = o->filled;
    }
    pthread_mutex_unlock(&o->mu);
    if (ok)
        s_obj_path(o->store, o->name, path, cap);
    return ok ? 0 : -1;
}

rf_read_t rf_cursor_head(rf_cursor_t *c)
{
    rf_obj_t *o = c->obj;
    rf_read_t r;
    pthread_mutex_lock(&o->mu);
    if (o->has_head && o->keep == RF_KEEP_SOLO && !c->first)
        r = RF_READ_PASS;
    else if (o->has_head)
        r = RF_READ_DATA;
    else if (o->state == RF_OBJ_FAILED)
        r = RF_READ_FAILED;
    else
        s_arm(o, &c->waiter), r = RF_READ_WAIT;
    pthread_mutex_unlock(&o->mu);
    return r;
}

/* Opens the reader's own descriptor for disk reads (object lock held):
 * a duplicate of the fill's file while there is one, else the object file. */
static int s_cursor_fd(rf_cursor_t *c)
{
    rf_obj_t *o = c->obj;
    if (c->fd >= 0 && (o->fd < 0 || c->fd_gen == o->fd_gen))
        return 0;
    if (c->fd >= 0)
        close(c->fd), c->fd = -1;
    if (o->fd >= 0) {
        c->fd = fcntl(o->fd, F_DUPFD_CLOEXEC, 0);
        c->fd_gen = o->fd_gen;
    } else if (o->on_disk) {
        char path[4096];
        rf_obj_disk_t d;
        s_obj_path(o->store, o->name, path, sizeof(path));
        c->fd = open(path, O_RDONLY | O_CLOEXEC);
        /* The name may belong to a newer object of the key by now (a
         * refresh renamed over it, s_index): only this object's file. */
        if (c->fd >= 0 && (s_read_all(c->fd, &d, sizeof(d), 0) < 0 || d.head_len != o->body_off ||
                           d.body_len != o->filled || d.body_crc != o->crc))
            close(c->fd), c->fd = -1;
    }
    c->fd_off = o->body_off;
    return c->fd >= 0 ? 0 : -1;
}

rf_read_t rf_cursor_read(rf_cursor_t *c, void *buf, size_t cap, size_t *n)
{
    rf_obj_t *o = c->obj;
    *n = 0;
    pthread_mutex_lock(&o->mu);
    if (!o->has_head) {
        rf_read_t r = o->state == RF_OBJ_FAILED ? RF_READ_FAILED : RF_READ_WAIT;
        if (r == RF_READ_WAIT)
            s_arm(o, &c->waiter);
        pthread_mutex_unlock(&o->mu);
        return r;
    }
    if (o->keep == RF_KEEP_SOLO && !c->first) {
        pthread_mutex_unlock(&o->mu);
        return RF_READ_PASS;
    }
    uint64_t limit = o->filled < c->end ? o->filled : c->end;
    if (c->off >= limit) {
        rf_read_t r;
        if (o->state == RF_OBJ_FAILED)
            r = RF_READ_FAILED;
        else if (o->state == RF_OBJ_COMPLETE || c->off >= c->end)
            r = RF_READ_EOF;
        else
            s_arm(o, &c->waiter), r = RF_READ_WAIT;
        pthread_mutex_unlock(&o->mu);
        return r;
    }
    size_t want = limit - c->off < cap ? (size_t)(limit - c->off) : cap;
    if (o->keep == RF_KEEP_SOLO) {
        /* The one reader consumes the window; bytes before it are gone. */
        size_t at = (size_t)(c->off - o->win_off);
        memcpy(buf, o->win + at, want);
        c->off += want;
        size_t used = (size_t)(c->off - o->win_off);
        memmove(o->win, o->win + used, o->win_len - used);
        o->win_len -= used;
        o->win_off = c->off;
        if (o->paused && o->win_len < RF_SOLO_WINDOW / 2) {
            o->paused = false;
            if (o->resume != NULL)
                o->resume(o->resume_arg);
        }
        *n = want;
        pthread_mutex_unlock(&o->mu);
        return RF_READ_DATA;
    }
    if (o->mem != NULL && c->off + want <= o->mem->len) {
        memcpy(buf, o->mem->data + c->off, want);
        c->off += want;
        *n = want;
        pthread_mutex_unlock(&o->mu);
        return RF_READ_DATA;
    }
    int fdrc = s_cursor_fd(c);
    pthread_mutex_unlock(&o->mu);
    /* Bytes below `filled` never change: read them without the lock. */
    if (fdrc < 0 || s_read_all(c->fd, buf, want, (off_t)(c->fd_off + c->off)) < 0)
        return RF_READ_FAILED;
    c->off += want;
    *n = want;
    return RF_READ_DATA;
}

/* ---- the store -------------------------------------------------------------------------- */

static void s_store_unref(rf_store_t *s)
{
    if (atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
        return;
    rf_evict_destroy(&s->disk);
    rf_evict_destroy(&s->memory);
    if (s->lock_fd >= 0)
        close(s->lock_fd);
    free(s->buckets);
    free(s->dir);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

void rf_store_destroy(rf_store_t **self_p)
{
    rf_store_t *s = *self_p;
    if (s == NULL)
        return;
    *self_p = NULL;
    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; i < s->nbuckets; i++)
        while (s->buckets[i] != NULL) {
            rf_obj_t *o = s->buckets[i];
            s->buckets[i] = o->hnext;
            o->indexed = false;
            o->hnext = NULL;
            rf_obj_unref(&o); /* the file stays: it is the cache */
        }
    s->count = 0;
    /* The directory is free for the next process (or store) now, even if
     * fills still hold objects. */
    if (s->lock_fd >= 0)
        close(s->lock_fd), s->lock_fd = -1;
    pthread_mutex_unlock(&s->mu);
    s_store_unref(s);
}

static int s_mkdirs(const char *dir, char **err)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s", dir);
    for (char *p = path + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            if (mkdir(path, 0700) < 0 && errno != EEXIST)
                goto fail;
            *p = '/';
        }
    if (mkdir(path, 0700) < 0 && errno != EEXIST)
        goto fail;
    return 0;
fail:
    if (asprintf(err, "cache dir %s: %s", path, strerror(errno)) < 0)
        *err = NULL;
    return -1;
}

/* Reads one object file's header into a new indexed, unverified object;
 * deletes files that are not whole objects. */
static void s_load_file(rf_store_t *s, const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    char *head = NULL;
    rf_obj_t *o = NULL;
    if (fd < 0)
        return;
    rf_obj_disk_t d;
    struct stat st;
    if (fstat(fd, &st) < 0 || s_read_all(fd, &d, sizeof(d), 0) < 0 || memcmp(d.magic, RF_OBJ_MAGIC, 8) != 0 ||
        d.version != RF_OBJ_VERSION || d.key_len > RF_KEY_MAX || d.meta_len > RF_META_MAX ||
        d.head_len != sizeof(d) + d.key_len + d.meta_len || (uint64_t)st.st_size != d.head_len + d.body_len)
        goto bad;
    if ((head = malloc(d.key_len + d.meta_len + 1)) == NULL ||
        s_read_all(fd, head, d.key_len + d.meta_len, sizeof(d)) < 0 ||
        s_head_crc(d, head, head + d.key_len) != d.head_crc)
        goto bad;
    char name[33], want[4096];
    s_hex128(head, d.key_len, name);
    s_obj_path(s, name, want, sizeof(want));
    if (strcmp(path, want) != 0)
        goto bad; /* not where its key says it lives (name and directory) */
    uint64_t h = XXH3_64bits_withSeed(head, d.key_len, s->seed);
    if ((o = s_obj_new(s, head, d.key_len, h)) == NULL || (o->hdrs = malloc(d.meta_len + 1)) == NULL)
        goto out;
    memcpy(o->hdrs, head + d.key_len, d.meta_len);
    o->hdrs_len = d.meta_len;
    o->has_head = true;
    o->state = RF_OBJ_COMPLETE;
    o->keep = RF_KEEP_DISK;
    o->on_disk = true;
    o->body_off = d.head_len;
    o->filled = d.body_len;
    o->crc = d.body_crc;
    o->meta = (rf_meta_t){.status = d.status,
                          .stored_at = d.stored_at,
                          .expires_at = d.expires_at,
                          .age = d.age,
                          .flags = d.flags,
                          .lifetime = d.lifetime,
                          .ttl_source = d.ttl_source,
                          .length = (int64_t)d.body_len};
    o->unverified = true;
    s_index(s, o);
    if (s_fits(d.head_len + d.body_len, s->opts.disk) &&
        rf_evict_access(s->disk, h, d.head_len + d.body_len, s_on_evict_disk, s) == 0)
        o->in_disk_policy = true;
    else
        s_unindex(s, o);
    s->stats.loaded++;
    goto out;
bad:
    unlink(path);
    s->stats.dropped_at_load++;
out:
    rf_obj_unref(&o);
    free(head);
    close(fd);
}

static void s_scan(rf_store_t *s)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/tmp", s->dir);
    DIR *d = opendir(path);
    for (struct dirent *e; d != NULL && (e = readdir(d)) != NULL;) {
        if (e->d_name[0] == '.')
            continue;
        char p[4096 + 256];
        snprintf(p, sizeof(p), "%s/%s", path, e->d_name);
        unlink(p); /* a fill a crash interrupted: never an object */
    }
    if (d != NULL)
        closedir(d);
    snprintf(path, sizeof(path), "%s/objects", s->dir);
    DIR *top = opendir(path);
    for (struct dirent *e; top != NULL && (e = readdir(top)) != NULL;) {
        if (e->d_name[0] == '.' || strlen(e->d_name) != 2)
            continue;
        char sub[4096 + 300];
        snprintf(sub, sizeof(sub), "%s/%.2s", path, e->d_name);
        DIR *sd = opendir(sub);
        for (struct dirent *f; sd != NULL && (f = readdir(sd)) != NULL;) {
            if (f->d_name[0] == '.')
                continue;
            char p[4096 + 600];
            snprintf(p, sizeof(p), "%s/%s", sub, f->d_name);
            s_load_file(s, p);
        }
        if (sd != NULL)
            closedir(sd);
    }
    if (top != NULL)
        closedir(top);
}

rf_store_t *rf_store_new(const rf_store_opts_t *opts, char **err)
{
    *err = NULL;
    rf_store_t *s = calloc(1, sizeof(*s));
    char sub[4096];
    if (s == NULL)
        goto oom;
    atomic_init(&s->refs, 1);
    pthread_mutex_init(&s->mu, NULL);
    s->lock_fd = -1;
    s->opts = *opts;
    s->nbuckets = 1024;
    if ((s->dir = strdup(opts->dir)) == NULL || (s->buckets = calloc(s->nbuckets, sizeof(*s->buckets))) == NULL)
        goto oom;
    /* Zero budgets are legal (a tier switched off): keep a 1-byte policy
     * that admits nothing rather than special cases everywhere. */
    if ((s->disk = rf_evict_new(RF_EVICT_S3FIFO, opts->disk ? opts->disk : 1)) == NULL ||
        (s->memory = rf_evict_new(RF_EVICT_S3FIFO, opts->memory ? opts->memory : 1)) == NULL)
        goto oom;
    if (opts->memory == 0)
        s->opts.memory_object_max = 0;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    s->seed = XXH3_64bits(&ts, sizeof(ts)) ^ (uint64_t)getpid();
    if (s_mkdirs(s->dir, err) < 0)
        goto fail;
    snprintf(sub, sizeof(sub), "%s/lock", s->dir);
    if ((s->lock_fd = open(sub, O_CREAT | O_RDWR | O_CLOEXEC, 0600)) < 0 || flock(s->lock_fd, LOCK_EX | LOCK_NB) < 0) {
        if (asprintf(err, "cache dir %s: %s", s->dir,
                     errno == EWOULDBLOCK ? "in use by another process (each gateway needs its own cache.dir)"
                                          : strerror(errno)) < 0)
            *err = NULL;
        goto fail;
    }
    snprintf(sub, sizeof(sub), "%s/tmp", s->dir);
    if (s_mkdirs(sub, err) < 0)
        goto fail;
    snprintf(sub, sizeof(sub), "%s/objects", s->dir);
    if (s_mkdirs(sub, err) < 0)
        goto fail;
    s_scan(s);
    return s;
oom:
    if (asprintf(err, "cache: out of memory") < 0)
        *err = NULL;
fail:
    if (s != NULL)
        s_store_unref(s);
    return NULL;
}
