/*  gw_route — which vhost serves the request (by Host), and whether a URL
 *  function applies to its canonical path (by the function table). A bad
 *  function chain is answered here, 400, before any origin contact.
 */
#include <fnmatch.h>
#include <stdio.h>
#include <string.h>

#include <time.h>

#include "gw.h"

/* Methods a function answers: a transform reads its source, never writes. */
static int s_method_ok(h2o_req_t *req)
{
    return h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET")) ||
           h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD"));
}

/* byclient (seed <Origin ByClient="ON" ByClientKeyword="byclient">):
 * "/byclient/host[:port]/path" is fetched from host — only a host the
 * vhost's allow list names. 0 to go on (rc->byclient set when it
 * applies), -1 when answered (403/400). */
static int s_byclient(gw_req_t *rc)
{
    const rf_vhost_conf_t *vh = rc->vhost;
    const char *kw = vh->byclient.keyword;
    if (kw == NULL)
        return 0;
    size_t kl = strlen(kw);
    h2o_iovec_t p = rc->path;
    if (p.len < kl + 2 || p.base[0] != '/' || memcmp(p.base + 1, kw, kl) != 0 || p.base[1 + kl] != '/')
        return 0;
    const char *host = p.base + kl + 2, *end = p.base + p.len;
    const char *slash = memchr(host, '/', (size_t)(end - host));
    size_t hl = (size_t)((slash ? slash : end) - host);
    char name[256];
    if (hl == 0 || hl >= sizeof(name) || memchr(host, '@', hl) != NULL) {
        gw_send_error(rc, 400, "Bad Request", "byclient: want /%s/host[:port]/path", kw);
        return -1;
    }
    for (size_t i = 0; i < hl; i++)
        name[i] = (char)h2o_tolower(host[i]);
    name[hl] = '\0';
    bool ok = gw_host_allowed(name, vh->byclient.allow, vh->byclient.n_allow);
    if (!ok) {
        gw_send_error(rc, 403, "Forbidden", "byclient: %s is not in the vhost's allow list", name);
        return -1;
    }
    const rf_origin_t *o = gw_client_origin(rc, vh->byclient.https, name, "byclient");
    if (o == NULL)
        return -1;
    rc->byclient = o;
    rc->origin_path = slash ? h2o_iovec_init(slash, (size_t)(end - slash)) : h2o_iovec_init("/", 1);
    return 0;
}

/* Signed function URLs (dims.signing, rf_sign.h): the signature is checked
 * on the canonical path and taken out of the query, so that every signed
 * copy of a URL is one cache entry and the origin never sees it. 0 or -1
 * with the reason. */
static int s_signed(gw_req_t *rc, char *why, size_t why_len)
{
    const rf_sign_conf_t *sc = &rc->vhost->dims.signing;
    if (sc->n_keys == 0)
        return 0;
    h2o_iovec_t q = rc->query.len > 0 ? h2o_iovec_init(rc->query.base + 1, rc->query.len - 1) : rc->query;
    char *rest = h2o_mem_alloc_pool(&rc->req->pool, q.len + 2);
    size_t rl = 0;
    if (rf_sign_verify(sc, rc->path.base, rc->path.len, q.base, q.len, (int64_t)time(NULL), rest + 1, &rl, why,
                       why_len) < 0)
        return -1;
    rest[0] = '?';
    rc->query = rl > 0 ? h2o_iovec_init(rest, rl + 1) : h2o_iovec_init("", 0);
    return 0;
}

int gw_route(gw_req_t *rc)
{
    h2o_req_t *req = rc->req;
    h2o_iovec_t host = rc->host.base != NULL ? rc->host : req->authority;
    rc->vhost = gw_vhosts_match(rc->vhosts, host.base, host.len);
    if (rc->vhost == NULL) {
        gw_send_error(rc, 404, "Not Found", "no virtual host serves '%.*s'", (int)(host.len > 100 ? 100 : host.len),
                      host.base);
        return -1;
    }
    if (s_byclient(rc) < 0)
        return -1;
    if (rc->byclient != NULL)
        return 0; /* a plain fetch from the named host (functions do not apply) */
    for (size_t i = 0; gw_funcs[i] != NULL; i++) {
        const gw_func_t *f = gw_funcs[i];
        h2o_iovec_t src, chain;
        if (!f->match(rc->vhost, rc->path, rc->query, &src, &chain))
            continue;
        rc->func = f;
        rc->src = src;
        if (!s_method_ok(req)) {
            h2o_set_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("allow"), 0, H2O_STRLIT("GET, HEAD"), 1);
            gw_send_error(rc, 405, "Method Not Allowed", "%s functions answer GET and HEAD only", f->label);
            return -1;
        }
        char why[512];
        if (s_signed(rc, why, sizeof(why)) < 0) {
            gw_send_error(rc, 403, "Forbidden", "%s", why);
            return -1;
        }
        if (f->parse(rc, chain, &rc->func_state, why, sizeof(why)) < 0) {
            gw_send_error(rc, 400, "Bad Request", "bad %s chain: %s", f->keyword(rc->vhost), why);
            return -1;
        }
        return f->resolve_source != NULL ? f->resolve_source(rc) : 0;
    }
    return 0;
}
