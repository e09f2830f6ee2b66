/*  rf_cron — 5-field cron expressions: parsing, matching, next run.
 *
 *  storgate's onBatch events run on a `schedule` ("*\/5 * * * *",
 *  "0 1 * * *"); the scheduler needs "when is the next run after now".
 *  No Debian library does this well, so it is written here: pure C, no
 *  allocation, no global mutable state, no recursion, fuzzed.
 *
 *  Syntax — "MIN HOUR DOM MON DOW", fields separated by spaces or tabs
 *  (leading and trailing ones allowed):
 *
 *    field         values
 *    1 minute      0-59
 *    2 hour        0-23
 *    3 day-of-month 1-31
 *    4 month       1-12 or jan..dec
 *    5 day-of-week 0-7 or sun..sat (0 and 7 are Sunday)
 *
 *  Each field is a comma-separated list of items; an item is
 *    *          every value            A          one value
 *    A-B        A to B (A <= B)        *\/N        every Nth value from the minimum
 *    A-B/N      every Nth from A to B  A/N        A-max/N (as Vixie cron)
 *  Names are three letters, any case, also in ranges ("mon-fri", "JAN-Mar/2");
 *  in day-of-week a range ending in the name "sun" ends at 7 ("fri-sun" =
 *  5-7). A step N is 1..span of the field (60, 24, 31, 12, 7).
 *  Macros: @yearly = @annually = "0 0 1 1 *", @monthly = "0 0 1 * *",
 *  @weekly = "0 0 * * 0", @daily = @midnight = "0 0 * * *",
 *  @hourly = "0 * * * *" (any case; @reboot is refused).
 *
 *  Day matching (Vixie / POSIX): when both day-of-month and day-of-week are
 *  restricted, a day matches if EITHER matches ("30 4 1,15 * 5" = the 1st,
 *  the 15th and every Friday); when one of them is unrestricted, only the
 *  other counts. A field is unrestricted exactly when it is written `*` or
 *  `*\/1` — "*\/2" in day-of-month is restricted (Vixie treats every field
 *  starting with `*` as unrestricted; we do not), and so is "1-31".
 *
 *  Time: rf_cron_next / rf_cron_matches work in UTC (utc = true, the
 *  recommended mode) or in local time (utc = false: the TZ of the process,
 *  through localtime_r; call tzset() after changing TZ). Local time around
 *  daylight-saving changes:
 *    - a wall-clock time that does not exist (spring forward: 02:30 in
 *      Europe/Berlin on the last Sunday of March) is not lost: every
 *      matching time in the gap fires once, together, at the first instant
 *      after the change (03:00 CEST) — so a daily "30 2 * * *" still runs
 *      that day (what ISC/Vixie cron does for fixed-time jobs);
 *    - a wall-clock time that happens twice (fall back: 02:00-02:59 in
 *      Berlin on the last Sunday of October) fires once, at its first
 *      occurrence (CEST); the repeated hour is not run again.
 *  Zones whose offset changes twice within about a day are approximated.
 *  Times are unix seconds in [0, RF_CRON_TIME_MAX] (1970 to 9999).
 */
#ifndef RF_CRON_H
#define RF_CRON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RF_CRON_TEXT_MAX 256            /* longest expression, in bytes */
#define RF_CRON_TIME_MAX 253402300799LL /* 9999-12-31T23:59:59Z */
#define RF_CRON_HORIZON_YEARS 9         /* rf_cron_next looks this far */

/* A parsed expression: one bit per allowed value. */
typedef struct {
    uint64_t minute; /* bits 0-59 */
    uint32_t hour;   /* bits 0-23 */
    uint32_t dom;    /* bits 1-31 */
    uint32_t month;  /* bits 1-12 */
    uint8_t dow;     /* bits 0-6, 0 = Sunday (a 7 written is folded into 0) */
    bool dom_star;   /* day-of-month written `*` or `*\/1` */
    bool dow_star;   /* day-of-week written `*` or `*\/1` */
} rf_cron_t;

/* Parses the NUL-terminated `text` (at most RF_CRON_TEXT_MAX bytes before
 * the NUL; the rest is not read) into *out. 0, or -1 with a one-line
 * reason naming the field and the token in why[why_len] (why may be NULL),
 * e.g. "field 2 (hour): 24 is out of range 0-23". *out is written only on
 * success. The caller owns text, out and why; nothing is allocated or
 * kept. */
int rf_cron_parse(const char *text, rf_cron_t *out, char *why, size_t why_len);

/* The same over text[0..len) (no NUL needed; a NUL byte inside is an
 * invalid character). len > RF_CRON_TEXT_MAX is refused. */
int rf_cron_parse_n(const char *text, size_t len, rf_cron_t *out, char *why, size_t why_len);

/* The first time strictly after `after` (unix seconds) at which `c` fires,
 * at second 0 of a (wall-clock) minute, in UTC or local time as described
 * above. -1 when `after` is outside [0, RF_CRON_TIME_MAX], when the
 * expression never matches ("0 0 31 2 *", "0 0 30 2 *": nothing within
 * RF_CRON_HORIZON_YEARS years, which covers the 8 years between two
 * February 29ths across 2100), or when localtime_r fails. Skips by
 * month, day, hour and minute: a few hundred steps at most. Pure: `c` is
 * the caller's, nothing is allocated. */
int64_t rf_cron_next(const rf_cron_t *c, int64_t t_after, bool utc);

/* Whether `c` fires at time t: t is at second 0 of a wall-clock minute
 * whose fields match (in local time: at its first occurrence), or — local
 * time only — t is the first minute after a spring-forward gap in which
 * some skipped minute matches. Exactly the times rf_cron_next returns.
 * False for t outside [0, RF_CRON_TIME_MAX]. Pure, as rf_cron_next. */
bool rf_cron_matches(const rf_cron_t *c, int64_t t, bool utc);

#endif
