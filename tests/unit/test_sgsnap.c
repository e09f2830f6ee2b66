/*  Unit tests for services/storgate-scheduler/sg_snap.c: the file a batch
 *  scan keeps of what its last run listed. Keys come back byte for byte
 *  whatever a file name holds, and a damaged file reads as damaged, never
 *  as a shorter list (that would raise onPut for every key left out). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sg_snap.h"

typedef struct {
    char keys[8][64];
    uint64_t sizes[8];
    int64_t times[8];
    int n;
} s_got_t;

static int s_add(void *arg, const char *key, uint64_t size, int64_t mtime_ns)
{
    s_got_t *g = arg;
    if (g->n == 8)
        return -1;
    snprintf(g->keys[g->n], sizeof(g->keys[0]), "%s", key);
    g->sizes[g->n] = size;
    g->times[g->n++] = mtime_ns;
    return 0;
}

/* Reads text[0..len) as a snapshot file. */
static long s_read(const char *text, size_t len, size_t key_max, size_t max, s_got_t *g)
{
    memset(g, 0, sizeof(*g));
    FILE *f = fmemopen((void *)text, len ? len : 1, "r");
    assert_non_null(f);
    if (len == 0)
        fgetc(f); /* fmemopen needs a size; an empty file is one at its end */
    long n = sg_snap_read(f, key_max, max, s_add, g);
    fclose(f);
    return n;
}

static void test_round_trip(void **state)
{
    (void)state;
    const char *keys[] = {"a/b.jpg", " leading space", "trailing space ", "new\nline", "7 7 7 7", "-"};
    const int64_t times[] = {1700000000123456789LL, 0, -5, INT64_MAX, 1, 2};
    char *buf = NULL;
    size_t len = 0;
    FILE *w = open_memstream(&buf, &len);
    assert_non_null(w);
    for (int i = 0; i < 6; i++)
        assert_int_equal(sg_snap_write(w, keys[i], i == 0 ? UINT64_MAX : (uint64_t)i, times[i]), 0);
    fclose(w);
    s_got_t g;
    assert_int_equal(s_read(buf, len, 1024, 100, &g), 6);
    for (int i = 0; i < 6; i++) {
        assert_string_equal(g.keys[i], keys[i]);
        assert_int_equal(g.times[i], times[i]);
    }
    assert_true(g.sizes[0] == UINT64_MAX);
    free(buf);
    assert_int_equal(s_read("", 0, 1024, 100, &g), 0);
}

static void test_damaged(void **state)
{
    (void)state;
    s_got_t g;
    const char *bad[] = {
        "5 1 3 abc",                      /* truncated: no newline */
        "5 1 3 ab\n",                     /* the key shorter than said */
        "5 1 0 \n",                       /* an empty key */
        "5 1 9 abc\n",                    /* the length past the end */
        "-5 1 3 abc\n",                   /* a negative size */
        "5 1 -3 abc\n",                   /* a negative length */
        "5  1 3 abc\n",                   /* two spaces */
        " 5 1 3 abc\n",                   /* a space first */
        "5 1 3 abc\nx",                   /* trailing garbage */
        "18446744073709551616 1 3 abc\n", /* the size past 2^64 - 1 */
        "5 9223372036854775808 3 abc\n",  /* the time past INT64_MAX */
        "5 1 3\tabc\n",                   /* another separator */
        "05 1 3 abc\n",                   /* a leading zero */
        "5 -0 3 abc\n",                   /* minus zero */
        "5 1 2000 ",                      /* a length past key_max */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(s_read(bad[i], strlen(bad[i]), 1024, 100, &g), -1);
    const char nul[] = "5 1 3 a\0c\n";
    assert_int_equal(s_read(nul, sizeof(nul) - 1, 1024, 100, &g), -1);
    /* too many records, and a caller's refusal */
    const char two[] = "1 1 1 a\n2 2 1 b\n";
    assert_int_equal(s_read(two, sizeof(two) - 1, 1024, 1, &g), -1);
    assert_int_equal(s_read(two, sizeof(two) - 1, 1024, 2, &g), 2);
    assert_int_equal(s_read("1 1 4 abcd\n", 11, 3, 10, &g), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_damaged),
    };
    return cmocka_run_group_tests_name("sg_snap", tests, NULL, NULL);
}
