#include "rf_chain.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "rf_log.h"

const char *rf_format_name(rf_format_t f)
{
    switch (f) {
    case RF_FMT_JPEG: return "jpeg";
    case RF_FMT_PNG: return "png";
    case RF_FMT_WEBP: return "webp";
    default: return "keep";
    }
}

const char *rf_format_mime(rf_format_t f)
{
    switch (f) {
    case RF_FMT_JPEG: return "image/jpeg";
    case RF_FMT_PNG: return "image/png";
    case RF_FMT_WEBP: return "image/webp";
    default: return NULL;
    }
}

rf_format_t rf_format_parse(const char *name)
{
    if (strcmp(name, "jpeg") == 0 || strcmp(name, "jpg") == 0)
        return RF_FMT_JPEG;
    if (strcmp(name, "png") == 0)
        return RF_FMT_PNG;
    if (strcmp(name, "webp") == 0)
        return RF_FMT_WEBP;
    return RF_FMT_KEEP;
}

int rf_chain_split(const char *path, size_t len, const char *keyword, const char **src, size_t *src_len,
                   const char **chain, size_t *chain_len)
{
    size_t kl = strlen(keyword);
    /* Look for "/<keyword>" followed by "/" or the end, after a non-empty source. */
    for (size_t i = 1; i + 1 + kl <= len; i++) {
        if (path[i] != '/' || memcmp(path + i + 1, keyword, kl) != 0)
            continue;
        size_t after = i + 1 + kl;
        if (after != len && path[after] != '/')
            continue;
        *src = path;
        *src_len = i;
        *chain = after < len ? path + after + 1 : path + len;
        *chain_len = after < len ? len - after - 1 : 0;
        return 1;
    }
    return 0;
}

/* Parses a decimal int in [lo,hi] from exactly [s, s+n). */
static int s_int(const char *s, size_t n, int lo, int hi, int *out)
{
    if (n == 0 || n > 6)
        return -1;
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    if (v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

static int s_parse_size(const char *s, size_t n, rf_op_t *op)
{
    const char *x = memchr(s, 'x', n);
    op->w = op->h = 0;
    if (x == NULL)
        return s_int(s, n, 1, RF_CHAIN_MAX_DIM, &op->w);
    size_t wl = (size_t)(x - s), hl = n - wl - 1;
    if (wl == 0 && hl == 0)
        return -1;
    if (wl > 0 && s_int(s, wl, 1, RF_CHAIN_MAX_DIM, &op->w) < 0)
        return -1;
    if (hl > 0 && s_int(x + 1, hl, 1, RF_CHAIN_MAX_DIM, &op->h) < 0)
        return -1;
    return 0;
}

/* Takes the next '/'-separated segment from [*p, end); empty segments
 * (double slashes) are errors the caller reports. */
static int s_next(const char **p, const char *end, const char **seg, size_t *seg_len)
{
    if (*p >= end)
        return 0;
    const char *slash = memchr(*p, '/', (size_t)(end - *p));
    *seg = *p;
    *seg_len = slash ? (size_t)(slash - *p) : (size_t)(end - *p);
    *p = slash ? slash + 1 : end;
    return 1;
}

int rf_chain_parse(const char *text, size_t len, rf_chain_t *out, char *why, size_t why_len)
{
    const char *p = text, *end = text + len;
    const char *seg, *arg;
    size_t sl, al;
    memset(out, 0, sizeof(*out));
    while (end > text && end[-1] == '/')
        end--;
    if (p >= end)
        return rf_why(why, why_len, "empty function chain");
    while (s_next(&p, end, &seg, &sl)) {
        if (out->n == RF_CHAIN_MAX_OPS)
            return rf_why(why, why_len, "function chain longer than %d operations", RF_CHAIN_MAX_OPS);
        rf_op_t *op = &out->ops[out->n];
        if (sl == 0)
            return rf_why(why, why_len, "empty segment in function chain");
        if (sl == 8 && memcmp(seg, "optimize", 8) == 0) {
            op->kind = RF_OP_OPTIMIZE;
            out->n++;
            continue;
        }
        int known = (sl == 6 && memcmp(seg, "resize", 6) == 0) || (sl == 6 && memcmp(seg, "format", 6) == 0) ||
                    (sl == 7 && memcmp(seg, "quality", 7) == 0);
        if (!known)
            return rf_why(why, why_len, "unknown operation '%.*s'", (int)(sl > 40 ? 40 : sl), seg);
        if (!s_next(&p, end, &arg, &al) || al == 0)
            return rf_why(why, why_len, "operation '%.*s' needs an argument", (int)sl, seg);
        if (seg[0] == 'r') {
            op->kind = RF_OP_RESIZE;
            if (s_parse_size(arg, al, op) < 0)
                return rf_why(why, why_len, "resize needs WxH with sides 1..%d, got '%.*s'", RF_CHAIN_MAX_DIM,
                              (int)(al > 40 ? 40 : al), arg);
        } else if (seg[0] == 'f') {
            char name[8] = {0};
            op->kind = RF_OP_FORMAT;
            if (al < sizeof(name) && memchr(arg, '\0', al) == NULL)
                memcpy(name, arg, al);
            if ((op->format = rf_format_parse(name)) == RF_FMT_KEEP)
                return rf_why(why, why_len, "format must be jpeg, png or webp, got '%.*s'", (int)(al > 40 ? 40 : al),
                              arg);
        } else {
            op->kind = RF_OP_QUALITY;
            if (s_int(arg, al, 1, 100, &op->quality) < 0)
                return rf_why(why, why_len, "quality must be 1..100, got '%.*s'", (int)(al > 40 ? 40 : al), arg);
        }
        out->n++;
    }
    return 0;
}

json_t *rf_chain_to_json(const rf_chain_t *chain)
{
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < chain->n; i++) {
        const rf_op_t *op = &chain->ops[i];
        json_t *o = NULL;
        switch (op->kind) {
        case RF_OP_RESIZE: o = json_pack("{s:s,s:i,s:i}", "op", "resize", "w", op->w, "h", op->h); break;
        case RF_OP_FORMAT: o = json_pack("{s:s,s:s}", "op", "format", "format", rf_format_name(op->format)); break;
        case RF_OP_QUALITY: o = json_pack("{s:s,s:i}", "op", "quality", "quality", op->quality); break;
        case RF_OP_OPTIMIZE: o = json_pack("{s:s}", "op", "optimize"); break;
        }
        if (o == NULL || json_array_append_new(arr, o) < 0) {
            json_decref(arr);
            return NULL;
        }
    }
    return arr;
}

int rf_chain_from_json(const json_t *arr, rf_chain_t *out, char *why, size_t why_len)
{
    memset(out, 0, sizeof(*out));
    if (!json_is_array(arr))
        return rf_why(why, why_len, "chain must be a JSON array");
    if (json_array_size(arr) == 0 || json_array_size(arr) > RF_CHAIN_MAX_OPS)
        return rf_why(why, why_len, "chain must have 1..%d operations", RF_CHAIN_MAX_OPS);
    size_t i;
    json_t *o;
    json_array_foreach(arr, i, o)
    {
        rf_op_t *op = &out->ops[i];
        const char *name = json_string_value(json_object_get(o, "op"));
        if (name == NULL)
            return rf_why(why, why_len, "operation %zu has no \"op\"", i);
        if (strcmp(name, "resize") == 0) {
            json_t *w = json_object_get(o, "w"), *h = json_object_get(o, "h");
            op->kind = RF_OP_RESIZE;
            /* range-check before narrowing: 2^32+500 must not pass as 500 */
            json_int_t wv = json_is_integer(w) ? json_integer_value(w) : -1;
            json_int_t hv = json_is_integer(h) ? json_integer_value(h) : -1;
            if (wv < 0 || hv < 0 || wv > RF_CHAIN_MAX_DIM || hv > RF_CHAIN_MAX_DIM || (wv == 0 && hv == 0))
                return rf_why(why, why_len, "resize needs w/h in 0..%d, not both 0", RF_CHAIN_MAX_DIM);
            op->w = (int)wv;
            op->h = (int)hv;
        } else if (strcmp(name, "format") == 0) {
            const char *f = json_string_value(json_object_get(o, "format"));
            op->kind = RF_OP_FORMAT;
            if (f == NULL || (op->format = rf_format_parse(f)) == RF_FMT_KEEP)
                return rf_why(why, why_len, "format must be jpeg, png or webp");
        } else if (strcmp(name, "quality") == 0) {
            json_t *q = json_object_get(o, "quality");
            op->kind = RF_OP_QUALITY;
            json_int_t qv = json_is_integer(q) ? json_integer_value(q) : -1;
            if (qv < 1 || qv > 100)
                return rf_why(why, why_len, "quality must be 1..100");
            op->quality = (int)qv;
        } else if (strcmp(name, "optimize") == 0) {
            op->kind = RF_OP_OPTIMIZE;
        } else {
            return rf_why(why, why_len, "unknown operation '%.40s'", name);
        }
        out->n = i + 1;
    }
    return 0;
}

int rf_chain_format(const rf_chain_t *chain, char *buf, size_t len)
{
    size_t off = 0;
    if (len == 0)
        return -1;
    buf[0] = '\0';
    for (size_t i = 0; i < chain->n; i++) {
        const rf_op_t *op = &chain->ops[i];
        const char *sep = i ? "/" : "";
        int n = 0;
        switch (op->kind) {
        case RF_OP_RESIZE:
            if (op->w && op->h)
                n = snprintf(buf + off, len - off, "%sresize/%dx%d", sep, op->w, op->h);
            else if (op->w)
                n = snprintf(buf + off, len - off, "%sresize/%dx", sep, op->w);
            else
                n = snprintf(buf + off, len - off, "%sresize/x%d", sep, op->h);
            break;
        case RF_OP_FORMAT: n = snprintf(buf + off, len - off, "%sformat/%s", sep, rf_format_name(op->format)); break;
        case RF_OP_QUALITY: n = snprintf(buf + off, len - off, "%squality/%d", sep, op->quality); break;
        case RF_OP_OPTIMIZE: n = snprintf(buf + off, len - off, "%soptimize", sep); break;
        }
        if (n < 0 || (size_t)n >= len - off)
            return -1;
        off += (size_t)n;
    }
    return 0;
}
