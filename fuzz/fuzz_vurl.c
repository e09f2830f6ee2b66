/*  libFuzzer target for common/rf_vparse.c: the times of thumbnail URLs,
 *  the segment names of mp4hls URLs, the ranges of ?trimming= and the
 *  query parameters they come in, and the whole tails of thumbnail, sprite
 *  and trimming URLs (also storgate task functions). All from clients.
 *
 *  The whole input is each parser's text. Besides memory safety it
 *  abort()s when:
 *    - a time is negative or beyond 7 days, or differs from a model written
 *      with strtod for plain seconds, or printing it back ("S.mmm") does not
 *      parse to the same value;
 *    - a segment number is out of bounds or does not print back to the text;
 *    - ranges are more than 64, a start is negative or an end is not after
 *      its start, or a refusal has no reason;
 *    - a query value points outside its input or is not preceded by
 *      "NAME=";
 *    - a thumbnail, sprite or trim parsed from a tail is out of its bounds,
 *      a refusal has no reason, or an accepted one makes no worker chain. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rf_vparse.h"

static void s_check_time(const char *s, size_t n)
{
    int64_t ms = rf_vparse_time(s, n);
    if (ms < -1 || ms > RF_VPARSE_MAX_MS)
        abort();
    if (ms < 0)
        return;
    char back[40];
    int l = snprintf(back, sizeof(back), "%lld.%03lld", (long long)(ms / 1000), (long long)(ms % 1000));
    if (rf_vparse_time(back, (size_t)l) != ms)
        abort();
    if (memchr(s, ':', n) == NULL) { /* plain seconds: the model is strtod over digits and one dot */
        char buf[64];
        if (n >= sizeof(buf))
            abort(); /* at most 12 + 1 + 3 characters parse */
        memcpy(buf, s, n);
        buf[n] = '\0';
        if (strspn(buf, "0123456789.") != n)
            abort();
        double d = strtod(buf, NULL);
        if ((int64_t)(d * 1000 + 0.5) != ms)
            abort();
    }
}

static void s_check_segment(const char *s, size_t n)
{
    int k = rf_vparse_segment(s, n, "seg-", ".ts");
    if (k < -1 || k >= RF_VPARSE_SEG_MAX)
        abort();
    if (k >= 0) {
        char back[32];
        int l = snprintf(back, sizeof(back), "seg-%d.ts", k);
        if ((size_t)l != n || memcmp(back, s, n) != 0)
            abort();
    }
}

static void s_check_ranges(const char *s, size_t n)
{
    int64_t ms[RF_VPARSE_MAX_RANGES][2];
    int count = -1;
    char why[200] = "";
    int r = rf_vparse_ranges(s, n, ms, &count, why, sizeof(why));
    if (r < 0) {
        if (why[0] == '\0')
            abort();
        return;
    }
    if (r != 0 || count < 1 || count > RF_VPARSE_MAX_RANGES)
        abort();
    for (int i = 0; i < count; i++)
        if (ms[i][0] < 0 || ms[i][0] > RF_VPARSE_MAX_MS || (ms[i][1] != -1 && ms[i][1] <= ms[i][0]))
            abort();
}

static void s_check_query(const char *s, size_t n)
{
    static const char *const names[] = {"trimming", "start", "end", "t"};
    for (int i = 0; i < 4; i++) {
        const char *v = NULL;
        size_t vl = 0;
        if (!rf_vparse_query_param(s, n, names[i], &v, &vl))
            continue;
        size_t nl = strlen(names[i]);
        if (v < s + nl + 1 || v + vl > s + n || memcmp(v - nl - 1, names[i], nl) != 0 || v[-1] != '=' ||
            memchr(v, '&', vl) != NULL)
            abort();
    }
}

static void s_check_tails(const char *s, size_t n)
{
    char why[300] = "";
    rf_vthumb_t t;
    if (rf_vparse_thumb(s, n, &t, why, sizeof(why)) == 0) {
        if (t.ms < 0 || t.ms > RF_VPARSE_MAX_MS || t.width < 0 || t.width > 16384 || t.height < 0 ||
            t.height > 16384 || t.format == NULL)
            abort();
        json_t *j = rf_vthumb_json(&t, 85);
        if (j == NULL)
            abort();
        json_decref(j);
    } else if (why[0] == '\0') {
        abort();
    }
    why[0] = '\0';
    rf_vsprite_t sp;
    if (rf_vparse_sprite(s, n, &sp, why, sizeof(why)) == 0) {
        if (sp.every_ms < 500 || sp.every_ms > 3600000 || sp.cols < 1 || sp.rows < 1 || sp.cols * sp.rows > 100 ||
            sp.tile_w < 0 || sp.tile_w > 640 || sp.tile_h < 0 || sp.tile_h > 640 || sp.sheet < -1)
            abort();
    } else if (why[0] == '\0') {
        abort();
    }
    why[0] = '\0';
    rf_vtrim_t tr = {.accurate = true};
    if (rf_vparse_trim(s, n, "trimming", &tr, why, sizeof(why)) == 0) {
        if (tr.n < 1 || tr.n > RF_VPARSE_MAX_RANGES)
            abort();
        for (int i = 0; i < tr.n; i++)
            if (tr.ms[i][0] < 0 || (tr.ms[i][1] != -1 && tr.ms[i][1] <= tr.ms[i][0]))
                abort();
        json_t *j = rf_vtrim_json(&tr);
        if (j == NULL)
            abort();
        json_decref(j);
    } else if (why[0] == '\0') {
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    s_check_time(s, size);
    s_check_segment(s, size);
    s_check_ranges(s, size);
    s_check_query(s, size);
    s_check_tails(s, size);
    return 0;
}
