/*  rf_metrics — a small Prometheus registry shared by every refract process.
 *
 *  Locking. Three kinds of lock, always taken in this order so no cycle can
 *  form:
 *    render_lock  serialises renders and the collectors they run; held
 *                 alone while collectors run, so a collector may update
 *                 series and even declare families;
 *    lock         guards the family list and the collector table;
 *    family lock  guards one family's series (one mutex per family, so hot
 *                 counters of different families never contend).
 *  Updates only ever take a family lock. Families are never removed before
 *  rf_metrics_destroy, so the rf_metric_t pointers handed out stay valid.
 *
 *  Series are kept twice: in a creation-ordered array (stable render order,
 *  which keeps scrapes diffable) and in a small chained hash table on the
 *  label values (cheap lookup on the update path).
 */
#include "rf_metrics.h"

#include <ctype.h>
#include <inttypes.h>
#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define S_MAX_COLLECTORS 8
#define S_TABLE_SIZE 64 /* power of two; chains stay short for typical label cardinalities */

const double rf_metrics_latency_buckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                             0.25,   0.5,   1,      2.5,   5,    10,    30};
const size_t rf_metrics_latency_nbuckets = sizeof(rf_metrics_latency_buckets) / sizeof(rf_metrics_latency_buckets[0]);

typedef struct s_series_t {
    struct s_series_t *hnext; /* hash chain */
    uint32_t hash;
    const char *values[RF_METRICS_MAX_LABELS]; /* point into the same allocation */
    double value;                              /* counter / gauge */
    double sum;                                /* histogram */
    uint64_t count;                            /* histogram */
    /* histogram: nbounds + 1 non-cumulative counts, the last one for +Inf;
     * cumulated only at render so observe stays O(log n) */
    uint64_t *buckets;
} s_series_t;

struct rf_metric_t {
    rf_metric_t *next; /* declaration order */
    rf_metric_type_t type;
    char *name;
    char *help;
    size_t nlabels;
    char *labels_buf; /* one copy of the label list, split in place */
    const char *labels[RF_METRICS_MAX_LABELS];
    double *bounds;
    size_t nbounds;
    pthread_mutex_t lock;
    s_series_t **order;
    size_t nseries;
    size_t cap;
    s_series_t *table[S_TABLE_SIZE];
};

typedef struct {
    rf_metrics_collect_fn *fn;
    void *arg;
} s_collector_t;

struct rf_metrics_t {
    pthread_mutex_t render_lock;
    pthread_mutex_t lock;
    rf_metric_t *head;
    rf_metric_t *tail;
    s_collector_t collectors[S_MAX_COLLECTORS];
    size_t ncollectors;
    /* The process collector lives outside the table so it never uses up
     * one of the 8 slots the header promises to callers. */
    rf_metric_t *proc_rss;
    rf_metric_t *proc_cpu;
    rf_metric_t *proc_start;
    /* printf/strtod follow LC_NUMERIC; a process that calls setlocale()
     * (image libraries do) would otherwise render "0,5", which Prometheus
     * rejects. (locale_t)0 if newlocale failed: we then render as is. */
    locale_t c_locale;
};

/* ------------------------------------------------------------------------ */
/* Text buffer used by render: appends never fail visibly, the first
 * allocation failure latches `failed` so render can return NULL once. */

typedef struct {
    char *data;
    size_t len;
    size_t cap;
    bool failed;
} s_buf_t;

/* Makes room for `extra` more bytes plus a NUL. Returns 0, or -1 (and
 * latches failed) when allocation fails. */
static int s_buf_reserve(s_buf_t *b, size_t extra)
{
    if (b->failed)
        return -1;
    if (b->len + extra + 1 <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + extra + 1)
        cap *= 2;
    char *data = realloc(b->data, cap);
    if (!data) {
        b->failed = true;
        return -1;
    }
    if (!b->data)
        data[0] = '\0'; /* the text is a C string at every point, even empty */
    b->data = data;
    b->cap = cap;
    return 0;
}

/* Appends n bytes; failure is latched in b. */
static void s_buf_append(s_buf_t *b, const char *s, size_t n)
{
    if (s_buf_reserve(b, n) != 0)
        return;
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

/* Appends a C string; failure is latched in b. */
static void s_buf_puts(s_buf_t *b, const char *s)
{
    s_buf_append(b, s, strlen(s));
}

/* printf-style append; failure is latched in b. */
__attribute__((format(printf, 2, 3))) static void s_buf_printf(s_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->failed = true;
        return;
    }
    if (s_buf_reserve(b, (size_t)n) != 0)
        return;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* Appends s escaped for the exposition format. Label values escape
 * backslash, double quote and newline; HELP text only backslash and
 * newline (a quote is literal there). */
static void s_buf_escaped(s_buf_t *b, const char *s, bool quote)
{
    for (; *s; s++) {
        if (*s == '\\')
            s_buf_append(b, "\\\\", 2);
        else if (*s == '\n')
            s_buf_append(b, "\\n", 2);
        else if (*s == '"' && quote)
            s_buf_append(b, "\\\"", 2);
        else
            s_buf_append(b, s, 1);
    }
}

/* Formats v into out (at least 32 bytes) the way Prometheus clients do:
 * integers without exponent or trailing ".0" (counts read naturally),
 * otherwise the shortest of %.15g..%.17g that round-trips, and the
 * special values spelled as the format requires. */
static void s_format_double(char *out, size_t size, double v)
{
    if (isnan(v)) {
        snprintf(out, size, "NaN");
        return;
    }
    if (isinf(v)) {
        snprintf(out, size, v > 0 ? "+Inf" : "-Inf");
        return;
    }
    if (v == 0) {
        snprintf(out, size, "0"); /* also folds -0 */
        return;
    }
    /* 1e15 keeps the cast exact and the result short; beyond it %g's
     * exponent form is the clearer spelling anyway. */
    if (v > -1e15 && v < 1e15 && v == (double)(long long)v) {
        snprintf(out, size, "%lld", (long long)v);
        return;
    }
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(out, size, "%.*g", prec, v);
        if (strtod(out, NULL) == v)
            return;
    }
}

/* Appends v formatted by s_format_double; failure is latched in b. */
static void s_buf_double(s_buf_t *b, double v)
{
    char tmp[64];
    s_format_double(tmp, sizeof tmp, v);
    s_buf_puts(b, tmp);
}

/* ------------------------------------------------------------------------ */
/* Names */

/* Returns true when s matches [a-zA-Z_:][a-zA-Z0-9_:]*. */
static bool s_valid_metric_name(const char *s)
{
    if (!s || !*s || isdigit((unsigned char)*s))
        return false;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (!(isalnum(c) || c == '_' || c == ':') || c > 127)
            return false;
    }
    return true;
}

/* Returns true when s is a usable label name: [a-zA-Z_][a-zA-Z0-9_]*,
 * not reserved (leading "__" belongs to Prometheus itself). */
static bool s_valid_label_name(const char *s)
{
    if (!*s || isdigit((unsigned char)*s) || strncmp(s, "__", 2) == 0)
        return false;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (!(isalnum(c) || c == '_') || c > 127)
            return false;
    }
    return true;
}

/* Returns true when a family (type, name) exposes a sample called
 * `sample`: histograms also own name_bucket, name_sum and name_count. */
static bool s_exposes(rf_metric_type_t type, const char *name, const char *sample)
{
    size_t n = strlen(name);
    if (strncmp(sample, name, n) != 0)
        return false;
    const char *rest = sample + n;
    if (*rest == '\0')
        return true;
    return type == RF_METRIC_HISTOGRAM &&
           (strcmp(rest, "_bucket") == 0 || strcmp(rest, "_sum") == 0 || strcmp(rest, "_count") == 0);
}

/* Returns true if a new family would produce a sample name some existing
 * family already produces (e.g. counter "x_count" next to histogram "x"),
 * which would make the exposition ambiguous. Since no histogram suffix is
 * a suffix of another, checking each family's base name against the other
 * is enough. Caller holds self->lock. */
static bool s_name_taken(rf_metrics_t *self, rf_metric_type_t type, const char *name)
{
    for (rf_metric_t *m = self->head; m; m = m->next)
        if (s_exposes(m->type, m->name, name) || s_exposes(type, name, m->name))
            return true;
    return false;
}

/* Splits a comma-separated label list into m->labels (spaces around names
 * are ignored). Returns 0, or -1 for too many, invalid or duplicate names,
 * "le" on a histogram, or allocation failure. */
static int s_parse_labels(rf_metric_t *m, const char *labels)
{
    if (!labels || !*labels)
        return 0;
    m->labels_buf = strdup(labels);
    if (!m->labels_buf)
        return -1;
    char *save = NULL;
    char *tok = strtok_r(m->labels_buf, ",", &save);
    for (; tok; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ')
            tok++;
        char *end = tok + strlen(tok);
        while (end > tok && end[-1] == ' ')
            *--end = '\0';
        if (m->nlabels == RF_METRICS_MAX_LABELS || !s_valid_label_name(tok))
            return -1;
        if (m->type == RF_METRIC_HISTOGRAM && strcmp(tok, "le") == 0)
            return -1; /* le is the bucket label */
        for (size_t i = 0; i < m->nlabels; i++)
            if (strcmp(m->labels[i], tok) == 0)
                return -1;
        m->labels[m->nlabels++] = tok;
    }
    /* "a,,b" or ",": strtok skips empty fields, so compare the comma count */
    size_t commas = 0;
    for (const char *p = labels; *p; p++)
        commas += *p == ',';
    return m->nlabels == commas + 1 ? 0 : -1;
}

/* ------------------------------------------------------------------------ */
/* Families and series */

/* Frees a family and all its series; safe on NULL and on a family that
 * failed half-way through rf_metrics_declare. */
static void s_metric_free(rf_metric_t *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->nseries; i++)
        free(m->order[i]);
    free(m->order);
    pthread_mutex_destroy(&m->lock);
    free(m->bounds);
    free(m->labels_buf);
    free(m->help);
    free(m->name);
    free(m);
}

/* FNV-1a over the label values, with a separator byte that cannot occur
 * in a C string so ("ab","") and ("a","b") hash apart. */
static uint32_t s_hash(const char *const *values, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) {
        for (const char *p = values[i]; *p; p++)
            h = (h ^ (unsigned char)*p) * 16777619u;
        h = (h ^ 0xffu) * 16777619u;
    }
    return h;
}

/* Finds or creates the series for `values` (caller holds m->lock).
 * `values` may be NULL or hold NULLs: both mean "". Returns the series
 * (owned by m) or NULL on allocation failure, in which case the update
 * is dropped: metrics must never take the process down. */
static s_series_t *s_series_get(rf_metric_t *m, const char *const *values)
{
    const char *vals[RF_METRICS_MAX_LABELS];
    for (size_t i = 0; i < m->nlabels; i++)
        vals[i] = values && values[i] ? values[i] : "";
    uint32_t hash = s_hash(vals, m->nlabels);
    s_series_t **slot = &m->table[hash & (S_TABLE_SIZE - 1)];
    for (s_series_t *s = *slot; s; s = s->hnext) {
        if (s->hash != hash)
            continue;
        size_t i = 0;
        while (i < m->nlabels && strcmp(s->values[i], vals[i]) == 0)
            i++;
        if (i == m->nlabels)
            return s;
    }

    if (m->nseries == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 4;
        s_series_t **order = realloc(m->order, cap * sizeof *order);
        if (!order)
            return NULL;
        m->order = order;
        m->cap = cap;
    }
    /* One allocation: header, bucket counts (8-aligned since the struct
     * size is a multiple of 8), then the label value strings. */
    size_t nb = m->type == RF_METRIC_HISTOGRAM ? m->nbounds + 1 : 0;
    size_t size = sizeof(s_series_t) + nb * sizeof(uint64_t);
    for (size_t i = 0; i < m->nlabels; i++)
        size += strlen(vals[i]) + 1;
    s_series_t *s = calloc(1, size);
    if (!s)
        return NULL;
    char *p = (char *)(s + 1);
    if (nb) {
        s->buckets = (uint64_t *)p;
        p += nb * sizeof(uint64_t);
    }
    for (size_t i = 0; i < m->nlabels; i++) {
        size_t n = strlen(vals[i]) + 1;
        memcpy(p, vals[i], n);
        s->values[i] = p;
        p += n;
    }
    s->hash = hash;
    s->hnext = *slot;
    *slot = s;
    m->order[m->nseries++] = s;
    return s;
}

/* Also pins a "C" locale for rendering; if that fails the registry still
 * works and renders in the process locale. */
rf_metrics_t *rf_metrics_new(void)
{
    rf_metrics_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    pthread_mutex_init(&self->render_lock, NULL);
    pthread_mutex_init(&self->lock, NULL);
    self->c_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0);
    return self;
}

/* Must not race with updates or renders: the caller owns the registry
 * and, by then, every thread that used its families must be done. */
void rf_metrics_destroy(rf_metrics_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    rf_metrics_t *self = *self_p;
    rf_metric_t *m = self->head;
    while (m) {
        rf_metric_t *next = m->next;
        s_metric_free(m);
        m = next;
    }
    if (self->c_locale)
        freelocale(self->c_locale);
    pthread_mutex_destroy(&self->lock);
    pthread_mutex_destroy(&self->render_lock);
    free(self);
    *self_p = NULL;
}

/* Besides an invalid or duplicate name (which includes a name colliding
 * with a histogram's _bucket/_sum/_count samples), also returns NULL for
 * an invalid label list (see s_parse_labels), histogram bounds that are
 * not finite and strictly increasing, bounds passed for a non-histogram,
 * a NULL registry, or allocation failure. A NULL help is taken as "". */
rf_metric_t *rf_metrics_declare(rf_metrics_t *self, rf_metric_type_t type, const char *name, const char *help,
                                const char *labels, const double *buckets, size_t nbuckets)
{
    if (!self || !s_valid_metric_name(name))
        return NULL;
    if (type != RF_METRIC_COUNTER && type != RF_METRIC_GAUGE && type != RF_METRIC_HISTOGRAM)
        return NULL;
    if (type != RF_METRIC_HISTOGRAM && nbuckets)
        return NULL;
    if (nbuckets && !buckets)
        return NULL;
    for (size_t i = 0; i < nbuckets; i++)
        if (!isfinite(buckets[i]) || (i && !(buckets[i] > buckets[i - 1])))
            return NULL;

    rf_metric_t *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    pthread_mutex_init(&m->lock, NULL);
    m->type = type;
    m->name = strdup(name);
    m->help = strdup(help ? help : "");
    if (!m->name || !m->help)
        goto fail;
    if (s_parse_labels(m, labels) != 0)
        goto fail;
    if (nbuckets) {
        m->bounds = malloc(nbuckets * sizeof *m->bounds);
        if (!m->bounds)
            goto fail;
        memcpy(m->bounds, buckets, nbuckets * sizeof *m->bounds);
        m->nbounds = nbuckets;
    }
    /* An unlabelled family has exactly one series; create it now so it is
     * exported as 0 from the first scrape instead of appearing later,
     * which would break rate() over the first increment. */
    if (m->nlabels == 0 && !s_series_get(m, NULL))
        goto fail;

    pthread_mutex_lock(&self->lock);
    if (s_name_taken(self, type, name)) {
        pthread_mutex_unlock(&self->lock);
        goto fail;
    }
    if (self->tail)
        self->tail->next = m;
    else
        self->head = m;
    self->tail = m;
    pthread_mutex_unlock(&self->lock);
    return m;

fail:
    s_metric_free(m);
    return NULL;
}

/* Stores v into a counter/gauge series; `add` selects add vs set. Allows
 * any type check to live in the public wrappers and lets the process
 * collector set a counter from /proc. Drops the update on allocation
 * failure. */
static void s_store(rf_metric_t *m, const char *const *values, double v, bool add)
{
    pthread_mutex_lock(&m->lock);
    s_series_t *s = s_series_get(m, values);
    if (s)
        s->value = add ? s->value + v : v;
    pthread_mutex_unlock(&m->lock);
}

/* A negative or NaN increment would make the counter non-monotonic (a
 * reset to Prometheus), so it is ignored, as are NULL and non-counters. */
void rf_metric_add(rf_metric_t *m, const char *const *values, double v)
{
    if (!m || m->type != RF_METRIC_COUNTER || !(v >= 0))
        return;
    s_store(m, values, v, true);
}

/* No-op on NULL or a non-gauge. */
void rf_metric_set(rf_metric_t *m, const char *const *values, double v)
{
    if (!m || m->type != RF_METRIC_GAUGE)
        return;
    s_store(m, values, v, false);
}

/* No-op on NULL or a non-gauge. */
void rf_metric_gauge_add(rf_metric_t *m, const char *const *values, double v)
{
    if (!m || m->type != RF_METRIC_GAUGE)
        return;
    s_store(m, values, v, true);
}

/* No-op on NULL, a non-histogram or NaN (which would poison _sum for the
 * life of the process). Bucket bounds are inclusive (v <= le), as in
 * Prometheus. */
void rf_metric_observe(rf_metric_t *m, const char *const *values, double v)
{
    if (!m || m->type != RF_METRIC_HISTOGRAM || isnan(v))
        return;
    /* first bound >= v; nbounds if none (the +Inf bucket) */
    size_t lo = 0, hi = m->nbounds;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (m->bounds[mid] < v)
            lo = mid + 1;
        else
            hi = mid;
    }
    pthread_mutex_lock(&m->lock);
    s_series_t *s = s_series_get(m, values);
    if (s) {
        s->buckets[lo]++;
        s->count++;
        s->sum += v;
    }
    pthread_mutex_unlock(&m->lock);
}

/* For a histogram returns the series' observation count, the one number
 * tests usually want. Does not create the series. */
double rf_metric_value(rf_metric_t *m, const char *const *values)
{
    if (!m)
        return 0;
    const char *vals[RF_METRICS_MAX_LABELS];
    for (size_t i = 0; i < m->nlabels; i++)
        vals[i] = values && values[i] ? values[i] : "";
    uint32_t hash = s_hash(vals, m->nlabels);
    double v = 0;
    pthread_mutex_lock(&m->lock);
    for (s_series_t *s = m->table[hash & (S_TABLE_SIZE - 1)]; s; s = s->hnext) {
        if (s->hash != hash)
            continue;
        size_t i = 0;
        while (i < m->nlabels && strcmp(s->values[i], vals[i]) == 0)
            i++;
        if (i == m->nlabels) {
            v = m->type == RF_METRIC_HISTOGRAM ? (double)s->count : s->value;
            break;
        }
    }
    pthread_mutex_unlock(&m->lock);
    return v;
}

/* Silently ignores a NULL fn and registrations beyond the 8th: there is
 * no error channel in the signature, and a missing refresh is better than
 * a crash. */
void rf_metrics_on_collect(rf_metrics_t *self, rf_metrics_collect_fn *fn, void *arg)
{
    if (!self || !fn)
        return;
    pthread_mutex_lock(&self->lock);
    if (self->ncollectors < S_MAX_COLLECTORS)
        self->collectors[self->ncollectors++] = (s_collector_t){fn, arg};
    pthread_mutex_unlock(&self->lock);
}

/* ------------------------------------------------------------------------ */
/* Render */

/* Appends {k="v",...[,le="bound"]} (nothing when there are no labels). */
static void s_render_labels(s_buf_t *b, const rf_metric_t *m, const s_series_t *s, const char *le)
{
    if (m->nlabels == 0 && !le)
        return;
    s_buf_puts(b, "{");
    for (size_t i = 0; i < m->nlabels; i++) {
        s_buf_printf(b, "%s%s=\"", i ? "," : "", m->labels[i]);
        s_buf_escaped(b, s->values[i], true);
        s_buf_puts(b, "\"");
    }
    if (le)
        s_buf_printf(b, "%sle=\"%s\"", m->nlabels ? "," : "", le);
    s_buf_puts(b, "}");
}

/* Appends one family; caller holds m->lock. */
static void s_render_family(s_buf_t *b, const rf_metric_t *m)
{
    static const char *const types[] = {"counter", "gauge", "histogram"};
    s_buf_printf(b, "# HELP %s ", m->name);
    s_buf_escaped(b, m->help, false);
    s_buf_printf(b, "\n# TYPE %s %s\n", m->name, types[m->type]);

    for (size_t i = 0; i < m->nseries; i++) {
        const s_series_t *s = m->order[i];
        if (m->type != RF_METRIC_HISTOGRAM) {
            s_buf_puts(b, m->name);
            s_render_labels(b, m, s, NULL);
            s_buf_puts(b, " ");
            s_buf_double(b, s->value);
            s_buf_puts(b, "\n");
            continue;
        }
        uint64_t cumulative = 0;
        char le[64];
        for (size_t k = 0; k <= m->nbounds; k++) {
            cumulative += s->buckets[k];
            if (k < m->nbounds)
                s_format_double(le, sizeof le, m->bounds[k]);
            else
                snprintf(le, sizeof le, "+Inf");
            s_buf_printf(b, "%s_bucket", m->name);
            s_render_labels(b, m, s, le);
            s_buf_printf(b, " %" PRIu64 "\n", cumulative);
        }
        s_buf_printf(b, "%s_sum", m->name);
        s_render_labels(b, m, s, NULL);
        s_buf_puts(b, " ");
        s_buf_double(b, s->sum);
        s_buf_printf(b, "\n%s_count", m->name);
        s_render_labels(b, m, s, NULL);
        s_buf_printf(b, " %" PRIu64 "\n", s->count);
    }
}

static void s_process_collect(rf_metrics_t *self);

/* Also returns NULL for a NULL registry. Collectors run first, outside
 * the family-list lock, so they may update or declare families. */
char *rf_metrics_render(rf_metrics_t *self, size_t *len)
{
    if (len)
        *len = 0;
    if (!self)
        return NULL;
    s_buf_t b = {0};

    pthread_mutex_lock(&self->render_lock);
    /* Copy the table so collectors run without self->lock and may
     * declare or register. */
    pthread_mutex_lock(&self->lock);
    s_collector_t collectors[S_MAX_COLLECTORS];
    size_t ncollectors = self->ncollectors;
    memcpy(collectors, self->collectors, sizeof collectors);
    pthread_mutex_unlock(&self->lock);
    for (size_t i = 0; i < ncollectors; i++)
        collectors[i].fn(self, collectors[i].arg);
    if (self->proc_rss)
        s_process_collect(self);

    locale_t old = self->c_locale ? uselocale(self->c_locale) : (locale_t)0;
    s_buf_reserve(&b, 0); /* an empty registry still renders "" */
    pthread_mutex_lock(&self->lock);
    for (rf_metric_t *m = self->head; m; m = m->next) {
        pthread_mutex_lock(&m->lock);
        s_render_family(&b, m);
        pthread_mutex_unlock(&m->lock);
    }
    pthread_mutex_unlock(&self->lock);
    if (old)
        uselocale(old);
    pthread_mutex_unlock(&self->render_lock);

    if (b.failed) {
        free(b.data);
        return NULL;
    }
    if (len)
        *len = b.len;
    return b.data;
}

/* ------------------------------------------------------------------------ */
/* Process collector */

/* Reads a small /proc file into buf (NUL-terminated). Returns 0, or -1 if
 * it cannot be opened or read (e.g. no procfs in a minimal container). */
static int s_read_file(const char *path, char *buf, size_t size)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, size - 1, f);
    int rc = ferror(f) ? -1 : 0;
    fclose(f);
    buf[n] = '\0';
    return rc;
}

/* Parses /proc/self/stat. Returns 0 with utime+stime and starttime in
 * clock ticks, or -1. The comm field may itself contain spaces and ')',
 * so fields are counted from the last ')'. */
static int s_read_self_stat(unsigned long long *cpu_ticks, unsigned long long *start_ticks)
{
    char buf[1024];
    if (s_read_file("/proc/self/stat", buf, sizeof buf) != 0)
        return -1;
    char *p = strrchr(buf, ')');
    if (!p)
        return -1;
    unsigned long utime, stime;
    unsigned long long start;
    /* fields 3..22: state ppid pgrp session tty tpgid flags minflt cminflt
     * majflt cmajflt utime stime cutime cstime priority nice threads
     * itrealvalue starttime */
    if (sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu %*d %*d %*d %*d %*d %*d %llu", &utime,
               &stime, &start) != 3)
        return -1;
    *cpu_ticks = (unsigned long long)utime + stime;
    *start_ticks = start;
    return 0;
}

/* Returns the process start time in Unix seconds from the kernel's own
 * record (boot time + start ticks), so it is right even when the registry
 * is created long after exec; falls back to now. */
static double s_process_start_time(void)
{
    unsigned long long cpu, start;
    char buf[8192];
    long tck = sysconf(_SC_CLK_TCK);
    if (tck > 0 && s_read_self_stat(&cpu, &start) == 0 && s_read_file("/proc/stat", buf, sizeof buf) == 0) {
        const char *p = strstr(buf, "\nbtime ");
        unsigned long long btime;
        if (p && sscanf(p + 7, "%llu", &btime) == 1)
            return (double)btime + (double)start / (double)tck;
    }
    return (double)time(NULL);
}

/* Refreshes the process gauges; a value that cannot be read keeps its
 * previous value rather than dropping to 0. */
static void s_process_collect(rf_metrics_t *self)
{
    char buf[256];
    unsigned long size, resident;
    long page = sysconf(_SC_PAGESIZE);
    if (page > 0 && s_read_file("/proc/self/statm", buf, sizeof buf) == 0 &&
        sscanf(buf, "%lu %lu", &size, &resident) == 2)
        s_store(self->proc_rss, NULL, (double)resident * (double)page, false);

    unsigned long long cpu, start;
    long tck = sysconf(_SC_CLK_TCK);
    if (tck > 0 && s_read_self_stat(&cpu, &start) == 0)
        s_store(self->proc_cpu, NULL, (double)cpu / (double)tck, false);
}

/* Also returns -1 when the names are taken by the caller's own families
 * or on allocation failure; families already declared then stay (a
 * registry cannot undeclare) but are not refreshed. Must not be called
 * from a collector (it takes the render lock). */
int rf_metrics_add_process_collector(rf_metrics_t *self)
{
    if (!self)
        return -1;
    int rc = -1;
    /* Held throughout so two racing callers cannot both pass the check,
     * and because render reads the proc_* pointers under it. */
    pthread_mutex_lock(&self->render_lock);
    if (self->proc_rss)
        goto done;
    rf_metric_t *rss = rf_metrics_declare(self, RF_METRIC_GAUGE, "refract_process_resident_memory_bytes",
                                          "Resident memory size in bytes.", NULL, NULL, 0);
    rf_metric_t *start = rf_metrics_declare(self, RF_METRIC_GAUGE, "refract_process_start_time_seconds",
                                            "Start time of the process since unix epoch in seconds.", NULL, NULL, 0);
    /* A counter, not a gauge: CPU time only grows and the _total suffix
     * promises rate() semantics. */
    rf_metric_t *cpu = rf_metrics_declare(self, RF_METRIC_COUNTER, "refract_process_cpu_seconds_total",
                                          "Total user and system CPU time spent in seconds.", NULL, NULL, 0);
    if (!rss || !start || !cpu)
        goto done;
    /* Computed once: the start time cannot change. */
    s_store(start, NULL, s_process_start_time(), false);
    self->proc_start = start;
    self->proc_cpu = cpu;
    self->proc_rss = rss;
    rc = 0;
done:
    pthread_mutex_unlock(&self->render_lock);
    return rc;
}
