/*  Unit tests for common/rf_ttl: RFC 9111 freshness as a shared cache,
 *  STON's Res2xx/NoCache/Res3xx..5xx rules (Ratio grows the TTL on each 304
 *  up to Max), the vhost override, hostile Cache-Control, HTTP-dates and the
 *  request directives. Times are fixed: NOW is Tue, 14 Nov 2023 22:13:20 GMT. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rf_ttl.h"

#define NOW 1700000000LL
#define MAXH 16

/* Headers from "Name: value" strings (NULL-terminated list); the strings
 * are borrowed by the returned array, which lives in *hs. */
typedef struct {
    rf_hdr_t h[MAXH];
    size_t n;
} hdrs_t;

static void s_hdrs(hdrs_t *hs, const char *const *lines)
{
    hs->n = 0;
    for (size_t i = 0; lines[i] != NULL; i++) {
        assert_true(hs->n < MAXH);
        const char *colon = strchr(lines[i], ':');
        assert_non_null(colon);
        const char *v = colon + 1;
        while (*v == ' ')
            v++;
        hs->h[hs->n++] = (rf_hdr_t){lines[i], (size_t)(colon - lines[i]), v, strlen(v)};
    }
}

/* A decision at NOW for a request sent at NOW, default conf unless c. */
static rf_ttl_verdict_t s_decide_c(const rf_ttl_conf_t *c, int status, bool auth, const char *const *lines)
{
    rf_ttl_conf_t def;
    rf_ttl_conf_default(&def);
    hdrs_t hs;
    s_hdrs(&hs, lines);
    rf_ttl_verdict_t v;
    assert_int_equal(rf_ttl_decide(c ? c : &def, status, hs.h, hs.n, NOW, NOW, auth, &v), 0);
    /* invariants every verdict keeps */
    assert_true(v.ttl >= 0);
    assert_true(v.storable == (v.why_not == NULL));
    if (v.no_cache)
        assert_int_equal(v.ttl, 0);
    return v;
}

#define DECIDE(status, ...) s_decide_c(NULL, status, false, (const char *const[]){__VA_ARGS__, NULL})
#define DECIDE_C(c, status, ...) s_decide_c(c, status, false, (const char *const[]){__VA_ARGS__, NULL})
#define DECIDE_AUTH(status, ...) s_decide_c(NULL, status, true, (const char *const[]){__VA_ARGS__, NULL})

/* "Date: <NOW + off>" etc., formatted into a static ring of buffers. */
static const char *s_hdate(const char *name, int64_t t)
{
    static char ring[8][80];
    static int k;
    char *b = ring[k++ % 8], d[30];
    rf_http_date_format(t, d);
    snprintf(b, 80, "%s: %s", name, d);
    return b;
}

static void test_defaults(void **state)
{
    (void)state;
    rf_ttl_conf_t c;
    rf_ttl_conf_default(&c);
    assert_int_equal(c.res2xx.value, 1800);
    assert_int_equal(c.res2xx.ratio, 20);
    assert_int_equal(c.res2xx.max, 86400);
    assert_int_equal(c.nocache.value, 5);
    assert_int_equal(c.nocache.ratio, 0);
    assert_int_equal(c.nocache.max, 5);
    assert_int_equal(c.nocache_max_age, 0);
    assert_int_equal(c.res3xx, 300);
    assert_int_equal(c.res4xx, 30);
    assert_int_equal(c.res5xx, 30);
    assert_false(c.override_origin);
    assert_int_equal(c.heuristic_percent, 10);
    assert_false(c.extend_by_4xx);
    assert_true(c.extend_by_5xx);
    assert_int_equal(c.origin_error_ttl, 3);
    /* no Cache-Control, no validator: Res2xx */
    rf_ttl_verdict_t v = DECIDE(200, s_hdate("Date", NOW));
    assert_true(v.storable);
    assert_int_equal(v.ttl, 1800);
    assert_int_equal(v.source, RF_TTL_SRC_RES2XX);
    assert_false(v.has_validator);
    assert_false(v.must_revalidate);
    assert_false(v.no_cache);
    assert_int_equal(v.client_max_age, -1);
}

static void test_max_age(void **state)
{
    (void)state;
    rf_ttl_verdict_t v = DECIDE(200, s_hdate("Date", NOW), "Cache-Control: max-age=600");
    assert_true(v.storable);
    assert_int_equal(v.source, RF_TTL_SRC_ORIGIN);
    assert_int_equal(v.lifetime, 600);
    assert_int_equal(v.ttl, 600);
    assert_int_equal(v.age, 0);
    assert_false(v.must_revalidate);
    /* s-maxage beats max-age for a shared cache, and implies proxy-revalidate */
    v = DECIDE(200, "Cache-Control: max-age=600, s-maxage=60");
    assert_int_equal(v.ttl, 60);
    assert_true(v.must_revalidate);
    /* max-age beats Expires */
    v = DECIDE(200, s_hdate("Date", NOW), s_hdate("Expires", NOW + 9999), "Cache-Control: max-age=10");
    assert_int_equal(v.ttl, 10);
    /* explicit freshness beats the status rule for any stored status */
    v = DECIDE(500, "Cache-Control: max-age=60");
    assert_int_equal(v.ttl, 60);
    v = DECIDE(302, "Cache-Control: max-age=7");
    assert_int_equal(v.ttl, 7);
    /* max-age=0: storable, stale on arrival */
    v = DECIDE(200, "Cache-Control: max-age=0", "ETag: \"x\"");
    assert_true(v.storable);
    assert_int_equal(v.ttl, 0);
    assert_true(v.has_validator);
    /* RFC 5861 */
    v = DECIDE(200, "Cache-Control: max-age=60, stale-while-revalidate=30, stale-if-error=600");
    assert_int_equal(v.stale_while_revalidate, 30);
    assert_int_equal(v.stale_if_error, 600);
}

static void test_expires_date_age(void **state)
{
    (void)state;
    /* origin clock 100 s behind: apparent age 100 */
    rf_ttl_verdict_t v = DECIDE(200, s_hdate("Date", NOW - 100), s_hdate("Expires", NOW - 100 + 3600));
    assert_int_equal(v.lifetime, 3600);
    assert_int_equal(v.age, 100);
    assert_int_equal(v.ttl, 3500);
    /* origin clock ahead: lifetime is Expires - Date, no negative age */
    v = DECIDE(200, s_hdate("Date", NOW + 1000), s_hdate("Expires", NOW + 1600));
    assert_int_equal(v.age, 0);
    assert_int_equal(v.ttl, 600);
    /* Expires before Date */
    v = DECIDE(200, s_hdate("Date", NOW), s_hdate("Expires", NOW - 10));
    assert_true(v.storable);
    assert_int_equal(v.ttl, 0);
    assert_false(v.bad_freshness);
    /* invalid Expires ("0", garbage): already expired, still storable */
    v = DECIDE(200, s_hdate("Date", NOW), "Expires: 0");
    assert_true(v.storable);
    assert_int_equal(v.ttl, 0);
    assert_true(v.bad_freshness);
    assert_int_equal(v.source, RF_TTL_SRC_ORIGIN);
    /* two Expires lines that disagree */
    v = DECIDE(200, s_hdate("Expires", NOW + 60), s_hdate("Expires", NOW + 600));
    assert_int_equal(v.ttl, 0);
    assert_true(v.bad_freshness);
    v = DECIDE(200, s_hdate("Date", NOW), s_hdate("Expires", NOW + 60), s_hdate("Expires", NOW + 60));
    assert_int_equal(v.ttl, 60);
    /* no Date: the receive time stands in */
    v = DECIDE(200, s_hdate("Expires", NOW + 60));
    assert_int_equal(v.ttl, 60);
    /* Age header and response delay (request sent 2 s before) */
    rf_ttl_conf_t c;
    rf_ttl_conf_default(&c);
    hdrs_t hs;
    s_hdrs(&hs, (const char *const[]){"Cache-Control: max-age=600", "Age: 100", NULL});
    assert_int_equal(rf_ttl_decide(&c, 200, hs.h, hs.n, NOW - 2, NOW, false, &v), 0);
    assert_int_equal(v.age, 102);
    assert_int_equal(v.ttl, 498);
    /* list-valued Age: first member; invalid: ignored; huge: 2^31 */
    v = DECIDE(200, "Cache-Control: max-age=600", "Age: 100, 300");
    assert_int_equal(v.age, 100);
    v = DECIDE(200, "Cache-Control: max-age=600", "Age: -5");
    assert_int_equal(v.age, 0);
    assert_int_equal(v.ttl, 600);
    v = DECIDE(200, "Cache-Control: max-age=600", "Age: 99999999999999999999999");
    assert_int_equal(v.age, RF_TTL_DELTA_MAX);
    assert_int_equal(v.ttl, 0);
    /* older than its lifetime: 0, never negative */
    v = DECIDE(200, "Cache-Control: max-age=60", "Age: 600");
    assert_int_equal(v.ttl, 0);
}

static void test_no_store_private_no_cache(void **state)
{
    (void)state;
    rf_ttl_verdict_t v = DECIDE(200, "Cache-Control: no-store, max-age=600");
    assert_false(v.storable);
    assert_string_equal(v.why_not, "no-store");
    assert_int_equal(v.ttl, 0);
    v = DECIDE(200, "Cache-Control: max-age=600", "cache-control: No-Store");
    assert_string_equal(v.why_not, "no-store");
    v = DECIDE(200, "Cache-Control: private, max-age=600");
    assert_false(v.storable);
    assert_string_equal(v.why_not, "private");
    v = DECIDE(200, "Cache-Control: PRIVATE");
    assert_string_equal(v.why_not, "private");
    /* field-named private: stored, the named fields withheld */
    v = DECIDE(200, "Cache-Control: private=\"Set-Cookie, X-User\", max-age=600");
    assert_true(v.storable);
    assert_int_equal(v.ttl, 600);
    assert_true(v.strip_fields);
    assert_false(v.strip_set_cookie);
    /* no-cache: stored, revalidated before every use */
    v = DECIDE(200, "Cache-Control: no-cache, max-age=600", "ETag: \"a\"");
    assert_true(v.storable);
    assert_true(v.no_cache);
    assert_int_equal(v.ttl, 0);
    assert_int_equal(v.source, RF_TTL_SRC_NOCACHE);
    assert_true(v.has_validator);
    /* no-cache forbids stale serving: the RFC 5861 windows are dropped */
    v = DECIDE(200, "Cache-Control: no-cache, stale-if-error=600");
    assert_int_equal(v.stale_if_error, 0);
    /* field-named no-cache does not block reuse */
    v = DECIDE(200, "Cache-Control: no-cache=\"X-Debug\", max-age=60");
    assert_false(v.no_cache);
    assert_int_equal(v.ttl, 60);
    assert_true(v.strip_fields);
    /* Pragma on a response is not Cache-Control (RFC 9111 5.4) */
    v = DECIDE(200, "Pragma: no-cache", "Cache-Control: max-age=60");
    assert_false(v.no_cache);
    assert_int_equal(v.ttl, 60);
}

static void test_must_revalidate(void **state)
{
    (void)state;
    rf_ttl_verdict_t v =
        DECIDE(200, "Cache-Control: max-age=600, must-revalidate, stale-while-revalidate=30, stale-if-error=60");
    assert_int_equal(v.ttl, 600);
    assert_true(v.must_revalidate);
    assert_int_equal(v.stale_while_revalidate, 0); /* never served stale */
    assert_int_equal(v.stale_if_error, 0);
    /* without explicit freshness: STON's NoCache class, 5 s by default */
    v = DECIDE(200, "Cache-Control: must-revalidate");
    assert_true(v.storable);
    assert_true(v.must_revalidate);
    assert_false(v.no_cache);
    assert_int_equal(v.source, RF_TTL_SRC_NOCACHE);
    assert_int_equal(v.ttl, 5);
    v = DECIDE(200, "Cache-Control: proxy-revalidate");
    assert_true(v.must_revalidate);
    assert_int_equal(v.ttl, 5);
}

static void test_heuristic(void **state)
{
    (void)state;
    /* changed 1000 s ago: 10 % = 100 s, below Res2xx's 1800 */
    rf_ttl_verdict_t v = DECIDE(200, s_hdate("Date", NOW), s_hdate("Last-Modified", NOW - 1000));
    assert_true(v.has_validator);
    assert_true(v.heuristic);
    assert_int_equal(v.ttl, 100);
    assert_int_equal(v.source, RF_TTL_SRC_RES2XX);
    /* changed a day ago: 8640 s, capped by Res2xx's first TTL */
    v = DECIDE(200, s_hdate("Date", NOW), s_hdate("Last-Modified", NOW - 86400));
    assert_false(v.heuristic);
    assert_int_equal(v.ttl, 1800);
    /* the heuristic lifetime counts from Date: less the age */
    v = DECIDE(200, s_hdate("Date", NOW - 30), s_hdate("Last-Modified", NOW - 1030));
    assert_int_equal(v.age, 30);
    assert_int_equal(v.ttl, 70);
    /* Last-Modified after Date is bogus: ignored */
    v = DECIDE(200, s_hdate("Date", NOW), s_hdate("Last-Modified", NOW + 500));
    assert_int_equal(v.ttl, 1800);
    /* invalid Last-Modified: no validator, no heuristic */
    v = DECIDE(200, "Last-Modified: yesterday");
    assert_false(v.has_validator);
    assert_int_equal(v.ttl, 1800);
    /* 404 is heuristically cacheable: bounded too */
    v = DECIDE(404, s_hdate("Date", NOW), s_hdate("Last-Modified", NOW - 50));
    assert_int_equal(v.ttl, 5);
    assert_int_equal(v.source, RF_TTL_SRC_RES4XX);
    /* 302 is not: Res3xx stands */
    v = DECIDE(302, s_hdate("Date", NOW), s_hdate("Last-Modified", NOW - 50));
    assert_int_equal(v.ttl, 300);
    assert_false(v.heuristic);
    /* heuristic_percent 0: pure STON */
    rf_ttl_conf_t c;
    rf_ttl_conf_default(&c);
    c.heuristic_percent = 0;
    v = DECIDE_C(&c, 200, s_hdate("Date", NOW), s_hdate("Last-Modified", NOW - 1000));
    assert_int_equal(v.ttl, 1800);
    /* explicit freshness: no heuristic */
    v = DECIDE(200, s_hdate("Date", NOW), s_hdate("Last-Modified", NOW - 1000), "Cache-Control: max-age=900");
    assert_int_equal(v.ttl, 900);
    assert_false(v.heuristic);
}

static void test_authorization(void **state)
{
    (void)state;
    rf_ttl_verdict_t v = DECIDE_AUTH(200, "Cache-Control: max-age=600");
    assert_false(v.storable);
    assert_string_equal(v.why_not, "authorization");
    v = DECIDE_AUTH(200, "Content-Type: text/plain");
    assert_string_equal(v.why_not, "authorization");
    v = DECIDE_AUTH(200, "Cache-Control: public, max-age=600");
    assert_true(v.storable);
    assert_int_equal(v.ttl, 600);
    v = DECIDE_AUTH(200, "Cache-Control: s-maxage=60");
    assert_true(v.storable);
    assert_int_equal(v.ttl, 60);
    v = DECIDE_AUTH(200, "Cache-Control: must-revalidate, max-age=120");
    assert_true(v.storable);
    assert_int_equal(v.ttl, 120);
    /* proxy-revalidate is not one of the three */
    v = DECIDE_AUTH(200, "Cache-Control: proxy-revalidate, max-age=120");
    assert_string_equal(v.why_not, "authorization");
    /* public does not beat no-store or private */
    v = DECIDE_AUTH(200, "Cache-Control: public, no-store");
    assert_string_equal(v.why_not, "no-store");
    v = DECIDE_AUTH(200, "Cache-Control: public, private");
    assert_string_equal(v.why_not, "private");
}

static void test_ston_growth(void **state)
{
    (void)state;
    rf_ttl_rule_t r2 = {1800, 20, 86400};
    /* 1800 -> 2160 -> 2592 -> 3111 (ceil of 518.4) -> 3734 ... -> 86400 */
    static const int64_t seq[] = {1800,  2160,  2592,  3111,  3734,  4481,  5378,  6454,  7745,  9294,  11153, 13384,
                                  16061, 19274, 23129, 27755, 33306, 39968, 47962, 57555, 69066, 82880, 86400};
    int64_t t = r2.value;
    for (size_t i = 1; i < sizeof(seq) / sizeof(seq[0]); i++) {
        t = rf_ttl_grow(&r2, t);
        assert_int_equal(t, seq[i]);
    }
    assert_int_equal(rf_ttl_grow(&r2, 86400), 86400); /* stays at Max */
    assert_int_equal(rf_ttl_grow(&r2, 86000), 86400);
    /* NoCache {5, 0, 5}: no growth */
    rf_ttl_rule_t nc = {5, 0, 5};
    assert_int_equal(rf_ttl_grow(&nc, 5), 5);
    /* the seed's circuit breaker NoCache {30, 0, 60}: ratio 0, stays 30 */
    rf_ttl_rule_t cb = {30, 0, 60};
    assert_int_equal(rf_ttl_grow(&cb, 30), 30);
    /* {30, 50, 60}: 30 -> 45 -> 60 -> 60 */
    rf_ttl_rule_t half = {30, 50, 60};
    assert_int_equal(rf_ttl_grow(&half, 30), 45);
    assert_int_equal(rf_ttl_grow(&half, 45), 60);
    assert_int_equal(rf_ttl_grow(&half, 60), 60);
    /* small TTLs still grow (ceiling) */
    rf_ttl_rule_t one = {1, 20, 86400};
    assert_int_equal(rf_ttl_grow(&one, 1), 2);
    /* Max below value never cuts below value; ratio clamped to 100 */
    rf_ttl_rule_t odd = {100, 500, 10};
    assert_int_equal(rf_ttl_grow(&odd, 100), 100);
    rf_ttl_rule_t big = {10, 500, 1000};
    assert_int_equal(rf_ttl_grow(&big, 10), 20);
    /* fixed load: 0 stays 0 */
    rf_ttl_rule_t zero = {0, 20, 0};
    assert_int_equal(rf_ttl_grow(&zero, 0), 0);
    assert_int_equal(rf_ttl_grow(&r2, -5), 0);
    assert_int_equal(rf_ttl_grow(NULL, 5), 0);
}

static void test_after_304(void **state)
{
    (void)state;
    rf_ttl_conf_t c;
    rf_ttl_conf_default(&c);
    hdrs_t st, h304;
    rf_ttl_verdict_t v0, v1, v2;
    /* a rule object grows by Ratio on each 304 */
    s_hdrs(&st, (const char *const[]){"ETag: \"v1\"", "Content-Type: text/plain", NULL});
    assert_int_equal(rf_ttl_decide(&c, 200, st.h, st.n, NOW, NOW, false, &v0), 0);
    assert_int_equal(v0.ttl, 1800);
    s_hdrs(&h304, (const char *const[]){"ETag: \"v1\"", NULL});
    assert_int_equal(rf_ttl_after_304(&c, 200, &v0, st.h, st.n, h304.h, h304.n, NOW + 1800, NOW + 1800, false, &v1), 0);
    assert_true(v1.storable);
    assert_int_equal(v1.source, RF_TTL_SRC_RES2XX);
    assert_int_equal(v1.ttl, 2160);
    assert_int_equal(rf_ttl_after_304(&c, 200, &v1, st.h, st.n, h304.h, h304.n, NOW, NOW, false, &v2), 0);
    assert_int_equal(v2.ttl, 2592);
    /* no prev: just decided again */
    assert_int_equal(rf_ttl_after_304(&c, 200, NULL, st.h, st.n, NULL, 0, NOW, NOW, false, &v2), 0);
    assert_int_equal(v2.ttl, 1800);
    /* an origin max-age object takes the 304's new max-age; the stored
     * Cache-Control lines are replaced, not added to */
    s_hdrs(&st, (const char *const[]){"Cache-Control: max-age=600", "Cache-Control: must-revalidate", NULL});
    assert_int_equal(rf_ttl_decide(&c, 200, st.h, st.n, NOW, NOW, false, &v0), 0);
    assert_int_equal(v0.ttl, 600);
    assert_true(v0.must_revalidate);
    s_hdrs(&h304, (const char *const[]){"Cache-Control: max-age=900", NULL});
    assert_int_equal(rf_ttl_after_304(&c, 200, &v0, st.h, st.n, h304.h, h304.n, NOW, NOW, false, &v1), 0);
    assert_int_equal(v1.source, RF_TTL_SRC_ORIGIN);
    assert_int_equal(v1.ttl, 900);
    assert_false(v1.must_revalidate);
    /* a 304 without Cache-Control keeps the stored lines */
    s_hdrs(&h304, (const char *const[]){"ETag: \"x\"", NULL});
    assert_int_equal(rf_ttl_after_304(&c, 200, &v0, st.h, st.n, h304.h, h304.n, NOW, NOW, false, &v1), 0);
    assert_int_equal(v1.ttl, 600);
    assert_true(v1.must_revalidate);
    /* the 304's Age counts */
    s_hdrs(&h304, (const char *const[]){"Age: 100", NULL});
    assert_int_equal(rf_ttl_after_304(&c, 200, &v0, st.h, st.n, h304.h, h304.n, NOW, NOW, false, &v1), 0);
    assert_int_equal(v1.ttl, 500);
    /* a 304 that now says no-store makes it unstorable */
    s_hdrs(&h304, (const char *const[]){"Cache-Control: no-store", NULL});
    assert_int_equal(rf_ttl_after_304(&c, 200, &v0, st.h, st.n, h304.h, h304.n, NOW, NOW, false, &v1), 0);
    assert_false(v1.storable);
    assert_string_equal(v1.why_not, "no-store");
    /* Res3xx does not grow */
    s_hdrs(&st, (const char *const[]){"Location: /x", NULL});
    assert_int_equal(rf_ttl_decide(&c, 301, st.h, st.n, NOW, NOW, false, &v0), 0);
    assert_int_equal(rf_ttl_after_304(&c, 301, &v0, st.h, st.n, NULL, 0, NOW, NOW, false, &v1), 0);
    assert_int_equal(v1.ttl, 300);
    /* NoCache with a ratio grows (override_origin applies it to no-cache) */
    c.override_origin = true;
    c.nocache = (rf_ttl_rule_t){30, 100, 100};
    s_hdrs(&st, (const char *const[]){"Cache-Control: no-cache", NULL});
    assert_int_equal(rf_ttl_decide(&c, 200, st.h, st.n, NOW, NOW, false, &v0), 0);
    assert_int_equal(v0.ttl, 30);
    assert_int_equal(rf_ttl_after_304(&c, 200, &v0, st.h, st.n, NULL, 0, NOW, NOW, false, &v1), 0);
    assert_int_equal(v1.ttl, 60);
    assert_int_equal(rf_ttl_after_304(&c, 200, &v1, st.h, st.n, NULL, 0, NOW, NOW, false, &v2), 0);
    assert_int_equal(v2.ttl, 100);
    /* an RFC no-cache object stays at 0 */
    rf_ttl_conf_default(&c);
    assert_int_equal(rf_ttl_decide(&c, 200, st.h, st.n, NOW, NOW, false, &v0), 0);
    assert_int_equal(rf_ttl_after_304(&c, 200, &v0, st.h, st.n, NULL, 0, NOW, NOW, false, &v1), 0);
    assert_true(v1.no_cache);
    assert_int_equal(v1.ttl, 0);
    /* bad arguments */
    assert_int_equal(rf_ttl_after_304(NULL, 200, &v0, st.h, st.n, NULL, 0, NOW, NOW, false, &v1), -1);
    assert_false(v1.storable);
    assert_int_equal(rf_ttl_after_304(&c, 200, &v0, st.h, st.n, NULL, 3, NOW, NOW, false, &v1), -1);
}

static void test_override_origin(void **state)
{
    (void)state;
    rf_ttl_conf_t c;
    rf_ttl_conf_default(&c);
    c.override_origin = true;
    rf_ttl_verdict_t v = DECIDE_C(&c, 200, "Cache-Control: max-age=60");
    assert_int_equal(v.ttl, 1800);
    assert_int_equal(v.source, RF_TTL_SRC_RES2XX);
    v = DECIDE_C(&c, 200, s_hdate("Date", NOW), s_hdate("Expires", NOW + 5));
    assert_int_equal(v.ttl, 1800);
    v = DECIDE_C(&c, 200, "Cache-Control: max-age=garbage");
    assert_int_equal(v.ttl, 1800);
    assert_false(v.bad_freshness);
    /* no heuristic either: the vhost's numbers are the policy */
    v = DECIDE_C(&c, 200, s_hdate("Date", NOW), s_hdate("Last-Modified", NOW - 10));
    assert_int_equal(v.ttl, 1800);
    /* no-cache gets STON's NoCache rule, served without revalidation */
    v = DECIDE_C(&c, 200, "Cache-Control: no-cache, max-age=600");
    assert_true(v.storable);
    assert_false(v.no_cache);
    assert_int_equal(v.source, RF_TTL_SRC_NOCACHE);
    assert_int_equal(v.ttl, 5);
    v = DECIDE_C(&c, 200, "Cache-Control: max-age=600, must-revalidate");
    assert_int_equal(v.ttl, 5);
    assert_true(v.must_revalidate);
    /* no-store, private, Authorization, Vary: * still honoured */
    v = DECIDE_C(&c, 200, "Cache-Control: no-store");
    assert_string_equal(v.why_not, "no-store");
    v = DECIDE_C(&c, 200, "Cache-Control: private");
    assert_string_equal(v.why_not, "private");
    v = s_decide_c(&c, 200, true, (const char *const[]){"Cache-Control: max-age=60", NULL});
    assert_string_equal(v.why_not, "authorization");
    v = DECIDE_C(&c, 200, "Vary: *");
    assert_string_equal(v.why_not, "vary-star");
    /* the status rules */
    v = DECIDE_C(&c, 301, "Cache-Control: max-age=99999");
    assert_int_equal(v.ttl, 300);
    v = DECIDE_C(&c, 404, "Cache-Control: max-age=99999");
    assert_int_equal(v.ttl, 30);
    v = DECIDE_C(&c, 503, "Cache-Control: max-age=99999");
    assert_int_equal(v.ttl, 30);
}

static void test_fixed_load(void **state)
{
    (void)state;
    /* the seed's "fixed load": every TTL 0 -> storable, ttl 0 (shared
     * with the waiters of one origin fetch, then dropped) */
    rf_ttl_conf_t c;
    rf_ttl_conf_default(&c);
    c.res2xx = (rf_ttl_rule_t){0, 20, 0};
    c.nocache = (rf_ttl_rule_t){0, 0, 0};
    c.nocache_max_age = 0;
    c.res3xx = c.res4xx = c.res5xx = 0;
    static const int statuses[] = {200, 204, 301, 302, 404, 500, 503};
    for (size_t i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++) {
        rf_ttl_verdict_t v = DECIDE_C(&c, statuses[i], "Content-Type: text/html");
        assert_true(v.storable);
        assert_int_equal(v.ttl, 0);
        assert_false(v.no_cache);
    }
    rf_ttl_verdict_t v = DECIDE_C(&c, 200, "Cache-Control: must-revalidate");
    assert_true(v.storable);
    assert_int_equal(v.ttl, 0);
    v = DECIDE_C(&c, 200, s_hdate("Date", NOW), s_hdate("Last-Modified", NOW - 99999));
    assert_int_equal(v.ttl, 0);
}

static void test_status(void **state)
{
    (void)state;
    static const int refused[] = {100, 101, 103, 201, 202, 206, 304, 305, 400,
                                  401, 403, 408, 412, 429, 505, 599, 0,   -1};
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        rf_ttl_verdict_t v = DECIDE(refused[i], "Cache-Control: public, max-age=600");
        if (v.storable)
            fail_msg("status %d stored", refused[i]);
        assert_string_equal(v.why_not, "status");
    }
    struct {
        int status;
        int64_t ttl;
        rf_ttl_source_t src;
    } ok[] = {
        {200, 1800, RF_TTL_SRC_RES2XX}, {203, 1800, RF_TTL_SRC_RES2XX}, {204, 1800, RF_TTL_SRC_RES2XX},
        {300, 300, RF_TTL_SRC_RES3XX},  {301, 300, RF_TTL_SRC_RES3XX},  {302, 300, RF_TTL_SRC_RES3XX},
        {303, 300, RF_TTL_SRC_RES3XX},  {307, 300, RF_TTL_SRC_RES3XX},  {308, 300, RF_TTL_SRC_RES3XX},
        {404, 30, RF_TTL_SRC_RES4XX},   {405, 30, RF_TTL_SRC_RES4XX},   {410, 30, RF_TTL_SRC_RES4XX},
        {414, 30, RF_TTL_SRC_RES4XX},   {500, 30, RF_TTL_SRC_RES5XX},   {501, 30, RF_TTL_SRC_RES5XX},
        {502, 30, RF_TTL_SRC_RES5XX},   {503, 30, RF_TTL_SRC_RES5XX},   {504, 30, RF_TTL_SRC_RES5XX},
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        rf_ttl_verdict_t v = DECIDE(ok[i].status, "Content-Length: 0");
        if (!v.storable || v.ttl != ok[i].ttl || v.source != ok[i].src)
            fail_msg("status %d: storable %d ttl %lld src %d", ok[i].status, v.storable, (long long)v.ttl,
                     (int)v.source);
    }
    /* Vary */
    rf_ttl_verdict_t v = DECIDE(200, "Vary: *");
    assert_string_equal(v.why_not, "vary-star");
    v = DECIDE(200, "Vary: Accept-Encoding", "vary: Accept, *");
    assert_string_equal(v.why_not, "vary-star");
    v = DECIDE(200, "Vary: Accept-Encoding, Accept");
    assert_true(v.storable);
    /* Set-Cookie: stored, the cookie is not */
    v = DECIDE(200, "Set-Cookie: sid=1; HttpOnly", "Cache-Control: max-age=60");
    assert_true(v.storable);
    assert_true(v.strip_set_cookie);
    assert_true(v.strip_fields);
    assert_int_equal(v.ttl, 60);
}

static void test_garbage_directives(void **state)
{
    (void)state;
    struct {
        const char *cc;
        int64_t ttl;
        bool bad;
    } cases[] = {
        {"max-age=60, max-age=120", 0, true}, /* conflicting duplicates: stale */
        {"max-age=60, max-age=60", 60, false},
        {"max-age=60,max-age=\"60\"", 60, false},
        {"max-age=abc", 0, true},
        {"max-age=-5", 0, true},
        {"max-age=", 0, true},
        {"max-age", 0, true},
        {"max-age=6 0", 0, true},
        {"max-age=1.5", 0, true},
        {"max-age=+5", 0, true},
        {"max-age=\"60\"", 60, false},
        {"max-age=\"60", 0, true}, /* unterminated */
        {"max-age=\"60\"x", 0, true},
        {"MAX-AGE=60", 60, false},
        {"  max-age=60  ,  ", 60, false},
        {",,max-age=60,,", 60, false},
        {"max-age = 60", 60, false}, /* tolerated */
        {"foo=bar, max-age=60, x=\"a,b\"", 60, false},
        {"x=\"max-age=5\", max-age=60", 60, false}, /* quoted commas do not split */
        {"s-maxage=x, max-age=60", 0, true},        /* s-maxage wins, and it is broken */
        {"max-age=99999999999999999999999", RF_TTL_DELTA_MAX, false},
        {"max-age=2147483649", RF_TTL_DELTA_MAX, false},
        {"max-age=2147483647", 2147483647LL, false},
        {"max-age=007", 7, false},
        {"maxage=60", 1800, false}, /* unknown: ignored */
        {"max-age60", 1800, false},
        {"\"max-age=60\"", 1800, false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char line[200];
        snprintf(line, sizeof(line), "Cache-Control: %s", cases[i].cc);
        rf_ttl_verdict_t v = DECIDE(200, line);
        if (!v.storable || v.ttl != cases[i].ttl || v.bad_freshness != cases[i].bad)
            fail_msg("'%s': storable %d ttl %lld bad %d", cases[i].cc, v.storable, (long long)v.ttl, v.bad_freshness);
    }
    /* duplicates across lines */
    rf_ttl_verdict_t v = DECIDE(200, "Cache-Control: max-age=60", "Cache-Control: max-age=90");
    assert_true(v.storable);
    assert_int_equal(v.ttl, 0);
    assert_true(v.bad_freshness);
    v = DECIDE(200, "Cache-Control: public", "Cache-Control: max-age=90");
    assert_int_equal(v.ttl, 90);
    /* broken forbidding directives still forbid */
    v = DECIDE(200, "Cache-Control: no-store=\"", "Cache-Control: max-age=60");
    assert_string_equal(v.why_not, "no-store");
    v = DECIDE(200, "Cache-Control: private=\"set-cookie");
    assert_string_equal(v.why_not, "private");
    v = DECIDE(200, "Cache-Control: private=\"\"");
    assert_string_equal(v.why_not, "private");
    v = DECIDE(200, "Cache-Control: no-cache=\"x, max-age=60");
    assert_true(v.no_cache);
    /* garbage RFC 5861 values are dropped, not trusted */
    v = DECIDE(200, "Cache-Control: max-age=1, stale-while-revalidate=x, stale-if-error=-1");
    assert_int_equal(v.ttl, 1);
    assert_int_equal(v.stale_while_revalidate, 0);
    assert_int_equal(v.stale_if_error, 0);
    /* an empty or valueless Cache-Control line */
    v = DECIDE(200, "Cache-Control: ");
    assert_int_equal(v.ttl, 1800);
    rf_ttl_conf_t c;
    rf_ttl_conf_default(&c);
    rf_hdr_t odd[] = {{"Cache-Control", 13, NULL, 0}, {"Expires", 7, NULL, 0}, {NULL, 0, NULL, 0}};
    assert_int_equal(rf_ttl_decide(&c, 200, odd, 3, NOW, NOW, false, &v), 0);
    assert_true(v.storable);
    assert_int_equal(v.ttl, 0); /* an empty Expires is invalid: expired */
}

static void test_strip_field(void **state)
{
    (void)state;
    hdrs_t hs;
    s_hdrs(&hs, (const char *const[]){"Cache-Control: max-age=60, private=\"Set-Cookie, X-User\"",
                                      "Cache-Control: no-cache=X-Debug", "Cache-Control: foo=\"Content-Type\"", NULL});
#define STRIP(f) rf_ttl_strip_field(hs.h, hs.n, f, strlen(f))
    assert_true(STRIP("X-User"));
    assert_true(STRIP("x-user"));
    assert_true(STRIP("X-Debug"));
    assert_true(STRIP("Set-Cookie"));
    assert_true(STRIP("set-cookie"));
    assert_false(STRIP("Content-Type"));
    assert_false(STRIP("X-Use"));
    assert_false(STRIP("ETag"));
    s_hdrs(&hs, (const char *const[]){"Content-Type: text/plain", NULL});
    assert_true(STRIP("Set-Cookie")); /* always */
    assert_false(STRIP("Content-Type"));
    assert_false(rf_ttl_strip_field(NULL, 0, "X", 1));
    assert_false(rf_ttl_strip_field(hs.h, hs.n, NULL, 0));
#undef STRIP
}

static void test_nocache_max_age(void **state)
{
    (void)state;
    rf_ttl_conf_t c;
    rf_ttl_conf_default(&c);
    c.nocache = (rf_ttl_rule_t){30, 0, 60};
    c.nocache_max_age = 60;
    rf_ttl_verdict_t v = DECIDE_C(&c, 200, "Cache-Control: must-revalidate");
    assert_int_equal(v.ttl, 30);
    assert_int_equal(v.client_max_age, 60);
    v = DECIDE_C(&c, 200, "Cache-Control: no-cache");
    assert_int_equal(v.ttl, 0);
    assert_true(v.no_cache);
    assert_int_equal(v.client_max_age, 60);
    v = DECIDE_C(&c, 200, "Cache-Control: max-age=10");
    assert_int_equal(v.client_max_age, -1);
    v = DECIDE_C(&c, 200, "Cache-Control: private");
    assert_int_equal(v.client_max_age, -1);
}

static void test_origin_error(void **state)
{
    (void)state;
    rf_ttl_conf_t c;
    rf_ttl_conf_default(&c);
    rf_ttl_verdict_t rule = DECIDE(200, "ETag: \"a\"");
    assert_int_equal(rf_ttl_on_origin_error(&c, &rule, 503), 2160); /* as a 304: grows */
    assert_int_equal(rf_ttl_on_origin_error(&c, &rule, 500), 2160);
    assert_int_equal(rf_ttl_on_origin_error(&c, &rule, 404), -1); /* TTLExtensionBy4xx OFF */
    assert_int_equal(rf_ttl_on_origin_error(&c, &rule, 0), 3);    /* no answer: ConnectTimeout */
    assert_int_equal(rf_ttl_on_origin_error(&c, &rule, 200), -1);
    c.extend_by_4xx = true;
    c.extend_by_5xx = false;
    assert_int_equal(rf_ttl_on_origin_error(&c, &rule, 404), 2160);
    assert_int_equal(rf_ttl_on_origin_error(&c, &rule, 503), -1);
    c.origin_error_ttl = 0;
    assert_int_equal(rf_ttl_on_origin_error(&c, &rule, 0), -1);
    rf_ttl_conf_default(&c);
    rf_ttl_verdict_t origin = DECIDE(200, "Cache-Control: max-age=600");
    assert_int_equal(rf_ttl_on_origin_error(&c, &origin, 502), 600);
    rf_ttl_verdict_t mr = DECIDE(200, "Cache-Control: max-age=600, must-revalidate");
    assert_int_equal(rf_ttl_on_origin_error(&c, &mr, 502), -1);
    assert_int_equal(rf_ttl_on_origin_error(&c, &mr, 0), -1);
    rf_ttl_verdict_t nc = DECIDE(200, "Cache-Control: no-cache");
    assert_int_equal(rf_ttl_on_origin_error(&c, &nc, 0), -1);
    rf_ttl_verdict_t ns = DECIDE(200, "Cache-Control: no-store");
    assert_int_equal(rf_ttl_on_origin_error(&c, &ns, 0), -1);
    assert_int_equal(rf_ttl_on_origin_error(NULL, &rule, 0), -1);
    assert_int_equal(rf_ttl_on_origin_error(&c, NULL, 0), -1);
}

static int64_t s_date(const char *s)
{
    return rf_http_date_parse(s, strlen(s));
}

static void test_dates(void **state)
{
    (void)state;
    assert_int_equal(s_date("Sun, 06 Nov 1994 08:49:37 GMT"), 784111777);
    assert_int_equal(s_date("Sunday, 06-Nov-94 08:49:37 GMT"), 784111777);
    assert_int_equal(s_date("Sun Nov  6 08:49:37 1994"), 784111777);
    assert_int_equal(s_date("  Sun, 06 Nov 1994 08:49:37 GMT\t"), 784111777);
    assert_int_equal(s_date("Sun Nov 06 08:49:37 1994"), 784111777);
    assert_int_equal(s_date("Sat, 06 Nov 2010 08:49:37 GMT"), 1289033377);
    assert_int_equal(s_date("Saturday, 06-Nov-10 08:49:37 GMT"), 1289033377);
    assert_int_equal(s_date("Thu, 29 Feb 2024 00:00:00 GMT"), 1709164800); /* leap day */
    assert_int_equal(s_date("Thu, 01 Jan 1970 00:00:00 GMT"), 0);
    assert_int_equal(s_date("Wed, 31 Dec 1969 23:59:59 GMT"), 0); /* before 1970: 0 */
    assert_int_equal(s_date("Fri, 31 Dec 9999 23:59:59 GMT"), 253402300799LL);
    assert_int_equal(s_date("Tue, 14 Nov 2023 22:13:20 GMT"), NOW);
    assert_int_equal(s_date("Tue, 14 Nov 2023 23:59:60 GMT"), s_date("Wed, 15 Nov 2023 00:00:00 GMT")); /* leap s */
    /* the day name is checked for spelling, not for agreement */
    assert_int_equal(s_date("Mon, 06 Nov 1994 08:49:37 GMT"), 784111777);
    static const char *bad[] = {
        "",
        "0",
        "-1",
        "yesterday",
        "Sun, 06 Nov 1994 08:49:37 UTC",
        "Sun, 06 Nov 1994 08:49:37 gmt",
        "sun, 06 Nov 1994 08:49:37 GMT",
        "Sun, 06 nov 1994 08:49:37 GMT",
        "Sun, 6 Nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 94 08:49:37 GMT",
        "Sun, 06 Nov 1994 8:49:37 GMT",
        "Sun, 06 Nov 1994 24:00:00 GMT",
        "Sun, 06 Nov 1994 23:60:00 GMT",
        "Sun, 06 Nov 1994 23:59:61 GMT",
        "Sun, 00 Nov 1994 08:49:37 GMT",
        "Sun, 31 Nov 1994 08:49:37 GMT",
        "Wed, 29 Feb 2023 00:00:00 GMT",
        "Sun, 06 Nov 1994 08:49:37 GMT x",
        "Sun, 06 Nov 1994 08-49-37 GMT",
        "Xyz, 06 Nov 1994 08:49:37 GMT",
        "Sun,06 Nov 1994 08:49:37 GMT ",
        "Sun, 06 Nov 1994 08:49:37 +0000",
        "Sunday, 06-Nov-1994 08:49:37 GMT",
        "Sun, 06-Nov-94 08:49:37 GMT",
        "Sunday 06-Nov-94 08:49:37 GMT",
        "Sunday, 06 Nov 94 08:49:37 GMT",
        "Sun Nov 6 08:49:37 1994",
        "Sun Nov  6 08:49:37 94",
        "Sun Nov  6 08:49:37 1994 GMT",
        "Sun Foo  6 08:49:37 1994",
        "Sun, 06 Nov 1994 08:49:3a GMT",
        "Sun, 06 Nov 19a4 08:49:37 GMT",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (s_date(bad[i]) != -1)
            fail_msg("'%s' parsed as %lld", bad[i], (long long)s_date(bad[i]));
    assert_int_equal(rf_http_date_parse(NULL, 0), -1);
    /* not NUL-terminated */
    char buf[40];
    memcpy(buf, "Sun, 06 Nov 1994 08:49:37 GMTXXXX", 33);
    assert_int_equal(rf_http_date_parse(buf, 29), 784111777);

    /* format and round trip */
    char out[30];
    assert_int_equal(rf_http_date_format(784111777, out), 29);
    assert_string_equal(out, "Sun, 06 Nov 1994 08:49:37 GMT");
    rf_http_date_format(NOW, out);
    assert_string_equal(out, "Tue, 14 Nov 2023 22:13:20 GMT");
    rf_http_date_format(-5, out);
    assert_string_equal(out, "Thu, 01 Jan 1970 00:00:00 GMT");
    rf_http_date_format(INT64_MAX, out);
    assert_string_equal(out, "Fri, 31 Dec 9999 23:59:59 GMT");
    for (int64_t t = 0; t < 253402300799LL; t += 86399LL * 97 + 12345) {
        rf_http_date_format(t, out);
        assert_int_equal(rf_http_date_parse(out, strlen(out)), t);
    }
}

static rf_ttl_req_t s_req(const char *const *lines)
{
    hdrs_t hs;
    s_hdrs(&hs, lines);
    rf_ttl_req_t r;
    rf_ttl_request(hs.h, hs.n, &r);
    return r;
}

#define REQ(...) s_req((const char *const[]){__VA_ARGS__, NULL})

static void test_request(void **state)
{
    (void)state;
    rf_ttl_req_t r = REQ("Accept: */*");
    assert_false(r.no_cache);
    assert_false(r.no_store);
    assert_false(r.only_if_cached);
    assert_int_equal(r.max_age, -1);
    assert_int_equal(r.max_stale, -1);
    assert_int_equal(r.min_fresh, 0);
    r = REQ("Cache-Control: no-cache");
    assert_true(r.no_cache);
    r = REQ("Pragma: no-cache");
    assert_true(r.no_cache);
    r = REQ("Pragma: no-cache", "Cache-Control: max-age=5"); /* Cache-Control present: Pragma ignored */
    assert_false(r.no_cache);
    assert_int_equal(r.max_age, 5);
    r = REQ("Cache-Control: max-age=0");
    assert_int_equal(r.max_age, 0);
    r = REQ("Cache-Control: max-age=60, max-age=10", "Cache-Control: max-age=30");
    assert_int_equal(r.max_age, 10); /* most restrictive */
    r = REQ("Cache-Control: max-age=x");
    assert_int_equal(r.max_age, -1); /* invalid: as if absent */
    r = REQ("Cache-Control: max-age=99999999999");
    assert_int_equal(r.max_age, RF_TTL_DELTA_MAX);
    r = REQ("Cache-Control: max-stale");
    assert_int_equal(r.max_stale, INT64_MAX);
    r = REQ("Cache-Control: max-stale=10");
    assert_int_equal(r.max_stale, 10);
    r = REQ("Cache-Control: max-stale, max-stale=20");
    assert_int_equal(r.max_stale, 20);
    r = REQ("Cache-Control: max-stale=abc");
    assert_int_equal(r.max_stale, -1);
    r = REQ("Cache-Control: min-fresh=5, min-fresh=50");
    assert_int_equal(r.min_fresh, 50);
    r = REQ("Cache-Control: min-fresh=-3");
    assert_int_equal(r.min_fresh, 0);
    r = REQ("cache-control: ONLY-IF-CACHED, No-Store");
    assert_true(r.only_if_cached);
    assert_true(r.no_store);
    r = REQ("Cache-Control: x=\"no-cache, no-store\"");
    assert_false(r.no_cache);
    assert_false(r.no_store);
    rf_ttl_request(NULL, 3, &r);
    assert_int_equal(r.max_age, -1);
    rf_ttl_request(NULL, 0, NULL); /* does nothing */
}

static void test_bad_args(void **state)
{
    (void)state;
    rf_ttl_conf_t c;
    rf_ttl_conf_default(&c);
    rf_ttl_verdict_t v;
    v.storable = true;
    assert_int_equal(rf_ttl_decide(NULL, 200, NULL, 0, NOW, NOW, false, &v), -1);
    assert_false(v.storable);
    assert_non_null(v.why_not);
    assert_int_equal(rf_ttl_decide(&c, 200, NULL, 2, NOW, NOW, false, &v), -1);
    assert_int_equal(rf_ttl_decide(&c, 200, NULL, 0, NOW, NOW, false, NULL), -1);
    assert_int_equal(rf_ttl_decide(&c, 200, NULL, 0, NOW, NOW, false, &v), 0);
    assert_true(v.storable);
    assert_int_equal(v.ttl, 1800);
    /* response received "before" it was sent: no negative delay */
    assert_int_equal(rf_ttl_decide(&c, 200, NULL, 0, NOW + 50, NOW, false, &v), 0);
    assert_int_equal(v.age, 0);
    rf_ttl_conf_default(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_max_age),
        cmocka_unit_test(test_expires_date_age),
        cmocka_unit_test(test_no_store_private_no_cache),
        cmocka_unit_test(test_must_revalidate),
        cmocka_unit_test(test_heuristic),
        cmocka_unit_test(test_authorization),
        cmocka_unit_test(test_ston_growth),
        cmocka_unit_test(test_after_304),
        cmocka_unit_test(test_override_origin),
        cmocka_unit_test(test_fixed_load),
        cmocka_unit_test(test_status),
        cmocka_unit_test(test_garbage_directives),
        cmocka_unit_test(test_strip_field),
        cmocka_unit_test(test_nocache_max_age),
        cmocka_unit_test(test_origin_error),
        cmocka_unit_test(test_dates),
        cmocka_unit_test(test_request),
        cmocka_unit_test(test_bad_args),
    };
    return cmocka_run_group_tests_name("rf_ttl", tests, NULL, NULL);
}
