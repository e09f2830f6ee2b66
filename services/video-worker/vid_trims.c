/*  vid_trims — see vid_trims.h. */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "rf_log.h"
#include "vid_trims.h"

#define S_PREFIX "refract-video-trims-"

struct vid_trims {
    char dir[512];
    size_t keep;
    pthread_mutex_t mu; /* eviction */
};

/* Removes every file in dir, then dir. */
static void s_rmdir(const char *dir)
{
    DIR *d = opendir(dir);
    if (d != NULL) {
        for (struct dirent *e; (e = readdir(d)) != NULL;)
            if (e->d_name[0] != '.')
                unlinkat(dirfd(d), e->d_name, 0);
        closedir(d);
    }
    rmdir(dir);
}

/* The directories of workers that no longer run, under base. */
static void s_sweep(const char *base)
{
    DIR *d = opendir(base);
    if (d == NULL)
        return;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (strncmp(e->d_name, S_PREFIX, strlen(S_PREFIX)) != 0)
            continue;
        char *end = NULL;
        long pid = strtol(e->d_name + strlen(S_PREFIX), &end, 10);
        if (pid <= 0 || *end != '\0' || pid == (long)getpid() || kill((pid_t)pid, 0) == 0 || errno != ESRCH)
            continue;
        char path[1024];
        snprintf(path, sizeof(path), "%s/%s", base, e->d_name);
        s_rmdir(path);
    }
    closedir(d);
}

vid_trims_t *vid_trims_new(const char *base, size_t keep)
{
    vid_trims_t *self = calloc(1, sizeof(*self));
    if (base == NULL)
        base = getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp";
    if (self == NULL)
        return NULL;
    s_sweep(base);
    snprintf(self->dir, sizeof(self->dir), "%s/" S_PREFIX "%ld", base, (long)getpid());
    if (mkdir(self->dir, 0700) != 0 && errno != EEXIST) {
        rf_error("video: cannot create %s: %s", self->dir, strerror(errno));
        free(self);
        return NULL;
    }
    self->keep = keep > 0 ? keep : 1;
    pthread_mutex_init(&self->mu, NULL);
    return self;
}

void vid_trims_destroy(vid_trims_t **p)
{
    vid_trims_t *self = p != NULL ? *p : NULL;
    if (self == NULL)
        return;
    s_rmdir(self->dir);
    pthread_mutex_destroy(&self->mu);
    free(self);
    *p = NULL;
}

/* FNV-1a over the key and the ranges: the copy's name. */
static uint64_t s_hash(const char *key, const vid_range_t *r, int n, int accurate)
{
    uint64_t h = 1469598103934665603ULL ^ (uint64_t)(accurate != 0);
    for (const char *p = key; *p; p++)
        h = (h ^ (uint8_t)*p) * 1099511628211ULL;
    for (int i = 0; i < n; i++) {
        int64_t v[2] = {(int64_t)(r[i].start * 1000 + 0.5), (int64_t)(r[i].end * 1000 + 0.5)};
        const uint8_t *b = (const uint8_t *)v;
        for (size_t k = 0; k < sizeof(v); k++)
            h = (h ^ b[k]) * 1099511628211ULL;
    }
    return h;
}

/* Keeps at most self->keep copies: the least recently made go. */
static void s_evict(vid_trims_t *self)
{
    pthread_mutex_lock(&self->mu);
    for (;;) {
        DIR *d = opendir(self->dir);
        if (d == NULL)
            break;
        size_t count = 0;
        char oldest[300] = "";
        time_t old_t = 0;
        for (struct dirent *e; (e = readdir(d)) != NULL;) {
            struct stat st;
            size_t nl = strlen(e->d_name);
            if (nl < 4 || strcmp(e->d_name + nl - 4, ".mp4") != 0 || fstatat(dirfd(d), e->d_name, &st, 0) != 0)
                continue;
            count++;
            if (oldest[0] == '\0' || st.st_mtime < old_t) {
                old_t = st.st_mtime;
                snprintf(oldest, sizeof(oldest), "%s", e->d_name);
            }
        }
        if (count > self->keep && oldest[0] != '\0')
            unlinkat(dirfd(d), oldest, 0);
        closedir(d);
        if (count <= self->keep + 1)
            break;
    }
    pthread_mutex_unlock(&self->mu);
}

int vid_trims_get(vid_trims_t *self, const vid_source_t *src, const char *key, const vid_range_t *ranges, int n,
                  int accurate, char *path, size_t path_len, char *err, size_t errlen)
{
    snprintf(path, path_len, "%s/%016" PRIx64 ".mp4", self->dir, s_hash(key, ranges, n, accurate));
    if (access(path, R_OK) == 0)
        return 0;
    /* Made under a name of this thread's, then renamed: another job making
     * the same copy at the same time only wastes its work. */
    char tmp[600];
    snprintf(tmp, sizeof(tmp), "%s.%ld.part", path, (long)syscall(SYS_gettid));
    vid_trim_info_t info;
    int rc = vid_trim(src, ranges, n, accurate, tmp, &info, err, errlen);
    if (rc != 0 || rename(tmp, path) != 0) {
        if (rc == 0)
            snprintf(err, errlen, "cannot keep the trimmed copy: %s", strerror(errno));
        unlink(tmp);
        return rc != 0 ? rc : -1;
    }
    s_evict(self);
    return 0;
}
