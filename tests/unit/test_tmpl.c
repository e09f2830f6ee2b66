/*  Unit tests for common/rf_tmpl: storgate's savePath templates (Nunjucks
 *  in Duktape) and pathPattern.
 *
 *  Expected strings come from Python 3.11 with python3-jinja2 3.1.6 (Debian
 *  12), run with the current directory "/" and these filters:
 *    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
 *    env.filters['rsplit'] = lambda s, sep=None, maxsplit=-1: s.rsplit(sep, maxsplit)
 *    env.filters['basename'] = os.path.basename
 *    env.filters['dirname'] = os.path.dirname
 *    env.filters['relpath'] = lambda p, start=None: os.path.relpath(p, start)
 *  One difference is by design: the seed writes `x | rsplit('.', 1)[0]`,
 *  which Jinja refuses ("expected token 'end of print statement', got
 *  '['"); the expectations for it are Jinja's for the parenthesised
 *  `(x | rsplit('.', 1))[0]`, which is what the seed means, and the test
 *  checks both spellings render the same here.
 *
 *  Covered: the seed's four templates; the filters' edge cases against
 *  os.path / str.rsplit; negative indexes; undefined and null values;
 *  syntax errors; every bound (template, context, output, strings, range,
 *  steps, memory); hostile item data (quotes, braces, "{{ 7*7 }}", raw
 *  tags, unicode, JSON surrogate pairs) rendered literally; what leads out
 *  of the template language refused; pathPattern (groups, no match, unset
 *  groups, #N in tags, bad regexes, catastrophic backtracking); the cache;
 *  two heaps at once. test_speed prints renders per second (not asserted).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rf_tmpl.h"

/* The seed's templates (003, tasks[].savePath and onComplete.src.path). */
static const char s_seed_newimg[] = "/newimg/{{ item.path }}";
static const char s_seed_m[] = "/{{ item.path | relpath(source_dir) | dirname }}/{{ item.path | basename | "
                               "rsplit('.', 1)[0] }}_m.{{ item.path | basename | rsplit('.', 1)[-1] }}";
static const char s_seed_m_paren[] = "/{{ item.path | relpath(source_dir) | dirname }}/{{ (item.path | basename | "
                                     "rsplit('.', 1))[0] }}_m.{{ (item.path | basename | rsplit('.', 1))[-1] }}";
static const char s_seed_pp[] = "/newimg/#2";
static const char s_seed_pp_re[] = "/([^/]+)/(.*)";
static const char s_seed_move[] = "/processed/{{ item.path }}";

/* s as a JSON string (quotes included) into out. */
static void s_json_str(const char *s, char *out, size_t len)
{
    size_t o = 0;
    out[o++] = '"';
    for (; *s != '\0' && o + 8 < len; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            out[o++] = '\\', out[o++] = (char)c;
        else if (c < 0x20)
            o += (size_t)snprintf(out + o, len - o, "\\u%04x", c);
        else
            out[o++] = (char)c;
    }
    out[o++] = '"';
    out[o] = '\0';
}

/* {"item":{"path":P, …the seed's other fields…},"source_dir":D} */
static char *s_ctx(const char *path, const char *source_dir)
{
    static char buf[16384];
    char p[8192], d[1024];
    s_json_str(path, p, sizeof(p));
    s_json_str(source_dir, d, sizeof(d));
    snprintf(buf, sizeof(buf),
             "{\"item\":{\"path\":%s,\"filename\":\"sample.jpg\",\"dirname\":\"/dir\",\"state\":\"file\","
             "\"size\":123456,\"owner\":\"root\",\"group\":\"users\",\"mode\":\"0644\",\"mtime\":1622555123,"
             "\"atime\":1622555200,\"ctime\":1622554987,\"inode\":12345},\"source_dir\":%s}",
             p, d);
    return buf;
}

/* Renders src with ctx and checks the result is want (NULL: an error whose
 * message holds why_has). */
static void s_expect(rf_tmpl_t *t, const char *src, const char *ctx, const char *want, const char *why_has)
{
    char why[256] = "";
    char *out = rf_tmpl_render(t, src, ctx, why, sizeof(why));
    if (want != NULL) {
        if (out == NULL)
            fail_msg("%s: %s", src, why);
        assert_string_equal(out, want);
    } else {
        if (out != NULL)
            fail_msg("%s rendered \"%s\", want an error with \"%s\"", src, out, why_has);
        if (strstr(why, why_has) == NULL)
            fail_msg("%s: why \"%s\" lacks \"%s\"", src, why, why_has);
    }
    free(out);
}

static int s_setup(void **state)
{
    char why[256];
    rf_tmpl_t *t = rf_tmpl_new(why, sizeof(why));
    if (t == NULL) {
        fprintf(stderr, "rf_tmpl_new: %s\n", why);
        return -1;
    }
    *state = t;
    return 0;
}

static int s_teardown(void **state)
{
    rf_tmpl_t *t = *state;
    rf_tmpl_destroy(&t);
    assert_null(t);
    rf_tmpl_destroy(&t);
    rf_tmpl_destroy(NULL);
    return 0;
}

/* ---- the seed --------------------------------------------------------- */

static void test_seed_templates(void **state)
{
    rf_tmpl_t *t = *state;
    const char *ctx = s_ctx("/image_landing/2024/06/photo.final.jpg", "/image_landing");
    s_expect(t, s_seed_newimg, ctx, "/newimg//image_landing/2024/06/photo.final.jpg", NULL);
    s_expect(t, s_seed_move, ctx, "/processed//image_landing/2024/06/photo.final.jpg", NULL);
    static const struct {
        const char *path, *source_dir, *want;
    } m[] = {
        {"/image_landing/2024/06/photo.final.jpg", "/image_landing", "/2024/06/photo.final_m.jpg"},
        {"/image_landing/a.jpg", "/image_landing", "//a_m.jpg"},
        {"/image_landing/noext", "/image_landing", "//noext_m.noext"},
        {"/other/x/y.png", "/image_landing", "/../other/x/y_m.png"},
        {"/image_landing/.hidden", "/image_landing", "//_m.hidden"},
        {"/image_landing/x.tar.gz", "/image_landing/", "//x.tar_m.gz"},
    };
    for (size_t i = 0; i < sizeof(m) / sizeof(m[0]); i++) {
        ctx = s_ctx(m[i].path, m[i].source_dir);
        s_expect(t, s_seed_m, ctx, m[i].want, NULL);
        s_expect(t, s_seed_m_paren, ctx, m[i].want, NULL);
    }
    /* every field of the seed's table renders */
    ctx = s_ctx("/dir/sample.jpg", "/dir");
    s_expect(t,
             "{{ item.path }} {{ item.filename }} {{ item.dirname }} {{ item.state }} {{ item.size }} {{ item.owner }} "
             "{{ item.group }} {{ item.mode }} {{ item.mtime }} {{ item.atime }} {{ item.ctime }} {{ item.inode }}",
             ctx, "/dir/sample.jpg sample.jpg /dir file 123456 root users 0644 1622555123 1622555200 1622554987 12345",
             NULL);
    assert_int_equal(rf_tmpl_check(t, s_seed_m, NULL, 0), 0);
}

static void test_seed_path_pattern(void **state)
{
    rf_tmpl_t *t = *state;
    char why[256] = "";
    const char *path = "/image_landing/2024/a.jpg";
    char *out = rf_tmpl_path_pattern(s_seed_pp_re, path, s_seed_pp, why, sizeof(why));
    assert_non_null(out);
    assert_string_equal(out, "/newimg/2024/a.jpg");
    free(out);
    assert_int_equal(rf_tmpl_check_pattern(t, s_seed_pp, s_seed_pp_re, why, sizeof(why)), 0);
    out = rf_tmpl_render_pattern(t, s_seed_pp, s_seed_pp_re, path, s_ctx(path, "/image_landing"), why, sizeof(why));
    assert_non_null(out);
    assert_string_equal(out, "/newimg/2024/a.jpg");
    free(out);
    /* #0 is the whole match; groups in expressions; Nunjucks around them */
    out = rf_tmpl_render_pattern(t, "/#0|#1|{{ pathPattern[2] | upper }}|{{ item.filename }}#2", s_seed_pp_re, path,
                                 s_ctx(path, "/"), why, sizeof(why));
    assert_non_null(out);
    assert_string_equal(out, "//image_landing/2024/a.jpg|image_landing|2024/A.JPG|sample.jpg2024/a.jpg");
    free(out);
    /* no pattern: a plain render */
    out = rf_tmpl_render_pattern(t, s_seed_newimg, NULL, NULL, s_ctx(path, "/"), why, sizeof(why));
    assert_non_null(out);
    assert_string_equal(out, "/newimg//image_landing/2024/a.jpg");
    free(out);
    assert_int_equal(rf_tmpl_check_pattern(t, s_seed_newimg, NULL, why, sizeof(why)), 0);
}

/* ---- the filters against Python -------------------------------------- */

static void test_basename_dirname(void **state)
{
    rf_tmpl_t *t = *state;
    static const struct {
        const char *in, *base, *dir;
    } v[] = {
        {"/a/b/", "", "/a/b"},
        {"a", "a", ""},
        {"", "", ""},
        {".hidden", ".hidden", ""},
        {"x.tar.gz", "x.tar.gz", ""},
        {"/", "", "/"},
        {"//", "", "//"},
        {"///a//b", "b", "///a"},
        {"/a/b", "b", "/a"},
        {"a/b/", "", "a/b"},
        {"//a", "a", "//"},
        {"/a/./b/../c", "c", "/a/./b/.."},
        {"..", "..", ""},
        {"../x", "x", ".."},
    };
    char ctx[512], js[128];
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        s_json_str(v[i].in, js, sizeof(js));
        snprintf(ctx, sizeof(ctx), "{\"x\":%s}", js);
        s_expect(t, "{{ x | basename }}", ctx, v[i].base, NULL);
        s_expect(t, "{{ x | dirname }}", ctx, v[i].dir, NULL);
    }
    s_expect(t, "{{ n | basename }}", "{\"n\":5}", NULL, "basename takes a string, not number");
    s_expect(t, "{{ typo | dirname }}", "{}", NULL, "dirname takes a string, not undefined ('typo' is undefined)");
    s_expect(t, "{{ 'a/b' | basename(1) }}", "{}", NULL, "basename takes at most 0 arguments");
}

static void test_relpath(void **state)
{
    rf_tmpl_t *t = *state;
    static const struct {
        const char *path, *start, *want; /* start NULL: none */
    } v[] = {
        {"/a/b/c", "/a", "b/c"},
        {"/a/b/c", "/a/b/c", "."},
        {"/a/b", "/a/b/c/d", "../.."},
        {"/a/x", "/a/y/z", "../../x"},
        {"a/b", "a", "b"},
        {"a/b", "/", "a/b"},
        {"/a/b", NULL, "a/b"},
        {"b", "/a", "../b"},
        {"/a/../b/./c//d", "/b", "c/d"},
        {".hidden", ".", ".hidden"},
        {"//a/b", "/a", "b"},
        {"/a/b/", "/a/", "b"},
        {"x", "", "x"},
    };
    char ctx[512], p[128], s[128];
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        s_json_str(v[i].path, p, sizeof(p));
        if (v[i].start != NULL)
            s_json_str(v[i].start, s, sizeof(s));
        else
            snprintf(s, sizeof(s), "null");
        snprintf(ctx, sizeof(ctx), "{\"p\":%s,\"s\":%s}", p, s);
        s_expect(t, "{{ p | relpath(s) }}", ctx, v[i].want, NULL);
        s_expect(t, "{{ p | relpath(start=s) }}", ctx, v[i].want, NULL);
        if (v[i].start == NULL)
            s_expect(t, "{{ p | relpath }}", ctx, v[i].want, NULL);
    }
    s_expect(t, "{{ '' | relpath('/') }}", "{}", NULL, "relpath: no path specified");
    s_expect(t, "{{ 'a' | relpath(begin='/') }}", "{}", NULL, "relpath: no argument 'begin'");
}

static void test_rsplit(void **state)
{
    rf_tmpl_t *t = *state;
    /* "count:a|b|c" — the count tells [] from [""] */
    static const struct {
        const char *s, *sep; /* sep NULL: none (whitespace) */
        int max;
        const char *want;
    } v[] = {
        {"x.tar.gz", ".", -1, "3:x|tar|gz"},
        {"x.tar.gz", ".", 1, "2:x.tar|gz"},
        {"x.tar.gz", ".", 2, "3:x|tar|gz"},
        {"x.tar.gz", ".", 0, "1:x.tar.gz"},
        {"x.tar.gz", ".", 5, "3:x|tar|gz"},
        {".hidden", ".", 1, "2:|hidden"},
        {"noext", ".", 1, "1:noext"},
        {"", ".", 1, "1:"},
        {"", ".", -1, "1:"},
        {"a..b", ".", -1, "3:a||b"},
        {"aaa", "aa", -1, "2:a|"},
        {"a--b--c", "--", 1, "2:a--b|c"},
        {"x.", ".", 1, "2:x|"},
        {"  a b\t c  ", NULL, -1, "3:a|b|c"},
        {"  a b\t c  ", NULL, 1, "2:  a b|c"},
        {"  a b  ", NULL, 0, "1:  a b"},
        {"", NULL, -1, "0:"},
        {"   ", NULL, -1, "0:"},
        /* Python's isspace: \x1c and U+0085 and U+3000 are, U+FEFF is not */
        {"a\x1c"
         "b\xc2\x85"
         "c\xe3\x80\x80"
         "d\xef\xbb\xbf"
         "e",
         NULL, -1,
         "4:a|b|c|d\xef\xbb\xbf"
         "e"},
    };
    char ctx[512], s[128], sep[32];
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        s_json_str(v[i].s, s, sizeof(s));
        if (v[i].sep != NULL)
            s_json_str(v[i].sep, sep, sizeof(sep));
        else
            snprintf(sep, sizeof(sep), "null");
        snprintf(ctx, sizeof(ctx), "{\"s\":%s,\"sep\":%s,\"max\":%d}", s, sep, v[i].max);
        s_expect(t, "{% set r = s | rsplit(sep, max) %}{{ r | length }}:{{ r | join('|') }}", ctx, v[i].want, NULL);
        s_expect(t, "{% set r = s | rsplit(sep=sep, maxsplit=max) %}{{ r | length }}:{{ r | join('|') }}", ctx,
                 v[i].want, NULL);
    }
    s_expect(t, "{{ 'a b' | rsplit | join('|') }}", "{}", "a|b", NULL);
    s_expect(t, "{{ 'a.b.c' | rsplit('.') | join('|') }}", "{}", "a|b|c", NULL);
    s_expect(t, "{{ 'a.b' | rsplit('') }}", "{}", NULL, "rsplit: empty separator");
    s_expect(t, "{{ 'a.b' | rsplit('.', 1.5) }}", "{}", NULL, "rsplit's maxsplit takes integers");
    s_expect(t, "{{ 'a.b' | rsplit('.', '1') }}", "{}", NULL, "rsplit's maxsplit takes integers, not string");
    s_expect(t, "{{ 'a.b' | rsplit('.', 1, 2) }}", "{}", NULL, "rsplit takes at most 2 arguments");
    s_expect(t, "{{ 'a.b' | rsplit('.', maxsplit=1, sep='.') }}", "{}", NULL, "'sep' given twice");
}

static void test_negative_index(void **state)
{
    rf_tmpl_t *t = *state;
    const char *ctx = "{\"p\":\"/a/b/c.d.jpg\",\"l\":[1,2,3]}";
    s_expect(t, "{{ (p | rsplit('.', 1))[-1] }}", ctx, "jpg", NULL);
    s_expect(t, "{{ p | rsplit('.')[-2] }}", ctx, "d", NULL);
    s_expect(t, "{{ p | rsplit('.')[-3] }}", ctx, "/a/b/c", NULL);
    s_expect(t, "{{ p | rsplit('.')[-4] }}", ctx, NULL, "([-4] is undefined)");
    s_expect(t, "{{ l[-1] }}{{ l[-3] }}{{ l[0] }}", ctx, "311", NULL);
    s_expect(t, "{{ p[-1] }}{{ p[-3] }}", ctx, "gj", NULL);
    s_expect(t, "{{ p.split('/')[-1] }}", ctx, "c.d.jpg", NULL);
    s_expect(t, "{{ p | rsplit('/') | last }}", ctx, "c.d.jpg", NULL);
    s_expect(t, "{{ p | rsplit('/', 1).length }}", ctx, "2", NULL);
}

/* ---- errors -------------------------------------------------------------- */

static void test_undefined(void **state)
{
    rf_tmpl_t *t = *state;
    const char *ctx = s_ctx("/dir/a.jpg", "/dir");
    s_expect(t, "/newimg/{{ item.paht }}", ctx, NULL,
             "attempted to output null or undefined value ('paht' is undefined)");
    s_expect(t, "/newimg/{{ itme.path }}", ctx, NULL, "attempted to output null or undefined value");
    s_expect(t, "{{ item.path | relpath(sourcedir) }}", ctx, "dir/a.jpg", NULL); /* start none: "." */
    s_expect(t, "{{ nothing }}", "{\"nothing\":null}", NULL, "attempted to output null or undefined value");
    /* what Nunjucks offers for optional values still works */
    s_expect(t, "{{ typo | default('x') }}{% if typo is defined %}y{% endif %}", ctx, "x", NULL);
    s_expect(t, "{{ item.size + 1 }} {{ item.state == 'file' }}", ctx, "123457 true", NULL);
}

static void test_syntax_errors(void **state)
{
    rf_tmpl_t *t = *state;
    char why[256] = "";
    assert_int_equal(rf_tmpl_check(t, "/newimg/{{ item.path ", why, sizeof(why)), -1);
    assert_string_equal(why, "expected variable end");
    assert_int_equal(rf_tmpl_check(t, "/newimg/{{ item.path item.size }}", why, sizeof(why)), -1);
    assert_string_equal(why, "[Line 1, Column 22] expected variable end");
    assert_int_equal(rf_tmpl_check(t, "{{ item.path | }}", why, sizeof(why)), -1);
    assert_non_null(strstr(why, "expected"));
    assert_int_equal(rf_tmpl_check(t, "{% for x in y %}", why, sizeof(why)), -1);
    assert_string_equal(why, "unexpected end of file");
    assert_int_equal(rf_tmpl_check(t, "{% nope %}", why, sizeof(why)), -1);
    assert_non_null(strstr(why, "unknown block tag: nope"));
    s_expect(t, "{{ 'a' | nofilter }}", "{}", NULL, "filter not found: nofilter");
    s_expect(t, "{% if 1 is nothing %}{% endif %}", "{}", NULL, "test not found: nothing");
    s_expect(t, "{% include 'other' %}", "{}", NULL, "template not found: other");
    /* the message is one line, and a short buffer is fine */
    char small[8];
    assert_int_equal(rf_tmpl_check(t, "{{\n\n x y }}", small, sizeof(small)), -1);
    assert_int_equal(strlen(small), 7);
    assert_int_equal(rf_tmpl_check(t, "{{\n\n x y }}", NULL, 0), -1);
    assert_int_equal(rf_tmpl_check(t, "{{\n\n x y }}", why, sizeof(why)), -1);
    assert_null(strchr(why, '\n'));
    /* contexts */
    s_expect(t, "x", "{\"a\":", NULL, "the context is not JSON");
    s_expect(t, "x", "[1]", NULL, "the context is not a JSON object");
    s_expect(t, "x", "null", NULL, "the context is not a JSON object");
    s_expect(t, "x", NULL, NULL, "a context is at most");
}

/* ---- bounds ------------------------------------------------------------------ */

static void test_bounds(void **state)
{
    rf_tmpl_t *t = *state;
    char why[256];
    /* template length */
    char *src = malloc(RF_TMPL_SRC_MAX + 2);
    memset(src, 'a', RF_TMPL_SRC_MAX);
    src[RF_TMPL_SRC_MAX] = '\0';
    s_expect(t, src, "{}", src, NULL);
    src[RF_TMPL_SRC_MAX] = 'a';
    src[RF_TMPL_SRC_MAX + 1] = '\0';
    s_expect(t, src, "{}", NULL, "a template is at most 2048 bytes");
    assert_int_equal(rf_tmpl_check(t, src, why, sizeof(why)), -1);
    assert_null(rf_tmpl_render(t, NULL, "{}", why, sizeof(why)));
    free(src);
    /* context size */
    char *ctx = malloc(RF_TMPL_CONTEXT_MAX + 16);
    size_t n = (size_t)snprintf(ctx, 16, "{\"x\":\"");
    memset(ctx + n, 'b', RF_TMPL_CONTEXT_MAX - n - 2);
    memcpy(ctx + RF_TMPL_CONTEXT_MAX - 2, "\"}", 3);
    s_expect(t, "{{ x.length }}", ctx, "65528", NULL);
    s_expect(t, "{{ x | length }}", ctx, NULL, "a string longer than 8192 characters"); /* filters' bound */
    memcpy(ctx + RF_TMPL_CONTEXT_MAX - 2, "b\"}", 4);
    s_expect(t, "{{ x.length }}", ctx, NULL, "a context is at most 65536 bytes");
    /* output: 4096 bytes pass, 4097 do not (in bytes: 2-byte characters count twice) */
    n = (size_t)snprintf(ctx, 16, "{\"x\":\"");
    memset(ctx + n, 'c', 4096);
    memcpy(ctx + n + 4096, "\"}", 3);
    s_expect(t, "{{ x | length }}", ctx, "4096", NULL);
    char *out = rf_tmpl_render(t, "{{ x }}", ctx, why, sizeof(why));
    assert_non_null(out);
    assert_int_equal(strlen(out), 4096);
    free(out);
    s_expect(t, "{{ x }}.", ctx, NULL, "the result is 4097 bytes, more than 4096");
    out = rf_tmpl_render(t, "{% for i in range(2048) %}{{ 'é' }}{% endfor %}", "{}", why, sizeof(why));
    assert_non_null(out);
    assert_int_equal(strlen(out), 4096);
    free(out);
    s_expect(t, "{% for i in range(2049) %}{{ 'é' }}{% endfor %}", "{}", NULL, "more than 4096");
    free(ctx);
    /* strings: filters take and give, and {% set %} keeps, at most 8192 characters */
    s_expect(t, "{{ 'ab' | center(8192) | length }}", "{}", "8192", NULL);
    s_expect(t, "{{ 'ab' | center(8193) | length }}", "{}", NULL, "a string longer than 8192 characters");
    s_expect(t, "{{ 'ab' | indent(100000000) }}", "{}", NULL, "a string longer than 8192 characters");
    s_expect(t, "{% set s = 'ab' %}{% for i in range(20) %}{% set s = s ~ s %}{% endfor %}", "{}", NULL,
             "a string longer than 8192 characters");
    s_expect(t, "{{ 'ab'.repeat(5000) | length }}", "{}", NULL, "a string longer than 8192 characters");
    /* range() */
    s_expect(t, "{{ range(3) | join(',') }} {{ range(1, 7, 2) | join(',') }} {{ range(3, 0, -1) | join(',') }}", "{}",
             "0,1,2 1,3,5 3,2,1", NULL);
    s_expect(t, "{{ range(10000) | length }}", "{}", "10000", NULL);
    s_expect(t, "{{ range(10001) | length }}", "{}", NULL, "range: more than 10000 elements");
    s_expect(t, "{{ range(0, 1, 0) }}", "{}", NULL, "range: step must not be zero");
    s_expect(t, "{{ range(0.5) }}", "{}", NULL, "range takes integers, not number");
    s_expect(t, "{{ range(1e300, 1e300 + 1, 1e-300) }}", "{}", NULL, "range takes integers");
    /* steps: a loop iteration is about ten. 1000 iterations, far inside both
     * budgets: 5000 once took more than the 250 ms of CPU under ASan on a
     * loaded machine (CI), where the CPU budget, not the steps, ended it. */
    s_expect(t, "{% for i in range(1000) %}{% endfor %}done", "{}", "done", NULL);
    /* 100000 steps take about 100 ms of CPU (more with sanitizers): either budget may end it */
    s_expect(t, "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}", "{}", NULL,
             "the template takes more than");
    /* time: each step is cheap here, but there are many */
    s_expect(t, "{% for i in range(10000) %}{% set x = 'a'.repeat(4096) | replace('a', 'b') | length %}{% endfor %}",
             "{}", NULL, "the template takes more than");
    /* memory: deep recursion and arrays past the heap's bounds fail cleanly */
    s_expect(t, "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "{}", NULL,
             "the template needs more memory than it may use");
    s_expect(t, "{{ [] | slice(100000000) | length }}", "{}", NULL, "the template needs more memory");
    s_expect(t, "{{ [1] | batch(100000000, 'x') | length }}", "{}", NULL, "the template needs more memory");
    /* and the heap is still fine afterwards */
    s_expect(t, s_seed_newimg, s_ctx("/a", "/"), "/newimg//a", NULL);
}

/* ---- hostile item data ------------------------------------------------------ */

static void test_hostile_data(void **state)
{
    rf_tmpl_t *t = *state;
    static const char *const names[] = {
        "/in/{{ 7*7 }}.jpg",
        "/in/{% raw %}{{ x }}{% endraw %}",
        "/in/{# c #}/{%- if 1 -%}y{%- endif -%}",
        "/in/\"q\" 'q' \\\" \\ \\u0041",
        "/in/}}{{/%}{%/#}{#",
        "/in/${x}`x`<script>&amp;",
        "/in/constructor/__proto__/prototype",
        "/in/\xed\x95\x9c\xea\xb8\x80 \xf0\x9f\x98\x80.jpg", /* 한글 😀 */
        "/in/\t\x01\x1f\x7f",
        "/in/#1#2#0",
        "/in/r/a+/",
    };
    char want[512];
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        const char *ctx = s_ctx(names[i], "/in");
        snprintf(want, sizeof(want), "/newimg/%s", names[i]);
        s_expect(t, s_seed_newimg, ctx, want, NULL);
        snprintf(want, sizeof(want), "/processed/%s", names[i]);
        s_expect(t, s_seed_move, ctx, want, NULL);
        /* pathPattern's groups are data too */
        char why[256] = "";
        char *out = rf_tmpl_render_pattern(t, s_seed_pp, s_seed_pp_re, names[i], ctx, why, sizeof(why));
        assert_non_null(out);
        snprintf(want, sizeof(want), "/newimg/%s", names[i] + 4);
        assert_string_equal(out, want);
        free(out);
        out = rf_tmpl_path_pattern(s_seed_pp_re, names[i], s_seed_pp, why, sizeof(why));
        assert_non_null(out);
        assert_string_equal(out, want);
        free(out);
    }
    /* the seed's second template over a hostile name */
    s_expect(t, s_seed_m, s_ctx("/in/d/{{ 7*7 }}.x{{y}}", "/in"), "/d/{{ 7*7 }}_m.x{{y}}", NULL);
    s_expect(t, s_seed_m, s_ctx("/in/\xed\x95\x9c.\xf0\x9f\x98\x80", "/in"), "//\xed\x95\x9c_m.\xf0\x9f\x98\x80", NULL);
    /* a character outside the BMP sent as a JSON surrogate pair comes out as UTF-8 */
    s_expect(t, "{{ x }}|{{ x | length }}", "{\"x\":\"\\ud83d\\ude00\"}", "\xf0\x9f\x98\x80|2", NULL);
    s_expect(t, "{{ x }}", "{\"x\":\"a\\ud83d\"}", NULL, "lone UTF-16 surrogate");
    s_expect(t, "{{ x }}", "{\"x\":\"a\\u0000b\"}", NULL, "NUL");
}

/* ---- the way out of the template language is closed ------------------------- */

static void test_sandbox(void **state)
{
    rf_tmpl_t *t = *state;
    const char *ctx = s_ctx("/a/b.jpg", "/a");
    s_expect(t, "{{ range.constructor('return 1')() }}", ctx, NULL, "'constructor' may not be used");
    s_expect(t, "{{ item['constr' ~ 'uctor'] }}", ctx, NULL, "'constructor' may not be used");
    s_expect(t, "{{ constructor }}", ctx, NULL, "'constructor' may not be used");
    s_expect(t, "{{ item.__proto__ }}", ctx, NULL, "'__proto__' may not be used");
    s_expect(t, "{% set __proto__ = item %}", ctx, NULL, "'__proto__' may not be used");
    s_expect(t, "{{ item.path.match('(a+)+$') }}", ctx, NULL, "'match' may not be used");
    s_expect(t, "{{ item.path.search('a') }}", ctx, NULL, "'search' may not be used");
    s_expect(t, "{{ item.path | replace(r/a+/g, 'x') }}", ctx, NULL, "regular expressions (r/.../) are not supported");
    s_expect(t, "{{ item | constructor }}", ctx, NULL, "filter not found: constructor");
    s_expect(t, "{{ item[{}] }}", ctx, NULL, "an index must be a string or a number");
    s_expect(t, "{{ item.path | replace('b', 'c') }}", ctx, "/a/c.jpg", NULL);
    /* renders do not leak into each other */
    s_expect(t, "{% set x = 1 %}{{ x }}", ctx, "1", NULL);
    s_expect(t, "{{ x }}", ctx, NULL, "'x' is undefined");
}

/* ---- pathPattern ---------------------------------------------------------------- */

static void test_path_pattern(void **state)
{
    rf_tmpl_t *t = *state;
    char why[256] = "";
    char *out;
    /* no match */
    assert_null(rf_tmpl_path_pattern("^/nomatch/(.*)", "/a/b", "#1", why, sizeof(why)));
    assert_string_equal(why, "pathPattern does not match");
    assert_null(rf_tmpl_render_pattern(t, "#1", "^/nomatch/(.*)", "/a/b", "{}", why, sizeof(why)));
    assert_string_equal(why, "pathPattern does not match");
    /* a search, not an anchored match; unset groups are ""; #10 is #1 then 0 */
    out = rf_tmpl_path_pattern("b(x)?/(c)", "/a/b/c", "[#0][#1][#2][#10]#", why, sizeof(why));
    assert_non_null(out);
    assert_string_equal(out, "[b/c][][c][0]#");
    free(out);
    out = rf_tmpl_render_pattern(t, "[#0][#1][#2][#10]#", "b(x)?/(c)", "/a/b/c", "{}", why, sizeof(why));
    assert_non_null(out);
    assert_string_equal(out, "[b/c][][c][0]#");
    free(out);
    /* #N past the groups */
    assert_null(rf_tmpl_path_pattern("/(a)", "/a", "#2", why, sizeof(why)));
    assert_string_equal(why, "#2 but pathPattern has 1 group");
    assert_int_equal(rf_tmpl_check_pattern(t, "#3", "(a)(b)", why, sizeof(why)), -1);
    assert_string_equal(why, "#3 but pathPattern has 2 groups");
    /* #N inside tags and raw blocks; comments keep it */
    assert_int_equal(rf_tmpl_check_pattern(t, "{{ '#1' }}", "(a)", why, sizeof(why)), -1);
    assert_string_equal(why, "#1 inside a Nunjucks tag at offset 4: write pathPattern[1] there");
    assert_int_equal(rf_tmpl_check_pattern(t, "{% if '#1' %}{% endif %}", "(a)", why, sizeof(why)), -1);
    assert_int_equal(rf_tmpl_check_pattern(t, "{% raw %}#1{% endraw %}", "(a)", why, sizeof(why)), -1);
    assert_non_null(strstr(why, "inside {% raw %}"));
    assert_int_equal(rf_tmpl_check_pattern(t, "{%- raw -%}{{ #1 }}{% endraw %}", "(a)", why, sizeof(why)), -1);
    assert_non_null(strstr(why, "inside {% raw %}"));
    assert_int_equal(rf_tmpl_check_pattern(t, "{% verbatim %}#1{% endverbatim %}", "(a)", why, sizeof(why)), -1);
    /* a raw block ends at its end tag, whatever it holds (Nunjucks does not lex it) */
    out = rf_tmpl_render_pattern(t, "{% raw %}{{ \" {% endraw %}#1", "(a)", "a", "{}", why, sizeof(why));
    assert_non_null(out);
    assert_string_equal(out, "{{ \" a");
    free(out);
    out = rf_tmpl_render_pattern(t, "{# #1 #}{% raw %}{{ x }}{% endraw %}#1{{ '}}#' }}", "(a)", "a", "{}", why,
                                 sizeof(why));
    assert_non_null(out);
    assert_string_equal(out, "{{ x }}a}}#");
    free(out);
    /* bad regexes */
    assert_null(rf_tmpl_path_pattern("(", "/a", "#1", why, sizeof(why)));
    assert_non_null(strstr(why, "pathPattern: missing closing parenthesis at offset 1"));
    assert_int_equal(rf_tmpl_check_pattern(t, "#1", "(", why, sizeof(why)), -1);
    assert_null(rf_tmpl_path_pattern("", "/a", "#0", why, sizeof(why)));
    assert_null(rf_tmpl_path_pattern("\\C", "/a", "#0", why, sizeof(why)));
    assert_null(rf_tmpl_path_pattern(NULL, "/a", "#0", why, sizeof(why)));
    assert_null(rf_tmpl_path_pattern("a", NULL, "#0", why, sizeof(why)));
    assert_null(rf_tmpl_render_pattern(t, "#0", "a", NULL, "{}", why, sizeof(why)));
    /* catastrophic backtracking over a hostile path stops at PCRE2's limits */
    char path[64];
    memset(path, 'a', 40);
    memcpy(path + 40, "!", 2);
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    assert_null(rf_tmpl_path_pattern("^(a+)+$", path, "#1", why, sizeof(why)));
    clock_gettime(CLOCK_MONOTONIC, &b);
    assert_non_null(strstr(why, "limit"));
    assert_true((b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000 < 2000);
    /* characters, not bytes; invalid UTF-8 in the path matches nothing, and
     * what is around it is matched as usual */
    out = rf_tmpl_path_pattern("^/(.)(.)", "/\xed\x95\x9c\xea\xb8\x80", "#2#1", why, sizeof(why));
    assert_non_null(out);
    assert_string_equal(out, "\xea\xb8\x80\xed\x95\x9c");
    free(out);
    assert_null(rf_tmpl_path_pattern("/([^/]+)$", "/d/\xff\xfe.jpg", "/x/#1", why, sizeof(why)));
    assert_string_equal(why, "pathPattern does not match");
    out = rf_tmpl_path_pattern("^/(d)/", "/d/\xff\xfe.jpg", "/x/#1", why, sizeof(why));
    assert_non_null(out);
    assert_string_equal(out, "/x/d");
    free(out);
    /* the output bound */
    char big[RF_TMPL_PATH_MAX + 2];
    memset(big, 'p', 3000);
    big[3000] = '\0';
    out = rf_tmpl_path_pattern("p+", big, "#0", why, sizeof(why));
    assert_non_null(out);
    free(out);
    assert_null(rf_tmpl_path_pattern("p+", big, "#0#0", why, sizeof(why)));
    assert_non_null(strstr(why, "more than 4096"));
    memset(big, 'p', RF_TMPL_PATH_MAX + 1);
    big[RF_TMPL_PATH_MAX + 1] = '\0';
    assert_null(rf_tmpl_path_pattern("p", big, "#0", why, sizeof(why)));
    assert_non_null(strstr(why, "the path is longer than 4096 bytes"));
}

/* ---- the cache, heaps ------------------------------------------------------------ */

static void test_cache_and_heaps(void **state)
{
    rf_tmpl_t *t = *state;
    char why[256], src[64];
    /* more templates than the cache holds: it starts over, renders stay right */
    for (int i = 0; i < RF_TMPL_CACHE_MAX * 2 + 3; i++) {
        snprintf(src, sizeof(src), "%d-{{ x }}", i);
        char want[32];
        snprintf(want, sizeof(want), "%d-y", i);
        s_expect(t, src, "{\"x\":\"y\"}", want, NULL);
    }
    /* a second heap works beside the first */
    rf_tmpl_t *u = rf_tmpl_new(why, sizeof(why));
    assert_non_null(u);
    s_expect(u, s_seed_newimg, s_ctx("/u", "/"), "/newimg//u", NULL);
    s_expect(t, s_seed_newimg, s_ctx("/t", "/"), "/newimg//t", NULL);
    rf_tmpl_destroy(&u);
    assert_null(u);
}

/* Not asserted: renders per second of the seed's templates, for the report. */
static void test_speed(void **state)
{
    rf_tmpl_t *t = *state;
    const char *srcs[] = {s_seed_newimg, s_seed_m};
    char why[256];
    for (size_t k = 0; k < 2; k++) {
        struct timespec a, b, ca, cb;
        clock_gettime(CLOCK_MONOTONIC, &a);
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ca);
        for (int i = 0; i < 10000; i++) {
            char path[64];
            snprintf(path, sizeof(path), "/image_landing/%d/photo%d.jpg", i % 17, i);
            char *out = rf_tmpl_render(t, srcs[k], s_ctx(path, "/image_landing"), why, sizeof(why));
            assert_non_null(out);
            free(out);
        }
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cb);
        clock_gettime(CLOCK_MONOTONIC, &b);
        double s = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
        double c = (double)(cb.tv_sec - ca.tv_sec) + (double)(cb.tv_nsec - ca.tv_nsec) / 1e9;
        printf("rf_tmpl: 10000 renders of seed template %zu: %.3f s (%.0f renders/s), %.3f s of CPU (%.0f/s)\n", k + 1,
               s, 10000 / s, c, 10000 / c);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_seed_templates),   cmocka_unit_test(test_seed_path_pattern),
        cmocka_unit_test(test_basename_dirname), cmocka_unit_test(test_relpath),
        cmocka_unit_test(test_rsplit),           cmocka_unit_test(test_negative_index),
        cmocka_unit_test(test_undefined),        cmocka_unit_test(test_syntax_errors),
        cmocka_unit_test(test_bounds),           cmocka_unit_test(test_hostile_data),
        cmocka_unit_test(test_sandbox),          cmocka_unit_test(test_path_pattern),
        cmocka_unit_test(test_cache_and_heaps),  cmocka_unit_test(test_speed),
    };
    return cmocka_run_group_tests_name("rf_tmpl", tests, s_setup, s_teardown);
}
