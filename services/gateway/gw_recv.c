/*  gw_recv — the first stage of every request, before routing.
 *
 *  Everything here is about input that is hostile before it is anything
 *  else: request shapes that let a second request hide inside the first
 *  (RFC 9112 §6.3, §11.2) are answered 400 and the connection is closed,
 *  the path is replaced by its one canonical form (common/rf_path.h), and
 *  a Range that would multiply the response is dropped (common/rf_http.h).
 */
#include <string.h>

#include "gw.h"
#include "gw_conn.h"
#include "rf_http.h"
#include "rf_log.h"
#include "rf_path.h"

/* picohttpparser is exported by libh2o (see gw_origin_parse.h). */
int phr_parse_request(const char *buf, size_t len, const char **method, size_t *method_len, const char **path,
                      size_t *path_len, int *minor_version, struct phr_header *headers, size_t *num_headers,
                      size_t last_len);

static size_t s_count(h2o_req_t *req, const h2o_token_t *token, ssize_t *last)
{
    size_t n = 0;
    *last = -1;
    for (ssize_t i = -1; (i = h2o_find_header(&req->headers, token, i)) != -1;) {
        n++;
        *last = i;
    }
    return n;
}

typedef struct {
    size_t host, cl, te;
    int te_chunked_only; /* the one Transfer-Encoding is exactly "chunked" */
} s_framing_t;

/* Counts the framing fields of the raw request head: h2o folds Host,
 * Content-Length and Transfer-Encoding into its own state and keeps only
 * one of each, so duplicates are visible only in the bytes. The head is
 * at the start of the connection's input buffer until the response ends.
 * Returns 0, or -1 when the head cannot be read (unknown libh2o). */
static int s_raw_framing(h2o_req_t *req, s_framing_t *f)
{
    h2o_socket_t *sock = gw_conn_http1_socket(req);
    if (sock == NULL || sock->input == NULL || sock->input->size == 0)
        return -1;
    const char *method, *path;
    size_t method_len, path_len, n = 100;
    int minor;
    struct phr_header headers[100];
    if (phr_parse_request(sock->input->bytes, sock->input->size, &method, &method_len, &path, &path_len, &minor,
                          headers, &n, 0) <= 0)
        return -1;
    memset(f, 0, sizeof(*f));
    for (size_t i = 0; i < n; i++) {
        if (headers[i].name == NULL)
            continue; /* obs-fold continuation: h2o already refused or joined it */
        if (h2o_lcstris(headers[i].name, headers[i].name_len, H2O_STRLIT("host"))) {
            f->host++;
        } else if (h2o_lcstris(headers[i].name, headers[i].name_len, H2O_STRLIT("content-length"))) {
            f->cl++;
        } else if (h2o_lcstris(headers[i].name, headers[i].name_len, H2O_STRLIT("transfer-encoding"))) {
            f->te++;
            f->te_chunked_only = h2o_lcstris(headers[i].value, headers[i].value_len, H2O_STRLIT("chunked"));
        }
    }
    return 0;
}

/* Refuses HTTP/1 framing that two parsers could read differently. Returns
 * 0, or -1 after answering 400 (and closing the connection). */
static int s_check_framing(gw_req_t *rc)
{
    h2o_req_t *req = rc->req;
    if (req->version >= 0x200)
        return 0; /* HTTP/2 frames its own messages; h2o checks :authority */
    s_framing_t f;
    if (s_raw_framing(req, &f) < 0)
        f = (s_framing_t){.host = req->authority.len > 0}; /* all h2o exposes */
    const char *why = NULL;
    if (f.host > 1)
        why = "more than one Host header";
    else if (f.host == 0 && req->version >= 0x101)
        why = "an HTTP/1.1 request needs a Host header";
    else if (f.cl > 1)
        why = "more than one Content-Length header";
    else if (f.cl > 0 && f.te > 0)
        why = "Content-Length together with Transfer-Encoding";
    else if (f.te > 1 || (f.te == 1 && !f.te_chunked_only))
        why = "unsupported Transfer-Encoding";
    if (why == NULL)
        return 0;
    rc->close_conn = 1;
    gw_send_error(rc, 400, "Bad Request", "bad request: %s", why);
    return -1;
}

/* Replaces the path with its canonical form (rc->path, rc->query). Returns
 * 0, or -1 after answering 400. */
static int s_canonical_path(gw_req_t *rc)
{
    h2o_req_t *req = rc->req;
    size_t plen = req->query_at != SIZE_MAX ? req->query_at : req->path.len;
    char *canon = h2o_mem_alloc_pool(&req->pool, plen + 1);
    const char *why = NULL;
    ssize_t n = rf_path_canon(req->path.base, plen, canon, &why);
    if (n < 0) {
        gw_send_error(rc, 400, "Bad Request", "bad request path: %s", why);
        return -1;
    }
    rc->path = h2o_iovec_init(canon, (size_t)n);
    rc->query = h2o_iovec_init(req->path.base + plen, req->path.len - plen); /* "" or "?…" */
    if (!rf_query_ok(rc->query.base, rc->query.len)) {
        gw_send_error(rc, 400, "Bad Request", "bad request query: control character");
        return -1;
    }
    return 0;
}

/* Drops Range (and If-Range with it) when the policy says so: the client
 * then gets the whole object once, as RFC 9110 §14.2 allows. */
static void s_range_policy(gw_req_t *rc)
{
    h2o_req_t *req = rc->req;
    ssize_t at;
    size_t n = s_count(req, H2O_TOKEN_RANGE, &at);
    if (n == 0)
        return;
    const char *why = "more than one Range header";
    if (n == 1 && rf_http_range_check(req->headers.entries[at].value.base, req->headers.entries[at].value.len, &why) ==
                      RF_RANGE_FORWARD)
        return;
    rf_log(RF_LOG_INFO, rc->request_id, "Range ignored: %s", why);
    for (ssize_t i; (i = h2o_find_header(&req->headers, H2O_TOKEN_RANGE, -1)) != -1;)
        h2o_delete_header(&req->headers, i);
    for (ssize_t i; (i = h2o_find_header(&req->headers, H2O_TOKEN_IF_RANGE, -1)) != -1;)
        h2o_delete_header(&req->headers, i);
    rc->note = "range_ignored";
}

/* A request whose Via names this gateway went round a loop (a 2-tier or
 * sibling set-up pointing back at itself): answered 508, never forwarded
 * again. The name must appear as a whole Via entry's received-by. */
static int s_loop_check(gw_req_t *rc)
{
    h2o_req_t *req = rc->req;
    const char *me = rc->thread->server->via + 4; /* past "1.1 " */
    size_t ml = strlen(me);
    for (ssize_t i = -1; (i = h2o_find_header(&req->headers, H2O_TOKEN_VIA, i)) != -1;) {
        h2o_iovec_t v = req->headers.entries[i].value;
        for (size_t k = 0; k + ml <= v.len; k++)
            if (memcmp(v.base + k, me, ml) == 0 && (k == 0 || v.base[k - 1] == ' ') &&
                (k + ml == v.len || v.base[k + ml] == ',' || v.base[k + ml] == ' ')) {
                gw_send_error(rc, 508, "Loop Detected", "request loop: Via already names %s", me);
                return -1;
            }
    }
    return 0;
}

int gw_recv(gw_req_t *rc)
{
    if (s_check_framing(rc) < 0 || s_canonical_path(rc) < 0 || s_loop_check(rc) < 0)
        return -1;
    s_range_policy(rc);
    return 0;
}
