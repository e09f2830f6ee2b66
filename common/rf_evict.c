#include "rf_evict.h"

#include <stdlib.h>
#include <string.h>

/* ---- a uint64 -> uint64 open-addressing map ------------------------------------ */

typedef struct {
    uint64_t *keys, *vals;
    uint8_t *state; /* 0 empty, 1 used, 2 deleted */
    size_t cap, used, filled; /* filled counts deleted slots too */
} s_map_t;

static uint64_t s_hash(uint64_t k)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ULL;
    return k ^ (k >> 33);
}

static int s_map_init(s_map_t *m, size_t cap)
{
    memset(m, 0, sizeof(*m));
    m->cap = cap;
    m->keys = malloc(cap * sizeof(uint64_t));
    m->vals = malloc(cap * sizeof(uint64_t));
    m->state = calloc(cap, 1);
    return m->keys && m->vals && m->state ? 0 : -1;
}

static void s_map_free(s_map_t *m)
{
    free(m->keys);
    free(m->vals);
    free(m->state);
    memset(m, 0, sizeof(*m));
}

/* The slot of `k`, or of where it would go (first deleted or empty). */
static size_t s_map_slot(const s_map_t *m, uint64_t k, int *found)
{
    size_t mask = m->cap - 1, i = (size_t)s_hash(k) & mask, tomb = SIZE_MAX;
    for (;; i = (i + 1) & mask) {
        if (m->state[i] == 0) {
            *found = 0;
            return tomb != SIZE_MAX ? tomb : i;
        }
        if (m->state[i] == 2) {
            if (tomb == SIZE_MAX)
                tomb = i;
        } else if (m->keys[i] == k) {
            *found = 1;
            return i;
        }
    }
}

static int s_map_get(const s_map_t *m, uint64_t k, uint64_t *v)
{
    int found;
    size_t i = s_map_slot(m, k, &found);
    if (found && v != NULL)
        *v = m->vals[i];
    return found;
}

static int s_map_put(s_map_t *m, uint64_t k, uint64_t v);

/* Rebuilds into a table of `cap` slots (dropping deleted ones). */
static int s_map_rehash(s_map_t *m, size_t cap)
{
    s_map_t n;
    if (s_map_init(&n, cap) < 0) {
        s_map_free(&n);
        return -1;
    }
    for (size_t i = 0; i < m->cap; i++)
        if (m->state[i] == 1)
            s_map_put(&n, m->keys[i], m->vals[i]);
    s_map_free(m);
    *m = n;
    return 0;
}

static int s_map_put(s_map_t *m, uint64_t k, uint64_t v)
{
    if ((m->filled + 1) * 2 > m->cap && s_map_rehash(m, m->used * 4 > m->cap ? m->cap * 2 : m->cap) < 0)
        return -1;
    int found;
    size_t i = s_map_slot(m, k, &found);
    if (!found) {
        if (m->state[i] == 0)
            m->filled++;
        m->used++;
        m->state[i] = 1;
        m->keys[i] = k;
    }
    m->vals[i] = v;
    return 0;
}

static int s_map_del(s_map_t *m, uint64_t k)
{
    int found;
    size_t i = s_map_slot(m, k, &found);
    if (!found)
        return 0;
    m->state[i] = 2;
    m->used--;
    return 1;
}

/* ---- objects and their queues ------------------------------------------------- */

enum { Q_SMALL, Q_MAIN, Q_N };

typedef struct {
    uint64_t key, size;
    uint32_t prev, next; /* indices; NIL at the ends */
    uint8_t freq, queue;
} s_obj_t;

#define NIL UINT32_MAX

typedef struct {
    uint32_t head, tail; /* head: newest */
    uint64_t bytes;
    size_t count;
} s_queue_t;

struct rf_evict_t {
    rf_evict_kind_t kind;
    uint64_t capacity, small_cap, bytes;
    s_obj_t *objs;
    uint32_t n_objs, cap_objs, free_list;
    s_map_t index; /* key -> object index */
    s_queue_t q[Q_N]; /* LRU uses q[Q_MAIN] only */
    /* S3-FIFO ghost: keys recently evicted from the small queue */
    s_map_t ghost;          /* key -> sequence number when it entered */
    uint64_t *ghost_ring;   /* keys in entry order */
    size_t ghost_cap, ghost_head, ghost_len;
    uint64_t ghost_seq;
};

const char *rf_evict_name(rf_evict_kind_t kind)
{
    return kind == RF_EVICT_S3FIFO ? "s3fifo" : "lru";
}

rf_evict_t *rf_evict_new(rf_evict_kind_t kind, uint64_t capacity)
{
    if (capacity == 0)
        return NULL;
    rf_evict_t *self = calloc(1, sizeof(*self));
    if (self == NULL)
        return NULL;
    self->kind = kind;
    self->capacity = capacity;
    self->small_cap = capacity / 10;
    self->free_list = NIL;
    for (int i = 0; i < Q_N; i++)
        self->q[i].head = self->q[i].tail = NIL;
    if (s_map_init(&self->index, 1024) < 0 || s_map_init(&self->ghost, 1024) < 0) {
        rf_evict_destroy(&self);
        return NULL;
    }
    return self;
}

void rf_evict_destroy(rf_evict_t **self_p)
{
    if (self_p == NULL || *self_p == NULL)
        return;
    rf_evict_t *self = *self_p;
    s_map_free(&self->index);
    s_map_free(&self->ghost);
    free(self->objs);
    free(self->ghost_ring);
    free(self);
    *self_p = NULL;
}

static void s_unlink(rf_evict_t *self, uint32_t i)
{
    s_obj_t *o = &self->objs[i];
    s_queue_t *q = &self->q[o->queue];
    if (o->prev != NIL)
        self->objs[o->prev].next = o->next;
    else
        q->head = o->next;
    if (o->next != NIL)
        self->objs[o->next].prev = o->prev;
    else
        q->tail = o->prev;
    q->bytes -= o->size;
    q->count--;
}

static void s_push_head(rf_evict_t *self, uint32_t i, int queue)
{
    s_obj_t *o = &self->objs[i];
    s_queue_t *q = &self->q[queue];
    o->queue = (uint8_t)queue;
    o->prev = NIL;
    o->next = q->head;
    if (q->head != NIL)
        self->objs[q->head].prev = i;
    q->head = i;
    if (q->tail == NIL)
        q->tail = i;
    q->bytes += o->size;
    q->count++;
}

/* An object slot from the free list or the array. NIL when out of memory. */
static uint32_t s_alloc(rf_evict_t *self)
{
    if (self->free_list != NIL) {
        uint32_t i = self->free_list;
        self->free_list = self->objs[i].next;
        return i;
    }
    if (self->n_objs == self->cap_objs) {
        uint32_t cap = self->cap_objs ? self->cap_objs * 2 : 1024;
        s_obj_t *n = realloc(self->objs, cap * sizeof(s_obj_t));
        if (n == NULL)
            return NIL;
        self->objs = n;
        self->cap_objs = cap;
    }
    return self->n_objs++;
}

/* Drops object i from the index and its queue. */
static void s_drop(rf_evict_t *self, uint32_t i)
{
    s_unlink(self, i);
    s_map_del(&self->index, self->objs[i].key);
    self->bytes -= self->objs[i].size;
    self->objs[i].next = self->free_list;
    self->free_list = i;
}

/* Remembers a key evicted from the small queue; the ring holds about as
 * many keys as the main queue holds objects. */
static void s_ghost_add(rf_evict_t *self, uint64_t key)
{
    size_t limit = self->q[Q_MAIN].count > 16 ? self->q[Q_MAIN].count : 16;
    if (self->ghost_len == self->ghost_cap) {
        size_t cap = self->ghost_cap ? self->ghost_cap * 2 : 1024;
        uint64_t *n = malloc(cap * sizeof(uint64_t));
        if (n == NULL)
            return; /* a ghost is a hint: losing it is harmless */
        for (size_t k = 0; k < self->ghost_len; k++)
            n[k] = self->ghost_ring[(self->ghost_head + k) % self->ghost_cap];
        free(self->ghost_ring);
        self->ghost_ring = n;
        self->ghost_cap = cap;
        self->ghost_head = 0;
    }
    while (self->ghost_len >= limit) {
        uint64_t old = self->ghost_ring[self->ghost_head];
        uint64_t seq_of_old = self->ghost_seq - self->ghost_len;
        uint64_t v;
        if (s_map_get(&self->ghost, old, &v) && v == seq_of_old)
            s_map_del(&self->ghost, old);
        self->ghost_head = (self->ghost_head + 1) % self->ghost_cap;
        self->ghost_len--;
    }
    self->ghost_ring[(self->ghost_head + self->ghost_len) % self->ghost_cap] = key;
    self->ghost_len++;
    s_map_put(&self->ghost, key, self->ghost_seq++);
}

/* Frees at least one object. */
static void s_evict_one(rf_evict_t *self, rf_evict_fn *on_evict, void *arg)
{
    for (;;) {
        s_queue_t *s = &self->q[Q_SMALL], *m = &self->q[Q_MAIN];
        uint32_t i;
        if (self->kind == RF_EVICT_LRU) {
            i = m->tail;
        } else if (s->count > 0 && (s->bytes > self->small_cap || m->count == 0)) {
            i = s->tail;
            s_obj_t *o = &self->objs[i];
            if (o->freq > 0) { /* hit while in the small queue: keep it */
                s_unlink(self, i);
                o->freq = 0;
                s_push_head(self, i, Q_MAIN);
                continue;
            }
            s_ghost_add(self, o->key);
        } else {
            i = m->tail;
            s_obj_t *o = &self->objs[i];
            if (o->freq > 0) { /* second chance, one frequency step at a time */
                s_unlink(self, i);
                o->freq--;
                s_push_head(self, i, Q_MAIN);
                continue;
            }
        }
        uint64_t key = self->objs[i].key, size = self->objs[i].size;
        s_drop(self, i);
        if (on_evict != NULL)
            on_evict(key, size, arg);
        return;
    }
}

int rf_evict_access(rf_evict_t *self, uint64_t key, uint64_t size, rf_evict_fn *on_evict, void *arg)
{
    uint64_t v;
    if (s_map_get(&self->index, key, &v)) {
        s_obj_t *o = &self->objs[v];
        if (self->kind == RF_EVICT_LRU) {
            s_unlink(self, (uint32_t)v);
            s_push_head(self, (uint32_t)v, Q_MAIN);
        } else if (o->freq < 3) {
            o->freq++;
        }
        return 1;
    }
    if (size > self->capacity || size == 0)
        return 0; /* never fits (or nothing to keep): not admitted */
    uint32_t i = s_alloc(self);
    if (i == NIL || s_map_put(&self->index, key, i) < 0) {
        if (i != NIL) {
            self->objs[i].next = self->free_list;
            self->free_list = i;
        }
        return -1;
    }
    /* The slot is reserved in the index; make room before linking it. */
    while (self->bytes + size > self->capacity)
        s_evict_one(self, on_evict, arg);
    s_obj_t *o = &self->objs[i];
    o->key = key;
    o->size = size;
    o->freq = 0;
    int queue = Q_MAIN;
    if (self->kind == RF_EVICT_S3FIFO) {
        if (s_map_get(&self->ghost, key, NULL))
            s_map_del(&self->ghost, key); /* seen again soon after leaving: main */
        else
            queue = Q_SMALL;
    }
    s_push_head(self, i, queue);
    self->bytes += size;
    return 0;
}

int rf_evict_remove(rf_evict_t *self, uint64_t key)
{
    uint64_t v;
    if (!s_map_get(&self->index, key, &v))
        return 0;
    s_drop(self, (uint32_t)v);
    return 1;
}

uint64_t rf_evict_bytes(const rf_evict_t *self)
{
    return self->bytes;
}

size_t rf_evict_count(const rf_evict_t *self)
{
    return self->index.used;
}
