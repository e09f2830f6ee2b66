/*  rf_tmpl — storgate's savePath templates (seed 003): real Nunjucks, run in
 *  Duktape, and the seed's pathPattern.
 *
 *  A task's savePath (and onComplete's move path) is a Nunjucks template
 *  over the source item:
 *
 *    "/newimg/{{ item.path }}"
 *    "/{{ item.path | relpath(source_dir) | dirname }}/{{ item.path | basename
 *        | rsplit('.', 1)[0] }}_m.{{ item.path | basename | rsplit('.', 1)[-1] }}"
 *
 *  The templates are rendered by Nunjucks 3.2.4 itself (third_party/nunjucks,
 *  embedded in the library at build time) in a Duktape heap, so they behave
 *  as a Nunjucks/Jinja user expects, with:
 *    - autoescape off (paths, not HTML), and throwOnUndefined: outputting an
 *      undefined (or null) value is an error, so a typo in the config fails
 *      loudly instead of writing to "/newimg/";
 *    - the filters relpath(start), dirname, basename (Python's os.path,
 *      posix) and rsplit(sep=none, maxsplit=-1) (Python's str.rsplit); a
 *      relative path given to relpath counts from "/" (as if the current
 *      directory were "/"); they take strings only (anything else: error);
 *    - Jinja's negative indexes: x[-1] is the last element of an array or
 *      the last character of a string (for every array, not only rsplit's);
 *    - `| filter(args)[i]` and `| filter(args).name` subscript the filter's
 *      result, as the seed writes (Jinja itself refuses that syntax; with
 *      parentheses, (x | rsplit('.', 1))[0], both agree).
 *
 *  The context is a JSON object the caller builds, for example
 *    {"item": {"path": "/image_landing/a/b.jpg", "filename": "b.jpg",
 *              "dirname": "/image_landing/a", "state": "file", "size": 123456,
 *              "owner": "root", "group": "users", "mode": "0644",
 *              "mtime": 1622555123, "atime": 1622555200, "ctime": 1622554987,
 *              "inode": 12345},
 *     "source_dir": "/image_landing"}
 *  `source_dir` is not Nunjucks' nor the item's: the caller sets it to the
 *  directory the work came from — an onBatch event's `path`, or for onGet /
 *  onPut / onDelete the directory the event's item is in (its mount point,
 *  or the item's dirname) — so relpath(source_dir) is the item's path below
 *  it. Numbers render as JavaScript prints them (1234, 1.5), true/false in
 *  lower case.
 *
 *  Item values are hostile (whoever drops a file names it): they only ever
 *  travel as data in the JSON context and are never pasted into template
 *  source, so "{{ 7*7 }}" in a file name renders as those nine characters.
 *  pathPattern keeps to that too (rf_tmpl_render_pattern). The templates
 *  themselves are operator config; still, a template cannot reach outside
 *  Nunjucks (constructor / __proto__ / prototype lookups and regular
 *  expressions — the literal r/…/ and String's match / search — are
 *  refused: no code execution, no ReDoS over item data) and every render is
 *  bounded: template length, context size, output length, a step budget
 *  (lookups, calls, loop iterations), a time budget, range() and string
 *  lengths, and the heap's memory (see the limits below). Duktape's own
 *  interrupt hook (DUK_USE_EXEC_TIMEOUT_CHECK) is not compiled into
 *  Debian's libduktape, so these budgets are counted in the JavaScript
 *  glue around Nunjucks' runtime; a single built-in operation between two
 *  checks is bounded by the string and memory limits only.
 *
 *  Threads: one rf_tmpl_t is one Duktape heap, which is not thread-safe: use
 *  each from one thread at a time (one per worker thread). Different
 *  rf_tmpl_t may be used in parallel; there is no global mutable state.
 */
#ifndef RF_TMPL_H
#define RF_TMPL_H

#include <stddef.h>

#define RF_TMPL_SRC_MAX 2048         /* bytes of a template's source */
#define RF_TMPL_CONTEXT_MAX 65536    /* bytes of a context's JSON text */
#define RF_TMPL_OUT_MAX 4096         /* bytes of a rendered result (longer: error) */
#define RF_TMPL_PATTERN_MAX 1024     /* bytes of a pathPattern regex */
#define RF_TMPL_PATH_MAX 4096        /* bytes of the path a pathPattern is matched against */
#define RF_TMPL_STR_MAX 8192         /* characters of a string a filter takes or returns, or {% set %} keeps */
#define RF_TMPL_RANGE_MAX 10000      /* elements range() may make */
#define RF_TMPL_STEPS_MAX 100000     /* runtime steps of one render (a loop iteration is about ten) */
#define RF_TMPL_TIME_MS 250          /* CPU time of one render (a normal one takes tens of microseconds) */
#define RF_TMPL_HEAP_MAX (32u << 20) /* bytes the Duktape heap may hold (Nunjucks loaded: about 1 MiB) */
#define RF_TMPL_ALLOC_MAX (1u << 20) /* bytes of one allocation inside the heap */
#define RF_TMPL_CACHE_MAX 256        /* compiled templates kept per heap (then the cache starts over) */

typedef struct rf_tmpl_t rf_tmpl_t;

/* Creates a Duktape heap with Nunjucks loaded and the filters added
 * (about 15 ms). Returns it — the caller owns it and
 * releases it with rf_tmpl_destroy — or NULL with why. */
rf_tmpl_t *rf_tmpl_new(char *why, size_t why_len);

/* Frees the heap and *self_p, and sets *self_p to NULL; NULL-safe. */
void rf_tmpl_destroy(rf_tmpl_t **self_p);

/* Compiles src (at most RF_TMPL_SRC_MAX bytes) and keeps it compiled in the
 * heap's cache, keyed by its text, so rendering it later does not compile
 * again. For checking the config at load. Returns 0, or -1 with why (the
 * Nunjucks message, e.g. "[Line 1, Column 9] expected variable end"). src
 * stays the caller's. */
int rf_tmpl_check(rf_tmpl_t *t, const char *src, char *why, size_t why_len);

/* Renders src with context_json — the text of a JSON object, at most
 * RF_TMPL_CONTEXT_MAX bytes (see the header comment for its shape).
 * Returns the result, valid UTF-8 with no NUL, at most RF_TMPL_OUT_MAX
 * bytes, malloc'd — the caller frees it — or NULL with why (a compile or
 * render error, an undefined value output, a budget exceeded, an output
 * too long). Arguments stay the caller's. */
char *rf_tmpl_render(rf_tmpl_t *t, const char *src, const char *context_json, char *why, size_t why_len);

/* savePath with the seed's pathPattern, the safe way. pattern (a PCRE2
 * regex, at most RF_TMPL_PATTERN_MAX bytes; NULL = no pathPattern: a plain
 * rf_tmpl_render) is searched for in path (the item's path, at most
 * RF_TMPL_PATH_MAX bytes); no match is an error ("pathPattern does not
 * match"). Then src is rendered with every #N (N = 0..9: the N-th group,
 * #0 the whole match; "#12" is group 1 then "2") in its text replaced by
 * the group — as data: src is rewritten to {{ pathPattern[N] }} (so it is
 * compiled once and cached like any template) and the groups are the array
 * `pathPattern` of the context (replacing one the caller may have put
 * there), which expressions may use as well: {{ pathPattern[2] | upper }}.
 * A group that did not take part in the match is "". #N inside a Nunjucks
 * tag ({{ }}, {% %}) or a raw block is refused — write pathPattern[N]
 * there; #N inside a comment stays as it is. The regex works on UTF-8
 * characters (PCRE2_UTF); invalid UTF-8 in path matches nothing, so a
 * pattern that has to cross it does not match. Otherwise as
 * rf_tmpl_render; arguments stay the caller's. */
char *rf_tmpl_render_pattern(rf_tmpl_t *t, const char *src, const char *pattern, const char *path,
                             const char *context_json, char *why, size_t why_len);

/* The config-load check for a savePath with a pathPattern: the regex
 * compiles, every #N of src is in its text and names a group the regex has,
 * and the rewritten template compiles (and is cached). pattern NULL =
 * rf_tmpl_check. Returns 0, or -1 with why. */
int rf_tmpl_check_pattern(rf_tmpl_t *t, const char *src, const char *pattern, char *why, size_t why_len);

/* pathPattern as plain text substitution, with no Nunjucks: every #N of
 * save_path (anywhere in it) becomes the N-th group of pattern searched for
 * in path, byte for byte ("" for a group that did not take part; #N past
 * the regex's groups is an error). Needs no heap. The result holds path's
 * bytes as they are, so it is NOT template source: never give it to
 * rf_tmpl_render (rf_tmpl_render_pattern does both steps safely); it is the
 * result rf_tmpl_render_pattern gives for a save_path without Nunjucks
 * tags. Returns it malloc'd (at most RF_TMPL_OUT_MAX bytes) — the caller
 * frees it — or NULL with why ("pathPattern does not match", a bad regex,
 * a match limit reached). Regex matching is bounded (PCRE2 match, depth
 * and heap limits), so a hostile path cannot make it run long. */
char *rf_tmpl_path_pattern(const char *pattern, const char *path, const char *save_path, char *why, size_t why_len);

#endif
