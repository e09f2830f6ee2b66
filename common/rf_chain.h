/*  rf_chain — the image function chain of a URL.
 *
 *    /photo.jpg/dims/resize/500x500/format/webp/quality/60
 *    └ source ┘└kw ┘└──────────── operations ───────────┘
 *
 *  The gateway parses and validates the chain (a malformed chain is a 400
 *  before any origin traffic), sends it to the image worker as JSON, and the
 *  worker parses the JSON back with the same validation. Operations so far:
 *    resize/WxH   fit inside W×H keeping aspect (also "W", "Wx", "xH")
 *    format/F     jpeg|jpg|png|webp
 *    quality/N    1..100
 *    optimize     strip metadata, re-encode with an optimised encoder setup
 */
#ifndef RF_CHAIN_H
#define RF_CHAIN_H

#include <jansson.h>
#include <stddef.h>

#define RF_CHAIN_MAX_OPS 16
#define RF_CHAIN_MAX_DIM 16384

typedef enum { RF_OP_RESIZE, RF_OP_FORMAT, RF_OP_QUALITY, RF_OP_OPTIMIZE } rf_op_kind_t;

typedef enum { RF_FMT_KEEP = 0, RF_FMT_JPEG, RF_FMT_PNG, RF_FMT_WEBP } rf_format_t;

typedef struct {
    rf_op_kind_t kind;
    int w, h;           /* resize: 0 = unconstrained side */
    rf_format_t format; /* format */
    int quality;        /* quality */
} rf_op_t;

typedef struct {
    rf_op_t ops[RF_CHAIN_MAX_OPS];
    size_t n;
} rf_chain_t;

/* Splits a request path at the first segment equal to `keyword`:
 * "/a/b.jpg/dims/resize/1x1" -> source "/a/b.jpg", chain "resize/1x1".
 * Returns 1 when the keyword is present (out pointers borrow from `path`,
 * lengths given), 0 when it is not (a plain request). */
int rf_chain_split(const char *path, size_t len, const char *keyword, const char **src, size_t *src_len,
                   const char **chain, size_t *chain_len);

/* Parses "resize/500x500/format/webp" (no leading keyword) into *out.
 * Returns 0, or -1 with a one-line reason written into why[why_len]. */
int rf_chain_parse(const char *text, size_t len, rf_chain_t *out, char *why, size_t why_len);

/* The chain as a JSON array of operation objects (caller owns the ref). */
json_t *rf_chain_to_json(const rf_chain_t *chain);

/* Parses the JSON form back with the same validation: 0 or -1 + reason. */
int rf_chain_from_json(const json_t *arr, rf_chain_t *out, char *why, size_t why_len);

/* Canonical text form ("resize/500x500/format/webp"), for logs and cache
 * keys. Writes at most len bytes including NUL; returns 0 or -1 if short. */
int rf_chain_format(const rf_chain_t *chain, char *buf, size_t len);

const char *rf_format_name(rf_format_t f);     /* "jpeg", "png", "webp", "keep" */
const char *rf_format_mime(rf_format_t f);     /* "image/jpeg", ... or NULL */
rf_format_t rf_format_parse(const char *name); /* RF_FMT_KEEP if unknown */

#endif
