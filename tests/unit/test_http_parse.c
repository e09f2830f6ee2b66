/*  Unit tests for services/gateway/gw_http_parse: the Range a cache hit
 *  answers (single ranges only, numbers above 2^62 ignored, 416 past the
 *  end), If-None-Match lists (weak comparison, "*", quoted commas),
 *  If-Modified-Since and If-Range, and the purge API's query decoding and
 *  target URLs. Expected values are written out, not computed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "gw_http_parse.h"

#define LM "Tue, 14 Nov 2023 22:13:20 GMT"

/* One Range case: the value, the body's length, the answer and, on 1,
 * the range (inclusive). */
typedef struct {
    const char *v;
    uint64_t total;
    int rc;
    uint64_t from, to;
} range_case_t;

/* Parses each value (copied to a buffer of exactly its length, so that a
 * read past the value is a read past the allocation under ASan). */
static void s_range_cases(const range_case_t *c, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(c[i].v);
        char *copy = malloc(len ? len : 1);
        assert_non_null(copy);
        memcpy(copy, c[i].v, len);
        uint64_t from = 12345, to = 12345; /* a 1 that forgets to write shows as these */
        int r = gw_parse_range(copy, len, c[i].total, &from, &to);
        free(copy);
        if (r != c[i].rc || (r == 1 && (from != c[i].from || to != c[i].to)))
            fail_msg("\"%s\" of %llu bytes: %d %llu-%llu, want %d %llu-%llu", c[i].v, (unsigned long long)c[i].total, r,
                     (unsigned long long)from, (unsigned long long)to, c[i].rc, (unsigned long long)c[i].from,
                     (unsigned long long)c[i].to);
    }
}

#define RANGE_CASES(...)                                                                                               \
    do {                                                                                                               \
        static const range_case_t cases[] = {__VA_ARGS__};                                                             \
        s_range_cases(cases, sizeof(cases) / sizeof(cases[0]));                                                        \
    } while (0)

static void test_range_single(void **state)
{
    (void)state;
    RANGE_CASES({"bytes=0-99", 1000, 1, 0, 99}, {"bytes=-10", 1000, 1, 990, 999}, {"bytes=10-", 1000, 1, 10, 999},
                {"bytes=999-999", 1000, 1, 999, 999}, {"bytes=0-0", 1, 1, 0, 0},
                /* a last position past the end is clamped to it (RFC 9110 14.1.2) */
                {"bytes=990-5000", 1000, 1, 990, 999},
                /* a suffix longer than the body is the whole body, as a 206 */
                {"bytes=-5000", 1000, 1, 0, 999}, {"bytes=0000000000000000000000000000010-", 1000, 1, 10, 999});
}

static void test_range_unsatisfiable(void **state)
{
    (void)state;
    RANGE_CASES({"bytes=1000-", 1000, -1, 0, 0}, {"bytes=1000-1000", 1000, -1, 0, 0},
                {"bytes=5000-6000", 1000, -1, 0, 0}, {"bytes=-0", 1000, -1, 0, 0},
                /* the largest accepted number is still past any real body */
                {"bytes=4611686018427387904-", 1000, -1, 0, 0});
}

static void test_range_ignored(void **state)
{
    (void)state;
    RANGE_CASES(
        /* descending: RFC 9110 14.1.1 makes it invalid, so the Range is ignored */
        {"bytes=5-2", 1000, 0, 0, 0},
        /* several ranges: the whole body, never multipart */
        {"bytes=0-1,5-9", 1000, 0, 0, 0}, {"bytes=0-1, 5-9", 1000, 0, 0, 0}, {"bytes=0-99,", 1000, 0, 0, 0},
        /* garbage and other units; the unit is matched as sent */
        {"", 1000, 0, 0, 0}, {"bytes", 1000, 0, 0, 0}, {"bytes=", 1000, 0, 0, 0}, {"bytes=-", 1000, 0, 0, 0},
        {"bytes=1", 1000, 0, 0, 0}, {"bytes=abc", 1000, 0, 0, 0}, {"bytes=1-2-3", 1000, 0, 0, 0},
        {"bytes=0x10-", 1000, 0, 0, 0}, {"bytes=+1-2", 1000, 0, 0, 0}, {"items=0-1", 1000, 0, 0, 0},
        {"Bytes=0-1", 1000, 0, 0, 0},
        /* whitespace anywhere is not the grammar */
        {" bytes=0-1", 1000, 0, 0, 0}, {"bytes= 0-1", 1000, 0, 0, 0}, {"bytes=0 -1", 1000, 0, 0, 0},
        {"bytes=0-1 ", 1000, 0, 0, 0}, {"bytes=0-1\t", 1000, 0, 0, 0});
}

static void test_range_huge(void **state)
{
    (void)state;
    RANGE_CASES(
        /* one past 2^62, in either position */
        {"bytes=4611686018427387905-", 1000, 0, 0, 0}, {"bytes=0-4611686018427387905", 1000, 0, 0, 0},
        {"bytes=-4611686018427387905", 1000, 0, 0, 0},
        /* numbers past 2^64 once wrapped into accepted ones: the first read
         * as "bytes=4-" (a 206 of bytes 4-999), the second as a suffix
         * longer than the body (a 206 of all of it) */
        {"bytes=18446744073709551620-", 1000, 0, 0, 0}, {"bytes=-20000000000017653006", 1000, 0, 0, 0},
        {"bytes=0-18446744073709551620", 1000, 0, 0, 0}, {"bytes=99999999999999999999999999999999-", 1000, 0, 0, 0},
        /* the largest body size still works */
        {"bytes=-1", UINT64_MAX - 1, 1, UINT64_MAX - 2, UINT64_MAX - 2},
        {"bytes=4611686018427387904-", UINT64_MAX - 1, 1, 4611686018427387904ULL, UINT64_MAX - 2});
}

static void test_range_empty_body(void **state)
{
    (void)state;
    /* nothing to take a range of: never a 206 */
    RANGE_CASES({"bytes=0-", 0, -1, 0, 0}, {"bytes=0-0", 0, -1, 0, 0}, {"bytes=-5", 0, -1, 0, 0},
                {"bytes=5-2", 0, 0, 0, 0}, {"bytes=0-1,2-3", 0, 0, 0, 0});
}

static bool s_etag_in(const char *list, const char *etag)
{
    return gw_etag_in(list, strlen(list), etag, strlen(etag));
}

static void test_etag_lists(void **state)
{
    (void)state;
    assert_true(s_etag_in("\"abc\"", "\"abc\""));
    assert_false(s_etag_in("\"abc\"", "\"abd\""));
    assert_false(s_etag_in("\"abc\"", "\"ab\""));
    assert_false(s_etag_in("\"ab\"", "\"abc\""));
    assert_false(s_etag_in("", "\"abc\""));
    /* weak comparison: W/ counts on neither side */
    assert_true(s_etag_in("W/\"abc\"", "\"abc\""));
    assert_true(s_etag_in("\"abc\"", "W/\"abc\""));
    assert_true(s_etag_in("W/\"abc\"", "W/\"abc\""));
    /* lists, with and without whitespace */
    assert_true(s_etag_in("\"x\", W/\"abc\"", "\"abc\""));
    assert_true(s_etag_in("\"x\",\"abc\"", "\"abc\""));
    assert_true(s_etag_in("\t\"x\" ,\t \"abc\" ", "\"abc\""));
    assert_false(s_etag_in("\"x\", \"y\"", "\"abc\""));
    /* "*" matches any stored response, wherever it stands */
    assert_true(s_etag_in("*", "\"abc\""));
    assert_true(s_etag_in(" , \"x\", *", "\"abc\""));
    /* a comma inside the quotes is part of the tag */
    assert_true(s_etag_in("\"a,b\"", "\"a,b\""));
    assert_true(s_etag_in("\"x\", \"a,b\"", "\"a,b\""));
    assert_false(s_etag_in("\"a,b\"", "\"a\""));
    assert_false(s_etag_in("\"a,b\"", "b\""));
    /* an empty element is no tag, even against an origin's empty ETag */
    assert_false(s_etag_in("\"a\", ", ""));
    assert_false(s_etag_in(",", ""));
    assert_false(s_etag_in("W/", ""));
    assert_false(s_etag_in("", ""));
    assert_true(s_etag_in("*", ""));
}

static void test_not_modified(void **state)
{
    (void)state;
    gw_validators_t both = {"\"v1\"", 4, LM, strlen(LM)};
    gw_validators_t none = {NULL, 0, NULL, 0};
    const char *later = "Tue, 14 Nov 2023 22:13:21 GMT", *earlier = "Tue, 14 Nov 2023 22:13:19 GMT";
    assert_true(gw_not_modified("\"v1\"", 4, NULL, 0, &both));
    assert_false(gw_not_modified("\"v2\"", 4, NULL, 0, &both));
    /* If-None-Match wins: a matching date does not make up for it */
    assert_false(gw_not_modified("\"v2\"", 4, LM, strlen(LM), &both));
    assert_false(gw_not_modified("\"v1\"", 4, NULL, 0, &none));
    assert_false(gw_not_modified("*", 1, NULL, 0, &none));
    /* If-Modified-Since: not modified at or after the stored date */
    assert_true(gw_not_modified(NULL, 0, LM, strlen(LM), &both));
    assert_true(gw_not_modified(NULL, 0, later, strlen(later), &both));
    assert_false(gw_not_modified(NULL, 0, earlier, strlen(earlier), &both));
    assert_false(gw_not_modified(NULL, 0, "yesterday", 9, &both));
    assert_false(gw_not_modified(NULL, 0, LM, strlen(LM), &none));
    assert_false(gw_not_modified(NULL, 0, NULL, 0, &both));
}

static void test_if_range(void **state)
{
    (void)state;
    gw_validators_t strong = {"\"v1\"", 4, LM, strlen(LM)};
    gw_validators_t weak = {"W/\"v1\"", 6, NULL, 0};
    gw_validators_t none = {NULL, 0, NULL, 0};
    assert_true(gw_if_range_ok("\"v1\"", 4, &strong));
    assert_false(gw_if_range_ok("\"v2\"", 4, &strong));
    assert_false(gw_if_range_ok("\"v1", 3, &strong));
    /* strong comparison: a weak tag matches nothing */
    assert_false(gw_if_range_ok("\"v1\"", 4, &weak));
    assert_false(gw_if_range_ok("W/\"v1\"", 6, &weak));
    /* a date must be the stored text exactly */
    assert_true(gw_if_range_ok(LM, strlen(LM), &strong));
    assert_false(gw_if_range_ok("Tuesday, 14-Nov-23 22:13:20 GMT", 31, &strong));
    assert_false(gw_if_range_ok(LM, strlen(LM), &none));
    assert_false(gw_if_range_ok("\"v1\"", 4, &none));
}

/* Decodes s and checks the bytes (want_len of them, NULs allowed). */
static void s_decodes(const char *s, const char *want, size_t want_len)
{
    size_t n = strlen(s);
    char *buf = malloc(n ? n : 1);
    assert_non_null(buf);
    memcpy(buf, s, n);
    assert_int_equal(gw_query_decode(buf, n), want_len);
    assert_memory_equal(buf, want, want_len);
    free(buf);
}

static void test_query_decode(void **state)
{
    (void)state;
    s_decodes("", "", 0);
    s_decodes("plain", "plain", 5);
    s_decodes("a%20b", "a b", 3);
    s_decodes("a+b", "a b", 3);
    s_decodes("%2B", "+", 1); /* an escaped '+' stays a '+' */
    s_decodes("%2F%2f", "//", 2);
    s_decodes("http%3A%2F%2Fh%2Fa.jpg", "http://h/a.jpg", 14);
    s_decodes("%00x", "\0x", 2);
    /* bad escapes stay as they are */
    s_decodes("%zz", "%zz", 3);
    s_decodes("%4g", "%4g", 3);
    s_decodes("%", "%", 1);
    s_decodes("%4", "%4", 2);
    s_decodes("ab%4", "ab%4", 4);
    s_decodes("%%41", "%A", 2);
    s_decodes("%41%", "A%", 2);
    s_decodes("%2", "%2", 2);
}

static void test_query_next(void **state)
{
    (void)state;
    const char *q = "url=a&x=1&url=b%20c&url=&urlx=d&url&&xurl=e&url=f";
    const char *cur = q, *end = q + strlen(q), *val;
    size_t vl;
    assert_true(gw_query_next(&cur, end, "url", &val, &vl));
    assert_int_equal(vl, 1);
    assert_memory_equal(val, "a", 1);
    assert_true(gw_query_next(&cur, end, "url", &val, &vl));
    assert_int_equal(vl, 5);
    assert_memory_equal(val, "b%20c", 5);
    /* "url=" (empty), "urlx=", "url" and "xurl=" are not parameters named url */
    assert_true(gw_query_next(&cur, end, "url", &val, &vl));
    assert_int_equal(vl, 1);
    assert_memory_equal(val, "f", 1);
    assert_false(gw_query_next(&cur, end, "url", &val, &vl));
    assert_ptr_equal(cur, end);
    cur = end;
    assert_false(gw_query_next(&cur, end, "url", &val, &vl));
}

static const char *s_split(const char *url, gw_purge_target_t *t)
{
    return gw_purge_target_split(url, strlen(url), t);
}

static void test_purge_target(void **state)
{
    (void)state;
    gw_purge_target_t t;
    const char *url = "http://example.com/a.jpg?w=1&h=2";
    assert_null(gw_purge_target_split(url, strlen(url), &t));
    assert_ptr_equal(t.host, url + 7);
    assert_int_equal(t.host_len, 11);
    assert_ptr_equal(t.path, url + 18);
    assert_int_equal(t.path_len, 6);
    assert_ptr_equal(t.query, url + 24);
    assert_int_equal(t.query_len, 8);
    assert_false(t.glob);

    assert_null(s_split("HTTPS://h:8443/img/*", &t));
    assert_int_equal(t.host_len, 6);
    assert_memory_equal(t.host, "h:8443", 6);
    assert_int_equal(t.path_len, 6);
    assert_null(t.query);
    assert_int_equal(t.query_len, 0);
    assert_true(t.glob);

    assert_null(s_split("//h/p?x=*", &t));
    assert_int_equal(t.path_len, 2);
    assert_int_equal(t.query_len, 4);
    assert_true(t.glob); /* a '*' in the query is a pattern too */

    assert_null(s_split("//h/", &t));
    assert_int_equal(t.path_len, 1);

    assert_string_equal(s_split("ftp://h/p", &t), "want http://host/path or //host/path");
    assert_string_equal(s_split("/p", &t), "want http://host/path or //host/path");
    assert_string_equal(s_split("http://", &t), "want http://host/path or //host/path");
    assert_string_equal(s_split("//", &t), "want http://host/path or //host/path");
    assert_string_equal(s_split("", &t), "want http://host/path or //host/path");
    assert_string_equal(s_split("http:///p", &t), "no host or no path");
    assert_string_equal(s_split("http://h", &t), "no host or no path");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_range_single),     cmocka_unit_test(test_range_unsatisfiable),
        cmocka_unit_test(test_range_ignored),    cmocka_unit_test(test_range_huge),
        cmocka_unit_test(test_range_empty_body), cmocka_unit_test(test_etag_lists),
        cmocka_unit_test(test_not_modified),     cmocka_unit_test(test_if_range),
        cmocka_unit_test(test_query_decode),     cmocka_unit_test(test_query_next),
        cmocka_unit_test(test_purge_target),
    };
    return cmocka_run_group_tests_name("gw_http_parse", tests, NULL, NULL);
}
