/*  rf_s3xml — S3 request bodies in (libexpat), S3 response documents out.
 *
 *  The parsers share one table-free state machine driven by expat's
 *  start / end / character-data callbacks: a fixed stack of what each open
 *  element is (the root, an Object or Part, one of their scalar fields, or
 *  something unknown being skipped), bounded to S_MAX_DEPTH, so no input
 *  makes anything recurse or grow without bound. Scalar text accumulates
 *  in a fixed buffer of RF_S3XML_MAX_KEY bytes. The first refusal wins:
 *  it records code and why and stops expat; handlers return at once after
 *  it (expat may still deliver a callback or two after XML_StopParser).
 *
 *  expat is created with the encoding forced to UTF-8 (a declaration saying
 *  otherwise is ignored), so it checks the body is well-formed UTF-8 and
 *  never hands over a character XML 1.0 forbids — which is what lets the
 *  writer give parsed keys back byte for byte. See rf_s3xml.h for the API.
 */
#include "rf_s3xml.h"

#include <expat.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Deepest element nesting a body may have: the documents need 3, the rest
 * is room for unknown elements, which are skipped. */
#define S_MAX_DEPTH 32
/* Separates namespace URI and local name in expat's names; '|' is not a
 * name character, so the local name is what follows the last one. */
#define S_NS_SEP '|'

static const char s_malformed[] = "MalformedXML";
static const char s_order[] = "InvalidPartOrder";
static const char s_argument[] = "InvalidArgument";
static const char s_location[] = "InvalidLocationConstraint";
static const char s_internal[] = "InternalError";

typedef enum { S_DOC_DELETE, S_DOC_COMPLETE, S_DOC_LOCATION } s_doc_t;

/* What an open element is. Containers hold elements, scalars hold text. */
typedef enum {
    S_SKIP = 0, /* unknown, or inside an unknown one: content ignored */
    S_ROOT,
    S_OBJECT,
    S_PART,
    /* scalars (bit (kind - S_KEY) in `seen` marks one present) */
    S_KEY,
    S_QUIET,
    S_PARTNUMBER,
    S_ETAG,
    S_CRC32,
    S_CRC32C,
    S_SHA1,
    S_SHA256,
    S_LOCATION,
} s_kind_t;

static const char *const s_kind_name[] = {
    [S_SKIP] = "?",
    [S_ROOT] = "root",
    [S_OBJECT] = "Object",
    [S_PART] = "Part",
    [S_KEY] = "Key",
    [S_QUIET] = "Quiet",
    [S_PARTNUMBER] = "PartNumber",
    [S_ETAG] = "ETag",
    [S_CRC32] = "ChecksumCRC32",
    [S_CRC32C] = "ChecksumCRC32C",
    [S_SHA1] = "ChecksumSHA1",
    [S_SHA256] = "ChecksumSHA256",
    [S_LOCATION] = "LocationConstraint",
};

static const char *const s_root_name[] = {
    [S_DOC_DELETE] = "Delete",
    [S_DOC_COMPLETE] = "CompleteMultipartUpload",
    [S_DOC_LOCATION] = "CreateBucketConfiguration",
};

typedef struct {
    XML_Parser p;
    s_doc_t doc;
    int depth;
    unsigned char kind[S_MAX_DEPTH];
    unsigned root_seen, item_seen; /* scalars seen in the root / the current Object or Part */
    char text[RF_S3XML_MAX_KEY];   /* the open scalar's text so far */
    size_t tlen;
    /* the first refusal */
    bool failed;
    const char *code;
    char *why;
    size_t why_len;
    /* results */
    rf_s3xml_delete_t *del;
    rf_s3xml_complete_t *cmp;
    size_t cap; /* allocated entries of del->objs / cmp->parts */
    char *region;
    size_t region_len;
} s_state_t;

/* Records the first refusal and stops the parser. */
static void s_fail(s_state_t *st, const char *code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void s_fail(s_state_t *st, const char *code, const char *fmt, ...)
{
    if (st->failed)
        return;
    st->failed = true;
    st->code = code;
    if (st->why != NULL && st->why_len > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(st->why, st->why_len, fmt, ap);
        va_end(ap);
    }
    if (st->p != NULL)
        XML_StopParser(st->p, XML_FALSE);
}

static bool s_is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Drops XML whitespace around t[0..*n); returns the new start. */
static const char *s_trim(const char *t, size_t *n)
{
    size_t a = 0, b = *n;
    while (a < b && s_is_space(t[a]))
        a++;
    while (b > a && s_is_space(t[b - 1]))
        b--;
    *n = b - a;
    return t + a;
}

/* The local name of an expat name when its namespace is none or S3's;
 * NULL for any other namespace. */
static const char *s_local(const XML_Char *name)
{
    const char *sep = strrchr(name, S_NS_SEP);
    if (sep == NULL)
        return name;
    size_t ul = (size_t)(sep - name);
    if (ul != sizeof(RF_S3XML_NS) - 1 || memcmp(name, RF_S3XML_NS, ul) != 0)
        return NULL;
    return sep + 1;
}

/* Makes room for one more entry in the result array (elem bytes each). */
static int s_grow(s_state_t *st, void **arr, size_t n, size_t elem, size_t max)
{
    if (n < st->cap)
        return 0;
    size_t nc = st->cap ? st->cap * 2 : 16;
    if (nc > max)
        nc = max;
    void *a = realloc(*arr, nc * elem);
    if (a == NULL) {
        s_fail(st, s_internal, "out of memory");
        return -1;
    }
    *arr = a;
    st->cap = nc;
    return 0;
}

/* Which kind a child element `local` of a `parent` is; 0 with a refusal
 * recorded when it may not be there. */
static s_kind_t s_child(s_state_t *st, s_kind_t parent, const char *local)
{
    if (local == NULL) /* a foreign namespace: unknown */
        return S_SKIP;
    switch (parent) {
    case S_ROOT:
        if (st->doc == S_DOC_DELETE && strcmp(local, "Object") == 0)
            return S_OBJECT;
        if (st->doc == S_DOC_DELETE && strcmp(local, "Quiet") == 0)
            return S_QUIET;
        if (st->doc == S_DOC_COMPLETE && strcmp(local, "Part") == 0)
            return S_PART;
        if (st->doc == S_DOC_LOCATION && strcmp(local, "LocationConstraint") == 0)
            return S_LOCATION;
        return S_SKIP;
    case S_OBJECT: return strcmp(local, "Key") == 0 ? S_KEY : S_SKIP;
    case S_PART:
        for (s_kind_t k = S_PARTNUMBER; k <= S_SHA256; k++)
            if (strcmp(local, s_kind_name[k]) == 0)
                return k;
        return S_SKIP;
    default: return S_SKIP;
    }
}

static void XMLCALL s_start(void *ud, const XML_Char *name, const XML_Char **atts)
{
    s_state_t *st = ud;
    (void)atts; /* no attribute means anything here (xmlns is the parser's) */
    if (st->failed)
        return;
    if (st->depth >= S_MAX_DEPTH) {
        s_fail(st, s_malformed, "elements nested deeper than %d", S_MAX_DEPTH);
        return;
    }
    const char *local = s_local(name);
    s_kind_t k;
    if (st->depth == 0) {
        if (local == NULL || strcmp(local, s_root_name[st->doc]) != 0) {
            s_fail(st, s_malformed, "the root element is not <%s>", s_root_name[st->doc]);
            return;
        }
        k = S_ROOT;
    } else {
        s_kind_t parent = st->kind[st->depth - 1];
        if (parent >= S_KEY) {
            s_fail(st, s_malformed, "an element inside <%s>", s_kind_name[parent]);
            return;
        }
        k = parent == S_SKIP ? S_SKIP : s_child(st, parent, local);
        if (k == S_OBJECT) {
            rf_s3xml_delete_t *d = st->del;
            if (d->n >= RF_S3XML_MAX_OBJECTS) {
                s_fail(st, s_malformed, "more than %d objects", RF_S3XML_MAX_OBJECTS);
                return;
            }
            if (s_grow(st, (void **)&d->objs, d->n, sizeof(*d->objs), RF_S3XML_MAX_OBJECTS) < 0)
                return;
            d->objs[d->n++].key = NULL;
            st->item_seen = 0;
        } else if (k == S_PART) {
            rf_s3xml_complete_t *c = st->cmp;
            if (c->n >= RF_S3XML_MAX_PARTS) {
                s_fail(st, s_malformed, "more than %d parts", RF_S3XML_MAX_PARTS);
                return;
            }
            if (s_grow(st, (void **)&c->parts, c->n, sizeof(*c->parts), RF_S3XML_MAX_PARTS) < 0)
                return;
            memset(&c->parts[c->n++], 0, sizeof(*c->parts));
            st->item_seen = 0;
        } else if (k >= S_KEY) {
            unsigned *seen = parent == S_ROOT ? &st->root_seen : &st->item_seen, bit = 1u << (k - S_KEY);
            if (*seen & bit) {
                s_fail(st, s_malformed, "two <%s> in one <%s>", s_kind_name[k],
                       parent == S_ROOT ? s_root_name[st->doc] : s_kind_name[parent]);
                return;
            }
            *seen |= bit;
            st->tlen = 0;
        }
    }
    st->kind[st->depth++] = (unsigned char)k;
}

static void XMLCALL s_text(void *ud, const XML_Char *s, int len)
{
    s_state_t *st = ud;
    if (st->failed || st->depth == 0 || len <= 0)
        return;
    s_kind_t k = st->kind[st->depth - 1];
    if (k == S_SKIP)
        return;
    if (k < S_KEY) { /* a container: whitespace between elements only */
        for (int i = 0; i < len; i++)
            if (!s_is_space(s[i])) {
                s_fail(st, s_malformed, "text inside <%s>", k == S_ROOT ? s_root_name[st->doc] : s_kind_name[k]);
                return;
            }
        return;
    }
    if ((size_t)len > sizeof(st->text) - st->tlen) {
        s_fail(st, s_malformed, "<%s> longer than %zu bytes", s_kind_name[k], sizeof(st->text));
        return;
    }
    memcpy(st->text + st->tlen, s, (size_t)len);
    st->tlen += (size_t)len;
}

/* A base64 checksum (trimmed) into dst[cap]; "" stays when empty. */
static void s_checksum(s_state_t *st, s_kind_t k, size_t part, const char *t, size_t n, char *dst, size_t cap)
{
    if (n >= cap) {
        s_fail(st, s_malformed, "%s of part %zu longer than %zu bytes", s_kind_name[k], part, cap - 1);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        char c = t[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '/' ||
              c == '=')) {
            s_fail(st, s_malformed, "%s of part %zu is not base64", s_kind_name[k], part);
            return;
        }
    }
    memcpy(dst, t, n);
    dst[n] = '\0';
}

/* A PartNumber: an xsd:int (optional sign, digits, whitespace around). */
static void s_partnumber(s_state_t *st, rf_s3xml_part_t *p, size_t part, const char *t, size_t n)
{
    size_t i = 0;
    bool neg = false;
    if (i < n && (t[i] == '+' || t[i] == '-'))
        neg = t[i++] == '-';
    if (i == n) {
        s_fail(st, s_malformed, "PartNumber of part %zu is not an integer", part);
        return;
    }
    long v = 0;
    for (; i < n; i++) {
        if (t[i] < '0' || t[i] > '9') {
            s_fail(st, s_malformed, "PartNumber of part %zu is not an integer", part);
            return;
        }
        if (v <= RF_S3XML_MAX_PARTS) /* clamps: anything above is just "too big" */
            v = v * 10 + (t[i] - '0');
    }
    if (neg || v < 1 || v > RF_S3XML_MAX_PARTS) {
        s_fail(st, s_argument, "PartNumber of part %zu is not an integer between 1 and %d", part, RF_S3XML_MAX_PARTS);
        return;
    }
    p->number = (int)v;
}

static void s_etag(s_state_t *st, rf_s3xml_part_t *p, size_t part, const char *t, size_t n)
{
    if (n > 0 && t[0] == '"')
        t++, n--;
    if (n > 0 && t[n - 1] == '"')
        n--;
    if (n == 0) {
        s_fail(st, s_malformed, "ETag of part %zu is empty", part);
        return;
    }
    if (n >= sizeof(p->etag)) {
        s_fail(st, s_malformed, "ETag of part %zu longer than %zu bytes", part, sizeof(p->etag) - 1);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)t[i];
        if (c <= ' ' || c == '"' || c == 0x7f) {
            s_fail(st, s_malformed, "ETag of part %zu holds a space, a control character or a quote", part);
            return;
        }
    }
    memcpy(p->etag, t, n);
    p->etag[n] = '\0';
}

static void s_location_value(s_state_t *st, const char *t, size_t n)
{
    if (n > 63 || n >= st->region_len) {
        s_fail(st, s_location, "LocationConstraint longer than %zu bytes",
               st->region_len - 1 < 63 ? st->region_len - 1 : (size_t)63);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        char c = t[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_')) {
            s_fail(st, s_location, "LocationConstraint holds a character other than A-Z a-z 0-9 - _");
            return;
        }
    }
    memcpy(st->region, t, n);
    st->region[n] = '\0';
}

/* A scalar element ends: its text becomes a field. */
static void s_scalar(s_state_t *st, s_kind_t k)
{
    size_t n = st->tlen;
    if (k == S_KEY) { /* byte for byte: whitespace is part of a key */
        rf_s3xml_delete_t *d = st->del;
        if (n == 0) {
            s_fail(st, s_malformed, "Key of object %zu is empty", d->n);
            return;
        }
        if (memchr(st->text, '\0', n) != NULL) {
            s_fail(st, s_malformed, "Key of object %zu holds a NUL", d->n);
            return;
        }
        char *key = malloc(n + 1);
        if (key == NULL) {
            s_fail(st, s_internal, "out of memory");
            return;
        }
        memcpy(key, st->text, n);
        key[n] = '\0';
        d->objs[d->n - 1].key = key;
        return;
    }
    const char *t = s_trim(st->text, &n);
    if (k == S_QUIET) {
        if ((n == 4 && memcmp(t, "true", 4) == 0) || (n == 1 && t[0] == '1'))
            st->del->quiet = true;
        else if ((n == 5 && memcmp(t, "false", 5) == 0) || (n == 1 && t[0] == '0'))
            st->del->quiet = false;
        else
            s_fail(st, s_malformed, "Quiet is neither true nor false");
        return;
    }
    if (k == S_LOCATION) {
        s_location_value(st, t, n);
        return;
    }
    rf_s3xml_part_t *p = &st->cmp->parts[st->cmp->n - 1];
    size_t part = st->cmp->n;
    switch (k) {
    case S_PARTNUMBER: s_partnumber(st, p, part, t, n); break;
    case S_ETAG: s_etag(st, p, part, t, n); break;
    case S_CRC32: s_checksum(st, k, part, t, n, p->crc32, sizeof(p->crc32)); break;
    case S_CRC32C: s_checksum(st, k, part, t, n, p->crc32c, sizeof(p->crc32c)); break;
    case S_SHA1: s_checksum(st, k, part, t, n, p->sha1, sizeof(p->sha1)); break;
    case S_SHA256: s_checksum(st, k, part, t, n, p->sha256, sizeof(p->sha256)); break;
    default: break;
    }
}

static void XMLCALL s_end(void *ud, const XML_Char *name)
{
    s_state_t *st = ud;
    (void)name; /* expat has checked it matches its start */
    if (st->failed || st->depth == 0)
        return;
    s_kind_t k = st->kind[--st->depth];
    if (k >= S_KEY) {
        s_scalar(st, k);
    } else if (k == S_OBJECT) {
        if (!(st->item_seen & 1u << (S_KEY - S_KEY)))
            s_fail(st, s_malformed, "object %zu has no Key", st->del->n);
    } else if (k == S_PART) {
        rf_s3xml_complete_t *c = st->cmp;
        if (!(st->item_seen & 1u << (S_PARTNUMBER - S_KEY)))
            s_fail(st, s_malformed, "part %zu has no PartNumber", c->n);
        else if (!(st->item_seen & 1u << (S_ETAG - S_KEY)))
            s_fail(st, s_malformed, "part %zu has no ETag", c->n);
        else if (c->n > 1 && c->parts[c->n - 1].number <= c->parts[c->n - 2].number)
            s_fail(st, s_order, "PartNumber %d follows %d: parts must be in strictly ascending order",
                   c->parts[c->n - 1].number, c->parts[c->n - 2].number);
    } else if (k == S_ROOT) {
        if (st->doc == S_DOC_DELETE && st->del->n == 0)
            s_fail(st, s_malformed, "no Object to delete");
        else if (st->doc == S_DOC_COMPLETE && st->cmp->n == 0)
            s_fail(st, s_malformed, "no Part to complete");
    }
}

/* A DOCTYPE (and, belt and braces, any entity declaration) ends parsing
 * before its internal subset is read: no entity is ever defined. */
static void XMLCALL s_doctype(void *ud, const XML_Char *name, const XML_Char *sysid, const XML_Char *pubid,
                              int has_internal_subset)
{
    (void)name, (void)sysid, (void)pubid, (void)has_internal_subset;
    s_fail(ud, s_malformed, "a DOCTYPE is not allowed");
}

static void XMLCALL s_entity(void *ud, const XML_Char *name, int is_param, const XML_Char *value, int value_len,
                             const XML_Char *base, const XML_Char *sysid, const XML_Char *pubid,
                             const XML_Char *notation)
{
    (void)name, (void)is_param, (void)value, (void)value_len, (void)base, (void)sysid, (void)pubid, (void)notation;
    s_fail(ud, s_malformed, "an entity declaration is not allowed");
}

/* Runs expat over body[0..len) with st's handlers; 0 or -1 (code / why
 * set). */
static int s_run(s_state_t *st, const char *body, size_t len, size_t max)
{
    if (len > max) {
        s_fail(st, s_malformed, "body of %zu bytes (at most %zu)", len, max);
        return -1;
    }
    if (body == NULL && len > 0) {
        s_fail(st, s_internal, "no body buffer for %zu bytes", len);
        return -1;
    }
    XML_Parser p = XML_ParserCreateNS("UTF-8", S_NS_SEP);
    if (p == NULL) {
        s_fail(st, s_internal, "out of memory");
        return -1;
    }
    st->p = p;
    XML_SetUserData(p, st);
    XML_SetElementHandler(p, s_start, s_end);
    XML_SetCharacterDataHandler(p, s_text);
    XML_SetStartDoctypeDeclHandler(p, s_doctype);
    XML_SetEntityDeclHandler(p, s_entity);
    XML_SetParamEntityParsing(p, XML_PARAM_ENTITY_PARSING_NEVER);
    enum XML_Status rs = XML_Parse(p, body != NULL ? body : "", (int)len, XML_TRUE);
    if (rs != XML_STATUS_OK && !st->failed) {
        enum XML_Error e = XML_GetErrorCode(p);
        unsigned long line = XML_GetCurrentLineNumber(p), col = XML_GetCurrentColumnNumber(p);
        const XML_LChar *es = XML_ErrorString(e);
        s_fail(st, e == XML_ERROR_NO_MEMORY ? s_internal : s_malformed,
               "XML not well-formed at line %lu column %lu: %s", line, col, es != NULL ? es : "unknown error");
    }
    st->p = NULL;
    XML_ParserFree(p);
    return st->failed ? -1 : 0;
}

static void s_state_init(s_state_t *st, s_doc_t doc, const char **code, char *why, size_t why_len)
{
    memset(st, 0, sizeof(*st));
    st->doc = doc;
    st->why = why;
    st->why_len = why_len;
    if (code != NULL)
        *code = NULL;
    if (why != NULL && why_len > 0)
        why[0] = '\0';
}

int rf_s3xml_parse_delete(const char *body, size_t len, rf_s3xml_delete_t *out, const char **code, char *why,
                          size_t why_len)
{
    s_state_t st;
    s_state_init(&st, S_DOC_DELETE, code, why, why_len);
    memset(out, 0, sizeof(*out));
    st.del = out;
    if (s_run(&st, body, len, RF_S3XML_DELETE_BODY_MAX) < 0)
        goto fail;
    return 0;
fail:
    rf_s3xml_delete_clear(out);
    if (code != NULL)
        *code = st.code;
    return -1;
}

void rf_s3xml_delete_clear(rf_s3xml_delete_t *d)
{
    if (d == NULL)
        return;
    for (size_t i = 0; i < d->n; i++)
        free(d->objs[i].key);
    free(d->objs);
    memset(d, 0, sizeof(*d));
}

int rf_s3xml_parse_complete(const char *body, size_t len, rf_s3xml_complete_t *out, const char **code, char *why,
                            size_t why_len)
{
    s_state_t st;
    s_state_init(&st, S_DOC_COMPLETE, code, why, why_len);
    memset(out, 0, sizeof(*out));
    st.cmp = out;
    if (s_run(&st, body, len, RF_S3XML_COMPLETE_BODY_MAX) < 0)
        goto fail;
    return 0;
fail:
    rf_s3xml_complete_clear(out);
    if (code != NULL)
        *code = st.code;
    return -1;
}

void rf_s3xml_complete_clear(rf_s3xml_complete_t *c)
{
    if (c == NULL)
        return;
    free(c->parts);
    memset(c, 0, sizeof(*c));
}

int rf_s3xml_parse_location(const char *body, size_t len, char *region, size_t region_len, const char **code, char *why,
                            size_t why_len)
{
    s_state_t st;
    s_state_init(&st, S_DOC_LOCATION, code, why, why_len);
    if (region == NULL || region_len == 0) {
        s_fail(&st, s_internal, "no room for the region");
        goto fail;
    }
    region[0] = '\0';
    st.region = region;
    st.region_len = region_len;
    size_t n = len;
    if (len <= RF_S3XML_LOCATION_BODY_MAX && body != NULL)
        s_trim(body, &n);
    if (n == 0) /* no configuration (or only whitespace): us-east-1 */
        return 0;
    if (s_run(&st, body, len, RF_S3XML_LOCATION_BODY_MAX) < 0)
        goto fail;
    return 0;
fail:
    if (region != NULL && region_len > 0)
        region[0] = '\0';
    if (code != NULL)
        *code = st.code;
    return -1;
}

/* ---- XML out ------------------------------------------------------------ */

/* Room for `extra` more bytes and a NUL; false (and oom set) when not. */
static bool s_reserve(rf_xml_t *x, size_t extra)
{
    if (x->oom)
        return false;
    if (extra >= RF_XML_MAX_SIZE || x->len + extra >= RF_XML_MAX_SIZE) {
        x->oom = true;
        return false;
    }
    size_t need = x->len + extra + 1;
    if (need <= x->cap)
        return true;
    size_t nc = x->cap ? x->cap : 256;
    while (nc < need)
        nc *= 2;
    char *b = realloc(x->buf, nc);
    if (b == NULL) {
        x->oom = true;
        return false;
    }
    x->buf = b;
    x->cap = nc;
    return true;
}

static void s_put(rf_xml_t *x, const char *s, size_t n)
{
    if (!s_reserve(x, n))
        return;
    memcpy(x->buf + x->len, s, n);
    x->len += n;
    x->buf[x->len] = '\0';
}

static void s_puts(rf_xml_t *x, const char *s)
{
    s_put(x, s, strlen(s));
}

/* Length of the well-formed UTF-8 sequence at s[0..n) (lead byte >= 0x80)
 * and its code point in *cp; 0 when s[0] does not start one. */
static size_t s_utf8(const unsigned char *s, size_t n, uint32_t *cp)
{
    unsigned char c = s[0];
    size_t len;
    unsigned char lo = 0x80, hi = 0xbf; /* the second byte's range */
    if (c >= 0xc2 && c <= 0xdf)
        len = 2;
    else if (c >= 0xe0 && c <= 0xef)
        len = 3, lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;
    else if (c >= 0xf0 && c <= 0xf4)
        len = 4, lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;
    else
        return 0;
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xbf)
            return 0;
    uint32_t v = c & (len == 2 ? 0x1f : len == 3 ? 0x0f : 0x07);
    for (size_t i = 1; i < len; i++)
        v = v << 6 | (s[i] & 0x3f);
    *cp = v;
    return len;
}

/* Writes t[0..n) as XML character data (see rf_s3xml.h for the rules). */
static void s_escape(rf_xml_t *x, const char *t, size_t n)
{
    static const char fffd[] = "\xef\xbf\xbd";
    const unsigned char *s = (const unsigned char *)t;
    size_t run = 0; /* start of the bytes kept as they are */
    for (size_t i = 0; i < n && !x->oom;) {
        unsigned char c = s[i];
        const char *rep = NULL;
        char num[12];
        size_t step = 1;
        if (c < 0x80) {
            switch (c) {
            case '&': rep = "&amp;"; break;
            case '<': rep = "&lt;"; break;
            case '>': rep = "&gt;"; break;
            case '"': rep = "&quot;"; break;
            case '\'': rep = "&apos;"; break;
            case '\t': rep = "&#x9;"; break;
            case '\n': rep = "&#xA;"; break;
            case '\r': rep = "&#xD;"; break;
            case 0x7f: rep = "&#x7F;"; break;
            default: rep = c < 0x20 ? fffd : NULL; break;
            }
        } else {
            uint32_t cp = 0;
            size_t l = s_utf8(s + i, n - i, &cp);
            if (l == 0) {
                rep = fffd;
            } else {
                step = l;
                if (cp <= 0x9f) {
                    snprintf(num, sizeof(num), "&#x%X;", (unsigned)cp);
                    rep = num;
                } else if (cp == 0xfffe || cp == 0xffff) {
                    rep = fffd;
                }
            }
        }
        if (rep != NULL) {
            s_put(x, t + run, i - run);
            s_puts(x, rep);
            run = i + step;
        }
        i += step;
    }
    if (run < n)
        s_put(x, t + run, n - run);
}

void rf_xml_init(rf_xml_t *x)
{
    memset(x, 0, sizeof(*x));
    s_puts(x, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
}

void rf_xml_open(rf_xml_t *x, const char *tag, const char *attrs)
{
    if (x->oom)
        return;
    if (x->depth < 0 || x->depth >= RF_XML_MAX_DEPTH) {
        x->oom = true;
        return;
    }
    s_puts(x, "<");
    s_puts(x, tag);
    if (attrs != NULL && attrs[0] != '\0') {
        s_puts(x, " ");
        s_puts(x, attrs);
    }
    s_puts(x, ">");
    x->stack[x->depth++] = tag;
}

void rf_xml_close(rf_xml_t *x)
{
    if (x->oom)
        return;
    if (x->depth <= 0 || x->depth > RF_XML_MAX_DEPTH) {
        x->oom = true;
        return;
    }
    const char *tag = x->stack[--x->depth];
    s_puts(x, "</");
    s_puts(x, tag);
    s_puts(x, ">");
}

void rf_xml_text(rf_xml_t *x, const char *tag, const char *text, size_t len)
{
    if (x->oom)
        return;
    s_puts(x, "<");
    s_puts(x, tag);
    s_puts(x, ">");
    if (len > 0)
        s_escape(x, text, len);
    s_puts(x, "</");
    s_puts(x, tag);
    s_puts(x, ">");
}

void rf_xml_textf(rf_xml_t *x, const char *tag, const char *fmt, ...)
{
    char small[256], *big = NULL;
    if (x->oom)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= RF_XML_MAX_SIZE) {
        x->oom = true;
        return;
    }
    const char *t = small;
    if ((size_t)n >= sizeof(small)) {
        big = malloc((size_t)n + 1);
        if (big == NULL) {
            x->oom = true;
            return;
        }
        va_start(ap, fmt);
        int m = vsnprintf(big, (size_t)n + 1, fmt, ap);
        va_end(ap);
        if (m != n) {
            x->oom = true;
            goto cleanup;
        }
        t = big;
    }
    rf_xml_text(x, tag, t, (size_t)n);
cleanup:
    free(big);
}

char *rf_xml_finish(rf_xml_t *x, size_t *len)
{
    while (!x->oom && x->depth > 0)
        rf_xml_close(x);
    char *doc = x->buf;
    size_t n = x->len;
    if (x->oom || doc == NULL) {
        free(doc);
        doc = NULL;
        n = 0;
    }
    memset(x, 0, sizeof(*x));
    if (len != NULL)
        *len = n;
    return doc;
}

void rf_xml_clear(rf_xml_t *x)
{
    free(x->buf);
    memset(x, 0, sizeof(*x));
}

char *rf_s3xml_error(const char *code, const char *message, const char *resource, const char *request_id, size_t *len)
{
    const char *tags[] = {"Code", "Message", "Resource", "RequestId"};
    const char *vals[] = {code, message, resource, request_id};
    rf_xml_t x;
    rf_xml_init(&x);
    rf_xml_open(&x, "Error", NULL);
    for (size_t i = 0; i < sizeof(tags) / sizeof(tags[0]); i++)
        if (vals[i] != NULL)
            rf_xml_text(&x, tags[i], vals[i], strlen(vals[i]));
    rf_xml_close(&x);
    return rf_xml_finish(&x, len);
}

size_t rf_s3_urlencode(const char *in, size_t len, char *out, size_t cap, bool keep_slash)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t need = 0;
    for (size_t pass = 0; pass < 2; pass++) {
        size_t o = 0;
        for (size_t i = 0; i < len; i++) {
            unsigned char c = (unsigned char)in[i];
            bool keep = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
                        c == '.' || c == '_' || c == '~' || (c == '/' && keep_slash);
            if (pass == 0) {
                o += keep ? 1 : 3;
            } else if (keep) {
                out[o++] = (char)c;
            } else {
                out[o++] = '%';
                out[o++] = hex[c >> 4];
                out[o++] = hex[c & 15];
            }
        }
        if (pass == 0) {
            need = o;
            if (need >= cap) { /* does not fit (with its NUL) */
                if (cap > 0)
                    out[0] = '\0';
                return need;
            }
        } else {
            out[o] = '\0';
        }
    }
    return need;
}
