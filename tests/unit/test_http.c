/*  Unit tests for common/rf_http: token lists (whole elements, not
 *  substrings) and the Range policy that stops a "0-,0-,…" request from
 *  buying a response hundreds of times the object. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rf_http.h"

#define TOK(v, t) rf_http_has_token(v, strlen(v), t)

static void test_tokens(void **state)
{
    (void)state;
    assert_true(TOK("chunked", "chunked"));
    assert_true(TOK("gzip, chunked", "chunked"));
    assert_true(TOK("gzip,chunked", "chunked"));
    assert_true(TOK("  CHUNKED  ", "chunked"));
    assert_true(TOK(",,close,", "close"));
    assert_true(TOK("keep-alive, Upgrade", "upgrade"));
    assert_false(TOK("notchunked", "chunked"));
    assert_false(TOK("chunkedx", "chunked"));
    assert_false(TOK("xclose", "close"));
    assert_false(TOK("close-ish", "close"));
    assert_false(TOK("", "close"));
    assert_false(TOK("chun ked", "chunked"));
    assert_int_equal(rf_http_count_tokens("a, b,,c ,", 9), 3);
    assert_int_equal(rf_http_count_tokens("", 0), 0);
    assert_int_equal(rf_http_count_tokens(" , ", 3), 0);
}

static void s_range(const char *v, rf_range_verdict_t want, const char *want_why)
{
    const char *why = "unset";
    rf_range_verdict_t got = rf_http_range_check(v, strlen(v), &why);
    if (got != want)
        fail_msg("Range '%s': got %s (%s)", v, got == RF_RANGE_FORWARD ? "forward" : "ignore", why ? why : "-");
    if (want == RF_RANGE_FORWARD)
        assert_null(why);
    else
        assert_string_equal(why, want_why);
}

static void test_range_forwarded(void **state)
{
    (void)state;
    s_range("bytes=0-99", RF_RANGE_FORWARD, NULL);
    s_range("bytes=100-", RF_RANGE_FORWARD, NULL);
    s_range("bytes=-500", RF_RANGE_FORWARD, NULL);
    s_range("bytes=0-0,-1", RF_RANGE_FORWARD, NULL); /* first and last byte */
    s_range("bytes=0-9, 20-29 ,40-", RF_RANGE_FORWARD, NULL);
    s_range("Bytes=0-1", RF_RANGE_FORWARD, NULL);
    s_range("bytes=0-1,,5-6", RF_RANGE_FORWARD, NULL); /* empty list elements are allowed */
    s_range("bytes=0-0,2-2,4-4,6-6,8-8,10-10,12-12,14-14,16-16,18-18,20-20,22-22,24-24,26-26,28-28,30-30",
            RF_RANGE_FORWARD, NULL); /* 16 */
}

static void test_range_ignored(void **state)
{
    (void)state;
    s_range("bytes=0-,0-", RF_RANGE_IGNORE, "overlapping or descending ranges");
    s_range("bytes=0-99,50-150", RF_RANGE_IGNORE, "overlapping or descending ranges");
    s_range("bytes=100-199,0-99", RF_RANGE_IGNORE, "overlapping or descending ranges");
    s_range("bytes=0-9,9-19", RF_RANGE_IGNORE, "overlapping or descending ranges");
    s_range("bytes=-5,0-1", RF_RANGE_IGNORE, "a range follows a suffix range");
    s_range("bytes=-5,-6", RF_RANGE_IGNORE, "a range follows a suffix range");
    s_range("bytes=0-0,2-2,4-4,6-6,8-8,10-10,12-12,14-14,16-16,18-18,20-20,22-22,24-24,26-26,28-28,30-30,32-32",
            RF_RANGE_IGNORE, "too many ranges");
    s_range("bytes=5-1", RF_RANGE_IGNORE, "malformed range");
    s_range("bytes=a-b", RF_RANGE_IGNORE, "malformed range");
    s_range("bytes=1", RF_RANGE_IGNORE, "malformed range");
    s_range("bytes=-0", RF_RANGE_IGNORE, "malformed suffix range");
    s_range("bytes=-", RF_RANGE_IGNORE, "malformed suffix range");
    s_range("bytes=0-1234567890123456789", RF_RANGE_IGNORE, "malformed range");
    s_range("bytes=", RF_RANGE_IGNORE, "empty range set");
    s_range("bytes= , ", RF_RANGE_IGNORE, "empty range set");
    s_range("items=0-1", RF_RANGE_IGNORE, "not a byte range");
    s_range("", RF_RANGE_IGNORE, "not a byte range");
    /* the 500-range probe */
    char big[4000] = "bytes=0-";
    for (int i = 0; i < 499; i++)
        strcat(big, ",0-");
    s_range(big, RF_RANGE_IGNORE, "overlapping or descending ranges");
    assert_int_equal(rf_http_range_check("bytes=0-1", 9, NULL), RF_RANGE_FORWARD); /* why may be NULL */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tokens),
        cmocka_unit_test(test_range_forwarded),
        cmocka_unit_test(test_range_ignored),
    };
    return cmocka_run_group_tests_name("rf_http", tests, NULL, NULL);
}
