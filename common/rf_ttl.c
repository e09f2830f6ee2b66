#include "rf_ttl.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* ---- header views ------------------------------------------------------ */

/* The headers a decision reads: `a` first, then `b` for names `a` lacks
 * (a 304's lines replace the stored ones by name, RFC 9111 4.3.4). A plain
 * decision has only `a`. */
typedef struct {
    const rf_hdr_t *a;
    size_t na;
    const rf_hdr_t *b;
    size_t nb;
} s_view_t;

static bool s_name_is(const rf_hdr_t *h, const char *name)
{
    size_t len = strlen(name);
    return h->name != NULL && h->name_len == len && strncasecmp(h->name, name, len) == 0;
}

static bool s_has(const rf_hdr_t *h, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (s_name_is(&h[i], name))
            return true;
    return false;
}

/* The array holding `name` in this view (a wins), or NULL. */
static const rf_hdr_t *s_pick(const s_view_t *v, const char *name, size_t *n)
{
    if (s_has(v->a, v->na, name)) {
        *n = v->na;
        return v->a;
    }
    if (s_has(v->b, v->nb, name)) {
        *n = v->nb;
        return v->b;
    }
    *n = 0;
    return NULL;
}

/* Walks the lines named `name` in a view, in order, in linear time. */
typedef struct {
    const rf_hdr_t *arr;
    size_t n, i;
    const char *name;
} s_iter_t;

static s_iter_t s_iter(const s_view_t *v, const char *name)
{
    s_iter_t it = {.name = name};
    it.arr = s_pick(v, name, &it.n);
    return it;
}

static const rf_hdr_t *s_next(s_iter_t *it)
{
    while (it->arr != NULL && it->i < it->n) {
        const rf_hdr_t *h = &it->arr[it->i++];
        if (s_name_is(h, it->name))
            return h;
    }
    return NULL;
}

/* The first line named `name`, or NULL. */
static const rf_hdr_t *s_first(const s_view_t *v, const char *name)
{
    s_iter_t it = s_iter(v, name);
    return s_next(&it);
}

/* A line's value and length; a NULL value reads as empty. */
static const char *s_val(const rf_hdr_t *h, size_t *len)
{
    *len = h->value != NULL ? h->value_len : 0;
    return h->value != NULL ? h->value : "";
}

static bool s_ows(char c)
{
    return c == ' ' || c == '\t';
}

static bool s_tchar(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return true;
    if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z')
        return true;
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static void s_trim(const char **s, size_t *n)
{
    while (*n > 0 && s_ows((*s)[0])) {
        (*s)++;
        (*n)--;
    }
    while (*n > 0 && s_ows((*s)[*n - 1]))
        (*n)--;
}

static bool s_eq(const char *s, size_t n, const char *lit)
{
    size_t len = strlen(lit);
    return n == len && strncasecmp(s, lit, len) == 0;
}

/* ---- list elements and Cache-Control directives ------------------------ */

/* Calls fn for each non-empty element of the comma list v[0..len), trimmed;
 * commas inside a quoted-string (with \-escapes) do not split. An element
 * whose quote is never closed runs to the end and is passed with
 * unterminated=true. */
typedef void(s_elem_fn)(const char *e, size_t n, bool unterminated, void *arg);

static void s_each(const char *v, size_t len, s_elem_fn *fn, void *arg)
{
    size_t i = 0;
    while (i < len) {
        size_t start = i;
        bool quoted = false, unterminated = false;
        while (i < len && (quoted || v[i] != ',')) {
            if (quoted && v[i] == '\\')
                i++; /* skip the escaped byte */
            else if (v[i] == '"')
                quoted = !quoted;
            if (i < len)
                i++;
        }
        if (quoted)
            unterminated = true;
        const char *e = v + start;
        size_t n = (i > len ? len : i) - start;
        s_trim(&e, &n);
        if (n > 0)
            fn(e, n, unterminated, arg);
        i++; /* past the comma */
    }
}

/* One directive: name, and value (quotes removed; NULL when none). */
typedef struct {
    const char *name, *val;
    size_t name_len, val_len;
    bool has_val, bad; /* bad: malformed name or value (unterminated quote, junk after it) */
} s_dir_t;

static s_dir_t s_directive(const char *e, size_t n, bool unterminated)
{
    s_dir_t d = {.name = e, .name_len = n};
    const char *eq = memchr(e, '=', n);
    if (eq != NULL) {
        d.name_len = (size_t)(eq - e);
        d.val = eq + 1;
        d.val_len = n - d.name_len - 1;
        d.has_val = true;
        s_trim(&d.val, &d.val_len);
    }
    s_trim(&d.name, &d.name_len);
    for (size_t i = 0; i < d.name_len; i++)
        if (!s_tchar((unsigned char)d.name[i]))
            d.bad = true;
    if (d.name_len == 0)
        d.bad = true;
    if (d.has_val && d.val_len > 0 && d.val[0] == '"') {
        if (unterminated || d.val_len < 2 || d.val[d.val_len - 1] != '"') {
            d.bad = true;
        } else {
            d.val++;
            d.val_len -= 2;
        }
    } else if (d.has_val) {
        for (size_t i = 0; i < d.val_len; i++)
            if (!s_tchar((unsigned char)d.val[i]))
                d.bad = true;
    }
    if (unterminated)
        d.bad = true;
    return d;
}

/* delta-seconds (RFC 9111 1.2.2): 1*DIGIT, clamped to 2^31. -1 if not. */
static int64_t s_delta(const char *v, size_t n)
{
    if (v == NULL || n == 0)
        return -1;
    int64_t x = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        if (x < RF_TTL_DELTA_MAX)
            x = x * 10 + (v[i] - '0');
    }
    return x > RF_TTL_DELTA_MAX ? RF_TTL_DELTA_MAX : x;
}

/* A valued directive seen once or more: the first value, and whether it
 * was ever invalid or contradicted (RFC 9111 4.2.1). */
typedef struct {
    bool seen, bad;
    int64_t v;
} s_delta_dir_t;

static void s_delta_note(s_delta_dir_t *dd, const s_dir_t *d)
{
    int64_t x = d->bad ? -1 : s_delta(d->val, d->val_len);
    if (x < 0)
        dd->bad = true;
    else if (dd->seen && dd->v != x)
        dd->bad = true;
    if (!dd->seen && x >= 0)
        dd->v = x;
    dd->seen = true;
}

/* A response's Cache-Control, all lines together. */
typedef struct {
    bool no_store, no_cache, private_, public_, must_revalidate, proxy_revalidate;
    bool no_cache_fields, private_fields; /* field-named forms, which do not block storage */
    s_delta_dir_t max_age, s_maxage, swr, sie;
} s_cc_t;

/* Whether a field-named form carries at least one field name. */
static bool s_has_field_list(const s_dir_t *d)
{
    if (!d->has_val || d->bad)
        return false;
    for (size_t i = 0; i < d->val_len; i++)
        if (s_tchar((unsigned char)d->val[i]))
            return true;
    return false;
}

static void s_cc_elem(const char *e, size_t n, bool unterminated, void *arg)
{
    s_cc_t *cc = arg;
    s_dir_t d = s_directive(e, n, unterminated);
    if (d.name_len == 0)
        return;
    /* Names are matched even when the value is malformed: a broken
     * no-store or private still forbids, a broken max-age makes it stale. */
    if (s_eq(d.name, d.name_len, "no-store"))
        cc->no_store = true;
    else if (s_eq(d.name, d.name_len, "private")) {
        if (s_has_field_list(&d))
            cc->private_fields = true;
        else
            cc->private_ = true;
    } else if (s_eq(d.name, d.name_len, "no-cache")) {
        if (s_has_field_list(&d))
            cc->no_cache_fields = true;
        else
            cc->no_cache = true;
    } else if (s_eq(d.name, d.name_len, "public"))
        cc->public_ = true;
    else if (s_eq(d.name, d.name_len, "must-revalidate"))
        cc->must_revalidate = true;
    else if (s_eq(d.name, d.name_len, "proxy-revalidate"))
        cc->proxy_revalidate = true;
    else if (s_eq(d.name, d.name_len, "max-age"))
        s_delta_note(&cc->max_age, &d);
    else if (s_eq(d.name, d.name_len, "s-maxage"))
        s_delta_note(&cc->s_maxage, &d);
    else if (s_eq(d.name, d.name_len, "stale-while-revalidate"))
        s_delta_note(&cc->swr, &d);
    else if (s_eq(d.name, d.name_len, "stale-if-error"))
        s_delta_note(&cc->sie, &d);
    /* others (immutable, no-transform, extensions) do not change freshness */
}

static void s_cc_read(const s_view_t *v, s_cc_t *cc)
{
    memset(cc, 0, sizeof(*cc));
    s_iter_t it = s_iter(v, "cache-control");
    const rf_hdr_t *l;
    size_t len;
    while ((l = s_next(&it)) != NULL) {
        const char *val = s_val(l, &len);
        s_each(val, len, s_cc_elem, cc);
    }
}

static void s_vary_elem(const char *e, size_t n, bool unterminated, void *arg)
{
    (void)unterminated;
    if (n == 1 && e[0] == '*')
        *(bool *)arg = true;
}

/* ---- dates ------------------------------------------------------------- */

static const char *const s_wkday[7] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
static const char *const s_weekday[7] = {"Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"};
static const char *const s_month[12] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant). */
static int64_t s_days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static void s_civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

static int s_mdays(int64_t y, int m)
{
    static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 && leap ? 29 : days[m - 1];
}

/* n digits at s -> value, -1 if any is not a digit. */
static int s_digits(const char *s, size_t n)
{
    int x = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        x = x * 10 + (s[i] - '0');
    }
    return x;
}

static int s_month_of(const char *s)
{
    for (int i = 0; i < 12; i++)
        if (memcmp(s, s_month[i], 3) == 0)
            return i + 1;
    return -1;
}

static bool s_is_wkday(const char *s, size_t n, const char *const names[7])
{
    for (int i = 0; i < 7; i++)
        if (strlen(names[i]) == n && memcmp(s, names[i], n) == 0)
            return true;
    return false;
}

/* "HH:MM:SS" -> seconds of the day, -1 if malformed. */
static int64_t s_hms(const char *s)
{
    if (s[2] != ':' || s[5] != ':')
        return -1;
    int h = s_digits(s, 2), mi = s_digits(s + 3, 2), se = s_digits(s + 6, 2);
    if (h < 0 || mi < 0 || se < 0 || h > 23 || mi > 59 || se > 60)
        return -1;
    return (int64_t)h * 3600 + mi * 60 + se;
}

static int64_t s_mktime(int64_t y, int m, int d, int64_t secs)
{
    if (m < 1 || d < 1 || d > s_mdays(y, m) || secs < 0)
        return -1;
    int64_t t = s_days_from_civil(y, m, d) * 86400 + secs;
    return t < 0 ? 0 : t;
}

/* RFC 9110 5.6.7: a two-digit year more than 50 years ahead is in the past. */
static int64_t s_two_digit_year(int yy)
{
    int64_t now_y;
    int m, d;
    s_civil_from_days((int64_t)time(NULL) / 86400, &now_y, &m, &d);
    int64_t y = now_y - now_y % 100 + yy;
    if (y > now_y + 50)
        y -= 100;
    else if (y <= now_y - 50)
        y += 100;
    return y;
}

int64_t rf_http_date_parse(const char *s, size_t len)
{
    if (s == NULL)
        return -1;
    s_trim(&s, &len);
    if (len == 29 && s[3] == ',') {
        /* Sun, 06 Nov 1994 08:49:37 GMT */
        if (!s_is_wkday(s, 3, s_wkday) || s[4] != ' ' || s[7] != ' ' || s[11] != ' ' || s[16] != ' ' || s[25] != ' ' ||
            memcmp(s + 26, "GMT", 3) != 0)
            return -1;
        int d = s_digits(s + 5, 2), m = s_month_of(s + 8), y = s_digits(s + 12, 4);
        int64_t secs = s_hms(s + 17);
        if (d < 0 || m < 0 || y < 0 || secs < 0)
            return -1;
        return s_mktime(y, m, d, secs);
    }
    if (len == 24 && s[3] == ' ') {
        /* Sun Nov  6 08:49:37 1994 */
        if (!s_is_wkday(s, 3, s_wkday) || s[7] != ' ' || s[10] != ' ' || s[19] != ' ')
            return -1;
        int m = s_month_of(s + 4);
        int d = s[8] == ' ' ? s_digits(s + 9, 1) : s_digits(s + 8, 2);
        int64_t secs = s_hms(s + 11);
        int y = s_digits(s + 20, 4);
        if (d < 0 || m < 0 || y < 0 || secs < 0)
            return -1;
        return s_mktime(y, m, d, secs);
    }
    /* Sunday, 06-Nov-94 08:49:37 GMT */
    const char *comma = memchr(s, ',', len);
    if (comma == NULL)
        return -1;
    size_t wl = (size_t)(comma - s);
    if (!s_is_wkday(s, wl, s_weekday) || len != wl + 24)
        return -1;
    const char *p = comma + 1;
    if (p[0] != ' ' || p[3] != '-' || p[7] != '-' || p[10] != ' ' || p[19] != ' ' || memcmp(p + 20, "GMT", 3) != 0)
        return -1;
    int d = s_digits(p + 1, 2), m = s_month_of(p + 4), yy = s_digits(p + 8, 2);
    int64_t secs = s_hms(p + 11);
    if (d < 0 || m < 0 || yy < 0 || secs < 0)
        return -1;
    return s_mktime(s_two_digit_year(yy), m, d, secs);
}

size_t rf_http_date_format(int64_t t, char *buf)
{
    const int64_t last = 253402300799LL; /* 9999-12-31 23:59:59 */
    if (t < 0)
        t = 0;
    if (t > last)
        t = last;
    int64_t days = t / 86400, secs = t % 86400, y;
    int m, d;
    s_civil_from_days(days, &y, &m, &d);
    int wd = (int)((days + 4) % 7); /* 1970-01-01 was a Thursday */
    snprintf(buf, 30, "%s, %02d %s %04d %02d:%02d:%02d GMT", s_wkday[wd], d, s_month[m - 1], (int)y, (int)(secs / 3600),
             (int)(secs / 60 % 60), (int)(secs % 60));
    return 29;
}

/* The first line named `name` parsed as an HTTP-date: its value, or -1
 * when absent or invalid; *present says whether such a line exists. */
static int64_t s_date_field(const s_view_t *v, const char *name, bool *present)
{
    const rf_hdr_t *l = s_first(v, name);
    *present = l != NULL;
    if (l == NULL)
        return -1;
    size_t len;
    const char *val = s_val(l, &len);
    return rf_http_date_parse(val, len);
}

/* Expires: the date of its first line, -1 if invalid or if another line
 * says something else (RFC 9111 4.2.1: treat as stale). */
static int64_t s_expires(const s_view_t *v, bool *present)
{
    int64_t t = s_date_field(v, "expires", present);
    s_iter_t it = s_iter(v, "expires");
    const rf_hdr_t *first = s_next(&it), *l;
    size_t n0 = 0, n1;
    const char *v0 = first != NULL ? s_val(first, &n0) : "";
    while ((l = s_next(&it)) != NULL) {
        const char *v1 = s_val(l, &n1);
        if (n1 != n0 || memcmp(v0, v1, n0) != 0)
            return -1;
    }
    return t;
}

/* ---- the decision ------------------------------------------------------ */

void rf_ttl_conf_default(rf_ttl_conf_t *c)
{
    if (c == NULL)
        return;
    memset(c, 0, sizeof(*c));
    c->res2xx = (rf_ttl_rule_t){1800, 20, 86400};
    c->nocache = (rf_ttl_rule_t){5, 0, 5};
    c->nocache_max_age = 0;
    c->res3xx = 300;
    c->res4xx = 30;
    c->res5xx = 30;
    c->override_origin = false;
    c->heuristic_percent = 10;
    c->extend_by_4xx = false;
    c->extend_by_5xx = true;
    c->origin_error_ttl = 3;
}

static int64_t s_clamp(int64_t x)
{
    return x < 0 ? 0 : x > RF_TTL_DELTA_MAX ? RF_TTL_DELTA_MAX : x;
}

/* The rule class of a status, NONE when it is not stored at all. */
static rf_ttl_source_t s_class(int status)
{
    switch (status) {
    case 200:
    case 203:
    case 204: return RF_TTL_SRC_RES2XX;
    case 300:
    case 301:
    case 302:
    case 303:
    case 307:
    case 308: return RF_TTL_SRC_RES3XX;
    case 404:
    case 405:
    case 410:
    case 414: return RF_TTL_SRC_RES4XX;
    case 500:
    case 501:
    case 502:
    case 503:
    case 504: return RF_TTL_SRC_RES5XX;
    default: return RF_TTL_SRC_NONE;
    }
}

/* RFC 9111 4.2.2 (the statuses RFC 9110 15.1 calls heuristically cacheable). */
static bool s_heuristic_status(int status)
{
    switch (status) {
    case 200:
    case 203:
    case 204:
    case 206:
    case 300:
    case 301:
    case 308:
    case 404:
    case 405:
    case 410:
    case 414:
    case 501: return true;
    default: return false;
    }
}

static int64_t s_rule_ttl(const rf_ttl_conf_t *c, rf_ttl_source_t src)
{
    switch (src) {
    case RF_TTL_SRC_RES2XX: return s_clamp(c->res2xx.value);
    case RF_TTL_SRC_NOCACHE: return s_clamp(c->nocache.value);
    case RF_TTL_SRC_RES3XX: return s_clamp(c->res3xx);
    case RF_TTL_SRC_RES4XX: return s_clamp(c->res4xx);
    case RF_TTL_SRC_RES5XX: return s_clamp(c->res5xx);
    default: return 0;
    }
}

static void s_refuse(rf_ttl_verdict_t *out, const char *why)
{
    out->storable = false;
    out->why_not = why;
    out->ttl = out->lifetime = 0;
    out->source = RF_TTL_SRC_NONE;
    out->no_cache = out->must_revalidate = out->heuristic = out->bad_freshness = false;
    out->stale_while_revalidate = out->stale_if_error = 0;
    out->strip_set_cookie = out->strip_fields = false;
    out->client_max_age = -1;
}

/* The corrected initial age (RFC 9111 4.2.3) at response_time, with
 * date the Date value (or response_time when there is none). */
static int64_t s_age(const s_view_t *v, int64_t date, int64_t request_time, int64_t response_time)
{
    int64_t age_value = 0;
    const rf_hdr_t *l = s_first(v, "age");
    if (l != NULL) {
        /* a list-valued Age: its first member; invalid: ignored (RFC 9111 5.1) */
        size_t an;
        const char *a = s_val(l, &an);
        const char *comma = memchr(a, ',', an);
        if (comma != NULL)
            an = (size_t)(comma - a);
        s_trim(&a, &an);
        int64_t x = s_delta(a, an);
        if (x >= 0)
            age_value = x;
    }
    int64_t apparent = s_clamp(response_time - date);
    int64_t delay = s_clamp(response_time - request_time);
    int64_t corrected = s_clamp(age_value + delay);
    return apparent > corrected ? apparent : corrected;
}

/* Why the response may not be stored at all (steps 1-5), NULL if it may. */
static const char *s_why_not(const s_cc_t *cc, rf_ttl_source_t cls, const s_view_t *v, bool req_authorization)
{
    if (cc->no_store)
        return "no-store";
    if (cc->private_)
        return "private";
    if (req_authorization && !cc->public_ && !cc->s_maxage.seen && !cc->must_revalidate)
        return "authorization";
    if (cls == RF_TTL_SRC_NONE)
        return "status";
    bool vary_star = false;
    s_iter_t it = s_iter(v, "vary");
    const rf_hdr_t *l;
    size_t len;
    while ((l = s_next(&it)) != NULL) {
        const char *val = s_val(l, &len);
        s_each(val, len, s_vary_elem, &vary_star);
    }
    return vary_star ? "vary-star" : NULL;
}

/* Step 6b: the origin's explicit lifetime, s-maxage > max-age > Expires. */
static int64_t s_explicit_lifetime(const s_cc_t *cc, int64_t expires, int64_t date, bool *bad)
{
    const s_delta_dir_t *dd = cc->s_maxage.seen ? &cc->s_maxage : cc->max_age.seen ? &cc->max_age : NULL;
    if (dd != NULL) {
        *bad = dd->bad;
        return dd->bad ? 0 : dd->v;
    }
    *bad = expires < 0; /* "0", garbage, disagreeing lines: already expired */
    return expires < 0 ? 0 : s_clamp(expires - date);
}

static void s_decide(const rf_ttl_conf_t *c, int status, const s_view_t *v, int64_t request_time, int64_t response_time,
                     bool req_authorization, rf_ttl_verdict_t *out)
{
    memset(out, 0, sizeof(*out));
    bool present;
    int64_t date = s_date_field(v, "date", &present);
    if (date < 0)
        date = response_time; /* no or bad Date: the time we received it */
    int64_t age = s_age(v, date, request_time, response_time);

    s_cc_t cc;
    s_cc_read(v, &cc);
    rf_ttl_source_t cls = s_class(status);
    const char *why = s_why_not(&cc, cls, v, req_authorization);
    s_refuse(out, why);
    out->age = age;
    if (why != NULL)
        return;

    out->storable = true;
    out->must_revalidate = cc.must_revalidate || cc.proxy_revalidate || cc.s_maxage.seen;
    int64_t lm = s_date_field(v, "last-modified", &present);
    const rf_hdr_t *etag = s_first(v, "etag");
    out->has_validator = lm >= 0 || (etag != NULL && etag->value != NULL && etag->value_len > 0);
    out->strip_set_cookie = s_first(v, "set-cookie") != NULL;
    out->strip_fields = out->strip_set_cookie || cc.private_fields || cc.no_cache_fields;

    bool expires_present;
    int64_t expires = s_expires(v, &expires_present);
    bool explicit_ = cc.s_maxage.seen || cc.max_age.seen || expires_present;

    if (!c->override_origin && cc.no_cache) {
        /* 6a: revalidate before every use */
        out->source = RF_TTL_SRC_NOCACHE;
        out->no_cache = true;
    } else if (!c->override_origin && explicit_) {
        /* 6b */
        out->source = RF_TTL_SRC_ORIGIN;
        out->lifetime = s_explicit_lifetime(&cc, expires, date, &out->bad_freshness);
        out->ttl = s_clamp(out->lifetime - age);
    } else {
        /* 6c, 6d, 7: the vhost's rules */
        bool nocache_class = cc.no_cache || cc.must_revalidate || cc.proxy_revalidate;
        out->source = nocache_class ? RF_TTL_SRC_NOCACHE : cls;
        int64_t ttl = s_rule_ttl(c, out->source);
        int pct = c->heuristic_percent > 100 ? 100 : c->heuristic_percent;
        if (!c->override_origin && out->source != RF_TTL_SRC_NOCACHE && pct > 0 && s_heuristic_status(status) &&
            lm >= 0 && lm <= date) {
            int64_t h = s_clamp(s_clamp((date - lm) * pct / 100) - age);
            if (h < ttl) {
                ttl = h;
                out->heuristic = true;
            }
        }
        out->ttl = out->lifetime = ttl;
    }

    if (out->source == RF_TTL_SRC_NOCACHE && c->nocache_max_age > 0)
        out->client_max_age = s_clamp(c->nocache_max_age);
    if (!out->must_revalidate && !out->no_cache) {
        out->stale_while_revalidate = cc.swr.bad ? 0 : cc.swr.v;
        out->stale_if_error = cc.sie.bad ? 0 : cc.sie.v;
    }
}

int rf_ttl_decide(const rf_ttl_conf_t *c, int status, const rf_hdr_t *h, size_t n, int64_t request_time,
                  int64_t response_time, bool req_authorization, rf_ttl_verdict_t *out)
{
    if (out != NULL) {
        memset(out, 0, sizeof(*out));
        s_refuse(out, "bad-arguments");
    }
    if (c == NULL || out == NULL || (h == NULL && n > 0))
        return -1;
    s_view_t v = {.a = h, .na = n};
    s_decide(c, status, &v, request_time, response_time, req_authorization, out);
    return 0;
}

int64_t rf_ttl_grow(const rf_ttl_rule_t *r, int64_t prev)
{
    if (r == NULL)
        return 0;
    int64_t cap = s_clamp(r->max > r->value ? r->max : r->value);
    int ratio = r->ratio < 0 ? 0 : r->ratio > 100 ? 100 : r->ratio;
    prev = s_clamp(prev);
    int64_t next = prev + (prev * ratio + 99) / 100;
    return next > cap ? cap : next;
}

static const rf_ttl_rule_t *s_growing_rule(const rf_ttl_conf_t *c, rf_ttl_source_t src)
{
    return src == RF_TTL_SRC_RES2XX ? &c->res2xx : src == RF_TTL_SRC_NOCACHE ? &c->nocache : NULL;
}

int rf_ttl_after_304(const rf_ttl_conf_t *c, int status_of_stored, const rf_ttl_verdict_t *prev, const rf_hdr_t *stored,
                     size_t n_stored, const rf_hdr_t *h304, size_t n304, int64_t request_time, int64_t response_time,
                     bool req_authorization, rf_ttl_verdict_t *out)
{
    if (out != NULL) {
        memset(out, 0, sizeof(*out));
        s_refuse(out, "bad-arguments");
    }
    if (c == NULL || out == NULL || (stored == NULL && n_stored > 0) || (h304 == NULL && n304 > 0))
        return -1;
    s_view_t v = {.a = h304, .na = n304, .b = stored, .nb = n_stored};
    s_decide(c, status_of_stored, &v, request_time, response_time, req_authorization, out);
    const rf_ttl_rule_t *rule = s_growing_rule(c, out->source);
    if (prev != NULL && prev->storable && out->storable && !out->no_cache && !prev->no_cache && rule != NULL &&
        prev->source == out->source) {
        int64_t grown = rf_ttl_grow(rule, prev->lifetime);
        if (grown > out->lifetime) {
            out->lifetime = out->ttl = grown;
            out->heuristic = false;
        }
    }
    return 0;
}

int64_t rf_ttl_on_origin_error(const rf_ttl_conf_t *c, const rf_ttl_verdict_t *stored, int status)
{
    if (c == NULL || stored == NULL || !stored->storable || stored->must_revalidate || stored->no_cache)
        return -1;
    if (status == 0)
        return c->origin_error_ttl > 0 ? s_clamp(c->origin_error_ttl) : -1;
    bool as_304 =
        (status >= 400 && status <= 499 && c->extend_by_4xx) || (status >= 500 && status <= 599 && c->extend_by_5xx);
    if (!as_304)
        return -1;
    const rf_ttl_rule_t *rule = s_growing_rule(c, stored->source);
    return rule != NULL ? rf_ttl_grow(rule, stored->lifetime) : s_clamp(stored->lifetime);
}

/* ---- withheld fields --------------------------------------------------- */

typedef struct {
    const char *name;
    size_t name_len;
    bool hit;
} s_strip_t;

static void s_field_elem(const char *e, size_t n, bool unterminated, void *arg)
{
    (void)unterminated;
    s_strip_t *st = arg;
    if (n == st->name_len && strncasecmp(e, st->name, n) == 0)
        st->hit = true;
}

static void s_strip_elem(const char *e, size_t n, bool unterminated, void *arg)
{
    s_strip_t *st = arg;
    s_dir_t d = s_directive(e, n, unterminated);
    if (!s_eq(d.name, d.name_len, "private") && !s_eq(d.name, d.name_len, "no-cache"))
        return;
    if (s_has_field_list(&d))
        s_each(d.val, d.val_len, s_field_elem, st);
}

bool rf_ttl_strip_field(const rf_hdr_t *h, size_t n, const char *name, size_t name_len)
{
    if (name == NULL || name_len == 0)
        return false;
    if (s_eq(name, name_len, "set-cookie"))
        return true;
    if (h == NULL)
        return false;
    s_strip_t st = {.name = name, .name_len = name_len};
    for (size_t i = 0; i < n && !st.hit; i++)
        if (s_name_is(&h[i], "cache-control") && h[i].value != NULL)
            s_each(h[i].value, h[i].value_len, s_strip_elem, &st);
    return st.hit;
}

/* ---- request directives ------------------------------------------------ */

static void s_req_elem(const char *e, size_t n, bool unterminated, void *arg)
{
    rf_ttl_req_t *r = arg;
    s_dir_t d = s_directive(e, n, unterminated);
    int64_t x = d.bad ? -1 : s_delta(d.val, d.val_len);
    if (s_eq(d.name, d.name_len, "no-cache"))
        r->no_cache = true;
    else if (s_eq(d.name, d.name_len, "no-store"))
        r->no_store = true;
    else if (s_eq(d.name, d.name_len, "only-if-cached"))
        r->only_if_cached = true;
    else if (s_eq(d.name, d.name_len, "max-age")) {
        if (x >= 0 && (r->max_age < 0 || x < r->max_age))
            r->max_age = x;
    } else if (s_eq(d.name, d.name_len, "max-stale")) {
        if (!d.has_val)
            x = INT64_MAX; /* any staleness */
        if (x >= 0 && (r->max_stale < 0 || x < r->max_stale))
            r->max_stale = x;
    } else if (s_eq(d.name, d.name_len, "min-fresh")) {
        if (x > r->min_fresh)
            r->min_fresh = x;
    }
}

static void s_pragma_elem(const char *e, size_t n, bool unterminated, void *arg)
{
    (void)unterminated;
    if (s_eq(e, n, "no-cache"))
        ((rf_ttl_req_t *)arg)->no_cache = true;
}

void rf_ttl_request(const rf_hdr_t *h, size_t n, rf_ttl_req_t *out)
{
    if (out == NULL)
        return;
    *out = (rf_ttl_req_t){.max_age = -1, .max_stale = -1, .min_fresh = 0};
    if (h == NULL)
        return;
    bool has_cc = false;
    for (size_t i = 0; i < n; i++) {
        if (s_name_is(&h[i], "cache-control")) {
            has_cc = true;
            if (h[i].value != NULL)
                s_each(h[i].value, h[i].value_len, s_req_elem, out);
        }
    }
    /* Pragma counts only without Cache-Control (RFC 9111 5.4) */
    for (size_t i = 0; i < n && !has_cc; i++)
        if (s_name_is(&h[i], "pragma") && h[i].value != NULL)
            s_each(h[i].value, h[i].value_len, s_pragma_elem, out);
}
