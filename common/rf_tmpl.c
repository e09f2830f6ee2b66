/*  rf_tmpl — storgate's savePath templates: Nunjucks 3.2.4 in Duktape, and
 *  the seed's pathPattern (the API and every limit are in rf_tmpl.h).
 *
 *  Why Nunjucks itself rather than a look-alike in C: the seed says the
 *  templates are Nunjucks expressions, and operators will write filters,
 *  conditionals and loops as Nunjucks documents them; a reimplementation
 *  would differ in many small ways. Duktape runs the browser bundle as it
 *  is, embedded into the object file below with the assembler's .incbin
 *  (no generated source, no run-time file: the build runs from the
 *  repository root, where third_party/ is).
 *
 *  The heap. Each rf_tmpl_t owns a Duktape heap whose allocations go
 *  through s_alloc / s_realloc / s_free: every block carries a header that
 *  links it into a list and records its size, so the heap's total
 *  (RF_TMPL_HEAP_MAX) and any single block (RF_TMPL_ALLOC_MAX) are bounded
 *  — Duktape turns a refused allocation into a RangeError after a garbage
 *  collection — and, should Duktape ever hit a fatal error, the whole heap
 *  can be freed without Duktape's help. Every call into Duktape runs inside
 *  duk_safe_call with a setjmp armed; the fatal handler longjmps back
 *  there, the heap is dropped block by block, and the next call builds a
 *  new one. So no error, whatever the template or the data, aborts the
 *  process.
 *
 *  The JavaScript glue (s_glue) wraps Nunjucks' runtime to count steps and
 *  time, to refuse the lookups that lead out of the template language
 *  (constructor, __proto__, …) and regular expressions, to bound strings
 *  and range(), to give Jinja's negative indexes, to let `| f(a)[i]`
 *  subscript f's result as the seed writes it, and to name the undefined
 *  variable in throwOnUndefined's error; it adds the os.path filters and
 *  a render() that parses the context from JSON and caches compiled
 *  templates by their text. The C side passes text in and copies text out:
 *  item data never becomes template source.
 *
 *  pathPattern: PCRE2 (UTF; invalid UTF-8 in a path matches nothing; \C refused; match /
 *  depth / heap limits). For rendering, #N in the template's text becomes
 *  {{ pathPattern[N] }} and the groups ride in the context (s_rewrite).
 */
#include "rf_tmpl.h"

#define PCRE2_CODE_UNIT_WIDTH 8

#include <duktape.h>
#include <pcre2.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* PCRE2 limits for one pathPattern match: a catastrophic pattern over a
 * hostile path fails in milliseconds instead of running on. */
#define S_RE_MATCH_LIMIT 1000000u
#define S_RE_DEPTH_LIMIT 10000u
#define S_RE_HEAP_KIB 4096u
#define S_GROUPS 10 /* #0 … #9 */

/* Where the groups go in the context, and what #N becomes in the source. */
#define S_GROUPS_VAR "pathPattern"

/* ---- the embedded Nunjucks bundle -------------------------------------- */

/* The file's bytes between two hidden symbols, then a NUL. The path is
 * relative to the directory the compiler runs in: the Makefile's. */
__asm__(".pushsection .rodata\n"
        ".balign 16\n"
        ".globl rf_tmpl_nunjucks_js\n"
        ".hidden rf_tmpl_nunjucks_js\n"
        "rf_tmpl_nunjucks_js:\n"
        ".incbin \"third_party/nunjucks/nunjucks.min.js\"\n"
        ".globl rf_tmpl_nunjucks_js_end\n"
        ".hidden rf_tmpl_nunjucks_js_end\n"
        "rf_tmpl_nunjucks_js_end:\n"
        ".byte 0\n"
        ".popsection\n");
extern const char rf_tmpl_nunjucks_js[] __attribute__((visibility("hidden")));
extern const char rf_tmpl_nunjucks_js_end[] __attribute__((visibility("hidden")));

/* ---- the JavaScript glue ---------------------------------------------------
 * A function expression, called once with the nunjucks module, now() (the
 * thread's CPU time in milliseconds, read every 16 steps) and the limits
 * of rf_tmpl.h; it returns {check(src), render(src, json, groups)}, kept
 * in the heap stash (unreachable from templates). Both throw a one-line
 * string on error. */
static const char s_glue[] =
    "(function (nj, now, STEPS, MS, STR_MAX, RANGE_MAX, CACHE_MAX) {\n"
    "'use strict';\n"
    "var runtime = nj.runtime, lib = nj.lib, lexer = nj.lexer, Parser = nj.parser.Parser;\n"
    "var SafeString = runtime.SafeString, own = Object.prototype.hasOwnProperty;\n"
    "var env = new nj.Environment([], { autoescape: false, throwOnUndefined: true });\n"
    "var steps = 0, deadline = 0, lastUndef = null, cache = Object.create(null), cached = 0;\n"
    "\n"
    "function fail(msg) { throw new Error(msg); }\n"
    "\n"
    "/* ---- budgets and guards, around Nunjucks' runtime ---- */\n"
    "function tick() {\n"
    "  if (++steps > STEPS) fail('the template takes more than ' + STEPS + ' steps');\n"
    "  if ((steps & 15) === 0 && now() > deadline) fail('the template takes more than ' + MS + ' ms of CPU');\n"
    "}\n"
    "function guard(name) {\n"
    "  switch (name) {\n"
    "  case 'constructor': case '__proto__': case 'prototype':\n"
    "  case '__defineGetter__': case '__defineSetter__': case '__lookupGetter__': case '__lookupSetter__':\n"
    "  case 'match': case 'matchAll': case 'search':\n"
    "    fail(\"'\" + name + \"' may not be used in a template\");\n"
    "  }\n"
    "}\n"
    "function strLen(v) {\n"
    "  return typeof v === 'string' ? v.length : v instanceof SafeString ? String(v.val).length : 0;\n"
    "}\n"
    "function bound(v) {\n"
    "  if (strLen(v) > STR_MAX) fail('a string longer than ' + STR_MAX + ' characters');\n"
    "  return v;\n"
    "}\n"
    "function undefName() {\n"
    "  return lastUndef === null ? '' : typeof lastUndef === 'number' ? ' ([' + lastUndef + '] is undefined)'\n"
    "    : \" ('\" + lastUndef + \"' is undefined)\";\n"
    "}\n"
    "function typeName(v) {\n"
    "  return v === null ? 'none' : v === undefined ? 'undefined' + undefName()\n"
    "    : lib.isArray(v) ? 'a list' : typeof v;\n"
    "}\n"
    "\n"
    "var Frame = runtime.Frame, frameSet = Frame.prototype.set;\n"
    "Frame.prototype.set = function (name, val, resolveUp) {\n"
    "  tick();\n"
    "  guard(name);\n"
    "  return frameSet.call(this, name, bound(val), resolveUp);\n"
    "};\n"
    "var ctxLookup = runtime.contextOrFrameLookup;\n"
    "runtime.contextOrFrameLookup = function (context, frame, name) {\n"
    "  tick();\n"
    "  guard(name);\n"
    "  var v = ctxLookup(context, frame, name);\n"
    "  lastUndef = v === undefined ? name : null;\n"
    "  return v;\n"
    "};\n"
    "var memberLookup = runtime.memberLookup;\n"
    "runtime.memberLookup = function (obj, val) {\n"
    "  var idx = val;\n"
    "  tick();\n"
    "  if (typeof val === 'number') {\n"
    "    if (val < 0 && val % 1 === 0 && (typeof obj === 'string' || lib.isArray(obj))) {\n"
    "      val += obj.length; /* Jinja's x[-1] */\n"
    "    }\n"
    "  } else if (typeof val === 'string') {\n"
    "    guard(val);\n"
    "  } else {\n"
    "    fail('an index must be a string or a number, not ' + typeName(val));\n"
    "  }\n"
    "  var v = memberLookup(obj, val);\n"
    "  lastUndef = v === undefined ? idx : null;\n"
    "  return v;\n"
    "};\n"
    "var callWrap = runtime.callWrap;\n"
    "runtime.callWrap = function (obj, name, context, args) {\n"
    "  tick();\n"
    "  for (var i = 0; i < args.length; i++) bound(args[i]);\n"
    "  return bound(callWrap(obj, name, context, args));\n"
    "};\n"
    "var suppressValue = runtime.suppressValue;\n"
    "runtime.suppressValue = function (val, autoescape) {\n"
    "  tick();\n"
    "  return suppressValue(val, autoescape);\n"
    "};\n"
    "runtime.ensureDefined = function (val, lineno, colno) {\n"
    "  if (val === null || val === undefined) {\n"
    "    throw new lib.TemplateError('attempted to output null or undefined value' + undefName(),\n"
    "      lineno + 1, colno + 1);\n"
    "  }\n"
    "  return val;\n"
    "};\n"
    "var repeat = lib.repeat;\n"
    "lib.repeat = function (c, n) {\n"
    "  if (!(n <= STR_MAX)) fail('a string longer than ' + STR_MAX + ' characters');\n"
    "  return repeat(c, n);\n"
    "};\n"
    "env.getFilter = function (name) {\n"
    "  tick();\n"
    "  if (!own.call(this.filters, name)) fail('filter not found: ' + name);\n"
    "  var f = this.filters[name];\n"
    "  return function () {\n"
    "    for (var i = 0; i < arguments.length; i++) bound(arguments[i]);\n"
    "    return bound(f.apply(this, arguments));\n"
    "  };\n"
    "};\n"
    "env.getTest = function (name) {\n"
    "  tick();\n"
    "  if (!own.call(this.tests, name)) fail('test not found: ' + name);\n"
    "  return this.tests[name];\n"
    "};\n"
    "\n"
    "/* ---- the parser: `| f(args)[i]` subscripts f's result; no regex literals ---- */\n"
    "Parser.prototype.parseFilter = function (node) {\n"
    "  while (this.skip(lexer.TOKEN_PIPE)) {\n"
    "    var name = this.parseFilterName(), tok = this.peekToken(), args = [];\n"
    "    if (tok && tok.type === lexer.TOKEN_LEFT_PAREN) args = this.parseSignature().children;\n"
    "    node = new nj.nodes.Filter(name.lineno, name.colno, name,\n"
    "      new nj.nodes.NodeList(name.lineno, name.colno, [node].concat(args)));\n"
    "    tok = this.peekToken();\n"
    "    if (tok && (tok.type === lexer.TOKEN_LEFT_BRACKET ||\n"
    "        (tok.type === lexer.TOKEN_OPERATOR && tok.value === '.'))) {\n"
    "      node = this.parsePostfix(node);\n"
    "    }\n"
    "  }\n"
    "  return node;\n"
    "};\n"
    "var parsePrimary = Parser.prototype.parsePrimary;\n"
    "Parser.prototype.parsePrimary = function (noPostfix) {\n"
    "  var tok = this.peekToken();\n"
    "  if (tok && tok.type === lexer.TOKEN_REGEX) {\n"
    "    this.fail('regular expressions (r/.../) are not supported', tok.lineno, tok.colno);\n"
    "  }\n"
    "  return parsePrimary.call(this, noPostfix);\n"
    "};\n"
    "\n"
    "/* ---- range(): Python's, integers only, at most RANGE_MAX elements ---- */\n"
    "function integer(v, who) {\n"
    "  if (typeof v !== 'number' || v % 1 !== 0 || Math.abs(v) > 9007199254740991) {\n"
    "    fail(who + ' takes integers, not ' + typeName(v));\n"
    "  }\n"
    "  return v;\n"
    "}\n"
    "env.addGlobal('range', function (a, b, c) {\n"
    "  var n = arguments.length, start = 0, stop, step = 1, count, out = [];\n"
    "  if (n < 1 || n > 3) fail('range takes 1 to 3 arguments, not ' + n);\n"
    "  if (n === 1) stop = integer(a, 'range');\n"
    "  else { start = integer(a, 'range'); stop = integer(b, 'range'); if (n === 3) step = integer(c, 'range'); }\n"
    "  if (step === 0) fail('range: step must not be zero');\n"
    "  count = step > 0 ? Math.ceil((stop - start) / step) : Math.ceil((start - stop) / -step);\n"
    "  if (count > RANGE_MAX) fail('range: more than ' + RANGE_MAX + ' elements');\n"
    "  for (var i = 0; i < count; i++) out.push(start + i * step);\n"
    "  return out;\n"
    "});\n"
    "\n"
    "/* ---- the savePath filters: Python's os.path (posix) and str.rsplit ---- */\n"
    "function str(v, who) {\n"
    "  if (typeof v === 'string') return v;\n"
    "  if (v instanceof SafeString) return String(v.val);\n"
    "  return fail(who + ' takes a string, not ' + typeName(v));\n"
    "}\n"
    "/* Positional arguments after the value, with Nunjucks' keyword arguments\n"
    " * (a last object marked __keywords) put in their places. */\n"
    "function params(args, names, who) {\n"
    "  var n = args.length, out = [], kw = null, j;\n"
    "  if (n > 1 && args[n - 1] && args[n - 1].__keywords === true) kw = args[--n];\n"
    "  if (n - 1 > names.length) fail(who + ' takes at most ' + names.length + ' arguments');\n"
    "  for (j = 1; j < n; j++) out[j - 1] = args[j];\n"
    "  for (var k in kw) {\n"
    "    if (k === '__keywords' || !own.call(kw, k)) continue;\n"
    "    j = names.indexOf(k);\n"
    "    if (j < 0) fail(who + \": no argument '\" + k + \"'\");\n"
    "    if (j < n - 1) fail(who + \": '\" + k + \"' given twice\");\n"
    "    out[j] = kw[k];\n"
    "  }\n"
    "  return out;\n"
    "}\n"
    "function isSpace(c) { /* Python's str.isspace */\n"
    "  var x = c.charCodeAt(0);\n"
    "  return (x >= 9 && x <= 13) || (x >= 0x1c && x <= 0x20) || x === 0x85 || x === 0xa0 || x === 0x1680 ||\n"
    "    (x >= 0x2000 && x <= 0x200a) || x === 0x2028 || x === 0x2029 || x === 0x202f || x === 0x205f ||\n"
    "    x === 0x3000;\n"
    "}\n"
    "function rsplit(s, sep, max) {\n"
    "  var out = [], end = s.length, i, j;\n"
    "  if (sep !== null) {\n"
    "    while (max < 0 || out.length < max) {\n"
    "      i = end - sep.length < 0 ? -1 : s.lastIndexOf(sep, end - sep.length);\n"
    "      if (i < 0) break;\n"
    "      out.push(s.slice(i + sep.length, end));\n"
    "      end = i;\n"
    "    }\n"
    "    out.push(s.slice(0, end));\n"
    "  } else {\n"
    "    i = s.length - 1;\n"
    "    while (max < 0 || out.length < max) {\n"
    "      while (i >= 0 && isSpace(s.charAt(i))) i--;\n"
    "      if (i < 0) break;\n"
    "      j = i--;\n"
    "      while (i >= 0 && !isSpace(s.charAt(i))) i--;\n"
    "      out.push(s.slice(i + 1, j + 1));\n"
    "    }\n"
    "    if (i >= 0) {\n"
    "      while (i >= 0 && isSpace(s.charAt(i))) i--;\n"
    "      if (i >= 0) out.push(s.slice(0, i + 1));\n"
    "    }\n"
    "  }\n"
    "  return out.reverse();\n"
    "}\n"
    "function normpath(p) {\n"
    "  if (p === '') return '.';\n"
    "  var lead = p.charAt(0) !== '/' ? '' : p.charAt(1) === '/' && p.charAt(2) !== '/' ? '//' : '/';\n"
    "  var comps = p.split('/'), out = [];\n"
    "  for (var i = 0; i < comps.length; i++) {\n"
    "    var c = comps[i];\n"
    "    if (c === '' || c === '.') continue;\n"
    "    if (c !== '..' || (!lead && !out.length) || (out.length && out[out.length - 1] === '..')) out.push(c);\n"
    "    else if (out.length) out.pop();\n"
    "  }\n"
    "  return lead + out.join('/') || '.';\n"
    "}\n"
    "function parts(p) { /* the names of abspath(p), the current directory being \"/\" */\n"
    "  return normpath(p.charAt(0) === '/' ? p : '/' + p).split('/').filter(function (x) { return x !== ''; });\n"
    "}\n"
    "env.addFilter('basename', function (v) {\n"
    "  params(arguments, [], 'basename');\n"
    "  var p = str(v, 'basename');\n"
    "  return p.slice(p.lastIndexOf('/') + 1);\n"
    "});\n"
    "env.addFilter('dirname', function (v) {\n"
    "  params(arguments, [], 'dirname');\n"
    "  var p = str(v, 'dirname'), head = p.slice(0, p.lastIndexOf('/') + 1), i = head.length;\n"
    "  while (i > 0 && head.charAt(i - 1) === '/') i--;\n"
    "  return i > 0 ? head.slice(0, i) : head;\n"
    "});\n"
    "env.addFilter('relpath', function (v) {\n"
    "  var a = params(arguments, ['start'], 'relpath'), p = str(v, 'relpath');\n"
    "  if (p === '') fail('relpath: no path specified');\n"
    "  var s = parts(a[0] === undefined || a[0] === null ? '.' : str(a[0], \"relpath's start\")), q = parts(p);\n"
    "  var i = 0, out = [];\n"
    "  while (i < s.length && i < q.length && s[i] === q[i]) i++;\n"
    "  for (var k = i; k < s.length; k++) out.push('..');\n"
    "  out = out.concat(q.slice(i));\n"
    "  return out.length ? out.join('/') : '.';\n"
    "});\n"
    "env.addFilter('rsplit', function (v) {\n"
    "  var a = params(arguments, ['sep', 'maxsplit'], 'rsplit'), s = str(v, 'rsplit');\n"
    "  var sep = a[0] === undefined || a[0] === null ? null : str(a[0], \"rsplit's sep\");\n"
    "  var max = a[1] === undefined ? -1 : integer(a[1], \"rsplit's maxsplit\");\n"
    "  if (sep === '') fail('rsplit: empty separator');\n"
    "  return rsplit(s, sep, max);\n"
    "});\n"
    "\n"
    "/* ---- the API rf_tmpl.c calls ---- */\n"
    "function message(e) {\n"
    "  var m = e !== null && typeof e === 'object' && typeof e.message === 'string' ? e.message : String(e);\n"
    "  m = m.replace(/\\(unknown path\\)/g, '').replace(/Template render error:/g, '')\n"
    "    .replace(/(^|\\s)Error: /g, '$1').replace(/\\s+/g, ' ').replace(/^ | $/g, '');\n"
    "  return /alloc failed/.test(m) ? 'the template needs more memory than it may use (' + m + ')' : m;\n"
    "}\n"
    "function compiled(src) {\n"
    "  var t = cache[src];\n"
    "  if (t === undefined) {\n"
    "    t = new nj.Template(src, env, undefined, true);\n"
    "    if (cached >= CACHE_MAX) { cache = Object.create(null); cached = 0; }\n"
    "    cache[src] = t;\n"
    "    cached++;\n"
    "  }\n"
    "  return t;\n"
    "}\n"
    "return {\n"
    "  check: function (src) {\n"
    "    try { compiled(src); } catch (e) { throw message(e); }\n"
    "  },\n"
    "  render: function (src, json, groups) {\n"
    "    var ctx, out;\n"
    "    try { ctx = JSON.parse(json); } catch (e) { throw 'the context is not JSON: ' + message(e); }\n"
    "    if (ctx === null || typeof ctx !== 'object' || lib.isArray(ctx)) {\n"
    "      throw 'the context is not a JSON object';\n"
    "    }\n"
    "    if (groups !== undefined) ctx.pathPattern = groups;\n"
    "    try {\n"
    "      steps = 0;\n"
    "      lastUndef = null;\n"
    "      deadline = now() + MS;\n"
    "      out = compiled(src).render(ctx);\n"
    "    } catch (e) { throw message(e); }\n"
    "    if (typeof out !== 'string') throw 'the template rendered no string';\n"
    "    return out;\n"
    "  }\n"
    "};\n"
    "})\n";

/* ---- the heap's allocator ------------------------------------------------ */

typedef struct s_blk {
    struct s_blk *prev, *next;
    size_t size;
    size_t pad; /* keeps the payload 16-byte aligned */
} s_blk_t;

struct rf_tmpl_t {
    duk_context *ctx; /* NULL: no heap (after a fatal error, until the next call) */
    s_blk_t blocks;   /* sentinel of the circular list of live blocks */
    size_t bytes;     /* payload bytes of the live blocks */
    jmp_buf jb;       /* armed around every call into Duktape */
    bool armed;
    char fatal[128];
};

static void s_link(rf_tmpl_t *t, s_blk_t *b, size_t size)
{
    b->size = size;
    b->prev = &t->blocks;
    b->next = t->blocks.next;
    b->next->prev = b;
    t->blocks.next = b;
    t->bytes += size;
}

static void s_unlink(rf_tmpl_t *t, s_blk_t *b)
{
    b->prev->next = b->next;
    b->next->prev = b->prev;
    t->bytes -= b->size;
}

static bool s_fits(const rf_tmpl_t *t, size_t size)
{
    return size <= RF_TMPL_ALLOC_MAX && t->bytes + size <= RF_TMPL_HEAP_MAX;
}

static void *s_alloc(void *udata, duk_size_t size)
{
    rf_tmpl_t *t = udata;
    if (size == 0 || !s_fits(t, size))
        return NULL;
    s_blk_t *b = malloc(sizeof(*b) + size);
    if (b == NULL)
        return NULL;
    s_link(t, b, size);
    return b + 1;
}

static void s_free(void *udata, void *ptr)
{
    if (ptr == NULL)
        return;
    s_blk_t *b = (s_blk_t *)ptr - 1;
    s_unlink(udata, b);
    free(b);
}

static void *s_realloc(void *udata, void *ptr, duk_size_t size)
{
    rf_tmpl_t *t = udata;
    if (ptr == NULL)
        return s_alloc(udata, size);
    if (size == 0) {
        s_free(udata, ptr);
        return NULL;
    }
    s_blk_t *b = (s_blk_t *)ptr - 1;
    size_t old = b->size;
    s_unlink(t, b);
    if (!s_fits(t, size)) {
        s_link(t, b, old);
        return NULL;
    }
    s_blk_t *nb = realloc(b, sizeof(*b) + size);
    if (nb == NULL) {
        s_link(t, b, old);
        return NULL;
    }
    s_link(t, nb, size);
    return nb + 1;
}

/* Frees every block of the heap, without Duktape (after a fatal error). */
static void s_free_all(rf_tmpl_t *t)
{
    while (t->blocks.next != &t->blocks) {
        s_blk_t *b = t->blocks.next;
        s_unlink(t, b);
        free(b);
    }
    t->ctx = NULL;
}

static void s_fatal(void *udata, const char *msg)
{
    rf_tmpl_t *t = udata;
    snprintf(t->fatal, sizeof(t->fatal), "%s", msg != NULL ? msg : "?");
    if (t->armed)
        longjmp(t->jb, 1);
    abort(); /* only reachable if Duktape is used outside s_run/s_open */
}

/* ---- small helpers --------------------------------------------------------- */

static void s_why(char *why, size_t why_len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void s_why(char *why, size_t why_len, const char *fmt, ...)
{
    if (why == NULL || why_len == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, why_len, fmt, ap);
    va_end(ap);
}

/* A message from the engine as one line: controls become spaces. */
static void s_why_msg(char *why, size_t why_len, const char *prefix, const char *msg, size_t len)
{
    if (why == NULL || why_len == 0)
        return;
    size_t o = (size_t)snprintf(why, why_len, "%s", prefix);
    for (size_t i = 0; i < len && o + 1 < why_len; i++)
        why[o++] = (unsigned char)msg[i] < 0x20 || msg[i] == 0x7f ? ' ' : msg[i];
    if (o < why_len)
        why[o] = '\0';
}

/* now() for the glue: the CPU time of this thread, in milliseconds (the
 * time budget counts work, not the wait for a loaded CPU). */
static duk_ret_t s_now(duk_context *ctx)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    duk_push_number(ctx, (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6);
    return 1;
}

/* ---- the heap: open, and calls into it ----------------------------------- */

/* Loads the bundle (it sets the global `nunjucks`), runs the glue and keeps
 * its API object in the heap stash. Runs inside duk_safe_call. */
static duk_ret_t s_load_cb(duk_context *ctx, void *udata)
{
    (void)udata;
    duk_push_lstring(ctx, rf_tmpl_nunjucks_js, (size_t)(rf_tmpl_nunjucks_js_end - rf_tmpl_nunjucks_js));
    duk_push_string(ctx, "nunjucks.min.js");
    duk_compile(ctx, 0);
    duk_call(ctx, 0);
    duk_pop(ctx);
    duk_push_string(ctx, s_glue);
    duk_push_string(ctx, "rf_tmpl.c");
    duk_compile(ctx, DUK_COMPILE_EVAL); /* its value is the glue's function */
    duk_call(ctx, 0);
    duk_get_global_string(ctx, "nunjucks");
    duk_push_c_function(ctx, s_now, 0);
    duk_push_uint(ctx, RF_TMPL_STEPS_MAX);
    duk_push_uint(ctx, RF_TMPL_TIME_MS);
    duk_push_uint(ctx, RF_TMPL_STR_MAX);
    duk_push_uint(ctx, RF_TMPL_RANGE_MAX);
    duk_push_uint(ctx, RF_TMPL_CACHE_MAX);
    duk_call(ctx, 7);
    duk_push_heap_stash(ctx);
    duk_dup(ctx, -2);
    duk_put_prop_string(ctx, -2, "rf_tmpl");
    duk_pop_2(ctx);
    duk_push_global_object(ctx);
    duk_del_prop_string(ctx, -1, "nunjucks");
    duk_pop(ctx);
    return 0;
}

/* Creates the heap and loads Nunjucks into it; 0 or -1 with why. */
static int s_open(rf_tmpl_t *t, char *why, size_t why_len)
{
    if (setjmp(t->jb) != 0) {
        t->armed = false;
        s_free_all(t);
        s_why(why, why_len, "template engine: fatal error: %s", t->fatal);
        return -1;
    }
    t->armed = true;
    t->ctx = duk_create_heap(s_alloc, s_realloc, s_free, t, s_fatal);
    if (t->ctx == NULL) {
        t->armed = false;
        s_free_all(t);
        s_why(why, why_len, "template engine: cannot create a Duktape heap");
        return -1;
    }
    if (duk_safe_call(t->ctx, s_load_cb, NULL, 0, 1) != DUK_EXEC_SUCCESS) {
        duk_size_t len = 0;
        const char *msg = duk_safe_to_lstring(t->ctx, -1, &len);
        s_why_msg(why, why_len, "template engine: cannot load Nunjucks: ", msg, len);
        duk_destroy_heap(t->ctx);
        t->armed = false;
        s_free_all(t);
        return -1;
    }
    duk_pop(t->ctx);
    t->armed = false;
    return 0;
}

/* Where group g starts in the path, and its length (0 if it did not take
 * part, or if \K made it end before it starts). */
static size_t s_group_at(const PCRE2_SIZE *ov, int g)
{
    return ov[2 * g] == PCRE2_UNSET ? 0 : ov[2 * g];
}

static size_t s_group_len(const PCRE2_SIZE *ov, int g)
{
    PCRE2_SIZE a = ov[2 * g], b = ov[2 * g + 1];
    return a == PCRE2_UNSET || b == PCRE2_UNSET || b < a ? 0 : b - a;
}

/* One call of the glue's API. */
typedef struct {
    const char *method; /* "check" or "render" */
    const char *src;
    size_t src_len;
    const char *json; /* render: the context */
    const char *path; /* render_pattern: the path and the groups in it */
    const PCRE2_SIZE *ov;
    int n_groups; /* 0: no pathPattern */
    char *out;    /* render: the result, malloc'd */
} s_job_t;

static duk_ret_t s_job_cb(duk_context *ctx, void *udata)
{
    s_job_t *j = udata;
    duk_push_heap_stash(ctx);
    duk_get_prop_string(ctx, -1, "rf_tmpl");
    duk_push_string(ctx, j->method);
    duk_push_lstring(ctx, j->src, j->src_len);
    duk_idx_t nargs = 1;
    if (j->json != NULL) {
        duk_push_string(ctx, j->json);
        nargs++;
        if (j->n_groups > 0) {
            duk_push_array(ctx);
            for (int g = 0; g < j->n_groups; g++) {
                duk_push_lstring(ctx, j->path + s_group_at(j->ov, g), s_group_len(j->ov, g));
                duk_put_prop_index(ctx, -2, (duk_uarridx_t)g);
            }
            nargs++;
        }
    }
    duk_call_prop(ctx, -2 - nargs, nargs);
    return 1;
}

/* Copies Duktape's string (CESU-8: a character outside the BMP that came
 * as a JSON surrogate pair is two 3-byte halves) into malloc'd UTF-8, or
 * NULL with why: a lone surrogate, invalid UTF-8 or a NUL is refused, and
 * so is a result over RF_TMPL_OUT_MAX bytes. */
static char *s_utf8(const unsigned char *s, size_t n, char *why, size_t why_len)
{
    char *out = malloc(n + 1);
    if (out == NULL) {
        s_why(why, why_len, "out of memory");
        return NULL;
    }
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        unsigned c = s[i];
        uint32_t cp;
        size_t k;
        if (c == 0)
            goto nul;
        if (c < 0x80) {
            out[o++] = (char)c, i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf)
            k = 2, cp = c & 0x1f;
        else if (c >= 0xe0 && c <= 0xef)
            k = 3, cp = c & 0x0f;
        else if (c >= 0xf0 && c <= 0xf4)
            k = 4, cp = c & 0x07;
        else
            goto bad;
        if (i + k > n)
            goto bad;
        for (size_t m = 1; m < k; m++) {
            if ((s[i + m] & 0xc0) != 0x80)
                goto bad;
            cp = cp << 6 | (s[i + m] & 0x3f);
        }
        if ((k == 3 && cp < 0x800) || (k == 4 && (cp < 0x10000 || cp > 0x10ffff)))
            goto bad;
        if (cp >= 0xd800 && cp <= 0xdbff) { /* a high surrogate: its low half must follow */
            if (i + 6 > n || s[i + 3] != 0xed || (s[i + 4] & 0xf0) != 0xb0 || (s[i + 5] & 0xc0) != 0x80)
                goto lone;
            uint32_t lo = 0xdc00 | (uint32_t)(s[i + 4] & 0x0f) << 6 | (s[i + 5] & 0x3f);
            cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            out[o++] = (char)(0xf0 | cp >> 18);
            out[o++] = (char)(0x80 | (cp >> 12 & 0x3f));
            out[o++] = (char)(0x80 | (cp >> 6 & 0x3f));
            out[o++] = (char)(0x80 | (cp & 0x3f));
            i += 6;
            continue;
        }
        if (cp >= 0xdc00 && cp <= 0xdfff)
            goto lone;
        memcpy(out + o, s + i, k);
        o += k, i += k;
    }
    if (o > RF_TMPL_OUT_MAX) {
        free(out);
        s_why(why, why_len, "the result is %zu bytes, more than %u", o, (unsigned)RF_TMPL_OUT_MAX);
        return NULL;
    }
    out[o] = '\0';
    return out;
nul:
    free(out);
    s_why(why, why_len, "the result holds a NUL character");
    return NULL;
lone:
    free(out);
    s_why(why, why_len, "the result holds a lone UTF-16 surrogate");
    return NULL;
bad:
    free(out);
    s_why(why, why_len, "the result is not valid UTF-8");
    return NULL;
}

/* Runs job j in t's heap (opening one if there is none): 0, with j->out
 * set for a render, or -1 with why. */
static int s_run(rf_tmpl_t *t, s_job_t *j, char *why, size_t why_len)
{
    if (t->ctx == NULL && s_open(t, why, why_len) != 0)
        return -1;
    if (setjmp(t->jb) != 0) {
        t->armed = false;
        s_free_all(t);
        free(j->out);
        j->out = NULL;
        s_why(why, why_len, "template engine: fatal error (the heap is rebuilt): %s", t->fatal);
        return -1;
    }
    t->armed = true;
    int rc = 0;
    duk_size_t len = 0;
    if (duk_safe_call(t->ctx, s_job_cb, j, 0, 1) != DUK_EXEC_SUCCESS) {
        const char *msg = duk_safe_to_lstring(t->ctx, -1, &len);
        s_why_msg(why, why_len, "", msg, len);
        rc = -1;
    } else if (j->json != NULL) {
        const char *s = duk_get_lstring(t->ctx, -1, &len);
        if (s == NULL) {
            s_why(why, why_len, "the template rendered no string");
            rc = -1;
        } else if ((j->out = s_utf8((const unsigned char *)s, len, why, why_len)) == NULL) {
            rc = -1;
        }
    }
    duk_pop(t->ctx);
    t->armed = false;
    return rc;
}

/* ---- pathPattern ------------------------------------------------------------ */

static pcre2_code *s_re_compile(const char *pattern, char *why, size_t why_len)
{
    size_t n = strlen(pattern);
    if (n == 0 || n > RF_TMPL_PATTERN_MAX) {
        s_why(why, why_len, "pathPattern must be 1 to %u bytes", (unsigned)RF_TMPL_PATTERN_MAX);
        return NULL;
    }
    int err = 0;
    PCRE2_SIZE off = 0;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, n,
                                   PCRE2_UTF | PCRE2_MATCH_INVALID_UTF | PCRE2_NEVER_BACKSLASH_C, &err, &off, NULL);
    if (re == NULL) {
        PCRE2_UCHAR msg[160];
        if (pcre2_get_error_message(err, msg, sizeof(msg)) < 0)
            snprintf((char *)msg, sizeof(msg), "error %d", err);
        s_why(why, why_len, "pathPattern: %s at offset %zu", (const char *)msg, (size_t)off);
    }
    return re;
}

/* How many groups re has, #0 included, up to S_GROUPS. */
static int s_re_groups(const pcre2_code *re)
{
    uint32_t n = 0;
    pcre2_pattern_info(re, PCRE2_INFO_CAPTURECOUNT, &n);
    return n + 1 > S_GROUPS ? S_GROUPS : (int)n + 1;
}

/* Searches re in path; fills ov (S_GROUPS pairs, PCRE2_UNSET for a group
 * that did not take part); 0 or -1 with why. */
static int s_re_match(const pcre2_code *re, const char *path, PCRE2_SIZE *ov, char *why, size_t why_len)
{
    size_t n = strlen(path);
    if (n > RF_TMPL_PATH_MAX) {
        s_why(why, why_len, "the path is longer than %u bytes", (unsigned)RF_TMPL_PATH_MAX);
        return -1;
    }
    pcre2_match_data *md = pcre2_match_data_create(S_GROUPS, NULL);
    pcre2_match_context *mc = pcre2_match_context_create(NULL);
    int rc = PCRE2_ERROR_NOMEMORY;
    if (md != NULL && mc != NULL) {
        pcre2_set_match_limit(mc, S_RE_MATCH_LIMIT);
        pcre2_set_depth_limit(mc, S_RE_DEPTH_LIMIT);
        pcre2_set_heap_limit(mc, S_RE_HEAP_KIB);
        rc = pcre2_match(re, (PCRE2_SPTR)path, n, 0, 0, md, mc);
    }
    if (rc >= 0) {
        const PCRE2_SIZE *v = pcre2_get_ovector_pointer(md);
        int set = rc == 0 ? S_GROUPS : rc; /* 0: more groups than S_GROUPS; the first are set */
        for (int g = 0; g < S_GROUPS; g++) {
            ov[2 * g] = g < set ? v[2 * g] : PCRE2_UNSET;
            ov[2 * g + 1] = g < set ? v[2 * g + 1] : PCRE2_UNSET;
        }
    }
    pcre2_match_data_free(md);
    pcre2_match_context_free(mc);
    if (rc == PCRE2_ERROR_NOMATCH) {
        s_why(why, why_len, "pathPattern does not match");
        return -1;
    }
    if (rc < 0) {
        PCRE2_UCHAR msg[120];
        if (pcre2_get_error_message(rc, msg, sizeof(msg)) < 0)
            snprintf((char *)msg, sizeof(msg), "error %d", rc);
        s_why(why, why_len, "pathPattern: %s", (const char *)msg);
        return -1;
    }
    return 0;
}

static bool s_hash_n(const char *s, size_t i, size_t n)
{
    return s[i] == '#' && i + 1 < n && s[i + 1] >= '0' && s[i + 1] <= '9';
}

/* Where the Nunjucks tag starting at src[i] ("{{", "{%" or "{#") ends (the
 * index after it; n if it does not). As Nunjucks' lexer: a comment ends
 * at "#}"; code ends at the first "}}" or "%}" outside a string. */
static size_t s_tag_end(const char *s, size_t i, size_t n)
{
    if (s[i + 1] == '#') {
        const char *e = memmem(s + i + 2, n - i - 2, "#}", 2);
        return e == NULL ? n : (size_t)(e - s) + 2;
    }
    for (size_t k = i + 2; k + 1 < n; k++) {
        if (s[k] == '"' || s[k] == '\'') {
            char q = s[k];
            for (k++; k < n && s[k] != q; k++)
                if (s[k] == '\\')
                    k++;
            continue;
        }
        if ((s[k] == '}' || s[k] == '%') && s[k + 1] == '}')
            return k + 2;
    }
    return n;
}

/* The word a block tag {% word … %} starts with, in w (empty if none). */
static void s_tag_word(const char *s, size_t i, size_t end, char *w, size_t w_len)
{
    size_t k = i + 2, o = 0;
    while (k < end && (s[k] == '-' || s[k] == ' ' || s[k] == '\t' || s[k] == '\n' || s[k] == '\r'))
        k++;
    while (k < end && o + 1 < w_len && ((s[k] >= 'a' && s[k] <= 'z') || s[k] == '_'))
        w[o++] = s[k++];
    w[o] = '\0';
}

/* Where the first block tag {% word … %} at or after i starts; n if none.
 * It ends a raw block, whose content Nunjucks does not lex. */
static size_t s_find_block(const char *s, size_t i, size_t n, const char *word)
{
    char w[16];
    for (; i + 1 < n; i++) {
        if (s[i] != '{' || s[i + 1] != '%')
            continue;
        s_tag_word(s, i, n, w, sizeof(w));
        if (strcmp(w, word) == 0)
            return i;
    }
    return n;
}

/* The first #N in s[i, end), or end. */
static size_t s_find_hash_n(const char *s, size_t i, size_t end)
{
    while (i < end && !s_hash_n(s, i, end))
        i++;
    return i;
}

/* src with every #N of its text replaced by {{ pathPattern[N] }}, malloc'd,
 * with the highest N in *max_group (-1: none); NULL with why for a #N
 * inside a tag or a raw block. Comments are copied as they are, and so
 * are unterminated tags: Nunjucks reports them. */
static char *s_rewrite(const char *src, int *max_group, char *why, size_t why_len)
{
    static const char ref[] = "{{ " S_GROUPS_VAR "[N] }}";
    size_t n = strlen(src), o = 0, h;
    char *out = malloc(n * (sizeof(ref) - 1) / 2 + n + 1);
    if (out == NULL) {
        s_why(why, why_len, "out of memory");
        return NULL;
    }
    *max_group = -1;
    for (size_t i = 0; i < n;) {
        if (s_hash_n(src, i, n)) {
            memcpy(out + o, ref, sizeof(ref) - 1);
            out[o + (size_t)(strchr(ref, 'N') - ref)] = src[i + 1];
            o += sizeof(ref) - 1;
            if (src[i + 1] - '0' > *max_group)
                *max_group = src[i + 1] - '0';
            i += 2;
            continue;
        }
        if (src[i] != '{' || i + 1 >= n || (src[i + 1] != '{' && src[i + 1] != '%' && src[i + 1] != '#')) {
            out[o++] = src[i++];
            continue;
        }
        size_t end = s_tag_end(src, i, n);
        if (src[i + 1] != '#' && (h = s_find_hash_n(src, i, end)) < end) {
            s_why(why, why_len, "#%c inside a Nunjucks tag at offset %zu: write " S_GROUPS_VAR "[%c] there", src[h + 1],
                  h, src[h + 1]);
            free(out);
            return NULL;
        }
        char w[16] = "";
        if (src[i + 1] == '%')
            s_tag_word(src, i, end, w, sizeof(w));
        if (strcmp(w, "raw") == 0 || strcmp(w, "verbatim") == 0) { /* up to {% endraw %}: text as it is */
            size_t stop = s_find_block(src, end, n, strcmp(w, "raw") == 0 ? "endraw" : "endverbatim");
            if ((h = s_find_hash_n(src, end, stop)) < stop) {
                s_why(why, why_len, "#%c inside {%% %s %%} at offset %zu: pathPattern's groups cannot go there",
                      src[h + 1], w, h);
                free(out);
                return NULL;
            }
            end = stop;
        }
        memcpy(out + o, src + i, end - i);
        o += end - i;
        i = end;
    }
    out[o] = '\0';
    return out;
}

/* ---- the API ------------------------------------------------------------------ */

rf_tmpl_t *rf_tmpl_new(char *why, size_t why_len)
{
    rf_tmpl_t *t = calloc(1, sizeof(*t));
    if (t == NULL) {
        s_why(why, why_len, "out of memory");
        return NULL;
    }
    t->blocks.prev = t->blocks.next = &t->blocks;
    if (s_open(t, why, why_len) != 0) {
        free(t);
        return NULL;
    }
    return t;
}

void rf_tmpl_destroy(rf_tmpl_t **self_p)
{
    if (self_p == NULL || *self_p == NULL)
        return;
    rf_tmpl_t *t = *self_p;
    if (t->ctx != NULL) {
        if (setjmp(t->jb) == 0) {
            t->armed = true;
            duk_destroy_heap(t->ctx);
        }
        t->armed = false;
    }
    s_free_all(t);
    free(t);
    *self_p = NULL;
}

static int s_src_ok(const char *src, char *why, size_t why_len)
{
    if (src == NULL || strlen(src) > RF_TMPL_SRC_MAX) {
        s_why(why, why_len, "a template is at most %u bytes", (unsigned)RF_TMPL_SRC_MAX);
        return -1;
    }
    return 0;
}

int rf_tmpl_check(rf_tmpl_t *t, const char *src, char *why, size_t why_len)
{
    if (s_src_ok(src, why, why_len) != 0)
        return -1;
    s_job_t j = {.method = "check", .src = src, .src_len = strlen(src)};
    return s_run(t, &j, why, why_len);
}

/* Renders src (already rewritten, any length) with the groups of ov. */
static char *s_render(rf_tmpl_t *t, const char *src, const char *context_json, const char *path, const PCRE2_SIZE *ov,
                      int n_groups, char *why, size_t why_len)
{
    if (context_json == NULL || strlen(context_json) > RF_TMPL_CONTEXT_MAX) {
        s_why(why, why_len, "a context is at most %u bytes of JSON", (unsigned)RF_TMPL_CONTEXT_MAX);
        return NULL;
    }
    s_job_t j = {.method = "render",
                 .src = src,
                 .src_len = strlen(src),
                 .json = context_json,
                 .path = path,
                 .ov = ov,
                 .n_groups = n_groups};
    if (s_run(t, &j, why, why_len) != 0)
        return NULL;
    return j.out;
}

char *rf_tmpl_render(rf_tmpl_t *t, const char *src, const char *context_json, char *why, size_t why_len)
{
    if (s_src_ok(src, why, why_len) != 0)
        return NULL;
    return s_render(t, src, context_json, NULL, NULL, 0, why, why_len);
}

/* Compiles pattern and rewrites src for it: the rewritten source, malloc'd,
 * with the regex in *re_p and its group count (#0 included) in *groups_p;
 * NULL with why (a #N past the groups included). */
static char *s_prepare(const char *src, const char *pattern, pcre2_code **re_p, int *groups_p, char *why,
                       size_t why_len)
{
    if (s_src_ok(src, why, why_len) != 0)
        return NULL;
    pcre2_code *re = s_re_compile(pattern, why, why_len);
    if (re == NULL)
        return NULL;
    int max_group;
    char *rw = s_rewrite(src, &max_group, why, why_len);
    int groups = s_re_groups(re);
    if (rw != NULL && max_group >= groups) {
        s_why(why, why_len, "#%d but pathPattern has %d group%s", max_group, groups - 1, groups == 2 ? "" : "s");
        free(rw);
        rw = NULL;
    }
    if (rw == NULL) {
        pcre2_code_free(re);
        return NULL;
    }
    *re_p = re;
    *groups_p = groups;
    return rw;
}

int rf_tmpl_check_pattern(rf_tmpl_t *t, const char *src, const char *pattern, char *why, size_t why_len)
{
    if (pattern == NULL)
        return rf_tmpl_check(t, src, why, why_len);
    pcre2_code *re;
    int groups;
    char *rw = s_prepare(src, pattern, &re, &groups, why, why_len);
    if (rw == NULL)
        return -1;
    pcre2_code_free(re);
    s_job_t j = {.method = "check", .src = rw, .src_len = strlen(rw)};
    int rc = s_run(t, &j, why, why_len);
    free(rw);
    return rc;
}

char *rf_tmpl_render_pattern(rf_tmpl_t *t, const char *src, const char *pattern, const char *path,
                             const char *context_json, char *why, size_t why_len)
{
    if (pattern == NULL)
        return rf_tmpl_render(t, src, context_json, why, why_len);
    if (path == NULL) {
        s_why(why, why_len, "pathPattern needs a path");
        return NULL;
    }
    pcre2_code *re;
    int groups;
    char *rw = s_prepare(src, pattern, &re, &groups, why, why_len);
    if (rw == NULL)
        return NULL;
    PCRE2_SIZE ov[2 * S_GROUPS];
    char *out = NULL;
    if (s_re_match(re, path, ov, why, why_len) == 0)
        out = s_render(t, rw, context_json, path, ov, groups, why, why_len);
    pcre2_code_free(re);
    free(rw);
    return out;
}

char *rf_tmpl_path_pattern(const char *pattern, const char *path, const char *save_path, char *why, size_t why_len)
{
    if (pattern == NULL || path == NULL) {
        s_why(why, why_len, "pathPattern needs a pattern and a path");
        return NULL;
    }
    if (s_src_ok(save_path, why, why_len) != 0)
        return NULL;
    pcre2_code *re = s_re_compile(pattern, why, why_len);
    if (re == NULL)
        return NULL;
    int groups = s_re_groups(re);
    PCRE2_SIZE ov[2 * S_GROUPS];
    char *out = NULL;
    if (s_re_match(re, path, ov, why, why_len) != 0)
        goto done;
    size_t n = strlen(save_path), cap = 0;
    for (size_t i = 0; i < n; i++) /* the output's size */
        if (s_hash_n(save_path, i, n)) {
            int g = save_path[i + 1] - '0';
            if (g >= groups) {
                s_why(why, why_len, "#%d but pathPattern has %d group%s", g, groups - 1, groups == 2 ? "" : "s");
                goto done;
            }
            cap += s_group_len(ov, g);
            i++;
        } else {
            cap++;
        }
    if (cap > RF_TMPL_OUT_MAX) {
        s_why(why, why_len, "the result is %zu bytes, more than %u", cap, (unsigned)RF_TMPL_OUT_MAX);
        goto done;
    }
    if ((out = malloc(cap + 1)) == NULL) {
        s_why(why, why_len, "out of memory");
        goto done;
    }
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (!s_hash_n(save_path, i, n)) {
            out[o++] = save_path[i];
            continue;
        }
        int g = save_path[++i] - '0';
        memcpy(out + o, path + s_group_at(ov, g), s_group_len(ov, g));
        o += s_group_len(ov, g);
    }
    out[o] = '\0';
done:
    pcre2_code_free(re);
    return out;
}
