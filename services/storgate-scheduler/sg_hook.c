/*  sg_hook — the seed's script webhooks: a webhook target that is a path
 *  ending in ".js" (seed: "onItemCompleted": "/usr/local/m2/webhook/
 *  call.js") is run in a Duktape heap of its own, from the outbox's
 *  delivery thread, so it gets the outbox's guarantees: queued durably,
 *  run at least once, retried with backoff until it succeeds.
 *
 *  What a script sees (docs/storgate.md, "Script hooks"):
 *    event                      the webhook's payload, parsed (event.item.path …)
 *    refract.http(method, url[, body[, headers]])
 *                               a synchronous HTTP request (libcurl, 10 s);
 *                               returns {status, body}; a body that is not
 *                               a string is sent as JSON
 *    refract.log(text)          a log line, with the webhook's id
 *  The script succeeds unless it throws or its last value is `false`.
 *  Scripts are the operator's configuration (trusted); the event they get
 *  holds client data (file names), as data only.
 */
#include <curl/curl.h>
#include <duktape.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rf_log.h"
#include "sg.h"

#define S_SCRIPT_MAX (256u << 10)
#define S_BODY_MAX (1u << 20)

/* Duktape's fatal errors (out of memory, internal) jump back here
 * instead of aborting the process; that heap is then abandoned. */
static __thread jmp_buf *s_jmp;

static void s_fatal(void *udata, const char *msg)
{
    (void)udata;
    rf_error("storgate hook: Duktape fatal error: %s", msg ? msg : "?");
    if (s_jmp != NULL)
        longjmp(*s_jmp, 1);
    abort();
}

typedef struct {
    CURL *curl;
    const char *key;
} s_ctx_t;

static s_ctx_t *s_get_ctx(duk_context *ctx)
{
    duk_push_global_stash(ctx);
    duk_get_prop_string(ctx, -1, "rf_ctx");
    s_ctx_t *c = duk_get_pointer(ctx, -1);
    duk_pop_2(ctx);
    return c;
}

typedef struct {
    char *p;
    size_t n;
} s_buf_t;

static size_t s_collect(char *p, size_t size, size_t nmemb, void *arg)
{
    s_buf_t *b = arg;
    size_t n = size * nmemb;
    if (b->n + n > S_BODY_MAX)
        return 0; /* too large: the transfer fails */
    char *np = realloc(b->p, b->n + n + 1);
    if (np == NULL)
        return 0;
    memcpy(np + b->n, p, n);
    b->p = np;
    b->n += n;
    b->p[b->n] = '\0';
    return n;
}

/* refract.http(method, url[, body[, headers]]) -> {status, body} */
static duk_ret_t s_http(duk_context *ctx)
{
    s_ctx_t *c = s_get_ctx(ctx);
    const char *method = duk_require_string(ctx, 0), *url = duk_require_string(ctx, 1);
    if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0)
        return duk_error(ctx, DUK_ERR_TYPE_ERROR, "refract.http: only http(s) URLs");
    const char *body = NULL;
    struct curl_slist *h = NULL;
    if (!duk_is_undefined(ctx, 2) && !duk_is_null(ctx, 2)) {
        if (!duk_is_string(ctx, 2)) {
            duk_json_encode(ctx, 2);
            h = curl_slist_append(h, "Content-Type: application/json");
        }
        body = duk_get_string(ctx, 2);
    }
    if (duk_is_object(ctx, 3)) {
        duk_enum(ctx, 3, DUK_ENUM_OWN_PROPERTIES_ONLY);
        while (duk_next(ctx, -1, 1)) {
            char line[1024];
            snprintf(line, sizeof(line), "%s: %s", duk_safe_to_string(ctx, -2), duk_safe_to_string(ctx, -1));
            if (strpbrk(line, "\r\n") == NULL)
                h = curl_slist_append(h, line);
            duk_pop_2(ctx);
        }
        duk_pop(ctx);
    }
    char idem[300];
    snprintf(idem, sizeof(idem), "Idempotency-Key: %s", c->key);
    h = curl_slist_append(h, idem);
    s_buf_t b = {0};
    CURL *cu = c->curl;
    curl_easy_reset(cu);
    curl_easy_setopt(cu, CURLOPT_URL, url);
    curl_easy_setopt(cu, CURLOPT_CUSTOMREQUEST, method);
    if (body != NULL)
        curl_easy_setopt(cu, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(cu, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(cu, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt(cu, CURLOPT_CONNECTTIMEOUT_MS, 3000L);
    curl_easy_setopt(cu, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(cu, CURLOPT_WRITEFUNCTION, s_collect);
    curl_easy_setopt(cu, CURLOPT_WRITEDATA, &b);
    CURLcode rc = curl_easy_perform(cu);
    long status = 0;
    curl_easy_getinfo(cu, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(h);
    if (rc != CURLE_OK) {
        free(b.p);
        return duk_error(ctx, DUK_ERR_ERROR, "refract.http %s %s: %s", method, url, curl_easy_strerror(rc));
    }
    duk_push_object(ctx);
    duk_push_int(ctx, (int)status);
    duk_put_prop_string(ctx, -2, "status");
    duk_push_lstring(ctx, b.p ? b.p : "", b.n);
    duk_put_prop_string(ctx, -2, "body");
    free(b.p);
    return 1;
}

static duk_ret_t s_log(duk_context *ctx)
{
    s_ctx_t *c = s_get_ctx(ctx);
    rf_info("storgate hook %s: %s", c->key, duk_safe_to_string(ctx, 0));
    return 0;
}

static duk_ret_t s_decode(duk_context *ctx, void *udata)
{
    (void)udata;
    duk_json_decode(ctx, -1);
    return 1;
}

static char *s_read(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    char *buf = malloc(S_SCRIPT_MAX + 1);
    size_t n = buf ? fread(buf, 1, S_SCRIPT_MAX + 1, f) : 0;
    fclose(f);
    if (buf == NULL || n > S_SCRIPT_MAX) {
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

bool sg_hook_run(void *curl, const char *path, const char *key, const char *payload, char *why, size_t why_len)
{
    size_t slen = 0;
    char *src = s_read(path, &slen);
    if (src == NULL) {
        snprintf(why, why_len, "cannot read the script %s (missing, or over 256 KB)", path);
        return false;
    }
    s_ctx_t c = {.curl = curl, .key = key};
    jmp_buf jb;
    duk_context *ctx = duk_create_heap(NULL, NULL, NULL, NULL, s_fatal);
    bool ok = false;
    if (ctx == NULL) {
        snprintf(why, why_len, "out of memory");
        free(src);
        return false;
    }
    s_jmp = &jb;
    if (setjmp(jb) != 0) { /* a fatal error: the heap is abandoned, not freed */
        s_jmp = NULL;
        snprintf(why, why_len, "the script's engine failed (see the log)");
        free(src);
        return false;
    }
    duk_push_global_stash(ctx);
    duk_push_pointer(ctx, &c);
    duk_put_prop_string(ctx, -2, "rf_ctx");
    duk_pop(ctx);
    /* event = JSON.parse(payload), as data */
    duk_push_string(ctx, payload);
    if (duk_safe_call(ctx, s_decode, NULL, 1, 1) != 0) {
        snprintf(why, why_len, "the payload is not JSON");
        goto done;
    }
    duk_put_global_string(ctx, "event");
    duk_push_object(ctx);
    duk_push_c_function(ctx, s_http, DUK_VARARGS);
    duk_put_prop_string(ctx, -2, "http");
    duk_push_c_function(ctx, s_log, 1);
    duk_put_prop_string(ctx, -2, "log");
    duk_put_global_string(ctx, "refract");
    duk_push_lstring(ctx, src, slen);
    duk_push_string(ctx, path);
    if (duk_pcompile(ctx, DUK_COMPILE_EVAL) != 0 || duk_pcall(ctx, 0) != 0) {
        snprintf(why, why_len, "%s", duk_safe_to_string(ctx, -1));
        goto done;
    }
    if (duk_is_boolean(ctx, -1) && !duk_get_boolean(ctx, -1)) {
        snprintf(why, why_len, "the script returned false");
        goto done;
    }
    ok = true;
done:
    s_jmp = NULL;
    duk_destroy_heap(ctx);
    free(src);
    return ok;
}
