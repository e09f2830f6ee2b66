/*  libFuzzer target for services/gateway/gw_http_parse.c: the Range,
 *  If-Range and If-None-Match values a cache hit answers itself, and the
 *  purge API's query string and target URLs. All come straight from clients.
 *
 *  Input: 8 bytes, the stored body's length (little-endian), then text that
 *  the first '\n' splits in two, A and B. A is the Range value, the
 *  If-None-Match list and the If-Range value; B is the stored ETag and
 *  Last-Modified; A '\n' B whole is the query string, the value decoded and
 *  the purge URL.
 *  Besides memory safety it abort()s when:
 *    - a range is not inside the body (from <= to < total), a body of 0
 *      bytes gets a range, or the answer differs from a model of the Range
 *      rules written with strtoull (which cannot wrap);
 *    - an ETag matches that is not in the list, the answer changes with a
 *      leading ", " or with W/ on the stored tag, or a well-formed tag does
 *      not match itself;
 *    - If-Range matches something other than the stored validator, or does
 *      not match the validator itself;
 *    - decoding grows, changes text without '%', or does not undo %XX;
 *    - a query parameter or purge URL part points outside its input or is
 *      not what the split says. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw_http_parse.h"

static void *s_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL)
        abort();
    return p;
}

/* The digits of s[0..n) as a number, or UINT64_MAX past GW_RANGE_NUM_MAX. */
static uint64_t s_model_num(const char *s, size_t n)
{
    char buf[32];
    while (n > 1 && s[0] == '0') /* leading zeros add no value, only length */
        s++, n--;
    if (n >= sizeof(buf))
        return UINT64_MAX;
    memcpy(buf, s, n);
    buf[n] = '\0';
    errno = 0;
    unsigned long long v = strtoull(buf, NULL, 10);
    return errno == ERANGE || v > GW_RANGE_NUM_MAX ? UINT64_MAX : (uint64_t)v;
}

/* gw_parse_range's rules, as its header states them. */
static int s_model_range(const char *v, size_t len, uint64_t total, uint64_t *from, uint64_t *to)
{
    if (len < 6 || memcmp(v, "bytes=", 6) != 0 || memchr(v, ',', len) != NULL)
        return 0;
    const char *s = v + 6, *end = v + len;
    size_t al = 0, bl = 0;
    while (s + al < end && s[al] >= '0' && s[al] <= '9')
        al++;
    if (s + al >= end || s[al] != '-')
        return 0;
    const char *b_at = s + al + 1;
    while (b_at + bl < end && b_at[bl] >= '0' && b_at[bl] <= '9')
        bl++;
    if (b_at + bl != end || (al == 0 && bl == 0))
        return 0;
    uint64_t a = al ? s_model_num(s, al) : 0, b = bl ? s_model_num(b_at, bl) : 0;
    if (a == UINT64_MAX || b == UINT64_MAX)
        return 0;
    if (al == 0) {
        if (b == 0 || total == 0)
            return -1;
        *from = b >= total ? 0 : total - b;
        *to = total - 1;
        return 1;
    }
    if (bl && b < a)
        return 0;
    if (a >= total)
        return -1;
    *from = a;
    *to = bl && b < total ? b : total - 1;
    return 1;
}

static void s_check_range(const char *v, size_t len, uint64_t total)
{
    uint64_t from = 0, to = 0, mf = 0, mt = 0;
    int r = gw_parse_range(v, len, total, &from, &to);
    if (r < -1 || r > 1)
        abort();
    if (r == 1 && (total == 0 || from > to || to >= total))
        abort();
    int m = s_model_range(v, len, total, &mf, &mt);
    if (m != r || (r == 1 && (mf != from || mt != to)))
        abort();
    if (gw_parse_range(v, len, 0, &from, &to) == 1)
        abort();
}

/* Whether e[0..n) is a quoted tag with no quote inside, W/ or not. */
static int s_well_formed_tag(const char *e, size_t n)
{
    if (n >= 2 && e[0] == 'W' && e[1] == '/')
        e += 2, n -= 2;
    return n >= 2 && e[0] == '"' && e[n - 1] == '"' && memchr(e + 1, '"', n - 2) == NULL;
}

static void s_check_etag(const char *a, size_t al, const char *b, size_t bl)
{
    int r = gw_etag_in(a, al, b, bl);
    if (r) {
        const char *bare = b;
        size_t bn = bl;
        if (bn > 2 && b[0] == 'W' && b[1] == '/')
            bare += 2, bn -= 2;
        if (memchr(a, '*', al) == NULL && (bn > al || memmem(a, al, bare, bn) == NULL))
            abort();
    }
    char *more = s_xmalloc(al + bl + 2);
    memcpy(more, ", ", 2);
    memcpy(more + 2, a, al);
    if (gw_etag_in(more, al + 2, b, bl) != r)
        abort();
    /* W/ on the stored tag is dropped, unless it would leave nothing */
    if (bl > 0 && !(bl > 2 && b[0] == 'W' && b[1] == '/')) {
        memcpy(more, "W/", 2);
        memcpy(more + 2, b, bl);
        if (gw_etag_in(a, al, more, bl + 2) != r)
            abort();
    }
    free(more);
    if (s_well_formed_tag(b, bl) && !gw_etag_in(b, bl, b, bl))
        abort();

    /* If-None-Match wins, and is exactly the list comparison */
    gw_validators_t st = {b, bl, b, bl};
    if (gw_not_modified(a, al, a, al, &st) != r)
        abort();
    gw_validators_t none = {NULL, 0, NULL, 0};
    if (gw_not_modified(a, al, NULL, 0, &none) || gw_not_modified(NULL, 0, a, al, &none))
        abort();
    (void)gw_not_modified(NULL, 0, a, al, &st); /* HTTP-dates from both sides */

    if (gw_if_range_ok(a, al, &st) && (al != bl || memcmp(a, b, al) != 0))
        abort();
    if (!gw_if_range_ok(b, bl, &st) || gw_if_range_ok(a, al, &none))
        abort();
}

static void s_check_decode(const char *s, size_t len)
{
    char *d = s_xmalloc(len);
    memcpy(d, s, len);
    size_t n = gw_query_decode(d, len);
    if (n > len)
        abort();
    if (memchr(s, '%', len) == NULL) {
        if (n != len)
            abort();
        for (size_t i = 0; i < len; i++)
            if (d[i] != (s[i] == '+' ? ' ' : s[i]))
                abort();
    }
    /* every byte escaped decodes back to itself */
    char *e = s_xmalloc(3 * n + 1); /* snprintf's NUL */
    for (size_t i = 0; i < n; i++)
        snprintf(e + 3 * i, 4, "%%%02X", (unsigned char)d[i]);
    if (gw_query_decode(e, 3 * n) != n || memcmp(e, d, n) != 0)
        abort();
    free(e);
    free(d);
}

static void s_check_query(const char *s, size_t len)
{
    const char *cur = s, *end = s + len, *val;
    size_t vl, found = 0;
    while (gw_query_next(&cur, end, "url", &val, &vl)) {
        if (++found > len || vl == 0 || val < s + 4 || val + vl > end || memcmp(val - 4, "url=", 4) != 0 ||
            (val - 4 != s && val[-5] != '&') || memchr(val, '&', vl) != NULL || (val + vl != end && val[vl] != '&'))
            abort();
        if (cur < val + vl || cur > end)
            abort();
    }
    if (cur != end)
        abort();
}

static void s_check_purge_url(const char *s, size_t len)
{
    gw_purge_target_t t;
    const char *why = gw_purge_target_split(s, len, &t);
    if (why != NULL) {
        if (why[0] == '\0')
            abort();
        return;
    }
    const char *end = s + len;
    if (t.host_len == 0 || t.host < s || t.host + t.host_len != t.path || memchr(t.host, '/', t.host_len) != NULL)
        abort();
    if (t.path_len == 0 || t.path[0] != '/' || memchr(t.path, '?', t.path_len) != NULL)
        abort();
    if (t.query == NULL ? (t.query_len != 0 || t.path + t.path_len != end)
                        : (t.query != t.path + t.path_len || t.query[0] != '?' || t.query + t.query_len != end))
        abort();
    if (t.glob != (memchr(t.path, '*', (size_t)(end - t.path)) != NULL))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 8)
        return 0;
    uint64_t total = 0;
    for (int i = 7; i >= 0; i--)
        total = total << 8 | data[i];
    size_t len = size - 8;
    /* copies of exactly each piece, so that ASan sees reads past its end */
    char *all = s_xmalloc(len);
    memcpy(all, data + 8, len);
    const char *nl = memchr(all, '\n', len);
    size_t al = nl ? (size_t)(nl - all) : len, bl = nl ? len - al - 1 : 0;
    char *a = s_xmalloc(al), *b = s_xmalloc(bl);
    memcpy(a, all, al);
    memcpy(b, all + len - bl, bl);

    s_check_range(a, al, total);
    s_check_etag(a, al, b, bl);
    s_check_decode(all, len);
    s_check_query(all, len);
    s_check_purge_url(all, len);

    free(a);
    free(b);
    free(all);
    return 0;
}
