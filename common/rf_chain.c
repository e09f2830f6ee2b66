#include "rf_chain.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <xxhash.h>

#include "rf_log.h"

/* ---- names ------------------------------------------------------------------------ */

static const char *const s_format_names[] = {[RF_FMT_KEEP] = "keep", [RF_FMT_JPEG] = "jpeg", [RF_FMT_PNG] = "png",
                                             [RF_FMT_WEBP] = "webp", [RF_FMT_AVIF] = "avif", [RF_FMT_GIF] = "gif",
                                             [RF_FMT_AUTO] = "auto"};

static const char *const s_gravity_names[] = {
    [RF_GRAV_CENTER] = "center",       [RF_GRAV_NORTH] = "north",         [RF_GRAV_NORTHEAST] = "northeast",
    [RF_GRAV_EAST] = "east",           [RF_GRAV_SOUTHEAST] = "southeast", [RF_GRAV_SOUTH] = "south",
    [RF_GRAV_SOUTHWEST] = "southwest", [RF_GRAV_WEST] = "west",           [RF_GRAV_NORTHWEST] = "northwest",
    [RF_GRAV_SMART] = "smart"};

const char *rf_format_name(rf_format_t f)
{
    return f >= RF_FMT_KEEP && f <= RF_FMT_AUTO ? s_format_names[f] : "keep";
}

const char *rf_format_mime(rf_format_t f)
{
    switch (f) {
    case RF_FMT_JPEG: return "image/jpeg";
    case RF_FMT_PNG: return "image/png";
    case RF_FMT_WEBP: return "image/webp";
    case RF_FMT_AVIF: return "image/avif";
    case RF_FMT_GIF: return "image/gif";
    default: return NULL;
    }
}

rf_format_t rf_format_parse(const char *name)
{
    if (strcmp(name, "jpg") == 0)
        return RF_FMT_JPEG;
    for (int f = RF_FMT_JPEG; f <= RF_FMT_AUTO; f++)
        if (strcmp(name, s_format_names[f]) == 0)
            return (rf_format_t)f;
    return RF_FMT_KEEP;
}

const char *rf_gravity_name(rf_gravity_t g)
{
    return g >= RF_GRAV_CENTER && g <= RF_GRAV_SMART ? s_gravity_names[g] : "center";
}

/* ---- splitting -------------------------------------------------------------------- */

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

int rf_chain_split_src(const char *path, size_t len, const char *keyword, const char **chain, size_t *chain_len,
                       const char **src, size_t *src_len)
{
    size_t kl = strlen(keyword);
    if (len < kl + 2 || path[0] != '/' || memcmp(path + 1, keyword, kl) != 0 || path[kl + 1] != '/')
        return 0;
    const char *c = path + kl + 2, *end = path + len;
    /* the first "/src/" segment after the chain */
    for (const char *p = c; p + 5 <= end; p++) {
        if (memcmp(p, "/src/", 5) != 0)
            continue;
        *chain = c;
        *chain_len = (size_t)(p - c);
        *src = p + 5;
        *src_len = (size_t)(end - p - 5);
        return *src_len > 0 ? 1 : 0;
    }
    return 0;
}

/* ---- arguments ---------------------------------------------------------------------- */

/* A decimal int in [lo,hi] from exactly [s, s+n). 0 or -1. */
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

/* "WxH", "W", "Wx" or "xH" (one side may be 0 = unconstrained when
 * `one_side`), else exactly "WxH". 0 or -1. */
static int s_size(const char *s, size_t n, bool one_side, int *w, int *h)
{
    const char *x = memchr(s, 'x', n);
    *w = *h = 0;
    if (x == NULL)
        return one_side ? s_int(s, n, 1, RF_CHAIN_MAX_DIM, w) : -1;
    size_t wl = (size_t)(x - s), hl = n - wl - 1;
    if ((wl == 0 || hl == 0) && !one_side)
        return -1;
    if (wl == 0 && hl == 0)
        return -1;
    if (wl > 0 && s_int(s, wl, 1, RF_CHAIN_MAX_DIM, w) < 0)
        return -1;
    if (hl > 0 && s_int(x + 1, hl, 1, RF_CHAIN_MAX_DIM, h) < 0)
        return -1;
    return 0;
}

static int s_resize_arg(const char *s, size_t n, rf_op_t *op)
{
    static const char mods[] = {[RF_FIT_FILL] = '^', [RF_FIT_EXACT] = '!', [RF_FIT_SHRINK] = '>',
                                [RF_FIT_ENLARGE] = '<'};
    op->fit = RF_FIT_INSIDE;
    for (int f = RF_FIT_FILL; n > 0 && f <= RF_FIT_ENLARGE; f++)
        if (s[n - 1] == mods[f]) {
            op->fit = (rf_fit_t)f;
            n--;
            break;
        }
    if (s_size(s, n, true, &op->w, &op->h) < 0)
        return -1;
    /* fill and exact need both sides */
    return (op->fit == RF_FIT_FILL || op->fit == RF_FIT_EXACT) && (op->w == 0 || op->h == 0) ? -1 : 0;
}

static int s_crop_arg(const char *s, size_t n, rf_op_t *op)
{
    const char *plus = memchr(s, '+', n);
    op->x = op->y = -1;
    if (plus == NULL)
        return s_size(s, n, false, &op->w, &op->h);
    if (s_size(s, (size_t)(plus - s), false, &op->w, &op->h) < 0)
        return -1;
    const char *xs = plus + 1, *end = s + n;
    const char *plus2 = memchr(xs, '+', (size_t)(end - xs));
    if (plus2 == NULL)
        return -1;
    return s_int(xs, (size_t)(plus2 - xs), 0, 65535, &op->x) < 0 ||
                   s_int(plus2 + 1, (size_t)(end - plus2 - 1), 0, 65535, &op->y) < 0
               ? -1
               : 0;
}

/* A sigma written as digits with at most two decimals, 0.1..100. */
static int s_sigma_arg(const char *s, size_t n, double *out)
{
    const char *dot = memchr(s, '.', n);
    int ip = 0, fp = 0;
    size_t il = dot ? (size_t)(dot - s) : n, fl = dot ? n - il - 1 : 0;
    if (il == 0 || il > 3 || (dot && (fl == 0 || fl > 2)) || s_int(s, il, 0, 100, &ip) < 0 ||
        (fl > 0 && s_int(dot + 1, fl, 0, 99, &fp) < 0))
        return -1;
    double v = ip + fp / (fl == 1 ? 10.0 : 100.0);
    if (v < 0.1 || v > 100)
        return -1;
    *out = v;
    return 0;
}

static int s_hex(int c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

static int s_color_arg(const char *s, size_t n, uint32_t *rgb)
{
    if (n != 6)
        return -1;
    uint32_t v = 0;
    for (size_t i = 0; i < 6; i++) {
        int d = s_hex((unsigned char)s[i]);
        if (d < 0)
            return -1;
        v = v << 4 | (uint32_t)d;
    }
    *rgb = v;
    return 0;
}

/* Copies [s, s+n) into a NUL-terminated buf of `cap` (no NULs inside). */
static int s_word(const char *s, size_t n, char *buf, size_t cap)
{
    if (n == 0 || n >= cap || memchr(s, '\0', n) != NULL)
        return -1;
    memcpy(buf, s, n);
    buf[n] = '\0';
    return 0;
}

static int s_format_arg(const char *s, size_t n, rf_op_t *op)
{
    char name[16];
    if (s_word(s, n, name, sizeof(name)) < 0)
        return -1;
    op->auto_format = op->negotiated = false;
    if (strncmp(name, "auto:", 5) == 0) { /* a negotiated auto (the canonical form) */
        op->auto_format = op->negotiated = true;
        if (strcmp(name + 5, "keep") == 0) {
            op->format = RF_FMT_KEEP;
            return 0;
        }
        op->format = rf_format_parse(name + 5);
        return op->format == RF_FMT_KEEP || op->format == RF_FMT_AUTO ? -1 : 0;
    }
    op->format = rf_format_parse(name);
    op->auto_format = op->format == RF_FMT_AUTO;
    return op->format == RF_FMT_KEEP ? -1 : 0;
}

static int s_gravity_arg(const char *s, size_t n, rf_gravity_t *g)
{
    for (int i = RF_GRAV_CENTER; i <= RF_GRAV_SMART; i++)
        if (strlen(s_gravity_names[i]) == n && memcmp(s, s_gravity_names[i], n) == 0) {
            *g = (rf_gravity_t)i;
            return 0;
        }
    return -1;
}

/* ---- operations ------------------------------------------------------------------------ */

typedef enum {
    A_NONE,
    A_RESIZE,
    A_CROP,
    A_BOX,
    A_GRAVITY,
    A_ANGLE,
    A_FORMAT,
    A_QUALITY,
    A_SIGMA,
    A_COLOR,
    A_NAME,
    A_SPLIT
} s_arg_t;

typedef struct {
    const char *name;
    int kind; /* rf_op_kind_t, or -1 for preset */
    s_arg_t arg;
    const char *valid; /* what the argument may be, for the 400's reason */
} s_opdef_t;

#define S_SIZE_TEXT "1..16384"
static const s_opdef_t s_ops[] = {
    {"resize", RF_OP_RESIZE, A_RESIZE, "WxH, W, Wx or xH (sides " S_SIZE_TEXT "), optionally ending in ^ ! > or <"},
    {"crop", RF_OP_CROP, A_CROP, "WxH or WxH+X+Y (sides " S_SIZE_TEXT ", offsets 0..65535)"},
    {"thumbnail", RF_OP_THUMBNAIL, A_BOX, "WxH (sides " S_SIZE_TEXT ")"},
    {"gravity", RF_OP_GRAVITY, A_GRAVITY,
     "center, north, northeast, east, southeast, south, southwest, west, northwest or smart"},
    {"rotate", RF_OP_ROTATE, A_ANGLE, "90, 180 or 270"},
    {"flip", RF_OP_FLIP, A_NONE, NULL},
    {"flop", RF_OP_FLOP, A_NONE, NULL},
    {"format", RF_OP_FORMAT, A_FORMAT, "jpeg, jpg, png, webp, avif, gif or auto"},
    {"quality", RF_OP_QUALITY, A_QUALITY, "1..100"},
    {"optimize", RF_OP_OPTIMIZE, A_NONE, NULL},
    {"strip", RF_OP_STRIP, A_NONE, NULL},
    {"sharpen", RF_OP_SHARPEN, A_NONE, NULL},
    {"blur", RF_OP_BLUR, A_SIGMA, "a sigma 0.1..100 with at most two decimals"},
    {"grayscale", RF_OP_GRAYSCALE, A_NONE, NULL},
    {"background", RF_OP_BACKGROUND, A_COLOR, "RRGGBB (six hex digits)"},
    {"extend", RF_OP_EXTEND, A_BOX, "WxH (sides " S_SIZE_TEXT ")"},
    {"preset", -1, A_NAME, "the name of a preset of this vhost (dims.presets)"},
    {"byoriginal", RF_OP_BYORIGINAL, A_NAME, "the name of a rule set of this vhost (dims.byoriginal)"},
    {"split", RF_OP_SPLIT, A_SPLIT, "H/N or H/manifest.json (tile height 1..16384, tile index 0..65535)"},
    {NULL, 0, A_NONE, NULL},
};
#define S_OP_LIST                                                                                                      \
    "resize, crop, thumbnail, gravity, rotate, flip, flop, format, quality, optimize, strip, sharpen, blur, "         \
    "grayscale, background, extend, preset, byoriginal, split"

static const s_opdef_t *s_opdef(const char *s, size_t n)
{
    for (const s_opdef_t *d = s_ops; d->name; d++)
        if (strlen(d->name) == n && memcmp(d->name, s, n) == 0)
            return d;
    return NULL;
}

static const s_opdef_t *s_opdef_of(rf_op_kind_t k)
{
    for (const s_opdef_t *d = s_ops; d->name; d++)
        if (d->kind == (int)k)
            return d;
    return NULL;
}

/* Parses the argument of `d` into *op (not for preset/byoriginal). 0 or -1. */
static int s_parse_arg(const s_opdef_t *d, const char *a, size_t al, rf_op_t *op)
{
    switch (d->arg) {
    case A_RESIZE: return s_resize_arg(a, al, op);
    case A_CROP: return s_crop_arg(a, al, op);
    case A_BOX: return s_size(a, al, false, &op->w, &op->h);
    case A_GRAVITY: return s_gravity_arg(a, al, &op->gravity);
    case A_ANGLE:
        return s_int(a, al, 90, 270, &op->angle) < 0 || op->angle % 90 != 0 ? -1 : 0;
    case A_FORMAT: return s_format_arg(a, al, op);
    case A_QUALITY: return s_int(a, al, 1, 100, &op->quality);
    case A_SIGMA: return s_sigma_arg(a, al, &op->sigma);
    case A_COLOR: return s_color_arg(a, al, &op->rgb);
    default: return -1;
    }
}

/* Takes the next '/'-separated segment from [*p, end). */
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

#define S_SHOW(n) (int)((n) > 40 ? 40 : (n))

/* What a parse may resolve (the caller's ctx), and how deep: presets and
 * byoriginal rules hold plain operations only. */
typedef struct {
    const rf_chain_ctx_t *ctx;
    bool nested;
} s_parse_t;

static int s_parse(const s_parse_t *ps, const char *text, size_t len, rf_chain_t *out, char *why, size_t why_len);

static int s_add_preset(const s_parse_t *ps, const char *name, size_t nl, rf_chain_t *out, char *why, size_t why_len)
{
    if (ps->nested)
        return rf_why(why, why_len, "preset '%.*s' inside a preset or byoriginal rule: not allowed", S_SHOW(nl), name);
    for (size_t i = 0; ps->ctx != NULL && i < ps->ctx->n_presets; i++) {
        const rf_preset_t *p = &ps->ctx->presets[i];
        if (strlen(p->name) != nl || memcmp(p->name, name, nl) != 0)
            continue;
        rf_chain_t sub;
        s_parse_t inner = {ps->ctx, true};
        char sub_why[200];
        if (s_parse(&inner, p->chain, strlen(p->chain), &sub, sub_why, sizeof(sub_why)) < 0)
            return rf_why(why, why_len, "preset '%s': %s", p->name, sub_why);
        if (out->n + sub.n > RF_CHAIN_MAX_OPS)
            return rf_why(why, why_len, "function chain longer than %d operations (with preset '%s')",
                          RF_CHAIN_MAX_OPS, p->name);
        memcpy(&out->ops[out->n], sub.ops, sub.n * sizeof(sub.ops[0]));
        out->n += sub.n;
        return 0;
    }
    return rf_why(why, why_len, "unknown preset '%.*s'", S_SHOW(nl), name);
}

static int s_add_byorig(const s_parse_t *ps, const char *name, size_t nl, rf_chain_t *out, char *why, size_t why_len)
{
    if (ps->nested)
        return rf_why(why, why_len, "byoriginal inside a preset or byoriginal rule: not allowed");
    for (size_t i = 0; i < out->n; i++)
        if (out->ops[i].kind == RF_OP_BYORIGINAL)
            return rf_why(why, why_len, "at most one byoriginal per chain");
    const char *colon = memchr(name, ':', nl);
    if (colon != NULL) /* the canonical "NAME:HASH": the hash is recomputed from the rules */
        nl = (size_t)(colon - name);
    for (size_t i = 0; ps->ctx != NULL && i < ps->ctx->n_byorig; i++) {
        const rf_byorig_t *b = &ps->ctx->byorig[i];
        if (strlen(b->name) != nl || memcmp(b->name, name, nl) != 0)
            continue;
        out->byorig = *b;
        out->ops[out->n++] = (rf_op_t){.kind = RF_OP_BYORIGINAL};
        return 0;
    }
    return rf_why(why, why_len, "unknown byoriginal rule set '%.*s'", S_SHOW(nl), name);
}

static int s_parse(const s_parse_t *ps, const char *text, size_t len, rf_chain_t *out, char *why, size_t why_len)
{
    const char *p = text, *end = text + len;
    const char *seg, *arg;
    size_t sl, al;
    memset(out, 0, sizeof(*out));
    while (p < end && *p == '/') /* a preset or rule may be written "/optimize", as the seed does */
        p++;
    while (end > p && end[-1] == '/')
        end--;
    if (p >= end)
        return rf_why(why, why_len, "empty function chain");
    while (s_next(&p, end, &seg, &sl)) {
        if (sl == 0)
            return rf_why(why, why_len, "empty segment in function chain");
        const s_opdef_t *d = s_opdef(seg, sl);
        if (d == NULL)
            return rf_why(why, why_len, "unknown operation '%.*s' (valid: %s)", S_SHOW(sl), seg, S_OP_LIST);
        if (out->n == RF_CHAIN_MAX_OPS)
            return rf_why(why, why_len, "function chain longer than %d operations", RF_CHAIN_MAX_OPS);
        if (d->arg == A_NONE) {
            out->ops[out->n++] = (rf_op_t){.kind = (rf_op_kind_t)d->kind};
            continue;
        }
        if (!s_next(&p, end, &arg, &al) || al == 0)
            return rf_why(why, why_len, "%s needs an argument: %s", d->name, d->valid);
        if (d->arg == A_NAME) {
            int rc = d->kind < 0 ? s_add_preset(ps, arg, al, out, why, why_len)
                                 : s_add_byorig(ps, arg, al, out, why, why_len);
            if (rc < 0)
                return -1;
            continue;
        }
        rf_op_t *op = &out->ops[out->n];
        *op = (rf_op_t){.kind = (rf_op_kind_t)d->kind};
        if (d->arg == A_SPLIT) { /* two segments: the tile height, then the index or manifest.json */
            const char *a2 = NULL;
            size_t a2l = 0;
            bool two = s_next(&p, end, &a2, &a2l);
            size_t shown = two ? (size_t)(a2 + a2l - arg) : al;
            bool manifest = two && a2l == 13 && memcmp(a2, "manifest.json", 13) == 0;
            if (!two || s_int(arg, al, 1, RF_CHAIN_MAX_DIM, &op->h) < 0 ||
                (!manifest && s_int(a2, a2l, 0, 65535, &op->x) < 0))
                return rf_why(why, why_len, "split: '%.*s' is not %s", S_SHOW(shown), arg, d->valid);
            if (manifest)
                op->x = -1;
            out->n++;
            continue;
        }
        if (s_parse_arg(d, arg, al, op) < 0)
            return rf_why(why, why_len, "%s: '%.*s' is not %s", d->name, S_SHOW(al), arg, d->valid);
        out->n++;
    }
    return 0;
}

/* A split cuts the final image: nothing may follow it. 0 or -1. */
static int s_split_last(const rf_chain_t *c, char *why, size_t why_len)
{
    for (size_t i = 0; i + 1 < c->n; i++)
        if (c->ops[i].kind == RF_OP_SPLIT)
            return rf_why(why, why_len, "split must be the last operation");
    return 0;
}

int rf_chain_parse(const char *text, size_t len, const rf_chain_ctx_t *ctx, rf_chain_t *out, char *why,
                   size_t why_len)
{
    s_parse_t ps = {ctx, false};
    if (s_parse(&ps, text, len, out, why, why_len) < 0)
        return -1;
    return s_split_last(out, why, why_len);
}

/* ---- format/auto ----------------------------------------------------------------------- */

bool rf_chain_has_auto(const rf_chain_t *chain)
{
    for (size_t i = 0; i < chain->n; i++)
        if (chain->ops[i].kind == RF_OP_FORMAT && chain->ops[i].auto_format)
            return true;
    return false;
}

/* Whether the Accept value lists `type` with a non-zero q (RFC 9110
 * 12.5.1; the image and any-type wildcards do not count: every browser
 * sends them, which would make every client an AVIF client). */
static bool s_accepts(const char *accept, size_t len, const char *type)
{
    size_t tl = strlen(type), i = 0;
    while (i < len) {
        size_t e = i, a = i, t;
        while (e < len && accept[e] != ',')
            e++;
        while (a < e && (accept[a] == ' ' || accept[a] == '\t'))
            a++;
        for (t = a; t < e && accept[t] != ';' && accept[t] != ' ' && accept[t] != '\t'; t++)
            ;
        if (t - a == tl && strncasecmp(accept + a, type, tl) == 0) {
            /* refused only by q=0 (0, 0.0, 0.00, 0.000) */
            bool zero = false;
            for (size_t k = t; k + 1 < e; k++) {
                if ((accept[k] == 'q' || accept[k] == 'Q') && accept[k + 1] == '=' &&
                    (k == t || accept[k - 1] == ';' || accept[k - 1] == ' ')) {
                    size_t v = k + 2;
                    zero = v < e && accept[v] == '0';
                    for (v++; zero && v < e && accept[v] != ';' && accept[v] != ' '; v++)
                        zero = accept[v] == '.' || accept[v] == '0';
                }
            }
            if (!zero)
                return true;
        }
        i = e + 1;
    }
    return false;
}

void rf_chain_negotiate(rf_chain_t *chain, const char *accept, size_t accept_len)
{
    rf_format_t f = RF_FMT_KEEP;
    if (accept != NULL && s_accepts(accept, accept_len, "image/avif"))
        f = RF_FMT_AVIF;
    else if (accept != NULL && s_accepts(accept, accept_len, "image/webp"))
        f = RF_FMT_WEBP;
    for (size_t i = 0; i < chain->n; i++) {
        rf_op_t *op = &chain->ops[i];
        if (op->kind == RF_OP_FORMAT && op->auto_format) {
            op->format = f;
            op->negotiated = true;
        }
    }
}

/* ---- text ------------------------------------------------------------------------------ */

static uint32_t s_byorig_hash(const rf_byorig_t *b)
{
    XXH64_hash_t h = 0;
    for (size_t i = 0; i < b->n; i++) {
        const rf_byorig_rule_t *r = &b->rules[i];
        char head[96];
        int n = snprintf(head, sizeof(head), "%d|%d|%lld|%d|", r->max_width, r->max_height, (long long)r->max_bytes,
                         (int)r->format);
        h = XXH3_64bits_withSeed(head, (size_t)n, h);
        h = XXH3_64bits_withSeed(r->chain, strlen(r->chain) + 1, h);
    }
    return (uint32_t)h;
}

/* One operation's canonical text. Returns what snprintf does. */
static int s_op_text(const rf_chain_t *chain, const rf_op_t *op, char *buf, size_t len)
{
    static const char *const mods[] = {[RF_FIT_INSIDE] = "", [RF_FIT_FILL] = "^", [RF_FIT_EXACT] = "!",
                                       [RF_FIT_SHRINK] = ">", [RF_FIT_ENLARGE] = "<"};
    const s_opdef_t *d = s_opdef_of(op->kind);
    const char *name = d ? d->name : "?";
    switch (op->kind) {
    case RF_OP_RESIZE:
        if (op->w && op->h)
            return snprintf(buf, len, "resize/%dx%d%s", op->w, op->h, mods[op->fit]);
        if (op->w)
            return snprintf(buf, len, "resize/%dx%s", op->w, mods[op->fit]);
        return snprintf(buf, len, "resize/x%d%s", op->h, mods[op->fit]);
    case RF_OP_CROP:
        if (op->x < 0)
            return snprintf(buf, len, "crop/%dx%d", op->w, op->h);
        return snprintf(buf, len, "crop/%dx%d+%d+%d", op->w, op->h, op->x, op->y);
    case RF_OP_THUMBNAIL:
    case RF_OP_EXTEND: return snprintf(buf, len, "%s/%dx%d", name, op->w, op->h);
    case RF_OP_GRAVITY: return snprintf(buf, len, "gravity/%s", rf_gravity_name(op->gravity));
    case RF_OP_ROTATE: return snprintf(buf, len, "rotate/%d", op->angle);
    case RF_OP_FORMAT:
        if (op->auto_format && op->negotiated)
            return snprintf(buf, len, "format/auto:%s", rf_format_name(op->format));
        return snprintf(buf, len, "format/%s", rf_format_name(op->format));
    case RF_OP_QUALITY: return snprintf(buf, len, "quality/%d", op->quality);
    case RF_OP_BLUR: return snprintf(buf, len, "blur/%g", op->sigma);
    case RF_OP_BACKGROUND: return snprintf(buf, len, "background/%06x", (unsigned)op->rgb);
    case RF_OP_BYORIGINAL:
        return snprintf(buf, len, "byoriginal/%s:%08x", chain->byorig.name, (unsigned)s_byorig_hash(&chain->byorig));
    case RF_OP_SPLIT:
        if (op->x < 0)
            return snprintf(buf, len, "split/%d/manifest.json", op->h);
        return snprintf(buf, len, "split/%d/%d", op->h, op->x);
    default: return snprintf(buf, len, "%s", name);
    }
}

int rf_chain_format(const rf_chain_t *chain, char *buf, size_t len)
{
    size_t off = 0;
    if (len == 0)
        return -1;
    buf[0] = '\0';
    for (size_t i = 0; i < chain->n; i++) {
        if (i > 0) {
            if (off + 1 >= len)
                return -1;
            buf[off++] = '/';
            buf[off] = '\0';
        }
        int n = s_op_text(chain, &chain->ops[i], buf + off, len - off);
        if (n < 0 || (size_t)n >= len - off)
            return -1;
        off += (size_t)n;
    }
    return 0;
}

static bool s_op_equal(const rf_op_t *x, const rf_op_t *y)
{
    return x->kind == y->kind && x->w == y->w && x->h == y->h && x->x == y->x && x->y == y->y && x->fit == y->fit &&
           x->format == y->format && x->auto_format == y->auto_format && x->negotiated == y->negotiated &&
           x->quality == y->quality && x->gravity == y->gravity && x->angle == y->angle && x->sigma == y->sigma &&
           x->rgb == y->rgb;
}

static bool s_byorig_equal(const rf_byorig_t *a, const rf_byorig_t *b)
{
    if (strcmp(a->name, b->name) != 0 || a->n != b->n)
        return false;
    for (size_t i = 0; i < a->n; i++) {
        const rf_byorig_rule_t *x = &a->rules[i], *y = &b->rules[i];
        if (x->max_width != y->max_width || x->max_height != y->max_height || x->max_bytes != y->max_bytes ||
            x->format != y->format || strcmp(x->chain, y->chain) != 0)
            return false;
    }
    return true;
}

bool rf_chain_equal(const rf_chain_t *a, const rf_chain_t *b)
{
    if (a->n != b->n)
        return false;
    bool byorig = false;
    for (size_t i = 0; i < a->n; i++) {
        if (!s_op_equal(&a->ops[i], &b->ops[i]))
            return false;
        byorig = byorig || a->ops[i].kind == RF_OP_BYORIGINAL;
    }
    return !byorig || s_byorig_equal(&a->byorig, &b->byorig);
}

/* ---- JSON (gateway -> worker) ---------------------------------------------------------- */

json_t *rf_chain_to_json(const rf_chain_t *chain)
{
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < chain->n; i++) {
        const rf_op_t *op = &chain->ops[i];
        json_t *o = NULL;
        if (op->kind == RF_OP_BYORIGINAL) {
            json_t *rules = json_array();
            for (size_t r = 0; rules && r < chain->byorig.n; r++) {
                const rf_byorig_rule_t *ru = &chain->byorig.rules[r];
                json_t *jr = json_pack("{s:i,s:i,s:I,s:s,s:s}", "width", ru->max_width, "height", ru->max_height,
                                       "bytes", (json_int_t)ru->max_bytes, "format", rf_format_name(ru->format),
                                       "chain", ru->chain);
                if (jr == NULL || json_array_append_new(rules, jr) < 0) {
                    json_decref(rules);
                    rules = NULL;
                }
            }
            o = rules ? json_pack("{s:s,s:s,s:o}", "op", "byoriginal", "name", chain->byorig.name, "rules", rules)
                      : NULL;
        } else {
            char text[128];
            if (s_op_text(chain, op, text, sizeof(text)) < (int)sizeof(text))
                o = json_string(text);
        }
        if (o == NULL || json_array_append_new(arr, o) < 0) {
            json_decref(arr);
            return NULL;
        }
    }
    return arr;
}

static int s_byorig_from_json(const json_t *o, rf_byorig_t *b, char *why, size_t why_len)
{
    const char *name = json_string_value(json_object_get(o, "name"));
    const json_t *rules = json_object_get(o, "rules");
    memset(b, 0, sizeof(*b));
    if (name == NULL || strlen(name) >= sizeof(b->name) || !json_is_array(rules) || json_array_size(rules) == 0 ||
        json_array_size(rules) > RF_BYORIG_MAX_RULES)
        return rf_why(why, why_len, "byoriginal needs a name and 1..%d rules", RF_BYORIG_MAX_RULES);
    snprintf(b->name, sizeof(b->name), "%s", name);
    size_t i;
    json_t *r;
    json_array_foreach(rules, i, r)
    {
        rf_byorig_rule_t *ru = &b->rules[i];
        json_t *w = json_object_get(r, "width"), *h = json_object_get(r, "height"), *by = json_object_get(r, "bytes");
        const char *f = json_string_value(json_object_get(r, "format"));
        const char *c = json_string_value(json_object_get(r, "chain"));
        json_int_t wv = json_is_integer(w) ? json_integer_value(w) : -1;
        json_int_t hv = json_is_integer(h) ? json_integer_value(h) : -1;
        json_int_t bv = json_is_integer(by) ? json_integer_value(by) : -1;
        if (wv < 0 || wv > 1000000 || hv < 0 || hv > 1000000 || bv < 0 || f == NULL || c == NULL ||
            strlen(c) >= sizeof(ru->chain))
            return rf_why(why, why_len, "byoriginal rule %zu is malformed", i);
        ru->max_width = (int)wv;
        ru->max_height = (int)hv;
        ru->max_bytes = bv;
        ru->format = strcmp(f, "keep") == 0 ? RF_FMT_KEEP : rf_format_parse(f);
        if (ru->format == RF_FMT_AUTO || (ru->format == RF_FMT_KEEP && strcmp(f, "keep") != 0))
            return rf_why(why, why_len, "byoriginal rule %zu: bad format '%.20s'", i, f);
        snprintf(ru->chain, sizeof(ru->chain), "%s", c);
        rf_chain_t check;
        s_parse_t ps = {NULL, true};
        char sub[200];
        if (s_parse(&ps, c, strlen(c), &check, sub, sizeof(sub)) < 0)
            return rf_why(why, why_len, "byoriginal rule %zu: %s", i, sub);
        b->n = i + 1;
    }
    return 0;
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
    bool byorig = false;
    json_array_foreach(arr, i, o)
    {
        if (json_is_object(o)) {
            const char *name = json_string_value(json_object_get(o, "op"));
            if (name == NULL || strcmp(name, "byoriginal") != 0 || byorig)
                return rf_why(why, why_len, "operation %zu: an object must be the one byoriginal", i);
            if (s_byorig_from_json(o, &out->byorig, why, why_len) < 0)
                return -1;
            out->ops[out->n++] = (rf_op_t){.kind = RF_OP_BYORIGINAL};
            byorig = true;
            continue;
        }
        const char *text = json_string_value(o);
        if (text == NULL)
            return rf_why(why, why_len, "operation %zu is not a string", i);
        /* one plain operation, parsed with the URL's rules */
        rf_chain_t one;
        s_parse_t ps = {NULL, true};
        if (s_parse(&ps, text, strlen(text), &one, why, why_len) < 0)
            return -1;
        if (one.n != 1)
            return rf_why(why, why_len, "operation %zu is not one operation", i);
        out->ops[out->n++] = one.ops[0];
    }
    return s_split_last(out, why, why_len);
}

/* ---- byoriginal ------------------------------------------------------------------------ */

int rf_byorig_pick(const rf_byorig_t *set, int w, int h, int64_t bytes, rf_format_t fmt, rf_chain_t *out, char *why,
                   size_t why_len)
{
    for (size_t i = 0; i < set->n; i++) {
        const rf_byorig_rule_t *r = &set->rules[i];
        if ((r->max_width > 0 && w > r->max_width) || (r->max_height > 0 && h > r->max_height) ||
            (r->max_bytes > 0 && bytes > r->max_bytes) || (r->format != RF_FMT_KEEP && fmt != r->format))
            continue;
        s_parse_t ps = {NULL, true};
        return s_parse(&ps, r->chain, strlen(r->chain), out, why, why_len) < 0 ? -1
                                                                               : s_split_last(out, why, why_len);
    }
    return rf_why(why, why_len, "byoriginal '%s': no rule holds for a %dx%d original (and no default rule)",
                  set->name, w, h);
}
