/*  refract-video-worker — serves the "video" service of the bus: MP4 to
 *  HLS (playlists and MPEG-TS segments) from sources it reads by byte
 *  range (vid_reader: a file it sees, or ranges through the gateway).
 *
 *    refract-video-worker -c /etc/refract/refract.yaml
 *
 *  The process (config, logs, metrics, signals, the bus) is
 *  common/rf_worker_app; the transform is vid_core. This file reads a
 *  JOB's chain, opens its source, finds or makes the index, and answers.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <libavutil/log.h>

#include "rf_config.h"
#include "rf_log.h"
#include "rf_worker.h"
#include "rf_worker_app.h"
#include "vid_core.h"
#include "vid_ixcache.h"
#include "vid_reader.h"
#include "vid_trims.h"

/* The largest segment held for a REPLY: a 60 s segment at 30 Mbit/s. */
#define VID_SEGMENT_MAX (256u << 20)

typedef struct {
    const rf_config_t *cfg;
    char gateway_url[300];
    vid_ixcache_t *indexes;
    vid_trims_t *trims; /* trimmed copies for HLS of a trim */
} s_app_t;

/* What the gateway's mp4hls row asked for (gw_func.c s_hls_json). */
typedef struct {
    char what[16]; /* media, master, segment, init */
    int segment, version, sequence, duration;
    char media[600], prefix[600], suffix[16];
    char init[600];                   /* fMP4: the init section's URI in the playlist */
    vid_seg_format_t format;          /* asked for: VID_SEG_FMP4, or TS where the codecs allow */
    vid_range_t trim[VID_MAX_RANGES]; /* HLS of a trim: these ranges first */
    int ntrim;
    int trim_accurate; /* cut on frames (else on keyframes) */
} s_hls_job_t;

/* Copies string member `name` of o into dst[size]: printable, not
 * starting with '/', and unless `uri` (a relative URI: '/' and '%XX'
 * allowed) no '/' or '%'. -1 when absent, too long or otherwise. */
static int s_text(const json_t *o, const char *name, char *dst, size_t size, bool uri)
{
    const char *v = json_string_value(json_object_get(o, name));
    if (v == NULL || strlen(v) >= size || (!uri && strpbrk(v, "%/") != NULL) || v[0] == '/')
        return -1;
    for (const char *p = v; *p; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
            return -1;
    snprintf(dst, size, "%s", v);
    return 0;
}

static int s_str(const json_t *o, const char *name, char *dst, size_t size)
{
    return s_text(o, name, dst, size, false);
}

/* Integer member `name` of o within [lo, hi] into *dst; -1 otherwise. */
/* Boolean member `name` of o: 1 when true or absent (frame-accurate cuts
 * are the default), 0 when false, -1 when not a boolean. */
static int s_accurate(const json_t *o, const char *name)
{
    const json_t *v = json_object_get(o, name);
    return v == NULL ? 1 : json_is_boolean(v) ? json_is_true(v) : -1;
}

static int s_int(const json_t *o, const char *name, int lo, int hi, int *dst)
{
    json_t *v = json_object_get(o, name);
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return -1;
    *dst = (int)json_integer_value(v);
    return 0;
}

static int s_ranges(const json_t *ranges, vid_range_t *r, int *n);

static int s_parse(const json_t *chain, s_hls_job_t *j, char *why, size_t why_len)
{
    const json_t *op = json_is_array(chain) && json_array_size(chain) == 1 ? json_array_get(chain, 0) : NULL;
    const char *name = json_string_value(json_object_get(op, "op"));
    if (name == NULL || strcmp(name, "hls") != 0) {
        snprintf(why, why_len, "the chain must be one {\"op\": \"hls\"} operation");
        return -1;
    }
    const char *format = json_string_value(json_object_get(op, "format"));
    j->format = format != NULL && strcmp(format, "fmp4") == 0 ? VID_SEG_FMP4 : VID_SEG_TS;
    snprintf(j->init, sizeof(j->init), "init.mp4");
    if ((format != NULL && strcmp(format, "fmp4") != 0 && strcmp(format, "ts") != 0) ||
        (json_object_get(op, "init") != NULL && s_text(op, "init", j->init, sizeof(j->init), true) < 0) ||
        strchr(j->init, '"') != NULL || s_str(op, "what", j->what, sizeof(j->what)) < 0 ||
        (strcmp(j->what, "media") != 0 && strcmp(j->what, "master") != 0 && strcmp(j->what, "segment") != 0 &&
         strcmp(j->what, "init") != 0) ||
        s_int(op, "segment", 0, VID_MAX_SEGMENTS, &j->segment) < 0 || s_int(op, "version", 3, 7, &j->version) < 0 ||
        s_int(op, "sequence", 0, 1000000000, &j->sequence) < 0 || s_int(op, "duration", 1, 60, &j->duration) < 0 ||
        s_text(op, "media", j->media, sizeof(j->media), true) < 0 ||
        s_text(op, "segment_prefix", j->prefix, sizeof(j->prefix), true) < 0 ||
        s_str(op, "segment_suffix", j->suffix, sizeof(j->suffix)) < 0) {
        snprintf(why, why_len,
                 "bad hls operation (what, segment, version, sequence, duration, media, segment_prefix, "
                 "segment_suffix, format, init)");
        return -1;
    }
    const json_t *trim = json_object_get(op, "trim_ms");
    if (trim != NULL &&
        (s_ranges(trim, j->trim, &j->ntrim) < 0 || (j->trim_accurate = s_accurate(op, "trim_accurate")) < 0)) {
        snprintf(why, why_len, "bad hls operation (trim_ms, trim_accurate)");
        return -1;
    }
    return 0;
}

/* The status of a vid_core call that failed: the reader's (502, 504)
 * with its reason in why when a read failed, else `otherwise` (why keeps
 * vid_core's reason). */
static int s_failed(const vid_reader_t *r, int otherwise, char *why, size_t why_len)
{
    const char *rwhy;
    int failed = vid_reader_failed(r, &rwhy);
    if (failed)
        snprintf(why, why_len, "%s", rwhy);
    return failed ? failed : otherwise;
}

/* What names this version of a source: its ref, host, size and validator. */
static void s_source_key(const char *ref, const char *host, vid_reader_t *r, char *key, size_t len)
{
    snprintf(key, len, "%s\n%s\n%lld\n%s", ref, host ? host : "", (long long)vid_reader_source(r)->size,
             vid_reader_validator(r));
}

/* The index of the reader's source (ref, host) for segments of `duration`
 * s: from the cache, else read from the moov and kept. NULL with
 * status/why. */
static vid_index_t *s_index(s_app_t *app, const char *ref, const char *host, vid_reader_t *r, int duration,
                            vid_seg_format_t format, int *cached, int *status, char *why, size_t why_len)
{
    char key[4600], src[4500];
    s_source_key(ref, host, r, src, sizeof(src));
    snprintf(key, sizeof(key), "%s\nd=%d\nf=%d", src, duration, (int)format);
    /* Without a validator a changed source of the same size could reuse a
     * stale plan; vid_hls_segment checks tracks and sample counts, but
     * only a validator makes the key safe. */
    bool keyed = vid_reader_validator(r)[0] != '\0';
    vid_index_t *ix = keyed ? vid_ixcache_get(app->indexes, key) : NULL;
    *cached = ix != NULL;
    if (ix != NULL)
        return ix;
    ix = vid_index_new_as(vid_reader_source(r), (double)duration, format, why, why_len);
    if (ix == NULL) {
        *status = s_failed(r, 415, why, why_len);
        return NULL;
    }
    if (keyed)
        vid_ixcache_put(app->indexes, key, ix);
    return ix;
}

/* A master playlist of the one rendition: BANDWIDTH is the peak bit rate
 * of its segments (their byte spans over their durations), as RFC 8216
 * 4.3.4.2 asks. */
static char *s_master(const vid_index_t *ix, const s_hls_job_t *j, size_t *len)
{
    double peak = 0;
    for (int i = 0; i < vid_index_segments(ix); i++) {
        vid_segment_info_t s;
        if (vid_index_segment_info(ix, i, &s) == 0 && s.duration > 0) {
            double bps = (double)(s.pos_hi - s.pos_lo) * 8.0 / s.duration;
            if (bps > peak)
                peak = bps;
        }
    }
    char *out = NULL;
    int n = asprintf(&out, "#EXTM3U\n#EXT-X-VERSION:%d\n#EXT-X-STREAM-INF:BANDWIDTH=%lld\n%s\n", j->version,
                     (long long)(peak + 0.5) + 1, j->media);
    if (n < 0)
        return NULL;
    *len = (size_t)n;
    return out;
}

/* A growing buffer for a segment's TS packets. */
typedef struct {
    uint8_t *data;
    size_t len, cap;
} s_buf_t;

static int s_buf_write(void *arg, const uint8_t *p, size_t n)
{
    s_buf_t *b = arg;
    if (b->len + n > VID_SEGMENT_MAX)
        return -1;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 1 << 20;
        while (cap < b->len + n)
            cap *= 2;
        uint8_t *d = realloc(b->data, cap);
        if (d == NULL)
            return -1;
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

static int s_should_stop(void *job)
{
    return rf_worker_job_should_stop(job);
}

/* The job's source, read as it asks (NULL with *status and why). */
static vid_reader_t *s_open(s_app_t *app, const rf_worker_job_t *job, int *status, char *why, size_t why_len)
{
    vid_reader_opts_t ro = {.gateway_url = app->gateway_url,
                            .read_ahead = app->cfg->video_worker.read_ahead,
                            .request_id = job->request_id,
                            .should_stop = s_should_stop,
                            .stop_arg = (void *)job,
                            .deadline_ms = job->deadline_ms};
    return vid_reader_open(job->spec->source.ref, job->spec->source.host, &ro, status, why, why_len);
}

/* Answers one hls job into res; returns its status. */
static int s_run(s_app_t *app, const rf_worker_job_t *job, const s_hls_job_t *j, rf_worker_result_t *res,
                 vid_reader_t **r, int *cached, char *why, size_t why_len)
{
    int status = 0;
    if ((*r = s_open(app, job, &status, why, why_len)) == NULL)
        return status;
    const char *ref = job->spec->source.ref, *host = job->spec->source.host;
    char copy[600], copy_ref[620];
    if (j->ntrim > 0) { /* HLS of a trim: the copy is the source from here on */
        char key[4500];
        s_source_key(ref, host, *r, key, sizeof(key));
        int rc = vid_trims_get(app->trims, vid_reader_source(*r), key, j->trim, j->ntrim, j->trim_accurate, copy,
                               sizeof(copy), why, why_len);
        if (rc != 0) {
            return s_failed(*r, rc == 1 ? 400 : 415, why, why_len);
        }
        snprintf(copy_ref, sizeof(copy_ref), "file://%s", copy);
        vid_reader_opts_t ro = {.should_stop = s_should_stop, .stop_arg = (void *)job, .deadline_ms = job->deadline_ms};
        vid_reader_destroy(r);
        if ((*r = vid_reader_open(copy_ref, NULL, &ro, &status, why, why_len)) == NULL)
            return status;
        ref = copy_ref;
        host = NULL;
    }
    vid_index_t *ix = s_index(app, ref, host, *r, j->duration, j->format, cached, &status, why, why_len);
    if (ix == NULL)
        return status;
    char *text = NULL;
    size_t len = 0;
    bool fmp4 = vid_index_format(ix) == VID_SEG_FMP4;
    const char *suffix = fmp4 ? ".m4s" : ".ts"; /* the segments' names say what they are */
    if (strcmp(j->what, "media") == 0) {
        char uri[1300]; /* the prefix's '%' doubled: the pattern's only conversion is the number */
        size_t u = 0;
        for (const char *p = j->prefix; *p; p++) {
            if (*p == '%')
                uri[u++] = '%';
            uri[u++] = *p;
        }
        snprintf(uri + u, sizeof(uri) - u, "%%d%s", suffix);
        vid_hls_opts_t o = {
            .version = j->version, .media_sequence = j->sequence, .segment_uri = uri, .init_uri = j->init};
        status = vid_hls_playlist(ix, &o, &text, &len) == 0 ? 200 : 500;
        snprintf(res->content_type, sizeof(res->content_type), "application/vnd.apple.mpegurl");
    } else if (strcmp(j->what, "master") == 0) {
        status = (text = s_master(ix, j, &len)) != NULL ? 200 : 500;
        snprintf(res->content_type, sizeof(res->content_type), "application/vnd.apple.mpegurl");
    } else if (strcmp(j->what, "init") == 0 ? !fmp4 : strcmp(j->suffix, suffix) != 0) {
        status = 404;
        snprintf(why, why_len, "this video's HLS is %s: its segments are %.80sN%s%s", fmp4 ? "fMP4" : "MPEG-TS",
                 j->prefix, suffix, fmp4 ? " after init.mp4" : " (no init section)");
    } else if (strcmp(j->what, "segment") == 0 && j->segment >= vid_index_segments(ix)) {
        status = 404;
        snprintf(why, why_len, "no segment %d: the video has %d", j->segment, vid_index_segments(ix));
    } else {
        s_buf_t b = {0};
        bool init = strcmp(j->what, "init") == 0;
        int rc = init ? vid_hls_init(ix, vid_reader_source(*r), s_buf_write, &b, why, why_len)
                      : vid_hls_segment(ix, vid_reader_source(*r), j->segment, s_buf_write, &b, why, why_len);
        if (rc == 0) {
            status = 200;
            text = (char *)b.data;
            len = b.len;
            snprintf(res->content_type, sizeof(res->content_type), "%s", fmp4 ? "video/mp4" : "video/mp2t");
        } else {
            status = s_failed(*r, 415, why, why_len);
            free(b.data);
        }
    }
    vid_index_destroy(&ix);
    if (status == 500 && why[0] == '\0')
        snprintf(why, why_len, "out of memory");
    if (status == 200) {
        res->body = text;
        res->body_len = len;
        res->body_free = free;
    } else {
        free(text);
    }
    return status;
}

/* A thumbnail job: {"op": "thumbnail", "ms", "width", "height", "format",
 * "quality", "keyframe"} (gw_func.c s_thumb_json). */
static int s_thumb_parse(const json_t *op, vid_thumb_opts_t *o, char *why, size_t why_len)
{
    static const char *const formats[] = {"jpeg", "png", "webp"};
    json_t *ms = json_object_get(op, "ms");
    const char *f = json_string_value(json_object_get(op, "format"));
    int kf = json_is_true(json_object_get(op, "keyframe"));
    memset(o, 0, sizeof(*o));
    o->format = (vid_img_format_t)-1;
    for (int i = 0; f != NULL && i < 3; i++)
        if (strcmp(f, formats[i]) == 0)
            o->format = (vid_img_format_t)i;
    if (!json_is_integer(ms) || json_integer_value(ms) < 0 ||
        json_integer_value(ms) > (json_int_t)VID_MAX_DURATION_S * 1000 || (int)o->format < 0 ||
        s_int(op, "width", 0, 16384, &o->width) < 0 || s_int(op, "height", 0, 16384, &o->height) < 0 ||
        s_int(op, "quality", 1, 100, &o->quality) < 0) {
        snprintf(why, why_len, "bad thumbnail operation (ms, width, height, format, quality, keyframe)");
        return -1;
    }
    o->time = (double)json_integer_value(ms) / 1000.0;
    o->keyframe = kf;
    return 0;
}

/* Answers a thumbnail job into res; returns its status. */
static int s_thumb_run(s_app_t *app, const rf_worker_job_t *job, const json_t *op, rf_worker_result_t *res,
                       vid_reader_t **r, char *what, size_t what_len, char *why, size_t why_len)
{
    static const char *const types[] = {"image/jpeg", "image/png", "image/webp"};
    vid_thumb_opts_t o;
    if (s_thumb_parse(op, &o, why, why_len) < 0)
        return 400;
    snprintf(what, what_len, "thumbnail %.3f", o.time);
    int status = 0;
    if ((*r = s_open(app, job, &status, why, why_len)) == NULL)
        return status;
    vid_thumb_t t;
    int rc = vid_thumbnail(vid_reader_source(*r), &o, &t, why, why_len);
    if (rc != 0) {
        return s_failed(*r, rc == 1 ? 400 : 415, why, why_len);
    }
    snprintf(what, what_len, "thumbnail %.3f (frame at %.3f, %dx%d, %lld decoded)", o.time, t.at, t.width, t.height,
             (long long)t.frames_decoded);
    snprintf(res->content_type, sizeof(res->content_type), "%s", types[o.format]);
    res->body = t.data;
    res->body_len = t.len;
    res->body_free = free;
    return 200;
}

/* Answers an hls job into res; returns its status. */
static int s_hls_run(s_app_t *app, const rf_worker_job_t *job, rf_worker_result_t *res, vid_reader_t **r, char *what,
                     size_t what_len, char *why, size_t why_len)
{
    s_hls_job_t j;
    memset(&j, 0, sizeof(j));
    if (s_parse(job->spec->chain, &j, why, why_len) < 0)
        return 400;
    int cached = 0;
    int status = s_run(app, job, &j, res, r, &cached, why, why_len);
    if (strcmp(j.what, "segment") == 0)
        snprintf(what, what_len, "hls segment %d index=%s", j.segment, cached ? "cached" : "read");
    else
        snprintf(what, what_len, "hls %s index=%s", j.what, cached ? "cached" : "read");
    return status;
}

/* A sprite job: {"op": "sprite", "every_ms", "cols", "rows", "tile_w",
 * "tile_h", "sheet" (-1: the WebVTT index), "quality"}. */
static int s_sprite_run(s_app_t *app, const rf_worker_job_t *job, const json_t *op, rf_worker_result_t *res,
                        vid_reader_t **r, char *what, size_t what_len, char *why, size_t why_len)
{
    vid_sprite_opts_t o;
    memset(&o, 0, sizeof(o));
    json_t *every = json_object_get(op, "every_ms");
    if (!json_is_integer(every) || json_integer_value(every) < 500 || json_integer_value(every) > 3600000 ||
        s_int(op, "cols", 1, 100, &o.cols) < 0 || s_int(op, "rows", 1, 100, &o.rows) < 0 ||
        s_int(op, "tile_w", 0, VID_SPRITE_MAX_SIDE, &o.tile_w) < 0 ||
        s_int(op, "tile_h", 0, VID_SPRITE_MAX_SIDE, &o.tile_h) < 0 || s_int(op, "sheet", -1, 999999, &o.sheet) < 0 ||
        s_int(op, "quality", 1, 100, &o.quality) < 0) {
        snprintf(why, why_len, "bad sprite operation (every_ms, cols, rows, tile_w, tile_h, sheet, quality)");
        return 400;
    }
    o.every = (double)json_integer_value(every) / 1000.0;
    bool vtt = o.sheet < 0;
    snprintf(what, what_len, vtt ? "sprite index" : "sprite sheet %d", o.sheet);
    int status = 0;
    if ((*r = s_open(app, job, &status, why, why_len)) == NULL)
        return status;
    if (vtt) {
        o.sheet = 0; /* the index covers every sheet */
        vid_probe_t p;
        char *text = NULL;
        size_t len = 0;
        if (vid_probe(vid_reader_source(*r), &p, why, why_len) != 0)
            return s_failed(*r, 415, why, why_len);
        if (p.width <= 0 || vid_sprite_vtt(&p, &o, "%d.jpg", &text, &len) != 0) {
            snprintf(why, why_len, p.width <= 0 ? "no video track" : "bad sprite options");
            return p.width <= 0 ? 415 : 400;
        }
        snprintf(res->content_type, sizeof(res->content_type), "text/vtt");
        res->body = text;
        res->body_len = len;
        res->body_free = free;
        return 200;
    }
    vid_thumb_t t;
    int rc = vid_sprite(vid_reader_source(*r), &o, &t, why, why_len);
    if (rc != 0)
        return s_failed(*r, rc == 1 ? 404 : 415, why, why_len);
    snprintf(what, what_len, "sprite sheet %d (%dx%d, %lld decoded)", o.sheet, t.width, t.height,
             (long long)t.frames_decoded);
    snprintf(res->content_type, sizeof(res->content_type), "image/jpeg");
    res->body = t.data;
    res->body_len = t.len;
    res->body_free = free;
    return 200;
}

/* A trim job: {"op": "trim", "ranges_ms": [[A, B or -1], ...], "max_ratio",
 * "content_type", "accurate"} (gw_func.c s_trim_json). n ranges into r. 0 or -1. */
static int s_trim_parse(const json_t *op, vid_range_t *r, int *n, int *max_ratio, int *accurate, char *ctype,
                        size_t ctype_len)
{
    const char *ct = json_string_value(json_object_get(op, "content_type"));
    if (s_int(op, "max_ratio", 0, 100, max_ratio) < 0 || (*accurate = s_accurate(op, "accurate")) < 0 || ct == NULL ||
        (strcmp(ct, "video/mp4") != 0 && strcmp(ct, "audio/mp4") != 0))
        return -1;
    snprintf(ctype, ctype_len, "%s", ct);
    return s_ranges(json_object_get(op, "ranges_ms"), r, n);
}

/* [[A, B or -1], ...] in milliseconds (at most VID_MAX_RANGES) into r[*n]. 0 or -1. */
static int s_ranges(const json_t *ranges, vid_range_t *r, int *n)
{
    if (!json_is_array(ranges) || json_array_size(ranges) < 1 || json_array_size(ranges) > VID_MAX_RANGES)
        return -1;
    *n = (int)json_array_size(ranges);
    for (int i = 0; i < *n; i++) {
        const json_t *p = json_array_get(ranges, (size_t)i);
        json_t *a = json_array_get(p, 0), *b = json_array_get(p, 1);
        if (!json_is_array(p) || json_array_size(p) != 2 || !json_is_integer(a) || !json_is_integer(b) ||
            json_integer_value(a) < 0 || json_integer_value(a) > (json_int_t)VID_MAX_DURATION_S * 1000 ||
            json_integer_value(b) < -1 || json_integer_value(b) > (json_int_t)VID_MAX_DURATION_S * 1000)
            return -1;
        r[i].start = (double)json_integer_value(a) / 1000.0;
        r[i].end = json_integer_value(b) < 0 ? 0 : (double)json_integer_value(b) / 1000.0;
    }
    return 0;
}

/* Where a trim is written: a new file in bus.spool_dir (the gateway
 * takes it by ref), else in the temporary directory (read back into the
 * REPLY). Its path in path[len]; -1 when none can be made. */
static int s_out_file(const s_app_t *app, char *path, size_t len)
{
    const char *dir = app->cfg->bus.spool_dir;
    const char *tmp = getenv("TMPDIR");
    snprintf(path, len, "%s/out-%ld-XXXXXX.mp4", dir != NULL ? dir : tmp != NULL ? tmp : "/tmp", (long)getpid());
    int fd = mkstemps(path, 4);
    if (fd < 0)
        return -1;
    close(fd);
    return 0;
}

/* The file's bytes into res (malloc'd), or -1. */
static int s_slurp(const char *path, rf_worker_result_t *res)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return -1;
    int rc = -1;
    if (fseeko(f, 0, SEEK_END) == 0) {
        off_t n = ftello(f);
        char *buf = n > 0 ? malloc((size_t)n) : NULL;
        if (buf != NULL && fseeko(f, 0, SEEK_SET) == 0 && fread(buf, 1, (size_t)n, f) == (size_t)n) {
            res->body = buf;
            res->body_len = (size_t)n;
            res->body_free = free;
            rc = 0;
        } else {
            free(buf);
        }
    }
    fclose(f);
    return rc;
}

/* The result file of a job that writes one (trims, transcodes): in
 * bus.spool_dir it goes to the gateway by reference; elsewhere it is read
 * back into the REPLY. Removes it in the second case (and on failure). */
static int s_result_file(const s_app_t *app, const char *path, rf_worker_result_t *res, char *why, size_t why_len)
{
    if (app->cfg->bus.spool_dir != NULL) {
        snprintf(res->ref, sizeof(res->ref), "file://%s", path);
        return 200;
    }
    int rc = s_slurp(path, res);
    unlink(path);
    if (rc < 0) {
        snprintf(why, why_len, "cannot read the output back");
        return 500;
    }
    return 200;
}

/* What was cut, for the client (X-Refract-Note): "cut on frames: A-B,…;
 * N frames re-encoded", "cut on keyframes[ (why)]: …" or "cut on audio
 * frames: …". */
static void s_trim_note(const vid_trim_info_t *info, int n, char *note, size_t len)
{
    size_t o =
        (size_t)snprintf(note, len, "cut %s%s%s%s:",
                         info->exact          ? "on frames"
                         : info->on_keyframes ? "on keyframes"
                                              : "on audio frames",
                         info->keyframes_why[0] ? " (" : "", info->keyframes_why, info->keyframes_why[0] ? ")" : "");
    for (int i = 0; i < n && o < len; i++)
        o += (size_t)snprintf(note + o, len - o, "%s%.3f-%.3f", i ? "," : " ", info->cut[i].start, info->cut[i].end);
    if (info->exact && o < len)
        snprintf(note + o, len - o, "; %lld frame(s) re-encoded", (long long)info->recoded);
}

/* Answers a trim job into res; returns its status. */
static int s_trim_run(s_app_t *app, const rf_worker_job_t *job, const json_t *op, rf_worker_result_t *res,
                      vid_reader_t **r, char *what, size_t what_len, char *why, size_t why_len)
{
    vid_range_t ranges[VID_MAX_RANGES];
    int n = 0, max_ratio = 0, accurate = 1, status = 0;
    char ctype[32];
    if (s_trim_parse(op, ranges, &n, &max_ratio, &accurate, ctype, sizeof(ctype)) < 0) {
        snprintf(why, why_len, "bad trim operation (ranges_ms, max_ratio, content_type, accurate)");
        return 400;
    }
    snprintf(what, what_len, "trim %d range(s)", n);
    if ((*r = s_open(app, job, &status, why, why_len)) == NULL)
        return status;
    if (max_ratio > 0) {
        /* MaxRatio: ranges asking for more than this share of the source
         * are not worth a new file: the original goes out instead. */
        double dur = vid_duration(vid_reader_source(*r), why, why_len), asked = 0;
        if (dur < 0)
            return s_failed(*r, 415, why, why_len);
        for (int i = 0; i < n; i++) {
            double end = ranges[i].end > ranges[i].start && ranges[i].end < dur ? ranges[i].end : dur;
            asked += end > ranges[i].start ? end - ranges[i].start : 0;
        }
        if (asked > dur * max_ratio / 100.0) {
            snprintf(why, why_len, "the ranges ask for %.3f s of %.3f s, more than max_ratio %d%%", asked, dur,
                     max_ratio);
            return 422;
        }
    }
    char path[400]; /* fits res->ref with "file://" */
    if (s_out_file(app, path, sizeof(path)) < 0) {
        snprintf(why, why_len, "cannot create an output file: %s", strerror(errno));
        return 500;
    }
    vid_trim_info_t info;
    int rc = vid_trim(vid_reader_source(*r), ranges, n, accurate, path, &info, why, why_len);
    if (rc != 0) {
        unlink(path);
        return s_failed(*r, rc == 1 ? 400 : 415, why, why_len);
    }
    s_trim_note(&info, n, res->note, sizeof(res->note));
    snprintf(what, what_len, "trim %d range(s) kept %.3f s of %.3f s, %lld frame(s) re-encoded", n, info.kept,
             info.duration, (long long)info.recoded);
    snprintf(res->content_type, sizeof(res->content_type), "%s", ctype);
    return s_result_file(app, path, res, why, why_len);
}

/* A ladder, [[HEIGHT, KBPS], ...] (1..VID_PHLS_MAX_RUNGS rungs), into
 * out[] and *n; -1 when it is not one. */
static int s_ladder(const json_t *l, vid_rung_t *out, int *n)
{
    if (!json_is_array(l) || json_array_size(l) < 1 || json_array_size(l) > VID_PHLS_MAX_RUNGS)
        return -1;
    *n = (int)json_array_size(l);
    for (int i = 0; i < *n; i++) {
        const json_t *r = json_array_get(l, (size_t)i);
        json_t *h = json_array_get(r, 0), *k = json_array_get(r, 1);
        if (!json_is_integer(h) || !json_is_integer(k) || json_integer_value(h) < 2 || json_integer_value(h) > 4320 ||
            json_integer_value(k) < 0 || json_integer_value(k) > 200000)
            return -1;
        out[i] = (vid_rung_t){(int)json_integer_value(h), (int)json_integer_value(k)};
    }
    return 0;
}

/* A streamed result (JOB "out", proto/rfb.md 2.2): the gateway's empty
 * file in bus.spool_dir, written as the transcode makes it, after a
 * one-line JSON preamble the gateway reads first (the result's type and
 * the source's freshness: the head it answers with before the end). */
typedef struct {
    int fd;
    bool started;
    char preamble[600];
    const atomic_int *cancelled; /* the job's: nobody reads the stream any more */
} s_stream_t;

static int s_write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n, len -= (size_t)n;
    }
    return 0;
}

static int s_stream_write(void *arg, const uint8_t *buf, size_t len)
{
    s_stream_t *s = arg;
    if (atomic_load(s->cancelled)) /* stops the transcode at its next fragment */
        return -1;
    if (!s->started && s_write_all(s->fd, s->preamble, strlen(s->preamble)) < 0)
        return -1;
    s->started = true;
    return s_write_all(s->fd, buf, len);
}

/* Opens the JOB's "out" file for a stream: a regular file directly in
 * bus.spool_dir, empty, and locked by this job alone — a job retried after
 * its worker died mid-stream finds bytes there and fails, for a stream
 * already under way cannot be started again. Returns 200 (s->fd open), or
 * 0 when the job is answered the usual way (no spool directory here), or
 * an error status with why. */
static int s_stream_open(const s_app_t *app, const rf_worker_job_t *job, vid_reader_t *r, s_stream_t *s, char *why,
                         size_t why_len)
{
    const char *dir = app->cfg->bus.spool_dir, *out = job->spec->out;
    s->fd = -1;
    s->cancelled = job->cancelled;
    if (out == NULL || dir == NULL)
        return 0;
    const char *path = out + 7; /* the decoder checked "file:///" */
    size_t dl = strlen(dir);
    if (strncmp(path, dir, dl) != 0 || path[dl] != '/' || path[dl + 1] == '\0' || path[dl + 1] == '.' ||
        strchr(path + dl + 1, '/') != NULL) {
        snprintf(why, why_len, "the stream's file is not in bus.spool_dir");
        return 400;
    }
    struct stat st;
    s->fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
    if (s->fd < 0 || fstat(s->fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(why, why_len, "the stream's file cannot be opened: %s", strerror(errno));
        return 500;
    }
    if (flock(s->fd, LOCK_EX | LOCK_NB) != 0 || st.st_size != 0) {
        snprintf(why, why_len, "the stream was started by a worker before (a retried job): it cannot restart");
        return 500;
    }
    const char *cc, *ex, *lm;
    vid_reader_freshness(r, &cc, &ex, &lm);
    json_t *src = json_pack("{s:s, s:s, s:s}", "cache_control", cc, "expires", ex, "last_modified", lm);
    json_t *pre = src != NULL ? json_pack("{s:s, s:o}", "content_type", "video/mp4", "source", src) : NULL;
    char *line = pre != NULL ? json_dumps(pre, JSON_COMPACT) : NULL;
    json_decref(pre);
    if (line == NULL || strlen(line) + 2 > sizeof(s->preamble)) {
        free(line);
        snprintf(why, why_len, "out of memory");
        return 500;
    }
    snprintf(s->preamble, sizeof(s->preamble), "%s\n", line);
    free(line);
    return 200;
}

/* A transcode job: {"op": "transcode", "max_height", "crf", "max_duration",
 * "max_kbps" (optional), "ladder" (optional: the rung is the highest the
 * source reaches, gw_func.c s_tx_json)}. */
static int s_transcode_run(s_app_t *app, const rf_worker_job_t *job, const json_t *op, rf_worker_result_t *res,
                           vid_reader_t **r, char *what, size_t what_len, char *why, size_t why_len)
{
    vid_transcode_opts_t o;
    memset(&o, 0, sizeof(o));
    int max_duration = 0, status = 0, nladder = 0;
    vid_rung_t ladder[VID_PHLS_MAX_RUNGS];
    const json_t *l = json_object_get(op, "ladder");
    if (s_int(op, "max_height", 2, 4320, &o.max_height) < 0 || s_int(op, "crf", 1, 51, &o.crf) < 0 ||
        s_int(op, "max_duration", 1, 86400, &max_duration) < 0 ||
        (json_object_get(op, "max_kbps") != NULL && s_int(op, "max_kbps", 0, 200000, &o.max_kbps) < 0) ||
        (l != NULL && s_ladder(l, ladder, &nladder) < 0)) {
        snprintf(why, why_len, "bad transcode operation (max_height, crf, max_duration, max_kbps, ladder)");
        return 400;
    }
    o.max_duration = max_duration;
    snprintf(what, what_len, "transcode %dp", o.max_height);
    if ((*r = s_open(app, job, &status, why, why_len)) == NULL)
        return status;
    if (nladder > 0) { /* the highest rung the source reaches (the smallest when it is below all) */
        vid_phls_probe_t p;
        vid_rung_t rungs[VID_PHLS_MAX_RUNGS];
        if (vid_phls_probe(vid_reader_source(*r), &p, why, why_len) != 0)
            return s_failed(*r, 415, why, why_len);
        vid_phls_rungs(&p, ladder, nladder, rungs);
        o.max_height = rungs[0].height;
        o.max_kbps = rungs[0].kbps;
        snprintf(what, what_len, "transcode %dp", o.max_height);
    }
    o.max_width = (o.max_height * 16 / 9 + 1) & ~1; /* a 16:9 box of that height: portrait stays that tall */
    s_stream_t stream = {.fd = -1};
    char path[400] = "";
    if ((status = s_stream_open(app, job, *r, &stream, why, why_len)) == 200) {
        o.stream_write = s_stream_write;
        o.stream_arg = &stream;
    } else if (status != 0) {
        goto done;
    } else if (s_out_file(app, path, sizeof(path)) < 0) {
        snprintf(why, why_len, "cannot create an output file: %s", strerror(errno));
        status = 500;
        goto done;
    }
    vid_transcode_info_t info;
    if (vid_transcode(vid_reader_source(*r), &o, path, &info, why, why_len) != 0) {
        if (path[0] != '\0')
            unlink(path);
        status = s_failed(*r, strstr(why, "s long, more than") != NULL ? 413 : 415, why, why_len);
        goto done;
    }
    snprintf(what, what_len, "transcode %dp%s from %s: %dx%d %.3f s, %lld frames", o.max_height,
             stream.fd >= 0 ? " streamed" : "", info.input, info.width, info.height, info.duration,
             (long long)info.frames);
    snprintf(res->content_type, sizeof(res->content_type), "video/mp4");
    if (stream.fd >= 0) { /* the gateway took every byte as it came; the ref says it is whole */
        snprintf(res->ref, sizeof(res->ref), "%s", job->spec->out);
        status = 200;
    } else {
        status = s_result_file(app, path, res, why, why_len);
    }
done:
    if (stream.fd >= 0)
        close(stream.fd);
    return status;
}

/* A progressive HLS job: {"op": "phls", "what": master|media|segment,
 * "segment", "height", "kbps", "duration", "crf", "audio_kbps",
 * "max_duration", "ladder": [[H, KBPS], ...]} (gw_func.c s_phls_json). */
typedef struct {
    char what[16];
    vid_phls_opts_t o;
    int duration, max_duration;
    vid_rung_t ladder[VID_PHLS_MAX_RUNGS];
    int nladder;
} s_phls_job_t;

static int s_phls_parse(const json_t *op, s_phls_job_t *j)
{
    memset(j, 0, sizeof(*j));
    if (s_str(op, "what", j->what, sizeof(j->what)) < 0 || s_int(op, "segment", 0, VID_MAX_SEGMENTS, &j->o.n) < 0 ||
        s_int(op, "height", 0, 4320, &j->o.height) < 0 || s_int(op, "kbps", 0, 200000, &j->o.kbps) < 0 ||
        s_int(op, "duration", 1, 60, &j->duration) < 0 || s_int(op, "crf", 1, 51, &j->o.crf) < 0 ||
        s_int(op, "audio_kbps", 16, 512, &j->o.audio_kbps) < 0 ||
        s_int(op, "max_duration", 1, VID_MAX_DURATION_S, &j->max_duration) < 0 ||
        s_ladder(json_object_get(op, "ladder"), j->ladder, &j->nladder) < 0)
        return -1;
    j->o.seg = j->duration;
    j->o.max_duration = j->max_duration;
    return strcmp(j->what, "master") == 0 || strcmp(j->what, "media") == 0 ||
                   (strcmp(j->what, "segment") == 0 && j->o.height >= 2)
               ? 0
               : -1;
}

/* Answers a progressive HLS job into res: the playlists from the source's
 * header, a segment transcoded now. Returns its status. */
static int s_phls_run(s_app_t *app, const rf_worker_job_t *job, const json_t *op, rf_worker_result_t *res,
                      vid_reader_t **r, char *what, size_t what_len, char *why, size_t why_len)
{
    s_phls_job_t j;
    int status = 0;
    if (s_phls_parse(op, &j) < 0) {
        snprintf(why, why_len,
                 "bad phls operation (what, segment, height, kbps, duration, crf, audio_kbps, "
                 "max_duration, ladder)");
        return 400;
    }
    snprintf(what, what_len, "hls %s", j.what);
    if ((*r = s_open(app, job, &status, why, why_len)) == NULL)
        return status;
    char *text = NULL;
    size_t len = 0;
    if (strcmp(j.what, "segment") == 0) {
        s_buf_t b = {0};
        vid_transcode_info_t info;
        int rc = vid_phls_segment(vid_reader_source(*r), &j.o, s_buf_write, &b, &info, why, why_len);
        if (rc != 0) {
            free(b.data);
            return rc == 1 ? 404 : s_failed(*r, strstr(why, "s long, more than") != NULL ? 413 : 415, why, why_len);
        }
        snprintf(what, what_len, "hls segment %d %dp from %s: %dx%d, %lld frames", j.o.n, j.o.height, info.input,
                 info.width, info.height, (long long)info.frames);
        text = (char *)b.data;
        len = b.len;
        snprintf(res->content_type, sizeof(res->content_type), "video/mp2t");
    } else {
        vid_phls_probe_t p;
        if (vid_phls_probe(vid_reader_source(*r), &p, why, why_len) != 0)
            return s_failed(*r, 415, why, why_len);
        if (p.duration > j.max_duration) {
            snprintf(why, why_len, "the video is %.3f s long, more than %d s", p.duration, j.max_duration);
            return 413;
        }
        vid_rung_t rungs[VID_PHLS_MAX_RUNGS];
        int n = vid_phls_rungs(&p, j.ladder, j.nladder, rungs);
        int rc = strcmp(j.what, "master") == 0 ? vid_phls_master(&p, rungs, n, j.o.audio_kbps, &text, &len)
                                               : vid_phls_playlist(p.duration, j.o.seg, &text, &len);
        if (rc != 0) {
            snprintf(why, why_len, "out of memory");
            return 500;
        }
        snprintf(what, what_len, "hls %s from %s: %dx%d %.3f s, %d segment(s), %d rung(s)", j.what, p.input, p.width,
                 p.height, p.duration, vid_phls_segments(p.duration, j.o.seg), n);
        snprintf(res->content_type, sizeof(res->content_type), "application/vnd.apple.mpegurl");
    }
    res->body = text;
    res->body_len = len;
    res->body_free = free;
    return 200;
}

static int s_job(void *arg, const rf_worker_job_t *job, rf_worker_result_t *res)
{
    s_app_t *app = arg;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    char why[256] = "", what[128] = "-";
    vid_reader_t *r = NULL;
    const json_t *chain = job->spec->chain;
    const json_t *op = json_is_array(chain) && json_array_size(chain) == 1 ? json_array_get(chain, 0) : NULL;
    const char *name = json_string_value(json_object_get(op, "op"));
    int status;
    if (name != NULL && strcmp(name, "thumbnail") == 0)
        status = s_thumb_run(app, job, op, res, &r, what, sizeof(what), why, sizeof(why));
    else if (name != NULL && strcmp(name, "sprite") == 0)
        status = s_sprite_run(app, job, op, res, &r, what, sizeof(what), why, sizeof(why));
    else if (name != NULL && strcmp(name, "transcode") == 0)
        status = s_transcode_run(app, job, op, res, &r, what, sizeof(what), why, sizeof(why));
    else if (name != NULL && strcmp(name, "trim") == 0)
        status = s_trim_run(app, job, op, res, &r, what, sizeof(what), why, sizeof(why));
    else if (name != NULL && strcmp(name, "phls") == 0)
        status = s_phls_run(app, job, op, res, &r, what, sizeof(what), why, sizeof(why));
    else
        status = s_hls_run(app, job, res, &r, what, sizeof(what), why, sizeof(why));
    res->status = status;
    if (status != 200)
        snprintf(res->error, sizeof(res->error), "%s", why);
    if (status == 200 && r != NULL) { /* the result may be kept as long as its source */
        const char *cc, *ex, *lm;
        vid_reader_freshness(r, &cc, &ex, &lm);
        snprintf(res->src_cache_control, sizeof(res->src_cache_control), "%s", cc);
        snprintf(res->src_expires, sizeof(res->src_expires), "%s", ex);
        snprintf(res->src_last_modified, sizeof(res->src_last_modified), "%s", lm);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    rf_log(status < 500 ? RF_LOG_INFO : RF_LOG_WARN, job->request_id, "video %s %d read=%lld out=%zu %.1fms%s%s", what,
           status, (long long)(r != NULL ? vid_reader_bytes(r) : 0), status == 200 ? res->body_len : 0, ms,
           status != 200 ? ": " : "", status != 200 ? why : "");
    vid_reader_destroy(&r);
    return status == 200 ? 0 : -1;
}

static rf_listen_t *s_metrics_listen(rf_config_t *cfg)
{
    return &cfg->video_worker.metrics_listen;
}

static int *s_jobs(rf_config_t *cfg)
{
    return &cfg->video_worker.jobs;
}

/* libavformat's and libavcodec's messages, in our log format at debug
 * level (one line each): the job's own line carries the outcome. */
static void s_on_av_log(void *avcl, int level, const char *fmt, va_list ap)
{
    if (level > AV_LOG_WARNING)
        return;
    char line[512];
    int prefix = 1;
    av_log_format_line2(avcl, level, fmt, ap, line, sizeof(line), &prefix);
    for (char *p = line; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    rf_log(RF_LOG_DEBUG, NULL, "libav: %s", line);
}

static int s_setup(rf_config_t *cfg, void **arg)
{
    av_log_set_callback(s_on_av_log);
    s_app_t *app = calloc(1, sizeof(*app));
    *arg = app;
    if (app == NULL || vid_reader_global_init() < 0)
        return -1;
    app->cfg = cfg;
    if (cfg->video_worker.gateway_url != NULL)
        snprintf(app->gateway_url, sizeof(app->gateway_url), "%s", cfg->video_worker.gateway_url);
    else
        snprintf(app->gateway_url, sizeof(app->gateway_url), "http://127.0.0.1:%d", cfg->gateway.listen.port);
    size_t gl = strlen(app->gateway_url);
    while (gl > 0 && app->gateway_url[gl - 1] == '/')
        app->gateway_url[--gl] = '\0';
    if ((app->indexes = vid_ixcache_new((size_t)cfg->video_worker.index_cache)) == NULL ||
        (app->trims = vid_trims_new(NULL, 32)) == NULL)
        return -1;
    rf_info("video: sources of http(s) origins read through %s", app->gateway_url);
    return 0;
}

static void s_teardown(void *arg)
{
    s_app_t *app = arg;
    if (app != NULL) {
        vid_ixcache_destroy(&app->indexes);
        vid_trims_destroy(&app->trims);
    }
    free(app);
    vid_reader_global_cleanup();
}

static const rf_worker_app_t s_app = {
    .name = "video-worker",
    .service = "video",
    .section = "video_worker",
    .metrics_listen = s_metrics_listen,
    .jobs = s_jobs,
    .setup = s_setup,
    .teardown = s_teardown,
    .job = s_job,
    .own_refs = true,
};

int main(int argc, char **argv)
{
    return rf_worker_app_main(&s_app, argc, argv);
}
