/*  Unit tests for common/rf_s3xml: the S3 API's XML, in and out.
 *
 *  In: the exact DeleteObjects / CompleteMultipartUpload / CreateBucket
 *  bodies botocore (awscli, boto3) and s3cmd send parse to what they mean;
 *  the variants other clients produce (a prefixed namespace, &quot; around
 *  ETags, pretty-printing, extra elements) too; every refusal — DOCTYPE and
 *  entity bombs, too many objects, empty / over-long keys, descending or
 *  out-of-range part numbers, non-numbers, truncated XML, a wrong root —
 *  comes with its S3 code and a reason.
 *
 *  Out: documents from the writer, with nested elements and hostile text
 *  (markup characters, controls, invalid UTF-8), are well-formed for expat
 *  and give the text back (exactly where XML 1.0 can carry it, U+FFFD where
 *  it cannot); keys parsed from a body round-trip through the writer byte
 *  for byte; the <Error> document and the URL encoder are checked exactly.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <expat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rf_s3xml.h"

/* ---- fixtures ------------------------------------------------------------
 * Made at authoring time with /usr/bin/python3 and python3-botocore
 * 1.29.27 (awscli 2.9.19's bundled botocore, awscli.botocore, gives the
 * same bytes):
 *   m = botocore.session.get_session().get_service_model('s3')
 *   ser = botocore.serialize.create_serializer('rest-xml', include_validation=True)
 *   ser.serialize_to_request(params, m.operation_model(op))['body']
 * with op / params:
 *   DeleteObjects {'Bucket':'b','Delete':{'Objects':[{'Key':'a.txt'},
 *       {'Key':'dir/b <&> "q" \'s\'.bin','VersionId':'v1'}],'Quiet':True}}
 *   CompleteMultipartUpload {'Bucket':'b','Key':'k','UploadId':'u',
 *       'MultipartUpload':{'Parts':[{'PartNumber':1,'ETag':'"d41d8cd98f00b204e9800998ecf8427e"'},
 *       {'PartNumber':2,'ETag':'"0cc175b9c0f1b6a831c399e269772661"','ChecksumCRC32':'AAAAAA=='}]}}
 *   CreateBucket {'Bucket':'b','CreateBucketConfiguration':{'LocationConstraint':'eu-west-1'}}
 *   (and {'Bucket':'b'} alone gives the empty body b'')
 */
static const char s_boto_delete[] =
    "<Delete xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Object><Key>a.txt</Key></Object><Object><Key>dir/b "
    "&lt;&amp;&gt; \"q\" 's'.bin</Key><VersionId>v1</VersionId></Object><Quiet>true</Quiet></Delete>";
static const char s_boto_complete[] =
    "<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Part><PartNumber>1</PartNumber>"
    "<ETag>\"d41d8cd98f00b204e9800998ecf8427e\"</ETag></Part><Part><PartNumber>2</PartNumber>"
    "<ETag>\"0cc175b9c0f1b6a831c399e269772661\"</ETag><ChecksumCRC32>AAAAAA==</ChecksumCRC32></Part>"
    "</CompleteMultipartUpload>";
static const char s_boto_location[] = "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
                                      "<LocationConstraint>eu-west-1</LocationConstraint></CreateBucketConfiguration>";

/* s3cmd 2.3.0 (/usr/lib/python3/dist-packages/S3), captured by running its
 * own S3.object_batch_delete_uri_strs(['s3://b/a.txt','s3://b/dir/b <&> "q".bin']),
 * S3.bucket_create('bucket','eu-west-1') and
 * MultiPartUpload.complete_multipart_upload() (parts {1: etag, 2: etag}:
 * s3cmd keeps ETags without their quotes) with create_request stubbed to
 * print the body. No namespace; an XML declaration on DeleteObjects only. */
static const char s_s3cmd_delete[] =
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Delete><Object><Key>a.txt</Key></Object><Object><Key>dir/b "
    "&lt;&amp;&gt; \"q\".bin</Key></Object></Delete>";
static const char s_s3cmd_complete[] =
    "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>d41d8cd98f00b204e9800998ecf8427e</ETag></Part>"
    "<Part><PartNumber>2</PartNumber><ETag>0cc175b9c0f1b6a831c399e269772661</ETag></Part></CompleteMultipartUpload>";
static const char s_s3cmd_location[] =
    "<CreateBucketConfiguration><LocationConstraint>eu-west-1</LocationConstraint></CreateBucketConfiguration>";

/* The AWS documentation's examples are pretty-printed; the Java SDK v1
 * writes ETag quotes as &quot;. */
static const char s_pretty_delete[] =
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
    "<Delete xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\n"
    "  <Quiet>false</Quiet>\n"
    "  <Object>\n"
    "    <Key>sample1.txt</Key>\n"
    "    <ETag>\"abc\"</ETag>\n"
    "    <LastModifiedTime>2023-01-01T00:00:00Z</LastModifiedTime>\n"
    "    <Size>12</Size>\n"
    "  </Object>\n"
    "  <Object>\n"
    "    <Key> spaced key </Key>\n"
    "    <VersionId>UIORUnfndfiufdisojhr398493jfdkjFJjkndnqUifhnw89493jJFJ</VersionId>\n"
    "  </Object>\n"
    "</Delete>\n";
static const char s_pretty_complete[] =
    "<CompleteMultipartUpload>\n"
    "  <Part>\n"
    "    <PartNumber> 1 </PartNumber>\n"
    "    <ETag>&quot;a54357aff0632cce46d942af68356b38&quot;</ETag>\n"
    "    <ChecksumCRC32C>sOO8/Q==</ChecksumCRC32C>\n"
    "    <ChecksumSHA1>2jmj7l5rSw0yVb/vlWAYkK/YBwk=</ChecksumSHA1>\n"
    "    <ChecksumSHA256>47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=</ChecksumSHA256>\n"
    "  </Part>\n"
    "  <Part>\n"
    "    <PartNumber>+0003</PartNumber>\n"
    "    <ETag>\n      0c78aef83f66abc1fa1e8477f296d394-2\n    </ETag>\n"
    "  </Part>\n"
    "</CompleteMultipartUpload>";

#define LEN(s) (sizeof(s) - 1)

/* ---- helpers ------------------------------------------------------------ */

/* A refusal: rc -1, the code expected, a reason holding `why_part`. */
static void s_refused(int rc, const char *code, const char *why, const char *want_code, const char *why_part,
                      const char *what)
{
    if (rc != -1 || code == NULL || strcmp(code, want_code) != 0 || why[0] == '\0' || strstr(why, why_part) == NULL)
        print_error("%s: rc %d code %s why \"%s\" (wanted %s, \"%s\")\n", what, rc, code ? code : "(null)", why,
                    want_code, why_part);
    assert_int_equal(rc, -1);
    assert_non_null(code);
    assert_string_equal(code, want_code);
    assert_non_null(strstr(why, why_part));
}

static void s_delete_refused(const char *body, size_t len, const char *want_code, const char *why_part)
{
    rf_s3xml_delete_t d;
    const char *code = "unset";
    char why[256];
    int rc = rf_s3xml_parse_delete(body, len, &d, &code, why, sizeof(why));
    s_refused(rc, code, why, want_code, why_part, len < 200 ? body : "(long delete body)");
    assert_null(d.objs);
    assert_int_equal(d.n, 0);
}

static void s_complete_refused(const char *body, size_t len, const char *want_code, const char *why_part)
{
    rf_s3xml_complete_t c;
    const char *code = "unset";
    char why[256];
    int rc = rf_s3xml_parse_complete(body, len, &c, &code, why, sizeof(why));
    s_refused(rc, code, why, want_code, why_part, len < 200 ? body : "(long complete body)");
    assert_null(c.parts);
    assert_int_equal(c.n, 0);
}

/* A growable string for building bodies. */
typedef struct {
    char *p;
    size_t n, cap;
} s_buf_t;

static void s_add(s_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void s_add(s_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    assert_true(n >= 0);
    if (b->n + (size_t)n + 1 > b->cap) {
        b->cap = (b->n + (size_t)n + 1) * 2;
        b->p = realloc(b->p, b->cap);
        assert_non_null(b->p);
    }
    va_start(ap, fmt);
    vsnprintf(b->p + b->n, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->n += (size_t)n;
}

/* The leaves (elements without children) of a document, as expat reads
 * them: name and text, in document order. */
#define S_LEAVES_MAX 64
typedef struct {
    int n, depth;
    bool leaf; /* no child since the innermost start */
    char name[S_LEAVES_MAX][32];
    char text[S_LEAVES_MAX][8192];
    size_t len[S_LEAVES_MAX];
    char cur[8192];
    size_t cur_len;
    bool overflow;
} s_leaves_t;

static void XMLCALL s_lv_start(void *ud, const XML_Char *name, const XML_Char **atts)
{
    s_leaves_t *l = ud;
    (void)name, (void)atts;
    l->depth++;
    l->leaf = true;
    l->cur_len = 0;
}

static void XMLCALL s_lv_end(void *ud, const XML_Char *name)
{
    s_leaves_t *l = ud;
    l->depth--;
    if (l->leaf) {
        if (l->n >= S_LEAVES_MAX) {
            l->overflow = true;
        } else {
            snprintf(l->name[l->n], sizeof(l->name[0]), "%s", name);
            memcpy(l->text[l->n], l->cur, l->cur_len);
            l->len[l->n++] = l->cur_len;
        }
    }
    l->leaf = false;
}

static void XMLCALL s_lv_text(void *ud, const XML_Char *s, int len)
{
    s_leaves_t *l = ud;
    if (l->cur_len + (size_t)len > sizeof(l->cur)) {
        l->overflow = true;
        return;
    }
    memcpy(l->cur + l->cur_len, s, (size_t)len);
    l->cur_len += (size_t)len;
}

/* Parses doc with expat (a plain XML 1.0 parser, no namespaces); 0 when
 * well-formed, the leaves in *l (heap: the caller frees). */
static int s_expat(const char *doc, size_t len, s_leaves_t **out)
{
    s_leaves_t *l = calloc(1, sizeof(*l));
    assert_non_null(l);
    XML_Parser p = XML_ParserCreate(NULL);
    assert_non_null(p);
    XML_SetUserData(p, l);
    XML_SetElementHandler(p, s_lv_start, s_lv_end);
    XML_SetCharacterDataHandler(p, s_lv_text);
    int rc = XML_Parse(p, doc, (int)len, XML_TRUE) == XML_STATUS_OK && !l->overflow ? 0 : -1;
    if (rc != 0)
        print_error("expat: %s at column %lu\n", XML_ErrorString(XML_GetErrorCode(p)), XML_GetCurrentColumnNumber(p));
    XML_ParserFree(p);
    *out = l;
    return rc;
}

/* ---- DeleteObjects -------------------------------------------------------- */

static void test_delete_clients(void **state)
{
    (void)state;
    rf_s3xml_delete_t d;
    const char *code;
    char why[256];

    /* botocore: namespace, Quiet after the Objects, a VersionId ignored */
    assert_int_equal(rf_s3xml_parse_delete(s_boto_delete, LEN(s_boto_delete), &d, &code, why, sizeof(why)), 0);
    assert_null(code);
    assert_string_equal(why, "");
    assert_int_equal(d.n, 2);
    assert_true(d.quiet);
    assert_string_equal(d.objs[0].key, "a.txt");
    assert_string_equal(d.objs[1].key, "dir/b <&> \"q\" 's'.bin");
    rf_s3xml_delete_clear(&d);
    assert_null(d.objs);
    rf_s3xml_delete_clear(&d); /* twice is fine */

    /* s3cmd: no namespace, an XML declaration */
    assert_int_equal(rf_s3xml_parse_delete(s_s3cmd_delete, LEN(s_s3cmd_delete), &d, &code, why, sizeof(why)), 0);
    assert_int_equal(d.n, 2);
    assert_false(d.quiet);
    assert_string_equal(d.objs[0].key, "a.txt");
    assert_string_equal(d.objs[1].key, "dir/b <&> \"q\".bin");
    rf_s3xml_delete_clear(&d);

    /* pretty-printed, unknown elements in Object, key whitespace kept */
    assert_int_equal(rf_s3xml_parse_delete(s_pretty_delete, LEN(s_pretty_delete), &d, &code, why, sizeof(why)), 0);
    assert_int_equal(d.n, 2);
    assert_false(d.quiet);
    assert_string_equal(d.objs[0].key, "sample1.txt");
    assert_string_equal(d.objs[1].key, " spaced key ");
    rf_s3xml_delete_clear(&d);
}

static void test_delete_variants(void **state)
{
    (void)state;
    rf_s3xml_delete_t d;
    const char *code;
    char why[256];
    /* a prefixed S3 namespace; Quiet as 1; UTF-8, a tab, a CR and a
     * quote by reference; an unknown element at the top, with children */
    static const char b1[] = "<s3:Delete xmlns:s3=\"http://s3.amazonaws.com/doc/2006-03-01/\"><s3:Quiet> 1 </s3:Quiet>"
                             "<s3:Foo><s3:Object><s3:Key>ignored</s3:Key></s3:Object></s3:Foo>"
                             "<s3:Object><s3:Key>caf\xc3\xa9/\xf0\x9f\x98\x80&#x9;&#xD;&#x22;x</s3:Key></s3:Object>"
                             "</s3:Delete>";
    assert_int_equal(rf_s3xml_parse_delete(b1, LEN(b1), &d, &code, why, sizeof(why)), 0);
    assert_true(d.quiet);
    assert_int_equal(d.n, 1);
    assert_string_equal(d.objs[0].key, "caf\xc3\xa9/\xf0\x9f\x98\x80\t\r\"x");
    rf_s3xml_delete_clear(&d);

    /* a CDATA section is text like any other; Quiet 0 */
    static const char b2[] = "<Delete><Quiet>0</Quiet><Object><Key><![CDATA[a<b>&c]]></Key></Object></Delete>";
    assert_int_equal(rf_s3xml_parse_delete(b2, LEN(b2), &d, &code, why, sizeof(why)), 0);
    assert_false(d.quiet);
    assert_string_equal(d.objs[0].key, "a<b>&c");
    rf_s3xml_delete_clear(&d);

    /* exactly 1000 objects, keys of exactly 1024 bytes */
    s_buf_t b = {0};
    char key[RF_S3XML_MAX_KEY + 1];
    memset(key, 'k', RF_S3XML_MAX_KEY);
    key[RF_S3XML_MAX_KEY] = '\0';
    s_add(&b, "<Delete xmlns=\"%s\">", RF_S3XML_NS);
    for (int i = 0; i < RF_S3XML_MAX_OBJECTS; i++)
        s_add(&b, "<Object><Key>%04d%s</Key></Object>", i, key + 4);
    s_add(&b, "</Delete>");
    assert_int_equal(rf_s3xml_parse_delete(b.p, b.n, &d, &code, why, sizeof(why)), 0);
    assert_int_equal(d.n, RF_S3XML_MAX_OBJECTS);
    for (size_t i = 0; i < d.n; i++) {
        assert_int_equal(strlen(d.objs[i].key), RF_S3XML_MAX_KEY);
        assert_int_equal(atoi(d.objs[i].key), (int)i);
    }
    rf_s3xml_delete_clear(&d);
    /* ... and the 1001st is refused */
    b.n -= strlen("</Delete>");
    s_add(&b, "<Object><Key>one-more</Key></Object></Delete>");
    s_delete_refused(b.p, b.n, "MalformedXML", "more than 1000 objects");
    free(b.p);

    /* a key of 1024 bytes written as 1024 &amp; (5120 bytes of body) */
    b = (s_buf_t){0};
    s_add(&b, "<Delete><Object><Key>");
    for (int i = 0; i < RF_S3XML_MAX_KEY; i++)
        s_add(&b, "&amp;");
    s_add(&b, "</Key></Object></Delete>");
    assert_int_equal(rf_s3xml_parse_delete(b.p, b.n, &d, &code, why, sizeof(why)), 0);
    assert_int_equal(strlen(d.objs[0].key), RF_S3XML_MAX_KEY);
    assert_int_equal(d.objs[0].key[RF_S3XML_MAX_KEY - 1], '&');
    rf_s3xml_delete_clear(&d);
    free(b.p);

    /* why and code may be left out by the caller */
    assert_int_equal(rf_s3xml_parse_delete("<Delete/>", 9, &d, NULL, NULL, 0), -1);
}

static void test_delete_refusals(void **state)
{
    (void)state;
    /* billion laughs: refused at the DOCTYPE, before any entity exists */
    static const char lol[] = "<?xml version=\"1.0\"?>\n<!DOCTYPE lolz [\n <!ENTITY lol \"lol\">\n"
                              " <!ENTITY lol2 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">\n"
                              " <!ENTITY lol3 \"&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;\">\n"
                              " <!ENTITY lol4 \"&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;\">\n"
                              " <!ENTITY lol5 \"&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;\">\n"
                              " <!ENTITY lol6 \"&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;\">\n"
                              " <!ENTITY lol7 \"&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;\">\n"
                              " <!ENTITY lol8 \"&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;\">\n"
                              " <!ENTITY lol9 \"&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;\">\n"
                              "]>\n<Delete><Object><Key>&lol9;</Key></Object></Delete>";
    s_delete_refused(lol, LEN(lol), "MalformedXML", "DOCTYPE");
    /* external entity (XXE) and a bare DOCTYPE */
    static const char xxe[] = "<!DOCTYPE Delete [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>"
                              "<Delete><Object><Key>&x;</Key></Object></Delete>";
    s_delete_refused(xxe, LEN(xxe), "MalformedXML", "DOCTYPE");
    static const char dt[] = "<!DOCTYPE Delete SYSTEM \"http://example.com/s3.dtd\"><Delete/>";
    s_delete_refused(dt, LEN(dt), "MalformedXML", "DOCTYPE");
    /* an entity nobody declared */
    static const char undef[] = "<Delete><Object><Key>&x;</Key></Object></Delete>";
    s_delete_refused(undef, LEN(undef), "MalformedXML", "undefined entity");

    /* keys: empty, absent, repeated, over-long, with a control character
     * (XML 1.0 cannot carry one, even as a reference) or a NUL */
    static const char empty1[] = "<Delete><Object><Key></Key></Object></Delete>";
    s_delete_refused(empty1, LEN(empty1), "MalformedXML", "Key of object 1 is empty");
    static const char empty2[] = "<Delete><Object><Key>a</Key></Object><Object><Key/></Object></Delete>";
    s_delete_refused(empty2, LEN(empty2), "MalformedXML", "Key of object 2 is empty");
    static const char nokey[] = "<Delete><Object><VersionId>v</VersionId></Object></Delete>";
    s_delete_refused(nokey, LEN(nokey), "MalformedXML", "object 1 has no Key");
    static const char twokeys[] = "<Delete><Object><Key>a</Key><Key>b</Key></Object></Delete>";
    s_delete_refused(twokeys, LEN(twokeys), "MalformedXML", "two <Key> in one <Object>");
    char body[2048];
    char key[RF_S3XML_MAX_KEY + 2];
    memset(key, 'x', RF_S3XML_MAX_KEY + 1);
    key[RF_S3XML_MAX_KEY + 1] = '\0';
    int n = snprintf(body, sizeof(body), "<Delete><Object><Key>%s</Key></Object></Delete>", key);
    s_delete_refused(body, (size_t)n, "MalformedXML", "<Key> longer than 1024 bytes");
    static const char ctl[] = "<Delete><Object><Key>a&#x1;b</Key></Object></Delete>";
    s_delete_refused(ctl, LEN(ctl), "MalformedXML", "reference to invalid character number");
    static const char nul[] = "<Delete><Object><Key>a\0b</Key></Object></Delete>";
    s_delete_refused(nul, LEN(nul), "MalformedXML", "not well-formed");
    static const char badutf8[] = "<Delete><Object><Key>a\xc3\x28</Key></Object></Delete>";
    s_delete_refused(badutf8, LEN(badutf8), "MalformedXML", "not well-formed");

    /* structure */
    static const char none[] = "<Delete xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Quiet>true</Quiet></Delete>";
    s_delete_refused(none, LEN(none), "MalformedXML", "no Object");
    s_delete_refused("", 0, "MalformedXML", "no element found");
    s_delete_refused(NULL, 0, "MalformedXML", "no element found");
    static const char trunc[] = "<Delete><Object><Key>a</Key></Object>";
    s_delete_refused(trunc, LEN(trunc), "MalformedXML", "not well-formed at line 1");
    static const char trunc2[] = "<Delete><Object><Key>a</Ke";
    s_delete_refused(trunc2, LEN(trunc2), "MalformedXML", "XML not well-formed");
    static const char root[] = "<Remove><Object><Key>a</Key></Object></Remove>";
    s_delete_refused(root, LEN(root), "MalformedXML", "root element is not <Delete>");
    static const char otherns[] = "<Delete xmlns=\"http://example.com/\"><Object><Key>a</Key></Object></Delete>";
    s_delete_refused(otherns, LEN(otherns), "MalformedXML", "root element is not <Delete>");
    static const char unbound[] = "<x:Delete><Object><Key>a</Key></Object></x:Delete>";
    s_delete_refused(unbound, LEN(unbound), "MalformedXML", "unbound prefix");
    static const char text[] = "<Delete><Object>junk<Key>a</Key></Object></Delete>";
    s_delete_refused(text, LEN(text), "MalformedXML", "text inside <Object>");
    static const char text2[] = "<Delete>junk<Object><Key>a</Key></Object></Delete>";
    s_delete_refused(text2, LEN(text2), "MalformedXML", "text inside <Delete>");
    static const char inkey[] = "<Delete><Object><Key>a<b/>c</Key></Object></Delete>";
    s_delete_refused(inkey, LEN(inkey), "MalformedXML", "an element inside <Key>");
    static const char quiet[] = "<Delete><Quiet>yes</Quiet><Object><Key>a</Key></Object></Delete>";
    s_delete_refused(quiet, LEN(quiet), "MalformedXML", "Quiet is neither true nor false");
    static const char quiet2[] = "<Delete><Quiet>true</Quiet><Quiet>true</Quiet><Object><Key>a</Key></Object></Delete>";
    s_delete_refused(quiet2, LEN(quiet2), "MalformedXML", "two <Quiet> in one <Delete>");
    static const char two[] = "<Delete><Object><Key>a</Key></Object></Delete><Delete/>";
    s_delete_refused(two, LEN(two), "MalformedXML", "junk after document element");

    /* nesting: unknown elements are skipped, but only 32 deep */
    s_buf_t b = {0};
    s_add(&b, "<Delete><Object><Key>a</Key>");
    for (int i = 0; i < 40; i++)
        s_add(&b, "<X>");
    for (int i = 0; i < 40; i++)
        s_add(&b, "</X>");
    s_add(&b, "</Object></Delete>");
    s_delete_refused(b.p, b.n, "MalformedXML", "nested deeper than 32");
    free(b.p);

    /* a body over the limit is refused by its size alone */
    size_t big = RF_S3XML_DELETE_BODY_MAX + 1;
    char *huge = malloc(big);
    assert_non_null(huge);
    memset(huge, ' ', big);
    s_delete_refused(huge, big, "MalformedXML", "body of 8388609 bytes");
    free(huge);
}

/* ---- CompleteMultipartUpload ---------------------------------------------- */

static void test_complete_clients(void **state)
{
    (void)state;
    rf_s3xml_complete_t c;
    const char *code;
    char why[256];

    assert_int_equal(rf_s3xml_parse_complete(s_boto_complete, LEN(s_boto_complete), &c, &code, why, sizeof(why)), 0);
    assert_null(code);
    assert_int_equal(c.n, 2);
    assert_int_equal(c.parts[0].number, 1);
    assert_string_equal(c.parts[0].etag, "d41d8cd98f00b204e9800998ecf8427e");
    assert_string_equal(c.parts[0].crc32, "");
    assert_int_equal(c.parts[1].number, 2);
    assert_string_equal(c.parts[1].etag, "0cc175b9c0f1b6a831c399e269772661");
    assert_string_equal(c.parts[1].crc32, "AAAAAA==");
    assert_string_equal(c.parts[1].crc32c, "");
    rf_s3xml_complete_clear(&c);
    assert_null(c.parts);
    rf_s3xml_complete_clear(&c);

    assert_int_equal(rf_s3xml_parse_complete(s_s3cmd_complete, LEN(s_s3cmd_complete), &c, &code, why, sizeof(why)), 0);
    assert_int_equal(c.n, 2);
    assert_string_equal(c.parts[0].etag, "d41d8cd98f00b204e9800998ecf8427e");
    assert_string_equal(c.parts[1].etag, "0cc175b9c0f1b6a831c399e269772661");
    rf_s3xml_complete_clear(&c);

    /* &quot;, whitespace around values, all the checksums, +0003 */
    assert_int_equal(rf_s3xml_parse_complete(s_pretty_complete, LEN(s_pretty_complete), &c, &code, why, sizeof(why)),
                     0);
    assert_int_equal(c.n, 2);
    assert_int_equal(c.parts[0].number, 1);
    assert_string_equal(c.parts[0].etag, "a54357aff0632cce46d942af68356b38");
    assert_string_equal(c.parts[0].crc32c, "sOO8/Q==");
    assert_string_equal(c.parts[0].sha1, "2jmj7l5rSw0yVb/vlWAYkK/YBwk=");
    assert_string_equal(c.parts[0].sha256, "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=");
    assert_int_equal(c.parts[1].number, 3);
    assert_string_equal(c.parts[1].etag, "0c78aef83f66abc1fa1e8477f296d394-2");
    rf_s3xml_complete_clear(&c);

    /* exactly 10000 parts */
    s_buf_t b = {0};
    s_add(&b, "<CompleteMultipartUpload>");
    for (int i = 1; i <= RF_S3XML_MAX_PARTS; i++)
        s_add(&b, "<Part><PartNumber>%d</PartNumber><ETag>\"%032x\"</ETag></Part>", i, i);
    s_add(&b, "</CompleteMultipartUpload>");
    assert_int_equal(rf_s3xml_parse_complete(b.p, b.n, &c, &code, why, sizeof(why)), 0);
    assert_int_equal(c.n, RF_S3XML_MAX_PARTS);
    assert_int_equal(c.parts[RF_S3XML_MAX_PARTS - 1].number, RF_S3XML_MAX_PARTS);
    assert_string_equal(c.parts[RF_S3XML_MAX_PARTS - 1].etag, "00000000000000000000000000002710");
    rf_s3xml_complete_clear(&c);
    /* a 10001st can only repeat or exceed: refused either way */
    b.n -= strlen("</CompleteMultipartUpload>");
    s_add(&b, "<Part><PartNumber>10000</PartNumber><ETag>x</ETag></Part></CompleteMultipartUpload>");
    s_complete_refused(b.p, b.n, "MalformedXML", "more than 10000 parts");
    free(b.p);
}

static void test_complete_refusals(void **state)
{
    (void)state;
#define P(num, etag) "<Part><PartNumber>" num "</PartNumber><ETag>" etag "</ETag></Part>"
#define C(parts) "<CompleteMultipartUpload>" parts "</CompleteMultipartUpload>"
    static const struct {
        const char *body, *code, *why;
    } cases[] = {
        {C(P("2", "a") P("1", "b")), "InvalidPartOrder", "PartNumber 1 follows 2"},
        {C(P("1", "a") P("3", "b") P("3", "c")), "InvalidPartOrder", "PartNumber 3 follows 3"},
        {C(P("0", "a")), "InvalidArgument", "PartNumber of part 1 is not an integer between 1 and 10000"},
        {C(P("1", "a") P("10001", "b")), "InvalidArgument", "PartNumber of part 2 is not an integer between"},
        {C(P("-1", "a")), "InvalidArgument", "between 1 and 10000"},
        {C(P("99999999999999999999", "a")), "InvalidArgument", "between 1 and 10000"},
        {C(P("1a", "a")), "MalformedXML", "PartNumber of part 1 is not an integer"},
        {C(P("one", "a")), "MalformedXML", "PartNumber of part 1 is not an integer"},
        {C(P("1.0", "a")), "MalformedXML", "is not an integer"},
        {C(P("", "a")), "MalformedXML", "is not an integer"},
        {C(P("+", "a")), "MalformedXML", "is not an integer"},
        {C(P("0x10", "a")), "MalformedXML", "is not an integer"},
        {C(P("1", "")), "MalformedXML", "ETag of part 1 is empty"},
        {C(P("1", "\"\"")), "MalformedXML", "ETag of part 1 is empty"},
        {C(P("1", "a b")), "MalformedXML", "ETag of part 1 holds a space"},
        {C(P("1", "\"a\"b\"")), "MalformedXML", "quote"},
        {C(P("1", "01234567890123456789012345678901234567890123456789012345678901234567890123456789")), "MalformedXML",
         "ETag of part 1 longer than 79 bytes"},
        {C("<Part><ETag>a</ETag></Part>"), "MalformedXML", "part 1 has no PartNumber"},
        {C("<Part><PartNumber>1</PartNumber></Part>"), "MalformedXML", "part 1 has no ETag"},
        {C("<Part><PartNumber>1</PartNumber><PartNumber>2</PartNumber><ETag>a</ETag></Part>"), "MalformedXML",
         "two <PartNumber> in one <Part>"},
        {C("<Part><PartNumber>1</PartNumber><ETag>a</ETag><ChecksumCRC32>AAAA AA==</ChecksumCRC32></Part>"),
         "MalformedXML", "ChecksumCRC32 of part 1 is not base64"},
        {C("<Part><PartNumber>1</PartNumber><ETag>a</ETag><ChecksumSHA1>"
           "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
           "</ChecksumSHA1></Part>"),
         "MalformedXML", "ChecksumSHA1 of part 1 longer than 31 bytes"},
        {C(""), "MalformedXML", "no Part to complete"},
        {"<CompleteMultipartUpload/>", "MalformedXML", "no Part to complete"},
        {"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>a</ETag>", "MalformedXML", "no element found"},
        {"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>a</ETag></Part></Complete>", "MalformedXML",
         "mismatched tag"},
        {"<Delete><Object><Key>a</Key></Object></Delete>", "MalformedXML",
         "root element is not <CompleteMultipartUpload>"},
        {"<!DOCTYPE x [<!ENTITY a \"aaaaaaaaaa\">]>" C(P("1", "&a;")), "MalformedXML", "a DOCTYPE is not allowed"},
    };
#undef P
#undef C
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        s_complete_refused(cases[i].body, strlen(cases[i].body), cases[i].code, cases[i].why);
}

/* ---- CreateBucketConfiguration -------------------------------------------- */

static void test_location(void **state)
{
    (void)state;
    char region[64], why[256];
    const char *code;
    assert_int_equal(
        rf_s3xml_parse_location(s_boto_location, LEN(s_boto_location), region, sizeof(region), &code, why, sizeof(why)),
        0);
    assert_string_equal(region, "eu-west-1");
    assert_null(code);
    assert_int_equal(rf_s3xml_parse_location(s_s3cmd_location, LEN(s_s3cmd_location), region, sizeof(region), &code,
                                             why, sizeof(why)),
                     0);
    assert_string_equal(region, "eu-west-1");
    static const struct {
        const char *body, *region;
    } ok[] = {
        {"", ""}, /* botocore without a configuration */
        {" \r\n\t", ""},
        {"<CreateBucketConfiguration/>", ""},
        {"<CreateBucketConfiguration><LocationConstraint/></CreateBucketConfiguration>", ""},
        {"<CreateBucketConfiguration><LocationConstraint>EU</LocationConstraint></CreateBucketConfiguration>", "EU"},
        {"<?xml version=\"1.0\"?>\n<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\n"
         "  <LocationConstraint> us-west-2 </LocationConstraint>\n"
         "  <Location><Name>x</Name><Type>AvailabilityZone</Type></Location>\n"
         "</CreateBucketConfiguration>\n",
         "us-west-2"},
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        strcpy(region, "junk");
        assert_int_equal(
            rf_s3xml_parse_location(ok[i].body, strlen(ok[i].body), region, sizeof(region), &code, why, sizeof(why)),
            0);
        assert_string_equal(region, ok[i].region);
    }
    assert_int_equal(rf_s3xml_parse_location(NULL, 0, region, sizeof(region), &code, why, sizeof(why)), 0);

    static const struct {
        const char *body, *code, *why;
    } bad[] = {
        {"<CreateBucketConfiguration><LocationConstraint>eu west</LocationConstraint></CreateBucketConfiguration>",
         "InvalidLocationConstraint", "character other than"},
        {"<CreateBucketConfiguration><LocationConstraint>"
         "0123456789012345678901234567890123456789"
         "012345678901234567890123</LocationConstraint></CreateBucketConfiguration>",
         "InvalidLocationConstraint", "longer than 63 bytes"},
        {"<CreateBucketConfiguration><LocationConstraint>a</LocationConstraint><LocationConstraint>b"
         "</LocationConstraint></CreateBucketConfiguration>",
         "MalformedXML", "two <LocationConstraint>"},
        {"<LocationConstraint>eu-west-1</LocationConstraint>", "MalformedXML", "not <CreateBucketConfiguration>"},
        {"<CreateBucketConfiguration><LocationConstraint>eu-west-1</LocationConstraint>", "MalformedXML",
         "not well-formed"},
        {"<!DOCTYPE CreateBucketConfiguration><CreateBucketConfiguration/>", "MalformedXML", "DOCTYPE"},
        {"junk", "MalformedXML", "syntax error"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        strcpy(region, "junk");
        int rc =
            rf_s3xml_parse_location(bad[i].body, strlen(bad[i].body), region, sizeof(region), &code, why, sizeof(why));
        s_refused(rc, code, why, bad[i].code, bad[i].why, bad[i].body);
        assert_string_equal(region, "");
    }
    /* a region longer than the caller's buffer */
    char small[6];
    int rc =
        rf_s3xml_parse_location(s_boto_location, LEN(s_boto_location), small, sizeof(small), &code, why, sizeof(why));
    s_refused(rc, code, why, "InvalidLocationConstraint", "longer than 5 bytes", "small region buffer");
}

/* ---- the writer ------------------------------------------------------------ */

static void test_writer_exact(void **state)
{
    (void)state;
    rf_xml_t x;
    rf_xml_init(&x);
    rf_xml_open(&x, "ListBucketResult", "xmlns=\"" RF_S3XML_NS "\"");
    rf_xml_text(&x, "Name", "b", 1);
    rf_xml_textf(&x, "MaxKeys", "%d", 1000);
    rf_xml_open(&x, "Contents", NULL);
    static const char key[] = "a&b<c>d\"e'f\tg\nh\ri\x01j\x7fk\xc2\x85l\xef\xbf\xbem\xffn\xc3(o";
    rf_xml_text(&x, "Key", key, LEN(key));
    rf_xml_text(&x, "Empty", NULL, 0);
    rf_xml_close(&x);
    rf_xml_open(&x, "CommonPrefixes", "");
    /* left open: finish closes it and the root */
    size_t len = 0;
    char *doc = rf_xml_finish(&x, &len);
    assert_non_null(doc);
    assert_null(x.buf);
    assert_int_equal(x.len, 0);
    static const char want[] = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                               "<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Name>b</Name>"
                               "<MaxKeys>1000</MaxKeys><Contents>"
                               "<Key>a&amp;b&lt;c&gt;d&quot;e&apos;f&#x9;g&#xA;h&#xD;i\xef\xbf\xbdj&#x7F;k&#x85;l"
                               "\xef\xbf\xbdm\xef\xbf\xbdn\xef\xbf\xbd(o</Key><Empty></Empty></Contents>"
                               "<CommonPrefixes></CommonPrefixes></ListBucketResult>";
    assert_int_equal(len, LEN(want));
    assert_memory_equal(doc, want, len);
    assert_int_equal(doc[len], '\0');
    free(doc);
}

/* Hostile text in nested elements: well-formed for expat, and the text
 * comes back exactly where XML 1.0 can carry it, as U+FFFD where not. */
static void test_writer_roundtrip(void **state)
{
    (void)state;
#define T(in, out)                                                                                                     \
    {                                                                                                                  \
        in, sizeof(in) - 1, out                                                                                        \
    }
    static const struct {
        const char *in;
        size_t len;
        const char *out; /* NULL: the same as in */
    } texts[] = {
        T("<&>\"'", NULL),
        T("]]> and <![CDATA[ x ]]>", NULL),
        T("tab\there, CRLF\r\nand CR\r alone, LF\n", NULL),
        T("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xf4\x8f\xbf\xbf \xef\xbf\xbd", NULL), /* U+10FFFF is legal */
        T("C1 \xc2\x80\xc2\x9f and DEL \x7f", NULL),
        T("&amp; &#x1; &lt;", NULL), /* entity-looking text stays text */
        T("\x01\x02\x1f\x0b\x0c", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"),
        T("a\x00"
          "b",
          "a\xef\xbf\xbd"
          "b"),
        T("\xff\xfe", "\xef\xbf\xbd\xef\xbf\xbd"),                                 /* never UTF-8 */
        T("\xc0\xaf", "\xef\xbf\xbd\xef\xbf\xbd"),                                 /* overlong '/' */
        T("\xe0\x80\xaf", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"),                 /* overlong, 3 bytes */
        T("\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"),                 /* a surrogate */
        T("\xf4\x90\x80\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"), /* above U+10FFFF */
        T("x\xe2\x82", "x\xef\xbf\xbd\xef\xbf\xbd"),                               /* truncated at the end */
        T("\xe2\x82<", "\xef\xbf\xbd\xef\xbf\xbd<"),                               /* truncated before markup */
        T("\xef\xbf\xbe\xef\xbf\xbf", "\xef\xbf\xbd\xef\xbf\xbd"),                 /* U+FFFE, U+FFFF */
        T("", NULL),
    };
#undef T
    const size_t nt = sizeof(texts) / sizeof(texts[0]);
    rf_xml_t x;
    rf_xml_init(&x);
    rf_xml_open(&x, "DeleteResult", "xmlns=\"" RF_S3XML_NS "\"");
    for (size_t i = 0; i < nt; i++) {
        rf_xml_open(&x, "Deleted", NULL);
        rf_xml_open(&x, "Inner", NULL);
        rf_xml_text(&x, "Key", texts[i].in, texts[i].len);
        rf_xml_close(&x);
        rf_xml_textf(&x, "Index", "%zu", i);
        rf_xml_close(&x);
    }
    rf_xml_close(&x);
    size_t len;
    char *doc = rf_xml_finish(&x, &len);
    assert_non_null(doc);
    s_leaves_t *l;
    assert_int_equal(s_expat(doc, len, &l), 0);
    assert_int_equal(l->n, (int)(2 * nt));
    for (size_t i = 0; i < nt; i++) {
        const char *want = texts[i].out ? texts[i].out : texts[i].in;
        size_t wl = texts[i].out ? strlen(texts[i].out) : texts[i].len;
        assert_string_equal(l->name[2 * i], "Key");
        if (l->len[2 * i] != wl || memcmp(l->text[2 * i], want, wl) != 0)
            print_error("text %zu came back as %zu bytes\n", i, l->len[2 * i]);
        assert_int_equal(l->len[2 * i], wl);
        assert_memory_equal(l->text[2 * i], want, wl);
        char idx[16];
        snprintf(idx, sizeof(idx), "%zu", i);
        assert_string_equal(l->name[2 * i + 1], "Index");
        assert_int_equal(l->len[2 * i + 1], strlen(idx));
        assert_memory_equal(l->text[2 * i + 1], idx, strlen(idx));
    }
    free(l);
    free(doc);

    /* every single byte value, and every pair, alone: always well-formed */
    for (unsigned a = 0; a < 256; a++)
        for (unsigned b = 0; b < 256; b++) {
            char t[3] = {(char)a, (char)b, (char)0xbf};
            rf_xml_init(&x);
            rf_xml_text(&x, "K", t, a == b ? 1 : 3);
            doc = rf_xml_finish(&x, &len);
            assert_non_null(doc);
            assert_int_equal(s_expat(doc, len, &l), 0);
            free(l);
            free(doc);
        }
}

/* Keys as a parser returns them go back out byte for byte. */
static void test_parsed_keys_roundtrip(void **state)
{
    (void)state;
    static const char body[] = "<Delete><Object><Key>a&amp;b&lt;&gt;&quot;&apos;</Key></Object>"
                               "<Object><Key>&#x9;tab &#xD;&#xA;crlf &#xD;cr\nlf</Key></Object>"
                               "<Object><Key>&#x7F;&#x80;&#x9F;&#xA0;&#xD7FF;&#xE000;&#xFFFD;&#x10FFFF;</Key></Object>"
                               "<Object><Key>  ]]&gt;  </Key></Object>"
                               "<Object><Key>\r\nraw CRLF, normalised</Key></Object></Delete>";
    rf_s3xml_delete_t d;
    const char *code;
    char why[256];
    assert_int_equal(rf_s3xml_parse_delete(body, LEN(body), &d, &code, why, sizeof(why)), 0);
    assert_int_equal(d.n, 5);
    assert_string_equal(d.objs[1].key, "\ttab \r\ncrlf \rcr\nlf");
    assert_string_equal(d.objs[4].key, "\nraw CRLF, normalised");
    rf_xml_t x;
    rf_xml_init(&x);
    rf_xml_open(&x, "DeleteResult", NULL);
    for (size_t i = 0; i < d.n; i++) {
        rf_xml_open(&x, "Deleted", NULL);
        rf_xml_text(&x, "Key", d.objs[i].key, strlen(d.objs[i].key));
        rf_xml_close(&x);
    }
    size_t len;
    char *doc = rf_xml_finish(&x, &len);
    assert_non_null(doc);
    s_leaves_t *l;
    assert_int_equal(s_expat(doc, len, &l), 0);
    assert_int_equal(l->n, (int)d.n);
    for (size_t i = 0; i < d.n; i++) {
        assert_int_equal(l->len[i], strlen(d.objs[i].key));
        assert_memory_equal(l->text[i], d.objs[i].key, l->len[i]);
    }
    free(l);
    free(doc);
    rf_s3xml_delete_clear(&d);
}

static void test_writer_misuse(void **state)
{
    (void)state;
    rf_xml_t x;
    size_t len = 99;
    /* 16 levels are fine, a 17th fails the document */
    rf_xml_init(&x);
    for (int i = 0; i < RF_XML_MAX_DEPTH; i++)
        rf_xml_open(&x, "a", NULL);
    char *doc = rf_xml_finish(&x, &len);
    assert_non_null(doc);
    free(doc);
    rf_xml_init(&x);
    for (int i = 0; i <= RF_XML_MAX_DEPTH; i++)
        rf_xml_open(&x, "a", NULL);
    assert_true(x.oom);
    rf_xml_text(&x, "b", "c", 1); /* a no-op now */
    assert_null(rf_xml_finish(&x, &len));
    assert_int_equal(len, 0);
    assert_null(x.buf);
    /* a close with nothing open */
    rf_xml_init(&x);
    rf_xml_close(&x);
    assert_null(rf_xml_finish(&x, NULL));
    /* clear abandons a document */
    rf_xml_init(&x);
    rf_xml_open(&x, "a", NULL);
    rf_xml_clear(&x);
    assert_null(x.buf);
    assert_int_equal(x.depth, 0);
    /* textf longer than its stack buffer */
    char big[1000];
    memset(big, '<', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    rf_xml_init(&x);
    rf_xml_textf(&x, "T", "%s|%d", big, 7);
    doc = rf_xml_finish(&x, &len);
    assert_non_null(doc);
    assert_int_equal(len, strlen("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<T></T>") + 999 * 4 + 2);
    assert_non_null(strstr(doc, "&lt;&lt;|7</T>"));
    free(doc);
}

static void test_error_document(void **state)
{
    (void)state;
    size_t len;
    char *doc =
        rf_s3xml_error("NoSuchKey", "The specified key does not exist.", "/b/a<&>.txt", "4442587FB7D0A2F9", &len);
    assert_non_null(doc);
    static const char want[] = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>NoSuchKey</Code>"
                               "<Message>The specified key does not exist.</Message>"
                               "<Resource>/b/a&lt;&amp;&gt;.txt</Resource><RequestId>4442587FB7D0A2F9</RequestId>"
                               "</Error>";
    assert_string_equal(doc, want);
    assert_int_equal(len, LEN(want));
    free(doc);
    doc = rf_s3xml_error("InternalError", NULL, NULL, "r1", NULL);
    assert_string_equal(doc, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>InternalError</Code>"
                             "<RequestId>r1</RequestId></Error>");
    free(doc);
}

static void test_urlencode(void **state)
{
    (void)state;
    char out[128];
    static const char in[] = "dir/a b+c~d_e.f-g%h&\xc3\xa9\x01";
    size_t n = rf_s3_urlencode(in, LEN(in), out, sizeof(out), true);
    assert_string_equal(out, "dir/a%20b%2Bc~d_e.f-g%25h%26%C3%A9%01");
    assert_int_equal(n, strlen(out));
    n = rf_s3_urlencode(in, LEN(in), out, sizeof(out), false);
    assert_string_equal(out, "dir%2Fa%20b%2Bc~d_e.f-g%25h%26%C3%A9%01");
    /* size query, a buffer one short (nothing written), and exact fit */
    assert_int_equal(rf_s3_urlencode(in, LEN(in), NULL, 0, false), n);
    char small[40];
    assert_int_equal(n, 39);
    memset(small, 'x', sizeof(small));
    assert_int_equal(rf_s3_urlencode(in, LEN(in), small, n, false), n);
    assert_string_equal(small, "");
    assert_int_equal(rf_s3_urlencode(in, LEN(in), small, n + 1, false), n);
    assert_string_equal(small, out);
    assert_int_equal(rf_s3_urlencode("", 0, out, sizeof(out), false), 0);
    assert_string_equal(out, "");
    /* a NUL inside the input is just another byte */
    assert_int_equal(rf_s3_urlencode("a\0b", 3, out, sizeof(out), false), 5);
    assert_string_equal(out, "a%00b");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_delete_clients),        cmocka_unit_test(test_delete_variants),
        cmocka_unit_test(test_delete_refusals),       cmocka_unit_test(test_complete_clients),
        cmocka_unit_test(test_complete_refusals),     cmocka_unit_test(test_location),
        cmocka_unit_test(test_writer_exact),          cmocka_unit_test(test_writer_roundtrip),
        cmocka_unit_test(test_parsed_keys_roundtrip), cmocka_unit_test(test_writer_misuse),
        cmocka_unit_test(test_error_document),        cmocka_unit_test(test_urlencode),
    };
    return cmocka_run_group_tests_name("rf_s3xml", tests, NULL, NULL);
}
