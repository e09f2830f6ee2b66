/*  vid_recut — the partial groups of pictures at a trim's cuts, re-encoded
 *  so that a trim starts and ends on exactly the frames asked while every
 *  whole group in between is copied (a "smart cut").
 *
 *  H.264 is re-encoded with libx264 and HEVC with libx265, at the
 *  source's size, pixel format and colour description. The new frames
 *  need parameter sets of their own, numbered with ids the source does
 *  not use, and the output track's avcC or hvcC carries both the
 *  source's and the new ones (vid_recut_extradata), so a decoder switches
 *  at each IDR without any in-band parameter set.
 *
 *  H.264: libx264 is told the id (its sps-id, which numbers its PPS too),
 *  in its own profile. The source's SPS stays first and its PPS last:
 *  players that build one avcC from a TS stream's parameter sets (hls.js
 *  takes the first SPS and the last PPS it sees, and the TS muxer repeats
 *  the avcC's sets in list order before each IDR) then get the source's
 *  matching pair, and the re-encoder's reach the decoder in-band.
 *
 *  HEVC: libx265 cannot be told ids, so its VPS, SPS and PPS and every
 *  slice header are rewritten (vid_hvcc). A copied CRA picture right
 *  after a re-encoded stretch (or at a range's start) is relabelled a BLA
 *  picture (vid_recut_splice), which starts a new coded video sequence:
 *  only there may the active SPS change. Leading pictures that refer to
 *  the group before (HEVC's RASL, H.264's open-GOP B-frames) would
 *  decode wrong next to a cut: such a source must be cut on keyframes
 *  (vid_recut_leading finds them).
 *
 *  Each re-encoded stretch starts a new encoder: its first frame is an
 *  IDR, it has no B-frames (decode order is presentation order, so its
 *  decode times are its presentation times less the source's own delay),
 *  and its packets are rewritten from Annex B to the source's NAL length
 *  prefixes.
 *
 *  The avcC or hvcC is hostile input (it comes from the source): every
 *  length is checked, and a malformed one refuses the recut (the caller
 *  falls back to cuts on keyframes).
 */
#ifndef VID_RECUT_H
#define VID_RECUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>

typedef struct vid_recut vid_recut_t;

/* A recutter for the video stream st (borrowed for the call; its codec
 * parameters are copied); key is one of its keyframes (borrowed), decoded
 * to learn the frames' size and pixel format. NULL with a short reason in
 * err when the track cannot be re-encoded to match (not H.264 in an avcC
 * or HEVC in an hvcC, a pixel format the encoder lacks, no libx264 or
 * libx265). Caller owns (vid_recut_destroy). */
vid_recut_t *vid_recut_new(const AVStream *st, const AVPacket *key, char *err, size_t errlen);

/* Frees *p and sets it to NULL; safe on NULL. */
void vid_recut_destroy(vid_recut_t **p);

/* Whether the source packet pkt of the group that starts with keyframe
 * key (both borrowed) is a leading picture that refers to the group
 * before: HEVC names them (RASL; its RADL pictures do not refer across);
 * in H.264 it is any picture shown before its keyframe (after an IDR
 * there is none). */
bool vid_recut_leading(const vid_recut_t *self, const AVPacket *key, const AVPacket *pkt);

/* Readies the keyframe pkt (a source packet, made writable here) to
 * follow frames that are not the source's own before it: an HEVC CRA
 * picture becomes a BLA picture; other pictures and H.264 are left as
 * they are. 0, or -1 when out of memory. */
int vid_recut_splice(const vid_recut_t *self, AVPacket *pkt);

/* The avcC or hvcC the output track must carry (the source's parameter sets and
 * the re-encoder's); borrowed, valid while self lives. */
const uint8_t *vid_recut_extradata(const vid_recut_t *self, int *len);

/* The sink of re-encoded packets: pts, dts and duration in the source
 * stream's time base, data length-prefixed as the source's; the sink may
 * take the packet's data (av_packet_move_ref). 0, or -1 to stop. */
typedef int (*vid_recut_emit_fn)(void *arg, AVPacket *pkt);

/* Decodes the group gop[0..n) (one keyframe and what follows it, decode
 * order, borrowed) and re-encodes its frames whose presentation time lies
 * in [lo, hi) (source time base). Re-encoded decode times are pts minus
 * dts_delay. *frames gets the count re-encoded. 0, or -1 with err set. */
int vid_recut_gop(vid_recut_t *self, AVPacket *const *gop, int n, int64_t lo, int64_t hi, int64_t dts_delay,
                  vid_recut_emit_fn emit, void *arg, int *frames, char *err, size_t errlen);

/* The SPS and PPS ids an avcC declares (bit i set: id i in use), for
 * picking an unused one. 0, or -1 when the avcC is malformed. Exposed for
 * its tests and fuzzing. */
int vid_recut_avcc_ids(const uint8_t *avcc, int len, uint32_t *sps_ids, uint64_t pps_ids[4], int *nal_len_size);

#endif
