/*  Unit tests for common/rf_chain: splitting a path at the keyword, parsing
 *  and validating chains (with the exact reasons), the JSON form the worker
 *  receives, and the canonical text form. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rf_chain.h"

/* ---- helpers ---------------------------------------------------------------- */

/* Splits `path` and checks the result; src/chain NULL means "no keyword". */
static void s_split(const char *path, const char *kw, const char *want_src, const char *want_chain)
{
    const char *src = NULL, *chain = NULL;
    size_t sl = 12345, cl = 12345;
    int rc = rf_chain_split(path, strlen(path), kw, &src, &sl, &chain, &cl);
    if (want_src == NULL) {
        if (rc != 0)
            fail_msg("'%s' should not split at '%s' (got src '%.*s')", path, kw, (int)sl, src);
        assert_null(src); /* outputs untouched */
        assert_int_equal(sl, 12345);
        return;
    }
    if (rc != 1)
        fail_msg("'%s' should split at '%s'", path, kw);
    if (sl != strlen(want_src) || memcmp(src, want_src, sl) != 0)
        fail_msg("'%s': src '%.*s', expected '%s'", path, (int)sl, src, want_src);
    if (cl != strlen(want_chain) || memcmp(chain, want_chain, cl) != 0)
        fail_msg("'%s': chain '%.*s', expected '%s'", path, (int)cl, chain, want_chain);
    /* both borrow from path */
    assert_ptr_equal(src, path);
    assert_true(chain >= path && chain <= path + strlen(path));
    assert_true(chain + cl == path + strlen(path));
}

static rf_chain_t s_parse_ctx(const char *text, const rf_chain_ctx_t *ctx)
{
    rf_chain_t c;
    char why[512] = "";
    if (rf_chain_parse(text, strlen(text), ctx, &c, why, sizeof(why)) != 0)
        fail_msg("'%s' should parse: %s", text, why);
    return c;
}

static rf_chain_t s_parse_ok(const char *text)
{
    return s_parse_ctx(text, NULL);
}

/* Parses `text` (from a heap copy of exactly its length, so ASan catches
 * any read outside it) and asserts it fails with exactly `want`. */
static void s_parse_bad_ctx(const char *text, size_t len, const rf_chain_ctx_t *ctx, const char *want)
{
    char *copy = malloc(len ? len : 1);
    assert_non_null(copy);
    memcpy(copy, text, len);
    rf_chain_t c;
    char why[512] = "";
    int rc = rf_chain_parse(copy, len, ctx, &c, why, sizeof(why));
    free(copy);
    if (rc != -1)
        fail_msg("'%.*s' should not parse", (int)len, text);
    if (strcmp(why, want) != 0)
        fail_msg("'%.*s': reason '%s', expected '%s'", (int)len, text, why, want);
}

static void s_parse_bad(const char *text, const char *want)
{
    s_parse_bad_ctx(text, strlen(text), NULL, want);
}


/* `text` formats canonically as `want`, and `want` parses back to the same chain. */
static void s_format_is_ctx(const char *text, const rf_chain_ctx_t *ctx, const char *want)
{
    rf_chain_t c = s_parse_ctx(text, ctx);
    char buf[1024];
    assert_int_equal(rf_chain_format(&c, buf, sizeof(buf)), 0);
    if (strcmp(buf, want) != 0)
        fail_msg("'%s' formats as '%s', expected '%s'", text, buf, want);
    if (c.n > 0) {
        rf_chain_t b = s_parse_ctx(buf, ctx);
        if (!rf_chain_equal(&c, &b))
            fail_msg("'%s': its canonical text '%s' parses to another chain", text, buf);
    }
}

static void s_format_is(const char *text, const char *want)
{
    s_format_is_ctx(text, NULL, want);
}

/* ---- split ------------------------------------------------------------------ */

static void test_split(void **state)
{
    (void)state;
    s_split("/photo.jpg/dims/resize/500x500/format/webp", "dims", "/photo.jpg", "resize/500x500/format/webp");
    s_split("/a/b/c.png/dims/optimize", "dims", "/a/b/c.png", "optimize");
    /* keyword at the end, with and without a trailing slash */
    s_split("/photo.jpg/dims", "dims", "/photo.jpg", "");
    s_split("/photo.jpg/dims/", "dims", "/photo.jpg", "");
    /* the first occurrence wins */
    s_split("/a/dims/dims/resize/1", "dims", "/a", "dims/resize/1");
    /* another keyword */
    s_split("/x.jpg/im/resize/10", "im", "/x.jpg", "resize/10");
    s_split("/x.jpg/dims/resize/10", "im", NULL, NULL);
    /* absent */
    s_split("/photo.jpg", "dims", NULL, NULL);
    s_split("/", "dims", NULL, NULL);
    s_split("", "dims", NULL, NULL);
    /* the keyword must be a whole segment */
    s_split("/a/dimsx/resize/1", "dims", NULL, NULL);
    s_split("/a/dimsx", "dims", NULL, NULL);
    s_split("/a/xdims/resize/1", "dims", NULL, NULL);
    s_split("/a.dims/resize/1", "dims", NULL, NULL);
    s_split("/a/dimsx/dims/resize/1", "dims", "/a/dimsx", "resize/1");
    /* keyword at position 0: the source would be empty */
    s_split("/dims/resize/500", "dims", NULL, NULL);
    s_split("/dims", "dims", NULL, NULL);
    s_split("dims/resize/500", "dims", NULL, NULL);
    /* a one-character source is enough */
    s_split("/a/dims/resize/5", "dims", "/a", "resize/5");
    s_split("a/dims", "dims", "a", "");
}

static void test_split_respects_len(void **state)
{
    (void)state;
    const char *path = "/a.jpg/dims/resize/1";
    const char *src, *chain;
    size_t sl, cl;
    /* the keyword lies beyond len */
    assert_int_equal(rf_chain_split(path, 6, "dims", &src, &sl, &chain, &cl), 0);
    /* cut inside the keyword: "/a.jpg/dim" */
    assert_int_equal(rf_chain_split(path, 10, "dims", &src, &sl, &chain, &cl), 0);
    /* cut right after it: "/a.jpg/dims" */
    assert_int_equal(rf_chain_split(path, 11, "dims", &src, &sl, &chain, &cl), 1);
    assert_int_equal(sl, 6);
    assert_int_equal(cl, 0);
    assert_ptr_equal(chain, path + 11);
    /* cut after the op: "/a.jpg/dims/resize" */
    assert_int_equal(rf_chain_split(path, 18, "dims", &src, &sl, &chain, &cl), 1);
    assert_int_equal(cl, 6);
    assert_memory_equal(chain, "resize", 6);
}

/* ---- parse: valid ----------------------------------------------------------- */

/* ---- parse ------------------------------------------------------------------- */

static void test_parse_resize(void **state)
{
    (void)state;
    rf_chain_t c = s_parse_ok("resize/500x500");
    assert_int_equal(c.n, 1);
    assert_int_equal(c.ops[0].kind, RF_OP_RESIZE);
    assert_int_equal(c.ops[0].w, 500);
    assert_int_equal(c.ops[0].h, 500);
    assert_int_equal(c.ops[0].fit, RF_FIT_INSIDE);
    static const struct {
        const char *text;
        int w, h;
        rf_fit_t fit;
    } cases[] = {
        {"resize/500", 500, 0, RF_FIT_INSIDE},      {"resize/500x", 500, 0, RF_FIT_INSIDE},
        {"resize/x300", 0, 300, RF_FIT_INSIDE},     {"resize/1x1", 1, 1, RF_FIT_INSIDE},
        {"resize/16384x16384", 16384, 16384, RF_FIT_INSIDE},
        {"resize/500x400^", 500, 400, RF_FIT_FILL}, {"resize/500x400!", 500, 400, RF_FIT_EXACT},
        {"resize/500x400>", 500, 400, RF_FIT_SHRINK}, {"resize/500x400<", 500, 400, RF_FIT_ENLARGE},
        {"resize/500<", 500, 0, RF_FIT_ENLARGE},    {"resize/x20>", 0, 20, RF_FIT_SHRINK},
        {"resize/640x480/", 640, 480, RF_FIT_INSIDE},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        c = s_parse_ok(cases[i].text);
        assert_int_equal(c.n, 1);
        if (c.ops[0].w != cases[i].w || c.ops[0].h != cases[i].h || c.ops[0].fit != cases[i].fit)
            fail_msg("'%s': %dx%d fit %d", cases[i].text, c.ops[0].w, c.ops[0].h, (int)c.ops[0].fit);
    }
}

static void test_parse_operations(void **state)
{
    (void)state;
    rf_chain_t c = s_parse_ok("crop/100x50+10+20/crop/30x40/thumbnail/200x100/gravity/smart/rotate/270/flip/flop/"
                              "blur/1.5/background/FF8000/extend/800x600/sharpen/grayscale/strip/format/avif");
    assert_int_equal(c.n, 14);
    assert_int_equal(c.ops[0].kind, RF_OP_CROP);
    assert_int_equal(c.ops[0].w, 100);
    assert_int_equal(c.ops[0].h, 50);
    assert_int_equal(c.ops[0].x, 10);
    assert_int_equal(c.ops[0].y, 20);
    assert_int_equal(c.ops[1].x, -1); /* at gravity */
    assert_int_equal(c.ops[1].y, -1);
    assert_int_equal(c.ops[2].kind, RF_OP_THUMBNAIL);
    assert_int_equal(c.ops[3].gravity, RF_GRAV_SMART);
    assert_int_equal(c.ops[4].angle, 270);
    assert_int_equal(c.ops[5].kind, RF_OP_FLIP);
    assert_int_equal(c.ops[6].kind, RF_OP_FLOP);
    assert_true(c.ops[7].sigma > 1.49 && c.ops[7].sigma < 1.51);
    assert_int_equal(c.ops[8].rgb, 0xff8000);
    assert_int_equal(c.ops[9].kind, RF_OP_EXTEND);
    assert_int_equal(c.ops[9].w, 800);
    assert_int_equal(c.ops[10].kind, RF_OP_SHARPEN);
    assert_int_equal(c.ops[11].kind, RF_OP_GRAYSCALE);
    assert_int_equal(c.ops[12].kind, RF_OP_STRIP);
    assert_int_equal(c.ops[13].format, RF_FMT_AVIF);
    for (int g = RF_GRAV_CENTER; g <= RF_GRAV_SMART; g++) {
        char t[64];
        snprintf(t, sizeof(t), "gravity/%s", rf_gravity_name((rf_gravity_t)g));
        assert_int_equal(s_parse_ok(t).ops[0].gravity, g);
    }
    static const char *const fmts[] = {"jpeg", "jpg", "png", "webp", "avif", "gif"};
    static const rf_format_t want[] = {RF_FMT_JPEG, RF_FMT_JPEG, RF_FMT_PNG, RF_FMT_WEBP, RF_FMT_AVIF, RF_FMT_GIF};
    for (size_t i = 0; i < 6; i++) {
        char t[32];
        snprintf(t, sizeof(t), "format/%s", fmts[i]);
        c = s_parse_ok(t);
        assert_int_equal(c.ops[0].format, want[i]);
        assert_false(c.ops[0].auto_format);
    }
    c = s_parse_ok("format/auto");
    assert_int_equal(c.ops[0].format, RF_FMT_AUTO);
    assert_true(c.ops[0].auto_format);
    assert_false(c.ops[0].negotiated);
    c = s_parse_ok("quality/1/quality/100/optimize/");
    assert_int_equal(c.n, 3);
    assert_int_equal(c.ops[0].quality, 1);
    assert_int_equal(c.ops[1].quality, 100);
    assert_int_equal(c.ops[2].kind, RF_OP_OPTIMIZE);
    /* a leading slash is allowed (presets and rules are written "/optimize", as the seed does) */
    assert_int_equal(s_parse_ok("/optimize").n, 1);

    /* exactly the maximum */
    char text[512] = "";
    for (int i = 0; i < RF_CHAIN_MAX_OPS; i++)
        strcat(text, i ? "/quality/50" : "quality/50");
    assert_int_equal(s_parse_ok(text).n, RF_CHAIN_MAX_OPS);

    /* only len bytes are read */
    char why[64];
    assert_int_equal(rf_chain_parse("resize/10/format/gif", 9, NULL, &c, why, sizeof(why)), 0);
    assert_int_equal(c.n, 1);
    assert_int_equal(c.ops[0].w, 10);
}

static void test_parse_bad(void **state)
{
    (void)state;
    s_parse_bad("", "empty function chain");
    s_parse_bad("/", "empty function chain");
    s_parse_bad("///", "empty function chain");
#define VALID_OPS                                                                                                      \
    "(valid: resize, crop, thumbnail, gravity, rotate, flip, flop, format, quality, optimize, strip, sharpen, blur, " \
    "grayscale, background, extend, preset, byoriginal, split)"
    s_parse_bad("Resize/5", "unknown operation 'Resize' " VALID_OPS);
    s_parse_bad("resizex/5", "unknown operation 'resizex' " VALID_OPS);
    s_parse_bad("resize/10x10/optimized", "unknown operation 'optimized' " VALID_OPS);
    s_parse_bad("resize/10//format/png", "empty segment in function chain");
    s_parse_bad("resize", "resize needs an argument: WxH, W, Wx or xH (sides 1..16384), optionally ending in ^ ! > or <");
    s_parse_bad("resize//500", "resize needs an argument: WxH, W, Wx or xH (sides 1..16384), optionally ending in ^ ! > or <");
    s_parse_bad("format", "format needs an argument: jpeg, jpg, png, webp, avif, gif or auto");
    s_parse_bad("resize/10/quality", "quality needs an argument: 1..100");

    static const struct {
        const char *text, *why;
    } bad[] = {
        {"quality/0", "quality: '0' is not 1..100"},
        {"quality/101", "quality: '101' is not 1..100"},
        {"quality/5.5", "quality: '5.5' is not 1..100"},
        {"quality/9999999999", "quality: '9999999999' is not 1..100"},
        {"resize/0x0", "resize: '0x0' is not WxH, W, Wx or xH (sides 1..16384), optionally ending in ^ ! > or <"},
        {"resize/16385x1", "resize: '16385x1' is not WxH, W, Wx or xH (sides 1..16384), optionally ending in ^ ! > or <"},
        {"resize/x", "resize: 'x' is not WxH, W, Wx or xH (sides 1..16384), optionally ending in ^ ! > or <"},
        {"resize/10X10", "resize: '10X10' is not WxH, W, Wx or xH (sides 1..16384), optionally ending in ^ ! > or <"},
        {"resize/500^", "resize: '500^' is not WxH, W, Wx or xH (sides 1..16384), optionally ending in ^ ! > or <"},
        {"resize/x5!", "resize: 'x5!' is not WxH, W, Wx or xH (sides 1..16384), optionally ending in ^ ! > or <"},
        {"resize/5x5^^", "resize: '5x5^^' is not WxH, W, Wx or xH (sides 1..16384), optionally ending in ^ ! > or <"},
        {"crop/10", "crop: '10' is not WxH or WxH+X+Y (sides 1..16384, offsets 0..65535)"},
        {"crop/10x10+5", "crop: '10x10+5' is not WxH or WxH+X+Y (sides 1..16384, offsets 0..65535)"},
        {"crop/10x10+5+-1", "crop: '10x10+5+-1' is not WxH or WxH+X+Y (sides 1..16384, offsets 0..65535)"},
        {"crop/10x10+65536+0", "crop: '10x10+65536+0' is not WxH or WxH+X+Y (sides 1..16384, offsets 0..65535)"},
        {"thumbnail/100", "thumbnail: '100' is not WxH (sides 1..16384)"},
        {"thumbnail/x100", "thumbnail: 'x100' is not WxH (sides 1..16384)"},
        {"gravity/up", "gravity: 'up' is not center, north, northeast, east, southeast, south, southwest, west, "
                       "northwest or smart"},
        {"rotate/45", "rotate: '45' is not 90, 180 or 270"},
        {"rotate/360", "rotate: '360' is not 90, 180 or 270"},
        {"rotate/0", "rotate: '0' is not 90, 180 or 270"},
        {"format/JPEG", "format: 'JPEG' is not jpeg, jpg, png, webp, avif, gif or auto"},
        {"format/keep", "format: 'keep' is not jpeg, jpg, png, webp, avif, gif or auto"},
        {"format/auto:auto", "format: 'auto:auto' is not jpeg, jpg, png, webp, avif, gif or auto"},
        {"format/auto:bmp", "format: 'auto:bmp' is not jpeg, jpg, png, webp, avif, gif or auto"},
        {"blur/0", "blur: '0' is not a sigma 0.1..100 with at most two decimals"},
        {"blur/100.5", "blur: '100.5' is not a sigma 0.1..100 with at most two decimals"},
        {"blur/1.234", "blur: '1.234' is not a sigma 0.1..100 with at most two decimals"},
        {"blur/1e3", "blur: '1e3' is not a sigma 0.1..100 with at most two decimals"},
        {"blur/nan", "blur: 'nan' is not a sigma 0.1..100 with at most two decimals"},
        {"blur/.5", "blur: '.5' is not a sigma 0.1..100 with at most two decimals"},
        {"background/fff", "background: 'fff' is not RRGGBB (six hex digits)"},
        {"background/gg0000", "background: 'gg0000' is not RRGGBB (six hex digits)"},
        {"extend/100", "extend: '100' is not WxH (sides 1..16384)"},
        {"preset/x", "unknown preset 'x'"},
        {"byoriginal/limit-1200", "unknown byoriginal rule set 'limit-1200'"},
        {"split/500", "split: '500' is not H/N or H/manifest.json (tile height 1..16384, tile index 0..65535)"},
        {"split/0/1", "split: '0/1' is not H/N or H/manifest.json (tile height 1..16384, tile index 0..65535)"},
        {"split/500/x", "split: '500/x' is not H/N or H/manifest.json (tile height 1..16384, tile index 0..65535)"},
        {"split/500/manifest.xml",
         "split: '500/manifest.xml' is not H/N or H/manifest.json (tile height 1..16384, tile index 0..65535)"},
        {"split/500/1/format/png", "split must be the last operation"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        s_parse_bad(bad[i].text, bad[i].why);
    /* an embedded NUL must not cut the name short */
    s_parse_bad_ctx("format/png\0x", 12, NULL, "format: 'png' is not jpeg, jpg, png, webp, avif, gif or auto");

    /* reasons quote at most 40 bytes of the offending text */
    s_parse_bad("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                "unknown operation 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa' " VALID_OPS);

    /* one operation too many */
    char text[512] = "";
    for (int i = 0; i <= RF_CHAIN_MAX_OPS; i++)
        strcat(text, i ? "/optimize" : "optimize");
    s_parse_bad(text, "function chain longer than 16 operations");
}

static void test_parse_why_optional(void **state)
{
    (void)state;
    rf_chain_t c;
    assert_int_equal(rf_chain_parse("blurry", 6, NULL, &c, NULL, 0), -1);
    char why[8];
    assert_int_equal(rf_chain_parse("format/bmp", 10, NULL, &c, why, sizeof(why)), -1);
    assert_string_equal(why, "format:"); /* truncated, NUL-terminated */
}

/* ---- presets and byoriginal ----------------------------------------------------- */

static const rf_preset_t s_presets[] = {
    {"card", "thumbnail/300x200/gravity/smart/format/webp"},
    {"slashed", "/optimize/"},
    {"nested", "preset/card"},
    {"broken", "resize/0"},
};

static rf_byorig_t s_limit1200(void)
{
    rf_byorig_t b = {.name = "limit-1200", .n = 2};
    b.rules[0].max_width = 1200;
    snprintf(b.rules[0].chain, sizeof(b.rules[0].chain), "/optimize");
    snprintf(b.rules[1].chain, sizeof(b.rules[1].chain), "/resize/1024x768/optimize");
    return b;
}

static void test_presets(void **state)
{
    (void)state;
    rf_chain_ctx_t ctx = {.presets = s_presets, .n_presets = 4};
    rf_chain_t c = s_parse_ctx("resize/1000/preset/card/quality/70", &ctx);
    assert_int_equal(c.n, 5); /* inlined */
    assert_int_equal(c.ops[1].kind, RF_OP_THUMBNAIL);
    assert_int_equal(c.ops[3].format, RF_FMT_WEBP);
    s_format_is_ctx("preset/card", &ctx, "thumbnail/300x200/gravity/smart/format/webp");
    s_format_is_ctx("preset/slashed", &ctx, "optimize");
    s_parse_bad_ctx("preset/nested", 13, &ctx, "preset 'nested': preset 'card' inside a preset or byoriginal rule: not allowed");
    s_parse_bad_ctx("preset/broken", 13, &ctx,
                    "preset 'broken': resize: '0' is not WxH, W, Wx or xH (sides 1..16384), optionally ending in ^ ! > or <");
    s_parse_bad_ctx("preset/none", 11, &ctx, "unknown preset 'none'");
    /* a preset counts against the operation limit */
    char text[512] = "";
    for (int i = 0; i < RF_CHAIN_MAX_OPS - 2; i++)
        strcat(text, "optimize/");
    strcat(text, "preset/card");
    s_parse_bad_ctx(text, strlen(text), &ctx, "function chain longer than 16 operations (with preset 'card')");
}

static void test_byoriginal(void **state)
{
    (void)state;
    rf_byorig_t sets[] = {s_limit1200()};
    rf_chain_ctx_t ctx = {.byorig = sets, .n_byorig = 1};
    rf_chain_t c = s_parse_ctx("byoriginal/limit-1200/format/webp", &ctx);
    assert_int_equal(c.n, 2);
    assert_int_equal(c.ops[0].kind, RF_OP_BYORIGINAL);
    assert_string_equal(c.byorig.name, "limit-1200");
    assert_int_equal(c.byorig.n, 2);
    char buf[256], buf2[256];
    assert_int_equal(rf_chain_format(&c, buf, sizeof(buf)), 0);
    assert_true(strncmp(buf, "byoriginal/limit-1200:", 22) == 0 && strlen(buf) == 30 + 12);
    assert_string_equal(buf + 30, "/format/webp");
    s_format_is_ctx(buf, &ctx, buf); /* the canonical form parses back (the hash is recomputed) */
    /* another rule set under the same name: another key */
    sets[0].rules[0].max_width = 1000;
    rf_chain_t d = s_parse_ctx("byoriginal/limit-1200/format/webp", &ctx);
    assert_int_equal(rf_chain_format(&d, buf2, sizeof(buf2)), 0);
    assert_string_not_equal(buf, buf2);
    sets[0] = s_limit1200();
    s_parse_bad_ctx("byoriginal/limit-1200/byoriginal/limit-1200", 43, &ctx, "at most one byoriginal per chain");

    /* the seed's example: at most 1200 wide -> optimize only; else resize */
    rf_chain_t pick;
    char why[256];
    assert_int_equal(rf_byorig_pick(&c.byorig, 1200, 5000, 1 << 20, RF_FMT_JPEG, &pick, why, sizeof(why)), 0);
    assert_int_equal(pick.n, 1);
    assert_int_equal(pick.ops[0].kind, RF_OP_OPTIMIZE);
    assert_int_equal(rf_byorig_pick(&c.byorig, 1201, 10, 100, RF_FMT_PNG, &pick, why, sizeof(why)), 0);
    assert_int_equal(pick.n, 2);
    assert_int_equal(pick.ops[0].w, 1024);
    assert_int_equal(pick.ops[0].h, 768);
    /* height, bytes and format conditions; no default */
    rf_byorig_t b = {.name = "strict", .n = 2};
    b.rules[0].max_height = 100;
    b.rules[0].max_bytes = 5000;
    snprintf(b.rules[0].chain, sizeof(b.rules[0].chain), "quality/10");
    b.rules[1].format = RF_FMT_PNG;
    snprintf(b.rules[1].chain, sizeof(b.rules[1].chain), "format/webp");
    assert_int_equal(rf_byorig_pick(&b, 9999, 100, 5000, RF_FMT_JPEG, &pick, why, sizeof(why)), 0);
    assert_int_equal(pick.ops[0].quality, 10);
    assert_int_equal(rf_byorig_pick(&b, 9999, 100, 5001, RF_FMT_PNG, &pick, why, sizeof(why)), 0);
    assert_int_equal(pick.ops[0].format, RF_FMT_WEBP);
    assert_int_equal(rf_byorig_pick(&b, 10, 101, 1, RF_FMT_JPEG, &pick, why, sizeof(why)), -1);
    assert_string_equal(why, "byoriginal 'strict': no rule holds for a 10x101 original (and no default rule)");
}

/* ---- format/auto ----------------------------------------------------------------- */

static void test_negotiate(void **state)
{
    (void)state;
    static const struct {
        const char *accept;
        const char *want;
    } cases[] = {
        {NULL, "format/auto:keep"},
        {"", "format/auto:keep"},
        {"image/avif,image/webp,image/apng,image/*,*/*;q=0.8", "format/auto:avif"},
        {"image/webp,*/*", "format/auto:webp"},
        {"IMAGE/WEBP", "format/auto:webp"},
        {"image/avif;q=0, image/webp;q=0.5", "format/auto:webp"},
        {"image/avif; q=0.000 ,image/webp;q=0.0", "format/auto:keep"},
        {"image/avif;q=0.1", "format/auto:avif"},
        {"image/*,*/*", "format/auto:keep"}, /* wildcards do not count */
        {"image/avifx, image/webpx", "format/auto:keep"},
        {"text/html, image/avif", "format/auto:avif"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        rf_chain_t c = s_parse_ok("format/auto");
        assert_true(rf_chain_has_auto(&c));
        rf_chain_negotiate(&c, cases[i].accept, cases[i].accept ? strlen(cases[i].accept) : 0);
        char buf[64];
        assert_int_equal(rf_chain_format(&c, buf, sizeof(buf)), 0);
        if (strcmp(buf, cases[i].want) != 0)
            fail_msg("Accept '%s': '%s', expected '%s'", cases[i].accept ? cases[i].accept : "(none)", buf,
                     cases[i].want);
        rf_chain_t back = s_parse_ok(buf); /* the negotiated form parses back as itself */
        assert_true(rf_chain_equal(&c, &back));
    }
    assert_false(rf_chain_has_auto(&(rf_chain_t){.n = 0}));
    rf_chain_t c = s_parse_ok("format/webp");
    assert_false(rf_chain_has_auto(&c));
}

/* ---- JSON ------------------------------------------------------------------- */

static void test_json_roundtrip(void **state)
{
    (void)state;
    static const char *const chains[] = {
        "resize/500x500^",
        "resize/x300</crop/10x10+1+2/crop/5x5/thumbnail/9x9/gravity/northwest/rotate/90",
        "format/jpg/quality/1/flip/flop/blur/0.25/background/00ff00/extend/20x20/sharpen/grayscale/strip/optimize",
        "format/auto",
        "format/auto:avif",
        "resize/100/split/10/3",
        "split/10/manifest.json",
    };
    for (size_t i = 0; i < sizeof(chains) / sizeof(chains[0]); i++) {
        rf_chain_t a = s_parse_ok(chains[i]), b;
        json_t *j = rf_chain_to_json(&a);
        assert_non_null(j);
        assert_int_equal(json_array_size(j), a.n);
        char why[256] = "";
        if (rf_chain_from_json(j, &b, why, sizeof(why)) != 0)
            fail_msg("'%s': from_json failed: %s", chains[i], why);
        if (!rf_chain_equal(&a, &b))
            fail_msg("'%s': JSON round trip changed the chain", chains[i]);
        json_decref(j);
    }
    /* byoriginal travels with its rules */
    rf_byorig_t sets[] = {s_limit1200()};
    rf_chain_ctx_t ctx = {.byorig = sets, .n_byorig = 1};
    rf_chain_t a = s_parse_ctx("quality/50/byoriginal/limit-1200", &ctx), b;
    json_t *j = rf_chain_to_json(&a);
    char *text = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    assert_string_equal(text, "[\"quality/50\",{\"name\":\"limit-1200\",\"op\":\"byoriginal\",\"rules\":["
                              "{\"bytes\":0,\"chain\":\"/optimize\",\"format\":\"keep\",\"height\":0,\"width\":1200},"
                              "{\"bytes\":0,\"chain\":\"/resize/1024x768/optimize\",\"format\":\"keep\",\"height\":0,"
                              "\"width\":0}]}]");
    free(text);
    char why[256];
    assert_int_equal(rf_chain_from_json(j, &b, why, sizeof(why)), 0);
    assert_true(rf_chain_equal(&a, &b));

    json_decref(j);
}

static void s_json_bad(const char *json, const char *want)
{
    json_error_t e;
    json_t *j = json_loads(json, JSON_DECODE_ANY, &e);
    if (j == NULL)
        fail_msg("test JSON does not parse: %s: %s", json, e.text);
    rf_chain_t c;
    char why[512] = "";
    int rc = rf_chain_from_json(j, &c, why, sizeof(why));
    json_decref(j);
    if (rc != -1)
        fail_msg("%s should be rejected", json);
    if (strcmp(why, want) != 0)
        fail_msg("%s: reason '%s', expected '%s'", json, why, want);
}

static void test_json_bad(void **state)
{
    (void)state;
    s_json_bad("{\"op\":\"optimize\"}", "chain must be a JSON array");
    s_json_bad("\"resize/10\"", "chain must be a JSON array");
    s_json_bad("[]", "chain must have 1..16 operations");
    s_json_bad("[1]", "operation 0 is not a string");
    s_json_bad("[\"optimize/optimize\"]", "operation 0 is not one operation");
    s_json_bad("[\"resize/0\"]",
               "resize: '0' is not WxH, W, Wx or xH (sides 1..16384), optionally ending in ^ ! > or <");
    s_json_bad("[\"preset/card\"]", "preset 'card' inside a preset or byoriginal rule: not allowed");
    s_json_bad("[\"byoriginal/x\"]", "byoriginal inside a preset or byoriginal rule: not allowed");
    s_json_bad("[{\"op\":\"resize\"}]", "operation 0: an object must be the one byoriginal");
    s_json_bad("[{\"op\":\"byoriginal\",\"name\":\"a\",\"rules\":[]}]", "byoriginal needs a name and 1..16 rules");
    s_json_bad("[{\"op\":\"byoriginal\",\"name\":\"a\",\"rules\":[{\"width\":-1,\"height\":0,\"bytes\":0,"
               "\"format\":\"keep\",\"chain\":\"optimize\"}]}]",
               "byoriginal rule 0 is malformed");
    s_json_bad("[{\"op\":\"byoriginal\",\"name\":\"a\",\"rules\":[{\"width\":1,\"height\":0,\"bytes\":0,"
               "\"format\":\"bmp\",\"chain\":\"optimize\"}]}]",
               "byoriginal rule 0: bad format 'bmp'");
    s_json_bad("[{\"op\":\"byoriginal\",\"name\":\"a\",\"rules\":[{\"width\":1,\"height\":0,\"bytes\":0,"
               "\"format\":\"keep\",\"chain\":\"byoriginal/a\"}]}]",
               "byoriginal rule 0: byoriginal inside a preset or byoriginal rule: not allowed");
    rf_chain_t c;
    assert_int_equal(rf_chain_from_json(NULL, &c, NULL, 0), -1);
}

/* ---- canonical text --------------------------------------------------------- */

static void test_format(void **state)
{
    (void)state;
    s_format_is("resize/500x500/format/webp/quality/60", "resize/500x500/format/webp/quality/60");
    s_format_is("resize/500", "resize/500x");
    s_format_is("resize/500<", "resize/500x<");
    s_format_is("resize/x300>/", "resize/x300>");
    s_format_is("format/jpg", "format/jpeg");
    s_format_is("resize/0050x007!", "resize/50x7!");
    s_format_is("quality/007/optimize", "quality/7/optimize");
    s_format_is("crop/010x10+0+007/crop/3x4", "crop/10x10+0+7/crop/3x4");
    s_format_is("blur/1.50/blur/2/blur/0.25", "blur/1.5/blur/2/blur/0.25");
    s_format_is("background/ABCdef", "background/abcdef");
    s_format_is("resize/1000/split/0500/02", "resize/1000x/split/500/2");
    s_format_is("format/webp/split/500/manifest.json", "format/webp/split/500/manifest.json");
    s_format_is("gravity/smart/thumbnail/10x20/extend/30x40/rotate/180", "gravity/smart/thumbnail/10x20/extend/30x40/rotate/180");

    /* empty chain */
    rf_chain_t empty = {.n = 0};
    char buf[16] = "x";
    assert_int_equal(rf_chain_format(&empty, buf, sizeof(buf)), 0);
    assert_string_equal(buf, "");
}

static void test_format_short_buffer(void **state)
{
    (void)state;
    rf_chain_t c = s_parse_ok("optimize");
    char buf[16];
    assert_int_equal(rf_chain_format(&c, buf, 9), 0); /* "optimize" + NUL */
    assert_string_equal(buf, "optimize");
    assert_int_equal(rf_chain_format(&c, buf, 8), -1);
    assert_int_equal(rf_chain_format(&c, buf, 0), -1);
    c = s_parse_ok("resize/1x1/optimize"); /* 19 bytes */
    char big[32];
    assert_int_equal(rf_chain_format(&c, big, 20), 0);
    assert_string_equal(big, "resize/1x1/optimize");
    assert_int_equal(rf_chain_format(&c, big, 19), -1);
    assert_int_equal(rf_chain_format(&c, big, 11), -1); /* the separator does not fit */
    assert_int_equal(rf_chain_format(&c, big, 12), -1); /* the second op does not */
}

static void test_format_helpers(void **state)
{
    (void)state;
    static const rf_format_t all[] = {RF_FMT_JPEG, RF_FMT_PNG, RF_FMT_WEBP, RF_FMT_AVIF, RF_FMT_GIF};
    static const char *const names[] = {"jpeg", "png", "webp", "avif", "gif"};
    static const char *const mimes[] = {"image/jpeg", "image/png", "image/webp", "image/avif", "image/gif"};
    for (size_t i = 0; i < 5; i++) {
        assert_string_equal(rf_format_name(all[i]), names[i]);
        assert_string_equal(rf_format_mime(all[i]), mimes[i]);
        assert_int_equal(rf_format_parse(names[i]), all[i]);
    }
    assert_string_equal(rf_format_name(RF_FMT_KEEP), "keep");
    assert_string_equal(rf_format_name(RF_FMT_AUTO), "auto");
    assert_null(rf_format_mime(RF_FMT_KEEP));
    assert_null(rf_format_mime(RF_FMT_AUTO));
    assert_int_equal(rf_format_parse("jpg"), RF_FMT_JPEG);
    assert_int_equal(rf_format_parse("bmp"), RF_FMT_KEEP);
    assert_int_equal(rf_format_parse(""), RF_FMT_KEEP);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split),
        cmocka_unit_test(test_split_respects_len),
        cmocka_unit_test(test_parse_resize),
        cmocka_unit_test(test_parse_operations),
        cmocka_unit_test(test_parse_bad),
        cmocka_unit_test(test_parse_why_optional),
        cmocka_unit_test(test_presets),
        cmocka_unit_test(test_byoriginal),
        cmocka_unit_test(test_negotiate),
        cmocka_unit_test(test_json_roundtrip),
        cmocka_unit_test(test_json_bad),
        cmocka_unit_test(test_format),
        cmocka_unit_test(test_format_short_buffer),
        cmocka_unit_test(test_format_helpers),
    };
    return cmocka_run_group_tests_name("rf_chain", tests, NULL, NULL);
}
