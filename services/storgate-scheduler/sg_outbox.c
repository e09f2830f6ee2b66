/*  sg_outbox — webhooks delivered at least once (sg.h).
 *
 *  A webhook is first a file in STATE/outbox/ (written, fsynced, renamed
 *  in), so it survives a restart of the scheduler and any outage of its
 *  target; a delivery thread POSTs the files in the order they were made
 *  and removes each only after a 2xx answer. A failed delivery is retried
 *  after 1 s, doubling up to 60 s, for as long as it takes. Each payload
 *  carries its idempotency key (also sent as Idempotency-Key), so a
 *  receiver that sees one twice — a crash between its 2xx and our unlink —
 *  can tell.
 *
 *  File: "TARGET\nKEY\nPAYLOAD". Targets: http:// and https:// URLs, the
 *  seed's script hooks (absolute ".js" paths, run by sg_hook.c), and Kafka
 *  topics (kafka://HOST:PORT[,HOST:PORT…]/TOPIC, produced by sg_kafka.c).
 */
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "rf_log.h"
#include "rf_sgevent.h"
#include "sg.h"
#include "sg_kafka.h"

#define S_HOLD ".hold" /* a webhook written before its item's onComplete, not yet due */

#define S_MAX_TRACKED 4096

typedef struct {
    char name[64];
    int attempts;
    int64_t next_ms;
} s_backoff_t;

struct sg_outbox_t {
    char dir[600];
    char in_dir[600]; /* STATE/outbox-in: other processes' webhooks, adopted by a rename */
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_int stop;
    s_backoff_t *backoff; /* delivery thread only */
    size_t n_backoff;
    sg_kafka_t *kafka; /* delivery thread only: made at the first kafka:// target */
};

static int64_t s_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Whether target is one the delivery thread can reach; report: a refusal
 * is logged and counted (once per webhook: not for a hold, whose item
 * queues it again after its onComplete). */
static bool s_target_ok(const char *target, const char *key, bool report)
{
    size_t tl = strlen(target);
    bool script = target[0] == '/' && tl > 3 && strcmp(target + tl - 3, ".js") == 0;
    char kwhy[200] = "";
    bool kafka = sg_kafka_is_target(target);
    if ((kafka && sg_kafka_check(target, kwhy, sizeof(kwhy)) < 0) ||
        (!kafka && !script && strncmp(target, "http://", 7) != 0 && strncmp(target, "https://", 8) != 0)) {
        if (!report)
            return false;
        rf_error("storgate webhook %s: target %s: %s", key, target,
                 kafka ? kwhy : "an http(s):// URL, an absolute path to a .js script or kafka://HOST:PORT[,...]/TOPIC");
        const char *l[] = {"unsupported"};
        rf_metric_add(sg_m.webhooks, l, 1);
        return false;
    }
    return true;
}

static void s_wake(sg_outbox_t *o)
{
    pthread_mutex_lock(&o->mu);
    pthread_cond_signal(&o->cv);
    pthread_mutex_unlock(&o->mu);
}

int sg_outbox_put(sg_outbox_t *o, const char *target, const char *key, const char *payload)
{
    if (!s_target_ok(target, key, true) || rf_outbox_write(o->dir, target, key, payload) < 0)
        return -1;
    s_wake(o);
    return 0;
}

int sg_outbox_hold(sg_outbox_t *o, const char *target, const char *key, const char *payload, char *name, size_t cap)
{
    if (!s_target_ok(target, key, false))
        return -1;
    return rf_outbox_write_as(o->dir, target, key, payload, S_HOLD, name, cap);
}

/* from/NAME.hold → to/NAME.json (delivered from then on). */
static int s_release_into(const char *from, const char *to, const char *name)
{
    char a[1000], b[1000];
    size_t nl = strlen(name);
    snprintf(a, sizeof(a), "%s/%s", from, name);
    snprintf(b, sizeof(b), "%s/%.*s.json", to, (int)(nl > 5 ? nl - 5 : 0), name);
    return rename(a, b);
}

int sg_outbox_release(sg_outbox_t *o, const char *name, bool deliver)
{
    char path[1000];
    snprintf(path, sizeof(path), "%s/%s", o->dir, name);
    int rc = deliver ? s_release_into(o->dir, o->dir, name) : unlink(path);
    if (rc == 0 && deliver)
        s_wake(o);
    return rc;
}

/* The webhooks held in `from` by a process that is gone: each one's
 * settle() says 1 deliver (into `to`), 0 drop, -1 leave it. */
static int s_settle_dir(const char *from, const char *to, sg_settle_fn *settle, void *arg)
{
    DIR *d = opendir(from);
    int n = 0;
    for (struct dirent *de; d != NULL && (de = readdir(d)) != NULL;) {
        size_t l = strlen(de->d_name);
        if (de->d_name[0] == '.' || l < 6 || strcmp(de->d_name + l - 5, S_HOLD) != 0)
            continue;
        char path[1000];
        snprintf(path, sizeof(path), "%s/%s", from, de->d_name);
        char *text = NULL;
        size_t cap = 0;
        FILE *f = fopen(path, "r");
        ssize_t len = f ? getdelim(&text, &cap, '\0', f) : -1;
        if (f != NULL)
            fclose(f);
        const char *nl1 = len > 0 ? strchr(text, '\n') : NULL, *nl2 = nl1 ? strchr(nl1 + 1, '\n') : NULL;
        int v = nl2 != NULL ? settle(arg, nl2 + 1) : -1;
        if (v == 1 && s_release_into(from, to, de->d_name) == 0)
            n++;
        else if (v == 0)
            unlink(path);
        free(text);
    }
    if (d != NULL)
        closedir(d);
    return n;
}

int sg_outbox_settle(sg_outbox_t *o, sg_settle_fn *settle, void *arg)
{
    return s_settle_dir(o->dir, o->dir, settle, arg);
}

int sg_outbox_pending(sg_outbox_t *o)
{
    DIR *d = opendir(o->dir);
    int n = 0;
    for (struct dirent *de; d != NULL && (de = readdir(d)) != NULL;) {
        size_t l = strlen(de->d_name);
        n += de->d_name[0] != '.' && l > 5 && strcmp(de->d_name + l - 5, ".json") == 0;
    }
    if (d != NULL)
        closedir(d);
    return n;
}

static size_t s_discard(char *p, size_t size, size_t n, void *arg)
{
    (void)p;
    (void)arg;
    return size * n;
}

/* POSTs one payload; true on a 2xx. */
static bool s_post(CURL *c, const char *target, const char *key, const char *payload, char *why, size_t why_len)
{
    struct curl_slist *h = NULL;
    char idem[300];
    snprintf(idem, sizeof(idem), "Idempotency-Key: %s", key);
    h = curl_slist_append(h, "Content-Type: application/json");
    h = curl_slist_append(h, idem);
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, target);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, payload);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 3000L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, s_discard);
    CURLcode rc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(h);
    if (rc != CURLE_OK)
        snprintf(why, why_len, "%s", curl_easy_strerror(rc));
    else if (status < 200 || status > 299)
        snprintf(why, why_len, "answered %ld", status);
    return rc == CURLE_OK && status >= 200 && status <= 299;
}

/* Delivers one webhook to its target, whatever kind it is; true when done. */
static bool s_deliver(sg_outbox_t *o, CURL *c, const char *target, const char *key, const char *payload, char *why,
                      size_t why_len)
{
    size_t tl = strlen(target);
    if (sg_kafka_is_target(target)) {
        if (o->kafka == NULL && (o->kafka = sg_kafka_new(&o->stop)) == NULL) {
            snprintf(why, why_len, "out of memory");
            return false;
        }
        return sg_kafka_send(o->kafka, target, key, payload, why, why_len);
    }
    if (tl > 3 && strcmp(target + tl - 3, ".js") == 0)
        return sg_hook_run(c, target, key, payload, why, why_len);
    return s_post(c, target, key, payload, why, why_len);
}

static s_backoff_t *s_backoff(sg_outbox_t *o, const char *name, bool add)
{
    for (size_t i = 0; i < o->n_backoff; i++)
        if (strcmp(o->backoff[i].name, name) == 0)
            return &o->backoff[i];
    if (!add || o->n_backoff == S_MAX_TRACKED)
        return NULL;
    s_backoff_t *b = &o->backoff[o->n_backoff++];
    memset(b, 0, sizeof(*b));
    snprintf(b->name, sizeof(b->name), "%s", name);
    return b;
}

static void s_forget(sg_outbox_t *o, const char *name)
{
    s_backoff_t *b = s_backoff(o, name, false);
    if (b != NULL)
        *b = o->backoff[--o->n_backoff];
}

static int s_name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Moves the webhook files (*.json) of directory `from` into `to`: a
 * rename, so of several nodes sharing STATE exactly one takes each file,
 * and from then on it is delivered like their own. Returns how many. */
static int s_move_all(const char *from, const char *to)
{
    DIR *d = opendir(from);
    int n = 0;
    for (struct dirent *de; d != NULL && (de = readdir(d)) != NULL;) {
        size_t l = strlen(de->d_name);
        if (de->d_name[0] == '.' || l < 6 || strcmp(de->d_name + l - 5, ".json") != 0)
            continue;
        char a[1000], b[1000];
        snprintf(a, sizeof(a), "%s/%s", from, de->d_name);
        snprintf(b, sizeof(b), "%s/%s", to, de->d_name);
        if (rename(a, b) == 0) {
            n++;
            rf_info("storgate outbox: took %s from %s", de->d_name, from);
        }
    }
    if (d != NULL)
        closedir(d);
    return n;
}

/* The files other processes left in STATE/outbox-in. */
static void s_adopt(sg_outbox_t *o)
{
    s_move_all(o->in_dir, o->dir);
}

int sg_outbox_adopt(const char *state_dir, const char *from_node, const char *to_node, sg_settle_fn *settle, void *arg)
{
    if (strpbrk(from_node, "/") != NULL || strcmp(from_node, ".") == 0 || strcmp(from_node, "..") == 0 ||
        from_node[0] == '\0' || strcmp(from_node, to_node) == 0)
        return 0;
    char from[700], to[700];
    snprintf(from, sizeof(from), "%s/outbox/%s", state_dir, from_node);
    snprintf(to, sizeof(to), "%s/outbox/%s", state_dir, to_node);
    return s_move_all(from, to) + s_settle_dir(from, to, settle, arg);
}

/* One pass over the directory: delivers what is due. Returns the files left. */
static int s_pass(sg_outbox_t *o, CURL *c)
{
    s_adopt(o);
    DIR *d = opendir(o->dir);
    if (d == NULL)
        return 0;
    char **names = NULL;
    size_t n = 0, cap = 0;
    for (struct dirent *de; (de = readdir(d)) != NULL;) {
        size_t l = strlen(de->d_name);
        if (de->d_name[0] == '.' || l < 6 || strcmp(de->d_name + l - 5, ".json") != 0)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            char **nn = realloc(names, cap * sizeof(*names));
            if (nn == NULL)
                break;
            names = nn;
        }
        if ((names[n] = strdup(de->d_name)) != NULL)
            n++;
    }
    closedir(d);
    if (n > 1)
        qsort(names, n, sizeof(*names), s_name_cmp);
    int left = (int)n;
    int64_t now = s_now_ms();
    for (size_t i = 0; i < n && !atomic_load(&o->stop); i++) {
        s_backoff_t *b = s_backoff(o, names[i], false);
        if (b != NULL && b->next_ms > now)
            continue;
        char path[700];
        snprintf(path, sizeof(path), "%s/%s", o->dir, names[i]);
        FILE *f = fopen(path, "r");
        char target[2048], key[256], *payload = NULL;
        size_t plen = 0;
        bool read_ok = f && fgets(target, sizeof(target), f) && fgets(key, sizeof(key), f) &&
                       getdelim(&payload, &plen, '\0', f) >= 0;
        if (f != NULL)
            fclose(f);
        if (!read_ok) {
            free(payload);
            rf_error("storgate outbox: %s is unreadable: moved aside", path);
            char bad[720];
            snprintf(bad, sizeof(bad), "%s/.bad-%s", o->dir, names[i]);
            rename(path, bad);
            left--;
            continue;
        }
        target[strcspn(target, "\n")] = '\0';
        key[strcspn(key, "\n")] = '\0';
        char why[200] = "";
        if (s_deliver(o, c, target, key, payload, why, sizeof(why))) {
            unlink(path);
            s_forget(o, names[i]);
            left--;
            const char *l[] = {"delivered"};
            rf_metric_add(sg_m.webhooks, l, 1);
            rf_info("storgate webhook %s delivered to %s", key, target);
        } else {
            b = s_backoff(o, names[i], true);
            int att = b ? ++b->attempts : 1;
            int64_t delay = 1000LL << (att > 6 ? 6 : att - 1);
            if (delay > 60000)
                delay = 60000;
            if (b != NULL)
                b->next_ms = now + delay;
            const char *l[] = {"retried"};
            rf_metric_add(sg_m.webhooks, l, 1);
            rf_warn("storgate webhook %s to %s failed (%s), attempt %d: again in %lld ms", key, target, why, att,
                    (long long)delay);
        }
        free(payload);
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return left;
}

static void *s_thread(void *arg)
{
    sg_outbox_t *o = arg;
    CURL *c = curl_easy_init();
    while (!atomic_load(&o->stop)) {
        if (c != NULL)
            s_pass(o, c);
        pthread_mutex_lock(&o->mu);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 1; /* retries come due; new files signal */
        if (!atomic_load(&o->stop))
            pthread_cond_timedwait(&o->cv, &o->mu, &ts);
        pthread_mutex_unlock(&o->mu);
    }
    if (c != NULL)
        curl_easy_cleanup(c);
    sg_kafka_destroy(&o->kafka);
    return NULL;
}

sg_outbox_t *sg_outbox_new(const char *state_dir, const char *node, char *why, size_t why_len)
{
    sg_outbox_t *o = calloc(1, sizeof(*o));
    if (o == NULL)
        return NULL;
    o->backoff = calloc(S_MAX_TRACKED, sizeof(*o->backoff));
    pthread_mutex_init(&o->mu, NULL);
    pthread_cond_init(&o->cv, NULL);
    /* one outbox per node: nodes that share STATE must not deliver each
     * other's files (twice), and a node restarted under its name resumes its own */
    snprintf(o->in_dir, sizeof(o->in_dir), "%s/%s", state_dir, RF_OUTBOX_IN_DIR);
    snprintf(o->dir, sizeof(o->dir), "%s/outbox", state_dir);
    mkdir(o->dir, 0700);
    snprintf(o->dir, sizeof(o->dir), "%s/outbox/%s", state_dir, node);
    if ((mkdir(o->dir, 0700) != 0 && errno != EEXIST) || o->backoff == NULL) {
        snprintf(why, why_len, "cannot create %s: %s", o->dir, strerror(errno));
        free(o->backoff);
        free(o);
        return NULL;
    }
    if (pthread_create(&o->th, NULL, s_thread, o) != 0) {
        snprintf(why, why_len, "cannot start the outbox thread");
        free(o->backoff);
        free(o);
        return NULL;
    }
    return o;
}

void sg_outbox_destroy(sg_outbox_t **self_p)
{
    if (self_p == NULL || *self_p == NULL)
        return;
    sg_outbox_t *o = *self_p;
    atomic_store(&o->stop, 1);
    pthread_mutex_lock(&o->mu);
    pthread_cond_signal(&o->cv);
    pthread_mutex_unlock(&o->mu);
    pthread_join(o->th, NULL);
    pthread_mutex_destroy(&o->mu);
    pthread_cond_destroy(&o->cv);
    free(o->backoff);
    free(o);
    *self_p = NULL;
}
