#include "vid_recut.h"

#include "vid_err.h"
#include "vid_hvcc.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libavutil/opt.h>
#include <libavutil/pixdesc.h>

/* Frames larger than this are not re-encoded (the decoders' own bound). */
#define S_MAX_PIXELS (8192 * 8192)

/* The re-encoder's quality for its frames: high, since they sit between
 * copied frames of the source's quality. */
#define S_CRF "18"

/* libx265's settings for a stretch: one IDR at its start and no B-frames
 * (as for x264); closed groups (an open one would make CRA pictures); one
 * slice per picture and no wavefronts, so that a slice header can be
 * renumbered by inserting one byte (vid_hvcc) with no entry points
 * after it to fix. */
#define S_X265 "log-level=error:info=0:bframes=0:open-gop=0:scenecut=0:keyint=600:min-keyint=600:slices=1:wpp=0"

struct vid_recut {
    AVCodecContext *dec;
    enum AVCodecID codec;   /* H.264 or HEVC */
    const AVCodec *enc;     /* libx264 or libx265 */
    AVCodecParameters *par; /* the source track's (size, format, profile, colour) */
    AVRational tb, fr;
    int width, height, format; /* of the decoded frames */
    int nal_len;               /* the source's NAL length prefix, 1, 2 or 4 bytes */
    int id;                    /* H.264: the re-encoder's SPS and PPS id */
    vid_hevc_renum_t renum;    /* HEVC: the re-encoder's parameter set ids */
    uint8_t *params;           /* the re-encoder's extradata (Annex B parameter sets) as the probe made it */
    int params_len;
    uint8_t *extra; /* the output track's avcC or hvcC */
    int extra_len;
};

/* ---- the avcC ------------------------------------------------------------------------ */

/* Where an avcC's parts are: [6, sps_end) the SPS entries, pps_count the
 * PPS count byte, (pps_count, pps_end) the PPS entries, [pps_end, len)
 * what follows (High profiles' chroma fields). */
typedef struct {
    int nsps, npps;
    int sps_end, pps_count, pps_end;
} s_avcc_t;

static int s_be16(const uint8_t *p)
{
    return p[0] << 8 | p[1];
}

/* Checks the entries of one list from *p: n of them, each a 16-bit length
 * and at least min bytes. Calls id_of on each NAL. 0 or -1. */
static int s_avcc_list(const uint8_t *a, int len, int *p, int n, int min, int (*id_of)(const uint8_t *, int),
                       uint64_t *ids, int id_max)
{
    for (int i = 0; i < n; i++) {
        if (*p + 2 > len)
            return -1;
        int l = s_be16(a + *p);
        if (l < min || *p + 2 + l > len)
            return -1;
        int id = id_of(a + *p + 2, l);
        if (id < 0 || id > id_max)
            return -1;
        ids[id / 64] |= 1ULL << (id % 64);
        *p += 2 + l;
    }
    return 0;
}

/* Exp-Golomb ue(v) starting `skip` bytes into the NAL's payload (after
 * its header byte), emulation prevention bytes removed first; values
 * past 255 and codes that do not fit are -1. */
static int s_ue(const uint8_t *nal, int len, int skip)
{
    uint8_t b[16];
    int n = 0, zeros = 0, at = 0;
    for (int i = 1; i < len && n < (int)sizeof(b); i++) {
        if (zeros >= 2 && nal[i] == 3) {
            zeros = 0;
            continue;
        }
        zeros = nal[i] == 0 ? zeros + 1 : 0;
        if (at++ >= skip)
            b[n++] = nal[i];
    }
    int bit = 0, lead = 0;
    while (bit < n * 8 && !(b[bit / 8] & (0x80 >> (bit % 8))))
        lead++, bit++;
    if (lead > 31 || bit + 1 + lead > n * 8)
        return -1;
    bit++;
    uint32_t v = 0;
    for (int k = 0; k < lead; k++, bit++)
        v = v << 1 | ((b[bit / 8] >> (7 - bit % 8)) & 1);
    uint64_t r = ((uint64_t)1 << lead) - 1 + v;
    return r > 255 ? -1 : (int)r;
}

/* seq_parameter_set_id: after profile, constraints and level. */
static int s_sps_id(const uint8_t *nal, int len)
{
    return (nal[0] & 0x1f) == 7 ? s_ue(nal, len, 3) : -1;
}

/* pic_parameter_set_id: the payload's first field. */
static int s_pps_id(const uint8_t *nal, int len)
{
    return (nal[0] & 0x1f) == 8 ? s_ue(nal, len, 0) : -1;
}

static int s_avcc_walk(const uint8_t *a, int len, s_avcc_t *w, uint64_t sps_ids[4], uint64_t pps_ids[4])
{
    if (a == NULL || len < 7 || a[0] != 1 || (a[4] & 3) == 2)
        return -1;
    w->nsps = a[5] & 0x1f;
    int p = 6;
    if (s_avcc_list(a, len, &p, w->nsps, 5, s_sps_id, sps_ids, 31) < 0 || p >= len)
        return -1;
    w->sps_end = p;
    w->pps_count = p;
    w->npps = a[p++];
    if (s_avcc_list(a, len, &p, w->npps, 2, s_pps_id, pps_ids, 255) < 0)
        return -1;
    w->pps_end = p;
    return w->nsps >= 1 && w->npps >= 1 ? 0 : -1;
}

int vid_recut_avcc_ids(const uint8_t *avcc, int len, uint32_t *sps_ids, uint64_t pps_ids[4], int *nal_len_size)
{
    s_avcc_t w;
    uint64_t sps[4] = {0};
    memset(pps_ids, 0, 4 * sizeof(pps_ids[0]));
    if (s_avcc_walk(avcc, len, &w, sps, pps_ids) < 0)
        return -1;
    *sps_ids = (uint32_t)sps[0];
    *nal_len_size = (avcc[4] & 3) + 1;
    return 0;
}

/* ---- Annex B ------------------------------------------------------------------------ */

/* The next NAL in an Annex B buffer from *pos: its start and length;
 * false at the end. Trailing zero bytes (a 4-byte start code's first)
 * are not part of it. */
static bool s_annexb_next(const uint8_t *b, int len, int *pos, const uint8_t **nal, int *nal_len)
{
    int i = *pos;
    while (i + 3 <= len && !(b[i] == 0 && b[i + 1] == 0 && b[i + 2] == 1))
        i++;
    if (i + 3 > len)
        return false;
    int s = i + 3, e = s;
    while (e + 3 <= len && !(b[e] == 0 && b[e + 1] == 0 && b[e + 2] == 1))
        e++;
    if (e + 3 > len)
        e = len;
    *pos = e;
    while (e > s && b[e - 1] == 0)
        e--;
    *nal = b + s;
    *nal_len = e - s;
    return true;
}

/* One of the re-encoder's NALs as the output track carries it, into
 * out[cap]: its length, 0 to leave it out (parameter sets, delimiters,
 * SEI: the track's avcC or hvcC has the sets), -1 when it does not fit
 * or cannot be renumbered. */
static int s_carry(const vid_recut_t *self, const uint8_t *nal, int l, uint8_t *out, int cap)
{
    if (self->codec == AV_CODEC_ID_HEVC) {
        int type = vid_hevc_nal_type(nal, l);
        if (type >= VID_HEVC_VPS)
            return 0;
        return vid_hevc_renum_slice(&self->renum, nal, l, out, cap);
    }
    int type = l > 0 ? nal[0] & 0x1f : 0;
    if (l <= 0 || type == 7 || type == 8 || type == 9)
        return 0;
    if (l > cap)
        return -1;
    memcpy(out, nal, (size_t)l);
    return l;
}

/* Annex B NALs to length-prefixed ones (prefix nal_len bytes) into out,
 * as s_carry has them. Returns the bytes written, or -1 when a NAL is
 * too long for the prefix, cannot be carried or out is too small
 * (out_cap >= 2 * len + 4 * NALs + 16 always suffices). */
static int s_to_lengths(const vid_recut_t *self, const uint8_t *in, int len, uint8_t *out, int out_cap)
{
    int pos = 0, o = 0, l, nal_len = self->nal_len;
    const uint8_t *nal;
    while (s_annexb_next(in, len, &pos, &nal, &l)) {
        if (o + nal_len > out_cap)
            return -1;
        int w = s_carry(self, nal, l, out + o + nal_len, out_cap - o - nal_len);
        if (w < 0 || (nal_len < 4 && w >= 1 << (8 * nal_len)))
            return -1;
        if (w == 0)
            continue;
        for (int k = nal_len - 1; k >= 0; k--)
            out[o++] = (uint8_t)(w >> (8 * k));
        o += w;
    }
    return o;
}

/* The output avcC: the source's with the re-encoder's SPS and PPS (from
 * its Annex B extradata) added to the lists. 0 or -1. */
static int s_avcc_build(vid_recut_t *self, const uint8_t *src, int src_len, const s_avcc_t *w)
{
    const uint8_t *sps = NULL, *pps = NULL, *nal;
    int sps_len = 0, pps_len = 0, pos = 0, l;
    while (s_annexb_next(self->params, self->params_len, &pos, &nal, &l)) {
        if (l > 0 && (nal[0] & 0x1f) == 7 && sps == NULL)
            sps = nal, sps_len = l;
        else if (l > 0 && (nal[0] & 0x1f) == 8 && pps == NULL)
            pps = nal, pps_len = l;
    }
    if (sps == NULL || pps == NULL || w->nsps >= 31 || w->npps >= 255 || s_sps_id(sps, sps_len) != self->id ||
        s_pps_id(pps, pps_len) != self->id)
        return -1;
    int n = src_len + 4 + sps_len + pps_len, o = 0;
    if ((self->extra = av_malloc((size_t)n + AV_INPUT_BUFFER_PADDING_SIZE)) == NULL)
        return -1;
    uint8_t *a = self->extra;
    memcpy(a, src, (size_t)w->sps_end);
    a[5] = (uint8_t)(0xe0 | (w->nsps + 1));
    o = w->sps_end;
    a[o++] = (uint8_t)(sps_len >> 8), a[o++] = (uint8_t)sps_len;
    memcpy(a + o, sps, (size_t)sps_len), o += sps_len;
    a[o++] = (uint8_t)(w->npps + 1);
    a[o++] = (uint8_t)(pps_len >> 8), a[o++] = (uint8_t)pps_len;
    memcpy(a + o, pps, (size_t)pps_len), o += pps_len;
    memcpy(a + o, src + w->pps_count + 1, (size_t)(w->pps_end - w->pps_count - 1)), o += w->pps_end - w->pps_count - 1;
    memcpy(a + o, src + w->pps_end, (size_t)(src_len - w->pps_end)), o += src_len - w->pps_end;
    memset(a + o, 0, AV_INPUT_BUFFER_PADDING_SIZE);
    self->extra_len = o;
    return 0;
}

/* ---- the encoder ---------------------------------------------------------------------- */

/* x264's profile name for the source's, so that the new frames need no
 * more of a decoder than the source's do; NULL: x264 picks. */
static const char *s_profile(int profile)
{
    switch (profile & ~FF_PROFILE_H264_CONSTRAINED) {
    case FF_PROFILE_H264_BASELINE: return "baseline";
    case FF_PROFILE_H264_MAIN: return "main";
    case FF_PROFILE_H264_HIGH: return "high";
    default: return NULL;
    }
}

/* A new libx264 or libx265 encoder matching the source (caller owns), or NULL. */
static AVCodecContext *s_encoder(const vid_recut_t *self)
{
    AVCodecContext *e = avcodec_alloc_context3(self->enc);
    if (e == NULL)
        return NULL;
    const AVCodecParameters *p = self->par;
    e->width = self->width;
    e->height = self->height;
    e->pix_fmt = (enum AVPixelFormat)self->format;
    e->time_base = self->tb;
    e->framerate = self->fr;
    e->sample_aspect_ratio = p->sample_aspect_ratio;
    e->color_range = p->color_range;
    e->color_primaries = p->color_primaries;
    e->color_trc = p->color_trc;
    e->colorspace = p->color_space;
    e->chroma_sample_location = p->chroma_location;
    e->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
    e->max_b_frames = 0;
    e->gop_size = 600; /* a stretch is shorter than the source's group: one IDR, at its start */
    e->thread_count = 0;
    AVDictionary *o = NULL;
    av_dict_set(&o, "preset", "veryfast", 0);
    av_dict_set(&o, "crf", S_CRF, 0);
    if (self->codec == AV_CODEC_ID_HEVC) {
        av_dict_set(&o, "x265-params", S_X265, 0);
    } else {
        char x264[64];
        snprintf(x264, sizeof(x264), "sps-id=%d", self->id);
        av_dict_set(&o, "x264-params", x264, 0);
        if (s_profile(p->profile) != NULL)
            av_dict_set(&o, "profile", s_profile(p->profile), 0);
    }
    int rc = avcodec_open2(e, self->enc, &o);
    av_dict_free(&o);
    if (rc < 0 || e->extradata == NULL || e->extradata_size <= 0)
        avcodec_free_context(&e);
    return e;
}

/* Whether libx264 takes frames of this pixel format. */
static bool s_pix_ok(const AVCodec *c, int fmt)
{
    for (const enum AVPixelFormat *f = c->pix_fmts; f != NULL && *f != AV_PIX_FMT_NONE; f++)
        if ((int)*f == fmt)
            return true;
    return false;
}

/* Decodes the keyframe `key` to learn the frames' size and pixel format
 * (the demuxer does not know it before decoding). 0 or -1. */
static int s_learn_format(vid_recut_t *self, const AVPacket *key)
{
    AVFrame *f = av_frame_alloc();
    int rc = -1;
    if (f != NULL && avcodec_send_packet(self->dec, key) >= 0 && avcodec_send_packet(self->dec, NULL) >= 0 &&
        avcodec_receive_frame(self->dec, f) >= 0) {
        self->width = f->width;
        self->height = f->height;
        self->format = f->format;
        rc = 0;
    }
    avcodec_flush_buffers(self->dec);
    av_frame_free(&f);
    return rc;
}

/* H.264: an SPS and PPS id the source does not use (x264 gives its PPS
 * the SPS's id) and the NAL length size. 0, or -1 when the avcC is
 * malformed or every id is taken. */
static int s_h264_ids(vid_recut_t *self, const AVCodecParameters *p, s_avcc_t *w)
{
    uint64_t sps[4] = {0}, pps[4] = {0};
    if (s_avcc_walk(p->extradata, p->extradata_size, w, sps, pps) < 0)
        return -1;
    self->nal_len = (p->extradata[4] & 3) + 1;
    self->id = -1;
    for (int id = 1; id < 32 && self->id < 0; id++)
        if (!(sps[0] & (1ULL << id)) && !(pps[0] & (1ULL << id)))
            self->id = id;
    return self->id < 0 ? -1 : 0;
}

/* HEVC: the output hvcC, the source's with the probe's VPS, SPS and PPS
 * renumbered and added. 0 or -1. */
static int s_hvcc_build(vid_recut_t *self, const uint8_t *src, int src_len)
{
    const uint8_t *nal, *nals[3];
    uint8_t *bufs[3] = {NULL, NULL, NULL}, *joined = NULL;
    int pos = 0, l, n = 0, lens[3], rc = -1, joined_len = 0;
    while (s_annexb_next(self->params, self->params_len, &pos, &nal, &l)) {
        int type = vid_hevc_nal_type(nal, l);
        if (type < VID_HEVC_VPS || type > VID_HEVC_PPS)
            continue;
        if (n == 3 || (bufs[n] = malloc((size_t)l * 2 + 16)) == NULL ||
            (lens[n] = vid_hevc_renum_ps(&self->renum, nal, l, bufs[n], l * 2 + 16)) < 0)
            goto cleanup;
        nals[n] = bufs[n];
        n++;
    }
    if (n != 3 || vid_hvcc_join(src, src_len, nals, lens, n, &joined, &joined_len) < 0 ||
        (self->extra = av_malloc((size_t)joined_len + AV_INPUT_BUFFER_PADDING_SIZE)) == NULL)
        goto cleanup;
    memcpy(self->extra, joined, (size_t)joined_len);
    memset(self->extra + joined_len, 0, AV_INPUT_BUFFER_PADDING_SIZE);
    self->extra_len = joined_len;
    rc = 0;
cleanup:
    for (int i = 0; i < 3; i++)
        free(bufs[i]);
    free(joined);
    return rc;
}

vid_recut_t *vid_recut_new(const AVStream *st, const AVPacket *key, char *err, size_t errlen)
{
    const AVCodecParameters *p = st->codecpar;
    vid_recut_t *self = NULL;
    s_avcc_t w;
    vid_hvcc_ids_t used;
    bool hevc = p->codec_id == AV_CODEC_ID_HEVC;
    const char *name = hevc ? "HEVC" : "H.264";
    if (p->codec_id != AV_CODEC_ID_H264 && !hevc) {
        s_err(err, errlen, "exact cuts need H.264 or HEVC");
        return NULL;
    }
    const AVCodec *enc = avcodec_find_encoder_by_name(hevc ? "libx265" : "libx264"),
                  *dc = avcodec_find_decoder(p->codec_id);
    if (enc == NULL || dc == NULL) {
        s_err(err, errlen, "no %s decoder and encoder here", name);
        return NULL;
    }
    if ((self = calloc(1, sizeof(*self))) == NULL || (self->par = avcodec_parameters_alloc()) == NULL ||
        avcodec_parameters_copy(self->par, p) < 0)
        goto oom;
    self->codec = p->codec_id;
    self->enc = enc;
    self->tb = st->time_base;
    self->fr = st->avg_frame_rate.num > 0 && st->avg_frame_rate.den > 0 ? st->avg_frame_rate : st->r_frame_rate;
    if (self->fr.num <= 0 || self->fr.den <= 0)
        self->fr = (AVRational){25, 1};
    if (hevc ? vid_hvcc_ids(p->extradata, p->extradata_size, &used) < 0 || vid_hevc_renum_pick(&used, &self->renum) < 0
             : s_h264_ids(self, p, &w) < 0) {
        s_err(err, errlen, "exact cuts need the %s parameter sets in the track's sample entry", name);
        goto fail;
    }
    if (hevc)
        self->nal_len = used.nal_len;
    if ((self->dec = avcodec_alloc_context3(dc)) == NULL || avcodec_parameters_to_context(self->dec, p) < 0)
        goto oom;
    self->dec->thread_count = 1; /* job threads are the parallelism (frame threads gained nothing measured) */
    self->dec->pkt_timebase = st->time_base;
    self->dec->max_pixels = S_MAX_PIXELS;
    if (avcodec_open2(self->dec, dc, NULL) < 0 || s_learn_format(self, key) < 0) {
        s_err(err, errlen, "cannot decode the %s track", name);
        goto fail;
    }
    if (!s_pix_ok(enc, self->format)) {
        const char *fmt = av_get_pix_fmt_name((enum AVPixelFormat)self->format);
        s_err(err, errlen, "no %s re-encoder for %s", name, fmt != NULL ? fmt : "this pixel format");
        goto fail;
    }
    /* A probe encoder: its parameter sets go into the avcC or hvcC now,
     * and every stretch's encoder (same settings) must make the same ones. */
    AVCodecContext *probe = s_encoder(self);
    if (probe == NULL) {
        s_err(err, errlen, "cannot set up %s for %dx%d", enc->name, self->width, self->height);
        goto fail;
    }
    self->params_len = probe->extradata_size;
    self->params = malloc((size_t)probe->extradata_size);
    if (self->params != NULL)
        memcpy(self->params, probe->extradata, (size_t)probe->extradata_size);
    avcodec_free_context(&probe);
    if (self->params == NULL)
        goto oom;
    if ((hevc ? s_hvcc_build(self, p->extradata, p->extradata_size)
              : s_avcc_build(self, p->extradata, p->extradata_size, &w)) < 0) {
        s_err(err, errlen, "cannot join the parameter sets");
        goto fail;
    }
    return self;
oom:
    s_err(err, errlen, "out of memory");
fail:
    vid_recut_destroy(&self);
    return NULL;
}

void vid_recut_destroy(vid_recut_t **p)
{
    if (p == NULL || *p == NULL)
        return;
    vid_recut_t *self = *p;
    avcodec_free_context(&self->dec);
    avcodec_parameters_free(&self->par);
    free(self->params);
    av_free(self->extra);
    free(self);
    *p = NULL;
}

const uint8_t *vid_recut_extradata(const vid_recut_t *self, int *len)
{
    *len = self->extra_len;
    return self->extra;
}

/* ---- the source's packets ---------------------------------------------------------------- */

/* The next length-prefixed NAL of a source packet from *pos; false at
 * the end or when a length runs past it. */
static bool s_nal_next(const vid_recut_t *self, uint8_t *b, int len, int *pos, uint8_t **nal, int *nal_len)
{
    if (*pos + self->nal_len > len)
        return false;
    uint32_t l = 0;
    for (int k = 0; k < self->nal_len; k++)
        l = l << 8 | b[*pos + k];
    if (l > (uint32_t)(len - *pos - self->nal_len))
        return false;
    *nal = b + *pos + self->nal_len;
    *nal_len = (int)l;
    *pos += self->nal_len + (int)l;
    return true;
}

bool vid_recut_leading(const vid_recut_t *self, const AVPacket *key, const AVPacket *pkt)
{
    if (self->codec != AV_CODEC_ID_HEVC) /* H.264 names no such pictures: one shown before its keyframe is one */
        return pkt != key && key->pts != AV_NOPTS_VALUE && pkt->pts != AV_NOPTS_VALUE && pkt->pts < key->pts;
    if (pkt->data == NULL)
        return false;
    int pos = 0, l;
    uint8_t *nal;
    while (s_nal_next(self, pkt->data, pkt->size, &pos, &nal, &l)) {
        int type = vid_hevc_nal_type(nal, l);
        if (type == VID_HEVC_RASL_N || type == VID_HEVC_RASL_R)
            return true;
    }
    return false;
}

int vid_recut_splice(const vid_recut_t *self, AVPacket *pkt)
{
    if (self->codec != AV_CODEC_ID_HEVC || pkt->data == NULL)
        return 0;
    if (av_packet_make_writable(pkt) < 0)
        return -1;
    int pos = 0, l;
    uint8_t *nal;
    while (s_nal_next(self, pkt->data, pkt->size, &pos, &nal, &l))
        if (vid_hevc_nal_type(nal, l) == VID_HEVC_CRA) /* the type is bits 1-6 of the first byte */
            nal[0] = (uint8_t)((nal[0] & 0x81) | VID_HEVC_BLA_W_LP << 1);
    return 0;
}

/* ---- one group ------------------------------------------------------------------------ */

/* One call of vid_recut_gop. */
typedef struct {
    vid_recut_t *self;
    AVPacket *const *gop;
    int n;
    int64_t lo, hi, delay;
    vid_recut_emit_fn emit;
    void *arg;
    AVCodecContext *enc; /* while a stretch is being encoded */
    AVPacket *pkt;
    int frames;
    char *err;
    size_t errlen;
} s_job_t;

/* The source packet's duration at presentation time pts (frames keep it). */
static int64_t s_duration_at(const s_job_t *j, int64_t pts)
{
    for (int i = 0; i < j->n; i++)
        if (j->gop[i]->pts == pts)
            return j->gop[i]->duration;
    return 0;
}

/* What the encoder has: rewritten and timed as the source's, to the sink. 0 or -1. */
static int s_drain_encoder(s_job_t *j)
{
    for (;;) {
        int e = avcodec_receive_packet(j->enc, j->pkt);
        if (e == AVERROR(EAGAIN) || e == AVERROR_EOF)
            return 0;
        if (e < 0) {
            s_err(j->err, j->errlen, "the re-encoder failed");
            return -1;
        }
        AVPacket *out = av_packet_alloc();
        int cap = 2 * j->pkt->size + 256, len = -1; /* renumbered HEVC slices grow by a byte and their escapes */
        if (out != NULL && av_new_packet(out, cap) == 0)
            len = s_to_lengths(j->self, j->pkt->data, j->pkt->size, out->data, cap);
        int rc = -1;
        if (len > 0) {
            av_shrink_packet(out, len);
            out->pts = j->pkt->pts;
            out->dts = j->pkt->pts - j->delay;
            out->duration = s_duration_at(j, j->pkt->pts);
            out->flags = j->pkt->flags & AV_PKT_FLAG_KEY;
            rc = j->emit(j->arg, out);
            if (rc < 0)
                s_err(j->err, j->errlen, "cannot write the re-encoded frames");
        } else {
            s_err(j->err, j->errlen, len == 0 ? "the re-encoder made an empty frame" : "out of memory");
        }
        av_packet_free(&out);
        av_packet_unref(j->pkt);
        if (rc < 0)
            return -1;
    }
}

/* A decoded frame: re-encoded when it lies in [lo, hi). 0 or -1. */
static int s_frame(s_job_t *j, AVFrame *f)
{
    int64_t pts = f->best_effort_timestamp;
    if (pts == AV_NOPTS_VALUE || pts < j->lo || pts >= j->hi)
        return 0;
    if (f->width != j->self->width || f->height != j->self->height || f->format != j->self->format) {
        s_err(j->err, j->errlen, "the video changes size or format at a cut");
        return -1;
    }
    if (j->enc == NULL) {
        if ((j->enc = s_encoder(j->self)) == NULL || j->enc->extradata_size != j->self->params_len ||
            memcmp(j->enc->extradata, j->self->params, (size_t)j->self->params_len) != 0) {
            s_err(j->err, j->errlen, "the re-encoder's parameter sets changed");
            return -1;
        }
    }
    f->pts = pts;
    f->pict_type = AV_PICTURE_TYPE_NONE; /* the source's frame types are not ours */
    j->frames++;
    if (avcodec_send_frame(j->enc, f) < 0) {
        s_err(j->err, j->errlen, "the re-encoder refused a frame");
        return -1;
    }
    return s_drain_encoder(j);
}

/* Every frame the decoder has ready. 0 or -1. */
static int s_drain_decoder(s_job_t *j, AVFrame *f)
{
    for (;;) {
        int e = avcodec_receive_frame(j->self->dec, f);
        if (e == AVERROR(EAGAIN) || e == AVERROR_EOF)
            return 0;
        if (e < 0) {
            s_err(j->err, j->errlen, "cannot decode the frames at a cut (corrupt video)");
            return -1;
        }
        int rc = s_frame(j, f);
        av_frame_unref(f);
        if (rc < 0)
            return -1;
    }
}

int vid_recut_gop(vid_recut_t *self, AVPacket *const *gop, int n, int64_t lo, int64_t hi, int64_t dts_delay,
                  vid_recut_emit_fn emit, void *arg, int *frames, char *err, size_t errlen)
{
    s_job_t j = {self, gop, n, lo, hi, dts_delay, emit, arg, NULL, av_packet_alloc(), 0, err, errlen};
    AVFrame *f = av_frame_alloc();
    int rc = -1;
    if (f == NULL || j.pkt == NULL) {
        s_err(err, errlen, "out of memory");
        goto cleanup;
    }
    for (int i = 0; i < n; i++) {
        int e = avcodec_send_packet(self->dec, gop[i]);
        if (e < 0 && e != AVERROR_INVALIDDATA) {
            s_err(err, errlen, "cannot decode the frames at a cut");
            goto cleanup;
        }
        if (s_drain_decoder(&j, f) < 0)
            goto cleanup;
    }
    if (avcodec_send_packet(self->dec, NULL) < 0 || s_drain_decoder(&j, f) < 0)
        goto cleanup;
    if (j.enc != NULL && (avcodec_send_frame(j.enc, NULL) < 0 || s_drain_encoder(&j) < 0))
        goto cleanup;
    rc = 0;
cleanup:
    avcodec_flush_buffers(self->dec); /* ready for the next group */
    avcodec_free_context(&j.enc);
    av_frame_free(&f);
    av_packet_free(&j.pkt);
    *frames = j.frames;
    return rc;
}
