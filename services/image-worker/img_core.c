#include "img_core.h"

#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vips/vips.h>
#include <vips/vector.h>

/* Default Q when the chain has no quality op: libvips's own defaults, so
 * `optimize` alone never changes the visual quality. */
#define S_DEFAULT_Q 75
#define S_DEFAULT_AVIF_Q 50

/* AV1 encoding is the slow part of an AVIF answer. libvips's effort 0..9
 * maps to aom's cpu-used 9..0. `vips heifsave` of a 500×313 photo on the
 * 2-core development VM cost about 0.66 s of CPU at libvips's default (4),
 * 0.45 s at 3 and 0.28 s at 2; 3 costs about 4% more bytes than 4 and 2
 * another 4% (bench/resize.sh measures AVIF answers end to end): 3 is the
 * compromise for an answer made while the client waits. */
#define S_AVIF_EFFORT 3

/* Whatever the chain says, a multi-frame source keeps at most this many
 * frames when opts->max_frames is 0. */
#define S_ALL_FRAMES (1 << 20)

/* ---- errors ------------------------------------------------------------------------- */

/* Writes "prefix: err" as one line into why (err may be NULL). */
static void s_whyv(char *why, size_t why_len, const char *err, const char *fmt, va_list ap)
{
    if (why == NULL || why_len == 0)
        return;
    int n = vsnprintf(why, why_len, fmt, ap);
    if (err != NULL && err[0] != '\0' && n >= 0 && (size_t)n < why_len)
        snprintf(why + n, why_len - (size_t)n, ": %s", err);
    /* libvips messages end in (and may contain) newlines; REPLY reasons are one line */
    for (char *p = why; *p; p++)
        if (*p == '\n' || *p == '\r' || *p == '\t')
            *p = ' ';
    for (size_t i = strlen(why); i > 0 && why[i - 1] == ' '; i--)
        why[i - 1] = '\0';
}

/* Writes "prefix: <libvips error>" as one line into why and clears the
 * libvips error buffer (vips_error_buffer_copy does both under its lock, as
 * other job threads share that buffer). Returns `status`. */
static int s_fail(int status, char *why, size_t why_len, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static int s_fail(int status, char *why, size_t why_len, const char *fmt, ...)
{
    char *err = vips_error_buffer_copy();
    va_list ap;
    va_start(ap, fmt);
    s_whyv(why, why_len, err, fmt, ap);
    va_end(ap);
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
    if (vips_vector_isenabled() && !img_orc_guarded())
        fprintf(stderr, "img_init: liborc's compile/free are not serialised (link without ORC_GUARD): "
                        "concurrent jobs may crash in liborc 0.4.33; VIPS_NOVECTOR=1 avoids it\n");
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

/* ---- the job --------------------------------------------------------------------------- */

/* One img_transform call: the source, what its header says, the chain with
 * byoriginal expanded, its settings, and the image being built. */
typedef struct {
    const void *src; /* borrowed */
    size_t len;
    const img_opts_t *opts;
    char *why;
    size_t why_len;

    VipsImage *head;     /* the source opened for its header (owned) */
    rf_format_t src_fmt; /* RF_FMT_KEEP: not one we write */
    int src_w, src_h;    /* upright, one frame */
    int src_frames;      /* frames in the file */
    int frames;          /* frames loaded (and in img) */
    int orientation;     /* EXIF, 1 when upright or animated */
    char frames_note[80];

    rf_op_t ops[2 * RF_CHAIN_MAX_OPS]; /* byoriginal replaced by its rule's ops */
    size_t n_ops;

    rf_format_t fmt; /* resolved: never KEEP or AUTO */
    int q;
    bool strip, optimize;
    rf_gravity_t gravity;
    uint32_t bg;
    int manifest_h; /* split/H/manifest.json: H; 0 = the answer is the image */

    VipsImage *img; /* upright, every frame stacked (page-height); NULL until the first pixel op (owned) */
    bool seq;       /* img reads the source sequentially: random access needs s_materialize */
} s_job_t;

/* Replaces *img by `next` (taking ownership), releasing the old one. */
static void s_swap(VipsImage **img, VipsImage *next)
{
    if (*img != NULL)
        g_object_unref(*img);
    *img = next;
}

/* The width and height of one frame of the current image. */
static void s_dims(const s_job_t *job, int *w, int *h)
{
    if (job->img == NULL) {
        *w = job->src_w;
        *h = job->src_h;
        return;
    }
    *w = vips_image_get_width(job->img);
    *h = vips_image_get_height(job->img) / job->frames;
}

/* The loader options of every load: fail on truncated data, and the
 * frames the job decodes (`n` only for several: the still-image loaders
 * have no such option). In an option string because libvips 8.14.1's
 * vips_thumbnail_buffer does not pass its own fail_on to the loader. */
static void s_load_options(const s_job_t *job, char *buf, size_t len)
{
    if (job->frames > 1)
        snprintf(buf, len, "fail_on=truncated,n=%d", job->frames);
    else
        snprintf(buf, len, "fail_on=truncated");
}

/* Opens the source with the job's load options, for sequential reading;
 * NULL with the libvips error set. */
static VipsImage *s_load(const s_job_t *job)
{
    char options[48];
    s_load_options(job, options, sizeof(options));
    return vips_image_new_from_buffer(job->src, job->len, options, "access", VIPS_ACCESS_SEQUENTIAL, NULL);
}

/* libvips "eval" handler on an image being computed: sets the kill flag
 * (libvips stops between tiles) once the job must stop. */
static void s_on_eval(VipsImage *image, VipsProgress *progress, void *arg)
{
    (void)progress;
    const img_opts_t *o = arg;
    if (o->should_stop(o->stop_arg))
        vips_image_set_kill(image, TRUE);
}

/* Watches `img` while its pixels are computed (a save, a decode into
 * memory), when the job can be stopped. */
static void s_watch(s_job_t *job, VipsImage *img)
{
    if (job->opts == NULL || job->opts->should_stop == NULL)
        return;
    vips_image_set_progress(img, TRUE);
    g_signal_connect(img, "eval", G_CALLBACK(s_on_eval), (void *)job->opts);
}

/* Whether the job must stop (its deadline passed, or it was cancelled):
 * a computation that failed then failed for that reason. */
static bool s_stopped(const s_job_t *job)
{
    return job->opts != NULL && job->opts->should_stop != NULL && job->opts->should_stop(job->opts->stop_arg);
}

#define S_STOPPED_WHY "stopped during the transform: cancelled or past its deadline"

/* Decodes every pixel of the source on its own: whether a failure later in
 * the pipeline came from the source (truncated, corrupt) or from us. */
static bool s_source_decodes(s_job_t *job)
{
    VipsImage *img = s_load(job);
    if (img != NULL)
        s_watch(job, img); /* a whole decode again: the deadline holds here too */
    double avg = 0;
    bool ok = img != NULL && vips_avg(img, &avg, NULL) == 0;
    if (img != NULL)
        g_object_unref(img);
    return ok;
}

/* A libvips call that reads pixels failed: 415 when the source does not
 * decode (the error is then the decoder's), else 500 with the reason
 * formatted by fmt and the original libvips error. */
static int s_broken(s_job_t *job, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int s_broken(s_job_t *job, const char *fmt, ...)
{
    if (s_stopped(job)) /* no re-decode: the job is over */
        return s_fail(504, job->why, job->why_len, S_STOPPED_WHY);
    char *err = vips_error_buffer_copy();
    int status;
    if (!s_source_decodes(job)) {
        if (s_stopped(job)) {
            g_free(err);
            return s_fail(504, job->why, job->why_len, S_STOPPED_WHY);
        }
        status = s_fail(415, job->why, job->why_len, "source is truncated or corrupt");
    } else {
        va_list ap;
        va_start(ap, fmt);
        s_whyv(job->why, job->why_len, err, fmt, ap);
        va_end(ap);
        vips_error_clear();
        status = 500;
    }
    g_free(err);
    return status;
}

/* ---- the source's header ----------------------------------------------------------------- */

/* The format we can write back for a source, from its loader class name
 * ("VipsForeignLoadJpegBuffer") and header; RF_FMT_KEEP for the others. */
static rf_format_t s_source_format(const char *loader, VipsImage *head)
{
    static const struct {
        const char *prefix;
        rf_format_t fmt;
    } map[] = {{"VipsForeignLoadJpeg", RF_FMT_JPEG},
               {"VipsForeignLoadPng", RF_FMT_PNG},
               {"VipsForeignLoadWebp", RF_FMT_WEBP},
               {"VipsForeignLoadNsgif", RF_FMT_GIF},
               {"VipsForeignLoadGif", RF_FMT_GIF}};
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
        if (strncmp(loader, map[i].prefix, strlen(map[i].prefix)) == 0)
            return map[i].fmt;
    /* the HEIF loader reads HEIC too, which browsers do not show */
    const char *comp = NULL;
    if (strncmp(loader, "VipsForeignLoadHeif", 19) == 0 && vips_image_get_typeof(head, "heif-compression") != 0 &&
        vips_image_get_string(head, "heif-compression", &comp) == 0 && strcmp(comp, "av1") == 0)
        return RF_FMT_AVIF;
    return RF_FMT_KEEP;
}

/* Frames in the source: only GIF and WebP animate (the pages of a TIFF or
 * HEIF are separate images, not frames). */
static int s_source_frames(const s_job_t *job)
{
    if (job->src_fmt != RF_FMT_GIF && job->src_fmt != RF_FMT_WEBP)
        return 1;
    int n = vips_image_get_n_pages(job->head);
    return n > 1 ? n : 1;
}

/* Opens the source's header: its format, upright size and frames. Returns
 * 0, or 415 with why filled. */
static int s_open(s_job_t *job)
{
    if (job->src == NULL || job->len == 0)
        return s_fail(415, job->why, job->why_len, "empty source");
    const char *loader = vips_foreign_find_load_buffer(job->src, job->len);
    if (loader == NULL)
        return s_fail(415, job->why, job->why_len, "source is not a decodable image");
    /* Only the header is read here: pixels are decoded lazily, so the size
     * checks cost nothing and run before any large allocation. */
    job->head = s_load(job);
    if (job->head == NULL)
        return s_fail(415, job->why, job->why_len, "cannot decode the source");
    job->src_fmt = s_source_format(loader, job->head);
    job->src_frames = s_source_frames(job);
    job->src_w = vips_image_get_width(job->head);
    job->src_h = vips_image_get_page_height(job->head);
    job->orientation = job->src_frames > 1 ? 1 : vips_image_get_orientation(job->head);
    if (job->orientation >= 5 && job->orientation <= 8) { /* the transposing ones */
        int t = job->src_w;
        job->src_w = job->src_h;
        job->src_h = t;
    }
    return 0;
}

/* ---- the chain --------------------------------------------------------------------------- */

/* Copies the chain's operations into job->ops, byoriginal replaced by the
 * operations of the rule that holds for this source. 0, or 400. */
static int s_expand(s_job_t *job, const rf_chain_t *chain)
{
    job->n_ops = 0;
    for (size_t i = 0; chain != NULL && i < chain->n; i++) {
        if (chain->ops[i].kind != RF_OP_BYORIGINAL) {
            job->ops[job->n_ops++] = chain->ops[i];
            continue;
        }
        rf_chain_t picked;
        char why[200];
        if (rf_byorig_pick(&chain->byorig, job->src_w, job->src_h, (int64_t)job->len, job->src_fmt, &picked, why,
                           sizeof(why)) < 0)
            return s_fail(400, job->why, job->why_len, "%s", why);
        /* rule chains have no byoriginal: this grows by at most RF_CHAIN_MAX_OPS - 1 */
        for (size_t k = 0; k < picked.n && job->n_ops < sizeof(job->ops) / sizeof(job->ops[0]); k++)
            job->ops[job->n_ops++] = picked.ops[k];
    }
    return 0;
}

/* The format written when the chain names none (or auto chose keep). */
static rf_format_t s_keep_format(const s_job_t *job)
{
    if (job->src_fmt != RF_FMT_KEEP)
        return job->src_fmt;
    return vips_image_hasalpha(job->head) ? RF_FMT_PNG : RF_FMT_JPEG;
}

/* format/auto answers with what the client takes: the gateway chose AVIF,
 * WebP, or (keep) neither. An animation keeps its own format when the
 * choice cannot animate (AVIF here); a source in a format the client did
 * not say it takes (WebP or AVIF, with keep) becomes what every client
 * takes: gif for an animation, png with alpha, else jpeg. */
static rf_format_t s_auto_format(const s_job_t *job, rf_format_t chosen)
{
    bool animated = job->src_frames > 1;
    if (chosen == RF_FMT_AVIF && animated)
        return job->src_fmt;
    if (chosen != RF_FMT_KEEP && chosen != RF_FMT_AUTO)
        return chosen;
    if (job->src_fmt != RF_FMT_WEBP && job->src_fmt != RF_FMT_AVIF)
        return s_keep_format(job);
    return animated ? RF_FMT_GIF : vips_image_hasalpha(job->head) ? RF_FMT_PNG : RF_FMT_JPEG;
}

/* Collects the chain-wide settings (the last of each wins). */
static void s_settings(s_job_t *job)
{
    rf_format_t fmt = RF_FMT_KEEP;
    bool is_auto = false;
    int q = 0;
    job->gravity = RF_GRAV_CENTER;
    job->bg = 0xffffff;
    for (size_t i = 0; i < job->n_ops; i++) {
        const rf_op_t *op = &job->ops[i];
        switch (op->kind) {
        case RF_OP_FORMAT:
            fmt = op->format;
            is_auto = op->auto_format;
            break;
        case RF_OP_QUALITY: q = op->quality; break;
        case RF_OP_OPTIMIZE: job->optimize = true; break;
        case RF_OP_STRIP: job->strip = true; break;
        case RF_OP_GRAVITY: job->gravity = op->gravity; break;
        case RF_OP_BACKGROUND: job->bg = op->rgb; break;
        case RF_OP_SPLIT: job->manifest_h = op->x < 0 ? op->h : 0; break;
        default: break;
        }
    }
    if (is_auto)
        job->fmt = s_auto_format(job, fmt);
    else
        job->fmt = fmt == RF_FMT_KEEP ? s_keep_format(job) : fmt;
    job->q = q > 0 ? q : job->fmt == RF_FMT_AVIF ? S_DEFAULT_AVIF_Q : S_DEFAULT_Q;
}

/* How many frames to decode, and the note when that is fewer than the
 * source has. */
static void s_plan_frames(s_job_t *job)
{
    job->frames = 1;
    if (job->src_frames <= 1)
        return;
    if (job->fmt != RF_FMT_GIF && job->fmt != RF_FMT_WEBP) {
        snprintf(job->frames_note, sizeof(job->frames_note), "first of %d: %s cannot animate", job->src_frames,
                 rf_format_name(job->fmt));
        return;
    }
    int cap = job->opts != NULL && job->opts->max_frames > 0 ? job->opts->max_frames : S_ALL_FRAMES;
    job->frames = job->src_frames < cap ? job->src_frames : cap;
    if (job->frames < job->src_frames)
        snprintf(job->frames_note, sizeof(job->frames_note), "first %d of %d: max_frames", job->frames,
                 job->src_frames);
}

/* 413 when the frames to decode have more than max_pixels pixels. */
static int s_check_source_pixels(s_job_t *job)
{
    int64_t limit = job->opts != NULL ? job->opts->max_pixels : 0;
    int64_t pixels = (int64_t)job->src_w * job->src_h * job->frames;
    if (limit <= 0 || pixels <= limit)
        return 0;
    if (job->frames > 1)
        return s_fail(413, job->why, job->why_len, "source has %dx%d pixels x %d frames, over the limit of %lld",
                      job->src_w, job->src_h, job->frames, (long long)limit);
    return s_fail(413, job->why, job->why_len, "source has %dx%d pixels, over the limit of %lld", job->src_w,
                  job->src_h, (long long)limit);
}

/* 400 when an enlarging operation would make a w×h (per frame) result
 * over max_output_pixels; called before the operation runs. */
static int s_check_budget(s_job_t *job, int w, int h)
{
    int64_t budget = job->opts != NULL ? job->opts->max_output_pixels : 0;
    if (budget <= 0 || (int64_t)w * h * job->frames <= budget)
        return 0;
    if (job->frames > 1)
        return s_fail(400, job->why, job->why_len, "result would be %dx%d pixels x %d frames, over the budget %lld", w,
                      h, job->frames, (long long)budget);
    return s_fail(400, job->why, job->why_len, "result would be %dx%d pixels, over the budget %lld", w, h,
                  (long long)budget);
}

/* ---- the image ------------------------------------------------------------------------------ */

/* Gives *img (owned) a page-height of `h`: the savers make frames of it. */
static int s_set_page_height(VipsImage **img, int h)
{
    VipsImage *copy = NULL;
    if (vips_copy(*img, &copy, NULL) != 0) /* *img may share its header with the pipeline's other images */
        return -1;
    vips_image_set_int(copy, "page-height", h);
    s_swap(img, copy);
    return 0;
}

/* A one-frame job's image must not carry a page-height: libvips keeps the
 * field through rotations and padding, where it no longer divides the
 * image into frames, and heifsave then writes several images. Takes
 * *img and gives it back without the field. Returns 0 or -1. */
static int s_drop_page_height(VipsImage **img)
{
    if (vips_image_get_typeof(*img, "page-height") == 0)
        return 0;
    VipsImage *copy = NULL;
    if (vips_copy(*img, &copy, NULL) != 0)
        return -1;
    vips_image_remove(copy, "page-height");
    s_swap(img, copy);
    return 0;
}

/* Decodes job->img into memory: the operations that read pixels out of
 * order (rotate, flip, smart crop, per-frame work) cannot run on a
 * sequential load. 0, or 415/500. */
static int s_materialize(s_job_t *job)
{
    if (!job->seq)
        return 0;
    s_watch(job, job->img);
    VipsImage *mem = vips_image_copy_memory(job->img);
    if (mem == NULL)
        return s_stopped(job) ? s_fail(504, job->why, job->why_len, S_STOPPED_WHY)
                              : s_broken(job, "cannot decode the source");
    s_swap(&job->img, mem);
    job->seq = false;
    return 0;
}

/* Makes job->img the whole upright source (in sRGB or grey) when no
 * pixel operation has made it yet. 0, or 415/500. */
static int s_ready(s_job_t *job)
{
    if (job->img != NULL)
        return 0;
    job->img = job->frames == 1 ? g_object_ref(job->head) : s_load(job);
    if (job->img == NULL)
        return s_fail(415, job->why, job->why_len, "cannot decode the source");
    job->seq = true;
    if (job->frames == 1 && s_drop_page_height(&job->img) != 0)
        return s_fail(500, job->why, job->why_len, "cannot copy the image header");
    VipsImage *next = NULL;
    if (vips_image_get_interpretation(job->img) == VIPS_INTERPRETATION_CMYK) {
        /* the colours given to background and extend are RGB */
        if (vips_colourspace(job->img, &next, VIPS_INTERPRETATION_sRGB, NULL) != 0)
            return s_broken(job, "cannot convert CMYK to sRGB");
        s_swap(&job->img, next);
    }
    if (job->orientation <= 1)
        return 0;
    int rc = s_materialize(job);
    if (rc != 0)
        return rc;
    if (vips_autorot(job->img, &next, NULL) != 0)
        return s_fail(500, job->why, job->why_len, "cannot apply the EXIF orientation");
    s_swap(&job->img, next);
    return 0;
}

/* s_ready, then the upright size of one frame into *w, *h. 0, or 415/500. */
static int s_ready_dims(s_job_t *job, int *w, int *h)
{
    int rc = s_ready(job);
    if (rc == 0)
        s_dims(job, w, h);
    return rc;
}

/* The largest value of a band of img (255 or 65535). */
static double s_max_value(VipsImage *img)
{
    VipsInterpretation interp = vips_image_get_interpretation(img);
    return interp == VIPS_INTERPRETATION_RGB16 || interp == VIPS_INTERPRETATION_GREY16 ? 65535.0 : 255.0;
}

/* The colour 0xRRGGBB as the first n band values of img: RGB (or its grey
 * for a grey image), then opaque alpha. NULL when n is out of range.
 * Caller unrefs (vips_area_unref). */
static VipsArrayDouble *s_ink(VipsImage *img, uint32_t rgb, int n)
{
    double max = s_max_value(img), scale = max / 255.0, v[8];
    double c[3] = {(rgb >> 16 & 0xff) * scale, (rgb >> 8 & 0xff) * scale, (rgb & 0xff) * scale};
    int colour = vips_image_get_bands(img) >= 3 ? 3 : 1;
    if (n < 1 || n > 8)
        return NULL;
    for (int i = 0; i < n; i++)
        v[i] = i >= colour ? max : colour == 3 ? c[i] : 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2];
    return vips_array_double_new(v, n);
}

/* ---- per-frame operations ---------------------------------------------------------------------- */

/* One operation on one frame, libvips style: 0, or -1 with the libvips
 * error set; *out is the caller's on success. */
typedef int (*s_frame_fn)(VipsImage *in, VipsImage **out, const void *arg);

/* Runs fn on each frame of job->img and stacks the results (the frames
 * of an animation are one tall image, page-height apart). On failure
 * *out is NULL and the libvips error set. */
static int s_each_frame(s_job_t *job, s_frame_fn fn, const void *arg, VipsImage **out)
{
    int w = vips_image_get_width(job->img), h = vips_image_get_height(job->img) / job->frames;
    VipsImage **done = g_new0(VipsImage *, (size_t)job->frames);
    int rc = 0;
    *out = NULL;
    for (int i = 0; i < job->frames && rc == 0; i++) {
        VipsImage *frame = NULL;
        rc = vips_extract_area(job->img, &frame, 0, i * h, w, h, NULL);
        if (rc == 0)
            rc = fn(frame, &done[i], arg);
        if (frame != NULL)
            g_object_unref(frame);
    }
    if (rc == 0)
        rc = vips_arrayjoin(done, out, job->frames, "across", 1, NULL);
    if (rc == 0)
        rc = s_set_page_height(out, vips_image_get_height(done[0]));
    for (int i = 0; i < job->frames; i++)
        if (done[i] != NULL)
            g_object_unref(done[i]);
    g_free(done);
    if (rc != 0 && *out != NULL) {
        g_object_unref(*out);
        *out = NULL;
    }
    return rc;
}

/* Applies fn to the image (each frame of an animation). `what` names the
 * operation in the 500's reason. 0, or 415/500. */
static int s_frames_apply(s_job_t *job, s_frame_fn fn, const void *arg, const char *what)
{
    int rc = s_ready(job);
    if (rc == 0 && job->frames > 1)
        rc = s_materialize(job); /* frames are read in parallel, out of order */
    if (rc != 0)
        return rc;
    VipsImage *next = NULL;
    if ((job->frames > 1 ? s_each_frame(job, fn, arg, &next) : fn(job->img, &next, arg)) != 0)
        return s_broken(job, "%s failed", what);
    s_swap(&job->img, next);
    return 0;
}

typedef struct {
    int x, y, w, h;
} s_rect_t;

static int s_fn_extract(VipsImage *in, VipsImage **out, const void *arg)
{
    const s_rect_t *r = arg;
    return vips_extract_area(in, out, r->x, r->y, r->w, r->h, NULL);
}

typedef struct {
    s_rect_t at; /* the image's place on the canvas, and the canvas's size */
    VipsArrayDouble *bg;
} s_embed_t;

static int s_fn_embed(VipsImage *in, VipsImage **out, const void *arg)
{
    const s_embed_t *e = arg;
    return vips_embed(in, out, e->at.x, e->at.y, e->at.w, e->at.h, "extend", VIPS_EXTEND_BACKGROUND, "background",
                      e->bg, NULL);
}

static int s_fn_rot(VipsImage *in, VipsImage **out, const void *arg)
{
    return vips_rot(in, out, *(const VipsAngle *)arg, NULL);
}

static int s_fn_flip(VipsImage *in, VipsImage **out, const void *arg)
{
    return vips_flip(in, out, *(const VipsDirection *)arg, NULL);
}

typedef int (*s_filter_fn)(VipsImage *in, VipsImage **out, const void *arg);

/* Runs a neighbourhood filter on colour weighted by alpha: on straight
 * alpha, a blur or sharpen would pull the colour hidden under transparent
 * pixels into the visible edge (dark or off-colour halos). Without alpha
 * the filter runs as it is. */
static int s_premultiplied(VipsImage *in, VipsImage **out, s_filter_fn filter, const void *arg)
{
    if (!vips_image_hasalpha(in))
        return filter(in, out, arg);
    VipsImage *t[3] = {NULL, NULL, NULL};
    int rc = vips_premultiply(in, &t[0], NULL) || filter(t[0], &t[1], arg) || vips_unpremultiply(t[1], &t[2], NULL) ||
             vips_cast(t[2], out, in->BandFmt, NULL);
    for (int i = 0; i < 3; i++)
        if (t[i] != NULL)
            g_object_unref(t[i]);
    return rc ? -1 : 0;
}

static int s_sharpen(VipsImage *in, VipsImage **out, const void *arg)
{
    (void)arg;
    return vips_sharpen(in, out, NULL);
}

static int s_gaussblur(VipsImage *in, VipsImage **out, const void *arg)
{
    return vips_gaussblur(in, out, *(const double *)arg, NULL);
}

static int s_fn_sharpen(VipsImage *in, VipsImage **out, const void *arg)
{
    return s_premultiplied(in, out, s_sharpen, arg);
}

static int s_fn_blur(VipsImage *in, VipsImage **out, const void *arg)
{
    return s_premultiplied(in, out, s_gaussblur, arg);
}

static int s_fn_grey(VipsImage *in, VipsImage **out, const void *arg)
{
    (void)arg;
    /* extra bands (alpha) pass through vips_colourspace */
    return vips_colourspace(in, out, VIPS_INTERPRETATION_B_W, NULL);
}

/* ---- geometry ------------------------------------------------------------------------------------ */

/* Where an inner w×h area sits in an outer ow×oh one at gravity g (smart
 * counts as center here): the offsets of a crop, or of the image on an
 * extended canvas. */
static void s_gravity_offsets(rf_gravity_t g, int ow, int oh, int w, int h, int *x, int *y)
{
    bool west = g == RF_GRAV_WEST || g == RF_GRAV_NORTHWEST || g == RF_GRAV_SOUTHWEST;
    bool east = g == RF_GRAV_EAST || g == RF_GRAV_NORTHEAST || g == RF_GRAV_SOUTHEAST;
    bool north = g == RF_GRAV_NORTH || g == RF_GRAV_NORTHWEST || g == RF_GRAV_NORTHEAST;
    bool south = g == RF_GRAV_SOUTH || g == RF_GRAV_SOUTHWEST || g == RF_GRAV_SOUTHEAST;
    *x = west ? 0 : east ? ow - w : (ow - w) / 2;
    *y = north ? 0 : south ? oh - h : (oh - h) / 2;
}

/* The planned result of a resize of a w×h image, and the vips_thumbnail
 * arguments that make it: box tw×th and size mode. */
typedef struct {
    int w, h;   /* planned result (for the budget: libvips rounds the same way or within a pixel) */
    int tw, th; /* the box given to vips_thumbnail */
    VipsSize size;
} s_resize_plan_t;

static s_resize_plan_t s_plan_resize(int w, int h, const rf_op_t *op)
{
    s_resize_plan_t p = {.tw = op->w > 0 ? op->w : VIPS_MAX_COORD, .th = op->h > 0 ? op->h : VIPS_MAX_COORD};
    double sx = (double)p.tw / w, sy = (double)p.th / h, s;
    switch (op->fit) {
    case RF_FIT_EXACT:
        p.size = VIPS_SIZE_FORCE;
        p.w = op->w;
        p.h = op->h;
        return p;
    case RF_FIT_FILL:
        /* cover: only the side that needs the larger scale constrains */
        if (sx >= sy)
            p.th = VIPS_MAX_COORD;
        else
            p.tw = VIPS_MAX_COORD;
        s = VIPS_MIN(VIPS_MAX(sx, sy), 1.0);
        p.size = VIPS_SIZE_DOWN;
        break;
    case RF_FIT_ENLARGE:
        s = VIPS_MAX(VIPS_MIN(sx, sy), 1.0);
        p.size = VIPS_SIZE_UP;
        break;
    default: /* inside, shrink */
        s = VIPS_MIN(VIPS_MIN(sx, sy), 1.0);
        p.size = VIPS_SIZE_DOWN;
        break;
    }
    /* rounded, as vips_thumbnail does (no libm: the worker does not link it) */
    p.w = VIPS_MAX(1, (int)(w * s + 0.5));
    p.h = VIPS_MAX(1, (int)(h * s + 0.5));
    return p;
}

/* resize/WxH[M]: with shrink-on-load when it is the first pixel operation.
 * 0, or 400/415/500. */
static int s_resize(s_job_t *job, const rf_op_t *op)
{
    int w, h;
    s_dims(job, &w, &h);
    s_resize_plan_t p = s_plan_resize(w, h, op);
    if ((int64_t)p.w * p.h > (int64_t)w * h) {
        int rc = s_check_budget(job, p.w, p.h);
        if (rc != 0)
            return rc;
    }
    VipsImage *next = NULL;
    if (job->img == NULL) {
        char options[48];
        s_load_options(job, options, sizeof(options));
        if (vips_thumbnail_buffer((void *)job->src, job->len, &next, p.tw, "height", p.th, "size", p.size,
                                  "option_string", options, "no_rotate", job->frames > 1, NULL) != 0)
            return s_fail(415, job->why, job->why_len, "cannot decode the source");
        job->seq = true;
        if (job->frames == 1 && s_drop_page_height(&next) != 0) {
            g_object_unref(next);
            return s_fail(500, job->why, job->why_len, "cannot copy the image header");
        }
    } else if (vips_thumbnail_image(job->img, &next, p.tw, "height", p.th, "size", p.size, "no_rotate", TRUE, NULL) !=
               0) {
        return s_broken(job, "resize to %dx%d failed", op->w, op->h);
    }
    s_swap(&job->img, next);
    return 0;
}

/* A thread that polls the job's should_stop while a libvips call that
 * emits no "eval" of ours runs (smart crop's analysis computes images of
 * its own), and kills `img`, its input, once the job must stop: libvips
 * then fails the call at its next region of `img`. It polls once at once,
 * so a job already over when the call starts is always seen. */
typedef struct {
    const img_opts_t *o;
    VipsImage *img;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done, started, killed;
    pthread_t th;
} s_guard_t;

static void *s_guard_run(void *arg)
{
    s_guard_t *g = arg;
    pthread_mutex_lock(&g->mu);
    for (;;) {
        if (g->o->should_stop(g->o->stop_arg)) {
            vips_image_set_kill(g->img, TRUE);
            g->killed = true;
            break;
        }
        if (g->done)
            break;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 20 * 1000000;
        if (ts.tv_nsec >= 1000000000)
            ts.tv_sec++, ts.tv_nsec -= 1000000000;
        pthread_cond_timedwait(&g->cv, &g->mu, &ts);
    }
    pthread_mutex_unlock(&g->mu);
    return NULL;
}

/* Starts guarding `img` (borrowed: outlives the guard) when the job can
 * be stopped; without a thread the call simply runs unguarded. */
static void s_guard_begin(s_guard_t *g, const s_job_t *job, VipsImage *img)
{
    memset(g, 0, sizeof(*g));
    if (job->opts == NULL || job->opts->should_stop == NULL)
        return;
    g->o = job->opts;
    g->img = img;
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    g->started = pthread_create(&g->th, NULL, s_guard_run, g) == 0;
    if (g->started)
        pthread_setname_np(g->th, "img-stop-guard");
}

/* Stops the guard; returns whether it killed the image. */
static bool s_guard_end(s_guard_t *g)
{
    if (!g->started)
        return false;
    pthread_mutex_lock(&g->mu);
    g->done = true;
    pthread_cond_signal(&g->cv);
    pthread_mutex_unlock(&g->mu);
    pthread_join(g->th, NULL);
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->cv);
    return g->killed; /* not vips_image_iskilled: libvips clears the flag once it has seen it */
}

/* The area a w×h crop takes at the chain's gravity (clipped to the image);
 * smart looks at the first frame. 0, or 415/500. */
static int s_gravity_area(s_job_t *job, int w, int h, s_rect_t *r)
{
    int iw, ih;
    s_dims(job, &iw, &ih);
    r->w = w < iw ? w : iw;
    r->h = h < ih ? h : ih;
    if (job->gravity != RF_GRAV_SMART) {
        s_gravity_offsets(job->gravity, iw, ih, r->w, r->h, &r->x, &r->y);
        return 0;
    }
    int rc = s_materialize(job); /* attention reads the image several times */
    if (rc != 0)
        return rc;
    VipsImage *first = NULL, *crop = NULL;
    rc = vips_extract_area(job->img, &first, 0, 0, iw, ih, NULL);
    s_guard_t guard;
    s_guard_begin(&guard, job, job->img);
    if (rc == 0)
        rc = vips_smartcrop(first, &crop, r->w, r->h, "interesting", VIPS_INTERESTING_ATTENTION, NULL);
    if (s_guard_end(&guard)) { /* stopped: whatever the analysis returned, the job is over */
        if (first != NULL)
            g_object_unref(first);
        if (crop != NULL)
            g_object_unref(crop);
        return s_fail(504, job->why, job->why_len, S_STOPPED_WHY);
    }
    if (rc == 0) { /* vips_extract_area (under smartcrop) records the area as negative offsets */
        r->x = -crop->Xoffset;
        r->y = -crop->Yoffset;
    }
    if (first != NULL)
        g_object_unref(first);
    if (crop != NULL)
        g_object_unref(crop);
    return rc == 0 ? 0 : s_broken(job, "smart crop failed");
}

/* crop/WxH+X+Y (clipped; 400 when entirely outside) or crop/WxH at
 * gravity. 0, or 400/415/500. */
static int s_crop(s_job_t *job, int w, int h, int x, int y)
{
    int iw, ih, rc = s_ready_dims(job, &iw, &ih);
    if (rc != 0)
        return rc;
    s_rect_t r = {x, y, w, h};
    if (x < 0 || y < 0) {
        rc = s_gravity_area(job, w, h, &r);
        if (rc != 0)
            return rc;
    } else if (x >= iw || y >= ih) {
        return s_fail(400, job->why, job->why_len, "crop %dx%d+%d+%d is outside the %dx%d image", w, h, x, y, iw, ih);
    } else {
        r.w = w < iw - x ? w : iw - x;
        r.h = h < ih - y ? h : ih - y;
    }
    return s_frames_apply(job, s_fn_extract, &r, "crop");
}

/* thumbnail/WxH: cover the box without enlarging, then crop it at gravity. */
static int s_thumbnail(s_job_t *job, const rf_op_t *op)
{
    rf_op_t fill = {.kind = RF_OP_RESIZE, .w = op->w, .h = op->h, .fit = RF_FIT_FILL};
    int rc = s_resize(job, &fill);
    return rc != 0 ? rc : s_crop(job, op->w, op->h, -1, -1);
}

/* extend/WxH: pad to at least W×H with the background, the image at
 * gravity. 0, or 400/415/500. */
static int s_extend(s_job_t *job, const rf_op_t *op)
{
    int iw, ih, rc = s_ready_dims(job, &iw, &ih);
    if (rc != 0)
        return rc;
    s_embed_t e = {.at = {.w = op->w > iw ? op->w : iw, .h = op->h > ih ? op->h : ih}};
    if (e.at.w == iw && e.at.h == ih)
        return 0;
    rc = s_check_budget(job, e.at.w, e.at.h);
    if (rc != 0)
        return rc;
    /* the image is the inner area: its offsets are the canvas's mirror */
    s_gravity_offsets(job->gravity == RF_GRAV_SMART ? RF_GRAV_CENTER : job->gravity, e.at.w, e.at.h, iw, ih, &e.at.x,
                      &e.at.y);
    e.bg = s_ink(job->img, job->bg, vips_image_get_bands(job->img));
    if (e.bg == NULL)
        return s_fail(500, job->why, job->why_len, "extend: an image of %d bands", vips_image_get_bands(job->img));
    rc = s_frames_apply(job, s_fn_embed, &e, "extend");
    vips_area_unref(VIPS_AREA(e.bg));
    return rc;
}

/* rotate/A, flip and flop read the image out of order. */
static int s_random_access_op(s_job_t *job, s_frame_fn fn, const void *arg, const char *what)
{
    int rc = s_ready(job);
    if (rc == 0)
        rc = s_materialize(job);
    return rc != 0 ? rc : s_frames_apply(job, fn, arg, what);
}

static int s_rotate(s_job_t *job, int angle)
{
    VipsAngle a = angle == 90 ? VIPS_ANGLE_D90 : angle == 180 ? VIPS_ANGLE_D180 : VIPS_ANGLE_D270;
    return s_random_access_op(job, s_fn_rot, &a, "rotate");
}

static int s_mirror(s_job_t *job, VipsDirection dir)
{
    return s_random_access_op(job, s_fn_flip, &dir, dir == VIPS_DIRECTION_VERTICAL ? "flip" : "flop");
}

/* The number of H-row bands of an image ih rows high (the last may be lower). */
static int s_tiles(int ih, int h)
{
    return (ih + h - 1) / h;
}

/* split/H/N: the N-th band of H rows of the image, full width. 0, or
 * 400/415/500. */
static int s_split_tile(s_job_t *job, const rf_op_t *op)
{
    int iw, ih, rc = s_ready_dims(job, &iw, &ih);
    if (rc != 0)
        return rc;
    if (op->x >= s_tiles(ih, op->h))
        return s_fail(400, job->why, job->why_len, "split: no tile %d, the %dx%d image has %d tiles of %d rows", op->x,
                      iw, ih, s_tiles(ih, op->h), op->h);
    return s_crop(job, iw, op->h, 0, op->x * op->h);
}

/* One operation of the chain; the settings were read by s_settings. 0, or
 * the failure's status with why filled. */
static int s_apply(s_job_t *job, const rf_op_t *op)
{
    switch (op->kind) {
    case RF_OP_RESIZE: return s_resize(job, op);
    case RF_OP_THUMBNAIL: return s_thumbnail(job, op);
    case RF_OP_CROP: return s_crop(job, op->w, op->h, op->x, op->y);
    case RF_OP_EXTEND: return s_extend(job, op);
    case RF_OP_ROTATE: return s_rotate(job, op->angle);
    case RF_OP_FLIP: return s_mirror(job, VIPS_DIRECTION_VERTICAL);
    case RF_OP_FLOP: return s_mirror(job, VIPS_DIRECTION_HORIZONTAL);
    case RF_OP_SHARPEN: return s_frames_apply(job, s_fn_sharpen, NULL, "sharpen");
    case RF_OP_BLUR: return s_frames_apply(job, s_fn_blur, &op->sigma, "blur");
    case RF_OP_GRAYSCALE: return s_frames_apply(job, s_fn_grey, NULL, "grayscale");
    case RF_OP_BYORIGINAL: return s_fail(500, job->why, job->why_len, "byoriginal was not expanded");
    case RF_OP_SPLIT: return op->x >= 0 ? s_split_tile(job, op) : 0; /* the manifest: s_manifest */
    default: return 0;
    }
}

/* ---- output ------------------------------------------------------------------------------------------- */

/* Flattens alpha onto the background colour (jpeg has no alpha). */
static int s_flatten(s_job_t *job)
{
    VipsArrayDouble *bg = s_ink(job->img, job->bg, vips_image_get_bands(job->img) - 1);
    if (bg == NULL)
        return s_fail(500, job->why, job->why_len, "cannot flatten an image of %d bands",
                      vips_image_get_bands(job->img));
    VipsImage *out = NULL;
    int rc = vips_flatten(job->img, &out, "background", bg, "max_alpha", s_max_value(job->img), NULL);
    vips_area_unref(VIPS_AREA(bg));
    if (rc != 0)
        return s_broken(job, "cannot flatten the alpha channel");
    s_swap(&job->img, out);
    return 0;
}

/* The fields an animation needs, which strip keeps. */
static bool s_animation_field(const char *name)
{
    static const char *const keep[] = {"page-height", "delay", "loop", "gif-delay", "gif-loop"};
    for (size_t i = 0; i < sizeof(keep) / sizeof(keep[0]); i++)
        if (strcmp(name, keep[i]) == 0)
            return true;
    return false;
}

/* Removes every metadata item but the animation's from a private copy of
 * *img. The savers' `strip` is not enough on its own: libvips 8.14.1's
 * webpsave writes EXIF and XMP regardless. Returns 0 or -1 (libvips error
 * set). */
static int s_strip(VipsImage **img)
{
    VipsImage *copy = NULL;
    /* Without its profile a wide-gamut image (Display P3, Adobe RGB) would
     * be read as sRGB and look dull: its colour goes to sRGB first. */
    if (vips_image_get_typeof(*img, VIPS_META_ICC_NAME) != 0 && (*img)->Bands >= 3 &&
        (*img)->Type != VIPS_INTERPRETATION_CMYK) {
        VipsImage *srgb = NULL;
        if (vips_icc_transform(*img, &srgb, "srgb", "embedded", TRUE, "intent", VIPS_INTENT_RELATIVE, NULL) != 0)
            return -1;
        s_swap(img, srgb);
    }
    if (vips_copy(*img, &copy, NULL) != 0) /* *img may share its header with the pipeline's other images */
        return -1;
    gchar **fields = vips_image_get_fields(copy);
    for (int i = 0; fields[i] != NULL; i++)
        if (!s_animation_field(fields[i]))
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

/* Encodes job->img in job->fmt. Returns 0 or -1 (libvips error set). */
static int s_save(const s_job_t *job, void **buf, size_t *len)
{
    VipsImage *img = job->img;
    int q = job->q, opt = job->optimize, strip = job->optimize || job->strip;
    switch (job->fmt) {
    case RF_FMT_JPEG: return vips_jpegsave_buffer(img, buf, len, "Q", q, "strip", strip, "optimize_coding", opt, NULL);
    case RF_FMT_PNG: return vips_pngsave_buffer(img, buf, len, "compression", opt ? 9 : 6, "strip", strip, NULL);
    case RF_FMT_WEBP: return vips_webpsave_buffer(img, buf, len, "Q", q, "strip", strip, "effort", opt ? 6 : 4, NULL);
    case RF_FMT_AVIF:
        /* 8 bit: what every AVIF decoder handles, and the fastest */
        return vips_heifsave_buffer(img, buf, len, "compression", VIPS_FOREIGN_HEIF_COMPRESSION_AV1, "Q", q, "effort",
                                    S_AVIF_EFFORT, "bitdepth", 8, "strip", strip, NULL);
    case RF_FMT_GIF: return vips_gifsave_buffer(img, buf, len, "strip", strip, NULL);
    default: vips_error("img_core", "no output format"); return -1;
    }
}

/* Prepares the final image for job->fmt and encodes it into *out. 0, or
 * 415/500, or 504 when the job was stopped meanwhile. */
static int s_encode(s_job_t *job, img_result_t *out)
{
    void *buf = NULL;
    size_t len = 0;
    int rc = s_ready(job);
    if (rc != 0)
        return rc;
    if (job->fmt == RF_FMT_JPEG && vips_image_hasalpha(job->img) && (rc = s_flatten(job)) != 0)
        return rc;
    if ((job->optimize || job->strip) && s_strip(&job->img) != 0)
        return s_fail(500, job->why, job->why_len, "cannot strip metadata");
    s_watch(job, job->img); /* the pixels are computed during the save */
    if (s_save(job, &buf, &len) != 0)
        return s_stopped(job) ? s_fail(504, job->why, job->why_len, S_STOPPED_WHY)
                              : s_broken(job, "cannot encode %s", rf_format_name(job->fmt));
    if ((job->optimize || job->strip) && job->fmt == RF_FMT_WEBP)
        s_webp_drop_metadata(buf, &len);
    out->data = buf;
    out->len = len;
    out->format = job->fmt;
    out->mime = rf_format_mime(job->fmt);
    out->frames = job->frames;
    out->source_frames = job->src_frames;
    snprintf(out->frames_note, sizeof(out->frames_note), "%s", job->frames_note);
    s_dims(job, &out->width, &out->height);
    return 0;
}

/* split/H/manifest.json: the tiles of the final image as JSON instead of
 * the image, {"width", "height", "tile_height", "count", "tiles": [{"index",
 * "y", "width", "height"}, ...]}, sizes of one frame. No pixel is decoded
 * unless an operation needs them (smart crop, rotation): a truncated source
 * shows only when its tiles are asked for. 0, or 415/500. */
static int s_manifest(s_job_t *job, int tile_h, img_result_t *out)
{
    int iw, ih, rc = s_ready_dims(job, &iw, &ih);
    if (rc != 0)
        return rc;
    int n = s_tiles(ih, tile_h);
    json_t *tiles = json_array(), *doc = NULL;
    for (int i = 0; tiles != NULL && i < n; i++) {
        int y = i * tile_h, h = ih - y < tile_h ? ih - y : tile_h;
        if (json_array_append_new(tiles, json_pack("{s:i,s:i,s:i,s:i}", "index", i, "y", y, "width", iw, "height", h)) <
            0)
            break;
    }
    if (tiles != NULL && json_array_size(tiles) == (size_t)n)
        doc = json_pack("{s:i,s:i,s:i,s:i,s:o}", "width", iw, "height", ih, "tile_height", tile_h, "count", n, "tiles",
                        tiles);
    else if (tiles != NULL)
        json_decref(tiles);
    char *text = doc != NULL ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (text == NULL)
        return s_fail(500, job->why, job->why_len, "split: out of memory for the manifest");
    out->len = strlen(text);
    out->data = g_memdup2(text, out->len); /* the result is freed with g_free */
    free(text);
    out->format = RF_FMT_KEEP;
    out->mime = "application/json";
    out->width = iw;
    out->height = ih;
    out->frames = job->frames;
    out->source_frames = job->src_frames;
    return 0;
}

/* Runs the whole job: header, chain, operations, encoding. 0 or a status. */
static int s_run(s_job_t *job, const rf_chain_t *chain, img_result_t *out)
{
    int rc = s_open(job);
    if (rc == 0)
        rc = s_expand(job, chain);
    if (rc != 0)
        return rc;
    s_settings(job);
    s_plan_frames(job);
    rc = s_check_source_pixels(job);
    for (size_t i = 0; rc == 0 && i < job->n_ops; i++)
        rc = s_apply(job, &job->ops[i]);
    if (rc != 0)
        return rc;
    return job->manifest_h > 0 ? s_manifest(job, job->manifest_h, out) : s_encode(job, out);
}

int img_transform(const void *src, size_t len, const rf_chain_t *chain, const img_opts_t *opts, img_result_t *out,
                  char *why, size_t why_len)
{
    s_job_t *job = g_new0(s_job_t, 1); /* ~3 KB of operations: not on a job thread's stack */
    *job = (s_job_t){.src = src, .len = len, .opts = opts, .why = why, .why_len = why_len};
    memset(out, 0, sizeof(*out));
    if (why != NULL && why_len > 0)
        why[0] = '\0';
    int rc = s_run(job, chain, out);
    if (rc != 0)
        img_result_clear(out);
    if (job->img != NULL)
        g_object_unref(job->img);
    if (job->head != NULL)
        g_object_unref(job->head);
    g_free(job);
    return rc == 0 ? 200 : rc;
}
