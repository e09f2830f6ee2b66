/*  libFuzzer target for common/rf_sigv4: SigV4 authentication and
 *  aws-chunked bodies come straight from S3 clients. Besides memory safety
 *  it checks, and abort()s when one breaks:
 *
 *  byte 0 even — rf_sigv4_verify: the rest is "METHOD\nPATH\nQUERY\n" then
 *  one "Name: value" header per line (bits 1-2 of byte 0 move `now`). Every
 *  refusal has an S3 code and a non-empty one-line reason; a success has a
 *  well-formed seed signature, date and scope; 1 (anonymous) only without
 *  an Authorization header.
 *
 *  byte 0 odd — rf_awschunk_feed: a decoder with the auth of AWS's chunked
 *  upload example (bits 1-2: payload kind, bits 3-5: trailer, bit 6:
 *  x-amz-decoded-content-length from bytes 1-2; byte 3 seeds the piece
 *  sizes, byte 4 picks max_chunk) decodes the rest once whole and once in
 *  pieces of random size. Both must end alike (same result and code, and
 *  on success the same bytes);
 *  the bytes handed out never exceed the input and equal
 *  rf_awschunk_total; a feed after 1 or -1 with bytes is refused; every
 *  -1 has a code and a reason. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "rf_sigv4.h"

#define AWS_NOW 1369353600

static const char *s_secret(void *arg, const char *ak)
{
    (void)arg;
    return strcmp(ak, "unknown") == 0 ? NULL : "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
}

static void s_check_refusal(const char *code, const char *why)
{
    if (code == NULL || code[0] == '\0' || why[0] == '\0')
        abort();
    for (const char *p = why; *p; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p == 0x7f)
            abort();
}

static bool s_hex64(const char *s)
{
    if (strlen(s) != 64)
        return false;
    for (int i = 0; i < 64; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

static void s_verify(const uint8_t *data, size_t size)
{
    static const int64_t shift[] = {0, 3600, 86401, -1000};
    char method[17] = "GET";
    rf_sigv4_header_t h[32];
    size_t nh = 0;
    const char *text = (const char *)data + 1, *end = (const char *)data + size, *line[3] = {text, text, text};
    size_t len[3] = {0, 0, 0};
    const char *p = text;
    for (int k = 0; k < 3 && p <= end; k++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        line[k] = p;
        len[k] = (size_t)((nl ? nl : end) - p);
        p = nl ? nl + 1 : end + 1;
    }
    if (len[0] > 0 && len[0] <= 16) {
        memcpy(method, line[0], len[0]);
        method[len[0]] = '\0';
    }
    while (p < end && nh < 32) {
        const char *nl = memchr(p, '\n', (size_t)(end - p)), *e = nl ? nl : end;
        const char *colon = memchr(p, ':', (size_t)(e - p));
        if (colon != NULL) {
            const char *v = colon + 1;
            while (v < e && *v == ' ')
                v++;
            h[nh++] = (rf_sigv4_header_t){p, (size_t)(colon - p), v, (size_t)(e - v)};
        }
        p = nl ? nl + 1 : end;
    }
    rf_sigv4_req_t r = {method, line[1], len[1], line[2], len[2], h, nh, AWS_NOW + shift[(data[0] >> 1) & 3]};
    rf_sigv4_auth_t out;
    const char *code = NULL;
    char why[160] = "";
    int rc = rf_sigv4_verify(&r, s_secret, NULL, &out, &code, why, sizeof(why));
    if (rc == -1) {
        s_check_refusal(code, why);
    } else if (rc == 0) {
        if (!s_hex64(out.seed_signature) || strlen(out.amz_date) != 16 || strncmp(out.amz_date, out.date, 8) != 0 ||
            out.region[0] == '\0' || out.access_key[0] == '\0')
            abort();
    } else if (rc == 1) {
        for (size_t i = 0; i < nh; i++)
            if (h[i].name_len == 13 && strncasecmp(h[i].name, "authorization", 13) == 0)
                abort();
    } else {
        abort();
    }
}

typedef struct {
    char *buf;
    size_t len, cap;
} sink_t;

static int s_sink(void *arg, const char *d, size_t n)
{
    sink_t *s = arg;
    if (n == 0 || s->len + n > s->cap)
        abort(); /* never more than the input, never an empty call */
    memcpy(s->buf + s->len, d, n);
    s->len += n;
    return 0;
}

/* Decodes body in pieces (seed 0: whole); returns the final result: 0 when
 * finish accepts, else -1 with the code in *final. */
static int s_decode(const rf_sigv4_auth_t *a, size_t max_chunk, const char *body, size_t n, uint32_t seed, sink_t *sink,
                    const char **final)
{
    rf_awschunk_t *d = rf_awschunk_new(a, max_chunk);
    const char *code = "";
    char why[160] = "";
    int rc = 0;
    if (d == NULL)
        abort();
    for (size_t i = 0; i < n;) {
        size_t take = n - i;
        if (seed != 0) {
            seed = seed * 1103515245u + 12345u;
            size_t max = (size_t)1 << ((seed >> 16) % 12);
            take = 1 + (seed >> 8) % max;
            if (take > n - i)
                take = n - i;
        }
        rc = rf_awschunk_feed(d, body + i, take, s_sink, sink, &code, why, sizeof(why));
        i += take;
        if (rc == -1) {
            s_check_refusal(code, why);
            break;
        }
        if (rc == 1 && i < n) {
            /* the body ended early: the rest must be refused */
            if (rf_awschunk_feed(d, body + i, n - i, s_sink, sink, &code, why, sizeof(why)) != -1)
                abort();
            s_check_refusal(code, why);
            rc = -1;
            break;
        }
        if (rc != 0 && rc != 1)
            abort();
    }
    if (rc == -1) {
        /* sticky: more bytes, or none, are refused again */
        if (rf_awschunk_feed(d, "0", 1, s_sink, sink, &code, why, sizeof(why)) != -1)
            abort();
        if (rf_awschunk_finish(d, &code, why, sizeof(why)) != -1)
            abort();
    } else {
        int last = rc;
        rc = rf_awschunk_finish(d, &code, why, sizeof(why));
        if (rc == -1)
            s_check_refusal(code, why);
        else if (rc != 0 || (a->decoded_length >= 0 && rf_awschunk_total(d) != (uint64_t)a->decoded_length))
            abort();
        /* complete: an empty feed still says so, more bytes are refused */
        if (rc == 0 && last == 1 && rf_awschunk_feed(d, NULL, 0, s_sink, sink, &code, why, sizeof(why)) != 1)
            abort();
        if (rc == 0 && rf_awschunk_feed(d, "\r\n", 2, s_sink, sink, &code, why, sizeof(why)) != -1)
            abort();
    }
    if (rf_awschunk_total(d) != sink->len)
        abort();
    rf_awschunk_destroy(&d);
    *final = rc == 0 ? "" : code;
    return rc;
}

static void s_chunks(const uint8_t *data, size_t size)
{
    static const rf_sigv4_payload_t modes[] = {RF_SIGV4_PAYLOAD_STREAMING, RF_SIGV4_PAYLOAD_STREAMING_TRAILER,
                                               RF_SIGV4_PAYLOAD_UNSIGNED_TRAILER, RF_SIGV4_PAYLOAD_UNSIGNED_TRAILER};
    static const char *const trailers[] = {"",
                                           "x-amz-checksum-crc32",
                                           "x-amz-checksum-crc32c",
                                           "x-amz-checksum-crc64nvme",
                                           "x-amz-checksum-sha1",
                                           "x-amz-checksum-sha256",
                                           "",
                                           ""};
    /* The auth of AWS's chunked upload example (seed 4f232c43...). */
    static const char authz[] =
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders="
        "content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;"
        "x-amz-storage-class,Signature=4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9";
#define H(n, v)                                                                                                        \
    {                                                                                                                  \
        n, sizeof(n) - 1, v, sizeof(v) - 1                                                                             \
    }
    static const rf_sigv4_header_t hs[] = {
        H("Host", "s3.amazonaws.com"),
        H("x-amz-date", "20130524T000000Z"),
        H("x-amz-storage-class", "REDUCED_REDUNDANCY"),
        H("Authorization", authz),
        H("x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"),
        H("Content-Encoding", "aws-chunked"),
        H("x-amz-decoded-content-length", "66560"),
        H("Content-Length", "66824"),
    };
    static const rf_sigv4_req_t req = {"PUT", "/examplebucket/chunkObject.txt", 30,     "", 0,
                                       hs,    sizeof(hs) / sizeof(hs[0]),       AWS_NOW};
    static rf_sigv4_auth_t base;
    static bool ready;
    const char *code;
    char why[160];
    if (!ready) {
        if (rf_sigv4_verify(&req, s_secret, NULL, &base, &code, why, sizeof(why)) != 0)
            abort();
        ready = true;
    }
    if (size < 5)
        return;
    rf_sigv4_auth_t a = base;
    a.payload = modes[(data[0] >> 1) & 3];
    snprintf(a.trailer, sizeof(a.trailer), "%s", trailers[(data[0] >> 3) & 7]);
    a.decoded_length = (data[0] & 0x40) ? (int64_t)(data[1] | data[2] << 8) : -1;
    uint32_t seed = data[3] | 1u;
    size_t max_chunk = data[4] == 0 ? 0 : (size_t)data[4] * 37;
    const char *body = (const char *)data + 5;
    size_t n = size - 5;
    sink_t one = {malloc(n + 1), 0, n}, many = {malloc(n + 1), 0, n};
    if (one.buf == NULL || many.buf == NULL)
        abort();
    const char *c1, *c2;
    int r1 = s_decode(&a, max_chunk, body, n, 0, &one, &c1);
    int r2 = s_decode(&a, max_chunk, body, n, seed, &many, &c2);
    /* whole or in pieces, the same result; on success the same bytes */
    if (r1 != r2 || strcmp(c1, c2) != 0 ||
        (r1 == 0 && (one.len != many.len || memcmp(one.buf, many.buf, one.len) != 0)))
        abort();
    free(one.buf);
    free(many.buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    if (data[0] & 1)
        s_chunks(data, size);
    else
        s_verify(data, size);
    return 0;
}
