/*  sg_ldoc — the lease object of an https:// leader lease (sg_ldoc.h). */
#include "sg_ldoc.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sg_ldoc_clear(sg_ldoc_t *d)
{
    for (size_t i = 0; i < d->n; i++) {
        free(d->name[i]);
        free(d->text[i]);
    }
    memset(d, 0, sizeof(*d));
}

static bool s_name_ok(const char *p, size_t len)
{
    return len > 0 && len <= SG_LDOC_NAME && memchr(p, ' ', len) == NULL && memchr(p, '\n', len) == NULL &&
           memchr(p, '\0', len) == NULL;
}

/* The index of the record named by nl bytes of name, or d->n. */
static size_t s_find(const sg_ldoc_t *d, const char *name, size_t nl)
{
    size_t i = 0;
    while (i < d->n && !(strlen(d->name[i]) == nl && memcmp(d->name[i], name, nl) == 0))
        i++;
    return i;
}

const char *sg_ldoc_get(const sg_ldoc_t *d, const char *name)
{
    size_t i = s_find(d, name, strlen(name));
    return i < d->n ? d->text[i] : NULL;
}

/* Sets a record from len bytes of text (any bytes but NUL). */
static int s_set(sg_ldoc_t *d, const char *name, size_t nl, const char *text, size_t len)
{
    if (!s_name_ok(name, nl) || memchr(text, '\0', len) != NULL)
        return errno = EINVAL, -1;
    if (len > SG_LDOC_TEXT)
        return errno = E2BIG, -1;
    size_t i = s_find(d, name, nl);
    if (i == SG_LDOC_ENTRIES)
        return errno = E2BIG, -1;
    char *t = strndup(text, len), *nm = i == d->n ? strndup(name, nl) : NULL;
    if (t == NULL || (i == d->n && nm == NULL)) {
        free(t);
        free(nm);
        return errno = ENOMEM, -1;
    }
    if (i == d->n)
        d->name[d->n++] = nm;
    else
        free(d->text[i]);
    d->text[i] = t;
    return 0;
}

int sg_ldoc_set(sg_ldoc_t *d, const char *name, const char *text)
{
    return s_set(d, name, strlen(name), text, strlen(text));
}

char *sg_ldoc_text(const sg_ldoc_t *d, size_t *len)
{
    char *out = NULL;
    FILE *f = open_memstream(&out, len);
    if (f == NULL)
        return NULL;
    fprintf(f, "refract-lease 1\nlease %s %llu %lld\n", d->node[0] ? d->node : "-", (unsigned long long)d->token,
            (long long)d->expires);
    for (size_t i = 0; i < d->n; i++)
        fprintf(f, "progress %s %zu\n%s\n", d->name[i], strlen(d->text[i]), d->text[i]);
    if (fclose(f) != 0) {
        free(out);
        return NULL;
    }
    return out;
}

/* ---- reading: a cursor over the bytes, each step exact ---- */

typedef struct {
    const char *p, *end;
} s_cur_t;

static bool s_lit(s_cur_t *c, const char *lit)
{
    size_t l = strlen(lit);
    if ((size_t)(c->end - c->p) < l || memcmp(c->p, lit, l) != 0)
        return false;
    c->p += l;
    return true;
}

/* A word up to (not including) the byte `stop`, which is consumed. */
static bool s_word(s_cur_t *c, char stop, const char **w, size_t *wl)
{
    const char *e = memchr(c->p, stop, (size_t)(c->end - c->p));
    if (e == NULL)
        return false;
    *w = c->p;
    *wl = (size_t)(e - c->p);
    c->p = e + 1;
    return true;
}

/* A decimal number in its one spelling (no sign, no leading zero), at most
 * max, then `stop`. */
static bool s_num(s_cur_t *c, char stop, uint64_t max, uint64_t *v)
{
    const char *w;
    size_t wl;
    if (!s_word(c, stop, &w, &wl) || wl == 0 || wl > 19 || (wl > 1 && w[0] == '0'))
        return false;
    uint64_t x = 0;
    for (size_t i = 0; i < wl; i++) {
        if (w[i] < '0' || w[i] > '9')
            return false;
        x = x * 10 + (uint64_t)(w[i] - '0');
    }
    if (x > max)
        return false;
    *v = x;
    return true;
}

int sg_ldoc_parse(const char *text, size_t len, sg_ldoc_t *d)
{
    if (len > SG_LDOC_MAX)
        return -1;
    s_cur_t c = {text, text + len};
    const char *w;
    size_t wl;
    uint64_t tok, exp;
    if (!s_lit(&c, "refract-lease 1\nlease ") || !s_word(&c, ' ', &w, &wl) || !s_name_ok(w, wl) ||
        !s_num(&c, ' ', UINT64_MAX, &tok) || !s_num(&c, '\n', INT64_MAX, &exp))
        return -1;
    memcpy(d->node, w, wl);
    d->node[wl] = '\0';
    d->token = tok;
    d->expires = (int64_t)exp;
    while (c.p < c.end) {
        const char *name;
        size_t nl;
        uint64_t n;
        if (!s_lit(&c, "progress ") || !s_word(&c, ' ', &name, &nl) || !s_num(&c, '\n', SG_LDOC_TEXT, &n) ||
            (uint64_t)(c.end - c.p) < n + 1 || c.p[n] != '\n')
            return -1;
        if (s_find(d, name, nl) < d->n || s_set(d, name, nl, c.p, (size_t)n) < 0)
            return -1; /* a batch twice: a second reading */
        c.p += n + 1;
    }
    return 0;
}
