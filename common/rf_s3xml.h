/*  rf_s3xml — the XML of the gateway's S3-compatible API, both ways.
 *
 *  In: the three request bodies S3 clients send that the API accepts —
 *  DeleteObjects, CompleteMultipartUpload and (optionally) CreateBucket's
 *  CreateBucketConfiguration — parsed with libexpat into plain structs.
 *  Bodies are attacker-controlled: they are pointer + length (not
 *  NUL-terminated), every size and count is bounded, a DOCTYPE (and so
 *  every entity declaration: billion laughs, external entities) stops the
 *  parser, nesting is bounded, and nothing recurses on the input. The S3
 *  namespace (http://s3.amazonaws.com/doc/2006-03-01/) is optional: botocore
 *  (awscli, boto3) sends it, s3cmd does not; elements in any other namespace
 *  count as unknown. Unknown elements are skipped with their content.
 *
 *  Out: a small growable writer for S3 response documents (rf_xml_*) whose
 *  output is always well-formed XML 1.0 whatever bytes the text holds, the
 *  standard <Error> document, and the RFC 3986 encoder used for
 *  encoding-type=url.
 *
 *  Pure: no I/O, no global mutable state (safe from several threads at
 *  once on different objects), so it is unit-tested and fuzzed on its own.
 */
#ifndef RF_S3XML_H
#define RF_S3XML_H

#include <stdbool.h>
#include <stddef.h>

#define RF_S3XML_NS "http://s3.amazonaws.com/doc/2006-03-01/"

#define RF_S3XML_MAX_OBJECTS 1000 /* DeleteObjects: S3's limit */
#define RF_S3XML_MAX_KEY 1024     /* bytes of one key (UTF-8) */
#define RF_S3XML_MAX_PARTS 10000  /* CompleteMultipartUpload: parts, and the highest PartNumber */

/* Largest bodies the parsers take (larger: refused with MalformedXML).
 * 1000 keys of 1024 bytes written as &amp; each, with a VersionId, fit in
 * 8 MiB, as do 10000 parts with all four checksums. The caller should stop
 * reading at its own (lower) limit; these are a backstop. */
#define RF_S3XML_DELETE_BODY_MAX (8u << 20)
#define RF_S3XML_COMPLETE_BODY_MAX (8u << 20)
#define RF_S3XML_LOCATION_BODY_MAX (64u << 10)

/* ---- XML in ---------------------------------------------------------- */

/* Error codes a parser puts in *code (static strings, S3's names; all are
 * HTTP 400 except InternalError, 500):
 *   MalformedXML               not well-formed, wrong root, DOCTYPE, a
 *                              missing/repeated/over-long/invalid element,
 *                              no or too many objects or parts
 *   InvalidPartOrder           PartNumbers not strictly ascending
 *   InvalidArgument            a PartNumber outside 1..10000
 *   InvalidLocationConstraint  a region that is not [A-Za-z0-9_-]{1,63}
 *   InternalError              memory ran out
 * `why` receives a one-line reason that never echoes the body's text. */

typedef struct {
    char *key; /* malloc'd, NUL-terminated, UTF-8 as sent (no NULs) */
} rf_s3xml_obj_t;

typedef struct {
    rf_s3xml_obj_t *objs; /* malloc'd array of n */
    size_t n;             /* 1..RF_S3XML_MAX_OBJECTS */
    bool quiet;           /* <Quiet>true</Quiet> (or 1); false when absent */
} rf_s3xml_delete_t;

/* Parses a DeleteObjects body:
 *   <Delete xmlns="…"><Quiet>true</Quiet><Object><Key>a</Key>
 *     <VersionId>…</VersionId></Object>…</Delete>
 * 1..1000 Objects, each with exactly one Key of 1..1024 bytes (kept
 * byte for byte, whitespace included); other elements inside Object
 * (VersionId, ETag, LastModifiedTime, Size) and Delete are ignored.
 * Returns 0 with *out filled — the caller owns it and releases it with
 * rf_s3xml_delete_clear — or -1 with *out empty (nothing to free), *code
 * set and why (why_len bytes, may be 0) filled. */
int rf_s3xml_parse_delete(const char *body, size_t len, rf_s3xml_delete_t *out, const char **code, char *why,
                          size_t why_len);

/* Frees every key and the array; leaves *d empty (safe to call twice). */
void rf_s3xml_delete_clear(rf_s3xml_delete_t *d);

typedef struct {
    int number;     /* 1..10000, strictly ascending through the list */
    char etag[80];  /* without quotes, 1..79 bytes, no controls or '"' */
    char crc32[16]; /* Checksum* elements if present, base64 as sent, "" otherwise */
    char crc32c[16];
    char sha1[32];
    char sha256[48];
} rf_s3xml_part_t;

typedef struct {
    rf_s3xml_part_t *parts; /* malloc'd array of n */
    size_t n;               /* 1..RF_S3XML_MAX_PARTS */
} rf_s3xml_complete_t;

/* Parses a CompleteMultipartUpload body:
 *   <CompleteMultipartUpload><Part><PartNumber>1</PartNumber>
 *     <ETag>"abc"</ETag></Part>…</CompleteMultipartUpload>
 * 1..10000 Parts, each with one PartNumber and one ETag and optionally one
 * of each ChecksumCRC32 / ChecksumCRC32C / ChecksumSHA1 / ChecksumSHA256.
 * Whitespace around values is dropped; the ETag loses its quotes (sent as
 * &quot;, as " or not at all). PartNumber is a decimal integer (xsd:int);
 * outside 1..10000 is InvalidArgument, not strictly ascending (a repeat
 * included) InvalidPartOrder. Returns 0 with *out filled — the caller owns
 * it and releases it with rf_s3xml_complete_clear — or -1 with *out empty,
 * *code set and why filled. */
int rf_s3xml_parse_complete(const char *body, size_t len, rf_s3xml_complete_t *out, const char **code, char *why,
                            size_t why_len);

/* Frees the array; leaves *c empty (safe to call twice). */
void rf_s3xml_complete_clear(rf_s3xml_complete_t *c);

/* Parses CreateBucket's optional body:
 *   <CreateBucketConfiguration><LocationConstraint>eu-west-1
 *     </LocationConstraint></CreateBucketConfiguration>
 * An empty (or all-whitespace) body, a missing or empty LocationConstraint
 * all give region "" (us-east-1, as S3 reads them). Other elements
 * (Location, Bucket) are ignored. The region is copied NUL-terminated into
 * the caller's region[region_len] (at most 63 bytes of [A-Za-z0-9_-];
 * longer than region_len - 1 is refused). Returns 0, or -1 with region ""
 * and *code / why filled. Nothing to free. */
int rf_s3xml_parse_location(const char *body, size_t len, char *region, size_t region_len, const char **code, char *why,
                            size_t why_len);

/* ---- XML out --------------------------------------------------------- */

#define RF_XML_MAX_DEPTH 16
#define RF_XML_MAX_SIZE (256u << 20) /* a document larger than this fails like OOM */

/* A growable writer. `oom` is set when memory ran out or the writer was
 * misused (nesting deeper than RF_XML_MAX_DEPTH, a close with nothing
 * open, a bad printf format); every later call is then a no-op and
 * rf_xml_finish returns NULL, so callers check once, at the end.
 *
 * Tag names and attrs are written as given: they must be the caller's
 * constants (well-formed names, attributes already quoted and escaped),
 * never request data, and an open tag's string must live until its close.
 *
 * Text escaping (rf_xml_text): & < > " ' become &amp; &lt; &gt; &quot;
 * &apos;. Tab, LF and CR become &#x9; &#xA; &#xD; (so a parser gives them
 * back exactly, instead of normalising CR / CRLF to LF), and DEL and the
 * C1 controls U+0080..U+009F become S3-style numeric references (&#x7F;,
 * &#x85;): XML 1.0 allows them. What XML 1.0 cannot carry at all, even as
 * a reference — the other C0 controls (0x00..0x1F), U+FFFE, U+FFFF — and
 * every byte that does not start a well-formed UTF-8 sequence (overlong
 * forms, surrogates, above U+10FFFF, truncated sequences: one U+FFFD per
 * such byte) are written as U+FFFD. That loses those keys' exact bytes
 * (S3 writes &#x1;, which XML 1.0 parsers refuse); a client that needs
 * them asks for encoding-type=url (rf_s3_urlencode). Text the parsers
 * above return never holds such characters, so it round-trips exactly. */
typedef struct {
    char *buf;
    size_t len, cap;
    bool oom;
    int depth;
    const char *stack[RF_XML_MAX_DEPTH];
} rf_xml_t;

/* Starts a document in *x (any previous content is NOT freed: clear or
 * finish first) with the <?xml version="1.0" encoding="UTF-8"?>\n prolog. */
void rf_xml_init(rf_xml_t *x);

/* <tag> or <tag attrs>, attrs e.g. "xmlns=\"" RF_S3XML_NS "\"" or NULL. */
void rf_xml_open(rf_xml_t *x, const char *tag, const char *attrs);

/* Closes the innermost open element. */
void rf_xml_close(rf_xml_t *x);

/* <tag>text[0..len), escaped</tag>; text may be NULL when len is 0. */
void rf_xml_text(rf_xml_t *x, const char *tag, const char *text, size_t len);

/* <tag>printf(fmt, …), escaped</tag>. */
void rf_xml_textf(rf_xml_t *x, const char *tag, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Closes every element still open and returns the document, NUL-terminated,
 * its length in *len (len may be NULL); the caller frees it. Returns NULL
 * when memory ran out (or the writer was misused) at any point. Either way
 * *x is reset (empty, owning nothing). */
char *rf_xml_finish(rf_xml_t *x, size_t *len);

/* Frees what *x holds and resets it (for abandoning a document). */
void rf_xml_clear(rf_xml_t *x);

/* The standard S3 error document:
 *   <?xml…?>\n<Error><Code>…</Code><Message>…</Message>
 *   <Resource>…</Resource><RequestId>…</RequestId></Error>
 * (each text escaped; an element whose argument is NULL is left out).
 * Returns a malloc'd, NUL-terminated document the caller frees, its
 * length in *len (may be NULL), or NULL when memory ran out. */
char *rf_s3xml_error(const char *code, const char *message, const char *resource, const char *request_id, size_t *len);

/* RFC 3986 percent-encoding of in[0..len) for encoding-type=url:
 * A-Za-z0-9 - . _ ~ kept, '/' kept when keep_slash, every other byte %XX
 * (upper-case hex). Returns the encoded length (without NUL). When it is
 * < cap, out holds the encoding NUL-terminated; otherwise nothing is
 * encoded and out is "" (when cap > 0) — never a truncated escape. out may
 * be NULL when cap is 0 (a size query); 3 * len + 1 always suffices. */
size_t rf_s3_urlencode(const char *in, size_t len, char *out, size_t cap, bool keep_slash);

#endif
