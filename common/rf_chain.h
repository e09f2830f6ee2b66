/*  rf_chain — the image function chain of a URL (docs/image.md).
 *
 *    /photo.jpg/dims/resize/500x500^/gravity/north/format/webp/quality/60
 *    └ source ┘└kw ┘└──────────────────── operations ─────────────────────┘
 *
 *  The gateway parses and validates the chain (a malformed chain is a 400
 *  naming the bad token before any origin traffic), expanding presets and
 *  resolving byoriginal names from the vhost's configuration, and sends it
 *  to the image worker as JSON; the worker parses that back with the same
 *  validation. The canonical text (rf_chain_format) is the cache key's.
 *
 *  Operations (the transform, img_core, applies them in URL order; the
 *  settings — format, quality, gravity, background, optimize, strip — hold
 *  for the whole chain, the last one winning):
 *    resize/WxH[M]   fit inside W×H ("W", "Wx" or "xH": one side); M is a
 *                    geometry modifier: ^ fill (cover), ! exact, > shrink
 *                    only, < enlarge only. Only < and ! enlarge.
 *    crop/WxH+X+Y    the W×H area at X,Y (clipped to the image); crop/WxH
 *                    takes it where gravity says
 *    thumbnail/WxH   fill W×H, then crop to it at gravity
 *    gravity/G       center north northeast east southeast south southwest
 *                    west northwest smart (libvips attention)
 *    rotate/A        90 180 270 (after EXIF auto-orientation, always done)
 *    flip, flop      mirror top-bottom, left-right
 *    format/F        jpeg jpg png webp avif gif auto
 *    quality/N       1..100
 *    optimize, strip metadata out (optimize also tunes the encoder)
 *    sharpen, blur/S (sigma 0.1..100), grayscale
 *    background/RRGGBB  for alpha flattening and extend
 *    extend/WxH      pad to W×H with the background, placed at gravity
 *    preset/NAME     a named chain from the vhost's dims.presets, inlined
 *    byoriginal/NAME a named rule set (dims.byoriginal): its first rule whose
 *                    condition holds for the original picks the chain
 *    split/H/N       tile N (from 0) of the image cut in horizontal bands H
 *                    pixels high (the last may be lower); split/H/manifest.json
 *                    the tile count and sizes as JSON (seed split loading).
 *                    Last in the chain.
 */
#ifndef RF_CHAIN_H
#define RF_CHAIN_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RF_CHAIN_MAX_OPS 16
#define RF_CHAIN_MAX_DIM 16384
#define RF_BYORIG_MAX_RULES 16
#define RF_BYORIG_CHAIN_MAX 512
#define RF_CHAIN_NAME_MAX 64

typedef enum {
    RF_OP_RESIZE,
    RF_OP_CROP,
    RF_OP_THUMBNAIL,
    RF_OP_GRAVITY,
    RF_OP_ROTATE,
    RF_OP_FLIP,
    RF_OP_FLOP,
    RF_OP_FORMAT,
    RF_OP_QUALITY,
    RF_OP_OPTIMIZE,
    RF_OP_STRIP,
    RF_OP_SHARPEN,
    RF_OP_BLUR,
    RF_OP_GRAYSCALE,
    RF_OP_BACKGROUND,
    RF_OP_EXTEND,
    RF_OP_BYORIGINAL,
    RF_OP_SPLIT,
} rf_op_kind_t;

typedef enum { RF_FMT_KEEP = 0, RF_FMT_JPEG, RF_FMT_PNG, RF_FMT_WEBP, RF_FMT_AVIF, RF_FMT_GIF, RF_FMT_AUTO } rf_format_t;

typedef enum {
    RF_FIT_INSIDE = 0, /* WxH: fit inside, never enlarge */
    RF_FIT_FILL,       /* WxH^: cover the box (one side may exceed it), never enlarge */
    RF_FIT_EXACT,      /* WxH!: exactly W×H, aspect ignored (may enlarge) */
    RF_FIT_SHRINK,     /* WxH>: only if larger than the box (what INSIDE does; the spelling is accepted) */
    RF_FIT_ENLARGE,    /* WxH<: only if smaller than the box: enlarge to fit inside it */
} rf_fit_t;

typedef enum {
    RF_GRAV_CENTER = 0,
    RF_GRAV_NORTH,
    RF_GRAV_NORTHEAST,
    RF_GRAV_EAST,
    RF_GRAV_SOUTHEAST,
    RF_GRAV_SOUTH,
    RF_GRAV_SOUTHWEST,
    RF_GRAV_WEST,
    RF_GRAV_NORTHWEST,
    RF_GRAV_SMART,
} rf_gravity_t;

/* One byoriginal rule: it holds when the original is at most max_width
 * wide, max_height high, max_bytes long (0: any) and of `format`
 * (RF_FMT_KEEP: any); then `chain` (text, no byoriginal in it) applies. */
typedef struct {
    int max_width, max_height;
    int64_t max_bytes;
    rf_format_t format;
    char chain[RF_BYORIG_CHAIN_MAX];
} rf_byorig_rule_t;

/* A named rule set (seed <ByOriginal Name=...>): the first rule that
 * holds wins; a rule without conditions is the default. */
typedef struct {
    char name[RF_CHAIN_NAME_MAX];
    rf_byorig_rule_t rules[RF_BYORIG_MAX_RULES];
    size_t n;
} rf_byorig_t;

typedef struct {
    rf_op_kind_t kind;
    int w, h;             /* resize, crop, thumbnail, extend; 0 = unconstrained side (resize) */
    int x, y;             /* crop: offsets, or -1 (both) = at gravity; split: x = tile index, -1 = manifest */
    rf_fit_t fit;         /* resize */
    rf_format_t format;   /* format: after negotiation never RF_FMT_AUTO (see auto_format) */
    bool auto_format;     /* format came from format/auto (negotiated: Vary: Accept) */
    bool negotiated;      /* auto_format and rf_chain_negotiate has run */
    int quality;          /* quality */
    rf_gravity_t gravity; /* gravity */
    int angle;            /* rotate: 90, 180 or 270 */
    double sigma;         /* blur */
    uint32_t rgb;         /* background: 0xRRGGBB */
} rf_op_t;

typedef struct {
    rf_op_t ops[RF_CHAIN_MAX_OPS];
    size_t n;
    rf_byorig_t byorig; /* the rule set of the (at most one) byoriginal op, copied */
} rf_chain_t;

/* A named chain (dims.presets). */
typedef struct {
    const char *name;
    const char *chain; /* text without the keyword: "resize/200x200^/gravity/smart/format/webp" */
} rf_preset_t;

/* What names in a chain refer to; NULL or empty: no presets and no rule sets. */
typedef struct {
    const rf_preset_t *presets;
    size_t n_presets;
    const rf_byorig_t *byorig;
    size_t n_byorig;
} rf_chain_ctx_t;

/* Splits a request path at the first segment equal to `keyword`:
 * "/a/b.jpg/dims/resize/1x1" -> source "/a/b.jpg", chain "resize/1x1".
 * Returns 1 when the keyword is present (out pointers borrow from `path`,
 * lengths given), 0 when it is not (a plain request). */
int rf_chain_split(const char *path, size_t len, const char *keyword, const char **src, size_t *src_len,
                   const char **chain, size_t *chain_len);

/* Splits the source-last form (seed Appendix C) "/KEYWORD/CHAIN/src/SOURCE":
 * "/dims/quality/50/src/http://foo.com/2.jpg" -> chain "quality/50",
 * source "http://foo.com/2.jpg"; "/dims/resize/100/src/nas01/a/1.jpg" ->
 * source "nas01/a/1.jpg". Returns 1 when the path has that form (pointers
 * borrow from path), else 0. */
int rf_chain_split_src(const char *path, size_t len, const char *keyword, const char **chain, size_t *chain_len,
                       const char **src, size_t *src_len);

/* Parses "resize/500x500/format/webp" (no leading keyword) into *out,
 * expanding preset/NAME and resolving byoriginal/NAME through ctx (may be
 * NULL). Returns 0, or -1 with a one-line reason naming the bad token and
 * what is valid written into why[why_len]. */
int rf_chain_parse(const char *text, size_t len, const rf_chain_ctx_t *ctx, rf_chain_t *out, char *why,
                   size_t why_len);

/* Whether the chain has format/auto, and resolves it from the client's
 * Accept (NULL: none): AVIF when image/avif is accepted, else WebP when
 * image/webp is, else the source's format. The canonical text then names
 * the choice ("format/auto:webp"), so each choice is its own cache entry. */
bool rf_chain_has_auto(const rf_chain_t *chain);
void rf_chain_negotiate(rf_chain_t *chain, const char *accept, size_t accept_len);

/* The chain for the worker: a JSON array of canonical operation texts
 * ("resize/500x500^"), with byoriginal as {"op": "byoriginal", "name": N,
 * "rules": [{"width", "height", "bytes", "format", "chain"}]} (caller owns
 * the reference; NULL on out of memory). */
json_t *rf_chain_to_json(const rf_chain_t *chain);

/* Parses the JSON form back with the same validation: 0 or -1 + reason. */
int rf_chain_from_json(const json_t *arr, rf_chain_t *out, char *why, size_t why_len);

/* Picks the byoriginal rule for an original of w×h pixels, `bytes` long,
 * in format `fmt` (RF_FMT_KEEP when not one of ours) and parses its chain
 * into *out (no presets or byoriginal inside). 0, or -1 + reason when no
 * rule holds (the rule set has no default) or the chain is bad. */
int rf_byorig_pick(const rf_byorig_t *set, int w, int h, int64_t bytes, rf_format_t fmt, rf_chain_t *out, char *why,
                   size_t why_len);

/* Canonical text form ("resize/500x500^/format/webp"), for logs and cache
 * keys; byoriginal is "byoriginal/NAME:HASH" (HASH of its rules, so that a
 * changed rule set makes new keys). Writes at most len bytes including
 * NUL; returns 0 or -1 if short. */
int rf_chain_format(const rf_chain_t *chain, char *buf, size_t len);

/* Whether two chains are the same operations (field by field) with the
 * same byoriginal rules. */
bool rf_chain_equal(const rf_chain_t *a, const rf_chain_t *b);

const char *rf_format_name(rf_format_t f);     /* "jpeg", "png", "webp", "avif", "gif", "auto", "keep" */
const char *rf_format_mime(rf_format_t f);     /* "image/jpeg", ... or NULL */
rf_format_t rf_format_parse(const char *name); /* RF_FMT_KEEP if unknown; "jpg" is jpeg */
const char *rf_gravity_name(rf_gravity_t g);

#endif
