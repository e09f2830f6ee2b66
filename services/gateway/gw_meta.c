/*  gw_meta — the cache metadata gateways share (gw.h).
 *
 *  `embedded`: nothing leaves the process. `redis`: one thread per gateway
 *  holds two hiredis connections to the configured redis-server: one
 *  SUBSCRIBEd to "<prefix>:purge", one that PUBLISHes this gateway's purges
 *  (a subscribed connection cannot publish). A purge made through any
 *  gateway's admin port is applied there at once and, within a second, by
 *  every other gateway on the same Redis.
 *
 *  Redis going away never stops serving: lookups never touch Redis, purges
 *  made meanwhile wait in a bounded outbox and are published on reconnect,
 *  and — because pub/sub keeps no history — a gateway that lost its
 *  subscription expires every object once it is back (the next request of
 *  each revalidates, a 304 being cheap), so no purge it missed survives.
 *  The connection state, errors and received purges are metrics.
 *
 *  With `advertise`, gateways also share objects: a miss asks Redis (one
 *  Lua script) whether another gateway holds the key fresh — an entry
 *  PREFIX:obj:HASH = "EPOCH URL", made when that gateway stored it and
 *  living while the object is fresh — or is filling it (a marker
 *  PREFIX:fill:HASH, SET NX, 30 s), and fetches it from that gateway.
 *  Every purge increments PREFIX:epoch before it is published, and entries
 *  of an older epoch are ignored: after a purge no gateway fetches a copy
 *  from one that may not have applied it yet (entries come back as objects
 *  are stored again). An entry naming a gateway that lost the object
 *  (evicted) costs that gateway one fill; one naming a gateway that is down
 *  costs a failed connect, then the asker fills from the origin and enters
 *  itself.
 *
 *  A message is JSON: {"from": via name, "action": "purge|expire|hardpurge",
 *  "vhost": name, "pattern": url, "glob": bool}. Messages are input from
 *  the network like any other: parsed with jansson, bounded, and a bad one
 *  is logged and dropped.
 */
#include <errno.h>
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "gw.h"
#include "gw_metrics.h"
#include "rf_log.h"

#define GW_META_OUTBOX_MAX 10000
#define GW_META_MSG_MAX 16384

typedef struct s_msg {
    struct s_msg *next;
    char *text;
} s_msg_t;

struct gw_meta_t {
    gw_server_t *srv;
    bool redis;
    char host[256];
    int port;
    char channel[300];
    char prefix[256];
    char password[256]; /* "" : no AUTH; "user:password" for an ACL user */
    char auth_error[200]; /* the last AUTH refusal (the meta thread's) */
    pthread_t tid;
    atomic_bool stop;
    pthread_mutex_t mu;
    s_msg_t *head, *tail; /* outbox */
    size_t queued;
    /* in-flight markers (collapsing across gateways) */
    char advertise[256]; /* "" : off */
    gw_meta_query_t **queries;
    size_t n_queries, cap_queries;
    int wake_fd; /* eventfd: a query is waiting */
    atomic_bool connected;
};

bool gw_meta_collapses(gw_meta_t *m)
{
    return m != NULL && m->redis && m->advertise[0] != '\0';
}

/* Answers a query on its thread (not for releases). */
static void s_reply(gw_meta_query_t *q)
{
    h2o_multithread_send_message(q->reply_to, &q->msg);
}

void gw_meta_ask(gw_meta_t *m, gw_meta_query_t *q)
{
    if (!gw_meta_collapses(m) || !atomic_load(&m->connected)) {
        /* No Redis to ask: fill here, now. */
        if (!q->release) {
            q->won = true;
            s_reply(q);
        }
        return;
    }
    gw_meta_query_t *item = q;
    if (q->release) { /* the caller does not wait: a copy */
        if ((item = malloc(sizeof(*item))) == NULL)
            return;
        *item = *q;
    }
    pthread_mutex_lock(&m->mu);
    if (m->n_queries == m->cap_queries) {
        size_t cap = m->cap_queries ? m->cap_queries * 2 : 64;
        gw_meta_query_t **n = cap <= 100000 ? realloc(m->queries, cap * sizeof(*n)) : NULL;
        if (n == NULL) { /* Redis is far behind: this fill goes on alone */
            pthread_mutex_unlock(&m->mu);
            if (q->release)
                free(item);
            else
                q->won = true, s_reply(q);
            return;
        }
        m->queries = n;
        m->cap_queries = cap;
    }
    m->queries[m->n_queries++] = item;
    pthread_mutex_unlock(&m->mu);
    uint64_t one = 1;
    if (write(m->wake_fd, &one, sizeof(one)) < 0) {
        /* the poll timeout picks it up */
    }
}

/* Marker lifetime: a fill that dies without releasing it (a crash) frees
 * the key after this long. */
#define GW_META_MARKER_MS 30000

/* The claim, atomic in Redis. KEYS: marker, entry, epoch; ARGV: this
 * gateway's URL, marker lifetime. Returns {verdict, owner, epoch}: "holds"
 * (an entry of the current epoch names another gateway), "won" (the marker
 * is ours now) or "fills" (another gateway's marker). An entry naming us is
 * stale (we no longer have the object: evicted or purged) and ignored. */
static const char s_claim_lua[] =
    "local e = redis.call('get', KEYS[3]) or '0' "
    "local o = redis.call('get', KEYS[2]) "
    "if o then local sp = string.find(o, ' ', 1, true) "
    "  if sp and string.sub(o, 1, sp - 1) == e and string.sub(o, sp + 1) ~= ARGV[1] then "
    "    return {'holds', string.sub(o, sp + 1), e} end end "
    "if redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return {'won', '', e} end "
    "return {'fills', redis.call('get', KEYS[1]) or '', e}";

/* The release. KEYS: marker, entry; ARGV: our URL, entry lifetime (ms, 0:
 * none), the epoch the claim saw. Our marker goes (only ours: it may have
 * expired and been taken); a stored object is entered under that epoch, so
 * a purge made while it filled leaves the entry ignored. */
static const char s_release_lua[] =
    "if redis.call('get', KEYS[1]) == ARGV[1] then redis.call('del', KEYS[1]) end "
    "if tonumber(ARGV[2]) > 0 then redis.call('set', KEYS[2], ARGV[3] .. ' ' .. ARGV[1], 'PX', ARGV[2]) end "
    "return 0";

/* Entries live at most this long (an object fresh for a year is asked
 * about again after a week). */
#define GW_META_ENTRY_MAX_MS (7LL * 86400 * 1000)

static bool s_str(const redisReply *r, size_t cap)
{
    return r != NULL && r->type == REDIS_REPLY_STRING && r->len < cap;
}

/* Runs one claim on `cmd` and fills q's answer; q->won stays true when
 * Redis gives no usable answer (the gateway fills it itself). */
static void s_claim(gw_meta_t *m, redisContext *cmd, gw_meta_query_t *q)
{
    char km[400], ke[400], kp[300];
    snprintf(km, sizeof(km), "%s:fill:%s", m->prefix, q->key);
    snprintf(ke, sizeof(ke), "%s:obj:%s", m->prefix, q->key);
    snprintf(kp, sizeof(kp), "%s:epoch", m->prefix);
    redisReply *r = redisCommand(cmd, "EVAL %s 3 %s %s %s %s %d", s_claim_lua, km, ke, kp, m->advertise,
                                 GW_META_MARKER_MS);
    if (r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 3 && s_str(r->element[0], 8) &&
        s_str(r->element[1], sizeof(q->owner)) && s_str(r->element[2], sizeof(q->epoch))) {
        memcpy(q->epoch, r->element[2]->str, r->element[2]->len + 1);
        const char *verdict = r->element[0]->str;
        if (strcmp(verdict, "won") != 0 && r->element[1]->len > 0 && strcmp(r->element[1]->str, m->advertise) != 0) {
            memcpy(q->owner, r->element[1]->str, r->element[1]->len + 1);
            q->won = false;
            q->holds = strcmp(verdict, "holds") == 0;
        }
    }
    if (r != NULL)
        freeReplyObject(r);
}

/* Runs one release on `cmd` (nothing without a connection: the marker
 * expires by itself). */
static void s_release(gw_meta_t *m, redisContext *cmd, const gw_meta_query_t *q)
{
    char km[400], ke[400];
    snprintf(km, sizeof(km), "%s:fill:%s", m->prefix, q->key);
    snprintf(ke, sizeof(ke), "%s:obj:%s", m->prefix, q->key);
    long long keep = q->keep_ms > GW_META_ENTRY_MAX_MS ? GW_META_ENTRY_MAX_MS : q->keep_ms;
    if (q->epoch[0] == '\0')
        keep = 0; /* the claim had no answer: no epoch to enter it under */
    redisReply *r = redisCommand(cmd, "EVAL %s 2 %s %s %s %lld %s", s_release_lua, km, ke, m->advertise,
                                 keep > 0 ? keep : 0LL, q->epoch[0] ? q->epoch : "0");
    if (r != NULL)
        freeReplyObject(r);
}

/* Runs the waiting queries on `cmd` (the meta thread). Without a usable
 * connection every claim is won: the gateway fills it itself. */
static void s_run_queries(gw_meta_t *m, redisContext *cmd)
{
    pthread_mutex_lock(&m->mu);
    gw_meta_query_t **qs = m->queries;
    size_t n = m->n_queries;
    m->queries = NULL;
    m->n_queries = m->cap_queries = 0;
    pthread_mutex_unlock(&m->mu);
    for (size_t i = 0; i < n; i++) {
        gw_meta_query_t *q = qs[i];
        if (q->release) {
            if (cmd != NULL)
                s_release(m, cmd, q);
            free(q);
            continue;
        }
        q->won = true;
        q->holds = false;
        q->epoch[0] = '\0';
        if (cmd != NULL)
            s_claim(m, cmd, q);
        s_reply(q);
    }
    free(qs);
}

static const char *const s_actions[] = {[GW_PURGE] = "purge", [GW_EXPIRE] = "expire", [GW_HARDPURGE] = "hardpurge"};

void gw_meta_publish_purge(gw_meta_t *m, gw_purge_kind_t kind, const char *vhost, const char *pattern, bool glob)
{
    if (m == NULL || !m->redis)
        return;
    json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:b}", "from", m->srv->via + 4, "action", s_actions[kind], "vhost",
                          vhost, "pattern", pattern, "glob", glob);
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    s_msg_t *msg = text ? malloc(sizeof(*msg)) : NULL;
    if (msg == NULL) {
        free(text);
        return;
    }
    msg->next = NULL;
    msg->text = text;
    pthread_mutex_lock(&m->mu);
    if (m->queued >= GW_META_OUTBOX_MAX) {
        /* Redis has been away long: the oldest purge goes (the others'
         * catch-up on reconnect revalidates everything anyway). */
        s_msg_t *old = m->head;
        m->head = old->next;
        if (m->head == NULL)
            m->tail = NULL;
        m->queued--;
        free(old->text);
        free(old);
    }
    if (m->tail)
        m->tail->next = msg;
    else
        m->head = msg;
    m->tail = msg;
    m->queued++;
    pthread_mutex_unlock(&m->mu);
}

/* Applies one message from another gateway. */
static void s_apply(gw_meta_t *m, const char *text, size_t len)
{
    if (len > GW_META_MSG_MAX) {
        rf_log(RF_LOG_WARN, NULL, "metadata: a purge message of %zu bytes dropped (at most %d)", len, GW_META_MSG_MAX);
        return;
    }
    json_error_t e;
    json_t *j = json_loadb(text, len, 0, &e);
    const char *from = NULL, *action = NULL, *vhost = NULL, *pattern = NULL;
    int glob = 0;
    if (j == NULL ||
        json_unpack(j, "{s:s, s:s, s:s, s:s, s:b}", "from", &from, "action", &action, "vhost", &vhost, "pattern",
                    &pattern, "glob", &glob) < 0) {
        rf_log(RF_LOG_WARN, NULL, "metadata: a malformed purge message dropped");
        json_decref(j);
        return;
    }
    if (strcmp(from, m->srv->via + 4) != 0) { /* our own were applied when made */
        for (int k = GW_PURGE; k <= GW_HARDPURGE; k++)
            if (strcmp(action, s_actions[k]) == 0) {
                size_t n = gw_purge_apply(m->srv, (gw_purge_kind_t)k, vhost, pattern, glob != 0);
                const char *l[] = {s_actions[k]};
                rf_metric_add(gw_m.purges_received, l, 1);
                rf_log(RF_LOG_INFO, NULL, "metadata: %s %s %s from %s: %zu object(s)", action, vhost, pattern, from, n);
            }
    }
    json_decref(j);
}

static redisContext *s_connect(gw_meta_t *m)
{
    struct timeval tv = {1, 0};
    redisContext *c = redisConnectWithTimeout(m->host, m->port, tv);
    if (c == NULL || c->err) {
        if (c != NULL)
            redisFree(c);
        return NULL;
    }
    redisSetTimeout(c, tv); /* a command's answer; the subscription is polled */
    if (m->password[0] != '\0') {
        /* A refusal is not fatal here: the SUBSCRIBE that follows gets
         * NOAUTH, which the caller logs and retries. */
        const char *colon = strchr(m->password, ':');
        redisReply *r = colon != NULL ? redisCommand(c, "AUTH %b %s", m->password, (size_t)(colon - m->password),
                                                     colon + 1)
                                      : redisCommand(c, "AUTH %s", m->password);
        if (r == NULL) {
            redisFree(c);
            return NULL;
        }
        if (r->type == REDIS_REPLY_ERROR)
            snprintf(m->auth_error, sizeof(m->auth_error), "%s", r->str);
        freeReplyObject(r);
    }
    return c;
}

static int s_match_all(const char *key, size_t len, void *arg)
{
    (void)key, (void)len, (void)arg;
    return 1;
}

/* Publishes the outbox; on failure the message stays first. 0 or -1. */
static int s_flush(gw_meta_t *m, redisContext *pub)
{
    for (;;) {
        pthread_mutex_lock(&m->mu);
        s_msg_t *msg = m->head;
        pthread_mutex_unlock(&m->mu);
        if (msg == NULL)
            return 0;
        /* The epoch first: from now on no gateway fetches an entry made
         * before this purge from another (which may not have applied it). */
        redisReply *r = redisCommand(pub, "INCR %s:epoch", m->prefix);
        if (r == NULL)
            return -1;
        freeReplyObject(r);
        if ((r = redisCommand(pub, "PUBLISH %s %s", m->channel, msg->text)) == NULL)
            return -1;
        freeReplyObject(r);
        pthread_mutex_lock(&m->mu);
        if (m->head == msg) { /* not dropped by an overflowing outbox meanwhile */
            m->head = msg->next;
            if (m->head == NULL)
                m->tail = NULL;
            m->queued--;
            free(msg->text);
            free(msg);
        }
        pthread_mutex_unlock(&m->mu);
    }
}

static void s_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void *s_thread(void *arg)
{
    gw_meta_t *m = arg;
    redisContext *sub = NULL, *pub = NULL, *cmd = NULL;
    bool ever = false;
    int backoff = 100;
    while (!atomic_load(&m->stop)) {
        if (sub == NULL) {
            redisReply *r = NULL;
            if ((sub = s_connect(m)) == NULL || (pub = s_connect(m)) == NULL || (cmd = s_connect(m)) == NULL ||
                (r = redisCommand(sub, "SUBSCRIBE %s", m->channel)) == NULL) {
                if (r != NULL)
                    freeReplyObject(r);
                if (sub != NULL)
                    redisFree(sub), sub = NULL;
                if (pub != NULL)
                    redisFree(pub), pub = NULL;
                if (cmd != NULL)
                    redisFree(cmd), cmd = NULL;
                rf_metric_add(gw_m.redis_errors, NULL, 1);
                if (!ever && backoff == 100)
                    rf_log(RF_LOG_WARN, NULL, "metadata: cannot reach Redis %s:%d; serving on, retrying", m->host,
                           m->port);
                s_run_queries(m, NULL); /* nobody to ask: every claim is won */
                s_sleep_ms(backoff);
                backoff = backoff < 2000 ? backoff * 2 : 2000;
                continue;
            }
            if (r->type == REDIS_REPLY_ERROR) { /* e.g. NOAUTH: a password this gateway does not know */
                if (backoff == 100) /* once per outage, not every retry */
                    rf_log(RF_LOG_WARN, NULL, "metadata: Redis %s:%d refused: %s", m->host, m->port,
                           m->auth_error[0] ? m->auth_error : r->str);
                m->auth_error[0] = '\0';
                freeReplyObject(r);
                redisFree(sub), sub = NULL;
                redisFree(pub), pub = NULL;
                redisFree(cmd), cmd = NULL;
                rf_metric_add(gw_m.redis_errors, NULL, 1);
                s_run_queries(m, NULL);
                s_sleep_ms(backoff);
                backoff = backoff < 2000 ? backoff * 2 : 2000;
                continue;
            }
            freeReplyObject(r);
            backoff = 100;
            m->auth_error[0] = '\0'; /* e.g. AUTH sent to a Redis without a password: harmless */
            rf_metric_set(gw_m.redis_up, NULL, 1);
            atomic_store(&m->connected, true);
            /* Purges published while this gateway was cut off (or stopped:
             * its objects were loaded from disk) are gone: every object it
             * holds revalidates once instead. */
            rf_store_stats_t st;
            rf_store_stats(m->srv->store, &st);
            size_t n = st.objects > 0 ? rf_store_expire_if(m->srv->store, s_match_all, NULL, 0) : 0;
            rf_log(ever ? RF_LOG_WARN : RF_LOG_INFO, NULL,
                   "metadata: Redis %s:%d %s, channel %s; %zu object(s) will revalidate (purges may have been missed)",
                   m->host, m->port, ever ? "back" : "connected", m->channel, n);
            ever = true;
        }
        if (s_flush(m, pub) < 0)
            goto lost;
        s_run_queries(m, cmd);
        if (cmd->err)
            goto lost;
        struct pollfd p[2] = {{.fd = sub->fd, .events = POLLIN}, {.fd = m->wake_fd, .events = POLLIN}};
        int pr = poll(p, 2, 100);
        if (pr < 0 && errno != EINTR)
            goto lost;
        if (pr > 0 && (p[1].revents & POLLIN)) {
            uint64_t v;
            if (read(m->wake_fd, &v, sizeof(v)) < 0) {
                /* drained already */
            }
        }
        if (pr > 0 && (p[0].revents & (POLLIN | POLLHUP | POLLERR))) {
            if (redisBufferRead(sub) != REDIS_OK)
                goto lost;
            for (;;) {
                redisReply *r = NULL;
                if (redisGetReplyFromReader(sub, (void **)&r) != REDIS_OK)
                    goto lost;
                if (r == NULL)
                    break;
                if (r->type == REDIS_REPLY_ARRAY && r->elements == 3 && r->element[0]->type == REDIS_REPLY_STRING &&
                    strcmp(r->element[0]->str, "message") == 0 && r->element[2]->type == REDIS_REPLY_STRING)
                    s_apply(m, r->element[2]->str, r->element[2]->len);
                freeReplyObject(r);
            }
        }
        continue;
    lost:
        rf_log(RF_LOG_WARN, NULL, "metadata: lost Redis %s:%d (%s); serving on, reconnecting", m->host, m->port,
               sub && sub->err ? sub->errstr : pub && pub->err ? pub->errstr : "connection closed");
        rf_metric_add(gw_m.redis_errors, NULL, 1);
        rf_metric_set(gw_m.redis_up, NULL, 0);
        atomic_store(&m->connected, false);
        redisFree(sub), sub = NULL;
        if (pub != NULL)
            redisFree(pub), pub = NULL;
        if (cmd != NULL)
            redisFree(cmd), cmd = NULL;
        s_run_queries(m, NULL);
    }
    atomic_store(&m->connected, false);
    s_run_queries(m, NULL); /* nobody waits forever */
    if (sub != NULL)
        redisFree(sub);
    if (pub != NULL)
        redisFree(pub);
    if (cmd != NULL)
        redisFree(cmd);
    return NULL;
}

gw_meta_t *gw_meta_new(gw_server_t *srv, char **err)
{
    const rf_config_t *cfg = srv->cfg;
    gw_meta_t *m = calloc(1, sizeof(*m));
    if (m == NULL)
        goto oom;
    m->srv = srv;
    m->wake_fd = -1;
    pthread_mutex_init(&m->mu, NULL);
    if (strcmp(cfg->gateway.meta_backend, "embedded") == 0)
        return m;
    if (strcmp(cfg->gateway.meta_backend, "redis") != 0) {
        if (asprintf(err, "gateway.metadata.backend is embedded or redis, got '%s'", cfg->gateway.meta_backend) < 0)
            *err = NULL;
        goto fail;
    }
    rf_listen_t l = {0};
    if (rf_listen_parse(cfg->gateway.meta_redis, &l) < 0 || l.port <= 0 || l.host == NULL || strlen(l.host) >= 256) {
        free(l.host);
        if (asprintf(err, "gateway.metadata.redis is host:port, got '%s'", cfg->gateway.meta_redis) < 0)
            *err = NULL;
        goto fail;
    }
    snprintf(m->host, sizeof(m->host), "%s", l.host[0] ? l.host : "127.0.0.1");
    free(l.host);
    m->port = l.port;
    snprintf(m->channel, sizeof(m->channel), "%s:purge", cfg->gateway.meta_prefix);
    snprintf(m->prefix, sizeof(m->prefix), "%s", cfg->gateway.meta_prefix);
    if (cfg->gateway.meta_password != NULL) {
        if (strlen(cfg->gateway.meta_password) >= sizeof(m->password)) {
            if (asprintf(err, "gateway.metadata.password is longer than %zu bytes", sizeof(m->password) - 1) < 0)
                *err = NULL;
            goto fail;
        }
        snprintf(m->password, sizeof(m->password), "%s", cfg->gateway.meta_password);
    }
    if (cfg->gateway.meta_advertise != NULL) {
        if (strncmp(cfg->gateway.meta_advertise, "http://", 7) != 0 || strlen(cfg->gateway.meta_advertise) >= 256) {
            if (asprintf(err, "gateway.metadata.advertise is this gateway's http:// URL, got '%s'",
                         cfg->gateway.meta_advertise) < 0)
                *err = NULL;
            goto fail;
        }
        snprintf(m->advertise, sizeof(m->advertise), "%s", cfg->gateway.meta_advertise);
    }
    if ((m->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0)
        goto oom;
    m->redis = true;
    rf_metric_set(gw_m.redis_up, NULL, 0);
    if (pthread_create(&m->tid, NULL, s_thread, m) != 0)
        goto oom;
    return m;
oom:
    if (asprintf(err, "metadata: out of memory") < 0)
        *err = NULL;
fail:
    if (m != NULL) {
        if (m->wake_fd >= 0)
            close(m->wake_fd);
        pthread_mutex_destroy(&m->mu);
        free(m);
    }
    return NULL;
}

void gw_meta_destroy(gw_meta_t **m_p)
{
    gw_meta_t *m = *m_p;
    if (m == NULL)
        return;
    *m_p = NULL;
    if (m->redis) {
        atomic_store(&m->stop, true);
        pthread_join(m->tid, NULL);
    }
    for (s_msg_t *x = m->head, *next; x != NULL; x = next) {
        next = x->next;
        free(x->text);
        free(x);
    }
    free(m->queries);
    if (m->wake_fd >= 0)
        close(m->wake_fd);
    pthread_mutex_destroy(&m->mu);
    free(m);
}
