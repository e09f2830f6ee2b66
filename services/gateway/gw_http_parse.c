#include "gw_http_parse.h"

#include <string.h>
#include <strings.h>

#include "rf_ttl.h"

/* ---- conditional requests ------------------------------------------------------- */

bool gw_etag_in(const char *list, size_t len, const char *etag, size_t elen)
{
    if (elen > 2 && etag[0] == 'W' && etag[1] == '/')
        etag += 2, elen -= 2;
    size_t i = 0;
    while (i < len) {
        while (i < len && (list[i] == ' ' || list[i] == '\t' || list[i] == ','))
            i++;
        size_t s = i;
        if (i < len && list[i] == '*')
            return true;
        if (i + 1 < len && list[i] == 'W' && list[i + 1] == '/')
            s = i += 2;
        if (i < len && list[i] == '"') {
            /* a comma inside the quotes belongs to the tag */
            i++;
            while (i < len && list[i] != '"')
                i++;
            if (i < len)
                i++;
        } else {
            while (i < len && list[i] != ',')
                i++;
        }
        /* an empty element (a trailing ", " or a bare "W/") is no tag: it
         * must not match an origin's empty ETag */
        if (i > s && i - s == elen && memcmp(list + s, etag, elen) == 0)
            return true;
    }
    return false;
}

bool gw_not_modified(const char *inm, size_t inm_len, const char *ims, size_t ims_len, const gw_validators_t *stored)
{
    if (inm != NULL)
        return stored->etag != NULL && gw_etag_in(inm, inm_len, stored->etag, stored->etag_len);
    if (ims != NULL && stored->last_modified != NULL) {
        int64_t since = rf_http_date_parse(ims, ims_len);
        int64_t mod = rf_http_date_parse(stored->last_modified, stored->last_modified_len);
        return since >= 0 && mod >= 0 && mod <= since;
    }
    return false;
}

bool gw_if_range_ok(const char *cond, size_t len, const gw_validators_t *stored)
{
    /* A weak ETag never matches (strong comparison); anything that is not
     * a quoted tag is taken as a date, compared as text: a range from a
     * copy changed within the same second would splice two bodies. */
    if (len > 0 && cond[0] == '"')
        return stored->etag != NULL && stored->etag[0] == '"' && stored->etag_len == len &&
               memcmp(stored->etag, cond, len) == 0;
    return stored->last_modified != NULL && stored->last_modified_len == len &&
           memcmp(stored->last_modified, cond, len) == 0;
}

/* ---- Range ------------------------------------------------------------------------ */

/* Reads the digits at *p (up to end) into *n, advancing *p. Returns -1
 * when the number exceeds GW_RANGE_NUM_MAX, 1 when there were digits, 0
 * when none. */
static int s_range_num(const char **p, const char *end, uint64_t *n)
{
    int seen = 0;
    for (; *p < end && **p >= '0' && **p <= '9'; (*p)++, seen = 1) {
        uint64_t d = (uint64_t)(**p - '0');
        /* tested before multiplying: n * 10 + d past 2^64 would wrap to a
         * small number and "bytes=18446744073709551620-" would read as 4- */
        if (*n > (GW_RANGE_NUM_MAX - d) / 10)
            return -1;
        *n = *n * 10 + d;
    }
    return seen;
}

int gw_parse_range(const char *v, size_t len, uint64_t total, uint64_t *from, uint64_t *to)
{
    if (len < 6 || memcmp(v, "bytes=", 6) != 0 || memchr(v, ',', len) != NULL)
        return 0; /* another unit, or several ranges: the whole body (allowed) */
    const char *p = v + 6, *end = v + len;
    uint64_t a = 0, b = 0;
    int has_a = s_range_num(&p, end, &a);
    if (has_a < 0 || p >= end || *p++ != '-')
        return 0;
    int has_b = s_range_num(&p, end, &b);
    if (has_b < 0 || p != end || (!has_a && !has_b))
        return 0;
    if (!has_a) { /* suffix: the last b bytes */
        if (b == 0 || total == 0)
            return -1;
        *from = b >= total ? 0 : total - b;
        *to = total - 1;
        return 1;
    }
    if (has_b && b < a)
        return 0;
    if (a >= total)
        return -1;
    *from = a;
    *to = has_b && b < total ? b : total - 1;
    return 1;
}

/* ---- the purge API's URLs ---------------------------------------------------------- */

static int s_hex(int c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

size_t gw_query_decode(char *s, size_t len)
{
    /* o never passes i, so writing in place never overwrites unread bytes */
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '%' && i + 2 < len && s_hex(s[i + 1]) >= 0 && s_hex(s[i + 2]) >= 0) {
            s[o++] = (char)(s_hex(s[i + 1]) * 16 + s_hex(s[i + 2]));
            i += 2;
        } else {
            s[o++] = s[i] == '+' ? ' ' : s[i];
        }
    }
    return o;
}

bool gw_query_next(const char **cur, const char *end, const char *name, const char **val, size_t *vlen)
{
    size_t nl = strlen(name);
    while (*cur < end) {
        const char *qs = *cur, *amp = memchr(qs, '&', (size_t)(end - qs));
        const char *pe = amp ? amp : end;
        *cur = amp ? amp + 1 : end;
        if ((size_t)(pe - qs) > nl + 1 && memcmp(qs, name, nl) == 0 && qs[nl] == '=') {
            *val = qs + nl + 1;
            *vlen = (size_t)(pe - *val);
            return true;
        }
    }
    return false;
}

const char *gw_purge_target_split(const char *url, size_t len, gw_purge_target_t *t)
{
    const char *p = url, *end = url + len;
    if (len > 7 && strncasecmp(p, "http://", 7) == 0)
        p += 7;
    else if (len > 8 && strncasecmp(p, "https://", 8) == 0)
        p += 8;
    else if (len > 2 && p[0] == '/' && p[1] == '/')
        p += 2;
    else
        return "want http://host/path or //host/path";
    const char *slash = memchr(p, '/', (size_t)(end - p));
    if (slash == NULL || slash == p)
        return "no host or no path";
    const char *q = memchr(slash, '?', (size_t)(end - slash));
    t->host = p;
    t->host_len = (size_t)(slash - p);
    t->path = slash;
    t->path_len = (size_t)((q ? q : end) - slash);
    t->query = q;
    t->query_len = q ? (size_t)(end - q) : 0;
    t->glob = memchr(slash, '*', (size_t)(end - slash)) != NULL;
    return NULL;
}
