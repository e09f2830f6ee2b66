#include <stdlib.h>
#include <string.h>

#include "gw.h"
#include "rf_log.h"

/* The admin port: Prometheus text at /metrics, liveness at /healthz.
 * (Purge and the rest of the admin API arrive with the cache.) */

typedef struct {
    h2o_handler_t super;
    gw_server_t *server;
} s_admin_handler_t;

static void s_free_dispose(void *p)
{
    free(*(char **)p);
}

static int s_on_req(h2o_handler_t *h, h2o_req_t *req)
{
    s_admin_handler_t *self = (s_admin_handler_t *)h;
    size_t plen = req->query_at != SIZE_MAX ? req->query_at : req->path.len;
    if (!h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET")) &&
        !h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD"))) {
        h2o_send_error_generic(req, 405, "Method Not Allowed", "the admin endpoints answer GET and HEAD\n", 0);
        return 0;
    }
    if (h2o_memis(req->path.base, plen, H2O_STRLIT("/metrics"))) {
        size_t len = 0;
        char *text = rf_metrics_render(self->server->metrics, &len);
        if (text == NULL) {
            h2o_send_error_generic(req, 503, "Service Unavailable", "out of memory\n", 0);
            return 0;
        }
        char **slot = h2o_mem_alloc_shared(&req->pool, sizeof(*slot), s_free_dispose);
        *slot = text;
        static h2o_generator_t gen = {NULL, NULL};
        req->res.status = 200;
        req->res.reason = "OK";
        req->res.content_length = len;
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                       H2O_STRLIT("text/plain; version=0.0.4; charset=utf-8"));
        h2o_start_response(req, &gen);
        h2o_iovec_t buf = h2o_iovec_init(text, len);
        int head = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD"));
        h2o_send(req, &buf, head ? 0 : 1, H2O_SEND_STATE_FINAL);
        return 0;
    }
    if (h2o_memis(req->path.base, plen, H2O_STRLIT("/healthz"))) {
        gw_thread_t *t0 = &self->server->threads[0];
        if (t0->draining) {
            h2o_send_error_generic(req, 503, "Service Unavailable", "draining: shutting down\n", 0);
            return 0;
        }
        req->res.status = 200;
        req->res.reason = "OK";
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, H2O_STRLIT("text/plain"));
        h2o_send_inline(req, H2O_STRLIT("ok\n"));
        return 0;
    }
    h2o_send_error_generic(req, 404, "Not Found", "admin paths: /metrics /healthz\n", 0);
    return 0;
}

void gw_admin_register(h2o_hostconf_t *hostconf, gw_server_t *server)
{
    h2o_pathconf_t *pathconf = h2o_config_register_path(hostconf, "/", 0);
    s_admin_handler_t *h = (s_admin_handler_t *)h2o_create_handler(pathconf, sizeof(*h));
    h->super.on_req = s_on_req;
    h->server = server;
}
