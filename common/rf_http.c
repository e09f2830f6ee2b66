#include "rf_http.h"

#include <stdint.h>
#include <string.h>
#include <strings.h>

static int s_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* Calls back for each non-empty element of a comma list, trimmed. Stops
 * and returns 1 when fn returns non-zero, else 0. */
static int s_each(const char *v, size_t len, int (*fn)(const char *e, size_t n, void *arg), void *arg)
{
    size_t i = 0;
    while (i <= len) {
        size_t start = i;
        while (i < len && v[i] != ',')
            i++;
        size_t end = i;
        while (start < end && s_ows(v[start]))
            start++;
        while (end > start && s_ows(v[end - 1]))
            end--;
        if (end > start && fn(v + start, end - start, arg))
            return 1;
        i++; /* past the comma (or past the end) */
    }
    return 0;
}

static int s_is_token(const char *e, size_t n, void *arg)
{
    const char *token = arg;
    return n == strlen(token) && strncasecmp(e, token, n) == 0;
}

int rf_http_has_token(const char *v, size_t len, const char *token)
{
    return s_each(v, len, s_is_token, (void *)token);
}

static int s_count(const char *e, size_t n, void *arg)
{
    (void)e;
    (void)n;
    (*(size_t *)arg)++;
    return 0;
}

size_t rf_http_count_tokens(const char *v, size_t len)
{
    size_t n = 0;
    s_each(v, len, s_count, &n);
    return n;
}

/* ---- Range ------------------------------------------------------------ */

typedef struct {
    int n;             /* ranges seen */
    int suffix_seen;   /* a "-N" was seen: nothing may follow it */
    int open_seen;     /* an "N-" was seen: only a suffix may follow */
    uint64_t next_min; /* a bounded range must start at or after this */
    const char *why;
} s_range_state_t;

/* Parses up to 18 digits: 0 with *out, or -1. */
static int s_num(const char *p, size_t n, uint64_t *out)
{
    if (n == 0 || n > 18)
        return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        v = v * 10 + (uint64_t)(p[i] - '0');
    }
    *out = v;
    return 0;
}

/* One range-spec; returns 1 (stop) with st->why set when it breaks the
 * policy, 0 to go on. */
static int s_range_elem(const char *e, size_t n, void *arg)
{
    s_range_state_t *st = arg;
    if (++st->n > RF_RANGE_MAX) {
        st->why = "too many ranges";
        return 1;
    }
    if (st->suffix_seen) {
        st->why = "a range follows a suffix range";
        return 1;
    }
    const char *dash = memchr(e, '-', n);
    if (dash == NULL) {
        st->why = "malformed range";
        return 1;
    }
    size_t fl = (size_t)(dash - e), ll = n - fl - 1;
    uint64_t first, last;
    if (fl == 0) { /* "-N": the last N bytes */
        if (s_num(dash + 1, ll, &last) < 0 || last == 0) {
            st->why = "malformed suffix range";
            return 1;
        }
        st->suffix_seen = 1;
        return 0;
    }
    if (s_num(e, fl, &first) < 0) {
        st->why = "malformed range";
        return 1;
    }
    if (st->open_seen || first < st->next_min) {
        st->why = "overlapping or descending ranges";
        return 1;
    }
    if (ll == 0) { /* "N-": to the end */
        st->open_seen = 1;
        return 0;
    }
    if (s_num(dash + 1, ll, &last) < 0 || last < first) {
        st->why = "malformed range";
        return 1;
    }
    st->next_min = last + 1;
    return 0;
}

rf_range_verdict_t rf_http_range_check(const char *v, size_t len, const char **why)
{
    const char *w = NULL;
    s_range_state_t st = {0};
    while (len > 0 && s_ows(*v))
        v++, len--;
    if (len < 6 || strncasecmp(v, "bytes=", 6) != 0)
        w = "not a byte range";
    else if (s_each(v + 6, len - 6, s_range_elem, &st))
        w = st.why;
    else if (st.n == 0)
        w = "empty range set";
    if (why != NULL)
        *why = w;
    return w == NULL ? RF_RANGE_FORWARD : RF_RANGE_IGNORE;
}
