/*  rf_http — small HTTP field rules shared by the gateway's request checks
 *  and its origin client: token lists and the Range policy. Pure functions,
 *  no I/O, so they are unit-tested and fuzzed on their own.
 */
#ifndef RF_HTTP_H
#define RF_HTTP_H

#include <stddef.h>

/* Most ranges one request may ask for; more are ignored (whole object). */
#define RF_RANGE_MAX 16

/* Whether the comma-separated token list v[0..len) (RFC 9110 §5.6.1:
 * optional whitespace around elements, empty elements allowed) holds
 * `token`, compared case-insensitively as a whole element — "notchunked"
 * does not hold "chunked". */
int rf_http_has_token(const char *v, size_t len, const char *token);

/* Number of elements in a token list (empty elements not counted). */
size_t rf_http_count_tokens(const char *v, size_t len);

typedef enum {
    RF_RANGE_FORWARD = 0, /* a sane byte-range set: let it through */
    RF_RANGE_IGNORE = 1,  /* malformed, another unit, overlapping, descending or too many: drop it */
} rf_range_verdict_t;

/* Applies the Range policy (RFC 9110 §14.2: a server MAY ignore a Range
 * with many or overlapping ranges) to a Range value. A request keeps its
 * Range only when it is `bytes=` with 1..RF_RANGE_MAX well-formed ranges,
 * the bounded ones ascending and disjoint, and at most one suffix range
 * ("-N"), which must be last. So a 206 carries at most twice the object
 * (plus part headers), never the 500x that "0-,0-,…" would buy.
 * Writes a static reason to *why on IGNORE (may be NULL). */
rf_range_verdict_t rf_http_range_check(const char *v, size_t len, const char **why);

#endif
