/*  gw_compress — compression once per object (seed: <Compression Method
 *  Level SourceSize> and compression.txt).
 *
 *  A cached object is compressed the first time a client that accepts the
 *  vhost's method asks for it as a hit, and the result is kept as a
 *  variant of the object (its key plus "\nce:gzip" or "\nce:br"), so a
 *  thousand requests cost one compression per TTL — not one each, as a
 *  web server compressing on the fly does. The identity answer and the
 *  variant both carry Vary: Accept-Encoding.
 *
 *  Never compressed: answers other than 200, bodies the origin already
 *  encoded, bodies outside source_size, and — without rules — anything but
 *  text-like types (images, video and archives are compressed already).
 *  With rules (compression.txt lines) only matching paths are, and "no"
 *  excludes.
 */
#include <brotli/encode.h>
#include <fnmatch.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "gw.h"
#include "rf_http.h"
#include "rf_log.h"
#include "rf_path.h"

static const char *const s_names[] = {[RF_CE_GZIP] = "gzip", [RF_CE_BR] = "br"};

/* Whether a content type is worth compressing (without rules). */
static bool s_compressible(const char *ct, size_t len)
{
    static const char *const types[] = {"text/",
                                        "application/json",
                                        "application/javascript",
                                        "application/x-javascript",
                                        "application/xml",
                                        "application/xhtml+xml",
                                        "application/rss+xml",
                                        "application/atom+xml",
                                        "application/ld+json",
                                        "application/manifest+json",
                                        "application/wasm",
                                        "image/svg+xml",
                                        "font/ttf",
                                        "font/otf",
                                        NULL};
    for (int i = 0; types[i]; i++)
        if (len >= strlen(types[i]) && strncasecmp(ct, types[i], strlen(types[i])) == 0)
            return true;
    return false;
}

/* The method and level for this request and object, or RF_CE_NONE. With
 * `from_head`, for an object still filling, on what its head says (a
 * length not known yet does not rule compression out). */
static rf_ce_t s_choose(gw_req_t *rc, rf_obj_t *o, bool from_head, int *level)
{
    const rf_compress_conf_t *c = &rc->vhost->compression;
    const rf_meta_t *m = rf_obj_meta(o);
    size_t hl, vl;
    const char *blob = rf_obj_headers(o, &hl);
    bool complete = rf_obj_state(o) == RF_OBJ_COMPLETE;
    if (!c->enable || m->status != 200 || !(complete || from_head))
        return RF_CE_NONE;
    if (gw_stored_header(blob, hl, "content-encoding", &vl) != NULL)
        return RF_CE_NONE; /* never twice */
    bool known = complete || m->length >= 0;
    uint64_t len = complete ? rf_obj_length(o) : (uint64_t)m->length;
    if (known && (len < c->min_size || len > c->max_size))
        return RF_CE_NONE;
    rf_ce_t method = c->method;
    *level = c->level;
    if (c->n_rules > 0) {
        char path[RF_PATH_MAX + 1];
        size_t pl = rc->path.len < RF_PATH_MAX ? rc->path.len : RF_PATH_MAX;
        memcpy(path, rc->path.base, pl);
        path[pl] = '\0';
        const rf_compress_rule_t *hit = NULL;
        for (size_t i = 0; i < c->n_rules && hit == NULL; i++)
            if (fnmatch(c->rules[i].pattern, path, 0) == 0)
                hit = &c->rules[i];
        if (hit == NULL || hit->method == RF_CE_NONE)
            return RF_CE_NONE;
        if (hit->method > 0)
            method = (rf_ce_t)hit->method;
        if (hit->level >= 0)
            *level = hit->level;
    } else {
        const char *ct = gw_stored_header(blob, hl, "content-type", &vl);
        if (ct == NULL || !s_compressible(ct, vl))
            return RF_CE_NONE;
    }
    if (method == RF_CE_GZIP && *level < 1)
        *level = 1;
    if (method == RF_CE_GZIP && *level > 9)
        *level = 9;
    return method;
}

bool gw_compress_applies(gw_req_t *rc, rf_obj_t *o)
{
    int level;
    return s_choose(rc, o, true, &level) != RF_CE_NONE;
}

/* The whole body of a complete object (malloc'd, caller frees), or NULL. */
static char *s_body(rf_obj_t *o, size_t *len)
{
    rf_buf_t *b = rf_obj_body(o);
    char *out = NULL;
    if (b != NULL) {
        if ((out = malloc(b->len ? b->len : 1)) != NULL)
            memcpy(out, b->data, b->len), *len = b->len;
        rf_buf_unref(&b);
        return out;
    }
    rf_cursor_t c;
    size_t total = (size_t)rf_obj_length(o), got = 0;
    if (rf_cursor_init(&c, o, false, NULL) < 0 || (out = malloc(total ? total : 1)) == NULL)
        goto fail;
    for (;;) {
        size_t n = 0;
        rf_read_t r = rf_cursor_read(&c, out + got, total - got, &n);
        if (r == RF_READ_EOF)
            break;
        if (r != RF_READ_DATA)
            goto fail;
        got += n;
    }
    rf_cursor_close(&c);
    *len = got;
    return out;
fail:
    rf_cursor_close(&c);
    free(out);
    return NULL;
}

static char *s_gzip(const char *in, size_t len, int level, size_t *out_len)
{
    z_stream z;
    memset(&z, 0, sizeof(z));
    if (deflateInit2(&z, level, Z_DEFLATED, 16 + 15, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return NULL;
    size_t cap = deflateBound(&z, (uLong)len);
    char *out = malloc(cap);
    if (out == NULL) {
        deflateEnd(&z);
        return NULL;
    }
    z.next_in = (Bytef *)in;
    z.avail_in = (uInt)len;
    z.next_out = (Bytef *)out;
    z.avail_out = (uInt)cap;
    int r = deflate(&z, Z_FINISH);
    *out_len = z.total_out;
    deflateEnd(&z);
    if (r != Z_STREAM_END) {
        free(out);
        return NULL;
    }
    return out;
}

static char *s_brotli(const char *in, size_t len, int level, size_t *out_len)
{
    size_t cap = BrotliEncoderMaxCompressedSize(len);
    char *out = malloc(cap ? cap : 64);
    *out_len = cap;
    if (out == NULL || !BrotliEncoderCompress(level, BROTLI_DEFAULT_WINDOW, BROTLI_MODE_TEXT, len,
                                              (const uint8_t *)in, out_len, (uint8_t *)out)) {
        free(out);
        return NULL;
    }
    return out;
}

/* Makes the variant in `v` (claimed) from `o`. 0 or -1 (v failed). */
static int s_make(rf_obj_t *o, rf_obj_t *v, rf_ce_t method, int level)
{
    size_t len = 0, zlen = 0, hl;
    char *body = s_body(o, &len), *z = NULL, *blob = NULL;
    int rc = -1;
    if (body == NULL)
        goto out;
    z = method == RF_CE_GZIP ? s_gzip(body, len, level, &zlen) : s_brotli(body, len, level, &zlen);
    if (z == NULL)
        goto out;
    if (zlen >= len) {
        /* Incompressible: keep an empty marker so that later hits do not
         * try again (until the source changes). */
        rf_meta_t meta = *rf_obj_meta(o);
        meta.expires_at = rf_obj_expires(o, &meta.flags);
        meta.flags |= RF_META_NO_GAIN;
        meta.length = 0;
        meta.fwd_status = 0;
        rc = rf_obj_set_head(v, &meta, "", 0, rf_obj_keep(o) == RF_KEEP_MEMORY ? RF_KEEP_MEMORY : RF_KEEP_DISK);
        goto out;
    }
    /* The stored headers without ETag (other bytes) or Vary, plus ours. */
    const char *src = rf_obj_headers(o, &hl);
    if ((blob = malloc(hl + 128)) == NULL)
        goto out;
    size_t bl = 0;
    size_t at = 0;
    gw_stored_line_t l;
    while (gw_stored_next(src, hl, &at, &l)) {
        if (strcmp(l.name, "etag") == 0 || strcmp(l.name, "vary") == 0 || strcmp(l.name, "content-length") == 0)
            continue;
        memcpy(blob + bl, l.name, l.name_len + l.value_len + 2);
        bl += l.name_len + l.value_len + 2;
    }
    const char *name = s_names[method];
    bl += (size_t)sprintf(blob + bl, "content-encoding%c%s%cvary%caccept-encoding%c", 0, name, 0, 0, 0);
    rf_meta_t meta = *rf_obj_meta(o);
    meta.expires_at = rf_obj_expires(o, &meta.flags);
    meta.length = (int64_t)zlen;
    meta.fwd_status = 0;
    if (rf_obj_set_head(v, &meta, blob, bl, rf_obj_keep(o) == RF_KEEP_MEMORY ? RF_KEEP_MEMORY : RF_KEEP_DISK) < 0 ||
        rf_obj_append(v, z, zlen) < 0)
        goto out;
    rc = 0;
out:
    rf_obj_finish(v, rc == 0);
    free(body);
    free(z);
    free(blob);
    return rc;
}

rf_obj_t *gw_compress_variant(gw_req_t *rc, rf_obj_t *o)
{
    int level;
    rf_ce_t method = s_choose(rc, o, false, &level);
    if (method == RF_CE_NONE)
        return NULL;
    ssize_t i = h2o_find_header(&rc->req->headers, H2O_TOKEN_ACCEPT_ENCODING, -1);
    if (i < 0 || !rf_http_has_token(rc->req->headers.entries[i].value.base, rc->req->headers.entries[i].value.len,
                                    s_names[method]))
        return NULL;
    rf_store_t *store = rc->thread->server->store;
    h2o_iovec_t key = h2o_concat(&rc->req->pool, rc->key, h2o_iovec_init(H2O_STRLIT("\nce:")),
                                 h2o_iovec_init(s_names[method], strlen(s_names[method])));
    rf_obj_t *v = NULL;
    int64_t src_expires = rf_obj_expires(o, NULL);
    switch (rf_store_lookup(store, key.base, key.len, true, false, &v)) {
    case RF_LOOKUP_HIT: {
        uint32_t flags;
        if (rf_obj_expires(v, &flags) >= src_expires) {
            if (flags & RF_META_NO_GAIN)
                rf_obj_unref(&v); /* known not to shrink: identity */
            return v;
        }
        /* made from an older copy of the source: make it again */
        rf_obj_unref(&v);
        if (rf_store_lookup(store, key.base, key.len, true, true, &v) != RF_LOOKUP_CLAIM) {
            rf_obj_unref(&v);
            return NULL;
        }
        break;
    }
    case RF_LOOKUP_CLAIM:
        break;
    case RF_LOOKUP_BUSY: /* another request is compressing it: this one goes as it is */
    case RF_LOOKUP_MISS:
        rf_obj_unref(&v);
        return NULL;
    }
    if (s_make(o, v, method, level) < 0 || (rf_obj_meta(v)->flags & RF_META_NO_GAIN)) {
        rf_obj_unref(&v);
        return NULL;
    }
    return v;
}
