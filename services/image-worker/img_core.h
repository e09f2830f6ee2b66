/*  img_core — the image worker's transform: source bytes + rf_chain -> new
 *  image bytes, with libvips. No bus, no threads of its own: the worker
 *  calls img_transform from several job threads at once.
 *
 *  Order of work: the source's header is read (size, frames, orientation,
 *  format; nothing is decoded), byoriginal is replaced by the operations of
 *  the rule it picks, the chain-wide settings are collected (the last of
 *  each wins), then the operations run in URL order on the upright image.
 *
 *  Loading
 *    EXIF orientation is applied first, always (the result is upright and
 *    has no orientation tag); every size below is of the upright image.
 *    Sources are decoded with fail_on=truncated: a truncated or corrupt
 *    source is a 415 (the gateway serves the original), never an image
 *    with a grey bottom. libvips reports such damage only when the pixels
 *    are read, so when any later step fails the source is decoded once
 *    more on its own to tell a broken source (415) from our failure (500).
 *    Sources over opts->max_pixels (width × height × frames loaded, from
 *    the header) are a 413 before any decoding.
 *
 *  Geometry (W or H 0: that side is unconstrained)
 *    resize/WxH    fit inside W×H, never enlarging (libvips VIPS_SIZE_DOWN);
 *    resize/WxH>   the same (shrink only)
 *    resize/WxH<   enlarge to fit inside W×H when the image is smaller than
 *                  the box on both sides; never shrinks (VIPS_SIZE_UP)
 *    resize/WxH^   cover W×H (one side may exceed the box), never enlarging
 *    resize/WxH!   exactly W×H, aspect ignored, may enlarge
 *                  The first resize (or thumbnail), when no other pixel
 *                  operation comes before it, decodes with shrink-on-load
 *                  (vips_thumbnail_buffer); later ones use vips_thumbnail_image.
 *    crop/WxH+X+Y  the area W×H at X,Y, clipped to the image; an area that
 *                  is entirely outside is a 400
 *    crop/WxH      min(W,width)×min(H,height) placed at gravity
 *    thumbnail/WxH resize/WxH^ then crop/WxH at gravity (so never enlarged,
 *                  and smaller than W×H when the image is)
 *    extend/WxH    pad to at least W×H with the background colour, the
 *                  image placed at gravity (smart counts as center)
 *    rotate/A      clockwise by 90, 180 or 270 degrees (vips_rot)
 *    flip, flop    mirror top-bottom, left-right
 *  gravity/G     where crop/WxH, thumbnail and extend place their area; one
 *                for the whole chain (the last wins), center by default. The
 *                compass points align the area with that edge or corner;
 *                smart is libvips's attention strategy (vips_smartcrop).
 *  Pixels
 *    sharpen       vips_sharpen with its defaults (sigma 0.5)
 *    blur/S        gaussian blur of sigma S (vips_gaussblur)
 *    grayscale     to one grey band (B_W), keeping an alpha channel
 *    background/RRGGBB  flattens alpha when writing jpeg (white by default)
 *                  and fills what extend adds (opaque, also for images
 *                  with alpha)
 *  Output
 *    format/F      jpeg, png, webp, avif (AV1 in HEIF, 8 bit, libvips
 *                  effort 3 of 0..9 = aom cpu-used 6, for real-time answers:
 *                  S_AVIF_EFFORT in img_core.c), gif (cgif). Without it, or
 *                  with an auto that was not negotiated or chose keep, the
 *                  source's format is kept for jpeg, png, webp, gif and AVIF
 *                  sources; any other (tiff, HEIC, …) becomes png if it has
 *                  an alpha channel, else jpeg.
 *    quality/N     Q for jpeg, webp and avif; png and gif ignore it. The
 *                  defaults are libvips's: 75 for jpeg and webp, 50 for avif.
 *    strip         drop all metadata (EXIF, XMP, ICC, …); nothing else
 *    optimize      strip, and tune the encoder: optimised Huffman tables
 *                  (jpeg), zlib level 9 (png), effort 6 (webp); avif and gif
 *                  get nothing more. Metadata is kept without strip/optimize.
 *  split/H/N     tile N (from 0) of the final image cut in bands of H rows:
 *                the full width, rows N×H up to H of them (the last band may
 *                be lower); no such tile is a 400
 *  split/H/manifest.json  instead of the image, its tiles as JSON
 *                (mime application/json, format RF_FMT_KEEP):
 *                {"width":W,"height":H,"tile_height":T,"count":N,"tiles":
 *                [{"index":0,"y":0,"width":W,"height":T},…]} (one frame's
 *                sizes). Pixels are not decoded for it unless an operation
 *                needs them, so a truncated source shows only in its tiles.
 *  byoriginal/NAME  the rule set's first rule that holds for the source's
 *                  upright width and height (of one frame), byte length and
 *                  format picks a chain whose operations run in its place
 *                  (400 when no rule holds).
 *  Budget: an operation that makes the image larger (resize with < or !,
 *  extend) is refused with a 400 before it runs when its result would have
 *  more than opts->max_output_pixels pixels (all frames counted).
 *
 *  Animation: a GIF or WebP source with several frames keeps them, at most
 *  opts->max_frames, when the output format is gif or webp: every operation
 *  applies to each frame (crop and smart gravity take the region found on
 *  the first frame for all), and the frame delays and loop count are kept.
 *  Only the first frame is decoded when the output is jpeg, png or avif,
 *  which cannot animate (libvips 8.14 writes no AVIF sequences); result.frames
 *  and result.frames_note say so. EXIF orientation is not applied to
 *  animations.
 *
 *  Only libvips's trusted loaders are enabled (img_init blocks the others,
 *  e.g. ImageMagick), and the operation cache is off: each call gets a new
 *  buffer, caching it would only hold memory.
 */
#ifndef IMG_CORE_H
#define IMG_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rf_chain.h"

typedef struct {
    int64_t max_pixels;        /* refuse larger sources (413); 0 = no limit */
    int64_t max_output_pixels; /* refuse enlarging operations past this (400); 0 = no limit */
    int max_frames;            /* frames kept of an animation; 0 = all */
    /* Polled while pixels are computed (libvips "eval", between tiles):
     * non-zero stops the transform with 504 (the job's deadline passed or
     * the broker cancelled it). NULL: never stopped. */
    int (*should_stop)(void *arg);
    void *stop_arg;
} img_opts_t;

typedef struct {
    void *data; /* the encoded image, allocated by GLib: free with g_free or img_result_clear */
    size_t len;
    rf_format_t format;   /* RF_FMT_KEEP only for a split manifest (JSON) */
    const char *mime;     /* static string: rf_format_mime(format), or "application/json" */
    int width, height;    /* of the result (of one frame) */
    int frames;           /* frames in the result, 1 for a still image */
    int source_frames;    /* frames in the source */
    char frames_note[80]; /* why frames < source_frames ("first of 12: jpeg cannot animate"), else "" */
} img_result_t;

/* Initialises libvips once per process: `vips_concurrency` > 0 sets the
 * threads each pipeline uses (0 keeps libvips's default). Returns 0, or -1
 * if libvips cannot start (its error is printed on stderr). */
int img_init(int vips_concurrency);

/* Whether libvips's calls to liborc's orc_program_compile and
 * orc_program_free go through img_orc.c's serialising wrappers (the
 * executable exports them; Makefile ORC_GUARD). img_init warns when not. */
bool img_orc_guarded(void);

/* Shuts libvips down; call once at exit, after every img_transform. */
void img_shutdown(void);

/* Applies `chain` to the source image [src, src+len) (both borrowed).
 * Thread-safe. On 200 fills *out (caller owns out->data; img_result_clear).
 * On any other status out->data is NULL and a one-line reason is written
 * into why[why_len] (libvips's message included when it has one). Returns:
 *   200  ok
 *   415  the source is not an image libvips can decode, or is truncated
 *   413  the source has more than opts->max_pixels pixels
 *   400  the chain cannot apply (a crop outside the image, a result over
 *        opts->max_output_pixels, no byoriginal rule holds)
 *   500  the transform or the encoder failed */
int img_transform(const void *src, size_t len, const rf_chain_t *chain, const img_opts_t *opts, img_result_t *out,
                  char *why, size_t why_len);

/* Frees out->data and zeroes *out; safe on a zeroed or cleared result. */
void img_result_clear(img_result_t *out);

#endif
