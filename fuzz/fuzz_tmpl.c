/*  libFuzzer target for common/rf_tmpl: storgate's savePath templates.
 *
 *  One heap, made once, renders every input (as a worker would). The first
 *  byte picks what the rest is (modulo 4):
 *    0  item.path — hostile: whoever drops a file names it. Put into the
 *       JSON context (raw where it is valid UTF-8, \u00XX for the other
 *       bytes and controls), it goes through the seed's templates, and the
 *       results must be exact: "/newimg/" + the path, "/processed/" + the
 *       path, and for the seed's relpath/dirname/basename/rsplit template
 *       what a C rendering of Python's os.path and str.rsplit gives — so
 *       "{{", "{%", quotes and the rest come out as they went in, never
 *       evaluated. A NUL or an over-long result must be refused instead.
 *       The path (up to its first NUL) also goes through pathPattern:
 *       rf_tmpl_path_pattern and rf_tmpl_render_pattern must agree.
 *    1  a template's source (operator config, but it must not crash or
 *       hang): rendered, checked and rendered with the seed's pathPattern;
 *       a result must be valid UTF-8 within RF_TMPL_OUT_MAX, and a
 *       template rf_tmpl_check refuses must not render.
 *    2  a pathPattern regex, over fixed paths: the text and the template
 *       routes must agree.
 *    3  a context's JSON text, for the seed's templates.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rf_tmpl.h"

#define S_MAX_IN 4000
#define S_SOURCE_DIR "/image_landing"

static rf_tmpl_t *s_t; /* the heap, made once by LLVMFuzzerInitialize */

typedef struct {
    char b[4 * S_MAX_IN + 4200];
    size_t n;
} s_buf_t;

static void s_put(s_buf_t *o, const void *p, size_t n)
{
    if (o->n + n > sizeof(o->b))
        abort(); /* sized for the worst case */
    memcpy(o->b + o->n, p, n);
    o->n += n;
}

static void s_puts(s_buf_t *o, const char *s)
{
    s_put(o, s, strlen(s));
}

/* Length of the strictly valid UTF-8 sequence at s (0: none), as rf_tmpl
 * and JSON see it: no overlongs, no surrogates, nothing past U+10FFFF. */
static size_t s_utf8_len(const uint8_t *s, size_t n)
{
    uint8_t c = s[0];
    size_t k;
    uint32_t cp;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        k = 2, cp = c & 0x1f;
    else if (c >= 0xe0 && c <= 0xef)
        k = 3, cp = c & 0x0f;
    else if (c >= 0xf0 && c <= 0xf4)
        k = 4, cp = c & 0x07;
    else
        return 0;
    if (k > n)
        return 0;
    for (size_t i = 1; i < k; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    if ((k == 3 && cp < 0x800) || (k == 4 && (cp < 0x10000 || cp > 0x10ffff)) || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return k;
}

/* The input as a JSON string into json, and the string JSON decodes to
 * (UTF-8) into lit. */
static void s_json(const uint8_t *in, size_t n, s_buf_t *json, s_buf_t *lit)
{
    s_put(json, "\"", 1);
    for (size_t i = 0; i < n;) {
        size_t k = s_utf8_len(in + i, n - i);
        char esc[8];
        if (k > 1) {
            s_put(json, in + i, k);
            s_put(lit, in + i, k);
            i += k;
            continue;
        }
        uint8_t c = in[i++];
        if (k == 1 && c >= 0x20 && c != '"' && c != '\\') {
            s_put(json, &c, 1);
            s_put(lit, &c, 1);
            continue;
        }
        snprintf(esc, sizeof(esc), "\\u%04x", c);
        s_puts(json, esc);
        if (c < 0x80) {
            s_put(lit, &c, 1);
        } else { /* an invalid byte stands for U+0080..U+00FF */
            uint8_t u[2] = {(uint8_t)(0xc0 | c >> 6), (uint8_t)(0x80 | (c & 0x3f))};
            s_put(lit, u, 2);
        }
    }
    s_put(json, "\"", 1);
}

/* ---- the seed's second template, in C (Python's os.path / str.rsplit) ---- */

typedef struct {
    const char *p;
    size_t n;
} s_str_t;

/* The names of abspath(p) (the current directory is "/"); at most max. */
static size_t s_parts(const char *p, size_t n, s_str_t *out, size_t max)
{
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j < n && p[j] != '/')
            j++;
        size_t len = j - i;
        if (len == 0 || (len == 1 && p[i] == '.')) {
        } else if (len == 2 && p[i] == '.' && p[i + 1] == '.') {
            if (k > 0)
                k--;
        } else if (k < max) {
            out[k].p = p + i, out[k].n = len, k++;
        }
        i = j + 1;
    }
    return k;
}

/* "/{{ p | relpath(sd) | dirname }}/{{ p | basename | rsplit('.', 1)[0] }}_m.{{ … [-1] }}"
 * with sd = S_SOURCE_DIR; false if relpath refuses (an empty path). */
static bool s_seed_m(const char *p, size_t n, s_buf_t *o)
{
    if (n == 0)
        return false;
    static s_str_t q[S_MAX_IN];
    size_t nq = s_parts(p, n, q, S_MAX_IN);
    const char *sd = &S_SOURCE_DIR[1]; /* without its leading "/" */
    size_t nsd = strlen(sd);
    size_t i = nq > 0 && q[0].n == nsd && memcmp(q[0].p, sd, nsd) == 0 ? 1 : 0;
    /* rel = [".."] * (1 - i) + q[i:], or "."; its dirname: all but the last name */
    s_buf_t *rel = calloc(1, sizeof(*rel));
    if (i == 0)
        s_puts(rel, nq > 0 ? "../" : "..");
    for (size_t k = i; k < nq; k++) {
        s_put(rel, q[k].p, q[k].n);
        if (k + 1 < nq)
            s_put(rel, "/", 1);
    }
    size_t cut = 0;
    for (size_t k = 0; k < rel->n; k++)
        if (rel->b[k] == '/')
            cut = k;
    s_put(o, "/", 1);
    s_put(o, rel->b, cut); /* no '/' in rel ("." included): "" */
    free(rel);
    size_t b = n;
    while (b > 0 && p[b - 1] != '/')
        b--;
    const char *base = p + b;
    size_t nb = n - b, dot = nb;
    for (size_t k = 0; k < nb; k++)
        if (base[k] == '.')
            dot = k;
    s_put(o, "/", 1);
    s_put(o, base, dot < nb ? dot : nb);
    s_puts(o, "_m.");
    if (dot < nb)
        s_put(o, base + dot + 1, nb - dot - 1);
    else
        s_put(o, base, nb);
    return true;
}

/* ---- checks ------------------------------------------------------------------ */

/* out (maybe NULL) is what rendering a template that gives want must give:
 * want itself, or an error when want holds a NUL or is too long. */
static void s_want(const char *what, const char *out, const char *why, const s_buf_t *want)
{
    bool refuse = want->n > RF_TMPL_OUT_MAX || memchr(want->b, '\0', want->n) != NULL;
    if (refuse ? out == NULL : (out != NULL && strlen(out) == want->n && memcmp(out, want->b, want->n) == 0))
        return;
    fprintf(stderr, "%s: got %s%s (%s), want %s%.*s\n", what, out != NULL ? "\"" : "", out != NULL ? out : "error", why,
            refuse ? "an error for " : "", (int)want->n, want->b);
    abort();
}

static void s_valid_out(const char *what, const char *out)
{
    size_t n = strlen(out);
    if (n > RF_TMPL_OUT_MAX)
        abort();
    for (size_t i = 0; i < n;) {
        size_t k = s_utf8_len((const uint8_t *)out + i, n - i);
        if (k == 0) {
            fprintf(stderr, "%s: invalid UTF-8 at %zu\n", what, i);
            abort();
        }
        i += k;
    }
}

/* rf_tmpl_path_pattern and rf_tmpl_render_pattern agree. */
static void s_patterns_agree(const char *pattern, const char *path, const char *save_path)
{
    char why1[256] = "", why2[256] = "", json[S_MAX_IN * 6 + 64];
    s_buf_t *j = calloc(1, sizeof(*j)), *lit = calloc(1, sizeof(*lit));
    s_json((const uint8_t *)path, strlen(path), j, lit);
    snprintf(json, sizeof(json), "{\"item\":{\"path\":%.*s}}", (int)j->n, j->b);
    char *a = rf_tmpl_path_pattern(pattern, path, save_path, why1, sizeof(why1));
    char *b = rf_tmpl_render_pattern(s_t, save_path, pattern, path, json, why2, sizeof(why2));
    if (a != NULL)
        s_valid_out("path_pattern", a);
    /* the text route cannot fail where the template route works; where the
     * text route works, the template route gives the same (it may refuse
     * save_paths with #N in tags or Nunjucks syntax errors: not here) */
    if ((a == NULL && b != NULL) || (a != NULL && (b == NULL || strcmp(a, b) != 0))) {
        fprintf(stderr, "pathPattern %s on %s: text %s (%s), template %s (%s)\n", pattern, path, a ? a : "NULL", why1,
                b ? b : "NULL", why2);
        abort();
    }
    free(a);
    free(b);
    free(j);
    free(lit);
}

static void s_mode_path(const uint8_t *in, size_t n)
{
    s_buf_t *json = calloc(1, sizeof(*json)), *lit = calloc(1, sizeof(*lit)), *want = calloc(1, sizeof(*want));
    char *ctx = malloc(sizeof(json->b) + 128), why[256] = "";
    s_json(in, n, json, lit);
    snprintf(ctx, sizeof(json->b) + 128, "{\"item\":{\"path\":%.*s,\"size\":1},\"source_dir\":\"" S_SOURCE_DIR "\"}",
             (int)json->n, json->b);

    char *out = rf_tmpl_render(s_t, "/newimg/{{ item.path }}", ctx, why, sizeof(why));
    s_puts(want, "/newimg/");
    s_put(want, lit->b, lit->n);
    s_want("seed newimg", out, why, want);
    free(out);

    out = rf_tmpl_render(s_t, "/processed/{{ item.path }}", ctx, why, sizeof(why));
    want->n = 0;
    s_puts(want, "/processed/");
    s_put(want, lit->b, lit->n);
    s_want("seed move", out, why, want);
    free(out);

    out = rf_tmpl_render(s_t,
                         "/{{ item.path | relpath(source_dir) | dirname }}/{{ item.path | basename | rsplit('.', 1)[0] "
                         "}}_m.{{ item.path | basename | rsplit('.', 1)[-1] }}",
                         ctx, why, sizeof(why));
    want->n = 0;
    if (s_seed_m(lit->b, lit->n, want)) {
        s_want("seed _m", out, why, want);
    } else if (out != NULL) {
        fprintf(stderr, "seed _m rendered \"%s\" for an empty path\n", out);
        abort();
    }
    free(out);

    /* pathPattern, over the path up to its first NUL */
    char *path = strndup((const char *)in, n);
    s_patterns_agree("/([^/]+)/(.*)", path, "/newimg/#2");
    s_patterns_agree("^(.*?)([^/.]*)(\\.[^/]*)?$", path, "#1#2_m#3|#0");
    free(path);
    free(ctx);
    free(json);
    free(lit);
    free(want);
}

static void s_mode_source(const uint8_t *in, size_t n)
{
    char *src = strndup((const char *)in, n > RF_TMPL_SRC_MAX ? RF_TMPL_SRC_MAX : n), why[256] = "";
    static const char ctx[] = "{\"item\":{\"path\":\"/image_landing/a/b.c.jpg\",\"filename\":\"b.c.jpg\",\"size\":"
                              "123456,\"mode\":\"0644\"},\"source_dir\":\"/image_landing\",\"l\":[1,2,3]}";
    int checked = rf_tmpl_check(s_t, src, why, sizeof(why));
    char *out = rf_tmpl_render(s_t, src, ctx, why, sizeof(why));
    if (out != NULL) {
        s_valid_out("template", out);
        if (checked != 0) {
            fprintf(stderr, "rf_tmpl_check refused what rendered\n");
            abort();
        }
    }
    free(out);
    out = rf_tmpl_render_pattern(s_t, src, "/([^/]+)/(.*)", "/image_landing/a/b.c.jpg", ctx, why, sizeof(why));
    if (out != NULL)
        s_valid_out("template with pathPattern", out);
    free(out);
    rf_tmpl_check_pattern(s_t, src, "/([^/]+)/(.*)", why, sizeof(why));
    free(src);
}

static void s_mode_pattern(const uint8_t *in, size_t n)
{
    char *pattern = strndup((const char *)in, n);
    static const char *const paths[] = {"/image_landing/2024/06/a.b.jpg", "/\xed\x95\x9c/\xf0\x9f\x98\x80.x",
                                        "relative/p", "", "/a\nb/c"};
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++)
        s_patterns_agree(pattern, paths[i], "/x/#0/#1#2#3#4#5#6#7#8#9/");
    free(pattern);
}

static void s_mode_context(const uint8_t *in, size_t n)
{
    char *ctx = strndup((const char *)in, n), why[256] = "";
    static const char *const srcs[] = {
        "/newimg/{{ item.path }}",
        "/{{ item.path | relpath(source_dir) | dirname }}/{{ item.path | basename | rsplit('.', 1)[0] }}_m.{{ "
        "item.path | basename | rsplit('.', 1)[-1] }}",
        "{% for k, v in item %}{{ k }}={{ v }};{% endfor %}",
    };
    for (size_t i = 0; i < sizeof(srcs) / sizeof(srcs[0]); i++) {
        char *out = rf_tmpl_render(s_t, srcs[i], ctx, why, sizeof(why));
        if (out != NULL)
            s_valid_out("context", out);
        free(out);
    }
    free(ctx);
}

/* Makes the heap, and turns libFuzzer's per-input leak check off unless
 * the command line sets it: the heap lives across inputs (its caches and
 * garbage collector allocate in one input and free in another), so nearly
 * every input would look like a leak and get a full LeakSanitizer scan,
 * slowing the run a hundredfold. Leaks are still reported at exit. */
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char why[256];
    if ((s_t = rf_tmpl_new(why, sizeof(why))) == NULL) {
        fprintf(stderr, "rf_tmpl_new: %s\n", why);
        abort();
    }
    for (int i = 1; i < *argc; i++)
        if (strncmp((*argv)[i], "-detect_leaks=", 14) == 0)
            return 0;
    static char flag[] = "-detect_leaks=0";
    char **av = calloc((size_t)*argc + 2, sizeof(*av)); /* kept: libFuzzer reads it to the end */
    if (av == NULL)
        abort();
    av[0] = (*argv)[0];
    av[1] = flag;
    for (int i = 1; i < *argc; i++)
        av[i + 1] = (*argv)[i];
    *argv = av;
    (*argc)++;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > S_MAX_IN + 1)
        return 0;
    switch (data[0] % 4) {
    case 0: s_mode_path(data + 1, size - 1); break;
    case 1: s_mode_source(data + 1, size - 1); break;
    case 2: s_mode_pattern(data + 1, size - 1); break;
    default: s_mode_context(data + 1, size - 1); break;
    }
    return 0;
}
