#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "gw.h"

/* Takes ownership of *cfg_p. Returns the table with one reference, or NULL
 * on allocation failure (the config is then destroyed). */
gw_vhosts_t *gw_vhosts_new(rf_config_t **cfg_p)
{
    gw_vhosts_t *v = calloc(1, sizeof(*v));
    if (v == NULL) {
        rf_config_destroy(cfg_p);
        return NULL;
    }
    atomic_init(&v->refs, 1);
    v->cfg = *cfg_p;
    *cfg_p = NULL;
    for (size_t i = 0; i < v->cfg->n_vhosts; i++)
        if (v->cfg->vhosts[i].is_default)
            v->def = &v->cfg->vhosts[i];
    return v;
}

void gw_vhosts_ref(gw_vhosts_t *v)
{
    atomic_fetch_add(&v->refs, 1);
}

void gw_vhosts_unref(gw_vhosts_t **v_p)
{
    if (v_p == NULL || *v_p == NULL)
        return;
    if (atomic_fetch_sub(&(*v_p)->refs, 1) == 1) {
        rf_config_destroy(&(*v_p)->cfg);
        free(*v_p);
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
