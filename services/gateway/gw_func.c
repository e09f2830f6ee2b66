/*  gw_func — the function table (gw.h). One row per URL function; the
 *  request path (gw_route, gw_lookup, gw_transform) is the same for all.
 *
 *  dims — image function chains (seed 002 ch. 2; docs/image.md):
 *    /photo.jpg/dims/resize/500x500/format/webp
 *    └ source ┘└kw ┘└──────── chain ──────────┘
 *  The keyword is per vhost (dims.keyword), and only active vhosts match.
 */
#include <string.h>

#include "gw.h"
#include "gw_metrics.h"
#include "rf_chain.h"

/* ---- dims (image-worker) ------------------------------------------------- */

static const char *s_dims_keyword(const rf_vhost_conf_t *vh)
{
    return vh->dims.keyword;
}

static int s_dims_match(const rf_vhost_conf_t *vh, h2o_iovec_t path, h2o_iovec_t query, h2o_iovec_t *src,
                        h2o_iovec_t *chain)
{
    (void)query;
    const char *s, *c;
    size_t sl, cl;
    if (!vh->dims.active || !rf_chain_split(path.base, path.len, vh->dims.keyword, &s, &sl, &c, &cl))
        return 0;
    *src = h2o_iovec_init(s, sl);
    *chain = h2o_iovec_init(c, cl);
    return 1;
}

static int s_dims_parse(gw_req_t *rc, h2o_iovec_t chain, void **state, char *why, size_t why_len)
{
    rf_chain_t *c = h2o_mem_alloc_pool(&rc->req->pool, sizeof(*c));
    rf_chain_ctx_t ctx = rf_dims_ctx(&rc->vhost->dims);
    if (rf_chain_parse(chain.base, chain.len, &ctx, c, why, why_len) < 0)
        return -1;
    if (rf_chain_has_auto(c)) {
        /* format/auto: the client's Accept picks the format, which the
         * canonical chain (the cache key) then names. */
        ssize_t i = h2o_find_header(&rc->req->headers, H2O_TOKEN_ACCEPT, -1);
        h2o_iovec_t accept = i >= 0 ? rc->req->headers.entries[i].value : h2o_iovec_init(NULL, 0);
        rf_chain_negotiate(c, accept.base, accept.len);
        rc->vary = "accept";
    }
    *state = c;
    return 0;
}

static int s_dims_canon(const void *state, char *buf, size_t len)
{
    return rf_chain_format(state, buf, len);
}

static json_t *s_dims_json(const void *state)
{
    return rf_chain_to_json(state);
}

static size_t s_dims_limit(const rf_vhost_conf_t *vh)
{
    return vh->dims.max_source_size;
}

/* What the image worker's statuses mean (docs/image.md, "Errors"). */
static const gw_reply_rule_t s_dims_replies[] = {
    {200, GW_REPLY_BODY, 200, NULL, NULL},
    {415, GW_REPLY_ORIGINAL, 200, NULL, "source_not_decodable"},
    {413, GW_REPLY_ORIGINAL, 200, NULL, "source_too_large"},
    {404, GW_REPLY_ERROR, 404, NULL, "source not found"},
    {400, GW_REPLY_ERROR, 400, NULL, "the function chain cannot apply to this image"},
    {504, GW_REPLY_ERROR, 504, "image processing timed out", "deadline passed"},
    {503, GW_REPLY_ERROR, 503, "image worker busy", "over capacity"},
    {0, GW_REPLY_ERROR, 502, "image worker failed", "unknown error"}, /* anything else */
};

static const gw_func_t s_dims = {
    .name = "dims",
    .service = "image",
    .label = "image",
    .keyword = s_dims_keyword,
    .match = s_dims_match,
    .parse = s_dims_parse,
    .canon = s_dims_canon,
    .to_json = s_dims_json,
    .source = GW_SOURCE_WHOLE,
    .source_limit = s_dims_limit,
    .replies = s_dims_replies,
    .fallbacks = &gw_m.image_fallbacks,
};

/* ---- the table ------------------------------------------------------------ */

const gw_func_t *const gw_funcs[] = {&s_dims, NULL};
