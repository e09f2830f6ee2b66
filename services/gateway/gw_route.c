/*  gw_route — which vhost serves the request (by Host), and whether a URL
 *  function applies to its canonical path (by the function table). A bad
 *  function chain is answered here, 400, before any origin contact.
 */
#include <string.h>

#include "gw.h"

/* Methods a function answers: a transform reads its source, never writes. */
static int s_method_ok(h2o_req_t *req)
{
    return h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET")) ||
           h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD"));
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
        char why[200];
        if (f->parse(rc, chain, &rc->func_state, why, sizeof(why)) < 0) {
            gw_send_error(rc, 400, "Bad Request", "bad %s chain: %s", f->keyword(rc->vhost), why);
            return -1;
        }
        return 0;
    }
    return 0;
}
