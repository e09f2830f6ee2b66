/*  Unit tests for common/rf_httpd, driven by a plain blocking socket
 *  client over loopback. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "rf_httpd.h"

typedef struct {
    rf_metrics_t *metrics;
    rf_httpd_t *httpd;
    _Atomic int healthy; /* shared with the httpd thread */
    _Atomic int health_calls;
} s_fixture_t;

static int s_health(void *arg, char *buf, size_t len)
{
    s_fixture_t *f = arg;
    f->health_calls++;
    if (f->healthy)
        return 0;
    snprintf(buf, len, "queue stalled\nfor 30s"); /* the newline must not leak into the response */
    return -1;
}

static int s_setup(void **state)
{
    s_fixture_t *f = calloc(1, sizeof *f);
    f->healthy = 1;
    f->metrics = rf_metrics_new();
    rf_metric_t *c = rf_metrics_declare(f->metrics, RF_METRIC_COUNTER, "jobs_total", "Jobs.", "kind", NULL, 0);
    const char *v[] = {"resize"};
    rf_metric_add(c, v, 7);
    char *err = NULL;
    f->httpd = rf_httpd_new("127.0.0.1", 0, f->metrics, s_health, f, &err);
    if (!f->httpd)
        fail_msg("rf_httpd_new: %s", err ? err : "?");
    *state = f;
    return 0;
}

static int s_teardown(void **state)
{
    s_fixture_t *f = *state;
    rf_httpd_destroy(&f->httpd);
    rf_metrics_destroy(&f->metrics);
    free(f);
    return 0;
}

static double s_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Connects to 127.0.0.1:port with a 10 s receive timeout so a broken
 * server fails the test instead of hanging it. Returns the fd. */
static int s_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    return fd;
}

static void s_send(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
        assert_true(n > 0);
        data += n;
        len -= (size_t)n;
    }
}

/* Reads until EOF. Returns the malloc'd, NUL-terminated bytes. */
static char *s_read_all(int fd)
{
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (len + 1 == cap)
            buf = realloc(buf, cap *= 2);
        ssize_t n = recv(fd, buf + len, cap - len - 1, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            fail_msg("recv: %s", strerror(errno));
        if (n == 0)
            break;
        len += (size_t)n;
    }
    buf[len] = '\0';
    return buf;
}

/* Sends one raw request and returns the whole response (caller frees). */
static char *s_request(int port, const char *req)
{
    int fd = s_connect(port);
    s_send(fd, req, strlen(req));
    char *resp = s_read_all(fd);
    close(fd);
    return resp;
}

static int s_status(const char *resp)
{
    int status = 0;
    if (sscanf(resp, "HTTP/1.1 %d ", &status) != 1)
        fail_msg("bad status line in:\n%s", resp);
    return status;
}

/* Returns the body (after the blank line) of a response. */
static const char *s_body(const char *resp)
{
    const char *p = strstr(resp, "\r\n\r\n");
    assert_non_null(p);
    return p + 4;
}

static void s_assert_has(const char *text, const char *needle)
{
    /* NULL-tolerant: the optimiser cannot see that cmocka's asserts do not return */
    if (!text || !strstr(text, needle))
        fail_msg("missing:\n%s\n--- in ---\n%s", needle, text ? text : "(null)");
}

static void test_metrics(void **state)
{
    s_fixture_t *f = *state;
    int port = rf_httpd_port(f->httpd);
    assert_true(port > 0);
    char *resp = s_request(port, "GET /metrics HTTP/1.1\r\nHost: x\r\nUser-Agent: t\r\n\r\n");
    assert_int_equal(s_status(resp), 200);
    s_assert_has(resp, "Content-Type: text/plain; version=0.0.4");
    s_assert_has(resp, "Connection: close\r\n");
    const char *body = s_body(resp);
    s_assert_has(body, "# TYPE jobs_total counter\njobs_total{kind=\"resize\"} 7\n");
    char cl[64];
    snprintf(cl, sizeof cl, "Content-Length: %zu\r\n", strlen(body));
    s_assert_has(resp, cl);
    free(resp);

    /* query strings and HTTP/1.0 are fine; bare LF line ends too */
    resp = s_request(port, "GET /metrics?name[]=x HTTP/1.0\n\n");
    assert_int_equal(s_status(resp), 200);
    s_assert_has(s_body(resp), "jobs_total{kind=\"resize\"} 7\n");
    free(resp);
}

static void test_head(void **state)
{
    s_fixture_t *f = *state;
    char *resp = s_request(rf_httpd_port(f->httpd), "HEAD /metrics HTTP/1.1\r\n\r\n");
    assert_int_equal(s_status(resp), 200);
    s_assert_has(resp, "Content-Length: ");
    assert_string_equal(s_body(resp), ""); /* headers only */
    free(resp);
}

static void test_healthz(void **state)
{
    s_fixture_t *f = *state;
    int port = rf_httpd_port(f->httpd);
    char *resp = s_request(port, "GET /healthz HTTP/1.1\r\n\r\n");
    assert_int_equal(s_status(resp), 200);
    assert_string_equal(s_body(resp), "ok\n");
    free(resp);

    f->healthy = 0;
    resp = s_request(port, "GET /healthz HTTP/1.1\r\n\r\n");
    assert_int_equal(s_status(resp), 503);
    assert_string_equal(s_body(resp), "queue stalled for 30s\n");
    free(resp);

    f->healthy = 1;
    resp = s_request(port, "GET /healthz HTTP/1.1\r\n\r\n");
    assert_int_equal(s_status(resp), 200);
    free(resp);
    assert_int_equal(f->health_calls, 3);
}

static void test_healthz_without_callback(void **state)
{
    (void)state;
    rf_metrics_t *m = rf_metrics_new();
    rf_httpd_t *h = rf_httpd_new(NULL, 0, m, NULL, NULL, NULL); /* all interfaces, no err wanted */
    assert_non_null(h);
    char *resp = s_request(rf_httpd_port(h), "GET /healthz HTTP/1.1\r\n\r\n");
    assert_int_equal(s_status(resp), 200);
    assert_string_equal(s_body(resp), "ok\n");
    free(resp);
    /* an empty registry is still a valid (empty) exposition */
    resp = s_request(rf_httpd_port(h), "GET /metrics HTTP/1.1\r\n\r\n");
    assert_int_equal(s_status(resp), 200);
    s_assert_has(resp, "Content-Length: 0\r\n");
    free(resp);
    rf_httpd_destroy(&h);
    rf_metrics_destroy(&m);
}

static void test_errors(void **state)
{
    s_fixture_t *f = *state;
    int port = rf_httpd_port(f->httpd);
    char *resp = s_request(port, "GET /nope HTTP/1.1\r\n\r\n");
    assert_int_equal(s_status(resp), 404);
    free(resp);
    resp = s_request(port, "GET /metricsx HTTP/1.1\r\n\r\n");
    assert_int_equal(s_status(resp), 404);
    free(resp);

    /* a body the server never reads must not turn into a RST that eats the answer */
    resp = s_request(port, "POST /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello");
    assert_int_equal(s_status(resp), 405);
    s_assert_has(resp, "Allow: GET, HEAD\r\n");
    free(resp);

    resp = s_request(port, "garbage\r\n\r\n");
    assert_int_equal(s_status(resp), 400);
    free(resp);
    resp = s_request(port, "GET /metrics SPDY/3\r\n\r\n");
    assert_int_equal(s_status(resp), 400);
    free(resp);
}

static void test_header_too_large(void **state)
{
    s_fixture_t *f = *state;
    size_t n = 9000;
    char *req = malloc(n + 64);
    int off = snprintf(req, n + 64, "GET /metrics HTTP/1.1\r\nX-Pad: ");
    memset(req + off, 'a', n);
    strcpy(req + off + n, "\r\n\r\n");
    char *resp = s_request(rf_httpd_port(f->httpd), req);
    assert_int_equal(s_status(resp), 431);
    free(resp);
    free(req);
}

static void test_split_request(void **state)
{
    s_fixture_t *f = *state;
    int fd = s_connect(rf_httpd_port(f->httpd));
    const char *parts[] = {"GET /hea", "lthz HTTP/1.1\r", "\nHost: x\r\n", "\r", "\n"};
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        s_send(fd, parts[i], strlen(parts[i]));
        usleep(20000);
    }
    char *resp = s_read_all(fd);
    close(fd);
    assert_int_equal(s_status(resp), 200);
    free(resp);
}

static void s_slow_collect(rf_metrics_t *reg, void *arg)
{
    (void)reg;
    (void)arg;
    usleep(300000);
}

static void test_client_hangup(void **state)
{
    s_fixture_t *f = *state;
    /* The render stalls long enough for the client to be gone before the
     * server writes a byte. The client half-closes first so the server
     * socket is in CLOSE_WAIT when the RST lands: Linux then fails the
     * next send with EPIPE, which raises SIGPIPE unless MSG_NOSIGNAL (or
     * the thread's blocked signal mask) keeps it from killing us. */
    rf_metrics_on_collect(f->metrics, s_slow_collect, NULL);
    int port = rf_httpd_port(f->httpd);
    int fd = s_connect(port);
    const char *req = "GET /metrics HTTP/1.1\r\n\r\n";
    s_send(fd, req, strlen(req));
    shutdown(fd, SHUT_WR);
    usleep(100000);
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd);
    /* still alive (no SIGPIPE) and still serving */
    char *resp = s_request(port, "GET /healthz HTTP/1.1\r\n\r\n");
    assert_int_equal(s_status(resp), 200);
    free(resp);
}

static void test_idle_client_dropped(void **state)
{
    s_fixture_t *f = *state;
    int port = rf_httpd_port(f->httpd);
    int fd = s_connect(port);
    s_send(fd, "GET /met", 8); /* never finishes the head */
    double t0 = s_now();
    char *resp = s_read_all(fd); /* EOF when the server gives up */
    double waited = s_now() - t0;
    close(fd);
    assert_string_equal(resp, "");
    free(resp);
    if (waited < 4.5 || waited > 7.0)
        fail_msg("idle client dropped after %.2f s, want ~5 s", waited);
    resp = s_request(port, "GET /healthz HTTP/1.1\r\n\r\n");
    assert_int_equal(s_status(resp), 200);
    free(resp);
}

static void test_destroy_interrupts_connection(void **state)
{
    (void)state;
    rf_metrics_t *m = rf_metrics_new();
    rf_httpd_t *h = rf_httpd_new("127.0.0.1", 0, m, NULL, NULL, NULL);
    assert_non_null(h);
    int fd = s_connect(rf_httpd_port(h));
    usleep(100000); /* let the thread accept and start waiting for the head */
    double t0 = s_now();
    rf_httpd_destroy(&h);
    double took = s_now() - t0;
    assert_null(h);
    rf_httpd_destroy(&h); /* twice is safe */
    rf_httpd_destroy(NULL);
    if (took > 1.0)
        fail_msg("destroy waited %.2f s for an idle client", took);
    close(fd);
    rf_metrics_destroy(&m);
}

static void test_bind_errors(void **state)
{
    s_fixture_t *f = *state;
    char *err = NULL;
    rf_httpd_t *h = rf_httpd_new("127.0.0.1", rf_httpd_port(f->httpd), f->metrics, NULL, NULL, &err);
    assert_null(h);
    assert_non_null(err);
    s_assert_has(err, "in use");
    free(err);

    err = NULL;
    assert_null(rf_httpd_new("127.0.0.1", 70000, f->metrics, NULL, NULL, &err));
    assert_non_null(err);
    free(err);

    err = NULL;
    assert_null(rf_httpd_new("127.0.0.1", 0, NULL, NULL, NULL, &err));
    assert_non_null(err);
    free(err);

    err = NULL;
    /* TEST-NET-1: numeric (no DNS lookup) but not an address of this host */
    assert_null(rf_httpd_new("192.0.2.1", 0, f->metrics, NULL, NULL, &err));
    assert_non_null(err);
    free(err);

    assert_int_equal(rf_httpd_port(NULL), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_metrics, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_head, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_healthz, s_setup, s_teardown),
        cmocka_unit_test(test_healthz_without_callback),
        cmocka_unit_test_setup_teardown(test_errors, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_header_too_large, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_split_request, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_client_hangup, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_idle_client_dropped, s_setup, s_teardown),
        cmocka_unit_test(test_destroy_interrupts_connection),
        cmocka_unit_test_setup_teardown(test_bind_errors, s_setup, s_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
