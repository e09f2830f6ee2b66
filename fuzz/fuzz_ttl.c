/*  libFuzzer target for common/rf_ttl: origin and client headers are
 *  attacker-controlled. The input is: one byte choosing the status, one
 *  byte of flags (override_origin, Authorization, heuristic, fixed load),
 *  then header lines "name: value" separated by '\n' (values are not
 *  NUL-terminated, so over-reads show). Besides memory safety it checks
 *  the verdict's invariants (ttl >= 0, why_not set iff not storable,
 *  no_cache -> ttl 0, never-stale objects have no stale windows, bounds of
 *  2^31), the STON growth rule (monotone, capped), a 304 with no new
 *  headers (never shortens a growing rule TTL), the request directives'
 *  ranges, and that every value that parses as an HTTP-date formats and
 *  parses back to the same second. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "rf_ttl.h"

#define MAX_LINES 64

static const int s_statuses[] = {200, 203, 204, 206, 300, 301, 302, 303, 304, 307, 308, 100, 400,
                                 401, 403, 404, 405, 410, 414, 429, 500, 501, 502, 503, 504, 505};

static void s_check_verdict(const rf_ttl_conf_t *c, const rf_ttl_verdict_t *v, bool grown)
{
    if (v->ttl < 0 || v->ttl > RF_TTL_DELTA_MAX || v->lifetime < 0 || v->lifetime > RF_TTL_DELTA_MAX)
        abort();
    if (v->age < 0 || v->age > RF_TTL_DELTA_MAX)
        abort();
    if (v->storable != (v->why_not == NULL))
        abort();
    if (!v->storable && (v->ttl != 0 || v->source != RF_TTL_SRC_NONE || v->why_not[0] == '\0'))
        abort();
    if (v->storable && v->source == RF_TTL_SRC_NONE)
        abort();
    if (v->no_cache && v->ttl != 0)
        abort();
    if ((v->must_revalidate || v->no_cache) && (v->stale_while_revalidate != 0 || v->stale_if_error != 0))
        abort();
    if (v->stale_while_revalidate < 0 || v->stale_if_error < 0)
        abort();
    if (v->source == RF_TTL_SRC_ORIGIN && v->ttl > v->lifetime)
        abort();
    if (v->source != RF_TTL_SRC_ORIGIN && v->ttl != v->lifetime)
        abort();
    /* a first Res2xx TTL is at most the rule's value; grown, at most Max */
    int64_t cap = grown && c->res2xx.max > c->res2xx.value ? c->res2xx.max : c->res2xx.value;
    if (v->source == RF_TTL_SRC_RES2XX && v->ttl > cap)
        abort();
    if (v->client_max_age < -1)
        abort();
    if (v->bad_freshness && v->ttl != 0)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    int status = s_statuses[data[0] % (sizeof(s_statuses) / sizeof(s_statuses[0]))];
    if (data[0] >= 240)
        status = (int)data[0] * 3 - 600; /* some raw, odd statuses */
    uint8_t flags = data[1];
    const char *p = (const char *)data + 2;
    size_t len = size - 2;

    rf_hdr_t h[MAX_LINES];
    size_t n = 0;
    while (len > 0 && n < MAX_LINES) {
        const char *nl = memchr(p, '\n', len);
        size_t line = nl ? (size_t)(nl - p) : len;
        const char *colon = memchr(p, ':', line);
        size_t name_len = colon ? (size_t)(colon - p) : line;
        const char *val = colon ? colon + 1 : p + line;
        size_t val_len = colon ? line - name_len - 1 : 0;
        while (val_len > 0 && *val == ' ') {
            val++;
            val_len--;
        }
        h[n++] = (rf_hdr_t){p, name_len, val, val_len};
        p += line + (nl ? 1 : 0);
        len -= line + (nl ? 1 : 0);
    }

    rf_ttl_conf_t c;
    rf_ttl_conf_default(&c);
    c.override_origin = flags & 1;
    if (flags & 4)
        c.heuristic_percent = 0;
    if (flags & 8) {
        c.res2xx = (rf_ttl_rule_t){0, 20, 0};
        c.nocache = (rf_ttl_rule_t){0, 0, 0};
        c.res3xx = c.res4xx = c.res5xx = 0;
    }
    if (flags & 16)
        c.nocache_max_age = 60;
    bool auth = flags & 2;
    int64_t now = 1700000000 + (int64_t)(flags >> 5) * 1000;

    rf_ttl_verdict_t v, v2;
    int64_t sent = now - (flags & 3);
    if (rf_ttl_decide(&c, status, h, n, sent, now, auth, &v) != 0)
        abort();
    s_check_verdict(&c, &v, false);
    if (v.storable && v.strip_set_cookie && !v.strip_fields)
        abort();

    /* a 304 carrying nothing new: same storability, and a growing rule
     * never shrinks */
    if (rf_ttl_after_304(&c, status, &v, h, n, NULL, 0, sent, now, auth, &v2) != 0)
        abort();
    s_check_verdict(&c, &v2, true);
    if (v2.storable != v.storable)
        abort();
    if (v.storable && !v.no_cache && (v.source == RF_TTL_SRC_RES2XX || v.source == RF_TTL_SRC_NOCACHE) &&
        v2.source == v.source && v2.ttl < v.ttl)
        abort();
    /* the same headers given as the 304's: the same decision */
    if (rf_ttl_after_304(&c, status, NULL, NULL, 0, h, n, sent, now, auth, &v2) != 0)
        abort();
    if (v2.storable != v.storable || v2.ttl != v.ttl || v2.source != v.source)
        abort();

    int64_t ext = rf_ttl_on_origin_error(&c, &v, (flags & 1) ? 0 : status);
    if (ext < -1 || (ext >= 0 && (!v.storable || v.must_revalidate || v.no_cache)))
        abort();

    /* STON growth on the TTL just decided */
    int64_t g = rf_ttl_grow(&c.res2xx, v.lifetime);
    int64_t cap = c.res2xx.max > c.res2xx.value ? c.res2xx.max : c.res2xx.value;
    if (g < 0 || g > cap || (v.lifetime <= cap && g < v.lifetime))
        abort();

    rf_ttl_req_t r;
    rf_ttl_request(h, n, &r);
    if (r.max_age < -1 || r.max_age > RF_TTL_DELTA_MAX || r.min_fresh < 0 || r.min_fresh > RF_TTL_DELTA_MAX)
        abort();
    if (r.max_stale < -1 || (r.max_stale > RF_TTL_DELTA_MAX && r.max_stale != INT64_MAX))
        abort();

    for (size_t i = 0; i < n; i++) {
        int64_t t = rf_http_date_parse(h[i].value, h[i].value_len);
        if (t < -1)
            abort();
        if (t >= 0) {
            char buf[30];
            if (rf_http_date_format(t, buf) != 29 || strlen(buf) != 29 || rf_http_date_parse(buf, 29) != t)
                abort();
        }
        bool strip = rf_ttl_strip_field(h, n, h[i].name, h[i].name_len);
        if (h[i].name_len == 10 && strncasecmp(h[i].name, "set-cookie", 10) == 0 && !strip)
            abort();
    }
    /* the whole input as one date, too */
    int64_t t = rf_http_date_parse((const char *)data + 2, size - 2);
    if (t < -1)
        abort();
    return 0;
}
