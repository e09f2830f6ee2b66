/*  Unit tests for common/rf_chain: splitting a path at the keyword, parsing
 *  and validating chains (with the exact reasons), the JSON form the worker
 *  receives, and the canonical text form. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rf_chain.h"

/* ---- helpers ---------------------------------------------------------------- */

/* Splits `path` and checks the result; src/chain NULL means "no keyword". */
static void s_split(const char *path, const char *kw, const char *want_src, const char *want_chain)
{
    const char *src = NULL, *chain = NULL;
    size_t sl = 12345, cl = 12345;
    int rc = rf_chain_split(path, strlen(path), kw, &src, &sl, &chain, &cl);
    if (want_src == NULL) {
        if (rc != 0)
            fail_msg("'%s' should not split at '%s' (got src '%.*s')", path, kw, (int)sl, src);
        assert_null(src); /* outputs untouched */
        assert_int_equal(sl, 12345);
        return;
    }
    if (rc != 1)
        fail_msg("'%s' should split at '%s'", path, kw);
    if (sl != strlen(want_src) || memcmp(src, want_src, sl) != 0)
        fail_msg("'%s': src '%.*s', expected '%s'", path, (int)sl, src, want_src);
    if (cl != strlen(want_chain) || memcmp(chain, want_chain, cl) != 0)
        fail_msg("'%s': chain '%.*s', expected '%s'", path, (int)cl, chain, want_chain);
    /* both borrow from path */
    assert_ptr_equal(src, path);
    assert_true(chain >= path && chain <= path + strlen(path));
    assert_true(chain + cl == path + strlen(path));
}

static rf_chain_t s_parse_ok(const char *text)
{
    rf_chain_t c;
    char why[128] = "";
    if (rf_chain_parse(text, strlen(text), &c, why, sizeof(why)) != 0)
        fail_msg("'%s' should parse: %s", text, why);
    return c;
}

/* Parses `text` (from a heap copy of exactly its length, so ASan catches
 * any read outside it) and asserts it fails with exactly `want`. */
static void s_parse_bad_n(const char *text, size_t len, const char *want)
{
    char *copy = malloc(len ? len : 1);
    assert_non_null(copy);
    memcpy(copy, text, len);
    rf_chain_t c;
    char why[128] = "";
    int rc = rf_chain_parse(copy, len, &c, why, sizeof(why));
    free(copy);
    if (rc != -1)
        fail_msg("'%.*s' should not parse", (int)len, text);
    if (strcmp(why, want) != 0)
        fail_msg("'%.*s': reason '%s', expected '%s'", (int)len, text, why, want);
}

static void s_parse_bad(const char *text, const char *want)
{
    s_parse_bad_n(text, strlen(text), want);
}

static void s_assert_op(const rf_op_t *op, rf_op_kind_t kind, int w, int h, rf_format_t f, int q)
{
    assert_int_equal(op->kind, kind);
    assert_int_equal(op->w, w);
    assert_int_equal(op->h, h);
    assert_int_equal(op->format, f);
    assert_int_equal(op->quality, q);
}

static int s_chain_equal(const rf_chain_t *a, const rf_chain_t *b)
{
    if (a->n != b->n)
        return 0;
    for (size_t i = 0; i < a->n; i++) {
        const rf_op_t *x = &a->ops[i], *y = &b->ops[i];
        if (x->kind != y->kind || x->w != y->w || x->h != y->h || x->format != y->format || x->quality != y->quality)
            return 0;
    }
    return 1;
}

static void s_format_is(const char *text, const char *want)
{
    rf_chain_t c = s_parse_ok(text);
    char buf[512];
    assert_int_equal(rf_chain_format(&c, buf, sizeof(buf)), 0);
    assert_string_equal(buf, want);
}

/* ---- split ------------------------------------------------------------------ */

static void test_split(void **state)
{
    (void)state;
    s_split("/photo.jpg/dims/resize/500x500/format/webp", "dims", "/photo.jpg", "resize/500x500/format/webp");
    s_split("/a/b/c.png/dims/optimize", "dims", "/a/b/c.png", "optimize");
    /* keyword at the end, with and without a trailing slash */
    s_split("/photo.jpg/dims", "dims", "/photo.jpg", "");
    s_split("/photo.jpg/dims/", "dims", "/photo.jpg", "");
    /* the first occurrence wins */
    s_split("/a/dims/dims/resize/1", "dims", "/a", "dims/resize/1");
    /* another keyword */
    s_split("/x.jpg/im/resize/10", "im", "/x.jpg", "resize/10");
    s_split("/x.jpg/dims/resize/10", "im", NULL, NULL);
    /* absent */
    s_split("/photo.jpg", "dims", NULL, NULL);
    s_split("/", "dims", NULL, NULL);
    s_split("", "dims", NULL, NULL);
    /* the keyword must be a whole segment */
    s_split("/a/dimsx/resize/1", "dims", NULL, NULL);
    s_split("/a/dimsx", "dims", NULL, NULL);
    s_split("/a/xdims/resize/1", "dims", NULL, NULL);
    s_split("/a.dims/resize/1", "dims", NULL, NULL);
    s_split("/a/dimsx/dims/resize/1", "dims", "/a/dimsx", "resize/1");
    /* keyword at position 0: the source would be empty */
    s_split("/dims/resize/500", "dims", NULL, NULL);
    s_split("/dims", "dims", NULL, NULL);
    s_split("dims/resize/500", "dims", NULL, NULL);
    /* a one-character source is enough */
    s_split("/a/dims/resize/5", "dims", "/a", "resize/5");
    s_split("a/dims", "dims", "a", "");
}

static void test_split_respects_len(void **state)
{
    (void)state;
    const char *path = "/a.jpg/dims/resize/1";
    const char *src, *chain;
    size_t sl, cl;
    /* the keyword lies beyond len */
    assert_int_equal(rf_chain_split(path, 6, "dims", &src, &sl, &chain, &cl), 0);
    /* cut inside the keyword: "/a.jpg/dim" */
    assert_int_equal(rf_chain_split(path, 10, "dims", &src, &sl, &chain, &cl), 0);
    /* cut right after it: "/a.jpg/dims" */
    assert_int_equal(rf_chain_split(path, 11, "dims", &src, &sl, &chain, &cl), 1);
    assert_int_equal(sl, 6);
    assert_int_equal(cl, 0);
    assert_ptr_equal(chain, path + 11);
    /* cut after the op: "/a.jpg/dims/resize" */
    assert_int_equal(rf_chain_split(path, 18, "dims", &src, &sl, &chain, &cl), 1);
    assert_int_equal(cl, 6);
    assert_memory_equal(chain, "resize", 6);
}

/* ---- parse: valid ----------------------------------------------------------- */

static void test_parse_resize(void **state)
{
    (void)state;
    rf_chain_t c = s_parse_ok("resize/500x500");
    assert_int_equal(c.n, 1);
    s_assert_op(&c.ops[0], RF_OP_RESIZE, 500, 500, RF_FMT_KEEP, 0);

    c = s_parse_ok("resize/500");
    assert_int_equal(c.n, 1);
    s_assert_op(&c.ops[0], RF_OP_RESIZE, 500, 0, RF_FMT_KEEP, 0);

    c = s_parse_ok("resize/500x");
    s_assert_op(&c.ops[0], RF_OP_RESIZE, 500, 0, RF_FMT_KEEP, 0);

    c = s_parse_ok("resize/x300");
    s_assert_op(&c.ops[0], RF_OP_RESIZE, 0, 300, RF_FMT_KEEP, 0);

    c = s_parse_ok("resize/1x1");
    s_assert_op(&c.ops[0], RF_OP_RESIZE, 1, 1, RF_FMT_KEEP, 0);

    c = s_parse_ok("resize/16384x16384");
    s_assert_op(&c.ops[0], RF_OP_RESIZE, RF_CHAIN_MAX_DIM, RF_CHAIN_MAX_DIM, RF_FMT_KEEP, 0);

    c = s_parse_ok("resize/640x480/");
    assert_int_equal(c.n, 1);
    s_assert_op(&c.ops[0], RF_OP_RESIZE, 640, 480, RF_FMT_KEEP, 0);
}

static void test_parse_format_quality_optimize(void **state)
{
    (void)state;
    rf_chain_t c = s_parse_ok("format/jpg");
    assert_int_equal(c.n, 1);
    s_assert_op(&c.ops[0], RF_OP_FORMAT, 0, 0, RF_FMT_JPEG, 0);
    c = s_parse_ok("format/jpeg");
    s_assert_op(&c.ops[0], RF_OP_FORMAT, 0, 0, RF_FMT_JPEG, 0);
    c = s_parse_ok("format/png");
    s_assert_op(&c.ops[0], RF_OP_FORMAT, 0, 0, RF_FMT_PNG, 0);
    c = s_parse_ok("format/webp");
    s_assert_op(&c.ops[0], RF_OP_FORMAT, 0, 0, RF_FMT_WEBP, 0);

    c = s_parse_ok("quality/1");
    s_assert_op(&c.ops[0], RF_OP_QUALITY, 0, 0, RF_FMT_KEEP, 1);
    c = s_parse_ok("quality/100");
    s_assert_op(&c.ops[0], RF_OP_QUALITY, 0, 0, RF_FMT_KEEP, 100);
    c = s_parse_ok("quality/60");
    s_assert_op(&c.ops[0], RF_OP_QUALITY, 0, 0, RF_FMT_KEEP, 60);

    c = s_parse_ok("optimize");
    assert_int_equal(c.n, 1);
    s_assert_op(&c.ops[0], RF_OP_OPTIMIZE, 0, 0, RF_FMT_KEEP, 0);
    c = s_parse_ok("optimize/");
    assert_int_equal(c.n, 1);
}

static void test_parse_chains(void **state)
{
    (void)state;
    rf_chain_t c = s_parse_ok("resize/500x500/format/webp/quality/60/optimize/");
    assert_int_equal(c.n, 4);
    s_assert_op(&c.ops[0], RF_OP_RESIZE, 500, 500, RF_FMT_KEEP, 0);
    s_assert_op(&c.ops[1], RF_OP_FORMAT, 0, 0, RF_FMT_WEBP, 0);
    s_assert_op(&c.ops[2], RF_OP_QUALITY, 0, 0, RF_FMT_KEEP, 60);
    s_assert_op(&c.ops[3], RF_OP_OPTIMIZE, 0, 0, RF_FMT_KEEP, 0);

    /* order is kept, repeats allowed */
    c = s_parse_ok("optimize/resize/x10/resize/20/format/png/format/jpg");
    assert_int_equal(c.n, 5);
    s_assert_op(&c.ops[0], RF_OP_OPTIMIZE, 0, 0, RF_FMT_KEEP, 0);
    s_assert_op(&c.ops[1], RF_OP_RESIZE, 0, 10, RF_FMT_KEEP, 0);
    s_assert_op(&c.ops[2], RF_OP_RESIZE, 20, 0, RF_FMT_KEEP, 0);
    s_assert_op(&c.ops[3], RF_OP_FORMAT, 0, 0, RF_FMT_PNG, 0);
    s_assert_op(&c.ops[4], RF_OP_FORMAT, 0, 0, RF_FMT_JPEG, 0);

    /* exactly the maximum */
    char text[512] = "";
    for (int i = 0; i < RF_CHAIN_MAX_OPS; i++)
        strcat(text, i ? "/quality/50" : "quality/50");
    c = s_parse_ok(text);
    assert_int_equal(c.n, RF_CHAIN_MAX_OPS);
    s_assert_op(&c.ops[RF_CHAIN_MAX_OPS - 1], RF_OP_QUALITY, 0, 0, RF_FMT_KEEP, 50);

    /* only len bytes are read */
    const char *s = "resize/10/format/gif";
    char why[64];
    assert_int_equal(rf_chain_parse(s, 9, &c, why, sizeof(why)), 0);
    assert_int_equal(c.n, 1);
    s_assert_op(&c.ops[0], RF_OP_RESIZE, 10, 0, RF_FMT_KEEP, 0);
}

/* ---- parse: invalid --------------------------------------------------------- */

static void test_parse_bad(void **state)
{
    (void)state;
    s_parse_bad("", "empty function chain");
    s_parse_bad("/", "empty function chain");
    s_parse_bad("///", "empty function chain");
    s_parse_bad("blur/5", "unknown operation 'blur'");
    s_parse_bad("Resize/5", "unknown operation 'Resize'");
    s_parse_bad("resizex/5", "unknown operation 'resizex'");
    s_parse_bad("resize/10/crop/1x1", "unknown operation 'crop'");
    s_parse_bad("resize/10x10/optimized", "unknown operation 'optimized'");
    s_parse_bad("/resize/10", "empty segment in function chain");
    s_parse_bad("resize/10//format/png", "empty segment in function chain");
    s_parse_bad("resize", "operation 'resize' needs an argument");
    s_parse_bad("resize/", "operation 'resize' needs an argument");
    s_parse_bad("resize//", "operation 'resize' needs an argument");
    s_parse_bad("resize//500", "operation 'resize' needs an argument");
    s_parse_bad("format", "operation 'format' needs an argument");
    s_parse_bad("resize/10/quality", "operation 'quality' needs an argument");

    s_parse_bad("quality/0", "quality must be 1..100, got '0'");
    s_parse_bad("quality/101", "quality must be 1..100, got '101'");
    s_parse_bad("quality/abc", "quality must be 1..100, got 'abc'");
    s_parse_bad("quality/-5", "quality must be 1..100, got '-5'");
    s_parse_bad("quality/5.5", "quality must be 1..100, got '5.5'");
    s_parse_bad("quality/9999999999", "quality must be 1..100, got '9999999999'");

    s_parse_bad("resize/0x0", "resize needs WxH with sides 1..16384, got '0x0'");
    s_parse_bad("resize/0", "resize needs WxH with sides 1..16384, got '0'");
    s_parse_bad("resize/0x10", "resize needs WxH with sides 1..16384, got '0x10'");
    s_parse_bad("resize/99999", "resize needs WxH with sides 1..16384, got '99999'");
    s_parse_bad("resize/16385x1", "resize needs WxH with sides 1..16384, got '16385x1'");
    s_parse_bad("resize/x", "resize needs WxH with sides 1..16384, got 'x'");
    s_parse_bad("resize/10x10x10", "resize needs WxH with sides 1..16384, got '10x10x10'");
    s_parse_bad("resize/10X10", "resize needs WxH with sides 1..16384, got '10X10'");
    s_parse_bad("resize/-1x5", "resize needs WxH with sides 1..16384, got '-1x5'");
    s_parse_bad("resize/ 10", "resize needs WxH with sides 1..16384, got ' 10'");

    s_parse_bad("format/gif", "format must be jpeg, png or webp, got 'gif'");
    s_parse_bad("format/JPEG", "format must be jpeg, png or webp, got 'JPEG'");
    s_parse_bad("format/keep", "format must be jpeg, png or webp, got 'keep'");
    s_parse_bad("format/jpegxl", "format must be jpeg, png or webp, got 'jpegxl'");
    s_parse_bad("format/webpwebp", "format must be jpeg, png or webp, got 'webpwebp'");
    /* an embedded NUL must not cut the name short */
    s_parse_bad_n("format/png\0x", 12, "format must be jpeg, png or webp, got 'png'");
    s_parse_bad_n("format/jpg\0", 11, "format must be jpeg, png or webp, got 'jpg'");

    /* reasons quote at most 40 bytes of the offending text */
    s_parse_bad("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                "unknown operation 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'");

    /* one operation too many */
    char text[512] = "";
    for (int i = 0; i <= RF_CHAIN_MAX_OPS; i++)
        strcat(text, i ? "/optimize" : "optimize");
    s_parse_bad(text, "function chain longer than 16 operations");
}

static void test_parse_why_optional(void **state)
{
    (void)state;
    rf_chain_t c;
    assert_int_equal(rf_chain_parse("blur", 4, &c, NULL, 0), -1);
    char why[8];
    assert_int_equal(rf_chain_parse("format/gif", 10, &c, why, sizeof(why)), -1);
    assert_string_equal(why, "format "); /* truncated, NUL-terminated */
}

/* ---- JSON ------------------------------------------------------------------- */

static void test_json_roundtrip(void **state)
{
    (void)state;
    static const char *const chains[] = {
        "resize/500x500",       "resize/500", "resize/x300",
        "format/jpg/quality/1", "optimize",   "resize/16384x1/format/webp/quality/100/optimize/resize/7/format/png",
    };
    for (size_t i = 0; i < sizeof(chains) / sizeof(chains[0]); i++) {
        rf_chain_t a = s_parse_ok(chains[i]), b;
        json_t *j = rf_chain_to_json(&a);
        assert_non_null(j);
        assert_true(json_is_array(j));
        assert_int_equal(json_array_size(j), a.n);
        char why[128] = "";
        if (rf_chain_from_json(j, &b, why, sizeof(why)) != 0)
            fail_msg("'%s': from_json failed: %s", chains[i], why);
        if (!s_chain_equal(&a, &b))
            fail_msg("'%s': JSON round trip changed the chain", chains[i]);
        json_decref(j);
    }
}

static void test_json_shape(void **state)
{
    (void)state;
    rf_chain_t c = s_parse_ok("resize/500/format/jpg/quality/60/optimize");
    json_t *j = rf_chain_to_json(&c);
    char *text = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    assert_string_equal(text, "[{\"h\":0,\"op\":\"resize\",\"w\":500},{\"format\":\"jpeg\",\"op\":\"format\"},"
                              "{\"op\":\"quality\",\"quality\":60},{\"op\":\"optimize\"}]");
    free(text);
    json_decref(j);

    /* the worker accepts what a foreign encoder may add (unknown members) */
    json_error_t e;
    j = json_loads("[{\"op\":\"resize\",\"w\":0,\"h\":20,\"extra\":true},{\"op\":\"format\",\"format\":\"jpg\"}]", 0,
                   &e);
    assert_non_null(j);
    char why[128];
    assert_int_equal(rf_chain_from_json(j, &c, why, sizeof(why)), 0);
    assert_int_equal(c.n, 2);
    s_assert_op(&c.ops[0], RF_OP_RESIZE, 0, 20, RF_FMT_KEEP, 0);
    s_assert_op(&c.ops[1], RF_OP_FORMAT, 0, 0, RF_FMT_JPEG, 0);
    json_decref(j);
}

static void s_json_bad(const char *json, const char *want)
{
    json_error_t e;
    json_t *j = json_loads(json, JSON_DECODE_ANY, &e);
    if (j == NULL)
        fail_msg("test JSON does not parse: %s: %s", json, e.text);
    rf_chain_t c;
    char why[128] = "";
    int rc = rf_chain_from_json(j, &c, why, sizeof(why));
    json_decref(j);
    if (rc != -1)
        fail_msg("%s should be rejected", json);
    if (strcmp(why, want) != 0)
        fail_msg("%s: reason '%s', expected '%s'", json, why, want);
}

static void test_json_bad(void **state)
{
    (void)state;
    s_json_bad("{\"op\":\"optimize\"}", "chain must be a JSON array");
    s_json_bad("\"resize/10\"", "chain must be a JSON array");
    s_json_bad("[]", "chain must have 1..16 operations");
    s_json_bad("[1]", "operation 0 has no \"op\"");
    s_json_bad("[{\"op\":\"optimize\"},{\"w\":1}]", "operation 1 has no \"op\"");
    s_json_bad("[{\"op\":7}]", "operation 0 has no \"op\"");
    s_json_bad("[{\"op\":\"blur\"}]", "unknown operation 'blur'");
    s_json_bad("[{\"op\":\"resize\",\"w\":0,\"h\":0}]", "resize needs w/h in 0..16384, not both 0");
    s_json_bad("[{\"op\":\"resize\",\"w\":-1,\"h\":10}]", "resize needs w/h in 0..16384, not both 0");
    s_json_bad("[{\"op\":\"resize\",\"w\":16385,\"h\":10}]", "resize needs w/h in 0..16384, not both 0");
    s_json_bad("[{\"op\":\"resize\",\"w\":10}]", "resize needs w/h in 0..16384, not both 0");
    s_json_bad("[{\"op\":\"resize\",\"w\":\"10\",\"h\":10}]", "resize needs w/h in 0..16384, not both 0");
    s_json_bad("[{\"op\":\"resize\",\"w\":10.0,\"h\":10}]", "resize needs w/h in 0..16384, not both 0");
    /* 2^32 + 500 must not wrap to 500 */
    s_json_bad("[{\"op\":\"resize\",\"w\":4294967796,\"h\":0}]", "resize needs w/h in 0..16384, not both 0");
    s_json_bad("[{\"op\":\"format\",\"format\":\"gif\"}]", "format must be jpeg, png or webp");
    s_json_bad("[{\"op\":\"format\"}]", "format must be jpeg, png or webp");
    s_json_bad("[{\"op\":\"format\",\"format\":\"keep\"}]", "format must be jpeg, png or webp");
    s_json_bad("[{\"op\":\"quality\",\"quality\":0}]", "quality must be 1..100");
    s_json_bad("[{\"op\":\"quality\",\"quality\":101}]", "quality must be 1..100");
    s_json_bad("[{\"op\":\"quality\",\"quality\":\"50\"}]", "quality must be 1..100");
    s_json_bad("[{\"op\":\"quality\",\"quality\":4294967346}]", "quality must be 1..100");
    s_json_bad("[{\"op\":\"optimize\"},{\"op\":\"optimize\"},{\"op\":\"optimize\"},{\"op\":\"optimize\"},"
               "{\"op\":\"optimize\"},{\"op\":\"optimize\"},{\"op\":\"optimize\"},{\"op\":\"optimize\"},"
               "{\"op\":\"optimize\"},{\"op\":\"optimize\"},{\"op\":\"optimize\"},{\"op\":\"optimize\"},"
               "{\"op\":\"optimize\"},{\"op\":\"optimize\"},{\"op\":\"optimize\"},{\"op\":\"optimize\"},"
               "{\"op\":\"optimize\"}]",
               "chain must have 1..16 operations");

    rf_chain_t c;
    assert_int_equal(rf_chain_from_json(NULL, &c, NULL, 0), -1);
}

/* ---- canonical text --------------------------------------------------------- */

static void test_format(void **state)
{
    (void)state;
    s_format_is("resize/500x500/format/webp/quality/60", "resize/500x500/format/webp/quality/60");
    s_format_is("resize/500", "resize/500x");
    s_format_is("resize/500x", "resize/500x");
    s_format_is("resize/x300/", "resize/x300");
    s_format_is("format/jpg", "format/jpeg");
    s_format_is("resize/0050x007", "resize/50x7");
    s_format_is("quality/007/optimize", "quality/7/optimize");

    /* canonical text parses back to the same chain */
    rf_chain_t a = s_parse_ok("optimize/resize/x9/format/png/quality/100"), b;
    char buf[128];
    assert_int_equal(rf_chain_format(&a, buf, sizeof(buf)), 0);
    assert_string_equal(buf, "optimize/resize/x9/format/png/quality/100");
    b = s_parse_ok(buf);
    assert_true(s_chain_equal(&a, &b));

    /* empty chain */
    rf_chain_t empty = {.n = 0};
    buf[0] = 'x';
    assert_int_equal(rf_chain_format(&empty, buf, sizeof(buf)), 0);
    assert_string_equal(buf, "");
}

static void test_format_short_buffer(void **state)
{
    (void)state;
    rf_chain_t c = s_parse_ok("optimize");
    char buf[16];
    assert_int_equal(rf_chain_format(&c, buf, 9), 0); /* "optimize" + NUL */
    assert_string_equal(buf, "optimize");
    assert_int_equal(rf_chain_format(&c, buf, 8), -1);
    assert_int_equal(rf_chain_format(&c, buf, 0), -1);

    c = s_parse_ok("resize/1x1/optimize"); /* 19 bytes */
    char big[32];
    assert_int_equal(rf_chain_format(&c, big, 20), 0);
    assert_string_equal(big, "resize/1x1/optimize");
    assert_int_equal(rf_chain_format(&c, big, 19), -1);
    assert_int_equal(rf_chain_format(&c, big, 11), -1); /* first op fits, the second does not */
}

static void test_format_helpers(void **state)
{
    (void)state;
    assert_string_equal(rf_format_name(RF_FMT_JPEG), "jpeg");
    assert_string_equal(rf_format_name(RF_FMT_PNG), "png");
    assert_string_equal(rf_format_name(RF_FMT_WEBP), "webp");
    assert_string_equal(rf_format_name(RF_FMT_KEEP), "keep");
    assert_string_equal(rf_format_mime(RF_FMT_JPEG), "image/jpeg");
    assert_string_equal(rf_format_mime(RF_FMT_PNG), "image/png");
    assert_string_equal(rf_format_mime(RF_FMT_WEBP), "image/webp");
    assert_null(rf_format_mime(RF_FMT_KEEP));
    assert_int_equal(rf_format_parse("jpg"), RF_FMT_JPEG);
    assert_int_equal(rf_format_parse("jpeg"), RF_FMT_JPEG);
    assert_int_equal(rf_format_parse("png"), RF_FMT_PNG);
    assert_int_equal(rf_format_parse("webp"), RF_FMT_WEBP);
    assert_int_equal(rf_format_parse("gif"), RF_FMT_KEEP);
    assert_int_equal(rf_format_parse(""), RF_FMT_KEEP);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split),
        cmocka_unit_test(test_split_respects_len),
        cmocka_unit_test(test_parse_resize),
        cmocka_unit_test(test_parse_format_quality_optimize),
        cmocka_unit_test(test_parse_chains),
        cmocka_unit_test(test_parse_bad),
        cmocka_unit_test(test_parse_why_optional),
        cmocka_unit_test(test_json_roundtrip),
        cmocka_unit_test(test_json_shape),
        cmocka_unit_test(test_json_bad),
        cmocka_unit_test(test_format),
        cmocka_unit_test(test_format_short_buffer),
        cmocka_unit_test(test_format_helpers),
    };
    return cmocka_run_group_tests_name("rf_chain", tests, NULL, NULL);
}
