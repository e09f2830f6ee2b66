/*  Unit tests for services/image-worker/img_core: every source image is
 *  made in-process with libvips (noise, so that encoders have real work and
 *  quality changes sizes; solid colour quadrants where pixels are checked;
 *  animations as stacked frames), transformed, and the output decoded
 *  again. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vips/vips.h>

#include <jansson.h>

#include "img_core.h"
#include "rf_chain.h"

/* image_worker.max_output_pixels and max_frames defaults (rf_config.def) */
#define DEFAULT_BUDGET 40000000
#define DEFAULT_FRAMES 256

typedef struct {
    void *data;
    size_t len;
} s_buf_t;

/* A w×h noisy sRGB image, with an alpha channel when `alpha` (its value).
 * Caller unrefs. */
static VipsImage *s_noise(int w, int h, int alpha)
{
    VipsImage *bands[4] = {NULL, NULL, NULL, NULL}, *joined = NULL, *u8 = NULL, *out = NULL;
    int n = alpha >= 0 ? 4 : 3;
    for (int i = 0; i < 3; i++)
        assert_int_equal(vips_gaussnoise(&bands[i], w, h, "mean", 128.0, "sigma", 50.0, NULL), 0);
    if (alpha >= 0)
        assert_int_equal(vips_black(&bands[3], w, h, NULL), 0);
    if (alpha > 0) {
        VipsImage *a = NULL;
        assert_int_equal(vips_linear1(bands[3], &a, 1.0, (double)alpha, NULL), 0);
        g_object_unref(bands[3]);
        bands[3] = a;
    }
    assert_int_equal(vips_bandjoin(bands, &joined, n, NULL), 0);
    assert_int_equal(vips_cast_uchar(joined, &u8, NULL), 0);
    assert_int_equal(vips_copy(u8, &out, "interpretation", VIPS_INTERPRETATION_sRGB, NULL), 0);
    for (int i = 0; i < n; i++)
        g_object_unref(bands[i]);
    g_object_unref(joined);
    g_object_unref(u8);
    return out;
}

/* A w×h sRGB image of one colour 0xRRGGBB. Caller unrefs. */
static VipsImage *s_solid(int w, int h, uint32_t rgb)
{
    VipsImage *black = NULL, *lin = NULL, *u8 = NULL, *out = NULL;
    double a[3] = {1, 1, 1}, b[3] = {rgb >> 16 & 0xff, rgb >> 8 & 0xff, rgb & 0xff};
    assert_int_equal(vips_black(&black, w, h, "bands", 3, NULL), 0);
    assert_int_equal(vips_linear(black, &lin, a, b, 3, NULL), 0);
    assert_int_equal(vips_cast_uchar(lin, &u8, NULL), 0);
    assert_int_equal(vips_copy(u8, &out, "interpretation", VIPS_INTERPRETATION_sRGB, NULL), 0);
    g_object_unref(black);
    g_object_unref(lin);
    g_object_unref(u8);
    return out;
}

/* Quadrant colours of s_quadrants: top-left, top-right, bottom-left, bottom-right. */
#define Q_TL 0xff0000u
#define Q_TR 0x00ff00u
#define Q_BL 0x0000ffu
#define Q_BR 0xffff00u

/* A w×h image whose quadrants are Q_TL, Q_TR, Q_BL, Q_BR (w, h even). Caller unrefs. */
static VipsImage *s_quadrants(int w, int h)
{
    VipsImage *q[4] = {s_solid(w / 2, h / 2, Q_TL), s_solid(w / 2, h / 2, Q_TR), s_solid(w / 2, h / 2, Q_BL),
                       s_solid(w / 2, h / 2, Q_BR)};
    VipsImage *out = NULL;
    assert_int_equal(vips_arrayjoin(q, &out, 4, "across", 2, NULL), 0);
    for (int i = 0; i < 4; i++)
        g_object_unref(q[i]);
    return out;
}

/* Encodes img by suffix (".jpg", ".png[compression=1]", …). Caller g_frees. */
static s_buf_t s_encode(VipsImage *img, const char *suffix)
{
    s_buf_t b = {NULL, 0};
    if (vips_image_write_to_buffer(img, suffix, &b.data, &b.len, NULL) != 0)
        fail_msg("encode %s: %s", suffix, vips_error_buffer());
    return b;
}

/* Encodes img (taken: unreffed) by suffix. Caller g_frees. */
static s_buf_t s_encode_take(VipsImage *img, const char *suffix)
{
    s_buf_t b = s_encode(img, suffix);
    g_object_unref(img);
    return b;
}

static s_buf_t s_make(int w, int h, int alpha, const char *suffix)
{
    return s_encode_take(s_noise(w, h, alpha), suffix);
}

/* An animation (suffix ".gif" or ".webp") of `n` w×h frames, frame i of
 * grey level 40*i (so frames differ), 100 ms each, looping. Caller g_frees. */
static s_buf_t s_animation(int w, int h, int n, const char *suffix)
{
    VipsImage *frames[16], *strip = NULL, *out = NULL;
    int delays[16];
    assert_true(n <= 16);
    for (int i = 0; i < n; i++) {
        uint32_t v = (uint32_t)(40 * i) & 0xff;
        frames[i] = s_solid(w, h, v << 16 | v << 8 | v);
        delays[i] = 100;
    }
    assert_int_equal(vips_arrayjoin(frames, &strip, n, "across", 1, NULL), 0);
    assert_int_equal(vips_copy(strip, &out, NULL), 0);
    vips_image_set_int(out, "page-height", h);
    vips_image_set_array_int(out, "delay", delays, n);
    vips_image_set_int(out, "loop", 0);
    for (int i = 0; i < n; i++)
        g_object_unref(frames[i]);
    g_object_unref(strip);
    return s_encode_take(out, suffix);
}

static rf_chain_t s_chain(const char *text)
{
    rf_chain_t c;
    char why[128];
    if (rf_chain_parse(text, strlen(text), NULL, &c, why, sizeof(why)) < 0)
        fail_msg("chain %s: %s", text, why);
    return c;
}

/* Runs the transform of a parsed chain; asserts the status; returns the result. */
static img_result_t s_run_chain(s_buf_t src, const rf_chain_t *chain, const img_opts_t *opts, int want_status)
{
    img_result_t out;
    char why[256], text[512] = "?";
    int status = img_transform(src.data, src.len, chain, opts, &out, why, sizeof(why));
    rf_chain_format(chain, text, sizeof(text));
    if (status != want_status)
        fail_msg("%s: status %d, want %d (%s)", text, status, want_status, status == 200 ? "" : why);
    if (status != 200) {
        assert_null(out.data);
        assert_true(strlen(why) > 0);
        assert_null(strchr(why, '\n'));
    }
    return out;
}

/* s_run_chain with the defaults' budget and frames and a reason check:
 * when want_why is not NULL, the failure's reason must contain it. */
static img_result_t s_run_why(s_buf_t src, const char *chain_text, int64_t max_pixels, int want_status,
                              const char *want_why)
{
    rf_chain_t chain = s_chain(chain_text);
    img_opts_t opts = {.max_pixels = max_pixels, .max_output_pixels = DEFAULT_BUDGET, .max_frames = DEFAULT_FRAMES};
    if (want_why == NULL)
        return s_run_chain(src, &chain, &opts, want_status);
    img_result_t out;
    char why[256] = "";
    int status = img_transform(src.data, src.len, &chain, &opts, &out, why, sizeof(why));
    if (status != want_status || strstr(why, want_why) == NULL)
        fail_msg("%s: status %d (%s), want %d with '%s'", chain_text, status, why, want_status, want_why);
    return out;
}

static img_result_t s_run(s_buf_t src, const char *chain_text, int64_t max_pixels, int want_status)
{
    return s_run_why(src, chain_text, max_pixels, want_status, NULL);
}

/* Decodes an output buffer (the caller unrefs) and checks the loader. */
static VipsImage *s_decode(const img_result_t *r, const char *loader_prefix)
{
    const char *loader = vips_foreign_find_load_buffer(r->data, r->len);
    assert_non_null(loader);
    if (strncmp(loader, loader_prefix, strlen(loader_prefix)) != 0)
        fail_msg("output loader %s, want %s", loader, loader_prefix);
    VipsImage *img = vips_image_new_from_buffer(r->data, r->len, "", NULL);
    assert_non_null(img);
    return img;
}

static void s_assert_dims(const img_result_t *r, const char *loader_prefix, int w, int h)
{
    VipsImage *img = s_decode(r, loader_prefix);
    if (vips_image_get_width(img) != w || vips_image_get_height(img) != h)
        fail_msg("got %dx%d, want %dx%d", vips_image_get_width(img), vips_image_get_height(img), w, h);
    assert_int_equal(r->width, w);
    assert_int_equal(r->height, h);
    g_object_unref(img);
}

/* Runs a chain expected to give a w×h image decoded by `loader`. */
static void s_expect_dims(s_buf_t src, const char *chain_text, const char *loader, int w, int h)
{
    img_result_t r = s_run(src, chain_text, 0, 200);
    s_assert_dims(&r, loader, w, h);
    img_result_clear(&r);
}

static int s_has_field(const img_result_t *r, const char *name)
{
    VipsImage *img = vips_image_new_from_buffer(r->data, r->len, "", NULL);
    assert_non_null(img);
    int has = vips_image_get_typeof(img, name) != 0;
    g_object_unref(img);
    return has;
}

/* Decodes every pixel (not just the header) of an output. */
static void s_assert_decodes(const img_result_t *r)
{
    VipsImage *img = vips_image_new_from_buffer(r->data, r->len, "fail=TRUE", NULL);
    assert_non_null(img);
    double avg = -1;
    if (vips_avg(img, &avg, NULL) != 0)
        fail_msg("output does not decode: %s", vips_error_buffer());
    g_object_unref(img);
}

/* Asserts that pixel x,y of the decoded output is 0xRRGGBB, give or take a
 * few levels (resampling, png of a jpeg). */
static void s_assert_pixel(const img_result_t *r, int x, int y, uint32_t rgb)
{
    VipsImage *img = vips_image_new_from_buffer(r->data, r->len, "", NULL);
    assert_non_null(img);
    double *v = NULL;
    int n = 0;
    if (vips_getpoint(img, &v, &n, x, y, NULL) != 0)
        fail_msg("getpoint %d,%d: %s", x, y, vips_error_buffer());
    double want[3] = {rgb >> 16 & 0xff, rgb >> 8 & 0xff, rgb & 0xff};
    for (int i = 0; i < 3 && i < n; i++)
        if (v[i] < want[i] - 12 || v[i] > want[i] + 12)
            fail_msg("pixel %d,%d band %d is %.0f, want %06x", x, y, i, v[i], (unsigned)rgb);
    g_free(v);
    g_object_unref(img);
}

/* The number of frames (pages) in an encoded result. */
static int s_pages(const img_result_t *r)
{
    VipsImage *img = vips_image_new_from_buffer(r->data, r->len, "", NULL);
    assert_non_null(img);
    int n = vips_image_get_n_pages(img);
    g_object_unref(img);
    return n;
}

static s_buf_t s_jpeg2000x1000;

static int s_setup(void **state)
{
    (void)state;
    if (img_init(0) != 0)
        return -1;
    s_jpeg2000x1000 = s_make(2000, 1000, -1, ".jpg[Q=90]");
    return 0;
}

static int s_teardown(void **state)
{
    (void)state;
    g_free(s_jpeg2000x1000.data);
    img_shutdown();
    return 0;
}

/* ---- resize ------------------------------------------------------------------------------ */

static void test_resize_box(void **state)
{
    (void)state;
    img_result_t r = s_run(s_jpeg2000x1000, "resize/500x500", 0, 200);
    assert_int_equal(r.format, RF_FMT_JPEG);
    assert_string_equal(r.mime, "image/jpeg");
    s_assert_dims(&r, "VipsForeignLoadJpeg", 500, 250);
    assert_int_equal(r.frames, 1);
    assert_string_equal(r.frames_note, "");
    img_result_clear(&r);
    assert_null(r.data);
    img_result_clear(&r); /* twice is safe */
}

static void test_resize_one_side(void **state)
{
    (void)state;
    s_expect_dims(s_jpeg2000x1000, "resize/x100", "VipsForeignLoadJpeg", 200, 100);
    s_expect_dims(s_jpeg2000x1000, "resize/300", "VipsForeignLoadJpeg", 300, 150);
}

static void test_resize_twice(void **state)
{
    (void)state;
    s_expect_dims(s_jpeg2000x1000, "resize/1000x1000/resize/100x100", "VipsForeignLoadJpeg", 100, 50);
}

/* Only < and ! enlarge (this test replaced test_resize_upscales: libvips's
 * default size mode used to fill the box). */
static void test_resize_never_enlarges_by_default(void **state)
{
    (void)state;
    s_buf_t small = s_make(100, 50, -1, ".jpg");
    s_expect_dims(small, "resize/400x400", "VipsForeignLoadJpeg", 100, 50);
    s_expect_dims(small, "resize/400x400^", "VipsForeignLoadJpeg", 100, 50);
    s_expect_dims(small, "resize/400x400>", "VipsForeignLoadJpeg", 100, 50);
    s_expect_dims(small, "resize/400x400<", "VipsForeignLoadJpeg", 400, 200);
    s_expect_dims(small, "resize/400x400!", "VipsForeignLoadJpeg", 400, 400);
    /* ... but not past the budget, checked before resizing */
    rf_chain_t chain = s_chain("resize/4000x4000<");
    img_opts_t opts = {.max_output_pixels = 1000000};
    s_run_chain(small, &chain, &opts, 400);
    g_free(small.data);
}

/* The fit modifiers on a 3640x2400 source (and a small one for <). */
static void test_fit_modifiers(void **state)
{
    (void)state;
    s_buf_t big = s_encode_take(s_quadrants(3640, 2400), ".jpg");
    s_expect_dims(big, "resize/500x500", "VipsForeignLoadJpeg", 500, 330);
    s_expect_dims(big, "resize/500x500>", "VipsForeignLoadJpeg", 500, 330);
    s_expect_dims(big, "resize/500x500^", "VipsForeignLoadJpeg", 758, 500);
    s_expect_dims(big, "resize/500x2000^", "VipsForeignLoadJpeg", 3033, 2000);
    s_expect_dims(big, "resize/500x500!", "VipsForeignLoadJpeg", 500, 500);
    s_expect_dims(big, "resize/12000x", "VipsForeignLoadJpeg", 3640, 2400);
    s_expect_dims(big, "resize/500x500<", "VipsForeignLoadJpeg", 3640, 2400); /* larger: < leaves it */
    s_run_why(big, "resize/12000x<", 0, 400, "result would be 12000x7912 pixels, over the budget 40000000");
    img_result_t r = s_run(big, "resize/5000x5000!", 0, 200); /* 25 MP: within the budget */
    s_assert_dims(&r, "VipsForeignLoadJpeg", 5000, 5000);
    img_result_clear(&r);
    g_free(big.data);

    s_buf_t small = s_make(100, 50, -1, ".png");
    s_expect_dims(small, "resize/200x200<", "VipsForeignLoadPng", 200, 100);
    s_expect_dims(small, "resize/x200<", "VipsForeignLoadPng", 400, 200);
    s_expect_dims(small, "resize/300x20<", "VipsForeignLoadPng", 100, 50); /* taller than the box */
    g_free(small.data);
}

/* ---- formats -------------------------------------------------------------------------------- */

/* Runs a chain on the 2000x1000 jpeg expecting a w×h result in `fmt`
 * (decoded by `loader`, announced with its mime type). Caller clears. */
static img_result_t s_expect_format(const char *chain, rf_format_t fmt, const char *loader, int w, int h)
{
    img_result_t r = s_run(s_jpeg2000x1000, chain, 0, 200);
    assert_int_equal(r.format, fmt);
    assert_string_equal(r.mime, rf_format_mime(fmt));
    s_assert_dims(&r, loader, w, h);
    s_assert_decodes(&r);
    return r;
}

/* format/F for jpeg, png, webp and gif (avif: test_format_avif). */
static void test_formats(void **state)
{
    (void)state;
    static const struct {
        const char *chain, *loader, *mime;
        rf_format_t fmt;
        int w, h;
    } cases[] = {{"resize/200x200/format/webp", "VipsForeignLoadWebp", "image/webp", RF_FMT_WEBP, 200, 100},
                 {"format/png/resize/100", "VipsForeignLoadPng", "image/png", RF_FMT_PNG, 100, 50},
                 {"resize/200/format/gif", "VipsForeignLoadNsgif", "image/gif", RF_FMT_GIF, 200, 100},
                 {"format/gif/resize/300/format/jpg", "VipsForeignLoadJpeg", "image/jpeg", RF_FMT_JPEG, 300, 150}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        img_result_t r = s_expect_format(cases[i].chain, cases[i].fmt, cases[i].loader, cases[i].w, cases[i].h);
        assert_string_equal(r.mime, cases[i].mime);
        img_result_clear(&r);
    }
}

static void test_format_avif(void **state)
{
    (void)state;
    img_result_t r = s_expect_format("resize/300x300/format/avif", RF_FMT_AVIF, "VipsForeignLoadHeif", 300, 150);
    assert_string_equal(r.mime, "image/avif");
    VipsImage *img = s_decode(&r, "VipsForeignLoadHeif");
    const char *comp = NULL;
    assert_int_equal(vips_image_get_string(img, "heif-compression", &comp), 0);
    assert_string_equal(comp, "av1");
    g_object_unref(img);
    /* an AVIF source stays AVIF without a format op */
    s_buf_t avif = {r.data, r.len};
    img_result_t again = s_run(avif, "resize/100", 0, 200);
    assert_int_equal(again.format, RF_FMT_AVIF);
    s_assert_dims(&again, "VipsForeignLoadHeif", 100, 50);
    img_result_clear(&again);
    img_result_clear(&r);
}

/* format/auto the gateway did not negotiate, and auto:keep, keep the
 * source's format; auto:webp is webp. */
static void test_format_auto(void **state)
{
    (void)state;
    s_buf_t png = s_make(100, 80, -1, ".png");
    img_result_t r = s_run(png, "format/auto", 0, 200);
    assert_int_equal(r.format, RF_FMT_PNG);
    img_result_clear(&r);
    r = s_run(png, "format/webp/format/auto:keep", 0, 200); /* the last wins */
    assert_int_equal(r.format, RF_FMT_PNG);
    img_result_clear(&r);
    r = s_run(png, "format/auto:webp", 0, 200);
    assert_int_equal(r.format, RF_FMT_WEBP);
    s_assert_dims(&r, "VipsForeignLoadWebp", 100, 80);
    img_result_clear(&r);
    g_free(png.data);
}

static void test_format_kept_without_format_op(void **state)
{
    (void)state;
    s_buf_t png = s_make(300, 200, -1, ".png");
    img_result_t r = s_run(png, "resize/150x150", 0, 200);
    assert_int_equal(r.format, RF_FMT_PNG);
    s_assert_dims(&r, "VipsForeignLoadPng", 150, 100);
    img_result_clear(&r);
    g_free(png.data);

    s_buf_t webp = s_make(300, 200, -1, ".webp");
    r = s_run(webp, "quality/50", 0, 200); /* no resize: the sequential path */
    assert_int_equal(r.format, RF_FMT_WEBP);
    s_assert_dims(&r, "VipsForeignLoadWebp", 300, 200);
    img_result_clear(&r);
    g_free(webp.data);

    s_buf_t gif = s_make(120, 80, -1, ".gif"); /* gif is now one we write */
    r = s_run(gif, "resize/60", 0, 200);
    assert_int_equal(r.format, RF_FMT_GIF);
    s_assert_dims(&r, "VipsForeignLoadNsgif", 60, 40);
    img_result_clear(&r);
    g_free(gif.data);
}

/* Other sources default to jpeg when opaque, png when they have alpha. */
static void test_other_source_formats(void **state)
{
    (void)state;
    s_buf_t tiff = s_make(120, 80, -1, ".tif");
    img_result_t r = s_run(tiff, "resize/60", 0, 200);
    assert_int_equal(r.format, RF_FMT_JPEG);
    s_assert_dims(&r, "VipsForeignLoadJpeg", 60, 40);
    img_result_clear(&r);
    g_free(tiff.data);

    s_buf_t tiff_alpha = s_make(120, 80, 128, ".tif");
    r = s_run(tiff_alpha, "resize/60", 0, 200);
    assert_int_equal(r.format, RF_FMT_PNG);
    s_assert_dims(&r, "VipsForeignLoadPng", 60, 40);
    img_result_clear(&r);
    g_free(tiff_alpha.data);
}

static void test_quality(void **state)
{
    (void)state;
    const char *pairs[][2] = {{"resize/800/quality/10", "resize/800/quality/95"},
                              {"resize/800/format/webp/quality/10", "resize/800/format/webp/quality/95"},
                              {"resize/400/format/avif/quality/10", "resize/400/format/avif/quality/95"}};
    for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
        img_result_t lo = s_run(s_jpeg2000x1000, pairs[i][0], 0, 200);
        img_result_t hi = s_run(s_jpeg2000x1000, pairs[i][1], 0, 200);
        if (!(lo.len < hi.len))
            fail_msg("%s gave %zu bytes, %s %zu", pairs[i][0], lo.len, pairs[i][1], hi.len);
        img_result_clear(&lo);
        img_result_clear(&hi);
    }
}

/* ---- metadata ----------------------------------------------------------------------------------- */

static s_buf_t s_jpeg_with_exif(void)
{
    VipsImage *img = s_noise(400, 300, -1);
    vips_image_set_string(img, "exif-ifd0-ImageDescription", "refract test");
    s_buf_t src = s_encode_take(img, ".jpg");
    img_result_t tmp = {.data = src.data, .len = src.len};
    assert_true(s_has_field(&tmp, "exif-data")); /* the test image really has EXIF */
    return src;
}

/* Every chain drops EXIF and XMP, and the output decodes. */
static void s_assert_stripped(s_buf_t src, const char *const *chains, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        img_result_t r = s_run(src, chains[i], 0, 200);
        if (s_has_field(&r, "exif-data") || s_has_field(&r, "xmp-data"))
            fail_msg("%s kept the EXIF", chains[i]);
        s_assert_decodes(&r);
        img_result_clear(&r);
    }
}

static void test_optimize_strips_exif(void **state)
{
    (void)state;
    s_buf_t src = s_jpeg_with_exif();
    const char *keep[] = {"resize/200", "format/webp", "quality/50"};
    for (size_t i = 0; i < sizeof(keep) / sizeof(keep[0]); i++) {
        img_result_t r = s_run(src, keep[i], 0, 200);
        if (!s_has_field(&r, "exif-data"))
            fail_msg("%s lost the EXIF without optimize", keep[i]);
        img_result_clear(&r);
    }
    const char *strip[] = {"optimize", "resize/200/optimize", "optimize/format/webp", "optimize/format/png"};
    s_assert_stripped(src, strip, sizeof(strip) / sizeof(strip[0]));
    g_free(src.data);

    /* a WebP with alpha keeps a valid VP8X/ALPH layout after its metadata chunks go */
    s_buf_t rgba = s_make(200, 100, 200, ".png");
    img_result_t r = s_run(rgba, "optimize/format/webp", 0, 200);
    assert_false(s_has_field(&r, "exif-data"));
    VipsImage *dec = s_decode(&r, "VipsForeignLoadWebp");
    assert_int_equal(vips_image_get_bands(dec), 4);
    g_object_unref(dec);
    s_assert_decodes(&r);
    img_result_clear(&r);
    g_free(rgba.data);
}

/* strip drops metadata like optimize, without the encoder tuning. */
static void test_strip(void **state)
{
    (void)state;
    s_buf_t src = s_jpeg_with_exif();
    const char *strip[] = {"strip", "resize/200/strip/format/webp", "strip/format/avif", "strip/format/png"};
    s_assert_stripped(src, strip, sizeof(strip) / sizeof(strip[0]));
    /* jpeg: optimised Huffman tables with optimize only */
    img_result_t s = s_run(src, "strip", 0, 200), o = s_run(src, "optimize", 0, 200);
    if (!(o.len < s.len))
        fail_msg("strip gave %zu bytes, optimize %zu", s.len, o.len);
    img_result_clear(&s);
    img_result_clear(&o);
    g_free(src.data);
}

/* EXIF orientation 6 (rotate 90° cw) is applied, with and without resize. */
static void test_orientation(void **state)
{
    (void)state;
    VipsImage *img = s_quadrants(200, 100);
    vips_image_set_int(img, "orientation", 6);
    s_buf_t src = s_encode_take(img, ".jpg[Q=95]");
    img_result_t r = s_run(src, "format/png", 0, 200);
    s_assert_dims(&r, "VipsForeignLoadPng", 100, 200);
    s_assert_pixel(&r, 10, 10, Q_BL); /* 90° clockwise: the bottom-left corner is now top-left */
    s_assert_pixel(&r, 90, 190, Q_TR);
    img_result_clear(&r);
    s_expect_dims(src, "resize/50x50", "VipsForeignLoadJpeg", 25, 50);
    s_expect_dims(src, "crop/100x100+0+0", "VipsForeignLoadJpeg", 100, 100); /* operations see it upright */
    g_free(src.data);
}

/* ---- decoding failures and limits ----------------------------------------------------------------- */

static void test_undecodable_is_415(void **state)
{
    (void)state;
    unsigned char junk[4096];
    unsigned int seed = 42;
    for (size_t i = 0; i < sizeof(junk); i++)
        junk[i] = (unsigned char)rand_r(&seed);
    s_buf_t src = {junk, sizeof(junk)};
    s_run(src, "resize/10", 0, 415);
    s_buf_t empty = {junk, 0};
    s_run(empty, "resize/10", 0, 415);
    /* a JPEG signature with nothing after it */
    unsigned char trunc[] = {0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10, 'J', 'F', 'I', 'F', 0};
    s_buf_t t = {trunc, sizeof(trunc)};
    s_run(t, "format/png", 0, 415);
}

/* The first 20 KB of a photo: a header that parses and pixels that stop.
 * Every path through the pipeline says 415, never a grey-bottomed image. */
static void test_truncated_jpeg_is_415(void **state)
{
    (void)state;
    assert_true(s_jpeg2000x1000.len > 100 * 1024);
    s_buf_t cut = {s_jpeg2000x1000.data, 20 * 1024};
    const char *chains[] = {"resize/500x500",     "format/png",  "optimize",
                            "crop/100x100+0+900", "rotate/90",   "thumbnail/100x100/gravity/smart",
                            "blur/2/format/webp", "resize/x100<"};
    for (size_t i = 0; i < sizeof(chains) / sizeof(chains[0]); i++)
        s_run(cut, chains[i], 0, 415);
    /* the same photo whole is fine */
    img_result_t r = s_run(s_jpeg2000x1000, "crop/100x100+0+900", 0, 200);
    img_result_clear(&r);
}

static int s_always_stop(void *arg)
{
    (void)arg;
    return 1;
}

/* Only the smart-crop guard's thread is told to stop: the rest of the job
 * runs as if its deadline were far. */
static int s_stop_in_guard(void *arg)
{
    (void)arg;
    char name[16] = "";
    pthread_getname_np(pthread_self(), name, sizeof(name));
    return strcmp(name, "img-stop-guard") == 0;
}

/* A job that must stop answers 504 on every path: also where a failure
 * would re-decode the source to tell a broken source from a failed
 * transform (the truncated photo: 504, not 415, and no second decode). */
static void test_stopped_is_504(void **state)
{
    (void)state;
    img_opts_t opts = {.max_output_pixels = DEFAULT_BUDGET, .should_stop = s_always_stop};
    s_buf_t cut = {s_jpeg2000x1000.data, 20 * 1024};
    const char *chains[] = {"resize/500x500", "rotate/90", "thumbnail/100x100/gravity/smart", "format/webp"};
    for (size_t i = 0; i < sizeof(chains) / sizeof(chains[0]); i++) {
        rf_chain_t chain = s_chain(chains[i]);
        s_run_chain(s_jpeg2000x1000, &chain, &opts, 504);
        s_run_chain(cut, &chain, &opts, 504);
    }
}

/* Smart crop's analysis computes images of its own, with no "eval" the job
 * can watch: a guard thread polls the deadline meanwhile and stops it. */
static void test_smart_crop_is_stopped(void **state)
{
    (void)state;
    img_opts_t opts = {.max_output_pixels = DEFAULT_BUDGET, .should_stop = s_stop_in_guard};
    rf_chain_t smart = s_chain("crop/100x100/gravity/smart"), plain = s_chain("crop/100x100");
    s_run_chain(s_jpeg2000x1000, &smart, &opts, 504);
    img_result_t r = s_run_chain(s_jpeg2000x1000, &plain, &opts, 200); /* nothing else is stopped */
    img_result_clear(&r);
}

static void test_too_many_pixels_is_413(void **state)
{
    (void)state;
    s_run(s_jpeg2000x1000, "resize/10", 1999999, 413);
    img_result_t r = s_run(s_jpeg2000x1000, "resize/10", 2000000, 200); /* the limit itself passes */
    img_result_clear(&r);
}

static void test_alpha_png_to_jpeg(void **state)
{
    (void)state;
    s_buf_t src = s_make(300, 300, 0, ".png"); /* fully transparent */
    img_result_t r = s_run(src, "resize/100/format/jpeg", 0, 200);
    VipsImage *img = s_decode(&r, "VipsForeignLoadJpeg");
    assert_int_equal(vips_image_get_bands(img), 3);
    double avg = 0;
    assert_int_equal(vips_avg(img, &avg, NULL), 0);
    if (avg < 250)
        fail_msg("transparent pixels flattened to %.1f, want white", avg);
    g_object_unref(img);
    img_result_clear(&r);
    /* without a resize as well */
    s_expect_dims(src, "format/jpeg", "VipsForeignLoadJpeg", 300, 300);
    /* and kept as png with its alpha when no format is asked */
    r = s_run(src, "resize/100", 0, 200);
    img = s_decode(&r, "VipsForeignLoadPng");
    assert_int_equal(vips_image_get_bands(img), 4);
    g_object_unref(img);
    img_result_clear(&r);
    /* background/RRGGBB is the flattening colour */
    r = s_run(src, "background/ff0000/format/jpeg", 0, 200);
    s_assert_pixel(&r, 150, 150, 0xff0000);
    img_result_clear(&r);
    g_free(src.data);
}

/* ---- geometry ------------------------------------------------------------------------------------------ */

/* A chain on a png of quadrants, and what its result must be: w×h, and up
 * to three pixels (x, y, 0xRRGGBB). */
typedef struct {
    const char *chain;
    int w, h;
    int n;
    struct {
        int x, y;
        uint32_t rgb;
    } px[3];
} s_pixcase_t;

/* Runs each case on the w×h quadrants (png in, png out). */
static void s_check_pixels(int w, int h, const s_pixcase_t *cases, size_t n)
{
    s_buf_t src = s_encode_take(s_quadrants(w, h), ".png");
    for (size_t i = 0; i < n; i++) {
        img_result_t r = s_run(src, cases[i].chain, 0, 200);
        s_assert_dims(&r, "VipsForeignLoadPng", cases[i].w, cases[i].h);
        for (int k = 0; k < cases[i].n; k++)
            s_assert_pixel(&r, cases[i].px[k].x, cases[i].px[k].y, cases[i].px[k].rgb);
        img_result_clear(&r);
    }
    g_free(src.data);
}

/* crop/WxH+X+Y on the 200x100 quadrants, clipped to the image. */
static void test_crop_offsets(void **state)
{
    (void)state;
    static const s_pixcase_t cases[] = {
        {"crop/40x30+110+60", 40, 30, 2, {{0, 0, Q_BR}, {39, 29, Q_BR}}},
        {"crop/100x100+150+20", 50, 80, 2, {{10, 10, Q_TR}, {10, 70, Q_BR}}}, /* clipped */
    };
    s_check_pixels(200, 100, cases, sizeof(cases) / sizeof(cases[0]));
    s_buf_t src = s_encode_take(s_quadrants(200, 100), ".png");
    s_run_why(src, "crop/10x10+200+0", 0, 400, "outside the 200x100 image");
    s_run_why(src, "crop/10x10+0+100", 0, 400, "outside");
    s_run_why(src, "resize/100/crop/10x10+100+0", 0, 400, "outside the 100x50 image"); /* after the resize */
    g_free(src.data);
}

/* crop/WxH at each compass gravity picks that part of the quadrants; the
 * gravity is chain-wide (the last one wins, wherever it is). */
static void test_crop_gravity(void **state)
{
    (void)state;
    static const s_pixcase_t cases[] = {
        {"crop/100x100/gravity/northwest", 100, 100, 2, {{2, 2, Q_TL}, {97, 97, Q_TL}}},
        {"gravity/northeast/crop/100x100", 100, 100, 2, {{2, 2, Q_TR}, {97, 97, Q_TR}}},
        {"crop/100x100/gravity/southwest", 100, 100, 2, {{2, 2, Q_BL}, {97, 97, Q_BL}}},
        {"gravity/north/crop/100x100/gravity/southeast", 100, 100, 2, {{2, 2, Q_BR}, {97, 97, Q_BR}}},
        {"crop/100x100/gravity/north", 100, 100, 2, {{2, 2, Q_TL}, {97, 97, Q_TR}}},
        {"crop/100x100/gravity/south", 100, 100, 2, {{2, 2, Q_BL}, {97, 97, Q_BR}}},
        {"crop/100x100/gravity/west", 100, 100, 2, {{2, 2, Q_TL}, {97, 97, Q_BL}}},
        {"crop/100x100/gravity/east", 100, 100, 2, {{2, 2, Q_TR}, {97, 97, Q_BR}}},
        {"crop/100x100", 100, 100, 2, {{2, 2, Q_TL}, {97, 97, Q_BR}}},              /* center */
        {"crop/500x50/gravity/south", 200, 50, 2, {{2, 2, Q_BL}, {197, 47, Q_BR}}}, /* clipped */
    };
    s_check_pixels(200, 200, cases, sizeof(cases) / sizeof(cases[0]));
}

/* The standard deviation of a result's pixels. */
static double s_deviation(const img_result_t *r)
{
    VipsImage *img = vips_image_new_from_buffer(r->data, r->len, "", NULL);
    assert_non_null(img);
    double dev = 0;
    assert_int_equal(vips_deviate(img, &dev, NULL), 0);
    g_object_unref(img);
    return dev;
}

/* gravity/smart finds the one busy area of a flat image. */
static void test_crop_smart(void **state)
{
    (void)state;
    VipsImage *flat = s_solid(400, 200, 0x808080), *busy = s_noise(100, 100, -1), *img = NULL;
    assert_int_equal(vips_insert(flat, busy, &img, 300, 50, NULL), 0);
    s_buf_t src = s_encode_take(img, ".png");
    g_object_unref(flat);
    g_object_unref(busy);
    const char *chains[][2] = {{"crop/100x100/gravity/smart", "crop/100x100"},
                               {"thumbnail/100x100/gravity/smart", "thumbnail/100x100"}};
    for (size_t i = 0; i < sizeof(chains) / sizeof(chains[0]); i++) {
        img_result_t smart = s_run(src, chains[i][0], 0, 200), centre = s_run(src, chains[i][1], 0, 200);
        s_assert_dims(&smart, "VipsForeignLoadPng", 100, 100);
        if (!(s_deviation(&smart) > 2 * s_deviation(&centre) + 5))
            fail_msg("%s took a flat area (deviation %.1f, centre %.1f)", chains[i][0], s_deviation(&smart),
                     s_deviation(&centre));
        img_result_clear(&smart);
        img_result_clear(&centre);
    }
    g_free(src.data);
}

/* thumbnail/WxH: cover then crop at gravity, never enlarging. */
static void test_thumbnail(void **state)
{
    (void)state;
    static const s_pixcase_t cases[] = {
        {"thumbnail/100x100", 100, 100, 2, {{2, 2, Q_TL}, {97, 2, Q_TR}}}, /* 200x100, its middle */
        {"thumbnail/100x100/gravity/west", 100, 100, 2, {{97, 2, Q_TL}, {97, 97, Q_BL}}},
        {"gravity/east/thumbnail/100x100", 100, 100, 1, {{2, 2, Q_TR}}},
        {"thumbnail/300x300", 300, 200, 1, {{2, 2, Q_TL}}}, /* no enlargement: cropped only */
        {"thumbnail/1000x1000", 400, 200, 0, {{0, 0, 0}}},
    };
    s_check_pixels(400, 200, cases, sizeof(cases) / sizeof(cases[0]));
}

static void test_rotate(void **state)
{
    (void)state;
    static const s_pixcase_t cases[] = {
        {"rotate/90", 100, 200, 2, {{2, 2, Q_BL}, {97, 197, Q_TR}}}, /* clockwise */
        {"rotate/180", 200, 100, 1, {{2, 2, Q_BR}}},
        {"rotate/270", 100, 200, 1, {{2, 2, Q_TR}}},
        {"resize/100/rotate/90", 50, 100, 1, {{2, 2, Q_BL}}}, /* after a shrink-on-load resize too */
    };
    s_check_pixels(200, 100, cases, sizeof(cases) / sizeof(cases[0]));
}

static void test_flip_flop(void **state)
{
    (void)state;
    static const s_pixcase_t cases[] = {
        {"flip", 200, 100, 2, {{2, 2, Q_BL}, {197, 97, Q_TR}}},
        {"flop", 200, 100, 2, {{2, 2, Q_TR}, {197, 97, Q_BL}}},
        {"flip/flop", 200, 100, 1, {{2, 2, Q_BR}}},
    };
    s_check_pixels(200, 100, cases, sizeof(cases) / sizeof(cases[0]));
}

/* extend/WxH pads with the background at gravity; only grows. */
static void test_extend(void **state)
{
    (void)state;
    static const s_pixcase_t cases[] = {
        /* centred: the image at 50,75 */
        {"extend/200x200/background/00ffff", 200, 200, 3, {{2, 2, 0x00ffff}, {52, 77, Q_TL}, {147, 122, Q_BR}}},
        /* white by default */
        {"gravity/southeast/extend/200x200", 200, 200, 3, {{2, 2, 0xffffff}, {197, 197, Q_BR}, {102, 152, Q_TL}}},
        {"extend/50x80", 100, 80, 1, {{50, 2, 0xffffff}}}, /* at least W×H */
        {"extend/10x10", 100, 50, 0, {{0, 0, 0}}},
    };
    s_check_pixels(100, 50, cases, sizeof(cases) / sizeof(cases[0]));
    /* an image with alpha gets an opaque border */
    s_buf_t rgba = s_make(100, 50, 0, ".png");
    img_result_t r = s_run(rgba, "extend/100x100/background/ff00ff", 0, 200);
    VipsImage *img = s_decode(&r, "VipsForeignLoadPng");
    assert_int_equal(vips_image_get_bands(img), 4);
    double *v = NULL;
    int n = 0;
    assert_int_equal(vips_getpoint(img, &v, &n, 0, 0, NULL), 0);
    assert_int_equal(n, 4);
    assert_true(v[0] == 255 && v[1] == 0 && v[2] == 255 && v[3] == 255);
    g_free(v);
    g_object_unref(img);
    img_result_clear(&r);
    /* the budget is checked before padding */
    rf_chain_t chain = s_chain("extend/2000x2000");
    img_opts_t opts = {.max_output_pixels = 1000000};
    s_run_chain(rgba, &chain, &opts, 400);
    g_free(rgba.data);
}

/* split/H/N cuts the final image in bands of H rows. */
static void test_split(void **state)
{
    (void)state;
    static const s_pixcase_t cases[] = {
        {"split/30/0", 200, 30, 2, {{2, 2, Q_TL}, {197, 27, Q_TR}}},
        {"split/30/3", 200, 10, 2, {{2, 2, Q_BL}, {197, 7, Q_BR}}}, /* the last is lower */
        {"rotate/90/split/150/1", 100, 50, 1, {{2, 2, Q_BR}}},      /* of the final image */
        {"resize/100/split/20/2", 100, 10, 1, {{2, 2, Q_BL}}},
    };
    s_check_pixels(200, 100, cases, sizeof(cases) / sizeof(cases[0]));
    s_buf_t src = s_encode_take(s_quadrants(200, 100), ".png");
    s_run_why(src, "split/30/4", 0, 400, "no tile 4, the 200x100 image has 4 tiles of 30 rows");
    g_free(src.data);
}

/* split/H/manifest.json answers the tiles of the final image as JSON. */
static void test_split_manifest(void **state)
{
    (void)state;
    img_result_t r = s_run(s_jpeg2000x1000, "resize/100/split/20/manifest.json", 0, 200);
    assert_string_equal(r.mime, "application/json");
    assert_int_equal(r.format, RF_FMT_KEEP);
    json_error_t err;
    json_t *doc = json_loadb(r.data, r.len, 0, &err);
    if (doc == NULL)
        fail_msg("manifest %.*s: %s", (int)r.len, (const char *)r.data, err.text);
    json_t *tiles = json_object_get(doc, "tiles");
    assert_int_equal(json_integer_value(json_object_get(doc, "width")), 100);
    assert_int_equal(json_integer_value(json_object_get(doc, "height")), 50);
    assert_int_equal(json_integer_value(json_object_get(doc, "tile_height")), 20);
    assert_int_equal(json_integer_value(json_object_get(doc, "count")), 3);
    assert_int_equal(json_array_size(tiles), 3);
    json_t *last = json_array_get(tiles, 2);
    assert_int_equal(json_integer_value(json_object_get(last, "index")), 2);
    assert_int_equal(json_integer_value(json_object_get(last, "y")), 40);
    assert_int_equal(json_integer_value(json_object_get(last, "width")), 100);
    assert_int_equal(json_integer_value(json_object_get(last, "height")), 10);
    json_decref(doc);
    img_result_clear(&r);
}

/* A CMYK JPEG becomes sRGB, so that RGB colours (extend) mean what they say. */
static void test_cmyk_source(void **state)
{
    (void)state;
    VipsImage *rgb = s_quadrants(100, 50), *cmyk = NULL;
    assert_int_equal(vips_colourspace(rgb, &cmyk, VIPS_INTERPRETATION_CMYK, NULL), 0);
    g_object_unref(rgb);
    s_buf_t src = s_encode_take(cmyk, ".jpg[Q=95]");
    img_result_t r = {.data = src.data, .len = src.len};
    VipsImage *head = s_decode(&r, "VipsForeignLoadJpeg");
    assert_int_equal(vips_image_get_interpretation(head), VIPS_INTERPRETATION_CMYK);
    g_object_unref(head);
    r = s_run(src, "extend/100x100/background/00ff00/format/png", 0, 200);
    VipsImage *img = s_decode(&r, "VipsForeignLoadPng");
    assert_int_equal(vips_image_get_bands(img), 3);
    g_object_unref(img);
    s_assert_pixel(&r, 50, 2, 0x00ff00);
    img_result_clear(&r);
    g_free(src.data);
}

/* ---- pixels ---------------------------------------------------------------------------------------------- */

static void test_blur_and_sharpen(void **state)
{
    (void)state;
    s_buf_t src = s_make(200, 100, -1, ".png");
    img_result_t plain = s_run(src, "format/png", 0, 200);
    img_result_t blur = s_run(src, "blur/3", 0, 200);
    s_assert_dims(&blur, "VipsForeignLoadPng", 200, 100);
    if (!(s_deviation(&blur) < s_deviation(&plain) / 3))
        fail_msg("blur/3: deviation %.1f, plain %.1f", s_deviation(&blur), s_deviation(&plain));
    /* sharpen brings back some of what a blur took */
    img_result_t both = s_run(src, "blur/1/sharpen", 0, 200), soft = s_run(src, "blur/1", 0, 200);
    s_assert_dims(&both, "VipsForeignLoadPng", 200, 100);
    if (!(s_deviation(&both) > s_deviation(&soft)))
        fail_msg("sharpen: deviation %.1f, before %.1f", s_deviation(&both), s_deviation(&soft));
    img_result_clear(&plain);
    img_result_clear(&blur);
    img_result_clear(&both);
    img_result_clear(&soft);
    g_free(src.data);
    /* both keep an alpha channel */
    s_buf_t rgba = s_make(100, 50, 128, ".png");
    const char *chains[] = {"sharpen", "blur/1.5"};
    for (size_t i = 0; i < 2; i++) {
        img_result_t r = s_run(rgba, chains[i], 0, 200);
        VipsImage *img = s_decode(&r, "VipsForeignLoadPng");
        assert_int_equal(vips_image_get_bands(img), 4);
        g_object_unref(img);
        img_result_clear(&r);
    }
    g_free(rgba.data);
}

/* A 100x50 PNG: the left half opaque red, the right half fully
 * transparent over `hidden` (R, G, B). */
static s_buf_t s_edge(const unsigned char hidden[3])
{
    static unsigned char px[50][100][4];
    for (int y = 0; y < 50; y++)
        for (int x = 0; x < 100; x++) {
            unsigned char *p = px[y][x];
            if (x < 50)
                p[0] = 255, p[1] = 0, p[2] = 0, p[3] = 255;
            else
                p[0] = hidden[0], p[1] = hidden[1], p[2] = hidden[2], p[3] = 0;
        }
    VipsImage *img = vips_image_new_from_memory_copy(px, sizeof(px), 100, 50, 4, VIPS_FORMAT_UCHAR);
    assert_non_null(img);
    img->Type = VIPS_INTERPRETATION_sRGB;
    return s_encode_take(img, ".png");
}

/* Blur and sharpen work on alpha-weighted colour: what lies under fully
 * transparent pixels cannot show at the visible edge, so two images that
 * differ only there give the same visible pixels. */
static void test_filters_ignore_hidden_colour(void **state)
{
    (void)state;
    static const unsigned char green[3] = {0, 255, 0}, white[3] = {255, 255, 255};
    s_buf_t a = s_edge(green), b = s_edge(white);
    const char *chains[] = {"sharpen/format/png", "blur/2/format/png"};
    for (size_t i = 0; i < 2; i++) {
        img_result_t ra = s_run(a, chains[i], 0, 200), rb = s_run(b, chains[i], 0, 200);
        VipsImage *ia = s_decode(&ra, "VipsForeignLoadPng"), *ib = s_decode(&rb, "VipsForeignLoadPng");
        for (int x = 44; x < 50; x++) { /* the opaque side of the edge */
            double *pa = NULL, *pb = NULL;
            int na = 0, nb = 0;
            assert_int_equal(vips_getpoint(ia, &pa, &na, x, 25, NULL), 0);
            assert_int_equal(vips_getpoint(ib, &pb, &nb, x, 25, NULL), 0);
            assert_int_equal(na, 4);
            for (int c = 0; c < 4; c++)
                if (fabs(pa[c] - pb[c]) > 1)
                    fail_msg("%s: pixel %d band %d is %.0f over hidden green, %.0f over hidden white", chains[i], x, c,
                             pa[c], pb[c]);
            g_free(pa);
            g_free(pb);
        }
        g_object_unref(ia);
        g_object_unref(ib);
        img_result_clear(&ra);
        img_result_clear(&rb);
    }
    g_free(a.data);
    g_free(b.data);
}

static void test_grayscale(void **state)
{
    (void)state;
    img_result_t r = s_run(s_jpeg2000x1000, "resize/100/grayscale", 0, 200);
    VipsImage *img = s_decode(&r, "VipsForeignLoadJpeg");
    assert_int_equal(vips_image_get_bands(img), 1);
    g_object_unref(img);
    img_result_clear(&r);
    s_buf_t rgba = s_make(100, 50, 128, ".png");
    r = s_run(rgba, "grayscale", 0, 200);
    img = s_decode(&r, "VipsForeignLoadPng");
    assert_int_equal(vips_image_get_bands(img), 2); /* grey + alpha */
    g_object_unref(img);
    img_result_clear(&r);
    /* a grey image takes a grey background */
    r = s_run(rgba, "grayscale/extend/200x50/background/ffffff/format/jpeg", 0, 200);
    s_assert_dims(&r, "VipsForeignLoadJpeg", 200, 50);
    img_result_clear(&r);
    g_free(rgba.data);
}

/* ---- animation ------------------------------------------------------------------------------------------- */

/* An animated result: frames, frame size, and the delays kept. */
static void s_assert_animation(const img_result_t *r, const char *loader, int frames, int w, int h)
{
    VipsImage *img = vips_image_new_from_buffer(r->data, r->len, "n=-1", NULL);
    assert_non_null(img);
    const char *got = NULL;
    assert_int_equal(vips_image_get_string(img, "vips-loader", &got), 0);
    if (strncmp(got, loader, strlen(loader)) != 0)
        fail_msg("loader %s, want %s", got, loader);
    if (vips_image_get_n_pages(img) != frames || vips_image_get_page_height(img) != h ||
        vips_image_get_width(img) != w || vips_image_get_height(img) != h * frames)
        fail_msg("%d frames of %dx%d, want %d of %dx%d", vips_image_get_n_pages(img), vips_image_get_width(img),
                 vips_image_get_page_height(img), frames, w, h);
    int *delay = NULL, n = 0;
    assert_int_equal(vips_image_get_array_int(img, "delay", &delay, &n), 0);
    assert_int_equal(n, frames);
    assert_int_equal(delay[0], 100);
    assert_int_equal(r->frames, frames);
    assert_int_equal(r->width, w);
    assert_int_equal(r->height, h);
    g_object_unref(img);
}

static void test_animated_gif(void **state)
{
    (void)state;
    s_buf_t anim = s_animation(200, 100, 6, ".gif");
    static const struct {
        const char *chain;
        const char *loader;
        int w, h;
    } keep[] = {
        {"resize/100", "gifload", 100, 50},
        {"resize/100x100^", "gifload", 200, 100},
        {"resize/50x50!/format/webp", "webpload", 50, 50},
        {"resize/400x400</optimize", "gifload", 400, 200},
        {"crop/50x40+10+10", "gifload", 50, 40},
        {"thumbnail/60x60/gravity/smart", "gifload", 60, 60},
        {"rotate/90/flip/flop", "gifload", 100, 200},
        {"extend/300x100/grayscale/blur/1/sharpen", "gifload", 300, 100},
        {"format/webp/strip", "webpload", 200, 100},
        {"crop/100x80+0+0/resize/50", "gifload", 50, 40}, /* vips_thumbnail_image on the frames */
        {"split/40/2", "gifload", 200, 20},
    };
    for (size_t i = 0; i < sizeof(keep) / sizeof(keep[0]); i++) {
        img_result_t r = s_run(anim, keep[i].chain, 0, 200);
        s_assert_animation(&r, keep[i].loader, 6, keep[i].w, keep[i].h);
        assert_int_equal(r.source_frames, 6);
        assert_string_equal(r.frames_note, "");
        img_result_clear(&r);
    }
    /* an animated WebP source stays animated */
    s_buf_t webp = s_animation(200, 100, 6, ".webp");
    img_result_t w = s_run(webp, "resize/100/rotate/180", 0, 200);
    s_assert_animation(&w, "webpload", 6, 100, 50);
    img_result_clear(&w);
    g_free(webp.data);
    /* frames differ still: the last is lighter than the first */
    img_result_t r = s_run(anim, "resize/20/format/webp", 0, 200);
    VipsImage *all = vips_image_new_from_buffer(r.data, r.len, "n=-1", NULL);
    double *first = NULL, *last = NULL;
    int n = 0;
    assert_int_equal(vips_getpoint(all, &first, &n, 5, 5, NULL), 0);
    assert_int_equal(vips_getpoint(all, &last, &n, 5, 5 * 10 + 5, NULL), 0);
    assert_true(last[0] > first[0] + 100);
    g_free(first);
    g_free(last);
    g_object_unref(all);
    img_result_clear(&r);
    g_free(anim.data);
}

/* jpeg, png and avif take the first frame, and say so. */
static void s_animated_to_still(const char *suffix)
{
    s_buf_t anim = s_animation(200, 100, 6, suffix);
    static const struct {
        const char *chain, *loader, *note;
        int w, h;
    } cases[] = {{"resize/100/format/jpeg", "VipsForeignLoadJpeg", "first of 6: jpeg cannot animate", 100, 50},
                 {"format/png", "VipsForeignLoadPng", "first of 6: png cannot animate", 200, 100},
                 {"resize/100/format/avif", "VipsForeignLoadHeif", "first of 6: avif cannot animate", 100, 50},
                 /* the one frame's image is no longer 2 frames of 100 rows once rotated */
                 {"rotate/90/resize/x100/format/png", "VipsForeignLoadPng", "first of 6: png cannot animate", 50, 100},
                 {"rotate/90/format/avif", "VipsForeignLoadHeif", "first of 6: avif cannot animate", 100, 200}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        img_result_t r = s_run(anim, cases[i].chain, 0, 200);
        s_assert_dims(&r, cases[i].loader, cases[i].w, cases[i].h);
        assert_int_equal(r.frames, 1);
        assert_int_equal(r.source_frames, 6);
        assert_string_equal(r.frames_note, cases[i].note);
        s_assert_pixel(&r, 5, 5, 0x000000); /* the first frame is black */
        img_result_clear(&r);
    }
    g_free(anim.data);
}

static void test_animated_to_still(void **state)
{
    (void)state;
    s_animated_to_still(".gif");
    s_animated_to_still(".webp");
}

static void test_animation_limits(void **state)
{
    (void)state;
    s_buf_t anim = s_animation(200, 100, 6, ".gif");
    rf_chain_t chain = s_chain("resize/100");
    img_opts_t opts = {.max_frames = 4};
    img_result_t r = s_run_chain(anim, &chain, &opts, 200);
    assert_int_equal(r.frames, 4);
    assert_int_equal(s_pages(&r), 4);
    assert_string_equal(r.frames_note, "first 4 of 6: max_frames");
    img_result_clear(&r);
    /* every frame counts towards the pixel limits */
    opts = (img_opts_t){.max_pixels = 200 * 100 * 5};
    s_run_chain(anim, &chain, &opts, 413);
    chain = s_chain("resize/100/format/png"); /* one frame decoded: fits */
    r = s_run_chain(anim, &chain, &opts, 200);
    img_result_clear(&r);
    chain = s_chain("resize/400x400<");
    opts = (img_opts_t){.max_output_pixels = 400 * 200 * 5};
    s_run_chain(anim, &chain, &opts, 400);
    g_free(anim.data);
}

/* ---- byoriginal ------------------------------------------------------------------------------------------ */

/* The seed's example: up to 1200 wide, optimize only; else 1024x768. */
static rf_chain_t s_byorig_chain(bool with_default)
{
    rf_byorig_t set = {.name = "limit-1200", .n = with_default ? 2 : 1};
    set.rules[0] = (rf_byorig_rule_t){.max_width = 1200};
    snprintf(set.rules[0].chain, sizeof(set.rules[0].chain), "/optimize");
    snprintf(set.rules[1].chain, sizeof(set.rules[1].chain), "resize/1024x768/optimize");
    rf_chain_ctx_t ctx = {.byorig = &set, .n_byorig = 1};
    const char *text = "byoriginal/limit-1200/format/png";
    rf_chain_t c;
    char why[256];
    if (rf_chain_parse(text, strlen(text), &ctx, &c, why, sizeof(why)) < 0)
        fail_msg("%s: %s", text, why);
    return c;
}

static void test_byoriginal(void **state)
{
    (void)state;
    rf_chain_t chain = s_byorig_chain(true);
    img_opts_t opts = {0};
    img_result_t r = s_run_chain(s_jpeg2000x1000, &chain, &opts, 200); /* 2000 wide: the default rule */
    s_assert_dims(&r, "VipsForeignLoadPng", 1024, 512);
    img_result_clear(&r);
    s_buf_t small = s_jpeg_with_exif(); /* 400x300: optimize only */
    r = s_run_chain(small, &chain, &opts, 200);
    s_assert_dims(&r, "VipsForeignLoadPng", 400, 300);
    assert_false(s_has_field(&r, "exif-data"));
    img_result_clear(&r);
    g_free(small.data);
    /* no rule holds */
    chain = s_byorig_chain(false);
    s_run_chain(s_jpeg2000x1000, &chain, &opts, 400);
}

/* ---- threads ---------------------------------------------------------------------------------------------- */

static void *s_thread(void *arg)
{
    int *ok = arg;
    for (int i = 0; i < 4; i++) {
        rf_chain_t chain = s_chain(i % 2 ? "resize/300x300/format/webp" : "resize/x120/optimize");
        img_opts_t opts = {.max_pixels = 0};
        img_result_t out;
        char why[256];
        if (img_transform(s_jpeg2000x1000.data, s_jpeg2000x1000.len, &chain, &opts, &out, why, sizeof(why)) != 200 ||
            out.width != (i % 2 ? 300 : 240))
            *ok = 0;
        img_result_clear(&out);
    }
    return NULL;
}

static void test_concurrent_calls(void **state)
{
    (void)state;
    pthread_t t[4];
    int ok[4] = {1, 1, 1, 1};
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, s_thread, &ok[i]), 0);
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        assert_true(ok[i]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resize_box),
        cmocka_unit_test(test_resize_one_side),
        cmocka_unit_test(test_resize_twice),
        cmocka_unit_test(test_resize_never_enlarges_by_default),
        cmocka_unit_test(test_fit_modifiers),
        cmocka_unit_test(test_formats),
        cmocka_unit_test(test_format_avif),
        cmocka_unit_test(test_format_auto),
        cmocka_unit_test(test_format_kept_without_format_op),
        cmocka_unit_test(test_other_source_formats),
        cmocka_unit_test(test_quality),
        cmocka_unit_test(test_optimize_strips_exif),
        cmocka_unit_test(test_strip),
        cmocka_unit_test(test_orientation),
        cmocka_unit_test(test_undecodable_is_415),
        cmocka_unit_test(test_truncated_jpeg_is_415),
        cmocka_unit_test(test_stopped_is_504),
        cmocka_unit_test(test_smart_crop_is_stopped),
        cmocka_unit_test(test_too_many_pixels_is_413),
        cmocka_unit_test(test_alpha_png_to_jpeg),
        cmocka_unit_test(test_crop_offsets),
        cmocka_unit_test(test_crop_gravity),
        cmocka_unit_test(test_crop_smart),
        cmocka_unit_test(test_thumbnail),
        cmocka_unit_test(test_rotate),
        cmocka_unit_test(test_flip_flop),
        cmocka_unit_test(test_extend),
        cmocka_unit_test(test_cmyk_source),
        cmocka_unit_test(test_split),
        cmocka_unit_test(test_split_manifest),
        cmocka_unit_test(test_blur_and_sharpen),
        cmocka_unit_test(test_filters_ignore_hidden_colour),
        cmocka_unit_test(test_grayscale),
        cmocka_unit_test(test_animated_gif),
        cmocka_unit_test(test_animated_to_still),
        cmocka_unit_test(test_animation_limits),
        cmocka_unit_test(test_byoriginal),
        cmocka_unit_test(test_concurrent_calls),
    };
    return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
