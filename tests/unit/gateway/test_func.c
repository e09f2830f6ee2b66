/*  Unit tests for services/gateway/gw_func.c, the function table: how the
 *  dims row recognises a canonical path, parses and names its chain (the
 *  cache key's part), what the worker receives, and how replies map. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "gw.h"

static const gw_func_t *s_dims(void)
{
    for (size_t i = 0; gw_funcs[i]; i++)
        if (strcmp(gw_funcs[i]->name, "dims") == 0)
            return gw_funcs[i];
    fail_msg("no dims row");
    return NULL;
}

static rf_vhost_conf_t s_vhost(int active, const char *kw)
{
    rf_vhost_conf_t vh;
    memset(&vh, 0, sizeof(vh));
    vh.name = "v.test";
    vh.dims.active = active;
    vh.dims.keyword = (char *)kw;
    vh.dims.max_source_size = 1234;
    return vh;
}

static int s_match(const rf_vhost_conf_t *vh, const char *path, h2o_iovec_t *src, h2o_iovec_t *chain)
{
    return s_dims()->match(vh, h2o_iovec_init(path, strlen(path)), h2o_iovec_init("", 0), src, chain);
}

static void test_table(void **state)
{
    (void)state;
    size_t n = 0;
    for (; gw_funcs[n]; n++) {
        const gw_func_t *f = gw_funcs[n];
        assert_non_null(f->name);
        assert_non_null(f->service);
        assert_non_null(f->match);
        assert_non_null(f->parse);
        assert_non_null(f->canon);
        assert_non_null(f->to_json);
        assert_non_null(f->replies);
    }
    assert_true(n >= 1);
    assert_string_equal(s_dims()->service, "image");
}

static void test_dims_match(void **state)
{
    (void)state;
    rf_vhost_conf_t vh = s_vhost(1, "dims");
    h2o_iovec_t src, chain;
    assert_true(s_match(&vh, "/a/b.jpg/dims/resize/10x", &src, &chain));
    assert_memory_equal(src.base, "/a/b.jpg", src.len);
    assert_int_equal(src.len, 8);
    assert_int_equal(chain.len, 10);
    assert_memory_equal(chain.base, "resize/10x", 10);
    assert_false(s_match(&vh, "/a/b.jpg", &src, &chain));
    assert_false(s_match(&vh, "/dims/resize/10x", &src, &chain)); /* no source before the keyword */
    /* the source-last form (seed Appendix C) */
    assert_true(s_match(&vh, "/dims/quality/50/src/http://foo.com/2.jpg", &src, &chain));
    assert_int_equal(chain.len, 10);
    assert_memory_equal(chain.base, "quality/50", 10);
    assert_int_equal(src.len, 20);
    assert_memory_equal(src.base, "http://foo.com/2.jpg", 20);
    assert_true(s_match(&vh, "/dims/resize/100/src/nas01/ab/1.jpg", &src, &chain));
    assert_memory_equal(src.base, "nas01/ab/1.jpg", 14);
    assert_false(s_match(&vh, "/dims/resize/100/src/", &src, &chain)); /* no source */
    rf_vhost_conf_t off = s_vhost(0, "dims");
    assert_false(s_match(&off, "/a/b.jpg/dims/resize/10x", &src, &chain));
    rf_vhost_conf_t img = s_vhost(1, "img");
    assert_false(s_match(&img, "/a/b.jpg/dims/resize/10x", &src, &chain));
    assert_true(s_match(&img, "/a/b.jpg/img/resize/10x", &src, &chain));
    assert_string_equal(s_dims()->keyword(&img), "img");
    assert_int_equal(s_dims()->source_limit(&img), 1234);
}

/* Parses `chain` with a request pool; returns 0/-1 and the state. */
static int s_parse(h2o_req_t *req, const char *chain, void **st, char *why, size_t wl)
{
    static rf_vhost_conf_t vh;
    vh = s_vhost(1, "dims");
    gw_req_t rc;
    memset(&rc, 0, sizeof(rc));
    rc.req = req;
    rc.vhost = &vh;
    return s_dims()->parse(&rc, h2o_iovec_init(chain, strlen(chain)), st, why, wl);
}

static void test_dims_parse_and_canon(void **state)
{
    (void)state;
    h2o_req_t req;
    memset(&req, 0, sizeof(req));
    h2o_mem_init_pool(&req.pool);
    void *a = NULL, *b = NULL;
    char why[128] = "";
    assert_int_equal(s_parse(&req, "resize/500x500/format/webp", &a, why, sizeof(why)), 0);
    assert_int_equal(s_parse(&req, "resize/500x500/format/webp/", &b, why, sizeof(why)), 0);
    char ca[256], cb[256];
    assert_int_equal(s_dims()->canon(a, ca, sizeof(ca)), 0);
    assert_int_equal(s_dims()->canon(b, cb, sizeof(cb)), 0);
    assert_string_equal(ca, cb); /* one cache key for both spellings */
    json_t *j = s_dims()->to_json(a);
    assert_true(json_is_array(j));
    assert_int_equal(json_array_size(j), 2);
    json_decref(j);
    /* percent-encoded modifiers read as themselves */
    void *enc = NULL;
    assert_int_equal(s_parse(&req, "resize/500x500%5E", &enc, why, sizeof(why)), 0);
    assert_int_equal(s_dims()->canon(enc, ca, sizeof(ca)), 0);
    assert_string_equal(ca, "resize/500x500^");
    void *bad = NULL;
    assert_int_equal(s_parse(&req, "resize/abc", &bad, why, sizeof(why)), -1);
    assert_true(strlen(why) > 0);
    assert_null(bad);
    h2o_mem_clear_pool(&req.pool);
}

static const gw_reply_rule_t *s_rule(int status)
{
    const gw_reply_rule_t *r = s_dims()->replies;
    while (r->worker_status != 0 && r->worker_status != status)
        r++;
    return r;
}

static void test_dims_replies(void **state)
{
    (void)state;
    assert_int_equal(s_rule(200)->action, GW_REPLY_BODY);
    assert_int_equal(s_rule(415)->action, GW_REPLY_ORIGINAL);
    assert_string_equal(s_rule(415)->text, "source_not_decodable");
    assert_int_equal(s_rule(413)->action, GW_REPLY_ORIGINAL);
    assert_string_equal(s_rule(413)->text, "source_too_large");
    assert_int_equal(s_rule(404)->http_status, 404);
    assert_int_equal(s_rule(400)->http_status, 400);
    assert_int_equal(s_rule(503)->http_status, 503);
    assert_int_equal(s_rule(504)->http_status, 504);
    /* anything the table does not name is a 502 */
    assert_int_equal(s_rule(500)->action, GW_REPLY_ERROR);
    assert_int_equal(s_rule(500)->http_status, 502);
    assert_int_equal(s_rule(299)->http_status, 502);
}

static const gw_func_t *s_row(const char *name)
{
    for (size_t i = 0; gw_funcs[i]; i++)
        if (strcmp(gw_funcs[i]->name, name) == 0)
            return gw_funcs[i];
    fail_msg("no %s row", name);
    return NULL;
}

/* Parses `chain` with row `name` on a vhost with the default video
 * settings, and writes its canonical text into canon (or the reason). */
static int s_video(const char *name, const char *chain, char *canon, size_t len)
{
    static rf_vhost_conf_t vh;
    vh = s_vhost(1, "dims");
    rf_mp4hls_default(&vh.mp4hls);
    rf_thumb_default(&vh.thumbnail);
    h2o_req_t req;
    memset(&req, 0, sizeof(req));
    h2o_mem_init_pool(&req.pool);
    gw_req_t rc;
    memset(&rc, 0, sizeof(rc));
    rc.req = &req;
    rc.vhost = &vh;
    void *st = NULL;
    int r = s_row(name)->parse(&rc, h2o_iovec_init(chain, strlen(chain)), &st, canon, len);
    if (r == 0)
        assert_int_equal(s_row(name)->canon(st, canon, len), 0);
    h2o_mem_clear_pool(&req.pool);
    return r;
}

static void test_mp4hls_names(void **state)
{
    (void)state;
    char c[256];
    assert_string_equal(s_row("mp4hls")->service, "video");
    assert_int_equal(s_video("mp4hls", "index.m3u8", c, sizeof(c)), 0);
    assert_string_equal(c, "media;v=3;seq=0;d=10");
    assert_int_equal(s_video("mp4hls", "seg-0.ts", c, sizeof(c)), 0);
    assert_string_equal(c, "segment=0;d=10");
    assert_int_equal(s_video("mp4hls", "seg-999999.ts", c, sizeof(c)), 0);
    /* fMP4: the init section and fragments have keys of their own */
    assert_int_equal(s_video("mp4hls", "seg-3.m4s", c, sizeof(c)), 0);
    assert_string_equal(c, "segment=3;d=10;m4s");
    assert_int_equal(s_video("mp4hls", "init.mp4", c, sizeof(c)), 0);
    assert_string_equal(c, "init;d=10");
    const char *bad[] = {"seg-01.ts",  "seg-.ts", "seg-1000000.ts", "seg--1.ts", "seg-1.ts.ts",  "playlist.m3u8",
                         "INDEX.m3u8", "",        "seg-01.m4s",     "init.m4s",  "init.mp4.mp4", "seg-1a.ts"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(s_video("mp4hls", bad[i], c, sizeof(c)), -1);
    assert_string_equal(c, "'seg-1a.ts' is not index.m3u8, seg-N.ts, init.mp4 or seg-N.m4s (N from 0)");
}

static void test_thumbnail_times_and_options(void **state)
{
    (void)state;
    char c[256];
    struct {
        const char *chain, *canon;
    } ok[] = {
        {"30", "t=30.000;box=0x0;f=jpeg;q=85;kf=0"},
        {"12.5", "t=12.500;box=0x0;f=jpeg;q=85;kf=0"},
        {"0.001", "t=0.001;box=0x0;f=jpeg;q=85;kf=0"},
        {"1:30", "t=90.000;box=0x0;f=jpeg;q=85;kf=0"},
        {"01:02:03.25", "t=3723.250;box=0x0;f=jpeg;q=85;kf=0"},
        {"10/320x180/webp/keyframe", "t=10.000;box=320x180;f=webp;q=85;kf=1"},
        {"10/x100/png", "t=10.000;box=0x100;f=png;q=85;kf=0"},
        {"10/jpg", "t=10.000;box=0x0;f=jpeg;q=85;kf=0"},
        {"604800", "t=604800.000;box=0x0;f=jpeg;q=85;kf=0"},
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        assert_int_equal(s_video("thumbnail", ok[i].chain, c, sizeof(c)), 0);
        assert_string_equal(c, ok[i].canon);
    }
    const char *bad[] = {"",    "abc",    "1.2345",     "1:2",    "1:60",    "1:2:3:4",       "-1", "604801", "1.",
                         ".5x", "10/0x0", "10/16385x1", "10/gif", "10//png", "99999999999999"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(s_video("thumbnail", bad[i], c, sizeof(c)), -1);
        assert_true(strlen(c) > 0);
    }
}

static void test_thumbnail_seed_form(void **state)
{
    (void)state;
    rf_vhost_conf_t vh = s_vhost(1, "dims");
    rf_thumb_default(&vh.thumbnail);
    h2o_iovec_t src, chain;
    const char *p = "/thumbnail/12.5/videos/a.mp4";
    assert_int_equal(s_row("thumbnail")->match(&vh, h2o_iovec_init(p, strlen(p)), h2o_iovec_init("", 0), &src, &chain),
                     1);
    assert_true(h2o_memis(src.base, src.len, H2O_STRLIT("/videos/a.mp4")));
    assert_true(h2o_memis(chain.base, chain.len, H2O_STRLIT("12.5")));
    p = "/videos/a.mp4/thumbnail/12.5/160x90";
    assert_int_equal(s_row("thumbnail")->match(&vh, h2o_iovec_init(p, strlen(p)), h2o_iovec_init("", 0), &src, &chain),
                     1);
    assert_true(h2o_memis(src.base, src.len, H2O_STRLIT("/videos/a.mp4")));
    assert_true(h2o_memis(chain.base, chain.len, H2O_STRLIT("12.5/160x90")));
    p = "/photo.jpg/dims/thumbnail/200x200/gravity/smart"; /* dims' own thumbnail operation */
    assert_int_equal(s_row("thumbnail")->match(&vh, h2o_iovec_init(p, strlen(p)), h2o_iovec_init("", 0), &src, &chain),
                     0);
    p = "/v.mp4/thumbnail/10/dims/thumbnail/50x50"; /* a video thumbnail piped through dims' thumbnail */
    assert_int_equal(s_row("thumbnail")->match(&vh, h2o_iovec_init(p, strlen(p)), h2o_iovec_init("", 0), &src, &chain),
                     1);
    assert_true(h2o_memis(src.base, src.len, H2O_STRLIT("/v.mp4")));
    vh.thumbnail.active = false;
    assert_int_equal(s_row("thumbnail")->match(&vh, h2o_iovec_init(p, strlen(p)), h2o_iovec_init("", 0), &src, &chain),
                     0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_dims_match),
        cmocka_unit_test(test_dims_parse_and_canon),
        cmocka_unit_test(test_dims_replies),
        cmocka_unit_test(test_mp4hls_names),
        cmocka_unit_test(test_thumbnail_times_and_options),
        cmocka_unit_test(test_thumbnail_seed_form),
    };
    return cmocka_run_group_tests_name("gw_func", tests, NULL, NULL);
}
