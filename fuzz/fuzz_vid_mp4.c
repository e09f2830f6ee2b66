/*  libFuzzer target for services/video-worker/vid_core over whole source
 *  files: what an origin serves is hostile, and vid_core's own code (sample
 *  table walks, segment planning, the byte budgets, the seek and decode
 *  loops around libavformat and libavcodec) must hold on any bytes.
 *  Each input is a source read through the same range-reader interface
 *  the worker uses: indexed (segments of 2 s), its playlist written, its
 *  first and last segments muxed into a discarding sink, a thumbnail taken
 *  at 1 s and its duration probed.
 *  Besides memory safety (and libFuzzer's time and memory limits, which
 *  catch hangs) it abort()s when a refusal has no reason, when a call
 *  reads outside the source, or when an index has no segment. Seeds: small
 *  real MP4s (H.264+AAC, moov first and last, audio only). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libavutil/log.h>

#include "vid_core.h"

typedef struct {
    const uint8_t *data;
    size_t size;
} s_mem_t;

static int64_t s_read(void *arg, uint8_t *buf, int64_t off, int64_t len)
{
    const s_mem_t *m = arg;
    if (off < 0 || len < 0)
        abort(); /* vid_core asked for something no source has */
    if ((uint64_t)off >= m->size)
        return 0;
    size_t n = m->size - (size_t)off < (size_t)len ? m->size - (size_t)off : (size_t)len;
    memcpy(buf, m->data + off, n);
    return (int64_t)n;
}

static int s_discard(void *arg, const uint8_t *buf, size_t len)
{
    (void)arg, (void)buf, (void)len;
    return 0;
}

static void s_reason(int rc, const char *err)
{
    if (rc != 0 && err[0] == '\0')
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int quiet;
    if (!quiet) {
        av_log_set_level(AV_LOG_QUIET);
        quiet = 1;
    }
    s_mem_t m = {data, size};
    vid_source_t src = {.size = (int64_t)size, .read = s_read, .arg = &m};
    char err[256] = "";
    /* the last byte picks MPEG-TS (fMP4 where the codecs need it) or fMP4 */
    vid_index_t *ix =
        vid_index_new_as(&src, 2.0, size > 0 && (data[size - 1] & 1) ? VID_SEG_FMP4 : VID_SEG_TS, err, sizeof(err));
    s_reason(ix == NULL, err);
    if (ix != NULL) {
        int n = vid_index_segments(ix);
        if (n < 1)
            abort();
        char *m3u8 = NULL;
        size_t len = 0;
        if (vid_hls_playlist(ix, NULL, &m3u8, &len) != 0)
            abort();
        free(m3u8);
        err[0] = '\0';
        if (vid_index_format(ix) == VID_SEG_FMP4)
            s_reason(vid_hls_init(ix, &src, s_discard, NULL, err, sizeof(err)), err);
        err[0] = '\0';
        s_reason(vid_hls_segment(ix, &src, 0, s_discard, NULL, err, sizeof(err)), err);
        err[0] = '\0';
        s_reason(vid_hls_segment(ix, &src, n - 1, s_discard, NULL, err, sizeof(err)), err);
        vid_index_destroy(&ix);
    }
    vid_thumb_opts_t o = {.time = 1.0, .width = 64, .height = 64, .format = VID_IMG_JPEG};
    vid_thumb_t t;
    err[0] = '\0';
    int rc = vid_thumbnail(&src, &o, &t, err, sizeof(err));
    s_reason(rc, err);
    if (rc == 0)
        free(t.data);
    vid_probe_t p;
    err[0] = '\0';
    s_reason(vid_probe(&src, &p, err, sizeof(err)), err);
    return 0;
}
