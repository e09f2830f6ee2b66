/*  gw_s3 — the S3 API's request stages: parse, authenticate, body checks,
 *  and the shared ways of answering (gw_s3.h). The operations themselves
 *  are in gw_s3_ops.c.
 */
#include "gw_s3.h"

#include <ctype.h>
#include <errno.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "gw.h"
#include "gw_metrics.h"
#include "rf_log.h"
#include "rf_s3xml.h"

typedef struct {
    h2o_handler_t super;
    gw_server_t *srv;
} s_handler_t;

/* ---- answers ------------------------------------------------------------------------ */

/* HTTP status of an S3 error code. */
static int s_status(const char *code)
{
    static const struct {
        const char *code;
        int status;
    } map[] = {{"AccessDenied", 403},
               {"SignatureDoesNotMatch", 403},
               {"InvalidAccessKeyId", 403},
               {"RequestTimeTooSkewed", 403},
               {"NoSuchBucket", 404},
               {"NoSuchKey", 404},
               {"NoSuchUpload", 404},
               {"MethodNotAllowed", 405},
               {"BucketAlreadyOwnedByYou", 409},
               {"BucketNotEmpty", 409},
               {"OperationAborted", 409},
               {"MissingContentLength", 411},
               {"PreconditionFailed", 412},
               {"EntityTooLarge", 413},
               {"InvalidRange", 416},
               {"InvalidPartNumber", 416},
               {"InternalError", 500},
               {"NotImplemented", 501},
               {"SlowDown", 503},
               {NULL, 0}};
    for (int i = 0; map[i].code; i++)
        if (strcmp(map[i].code, code) == 0)
            return map[i].status;
    return 400;
}

static void s_count(gw_s3_req_t *r, int status)
{
    char st[8];
    snprintf(st, sizeof(st), "%d", status);
    const char *l[] = {r->op ? r->op : "unknown", st};
    rf_metric_add(gw_m.s3_requests, l, 1);
}

static bool s_is_head(const gw_s3_req_t *r)
{
    return h2o_memis(r->req->method.base, r->req->method.len, H2O_STRLIT("HEAD"));
}

void gw_s3_set_header(gw_s3_req_t *r, const char *name, const char *value)
{
    h2o_req_t *req = r->req;
    size_t nl = strlen(name), vl = strlen(value);
    char *n = h2o_mem_alloc_pool(&req->pool, nl + 1);
    for (size_t i = 0; i <= nl; i++)
        n[i] = (char)tolower((unsigned char)name[i]);
    h2o_add_header_by_str(&req->pool, &req->res.headers, n, nl, 1, NULL, h2o_strdup(&req->pool, value, vl).base, vl);
}

static void s_start(gw_s3_req_t *r, int status)
{
    h2o_req_t *req = r->req;
    req->res.status = status;
    req->res.reason = gw_reason(status);
    gw_s3_set_header(r, "x-amz-request-id", r->request_id);
    s_count(r, status);
}

void gw_s3_xml(gw_s3_req_t *r, int status, char *doc, size_t len)
{
    if (doc == NULL) {
        gw_s3_error(r, "InternalError", "out of memory");
        return;
    }
    h2o_req_t *req = r->req;
    /* the document lives as long as the request */
    char *copy = h2o_mem_alloc_pool(&req->pool, len);
    memcpy(copy, doc, len);
    free(doc);
    s_start(r, status);
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, H2O_STRLIT("application/xml"));
    req->res.content_length = len;
    static h2o_generator_t gen = {NULL, NULL};
    h2o_start_response(req, &gen);
    h2o_iovec_t body = h2o_iovec_init(copy, s_is_head(r) ? 0 : len);
    h2o_send(req, &body, body.len ? 1 : 0, H2O_SEND_STATE_FINAL);
}

void gw_s3_empty(gw_s3_req_t *r, int status)
{
    s_start(r, status);
    /* 204 and 304 carry no Content-Length (RFC 9110 8.6: a 204 must not,
     * and a 304's would have to be the object's length); h2o frames both
     * as bodiless when the length is left unknown. */
    if (status != 204 && status != 304)
        r->req->res.content_length = 0;
    static h2o_generator_t gen = {NULL, NULL};
    h2o_start_response(r->req, &gen);
    h2o_send(r->req, NULL, 0, H2O_SEND_STATE_FINAL);
}

void gw_s3_error(gw_s3_req_t *r, const char *code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    int status = s_status(code);
    rf_debug("s3 %s %.*s: %d %s: %s", r->request_id, (int)(r->req->path.len > 200 ? 200 : r->req->path.len),
             r->req->path.base, status, code, msg);
    char res[300];
    snprintf(res, sizeof(res), "/%s%s%.200s", r->bucket_name ? r->bucket_name : "", r->key && r->key[0] ? "/" : "",
             r->key ? r->key : "");
    size_t len = 0;
    char *doc = rf_s3xml_error(code, msg, res, r->request_id, &len);
    /* the reason also in a header: HEAD answers have no body */
    gw_s3_set_header(r, "x-refract-error", msg);
    gw_s3_xml(r, status, doc, len);
}

const char *gw_s3_param(const gw_s3_req_t *r, const char *name)
{
    for (size_t i = 0; i < r->n_params; i++)
        if (strcmp(r->params[i].name, name) == 0)
            return r->params[i].value;
    return NULL;
}

const char *gw_s3_header(const gw_s3_req_t *r, const char *name, size_t *len)
{
    ssize_t i = h2o_find_header_by_str(&r->req->headers, name, strlen(name), -1);
    if (i < 0)
        return NULL;
    *len = r->req->headers.entries[i].value.len;
    return r->req->headers.entries[i].value.base;
}

void gw_s3_iso_time(int64_t ns, char out[32])
{
    time_t t = (time_t)(ns / 1000000000);
    struct tm tm;
    gmtime_r(&t, &tm);
    char date[24];
    strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, 32, "%.19s.%03dZ", date, (int)((ns / 1000000) % 1000));
}

void gw_s3_http_time(int64_t ns, char out[40])
{
    time_t t = (time_t)(ns / 1000000000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 40, "%a, %d %b %Y %H:%M:%S GMT", &tm);
}

/* ---- reading a file out ------------------------------------------------------------- */

typedef struct {
    h2o_generator_t super;
    gw_s3_req_t *r;
    int fd;
    uint64_t off, left;
    char *buf;
} s_file_gen_t;

#define S_READ_CHUNK (256u << 10)

static void s_file_dispose(void *p)
{
    s_file_gen_t *g = p;
    if (g->fd >= 0)
        close(g->fd);
    free(g->buf);
}

static void s_file_proceed(h2o_generator_t *gen, h2o_req_t *req)
{
    s_file_gen_t *g = (s_file_gen_t *)gen;
    size_t want = g->left < S_READ_CHUNK ? (size_t)g->left : S_READ_CHUNK;
    ssize_t n = want ? pread(g->fd, g->buf, want, (off_t)g->off) : 0;
    if (n < 0 || (n == 0 && want > 0)) { /* the file shrank or failed: cut the response short */
        h2o_send(req, NULL, 0, H2O_SEND_STATE_ERROR);
        return;
    }
    g->off += (uint64_t)n;
    g->left -= (uint64_t)n;
    const char *l[] = {"out"};
    rf_metric_add(gw_m.s3_bytes, l, (double)n);
    h2o_iovec_t v = h2o_iovec_init(g->buf, (size_t)n);
    h2o_send(req, &v, 1, g->left == 0 ? H2O_SEND_STATE_FINAL : H2O_SEND_STATE_IN_PROGRESS);
}

static void s_file_stop(h2o_generator_t *gen, h2o_req_t *req)
{
    (void)gen;
    (void)req;
}

void gw_s3_start_stream(gw_s3_req_t *r, uint64_t len, h2o_generator_t *gen)
{
    s_start(r, r->req->res.status ? r->req->res.status : 200);
    r->req->res.content_length = len;
    h2o_start_response(r->req, gen);
}

void gw_s3_send_file(gw_s3_req_t *r, int fd, uint64_t from, uint64_t len)
{
    h2o_req_t *req = r->req;
    s_start(r, req->res.status ? req->res.status : 200);
    req->res.content_length = len;
    if (s_is_head(r) || len == 0) {
        close(fd);
        static h2o_generator_t gen = {NULL, NULL};
        h2o_start_response(req, &gen);
        h2o_send(req, NULL, 0, H2O_SEND_STATE_FINAL);
        return;
    }
    s_file_gen_t *g = h2o_mem_alloc_shared(&req->pool, sizeof(*g), s_file_dispose);
    g->super.proceed = s_file_proceed;
    g->super.stop = s_file_stop;
    g->r = r;
    g->fd = fd;
    g->off = from;
    g->left = len;
    g->buf = malloc(len < S_READ_CHUNK ? (size_t)len : S_READ_CHUNK);
    h2o_start_response(req, &g->super);
    if (g->buf == NULL) {
        h2o_send(req, NULL, 0, H2O_SEND_STATE_ERROR);
        return;
    }
    s_file_proceed(&g->super, req);
}

/* ---- request bodies ------------------------------------------------------------------- */

/* Checksums a body must match: Content-MD5 and x-amz-checksum-* headers. */
typedef struct {
    gw_s3_req_t *r;
    rf_sgfs_put_t *w; /* where decoded bytes go, or NULL */
    char *small;      /* or here (gw_s3_body_small) */
    size_t small_len, small_max;
    uint64_t max; /* largest decoded body (storgate.max_put); 0 = none */
    bool too_large;
    EVP_MD_CTX *md5; /* with Content-MD5 */
    unsigned char want_md5[16];
    rf_s3sum_t sum; /* with x-amz-checksum-NAME (a header, not a trailer) */
    bool has_sum;
    char want_sum[64];
    char sum_name[40];
    uint64_t total;
    /* a refusal, answered by the caller once it has cleaned up: a client
     * told "no" must not find the temporary file still there */
    const char *code;
    char msg[320];
} s_body_t;

static void s_body_fail(s_body_t *b, const char *code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void s_body_fail(s_body_t *b, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b->msg, sizeof(b->msg), fmt, ap);
    va_end(ap);
    b->code = code;
}

static int s_body_out(void *arg, const char *data, size_t n)
{
    s_body_t *b = arg;
    /* h2o bounds the body as received, with room for aws-chunked framing:
     * the object itself is held to max_put here */
    if (b->max > 0 && b->total + n > b->max) {
        b->too_large = true;
        return -1;
    }
    b->total += n;
    if (b->md5 != NULL)
        EVP_DigestUpdate(b->md5, data, n);
    if (b->has_sum)
        rf_s3sum_update(&b->sum, data, n);
    if (b->w != NULL)
        return rf_sgfs_put_write(b->w, data, n);
    if (b->small_len + n > b->small_max)
        return -1;
    memcpy(b->small + b->small_len, data, n);
    b->small_len += n;
    return 0;
}

static int s_b64_decode(const char *in, size_t len, unsigned char *out, size_t cap)
{
    if (len == 0 || len % 4 != 0 || len / 4 * 3 > cap + 2)
        return -1;
    unsigned char tmp[96];
    if (len / 4 * 3 > sizeof(tmp))
        return -1;
    int n = EVP_DecodeBlock(tmp, (const unsigned char *)in, (int)len);
    if (n < 0)
        return -1;
    while (len > 0 && in[len - 1] == '=')
        len--, n--;
    if ((size_t)n > cap)
        return -1;
    memcpy(out, tmp, (size_t)n);
    return n;
}

/* Sets up the header checksums; -1 (b->code set) on a malformed one. */
static int s_body_begin(s_body_t *b)
{
    gw_s3_req_t *r = b->r;
    size_t len;
    const char *v = gw_s3_header(r, "content-md5", &len);
    if (v != NULL) {
        if (s_b64_decode(v, len, b->want_md5, 16) != 16) {
            s_body_fail(b, "InvalidDigest", "Content-MD5 is not the base64 of 16 bytes");
            return -1;
        }
        if ((b->md5 = EVP_MD_CTX_new()) == NULL || EVP_DigestInit_ex(b->md5, EVP_md5(), NULL) != 1) {
            s_body_fail(b, "InternalError", "out of memory");
            return -1;
        }
    }
    /* x-amz-checksum-NAME as a header (not the trailer x-amz-trailer names) */
    for (size_t i = 0; i < r->req->headers.size; i++) {
        h2o_header_t *h = &r->req->headers.entries[i];
        if (h->name->len <= 15 || !h2o_memis(h->name->base, 15, H2O_STRLIT("x-amz-checksum-")))
            continue;
        if (h2o_memis(h->name->base, h->name->len, H2O_STRLIT("x-amz-checksum-algorithm")) ||
            h2o_memis(h->name->base, h->name->len, H2O_STRLIT("x-amz-checksum-type")))
            continue;
        int kind = rf_s3sum_kind(h->name->base, h->name->len);
        if (kind < 0 || h->value.len >= sizeof(b->want_sum) || b->has_sum) {
            s_body_fail(b, "InvalidRequest", "unsupported or repeated checksum header %.*s", (int)h->name->len,
                        h->name->base);
            return -1;
        }
        if (rf_s3sum_init(&b->sum, kind) < 0) {
            s_body_fail(b, "InternalError", "out of memory");
            return -1;
        }
        b->has_sum = true;
        memcpy(b->want_sum, h->value.base, h->value.len);
        b->want_sum[h->value.len] = '\0';
        snprintf(b->sum_name, sizeof(b->sum_name), "%.*s", (int)h->name->len, h->name->base);
    }
    return 0;
}

/* Checks the header checksums after the last byte; -1 (b->code set) when one disagrees. */
static int s_body_end(s_body_t *b)
{
    gw_s3_req_t *r = b->r;
    if (b->md5 != NULL) {
        unsigned char d[16];
        unsigned int dl = 0;
        if (EVP_DigestFinal_ex(b->md5, d, &dl) != 1 || dl != 16 || memcmp(d, b->want_md5, 16) != 0) {
            s_body_fail(b, "BadDigest", "the Content-MD5 you specified did not match what we received");
            return -1;
        }
    }
    if (b->has_sum) {
        char got[64];
        if (rf_s3sum_final_b64(&b->sum, got) < 0 || strcmp(got, b->want_sum) != 0) {
            s_body_fail(b, "BadDigest", "the %s you specified did not match the calculated checksum", b->sum_name);
            return -1;
        }
        gw_s3_set_header(r, b->sum_name, got);
    }
    return 0;
}

static void s_body_clear(s_body_t *b)
{
    EVP_MD_CTX_free(b->md5);
    rf_s3sum_clear(&b->sum);
}

static int s_body_run(s_body_t *b)
{
    gw_s3_req_t *r = b->r;
    h2o_iovec_t e = r->req->entity;
    int rc = -1;
    if (s_body_begin(b) < 0)
        goto done;
    const char *l[] = {"in"};
    rf_metric_add(gw_m.s3_bytes, l, (double)e.len);
    if (r->auth.payload == RF_SIGV4_PAYLOAD_SHA256 || r->auth.payload == RF_SIGV4_PAYLOAD_UNSIGNED) {
        if (s_body_out(b, e.base ? e.base : "", e.len) < 0) {
            if (b->too_large)
                s_body_fail(b, "EntityTooLarge", "the body is larger than storgate.max_put (%llu bytes)",
                            (unsigned long long)b->max);
            else
                s_body_fail(b, b->w ? "InternalError" : "MalformedXML", b->w ? "cannot write: %s" : "body too large%s",
                            b->w ? strerror(errno) : "");
            goto done;
        }
    } else {
        rf_awschunk_t *dec = rf_awschunk_new(&r->auth, 0);
        const char *code = NULL;
        char why[256] = "";
        if (dec == NULL) {
            s_body_fail(b, "InvalidRequest", "cannot decode this aws-chunked body");
            goto done;
        }
        int f = rf_awschunk_feed(dec, e.base, e.len, s_body_out, b, &code, why, sizeof(why));
        if (f >= 0)
            f = rf_awschunk_finish(dec, &code, why, sizeof(why));
        rf_awschunk_destroy(&dec);
        if (f < 0 && b->too_large) {
            s_body_fail(b, "EntityTooLarge", "the body is larger than storgate.max_put (%llu bytes)",
                        (unsigned long long)b->max);
            goto done;
        }
        if (f < 0) {
            s_body_fail(b, code ? code : "InvalidRequest", "%s", why[0] ? why : "malformed aws-chunked body");
            goto done;
        }
    }
    if (s_body_end(b) < 0)
        goto done;
    rc = 0;
done:
    s_body_clear(b);
    return rc;
}

int gw_s3_body_into(gw_s3_req_t *r, rf_sgfs_put_t **w_p)
{
    s_body_t b = {.r = r, .w = *w_p, .max = r->sc->max_put};
    if (s_body_run(&b) == 0)
        return 0;
    rf_sgfs_put_abort(w_p); /* before the answer */
    gw_s3_error(r, b.code, "%s", b.msg);
    return -1;
}

int gw_s3_body_small(gw_s3_req_t *r, size_t max, char **out, size_t *len)
{
    s_body_t b = {.r = r, .small_max = max};
    if (r->req->entity.len > max + (max >> 2) + 4096) {
        gw_s3_error(r, "MalformedXML", "the request body is larger than %zu bytes", max);
        return -1;
    }
    b.small = h2o_mem_alloc_pool(&r->req->pool, max + 1);
    if (s_body_run(&b) < 0) {
        gw_s3_error(r, b.code, "%s", b.msg);
        return -1;
    }
    b.small[b.small_len] = '\0';
    *out = b.small;
    *len = b.small_len;
    return 0;
}

/* ---- parsing and authentication -------------------------------------------------------- */

static int s_hexval(int c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* Percent-decodes s[0..n) into the pool (NUL-terminated). S3 clients
 * encode a space as %20: a '+' stays a '+'. NULL on a malformed escape. */
static char *s_decode(h2o_mem_pool_t *pool, const char *s, size_t n, size_t *out_len)
{
    char *o = h2o_mem_alloc_pool(pool, n + 1);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '%') {
            o[k++] = s[i];
            continue;
        }
        if (i + 2 >= n)
            return NULL;
        int a = s_hexval((unsigned char)s[i + 1]), b = s_hexval((unsigned char)s[i + 2]);
        if (a < 0 || b < 0)
            return NULL;
        o[k++] = (char)(a * 16 + b);
        i += 2;
    }
    o[k] = '\0';
    if (out_len)
        *out_len = k;
    return o;
}

/* Splits the query into r->params (decoded). -1 after answering. */
static int s_parse_query(gw_s3_req_t *r, const char *q, size_t qlen)
{
    const char *end = q + qlen;
    while (q < end) {
        const char *amp = memchr(q, '&', (size_t)(end - q));
        const char *item_end = amp ? amp : end;
        if (item_end > q) {
            if (r->n_params == GW_S3_MAX_PARAMS) {
                gw_s3_error(r, "InvalidArgument", "more than %d query parameters", GW_S3_MAX_PARAMS);
                return -1;
            }
            const char *eq = memchr(q, '=', (size_t)(item_end - q));
            const char *ne = eq ? eq : item_end;
            gw_s3_param_t *p = &r->params[r->n_params];
            p->name = s_decode(&r->req->pool, q, (size_t)(ne - q), NULL);
            p->value = eq ? s_decode(&r->req->pool, eq + 1, (size_t)(item_end - eq - 1), NULL) : "";
            if (p->name == NULL || p->value == NULL) {
                gw_s3_error(r, "InvalidURI", "a malformed %%-escape in the query");
                return -1;
            }
            r->n_params++;
        }
        q = item_end + 1;
    }
    return 0;
}

static const char *s_secret(void *arg, const char *access_key)
{
    const rf_sg_conf_t *sc = arg;
    for (size_t i = 0; i < sc->n_credentials; i++)
        if (strcmp(sc->credentials[i].access_key, access_key) == 0)
            return sc->credentials[i].secret_key;
    return NULL;
}

/* Verifies the signature, then a signed payload's digest. -1 after answering. */
static int s_authenticate(gw_s3_req_t *r, const char *path, size_t plen, const char *q, size_t qlen)
{
    h2o_req_t *req = r->req;
    size_t nh = req->headers.size;
    if (nh > RF_SIGV4_MAX_HEADERS) {
        gw_s3_error(r, "InvalidRequest", "too many request headers");
        return -1;
    }
    rf_sigv4_header_t *hs = h2o_mem_alloc_pool(&req->pool, sizeof(*hs) * (nh + 4));
    size_t k = 0;
    bool have_host = false, have_clen = false, have_te = false, have_expect = false;
    for (size_t i = 0; i < nh; i++) {
        h2o_header_t *h = &req->headers.entries[i];
        hs[k++] = (rf_sigv4_header_t){h->name->base, h->name->len, h->value.base, h->value.len};
        have_host |= h2o_memis(h->name->base, h->name->len, H2O_STRLIT("host"));
        have_clen |= h2o_memis(h->name->base, h->name->len, H2O_STRLIT("content-length"));
        have_te |= h2o_memis(h->name->base, h->name->len, H2O_STRLIT("transfer-encoding"));
        have_expect |= h2o_memis(h->name->base, h->name->len, H2O_STRLIT("expect"));
    }
    if (!have_host) /* h2o keeps Host out of the list (HTTP/1: and :authority in HTTP/2) */
        hs[k++] = (rf_sigv4_header_t){"host", 4, req->authority.base, req->authority.len};
    /* h2o's HTTP/1 parser also keeps the body's framing headers out of the
     * list, yet clients sign them: s3cmd and rclone Content-Length, a client
     * streaming a body of unknown length Transfer-Encoding. Give the
     * verifier the values the client sent — it uses a header only when the
     * client signed it. The body is read whole before the handler, so its
     * length is the entity's (a chunked body had no Content-Length: a client
     * that signed one anyway fails to verify, as it should); h2o accepts no
     * transfer-coding but chunked, and no expectation but 100-continue. */
    if (req->entity.base != NULL) {
        if (!have_clen) {
            char *cl = h2o_mem_alloc_pool(&req->pool, 24);
            int cll = snprintf(cl, 24, "%zu", req->entity.len);
            hs[k++] = (rf_sigv4_header_t){"content-length", 14, cl, (size_t)cll};
        }
        if (!have_te)
            hs[k++] = (rf_sigv4_header_t){"transfer-encoding", 17, "chunked", 7};
        if (!have_expect)
            hs[k++] = (rf_sigv4_header_t){"expect", 6, "100-continue", 12};
    }
    char method[17];
    snprintf(method, sizeof(method), "%.*s", (int)(req->method.len > 16 ? 16 : req->method.len), req->method.base);
    rf_sigv4_req_t sr = {.method = method,
                         .path = path,
                         .path_len = plen,
                         .query = qlen ? q : NULL,
                         .query_len = qlen,
                         .headers = hs,
                         .n_headers = k,
                         .now = (int64_t)time(NULL)};
    const char *code = NULL;
    char why[300] = "";
    int rc = rf_sigv4_verify(&sr, s_secret, (void *)r->sc, &r->auth, &code, why, sizeof(why));
    if (rc == 1) {
        gw_s3_error(r, "AccessDenied", "anonymous requests are not accepted: sign with a storgate credential");
        return -1;
    }
    if (rc < 0) {
        gw_s3_error(r, code ? code : "AccessDenied", "%s", why);
        return -1;
    }
    if (r->auth.payload == RF_SIGV4_PAYLOAD_SHA256) {
        unsigned char d[32];
        unsigned int dl = 0;
        char hex[65];
        EVP_Digest(req->entity.base ? req->entity.base : "", req->entity.len, d, &dl, EVP_sha256(), NULL);
        for (int i = 0; i < 32; i++)
            sprintf(hex + 2 * i, "%02x", d[i]);
        if (strcmp(hex, r->auth.payload_sha256) != 0) {
            gw_s3_error(r, "XAmzContentSHA256Mismatch",
                        "the provided x-amz-content-sha256 header does not match what was computed");
            return -1;
        }
    }
    return 0;
}

static int s_on_req(h2o_handler_t *self, h2o_req_t *req)
{
    s_handler_t *h = (s_handler_t *)self;
    gw_s3_req_t *r = h2o_mem_alloc_pool(&req->pool, sizeof(*r));
    memset(r, 0, sizeof(*r));
    r->req = req;
    r->sc = h->srv->cfg->storgate;
    r->state_dir = h->srv->cfg->storgate_scheduler.state_dir;
    r->bucket_name = "";
    r->key = "";
    r->op = "parse";
    r->mimemap = h->srv->mimemap;
    r->storage = h->srv->storage;
    r->thread = H2O_STRUCT_FROM_MEMBER(gw_thread_t, s3_ctx, req->conn->ctx);
    unsigned char rid[8];
    if (getrandom(rid, sizeof(rid), 0) != sizeof(rid))
        memset(rid, 0, sizeof(rid));
    for (int i = 0; i < 8; i++)
        sprintf(r->request_id + 2 * i, "%02X", rid[i]);
    /* the request-target as sent: path and query */
    const char *path = req->path.base;
    size_t plen = req->query_at != SIZE_MAX ? req->query_at : req->path.len;
    const char *q = plen < req->path.len ? path + plen + 1 : "";
    size_t qlen = plen < req->path.len ? req->path.len - plen - 1 : 0;
    if (plen == 0 || path[0] != '/') {
        gw_s3_error(r, "InvalidURI", "the path must start with '/'");
        return 0;
    }
    /* /BUCKET[/KEY], before authenticating: an error names its Resource */
    const char *bs = path + 1, *slash = memchr(bs, '/', plen - 1);
    size_t bl = slash ? (size_t)(slash - bs) : plen - 1;
    char *bucket = s_decode(&req->pool, bs, bl, NULL);
    if (bucket == NULL) {
        gw_s3_error(r, "InvalidURI", "a malformed %%-escape in the bucket name");
        return 0;
    }
    r->bucket_name = bucket;
    if (slash != NULL && (size_t)(slash - path) + 1 < plen) {
        const char *ks = slash + 1;
        r->key = s_decode(&req->pool, ks, plen - (size_t)(ks - path), &r->key_len);
        if (r->key == NULL) {
            r->key = "";
            gw_s3_error(r, "InvalidURI", "a malformed %%-escape in the key");
            return 0;
        }
    }
    if (s_parse_query(r, q, qlen) < 0 || s_authenticate(r, path, plen, q, qlen) < 0)
        return 0;
    if (bucket[0] == '\0') {
        r->op = "ListBuckets";
        if (!h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET"))) {
            gw_s3_error(r, "MethodNotAllowed", "the service answers GET only");
            return 0;
        }
        gw_s3_list_buckets(r);
        return 0;
    }
    r->bucket = rf_sgconf_bucket(r->sc, bucket, strlen(bucket));
    if (r->bucket == NULL || !r->bucket->enable || !r->bucket->expose) {
        r->op = "NoSuchBucket";
        gw_s3_error(r, "NoSuchBucket", "the specified bucket does not exist");
        return 0;
    }
    if (r->key[0] == '\0')
        gw_s3_bucket_op(r);
    else
        gw_s3_object_op(r);
    return 0;
}

void gw_s3_register(h2o_hostconf_t *host, gw_server_t *srv)
{
    h2o_pathconf_t *pc = h2o_config_register_path(host, "/", 0);
    s_handler_t *h = (s_handler_t *)h2o_create_handler(pc, sizeof(*h));
    h->super.on_req = s_on_req;
    h->srv = srv;
    const rf_sg_conf_t *sc = srv->cfg->storgate;
    for (size_t i = 0; sc != NULL && i < sc->n_buckets; i++) {
        const rf_sg_bucket_t *b = &sc->buckets[i];
        /* what a crash left: partial writes older than an hour (none is in
         * progress that long), uploads untouched for a week */
        int swept = rf_sgfs_sweep(b, 3600, 7 * 86400);
        if (swept > 0)
            rf_info("storgate: bucket %s: removed %d stale temporary file(s) or upload(s)", b->name, swept);
    }
}
