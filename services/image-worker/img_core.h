/*  img_core — the image worker's transform: source bytes + rf_chain -> new
 *  image bytes, with libvips. No bus, no threads of its own: the worker
 *  calls img_transform from several job threads at once.
 *
 *  Semantics of the chain (common/rf_chain.h):
 *    resize/WxH  fit inside W×H keeping the aspect ratio ("W" or "xH": the
 *                other side is unconstrained). libvips's default size mode
 *                (VIPS_SIZE_BOTH) is kept, so a small source IS upscaled to
 *                fill the box. The first resize decodes with shrink-on-load
 *                (vips_thumbnail_buffer), later ones use vips_thumbnail_image.
 *                EXIF orientation is applied (the result is upright and has
 *                no orientation tag); the same holds without a resize.
 *    format/F    output format; the last one wins. Without it the source's
 *                format is kept for jpeg/png/webp; any other source (gif,
 *                tiff, …) becomes png if it has an alpha channel, else jpeg.
 *                Alpha is flattened onto white when writing jpeg.
 *    quality/N   Q for jpeg and webp (last one wins); ignored for png, which
 *                is lossless. Without it Q is 75, libvips's own default.
 *    optimize    strip all metadata (EXIF, XMP, ICC, …), optimise the
 *                Huffman tables (jpeg), zlib level 9 (png), effort 6 (webp).
 *                Metadata is kept when there is no optimize.
 *
 *  Only libvips's trusted loaders are enabled (img_init blocks the others,
 *  e.g. ImageMagick), and the operation cache is off: each call gets a new
 *  buffer, caching it would only hold memory.
 */
#ifndef IMG_CORE_H
#define IMG_CORE_H

#include <stddef.h>
#include <stdint.h>

#include "rf_chain.h"

typedef struct {
    int64_t max_pixels; /* refuse larger sources (413) and results (400); 0 = no limit */
} img_opts_t;

typedef struct {
    void *data; /* the encoded image, allocated by GLib: free with g_free or img_result_clear */
    size_t len;
    rf_format_t format; /* never RF_FMT_KEEP on success */
    const char *mime;   /* static string, rf_format_mime(format) */
    int width, height;  /* of the result */
} img_result_t;

/* Initialises libvips once per process: `vips_concurrency` > 0 sets the
 * threads each pipeline uses (0 keeps libvips's default). Returns 0, or -1
 * if libvips cannot start (its error is printed on stderr). */
int img_init(int vips_concurrency);

/* Shuts libvips down; call once at exit, after every img_transform. */
void img_shutdown(void);

/* Applies `chain` to the source image [src, src+len). Thread-safe. On 200
 * fills *out (caller owns out->data; img_result_clear). On any other status
 * *out is zeroed and a one-line reason is written into why[why_len]
 * (libvips's message included when it has one). Returns:
 *   200  ok
 *   415  the source is not an image libvips can decode
 *   413  the source has more than opts->max_pixels pixels
 *   400  the chain cannot apply (e.g. the result would exceed max_pixels)
 *   500  the transform or the encoder failed */
int img_transform(const void *src, size_t len, const rf_chain_t *chain, const img_opts_t *opts, img_result_t *out,
                  char *why, size_t why_len);

/* Frees out->data and zeroes *out; safe on a zeroed or cleared result. */
void img_result_clear(img_result_t *out);

#endif
