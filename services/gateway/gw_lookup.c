/*  gw_lookup — where the edge cache plugs in. Every request reaches it with
 *  its key: the vhost, the canonical path, the query (every parameter kept
 *  until per-vhost query policies exist) and, for a function, the name and
 *  canonical text of its chain, so "/a.jpg/dims/resize/10x" and
 *  "/a.jpg/dims/resize/10x0" are one object. Until the cache exists the
 *  stage only computes the key and every request is forwarded:
 *  Cache-Status: refract; fwd=bypass (RFC 9211).
 */
#include <string.h>

#include "gw.h"
#include "rf_log.h"

/* The key as one string: "vhost\npath?query\nfunc:canonical chain". */
static int s_key(gw_req_t *rc)
{
    h2o_req_t *req = rc->req;
    char canon[1024] = "";
    const char *fname = "";
    if (rc->func != NULL) {
        if (rc->func->canon(rc->func_state, canon, sizeof(canon)) < 0)
            return -1;
        fname = rc->func->name;
    }
    h2o_iovec_t path = rc->func != NULL ? rc->src : rc->path;
    size_t vl = strlen(rc->vhost->name), fl = strlen(fname), cl = strlen(canon);
    size_t len = vl + 1 + path.len + rc->query.len + 1 + fl + 1 + cl;
    char *k = h2o_mem_alloc_pool(&req->pool, len + 1), *p = k;
    memcpy(p, rc->vhost->name, vl), p += vl, *p++ = '\n';
    memcpy(p, path.base, path.len), p += path.len;
    if (rc->func == NULL)
        memcpy(p, rc->query.base, rc->query.len), p += rc->query.len;
    *p++ = '\n';
    memcpy(p, fname, fl), p += fl, *p++ = ':';
    memcpy(p, canon, cl), p += cl;
    *p = '\0';
    rc->key = h2o_iovec_init(k, (size_t)(p - k));
    return 0;
}

int gw_lookup(gw_req_t *rc)
{
    if (s_key(rc) < 0) {
        gw_send_error(rc, 400, "Bad Request", "function chain too long");
        return -1;
    }
    rc->cache_status = "refract; fwd=bypass";
    return 0;
}
