/*  Unit tests for services/image-worker/img_core: every source image is
 *  made in-process with libvips (noise, so that encoders have real work and
 *  quality changes sizes), transformed, and the output decoded again. */
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

#include "img_core.h"
#include "rf_chain.h"

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

/* Encodes img by suffix (".jpg", ".png[compression=1]", …). Caller g_frees. */
static s_buf_t s_encode(VipsImage *img, const char *suffix)
{
    s_buf_t b = {NULL, 0};
    if (vips_image_write_to_buffer(img, suffix, &b.data, &b.len, NULL) != 0)
        fail_msg("encode %s: %s", suffix, vips_error_buffer());
    return b;
}

static s_buf_t s_make(int w, int h, int alpha, const char *suffix)
{
    VipsImage *img = s_noise(w, h, alpha);
    s_buf_t b = s_encode(img, suffix);
    g_object_unref(img);
    return b;
}

static rf_chain_t s_chain(const char *text)
{
    rf_chain_t c;
    char why[128];
    if (rf_chain_parse(text, strlen(text), &c, why, sizeof(why)) < 0)
        fail_msg("chain %s: %s", text, why);
    return c;
}

/* Runs the transform; asserts the status; returns the result. */
static img_result_t s_run(s_buf_t src, const char *chain_text, int64_t max_pixels, int want_status)
{
    rf_chain_t chain = s_chain(chain_text);
    img_opts_t opts = {.max_pixels = max_pixels};
    img_result_t out;
    char why[256];
    int status = img_transform(src.data, src.len, &chain, &opts, &out, why, sizeof(why));
    if (status != want_status)
        fail_msg("%s: status %d, want %d (%s)", chain_text, status, want_status, status == 200 ? "" : why);
    if (status != 200) {
        assert_null(out.data);
        assert_true(strlen(why) > 0);
        assert_null(strchr(why, '\n'));
    }
    return out;
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

static void test_resize_box(void **state)
{
    (void)state;
    img_result_t r = s_run(s_jpeg2000x1000, "resize/500x500", 0, 200);
    assert_int_equal(r.format, RF_FMT_JPEG);
    assert_string_equal(r.mime, "image/jpeg");
    s_assert_dims(&r, "VipsForeignLoadJpeg", 500, 250);
    img_result_clear(&r);
    assert_null(r.data);
    img_result_clear(&r); /* twice is safe */
}

static void test_resize_one_side(void **state)
{
    (void)state;
    img_result_t r = s_run(s_jpeg2000x1000, "resize/x100", 0, 200);
    s_assert_dims(&r, "VipsForeignLoadJpeg", 200, 100);
    img_result_clear(&r);
    r = s_run(s_jpeg2000x1000, "resize/300", 0, 200);
    s_assert_dims(&r, "VipsForeignLoadJpeg", 300, 150);
    img_result_clear(&r);
}

static void test_resize_twice(void **state)
{
    (void)state;
    img_result_t r = s_run(s_jpeg2000x1000, "resize/1000x1000/resize/100x100", 0, 200);
    s_assert_dims(&r, "VipsForeignLoadJpeg", 100, 50);
    img_result_clear(&r);
}

/* libvips's default size mode upscales to fill the box (documented). */
static void test_resize_upscales(void **state)
{
    (void)state;
    s_buf_t small = s_make(100, 50, -1, ".jpg");
    img_result_t r = s_run(small, "resize/400x400", 0, 200);
    s_assert_dims(&r, "VipsForeignLoadJpeg", 400, 200);
    img_result_clear(&r);
    /* ... but not past the pixel limit */
    r = s_run(small, "resize/4000x4000", 1000000, 400);
    g_free(small.data);
}

static void test_format_webp(void **state)
{
    (void)state;
    img_result_t r = s_run(s_jpeg2000x1000, "resize/200x200/format/webp", 0, 200);
    assert_int_equal(r.format, RF_FMT_WEBP);
    assert_string_equal(r.mime, "image/webp");
    s_assert_dims(&r, "VipsForeignLoadWebp", 200, 100);
    img_result_clear(&r);
}

static void test_format_png(void **state)
{
    (void)state;
    img_result_t r = s_run(s_jpeg2000x1000, "format/png/resize/100", 0, 200);
    assert_int_equal(r.format, RF_FMT_PNG);
    assert_string_equal(r.mime, "image/png");
    s_assert_dims(&r, "VipsForeignLoadPng", 100, 50);
    img_result_clear(&r);
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

    s_buf_t gif = s_make(120, 80, -1, ".gif");
    r = s_run(gif, "resize/60", 0, 200);
    assert_true(r.format == RF_FMT_JPEG || r.format == RF_FMT_PNG);
    s_assert_dims(&r, r.format == RF_FMT_JPEG ? "VipsForeignLoadJpeg" : "VipsForeignLoadPng", 60, 40);
    img_result_clear(&r);
    g_free(gif.data);
}

static void test_quality(void **state)
{
    (void)state;
    img_result_t lo = s_run(s_jpeg2000x1000, "resize/800/quality/10", 0, 200);
    img_result_t hi = s_run(s_jpeg2000x1000, "resize/800/quality/95", 0, 200);
    if (!(lo.len < hi.len))
        fail_msg("quality/10 gave %zu bytes, quality/95 %zu", lo.len, hi.len);
    img_result_clear(&lo);
    img_result_clear(&hi);
    lo = s_run(s_jpeg2000x1000, "resize/800/format/webp/quality/10", 0, 200);
    hi = s_run(s_jpeg2000x1000, "resize/800/format/webp/quality/95", 0, 200);
    if (!(lo.len < hi.len))
        fail_msg("webp quality/10 gave %zu bytes, quality/95 %zu", lo.len, hi.len);
    img_result_clear(&lo);
    img_result_clear(&hi);
}

static void test_optimize_strips_exif(void **state)
{
    (void)state;
    VipsImage *img = s_noise(400, 300, -1);
    vips_image_set_string(img, "exif-ifd0-ImageDescription", "refract test");
    s_buf_t src = s_encode(img, ".jpg");
    g_object_unref(img);
    img_result_t tmp = {.data = src.data, .len = src.len};
    assert_true(s_has_field(&tmp, "exif-data")); /* the test image really has EXIF */

    const char *keep[] = {"resize/200", "format/webp", "quality/50"};
    for (size_t i = 0; i < sizeof(keep) / sizeof(keep[0]); i++) {
        img_result_t r = s_run(src, keep[i], 0, 200);
        if (!s_has_field(&r, "exif-data"))
            fail_msg("%s lost the EXIF without optimize", keep[i]);
        img_result_clear(&r);
    }
    const char *strip[] = {"optimize", "resize/200/optimize", "optimize/format/webp", "optimize/format/png"};
    for (size_t i = 0; i < sizeof(strip) / sizeof(strip[0]); i++) {
        img_result_t r = s_run(src, strip[i], 0, 200);
        if (s_has_field(&r, "exif-data") || s_has_field(&r, "xmp-data"))
            fail_msg("%s kept the EXIF", strip[i]);
        s_assert_decodes(&r);
        img_result_clear(&r);
    }
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

/* EXIF orientation 6 (rotate 90° cw) is applied, with and without resize. */
static void test_orientation(void **state)
{
    (void)state;
    VipsImage *img = s_noise(200, 100, -1);
    vips_image_set_int(img, "orientation", 6);
    s_buf_t src = s_encode(img, ".jpg");
    g_object_unref(img);
    img_result_t r = s_run(src, "format/png", 0, 200);
    s_assert_dims(&r, "VipsForeignLoadPng", 100, 200);
    img_result_clear(&r);
    r = s_run(src, "resize/50x50", 0, 200);
    s_assert_dims(&r, "VipsForeignLoadJpeg", 25, 50);
    img_result_clear(&r);
    g_free(src.data);
}

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
    r = s_run(src, "format/jpeg", 0, 200);
    s_assert_dims(&r, "VipsForeignLoadJpeg", 300, 300);
    img_result_clear(&r);
    /* and kept as png with its alpha when no format is asked */
    r = s_run(src, "resize/100", 0, 200);
    img = s_decode(&r, "VipsForeignLoadPng");
    assert_int_equal(vips_image_get_bands(img), 4);
    g_object_unref(img);
    img_result_clear(&r);
    g_free(src.data);
}

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
        cmocka_unit_test(test_resize_upscales),
        cmocka_unit_test(test_format_webp),
        cmocka_unit_test(test_format_png),
        cmocka_unit_test(test_format_kept_without_format_op),
        cmocka_unit_test(test_other_source_formats),
        cmocka_unit_test(test_quality),
        cmocka_unit_test(test_optimize_strips_exif),
        cmocka_unit_test(test_orientation),
        cmocka_unit_test(test_undecodable_is_415),
        cmocka_unit_test(test_too_many_pixels_is_413),
        cmocka_unit_test(test_alpha_png_to_jpeg),
        cmocka_unit_test(test_concurrent_calls),
    };
    return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
