/*  libFuzzer target for common/rf_s3xml: the S3 API's request bodies come
 *  straight from clients. The first byte picks the parser (0 DeleteObjects,
 *  1 CompleteMultipartUpload, 2 CreateBucketConfiguration; modulo 3), the
 *  rest is the body. Besides memory safety it checks that every refusal has
 *  a code and a reason and leaves nothing behind; that what is accepted is
 *  within S3's limits (counts, key lengths, ascending part numbers, bare
 *  ETags, regions); that every parsed value written back through the writer
 *  gives a document expat finds well-formed and reads back byte for byte;
 *  that the raw body itself written as text is well-formed too; and that
 *  rf_s3_urlencode of the body decodes back to it.
 */
#include <expat.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rf_s3xml.h"

/* What the document written by s_check must read back as: the text of
 * each leaf element, in order. */
typedef struct {
    const char **want;
    const size_t *want_len;
    size_t n, i;
    char cur[4096];
    size_t cur_len;
    int depth;
    bool leaf, bad;
} s_rb_t;

static void XMLCALL s_start(void *ud, const XML_Char *name, const XML_Char **atts)
{
    s_rb_t *r = ud;
    (void)name, (void)atts;
    r->depth++;
    r->leaf = true;
    r->cur_len = 0;
}

static void XMLCALL s_end(void *ud, const XML_Char *name)
{
    s_rb_t *r = ud;
    (void)name;
    r->depth--;
    if (r->leaf) {
        if (r->want != NULL) {
            if (r->i >= r->n || r->cur_len != r->want_len[r->i] || memcmp(r->cur, r->want[r->i], r->cur_len) != 0)
                r->bad = true;
        }
        r->i++;
    }
    r->leaf = false;
}

static void XMLCALL s_text(void *ud, const XML_Char *s, int len)
{
    s_rb_t *r = ud;
    if (r->want == NULL) /* only well-formedness is checked */
        return;
    if ((size_t)len > sizeof(r->cur) - r->cur_len) {
        r->bad = true;
        return;
    }
    memcpy(r->cur + r->cur_len, s, (size_t)len);
    r->cur_len += (size_t)len;
}

/* Parses doc (which must not be NULL) with a plain expat; aborts unless it
 * is well-formed and, when want is given, its leaves read back as want. */
static void s_check(char *doc, size_t len, const char **want, const size_t *want_len, size_t n)
{
    if (doc == NULL)
        abort();
    if (doc[len] != '\0' || strlen(doc) != len)
        abort();
    s_rb_t *r = calloc(1, sizeof(*r));
    if (r == NULL)
        abort();
    r->want = want;
    r->want_len = want_len;
    r->n = n;
    XML_Parser p = XML_ParserCreate(NULL);
    if (p == NULL)
        abort();
    XML_SetUserData(p, r);
    XML_SetElementHandler(p, s_start, s_end);
    XML_SetCharacterDataHandler(p, s_text);
    if (XML_Parse(p, doc, (int)len, XML_TRUE) != XML_STATUS_OK)
        abort();
    if (r->bad || (want != NULL && r->i != n))
        abort();
    XML_ParserFree(p);
    free(r);
    free(doc);
}

/* Writes want[0..n) as <R><V>…</V>…</R> and checks it reads back. */
static void s_roundtrip(const char **want, const size_t *want_len, size_t n)
{
    rf_xml_t x;
    rf_xml_init(&x);
    rf_xml_open(&x, "R", "xmlns=\"" RF_S3XML_NS "\"");
    for (size_t i = 0; i < n; i++) {
        rf_xml_open(&x, "O", NULL);
        rf_xml_text(&x, "V", want[i], want_len[i]);
        rf_xml_close(&x);
    }
    size_t len;
    char *doc = rf_xml_finish(&x, &len);
    s_check(doc, len, want, want_len, n);
}

static void s_refused(int rc, const char *code, const char *why)
{
    if (rc != -1 || code == NULL || code[0] == '\0' || why[0] == '\0')
        abort();
}

static void s_delete(const char *body, size_t len)
{
    rf_s3xml_delete_t d;
    const char *code = "unset";
    char why[256] = "unset";
    int rc = rf_s3xml_parse_delete(body, len, &d, &code, why, sizeof(why));
    if (rc != 0) {
        s_refused(rc, code, why);
        if (d.objs != NULL || d.n != 0)
            abort();
        return;
    }
    if (code != NULL || why[0] != '\0' || d.n < 1 || d.n > RF_S3XML_MAX_OBJECTS)
        abort();
    const char **want = malloc(d.n * sizeof(*want));
    size_t *wl = malloc(d.n * sizeof(*wl));
    if (want == NULL || wl == NULL)
        abort();
    for (size_t i = 0; i < d.n; i++) {
        if (d.objs[i].key == NULL)
            abort();
        want[i] = d.objs[i].key;
        wl[i] = strlen(d.objs[i].key);
        if (wl[i] < 1 || wl[i] > RF_S3XML_MAX_KEY)
            abort();
    }
    s_roundtrip(want, wl, d.n);
    free(want);
    free(wl);
    rf_s3xml_delete_clear(&d);
    if (d.objs != NULL || d.n != 0)
        abort();
}

static size_t s_bounded(const char *s, size_t cap)
{
    const char *z = memchr(s, '\0', cap);
    if (z == NULL)
        abort();
    return (size_t)(z - s);
}

static void s_complete(const char *body, size_t len)
{
    rf_s3xml_complete_t c;
    const char *code = "unset";
    char why[256] = "unset";
    int rc = rf_s3xml_parse_complete(body, len, &c, &code, why, sizeof(why));
    if (rc != 0) {
        s_refused(rc, code, why);
        if (c.parts != NULL || c.n != 0)
            abort();
        return;
    }
    if (code != NULL || why[0] != '\0' || c.n < 1 || c.n > RF_S3XML_MAX_PARTS)
        abort();
    /* per part: the number, the ETag and four checksums */
    const char **want = malloc(c.n * 6 * sizeof(*want));
    size_t *wl = malloc(c.n * 6 * sizeof(*wl));
    char(*num)[8] = malloc(c.n * sizeof(*num));
    if (want == NULL || wl == NULL || num == NULL)
        abort();
    for (size_t i = 0; i < c.n; i++) {
        rf_s3xml_part_t *p = &c.parts[i];
        if (p->number < 1 || p->number > RF_S3XML_MAX_PARTS || (i > 0 && p->number <= c.parts[i - 1].number))
            abort();
        size_t el = s_bounded(p->etag, sizeof(p->etag));
        if (el == 0 || memchr(p->etag, '"', el) != NULL)
            abort();
        size_t k = i * 6;
        want[k] = num[i];
        wl[k] = (size_t)snprintf(num[i], sizeof(num[i]), "%d", p->number);
        want[k + 1] = p->etag, wl[k + 1] = el;
        want[k + 2] = p->crc32, wl[k + 2] = s_bounded(p->crc32, sizeof(p->crc32));
        want[k + 3] = p->crc32c, wl[k + 3] = s_bounded(p->crc32c, sizeof(p->crc32c));
        want[k + 4] = p->sha1, wl[k + 4] = s_bounded(p->sha1, sizeof(p->sha1));
        want[k + 5] = p->sha256, wl[k + 5] = s_bounded(p->sha256, sizeof(p->sha256));
    }
    s_roundtrip(want, wl, c.n * 6);
    free(want);
    free(wl);
    free(num);
    rf_s3xml_complete_clear(&c);
}

static void s_location(const char *body, size_t len)
{
    char region[64] = "unset", why[256] = "unset";
    const char *code = "unset";
    int rc = rf_s3xml_parse_location(body, len, region, sizeof(region), &code, why, sizeof(why));
    if (rc != 0) {
        s_refused(rc, code, why);
        if (region[0] != '\0')
            abort();
        return;
    }
    size_t n = s_bounded(region, sizeof(region));
    if (code != NULL || why[0] != '\0' || n > 63)
        abort();
    for (size_t i = 0; i < n; i++)
        if (strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", region[i]) == NULL)
            abort();
    const char *want[1] = {region};
    size_t wl[1] = {n};
    s_roundtrip(want, wl, 1);
}

static int s_hex(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* The body as text: always well-formed; percent-encoded: decodes back. */
static void s_raw(const char *body, size_t len)
{
    rf_xml_t x;
    rf_xml_init(&x);
    rf_xml_open(&x, "Error", NULL);
    rf_xml_text(&x, "Key", body, len);
    rf_xml_textf(&x, "Size", "%zu", len);
    size_t dl;
    char *doc = rf_xml_finish(&x, &dl);
    s_check(doc, dl, NULL, NULL, 0);

    bool slash = len > 0 && (body[0] & 1);
    size_t need = rf_s3_urlencode(body, len, NULL, 0, slash);
    if (need < len || need > 3 * len)
        abort();
    char *enc = malloc(need + 1), *dec = malloc(len + 1);
    if (enc == NULL || dec == NULL)
        abort();
    if (rf_s3_urlencode(body, len, enc, need + 1, slash) != need || strlen(enc) != need)
        abort();
    size_t o = 0;
    for (size_t i = 0; i < need;) {
        char c = enc[i];
        if (c == '%') {
            if (i + 2 >= need || s_hex(enc[i + 1]) < 0 || s_hex(enc[i + 2]) < 0)
                abort();
            dec[o++] = (char)(s_hex(enc[i + 1]) << 4 | s_hex(enc[i + 2]));
            i += 3;
        } else {
            if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
                  c == '_' || c == '~' || (c == '/' && slash)))
                abort();
            dec[o++] = c;
            i++;
        }
    }
    if (o != len || memcmp(dec, body, len) != 0)
        abort();
    free(enc);
    free(dec);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    /* a copy of exactly the body's size, so ASan sees any overread */
    size_t len = size - 1;
    char *body = malloc(len ? len : 1);
    if (body == NULL)
        return 0;
    memcpy(body, data + 1, len);
    switch (data[0] % 3) {
    case 0: s_delete(body, len); break;
    case 1: s_complete(body, len); break;
    default: s_location(body, len); break;
    }
    s_raw(body, len);
    free(body);
    return 0;
}
