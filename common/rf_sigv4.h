/*  rf_sigv4 — AWS Signature Version 4 verification for the S3 API, the
 *  aws-chunked body decoder, and the checksums of x-amz-checksum-*.
 *
 *  The gateway's S3 API authenticates every request here before it does
 *  anything else, so everything below takes hostile input: each length and
 *  count is bounded, no input is read past its given length (nothing is
 *  NUL-terminated: pointer + length), nothing recurses on input, and there
 *  is no global mutable state (several gateway threads call it at once).
 *  It is pure — no clock, no I/O, no logging — for unit tests and fuzzing.
 *
 *  Canonical request (what the signature covers), as S3 builds it:
 *
 *    METHOD \n URI \n QUERY \n HEADERS \n SIGNED-HEADERS \n PAYLOAD-HASH
 *
 *    URI      the path as sent, percent-decoded and encoded again (RFC 3986
 *             unreserved A-Za-z0-9-._~ kept, every other byte %XX with
 *             upper-case hex, '/' kept). S3 neither normalises nor double-
 *             encodes, so "~", "!", "'", "(", ")", "*", spaces and UTF-8 in
 *             keys verify however the client escaped them. An encoded slash
 *             (%2F) stays encoded: a client that sends %2F signed %2F.
 *             Pass the request-target exactly as received — not the
 *             gateway's rf_path_canon form, whose dot-segment resolution
 *             would change "a/./b", a valid S3 key.
 *    QUERY    split on '&' (empty items dropped), each into name and value
 *             at the first '=' (no '=': empty value, "uploads" is
 *             "uploads="), both percent-decoded ('+' is a literal plus, not
 *             a space) and encoded again as above with '/' encoded too,
 *             sorted by name then value (byte order), joined with '&' and
 *             '='. A presigned request's X-Amz-Signature is left out.
 *    HEADERS  "name:value\n" for each SignedHeaders name in the order the
 *             client listed them (clients list them sorted); the value is
 *             trimmed and runs of spaces/tabs collapsed to one space;
 *             several headers of one name are joined with ','.
 *    PAYLOAD  header-signed: the x-amz-content-sha256 value as sent (a hex
 *             digest, UNSIGNED-PAYLOAD or a STREAMING-* name); presigned:
 *             UNSIGNED-PAYLOAD, or X-Amz-Content-Sha256 from the query.
 *
 *  String to sign: "AWS4-HMAC-SHA256\n" X-Amz-Date "\n" SCOPE "\n"
 *  hex(sha256(canonical request)), SCOPE = DATE/REGION/s3/aws4_request.
 *  Signing key = HMAC(HMAC(HMAC(HMAC("AWS4" secret, DATE), REGION), "s3"),
 *  "aws4_request"). Any region is accepted (out->region says which: the
 *  caller checks it against the bucket's if it wants); the service must be
 *  "s3"; DATE must be the first 8 characters of X-Amz-Date. Only
 *  X-Amz-Date dates a request (the Date header is not used).
 *
 *  Decisions (S3's error codes and, where S3 has one, its message):
 *    - no x-amz-content-sha256 on a header-signed request: InvalidRequest
 *      ("Missing required header for this request: x-amz-content-sha256"),
 *      as S3 answers; every client we support sends it. A value that is
 *      neither 64 hex digits nor a known name: InvalidArgument. SigV4a
 *      (ECDSA) streaming names, SigV2 ("AWS " Authorization, or a query
 *      with AWSAccessKeyId and Signature): InvalidRequest (not supported);
 *    - a malformed %-escape in the path or the query: InvalidURI;
 *    - both an Authorization header and X-Amz-* query authentication:
 *      InvalidArgument;
 *    - header-signed and more than RF_SIGV4_MAX_SKEW s from now:
 *      RequestTimeTooSkewed; presigned: X-Amz-Expires must be 1..604800
 *      (AuthorizationQueryParametersError), past X-Amz-Date + X-Amz-Expires
 *      AccessDenied "Request has expired", and more than RF_SIGV4_MAX_SKEW s
 *      in the future AccessDenied "Request is not valid yet";
 *    - SignedHeaders must hold "host" (AuthorizationHeaderMalformed /
 *      AuthorizationQueryParametersError); a signed header missing from the
 *      request: SignatureDoesNotMatch, naming it;
 *    - an x-amz-* header present but not signed (x-amz-content-sha256
 *      excepted: the canonical request holds it already): AccessDenied
 *      "There were headers present in the request which were not signed",
 *      as S3 — a man in the middle cannot add x-amz-acl or x-amz-meta-*;
 *    - Authorization, X-Amz-Date, x-amz-content-sha256,
 *      x-amz-decoded-content-length or x-amz-trailer sent twice, or an
 *      X-Amz-* authentication parameter given twice: refused;
 *    - x-amz-trailer must name one checksum (crc32, crc32c, crc64nvme,
 *      sha1, sha256, as x-amz-checksum-NAME): InvalidArgument otherwise.
 */
#ifndef RF_SIGV4_H
#define RF_SIGV4_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RF_SIGV4_MAX_AUTH 4096      /* Authorization header, bytes */
#define RF_SIGV4_MAX_SIGNED 64      /* names in SignedHeaders */
#define RF_SIGV4_MAX_QUERY 16384    /* raw query, bytes */
#define RF_SIGV4_MAX_PARAMS 256     /* query parameters */
#define RF_SIGV4_MAX_PATH 4096      /* decoded path, bytes (raw: 3x) */
#define RF_SIGV4_MAX_HEADERS 512    /* request headers looked at */
#define RF_SIGV4_MAX_SECRET 256     /* secret key, bytes */
#define RF_SIGV4_MAX_SKEW 900       /* s between X-Amz-Date and now */
#define RF_SIGV4_MAX_EXPIRES 604800 /* presigned X-Amz-Expires, s */

typedef struct {
    const char *name; /* any case */
    size_t name_len;
    const char *value; /* as received */
    size_t value_len;
} rf_sigv4_header_t;

typedef struct {
    const char *method; /* "GET", NUL-terminated, at most 16 upper-case letters */
    const char *path;   /* the request-target's path exactly as sent (percent-encoded), no query */
    size_t path_len;
    const char *query; /* the raw query after '?', may be empty (NULL when query_len is 0) */
    size_t query_len;
    const rf_sigv4_header_t *headers; /* as received; the caller adds "host" (from :authority for HTTP/2) */
    size_t n_headers;
    int64_t now; /* unix seconds */
} rf_sigv4_req_t;

/* Looks up the secret key of an access key id (NUL-terminated). Returns a
 * NUL-terminated secret the caller's configuration owns (it must stay valid
 * until rf_sigv4_verify returns; it is not freed or kept), or NULL when the
 * key is unknown. Called from several threads at once. */
typedef const char *(rf_sigv4_secret_fn)(void *arg, const char *access_key);

typedef enum {
    RF_SIGV4_PAYLOAD_SHA256,            /* x-amz-content-sha256 is the hex digest of the body */
    RF_SIGV4_PAYLOAD_UNSIGNED,          /* UNSIGNED-PAYLOAD, and presigned URLs */
    RF_SIGV4_PAYLOAD_STREAMING,         /* STREAMING-AWS4-HMAC-SHA256-PAYLOAD */
    RF_SIGV4_PAYLOAD_STREAMING_TRAILER, /* STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER */
    RF_SIGV4_PAYLOAD_UNSIGNED_TRAILER,  /* STREAMING-UNSIGNED-PAYLOAD-TRAILER */
} rf_sigv4_payload_t;

typedef struct {
    char access_key[129];
    char region[64];
    char date[9];      /* YYYYMMDD of the credential scope */
    char amz_date[17]; /* YYYYMMDDTHHMMSSZ */
    unsigned char signing_key[32];
    char seed_signature[65]; /* the request's signature, lower-case hex: the first chunk signature chains from it */
    rf_sigv4_payload_t payload;
    char payload_sha256[65]; /* RF_SIGV4_PAYLOAD_SHA256: the digest, lower-case hex; "" otherwise */
    bool presigned;
    int64_t decoded_length; /* x-amz-decoded-content-length, -1 when absent */
    char trailer[48];       /* x-amz-trailer value, lower-cased, "" when none */
} rf_sigv4_auth_t;

/* Verifies the request's signature: the Authorization header, or presigned
 * query authentication (X-Amz-Algorithm, X-Amz-Credential, X-Amz-Date,
 * X-Amz-Expires, X-Amz-SignedHeaders, X-Amz-Signature). Returns
 *
 *   0  valid: *out is filled;
 *   1  anonymous — no Authorization header and no X-Amz-Algorithm,
 *      X-Amz-Signature or X-Amz-Credential parameter: the caller decides;
 *      *out is zeroed (decoded_length -1). The method, the limits, repeated
 *      security headers and the query's %-escapes are checked first, so an
 *      anonymous request can still be refused;
 *  -1  refused: *code is an S3 error code (a static string:
 *      SignatureDoesNotMatch, InvalidAccessKeyId,
 *      AuthorizationHeaderMalformed, AuthorizationQueryParametersError,
 *      AccessDenied, RequestTimeTooSkewed, InvalidRequest, InvalidArgument,
 *      InvalidURI, InternalError), why[0..why_len) a non-empty one-line
 *      reason (client bytes in it bounded and made printable), and *out
 *      holds what was parsed before the refusal (access key, region: for a
 *      log line; never a signing key).
 *
 * Nothing is kept: r, its strings and the secret are only read during the
 * call; out, code and why belong to the caller. out holds the signing key:
 * the caller clears it when done if it cares. */
int rf_sigv4_verify(const rf_sigv4_req_t *r, rf_sigv4_secret_fn *secret, void *arg, rf_sigv4_auth_t *out,
                    const char **code, char *why, size_t why_len);

/* ---- checksums of x-amz-checksum-* headers and trailers ---- */

enum { RF_S3SUM_CRC32, RF_S3SUM_CRC32C, RF_S3SUM_CRC64NVME, RF_S3SUM_SHA1, RF_S3SUM_SHA256 };

/* An incremental checksum. kind is an RF_S3SUM_*; md is owned by the
 * checksum (SHA kinds): rf_s3sum_clear frees it. */
typedef struct {
    int kind;
    uint64_t crc;
    void *md; /* EVP_MD_CTX * for SHA1 / SHA256 */
    bool failed;
} rf_s3sum_t;

/* The kind named by name[0..len): "x-amz-checksum-crc32" or "crc32" (any
 * case; likewise crc32c, crc64nvme, sha1, sha256); -1 when unknown. */
int rf_s3sum_kind(const char *name, size_t len);

/* The lower-case short name of a kind ("crc32c"), "" when unknown (static). */
const char *rf_s3sum_name(int kind);

/* Starts a checksum of `kind`. 0, or -1 (unknown kind, out of memory: *s
 * is then cleared and rf_s3sum_clear is harmless). Pair with rf_s3sum_clear. */
int rf_s3sum_init(rf_s3sum_t *s, int kind);

/* Adds p[0..n) (n may be 0). */
void rf_s3sum_update(rf_s3sum_t *s, const void *p, size_t n);

/* Writes the base64 of the digest into out, NUL-terminated — big-endian
 * bytes for the CRCs, as S3 does (crc32 of "" is "AAAAAA=="). 0, or -1 when
 * the digest failed. The checksum is finished: init it again to reuse. */
int rf_s3sum_final_b64(rf_s3sum_t *s, char out[64]);

/* Frees what init allocated; *s may then be init'ed again. Idempotent. */
void rf_s3sum_clear(rf_s3sum_t *s);

/* ---- aws-chunked bodies ----
 *
 *  STREAMING-AWS4-HMAC-SHA256-PAYLOAD: chunks "HEX;chunk-signature=SIG\r\n"
 *  DATA "\r\n", ending with the empty chunk "0;chunk-signature=SIG\r\n\r\n".
 *  SIG = hex HMAC(signing key, "AWS4-HMAC-SHA256-PAYLOAD\n" X-Amz-Date "\n"
 *  SCOPE "\n" PREVIOUS "\n" hex(sha256("")) "\n" hex(sha256(DATA))), the
 *  first PREVIOUS being the request's (seed) signature.
 *
 *  STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER: the same chunks; the empty
 *  one is followed by the trailer "x-amz-checksum-NAME:BASE64\r\n", then
 *  "x-amz-trailer-signature:SIG\r\n" and "\r\n", where SIG = hex HMAC(
 *  signing key, "AWS4-HMAC-SHA256-TRAILER\n" X-Amz-Date "\n" SCOPE "\n"
 *  PREVIOUS "\n" hex(sha256("x-amz-checksum-NAME:BASE64\n"))) — each
 *  trailer line as sent, with "\n" for its "\r\n" (AWS's published example
 *  verifies only that way). Also accepted, as in AWS's documentation: one
 *  empty line between the empty chunk and the trailer, and (at
 *  rf_awschunk_finish) no final empty line.
 *
 *  STREAMING-UNSIGNED-PAYLOAD-TRAILER: "HEX\r\n" DATA "\r\n" ... "0\r\n",
 *  the trailer lines, "\r\n" (plain HTTP chunked framing; chunk extensions
 *  are ignored). No signatures.
 *
 *  The trailer named by x-amz-trailer is required, and must match the
 *  checksum of the decoded data (else BadDigest). Other trailers are
 *  refused (MalformedTrailerError). A chunk line holds at most
 *  RF_AWSCHUNK_MAX_LINE bytes, the trailer section RF_AWSCHUNK_MAX_TRAILER;
 *  signed chunks take no extension but chunk-signature. Chunks are not
 *  held to S3's 8 KiB minimum.
 */

#define RF_AWSCHUNK_MAX_LINE 256
#define RF_AWSCHUNK_MAX_TRAILER 1024
#define RF_AWSCHUNK_DEFAULT_MAX (16u << 20)

typedef struct rf_awschunk_t rf_awschunk_t;

/* A decoder for the body of a verified streaming request (auth->payload
 * one of the three STREAMING kinds; auth is copied, the caller keeps it).
 * max_chunk bounds one chunk's size (0: RF_AWSCHUNK_DEFAULT_MAX); a signed
 * chunk is held whole until its signature checks, so up to max_chunk bytes
 * are allocated. Returns NULL when out of memory, or when auth is not a
 * streaming request or names an unknown trailer. Free with
 * rf_awschunk_destroy. */
rf_awschunk_t *rf_awschunk_new(const rf_sigv4_auth_t *auth, size_t max_chunk);

/* Frees the decoder and sets *self_p to NULL (NULL or *NULL: nothing). */
void rf_awschunk_destroy(rf_awschunk_t **self_p);

/* Decodes in[0..len) (pieces of any size, 1 byte and up; in may be NULL
 * when len is 0) and calls out(arg, data, n) with payload bytes as they are
 * verified: a signed chunk's bytes only once its signature checks (one call
 * per chunk), unsigned bytes as they arrive. data is the decoder's or the
 * caller's memory, valid during the call only.
 *
 * Returns 0 (all consumed, more wanted), 1 (the body is complete: final
 * chunk and trailer done and verified), or -1 with *code / why set:
 * IncompleteBody, SignatureDoesNotMatch, InvalidChunkSizeError (a chunk
 * larger than max_chunk), BadDigest (the trailer checksum disagrees with
 * the data), MalformedTrailerError, InvalidRequest (malformed framing, or
 * bytes after the end), InternalError (out returned -1, or a digest
 * failed). Errors are sticky: every later call returns -1 with the same
 * code and reason; after 1, a further call with len > 0 returns -1 (bytes
 * after the end), with len 0 it returns 1 again. */
int rf_awschunk_feed(rf_awschunk_t *self, const char *in, size_t len, int (*out)(void *arg, const char *data, size_t n),
                     void *arg, const char **code, char *why, size_t why_len);

/* Call at the end of the request body. 0 when the body is complete (feed
 * returned 1, or all that is missing is the final empty line of a trailer
 * or the final CRLF of STREAMING-AWS4-HMAC-SHA256-PAYLOAD) and the
 * decoded size equals x-amz-decoded-content-length when that was given;
 * -1 (IncompleteBody, BadDigest, ...) otherwise. */
int rf_awschunk_finish(rf_awschunk_t *self, const char **code, char *why, size_t why_len);

/* Payload bytes handed to out so far. */
uint64_t rf_awschunk_total(const rf_awschunk_t *self);

#endif
