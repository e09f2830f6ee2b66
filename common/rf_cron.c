/*  rf_cron — 5-field cron expressions (see rf_cron.h for the syntax and
 *  the time semantics).
 *
 *  Parsing is a single left-to-right pass over at most 256 bytes, field by
 *  field, item by item, with no allocation. The search for the next run
 *  works on "wall" seconds — the civil date and time of the zone counted as
 *  if it were UTC — and walks month, day, hour and minute with bit masks
 *  (s_next_wall); each matching wall minute is then mapped back to unix
 *  time (s_resolve), which is trivial in UTC and, in local time, finds its
 *  first occurrence or, inside a spring-forward gap, the end of the gap.
 *  Civil dates use Howard Hinnant's days_from_civil / civil_from_days.
 */
#include "rf_cron.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define S_DAY 86400
#define S_MINUTE_MASK ((UINT64_C(1) << 60) - 1)
#define S_HOUR_MASK UINT32_C(0xffffff)
#define S_DOM_MASK UINT32_C(0xfffffffe)
#define S_MONTH_MASK UINT32_C(0x1ffe)
#define S_DOW_MASK 0x7f

/* ---------------------------------------------------------------- parse */

typedef struct {
    const char *name;
    int lo, hi;  /* values as written (day-of-week: 0-7) */
    int star_hi; /* the last value of `*` (day-of-week: 6) */
} s_field_t;

static const s_field_t s_fields[5] = {
    {"minute", 0, 59, 59}, {"hour", 0, 23, 23},      {"day-of-month", 1, 31, 31},
    {"month", 1, 12, 12},  {"day-of-week", 0, 7, 6},
};

static const char s_months[12][4] = {"jan", "feb", "mar", "apr", "may", "jun",
                                     "jul", "aug", "sep", "oct", "nov", "dec"};
static const char s_days[7][4] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat"};

typedef struct {
    char *why;
    size_t why_len;
} s_err_t;

static bool s_space(char ch)
{
    return ch == ' ' || ch == '\t';
}

static bool s_digit(char ch)
{
    return ch >= '0' && ch <= '9';
}

static bool s_alpha(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z');
}

static char s_lower(char ch)
{
    return ch >= 'A' && ch <= 'Z' ? (char)(ch - 'A' + 'a') : ch;
}

/* A token for a message: at most 40 bytes, non-printable bytes as '?'. */
static void s_tok(char *buf, size_t size, const char *p, size_t n)
{
    size_t k = 0, max = n > 40 ? 40 : n;
    for (size_t i = 0; i < max && k + 1 < size; i++)
        buf[k++] = p[i] >= 0x20 && p[i] < 0x7f ? p[i] : '?';
    for (size_t i = 0; max < n && i < 3 && k + 1 < size; i++)
        buf[k++] = '.';
    buf[k] = '\0';
}

/* Writes "field N (name): <msg>" (or just msg when f < 0); returns -1. */
__attribute__((format(printf, 3, 4))) static int s_fail(s_err_t *e, int f, const char *fmt, ...)
{
    if (e->why == NULL || e->why_len == 0)
        return -1;
    char msg[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (f < 0)
        snprintf(e->why, e->why_len, "%s", msg);
    else
        snprintf(e->why, e->why_len, "field %d (%s): %s", f + 1, s_fields[f].name, msg);
    return -1;
}

/* One value at p[*i..n) of the item p[0..n): digits, or a name in the
 * month / day-of-week fields. *is_sun is set when it was the name "sun". */
static int s_value(int f, const char *p, size_t n, size_t *i, int *v, bool *is_sun, s_err_t *e)
{
    const s_field_t *fd = &s_fields[f];
    size_t s = *i;
    char tok[48], tok2[48];
    *is_sun = false;
    if (*i < n && s_digit(p[*i])) {
        long val = 0;
        while (*i < n && s_digit(p[*i])) {
            if (val < 100000)
                val = val * 10 + (p[*i] - '0');
            (*i)++;
        }
        if (val < fd->lo || val > fd->hi) {
            s_tok(tok, sizeof(tok), p + s, *i - s);
            return s_fail(e, f, "%s is out of range %d-%d", tok, fd->lo, fd->hi);
        }
        *v = (int)val;
        return 0;
    }
    if (*i < n && s_alpha(p[*i])) {
        while (*i < n && s_alpha(p[*i]))
            (*i)++;
        s_tok(tok, sizeof(tok), p + s, *i - s);
        if (f != 3 && f != 4) {
            s_tok(tok2, sizeof(tok2), p, n);
            return s_fail(e, f, "unexpected '%s' in '%s' (names are for month and day-of-week)", tok, tok2);
        }
        if (*i - s == 3) {
            char low[3] = {s_lower(p[s]), s_lower(p[s + 1]), s_lower(p[s + 2])};
            const char(*tab)[4] = f == 3 ? s_months : s_days;
            int cnt = f == 3 ? 12 : 7;
            for (int k = 0; k < cnt; k++)
                if (memcmp(tab[k], low, 3) == 0) {
                    *v = f == 3 ? k + 1 : k;
                    *is_sun = f == 4 && k == 0;
                    return 0;
                }
        }
        return s_fail(e, f, "unknown name '%s' (%s)", tok, f == 3 ? "jan..dec" : "sun..sat");
    }
    s_tok(tok2, sizeof(tok2), p, n);
    if (*i >= n)
        return s_fail(e, f, "missing value at the end of '%s'", tok2);
    s_tok(tok, sizeof(tok), p + *i, 1);
    return s_fail(e, f, "unexpected '%s' in '%s'", tok, tok2);
}

/* One list item p[0..n) of field f, or-ed into *bits (bit v for value v). */
static int s_item(int f, const char *p, size_t n, uint64_t *bits, s_err_t *e)
{
    const s_field_t *fd = &s_fields[f];
    char tok[48], tok2[48];
    size_t i = 0;
    int a, b, step = 1;
    bool sun;
    if (n == 0)
        return -2; /* the caller names the list */
    if (p[0] == '*') {
        a = fd->lo, b = fd->star_hi, i = 1;
    } else {
        if (s_value(f, p, n, &i, &a, &sun, e) != 0)
            return -1;
        b = a;
        if (i < n && p[i] == '-') {
            i++;
            if (s_value(f, p, n, &i, &b, &sun, e) != 0)
                return -1;
            if (f == 4 && sun && a > 0)
                b = 7; /* "fri-sun" */
            if (b < a) {
                s_tok(tok, sizeof(tok), p, n);
                return s_fail(e, f, "range '%s' is reversed", tok);
            }
        } else if (i < n && p[i] == '/') {
            b = fd->hi; /* A/N = A-max/N */
        }
    }
    if (i < n && p[i] == '/') {
        size_t s = ++i;
        long val = 0;
        while (i < n && s_digit(p[i])) {
            if (val < 100000)
                val = val * 10 + (p[i] - '0');
            i++;
        }
        s_tok(tok2, sizeof(tok2), p, n);
        if (i == s)
            return s_fail(e, f, "missing step after '/' in '%s'", tok2);
        int span = fd->star_hi - fd->lo + 1;
        if (val < 1 || val > span) {
            s_tok(tok, sizeof(tok), p + s, i - s);
            return s_fail(e, f, "step %s in '%s' is out of range 1-%d", tok, tok2, span);
        }
        step = (int)val;
    }
    if (i < n) {
        s_tok(tok, sizeof(tok), p + i, 1);
        s_tok(tok2, sizeof(tok2), p, n);
        return s_fail(e, f, "unexpected '%s' in '%s'", tok, tok2);
    }
    for (int v = a; v <= b; v += step)
        *bits |= UINT64_C(1) << v;
    return 0;
}

/* Field f, p[0..n) (non-empty, no blanks): a comma-separated list. */
static int s_field(int f, const char *p, size_t n, uint64_t *bits, bool *star, s_err_t *e)
{
    *bits = 0;
    *star = (n == 1 && p[0] == '*') || (n == 3 && memcmp(p, "*/1", 3) == 0);
    size_t s = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && p[i] != ',')
            continue;
        int rc = s_item(f, p + s, i - s, bits, e);
        if (rc == -2) {
            char tok[48];
            s_tok(tok, sizeof(tok), p, n);
            return s_fail(e, f, "empty list item in '%s'", tok);
        }
        if (rc != 0)
            return -1;
        s = i + 1;
    }
    return 0;
}

static const struct {
    const char *name, *expr;
} s_macros[] = {
    {"@yearly", "0 0 1 1 *"}, {"@annually", "0 0 1 1 *"}, {"@monthly", "0 0 1 * *"}, {"@weekly", "0 0 * * 0"},
    {"@daily", "0 0 * * *"},  {"@midnight", "0 0 * * *"}, {"@hourly", "0 * * * *"},
};

/* The five fields of p[0..n) (no macro). */
static int s_fields_parse(const char *p, size_t n, rf_cron_t *out, s_err_t *e)
{
    rf_cron_t c = {0};
    char tok[48];
    size_t i = 0;
    for (int f = 0; f < 5; f++) {
        while (i < n && s_space(p[i]))
            i++;
        if (i == n) {
            if (f == 0)
                return s_fail(e, -1, "empty expression");
            return s_fail(e, f, "missing: expected 5 fields (minute hour day-of-month month day-of-week)");
        }
        size_t s = i;
        while (i < n && !s_space(p[i]))
            i++;
        uint64_t bits;
        bool star;
        if (s_field(f, p + s, i - s, &bits, &star, e) != 0)
            return -1;
        switch (f) {
        case 0: c.minute = bits; break;
        case 1: c.hour = (uint32_t)bits; break;
        case 2: c.dom = (uint32_t)bits, c.dom_star = star; break;
        case 3: c.month = (uint32_t)bits; break;
        default: c.dow = (uint8_t)((bits & S_DOW_MASK) | (bits >> 7 & 1)), c.dow_star = star; break;
        }
    }
    while (i < n && s_space(p[i]))
        i++;
    if (i < n) {
        s_tok(tok, sizeof(tok), p + i, n - i);
        return s_fail(e, -1, "trailing '%s' after field 5 (day-of-week): expected 5 fields", tok);
    }
    *out = c;
    return 0;
}

int rf_cron_parse_n(const char *text, size_t len, rf_cron_t *out, char *why, size_t why_len)
{
    s_err_t e = {why, why_len};
    char tok[48];
    if (why != NULL && why_len > 0)
        why[0] = '\0';
    if (text == NULL)
        return s_fail(&e, -1, "no expression");
    if (out == NULL)
        return s_fail(&e, -1, "no output");
    if (len > RF_CRON_TEXT_MAX)
        return s_fail(&e, -1, "expression longer than %d bytes", RF_CRON_TEXT_MAX);
    size_t i = 0;
    while (i < len && s_space(text[i]))
        i++;
    if (i < len && text[i] == '@') {
        size_t s = i;
        while (i < len && !s_space(text[i]))
            i++;
        size_t mlen = i - s;
        while (i < len && s_space(text[i]))
            i++;
        s_tok(tok, sizeof(tok), text + s, mlen);
        for (size_t k = 0; k < sizeof(s_macros) / sizeof(s_macros[0]); k++) {
            const char *m = s_macros[k].name;
            if (strlen(m) != mlen)
                continue;
            size_t j = 0;
            while (j < mlen && s_lower(text[s + j]) == m[j])
                j++;
            if (j < mlen)
                continue;
            if (i < len) {
                char tok2[48];
                s_tok(tok2, sizeof(tok2), text + i, len - i);
                return s_fail(&e, -1, "trailing '%s' after %s", tok2, tok);
            }
            return s_fields_parse(s_macros[k].expr, strlen(s_macros[k].expr), out, &e);
        }
        return s_fail(&e, -1, "unknown macro '%s' (@yearly @annually @monthly @weekly @daily @midnight @hourly)", tok);
    }
    return s_fields_parse(text, len, out, &e);
}

int rf_cron_parse(const char *text, rf_cron_t *out, char *why, size_t why_len)
{
    size_t len = text ? strnlen(text, RF_CRON_TEXT_MAX + 1) : 0;
    return rf_cron_parse_n(text, len, out, why, why_len);
}

/* ---------------------------------------------------------------- time */

static int64_t s_fdiv(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

static int64_t s_fmod(int64_t a, int64_t b)
{
    return a - s_fdiv(a, b) * b;
}

static int64_t s_days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = s_fdiv(y, 400);
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static void s_civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
    z += 719468;
    int64_t era = s_fdiv(z, 146097);
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
    static const int n[13] = {0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
        return 29;
    return n[m];
}

/* Day z (days since 1970-01-01, month m, day of month d) matches. */
static bool s_day_ok(const rf_cron_t *c, int64_t z, int d)
{
    bool dom = c->dom >> d & 1, dow = c->dow >> s_fmod(z + 4, 7) & 1;
    return c->dom_star || c->dow_star ? dom && dow : dom || dow;
}

/* Wall second w (minute-aligned) matches every field. */
static bool s_wall_ok(const rf_cron_t *c, int64_t w)
{
    int64_t z = s_fdiv(w, S_DAY), sod = w - z * S_DAY, y;
    int m, d;
    s_civil_from_days(z, &y, &m, &d);
    return (c->minute >> (sod % 3600 / 60) & 1) && (c->hour >> (sod / 3600) & 1) && (c->month >> m & 1) &&
           s_day_ok(c, z, d);
}

/* The first minute-aligned wall second >= w (minute-aligned) that matches,
 * in a year <= ylimit. Walks months, days, hours, minutes with masks. */
static bool s_next_wall(const rf_cron_t *c, int64_t w, int64_t ylimit, int64_t *res)
{
    uint32_t months = c->month & S_MONTH_MASK;
    if ((c->minute & S_MINUTE_MASK) == 0 || (c->hour & S_HOUR_MASK) == 0 || months == 0 ||
        ((c->dom & S_DOM_MASK) == 0 && (c->dow & S_DOW_MASK) == 0))
        return false;
    int64_t z = s_fdiv(w, S_DAY), sod = w - z * S_DAY, y;
    int m, d, h = (int)(sod / 3600), mi = (int)(sod % 3600 / 60);
    s_civil_from_days(z, &y, &m, &d);
    for (int guard = 0; guard < 100000; guard++) {
        if (y > ylimit)
            return false;
        if (!(months >> m & 1)) {
            uint32_t later = months & ~((UINT32_C(2) << m) - 1);
            if (later != 0) {
                m = __builtin_ctz(later);
            } else {
                y++;
                m = __builtin_ctz(months);
            }
            d = 1, h = 0, mi = 0;
            continue;
        }
        if (d > s_mdays(y, m)) {
            d = 1, h = 0, mi = 0;
            if (++m > 12)
                m = 1, y++;
            continue;
        }
        z = s_days_from_civil(y, m, d);
        if (!s_day_ok(c, z, d)) {
            d++, h = 0, mi = 0;
            continue;
        }
        uint32_t hours = c->hour & S_HOUR_MASK & ~((UINT32_C(1) << h) - 1);
        if (hours == 0) {
            d++, h = 0, mi = 0;
            continue;
        }
        int nh = __builtin_ctz(hours);
        if (nh != h)
            h = nh, mi = 0;
        uint64_t mins = c->minute & S_MINUTE_MASK & ~((UINT64_C(1) << mi) - 1);
        if (mins == 0) {
            mi = 0;
            if (++h == 24)
                h = 0, d++;
            continue;
        }
        mi = __builtin_ctzll(mins);
        *res = z * S_DAY + h * 3600 + mi * 60;
        return true;
    }
    return false;
}

/* The UTC offset at unix time t (0 in UTC mode). */
static int s_off(int64_t t, bool utc, int64_t *off)
{
    if (utc) {
        *off = 0;
        return 0;
    }
    time_t tt = (time_t)t;
    struct tm tm;
    if (localtime_r(&tt, &tm) == NULL)
        return -1;
    *off = tm.tm_gmtoff;
    return 0;
}

enum { S_EXACT, S_GAP, S_NONE };

/* The first unix second > t0 at which the offset is no longer off0, given
 * that it is `off1` != off0 at t1 > t0 (one change in between). */
static int s_change(int64_t t0, int64_t off0, int64_t t1, int64_t *out)
{
    while (t1 - t0 > 1) {
        int64_t mid = t0 + (t1 - t0) / 2, o;
        if (s_off(mid, false, &o) != 0)
            return -1;
        if (o == off0)
            t0 = mid;
        else
            t1 = mid;
    }
    *out = t1;
    return 0;
}

/* The first instant at or after T whose wall second is 0. */
static int s_gap_end(int64_t T, int64_t *out)
{
    int64_t o;
    if (s_off(T, false, &o) != 0)
        return -1;
    *out = T + s_fmod(-(T + o), 60);
    return 0;
}

/* Maps wall second w back to unix time: S_EXACT with its first occurrence,
 * S_GAP with the end of the spring-forward gap w falls in, or S_NONE. */
static int s_resolve(int64_t w, bool utc, int64_t *t, int *kind)
{
    if (utc) {
        *t = w, *kind = S_EXACT;
        return 0;
    }
    /* any t with t + off(t) == w lies in [w - 14 h, w + 12 h]; ob and oa
     * are the offsets before and after that window, and t = w - o is an
     * occurrence iff off(t) == o */
    int64_t ob, oa, best = INT64_MAX;
    if (s_off(w - 54000, false, &ob) != 0 || s_off(w + 46800, false, &oa) != 0)
        return -1;
    int64_t cand[2] = {ob, oa};
    for (int k = 0; k < 2; k++) {
        int64_t o, o2;
        if (s_off(w - cand[k], false, &o) != 0)
            return -1;
        if (o == cand[k]) {
            best = w - o < best ? w - o : best;
        } else if (o != ob && o != oa) { /* a third offset (two changes in the window) */
            if (s_off(w - o, false, &o2) != 0)
                return -1;
            if (o2 == o && w - o < best)
                best = w - o;
        }
    }
    if (best != INT64_MAX) {
        *t = best, *kind = S_EXACT;
        return 0;
    }
    /* a gap: ob before it, oa after it (oa > ob), the change in
     * (w - oa, w - ob] */
    int64_t T;
    if (oa <= ob) {
        *kind = S_NONE;
        return 0;
    }
    if (s_change(w - oa, ob, w - ob, &T) != 0 || s_gap_end(T, t) != 0)
        return -1;
    *kind = S_GAP;
    return 0;
}

static int64_t s_year_of(int64_t w)
{
    int64_t y;
    int m, d;
    s_civil_from_days(s_fdiv(w, S_DAY), &y, &m, &d);
    return y;
}

bool rf_cron_matches(const rf_cron_t *c, int64_t t, bool utc)
{
    int64_t o, w, r;
    int kind;
    if (c == NULL || t < 0 || t > RF_CRON_TIME_MAX || s_off(t, utc, &o) != 0)
        return false;
    w = t + o;
    if (s_fmod(w, 60) != 0)
        return false;
    if (s_wall_ok(c, w) && s_resolve(w, utc, &r, &kind) == 0 && kind == S_EXACT && r == t)
        return true;
    if (utc)
        return false;
    /* the first wall minute after a spring-forward change, when a skipped
     * minute matches */
    int64_t o1, T, g, wm;
    if (s_off(t - 60, false, &o1) != 0 || o1 >= o)
        return false;
    if (s_change(t - 60, o1, t, &T) != 0 || s_gap_end(T, &g) != 0 || g != t)
        return false;
    int64_t from = T + o1 + s_fmod(-(T + o1), 60); /* first skipped wall minute */
    return s_next_wall(c, from, s_year_of(from) + 1, &wm) && wm < T + o;
}

int64_t rf_cron_next(const rf_cron_t *c, int64_t t_after, bool utc)
{
    int64_t o;
    if (c == NULL || t_after < 0 || t_after > RF_CRON_TIME_MAX || s_off(t_after, utc, &o) != 0)
        return -1;
    int64_t w = s_fdiv(t_after + o, 60) * 60 + 60;
    int64_t ylimit = s_year_of(w) + RF_CRON_HORIZON_YEARS;
    /* each round moves w forward; only a repeated (fall-back) stretch
     * before t_after takes more than one, a minute at a time */
    for (int guard = 0; guard < 20000; guard++) {
        int64_t t, og;
        int kind;
        if (!s_next_wall(c, w, ylimit, &w) || s_resolve(w, utc, &t, &kind) != 0)
            return -1;
        if (kind != S_NONE && t > t_after)
            return t <= RF_CRON_TIME_MAX ? t : -1;
        if (kind == S_GAP) { /* the gap ended by t_after: go past it */
            if (s_off(t, utc, &og) != 0)
                return -1;
            w = t + og > w ? t + og : w + 60;
        } else {
            w += 60;
        }
    }
    return -1;
}
