#include "vid_core.h"
#include "vid_err.h"
#include "vid_recut.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/mathematics.h>
#include <libavutil/audio_fifo.h>
#include <libavutil/channel_layout.h>
#include <libavutil/opt.h>
#include <libswresample/swresample.h>
#include <libswscale/swscale.h>

/* The demuxer's read buffer. libavformat reads the source in requests of
 * this size, so it is also the granularity of what a segment reads beyond
 * its samples: 32 KiB opens a faststart MP4 with one read. */
#define S_IO_BUF (32 << 10)

/* Sample tables past this many entries per track are refused: libavformat
 * has already parsed them, but our passes over them must stay bounded. */
#define S_MAX_ENTRIES (1 << 24)

/* The first bytes probed to tell an MP4/MOV from anything else. */
#define S_SNIFF 4096

/* Segment target durations accepted by vid_index_new (seconds). */
#define S_MAX_TARGET_S 3600

/* ---- the source as an AVIOContext ------------------------------------------------------ */

/* The most a segment reads at once before it is muxed (s_read_span). */
#define S_SPAN_MAX (64 << 20)

/* Boxes of a fragmented MP4 hidden from libavformat (s_walk_boxes). */
#define S_MAX_HOLES 4

/* The read side of one demuxer: where it is in the source and how much it
 * may still read (a hostile file must not make us read without end). */
typedef struct {
    const vid_source_t *src; /* borrowed */
    int64_t pos;
    int64_t budget; /* bytes this demuxer may read in all */
    int64_t used;   /* bytes read so far */
    int reads;      /* read calls that returned data */
    bool over;      /* the budget stopped a read */
    bool failed;    /* src->read returned an error */
    /* byte ranges [lo, hi) read as one 'free' box each, never from the source */
    int holes;
    int64_t hole_lo[S_MAX_HOLES], hole_hi[S_MAX_HOLES];
    /* the source's bytes [span_lo, span_lo + span_len), read at once (owned) */
    uint8_t *span;
    int64_t span_lo, span_len;
    int64_t end; /* where the demuxer sees the source end: src->size, or a view's end */
} s_io_t;

/* Bytes of a hidden range seen from `at` (lo <= at < hi): a 'free' box
 * header over the whole range, then zeros. Returns how many were made. */
static int s_io_hole(int64_t lo, int64_t hi, int64_t at, uint8_t *buf, int size)
{
    /* 8 bytes (size, type), or 16 past 4 GiB (size 1, type, a 64-bit size) */
    uint64_t len = (uint64_t)(hi - lo);
    uint8_t head[16] = {0, 0, 0, 1, 'f', 'r', 'e', 'e'};
    int head_len = 16;
    for (int i = 0; i < 8; i++)
        head[8 + i] = (uint8_t)(len >> (56 - 8 * i));
    if (len <= UINT32_MAX) {
        for (int i = 0; i < 4; i++)
            head[i] = (uint8_t)(len >> (24 - 8 * i));
        head_len = 8;
    }
    int n = hi - at < size ? (int)(hi - at) : size;
    for (int i = 0; i < n; i++)
        buf[i] = at + i - lo < head_len ? head[at + i - lo] : 0;
    return n;
}

/* AVIOContext read callback: up to size bytes at io->pos into buf (both
 * libavformat's), never past the source's end or the budget. */
static int s_io_read(void *opaque, uint8_t *buf, int size)
{
    s_io_t *io = opaque;
    if (size <= 0 || io->pos >= io->end)
        return AVERROR_EOF;
    int64_t want = io->end - io->pos < size ? io->end - io->pos : size;
    for (int h = 0; h < io->holes; h++) {
        if (io->pos >= io->hole_lo[h] && io->pos < io->hole_hi[h]) {
            int n = s_io_hole(io->hole_lo[h], io->hole_hi[h], io->pos, buf, (int)want);
            io->pos += n;
            return n;
        }
        if (io->pos < io->hole_lo[h] && io->hole_lo[h] - io->pos < want)
            want = io->hole_lo[h] - io->pos; /* stop where the hole starts */
    }
    if (io->span != NULL && io->pos < io->span_lo && io->span_lo - io->pos < want)
        want = io->span_lo - io->pos; /* stop where the span starts */
    if (io->span != NULL && io->pos >= io->span_lo && io->pos < io->span_lo + io->span_len) {
        int64_t n = io->span_lo + io->span_len - io->pos < want ? io->span_lo + io->span_len - io->pos : want;
        memcpy(buf, io->span + (io->pos - io->span_lo), (size_t)n);
        io->pos += n;
        return (int)n;
    }
    if (io->used + want > io->budget) {
        io->over = true;
        return AVERROR(EFBIG);
    }
    int64_t n = io->src->read(io->src->arg, buf, io->pos, want);
    if (n < 0 || n > want) {
        io->failed = true;
        return AVERROR(EIO);
    }
    if (n == 0)
        return AVERROR_EOF;
    io->pos += n;
    io->used += n;
    io->reads++;
    return (int)n;
}

/* AVIOContext seek callback: moves io->pos (nothing is read; the next
 * read is the range request). Positions outside the source are errors. */
static int64_t s_io_seek(void *opaque, int64_t off, int whence)
{
    s_io_t *io = opaque;
    int64_t base;
    switch (whence & ~AVSEEK_FORCE) {
    case AVSEEK_SIZE: return io->end;
    case SEEK_SET: base = 0; break;
    case SEEK_CUR: base = io->pos; break;
    case SEEK_END: base = io->end; break;
    default: return AVERROR(EINVAL);
    }
    int64_t pos;
    if (__builtin_add_overflow(base, off, &pos) || pos < 0 || pos > io->end)
        return AVERROR(EINVAL);
    io->pos = pos;
    return pos;
}

/* The demuxer of one call: the source read through s_io_t, the tracks we
 * use (-1: none) and the one segments are cut on (video if there is one). */
typedef struct {
    s_io_t io;
    AVIOContext *pb;      /* owned */
    AVFormatContext *fmt; /* owned */
    int v, a, primary;
    bool front_seen; /* s_hide_front_sidx saw every box before the first moof or mdat */
} s_demux_t;

/* libavformat must not open anything beside the source (MOV data
 * references can name other files). */
static int s_refuse_open(struct AVFormatContext *s, AVIOContext **pb, const char *url, int flags,
                         AVDictionary **options)
{
    (void)s, (void)pb, (void)url, (void)flags, (void)options;
    return AVERROR(EPERM);
}

/* Top-level boxes read in chunks: a box header is most often within the
 * last chunk read (a moof and its mdat's header are). */
typedef struct {
    uint8_t buf[S_SNIFF];
    int64_t lo, len;
} s_walk_t;

/* The box whose header starts h[0..have), `left` bytes of the source
 * from there: 1 with its *size (a size of 0, "to the end", made `left`),
 * 0 when it is not a box (a size below its header or past the source),
 * -1 when `have` is too short for its header. */
static int s_box_head(const uint8_t *h, int64_t have, int64_t left, uint64_t *size)
{
    if (have < 8)
        return left < 8 ? 0 : -1;
    uint64_t sz = (uint64_t)h[0] << 24 | (uint64_t)h[1] << 16 | (uint64_t)h[2] << 8 | h[3];
    int head = 8;
    if (sz == 1) { /* a 64-bit size follows the type */
        if (have < 16)
            return left < 16 ? 0 : -1;
        sz = 0;
        for (int i = 8; i < 16; i++)
            sz = sz << 8 | h[i];
        head = 16;
    } else if (sz == 0) {
        sz = (uint64_t)left;
    }
    if (sz < (uint64_t)head || sz > (uint64_t)left)
        return 0;
    *size = sz;
    return 1;
}

/* A box header at off, read through w: its size and type. 1 read, 0
 * none (the end, or not a box), -1 read error. */
static int s_box_at(s_io_t *io, s_walk_t *w, int64_t off, int64_t *size, char type[5])
{
    int64_t left = io->src->size - off;
    if (left < 8)
        return 0;
    int64_t want = left < 16 ? left : 16;
    if (off < w->lo || off + want > w->lo + w->len) {
        int64_t n = io->src->read(io->src->arg, w->buf, off, left < S_SNIFF ? left : S_SNIFF);
        if (n < 0)
            return -1;
        w->lo = off;
        w->len = n;
        io->used += n;
        io->reads++;
    }
    const uint8_t *h = w->buf + (off - w->lo);
    uint64_t sz;
    if (s_box_head(h, w->lo + w->len - off, left, &sz) != 1)
        return 0;
    memcpy(type, h + 4, 4);
    type[4] = '\0';
    *size = (int64_t)sz;
    return 1;
}

/* The fragments of a fragmented MP4 (s_walk_boxes). */
typedef struct {
    int64_t moov_end; /* 0: no moov before the first moof */
    int64_t *moof;    /* each moof's offset, in file order (owned) */
    size_t n, cap;
    bool ok; /* every box walked, none odd: the map can be trusted */
} s_frag_map_t;

/* At most this many fragments are mapped (more: no map, segments read
 * every moof). */
#define S_MAX_FRAGS (1 << 20)

static void s_frag_map_free(s_frag_map_t *m)
{
    free(m->moof);
    memset(m, 0, sizeof(*m));
}

/* Walks the top-level boxes from the start. A fragmented MP4 keeps its
 * sample tables in moof boxes spread over the file; libavformat reads
 * them all when it opens a seekable file (a skip over each mdat, one read
 * per fragment), unless a sidx before the first moof indexes the
 * fragments: it then reads them only as it plays, and the keyframes a
 * playlist is cut on are not known. So a sidx between the moov and the
 * first moof is hidden: io gets a hole there, read as a 'free' box of its
 * size.
 * Without `map` the walk stops at the first moof or mdat (a few boxes,
 * within the first read); with it, it goes on to the end and records
 * where the moov ends and each moof starts (m->ok when the whole file was
 * boxes as expected). 0, or -1 when the source could not be read. */
static int s_walk_boxes(s_io_t *io, s_frag_map_t *map)
{
    s_walk_t *w = malloc(sizeof(*w));
    if (w == NULL)
        return -1;
    w->lo = w->len = 0;
    int64_t off = 0;
    int rc = 0;
    bool moof_seen = false;
    int64_t moov_end = 0;
    for (int i = 0; map != NULL || i < 16; i++) {
        int64_t size;
        char type[5];
        int r = s_box_at(io, w, off, &size, type);
        if (r < 0)
            rc = -1;
        if (r <= 0)
            break;
        if (strcmp(type, "moof") == 0 || strcmp(type, "mdat") == 0) {
            if (map == NULL)
                break;
            if (strcmp(type, "moof") == 0) {
                if (map->n == map->cap) {
                    size_t cap = map->cap ? 2 * map->cap : 256;
                    int64_t *v = cap <= S_MAX_FRAGS ? realloc(map->moof, cap * sizeof(*v)) : NULL;
                    if (v == NULL)
                        break; /* too many: no map */
                    map->moof = v, map->cap = cap;
                }
                map->moof[map->n++] = off;
            }
            moof_seen = true;
        } else if (strcmp(type, "moov") == 0 && !moof_seen) {
            moov_end = off + size;
            if (map != NULL)
                map->moov_end = moov_end;
        } else if (strcmp(type, "sidx") == 0 && moov_end > 0 && !moof_seen && io->holes < S_MAX_HOLES &&
                   size <= UINT32_MAX) { /* where DASH files have it: after the moov */
            io->hole_lo[io->holes] = off;
            io->hole_hi[io->holes++] = off + size;
        }
        off += size;
        if (off == io->src->size && map != NULL)
            map->ok = map->n > 0 && map->moov_end > 0;
    }
    free(w);
    return rc;
}

/* Whether the source is an MP4/MOV, by libavformat's probes over its
 * first S_SNIFF bytes. They are read through d's AVIOContext, and stay in
 * its buffer for the demuxer: the sniff costs no read of its own. */
static int s_probe(s_demux_t *d, char *err, size_t errlen)
{
    const AVInputFormat *f = NULL;
    int score = av_probe_input_buffer2(d->pb, &f, "", NULL, 0, S_SNIFF);
    if (d->io.failed) {
        s_err(err, errlen, "source read failed");
        return -1;
    }
    if (score < AVPROBE_SCORE_EXTENSION || f == NULL || strncmp(f->name, "mov,", 4) != 0) {
        if (score >= 0 && f != NULL)
            s_err(err, errlen, "not an MP4/MOV file (looks like %s)", f->name);
        else
            s_err(err, errlen, "not an MP4/MOV file");
        return -1;
    }
    return 0;
}

/* Reads the source's header (the moov) with the MOV demuxer, at most
 * `budget` bytes, and picks its tracks. On success d owns the demuxer
 * (s_demux_close); on failure d is closed and err says why. */
/* The containers a transcode reads (vid_transcode): every one libavformat
 * demuxes from a single file. Formats that open other files or URLs
 * (playlists, concat, image sequences) are not among them. */
static const char *const S_ANY_FORMATS[] = {
    "matroska,webm", "mov,mp4,m4a,3gp,3g2,mj2", "avi", "mpegts", "flv", "asf", "mpeg", "ogg", NULL};

/* Which container the source is, for a transcode: one of S_ANY_FORMATS.
 * NULL with err set. The sniffed bytes stay in d's buffer. */
static const AVInputFormat *s_probe_any(s_demux_t *d, char *err, size_t errlen)
{
    const AVInputFormat *f = NULL;
    int score = av_probe_input_buffer2(d->pb, &f, "", NULL, 0, S_SNIFF * 4);
    if (d->io.failed) {
        s_err(err, errlen, "source read failed");
        return NULL;
    }
    for (int i = 0; f != NULL && score >= AVPROBE_SCORE_EXTENSION && S_ANY_FORMATS[i] != NULL; i++)
        if (strcmp(f->name, S_ANY_FORMATS[i]) == 0)
            return f;
    s_err(err, errlen, "not a video container this worker transcodes (%s)", f != NULL ? f->name : "unknown");
    return NULL;
}

static int s_demux_open_as(s_demux_t *d, const vid_source_t *src, int64_t budget, bool any, const s_io_t *from,
                           char *err, size_t errlen);
static void s_demux_close(s_demux_t *d);

/* Whether libavformat found a fragmented MP4: a track whose moov lists no
 * samples (nb_frames comes from its empty stsz). */
static bool s_fragmented(const AVFormatContext *f)
{
    for (unsigned i = 0; i < f->nb_streams; i++)
        if (f->streams[i]->nb_frames <= 0)
            return true;
    return false;
}

/* A fragmented MP4's tracks have no start time at open (libavformat finds
 * one only with avformat_find_stream_info, which decodes), and the first
 * packet read sets it: after a seek to 10 s every time would be counted
 * from 10 s. Without an edit list its presentation times are the samples'
 * own, on one timeline for every track, so each track's start is pinned
 * to the earliest first decode time of all (thumbnails, sprites and trims;
 * segments have their own times, from the index). */
static void s_pin_start(s_demux_t *d)
{
    if (!s_fragmented(d->fmt))
        return;
    int64_t base = INT64_MAX;
    for (unsigned i = 0; i < d->fmt->nb_streams; i++) {
        AVStream *st = d->fmt->streams[i];
        if (avformat_index_get_entries_count(st) > 0) {
            int64_t t = av_rescale_q(avformat_index_get_entry(st, 0)->timestamp, st->time_base, AV_TIME_BASE_Q);
            base = t < base ? t : base;
        }
    }
    for (unsigned i = 0; i < d->fmt->nb_streams; i++) {
        AVStream *st = d->fmt->streams[i];
        if (st->start_time == AV_NOPTS_VALUE)
            st->start_time = base == INT64_MAX ? 0 : av_rescale_q(base, AV_TIME_BASE_Q, st->time_base);
    }
}

/* The sniffed bytes in d's buffer, the source's first (s_walk_boxes
 * without its reads): a sidx between the moov and the first moof is
 * hidden there and then, its type made 'free' in the buffer and a hole
 * recorded for any later read. Whether the boxes up to the first moof or
 * mdat (or something that is not a box) were all in the buffer; when
 * not, a fragmented source is walked with reads (s_demux_open). */
static bool s_hide_front_sidx(s_demux_t *d)
{
    uint8_t *b = d->pb->buf_ptr; /* the source's offset 0 when avio_tell says so */
    int64_t n = d->pb->buf_end - d->pb->buf_ptr, off = 0;
    bool moov = false;
    if (avio_tell(d->pb) != 0 || n <= 0)
        return false;
    while (off < n) {
        const uint8_t *h = b + off;
        uint64_t size;
        int r = s_box_head(h, n - off, d->io.src->size - off, &size);
        if (r < 0)
            return false; /* its header is past the buffer */
        if (r == 0 || memcmp(h + 4, "moof", 4) == 0 || memcmp(h + 4, "mdat", 4) == 0 ||
            (int64_t)size == d->io.src->size - off)
            return true; /* not a box, the first fragment or samples, or the last box */
        if (memcmp(h + 4, "moov", 4) == 0) {
            moov = true;
        } else if (memcmp(h + 4, "sidx", 4) == 0 && moov && d->io.holes < S_MAX_HOLES && size <= UINT32_MAX) {
            memcpy(b + off + 4, "free", 4);
            d->io.hole_lo[d->io.holes] = off;
            d->io.hole_hi[d->io.holes++] = off + (int64_t)size;
        }
        off += (int64_t)size;
    }
    return false;
}

static int s_demux_open(s_demux_t *d, const vid_source_t *src, int64_t budget, char *err, size_t errlen)
{
    if (s_demux_open_as(d, src, budget, false, NULL, err, errlen) != 0)
        return -1;
    if (!s_fragmented(d->fmt) || d->front_seen)
        return 0;
    s_io_t io = d->io; /* what was read so far counts against the budget */
    io.holes = 0;
    io.span = NULL; /* d's, freed by s_demux_close below: never handed on */
    if (s_walk_boxes(&io, NULL) != 0) {
        s_err(err, errlen, "source read failed");
        s_demux_close(d);
        return -1;
    }
    if (io.holes == 0) /* libavformat read every moof */
        return 0;
    s_demux_close(d); /* again, with the sidx hidden */
    return s_demux_open_as(d, src, budget, false, &io, err, errlen);
}

/* s_demux_open for any container of S_ANY_FORMATS (any: true), whose
 * stream parameters may need a look at the first packets. `from` (may be
 * NULL) gives the bytes read so far and the ranges to hide. */
static int s_demux_open_as(s_demux_t *d, const vid_source_t *src, int64_t budget, bool any, const s_io_t *from,
                           char *err, size_t errlen)
{
    int rc = -1;
    const AVInputFormat *format = NULL;
    uint8_t *buf = NULL;
    memset(d, 0, sizeof(*d));
    d->v = d->a = d->primary = -1;
    d->io = (s_io_t){.src = src, .budget = budget, .end = src != NULL ? src->size : 0};
    if (from != NULL) {
        d->io.end = from->end > 0 ? from->end : d->io.end;
        d->io.used = from->used;
        d->io.reads = from->reads;
        d->io.holes = from->holes;
        d->io.span = from->span; /* taken: d closes it */
        d->io.span_lo = from->span_lo;
        d->io.span_len = from->span_len;
        memcpy(d->io.hole_lo, from->hole_lo, sizeof(d->io.hole_lo));
        memcpy(d->io.hole_hi, from->hole_hi, sizeof(d->io.hole_hi));
    }
    if (src == NULL || src->read == NULL || src->size <= 0) {
        s_err(err, errlen, "empty source");
        goto cleanup;
    }
    buf = av_malloc(S_IO_BUF);
    d->pb = buf != NULL ? avio_alloc_context(buf, S_IO_BUF, 0, &d->io, s_io_read, NULL, s_io_seek) : NULL;
    d->fmt = avformat_alloc_context();
    if (d->pb == NULL || d->fmt == NULL) {
        s_err(err, errlen, "out of memory");
        goto cleanup;
    }
    buf = NULL; /* the AVIOContext owns it (and may replace it) */
    if (any ? (format = s_probe_any(d, err, errlen)) == NULL : s_probe(d, err, errlen) != 0)
        goto cleanup;
    if (!any)
        d->front_seen = s_hide_front_sidx(d);
    d->fmt->pb = d->pb;
    d->fmt->flags |= AVFMT_FLAG_CUSTOM_IO;
    d->fmt->io_open = s_refuse_open;
    /* The format is known from the probe; no more probing. Stream info
     * is not searched either (avformat_find_stream_info would decode
     * packets from the mdat): the moov's sample descriptions carry all a
     * remux needs. */
    if (any) { /* bounded look at the first packets, for containers that need one */
        d->fmt->probesize = 8 << 20;
        d->fmt->max_analyze_duration = 5 * AV_TIME_BASE;
    }
    int e = avformat_open_input(&d->fmt, NULL, any ? format : av_find_input_format("mov"), NULL);
    if (e == 0 && any && avformat_find_stream_info(d->fmt, NULL) < 0) {
        s_err(err, errlen, "cannot read the streams' parameters (truncated or corrupt)");
        avformat_close_input(&d->fmt);
        goto cleanup;
    }
    if (e < 0) {
        char msg[AV_ERROR_MAX_STRING_SIZE] = "";
        av_strerror(e, msg, sizeof(msg));
        if (d->io.over)
            s_err(err, errlen, "the MP4 header is larger than %" PRId64 " bytes", budget);
        else if (d->io.failed)
            s_err(err, errlen, "source read failed");
        else
            s_err(err, errlen, "cannot read the MP4 header (truncated or corrupt: %s)", msg);
        goto cleanup; /* avformat_open_input freed d->fmt */
    }
    rc = 0;
cleanup:
    av_free(buf);
    if (rc != 0) {
        free(d->io.span);
        d->io.span = NULL;
    }
    if (rc != 0 && d->pb != NULL) {
        av_freep(&d->pb->buffer);
        avio_context_free(&d->pb);
    }
    if (rc != 0 && d->fmt != NULL)
        avformat_free_context(d->fmt), d->fmt = NULL;
    return rc;
}

/* Closes what s_demux_open opened; safe on a zeroed or closed d. */
static void s_demux_close(s_demux_t *d)
{
    free(d->io.span);
    d->io.span = NULL;
    avformat_close_input(&d->fmt);
    if (d->pb != NULL) {
        av_freep(&d->pb->buffer);
        avio_context_free(&d->pb);
    }
}

/* A time base we can compute with: positive, and coarse enough that one
 * tick is at most a second (the time bounds are then tick bounds too). */
static bool s_tb_ok(AVRational tb)
{
    return tb.num > 0 && tb.den > 0 && tb.num <= tb.den;
}

/* Picks the first H.264 video track and the first AAC audio track (cover
 * pictures are not video). Any other codec in the first track of its kind
 * is refused: silently dropping a track would be worse than saying so. */
/* Codecs MPEG-TS segments carry (what HLS players take in TS). */
static bool s_ts_codec(enum AVCodecID id)
{
    return id == AV_CODEC_ID_H264 || id == AV_CODEC_ID_AAC;
}

/* Codecs fMP4 (CMAF) segments carry: what the MP4 muxer writes and HLS
 * players on some platform decode. */
static bool s_fmp4_codec(enum AVCodecID id)
{
    static const enum AVCodecID ok[] = {AV_CODEC_ID_H264, AV_CODEC_ID_HEVC, AV_CODEC_ID_AV1,  AV_CODEC_ID_VP9,
                                        AV_CODEC_ID_AAC,  AV_CODEC_ID_MP3,  AV_CODEC_ID_AC3,  AV_CODEC_ID_EAC3,
                                        AV_CODEC_ID_OPUS, AV_CODEC_ID_FLAC, AV_CODEC_ID_ALAC, AV_CODEC_ID_NONE};
    for (int i = 0; ok[i] != AV_CODEC_ID_NONE; i++)
        if (ok[i] == id)
            return true;
    return false;
}

/* Picks the first video (not a cover picture) and audio track of d and
 * the segment format: `want`, except that MPEG-TS becomes fMP4 when a
 * track's codec has no place in TS. 0 with *got set, or -1 with err set. */
static int s_pick_tracks(s_demux_t *d, vid_seg_format_t want, vid_seg_format_t *got, char *err, size_t errlen)
{
    AVFormatContext *f = d->fmt;
    if (f->nb_streams > VID_MAX_STREAMS) {
        s_err(err, errlen, "too many tracks (%u, at most %d)", f->nb_streams, VID_MAX_STREAMS);
        return -1;
    }
    for (unsigned i = 0; i < f->nb_streams; i++) {
        const AVStream *st = f->streams[i];
        enum AVMediaType type = st->codecpar->codec_type;
        if (type == AVMEDIA_TYPE_VIDEO && d->v < 0 && !(st->disposition & AV_DISPOSITION_ATTACHED_PIC))
            d->v = (int)i;
        else if (type == AVMEDIA_TYPE_AUDIO && d->a < 0)
            d->a = (int)i;
    }
    if (d->v < 0 && d->a < 0) {
        s_err(err, errlen, "no audio or video track");
        return -1;
    }
    *got = want;
    int tracks[2] = {d->v, d->a};
    for (int k = 0; k < 2; k++) {
        enum AVCodecID id = tracks[k] >= 0 ? f->streams[tracks[k]]->codecpar->codec_id : AV_CODEC_ID_NONE;
        if (tracks[k] < 0 || s_ts_codec(id))
            continue;
        if (!s_fmp4_codec(id)) {
            s_err(err, errlen,
                  "unsupported %s codec %s (HLS segments take H.264, HEVC, VP9 or AV1 video and AAC, MP3, AC-3, "
                  "E-AC-3, Opus, FLAC or ALAC audio)",
                  k == 0 ? "video" : "audio", avcodec_get_name(id));
            return -1;
        }
        *got = VID_SEG_FMP4;
    }
    for (int k = 0; k < 2; k++) {
        if (tracks[k] < 0)
            continue;
        AVStream *st = f->streams[tracks[k]];
        int n = avformat_index_get_entries_count(st);
        if (st->codecpar->extradata_size <= 0 || !s_tb_ok(st->time_base) || n <= 0) {
            s_err(err, errlen, "track %d has no samples, codec configuration or time base", tracks[k]);
            return -1;
        }
        if (n > S_MAX_ENTRIES) {
            s_err(err, errlen, "track %d has too many samples (%d)", tracks[k], n);
            return -1;
        }
    }
    d->primary = d->v >= 0 ? d->v : d->a;
    return 0;
}

/* ---- the index ----------------------------------------------------------------------------- */

/* One segment. The primary track's samples of segment i are those with a
 * decode time in [start_i, start_i+1); the audio samples (of a video
 * source) those whose presentation time is in [pstart_i, pstart_i+1), the
 * first segment's range open below and the last's above. Times are in the
 * primary track's time base. */
typedef struct {
    int64_t start;  /* decode time of its first primary sample */
    int64_t pstart; /* presentation time it starts at */
    int64_t pos_lo, pos_hi, sample_bytes;
    /* A fragmented MP4's segment is demuxed from a view of the source:
     * its header, then [view_lo, view_hi) (the moofs holding its samples
     * and their mdats), the bytes between read as one 'free' box. 0, 0:
     * the whole source. */
    int64_t view_lo, view_hi;
} s_seg_t;

struct vid_index {
    int64_t src_size;
    int32_t v, a;                 /* track numbers in the source; -1 none */
    int32_t v_entries, a_entries; /* sample counts: a cheap check that a source is the indexed one */
    AVRational tb;                /* primary track's */
    AVRational atb;               /* audio track's (tb when audio is primary) */
    int64_t pend;                 /* presentation end */
    int64_t target_ms;
    int32_t format;   /* vid_seg_format_t */
    int64_t moov_end; /* a fragmented MP4's header end (views start there), or 0 */
    uint32_t nseg;
    s_seg_t *seg; /* owned */
};

void vid_index_destroy(vid_index_t **p)
{
    if (p == NULL || *p == NULL)
        return;
    free((*p)->seg);
    free(*p);
    *p = NULL;
}

/* t (in ix->tb) in milliseconds, rounded to the nearest. */
static int64_t s_ms(const vid_index_t *ix, int64_t t)
{
    return av_rescale_rnd(t, 1000 * (int64_t)ix->tb.num, ix->tb.den, AV_ROUND_NEAR_INF);
}

/* Presentation start of segment n (n == nseg: the end). */
static int64_t s_pstart(const vid_index_t *ix, uint32_t n)
{
    return n < ix->nseg ? ix->seg[n].pstart : ix->pend;
}

int vid_index_segments(const vid_index_t *ix)
{
    return (int)ix->nseg;
}

double vid_index_duration(const vid_index_t *ix)
{
    return (double)(s_ms(ix, ix->pend) - s_ms(ix, ix->seg[0].pstart)) / 1000.0;
}

int vid_index_segment_info(const vid_index_t *ix, int n, vid_segment_info_t *out)
{
    if (n < 0 || (uint32_t)n >= ix->nseg)
        return -1;
    const s_seg_t *s = &ix->seg[n];
    out->start = (double)s_ms(ix, s->pstart) / 1000.0;
    out->duration = (double)(s_ms(ix, s_pstart(ix, (uint32_t)n + 1)) - s_ms(ix, s->pstart)) / 1000.0;
    out->pos_lo = s->pos_lo;
    out->pos_hi = s->pos_hi;
    out->sample_bytes = s->sample_bytes;
    return 0;
}

/* Appends a segment starting at decode time `start`, presentation time
 * `pstart`. Returns 0, or -1 past VID_MAX_SEGMENTS or out of memory. */
static int s_add_segment(vid_index_t *ix, uint32_t *cap, int64_t start, int64_t pstart, char *err, size_t errlen)
{
    if (ix->nseg >= VID_MAX_SEGMENTS) {
        s_err(err, errlen, "more than %d segments", VID_MAX_SEGMENTS);
        return -1;
    }
    if (ix->nseg == *cap) {
        uint32_t ncap = *cap ? *cap * 2 : 64;
        s_seg_t *n = realloc(ix->seg, ncap * sizeof(*n));
        if (n == NULL) {
            s_err(err, errlen, "out of memory");
            return -1;
        }
        ix->seg = n;
        *cap = ncap;
    }
    ix->seg[ix->nseg++] = (s_seg_t){.start = start, .pstart = pstart, .pos_lo = INT64_MAX};
    return 0;
}

/* Cuts a video track on keyframes: each segment ends at the keyframe (or
 * the end) whose distance from its start is nearest `target` ticks. A
 * keyframe's presentation time is its decode time + delta (the first
 * sample's composition offset). */
static int s_plan_video(vid_index_t *ix, AVStream *st, int64_t pstart, int64_t delta, int64_t target, char *err,
                        size_t errlen)
{
    uint32_t cap = 0;
    int n = avformat_index_get_entries_count(st);
    const AVIndexEntry *first = avformat_index_get_entry(st, 0);
    if (!(first->flags & AVINDEX_KEYFRAME)) {
        s_err(err, errlen, "unsupported: the video does not start with a keyframe");
        return -1;
    }
    if (s_add_segment(ix, &cap, first->timestamp, pstart, err, errlen) != 0)
        return -1;
    int k = 1; /* the next sample to consider as the end of the current segment */
    int64_t s = pstart;
    for (;;) {
        int best = -1;
        int64_t best_d = INT64_MAX, best_c = ix->pend;
        for (; k <= n; k++) {
            int64_t c = ix->pend;
            if (k < n) {
                const AVIndexEntry *e = avformat_index_get_entry(st, k);
                if (!(e->flags & AVINDEX_KEYFRAME) || (e->flags & AVINDEX_DISCARD_FRAME))
                    continue;
                c = e->timestamp + delta < ix->pend ? e->timestamp + delta : ix->pend;
            }
            if (c <= s)
                continue;
            int64_t d = c - s - target;
            d = d < 0 ? -d : d;
            if (d >= best_d)
                break; /* keyframes only get farther from the target from here */
            best = k, best_d = d, best_c = c;
            if (c == ix->pend)
                break;
        }
        if (best < 0 || best_c == ix->pend)
            return 0;
        const AVIndexEntry *e = avformat_index_get_entry(st, best);
        if (s_add_segment(ix, &cap, e->timestamp, best_c, err, errlen) != 0)
            return -1;
        s = best_c;
        k = best + 1;
    }
}

/* Cuts an audio-only track at the first sample at or past `target` ticks
 * after each segment's start. */
static int s_plan_audio(vid_index_t *ix, AVStream *st, int64_t pstart, int64_t target, char *err, size_t errlen)
{
    uint32_t cap = 0;
    int n = avformat_index_get_entries_count(st);
    if (s_add_segment(ix, &cap, avformat_index_get_entry(st, 0)->timestamp, pstart, err, errlen) != 0)
        return -1;
    int64_t s = pstart;
    for (int k = 1; k < n; k++) {
        const AVIndexEntry *e = avformat_index_get_entry(st, k);
        if (e->flags & AVINDEX_DISCARD_FRAME || e->timestamp - s < target)
            continue;
        if (e->timestamp >= ix->pend)
            break;
        if (s_add_segment(ix, &cap, e->timestamp, e->timestamp, err, errlen) != 0)
            return -1;
        s = e->timestamp;
    }
    return 0;
}

/* The segment (from *seg on; entries come in time order) that a sample of
 * time t (in tb) belongs to: by decode time against starts when `by_start`,
 * else by presentation time against pstarts. */
static uint32_t s_seg_of(const vid_index_t *ix, uint32_t seg, int64_t t, AVRational tb, bool by_start)
{
    while (seg + 1 < ix->nseg &&
           av_compare_ts(t, tb, by_start ? ix->seg[seg + 1].start : ix->seg[seg + 1].pstart, ix->tb) >= 0)
        seg++;
    return seg;
}

/* Checks every sample of the tracks used: inside the source (a truncated
 * file fails here, without reading the mdat), in time order, and at times
 * within VID_MAX_DURATION_S (so later arithmetic cannot overflow). */
static int s_check_samples(const vid_index_t *ix, AVFormatContext *f, char *err, size_t errlen)
{
    int tracks[2] = {ix->v, ix->a};
    for (int k = 0; k < 2; k++) {
        if (tracks[k] < 0)
            continue;
        AVStream *st = f->streams[tracks[k]];
        double unit = av_q2d(st->time_base);
        int n = avformat_index_get_entries_count(st);
        int64_t prev = INT64_MIN;
        for (int i = 0; i < n; i++) {
            const AVIndexEntry *e = avformat_index_get_entry(st, i);
            if (e->pos < 0 || e->size < 0 || e->pos > ix->src_size - e->size) {
                s_err(err, errlen,
                      "truncated: a sample of track %d ends at %" PRId64 ", past the end of the file (%" PRId64
                      " bytes)",
                      tracks[k], e->pos + e->size, ix->src_size);
                return -1;
            }
            if (e->timestamp < prev || fabs((double)e->timestamp * unit) > VID_MAX_DURATION_S) {
                s_err(err, errlen, "track %d's sample times are out of order or beyond %d s", tracks[k],
                      VID_MAX_DURATION_S);
                return -1;
            }
            prev = e->timestamp;
        }
    }
    return 0;
}

/* Fills each segment's byte range and sample bytes (samples checked by
 * s_check_samples). */
static void s_account(vid_index_t *ix, AVFormatContext *f)
{
    int tracks[2] = {ix->v, ix->a};
    for (int k = 0; k < 2; k++) {
        if (tracks[k] < 0)
            continue;
        AVStream *st = f->streams[tracks[k]];
        bool primary = k == 0 || ix->v < 0;
        int n = avformat_index_get_entries_count(st);
        uint32_t seg = 0;
        for (int i = 0; i < n; i++) {
            const AVIndexEntry *e = avformat_index_get_entry(st, i);
            seg = s_seg_of(ix, seg, e->timestamp, st->time_base, primary);
            s_seg_t *s = &ix->seg[seg];
            s->pos_lo = e->pos < s->pos_lo ? e->pos : s->pos_lo;
            s->pos_hi = e->pos + e->size > s->pos_hi ? e->pos + e->size : s->pos_hi;
            s->sample_bytes += e->size;
        }
    }
    for (uint32_t i = 0; i < ix->nseg; i++)
        if (ix->seg[i].pos_lo == INT64_MAX)
            ix->seg[i].pos_lo = ix->seg[i].pos_hi = 0;
}

/* How many of the n sorted offsets v are at or below x (the one before
 * that count is the last at or below x). */
static size_t s_count_at_or_below(const int64_t *v, size_t n, int64_t x)
{
    size_t lo = 0, hi = n; /* the count is in [lo, hi] */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (v[mid] <= x)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* A fragmented MP4's segments get views (s_seg_t): with them a segment
 * reads its own fragments, not every moof of the file again. Each view
 * runs from the moof at or before its first sample to the moof after its
 * last (or the end). No map (a box out of place, too many fragments):
 * no views, and segments read every moof as the index did. -1 on a read
 * error. */
static int s_plan_views(vid_index_t *ix, s_io_t *io)
{
    s_frag_map_t map;
    memset(&map, 0, sizeof(map));
    s_io_t walk = *io; /* its reads count against the index's budget */
    walk.holes = 0;
    if (s_walk_boxes(&walk, &map) != 0) {
        s_frag_map_free(&map);
        return -1;
    }
    io->used = walk.used;
    io->reads = walk.reads;
    if (map.ok && map.moov_end <= map.moof[0]) {
        ix->moov_end = map.moov_end;
        for (uint32_t i = 0; i < ix->nseg; i++) {
            s_seg_t *g = &ix->seg[i];
            size_t first = s_count_at_or_below(map.moof, map.n, g->pos_lo);    /* its first fragment, + 1 */
            size_t last = s_count_at_or_below(map.moof, map.n, g->pos_hi - 1); /* its last fragment, + 1 */
            if (g->pos_hi <= g->pos_lo || first == 0)
                continue; /* no sample, or one before the first moof: the whole source */
            g->view_lo = map.moof[first - 1];
            g->view_hi = last < map.n ? map.moof[last] : ix->src_size;
        }
    }
    s_frag_map_free(&map);
    return 0;
}

/* Checks what both vid_index_new and vid_index_load rely on: times within
 * VID_MAX_DURATION_S, segments in order and none shorter than 1 ms (so no
 * EXTINF is 0.000), byte ranges inside the source. */
static int s_validate(const vid_index_t *ix, char *err, size_t errlen)
{
    if (ix->nseg < 1 || ix->nseg > VID_MAX_SEGMENTS) {
        s_err(err, errlen, "bad segment count");
        return -1;
    }
    /* Bound every time first, so the millisecond conversions below cannot overflow. */
    double unit = (double)ix->tb.num / ix->tb.den;
    int64_t prev_ms = 0;
    for (uint32_t i = 0; i <= ix->nseg; i++) {
        int64_t p = s_pstart(ix, i);
        if (fabs((double)p * unit) > VID_MAX_DURATION_S ||
            (i < ix->nseg && fabs((double)ix->seg[i].start * unit) > VID_MAX_DURATION_S)) {
            s_err(err, errlen, "a time is beyond %d s", VID_MAX_DURATION_S);
            return -1;
        }
        int64_t ms = s_ms(ix, p);
        if (i > 0 && (ms <= prev_ms || (i < ix->nseg && ix->seg[i].start <= ix->seg[i - 1].start))) {
            s_err(err, errlen, "segment %u is empty or out of order", i - 1);
            return -1;
        }
        prev_ms = ms;
        if (i < ix->nseg) {
            const s_seg_t *s = &ix->seg[i];
            if (s->pos_lo < 0 || s->pos_lo > s->pos_hi || s->pos_hi > ix->src_size || s->sample_bytes < 0 ||
                s->sample_bytes > s->pos_hi - s->pos_lo) {
                s_err(err, errlen, "segment %u's byte range is outside the source", i);
                return -1;
            }
            /* a view: after the header, around the samples, inside the source */
            bool none = s->view_lo == 0 && s->view_hi == 0;
            if (!none && (ix->moov_end < 8 || s->view_lo < ix->moov_end || s->view_lo > s->pos_lo ||
                          s->view_hi < s->pos_hi || s->view_hi > ix->src_size)) {
                s_err(err, errlen, "segment %u's view is outside the source", i);
                return -1;
            }
        }
    }
    if (ix->moov_end < 0 || ix->moov_end > ix->src_size) {
        s_err(err, errlen, "the header's end is outside the source");
        return -1;
    }
    if (s_ms(ix, ix->pend) - s_ms(ix, ix->seg[0].pstart) > (int64_t)VID_MAX_DURATION_S * 1000) {
        s_err(err, errlen, "longer than %d s", VID_MAX_DURATION_S);
        return -1;
    }
    return 0;
}

vid_index_t *vid_index_new(const vid_source_t *src, double target_duration, char *err, size_t errlen)
{
    return vid_index_new_as(src, target_duration, VID_SEG_TS, err, errlen);
}

vid_seg_format_t vid_index_format(const vid_index_t *ix)
{
    return (vid_seg_format_t)ix->format;
}

vid_index_t *vid_index_new_as(const vid_source_t *src, double target_duration, vid_seg_format_t want, char *err,
                              size_t errlen)
{
    vid_seg_format_t got;
    vid_index_t *ix = NULL;
    s_demux_t d;
    bool ok = false;
    if (!(target_duration > 0 && target_duration <= S_MAX_TARGET_S)) {
        s_err(err, errlen, "target duration %g is not in (0, %d] s", target_duration, S_MAX_TARGET_S);
        return NULL;
    }
    if (s_demux_open(&d, src, VID_MAX_HEADER_BYTES, err, errlen) != 0)
        return NULL;
    if (s_pick_tracks(&d, want, &got, err, errlen) != 0)
        goto cleanup;
    ix = calloc(1, sizeof(*ix));
    if (ix == NULL) {
        s_err(err, errlen, "out of memory");
        goto cleanup;
    }
    AVStream *st = d.fmt->streams[d.primary];
    ix->format = got;
    ix->src_size = src->size;
    ix->v = d.v;
    ix->a = d.a;
    ix->v_entries = d.v >= 0 ? avformat_index_get_entries_count(d.fmt->streams[d.v]) : 0;
    ix->a_entries = d.a >= 0 ? avformat_index_get_entries_count(d.fmt->streams[d.a]) : 0;
    ix->tb = st->time_base;
    ix->atb = d.a >= 0 ? d.fmt->streams[d.a]->time_base : st->time_base;
    ix->target_ms = (int64_t)(target_duration * 1000 + 0.5);

    /* Presentation starts at the track's start time (the first sample's
     * composition time after the edit list) and lasts its duration. */
    int64_t first_dts = avformat_index_get_entry(st, 0)->timestamp;
    int64_t pstart = st->start_time != AV_NOPTS_VALUE ? st->start_time : first_dts;
    double unit = av_q2d(st->time_base);
    if (st->duration == AV_NOPTS_VALUE || st->duration <= 0 || (double)st->duration * unit > VID_MAX_DURATION_S ||
        fabs((double)pstart * unit) > VID_MAX_DURATION_S || fabs((double)first_dts * unit) > VID_MAX_DURATION_S) {
        s_err(err, errlen, "track %d has no duration or one beyond %d s", d.primary, VID_MAX_DURATION_S);
        goto cleanup;
    }
    ix->pend = pstart + st->duration;
    int64_t target = av_rescale_q(ix->target_ms, (AVRational){1, 1000}, st->time_base);
    if (target <= 0)
        target = 1;
    if (s_check_samples(ix, d.fmt, err, errlen) != 0)
        goto cleanup;
    int rc = d.v >= 0 ? s_plan_video(ix, st, pstart, pstart - first_dts, target, err, errlen)
                      : s_plan_audio(ix, st, pstart, target, err, errlen);
    if (rc != 0)
        goto cleanup;
    s_account(ix, d.fmt);
    if (s_fragmented(d.fmt) && s_plan_views(ix, &d.io) != 0) {
        s_err(err, errlen, "source read failed");
        goto cleanup;
    }
    if (s_validate(ix, err, errlen) != 0)
        goto cleanup;
    ok = true;
cleanup:
    s_demux_close(&d);
    if (!ok)
        vid_index_destroy(&ix);
    return ix;
}

/* ---- serialised form -------------------------------------------------------------------- */

/* "RFVIDX" + format version; little-endian fields; a CRC-32 at the end. */
static const uint8_t S_MAGIC[8] = {'R', 'F', 'V', 'I', 'D', 'X', '0', '3'};
#define S_HEAD_LEN (8 + 8 + 4 * 4 + 4 * 4 + 8 + 8 + 4 + 8 + 4)
#define S_SEG_LEN (7 * 8)

static uint8_t *s_put64(uint8_t *p, int64_t v)
{
    for (int i = 0; i < 8; i++)
        *p++ = (uint8_t)((uint64_t)v >> (8 * i));
    return p;
}

static uint8_t *s_put32(uint8_t *p, int32_t v)
{
    for (int i = 0; i < 4; i++)
        *p++ = (uint8_t)((uint32_t)v >> (8 * i));
    return p;
}

static int64_t s_get64(const uint8_t **p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)(*p)[i] << (8 * i);
    *p += 8;
    return (int64_t)v;
}

static int32_t s_get32(const uint8_t **p)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++)
        v |= (uint32_t)(*p)[i] << (8 * i);
    *p += 4;
    return (int32_t)v;
}

int vid_index_save(const vid_index_t *ix, uint8_t **out, size_t *len)
{
    size_t n = S_HEAD_LEN + (size_t)ix->nseg * S_SEG_LEN + 4;
    uint8_t *buf = malloc(n), *p = buf;
    if (buf == NULL)
        return -1;
    memcpy(p, S_MAGIC, 8);
    p = s_put64(p + 8, ix->src_size);
    p = s_put32(p, ix->v);
    p = s_put32(p, ix->a);
    p = s_put32(p, ix->v_entries);
    p = s_put32(p, ix->a_entries);
    p = s_put32(p, ix->tb.num);
    p = s_put32(p, ix->tb.den);
    p = s_put32(p, ix->atb.num);
    p = s_put32(p, ix->atb.den);
    p = s_put64(p, ix->pend);
    p = s_put64(p, ix->target_ms);
    p = s_put32(p, ix->format);
    p = s_put64(p, ix->moov_end);
    p = s_put32(p, (int32_t)ix->nseg);
    for (uint32_t i = 0; i < ix->nseg; i++) {
        p = s_put64(p, ix->seg[i].start);
        p = s_put64(p, ix->seg[i].pstart);
        p = s_put64(p, ix->seg[i].pos_lo);
        p = s_put64(p, ix->seg[i].pos_hi);
        p = s_put64(p, ix->seg[i].sample_bytes);
        p = s_put64(p, ix->seg[i].view_lo);
        p = s_put64(p, ix->seg[i].view_hi);
    }
    p = s_put32(p, (int32_t)crc32(0, buf, (uInt)(n - 4)));
    *out = buf;
    *len = n;
    return 0;
}

vid_index_t *vid_index_load(const uint8_t *buf, size_t len, char *err, size_t errlen)
{
    vid_index_t *ix = NULL;
    bool ok = false;
    if (buf == NULL || len < S_HEAD_LEN + 4 || len > S_HEAD_LEN + (size_t)VID_MAX_SEGMENTS * S_SEG_LEN + 4 ||
        memcmp(buf, S_MAGIC, 8) != 0) {
        s_err(err, errlen, "not a saved video index");
        return NULL;
    }
    const uint8_t *p = buf + len - 4;
    if ((uint32_t)s_get32(&p) != (uint32_t)crc32(0, buf, (uInt)(len - 4))) {
        s_err(err, errlen, "saved video index is corrupt (checksum)");
        return NULL;
    }
    ix = calloc(1, sizeof(*ix));
    if (ix == NULL) {
        s_err(err, errlen, "out of memory");
        return NULL;
    }
    p = buf + 8;
    ix->src_size = s_get64(&p);
    ix->v = s_get32(&p);
    ix->a = s_get32(&p);
    ix->v_entries = s_get32(&p);
    ix->a_entries = s_get32(&p);
    ix->tb.num = s_get32(&p);
    ix->tb.den = s_get32(&p);
    ix->atb.num = s_get32(&p);
    ix->atb.den = s_get32(&p);
    ix->pend = s_get64(&p);
    ix->target_ms = s_get64(&p);
    ix->format = s_get32(&p);
    ix->moov_end = s_get64(&p);
    uint32_t nseg = (uint32_t)s_get32(&p);
    bool tracks_ok = ix->v >= -1 && ix->v < VID_MAX_STREAMS && ix->a >= -1 && ix->a < VID_MAX_STREAMS &&
                     (ix->v >= 0 || ix->a >= 0) && ix->v != ix->a &&
                     (ix->v < 0 ? ix->v_entries == 0 : ix->v_entries > 0 && ix->v_entries <= S_MAX_ENTRIES) &&
                     (ix->a < 0 ? ix->a_entries == 0 : ix->a_entries > 0 && ix->a_entries <= S_MAX_ENTRIES);
    if (ix->src_size <= 0 || !tracks_ok || !s_tb_ok(ix->tb) || !s_tb_ok(ix->atb) || ix->target_ms <= 0 ||
        ix->target_ms > S_MAX_TARGET_S * 1000 || (ix->format != VID_SEG_TS && ix->format != VID_SEG_FMP4) || nseg < 1 ||
        nseg > VID_MAX_SEGMENTS || len != S_HEAD_LEN + (size_t)nseg * S_SEG_LEN + 4) {
        s_err(err, errlen, "saved video index has invalid fields");
        goto cleanup;
    }
    ix->seg = calloc(nseg, sizeof(*ix->seg));
    if (ix->seg == NULL) {
        s_err(err, errlen, "out of memory");
        goto cleanup;
    }
    ix->nseg = nseg;
    for (uint32_t i = 0; i < nseg; i++) {
        ix->seg[i].start = s_get64(&p);
        ix->seg[i].pstart = s_get64(&p);
        ix->seg[i].pos_lo = s_get64(&p);
        ix->seg[i].pos_hi = s_get64(&p);
        ix->seg[i].sample_bytes = s_get64(&p);
        ix->seg[i].view_lo = s_get64(&p);
        ix->seg[i].view_hi = s_get64(&p);
    }
    if (s_validate(ix, err, errlen) != 0)
        goto cleanup;
    ok = true;
cleanup:
    if (!ok)
        vid_index_destroy(&ix);
    return ix;
}

/* ---- the playlist ------------------------------------------------------------------------ */

void vid_hls_opts_default(vid_hls_opts_t *o)
{
    *o = (vid_hls_opts_t){.version = 3, .media_sequence = 0, .segment_uri = "seg-%d.ts", .init_uri = "init.mp4"};
}

/* Whether uri can stand in EXT-X-MAP's quoted URI: relative, printable,
 * no quote. */
static bool s_init_uri_ok(const char *uri)
{
    size_t n = strlen(uri);
    if (n == 0 || n > 512 || uri[0] == '/' || uri[0] == '#')
        return false;
    for (const char *p = uri; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f || *p == '"')
            return false;
    return true;
}

/* Whether pattern is a relative URI with exactly one %d and no other
 * conversion ("%%" is a '%'), without characters that break the playlist. */
static bool s_pattern_ok(const char *pattern)
{
    int d = 0;
    size_t n = strlen(pattern);
    if (n == 0 || n > 512 || pattern[0] == '/' || pattern[0] == '#')
        return false;
    for (const char *p = pattern; *p; p++) {
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            return false;
        if (*p != '%')
            continue;
        p++;
        if (*p == 'd')
            d++;
        else if (*p != '%')
            return false;
    }
    return d == 1;
}

/* Writes pattern with %d replaced by n and %% by %. */
static void s_put_uri(FILE *f, const char *pattern, int n)
{
    for (const char *p = pattern; *p; p++) {
        if (*p != '%') {
            fputc(*p, f);
            continue;
        }
        p++;
        if (*p == 'd')
            fprintf(f, "%d", n);
        else
            fputc('%', f);
    }
}

int vid_hls_playlist(const vid_index_t *ix, const vid_hls_opts_t *o, char **out, size_t *len)
{
    vid_hls_opts_t def;
    vid_hls_opts_default(&def);
    if (o == NULL)
        o = &def;
    const char *pattern = o->segment_uri != NULL ? o->segment_uri : def.segment_uri;
    const char *init = o->init_uri != NULL ? o->init_uri : def.init_uri;
    bool fmp4 = ix->format == VID_SEG_FMP4;
    if (o->version < 3 || o->version > 7 || o->media_sequence < 0 || !s_pattern_ok(pattern) ||
        (fmp4 && !s_init_uri_ok(init)))
        return -1;
    *out = NULL;
    *len = 0;
    FILE *f = open_memstream(out, len);
    if (f == NULL)
        return -1;
    /* EXTINFs are differences of rounded boundaries, so they add up to the
     * rounded duration exactly; TARGETDURATION must be at least each
     * EXTINF rounded up (RFC 8216 4.3.3.1; players reject less). */
    int64_t max_ms = 0;
    for (uint32_t i = 0; i < ix->nseg; i++) {
        int64_t ms = s_ms(ix, s_pstart(ix, i + 1)) - s_ms(ix, s_pstart(ix, i));
        max_ms = ms > max_ms ? ms : max_ms;
    }
    fprintf(f,
            "#EXTM3U\n#EXT-X-VERSION:%d\n#EXT-X-TARGETDURATION:%" PRId64 "\n#EXT-X-MEDIA-SEQUENCE:%" PRId64
            "\n#EXT-X-PLAYLIST-TYPE:VOD\n",
            fmp4 && o->version < 6 ? 6 : o->version, (max_ms + 999) / 1000, o->media_sequence);
    /* fMP4 segments need their init section (RFC 8216 4.3.2.5: version 6
     * for EXT-X-MAP outside an I-frame playlist) */
    if (fmp4)
        fprintf(f, "#EXT-X-MAP:URI=\"%s\"\n", init);
    for (uint32_t i = 0; i < ix->nseg; i++) {
        int64_t ms = s_ms(ix, s_pstart(ix, i + 1)) - s_ms(ix, s_pstart(ix, i));
        fprintf(f, "#EXTINF:%" PRId64 ".%03" PRId64 ",\n", ms / 1000, ms % 1000);
        s_put_uri(f, pattern, (int)i);
        fputc('\n', f);
    }
    fputs("#EXT-X-ENDLIST\n", f);
    if (fclose(f) != 0) {
        free(*out);
        *out = NULL;
        return -1;
    }
    return 0;
}

/* ---- a segment ------------------------------------------------------------------------------ */

/* The write side: TS bytes go to the caller's sink as the muxer flushes. */
typedef struct {
    vid_write_fn write;
    void *arg;
    bool failed; /* the sink refused bytes */
    bool mute;   /* bytes are dropped (an fMP4 segment's own ftyp and moov) */
} s_sink_t;

/* AVIOContext write callback: hands buf (libavformat's, valid for the
 * call) to the caller's sink; once the sink refused, refuses everything. */
static int s_sink_write(void *opaque, uint8_t *buf, int size)
{
    s_sink_t *s = opaque;
    if (s->mute && !s->failed)
        return size;
    if (s->failed || s->write(s->arg, buf, (size_t)size) != 0) {
        s->failed = true;
        return AVERROR(EIO);
    }
    return size;
}

/* The muxer of one segment: the MPEG-TS or fMP4 writer, its output
 * tracks in the order video, audio, and the sink behind it. */
typedef struct {
    s_sink_t sink;
    AVIOContext *pb;                 /* owned */
    AVFormatContext *fmt;            /* owned */
    int out_of[VID_MAX_STREAMS];     /* source track -> output track, -1 none */
    int64_t offset[VID_MAX_STREAMS]; /* VID_TS_OFFSET_S in each output track's time base */
    int fragment;                    /* fMP4: the moof's sequence number (segment + 1); 0: MPEG-TS */
    bool init;                       /* fMP4: the ftyp and moov are the output (the init section) */
} s_mux_t;

/* The muxer over the sink, MPEG-TS or (fragment > 0) fMP4 for fragment
 * `fragment`, with no track yet (s_mux_start follows once they are
 * added). 0, or -1 with err set. */
static int s_mux_alloc(s_mux_t *m, int fragment, vid_write_fn write, void *arg, char *err, size_t errlen)
{
    memset(m, 0, sizeof(*m));
    m->sink = (s_sink_t){.write = write, .arg = arg};
    m->fragment = fragment;
    for (int i = 0; i < VID_MAX_STREAMS; i++)
        m->out_of[i] = -1;
    if (avformat_alloc_output_context2(&m->fmt, NULL, fragment > 0 ? "mp4" : "mpegts", NULL) < 0) {
        s_err(err, errlen, "cannot create the %s muxer", fragment > 0 ? "fMP4" : "MPEG-TS");
        return -1;
    }
    uint8_t *buf = av_malloc(S_IO_BUF);
    m->pb = buf != NULL ? avio_alloc_context(buf, S_IO_BUF, 1, &m->sink, NULL, s_sink_write, NULL) : NULL;
    if (m->pb == NULL) {
        av_free(buf);
        s_err(err, errlen, "out of memory");
        return -1;
    }
    m->fmt->pb = m->pb;
    m->fmt->flags |= AVFMT_FLAG_CUSTOM_IO;
    m->fmt->avoid_negative_ts = AVFMT_AVOID_NEG_TS_DISABLED;
    return 0;
}

/* Writes the header of the tracks added. Every segment is written with
 * the same settings, so their timestamps are one timeline: no shifting of
 * negative timestamps (it would differ between the first segment and the
 * others), and no muxer delay. An fMP4 segment is one fragment whose
 * tfdt is its first sample's time (frag_discont, no edit list), so any
 * segment stands alone after the init section; its own ftyp and moov are
 * dropped. 0, or -1 with err set. */
static int s_mux_start(s_mux_t *m, char *err, size_t errlen)
{
    AVDictionary *opts = NULL;
    if (m->fragment > 0) {
        av_dict_set(&opts, "movflags", "frag_custom+empty_moov+default_base_moof+frag_discont+skip_trailer", 0);
        av_dict_set(&opts, "use_editlist", "0", 0);
        av_dict_set_int(&opts, "fragment_index", m->fragment, 0);
        m->sink.mute = !m->init;
    } else {
        av_dict_set(&opts, "mpegts_copyts", "1", 0);
    }
    int e = avformat_write_header(m->fmt, &opts);
    av_dict_free(&opts);
    if (e >= 0)
        avio_flush(m->pb);
    m->sink.mute = m->fragment > 0 && m->init; /* an init section is its header only */
    if (e < 0) {
        char msg[AV_ERROR_MAX_STRING_SIZE] = "";
        av_strerror(e, msg, sizeof(msg));
        s_err(err, errlen, "cannot start the %s segment: %s", m->fragment > 0 ? "fMP4" : "MPEG-TS", msg);
        return -1;
    }
    for (unsigned i = 0; i < m->fmt->nb_streams; i++)
        m->offset[i] = av_rescale_q(VID_TS_OFFSET_S, (AVRational){1, 1}, m->fmt->streams[i]->time_base);
    return 0;
}

/* The sample entry tag of an fMP4 track: HEVC as hvc1 (parameter sets in
 * the sample entry; what Apple's players require), others the muxer's. */
static unsigned s_fmp4_tag(const AVCodecParameters *p)
{
    return p->codec_id == AV_CODEC_ID_HEVC ? MKTAG('h', 'v', 'c', '1') : 0;
}

/* Opens the muxer (see s_mux_alloc) over the sink with the tracks of d,
 * copied. */
static int s_mux_open(s_mux_t *m, const s_demux_t *d, int fragment, bool init, vid_write_fn write, void *arg, char *err,
                      size_t errlen)
{
    if (s_mux_alloc(m, fragment, write, arg, err, errlen) < 0)
        return -1;
    m->init = init;
    int tracks[2] = {d->v, d->a};
    for (int k = 0; k < 2; k++) {
        if (tracks[k] < 0)
            continue;
        AVStream *out = avformat_new_stream(m->fmt, NULL);
        if (out == NULL || avcodec_parameters_copy(out->codecpar, d->fmt->streams[tracks[k]]->codecpar) < 0) {
            s_err(err, errlen, "out of memory");
            return -1;
        }
        out->codecpar->codec_tag = fragment > 0 ? s_fmp4_tag(out->codecpar) : 0;
        if (out->codecpar->codec_id == AV_CODEC_ID_AAC && out->codecpar->frame_size <= 0)
            out->codecpar->frame_size = 1024; /* what the MP4 muxer asks for its sample durations */
        out->time_base = d->fmt->streams[tracks[k]]->time_base;
        m->out_of[tracks[k]] = out->index;
    }
    return s_mux_start(m, err, errlen);
}

/* Frees what s_mux_open made; safe on a zeroed or closed m. */
static void s_mux_close(s_mux_t *m)
{
    avformat_free_context(m->fmt);
    m->fmt = NULL;
    if (m->pb != NULL) {
        av_freep(&m->pb->buffer);
        avio_context_free(&m->pb);
    }
}

/* Whether the source opened in d is the one ix was made from, as far as
 * the moov can tell: size, tracks, codecs and sample counts. */
static bool s_same_source(const vid_index_t *ix, const s_demux_t *d, bool view)
{
    const AVFormatContext *f = d->fmt;
    return ix->v == d->v && ix->a == d->a &&
           (view || d->v < 0 || avformat_index_get_entries_count(f->streams[d->v]) == ix->v_entries) &&
           (view || d->a < 0 || avformat_index_get_entries_count(f->streams[d->a]) == ix->a_entries) &&
           av_cmp_q(f->streams[d->primary]->time_base, ix->tb) == 0 &&
           (d->a < 0 || av_cmp_q(f->streams[d->a]->time_base, ix->atb) == 0);
}

/* Where packet pkt stands against segment n: -1 before it, 0 in it, 1 past
 * it (see s_seg_t for the rule). */
static int s_place(const vid_index_t *ix, const s_demux_t *d, const AVPacket *pkt, uint32_t n)
{
    bool primary = pkt->stream_index == d->primary;
    AVRational tb = d->fmt->streams[pkt->stream_index]->time_base;
    int64_t t = primary ? pkt->dts : (pkt->pts != AV_NOPTS_VALUE ? pkt->pts : pkt->dts);
    if (t == AV_NOPTS_VALUE)
        return n == 0 ? 0 : -1;
    if (n > 0 && av_compare_ts(t, tb, primary ? ix->seg[n].start : ix->seg[n].pstart, ix->tb) < 0)
        return -1;
    if (n + 1 < ix->nseg && av_compare_ts(t, tb, primary ? ix->seg[n + 1].start : ix->seg[n + 1].pstart, ix->tb) >= 0)
        return 1;
    return 0;
}

/* Where to seek for segment n of a fragmented MP4. Its index holds decode
 * times, so the segment's pstart is its keyframe's decode time, and the
 * demuxer seeks by presentation time, a composition offset later: halfway
 * to the next keyframe lands on the segment's own, and s_copy_packets
 * checks that it did. */
static int64_t s_frag_seek_time(const vid_index_t *ix, const s_demux_t *d, uint32_t n)
{
    AVStream *st = d->fmt->streams[d->primary];
    int64_t start = ix->seg[n].start, next = ix->pend;
    int i = av_index_search_timestamp(st, start, AVSEEK_FLAG_BACKWARD);
    int count = avformat_index_get_entries_count(st);
    for (i = i < 0 ? count : i + 1; i < count; i++) {
        const AVIndexEntry *e = avformat_index_get_entry(st, i);
        if (e->flags & AVINDEX_KEYFRAME) {
            next = e->timestamp;
            break;
        }
    }
    return next > start ? start + (next - start) / 2 : start;
}

/* Copies the packets of segment n from d to m: seeks to the segment's
 * first keyframe, then reads until every track has passed the segment. */
static int s_copy_packets(const vid_index_t *ix, s_demux_t *d, s_mux_t *m, uint32_t n, char *err, size_t errlen)
{
    int rc = -1;
    AVPacket *pkt = av_packet_alloc();
    if (pkt == NULL) {
        s_err(err, errlen, "out of memory");
        return -1;
    }
    /* The MOV demuxer seeks by presentation time (to the last keyframe
     * that is presented at or before it), so the keyframe's own decode
     * time would land one GOP early. */
    bool frag = s_fragmented(d->fmt);
    int64_t to = frag ? s_frag_seek_time(ix, d, n) : ix->seg[n].pstart;
    if (n > 0 && av_seek_frame(d->fmt, d->primary, to, AVSEEK_FLAG_BACKWARD) < 0) {
        s_err(err, errlen, "cannot seek to segment %u", n);
        goto cleanup;
    }
    bool done[2] = {d->v < 0, d->a < 0}, first_video = true;
    while (!done[0] || !done[1]) {
        int e = av_read_frame(d->fmt, pkt);
        if (e == AVERROR_EOF)
            break;
        if (e < 0) {
            s_err(err, errlen, "%s",
                  d->io.over     ? "segment read past its byte budget"
                  : d->io.failed ? "source read failed"
                                 : "corrupt sample data");
            goto cleanup;
        }
        int k = pkt->stream_index == d->v ? 0 : pkt->stream_index == d->a ? 1 : -1;
        int place = k >= 0 ? s_place(ix, d, pkt, n) : -1;
        if (place > 0)
            done[k] = true;
        if (place != 0) {
            av_packet_unref(pkt);
            continue;
        }
        if (k == 0 && first_video &&
            (!(pkt->flags & AV_PKT_FLAG_KEY) || (frag && n > 0 && pkt->dts != ix->seg[n].start))) {
            s_err(err, errlen, "segment %u does not start on a keyframe: the source does not match the index", n);
            goto cleanup;
        }
        first_video = first_video && k != 0;
        int out = m->out_of[pkt->stream_index];
        AVStream *ost = m->fmt->streams[out];
        av_packet_rescale_ts(pkt, d->fmt->streams[pkt->stream_index]->time_base, ost->time_base);
        if (pkt->pts != AV_NOPTS_VALUE)
            pkt->pts += m->offset[out];
        if (pkt->dts != AV_NOPTS_VALUE)
            pkt->dts += m->offset[out];
        if (pkt->dts != AV_NOPTS_VALUE && pkt->dts < 0) {
            s_err(err, errlen, "unsupported: timestamps more than %d s before zero", VID_TS_OFFSET_S);
            goto cleanup;
        }
        pkt->stream_index = out;
        pkt->pos = -1;
        if (av_interleaved_write_frame(m->fmt, pkt) < 0) {
            s_err(err, errlen, "%s", m->sink.failed ? "the segment's sink failed" : "muxing the segment failed");
            goto cleanup;
        }
    }
    rc = 0;
cleanup:
    av_packet_free(&pkt);
    return rc;
}

/* Reads the source's bytes [lo, lo + len) at once into io->span, which
 * then answers the demuxer's reads there: a segment's samples are one
 * range read, however the tracks interleave (a fragmented MP4 keeps each
 * track's samples of a fragment together, and the demuxer, going by
 * time, would go back and forth between them). Spans above S_SPAN_MAX
 * are read as the demuxer asks. 0, or -1 on a read error. */
static int s_read_span(s_io_t *io, int64_t lo, int64_t len)
{
    if (io->span != NULL || len <= 0 || len > S_SPAN_MAX || io->used + len > io->budget)
        return 0; /* already read (a view), or read as asked */
    io->span = malloc((size_t)len);
    if (io->span == NULL)
        return 0; /* read as asked */
    for (int64_t got = 0; got < len;) {
        int64_t n = io->src->read(io->src->arg, io->span + got, lo + got, len - got);
        if (n <= 0) {
            free(io->span);
            io->span = NULL;
            io->failed = true;
            return -1;
        }
        got += n;
        io->used += n;
        io->reads++;
    }
    io->span_lo = lo;
    io->span_len = len;
    return 0;
}

/* Opens the view of segment g (s_seg_t) into d: the header, a hole to
 * the segment's first moof, its fragments and the end there. The view
 * must hold the segment as the index has it: its tracks, and its first
 * keyframe on its decode time (a fragment without a tfdt would take its
 * times from the fragments hidden before it). 0, or -1 (d closed). */
static int s_seg_open_view(const vid_index_t *ix, const vid_source_t *src, const s_seg_t *g, s_demux_t *d)
{
    s_io_t from;
    memset(&from, 0, sizeof(from));
    from.end = g->view_hi;
    if (g->view_lo > ix->moov_end) {
        from.holes = 1;
        from.hole_lo[0] = ix->moov_end;
        from.hole_hi[0] = g->view_lo;
    }
    /* the view's fragments in one read: the demuxer reads their moofs
     * when it opens, and their samples after */
    from.src = src;
    from.budget = VID_MAX_HEADER_BYTES + (g->view_hi - g->view_lo);
    if (s_read_span(&from, g->view_lo, g->view_hi - g->view_lo) != 0)
        return -1;
    char err[8];
    if (s_demux_open_as(d, src, VID_MAX_HEADER_BYTES, false, &from, err, sizeof(err)) != 0)
        return -1;
    vid_seg_format_t got;
    if (s_pick_tracks(d, (vid_seg_format_t)ix->format, &got, err, sizeof(err)) != 0 || !s_same_source(ix, d, true) ||
        (int)got != ix->format)
        goto fail;
    AVStream *st = d->fmt->streams[d->primary];
    int i = av_index_search_timestamp(st, g->start, AVSEEK_FLAG_ANY | AVSEEK_FLAG_BACKWARD);
    const AVIndexEntry *e = i >= 0 ? avformat_index_get_entry(st, i) : NULL;
    if (e == NULL || e->timestamp != g->start || !(e->flags & AVINDEX_KEYFRAME))
        goto fail;
    return 0;
fail:
    s_demux_close(d);
    return -1;
}

/* Opens src into d for segment n of ix (its view when it has one),
 * checking it is the source ix was made from (size, tracks, codecs'
 * format). 0, or -1 with err set (d closed). */
static int s_seg_open(const vid_index_t *ix, const vid_source_t *src, uint32_t n, s_demux_t *d, char *err,
                      size_t errlen)
{
    if (src == NULL || src->size != ix->src_size) {
        s_err(err, errlen, "the source is not the one indexed (size differs)");
        return -1;
    }
    if (ix->seg[n].view_hi > 0 && s_seg_open_view(ix, src, &ix->seg[n], d) == 0)
        return 0; /* else the whole source, as the index read it */
    if (s_demux_open(d, src, VID_MAX_HEADER_BYTES, err, errlen) != 0)
        return -1;
    vid_seg_format_t got;
    if (s_pick_tracks(d, (vid_seg_format_t)ix->format, &got, err, errlen) != 0)
        goto fail;
    if (!s_same_source(ix, d, false) || (int)got != ix->format) {
        s_err(err, errlen, "the source is not the one indexed (tracks differ)");
        goto fail;
    }
    return 0;
fail:
    s_demux_close(d);
    return -1;
}

/* Finishes m's output: the trailer, and for fMP4 the fragment it flushes. */
static int s_mux_finish(s_mux_t *m, char *err, size_t errlen)
{
    if (av_write_trailer(m->fmt) < 0 || m->pb->error < 0) {
        s_err(err, errlen, "%s", m->sink.failed ? "the segment's sink failed" : "finishing the segment failed");
        return -1;
    }
    return 0;
}

int vid_hls_segment(const vid_index_t *ix, const vid_source_t *src, int n, vid_write_fn write, void *arg, char *err,
                    size_t errlen)
{
    int rc = -1;
    s_demux_t d;
    s_mux_t m;
    memset(&m, 0, sizeof(m));
    if (n < 0 || (uint32_t)n >= ix->nseg) {
        s_err(err, errlen, "no segment %d (there are %u)", n, ix->nseg);
        return -1;
    }
    if (s_seg_open(ix, src, (uint32_t)n, &d, err, errlen) != 0)
        return -1;
    /* From here on the demuxer reads samples: those of this segment, what
     * lies between them (other segments' audio or video interleaved) and
     * read-ahead. Anything much beyond that is a corrupt or hostile file. */
    const s_seg_t *s = &ix->seg[n];
    d.io.budget = d.io.used + (s->pos_hi - s->pos_lo) + VID_READ_SLACK;
    if (s_read_span(&d.io, s->pos_lo, s->pos_hi - s->pos_lo) != 0) {
        s_err(err, errlen, "source read failed");
        goto cleanup;
    }
    int fragment = ix->format == VID_SEG_FMP4 ? n + 1 : 0;
    if (s_mux_open(&m, &d, fragment, false, write, arg, err, errlen) != 0 ||
        s_copy_packets(ix, &d, &m, (uint32_t)n, err, errlen) != 0 || s_mux_finish(&m, err, errlen) != 0)
        goto cleanup;
    rc = 0;
cleanup:
    s_mux_close(&m);
    s_demux_close(&d);
    return rc;
}

int vid_hls_init(const vid_index_t *ix, const vid_source_t *src, vid_write_fn write, void *arg, char *err,
                 size_t errlen)
{
    if (ix->format != VID_SEG_FMP4) {
        s_err(err, errlen, "MPEG-TS segments have no init section");
        return -1;
    }
    s_demux_t d;
    s_mux_t m;
    memset(&m, 0, sizeof(m));
    if (s_seg_open(ix, src, 0, &d, err, errlen) != 0) /* segment 0's view has the header */
        return -1;
    int rc = s_mux_open(&m, &d, 1, true, write, arg, err, errlen) == 0 && s_mux_finish(&m, err, errlen) == 0 ? 0 : -1;
    s_mux_close(&m);
    s_demux_close(&d);
    return rc;
}

/* ---- thumbnails ------------------------------------------------------------------------------ */

/* Frames decoded to reach a time from its keyframe: a 60 s GOP at 30 fps. */
#define S_THUMB_MAX_FRAMES 2000
/* Bytes read for a thumbnail beyond the header: the GOP up to the time. */
#define S_THUMB_MAX_READ (512LL << 20)
/* Decoded frames larger than this are refused: 8K (8192x4320) fits; a
 * hostile header claiming more does not make the decoder allocate it. */
#define S_THUMB_MAX_PIXELS (8192LL * 4352LL)

/* The first video track that is not a cover picture, or -1. */
static int s_first_video(const AVFormatContext *f)
{
    for (unsigned i = 0; i < f->nb_streams; i++)
        if (f->streams[i]->codecpar->codec_type == AVMEDIA_TYPE_VIDEO &&
            !(f->streams[i]->disposition & AV_DISPOSITION_ATTACHED_PIC))
            return (int)i;
    return -1;
}

/* A single-threaded decoder for st (caller owns; avcodec_free_context), or
 * NULL with err set. One thread: job threads are the parallelism. */
static AVCodecContext *s_decoder(const AVStream *st, char *err, size_t errlen)
{
    const AVCodec *codec = avcodec_find_decoder(st->codecpar->codec_id);
    if (codec == NULL) {
        s_err(err, errlen, "unsupported video codec %s (no decoder)", avcodec_get_name(st->codecpar->codec_id));
        return NULL;
    }
    AVCodecContext *c = avcodec_alloc_context3(codec);
    if (c == NULL || avcodec_parameters_to_context(c, st->codecpar) < 0) {
        s_err(err, errlen, "out of memory");
        avcodec_free_context(&c);
        return NULL;
    }
    c->thread_count = 1;
    c->pkt_timebase = st->time_base;
    c->max_pixels = S_THUMB_MAX_PIXELS; /* checked by the decoder against the bitstream's own size too */
    if ((int64_t)c->width * c->height > S_THUMB_MAX_PIXELS || avcodec_open2(c, codec, NULL) < 0) {
        s_err(err, errlen, "cannot decode the %s video track (%dx%d)", avcodec_get_name(st->codecpar->codec_id),
              c->width, c->height);
        avcodec_free_context(&c);
        return NULL;
    }
    return c;
}

/* Takes what the decoder has: keeps in best the first frame at or after
 * ts (as `ffmpeg -ss T -frames:v 1` picks it), or the last one before it
 * while none has come (the answer when ts is past the last frame).
 * Returns 1 when best is final, 0 for more input, -1 on a decoding error. */
static int s_take_frames(AVCodecContext *dec, AVFrame *tmp, AVFrame *best, int64_t ts, bool keyframe, int64_t *ndec)
{
    for (;;) {
        int e = avcodec_receive_frame(dec, tmp);
        if (e == AVERROR(EAGAIN))
            return 0;
        if (e == AVERROR_EOF)
            return best->data[0] != NULL ? 1 : -1;
        if (e < 0)
            return -1;
        (*ndec)++;
        int64_t pts = tmp->best_effort_timestamp;
        av_frame_unref(best);
        av_frame_move_ref(best, tmp);
        if (keyframe || pts == AV_NOPTS_VALUE || pts >= ts)
            return 1;
    }
}

/* Decodes from the keyframe at or before ts up to the frame at ts, into
 * best. 0, or -1 with err set. */
static int s_decode_at(s_demux_t *d, int v, AVCodecContext *dec, int64_t ts, bool keyframe, AVFrame *best,
                       int64_t *ndec, char *err, size_t errlen)
{
    int rc = -1, got = 0;
    AVPacket *pkt = av_packet_alloc();
    AVFrame *tmp = av_frame_alloc();
    if (pkt == NULL || tmp == NULL) {
        s_err(err, errlen, "out of memory");
        goto cleanup;
    }
    while (got == 0) {
        if (*ndec > S_THUMB_MAX_FRAMES) {
            s_err(err, errlen, "more than %d frames from the keyframe to the time", S_THUMB_MAX_FRAMES);
            goto cleanup;
        }
        int e = av_read_frame(d->fmt, pkt);
        if (e < 0) { /* the end: what the decoder still holds */
            if (d->io.failed || d->io.over) {
                s_err(err, errlen, d->io.failed ? "source read failed" : "too many bytes read for a thumbnail");
                goto cleanup;
            }
            avcodec_send_packet(dec, NULL);
            got = s_take_frames(dec, tmp, best, ts, keyframe, ndec);
            if (got <= 0)
                got = -1;
            break;
        }
        if (pkt->stream_index == v)
            e = avcodec_send_packet(dec, pkt);
        av_packet_unref(pkt);
        if (e < 0 && e != AVERROR(EAGAIN))
            continue; /* a damaged packet: the next ones may decode */
        got = s_take_frames(dec, tmp, best, ts, keyframe, ndec);
    }
    if (got < 0 || best->data[0] == NULL) {
        s_err(err, errlen, "no frame could be decoded at that time (corrupt or truncated video)");
        goto cleanup;
    }
    rc = 0;
cleanup:
    av_packet_free(&pkt);
    av_frame_free(&tmp);
    return rc;
}

/* The output size: the frame's display size (sample aspect applied)
 * fitted into the box, never enlarged, even (4:2:0 encoders). */
static void s_fit(const AVFrame *f, int bw, int bh, int *ow, int *oh)
{
    double dw = f->width, dh = f->height;
    if (f->sample_aspect_ratio.num > 0 && f->sample_aspect_ratio.den > 0)
        dw = dw * f->sample_aspect_ratio.num / f->sample_aspect_ratio.den;
    double s = 1.0;
    if (bw > 0 && bw / dw < s)
        s = bw / dw;
    if (bh > 0 && bh / dh < s)
        s = bh / dh;
    *ow = (int)lround(dw * s / 2) * 2;
    *oh = (int)lround(dh * s / 2) * 2;
    if (*ow < 2)
        *ow = 2;
    if (*oh < 2)
        *oh = 2;
}

/* Encodes one picture with the encoder of o->format. 0 with out->data,
 * or -1 with err set. */
static int s_encode(const AVFrame *src, const vid_thumb_opts_t *o, vid_thumb_t *out, char *err, size_t errlen)
{
    int rc = -1, ow, oh;
    static const char *const names[] = {"mjpeg", "png", "libwebp"};
    static const enum AVPixelFormat fmts[] = {AV_PIX_FMT_YUVJ420P, AV_PIX_FMT_RGB24, AV_PIX_FMT_YUV420P};
    const AVCodec *codec = avcodec_find_encoder_by_name(names[o->format]);
    AVCodecContext *enc = NULL;
    struct SwsContext *sws = NULL;
    AVFrame *dst = av_frame_alloc();
    AVPacket *pkt = av_packet_alloc();
    if (codec == NULL) {
        s_err(err, errlen, "no %s encoder in this libavcodec", names[o->format]);
        goto cleanup;
    }
    s_fit(src, o->width, o->height, &ow, &oh);
    enc = avcodec_alloc_context3(codec);
    if (enc == NULL || dst == NULL || pkt == NULL) {
        s_err(err, errlen, "out of memory");
        goto cleanup;
    }
    int q = o->quality > 0 ? (o->quality > 100 ? 100 : o->quality) : 85;
    enc->width = ow;
    enc->height = oh;
    enc->pix_fmt = fmts[o->format];
    enc->time_base = (AVRational){1, 25};
    enc->thread_count = 1;
    if (o->format == VID_IMG_JPEG) { /* qscale 2 (best) .. 31 from quality 100 .. 1 */
        enc->flags |= AV_CODEC_FLAG_QSCALE;
        enc->global_quality = FF_QP2LAMBDA * (2 + (100 - q) * 29 / 99);
    }
    AVDictionary *opts = NULL;
    if (o->format == VID_IMG_WEBP)
        av_dict_set_int(&opts, "quality", q, 0);
    int e = avcodec_open2(enc, codec, &opts);
    av_dict_free(&opts);
    if (e < 0) {
        s_err(err, errlen, "cannot open the %s encoder", names[o->format]);
        goto cleanup;
    }
    dst->format = enc->pix_fmt;
    dst->width = ow;
    dst->height = oh;
    sws = sws_getContext(src->width, src->height, src->format, ow, oh, enc->pix_fmt, SWS_BICUBIC, NULL, NULL, NULL);
    if (sws == NULL || av_frame_get_buffer(dst, 0) < 0 ||
        sws_scale(sws, (const uint8_t *const *)src->data, src->linesize, 0, src->height, dst->data, dst->linesize) !=
            oh) {
        s_err(err, errlen, "cannot scale the frame to %dx%d", ow, oh);
        goto cleanup;
    }
    dst->pts = 0;
    dst->quality = enc->global_quality;
    if (avcodec_send_frame(enc, dst) < 0 || avcodec_send_frame(enc, NULL) < 0 || avcodec_receive_packet(enc, pkt) < 0) {
        s_err(err, errlen, "cannot encode the frame as %s", names[o->format]);
        goto cleanup;
    }
    if ((out->data = malloc((size_t)pkt->size)) == NULL) {
        s_err(err, errlen, "out of memory");
        goto cleanup;
    }
    memcpy(out->data, pkt->data, (size_t)pkt->size);
    out->len = (size_t)pkt->size;
    out->width = ow;
    out->height = oh;
    rc = 0;
cleanup:
    sws_freeContext(sws);
    avcodec_free_context(&enc);
    av_frame_free(&dst);
    av_packet_free(&pkt);
    return rc;
}

int vid_thumbnail(const vid_source_t *src, const vid_thumb_opts_t *o, vid_thumb_t *out, char *err, size_t errlen)
{
    int rc = -1;
    s_demux_t d;
    AVCodecContext *dec = NULL;
    AVFrame *best = NULL;
    memset(out, 0, sizeof(*out));
    if (!(o->time >= 0 && o->time <= VID_MAX_DURATION_S) || (unsigned)o->format > VID_IMG_WEBP || o->width < 0 ||
        o->height < 0 || o->width > 16384 || o->height > 16384) {
        s_err(err, errlen, "bad thumbnail options");
        return -1;
    }
    if (s_demux_open(&d, src, VID_MAX_HEADER_BYTES, err, errlen) != 0)
        return -1;
    s_pin_start(&d);
    int v = s_first_video(d.fmt);
    if (v < 0) {
        s_err(err, errlen, "no video track");
        goto cleanup;
    }
    AVStream *st = d.fmt->streams[v];
    if (!s_tb_ok(st->time_base)) {
        s_err(err, errlen, "the video track has no usable time base");
        goto cleanup;
    }
    int64_t start = st->start_time != AV_NOPTS_VALUE ? st->start_time : 0;
    int64_t ts = start + (int64_t)llround(o->time * st->time_base.den / st->time_base.num);
    double dur = st->duration > 0 ? (double)st->duration * st->time_base.num / st->time_base.den
                                  : (d.fmt->duration > 0 ? (double)d.fmt->duration / AV_TIME_BASE : 0);
    if (dur > 0 && o->time > dur) {
        s_err(err, errlen, "time %.3f s is past the end of the video (%.3f s)", o->time, dur);
        rc = 1;
        goto cleanup;
    }
    /* From here on the bytes read are those of the GOP up to the time. */
    d.io.budget = d.io.used + S_THUMB_MAX_READ;
    for (unsigned i = 0; i < d.fmt->nb_streams; i++) /* only the video track's packets matter */
        d.fmt->streams[i]->discard = (int)i == v ? AVDISCARD_DEFAULT : AVDISCARD_ALL;
    if (av_seek_frame(d.fmt, v, ts, AVSEEK_FLAG_BACKWARD) < 0 && av_seek_frame(d.fmt, v, start, 0) < 0) {
        s_err(err, errlen, "cannot seek to %.3f s", o->time);
        goto cleanup;
    }
    if ((dec = s_decoder(st, err, errlen)) == NULL)
        goto cleanup;
    if ((best = av_frame_alloc()) == NULL) {
        s_err(err, errlen, "out of memory");
        goto cleanup;
    }
    if (s_decode_at(&d, v, dec, ts, o->keyframe != 0, best, &out->frames_decoded, err, errlen) != 0)
        goto cleanup;
    if ((int64_t)best->width * best->height > S_THUMB_MAX_PIXELS || best->width <= 0 || best->height <= 0) {
        s_err(err, errlen, "the decoded frame is %dx%d", best->width, best->height);
        goto cleanup;
    }
    int64_t shown = best->best_effort_timestamp != AV_NOPTS_VALUE ? best->best_effort_timestamp : ts;
    out->at = (double)(shown - start) * st->time_base.num / st->time_base.den;
    if (s_encode(best, o, out, err, errlen) != 0)
        goto cleanup;
    rc = 0;
cleanup:
    av_frame_free(&best);
    avcodec_free_context(&dec);
    s_demux_close(&d);
    return rc;
}

/* ---- trimming -------------------------------------------------------------------------------- */

/* The source's duration in seconds: the container's, else its longest track's; 0 when unknown. */
static double s_duration(const AVFormatContext *f)
{
    if (f->duration > 0)
        return (double)f->duration / AV_TIME_BASE;
    double best = 0;
    for (unsigned i = 0; i < f->nb_streams; i++) {
        const AVStream *st = f->streams[i];
        if (st->duration > 0 && s_tb_ok(st->time_base)) {
            double d = (double)st->duration * st->time_base.num / st->time_base.den;
            best = d > best ? d : best;
        }
    }
    return best;
}

double vid_duration(const vid_source_t *src, char *err, size_t errlen)
{
    s_demux_t d;
    if (s_demux_open(&d, src, VID_MAX_HEADER_BYTES, err, errlen) != 0)
        return -1;
    double dur = s_duration(d.fmt);
    s_demux_close(&d);
    if (dur <= 0)
        s_err(err, errlen, "the source has no duration");
    return dur > 0 ? dur : -1;
}

/* The output of one trim: the muxer and the input track behind each of its streams. */
typedef struct {
    AVFormatContext *fmt; /* owned */
    int in[2];            /* input stream of output stream 0 and 1; -1 unused */
    int out_of[VID_MAX_STREAMS];
} s_trim_out_t;

/* Opens the output at path with the tracks v and a (-1: none) of d; the
 * video track gets the avcC `extra` when not NULL (frame-accurate cuts'
 * joined parameter sets). 0, or -1 with err set. */
static int s_trim_open(s_trim_out_t *o, const s_demux_t *d, int v, int a, const uint8_t *extra, int extra_len,
                       const char *path, char *err, size_t errlen)
{
    memset(o, 0, sizeof(*o));
    for (int i = 0; i < VID_MAX_STREAMS; i++)
        o->out_of[i] = -1;
    if (avformat_alloc_output_context2(&o->fmt, NULL, "mp4", path) < 0 || o->fmt == NULL) {
        s_err(err, errlen, "out of memory");
        return -1;
    }
    int tracks[2] = {v, a}, n = 0;
    for (int k = 0; k < 2; k++) {
        if (tracks[k] < 0)
            continue;
        const AVStream *in = d->fmt->streams[tracks[k]];
        AVStream *st = avformat_new_stream(o->fmt, NULL);
        if (st == NULL || avcodec_parameters_copy(st->codecpar, in->codecpar) < 0) {
            s_err(err, errlen, "out of memory");
            return -1;
        }
        /* HEVC keeps its sample entry: hvc1 promises every parameter set in
         * the hvcC (what Apple's players ask for), hev1 allows them in-band */
        st->codecpar->codec_tag =
            in->codecpar->codec_id == AV_CODEC_ID_HEVC && in->codecpar->codec_tag == MKTAG('h', 'v', 'c', '1')
                ? in->codecpar->codec_tag
                : 0;
        st->time_base = in->time_base;
        if (k == 0 && extra != NULL) {
            av_freep(&st->codecpar->extradata);
            if ((st->codecpar->extradata = av_mallocz((size_t)extra_len + AV_INPUT_BUFFER_PADDING_SIZE)) == NULL) {
                s_err(err, errlen, "out of memory");
                return -1;
            }
            memcpy(st->codecpar->extradata, extra, (size_t)extra_len);
            st->codecpar->extradata_size = extra_len;
        }
        o->in[n] = tracks[k];
        o->out_of[tracks[k]] = n++;
    }
    if (avio_open(&o->fmt->pb, path, AVIO_FLAG_WRITE) < 0) {
        s_err(err, errlen, "cannot create the output file");
        return -1;
    }
    AVDictionary *opts = NULL;
    av_dict_set(&opts, "movflags", "+faststart", 0);
    int e = avformat_write_header(o->fmt, &opts);
    av_dict_free(&opts);
    if (e < 0) {
        char msg[AV_ERROR_MAX_STRING_SIZE] = "";
        av_strerror(e, msg, sizeof(msg));
        s_err(err, errlen, "an MP4 cannot carry these tracks (%s)", msg);
        return -1;
    }
    return 0;
}

static void s_trim_close(s_trim_out_t *o)
{
    if (o->fmt != NULL) {
        if (o->fmt->pb != NULL)
            avio_closep(&o->fmt->pb);
        avformat_free_context(o->fmt);
        o->fmt = NULL;
    }
}

/* Microseconds of a timestamp of stream st. */
static int64_t s_us(const AVStream *st, int64_t t)
{
    return av_rescale_q(t, st->time_base, AV_TIME_BASE_Q);
}

/* Microseconds of a presentation time of stream st from the stream's
 * start; AV_NOPTS_VALUE stays. */
static int64_t s_rel_us(const AVStream *st, int64_t pts)
{
    if (pts == AV_NOPTS_VALUE)
        return AV_NOPTS_VALUE;
    return s_us(st, pts - (st->start_time != AV_NOPTS_VALUE ? st->start_time : 0));
}

/* Seeks d to track's keyframe at or before start_us (microseconds from
 * the track's start), else to its first. 0, or -1 with err set. */
static int s_seek_back(s_demux_t *d, int track, int64_t start_us, char *err, size_t errlen)
{
    const AVStream *ps = d->fmt->streams[track];
    int64_t first = ps->start_time != AV_NOPTS_VALUE ? ps->start_time : 0;
    if (av_seek_frame(d->fmt, track, first + av_rescale_q(start_us, AV_TIME_BASE_Q, ps->time_base),
                      AVSEEK_FLAG_BACKWARD) < 0 &&
        av_seek_frame(d->fmt, track, first, AVSEEK_FLAG_BACKWARD) < 0) {
        s_err(err, errlen, "cannot seek to %.3f s", start_us / 1e6);
        return -1;
    }
    return 0;
}

/* Writes pkt (of input stream `in`) moved from the range's start to the
 * output's offset; takes its data. 0 or -1. */
static int s_trim_write(s_trim_out_t *o, const s_demux_t *d, AVPacket *pkt, int64_t range_start_us, int64_t offset_us)
{
    const AVStream *in = d->fmt->streams[pkt->stream_index];
    AVStream *out = o->fmt->streams[o->out_of[pkt->stream_index]];
    int64_t shift = av_rescale_q(offset_us - range_start_us, AV_TIME_BASE_Q, in->time_base);
    if (pkt->pts != AV_NOPTS_VALUE)
        pkt->pts += shift;
    if (pkt->dts != AV_NOPTS_VALUE)
        pkt->dts += shift;
    av_packet_rescale_ts(pkt, in->time_base, out->time_base);
    pkt->stream_index = o->out_of[pkt->stream_index];
    pkt->pos = -1;
    return av_interleaved_write_frame(o->fmt, pkt) < 0 ? -1 : 0;
}

/* One range: from the primary track's keyframe at or before start to its
 * first keyframe at or after end (audio-only: its first packet at or
 * after), and the other track's packets in between. Leading pictures
 * (after a keyframe in decode order, before it in time: an open GOP's)
 * need the group before: those of the first keyframe are left out, and
 * those of the keyframe at the end are not reached, so the range ends
 * with the last frame kept, which may be before that keyframe. Sets
 * cut[0..1] in microseconds. 0, or -1 with err set. */
static int s_trim_range(s_demux_t *d, s_trim_out_t *o, int primary, bool by_key, int64_t start_us, int64_t end_us,
                        int64_t offset_us, int64_t *cut, int64_t *packets, char *err, size_t errlen)
{
    int rc = -1;
    AVPacket *pkt = av_packet_alloc();
    if (pkt == NULL) {
        s_err(err, errlen, "out of memory");
        return -1;
    }
    if (s_seek_back(d, primary, start_us, err, errlen) < 0)
        goto cleanup;
    int64_t rstart = AV_NOPTS_VALUE, rend = AV_NOPTS_VALUE, last_end = AV_NOPTS_VALUE; /* us, source timeline */
    for (;;) {
        if (++*packets > S_MAX_ENTRIES) {
            s_err(err, errlen, "too many packets");
            goto cleanup;
        }
        int e = av_read_frame(d->fmt, pkt);
        if (e < 0) {
            if (d->io.failed || d->io.over) {
                s_err(err, errlen, d->io.failed ? "source read failed" : "too many bytes read");
                goto cleanup;
            }
            break; /* the end of the source ends the range */
        }
        const AVStream *st = d->fmt->streams[pkt->stream_index];
        int64_t t = s_rel_us(st, pkt->pts);
        bool is_primary = pkt->stream_index == primary;
        bool keep = false;
        if (t == AV_NOPTS_VALUE || o->out_of[pkt->stream_index] < 0) {
            keep = false;
        } else if (is_primary && rend == AV_NOPTS_VALUE) {
            bool key = !by_key || (pkt->flags & AV_PKT_FLAG_KEY);
            if (rstart == AV_NOPTS_VALUE) {
                if (key) /* the first keyframe: the range starts here */
                    rstart = t, keep = true;
            } else if (key && t >= end_us) {
                rend = t; /* the first keyframe at or after the end: not kept */
                if (by_key && last_end != AV_NOPTS_VALUE && last_end < rend)
                    rend = last_end;
            } else {
                keep = t >= rstart;
            }
            if (keep) {
                int64_t pend = t + s_us(st, pkt->duration);
                last_end = last_end == AV_NOPTS_VALUE || pend > last_end ? pend : last_end;
            }
        } else if (!is_primary && rstart != AV_NOPTS_VALUE) {
            if (rend != AV_NOPTS_VALUE && t >= rend) {
                av_packet_unref(pkt);
                break; /* the other track has caught up with the end */
            }
            keep = t >= rstart;
        }
        if (keep && s_trim_write(o, d, pkt, rstart, offset_us) < 0) {
            s_err(err, errlen, "cannot write the output");
            goto cleanup;
        }
        av_packet_unref(pkt);
        if (rend != AV_NOPTS_VALUE && o->in[1] < 0)
            break; /* no other track to finish */
    }
    if (rstart == AV_NOPTS_VALUE) {
        s_err(err, errlen, "no keyframe from %.3f s on", start_us / 1e6);
        goto cleanup;
    }
    cut[0] = rstart;
    cut[1] = rend != AV_NOPTS_VALUE ? rend : last_end;
    rc = 0;
cleanup:
    av_packet_free(&pkt);
    return rc;
}

/* ---- frame-accurate cuts ---------------------------------------------------------------- */

/* The packets of one group of pictures plus the audio read meanwhile may
 * not exceed this (a source with keyframes minutes apart). */
#define S_GOP_MAX_BYTES (64 << 20)

/* Packets held (each owned). */
typedef struct {
    AVPacket **p;
    int n, cap;
    int64_t bytes;
} s_pkts_t;

/* Moves pkt's reference to the end of l. 0 or -1 (out of memory). */
static int s_pkts_push(s_pkts_t *l, AVPacket *pkt)
{
    if (l->n == l->cap) {
        int cap = l->cap > 0 ? l->cap * 2 : 64;
        AVPacket **np = realloc(l->p, (size_t)cap * sizeof(*np));
        if (np == NULL)
            return -1;
        l->p = np;
        l->cap = cap;
    }
    AVPacket *c = av_packet_alloc();
    if (c == NULL)
        return -1;
    av_packet_move_ref(c, pkt);
    l->bytes += c->size;
    l->p[l->n++] = c;
    return 0;
}

/* Frees the first k packets of l and moves the rest up. */
static void s_pkts_drop(s_pkts_t *l, int k)
{
    if (k <= 0)
        return;
    for (int i = 0; i < k; i++) {
        l->bytes -= l->p[i]->size;
        av_packet_free(&l->p[i]);
    }
    memmove(l->p, l->p + k, (size_t)(l->n - k) * sizeof(*l->p));
    l->n -= k;
}

/* One range being cut on frames: whole groups of pictures inside it are
 * copied, the groups its ends fall in are re-encoded from the first frame
 * at or after its start to the last before its end. Video is held a group
 * at a time (whether a group is whole inside is known when the next
 * keyframe comes), audio until the video has reached its time. */
typedef struct {
    s_demux_t *d;
    s_trim_out_t *o;
    vid_recut_t *recut;
    int v;
    int64_t s_us, e_us;       /* asked: microseconds from the track's start */
    int64_t offset_us;        /* where the range starts in the output */
    int64_t first_us, end_us; /* as cut: the first frame kept, the end of the last (AV_NOPTS_VALUE: none yet) */
    bool done;                /* the range's video is all written */
    bool spliced;             /* what was written last is not the source's frame before the next group */
    bool open_gop;            /* set on finding leading pictures that refer across a cut: cut on keyframes */
    s_pkts_t gop, audio;
    int64_t *recoded;
    char *err;
    size_t errlen;
} s_cut_t;

static int s_cut_emit(void *arg, AVPacket *pkt)
{
    s_cut_t *c = arg;
    pkt->stream_index = c->v;
    return s_trim_write(c->o, c->d, pkt, c->first_us, c->offset_us);
}

/* The group held: nothing of it in the range, all of it (copied), or
 * part (re-encoded). A frame at or past the end marks the range done. 0 or -1. */
static int s_cut_gop(s_cut_t *c)
{
    const AVStream *st = c->d->fmt->streams[c->v];
    int kept = 0, rc = 0;
    bool all = true, leading = false;
    int64_t lo = INT64_MAX, hi = INT64_MIN, end = AV_NOPTS_VALUE;
    for (int i = 0; i < c->gop.n; i++) {
        const AVPacket *p = c->gop.p[i];
        int64_t t = s_rel_us(st, p->pts);
        if (t != AV_NOPTS_VALUE && t >= c->e_us)
            c->done = true;
        if (t == AV_NOPTS_VALUE || t < c->s_us || t >= c->e_us) {
            all = false;
            continue;
        }
        kept++;
        leading = leading || vid_recut_leading(c->recut, c->gop.p[0], p);
        lo = p->pts < lo ? p->pts : lo;
        hi = p->pts >= hi ? p->pts + 1 : hi;
        int64_t pe = t + s_us(st, p->duration);
        end = end == AV_NOPTS_VALUE || pe > end ? pe : end;
    }
    if (kept > 0 && leading && (!all || c->spliced)) {
        /* kept pictures that refer to a group not written as the source's */
        c->open_gop = true;
        s_err(c->err, c->errlen, "an open-GOP source (leading pictures refer to the group before)");
        rc = -1;
    } else if (kept > 0) {
        if (c->first_us == AV_NOPTS_VALUE)
            c->first_us = s_rel_us(st, lo);
        c->end_us = c->end_us == AV_NOPTS_VALUE || end > c->end_us ? end : c->end_us;
        if (all) {
            if (c->spliced)
                rc = vid_recut_splice(c->recut, c->gop.p[0]);
            for (int i = 0; i < c->gop.n && rc == 0; i++)
                rc = s_trim_write(c->o, c->d, c->gop.p[i], c->first_us, c->offset_us);
            if (rc < 0)
                s_err(c->err, c->errlen, "cannot write the output");
            c->spliced = false;
        } else {
            /* re-encoded decode times keep the source's delay, so that
             * they join the copied groups' without going back */
            const AVPacket *k = c->gop.p[0];
            int64_t delay =
                k->pts != AV_NOPTS_VALUE && k->dts != AV_NOPTS_VALUE && k->pts > k->dts ? k->pts - k->dts : 0;
            int frames = 0;
            rc = vid_recut_gop(c->recut, c->gop.p, c->gop.n, lo, hi, delay, s_cut_emit, c, &frames, c->err, c->errlen);
            *c->recoded += frames;
            c->spliced = true;
        }
    }
    s_pkts_drop(&c->gop, c->gop.n);
    return rc;
}

/* Writes the audio held that the video has reached: from the first frame
 * kept to the end of the last. 1 when the range's audio is complete, 0
 * for more, -1 on an error. */
static int s_cut_audio(s_cut_t *c)
{
    if (c->first_us == AV_NOPTS_VALUE)
        return 0;
    int i = 0, rc = 0;
    for (; i < c->audio.n; i++) {
        AVPacket *p = c->audio.p[i];
        int64_t t = s_rel_us(c->d->fmt->streams[p->stream_index], p->pts);
        if (t == AV_NOPTS_VALUE || t < c->first_us)
            continue;
        if (t >= c->end_us) {
            rc = c->done ? 1 : 0;
            break;
        }
        if (s_trim_write(c->o, c->d, p, c->first_us, c->offset_us) < 0) {
            s_err(c->err, c->errlen, "cannot write the output");
            rc = -1;
            break;
        }
    }
    s_pkts_drop(&c->audio, i);
    return rc;
}

/* Reads one packet into the range's state. 1 when the range is complete,
 * 0 for more, -1 on an error. */
static int s_cut_packet(s_cut_t *c, AVPacket *pkt)
{
    int rc = 0;
    if (pkt->stream_index == c->v && !c->done) {
        if (pkt->flags & AV_PKT_FLAG_KEY) {
            rc = s_cut_gop(c);
            int64_t t = s_rel_us(c->d->fmt->streams[c->v], pkt->pts);
            if (t != AV_NOPTS_VALUE && t >= c->e_us)
                c->done = true;
        }
        if (rc == 0 && !c->done && (c->gop.n > 0 || (pkt->flags & AV_PKT_FLAG_KEY)) && s_pkts_push(&c->gop, pkt) < 0)
            rc = -1, s_err(c->err, c->errlen, "out of memory");
    } else if (pkt->stream_index == c->o->in[1] && s_pkts_push(&c->audio, pkt) < 0) {
        rc = -1, s_err(c->err, c->errlen, "out of memory");
    }
    if (rc == 0 && c->gop.bytes + c->audio.bytes > S_GOP_MAX_BYTES) {
        s_err(c->err, c->errlen, "a group of pictures over %d MiB: cut on keyframes (accurate=0)",
              S_GOP_MAX_BYTES >> 20);
        rc = -1;
    }
    if (rc == 0)
        rc = s_cut_audio(c);
    return rc == 0 && c->done && c->o->in[1] < 0 ? 1 : rc;
}

/* One range cut on frames: it starts on the first video frame at or
 * after start_us and ends before the first at or after end_us. Sets
 * cut[0..1] in microseconds. 0, -2 for an open-GOP source (which must be
 * cut on keyframes), or -1 with err set. */
static int s_trim_range_exact(s_demux_t *d, s_trim_out_t *o, vid_recut_t *recut, int v, int64_t start_us,
                              int64_t end_us, int64_t offset_us, int64_t *cut, int64_t *packets, int64_t *recoded,
                              char *err, size_t errlen)
{
    s_cut_t c = {.d = d,
                 .o = o,
                 .recut = recut,
                 .v = v,
                 .s_us = start_us,
                 .e_us = end_us,
                 .offset_us = offset_us,
                 .first_us = AV_NOPTS_VALUE,
                 .end_us = AV_NOPTS_VALUE,
                 .spliced = true,
                 .recoded = recoded,
                 .err = err,
                 .errlen = errlen};
    int rc = -1, got = 0;
    AVPacket *pkt = av_packet_alloc();
    if (pkt == NULL) {
        s_err(err, errlen, "out of memory");
        return -1;
    }
    if (s_seek_back(d, v, start_us, err, errlen) < 0)
        goto cleanup;
    while (got == 0) {
        if (++*packets > S_MAX_ENTRIES) {
            s_err(err, errlen, "too many packets");
            goto cleanup;
        }
        if (av_read_frame(d->fmt, pkt) < 0) {
            if (d->io.failed || d->io.over) {
                s_err(err, errlen, d->io.failed ? "source read failed" : "too many bytes read");
                goto cleanup;
            }
            break; /* the end of the source ends the range */
        }
        got = s_cut_packet(&c, pkt);
        av_packet_unref(pkt);
        if (got < 0)
            goto cleanup;
    }
    if (!c.done && s_cut_gop(&c) < 0)
        goto cleanup;
    c.done = true;
    if (s_cut_audio(&c) < 0)
        goto cleanup;
    if (c.first_us == AV_NOPTS_VALUE) {
        s_err(err, errlen, "no frame from %.3f s on", start_us / 1e6);
        goto cleanup;
    }
    cut[0] = c.first_us;
    cut[1] = c.end_us;
    rc = 0;
cleanup:
    if (rc < 0 && c.open_gop)
        rc = -2;
    s_pkts_drop(&c.gop, c.gop.n);
    s_pkts_drop(&c.audio, c.audio.n);
    free(c.gop.p);
    free(c.audio.p);
    av_packet_free(&pkt);
    return rc;
}

/* Sets video track v's size from its first frame when the demuxer left
 * it unknown (MPEG-4 part 2 in MP4: its size is in the bitstream's
 * header), since an MP4 track must declare one. 0, or -1 with err set. */
static int s_learn_size(s_demux_t *d, int v, char *err, size_t errlen)
{
    AVCodecParameters *par = d->fmt->streams[v]->codecpar;
    if (par->width > 0 && par->height > 0)
        return 0;
    AVCodecContext *dec = s_decoder(d->fmt->streams[v], err, errlen);
    AVPacket *pkt = av_packet_alloc();
    AVFrame *f = av_frame_alloc();
    int rc = -1;
    if (dec == NULL || pkt == NULL || f == NULL || s_seek_back(d, v, 0, err, errlen) < 0)
        goto cleanup;
    for (int i = 0; i < VID_MAX_STREAMS * 16 && rc < 0; i++) { /* the first frame is among the first packets */
        if (av_read_frame(d->fmt, pkt) < 0)
            break;
        if (pkt->stream_index == v && avcodec_send_packet(dec, pkt) >= 0 && avcodec_send_packet(dec, NULL) >= 0 &&
            avcodec_receive_frame(dec, f) >= 0 && f->width > 0 && f->height > 0) {
            par->width = f->width;
            par->height = f->height;
            rc = 0;
        }
        av_packet_unref(pkt);
        if (pkt->stream_index == v && rc < 0)
            avcodec_flush_buffers(dec);
    }
    if (rc < 0 && (err == NULL || err[0] == '\0'))
        s_err(err, errlen, "the video's size is unknown and its first frame does not decode");
cleanup:
    av_frame_free(&f);
    av_packet_free(&pkt);
    avcodec_free_context(&dec);
    return rc;
}

/* A recutter for video track v, set up from its keyframe at or before
 * start_us; NULL, with why set, when cuts must be on keyframes. */
static vid_recut_t *s_recut_for(s_demux_t *d, int v, int64_t start_us, char *why, size_t why_len)
{
    AVPacket *pkt = av_packet_alloc();
    vid_recut_t *r = NULL;
    if (pkt != NULL && s_seek_back(d, v, start_us, why, why_len) == 0) {
        for (int i = 0; i < VID_MAX_STREAMS * 16; i++) { /* the keyframe is among the first packets */
            if (av_read_frame(d->fmt, pkt) < 0)
                break;
            bool key = pkt->stream_index == v && (pkt->flags & AV_PKT_FLAG_KEY);
            if (key)
                r = vid_recut_new(d->fmt->streams[v], pkt, why, why_len);
            av_packet_unref(pkt);
            if (key)
                break;
        }
    }
    if (r == NULL && why[0] == '\0')
        snprintf(why, why_len, "no keyframe found at the start");
    av_packet_free(&pkt);
    return r;
}

int vid_trim(const vid_source_t *src, const vid_range_t *ranges, int n, int accurate, const char *out_path,
             vid_trim_info_t *info, char *err, size_t errlen)
{
    int rc = -1;
    s_demux_t d;
    s_trim_out_t o = {0};
    vid_recut_t *recut = NULL;
    bool open_gop = false;
    memset(info, 0, sizeof(*info));
    if (n < 1 || n > VID_MAX_RANGES) {
        s_err(err, errlen, "1 to %d ranges", VID_MAX_RANGES);
        return -1;
    }
    if (s_demux_open(&d, src, VID_MAX_HEADER_BYTES, err, errlen) != 0)
        return -1;
    s_pin_start(&d);
    int v = s_first_video(d.fmt), a = -1;
    for (unsigned i = 0; i < d.fmt->nb_streams && a < 0; i++)
        if (d.fmt->streams[i]->codecpar->codec_type == AVMEDIA_TYPE_AUDIO)
            a = (int)i;
    int primary = v >= 0 ? v : a;
    info->on_keyframes = v >= 0;
    info->duration = s_duration(d.fmt);
    if (primary < 0 || info->duration <= 0) {
        s_err(err, errlen, primary < 0 ? "no audio or video track" : "the source has no duration");
        goto cleanup;
    }
    for (int i = 0; i < n; i++)
        if (!(ranges[i].start >= 0) || ranges[i].start >= info->duration) {
            s_err(err, errlen, "range %d starts at %.3f s, past the end of the source (%.3f s)", i + 1, ranges[i].start,
                  info->duration);
            rc = 1;
            goto cleanup;
        }
    for (unsigned i = 0; i < d.fmt->nb_streams; i++)
        if ((int)i != v && (int)i != a)
            d.fmt->streams[i]->discard = AVDISCARD_ALL;
    const uint8_t *extra = NULL;
    int extra_len = 0;
    if (accurate && v >= 0) { /* else, or when it cannot be done, cuts on keyframes */
        if ((recut = s_recut_for(&d, v, (int64_t)llround(ranges[0].start * 1e6), info->keyframes_why,
                                 sizeof(info->keyframes_why))) != NULL)
            extra = vid_recut_extradata(recut, &extra_len);
    }
    info->exact = recut != NULL;
    if (v >= 0 && s_learn_size(&d, v, err, errlen) < 0)
        goto cleanup;
    if (s_trim_open(&o, &d, v, a, extra, extra_len, out_path, err, errlen) != 0)
        goto cleanup;
    d.io.budget = d.io.used + (src->size + VID_READ_SLACK) * n; /* each range reads at most the file */
    int64_t offset = 0;
    for (int i = 0; i < n; i++) {
        double end = ranges[i].end > ranges[i].start && ranges[i].end < info->duration ? ranges[i].end : info->duration;
        int64_t cut[2] = {0, 0};
        int64_t s_us = (int64_t)llround(ranges[i].start * 1e6), e_us = (int64_t)llround(end * 1e6);
        int e = recut != NULL
                    ? s_trim_range_exact(&d, &o, recut, v, s_us, e_us, offset, cut, &info->packets, &info->recoded, err,
                                         errlen)
                    : s_trim_range(&d, &o, primary, v >= 0, s_us, e_us, offset, cut, &info->packets, err, errlen);
        if (e == -2)
            open_gop = true;
        if (e != 0)
            goto cleanup;
        info->cut[i] = (vid_range_t){cut[0] / 1e6, cut[1] / 1e6};
        offset += cut[1] - cut[0];
    }
    info->kept = offset / 1e6;
    if (av_write_trailer(o.fmt) < 0) {
        s_err(err, errlen, "cannot finish the MP4");
        goto cleanup;
    }
    rc = 0;
cleanup:
    s_trim_close(&o);
    vid_recut_destroy(&recut);
    s_demux_close(&d);
    if (open_gop) { /* found part way: the whole trim again, on keyframes */
        char why[sizeof(info->keyframes_why)];
        snprintf(why, sizeof(why), "%s", err);
        rc = vid_trim(src, ranges, n, 0, out_path, info, err, errlen);
        snprintf(info->keyframes_why, sizeof(info->keyframes_why), "%s", why);
    }
    return rc;
}

/* ---- sprites ------------------------------------------------------------------------------------- */

/* The first video track's display size (sample aspect applied). */
static void s_display_size(const AVStream *st, int *w, int *h)
{
    const AVCodecParameters *p = st->codecpar;
    AVRational sar = st->sample_aspect_ratio.num > 0 ? st->sample_aspect_ratio : p->sample_aspect_ratio;
    *w = p->width;
    *h = p->height;
    if (sar.num > 0 && sar.den > 0)
        *w = (int)lround((double)p->width * sar.num / sar.den);
}

int vid_probe(const vid_source_t *src, vid_probe_t *out, char *err, size_t errlen)
{
    s_demux_t d;
    memset(out, 0, sizeof(*out));
    if (s_demux_open(&d, src, VID_MAX_HEADER_BYTES, err, errlen) != 0)
        return -1;
    out->duration = s_duration(d.fmt);
    int v = s_first_video(d.fmt);
    if (v >= 0)
        s_display_size(d.fmt->streams[v], &out->width, &out->height);
    s_demux_close(&d);
    if (out->duration <= 0) {
        s_err(err, errlen, "the source has no duration");
        return -1;
    }
    return 0;
}

int vid_sprite_tile(const vid_probe_t *p, const vid_sprite_opts_t *o, int *w, int *h)
{
    *w = o->tile_w;
    *h = o->tile_h;
    if (*w == 0 && *h == 0)
        return -1;
    if ((*w == 0 || *h == 0) && (p->width <= 0 || p->height <= 0))
        return -1;
    if (*w == 0)
        *w = (int)lround((double)*h * p->width / p->height / 2) * 2;
    if (*h == 0)
        *h = (int)lround((double)*w * p->height / p->width / 2) * 2;
    *w = *w < 2 ? 2 : *w & ~1;
    *h = *h < 2 ? 2 : *h & ~1;
    return *w <= VID_SPRITE_MAX_SIDE && *h <= VID_SPRITE_MAX_SIDE ? 0 : -1;
}

static bool s_sprite_opts_ok(const vid_sprite_opts_t *o)
{
    return o->every >= 0.5 && o->every <= 3600 && o->cols >= 1 && o->rows >= 1 &&
           o->cols * o->rows <= VID_SPRITE_MAX_TILES && o->sheet >= 0 && o->sheet < 1000000;
}

int vid_sprite_sheets(const vid_probe_t *p, const vid_sprite_opts_t *o)
{
    if (!s_sprite_opts_ok(o))
        return 0;
    double per = o->every * o->cols * o->rows;
    int n = (int)ceil(p->duration / per - 1e-9);
    return n < 1 ? 1 : n;
}

int vid_sprite_vtt(const vid_probe_t *p, const vid_sprite_opts_t *o, const char *sheet_pattern, char **out, size_t *len)
{
    int tw, th;
    if (!s_sprite_opts_ok(o) || vid_sprite_tile(p, o, &tw, &th) != 0 || !s_pattern_ok(sheet_pattern))
        return -1;
    FILE *f = open_memstream(out, len);
    if (f == NULL)
        return -1;
    fputs("WEBVTT\n", f);
    int per = o->cols * o->rows;
    for (int64_t k = 0; k * o->every < p->duration; k++) {
        double a = k * o->every, b = a + o->every < p->duration ? a + o->every : p->duration;
        int sheet = (int)(k / per), i = (int)(k % per);
        int64_t ma = (int64_t)llround(a * 1000), mb = (int64_t)llround(b * 1000);
        fprintf(f, "\n%02lld:%02lld:%02lld.%03lld --> %02lld:%02lld:%02lld.%03lld\n", (long long)(ma / 3600000),
                (long long)(ma / 60000 % 60), (long long)(ma / 1000 % 60), (long long)(ma % 1000),
                (long long)(mb / 3600000), (long long)(mb / 60000 % 60), (long long)(mb / 1000 % 60),
                (long long)(mb % 1000));
        s_put_uri(f, sheet_pattern, sheet);
        fprintf(f, "#xywh=%d,%d,%d,%d\n", (i % o->cols) * tw, (i / o->cols) * th, tw, th);
    }
    return fclose(f) == 0 ? 0 : -1;
}

/* Scales frame f into the tile at (x, y) of sheet (YUVJ420P), fitted and
 * centred. 0 or -1. */
static int s_tile(struct SwsContext **sws, const AVFrame *f, AVFrame *sheet, int x, int y, int tw, int th)
{
    /* fitted (up or down) into the tile, display aspect kept */
    double dw = f->width, dh = f->height;
    if (f->sample_aspect_ratio.num > 0 && f->sample_aspect_ratio.den > 0)
        dw = dw * f->sample_aspect_ratio.num / f->sample_aspect_ratio.den;
    double sc = fmin(tw / dw, th / dh);
    int fw = (int)(dw * sc) & ~1, fh = (int)(dh * sc) & ~1;
    if (fw < 2 || fh < 2)
        return -1;
    int ox = (x + (tw - fw) / 2) & ~1, oy = (y + (th - fh) / 2) & ~1;
    *sws = sws_getCachedContext(*sws, f->width, f->height, f->format, fw, fh, AV_PIX_FMT_YUVJ420P, SWS_BICUBIC, NULL,
                                NULL, NULL);
    if (*sws == NULL)
        return -1;
    uint8_t *dst[3] = {sheet->data[0] + (ptrdiff_t)oy * sheet->linesize[0] + ox,
                       sheet->data[1] + (ptrdiff_t)(oy / 2) * sheet->linesize[1] + ox / 2,
                       sheet->data[2] + (ptrdiff_t)(oy / 2) * sheet->linesize[2] + ox / 2};
    return sws_scale(*sws, (const uint8_t *const *)f->data, f->linesize, 0, f->height, dst, sheet->linesize) == fh ? 0
                                                                                                                   : -1;
}

/* A black YUVJ420P picture of w x h (caller owns). */
static AVFrame *s_black(int w, int h)
{
    AVFrame *f = av_frame_alloc();
    if (f == NULL)
        return NULL;
    f->format = AV_PIX_FMT_YUVJ420P;
    f->width = w;
    f->height = h;
    if (av_frame_get_buffer(f, 0) < 0) {
        av_frame_free(&f);
        return NULL;
    }
    memset(f->data[0], 0, (size_t)f->linesize[0] * h);
    memset(f->data[1], 128, (size_t)f->linesize[1] * (h / 2));
    memset(f->data[2], 128, (size_t)f->linesize[2] * (h / 2));
    return f;
}

/* Whether st's index has a keyframe after `last` (the frame decoded
 * last) that a seek to ts would land on: decoding from there reads fewer
 * frames than decoding on. */
static bool s_key_between(AVStream *st, int64_t last, int64_t ts)
{
    int i = av_index_search_timestamp(st, ts, AVSEEK_FLAG_BACKWARD);
    const AVIndexEntry *e = i >= 0 ? avformat_index_get_entry(st, i) : NULL;
    return e != NULL && e->timestamp > last;
}

int vid_sprite(const vid_source_t *src, const vid_sprite_opts_t *o, vid_thumb_t *out, char *err, size_t errlen)
{
    int rc = -1, tw, th;
    s_demux_t d;
    AVCodecContext *dec = NULL;
    AVFrame *best = NULL, *sheet = NULL;
    struct SwsContext *sws = NULL;
    memset(out, 0, sizeof(*out));
    if (!s_sprite_opts_ok(o)) {
        s_err(err, errlen, "bad sprite options");
        return -1;
    }
    if (s_demux_open(&d, src, VID_MAX_HEADER_BYTES, err, errlen) != 0)
        return -1;
    s_pin_start(&d);
    int v = s_first_video(d.fmt);
    vid_probe_t p = {.duration = s_duration(d.fmt)};
    if (v < 0 || p.duration <= 0 || !s_tb_ok(d.fmt->streams[v]->time_base)) {
        s_err(err, errlen, v < 0 ? "no video track" : "the video has no duration or time base");
        goto cleanup;
    }
    AVStream *st = d.fmt->streams[v];
    s_display_size(st, &p.width, &p.height);
    if (vid_sprite_tile(&p, o, &tw, &th) != 0) {
        s_err(err, errlen, "bad tile size (at most %d a side)", VID_SPRITE_MAX_SIDE);
        goto cleanup;
    }
    int per = o->cols * o->rows;
    double first = (double)o->sheet * per * o->every;
    if (first >= p.duration) {
        s_err(err, errlen, "sprite sheet %d is past the end of the video (%d sheets)", o->sheet,
              vid_sprite_sheets(&p, o));
        rc = 1;
        goto cleanup;
    }
    for (unsigned i = 0; i < d.fmt->nb_streams; i++)
        d.fmt->streams[i]->discard = (int)i == v ? AVDISCARD_DEFAULT : AVDISCARD_ALL;
    d.io.budget = d.io.used + S_THUMB_MAX_READ * 4;
    if ((dec = s_decoder(st, err, errlen)) == NULL || (best = av_frame_alloc()) == NULL ||
        (sheet = s_black(tw * o->cols, th * o->rows)) == NULL) {
        if (err[0] == '\0')
            s_err(err, errlen, "out of memory");
        goto cleanup;
    }
    int64_t start = st->start_time != AV_NOPTS_VALUE ? st->start_time : 0, last = INT64_MIN;
    int64_t near = av_rescale_q(5 * AV_TIME_BASE, AV_TIME_BASE_Q, st->time_base); /* decode on rather than seek */
    for (int k = 0; k < per; k++) {
        double t = first + k * o->every;
        if (t >= p.duration)
            break; /* the rest stays black */
        int64_t ts = start + (int64_t)llround(t * st->time_base.den / st->time_base.num), ndec = 0;
        av_frame_unref(best);
        bool onward = last != INT64_MIN && ts > last && ts - last <= near && !s_key_between(st, last, ts);
        if (!onward || s_decode_at(&d, v, dec, ts, false, best, &ndec, err, errlen) != 0) {
            avcodec_flush_buffers(dec);
            av_frame_unref(best);
            ndec = 0;
            if (av_seek_frame(d.fmt, v, ts, AVSEEK_FLAG_BACKWARD) < 0 ||
                s_decode_at(&d, v, dec, ts, false, best, &ndec, err, errlen) != 0)
                goto cleanup;
        }
        out->frames_decoded += ndec;
        last = best->best_effort_timestamp != AV_NOPTS_VALUE ? best->best_effort_timestamp : ts;
        if (k == 0)
            out->at = (double)(last - start) * st->time_base.num / st->time_base.den;
        if (s_tile(&sws, best, sheet, (k % o->cols) * tw, (k / o->cols) * th, tw, th) != 0) {
            s_err(err, errlen, "cannot scale a frame into its tile");
            goto cleanup;
        }
    }
    vid_thumb_opts_t eo = {.format = VID_IMG_JPEG, .quality = o->quality > 0 ? o->quality : 80};
    if (s_encode(sheet, &eo, out, err, errlen) != 0)
        goto cleanup;
    rc = 0;
cleanup:
    sws_freeContext(sws);
    av_frame_free(&sheet);
    av_frame_free(&best);
    avcodec_free_context(&dec);
    s_demux_close(&d);
    return rc;
}

/* ---- transcoding ------------------------------------------------------------------------------- */

/* One track of a transcode: its decoder, encoder, output stream and the
 * conversion between them. */
typedef struct {
    int in; /* input stream, -1 unused */
    AVCodecContext *dec, *enc;
    AVStream *ost;
    struct SwsContext *sws;
    SwrContext *swr;
    AVAudioFifo *fifo;
    AVFrame *frame, *out;
    int64_t next_pts; /* audio: samples so far; video: the last pts written + 1 */
    int64_t start;    /* the source's start time in this stream's time base */
} s_tx_track_t;

/* A progressive HLS segment being made (s_tx_t.seg): which frames and
 * audio packets it keeps, on the source's own timeline. */
typedef struct {
    bool on;
    int64_t lo_us, hi_us; /* video frames whose time (from the source's start) is in [lo, hi) */
    int64_t a_lo, a_hi;   /* audio packets whose first sample is in [a_lo, a_hi): whole AAC frames */
    int64_t a_pre;        /* where the audio encoder's input starts: two frames of pre-roll before a_lo */
    int64_t v_off[2];     /* VID_TS_OFFSET_S in the output tracks' time bases */
    bool v_past, a_past;  /* a packet well past the end has been read */
} s_phls_seg_t;

typedef struct {
    s_demux_t d;
    AVFormatContext *ofmt;
    s_tx_track_t v, a;
    vid_transcode_info_t *info;
    s_phls_seg_t seg;
} s_tx_t;

static int s_tx_write(s_tx_t *x, s_tx_track_t *t, AVPacket *pkt)
{
    if (x->seg.on && t == &x->a && (pkt->pts < x->seg.a_lo || pkt->pts >= x->seg.a_hi)) {
        av_packet_unref(pkt); /* pre-roll, or the next segment's */
        return 0;
    }
    av_packet_rescale_ts(pkt, t->enc->time_base, t->ost->time_base);
    pkt->stream_index = t->ost->index;
    if (x->seg.on) { /* every segment on one timeline: the source's, shifted as mp4hls's */
        int64_t off = x->seg.v_off[t->ost->index > 0];
        pkt->pts = pkt->pts != AV_NOPTS_VALUE ? pkt->pts + off : AV_NOPTS_VALUE;
        pkt->dts = pkt->dts != AV_NOPTS_VALUE ? pkt->dts + off : AV_NOPTS_VALUE;
    }
    return av_interleaved_write_frame(x->ofmt, pkt) < 0 ? -1 : 0;
}

/* Sends frame (NULL: the end) to t's encoder and writes what comes out. 0 or -1. */
static int s_tx_encode(s_tx_t *x, s_tx_track_t *t, AVFrame *frame)
{
    if (avcodec_send_frame(t->enc, frame) < 0)
        return -1;
    AVPacket *pkt = av_packet_alloc();
    if (pkt == NULL)
        return -1;
    int rc = 0;
    for (;;) {
        int e = avcodec_receive_packet(t->enc, pkt);
        if (e == AVERROR(EAGAIN) || e == AVERROR_EOF)
            break;
        if (e < 0 || s_tx_write(x, t, pkt) < 0) {
            rc = -1;
            break;
        }
    }
    av_packet_free(&pkt);
    return rc;
}

/* The encoder's flags and output stream, once it is set up. 0 or -1. */
static int s_tx_open_encoder(s_tx_t *x, s_tx_track_t *t, const AVCodec *codec, AVDictionary **opts)
{
    if (x->ofmt->oformat->flags & AVFMT_GLOBALHEADER)
        t->enc->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
    if (avcodec_open2(t->enc, codec, opts) < 0 || (t->ost = avformat_new_stream(x->ofmt, NULL)) == NULL ||
        avcodec_parameters_from_context(t->ost->codecpar, t->enc) < 0)
        return -1;
    t->ost->time_base = t->enc->time_base;
    return (t->frame = av_frame_alloc()) != NULL && (t->out = av_frame_alloc()) != NULL ? 0 : -1;
}

static int s_tx_video_setup(s_tx_t *x, const vid_transcode_opts_t *o, char *err, size_t errlen)
{
    s_tx_track_t *t = &x->v;
    AVStream *st = x->d.fmt->streams[t->in];
    if ((t->dec = s_decoder(st, err, errlen)) == NULL)
        return -1;
    const AVCodec *codec = avcodec_find_encoder_by_name("libx264");
    if (codec == NULL || (t->enc = avcodec_alloc_context3(codec)) == NULL) {
        s_err(err, errlen, "no libx264 encoder in this libavcodec");
        return -1;
    }
    AVFrame probe = {
        .width = t->dec->width, .height = t->dec->height, .sample_aspect_ratio = t->dec->sample_aspect_ratio};
    s_fit(&probe, o->max_width, o->max_height, &t->enc->width, &t->enc->height);
    AVRational fr = av_guess_frame_rate(x->d.fmt, st, NULL);
    if (fr.num <= 0 || fr.den <= 0)
        fr = (AVRational){25, 1};
    t->enc->pix_fmt = AV_PIX_FMT_YUV420P;
    t->enc->time_base = st->time_base.num > 0 && st->time_base.den > 0 ? st->time_base : av_inv_q(fr);
    t->enc->framerate = fr;
    t->enc->sample_aspect_ratio = (AVRational){1, 1};
    t->enc->gop_size = (int)(2 * fr.num / fr.den) > 0 ? (int)(2 * fr.num / fr.den) : 50; /* a keyframe each 2 s */
    t->enc->thread_count = 0;
    if (o->max_kbps > 0) { /* a ladder rung's cap: CRF within x264's VBV */
        t->enc->rc_max_rate = (int64_t)o->max_kbps * 1000;
        t->enc->rc_buffer_size = o->max_kbps * 2000;
    }
    AVDictionary *opts = NULL;
    av_dict_set(&opts, "preset", o->preset != NULL ? o->preset : "veryfast", 0);
    av_dict_set_int(&opts, "crf", o->crf > 0 ? o->crf : 23, 0);
    int rc = s_tx_open_encoder(x, t, codec, &opts);
    av_dict_free(&opts);
    if (rc < 0) {
        s_err(err, errlen, "cannot set up the H.264 encoder (%dx%d)", t->enc->width, t->enc->height);
        return -1;
    }
    x->info->width = t->enc->width;
    x->info->height = t->enc->height;
    t->next_pts = INT64_MIN;
    return 0;
}

/* A rate AAC has, near the source's. */
static int s_aac_rate(int in)
{
    static const int rates[] = {96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000};
    for (size_t i = 0; i < sizeof(rates) / sizeof(rates[0]); i++)
        if (in == rates[i])
            return in;
    return 48000;
}

static int s_tx_audio_setup(s_tx_t *x, const vid_transcode_opts_t *o, char *err, size_t errlen)
{
    s_tx_track_t *t = &x->a;
    AVStream *st = x->d.fmt->streams[t->in];
    const AVCodec *dc = avcodec_find_decoder(st->codecpar->codec_id);
    const AVCodec *codec = avcodec_find_encoder_by_name("aac");
    if (dc == NULL || codec == NULL || (t->dec = avcodec_alloc_context3(dc)) == NULL ||
        avcodec_parameters_to_context(t->dec, st->codecpar) < 0 || avcodec_open2(t->dec, dc, NULL) < 0 ||
        t->dec->sample_rate <= 0 || t->dec->ch_layout.nb_channels <= 0) {
        s_err(err, errlen, "cannot decode the %s audio track", avcodec_get_name(st->codecpar->codec_id));
        return -1;
    }
    if ((t->enc = avcodec_alloc_context3(codec)) == NULL)
        return -1;
    t->enc->sample_fmt = AV_SAMPLE_FMT_FLTP;
    t->enc->sample_rate = s_aac_rate(t->dec->sample_rate);
    av_channel_layout_default(&t->enc->ch_layout, t->dec->ch_layout.nb_channels >= 2 ? 2 : 1);
    t->enc->bit_rate = (int64_t)(o->audio_kbps > 0 ? o->audio_kbps : 128) * 1000;
    t->enc->time_base = (AVRational){1, t->enc->sample_rate};
    if (s_tx_open_encoder(x, t, codec, NULL) < 0 ||
        swr_alloc_set_opts2(&t->swr, &t->enc->ch_layout, t->enc->sample_fmt, t->enc->sample_rate, &t->dec->ch_layout,
                            t->dec->sample_fmt, t->dec->sample_rate, 0, NULL) < 0 ||
        swr_init(t->swr) < 0 ||
        (t->fifo = av_audio_fifo_alloc(t->enc->sample_fmt, t->enc->ch_layout.nb_channels, 4096)) == NULL) {
        s_err(err, errlen, "cannot set up the AAC encoder");
        return -1;
    }
    t->next_pts = INT64_MIN;
    return 0;
}

/* A decoded video frame to the encoder: scaled, timed from the start. */
static int s_tx_video_frame(s_tx_t *x, AVFrame *in)
{
    s_tx_track_t *t = &x->v;
    AVStream *st = x->d.fmt->streams[t->in];
    int64_t ts = in->best_effort_timestamp != AV_NOPTS_VALUE ? in->best_effort_timestamp : in->pts;
    if (ts == AV_NOPTS_VALUE)
        ts = t->next_pts != INT64_MIN ? t->next_pts : 0; /* a frame without time follows the last */
    else
        ts = av_rescale_q(ts - t->start, st->time_base, t->enc->time_base);
    if (ts < 0)
        return 0;    /* before the start (edit lists, B-frame delays): not shown */
    if (x->seg.on) { /* a segment keeps its own frames only */
        int64_t us = av_rescale_q(ts, t->enc->time_base, AV_TIME_BASE_Q);
        if (us < x->seg.lo_us || us >= x->seg.hi_us)
            return 0;
    }
    if (t->next_pts != INT64_MIN && ts < t->next_pts)
        ts = t->next_pts; /* never backwards */
    AVFrame *out = t->out;
    av_frame_unref(out);
    out->format = t->enc->pix_fmt;
    out->width = t->enc->width;
    out->height = t->enc->height;
    t->sws = sws_getCachedContext(t->sws, in->width, in->height, in->format, out->width, out->height, out->format,
                                  SWS_BICUBIC, NULL, NULL, NULL);
    if (t->sws == NULL || av_frame_get_buffer(out, 0) < 0 ||
        sws_scale(t->sws, (const uint8_t *const *)in->data, in->linesize, 0, in->height, out->data, out->linesize) !=
            out->height)
        return -1;
    out->pts = ts;
    t->next_pts = ts + 1;
    x->info->frames++;
    return s_tx_encode(x, t, out);
}

/* Encodes whole AAC frames from the FIFO (and, at the end, what is left). */
static int s_tx_audio_drain(s_tx_t *x, bool end)
{
    s_tx_track_t *t = &x->a;
    int fs = t->enc->frame_size > 0 ? t->enc->frame_size : 1024;
    while (av_audio_fifo_size(t->fifo) >= fs || (end && av_audio_fifo_size(t->fifo) > 0)) {
        int n = av_audio_fifo_size(t->fifo) < fs ? av_audio_fifo_size(t->fifo) : fs;
        AVFrame *f = t->out;
        av_frame_unref(f);
        f->nb_samples = fs; /* a short last frame is padded with silence */
        f->format = t->enc->sample_fmt;
        f->sample_rate = t->enc->sample_rate;
        if (av_channel_layout_copy(&f->ch_layout, &t->enc->ch_layout) < 0 || av_frame_get_buffer(f, 0) < 0)
            return -1;
        av_samples_set_silence(f->data, 0, fs, f->ch_layout.nb_channels, f->format);
        if (av_audio_fifo_read(t->fifo, (void **)f->data, n) != n)
            return -1;
        f->pts = t->next_pts;
        t->next_pts += fs;
        x->info->audio_frames++;
        if (s_tx_encode(x, t, f) < 0)
            return -1;
    }
    return 0;
}

/* A segment's audio starts on the AAC frame grid of the whole timeline
 * (frame k covers samples [1024k, 1024k + 1024)), two frames before its
 * first, so that its frames are the ones a continuous encode would make:
 * samples before that are dropped, a gap before the first decoded sample
 * is filled with silence. 0 or -1. */
static int s_seg_align_audio(s_tx_t *x)
{
    s_tx_track_t *t = &x->a;
    if (t->next_pts < x->seg.a_pre) {
        int drop = (int)FFMIN(x->seg.a_pre - t->next_pts, (int64_t)av_audio_fifo_size(t->fifo));
        if (av_audio_fifo_drain(t->fifo, drop) < 0)
            return -1;
        t->next_pts += drop;
    } else if (t->next_pts > x->seg.a_pre && x->info->audio_frames == 0) {
        int pad = (int)FFMIN(t->next_pts - x->seg.a_pre, (int64_t)1 << 20), rc = -1;
        uint8_t **buf = NULL;
        if (av_samples_alloc_array_and_samples(&buf, NULL, t->enc->ch_layout.nb_channels, pad, t->enc->sample_fmt, 0) <
            0)
            return -1;
        av_samples_set_silence(buf, 0, pad, t->enc->ch_layout.nb_channels, t->enc->sample_fmt);
        /* the silence goes before what the FIFO holds */
        int held = av_audio_fifo_size(t->fifo);
        AVAudioFifo *f = av_audio_fifo_alloc(t->enc->sample_fmt, t->enc->ch_layout.nb_channels, pad + held + 1);
        if (f != NULL && av_audio_fifo_write(f, (void **)buf, pad) == pad) {
            uint8_t **tmp = NULL;
            if (held == 0 || (av_samples_alloc_array_and_samples(&tmp, NULL, t->enc->ch_layout.nb_channels, held,
                                                                 t->enc->sample_fmt, 0) >= 0 &&
                              av_audio_fifo_read(t->fifo, (void **)tmp, held) == held &&
                              av_audio_fifo_write(f, (void **)tmp, held) == held))
                rc = 0;
            if (tmp != NULL) {
                av_freep(&tmp[0]);
                av_freep(&tmp);
            }
        }
        av_freep(&buf[0]);
        av_freep(&buf);
        if (rc < 0) {
            if (f != NULL)
                av_audio_fifo_free(f);
            return -1;
        }
        av_audio_fifo_free(t->fifo);
        t->fifo = f;
        t->next_pts = x->seg.a_pre;
    }
    return 0;
}

/* A decoded audio frame (NULL: flush the resampler) into the FIFO. */
static int s_tx_audio_frame(s_tx_t *x, AVFrame *in)
{
    s_tx_track_t *t = &x->a;
    if (t->next_pts == INT64_MIN) { /* the first samples: where they sit on the output's timeline */
        AVStream *st = x->d.fmt->streams[t->in];
        int64_t ts = in != NULL && in->pts != AV_NOPTS_VALUE ? in->pts - t->start : 0;
        t->next_pts = av_rescale_q(ts, st->time_base, t->enc->time_base);
        if (t->next_pts < 0)
            t->next_pts = 0;
    }
    int cap = swr_get_out_samples(t->swr, in != NULL ? in->nb_samples : 0);
    if (cap <= 0)
        return 0;
    uint8_t **buf = NULL;
    if (av_samples_alloc_array_and_samples(&buf, NULL, t->enc->ch_layout.nb_channels, cap, t->enc->sample_fmt, 0) < 0)
        return -1;
    int n = swr_convert(t->swr, buf, cap, in != NULL ? (const uint8_t **)in->extended_data : NULL,
                        in != NULL ? in->nb_samples : 0);
    int rc = n < 0 || (n > 0 && av_audio_fifo_write(t->fifo, (void **)buf, n) != n) ? -1 : 0;
    av_freep(&buf[0]);
    av_freep(&buf);
    if (rc == 0 && x->seg.on)
        rc = s_seg_align_audio(x);
    return rc != 0 ? -1 : s_tx_audio_drain(x, false);
}

/* Sends pkt (NULL: the end) to the track's decoder and passes on every frame. */
static int s_tx_decode(s_tx_t *x, s_tx_track_t *t, const AVPacket *pkt)
{
    int e = avcodec_send_packet(t->dec, pkt);
    if (e < 0 && e != AVERROR(EAGAIN) && e != AVERROR_EOF)
        return 0; /* a damaged packet: the next ones may decode */
    for (;;) {
        e = avcodec_receive_frame(t->dec, t->frame);
        if (e == AVERROR(EAGAIN) || e == AVERROR_EOF)
            return 0;
        if (e < 0)
            return 0;
        int rc = t == &x->v ? s_tx_video_frame(x, t->frame) : s_tx_audio_frame(x, t->frame);
        av_frame_unref(t->frame);
        if (rc < 0)
            return -1;
    }
}

static void s_tx_track_free(s_tx_track_t *t)
{
    avcodec_free_context(&t->dec);
    avcodec_free_context(&t->enc);
    sws_freeContext(t->sws);
    swr_free(&t->swr);
    if (t->fifo != NULL)
        av_audio_fifo_free(t->fifo);
    av_frame_free(&t->frame);
    av_frame_free(&t->out);
}

static bool s_seg_read_enough(s_tx_t *x, const AVPacket *pkt);

/* Reads packets into the decoders (a segment: until it has read enough),
 * then drains what the decoders, the resampler and the encoders still
 * hold. 0, or -1 with err set. */
static int s_tx_pump(s_tx_t *x, char *err, size_t errlen)
{
    AVPacket *pkt = av_packet_alloc();
    int rc = -1;
    if (pkt == NULL) {
        s_err(err, errlen, "out of memory");
        return -1;
    }
    for (int64_t n = 0;; n++) {
        if (n > S_MAX_ENTRIES * 2LL) {
            s_err(err, errlen, "too many packets");
            goto cleanup;
        }
        if (av_read_frame(x->d.fmt, pkt) < 0)
            break;
        bool enough = x->seg.on && s_seg_read_enough(x, pkt);
        s_tx_track_t *t = pkt->stream_index == x->v.in ? &x->v : pkt->stream_index == x->a.in ? &x->a : NULL;
        int r = t != NULL ? s_tx_decode(x, t, pkt) : 0;
        av_packet_unref(pkt);
        if (r < 0) {
            s_err(err, errlen, "cannot encode the output");
            goto cleanup;
        }
        if (enough)
            break;
    }
    if (x->d.io.failed || x->d.io.over) {
        s_err(err, errlen, x->d.io.failed ? "source read failed" : "too many bytes read");
        goto cleanup;
    }
    if (s_tx_decode(x, &x->v, NULL) < 0 || s_tx_encode(x, &x->v, NULL) < 0 ||
        (x->a.in >= 0 && (s_tx_decode(x, &x->a, NULL) < 0 || s_tx_audio_frame(x, NULL) < 0 ||
                          s_tx_audio_drain(x, true) < 0 || s_tx_encode(x, &x->a, NULL) < 0))) {
        s_err(err, errlen, "cannot finish the output");
        goto cleanup;
    }
    if (x->info->frames == 0) {
        s_err(err, errlen, "no video frame could be decoded (corrupt or truncated)");
        goto cleanup;
    }
    rc = 0;
cleanup:
    av_packet_free(&pkt);
    return rc;
}

/* Opens src for a transcode (any container) into a fresh x, with its
 * first video and first audio track as inputs (-1: none); info zeroed,
 * its input named. 0, or -1 with err set. */
static int s_tx_open(s_tx_t *x, const vid_source_t *src, vid_transcode_info_t *info, char *err, size_t errlen)
{
    memset(x, 0, sizeof(*x));
    memset(info, 0, sizeof(*info));
    x->info = info;
    x->v.in = x->a.in = -1;
    if (s_demux_open_as(&x->d, src, VID_MAX_HEADER_BYTES, true, NULL, err, errlen) != 0)
        return -1;
    info->input = x->d.fmt->iformat->name;
    x->v.in = s_first_video(x->d.fmt);
    for (unsigned i = 0; i < x->d.fmt->nb_streams && x->a.in < 0; i++)
        if (x->d.fmt->streams[i]->codecpar->codec_type == AVMEDIA_TYPE_AUDIO)
            x->a.in = (int)i;
    return 0;
}

int vid_transcode(const vid_source_t *src, const vid_transcode_opts_t *o, const char *out_path,
                  vid_transcode_info_t *info, char *err, size_t errlen)
{
    int rc = -1;
    s_tx_t x;
    bool stream = o->stream_write != NULL;
    s_sink_t sink = {.write = o->stream_write, .arg = o->stream_arg};
    if (s_tx_open(&x, src, info, err, errlen) != 0)
        return -1;
    double dur = s_duration(x.d.fmt), max = o->max_duration > 0 ? o->max_duration : VID_MAX_DURATION_S;
    if (x.v.in < 0) {
        s_err(err, errlen, "no video track");
        goto cleanup;
    }
    if (dur > max) {
        s_err(err, errlen, "the video is %.3f s long, more than %.3f s", dur, max);
        goto cleanup;
    }
    for (unsigned i = 0; i < x.d.fmt->nb_streams; i++)
        x.d.fmt->streams[i]->discard = (int)i == x.v.in || (int)i == x.a.in ? AVDISCARD_DEFAULT : AVDISCARD_ALL;
    int64_t start = x.d.fmt->start_time != AV_NOPTS_VALUE ? x.d.fmt->start_time : 0;
    x.v.start = av_rescale_q(start, AV_TIME_BASE_Q, x.d.fmt->streams[x.v.in]->time_base);
    if (x.a.in >= 0)
        x.a.start = av_rescale_q(start, AV_TIME_BASE_Q, x.d.fmt->streams[x.a.in]->time_base);
    if (avformat_alloc_output_context2(&x.ofmt, NULL, "mp4", stream ? NULL : out_path) < 0 || x.ofmt == NULL) {
        s_err(err, errlen, "out of memory");
        goto cleanup;
    }
    if (s_tx_video_setup(&x, o, err, errlen) < 0 || (x.a.in >= 0 && s_tx_audio_setup(&x, o, err, errlen) < 0))
        goto cleanup;
    AVDictionary *mo = NULL;
    int e = 0;
    if (stream) {
        /* Each fragment leaves as soon as the muxer closes it (flush per
         * packet: the muxer holds a fragment's samples until then). */
        uint8_t *buf = av_malloc(S_IO_BUF);
        x.ofmt->pb = buf != NULL ? avio_alloc_context(buf, S_IO_BUF, 1, &sink, NULL, s_sink_write, NULL) : NULL;
        if (x.ofmt->pb == NULL)
            av_free(buf);
        x.ofmt->flags |= AVFMT_FLAG_CUSTOM_IO | AVFMT_FLAG_FLUSH_PACKETS;
        av_dict_set(&mo, "movflags", "frag_keyframe+empty_moov+default_base_moof", 0);
        e = x.ofmt->pb == NULL ? -1 : 0;
    } else {
        av_dict_set(&mo, "movflags", "+faststart", 0);
        e = avio_open(&x.ofmt->pb, out_path, AVIO_FLAG_WRITE);
    }
    e = e < 0 ? -1 : avformat_write_header(x.ofmt, &mo);
    av_dict_free(&mo);
    if (e >= 0 && stream)
        avio_flush(x.ofmt->pb); /* the ftyp and empty moov: a player can start */
    if (e < 0 || sink.failed) {
        s_err(err, errlen, sink.failed ? "cannot write the MP4 out" : "cannot start the MP4");
        goto cleanup;
    }
    x.d.io.budget = x.d.io.used + src->size + VID_READ_SLACK; /* the source, front to back, once */
    if (s_tx_pump(&x, err, errlen) < 0)
        goto cleanup;
    if (av_write_trailer(x.ofmt) < 0 || sink.failed) {
        s_err(err, errlen, sink.failed ? "cannot write the MP4 out" : "cannot finish the MP4");
        goto cleanup;
    }
    info->duration = (double)x.v.next_pts * x.v.enc->time_base.num / x.v.enc->time_base.den;
    rc = 0;
cleanup:
    s_tx_track_free(&x.v);
    s_tx_track_free(&x.a);
    if (x.ofmt != NULL) {
        if (x.ofmt->pb != NULL && stream) {
            av_freep(&x.ofmt->pb->buffer);
            avio_context_free(&x.ofmt->pb);
        } else if (x.ofmt->pb != NULL) {
            avio_closep(&x.ofmt->pb);
        }
        avformat_free_context(x.ofmt);
    }
    s_demux_close(&x.d);
    return rc;
}

/* ---- progressive HLS ---------------------------------------------------------------------------- */

/* A segment shorter than this at the end is joined to the one before. */
#define S_PHLS_MIN_LAST_S 1.0

int vid_phls_probe(const vid_source_t *src, vid_phls_probe_t *out, char *err, size_t errlen)
{
    s_demux_t d;
    memset(out, 0, sizeof(*out));
    if (s_demux_open_as(&d, src, VID_MAX_HEADER_BYTES, true, NULL, err, errlen) != 0)
        return -1;
    int rc = -1, v = s_first_video(d.fmt);
    out->input = d.fmt->iformat->name;
    out->duration = s_duration(d.fmt);
    for (unsigned i = 0; i < d.fmt->nb_streams; i++)
        out->has_audio |= d.fmt->streams[i]->codecpar->codec_type == AVMEDIA_TYPE_AUDIO;
    if (v < 0)
        s_err(err, errlen, "no video track");
    else if (out->duration <= 0)
        s_err(err, errlen, "the source has no duration");
    else if (out->duration > VID_MAX_DURATION_S)
        s_err(err, errlen, "the video is %.3f s long, more than %d s", out->duration, VID_MAX_DURATION_S);
    else
        rc = 0;
    if (v >= 0)
        s_display_size(d.fmt->streams[v], &out->width, &out->height);
    if (rc == 0 && (out->width <= 0 || out->height <= 0)) {
        s_err(err, errlen, "the video has no size");
        rc = -1;
    }
    s_demux_close(&d);
    return rc;
}

int vid_phls_segments(double duration, double seg)
{
    if (!(duration > 0) || !(seg > 0))
        return 0;
    double n = ceil(duration / seg - 1e-9);
    if (n > VID_MAX_SEGMENTS)
        return 0;
    if (n > 1 && duration - (n - 1) * seg < S_PHLS_MIN_LAST_S)
        n--; /* a sliver at the end goes into the last segment */
    return n < 1 ? 1 : (int)n;
}

double vid_phls_extinf(double duration, double seg, int n)
{
    int count = vid_phls_segments(duration, seg);
    if (n < 0 || n >= count)
        return 0;
    return n < count - 1 ? seg : duration - seg * (count - 1);
}

int vid_phls_playlist(double duration, double seg, char **out, size_t *len)
{
    int count = vid_phls_segments(duration, seg);
    if (count < 1)
        return -1;
    double longest = vid_phls_extinf(duration, seg, count - 1) > seg ? vid_phls_extinf(duration, seg, count - 1) : seg;
    FILE *f = open_memstream(out, len);
    if (f == NULL)
        return -1;
    fprintf(f,
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:%d\n#EXT-X-MEDIA-SEQUENCE:0\n"
            "#EXT-X-PLAYLIST-TYPE:VOD\n",
            (int)ceil(longest - 1e-9));
    for (int n = 0; n < count; n++)
        fprintf(f, "#EXTINF:%.3f,\nseg-%d.ts\n", vid_phls_extinf(duration, seg, n), n);
    fputs("#EXT-X-ENDLIST\n", f);
    return fclose(f) == 0 ? 0 : -1;
}

int vid_phls_rungs(const vid_phls_probe_t *p, const vid_rung_t *ladder, int n, vid_rung_t *out)
{
    int k = 0, smallest = -1;
    for (int i = 0; i < n && i < VID_PHLS_MAX_RUNGS; i++) {
        if (ladder[i].height <= p->height)
            out[k++] = ladder[i];
        if (smallest < 0 || ladder[i].height < ladder[smallest].height)
            smallest = i;
    }
    if (k == 0 && smallest >= 0)
        out[k++] = ladder[smallest]; /* a video smaller than every rung: one, at its own size */
    return k;
}

/* The size a rung of height h gives p: fitted, never enlarged, even. */
static void s_rung_size(const vid_phls_probe_t *p, int h, int *w, int *oh)
{
    AVFrame probe = {.width = p->width, .height = p->height, .sample_aspect_ratio = {1, 1}};
    s_fit(&probe, 0, h, w, oh);
}

int vid_phls_master(const vid_phls_probe_t *p, const vid_rung_t *rungs, int n, int audio_kbps, char **out, size_t *len)
{
    if (n < 1)
        return -1;
    FILE *f = open_memstream(out, len);
    if (f == NULL)
        return -1;
    fputs("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-INDEPENDENT-SEGMENTS\n", f);
    for (int i = 0; i < n; i++) {
        int w, h;
        s_rung_size(p, rungs[i].height, &w, &h);
        int64_t bw = ((int64_t)(rungs[i].kbps > 0 ? rungs[i].kbps : 8000) + (p->has_audio ? audio_kbps : 0)) * 1000;
        fprintf(f, "#EXT-X-STREAM-INF:BANDWIDTH=%" PRId64 ",RESOLUTION=%dx%d\n%dp/index.m3u8\n", bw, w, h,
                rungs[i].height);
    }
    return fclose(f) == 0 ? 0 : -1;
}

/* The segment's bounds: [lo, hi) of video time, the AAC frames it keeps. */
static void s_seg_bounds(s_tx_t *x, const vid_phls_opts_t *o, double duration)
{
    int count = vid_phls_segments(duration, o->seg);
    x->seg.on = true;
    x->seg.lo_us = (int64_t)llround(o->n * o->seg * 1e6);
    x->seg.hi_us = o->n >= count - 1 ? INT64_MAX : (int64_t)llround((o->n + 1) * o->seg * 1e6);
    if (x->a.in >= 0) {
        int64_t rate = x->a.enc->sample_rate, fs = 1024;
        x->seg.a_lo = (x->seg.lo_us * rate / 1000000 + fs - 1) / fs * fs;
        x->seg.a_hi = x->seg.hi_us == INT64_MAX ? INT64_MAX : (x->seg.hi_us * rate / 1000000 + fs - 1) / fs * fs;
        x->seg.a_pre = x->seg.a_lo - 2 * fs;
    }
}

/* Whether enough has been read: both tracks well past the segment's end
 * (B-frame reordering and the files' own interleaving). */
static bool s_seg_read_enough(s_tx_t *x, const AVPacket *pkt)
{
    const AVStream *st = x->d.fmt->streams[pkt->stream_index];
    int64_t t = s_rel_us(st, pkt->pts != AV_NOPTS_VALUE ? pkt->pts : pkt->dts);
    if (t != AV_NOPTS_VALUE && x->seg.hi_us != INT64_MAX) {
        if (pkt->stream_index == x->v.in && t >= x->seg.hi_us + 1000000)
            x->seg.v_past = true;
        if (pkt->stream_index == x->a.in && t >= x->seg.hi_us + 200000)
            x->seg.a_past = true;
    }
    return x->seg.v_past && (x->a.in < 0 || x->seg.a_past);
}

/* The first video keyframe's time (microseconds from the track's start)
 * in the next packets, AV_NOPTS_VALUE when none shows within a bound. */
static int64_t s_first_key_us(s_demux_t *d, int v)
{
    AVPacket *pkt = av_packet_alloc();
    int64_t t = AV_NOPTS_VALUE;
    for (int i = 0; pkt != NULL && i < 4096 && av_read_frame(d->fmt, pkt) >= 0; i++) {
        bool key = pkt->stream_index == v && (pkt->flags & AV_PKT_FLAG_KEY);
        if (key)
            t = s_rel_us(d->fmt->streams[v], pkt->pts != AV_NOPTS_VALUE ? pkt->pts : pkt->dts);
        av_packet_unref(pkt);
        if (key)
            break;
    }
    av_packet_free(&pkt);
    return t;
}

/* Puts d where a segment from lo_us can be decoded: on a video keyframe
 * at or before lo_us less some pre-roll. Not every container seeks to a
 * keyframe at or before the time asked (MPEG-TS seeks by timestamp alone,
 * and lands wherever), so each try looks at the first keyframe it reaches
 * and tries further back when that is too late; the source's start is
 * reached by opening it again. 0, or -1 with err set. */
static int s_seg_position(s_demux_t *d, const vid_source_t *src, int64_t lo_us, char *err, size_t errlen)
{
    static const int64_t margins[] = {200000, 2000000, 6000000, 20000000};
    int v = s_first_video(d->fmt);
    for (size_t i = 0; i < sizeof(margins) / sizeof(margins[0]); i++) {
        int64_t target = lo_us - margins[i];
        if (target <= 0)
            break;
        if (s_seek_back(d, v, target, err, errlen) < 0)
            return -1;
        int64_t k = s_first_key_us(d, v);
        if (k != AV_NOPTS_VALUE && k <= lo_us - margins[0] / 2)
            return s_seek_back(d, v, target, err, errlen);
    }
    s_demux_close(d); /* from the start: what the demuxer does when just opened */
    return s_demux_open_as(d, src, VID_MAX_HEADER_BYTES, true, NULL, err, errlen);
}

/* The encoders' settings for a rung: its height, its bit-rate cap. */
static void s_seg_video_opts(const vid_phls_opts_t *o, vid_transcode_opts_t *t)
{
    memset(t, 0, sizeof(*t));
    t->max_height = o->height;
    t->crf = o->crf;
    t->preset = o->preset;
    t->audio_kbps = o->audio_kbps;
    t->max_kbps = o->kbps;
}

int vid_phls_segment(const vid_source_t *src, const vid_phls_opts_t *o, vid_write_fn write, void *arg,
                     vid_transcode_info_t *info, char *err, size_t errlen)
{
    int rc = -1;
    s_tx_t x;
    s_mux_t m;
    memset(&m, 0, sizeof(m));
    vid_transcode_opts_t to;
    s_seg_video_opts(o, &to);
    if (!(o->seg > 0) || o->n < 0) {
        memset(info, 0, sizeof(*info));
        s_err(err, errlen, "bad segment");
        return -1;
    }
    if (s_tx_open(&x, src, info, err, errlen) != 0)
        return -1;
    double dur = s_duration(x.d.fmt);
    int count = vid_phls_segments(dur, o->seg);
    if (x.v.in < 0 || count < 1) {
        s_err(err, errlen, x.v.in < 0 ? "no video track" : "the source has no duration");
        goto cleanup;
    }
    if (o->max_duration > 0 && dur > o->max_duration) {
        s_err(err, errlen, "the video is %.3f s long, more than %.3f s", dur, o->max_duration);
        goto cleanup;
    }
    if (o->n >= count) {
        s_err(err, errlen, "no segment %d: the video has %d", o->n, count);
        rc = 1;
        goto cleanup;
    }
    /* a fresh demuxer is at the start, where the first segment begins */
    int64_t lo_us = (int64_t)llround(o->n * o->seg * 1e6);
    if (lo_us > 200000 && s_seg_position(&x.d, src, lo_us, err, errlen) < 0)
        goto cleanup;
    for (unsigned i = 0; i < x.d.fmt->nb_streams; i++)
        x.d.fmt->streams[i]->discard = (int)i == x.v.in || (int)i == x.a.in ? AVDISCARD_DEFAULT : AVDISCARD_ALL;
    int64_t start = x.d.fmt->start_time != AV_NOPTS_VALUE ? x.d.fmt->start_time : 0;
    x.v.start = av_rescale_q(start, AV_TIME_BASE_Q, x.d.fmt->streams[x.v.in]->time_base);
    if (x.a.in >= 0)
        x.a.start = av_rescale_q(start, AV_TIME_BASE_Q, x.d.fmt->streams[x.a.in]->time_base);
    if (s_mux_alloc(&m, 0, write, arg, err, errlen) < 0)
        goto cleanup;
    x.ofmt = m.fmt;
    if (s_tx_video_setup(&x, &to, err, errlen) < 0 || (x.a.in >= 0 && s_tx_audio_setup(&x, &to, err, errlen) < 0) ||
        s_mux_start(&m, err, errlen) < 0)
        goto cleanup;
    x.seg.v_off[0] = m.offset[0];
    x.seg.v_off[1] = m.offset[1];
    s_seg_bounds(&x, o, dur);
    x.d.io.budget = x.d.io.used + src->size + VID_READ_SLACK;
    if (s_tx_pump(&x, err, errlen) < 0)
        goto cleanup;
    if (av_write_trailer(m.fmt) < 0 || m.sink.failed) {
        s_err(err, errlen, "cannot finish the segment");
        goto cleanup;
    }
    rc = 0;
cleanup:
    s_tx_track_free(&x.v);
    s_tx_track_free(&x.a);
    s_mux_close(&m);
    s_demux_close(&x.d);
    return rc;
}
