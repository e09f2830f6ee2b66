/*  gw_preamble — the line a worker writes before a streamed result
 *  (proto/rfb.md 5, gw_tstream.c): the result's type and the source's
 *  freshness, which become the head of the answer.
 *
 *  A pure function over the file's first bytes (no h2o, no I/O), so that
 *  tests/unit/gateway/test_preamble.c and fuzz/fuzz_preamble.c reach it.
 *  What the worker writes is not trusted: the line is bounded, must be a
 *  JSON object with a non-empty content_type, and every value taken is
 *  cut to its field and made one printable line (a header value).
 */
#ifndef GW_PREAMBLE_H
#define GW_PREAMBLE_H

#include <stddef.h>
#include <stdint.h>

/* The longest preamble line, its newline included: what a worker may
 * write before the body. */
#define GW_PREAMBLE_MAX 4096

typedef struct {
    char ctype[128]; /* never empty once read */
    char cc[160];    /* the source's Cache-Control, Expires, Last-Modified, or "" */
    char ex[64];
    char lm[64];
    uint64_t body_at; /* where the body starts: just past the newline */
} gw_preamble_t;

/* Reads the preamble from buf[0..n) (borrowed), the first n bytes of a
 * file that holds size bytes so far (n == min(size, GW_PREAMBLE_MAX)).
 * Returns 1 with *out filled, 0 when the line is not whole yet (more may
 * come), or -1 when it can never be valid (*out then undefined). */
int gw_preamble_read(const char *buf, size_t n, uint64_t size, gw_preamble_t *out);

#endif
