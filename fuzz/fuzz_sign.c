/*  libFuzzer target for common/rf_sign: the query of a signed URL comes
 *  straight from clients. The input is "path\nquery"; besides memory
 *  safety it checks that every refusal has a reason, that the rest of the
 *  query never grows, and that the path signed with rf_sign_make over that
 *  rest verifies (when the rest is a clean parameter list). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rf_sign.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char secret[] = "fuzz-secret-0123456789";
    rf_sign_conf_t c = {.n_keys = 1, .required = true};
    memcpy(c.keys[0].id, "k", 2);
    c.keys[0].secret = secret;
    const char *text = (const char *)data, *nl = memchr(text, '\n', size);
    size_t plen = nl ? (size_t)(nl - text) : size;
    const char *q = nl ? nl + 1 : text + size;
    size_t qlen = size - plen - (nl ? 1 : 0);
    char *rest = malloc(qlen + 1), why[200];
    size_t rl = 0;
    int rc = rf_sign_verify(&c, text, plen, q, qlen, 1000, rest, &rl, why, sizeof(why));
    if (rc == 0 && rl > qlen)
        abort();
    if (rc != 0 && why[0] == '\0')
        abort();
    /* the same path, properly signed, verifies (the rest as computed) */
    if (rl < 512) {
        char sig[44], query[700];
        size_t n = 0;
        if (rf_sign_make(secret, text, plen, rest, rl, "2000", sig) == 0) {
            memcpy(query, rest, rl), n = rl;
            const char *tail = rl ? "&expires=2000&keyid=k&sig=" : "expires=2000&keyid=k&sig=";
            memcpy(query + n, tail, strlen(tail)), n += strlen(tail);
            memcpy(query + n, sig, strlen(sig)), n += strlen(sig);
            char *rest2 = malloc(n + 1);
            size_t rl2 = 0;
            /* a rest holding an empty element or a leftover signature
             * parameter cannot round-trip; only check clean ones */
            int clean = rc == 0 || memmem(rest, rl, "sig=", 4) == NULL;
            if (clean && rf_sign_verify(&c, text, plen, query, n, 1000, rest2, &rl2, why, sizeof(why)) != 0 &&
                memmem(rest, rl, "expires=", 8) == NULL && memmem(rest, rl, "keyid=", 6) == NULL &&
                memmem(rest, rl, "&&", 2) == NULL && (rl == 0 || (rest[0] != '&' && rest[rl - 1] != '&')))
                abort();
            free(rest2);
        }
    }
    free(rest);
    return 0;
}
