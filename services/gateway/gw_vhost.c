#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "gw.h"
#include "gw_tls.h"

/* h2o filters register config slots in a globalconf; file pathconfs get
 * this one. Tables are only built on the main thread (start-up, SIGHUP). */
static h2o_globalconf_t s_file_globalconf;
static int s_file_globalconf_ready;

/* Loads the table's certificates: the default and each vhost's own.
 * Returns 0, or -1 with *err. */
static int s_tls_load(gw_vhosts_t *v, char **err)
{
    const rf_config_t *cfg = v->cfg;
    if (cfg->gateway.tls.listen.port == 0)
        return 0;
    v->tls_vhost = calloc(cfg->n_vhosts ? cfg->n_vhosts : 1, sizeof(SSL_CTX *));
    if (v->tls_vhost == NULL || (v->tls_def = gw_tls_ctx_new(cfg, &cfg->gateway.tls.def, err)) == NULL)
        return -1;
    for (size_t i = 0; i < cfg->n_vhosts; i++) {
        const rf_vhost_conf_t *vh = &cfg->vhosts[i];
        if (vh->tls.cert != NULL && (v->tls_vhost[i] = gw_tls_ctx_new(cfg, &vh->tls, err)) == NULL)
            return -1;
    }
    return 0;
}

gw_vhosts_t *gw_vhosts_new(rf_config_t **cfg_p, char **err)
{
    *err = NULL;
    gw_vhosts_t *v = calloc(1, sizeof(*v));
    if (v == NULL) {
        rf_config_destroy(cfg_p);
        *err = strdup("out of memory");
        return NULL;
    }
    atomic_init(&v->refs, 1);
    v->cfg = *cfg_p;
    *cfg_p = NULL;
    size_t n = v->cfg->n_vhosts;
    if (!s_file_globalconf_ready) {
        h2o_config_init(&s_file_globalconf);
        s_file_globalconf_ready = 1;
    }
    v->mimemap = h2o_mimemap_create();
    v->file_pathconfs = calloc(n, sizeof(h2o_pathconf_t));
    v->file_handlers = calloc(n, sizeof(h2o_handler_t *));
    v->rr = calloc(n ? n : 1, sizeof(atomic_uint));
    if (v->file_pathconfs == NULL || v->file_handlers == NULL || v->rr == NULL || s_tls_load(v, err) < 0 ||
        gw_rewrite_compile(v, err) < 0) {
        if (*err == NULL)
            *err = strdup("out of memory");
        gw_vhosts_unref(&v);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        const rf_vhost_conf_t *vh = &v->cfg->vhosts[i];
        if (vh->is_default)
            v->def = vh;
        if (vh->origin.kind != RF_ORIGIN_FILE)
            continue;
        /* A free-standing pathconf at "/": the handler maps the request's
         * normalized path under the origin directory (no escaping it). */
        h2o_config_init_pathconf(&v->file_pathconfs[i], &s_file_globalconf, "/", v->mimemap);
        /* h2o_file_handler_t is opaque; it begins with its h2o_handler_t. */
        v->file_handlers[i] =
            (h2o_handler_t *)h2o_file_register(&v->file_pathconfs[i], vh->origin.dir, NULL, v->mimemap, 0);
    }
    return v;
}

h2o_handler_t *gw_vhosts_file_handler(const gw_vhosts_t *v, const rf_vhost_conf_t *vhost)
{
    size_t i = (size_t)(vhost - v->cfg->vhosts);
    return i < v->cfg->n_vhosts ? v->file_handlers[i] : NULL;
}

const char *gw_reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 412: return "Precondition Failed";
    case 416: return "Range Not Satisfiable";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return status < 300 ? "OK" : status < 400 ? "Redirect" : status < 500 ? "Client Error" : "Server Error";
    }
}

void gw_vhosts_ref(gw_vhosts_t *v)
{
    atomic_fetch_add(&v->refs, 1);
}

void gw_vhosts_unref(gw_vhosts_t **v_p)
{
    if (v_p == NULL || *v_p == NULL)
        return;
    gw_vhosts_t *v = *v_p;
    if (atomic_fetch_sub(&v->refs, 1) == 1) {
        for (size_t i = 0; v->file_handlers && i < v->cfg->n_vhosts; i++)
            if (v->file_handlers[i] != NULL)
                h2o_config_dispose_pathconf(&v->file_pathconfs[i]);
        free(v->file_handlers);
        free(v->rr);
        gw_rewrite_free(v);
        for (size_t i = 0; v->tls_vhost && i < v->cfg->n_vhosts; i++)
            SSL_CTX_free(v->tls_vhost[i]);
        free(v->tls_vhost);
        SSL_CTX_free(v->tls_def);
        free(v->file_pathconfs);
        if (v->mimemap != NULL)
            h2o_mem_release_shared(v->mimemap);
        rf_config_destroy(&v->cfg);
        free(v);
    }
    *v_p = NULL;
}

/* Scores how well `pattern` names `host`: exact = huge, "*.suffix" = the
 * suffix length (longest wildcard wins), no match = -1. */
static long s_score(const char *pattern, const char *host, size_t len)
{
    size_t pl = strlen(pattern);
    if (pl == len && strncasecmp(pattern, host, len) == 0)
        return 1L << 20;
    if (pl > 2 && pattern[0] == '*' && pattern[1] == '.') {
        size_t sl = pl - 1; /* ".example.com" */
        if (len > sl && strncasecmp(host + len - sl, pattern + 1, sl) == 0)
            return (long)sl;
    }
    return -1;
}

/* Returns the vhost serving `host` (a Host header, port ignored), the
 * default vhost when none matches, or NULL. Borrowed from the table. */
const rf_vhost_conf_t *gw_vhosts_match(const gw_vhosts_t *v, const char *host, size_t len)
{
    /* Strip ":port" (but not inside "[v6]"). */
    for (size_t i = len; i > 0; i--) {
        if (host[i - 1] == ']')
            break;
        if (host[i - 1] == ':') {
            len = i - 1;
            break;
        }
    }
    if (len > 0 && host[len - 1] == '.')
        len--; /* "example.com." is example.com */
    const rf_vhost_conf_t *best = NULL;
    long best_score = -1;
    for (size_t i = 0; i < v->cfg->n_vhosts; i++) {
        const rf_vhost_conf_t *vh = &v->cfg->vhosts[i];
        long s = s_score(vh->name, host, len);
        for (size_t a = 0; a < vh->n_aliases; a++) {
            long sa = s_score(vh->aliases[a], host, len);
            if (sa > s)
                s = sa;
        }
        if (s > best_score) {
            best_score = s;
            best = vh;
        }
    }
    return best_score >= 0 ? best : v->def;
}
