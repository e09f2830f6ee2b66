/*  libFuzzer target for the origin response parser (gw_origin_parse.c) and
 *  the chunked body decoder (picohttpparser's phr_decode_chunked, from
 *  libh2o): both read bytes straight from origin servers.
 *
 *  Input: one flags byte (bit 0: the request was HEAD; the rest: where to
 *  split the body between two reads), then the response bytes.
 *  Besides memory safety it abort()s when:
 *    - a refusal has no reason, or an accepted head breaks an invariant
 *      (status, body mode vs length and keep-alive, headers inside the
 *      buffer, no obs-fold entries);
 *    - the result depends on what follows the head (parsing exactly the
 *      head gives the same answer), or a strict prefix of an accepted head
 *      is anything but "need more";
 *    - the chunked decoder gives different bytes or a different end when
 *      the body arrives in two reads instead of one. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw_origin_parse.h"

/* Decodes body[0..len) as chunked, in two reads split at `split`. Writes
 * the decoded bytes to out (capacity len) and returns their count; *end is
 * the decoder's last result (-1 error, -2 incomplete, >= 0 bytes after the
 * end). Returns the decoded length. */
static size_t s_dechunk(const char *body, size_t len, size_t split, char *out, ssize_t *end)
{
    struct phr_chunked_decoder d;
    memset(&d, 0, sizeof(d));
    d.consume_trailer = 1;
    char *tmp = malloc(len ? len : 1);
    if (tmp == NULL)
        abort();
    size_t outn = 0, at = 0;
    size_t cuts[2] = {split < len ? split : len, len};
    *end = -2;
    for (int i = 0; i < 2 && *end == -2; i++) {
        size_t n = cuts[i] - at;
        memcpy(tmp, body + at, n);
        size_t got = n;
        *end = phr_decode_chunked(&d, tmp, &got);
        if (*end == -1)
            break;
        if (got > n) /* decoding never grows the data */
            abort();
        memcpy(out + outn, tmp, got);
        outn += got;
        if (*end >= 0) {
            /* the unread rest stays in the caller's buffer; report it against
             * the whole body so that both splits compare */
            *end += (ssize_t)(len - cuts[i]);
        }
        at = cuts[i];
    }
    free(tmp);
    return outn;
}

static void s_same_head(const gw_origin_head_t *a, const gw_origin_head_t *b)
{
    if (a->status != b->status || a->body != b->body || a->content_length != b->content_length ||
        a->keepalive != b->keepalive || a->n_headers != b->n_headers)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int is_head = data[0] & 1;
    size_t split_hint = data[0] >> 1;
    const char *buf = (const char *)data + 1;
    size_t len = size - 1;

    /* A copy of exactly the input, so that ASan sees reads past its end. */
    char *copy = malloc(len ? len : 1);
    if (copy == NULL)
        abort();
    memcpy(copy, buf, len);

    gw_origin_head_t head, again;
    const char *why = NULL;
    int r = gw_origin_parse_head(copy, len, is_head, &head, &why);
    if (r < 0) {
        if (r != -1 || why == NULL || why[0] == '\0' || strchr(why, '\n') != NULL)
            abort();
        goto done;
    }
    if (r == 0)
        goto done;
    if ((size_t)r > len || (size_t)r > GW_ORIGIN_MAX_HEAD_BYTES)
        abort();
    if (head.status < 200 || head.status > 599 || head.n_headers > GW_ORIGIN_MAX_HEADERS)
        abort();
    for (size_t i = 0; i < head.n_headers; i++) {
        const struct phr_header *h = &head.headers[i];
        if (h->name == NULL || h->name_len == 0 || h->name < copy || h->name + h->name_len > copy + r ||
            h->value < copy || h->value + h->value_len > copy + r)
            abort();
    }
    switch (head.body) {
    case GW_BODY_NONE:
        if (!is_head && head.status != 204 && head.status != 304)
            abort();
        break;
    case GW_BODY_LENGTH:
        if (head.content_length < 0 || is_head)
            abort();
        break;
    case GW_BODY_CHUNKED:
        if (head.content_length != -1 || is_head)
            abort();
        break;
    case GW_BODY_CLOSE:
        if (head.content_length != -1 || head.keepalive || is_head)
            abort();
        break;
    default: abort();
    }

    /* The same answer from exactly the head, and "need more" from less. */
    {
        char *exact = malloc((size_t)r);
        if (exact == NULL)
            abort();
        memcpy(exact, copy, (size_t)r);
        const char *why2 = NULL;
        if (gw_origin_parse_head(exact, (size_t)r, is_head, &again, &why2) != r)
            abort();
        s_same_head(&head, &again);
        if (gw_origin_parse_head(exact, (size_t)r - 1, is_head, &again, &why2) != 0)
            abort();
        free(exact);
    }

    if (head.body == GW_BODY_CHUNKED) {
        const char *body = copy + r;
        size_t blen = len - (size_t)r;
        char *one = malloc(blen ? blen : 1), *two = malloc(blen ? blen : 1);
        if (one == NULL || two == NULL)
            abort();
        ssize_t end1, end2;
        size_t n1 = s_dechunk(body, blen, blen, one, &end1);
        size_t n2 = s_dechunk(body, blen, split_hint * blen / 127, two, &end2);
        if (end1 != end2)
            abort();
        if (end1 != -1 && (n1 != n2 || memcmp(one, two, n1) != 0))
            abort();
        if (end1 >= 0 && (size_t)end1 > blen)
            abort();
        free(one);
        free(two);
    }
done:
    free(copy);
    return 0;
}
