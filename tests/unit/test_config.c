/*  Unit tests for common/rf_config: typed fields and defaults of valid
 *  files, exact "name:line:col: message" errors of invalid ones, and the
 *  value parsers (sizes, durations, listen addresses, origin URLs). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rf_config.h"
#include "rf_log.h"

#define MINIMAL                                                                                                        \
    "gateway:\n"                                                                                                       \
    "  listen: 8080\n"                                                                                                 \
    "  admin_listen: 9080\n"                                                                                           \
    "  cache: { dir: /tmp/refract-cache }\n"                                                                           \
    "bus: { endpoint: \"tcp://127.0.0.1:5555\" }\n"                                                                    \
    "vhosts:\n"                                                                                                        \
    "  - name: example.com\n"                                                                                          \
    "    origin: \"http://127.0.0.1:9000\"\n"

/* Loads `text` and fails the test (printing the error) if it does not load. */
static rf_config_t *s_ok(const char *text)
{
    char *err = NULL;
    rf_config_t *cfg = rf_config_load_string(text, strlen(text), "t.yaml", &err);
    if (cfg == NULL)
        fail_msg("config did not load: %s\n--- text ---\n%s", err ? err : "(no error)", text);
    assert_null(err);
    return cfg;
}

/* Loads `text`, which must fail, and asserts the error starts with `prefix`. */
static void s_err(const char *text, const char *prefix)
{
    char *err = NULL;
    rf_config_t *cfg = rf_config_load_string(text, strlen(text), "t.yaml", &err);
    if (cfg != NULL) {
        rf_config_destroy(&cfg);
        fail_msg("config loaded but should fail with '%s'\n--- text ---\n%s", prefix, text);
    }
    assert_non_null(err);
    if (strncmp(err, prefix, strlen(prefix)) != 0)
        fail_msg("error is\n  %s\nexpected it to start with\n  %s", err, prefix);
    free(err);
}

/* ---- valid files ---------------------------------------------------------- */

static void test_minimal_and_defaults(void **state)
{
    (void)state;
    rf_config_t *cfg = s_ok(MINIMAL);
    assert_string_equal(cfg->path, "t.yaml");

    assert_string_equal(cfg->gateway.listen.host, "");
    assert_int_equal(cfg->gateway.listen.port, 8080);
    assert_string_equal(cfg->gateway.admin_listen.host, "");
    assert_int_equal(cfg->gateway.admin_listen.port, 9080);
    assert_string_equal(cfg->gateway.cache_dir, "/tmp/refract-cache");
    assert_int_equal(cfg->gateway.threads, 0);
    assert_int_equal(cfg->gateway.connect_timeout_ms, 3000);
    assert_int_equal(cfg->gateway.read_timeout_ms, 30000);
    assert_int_equal(cfg->gateway.keepalive_max, 32);
    assert_int_equal(cfg->gateway.keepalive_timeout_ms, 30000);
    assert_int_equal(cfg->gateway.resolve_ttl_ms, 60000);
    assert_int_equal(cfg->gateway.drain_timeout_ms, 10000);
    assert_int_equal(cfg->gateway.client_timeout_ms, 30000);

    assert_string_equal(cfg->bus.endpoint, "tcp://127.0.0.1:5555");
    assert_int_equal(cfg->bus.n_connect, 1);
    assert_string_equal(cfg->bus.connect[0], "tcp://127.0.0.1:5555");
    assert_ptr_not_equal(cfg->bus.connect[0], cfg->bus.endpoint); /* its own copy */
    assert_int_equal(cfg->bus.heartbeat_ms, 500);
    assert_int_equal(cfg->bus.liveness, 5);
    assert_int_equal(cfg->bus.queue_max, 64);
    assert_int_equal(cfg->bus.job_timeout_ms, 30000);
    assert_int_equal(cfg->bus.retries, 1);
    assert_int_equal(cfg->bus.no_worker_grace_ms, 2000);

    assert_int_equal(cfg->n_vhosts, 1);
    rf_vhost_conf_t *v = &cfg->vhosts[0];
    assert_string_equal(v->name, "example.com");
    assert_int_equal(v->n_aliases, 0);
    assert_false(v->is_default);
    assert_int_equal(v->origin.kind, RF_ORIGIN_HTTP);
    assert_false(v->origin.https);
    assert_null(v->origin.tls.ca_file);
    assert_string_equal(v->origin.url, "http://127.0.0.1:9000");
    assert_string_equal(v->origin.host, "127.0.0.1");
    assert_int_equal(v->origin.port, 9000);
    assert_string_equal(v->origin.prefix, "");
    assert_null(v->origin.dir);
    assert_true(v->dims.active);
    assert_string_equal(v->dims.keyword, "dims");
    assert_int_equal(v->dims.max_source_size, 10 * 1024 * 1024);

    assert_int_equal(cfg->image_worker.metrics_listen.port, 0);
    assert_int_equal(cfg->image_worker.jobs, 0); /* one per CPU, resolved by the worker */
    assert_int_equal(cfg->image_worker.vips_concurrency, 0);
    assert_int_equal(cfg->image_worker.max_pixels, 100000000);
    assert_int_equal(cfg->log.level, RF_LOG_INFO);

    rf_config_destroy(&cfg);
    assert_null(cfg);
    rf_config_destroy(&cfg); /* twice is safe */
    rf_config_destroy(NULL);
}

static void test_full(void **state)
{
    (void)state;
    const char *text = "gateway:\n"
                       "  listen: \"127.0.0.1:8081\"\n"
                       "  admin_listen: \":9081\"\n"
                       "  threads: 4\n"
                       "  cache: { dir: /var/cache/refract }\n"
                       "  origin:\n"
                       "    connect_timeout: 500ms\n"
                       "    read_timeout: 3s\n"
                       "    keepalive: 8\n"
                       "    keepalive_timeout: 2m\n"
                       "  drain_timeout: 1.5s\n"
                       "  client_timeout: 7\n"
                       "bus:\n"
                       "  endpoint: tcp://0.0.0.0:5555\n"
                       "  connect: [tcp://10.0.0.1:5555, tcp://10.0.0.2:5555]\n"
                       "  heartbeat_interval: 250ms\n"
                       "  liveness: 5\n"
                       "  queue_max: 10\n"
                       "  job_timeout: 20s\n"
                       "  retries: 0\n"
                       "  no_worker_grace: 750ms\n"
                       "vhost_defaults:\n"
                       "  dims: { status: inactive, keyword: im, max_source_size: 20MB }\n"
                       "vhosts:\n"
                       "  - name: a.example.com\n"
                       "    aliases: [www.a.example.com, \"*.a.example.com\"]\n"
                       "    default: true\n"
                       "    origin: http://origin.example.com:8000/media/\n"
                       "  - name: b.example.com\n"
                       "    aliases: b2.example.com\n"
                       "    origin: file:///srv/media/\n"
                       "    dims:\n"
                       "      status: active\n"
                       "      max_source_size: 512k\n"
                       "  - name: c.example.com\n"
                       "    origin: http://[::1]/x\n"
                       "    dims: { keyword: dims2 }\n"
                       "image_worker:\n"
                       "  metrics_listen: \"[::1]:9100\"\n"
                       "  jobs: 256\n"
                       "  vips_concurrency: 2\n"
                       "  max_pixels: 5000000000\n"
                       "log: { level: debug }\n";
    rf_config_t *cfg = s_ok(text);

    assert_string_equal(cfg->gateway.listen.host, "127.0.0.1");
    assert_int_equal(cfg->gateway.listen.port, 8081);
    assert_string_equal(cfg->gateway.admin_listen.host, "");
    assert_int_equal(cfg->gateway.admin_listen.port, 9081);
    assert_int_equal(cfg->gateway.threads, 4);
    assert_string_equal(cfg->gateway.cache_dir, "/var/cache/refract");
    assert_int_equal(cfg->gateway.connect_timeout_ms, 500);
    assert_int_equal(cfg->gateway.read_timeout_ms, 3000);
    assert_int_equal(cfg->gateway.keepalive_max, 8);
    assert_int_equal(cfg->gateway.keepalive_timeout_ms, 120000);
    assert_int_equal(cfg->gateway.drain_timeout_ms, 1500);
    assert_int_equal(cfg->gateway.client_timeout_ms, 7000);

    assert_string_equal(cfg->bus.endpoint, "tcp://0.0.0.0:5555");
    assert_int_equal(cfg->bus.n_connect, 2);
    assert_string_equal(cfg->bus.connect[0], "tcp://10.0.0.1:5555");
    assert_string_equal(cfg->bus.connect[1], "tcp://10.0.0.2:5555");
    assert_int_equal(cfg->bus.heartbeat_ms, 250);
    assert_int_equal(cfg->bus.liveness, 5);
    assert_int_equal(cfg->bus.queue_max, 10);
    assert_int_equal(cfg->bus.job_timeout_ms, 20000);
    assert_int_equal(cfg->bus.retries, 0);
    assert_int_equal(cfg->bus.no_worker_grace_ms, 750);

    assert_int_equal(cfg->n_vhosts, 3);
    rf_vhost_conf_t *a = &cfg->vhosts[0], *b = &cfg->vhosts[1], *c = &cfg->vhosts[2];

    assert_string_equal(a->name, "a.example.com");
    assert_int_equal(a->n_aliases, 2);
    assert_string_equal(a->aliases[0], "www.a.example.com");
    assert_string_equal(a->aliases[1], "*.a.example.com");
    assert_true(a->is_default);
    assert_int_equal(a->origin.kind, RF_ORIGIN_HTTP);
    assert_string_equal(a->origin.host, "origin.example.com");
    assert_int_equal(a->origin.port, 8000);
    assert_string_equal(a->origin.prefix, "/media");
    /* vhost_defaults.dims inherited whole */
    assert_false(a->dims.active);
    assert_string_equal(a->dims.keyword, "im");
    assert_int_equal(a->dims.max_source_size, 20 * 1024 * 1024);

    assert_string_equal(b->name, "b.example.com");
    assert_int_equal(b->n_aliases, 1);
    assert_string_equal(b->aliases[0], "b2.example.com");
    assert_false(b->is_default);
    assert_int_equal(b->origin.kind, RF_ORIGIN_FILE);
    assert_string_equal(b->origin.dir, "/srv/media");
    assert_string_equal(b->origin.url, "file:///srv/media/");
    /* overridden: status and size; keyword inherited */
    assert_true(b->dims.active);
    assert_string_equal(b->dims.keyword, "im");
    assert_int_equal(b->dims.max_source_size, 512 * 1024);

    assert_string_equal(c->origin.host, "::1");
    assert_int_equal(c->origin.port, 80);
    assert_string_equal(c->origin.prefix, "/x");
    assert_false(c->dims.active);
    assert_string_equal(c->dims.keyword, "dims2");
    assert_int_equal(c->dims.max_source_size, 20 * 1024 * 1024);
    /* each vhost owns its keyword */
    assert_ptr_not_equal(a->dims.keyword, b->dims.keyword);

    assert_string_equal(cfg->image_worker.metrics_listen.host, "::1");
    assert_int_equal(cfg->image_worker.metrics_listen.port, 9100);
    assert_int_equal(cfg->image_worker.jobs, 256);
    assert_int_equal(cfg->image_worker.vips_concurrency, 2);
    assert_true(cfg->image_worker.max_pixels == 5000000000LL);
    assert_int_equal(cfg->log.level, RF_LOG_DEBUG);
    rf_config_destroy(&cfg);
}

/* dims.presets and dims.byoriginal (the seed's <ByOriginal> as YAML):
 * checked at load, inherited from vhost_defaults as copies, replaced by a
 * vhost's own. */
static void test_dims_presets_and_byoriginal(void **state)
{
    (void)state;
    const char *text = "bus: { endpoint: \"tcp://127.0.0.1:5555\" }\n"
                       "vhost_defaults:\n"
                       "  dims:\n"
                       "    presets: { card: \"thumbnail/300x200/gravity/smart/format/webp\" }\n"
                       "    byoriginal:\n"
                       "      limit-1200:\n"
                       "        - { width: 1200, chain: \"/optimize\" }\n"
                       "        - chain: \"/resize/1024x768/optimize\"\n"
                       "vhosts:\n"
                       "  - { name: a.org, origin: \"file:///\" }\n"
                       "  - name: b.org\n"
                       "    origin: \"file:///\"\n"
                       "    dims:\n"
                       "      presets: { small: resize/100x100, big: \"resize/2000x2000<\" }\n"
                       "      byoriginal:\n"
                       "        pngs: [ { format: png, height: 500, bytes: 1MB, chain: format/webp } ]\n";
    rf_config_t *cfg = s_ok(text);
    const rf_dims_conf_t *a = &cfg->vhosts[0].dims, *b = &cfg->vhosts[1].dims;
    assert_int_equal(a->n_presets, 1);
    assert_string_equal(a->presets[0].name, "card");
    assert_string_equal(a->presets[0].chain, "thumbnail/300x200/gravity/smart/format/webp");
    assert_int_equal(a->n_byorig, 1);
    assert_string_equal(a->byorig[0].name, "limit-1200");
    assert_int_equal(a->byorig[0].n, 2);
    assert_int_equal(a->byorig[0].rules[0].max_width, 1200);
    assert_string_equal(a->byorig[0].rules[0].chain, "/optimize");
    assert_int_equal(a->byorig[0].rules[1].max_width, 0);
    assert_int_equal(b->n_presets, 2);
    assert_string_equal(b->presets[1].name, "big");
    assert_int_equal(b->n_byorig, 1);
    assert_int_equal(b->byorig[0].rules[0].format, RF_FMT_PNG);
    assert_int_equal(b->byorig[0].rules[0].max_height, 500);
    assert_int_equal(b->byorig[0].rules[0].max_bytes, 1024 * 1024);
    /* the context a chain is parsed with */
    rf_chain_ctx_t ctx = rf_dims_ctx(a);
    rf_chain_t c;
    char why[512];
    assert_int_equal(rf_chain_parse("preset/card/byoriginal/limit-1200", 33, &ctx, &c, why, sizeof(why)), 0);
    assert_int_equal(c.n, 4);
    rf_config_destroy(&cfg);

#define DIMS_VHOST(dims) "bus: { endpoint: \"tcp://127.0.0.1:5555\" }\nvhosts:\n  - name: a.org\n    origin: \"file:///\"\n    dims: " dims "\n"
    s_err(DIMS_VHOST("{ presets: { card: \"resize/0\" } }"),
          "t.yaml:5:30: dims preset 'card': resize: '0' is not WxH");
    s_err(DIMS_VHOST("{ presets: { \"a/b\": optimize } }"), "t.yaml:5:24: preset name must be 1..63 of");
    s_err(DIMS_VHOST("{ presets: { x: preset/y } }"), "t.yaml:5:27: dims preset 'x': unknown preset 'y'");
    s_err(DIMS_VHOST("{ presets: [ optimize ] }"), "t.yaml:5:22: dims.presets must be a mapping");
    s_err(DIMS_VHOST("{ byoriginal: { r: [] } }"), "t.yaml:5:30: dims byoriginal 'r' is a list of 1..16 rules");
    s_err(DIMS_VHOST("{ byoriginal: { r: [ { width: 10 } ] } }"),
          "t.yaml:5:32: dims byoriginal 'r': every rule needs a chain");
    s_err(DIMS_VHOST("{ byoriginal: { r: [ { chain: blur/0 } ] } }"),
          "t.yaml:5:32: dims byoriginal 'r': blur: '0' is not");
    s_err(DIMS_VHOST("{ byoriginal: { r: [ { chain: optimize, format: bmp } ] } }"),
          "t.yaml:5:32: dims byoriginal 'r': format is jpeg, png, webp, avif or gif, got 'bmp'");
    s_err("bus: { endpoint: x }\nvhosts:\n  - { name: a.org, origin: \"http://h:1\", balance: hashy }\n",
          "t.yaml:3:51: balance is round_robin or hash, got 'hashy'");
    s_err("bus: { endpoint: x }\nvhosts:\n  - { name: a.org, origin: \"http://h:1\", byclient: { keyword: b, protocol: ftp, "
          "allow: [x] } }\n",
          "t.yaml:3:76: byclient.protocol is http or https, got 'ftp'");
    s_err(DIMS_VHOST("{ byoriginal: { r: [ { chain: optimize, widht: 3 } ] } }"), "t.yaml:5:51: unknown key 'widht' in a byoriginal rule");
}

static void test_defaults_when_sections_absent(void **state)
{
    (void)state;
    /* No cache, no admin_listen, no vhost_defaults; bus.connect as a scalar. */
    const char *text = "bus:\n"
                       "  endpoint: ipc:///tmp/rf.sock\n"
                       "  connect: tcp://10.1.1.1:5555\n"
                       "vhosts:\n"
                       "  - { name: x.org, origin: \"file:///\", dims: { status: off } }\n"
                       "log:\n"
                       "  level: error\n";
    rf_config_t *cfg = s_ok(text);
    assert_int_equal(cfg->gateway.listen.port, 0);
    assert_null(cfg->gateway.listen.host);
    assert_int_equal(cfg->gateway.admin_listen.port, 0);
    assert_string_equal(cfg->gateway.cache_dir, "/tmp/refract-cache");
    assert_int_equal(cfg->bus.n_connect, 1);
    assert_string_equal(cfg->bus.connect[0], "tcp://10.1.1.1:5555");
    assert_string_equal(cfg->vhosts[0].origin.dir, "/");
    assert_false(cfg->vhosts[0].dims.active);
    assert_string_equal(cfg->vhosts[0].dims.keyword, "dims");
    assert_int_equal(cfg->vhosts[0].dims.max_source_size, 10 * 1024 * 1024);
    assert_int_equal(cfg->log.level, RF_LOG_ERROR);
    rf_config_destroy(&cfg);
}

/* The vhost cache mapping: defaults, vhost_defaults inherited and
 * overridden key by key, query policies, TTL rules (mapping or bare). */
static void test_vhost_cache(void **state)
{
    (void)state;
    rf_config_t *cfg = s_ok("gateway: {listen: \"127.0.0.1:8080\"}\nbus: {endpoint: \"tcp://127.0.0.1:5555\"}\n"
                            "vhost_defaults:\n"
                            "  cache: {query: [v, w], ttl: {res4xx: 7}}\n"
                            "vhosts:\n"
                            "  - {name: a, origin: \"http://o\"}\n"
                            "  - name: b\n"
                            "    origin: \"http://o\"\n"
                            "    cache:\n"
                            "      enable: false\n"
                            "      memory_only: true\n"
                            "      override_origin: true\n"
                            "      heuristic: 0\n"
                            "      query: none\n"
                            "      ttl_extension_4xx: on\n"
                            "      ttl_extension: 1m\n"
                            "      ttl: {res2xx: {value: 2h, ratio: 50, max: 1d}, nocache: 9, res3xx: 0, res5xx: 30s}\n");
    const rf_cache_conf_t *a = &cfg->vhosts[0].cache, *b = &cfg->vhosts[1].cache;
    assert_true(a->enable);
    assert_false(a->memory_only);
    assert_int_equal(a->query, RF_QUERY_KEEP);
    assert_int_equal(a->n_query_keep, 2);
    assert_string_equal(a->query_keep[1], "w");
    assert_int_equal(a->ttl.res4xx, 7);
    assert_int_equal(a->ttl.res2xx.value, 1800);
    assert_int_equal(a->ttl.res2xx.ratio, 20);
    assert_false(b->enable);
    assert_true(b->memory_only);
    assert_true(b->ttl.override_origin);
    assert_int_equal(b->ttl.heuristic_percent, 0);
    assert_int_equal(b->query, RF_QUERY_NONE);
    assert_int_equal(b->n_query_keep, 0);
    assert_true(b->ttl.extend_by_4xx);
    assert_int_equal(b->ttl.origin_error_ttl, 60);
    assert_int_equal(b->ttl.res2xx.value, 7200);
    assert_int_equal(b->ttl.res2xx.ratio, 50);
    assert_int_equal(b->ttl.res2xx.max, 86400);
    assert_int_equal(b->ttl.nocache.value, 9);
    assert_int_equal(b->ttl.res3xx, 0);
    assert_int_equal(b->ttl.res5xx, 30);
    assert_int_equal(b->ttl.res4xx, 7); /* from vhost_defaults */
    rf_config_destroy(&cfg);
    s_err("gateway: {listen: \"127.0.0.1:8080\"}\nbus: {endpoint: \"tcp://127.0.0.1:5555\"}\nvhosts:\n  - {name: a, origin: \"http://o\", cache: {query: some}}\n",
          "t.yaml:4:");
    s_err("gateway: {listen: \"127.0.0.1:8080\"}\nbus: {endpoint: \"tcp://127.0.0.1:5555\"}\nvhosts:\n  - {name: a, origin: \"http://o\", cache: {ttl: {res2xx: "
          "{ratio: 101}}}}\n",
          "t.yaml:4:");
    s_err("gateway: {listen: \"127.0.0.1:8080\"}\nbus: {endpoint: \"tcp://127.0.0.1:5555\"}\nvhosts:\n  - {name: a, origin: \"http://o\", cache: {ttl: {res3xx: -1}}}\n",
          "t.yaml:4:");
    s_err("gateway: {listen: \"127.0.0.1:8080\"}\nbus: {endpoint: \"tcp://127.0.0.1:5555\"}\nvhosts:\n  - {name: a, origin: \"http://o\", cache: {nope: 1}}\n",
          "t.yaml:4:");
}

static void test_text_not_nul_terminated(void **state)
{
    (void)state;
    /* Only the first strlen(MINIMAL) bytes count; the rest would be an error. */
    const char *text = MINIMAL "bogus: [\n";
    char *err = NULL;
    rf_config_t *cfg = rf_config_load_string(text, strlen(MINIMAL), "mem", &err);
    assert_non_null(cfg);
    assert_string_equal(cfg->path, "mem");
    assert_int_equal(cfg->gateway.listen.port, 8080);
    rf_config_destroy(&cfg);

    cfg = rf_config_load_string(text, strlen(text), "mem", &err);
    assert_null(cfg);
    assert_non_null(err);
    assert_true(strncmp(err, "mem:", 4) == 0);
    free(err);
}

static void test_load_file(void **state)
{
    (void)state;
    char path[] = "/tmp/rf-test-config-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    assert_non_null(f);
    fputs(MINIMAL, f);
    fclose(f);
    char *err = NULL;
    rf_config_t *cfg = rf_config_load(path, &err);
    assert_non_null(cfg);
    assert_string_equal(cfg->path, path);
    assert_string_equal(cfg->vhosts[0].name, "example.com");
    rf_config_destroy(&cfg);
    unlink(path);

    cfg = rf_config_load(path, &err);
    assert_null(cfg);
    assert_non_null(err);
    char prefix[64];
    snprintf(prefix, sizeof(prefix), "%s:1:1: cannot open", path);
    assert_true(strncmp(err, prefix, strlen(prefix)) == 0);
    free(err);
}

static void test_reference_conf(void **state)
{
    (void)state;
    const char *path = getenv("RF_REFERENCE_CONF");
    if (path == NULL || *path == '\0')
        skip();
    char *err = NULL;
    rf_config_t *cfg = rf_config_load(path, &err);
    if (cfg == NULL)
        fail_msg("%s does not load: %s", path, err ? err : "(no error)");
    assert_true(cfg->n_vhosts >= 1);
    assert_non_null(cfg->bus.endpoint);
    rf_config_destroy(&cfg);
}

/* ---- invalid files ----------------------------------------------------------- */

static void test_err_unknown_keys(void **state)
{
    (void)state;
    s_err("gateway:\n  listen: 8080\n  bogus: 1\n", "t.yaml:3:3: unknown key 'bogus' in gateway");
    s_err(MINIMAL "extra: 1\n", "t.yaml:9:1: unknown key 'extra' at the top level");
    s_err("bus:\n  endpoint: x\n  cache: 1\n", "t.yaml:3:3: unknown key 'cache' in bus");
    s_err("vhosts:\n  - name: a\n    origin: http://a\n    nam: b\n", "t.yaml:4:5: unknown key 'nam' in vhost");
    s_err("gateway:\n  origin: { connect_timeout: 1s, bogus: 2 }\n",
          "t.yaml:2:34: unknown key 'bogus' in gateway.origin");
    s_err("vhost_defaults:\n  dims: { x: 1 }\n", "t.yaml:2:11: unknown key 'x' in dims");
}

static void test_err_duplicate_keys(void **state)
{
    (void)state;
    s_err("gateway:\n  listen: 1\n  listen: 2\n", "t.yaml:3:3: duplicate key 'listen' in gateway");
    s_err(MINIMAL "vhosts:\n  - name: b\n    origin: http://b\n", "t.yaml:9:1: duplicate key 'vhosts'");
    /* top-level sections may not be repeated either (a second one would
     * silently merge into the first) */
    s_err(MINIMAL "bus: { connect: [tcp://a:1] }\n", "t.yaml:9:1: duplicate key 'bus'");
    s_err("bus: { endpoint: x, connect: [a] }\nbus: { connect: [b] }\n", "t.yaml:2:1: duplicate key 'bus'");
}

static void test_err_yaml_syntax(void **state)
{
    (void)state;
    s_err("gateway:\n  listen: [8080\nbus: 1\n", "t.yaml:3:");
    s_err("gateway:\n  listen: 8080\n bus: x\n", "t.yaml:3:");
    s_err("gateway: {\n", "t.yaml:2:1:");
    s_err("a: \"unterminated\n", "t.yaml:2:1: found unexpected end of stream");
    s_err("a: *nope\n", "t.yaml:1:4: found undefined alias");
}

static void test_err_structure(void **state)
{
    (void)state;
    s_err("", "t.yaml:1:1: the file is empty");
    s_err("# only a comment\n", "t.yaml:1:1: the file is empty");
    s_err("- a\n- b\n", "t.yaml:1:1: the top level must be a mapping");
    s_err("gateway: 1\n", "t.yaml:1:10: gateway must be a mapping");
    s_err("gateway:\n  listen: [1]\n", "t.yaml:2:11: value must be a scalar");
    s_err("bus: { endpoint: x }\nvhosts: a\n", "t.yaml:2:9: vhosts must be a list");
    s_err("bus: { endpoint: x }\nvhosts: []\n", "t.yaml:2:9: vhosts must list at least one vhost");
    s_err("bus: { endpoint: x }\nvhosts: [ [a] ]\n", "t.yaml:2:11: vhost must be a mapping");
    s_err("bus: { endpoint: x }\nvhosts:\n  - origin: http://a\n", "t.yaml:3:5: vhost needs a name");
    s_err("bus: { endpoint: x }\nvhosts:\n  - name: a\n", "t.yaml:3:5: vhost 'a' needs an origin");
    s_err("bus: { endpoint: x, connect: [a, [b]] }\n", "t.yaml:1:34: list items must be strings");
    s_err("bus: { endpoint: x, connect: { a: b } }\n", "t.yaml:1:30: expected a string or a list of strings");
}

static void test_err_missing_endpoint(void **state)
{
    (void)state;
    s_err("gateway:\n  listen: 8080\nvhosts:\n  - name: a\n    origin: http://a\n",
          "t.yaml:1:1: bus.endpoint is required");
    s_err("bus: { connect: [tcp://a:1] }\n", "t.yaml:1:1: bus.endpoint is required");
}

static void test_err_origin(void **state)
{
    (void)state;
    s_err("bus: { endpoint: x }\nvhosts:\n  - name: a\n    origin: s3://bucket/x\n",
          "t.yaml:3:5: vhost 'a': this origin scheme is not supported yet");
    s_err("bus: { endpoint: x }\nvhosts:\n  - name: a\n    origin: ftp://a\n",
          "t.yaml:3:5: vhost 'a': origin must be http[s]://host[:port][/prefix] or file:///dir");
    s_err("bus: { endpoint: x }\nvhosts:\n  - name: a\n    origin: https://a:0\n",
          "t.yaml:3:5: vhost 'a': origin URL has a bad port");
    s_err("bus: { endpoint: x }\nvhosts:\n  - name: a\n    origin: file://relative\n",
          "t.yaml:3:5: vhost 'a': file origin needs an absolute path");
    s_err("bus: { endpoint: x }\nvhosts:\n  - name: a\n    origin: http://a:99999\n",
          "t.yaml:3:5: vhost 'a': origin URL has a bad port");
}

static void test_err_vhosts(void **state)
{
    (void)state;
    s_err("bus: { endpoint: x }\n"
          "vhosts:\n"
          "  - name: a.com\n"
          "    origin: http://a\n"
          "  - name: A.com\n"
          "    origin: http://b\n",
          "t.yaml:5:5: duplicate vhost name 'A.com'");
    s_err("bus: { endpoint: x }\n"
          "vhosts:\n"
          "  - { name: a, origin: http://a, default: true }\n"
          "  - { name: b, origin: http://b, default: false }\n"
          "  - { name: c, origin: http://c, default: yes }\n",
          "t.yaml:5:5: only one vhost may be the default");
    s_err("bus: { endpoint: x }\nvhosts:\n  - { name: a, origin: http://a, default: maybe }\n",
          "t.yaml:3:43: expected true or false, got 'maybe'");
    s_err("bus: { endpoint: x }\nvhosts:\n  - { name: a, origin: http://a, dims: { keyword: a/b } }\n",
          "t.yaml:3:40: dims keyword must be a non-empty path segment");
    s_err("bus: { endpoint: x }\nvhosts:\n  - { name: a, origin: http://a, dims: { keyword: \"\" } }\n",
          "t.yaml:3:40: dims keyword must be a non-empty path segment");
    s_err("bus: { endpoint: x }\nvhosts:\n  - { name: a, origin: http://a, dims: { max_source_size: 10XB } }\n",
          "t.yaml:3:59: expected a size such as 10MB, got '10XB'");
}

static void test_err_values(void **state)
{
    (void)state;
    s_err("gateway:\n  listen: 70000\n", "t.yaml:2:11: expected a port or \"host:port\", got '70000'");
    s_err("gateway:\n  listen: \"h:-1\"\n", "t.yaml:2:11: expected a port or \"host:port\", got 'h:-1'");
    s_err("gateway:\n  admin_listen: abc\n", "t.yaml:2:17: expected a port or \"host:port\", got 'abc'");
    s_err("gateway:\n  listen: \"host:\"\n", "t.yaml:2:11: expected a port or \"host:port\"");
    s_err("gateway:\n  threads: -1\n", "t.yaml:2:12: expected a non-negative integer, got '-1'");
    s_err("gateway:\n  threads: 2x\n", "t.yaml:2:12: expected a non-negative integer, got '2x'");
    s_err("gateway:\n  threads: 99999999999\n", "t.yaml:2:12: expected a non-negative integer");
    s_err("gateway:\n  drain_timeout: 10 parsecs\n",
          "t.yaml:2:18: expected a duration such as 10s or 500ms, got '10 parsecs'");
    s_err("bus:\n  endpoint: x\n  job_timeout: -1s\n", "t.yaml:3:16: expected a duration such as 10s or 500ms");
    s_err("image_worker:\n  max_pixels: -5\n", "t.yaml:2:15: expected a non-negative integer, got '-5'");
    s_err("log:\n  level: verbose\n", "t.yaml:2:10: log level must be error, warn, info or debug");
}

static void test_err_ranges(void **state)
{
    (void)state;
    /* Ranges come from common/rf_config.def; errors point at the value. */
    s_err(MINIMAL "image_worker: { jobs: -1 }\n", "t.yaml:9:23: expected a non-negative integer, got '-1'");
    s_err(MINIMAL "image_worker: { jobs: 257 }\n", "t.yaml:9:23: image_worker.jobs must be between 0 and 256");
    s_err("bus: { endpoint: x, heartbeat_interval: 5ms }\n",
          "t.yaml:1:41: bus.heartbeat_interval must be between 10ms and 60s");
    s_err("bus: { endpoint: x, liveness: 0 }\n", "t.yaml:1:31: bus.liveness must be between 1 and 1000");
    s_err("bus: { endpoint: x, no_worker_grace: 61s }\n", "t.yaml:1:38: bus.no_worker_grace must be between 0s and 60s");
    s_err("gateway: { listen: 1, threads: 300 }\nbus: { endpoint: x }\n",
          "t.yaml:1:32: gateway.threads must be between 0 and 256");
    s_err("gateway: { listen: 1, origin: { connect_timeout: 0 } }\nbus: { endpoint: x }\n",
          "t.yaml:1:50: gateway.origin.connect_timeout must be between 1ms and 600s");
    /* the bounds themselves are accepted */
    rf_config_t *cfg = s_ok(MINIMAL "image_worker: { jobs: 1 }\n");
    assert_int_equal(cfg->image_worker.jobs, 1);
    rf_config_destroy(&cfg);
    cfg = s_ok(MINIMAL "image_worker: { jobs: 256 }\n");
    assert_int_equal(cfg->image_worker.jobs, 256);
    rf_config_destroy(&cfg);
}

/* docs/configuration.md embeds the schema's tables verbatim: a key added
 * to rf_config.def without `make docs` fails here. */
static void test_docs_match_schema(void **state)
{
    (void)state;
    FILE *f = fopen("docs/configuration.md", "r");
    if (f == NULL)
        fail_msg("run from the repository root: docs/configuration.md not found");
    char *doc = calloc(1, 1 << 20);
    size_t n = fread(doc, 1, (1 << 20) - 1, f);
    fclose(f);
    doc[n] = '\0';
    static const char *const sections[] = {"gateway", "bus", "image_worker", "log", NULL};
    for (int i = 0; sections[i]; i++) {
        char *table = NULL;
        size_t len = 0;
        FILE *m = open_memstream(&table, &len);
        rf_config_write_reference(m, sections[i]);
        fclose(m);
        if (strstr(doc, table) == NULL)
            fail_msg("docs/configuration.md lacks the current '%s' table; run `make docs`:\n%s", sections[i], table);
        free(table);
    }
    free(doc);
}

static void test_err_name_in_message(void **state)
{
    (void)state;
    char *err = NULL;
    const char *text = "gateway:\n  bogus: 1\n";
    assert_null(rf_config_load_string(text, strlen(text), "/etc/refract/refract.yaml", &err));
    assert_string_equal(err, "/etc/refract/refract.yaml:2:3: unknown key 'bogus' in gateway");
    free(err);
}

/* ---- value parsers ----------------------------------------------------------- */

static void test_tls(void **state)
{
    (void)state;
    rf_config_t *cfg = s_ok(MINIMAL);
    assert_int_equal(cfg->gateway.tls.listen.port, 0); /* no TLS unless asked */
    assert_int_equal(cfg->gateway.tls.min_version, 0x0303);
    assert_string_equal(cfg->gateway.tls.ciphers, RF_TLS_DEFAULT_CIPHERS);
    assert_null(cfg->vhosts[0].tls.cert);
    rf_config_destroy(&cfg);
    cfg = s_ok("gateway:\n  listen: 8080\n  tls:\n    listen: \"127.0.0.1:8443\"\n    cert: /d.crt\n    key: /d.key\n"
               "    min_version: \"1.3\"\n    ciphers: ECDHE-RSA-AES128-GCM-SHA256\n"
               "bus: { endpoint: \"tcp://127.0.0.1:5555\" }\n"
               "vhosts:\n  - name: a.test\n    origin: \"http://127.0.0.1:9000\"\n    tls: { cert: /a.crt, key: /a.key }\n");
    assert_int_equal(cfg->gateway.tls.listen.port, 8443);
    assert_string_equal(cfg->gateway.tls.listen.host, "127.0.0.1");
    assert_string_equal(cfg->gateway.tls.def.cert, "/d.crt");
    assert_string_equal(cfg->gateway.tls.def.key, "/d.key");
    assert_int_equal(cfg->gateway.tls.min_version, 0x0304);
    assert_string_equal(cfg->gateway.tls.ciphers, "ECDHE-RSA-AES128-GCM-SHA256");
    assert_string_equal(cfg->vhosts[0].tls.cert, "/a.crt");
    assert_string_equal(cfg->vhosts[0].tls.key, "/a.key");
    rf_config_destroy(&cfg);
    s_err("gateway:\n  listen: 8080\n  tls: { listen: 8443 }\nbus: { endpoint: \"tcp://127.0.0.1:5555\" }\n"
          "vhosts:\n  - name: a\n    origin: \"http://h\"\n",
          "t.yaml:1:1: gateway.tls.listen needs gateway.tls.cert and gateway.tls.key");
    s_err("gateway:\n  listen: 8080\n  tls: { min_version: \"1.1\" }\nbus: { endpoint: \"tcp://127.0.0.1:5555\" }\n"
          "vhosts:\n  - name: a\n    origin: \"http://h\"\n",
          "t.yaml:3:23: min_version must be \"1.2\" or \"1.3\"");
    s_err("gateway:\n  listen: 8080\nbus: { endpoint: \"tcp://127.0.0.1:5555\" }\n"
          "vhosts:\n  - name: a\n    origin: \"http://h\"\n    tls: { cert: /a.crt }\n",
          "t.yaml:5:5: vhost 'a': tls needs both cert and key");
    s_err("gateway:\n  listen: 8080\nbus: { endpoint: \"tcp://127.0.0.1:5555\" }\n"
          "vhosts:\n  - name: a\n    origin: \"http://h\"\n    tls: { cert: /a.crt, key: /k, pass: x }\n",
          "t.yaml:7:35: unknown key 'pass' in vhost tls");
}

static void test_origin_tls(void **state)
{
    (void)state;
#define HEAD_ "gateway:\n  listen: 8080\n  origin: { resolve_ttl: 1s }\nbus: { endpoint: \"tcp://127.0.0.1:5555\" }\n"
    rf_config_t *cfg = s_ok(HEAD_ "vhosts:\n"
                                  "  - name: a.test\n"
                                  "    origin: \"https://origin.test:8443/p\"\n"
                                  "  - name: b.test\n"
                                  "    origin: \"https://10.0.0.9\"\n"
                                  "    origin_tls:\n"
                                  "      ca_file: /etc/refract/origin-ca.pem\n"
                                  "      sni: origin.internal\n"
                                  "      client_cert: /etc/refract/gw.crt\n"
                                  "      client_key: /etc/refract/gw.key\n"
                                  "  - name: c.test\n"
                                  "    origin_tls: { verify: false }\n"
                                  "    origin: \"https://self-signed.test\"\n");
    assert_int_equal(cfg->gateway.resolve_ttl_ms, 1000);
    const rf_origin_t *a = &cfg->vhosts[0].origin, *b = &cfg->vhosts[1].origin, *c = &cfg->vhosts[2].origin;
    assert_true(a->https);
    assert_int_equal(a->port, 8443);
    assert_string_equal(a->prefix, "/p");
    assert_true(a->tls.verify);
    assert_null(a->tls.ca_file);
    assert_null(a->tls.sni);
    assert_true(b->https);
    assert_int_equal(b->port, 443);
    assert_true(b->tls.verify);
    assert_string_equal(b->tls.ca_file, "/etc/refract/origin-ca.pem");
    assert_string_equal(b->tls.sni, "origin.internal");
    assert_string_equal(b->tls.client_cert, "/etc/refract/gw.crt");
    assert_string_equal(b->tls.client_key, "/etc/refract/gw.key");
    assert_false(c->tls.verify); /* origin_tls before origin works too */
    assert_null(c->tls.ca_file);
    rf_config_destroy(&cfg);

    s_err(HEAD_ "vhosts:\n  - name: a\n    origin: \"http://h\"\n    origin_tls: { verify: false }\n",
          "t.yaml:6:5: vhost 'a': origin_tls needs an https:// origin");
    s_err(HEAD_ "vhosts:\n  - name: a\n    origin: \"https://h\"\n    origin_tls: { client_cert: /c.pem }\n",
          "t.yaml:6:5: vhost 'a': origin_tls needs both client_cert and client_key");
    s_err(HEAD_ "vhosts:\n  - name: a\n    origin: \"https://h\"\n    origin_tls: { client_key: /k.pem }\n",
          "t.yaml:6:5: vhost 'a': origin_tls needs both client_cert and client_key");
    s_err(HEAD_ "vhosts:\n  - name: a\n    origin: \"https://h\"\n    origin_tls: { sni: \"a b\" }\n",
          "t.yaml:6:5: vhost 'a': origin_tls sni must be a host name, got 'a b'");
    s_err(HEAD_ "vhosts:\n  - name: a\n    origin: \"https://h\"\n    origin_tls: { sni: \"\" }\n",
          "t.yaml:6:5: vhost 'a': origin_tls sni must be a host name");
    s_err(HEAD_ "vhosts:\n  - name: a\n    origin: \"https://h\"\n    origin_tls: { ca_file: \"\" }\n",
          "t.yaml:6:5: vhost 'a': origin_tls file names must not be empty");
    s_err(HEAD_ "vhosts:\n  - name: a\n    origin: \"https://h\"\n    origin_tls: { verify: maybe }\n",
          "t.yaml:8:27: expected true or false, got 'maybe'");
    s_err(HEAD_ "vhosts:\n  - name: a\n    origin: \"https://h\"\n    origin_tls: { cafile: /x }\n",
          "t.yaml:8:19: unknown key 'cafile' in origin_tls");
    s_err(HEAD_ "vhosts:\n  - name: a\n    origin: \"https://h\"\n    origin_tls: { sni: a, sni: b }\n",
          "t.yaml:8:27: duplicate key 'sni' in origin_tls");
    s_err(HEAD_ "vhosts:\n  - name: a\n    origin: \"https://h\"\n    origin_tls: /x\n",
          "t.yaml:8:17: origin_tls must be a mapping");
    s_err("gateway:\n  listen: 8080\n  origin: { resolve_ttl: soon }\n",
          "t.yaml:3:26: expected a duration such as 10s or 500ms, got 'soon'");
#undef HEAD_
}

static void test_size_parse(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        size_t bytes;
    } good[] = {
        {"0", 0},
        {"123", 123},
        {"10MB", 10u << 20},
        {"10mb", 10u << 20},
        {"10M", 10u << 20},
        {"10 MB", 10u << 20},
        {"512k", 512u << 10},
        {"512KiB", 512u << 10},
        {"1GiB", 1u << 30},
        {"1G", 1u << 30},
        {"2T", (size_t)2 << 40},
        {"1.5k", 1536},
        {"100B", 100},
        {"7b", 7},
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        size_t out = 42;
        if (rf_size_parse(good[i].text, &out) != 0)
            fail_msg("'%s' should parse", good[i].text);
        if (out != good[i].bytes)
            fail_msg("'%s' gave %zu, expected %zu", good[i].text, out, good[i].bytes);
    }
    static const char *const bad[] = {"",     "MB",    "-1",  "-1MB", "10X", "10MBs",        "10 M B", "10Bi",
                                      "10iB", "1e400", "nan", "NAN",  "inf", "99999999999T", "10KK"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        size_t out = 42;
        if (rf_size_parse(bad[i], &out) != -1)
            fail_msg("'%s' should not parse (gave %zu)", bad[i], out);
        assert_int_equal(out, 42); /* untouched */
    }
}

static void test_duration_parse(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        int ms;
    } good[] = {
        {"0", 0},       {"3", 3000},     {"3s", 3000}, {"500ms", 500}, {"1.5s", 1500},
        {"2m", 120000}, {"1h", 3600000}, {"0ms", 0},   {"0.5", 500},   {"596h", 596 * 3600000},
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        int out = 42;
        if (rf_duration_parse(good[i].text, &out) != 0)
            fail_msg("'%s' should parse", good[i].text);
        if (out != good[i].ms)
            fail_msg("'%s' gave %d, expected %d", good[i].text, out, good[i].ms);
    }
    static const char *const bad[] = {"",     "s",    "-1",    "-5ms", "10x",   "10 s", "10sec",
                                      "5msx", "597h", "1e300", "nan",  "nanms", "inf",  "3S"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int out = 42;
        if (rf_duration_parse(bad[i], &out) != -1)
            fail_msg("'%s' should not parse (gave %d)", bad[i], out);
        assert_int_equal(out, 42);
    }
}

static void test_listen_parse(void **state)
{
    (void)state;
    static const struct {
        const char *text, *host;
        int port;
    } good[] = {
        {"8080", "", 8080},
        {":8080", "", 8080},
        {"127.0.0.1:80", "127.0.0.1", 80},
        {"[::1]:9100", "::1", 9100},
        {"localhost:0", "localhost", 0},
        {"0", "", 0},
        {"host:65535", "host", 65535},
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        rf_listen_t l = {NULL, -7};
        if (rf_listen_parse(good[i].text, &l) != 0)
            fail_msg("'%s' should parse", good[i].text);
        assert_string_equal(l.host, good[i].host);
        assert_int_equal(l.port, good[i].port);
        free(l.host);
    }
    /* a second parse replaces (and frees) the previous host */
    rf_listen_t l = {NULL, 0};
    assert_int_equal(rf_listen_parse("a:1", &l), 0);
    assert_int_equal(rf_listen_parse("bb:2", &l), 0);
    assert_string_equal(l.host, "bb");
    assert_int_equal(l.port, 2);

    static const char *const bad[] = {"", ":", "host:", "65536", "-1", "host:abc", "8080x", "h:1:x", "99999999999"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (rf_listen_parse(bad[i], &l) != -1)
            fail_msg("'%s' should not parse", bad[i]);
        assert_string_equal(l.host, "bb"); /* untouched */
        assert_int_equal(l.port, 2);
    }
    free(l.host);
}

static void test_origin_parse(void **state)
{
    (void)state;
    rf_origin_t o;
    const char *why = NULL;

    assert_int_equal(rf_origin_parse("http://example.com", &o, &why), 0);
    assert_int_equal(o.kind, RF_ORIGIN_HTTP);
    assert_string_equal(o.url, "http://example.com");
    assert_string_equal(o.host, "example.com");
    assert_int_equal(o.port, 80);
    assert_string_equal(o.prefix, "");
    assert_null(o.dir);
    rf_origin_clear(&o);
    assert_null(o.url);
    assert_null(o.host);

    assert_int_equal(rf_origin_parse("http://10.0.0.5:8080/a/b//", &o, &why), 0);
    assert_string_equal(o.host, "10.0.0.5");
    assert_int_equal(o.port, 8080);
    assert_string_equal(o.prefix, "/a/b");
    rf_origin_clear(&o);

    assert_int_equal(rf_origin_parse("http://h/", &o, &why), 0);
    assert_string_equal(o.prefix, "");
    rf_origin_clear(&o);

    assert_int_equal(rf_origin_parse("http://[::1]:81/p", &o, &why), 0);
    assert_string_equal(o.host, "::1");
    assert_int_equal(o.port, 81);
    assert_string_equal(o.prefix, "/p");
    rf_origin_clear(&o);

    assert_int_equal(rf_origin_parse("http://[fe80::1]", &o, &why), 0);
    assert_string_equal(o.host, "fe80::1");
    assert_int_equal(o.port, 80);
    rf_origin_clear(&o);

    assert_int_equal(rf_origin_parse("https://origin.example.com", &o, &why), 0);
    assert_int_equal(o.kind, RF_ORIGIN_HTTP);
    assert_true(o.https);
    assert_string_equal(o.host, "origin.example.com");
    assert_int_equal(o.port, 443);
    assert_string_equal(o.prefix, "");
    assert_true(o.tls.verify); /* verified unless origin_tls says otherwise */
    assert_null(o.tls.ca_file);
    assert_null(o.tls.sni);
    assert_null(o.tls.client_cert);
    assert_null(o.tls.client_key);
    rf_origin_clear(&o);
    assert_false(o.https);

    assert_int_equal(rf_origin_parse("https://[::1]:8443/a/", &o, &why), 0);
    assert_true(o.https);
    assert_string_equal(o.host, "::1");
    assert_int_equal(o.port, 8443);
    assert_string_equal(o.prefix, "/a");
    rf_origin_clear(&o);

    assert_int_equal(rf_origin_parse("http://h", &o, &why), 0);
    assert_false(o.https);
    assert_false(o.tls.verify); /* no TLS, nothing to verify */
    rf_origin_clear(&o);

    assert_int_equal(rf_origin_parse("file:///srv/media", &o, &why), 0);
    assert_int_equal(o.kind, RF_ORIGIN_FILE);
    assert_string_equal(o.dir, "/srv/media");
    assert_null(o.host);
    assert_null(o.prefix);
    rf_origin_clear(&o);

    assert_int_equal(rf_origin_parse("file:///srv/media///", &o, &why), 0);
    assert_string_equal(o.dir, "/srv/media");
    rf_origin_clear(&o);

    assert_int_equal(rf_origin_parse("file:///", &o, &why), 0);
    assert_string_equal(o.dir, "/");
    rf_origin_clear(&o);

    static const struct {
        const char *url, *why;
    } bad[] = {
        {"s3://bucket", "this origin scheme is not supported yet (http://, https:// and file:// are)"},
        {"swift://c", "this origin scheme is not supported yet (http://, https:// and file:// are)"},
        {"ftp://a", "origin must be http[s]://host[:port][/prefix] or file:///dir"},
        {"example.com", "origin must be http[s]://host[:port][/prefix] or file:///dir"},
        {"", "origin must be http[s]://host[:port][/prefix] or file:///dir"},
        {"HTTPS://a", "origin must be http[s]://host[:port][/prefix] or file:///dir"},
        {"https://", "origin URL has no host"},
        {"https:///p", "origin URL has no host"},
        {"https://[::1", "origin URL has an unclosed '[' in its host"},
        {"https://h:65536", "origin URL has a bad port"},
        {"file://srv", "file origin needs an absolute path (file:///dir)"},
        {"file://", "file origin needs an absolute path (file:///dir)"},
        {"http://", "origin URL has no host"},
        {"http:///path", "origin URL has no host"},
        {"http://:80", "origin URL has no host"},
        {"http://[]", "origin URL has no host"},
        {"http://[", "origin URL has an unclosed '[' in its host"},
        {"http://[::1", "origin URL has an unclosed '[' in its host"},
        {"http://[::1]x/p", "origin URL has an unclosed '[' in its host"},
        {"http://h:0", "origin URL has a bad port"},
        {"http://h:65536", "origin URL has a bad port"},
        {"http://h:", "origin URL has a bad port"},
        {"http://h:8x/", "origin URL has a bad port"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        rf_origin_t keep = {.url = (char *)"sentinel"};
        why = NULL;
        if (rf_origin_parse(bad[i].url, &keep, &why) != -1)
            fail_msg("'%s' should not parse", bad[i].url);
        assert_non_null(why);
        if (strcmp(why, bad[i].why) != 0)
            fail_msg("'%s': why is '%s', expected '%s'", bad[i].url, why, bad[i].why);
        assert_string_equal(keep.url, "sentinel"); /* out untouched */
    }
    char long_host[400];
    memset(long_host, 'h', sizeof(long_host));
    memcpy(long_host, "http://", 7);
    long_host[sizeof(long_host) - 1] = '\0';
    assert_int_equal(rf_origin_parse(long_host, &o, &why), -1);
}

int main(void)
{
    rf_log_set_level(RF_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_minimal_and_defaults),
        cmocka_unit_test(test_full),
        cmocka_unit_test(test_vhost_cache),
        cmocka_unit_test(test_defaults_when_sections_absent),
        cmocka_unit_test(test_dims_presets_and_byoriginal),
        cmocka_unit_test(test_text_not_nul_terminated),
        cmocka_unit_test(test_load_file),
        cmocka_unit_test(test_reference_conf),
        cmocka_unit_test(test_err_unknown_keys),
        cmocka_unit_test(test_err_duplicate_keys),
        cmocka_unit_test(test_err_yaml_syntax),
        cmocka_unit_test(test_err_structure),
        cmocka_unit_test(test_err_missing_endpoint),
        cmocka_unit_test(test_err_origin),
        cmocka_unit_test(test_err_vhosts),
        cmocka_unit_test(test_err_values),
        cmocka_unit_test(test_err_ranges),
        cmocka_unit_test(test_docs_match_schema),
        cmocka_unit_test(test_err_name_in_message),
        cmocka_unit_test(test_tls),
        cmocka_unit_test(test_origin_tls),
        cmocka_unit_test(test_size_parse),
        cmocka_unit_test(test_duration_parse),
        cmocka_unit_test(test_listen_parse),
        cmocka_unit_test(test_origin_parse),
    };
    return cmocka_run_group_tests_name("rf_config", tests, NULL, NULL);
}
