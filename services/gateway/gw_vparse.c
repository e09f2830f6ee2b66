/*  gw_vparse — see gw_vparse.h. */
#include <stdio.h>
#include <string.h>

#include "gw_vparse.h"

int64_t gw_vparse_digits(const char *s, size_t n, int64_t limit)
{
    int64_t v = 0;
    if (n == 0 || n > 12)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v < limit ? v : -1;
}

int64_t gw_vparse_time(const char *s, size_t n)
{
    const char *dot = memchr(s, '.', n);
    size_t whole = dot ? (size_t)(dot - s) : n;
    int64_t ms = 0;
    if (dot != NULL) {
        size_t fl = n - whole - 1;
        int64_t f = gw_vparse_digits(dot + 1, fl, 1000);
        if (fl > 3 || f < 0)
            return -1;
        for (size_t i = fl; i < 3; i++)
            f *= 10;
        ms = f;
    }
    int64_t secs = 0;
    size_t start = 0;
    int fields = 0;
    for (size_t i = 0; i <= whole; i++) {
        if (i < whole && s[i] != ':')
            continue;
        /* one field: any seconds; several: hh:mm:ss, the later ones two digits below 60 */
        int64_t v =
            gw_vparse_digits(s + start, i - start, fields == 0 && i == whole ? GW_VPARSE_MAX_MS / 1000 + 1 : 60);
        if (v < 0 || ++fields > 3 || (fields > 1 && i - start != 2))
            return -1;
        secs = secs * 60 + v;
        start = i + 1;
    }
    ms += secs * 1000;
    return ms <= GW_VPARSE_MAX_MS ? ms : -1;
}

int64_t gw_vparse_seconds(const char *s, size_t n)
{
    if (n == 0 || memchr(s, ':', n) != NULL)
        return -1;
    return gw_vparse_time(s, n);
}

int gw_vparse_segment(const char *s, size_t n, const char *prefix, const char *suffix)
{
    size_t pl = strlen(prefix), xl = strlen(suffix);
    if (n <= pl + xl || memcmp(s, prefix, pl) != 0 || memcmp(s + n - xl, suffix, xl) != 0)
        return -1;
    if (s[pl] == '0' && n - xl - pl > 1)
        return -1; /* one spelling per segment */
    return (int)gw_vparse_digits(s + pl, n - xl - pl, GW_VPARSE_SEG_MAX);
}

int gw_vparse_ranges(const char *s, size_t n, int64_t ms[][2], int *count, char *why, size_t why_len)
{
    const char *p = s, *end = s + n;
    *count = 0;
    for (;;) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *re = comma ? comma : end;
        const char *dash = memchr(p, '-', (size_t)(re - p));
        if (*count == GW_VPARSE_MAX_RANGES) {
            snprintf(why, why_len, "at most %d ranges", GW_VPARSE_MAX_RANGES);
            return -1;
        }
        int64_t a = dash ? gw_vparse_seconds(p, (size_t)(dash - p)) : -1;
        int64_t b = !dash ? -1 : dash + 1 < re ? gw_vparse_seconds(dash + 1, (size_t)(re - dash - 1)) : -2;
        if (a < 0 || b == -1 || (b >= 0 && b <= a)) {
            int l = (int)(re - p > 40 ? 40 : re - p);
            snprintf(why, why_len, "'%.*s' is not START-END in seconds (END after START, or empty: to the end)", l, p);
            return -1;
        }
        ms[*count][0] = a;
        ms[*count][1] = b >= 0 ? b : -1;
        (*count)++;
        if (comma == NULL)
            return 0;
        p = comma + 1;
    }
}

int gw_vparse_query_param(const char *q, size_t qlen, const char *name, const char **out, size_t *out_len)
{
    size_t nl = strlen(name);
    const char *p = q, *end = q + qlen;
    if (p < end && *p == '?')
        p++;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *e = amp ? amp : end;
        if ((size_t)(e - p) > nl && memcmp(p, name, nl) == 0 && p[nl] == '=') {
            *out = p + nl + 1;
            *out_len = (size_t)(e - p - nl - 1);
            return 1;
        }
        p = amp ? amp + 1 : end;
    }
    return 0;
}
