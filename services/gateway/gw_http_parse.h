/*  gw_http_parse — the gateway's parsers of client-supplied strings, as pure
 *  functions: the Range, If-Range and conditional headers a cache hit
 *  answers itself (gw_serve.c), and the purge API's query string and target
 *  URLs (gw_admin.c).
 *
 *  No h2o, no allocation, no I/O, so that tests/unit/test_http_parse.c and
 *  fuzz/fuzz_range.c reach them without a server. Inputs are (pointer,
 *  length) pairs, not NUL-terminated, and are only read (gw_query_decode
 *  writes in place); every pointer returned points into the caller's input.
 */
#ifndef GW_HTTP_PARSE_H
#define GW_HTTP_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A Range number above this counts as malformed (the Range is ignored):
 * positions then stay far from 2^64, so "to + 1" never wraps. */
#define GW_RANGE_NUM_MAX (1ULL << 62)

/* A stored response's validators, as found in its header blob. */
typedef struct {
    const char *etag; /* NULL: the response has no ETag */
    size_t etag_len;
    const char *last_modified; /* NULL: no Last-Modified */
    size_t last_modified_len;
} gw_validators_t;

/* RFC 9110 13.1.2: whether the If-None-Match list[0..len) holds etag
 * (weak comparison: W/ ignored on both sides), or is "*". Both borrowed. */
bool gw_etag_in(const char *list, size_t len, const char *etag, size_t elen);

/* Whether a stored 200 answers the request with 304 (RFC 9110 13.2.2:
 * If-None-Match, when sent, wins over If-Modified-Since). inm / ims are the
 * request's If-None-Match / If-Modified-Since values, NULL when absent. All
 * borrowed. */
bool gw_not_modified(const char *inm, size_t inm_len, const char *ims, size_t ims_len, const gw_validators_t *stored);

/* Whether an If-Range value cond[0..len) still matches the stored response,
 * so that its Range applies: a strong ETag comparison, or the exact
 * Last-Modified text (RFC 9110 13.1.5). Both borrowed. */
bool gw_if_range_ok(const char *cond, size_t len, const gw_validators_t *stored);

/* One byte range of a body of `total` bytes from a Range value v[0..len)
 * (borrowed): 1 (a range in *from, *to, inclusive, from <= to < total),
 * 0 (no usable Range: send the whole body — another unit, several ranges,
 * a malformed or descending range, a number above GW_RANGE_NUM_MAX),
 * -1 (unsatisfiable: 416). *from and *to are the caller's; they are only
 * meaningful on 1. */
int gw_parse_range(const char *v, size_t len, uint64_t total, uint64_t *from, uint64_t *to);

/* Percent-decodes a query parameter value s[0..len) in place ('+' is a
 * space; a '%' not followed by two hex digits stays as it is) and returns
 * the decoded length, never more than len. */
size_t gw_query_decode(char *s, size_t len);

/* The next non-empty `name=value` parameter of the query string
 * [*cur, end) ('&'-separated, no leading '?'): true with *val, *vlen set
 * (still percent-encoded, borrowed from the query) and *cur moved past it;
 * false at the end of the query. */
bool gw_query_next(const char **cur, const char *end, const char *name, const char **val, size_t *vlen);

/* A purge target, "http://host/path?query" or "//host/path", split; every
 * pointer borrows from the URL. */
typedef struct {
    const char *host; /* never empty */
    size_t host_len;
    const char *path; /* from the first '/' after the host up to '?' or the end */
    size_t path_len;
    const char *query; /* '?' and what follows, or NULL */
    size_t query_len;
    bool glob; /* a '*' in path or query: an fnmatch pattern */
} gw_purge_target_t;

/* Splits url[0..len) (borrowed) into *t. Returns NULL, or a static reason
 * the URL is refused. */
const char *gw_purge_target_split(const char *url, size_t len, gw_purge_target_t *t);

#endif
