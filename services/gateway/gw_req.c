/*  gw_req — the gateway's h2o handler: every request, plain or transformed,
 *  walks the same stages one way (gw.h, "the stages"):
 *
 *    recv -> route -> lookup -> fetch | transform -> deliver
 *
 *  This file owns the request context (gw_req_t): its id, its reference to
 *  the vhost table it started with, and what happens when h2o frees it.
 */
#include <stdio.h>
#include <string.h>
#include <sys/time.h>

#include "gw.h"
#include "gw_metrics.h"

/* Runs when the request pool is freed: the response is complete or the
 * client went away. Stage states allocated after the context (the
 * transform's) have released what they hold by then. */
static void s_req_dispose(void *p)
{
    gw_req_t *rc = p;
    gw_deliver_log(rc);
    rf_obj_unref(&rc->obj);
    rf_obj_unref(&rc->stale);
    if (rc->refill != NULL) { /* answered before the refresh could start */
        rf_obj_finish(rc->refill, false);
        rf_obj_unref(&rc->refill);
    }
    if (rc->fill != NULL) {
        rf_obj_finish(rc->fill, false); /* no-op when the result was kept */
        rf_obj_unref(&rc->fill);
    }
    gw_vhosts_unref(&rc->vhosts);
    rc->thread->inflight--;
}

static int s_reqid_ok(h2o_iovec_t v)
{
    if (v.len == 0 || v.len > 36)
        return 0;
    for (size_t i = 0; i < v.len; i++) {
        char c = v.base[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
              c == '.'))
            return 0;
    }
    return 1;
}

static uint64_t s_rand(gw_thread_t *t)
{
    /* xorshift64*: request ids need uniqueness, not secrecy. */
    uint64_t x = t->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    t->rng = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* Keeps the client's X-Request-Id when it is 1-36 of [A-Za-z0-9._-], else
 * makes 32 hex digits. */
static void s_set_request_id(gw_req_t *rc)
{
    h2o_req_t *req = rc->req;
    ssize_t i = h2o_find_header_by_str(&req->headers, H2O_STRLIT("x-request-id"), -1);
    if (i >= 0 && s_reqid_ok(req->headers.entries[i].value)) {
        memcpy(rc->request_id, req->headers.entries[i].value.base, req->headers.entries[i].value.len);
        rc->request_id[req->headers.entries[i].value.len] = '\0';
    } else {
        /* 32 hex digits, without printf: this runs for every request. */
        static const char hex[] = "0123456789abcdef";
        for (int half = 0; half < 2; half++) {
            uint64_t r = s_rand(rc->thread);
            for (int i = 15; i >= 0; i--, r >>= 4)
                rc->request_id[half * 16 + i] = hex[r & 15];
        }
        rc->request_id[32] = '\0';
    }
}

static int s_on_req(h2o_handler_t *self, h2o_req_t *req)
{
    (void)self;
    gw_thread_t *t = gw_thread_of(req->conn->ctx);
    gw_req_t *rc = h2o_mem_alloc_shared(&req->pool, sizeof(*rc), s_req_dispose);
    memset(rc, 0, sizeof(*rc));
    rc->thread = t;
    rc->req = req;
    rc->cache_status = "refract; fwd=bypass";
    gettimeofday(&rc->started, NULL);
    t->inflight++;
    rf_metric_gauge_add(gw_m.http_inflight, NULL, 1);
    rc->vhosts = t->vhosts;
    gw_vhosts_ref(rc->vhosts);
    s_set_request_id(rc);

    if (gw_recv(rc) < 0 || gw_rewrite(rc) < 0 || gw_route(rc) < 0 || gw_lookup(rc) < 0 || gw_storage(rc) != 0)
        return 0;
    if (rc->obj != NULL)
        gw_serve(rc);
    else if (rc->func != NULL)
        gw_transform(rc);
    else
        gw_fetch(rc);
    return 0;
}

void gw_req_register(h2o_hostconf_t *hostconf)
{
    h2o_pathconf_t *pathconf = h2o_config_register_path(hostconf, "/", 0);
    h2o_handler_t *handler = h2o_create_handler(pathconf, sizeof(*handler));
    handler->on_req = s_on_req;
}
