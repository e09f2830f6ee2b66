/*  Unit tests for common/rf_sigv4: AWS Signature Version 4 verification
 *  for S3, the aws-chunked decoder and the x-amz-checksum-* checksums.
 *
 *  Independent references only: AWS's published examples (S3 API
 *  reference: "Signature Calculations for the Authorization Header:
 *  Transferring Payload in a Single Chunk", "... Query String
 *  Authentication", "... Transferring Payload in Multiple Chunks" and
 *  "Signature calculations for trailing headers"), requests signed by
 *  botocore 1.29 and 1.43 (see test_botocore), the CRC catalogue's check
 *  values, and, for the signed trailer with data of our own, a signer
 *  written here from the published formula (s_sign_body).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rf_sigv4.h"

#define AWS_KEY "AKIAIOSFODNN7EXAMPLE"
#define AWS_SECRET "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
#define AWS_NOW 1369353600 /* 20130524T000000Z */
#define EMPTY_SHA "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define AUTHZ(sh, sig)                                                                                                 \
    "AWS4-HMAC-SHA256 Credential=" AWS_KEY "/20130524/us-east-1/s3/aws4_request,SignedHeaders=" sh ",Signature=" sig

typedef struct {
    const char *n, *v;
} kv_t;

typedef struct {
    const char *method, *path, *query;
    int64_t now;
    kv_t h[12];
    const char *body;
} vec_t;

static const char *s_secret(void *arg, const char *ak)
{
    (void)arg;
    if (strcmp(ak, AWS_KEY) == 0)
        return AWS_SECRET;
    if (strcmp(ak, "AKIDREFRACTTEST") == 0)
        return "refract/secret+key=TEST";
    return NULL;
}

static const char *s_wrong_secret(void *arg, const char *ak)
{
    (void)arg, (void)ak;
    return "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEz";
}

/* Verifies v; code and why are always set (why "" when valid). */
static int s_verify_with(const vec_t *v, rf_sigv4_secret_fn *fn, rf_sigv4_auth_t *out, const char **code, char *why)
{
    rf_sigv4_header_t h[16];
    size_t n = 0;
    for (; n < 12 && v->h[n].n != NULL; n++)
        h[n] = (rf_sigv4_header_t){v->h[n].n, strlen(v->h[n].n), v->h[n].v, strlen(v->h[n].v)};
    rf_sigv4_req_t r = {v->method, v->path, strlen(v->path), v->query, strlen(v->query), h, n, v->now};
    *code = "";
    why[0] = '\0';
    return rf_sigv4_verify(&r, fn, NULL, out, code, why, 200);
}

static int s_verify(const vec_t *v, rf_sigv4_auth_t *out, const char **code, char *why)
{
    return s_verify_with(v, s_secret, out, code, why);
}

#define assert_valid(v, out)                                                                                           \
    do {                                                                                                               \
        const char *code_;                                                                                             \
        char why_[200];                                                                                                \
        int rc_ = s_verify((v), (out), &code_, why_);                                                                  \
        if (rc_ != 0)                                                                                                  \
            fail_msg("%s %s?%s: rc %d, %s: %s", (v)->method, (v)->path, (v)->query, rc_, code_, why_);                 \
    } while (0)

/* ---- AWS's published examples ---- */

// clang-format off

static const vec_t s_get_object = {"GET", "/test.txt", "", AWS_NOW, {
    {"Host", "examplebucket.s3.amazonaws.com"},
    {"Range", "bytes=0-9"},
    {"x-amz-content-sha256", EMPTY_SHA},
    {"x-amz-date", "20130524T000000Z"},
    {"Authorization", AUTHZ("host;range;x-amz-content-sha256;x-amz-date",
                            "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")},
}, NULL};

static const vec_t s_put_object = {"PUT", "/test$file.text", "", AWS_NOW, {
    {"Host", "examplebucket.s3.amazonaws.com"},
    {"Date", "Fri, 24 May 2013 00:00:00 GMT"},
    {"x-amz-date", "20130524T000000Z"},
    {"x-amz-storage-class", "REDUCED_REDUNDANCY"},
    {"x-amz-content-sha256", "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072"},
    {"Authorization", AUTHZ("date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class",
                            "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd")},
}, "Welcome to Amazon S3."};

static const vec_t s_get_lifecycle = {"GET", "/", "lifecycle", AWS_NOW, {
    {"Host", "examplebucket.s3.amazonaws.com"},
    {"x-amz-date", "20130524T000000Z"},
    {"x-amz-content-sha256", EMPTY_SHA},
    {"Authorization", AUTHZ("host;x-amz-content-sha256;x-amz-date",
                            "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543")},
}, NULL};

static const vec_t s_list_objects = {"GET", "/", "max-keys=2&prefix=J", AWS_NOW, {
    {"Host", "examplebucket.s3.amazonaws.com"},
    {"x-amz-date", "20130524T000000Z"},
    {"x-amz-content-sha256", EMPTY_SHA},
    {"Authorization", AUTHZ("host;x-amz-content-sha256;x-amz-date",
                            "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7")},
}, NULL};

#define PRESIGNED_Q                                                                                                    \
    "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_"      \
    "request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&X-Amz-Signature="               \
    "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"

static const vec_t s_presigned = {"GET", "/test.txt", PRESIGNED_Q, AWS_NOW + 3600, {
    {"Host", "examplebucket.s3.amazonaws.com"},
}, NULL};

/* PUT Object in chunks: 64 KiB + 1 KiB of 'a', seed signature 4f232c43... */
static const vec_t s_chunked = {"PUT", "/examplebucket/chunkObject.txt", "", AWS_NOW, {
    {"Host", "s3.amazonaws.com"},
    {"x-amz-date", "20130524T000000Z"},
    {"x-amz-storage-class", "REDUCED_REDUNDANCY"},
    {"Authorization", AUTHZ("content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;"
                            "x-amz-decoded-content-length;x-amz-storage-class",
                            "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9")},
    {"x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"},
    {"Content-Encoding", "aws-chunked"},
    {"x-amz-decoded-content-length", "66560"},
    {"Content-Length", "66824"},
}, NULL};

/* The same with a trailing CRC32C, seed signature 106e2a8a... */
static const vec_t s_chunked_trailer = {"PUT", "/examplebucket/chunkObject.txt", "", AWS_NOW, {
    {"Host", "s3.amazonaws.com"},
    {"x-amz-date", "20130524T000000Z"},
    {"x-amz-storage-class", "REDUCED_REDUNDANCY"},
    {"Authorization", AUTHZ("content-encoding;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;"
                            "x-amz-storage-class;x-amz-trailer",
                            "106e2a8a18243abcf37539882f36619c00e2dfc72633413f02d3b74544bfeb8e")},
    {"x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"},
    {"Content-Encoding", "aws-chunked"},
    {"x-amz-decoded-content-length", "66560"},
    {"x-amz-trailer", "x-amz-checksum-crc32c"},
}, NULL};

// clang-format on

static void test_aws_examples(void **state)
{
    (void)state;
    rf_sigv4_auth_t a;
    assert_valid(&s_get_object, &a);
    assert_string_equal(a.access_key, AWS_KEY);
    assert_string_equal(a.region, "us-east-1");
    assert_string_equal(a.date, "20130524");
    assert_string_equal(a.amz_date, "20130524T000000Z");
    assert_string_equal(a.seed_signature, "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
    assert_int_equal(a.payload, RF_SIGV4_PAYLOAD_SHA256);
    assert_string_equal(a.payload_sha256, EMPTY_SHA);
    assert_false(a.presigned);
    assert_int_equal(a.decoded_length, -1);

    assert_valid(&s_put_object, &a);
    assert_string_equal(a.payload_sha256, "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072");
    assert_valid(&s_get_lifecycle, &a);
    assert_valid(&s_list_objects, &a);

    assert_valid(&s_presigned, &a);
    assert_true(a.presigned);
    assert_int_equal(a.payload, RF_SIGV4_PAYLOAD_UNSIGNED);
    assert_string_equal(a.seed_signature, "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404");

    assert_valid(&s_chunked, &a);
    assert_int_equal(a.payload, RF_SIGV4_PAYLOAD_STREAMING);
    assert_int_equal(a.decoded_length, 66560);
    assert_string_equal(a.seed_signature, "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9");
    assert_valid(&s_chunked_trailer, &a);
    assert_int_equal(a.payload, RF_SIGV4_PAYLOAD_STREAMING_TRAILER);
    assert_string_equal(a.trailer, "x-amz-checksum-crc32c");
    assert_string_equal(a.seed_signature, "106e2a8a18243abcf37539882f36619c00e2dfc72633413f02d3b74544bfeb8e");
}

/* The hash of the canonical request, which a refusal names, is the one the
 * AWS pages print — the canonicalisation checked apart from the keys. */
static void test_canonical_request_hash(void **state)
{
    (void)state;
    static const struct {
        const vec_t *v;
        const char *hash;
    } cases[] = {
        {&s_get_object, "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972"},
        {&s_chunked, "cee3fed04b70f867d036f722359b0b1f2f0e5dc0efadbc082b76c4c60e316455"},
        {&s_chunked_trailer, "44d48b8c2f70eae815a0198cc73d7a546a73a93359c070abbaa5e6c7de112559"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        rf_sigv4_auth_t a;
        const char *code;
        char why[200];
        assert_int_equal(s_verify_with(cases[i].v, s_wrong_secret, &a, &code, why), -1);
        assert_string_equal(code, "SignatureDoesNotMatch");
        assert_non_null(strstr(why, cases[i].hash));
    }
}

/* ---- botocore ----
 * Made with a real botocore client whose HTTP send was replaced by a
 * before-send hook that recorded the prepared request (method, path, query,
 * headers, body), once with /usr/bin/python3 (botocore 1.29.27) and once with
 * botocore 1.43.11:
 *   c = botocore.session.get_session().create_client("s3", region_name="eu-west-3",
 *       endpoint_url="http://s3.test:8080", aws_access_key_id="AKIDREFRACTTEST",
 *       aws_secret_access_key="refract/secret+key=TEST",
 *       config=Config(signature_version="s3v4", s3={"addressing_style": "path"}))
 *   c.put_object(Bucket="bkt", Key="photos/été 2013/a+b (1)~x!'*.jpg", Body=b"hello world")
 *   c.list_objects_v2(Bucket="bkt", Prefix="a+b c/", Delimiter="/")
 *   c.create_multipart_upload(Bucket="bkt", Key="big file.bin")
 *   c.get_object(Bucket="bkt", Key="~user/q?x=1&y", Range="bytes=0-9")
 *   c.generate_presigned_url("get_object", Params={"Bucket": "bkt",
 *       "Key": "dir/ünï code+plus.txt"}, ExpiresIn=3600)
 * and, against https://s3.test (virtual-hosted), put_object(Bucket="bkt",
 * Key="k/unsigned.txt", Body=b"0123456789" * 10): UNSIGNED-PAYLOAD from
 * 1.29, STREAMING-UNSIGNED-PAYLOAD-TRAILER with a CRC32 trailer from 1.43.
 * User-Agent, amz-sdk-* and Expect are left out (unsigned, not x-amz-*);
 * now is X-Amz-Date + 7 s. */
// clang-format off
static const vec_t s_boto[] = {
    {"PUT", "/bkt/photos/%C3%A9t%C3%A9%202013/a%2Bb%20%281%29~x%21%27%2A.jpg", "", 1796215448, {
        {"Content-MD5", "XrY7u+Ae7tCTyyK7j1rNww=="},
        {"host", "s3.test:8080"},
        {"X-Amz-Date", "20261202T124401Z"},
        {"x-amz-content-sha256", "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"},
        {"Authorization", "AWS4-HMAC-SHA256 Credential=AKIDREFRACTTEST/20261202/eu-west-3/s3/aws4_request, SignedHeaders=content-md5;host;x-amz-content-sha256;x-amz-date, Signature=f1b89b6609243cfce76510b8b0e013368d5c5cde409673241d63498afd00d2d8"},
        {"Content-Length", "11"},
    }, "hello world"},
    {"GET", "/bkt", "list-type=2&prefix=a%2Bb%20c%2F&delimiter=%2F&encoding-type=url", 1796215448, {
        {"host", "s3.test:8080"},
        {"X-Amz-Date", "20261202T124401Z"},
        {"x-amz-content-sha256", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"Authorization", "AWS4-HMAC-SHA256 Credential=AKIDREFRACTTEST/20261202/eu-west-3/s3/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=6a8be00a6f8922399d0f481aeab87d6d42c22ec0826bee1da6c956537d735f17"},
    }, NULL},
    {"POST", "/bkt/big%20file.bin", "uploads", 1796215448, {
        {"host", "s3.test:8080"},
        {"X-Amz-Date", "20261202T124401Z"},
        {"x-amz-content-sha256", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"Authorization", "AWS4-HMAC-SHA256 Credential=AKIDREFRACTTEST/20261202/eu-west-3/s3/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=dcc6c10a2cf5f43646f31770533e22659e3ebad8bec8b1488fc139005f983887"},
        {"Content-Length", "0"},
    }, NULL},
    {"GET", "/bkt/~user/q%3Fx%3D1%26y", "", 1796215448, {
        {"Range", "bytes=0-9"},
        {"host", "s3.test:8080"},
        {"X-Amz-Date", "20261202T124401Z"},
        {"x-amz-content-sha256", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"Authorization", "AWS4-HMAC-SHA256 Credential=AKIDREFRACTTEST/20261202/eu-west-3/s3/aws4_request, SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, Signature=f39c06044d52e6d2f8158c48251df9f4bac7cf88f5a761a2a858659bf33d1e3a"},
    }, NULL},
    {"GET", "/bkt/dir/%C3%BCn%C3%AF%20code%2Bplus.txt", "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDREFRACTTEST%2F20261202%2Feu-west-3%2Fs3%2Faws4_request&X-Amz-Date=20261202T124401Z&X-Amz-SignedHeaders=host&X-Amz-Expires=3600&X-Amz-Signature=d76bacaadf97f5250cbd0dfb64e851a612c4e8751132f4643a9309032251ab84", 1796215448, {
        {"Host", "s3.test:8080"},
    }, NULL},
    /* botocore 1.43.11 */
    {"PUT", "/bkt/photos/%C3%A9t%C3%A9%202013/a%2Bb%20%281%29~x%21%27%2A.jpg", "", 1796215449, {
        {"Host", "s3.test:8080"},
        {"x-amz-checksum-crc32", "DUoRhQ=="},
        {"x-amz-sdk-checksum-algorithm", "CRC32"},
        {"X-Amz-Date", "20261202T124402Z"},
        {"X-Amz-Content-SHA256", "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"},
        {"Authorization", "AWS4-HMAC-SHA256 Credential=AKIDREFRACTTEST/20261202/eu-west-3/s3/aws4_request, SignedHeaders=host;x-amz-checksum-crc32;x-amz-content-sha256;x-amz-date;x-amz-sdk-checksum-algorithm, Signature=c08a5754746ec28d70e12b40f9aeafbb9b2065467d21497af47d1adef6b045f8"},
        {"Content-Length", "11"},
    }, "hello world"},
    {"GET", "/bkt", "list-type=2&prefix=a%2Bb%20c%2F&delimiter=%2F&encoding-type=url", 1796215449, {
        {"Host", "s3.test:8080"},
        {"X-Amz-Date", "20261202T124402Z"},
        {"X-Amz-Content-SHA256", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"Authorization", "AWS4-HMAC-SHA256 Credential=AKIDREFRACTTEST/20261202/eu-west-3/s3/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=4db72ca5ae9ceb48d8c79ab6b45fee325ab8f6a5b3581cee7ca4deb2e02512a2"},
    }, NULL},
    {"POST", "/bkt/big%20file.bin", "uploads", 1796215449, {
        {"Host", "s3.test:8080"},
        {"X-Amz-Date", "20261202T124402Z"},
        {"X-Amz-Content-SHA256", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"Authorization", "AWS4-HMAC-SHA256 Credential=AKIDREFRACTTEST/20261202/eu-west-3/s3/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=55fbb3d4fb3d26ee307d00fbbc28c8882a93ae2fef0fb5f6f56ec36fef496abb"},
        {"Content-Length", "0"},
    }, NULL},
    {"GET", "/bkt/~user/q%3Fx%3D1%26y", "", 1796215449, {
        {"Host", "s3.test:8080"},
        {"Range", "bytes=0-9"},
        {"x-amz-checksum-mode", "ENABLED"},
        {"X-Amz-Date", "20261202T124402Z"},
        {"X-Amz-Content-SHA256", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"Authorization", "AWS4-HMAC-SHA256 Credential=AKIDREFRACTTEST/20261202/eu-west-3/s3/aws4_request, SignedHeaders=host;range;x-amz-checksum-mode;x-amz-content-sha256;x-amz-date, Signature=8da01b9f0fb379bb2a23f7d6713a79b3be9cb98d9f58a9392e14360c514315d7"},
    }, NULL},
    {"GET", "/bkt/dir/%C3%BCn%C3%AF%20code%2Bplus.txt", "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDREFRACTTEST%2F20261202%2Feu-west-3%2Fs3%2Faws4_request&X-Amz-Date=20261202T124402Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host&X-Amz-Signature=c32e46f5ee4a84a250fa3156b42b33b064d45e08dcd8f06f7e4282665989de5d", 1796215449, {
        {"Host", "s3.test:8080"},
    }, NULL},
    /* https: UNSIGNED-PAYLOAD (1.29), STREAMING-UNSIGNED-PAYLOAD-TRAILER (1.43) */
    {"PUT", "/k/unsigned.txt", "", 1796215450, {
        {"Content-MD5", "egiwfoRkFwPl8sg2qlmhcA=="},
        {"host", "bkt.s3.test"},
        {"X-Amz-Date", "20261202T124403Z"},
        {"x-amz-content-sha256", "UNSIGNED-PAYLOAD"},
        {"Authorization", "AWS4-HMAC-SHA256 Credential=AKIDREFRACTTEST/20261202/eu-west-3/s3/aws4_request, SignedHeaders=content-md5;host;x-amz-content-sha256;x-amz-date, Signature=bfabbfcfd55990937a651d796cf6c3d69b06485be8a6c9878428533a4ca48a83"},
        {"Content-Length", "100"},
    }, "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"},
    {"PUT", "/k/unsigned.txt", "", 1796215449, {
        {"Host", "bkt.s3.test"},
        {"Transfer-Encoding", "chunked"},
        {"Content-Encoding", "aws-chunked"},
        {"X-Amz-Trailer", "x-amz-checksum-crc32"},
        {"X-Amz-Decoded-Content-Length", "100"},
        {"x-amz-sdk-checksum-algorithm", "CRC32"},
        {"X-Amz-Date", "20261202T124402Z"},
        {"X-Amz-Content-SHA256", "STREAMING-UNSIGNED-PAYLOAD-TRAILER"},
        {"Authorization", "AWS4-HMAC-SHA256 Credential=AKIDREFRACTTEST/20261202/eu-west-3/s3/aws4_request, SignedHeaders=content-encoding;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;x-amz-sdk-checksum-algorithm;x-amz-trailer, Signature=317d4799e625714cebf68490b811762e627bb9af056658b9ef52c519301f708f"},
    }, "64\r\n0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789\r\n0\r\nx-amz-checksum-crc32:sfxLvA==\r\n\r\n"},
};

// clang-format on

/* Collects what a decoder hands out. */
typedef struct {
    char *buf;
    size_t len, cap;
    int calls;
    int fail; /* return -1 on this call (1-based), 0: never */
} sink_t;

static int s_sink(void *arg, const char *data, size_t n)
{
    sink_t *s = arg;
    s->calls++;
    if (s->fail != 0 && s->calls == s->fail)
        return -1;
    if (s->len + n > s->cap) {
        s->cap = (s->len + n) * 2;
        s->buf = realloc(s->buf, s->cap);
        assert_non_null(s->buf);
    }
    memcpy(s->buf + s->len, data, n);
    s->len += n;
    return 0;
}

/* Feeds body[0..n) in pieces of `step` bytes; returns the last rc, or the
 * first -1. */
static int s_feed(rf_awschunk_t *d, const char *body, size_t n, size_t step, sink_t *sink, const char **code, char *why)
{
    int rc = 0;
    *code = "";
    why[0] = '\0';
    for (size_t i = 0; i < n; i += step) {
        size_t take = n - i < step ? n - i : step;
        rc = rf_awschunk_feed(d, body + i, take, s_sink, sink, code, why, 200);
        if (rc == -1)
            return rc; /* a 1 before the end is followed by -1: no bytes are taken after the end */
    }
    return rc;
}

static void test_botocore(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(s_boto) / sizeof(s_boto[0]); i++) {
        rf_sigv4_auth_t a;
        assert_valid(&s_boto[i], &a);
        assert_string_equal(a.region, "eu-west-3");
    }
    /* the PUT's x-amz-checksum-crc32 is our crc32 of its body */
    rf_s3sum_t s;
    char b64[64];
    assert_int_equal(rf_s3sum_init(&s, rf_s3sum_kind("x-amz-checksum-crc32", 20)), 0);
    rf_s3sum_update(&s, "hello world", 11);
    assert_int_equal(rf_s3sum_final_b64(&s, b64), 0);
    rf_s3sum_clear(&s);
    assert_string_equal(b64, "DUoRhQ==");

    /* botocore 1.43's aws-chunked body with its CRC32 trailer */
    const vec_t *v = &s_boto[sizeof(s_boto) / sizeof(s_boto[0]) - 1];
    rf_sigv4_auth_t a;
    assert_valid(v, &a);
    assert_int_equal(a.payload, RF_SIGV4_PAYLOAD_UNSIGNED_TRAILER);
    assert_int_equal(a.decoded_length, 100);
    assert_string_equal(a.trailer, "x-amz-checksum-crc32");
    for (size_t step = 1; step <= 200; step += 199) {
        rf_awschunk_t *d = rf_awschunk_new(&a, 0);
        sink_t sink = {0};
        const char *code;
        char why[200];
        assert_non_null(d);
        assert_int_equal(s_feed(d, v->body, strlen(v->body), step, &sink, &code, why), 1);
        assert_int_equal(rf_awschunk_finish(d, &code, why, sizeof(why)), 0);
        assert_int_equal(sink.len, 100);
        assert_memory_equal(sink.buf, s_boto[10].body, 100);
        if (step == 1)
            assert_int_equal(sink.calls, 100); /* unsigned bytes stream through */
        free(sink.buf);
        rf_awschunk_destroy(&d);
        assert_null(d);
    }
}

/* Other spellings of the same request verify with the same signature. */
static void test_spellings(void **state)
{
    (void)state;
    static const char *const paths[] = {
        "/bkt/photos/%c3%a9t%c3%a9%202013/a%2bb%20%281%29%7Ex!'*.jpg",
        "/bkt/photos/\xc3\xa9t\xc3\xa9 2013/a%2Bb (1)~x!'*.jpg",
        "/bkt/photos/%C3%A9t%C3%A9%202013/%61%2Bb%20(1)~x%21%27%2a.jpg",
    };
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        vec_t v = s_boto[0];
        rf_sigv4_auth_t a;
        v.path = paths[i];
        assert_valid(&v, &a);
    }
    static const char *const queries[] = {
        "delimiter=/&encoding-type=url&prefix=a%2bb%20c/&list-type=2",
        "&list-type=2&&prefix=a%2Bb c%2F&delimiter=%2F&encoding-type=url&",
    };
    for (size_t i = 0; i < sizeof(queries) / sizeof(queries[0]); i++) {
        vec_t v = s_boto[1];
        rf_sigv4_auth_t a;
        v.query = queries[i];
        assert_valid(&v, &a);
    }
    vec_t v = s_boto[2];
    rf_sigv4_auth_t a;
    v.query = "uploads=";
    assert_valid(&v, &a);
    /* header values trimmed, inner runs of spaces one; names in any case */
    v = s_get_object;
    v.h[1] = (kv_t){"RANGE", "  bytes=0-9\t "};
    v.h[3] = (kv_t){"X-AMZ-DATE", "20130524T000000Z"};
    assert_valid(&v, &a);
    /* a '+' in the query is a plus, not a space: a%2Bb and a+b are one */
    v = s_boto[1];
    v.query = "list-type=2&prefix=a+b%20c%2F&delimiter=%2F&encoding-type=url";
    assert_valid(&v, &a);
    /* the skew limit is inclusive */
    v = s_get_object;
    v.now = AWS_NOW + RF_SIGV4_MAX_SKEW;
    assert_valid(&v, &a);
    v.now = AWS_NOW - RF_SIGV4_MAX_SKEW;
    assert_valid(&v, &a);
    /* presigned: the last valid second */
    v = s_presigned;
    v.now = AWS_NOW + 86400;
    assert_valid(&v, &a);
}

/* A copy of `base` with header `name` (matched case-insensitively) set to
 * value (NULL: removed; not there: added). */
static vec_t s_with(const vec_t *base, const char *name, const char *value)
{
    vec_t v = *base;
    size_t n = 0, o = 0;
    bool done = false;
    for (; n < 12 && base->h[n].n != NULL; n++) {
        if (strcasecmp(base->h[n].n, name) == 0) {
            done = true;
            if (value == NULL)
                continue;
            v.h[o++] = (kv_t){base->h[n].n, value};
        } else {
            v.h[o++] = base->h[n];
        }
    }
    if (!done && value != NULL && o < 12)
        v.h[o++] = (kv_t){name, value};
    for (size_t k = o; k < 12; k++)
        v.h[k] = (kv_t){NULL, NULL};
    return v;
}

static void test_refusals(void **state)
{
    (void)state;
    char big[5000];
    memset(big, 'a', sizeof(big) - 1);
    memcpy(big, "AWS4-HMAC-SHA256 Credential=", 28);
    big[sizeof(big) - 1] = '\0';
    const vec_t *g = &s_get_object, *p = &s_presigned;
    // clang-format off
    struct {
        vec_t v;
        rf_sigv4_secret_fn *fn;
        const char *code, *why;
    } cases[] = {
        {s_with(g, "Range", "bytes=0-10"), s_secret, "SignatureDoesNotMatch", "does not match"},
        {s_with(g, "Host", "otherbucket.s3.amazonaws.com"), s_secret, "SignatureDoesNotMatch", "does not match"},
        {*g, s_wrong_secret, "SignatureDoesNotMatch", "does not match"},
        {s_with(g, "Authorization", "AWS4-HMAC-SHA256 Credential=AKIAUNKNOWN/20130524/us-east-1/s3/aws4_request,"
                                    "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,Signature="
                                    "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"),
         s_secret, "InvalidAccessKeyId", "AKIAUNKNOWN"},
        {s_with(g, "Authorization", AUTHZ("range;x-amz-content-sha256;x-amz-date",
                                          "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")),
         s_secret, "AuthorizationHeaderMalformed", "must include host"},
        {s_with(g, "Authorization", AUTHZ("host;range;x-amz-content-sha256;x-amz-date;x-amz-meta-a",
                                          "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")),
         s_secret, "SignatureDoesNotMatch", "'x-amz-meta-a' is not in the request"},
        {s_with(g, "x-amz-meta-evil", "1"), s_secret, "AccessDenied", "not signed: x-amz-meta-evil"},
        {s_with(g, "x-amz-date", NULL), s_secret, "AccessDenied", "x-amz-date"},
        {s_with(g, "x-amz-date", "2013-05-24T00:00:00Z"), s_secret, "AccessDenied", "x-amz-date"},
        {s_with(g, "x-amz-date", "20130230T000000Z"), s_secret, "AccessDenied", "x-amz-date"},
        {s_with(g, "x-amz-date", "20130524T000001Z"), s_secret, "SignatureDoesNotMatch", "does not match"},
        {s_with(g, "x-amz-date", "20130525T000000Z"), s_secret, "RequestTimeTooSkewed", "too large"},
        {s_with(g, "x-amz-content-sha256", NULL), s_secret, "InvalidRequest", "x-amz-content-sha256"},
        {s_with(g, "x-amz-content-sha256", "abc"), s_secret, "InvalidArgument", "'abc'"},
        {s_with(g, "x-amz-content-sha256", "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD"), s_secret, "InvalidRequest",
         "SigV4a"},
        {s_with(g, "Authorization", "AWS AKIAIOSFODNN7EXAMPLE:frJIUN8DYpKDtOLCwo//yllqDzg="), s_secret,
         "InvalidRequest", "not supported"},
        {s_with(g, "Authorization", "Bearer xyz"), s_secret, "AuthorizationHeaderMalformed", "'Bearer'"},
        {s_with(g, "Authorization", "AWS4-HMAC-SHA256"), s_secret, "AuthorizationHeaderMalformed",
         "needs Credential"},
        {s_with(g, "Authorization",
                "AWS4-HMAC-SHA256 Credential=" AWS_KEY "/20130524/us-east-1/s3/aws4_request,SignedHeaders=host"),
         s_secret, "AuthorizationHeaderMalformed", "needs Credential"},
        {s_with(g, "Authorization", "AWS4-HMAC-SHA256 Credential=" AWS_KEY "/20130524/us-east-1/s3/aws4_request,"
                                    "SignedHeaders=host,Signature=00,Extra=1"),
         s_secret, "AuthorizationHeaderMalformed", "'Extra'"},
        {s_with(g, "Authorization", "AWS4-HMAC-SHA256 Credential=" AWS_KEY "/20130524/us-east-1/s3/aws4_request,"
                                    "Credential=x,SignedHeaders=host,Signature=00"),
         s_secret, "AuthorizationHeaderMalformed", "repeated"},
        {s_with(g, "Authorization", "AWS4-HMAC-SHA256 Credential, SignedHeaders=host, Signature=00"), s_secret,
         "AuthorizationHeaderMalformed", "without '='"},
        {s_with(g, "Authorization",
                "AWS4-HMAC-SHA256 Credential=" AWS_KEY "/20130524/us-east-1/s3,SignedHeaders=host;range;"
                "x-amz-content-sha256;x-amz-date,Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"),
         s_secret, "AuthorizationHeaderMalformed", "Credential must be"},
        {s_with(g, "Authorization",
                "AWS4-HMAC-SHA256 Credential=" AWS_KEY "/20130524/us-east-1/ec2/aws4_request,SignedHeaders=host;range;"
                "x-amz-content-sha256;x-amz-date,Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"),
         s_secret, "AuthorizationHeaderMalformed", "'s3'"},
        {s_with(g, "Authorization",
                "AWS4-HMAC-SHA256 Credential=" AWS_KEY "/20130524/us-east-1/s3/aws5_request,SignedHeaders=host;range;"
                "x-amz-content-sha256;x-amz-date,Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"),
         s_secret, "AuthorizationHeaderMalformed", "aws4_request"},
        {s_with(g, "Authorization",
                "AWS4-HMAC-SHA256 Credential=" AWS_KEY "/20130525/us-east-1/s3/aws4_request,SignedHeaders=host;range;"
                "x-amz-content-sha256;x-amz-date,Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"),
         s_secret, "AuthorizationHeaderMalformed", "not the same as X-Amz-Date"},
        {s_with(g, "Authorization",
                "AWS4-HMAC-SHA256 Credential=" AWS_KEY "/20130524/us east/s3/aws4_request,SignedHeaders=host;range;"
                "x-amz-content-sha256;x-amz-date,Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"),
         s_secret, "AuthorizationHeaderMalformed", "region"},
        {s_with(g, "Authorization", AUTHZ("host;range;x-amz-content-sha256;x-amz-date",
                                          "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb4")),
         s_secret, "AuthorizationHeaderMalformed", "64 hex"},
        {s_with(g, "Authorization", AUTHZ("host;range;x-amz-content-sha256;x-amz-date",
                                          "g0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")),
         s_secret, "AuthorizationHeaderMalformed", "64 hex"},
        {s_with(g, "Authorization", AUTHZ("host;;x-amz-date",
                                          "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")),
         s_secret, "AuthorizationHeaderMalformed", "empty"},
        {s_with(g, "Authorization", big), s_secret, "AuthorizationHeaderMalformed", "longer than 4096"},
        {{"GET", "/test.txt", PRESIGNED_Q, AWS_NOW, {{"Host", "examplebucket.s3.amazonaws.com"},
          {"Authorization", "AWS4-HMAC-SHA256 Credential=x"}}, NULL}, s_secret, "InvalidArgument", "Only one"},
        {{"GET", "/a%zzb", "", AWS_NOW, {{"Host", "examplebucket.s3.amazonaws.com"},
          {"Authorization", AUTHZ("host;x-amz-date", "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")},
          {"x-amz-date", "20130524T000000Z"}, {"x-amz-content-sha256", EMPTY_SHA}}, NULL},
         s_secret, "InvalidURI", "path"},
        {{"GET", "/a", "x=%4", AWS_NOW, {{"Host", "examplebucket.s3.amazonaws.com"},
          {"Authorization", AUTHZ("host;x-amz-date", "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")},
          {"x-amz-date", "20130524T000000Z"}, {"x-amz-content-sha256", EMPTY_SHA}}, NULL},
         s_secret, "InvalidURI", "query"},
        {{"GET", "/a", "AWSAccessKeyId=AKIA&Expires=1&Signature=x", AWS_NOW, {{"Host", "h"}}, NULL}, s_secret,
         "InvalidRequest", "not supported"},
        {{"GET", "/test.txt", "X-Amz-Signature=00", AWS_NOW, {{"Host", "h"}}, NULL}, s_secret,
         "AuthorizationQueryParametersError", "requires"},
        {{"GET", "/test.txt", "", AWS_NOW, {{"Host", "examplebucket.s3.amazonaws.com"},
          {"x-amz-date", "20130524T000000Z"}, {"X-Amz-Date", "20130524T000000Z"}}, NULL},
         s_secret, "InvalidArgument", "x-amz-date header is given 2 times"},
        /* presigned */
        {{"GET", "/test.txt", PRESIGNED_Q, AWS_NOW + 86401, {{"Host", "examplebucket.s3.amazonaws.com"}}, NULL},
         s_secret, "AccessDenied", "Request has expired"},
        {{"GET", "/test.txt", PRESIGNED_Q, AWS_NOW - 901, {{"Host", "examplebucket.s3.amazonaws.com"}}, NULL},
         s_secret, "AccessDenied", "not valid yet"},
        {{"GET", "/test.txt", PRESIGNED_Q "&x=1", AWS_NOW, {{"Host", "examplebucket.s3.amazonaws.com"}}, NULL},
         s_secret, "SignatureDoesNotMatch", "does not match"},
        {{"GET", "/test.txt", PRESIGNED_Q "&X-Amz-Signature=00", AWS_NOW,
          {{"Host", "examplebucket.s3.amazonaws.com"}}, NULL},
         s_secret, "AuthorizationQueryParametersError", "X-Amz-Signature parameter is given 2 times"},
        {*p, s_wrong_secret, "SignatureDoesNotMatch", "does not match"},
        {s_with(p, "Host", "examplebucket.s3.amazonaws.com:443"), s_secret, "SignatureDoesNotMatch",
         "does not match"},
        {s_with(p, "x-amz-acl", "public-read"), s_secret, "AccessDenied", "x-amz-acl"},
        {{"GET", "/test.txt",
          "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2F"
          "aws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=604801&X-Amz-SignedHeaders=host&X-Amz-Signature="
          "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404",
          AWS_NOW, {{"Host", "examplebucket.s3.amazonaws.com"}}, NULL},
         s_secret, "AuthorizationQueryParametersError", "X-Amz-Expires"},
        {{"GET", "/test.txt",
          "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2F"
          "aws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=0&X-Amz-SignedHeaders=host&X-Amz-Signature="
          "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404",
          AWS_NOW, {{"Host", "examplebucket.s3.amazonaws.com"}}, NULL},
         s_secret, "AuthorizationQueryParametersError", "X-Amz-Expires"},
        {{"GET", "/test.txt",
          "X-Amz-Algorithm=AWS4-HMAC-SHA1&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2F"
          "aws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=10&X-Amz-SignedHeaders=host&X-Amz-Signature="
          "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404",
          AWS_NOW, {{"Host", "examplebucket.s3.amazonaws.com"}}, NULL},
         s_secret, "AuthorizationQueryParametersError", "X-Amz-Algorithm"},
        {{"GET", "/test.txt",
          "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2F"
          "aws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=range&X-Amz-Signature="
          "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404",
          AWS_NOW, {{"Host", "examplebucket.s3.amazonaws.com"}, {"Range", "bytes=0-1"}}, NULL},
         s_secret, "AuthorizationQueryParametersError", "must include host"},
    };
    // clang-format on
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        rf_sigv4_auth_t a;
        const char *code;
        char why[200];
        int rc = s_verify_with(&cases[i].v, cases[i].fn, &a, &code, why);
        if (rc != -1 || code == NULL || strcmp(code, cases[i].code) != 0 || why[0] == '\0' ||
            strstr(why, cases[i].why) == NULL)
            fail_msg("case %zu: rc %d, code %s, why '%s'; expected %s, '%s'", i, rc, code ? code : "(null)", why,
                     cases[i].code, cases[i].why);
        assert_string_equal(a.seed_signature, "");
    }
    /* anonymous */
    vec_t v = {"GET", "/bkt/key", "x=1", AWS_NOW, {{"Host", "h"}}, NULL};
    rf_sigv4_auth_t a;
    const char *code;
    char why[200];
    assert_int_equal(s_verify(&v, &a, &code, why), 1);
    assert_int_equal(a.decoded_length, -1);
    assert_int_equal(a.access_key[0], '\0');
}

/* ---- aws-chunked ---- */

/* The chunked example's body: 64 KiB and 1 KiB of 'a', and the empty chunk. */
static size_t s_aws_body(char *out, const char *const sigs[3], bool with_final_crlf)
{
    size_t o = 0;
    o += (size_t)sprintf(out + o, "10000;chunk-signature=%s\r\n", sigs[0]);
    memset(out + o, 'a', 65536), o += 65536;
    o += (size_t)sprintf(out + o, "\r\n400;chunk-signature=%s\r\n", sigs[1]);
    memset(out + o, 'a', 1024), o += 1024;
    o += (size_t)sprintf(out + o, "\r\n0;chunk-signature=%s\r\n%s", sigs[2], with_final_crlf ? "\r\n" : "");
    return o;
}

static const char *const s_aws_sigs[3] = {
    "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
    "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
    "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9",
};

static void test_chunked_aws_example(void **state)
{
    (void)state;
    rf_sigv4_auth_t a;
    assert_valid(&s_chunked, &a);
    char *body = malloc(70000);
    assert_non_null(body);
    size_t n = s_aws_body(body, s_aws_sigs, true);
    assert_int_equal(n, 66824); /* the example's Content-Length */
    static const size_t steps[] = {66824, 1, 7, 4096, 65536 + 87};
    for (size_t k = 0; k < sizeof(steps) / sizeof(steps[0]); k++) {
        rf_awschunk_t *d = rf_awschunk_new(&a, 0);
        sink_t sink = {0};
        const char *code;
        char why[200];
        int rc = s_feed(d, body, n, steps[k], &sink, &code, why);
        if (rc != 1)
            fail_msg("step %zu: rc %d, %s: %s", steps[k], rc, code, why);
        assert_int_equal(sink.len, 66560);
        assert_int_equal(sink.calls, 2); /* one per chunk, once verified */
        for (size_t i = 0; i < sink.len; i++)
            assert_int_equal(sink.buf[i], 'a');
        assert_int_equal(rf_awschunk_finish(d, &code, why, sizeof(why)), 0);
        assert_int_equal(rf_awschunk_total(d), 66560);
        /* after the end: no more bytes, an empty feed is still complete */
        assert_int_equal(rf_awschunk_feed(d, NULL, 0, s_sink, &sink, &code, why, sizeof(why)), 1);
        assert_int_equal(rf_awschunk_feed(d, "x", 1, s_sink, &sink, &code, why, sizeof(why)), -1);
        assert_string_equal(code, "InvalidRequest");
        assert_non_null(strstr(why, "after the end"));
        assert_int_equal(rf_awschunk_feed(d, NULL, 0, s_sink, &sink, &code, why, sizeof(why)), -1);
        free(sink.buf);
        rf_awschunk_destroy(&d);
    }

    /* a truncated body never completes */
    for (size_t cut = 0; cut < n; cut += (cut < 200 ? 1 : 997)) {
        rf_awschunk_t *d = rf_awschunk_new(&a, 0);
        sink_t sink = {0};
        const char *code;
        char why[200];
        assert_int_equal(s_feed(d, body, cut, 1000, &sink, &code, why), 0);
        assert_int_equal(rf_awschunk_finish(d, &code, why, sizeof(why)), -1);
        assert_string_equal(code, "IncompleteBody");
        assert_true(why[0] != '\0');
        free(sink.buf);
        rf_awschunk_destroy(&d);
    }
    {
        rf_awschunk_t *d = rf_awschunk_new(&a, 0);
        sink_t sink = {0};
        const char *code;
        char why[200];
        assert_int_equal(s_feed(d, body, n - 1, 1, &sink, &code, why), 0);
        assert_int_equal(rf_awschunk_finish(d, &code, why, sizeof(why)), -1);
        free(sink.buf);
        rf_awschunk_destroy(&d);
    }
    {
        /* tolerated: no CRLF after the (verified) final chunk */
        rf_awschunk_t *d = rf_awschunk_new(&a, 0);
        sink_t sink = {0};
        const char *code;
        char why[200];
        assert_int_equal(s_feed(d, body, n - 2, 4096, &sink, &code, why), 0);
        assert_int_equal(rf_awschunk_finish(d, &code, why, sizeof(why)), 0);
        assert_int_equal(sink.len, 66560);
        free(sink.buf);
        rf_awschunk_destroy(&d);
    }

    /* tampered data in the second chunk: its bytes are never handed out */
    struct {
        size_t at;
        char c;
        const char *code;
    } tamper[] = {
        {65536 + 87 + 90 + 10, 'b', "SignatureDoesNotMatch"}, /* in chunk 2 */
        {100, 'b', "SignatureDoesNotMatch"},                  /* in chunk 1 */
        {30, '0', "SignatureDoesNotMatch"},                   /* chunk 1's signature */
        {n - 5, '1', "SignatureDoesNotMatch"},                /* the final chunk's signature */
        {n - 1, 'x', "InvalidRequest"},                       /* the final CRLF */
        {0, '2', "InvalidRequest"},                           /* the size: 20000 != 64 KiB of data */
        {5, ':', "InvalidRequest"},                           /* the extension */
    };
    for (size_t t = 0; t < sizeof(tamper) / sizeof(tamper[0]); t++) {
        char save = body[tamper[t].at];
        body[tamper[t].at] = tamper[t].c;
        rf_awschunk_t *d = rf_awschunk_new(&a, 0);
        sink_t sink = {0};
        const char *code;
        char why[200];
        int rc = s_feed(d, body, n, 333, &sink, &code, why);
        if (rc != -1 || strcmp(code, tamper[t].code) != 0 || why[0] == '\0')
            fail_msg("tamper %zu: rc %d, %s: %s", t, rc, code, why);
        if (t == 0)
            assert_int_equal(sink.len, 65536);
        if (t == 1 || t == 2)
            assert_int_equal(sink.len, 0);
        /* errors are sticky */
        assert_int_equal(rf_awschunk_feed(d, "0", 1, s_sink, &sink, &code, why, sizeof(why)), -1);
        assert_string_equal(code, tamper[t].code);
        assert_int_equal(rf_awschunk_finish(d, &code, why, sizeof(why)), -1);
        free(sink.buf);
        rf_awschunk_destroy(&d);
        body[tamper[t].at] = save;
    }

    /* limits: a chunk larger than max_chunk, a decoded length the chunks
     * exceed or fall short of, an output that fails */
    {
        const char *code;
        char why[200];
        sink_t sink = {0};
        rf_awschunk_t *d = rf_awschunk_new(&a, 1000);
        assert_int_equal(s_feed(d, body, n, 4096, &sink, &code, why), -1);
        assert_string_equal(code, "InvalidChunkSizeError");
        rf_awschunk_destroy(&d);
        rf_sigv4_auth_t b = a;
        b.decoded_length = 66559;
        d = rf_awschunk_new(&b, 0);
        assert_int_equal(s_feed(d, body, n, 4096, &sink, &code, why), -1);
        assert_string_equal(code, "InvalidRequest");
        rf_awschunk_destroy(&d);
        b.decoded_length = 66561;
        d = rf_awschunk_new(&b, 0);
        assert_int_equal(s_feed(d, body, n, 4096, &sink, &code, why), -1);
        assert_string_equal(code, "IncompleteBody");
        rf_awschunk_destroy(&d);
        sink.fail = sink.calls + 2;
        d = rf_awschunk_new(&a, 0);
        assert_int_equal(s_feed(d, body, n, 4096, &sink, &code, why), -1);
        assert_string_equal(code, "InternalError");
        rf_awschunk_destroy(&d);
        free(sink.buf);
        rf_awschunk_destroy(&d); /* harmless on NULL */
        rf_sigv4_auth_t u = a;
        u.payload = RF_SIGV4_PAYLOAD_SHA256;
        assert_null(rf_awschunk_new(&u, 0));
    }
    free(body);
}

/* The trailer example: its chunk signatures chain from 106e2a8a..., and the
 * trailer signature d81f82fc... is over "x-amz-checksum-crc32c:sOO8/Q==\n". */
static void test_chunked_trailer_aws_example(void **state)
{
    (void)state;
    static const char *const sigs[3] = {
        "b474d8862b1487a5145d686f57f013e54db672cee1c953b3010fb58501ef5aa2",
        "1c1344b170168f8e65b41376b44b20fe354e373826ccbbe2c1d40a8cae51e5c7",
        "2ca2aba2005185cf7159c6277faf83795951dd77a3a99e6e65d5c9f85863f992",
    };
    static const char trailer[] =
        "x-amz-checksum-crc32c:sOO8/Q==\r\n"
        "x-amz-trailer-signature:d81f82fc3505edab99d459891051a732e8730629a2e4a59689829ca17fe2e435\r\n";
    rf_sigv4_auth_t a;
    assert_valid(&s_chunked_trailer, &a);
    char *body = malloc(70000);
    assert_non_null(body);
    /* form 0, AWS's page: an empty line before the trailer, none after it;
     * form 1, the SDKs': none before, one after (HTTP chunked framing) */
    for (int form = 0; form < 2; form++) {
        size_t n = s_aws_body(body, sigs, form == 0);
        memcpy(body + n, trailer, sizeof(trailer) - 1), n += sizeof(trailer) - 1;
        if (form == 1)
            memcpy(body + n, "\r\n", 2), n += 2;
        for (size_t step = 1; step <= 66560; step *= 64) {
            rf_awschunk_t *d = rf_awschunk_new(&a, 0);
            sink_t sink = {0};
            const char *code;
            char why[200];
            int rc = s_feed(d, body, n, step, &sink, &code, why);
            if (rc != form)
                fail_msg("form %d step %zu: rc %d, %s: %s", form, step, rc, code, why);
            assert_int_equal(rf_awschunk_finish(d, &code, why, sizeof(why)), 0);
            assert_int_equal(sink.len, 66560);
            free(sink.buf);
            rf_awschunk_destroy(&d);
        }
        /* another trailer value: the trailer signature no longer matches */
        char *v = memmem(body, n, "sOO8/Q==", 8);
        v[6] = 'A';
        rf_awschunk_t *d = rf_awschunk_new(&a, 0);
        sink_t sink = {0};
        const char *code;
        char why[200];
        assert_int_equal(s_feed(d, body, n, 4096, &sink, &code, why), -1);
        assert_string_equal(code, "SignatureDoesNotMatch");
        assert_non_null(strstr(why, "trailer signature"));
        v[6] = 'Q';
        free(sink.buf);
        rf_awschunk_destroy(&d);
    }
    free(body);
}

/* ---- a signer from the published formula, for bodies of our own ---- */

static void s_hmac_hex(const unsigned char key[32], const char *msg, char out[65])
{
    unsigned char mac[32];
    unsigned int l = 0;
    HMAC(EVP_sha256(), key, 32, (const unsigned char *)msg, strlen(msg), mac, &l);
    for (int i = 0; i < 32; i++)
        sprintf(out + 2 * i, "%02x", mac[i]);
}

static void s_sha_hex(const void *p, size_t n, char out[65])
{
    unsigned char d[32];
    unsigned int l = 0;
    EVP_Digest(p, n, d, &l, EVP_sha256(), NULL);
    for (int i = 0; i < 32; i++)
        sprintf(out + 2 * i, "%02x", d[i]);
}

/* A STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER body of data in chunks of
 * `chunk` bytes, with trailer_line ("name:value") signed, SDK framing. */
static size_t s_sign_body(const rf_sigv4_auth_t *a, const char *data, size_t len, size_t chunk,
                          const char *trailer_line, char *out)
{
    char prev[65], h[65], sts[600], scope[100];
    size_t o = 0;
    snprintf(scope, sizeof(scope), "%s/%s/s3/aws4_request", a->date, a->region);
    memcpy(prev, a->seed_signature, 65);
    for (size_t i = 0;; i += chunk) {
        size_t take = i >= len ? 0 : len - i < chunk ? len - i : chunk;
        s_sha_hex(data + i, take, h);
        snprintf(sts, sizeof(sts), "AWS4-HMAC-SHA256-PAYLOAD\n%s\n%s\n%s\n%s\n%s", a->amz_date, scope, prev, EMPTY_SHA,
                 h);
        s_hmac_hex(a->signing_key, sts, prev);
        o += (size_t)sprintf(out + o, "%zx;chunk-signature=%s\r\n", take, prev);
        memcpy(out + o, data + i, take), o += take;
        if (take == 0)
            break;
        memcpy(out + o, "\r\n", 2), o += 2;
    }
    char canon[200];
    snprintf(canon, sizeof(canon), "%s\n", trailer_line);
    s_sha_hex(canon, strlen(canon), h);
    snprintf(sts, sizeof(sts), "AWS4-HMAC-SHA256-TRAILER\n%s\n%s\n%s\n%s", a->amz_date, scope, prev, h);
    s_hmac_hex(a->signing_key, sts, prev);
    o += (size_t)sprintf(out + o, "%s\r\nx-amz-trailer-signature:%s\r\n\r\n", trailer_line, prev);
    return o;
}

static void test_signed_trailer(void **state)
{
    (void)state;
    rf_sigv4_auth_t a;
    assert_valid(&s_chunked_trailer, &a);
    static const struct {
        const char *trailer, *line;
        int rc;
        const char *code;
    } cases[] = {
        /* sha256 and crc64nvme of "123456789" x 1000 were computed below */
        {"x-amz-checksum-crc32c", "x-amz-checksum-crc32c:%s", 1, NULL},
        {"x-amz-checksum-sha256", "x-amz-checksum-sha256:%s", 1, NULL},
        {"x-amz-checksum-crc64nvme", "x-amz-checksum-crc64nvme:%s", 1, NULL},
        {"x-amz-checksum-sha1", "x-amz-checksum-sha1:%s", 1, NULL},
        {"x-amz-checksum-crc32", "x-amz-checksum-crc32:AAAAAA==", -1, "BadDigest"},
        {"x-amz-checksum-crc32", "x-amz-checksum-crc32c:%s", -1, "MalformedTrailerError"},
        {"", "x-amz-checksum-crc32:%s", -1, "MalformedTrailerError"},
    };
    char *data = malloc(9000), *body = malloc(20000);
    assert_non_null(data);
    assert_non_null(body);
    for (int i = 0; i < 1000; i++)
        memcpy(data + 9 * i, "123456789", 9);
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        rf_sigv4_auth_t b = a;
        snprintf(b.trailer, sizeof(b.trailer), "%s", cases[c].trailer);
        b.decoded_length = 9000;
        /* the checksum the line claims: our own, for the cases that pass */
        char sum[64] = "", line[160];
        rf_s3sum_t s;
        int kind = rf_s3sum_kind(cases[c].trailer[0] ? cases[c].trailer : "crc32",
                                 strlen(cases[c].trailer[0] ? cases[c].trailer : "crc32"));
        assert_int_equal(rf_s3sum_init(&s, kind), 0);
        rf_s3sum_update(&s, data, 9000);
        assert_int_equal(rf_s3sum_final_b64(&s, sum), 0);
        rf_s3sum_clear(&s);
        snprintf(line, sizeof(line), cases[c].line, sum);
        size_t n = s_sign_body(&b, data, 9000, 4000, line, body);
        for (size_t step = 1; step < 20000; step *= 37) {
            rf_awschunk_t *d = rf_awschunk_new(&b, 0);
            sink_t sink = {0};
            const char *code;
            char why[200];
            assert_non_null(d);
            int rc = s_feed(d, body, n, step, &sink, &code, why);
            if (rc != cases[c].rc || (cases[c].code != NULL && strcmp(code, cases[c].code) != 0))
                fail_msg("case %zu step %zu: rc %d, %s: %s", c, step, rc, code, why);
            if (rc == 1) {
                assert_int_equal(sink.len, 9000);
                assert_memory_equal(sink.buf, data, 9000);
                assert_int_equal(sink.calls, 3);
            } else {
                assert_true(why[0] != '\0');
            }
            free(sink.buf);
            rf_awschunk_destroy(&d);
        }
    }
    /* no trailer signature, a tampered one, a line after it */
    rf_sigv4_auth_t b = a;
    snprintf(b.trailer, sizeof(b.trailer), "x-amz-checksum-crc32c");
    b.decoded_length = 9;
    size_t n = s_sign_body(&b, "123456789", 9, 100, "x-amz-checksum-crc32c:4waSgw==", body);
    static const struct {
        const char *from, *to, *code;
    } edits[] = {
        {"x-amz-trailer-signature:", "x-amz-trailer-signaturX:", "MalformedTrailerError"},
        {"x-amz-trailer-signature:", "x-amz-trailer-signature:0", "MalformedTrailerError"},
        {"\r\n\r\n", "\r\nx:1\r\n\r\n", "MalformedTrailerError"},
        {"x-amz-checksum-crc32c:4waSgw==", "x-amz-checksum-crc32c:4waSgA==", "SignatureDoesNotMatch"},
    };
    for (size_t e = 0; e < sizeof(edits) / sizeof(edits[0]); e++) {
        char copy[2000];
        char *at = memmem(body, n, edits[e].from, strlen(edits[e].from));
        if (e == 2)
            at = body + n - 4;
        assert_non_null(at);
        size_t pre = (size_t)(at - body), fl = strlen(edits[e].from), tl = strlen(edits[e].to);
        memcpy(copy, body, pre);
        memcpy(copy + pre, edits[e].to, tl);
        memcpy(copy + pre + tl, at + fl, n - pre - fl);
        rf_awschunk_t *d = rf_awschunk_new(&b, 0);
        sink_t sink = {0};
        const char *code;
        char why[200];
        int rc = s_feed(d, copy, n - fl + tl, 5, &sink, &code, why);
        if (rc != -1 || strcmp(code, edits[e].code) != 0)
            fail_msg("edit %zu: rc %d, %s: %s", e, rc, code, why);
        free(sink.buf);
        rf_awschunk_destroy(&d);
    }
    free(data);
    free(body);
}

static void test_unsigned_trailer(void **state)
{
    (void)state;
    rf_sigv4_auth_t a;
    memset(&a, 0, sizeof(a));
    a.payload = RF_SIGV4_PAYLOAD_UNSIGNED_TRAILER;
    a.decoded_length = 9;
    snprintf(a.amz_date, sizeof(a.amz_date), "20130524T000000Z");
    snprintf(a.date, sizeof(a.date), "20130524");
    snprintf(a.region, sizeof(a.region), "us-east-1");
    static const struct {
        const char *trailer, *body;
        int rc;
        const char *code;
    } cases[] = {
        {"x-amz-checksum-crc32c", "9\r\n123456789\r\n0\r\nx-amz-checksum-crc32c:4waSgw==\r\n\r\n", 1, NULL},
        {"x-amz-checksum-crc32c", "4;ext=1\r\n1234\r\n5\r\n56789\r\n0\r\nX-Amz-Checksum-CRC32C: 4waSgw==\r\n\r\n", 1,
         NULL},
        {"x-amz-checksum-crc32c", "9\r\n123456789\r\n0\r\n\r\nx-amz-checksum-crc32c:4waSgw==\r\n\r\n", 1, NULL},
        {"x-amz-checksum-crc32", "9\r\n123456789\r\n0\r\nx-amz-checksum-crc32:y/Q5Jg==\r\n\r\n", 1, NULL},
        {"x-amz-checksum-crc64nvme", "9\r\n123456789\r\n0\r\nx-amz-checksum-crc64nvme:rosUhgp5mIg=\r\n\r\n", 1, NULL},
        {"x-amz-checksum-sha256",
         "9\r\n123456789\r\n0\r\nx-amz-checksum-sha256:FeKw08M4keuw8e9gnsQZQgwg4yDOlMZfvIwzEkSOsiU=\r\n\r\n", 1, NULL},
        {"x-amz-checksum-sha1", "9\r\n123456789\r\n0\r\nx-amz-checksum-sha1:98O8HYCOBHMq32eZZczDTKeuNEE=\r\n\r\n", 1,
         NULL},
        {"", "9\r\n123456789\r\n0\r\n\r\n", 1, NULL},
        {"x-amz-checksum-crc32c", "9\r\n123456789\r\n0\r\nx-amz-checksum-crc32c:4waSgA==\r\n\r\n", -1, "BadDigest"},
        {"x-amz-checksum-crc32c", "9\r\n123456789\r\n0\r\nx-amz-checksum-crc32:y/Q5Jg==\r\n\r\n", -1,
         "MalformedTrailerError"},
        {"x-amz-checksum-crc32c", "9\r\n123456789\r\n0\r\n\r\n\r\n", -1, "MalformedTrailerError"},
        {"", "9\r\n123456789\r\n0\r\nx-amz-checksum-crc32:y/Q5Jg==\r\n\r\n", -1, "MalformedTrailerError"},
        {"x-amz-checksum-crc32c",
         "9\r\n123456789\r\n0\r\nx-amz-checksum-crc32c:4waSgw==\r\nx-amz-checksum-crc32c:4waSgw==\r\n\r\n", -1,
         "MalformedTrailerError"},
        {"x-amz-checksum-crc32c",
         "9\r\n123456789\r\n0\r\nx-amz-checksum-crc32c:4waSgw==\r\nx-amz-trailer-signature:00\r\n\r\n", -1,
         "MalformedTrailerError"},
        {"x-amz-checksum-crc32c", "9\n123456789\r\n0\r\n", -1, "InvalidRequest"},
        {"x-amz-checksum-crc32c", "9\r\n123456789xx", -1, "InvalidRequest"},
        {"x-amz-checksum-crc32c", "g\r\n", -1, "InvalidRequest"},
        {"x-amz-checksum-crc32c", "11111111111111111\r\n", -1, "InvalidChunkSizeError"},
        {"x-amz-checksum-crc32c", "a\r\n", -1, "InvalidRequest"}, /* more than the decoded length */
        {"x-amz-checksum-crc32c", "9\r\n123456789\r\n0\r\nx-amz-checksum-crc32c:4waSgw==\r\n\r\nx", -1,
         "InvalidRequest"},
    };
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        rf_sigv4_auth_t b = a;
        snprintf(b.trailer, sizeof(b.trailer), "%s", cases[c].trailer);
        for (size_t step = 1; step <= 64; step *= 4) {
            rf_awschunk_t *d = rf_awschunk_new(&b, 0);
            sink_t sink = {0};
            const char *code;
            char why[200];
            assert_non_null(d);
            int rc = s_feed(d, cases[c].body, strlen(cases[c].body), step, &sink, &code, why);
            if (rc != cases[c].rc || (cases[c].code != NULL && strcmp(code, cases[c].code) != 0))
                fail_msg("case %zu step %zu: rc %d, %s: %s", c, step, rc, code, why);
            if (rc == 1) {
                assert_int_equal(rf_awschunk_finish(d, &code, why, sizeof(why)), 0);
                assert_int_equal(sink.len, 9);
                assert_memory_equal(sink.buf, "123456789", 9);
            } else {
                assert_true(why[0] != '\0');
            }
            free(sink.buf);
            rf_awschunk_destroy(&d);
        }
    }
    /* finish tolerates a trailer without its final empty line, nothing else */
    rf_sigv4_auth_t b = a;
    snprintf(b.trailer, sizeof(b.trailer), "x-amz-checksum-crc32c");
    static const struct {
        const char *body;
        int rc;
    } ends[] = {
        {"9\r\n123456789\r\n0\r\nx-amz-checksum-crc32c:4waSgw==\r\n", 0},
        {"9\r\n123456789\r\n0\r\nx-amz-checksum-crc32c:4waSgw==", -1},
        {"9\r\n123456789\r\n0\r\n", -1},
        {"9\r\n123456789\r\n", -1},
    };
    for (size_t e = 0; e < sizeof(ends) / sizeof(ends[0]); e++) {
        rf_awschunk_t *d = rf_awschunk_new(&b, 0);
        sink_t sink = {0};
        const char *code;
        char why[200];
        assert_int_equal(s_feed(d, ends[e].body, strlen(ends[e].body), 3, &sink, &code, why), 0);
        assert_int_equal(rf_awschunk_finish(d, &code, why, sizeof(why)), ends[e].rc);
        if (ends[e].rc != 0)
            assert_string_equal(code, "IncompleteBody");
        free(sink.buf);
        rf_awschunk_destroy(&d);
    }
    /* an unknown trailer cannot make a decoder */
    snprintf(b.trailer, sizeof(b.trailer), "x-amz-checksum-md5");
    assert_null(rf_awschunk_new(&b, 0));
}

/* ---- checksums ---- */

static void test_checksums(void **state)
{
    (void)state;
    static const struct {
        const char *name, *data, *b64;
    } cases[] = {
        /* the CRC catalogue's check values: 0xCBF43926, 0xE3069283, 0xAE8B14860A799888 */
        {"crc32", "123456789", "y/Q5Jg=="},
        {"CRC32C", "123456789", "4waSgw=="},
        {"x-amz-checksum-crc64nvme", "123456789", "rosUhgp5mIg="},
        {"sha1", "123456789", "98O8HYCOBHMq32eZZczDTKeuNEE="},
        {"x-amz-checksum-sha256", "123456789", "FeKw08M4keuw8e9gnsQZQgwg4yDOlMZfvIwzEkSOsiU="},
        {"crc32", "", "AAAAAA=="},
        {"crc32c", "", "AAAAAA=="},
        {"crc64nvme", "", "AAAAAAAAAAA="},
        {"sha1", "", "2jmj7l5rSw0yVb/vlWAYkK/YBwk="},
        {"sha256", "", "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="},
        {"crc32", "hello world", "DUoRhQ=="},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int kind = rf_s3sum_kind(cases[i].name, strlen(cases[i].name));
        assert_true(kind >= 0);
        for (int bytewise = 0; bytewise < 2; bytewise++) {
            rf_s3sum_t s;
            char out[64];
            size_t n = strlen(cases[i].data);
            assert_int_equal(rf_s3sum_init(&s, kind), 0);
            if (bytewise)
                for (size_t k = 0; k < n; k++)
                    rf_s3sum_update(&s, cases[i].data + k, 1);
            else
                rf_s3sum_update(&s, cases[i].data, n);
            assert_int_equal(rf_s3sum_final_b64(&s, out), 0);
            assert_string_equal(out, cases[i].b64);
            assert_int_equal(rf_s3sum_final_b64(&s, out), -1); /* finished */
            rf_s3sum_clear(&s);
            rf_s3sum_clear(&s);
        }
    }
    assert_int_equal(rf_s3sum_kind("md5", 3), -1);
    assert_int_equal(rf_s3sum_kind("crc32cc", 7), -1);
    assert_int_equal(rf_s3sum_kind("crc32c", 5), RF_S3SUM_CRC32);
    assert_int_equal(rf_s3sum_kind("x-amz-checksum-", 15), -1);
    assert_string_equal(rf_s3sum_name(RF_S3SUM_CRC64NVME), "crc64nvme");
    assert_string_equal(rf_s3sum_name(9), "");
    rf_s3sum_t s;
    assert_int_equal(rf_s3sum_init(&s, 42), -1);
    rf_s3sum_clear(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_aws_examples),
        cmocka_unit_test(test_canonical_request_hash),
        cmocka_unit_test(test_botocore),
        cmocka_unit_test(test_spellings),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_chunked_aws_example),
        cmocka_unit_test(test_chunked_trailer_aws_example),
        cmocka_unit_test(test_signed_trailer),
        cmocka_unit_test(test_unsigned_trailer),
        cmocka_unit_test(test_checksums),
    };
    return cmocka_run_group_tests_name("rf_sigv4", tests, NULL, NULL);
}
