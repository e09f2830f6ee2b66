/*  sg_leader — who runs the batches (seed 003 distribution.leader).
 *
 *  Without distribution.leader.url, or with distribution.meta.enable
 *  false, every node is its own leader (the seed: "false: every node acts
 *  as leader"). With a file:// URL the lease is a small file, read and
 *  written under flock() of a companion ".lock" file:
 *
 *      NODE TOKEN EXPIRES_MS
 *
 *  A node takes the lease when it is empty, expired or its own; it renews
 *  its own well before the term ends. TOKEN grows by one with every new
 *  holder — a fencing token: progress is written only after checking that
 *  the lease still holds this node's token (sg_leader_fence_ok), so a
 *  deposed leader that wakes up late cannot overwrite its successor's
 *  cursor. "{vhost}" in the URL (the seed's example) becomes "storgate".
 *  redis:// and https:// leases are not built yet (refused at start).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include "rf_log.h"
#include "sg.h"

struct sg_leader_t {
    bool always; /* no lease: every node leads */
    char path[1024], lock[1040];
    char node[128];
    int term_ms;
    uint64_t token;     /* ours while we lead */
    int64_t expires_ms; /* our lease's end as last written */
};

static int64_t s_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

sg_leader_t *sg_leader_new(const rf_sg_conf_t *sc, const char *node, const char *state_dir, char *why,
                           size_t why_len)
{
    (void)state_dir;
    sg_leader_t *l = calloc(1, sizeof(*l));
    if (l == NULL)
        return NULL;
    snprintf(l->node, sizeof(l->node), "%s", node);
    l->term_ms = sc->distribution.term_ms;
    const char *u = sc->distribution.leader_url;
    if (!sc->distribution.meta_enable || u == NULL) {
        l->always = true;
        l->token = 1;
        return l;
    }
    if (strncmp(u, "file://", 7) != 0) {
        snprintf(why, why_len, "distribution.leader.url %s: only file:// leases are built yet", u);
        free(l);
        return NULL;
    }
    const char *p = u + 7;
    char raw[1024];
    snprintf(raw, sizeof(raw), "%s%s", p[0] == '/' ? "" : "/", p); /* the seed's file://mnt/… is /mnt/… */
    /* "{vhost}" -> "storgate" */
    char *v = strstr(raw, "{vhost}");
    if (v != NULL)
        snprintf(l->path, sizeof(l->path), "%.*sstorgate%s", (int)(v - raw), raw, v + 7);
    else
        snprintf(l->path, sizeof(l->path), "%s", raw);
    snprintf(l->lock, sizeof(l->lock), "%s.lock", l->path);
    int fd = open(l->lock, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        snprintf(why, why_len, "leader lease %s: %s", l->lock, strerror(errno));
        free(l);
        return NULL;
    }
    close(fd);
    return l;
}

void sg_leader_destroy(sg_leader_t **self_p)
{
    if (self_p == NULL || *self_p == NULL)
        return;
    sg_leader_t *l = *self_p;
    /* leaving: give the lease up so that another node need not wait out the term */
    if (!l->always && l->token != 0) {
        int fd = open(l->lock, O_RDWR | O_CLOEXEC);
        if (fd >= 0 && flock(fd, LOCK_EX) == 0) {
            FILE *f = fopen(l->path, "r");
            char node[128] = "";
            unsigned long long tok = 0;
            long long exp = 0;
            if (f != NULL) {
                if (fscanf(f, "%127s %llu %lld", node, &tok, &exp) != 3)
                    node[0] = '\0';
                fclose(f);
            }
            if (strcmp(node, l->node) == 0 && tok == l->token && (f = fopen(l->path, "w")) != NULL) {
                fprintf(f, "- %llu 0\n", tok); /* expired, the token kept so the next one is higher */
                fclose(f);
            }
            flock(fd, LOCK_UN);
        }
        if (fd >= 0)
            close(fd);
    }
    free(l);
    *self_p = NULL;
}

/* Reads the lease under the lock held by the caller. */
static void s_read(const sg_leader_t *l, char *node, size_t cap, uint64_t *tok, int64_t *exp)
{
    node[0] = '\0';
    *tok = 0;
    *exp = 0;
    FILE *f = fopen(l->path, "r");
    if (f == NULL)
        return;
    char fmt[32];
    unsigned long long t = 0;
    long long e = 0;
    snprintf(fmt, sizeof(fmt), "%%%zus %%llu %%lld", cap - 1);
    if (fscanf(f, fmt, node, &t, &e) == 3) {
        *tok = t;
        *exp = e;
    } else {
        node[0] = '\0';
    }
    fclose(f);
}

static int s_write(const sg_leader_t *l, uint64_t tok, int64_t exp)
{
    char tmp[1100];
    snprintf(tmp, sizeof(tmp), "%s.tmp", l->path);
    FILE *f = fopen(tmp, "w");
    if (f == NULL)
        return -1;
    fprintf(f, "%s %llu %lld\n", l->node, (unsigned long long)tok, (long long)exp);
    fflush(f);
    fsync(fileno(f));
    fclose(f);
    return rename(tmp, l->path);
}

bool sg_leader_tick(sg_leader_t *l, uint64_t *token)
{
    if (l->always) {
        *token = l->token;
        return true;
    }
    int64_t now = s_now_ms();
    /* renew at a third of the term left, not on every tick */
    if (l->token != 0 && l->expires_ms - now > l->term_ms * 2 / 3) {
        *token = l->token;
        return true;
    }
    int fd = open(l->lock, O_RDWR | O_CLOEXEC);
    if (fd < 0 || flock(fd, LOCK_EX) != 0) {
        if (fd >= 0)
            close(fd);
        rf_warn("storgate: leader lease %s: %s", l->lock, strerror(errno));
        l->token = 0;
        return false;
    }
    char node[128];
    uint64_t tok;
    int64_t exp;
    s_read(l, node, sizeof(node), &tok, &exp);
    bool mine = strcmp(node, l->node) == 0 && tok == l->token && l->token != 0;
    bool free_ = node[0] == '\0' || exp <= now;
    if (mine || free_) {
        uint64_t t = mine ? tok : tok + 1; /* a new holder: a new fencing token */
        if (s_write(l, t, now + l->term_ms) == 0) {
            l->token = t;
            l->expires_ms = now + l->term_ms;
        } else {
            rf_warn("storgate: cannot write the leader lease %s: %s", l->path, strerror(errno));
            l->token = mine && exp > now ? l->token : 0;
        }
    } else {
        l->token = 0;
    }
    flock(fd, LOCK_UN);
    close(fd);
    *token = l->token;
    return l->token != 0;
}

bool sg_leader_fence_ok(sg_leader_t *l, uint64_t token)
{
    if (l->always)
        return true;
    int fd = open(l->lock, O_RDWR | O_CLOEXEC);
    if (fd < 0 || flock(fd, LOCK_SH) != 0) {
        if (fd >= 0)
            close(fd);
        return false;
    }
    char node[128];
    uint64_t tok;
    int64_t exp;
    s_read(l, node, sizeof(node), &tok, &exp);
    flock(fd, LOCK_UN);
    close(fd);
    return tok == token && strcmp(node, l->node) == 0 && exp > s_now_ms();
}
