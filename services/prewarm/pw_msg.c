/*  pw_msg — parses one pre-warm message (pw.h).
 *
 *  A message is either a URL as text (surrounding white space ignored) or
 *  a JSON object {"url", "vhost", "headers", "priority", "id"}; unknown
 *  members are ignored, so producers may add fields. Everything comes from
 *  Kafka, so everything is bounded and checked here, once: the rest of the
 *  process only sees a host, a path and header lines it can put on the wire
 *  as they are. A refusal says why in words that go into the dead-letter
 *  envelope.
 *
 *  Why so strict: the path and headers go to the gateway verbatim; a
 *  space, CR or LF would split the request, a userinfo would name another
 *  host than the one the cache is keyed by.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "pw.h"
#include "rf_broker.h" /* RF_PRIORITY_HEADER */
#include "rf_log.h"

/* RFC 9110 tchar. */
static bool s_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static bool s_hostchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != 0 && strchr(".-_:[]", c) != NULL);
}

/* Whether [s, s+n) is a host (an authority without userinfo). */
static bool s_host_ok(const char *s, size_t n)
{
    if (n == 0 || n > PW_HOST_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!s_hostchar((unsigned char)s[i]))
            return false;
    return true;
}

/* Splits a URL into host and path (malloc'd into m). 0, or -1 with why. */
static int s_url(const char *url, size_t len, pw_msg_t *m, char *why, size_t why_len)
{
    if (len > PW_URL_MAX)
        return rf_why(why, why_len, "URL too long (%zu bytes, at most %d)", len, PW_URL_MAX);
    size_t skip;
    if (len >= 7 && strncasecmp(url, "http://", 7) == 0)
        skip = 7;
    else if (len >= 8 && strncasecmp(url, "https://", 8) == 0)
        skip = 8;
    else {
        const char *sep = memchr(url, ':', len);
        if (sep != NULL && sep > url && (size_t)(sep - url) < 32 && len - (size_t)(sep - url) >= 3 &&
            strncmp(sep, "://", 3) == 0)
            return rf_why(why, why_len, "URL scheme '%.*s' is not http or https", (int)(sep - url), url);
        return rf_why(why, why_len, "not a URL (http:// or https:// expected)");
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)url[i];
        if (c <= 0x20 || c >= 0x7f)
            return rf_why(why, why_len, "URL has a space, control or non-ASCII byte at %zu (percent-encode it)", i);
    }
    const char *a = url + skip, *end = url + len;
    const char *e = a;
    while (e < end && *e != '/' && *e != '?' && *e != '#')
        e++;
    if (memchr(a, '@', (size_t)(e - a)) != NULL)
        return rf_why(why, why_len, "URL has a userinfo (user@host): refused");
    if (!s_host_ok(a, (size_t)(e - a)))
        return rf_why(why, why_len, "URL host is empty, too long or has a byte other than [A-Za-z0-9.-_:[]]");
    const char *hash = memchr(e, '#', (size_t)(end - e));
    const char *pe = hash != NULL ? hash : end;
    size_t pl = (size_t)(pe - e);
    bool slash = pl > 0 && *e == '/';
    if ((m->host = strndup(a, (size_t)(e - a))) == NULL || (m->path = malloc(pl + 2)) == NULL)
        return rf_why(why, why_len, "out of memory");
    snprintf(m->path, pl + 2, "%s%.*s", slash ? "" : "/", (int)pl, e);
    return 0;
}

/* What the refusal of header `name` adds for the producer ("" if nothing). */
static const char *s_refused_hint(const char *name)
{
    if (strcasecmp(name, "host") == 0)
        return " (use \"vhost\" for Host)";
    if (strcasecmp(name, RF_PRIORITY_HEADER) == 0)
        return " (pre-warm requests are always background work)";
    return "";
}

/* Adds the "headers" object's members as "Name: value" lines. */
static int s_headers(json_t *h, pw_msg_t *m, char *why, size_t why_len)
{
    /* Framing and hop-by-hop headers would change how the request is
     * read; the priority is the process's to set (pw_fetch.c), so that a
     * producer cannot make pre-warm traffic go ahead of clients. */
    static const char *const refused[] = {
        "host",       "content-length", "transfer-encoding", "connection",       "upgrade",          "te",
        "keep-alive", "expect",         "trailer",           "proxy-connection", RF_PRIORITY_HEADER, NULL};
    if (!json_is_object(h))
        return rf_why(why, why_len, "\"headers\" must be an object of strings");
    size_t n = json_object_size(h);
    if (n > PW_HEADERS_MAX)
        return rf_why(why, why_len, "too many headers (%zu, at most %d)", n, PW_HEADERS_MAX);
    if (n == 0)
        return 0;
    if ((m->headers = calloc(n, sizeof(char *))) == NULL)
        return rf_why(why, why_len, "out of memory");
    const char *name;
    json_t *v;
    json_object_foreach(h, name, v)
    {
        size_t nl = strlen(name);
        if (nl == 0 || nl > PW_HEADER_NAME_MAX)
            return rf_why(why, why_len, "a header name is empty or longer than %d", PW_HEADER_NAME_MAX);
        for (size_t i = 0; i < nl; i++)
            if (!s_tchar((unsigned char)name[i]))
                return rf_why(why, why_len, "header name '%.40s' is not a token", name);
        for (int i = 0; refused[i] != NULL; i++)
            if (strcasecmp(name, refused[i]) == 0)
                return rf_why(why, why_len, "header %s is not allowed%s", name, s_refused_hint(name));
        if (!json_is_string(v))
            return rf_why(why, why_len, "header %.40s: a string value expected", name);
        const char *val = json_string_value(v);
        size_t vl = json_string_length(v);
        if (vl > PW_HEADER_VALUE_MAX)
            return rf_why(why, why_len, "header %.40s: value longer than %d", name, PW_HEADER_VALUE_MAX);
        for (size_t i = 0; i < vl; i++) {
            unsigned char c = (unsigned char)val[i];
            if ((c < 0x20 && c != '\t') || c == 0x7f)
                return rf_why(why, why_len, "header %.40s: control byte in the value", name);
        }
        if (asprintf(&m->headers[m->n_headers], "%s: %s", name, val) < 0) {
            m->headers[m->n_headers] = NULL;
            return rf_why(why, why_len, "out of memory");
        }
        m->n_headers++;
    }
    return 0;
}

/* The id member: a string of 1..PW_ID_MAX printable ASCII bytes, or an integer. */
static int s_id(json_t *id, pw_msg_t *m, char *why, size_t why_len)
{
    char buf[32];
    const char *s;
    size_t n;
    if (json_is_integer(id)) {
        snprintf(buf, sizeof(buf), "%lld", (long long)json_integer_value(id));
        s = buf, n = strlen(buf);
    } else if (json_is_string(id)) {
        s = json_string_value(id), n = json_string_length(id);
    } else {
        return rf_why(why, why_len, "\"id\" must be a string or an integer");
    }
    if (n == 0 || n > PW_ID_MAX)
        return rf_why(why, why_len, "\"id\" must be 1 to %d bytes", PW_ID_MAX);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] >= 0x7f)
            return rf_why(why, why_len, "\"id\" must be printable ASCII");
    char *copy = strndup(s, n);
    if (copy == NULL)
        return rf_why(why, why_len, "out of memory");
    free(m->id);
    m->id = copy;
    return 0;
}

static int s_json(const char *data, size_t len, pw_msg_t *m, char *why, size_t why_len)
{
    json_error_t err;
    int rc = -1;
    json_t *root = json_loadb(data, len, JSON_REJECT_DUPLICATES, &err);
    if (root == NULL) {
        rf_why(why, why_len, "invalid JSON: %s (line %d, column %d)", err.text, err.line, err.column);
        goto cleanup;
    }
    if (!json_is_object(root)) {
        rf_why(why, why_len, "JSON message must be an object with \"url\"");
        goto cleanup;
    }
    json_t *id = json_object_get(root, "id"), *url = json_object_get(root, "url");
    json_t *vhost = json_object_get(root, "vhost"), *headers = json_object_get(root, "headers");
    json_t *prio = json_object_get(root, "priority");
    /* the id first: a refused message is still named by it */
    if (id != NULL && !json_is_null(id) && s_id(id, m, why, why_len) < 0)
        goto cleanup;
    if (url == NULL || !json_is_string(url)) {
        rf_why(why, why_len, "JSON message without a \"url\" string");
        goto cleanup;
    }
    size_t ul = json_string_length(url);
    if (ul <= PW_URL_MAX && (m->url = strndup(json_string_value(url), ul)) == NULL) {
        rf_why(why, why_len, "out of memory");
        goto cleanup;
    }
    if (strlen(json_string_value(url)) != ul) {
        rf_why(why, why_len, "URL has a NUL byte");
        goto cleanup;
    }
    if (s_url(json_string_value(url), ul, m, why, why_len) < 0)
        goto cleanup;
    if (vhost != NULL && !json_is_null(vhost)) {
        if (!json_is_string(vhost) || !s_host_ok(json_string_value(vhost), json_string_length(vhost)) ||
            strlen(json_string_value(vhost)) != json_string_length(vhost)) {
            rf_why(why, why_len, "\"vhost\" must be a host name (1 to %d of [A-Za-z0-9.-_:[]])", PW_HOST_MAX);
            goto cleanup;
        }
        char *h = strdup(json_string_value(vhost));
        if (h == NULL) {
            rf_why(why, why_len, "out of memory");
            goto cleanup;
        }
        free(m->host);
        m->host = h;
    }
    if (headers != NULL && !json_is_null(headers) && s_headers(headers, m, why, why_len) < 0)
        goto cleanup;
    if (prio != NULL && !json_is_null(prio)) {
        if (!json_is_integer(prio) || json_integer_value(prio) < PW_PRIORITY_MIN ||
            json_integer_value(prio) > PW_PRIORITY_MAX) {
            rf_why(why, why_len, "\"priority\" must be an integer from %d to %d", PW_PRIORITY_MIN, PW_PRIORITY_MAX);
            goto cleanup;
        }
        m->priority = (int)json_integer_value(prio);
    }
    rc = 0;
cleanup:
    json_decref(root);
    return rc;
}

int pw_msg_parse(const void *data, size_t len, const char *fallback_id, pw_msg_t *out, char *why, size_t why_len)
{
    memset(out, 0, sizeof(*out));
    if ((out->id = strdup(fallback_id)) == NULL)
        return rf_why(why, why_len, "out of memory");
    if (data == NULL || len == 0)
        return rf_why(why, why_len, "empty message");
    if (len > PW_MSG_MAX)
        return rf_why(why, why_len, "message too large (%zu bytes, at most %d)", len, PW_MSG_MAX);
    const char *s = data, *e = s + len;
    while (s < e && (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n'))
        s++;
    while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r' || e[-1] == '\n'))
        e--;
    if (s == e)
        return rf_why(why, why_len, "empty message");
    if (*s == '{')
        return s_json(s, (size_t)(e - s), out, why, why_len);
    size_t n = (size_t)(e - s);
    if (n <= PW_URL_MAX && memchr(s, '\0', n) == NULL && (out->url = strndup(s, n)) == NULL)
        return rf_why(why, why_len, "out of memory");
    return s_url(s, n, out, why, why_len);
}

void pw_msg_clear(pw_msg_t *m)
{
    if (m == NULL)
        return;
    free(m->id);
    free(m->url);
    free(m->host);
    free(m->path);
    for (size_t i = 0; i < m->n_headers; i++)
        free(m->headers[i]);
    free(m->headers);
    memset(m, 0, sizeof(*m));
}
