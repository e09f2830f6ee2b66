/*  Unit tests for common/rf_bus (RFB/1, proto/rfb.md): the encoder's frames,
 *  decoding them back, every rejection rule of the decoder (with its
 *  reason), the fuzzer's frame splitter, and a real ROUTER/DEALER round trip
 *  over inproc:// through rf_bus_send/rf_bus_recv. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rf_bus.h"
#include "rf_log.h"

/* ---- helpers ---------------------------------------------------------------- */

/* Views the frames of `msg` as rf_frame_t (borrowed). Returns the count. */
static size_t s_frames(zmsg_t *msg, rf_frame_t *frames, size_t max)
{
    size_t n = 0;
    for (zframe_t *f = zmsg_first(msg); f != NULL && n < max; f = zmsg_next(msg)) {
        frames[n].data = zframe_data(f);
        frames[n].len = zframe_size(f);
        n++;
    }
    return n;
}

static json_t *s_json(const char *text)
{
    json_error_t e;
    json_t *j = json_loads(text, 0, &e);
    if (j == NULL)
        fail_msg("test JSON does not parse: %s: %s", text, e.text);
    return j;
}

/* A frame over a string literal (without its NUL). */
#define F(s) ((rf_frame_t){(s), sizeof(s) - 1})

static const uint8_t s_job_id[8] = {0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08};
#define ID ((rf_frame_t){s_job_id, 8})

/* Decodes, expects failure with exactly `want`, and checks nothing is held. */
static void s_bad(const rf_frame_t *frames, size_t n, const char *want)
{
    rf_bus_msg_t m;
    char why[160] = "";
    memset(&m, 0xa5, sizeof(m));
    int rc = rf_bus_decode(frames, n, &m, why, sizeof(why));
    if (rc != -1) {
        rf_bus_msg_clear(&m);
        fail_msg("message should not decode (expected '%s')", want);
    }
    if (strcmp(why, want) != 0)
        fail_msg("reason '%s', expected '%s'", why, want);
    assert_null(m.header); /* nothing left to release */
    assert_int_equal(m.n_body, 0);
}

static rf_bus_msg_t s_good(const rf_frame_t *frames, size_t n)
{
    rf_bus_msg_t m;
    char why[160] = "";
    if (rf_bus_decode(frames, n, &m, why, sizeof(why)) != 0)
        fail_msg("message should decode: %s", why);
    return m;
}

/* ---- encode → decode ---------------------------------------------------------- */

static void test_ready(void **state)
{
    (void)state;
    json_t *h = s_json("{\"capacity\": 2, \"pid\": 4242, \"host\": \"img-1\", \"version\": \"0.1.0\"}");
    zmsg_t *msg = rf_bus_encode(RF_BUS_READY, "image", 99, h);
    json_decref(h);
    assert_non_null(msg);
    rf_frame_t fr[8];
    size_t n = s_frames(msg, fr, 8);
    assert_int_equal(n, 4);
    assert_int_equal(fr[0].len, 4);
    assert_memory_equal(fr[0].data, "RFB1", 4);
    assert_int_equal(fr[1].len, 1);
    assert_int_equal(*(const uint8_t *)fr[1].data, 0x01);
    assert_int_equal(fr[2].len, 5);
    assert_memory_equal(fr[2].data, "image", 5);
    /* compact serialisation, no job id frame */
    assert_null(memchr(fr[3].data, ' ', fr[3].len));

    rf_bus_msg_t m = s_good(fr, n);
    assert_int_equal(m.cmd, RF_BUS_READY);
    assert_string_equal(m.service, "image");
    assert_int_equal(m.job_id, 0);
    assert_non_null(m.header);
    assert_int_equal(json_integer_value(json_object_get(m.header, "capacity")), 2);
    assert_int_equal(json_integer_value(json_object_get(m.header, "pid")), 4242);
    assert_string_equal(json_string_value(json_object_get(m.header, "host")), "img-1");
    assert_int_equal(m.n_body, 0);
    assert_int_equal(m.body_len, 0);
    rf_bus_msg_clear(&m);
    assert_null(m.header);
    rf_bus_msg_clear(&m); /* twice is safe */
    zmsg_destroy(&msg);
}

static void test_job(void **state)
{
    (void)state;
    json_t *h = s_json("{\"request_id\": \"4f2a\", \"deadline_ms\": 29850,"
                       " \"chain\": [{\"op\": \"resize\", \"w\": 500, \"h\": 500}],"
                       " \"source\": {\"path\": \"/photo.jpg\", \"size\": 7}}");
    zmsg_t *msg = rf_bus_encode(RF_BUS_JOB, NULL, 0x0102030405060708ULL, h);
    json_decref(h);
    assert_non_null(msg);
    assert_int_equal(zmsg_size(msg), 4);
    assert_int_equal(zmsg_addmem(msg, "abc", 3), 0);
    assert_int_equal(zmsg_addmem(msg, "", 0), 0);
    assert_int_equal(zmsg_addmem(msg, "defg", 4), 0);

    rf_frame_t fr[8];
    size_t n = s_frames(msg, fr, 8);
    assert_int_equal(n, 7);
    assert_int_equal(*(const uint8_t *)fr[1].data, 0x02);
    assert_int_equal(fr[2].len, 8);
    assert_memory_equal(fr[2].data, s_job_id, 8); /* network byte order */

    rf_bus_msg_t m = s_good(fr, n);
    assert_int_equal(m.cmd, RF_BUS_JOB);
    assert_true(m.job_id == 0x0102030405060708ULL);
    assert_string_equal(m.service, "");
    assert_string_equal(json_string_value(json_object_get(m.header, "request_id")), "4f2a");
    assert_int_equal(json_integer_value(json_object_get(m.header, "deadline_ms")), 29850);
    json_t *chain = json_object_get(m.header, "chain");
    assert_int_equal(json_array_size(chain), 1);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(chain, 0), "w")), 500);
    assert_string_equal(json_string_value(json_object_get(json_object_get(m.header, "source"), "path")), "/photo.jpg");
    assert_int_equal(m.n_body, 3);
    assert_int_equal(m.body_len, 7);
    /* body frames borrow from the decoded frames */
    assert_ptr_equal(m.body[0].data, fr[4].data);
    assert_int_equal(m.body[0].len, 3);
    assert_memory_equal(m.body[0].data, "abc", 3);
    assert_int_equal(m.body[1].len, 0);
    assert_int_equal(m.body[2].len, 4);
    assert_memory_equal(m.body[2].data, "defg", 4);
    rf_bus_msg_clear(&m);
    zmsg_destroy(&msg);
}

static void test_job_id_extremes(void **state)
{
    (void)state;
    static const uint64_t ids[] = {0, 1, 0xff, 0x100, 0x8000000000000000ULL, UINT64_MAX};
    for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
        zmsg_t *msg = rf_bus_encode(RF_BUS_CANCEL, NULL, ids[i], NULL);
        assert_non_null(msg);
        rf_frame_t fr[4];
        size_t n = s_frames(msg, fr, 4);
        assert_int_equal(n, 3);
        const uint8_t *p = fr[2].data;
        assert_int_equal(p[7], ids[i] & 0xff);
        assert_int_equal(p[0], ids[i] >> 56);
        rf_bus_msg_t m = s_good(fr, n);
        assert_int_equal(m.cmd, RF_BUS_CANCEL);
        assert_true(m.job_id == ids[i]);
        assert_null(m.header);
        zmsg_destroy(&msg);
    }
}

static void test_reply(void **state)
{
    (void)state;
    json_t *h = s_json("{\"status\": 200, \"content_type\": \"image/webp\", \"elapsed_ms\": 41.2}");
    zmsg_t *msg = rf_bus_encode(RF_BUS_REPLY, "ignored", 77, h);
    json_decref(h);
    assert_non_null(msg);
    assert_int_equal(zmsg_size(msg), 4); /* the service is not sent */
    assert_int_equal(zmsg_addmem(msg, "RIFF....WEBP", 12), 0);
    rf_frame_t fr[8];
    size_t n = s_frames(msg, fr, 8);
    rf_bus_msg_t m = s_good(fr, n);
    assert_int_equal(m.cmd, RF_BUS_REPLY);
    assert_int_equal(m.job_id, 77);
    assert_int_equal(json_integer_value(json_object_get(m.header, "status")), 200);
    assert_string_equal(json_string_value(json_object_get(m.header, "content_type")), "image/webp");
    assert_true(json_real_value(json_object_get(m.header, "elapsed_ms")) == 41.2);
    assert_int_equal(m.n_body, 1);
    assert_int_equal(m.body_len, 12);
    rf_bus_msg_clear(&m);
    zmsg_destroy(&msg);

    /* an error reply without body */
    h = s_json("{\"status\": 415, \"error\": \"not an image\"}");
    msg = rf_bus_encode(RF_BUS_REPLY, NULL, 78, h);
    json_decref(h);
    n = s_frames(msg, fr, 8);
    assert_int_equal(n, 4);
    m = s_good(fr, n);
    assert_int_equal(json_integer_value(json_object_get(m.header, "status")), 415);
    assert_int_equal(m.n_body, 0);
    rf_bus_msg_clear(&m);
    zmsg_destroy(&msg);
}

static void test_heartbeat_disconnect(void **state)
{
    (void)state;
    static const rf_bus_cmd_t cmds[] = {RF_BUS_HEARTBEAT, RF_BUS_DISCONNECT};
    for (size_t i = 0; i < 2; i++) {
        zmsg_t *msg = rf_bus_encode(cmds[i], NULL, 5, NULL);
        assert_non_null(msg);
        rf_frame_t fr[4];
        size_t n = s_frames(msg, fr, 4);
        assert_int_equal(n, 2);
        assert_int_equal(*(const uint8_t *)fr[1].data, cmds[i]);
        rf_bus_msg_t m = s_good(fr, n);
        assert_int_equal(m.cmd, cmds[i]);
        assert_int_equal(m.job_id, 0);
        assert_null(m.header);
        zmsg_destroy(&msg);
    }
}

static void test_encode_invalid(void **state)
{
    (void)state;
    json_t *obj = s_json("{\"capacity\": 1}");
    json_t *arr = json_array();
    assert_null(rf_bus_encode(RF_BUS_READY, "image", 0, NULL));
    assert_null(rf_bus_encode(RF_BUS_READY, "image", 0, arr));
    assert_null(rf_bus_encode(RF_BUS_READY, NULL, 0, obj));
    assert_null(rf_bus_encode(RF_BUS_READY, "", 0, obj));
    assert_null(rf_bus_encode(RF_BUS_READY, "Image", 0, obj));
    assert_null(rf_bus_encode(RF_BUS_READY, "a b", 0, obj));
    assert_null(rf_bus_encode(RF_BUS_READY, "abcdefghijklmnopqrstuvwxyz0123456", 0, obj)); /* 33 */
    assert_null(rf_bus_encode(RF_BUS_JOB, NULL, 1, NULL));
    assert_null(rf_bus_encode(RF_BUS_JOB, NULL, 1, arr));
    assert_null(rf_bus_encode(RF_BUS_REPLY, NULL, 1, NULL));

    zmsg_t *msg = rf_bus_encode(RF_BUS_READY, "abcdefghijklmnopqrstuvwxyz012345", 0, obj); /* 32 */
    assert_non_null(msg);
    zmsg_destroy(&msg);
    msg = rf_bus_encode(RF_BUS_READY, "video_2-x", 0, obj);
    assert_non_null(msg);
    zmsg_destroy(&msg);

    /* a header that would serialise over 64 KiB */
    char *big = malloc(70000);
    memset(big, 'a', 69999);
    big[69999] = '\0';
    json_t *bj = json_pack("{s:i,s:s}", "status", 200, "pad", big);
    assert_null(rf_bus_encode(RF_BUS_REPLY, NULL, 1, bj));
    json_decref(bj);
    free(big);

    json_decref(obj);
    json_decref(arr);
}

/* ---- decode rejections -------------------------------------------------------- */

static void test_decode_envelope(void **state)
{
    (void)state;
    rf_frame_t one[] = {F("RFB1")};
    s_bad(one, 1, "message has 1 frames, needs at least 2");
    s_bad(one, 0, "message has 0 frames, needs at least 2");
    rf_frame_t p2[] = {F("RFB2"), F("\x04")};
    s_bad(p2, 2, "not an RFB1 message");
    rf_frame_t p3[] = {F("RFB"), F("\x04")};
    s_bad(p3, 2, "not an RFB1 message");
    rf_frame_t p5[] = {F("RFB1x"), F("\x04")};
    s_bad(p5, 2, "not an RFB1 message");
    rf_frame_t pl[] = {F("rfb1"), F("\x04")};
    s_bad(pl, 2, "not an RFB1 message");
    rf_frame_t c0[] = {F("RFB1"), F("")};
    s_bad(c0, 2, "command frame must be one octet");
    rf_frame_t c2[] = {F("RFB1"), F("\x04\x04")};
    s_bad(c2, 2, "command frame must be one octet");
    rf_frame_t u8[] = {F("RFB1"), F("\x08")};
    s_bad(u8, 2, "unknown command 0x08");
    rf_frame_t u0[] = {F("RFB1"), F("\x00")};
    s_bad(u0, 2, "unknown command 0x00");
    rf_frame_t uf[] = {F("RFB1"), F("\xff")};
    s_bad(uf, 2, "unknown command 0xff");
}

static void test_decode_frame_counts(void **state)
{
    (void)state;
    rf_frame_t hb[] = {F("RFB1"), F("\x04"), F("")};
    s_bad(hb, 3, "HEARTBEAT with 3 frames");
    rf_frame_t dc[] = {F("RFB1"), F("\x05"), F("x")};
    s_bad(dc, 3, "DISCONNECT with 3 frames");
    rf_frame_t cn[] = {F("RFB1"), F("\x06"), ID, F("x")};
    s_bad(cn, 2, "CANCEL with 2 frames");
    s_bad(cn, 4, "CANCEL with 4 frames");
    rf_frame_t rd[] = {F("RFB1"), F("\x01"), F("image"), F("{\"capacity\":1}"), F("")};
    s_bad(rd, 3, "READY with 3 frames");
    s_bad(rd, 5, "READY with 5 frames");
    rf_frame_t jb[] = {F("RFB1"), F("\x02"), ID};
    s_bad(jb, 3, "JOB with 3 frames");
    rf_frame_t rp[] = {F("RFB1"), F("\x03"), ID};
    s_bad(rp, 3, "REPLY with 3 frames");
}

static void test_decode_ready_rules(void **state)
{
    (void)state;
    rf_frame_t f[] = {F("RFB1"), F("\x01"), F("image"), F("{\"pid\":1}")};
    s_bad(f, 4, "READY needs capacity 1..256");
    f[3] = F("{\"capacity\":0}");
    s_bad(f, 4, "READY needs capacity 1..256");
    f[3] = F("{\"capacity\":257}");
    s_bad(f, 4, "READY needs capacity 1..256");
    f[3] = F("{\"capacity\":-1}");
    s_bad(f, 4, "READY needs capacity 1..256");
    f[3] = F("{\"capacity\":\"2\"}");
    s_bad(f, 4, "READY needs capacity 1..256");
    f[3] = F("{\"capacity\":2.0}");
    s_bad(f, 4, "READY needs capacity 1..256");
    f[3] = F("{\"capacity\":4294967298}"); /* 2^32 + 2 */
    s_bad(f, 4, "READY needs capacity 1..256");

    f[3] = F("{\"capacity\":1}");
    rf_bus_msg_t m = s_good(f, 4);
    assert_int_equal(json_integer_value(json_object_get(m.header, "capacity")), 1);
    rf_bus_msg_clear(&m);
    f[3] = F("{\"capacity\":256}");
    m = s_good(f, 4);
    rf_bus_msg_clear(&m);

    /* service names */
    f[3] = F("{\"capacity\":1}");
    f[2] = F("Image");
    s_bad(f, 4, "bad service name");
    f[2] = F("a b");
    s_bad(f, 4, "bad service name");
    f[2] = F("");
    s_bad(f, 4, "bad service name");
    f[2] = F("img.x");
    s_bad(f, 4, "bad service name");
    f[2] = F("im\0g");
    s_bad(f, 4, "bad service name");
    f[2] = F("abcdefghijklmnopqrstuvwxyz0123456"); /* 33 */
    s_bad(f, 4, "bad service name");
    f[2] = F("abcdefghijklmnopqrstuvwxyz012345"); /* 32 */
    m = s_good(f, 4);
    assert_string_equal(m.service, "abcdefghijklmnopqrstuvwxyz012345");
    rf_bus_msg_clear(&m);
    f[2] = F("doc_2-x");
    m = s_good(f, 4);
    assert_string_equal(m.service, "doc_2-x");
    rf_bus_msg_clear(&m);
}

static void test_decode_job_id(void **state)
{
    (void)state;
    rf_frame_t f[] = {F("RFB1"), F("\x02"), F("1234567"), F("{\"request_id\":\"r\"}")};
    s_bad(f, 4, "job id must be 8 octets, got 7");
    f[2] = F("123456789");
    s_bad(f, 4, "job id must be 8 octets, got 9");
    f[2] = F("");
    s_bad(f, 4, "job id must be 8 octets, got 0");
    rf_frame_t c[] = {F("RFB1"), F("\x06"), F("1234567")};
    s_bad(c, 3, "job id must be 8 octets, got 7");
    rf_frame_t r[] = {F("RFB1"), F("\x03"), F("1234567"), F("{\"status\":200}")};
    s_bad(r, 4, "job id must be 8 octets, got 7");
}

static void test_decode_json_rules(void **state)
{
    (void)state;
    rf_frame_t f[] = {F("RFB1"), F("\x02"), ID, F("[1,2]")};
    s_bad(f, 4, "JSON frame is not an object");
    f[3] = F("");
    s_bad(f, 4, "JSON frame of 0 bytes (1..65536 allowed)");
    f[3] = F("{\"request_id\":");
    rf_bus_msg_t m;
    char why[160];
    assert_int_equal(rf_bus_decode(f, 4, &m, why, sizeof(why)), -1);
    assert_true(strncmp(why, "bad JSON: ", 10) == 0);
    assert_null(m.header);
    f[3] = F("{\"request_id\":\"a\",\"request_id\":\"b\"}");
    assert_int_equal(rf_bus_decode(f, 4, &m, why, sizeof(why)), -1);
    assert_true(strncmp(why, "bad JSON: ", 10) == 0);
    f[3] = F("\"str\""); /* a bare string is refused by the parser itself */
    assert_int_equal(rf_bus_decode(f, 4, &m, why, sizeof(why)), -1);
    assert_true(strncmp(why, "bad JSON: ", 10) == 0);
    f[3] = F("{\"request_id\":\"a\"} {}"); /* trailing data */
    assert_int_equal(rf_bus_decode(f, 4, &m, why, sizeof(why)), -1);
    assert_true(strncmp(why, "bad JSON: ", 10) == 0);
    f[3] = F("{\"request_id\":7}");
    s_bad(f, 4, "JOB needs a request_id string");
    f[3] = F("{}");
    s_bad(f, 4, "JOB needs a request_id string");

    /* the size limit: exactly 65536 octets passes, one more does not */
    size_t big = RF_BUS_MAX_JSON + 1;
    char *text = malloc(big);
    const char *head = "{\"request_id\":\"r\",\"pad\":\"";
    memset(text, 'a', big);
    memcpy(text, head, strlen(head));
    text[RF_BUS_MAX_JSON - 2] = '"';
    text[RF_BUS_MAX_JSON - 1] = '}';
    f[3] = (rf_frame_t){text, RF_BUS_MAX_JSON};
    m = s_good(f, 4);
    assert_int_equal(strlen(json_string_value(json_object_get(m.header, "pad"))), RF_BUS_MAX_JSON - 2 - strlen(head));
    rf_bus_msg_clear(&m);
    text[RF_BUS_MAX_JSON - 1] = ' ';
    text[RF_BUS_MAX_JSON] = '}';
    f[3] = (rf_frame_t){text, big};
    s_bad(f, 4, "JSON frame of 65537 bytes (1..65536 allowed)");
    free(text);

    rf_frame_t r[] = {F("RFB1"), F("\x03"), ID, F("{\"content_type\":\"x\"}")};
    s_bad(r, 4, "REPLY needs an integer status");
    r[3] = F("{\"status\":\"200\"}");
    s_bad(r, 4, "REPLY needs an integer status");
    r[3] = F("{\"status\":200.0}");
    s_bad(r, 4, "REPLY needs an integer status");
    r[3] = F("[200]");
    s_bad(r, 4, "JSON frame is not an object");

    rf_frame_t rd[] = {F("RFB1"), F("\x01"), F("image"), F("[{\"capacity\":1}]")};
    s_bad(rd, 4, "JSON frame is not an object");
}

static void test_decode_body_limit(void **state)
{
    (void)state;
    rf_frame_t f[4 + RF_BUS_MAX_BODY + 1] = {F("RFB1"), F("\x02"), ID, F("{\"request_id\":\"r\"}")};
    for (size_t i = 4; i < sizeof(f) / sizeof(f[0]); i++)
        f[i] = F("xy");
    s_bad(f, 4 + 17, "JOB with 17 body frames (max 16)");
    rf_bus_msg_t m = s_good(f, 4 + 16);
    assert_int_equal(m.n_body, 16);
    assert_int_equal(m.body_len, 32);
    rf_bus_msg_clear(&m);
    f[1] = F("\x03");
    f[3] = F("{\"status\":200}");
    s_bad(f, 4 + 17, "REPLY with 17 body frames (max 16)");
}

static void test_decode_why_optional(void **state)
{
    (void)state;
    rf_frame_t f[] = {F("RFB1"), F("\x08")};
    rf_bus_msg_t m;
    assert_int_equal(rf_bus_decode(f, 2, &m, NULL, 0), -1);
    char why[8];
    assert_int_equal(rf_bus_decode(f, 2, &m, why, sizeof(why)), -1);
    assert_string_equal(why, "unknown");
}

static void test_cmd_name(void **state)
{
    (void)state;
    assert_string_equal(rf_bus_cmd_name(RF_BUS_READY), "READY");
    assert_string_equal(rf_bus_cmd_name(RF_BUS_JOB), "JOB");
    assert_string_equal(rf_bus_cmd_name(RF_BUS_REPLY), "REPLY");
    assert_string_equal(rf_bus_cmd_name(RF_BUS_HEARTBEAT), "HEARTBEAT");
    assert_string_equal(rf_bus_cmd_name(RF_BUS_DISCONNECT), "DISCONNECT");
    assert_string_equal(rf_bus_cmd_name(RF_BUS_CANCEL), "CANCEL");
    assert_string_equal(rf_bus_cmd_name(0), "?");
    assert_string_equal(rf_bus_cmd_name(RF_BUS_DEMAND), "DEMAND");
    assert_string_equal(rf_bus_cmd_name(8), "?");
    assert_string_equal(rf_bus_cmd_name(255), "?");
}

/* ---- test frame splitter ------------------------------------------------------ */

static void test_split_test_frames(void **state)
{
    (void)state;
    static const uint8_t hb[] = {0, 4, 'R', 'F', 'B', '1', 0, 1, 0x04};
    rf_frame_t fr[4];
    size_t n = rf_bus_split_test_frames(hb, sizeof(hb), fr, 4);
    assert_int_equal(n, 2);
    assert_int_equal(fr[0].len, 4);
    assert_ptr_equal(fr[0].data, hb + 2);
    assert_int_equal(fr[1].len, 1);
    rf_bus_msg_t m = s_good(fr, n);
    assert_int_equal(m.cmd, RF_BUS_HEARTBEAT);

    /* empty frames, a truncated last frame, a dangling odd byte */
    static const uint8_t odd[] = {0, 0, 0, 5, 'a', 'b', 7};
    n = rf_bus_split_test_frames(odd, sizeof(odd), fr, 4);
    assert_int_equal(n, 2);
    assert_int_equal(fr[0].len, 0);
    assert_int_equal(fr[1].len, 3); /* clamped to what is left */
    assert_memory_equal(fr[1].data, "ab\x07", 3);
    static const uint8_t dangling[] = {0, 1, 'a', 9};
    n = rf_bus_split_test_frames(dangling, sizeof(dangling), fr, 4);
    assert_int_equal(n, 1);

    /* max is respected; big-endian length */
    static const uint8_t many[] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    assert_int_equal(rf_bus_split_test_frames(many, sizeof(many), fr, 3), 3);
    assert_int_equal(rf_bus_split_test_frames(many, 0, fr, 3), 0);
    static uint8_t be[2 + 258];
    be[0] = 1;
    be[1] = 2;
    n = rf_bus_split_test_frames(be, sizeof(be), fr, 4);
    assert_int_equal(n, 1);
    assert_int_equal(fr[0].len, 258);
}

/* ---- over sockets ------------------------------------------------------------- */

typedef struct {
    zsock_t *router, *dealer;
} s_pair_t;

static int s_pair_setup(void **state)
{
    static int seq;
    char ep[64];
    snprintf(ep, sizeof(ep), "inproc://rf-test-bus-%d", seq++);
    s_pair_t *p = calloc(1, sizeof(*p));
    p->router = zsock_new_router(ep);
    p->dealer = zsock_new_dealer(ep);
    if (p->router == NULL || p->dealer == NULL)
        return -1;
    zsock_set_rcvtimeo(p->router, 2000);
    zsock_set_rcvtimeo(p->dealer, 2000);
    zsock_set_router_mandatory(p->router, 1);
    *state = p;
    return 0;
}

static int s_pair_teardown(void **state)
{
    s_pair_t *p = *state;
    zsock_destroy(&p->dealer);
    zsock_destroy(&p->router);
    free(p);
    return 0;
}

static void test_socket_roundtrip(void **state)
{
    s_pair_t *p = *state;

    /* worker → broker: READY */
    json_t *h = s_json("{\"capacity\": 3}");
    zmsg_t *out = rf_bus_encode(RF_BUS_READY, "image", 0, h);
    json_decref(h);
    assert_int_equal(rf_bus_send(p->dealer, NULL, &out), 0);
    assert_null(out);

    zframe_t *identity = (zframe_t *)0x1;
    rf_bus_msg_t m;
    zmsg_t *raw = rf_bus_recv(p->router, &identity, &m);
    assert_non_null(raw);
    assert_non_null(identity);
    assert_true(zframe_size(identity) > 0);
    assert_int_equal(zmsg_size(raw), 4); /* identity popped */
    assert_int_equal(m.cmd, RF_BUS_READY);
    assert_string_equal(m.service, "image");
    assert_int_equal(json_integer_value(json_object_get(m.header, "capacity")), 3);
    rf_bus_msg_clear(&m);
    zmsg_destroy(&raw);

    /* broker → worker: JOB with a body, routed by the identity */
    h = s_json("{\"request_id\": \"req-1\", \"deadline_ms\": 1000}");
    out = rf_bus_encode(RF_BUS_JOB, NULL, 0xdeadbeefcafef00dULL, h);
    json_decref(h);
    zmsg_addmem(out, "SRC", 3);
    zmsg_addmem(out, "BYTES", 5);
    assert_int_equal(rf_bus_send(p->router, identity, &out), 0);
    assert_null(out);
    assert_true(zframe_size(identity) > 0); /* the caller's identity is not consumed */

    raw = rf_bus_recv(p->dealer, NULL, &m);
    assert_non_null(raw);
    assert_int_equal(m.cmd, RF_BUS_JOB);
    assert_true(m.job_id == 0xdeadbeefcafef00dULL);
    assert_string_equal(json_string_value(json_object_get(m.header, "request_id")), "req-1");
    assert_int_equal(m.n_body, 2);
    assert_int_equal(m.body_len, 8);
    assert_memory_equal(m.body[0].data, "SRC", 3);
    assert_memory_equal(m.body[1].data, "BYTES", 5);
    uint64_t job = m.job_id;
    rf_bus_msg_clear(&m);
    zmsg_destroy(&raw);

    /* worker → broker: REPLY */
    h = s_json("{\"status\": 200, \"content_type\": \"image/jpeg\"}");
    out = rf_bus_encode(RF_BUS_REPLY, NULL, job, h);
    json_decref(h);
    zmsg_addmem(out, "OUT", 3);
    assert_int_equal(rf_bus_send(p->dealer, NULL, &out), 0);
    zframe_t *id2 = NULL;
    raw = rf_bus_recv(p->router, &id2, &m);
    assert_non_null(raw);
    assert_true(zframe_eq(id2, identity));
    assert_int_equal(m.cmd, RF_BUS_REPLY);
    assert_true(m.job_id == job);
    assert_int_equal(json_integer_value(json_object_get(m.header, "status")), 200);
    assert_int_equal(m.n_body, 1);
    assert_memory_equal(m.body[0].data, "OUT", 3);
    rf_bus_msg_clear(&m);
    zmsg_destroy(&raw);
    zframe_destroy(&id2);

    /* broker → worker: HEARTBEAT */
    out = rf_bus_encode(RF_BUS_HEARTBEAT, NULL, 0, NULL);
    assert_int_equal(rf_bus_send(p->router, identity, &out), 0);
    raw = rf_bus_recv(p->dealer, NULL, &m);
    assert_non_null(raw);
    assert_int_equal(m.cmd, RF_BUS_HEARTBEAT);
    assert_null(m.header);
    zmsg_destroy(&raw);

    zframe_destroy(&identity);
}

static void test_socket_bad_messages(void **state)
{
    s_pair_t *p = *state;
    rf_bus_msg_t m;

    /* wrong protocol: dropped, nothing returned or held */
    zmsg_t *bad = zmsg_new();
    zmsg_addstr(bad, "RFB9");
    zmsg_addmem(bad, "\x04", 1);
    assert_int_equal(rf_bus_send(p->dealer, NULL, &bad), 0);
    zframe_t *identity = (zframe_t *)0x1;
    memset(&m, 0xa5, sizeof(m));
    assert_null(rf_bus_recv(p->router, &identity, &m));
    assert_null(identity);
    assert_null(m.header);

    /* READY whose JSON is not an object (decode fails after parsing it) */
    bad = zmsg_new();
    zmsg_addstr(bad, "RFB1");
    zmsg_addmem(bad, "\x01", 1);
    zmsg_addstr(bad, "image");
    zmsg_addstr(bad, "[1]");
    assert_int_equal(rf_bus_send(p->dealer, NULL, &bad), 0);
    identity = (zframe_t *)0x1;
    assert_null(rf_bus_recv(p->router, &identity, &m));
    assert_null(identity);
    assert_null(m.header);

    /* far more frames than any command allows */
    json_t *h = s_json("{\"status\": 500}");
    bad = rf_bus_encode(RF_BUS_REPLY, NULL, 1, h);
    json_decref(h);
    for (int i = 0; i < 40; i++)
        zmsg_addmem(bad, "z", 1);
    assert_int_equal(rf_bus_send(p->dealer, NULL, &bad), 0);
    identity = (zframe_t *)0x1;
    assert_null(rf_bus_recv(p->router, &identity, &m));
    assert_null(identity);

    /* one frame too many for the decoder's table (2 + 2 + 16 + 1) */
    h = s_json("{\"status\": 500}");
    bad = rf_bus_encode(RF_BUS_REPLY, NULL, 1, h);
    json_decref(h);
    for (int i = 0; i < RF_BUS_MAX_BODY + 1; i++)
        zmsg_addmem(bad, "z", 1);
    assert_int_equal(rf_bus_send(p->dealer, NULL, &bad), 0);
    identity = (zframe_t *)0x1;
    assert_null(rf_bus_recv(p->router, &identity, &m));
    assert_null(identity);

    /* the stream goes on: a good message after the bad ones decodes */
    zmsg_t *ok = rf_bus_encode(RF_BUS_DISCONNECT, NULL, 0, NULL);
    assert_int_equal(rf_bus_send(p->dealer, NULL, &ok), 0);
    zmsg_t *raw = rf_bus_recv(p->router, &identity, &m);
    assert_non_null(raw);
    assert_non_null(identity);
    assert_int_equal(m.cmd, RF_BUS_DISCONNECT);
    zmsg_destroy(&raw);

    /* a broker message that does not decode on the worker side */
    bad = zmsg_new();
    zmsg_addstr(bad, "RFB1");
    zmsg_addmem(bad, "\x08", 1);
    assert_int_equal(rf_bus_send(p->router, identity, &bad), 0);
    assert_null(rf_bus_recv(p->dealer, NULL, &m));
    assert_null(m.header);
    ok = rf_bus_encode(RF_BUS_HEARTBEAT, NULL, 0, NULL);
    assert_int_equal(rf_bus_send(p->router, identity, &ok), 0);
    raw = rf_bus_recv(p->dealer, NULL, &m);
    assert_non_null(raw); /* the bad one was consumed, not left queued */
    assert_int_equal(m.cmd, RF_BUS_HEARTBEAT);
    zmsg_destroy(&raw);

    /* sending to a peer that is not there (ROUTER_MANDATORY) fails and
     * still consumes the message */
    zframe_t *ghost = zframe_new("nobody", 6);
    zmsg_t *msg = rf_bus_encode(RF_BUS_HEARTBEAT, NULL, 0, NULL);
    assert_int_equal(rf_bus_send(p->router, ghost, &msg), -1);
    assert_null(msg);
    zframe_destroy(&ghost);
    zframe_destroy(&identity);
}

/* ---- typed JSON frames -------------------------------------------------------- */

/* Encodes msg, decodes it back through rf_bus_decode. Returns the raw
 * message (caller destroys) with *m decoded. */
static zmsg_t *s_roundtrip(zmsg_t *msg, rf_bus_msg_t *m)
{
    assert_non_null(msg);
    rf_frame_t fr[8];
    size_t n = s_frames(msg, fr, 8);
    char why[160];
    if (rf_bus_decode(fr, n, m, why, sizeof(why)) < 0)
        fail_msg("does not decode: %s", why);
    return msg;
}

static void test_job_spec_roundtrip(void **state)
{
    (void)state;
    rf_job_spec_t in, out;
    rf_job_spec_init(&in);
    in.request_id = strdup("req-1");
    in.deadline_ms = 2950;
    in.chain = s_json("[{\"op\":\"resize\",\"w\":500,\"h\":400}]");
    in.source.path = strdup("/photo.jpg");
    in.source.size = 912345;
    in.source.content_type = strdup("image/jpeg");
    in.source.ref = strdup("file:///srv/media/photo.jpg");
    in.source.offset = 4242;
    in.out = strdup("file:///dev/shm/refract-spool/src-vm-42-a1B2c3");
    rf_bus_msg_t m;
    zmsg_t *raw = s_roundtrip(rf_bus_encode_job(42, &in), &m);
    assert_int_equal(m.cmd, RF_BUS_JOB);
    assert_int_equal(m.job_id, 42);
    char why[160];
    assert_int_equal(rf_job_spec_decode(m.header, &out, why, sizeof(why)), 0);
    assert_string_equal(out.request_id, "req-1");
    assert_int_equal(out.deadline_ms, 2950);
    assert_true(json_equal(out.chain, in.chain));
    assert_string_equal(out.source.path, "/photo.jpg");
    assert_int_equal(out.source.size, 912345);
    assert_string_equal(out.source.content_type, "image/jpeg");
    assert_string_equal(out.source.ref, "file:///srv/media/photo.jpg");
    assert_int_equal(out.source.offset, 4242);
    assert_string_equal(out.out, "file:///dev/shm/refract-spool/src-vm-42-a1B2c3");
    /* the wire names are those of proto/rfb.md 2.2 */
    assert_int_equal(json_integer_value(json_object_get(json_object_get(m.header, "source"), "size")), 912345);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(m.header, "source"), "offset")), 4242);
    rf_bus_msg_clear(&m);
    zmsg_destroy(&raw);
    rf_job_spec_clear(&out);
    rf_job_spec_clear(&out); /* safe twice */

    /* absent members stay absent both ways */
    rf_job_spec_clear(&in);
    in.request_id = strdup("r");
    json_t *h = rf_job_spec_encode(&in);
    assert_non_null(h);
    assert_null(json_object_get(h, "deadline_ms"));
    assert_null(json_object_get(h, "source"));
    assert_null(json_object_get(h, "chain"));
    assert_int_equal(rf_job_spec_decode(h, &out, why, sizeof(why)), 0);
    assert_int_equal(out.deadline_ms, -1);
    assert_int_equal(out.source.size, -1);
    assert_int_equal(out.source.offset, 0);
    assert_null(out.source.ref);
    assert_null(out.out);
    assert_null(out.chain);
    json_decref(h);
    rf_job_spec_clear(&out);
    rf_job_spec_clear(&in);
    /* no request id: nothing to encode */
    assert_null(rf_job_spec_encode(&in));
}

static void test_job_spec_decode_errors(void **state)
{
    (void)state;
    const char *bad[] = {
        "{}",
        "{\"request_id\":7}",
        "{\"request_id\":\"r\",\"deadline_ms\":\"soon\"}",
        "{\"request_id\":\"r\",\"chain\":{}}",
        "{\"request_id\":\"r\",\"source\":[]}",
        "{\"request_id\":\"r\",\"source\":{\"path\":1}}",
        "{\"request_id\":\"r\",\"source\":{\"size\":-1}}",
        "{\"request_id\":\"r\",\"source\":{\"ref\":true}}",
        "{\"request_id\":\"r\",\"source\":{\"offset\":8}}", /* an offset needs a size */
        "{\"request_id\":\"r\",\"source\":{\"size\":1,\"offset\":-8}}",
        "{\"request_id\":\"r\",\"out\":\"edge:/v.mp4\"}", /* out: file:/// only */
        "{\"request_id\":\"r\",\"out\":\"file:///spool/../etc/passwd\"}",
        "{\"request_id\":\"r\",\"out\":7}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_t *h = s_json(bad[i]);
        rf_job_spec_t out;
        char why[160] = "";
        if (rf_job_spec_decode(h, &out, why, sizeof(why)) != -1)
            fail_msg("decoded %s", bad[i]);
        assert_true(why[0] != '\0');
        assert_null(out.request_id);
        json_decref(h);
    }
    /* negative and huge deadlines are clamped; unknown members ignored */
    json_t *h = s_json("{\"request_id\":\"r\",\"deadline_ms\":-5,\"future\":1}");
    rf_job_spec_t out;
    assert_int_equal(rf_job_spec_decode(h, &out, NULL, 0), 0);
    assert_int_equal(out.deadline_ms, 0);
    rf_job_spec_clear(&out);
    json_decref(h);
}

static void test_reply_roundtrip(void **state)
{
    (void)state;
    rf_reply_t in = {.status = 200, .elapsed_ms = 41.5}, out;
    snprintf(in.content_type, sizeof(in.content_type), "image/webp");
    snprintf(in.error, sizeof(in.error), "not sent with 200");
    rf_bus_msg_t m;
    zmsg_t *raw = s_roundtrip(rf_bus_encode_reply(7, &in), &m);
    assert_int_equal(m.cmd, RF_BUS_REPLY);
    assert_null(json_object_get(m.header, "error"));
    assert_int_equal(rf_reply_decode(m.header, &out, NULL, 0), 0);
    assert_int_equal(out.status, 200);
    assert_string_equal(out.content_type, "image/webp");
    assert_string_equal(out.error, "");
    assert_true(out.elapsed_ms > 41.4 && out.elapsed_ms < 41.6);
    rf_bus_msg_clear(&m);
    zmsg_destroy(&raw);

    /* errors carry a reason (a default one when empty); status 0 is 500 */
    rf_reply_t e = {.status = 0, .elapsed_ms = -1};
    json_t *h = rf_reply_encode(&e);
    assert_int_equal(json_integer_value(json_object_get(h, "status")), 500);
    assert_string_equal(json_string_value(json_object_get(h, "error")), "failed");
    assert_null(json_object_get(h, "elapsed_ms"));
    assert_null(json_object_get(h, "content_type"));
    json_decref(h);

    /* a result by reference, with its source's freshness */
    rf_reply_t r2 = {.status = 200, .elapsed_ms = -1};
    snprintf(r2.ref, sizeof(r2.ref), "file:///spool/out-1.mp4");
    snprintf(r2.src_cache_control, sizeof(r2.src_cache_control), "max-age=60");
    snprintf(r2.src_last_modified, sizeof(r2.src_last_modified), "Tue, 01 Dec 2026 10:00:00 GMT");
    h = rf_reply_encode(&r2);
    assert_int_equal(rf_reply_decode(h, &out, NULL, 0), 0);
    assert_string_equal(out.ref, "file:///spool/out-1.mp4");
    assert_string_equal(out.src_cache_control, "max-age=60");
    assert_string_equal(out.src_expires, "");
    assert_string_equal(out.src_last_modified, "Tue, 01 Dec 2026 10:00:00 GMT");
    json_decref(h);
    h = s_json("{\"status\":200,\"source\":{\"cache_control\":\"a\\nb\"}}"); /* one header line */
    assert_int_equal(rf_reply_decode(h, &out, NULL, 0), 0);
    assert_string_equal(out.src_cache_control, "a b");
    json_decref(h);

    const char *bad[] = {"{}",
                         "{\"status\":\"200\"}",
                         "{\"status\":42}",
                         "{\"status\":200,\"content_type\":1}",
                         "{\"status\":500,\"error\":[]}",
                         "{\"status\":200,\"ref\":\"/etc/passwd\"}",
                         "{\"status\":200,\"ref\":\"file:///spool/../etc/passwd\"}",
                         "{\"status\":200,\"source\":[]}",
                         "{\"status\":200,\"source\":{\"expires\":1}}"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        h = s_json(bad[i]);
        char why[160] = "";
        if (rf_reply_decode(h, &out, why, sizeof(why)) != -1)
            fail_msg("decoded %s", bad[i]);
        assert_true(why[0] != '\0');
        json_decref(h);
    }
}

static void test_ready_and_demand(void **state)
{
    (void)state;
    rf_ready_t in = {.capacity = 4, .credit = 2, .pid = 4242}, out;
    snprintf(in.host, sizeof(in.host), "img-1");
    snprintf(in.version, sizeof(in.version), "0.2.0");
    rf_bus_msg_t m;
    zmsg_t *raw = s_roundtrip(rf_bus_encode_ready("image", &in), &m);
    assert_int_equal(m.cmd, RF_BUS_READY);
    assert_string_equal(m.service, "image");
    assert_int_equal(rf_ready_decode(m.header, &out, NULL, 0), 0);
    assert_int_equal(out.capacity, 4);
    assert_int_equal(out.credit, 2);
    assert_int_equal(out.pid, 4242);
    assert_string_equal(out.host, "img-1");
    assert_string_equal(out.version, "0.2.0");
    rf_bus_msg_clear(&m);
    zmsg_destroy(&raw);

    /* an RFB/1.0 READY has no credit */
    json_t *h = s_json("{\"capacity\":2}");
    assert_int_equal(rf_ready_decode(h, &out, NULL, 0), 0);
    assert_int_equal(out.credit, -1);
    json_decref(h);
    const char *bad[] = {"{\"capacity\":0}", "{\"capacity\":2,\"credit\":3}", "{\"capacity\":2,\"credit\":-1}",
                         "{\"capacity\":2,\"credit\":\"1\"}"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        h = s_json(bad[i]);
        if (rf_ready_decode(h, &out, NULL, 0) != -1)
            fail_msg("decoded %s", bad[i]);
        json_decref(h);
    }
    in.credit = 5; /* more than capacity */
    assert_null(rf_ready_encode(&in));

    rf_demand_t d = {.queued = 9, .returned = 1}, dout;
    raw = s_roundtrip(rf_bus_encode_demand(&d), &m);
    assert_int_equal(m.cmd, RF_BUS_DEMAND);
    assert_int_equal(rf_demand_decode(m.header, &dout, NULL, 0), 0);
    assert_int_equal(dout.queued, 9);
    assert_int_equal(dout.returned, 1);
    rf_bus_msg_clear(&m);
    zmsg_destroy(&raw);
    h = s_json("{\"queued\":-1}");
    assert_int_equal(rf_demand_decode(h, &dout, NULL, 0), -1);
    json_decref(h);
    /* DEMAND has exactly one JSON frame */
    rf_frame_t two[] = {F("RFB1"), F("\x07"), F("{}"), F("{}")};
    char why[160];
    assert_int_equal(rf_bus_decode(two, 4, &m, why, sizeof(why)), -1);
    rf_frame_t notobj[] = {F("RFB1"), F("\x07"), F("[]")};
    assert_int_equal(rf_bus_decode(notobj, 3, &m, why, sizeof(why)), -1);
}

int main(void)
{
    rf_log_set_level(RF_LOG_ERROR); /* rf_bus_recv warns about dropped messages */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ready),
        cmocka_unit_test(test_job),
        cmocka_unit_test(test_job_id_extremes),
        cmocka_unit_test(test_reply),
        cmocka_unit_test(test_heartbeat_disconnect),
        cmocka_unit_test(test_encode_invalid),
        cmocka_unit_test(test_decode_envelope),
        cmocka_unit_test(test_decode_frame_counts),
        cmocka_unit_test(test_decode_ready_rules),
        cmocka_unit_test(test_decode_job_id),
        cmocka_unit_test(test_decode_json_rules),
        cmocka_unit_test(test_decode_body_limit),
        cmocka_unit_test(test_decode_why_optional),
        cmocka_unit_test(test_cmd_name),
        cmocka_unit_test(test_split_test_frames),
        cmocka_unit_test(test_job_spec_roundtrip),
        cmocka_unit_test(test_job_spec_decode_errors),
        cmocka_unit_test(test_reply_roundtrip),
        cmocka_unit_test(test_ready_and_demand),
        cmocka_unit_test_setup_teardown(test_socket_roundtrip, s_pair_setup, s_pair_teardown),
        cmocka_unit_test_setup_teardown(test_socket_bad_messages, s_pair_setup, s_pair_teardown),
    };
    return cmocka_run_group_tests_name("rf_bus", tests, NULL, NULL);
}
