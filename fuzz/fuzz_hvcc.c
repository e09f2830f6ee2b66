/*  libFuzzer target for services/video-worker/vid_hvcc: the hvcC comes
 *  from the source file (hostile), the parameter sets and slices from
 *  libx265 (trusted, but their bits are walked with the same care).
 *
 *  Input: a mode byte, then the bytes. Its low 2 bits choose what they
 *  are (3 is as 0):
 *    0  an hvcC: vid_hvcc_ids (twice: the same answer), and when it reads,
 *       masks with an SPS and a PPS, a NAL length of 1, 2 or 4,
 *       vid_hevc_renum_pick finding ids the source does not use (or
 *       failing only when it uses them all), and vid_hvcc_join with no NAL
 *       added giving back the record's own bytes, which read the same ids;
 *    1  a parameter set for vid_hevc_renum_ps;
 *    2  a slice NAL for vid_hevc_renum_slice.
 *  For 1 and 2 its high 6 bits choose the ids renumbered to (VPS and SPS
 *  0-15, PPS 1-30, through vid_hevc_renum_pick), and a NAL that is
 *  rewritten must: fit the bound the header promises, need no more room
 *  than its length (and be refused with one byte less), keep its 2-byte
 *  header, and (its RBSP read back with the standard's own unescaping)
 *  carry the new ids and reserved bits in place of the old and then the
 *  very same bits up to the same stop bit, with nothing after. Anything
 *  else abort()s. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vid_hvcc.h"

/* ---- an RBSP, read independently of vid_hvcc --------------------------------------------- */

typedef struct {
    uint8_t *b;
    int n;    /* bytes */
    int stop; /* the stop bit's position, or -1 */
} s_rbsp_t;

/* nal_unit()'s unescaping (H.265 7.3.1.1): from byte 2, each 00 00 03 loses its 03. */
static void s_rbsp(s_rbsp_t *r, const uint8_t *nal, int len)
{
    r->b = malloc((size_t)len + 1);
    if (r->b == NULL)
        abort();
    r->n = 0;
    for (int i = 2; i < len; i++) {
        r->b[r->n++] = nal[i];
        if (i + 2 < len && nal[i] == 0 && nal[i + 1] == 0 && nal[i + 2] == 3) {
            r->b[r->n++] = 0;
            i += 2;
        }
    }
    r->stop = -1;
    for (int i = r->n - 1; i >= 0 && r->stop < 0; i--)
        for (int k = 0; k < 8; k++)
            if (r->b[i] & (1 << k)) {
                r->stop = i * 8 + 7 - k;
                break;
            }
}

static int s_bit(const s_rbsp_t *r, int pos)
{
    return pos < r->n * 8 ? (r->b[pos / 8] >> (7 - pos % 8)) & 1 : 0;
}

static uint32_t s_bits(const s_rbsp_t *r, int *pos, int k)
{
    uint32_t v = 0;
    for (int i = 0; i < k; i++)
        v = v << 1 | (uint32_t)s_bit(r, (*pos)++);
    return v;
}

/* ue(v) (no longer than 32 bits here), or -1. */
static int64_t s_ue(const s_rbsp_t *r, int *pos)
{
    int lead = 0;
    while (s_bit(r, (*pos)++) == 0)
        if (++lead > 31)
            return -1;
    return ((int64_t)1 << lead) - 1 + s_bits(r, pos, lead);
}

static int s_ue_len(uint32_t v)
{
    int lead = 0;
    while ((v + 1) >> (lead + 1))
        lead++;
    return 2 * lead + 1;
}

/* After the rewritten fields (in up to bit a, out up to bit b): the same
 * bits up to the same stop bit, then only its alignment. */
static void s_same_tail(const s_rbsp_t *in, int a, const s_rbsp_t *out, int b)
{
    if (in->stop < a || out->stop < b || out->stop - b != in->stop - a || out->n != out->stop / 8 + 1)
        abort();
    for (int i = 0; a + i <= in->stop; i++)
        if (s_bit(in, a + i) != s_bit(out, b + i))
            abort();
}

/* profile_tier_level(1, msl)'s length in bits from *pos (as H.265 7.3.3). */
static void s_skip_ptl(const s_rbsp_t *r, int *pos, int msl)
{
    int profile[8], level[8];
    *pos += 96;
    for (int i = 0; i < msl; i++) {
        profile[i] = s_bit(r, (*pos)++);
        level[i] = s_bit(r, (*pos)++);
    }
    if (msl > 0)
        *pos += 2 * (8 - msl);
    for (int i = 0; i < msl; i++)
        *pos += (profile[i] ? 88 : 0) + (level[i] ? 8 : 0);
}

/* ---- the modes ----------------------------------------------------------------------------- */

static void s_hvcc(const uint8_t *data, int size)
{
    vid_hvcc_ids_t ids, ids2;
    int rc = vid_hvcc_ids(data, size, &ids), rc2 = vid_hvcc_ids(data, size, &ids2);
    if (rc != rc2 || memcmp(&ids, &ids2, sizeof(ids)) != 0)
        abort();
    if (rc != 0)
        return;
    if (ids.sps == 0 || ids.pps == 0 || (ids.nal_len != 1 && ids.nal_len != 2 && ids.nal_len != 4))
        abort();
    vid_hevc_renum_t r;
    bool full = ids.vps == 0xffff || ids.sps == 0xffff || (ids.pps & 0x7ffffffe) == 0x7ffffffe;
    if (vid_hevc_renum_pick(&ids, &r) < 0) {
        if (!full)
            abort();
    } else if (full || r.vps < 0 || r.vps > 15 || (ids.vps >> r.vps & 1) || r.sps < 0 || r.sps > 15 ||
               (ids.sps >> r.sps & 1) || r.pps < 1 || r.pps > 30 || (ids.pps >> r.pps & 1) ||
               r.extra_bits != 9 - s_ue_len((uint32_t)r.pps)) {
        abort();
    }
    uint8_t *joined = NULL;
    int joined_len = -1;
    if (vid_hvcc_join(data, size, NULL, NULL, 0, &joined, &joined_len) < 0 || joined_len < 23 || joined_len > size ||
        memcmp(joined, data, (size_t)joined_len) != 0 || vid_hvcc_ids(joined, joined_len, &ids2) < 0 ||
        memcmp(&ids, &ids2, sizeof(ids)) != 0)
        abort();
    free(joined);
}

/* Rewrites nal (a parameter set when ps, else a slice) with r and checks the result. */
static void s_renum(const vid_hevc_renum_t *r, bool ps, const uint8_t *nal, int len)
{
    int bound = len + len / 2 + 16, big = 2 * len + 64;
    uint8_t *out = malloc((size_t)big), *again = malloc((size_t)big);
    if (out == NULL || again == NULL)
        abort();
    int n = ps ? vid_hevc_renum_ps(r, nal, len, out, big) : vid_hevc_renum_slice(r, nal, len, out, big);
    if (n < 0)
        goto done;
    if (n > bound || n < 2 || memcmp(out, nal, 2) != 0)
        abort();
    int m = ps ? vid_hevc_renum_ps(r, nal, len, again, n) : vid_hevc_renum_slice(r, nal, len, again, n);
    if (m != n || memcmp(again, out, (size_t)n) != 0)
        abort();
    m = ps ? vid_hevc_renum_ps(r, nal, len, again, n - 1) : vid_hevc_renum_slice(r, nal, len, again, n - 1);
    if (m != -1)
        abort();

    s_rbsp_t in, o;
    s_rbsp(&in, nal, len);
    s_rbsp(&o, out, n);
    int type = vid_hevc_nal_type(nal, len), a = 0, b = 0;
    if (type == VID_HEVC_VPS) {
        if (s_bits(&in, &a, 4) != 0 || s_bits(&o, &b, 4) != (uint32_t)r->vps)
            abort();
    } else if (type == VID_HEVC_SPS) {
        if (s_bits(&in, &a, 4) != 0 || s_bits(&o, &b, 4) != (uint32_t)r->vps)
            abort();
        int msl = (int)s_bits(&in, &a, 3);
        a++;
        if (msl > 6)
            abort();
        s_skip_ptl(&in, &a, msl);
        for (; b < a; b++) /* the sub-layers and the profile, copied */
            if (s_bit(&in, b) != s_bit(&o, b))
                abort();
        if (s_ue(&in, &a) != 0 || s_ue(&o, &b) != r->sps)
            abort();
    } else if (type == VID_HEVC_PPS) {
        if (s_ue(&in, &a) != 0 || s_ue(&in, &a) != 0 || s_ue(&o, &b) != r->pps || s_ue(&o, &b) != r->sps ||
            s_bits(&in, &a, 2) != s_bits(&o, &b, 2) || s_bits(&in, &a, 3) != 0 ||
            s_bits(&o, &b, 3) != (uint32_t)r->extra_bits)
            abort();
    } else {
        if (s_bits(&in, &a, 1) != 1 || s_bits(&o, &b, 1) != 1)
            abort();
        if (type >= VID_HEVC_BLA_W_LP && s_bits(&in, &a, 1) != s_bits(&o, &b, 1))
            abort();
        if (s_ue(&in, &a) != 0 || s_ue(&o, &b) != r->pps || s_bits(&o, &b, r->extra_bits) != 0 || b - a != 8)
            abort();
    }
    s_same_tail(&in, a, &o, b);
    free(in.b);
    free(o.b);
done:
    free(out);
    free(again);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 1 << 16)
        return 0;
    int mode = data[0] & 3, k = data[0] >> 2;
    const uint8_t *rest = data + 1;
    int len = (int)size - 1;
    if (mode == 0 || mode == 3) {
        s_hvcc(rest, len);
        return 0;
    }
    /* ids 0 to v - 1 and 0 to p - 1 in use: the pick is v, v and p */
    int v = k & 15, p = 1 + k % 30;
    vid_hvcc_ids_t used = {
        .vps = (uint16_t)((1u << v) - 1), .sps = (uint16_t)((1u << v) - 1), .pps = (1ULL << p) - 1, .nal_len = 4};
    vid_hevc_renum_t r;
    if (vid_hevc_renum_pick(&used, &r) < 0 || r.vps != v || r.sps != v || r.pps != p)
        abort();
    s_renum(&r, mode == 1, rest, len);
    return 0;
}
