/*  sg_leader — who runs the batches, and where their progress lives
 *  (seed 003 distribution.leader; sg.h).
 *
 *  Without distribution.leader.url, or with distribution.meta.enable false,
 *  every node is its own leader (the seed: "false: every node acts as
 *  leader") and progress is kept in STATE/cursors/.
 *
 *  file:///path/lease — the lease is a small file, read and written under
 *  flock() of "PATH.lock":  NODE TOKEN EXPIRES_MS.  Progress goes in files
 *  beside it ("PATH.progress.NAME"), so a node on another machine that
 *  shares the directory (NFS, as in the seed's example) resumes it; items
 *  are handed out through "PATH.dist/" (sg_dist.c).
 *
 *  redis://host:port[/prefix] — SET NX PX semantics in one Lua script:
 *  PREFIX:storgate:leader holds "NODE TOKEN" with the term as its TTL,
 *  PREFIX:storgate:token counts the terms, PREFIX:storgate:progress is a
 *  hash of progress by batch.
 *
 *  TOKEN grows by one with every new holder: a fencing token. Progress is
 *  written only in the same critical section (flock, or one Lua script)
 *  that checks the lease still holds this node's token, so a deposed
 *  leader that wakes up late cannot overwrite its successor's cursor.
 *  https://HOST/BUCKET/KEY (or http://) — the lease is an object on an S3
 *  service, signed with distribution.leader.authEndpoint's keys and region
 *  (an aws_s3 name; with its pathStyle false the URL is
 *  https://BUCKET.HOST/KEY). It holds the lease line and every batch's
 *  progress (sg_ldoc.h), and every write of it is a compare-and-swap: a PUT
 *  with If-Match the ETag this node last read or wrote (If-None-Match: *
 *  for the first), which S3 has since 2024 and storgate's own S3 API
 *  honours. A node that took the lease changed the ETag, so a deposed
 *  leader's late progress write answers 412 and is refused. An endpoint
 *  without them (OpenStack Swift 2.30's s3api answers 501), or one that
 *  ignores the headers, is found by a probe at start and refused: it could
 *  not fence. Items are
 *  not handed out through S3: the leader runs them; the other nodes stand
 *  by and resume the run in progress when they take over.
 *
 *  "{vhost}" in a URL (the seed's example) becomes "storgate"; the seed's
 *  "file://mnt/…" means /mnt/….
 */
#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "rf_log.h"
#include "rf_s3c.h"
#include "sg.h"
#include "sg_ldoc.h"

typedef enum { S_ALWAYS, S_FILE, S_REDIS, S_S3 } s_kind_t;

struct sg_leader_t {
    s_kind_t kind;
    char node[128];
    int term_ms;
    uint64_t token;     /* ours while we lead; 0 otherwise */
    int64_t expires_ms; /* our lease's end as last written */
    char dir[600];      /* S_ALWAYS: where progress files go */
    /* S_FILE */
    char path[1024], lock[1040];
    /* S_REDIS */
    char host[256];
    int port;
    char k_lease[160], k_token[160], k_progress[160], prefix[64];
    redisContext *rc;
    /* S_S3 */
    rf_sg_s3ep_t ep; /* the lease's endpoint: URL's host and bucket, authEndpoint's keys */
    rf_s3c_t *s3;
    char key[1024];
    char etag[80];        /* of the lease object as this node last read or wrote it */
    bool probed;          /* the endpoint was seen to honour conditional writes */
    sg_ldoc_t doc;        /* as this node last wrote it (while it leads) */
    char took_from[128];  /* the holder of the expired lease the last tick took */
    int64_t next_poll_ms; /* a follower reads the object again from then on */
};

static int64_t s_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- files --------------------------------------------------------------------------- */

static int s_lock(const sg_leader_t *l, int how)
{
    int fd = open(l->lock, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd >= 0 && flock(fd, how) != 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

static void s_unlock(int fd)
{
    flock(fd, LOCK_UN);
    close(fd);
}

/* Reads the lease (the lock held by the caller). */
static void s_file_read(const sg_leader_t *l, char node[128], uint64_t *tok, int64_t *exp)
{
    node[0] = '\0';
    *tok = 0;
    *exp = 0;
    FILE *f = fopen(l->path, "r");
    if (f == NULL)
        return;
    unsigned long long t = 0;
    long long e = 0;
    if (fscanf(f, "%127s %llu %lld", node, &t, &e) == 3) {
        *tok = t;
        *exp = e;
    } else {
        node[0] = '\0';
    }
    fclose(f);
}

/* Writes path atomically (tmp, fsync, rename). */
static int s_write_file(const char *path, const char *text)
{
    char tmp[1200];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (f == NULL)
        return -1;
    int ok = fputs(text, f) >= 0 && fflush(f) == 0 && fsync(fileno(f)) == 0;
    fclose(f);
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

static char *s_read_file(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return NULL;
    char *buf = NULL;
    size_t cap = 0;
    ssize_t n = getdelim(&buf, &cap, '\0', f);
    fclose(f);
    if (n < 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

static bool s_file_tick(sg_leader_t *l)
{
    int64_t now = s_now_ms();
    int fd = s_lock(l, LOCK_EX);
    if (fd < 0) {
        rf_warn("storgate: leader lease %s: %s", l->lock, strerror(errno));
        return false;
    }
    char node[128];
    uint64_t tok;
    int64_t exp;
    s_file_read(l, node, &tok, &exp);
    bool mine = strcmp(node, l->node) == 0 && tok == l->token && l->token != 0 && exp > now;
    bool vacant = node[0] == '\0' || exp <= now;
    if (mine || vacant) {
        uint64_t t = mine ? tok : tok + 1; /* a new holder: a new fencing token */
        char text[200];
        snprintf(text, sizeof(text), "%s %llu %lld\n", l->node, (unsigned long long)t, (long long)(now + l->term_ms));
        if (s_write_file(l->path, text) == 0) {
            l->token = t;
            l->expires_ms = now + l->term_ms;
        } else {
            rf_warn("storgate: cannot write the leader lease %s: %s", l->path, strerror(errno));
        }
    } else {
        l->token = 0;
    }
    s_unlock(fd);
    return l->token != 0;
}

/* Whether the lease file holds our token (the lock held by the caller). */
static bool s_file_holds(const sg_leader_t *l, uint64_t token)
{
    char node[128];
    uint64_t tok;
    int64_t exp;
    s_file_read(l, node, &tok, &exp);
    return tok == token && strcmp(node, l->node) == 0 && exp > s_now_ms();
}

/* ---- redis ------------------------------------------------------------------------------ */

/* KEYS: lease, token counter. ARGV: node, term ms. Returns the token now
 * held, or 0 when another node holds the lease. */
static const char *s_acquire_lua =
    "local v = redis.call('GET', KEYS[1]) "
    "if v then "
    "  local node, tok = string.match(v, '^(%S+) (%d+)$') "
    "  if node == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return tonumber(tok) end "
    "  return 0 "
    "end "
    "local t = redis.call('INCR', KEYS[2]) "
    "redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. t, 'PX', ARGV[2]) "
    "return t";

/* KEYS: lease, progress hash. ARGV: "NODE TOKEN", field, value. 1 written, 0 fenced off. */
static const char *s_save_lua = "if redis.call('GET', KEYS[1]) == ARGV[1] then "
                                "  redis.call('HSET', KEYS[2], ARGV[2], ARGV[3]) return 1 "
                                "end return 0";

static redisContext *s_redis(sg_leader_t *l)
{
    if (l->rc != NULL && l->rc->err == 0)
        return l->rc;
    if (l->rc != NULL)
        redisFree(l->rc);
    struct timeval tv = {1, 0};
    l->rc = redisConnectWithTimeout(l->host, l->port, tv);
    if (l->rc == NULL || l->rc->err) {
        rf_warn("storgate: leader lease: redis %s:%d: %s", l->host, l->port, l->rc ? l->rc->errstr : "out of memory");
        if (l->rc != NULL)
            redisFree(l->rc);
        l->rc = NULL;
        return NULL;
    }
    redisSetTimeout(l->rc, tv);
    return l->rc;
}

static bool s_redis_tick(sg_leader_t *l)
{
    redisContext *c = s_redis(l);
    redisReply *r =
        c ? redisCommand(c, "EVAL %s 2 %s %s %s %d", s_acquire_lua, l->k_lease, l->k_token, l->node, l->term_ms) : NULL;
    if (r == NULL || r->type != REDIS_REPLY_INTEGER) {
        if (r != NULL)
            rf_warn("storgate: leader lease: redis answered %s", r->type == REDIS_REPLY_ERROR ? r->str : "?");
        freeReplyObject(r);
        /* Redis away: we lead only until the term we hold runs out */
        if (l->token != 0 && l->expires_ms <= s_now_ms())
            l->token = 0;
        return l->token != 0;
    }
    l->token = (uint64_t)r->integer;
    if (l->token != 0)
        l->expires_ms = s_now_ms() + l->term_ms;
    freeReplyObject(r);
    return l->token != 0;
}

/* ---- an object on S3 ----------------------------------------------------------------- */

/* Reads the lease object into d (empty) and its ETag. 0, 1 (there is
 * none), -1 (why). A damaged object reads as a vacant lease with no
 * progress: its ETag still fences the write that replaces it. */
static int s_s3_get(sg_leader_t *l, sg_ldoc_t *d, char etag[80], char *why, size_t why_len)
{
    char *buf = NULL;
    size_t len = 0;
    int rc = rf_s3c_get_small(l->s3, l->key, &buf, SG_LDOC_MAX, &len, etag, why, why_len);
    if (rc == 0 && sg_ldoc_parse(buf, len, d) < 0) {
        rf_warn("storgate: the leader lease %s is not one refract wrote: taken as vacant", l->key);
        sg_ldoc_clear(d);
    }
    free(buf);
    return rc;
}

/* Writes d if the object still has ETag if_etag (NULL: if there is none);
 * l->etag becomes the new one. 0, 1 (it moved on), -1 (why). */
static int s_s3_put(sg_leader_t *l, const sg_ldoc_t *d, const char *if_etag, char *why, size_t why_len)
{
    size_t len = 0;
    char *text = sg_ldoc_text(d, &len);
    if (text == NULL) {
        snprintf(why, why_len, "out of memory");
        return -1;
    }
    char etag[80] = "";
    int rc = rf_s3c_put_if(l->s3, l->key, text, len, if_etag, etag, why, why_len);
    free(text);
    if (rc == 0)
        snprintf(l->etag, sizeof(l->etag), "%s", etag);
    return rc == 2 ? -1 : rc;
}

/* Whether the endpoint honours conditional writes, with an object of this
 * node's beside the lease: 0 it does, 1 it does not (why), -1 unknown
 * (why: it could not be asked). */
static int s_s3_probe(sg_leader_t *l, char *why, size_t why_len)
{
    char key[1200];
    snprintf(key, sizeof(key), "%s.probe.%s", l->key, l->node);
    rf_s3c_delete(l->s3, key, why, why_len); /* a probe object a killed node left */
    int a = rf_s3c_put_if(l->s3, key, "1", 1, NULL, NULL, why, why_len);
    int b = a == 0 ? rf_s3c_put_if(l->s3, key, "2", 1, NULL, NULL, why, why_len) : a;
    int c = b == 1 ? rf_s3c_put_if(l->s3, key, "3", 1, "0123456789abcdef0123456789abcdef", NULL, why, why_len) : b;
    rf_s3c_delete(l->s3, key, why, why_len);
    if (a == 2 || b == 2 || c == 2) {
        char said[256];
        snprintf(said, sizeof(said), "%s", why);
        snprintf(why, why_len, "%s has no conditional writes (%s), so it cannot fence a lease", l->ep.endpoint, said);
        return 1;
    }
    if (a != 0 || b < 0 || c < 0) {
        if (a == 1)
            snprintf(why, why_len, "a PUT with If-None-Match: * of a new object was refused");
        return -1;
    }
    if (b == 0 || c == 0) {
        snprintf(why, why_len, "%s ignores %s on PUT, so it cannot fence a lease", l->ep.endpoint,
                 b == 0 ? "If-None-Match: *" : "If-Match");
        return 1;
    }
    l->probed = true;
    return 0;
}

static bool s_s3_tick(sg_leader_t *l)
{
    char why[512] = "";
    int64_t now = s_now_ms();
    sg_ldoc_t d = {0};
    char etag[80] = "";
    int rc = l->probed ? 0 : s_s3_probe(l, why, sizeof(why));
    if (rc > 0) {
        rf_error("storgate: leader lease %s: %s; this node will not lead", l->key, why);
        return false;
    }
    if (rc == 0)
        rc = s_s3_get(l, &d, etag, why, sizeof(why));
    if (rc >= 0) {
        bool absent = rc == 1;
        bool mine = !absent && strcmp(d.node, l->node) == 0 && d.token == l->token && l->token != 0 && d.expires > now;
        bool vacant = absent || strcmp(d.node, "-") == 0 || d.expires <= now;
        if (!mine && !vacant) {
            l->token = 0;
            goto done;
        }
        uint64_t t = mine ? d.token : d.token + 1; /* a new holder: a new fencing token */
        char prev[128];
        snprintf(prev, sizeof(prev), "%s", !mine && !absent && strcmp(d.node, l->node) != 0 ? d.node : "");
        snprintf(d.node, sizeof(d.node), "%s", l->node);
        d.token = t;
        d.expires = now + l->term_ms;
        rc = s_s3_put(l, &d, absent ? NULL : etag, why, sizeof(why));
        if (rc == 0) {
            l->token = t;
            l->expires_ms = d.expires;
            snprintf(l->took_from, sizeof(l->took_from), "%s", strcmp(prev, "-") != 0 ? prev : "");
            sg_ldoc_clear(&l->doc);
            l->doc = d; /* taken */
            memset(&d, 0, sizeof(d));
        } else if (rc == 1) {
            l->token = 0; /* another node wrote it first */
        }
    }
    if (rc < 0) {
        rf_warn("storgate: leader lease %s: %s", l->key, why);
        /* the endpoint away: we lead only until the term we hold runs out */
        if (l->token != 0 && l->expires_ms <= now)
            l->token = 0;
    }
done:
    sg_ldoc_clear(&d);
    return l->token != 0;
}

/* The fenced write: only over the object as this node last wrote it. */
static int s_s3_save(sg_leader_t *l, uint64_t token, const char *name, const char *text)
{
    if (token == 0 || token != l->token || l->expires_ms <= s_now_ms()) {
        errno = EPERM;
        return -1;
    }
    if (sg_ldoc_set(&l->doc, name, text) < 0)
        return -1;
    char why[512] = "";
    int rc = s_s3_put(l, &l->doc, l->etag, why, sizeof(why));
    if (rc == 1) { /* another node has written it: we no longer lead */
        l->token = 0;
        errno = EPERM;
        return -1;
    }
    if (rc < 0) {
        rf_warn("storgate: leader lease %s: %s", l->key, why);
        errno = EIO;
        return -1;
    }
    return 0;
}

static char *s_s3_load(sg_leader_t *l, const char *name)
{
    char why[512] = "", etag[80];
    sg_ldoc_t d = {0};
    int rc = s_s3_get(l, &d, etag, why, sizeof(why));
    if (rc < 0)
        rf_warn("storgate: leader lease %s: %s", l->key, why);
    const char *text = rc == 0 ? sg_ldoc_get(&d, name) : NULL;
    char *out = text ? strdup(text) : NULL;
    sg_ldoc_clear(&d);
    return out;
}

/* "{vhost}" becomes "storgate" (the seed's example names a vhost). */
static void s_vhost(const char *in, char *out, size_t cap)
{
    const char *v = strstr(in, "{vhost}");
    if (v != NULL)
        snprintf(out, cap, "%.*sstorgate%s", (int)(v - in), in, v + 7);
    else
        snprintf(out, cap, "%s", in);
}

/* http(s)://HOST[:PORT]/BUCKET/KEY, or https://BUCKET.HOST/KEY when the
 * authEndpoint is not path style: the lease's endpoint and key. */
static int s_s3_setup(sg_leader_t *l, const rf_sg_conf_t *sc, const char *u, char *why, size_t why_len)
{
    const rf_sg_s3ep_t *auth = NULL;
    for (size_t i = 0; sc->distribution.auth_endpoint != NULL && i < sc->n_aws_s3; i++)
        if (strcmp(sc->aws_s3[i].name, sc->distribution.auth_endpoint) == 0)
            auth = &sc->aws_s3[i];
    bool path_style = auth == NULL || auth->path_style;
    const char *hp = strstr(u, "://") + 3, *slash = strchr(hp, '/');
    char host[256], bucket[128] = "", raw[1024];
    size_t hl = slash ? (size_t)(slash - hp) : strlen(hp);
    if (slash == NULL || hl == 0 || hl >= sizeof(host) || strlen(slash + 1) >= sizeof(raw)) {
        snprintf(why, why_len, "distribution.leader.url %s: not http(s)://HOST/BUCKET/KEY", u);
        return -1;
    }
    memcpy(host, hp, hl);
    host[hl] = '\0';
    const char *rest = slash + 1;
    if (path_style) {
        const char *s2 = strchr(rest, '/');
        if (s2 == NULL || s2 == rest || (size_t)(s2 - rest) >= sizeof(bucket) || s2[1] == '\0') {
            snprintf(why, why_len, "distribution.leader.url %s: not http(s)://HOST/BUCKET/KEY", u);
            return -1;
        }
        snprintf(bucket, sizeof(bucket), "%.*s", (int)(s2 - rest), rest);
        rest = s2 + 1;
    } else {
        char *dot = strchr(host, '.');
        if (dot == NULL || dot == host || (size_t)(dot - host) >= sizeof(bucket) || rest[0] == '\0') {
            snprintf(why, why_len,
                     "distribution.leader.url %s: not https://BUCKET.HOST/KEY (authEndpoint %s is not "
                     "path style)",
                     u, auth->name);
            return -1;
        }
        snprintf(bucket, sizeof(bucket), "%.*s", (int)(dot - host), host);
        memmove(host, dot + 1, strlen(dot + 1) + 1);
    }
    snprintf(raw, sizeof(raw), "%s", rest);
    s_vhost(raw, l->key, sizeof(l->key));
    char endpoint[300];
    snprintf(endpoint, sizeof(endpoint), "%.*s%s", (int)(hp - u), u, host);
    if (auth != NULL ? rf_s3ep_copy(&l->ep, auth) < 0 : (l->ep.region = strdup("ap-northeast-2")) == NULL)
        goto oom;
    free(l->ep.endpoint);
    free(l->ep.bucket);
    l->ep.endpoint = strdup(endpoint);
    l->ep.bucket = strdup(bucket);
    if (l->ep.name == NULL)
        l->ep.name = strdup("leader-lease");
    l->ep.path_style = path_style;
    if (l->ep.endpoint == NULL || l->ep.bucket == NULL || l->ep.name == NULL)
        goto oom;
    if ((l->s3 = rf_s3c_new(&l->ep, why, why_len)) == NULL)
        return -1;
    int rc = s_s3_probe(l, why, why_len);
    if (rc > 0)
        return -1;
    if (rc < 0) /* asked again at the first tick */
        rf_warn("storgate: leader lease %s: %s (the endpoint is asked again)", u, why);
    return 0;
oom:
    snprintf(why, why_len, "out of memory");
    return -1;
}

/* ---- the interface -------------------------------------------------------------------- */

sg_leader_t *sg_leader_new(const rf_sg_conf_t *sc, const char *node, const char *state_dir, char *why, size_t why_len)
{
    sg_leader_t *l = calloc(1, sizeof(*l));
    if (l == NULL)
        return NULL;
    snprintf(l->node, sizeof(l->node), "%s", node);
    if (strpbrk(node, " \t\n") != NULL) {
        snprintf(why, why_len, "storgate_scheduler.name '%s' may not hold spaces", node);
        free(l);
        return NULL;
    }
    l->term_ms = sc->distribution.term_ms;
    snprintf(l->dir, sizeof(l->dir), "%s/cursors", state_dir);
    const char *u = sc->distribution.leader_url;
    if (!sc->distribution.meta_enable || u == NULL) {
        l->kind = S_ALWAYS;
        l->token = 1;
        return l;
    }
    if (strncmp(u, "redis://", 8) == 0) {
        l->kind = S_REDIS;
        char prefix[64] = "refract";
        const char *hp = u + 8, *slash = strchr(hp, '/');
        size_t hl = slash ? (size_t)(slash - hp) : strlen(hp);
        if (slash != NULL && slash[1] != '\0')
            snprintf(prefix, sizeof(prefix), "%s", slash + 1);
        char hostport[200];
        snprintf(hostport, sizeof(hostport), "%.*s", (int)(hl < 199 ? hl : 199), hp);
        char *colon = strrchr(hostport, ':');
        l->port = colon ? atoi(colon + 1) : 6379;
        if (colon)
            *colon = '\0';
        snprintf(l->host, sizeof(l->host), "%s", hostport[0] ? hostport : "127.0.0.1");
        if (l->port <= 0 || l->port > 65535) {
            snprintf(why, why_len, "distribution.leader.url %s: bad port", u);
            free(l);
            return NULL;
        }
        snprintf(l->prefix, sizeof(l->prefix), "%s", prefix);
        snprintf(l->k_lease, sizeof(l->k_lease), "%s:storgate:leader", prefix);
        snprintf(l->k_token, sizeof(l->k_token), "%s:storgate:token", prefix);
        snprintf(l->k_progress, sizeof(l->k_progress), "%s:storgate:progress", prefix);
        return l;
    }
    if (strncmp(u, "https://", 8) == 0 || strncmp(u, "http://", 7) == 0) {
        l->kind = S_S3;
        if (s_s3_setup(l, sc, u, why, why_len) < 0) {
            sg_leader_destroy(&l);
            return NULL;
        }
        return l;
    }
    if (strncmp(u, "file://", 7) != 0) {
        snprintf(why, why_len, "distribution.leader.url %s: file://, redis:// or http(s)://", u);
        free(l);
        return NULL;
    }
    l->kind = S_FILE;
    const char *p = u + 7;
    char raw[1024];
    snprintf(raw, sizeof(raw), "%s%s", p[0] == '/' ? "" : "/", p);
    s_vhost(raw, l->path, sizeof(l->path));
    snprintf(l->lock, sizeof(l->lock), "%s.lock", l->path);
    int fd = s_lock(l, LOCK_SH);
    if (fd < 0) {
        snprintf(why, why_len, "leader lease %s: %s", l->lock, strerror(errno));
        free(l);
        return NULL;
    }
    s_unlock(fd);
    return l;
}

void sg_leader_destroy(sg_leader_t **self_p)
{
    if (self_p == NULL || *self_p == NULL)
        return;
    sg_leader_t *l = *self_p;
    /* leaving: give the lease up so that another node need not wait out the term */
    if (l->kind == S_FILE && l->token != 0) {
        int fd = s_lock(l, LOCK_EX);
        if (fd >= 0) {
            if (s_file_holds(l, l->token)) {
                char text[200];
                snprintf(text, sizeof(text), "- %llu 0\n", (unsigned long long)l->token); /* the token stays */
                s_write_file(l->path, text);
            }
            s_unlock(fd);
        }
    } else if (l->kind == S_REDIS && l->token != 0 && s_redis(l) != NULL) {
        char held[200];
        snprintf(held, sizeof(held), "%s %llu", l->node, (unsigned long long)l->token);
        redisReply *r = redisCommand(l->rc, "EVAL %s 1 %s %s",
                                     "if redis.call('GET', KEYS[1]) == ARGV[1] then "
                                     "redis.call('DEL', KEYS[1]) end return 0",
                                     l->k_lease, held);
        freeReplyObject(r);
    } else if (l->kind == S_S3 && l->token != 0 && l->expires_ms > s_now_ms()) {
        char why[512];
        sg_ldoc_t d = l->doc; /* the progress stays; the lease is vacant at once */
        snprintf(d.node, sizeof(d.node), "-");
        d.expires = 0;
        if (s_s3_put(l, &d, l->etag, why, sizeof(why)) < 0)
            rf_warn("storgate: leader lease %s: not given up: %s", l->key, why);
    }
    if (l->rc != NULL)
        redisFree(l->rc);
    sg_ldoc_clear(&l->doc);
    rf_s3c_destroy(&l->s3);
    rf_s3ep_clear(&l->ep);
    free(l);
    *self_p = NULL;
}

const char *sg_leader_took_from(sg_leader_t *l)
{
    return l->took_from[0] ? l->took_from : NULL;
}

bool sg_leader_tick(sg_leader_t *l, uint64_t *token)
{
    bool lead;
    l->took_from[0] = '\0';
    /* renew at a third of the term left, not on every tick */
    int64_t now = s_now_ms();
    if (l->kind == S_ALWAYS || (l->token != 0 && l->expires_ms - now > l->term_ms * 2 / 3) ||
        (l->kind == S_S3 && l->token == 0 && now < l->next_poll_ms))
        lead = l->token != 0;
    else if (l->kind == S_S3) {
        lead = s_s3_tick(l);
        if (!lead) /* each read is a request to an S3 service: a tenth of the term apart */
            l->next_poll_ms = now + (l->term_ms / 10 > 200 ? l->term_ms / 10 : 200);
    } else
        lead = l->kind == S_FILE ? s_file_tick(l) : s_redis_tick(l);
    *token = l->token;
    return lead;
}

/* The progress file of batch `name` (S_ALWAYS, S_FILE). */
static void s_progress_path(const sg_leader_t *l, const char *name, char *out, size_t cap)
{
    if (l->kind == S_FILE)
        snprintf(out, cap, "%s.progress.%s", l->path, name);
    else
        snprintf(out, cap, "%s/%s", l->dir, name);
}

int sg_leader_save(sg_leader_t *l, uint64_t token, const char *name, const char *text)
{
    char path[1400];
    if (l->kind == S_ALWAYS) {
        s_progress_path(l, name, path, sizeof(path));
        return s_write_file(path, text);
    }
    if (l->kind == S_FILE) {
        int fd = s_lock(l, LOCK_EX); /* the check and the write, one critical section */
        if (fd < 0)
            return -1;
        int rc = -1;
        if (s_file_holds(l, token)) {
            s_progress_path(l, name, path, sizeof(path));
            rc = s_write_file(path, text);
        } else {
            errno = EPERM;
        }
        s_unlock(fd);
        return rc;
    }
    if (l->kind == S_S3)
        return s_s3_save(l, token, name, text);
    char held[200];
    snprintf(held, sizeof(held), "%s %llu", l->node, (unsigned long long)token);
    redisReply *r = s_redis(l) ? redisCommand(l->rc, "EVAL %s 2 %s %s %s %s %s", s_save_lua, l->k_lease, l->k_progress,
                                              held, name, text)
                               : NULL;
    int rc = r != NULL && r->type == REDIS_REPLY_INTEGER && r->integer == 1 ? 0 : -1;
    if (r != NULL && r->type == REDIS_REPLY_INTEGER && r->integer == 0)
        errno = EPERM;
    freeReplyObject(r);
    return rc;
}

char *sg_leader_load(sg_leader_t *l, const char *name)
{
    if (l->kind == S_S3)
        return s_s3_load(l, name);
    if (l->kind != S_REDIS) {
        char path[1400];
        s_progress_path(l, name, path, sizeof(path));
        return s_read_file(path);
    }
    redisReply *r = s_redis(l) ? redisCommand(l->rc, "HGET %s %s", l->k_progress, name) : NULL;
    char *out = r != NULL && r->type == REDIS_REPLY_STRING ? strndup(r->str, r->len) : NULL;
    freeReplyObject(r);
    return out;
}

bool sg_leader_file(sg_leader_t *l, const char **path)
{
    if (l->kind != S_FILE)
        return false;
    *path = l->path;
    return true;
}

bool sg_leader_redis(sg_leader_t *l, const char **host, int *port, const char **prefix)
{
    if (l->kind != S_REDIS)
        return false;
    *host = l->host;
    *port = l->port;
    *prefix = l->prefix;
    return true;
}
