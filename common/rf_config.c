#include "rf_config.h"

#include <ctype.h>
#include <errno.h>
#include <fnmatch.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "rf_config_yaml.h"
#include "rf_log.h"
#include "rf_sgconf.h"

/* The loader walks libyaml's node graph with a table of known keys per
 * mapping; anything not in a table is an error pointing at its mark. */

typedef rf_cfgctx_t s_ctx_t;
typedef rf_cfg_key_fn s_key_fn;
typedef rf_cfg_key_t s_key_t;

static int s_fail(s_ctx_t *c, yaml_node_t *at, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Records the first error as "name:line:col: message". Always returns -1
 * so handlers can `return s_fail(...)`. */
static int s_vfail(s_ctx_t *c, yaml_node_t *at, const char *fmt, va_list ap)
{
    if (c->err != NULL)
        return -1;
    char msg[512];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    size_t line = at ? at->start_mark.line + 1 : 1, col = at ? at->start_mark.column + 1 : 1;
    if (asprintf(&c->err, "%s:%zu:%zu: %s", c->name, line, col, msg) < 0)
        c->err = NULL;
    return -1;
}

static int s_fail(s_ctx_t *c, yaml_node_t *at, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    s_vfail(c, at, fmt, ap);
    va_end(ap);
    return -1;
}

static const char *s_scalar(yaml_node_t *n)
{
    return (const char *)n->data.scalar.value;
}

static int s_want_scalar(s_ctx_t *c, yaml_node_t *n, const char *what)
{
    if (n->type != YAML_SCALAR_NODE)
        return s_fail(c, n, "%s must be a scalar", what);
    return 0;
}

static int s_want_map(s_ctx_t *c, yaml_node_t *n, const char *what)
{
    if (n->type != YAML_MAPPING_NODE)
        return s_fail(c, n, "%s must be a mapping", what);
    return 0;
}

/* Dispatches each pair of mapping `map` to its handler in `keys`; a key
 * not in the table, or given twice, is an error. */
static int s_walk(s_ctx_t *c, yaml_node_t *map, const s_key_t *keys, void *target, const char *section)
{
    if (s_want_map(c, map, section) < 0)
        return -1;
    unsigned long seen = 0;
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(&c->doc, p->key);
        yaml_node_t *v = yaml_document_get_node(&c->doc, p->value);
        if (k == NULL || v == NULL || k->type != YAML_SCALAR_NODE)
            return s_fail(c, k, "keys in %s must be scalars", section);
        size_t i = 0;
        for (; keys[i].key != NULL; i++)
            if (strcmp(keys[i].key, s_scalar(k)) == 0)
                break;
        if (keys[i].key == NULL)
            return s_fail(c, k, "unknown key '%s' in %s", s_scalar(k), section);
        if (seen & (1UL << i))
            return s_fail(c, k, "duplicate key '%s' in %s", s_scalar(k), section);
        seen |= 1UL << i;
        if (keys[i].fn(c, v, (char *)target + keys[i].offset) < 0)
            return s_fail(c, v, "invalid value for '%s' in %s", s_scalar(k), section);
    }
    return 0;
}

/* ---- the walking kit for sections parsed elsewhere (rf_config_yaml.h) ---- */

int rf_cfg_fail(rf_cfgctx_t *c, yaml_node_t *at, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    s_vfail(c, at, fmt, ap);
    va_end(ap);
    return -1;
}

int rf_cfg_walk(rf_cfgctx_t *c, yaml_node_t *map, const rf_cfg_key_t *keys, void *target, const char *section)
{
    return s_walk(c, map, keys, target, section);
}

yaml_node_t *rf_cfg_node(rf_cfgctx_t *c, int id)
{
    return yaml_document_get_node(&c->doc, id);
}

bool rf_cfg_is_null(yaml_node_t *v)
{
    if (v == NULL)
        return true;
    if (v->type != YAML_SCALAR_NODE || v->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    const char *t = (const char *)v->data.scalar.value;
    return *t == '\0' || strcmp(t, "null") == 0 || strcmp(t, "~") == 0 || strcmp(t, "Null") == 0 ||
           strcmp(t, "NULL") == 0;
}

/* ---- value parsers shared with callers ---------------------------------- */

int rf_size_parse(const char *text, size_t *out)
{
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (end == text || errno != 0 || !(v >= 0)) /* !(>=) also rejects NaN */
        return -1;
    while (*end == ' ')
        end++;
    double mul = 1;
    if (*end != '\0') {
        char u = (char)toupper((unsigned char)*end++);
        switch (u) {
        case 'B':
            mul = 1;
            end--;
            break;
        case 'K': mul = 1024.0; break;
        case 'M': mul = 1024.0 * 1024; break;
        case 'G': mul = 1024.0 * 1024 * 1024; break;
        case 'T': mul = 1024.0 * 1024 * 1024 * 1024; break;
        default: return -1;
        }
        if (*end == 'i')
            end++;
        if (*end == 'B' || *end == 'b')
            end++;
        if (*end != '\0')
            return -1;
    }
    double bytes = v * mul;
    if (bytes > (double)SIZE_MAX / 2)
        return -1;
    *out = (size_t)bytes;
    return 0;
}

int rf_duration_parse(const char *text, int *out_ms)
{
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (end == text || errno != 0 || !(v >= 0)) /* !(>=) also rejects NaN */
        return -1;
    double ms;
    if (*end == '\0' || strcmp(end, "s") == 0)
        ms = v * 1000;
    else if (strcmp(end, "ms") == 0)
        ms = v;
    else if (strcmp(end, "m") == 0)
        ms = v * 60000;
    else if (strcmp(end, "h") == 0)
        ms = v * 3600000;
    else
        return -1;
    if (ms > INT_MAX)
        return -1;
    *out_ms = (int)ms;
    return 0;
}

int rf_listen_parse(const char *text, rf_listen_t *out)
{
    const char *colon = strrchr(text, ':');
    const char *port_s = colon ? colon + 1 : text;
    char *end;
    errno = 0;
    long port = strtol(port_s, &end, 10);
    if (*port_s == '\0' || *end != '\0' || errno != 0 || port < 0 || port > 65535)
        return -1;
    size_t hlen = colon ? (size_t)(colon - text) : 0;
    const char *h = text;
    /* "[::1]:8080" */
    if (hlen >= 2 && h[0] == '[' && h[hlen - 1] == ']') {
        h++;
        hlen -= 2;
    }
    char *host = strndup(h, hlen);
    if (host == NULL)
        return -1;
    free(out->host);
    out->host = host;
    out->port = (int)port;
    return 0;
}

void rf_origin_clear(rf_origin_t *o)
{
    free(o->url);
    free(o->host);
    free(o->prefix);
    free(o->dir);
    free(o->tls.ca_file);
    free(o->tls.sni);
    free(o->tls.client_cert);
    free(o->tls.client_key);
    memset(o, 0, sizeof(*o));
}

int rf_origin_parse(const char *url, rf_origin_t *out, const char **why)
{
    rf_origin_t o = {0};
    if (strncmp(url, "file://", 7) == 0) {
        const char *dir = url + 7;
        if (dir[0] != '/') {
            *why = "file origin needs an absolute path (file:///dir)";
            return -1;
        }
        size_t n = strlen(dir);
        while (n > 1 && dir[n - 1] == '/')
            n--;
        o.kind = RF_ORIGIN_FILE;
        o.dir = strndup(dir, n);
    } else if (strncmp(url, "http://", 7) == 0 || strncmp(url, "https://", 8) == 0) {
        bool https = url[4] == 's';
        const char *h = url + (https ? 8 : 7);
        const char *slash = strchr(h, '/');
        size_t hp_len = slash ? (size_t)(slash - h) : strlen(h);
        char hp[300];
        if (hp_len == 0 || hp_len >= sizeof(hp)) {
            *why = "origin URL has no host";
            return -1;
        }
        memcpy(hp, h, hp_len);
        hp[hp_len] = '\0';
        o.kind = RF_ORIGIN_HTTP;
        o.https = https;
        o.port = https ? 443 : 80;
        o.tls.verify = https;
        char *colon = strrchr(hp, ':');
        if (colon != NULL && strchr(hp, ']') < colon) {
            char *end;
            long port = strtol(colon + 1, &end, 10);
            if (*end != '\0' || port <= 0 || port > 65535) {
                *why = "origin URL has a bad port";
                return -1;
            }
            o.port = (int)port;
            *colon = '\0';
        }
        char *host = hp;
        if (host[0] == '[') {
            size_t hl = strlen(host);
            if (hl < 2 || host[hl - 1] != ']') {
                *why = "origin URL has an unclosed '[' in its host";
                return -1;
            }
            host++;
            host[hl - 2] = '\0';
        }
        if (*host == '\0') {
            *why = "origin URL has no host";
            return -1;
        }
        o.host = strdup(host);
        size_t plen = slash ? strlen(slash) : 0;
        while (plen > 0 && slash[plen - 1] == '/')
            plen--;
        o.prefix = strndup(slash ? slash : "", plen);
    } else if (strncmp(url, "s3://", 5) == 0 || strncmp(url, "swift://", 8) == 0) {
        *why = "this origin scheme is not supported yet (http://, https:// and file:// are)";
        return -1;
    } else {
        *why = "origin must be http[s]://host[:port][/prefix] or file:///dir";
        return -1;
    }
    o.url = strdup(url);
    *out = o;
    return 0;
}

/* ---- typed key handlers --------------------------------------------------- */

static int s_str(s_ctx_t *c, yaml_node_t *v, void *t)
{
    if (s_want_scalar(c, v, "value") < 0)
        return -1;
    char **dst = t;
    free(*dst);
    *dst = strdup(s_scalar(v));
    return *dst ? 0 : -1;
}

static int s_int(s_ctx_t *c, yaml_node_t *v, void *t)
{
    if (s_want_scalar(c, v, "value") < 0)
        return -1;
    char *end;
    errno = 0;
    long n = strtol(s_scalar(v), &end, 10);
    if (*s_scalar(v) == '\0' || *end != '\0' || errno != 0 || n < 0 || n > INT_MAX)
        return s_fail(c, v, "expected a non-negative integer, got '%s'", s_scalar(v));
    *(int *)t = (int)n;
    return 0;
}

static int s_int64(s_ctx_t *c, yaml_node_t *v, void *t)
{
    if (s_want_scalar(c, v, "value") < 0)
        return -1;
    char *end;
    errno = 0;
    long long n = strtoll(s_scalar(v), &end, 10);
    if (*s_scalar(v) == '\0' || *end != '\0' || errno != 0 || n < 0)
        return s_fail(c, v, "expected a non-negative integer, got '%s'", s_scalar(v));
    *(int64_t *)t = n;
    return 0;
}

static int s_bool(s_ctx_t *c, yaml_node_t *v, void *t)
{
    if (s_want_scalar(c, v, "value") < 0)
        return -1;
    static const char *const yes[] = {"true", "yes", "on", "active", NULL};
    static const char *const no[] = {"false", "no", "off", "inactive", NULL};
    for (int i = 0; yes[i]; i++)
        if (strcasecmp(s_scalar(v), yes[i]) == 0)
            return *(bool *)t = true, 0;
    for (int i = 0; no[i]; i++)
        if (strcasecmp(s_scalar(v), no[i]) == 0)
            return *(bool *)t = false, 0;
    return s_fail(c, v, "expected true or false, got '%s'", s_scalar(v));
}

static int s_size(s_ctx_t *c, yaml_node_t *v, void *t)
{
    if (s_want_scalar(c, v, "value") < 0)
        return -1;
    if (rf_size_parse(s_scalar(v), t) < 0)
        return s_fail(c, v, "expected a size such as 10MB, got '%s'", s_scalar(v));
    return 0;
}

static int s_duration(s_ctx_t *c, yaml_node_t *v, void *t)
{
    if (s_want_scalar(c, v, "value") < 0)
        return -1;
    if (rf_duration_parse(s_scalar(v), t) < 0)
        return s_fail(c, v, "expected a duration such as 10s or 500ms, got '%s'", s_scalar(v));
    return 0;
}

static int s_listen(s_ctx_t *c, yaml_node_t *v, void *t)
{
    if (s_want_scalar(c, v, "value") < 0)
        return -1;
    if (rf_listen_parse(s_scalar(v), t) < 0)
        return s_fail(c, v, "expected a port or \"host:port\", got '%s'", s_scalar(v));
    return 0;
}

/* A scalar or a sequence of scalars, into a malloc'd char* array whose
 * count lives right after the pointer (char **list; size_t n). */
typedef struct {
    char **list;
    size_t n;
} s_strlist_t;

static int s_strlist(s_ctx_t *c, yaml_node_t *v, void *t)
{
    s_strlist_t *sl = t;
    if (v->type == YAML_SCALAR_NODE) {
        sl->list = calloc(1, sizeof(char *));
        if (sl->list == NULL || (sl->list[0] = strdup(s_scalar(v))) == NULL)
            return -1;
        sl->n = 1;
        return 0;
    }
    if (v->type != YAML_SEQUENCE_NODE)
        return s_fail(c, v, "expected a string or a list of strings");
    size_t n = (size_t)(v->data.sequence.items.top - v->data.sequence.items.start);
    sl->list = calloc(n ? n : 1, sizeof(char *));
    if (sl->list == NULL)
        return -1;
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *it = yaml_document_get_node(&c->doc, v->data.sequence.items.start[i]);
        if (it == NULL || it->type != YAML_SCALAR_NODE)
            return s_fail(c, it ? it : v, "list items must be strings");
        if ((sl->list[i] = strdup(s_scalar(it))) == NULL)
            return -1;
        sl->n = i + 1;
    }
    return 0;
}

static int s_loglevel(s_ctx_t *c, yaml_node_t *v, void *t)
{
    if (s_want_scalar(c, v, "value") < 0)
        return -1;
    int l = rf_log_level_parse(s_scalar(v));
    if (l < 0)
        return s_fail(c, v, "log level must be error, warn, info or debug");
    *(int *)t = l;
    return 0;
}

int rf_cfg_str(rf_cfgctx_t *c, yaml_node_t *v, void *t)
{
    return s_str(c, v, t);
}
int rf_cfg_int(rf_cfgctx_t *c, yaml_node_t *v, void *t)
{
    return s_int(c, v, t);
}
int rf_cfg_bool(rf_cfgctx_t *c, yaml_node_t *v, void *t)
{
    return s_bool(c, v, t);
}
int rf_cfg_size(rf_cfgctx_t *c, yaml_node_t *v, void *t)
{
    return s_size(c, v, t);
}
int rf_cfg_duration(rf_cfgctx_t *c, yaml_node_t *v, void *t)
{
    return s_duration(c, v, t);
}
int rf_cfg_listen(rf_cfgctx_t *c, yaml_node_t *v, void *t)
{
    return s_listen(c, v, t);
}
int rf_cfg_strlist(rf_cfgctx_t *c, yaml_node_t *v, void *t)
{
    return s_strlist(c, v, t);
}

/* ---- sections -------------------------------------------------------------- */

#define K(name, fn, type, field)                                                                                       \
    {                                                                                                                  \
        name, fn, offsetof(type, field)                                                                                \
    }

static int s_tls_version(s_ctx_t *c, yaml_node_t *v, void *t)
{
    if (s_want_scalar(c, v, "value") < 0)
        return -1;
    if (strcmp(s_scalar(v), "1.2") == 0)
        return *(int *)t = 0x0303, 0;
    if (strcmp(s_scalar(v), "1.3") == 0)
        return *(int *)t = 0x0304, 0;
    return s_fail(c, v, "min_version must be \"1.2\" or \"1.3\", got '%s'", s_scalar(v));
}

static int s_vhost_tls(s_ctx_t *c, yaml_node_t *v, void *t)
{
    static const s_key_t keys[] = {K("cert", s_str, rf_tls_cert_t, cert), K("key", s_str, rf_tls_cert_t, key), {0}};
    return s_walk(c, v, keys, t, "vhost tls");
}

/* ---- the schema of the singleton sections (rf_config.def) ------------------- */

typedef enum {
    K_LISTEN,
    K_STR,
    K_STRLIST,
    K_INT,
    K_INT64,
    K_BOOL,
    K_SIZE,
    K_DURATION,
    K_LOGLEVEL,
    K_TLSVERSION
} s_kind_t;

typedef struct {
    const char *path;
    s_kind_t kind;
    size_t offset; /* into rf_config_t */
    const char *def;
    long long min, max; /* min > max: no range */
    const char *type_doc, *def_doc, *doc;
} s_schema_t;

static const s_schema_t s_schema[] = {
#define RF_KEY(path, kind, field, def, min, max, type_doc, def_doc, doc)                                               \
    {path, K_##kind, offsetof(rf_config_t, field), def, min, max, type_doc, def_doc, doc},
#include "rf_config.def"
#undef RF_KEY
};
#define S_SCHEMA_N (sizeof(s_schema) / sizeof(s_schema[0]))

static s_key_fn *const s_kind_fn[] = {
    [K_LISTEN] = s_listen,     [K_STR] = s_str,
    [K_STRLIST] = s_strlist,   [K_INT] = s_int,
    [K_INT64] = s_int64,       [K_BOOL] = s_bool,
    [K_SIZE] = s_size,         [K_DURATION] = s_duration,
    [K_LOGLEVEL] = s_loglevel, [K_TLSVERSION] = s_tls_version,
};

/* The declared key at `path`, or NULL. */
static const s_schema_t *s_schema_find(const char *path)
{
    for (size_t i = 0; i < S_SCHEMA_N; i++)
        if (strcmp(s_schema[i].path, path) == 0)
            return &s_schema[i];
    return NULL;
}

/* Whether `path` names a mapping of the schema (a prefix of a key). */
static int s_schema_section(const char *path)
{
    size_t n = strlen(path);
    for (size_t i = 0; i < S_SCHEMA_N; i++)
        if (strncmp(s_schema[i].path, path, n) == 0 && s_schema[i].path[n] == '.')
            return 1;
    return 0;
}

/* A range bound as written in the file ("60s", "500ms", "10MB", "3"). */
static void s_bound(s_kind_t kind, long long v, char *buf, size_t len)
{
    if (kind == K_DURATION)
        snprintf(buf, len, v % 1000 == 0 ? "%llds" : "%lldms", v % 1000 == 0 ? v / 1000 : v);
    else
        snprintf(buf, len, "%lld", v);
}

/* The value of a numeric key in its unit, for the range check. */
static long long s_numeric(const s_schema_t *e, const void *t)
{
    switch (e->kind) {
    case K_INT:
    case K_DURATION: return *(const int *)t;
    case K_INT64: return (long long)*(const int64_t *)t;
    case K_SIZE: return (long long)*(const size_t *)t;
    default: return 0;
    }
}

/* Parses node v into the key's field and checks its range. 0 or -1. */
static int s_schema_set(s_ctx_t *c, yaml_node_t *v, const s_schema_t *e)
{
    void *t = (char *)c->cfg + e->offset;
    if (s_kind_fn[e->kind](c, v, t) < 0)
        return s_fail(c, v, "invalid value for %s", e->path);
    if (e->min <= e->max && (e->kind == K_INT || e->kind == K_INT64 || e->kind == K_SIZE || e->kind == K_DURATION)) {
        long long n = s_numeric(e, t);
        if (n < e->min || n > e->max) {
            char lo[32], hi[32];
            s_bound(e->kind, e->min, lo, sizeof(lo));
            s_bound(e->kind, e->max, hi, sizeof(hi));
            return s_fail(c, v, "%s must be between %s and %s", e->path, lo, hi);
        }
    }
    return 0;
}

/* Sets every declared default, through the same parsers as the file. */
static int s_schema_defaults(s_ctx_t *c)
{
    for (size_t i = 0; i < S_SCHEMA_N; i++) {
        if (s_schema[i].def == NULL)
            continue;
        yaml_node_t n;
        memset(&n, 0, sizeof(n));
        n.type = YAML_SCALAR_NODE;
        n.data.scalar.value = (yaml_char_t *)s_schema[i].def;
        n.data.scalar.length = strlen(s_schema[i].def);
        if (s_schema_set(c, &n, &s_schema[i]) < 0)
            return -1; /* a bad default in rf_config.def: caught by the unit tests */
    }
    return 0;
}

/* Walks mapping `map` at dotted `prefix` ("gateway", "gateway.origin"):
 * declared keys are parsed, declared sections recursed into, anything else
 * is an error, and so is a key given twice. */
static int s_schema_walk(s_ctx_t *c, yaml_node_t *map, const char *prefix)
{
    if (s_want_map(c, map, prefix) < 0)
        return -1;
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(&c->doc, p->key);
        yaml_node_t *v = yaml_document_get_node(&c->doc, p->value);
        if (k == NULL || v == NULL || k->type != YAML_SCALAR_NODE)
            return s_fail(c, k, "keys in %s must be scalars", prefix);
        for (yaml_node_pair_t *q = map->data.mapping.pairs.start; q < p; q++)
            if (strcmp(s_scalar(yaml_document_get_node(&c->doc, q->key)), s_scalar(k)) == 0)
                return s_fail(c, k, "duplicate key '%s' in %s", s_scalar(k), prefix);
        char path[160];
        if ((size_t)snprintf(path, sizeof(path), "%s.%s", prefix, s_scalar(k)) >= sizeof(path))
            return s_fail(c, k, "unknown key '%s' in %s", s_scalar(k), prefix);
        const s_schema_t *e = s_schema_find(path);
        int r = e != NULL                ? s_schema_set(c, v, e)
                : s_schema_section(path) ? s_schema_walk(c, v, path)
                                         : s_fail(c, k, "unknown key '%s' in %s", s_scalar(k), prefix);
        if (r < 0)
            return -1;
    }
    return 0;
}

/* The markdown table rows of one section, for docs/configuration.md. */
static void s_doc_rows(FILE *out, const char *section)
{
    size_t n = strlen(section);
    fprintf(out, "| key | type | default | meaning |\n|---|---|---|---|\n");
    for (size_t i = 0; i < S_SCHEMA_N; i++) {
        const s_schema_t *e = &s_schema[i];
        if (strncmp(e->path, section, n) != 0 || e->path[n] != '.')
            continue;
        fprintf(out, "| `%s` | %s | %s | %s |\n", e->path + n + 1, e->type_doc, e->def_doc, e->doc);
    }
}

void rf_config_write_reference(FILE *out, const char *section)
{
    s_doc_rows(out, section);
}

static void s_free_list(char **list, size_t n);

/* ---- the vhost cache mapping ---------------------------------------------- */

/* Seconds: "1800", "30s", "5m", "2h", "1d" into int64 seconds (up to ~68
 * years; TTLs longer than a duration's int milliseconds are common). */
static int s_secs(s_ctx_t *c, yaml_node_t *v, void *t)
{
    if (s_want_scalar(c, v, "value") < 0)
        return -1;
    const char *p = s_scalar(v);
    char *end;
    errno = 0;
    long long n = strtoll(p, &end, 10);
    long long mul = 1;
    if (*end == 's')
        end++;
    else if (*end == 'm')
        mul = 60, end++;
    else if (*end == 'h')
        mul = 3600, end++;
    else if (*end == 'd')
        mul = 86400, end++;
    if (*p == '\0' || *p == '-' || *end != '\0' || errno != 0 || n < 0 || n > (1LL << 31) / mul)
        return s_fail(c, v, "expected seconds such as 1800, 30s, 5m, 2h or 1d, got '%s'", p);
    *(int64_t *)t = n * mul;
    return 0;
}

static int s_percent(s_ctx_t *c, yaml_node_t *v, void *t)
{
    if (s_int(c, v, t) < 0)
        return -1;
    if (*(int *)t > 100)
        return s_fail(c, v, "a ratio is a percentage from 0 to 100, got '%s'", s_scalar(v));
    return 0;
}

static int s_ttl_rule(s_ctx_t *c, yaml_node_t *v, void *t)
{
    static const s_key_t keys[] = {K("value", s_secs, rf_ttl_rule_t, value),
                                   K("ratio", s_percent, rf_ttl_rule_t, ratio),
                                   K("max", s_secs, rf_ttl_rule_t, max),
                                   {0}};
    if (v->type == YAML_SCALAR_NODE) /* res2xx: 1800 */
        return s_secs(c, v, (char *)t + offsetof(rf_ttl_rule_t, value));
    return s_walk(c, v, keys, t, "ttl rule");
}

/* nocache carries max_age beside the rule (rf_ttl_conf_t.nocache_max_age). */
static int s_ttl_nocache(s_ctx_t *c, yaml_node_t *v, void *t)
{
    rf_ttl_conf_t *conf = (rf_ttl_conf_t *)((char *)t - offsetof(rf_ttl_conf_t, nocache));
    typedef struct {
        rf_ttl_rule_t r;
        int64_t max_age;
    } s_nc_t;
    static const s_key_t keys[] = {K("value", s_secs, s_nc_t, r.value),
                                   K("ratio", s_percent, s_nc_t, r.ratio),
                                   K("max", s_secs, s_nc_t, r.max),
                                   K("max_age", s_secs, s_nc_t, max_age),
                                   {0}};
    s_nc_t nc = {conf->nocache, conf->nocache_max_age};
    if (v->type == YAML_SCALAR_NODE) {
        if (s_secs(c, v, &nc.r.value) < 0)
            return -1;
    } else if (s_walk(c, v, keys, &nc, "ttl.nocache") < 0) {
        return -1;
    }
    conf->nocache = nc.r;
    conf->nocache_max_age = nc.max_age;
    return 0;
}

static int s_ttl(s_ctx_t *c, yaml_node_t *v, void *t)
{
    static const s_key_t keys[] = {
        K("res2xx", s_ttl_rule, rf_ttl_conf_t, res2xx), K("nocache", s_ttl_nocache, rf_ttl_conf_t, nocache),
        K("res3xx", s_secs, rf_ttl_conf_t, res3xx),     K("res4xx", s_secs, rf_ttl_conf_t, res4xx),
        K("res5xx", s_secs, rf_ttl_conf_t, res5xx),     {0}};
    return s_walk(c, v, keys, t, "cache.ttl");
}

/* cache.query: "all", "none", or a list of parameter names to keep. */
static int s_cache_query(s_ctx_t *c, yaml_node_t *v, void *t)
{
    rf_cache_conf_t *cc = (rf_cache_conf_t *)((char *)t - offsetof(rf_cache_conf_t, query));
    s_strlist_t sl = {NULL, 0};
    if (v->type == YAML_SCALAR_NODE) {
        if (strcmp(s_scalar(v), "all") == 0)
            cc->query = RF_QUERY_ALL;
        else if (strcmp(s_scalar(v), "none") == 0)
            cc->query = RF_QUERY_NONE;
        else
            return s_fail(c, v, "cache.query is all, none or a list of parameter names, got '%s'", s_scalar(v));
        s_free_list(cc->query_keep, cc->n_query_keep);
        cc->query_keep = NULL, cc->n_query_keep = 0;
        return 0;
    }
    if (s_strlist(c, v, &sl) < 0) {
        s_free_list(sl.list, sl.n);
        return -1;
    }
    s_free_list(cc->query_keep, cc->n_query_keep);
    cc->query = RF_QUERY_KEEP;
    cc->query_keep = sl.list;
    cc->n_query_keep = sl.n;
    return 0;
}

/* A deep copy of a cache mapping's owned parts (a vhost starts from the
 * defaults' section). 0 or -1. */
static int s_cache_copy(rf_cache_conf_t *dst, const rf_cache_conf_t *src)
{
    *dst = *src;
    dst->query_keep = NULL;
    dst->n_query_keep = 0;
    if (src->n_query_keep == 0)
        return 0;
    if ((dst->query_keep = calloc(src->n_query_keep, sizeof(char *))) == NULL)
        return -1;
    for (size_t i = 0; i < src->n_query_keep; i++) {
        if ((dst->query_keep[i] = strdup(src->query_keep[i])) == NULL)
            return -1;
        dst->n_query_keep = i + 1;
    }
    return 0;
}

/* A `cache` mapping onto *t, which holds the defaults (vhost_defaults'
 * section, or the built-in ones): keys given replace, others stay. */
static int s_cache(s_ctx_t *c, yaml_node_t *v, void *t)
{
    static const s_key_t keys[] = {K("enable", s_bool, rf_cache_conf_t, enable),
                                   K("memory_only", s_bool, rf_cache_conf_t, memory_only),
                                   K("sources", s_bool, rf_cache_conf_t, sources),
                                   K("override_origin", s_bool, rf_cache_conf_t, ttl.override_origin),
                                   K("heuristic", s_percent, rf_cache_conf_t, ttl.heuristic_percent),
                                   K("ttl_extension_4xx", s_bool, rf_cache_conf_t, ttl.extend_by_4xx),
                                   K("ttl_extension_5xx", s_bool, rf_cache_conf_t, ttl.extend_by_5xx),
                                   K("ttl_extension", s_secs, rf_cache_conf_t, ttl.origin_error_ttl),
                                   K("ttl", s_ttl, rf_cache_conf_t, ttl),
                                   K("query", s_cache_query, rf_cache_conf_t, query),
                                   {0}};
    return s_walk(c, v, keys, t, "cache");
}

static void s_cache_default(rf_cache_conf_t *c)
{
    memset(c, 0, sizeof(*c));
    c->enable = true;
    rf_ttl_conf_default(&c->ttl);
}

/* ---- the vhost compression mapping ---------------------------------------- */

static int s_ce_name(const char *t, size_t n)
{
    if (n == 4 && strncmp(t, "gzip", 4) == 0)
        return RF_CE_GZIP;
    if (n == 2 && strncmp(t, "br", 2) == 0)
        return RF_CE_BR;
    if (n == 2 && strncmp(t, "no", 2) == 0)
        return RF_CE_NONE;
    return -2;
}

static int s_compress_method(s_ctx_t *c, yaml_node_t *v, void *t)
{
    if (s_want_scalar(c, v, "value") < 0)
        return -1;
    int m = s_ce_name(s_scalar(v), strlen(s_scalar(v)));
    if (m != RF_CE_GZIP && m != RF_CE_BR)
        return s_fail(c, v, "compression method is gzip or br, got '%s'", s_scalar(v));
    *(rf_ce_t *)t = (rf_ce_t)m;
    return 0;
}

/* "2-2048" (KB) into min_size/max_size (bytes). */
static int s_compress_size(s_ctx_t *c, yaml_node_t *v, void *t)
{
    rf_compress_conf_t *cc = (rf_compress_conf_t *)((char *)t - offsetof(rf_compress_conf_t, min_size));
    if (s_want_scalar(c, v, "value") < 0)
        return -1;
    unsigned long lo, hi;
    char tail;
    /* At most 16 MB: a body is compressed whole, on an event-loop thread. */
    if (sscanf(s_scalar(v), "%lu-%lu%c", &lo, &hi, &tail) != 2 || lo > hi || hi > 16 * 1024)
        return s_fail(c, v, "source_size is \"MIN-MAX\" in KB such as 2-2048 (MAX at most 16384), got '%s'",
                      s_scalar(v));
    cc->min_size = lo * 1024;
    cc->max_size = hi * 1024;
    return 0;
}

/* One compression.txt line: "pattern[, method|no[, level]]". */
static int s_compress_rule(s_ctx_t *c, yaml_node_t *it, rf_compress_rule_t *r)
{
    const char *line = s_scalar(it);
    char *parts[3] = {NULL, NULL, NULL};
    int n = 0, rc = -1;
    for (const char *p = line; n < 3;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        while (len > 0 && (*p == ' ' || *p == '\t'))
            p++, len--;
        while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t'))
            len--;
        parts[n++] = strndup(p, len);
        if (comma == NULL)
            break;
        p = comma + 1;
        if (n == 3)
            goto bad;
    }
    if (parts[0] == NULL || parts[0][0] == '\0')
        goto bad;
    r->method = -1;
    r->level = -1;
    if (parts[1] != NULL && parts[1][0] != '\0' && (r->method = s_ce_name(parts[1], strlen(parts[1]))) == -2)
        goto bad;
    if (parts[2] != NULL && parts[2][0] != '\0') {
        char *end;
        long l = strtol(parts[2], &end, 10);
        if (*end != '\0' || l < 0 || l > 11)
            goto bad;
        r->level = (int)l;
    }
    r->pattern = parts[0];
    parts[0] = NULL;
    rc = 0;
bad:
    if (rc < 0)
        s_fail(c, it, "a compression rule is \"pattern[, gzip|br|no[, level]]\", got '%s'", line);
    free(parts[0]), free(parts[1]), free(parts[2]);
    return rc;
}

static int s_compress_rules(s_ctx_t *c, yaml_node_t *v, void *t)
{
    rf_compress_conf_t *cc = (rf_compress_conf_t *)((char *)t - offsetof(rf_compress_conf_t, rules));
    if (v->type != YAML_SEQUENCE_NODE)
        return s_fail(c, v, "compression.rules is a list of \"pattern, method, level\" lines");
    size_t n = (size_t)(v->data.sequence.items.top - v->data.sequence.items.start);
    if ((cc->rules = calloc(n ? n : 1, sizeof(*cc->rules))) == NULL)
        return -1;
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *it = yaml_document_get_node(&c->doc, v->data.sequence.items.start[i]);
        if (it == NULL || it->type != YAML_SCALAR_NODE)
            return s_fail(c, it ? it : v, "compression rules are strings");
        if (s_compress_rule(c, it, &cc->rules[i]) < 0)
            return -1;
        cc->n_rules = i + 1;
    }
    return 0;
}

static int s_compression(s_ctx_t *c, yaml_node_t *v, void *t)
{
    static const s_key_t keys[] = {K("status", s_bool, rf_compress_conf_t, enable),
                                   K("method", s_compress_method, rf_compress_conf_t, method),
                                   K("level", s_int, rf_compress_conf_t, level),
                                   K("source_size", s_compress_size, rf_compress_conf_t, min_size),
                                   K("rules", s_compress_rules, rf_compress_conf_t, rules),
                                   {0}};
    rf_compress_conf_t *cc = t;
    if (s_walk(c, v, keys, t, "compression") < 0)
        return -1;
    if (cc->level > (cc->method == RF_CE_BR ? 11 : 9) || (cc->method == RF_CE_GZIP && cc->level < 1))
        return s_fail(c, v, "compression level: gzip 1-9, br 0-11");
    return 0;
}

static void s_compression_clear(rf_compress_conf_t *cc)
{
    for (size_t i = 0; i < cc->n_rules; i++)
        free(cc->rules[i].pattern);
    free(cc->rules);
    cc->rules = NULL;
    cc->n_rules = 0;
}

/* ---- the content chain ------------------------------------------------------ */

bool rf_link_matches(const rf_link_conf_t *l, int status)
{
    for (size_t i = 0; l->vhost != NULL && i < l->n_when; i++)
        if (status >= l->when[i].lo && status <= l->when[i].hi)
            return true;
    return false;
}

/* "404, 5xx" into the link's status ranges. */
static int s_link_condition(s_ctx_t *c, yaml_node_t *v, void *t)
{
    rf_link_conf_t *l = (rf_link_conf_t *)((char *)t - offsetof(rf_link_conf_t, when));
    if (s_want_scalar(c, v, "value") < 0)
        return -1;
    const char *p = s_scalar(v);
    l->n_when = 0;
    while (*p) {
        while (*p == ' ' || *p == ',')
            p++;
        if (!*p)
            break;
        if (l->n_when == 16)
            return s_fail(c, v, "at most 16 link conditions");
        int d = p[0] - '0';
        if (d < 3 || d > 5)
            return s_fail(c, v, "link conditions are 3xx, 4xx or 5xx statuses, got '%s'", s_scalar(v));
        if ((p[1] == 'x' || p[1] == 'X') && (p[2] == 'x' || p[2] == 'X')) {
            l->when[l->n_when].lo = d * 100, l->when[l->n_when++].hi = d * 100 + 99;
            p += 3;
        } else if (p[1] >= '0' && p[1] <= '9' && p[2] >= '0' && p[2] <= '9') {
            int code = (p[0] - '0') * 100 + (p[1] - '0') * 10 + (p[2] - '0');
            l->when[l->n_when].lo = l->when[l->n_when].hi = code;
            l->n_when++;
            p += 3;
        } else {
            return s_fail(c, v, "a link condition is a status (404) or a class (5xx), got '%s'", s_scalar(v));
        }
        if (*p && *p != ',' && *p != ' ')
            return s_fail(c, v, "a link condition is a status (404) or a class (5xx), got '%s'", s_scalar(v));
    }
    if (l->n_when == 0)
        return s_fail(c, v, "link.condition names no status");
    return 0;
}

static int s_link(s_ctx_t *c, yaml_node_t *v, void *t)
{
    static const s_key_t keys[] = {
        K("vhost", s_str, rf_link_conf_t, vhost), K("condition", s_link_condition, rf_link_conf_t, when), {0}};
    rf_link_conf_t *l = t;
    if (s_walk(c, v, keys, t, "link") < 0)
        return -1;
    if (l->vhost == NULL || l->n_when == 0)
        return s_fail(c, v, "link needs vhost and condition");
    return 0;
}

void rf_s3ep_clear(rf_s3ep_t *e)
{
    free(e->name);
    free(e->endpoint);
    free(e->region);
    free(e->access_key);
    free(e->secret_key);
    free(e->bucket);
    memset(e, 0, sizeof(*e));
}

static void s_s3tier_clear(rf_s3tier_conf_t *t)
{
    free(t->s3);
    free(t->prefix);
    free(t->cdn_purge);
    free(t->events);
    rf_s3ep_clear(&t->ep);
}

static int s_dup_into(char **dst, const char *src)
{
    return src == NULL || (*dst = strdup(src)) != NULL ? 0 : -1;
}

int rf_s3ep_copy(rf_s3ep_t *dst, const rf_s3ep_t *src)
{
    memset(dst, 0, sizeof(*dst));
    dst->path_style = src->path_style;
    if (s_dup_into(&dst->name, src->name) < 0 || s_dup_into(&dst->endpoint, src->endpoint) < 0 ||
        s_dup_into(&dst->region, src->region) < 0 || s_dup_into(&dst->access_key, src->access_key) < 0 ||
        s_dup_into(&dst->secret_key, src->secret_key) < 0 || s_dup_into(&dst->bucket, src->bucket) < 0) {
        rf_s3ep_clear(dst);
        return -1;
    }
    return 0;
}

int rf_s3ep_parse_module(const char *text, const char *name, rf_s3ep_t *e, const char **why)
{
    memset(e, 0, sizeof(*e));
    e->path_style = true;
    *why = "out of memory";
    char *copy = strdup(text), *save = NULL;
    if (copy == NULL || (e->name = strdup(name)) == NULL)
        goto fail;
    for (char *kv = strtok_r(copy, ";", &save); kv != NULL; kv = strtok_r(NULL, ";", &save)) {
        char *eq = strchr(kv, '=');
        char *k = kv, *v = eq ? eq + 1 : NULL;
        while (*k == ' ' || *k == '\t' || *k == '\n')
            k++;
        if (*k == '\0')
            continue;
        if (eq == NULL) {
            *why = "each part is key=value";
            goto fail;
        }
        char *ke = eq;
        while (ke > k && (ke[-1] == ' ' || ke[-1] == '\t'))
            ke--;
        *ke = '\0';
        while (*v == ' ' || *v == '\t')
            v++;
        size_t vl = strlen(v);
        while (vl > 0 && (v[vl - 1] == ' ' || v[vl - 1] == '\t' || v[vl - 1] == '\n'))
            v[--vl] = '\0';
        char **slot = strcmp(k, "aws_access_key") == 0   ? &e->access_key
                      : strcmp(k, "aws_secret_key") == 0 ? &e->secret_key
                      : strcmp(k, "bucket") == 0         ? &e->bucket
                      : strcmp(k, "s3_url") == 0         ? &e->endpoint
                      : strcmp(k, "region") == 0         ? &e->region
                                                         : NULL;
        if (slot == NULL && strcmp(k, "path_style") == 0) {
            e->path_style = strcmp(v, "false") != 0 && strcmp(v, "off") != 0 && strcmp(v, "0") != 0;
            continue;
        }
        if (slot == NULL) {
            *why = "unknown key (aws_access_key, aws_secret_key, bucket, s3_url, region, path_style)";
            goto fail;
        }
        free(*slot);
        if ((*slot = strdup(v)) == NULL)
            goto fail;
    }
    if (e->bucket == NULL || e->endpoint == NULL) {
        *why = "needs bucket and s3_url";
        goto fail;
    }
    if (strncmp(e->endpoint, "http://", 7) != 0 && strncmp(e->endpoint, "https://", 8) != 0) {
        *why = "s3_url must start with http:// or https://";
        goto fail;
    }
    if ((e->access_key == NULL) != (e->secret_key == NULL)) {
        *why = "aws_access_key and aws_secret_key go together";
        goto fail;
    }
    if (e->region == NULL && (e->region = strdup("ap-northeast-2")) == NULL)
        goto fail;
    free(copy);
    return 0;
fail:
    free(copy);
    rf_s3ep_clear(e);
    return -1;
}

/* Each vhost's storage and backup get their own endpoint: a copy of the
 * storgate.aws_s3 entry they name, or the module string parsed. Run once
 * the whole file is read (storgate may come after the vhosts). */
static int s_tier_resolve(s_ctx_t *c, yaml_node_t *at, rf_vhost_conf_t *v, rf_s3tier_conf_t *t, const char *what)
{
    if (t->s3 == NULL)
        return 0;
    const char *why = NULL;
    if (strchr(t->s3, '=') != NULL) {
        if (rf_s3ep_parse_module(t->s3, what, &t->ep, &why) < 0)
            return s_fail(c, at, "vhost '%s': %s: %s", v->name, what, why);
    } else {
        const rf_sg_conf_t *sg = c->cfg->storgate;
        size_t i = 0;
        while (sg != NULL && i < sg->n_aws_s3 && strcmp(sg->aws_s3[i].name, t->s3) != 0)
            i++;
        if (sg == NULL || i == sg->n_aws_s3)
            return s_fail(c, at, "vhost '%s': %s.s3 '%s' is not an endpoint of storgate.aws_s3", v->name, what, t->s3);
        if (rf_s3ep_copy(&t->ep, &sg->aws_s3[i]) < 0)
            return s_fail(c, at, "out of memory");
    }
    if (t->prefix == NULL && asprintf(&t->prefix, "%s", strcmp(what, "storage") == 0 ? v->name : "") < 0) {
        t->prefix = NULL;
        return s_fail(c, at, "out of memory");
    }
    if (strcmp(what, "storage") == 0 && t->prefix[0] != '\0' && t->prefix[strlen(t->prefix) - 1] != '/') {
        char *p = NULL;
        if (asprintf(&p, "%s/", t->prefix) < 0)
            return s_fail(c, at, "out of memory");
        free(t->prefix);
        t->prefix = p;
    }
    return 0;
}

/* Each S3-backed storgate mount gets a local staging directory for its
 * multipart uploads' parts, STATE/s3-uploads/BUCKET/MOUNT (rf_sgfs.c;
 * made when first used). Under the scheduler's state_dir because that is
 * the one directory every node is configured to keep. */
static int s_sg_stage_dirs(s_ctx_t *c, yaml_node_t *at)
{
    rf_sg_conf_t *sc = c->cfg->storgate;
    const char *state = c->cfg->storgate_scheduler.state_dir;
    for (size_t i = 0; sc != NULL && state != NULL && i < sc->n_buckets; i++) {
        rf_sg_bucket_t *b = &sc->buckets[i];
        for (size_t m = 0; m < b->n_mounts; m++) {
            rf_sg_mount_t *mt = &b->mounts[m];
            if (mt->kind != RF_SG_MOUNT_S3)
                continue;
            free(mt->dir);
            if (asprintf(&mt->dir, "%s/s3-uploads/%s/%zu", state, b->name, m) < 0) {
                mt->dir = NULL;
                return s_fail(c, at, "out of memory");
            }
        }
    }
    return 0;
}

static int s_tiers_resolve(s_ctx_t *c, yaml_node_t *at)
{
    for (size_t i = 0; i < c->cfg->n_vhosts; i++) {
        rf_vhost_conf_t *v = &c->cfg->vhosts[i];
        if (s_tier_resolve(c, at, v, &v->storage, "storage") < 0 || s_tier_resolve(c, at, v, &v->backup, "backup") < 0)
            return -1;
        if (v->backup.cdn_purge != NULL)
            return s_fail(c, at, "vhost '%s': cdn_purge belongs to storage, not backup", v->name);
        if ((v->storage.s3 != NULL || v->backup.s3 != NULL) && !v->cache.enable)
            return s_fail(c, at, "vhost '%s': storage and backup work through the cache (cache.enable)", v->name);
    }
    return 0;
}

/* Every link names another http(s) vhost and no chain comes back to where
 * it started (checked once all vhosts are known). */
static int s_links_check(s_ctx_t *c, yaml_node_t *seq)
{
    rf_config_t *cfg = c->cfg;
    for (size_t i = 0; i < cfg->n_vhosts; i++) {
        const rf_vhost_conf_t *v = &cfg->vhosts[i];
        if (v->link.vhost == NULL)
            continue;
        yaml_node_t *at = yaml_document_get_node(&c->doc, seq->data.sequence.items.start[i]);
        if (v->origin.kind != RF_ORIGIN_HTTP)
            return s_fail(c, at, "vhost '%s': link needs an http(s) origin (a file origin is never cached)", v->name);
        size_t cur = i;
        for (size_t hops = 0;; hops++) {
            const char *to = cfg->vhosts[cur].link.vhost;
            if (to == NULL)
                break;
            size_t j = 0;
            while (j < cfg->n_vhosts && strcasecmp(cfg->vhosts[j].name, to) != 0)
                j++;
            if (j == cfg->n_vhosts)
                return s_fail(c, at, "vhost '%s': link to '%s', which is not a vhost", cfg->vhosts[cur].name, to);
            if (cfg->vhosts[j].origin.kind != RF_ORIGIN_HTTP)
                return s_fail(c, at, "vhost '%s': link target '%s' must have an http(s) origin", cfg->vhosts[cur].name,
                              to);
            if (j == i || hops > cfg->n_vhosts)
                return s_fail(c, at, "vhost '%s': content chain loop (it leads back to itself)", v->name);
            cur = j;
        }
    }
    return 0;
}

/* ---- bypass ------------------------------------------------------------------- */

bool rf_bypass_matches(const rf_bypass_conf_t *b, const char *path)
{
    for (size_t i = 0; i < b->n_rules; i++)
        if (fnmatch(b->rules[i].pattern, path, 0) == 0)
            return !b->rules[i].cache;
    return b->get;
}

static int s_bypass_rules(s_ctx_t *c, yaml_node_t *v, void *t)
{
    rf_bypass_conf_t *b = (rf_bypass_conf_t *)((char *)t - offsetof(rf_bypass_conf_t, rules));
    if (v->type != YAML_SEQUENCE_NODE)
        return s_fail(c, v, "bypass.rules is a list of \"pattern[, cache]\" lines");
    size_t n = (size_t)(v->data.sequence.items.top - v->data.sequence.items.start);
    if ((b->rules = calloc(n ? n : 1, sizeof(*b->rules))) == NULL)
        return -1;
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *it = yaml_document_get_node(&c->doc, v->data.sequence.items.start[i]);
        if (it == NULL || it->type != YAML_SCALAR_NODE)
            return s_fail(c, it ? it : v, "bypass rules are strings");
        const char *line = s_scalar(it), *comma = strchr(line, ',');
        size_t pl = comma ? (size_t)(comma - line) : strlen(line);
        while (pl > 0 && line[pl - 1] == ' ')
            pl--;
        const char *word = comma ? comma + 1 : "";
        while (*word == ' ')
            word++;
        size_t wl = strlen(word);
        while (wl > 0 && (word[wl - 1] == ' ' || word[wl - 1] == '\t'))
            wl--;
        bool is_cache = wl == 5 && strncmp(word, "cache", 5) == 0,
             is_bypass = wl == 6 && strncmp(word, "bypass", 6) == 0;
        if (pl == 0 || (wl > 0 && !is_cache && !is_bypass))
            return s_fail(c, it, "a bypass rule is \"pattern[, cache|bypass]\", got '%s'", line);
        if ((b->rules[i].pattern = strndup(line, pl)) == NULL)
            return -1;
        b->rules[i].cache = is_cache;
        b->n_rules = i + 1;
    }
    return 0;
}

/* post: POST is never cached, so only `on` (the seed's setting) is valid. */
static int s_bypass_post(s_ctx_t *c, yaml_node_t *v, void *t)
{
    bool on = true;
    (void)t;
    if (s_bool(c, v, &on) < 0)
        return -1;
    if (!on)
        return s_fail(c, v, "bypass.post: POST requests always go to the origin; only `on` is valid");
    return 0;
}

static int s_bypass(s_ctx_t *c, yaml_node_t *v, void *t)
{
    static const s_key_t keys[] = {K("get", s_bool, rf_bypass_conf_t, get),
                                   K("post", s_bypass_post, rf_bypass_conf_t, get),
                                   K("rules", s_bypass_rules, rf_bypass_conf_t, rules),
                                   {0}};
    return s_walk(c, v, keys, t, "bypass");
}

/* ---- url_rewrite ------------------------------------------------------------ */

static int s_rewrite_log(s_ctx_t *c, yaml_node_t *v, void *t)
{
    if (s_want_scalar(c, v, "value") < 0)
        return -1;
    if (strcmp(s_scalar(v), "replace") == 0)
        *(bool *)t = true;
    else if (strcmp(s_scalar(v), "original") == 0)
        *(bool *)t = false;
    else
        return s_fail(c, v, "access_log is replace or original, got '%s'", s_scalar(v));
    return 0;
}

static int s_rewrites(s_ctx_t *c, yaml_node_t *seq)
{
    static const s_key_t keys[] = {K("pattern", s_str, rf_rewrite_t, pattern),
                                   K("replace", s_str, rf_rewrite_t, replace),
                                   K("access_log", s_rewrite_log, rf_rewrite_t, log_replaced),
                                   {0}};
    rf_config_t *cfg = c->cfg;
    if (seq->type != YAML_SEQUENCE_NODE)
        return s_fail(c, seq, "url_rewrite is a list of {pattern, replace, access_log}");
    size_t n = (size_t)(seq->data.sequence.items.top - seq->data.sequence.items.start);
    if ((cfg->rewrites = calloc(n ? n : 1, sizeof(*cfg->rewrites))) == NULL)
        return s_fail(c, seq, "out of memory");
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *it = yaml_document_get_node(&c->doc, seq->data.sequence.items.start[i]);
        cfg->n_rewrites = i + 1;
        if (s_walk(c, it, keys, &cfg->rewrites[i], "url_rewrite") < 0)
            return -1;
        const rf_rewrite_t *r = &cfg->rewrites[i];
        if (r->pattern == NULL || r->replace == NULL || r->pattern[0] == '\0')
            return s_fail(c, it, "a url_rewrite rule needs pattern and replace");
        if (strchr(r->replace, '/') == NULL || r->replace[0] == '/')
            return s_fail(c, it, "url_rewrite replace is \"host/path\", got '%s'", r->replace);
    }
    return 0;
}

/* A vhost as parsed, before defaults are applied: `set` flags record which
 * dims keys were given so vhost_defaults only fill the rest. */
typedef struct {
    rf_vhost_conf_t v;
    char *origin_url;
    s_strlist_t more_urls;      /* origin as a list: the rest */
    rf_origin_tls_t origin_tls; /* moved into v.origin.tls once the origin is parsed */
    bool has_origin_tls;
    struct {
        int active, keyword, max_source_size;
    } set;
    yaml_node_t *at;
} s_vhost_t;

typedef struct {
    bool active;
    char *keyword;
    size_t max_source_size;
    struct {
        rf_preset_t *list;
        size_t n;
        bool given;
    } presets;
    struct {
        rf_byorig_t *list;
        size_t n;
        bool given;
    } byorig;
    struct {
        rf_sign_conf_t conf;
        bool given;
    } signing;
    struct {
        s_strlist_t hosts;
        bool private_ok;
        rf_named_source_t *named;
        size_t n_named;
        bool given;
    } sources;
} s_dims_raw_t;

static int s_dims_name(s_ctx_t *c, yaml_node_t *k, const char *what);

static void s_named_free(rf_named_source_t *n, size_t count)
{
    for (size_t i = 0; i < count; i++)
        rf_origin_clear(&n[i].origin);
    free(n);
}

/* dims.sources.hosts: fnmatch patterns of host[:port]. */
static int s_source_hosts(s_ctx_t *c, yaml_node_t *v, void *t)
{
    s_strlist_t *hosts = t;
    s_free_list(hosts->list, hosts->n);
    *hosts = (s_strlist_t){0};
    if (s_strlist(c, v, hosts) < 0)
        return -1;
    for (size_t i = 0; i < hosts->n; i++)
        if (hosts->list[i][0] == '\0' || strpbrk(hosts->list[i], "/@ ") != NULL)
            return s_fail(c, v, "dims.sources.hosts: '%s' is not a host name pattern", hosts->list[i]);
    return 0;
}

/* dims.sources.named: {NAME: URL, ...} (http or https). */
static int s_source_named(s_ctx_t *c, yaml_node_t *v, void *t)
{
    __typeof__(((s_dims_raw_t *)0)->sources) *out =
        (void *)((char *)t - offsetof(__typeof__(((s_dims_raw_t *)0)->sources), named));
    if (s_want_map(c, v, "dims.sources.named") < 0)
        return -1;
    size_t n = (size_t)(v->data.mapping.pairs.top - v->data.mapping.pairs.start);
    s_named_free(out->named, out->n_named);
    out->n_named = 0;
    if ((out->named = calloc(n ? n : 1, sizeof(*out->named))) == NULL)
        return s_fail(c, v, "out of memory");
    for (yaml_node_pair_t *q = v->data.mapping.pairs.start; q < v->data.mapping.pairs.top; q++) {
        yaml_node_t *nk = yaml_document_get_node(&c->doc, q->key), *nv = yaml_document_get_node(&c->doc, q->value);
        if (s_dims_name(c, nk, "named source") < 0 || s_want_scalar(c, nv, "a named source's URL") < 0)
            return -1;
        if (strcmp(s_scalar(nk), "http:") == 0 || strcmp(s_scalar(nk), "https:") == 0)
            return s_fail(c, nk, "a named source cannot be called '%s'", s_scalar(nk));
        rf_named_source_t *ns = &out->named[out->n_named];
        const char *why = NULL;
        if (rf_origin_parse(s_scalar(nv), &ns->origin, &why) < 0 || ns->origin.kind != RF_ORIGIN_HTTP) {
            rf_origin_clear(&ns->origin);
            return s_fail(c, nv, "named source '%s': %s", s_scalar(nk), why ? why : "must be http:// or https://");
        }
        snprintf(ns->name, sizeof(ns->name), "%s", s_scalar(nk));
        out->n_named++;
    }
    return 0;
}

/* dims.sources: {hosts: [PATTERN, ...], private: bool, named: {NAME: URL}}. */
static int s_dims_sources(s_ctx_t *c, yaml_node_t *v, void *t)
{
    typedef __typeof__(((s_dims_raw_t *)0)->sources) s_sources_t;
    static const s_key_t keys[] = {K("hosts", s_source_hosts, s_sources_t, hosts),
                                   K("private", s_bool, s_sources_t, private_ok),
                                   K("named", s_source_named, s_sources_t, named),
                                   {0}};
    s_sources_t *out = t;
    out->given = true;
    return s_walk(c, v, keys, out, "dims.sources");
}

static void s_signing_free(rf_sign_conf_t *sc)
{
    for (size_t i = 0; i < sc->n_keys; i++)
        free(sc->keys[i].secret);
    memset(sc, 0, sizeof(*sc));
}

typedef struct {
    bool required;
    bool required_given;
} s_signing_raw_t;

/* dims.signing.keys: {ID: SECRET, ...} into the rf_sign_conf_t. */
static int s_signing_keys(s_ctx_t *c, yaml_node_t *v, void *t)
{
    rf_sign_conf_t *sc = t;
    if (s_want_map(c, v, "dims.signing.keys") < 0)
        return -1;
    for (yaml_node_pair_t *q = v->data.mapping.pairs.start; q < v->data.mapping.pairs.top; q++) {
        yaml_node_t *ik = yaml_document_get_node(&c->doc, q->key), *iv = yaml_document_get_node(&c->doc, q->value);
        const char *id = ik->type == YAML_SCALAR_NODE ? s_scalar(ik) : "";
        size_t il = strlen(id);
        if (il == 0 || il >= RF_SIGN_ID_MAX ||
            strspn(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != il)
            return s_fail(c, ik, "a signing key id is 1..%d of A-Z a-z 0-9 . _ -, got '%s'", RF_SIGN_ID_MAX - 1, id);
        if (s_want_scalar(c, iv, "a signing secret") < 0)
            return -1;
        if (strlen(s_scalar(iv)) < 16)
            return s_fail(c, iv, "signing key '%s': the secret must have at least 16 characters", id);
        if (sc->n_keys == RF_SIGN_MAX_KEYS)
            return s_fail(c, ik, "at most %d signing keys", RF_SIGN_MAX_KEYS);
        for (size_t i = 0; i < sc->n_keys; i++)
            if (strcmp(sc->keys[i].id, id) == 0)
                return s_fail(c, ik, "duplicate signing key id '%s'", id);
        rf_sign_key_t *key_out = &sc->keys[sc->n_keys];
        snprintf(key_out->id, sizeof(key_out->id), "%s", id);
        if ((key_out->secret = strdup(s_scalar(iv))) == NULL)
            return s_fail(c, iv, "out of memory");
        sc->n_keys++;
    }
    return 0;
}

/* dims.signing: {keys: {ID: SECRET, ...}, required: bool}. */
static int s_dims_signing(s_ctx_t *c, yaml_node_t *v, void *t)
{
    static const s_key_t keys[] = {
        K("keys", s_signing_keys, rf_sign_conf_t, keys), K("required", s_bool, rf_sign_conf_t, required), {0}};
    __typeof__(((s_dims_raw_t *)0)->signing) *out = t;
    s_signing_free(&out->conf);
    out->given = true;
    out->conf.required = true;
    if (s_walk(c, v, keys, &out->conf, "dims.signing") < 0)
        return -1;
    if (out->conf.n_keys == 0)
        return s_fail(c, v, "dims.signing needs keys: {ID: SECRET}");
    return 0;
}

rf_chain_ctx_t rf_dims_ctx(const rf_dims_conf_t *d)
{
    return (rf_chain_ctx_t){
        .presets = d->presets, .n_presets = d->n_presets, .byorig = d->byorig, .n_byorig = d->n_byorig};
}

static void s_presets_free(rf_preset_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free((char *)p[i].name);
        free((char *)p[i].chain);
    }
    free(p);
}

/* A preset or rule-set name: it stands in a URL segment. */
static int s_dims_name(s_ctx_t *c, yaml_node_t *k, const char *what)
{
    const char *n = k->type == YAML_SCALAR_NODE ? s_scalar(k) : "";
    size_t len = strlen(n);
    if (len == 0 || len >= RF_CHAIN_NAME_MAX ||
        strspn(n, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != len)
        return s_fail(c, k, "%s name must be 1..%d of A-Z a-z 0-9 . _ -, got '%s'", what, RF_CHAIN_NAME_MAX - 1, n);
    if (strcmp(n, "src") == 0) /* it separates a chain from its source in /KEYWORD/CHAIN/src/SOURCE */
        return s_fail(c, k, "%s name cannot be 'src'", what);
    return 0;
}

/* Checks a chain written in the config (no presets or rule sets inside). */
static int s_dims_chain_ok(s_ctx_t *c, yaml_node_t *v, const char *text, const char *what, const char *name)
{
    rf_chain_t chain;
    char why[512];
    if (rf_chain_parse(text, strlen(text), NULL, &chain, why, sizeof(why)) < 0)
        return s_fail(c, v, "dims %s '%s': %s", what, name, why);
    return 0;
}

/* dims.presets: {NAME: "chain", ...} */
static int s_dims_presets(s_ctx_t *c, yaml_node_t *v, void *t)
{
    __typeof__(((s_dims_raw_t *)0)->presets) *out = t;
    if (s_want_map(c, v, "dims.presets") < 0)
        return -1;
    size_t n = (size_t)(v->data.mapping.pairs.top - v->data.mapping.pairs.start);
    s_presets_free(out->list, out->n);
    out->list = calloc(n ? n : 1, sizeof(*out->list));
    out->n = 0;
    out->given = true;
    if (out->list == NULL)
        return s_fail(c, v, "out of memory");
    for (yaml_node_pair_t *p = v->data.mapping.pairs.start; p < v->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(&c->doc, p->key), *val = yaml_document_get_node(&c->doc, p->value);
        if (s_dims_name(c, k, "preset") < 0 || s_want_scalar(c, val, "a preset's chain") < 0)
            return -1;
        for (size_t i = 0; i < out->n; i++)
            if (strcmp(out->list[i].name, s_scalar(k)) == 0)
                return s_fail(c, k, "duplicate preset '%s'", s_scalar(k));
        if (s_dims_chain_ok(c, val, s_scalar(val), "preset", s_scalar(k)) < 0)
            return -1;
        rf_preset_t *pr = &out->list[out->n];
        pr->name = strdup(s_scalar(k));
        pr->chain = strdup(s_scalar(val));
        out->n++;
        if (pr->name == NULL || pr->chain == NULL)
            return s_fail(c, v, "out of memory");
    }
    return 0;
}

typedef struct {
    int width, height;
    size_t bytes;
    char *format, *chain;
} s_rule_raw_t;

/* One rule of a byoriginal set into *r. 0 or -1. */
static int s_byorig_rule(s_ctx_t *c, yaml_node_t *v, const char *set, rf_byorig_rule_t *r)
{
    static const s_key_t keys[] = {K("width", s_int, s_rule_raw_t, width),  K("height", s_int, s_rule_raw_t, height),
                                   K("bytes", s_size, s_rule_raw_t, bytes), K("format", s_str, s_rule_raw_t, format),
                                   K("chain", s_str, s_rule_raw_t, chain),  {0}};
    s_rule_raw_t raw = {0};
    int rc = -1;
    if (s_walk(c, v, keys, &raw, "a byoriginal rule") < 0)
        goto done;
    if (raw.chain == NULL) {
        s_fail(c, v, "dims byoriginal '%s': every rule needs a chain", set);
        goto done;
    }
    if (strlen(raw.chain) >= sizeof(r->chain)) {
        s_fail(c, v, "dims byoriginal '%s': a chain longer than %zu bytes", set, sizeof(r->chain) - 1);
        goto done;
    }
    if (s_dims_chain_ok(c, v, raw.chain, "byoriginal", set) < 0)
        goto done;
    r->format = RF_FMT_KEEP;
    if (raw.format != NULL) {
        r->format = rf_format_parse(raw.format);
        if (r->format == RF_FMT_KEEP || r->format == RF_FMT_AUTO) {
            s_fail(c, v, "dims byoriginal '%s': format is jpeg, png, webp, avif or gif, got '%s'", set, raw.format);
            goto done;
        }
    }
    r->max_width = raw.width;
    r->max_height = raw.height;
    r->max_bytes = (int64_t)raw.bytes;
    snprintf(r->chain, sizeof(r->chain), "%s", raw.chain);
    rc = 0;
done:
    free(raw.format);
    free(raw.chain);
    return rc;
}

/* dims.byoriginal: {NAME: [{width, height, bytes, format, chain}, ...], ...} */
static int s_dims_byorig(s_ctx_t *c, yaml_node_t *v, void *t)
{
    __typeof__(((s_dims_raw_t *)0)->byorig) *out = t;
    if (s_want_map(c, v, "dims.byoriginal") < 0)
        return -1;
    size_t n = (size_t)(v->data.mapping.pairs.top - v->data.mapping.pairs.start);
    free(out->list);
    out->list = calloc(n ? n : 1, sizeof(*out->list));
    out->n = 0;
    out->given = true;
    if (out->list == NULL)
        return s_fail(c, v, "out of memory");
    for (yaml_node_pair_t *p = v->data.mapping.pairs.start; p < v->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(&c->doc, p->key), *seq = yaml_document_get_node(&c->doc, p->value);
        if (s_dims_name(c, k, "byoriginal") < 0)
            return -1;
        for (size_t i = 0; i < out->n; i++)
            if (strcmp(out->list[i].name, s_scalar(k)) == 0)
                return s_fail(c, k, "duplicate byoriginal '%s'", s_scalar(k));
        size_t nr = seq->type == YAML_SEQUENCE_NODE
                        ? (size_t)(seq->data.sequence.items.top - seq->data.sequence.items.start)
                        : 0;
        if (nr == 0 || nr > RF_BYORIG_MAX_RULES)
            return s_fail(c, seq, "dims byoriginal '%s' is a list of 1..%d rules", s_scalar(k), RF_BYORIG_MAX_RULES);
        rf_byorig_t *b = &out->list[out->n++];
        snprintf(b->name, sizeof(b->name), "%s", s_scalar(k));
        for (size_t i = 0; i < nr; i++) {
            yaml_node_t *it = yaml_document_get_node(&c->doc, seq->data.sequence.items.start[i]);
            if (s_byorig_rule(c, it, b->name, &b->rules[i]) < 0)
                return -1;
            b->n = i + 1;
        }
    }
    return 0;
}

/* Deep copies of the lists (vhost_defaults' go into every vhost). 0 or -1. */
static int s_dims_lists_copy(rf_dims_conf_t *d)
{
    rf_preset_t *p = d->n_presets ? calloc(d->n_presets, sizeof(*p)) : NULL;
    rf_byorig_t *b = d->n_byorig ? malloc(d->n_byorig * sizeof(*b)) : NULL;
    if ((d->n_presets && p == NULL) || (d->n_byorig && b == NULL)) {
        free(p), free(b);
        d->presets = NULL, d->byorig = NULL, d->n_presets = d->n_byorig = 0;
        return -1;
    }
    for (size_t i = 0; i < d->n_presets; i++) {
        p[i].name = strdup(d->presets[i].name);
        p[i].chain = strdup(d->presets[i].chain);
    }
    if (b != NULL)
        memcpy(b, d->byorig, d->n_byorig * sizeof(*b));
    d->presets = p;
    d->byorig = b;
    for (size_t i = 0; i < d->signing.n_keys; i++)
        d->signing.keys[i].secret = strdup(d->signing.keys[i].secret);
    char **hosts = d->n_source_hosts ? calloc(d->n_source_hosts, sizeof(*hosts)) : NULL;
    for (size_t i = 0; hosts != NULL && i < d->n_source_hosts; i++)
        hosts[i] = strdup(d->source_hosts[i]);
    d->source_hosts = hosts;
    rf_named_source_t *named = d->n_named ? calloc(d->n_named, sizeof(*named)) : NULL;
    for (size_t i = 0; named != NULL && i < d->n_named; i++) {
        const char *why = NULL;
        memcpy(named[i].name, d->named[i].name, sizeof(named[i].name));
        rf_origin_parse(d->named[i].origin.url, &named[i].origin, &why); /* parsed once already */
    }
    d->named = named;
    return 0;
}

static void s_dims_lists_free(rf_dims_conf_t *d)
{
    s_presets_free(d->presets, d->n_presets);
    free(d->byorig);
    d->presets = NULL, d->byorig = NULL, d->n_presets = d->n_byorig = 0;
    s_signing_free(&d->signing);
    s_free_list(d->source_hosts, d->n_source_hosts);
    s_named_free(d->named, d->n_named);
    d->source_hosts = NULL, d->named = NULL, d->n_source_hosts = d->n_named = 0;
}

static int s_dims_into(s_ctx_t *c, yaml_node_t *v, rf_dims_conf_t *d, void *setflags)
{
    static const s_key_t keys[] = {K("status", s_bool, s_dims_raw_t, active),
                                   K("keyword", s_str, s_dims_raw_t, keyword),
                                   K("max_source_size", s_size, s_dims_raw_t, max_source_size),
                                   K("presets", s_dims_presets, s_dims_raw_t, presets),
                                   K("byoriginal", s_dims_byorig, s_dims_raw_t, byorig),
                                   K("signing", s_dims_signing, s_dims_raw_t, signing),
                                   K("sources", s_dims_sources, s_dims_raw_t, sources),
                                   {0}};
    s_dims_raw_t raw = {.active = d->active, .keyword = NULL, .max_source_size = d->max_source_size};
    if (s_walk(c, v, keys, &raw, "dims") < 0) {
        free(raw.keyword);
        s_presets_free(raw.presets.list, raw.presets.n);
        free(raw.byorig.list);
        s_signing_free(&raw.signing.conf);
        s_free_list(raw.sources.hosts.list, raw.sources.hosts.n);
        s_named_free(raw.sources.named, raw.sources.n_named);
        return -1;
    }
    if (raw.sources.given) {
        s_free_list(d->source_hosts, d->n_source_hosts);
        s_named_free(d->named, d->n_named);
        d->source_hosts = raw.sources.hosts.list;
        d->n_source_hosts = raw.sources.hosts.n;
        d->source_private = raw.sources.private_ok;
        d->named = raw.sources.named;
        d->n_named = raw.sources.n_named;
    }
    if (raw.signing.given) {
        s_signing_free(&d->signing);
        d->signing = raw.signing.conf;
    }
    if (raw.presets.given) { /* replaces what vhost_defaults gave */
        s_presets_free(d->presets, d->n_presets);
        d->presets = raw.presets.list;
        d->n_presets = raw.presets.n;
    }
    if (raw.byorig.given) {
        free(d->byorig);
        d->byorig = raw.byorig.list;
        d->n_byorig = raw.byorig.n;
    }
    int *set = setflags;
    for (yaml_node_pair_t *p = v->data.mapping.pairs.start; p < v->data.mapping.pairs.top; p++) {
        const char *k = s_scalar(yaml_document_get_node(&c->doc, p->key));
        if (set && strcmp(k, "status") == 0)
            set[0] = 1;
        if (set && strcmp(k, "keyword") == 0)
            set[1] = 1;
        if (set && strcmp(k, "max_source_size") == 0)
            set[2] = 1;
    }
    d->active = raw.active;
    d->max_source_size = raw.max_source_size;
    if (raw.keyword != NULL) {
        if (raw.keyword[0] == '\0' || strchr(raw.keyword, '/') != NULL) {
            free(raw.keyword);
            return s_fail(c, v, "dims keyword must be a non-empty path segment");
        }
        free(d->keyword);
        d->keyword = raw.keyword;
    }
    return 0;
}

static int s_vhost_dims(s_ctx_t *c, yaml_node_t *v, void *t)
{
    s_vhost_t *vh = (s_vhost_t *)((char *)t - offsetof(s_vhost_t, v.dims));
    return s_dims_into(c, v, &vh->v.dims, &vh->set);
}

/* ---- the vhost mp4hls mapping ------------------------------------------------ */

/* A URL path segment of a fixed-size field (keyword, playlist names):
 * letters, digits, '.', '_' and '-' only, so it never needs escaping. */
static int s_segment(s_ctx_t *c, yaml_node_t *v, void *t, size_t size)
{
    if (s_want_scalar(c, v, "value") < 0)
        return -1;
    const char *s = s_scalar(v);
    size_t n = strlen(s);
    if (n == 0 || n >= size || strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") != n ||
        strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
        return s_fail(c, v, "'%s' is not a name of 1..%zu letters, digits, '.', '_' or '-'", s, size - 1);
    memcpy(t, s, n + 1);
    return 0;
}

static int s_hls_keyword(s_ctx_t *c, yaml_node_t *v, void *t)
{
    return s_segment(c, v, t, sizeof(((rf_mp4hls_conf_t *)0)->keyword));
}

static int s_hls_name(s_ctx_t *c, yaml_node_t *v, void *t)
{
    return s_segment(c, v, t, sizeof(((rf_mp4hls_conf_t *)0)->index));
}

void rf_mp4hls_default(rf_mp4hls_conf_t *h)
{
    memset(h, 0, sizeof(*h));
    h->active = true;
    snprintf(h->keyword, sizeof(h->keyword), "mp4hls");
    snprintf(h->index, sizeof(h->index), "index.m3u8");
    h->version = 3;
    snprintf(h->alternates_name, sizeof(h->alternates_name), "playlist.m3u8");
    h->sequence = 0;
    h->duration = 10;
}

/* An `mp4hls` mapping onto *t, which holds the defaults: keys given
 * replace, others stay. */
static int s_mp4hls(s_ctx_t *c, yaml_node_t *v, void *t)
{
    static const s_key_t keys[] = {K("status", s_bool, rf_mp4hls_conf_t, active),
                                   K("keyword", s_hls_keyword, rf_mp4hls_conf_t, keyword),
                                   K("index", s_hls_name, rf_mp4hls_conf_t, index),
                                   K("version", s_int, rf_mp4hls_conf_t, version),
                                   K("alternates", s_bool, rf_mp4hls_conf_t, alternates),
                                   K("alternates_name", s_hls_name, rf_mp4hls_conf_t, alternates_name),
                                   K("sequence", s_int, rf_mp4hls_conf_t, sequence),
                                   K("duration", s_int, rf_mp4hls_conf_t, duration),
                                   K("fmp4", s_bool, rf_mp4hls_conf_t, fmp4),
                                   {0}};
    rf_mp4hls_conf_t *h = t;
    if (s_walk(c, v, keys, h, "mp4hls") < 0)
        return -1;
    if (h->version < 3 || h->version > 7)
        return s_fail(c, v, "mp4hls.version must be 3..7, got %d", h->version);
    if (h->duration < 1 || h->duration > 60)
        return s_fail(c, v, "mp4hls.duration must be 1..60 seconds, got %d", h->duration);
    if (h->sequence > 1000000000) /* the worker's bound: sequence + segments stays an int */
        return s_fail(c, v, "mp4hls.sequence must be 0..1000000000, got %d", h->sequence);
    if (strcmp(h->index, h->alternates_name) == 0)
        return s_fail(c, v, "mp4hls.index and mp4hls.alternates_name must differ");
    return 0;
}

void rf_thumb_default(rf_thumb_conf_t *t)
{
    memset(t, 0, sizeof(*t));
    t->active = true;
    snprintf(t->keyword, sizeof(t->keyword), "thumbnail");
    t->quality = 85;
    snprintf(t->sprite_keyword, sizeof(t->sprite_keyword), "sprite");
    t->sprites = true;
}

/* A `thumbnail` mapping onto *t, which holds the defaults. */
static int s_thumbnail(s_ctx_t *c, yaml_node_t *v, void *t)
{
    static const s_key_t keys[] = {K("status", s_bool, rf_thumb_conf_t, active),
                                   K("keyword", s_hls_keyword, rf_thumb_conf_t, keyword),
                                   K("quality", s_int, rf_thumb_conf_t, quality),
                                   K("sprite_keyword", s_hls_keyword, rf_thumb_conf_t, sprite_keyword),
                                   K("sprites", s_bool, rf_thumb_conf_t, sprites),
                                   {0}};
    rf_thumb_conf_t *th = t;
    if (s_walk(c, v, keys, th, "thumbnail") < 0)
        return -1;
    if (th->quality < 1 || th->quality > 100)
        return s_fail(c, v, "thumbnail.quality must be 1..100, got %d", th->quality);
    return 0;
}

void rf_trim_default(rf_trim_conf_t *t)
{
    memset(t, 0, sizeof(*t));
    t->active = true;
    snprintf(t->param, sizeof(t->param), "trimming");
    t->max_ratio = 50;
    t->m4a = true;
    t->accurate = true;
}

/* A `trimming` mapping onto *t, which holds the defaults. */
static int s_trimming(s_ctx_t *c, yaml_node_t *v, void *t)
{
    static const s_key_t keys[] = {
        K("status", s_bool, rf_trim_conf_t, active),      K("param", s_hls_keyword, rf_trim_conf_t, param),
        K("max_ratio", s_int, rf_trim_conf_t, max_ratio), K("m4a", s_bool, rf_trim_conf_t, m4a),
        K("accurate", s_bool, rf_trim_conf_t, accurate),  {0}};
    rf_trim_conf_t *tr = t;
    if (s_walk(c, v, keys, tr, "trimming") < 0)
        return -1;
    if (tr->max_ratio > 100)
        return s_fail(c, v, "trimming.max_ratio is a percentage 0..100, got %d", tr->max_ratio);
    if (strcmp(tr->param, "start") == 0 || strcmp(tr->param, "end") == 0)
        return s_fail(c, v, "trimming.param cannot be start or end (those are the nginx-style pair)");
    return 0;
}

void rf_transcode_default(rf_transcode_conf_t *t)
{
    memset(t, 0, sizeof(*t));
    t->active = true;
    snprintf(t->keyword, sizeof(t->keyword), "mp4");
    snprintf(t->inputs, sizeof(t->inputs), "mkv,webm,mov,avi,ts,flv,wmv,asf,mpg,mpeg,ogv,3gp,m4v,mp4");
    t->max_height = 1080;
    t->max_duration = 300;
    t->crf = 23;
    t->stream = true;
}

/* transcode.inputs, hls.inputs: "mkv, webm, wmv" or a list; stored lower case, comma-separated. */
static int s_transcode_inputs(s_ctx_t *c, yaml_node_t *v, void *t)
{
    char *out = t;
    size_t o = 0, cap = sizeof(((rf_transcode_conf_t *)0)->inputs);
    s_strlist_t list = {0};
    if (s_strlist(c, v, &list) < 0) {
        s_free_list(list.list, list.n);
        return -1;
    }
    int rc = 0;
    out[0] = '\0';
    for (size_t i = 0; i < list.n && rc == 0; i++) {
        char *save = NULL;
        for (char *tok = strtok_r(list.list[i], ", ", &save); tok != NULL && rc == 0;
             tok = strtok_r(NULL, ", ", &save)) {
            size_t n = strlen(tok);
            if (n == 0 || n > 8 || strspn(tok, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") != n ||
                o + n + 2 > cap) {
                /* transcode.inputs and hls.inputs alike: the line number says which */
                rc = s_fail(c, v, "inputs: '%s' is not a file extension (letters and digits, at most 8)", tok);
                break;
            }
            for (size_t k = 0; k < n; k++)
                out[o++] = (char)tolower((unsigned char)tok[k]);
            out[o++] = ',';
            out[o] = '\0';
        }
    }
    if (o > 0)
        out[o - 1] = '\0';
    s_free_list(list.list, list.n);
    return rc;
}

/* A `transcode` mapping onto *t, which holds the defaults. */
static int s_tx_ladder(s_ctx_t *c, yaml_node_t *v, void *t);

static int s_transcode(s_ctx_t *c, yaml_node_t *v, void *t)
{
    static const s_key_t keys[] = {K("status", s_bool, rf_transcode_conf_t, active),
                                   K("keyword", s_hls_keyword, rf_transcode_conf_t, keyword),
                                   K("inputs", s_transcode_inputs, rf_transcode_conf_t, inputs),
                                   K("max_height", s_int, rf_transcode_conf_t, max_height),
                                   K("max_duration", s_int, rf_transcode_conf_t, max_duration),
                                   K("crf", s_int, rf_transcode_conf_t, crf),
                                   K("stream", s_bool, rf_transcode_conf_t, stream),
                                   K("ladder", s_tx_ladder, rf_transcode_conf_t, n_rungs),
                                   {0}};
    rf_transcode_conf_t *tc = t;
    if (s_walk(c, v, keys, tc, "transcode") < 0)
        return -1;
    if (tc->max_height < 2 || tc->max_height > 4320)
        return s_fail(c, v, "transcode.max_height must be 2..4320, got %d", tc->max_height);
    if (tc->max_duration < 1 || tc->max_duration > 86400)
        return s_fail(c, v, "transcode.max_duration must be 1..86400 seconds, got %d", tc->max_duration);
    if (tc->crf < 1 || tc->crf > 51)
        return s_fail(c, v, "transcode.crf must be 1..51, got %d", tc->crf);
    for (int i = 0; i < tc->n_rungs; i++)
        if (tc->rungs[i].height > tc->max_height)
            return s_fail(c, v, "transcode.ladder: %dp is above transcode.max_height (%d)", tc->rungs[i].height,
                          tc->max_height);
    return 0;
}

void rf_phls_default(rf_phls_conf_t *t)
{
    static const int ladder[][2] = {{1080, 5000}, {720, 2800}, {480, 1400}, {360, 800}};
    memset(t, 0, sizeof(*t));
    t->active = true;
    snprintf(t->keyword, sizeof(t->keyword), "hls");
    rf_transcode_conf_t tc;
    rf_transcode_default(&tc);
    snprintf(t->inputs, sizeof(t->inputs), "%s", tc.inputs);
    t->duration = 6;
    t->n_rungs = 4;
    for (int i = 0; i < 4; i++) {
        t->rungs[i].height = ladder[i][0];
        t->rungs[i].kbps = ladder[i][1];
    }
    t->crf = 23;
    t->audio_kbps = 128;
    t->prefetch = 2;
    t->max_duration = 14400;
}

/* A ladder: ["1080p@5000k", "720p", …]: heights 2..4320 (each once),
 * each with an optional video bit-rate cap in kbit/s, into *n, rungs. */
static int s_ladder(s_ctx_t *c, yaml_node_t *v, const char *what, int *n, rf_rung_t *rungs)
{
    s_strlist_t list = {0};
    if (s_strlist(c, v, &list) < 0) {
        s_free_list(list.list, list.n);
        return -1;
    }
    int rc = 0;
    if (list.n < 1 || list.n > RF_PHLS_MAX_RUNGS)
        rc = s_fail(c, v, "%s lists 1..%d rungs, got %zu", what, RF_PHLS_MAX_RUNGS, list.n);
    for (size_t i = 0; i < list.n && rc == 0; i++) {
        int height = 0, kbps = 0, used = 0;
        const char *r = list.list[i];
        bool ok = (sscanf(r, "%5dp%n", &height, &used) == 1 && (size_t)used == strlen(r)) ||
                  (sscanf(r, "%5dp@%6dk%n", &height, &kbps, &used) == 2 && (size_t)used == strlen(r));
        for (size_t j = 0; ok && j < i; j++)
            ok = rungs[j].height != height;
        if (!ok || height < 2 || height > 4320 || kbps < 0 || kbps > 200000)
            rc = s_fail(c, v, "%s: '%s' is not HEIGHTp or HEIGHTp@KBPSk (height 2..4320, once each)", what, r);
        rungs[i].height = height;
        rungs[i].kbps = kbps;
    }
    if (rc == 0)
        *n = (int)list.n;
    s_free_list(list.list, list.n);
    return rc;
}

static int s_phls_ladder(s_ctx_t *c, yaml_node_t *v, void *t)
{
    rf_phls_conf_t *h = (rf_phls_conf_t *)((char *)t - offsetof(rf_phls_conf_t, n_rungs));
    return s_ladder(c, v, "hls.ladder", &h->n_rungs, h->rungs);
}

static int s_tx_ladder(s_ctx_t *c, yaml_node_t *v, void *t)
{
    rf_transcode_conf_t *h = (rf_transcode_conf_t *)((char *)t - offsetof(rf_transcode_conf_t, n_rungs));
    return s_ladder(c, v, "transcode.ladder", &h->n_rungs, h->rungs);
}

/* An `hls` mapping onto *t, which holds the defaults. */
static int s_phls(s_ctx_t *c, yaml_node_t *v, void *t)
{
    static const s_key_t keys[] = {K("status", s_bool, rf_phls_conf_t, active),
                                   K("keyword", s_hls_keyword, rf_phls_conf_t, keyword),
                                   K("inputs", s_transcode_inputs, rf_phls_conf_t, inputs),
                                   K("duration", s_int, rf_phls_conf_t, duration),
                                   K("ladder", s_phls_ladder, rf_phls_conf_t, n_rungs),
                                   K("crf", s_int, rf_phls_conf_t, crf),
                                   K("audio_kbps", s_int, rf_phls_conf_t, audio_kbps),
                                   K("prefetch", s_int, rf_phls_conf_t, prefetch),
                                   K("max_duration", s_int, rf_phls_conf_t, max_duration),
                                   {0}};
    rf_phls_conf_t *h = t;
    if (s_walk(c, v, keys, h, "hls") < 0)
        return -1;
    if (h->duration < 1 || h->duration > 60)
        return s_fail(c, v, "hls.duration must be 1..60 seconds, got %d", h->duration);
    if (h->crf < 1 || h->crf > 51)
        return s_fail(c, v, "hls.crf must be 1..51, got %d", h->crf);
    if (h->audio_kbps < 16 || h->audio_kbps > 512)
        return s_fail(c, v, "hls.audio_kbps must be 16..512, got %d", h->audio_kbps);
    if (h->prefetch < 0 || h->prefetch > 4)
        return s_fail(c, v, "hls.prefetch must be 0..4, got %d", h->prefetch);
    if (h->max_duration < 1 || h->max_duration > 7 * 86400)
        return s_fail(c, v, "hls.max_duration must be 1..604800 seconds, got %d", h->max_duration);
    return 0;
}

static int s_vhost_aliases(s_ctx_t *c, yaml_node_t *v, void *t)
{
    return s_strlist(c, v, t);
}

/* A vhost's origin_tls mapping, into the s_vhost_t's origin_tls (verify
 * defaults to true). Returns 0 or -1 (error recorded). */
static int s_vhost_origin_tls(s_ctx_t *c, yaml_node_t *v, void *t)
{
    static const s_key_t keys[] = {K("ca_file", s_str, rf_origin_tls_t, ca_file),
                                   K("verify", s_bool, rf_origin_tls_t, verify),
                                   K("sni", s_str, rf_origin_tls_t, sni),
                                   K("client_cert", s_str, rf_origin_tls_t, client_cert),
                                   K("client_key", s_str, rf_origin_tls_t, client_key),
                                   {0}};
    s_vhost_t *vh = (s_vhost_t *)((char *)t - offsetof(s_vhost_t, origin_tls));
    vh->has_origin_tls = true;
    vh->origin_tls.verify = true;
    return s_walk(c, v, keys, t, "origin_tls");
}

/* Checks a vhost's origin_tls against its parsed origin and moves it into
 * v.origin.tls. Returns 0, or -1 with the error recorded at `node`. */
static int s_vhost_origin_tls_apply(s_ctx_t *c, yaml_node_t *node, s_vhost_t *vh)
{
    rf_origin_tls_t *t = &vh->origin_tls;
    if (!vh->has_origin_tls)
        return 0;
    if (!vh->v.origin.https)
        return s_fail(c, node, "vhost '%s': origin_tls needs an https:// origin", vh->v.name);
    if ((t->client_cert == NULL) != (t->client_key == NULL))
        return s_fail(c, node, "vhost '%s': origin_tls needs both client_cert and client_key", vh->v.name);
    const char *const files[] = {t->ca_file, t->client_cert, t->client_key};
    for (size_t i = 0; i < 3; i++)
        if (files[i] != NULL && files[i][0] == '\0')
            return s_fail(c, node, "vhost '%s': origin_tls file names must not be empty", vh->v.name);
    if (t->sni != NULL && (t->sni[0] == '\0' || strpbrk(t->sni, " \t/:[]") != NULL))
        return s_fail(c, node, "vhost '%s': origin_tls sni must be a host name, got '%s'", vh->v.name, t->sni);
    vh->v.origin.tls = *t; /* the parsed origin holds no TLS strings yet */
    memset(t, 0, sizeof(*t));
    return 0;
}

/* Frees what s_vhost_origin_tls parsed and nothing took over. */
static void s_vhost_origin_tls_clear(s_vhost_t *vh)
{
    free(vh->origin_tls.ca_file);
    free(vh->origin_tls.sni);
    free(vh->origin_tls.client_cert);
    free(vh->origin_tls.client_key);
    memset(&vh->origin_tls, 0, sizeof(vh->origin_tls));
}

static char *s_dup(const char *p)
{
    return p ? strdup(p) : NULL;
}

/* A copy of an origin_tls setting (strings duplicated). 0 or -1. */
static int s_origin_tls_copy(rf_origin_tls_t *dst, const rf_origin_tls_t *src)
{
    dst->verify = src->verify;
    dst->ca_file = s_dup(src->ca_file);
    dst->sni = s_dup(src->sni);
    dst->client_cert = s_dup(src->client_cert);
    dst->client_key = s_dup(src->client_key);
    return (src->ca_file && !dst->ca_file) || (src->sni && !dst->sni) || (src->client_cert && !dst->client_cert) ||
                   (src->client_key && !dst->client_key)
               ? -1
               : 0;
}

/* A setting that is one of two words: *t becomes false for `no`, true for
 * `yes`; anything else is "WHAT is NO or YES, got '…'". 0 or -1. */
static int s_two_words(s_ctx_t *c, yaml_node_t *v, bool *t, const char *what, const char *no, const char *yes)
{
    if (s_want_scalar(c, v, "value") < 0)
        return -1;
    if (strcmp(s_scalar(v), yes) == 0)
        *t = true;
    else if (strcmp(s_scalar(v), no) == 0)
        *t = false;
    else
        return s_fail(c, v, "%s is %s or %s, got '%s'", what, no, yes, s_scalar(v));
    return 0;
}

/* byclient: {keyword, protocol: http|https, allow: [host patterns]}. */
static int s_byclient_protocol(s_ctx_t *c, yaml_node_t *v, void *t)
{
    return s_two_words(c, v, t, "byclient.protocol", "http", "https");
}

static int s_vhost_byclient(s_ctx_t *c, yaml_node_t *v, void *t)
{
    typedef struct {
        char *keyword;
        bool https;
        char **allow;
        size_t n_allow;
    } s_bc_t;
    static const s_key_t keys[] = {K("keyword", s_str, s_bc_t, keyword),
                                   K("protocol", s_byclient_protocol, s_bc_t, https),
                                   K("allow", s_strlist, s_bc_t, allow),
                                   {0}};
    _Static_assert(offsetof(s_bc_t, n_allow) - offsetof(s_bc_t, allow) == offsetof(s_strlist_t, n), "strlist shape");
    s_bc_t *bc = t;
    if (s_walk(c, v, keys, t, "byclient") < 0)
        return -1;
    if (bc->keyword == NULL)
        bc->keyword = strdup("byclient");
    if (bc->keyword == NULL || bc->keyword[0] == '\0' || strchr(bc->keyword, '/') != NULL)
        return s_fail(c, v, "byclient.keyword must be a non-empty path segment");
    if (bc->n_allow == 0)
        return s_fail(c, v, "byclient needs an allow list of host patterns (an open relay is refused)");
    for (size_t i = 0; i < bc->n_allow; i++)
        for (char *p = bc->allow[i]; *p; p++)
            *p = (char)tolower((unsigned char)*p);
    return 0;
}

/* siblings: {self: URL, peers: [URL, …]} — self must be one of peers. */
typedef struct {
    char *self;
    s_strlist_t peers;
} s_siblings_raw_t;

static int s_vhost_siblings(s_ctx_t *c, yaml_node_t *v, void *t)
{
    static const s_key_t keys[] = {
        K("self", s_str, s_siblings_raw_t, self), K("peers", s_strlist, s_siblings_raw_t, peers), {0}};
    rf_vhost_conf_t *vc = (rf_vhost_conf_t *)((char *)t - offsetof(rf_vhost_conf_t, siblings));
    s_siblings_raw_t raw = {NULL, {NULL, 0}};
    int rc = -1;
    if (s_walk(c, v, keys, &raw, "siblings") < 0)
        goto out;
    if (raw.self == NULL || raw.peers.n < 2) {
        s_fail(c, v, "siblings needs self and at least two peers");
        goto out;
    }
    if ((vc->siblings = calloc(raw.peers.n, sizeof(rf_origin_t))) == NULL)
        goto out;
    bool found = false;
    for (size_t i = 0; i < raw.peers.n; i++) {
        const char *why = NULL;
        vc->n_siblings = i + 1;
        if (rf_origin_parse(raw.peers.list[i], &vc->siblings[i], &why) < 0 || vc->siblings[i].kind != RF_ORIGIN_HTTP) {
            s_fail(c, v, "siblings.peers[%zu]: %s", i, why ? why : "must be http(s)");
            goto out;
        }
        if (strcmp(raw.peers.list[i], raw.self) == 0)
            vc->sibling_self = i, found = true;
    }
    if (!found) {
        s_fail(c, v, "siblings.self '%s' is not one of siblings.peers", raw.self);
        goto out;
    }
    rc = 0;
out:
    free(raw.self);
    s_free_list(raw.peers.list, raw.peers.n);
    return rc;
}

/* origin: one URL, or a list of http(s) URLs (the first is `origin`). */
static int s_vhost_origin(s_ctx_t *c, yaml_node_t *v, void *t)
{
    s_vhost_t *vh = (s_vhost_t *)((char *)t - offsetof(s_vhost_t, origin_url));
    if (v->type == YAML_SCALAR_NODE)
        return s_str(c, v, t);
    s_strlist_t all = {NULL, 0};
    if (s_strlist(c, v, &all) < 0 || all.n == 0) {
        s_free_list(all.list, all.n);
        return s_fail(c, v, "origin is a URL or a list of URLs");
    }
    vh->origin_url = all.list[0];
    vh->more_urls.n = all.n - 1;
    vh->more_urls.list = calloc(all.n, sizeof(char *));
    if (vh->more_urls.list == NULL) {
        for (size_t i = 1; i < all.n; i++)
            free(all.list[i]);
        free(all.list);
        return -1;
    }
    memcpy(vh->more_urls.list, all.list + 1, (all.n - 1) * sizeof(char *));
    free(all.list);
    return 0;
}

static int s_vhost_balance(s_ctx_t *c, yaml_node_t *v, void *t)
{
    return s_two_words(c, v, t, "balance", "round_robin", "hash");
}

/* timeouts: {connect, read} for this vhost's origins. */
static int s_vhost_timeouts(s_ctx_t *c, yaml_node_t *v, void *t)
{
    typedef struct {
        int connect, read;
    } s_to_t;
    static const s_key_t keys[] = {K("connect", s_duration, s_to_t, connect), K("read", s_duration, s_to_t, read), {0}};
    rf_vhost_conf_t *vc = (rf_vhost_conf_t *)((char *)t - offsetof(rf_vhost_conf_t, connect_timeout_ms));
    s_to_t to = {vc->connect_timeout_ms, vc->read_timeout_ms};
    if (s_walk(c, v, keys, &to, "timeouts") < 0)
        return -1;
    if (to.connect < 0 || to.read < 0 || to.connect > 600000 || to.read > 3600000)
        return s_fail(c, v, "timeouts: connect at most 10m, read at most 1h");
    vc->connect_timeout_ms = to.connect;
    vc->read_timeout_ms = to.read;
    return 0;
}

static int s_vhost_health(s_ctx_t *c, yaml_node_t *v, void *t)
{
    typedef struct {
        int fails, down_ms;
    } s_health_t;
    static const s_key_t keys[] = {
        K("fails", s_int, s_health_t, fails), K("down", s_duration, s_health_t, down_ms), {0}};
    rf_vhost_conf_t *vc = (rf_vhost_conf_t *)((char *)t - offsetof(rf_vhost_conf_t, health_fails));
    s_health_t h = {vc->health_fails, vc->health_down_ms};
    if (s_walk(c, v, keys, &h, "health") < 0)
        return -1;
    if (h.fails < 1)
        return s_fail(c, v, "health.fails is at least 1");
    vc->health_fails = h.fails;
    vc->health_down_ms = h.down_ms;
    return 0;
}

/* storage / backup: {s3: NAME or module string, prefix: P}, or the
 * string alone. Resolved in s_tiers_resolve once the whole file is read. */
static int s_s3tier(s_ctx_t *c, yaml_node_t *v, void *t)
{
    static const s_key_t keys[] = {K("s3", s_str, rf_s3tier_conf_t, s3),
                                   K("prefix", s_str, rf_s3tier_conf_t, prefix),
                                   K("cdn_purge", s_str, rf_s3tier_conf_t, cdn_purge),
                                   K("events", s_str, rf_s3tier_conf_t, events),
                                   {0}};
    rf_s3tier_conf_t *st = t;
    if (v->type == YAML_SCALAR_NODE)
        return s_str(c, v, &st->s3);
    if (s_walk(c, v, keys, t, "storage") < 0)
        return -1;
    if (st->s3 == NULL || st->s3[0] == '\0')
        return s_fail(c, v, "needs s3: an aws_s3 endpoint's name, or aws_access_key=…;bucket=…;s3_url=…;region=…;");
    if (st->cdn_purge != NULL && strncmp(st->cdn_purge, "http://", 7) != 0 &&
        strncmp(st->cdn_purge, "https://", 8) != 0)
        return s_fail(c, v, "cdn_purge is an http(s):// URL, got '%s'", st->cdn_purge);
    const char *e = st->events;
    size_t el = e ? strlen(e) : 0;
    if (e != NULL && strncmp(e, "http://", 7) != 0 && strncmp(e, "https://", 8) != 0 &&
        strncmp(e, "kafka://", 8) != 0 && !(e[0] == '/' && el > 3 && strcmp(e + el - 3, ".js") == 0))
        return s_fail(c, v,
                      "events is an http(s):// URL, kafka://HOST:PORT[,…]/TOPIC or an absolute .js hook, got '%s'", e);
    return 0;
}

static int s_vhost(s_ctx_t *c, yaml_node_t *node, s_vhost_t *vh)
{
    static const s_key_t keys[] = {{"name", s_str, offsetof(s_vhost_t, v.name)},
                                   {"aliases", s_vhost_aliases, offsetof(s_vhost_t, v.aliases)},
                                   {"default", s_bool, offsetof(s_vhost_t, v.is_default)},
                                   {"origin", s_vhost_origin, offsetof(s_vhost_t, origin_url)},
                                   {"balance", s_vhost_balance, offsetof(s_vhost_t, v.balance_hash)},
                                   {"health", s_vhost_health, offsetof(s_vhost_t, v.health_fails)},
                                   {"timeouts", s_vhost_timeouts, offsetof(s_vhost_t, v.connect_timeout_ms)},
                                   {"siblings", s_vhost_siblings, offsetof(s_vhost_t, v.siblings)},
                                   {"byclient", s_vhost_byclient, offsetof(s_vhost_t, v.byclient)},
                                   {"origin_tls", s_vhost_origin_tls, offsetof(s_vhost_t, origin_tls)},
                                   {"dims", s_vhost_dims, offsetof(s_vhost_t, v.dims)},
                                   {"mp4hls", s_mp4hls, offsetof(s_vhost_t, v.mp4hls)},
                                   {"thumbnail", s_thumbnail, offsetof(s_vhost_t, v.thumbnail)},
                                   {"trimming", s_trimming, offsetof(s_vhost_t, v.trimming)},
                                   {"transcode", s_transcode, offsetof(s_vhost_t, v.transcode)},
                                   {"hls", s_phls, offsetof(s_vhost_t, v.hls)},
                                   {"cache", s_cache, offsetof(s_vhost_t, v.cache)},
                                   {"compression", s_compression, offsetof(s_vhost_t, v.compression)},
                                   {"link", s_link, offsetof(s_vhost_t, v.link)},
                                   {"bypass", s_bypass, offsetof(s_vhost_t, v.bypass)},
                                   {"tls", s_vhost_tls, offsetof(s_vhost_t, v.tls)},
                                   {"storage", s_s3tier, offsetof(s_vhost_t, v.storage)},
                                   {"backup", s_s3tier, offsetof(s_vhost_t, v.backup)},
                                   {0}};
    _Static_assert(offsetof(rf_vhost_conf_t, n_aliases) - offsetof(rf_vhost_conf_t, aliases) ==
                       offsetof(s_strlist_t, n),
                   "aliases mirror s_strlist_t");
    vh->at = node;
    if (s_walk(c, node, keys, vh, "vhost") < 0)
        return -1;
    if (vh->v.name == NULL || vh->v.name[0] == '\0')
        return s_fail(c, node, "vhost needs a name");
    if (vh->origin_url == NULL)
        return s_fail(c, node, "vhost '%s' needs an origin", vh->v.name);
    const char *why = NULL;
    if (rf_origin_parse(vh->origin_url, &vh->v.origin, &why) < 0)
        return s_fail(c, node, "vhost '%s': %s", vh->v.name, why);
    if (vh->more_urls.n > 63)
        return s_fail(c, node, "vhost '%s': at most 64 origins", vh->v.name);
    if (vh->more_urls.n > 0) {
        if (vh->v.origin.kind != RF_ORIGIN_HTTP)
            return s_fail(c, node, "vhost '%s': several origins must all be http(s)", vh->v.name);
        if ((vh->v.more_origins = calloc(vh->more_urls.n, sizeof(rf_origin_t))) == NULL)
            return s_fail(c, node, "out of memory");
        for (size_t i = 0; i < vh->more_urls.n; i++) {
            vh->v.n_more_origins = i + 1;
            if (rf_origin_parse(vh->more_urls.list[i], &vh->v.more_origins[i], &why) < 0)
                return s_fail(c, node, "vhost '%s': origin %zu: %s", vh->v.name, i + 2, why);
            if (vh->v.more_origins[i].kind != RF_ORIGIN_HTTP)
                return s_fail(c, node, "vhost '%s': several origins must all be http(s)", vh->v.name);
        }
    }
    if (s_vhost_origin_tls_apply(c, node, vh) < 0)
        return -1;
    /* origin_tls applies to every https origin of the vhost. */
    for (size_t i = 0; i < vh->v.n_more_origins; i++)
        if (vh->v.more_origins[i].https && vh->v.origin.https)
            if (s_origin_tls_copy(&vh->v.more_origins[i].tls, &vh->v.origin.tls) < 0)
                return s_fail(c, node, "out of memory");
    if ((vh->v.tls.cert == NULL) != (vh->v.tls.key == NULL))
        return s_fail(c, node, "vhost '%s': tls needs both cert and key", vh->v.name);
    return 0;
}

typedef struct {
    rf_dims_conf_t dims;
    rf_mp4hls_conf_t mp4hls;
    rf_thumb_conf_t thumbnail;
    rf_trim_conf_t trimming;
    rf_transcode_conf_t transcode;
    rf_phls_conf_t hls;
    rf_cache_conf_t cache;
} s_vdefaults_t;

static int s_vdefaults_dims(s_ctx_t *c, yaml_node_t *v, void *t)
{
    return s_dims_into(c, v, t, NULL);
}

/* ---- top level ------------------------------------------------------------ */

static yaml_node_t *s_find_key(s_ctx_t *c, yaml_node_t *map, const char *key)
{
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(&c->doc, p->key);
        if (k && k->type == YAML_SCALAR_NODE && strcmp(s_scalar(k), key) == 0)
            return yaml_document_get_node(&c->doc, p->value);
    }
    return NULL;
}

static int s_vhosts(s_ctx_t *c, yaml_node_t *seq, const s_vdefaults_t *defs)
{
    if (seq->type != YAML_SEQUENCE_NODE)
        return s_fail(c, seq, "vhosts must be a list");
    size_t n = (size_t)(seq->data.sequence.items.top - seq->data.sequence.items.start);
    if (n == 0)
        return s_fail(c, seq, "vhosts must list at least one vhost");
    rf_config_t *cfg = c->cfg;
    cfg->vhosts = calloc(n, sizeof(rf_vhost_conf_t));
    if (cfg->vhosts == NULL)
        return s_fail(c, seq, "out of memory");
    int n_default = 0;
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *it = yaml_document_get_node(&c->doc, seq->data.sequence.items.start[i]);
        s_vhost_t vh = {0};
        vh.v.dims = defs->dims;
        vh.v.dims.keyword = NULL;
        vh.v.mp4hls = defs->mp4hls;
        vh.v.thumbnail = defs->thumbnail;
        vh.v.trimming = defs->trimming;
        vh.v.transcode = defs->transcode;
        vh.v.hls = defs->hls;
        if (s_dims_lists_copy(&vh.v.dims) < 0)
            return s_fail(c, it, "out of memory");
        if (s_cache_copy(&vh.v.cache, &defs->cache) < 0)
            return s_fail(c, it, "out of memory");
        vh.v.compression =
            (rf_compress_conf_t){.method = RF_CE_GZIP, .level = 6, .min_size = 2048, .max_size = 2048 * 1024};
        vh.v.health_fails = 3;
        vh.v.health_down_ms = 10000;
        int rc = s_vhost(c, it, &vh);
        free(vh.origin_url);
        s_free_list(vh.more_urls.list, vh.more_urls.n);
        s_vhost_origin_tls_clear(&vh);
        if (vh.v.dims.keyword == NULL)
            vh.v.dims.keyword = strdup(defs->dims.keyword);
        cfg->vhosts[i] = vh.v;
        cfg->n_vhosts = i + 1;
        if (rc < 0)
            return -1;
        /* Names must be unique, or Host routing would be ambiguous. */
        for (size_t j = 0; j < i; j++)
            if (strcasecmp(cfg->vhosts[j].name, vh.v.name) == 0)
                return s_fail(c, it, "duplicate vhost name '%s'", vh.v.name);
        if (vh.v.is_default && ++n_default > 1)
            return s_fail(c, it, "only one vhost may be the default");
        if (vh.v.hls.active && vh.v.mp4hls.active && strcmp(vh.v.hls.keyword, vh.v.mp4hls.keyword) == 0)
            return s_fail(c, it, "vhost '%s': hls.keyword and mp4hls.keyword are both '%s' (turn one off or rename it)",
                          vh.v.name, vh.v.hls.keyword);
    }
    return s_links_check(c, seq);
}

static int s_root(s_ctx_t *c, yaml_node_t *root)
{
    rf_config_t *cfg = c->cfg;
    if (root == NULL)
        return s_fail(c, NULL, "the file is empty");
    if (s_want_map(c, root, "the top level") < 0)
        return -1;
    /* vhost_defaults apply to every vhost, so read them before vhosts. */
    s_vdefaults_t defs = {.dims = {.active = true, .keyword = strdup("dims"), .max_source_size = 10u << 20}};
    s_cache_default(&defs.cache);
    rf_mp4hls_default(&defs.mp4hls);
    rf_thumb_default(&defs.thumbnail);
    rf_trim_default(&defs.trimming);
    rf_transcode_default(&defs.transcode);
    rf_phls_default(&defs.hls);
    static const s_key_t dkeys[] = {{"dims", s_vdefaults_dims, offsetof(s_vdefaults_t, dims)},
                                    {"mp4hls", s_mp4hls, offsetof(s_vdefaults_t, mp4hls)},
                                    {"thumbnail", s_thumbnail, offsetof(s_vdefaults_t, thumbnail)},
                                    {"trimming", s_trimming, offsetof(s_vdefaults_t, trimming)},
                                    {"transcode", s_transcode, offsetof(s_vdefaults_t, transcode)},
                                    {"hls", s_phls, offsetof(s_vdefaults_t, hls)},
                                    {"cache", s_cache, offsetof(s_vdefaults_t, cache)},
                                    {0}};
    yaml_node_t *dn = s_find_key(c, root, "vhost_defaults");
    int rc = -1;
    if (dn != NULL && s_walk(c, dn, dkeys, &defs, "vhost_defaults") < 0)
        goto done;
    for (yaml_node_pair_t *p = root->data.mapping.pairs.start; p < root->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(&c->doc, p->key);
        yaml_node_t *v = yaml_document_get_node(&c->doc, p->value);
        if (k->type != YAML_SCALAR_NODE) {
            s_fail(c, k, "top-level keys must be scalars");
            goto done;
        }
        const char *key = s_scalar(k);
        int r;
        /* A repeated section would merge into (and leak parts of) the first. */
        for (yaml_node_pair_t *q = root->data.mapping.pairs.start; q < p; q++) {
            yaml_node_t *qk = yaml_document_get_node(&c->doc, q->key);
            if (strcmp(s_scalar(qk), key) == 0) {
                s_fail(c, k, "duplicate key '%s'", key);
                goto done;
            }
        }
        if (strcmp(key, "vhosts") == 0)
            r = cfg->vhosts ? s_fail(c, k, "duplicate key 'vhosts'") : s_vhosts(c, v, &defs);
        else if (strcmp(key, "vhost_defaults") == 0)
            r = 0;
        else if (strcmp(key, "url_rewrite") == 0)
            r = s_rewrites(c, v);
        else if (strcmp(key, "storgate") == 0 || strcmp(key, "storage") == 0)
            r = cfg->storgate ? s_fail(c, k, "storgate given twice (storage is its other name)")
                              : rf_sgconf_parse(c, v, &cfg->storgate);
        else if (s_schema_section(key))
            r = s_schema_walk(c, v, key);
        else
            r = s_fail(c, k, "unknown key '%s' at the top level", key);
        if (r < 0)
            goto done;
    }
    if (cfg->bus.endpoint == NULL) {
        s_fail(c, root, "bus.endpoint is required");
        goto done;
    }
    if (s_tiers_resolve(c, root) < 0)
        goto done;
    if (s_sg_stage_dirs(c, root) < 0)
        goto done;
    if (cfg->gateway.meta_backend != NULL && strcmp(cfg->gateway.meta_backend, "embedded") != 0 &&
        strcmp(cfg->gateway.meta_backend, "redis") != 0) {
        s_fail(c, root, "gateway.metadata.backend is embedded or redis, got '%s'", cfg->gateway.meta_backend);
        goto done;
    }
    if (cfg->gateway.meta_advertise != NULL && strncmp(cfg->gateway.meta_advertise, "http://", 7) != 0) {
        s_fail(c, root, "gateway.metadata.advertise is this gateway's http:// URL, got '%s'",
               cfg->gateway.meta_advertise);
        goto done;
    }
    if (cfg->gateway.name != NULL &&
        (strlen(cfg->gateway.name) > 100 ||
         strspn(cfg->gateway.name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-_:~!") !=
             strlen(cfg->gateway.name))) {
        s_fail(c, root, "gateway.name '%s': letters, digits and . - _ : ~ ! only (at most 100)", cfg->gateway.name);
        goto done;
    }
    if (cfg->bus.n_connect == 0) {
        cfg->bus.connect = calloc(1, sizeof(char *));
        if (cfg->bus.connect == NULL || (cfg->bus.connect[0] = strdup(cfg->bus.endpoint)) == NULL) {
            s_fail(c, root, "out of memory");
            goto done;
        }
        cfg->bus.n_connect = 1;
    }
    if (cfg->gateway.tls.listen.port > 0 && (cfg->gateway.tls.def.cert == NULL || cfg->gateway.tls.def.key == NULL)) {
        s_fail(c, root, "gateway.tls.listen needs gateway.tls.cert and gateway.tls.key (the default certificate)");
        goto done;
    }
    rc = 0;
done:
    free(defs.dims.keyword);
    s_dims_lists_free(&defs.dims);
    s_free_list(defs.cache.query_keep, defs.cache.n_query_keep);
    return rc;
}

static void s_parser_error(s_ctx_t *c, yaml_parser_t *p)
{
    if (asprintf(&c->err, "%s:%zu:%zu: %s%s%s", c->name, p->problem_mark.line + 1, p->problem_mark.column + 1,
                 p->problem ? p->problem : "YAML syntax error", p->context ? " " : "",
                 p->context ? p->context : "") < 0)
        c->err = NULL;
}

rf_config_t *rf_config_load_string(const char *text, size_t len, const char *name, char **err)
{
    s_ctx_t c = {.name = name};
    yaml_parser_t parser;
    rf_config_t *cfg = calloc(1, sizeof(*cfg));
    int have_doc = 0;
    if (cfg == NULL || !yaml_parser_initialize(&parser)) {
        free(cfg);
        *err = strdup("out of memory");
        return NULL;
    }
    c.cfg = cfg;
    cfg->path = strdup(name);
    if (s_schema_defaults(&c) < 0)
        goto fail;
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    if (!yaml_parser_load(&parser, &c.doc)) {
        s_parser_error(&c, &parser);
        goto fail;
    }
    have_doc = 1;
    if (s_root(&c, yaml_document_get_root_node(&c.doc)) < 0)
        goto fail;
    yaml_document_delete(&c.doc);
    yaml_parser_delete(&parser);
    return cfg;
fail:
    if (have_doc)
        yaml_document_delete(&c.doc);
    yaml_parser_delete(&parser);
    rf_config_destroy(&cfg);
    *err = c.err ? c.err : strdup("invalid configuration");
    return NULL;
}

rf_config_t *rf_config_load(const char *path, char **err)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        if (asprintf(err, "%s:1:1: cannot open: %s", path, strerror(errno)) < 0)
            *err = NULL;
        return NULL;
    }
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len == cap) {
            cap = cap ? cap * 2 : 8192;
            char *nb = realloc(buf, cap);
            if (nb == NULL) {
                free(buf);
                fclose(f);
                *err = strdup("out of memory");
                return NULL;
            }
            buf = nb;
        }
        size_t n = fread(buf + len, 1, cap - len, f);
        if (n == 0)
            break;
        len += n;
    }
    fclose(f);
    rf_config_t *cfg = rf_config_load_string(buf, len, path, err);
    free(buf);
    return cfg;
}

static void s_free_list(char **list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(list[i]);
    free(list);
}

void rf_config_destroy(rf_config_t **self_p)
{
    if (self_p == NULL || *self_p == NULL)
        return;
    rf_config_t *cfg = *self_p;
    rf_sgconf_destroy(&cfg->storgate);
    free(cfg->path);
    free(cfg->gateway.listen.host);
    free(cfg->gateway.admin_listen.host);
    free(cfg->gateway.cache_dir);
    free(cfg->gateway.admin_token);
    free(cfg->gateway.name);
    free(cfg->gateway.meta_backend);
    free(cfg->gateway.meta_redis);
    free(cfg->gateway.meta_prefix);
    free(cfg->gateway.meta_advertise);
    free(cfg->gateway.meta_password);
    free(cfg->gateway.tls.listen.host);
    free(cfg->gateway.tls.def.cert);
    free(cfg->gateway.tls.def.key);
    free(cfg->gateway.tls.ciphers);
    free(cfg->bus.endpoint);
    free(cfg->bus.spool_dir);
    s_free_list(cfg->bus.connect, cfg->bus.n_connect);
    for (size_t i = 0; i < cfg->n_vhosts; i++) {
        rf_vhost_conf_t *v = &cfg->vhosts[i];
        free(v->name);
        s_free_list(v->aliases, v->n_aliases);
        rf_origin_clear(&v->origin);
        for (size_t k = 0; k < v->n_more_origins; k++)
            rf_origin_clear(&v->more_origins[k]);
        free(v->more_origins);
        for (size_t k = 0; k < v->n_siblings; k++)
            rf_origin_clear(&v->siblings[k]);
        free(v->siblings);
        free(v->byclient.keyword);
        s_free_list(v->byclient.allow, v->byclient.n_allow);
        free(v->dims.keyword);
        s_dims_lists_free(&v->dims);
        s_free_list(v->cache.query_keep, v->cache.n_query_keep);
        s_compression_clear(&v->compression);
        free(v->link.vhost);
        s_s3tier_clear(&v->storage);
        s_s3tier_clear(&v->backup);
        for (size_t k = 0; k < v->bypass.n_rules; k++)
            free(v->bypass.rules[k].pattern);
        free(v->bypass.rules);
        free(v->tls.cert);
        free(v->tls.key);
    }
    free(cfg->vhosts);
    for (size_t i = 0; i < cfg->n_rewrites; i++)
        free(cfg->rewrites[i].pattern), free(cfg->rewrites[i].replace);
    free(cfg->rewrites);
    free(cfg->image_worker.metrics_listen.host);
    free(cfg->video_worker.metrics_listen.host);
    free(cfg->video_worker.gateway_url);
    free(cfg->storgate_scheduler.metrics_listen.host);
    free(cfg->storgate_scheduler.name);
    free(cfg->storgate_scheduler.state_dir);
    free(cfg->storgate_scheduler.bus_endpoint);
    free(cfg->prewarm.brokers);
    free(cfg->prewarm.topic);
    free(cfg->prewarm.group);
    free(cfg->prewarm.dead_letter_topic);
    free(cfg->prewarm.events_topic);
    free(cfg->prewarm.gateway_url);
    free(cfg->prewarm.metrics_listen.host);
    free(cfg);
    *self_p = NULL;
}
