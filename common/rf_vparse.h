/*  rf_vparse — the pure parsers of the video functions' URLs (no h2o, no
 *  request) and the worker chains they make: fuzzed by fuzz/fuzz_vurl.c, used by the gateway (gw_func.c)
 *  and storgate's task functions (rf_sgfunc.c). Every input is
 *  hostile; every result is bounded.
 */
#ifndef RF_VPARSE_H
#define RF_VPARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#define RF_VPARSE_MAX_MS (7LL * 24 * 3600 * 1000) /* 7 days */
#define RF_VPARSE_MAX_RANGES 64                   /* VID_MAX_RANGES */
#define RF_VPARSE_SEG_MAX 1000000                 /* segment numbers below this */

/* Digits only in [s, s+n) (1..12 of them) as a number below `limit`; -1 when not. */
int64_t rf_vparse_digits(const char *s, size_t n, int64_t limit);

/* A time: seconds ("30", "12.5") or [hh:]mm:ss[.fff], at most 3 decimals
 * and 7 days. Milliseconds, or -1. */
int64_t rf_vparse_time(const char *s, size_t n);

/* Plain seconds (no ':'), as rf_vparse_time; -1 when not. */
int64_t rf_vparse_seconds(const char *s, size_t n);

/* "PREFIX" N "SUFFIX" with N decimal, no leading zero, below
 * RF_VPARSE_SEG_MAX: N, or -1. */
int rf_vparse_segment(const char *s, size_t n, const char *prefix, const char *suffix);

/* "A-B[,C-D…]" in seconds: B after A, or empty (to the end: -1). Fills
 * ms[i][0..1] and *count. 0, or -1 with the reason in why (the text it
 * names is at most 40 bytes). */
int rf_vparse_ranges(const char *s, size_t n, int64_t ms[][2], int *count, char *why, size_t why_len);

/* The value of parameter `name` in a query ("?a=1&b=2" or "a=1&b=2"):
 * *out and *out_len, returns 1; 0 when absent. */
int rf_vparse_query_param(const char *q, size_t qlen, const char *name, const char **out, size_t *out_len);

/* A thumbnail's URL tail, "T[/WxH][/jpeg|png|webp][/keyframe]": T a time
 * (rf_vparse_time), a box of sides up to 16384 (one may be 0: free). */
typedef struct {
    int64_t ms; /* the time, milliseconds */
    int width, height;
    const char *format; /* "jpeg", "png" or "webp" (static) */
    bool keyframe;      /* the keyframe at or before T, not the frame at T */
} rf_vthumb_t;

/* Parses [s, s+len) into *t. 0, or -1 with the reason in why. */
int rf_vparse_thumb(const char *s, size_t len, rf_vthumb_t *t, char *why, size_t why_len);

/* The video worker's chain for *t (proto/rfb.md: {"op": "thumbnail"}); caller owns; NULL out of memory. */
json_t *rf_vthumb_json(const rf_vthumb_t *t, int quality);

#define RF_VSPRITE_VTT "sprite.vtt"

/* A sprite's URL tail, "EVERY/COLSxROWS/WxH/(N.jpg|sprite.vtt)": seconds
 * between tiles (0.5..3600), at most 100 tiles, tile sides up to 640 (one
 * may be 0: from the video's aspect). */
typedef struct {
    int64_t every_ms;
    int cols, rows, tile_w, tile_h;
    int sheet; /* from 0; -1: the WebVTT index */
} rf_vsprite_t;

/* Parses [s, s+len) into *t. 0, or -1 with the reason in why. */
int rf_vparse_sprite(const char *s, size_t len, rf_vsprite_t *t, char *why, size_t why_len);

/* The video worker's chain for *t ({"op": "sprite"}); caller owns; NULL out of memory. */
json_t *rf_vsprite_json(const rf_vsprite_t *t, int quality);

/* Trimming ranges and how to cut them (the video worker's {"op": "trim"}). */
typedef struct {
    int n;
    int64_t ms[RF_VPARSE_MAX_RANGES][2]; /* start, end (-1: to the end) */
    int max_ratio;                       /* percent of the source over which the original is sent; 0: none */
    bool audio;                          /* an .m4a: audio/mp4 */
    bool accurate;                       /* cut on frames (else on keyframes) */
} rf_vtrim_t;

/* The ranges of query q ("?PARAM=A-B[,C-D…]", percent-encoded or not, or
 * nginx's "?start=A&end=B") and its "accurate=0|1" into *t, whose
 * max_ratio, audio and accurate the caller has set to its defaults. 0, or
 * -1 with the reason in why. */
int rf_vparse_trim(const char *q, size_t qlen, const char *param, rf_vtrim_t *t, char *why, size_t why_len);

/* The video worker's chain for *t; caller owns; NULL out of memory. */
json_t *rf_vtrim_json(const rf_vtrim_t *t);

#endif
