#include "gw_origin_parse.h"

#include <string.h>
#include <strings.h>

/* Whether c is a tchar (RFC 9110 §5.6.2). Returns 1 or 0. */
static int s_is_tchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return 1;
    return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* Whether name[0..len) is a non-empty token. Returns 1 or 0. */
static int s_is_token(const char *name, size_t len)
{
    if (len == 0)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!s_is_tchar((unsigned char)name[i]))
            return 0;
    return 1;
}

/* Whether header h is named `name` (lower case), ignoring case. Returns 1 or 0. */
static int s_header_is(const struct phr_header *h, const char *name)
{
    size_t n = strlen(name);
    return h->name_len == n && strncasecmp(h->name, name, n) == 0;
}

/* Whether elem[0..len) is `token`, ignoring case. Returns 1 or 0. */
static int s_elem_is(const char *elem, size_t len, const char *token)
{
    size_t n = strlen(token);
    return len == n && strncasecmp(elem, token, n) == 0;
}

/* Takes the next element of a comma-separated list (RFC 9110 §5.6.1) from
 * *p (up to end), with optional whitespace around it trimmed, and advances
 * *p past it and its comma. Empty elements come back with *elem_len 0.
 * Returns 1 when an element was taken, 0 at the end of the list. */
static int s_next_elem(const char **p, const char *end, const char **elem, size_t *elem_len)
{
    if (*p == NULL || *p > end)
        return 0;
    const char *s = *p, *e = s;
    while (e < end && *e != ',')
        e++;
    *p = e < end ? e + 1 : NULL; /* NULL: no list left after this element */
    while (s < e && (*s == ' ' || *s == '\t'))
        s++;
    while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
        e--;
    *elem = s;
    *elem_len = (size_t)(e - s);
    return 1;
}

/* Folds one Content-Length field value (a comma list of 1*DIGIT) into
 * *clen (-1 when none was seen yet). Returns 0, or -1 with *why when an
 * element is not a plain decimal number, overflows, or differs from a
 * value seen before. */
static int s_add_length(const char *v, size_t vlen, int64_t *clen, const char **why)
{
    const char *p = v, *elem;
    size_t elen;
    while (s_next_elem(&p, v + vlen, &elem, &elen)) {
        if (elen == 0) {
            *why = "origin sent a bad Content-Length";
            return -1;
        }
        int64_t n = 0;
        for (size_t i = 0; i < elen; i++) {
            if (elem[i] < '0' || elem[i] > '9' || n > (INT64_MAX - (elem[i] - '0')) / 10) {
                *why = "origin sent a bad Content-Length";
                return -1;
            }
            n = n * 10 + (elem[i] - '0');
        }
        if (*clen >= 0 && *clen != n) {
            *why = "origin sent conflicting Content-Length";
            return -1;
        }
        *clen = n;
    }
    return 0;
}

/* Checks what phr_parse_response does not: `HTTP/1.d SP 3DIGIT` followed by
 * SP or the end of the line, and a status in 100..599. Returns 0 or -1. */
static int s_check_status_line(const char *buf, size_t len, int status)
{
    if (len < 13 || memcmp(buf, "HTTP/1.", 7) != 0 || buf[7] < '0' || buf[7] > '9' || buf[8] != ' ')
        return -1;
    for (int i = 9; i < 12; i++)
        if (buf[i] < '0' || buf[i] > '9')
            return -1;
    if (buf[12] != ' ' && buf[12] != '\r' && buf[12] != '\n')
        return -1;
    return status >= 100 && status <= 599 ? 0 : -1;
}

/* Derives the framing of a final response from its header fields into
 * *out (status, minor_version and headers already set). Returns 0, or -1
 * with *why (static). */
static int s_framing(gw_origin_head_t *out, int is_head, const char **why)
{
    int64_t clen = -1;
    int has_te = 0, te_codings = 0, te_chunked = 0, te_last_chunked = 0;
    int conn_close = 0, conn_keepalive = 0;
    for (size_t i = 0; i < out->n_headers; i++) {
        const struct phr_header *h = &out->headers[i];
        if (h->name == NULL) {
            *why = "origin sent a folded header line (obs-fold)";
            return -1;
        }
        if (!s_is_token(h->name, h->name_len)) {
            *why = "origin sent an invalid header name";
            return -1;
        }
        const char *p = h->value, *elem;
        size_t elen;
        if (s_header_is(h, "content-length")) {
            if (s_add_length(h->value, h->value_len, &clen, why) != 0)
                return -1;
        } else if (s_header_is(h, "transfer-encoding")) {
            has_te = 1;
            while (s_next_elem(&p, h->value + h->value_len, &elem, &elen)) {
                if (elen == 0)
                    continue; /* empty list elements do not count (RFC 9110 §5.6.1) */
                te_codings++;
                te_last_chunked = s_elem_is(elem, elen, "chunked");
                te_chunked += te_last_chunked;
            }
        } else if (s_header_is(h, "connection")) {
            while (s_next_elem(&p, h->value + h->value_len, &elem, &elen)) {
                if (s_elem_is(elem, elen, "close"))
                    conn_close = 1;
                else if (s_elem_is(elem, elen, "keep-alive"))
                    conn_keepalive = 1;
            }
        }
    }
    int bodyless = is_head || out->status == 204 || out->status == 304;
    if (has_te) {
        if (out->minor_version == 0) {
            *why = "origin sent Transfer-Encoding in an HTTP/1.0 response";
            return -1;
        }
        if (clen >= 0) {
            *why = "origin sent both Transfer-Encoding and Content-Length";
            return -1;
        }
        if (te_codings == 0) {
            *why = "origin sent an empty Transfer-Encoding";
            return -1;
        }
        /* Bodyless responses only describe the coding a body would have. */
        if (!bodyless && !(te_codings == 1 && te_last_chunked)) {
            if (te_chunked > 1)
                *why = "origin applied chunked more than once";
            else if (te_chunked == 1 && !te_last_chunked)
                *why = "origin sent chunked that is not the final transfer coding";
            else
                *why = "origin sent a transfer coding the gateway cannot decode";
            return -1;
        }
    }
    out->content_length = has_te ? -1 : clen;
    if (out->minor_version == 0)
        out->keepalive = conn_keepalive && !conn_close;
    else
        out->keepalive = !conn_close;
    if (bodyless) {
        out->body = GW_BODY_NONE;
        /* A 204 may not declare a body (RFC 9110 §8.6, RFC 9112 §6.1); one
         * that does may well send it: do not trust the connection. */
        if (out->status == 204 && (has_te || clen > 0))
            out->keepalive = 0;
    } else if (has_te) {
        out->body = GW_BODY_CHUNKED;
    } else if (clen >= 0) {
        out->body = GW_BODY_LENGTH;
    } else {
        out->body = GW_BODY_CLOSE;
        out->keepalive = 0;
    }
    return 0;
}

int gw_origin_parse_head(const char *buf, size_t len, int is_head, gw_origin_head_t *out, const char **why)
{
    size_t lim = len < GW_ORIGIN_MAX_HEAD_BYTES ? len : GW_ORIGIN_MAX_HEAD_BYTES;
    size_t off = 0;
    for (int interim = 0;; interim++) {
        const char *msg;
        size_t msg_len;
        out->n_headers = GW_ORIGIN_MAX_HEADERS;
        int r = phr_parse_response(buf + off, lim - off, &out->minor_version, &out->status, &msg, &msg_len,
                                   out->headers, &out->n_headers, 0);
        if (r == -2) {
            if (len >= GW_ORIGIN_MAX_HEAD_BYTES) {
                *why = "origin response head too large";
                return -1;
            }
            return 0;
        }
        if (r < 0 || s_check_status_line(buf + off, (size_t)r, out->status) != 0) {
            *why = "origin sent a malformed response";
            return -1;
        }
        off += (size_t)r;
        if (out->status == 101) {
            *why = "origin switched protocols unasked (101)";
            return -1;
        }
        if (out->status >= 200)
            break;
        /* 100 Continue and other interim responses precede the real head. */
        if (interim + 1 >= GW_ORIGIN_MAX_INTERIM) {
            *why = "origin sent too many interim (1xx) responses";
            return -1;
        }
    }
    if (s_framing(out, is_head, why) != 0)
        return -1;
    return (int)off;
}
