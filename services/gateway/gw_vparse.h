/*  gw_vparse — the pure parsers of the video functions' URLs (no h2o, no
 *  request): fuzzed by fuzz/fuzz_vurl.c, used by gw_func.c. Every input is
 *  hostile; every result is bounded.
 */
#ifndef GW_VPARSE_H
#define GW_VPARSE_H

#include <stddef.h>
#include <stdint.h>

#define GW_VPARSE_MAX_MS (7LL * 24 * 3600 * 1000) /* 7 days */
#define GW_VPARSE_MAX_RANGES 64                   /* VID_MAX_RANGES */
#define GW_VPARSE_SEG_MAX 1000000                 /* segment numbers below this */

/* Digits only in [s, s+n) (1..12 of them) as a number below `limit`; -1 when not. */
int64_t gw_vparse_digits(const char *s, size_t n, int64_t limit);

/* A time: seconds ("30", "12.5") or [hh:]mm:ss[.fff], at most 3 decimals
 * and 7 days. Milliseconds, or -1. */
int64_t gw_vparse_time(const char *s, size_t n);

/* Plain seconds (no ':'), as gw_vparse_time; -1 when not. */
int64_t gw_vparse_seconds(const char *s, size_t n);

/* "PREFIX" N "SUFFIX" with N decimal, no leading zero, below
 * GW_VPARSE_SEG_MAX: N, or -1. */
int gw_vparse_segment(const char *s, size_t n, const char *prefix, const char *suffix);

/* "A-B[,C-D…]" in seconds: B after A, or empty (to the end: -1). Fills
 * ms[i][0..1] and *count. 0, or -1 with the reason in why (the text it
 * names is at most 40 bytes). */
int gw_vparse_ranges(const char *s, size_t n, int64_t ms[][2], int *count, char *why, size_t why_len);

/* The value of parameter `name` in a query ("?a=1&b=2" or "a=1&b=2"):
 * *out and *out_len, returns 1; 0 when absent. */
int gw_vparse_query_param(const char *q, size_t qlen, const char *name, const char **out, size_t *out_len);

#endif
