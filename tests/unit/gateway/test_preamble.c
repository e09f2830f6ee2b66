/*  Unit tests for services/gateway/gw_preamble.c: the line a worker writes
 *  before a streamed result, read by the gateway before it answers. The
 *  worker is not trusted: every shape it could write is either the head of
 *  an answer made safe, "not yet", or refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "gw_preamble.h"

/* Reads s as a file's first bytes, the file holding exactly s. */
static int s_read(const char *s, gw_preamble_t *out)
{
    size_t n = strlen(s);
    return gw_preamble_read(s, n < GW_PREAMBLE_MAX ? n : GW_PREAMBLE_MAX, n, out);
}

static void test_whole(void **state)
{
    (void)state;
    gw_preamble_t p;
    const char *s = "{\"content_type\":\"video/mp4\",\"source\":{\"cache_control\":\"max-age=60\","
                    "\"expires\":\"Thu, 01 Jan 2037 00:00:00 GMT\",\"last_modified\":\"Mon, 01 Jan 2024 "
                    "00:00:00 GMT\"}}\nBODY";
    assert_int_equal(s_read(s, &p), 1);
    assert_string_equal(p.ctype, "video/mp4");
    assert_string_equal(p.cc, "max-age=60");
    assert_string_equal(p.ex, "Thu, 01 Jan 2037 00:00:00 GMT");
    assert_string_equal(p.lm, "Mon, 01 Jan 2024 00:00:00 GMT");
    assert_memory_equal(s + p.body_at, "BODY", 4);
    /* no source: no freshness, still a head */
    assert_int_equal(s_read("{\"content_type\":\"video/mp4\"}\n", &p), 1);
    assert_string_equal(p.cc, "");
    assert_string_equal(p.lm, "");
    assert_int_equal(p.body_at, 29);
}

static void test_not_yet(void **state)
{
    (void)state;
    gw_preamble_t p;
    assert_int_equal(s_read("{\"content_type\":\"vid", &p), 0);
    assert_int_equal(gw_preamble_read("", 0, 0, &p), 0);
}

static void test_refused(void **state)
{
    (void)state;
    gw_preamble_t p;
    assert_int_equal(s_read("not json\n", &p), -1);
    assert_int_equal(s_read("[\"content_type\"]\n", &p), -1);
    assert_int_equal(s_read("{}\n", &p), -1);
    assert_int_equal(s_read("{\"content_type\":\"\"}\n", &p), -1);
    assert_int_equal(s_read("{\"content_type\":7}\n", &p), -1);
    assert_int_equal(s_read("{\"content_type\":\"\\n\"}\n", &p), -1);       /* nothing but a control byte */
    assert_int_equal(s_read("{\"content_type\":\"a\\u0000b\"}\n", &p), -1); /* a NUL inside a value */
    assert_int_equal(s_read("\n{\"content_type\":\"video/mp4\"}\n", &p), -1);
    /* a line that cannot end within the bound */
    static char big[GW_PREAMBLE_MAX + 64];
    memset(big, ' ', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(s_read(big, &p), -1);
    /* the same line, the newline one byte past the bound */
    memcpy(big, "{\"content_type\":\"video/mp4\"}", 28);
    big[GW_PREAMBLE_MAX] = '\n';
    assert_int_equal(s_read(big, &p), -1);
    big[GW_PREAMBLE_MAX - 1] = '\n'; /* on the bound's last byte: read */
    assert_int_equal(s_read(big, &p), 1);
    assert_int_equal(p.body_at, GW_PREAMBLE_MAX);
}

static void test_values_made_safe(void **state)
{
    (void)state;
    gw_preamble_t p;
    /* a header split and an overlong value: one printable line, cut */
    char s[1024];
    snprintf(s, sizeof(s),
             "{\"content_type\":\"video/mp4\\r\\nSet-Cookie: x=1\",\"source\":{\"cache_control\":\"%0300d\","
             "\"expires\":5}}\n",
             0);
    assert_int_equal(s_read(s, &p), 1);
    assert_string_equal(p.ctype, "video/mp4  Set-Cookie: x=1");
    assert_int_equal(strlen(p.cc), sizeof(p.cc) - 1);
    assert_string_equal(p.ex, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_whole),
        cmocka_unit_test(test_not_yet),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_values_made_safe),
    };
    return cmocka_run_group_tests_name("gw_preamble", tests, NULL, NULL);
}
