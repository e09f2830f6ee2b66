/*  vid_core — the video worker's transform: an MP4/MOV source, read only by
 *  byte range, becomes HLS (a VOD media playlist and MPEG-TS segments) with
 *  libavformat. No bus, no threads of its own; every call is independent,
 *  so several job threads may use it at once.
 *
 *  Work is split so that each answer reads as little of the source as it
 *  can (in the product the ranges come through the gateway's cache):
 *    vid_index_new      reads the moov only (never the mdat) and plans the
 *                       segments; its result is small and serialisable
 *                       (vid_index_save/load) so it can be cached;
 *    vid_hls_playlist   needs only the index;
 *    vid_hls_segment    reads the moov again and then the samples of its
 *                       own segment, and streams TS packets to a sink.
 *
 *  Segmenting
 *    With a video track, a segment starts on a video keyframe and ends at
 *    the keyframe (or the end of the stream) whose distance from the start
 *    is nearest the target duration, never at its own start (no segment is
 *    empty). Without one (M4A), it is cut on audio packets, the first at or
 *    past the target. Audio packets go to the segment whose presentation
 *    interval holds their timestamp. Durations come from the sample table;
 *    a keyframe's presentation time is taken as its decode time plus the
 *    first sample's composition offset (true of every encoder that uses one
 *    GOP structure throughout: x264, x265, NVENC, ...).
 *
 *  Timestamps: every segment is muxed with the same mapping, source time +
 *  VID_TS_OFFSET_S (no per-segment shifting), so segments produced
 *  independently, by different workers, play as one continuous stream.
 *
 *  Codecs: the first video and the first audio track (others are
 *  ignored). H.264 and AAC go to MPEG-TS; HEVC, VP9, AV1, MP3, AC-3,
 *  E-AC-3, Opus, FLAC and ALAC to fMP4 (CMAF) fragments after an init
 *  section (vid_hls_init), as RFC 8216 asks for HEVC. Anything else is
 *  refused with "unsupported ...". A fragmented MP4 (its sample tables
 *  in moofs spread over the file) is read whole-index too: every moof
 *  is read at open (a sidx before them is hidden, or libavformat would
 *  read them only as it plays).
 *
 *  Truncation: a file whose samples extend past its end is refused by
 *  vid_index_new from the moov alone; so is a moov cut anywhere in its
 *  tracks. (A moov cut only in its trailing metadata, udta, still
 *  indexes: every sample table in it is whole.)
 *
 *  Bounds: at most VID_MAX_SEGMENTS segments, VID_MAX_STREAMS tracks,
 *  VID_MAX_DURATION_S seconds, VID_MAX_HEADER_BYTES read to find and parse
 *  the moov; a segment reads at most its samples' span plus the header
 *  bytes plus VID_READ_SLACK. A file beyond these, truncated or corrupt
 *  is an error (a one-line reason in err), never a crash or a hang.
 */
#ifndef VID_CORE_H
#define VID_CORE_H

#include <stddef.h>
#include <stdint.h>

#define VID_MAX_SEGMENTS 100000
#define VID_MAX_STREAMS 32
#define VID_MAX_DURATION_S (7 * 24 * 3600)
#define VID_MAX_HEADER_BYTES (64 << 20)
#define VID_READ_SLACK (1 << 20)
#define VID_TS_OFFSET_S 10

/* The source, read by byte range. `read` may be called from the thread
 * that called vid_index_new or vid_hls_segment only, and must be safe to
 * call again after an error. */
typedef struct {
    int64_t size; /* the whole source's size in bytes */
    /* Reads up to len bytes at off into buf; returns the bytes read (0 at
     * EOF) or -1 on an error. */
    int64_t (*read)(void *arg, uint8_t *buf, int64_t off, int64_t len);
    void *arg;
} vid_source_t;

/* What one segment covers; times are seconds of the source's timeline. */
typedef struct {
    double start;    /* presentation start */
    double duration; /* the playlist's EXTINF (3 decimals) */
    int64_t pos_lo;  /* its samples lie in [pos_lo, pos_hi) of the source */
    int64_t pos_hi;
    int64_t sample_bytes; /* the sum of its samples' sizes */
} vid_segment_info_t;

/* The tracks, durations and segment table of one source. */
typedef struct vid_index vid_index_t;

/* Reads the source's moov and plans segments of about target_duration
 * seconds (> 0). src is borrowed for the call only. Returns a new index
 * (caller owns; vid_index_destroy) or NULL with a one-line reason in
 * err[errlen]. */
vid_index_t *vid_index_new(const vid_source_t *src, double target_duration, char *err, size_t errlen);

/* Frees *p and sets it to NULL; safe on NULL or *p == NULL. */
void vid_index_destroy(vid_index_t **p);

/* The number of segments (>= 1). ix borrowed. */
int vid_index_segments(const vid_index_t *ix);

/* The presentation duration in seconds (the sum of the EXTINFs). */
double vid_index_duration(const vid_index_t *ix);

/* Fills *out for segment n; returns 0, or -1 if n is out of range. */
int vid_index_segment_info(const vid_index_t *ix, int n, vid_segment_info_t *out);

/* Serialises ix (borrowed) into *out (malloc'd, caller frees) of *len
 * bytes. Returns 0, or -1 when out of memory. */
int vid_index_save(const vid_index_t *ix, uint8_t **out, size_t *len);

/* Parses a buffer made by vid_index_save. The buffer is hostile input:
 * every field is bounded and checked, and a checksum covers it. buf is
 * borrowed. Returns a new index (caller owns) or NULL with the reason in
 * err[errlen]. */
vid_index_t *vid_index_load(const uint8_t *buf, size_t len, char *err, size_t errlen);

/* What the segments of an index are: MPEG-TS (H.264, AAC), or fMP4
 * (CMAF) fragments after an init section, for the codecs TS does not
 * carry (HEVC, VP9, AV1, MP3, AC-3, E-AC-3, Opus, FLAC, ALAC) or when
 * asked. */
typedef enum { VID_SEG_TS = 0, VID_SEG_FMP4 = 1 } vid_seg_format_t;

/* vid_index_new with the segment format asked: VID_SEG_TS gives MPEG-TS
 * where the codecs allow and fMP4 otherwise (what vid_index_new does);
 * VID_SEG_FMP4 gives fMP4 whatever the codecs. */
vid_index_t *vid_index_new_as(const vid_source_t *src, double target_duration, vid_seg_format_t want, char *err,
                              size_t errlen);

/* The segment format of ix (borrowed). */
vid_seg_format_t vid_index_format(const vid_index_t *ix);

typedef struct {
    int version;             /* EXT-X-VERSION, 3..7 (3: the seed's <Index Ver="3">);
                              * an fMP4 index's playlist says at least 6 */
    int64_t media_sequence;  /* EXT-X-MEDIA-SEQUENCE, >= 0 (the seed's <Sequence>) */
    const char *segment_uri; /* printf pattern with exactly one %d (the segment
                              * number from 0, not the media sequence), e.g.
                              * "seg-%d.ts"; relative, no '%' otherwise except
                              * "%%", no newline. NULL: "seg-%d.ts" */
    const char *init_uri;    /* fMP4: the init section's relative URI (EXT-X-MAP);
                              * printable, no '"'. NULL: "init.mp4" */
} vid_hls_opts_t;

/* Fills *o with the defaults (version 3, sequence 0, "seg-%d.ts"). */
void vid_hls_opts_default(vid_hls_opts_t *o);

/* Writes the media playlist (index.m3u8) of ix into *out (malloc'd,
 * NUL-terminated, caller frees) of *len bytes. o NULL: the defaults.
 * Returns 0, or -1 when an option is invalid or out of memory. */
int vid_hls_playlist(const vid_index_t *ix, const vid_hls_opts_t *o, char **out, size_t *len);

/* The sink of a segment's bytes: returns 0, or non-zero to stop the
 * segment (vid_hls_segment then fails). buf is valid during the call only. */
typedef int (*vid_write_fn)(void *arg, const uint8_t *buf, size_t len);

/* Writes the init section (ftyp and moov, no samples) of an fMP4 index's
 * segments, reading src's header. ix and src borrowed. 0, or -1 with the
 * reason in err (an MPEG-TS index has none). */
int vid_hls_init(const vid_index_t *ix, const vid_source_t *src, vid_write_fn write, void *arg, char *err,
                 size_t errlen);

/* Produces segment n of ix as MPEG-TS (or one fMP4 fragment), reading src (which must be the
 * source ix was made from: its size and tracks are checked) and writing
 * through `write` in chunks of at most 32 KiB as they are muxed. ix and src
 * are borrowed. Returns 0, or -1 with the reason in err[errlen] (the sink
 * may then have received a partial segment). */
int vid_hls_segment(const vid_index_t *ix, const vid_source_t *src, int n, vid_write_fn write, void *arg, char *err,
                    size_t errlen);

/* ---- thumbnails ---- */

typedef enum { VID_IMG_JPEG, VID_IMG_PNG, VID_IMG_WEBP } vid_img_format_t;

typedef struct {
    double time;             /* seconds from the start, >= 0 */
    int width, height;       /* the box the frame is fitted into (aspect kept, never enlarged); 0: free */
    vid_img_format_t format; /* default JPEG */
    int quality;             /* 1..100 for JPEG and WebP; 0: 85 */
    int keyframe;            /* non-zero: the keyframe at or before `time`, not decoded up to it (faster) */
} vid_thumb_opts_t;

/* What vid_thumbnail made. */
typedef struct {
    uint8_t *data; /* the encoded image (malloc'd; caller frees) */
    size_t len;
    int width, height;
    double at; /* the presentation time of the frame shown, seconds */
    int64_t frames_decoded;
} vid_thumb_t;

/* The frame at o->time — the first whose presentation time is at or
 * after it, as `ffmpeg -ss T -frames:v 1` picks it; the last frame when
 * the time is past it but not past the duration — of the source's first
 * video track, any codec libavcodec decodes, fitted and encoded. Reads the header and the samples from the keyframe
 * before the time up to it only. src and o borrowed. Returns 0 with *out filled, 1 when o->time is past the end (err
 * says the duration), or -1 with the reason in err. */
int vid_thumbnail(const vid_source_t *src, const vid_thumb_opts_t *o, vid_thumb_t *out, char *err, size_t errlen);

/* ---- sprites (scrub previews) ---- */

#define VID_SPRITE_MAX_TILES 100
#define VID_SPRITE_MAX_SIDE 640 /* of a tile */

typedef struct {
    double every;       /* seconds between tiles, >= 0.5 */
    int cols, rows;     /* tiles per sheet, cols * rows <= VID_SPRITE_MAX_TILES */
    int tile_w, tile_h; /* a tile's size; one of them 0: from the video's aspect (even) */
    int sheet;          /* which sheet, from 0: tiles sheet*cols*rows ... */
    int quality;        /* JPEG quality 1..100; 0: 80 */
} vid_sprite_opts_t;

/* What a source's header says (vid_probe). */
typedef struct {
    double duration;   /* seconds */
    int width, height; /* display size of the first video track; 0 without one */
} vid_probe_t;

/* Reads the source's header. 0, or -1 with err set. */
int vid_probe(const vid_source_t *src, vid_probe_t *out, char *err, size_t errlen);

/* A sprite's tile size: o's, with a 0 side computed from the video's
 * display aspect (even, at least 2). -1 when both are 0 or out of bounds. */
int vid_sprite_tile(const vid_probe_t *p, const vid_sprite_opts_t *o, int *w, int *h);

/* How many sheets the source's duration needs at o's spacing and grid. */
int vid_sprite_sheets(const vid_probe_t *p, const vid_sprite_opts_t *o);

/* One JPEG sheet of o->cols x o->rows tiles, row-major: tile k shows the
 * frame at (o->sheet * cols * rows + k) * every seconds (as vid_thumbnail
 * picks it), fitted and centred in its tile; tiles past the end are
 * black. out as for vid_thumbnail (at: the first tile's time). 0, 1 when
 * the sheet is past the end, -1 with err. */
int vid_sprite(const vid_source_t *src, const vid_sprite_opts_t *o, vid_thumb_t *out, char *err, size_t errlen);

/* The WebVTT index of the sprite sheets: one cue per tile,
 * "sheet-pattern#xywh=X,Y,W,H", the pattern a printf format with one %d
 * (the sheet). *out malloc'd (caller frees). 0 or -1. */
int vid_sprite_vtt(const vid_probe_t *p, const vid_sprite_opts_t *o, const char *sheet_pattern, char **out,
                   size_t *len);

/* ---- trimming ---- */

#define VID_MAX_RANGES 64

/* One range of the source's timeline, seconds; end <= start: to the end. */
typedef struct {
    double start, end;
} vid_range_t;

typedef struct {
    double duration;                 /* of the source */
    double kept;                     /* of the output: the ranges as cut */
    vid_range_t cut[VID_MAX_RANGES]; /* each range as cut */
    int64_t packets;
    int on_keyframes;        /* a video source (else cut on audio packets: an audio-only source) */
    int exact;               /* cut on the frames asked (else on keyframes) */
    int64_t recoded;         /* frames re-encoded at the cuts */
    char keyframes_why[160]; /* accurate asked of a video but cut on keyframes: why */
} vid_trim_info_t;

/* The source's duration in seconds (reads its header), or a negative
 * number with err set. */
double vid_duration(const vid_source_t *src, char *err, size_t errlen);

/* Writes the ranges of src, in the order given and joined into one
 * timeline, as an MP4 with its moov first (faststart) to the file at
 * out_path (created or truncated; libavformat writes it, then reads it
 * back to move the moov). The first video and the first audio track are
 * kept, any codec MP4 carries.
 *
 * accurate, with H.264 or HEVC video (vid_recut): a range starts on the
 * first frame at or after its start and ends before the first at or
 * after its end; whole groups of pictures are copied and the frames of
 * the partial groups at the cuts re-encoded (info->recoded). Otherwise
 * (accurate 0, other codecs, an open-GOP HEVC source found part way:
 * info->keyframes_why says why) cuts are on keyframes: a range starts at
 * the keyframe at or before its start and ends at the first keyframe at
 * or after its end (before that keyframe's leading pictures, which need
 * the group before), everything copied. Audio-only
 * sources are cut on audio packets. Audio packets follow the video's cut;
 * info->cut says where each range was cut.
 *
 * Reads the header and each range's samples only. Returns 0, 1 when a
 * range starts past the end (err says the duration), or -1 with err set
 * (out_path may then hold a partial file: the caller removes it). */
int vid_trim(const vid_source_t *src, const vid_range_t *ranges, int n, int accurate, const char *out_path,
             vid_trim_info_t *info, char *err, size_t errlen);

/* ---- transcoding ---- */

typedef struct {
    int max_width, max_height; /* the video is fitted into this box (aspect kept, never enlarged); 0: free */
    int crf;                   /* x264's constant rate factor, 0..51; 0: 23 */
    const char *preset;        /* x264's preset; NULL: "veryfast" */
    int audio_kbps;            /* AAC bit rate; 0: 128 */
    double max_duration;       /* seconds; a longer source is refused; 0: VID_MAX_DURATION_S */
    int max_kbps;              /* the video's bit-rate cap (x264 VBV, buffer 2 s); 0: none */
    /* Streamed (vid_transcode only): with a stream_write the MP4 is fragmented (an empty moov
     * first, then a moof and mdat per group of pictures, 2 s) and handed to it as it is made,
     * out_path unused. Its first call comes once the source and the encoders are set up, so a
     * refusal (no video, too long, a codec it cannot read) comes before any byte. */
    vid_write_fn stream_write;
    void *stream_arg;
} vid_transcode_opts_t;

typedef struct {
    double duration; /* of the output */
    int width, height;
    int64_t frames, audio_frames;
    const char *input; /* the container read ("matroska,webm", "avi", ...) */
} vid_transcode_info_t;

/* Any single-file container libavformat reads (Matroska/WebM, MOV/MP4,
 * AVI, MPEG-TS, FLV, ASF/WMV, MPEG-PS, Ogg), any codecs libavcodec
 * decodes, to an MP4 of H.264 (libx264) and AAC with its moov first, at
 * out_path — or fragmented, to o->stream_write as it is made. The first
 * video and the first audio track; the frames keep their times. Reads the
 * source once, front to back. 0, or -1 with err (out_path may hold a
 * partial file: the caller removes it; a stream may have had bytes). */
int vid_transcode(const vid_source_t *src, const vid_transcode_opts_t *o, const char *out_path,
                  vid_transcode_info_t *info, char *err, size_t errlen);

/* ---- progressive HLS: any input, each segment transcoded when asked ----
 *
 * The timeline is cut into segments of `seg` seconds by time alone
 * (segment n holds the frames whose time from the source's start is in
 * [n*seg, (n+1)*seg); a last one shorter than 1 s joins the one before),
 * so a playlist needs only the duration, and any segment can be made
 * alone, by any worker, in any order. Each is H.264 (an IDR first) and
 * AAC in MPEG-TS with the source's own timestamps plus VID_TS_OFFSET_S,
 * like mp4hls's, so independently made segments play as one stream: the
 * audio is cut on the AAC frame grid of the whole timeline, with two
 * frames of pre-roll encoded and dropped, so that a segment's first audio
 * frames are those a continuous encode would have made. */

#define VID_PHLS_MAX_RUNGS 8

typedef struct {
    int height; /* the rung's output height (never enlarged) */
    int kbps;   /* its video bit-rate cap; 0: none */
} vid_rung_t;

typedef struct {
    double duration;   /* seconds */
    int width, height; /* display size */
    int has_audio;
    const char *input; /* the container ("matroska,webm", ...), static */
} vid_phls_probe_t;

/* Reads the source's header (any container libavformat reads). 0, or -1
 * with err set (no video track, no duration, too long). */
int vid_phls_probe(const vid_source_t *src, vid_phls_probe_t *out, char *err, size_t errlen);

/* The number of segments of a duration (0 when either is not positive or
 * there would be more than VID_MAX_SEGMENTS), and segment n's EXTINF. */
int vid_phls_segments(double duration, double seg);
double vid_phls_extinf(double duration, double seg, int n);

/* The media playlist (segments "seg-N.ts") into *out (malloc'd, caller
 * frees). 0 or -1. */
int vid_phls_playlist(double duration, double seg, char **out, size_t *len);

/* The rungs of ladder[0..n) that apply to p (those not above its height;
 * the smallest when it is below all) into out[VID_PHLS_MAX_RUNGS]; their count. */
int vid_phls_rungs(const vid_phls_probe_t *p, const vid_rung_t *ladder, int n, vid_rung_t *out);

/* The master playlist of rungs[0..n) ("Hp/index.m3u8", BANDWIDTH the cap
 * plus the audio's, RESOLUTION the rung's size for p) into *out. 0 or -1. */
int vid_phls_master(const vid_phls_probe_t *p, const vid_rung_t *rungs, int n, int audio_kbps, char **out, size_t *len);

typedef struct {
    double seg;          /* segment duration, seconds (> 0) */
    int n;               /* the segment, from 0 */
    int height, kbps;    /* the rung */
    int crf;             /* 0: 23 */
    const char *preset;  /* NULL: veryfast */
    int audio_kbps;      /* 0: 128 */
    double max_duration; /* longer sources refused; 0: no limit beyond VID_MAX_DURATION_S */
} vid_phls_opts_t;

/* Transcodes segment o->n of src to MPEG-TS through `write` (chunks of at
 * most 32 KiB). Reads from the keyframe before the segment (0.2 s of
 * pre-roll) to a little past its end. 0, 1 when there is no such segment
 * (err says how many there are), -1 with err set. info: frames, size. */
int vid_phls_segment(const vid_source_t *src, const vid_phls_opts_t *o, vid_write_fn write, void *arg,
                     vid_transcode_info_t *info, char *err, size_t errlen);

#endif
