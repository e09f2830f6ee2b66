/*  rf_sigv4 — AWS Signature Version 4 verification for the S3 API, the
 *  aws-chunked body decoder and the x-amz-checksum-* checksums (the formats
 *  and every decision are in rf_sigv4.h).
 *
 *  Why here, in C and by hand: the gateway authenticates each S3 request
 *  before touching the body, on its own threads, with no library for the
 *  server side of SigV4. OpenSSL does HMAC and SHA (no API deprecated in
 *  3.0), zlib CRC32, ISA-L CRC32C; CRC64/NVME is a table below.
 *
 *  Memory: rf_sigv4_verify allocates one work area (the decoded and encoded
 *  query, the canonical URI) and one digest context, both freed before it
 *  returns; a decoder holds at most one chunk (max_chunk bytes) and 1 KiB
 *  of trailer.
 */
#include "rf_sigv4.h"

#include <isa-l/crc.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

#define S_ALGO "AWS4-HMAC-SHA256"
#define S_EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define S_UNSIGNED "UNSIGNED-PAYLOAD"

static const char s_hexd[] = "0123456789abcdef";

/* ------------------------------------------------------------------ */
/* small helpers                                                        */

/* Sets *code and a one-line reason; returns -1. */
__attribute__((format(printf, 5, 6))) static int s_fail(const char **code, const char *c, char *why, size_t why_len,
                                                        const char *fmt, ...)
{
    if (code != NULL)
        *code = c;
    if (why != NULL && why_len > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, why_len, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* Client bytes p[0..n) made fit for a reason line: at most 40 of them,
 * anything but printable ASCII as '?', "..." when cut. Returns dst. */
static const char *s_show(char *dst, size_t cap, const char *p, size_t n)
{
    size_t o = 0, max = cap > 4 ? cap - 4 : 0;
    if (max > 40)
        max = 40;
    for (size_t i = 0; i < n && o < max; i++)
        dst[o++] = (p[i] >= 0x20 && p[i] < 0x7f) ? p[i] : '?';
    if (n > max && cap >= 4) {
        memcpy(dst + o, "...", 3);
        o += 3;
    }
    if (cap > 0)
        dst[o < cap ? o : cap - 1] = '\0';
    return dst;
}

static int s_hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static void s_hex(const unsigned char *in, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = s_hexd[in[i] >> 4];
        out[2 * i + 1] = s_hexd[in[i] & 15];
    }
    out[2 * n] = '\0';
}

/* 64 hex digits (either case) into 32 bytes; -1 otherwise. */
static int s_unhex32(const char *p, size_t n, unsigned char out[32])
{
    if (n != 64)
        return -1;
    for (size_t i = 0; i < 32; i++) {
        int hi = s_hexval((unsigned char)p[2 * i]), lo = s_hexval((unsigned char)p[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[i] = (unsigned char)(hi << 4 | lo);
    }
    return 0;
}

static bool s_is_space(char c)
{
    return c == ' ' || c == '\t';
}

static void s_trim(const char **p, size_t *n)
{
    while (*n > 0 && s_is_space((*p)[0]))
        (*p)++, (*n)--;
    while (*n > 0 && s_is_space((*p)[*n - 1]))
        (*n)--;
}

/* p[0..n) equals the NUL-terminated s, ignoring ASCII case. */
static bool s_ieq(const char *p, size_t n, const char *s)
{
    return strlen(s) == n && strncasecmp(p, s, n) == 0;
}

static bool s_eq(const char *p, size_t n, const char *s)
{
    return strlen(s) == n && memcmp(p, s, n) == 0;
}

static int s_sha256(const void *p, size_t n, unsigned char out[32])
{
    unsigned int l = 0;
    return EVP_Digest(p, n, out, &l, EVP_sha256(), NULL) == 1 && l == 32 ? 0 : -1;
}

static int s_hmac(const unsigned char *key, size_t klen, const void *msg, size_t n, unsigned char out[32])
{
    unsigned int l = 0;
    if (HMAC(EVP_sha256(), key, (int)klen, msg, n, out, &l) == NULL || l != 32)
        return -1;
    return 0;
}

/* RFC 3986 unreserved: kept as is by the encoder. */
static bool s_unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
           c == '_' || c == '~';
}

/* Encodes in[0..n) into out (room for 3n bytes), '/' kept when keep_slash.
 * Returns the bytes written. */
static size_t s_encode(const char *in, size_t n, char *out, bool keep_slash)
{
    static const char up[] = "0123456789ABCDEF";
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)in[i];
        if (s_unreserved(c) || (keep_slash && c == '/')) {
            out[o++] = (char)c;
        } else {
            out[o++] = '%';
            out[o++] = up[c >> 4];
            out[o++] = up[c & 15];
        }
    }
    return o;
}

/* Decodes the %XX of in[0..n) into out (room for n bytes): 0 with *on, or
 * -1 on a '%' not followed by two hex digits. '+' stays '+'. */
static int s_decode(const char *in, size_t n, char *out, size_t *on)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (in[i] != '%') {
            out[o++] = in[i];
            continue;
        }
        if (n - i < 3)
            return -1;
        int hi = s_hexval((unsigned char)in[i + 1]), lo = s_hexval((unsigned char)in[i + 2]);
        if (hi < 0 || lo < 0)
            return -1;
        out[o++] = (char)(hi << 4 | lo);
        i += 2;
    }
    *on = o;
    return 0;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant). */
static int64_t s_days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static int s_digits(const char *p, size_t n, unsigned *v)
{
    unsigned x = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        x = x * 10 + (unsigned)(p[i] - '0');
    }
    *v = x;
    return 0;
}

/* "YYYYMMDDTHHMMSSZ" into unix seconds; -1 when malformed or no date. */
static int s_parse_amz_date(const char *p, size_t n, int64_t *t)
{
    static const unsigned char mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    unsigned y, mo, d, h, mi, s;
    if (n != 16 || p[8] != 'T' || p[15] != 'Z' || s_digits(p, 4, &y) || s_digits(p + 4, 2, &mo) ||
        s_digits(p + 6, 2, &d) || s_digits(p + 9, 2, &h) || s_digits(p + 11, 2, &mi) || s_digits(p + 13, 2, &s))
        return -1;
    if (mo < 1 || mo > 12 || d < 1 || h > 23 || mi > 59 || s > 60)
        return -1;
    unsigned dim = mdays[mo - 1] + (mo == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0));
    if (d > dim)
        return -1;
    *t = s_days_from_civil(y, mo, d) * 86400 + (int64_t)h * 3600 + mi * 60 + s;
    return 0;
}

/* ------------------------------------------------------------------ */
/* the canonical request                                                */

typedef struct {
    const char *dn, *dv; /* decoded name and value */
    size_t dnl, dvl;
    const char *en, *ev; /* encoded again, for the canonical query */
    size_t enl, evl;
} s_param_t;

/* One verification's scratch memory (about 90 KiB, on the heap). */
typedef struct {
    char dec[RF_SIGV4_MAX_QUERY];
    char enc[3 * RF_SIGV4_MAX_QUERY];
    s_param_t p[RF_SIGV4_MAX_PARAMS];
    size_t np;
    char seg[3 * RF_SIGV4_MAX_PATH];  /* one decoded path segment */
    char path[3 * RF_SIGV4_MAX_PATH]; /* the canonical URI */
    size_t path_len;
    struct {
        const char *p;
        size_t n;
    } sh[RF_SIGV4_MAX_SIGNED]; /* the SignedHeaders names */
    size_t nsh;
} s_work_t;

/* Splits the query into parameters, decoded and encoded again. */
static int s_parse_query(const char *q, size_t n, s_work_t *w, const char **code, char *why, size_t wl)
{
    size_t dpos = 0, epos = 0;
    w->np = 0;
    for (size_t i = 0; i < n;) {
        size_t e = i;
        while (e < n && q[e] != '&')
            e++;
        if (e > i) {
            if (w->np == RF_SIGV4_MAX_PARAMS)
                return s_fail(code, "InvalidArgument", why, wl, "more than %d query parameters", RF_SIGV4_MAX_PARAMS);
            size_t eq = i;
            while (eq < e && q[eq] != '=')
                eq++;
            s_param_t *p = &w->p[w->np++];
            const char *v = eq < e ? q + eq + 1 : q + e;
            size_t vl = eq < e ? e - eq - 1 : 0;
            p->dn = w->dec + dpos;
            if (s_decode(q + i, eq - i, w->dec + dpos, &p->dnl) != 0)
                goto bad;
            dpos += p->dnl;
            p->dv = w->dec + dpos;
            if (s_decode(v, vl, w->dec + dpos, &p->dvl) != 0)
                goto bad;
            dpos += p->dvl;
            p->en = w->enc + epos;
            p->enl = s_encode(p->dn, p->dnl, w->enc + epos, false);
            epos += p->enl;
            p->ev = w->enc + epos;
            p->evl = s_encode(p->dv, p->dvl, w->enc + epos, false);
            epos += p->evl;
        }
        i = e + 1;
    }
    return 0;
bad:
    return s_fail(code, "InvalidURI", why, wl, "Couldn't parse the specified URI: malformed %%-escape in the query");
}

/* The parameter named `name` (decoded, exact case): the first, and how
 * many there are in *count. */
static const s_param_t *s_param(const s_work_t *w, const char *name, int *count)
{
    const s_param_t *first = NULL;
    *count = 0;
    for (size_t i = 0; i < w->np; i++) {
        if (s_eq(w->p[i].dn, w->p[i].dnl, name)) {
            if (first == NULL)
                first = &w->p[i];
            (*count)++;
        }
    }
    return first;
}

static int s_cmp_bytes(const char *a, size_t an, const char *b, size_t bn)
{
    int c = memcmp(a, b, an < bn ? an : bn);
    if (c != 0)
        return c;
    return an < bn ? -1 : an > bn;
}

static int s_cmp_param(const void *a, const void *b)
{
    const s_param_t *x = a, *y = b;
    int c = s_cmp_bytes(x->en, x->enl, y->en, y->enl);
    return c != 0 ? c : s_cmp_bytes(x->ev, x->evl, y->ev, y->evl);
}

/* The canonical URI of the raw path: each segment decoded and encoded
 * again ('/' between segments kept, a decoded '/' from %2F encoded). */
static int s_canon_path(const char *p, size_t n, s_work_t *w, const char **code, char *why, size_t wl)
{
    size_t o = 0, total = 0;
    if (n == 0 || p[0] != '/')
        return s_fail(code, "InvalidURI", why, wl, "Couldn't parse the specified URI: the path must begin with '/'");
    if (n > 3 * RF_SIGV4_MAX_PATH)
        return s_fail(code, "InvalidURI", why, wl, "the path is longer than %d bytes", RF_SIGV4_MAX_PATH);
    for (size_t i = 0; i < n;) {
        if (p[i] == '/') {
            if (++total > RF_SIGV4_MAX_PATH)
                return s_fail(code, "InvalidURI", why, wl, "the path is longer than %d bytes", RF_SIGV4_MAX_PATH);
            w->path[o++] = '/';
            i++;
            continue;
        }
        size_t e = i, dl = 0;
        while (e < n && p[e] != '/')
            e++;
        if (s_decode(p + i, e - i, w->seg, &dl) != 0)
            return s_fail(code, "InvalidURI", why, wl,
                          "Couldn't parse the specified URI: malformed %%-escape in the path");
        total += dl;
        if (total > RF_SIGV4_MAX_PATH)
            return s_fail(code, "InvalidURI", why, wl, "the path is longer than %d bytes", RF_SIGV4_MAX_PATH);
        o += s_encode(w->seg, dl, w->path + o, false);
        i = e;
    }
    w->path_len = o;
    return 0;
}

/* The request headers named `lname` (lower-case): the first, and how many. */
static const rf_sigv4_header_t *s_header(const rf_sigv4_req_t *r, const char *lname, int *count)
{
    const rf_sigv4_header_t *first = NULL;
    *count = 0;
    for (size_t i = 0; i < r->n_headers; i++) {
        const rf_sigv4_header_t *h = &r->headers[i];
        if (h->name != NULL && s_ieq(h->name, h->name_len, lname)) {
            if (first == NULL)
                first = h;
            (*count)++;
        }
    }
    return first;
}

typedef struct {
    EVP_MD_CTX *md;
    int err;
} s_hash_t;

static void s_put(s_hash_t *h, const void *p, size_t n)
{
    if (n > 0 && EVP_DigestUpdate(h->md, p, n) != 1)
        h->err = 1;
}

static void s_puts(s_hash_t *h, const char *s)
{
    s_put(h, s, strlen(s));
}

/* A header value as canonical: trimmed, each run of spaces/tabs one space. */
static void s_put_value(s_hash_t *h, const char *v, size_t n)
{
    s_trim(&v, &n);
    for (size_t i = 0; i < n;) {
        size_t e = i;
        while (e < n && !s_is_space(v[e]))
            e++;
        s_put(h, v + i, e - i);
        if (e == n)
            break;
        s_put(h, " ", 1);
        while (e < n && s_is_space(v[e]))
            e++;
        i = e;
    }
}

static bool s_token_char(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || strchr("!#$%&'*+-.^_`|~", c);
}

/* SignedHeaders "a;b;c" into w->sh; -1 with a static reason. */
static int s_parse_signed_headers(const char *p, size_t n, s_work_t *w, const char **err)
{
    bool host = false;
    w->nsh = 0;
    if (n == 0) {
        *err = "SignedHeaders is empty";
        return -1;
    }
    for (size_t i = 0; i <= n;) {
        size_t e = i;
        while (e < n && p[e] != ';')
            e++;
        if (e == i || e - i > 256) {
            *err = "SignedHeaders has an empty or overlong name";
            return -1;
        }
        for (size_t k = i; k < e; k++)
            if (p[k] == 0 || !s_token_char((unsigned char)p[k])) {
                *err = "SignedHeaders has a name with a character no header name has";
                return -1;
            }
        if (w->nsh == RF_SIGV4_MAX_SIGNED) {
            *err = "SignedHeaders names more than 64 headers";
            return -1;
        }
        w->sh[w->nsh].p = p + i;
        w->sh[w->nsh++].n = e - i;
        if (s_ieq(p + i, e - i, "host"))
            host = true;
        i = e + 1;
    }
    if (!host) {
        *err = "SignedHeaders must include host";
        return -1;
    }
    return 0;
}

/* "AKID/YYYYMMDD/REGION/s3/aws4_request" into out; -1 with a static reason. */
static int s_parse_credential(const char *p, size_t n, rf_sigv4_auth_t *out, const char **err)
{
    size_t cut[4], k = 0;
    for (size_t i = n; i > 0 && k < 4; i--)
        if (p[i - 1] == '/')
            cut[k++] = i - 1; /* from the right: terminator, service, region, date */
    if (k < 4) {
        *err = "the Credential must be ACCESS-KEY/DATE/REGION/s3/aws4_request";
        return -1;
    }
    const char *key = p, *date = p + cut[3] + 1, *region = p + cut[2] + 1, *service = p + cut[1] + 1,
               *term = p + cut[0] + 1;
    size_t keyl = cut[3], datel = cut[2] - cut[3] - 1, regionl = cut[1] - cut[2] - 1, servicel = cut[0] - cut[1] - 1,
           terml = n - cut[0] - 1;
    if (keyl == 0 || keyl >= sizeof(out->access_key)) {
        *err = "the access key id in the Credential is empty or too long";
        return -1;
    }
    for (size_t i = 0; i < keyl; i++)
        if (key[i] <= 0x20 || key[i] >= 0x7f || key[i] == ',') {
            *err = "the access key id in the Credential has a character no key id has";
            return -1;
        }
    unsigned v;
    if (datel != 8 || s_digits(date, 8, &v) != 0) {
        *err = "the Credential's date must be YYYYMMDD";
        return -1;
    }
    if (regionl == 0 || regionl >= sizeof(out->region)) {
        *err = "the Credential's region is empty or too long";
        return -1;
    }
    for (size_t i = 0; i < regionl; i++)
        if (!((region[i] >= 'a' && region[i] <= 'z') || (region[i] >= 'A' && region[i] <= 'Z') ||
              (region[i] >= '0' && region[i] <= '9') || region[i] == '-' || region[i] == '_')) {
            *err = "the Credential's region has a character no region has";
            return -1;
        }
    if (!s_eq(service, servicel, "s3")) {
        *err = "Credential should be scoped to correct service: 's3'";
        return -1;
    }
    if (!s_eq(term, terml, "aws4_request")) {
        *err = "Credential should be scoped with a valid terminator: 'aws4_request'";
        return -1;
    }
    memcpy(out->access_key, key, keyl);
    out->access_key[keyl] = '\0';
    memcpy(out->date, date, 8);
    out->date[8] = '\0';
    memcpy(out->region, region, regionl);
    out->region[regionl] = '\0';
    return 0;
}

/* The parts of "AWS4-HMAC-SHA256 Credential=..., SignedHeaders=...,
 * Signature=..." (any spaces after the commas). */
typedef struct {
    const char *cred, *sh, *sig;
    size_t credl, shl, sigl;
} s_authz_t;

static int s_parse_authorization(const char *p, size_t n, s_authz_t *a, const char **code, char *why, size_t wl)
{
    char show[48];
    size_t sp = 0;
    memset(a, 0, sizeof(*a));
    if (n > RF_SIGV4_MAX_AUTH)
        return s_fail(code, "AuthorizationHeaderMalformed", why, wl, "the Authorization header is longer than %d bytes",
                      RF_SIGV4_MAX_AUTH);
    s_trim(&p, &n);
    while (sp < n && p[sp] != ' ')
        sp++;
    if (!s_eq(p, sp, S_ALGO)) {
        if (s_eq(p, sp, "AWS") || s_eq(p, sp, "AWS4-ECDSA-P256-SHA256"))
            return s_fail(code, "InvalidRequest", why, wl,
                          "The authorization mechanism you have provided is not supported. Please use "
                          "AWS4-HMAC-SHA256.");
        return s_fail(code, "AuthorizationHeaderMalformed", why, wl, "unsupported Authorization algorithm '%s'",
                      s_show(show, sizeof(show), p, sp));
    }
    for (size_t i = sp; i < n;) {
        size_t e = i;
        while (e < n && p[e] != ',')
            e++;
        const char *item = p + i;
        size_t il = e - i;
        s_trim(&item, &il);
        const char *eq = memchr(item, '=', il);
        if (eq == NULL)
            return s_fail(code, "AuthorizationHeaderMalformed", why, wl,
                          "the Authorization header has a component without '=': '%s'",
                          s_show(show, sizeof(show), item, il));
        size_t kl = (size_t)(eq - item), vl = il - kl - 1;
        const char **slot = NULL;
        size_t *slotl = NULL;
        if (s_eq(item, kl, "Credential"))
            slot = &a->cred, slotl = &a->credl;
        else if (s_eq(item, kl, "SignedHeaders"))
            slot = &a->sh, slotl = &a->shl;
        else if (s_eq(item, kl, "Signature"))
            slot = &a->sig, slotl = &a->sigl;
        if (slot == NULL || *slot != NULL)
            return s_fail(code, "AuthorizationHeaderMalformed", why, wl,
                          "the Authorization header has an unknown or repeated component '%s'",
                          s_show(show, sizeof(show), item, kl));
        *slot = eq + 1;
        *slotl = vl;
        i = e + 1;
    }
    if (a->cred == NULL || a->sh == NULL || a->sig == NULL)
        return s_fail(code, "AuthorizationHeaderMalformed", why, wl,
                      "the Authorization header needs Credential, SignedHeaders and Signature");
    return 0;
}

/* The payload kind of an x-amz-content-sha256 value: 0, -2 for SigV4a
 * names, -1 for anything else. */
static int s_payload_kind(const char *p, size_t n, rf_sigv4_payload_t *k, char sha[65])
{
    unsigned char b[32];
    sha[0] = '\0';
    if (s_unhex32(p, n, b) == 0) {
        *k = RF_SIGV4_PAYLOAD_SHA256;
        s_hex(b, 32, sha);
    } else if (s_eq(p, n, S_UNSIGNED)) {
        *k = RF_SIGV4_PAYLOAD_UNSIGNED;
    } else if (s_eq(p, n, "STREAMING-AWS4-HMAC-SHA256-PAYLOAD")) {
        *k = RF_SIGV4_PAYLOAD_STREAMING;
    } else if (s_eq(p, n, "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER")) {
        *k = RF_SIGV4_PAYLOAD_STREAMING_TRAILER;
    } else if (s_eq(p, n, "STREAMING-UNSIGNED-PAYLOAD-TRAILER")) {
        *k = RF_SIGV4_PAYLOAD_UNSIGNED_TRAILER;
    } else if (s_eq(p, n, "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD") ||
               s_eq(p, n, "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD-TRAILER")) {
        return -2;
    } else {
        return -1;
    }
    return 0;
}

/* Reads the header-signed request's payload headers into out. */
static int s_payload_headers(const rf_sigv4_req_t *r, rf_sigv4_auth_t *out, const char **hp, size_t *hn,
                             const char **code, char *why, size_t wl)
{
    char show[48];
    int cnt;
    const rf_sigv4_header_t *h = s_header(r, "x-amz-content-sha256", &cnt);
    if (h == NULL)
        return s_fail(code, "InvalidRequest", why, wl,
                      "Missing required header for this request: x-amz-content-sha256");
    const char *v = h->value;
    size_t vn = h->value_len;
    s_trim(&v, &vn);
    int k = s_payload_kind(v, vn, &out->payload, out->payload_sha256);
    if (k == -2)
        return s_fail(code, "InvalidRequest", why, wl, "SigV4a (ECDSA) streaming payloads are not supported");
    if (k != 0)
        return s_fail(code, "InvalidArgument", why, wl,
                      "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-* or a sha256 digest, not '%s'",
                      s_show(show, sizeof(show), v, vn));
    *hp = v, *hn = vn;
    if ((h = s_header(r, "x-amz-decoded-content-length", &cnt)) != NULL) {
        v = h->value, vn = h->value_len;
        s_trim(&v, &vn);
        int64_t x = 0;
        if (vn == 0 || vn > 18)
            goto bad_len;
        for (size_t i = 0; i < vn; i++) {
            if (v[i] < '0' || v[i] > '9')
                goto bad_len;
            x = x * 10 + (v[i] - '0');
        }
        out->decoded_length = x;
    }
    if ((h = s_header(r, "x-amz-trailer", &cnt)) != NULL) {
        v = h->value, vn = h->value_len;
        s_trim(&v, &vn);
        if (vn >= sizeof(out->trailer) || vn < 15 || strncasecmp(v, "x-amz-checksum-", 15) != 0 ||
            rf_s3sum_kind(v, vn) < 0)
            return s_fail(code, "InvalidArgument", why, wl, "unsupported x-amz-trailer '%s'",
                          s_show(show, sizeof(show), v, vn));
        for (size_t i = 0; i < vn; i++)
            out->trailer[i] = (char)((v[i] >= 'A' && v[i] <= 'Z') ? v[i] + 32 : v[i]);
        out->trailer[vn] = '\0';
    }
    return 0;
bad_len:
    return s_fail(code, "InvalidArgument", why, wl, "x-amz-decoded-content-length is not a size: '%s'",
                  s_show(show, sizeof(show), v, vn));
}

/* The hex sha256 of the canonical request. */
static int s_canonical_hash(const rf_sigv4_req_t *r, s_work_t *w, const char *sh, size_t shl, bool presigned,
                            const char *payload, size_t payload_len, char hex[65], const char **code, char *why,
                            size_t wl)
{
    char show[48];
    s_hash_t h = {EVP_MD_CTX_new(), 0};
    unsigned char d[32];
    unsigned int dl = 0;
    int rc = -1;
    if (h.md == NULL || EVP_DigestInit_ex(h.md, EVP_sha256(), NULL) != 1) {
        rc = s_fail(code, "InternalError", why, wl, "cannot start a sha256 digest");
        goto done;
    }
    s_puts(&h, r->method);
    s_put(&h, "\n", 1);
    s_put(&h, w->path, w->path_len);
    s_put(&h, "\n", 1);
    qsort(w->p, w->np, sizeof(w->p[0]), s_cmp_param);
    bool first = true;
    for (size_t i = 0; i < w->np; i++) {
        if (presigned && s_eq(w->p[i].dn, w->p[i].dnl, "X-Amz-Signature"))
            continue;
        if (!first)
            s_put(&h, "&", 1);
        first = false;
        s_put(&h, w->p[i].en, w->p[i].enl);
        s_put(&h, "=", 1);
        s_put(&h, w->p[i].ev, w->p[i].evl);
    }
    s_put(&h, "\n", 1);
    for (size_t k = 0; k < w->nsh; k++) {
        bool seen = false;
        s_put(&h, w->sh[k].p, w->sh[k].n);
        s_put(&h, ":", 1);
        for (size_t i = 0; i < r->n_headers; i++) {
            const rf_sigv4_header_t *x = &r->headers[i];
            if (x->name == NULL || x->name_len != w->sh[k].n || strncasecmp(x->name, w->sh[k].p, x->name_len) != 0)
                continue;
            if (seen)
                s_put(&h, ",", 1);
            seen = true;
            s_put_value(&h, x->value, x->value != NULL ? x->value_len : 0);
        }
        if (!seen) {
            rc = s_fail(code, "SignatureDoesNotMatch", why, wl, "the signed header '%s' is not in the request",
                        s_show(show, sizeof(show), w->sh[k].p, w->sh[k].n));
            goto done;
        }
        s_put(&h, "\n", 1);
    }
    s_put(&h, "\n", 1);
    s_put(&h, sh, shl);
    s_put(&h, "\n", 1);
    s_put(&h, payload, payload_len);
    if (h.err || EVP_DigestFinal_ex(h.md, d, &dl) != 1 || dl != 32) {
        rc = s_fail(code, "InternalError", why, wl, "the sha256 digest failed");
        goto done;
    }
    s_hex(d, 32, hex);
    rc = 0;
done:
    EVP_MD_CTX_free(h.md);
    return rc;
}

/* kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" secret, date), region), "s3"), "aws4_request") */
static int s_signing_key(const char *secret, size_t sl, const char *date, const char *region, unsigned char key[32])
{
    unsigned char k[4 + RF_SIGV4_MAX_SECRET], a[32], b[32];
    int rc = -1;
    memcpy(k, "AWS4", 4);
    memcpy(k + 4, secret, sl);
    if (s_hmac(k, 4 + sl, date, strlen(date), a) == 0 && s_hmac(a, 32, region, strlen(region), b) == 0 &&
        s_hmac(b, 32, "s3", 2, a) == 0 && s_hmac(a, 32, "aws4_request", 12, key) == 0)
        rc = 0;
    OPENSSL_cleanse(k, sizeof(k));
    OPENSSL_cleanse(a, sizeof(a));
    OPENSSL_cleanse(b, sizeof(b));
    return rc;
}

/* What the request claims: the parts of its Authorization header or its
 * query parameters (pointers into the request or the work area). */
typedef struct {
    const char *cred, *sh, *sig, *date, *payload;
    size_t credl, shl, sigl, datel, payloadl;
} s_claim_t;

/* The Authorization header's claim, X-Amz-Date within the skew, and the
 * payload headers. */
static int s_header_claim(const rf_sigv4_req_t *r, const rf_sigv4_header_t *h_auth, rf_sigv4_auth_t *out, s_claim_t *cl,
                          const char **c, char *y, size_t wl)
{
    s_authz_t a;
    int cnt;
    int64_t t, d;
    if (s_parse_authorization(h_auth->value, h_auth->value_len, &a, c, y, wl) != 0)
        return -1;
    cl->cred = a.cred, cl->credl = a.credl, cl->sh = a.sh, cl->shl = a.shl, cl->sig = a.sig, cl->sigl = a.sigl;
    const rf_sigv4_header_t *h_date = s_header(r, "x-amz-date", &cnt);
    if (h_date == NULL)
        return s_fail(c, "AccessDenied", y, wl, "AWS authentication requires a valid Date or x-amz-date header");
    cl->date = h_date->value, cl->datel = h_date->value_len;
    s_trim(&cl->date, &cl->datel);
    if (s_parse_amz_date(cl->date, cl->datel, &t) != 0)
        return s_fail(c, "AccessDenied", y, wl, "AWS authentication requires a valid Date or x-amz-date header");
    if (__builtin_sub_overflow(r->now, t, &d) || d > RF_SIGV4_MAX_SKEW || d < -RF_SIGV4_MAX_SKEW)
        return s_fail(c, "RequestTimeTooSkewed", y, wl,
                      "The difference between the request time (%.16s) and the current time is too large", cl->date);
    return s_payload_headers(r, out, &cl->payload, &cl->payloadl, c, y, wl);
}

/* The presigned query's claim: every parameter there, the URL neither
 * expired nor from the future, the payload hash. */
static int s_query_claim(const rf_sigv4_req_t *r, const s_work_t *w, rf_sigv4_auth_t *out, s_claim_t *cl,
                         const char **c, char *y, size_t wl)
{
    static const char *const bad = "AuthorizationQueryParametersError";
    char show[48];
    int cnt;
    const s_param_t *alg = s_param(w, "X-Amz-Algorithm", &cnt), *cred = s_param(w, "X-Amz-Credential", &cnt),
                    *date = s_param(w, "X-Amz-Date", &cnt), *exp = s_param(w, "X-Amz-Expires", &cnt),
                    *sh = s_param(w, "X-Amz-SignedHeaders", &cnt), *sig = s_param(w, "X-Amz-Signature", &cnt),
                    *csha = s_param(w, "X-Amz-Content-Sha256", &cnt);
    int64_t t, d;
    unsigned expires = 0;
    if (alg == NULL || cred == NULL || sig == NULL || date == NULL || sh == NULL || exp == NULL)
        return s_fail(c, bad, y, wl,
                      "Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, "
                      "X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters.");
    if (!s_eq(alg->dv, alg->dvl, S_ALGO))
        return s_fail(c, bad, y, wl, "X-Amz-Algorithm only supports \"AWS4-HMAC-SHA256\"");
    cl->cred = cred->dv, cl->credl = cred->dvl, cl->sh = sh->dv, cl->shl = sh->dvl, cl->sig = sig->dv;
    cl->sigl = sig->dvl, cl->date = date->dv, cl->datel = date->dvl;
    if (s_parse_amz_date(cl->date, cl->datel, &t) != 0)
        return s_fail(c, bad, y, wl, "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"");
    if (exp->dvl == 0 || exp->dvl > 7 || s_digits(exp->dv, exp->dvl, &expires) != 0 || expires < 1 ||
        expires > RF_SIGV4_MAX_EXPIRES)
        return s_fail(c, bad, y, wl, "X-Amz-Expires must be a number of seconds from 1 to 604800 (a week), not '%s'",
                      s_show(show, sizeof(show), exp->dv, exp->dvl));
    bool far = __builtin_sub_overflow(r->now, t, &d); /* d = now - X-Amz-Date */
    if ((far && r->now > 0) || (!far && d > (int64_t)expires))
        return s_fail(c, "AccessDenied", y, wl, "Request has expired (X-Amz-Expires is %u s)", expires);
    if (far || d < -RF_SIGV4_MAX_SKEW)
        return s_fail(c, "AccessDenied", y, wl, "Request is not valid yet (X-Amz-Date is in the future)");
    out->presigned = true;
    cl->payload = S_UNSIGNED, cl->payloadl = strlen(S_UNSIGNED);
    if (csha != NULL) {
        cl->payload = csha->dv, cl->payloadl = csha->dvl;
        if (s_payload_kind(cl->payload, cl->payloadl, &out->payload, out->payload_sha256) != 0 ||
            (out->payload != RF_SIGV4_PAYLOAD_SHA256 && out->payload != RF_SIGV4_PAYLOAD_UNSIGNED))
            return s_fail(c, bad, y, wl, "X-Amz-Content-Sha256 must be UNSIGNED-PAYLOAD or a sha256 digest");
    }
    return 0;
}

/* Every x-amz-* header must be signed, as S3 requires (x-amz-content-sha256
 * excepted: the canonical request holds it anyway). */
static int s_check_unsigned(const rf_sigv4_req_t *r, const s_work_t *w, const char **c, char *y, size_t wl)
{
    char show[48];
    for (size_t i = 0; i < r->n_headers; i++) {
        const rf_sigv4_header_t *x = &r->headers[i];
        if (x->name == NULL || x->name_len < 6 || strncasecmp(x->name, "x-amz-", 6) != 0 ||
            s_ieq(x->name, x->name_len, "x-amz-content-sha256"))
            continue;
        bool found = false;
        for (size_t k = 0; k < w->nsh && !found; k++)
            found = w->sh[k].n == x->name_len && strncasecmp(w->sh[k].p, x->name, x->name_len) == 0;
        if (!found)
            return s_fail(c, "AccessDenied", y, wl,
                          "There were headers present in the request which were not signed: %s",
                          s_show(show, sizeof(show), x->name, x->name_len));
    }
    return 0;
}

/* The limits, and security headers and parameters given at most once. */
static int s_check_request(const rf_sigv4_req_t *r, const char **c, char *y, size_t wl)
{
    static const char *const once[] = {"authorization", "x-amz-date", "x-amz-content-sha256",
                                       "x-amz-decoded-content-length", "x-amz-trailer"};
    int cnt;
    size_t ml = r->method != NULL ? strnlen(r->method, 17) : 0;
    if (ml == 0 || ml > 16)
        return s_fail(c, "InvalidArgument", y, wl, "the method is empty or longer than 16 bytes");
    for (size_t i = 0; i < ml; i++)
        if (r->method[i] < 'A' || r->method[i] > 'Z')
            return s_fail(c, "InvalidArgument", y, wl, "the method has a character no method has");
    if (r->n_headers > RF_SIGV4_MAX_HEADERS)
        return s_fail(c, "InvalidArgument", y, wl, "more than %d request headers", RF_SIGV4_MAX_HEADERS);
    if (r->query_len > RF_SIGV4_MAX_QUERY)
        return s_fail(c, "InvalidArgument", y, wl, "the query is longer than %d bytes", RF_SIGV4_MAX_QUERY);
    for (size_t i = 0; i < sizeof(once) / sizeof(once[0]); i++) {
        s_header(r, once[i], &cnt);
        if (cnt > 1)
            return s_fail(c, "InvalidArgument", y, wl, "the %s header is given %d times", once[i], cnt);
    }
    return 0;
}

static int s_check_params(const s_work_t *w, const char **c, char *y, size_t wl)
{
    static const char *const once[] = {"X-Amz-Algorithm",     "X-Amz-Credential",    "X-Amz-Date",
                                       "X-Amz-Expires",       "X-Amz-SignedHeaders", "X-Amz-Signature",
                                       "X-Amz-Content-Sha256"};
    int cnt;
    for (size_t i = 0; i < sizeof(once) / sizeof(once[0]); i++) {
        s_param(w, once[i], &cnt);
        if (cnt > 1)
            return s_fail(c, "AuthorizationQueryParametersError", y, wl, "the %s parameter is given %d times", once[i],
                          cnt);
    }
    return 0;
}

int rf_sigv4_verify(const rf_sigv4_req_t *r, rf_sigv4_secret_fn *secret, void *arg, rf_sigv4_auth_t *out,
                    const char **code, char *why, size_t why_len)
{
    const char **c = code;
    char *y = why, show[48], creq[65], sts[256];
    size_t wl = why_len;
    s_work_t *w = NULL;
    s_claim_t cl = {0};
    unsigned char given[32], mine[32];
    int rc = -1, cnt;
    const char *err = NULL;

    memset(out, 0, sizeof(*out));
    out->decoded_length = -1;
    out->payload = RF_SIGV4_PAYLOAD_UNSIGNED;
    if (s_check_request(r, c, y, wl) != 0)
        return -1;
    if ((w = malloc(sizeof(*w))) == NULL)
        return s_fail(c, "InternalError", y, wl, "out of memory");
    if (s_parse_query(r->query, r->query_len, w, c, y, wl) != 0 || s_check_params(w, c, y, wl) != 0)
        goto done;
    const rf_sigv4_header_t *h_auth = s_header(r, "authorization", &cnt);
    bool presigned = s_param(w, "X-Amz-Algorithm", &cnt) != NULL || s_param(w, "X-Amz-Signature", &cnt) != NULL ||
                     s_param(w, "X-Amz-Credential", &cnt) != NULL;
    if (h_auth != NULL && presigned) {
        s_fail(c, "InvalidArgument", y, wl,
               "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter or the Authorization "
               "header should be specified");
        goto done;
    }
    if (h_auth == NULL && !presigned) {
        if (s_param(w, "AWSAccessKeyId", &cnt) != NULL && s_param(w, "Signature", &cnt) != NULL) {
            s_fail(c, "InvalidRequest", y, wl,
                   "The authorization mechanism you have provided is not supported. Please use AWS4-HMAC-SHA256.");
            goto done;
        }
        rc = 1; /* anonymous */
        goto done;
    }
    const char *malformed = h_auth != NULL ? "AuthorizationHeaderMalformed" : "AuthorizationQueryParametersError";
    int claimed =
        h_auth != NULL ? s_header_claim(r, h_auth, out, &cl, c, y, wl) : s_query_claim(r, w, out, &cl, c, y, wl);
    if (claimed != 0)
        goto done;
    memcpy(out->amz_date, cl.date, 16); /* both claims checked its form */
    out->amz_date[16] = '\0';
    if (s_parse_credential(cl.cred, cl.credl, out, &err) != 0) {
        s_fail(c, malformed, y, wl, "%s", err);
        goto done;
    }
    if (memcmp(out->date, out->amz_date, 8) != 0) {
        s_fail(c, malformed, y, wl, "Invalid credential date '%s'. Date is not the same as X-Amz-Date '%s'.", out->date,
               out->amz_date);
        goto done;
    }
    if (s_parse_signed_headers(cl.sh, cl.shl, w, &err) != 0) {
        s_fail(c, malformed, y, wl, "%s", err);
        goto done;
    }
    if (s_unhex32(cl.sig, cl.sigl, given) != 0) {
        s_fail(c, malformed, y, wl, "the Signature must be 64 hex digits");
        goto done;
    }
    if (s_check_unsigned(r, w, c, y, wl) != 0)
        goto done;

    const char *s = secret != NULL ? secret(arg, out->access_key) : NULL;
    if (s == NULL) {
        s_fail(c, "InvalidAccessKeyId", y, wl,
               "The AWS Access Key Id you provided does not exist in our records ('%s')",
               s_show(show, sizeof(show), out->access_key, strlen(out->access_key)));
        goto done;
    }
    size_t sl = strnlen(s, RF_SIGV4_MAX_SECRET + 1);
    if (sl > RF_SIGV4_MAX_SECRET) {
        s_fail(c, "InternalError", y, wl, "the secret key of '%s' is longer than %d bytes",
               s_show(show, sizeof(show), out->access_key, strlen(out->access_key)), RF_SIGV4_MAX_SECRET);
        goto done;
    }
    if (s_canon_path(r->path, r->path_len, w, c, y, wl) != 0 ||
        s_canonical_hash(r, w, cl.sh, cl.shl, out->presigned, cl.payload, cl.payloadl, creq, c, y, wl) != 0)
        goto done;
    int stl = snprintf(sts, sizeof(sts), S_ALGO "\n%s\n%s/%s/s3/aws4_request\n%s", out->amz_date, out->date,
                       out->region, creq);
    if (stl < 0 || (size_t)stl >= sizeof(sts) || s_signing_key(s, sl, out->date, out->region, out->signing_key) != 0 ||
        s_hmac(out->signing_key, 32, sts, (size_t)stl, mine) != 0) {
        s_fail(c, "InternalError", y, wl, "cannot compute the signature");
        goto done;
    }
    if (CRYPTO_memcmp(mine, given, 32) != 0) {
        s_fail(c, "SignatureDoesNotMatch", y, wl,
               "The request signature we calculated does not match the signature you provided (canonical request "
               "sha256 %s)",
               creq);
        goto done;
    }
    s_hex(mine, 32, out->seed_signature);
    rc = 0;
done:
    if (rc != 0) {
        OPENSSL_cleanse(out->signing_key, sizeof(out->signing_key));
        out->seed_signature[0] = '\0';
    }
    free(w);
    return rc;
}

/* ------------------------------------------------------------------ */
/* checksums                                                            */

/* CRC-64/NVME: reflected polynomial 0x9a6c9329ac4bc9b5 (0xad93d23594c93659
 * unreflected), init and xorout ~0; generated by the usual bitwise loop. */
// clang-format off
static const uint64_t s_crc64_tab[256] = {
    0x0000000000000000ULL, 0x7f6ef0c830358979ULL, 0xfedde190606b12f2ULL, 0x81b31158505e9b8bULL,
    0xc962e5739841b68fULL, 0xb60c15bba8743ff6ULL, 0x37bf04e3f82aa47dULL, 0x48d1f42bc81f2d04ULL,
    0xa61cecb46814fe75ULL, 0xd9721c7c5821770cULL, 0x58c10d24087fec87ULL, 0x27affdec384a65feULL,
    0x6f7e09c7f05548faULL, 0x1010f90fc060c183ULL, 0x91a3e857903e5a08ULL, 0xeecd189fa00bd371ULL,
    0x78e0ff3b88be6f81ULL, 0x078e0ff3b88be6f8ULL, 0x863d1eabe8d57d73ULL, 0xf953ee63d8e0f40aULL,
    0xb1821a4810ffd90eULL, 0xceecea8020ca5077ULL, 0x4f5ffbd87094cbfcULL, 0x30310b1040a14285ULL,
    0xdefc138fe0aa91f4ULL, 0xa192e347d09f188dULL, 0x2021f21f80c18306ULL, 0x5f4f02d7b0f40a7fULL,
    0x179ef6fc78eb277bULL, 0x68f0063448deae02ULL, 0xe943176c18803589ULL, 0x962de7a428b5bcf0ULL,
    0xf1c1fe77117cdf02ULL, 0x8eaf0ebf2149567bULL, 0x0f1c1fe77117cdf0ULL, 0x7072ef2f41224489ULL,
    0x38a31b04893d698dULL, 0x47cdebccb908e0f4ULL, 0xc67efa94e9567b7fULL, 0xb9100a5cd963f206ULL,
    0x57dd12c379682177ULL, 0x28b3e20b495da80eULL, 0xa900f35319033385ULL, 0xd66e039b2936bafcULL,
    0x9ebff7b0e12997f8ULL, 0xe1d10778d11c1e81ULL, 0x606216208142850aULL, 0x1f0ce6e8b1770c73ULL,
    0x8921014c99c2b083ULL, 0xf64ff184a9f739faULL, 0x77fce0dcf9a9a271ULL, 0x08921014c99c2b08ULL,
    0x4043e43f0183060cULL, 0x3f2d14f731b68f75ULL, 0xbe9e05af61e814feULL, 0xc1f0f56751dd9d87ULL,
    0x2f3dedf8f1d64ef6ULL, 0x50531d30c1e3c78fULL, 0xd1e00c6891bd5c04ULL, 0xae8efca0a188d57dULL,
    0xe65f088b6997f879ULL, 0x9931f84359a27100ULL, 0x1882e91b09fcea8bULL, 0x67ec19d339c963f2ULL,
    0xd75adabd7a6e2d6fULL, 0xa8342a754a5ba416ULL, 0x29873b2d1a053f9dULL, 0x56e9cbe52a30b6e4ULL,
    0x1e383fcee22f9be0ULL, 0x6156cf06d21a1299ULL, 0xe0e5de5e82448912ULL, 0x9f8b2e96b271006bULL,
    0x71463609127ad31aULL, 0x0e28c6c1224f5a63ULL, 0x8f9bd7997211c1e8ULL, 0xf0f5275142244891ULL,
    0xb824d37a8a3b6595ULL, 0xc74a23b2ba0eececULL, 0x46f932eaea507767ULL, 0x3997c222da65fe1eULL,
    0xafba2586f2d042eeULL, 0xd0d4d54ec2e5cb97ULL, 0x5167c41692bb501cULL, 0x2e0934dea28ed965ULL,
    0x66d8c0f56a91f461ULL, 0x19b6303d5aa47d18ULL, 0x980521650afae693ULL, 0xe76bd1ad3acf6feaULL,
    0x09a6c9329ac4bc9bULL, 0x76c839faaaf135e2ULL, 0xf77b28a2faafae69ULL, 0x8815d86aca9a2710ULL,
    0xc0c42c4102850a14ULL, 0xbfaadc8932b0836dULL, 0x3e19cdd162ee18e6ULL, 0x41773d1952db919fULL,
    0x269b24ca6b12f26dULL, 0x59f5d4025b277b14ULL, 0xd846c55a0b79e09fULL, 0xa72835923b4c69e6ULL,
    0xeff9c1b9f35344e2ULL, 0x90973171c366cd9bULL, 0x1124202993385610ULL, 0x6e4ad0e1a30ddf69ULL,
    0x8087c87e03060c18ULL, 0xffe938b633338561ULL, 0x7e5a29ee636d1eeaULL, 0x0134d92653589793ULL,
    0x49e52d0d9b47ba97ULL, 0x368bddc5ab7233eeULL, 0xb738cc9dfb2ca865ULL, 0xc8563c55cb19211cULL,
    0x5e7bdbf1e3ac9decULL, 0x21152b39d3991495ULL, 0xa0a63a6183c78f1eULL, 0xdfc8caa9b3f20667ULL,
    0x97193e827bed2b63ULL, 0xe877ce4a4bd8a21aULL, 0x69c4df121b863991ULL, 0x16aa2fda2bb3b0e8ULL,
    0xf86737458bb86399ULL, 0x8709c78dbb8deae0ULL, 0x06bad6d5ebd3716bULL, 0x79d4261ddbe6f812ULL,
    0x3105d23613f9d516ULL, 0x4e6b22fe23cc5c6fULL, 0xcfd833a67392c7e4ULL, 0xb0b6c36e43a74e9dULL,
    0x9a6c9329ac4bc9b5ULL, 0xe50263e19c7e40ccULL, 0x64b172b9cc20db47ULL, 0x1bdf8271fc15523eULL,
    0x530e765a340a7f3aULL, 0x2c608692043ff643ULL, 0xadd397ca54616dc8ULL, 0xd2bd67026454e4b1ULL,
    0x3c707f9dc45f37c0ULL, 0x431e8f55f46abeb9ULL, 0xc2ad9e0da4342532ULL, 0xbdc36ec59401ac4bULL,
    0xf5129aee5c1e814fULL, 0x8a7c6a266c2b0836ULL, 0x0bcf7b7e3c7593bdULL, 0x74a18bb60c401ac4ULL,
    0xe28c6c1224f5a634ULL, 0x9de29cda14c02f4dULL, 0x1c518d82449eb4c6ULL, 0x633f7d4a74ab3dbfULL,
    0x2bee8961bcb410bbULL, 0x548079a98c8199c2ULL, 0xd53368f1dcdf0249ULL, 0xaa5d9839ecea8b30ULL,
    0x449080a64ce15841ULL, 0x3bfe706e7cd4d138ULL, 0xba4d61362c8a4ab3ULL, 0xc52391fe1cbfc3caULL,
    0x8df265d5d4a0eeceULL, 0xf29c951de49567b7ULL, 0x732f8445b4cbfc3cULL, 0x0c41748d84fe7545ULL,
    0x6bad6d5ebd3716b7ULL, 0x14c39d968d029fceULL, 0x95708ccedd5c0445ULL, 0xea1e7c06ed698d3cULL,
    0xa2cf882d2576a038ULL, 0xdda178e515432941ULL, 0x5c1269bd451db2caULL, 0x237c997575283bb3ULL,
    0xcdb181ead523e8c2ULL, 0xb2df7122e51661bbULL, 0x336c607ab548fa30ULL, 0x4c0290b2857d7349ULL,
    0x04d364994d625e4dULL, 0x7bbd94517d57d734ULL, 0xfa0e85092d094cbfULL, 0x856075c11d3cc5c6ULL,
    0x134d926535897936ULL, 0x6c2362ad05bcf04fULL, 0xed9073f555e26bc4ULL, 0x92fe833d65d7e2bdULL,
    0xda2f7716adc8cfb9ULL, 0xa54187de9dfd46c0ULL, 0x24f29686cda3dd4bULL, 0x5b9c664efd965432ULL,
    0xb5517ed15d9d8743ULL, 0xca3f8e196da80e3aULL, 0x4b8c9f413df695b1ULL, 0x34e26f890dc31cc8ULL,
    0x7c339ba2c5dc31ccULL, 0x035d6b6af5e9b8b5ULL, 0x82ee7a32a5b7233eULL, 0xfd808afa9582aa47ULL,
    0x4d364994d625e4daULL, 0x3258b95ce6106da3ULL, 0xb3eba804b64ef628ULL, 0xcc8558cc867b7f51ULL,
    0x8454ace74e645255ULL, 0xfb3a5c2f7e51db2cULL, 0x7a894d772e0f40a7ULL, 0x05e7bdbf1e3ac9deULL,
    0xeb2aa520be311aafULL, 0x944455e88e0493d6ULL, 0x15f744b0de5a085dULL, 0x6a99b478ee6f8124ULL,
    0x224840532670ac20ULL, 0x5d26b09b16452559ULL, 0xdc95a1c3461bbed2ULL, 0xa3fb510b762e37abULL,
    0x35d6b6af5e9b8b5bULL, 0x4ab846676eae0222ULL, 0xcb0b573f3ef099a9ULL, 0xb465a7f70ec510d0ULL,
    0xfcb453dcc6da3dd4ULL, 0x83daa314f6efb4adULL, 0x0269b24ca6b12f26ULL, 0x7d0742849684a65fULL,
    0x93ca5a1b368f752eULL, 0xeca4aad306bafc57ULL, 0x6d17bb8b56e467dcULL, 0x12794b4366d1eea5ULL,
    0x5aa8bf68aecec3a1ULL, 0x25c64fa09efb4ad8ULL, 0xa4755ef8cea5d153ULL, 0xdb1bae30fe90582aULL,
    0xbcf7b7e3c7593bd8ULL, 0xc399472bf76cb2a1ULL, 0x422a5673a732292aULL, 0x3d44a6bb9707a053ULL,
    0x759552905f188d57ULL, 0x0afba2586f2d042eULL, 0x8b48b3003f739fa5ULL, 0xf42643c80f4616dcULL,
    0x1aeb5b57af4dc5adULL, 0x6585ab9f9f784cd4ULL, 0xe436bac7cf26d75fULL, 0x9b584a0fff135e26ULL,
    0xd389be24370c7322ULL, 0xace74eec0739fa5bULL, 0x2d545fb4576761d0ULL, 0x523aaf7c6752e8a9ULL,
    0xc41748d84fe75459ULL, 0xbb79b8107fd2dd20ULL, 0x3acaa9482f8c46abULL, 0x45a459801fb9cfd2ULL,
    0x0d75adabd7a6e2d6ULL, 0x721b5d63e7936bafULL, 0xf3a84c3bb7cdf024ULL, 0x8cc6bcf387f8795dULL,
    0x620ba46c27f3aa2cULL, 0x1d6554a417c62355ULL, 0x9cd645fc4798b8deULL, 0xe3b8b53477ad31a7ULL,
    0xab69411fbfb21ca3ULL, 0xd407b1d78f8795daULL, 0x55b4a08fdfd90e51ULL, 0x2ada5047efec8728ULL,
};
// clang-format on

static const char *const s_sum_names[] = {"crc32", "crc32c", "crc64nvme", "sha1", "sha256"};

int rf_s3sum_kind(const char *name, size_t len)
{
    if (name == NULL)
        return -1;
    if (len >= 15 && strncasecmp(name, "x-amz-checksum-", 15) == 0)
        name += 15, len -= 15;
    for (int k = 0; k < (int)(sizeof(s_sum_names) / sizeof(s_sum_names[0])); k++)
        if (s_ieq(name, len, s_sum_names[k]))
            return k;
    return -1;
}

const char *rf_s3sum_name(int kind)
{
    return kind >= 0 && kind < (int)(sizeof(s_sum_names) / sizeof(s_sum_names[0])) ? s_sum_names[kind] : "";
}

int rf_s3sum_init(rf_s3sum_t *s, int kind)
{
    memset(s, 0, sizeof(*s));
    s->kind = kind;
    switch (kind) {
    case RF_S3SUM_CRC32: s->crc = 0; return 0;
    case RF_S3SUM_CRC32C: s->crc = 0xffffffffu; return 0;
    case RF_S3SUM_CRC64NVME: s->crc = ~(uint64_t)0; return 0;
    case RF_S3SUM_SHA1:
    case RF_S3SUM_SHA256:
        if ((s->md = EVP_MD_CTX_new()) == NULL)
            break;
        if (EVP_DigestInit_ex(s->md, kind == RF_S3SUM_SHA1 ? EVP_sha1() : EVP_sha256(), NULL) == 1)
            return 0;
        break;
    default: break;
    }
    rf_s3sum_clear(s);
    s->kind = -1;
    return -1;
}

void rf_s3sum_update(rf_s3sum_t *s, const void *p, size_t n)
{
    const unsigned char *b = p;
    if (n == 0 || s->failed)
        return;
    switch (s->kind) {
    case RF_S3SUM_CRC32: s->crc = crc32_z((uLong)s->crc, b, n); break;
    case RF_S3SUM_CRC32C:
        while (n > 0) {
            size_t take = n > (1u << 30) ? (1u << 30) : n;
            s->crc = crc32_iscsi((unsigned char *)b, (int)take, (unsigned int)s->crc);
            b += take, n -= take;
        }
        break;
    case RF_S3SUM_CRC64NVME: {
        uint64_t crc = s->crc;
        for (size_t i = 0; i < n; i++)
            crc = s_crc64_tab[(crc ^ b[i]) & 0xff] ^ (crc >> 8);
        s->crc = crc;
        break;
    }
    case RF_S3SUM_SHA1:
    case RF_S3SUM_SHA256:
        if (s->md == NULL || EVP_DigestUpdate(s->md, b, n) != 1)
            s->failed = true;
        break;
    default: s->failed = true; break;
    }
}

static void s_b64(const unsigned char *in, size_t n, char *out)
{
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0) | (i + 2 < n ? in[i + 2] : 0);
        out[o++] = t[v >> 18 & 63];
        out[o++] = t[v >> 12 & 63];
        out[o++] = i + 1 < n ? t[v >> 6 & 63] : '=';
        out[o++] = i + 2 < n ? t[v & 63] : '=';
    }
    out[o] = '\0';
}

int rf_s3sum_final_b64(rf_s3sum_t *s, char out[64])
{
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned int dl = 0;
    out[0] = '\0';
    if (s->failed)
        return -1;
    switch (s->kind) {
    case RF_S3SUM_CRC32:
    case RF_S3SUM_CRC32C: {
        uint32_t v = (uint32_t)s->crc ^ (s->kind == RF_S3SUM_CRC32C ? 0xffffffffu : 0);
        for (int i = 0; i < 4; i++)
            d[i] = (unsigned char)(v >> (24 - 8 * i));
        dl = 4;
        break;
    }
    case RF_S3SUM_CRC64NVME: {
        uint64_t v = ~s->crc;
        for (int i = 0; i < 8; i++)
            d[i] = (unsigned char)(v >> (56 - 8 * i));
        dl = 8;
        break;
    }
    case RF_S3SUM_SHA1:
    case RF_S3SUM_SHA256:
        if (s->md == NULL || EVP_DigestFinal_ex(s->md, d, &dl) != 1 || dl > 32) {
            s->failed = true;
            return -1;
        }
        break;
    default: return -1;
    }
    s_b64(d, dl, out);
    s->failed = true; /* finished: a later update or final is refused */
    return 0;
}

void rf_s3sum_clear(rf_s3sum_t *s)
{
    if (s == NULL)
        return;
    EVP_MD_CTX_free(s->md);
    s->md = NULL;
}

/* ------------------------------------------------------------------ */
/* aws-chunked                                                          */

enum { ST_HDR, ST_DATA, ST_DATA_CR, ST_DATA_LF, ST_TRAILER, ST_TRAILER_END, ST_DONE, ST_ERROR };

struct rf_awschunk_t {
    bool sign;    /* chunk signatures */
    bool trailer; /* a trailer section after the final chunk */
    unsigned char key[32];
    char amz_date[17];
    char scope[96]; /* DATE/REGION/s3/aws4_request */
    char prev[65];  /* the previous signature, lower-case hex */
    size_t max_chunk;
    int state;
    char line[RF_AWSCHUNK_MAX_LINE];
    size_t line_len;
    uint64_t size, got; /* the current chunk */
    unsigned char sig[32];
    char *buf; /* a signed chunk until it verifies */
    size_t cap;
    int64_t decoded_length;
    uint64_t announced, total;
    char tname[48]; /* the trailer x-amz-trailer names, "" none */
    int kind;
    rf_s3sum_t sum;
    char tlines[RF_AWSCHUNK_MAX_TRAILER]; /* trailer lines as signed, each with "\n" */
    size_t tlen, tbytes;
    char tvalue[72];
    bool tseen, blank_skipped;
    const char *err_code;
    char err_why[200];
};

__attribute__((format(printf, 3, 4))) static int s_err(rf_awschunk_t *self, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(self->err_why, sizeof(self->err_why), fmt, ap);
    va_end(ap);
    self->err_code = code;
    self->state = ST_ERROR;
    return -1;
}

static int s_report(const rf_awschunk_t *self, const char **code, char *why, size_t why_len)
{
    return s_fail(code, self->err_code, why, why_len, "%s", self->err_why);
}

rf_awschunk_t *rf_awschunk_new(const rf_sigv4_auth_t *auth, size_t max_chunk)
{
    if (auth == NULL ||
        (auth->payload != RF_SIGV4_PAYLOAD_STREAMING && auth->payload != RF_SIGV4_PAYLOAD_STREAMING_TRAILER &&
         auth->payload != RF_SIGV4_PAYLOAD_UNSIGNED_TRAILER))
        return NULL;
    rf_awschunk_t *self = calloc(1, sizeof(*self));
    if (self == NULL)
        return NULL;
    self->sign = auth->payload != RF_SIGV4_PAYLOAD_UNSIGNED_TRAILER;
    self->trailer = auth->payload != RF_SIGV4_PAYLOAD_STREAMING;
    self->max_chunk = max_chunk > 0 ? max_chunk : RF_AWSCHUNK_DEFAULT_MAX;
    self->decoded_length = auth->decoded_length;
    self->kind = -1;
    memcpy(self->key, auth->signing_key, 32);
    size_t dl = strnlen(auth->amz_date, sizeof(auth->amz_date)), pl = strnlen(auth->seed_signature, 65),
           tl = strnlen(auth->trailer, sizeof(auth->trailer));
    int n = snprintf(self->scope, sizeof(self->scope), "%.8s/%.63s/s3/aws4_request", auth->date, auth->region);
    if (dl != 16 || (self->sign && pl != 64) || tl >= sizeof(auth->trailer) || n < 0 ||
        (size_t)n >= sizeof(self->scope))
        goto fail;
    memcpy(self->amz_date, auth->amz_date, 17);
    memcpy(self->prev, auth->seed_signature, pl);
    self->prev[pl] = '\0';
    if (self->trailer && tl > 0) {
        memcpy(self->tname, auth->trailer, tl + 1);
        if ((self->kind = rf_s3sum_kind(self->tname, tl)) < 0 || rf_s3sum_init(&self->sum, self->kind) != 0)
            goto fail;
    }
    return self;
fail:
    rf_awschunk_destroy(&self);
    return NULL;
}

void rf_awschunk_destroy(rf_awschunk_t **self_p)
{
    if (self_p == NULL || *self_p == NULL)
        return;
    rf_awschunk_t *self = *self_p;
    rf_s3sum_clear(&self->sum);
    free(self->buf);
    OPENSSL_cleanse(self->key, sizeof(self->key));
    free(self);
    *self_p = NULL;
}

uint64_t rf_awschunk_total(const rf_awschunk_t *self)
{
    return self->total;
}

/* Checks a signature: want must be HMAC(key, KIND \n DATE \n SCOPE \n
 * PREVIOUS \n tail); on success it becomes the previous signature. 0, -2
 * when it does not match, -1 on a digest failure (error set). */
static int s_check_sig(rf_awschunk_t *self, const char *kind, const char *tail, const unsigned char want[32])
{
    char sts[512];
    unsigned char mac[32];
    int n = snprintf(sts, sizeof(sts), "%s\n%s\n%s\n%s\n%s", kind, self->amz_date, self->scope, self->prev, tail);
    if (n < 0 || (size_t)n >= sizeof(sts) || s_hmac(self->key, 32, sts, (size_t)n, mac) != 0)
        return s_err(self, "InternalError", "cannot compute a chunk signature");
    if (CRYPTO_memcmp(mac, want, 32) != 0)
        return -2;
    s_hex(mac, 32, self->prev);
    return 0;
}

static int s_check_chunk(rf_awschunk_t *self, const char *data, size_t n)
{
    unsigned char d[32];
    char tail[140];
    if (s_sha256(data, n, d) != 0)
        return s_err(self, "InternalError", "the sha256 digest failed");
    memcpy(tail, S_EMPTY_SHA256 "\n", 65);
    s_hex(d, 32, tail + 65);
    int rc = s_check_sig(self, "AWS4-HMAC-SHA256-PAYLOAD", tail, self->sig);
    if (rc == -2)
        return s_err(self, "SignatureDoesNotMatch",
                     "the chunk signature does not match (chunk of %zu bytes after %llu payload bytes)", n,
                     (unsigned long long)self->total);
    return rc;
}

/* Hands n verified payload bytes to out, and to the trailer checksum. */
static int s_emit(rf_awschunk_t *self, const char *p, size_t n, int (*out)(void *, const char *, size_t), void *arg)
{
    if (n == 0)
        return 0;
    if (self->kind >= 0)
        rf_s3sum_update(&self->sum, p, n);
    self->total += n;
    if (out != NULL && out(arg, p, n) != 0)
        return s_err(self, "InternalError", "the decoded payload could not be written");
    return 0;
}

/* A chunk header line: "HEX;chunk-signature=SIG" (signed) or "HEX[;ext]". */
static int s_on_header(rf_awschunk_t *self, const char *l, size_t n)
{
    char show[48];
    uint64_t size = 0;
    size_t i = 0;
    while (i < n && s_hexval((unsigned char)l[i]) >= 0) {
        if (i == 16)
            return s_err(self, "InvalidChunkSizeError", "chunk size '%s' is too large", s_show(show, 48, l, n));
        size = size << 4 | (uint64_t)s_hexval((unsigned char)l[i]);
        i++;
    }
    if (i == 0)
        return s_err(self, "InvalidRequest", "malformed chunk header '%s'", s_show(show, sizeof(show), l, n));
    if (self->sign) {
        static const char ext[] = ";chunk-signature=";
        if (n - i != sizeof(ext) - 1 + 64 || memcmp(l + i, ext, sizeof(ext) - 1) != 0 ||
            s_unhex32(l + i + sizeof(ext) - 1, 64, self->sig) != 0)
            return s_err(self, "InvalidRequest", "a signed chunk header must be HEX;chunk-signature=SIG, not '%s'",
                         s_show(show, sizeof(show), l, n));
    } else if (i < n && l[i] != ';') {
        return s_err(self, "InvalidRequest", "malformed chunk header '%s'", s_show(show, sizeof(show), l, n));
    }
    if (size > self->max_chunk)
        return s_err(self, "InvalidChunkSizeError", "a chunk of %llu bytes is larger than the limit, %zu",
                     (unsigned long long)size, self->max_chunk);
    if (self->decoded_length >= 0 && self->announced + size > (uint64_t)self->decoded_length)
        return s_err(self, "InvalidRequest", "the chunks hold more than x-amz-decoded-content-length (%lld) bytes",
                     (long long)self->decoded_length);
    self->announced += size;
    self->size = size, self->got = 0;
    if (size > 0) {
        if (self->sign && size > self->cap) {
            size_t cap = self->cap * 2 > size ? self->cap * 2 : size;
            if (cap > self->max_chunk)
                cap = self->max_chunk;
            char *b = realloc(self->buf, cap);
            if (b == NULL)
                return s_err(self, "InternalError", "out of memory for a chunk of %llu bytes",
                             (unsigned long long)size);
            self->buf = b, self->cap = cap;
        }
        self->state = ST_DATA;
        return 0;
    }
    /* the final, empty chunk */
    if (self->decoded_length >= 0 && self->announced != (uint64_t)self->decoded_length)
        return s_err(self, "IncompleteBody", "the chunks hold %llu bytes, x-amz-decoded-content-length says %lld",
                     (unsigned long long)self->announced, (long long)self->decoded_length);
    if (self->sign && s_check_chunk(self, "", 0) != 0)
        return -1;
    self->state = self->trailer ? ST_TRAILER : ST_DATA_CR;
    return 0;
}

/* The end of the trailer section: the declared trailer must have come and
 * match the data. */
static int s_end_trailer(rf_awschunk_t *self)
{
    char mine[64];
    if (self->tname[0] != '\0') {
        if (!self->tseen)
            return s_err(self, "MalformedTrailerError", "x-amz-trailer declares %s but the body has no such trailer",
                         self->tname);
        if (rf_s3sum_final_b64(&self->sum, mine) != 0)
            return s_err(self, "InternalError", "the %s checksum failed", rf_s3sum_name(self->kind));
        if (strcmp(mine, self->tvalue) != 0) {
            char show[48];
            return s_err(self, "BadDigest",
                         "The %s you specified did not match the calculated checksum ('%s', not '%s')", self->tname,
                         s_show(show, sizeof(show), self->tvalue, strlen(self->tvalue)), mine);
        }
    }
    self->state = ST_DONE;
    return 0;
}

static int s_on_trailer(rf_awschunk_t *self, const char *l, size_t n)
{
    char show[48];
    self->tbytes += n + 2;
    if (self->tbytes > RF_AWSCHUNK_MAX_TRAILER)
        return s_err(self, "MalformedTrailerError", "the trailer is longer than %d bytes", RF_AWSCHUNK_MAX_TRAILER);
    if (self->state == ST_TRAILER_END) {
        if (n != 0)
            return s_err(self, "MalformedTrailerError", "a line after x-amz-trailer-signature: '%s'",
                         s_show(show, sizeof(show), l, n));
        return s_end_trailer(self);
    }
    if (n == 0) {
        if (!self->tseen && !self->blank_skipped && self->tname[0] != '\0') {
            self->blank_skipped = true; /* "0;chunk-signature=...\r\n\r\n" then the trailer, as AWS's example */
            return 0;
        }
        if (self->sign && self->tseen)
            return s_err(self, "MalformedTrailerError", "the trailer has no x-amz-trailer-signature");
        return s_end_trailer(self);
    }
    const char *colon = memchr(l, ':', n);
    if (colon == NULL)
        return s_err(self, "MalformedTrailerError", "a trailer line without ':': '%s'",
                     s_show(show, sizeof(show), l, n));
    size_t nl = (size_t)(colon - l), vl = n - nl - 1;
    const char *v = colon + 1;
    s_trim(&v, &vl);
    if (s_ieq(l, nl, "x-amz-trailer-signature")) {
        unsigned char want[32], d[32];
        char tail[65];
        if (!self->sign)
            return s_err(self, "MalformedTrailerError", "x-amz-trailer-signature in an unsigned body");
        if (s_unhex32(v, vl, want) != 0)
            return s_err(self, "MalformedTrailerError", "x-amz-trailer-signature must be 64 hex digits");
        if (s_sha256(self->tlines, self->tlen, d) != 0)
            return s_err(self, "InternalError", "the sha256 digest failed");
        s_hex(d, 32, tail);
        int rc = s_check_sig(self, "AWS4-HMAC-SHA256-TRAILER", tail, want);
        if (rc == -2)
            return s_err(self, "SignatureDoesNotMatch", "the trailer signature does not match");
        if (rc != 0)
            return -1;
        self->state = ST_TRAILER_END;
        return 0;
    }
    if (self->tname[0] == '\0')
        return s_err(self, "MalformedTrailerError", "trailer '%s' is not declared by x-amz-trailer",
                     s_show(show, sizeof(show), l, nl));
    if (!s_ieq(l, nl, self->tname))
        return s_err(self, "MalformedTrailerError", "trailer '%s' is not the one x-amz-trailer declares (%s)",
                     s_show(show, sizeof(show), l, nl), self->tname);
    if (self->tseen)
        return s_err(self, "MalformedTrailerError", "trailer %s is repeated", self->tname);
    if (vl == 0 || vl >= sizeof(self->tvalue))
        return s_err(self, "MalformedTrailerError", "the %s trailer's value is empty or too long", self->tname);
    memcpy(self->tvalue, v, vl);
    self->tvalue[vl] = '\0';
    self->tseen = true;
    memcpy(self->tlines + self->tlen, l, n); /* tbytes bounds it */
    self->tlen += n;
    self->tlines[self->tlen++] = '\n';
    return 0;
}

/* Gathers a CRLF-terminated line from in[*i..len): 1 when self->line holds
 * a whole one (without CRLF), 0 when more is needed, -1 on error. */
static int s_take_line(rf_awschunk_t *self, const char *in, size_t len, size_t *i)
{
    const char *nl = memchr(in + *i, '\n', len - *i);
    size_t take = (nl != NULL ? (size_t)(nl - (in + *i)) : len - *i);
    if (self->line_len + take + (nl != NULL) > sizeof(self->line))
        return s_err(self, self->state == ST_HDR ? "InvalidRequest" : "MalformedTrailerError",
                     "a line longer than %d bytes", RF_AWSCHUNK_MAX_LINE);
    memcpy(self->line + self->line_len, in + *i, take);
    self->line_len += take;
    *i += take;
    if (nl == NULL)
        return 0;
    (*i)++; /* the '\n' */
    if (self->line_len == 0 || self->line[self->line_len - 1] != '\r')
        return s_err(self, self->state == ST_HDR ? "InvalidRequest" : "MalformedTrailerError",
                     "a line ends with LF, not CRLF");
    self->line_len--;
    return 1;
}

int rf_awschunk_feed(rf_awschunk_t *self, const char *in, size_t len, int (*out)(void *arg, const char *data, size_t n),
                     void *arg, const char **code, char *why, size_t why_len)
{
    if (self->state == ST_ERROR)
        return s_report(self, code, why, why_len);
    if (self->state == ST_DONE && len > 0) {
        s_err(self, "InvalidRequest", "%zu bytes after the end of the aws-chunked body", len);
        return s_report(self, code, why, why_len);
    }
    for (size_t i = 0; i < len && self->state != ST_ERROR;) {
        switch (self->state) {
        case ST_HDR:
        case ST_TRAILER:
        case ST_TRAILER_END: {
            int l = s_take_line(self, in, len, &i);
            if (l == 1) {
                size_t n = self->line_len;
                self->line_len = 0;
                if (self->state == ST_HDR)
                    s_on_header(self, self->line, n);
                else
                    s_on_trailer(self, self->line, n);
            }
            break;
        }
        case ST_DATA: {
            size_t take = len - i;
            if (take > self->size - self->got)
                take = (size_t)(self->size - self->got);
            if (self->sign)
                memcpy(self->buf + self->got, in + i, take);
            else if (s_emit(self, in + i, take, out, arg) != 0)
                break;
            self->got += take;
            i += take;
            if (self->got == self->size)
                self->state = ST_DATA_CR;
            break;
        }
        case ST_DATA_CR:
            if (in[i++] != '\r')
                s_err(self, "InvalidRequest", "a chunk's data is not followed by CRLF");
            else
                self->state = ST_DATA_LF;
            break;
        case ST_DATA_LF:
            if (in[i++] != '\n') {
                s_err(self, "InvalidRequest", "a chunk's data is not followed by CRLF");
            } else if (self->size == 0) {
                self->state = ST_DONE; /* the final chunk of STREAMING-AWS4-HMAC-SHA256-PAYLOAD */
            } else if (!self->sign || (s_check_chunk(self, self->buf, (size_t)self->size) == 0 &&
                                       s_emit(self, self->buf, (size_t)self->size, out, arg) == 0)) {
                self->state = ST_HDR;
            }
            break;
        case ST_DONE: s_err(self, "InvalidRequest", "%zu bytes after the end of the aws-chunked body", len - i); break;
        default: s_err(self, "InternalError", "bad decoder state"); break;
        }
    }
    if (self->state == ST_ERROR)
        return s_report(self, code, why, why_len);
    return self->state == ST_DONE ? 1 : 0;
}

int rf_awschunk_finish(rf_awschunk_t *self, const char **code, char *why, size_t why_len)
{
    if (self->state == ST_ERROR)
        return s_report(self, code, why, why_len);
    /* Tolerated: the trailer without its final empty line, and the final
     * chunk of STREAMING-AWS4-HMAC-SHA256-PAYLOAD without its CRLF (its
     * signature checked already). */
    if (self->line_len == 0 &&
        ((self->state == ST_TRAILER_END) || (self->state == ST_TRAILER && !self->sign && self->tseen)))
        s_end_trailer(self);
    else if (self->state == ST_DATA_CR && self->size == 0)
        self->state = ST_DONE;
    if (self->state == ST_ERROR)
        return s_report(self, code, why, why_len);
    if (self->state != ST_DONE) {
        s_err(self, "IncompleteBody", "the aws-chunked body ended early (after %llu payload bytes)",
              (unsigned long long)self->total);
        return s_report(self, code, why, why_len);
    }
    if (self->decoded_length >= 0 && self->total != (uint64_t)self->decoded_length) {
        s_err(self, "IncompleteBody", "%llu payload bytes, x-amz-decoded-content-length says %lld",
              (unsigned long long)self->total, (long long)self->decoded_length);
        return s_report(self, code, why, why_len);
    }
    return 0;
}
