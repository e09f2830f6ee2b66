#include "rf_sign.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rf_log.h"

static const char s_b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* base64url without padding of in[0..n) into out (NUL-terminated). */
static void s_b64(const unsigned char *in, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0) | (i + 2 < n ? in[i + 2] : 0);
        out[o++] = s_b64url[v >> 18 & 63];
        out[o++] = s_b64url[v >> 12 & 63];
        if (i + 1 < n)
            out[o++] = s_b64url[v >> 6 & 63];
        if (i + 2 < n)
            out[o++] = s_b64url[v & 63];
    }
    out[o] = '\0';
}

int rf_sign_make(const char *secret, const char *path, size_t plen, const char *rest, size_t rlen, const char *expires,
                 char out[44])
{
    size_t el = strlen(expires), n = plen + (rlen ? 1 + rlen : 0) + 1 + el;
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int ml = 0;
    char *msg = malloc(n);
    if (msg == NULL)
        return -1;
    size_t o = 0;
    memcpy(msg, path, plen), o = plen;
    if (rlen > 0) {
        msg[o++] = '?';
        memcpy(msg + o, rest, rlen), o += rlen;
    }
    msg[o++] = '\n';
    memcpy(msg + o, expires, el);
    unsigned char *r = HMAC(EVP_sha256(), secret, (int)strlen(secret), (unsigned char *)msg, n, mac, &ml);
    free(msg);
    if (r == NULL || ml != 32)
        return -1;
    s_b64(mac, ml, out);
    return 0;
}

/* A signature parameter's value: copied NUL-terminated into buf (cap),
 * -1 when longer or holding what no valid value holds. */
static int s_param(const char *v, size_t n, char *buf, size_t cap)
{
    if (n == 0 || n >= cap)
        return -1;
    for (size_t i = 0; i < n; i++)
        if (!((v[i] >= '0' && v[i] <= '9') || (v[i] >= 'a' && v[i] <= 'z') || (v[i] >= 'A' && v[i] <= 'Z') ||
              v[i] == '-' || v[i] == '_' || v[i] == '.'))
            return -1;
    memcpy(buf, v, n);
    buf[n] = '\0';
    return 0;
}

int rf_sign_verify(const rf_sign_conf_t *c, const char *path, size_t plen, const char *query, size_t qlen, int64_t now,
                   char *rest, size_t *rest_len, char *why, size_t why_len)
{
    char expires[24] = "", keyid[RF_SIGN_ID_MAX] = "", sig[64] = "";
    int seen = 0, bad = 0;
    *rest_len = 0;
    /* Split the query: the three parameters out, the rest kept in order. */
    for (size_t i = 0; i < qlen;) {
        size_t e = i;
        while (e < qlen && query[e] != '&')
            e++;
        const char *p = query + i;
        size_t n = e - i;
        struct {
            const char *name;
            char *buf;
            size_t cap;
        } fields[] = {{"expires=", expires, sizeof(expires)}, {"keyid=", keyid, sizeof(keyid)}, {"sig=", sig, sizeof(sig)}};
        bool taken = false;
        for (int f = 0; f < 3 && !taken; f++) {
            size_t nl = strlen(fields[f].name);
            if (n >= nl && memcmp(p, fields[f].name, nl) == 0) {
                taken = true;
                if (seen & (1 << f) || s_param(p + nl, n - nl, fields[f].buf, fields[f].cap) < 0)
                    bad = 1;
                seen |= 1 << f;
            }
        }
        if (!taken && n > 0) {
            if (*rest_len > 0)
                rest[(*rest_len)++] = '&';
            memcpy(rest + *rest_len, p, n);
            *rest_len += n;
        }
        i = e + 1;
    }
    if (c == NULL || c->n_keys == 0)
        return 0;
    if (seen == 0 && !c->required)
        return 0;
    if (seen != 7)
        return rf_why(why, why_len, "unsigned URL: expires, keyid and sig are required");
    if (bad)
        return rf_why(why, why_len, "malformed or repeated signature parameter");
    char *end;
    long long exp = strtoll(expires, &end, 10);
    if (*end != '\0' || exp <= 0)
        return rf_why(why, why_len, "expires is not a unix time: '%s'", expires);
    if (exp < now)
        return rf_why(why, why_len, "URL expired %lld s ago", (long long)(now - exp));
    const rf_sign_key_t *k = NULL;
    for (size_t i = 0; i < c->n_keys && k == NULL; i++)
        if (strcmp(c->keys[i].id, keyid) == 0)
            k = &c->keys[i];
    if (k == NULL)
        return rf_why(why, why_len, "unknown key id '%s'", keyid);
    char want[44];
    if (rf_sign_make(k->secret, path, plen, rest, *rest_len, expires, want) < 0)
        return rf_why(why, why_len, "cannot compute the signature");
    if (strlen(sig) != strlen(want) || CRYPTO_memcmp(sig, want, strlen(want)) != 0)
        return rf_why(why, why_len, "signature does not match");
    return 0;
}
