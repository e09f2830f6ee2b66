/*  Unit tests for common/rf_sign: signed function URLs — a signature made
 *  by rf_sign_make (and one made independently, by Python's hmac) passes;
 *  a tampered path, query or expiry, an unknown key, an expired URL, a
 *  missing or repeated parameter fail with their reason; the rest of the
 *  query comes back without the signature parameters, in order. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "rf_sign.h"

static rf_sign_conf_t s_conf(bool required)
{
    static char s1[] = "0123456789abcdef-one", s2[] = "0123456789abcdef-two";
    rf_sign_conf_t c = {.n_keys = 2, .required = required};
    snprintf(c.keys[0].id, sizeof(c.keys[0].id), "k1");
    c.keys[0].secret = s1;
    snprintf(c.keys[1].id, sizeof(c.keys[1].id), "k2");
    c.keys[1].secret = s2;
    return c;
}

/* Verifies path?query at `now`; returns the rc and leaves why / rest. */
static int s_check(const rf_sign_conf_t *c, const char *path, const char *query, int64_t now, char *rest,
                   char *why)
{
    size_t rl = 12345;
    why[0] = '\0';
    int rc = rf_sign_verify(c, path, strlen(path), query, strlen(query), now, rest, &rl, why, 200);
    if (rc == 0)
        rest[rl] = '\0';
    return rc;
}

static void test_valid_and_rotation(void **state)
{
    (void)state;
    rf_sign_conf_t c = s_conf(true);
    const char *path = "/photo.jpg/dims/resize/500x500";
    char sig[44], q[256], rest[256], why[200];
    for (int k = 0; k < 2; k++) { /* either key is valid: rotation */
        assert_int_equal(rf_sign_make(c.keys[k].secret, path, strlen(path), "", 0, "2000000000", sig), 0);
        assert_int_equal(strlen(sig), 43);
        snprintf(q, sizeof(q), "expires=2000000000&keyid=%s&sig=%s", c.keys[k].id, sig);
        assert_int_equal(s_check(&c, path, q, 1999999999, rest, why), 0);
        assert_string_equal(rest, "");
    }
    /* other parameters are signed too, and come back in order */
    assert_int_equal(rf_sign_make(c.keys[0].secret, path, strlen(path), "a=1&b=2", 7, "2000000000", sig), 0);
    snprintf(q, sizeof(q), "a=1&sig=%s&keyid=k1&b=2&expires=2000000000", sig);
    assert_int_equal(s_check(&c, path, q, 0, rest, why), 0);
    assert_string_equal(rest, "a=1&b=2");
    snprintf(q, sizeof(q), "a=1&sig=%s&keyid=k1&b=3&expires=2000000000", sig);
    assert_int_equal(s_check(&c, path, q, 0, rest, why), -1);
    assert_string_equal(why, "signature does not match");
}

/* The same signature computed by Python (docs/image.md shows the code):
 *   base64.urlsafe_b64encode(hmac.new(b"0123456789abcdef-one",
 *     b"/a.jpg/dims/format/webp\n1767225600", "sha256").digest()).rstrip(b"=") */
static void test_known_vector(void **state)
{
    (void)state;
    char sig[44];
    assert_int_equal(rf_sign_make("0123456789abcdef-one", "/a.jpg/dims/format/webp", 23, "", 0, "1767225600", sig), 0);
    assert_string_equal(sig, "eU_Ofq6Yw_L4Jvqip55fng7AEzey1yVjf49tj3kvUP4");
}

static void test_refusals(void **state)
{
    (void)state;
    rf_sign_conf_t c = s_conf(true);
    const char *path = "/p.jpg/dims/optimize";
    char sig[44], q[256], rest[256], why[200];
    assert_int_equal(rf_sign_make(c.keys[1].secret, path, strlen(path), "", 0, "1000", sig), 0);
    static const struct {
        const char *path, *fmt;
        int64_t now;
        const char *why;
    } cases[] = {
        {"/p.jpg/dims/optimize", "", 0, "unsigned URL: expires, keyid and sig are required"},
        {"/p.jpg/dims/optimize", "expires=1000&keyid=k2", 0, "unsigned URL: expires, keyid and sig are required"},
        {"/p.jpg/dims/optimize", "expires=1000&keyid=k2&sig=%s", 1001, "URL expired 1 s ago"},
        {"/p.jpg/dims/optimize", "expires=1000&keyid=k2&sig=%s", 1000, NULL}, /* the last valid second */
        {"/p.jpg/dims/optimize/", "expires=1000&keyid=k2&sig=%s", 0, "signature does not match"},
        {"/p.jpg/dims/optimize", "expires=1001&keyid=k2&sig=%s", 0, "signature does not match"},
        {"/p.jpg/dims/optimize", "expires=1000&keyid=k1&sig=%s", 0, "signature does not match"},
        {"/p.jpg/dims/optimize", "expires=1000&keyid=k9&sig=%s", 0, "unknown key id 'k9'"},
        {"/p.jpg/dims/optimize", "expires=1000&keyid=k2&sig=%s&sig=%s", 0, "malformed or repeated signature parameter"},
        {"/p.jpg/dims/optimize", "expires=1000&keyid=k2&sig=a%%2Fb", 0, "malformed or repeated signature parameter"},
        {"/p.jpg/dims/optimize", "expires=-5&keyid=k2&sig=%s", 0, "expires is not a unix time: '-5'"},
        {"/p.jpg/dims/optimize", "expires=12ab&keyid=k2&sig=%s", 0, "expires is not a unix time: '12ab'"},
        {"/p.jpg/dims/optimize", "expires=1000&keyid=k2&sig=", 0, "malformed or repeated signature parameter"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(q, sizeof(q), cases[i].fmt, sig, sig);
        int rc = s_check(&c, cases[i].path, q, cases[i].now, rest, why);
        if (cases[i].why == NULL ? rc != 0 : rc != -1 || strcmp(why, cases[i].why) != 0)
            fail_msg("case %zu (%s?%s): rc %d, why '%s', expected '%s'", i, cases[i].path, q, rc, why,
                     cases[i].why ? cases[i].why : "(valid)");
    }
    /* not required: unsigned passes, a present but bad signature does not */
    c.required = false;
    assert_int_equal(s_check(&c, path, "x=1", 0, rest, why), 0);
    assert_string_equal(rest, "x=1");
    assert_int_equal(s_check(&c, path, "x=1&keyid=k2", 0, rest, why), -1);
    /* no keys: signing is off, the parameters are still taken out */
    rf_sign_conf_t off = {0};
    assert_int_equal(s_check(&off, path, "sig=x&y=2", 0, rest, why), 0);
    assert_string_equal(rest, "y=2");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_and_rotation),
        cmocka_unit_test(test_known_vector),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests_name("rf_sign", tests, NULL, NULL);
}
