/*  gw_rewrite — url_rewrite (seed <URLRewrite AccessLog="Replace">
 *  <Pattern><Replace>), before the vhost is chosen so that a rule can send
 *  a request to another vhost.
 *
 *  The subject is "host/path?query": the Host without its port, lower
 *  case, and the canonical path. Rules are PCRE2 patterns tried in order;
 *  the first that matches replaces the whole subject with its replacement,
 *  #1..#9 standing for the groups. The result is "newhost/newpath?query":
 *  the host routes (as a Host header would) and the path is made canonical
 *  again (rf_path), so a rewrite cannot climb out of an origin's prefix
 *  either. A result that is not a valid path is a 400.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw.h"
#include "rf_path.h"

int gw_rewrite_compile(gw_vhosts_t *v, char **err)
{
    const rf_config_t *cfg = v->cfg;
    if (cfg->n_rewrites == 0)
        return 0;
    if ((v->rewrite_re = calloc(cfg->n_rewrites, sizeof(void *))) == NULL) {
        *err = strdup("out of memory");
        return -1;
    }
    for (size_t i = 0; i < cfg->n_rewrites; i++) {
        int code;
        PCRE2_SIZE off;
        pcre2_code *re = pcre2_compile((PCRE2_SPTR)cfg->rewrites[i].pattern, PCRE2_ZERO_TERMINATED, 0, &code, &off, NULL);
        if (re == NULL) {
            PCRE2_UCHAR msg[160];
            pcre2_get_error_message(code, msg, sizeof(msg));
            if (asprintf(err, "url_rewrite[%zu] pattern '%s': %s at offset %zu", i,
                         cfg->rewrites[i].pattern, (const char *)msg, (size_t)off) < 0)
                *err = NULL;
            return -1;
        }
        /* JIT: every request is matched against every rule until one hits. */
        pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
        v->rewrite_re[i] = re;
    }
    return 0;
}

/* Bounds the work one match may do: the subject comes from the client, the
 * pattern from the operator, and a pattern that backtracks badly must cost
 * a 400, not a stuck event loop. Shared read-only by every thread. */
static pcre2_match_context *s_mc;
static pthread_once_t s_mc_once = PTHREAD_ONCE_INIT;

static void s_mc_init(void)
{
    if ((s_mc = pcre2_match_context_create(NULL)) != NULL) {
        pcre2_set_match_limit(s_mc, 100000);
        pcre2_set_depth_limit(s_mc, 10000);
    }
}

static pcre2_match_context *s_match_limits(void)
{
    pthread_once(&s_mc_once, s_mc_init);
    return s_mc;
}

void gw_rewrite_free(gw_vhosts_t *v)
{
    for (size_t i = 0; v->rewrite_re != NULL && i < v->cfg->n_rewrites; i++)
        pcre2_code_free(v->rewrite_re[i]);
    free(v->rewrite_re);
    v->rewrite_re = NULL;
}

/* The replacement with #N expanded from the match (in pool). */
static h2o_iovec_t s_expand(h2o_mem_pool_t *pool, const char *repl, const char *subject, pcre2_match_data *md, int rc)
{
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
    size_t cap = strlen(repl) + 1;
    for (const char *p = repl; *p; p++)
        if (p[0] == '#' && p[1] >= '0' && p[1] <= '9' && p[1] - '0' < rc)
            cap += ov[2 * (p[1] - '0') + 1] - ov[2 * (p[1] - '0')];
    char *out = h2o_mem_alloc_pool(pool, cap), *o = out;
    for (const char *p = repl; *p; p++) {
        if (p[0] == '#' && p[1] >= '0' && p[1] <= '9') {
            int g = p[1] - '0';
            if (g < rc && ov[2 * g] != PCRE2_UNSET) {
                memcpy(o, subject + ov[2 * g], ov[2 * g + 1] - ov[2 * g]);
                o += ov[2 * g + 1] - ov[2 * g];
            }
            p++;
            continue;
        }
        *o++ = *p;
    }
    return h2o_iovec_init(out, (size_t)(o - out));
}

int gw_rewrite(gw_req_t *rc)
{
    const rf_config_t *cfg = rc->vhosts->cfg;
    if (cfg->n_rewrites == 0)
        return 0;
    h2o_req_t *req = rc->req;
    /* "host/path?query": the Host without port, lower case. */
    h2o_iovec_t host = req->authority;
    const char *colon = memchr(host.base, ':', host.len);
    if (colon != NULL && host.base[0] != '[')
        host.len = (size_t)(colon - host.base);
    size_t len = host.len + rc->path.len + rc->query.len;
    char *subject = h2o_mem_alloc_pool(&req->pool, len + 1);
    for (size_t i = 0; i < host.len; i++)
        subject[i] = (char)h2o_tolower(host.base[i]);
    memcpy(subject + host.len, rc->path.base, rc->path.len);
    memcpy(subject + host.len + rc->path.len, rc->query.base, rc->query.len);
    subject[len] = '\0';
    for (size_t i = 0; i < cfg->n_rewrites; i++) {
        pcre2_code *re = rc->vhosts->rewrite_re[i];
        pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
        if (md == NULL)
            break;
        int m = pcre2_match(re, (PCRE2_SPTR)subject, len, 0, 0, md, s_match_limits());
        if (m < 0 && m != PCRE2_ERROR_NOMATCH) { /* match, depth or JIT stack limit */
            pcre2_match_data_free(md);
            gw_send_error(rc, 400, "Bad Request", "url_rewrite[%zu]: the URL takes too long to match", i);
            return -1;
        }
        if (m <= 0) {
            pcre2_match_data_free(md);
            continue;
        }
        h2o_iovec_t to = s_expand(&req->pool, cfg->rewrites[i].replace, subject, md, m);
        pcre2_match_data_free(md);
        const char *slash = memchr(to.base, '/', to.len);
        if (slash == NULL || slash == to.base) {
            gw_send_error(rc, 400, "Bad Request", "url_rewrite made '%.*s', not host/path",
                          (int)(to.len > 200 ? 200 : to.len), to.base);
            return -1;
        }
        const char *q = memchr(slash, '?', (size_t)(to.base + to.len - slash));
        size_t plen = (size_t)((q ? q : to.base + to.len) - slash);
        char *canon = h2o_mem_alloc_pool(&req->pool, plen + 1);
        const char *why = NULL;
        ssize_t cl = plen <= RF_PATH_MAX ? rf_path_canon(slash, plen, canon, &why) : -1;
        if (cl < 0 || (q != NULL && !rf_query_ok(q + 1, (size_t)(to.base + to.len - q - 1)))) {
            gw_send_error(rc, 400, "Bad Request", "url_rewrite made a bad path: %s", why ? why : "too long");
            return -1;
        }
        rc->host = h2o_iovec_init(to.base, (size_t)(slash - to.base));
        rc->path = h2o_iovec_init(canon, (size_t)cl);
        rc->query = q != NULL ? h2o_iovec_init(q, (size_t)(to.base + to.len - q)) : h2o_iovec_init("", 0);
        if (cfg->rewrites[i].log_replaced)
            rc->log_url = h2o_concat(&req->pool, rc->host, rc->path, rc->query);
        return 0;
    }
    return 0;
}
