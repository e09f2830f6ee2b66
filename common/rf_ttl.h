/*  rf_ttl — the edge cache's freshness policy: whether an origin response
 *  may be stored, for how long it is fresh, and what a client's request
 *  directives ask of the cache. Pure functions over header arrays, no I/O,
 *  no allocation, no h2o, so they are unit-tested and fuzzed on their own
 *  (tests/unit/test_ttl.c, fuzz/fuzz_ttl.c). Every string argument is
 *  borrowed for the duration of the call; nothing is kept.
 *
 *  Sources: RFC 9111 (HTTP caching, as a shared cache), RFC 5861
 *  (stale-while-revalidate / stale-if-error) and STON Edge Server's TTL
 *  policy (https://ston.readthedocs.io/en/latest/admin/caching_policy.html),
 *  whose knobs are mirrored in rf_ttl_conf_t:
 *
 *      <TTL>
 *          <Res2xx Ratio="20" Max="86400">1800</Res2xx>
 *          <NoCache Ratio="0" Max="5" MaxAge="0">5</NoCache>
 *          <Res3xx>300</Res3xx> <Res4xx>30</Res4xx> <Res5xx>30</Res5xx>
 *      </TTL>
 *
 *  What the knobs mean (STON's documented meaning, implemented here). STON:
 *  "When saving contents, expiration period is set to <Res2xx> seconds.
 *  (After TTL expired) If the origin server replies that the contents have
 *  not been changed (304 Not Modified), TTL is extended according to the
 *  Ratio value (0~100). TTL can be extended up to Max seconds." So `value`
 *  is the TTL given when the object is first stored; `ratio` is the percent
 *  by which the TTL GROWS on every revalidation answered 304; `max` caps
 *  that growth. Example with {1800, 20, 86400}: stored for 1800 s, then
 *  304 -> 2160 s, 304 -> 2592 s, 304 -> 3111 s, ... until 86400 s. Our issue
 *  text calls Ratio "the ratio of the Last-Modified age"; that is NOT what
 *  STON documents and NOT what this module does: Ratio is the 304 growth
 *  rate. The Last-Modified age enters only through RFC 9111's heuristic
 *  (heuristic_percent below, 10 % by default), which can shorten, never
 *  lengthen, the first Res2xx TTL of a recently modified object. NoCache
 *  {value, ratio, max} is the same rule for responses the origin marks
 *  "no-cache or private or must-revalidate" (STON's words); see the class
 *  table below for how each of those is treated here. NoCache MaxAge: STON
 *  "If MaxAge is greater than 0, max-age can be applied. Files are cached
 *  to the client for Max-Age seconds" — the gateway then answers clients
 *  with `Cache-Control: max-age=MaxAge` for such objects
 *  (verdict.client_max_age). Res3xx/4xx/5xx are fixed TTLs, no growth.
 *  STON: "If 0 is set for TTL, contents will be expired as soon as they are
 *  serviced" — the "fixed load" pattern: ttl 0 with storable=true means the
 *  one origin answer is shared with every request waiting for it, then
 *  dropped.
 *
 *  Decision order of rf_ttl_decide (first match wins):
 *    1. Cache-Control: no-store                       -> not stored "no-store"
 *    2. Cache-Control: private (no field list)        -> not stored "private"
 *       (RFC 9111 5.2.2.7; STON would store it under NoCache: not here, a
 *       shared cache must not, and override_origin does not change it)
 *    3. the request carried Authorization and the response has none of
 *       public, s-maxage, must-revalidate (RFC 9111 3.5) -> "authorization"
 *    4. a status outside the classes below            -> "status"
 *    5. Vary containing "*"                           -> "vary-star"
 *    6. freshness, when override_origin is false (RFC 9111 first):
 *       a. no-cache (no field list): stored, no_cache=true, ttl 0 — it must
 *          be revalidated before every use (RFC 9111 5.2.2.4), which STON's
 *          NoCache TTL would not do; only override_origin applies the
 *          NoCache rule to it.
 *       b. explicit freshness: s-maxage > max-age > Expires - Date; reduced
 *          by the response's age. Invalid or conflicting values (garbage,
 *          negative, two different max-age) make it stale: ttl 0, stored.
 *       c. must-revalidate / proxy-revalidate without explicit freshness:
 *          the NoCache rule (STON's cc_nocache class).
 *       d. otherwise the status's rule: Res2xx for 200/203/204, Res3xx for
 *          300/301/302/303/307/308, Res4xx for 404/405/410/414, Res5xx for
 *          500/501/502/503/504. For the heuristically cacheable ones among
 *          them (RFC 9111 4.2.2: 200 203 204 300 301 308 404 405 410 414
 *          501) with a Last-Modified before Date, the TTL is at most
 *          heuristic_percent of (Date - Last-Modified), less the age: an
 *          object changed ten minutes ago gets 60 s, not 1800 s.
 *    7. when override_origin is true, origin freshness (max-age, s-maxage,
 *       Expires, heuristics) is ignored: no-cache / must-revalidate /
 *       proxy-revalidate responses get the NoCache rule (no_cache=false),
 *       all others the status's rule. Steps 1-5 still apply.
 *  Statuses left out on purpose: 1xx, 206 (the cache never forwards Range,
 *  so a 206 answers someone else's question), 304 (see rf_ttl_after_304),
 *  and request-specific errors (400, 401, 403, 408, 412, 413, 429, 505, ...)
 *  which, cached by URL, let one client's bad request poison everyone's
 *  answer (the CPDoS attacks).
 *  Set-Cookie: the response is stored, but strip_set_cookie says the cache
 *  must neither store nor replay the Set-Cookie lines (they belong to the
 *  client whose request fetched it; waiters sharing that fetch must not get
 *  them either). Field-named private="a, b" / no-cache="a" do not block
 *  storage: those fields are withheld instead (rf_ttl_strip_field).
 *  Ages and lifetimes are clamped to 2^31 s (RFC 9111 1.2.2).
 */
#ifndef RF_TTL_H
#define RF_TTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Largest delta-seconds a cache must represent (RFC 9111 1.2.2). */
#define RF_TTL_DELTA_MAX 2147483648LL

/* One header line, borrowed (not NUL-terminated). */
typedef struct {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
} rf_hdr_t;

/* A STON rule: first TTL, percent of growth per 304, growth cap.
 * Seconds, percent (0..100), seconds. */
typedef struct {
    int64_t value;
    int ratio;
    int64_t max;
} rf_ttl_rule_t;

typedef struct {
    rf_ttl_rule_t res2xx;    /* default {1800, 20, 86400} (STON) */
    rf_ttl_rule_t nocache;   /* default {5, 0, 5} (STON's page; the seed's circuit breaker uses {30, 0, 60}) */
    int64_t nocache_max_age; /* STON NoCache MaxAge: >0 -> clients get max-age=N for NoCache objects; default 0 */
    int64_t res3xx, res4xx, res5xx; /* defaults 300, 30, 30: STON's page says 30 for 4xx and 5xx */
    bool override_origin; /* vhost TTLs even when the origin sends max-age/Expires (no-store/private still honoured) */
    /* Added: RFC 9111 4.2.2 heuristic, percent of (Date - Last-Modified)
     * that bounds a rule TTL when the origin gives no freshness; default
     * 10 (the RFC's example), 0 disables it (pure STON). */
    int heuristic_percent;
    /* Added for STON's circuit breaker (TTLExtensionBy4xx / By5xx,
     * ConnectTimeout): see rf_ttl_on_origin_error. Defaults false, true, 3. */
    bool extend_by_4xx, extend_by_5xx;
    int64_t origin_error_ttl;
} rf_ttl_conf_t;

/* Fills *c with the defaults above. */
void rf_ttl_conf_default(rf_ttl_conf_t *c);

/* Where a verdict's TTL came from (added: rf_ttl_after_304 grows only
 * rule TTLs, and the cache can log it). */
typedef enum {
    RF_TTL_SRC_NONE = 0, /* not storable */
    RF_TTL_SRC_ORIGIN,   /* s-maxage, max-age or Expires */
    RF_TTL_SRC_RES2XX,
    RF_TTL_SRC_NOCACHE,
    RF_TTL_SRC_RES3XX,
    RF_TTL_SRC_RES4XX,
    RF_TTL_SRC_RES5XX,
} rf_ttl_source_t;

typedef struct {
    bool storable;        /* may be kept at all */
    const char *why_not;  /* static token when !storable: "no-store", "private", "authorization", "status",
                             "vary-star"; NULL when storable */
    int64_t ttl;          /* seconds of freshness from now, already reduced by the response's age (origin
                             lifetimes; rule TTLs count from storing, as STON's do); 0 = share with waiters, then
                             drop (or keep only as a revalidation base when has_validator) */
    bool must_revalidate; /* must-revalidate/proxy-revalidate/s-maxage: never served stale */
    bool no_cache;        /* stored but revalidated before every use (Cache-Control: no-cache); ttl is 0 */
    int64_t stale_while_revalidate, stale_if_error; /* RFC 5861, seconds, 0 if absent or never-stale */
    int64_t age;                                    /* corrected initial age (RFC 9111 4.2.3) */
    bool has_validator;                             /* ETag or a valid Last-Modified present */
    /* Added: */
    int64_t lifetime;       /* freshness lifetime before the age is taken off; what a 304 grows */
    rf_ttl_source_t source; /* which rule set ttl */
    bool heuristic;         /* the Last-Modified heuristic shortened the rule TTL */
    bool bad_freshness;     /* invalid or conflicting freshness (RFC 9111 4.2.1): stale on arrival */
    bool strip_set_cookie;  /* the response has Set-Cookie: do not store or replay those lines */
    bool strip_fields;      /* some lines must be withheld (Set-Cookie, or private="..."/no-cache="..."
                               field lists): ask rf_ttl_strip_field for each line before storing */
    int64_t client_max_age; /* >=0: send clients Cache-Control: max-age=N instead of the origin's (NoCache
                               MaxAge); -1: pass the origin's through */
} rf_ttl_verdict_t;

/* status + origin response headers -> verdict (the order is in the file
 * comment). request_time/response_time: unix seconds when the request was
 * sent / the response head was received (response_time is "now").
 * req_authorization: the client request carried Authorization (RFC 9111
 * 3.5). A request's own Cache-Control: no-store is the caller's to honour
 * (rf_ttl_request). h[0..n) is borrowed; *out is the caller's and holds no
 * pointer other than the static why_not. Returns 0, or -1 only on bad
 * arguments (c or out NULL, h NULL with n > 0), with *out zeroed and
 * not storable when out is not NULL. */
int rf_ttl_decide(const rf_ttl_conf_t *c, int status, const rf_hdr_t *h, size_t n, int64_t request_time,
                  int64_t response_time, bool req_authorization, rf_ttl_verdict_t *out);

/* STON's growth rule alone: the TTL after one more 304 for an object whose
 * lifetime was prev: prev + ceil(prev * ratio / 100), at most
 * max(r->max, r->value) (Max caps growth, it never cuts below the first
 * TTL); ratio is clamped to 0..100. {1800,20,86400}: 1800 -> 2160;
 * 86000 -> 86400; {5,0,5}: 5 -> 5. Never negative. */
int64_t rf_ttl_grow(const rf_ttl_rule_t *r, int64_t prev);

/* The verdict after a revalidation answered 304 (object unchanged). The
 * stored response's headers are updated with the 304's (RFC 9111 4.3.4: a
 * field in the 304 replaces every stored line of that name), then decided
 * again as rf_ttl_decide would for status_of_stored; when both that and
 * *prev come from the same growing rule (Res2xx or NoCache, not no_cache),
 * the lifetime is the larger of the new decision and rf_ttl_grow(rule,
 * prev->lifetime). So max-age objects take the 304's new max-age, rule
 * objects grow by Ratio up to Max. A 304 may also make the object
 * unstorable (e.g. it now says no-store): the cache then drops it after
 * answering. prev may be NULL (no growth). All arrays borrowed; *out as
 * for rf_ttl_decide. Returns 0, -1 on bad arguments. */
int rf_ttl_after_304(const rf_ttl_conf_t *c, int status_of_stored, const rf_ttl_verdict_t *prev, const rf_hdr_t *stored,
                     size_t n_stored, const rf_hdr_t *h304, size_t n304, int64_t request_time, int64_t response_time,
                     bool req_authorization, rf_ttl_verdict_t *out);

/* STON's circuit breaker, for a stale object whose revalidation failed:
 * status is the origin's answer, or 0 when there was none (connect or
 * receive failure, timeout). Returns the TTL (>= 0) to give the stored
 * object so it is served instead of the failure, or -1 to let the failure
 * through. A 4xx with extend_by_4xx or a 5xx with extend_by_5xx counts as a
 * 304 (STON: "React as if it received 304 Not Modified"): rule objects
 * grow, origin ones get their lifetime again; no response at all gives
 * origin_error_ttl (-1 when that is <= 0). Always -1 for objects that must
 * not be served stale (must_revalidate, no_cache: RFC 9111 4.2.4) or are
 * not storable. stored is borrowed. */
int64_t rf_ttl_on_origin_error(const rf_ttl_conf_t *c, const rf_ttl_verdict_t *stored, int status);

/* Whether the response line named name[0..name_len) must be withheld from
 * the stored copy: Set-Cookie always, and any field listed in the
 * response's Cache-Control private="..." or no-cache="..." (RFC 9111
 * 5.2.2.4 / 5.2.2.7, case-insensitive; a single token form private=X is
 * read too). h[0..n) and name are borrowed. */
bool rf_ttl_strip_field(const rf_hdr_t *h, size_t n, const char *name, size_t name_len);

/* Client request directives that matter to a shared cache. */
typedef struct {
    bool no_cache;       /* Cache-Control: no-cache, or Pragma: no-cache when there is no Cache-Control */
    bool no_store;       /* do not store the response to this request */
    bool only_if_cached; /* answer from the cache or 504 */
    int64_t max_age;     /* -1 absent; the smallest valid one when repeated */
    int64_t max_stale;   /* -1 absent, INT64_MAX bare; the smallest when repeated */
    int64_t min_fresh;   /* 0 absent; the largest when repeated */
} rf_ttl_req_t;

/* Reads the request's Cache-Control lines (and Pragma) into *out, the
 * caller's. Invalid values are ignored (an unparsable max-age is as if
 * absent); repeated ones keep the most restrictive. Values are clamped to
 * 2^31. Whether to honour no-cache is policy: STON's NoCacheRequestExpire
 * is OFF by default, since any client could otherwise send every request
 * to the origin. h[0..n) borrowed; h NULL or out NULL is allowed (out
 * NULL does nothing, h NULL reads as no headers). */
void rf_ttl_request(const rf_hdr_t *h, size_t n, rf_ttl_req_t *out);

/* HTTP-date (RFC 9110 5.6.7: IMF-fixdate "Sun, 06 Nov 1994 08:49:37 GMT",
 * obsolete RFC 850 "Sunday, 06-Nov-94 08:49:37 GMT" and asctime
 * "Sun Nov  6 08:49:37 1994") -> unix seconds; -1 if invalid. Surrounding
 * spaces are ignored; names are case-sensitive as the RFC says; a
 * two-digit year more than 50 years ahead of today is in the past century;
 * a date before 1970 returns 0. s is borrowed, need not be NUL-terminated. */
int64_t rf_http_date_parse(const char *s, size_t len);

/* Writes t as an IMF-fixdate plus NUL into buf (caller's, >= 30 bytes) and
 * returns its length, 29. t is clamped to 1970..9999. */
size_t rf_http_date_format(int64_t t, char *buf);

#endif
