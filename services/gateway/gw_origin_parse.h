/*  gw_origin_parse — the origin response head parser, as a pure function.
 *
 *  No socket, no event loop, no allocation: status line and header fields in,
 *  the framing decision out (status, how the body is delimited, its length,
 *  whether the connection may carry another request). gw_origin.c feeds it
 *  the bytes read so far; fuzz/fuzz_origin.c feeds it anything.
 *
 *  The rules (RFC 9110 §8.6, RFC 9112 §5, §6, §9.3), and what is a 502:
 *    - Content-Length is 1*DIGIT; several values (repeated headers or a
 *      comma list) are accepted only when all are equal.
 *    - Transfer-Encoding and Connection are comma-separated token lists,
 *      matched whole, case-insensitively, optional whitespace trimmed.
 *    - The only transfer coding the gateway decodes is `chunked`, alone.
 *      Any other list (`gzip`, `gzip, chunked`, `chunked, chunked`) is a 502:
 *      reading such a body "until close" (RFC 9112 §6.3 item 4) would hand
 *      the client still-encoded bytes with the Transfer-Encoding header (a
 *      hop-by-hop field) removed, i.e. a corrupt object presented as whole.
 *    - Transfer-Encoding together with Content-Length is a 502, not "TE
 *      wins": a sender MUST NOT send both (RFC 9112 §6.2), the message
 *      "ought to be handled as an error" (§6.3 item 3), and it is the shape
 *      of response smuggling — if anything between us and the origin framed
 *      it by Content-Length, bytes we would read as this body belong to
 *      another response. Refusing it leaves nothing to disagree about.
 *    - Transfer-Encoding in an HTTP/1.0 response is faulty framing (§6.1): 502.
 *    - obs-fold (a header line starting with SP/HT) is a 502, the gateway
 *      option of RFC 9112 §5.2; so is a header name that is not a token
 *      (e.g. `Content-Length : 5`, whitespace before the colon, §5.1).
 *    - The status line is `HTTP/1.d SP 3DIGIT (SP reason)`, status 100–599.
 *      1xx interim responses (except 101) are skipped, at most
 *      GW_ORIGIN_MAX_INTERIM of them; 101 is a 502 (we never ask to upgrade).
 *    - Responses to HEAD, 1xx, 204 and 304 have no body (§6.3 items 1–2).
 *
 *  Keep-alive: HTTP/1.1 unless `Connection: close`; HTTP/1.0 only with
 *  `Connection: keep-alive` (and no `close`); never for a body delimited by
 *  the connection closing. Callers must also not reuse a connection when
 *  bytes follow the end of the response (see gw_origin.c).
 */
#ifndef GW_ORIGIN_PARSE_H
#define GW_ORIGIN_PARSE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* picohttpparser ships inside libh2o (exported symbols) but Debian does not
 * install its header; these are its stable declarations. */
struct phr_header {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
};
int phr_parse_response(const char *buf, size_t len, int *minor_version, int *status, const char **msg, size_t *msg_len,
                       struct phr_header *headers, size_t *num_headers, size_t last_len);
struct phr_chunked_decoder {
    size_t bytes_left_in_chunk;
    char consume_trailer;
    char _hex_count;
    char _state;
};
ssize_t phr_decode_chunked(struct phr_chunked_decoder *decoder, char *buf, size_t *bufsz);

#define GW_ORIGIN_MAX_HEADERS 100
/* A head (interim responses included) longer than this is a 502. */
#define GW_ORIGIN_MAX_HEAD_BYTES 65536
#define GW_ORIGIN_MAX_INTERIM 8

typedef enum {
    GW_BODY_NONE,    /* no body: HEAD, 204, 304 */
    GW_BODY_LENGTH,  /* content_length bytes */
    GW_BODY_CHUNKED, /* Transfer-Encoding: chunked */
    GW_BODY_CLOSE    /* until the origin closes the connection */
} gw_body_mode_t;

typedef struct {
    int status;
    int minor_version;
    gw_body_mode_t body;
    /* The declared Content-Length, -1 when there is none (always -1 when
     * chunked). For a bodyless response it is what the origin declared. */
    int64_t content_length;
    int keepalive; /* the connection may carry another request afterwards */
    /* The final response's header fields; they point into the parsed buffer. */
    size_t n_headers;
    struct phr_header headers[GW_ORIGIN_MAX_HEADERS];
} gw_origin_head_t;

/* Parses the response head at the start of buf[0..len): any 1xx interim
 * responses, then the final status line and header fields. is_head says the
 * request was HEAD (so the response has no body).
 * Returns the number of bytes the head takes (interim responses included;
 * the body starts there) with *out filled; 0 when the head is incomplete
 * (read more and call again with the whole buffer); -1 when the response
 * must be refused (a 502), with *why a static one-line reason. Pure: no
 * allocation, no global state; *out is scratch on 0 and -1. */
int gw_origin_parse_head(const char *buf, size_t len, int is_head, gw_origin_head_t *out, const char **why);

#endif
