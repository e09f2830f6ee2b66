/*  libFuzzer target for the avcC parser of services/video-worker/vid_recut
 *  (vid_recut_avcc_ids): the avcC comes from the source file, so it is
 *  hostile. The whole input is the avcC. Besides memory safety it
 *  abort()s when an accepted record has no SPS or no PPS id, declares an
 *  SPS id past 31, or a NAL length prefix other than 1, 2 or 4 bytes, or
 *  when a parse is not deterministic. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vid_recut.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 1 << 16)
        return 0;
    uint32_t sps = 0, sps2 = 0;
    uint64_t pps[4], pps2[4];
    int nal = 0, nal2 = 0;
    int rc = vid_recut_avcc_ids(data, (int)size, &sps, pps, &nal);
    int rc2 = vid_recut_avcc_ids(data, (int)size, &sps2, pps2, &nal2);
    if (rc != rc2)
        abort();
    if (rc != 0)
        return 0;
    if (sps == 0 || (pps[0] | pps[1] | pps[2] | pps[3]) == 0 || (nal != 1 && nal != 2 && nal != 4))
        abort();
    if (sps != sps2 || memcmp(pps, pps2, sizeof(pps)) != 0 || nal != nal2)
        abort();
    return 0;
}
