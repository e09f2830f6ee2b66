/*  vid_hvcc — the HEVC pieces of a frame-accurate trim (vid_recut): the
 *  parameter set ids an hvcC declares, and the renumbering that lets
 *  libx265's frames share one track with the source's.
 *
 *  libx265 always numbers its VPS, SPS and PPS 0, as the source usually
 *  does. Its parameter sets are rewritten to ids the source does not use
 *  (the VPS id is 4 fixed bits; the SPS and PPS ids are Exp-Golomb codes,
 *  so the rest of those sets is shifted bit by bit), and every slice
 *  header is rewritten to name the new PPS. A slice header's PPS id is
 *  followed, a few fields on, by CABAC data that must stay byte aligned,
 *  and parsing the header to its end needs most of the SPS. Instead the
 *  new PPS declares num_extra_slice_header_bits so that the longer PPS id
 *  plus that many reserved bits (which sit right after it in a picture's
 *  first slice) add exactly 8 bits: everything after moves by one whole
 *  byte and stays aligned. That needs the re-encoder's slices to be one
 *  per picture (libx265's default; checked on every slice).
 *
 *  Everything here reads hostile bytes (the hvcC comes from the source;
 *  the NALs from libx265): every length is checked, and what does not
 *  parse is refused (-1), never guessed at. No allocation but
 *  vid_hvcc_join's result; no libav.
 */
#ifndef VID_HVCC_H
#define VID_HVCC_H

#include <stdint.h>

/* HEVC NAL unit types used here. */
enum {
    VID_HEVC_RASL_N = 8,
    VID_HEVC_RASL_R = 9,
    VID_HEVC_BLA_W_LP = 16,
    VID_HEVC_CRA = 21,
    VID_HEVC_VPS = 32,
    VID_HEVC_SPS = 33,
    VID_HEVC_PPS = 34,
};

/* The parameter set ids in use (bit i: id i) and the NAL length size. */
typedef struct {
    uint16_t vps, sps;
    uint64_t pps;
    int nal_len; /* 1, 2 or 4 */
} vid_hvcc_ids_t;

/* The ids the re-encoder's sets get, and the reserved bits its PPS
 * declares so that a slice header grows by exactly one byte. */
typedef struct {
    int vps, sps, pps, extra_bits;
} vid_hevc_renum_t;

/* A NAL's type (its 2-byte header), or -1 when too short or its
 * forbidden bit is set. */
int vid_hevc_nal_type(const uint8_t *nal, int len);

/* Reads an hvcC (configurationVersion 0 or 1): the ids its VPS, SPS and
 * PPS arrays declare. 0, or -1 when malformed (a length past the end, a
 * NAL of another type in an array, an id out of range, no SPS or PPS). */
int vid_hvcc_ids(const uint8_t *hvcc, int len, vid_hvcc_ids_t *out);

/* Picks unused ids (the PPS id from 1 to 30, so that its code is at most
 * 9 bits). 0, or -1 when the source uses them all. */
int vid_hevc_renum_pick(const vid_hvcc_ids_t *used, vid_hevc_renum_t *r);

/* Rewrites one of libx265's parameter sets (a VPS, SPS or PPS NAL with no
 * start code or length prefix, ids 0) into out[cap] with the ids of r.
 * Returns its length, or -1 when it is not such a set or out is too
 * small (len + len / 2 + 16 always suffices). */
int vid_hevc_renum_ps(const vid_hevc_renum_t *r, const uint8_t *nal, int len, uint8_t *out, int cap);

/* Rewrites one of libx265's slice NALs to name r's PPS (inserting r's
 * reserved bits). Returns its length, or -1 when it is not the first
 * slice of its picture, does not name PPS 0, or out[cap] is too small
 * (len + len / 2 + 16 always suffices). */
int vid_hevc_renum_slice(const vid_hevc_renum_t *r, const uint8_t *nal, int len, uint8_t *out, int cap);

/* A new hvcC (caller frees with free()): the source's, with each of the n
 * NALs (parameter sets) appended to the array of its type, or to a new
 * array. *out_len gets its length. 0, or -1 when the source is malformed,
 * an array would exceed 65535 NALs, or memory runs out. */
int vid_hvcc_join(const uint8_t *src, int len, const uint8_t *const *nals, const int *lens, int n, uint8_t **out,
                  int *out_len);

#endif
