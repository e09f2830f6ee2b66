/*  gw_func — the function table (gw.h). One row per URL function; the
 *  request path (gw_route, gw_lookup, gw_transform) is the same for all.
 *
 *  dims — image function chains (seed 002 ch. 2; docs/image.md):
 *    /photo.jpg/dims/resize/500x500/format/webp
 *    └ source ┘└kw ┘└──────── chain ──────────┘
 *  The keyword is per vhost (dims.keyword), and only active vhosts match.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "gw.h"
#include "gw_metrics.h"
#include "rf_vparse.h"
#include "rf_chain.h"
#include "rf_path.h"

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
    if (!vh->dims.active)
        return 0;
    /* "/dims/CHAIN/src/SOURCE" (an external or named source: SOURCE does
     * not start with '/'), else "/SOURCE/dims/CHAIN" */
    if (!rf_chain_split_src(path.base, path.len, vh->dims.keyword, &c, &cl, &s, &sl) &&
        !rf_chain_split(path.base, path.len, vh->dims.keyword, &s, &sl, &c, &cl))
        return 0;
    *src = h2o_iovec_init(s, sl);
    *chain = h2o_iovec_init(c, cl);
    return 1;
}

static int s_dims_parse(gw_req_t *rc, h2o_iovec_t chain, void **state, char *why, size_t why_len)
{
    rf_chain_t *c = h2o_mem_alloc_pool(&rc->req->pool, sizeof(*c));
    rf_chain_ctx_t ctx = rf_dims_ctx(&rc->vhost->dims);
    /* The canonical path keeps %XX of reserved characters, and clients
     * send the geometry modifiers encoded ("500x500%5E"): the chain is
     * read decoded (the canonical chain in the cache key is one spelling). */
    char *text = h2o_mem_alloc_pool(&rc->req->pool, chain.len + 1);
    size_t tl = rf_path_decode(chain.base, chain.len, text);
    if (rf_chain_parse(text, tl, &ctx, c, why, why_len) < 0)
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

/* A /src/ source's path with the request's query: the query belongs to
 * the source URL ("…/src/http://h/a.jpg?v=2"). */
static h2o_iovec_t s_with_query(gw_req_t *rc, h2o_iovec_t path)
{
    return rc->query.len > 0 ? h2o_concat(&rc->req->pool, path, rc->query) : path;
}

/* The source of a "/KEYWORD/CHAIN/src/SOURCE" URL (seed Appendix C), when
 * it does not start with '/': "http(s)://host/path" — a host the vhost's
 * dims.sources.hosts allows, reached only at public addresses unless
 * dims.sources.private — or "NAME/path" under a named source. Sets
 * rc->byclient (the origin the source is fetched from) and rc->src (its
 * path there). The same for each redirect of such a source (gw_transform).
 * 0, or -1 when answered (403/400/404). */
/* An "http(s)://host[:port][/path]" source: 1 with its scheme, its host
 * (decoded, lower case) and its path ("/" when none); 0 when `s` is not a
 * URL; -1 when its host is malformed. */
static int s_url_source(h2o_iovec_t s, bool *https, char name[256], h2o_iovec_t *path)
{
    *https = s.len > 8 && memcmp(s.base, "https://", 8) == 0;
    if (!*https && !(s.len > 7 && memcmp(s.base, "http://", 7) == 0))
        return 0;
    const char *host = s.base + (*https ? 8 : 7), *end = s.base + s.len;
    const char *slash = memchr(host, '/', (size_t)(end - host));
    size_t hl = (size_t)((slash ? slash : end) - host);
    /* clients encode an IPv6 literal's brackets and colons */
    size_t nl = hl < 256 ? rf_path_decode(host, hl, name) : 0;
    if (nl == 0 || strlen(name) != nl || strpbrk(name, "@%/\\ ") != NULL)
        return -1;
    for (size_t i = 0; i < nl; i++)
        name[i] = (char)h2o_tolower(name[i]);
    *path = slash ? h2o_iovec_init(slash, (size_t)(end - slash)) : h2o_iovec_init("/", 1);
    return 1;
}

/* The named source a "NAME/path" source names (its path in *path), or NULL. */
static const rf_named_source_t *s_named_source(const rf_dims_conf_t *d, h2o_iovec_t s, h2o_iovec_t *path)
{
    const char *slash = memchr(s.base, '/', s.len);
    size_t nl = slash ? (size_t)(slash - s.base) : s.len;
    for (size_t i = 0; i < d->n_named; i++)
        if (strlen(d->named[i].name) == nl && memcmp(d->named[i].name, s.base, nl) == 0) {
            *path = slash ? h2o_iovec_init(slash, (size_t)(s.base + s.len - slash)) : h2o_iovec_init("/", 1);
            return &d->named[i];
        }
    return NULL;
}

/* The source of a "/KEYWORD/CHAIN/src/SOURCE" URL (seed Appendix C), when
 * it does not start with '/': "http(s)://host/path" — a host the vhost's
 * dims.sources.hosts allows, reached only at public addresses unless
 * dims.sources.private — or "NAME/path" under a named source. Sets
 * rc->byclient (the origin the source is fetched from) and rc->src (its
 * path there). The same for each redirect of such a source (gw_transform).
 * 0, or -1 when answered (403/400/404). */
static int s_dims_resolve_source(gw_req_t *rc)
{
    const rf_dims_conf_t *d = &rc->vhost->dims;
    h2o_iovec_t s = rc->src, path;
    if (s.len > 0 && s.base[0] == '/')
        return 0;
    bool https;
    char name[256];
    int url = s_url_source(s, &https, name, &path);
    if (url < 0) {
        gw_send_error(rc, 400, "Bad Request", "dims source: want http(s)://host[:port]/path");
        return -1;
    }
    if (url == 1) {
        if (d->n_source_hosts == 0) {
            gw_send_error(rc, 403, "Forbidden", "dims source: URL sources are off for this vhost (dims.sources.hosts)");
            return -1;
        }
        if (!gw_host_allowed(name, d->source_hosts, d->n_source_hosts)) {
            gw_send_error(rc, 403, "Forbidden", "dims source: host %s is not in dims.sources.hosts", name);
            return -1;
        }
        rf_origin_t *o = gw_client_origin(rc, https, name, "dims source");
        if (o == NULL)
            return -1;
        o->public_only = !d->source_private;
        rc->byclient = o;
        rc->src = s_with_query(rc, path);
        return 0;
    }
    const rf_named_source_t *named = s_named_source(d, s, &path);
    if (named != NULL) {
        rc->byclient = &named->origin;
        rc->src = s_with_query(rc, path);
        return 0;
    }
    const char *slash = memchr(s.base, '/', s.len);
    size_t nl = slash ? (size_t)(slash - s.base) : s.len;
    gw_send_error(rc, 404, "Not Found", "dims source: no named source '%.*s' (dims.sources.named)",
                  (int)(nl > 64 ? 64 : nl), s.base);
    return -1;
}

/* The key's URL of a source: the origin's URL as gw_client_origin or the
 * configuration writes it, then the path (s_key in gw_lookup.c). */
static int s_dims_source_key(const rf_vhost_conf_t *vh, h2o_iovec_t src, char *out, size_t cap)
{
    bool https;
    char name[256];
    h2o_iovec_t path;
    int url = s_url_source(src, &https, name, &path);
    int n = -1;
    if (url == 1) {
        n = snprintf(out, cap, "%s://%s%.*s", https ? "https" : "http", name, (int)path.len, path.base);
    } else if (url == 0) {
        const rf_named_source_t *named = s_named_source(&vh->dims, src, &path);
        if (named != NULL)
            n = snprintf(out, cap, "%s%.*s", named->origin.url, (int)path.len, path.base);
    }
    return n >= 0 && (size_t)n < cap ? 0 : -1;
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
    .resolve_source = s_dims_resolve_source,
    .source_key = s_dims_source_key,
    .replies = s_dims_replies,
    .fallbacks = &gw_m.image_fallbacks,
};

/* ---- trimming's ranges (also read by mp4hls over a trim) ------------------------- */

#define S_TRIM_MAX_RANGES RF_VPARSE_MAX_RANGES

typedef rf_vtrim_t s_trim_t;

static int s_trim_parse(gw_req_t *rc, h2o_iovec_t chain, void **state, char *why, size_t why_len);
static int s_trim_canon(const void *state, char *buf, size_t len);
static h2o_iovec_t s_query_param(h2o_iovec_t q, const char *name);

/* ---- mp4hls (video-worker) --------------------------------------------------- */

/* What an mp4hls URL names, after the keyword. */
typedef struct {
    enum { S_HLS_MEDIA, S_HLS_MASTER, S_HLS_SEGMENT, S_HLS_INIT } what;
    bool m4s;              /* a segment named seg-N.m4s (fMP4), not seg-N.ts */
    int n;                 /* segment number (from 0, before mp4hls.sequence) */
    rf_mp4hls_conf_t conf; /* the vhost's settings when it was parsed */
    /* Where the playlist's URIs are relative to: "" for /v.mp4/mp4hls/…;
     * "v.mp4?QUERY/mp4hls/" for the seed's /v.mp4?QUERY/mp4hls/… (a
     * relative URI resolves against the path, which ends at "v.mp4"). */
    const char *uri_base;
    const s_trim_t *trim; /* the seed's /v.mp4?trimming=…/mp4hls/…: HLS of these ranges; NULL: the whole video */
} s_hls_t;

/* Segment names: "seg-N.ts", or "seg-N.m4s" after "init.mp4" for fMP4,
 * N from 0 (the playlist names them; the worker says which a video has). */
#define S_HLS_SEG_PREFIX "seg-"
#define S_HLS_SEG_SUFFIX ".ts"
#define S_HLS_SEG_SUFFIX_FMP4 ".m4s"
#define S_HLS_INIT_NAME "init.mp4"

static const char *s_hls_keyword(const rf_vhost_conf_t *vh)
{
    return vh->mp4hls.keyword;
}

static int s_hls_match(const rf_vhost_conf_t *vh, h2o_iovec_t path, h2o_iovec_t query, h2o_iovec_t *src,
                       h2o_iovec_t *chain)
{
    const char *s, *c;
    size_t sl, cl;
    if (!vh->mp4hls.active)
        return 0;
    if (rf_chain_split(path.base, path.len, vh->mp4hls.keyword, &s, &sl, &c, &cl)) {
        *src = h2o_iovec_init(s, sl);
        *chain = h2o_iovec_init(c, cl);
        return 1;
    }
    /* The seed's form, /v.mp4?trimming=17-20,30-40/mp4hls/index.m3u8: the
     * source is the path with the query before the keyword (another
     * function's URL, read back through the gateway); parse splits it. */
    size_t kl = strlen(vh->mp4hls.keyword);
    for (size_t i = 1; i + kl + 2 < query.len; i++)
        if (query.base[i] == '/' && memcmp(query.base + i + 1, vh->mp4hls.keyword, kl) == 0 &&
            query.base[i + kl + 1] == '/') {
            /* only a trimming query: "/player.html?src=/v.mp4/mp4hls/index.m3u8" is a page */
            const char *v;
            size_t vl;
            if (!vh->trimming.active || (!rf_vparse_query_param(query.base, i, vh->trimming.param, &v, &vl) &&
                                         !rf_vparse_query_param(query.base, i, "start", &v, &vl) &&
                                         !rf_vparse_query_param(query.base, i, "end", &v, &vl)))
                return 0;
            *src = path;
            *chain = query; /* starts with '?' */
            return 1;
        }
    return 0;
}

/* The seed's query form, /v.mp4?trimming=17-20,30-40/mp4hls/index.m3u8:
 * st->trim gets the ranges (the worker trims the source itself, then
 * segments the result), *chain what follows "/KEYWORD/", st->uri_base what
 * the playlist's URIs start with (they must carry the query). 0, or -1
 * with why set. */
static int s_hls_query_source(gw_req_t *rc, h2o_iovec_t *chain, s_hls_t *st, char *why, size_t why_len)
{
    const char *kw = st->conf.keyword;
    size_t kl = strlen(kw);
    const char *q = chain->base;
    size_t i = 1;
    while (!(q[i] == '/' && memcmp(q + i + 1, kw, kl) == 0 && q[i + kl + 1] == '/'))
        i++; /* match found it */
    h2o_iovec_t query = h2o_iovec_init(q, i), path = rc->src;
    const char *param = rc->vhost->trimming.param;
    if (!rc->vhost->trimming.active ||
        (s_query_param(query, param).base == NULL && s_query_param(query, "start").base == NULL &&
         s_query_param(query, "end").base == NULL)) {
        snprintf(why, why_len, "the query before /%s/ must be ?%s=… or ?start=&end= (trimming on)", kw, param);
        return -1;
    }
    void *trim = NULL;
    if (s_trim_parse(rc, query, &trim, why, why_len) < 0)
        return -1;
    st->trim = trim;
    const char *slash = path.len > 0 ? memrchr(path.base, '/', path.len) : NULL;
    h2o_iovec_t name = slash ? h2o_iovec_init(slash + 1, (size_t)(path.base + path.len - slash - 1)) : path;
    st->uri_base = h2o_concat(&rc->req->pool, name, h2o_iovec_init(q, i + kl + 2)).base;
    *chain = h2o_iovec_init(q + i + kl + 2, chain->len - i - kl - 2);
    return 0;
}

static int s_hls_parse(gw_req_t *rc, h2o_iovec_t chain, void **state, char *why, size_t why_len)
{
    const rf_mp4hls_conf_t *h = &rc->vhost->mp4hls;
    s_hls_t *st = h2o_mem_alloc_pool(&rc->req->pool, sizeof(*st));
    memset(st, 0, sizeof(*st));
    st->conf = *h;
    st->uri_base = "";
    if (chain.len > 0 && chain.base[0] == '?' && s_hls_query_source(rc, &chain, st, why, why_len) < 0)
        return -1;
    if (h2o_memis(chain.base, chain.len, h->index, strlen(h->index))) {
        st->what = S_HLS_MEDIA;
    } else if (h->alternates && h2o_memis(chain.base, chain.len, h->alternates_name, strlen(h->alternates_name))) {
        st->what = S_HLS_MASTER;
    } else if ((st->n = rf_vparse_segment(chain.base, chain.len, S_HLS_SEG_PREFIX, S_HLS_SEG_SUFFIX)) >= 0) {
        st->what = S_HLS_SEGMENT;
    } else if ((st->n = rf_vparse_segment(chain.base, chain.len, S_HLS_SEG_PREFIX, S_HLS_SEG_SUFFIX_FMP4)) >= 0) {
        st->what = S_HLS_SEGMENT;
        st->m4s = true;
    } else if (h2o_memis(chain.base, chain.len, H2O_STRLIT(S_HLS_INIT_NAME))) {
        st->what = S_HLS_INIT;
        st->n = 0;
    } else {
        snprintf(why, why_len,
                 "'%.*s' is not %s%s%s, " S_HLS_SEG_PREFIX "N" S_HLS_SEG_SUFFIX ", " S_HLS_INIT_NAME
                 " or " S_HLS_SEG_PREFIX "N" S_HLS_SEG_SUFFIX_FMP4 " (N from 0)",
                 (int)(chain.len > 64 ? 64 : chain.len), chain.base, h->index, h->alternates ? ", " : "",
                 h->alternates ? h->alternates_name : "");
        return -1;
    }
    *state = st;
    return 0;
}

/* The cache key names what the output depends on: the playlist its
 * version, first sequence number and segment duration; a segment its
 * number and the duration that placed its cuts. */
static int s_hls_canon(const void *state, char *buf, size_t len)
{
    const s_hls_t *st = state;
    int n;
    switch (st->what) {
    case S_HLS_MEDIA:
        n = snprintf(buf, len, "media;v=%d;seq=%d;d=%d", st->conf.version, st->conf.sequence, st->conf.duration);
        break;
    case S_HLS_MASTER: /* BANDWIDTH comes from where the segments are cut */
        n = snprintf(buf, len, "master;v=%d;media=%s;d=%d", st->conf.version, st->conf.index, st->conf.duration);
        break;
    case S_HLS_INIT: n = snprintf(buf, len, "init;d=%d", st->conf.duration); break;
    default: n = snprintf(buf, len, "segment=%d;d=%d%s", st->n, st->conf.duration, st->m4s ? ";m4s" : ""); break;
    }
    /* fMP4 asked for every video: other playlists, segments and init */
    if (n >= 0 && (size_t)n < len && st->conf.fmp4)
        n += snprintf(buf + n, len - (size_t)n, ";fmp4");
    if (n < 0 || (size_t)n >= len)
        return -1;
    if (st->trim == NULL)
        return 0;
    /* HLS of a trim: the ranges are part of what it is (the source path
     * stays the video's, so purging the video takes these too) */
    size_t o = (size_t)n;
    if (o + 7 >= len)
        return -1;
    memcpy(buf + o, ";trim=", 6);
    return s_trim_canon(st->trim, buf + o + 6, len - o - 6);
}

static json_t *s_hls_json(const void *state)
{
    const s_hls_t *st = state;
    static const char *const what[] = {"media", "master", "segment", "init"};
    char media[600], prefix[600], init[600];
    snprintf(media, sizeof(media), "%s%s", st->uri_base, st->conf.index);
    snprintf(prefix, sizeof(prefix), "%s" S_HLS_SEG_PREFIX, st->uri_base);
    snprintf(init, sizeof(init), "%s" S_HLS_INIT_NAME, st->uri_base);
    json_t *j = json_pack("[{s:s, s:s, s:i, s:i, s:i, s:i, s:s, s:s, s:s, s:s, s:s}]", "op", "hls", "what",
                          what[st->what], "segment", st->n, "version", st->conf.version, "sequence", st->conf.sequence,
                          "duration", st->conf.duration, "media", media, "segment_prefix", prefix, "segment_suffix",
                          st->m4s ? S_HLS_SEG_SUFFIX_FMP4 : S_HLS_SEG_SUFFIX, "format", st->conf.fmp4 ? "fmp4" : "ts",
                          "init", init);
    if (j != NULL && st->trim != NULL) { /* the worker trims first, then segments the trim */
        json_t *ranges = json_array();
        for (int i = 0; ranges != NULL && i < st->trim->n; i++)
            json_array_append_new(ranges,
                                  json_pack("[I, I]", (json_int_t)st->trim->ms[i][0], (json_int_t)st->trim->ms[i][1]));
        json_object_set_new(json_array_get(j, 0), "trim_ms", ranges);
        json_object_set_new(json_array_get(j, 0), "trim_accurate", json_boolean(st->trim->accurate));
    }
    return j;
}

static size_t s_no_limit(const rf_vhost_conf_t *vh)
{
    (void)vh;
    return 0; /* read by range: a source's size costs nothing up front */
}

/* The statuses every video function answers alike, after its own
 * (docs/video.md, "Errors"); the last is the default. */
// clang-format off
#define S_VIDEO_REPLIES                                                          \
    {404, GW_REPLY_ERROR, 404, NULL, "not found"},                               \
    {400, GW_REPLY_ERROR, 400, NULL, "bad request"},                             \
    {502, GW_REPLY_ERROR, 502, "video source unreadable", "source read failed"}, \
    {504, GW_REPLY_ERROR, 504, "video processing timed out", "deadline passed"}, \
    {503, GW_REPLY_ERROR, 503, "video worker busy", "over capacity"},            \
    {0, GW_REPLY_ERROR, 502, "video worker failed", "unknown error"}
// clang-format on

/* What every video row shares: the video worker, sources read by range. */
#define S_VIDEO_ROW .service = "video", .label = "video", .source = GW_SOURCE_RANGE, .source_limit = s_no_limit

/* What the video worker's statuses mean (docs/video.md, "Errors"). */
static const gw_reply_rule_t s_hls_replies[] = {
    {200, GW_REPLY_BODY, 200, NULL, NULL},
    {415, GW_REPLY_ERROR, 415, "not a video mp4hls can segment", "unsupported"},
    S_VIDEO_REPLIES,
};

static const gw_func_t s_mp4hls = {
    .name = "mp4hls",
    S_VIDEO_ROW,
    .keyword = s_hls_keyword,
    .match = s_hls_match,
    .parse = s_hls_parse,
    .canon = s_hls_canon,
    .to_json = s_hls_json,
    .replies = s_hls_replies,
    .fallbacks = NULL,
};

/* ---- thumbnail (video-worker) ------------------------------------------------- */

typedef struct {
    rf_vthumb_t v;    /* time, box, format, keyframe */
    int quality;      /* the vhost's thumbnail.quality */
    rf_chain_t *dims; /* "…/thumbnail/T/dims/CHAIN": the frame goes through this chain (the image worker); or NULL */
} s_thumb_t;

static const char *s_thumb_keyword(const rf_vhost_conf_t *vh)
{
    return vh->thumbnail.keyword;
}

static int s_thumb_match(const rf_vhost_conf_t *vh, h2o_iovec_t path, h2o_iovec_t query, h2o_iovec_t *src,
                         h2o_iovec_t *chain)
{
    (void)query;
    const char *kw = vh->thumbnail.keyword;
    size_t kl = strlen(kw);
    if (!vh->thumbnail.active)
        return 0;
    /* The seed's form, /KEYWORD/TIME/VIDEO: the time is the chain. */
    if (path.len > kl + 2 && path.base[0] == '/' && memcmp(path.base + 1, kw, kl) == 0 && path.base[kl + 1] == '/') {
        const char *t = path.base + kl + 2, *end = path.base + path.len;
        const char *slash = memchr(t, '/', (size_t)(end - t));
        if (slash != NULL && slash + 1 < end && rf_vparse_time(t, (size_t)(slash - t)) >= 0) {
            *chain = h2o_iovec_init(t, (size_t)(slash - t));
            *src = h2o_iovec_init(slash, (size_t)(end - slash));
            return 1;
        }
    }
    const char *s, *c;
    size_t sl, cl;
    if (!rf_chain_split(path.base, path.len, kw, &s, &sl, &c, &cl))
        return 0;
    /* "/photo.jpg/dims/thumbnail/200x200" is dims' thumbnail operation:
     * a "/thumbnail/" inside a dims chain is not this function */
    const char *dk = vh->dims.keyword;
    size_t dl = dk != NULL ? strlen(dk) : 0;
    for (size_t i = 0; vh->dims.active && dl > 0 && i + dl < sl; i++)
        if (s[i] == '/' && memcmp(s + i + 1, dk, dl) == 0 && (i + 1 + dl == sl || s[i + 1 + dl] == '/'))
            return 0;
    *src = h2o_iovec_init(s, sl);
    *chain = h2o_iovec_init(c, cl);
    return 1;
}

/* "TIME[/WxH][/jpeg|jpg|png|webp][/keyframe]" */
static int s_thumb_parse(gw_req_t *rc, h2o_iovec_t chain, void **state, char *why, size_t why_len)
{
    s_thumb_t *t = h2o_mem_alloc_pool(&rc->req->pool, sizeof(*t));
    memset(t, 0, sizeof(*t));
    t->quality = rc->vhost->thumbnail.quality;
    /* "T/…/dims/CHAIN": the frame is piped through an image chain, parsed
     * here like a dims URL's (the vhost's presets and rule sets) */
    const char *ds, *dc;
    size_t dsl, dcl;
    const rf_dims_conf_t *dc_conf = &rc->vhost->dims;
    if (dc_conf->active && rf_chain_split(chain.base - 1, chain.len + 1, dc_conf->keyword, &ds, &dsl, &dc, &dcl)) {
        t->dims = h2o_mem_alloc_pool(&rc->req->pool, sizeof(*t->dims));
        rf_chain_ctx_t ctx = rf_dims_ctx(dc_conf);
        char *text = h2o_mem_alloc_pool(&rc->req->pool, dcl + 1);
        size_t tl = rf_path_decode(dc, dcl, text);
        char w[300];
        if (rf_chain_parse(text, tl, &ctx, t->dims, w, sizeof(w)) < 0) {
            snprintf(why, why_len, "%s: %s", dc_conf->keyword, w);
            return -1;
        }
        chain.len = dsl - 1; /* what is before "/dims/" */
    }
    if (rf_vparse_thumb(chain.base, chain.len, &t->v, why, why_len) < 0)
        return -1;
    *state = t;
    return 0;
}

static int s_thumb_canon(const void *state, char *buf, size_t len)
{
    const s_thumb_t *t = state;
    int n = snprintf(buf, len, "t=%lld.%03lld;box=%dx%d;f=%s;q=%d;kf=%d", (long long)(t->v.ms / 1000),
                     (long long)(t->v.ms % 1000), t->v.width, t->v.height, t->v.format, t->quality, t->v.keyframe);
    if (n < 0 || (size_t)n >= len)
        return -1;
    if (t->dims == NULL)
        return 0;
    if ((size_t)n + 7 >= len)
        return -1;
    memcpy(buf + n, ";dims=", 6);
    return rf_chain_format(t->dims, buf + n + 6, len - (size_t)n - 6);
}

/* The image chain the frame goes through, if the URL named one. */
static json_t *s_thumb_then(const void *state)
{
    const s_thumb_t *t = state;
    return t->dims != NULL ? rf_chain_to_json(t->dims) : NULL;
}

static json_t *s_thumb_json(const void *state)
{
    const s_thumb_t *t = state;
    return rf_vthumb_json(&t->v, t->quality);
}

static const gw_reply_rule_t s_thumb_replies[] = {
    {200, GW_REPLY_BODY, 200, NULL, NULL},
    {415, GW_REPLY_ERROR, 415, "not a video a thumbnail can be taken from", "unsupported"},
    S_VIDEO_REPLIES,
};

static const gw_func_t s_thumbnail = {
    .name = "thumbnail",
    S_VIDEO_ROW,
    .keyword = s_thumb_keyword,
    .match = s_thumb_match,
    .parse = s_thumb_parse,
    .canon = s_thumb_canon,
    .to_json = s_thumb_json,
    .replies = s_thumb_replies,
    .fallbacks = NULL,
    .then = s_thumb_then,
    .then_service = "image",
    .then_replies = s_dims_replies,
};

/* ---- sprite (video-worker) ------------------------------------------------------ */

typedef struct {
    rf_vsprite_t v; /* interval, grid, tile, sheet */
    int quality;    /* the vhost's thumbnail.quality */
} s_sprite_t;

static const char *s_sprite_keyword(const rf_vhost_conf_t *vh)
{
    return vh->thumbnail.sprite_keyword;
}

static int s_sprite_match(const rf_vhost_conf_t *vh, h2o_iovec_t path, h2o_iovec_t query, h2o_iovec_t *src,
                          h2o_iovec_t *chain)
{
    (void)query;
    const char *s, *c;
    size_t sl, cl;
    if (!vh->thumbnail.active || !vh->thumbnail.sprites ||
        !rf_chain_split(path.base, path.len, vh->thumbnail.sprite_keyword, &s, &sl, &c, &cl))
        return 0;
    *src = h2o_iovec_init(s, sl);
    *chain = h2o_iovec_init(c, cl);
    return 1;
}

/* "EVERY/COLSxROWS/WxH/(N.jpg|sprite.vtt)" */
static int s_sprite_parse(gw_req_t *rc, h2o_iovec_t chain, void **state, char *why, size_t why_len)
{
    s_sprite_t *t = h2o_mem_alloc_pool(&rc->req->pool, sizeof(*t));
    memset(t, 0, sizeof(*t));
    t->quality = rc->vhost->thumbnail.quality;
    if (rf_vparse_sprite(chain.base, chain.len, &t->v, why, why_len) < 0)
        return -1;
    *state = t;
    return 0;
}

static int s_sprite_canon(const void *state, char *buf, size_t len)
{
    const s_sprite_t *t = state;
    int n = snprintf(buf, len, "every=%lld;grid=%dx%d;tile=%dx%d;sheet=%d;q=%d", (long long)t->v.every_ms, t->v.cols,
                     t->v.rows, t->v.tile_w, t->v.tile_h, t->v.sheet, t->quality);
    return n < 0 || (size_t)n >= len ? -1 : 0;
}

static json_t *s_sprite_json(const void *state)
{
    const s_sprite_t *t = state;
    return rf_vsprite_json(&t->v, t->quality);
}

static const gw_func_t s_sprite = {
    .name = "sprite",
    S_VIDEO_ROW,
    .keyword = s_sprite_keyword,
    .match = s_sprite_match,
    .parse = s_sprite_parse,
    .canon = s_sprite_canon,
    .to_json = s_sprite_json,
    .replies = s_thumb_replies,
    .fallbacks = NULL,
};

/* ---- trimming (video-worker) -------------------------------------------------- */

static const char *s_trim_keyword(const rf_vhost_conf_t *vh)
{
    return vh->trimming.param;
}

/* Whether the path names a file trimming applies to (.mp4 .m4v .mov .m4a). */
static bool s_trim_ext(h2o_iovec_t path, bool *audio)
{
    static const char *const exts[] = {".mp4", ".m4v", ".mov", ".m4a"};
    for (int i = 0; i < 4; i++)
        if (path.len > 4 && h2o_lcstris(path.base + path.len - 4, 4, exts[i], 4)) {
            *audio = i == 3;
            return true;
        }
    return false;
}

/* The value of query parameter `name` in q, or base NULL. */
static h2o_iovec_t s_query_param(h2o_iovec_t q, const char *name)
{
    const char *v;
    size_t vl;
    return rf_vparse_query_param(q.base, q.len, name, &v, &vl) ? h2o_iovec_init(v, vl) : h2o_iovec_init(NULL, 0);
}

static int s_trim_match(const rf_vhost_conf_t *vh, h2o_iovec_t path, h2o_iovec_t query, h2o_iovec_t *src,
                        h2o_iovec_t *chain)
{
    bool audio;
    if (!vh->trimming.active || query.len == 0 || !s_trim_ext(path, &audio) || (audio && !vh->trimming.m4a))
        return 0;
    if (s_query_param(query, vh->trimming.param).base == NULL && s_query_param(query, "start").base == NULL &&
        s_query_param(query, "end").base == NULL)
        return 0;
    *src = path;
    *chain = query; /* the parameters are read in parse */
    return 1;
}

static int s_trim_parse(gw_req_t *rc, h2o_iovec_t chain, void **state, char *why, size_t why_len)
{
    const rf_trim_conf_t *c = &rc->vhost->trimming;
    s_trim_t *t = h2o_mem_alloc_pool(&rc->req->pool, sizeof(*t));
    memset(t, 0, sizeof(*t));
    t->max_ratio = c->max_ratio;
    t->accurate = c->accurate;
    s_trim_ext(rc->src, &t->audio);
    if (rf_vparse_trim(chain.base, chain.len, c->param, t, why, why_len) < 0)
        return -1;
    *state = t;
    return 0;
}

static int s_trim_canon(const void *state, char *buf, size_t len)
{
    const s_trim_t *t = state;
    size_t o = 0;
    for (int i = 0; i < t->n; i++) {
        int n = t->ms[i][1] >= 0 ? snprintf(buf + o, len - o, "%s%lld-%lld", i ? "," : "", (long long)t->ms[i][0],
                                            (long long)t->ms[i][1])
                                 : snprintf(buf + o, len - o, "%s%lld-", i ? "," : "", (long long)t->ms[i][0]);
        if (n < 0 || (size_t)n >= len - o)
            return -1;
        o += (size_t)n;
    }
    int n = snprintf(buf + o, len - o, ";max=%d;acc=%d", t->max_ratio, t->accurate);
    return n < 0 || (size_t)n >= len - o ? -1 : 0;
}

static json_t *s_trim_json(const void *state)
{
    return rf_vtrim_json(state);
}

static const gw_reply_rule_t s_trim_replies[] = {
    {200, GW_REPLY_BODY, 200, NULL, NULL},
    {422, GW_REPLY_ORIGINAL, 200, NULL, "trim_over_max_ratio"},
    {415, GW_REPLY_ERROR, 415, "not a video that can be trimmed", "unsupported"},
    S_VIDEO_REPLIES,
};

static const gw_func_t s_trimming = {
    .name = "trimming",
    S_VIDEO_ROW,
    .keyword = s_trim_keyword,
    .match = s_trim_match,
    .parse = s_trim_parse,
    .canon = s_trim_canon,
    .to_json = s_trim_json,
    .replies = s_trim_replies,
    .fallbacks = &gw_m.video_fallbacks,
};

/* ---- transcode (video-worker) --------------------------------------------------- */

typedef struct {
    int max_height; /* the output's height at most (a "720p" option, or the vhost's) */
    int max_duration, crf;
    int kbps;                          /* the rung's bit-rate cap (transcode.ladder), 0: none */
    const rf_transcode_conf_t *ladder; /* no height asked on a vhost with a ladder: the worker picks */
} s_tx_t;

static const char *s_tx_keyword(const rf_vhost_conf_t *vh)
{
    return vh->transcode.keyword;
}

/* Whether the path's extension is in `inputs` (comma-separated, lower case). */
static bool s_ext_in(const char *inputs, const char *s, size_t n)
{
    const char *dot = NULL;
    for (size_t i = n; i > 0 && s[i - 1] != '/'; i--)
        if (s[i - 1] == '.') {
            dot = s + i;
            break;
        }
    size_t el = dot ? (size_t)(s + n - dot) : 0;
    if (el == 0 || el > 8)
        return false;
    for (const char *p = inputs; *p;) {
        const char *comma = strchr(p, ',');
        size_t l = comma ? (size_t)(comma - p) : strlen(p);
        if (l == el && strncasecmp(p, dot, el) == 0)
            return true;
        p += l + (comma ? 1 : 0);
    }
    return false;
}

static int s_tx_match(const rf_vhost_conf_t *vh, h2o_iovec_t path, h2o_iovec_t query, h2o_iovec_t *src,
                      h2o_iovec_t *chain)
{
    (void)query;
    const char *s, *c;
    size_t sl, cl;
    if (!vh->transcode.active || !rf_chain_split(path.base, path.len, vh->transcode.keyword, &s, &sl, &c, &cl) ||
        !s_ext_in(vh->transcode.inputs, s, sl))
        return 0;
    *src = h2o_iovec_init(s, sl);
    *chain = h2o_iovec_init(c, cl);
    return 1;
}

/* "" or "HEIGHTp" (a smaller output than the vhost's max_height) */
static int s_tx_parse(gw_req_t *rc, h2o_iovec_t chain, void **state, char *why, size_t why_len)
{
    const rf_transcode_conf_t *c = &rc->vhost->transcode;
    s_tx_t *t = h2o_mem_alloc_pool(&rc->req->pool, sizeof(*t));
    t->max_height = c->max_height;
    t->max_duration = c->max_duration;
    t->crf = c->crf;
    if (chain.len > 0) {
        int64_t h = chain.len > 1 && chain.base[chain.len - 1] == 'p'
                        ? rf_vparse_digits(chain.base, chain.len - 1, (int64_t)c->max_height + 1)
                        : -1;
        if (h < 2) {
            snprintf(why, why_len, "'%.*s' is not a height such as 720p (at most %dp)",
                     (int)(chain.len > 32 ? 32 : chain.len), chain.base, c->max_height);
            return -1;
        }
        t->max_height = (int)h;
    }
    t->kbps = 0;
    t->ladder = chain.len == 0 && c->n_rungs > 0 ? c : NULL;
    if (chain.len > 0 && c->n_rungs > 0) { /* a ladder: one of its rungs, at its bit rate */
        int i = 0;
        while (i < c->n_rungs && c->rungs[i].height != t->max_height)
            i++;
        if (i == c->n_rungs) {
            size_t o = (size_t)snprintf(why, why_len, "%dp is not on this vhost's ladder (", t->max_height);
            for (int k = 0; k < c->n_rungs && o < why_len; k++)
                o += (size_t)snprintf(why + o, why_len - o, "%s%dp", k ? ", " : "", c->rungs[k].height);
            if (o < why_len)
                snprintf(why + o, why_len - o, ")");
            return -1;
        }
        t->kbps = c->rungs[i].kbps;
    }
    *state = t;
    return 0;
}

static int s_tx_canon(const void *state, char *buf, size_t len)
{
    const s_tx_t *t = state;
    int n = snprintf(buf, len, "h264-aac;h=%d;crf=%d;max=%d;kbps=%d", t->max_height, t->crf, t->max_duration, t->kbps);
    for (int i = 0; t->ladder != NULL && i < t->ladder->n_rungs && n >= 0 && (size_t)n < len; i++)
        n += snprintf(buf + n, len - (size_t)n, "%s%d@%d", i ? "," : ";ladder=", t->ladder->rungs[i].height,
                      t->ladder->rungs[i].kbps);
    return n < 0 || (size_t)n >= len ? -1 : 0;
}

static json_t *s_tx_json(const void *state)
{
    const s_tx_t *t = state;
    json_t *op = json_pack("{s:s, s:i, s:i, s:i, s:i}", "op", "transcode", "max_height", t->max_height, "crf", t->crf,
                           "max_duration", t->max_duration, "max_kbps", t->kbps);
    json_t *ladder = t->ladder != NULL ? json_array() : NULL;
    for (int i = 0; ladder != NULL && i < t->ladder->n_rungs; i++)
        json_array_append_new(ladder, json_pack("[i, i]", t->ladder->rungs[i].height, t->ladder->rungs[i].kbps));
    if (op == NULL || (ladder != NULL && json_object_set_new(op, "ladder", ladder) != 0)) {
        json_decref(op);
        return NULL;
    }
    return json_pack("[o]", op);
}

static const gw_reply_rule_t s_tx_replies[] = {
    {200, GW_REPLY_BODY, 200, NULL, NULL},
    {415, GW_REPLY_ERROR, 415, "not a video that can be transcoded", "unsupported"},
    {413, GW_REPLY_ERROR, 413, NULL, "too long"},
    S_VIDEO_REPLIES,
};

static bool s_tx_stream(const rf_vhost_conf_t *vh)
{
    return vh->transcode.stream;
}

static const gw_func_t s_transcode = {
    .name = "transcode",
    S_VIDEO_ROW,
    .keyword = s_tx_keyword,
    .match = s_tx_match,
    .parse = s_tx_parse,
    .canon = s_tx_canon,
    .to_json = s_tx_json,
    .replies = s_tx_replies,
    .fallbacks = NULL,
    .stream = s_tx_stream,
};

/* ---- progressive HLS (video-worker) ------------------------------------------------ */

/* What a progressive HLS URL names after the keyword: "index.m3u8" (the
 * master playlist of the ladder), "Hp/index.m3u8" (a rung's media
 * playlist), "Hp/seg-N.ts" (one of its segments, transcoded when asked). */
typedef struct {
    enum { S_PHLS_MASTER, S_PHLS_MEDIA, S_PHLS_SEGMENT } what;
    int height, kbps, n;
    rf_phls_conf_t conf; /* the vhost's settings when it was parsed */
} s_phls_t;

#define S_PHLS_INDEX "index.m3u8"
#define VID_PHLS_MAX_SEGMENT 100000 /* the worker's VID_MAX_SEGMENTS */

static const char *s_phls_keyword(const rf_vhost_conf_t *vh)
{
    return vh->hls.keyword;
}

static int s_phls_match(const rf_vhost_conf_t *vh, h2o_iovec_t path, h2o_iovec_t query, h2o_iovec_t *src,
                        h2o_iovec_t *chain)
{
    (void)query;
    const char *s, *c;
    size_t sl, cl;
    if (!vh->hls.active || !rf_chain_split(path.base, path.len, vh->hls.keyword, &s, &sl, &c, &cl) ||
        !s_ext_in(vh->hls.inputs, s, sl))
        return 0;
    *src = h2o_iovec_init(s, sl);
    *chain = h2o_iovec_init(c, cl);
    return 1;
}

/* "Hp/" at the start of chain, H one of the ladder's heights: its rung's
 * index, the rest in *rest. -1 when it is not. */
static int s_phls_rung(const rf_phls_conf_t *c, h2o_iovec_t chain, h2o_iovec_t *rest)
{
    const char *slash = memchr(chain.base, '/', chain.len);
    size_t l = slash ? (size_t)(slash - chain.base) : 0;
    int64_t h = l > 1 && chain.base[l - 1] == 'p' ? rf_vparse_digits(chain.base, l - 1, 4321) : -1;
    for (int i = 0; h > 0 && i < c->n_rungs; i++)
        if (c->rungs[i].height == h) {
            *rest = h2o_iovec_init(slash + 1, chain.len - l - 1);
            return i;
        }
    return -1;
}

static int s_phls_parse(gw_req_t *rc, h2o_iovec_t chain, void **state, char *why, size_t why_len)
{
    s_phls_t *st = h2o_mem_alloc_pool(&rc->req->pool, sizeof(*st));
    memset(st, 0, sizeof(*st));
    st->conf = rc->vhost->hls;
    h2o_iovec_t rest;
    int r;
    if (h2o_memis(chain.base, chain.len, H2O_STRLIT(S_PHLS_INDEX))) {
        st->what = S_PHLS_MASTER;
    } else if ((r = s_phls_rung(&st->conf, chain, &rest)) >= 0 &&
               (h2o_memis(rest.base, rest.len, H2O_STRLIT(S_PHLS_INDEX)) ||
                (st->n = rf_vparse_segment(rest.base, rest.len, S_HLS_SEG_PREFIX, S_HLS_SEG_SUFFIX)) >= 0)) {
        st->what = h2o_memis(rest.base, rest.len, H2O_STRLIT(S_PHLS_INDEX)) ? S_PHLS_MEDIA : S_PHLS_SEGMENT;
        st->height = st->conf.rungs[r].height;
        st->kbps = st->conf.rungs[r].kbps;
    } else {
        char rungs[80] = "";
        for (int i = 0, o = 0; i < st->conf.n_rungs && o < (int)sizeof(rungs) - 8; i++)
            o += snprintf(rungs + o, sizeof(rungs) - (size_t)o, "%s%dp", i ? ", " : "", st->conf.rungs[i].height);
        snprintf(why, why_len, "'%.*s' is not " S_PHLS_INDEX ", Hp/" S_PHLS_INDEX " or Hp/seg-N.ts (H: %s)",
                 (int)(chain.len > 40 ? 40 : chain.len), chain.base, rungs);
        return -1;
    }
    *state = st;
    return 0;
}

static int s_phls_canon(const void *state, char *buf, size_t len)
{
    const s_phls_t *st = state;
    const rf_phls_conf_t *c = &st->conf;
    int n;
    if (st->what == S_PHLS_MASTER) {
        size_t o = 0;
        n = snprintf(buf, len, "master;d=%d;a=%d;l=", c->duration, c->audio_kbps);
        for (int i = 0; n >= 0 && (size_t)n < len - o && i < c->n_rungs; i++) {
            o += (size_t)n;
            n = snprintf(buf + o, len - o, "%s%d@%d", i ? "," : "", c->rungs[i].height, c->rungs[i].kbps);
        }
        return n < 0 || (size_t)n >= len - o ? -1 : 0;
    }
    if (st->what == S_PHLS_MEDIA)
        n = snprintf(buf, len, "media;d=%d;max=%d", c->duration, c->max_duration); /* one playlist for all rungs */
    else
        n = snprintf(buf, len, "seg=%d;d=%d;h=%d@%d;crf=%d;a=%d;max=%d", st->n, c->duration, st->height, st->kbps,
                     c->crf, c->audio_kbps, c->max_duration);
    return n < 0 || (size_t)n >= len ? -1 : 0;
}

static json_t *s_phls_json(const void *state)
{
    const s_phls_t *st = state;
    const rf_phls_conf_t *c = &st->conf;
    static const char *const what[] = {"master", "media", "segment"};
    json_t *ladder = json_array();
    for (int i = 0; ladder != NULL && i < c->n_rungs; i++)
        json_array_append_new(ladder, json_pack("[i, i]", c->rungs[i].height, c->rungs[i].kbps));
    return json_pack("[{s:s, s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:o}]", "op", "phls", "what", what[st->what],
                     "segment", st->n, "height", st->height, "kbps", st->kbps, "duration", c->duration, "crf", c->crf,
                     "audio_kbps", c->audio_kbps, "max_duration", c->max_duration, "ladder", ladder);
}

/* A segment's next `prefetch` segments of the same rung (past the last
 * one the worker answers 404, cheaply). */
static int s_phls_ahead(const void *state, int k, char *buf, size_t len)
{
    const s_phls_t *st = state;
    if (st->what != S_PHLS_SEGMENT || k >= st->conf.prefetch || st->n + 1 + k > VID_PHLS_MAX_SEGMENT)
        return 0;
    int n = snprintf(buf, len, "%dp/" S_HLS_SEG_PREFIX "%d" S_HLS_SEG_SUFFIX, st->height, st->n + 1 + k);
    return n > 0 && (size_t)n < len;
}

static const gw_reply_rule_t s_phls_replies[] = {
    {200, GW_REPLY_BODY, 200, NULL, NULL},
    {415, GW_REPLY_ERROR, 415, "not a video that can be transcoded", "unsupported"},
    {413, GW_REPLY_ERROR, 413, NULL, "too long"},
    S_VIDEO_REPLIES,
};

static const gw_func_t s_phls = {
    .name = "hls",
    S_VIDEO_ROW,
    .keyword = s_phls_keyword,
    .match = s_phls_match,
    .parse = s_phls_parse,
    .canon = s_phls_canon,
    .to_json = s_phls_json,
    .replies = s_phls_replies,
    .fallbacks = NULL,
    .ahead = s_phls_ahead,
};

/* ---- the table ------------------------------------------------------------ */

/* The thumbnail row comes before dims: "/v.mp4/thumbnail/10/dims/resize/100"
 * is a thumbnail piped through a dims chain, not a dims chain of the
 * source "/v.mp4/thumbnail/10". */
const gw_func_t *const gw_funcs[] = {&s_thumbnail, &s_dims,      &s_mp4hls, &s_sprite,
                                     &s_trimming,  &s_transcode, &s_phls,   NULL};
