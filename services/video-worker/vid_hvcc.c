#include "vid_hvcc.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* The fixed part of an hvcC before its arrays; the array count is its last byte. */
#define S_HVCC_HEAD 23

/* A NAL header is 2 bytes. */
#define S_NAL_HEAD 2

/* ---- reading bits ------------------------------------------------------------------------ */

/* A NAL's payload with its emulation prevention bytes removed (owned). */
typedef struct {
    uint8_t *b;
    int n;     /* bytes */
    int pos;   /* the next bit */
    bool over; /* a read went past the end */
} s_rbsp_t;

/* Unescapes nal[S_NAL_HEAD..len) into r. 0 or -1 (out of memory). */
static int s_rbsp_open(s_rbsp_t *r, const uint8_t *nal, int len)
{
    memset(r, 0, sizeof(*r));
    if ((r->b = malloc((size_t)len + 1)) == NULL)
        return -1;
    int zeros = 0;
    for (int i = S_NAL_HEAD; i < len; i++) {
        if (zeros >= 2 && nal[i] == 3) {
            zeros = 0;
            continue;
        }
        zeros = nal[i] == 0 ? zeros + 1 : 0;
        r->b[r->n++] = nal[i];
    }
    return 0;
}

static void s_rbsp_close(s_rbsp_t *r)
{
    free(r->b);
    r->b = NULL;
}

/* The next k bits (k <= 32); past the end sets over and reads zeros. */
static uint32_t s_bits(s_rbsp_t *r, int k)
{
    uint32_t v = 0;
    for (int i = 0; i < k; i++, r->pos++) {
        int bit = 0;
        if (r->pos < r->n * 8)
            bit = (r->b[r->pos / 8] >> (7 - r->pos % 8)) & 1;
        else
            r->over = true;
        v = v << 1 | (uint32_t)bit;
    }
    return v;
}

/* ue(v), or -1 for a code longer than 31 bits or past the end. */
static int64_t s_ue(s_rbsp_t *r)
{
    int lead = 0;
    while (s_bits(r, 1) == 0) {
        if (r->over || ++lead > 31)
            return -1;
    }
    uint32_t v = s_bits(r, lead);
    return r->over ? -1 : ((int64_t)1 << lead) - 1 + v;
}

/* The bit position of the RBSP stop bit (the last 1), or -1 when none. */
static int s_stop_bit(const s_rbsp_t *r)
{
    for (int i = r->n - 1; i >= 0; i--)
        if (r->b[i] != 0) {
            int k = 0;
            while (!(r->b[i] & (1 << k)))
                k++;
            return i * 8 + 7 - k;
        }
    return -1;
}

/* Skips profile_tier_level(1, max_sub_layers_minus1). */
static void s_skip_ptl(s_rbsp_t *r, int max_sub_layers_minus1)
{
    bool profile[8], level[8];
    s_bits(r, 32), s_bits(r, 32), s_bits(r, 32); /* the general profile (88 bits) and level (8) */
    for (int i = 0; i < max_sub_layers_minus1; i++) {
        profile[i] = s_bits(r, 1);
        level[i] = s_bits(r, 1);
    }
    if (max_sub_layers_minus1 > 0)
        s_bits(r, 2 * (8 - max_sub_layers_minus1));
    for (int i = 0; i < max_sub_layers_minus1; i++) {
        if (profile[i])
            s_bits(r, 32), s_bits(r, 32), s_bits(r, 24);
        if (level[i])
            s_bits(r, 8);
    }
}

/* ---- writing bits ------------------------------------------------------------------------ */

/* A NAL being written: bits gathered into bytes, escaped as they go. */
typedef struct {
    uint8_t *out;
    int cap, n;
    int zeros; /* trailing zero bytes written, for escaping */
    uint32_t acc;
    int nacc;
    bool full;
} s_w_t;

static void s_w_byte(s_w_t *w, uint8_t b)
{
    if (w->zeros >= 2 && b <= 3) {
        if (w->n >= w->cap) {
            w->full = true;
            return;
        }
        w->out[w->n++] = 3;
        w->zeros = 0;
    }
    if (w->n >= w->cap) {
        w->full = true;
        return;
    }
    w->out[w->n++] = b;
    w->zeros = b == 0 ? w->zeros + 1 : 0;
}

/* Writes the low k bits of v (k <= 24). */
static void s_w_bits(s_w_t *w, uint32_t v, int k)
{
    for (int i = k - 1; i >= 0; i--) {
        w->acc = w->acc << 1 | ((v >> i) & 1);
        if (++w->nacc == 8) {
            s_w_byte(w, (uint8_t)w->acc);
            w->acc = 0;
            w->nacc = 0;
        }
    }
}

static int s_ue_len(uint32_t v)
{
    int lead = 0;
    while ((v + 1) >> (lead + 1))
        lead++;
    return 2 * lead + 1;
}

static void s_w_ue(s_w_t *w, uint32_t v)
{
    int lead = s_ue_len(v) / 2;
    s_w_bits(w, 0, lead);
    s_w_bits(w, v + 1, lead + 1);
}

/* Copies r's bits from its position to `to`, a byte at a time. */
static void s_w_copy(s_w_t *w, s_rbsp_t *r, int to)
{
    while (r->pos + 8 <= to)
        s_w_bits(w, s_bits(r, 8), 8);
    int k = to - r->pos; /* before s_bits moves pos: argument order is unspecified */
    s_w_bits(w, s_bits(r, k), k);
}

/* Starts a NAL: its 2-byte header, copied. Escaping counts zeros from
 * the payload on, as unescaping does (H.265 7.3.1.1 starts at byte 2). */
static void s_w_open(s_w_t *w, const uint8_t *nal, uint8_t *out, int cap)
{
    memset(w, 0, sizeof(*w));
    w->out = out;
    w->cap = cap;
    s_w_byte(w, nal[0]);
    s_w_byte(w, nal[1]);
    w->zeros = 0;
}

/* Copies the rest of r up to its stop bit, then the stop bit and the
 * alignment. The NAL's length, or -1. */
static int s_w_finish(s_w_t *w, s_rbsp_t *r, int stop)
{
    s_w_copy(w, r, stop);
    s_w_bits(w, 1, 1);
    if (w->nacc > 0)
        s_w_bits(w, 0, 8 - w->nacc);
    return w->full || r->over ? -1 : w->n;
}

/* ---- NALs ---------------------------------------------------------------------------------- */

int vid_hevc_nal_type(const uint8_t *nal, int len)
{
    if (nal == NULL || len < S_NAL_HEAD || (nal[0] & 0x80) || (nal[1] & 7) == 0) /* forbidden bit; temporal id + 1 */
        return -1;
    return (nal[0] >> 1) & 0x3f;
}

/* The id a parameter set declares (its type given), or -1. */
static int s_ps_id(const uint8_t *nal, int len, int type)
{
    if (vid_hevc_nal_type(nal, len) != type)
        return -1;
    s_rbsp_t r;
    if (s_rbsp_open(&r, nal, len) < 0)
        return -1;
    int64_t id = -1;
    if (type == VID_HEVC_VPS) {
        id = s_bits(&r, 4);
    } else if (type == VID_HEVC_SPS) {
        s_bits(&r, 4);
        int msl = (int)s_bits(&r, 3);
        s_bits(&r, 1);
        if (msl <= 6) {
            s_skip_ptl(&r, msl);
            id = s_ue(&r);
            id = id > 15 ? -1 : id;
        }
    } else {
        id = s_ue(&r);
        id = id > 63 ? -1 : id;
    }
    if (r.over)
        id = -1;
    s_rbsp_close(&r);
    return (int)id;
}

/* ---- the hvcC ------------------------------------------------------------------------------ */

static int s_be16(const uint8_t *p)
{
    return p[0] << 8 | p[1];
}

/* Walks the arrays of an hvcC: for each NAL, calls fn (when not NULL)
 * with its array's type. 0, or -1 when malformed or fn refuses. */
static int s_hvcc_walk(const uint8_t *a, int len, int (*fn)(void *, int, const uint8_t *, int), void *arg)
{
    if (a == NULL || len < S_HVCC_HEAD || a[0] > 1 || (a[21] & 3) == 2)
        return -1;
    int p = S_HVCC_HEAD;
    for (int i = 0; i < a[22]; i++) {
        if (p + 3 > len)
            return -1;
        int type = a[p] & 0x3f, count = s_be16(a + p + 1);
        p += 3;
        for (int k = 0; k < count; k++) {
            if (p + 2 > len)
                return -1;
            int l = s_be16(a + p);
            if (p + 2 + l > len)
                return -1;
            if (fn != NULL && fn(arg, type, a + p + 2, l) < 0)
                return -1;
            p += 2 + l;
        }
    }
    return 0;
}

static int s_note_id(void *arg, int type, const uint8_t *nal, int len)
{
    vid_hvcc_ids_t *ids = arg;
    if (type != VID_HEVC_VPS && type != VID_HEVC_SPS && type != VID_HEVC_PPS)
        return 0;
    int id = s_ps_id(nal, len, type);
    if (id < 0)
        return -1;
    if (type == VID_HEVC_VPS)
        ids->vps |= (uint16_t)(1u << id);
    else if (type == VID_HEVC_SPS)
        ids->sps |= (uint16_t)(1u << id);
    else
        ids->pps |= 1ULL << id;
    return 0;
}

int vid_hvcc_ids(const uint8_t *hvcc, int len, vid_hvcc_ids_t *out)
{
    memset(out, 0, sizeof(*out));
    if (s_hvcc_walk(hvcc, len, s_note_id, out) < 0 || out->sps == 0 || out->pps == 0) {
        memset(out, 0, sizeof(*out));
        return -1;
    }
    out->nal_len = (hvcc[21] & 3) + 1;
    return 0;
}

int vid_hevc_renum_pick(const vid_hvcc_ids_t *used, vid_hevc_renum_t *r)
{
    r->vps = r->sps = r->pps = -1;
    for (int i = 0; i < 16; i++) {
        if (r->vps < 0 && !(used->vps & (1u << i)))
            r->vps = i;
        if (r->sps < 0 && !(used->sps & (1u << i)))
            r->sps = i;
    }
    for (int i = 1; i <= 30 && r->pps < 0; i++)
        if (!(used->pps & (1ULL << i)))
            r->pps = i;
    if (r->vps < 0 || r->sps < 0 || r->pps < 0)
        return -1;
    /* PPS id 0's code is 1 bit: the longer code plus the reserved bits add 8 */
    r->extra_bits = 8 - (s_ue_len((uint32_t)r->pps) - 1);
    return 0;
}

/* The fields a rewrite changes at the head of a NAL's payload: reads
 * them from rb and writes their new values to w. 0, or -1 to refuse. */
typedef int (*s_edit_fn)(const vid_hevc_renum_t *r, int type, s_rbsp_t *rb, s_w_t *w);

/* Rewrites nal into out[cap]: its header, edit's fields, then the rest
 * of its payload bit for bit. Its length, or -1. */
static int s_rewrite(const vid_hevc_renum_t *r, const uint8_t *nal, int len, uint8_t *out, int cap, s_edit_fn edit)
{
    s_rbsp_t rb;
    if (s_rbsp_open(&rb, nal, len) < 0)
        return -1;
    int stop = s_stop_bit(&rb), rc = -1;
    s_w_t w;
    s_w_open(&w, nal, out, cap);
    if (stop >= 0 && edit(r, vid_hevc_nal_type(nal, len), &rb, &w) == 0 && rb.pos <= stop)
        rc = s_w_finish(&w, &rb, stop);
    s_rbsp_close(&rb);
    return rc;
}

/* A VPS's, SPS's or PPS's ids (libx265's are 0) and a PPS's reserved slice header bits. */
static int s_edit_ps(const vid_hevc_renum_t *r, int type, s_rbsp_t *rb, s_w_t *w)
{
    if (type == VID_HEVC_VPS || type == VID_HEVC_SPS) {
        if (s_bits(rb, 4) != 0)
            return -1;
        s_w_bits(w, (uint32_t)r->vps, 4);
    }
    if (type == VID_HEVC_SPS) {
        int from = rb->pos, msl = (int)s_bits(rb, 3);
        if (msl > 6)
            return -1;
        s_bits(rb, 1);
        s_skip_ptl(rb, msl);
        int to = rb->pos;
        rb->pos = from;
        s_w_copy(w, rb, to);
        if (s_ue(rb) != 0)
            return -1;
        s_w_ue(w, (uint32_t)r->sps);
    }
    if (type == VID_HEVC_PPS) {
        if (s_ue(rb) != 0 || s_ue(rb) != 0)
            return -1;
        s_w_ue(w, (uint32_t)r->pps);
        s_w_ue(w, (uint32_t)r->sps);
        s_w_bits(w, s_bits(rb, 2), 2); /* dependent slices, output flag */
        if (s_bits(rb, 3) != 0)        /* num_extra_slice_header_bits */
            return -1;
        s_w_bits(w, (uint32_t)r->extra_bits, 3);
    }
    return 0;
}

/* A picture's first slice header: its PPS id (0) and the reserved bits after it. */
static int s_edit_slice(const vid_hevc_renum_t *r, int type, s_rbsp_t *rb, s_w_t *w)
{
    if (s_bits(rb, 1) != 1) /* first_slice_segment_in_pic_flag */
        return -1;
    s_w_bits(w, 1, 1);
    if (type >= VID_HEVC_BLA_W_LP) /* an IRAP picture: no_output_of_prior_pics_flag */
        s_w_bits(w, s_bits(rb, 1), 1);
    if (s_ue(rb) != 0)
        return -1;
    s_w_ue(w, (uint32_t)r->pps);
    s_w_bits(w, 0, r->extra_bits); /* slice_reserved_flag[]: their value is ignored */
    return 0;
}

int vid_hevc_renum_ps(const vid_hevc_renum_t *r, const uint8_t *nal, int len, uint8_t *out, int cap)
{
    int type = vid_hevc_nal_type(nal, len);
    if (type != VID_HEVC_VPS && type != VID_HEVC_SPS && type != VID_HEVC_PPS)
        return -1;
    return s_rewrite(r, nal, len, out, cap, s_edit_ps);
}

int vid_hevc_renum_slice(const vid_hevc_renum_t *r, const uint8_t *nal, int len, uint8_t *out, int cap)
{
    int type = vid_hevc_nal_type(nal, len);
    if (type < 0 || type > VID_HEVC_CRA || (type >= 10 && type <= 15))
        return -1;
    return s_rewrite(r, nal, len, out, cap, s_edit_slice);
}

/* One hvcC array copied to *o, with the added NALs of its type after its own. */
static int s_copy_array(const uint8_t *a, int *p, uint8_t *out, int *o, const uint8_t *const *nals, const int *lens,
                        int n, bool *used)
{
    int type = a[*p] & 0x3f, count = s_be16(a + *p + 1), start = *o;
    memcpy(out + *o, a + *p, 3);
    *o += 3;
    *p += 3;
    for (int k = 0; k < count; k++) {
        int l = s_be16(a + *p);
        memcpy(out + *o, a + *p, (size_t)l + 2);
        *o += l + 2;
        *p += l + 2;
    }
    for (int i = 0; i < n; i++) {
        if (used[i] || vid_hevc_nal_type(nals[i], lens[i]) != type)
            continue;
        if (++count > 0xffff)
            return -1;
        out[(*o)++] = (uint8_t)(lens[i] >> 8);
        out[(*o)++] = (uint8_t)lens[i];
        memcpy(out + *o, nals[i], (size_t)lens[i]);
        *o += lens[i];
        used[i] = true;
    }
    out[start + 1] = (uint8_t)(count >> 8);
    out[start + 2] = (uint8_t)count;
    return 0;
}

int vid_hvcc_join(const uint8_t *src, int len, const uint8_t *const *nals, const int *lens, int n, uint8_t **out,
                  int *out_len)
{
    *out = NULL;
    if (s_hvcc_walk(src, len, NULL, NULL) < 0 || n < 0 || n > 16)
        return -1;
    size_t cap = (size_t)len + 3 * (size_t)n;
    for (int i = 0; i < n; i++) {
        if (vid_hevc_nal_type(nals[i], lens[i]) < 0 || lens[i] > 0xffff)
            return -1;
        cap += 2 + (size_t)lens[i];
    }
    uint8_t *o = malloc(cap);
    bool used[16] = {false};
    if (o == NULL)
        return -1;
    memcpy(o, src, S_HVCC_HEAD);
    int p = S_HVCC_HEAD, w = S_HVCC_HEAD, arrays = src[22];
    for (int i = 0; i < src[22]; i++)
        if (s_copy_array(src, &p, o, &w, nals, lens, n, used) < 0)
            goto fail;
    for (int i = 0; i < n; i++) { /* a type the source has no array of */
        if (used[i])
            continue;
        if (++arrays > 255)
            goto fail;
        uint8_t head[3] = {(uint8_t)(0x80 | vid_hevc_nal_type(nals[i], lens[i])), 0, 0}; /* array_completeness */
        p = 0;
        if (s_copy_array(head, &p, o, &w, nals, lens, n, used) < 0)
            goto fail;
    }
    o[22] = (uint8_t)arrays;
    *out = o;
    *out_len = w;
    return 0;
fail:
    free(o);
    return -1;
}
