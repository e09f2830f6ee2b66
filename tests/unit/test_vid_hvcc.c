/*  Unit tests for services/video-worker/vid_hvcc: the ids an hvcC declares,
 *  the choice of unused ones, and the renumbering of libx265's parameter
 *  sets and slice headers. The bytes are real: libx265 output made at test
 *  time with the ffmpeg CLI (an Annex B stream with one slice per picture,
 *  and an MP4 whose hvcC is read out of its sample entry). A stream
 *  renumbered whole must decode to the very same pixels (ffmpeg's
 *  framemd5), and malformed input is refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vid_hvcc.h"
#include "unit_run.h"

static char s_dir[64]; /* the temporary directory of the media */

static uint8_t *s_mp4, *s_es; /* the MP4 and the Annex B stream, whole */
static int s_mp4_len, s_es_len;
static const uint8_t *s_hvcc; /* the MP4's hvcC payload (inside s_mp4) */
static int s_hvcc_len;

#define S_MAX_NALS 64
static const uint8_t *s_nal[S_MAX_NALS]; /* the stream's NALs, start codes off (inside s_es) */
static int s_nal_len[S_MAX_NALS], s_nals;

/* The ids the tests renumber to (as vid_hevc_renum_pick would for a
 * source using VPS 0-2, SPS 0-4 and PPS 0-8): ue(9) is 7 bits, 6 more
 * than ue(0), so 2 reserved bits make the 8. */
static const vid_hevc_renum_t s_r = {.vps = 3, .sps = 5, .pps = 9, .extra_bits = 2};

/* ---- helpers ------------------------------------------------------------------------------ */

/* A shell command in the media directory (unit_run.h). */
#define s_run(...) unit_run(s_dir, __VA_ARGS__)

/* A file of s_dir, whole (malloc'd), or NULL. */
static uint8_t *s_slurp(const char *name, int *len)
{
    char path[128];
    snprintf(path, sizeof(path), "%s/%s", s_dir, name);
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    size_t cap = 1 << 16, n = 0, got;
    uint8_t *b = malloc(cap);
    while (b != NULL && (got = fread(b + n, 1, cap - n, f)) > 0)
        if ((n += got) == cap)
            b = realloc(b, cap *= 2);
    fclose(f);
    *len = (int)n;
    return b;
}

static void s_spill(const char *name, const uint8_t *b, int len)
{
    char path[128];
    snprintf(path, sizeof(path), "%s/%s", s_dir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(b, 1, (size_t)len, f), (size_t)len);
    assert_int_equal(fclose(f), 0);
}

/* Splits an Annex B stream at its start codes into s_nal (the zero byte
 * of a 4-byte start code is not the NAL's: a NAL never ends in 0). */
static int s_split(const uint8_t *b, int len)
{
    int n = 0, start = -1;
    for (int i = 0; i + 3 <= len; i++) {
        if (b[i] != 0 || b[i + 1] != 0 || b[i + 2] != 1)
            continue;
        if (start >= 0 && n < S_MAX_NALS) {
            int e = i;
            while (e > start && b[e - 1] == 0)
                e--;
            s_nal[n] = b + start;
            s_nal_len[n++] = e - start;
        }
        start = i + 3;
        i += 2;
    }
    if (start >= 0 && n < S_MAX_NALS) {
        s_nal[n] = b + start;
        s_nal_len[n++] = len - start;
    }
    return n;
}

/* The first NAL of the stream of a type (the slices: any type below the VPS's), or -1. */
static int s_find(int type)
{
    for (int i = 0; i < s_nals; i++) {
        int t = vid_hevc_nal_type(s_nal[i], s_nal_len[i]);
        if (type < 0 ? t >= 0 && t < VID_HEVC_VPS : t == type)
            return i;
    }
    return -1;
}

/* The offset in an hvcC of the length prefix of the first NAL of the array
 * of a type, or of the last NAL of all when type is -1; -1 when none. */
static int s_hvcc_nal(const uint8_t *a, int len, int type)
{
    int p = 23, last = -1;
    for (int i = 0; i < a[22]; i++) {
        int t = a[p] & 0x3f, count = a[p + 1] << 8 | a[p + 2];
        p += 3;
        for (int k = 0; k < count; k++) {
            if (t == type && k == 0)
                return p;
            last = p;
            p += 2 + (a[p] << 8 | a[p + 1]);
        }
    }
    assert_int_equal(p, len); /* nothing after the arrays */
    return type < 0 ? last : -1;
}

/* A bit reader over an RBSP with no emulation prevention bytes in its first bytes. */
typedef struct {
    const uint8_t *b;
    int pos;
} s_bits_t;

static unsigned s_u(s_bits_t *r, int k)
{
    unsigned v = 0;
    for (int i = 0; i < k; i++, r->pos++)
        v = v << 1 | ((r->b[r->pos / 8] >> (7 - r->pos % 8)) & 1);
    return v;
}

static unsigned s_ue(s_bits_t *r)
{
    int lead = 0;
    while (s_u(r, 1) == 0)
        lead++;
    return (1u << lead) - 1 + s_u(r, lead);
}

/* The frames of an Annex B file as decoded, one "stream, dts, pts,
 * duration, size, md5" line each (ffmpeg's framemd5, its '#' lines off;
 * into a file, so that a failed decode fails the command). */
static char *s_framemd5(const char *name)
{
    free(s_run("ffmpeg -nostdin -v error -xerror -i %s -f framemd5 -y %s.md5", name, name));
    char md5[128];
    snprintf(md5, sizeof(md5), "%s.md5", name);
    int len = 0;
    uint8_t *b = s_slurp(md5, &len);
    assert_non_null(b);
    char *out = malloc((size_t)len + 1), *o = out;
    for (int i = 0; i < len;) {
        int e = i;
        while (e < len && b[e] != '\n')
            e++;
        if (b[i] != '#') {
            memcpy(o, b + i, (size_t)(e - i));
            o += e - i;
            *o++ = '\n';
        }
        i = e + 1;
    }
    *o = '\0';
    free(b);
    return out;
}

static int s_setup(void **state)
{
    (void)state;
    strcpy(s_dir, "/tmp/test_vid_hvcc.XXXXXX");
    if (mkdtemp(s_dir) == NULL)
        return -1;
    char cmd[1024];
    /* faststart: the moov (and its hvcC) before any sample, so the scan for "hvcC" cannot hit slice data */
    snprintf(cmd, sizeof(cmd),
             "cd '%s' && "
             "ffmpeg -nostdin -v error -f lavfi -i testsrc2=size=160x120:rate=25 -t 1 -c:v libx265 "
             "  -x265-params log-level=error:info=0:bframes=0:open-gop=0:slices=1:wpp=0 "
             "  -bsf:v hevc_mp4toannexb -f hevc x.hevc && "
             "ffmpeg -nostdin -v error -f lavfi -i testsrc2=size=160x120:rate=25 -t 1 -c:v libx265 "
             "  -x265-params log-level=error -movflags +faststart x.mp4",
             s_dir);
    if (system(cmd) != 0 || (s_es = s_slurp("x.hevc", &s_es_len)) == NULL ||
        (s_mp4 = s_slurp("x.mp4", &s_mp4_len)) == NULL)
        return -1;
    s_nals = s_split(s_es, s_es_len);
    /* the hvcC box: its 4-byte size, "hvcC", then the record */
    for (int i = 4; i + 4 <= s_mp4_len && s_hvcc == NULL; i++) {
        if (memcmp(s_mp4 + i, "hvcC", 4) != 0)
            continue;
        int64_t size = (int64_t)s_mp4[i - 4] << 24 | s_mp4[i - 3] << 16 | s_mp4[i - 2] << 8 | s_mp4[i - 1];
        if (size < 8 + 23 || i - 4 + size > s_mp4_len)
            return -1;
        s_hvcc = s_mp4 + i + 4;
        s_hvcc_len = (int)size - 8;
    }
    return s_hvcc != NULL && s_nals >= 4 ? 0 : -1;
}

static int s_teardown(void **state)
{
    (void)state;
    free(s_es);
    free(s_mp4);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", s_dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* ---- tests ----------------------------------------------------------------------------------- */

/* libx265's hvcC (a VPS, an SPS and a PPS, each id 0, and an SEI array):
 * its ids and 4-byte NAL lengths; refusals of malformed copies. */
static void test_hvcc_ids(void **state)
{
    (void)state;
    vid_hvcc_ids_t ids;
    assert_int_equal(s_hvcc[22], 4); /* VPS, SPS, PPS and x265's SEI */
    assert_int_equal(vid_hvcc_ids(s_hvcc, s_hvcc_len, &ids), 0);
    assert_int_equal(ids.vps, 1);
    assert_int_equal(ids.sps, 1);
    assert_int_equal(ids.pps, 1);
    assert_int_equal(ids.nal_len, 4);

    int len = s_hvcc_len, vps = s_hvcc_nal(s_hvcc, len, VID_HEVC_VPS), sps = s_hvcc_nal(s_hvcc, len, VID_HEVC_SPS),
        pps = s_hvcc_nal(s_hvcc, len, VID_HEVC_PPS), last = s_hvcc_nal(s_hvcc, len, -1);
    assert_true(vps > 0 && sps > 0 && pps > 0 && last > pps);
    assert_int_equal(s_hvcc[vps + 2], 0x40); /* the NALs' own headers */
    assert_int_equal(s_hvcc[sps + 2], 0x42);
    assert_int_equal(s_hvcc[pps + 2], 0x44);
    uint8_t *bad = malloc((size_t)len);

    memcpy(bad, s_hvcc, (size_t)len);
    bad[0] = 0; /* configurationVersion 0 reads too */
    assert_int_equal(vid_hvcc_ids(bad, len, &ids), 0);
    bad[0] = 2;
    assert_int_equal(vid_hvcc_ids(bad, len, &ids), -1);
    assert_true(ids.vps == 0 && ids.sps == 0 && ids.pps == 0 && ids.nal_len == 0); /* cleared */

    memcpy(bad, s_hvcc, (size_t)len);
    bad[21] = (uint8_t)((bad[21] & ~3) | 1); /* 2-byte lengths */
    assert_int_equal(vid_hvcc_ids(bad, len, &ids), 0);
    assert_int_equal(ids.nal_len, 2);
    bad[21] = (uint8_t)((bad[21] & ~3) | 2); /* 3-byte lengths: no such thing */
    assert_int_equal(vid_hvcc_ids(bad, len, &ids), -1);

    memcpy(bad, s_hvcc, (size_t)len);
    bad[vps] = 0xff; /* the VPS runs past the end */
    assert_int_equal(vid_hvcc_ids(bad, len, &ids), -1);
    memcpy(bad, s_hvcc, (size_t)len);
    int l = (bad[last] << 8 | bad[last + 1]) + 1; /* the last NAL one byte past it */
    bad[last] = (uint8_t)(l >> 8);
    bad[last + 1] = (uint8_t)l;
    assert_int_equal(vid_hvcc_ids(bad, len, &ids), -1);

    memcpy(bad, s_hvcc, (size_t)len);
    bad[sps + 2] = 0x44; /* a PPS in the SPS array */
    assert_int_equal(vid_hvcc_ids(bad, len, &ids), -1);
    memcpy(bad, s_hvcc, (size_t)len);
    bad[pps - 3] = (uint8_t)((bad[pps - 3] & 0xc0) | 35); /* the PPS array declared as delimiters: no PPS */
    assert_int_equal(vid_hvcc_ids(bad, len, &ids), -1);

    assert_int_equal(vid_hvcc_ids(s_hvcc, len - 1, &ids), -1); /* cut short */
    assert_int_equal(vid_hvcc_ids(s_hvcc, 22, &ids), -1);
    assert_int_equal(vid_hvcc_ids(NULL, 0, &ids), -1);
    free(bad);
}

/* The lowest unused ids, the PPS's from 1 to 30, and the reserved bits
 * that make its code 8 bits longer than ue(0)'s. */
static void test_renum_pick(void **state)
{
    (void)state;
    vid_hvcc_ids_t used = {.vps = 1, .sps = 1, .pps = 1, .nal_len = 4};
    vid_hevc_renum_t r;
    assert_int_equal(vid_hevc_renum_pick(&used, &r), 0);
    assert_int_equal(r.vps, 1);
    assert_int_equal(r.sps, 1);
    assert_int_equal(r.pps, 1);
    assert_int_equal(r.extra_bits, 6); /* ue(1): 3 bits */

    used.pps = 0x7f; /* 0-6 */
    assert_int_equal(vid_hevc_renum_pick(&used, &r), 0);
    assert_int_equal(r.pps, 7);
    assert_int_equal(r.extra_bits, 2); /* ue(7): 7 bits */
    used.pps = 0x7;
    assert_int_equal(vid_hevc_renum_pick(&used, &r), 0);
    assert_true(r.pps == 3 && r.extra_bits == 4); /* ue(3): 5 bits */
    used.pps = 0x7fff;
    assert_int_equal(vid_hevc_renum_pick(&used, &r), 0);
    assert_true(r.pps == 15 && r.extra_bits == 0); /* ue(15): 9 bits */
    used.pps = 0x7ffffffe;                         /* 1-30: id 0 is libx265's own, 31 would need 11 bits */
    assert_int_equal(vid_hevc_renum_pick(&used, &r), -1);
    used.pps = 0x7ffffffe | 1ULL << 40; /* ids past 30 do not help */
    assert_int_equal(vid_hevc_renum_pick(&used, &r), -1);

    used = (vid_hvcc_ids_t){.vps = 0x7fff, .sps = 0xbfff, .pps = 1};
    assert_int_equal(vid_hevc_renum_pick(&used, &r), 0);
    assert_true(r.vps == 15 && r.sps == 14 && r.pps == 1);
    used.vps = 0xffff;
    assert_int_equal(vid_hevc_renum_pick(&used, &r), -1);
    used.vps = 1;
    used.sps = 0xffff;
    assert_int_equal(vid_hevc_renum_pick(&used, &r), -1);
}

/* libx265's VPS, SPS and PPS renumbered to 3, 5 and 9 (the PPS declaring
 * 2 reserved slice header bits), then joined to the source's hvcC: both
 * sets of ids read back from it. */
static void test_renum_ps(void **state)
{
    (void)state;
    int idx[3] = {s_find(VID_HEVC_VPS), s_find(VID_HEVC_SPS), s_find(VID_HEVC_PPS)};
    uint8_t *out[3];
    const uint8_t *nals[3];
    int lens[3];
    for (int i = 0; i < 3; i++) {
        assert_true(idx[i] >= 0);
        const uint8_t *nal = s_nal[idx[i]];
        int len = s_nal_len[idx[i]], cap = len + len / 2 + 16;
        out[i] = malloc((size_t)cap);
        lens[i] = vid_hevc_renum_ps(&s_r, nal, len, out[i], cap);
        assert_true(lens[i] > 0 && lens[i] <= cap);
        assert_memory_equal(out[i], nal, 2); /* the NAL header */
        nals[i] = out[i];
        assert_int_equal(vid_hevc_renum_ps(&s_r, out[i], lens[i], out[i] + lens[i], cap - lens[i]), -1); /* not 0 */
        assert_int_equal(vid_hevc_renum_ps(&s_r, nal, len, out[i], 4), -1);                              /* too small */
    }
    /* the VPS id is 4 fixed bits: nothing else moves */
    const uint8_t *vps = s_nal[idx[0]];
    assert_int_equal(lens[0], s_nal_len[idx[0]]);
    assert_int_equal(out[0][2], (vps[2] & 0x0f) | 3 << 4);
    assert_memory_equal(out[0] + 3, vps + 3, (size_t)lens[0] - 3);
    /* the PPS: its id, its SPS's, 2 flags kept, then num_extra_slice_header_bits */
    s_bits_t a = {s_nal[idx[2]] + 2, 0}, b = {out[2] + 2, 0};
    assert_int_equal(s_ue(&a), 0);
    assert_int_equal(s_ue(&a), 0);
    assert_int_equal(s_ue(&b), 9);
    assert_int_equal(s_ue(&b), 5);
    assert_int_equal(s_u(&b, 2), s_u(&a, 2));
    assert_int_equal(s_u(&a, 3), 0);
    assert_int_equal(s_u(&b, 3), 2);

    uint8_t *joined = NULL;
    int joined_len = 0;
    assert_int_equal(vid_hvcc_join(s_hvcc, s_hvcc_len, nals, lens, 3, &joined, &joined_len), 0);
    assert_int_equal(joined_len, s_hvcc_len + 6 + lens[0] + lens[1] + lens[2]); /* added to the arrays there */
    assert_int_equal(joined[22], s_hvcc[22]);
    assert_memory_equal(joined, s_hvcc, 22);
    vid_hvcc_ids_t ids;
    assert_int_equal(vid_hvcc_ids(joined, joined_len, &ids), 0);
    assert_int_equal(ids.vps, 0x9);
    assert_int_equal(ids.sps, 0x21);
    assert_true(ids.pps == (1 | 1ULL << 9));
    assert_int_equal(ids.nal_len, 4);
    int p = s_hvcc_nal(joined, joined_len, VID_HEVC_PPS); /* the source's PPS, then the new one */
    assert_int_equal(joined[p - 2] << 8 | joined[p - 1], 2);
    p += 2 + (joined[p] << 8 | joined[p + 1]);
    assert_int_equal(joined[p] << 8 | joined[p + 1], lens[2]);
    assert_memory_equal(joined + p + 2, out[2], (size_t)lens[2]);
    free(joined);

    /* nothing added: the same record; a NAL of a type with no array: a new array at the end */
    assert_int_equal(vid_hvcc_join(s_hvcc, s_hvcc_len, NULL, NULL, 0, &joined, &joined_len), 0);
    assert_int_equal(joined_len, s_hvcc_len);
    assert_memory_equal(joined, s_hvcc, (size_t)s_hvcc_len);
    free(joined);
    static const uint8_t sei[] = {0x50, 0x01, 0x80}; /* a suffix SEI (40) */
    const uint8_t *one[1] = {sei};
    int one_len[1] = {sizeof(sei)};
    assert_int_equal(vid_hvcc_join(s_hvcc, s_hvcc_len, one, one_len, 1, &joined, &joined_len), 0);
    assert_int_equal(joined_len, s_hvcc_len + 3 + 2 + 3);
    assert_int_equal(joined[22], s_hvcc[22] + 1);
    static const uint8_t tail[] = {0x80 | 40, 0, 1, 0, 3, 0x50, 0x01, 0x80};
    assert_memory_equal(joined + s_hvcc_len, tail, sizeof(tail));
    assert_int_equal(vid_hvcc_ids(joined, joined_len, &ids), 0);
    free(joined);
    assert_int_equal(vid_hvcc_join(s_hvcc, s_hvcc_len - 1, nals, lens, 3, &joined, &joined_len), -1);
    assert_null(joined);

    /* a slice is no parameter set */
    int s = s_find(-1);
    uint8_t slice_out[4096];
    assert_int_equal(vid_hevc_renum_ps(&s_r, s_nal[s], s_nal_len[s], slice_out, sizeof(slice_out)), -1);
    for (int i = 0; i < 3; i++)
        free(out[i]);
}

/* The ids the largest an hvcC may declare: SPS 15 and PPS 63 read
 * back, 16 and 64 are refused (the stream's sets renumbered to them by
 * vid_hevc_renum_ps, which takes any id, and joined to the hvcC). */
static int s_ids_renumbered(const vid_hevc_renum_t *r, vid_hvcc_ids_t *ids)
{
    const uint8_t *nals[3];
    uint8_t out[3][256];
    int lens[3], type[3] = {VID_HEVC_VPS, VID_HEVC_SPS, VID_HEVC_PPS};
    for (int i = 0; i < 3; i++) {
        int k = s_find(type[i]);
        assert_true(k >= 0 && s_nal_len[k] < 128);
        lens[i] = vid_hevc_renum_ps(r, s_nal[k], s_nal_len[k], out[i], sizeof(out[i]));
        assert_true(lens[i] > 0);
        nals[i] = out[i];
    }
    uint8_t *joined = NULL;
    int joined_len = 0;
    assert_int_equal(vid_hvcc_join(s_hvcc, s_hvcc_len, nals, lens, 3, &joined, &joined_len), 0);
    int rc = vid_hvcc_ids(joined, joined_len, ids);
    free(joined);
    return rc;
}

static void test_ids_edges(void **state)
{
    (void)state;
    vid_hvcc_ids_t ids;
    vid_hevc_renum_t r = {.vps = 15, .sps = 15, .pps = 63, .extra_bits = 0};
    assert_int_equal(s_ids_renumbered(&r, &ids), 0);
    assert_int_equal(ids.vps, 0x8001);
    assert_int_equal(ids.sps, 0x8001);
    assert_true(ids.pps == (1 | 1ULL << 63));
    r.sps = 16;
    assert_int_equal(s_ids_renumbered(&r, &ids), -1);
    r.sps = 15;
    r.pps = 64;
    assert_int_equal(s_ids_renumbered(&r, &ids), -1);
    /* ue(64) written by hand: 0000001 000001, the stop bit */
    static const uint8_t pps64[] = {0x44, 0x01, 0x02, 0x0c};
    const uint8_t *one[1] = {pps64};
    int one_len[1] = {sizeof(pps64)};
    uint8_t *joined = NULL;
    int joined_len = 0;
    assert_int_equal(vid_hvcc_join(s_hvcc, s_hvcc_len, one, one_len, 1, &joined, &joined_len), 0);
    assert_int_equal(vid_hvcc_ids(joined, joined_len, &ids), -1);
    free(joined);
}

/* The IDR's slice header renumbered: one byte longer, everything after
 * its first byte the same bytes one place on; a synthetic slice with
 * emulation prevention on both sides; refusals. */
static void test_renum_slice(void **state)
{
    (void)state;
    int s = s_find(-1);
    assert_true(s >= 0);
    const uint8_t *nal = s_nal[s];
    int len = s_nal_len[s], cap = len + len / 2 + 16;
    int type = vid_hevc_nal_type(nal, len);
    assert_true(type == 19 || type == 20); /* IDR_W_RADL or IDR_N_LP */
    uint8_t *out = malloc((size_t)cap);
    /* 1 + 1 + 1 bits (first slice, no_output_of_prior_pics, ue(0)) become
     * 1 + 1 + 7 + 2: the bytes after the first are the same, one place on
     * (and so are their escapes) */
    assert_int_equal(vid_hevc_renum_slice(&s_r, nal, len, out, cap), len + 1);
    assert_memory_equal(out, nal, 2);
    unsigned head = 0x8000 | (nal[2] >> 6 & 1) << 14 | 0x0a << 7 | (nal[2] & 0x1f);
    assert_int_equal(out[2] << 8 | out[3], head);
    assert_memory_equal(out + 4, nal + 3, (size_t)len - 3);
    assert_int_equal(vid_hevc_renum_slice(&s_r, nal, len, out, len + 1), len + 1); /* exactly enough */
    assert_int_equal(vid_hevc_renum_slice(&s_r, nal, len, out, len), -1);          /* one short */
    assert_int_equal(vid_hevc_renum_slice(&s_r, nal, len, out, 2), -1);

    /* refusals: not a picture's first slice, a renumbered one (PPS 9), a parameter set */
    uint8_t *bad = malloc((size_t)len);
    memcpy(bad, nal, (size_t)len);
    bad[2] ^= 0x80;
    assert_int_equal(vid_hevc_renum_slice(&s_r, bad, len, out, cap), -1);
    uint8_t *again = malloc((size_t)cap + 2);
    assert_int_equal(vid_hevc_renum_slice(&s_r, nal, len, again, cap), len + 1);
    assert_int_equal(vid_hevc_renum_slice(&s_r, again, len + 1, out, cap), -1);
    int v = s_find(VID_HEVC_VPS);
    assert_int_equal(vid_hevc_renum_slice(&s_r, s_nal[v], s_nal_len[v], out, cap), -1);
    assert_int_equal(vid_hevc_renum_slice(&s_r, nal, 2, out, cap), -1); /* a header alone */
    free(again);
    free(bad);
    free(out);

    /* TRAIL_R: first slice, ue(0), 6 zero bits, then 00 00 03 01 (RBSP
     * 00 00 01) and the stop bit. Written: 1, ue(9) 0001010, 00, the same 6
     * bits, the rest one byte on (RBSP 8a 00 00 00 01 80): the escape moves */
    static const uint8_t esc[] = {0x02, 0x01, 0xc0, 0x00, 0x00, 0x03, 0x01, 0x80};
    static const uint8_t want[] = {0x02, 0x01, 0x8a, 0x00, 0x00, 0x03, 0x00, 0x01, 0x80};
    uint8_t got[32];
    assert_int_equal(vid_hevc_renum_slice(&s_r, esc, sizeof(esc), got, sizeof(got)), sizeof(want));
    assert_memory_equal(got, want, sizeof(want));
}

/* The whole stream renumbered (parameter sets to 3, 5 and 9, every slice
 * to PPS 9 with its 2 reserved bits) decodes to the same pixels. */
static void test_renum_decodes_the_same(void **state)
{
    (void)state;
    size_t cap = (size_t)s_es_len * 2 + 1024, n = 0;
    uint8_t *es = malloc(cap);
    int slices = 0, longer = 0;
    for (int i = 0; i < s_nals; i++) {
        const uint8_t *nal = s_nal[i];
        int len = s_nal_len[i], type = vid_hevc_nal_type(nal, len), w;
        assert_true(type >= 0);
        memcpy(es + n, "\0\0\0\1", 4);
        n += 4;
        if (type >= VID_HEVC_VPS && type <= VID_HEVC_PPS) {
            w = vid_hevc_renum_ps(&s_r, nal, len, es + n, len + len / 2 + 16);
        } else if (type < VID_HEVC_VPS) {
            w = vid_hevc_renum_slice(&s_r, nal, len, es + n, len + len / 2 + 16);
            slices++;
            assert_true(w == len + 1 || w == len + 2); /* + 2: an escape the new header needs */
            longer += w - len - 1;
        } else {
            memcpy(es + n, nal, (size_t)len);
            w = len;
        }
        assert_true(w > 0);
        n += (size_t)w;
        assert_true(n + 4 <= cap);
    }
    assert_int_equal(slices, 25);
    assert_int_equal(longer, 0); /* none in this sample */
    s_spill("renum.hevc", es, (int)n);
    free(es);

    char *was = s_framemd5("x.hevc"), *now = s_framemd5("renum.hevc");
    int frames = 0;
    for (const char *c = was; (c = strchr(c, '\n')) != NULL; c++)
        frames++;
    assert_int_equal(frames, 25);
    assert_string_equal(now, was);
    free(was);
    free(now);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hvcc_ids),    cmocka_unit_test(test_renum_pick),
        cmocka_unit_test(test_renum_ps),    cmocka_unit_test(test_ids_edges),
        cmocka_unit_test(test_renum_slice), cmocka_unit_test(test_renum_decodes_the_same),
    };
    return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
