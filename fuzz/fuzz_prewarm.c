/*  libFuzzer target for services/prewarm/pw_msg.c: the pre-warm message
 *  parser. Every byte comes from a Kafka topic, and what it accepts goes on
 *  the wire to the gateway as a request line and header lines, so it must
 *  never let through a byte that could split or redirect the request.
 *
 *  The whole input is one message. Besides memory safety (and leaks) it
 *  abort()s when:
 *    - the result is neither 0 nor -1, a refusal has no reason, or the id
 *      is missing, longer than PW_ID_MAX or not printable ASCII;
 *    - an accepted message has no URL, host or path; the URL is not
 *      http(s):// or longer than PW_URL_MAX; the host is empty, longer than
 *      PW_HOST_MAX or has a byte outside [A-Za-z0-9.-_:[]]; the path does
 *      not start with '/', has a space, control, non-ASCII or '#' byte, or
 *      is not what the URL says (its path and query, fragment dropped);
 *    - a header line is not "token: value" with a value free of control
 *      bytes, is longer than its bounds, names a refused header, or there
 *      are more than PW_HEADERS_MAX; the priority is out of range;
 *    - a plain-text message's host is not the URL's authority;
 *    - parsing again (with a reason buffer of 8 bytes) gives another
 *      answer, or pw_msg_clear does not leave the message zeroed. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "pw.h"
#include "rf_log.h"

#define FALLBACK_ID "refract-prewarm:3:181"

static bool s_in(unsigned char c, const char *set)
{
    return c != 0 && strchr(set, c) != NULL;
}

static bool s_alnum(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static void s_check_id(const char *id)
{
    if (id == NULL)
        abort();
    size_t n = strlen(id);
    if (n == 0 || n > PW_ID_MAX)
        abort();
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)id[i] < 0x20 || (unsigned char)id[i] >= 0x7f)
            abort();
}

static void s_check_host(const char *h)
{
    if (h == NULL)
        abort();
    size_t n = strlen(h);
    if (n == 0 || n > PW_HOST_MAX)
        abort();
    for (size_t i = 0; i < n; i++)
        if (!s_alnum((unsigned char)h[i]) && !s_in((unsigned char)h[i], ".-_:[]"))
            abort();
}

/* The URL's scheme length ("http://" or "https://"), aborting otherwise. */
static size_t s_scheme(const char *url)
{
    if (strncasecmp(url, "http://", 7) == 0)
        return 7;
    if (strncasecmp(url, "https://", 8) == 0)
        return 8;
    abort();
}

/* The path must be the URL's after its authority, up to a '#', with a '/'
 * put in front when the URL had none ("http://h?q" -> "/?q"). */
static void s_check_path(const char *url, const char *path, const char *host, bool host_from_url)
{
    if (path == NULL || path[0] != '/')
        abort();
    for (const char *p = path; *p; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f || *p == '#')
            abort();
    size_t skip = s_scheme(url);
    const char *a = url + skip;
    size_t al = strcspn(a, "/?#");
    if (host_from_url && (strlen(host) != al || memcmp(host, a, al) != 0))
        abort();
    const char *rest = a + al;
    size_t rl = strcspn(rest, "#");
    if (rest[0] == '/') {
        if (strlen(path) != rl || memcmp(path, rest, rl) != 0)
            abort();
    } else if (strlen(path) != rl + 1 || memcmp(path + 1, rest, rl) != 0) {
        abort();
    }
}

static void s_check_header(const char *line)
{
    static const char *const refused[] = {
        "host",   "content-length", "transfer-encoding", "connection",         "upgrade", "te", "keep-alive",
        "expect", "trailer",        "proxy-connection",  "x-refract-priority", NULL};
    if (line == NULL)
        abort();
    const char *colon = strchr(line, ':');
    if (colon == NULL || colon == line || (size_t)(colon - line) > PW_HEADER_NAME_MAX || colon[1] != ' ')
        abort();
    size_t nl = (size_t)(colon - line);
    for (size_t i = 0; i < nl; i++)
        if (!s_alnum((unsigned char)line[i]) && !s_in((unsigned char)line[i], "!#$%&'*+-.^_`|~"))
            abort();
    for (int i = 0; refused[i] != NULL; i++)
        if (strlen(refused[i]) == nl && strncasecmp(line, refused[i], nl) == 0)
            abort();
    const char *v = colon + 2;
    if (strlen(v) > PW_HEADER_VALUE_MAX)
        abort();
    for (; *v; v++)
        if (((unsigned char)*v < 0x20 && *v != '\t') || *v == 0x7f)
            abort();
}

/* Whether the message is JSON: its first byte after white space is '{'. */
static bool s_is_json(const uint8_t *data, size_t size)
{
    size_t i = 0;
    while (i < size && s_in(data[i], " \t\r\n"))
        i++;
    return i < size && data[i] == '{';
}

static void s_check_accepted(const pw_msg_t *m, bool json)
{
    if (m->url == NULL || strlen(m->url) > PW_URL_MAX)
        abort();
    s_check_host(m->host);
    s_check_path(m->url, m->path, m->host, !json);
    if (m->n_headers > PW_HEADERS_MAX || (m->n_headers > 0 && m->headers == NULL))
        abort();
    for (size_t i = 0; i < m->n_headers; i++)
        s_check_header(m->headers[i]);
    if (m->priority < PW_PRIORITY_MIN || m->priority > PW_PRIORITY_MAX || (!json && m->priority != 0))
        abort();
}

static bool s_str_eq(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static void s_check_same(const pw_msg_t *a, const pw_msg_t *b)
{
    if (!s_str_eq(a->id, b->id) || !s_str_eq(a->url, b->url) || !s_str_eq(a->host, b->host) ||
        !s_str_eq(a->path, b->path) || a->n_headers != b->n_headers || a->priority != b->priority)
        abort();
    for (size_t i = 0; i < a->n_headers; i++)
        if (!s_str_eq(a->headers[i], b->headers[i]))
            abort();
}

static void s_check_cleared(const pw_msg_t *m)
{
    static const pw_msg_t zero;
    if (memcmp(m, &zero, sizeof(zero)) != 0)
        abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    rf_log_init("fuzz_prewarm");
    rf_log_set_level(RF_LOG_ERROR);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* a copy of exactly the input, so that ASan sees reads past its end */
    uint8_t *copy = malloc(size ? size : 1);
    if (copy == NULL)
        return 0;
    memcpy(copy, data, size);
    pw_msg_t m, again;
    char why[256] = "", small[8] = "";
    int rc = pw_msg_parse(size ? copy : NULL, size, FALLBACK_ID, &m, why, sizeof(why));
    if (rc != 0 && rc != -1)
        abort();
    if (m.id == NULL || (strcmp(m.id, FALLBACK_ID) != 0 && !s_is_json(copy, size)))
        abort();
    s_check_id(m.id);
    if (rc < 0 && why[0] == '\0')
        abort();
    if (rc == 0)
        s_check_accepted(&m, s_is_json(copy, size));
    int rc2 = pw_msg_parse(size ? copy : NULL, size, FALLBACK_ID, &again, small, sizeof(small));
    if (rc2 != rc || (rc2 < 0 && (small[0] == '\0' || strlen(small) >= sizeof(small))))
        abort();
    s_check_same(&m, &again);
    pw_msg_clear(&m);
    s_check_cleared(&m);
    pw_msg_clear(&m); /* twice is safe */
    pw_msg_clear(&again);
    free(copy);
    return 0;
}
