/*  Unit tests for services/gateway/gw_vhost.c: the routing half of the
 *  route stage — which vhost a Host names (exact, alias, longest wildcard,
 *  default), with ports and a trailing dot ignored, and reason phrases. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "gw.h"

static gw_vhosts_t *s_table(const char *vhosts_yaml)
{
    char text[2048];
    snprintf(text, sizeof(text), "gateway: { listen: 8080 }\nbus: { endpoint: \"tcp://127.0.0.1:5555\" }\nvhosts:\n%s",
             vhosts_yaml);
    char *err = NULL;
    rf_config_t *cfg = rf_config_load_string(text, strlen(text), "t.yaml", &err);
    if (cfg == NULL)
        fail_msg("config: %s", err);
    gw_vhosts_t *v = gw_vhosts_new(&cfg, &err);
    if (v == NULL)
        fail_msg("table: %s", err);
    assert_null(cfg);
    return v;
}

static const char *s_match(gw_vhosts_t *v, const char *host)
{
    const rf_vhost_conf_t *vh = gw_vhosts_match(v, host, strlen(host));
    return vh ? vh->name : NULL;
}

static void test_match(void **state)
{
    (void)state;
    gw_vhosts_t *v = s_table("  - { name: a.test, origin: \"http://h\", aliases: [alias.test] }\n"
                             "  - { name: \"*.b.test\", origin: \"http://h\" }\n"
                             "  - { name: \"*.x.b.test\", origin: \"http://h\" }\n"
                             "  - { name: fallback.test, origin: \"file:///tmp\", default: true }\n");
    assert_string_equal(s_match(v, "a.test"), "a.test");
    assert_string_equal(s_match(v, "A.TEST"), "a.test");
    assert_string_equal(s_match(v, "a.test:8080"), "a.test");
    assert_string_equal(s_match(v, "a.test."), "a.test");
    assert_string_equal(s_match(v, "alias.test"), "a.test");
    assert_string_equal(s_match(v, "one.b.test"), "*.b.test");
    assert_string_equal(s_match(v, "one.x.b.test"), "*.x.b.test"); /* longest wildcard */
    assert_string_equal(s_match(v, "b.test"), "fallback.test");    /* a wildcard needs a label */
    assert_string_equal(s_match(v, "unknown.test"), "fallback.test");
    assert_string_equal(s_match(v, "[::1]:80"), "fallback.test");
    assert_string_equal(s_match(v, ""), "fallback.test");
    assert_non_null(gw_vhosts_file_handler(v, gw_vhosts_match(v, "fallback.test", 13)));
    gw_vhosts_unref(&v);
    assert_null(v);
    gw_vhosts_unref(&v); /* safe twice */
}

static void test_no_default(void **state)
{
    (void)state;
    gw_vhosts_t *v = s_table("  - { name: a.test, origin: \"http://h\" }\n");
    assert_null(s_match(v, "other.test"));
    gw_vhosts_ref(v);
    gw_vhosts_t *second = v;
    gw_vhosts_unref(&second); /* one reference left */
    assert_string_equal(s_match(v, "a.test"), "a.test");
    gw_vhosts_unref(&v);
}

static void test_tls_certificate_errors(void **state)
{
    (void)state;
    char text[512];
    snprintf(text, sizeof(text),
             "gateway: { listen: 8080, tls: { listen: 8443, cert: /nonexistent.crt, key: /nonexistent.key } }\n"
             "bus: { endpoint: \"tcp://127.0.0.1:5555\" }\nvhosts:\n  - { name: a, origin: \"http://h\" }\n");
    char *err = NULL;
    rf_config_t *cfg = rf_config_load_string(text, strlen(text), "t.yaml", &err);
    assert_non_null(cfg);
    gw_vhosts_t *v = gw_vhosts_new(&cfg, &err);
    assert_null(v);
    assert_null(cfg); /* consumed even on failure */
    assert_non_null(err);
    if (strncmp(err, "tls: cannot load certificate /nonexistent.crt: ", 47) != 0)
        fail_msg("error: %s", err);
    free(err);
}

static void test_reasons(void **state)
{
    (void)state;
    assert_string_equal(gw_reason(301), "Moved Permanently");
    assert_string_equal(gw_reason(404), "Not Found");
    assert_string_equal(gw_reason(416), "Range Not Satisfiable");
    assert_string_equal(gw_reason(502), "Bad Gateway");
    assert_string_equal(gw_reason(299), "OK");
    assert_string_equal(gw_reason(599), "Server Error");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_match),
        cmocka_unit_test(test_no_default),
        cmocka_unit_test(test_tls_certificate_errors),
        cmocka_unit_test(test_reasons),
    };
    return cmocka_run_group_tests_name("gw_vhost", tests, NULL, NULL);
}
