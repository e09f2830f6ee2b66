#include "img_core.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <vips/vips.h>

/* Default Q for jpeg and webp when the chain has no quality op: libvips's
 * own default, so `optimize` alone never changes the visual quality. */
#define S_DEFAULT_Q 75

/* Writes "prefix: <libvips error>" as one line into why and clears the
 * libvips error buffer (vips_error_buffer_copy does both under its lock, as
 * other job threads share that buffer). Returns `status`. */
static int s_fail(int status, char *why, size_t why_len, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static int s_fail(int status, char *why, size_t why_len, const char *fmt, ...)
{
    char *err = vips_error_buffer_copy();
    if (why != NULL && why_len > 0) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(why, why_len, fmt, ap);
        va_end(ap);
        if (err != NULL && err[0] != '\0' && n >= 0 && (size_t)n < why_len)
            snprintf(why + n, why_len - (size_t)n, ": %s", err);
        /* libvips messages end in (and may contain) newlines; REPLY reasons are one line */
        for (char *p = why; *p; p++)
            if (*p == '\n' || *p == '\r' || *p == '\t')
                *p = ' ';
        for (size_t i = strlen(why); i > 0 && why[i - 1] == ' '; i--)
            why[i - 1] = '\0';
    }
    g_free(err);
    return status;
}

int img_init(int vips_concurrency)
{
    if (VIPS_INIT("refract-image-worker") != 0) {
        char *err = vips_error_buffer_copy();
        fprintf(stderr, "img_init: libvips failed to start: %s\n", err != NULL ? err : "?");
        g_free(err);
        return -1;
    }
    if (vips_concurrency > 0)
        vips_concurrency_set(vips_concurrency);
    vips_cache_set_max(0);
    vips_block_untrusted_set(TRUE);
    return 0;
}

void img_shutdown(void)
{
    vips_shutdown();
}

void img_result_clear(img_result_t *out)
{
    if (out == NULL)
        return;
    g_free(out->data);
    memset(out, 0, sizeof(*out));
}

/* Maps a loader class name ("VipsForeignLoadJpegBuffer") to the format we
 * can write back; RF_FMT_KEEP for every other source format. */
static rf_format_t s_loader_format(const char *loader)
{
    if (strncmp(loader, "VipsForeignLoadJpeg", 19) == 0)
        return RF_FMT_JPEG;
    if (strncmp(loader, "VipsForeignLoadPng", 18) == 0)
        return RF_FMT_PNG;
    if (strncmp(loader, "VipsForeignLoadWebp", 19) == 0)
        return RF_FMT_WEBP;
    return RF_FMT_KEEP;
}

/* Replaces *img by `next` (taking ownership), releasing the old one. */
static void s_swap(VipsImage **img, VipsImage *next)
{
    g_object_unref(*img);
    *img = next;
}

/* Flattens alpha onto white (jpeg has no alpha). Returns 0 or -1. */
static int s_flatten_white(VipsImage **img)
{
    VipsInterpretation interp = vips_image_get_interpretation(*img);
    double max = interp == VIPS_INTERPRETATION_RGB16 || interp == VIPS_INTERPRETATION_GREY16 ? 65535.0 : 255.0;
    double white[16];
    int n = vips_image_get_bands(*img) - 1;
    if (n < 1 || n > 16)
        n = 1;
    for (int i = 0; i < n; i++)
        white[i] = max;
    VipsArrayDouble *bg = vips_array_double_new(white, n);
    VipsImage *out = NULL;
    int rc = vips_flatten(*img, &out, "background", bg, "max_alpha", max, NULL);
    vips_area_unref(VIPS_AREA(bg));
    if (rc != 0)
        return -1;
    s_swap(img, out);
    return 0;
}

/* Removes every metadata item from a private copy of *img. The savers'
 * `strip` is not enough on its own: libvips 8.14.1's webpsave writes EXIF
 * and XMP regardless. Returns 0 or -1 (libvips error set). */
static int s_strip(VipsImage **img)
{
    VipsImage *copy = NULL;
    if (vips_copy(*img, &copy, NULL) != 0) /* *img may share its header with the pipeline's other images */
        return -1;
    gchar **fields = vips_image_get_fields(copy);
    for (int i = 0; fields[i] != NULL; i++)
        vips_image_remove(copy, fields[i]); /* a no-op for the core header fields (width, bands, …) */
    g_strfreev(fields);
    s_swap(img, copy);
    return 0;
}

static uint32_t s_le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void s_put_le32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++, v >>= 8)
        p[i] = (unsigned char)v;
}

/* Removes the EXIF and XMP chunks from a WebP file in place and clears
 * their VP8X flags: libvips 8.14's webpsave writes a synthetic EXIF chunk
 * (orientation, resolution) even with strip. *len shrinks accordingly.
 * Leaves anything that does not parse as RIFF/WEBP untouched. */
static void s_webp_drop_metadata(unsigned char *buf, size_t *len)
{
    if (*len < 12 || memcmp(buf, "RIFF", 4) != 0 || memcmp(buf + 8, "WEBP", 4) != 0)
        return;
    size_t in = 12, out = 12, end = *len;
    unsigned char *vp8x = NULL;
    while (in + 8 <= end) {
        size_t size = s_le32(buf + in + 4);
        size_t span = 8 + size + (size & 1); /* chunks are padded to an even size */
        if (span > end - in)
            return; /* truncated: the encoder's output is odd, leave it alone */
        int drop = memcmp(buf + in, "EXIF", 4) == 0 || memcmp(buf + in, "XMP ", 4) == 0;
        if (!drop) {
            memmove(buf + out, buf + in, span);
            if (memcmp(buf + out, "VP8X", 4) == 0 && size >= 1)
                vp8x = buf + out;
            out += span;
        }
        in += span;
    }
    if (vp8x != NULL)
        vp8x[8] &= (unsigned char)~0x0c; /* EXIF (0x08) and XMP (0x04) flags */
    s_put_le32(buf + 4, (uint32_t)(out - 8));
    *len = out;
}

/* Encodes img. Returns 0 or -1 (libvips error set). */
static int s_save(VipsImage *img, rf_format_t fmt, int q, int optimize, void **buf, size_t *len)
{
    switch (fmt) {
    case RF_FMT_JPEG:
        return vips_jpegsave_buffer(img, buf, len, "Q", q, "strip", optimize, "optimize_coding", optimize, NULL);
    case RF_FMT_PNG:
        return vips_pngsave_buffer(img, buf, len, "compression", optimize ? 9 : 6, "strip", optimize, NULL);
    case RF_FMT_WEBP:
        return vips_webpsave_buffer(img, buf, len, "Q", q, "strip", optimize, "effort", optimize ? 6 : 4, NULL);
    default: vips_error("img_core", "no output format"); return -1;
    }
}

int img_transform(const void *src, size_t len, const rf_chain_t *chain, const img_opts_t *opts, img_result_t *out,
                  char *why, size_t why_len)
{
    VipsImage *img = NULL, *next = NULL;
    void *buf = NULL;
    size_t buf_len = 0;
    int status = 500;
    memset(out, 0, sizeof(*out));
    if (why != NULL && why_len > 0)
        why[0] = '\0';
    if (src == NULL || len == 0)
        return s_fail(415, why, why_len, "empty source");

    const char *loader = vips_foreign_find_load_buffer(src, len);
    if (loader == NULL)
        return s_fail(415, why, why_len, "source is not a decodable image");
    rf_format_t src_fmt = s_loader_format(loader);

    /* Only the header is read here: pixels are decoded lazily, so the
     * size check costs nothing and runs before any large allocation. */
    img = vips_image_new_from_buffer(src, len, "", "access", VIPS_ACCESS_SEQUENTIAL, NULL);
    if (img == NULL) {
        status = s_fail(415, why, why_len, "cannot decode the source");
        goto done;
    }
    int64_t pixels = (int64_t)vips_image_get_width(img) * vips_image_get_height(img);
    if (opts != NULL && opts->max_pixels > 0 && pixels > opts->max_pixels) {
        status = s_fail(413, why, why_len, "source has %dx%d pixels, over the limit of %lld", vips_image_get_width(img),
                        vips_image_get_height(img), (long long)opts->max_pixels);
        goto done;
    }

    rf_format_t fmt = RF_FMT_KEEP;
    int q = S_DEFAULT_Q, optimize = 0, resized = 0;
    for (size_t i = 0; chain != NULL && i < chain->n; i++) {
        const rf_op_t *op = &chain->ops[i];
        switch (op->kind) {
        case RF_OP_FORMAT: fmt = op->format; break;
        case RF_OP_QUALITY: q = op->quality; break;
        case RF_OP_OPTIMIZE: optimize = 1; break;
        case RF_OP_RESIZE: {
            if (op->w <= 0 && op->h <= 0) {
                status = s_fail(400, why, why_len, "resize needs a width or a height");
                goto done;
            }
            /* an unconstrained side gets a box edge no image reaches */
            int w = op->w > 0 ? op->w : VIPS_MAX_COORD;
            int h = op->h > 0 ? op->h : VIPS_MAX_COORD;
            int rc;
            if (!resized)
                rc = vips_thumbnail_buffer((void *)src, len, &next, w, "height", h, NULL);
            else
                rc = vips_thumbnail_image(img, &next, w, "height", h, NULL);
            if (rc != 0) {
                status = s_fail(resized ? 500 : 415, why, why_len, "resize to %dx%d failed", op->w, op->h);
                goto done;
            }
            s_swap(&img, next);
            next = NULL;
            resized = 1;
            break;
        }
        default: status = s_fail(400, why, why_len, "unknown operation %d", (int)op->kind); goto done;
        }
    }
    int64_t out_pixels = (int64_t)vips_image_get_width(img) * vips_image_get_height(img);
    if (opts != NULL && opts->max_pixels > 0 && out_pixels > opts->max_pixels) {
        status = s_fail(400, why, why_len, "result would have %dx%d pixels, over the limit of %lld",
                        vips_image_get_width(img), vips_image_get_height(img), (long long)opts->max_pixels);
        goto done;
    }
    if (!resized && vips_image_get_orientation(img) > 1) {
        /* Rotating or flipping reads the source out of order, which a
         * sequential load cannot do: decode it into memory first.
         * (vips_thumbnail_* already returned upright images.) */
        VipsImage *mem = vips_image_copy_memory(img);
        if (mem == NULL) {
            status = s_fail(415, why, why_len, "cannot decode the source");
            goto done;
        }
        s_swap(&img, mem);
        if (vips_autorot(img, &next, NULL) != 0) {
            status = s_fail(500, why, why_len, "cannot apply the EXIF orientation");
            goto done;
        }
        s_swap(&img, next);
        next = NULL;
    }

    if (fmt == RF_FMT_KEEP)
        fmt = src_fmt != RF_FMT_KEEP ? src_fmt : vips_image_hasalpha(img) ? RF_FMT_PNG : RF_FMT_JPEG;
    if (fmt == RF_FMT_JPEG && vips_image_hasalpha(img) && s_flatten_white(&img) != 0) {
        status = s_fail(500, why, why_len, "cannot flatten the alpha channel");
        goto done;
    }
    if (optimize && s_strip(&img) != 0) {
        status = s_fail(500, why, why_len, "cannot strip metadata");
        goto done;
    }
    if (s_save(img, fmt, q, optimize, &buf, &buf_len) != 0) {
        status = s_fail(500, why, why_len, "cannot encode %s", rf_format_name(fmt));
        goto done;
    }
    if (optimize && fmt == RF_FMT_WEBP)
        s_webp_drop_metadata(buf, &buf_len);
    out->data = buf;
    out->len = buf_len;
    out->format = fmt;
    out->mime = rf_format_mime(fmt);
    out->width = vips_image_get_width(img);
    out->height = vips_image_get_height(img);
    buf = NULL;
    status = 200;
done:
    g_free(buf);
    if (next != NULL)
        g_object_unref(next);
    if (img != NULL)
        g_object_unref(img);
    return status;
}
