/*  rf_sgevent — bucket events between the gateway and the scheduler (rf_sgevent.h). */
#include "rf_sgevent.h"

#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

bool rf_sgevent_filter_ok(const rf_sg_event_t *ev, const char *key, int64_t size, int64_t mtime_s, int64_t now)
{
    if (!ev->has_filter)
        return true;
    const rf_sg_filter_t *f = &ev->filter;
    if (f->filetype == RF_SG_DIRECTORY)
        return false;
    const char *slash = strrchr(key, '/'), *name = slash ? slash + 1 : key;
    bool match = f->n_patterns == 0;
    for (size_t i = 0; i < f->n_patterns && !match; i++)
        match = fnmatch(f->patterns[i], name, 0) == 0;
    for (size_t i = 0; i < f->n_excludes && match; i++)
        match = fnmatch(f->excludes[i], name, 0) != 0;
    if (!match)
        return false;
    if (f->has_age && mtime_s >= 0) {
        int64_t age = now - mtime_s;
        if (f->age_s >= 0 ? age < f->age_s : age > -f->age_s)
            return false;
    }
    if (f->has_size && size >= 0) {
        if (f->size_b >= 0 ? size < f->size_b : size > -f->size_b)
            return false;
    }
    return true;
}

/* mkdir -p dir (0700). 0 or -1. */
static int s_mkdirs(char *dir)
{
    if (mkdir(dir, 0700) == 0 || errno == EEXIST)
        return 0;
    for (char *p = dir + 1; (p = strchr(p, '/')) != NULL; p++) {
        *p = '\0';
        mkdir(dir, 0700);
        *p = '/';
    }
    return mkdir(dir, 0700) == 0 || errno == EEXIST ? 0 : -1;
}

/* dir/name holding text: written as dir/.name, fsynced, renamed in, so a
 * reader never sees part of it. 0, or -1 with errno. */
static int s_write_atomic(const char *dir, const char *name, const char *text, size_t len)
{
    char tmp[800], path[800];
    snprintf(tmp, sizeof(tmp), "%s/.%s", dir, name);
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    int rc = fd >= 0 && write(fd, text, len) == (ssize_t)len && fsync(fd) == 0 ? 0 : -1;
    int e = errno;
    if (fd >= 0)
        close(fd);
    if (rc == 0 && rename(tmp, path) != 0)
        rc = -1, e = errno;
    if (rc < 0)
        unlink(tmp);
    errno = e;
    return rc;
}

/* A name that sorts by time and is unique across processes and hosts
 * that share the directory. */
static void s_unique_name(char *out, size_t cap, const char *prefix)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    unsigned char r[6] = {0};
    if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r))
        memcpy(r, &ts.tv_nsec, sizeof(r) < sizeof(ts.tv_nsec) ? sizeof(r) : sizeof(ts.tv_nsec));
    snprintf(out, cap, "%s%010lld%09ld-%02x%02x%02x%02x%02x%02x", prefix, (long long)ts.tv_sec, ts.tv_nsec, r[0], r[1],
             r[2], r[3], r[4], r[5]);
}

int rf_sgevent_write(const char *state_dir, const char *kind, const char *bucket, const char *key, int64_t size,
                     const char *etag, char *id_out, size_t id_len)
{
    char dir[600], id[48], name[64];
    snprintf(dir, sizeof(dir), "%s/%s", state_dir, RF_SGEVENT_DIR);
    if (s_mkdirs(dir) < 0)
        return -1;
    /* the name sorts by time, so the scheduler takes events in order */
    s_unique_name(id, sizeof(id), "ev-");
    if (id_out != NULL)
        snprintf(id_out, id_len, "%s", id);
    json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:s}", "id", id, "event", kind, "bucket", bucket, "key", key,
                          "time", (json_int_t)time(NULL), "size", (json_int_t)size, "etag", etag ? etag : "");
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (text == NULL)
        return errno = ENOMEM, -1;
    snprintf(name, sizeof(name), "%s.json", id);
    int rc = s_write_atomic(dir, name, text, strlen(text));
    free(text);
    return rc;
}

int rf_outbox_write_as(const char *dir, const char *target, const char *key, const char *payload, const char *suffix,
                       char *name, size_t cap)
{
    char d[600];
    snprintf(d, sizeof(d), "%s", dir);
    if (s_mkdirs(d) < 0)
        return -1;
    s_unique_name(name, cap, "");
    snprintf(name + strlen(name), cap - strlen(name), "-%d%s", (int)getpid(), suffix);
    char *text = NULL;
    int n = asprintf(&text, "%s\n%s\n%s", target, key, payload);
    if (n < 0)
        return errno = ENOMEM, -1;
    int rc = s_write_atomic(d, name, text, (size_t)n);
    free(text);
    return rc;
}

int rf_outbox_write(const char *dir, const char *target, const char *key, const char *payload)
{
    char name[80];
    return rf_outbox_write_as(dir, target, key, payload, ".json", name, sizeof(name));
}
