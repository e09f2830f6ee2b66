/*  rf_vparse — see rf_vparse.h. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rf_path.h"
#include "rf_vparse.h"

int64_t rf_vparse_digits(const char *s, size_t n, int64_t limit)
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

int64_t rf_vparse_time(const char *s, size_t n)
{
    const char *dot = memchr(s, '.', n);
    size_t whole = dot ? (size_t)(dot - s) : n;
    int64_t ms = 0;
    if (dot != NULL) {
        size_t fl = n - whole - 1;
        int64_t f = rf_vparse_digits(dot + 1, fl, 1000);
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
            rf_vparse_digits(s + start, i - start, fields == 0 && i == whole ? RF_VPARSE_MAX_MS / 1000 + 1 : 60);
        if (v < 0 || ++fields > 3 || (fields > 1 && i - start != 2))
            return -1;
        secs = secs * 60 + v;
        start = i + 1;
    }
    ms += secs * 1000;
    return ms <= RF_VPARSE_MAX_MS ? ms : -1;
}

int64_t rf_vparse_seconds(const char *s, size_t n)
{
    if (n == 0 || memchr(s, ':', n) != NULL)
        return -1;
    return rf_vparse_time(s, n);
}

int rf_vparse_segment(const char *s, size_t n, const char *prefix, const char *suffix)
{
    size_t pl = strlen(prefix), xl = strlen(suffix);
    if (n <= pl + xl || memcmp(s, prefix, pl) != 0 || memcmp(s + n - xl, suffix, xl) != 0)
        return -1;
    if (s[pl] == '0' && n - xl - pl > 1)
        return -1; /* one spelling per segment */
    return (int)rf_vparse_digits(s + pl, n - xl - pl, RF_VPARSE_SEG_MAX);
}

int rf_vparse_ranges(const char *s, size_t n, int64_t ms[][2], int *count, char *why, size_t why_len)
{
    const char *p = s, *end = s + n;
    *count = 0;
    for (;;) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *re = comma ? comma : end;
        const char *dash = memchr(p, '-', (size_t)(re - p));
        if (*count == RF_VPARSE_MAX_RANGES) {
            snprintf(why, why_len, "at most %d ranges", RF_VPARSE_MAX_RANGES);
            return -1;
        }
        int64_t a = dash ? rf_vparse_seconds(p, (size_t)(dash - p)) : -1;
        int64_t b = !dash ? -1 : dash + 1 < re ? rf_vparse_seconds(dash + 1, (size_t)(re - dash - 1)) : -2;
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

int rf_vparse_query_param(const char *q, size_t qlen, const char *name, const char **out, size_t *out_len)
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

/* Whether [p, p+n) is exactly the string w. */
static bool s_is(const char *p, size_t n, const char *w)
{
    return strlen(w) == n && memcmp(p, w, n) == 0;
}

int rf_vparse_thumb(const char *s, size_t len, rf_vthumb_t *t, char *why, size_t why_len)
{
    memset(t, 0, sizeof(*t));
    t->format = "jpeg";
    const char *p = s, *end = s + len;
    for (int i = 0; p <= end; i++) {
        const char *slash = memchr(p, '/', (size_t)(end - p));
        const char *te = slash ? slash : end;
        size_t n = (size_t)(te - p);
        const char *x = memchr(p, 'x', n);
        int64_t w = -1, h = -1;
        if (x != NULL) {
            w = x > p ? rf_vparse_digits(p, (size_t)(x - p), 16385) : 0;
            h = x + 1 < te ? rf_vparse_digits(x + 1, (size_t)(te - x - 1), 16385) : 0;
        }
        if (i == 0) {
            if ((t->ms = rf_vparse_time(p, n)) < 0) {
                snprintf(why, why_len, "'%.*s' is not a time (seconds such as 12.5, or [hh:]mm:ss[.fff])",
                         (int)(n > 32 ? 32 : n), p);
                return -1;
            }
        } else if (x != NULL && w >= 0 && h >= 0 && (w > 0 || h > 0)) {
            t->width = (int)w, t->height = (int)h;
        } else if (s_is(p, n, "jpeg") || s_is(p, n, "jpg")) {
            t->format = "jpeg";
        } else if (s_is(p, n, "png")) {
            t->format = "png";
        } else if (s_is(p, n, "webp")) {
            t->format = "webp";
        } else if (s_is(p, n, "keyframe")) {
            t->keyframe = true;
        } else {
            snprintf(why, why_len, "'%.*s' is not WxH (up to 16384), jpeg, png, webp or keyframe",
                     (int)(n > 32 ? 32 : n), p);
            return -1;
        }
        if (slash == NULL)
            break;
        p = slash + 1;
    }
    return 0;
}

json_t *rf_vthumb_json(const rf_vthumb_t *t, int quality)
{
    return json_pack("[{s:s, s:I, s:i, s:i, s:s, s:i, s:b}]", "op", "thumbnail", "ms", (json_int_t)t->ms, "width",
                     t->width, "height", t->height, "format", t->format, "quality", quality, "keyframe", t->keyframe);
}

/* "AxB" with both sides 0..max (at least one non-zero when !zero_ok); -1 when not. */
static int s_pair(const char *p, size_t n, int64_t max, bool zero_ok, int *a, int *b)
{
    const char *x = memchr(p, 'x', n);
    if (x == NULL)
        return -1;
    int64_t va = x > p ? rf_vparse_digits(p, (size_t)(x - p), max + 1) : 0;
    int64_t vb = x + 1 < p + n ? rf_vparse_digits(x + 1, (size_t)(p + n - x - 1), max + 1) : 0;
    if (va < 0 || vb < 0 || (!zero_ok && (va == 0 || vb == 0)) || (va == 0 && vb == 0))
        return -1;
    *a = (int)va, *b = (int)vb;
    return 0;
}

int rf_vparse_sprite(const char *s, size_t slen, rf_vsprite_t *t, char *why, size_t why_len)
{
    memset(t, 0, sizeof(*t));
    const char *part[4];
    size_t len[4];
    const char *p = s, *end = s + slen;
    int n = 0;
    while (n < 4) {
        const char *slash = memchr(p, '/', (size_t)(end - p));
        part[n] = p;
        len[n++] = (size_t)((slash ? slash : end) - p);
        if (slash == NULL)
            break;
        p = slash + 1;
    }
    if (n != 4 || p + len[3] != end) {
        snprintf(why, why_len, "a sprite is EVERY/COLSxROWS/WxH/N.jpg or EVERY/COLSxROWS/WxH/" RF_VSPRITE_VTT);
        return -1;
    }
    t->every_ms = rf_vparse_seconds(part[0], len[0]);
    if (t->every_ms < 500 || t->every_ms > 3600000) {
        snprintf(why, why_len, "'%.*s' is not seconds between tiles (0.5 to 3600)", (int)(len[0] > 32 ? 32 : len[0]),
                 part[0]);
        return -1;
    }
    if (s_pair(part[1], len[1], 100, false, &t->cols, &t->rows) < 0 || t->cols * t->rows > 100) {
        snprintf(why, why_len, "'%.*s' is not COLSxROWS (at most 100 tiles)", (int)(len[1] > 32 ? 32 : len[1]),
                 part[1]);
        return -1;
    }
    if (s_pair(part[2], len[2], 640, true, &t->tile_w, &t->tile_h) < 0) {
        snprintf(why, why_len, "'%.*s' is not a tile size WxH (sides up to 640, one may be 0)",
                 (int)(len[2] > 32 ? 32 : len[2]), part[2]);
        return -1;
    }
    if (s_is(part[3], len[3], RF_VSPRITE_VTT)) {
        t->sheet = -1;
    } else if ((t->sheet = rf_vparse_segment(part[3], len[3], "", ".jpg")) < 0) {
        snprintf(why, why_len, "'%.*s' is not N.jpg (a sheet from 0) or " RF_VSPRITE_VTT,
                 (int)(len[3] > 32 ? 32 : len[3]), part[3]);
        return -1;
    }
    return 0;
}

json_t *rf_vsprite_json(const rf_vsprite_t *t, int quality)
{
    return json_pack("[{s:s, s:I, s:i, s:i, s:i, s:i, s:i, s:i}]", "op", "sprite", "every_ms", (json_int_t)t->every_ms,
                     "cols", t->cols, "rows", t->rows, "tile_w", t->tile_w, "tile_h", t->tile_h, "sheet", t->sheet,
                     "quality", quality);
}

/* The value of query parameter name: [*v, *v + *vl), or NULL. */
static const char *s_param(const char *q, size_t qlen, const char *name, size_t *vl)
{
    const char *v = NULL;
    return rf_vparse_query_param(q, qlen, name, &v, vl) ? v : NULL;
}

int rf_vparse_trim(const char *q, size_t qlen, const char *param, rf_vtrim_t *t, char *why, size_t why_len)
{
    size_t vl = 0;
    const char *acc = s_param(q, qlen, "accurate", &vl);
    if (acc != NULL) {
        if (vl != 1 || (acc[0] != '0' && acc[0] != '1')) {
            snprintf(why, why_len, "accurate is 0 (cut on keyframes) or 1 (cut on frames)");
            return -1;
        }
        t->accurate = acc[0] == '1';
    }
    const char *ranges = s_param(q, qlen, param, &vl);
    if (ranges != NULL) { /* as forms and URLSearchParams send it: "2-4%2C20-22" */
        char *dec = malloc(vl + 1), r[200];
        if (dec == NULL) {
            snprintf(why, why_len, "out of memory");
            return -1;
        }
        int rc = rf_vparse_ranges(dec, rf_path_decode(ranges, vl, dec), t->ms, &t->n, r, sizeof(r));
        free(dec);
        if (rc < 0)
            snprintf(why, why_len, "%s: %s", param, r);
        return rc;
    }
    /* nginx's mp4 module: ?start=A&end=B, either may be left out */
    size_t al = 0, bl = 0;
    const char *a = s_param(q, qlen, "start", &al), *b = s_param(q, qlen, "end", &bl);
    int64_t am = a ? rf_vparse_seconds(a, al) : 0, bm = b ? rf_vparse_seconds(b, bl) : -2;
    if (am < 0 || bm == -1 || (bm >= 0 && bm <= am)) {
        snprintf(why, why_len, "start and end are seconds, end after start");
        return -1;
    }
    t->ms[0][0] = am;
    t->ms[0][1] = bm >= 0 ? bm : -1;
    t->n = 1;
    return 0;
}

json_t *rf_vtrim_json(const rf_vtrim_t *t)
{
    json_t *ranges = json_array();
    for (int i = 0; ranges != NULL && i < t->n; i++)
        json_array_append_new(ranges, json_pack("[I, I]", (json_int_t)t->ms[i][0], (json_int_t)t->ms[i][1]));
    return json_pack("[{s:s, s:o, s:i, s:s, s:b}]", "op", "trim", "ranges_ms", ranges, "max_ratio", t->max_ratio,
                     "content_type", t->audio ? "audio/mp4" : "video/mp4", "accurate", t->accurate);
}
