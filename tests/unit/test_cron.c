/*  Unit tests for common/rf_cron: 5-field cron expressions.
 *  - parse: accepted expressions give the bit sets written out here by
 *    hand; refused ones give exactly their reason, which names the field
 *    and the token;
 *  - next: hand-written vectors (UTC) for common expressions, leap years,
 *    DOM/DOW OR semantics, names, 7 as Sunday, stepped ranges, macros;
 *  - an oracle: 2000 random expressions (seeded PRNG) whose bit sets the
 *    generator computes itself; rf_cron_matches is checked against a
 *    field-by-field check from gmtime_r, and rf_cron_next against a
 *    minute-by-minute scan (up to 2 years) from random start times;
 *  - local time: Europe/Berlin's DST changes by hand ("30 2 * * *" fires
 *    at 03:00 CEST on the spring-forward day, once on the fall-back day),
 *    then random expressions against an independent minute scan of
 *    localtime_r across the changes of Berlin, Lord Howe (30 min),
 *    Sao Paulo (at midnight) and Apia (a whole day skipped in 2011). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rf_cron.h"

/* ------------------------------------------------------------ helpers */

/* UTC unix time of a civil date and time. */
static int64_t s_utc(int y, int mo, int d, int h, int mi)
{
    struct tm tm = {.tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d, .tm_hour = h, .tm_min = mi};
    return (int64_t)timegm(&tm);
}

static void s_fmt(int64_t t, char *buf, size_t n)
{
    if (t < 0) {
        snprintf(buf, n, "%lld", (long long)t);
        return;
    }
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(buf, n, "%Y-%m-%d %H:%M:%SZ %a", &tm);
}

/* A bit set from "1,5,7-9" (the test's own reading, for expectations). */
static uint64_t s_set(const char *list)
{
    uint64_t b = 0;
    const char *p = list;
    while (*p) {
        char *end;
        long a = strtol(p, &end, 10), z = a;
        if (*end == '-')
            z = strtol(end + 1, &end, 10);
        for (long v = a; v <= z; v++)
            b |= UINT64_C(1) << v;
        p = *end == ',' ? end + 1 : end;
    }
    return b;
}

static rf_cron_t s_parse_ok(const char *text)
{
    rf_cron_t c;
    char why[200] = "";
    if (rf_cron_parse(text, &c, why, sizeof(why)) != 0)
        fail_msg("'%s' refused: %s", text, why);
    return c;
}

/* ------------------------------------------------------------ parse */

static void test_parse_accept(void **state)
{
    (void)state;
    static const struct {
        const char *text, *min, *hour, *dom, *mon, *dow;
        bool dom_star, dow_star;
    } cases[] = {
        {"*/5 * * * *", "0,5,10,15,20,25,30,35,40,45,50,55", "0-23", "1-31", "1-12", "0-6", true, true},
        {"0 1 * * *", "0", "1", "1-31", "1-12", "0-6", true, true},
        {"30 4 1,15 * 5", "30", "4", "1,15", "1-12", "5", false, false},
        {"0 0 29 2 *", "0", "0", "29", "2", "0-6", false, true},
        {"10-50/20 * * * *", "10,30,50", "0-23", "1-31", "1-12", "0-6", true, true},
        {"5/15 */6 */10 */5 */3", "5,20,35,50", "0,6,12,18", "1,11,21,31", "1,6,11", "0,3,6", false, false},
        {"0 0 * jan-mar,DEC mon-FRI", "0", "0", "1-31", "1-3,12", "1-5", true, false},
        {"0 0 * * 7", "0", "0", "1-31", "1-12", "0", true, false},
        {"0 0 * * 5-7", "0", "0", "1-31", "1-12", "0,5,6", true, false},
        {"0 0 * * fri-sun", "0", "0", "1-31", "1-12", "0,5,6", true, false},
        {"0 0 * * sun-sat", "0", "0", "1-31", "1-12", "0-6", true, false},
        {"0 0 * * Sun-sun", "0", "0", "1-31", "1-12", "0", true, false},
        {"0 0 * * 1/2", "0", "0", "1-31", "1-12", "0,1,3,5", true, false},
        {"0 0 * * */2", "0", "0", "1-31", "1-12", "0,2,4,6", true, false},
        {"0 0 * * 0-7", "0", "0", "1-31", "1-12", "0-6", true, false},
        {"0 0 */1 * */1", "0", "0", "1-31", "1-12", "0-6", true, true},
        {"0 0 1-31 * *", "0", "0", "1-31", "1-12", "0-6", false, true},
        {"0 0 *,1 * *", "0", "0", "1-31", "1-12", "0-6", false, true},
        {"\t 0  0\t* *   *  \t", "0", "0", "1-31", "1-12", "0-6", true, true},
        {"00 01 01 01 00", "0", "1", "1", "1", "0", false, false},
        {"0-59 0-23 1-31 1-12 0-7", "0-59", "0-23", "1-31", "1-12", "0-6", false, false},
        {"59 23 31 12 6", "59", "23", "31", "12", "6", false, false},
        {"1,2,3-5,40-59/10 * * feb/4 *", "1,2,3,4,5,40,50", "0-23", "1-31", "2,6,10", "0-6", true, true},
        {"*/60 */24 */31 */12 */7", "0", "0", "1", "1", "0", false, false},
        {"0 0 * JAN-mar/2 *", "0", "0", "1-31", "1,3", "0-6", true, true},
        {"@yearly", "0", "0", "1", "1", "0-6", false, true},
        {"@ANNUALLY", "0", "0", "1", "1", "0-6", false, true},
        {"@monthly", "0", "0", "1", "1-12", "0-6", false, true},
        {"@weekly", "0", "0", "1-31", "1-12", "0", true, false},
        {"  @daily \t", "0", "0", "1-31", "1-12", "0-6", true, true},
        {"@midnight", "0", "0", "1-31", "1-12", "0-6", true, true},
        {"@Hourly", "0", "0-23", "1-31", "1-12", "0-6", true, true},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        rf_cron_t c = s_parse_ok(cases[i].text);
        if (c.minute != s_set(cases[i].min) || c.hour != s_set(cases[i].hour) || c.dom != s_set(cases[i].dom) ||
            c.month != s_set(cases[i].mon) || c.dow != s_set(cases[i].dow) || c.dom_star != cases[i].dom_star ||
            c.dow_star != cases[i].dow_star)
            fail_msg("'%s': minute %llx hour %x dom %x month %x dow %x stars %d %d", cases[i].text,
                     (unsigned long long)c.minute, c.hour, c.dom, c.month, c.dow, c.dom_star, c.dow_star);
    }
    /* (pointer, length): no NUL needed, and 256 bytes is the limit */
    char buf[300];
    memset(buf, ' ', sizeof(buf));
    memcpy(buf, "0 1 * * *", 9);
    rf_cron_t c;
    char why[200];
    assert_int_equal(rf_cron_parse_n(buf, 256, &c, why, sizeof(why)), 0);
    assert_int_equal(c.hour, 2);
    assert_int_equal(rf_cron_parse_n("0 1 * * *Z", 9, &c, why, sizeof(why)), 0);
    buf[256] = '\0';
    assert_int_equal(rf_cron_parse(buf, &c, why, sizeof(why)), 0);
    buf[256] = ' ', buf[257] = '\0';
    assert_int_equal(rf_cron_parse(buf, &c, why, sizeof(why)), -1);
    assert_string_equal(why, "expression longer than 256 bytes");
    assert_int_equal(rf_cron_parse_n(buf, 257, &c, why, sizeof(why)), -1);
}

static void test_parse_refuse(void **state)
{
    (void)state;
    static const struct {
        const char *text, *why;
    } cases[] = {
        {"0 24 * * *", "field 2 (hour): 24 is out of range 0-23"},
        {"60 * * * *", "field 1 (minute): 60 is out of range 0-59"},
        {"* * 0 * *", "field 3 (day-of-month): 0 is out of range 1-31"},
        {"* * 32 * *", "field 3 (day-of-month): 32 is out of range 1-31"},
        {"* * * 13 *", "field 4 (month): 13 is out of range 1-12"},
        {"* * * 0 *", "field 4 (month): 0 is out of range 1-12"},
        {"* * * * 8", "field 5 (day-of-week): 8 is out of range 0-7"},
        {"99999999999999999999 * * * *", "field 1 (minute): 99999999999999999999 is out of range 0-59"},
        {"1-60 * * * *", "field 1 (minute): 60 is out of range 0-59"},
        {"5-1 * * * *", "field 1 (minute): range '5-1' is reversed"},
        {"* * * dec-jan *", "field 4 (month): range 'dec-jan' is reversed"},
        {"* * * * 6-0", "field 5 (day-of-week): range '6-0' is reversed"},
        {"* * * * 7-1", "field 5 (day-of-week): range '7-1' is reversed"},
        {"*/0 * * * *", "field 1 (minute): step 0 in '*/0' is out of range 1-60"},
        {"*/61 * * * *", "field 1 (minute): step 61 in '*/61' is out of range 1-60"},
        {"* 1-5/25 * * *", "field 2 (hour): step 25 in '1-5/25' is out of range 1-24"},
        {"* * * * */8", "field 5 (day-of-week): step 8 in '*/8' is out of range 1-7"},
        {"*/ * * * *", "field 1 (minute): missing step after '/' in '*/'"},
        {"1/x * * * *", "field 1 (minute): missing step after '/' in '1/x'"},
        {"1/2/3 * * * *", "field 1 (minute): unexpected '/' in '1/2/3'"},
        {"1,,2 * * * *", "field 1 (minute): empty list item in '1,,2'"},
        {",1 * * * *", "field 1 (minute): empty list item in ',1'"},
        {"* 1, * * *", "field 2 (hour): empty list item in '1,'"},
        {"1x * * * *", "field 1 (minute): unexpected 'x' in '1x'"},
        {"* * * * *x", "field 5 (day-of-week): unexpected 'x' in '*x'"},
        {"*-5 * * * *", "field 1 (minute): unexpected '-' in '*-5'"},
        {"-1 * * * *", "field 1 (minute): unexpected '-' in '-1'"},
        {"1- * * * *", "field 1 (minute): missing value at the end of '1-'"},
        {"* * ? * *", "field 3 (day-of-month): unexpected '?' in '?'"},
        {"* * L * *", "field 3 (day-of-month): unexpected 'L' in 'L' (names are for month and day-of-week)"},
        {"jan * * * *", "field 1 (minute): unexpected 'jan' in 'jan' (names are for month and day-of-week)"},
        {"* * * foo *", "field 4 (month): unknown name 'foo' (jan..dec)"},
        {"* * * mon *", "field 4 (month): unknown name 'mon' (jan..dec)"},
        {"* * * january *", "field 4 (month): unknown name 'january' (jan..dec)"},
        {"* * * * sunday", "field 5 (day-of-week): unknown name 'sunday' (sun..sat)"},
        {"* * * * jan", "field 5 (day-of-week): unknown name 'jan' (sun..sat)"},
        {"* * * * 1#2", "field 5 (day-of-week): unexpected '#' in '1#2'"},
        {"* * * * * *", "trailing '*' after field 5 (day-of-week): expected 5 fields"},
        {"0 0 * * * /bin/true", "trailing '/bin/true' after field 5 (day-of-week): expected 5 fields"},
        {"* * * *", "field 5 (day-of-week): missing: expected 5 fields (minute hour day-of-month month day-of-week)"},
        {"*", "field 2 (hour): missing: expected 5 fields (minute hour day-of-month month day-of-week)"},
        {"", "empty expression"},
        {" \t ", "empty expression"},
        {"* * * *\n*", "field 4 (month): unexpected '?' in '*?*'"},
        {"@reboot", "unknown macro '@reboot' (@yearly @annually @monthly @weekly @daily @midnight @hourly)"},
        {"@", "unknown macro '@' (@yearly @annually @monthly @weekly @daily @midnight @hourly)"},
        {"@dailyx", "unknown macro '@dailyx' (@yearly @annually @monthly @weekly @daily @midnight @hourly)"},
        {"@daily x", "trailing 'x' after @daily"},
        {"@daily * * * * *", "trailing '* * * * *' after @daily"},
        {"0 0 * * @daily", "field 5 (day-of-week): unexpected '@' in '@daily'"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        rf_cron_t c = {.minute = 12345};
        char why[200] = "";
        int rc = rf_cron_parse(cases[i].text, &c, why, sizeof(why));
        if (rc != -1 || strcmp(why, cases[i].why) != 0)
            fail_msg("'%s': rc %d, why '%s', expected '%s'", cases[i].text, rc, why, cases[i].why);
        assert_int_equal(c.minute, 12345); /* untouched on refusal */
    }
    /* a NUL inside (pointer, length), a missing why, a short why */
    rf_cron_t c;
    char why[200], small[12];
    assert_int_equal(rf_cron_parse_n("0\0 * * * *", 11, &c, why, sizeof(why)), -1);
    assert_string_equal(why, "field 1 (minute): unexpected '?' in '0?'");
    assert_int_equal(rf_cron_parse("0 24 * * *", &c, NULL, 0), -1);
    assert_int_equal(rf_cron_parse("0 24 * * *", &c, small, sizeof(small)), -1);
    assert_string_equal(small, "field 2 (ho");
    assert_int_equal(rf_cron_parse(NULL, &c, why, sizeof(why)), -1);
    assert_string_equal(why, "no expression");
    /* a long token is cut in the message */
    char longtok[120];
    memset(longtok, 'x', sizeof(longtok));
    memcpy(longtok, "* * * * 1", 9);
    longtok[sizeof(longtok) - 1] = '\0';
    assert_int_equal(rf_cron_parse(longtok, &c, why, sizeof(why)), -1);
    char want[120];
    snprintf(want, sizeof(want), "field 5 (day-of-week): unexpected 'x' in '1%.39s...'", longtok + 9);
    assert_string_equal(why, want);
}

/* ------------------------------------------------------------ next (UTC) */

static void s_expect_next(const char *text, int64_t after, int64_t want)
{
    rf_cron_t c = s_parse_ok(text);
    int64_t got = rf_cron_next(&c, after, true);
    if (got != want) {
        char a[64], g[64], w[64];
        s_fmt(after, a, sizeof(a)), s_fmt(got, g, sizeof(g)), s_fmt(want, w, sizeof(w));
        fail_msg("'%s' after %s: got %s, expected %s", text, a, g, w);
    }
    if (want >= 0 && !rf_cron_matches(&c, want, true))
        fail_msg("'%s': rf_cron_matches(%lld) is false", text, (long long)want);
}

static void test_next_vectors(void **state)
{
    (void)state;
    /* every 5 minutes */
    s_expect_next("*/5 * * * *", s_utc(2024, 1, 1, 0, 0), s_utc(2024, 1, 1, 0, 5));
    s_expect_next("*/5 * * * *", s_utc(2024, 1, 1, 0, 5) - 1, s_utc(2024, 1, 1, 0, 5));
    s_expect_next("*/5 * * * *", s_utc(2024, 1, 1, 0, 4) + 30, s_utc(2024, 1, 1, 0, 5));
    s_expect_next("*/5 * * * *", s_utc(2024, 12, 31, 23, 58), s_utc(2025, 1, 1, 0, 0));
    /* daily at 01:00 */
    s_expect_next("0 1 * * *", s_utc(2024, 3, 10, 1, 0), s_utc(2024, 3, 11, 1, 0));
    s_expect_next("0 1 * * *", s_utc(2024, 3, 10, 0, 59), s_utc(2024, 3, 10, 1, 0));
    s_expect_next("0 1 * * *", s_utc(2024, 2, 28, 23, 0), s_utc(2024, 2, 29, 1, 0));
    /* the 1st, the 15th OR a Friday (March 2024: Fridays 1, 8, 15, 22, 29) */
    s_expect_next("30 4 1,15 * 5", s_utc(2024, 2, 29, 12, 0), s_utc(2024, 3, 1, 4, 30));
    s_expect_next("30 4 1,15 * 5", s_utc(2024, 3, 1, 4, 30), s_utc(2024, 3, 8, 4, 30));
    s_expect_next("30 4 1,15 * 5", s_utc(2024, 3, 8, 4, 30), s_utc(2024, 3, 15, 4, 30));
    s_expect_next("30 4 1,15 * 5", s_utc(2024, 3, 29, 4, 30), s_utc(2024, 4, 1, 4, 30));
    s_expect_next("30 4 1,15 * fri", s_utc(2024, 4, 1, 4, 30), s_utc(2024, 4, 5, 4, 30));
    /* a `*` day-of-month: only the day-of-week counts; "*\/2" is restricted */
    s_expect_next("0 0 * * 1", s_utc(2024, 3, 1, 0, 0), s_utc(2024, 3, 4, 0, 0));
    s_expect_next("0 0 */2 * 1", s_utc(2024, 3, 1, 0, 0), s_utc(2024, 3, 3, 0, 0));
    s_expect_next("0 0 */1 * 1", s_utc(2024, 3, 1, 0, 0), s_utc(2024, 3, 4, 0, 0));
    /* February 29th: leap years, and none in 2100 */
    s_expect_next("0 0 29 2 *", s_utc(2023, 1, 1, 0, 0), s_utc(2024, 2, 29, 0, 0));
    s_expect_next("0 0 29 2 *", s_utc(2024, 2, 29, 0, 0), s_utc(2028, 2, 29, 0, 0));
    s_expect_next("0 0 29 2 *", s_utc(2096, 3, 1, 0, 0), s_utc(2104, 2, 29, 0, 0));
    s_expect_next("0 0 29 2 *", s_utc(1999, 3, 1, 0, 0), s_utc(2000, 2, 29, 0, 0));
    /* never */
    s_expect_next("0 0 31 2 *", s_utc(2024, 1, 1, 0, 0), -1);
    s_expect_next("0 0 30 2 *", s_utc(2024, 1, 1, 0, 0), -1);
    s_expect_next("0 0 31 4,6,9,11 *", s_utc(2024, 1, 1, 0, 0), -1);
    s_expect_next("0 0 31 2 1", s_utc(2024, 1, 1, 0, 0), s_utc(2024, 2, 5, 0, 0)); /* OR: Mondays in Feb */
    /* @weekly: Sunday 00:00 (2024-01-07 is a Sunday) */
    s_expect_next("@weekly", s_utc(2024, 1, 3, 12, 0), s_utc(2024, 1, 7, 0, 0));
    s_expect_next("@weekly", s_utc(2024, 1, 7, 0, 0), s_utc(2024, 1, 14, 0, 0));
    s_expect_next("@yearly", s_utc(2024, 6, 1, 0, 0), s_utc(2025, 1, 1, 0, 0));
    s_expect_next("@monthly", s_utc(2024, 1, 31, 0, 0), s_utc(2024, 2, 1, 0, 0));
    s_expect_next("@hourly", s_utc(2024, 1, 31, 23, 0), s_utc(2024, 2, 1, 0, 0));
    s_expect_next("@daily", s_utc(2024, 12, 31, 0, 0), s_utc(2025, 1, 1, 0, 0));
    /* names, and 7 as Sunday */
    s_expect_next("0 12 * jan,JUL sun", s_utc(2024, 1, 28, 12, 0), s_utc(2024, 7, 7, 12, 0));
    s_expect_next("0 9 * * mon-fri", s_utc(2024, 5, 31, 9, 0), s_utc(2024, 6, 3, 9, 0));
    s_expect_next("0 0 * * 7", s_utc(2024, 1, 3, 0, 0), s_utc(2024, 1, 7, 0, 0));
    s_expect_next("0 0 * * 6-7", s_utc(2024, 1, 3, 0, 0), s_utc(2024, 1, 6, 0, 0));
    s_expect_next("0 0 * * 6-7", s_utc(2024, 1, 6, 0, 0), s_utc(2024, 1, 7, 0, 0));
    s_expect_next("0 0 * * 6-7", s_utc(2024, 1, 7, 0, 0), s_utc(2024, 1, 13, 0, 0));
    /* ranges with steps */
    s_expect_next("10-50/20 * * * *", s_utc(2024, 1, 1, 10, 10), s_utc(2024, 1, 1, 10, 30));
    s_expect_next("10-50/20 * * * *", s_utc(2024, 1, 1, 10, 50), s_utc(2024, 1, 1, 11, 10));
    s_expect_next("0 8-18/5 * * *", s_utc(2024, 1, 1, 18, 0), s_utc(2024, 1, 2, 8, 0));
    s_expect_next("59 23 31 12 *", s_utc(2024, 12, 31, 23, 59), s_utc(2025, 12, 31, 23, 59));
    /* bounds */
    s_expect_next("* * * * *", 0, 60);
    s_expect_next("* * * * *", -1, -1);
    s_expect_next("* * * * *", RF_CRON_TIME_MAX + 1, -1);
    s_expect_next("* * * * *", RF_CRON_TIME_MAX - 60, RF_CRON_TIME_MAX - 59);
    s_expect_next("0 0 1 1 *", RF_CRON_TIME_MAX - 86400 * 30, -1); /* would be year 10000 */
    /* matches: only at second 0 */
    rf_cron_t c = s_parse_ok("*/5 * * * *");
    assert_true(rf_cron_matches(&c, s_utc(2024, 1, 1, 0, 5), true));
    assert_false(rf_cron_matches(&c, s_utc(2024, 1, 1, 0, 5) + 1, true));
    assert_false(rf_cron_matches(&c, s_utc(2024, 1, 1, 0, 6), true));
    assert_false(rf_cron_matches(&c, -60, true));
    /* efficiency: sparse expressions need no minute walk (a loose bound, also under ASan) */
    rf_cron_t sparse = s_parse_ok("59 23 29 2 *"), never = s_parse_ok("0 0 31 2 *");
    clock_t t0 = clock();
    for (int i = 0; i < 20000; i++) {
        assert_true(rf_cron_next(&sparse, s_utc(2001, 1, 1, 0, 0) + i * 3600, true) > 0);
        assert_int_equal(rf_cron_next(&never, s_utc(2001, 1, 1, 0, 0) + i * 3600, true), -1);
    }
    double secs = (double)(clock() - t0) / CLOCKS_PER_SEC;
    if (secs > 5)
        fail_msg("40000 sparse searches took %.2f s", secs);
}

/* ------------------------------------------------------------ the oracle */

static uint64_t s_rng = 0x2545f4914f6cdd1dULL;

static uint64_t s_rand(void)
{
    /* splitmix64 */
    uint64_t z = (s_rng += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static int s_between(int lo, int hi)
{
    return lo + (int)(s_rand() % (uint64_t)(hi - lo + 1));
}

typedef struct {
    char text[256];
    uint64_t set[5]; /* minute, hour, dom, month, dow (0-6) */
    bool dom_star, dow_star;
} s_expr_t;

static const int s_lo[5] = {0, 0, 1, 1, 0}, s_hi[5] = {59, 23, 31, 12, 7}, s_star_hi[5] = {59, 23, 31, 12, 6};

/* A value as text: a number, or (month, day-of-week) sometimes a name in
 * random case. `end` is the end of a range whose start is `start`. */
static void s_put_value(char *out, size_t n, int f, int v, bool end, int start)
{
    static const char *mon[] = {"jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"};
    static const char *day[] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat"};
    const char *name = NULL;
    if (f == 3 && s_rand() % 3 == 0)
        name = mon[v - 1];
    if (f == 4 && s_rand() % 3 == 0) {
        if (v < 7 && !(v == 0 && end && start > 0))
            name = day[v];
        else if (v == 7 && end && start > 0)
            name = "sun"; /* "fri-sun" = 5-7 */
    }
    if (name == NULL) {
        snprintf(out + strlen(out), n - strlen(out), "%s%d", s_rand() % 8 == 0 ? "0" : "", v);
        return;
    }
    size_t k = strlen(out);
    for (int i = 0; i < 3 && k + 1 < n; i++)
        out[k++] = (char)(s_rand() % 2 ? name[i] - 'a' + 'A' : name[i]);
    out[k] = '\0';
}

/* A random field f: its text appended to out, its set in *set. */
static void s_gen_field(char *out, size_t n, int f, uint64_t *set, bool *star)
{
    int lo = s_lo[f], hi = s_hi[f], span = s_star_hi[f] - lo + 1;
    size_t start = strlen(out);
    uint64_t r = s_rand() % 100;
    *set = 0;
    if (r < (f == 0 ? 15 : 40)) {
        snprintf(out + start, n - start, "*");
        for (int v = lo; v <= s_star_hi[f]; v++)
            *set |= UINT64_C(1) << v;
    } else if (r < (f == 0 ? 35 : 50)) {
        int step = s_between(1, span > 12 ? 12 : span);
        if (s_rand() % 10 == 0)
            step = s_between(1, span);
        snprintf(out + start, n - start, "*/%d", step);
        for (int v = lo; v <= s_star_hi[f]; v += step)
            *set |= UINT64_C(1) << v;
    } else {
        int items = s_between(1, 3);
        for (int k = 0; k < items; k++) {
            size_t len = strlen(out);
            if (k > 0)
                snprintf(out + len, n - len, ",");
            int a = s_between(lo, hi), b = s_between(a, hi), step = 1;
            uint64_t kind = s_rand() % 4;
            if (kind == 0) { /* A */
                b = a;
                s_put_value(out, n, f, a, false, 0);
            } else if (kind == 1 || kind == 2) { /* A-B or A-B/N */
                s_put_value(out, n, f, a, false, 0);
                snprintf(out + strlen(out), n - strlen(out), "-");
                s_put_value(out, n, f, b, true, a);
                if (kind == 2) {
                    step = s_between(1, span > 15 ? 15 : span);
                    snprintf(out + strlen(out), n - strlen(out), "/%d", step);
                }
            } else { /* A/N = A-max/N */
                b = hi;
                step = s_between(1, span > 15 ? 15 : span);
                s_put_value(out, n, f, a, false, 0);
                snprintf(out + strlen(out), n - strlen(out), "/%d", step);
            }
            for (int v = a; v <= b; v += step)
                *set |= UINT64_C(1) << v;
        }
    }
    if (f == 4) /* 7 is Sunday */
        *set = (*set & 0x7f) | (*set >> 7 & 1);
    *star = strcmp(out + start, "*") == 0 || strcmp(out + start, "*/1") == 0;
}

static void s_gen(s_expr_t *e)
{
    bool star;
    e->text[0] = '\0';
    for (int f = 0; f < 5; f++) {
        if (f > 0)
            strcat(e->text, s_rand() % 5 == 0 ? " \t " : " ");
        s_gen_field(e->text, sizeof(e->text), f, &e->set[f], &star);
        if (f == 2)
            e->dom_star = star;
        if (f == 4)
            e->dow_star = star;
    }
}

/* The independent check of a wall time w (seconds, read as UTC) against
 * the generator's own sets. */
static bool s_oracle_wall(const s_expr_t *e, int64_t w)
{
    /* gmtime_r once per day (the scans walk minute by minute) */
    static int64_t day = INT64_MIN;
    static struct tm tm;
    if (w / 86400 != day) {
        day = w / 86400;
        time_t tt = (time_t)(day * 86400);
        gmtime_r(&tt, &tm);
    }
    int64_t sod = w - day * 86400;
    if (sod % 60 != 0)
        return false;
    bool dom = e->set[2] >> tm.tm_mday & 1, dow = e->set[4] >> tm.tm_wday & 1;
    bool dayok = e->dom_star || e->dow_star ? dom && dow : dom || dow;
    return (e->set[0] >> (sod / 60 % 60) & 1) && (e->set[1] >> (sod / 3600) & 1) &&
           (e->set[3] >> (tm.tm_mon + 1) & 1) && dayok;
}

static void s_check_parse(const s_expr_t *e, rf_cron_t *c)
{
    char why[200] = "";
    if (rf_cron_parse(e->text, c, why, sizeof(why)) != 0)
        fail_msg("generated '%s' refused: %s", e->text, why);
    if (c->minute != e->set[0] || c->hour != e->set[1] || c->dom != e->set[2] || c->month != e->set[3] ||
        c->dow != e->set[4] || c->dom_star != e->dom_star || c->dow_star != e->dow_star)
        fail_msg("'%s': parsed sets differ", e->text);
}

static void test_oracle_utc(void **state)
{
    (void)state;
    s_rng = 20240501;
    const int64_t two_years = 2 * 366 * 86400;
    long scanned = 0, found = 0, beyond = 0;
    for (int i = 0; i < 2000; i++) {
        s_expr_t e;
        rf_cron_t c;
        s_gen(&e);
        s_check_parse(&e, &c);
        /* starts in 2000-2040, some around 2100 (not a leap year) */
        int64_t base = s_rand() % 8 == 0 ? s_utc(2094, 1, 1, 0, 0) : s_utc(2000, 1, 1, 0, 0);
        uint64_t spread = s_rand() % 4 == 0 ? 40ULL * 365 * 86400 : 12ULL * 365 * 86400;
        int64_t after = base + (int64_t)(s_rand() % spread);
        if (s_rand() % 2)
            after -= after % 60;
        int64_t next = rf_cron_next(&c, after, true), want = -1;
        for (int64_t t = after - after % 60 + 60; t <= after + two_years; t += 60) {
            bool m = rf_cron_matches(&c, t, true);
            scanned++;
            if (m != s_oracle_wall(&e, t)) {
                char ts[64];
                s_fmt(t, ts, sizeof(ts));
                fail_msg("'%s' at %s: rf_cron_matches %d, the field check %d", e.text, ts, m, !m);
            }
            if (m) {
                want = t;
                break;
            }
        }
        if (want >= 0) {
            found++;
            if (next != want) {
                char a[64], g[64], w[64];
                s_fmt(after, a, sizeof(a)), s_fmt(next, g, sizeof(g)), s_fmt(want, w, sizeof(w));
                fail_msg("#%d '%s' after %s: next %s, the scan %s", i, e.text, a, g, w);
            }
        } else if (next != -1) { /* beyond the scan: it must still match */
            beyond++;
            if (next <= after + two_years || !rf_cron_matches(&c, next, true) || !s_oracle_wall(&e, next))
                fail_msg("'%s': next %lld beyond the scan is wrong", e.text, (long long)next);
        }
    }
    print_message("oracle: 2000 expressions, %ld found by the scan, %ld beyond it, %ld minutes scanned\n", found,
                  beyond, scanned);
    assert_true(found > 1500);
}

/* ------------------------------------------------------------ local time */

static char s_saved_tz[256];
static bool s_had_tz;

static void s_set_tz(const char *tz)
{
    setenv("TZ", tz, 1);
    tzset();
}

static int s_tz_setup(void **state)
{
    (void)state;
    const char *tz = getenv("TZ");
    s_had_tz = tz != NULL;
    if (tz)
        snprintf(s_saved_tz, sizeof(s_saved_tz), "%s", tz);
    return 0;
}

static int s_tz_teardown(void **state)
{
    (void)state;
    if (s_had_tz)
        setenv("TZ", s_saved_tz, 1);
    else
        unsetenv("TZ");
    tzset();
    return 0;
}

static void s_expect_local(const char *text, int64_t after, int64_t want)
{
    rf_cron_t c = s_parse_ok(text);
    int64_t got = rf_cron_next(&c, after, false);
    if (got != want) {
        char a[64], g[64], w[64];
        s_fmt(after, a, sizeof(a)), s_fmt(got, g, sizeof(g)), s_fmt(want, w, sizeof(w));
        fail_msg("'%s' (local) after %s: got %s, expected %s", text, a, g, w);
    }
    if (want >= 0 && !rf_cron_matches(&c, want, false))
        fail_msg("'%s': rf_cron_matches(%lld, local) is false", text, (long long)want);
}

static void test_local_dst_berlin(void **state)
{
    (void)state;
    s_set_tz("Europe/Berlin");
    /* 2024-03-31: 02:00 CET (01:00Z) jumps to 03:00 CEST. "30 2 * * *"
     * fires at the end of the gap, 03:00 CEST = 01:00Z */
    s_expect_local("30 2 * * *", s_utc(2024, 3, 29, 12, 0), s_utc(2024, 3, 30, 1, 30));   /* 02:30 CET */
    s_expect_local("30 2 * * *", s_utc(2024, 3, 30, 12, 0), s_utc(2024, 3, 31, 1, 0));    /* 03:00 CEST */
    s_expect_local("30 2 * * *", s_utc(2024, 3, 31, 1, 0), s_utc(2024, 4, 1, 0, 30));     /* 02:30 CEST */
    s_expect_local("0 3 * * *", s_utc(2024, 3, 30, 12, 0), s_utc(2024, 3, 31, 1, 0));     /* 03:00 itself */
    s_expect_local("0 * * * *", s_utc(2024, 3, 31, 0, 0), s_utc(2024, 3, 31, 1, 0));      /* 02:00 and 03:00: once */
    s_expect_local("0 * * * *", s_utc(2024, 3, 31, 1, 0), s_utc(2024, 3, 31, 2, 0));      /* then 04:00 */
    s_expect_local("15,45 2 * * *", s_utc(2024, 3, 31, 0, 50), s_utc(2024, 3, 31, 1, 0)); /* both at 03:00 */
    s_expect_local("15,45 2 * * *", s_utc(2024, 3, 31, 1, 0), s_utc(2024, 4, 1, 0, 15));
    s_expect_local("*/5 * * * *", s_utc(2024, 3, 31, 0, 55), s_utc(2024, 3, 31, 1, 0));
    s_expect_local("*/5 * * * *", s_utc(2024, 3, 31, 1, 0), s_utc(2024, 3, 31, 1, 5));
    /* 2024-10-27: 03:00 CEST (01:00Z) falls back to 02:00 CET. 02:30
     * happens at 00:30Z and 01:30Z; it fires once, at 00:30Z */
    s_expect_local("30 2 * * *", s_utc(2024, 10, 26, 12, 0), s_utc(2024, 10, 27, 0, 30));
    s_expect_local("30 2 * * *", s_utc(2024, 10, 27, 0, 30), s_utc(2024, 10, 28, 1, 30));
    s_expect_local("*/15 * * * *", s_utc(2024, 10, 27, 0, 45), s_utc(2024, 10, 27, 2, 0)); /* 03:00 CET */
    s_expect_local("*/15 * * * *", s_utc(2024, 10, 27, 1, 20), s_utc(2024, 10, 27, 2, 0)); /* inside the repeat */
    s_expect_local("0 3 * * *", s_utc(2024, 10, 26, 12, 0), s_utc(2024, 10, 27, 2, 0));
    rf_cron_t c = s_parse_ok("30 2 * * *");
    assert_true(rf_cron_matches(&c, s_utc(2024, 10, 27, 0, 30), false));
    assert_false(rf_cron_matches(&c, s_utc(2024, 10, 27, 1, 30), false)); /* the repeat */
    assert_true(rf_cron_matches(&c, s_utc(2024, 3, 31, 1, 0), false));    /* the gap's end */
    assert_false(rf_cron_matches(&c, s_utc(2024, 3, 31, 1, 0), true));    /* not in UTC */
    rf_cron_t c3 = s_parse_ok("30 3 * * *");
    assert_false(rf_cron_matches(&c3, s_utc(2024, 3, 31, 1, 0), false));
    assert_true(rf_cron_matches(&c3, s_utc(2024, 3, 31, 1, 30), false));
    /* an ordinary day in local time, and @daily in CET */
    s_expect_local("@daily", s_utc(2024, 1, 10, 12, 0), s_utc(2024, 1, 10, 23, 0));
    s_expect_local("0 0 29 2 *", s_utc(2024, 1, 10, 12, 0), s_utc(2024, 2, 28, 23, 0));
    s_expect_local("0 0 31 2 *", s_utc(2024, 1, 10, 12, 0), -1);
}

/* The independent local oracle: a minute walk over unix time with
 * localtime_r. A minute fires when its wall time is new (greater than any
 * seen) and matches, or when the wall clock jumped forward past a
 * matching minute. */
typedef struct {
    int64_t from, to; /* unix minutes scanned (from - 1 day sets up maxw) */
} s_window_t;

static int64_t s_wall(int64_t t)
{
    time_t tt = (time_t)t;
    struct tm tm;
    assert_non_null(localtime_r(&tt, &tm));
    return (int64_t)timegm(&tm);
}

static void s_local_oracle(const char *tz, const s_window_t *win, size_t nwin, int nexpr)
{
    s_set_tz(tz);
    static bool fires[4 * 86400 / 60 + 10];
    long fired = 0;
    for (int i = 0; i < nexpr; i++) {
        s_expr_t e;
        rf_cron_t c;
        s_gen(&e);
        s_check_parse(&e, &c);
        for (size_t k = 0; k < nwin; k++) {
            int64_t from = win[k].from, to = win[k].to, maxw = s_wall(from - 86400 - 60);
            assert_true((to - from) / 60 < (int64_t)(sizeof(fires) / sizeof(fires[0])));
            for (int64_t t = from - 86400; t <= to; t += 60) {
                int64_t w = s_wall(t);
                bool f = w > maxw && s_oracle_wall(&e, w);
                for (int64_t s = maxw + 60; !f && s < w; s += 60)
                    f = s_oracle_wall(&e, s); /* a skipped minute */
                if (w > maxw)
                    maxw = w;
                if (t < from)
                    continue;
                fires[(t - from) / 60] = f;
                fired += f;
                if (rf_cron_matches(&c, t, false) != f) {
                    char ts[64];
                    s_fmt(t, ts, sizeof(ts));
                    fail_msg("%s '%s' at %s: rf_cron_matches %d, the oracle %d", tz, e.text, ts, !f, f);
                }
            }
            /* rf_cron_next from random starts in the window */
            for (int r = 0; r < 8; r++) {
                int64_t after = from + (int64_t)(s_rand() % (uint64_t)(to - from - 86400));
                int64_t want = -1;
                for (int64_t t = after - after % 60 + 60; t <= to; t += 60)
                    if (fires[(t - from) / 60]) {
                        want = t;
                        break;
                    }
                int64_t got = rf_cron_next(&c, after, false);
                if (want >= 0 ? got != want : got >= 0 && got <= to) {
                    char a[64], g[64], w[64];
                    s_fmt(after, a, sizeof(a)), s_fmt(got, g, sizeof(g)), s_fmt(want, w, sizeof(w));
                    fail_msg("%s '%s' after %s: next %s, the oracle %s", tz, e.text, a, g, w);
                }
            }
        }
    }
    print_message("%s: %d expressions, %ld firing minutes checked\n", tz, nexpr, fired);
}

static void test_local_oracle(void **state)
{
    (void)state;
    s_rng = 777;
    /* windows of 3 days around each change */
    const s_window_t berlin[] = {
        {s_utc(2024, 3, 30, 0, 0), s_utc(2024, 4, 2, 0, 0)},
        {s_utc(2024, 10, 26, 0, 0), s_utc(2024, 10, 29, 0, 0)},
    };
    s_local_oracle("Europe/Berlin", berlin, 2, 150);
    const s_window_t lord_howe[] = {
        /* +10:30 <-> +11:00 at 02:00 */
        {s_utc(2024, 4, 5, 12, 0), s_utc(2024, 4, 8, 12, 0)},
        {s_utc(2024, 10, 4, 12, 0), s_utc(2024, 10, 7, 12, 0)},
    };
    s_local_oracle("Australia/Lord_Howe", lord_howe, 2, 60);
    const s_window_t sao_paulo[] = {
        /* changes at midnight (2018-11-04, 2019-02-17) */
        {s_utc(2018, 11, 3, 0, 0), s_utc(2018, 11, 6, 0, 0)},
        {s_utc(2019, 2, 16, 0, 0), s_utc(2019, 2, 19, 0, 0)},
    };
    s_local_oracle("America/Sao_Paulo", sao_paulo, 2, 60);
    const s_window_t apia[] = {
        /* 2011: an hour forward in September, then Dec 30 skipped */
        {s_utc(2011, 9, 23, 12, 0), s_utc(2011, 9, 26, 12, 0)},
        {s_utc(2011, 12, 29, 0, 0), s_utc(2011, 12, 31, 23, 0)},
        {s_utc(2011, 4, 1, 12, 0), s_utc(2011, 4, 4, 12, 0)},
    };
    s_local_oracle("Pacific/Apia", apia, 3, 60);
    /* Apia by hand: noon on Dec 30 2011 does not exist; it fires when
     * Dec 31 begins (10:00Z on the 30th) */
    s_expect_local("0 12 30 12 *", s_utc(2011, 12, 29, 0, 0), s_utc(2011, 12, 30, 10, 0));
    s_expect_local("0 12 30 12 *", s_utc(2011, 12, 30, 10, 0), s_utc(2012, 12, 29, 22, 0)); /* +14 */
    /* UTC mode ignores TZ */
    s_expect_next("0 12 30 12 *", s_utc(2011, 12, 29, 0, 0), s_utc(2011, 12, 30, 12, 0));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_accept),
        cmocka_unit_test(test_parse_refuse),
        cmocka_unit_test(test_next_vectors),
        cmocka_unit_test(test_oracle_utc),
        cmocka_unit_test(test_local_dst_berlin),
        cmocka_unit_test(test_local_oracle),
    };
    return cmocka_run_group_tests_name("rf_cron", tests, s_tz_setup, s_tz_teardown);
}
