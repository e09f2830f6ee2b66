/*  Unit tests for common/rf_path: the canonical request path every later
 *  stage (routing, origin request, file origins, transform sources, cache
 *  keys) relies on — decoding of unreserved escapes, dot segments, refusal
 *  of climbs above the root, control bytes and encoded separators, with the
 *  exact reasons. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rf_path.h"

static void s_ok(const char *in, const char *want)
{
    char out[256];
    const char *why = NULL;
    ssize_t n = rf_path_canon(in, strlen(in), out, &why);
    if (n < 0)
        fail_msg("'%s' refused (%s), wanted '%s'", in, why, want);
    if ((size_t)n != strlen(want) || strcmp(out, want) != 0)
        fail_msg("'%s' -> '%s' (%zd), wanted '%s'", in, out, n, want);
    /* canonical is a fixed point */
    char again[256];
    ssize_t m = rf_path_canon(out, (size_t)n, again, &why);
    assert_int_equal(m, n);
    assert_string_equal(again, out);
}

static void s_bad(const char *in, size_t len, const char *want_why)
{
    char out[256];
    const char *why = NULL;
    ssize_t n = rf_path_canon(in, len, out, &why);
    if (n >= 0)
        fail_msg("'%.*s' accepted as '%s'", (int)len, in, out);
    assert_non_null(why);
    assert_string_equal(why, want_why);
}

static void test_plain_paths_unchanged(void **state)
{
    (void)state;
    s_ok("/", "/");
    s_ok("/a", "/a");
    s_ok("/a/b.jpg", "/a/b.jpg");
    s_ok("/a/", "/a/");
    s_ok("/a//b", "/a//b"); /* empty segments are names to S3-like origins */
    s_ok("/photo.jpg/dims/resize/500x500", "/photo.jpg/dims/resize/500x500");
    s_ok("/caf\xc3\xa9.jpg", "/caf\xc3\xa9.jpg"); /* raw UTF-8 passes */
}

static void test_unreserved_decoded_others_kept(void **state)
{
    (void)state;
    s_ok("/%61%62c", "/abc");
    s_ok("/a%2Db%5fc%7Ed%2e", "/a-b_c~d.");
    s_ok("/a%20b", "/a%20b");      /* space stays encoded */
    s_ok("/a%3fb", "/a%3Fb");      /* '?' stays encoded, hex upper-cased */
    s_ok("/100%25", "/100%25");    /* '%' itself */
    s_ok("/%e2%82%ac", "/%E2%82%AC"); /* non-ASCII stays encoded */
}

static void test_dot_segments(void **state)
{
    (void)state;
    s_ok("/a/./b", "/a/b");
    s_ok("/a/b/../c", "/a/c");
    s_ok("/a/b/..", "/a/");
    s_ok("/a/b/.", "/a/b/");
    s_ok("/a/..", "/");
    s_ok("/./a", "/a");
    s_ok("/a/b/../../c", "/c");
    s_ok("/a/%2e%2e/b", "/b"); /* decoded, then resolved */
    s_ok("/a/.%2E/b", "/b");
    s_ok("/a/..b/c", "/a/..b/c"); /* not a dot segment */
    s_ok("/a/.../b", "/a/.../b");
    s_ok("/static/x/../y.txt", "/static/y.txt");
}

static void test_climbs_refused(void **state)
{
    (void)state;
    const char *r = "the path climbs above the root";
    s_bad("/..", 3, r);
    s_bad("/../secret.txt", 14, r);
    s_bad("/%2e%2e/secret.txt", 18, r);
    s_bad("/%2E%2E", 7, r);
    s_bad("/a/../../b", 10, r);
    s_bad("/./../b", 7, r);
    s_bad("/a/b/../../..", 13, r);
}

static void test_separators_refused(void **state)
{
    (void)state;
    s_bad("/..%2fsecret.txt", 16, "encoded slash or backslash in the path");
    s_bad("/a%2Fb", 6, "encoded slash or backslash in the path");
    s_bad("/a%5cb", 6, "encoded slash or backslash in the path");
    s_bad("/a\\b", 4, "backslash in the path");
}

static void test_controls_refused(void **state)
{
    (void)state;
    const char *r = "control character in the path";
    s_bad("/hello.txt%00.jpg", 17, r);
    s_bad("/%00", 4, r);
    s_bad("/a%0d%0aSet-Cookie:x", 20, r);
    s_bad("/a%7f", 5, r);
    s_bad("/a\x01", 3, r);
    s_bad("/a\0b", 4, r); /* an embedded NUL is not the end of the input */
}

static void test_malformed(void **state)
{
    (void)state;
    s_bad("", 0, "the path must begin with '/'");
    s_bad("a/b", 3, "the path must begin with '/'");
    s_bad("*", 1, "the path must begin with '/'");
    s_bad("/a%", 3, "bad percent-encoding in the path");
    s_bad("/a%4", 4, "bad percent-encoding in the path");
    s_bad("/a%zz", 5, "bad percent-encoding in the path");
    /* the length is honoured: "%41" cut after "%4" is malformed */
    s_bad("/a%41", 4, "bad percent-encoding in the path");
    char *big = malloc(RF_PATH_MAX + 2);
    memset(big, 'a', RF_PATH_MAX + 1);
    big[0] = '/';
    char *out = malloc(RF_PATH_MAX + 2);
    const char *why = NULL;
    assert_int_equal(rf_path_canon(big, RF_PATH_MAX + 1, out, &why), -1);
    assert_string_equal(why, "the path is too long");
    assert_int_equal(rf_path_canon(big, RF_PATH_MAX, out, &why), RF_PATH_MAX);
    free(big);
    free(out);
}

static void test_decode(void **state)
{
    (void)state;
    char out[64];
    assert_int_equal(rf_path_decode("/a%20b/%E2%82%AC", 16, out), 8);
    assert_string_equal(out, "/a b/\xe2\x82\xac");
    assert_int_equal(rf_path_decode("/100%25", 7, out), 5);
    assert_string_equal(out, "/100%");
    assert_int_equal(rf_path_decode("/plain", 6, out), 6);
    assert_string_equal(out, "/plain");
}

static void test_query(void **state)
{
    (void)state;
    assert_true(rf_query_ok("a=1&b=%00", 9)); /* encoded bytes are the origin's business */
    assert_false(rf_query_ok("a=\r\n", 4));
    assert_false(rf_query_ok("a\0", 2));
    assert_true(rf_query_ok("", 0));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_paths_unchanged),
        cmocka_unit_test(test_unreserved_decoded_others_kept),
        cmocka_unit_test(test_dot_segments),
        cmocka_unit_test(test_climbs_refused),
        cmocka_unit_test(test_separators_refused),
        cmocka_unit_test(test_controls_refused),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_decode),
        cmocka_unit_test(test_query),
    };
    return cmocka_run_group_tests_name("rf_path", tests, NULL, NULL);
}
