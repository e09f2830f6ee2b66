/*  Unit tests for services/video-worker/vid_core: the media are made at
 *  test time with the ffmpeg CLI into a temporary directory (a faststart
 *  MP4, the same samples with the moov at the end, an audio-only M4A, an
 *  MP4 with keyframes at irregular times), read through a file-backed
 *  source that counts the bytes it hands out, and the segments produced
 *  are checked with ffprobe, alone and concatenated. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fcntl.h>
#include <inttypes.h>
#include <libavutil/log.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "vid_core.h"
#include "vid_recut.h"
#include "unit_run.h"

static char s_dir[64]; /* the temporary directory of the media */

/* ---- helpers ------------------------------------------------------------------------------ */

/* A source backed by a file (or its first `size` bytes), counting reads. */
typedef struct {
    int fd;
    int64_t bytes; /* handed out */
    int reads;
    vid_source_t src;
} s_file_t;

static int64_t s_file_read(void *arg, uint8_t *buf, int64_t off, int64_t len)
{
    s_file_t *f = arg;
    if (off < 0 || off > f->src.size)
        return -1;
    if (len > f->src.size - off)
        len = f->src.size - off;
    ssize_t n = pread(f->fd, buf, (size_t)len, off);
    if (n < 0)
        return -1;
    f->bytes += n;
    f->reads++;
    return n;
}

/* Opens dir/name as a source, cut to `size` bytes when size >= 0. */
static void s_file_open(s_file_t *f, const char *name, int64_t size)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/%s", s_dir, name);
    memset(f, 0, sizeof(*f));
    f->fd = open(path, O_RDONLY);
    assert_true(f->fd >= 0);
    struct stat st;
    assert_int_equal(fstat(f->fd, &st), 0);
    f->src = (vid_source_t){.size = size >= 0 ? size : st.st_size, .read = s_file_read, .arg = f};
}

static void s_file_close(s_file_t *f)
{
    close(f->fd);
}

/* A shell command in the media directory (unit_run.h). */
#define s_run(...) unit_run(s_dir, __VA_ARGS__)

static vid_index_t *s_index(s_file_t *f, const char *name, double target)
{
    char err[256] = "";
    s_file_open(f, name, -1);
    vid_index_t *ix = vid_index_new(&f->src, target, err, sizeof(err));
    if (ix == NULL)
        fprintf(stderr, "%s: %s\n", name, err);
    assert_non_null(ix);
    return ix;
}

static char *s_playlist(const vid_index_t *ix)
{
    char *m3u8 = NULL;
    size_t len = 0;
    assert_int_equal(vid_hls_playlist(ix, NULL, &m3u8, &len), 0);
    assert_int_equal(strlen(m3u8), len);
    return m3u8;
}

/* The EXTINFs of a playlist in milliseconds; returns their count and
 * checks the fixed lines and the TARGETDURATION rule on the way. */
static int s_extinfs(const char *m3u8, int64_t *ms, int max, int *target)
{
    int n = 0;
    int64_t longest = 0;
    *target = -1;
    assert_true(strncmp(m3u8, "#EXTM3U\n#EXT-X-VERSION:3\n", 25) == 0);
    assert_non_null(strstr(m3u8, "\n#EXT-X-MEDIA-SEQUENCE:0\n"));
    assert_non_null(strstr(m3u8, "\n#EXT-X-PLAYLIST-TYPE:VOD\n"));
    const char *end = strstr(m3u8, "\n#EXT-X-ENDLIST\n");
    assert_non_null(end);
    assert_string_equal(end, "\n#EXT-X-ENDLIST\n");
    for (const char *p = m3u8; (p = strchr(p, '\n')) != NULL; p++) {
        unsigned s, f;
        char uri[64];
        if (sscanf(p + 1, "#EXT-X-TARGETDURATION:%d", target) == 1)
            continue;
        if (sscanf(p + 1, "#EXTINF:%u.%3u,\n%63s", &s, &f, uri) != 3)
            continue;
        char want[64];
        snprintf(want, sizeof(want), "seg-%d.ts", n);
        assert_string_equal(uri, want);
        assert_true(n < max);
        ms[n] = s * 1000 + f;
        longest = ms[n] > longest ? ms[n] : longest;
        n++;
    }
    assert_int_equal(*target, (longest + 999) / 1000);
    return n;
}

typedef struct {
    FILE *f;
    size_t bytes;
    size_t max_chunk;
    int fail_after; /* refuse writes after this many bytes; -1 never */
} s_sink_t;

static int s_sink(void *arg, const uint8_t *buf, size_t len)
{
    s_sink_t *s = arg;
    if (s->fail_after >= 0 && s->bytes + len > (size_t)s->fail_after)
        return -1;
    s->bytes += len;
    s->max_chunk = len > s->max_chunk ? len : s->max_chunk;
    return s->f != NULL && fwrite(buf, 1, len, s->f) != len ? -1 : 0;
}

/* Writes segment n of ix to dir/<prefix>-n.ts; returns the source bytes it read. */
static int64_t s_segment(const vid_index_t *ix, const char *name, int n, const char *prefix)
{
    char path[256], err[256] = "";
    snprintf(path, sizeof(path), "%s/%s-%d.ts", s_dir, prefix, n);
    s_file_t f;
    s_file_open(&f, name, -1);
    s_sink_t sink = {.f = fopen(path, "wb"), .fail_after = -1};
    assert_non_null(sink.f);
    int rc = vid_hls_segment(ix, &f.src, n, s_sink, &sink, err, sizeof(err));
    if (rc != 0)
        fprintf(stderr, "segment %d of %s: %s\n", n, name, err);
    assert_int_equal(rc, 0);
    assert_int_equal(fclose(sink.f), 0);
    assert_true(sink.bytes > 0 && sink.max_chunk <= 32 << 10);
    s_file_close(&f);
    return f.bytes;
}

/* ---- fixtures ---------------------------------------------------------------------------- */

static int s_setup(void **state)
{
    (void)state;
    av_log_set_level(getenv("AVLOG") ? AV_LOG_ERROR : AV_LOG_QUIET);
    strcpy(s_dir, "/tmp/test_vid_core.XXXXXX");
    if (mkdtemp(s_dir) == NULL)
        return -1;
    char cmd[4096];
    /* veryfast keeps B-frames (so decode and presentation times differ), unlike ultrafast. */
    snprintf(cmd, sizeof(cmd),
             "cd '%s' && "
             "ffmpeg -nostdin -v error -f lavfi -i testsrc2=size=320x240:rate=25 -f lavfi -i sine=frequency=440 -t 30 "
             "  -c:v libx264 -preset veryfast -g 50 -c:a aac -movflags +faststart fs.mp4 && "
             "ffmpeg -nostdin -v error -i fs.mp4 -c copy end.mp4 && "
             "ffmpeg -nostdin -v error -f lavfi -i sine=frequency=440 -t 30 -c:a aac a.m4a && "
             "ffmpeg -nostdin -v error -f lavfi -i testsrc2=size=320x240:rate=25 -f lavfi -i sine=frequency=440 -t 30 "
             "  -c:v libx264 -preset veryfast -g 1000 -keyint_min 1 -sc_threshold 0 "
             "  -force_key_frames 0,3.2,4,11.52,12,13,25.4 -c:a aac -movflags +faststart vg.mp4 && "
             "ffmpeg -nostdin -v error -f lavfi -i testsrc2=size=160x120:rate=25 -t 1 -c:v libx265 -preset ultrafast "
             "  -x265-params log-level=error hevc.mp4 && "
             "ffmpeg -nostdin -v error -f lavfi -i testsrc2=size=160x120:rate=25 -f lavfi -i sine=frequency=440 -t 6 "
             "  -c:v libx265 -preset ultrafast -x265-params log-level=error:keyint=25:min-keyint=25:bframes=3 -c:a aac "
             "  -movflags +faststart hevc2.mp4 && "
             "ffmpeg -nostdin -v error -f lavfi -i testsrc2=size=160x120:rate=25 -t 1 -c:v mpeg4 mp4v.mp4 && "
             "ffmpeg -nostdin -v error -f lavfi -i testsrc2=size=320x240:rate=25 -f lavfi -i sine=frequency=440 -t 30 "
             "  -c:v libx265 -preset veryfast -x265-params "
             "  log-level=error:keyint=50:min-keyint=50:scenecut=0:open-gop=0:bframes=3 -c:a aac "
             "  -movflags +faststart hevcgop.mp4 && "
             "ffmpeg -nostdin -v error -f lavfi -i testsrc2=size=320x240:rate=25 -t 30 "
             "  -c:v libx265 -preset veryfast -x265-params log-level=error:keyint=50:min-keyint=50:scenecut=0 "
             "  -movflags +faststart hevcopen.mp4 && "
             "ffmpeg -nostdin -v error -f lavfi -i testsrc2=size=160x120:rate=25 -t 4 -pix_fmt yuv420p10le "
             "  -c:v libx265 -preset ultrafast -x265-params log-level=error:keyint=25:open-gop=0:bframes=3 "
             "  -tag:v hvc1 -movflags +faststart hevc10.mp4 && "
             "ffmpeg -nostdin -v error -f lavfi -i testsrc2=size=320x240:rate=25 -t 30 -c:v libx264 -preset veryfast "
             "  -g 50 -keyint_min 50 -sc_threshold 0 -bf 3 -x264-params open-gop=1 -movflags +faststart avcopen.mp4 && "
             "ffmpeg -nostdin -v error -f lavfi -i testsrc2=size=320x240:rate=25 -f lavfi -i sine=frequency=440 -t 30 "
             "  -c:v libx264 -preset veryfast -g 50 -c:a aac -movflags +frag_keyframe+empty_moov+default_base_moof "
             "frag.mp4 && "
             "ffmpeg -nostdin -v error -i frag.mp4 -c copy -movflags "
             "+frag_keyframe+empty_moov+default_base_moof+global_sidx "
             "  fragsidx.mp4 && "
             "printf 'GIF89a not a video at all, just some text to sniff' > text.mp4",
             s_dir);
    return system(cmd) == 0 ? 0 : -1;
}

static int s_teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", s_dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* ---- tests ----------------------------------------------------------------------------------- */

/* The playlist of a 30 s file with a keyframe every 2 s: three 10 s
 * segments, made from the first 32 KiB of the file. */
static void test_playlist_faststart(void **state)
{
    (void)state;
    s_file_t f;
    vid_index_t *ix = s_index(&f, "fs.mp4", 10);
    fprintf(stderr, "# index_new faststart: %" PRId64 " bytes in %d reads of %" PRId64 "\n", f.bytes, f.reads,
            f.src.size);
    assert_true(f.bytes < 64 << 10);
    assert_true(f.reads <= 2);
    char *m3u8 = s_playlist(ix);
    int64_t ms[16];
    int target;
    int n = s_extinfs(m3u8, ms, 16, &target);
    assert_int_equal(n, 3);
    assert_int_equal(vid_index_segments(ix), 3);
    for (int i = 0; i < n; i++)
        assert_int_equal(ms[i], 10000);
    assert_int_equal(target, 10);
    assert_true(fabs(vid_index_duration(ix) - 30.0) < 0.0005);
    /* ... and the same duration as ffprobe's of the video track */
    char *d = s_run("ffprobe -v error -select_streams v -show_entries stream=duration -of csv=p=0 fs.mp4");
    assert_true(fabs(atof(d) - vid_index_duration(ix)) < 0.0015);
    free(d);
    free(m3u8);
    vid_index_destroy(&ix);
    assert_null(ix);
    s_file_close(&f);
}

/* With the moov at the end, the index costs the moov and about one more
 * read, and is the same index. */
static void test_moov_at_end(void **state)
{
    (void)state;
    s_file_t fs, end;
    vid_index_t *a = s_index(&fs, "fs.mp4", 10), *b = s_index(&end, "end.mp4", 10);
    fprintf(stderr, "# index_new moov-at-end: %" PRId64 " bytes in %d reads (faststart: %" PRId64 " in %d)\n",
            end.bytes, end.reads, fs.bytes, fs.reads);
    assert_true(end.reads <= fs.reads + 2);
    assert_true(end.bytes <= fs.bytes + (32 << 10)); /* this moov is about 26 KiB */
    char *pa = s_playlist(a), *pb = s_playlist(b);
    assert_string_equal(pa, pb);
    free(pa);
    free(pb);
    vid_index_destroy(&a);
    vid_index_destroy(&b);
    s_file_close(&fs);
    s_file_close(&end);
}

/* Keyframes at 0, 3.2, 4, 11.52, 12, 13 and 25.4 s (frame times at 25 fps): each segment ends at
 * the keyframe nearest 10 s after its start, the last at the end. */
static void test_variable_gop(void **state)
{
    (void)state;
    s_file_t f;
    vid_index_t *ix = s_index(&f, "vg.mp4", 10);
    char *m3u8 = s_playlist(ix);
    int64_t ms[16];
    int target;
    assert_int_equal(s_extinfs(m3u8, ms, 16, &target), 3);
    assert_int_equal(ms[0], 11520);
    assert_int_equal(ms[1], 13880);
    assert_int_equal(ms[2], 4600);
    assert_int_equal(target, 14);
    /* A target of 4 s: from 0, 4 (exact); from 4, 11.5 (7.5 s: 3.5 off,
     * 12 is 4 off); from 11.5, 13 (1.5 s: 2.5 off, 12 is 3.5 off); from
     * 13, 25.4 (8.4 off, the end 13 off); then the end. */
    vid_index_t *ix4 = s_index(&f, "vg.mp4", 4);
    free(m3u8);
    m3u8 = s_playlist(ix4);
    int n = s_extinfs(m3u8, ms, 16, &target);
    int64_t want[] = {4000, 7520, 1480, 12400, 4600};
    assert_int_equal(n, 5);
    for (int i = 0; i < n; i++)
        assert_int_equal(ms[i], want[i]);
    free(m3u8);
    vid_index_destroy(&ix);
    vid_index_destroy(&ix4);
    s_file_close(&f);
}

/* Checks ffprobe's packet list (stream_index,pts,dts lines; taken) of the
 * 30 s test stream: per track, timestamps strictly increase by one frame
 * (video, 3600 ticks of 90 kHz at 25 fps, in decode order) or one AAC
 * frame (1024 samples at 44.1 kHz = 2089.8 ticks), with no gap or overlap,
 * and audio and video are on one timeline. */
static void s_check_timeline(char *pk)
{
    long long last[2] = {-1, -1}, first[2] = {-1, -1};
    int count[2] = {0, 0};
    char *save = NULL;
    for (char *line = strtok_r(pk, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
        int st;
        long long pts, dts;
        assert_int_equal(sscanf(line, "%d,%lld,%lld", &st, &pts, &dts), 3);
        assert_true(st == 0 || st == 1);
        long long t = st == 0 ? dts : pts;
        if (last[st] >= 0) {
            long long step = t - last[st];
            if (st == 0)
                assert_int_equal(step, 3600);
            else if (step < 2089 || step > 2090)
                fail_msg("audio step %lld at %s (after %lld)", step, line, last[st]);
        } else {
            first[st] = t;
        }
        last[st] = t;
        count[st]++;
    }
    free(pk);
    assert_int_equal(count[0], 750);
    assert_int_equal(count[1], 1293);
    /* video starts at the offset (less its decode delay), audio with it,
     * and both span the same 30 s */
    assert_true(first[0] >= 10 * 90000 - 2 * 3600 && first[0] <= 10 * 90000);
    assert_true(llabs(first[1] - 10 * 90000) <=
                1024 * 90000 / 44100 + 1); /* the AAC priming frame starts 23 ms early */
    assert_true(llabs((last[0] + 3600 - first[0]) - 30 * 90000) <= 1);
    assert_true(llabs((last[1] + 2090 - first[1]) - (1293 * 1024LL * 90000 / 44100)) <= 2);
}

/* Every segment of a file is H.264 + AAC starting on a keyframe, reads
 * little more than its samples, and the segments concatenated are one
 * stream of the source's duration without gaps or overlaps. */
static void s_check_segments_as(const char *name, const char *prefix, bool view, bool strict)
{
    s_file_t f;
    vid_index_t *ix = s_index(&f, name, 10);
    int64_t header = f.bytes;
    s_file_close(&f);
    int n = vid_index_segments(ix);
    for (int i = 0; i < n; i++) {
        vid_segment_info_t info;
        assert_int_equal(vid_index_segment_info(ix, i, &info), 0);
        int64_t bytes = s_segment(ix, name, i, prefix);
        fprintf(stderr, "# %s segment %d: read %" PRId64 " bytes, its samples %" PRId64 " in a span of %" PRId64 "\n",
                name, i, bytes, info.sample_bytes, info.pos_hi - info.pos_lo);
        assert_true(info.sample_bytes > 0);
        /* the header again, its samples' span (one read), and at most
         * four 32 KiB reads outside it: per track, a packet before it
         * (the demuxer seeks to a time) and one past its end (how it
         * knows the segment ended). A fragmented source's segment reads
         * its view: the header, and its fragments in one read (their
         * moofs and mdats: the span and a few KiB), whatever its place. */
        if (view)
            assert_true(bytes <= info.pos_hi - info.pos_lo + (16 << 10));
        else
            assert_true(bytes <= info.pos_hi - info.pos_lo + header + (128 << 10));
        char *codecs = s_run("ffprobe -v error -show_entries stream=codec_name -of csv=p=0 %s-%d.ts | grep . | sort -u",
                             prefix, i);
        assert_string_equal(codecs, "aac\nh264\n");
        free(codecs);
        char *first = s_run("ffprobe -v error -select_streams v -show_entries packet=flags -of csv=p=0 %s-%d.ts "
                            "| head -n 1",
                            prefix, i);
        assert_true(first[0] == 'K');
        free(first);
    }
    assert_int_equal(vid_index_segment_info(ix, n, &(vid_segment_info_t){0}), -1);
    /* A later segment decodes without a word from the decoders: its H.264
     * is Annex B with the parameter sets in band (h264_mp4toannexb ran),
     * its AAC has ADTS headers. */
    char *log = s_run("ffmpeg -nostdin -v error -i %s-1.ts -f null - 2>&1", prefix);
    assert_string_equal(log, "");
    free(log);

    /* The concatenation, and the playlist as a player's demuxer reads it. */
    char *count = s_run("cat %s-*.ts > %s-all.ts && ls %s-*.ts | wc -l", prefix, prefix, prefix);
    assert_int_equal(atoi(count), n + 1);
    free(count);
    if (strict) {
        s_check_timeline(
            s_run("ffprobe -v error -show_entries packet=stream_index,pts,dts -of csv=p=0 %s-all.ts", prefix));
    } else { /* a timeline of its own (ffmpeg's fragmented output shifts its first audio): every packet, once */
        char *a = s_run(
            "ffprobe -v error -show_entries packet=stream_index -of csv=p=0 %s | cut -d, -f1 | grep . | sort | uniq -c",
            name);
        char *b = s_run("ffprobe -v error -show_entries packet=stream_index -of csv=p=0 %s-all.ts | cut -d, -f1 | grep "
                        ". | sort | uniq -c",
                        prefix);
        assert_string_equal(a, b);
        free(a);
        free(b);
    }
    char pattern[64], *m3u8 = NULL;
    size_t len = 0;
    vid_hls_opts_t o;
    vid_hls_opts_default(&o);
    snprintf(pattern, sizeof(pattern), "%s-%%d.ts", prefix);
    o.segment_uri = pattern;
    assert_int_equal(vid_hls_playlist(ix, &o, &m3u8, &len), 0);
    char path[256];
    snprintf(path, sizeof(path), "%s/%s.m3u8", s_dir, prefix);
    FILE *pl = fopen(path, "w");
    assert_non_null(pl);
    assert_int_equal(fwrite(m3u8, 1, len, pl), len);
    assert_int_equal(fclose(pl), 0);
    free(m3u8);
    if (strict)
        s_check_timeline(
            s_run("ffprobe -v error -show_entries packet=stream_index,pts,dts -of csv=p=0 %s.m3u8", prefix));
    char *dur = s_run("ffprobe -v error -show_entries format=duration -of csv=p=0 %s-all.ts", prefix);
    assert_true(fabs(atof(dur) - 30.0) < 0.1);
    free(dur);
    vid_index_destroy(&ix);
}

static void s_check_segments(const char *name, const char *prefix)
{
    s_check_segments_as(name, prefix, false, true);
}

static void test_segments_faststart(void **state)
{
    (void)state;
    s_check_segments("fs.mp4", "fs");
}

static void test_segments_moov_at_end(void **state)
{
    (void)state;
    s_check_segments("end.mp4", "end");
}

/* A fragmented MP4 (its samples in moofs, as ffmpeg and refract's own
 * streamed transcodes write it), with and without a global sidx before
 * its first moof (libavformat would then read the moofs only as it
 * plays): the same playlist of three 10 s segments, and segments that
 * hold every packet of the source once. */
static void test_segments_fragmented(void **state)
{
    (void)state;
    s_file_t fr, fx;
    vid_index_t *b = s_index(&fr, "frag.mp4", 10), *c = s_index(&fx, "fragsidx.mp4", 10);
    fprintf(stderr,
            "# index_new fragmented: %" PRId64 " bytes in %d reads of %" PRId64 " (with a sidx: %" PRId64 " in %d)\n",
            fr.bytes, fr.reads, fr.src.size, fx.bytes, fx.reads);
    char *pb = s_playlist(b), *pc = s_playlist(c);
    assert_string_equal(pb, pc);
    /* the views survive a save and a load */
    uint8_t *saved = NULL, *again = NULL;
    size_t len = 0, len2 = 0;
    char err[256];
    assert_int_equal(vid_index_save(b, &saved, &len), 0);
    vid_index_t *l = vid_index_load(saved, len, err, sizeof(err));
    assert_non_null(l);
    assert_int_equal(vid_index_save(l, &again, &len2), 0);
    assert_int_equal(len, len2);
    assert_memory_equal(saved, again, len);
    free(saved);
    free(again);
    vid_index_destroy(&l);
    int64_t ms[16];
    int target;
    assert_int_equal(s_extinfs(pb, ms, 16, &target), 3);
    for (int i = 0; i < 3; i++)
        assert_true(llabs(ms[i] - 10000) <= 40);
    free(pb);
    free(pc);
    vid_index_destroy(&b);
    vid_index_destroy(&c);
    s_file_close(&fr);
    s_file_close(&fx);
    s_check_segments_as("frag.mp4", "frag", true, false);
    s_check_segments_as("fragsidx.mp4", "fragsidx", true, false);
}

/* An M4A is cut on audio packets at the target (the first at or past it). */
static void test_audio_only(void **state)
{
    (void)state;
    s_file_t f;
    vid_index_t *ix = s_index(&f, "a.m4a", 10);
    char *m3u8 = s_playlist(ix);
    int64_t ms[16];
    int target;
    int n = s_extinfs(m3u8, ms, 16, &target);
    assert_int_equal(n, 3);
    int64_t sum = 0;
    for (int i = 0; i < n; i++) {
        if (i < n - 1)
            assert_true(ms[i] >= 10000 && ms[i] < 10000 + 24); /* within one AAC frame past */
        sum += ms[i];
    }
    assert_int_equal(sum, 30000);
    assert_int_equal(target, 11);
    for (int i = 0; i < n; i++)
        s_segment(ix, "a.m4a", i, "a");
    char *codecs = s_run("ffprobe -v error -show_entries stream=codec_name -of csv=p=0 a-1.ts | grep . | sort -u");
    assert_string_equal(codecs, "aac\n");
    free(codecs);
    char *dur =
        s_run("cat a-0.ts a-1.ts a-2.ts > aa.ts && ffprobe -v error -show_entries format=duration -of csv=p=0 aa.ts");
    assert_true(fabs(atof(dur) - 30.0) < 0.1);
    free(dur);
    free(m3u8);
    vid_index_destroy(&ix);
    s_file_close(&f);
}

/* Save/load round-trips; any truncation, any flipped byte, and fields
 * that are out of bounds under a valid checksum are refused. */
static void test_index_save_load(void **state)
{
    (void)state;
    s_file_t f;
    char err[256];
    vid_index_t *ix = s_index(&f, "vg.mp4", 10);
    uint8_t *buf = NULL, *buf2 = NULL;
    size_t len = 0, len2 = 0;
    assert_int_equal(vid_index_save(ix, &buf, &len), 0);
    vid_index_t *back = vid_index_load(buf, len, err, sizeof(err));
    assert_non_null(back);
    assert_int_equal(vid_index_save(back, &buf2, &len2), 0);
    assert_int_equal(len, len2);
    assert_memory_equal(buf, buf2, len);
    char *p1 = s_playlist(ix), *p2 = s_playlist(back);
    assert_string_equal(p1, p2);
    free(p1);
    free(p2);
    vid_index_destroy(&back);
    /* the loaded index makes the same segment */
    back = vid_index_load(buf, len, err, sizeof(err));
    s_segment(back, "vg.mp4", 1, "vgl");
    s_segment(ix, "vg.mp4", 1, "vgn");
    free(s_run("cmp vgl-1.ts vgn-1.ts"));
    vid_index_destroy(&back);

    for (size_t cut = 0; cut < len; cut++)
        assert_null(vid_index_load(buf, cut, err, sizeof(err)));
    for (size_t i = 0; i < len; i++) {
        buf[i] ^= 0x10;
        assert_null(vid_index_load(buf, len, err, sizeof(err)));
        buf[i] ^= 0x10;
    }
    /* Fields past their bounds, with the checksum fixed up: the segment
     * count (offset 76), a track number (16), the time base (32, 36),
     * the second segment's start (80 + 56) equal to the first's, the
     * segment format (64), the first segment's view (80 + 40) with no
     * header end, the header's end (68) past the source. */
    struct {
        size_t off;
        uint32_t val;
    } bad[] = {{76, 0}, {76, 1000000}, {76, 2}, {16, 99}, {32, 0},
               {36, 0}, {136, 0},      {64, 2}, {120, 5}, {68, 0x7fffffff}};
    for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
        uint8_t *c = malloc(len);
        memcpy(c, buf, len);
        for (int b = 0; b < 4; b++)
            c[bad[k].off + b] = (uint8_t)(bad[k].val >> (8 * b));
        if (bad[k].off == 136)
            memcpy(c + 136, c + 80, 8);
        uint32_t crc = (uint32_t)crc32(0, c, (uInt)(len - 4));
        for (int b = 0; b < 4; b++)
            c[len - 4 + b] = (uint8_t)(crc >> (8 * b));
        err[0] = '\0';
        assert_null(vid_index_load(c, len, err, sizeof(err)));
        assert_true(err[0] != '\0');
        free(c);
    }
    free(buf);
    free(buf2);
    vid_index_destroy(&ix);
    s_file_close(&f);
}

/* Truncated files, non-MP4 input and other codecs are one-line errors. */
/* HEVC (open groups of pictures, B-frames) and AAC become fMP4: an init
 * section, then one fragment per segment whose times are the source's +
 * VID_TS_OFFSET_S, so init + the segments in any order of making play as
 * the source did. H.264 asked as fMP4 is fMP4 too; an MPEG-TS index has
 * no init section. */
static void test_fmp4_segments(void **state)
{
    (void)state;
    s_file_t f;
    char err[256] = "";
    vid_index_t *ix = s_index(&f, "hevc2.mp4", 2);
    assert_int_equal(vid_index_format(ix), VID_SEG_FMP4);
    assert_int_equal(vid_index_segments(ix), 3);
    vid_hls_opts_t o;
    vid_hls_opts_default(&o);
    o.segment_uri = "seg-%d.m4s";
    char *m3u8 = NULL;
    size_t len = 0;
    assert_int_equal(vid_hls_playlist(ix, &o, &m3u8, &len), 0);
    assert_non_null(strstr(m3u8, "#EXT-X-VERSION:6\n"));
    assert_non_null(strstr(m3u8, "#EXT-X-MAP:URI=\"init.mp4\"\n#EXTINF:"));
    assert_non_null(strstr(m3u8, "\nseg-2.m4s\n"));
    free(m3u8);
    o.init_uri = "in\"it.mp4";
    assert_int_equal(vid_hls_playlist(ix, &o, &m3u8, &len), -1);

    char path[300];
    snprintf(path, sizeof(path), "%s/fm-init.mp4", s_dir);
    s_sink_t sink = {.f = fopen(path, "wb"), .fail_after = -1};
    int64_t before = f.bytes;
    assert_int_equal(vid_hls_init(ix, &f.src, s_sink, &sink, err, sizeof(err)), 0);
    assert_int_equal(fclose(sink.f), 0);
    fprintf(stderr, "# fMP4 init section: read %" PRId64 " of %" PRId64 " bytes\n", f.bytes - before, f.src.size);
    assert_true(f.bytes - before <= 32 << 10); /* the header only: one read */
    for (int n = 2; n >= 0; n--) {             /* made last first: each stands alone */
        int64_t read = s_segment(ix, "hevc2.mp4", n, "fm");
        fprintf(stderr, "# fMP4 segment %d read %" PRId64 " bytes\n", n, read);
    }
    char *all = s_run("cat fm-init.mp4 fm-0.ts fm-1.ts fm-2.ts > fm-all.mp4 && "
                      "ffprobe -v error -show_entries stream=codec_name,codec_tag_string -of csv=p=0 fm-all.mp4");
    assert_string_equal(all, "hevc,hvc1\naac,mp4a\n");
    free(all);
    /* every frame, on the source's times + 10 s, 40 ms apart */
    char *src = s_run("ffprobe -v error -select_streams v -show_entries frame=pts_time -of csv=p=0 hevc2.mp4 | "
                      "awk -F, '$1 != \"\" {printf \"%%.2f\\n\", $1 + 10}' | sort -n | md5sum");
    char *out = s_run("ffprobe -v error -select_streams v -show_entries frame=pts_time -of csv=p=0 fm-all.mp4 | "
                      "awk -F, '$1 != \"\" {printf \"%%.2f\\n\", $1}' | sort -n | md5sum");
    assert_string_equal(src, out);
    free(src);
    free(out);
    char *frames = s_run("ffprobe -v error -select_streams v -count_frames -show_entries stream=nb_read_frames "
                         "-of csv=p=0 fm-all.mp4");
    assert_string_equal(frames, "150\n");
    free(frames);
    char *log = s_run("ffmpeg -nostdin -v error -i fm-all.mp4 -f null - 2>&1");
    assert_string_equal(log, "");
    free(log);
    /* saved and loaded, it is still fMP4 */
    uint8_t *buf = NULL;
    assert_int_equal(vid_index_save(ix, &buf, &len), 0);
    vid_index_t *back = vid_index_load(buf, len, err, sizeof(err));
    assert_non_null(back);
    assert_int_equal(vid_index_format(back), VID_SEG_FMP4);
    vid_index_destroy(&back);
    free(buf);
    vid_index_destroy(&ix);
    s_file_close(&f);

    /* H.264/AAC: MPEG-TS unless fMP4 is asked for */
    ix = s_index(&f, "fs.mp4", 10);
    assert_int_equal(vid_index_format(ix), VID_SEG_TS);
    sink = (s_sink_t){.fail_after = -1};
    assert_int_equal(vid_hls_init(ix, &f.src, s_sink, &sink, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "no init section"));
    vid_index_destroy(&ix);
    ix = vid_index_new_as(&f.src, 10, VID_SEG_FMP4, err, sizeof(err));
    assert_non_null(ix);
    assert_int_equal(vid_index_format(ix), VID_SEG_FMP4);
    vid_index_destroy(&ix);
    s_file_close(&f);
}

static void test_rejects(void **state)
{
    (void)state;
    struct {
        const char *name;
        double part;  /* of the file kept, from its start... */
        int64_t less; /* ...less this many bytes */
        const char *want;
    } cases[] = {
        {"fs.mp4", 0.5, 0, "truncated"},                     /* moov whole, mdat cut */
        {"fs.mp4", 0, -10000, "cannot read the MP4 header"}, /* moov cut (10000 bytes kept) */
        {"end.mp4", 0.5, 0, "cannot read the MP4 header"},   /* no moov */
        {"end.mp4", 1, 1000, "cannot read the MP4 header"},  /* moov cut in its sample tables */
        {"text.mp4", 1, 0, "not an MP4/MOV file"},
        {"fs.mp4", 0, -7, "not an MP4/MOV file"},
        {"mp4v.mp4", 1, 0, "unsupported video codec mpeg4"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        s_file_t f;
        char err[256] = "";
        s_file_open(&f, cases[i].name, -1);
        f.src.size = (int64_t)((double)f.src.size * cases[i].part) - cases[i].less;
        vid_index_t *ix = vid_index_new(&f.src, 10, err, sizeof(err));
        if (ix != NULL || strstr(err, cases[i].want) == NULL)
            fprintf(stderr, "%s at %lld: %s\n", cases[i].name, (long long)f.src.size, err);
        assert_null(ix);
        assert_non_null(strstr(err, cases[i].want));
        assert_null(strchr(err, '\n'));
        s_file_close(&f);
    }
    s_file_t f;
    char err[256] = "";
    s_file_open(&f, "fs.mp4", -1);
    assert_null(vid_index_new(&f.src, 0, err, sizeof(err)));
    assert_null(vid_index_new(&f.src, NAN, err, sizeof(err)));
    s_file_close(&f);
}

/* A source in memory (for corrupting bytes without writing files). */
typedef struct {
    uint8_t *data;
    int64_t size;
    int64_t bytes;
} s_mem_t;

static int64_t s_mem_read(void *arg, uint8_t *buf, int64_t off, int64_t len)
{
    s_mem_t *m = arg;
    assert_true(off >= 0 && len >= 0 && off + len <= m->size); /* vid_core never asks past the end */
    memcpy(buf, m->data + off, (size_t)len);
    m->bytes += len;
    return len;
}

/* A fragmented MP4 past 4 GiB, made up: frag.mp4 with a 5 GiB 'free'
 * box (64-bit size) between its moov and its first moof, read as zeros
 * without being held anywhere. */
typedef struct {
    s_mem_t file;
    int64_t split; /* where the moov ends and the gap starts */
    int64_t gap;
    int64_t bytes, reads;
} s_big_t;

static int64_t s_big_read(void *arg, uint8_t *buf, int64_t off, int64_t len)
{
    s_big_t *b = arg;
    assert_true(off >= 0 && len >= 0 && off + len <= b->file.size + b->gap);
    const uint8_t head[16] = {0,
                              0,
                              0,
                              1,
                              'f',
                              'r',
                              'e',
                              'e',
                              (uint8_t)(b->gap >> 56),
                              (uint8_t)(b->gap >> 48),
                              (uint8_t)(b->gap >> 40),
                              (uint8_t)(b->gap >> 32),
                              (uint8_t)(b->gap >> 24),
                              (uint8_t)(b->gap >> 16),
                              (uint8_t)(b->gap >> 8),
                              (uint8_t)b->gap};
    for (int64_t i = 0; i < len; i++) {
        int64_t at = off + i;
        buf[i] = at < b->split            ? b->file.data[at]
                 : at < b->split + 16     ? head[at - b->split]
                 : at < b->split + b->gap ? 0
                                          : b->file.data[at - b->gap];
    }
    b->bytes += len;
    b->reads++;
    return len;
}

static void test_fragmented_past_4gib(void **state)
{
    (void)state;
    s_file_t f;
    s_file_open(&f, "frag.mp4", -1);
    s_big_t b = {.file = {.data = malloc((size_t)f.src.size), .size = f.src.size}, .gap = 5LL << 30};
    assert_int_equal(s_file_read(&f, b.file.data, 0, f.src.size), f.src.size);
    for (int64_t off = 0; off + 8 <= b.file.size;) { /* the moov's end */
        const uint8_t *h = b.file.data + off;
        int64_t size = (int64_t)h[0] << 24 | h[1] << 16 | h[2] << 8 | h[3];
        off += size;
        if (memcmp(h + 4, "moov", 4) == 0) {
            b.split = off;
            break;
        }
    }
    assert_true(b.split > 0);
    vid_source_t src = {.size = b.file.size + b.gap, .read = s_big_read, .arg = &b};
    char err[256] = "";
    vid_index_t *ix = vid_index_new(&src, 10, err, sizeof(err));
    if (ix == NULL)
        fprintf(stderr, "index: %s\n", err);
    assert_non_null(ix);
    assert_int_equal(vid_index_segments(ix), 3);
    fprintf(stderr, "# fragmented past 4 GiB: index read %" PRId64 " bytes in %" PRId64 " reads\n", b.bytes, b.reads);
    assert_true(b.bytes < 2 << 20);
    for (int n = 0; n < 3; n++) {
        vid_segment_info_t info;
        assert_int_equal(vid_index_segment_info(ix, n, &info), 0);
        assert_true(info.pos_lo > 4LL << 30);
        s_sink_t sink = {.f = fopen("/dev/null", "wb"), .fail_after = -1};
        b.bytes = 0;
        int rc = vid_hls_segment(ix, &src, n, s_sink, &sink, err, sizeof(err));
        if (rc != 0)
            fprintf(stderr, "segment %d: %s\n", n, err);
        assert_int_equal(rc, 0);
        fclose(sink.f);
        fprintf(stderr, "# fragmented past 4 GiB: segment %d read %" PRId64 " bytes for a span of %" PRId64 "\n", n,
                b.bytes, info.pos_hi - info.pos_lo);
        assert_true(sink.bytes > 100000);
        assert_true(b.bytes <= info.pos_hi - info.pos_lo + (16 << 10)); /* its view: no gap read */
    }
    vid_index_destroy(&ix);
    free(b.file.data);
    s_file_close(&f);
}

/* Corrupt headers (one byte of the ftyp/moov changed at a time, 400
 * times) give a result or a one-line error, never a crash (the ASan build
 * runs this too), a hang, or a segment read far past its samples. */
static void test_corrupt_moov(void **state)
{
    (void)state;
    s_file_t f;
    s_file_open(&f, "fs.mp4", -1);
    s_mem_t m = {.data = malloc((size_t)f.src.size), .size = f.src.size};
    assert_int_equal(s_file_read(&f, m.data, 0, f.src.size), f.src.size);
    vid_source_t src = {.size = f.src.size, .read = s_mem_read, .arg = &m};
    uint32_t seed = 12345;
    int ok = 0, failed = 0;
    for (int i = 0; i < 400; i++) {
        seed = seed * 1103515245u + 12345u;
        size_t off = (seed >> 8) % 26000; /* the moov of fs.mp4 ends near 26400 */
        uint8_t was = m.data[off];
        m.data[off] = (uint8_t)(seed >> 24) == was ? (uint8_t)~was : (uint8_t)(seed >> 24);
        char err[256] = "";
        vid_index_t *ix = vid_index_new(&src, 10, err, sizeof(err));
        if (ix == NULL) {
            assert_true(err[0] != '\0');
            assert_null(strchr(err, '\n'));
            failed++;
        } else {
            vid_segment_info_t info;
            assert_int_equal(vid_index_segment_info(ix, 0, &info), 0);
            s_sink_t sink = {.fail_after = -1};
            m.bytes = 0;
            if (vid_hls_segment(ix, &src, 0, s_sink, &sink, err, sizeof(err)) != 0)
                assert_true(err[0] != '\0');
            assert_true(m.bytes <= (VID_MAX_HEADER_BYTES) + (info.pos_hi - info.pos_lo) + VID_READ_SLACK + (64 << 10));
            vid_index_destroy(&ix);
            ok++;
        }
        m.data[off] = was;
    }
    fprintf(stderr, "# corrupt moov: %d indexed, %d refused\n", ok, failed);
    assert_true(failed > 0);
    free(m.data);
    s_file_close(&f);
}

/* A segment refuses a source that is not the indexed one, a segment
 * number out of range, and stops when its sink fails. */
static void test_segment_errors(void **state)
{
    (void)state;
    s_file_t f, other;
    char err[256] = "";
    vid_index_t *ix = s_index(&f, "fs.mp4", 10);
    s_sink_t sink = {.fail_after = -1};
    assert_int_equal(vid_hls_segment(ix, &f.src, 3, s_sink, &sink, err, sizeof(err)), -1);
    assert_int_equal(vid_hls_segment(ix, &f.src, -1, s_sink, &sink, err, sizeof(err)), -1);
    s_file_open(&other, "vg.mp4", -1);
    assert_int_equal(vid_hls_segment(ix, &other.src, 0, s_sink, &sink, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "not the one indexed"));
    /* the same size but other tracks: end.mp4 has the same samples, so
     * that one is accepted and gives the same bytes */
    s_file_close(&other);
    s_file_open(&other, "end.mp4", -1);
    sink = (s_sink_t){.fail_after = -1};
    assert_int_equal(vid_hls_segment(ix, &other.src, 1, s_sink, &sink, err, sizeof(err)), 0);
    s_file_close(&other);
    sink = (s_sink_t){.fail_after = 100000};
    err[0] = '\0';
    assert_int_equal(vid_hls_segment(ix, &f.src, 0, s_sink, &sink, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "sink"));
    vid_index_destroy(&ix);
    s_file_close(&f);
}

/* Playlist options: version, sequence, the URI pattern (one %d only). */
static void test_playlist_options(void **state)
{
    (void)state;
    s_file_t f;
    vid_index_t *ix = s_index(&f, "fs.mp4", 10);
    vid_hls_opts_t o;
    vid_hls_opts_default(&o);
    o.version = 4;
    o.media_sequence = 7;
    o.segment_uri = "v/%d.ts?x=100%%";
    char *m = NULL;
    size_t len;
    assert_int_equal(vid_hls_playlist(ix, &o, &m, &len), 0);
    assert_non_null(strstr(m, "#EXT-X-VERSION:4\n"));
    assert_non_null(strstr(m, "#EXT-X-MEDIA-SEQUENCE:7\n"));
    assert_non_null(strstr(m, "\nv/2.ts?x=100%\n"));
    free(m);
    const char *bad[] = {"seg.ts", "%d-%d.ts", "%s.ts", "/abs/%d.ts", "a\n%d", "%d%"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        o.segment_uri = bad[i];
        m = NULL;
        assert_int_equal(vid_hls_playlist(ix, &o, &m, &len), -1);
        assert_null(m);
    }
    vid_hls_opts_default(&o);
    o.version = 2;
    assert_int_equal(vid_hls_playlist(ix, &o, &m, &len), -1);
    vid_index_destroy(&ix);
    s_file_close(&f);
}

/* ---- trimming ------------------------------------------------------------------------------ */

/* Trims name's ranges (accurate or not) into dir/trim.mp4; returns vid_trim's result. */
static int s_trim(const char *name, const vid_range_t *r, int n, int accurate, vid_trim_info_t *info)
{
    char path[256], err[256] = "";
    snprintf(path, sizeof(path), "%s/trim.mp4", s_dir);
    s_file_t f;
    s_file_open(&f, name, -1);
    int rc = vid_trim(&f.src, r, n, accurate, path, info, err, sizeof(err));
    if (rc != 0)
        fprintf(stderr, "trim of %s: %s\n", name, err);
    s_file_close(&f);
    return rc;
}

/* The frames ffprobe counts in dir/trim.mp4, decoding every one (a frame
 * that does not decode fails the command: -xerror). */
static int s_trim_frames(void)
{
    char *out = s_run("ffmpeg -nostdin -v error -xerror -i trim.mp4 -map 0:v -f framemd5 - | grep -vc '^#'");
    int n = atoi(out);
    free(out);
    return n;
}

/* The cuts of a 30 s, 25 fps video with a keyframe every 2 s from key0
 * (B-frames): on frames, 11-19 s keeps exactly 200 frames and re-encodes
 * the 25 of each partial group; two ranges on keyframes re-encode nothing
 * (100 frames); accurate=0 moves the cuts out to the keyframes around. */
static void s_check_cuts(const char *name, double key0)
{
    vid_trim_info_t info;
    vid_range_t r = {11, 19};
    assert_int_equal(s_trim(name, &r, 1, 1, &info), 0);
    assert_true(info.exact && info.keyframes_why[0] == '\0');
    assert_int_equal(info.recoded, 50);
    assert_true(fabs(info.cut[0].start - 11) < 1e-6 && fabs(info.cut[0].end - 19) < 1e-6);
    assert_int_equal(s_trim_frames(), 200);
    vid_range_t two[2] = {{2 + key0, 4 + key0}, {20 + key0, 22 + key0}};
    assert_int_equal(s_trim(name, two, 2, 1, &info), 0);
    assert_true(info.exact && info.recoded == 0);
    assert_int_equal(s_trim_frames(), 100);
    assert_int_equal(s_trim(name, &r, 1, 0, &info), 0);
    assert_true(!info.exact && info.on_keyframes && info.recoded == 0);
    assert_true(fabs(info.cut[0].start - (10 + key0)) < 1e-6 && fabs(info.cut[0].end - (20 + key0)) < 1e-6);
    assert_int_equal(s_trim_frames(), 250);
}

/* Cut on frames and on keyframes, from a faststart file and from the
 * same with its moov at the end. */
static void test_trim_exact(void **state)
{
    (void)state;
    s_check_cuts("fs.mp4", 0);
    s_check_cuts("end.mp4", 0);
}

/* A fragmented MP4 (samples in moofs; with and without a global sidx)
 * of the same frames as fs.mp4 cuts as fs.mp4 does. Its times are the
 * samples' own (no edit list), so its keyframes are at 0.08 s, 2.08 s…:
 * the B-frames' delay. Before the start times were pinned, the first
 * packet read after the seek set them, and every cut came out counted
 * from there. */
static void test_trim_fragmented(void **state)
{
    (void)state;
    s_check_cuts("frag.mp4", 0.08);
    s_check_cuts("fragsidx.mp4", 0.08);
}

/* Keyframes at irregular times (0, 3.2, 4, 11.52, 12, 13, 25.4): 5-12.5 s
 * re-encodes 5..11.48 (the group from 4) and 12..12.48 (the group from
 * 12), copies the group 11.52-12, and keeps 188 frames (5.00 to 12.48). */
static void test_trim_exact_irregular_groups(void **state)
{
    (void)state;
    vid_trim_info_t info;
    vid_range_t r = {5, 12.5};
    assert_int_equal(s_trim("vg.mp4", &r, 1, 1, &info), 0);
    assert_true(info.exact);
    assert_int_equal(info.recoded, 163 + 13);
    assert_true(fabs(info.cut[0].start - 5) < 1e-6 && fabs(info.cut[0].end - 12.52) < 1e-6);
    assert_int_equal(s_trim_frames(), 188);
}

/* HEVC (libx265's closed groups with B-frames) cuts on frames as H.264
 * does: the stretches are libx265's, their parameter sets and slices
 * renumbered, and every frame decodes. */
static void test_trim_exact_hevc(void **state)
{
    (void)state;
    s_check_cuts("hevcgop.mp4", 0);
    /* Main 10 (libx265 takes 10-bit frames); its hvc1 tag is kept */
    vid_trim_info_t info;
    vid_range_t r = {1.3, 2.7};
    assert_int_equal(s_trim("hevc10.mp4", &r, 1, 1, &info), 0);
    assert_true(info.exact && info.recoded == 35);
    assert_int_equal(s_trim_frames(), 35);
    char *tag = s_run("ffprobe -v error -show_entries stream=codec_tag_string,pix_fmt -of csv=p=0 trim.mp4");
    assert_string_equal(tag, "hvc1,yuv420p10le\n");
    free(tag);
}

/* An open-GOP source (libx265's default: CRA pictures whose leading
 * pictures refer to the group before; x264's open-gop: B-frames shown
 * before a non-IDR keyframe) is cut on keyframes, and says why; every
 * frame of the result decodes. A range inside one group, away from any
 * leading picture, still cuts on frames. */
static void test_trim_exact_hevc_open_gop(void **state)
{
    (void)state;
    vid_trim_info_t info;
    vid_range_t r = {11, 19};
    assert_int_equal(s_trim("hevcopen.mp4", &r, 1, 1, &info), 0);
    assert_true(!info.exact && info.on_keyframes && info.recoded == 0);
    assert_string_equal(info.keyframes_why, "an open-GOP source (leading pictures refer to the group before)");
    assert_int_equal(s_trim_frames(), (int)llround((info.cut[0].end - info.cut[0].start) * 25));
    assert_int_equal(s_trim("avcopen.mp4", &r, 1, 1, &info), 0); /* x264's open GOPs: B-frames before an I-frame */
    assert_true(!info.exact && info.on_keyframes && info.recoded == 0);
    assert_string_equal(info.keyframes_why, "an open-GOP source (leading pictures refer to the group before)");
    assert_int_equal(s_trim_frames(), (int)llround((info.cut[0].end - info.cut[0].start) * 25));
    vid_range_t in = {0.3, 0.7};
    assert_int_equal(s_trim("hevc.mp4", &in, 1, 1, &info), 0);
    assert_true(info.exact && info.recoded == 10);
    assert_int_equal(s_trim_frames(), 10);
}

/* What cannot be cut on frames is cut on keyframes, and says why: MPEG-4
 * part 2 (no re-encoder for it); audio alone is cut on its packets. */
static void test_trim_exact_falls_back(void **state)
{
    (void)state;
    vid_trim_info_t info;
    vid_range_t r = {0.3, 0.7};
    assert_int_equal(s_trim("mp4v.mp4", &r, 1, 1, &info), 0);
    assert_true(!info.exact && info.on_keyframes);
    assert_string_equal(info.keyframes_why, "exact cuts need H.264 or HEVC");
    vid_range_t a = {5, 10};
    assert_int_equal(s_trim("a.m4a", &a, 1, 1, &info), 0);
    assert_true(!info.exact && !info.on_keyframes && info.keyframes_why[0] == '\0');
}

/* The avcC parser: SPS and PPS ids (emulation prevention bytes skipped),
 * the NAL length size, and refusals of malformed records. */
static void test_avcc_ids(void **state)
{
    (void)state;
    /* SPS id 0 and 1, PPS id 0 and 3; the second SPS's id sits behind an
     * emulation prevention byte (constraint 00, level 00, then 03). */
    static const uint8_t ok[] = {1,    0x64, 0, 0x1e, 0xff, 0xe2, 0, 5, 0x67, 0x64, 0,    0x1e, 0xac, 0,    6,
                                 0x67, 0x64, 0, 0,    3,    0x40, 2, 0, 2,    0x68, 0xce, 0,    2,    0x68, 0x20};
    uint32_t sps;
    uint64_t pps[4];
    int nal;
    assert_int_equal(vid_recut_avcc_ids(ok, sizeof(ok), &sps, pps, &nal), 0);
    assert_int_equal(sps, 0x3);
    assert_true(pps[0] == 0x9 && pps[1] == 0 && pps[2] == 0 && pps[3] == 0);
    assert_int_equal(nal, 4);
    uint8_t bad[sizeof(ok)];
    memcpy(bad, ok, sizeof(ok));
    bad[0] = 2; /* version */
    assert_int_equal(vid_recut_avcc_ids(bad, sizeof(bad), &sps, pps, &nal), -1);
    memcpy(bad, ok, sizeof(ok));
    bad[4] = 0xfe; /* a 3-byte NAL length */
    assert_int_equal(vid_recut_avcc_ids(bad, sizeof(bad), &sps, pps, &nal), -1);
    memcpy(bad, ok, sizeof(ok));
    bad[7] = 200; /* an SPS longer than the record */
    assert_int_equal(vid_recut_avcc_ids(bad, sizeof(bad), &sps, pps, &nal), -1);
    memcpy(bad, ok, sizeof(ok));
    bad[8] = 0x68; /* a PPS where an SPS should be */
    assert_int_equal(vid_recut_avcc_ids(bad, sizeof(bad), &sps, pps, &nal), -1);
    assert_int_equal(vid_recut_avcc_ids(ok, sizeof(ok) - 1, &sps, pps, &nal), -1); /* cut short */
    static const uint8_t zeros[] = {1,    0x64, 0, 0x1e, 0xff, 0xe1, 0, 8, 0x67, 0x64, 0,
                                    0x1e, 0,    0, 0,    0x01, 1,    0, 2, 0x68, 0xce};
    assert_int_equal(vid_recut_avcc_ids(zeros, sizeof(zeros), &sps, pps, &nal), -1); /* an id past 31 */
    assert_int_equal(vid_recut_avcc_ids(NULL, 0, &sps, pps, &nal), -1);
}

/* Progressive HLS's plan from a duration alone: fixed segments, a last
 * one under 1 s joined to the one before, EXTINFs summing to the duration,
 * TARGETDURATION their rounded-up maximum; the ladder's rungs for a size. */
static void test_phls_plan(void **state)
{
    (void)state;
    assert_int_equal(vid_phls_segments(14.008, 6), 3);
    assert_true(fabs(vid_phls_extinf(14.008, 6, 2) - 2.008) < 1e-9);
    assert_int_equal(vid_phls_segments(14.008, 7), 2); /* 0.008 s left: joined */
    assert_true(fabs(vid_phls_extinf(14.008, 7, 1) - 7.008) < 1e-9);
    assert_int_equal(vid_phls_segments(12, 6), 2); /* exactly two */
    assert_int_equal(vid_phls_segments(0.5, 6), 1);
    assert_int_equal(vid_phls_segments(0, 6), 0);
    assert_int_equal(vid_phls_segments(1e12, 6), 0); /* more than VID_MAX_SEGMENTS */
    assert_true(vid_phls_extinf(14.008, 6, 3) == 0 && vid_phls_extinf(14.008, 6, -1) == 0);
    char *m = NULL;
    size_t len = 0;
    assert_int_equal(vid_phls_playlist(14.008, 7, &m, &len), 0);
    assert_string_equal(m, "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:8\n#EXT-X-MEDIA-SEQUENCE:0\n"
                           "#EXT-X-PLAYLIST-TYPE:VOD\n#EXTINF:7.000,\nseg-0.ts\n#EXTINF:7.008,\nseg-1.ts\n"
                           "#EXT-X-ENDLIST\n");
    free(m);
    vid_rung_t ladder[] = {{1080, 5000}, {720, 2800}, {480, 1400}, {360, 800}}, out[VID_PHLS_MAX_RUNGS];
    vid_phls_probe_t p = {.duration = 10, .width = 1280, .height = 720, .has_audio = 1};
    assert_int_equal(vid_phls_rungs(&p, ladder, 4, out), 3);
    assert_true(out[0].height == 720 && out[2].height == 360);
    assert_int_equal(vid_phls_master(&p, out, 3, 128, &m, &len), 0);
    assert_string_equal(m, "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-INDEPENDENT-SEGMENTS\n"
                           "#EXT-X-STREAM-INF:BANDWIDTH=2928000,RESOLUTION=1280x720\n720p/index.m3u8\n"
                           "#EXT-X-STREAM-INF:BANDWIDTH=1528000,RESOLUTION=854x480\n480p/index.m3u8\n"
                           "#EXT-X-STREAM-INF:BANDWIDTH=928000,RESOLUTION=640x360\n360p/index.m3u8\n");
    free(m);
    vid_phls_probe_t small = {.duration = 10, .width = 320, .height = 240};
    assert_int_equal(vid_phls_rungs(&small, ladder, 4, out), 1); /* below every rung: the smallest, unenlarged */
    assert_int_equal(out[0].height, 360);
    assert_int_equal(vid_phls_master(&small, out, 1, 128, &m, &len), 0);
    assert_non_null(strstr(m, "BANDWIDTH=800000,RESOLUTION=320x240\n360p/index.m3u8\n")); /* no audio track */
    free(m);
}

/* A segment alone, from a file: its frames are those of its time, first
 * an IDR; a segment past the end is 1; a source with no video is refused. */
static void test_phls_segment(void **state)
{
    (void)state;
    char path[256], err[256] = "";
    snprintf(path, sizeof(path), "%s/phls-1.ts", s_dir);
    s_file_t f;
    s_file_open(&f, "fs.mp4", -1);
    s_sink_t sink = {.f = fopen(path, "wb"), .fail_after = -1};
    vid_phls_opts_t o = {.seg = 6, .n = 1, .height = 120};
    vid_transcode_info_t info;
    assert_int_equal(vid_phls_segment(&f.src, &o, s_sink, &sink, &info, err, sizeof(err)), 0);
    assert_int_equal(fclose(sink.f), 0);
    assert_true(info.frames == 150 && info.width == 160 && info.height == 120);
    assert_true(sink.max_chunk <= 32 << 10);
    char *out = s_run("ffprobe -v error -select_streams v -show_entries frame=pts_time,pict_type -of csv=p=0 "
                      "phls-1.ts | head -1");
    assert_true(strncmp(out, "16.000000,I", 11) == 0); /* 6 s + VID_TS_OFFSET_S, an IDR */
    free(out);
    o.n = 5;
    assert_int_equal(vid_phls_segment(&f.src, &o, s_sink, &(s_sink_t){.fail_after = -1}, &info, err, sizeof(err)), 1);
    assert_string_equal(err, "no segment 5: the video has 5");
    s_file_close(&f);
    s_file_open(&f, "a.m4a", -1);
    o.n = 0;
    assert_int_equal(vid_phls_segment(&f.src, &o, s_sink, &(s_sink_t){.fail_after = -1}, &info, err, sizeof(err)), -1);
    assert_string_equal(err, "no video track");
    s_file_close(&f);
}

/* A streamed transcode: a fragmented MP4 handed over as it is made (the
 * first bytes are the ftyp, several moofs follow, every frame decodes);
 * a refusal writes nothing; a sink that fails stops it with an error. */
static void test_transcode_streamed(void **state)
{
    (void)state;
    char path[256], err[256] = "";
    snprintf(path, sizeof(path), "%s/streamed.mp4", s_dir);
    s_file_t f;
    s_file_open(&f, "fs.mp4", -1);
    s_sink_t sink = {.f = fopen(path, "wb"), .fail_after = -1};
    vid_transcode_opts_t o = {.max_height = 120, .stream_write = s_sink, .stream_arg = &sink};
    vid_transcode_info_t info;
    assert_int_equal(vid_transcode(&f.src, &o, NULL, &info, err, sizeof(err)), 0);
    assert_int_equal(fclose(sink.f), 0);
    assert_true(info.width == 160 && info.height == 120);
    char *out = s_run("head -c 8 streamed.mp4 | tail -c 4; echo; grep -c moof streamed.mp4 >/dev/null && "
                      "ffprobe -v error -count_frames -select_streams v -show_entries stream=nb_read_frames "
                      "-of csv=p=0 streamed.mp4");
    char want[32];
    snprintf(want, sizeof(want), "ftyp\n%lld\n", (long long)info.frames);
    assert_string_equal(out, want);
    free(out);
    out = s_run("ffmpeg -v error -i streamed.mp4 -f null - 2>&1 | wc -l");
    assert_string_equal(out, "0\n");
    free(out);
    /* failing sinks: at once, and after some fragments */
    o.stream_arg = &(s_sink_t){.fail_after = 0};
    assert_int_equal(vid_transcode(&f.src, &o, NULL, &info, err, sizeof(err)), -1);
    assert_string_equal(err, "cannot write the MP4 out");
    o.stream_arg = &(s_sink_t){.fail_after = 20000};
    assert_int_equal(vid_transcode(&f.src, &o, NULL, &info, err, sizeof(err)), -1);
    s_file_close(&f);
    /* no video: refused before any byte */
    s_file_open(&f, "a.m4a", -1);
    s_sink_t none = {.fail_after = -1};
    o.stream_arg = &none;
    assert_int_equal(vid_transcode(&f.src, &o, NULL, &info, err, sizeof(err)), -1);
    assert_string_equal(err, "no video track");
    assert_int_equal(none.bytes, 0);
    s_file_close(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_playlist_faststart),
        cmocka_unit_test(test_moov_at_end),
        cmocka_unit_test(test_variable_gop),
        cmocka_unit_test(test_segments_faststart),
        cmocka_unit_test(test_segments_moov_at_end),
        cmocka_unit_test(test_segments_fragmented),
        cmocka_unit_test(test_fragmented_past_4gib),
        cmocka_unit_test(test_audio_only),
        cmocka_unit_test(test_index_save_load),
        cmocka_unit_test(test_fmp4_segments),
        cmocka_unit_test(test_rejects),
        cmocka_unit_test(test_corrupt_moov),
        cmocka_unit_test(test_segment_errors),
        cmocka_unit_test(test_playlist_options),
        cmocka_unit_test(test_trim_exact),
        cmocka_unit_test(test_trim_exact_irregular_groups),
        cmocka_unit_test(test_trim_fragmented),
        cmocka_unit_test(test_trim_exact_hevc),
        cmocka_unit_test(test_trim_exact_hevc_open_gop),
        cmocka_unit_test(test_trim_exact_falls_back),
        cmocka_unit_test(test_avcc_ids),
        cmocka_unit_test(test_phls_plan),
        cmocka_unit_test(test_phls_segment),
        cmocka_unit_test(test_transcode_streamed),
    };
    return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
