/*  libFuzzer target for services/video-worker/vid_core's vid_index_load: a
 *  saved index may come back from a shared cache, so it is hostile input.
 *  Each input is tried twice: as it is (the checksum almost always refuses
 *  it) and with its last 4 bytes replaced by the right CRC-32, so that the
 *  field checks behind the checksum are explored too.
 *  Besides memory safety it abort()s when a refusal has no reason, or when
 *  an accepted index does not save back to the same bytes, makes no
 *  playlist, or has a segment whose EXTINF is not positive or whose info
 *  lies outside the index. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "vid_core.h"

static void s_check(const uint8_t *data, size_t size)
{
    char err[256] = "";
    vid_index_t *ix = vid_index_load(data, size, err, sizeof(err));
    if (ix == NULL) {
        if (err[0] == '\0')
            abort();
        return;
    }
    uint8_t *out = NULL;
    size_t len = 0;
    if (vid_index_save(ix, &out, &len) != 0 || len != size || memcmp(out, data, size) != 0)
        abort();
    free(out);
    char *m3u8 = NULL;
    if (vid_hls_playlist(ix, NULL, &m3u8, &len) != 0 || strlen(m3u8) != len)
        abort();
    free(m3u8);
    int n = vid_index_segments(ix);
    double sum = 0;
    for (int i = 0; i < n; i++) {
        vid_segment_info_t info;
        if (vid_index_segment_info(ix, i, &info) != 0 || !(info.duration > 0) || info.pos_lo > info.pos_hi)
            abort();
        sum += info.duration;
    }
    if (n < 1 || vid_index_segment_info(ix, n, &(vid_segment_info_t){0}) != -1 ||
        sum - vid_index_duration(ix) > 0.001 * n || vid_index_duration(ix) - sum > 0.001 * n)
        abort();
    vid_index_destroy(&ix);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    s_check(data, size);
    if (size < 4)
        return 0;
    uint8_t *fixed = malloc(size);
    if (fixed == NULL)
        abort();
    memcpy(fixed, data, size);
    uint32_t crc = (uint32_t)crc32(0, fixed, (uInt)(size - 4));
    for (int b = 0; b < 4; b++)
        fixed[size - 4 + b] = (uint8_t)(crc >> (8 * b));
    s_check(fixed, size);
    free(fixed);
    return 0;
}
