/*  libFuzzer target for services/gateway/gw_preamble.c: the line a worker
 *  writes before a streamed result (gw_tstream.c). The gateway does not
 *  trust what lands in its spool directory: what it takes becomes header
 *  values of an answer.
 *
 *  Input: 8 bytes, how much more the file holds beyond the input
 *  (little-endian, taken modulo 2^20), then the file's first bytes (at
 *  most GW_PREAMBLE_MAX are shown to the reader, as gw_tstream does).
 *  Besides memory safety (and leaks) it abort()s when:
 *    - the result is not 1, 0 or -1;
 *    - 0 ("not yet") is given for bytes that hold a newline, or for a file
 *      already GW_PREAMBLE_MAX bytes long;
 *    - 1 is given when the shown bytes have no newline; body_at is not
 *      just past the first newline; content_type is empty or starts with a
 *      space; a value is not NUL-terminated within its field or holds a
 *      control byte;
 *    - reading again gives another answer. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gw_preamble.h"

static void s_check_value(const char *v, size_t cap)
{
    const char *end = memchr(v, '\0', cap);
    if (end == NULL)
        abort();
    for (const char *c = v; c < end; c++)
        if ((unsigned char)*c < 0x20 || *c == 0x7f)
            abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 8)
        return 0;
    uint64_t more = 0;
    for (int i = 0; i < 8; i++)
        more |= (uint64_t)data[i] << (8 * i);
    more %= 1u << 20;
    const char *buf = (const char *)data + 8;
    size_t have = size - 8;
    size_t n = have < GW_PREAMBLE_MAX ? have : GW_PREAMBLE_MAX;
    uint64_t fsize = (uint64_t)have + more;
    /* a heap copy of exactly n bytes: a read past what was shown is caught */
    char *shown = malloc(n ? n : 1);
    if (shown == NULL)
        abort();
    memcpy(shown, buf, n);
    gw_preamble_t p, q;
    memset(&p, 0, sizeof(p)); /* the fields past each NUL are compared too */
    memset(&q, 0, sizeof(q));
    int rc = gw_preamble_read(shown, n, fsize, &p);
    const char *nl = memchr(shown, '\n', n);
    switch (rc) {
    case 0:
        if (nl != NULL || fsize >= GW_PREAMBLE_MAX)
            abort();
        break;
    case 1:
        if (nl == NULL || p.body_at != (uint64_t)(nl - shown) + 1)
            abort();
        s_check_value(p.ctype, sizeof(p.ctype));
        s_check_value(p.cc, sizeof(p.cc));
        s_check_value(p.ex, sizeof(p.ex));
        s_check_value(p.lm, sizeof(p.lm));
        if (p.ctype[0] == '\0' || p.ctype[0] == ' ')
            abort();
        break;
    case -1: break;
    default: abort();
    }
    int again = gw_preamble_read(shown, n, fsize, &q);
    if (again != rc || (rc == 1 && memcmp(&p, &q, sizeof(p)) != 0))
        abort();
    free(shown);
    return 0;
}
