/*  Unit tests for services/storgate-scheduler/sg_ldoc.c: the object an
 *  https:// leader lease keeps on S3. What is written reads back the same;
 *  anything not in the one spelling is refused whole, since the object sits
 *  where others can write. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sg_ldoc.h"

static int s_parse(const char *text, sg_ldoc_t *d)
{
    memset(d, 0, sizeof(*d));
    return sg_ldoc_parse(text, strlen(text), d);
}

static void test_round_trip(void **state)
{
    (void)state;
    sg_ldoc_t d = {0};
    snprintf(d.node, sizeof(d.node), "node-a");
    d.token = 42;
    d.expires = 1796400000123;
    assert_int_equal(sg_ldoc_set(&d, "landing.0", "RUN\nimage_landing/f 1.bin\n3\n17\n"), 0);
    assert_int_equal(sg_ldoc_set(&d, "other.1", ""), 0);
    assert_int_equal(sg_ldoc_set(&d, "landing.0", "RUN2\n\n0\n0\n"), 0); /* replaced, not added */
    assert_int_equal(d.n, 2);
    size_t len = 0;
    char *text = sg_ldoc_text(&d, &len);
    assert_non_null(text);
    assert_string_equal(text, "refract-lease 1\nlease node-a 42 1796400000123\n"
                              "progress landing.0 10\nRUN2\n\n0\n0\n\nprogress other.1 0\n\n");
    sg_ldoc_t e;
    assert_int_equal(s_parse(text, &e), 0);
    assert_string_equal(e.node, "node-a");
    assert_int_equal(e.token, 42);
    assert_int_equal(e.expires, 1796400000123);
    assert_string_equal(sg_ldoc_get(&e, "landing.0"), "RUN2\n\n0\n0\n");
    assert_string_equal(sg_ldoc_get(&e, "other.1"), "");
    assert_null(sg_ldoc_get(&e, "none"));
    size_t len2 = 0;
    char *again = sg_ldoc_text(&e, &len2);
    assert_int_equal(len2, len);
    assert_memory_equal(again, text, len);
    free(again);
    free(text);
    sg_ldoc_clear(&d);
    sg_ldoc_clear(&e);
    assert_int_equal(d.n, 0);
}

static void test_given_up_lease(void **state)
{
    (void)state;
    sg_ldoc_t d = {0};
    size_t len;
    char *text = sg_ldoc_text(&d, &len); /* no holder yet: "-" */
    assert_string_equal(text, "refract-lease 1\nlease - 0 0\n");
    sg_ldoc_t e;
    assert_int_equal(s_parse(text, &e), 0);
    assert_string_equal(e.node, "-");
    free(text);
    sg_ldoc_clear(&e);
}

static void test_refused(void **state)
{
    (void)state;
    static const char *bad[] = {
        "",
        "refract-lease 2\nlease a 1 2\n",
        "refract-lease 1\nlease a 1 2",    /* no newline */
        "refract-lease 1\nlease a 01 2\n", /* a second spelling of 1 */
        "refract-lease 1\nlease a +1 2\n",
        "refract-lease 1\nlease a 1 -2\n",                                  /* no negative end */
        "refract-lease 1\nlease  1 2\n",                                    /* no name */
        "refract-lease 1\nlease a 18446744073709551616 2\n",                /* past 64 bits */
        "refract-lease 1\nlease a 1 9223372036854775808\n",                 /* past int64 */
        "refract-lease 1\nlease a 1 2\nprogress b 3\nab\n",                 /* shorter than said */
        "refract-lease 1\nlease a 1 2\nprogress b 2\nabc\n",                /* longer */
        "refract-lease 1\nlease a 1 2\nprogress b 1\na\nprogress b 1\nc\n", /* twice */
        "refract-lease 1\nlease a 1 2\nprogress b 65537\n",                 /* over the bound */
        "refract-lease 1\nlease a 1 2\ntrailing",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        sg_ldoc_t d;
        if (s_parse(bad[i], &d) == 0)
            fail_msg("accepted: %s", bad[i]);
        sg_ldoc_clear(&d);
    }
    /* a NUL inside a record */
    static const char nul[] = "refract-lease 1\nlease a 1 2\nprogress b 1\n\0\n";
    sg_ldoc_t d;
    memset(&d, 0, sizeof(d));
    assert_int_equal(sg_ldoc_parse(nul, sizeof(nul) - 1, &d), -1);
    sg_ldoc_clear(&d);
}

static void test_bounds(void **state)
{
    (void)state;
    sg_ldoc_t d = {0};
    errno = 0;
    assert_int_equal(sg_ldoc_set(&d, "has space", "x"), -1);
    assert_int_equal(errno, EINVAL);
    char *big = malloc(SG_LDOC_TEXT + 2);
    memset(big, 'x', SG_LDOC_TEXT + 1);
    big[SG_LDOC_TEXT + 1] = '\0';
    assert_int_equal(sg_ldoc_set(&d, "b", big), -1);
    assert_int_equal(errno, E2BIG);
    big[SG_LDOC_TEXT] = '\0';
    assert_int_equal(sg_ldoc_set(&d, "b", big), 0);
    free(big);
    char name[32];
    for (int i = 1; i < SG_LDOC_ENTRIES; i++) {
        snprintf(name, sizeof(name), "n%d", i);
        assert_int_equal(sg_ldoc_set(&d, name, "t"), 0);
    }
    assert_int_equal(sg_ldoc_set(&d, "one-more", "t"), -1);
    assert_int_equal(errno, E2BIG);
    assert_int_equal(sg_ldoc_set(&d, "n7", "replaced"), 0); /* a known name still */
    sg_ldoc_clear(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_given_up_lease),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_bounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
