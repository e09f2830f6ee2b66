/*  gw_fetch — plain requests (no function): answered from the vhost's
 *  origin as it is, streamed. File origins are served by gw_file.c, http
 *  ones by gw_proxy.c behind the origin's prefix.
 */
#include "gw.h"

void gw_fetch(gw_req_t *rc)
{
    h2o_req_t *req = rc->req;
    if (rc->byclient == NULL && rc->vhost->origin.kind == RF_ORIGIN_FILE) {
        gw_file_serve(rc);
        return;
    }
    gw_upstream_t *up = gw_proxy_upstream(rc);
    if (up == NULL)
        return;
    /* The origin sees the canonical path behind its prefix, never the
     * client's spelling: nothing climbs out of the prefix. */
    h2o_iovec_t target = h2o_concat(&req->pool, rc->origin_path.base ? rc->origin_path : rc->path, rc->query);
    gw_stream_start(rc, up, target.base, target.len, 1, NULL);
}
