/*  vid_ixcache — see vid_ixcache.h. */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vid_ixcache.h"

typedef struct {
    char *key;
    uint8_t *blob;
    size_t len;
    uint64_t used; /* a tick of the last get or put */
} s_entry_t;

struct vid_ixcache {
    pthread_mutex_t mu;
    s_entry_t *e;
    size_t n, cap;
    uint64_t tick;
};

vid_ixcache_t *vid_ixcache_new(size_t entries)
{
    vid_ixcache_t *self = calloc(1, sizeof(*self));
    if (self == NULL)
        return NULL;
    self->cap = entries;
    if (entries > 0 && (self->e = calloc(entries, sizeof(*self->e))) == NULL) {
        free(self);
        return NULL;
    }
    pthread_mutex_init(&self->mu, NULL);
    return self;
}

void vid_ixcache_destroy(vid_ixcache_t **p)
{
    vid_ixcache_t *self = p != NULL ? *p : NULL;
    if (self == NULL)
        return;
    for (size_t i = 0; i < self->n; i++)
        free(self->e[i].key), free(self->e[i].blob);
    free(self->e);
    pthread_mutex_destroy(&self->mu);
    free(self);
    *p = NULL;
}

/* The entry under key, or NULL; with the lock held. A linear scan: a
 * worker keeps hundreds of indexes at most, and each lookup saves a moov
 * read. */
static s_entry_t *s_find(vid_ixcache_t *self, const char *key)
{
    for (size_t i = 0; i < self->n; i++)
        if (strcmp(self->e[i].key, key) == 0)
            return &self->e[i];
    return NULL;
}

vid_index_t *vid_ixcache_get(vid_ixcache_t *self, const char *key)
{
    if (self == NULL || self->cap == 0)
        return NULL;
    pthread_mutex_lock(&self->mu);
    s_entry_t *e = s_find(self, key);
    uint8_t *copy = NULL;
    size_t len = 0;
    if (e != NULL && (copy = malloc(e->len)) != NULL) {
        memcpy(copy, e->blob, e->len);
        len = e->len;
        e->used = ++self->tick;
    }
    pthread_mutex_unlock(&self->mu);
    if (copy == NULL)
        return NULL;
    char err[160];
    vid_index_t *ix = vid_index_load(copy, len, err, sizeof(err)); /* made by vid_index_save: cannot fail but OOM */
    free(copy);
    return ix;
}

void vid_ixcache_put(vid_ixcache_t *self, const char *key, const vid_index_t *ix)
{
    if (self == NULL || self->cap == 0)
        return;
    uint8_t *blob = NULL;
    size_t len = 0;
    char *k = strdup(key);
    if (k == NULL || vid_index_save(ix, &blob, &len) < 0) {
        free(k);
        return;
    }
    pthread_mutex_lock(&self->mu);
    s_entry_t *e = s_find(self, key);
    if (e != NULL) { /* another job made it meanwhile */
        free(e->blob);
        free(k);
    } else if (self->n < self->cap) {
        e = &self->e[self->n++];
        e->key = k;
    } else {
        e = &self->e[0];
        for (size_t i = 1; i < self->n; i++)
            if (self->e[i].used < e->used)
                e = &self->e[i];
        free(e->key);
        free(e->blob);
        e->key = k;
    }
    e->blob = blob;
    e->len = len;
    e->used = ++self->tick;
    pthread_mutex_unlock(&self->mu);
}
