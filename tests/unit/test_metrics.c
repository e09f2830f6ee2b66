/*  Unit tests for common/rf_metrics: declaration rules, series updates,
 *  exposition text (checked by exact substrings), and thread safety. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rf_metrics.h"

/* Renders the registry; fails the test on NULL. Caller frees. */
static char *s_render(rf_metrics_t *reg)
{
    size_t len = 12345;
    char *text = rf_metrics_render(reg, &len);
    assert_non_null(text);
    assert_int_equal(len, strlen(text));
    return text;
}

/* Asserts `needle` occurs in `text`, printing both on failure. */
static void s_assert_has(const char *text, const char *needle)
{
    /* NULL-tolerant: the optimiser cannot see that cmocka's asserts do not return */
    if (!text || !strstr(text, needle))
        fail_msg("missing:\n%s\n--- in ---\n%s", needle, text ? text : "(null)");
}

static void s_assert_lacks(const char *text, const char *needle)
{
    if (!text || strstr(text, needle))
        fail_msg("unexpected:\n%s\n--- in ---\n%s", needle, text ? text : "(null)");
}

static void test_new_destroy(void **state)
{
    (void)state;
    rf_metrics_t *reg = rf_metrics_new();
    assert_non_null(reg);
    char *text = s_render(reg);
    assert_string_equal(text, "");
    free(text);
    rf_metrics_destroy(&reg);
    assert_null(reg);
    rf_metrics_destroy(&reg); /* twice is safe */
    rf_metrics_destroy(NULL);
}

static void test_declare_each_type(void **state)
{
    (void)state;
    rf_metrics_t *reg = rf_metrics_new();
    rf_metric_t *c = rf_metrics_declare(reg, RF_METRIC_COUNTER, "jobs_total", "Jobs done.", NULL, NULL, 0);
    rf_metric_t *g = rf_metrics_declare(reg, RF_METRIC_GAUGE, "queue_depth", "Queued jobs.", "", NULL, 0);
    rf_metric_t *h = rf_metrics_declare(reg, RF_METRIC_HISTOGRAM, "job_seconds", "Job latency.", NULL,
                                        rf_metrics_latency_buckets, rf_metrics_latency_nbuckets);
    assert_non_null(c);
    assert_non_null(g);
    assert_non_null(h);

    char *text = s_render(reg);
    /* unlabelled families are exported at 0 before any update */
    s_assert_has(text, "# HELP jobs_total Jobs done.\n# TYPE jobs_total counter\njobs_total 0\n");
    s_assert_has(text, "# HELP queue_depth Queued jobs.\n# TYPE queue_depth gauge\nqueue_depth 0\n");
    s_assert_has(text, "# HELP job_seconds Job latency.\n# TYPE job_seconds histogram\n"
                       "job_seconds_bucket{le=\"0.0005\"} 0\n"
                       "job_seconds_bucket{le=\"0.001\"} 0\n"
                       "job_seconds_bucket{le=\"0.0025\"} 0\n");
    s_assert_has(text, "job_seconds_bucket{le=\"30\"} 0\n"
                       "job_seconds_bucket{le=\"+Inf\"} 0\n"
                       "job_seconds_sum 0\n"
                       "job_seconds_count 0\n");
    /* declaration order */
    assert_true(strstr(text, "jobs_total") < strstr(text, "queue_depth"));
    assert_true(strstr(text, "queue_depth") < strstr(text, "job_seconds"));
    free(text);

    rf_metric_add(c, NULL, 3);
    rf_metric_add(c, NULL, 0.5);
    rf_metric_set(g, NULL, 7);
    rf_metric_gauge_add(g, NULL, -2);
    rf_metric_observe(h, NULL, 0.003);
    assert_true(rf_metric_value(c, NULL) == 3.5);
    assert_true(rf_metric_value(g, NULL) == 5);
    assert_true(rf_metric_value(h, NULL) == 1); /* histograms report their count */

    text = s_render(reg);
    s_assert_has(text, "\njobs_total 3.5\n");
    s_assert_has(text, "\nqueue_depth 5\n");
    s_assert_has(text, "job_seconds_bucket{le=\"0.0025\"} 0\njob_seconds_bucket{le=\"0.005\"} 1\n");
    s_assert_has(text, "job_seconds_bucket{le=\"+Inf\"} 1\njob_seconds_sum 0.003\njob_seconds_count 1\n");
    free(text);
    rf_metrics_destroy(&reg);
}

static void test_latency_buckets(void **state)
{
    (void)state;
    static const double want[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
    assert_int_equal(rf_metrics_latency_nbuckets, 15);
    for (size_t i = 0; i < 15; i++)
        assert_true(rf_metrics_latency_buckets[i] == want[i]);
}

static void test_labelled_series(void **state)
{
    (void)state;
    rf_metrics_t *reg = rf_metrics_new();
    rf_metric_t *c = rf_metrics_declare(reg, RF_METRIC_COUNTER, "http_requests_total", "Requests.", "method, code",
                                        NULL, 0); /* spaces around names are ignored */
    assert_non_null(c);

    char *text = s_render(reg);
    /* a labelled family with no series yet has only its metadata */
    s_assert_has(text, "# TYPE http_requests_total counter\n");
    s_assert_lacks(text, "http_requests_total{");
    free(text);

    const char *get200[] = {"GET", "200"};
    const char *get404[] = {"GET", "404"};
    const char *post200[] = {"POST", "200"};
    rf_metric_add(c, get200, 1);
    rf_metric_add(c, get200, 1);
    rf_metric_add(c, get404, 1);
    rf_metric_add(c, post200, 4);
    rf_metric_add(c, post200, -1);  /* counters never go down */
    rf_metric_add(c, post200, NAN); /* nor become NaN */
    assert_true(rf_metric_value(c, get200) == 2);
    assert_true(rf_metric_value(c, get404) == 1);
    assert_true(rf_metric_value(c, post200) == 4);
    const char *missing[] = {"PUT", "500"};
    assert_true(rf_metric_value(c, missing) == 0);

    /* wrong-type updates are ignored */
    rf_metric_set(c, get200, 100);
    rf_metric_observe(c, get200, 100);
    assert_true(rf_metric_value(c, get200) == 2);
    rf_metric_add(NULL, NULL, 1); /* no crash */

    text = s_render(reg);
    /* series appear in creation order, labels in declaration order */
    s_assert_has(text, "http_requests_total{method=\"GET\",code=\"200\"} 2\n"
                       "http_requests_total{method=\"GET\",code=\"404\"} 1\n"
                       "http_requests_total{method=\"POST\",code=\"200\"} 4\n");
    s_assert_lacks(text, "PUT"); /* rf_metric_value does not create series */
    free(text);

    /* NULL values / NULL entries mean "" */
    rf_metric_t *g = rf_metrics_declare(reg, RF_METRIC_GAUGE, "temp", "T.", "zone", NULL, 0);
    const char *nullv[] = {NULL};
    rf_metric_set(g, NULL, 1);
    rf_metric_gauge_add(g, nullv, 1);
    assert_true(rf_metric_value(g, NULL) == 2);
    text = s_render(reg);
    s_assert_has(text, "temp{zone=\"\"} 2\n");
    free(text);
    rf_metrics_destroy(&reg);
}

static void test_escaping(void **state)
{
    (void)state;
    rf_metrics_t *reg = rf_metrics_new();
    rf_metric_t *g =
        rf_metrics_declare(reg, RF_METRIC_GAUGE, "esc", "Back\\slash \"quoted\"\nsecond line", "path", NULL, 0);
    assert_non_null(g);
    const char *v[] = {"a\"b\\c\nd"};
    rf_metric_set(g, v, 1);
    assert_true(rf_metric_value(g, v) == 1);
    char *text = s_render(reg);
    /* HELP escapes backslash and newline only; label values also quotes */
    s_assert_has(text, "# HELP esc Back\\\\slash \"quoted\"\\nsecond line\n");
    s_assert_has(text, "esc{path=\"a\\\"b\\\\c\\nd\"} 1\n");
    free(text);
    rf_metrics_destroy(&reg);
}

static void test_histogram_buckets(void **state)
{
    (void)state;
    rf_metrics_t *reg = rf_metrics_new();
    const double bounds[] = {1, 2, 5};
    rf_metric_t *h = rf_metrics_declare(reg, RF_METRIC_HISTOGRAM, "req_seconds", "Latency.", "route", bounds, 3);
    assert_non_null(h);
    const char *a[] = {"a"};
    const char *b[] = {"b"};
    /* 1 and 5 land in their own bucket: le is inclusive */
    const double obs[] = {0.5, 1, 1.5, 3, 10, 5};
    for (size_t i = 0; i < sizeof obs / sizeof obs[0]; i++)
        rf_metric_observe(h, a, obs[i]);
    rf_metric_observe(h, a, NAN); /* ignored */
    rf_metric_observe(h, b, -1);  /* below the first bound */
    rf_metric_set(h, a, 1);       /* wrong type, ignored */
    assert_true(rf_metric_value(h, a) == 6);
    assert_true(rf_metric_value(h, b) == 1);

    char *text = s_render(reg);
    s_assert_has(text, "# HELP req_seconds Latency.\n"
                       "# TYPE req_seconds histogram\n"
                       "req_seconds_bucket{route=\"a\",le=\"1\"} 2\n"
                       "req_seconds_bucket{route=\"a\",le=\"2\"} 3\n"
                       "req_seconds_bucket{route=\"a\",le=\"5\"} 5\n"
                       "req_seconds_bucket{route=\"a\",le=\"+Inf\"} 6\n"
                       "req_seconds_sum{route=\"a\"} 21\n"
                       "req_seconds_count{route=\"a\"} 6\n"
                       "req_seconds_bucket{route=\"b\",le=\"1\"} 1\n"
                       "req_seconds_bucket{route=\"b\",le=\"2\"} 1\n"
                       "req_seconds_bucket{route=\"b\",le=\"5\"} 1\n"
                       "req_seconds_bucket{route=\"b\",le=\"+Inf\"} 1\n"
                       "req_seconds_sum{route=\"b\"} -1\n"
                       "req_seconds_count{route=\"b\"} 1\n");
    free(text);

    /* no bounds at all: just the +Inf bucket */
    rf_metric_t *h0 = rf_metrics_declare(reg, RF_METRIC_HISTOGRAM, "sizes_bytes", "Sizes.", NULL, NULL, 0);
    assert_non_null(h0);
    rf_metric_observe(h0, NULL, 1e6);
    text = s_render(reg);
    s_assert_has(text, "sizes_bytes_bucket{le=\"+Inf\"} 1\nsizes_bytes_sum 1000000\nsizes_bytes_count 1\n");
    free(text);
    rf_metrics_destroy(&reg);
}

static void test_number_format(void **state)
{
    (void)state;
    rf_metrics_t *reg = rf_metrics_new();
    rf_metric_t *g = rf_metrics_declare(reg, RF_METRIC_GAUGE, "num", "Numbers.", "k", NULL, 0);
    static const struct {
        const char *k;
        double v;
        const char *want;
    } cases[] = {
        {"int", 42, "num{k=\"int\"} 42\n"},
        {"neg", -3, "num{k=\"neg\"} -3\n"},
        {"negzero", -0.0, "num{k=\"negzero\"} 0\n"},
        {"frac", 0.1, "num{k=\"frac\"} 0.1\n"},
        {"third", 1.0 / 3, "num{k=\"third\"} 0.3333333333333333\n"},
        {"big", 123456789012345, "num{k=\"big\"} 123456789012345\n"},
        {"huge", 1e20, "num{k=\"huge\"} 1e+20\n"},
        {"tiny", 1e-7, "num{k=\"tiny\"} 1e-07\n"},
        {"inf", INFINITY, "num{k=\"inf\"} +Inf\n"},
        {"ninf", -INFINITY, "num{k=\"ninf\"} -Inf\n"},
        {"nan", NAN, "num{k=\"nan\"} NaN\n"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *v[] = {cases[i].k};
        rf_metric_set(g, v, cases[i].v);
    }
    char *text = s_render(reg);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        s_assert_has(text, cases[i].want);
    free(text);
    rf_metrics_destroy(&reg);
}

static void test_rejections(void **state)
{
    (void)state;
    rf_metrics_t *reg = rf_metrics_new();
    const char *bad_names[] = {"", "1abc", "a-b", "a b", "a.b", "caf\xc3\xa9", "x{y}"};
    for (size_t i = 0; i < sizeof bad_names / sizeof bad_names[0]; i++)
        assert_null(rf_metrics_declare(reg, RF_METRIC_GAUGE, bad_names[i], "h", NULL, NULL, 0));
    assert_null(rf_metrics_declare(reg, RF_METRIC_GAUGE, NULL, "h", NULL, NULL, 0));
    assert_null(rf_metrics_declare(NULL, RF_METRIC_GAUGE, "ok", "h", NULL, NULL, 0));
    assert_null(rf_metrics_declare(reg, (rf_metric_type_t)42, "ok", "h", NULL, NULL, 0));
    assert_non_null(rf_metrics_declare(reg, RF_METRIC_GAUGE, "_ok:sub_1", "h", NULL, NULL, 0));
    assert_non_null(rf_metrics_declare(reg, RF_METRIC_GAUGE, "ns:name", "h", NULL, NULL, 0));

    /* duplicate, also across types */
    assert_non_null(rf_metrics_declare(reg, RF_METRIC_COUNTER, "dup_total", "h", NULL, NULL, 0));
    assert_null(rf_metrics_declare(reg, RF_METRIC_COUNTER, "dup_total", "h", NULL, NULL, 0));
    assert_null(rf_metrics_declare(reg, RF_METRIC_GAUGE, "dup_total", "h", "a", NULL, 0));

    /* names clashing with a histogram's samples, either way round */
    assert_non_null(rf_metrics_declare(reg, RF_METRIC_HISTOGRAM, "lat", "h", NULL, NULL, 0));
    assert_null(rf_metrics_declare(reg, RF_METRIC_COUNTER, "lat_count", "h", NULL, NULL, 0));
    assert_null(rf_metrics_declare(reg, RF_METRIC_GAUGE, "lat_bucket", "h", NULL, NULL, 0));
    assert_null(rf_metrics_declare(reg, RF_METRIC_GAUGE, "lat_sum", "h", NULL, NULL, 0));
    assert_non_null(rf_metrics_declare(reg, RF_METRIC_GAUGE, "lat_max", "h", NULL, NULL, 0));
    assert_non_null(rf_metrics_declare(reg, RF_METRIC_GAUGE, "size_sum", "h", NULL, NULL, 0));
    assert_null(rf_metrics_declare(reg, RF_METRIC_HISTOGRAM, "size", "h", NULL, NULL, 0));

    /* label lists */
    const char *bad_labels[] = {"a,a", "1a", "a-b", "__name", "a,,b", ",", "a,", " ", "a,b,c,d,e"};
    for (size_t i = 0; i < sizeof bad_labels / sizeof bad_labels[0]; i++)
        assert_null(rf_metrics_declare(reg, RF_METRIC_GAUGE, "lbl", "h", bad_labels[i], NULL, 0));
    assert_null(rf_metrics_declare(reg, RF_METRIC_HISTOGRAM, "lbl", "h", "le", NULL, 0));
    assert_non_null(rf_metrics_declare(reg, RF_METRIC_GAUGE, "lbl", "h", "le,a,b,_c", NULL, 0));

    /* histogram bounds */
    const double dec[] = {1, 0.5};
    const double eq[] = {1, 1};
    const double nan_b[] = {1, NAN};
    const double inf_b[] = {1, INFINITY};
    const double good[] = {-1, 0, 1};
    assert_null(rf_metrics_declare(reg, RF_METRIC_HISTOGRAM, "hb", "h", NULL, dec, 2));
    assert_null(rf_metrics_declare(reg, RF_METRIC_HISTOGRAM, "hb", "h", NULL, eq, 2));
    assert_null(rf_metrics_declare(reg, RF_METRIC_HISTOGRAM, "hb", "h", NULL, nan_b, 2));
    assert_null(rf_metrics_declare(reg, RF_METRIC_HISTOGRAM, "hb", "h", NULL, inf_b, 2));
    assert_null(rf_metrics_declare(reg, RF_METRIC_HISTOGRAM, "hb", "h", NULL, NULL, 2));
    assert_null(rf_metrics_declare(reg, RF_METRIC_GAUGE, "hb", "h", NULL, good, 3)); /* bounds on a gauge */
    assert_non_null(rf_metrics_declare(reg, RF_METRIC_HISTOGRAM, "hb", "h", NULL, good, 3));

    /* rejected declarations leave no trace in the output */
    char *text = s_render(reg);
    s_assert_lacks(text, "# TYPE lat_count");
    s_assert_lacks(text, "# HELP size ");
    s_assert_has(text, "hb_bucket{le=\"-1\"} 0\nhb_bucket{le=\"0\"} 0\nhb_bucket{le=\"1\"} 0\n");
    free(text);
    rf_metrics_destroy(&reg);
}

typedef struct {
    rf_metric_t *counter;
    rf_metric_t *hist;
    const char *worker;
} s_thread_arg_t;

#define S_ITERATIONS 100000

static void *s_adder(void *arg)
{
    s_thread_arg_t *a = arg;
    const char *shared[] = {"shared"};
    const char *own[] = {a->worker};
    for (int i = 0; i < S_ITERATIONS; i++) {
        rf_metric_add(a->counter, shared, 1);
        rf_metric_add(a->counter, own, 1); /* creates series concurrently */
        if (i % 16 == 0)
            rf_metric_observe(a->hist, shared, 0.01);
    }
    return NULL;
}

static void test_thread_safety(void **state)
{
    (void)state;
    rf_metrics_t *reg = rf_metrics_new();
    rf_metric_t *c = rf_metrics_declare(reg, RF_METRIC_COUNTER, "ops_total", "Ops.", "who", NULL, 0);
    rf_metric_t *h = rf_metrics_declare(reg, RF_METRIC_HISTOGRAM, "op_seconds", "Op latency.", "who",
                                        rf_metrics_latency_buckets, rf_metrics_latency_nbuckets);
    s_thread_arg_t args[2] = {{c, h, "t0"}, {c, h, "t1"}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&th[i], NULL, s_adder, &args[i]), 0);
    /* renders race the writers; they must neither crash nor deadlock */
    for (int i = 0; i < 20; i++) {
        char *text = s_render(reg);
        free(text);
    }
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);

    const char *shared[] = {"shared"};
    const char *t0[] = {"t0"};
    const char *t1[] = {"t1"};
    assert_true(rf_metric_value(c, shared) == 2 * S_ITERATIONS);
    assert_true(rf_metric_value(c, t0) == S_ITERATIONS);
    assert_true(rf_metric_value(c, t1) == S_ITERATIONS);
    assert_true(rf_metric_value(h, shared) == 2 * ((S_ITERATIONS + 15) / 16));
    char *text = s_render(reg);
    s_assert_has(text, "ops_total{who=\"shared\"} 200000\n");
    s_assert_has(text, "op_seconds_bucket{who=\"shared\",le=\"0.005\"} 0\n"
                       "op_seconds_bucket{who=\"shared\",le=\"0.01\"} 12500\n");
    s_assert_has(text, "op_seconds_count{who=\"shared\"} 12500\n");
    free(text);
    rf_metrics_destroy(&reg);
}

typedef struct {
    rf_metric_t *gauge;
    int calls;
} s_collect_state_t;

static void s_collect(rf_metrics_t *reg, void *arg)
{
    (void)reg;
    s_collect_state_t *st = arg;
    st->calls++;
    rf_metric_set(st->gauge, NULL, st->calls * 10);
}

static void test_collectors(void **state)
{
    (void)state;
    rf_metrics_t *reg = rf_metrics_new();
    s_collect_state_t st = {rf_metrics_declare(reg, RF_METRIC_GAUGE, "refreshed", "R.", NULL, NULL, 0), 0};
    rf_metrics_on_collect(reg, s_collect, &st);
    rf_metrics_on_collect(reg, NULL, NULL); /* ignored */
    char *text = s_render(reg);
    s_assert_has(text, "\nrefreshed 10\n");
    free(text);
    text = s_render(reg);
    s_assert_has(text, "\nrefreshed 20\n");
    free(text);
    assert_int_equal(st.calls, 2);

    /* at most 8 collectors; extra ones are dropped, not a crash */
    s_collect_state_t more = {rf_metrics_declare(reg, RF_METRIC_GAUGE, "more", "M.", NULL, NULL, 0), 0};
    for (int i = 0; i < 10; i++)
        rf_metrics_on_collect(reg, s_collect, &more);
    free(s_render(reg));
    assert_int_equal(more.calls, 7);
    rf_metrics_destroy(&reg);
}

/* Returns the value of the unlabelled sample `name` in text. */
static double s_sample(const char *text, const char *name)
{
    char key[128];
    snprintf(key, sizeof key, "\n%s ", name);
    const char *p = strstr(text, key);
    if (!p)
        fail_msg("no sample %s in\n%s", name, text);
    return strtod(p + strlen(key), NULL);
}

static void test_process_collector(void **state)
{
    (void)state;
    rf_metrics_t *reg = rf_metrics_new();
    assert_int_equal(rf_metrics_add_process_collector(reg), 0);
    assert_int_equal(rf_metrics_add_process_collector(reg), -1);
    assert_int_equal(rf_metrics_add_process_collector(NULL), -1);

    /* burn a little CPU so the counter has something to show */
    volatile double x = 0;
    for (long i = 0; i < 20000000; i++)
        x += (double)i;
    (void)x;

    char *text = s_render(reg);
    s_assert_has(text, "# TYPE refract_process_resident_memory_bytes gauge\n");
    s_assert_has(text, "# TYPE refract_process_start_time_seconds gauge\n");
    s_assert_has(text, "# TYPE refract_process_cpu_seconds_total counter\n");
    double rss = s_sample(text, "refract_process_resident_memory_bytes");
    double start = s_sample(text, "refract_process_start_time_seconds");
    double cpu = s_sample(text, "refract_process_cpu_seconds_total");
    double now = (double)time(NULL);
    assert_true(rss > 1024 * 1024); /* any process with libc mapped */
    assert_true(start <= now + 2);
    assert_true(start > now - 600); /* this test binary started moments ago */
    assert_true(cpu > 0);
    free(text);
    rf_metrics_destroy(&reg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_destroy),       cmocka_unit_test(test_declare_each_type),
        cmocka_unit_test(test_latency_buckets),   cmocka_unit_test(test_labelled_series),
        cmocka_unit_test(test_escaping),          cmocka_unit_test(test_histogram_buckets),
        cmocka_unit_test(test_number_format),     cmocka_unit_test(test_rejections),
        cmocka_unit_test(test_thread_safety),     cmocka_unit_test(test_collectors),
        cmocka_unit_test(test_process_collector),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
